#include "ketasim/timeline.hpp"

#include <algorithm>
#include <cstdio>
#include <tuple>

namespace ketasim {

std::string to_string(EventKind kind) {
  switch (kind) {
    case EventKind::infusion_stop: return "infusion_stop";
    case EventKind::infusion_start: return "infusion_start";
    case EventKind::bolus: return "bolus";
    case EventKind::observation: return "observation";
  }
  return "unknown";
}

bool happens_before(const TimelineEvent& a, const TimelineEvent& b) {
  return std::tuple(a.time, static_cast<int>(a.kind), a.dose) < std::tuple(b.time, static_cast<int>(b.kind), b.dose);
}

std::vector<Ticks> dose_times(const DosingRule& rule) {
  std::vector<Ticks> times;
  const auto within_bounds = [&](Ticks time, std::size_t already) {
    if (rule.count) return already < static_cast<std::size_t>(*rule.count);
    return rule.repeat_for && time < rule.start + *rule.repeat_for;
  };
  switch (rule.schedule) {
    case ScheduleKind::explicit_times:
      for (const Ticks time : rule.explicit_times) times.push_back(rule.start + time);
      break;
    case ScheduleKind::interval:
      for (Ticks k = 0;; ++k) {
        const Ticks time = rule.start + k * rule.interval;
        if (!within_bounds(time, times.size())) break;
        times.push_back(time);
      }
      break;
    case ScheduleKind::weekly:
      if (rule.weekly_slots.empty()) break;
      for (Ticks week = 0;; ++week) {
        for (const WeeklySlot& slot : rule.weekly_slots) {
          const Ticks time = rule.start + week * kTicksPerWeek + slot.weekday * kTicksPerDay + slot.time_of_day;
          if (!within_bounds(time, times.size())) return times;
          times.push_back(time);
        }
      }
  }
  return times;
}

std::vector<Dose> expand_doses(const Arm& arm, double weight_kg) {
  std::vector<Dose> doses;
  for (std::size_t r = 0; r < arm.regimen.size(); ++r) {
    const DosingRule& rule = arm.regimen[r];
    const double amount_mg = rule.dose.basis == DoseBasis::per_body_weight ? rule.dose.value * weight_kg : rule.dose.value;
    for (const Ticks start : dose_times(rule)) {
      Dose dose;
      dose.start = start;
      dose.duration = rule.route == Route::iv_infusion ? rule.infusion_duration : 0;
      dose.amount_mg = amount_mg;
      dose.route = rule.route;
      dose.rule = static_cast<int>(r);
      doses.push_back(dose);
    }
  }
  std::stable_sort(doses.begin(), doses.end(), [](const Dose& a, const Dose& b) { return a.start < b.start; });
  return doses;
}

std::vector<TimelineEvent> dose_events(const std::vector<Dose>& doses) {
  std::vector<TimelineEvent> events;
  for (std::size_t i = 0; i < doses.size(); ++i) {
    const Dose& dose = doses[i];
    const int index = static_cast<int>(i);
    if (dose.duration > 0) {
      const double rate = dose.rate_mg_per_h();
      events.push_back({dose.start, EventKind::infusion_start, index, dose.amount_mg, rate});
      events.push_back({dose.start + dose.duration, EventKind::infusion_stop, index, dose.amount_mg, rate});
    } else {
      events.push_back({dose.start, EventKind::bolus, index, dose.amount_mg, 0.0});
    }
  }
  std::sort(events.begin(), events.end(), happens_before);
  return events;
}

std::vector<InputSegment> input_segments(const std::vector<Dose>& doses, Ticks end) {
  std::vector<Ticks> edges{0, end};
  for (const Dose& dose : doses) {
    if (dose.duration <= 0) continue;
    for (const Ticks edge : {dose.start, dose.start + dose.duration})
      if (edge > 0 && edge < end) edges.push_back(edge);
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());

  std::vector<InputSegment> segments;
  for (std::size_t i = 0; i + 1 < edges.size(); ++i) {
    InputSegment segment{edges[i], edges[i + 1], 0.0};
    for (const Dose& dose : doses)
      if (dose.duration > 0 && dose.start <= segment.start && segment.start < dose.start + dose.duration)
        segment.rate_mg_per_h += dose.rate_mg_per_h();
    // Merge neighbours with the same rate so a solver restarts only where the input changes.
    if (!segments.empty() && segments.back().rate_mg_per_h == segment.rate_mg_per_h)
      segments.back().end = segment.end;
    else
      segments.push_back(segment);
  }
  if (segments.empty()) segments.push_back({0, end, 0.0});
  return segments;
}

std::string describe_time(Ticks time) {
  static const char* kWeekdays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  const Ticks week = time / kTicksPerWeek;
  const Ticks in_week = time % kTicksPerWeek;
  const Ticks day = in_week / kTicksPerDay;
  const Ticks in_day = in_week % kTicksPerDay;
  const Ticks hours = in_day / kTicksPerHour;
  const Ticks minutes = (in_day % kTicksPerHour) / kTicksPerMinute;
  const Ticks seconds = (in_day % kTicksPerMinute) / kTicksPerSecond;
  char text[64];
  if (seconds != 0)
    std::snprintf(text, sizeof text, "%s %02lld:%02lld:%02lld (week %lld)", kWeekdays[day], static_cast<long long>(hours),
                  static_cast<long long>(minutes), static_cast<long long>(seconds), static_cast<long long>(week + 1));
  else
    std::snprintf(text, sizeof text, "%s %02lld:%02lld (week %lld)", kWeekdays[day], static_cast<long long>(hours),
                  static_cast<long long>(minutes), static_cast<long long>(week + 1));
  return text;
}

}  // namespace ketasim
