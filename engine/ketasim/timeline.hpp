#pragma once
// Regimen -> the doses of one subject -> the ordered event timeline and the constant-input
// segments the solver integrates over.
//
// The same-time rule: events at the same instant happen in the order of EventKind below:
// infusion stops, then infusion starts, then boluses, then observations. An observation at the
// time of a bolus therefore sees the bolus, and an infusion that stops when another starts
// leaves no gap. Ties within a kind keep the regimen order.

#include <string>
#include <vector>

#include "ketasim/scenario.hpp"

namespace ketasim {

enum class EventKind : int { infusion_stop = 0, infusion_start = 1, bolus = 2, observation = 3 };

std::string to_string(EventKind kind);

struct Dose {
  Ticks start = 0;
  Ticks duration = 0;  // 0 for a bolus
  double amount_mg = 0.0;
  Route route = Route::iv_infusion;
  int rule = 0;  // index of the dosing rule in the arm's regimen

  double rate_mg_per_h() const { return duration > 0 ? amount_mg / ticks_to_hours(duration) : 0.0; }
};

struct TimelineEvent {
  Ticks time = 0;
  EventKind kind = EventKind::observation;
  int dose = -1;  // index into the dose list; -1 for observations
  double amount_mg = 0.0;
  double rate_mg_per_h = 0.0;
};

// The strict order of the same-time rule: by time, then kind, then dose index.
bool happens_before(const TimelineEvent& a, const TimelineEvent& b);

// Nominal start times of one rule's doses (t_k = start + k * interval, never accumulated).
std::vector<Ticks> dose_times(const DosingRule& rule);

// All doses of an arm for a subject of this weight, ordered by start time (then rule order).
std::vector<Dose> expand_doses(const Arm& arm, double weight_kg);

// Dose events (no observations) ordered by the same-time rule.
std::vector<TimelineEvent> dose_events(const std::vector<Dose>& doses);

// A stretch of time with a constant total infusion rate. Overlapping infusions add.
struct InputSegment {
  Ticks start = 0;
  Ticks end = 0;
  double rate_mg_per_h = 0.0;
};

// Piecewise-constant infusion input covering [0, end] exactly, split at every infusion edge.
// Each segment's rate is summed afresh over the infusions covering it (no running counter).
std::vector<InputSegment> input_segments(const std::vector<Dose>& doses, Ticks end);

// "Mon 09:00 (week 1)" style label of a time, for the timeline command.
std::string describe_time(Ticks time);

}  // namespace ketasim
