#include "ketasim/solve/timeline.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>

#include "ketasim/base/random_stream.hpp"

namespace ketasim {

std::string to_string(EventKind kind) {
  switch (kind) {
    case EventKind::infusion_stop:
      return "infusion_stop";
    case EventKind::infusion_start:
      return "infusion_start";
    case EventKind::session_start:
      return "session_start";
    case EventKind::bolus:
      return "bolus";
    case EventKind::observation:
      return "observation";
  }
  return "unknown";
}

std::string to_string(Mark mark) {
  switch (mark) {
    case Mark::none:
      return "";
    case Mark::sample:
      return "sample";
    case Mark::assessment:
      return "assessment";
    case Mark::end_of_treatment:
      return "end_of_treatment";
    case Mark::as_needed_window:
      return "as_needed_window";
    case Mark::week_end:
      return "week_end";
    case Mark::grid_end:
      return "grid_end";
  }
  return "unknown";
}

bool happens_before(const TimelineEvent& a, const TimelineEvent& b) {
  return std::tuple(a.time, static_cast<int>(a.kind), a.dose, a.input, static_cast<int>(a.mark)) <
         std::tuple(b.time, static_cast<int>(b.kind), b.dose, b.input, static_cast<int>(b.mark));
}

SessionKind Dose::session() const {
  switch (drug) {
    case DoseDrug::model_drug:
      return SessionKind::drug;
    case DoseDrug::placebo:
      return SessionKind::placebo;
    case DoseDrug::active_placebo:
      return SessionKind::active_placebo;
  }
  return SessionKind::drug;
}

DoseRouteCode route_code(const Dose& dose) {
  if (dose.drug != DoseDrug::model_drug || dose.amount_mg == 0.0) return DoseRouteCode::no_drug;
  switch (dose.route) {
    case Route::iv_infusion:
      return DoseRouteCode::iv_infusion;
    case Route::iv_bolus:
      return DoseRouteCode::iv_bolus;
    case Route::intranasal:
      return DoseRouteCode::intranasal;
  }
  return DoseRouteCode::no_drug;
}

std::vector<Ticks> device_times(const Dose& dose, const IntranasalEntry& entry) {
  const auto devices = static_cast<int>(std::llround(dose.amount_mg / entry.device_mg));
  const Ticks interval = std::llround(entry.device_interval_h * static_cast<double>(kTicksPerHour));
  std::vector<Ticks> times;
  for (int device = 0; device < devices; ++device) times.push_back(dose.start + device * interval);
  return times;
}

std::vector<Ticks> dose_times(const DosingRule& rule) {
  std::vector<Ticks> times;
  if (rule.schedule == ScheduleKind::as_needed || rule.schedule == ScheduleKind::table) return times;
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
    case ScheduleKind::as_needed:
    case ScheduleKind::table:
      break;
    case ScheduleKind::weekly:
      if (rule.weekly_slots.empty()) break;
      for (Ticks week = 0;; ++week) {
        for (const WeeklySlot& slot : rule.weekly_slots) {
          const Ticks time = rule.start + week * kTicksPerWeek + slot.time_in_week();
          if (!within_bounds(time, times.size())) return times;
          times.push_back(time);
        }
      }
  }
  return times;
}

double dose_amount_mg(const DosingRule& rule, double weight_kg) {
  if (rule.dose.basis != DoseBasis::per_body_weight) return rule.dose.value;
  // The cap is of weight-based doses only (a phase with a flat dose keeps its rule's cap unused).
  const double amount = rule.dose.value * weight_kg;
  return rule.max_dose_mg ? std::min(amount, *rule.max_dose_mg) : amount;
}

Dose make_dose(const DosingRule& rule, int rule_index, Ticks start, double weight_kg) {
  Dose dose;
  dose.start = start;
  dose.duration = rule.route == Route::iv_infusion ? rule.infusion_duration : 0;
  dose.amount_mg = dose_amount_mg(rule, weight_kg);
  dose.route = rule.route;
  dose.drug = rule.drug;
  dose.rule = rule_index;
  return dose;
}

namespace {

void sort_by_start(std::vector<Dose>& doses) {
  std::stable_sort(doses.begin(), doses.end(), [](const Dose& a, const Dose& b) { return a.start < b.start; });
}

}  // namespace

std::vector<Dose> expand_doses(const Arm& arm, double weight_kg) {
  std::vector<Dose> doses;
  for (std::size_t r = 0; r < arm.regimen.size(); ++r)
    for (const Ticks start : dose_times(arm.regimen[r]))
      doses.push_back(make_dose(arm.regimen[r], static_cast<int>(r), start, weight_kg));
  sort_by_start(doses);
  return doses;
}

namespace {
// A stop rule's at_most: the series gives at most that many sessions (counted after adherence).
void cap_stopped_series(const Arm& arm, std::vector<Dose>& doses) {
  for (const DosingRule& rule : arm.regimen) {
    if (!rule.stop || !rule.stop->at_most) continue;
    int given = 0;
    std::erase_if(doses, [&](const Dose& dose) {
      return arm.regimen[static_cast<std::size_t>(dose.rule)].stop && ++given > *rule.stop->at_most;
    });
    return;  // an arm has one stop rule
  }
}
}  // namespace

SubjectDoses subject_doses(const Arm& arm, double weight_kg, std::int64_t subject_id, std::uint64_t seed) {
  SubjectDoses result;
  std::vector<Dose> scheduled = expand_doses(arm, weight_kg);
  if (arm.missed_session_probability > 0.0) {
    RandomStream adherence(seed, static_cast<std::uint64_t>(subject_id), StreamPurpose::adherence);
    for (const Dose& dose : scheduled) {
      if (adherence.uniform() < arm.missed_session_probability)
        ++result.missed;
      else
        result.doses.push_back(dose);
    }
  } else {
    result.doses = std::move(scheduled);
  }
  for (std::size_t r = 0; r < arm.regimen.size(); ++r) {
    const DosingRule& rule = arm.regimen[r];
    if (rule.schedule != ScheduleKind::table) continue;
    const auto found = rule.table->doses.find(subject_id + 1);
    if (found == rule.table->doses.end()) continue;
    for (const TableDose& row : found->second) {
      Dose dose = make_dose(rule, static_cast<int>(r), row.time, weight_kg);
      dose.amount_mg = row.amount_mg;
      dose.duration = row.duration;
      result.doses.push_back(dose);
    }
  }
  sort_by_start(result.doses);
  cap_stopped_series(arm, result.doses);
  return result;
}

std::size_t DosingTable::most_doses() const {
  std::size_t most = 0;
  for (const auto& [id, rows] : doses) most = std::max(most, rows.size());
  return most;
}

std::size_t DosingRule::most_doses(Ticks grid_end) const {
  switch (schedule) {
    case ScheduleKind::table:
      return table ? table->most_doses() : 0;
    case ScheduleKind::as_needed: {
      const AsNeeded& rule = *as_needed;
      const Ticks end = std::min(grid_end, rule.until.value_or(grid_end));
      const std::size_t window =
          end < rule.from ? 0 : static_cast<std::size_t>((end - rule.from) / rule.min_interval) + 1;
      return rule.max_doses ? std::min(window, static_cast<std::size_t>(*rule.max_doses)) : window;
    }
    default:
      return dose_times(*this).size();
  }
}

std::size_t most_doses(const Arm& arm, Ticks grid_end) {
  std::size_t most = 0;
  for (const DosingRule& rule : arm.regimen) most += rule.most_doses(grid_end);
  return most;
}

std::vector<ModelInput> model_inputs(const std::vector<Dose>& doses, const Model& model, const SubjectModel& subject) {
  std::vector<ModelInput> inputs;
  for (std::size_t i = 0; i < doses.size(); ++i) {
    const Dose& dose = doses[i];
    const int index = static_cast<int>(i);
    const int session = model.session_channel(dose.session());
    if (session >= 0) inputs.push_back({dose.start, 0, 1.0, session, index});
    if (dose.drug != DoseDrug::model_drug || dose.amount_mg == 0.0) continue;
    switch (dose.route) {
      case Route::iv_infusion:
      case Route::iv_bolus:
        inputs.push_back({dose.start, dose.duration, dose.amount_mg, model.iv_channel(), index});
        break;
      case Route::intranasal: {
        const IntranasalEntry& entry = *model.card().routes.intranasal;
        const Ticks swallowed =
            std::max<Ticks>(1, std::llround(subject.swallowed_duration_h * static_cast<double>(kTicksPerHour)));
        const std::vector<Ticks> devices = device_times(dose, entry);
        for (std::size_t device = 0; device < devices.size(); ++device) {
          const double nasal = subject.nasal_fraction * (device > 0 ? subject.later_device_factor : 1.0);
          inputs.push_back({devices[device], 0, entry.device_mg * nasal, model.nasal_channel(), index});
          inputs.push_back(
              {devices[device], swallowed, entry.device_mg * (1.0 - nasal), model.swallowed_channel(), index});
        }
        break;
      }
    }
  }
  std::stable_sort(inputs.begin(), inputs.end(),
                   [](const ModelInput& a, const ModelInput& b) { return a.start < b.start; });
  return inputs;
}

std::vector<TimelineEvent> input_events(const std::vector<ModelInput>& inputs) {
  std::vector<TimelineEvent> events;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const ModelInput& input = inputs[i];
    const int index = static_cast<int>(i);
    if (input.duration > 0) {
      const double rate = input.rate_per_h();
      events.push_back({input.start, EventKind::infusion_start, input.dose, input.amount, rate, input.channel, index});
      events.push_back({input.start + input.duration, EventKind::infusion_stop, input.dose, input.amount, rate,
                        input.channel, index});
    } else {
      events.push_back({input.start, EventKind::bolus, input.dose, input.amount, 0.0, input.channel, index});
    }
  }
  std::sort(events.begin(), events.end(), happens_before);
  return events;
}

std::vector<InputSegment> input_segments(const std::vector<ModelInput>& inputs, Ticks end, int channels) {
  std::vector<Ticks> edges{0, end};
  for (const ModelInput& input : inputs) {
    if (input.duration <= 0) continue;
    for (const Ticks edge : {input.start, input.start + input.duration})
      if (edge > 0 && edge < end) edges.push_back(edge);
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());

  std::vector<InputSegment> segments;
  for (std::size_t i = 0; i + 1 < edges.size(); ++i) {
    InputSegment segment{edges[i], edges[i + 1], std::vector<double>(static_cast<std::size_t>(channels), 0.0)};
    for (const ModelInput& input : inputs)
      if (input.duration > 0 && input.start <= segment.start && segment.start < input.start + input.duration)
        segment.rates[static_cast<std::size_t>(input.channel)] += input.rate_per_h();
    // Merge neighbours with the same rates so a solver restarts only where the input changes.
    if (!segments.empty() && segments.back().rates == segment.rates)
      segments.back().end = segment.end;
    else
      segments.push_back(std::move(segment));
  }
  if (segments.empty()) segments.push_back({0, end, std::vector<double>(static_cast<std::size_t>(channels), 0.0)});
  return segments;
}

BreakpointPlan breakpoint_plan(const std::vector<Dose>& doses, const Model& model, const SubjectModel& subject,
                               Ticks grid_step, Ticks grid_end, const std::vector<PlanMark>& marks) {
  BreakpointPlan plan;
  plan.grid_step = grid_step;
  plan.grid_end = grid_end;
  plan.inputs = model_inputs(doses, model, subject);
  plan.segments = input_segments(plan.inputs, grid_end, model.channel_count());
  plan.events = input_events(plan.inputs);
  for (std::size_t d = 0; d < doses.size(); ++d)
    plan.events.push_back({doses[d].start, EventKind::session_start, static_cast<int>(d)});
  const auto observe = [&](Ticks time, Mark mark) {
    TimelineEvent event{time, EventKind::observation};
    event.mark = mark;
    plan.events.push_back(event);
  };
  for (const PlanMark& mark : marks) observe(mark.time, mark.mark);
  for (Ticks week = 1; week * kTicksPerWeek < grid_end; ++week) observe(week * kTicksPerWeek, Mark::week_end);
  observe(grid_end, Mark::grid_end);
  std::sort(plan.events.begin(), plan.events.end(), happens_before);

  for (const InputSegment& segment : plan.segments) plan.breakpoints.push_back(segment.end);
  for (const TimelineEvent& event : plan.events) {
    const bool edge = event.kind == EventKind::infusion_start || event.kind == EventKind::infusion_stop;
    if (!edge && event.time <= grid_end) plan.breakpoints.push_back(event.time);
  }
  std::sort(plan.breakpoints.begin(), plan.breakpoints.end());
  plan.breakpoints.erase(std::unique(plan.breakpoints.begin(), plan.breakpoints.end()), plan.breakpoints.end());
  return plan;
}

std::vector<std::string> channel_names(const Model& model) {
  std::vector<std::string> names(static_cast<std::size_t>(model.channel_count()));
  const auto& card = model.card();
  if (model.iv_channel() >= 0) names[static_cast<std::size_t>(model.iv_channel())] = card.routes.iv->drug + ".central";
  if (model.nasal_channel() >= 0) {
    names[static_cast<std::size_t>(model.nasal_channel())] =
        card.routes.intranasal->drug + "." + card.routes.intranasal->nasal_depot;
    names[static_cast<std::size_t>(model.swallowed_channel())] =
        card.routes.intranasal->drug + "." + card.routes.intranasal->swallowed_depot;
  }
  for (const SessionKind kind : {SessionKind::drug, SessionKind::placebo, SessionKind::active_placebo})
    if (model.session_channel(kind) >= 0)
      names[static_cast<std::size_t>(model.session_channel(kind))] = "session:" + to_string(kind);
  return names;
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
    std::snprintf(text, sizeof text, "%s %02lld:%02lld:%02lld (week %lld)", kWeekdays[day],
                  static_cast<long long>(hours), static_cast<long long>(minutes), static_cast<long long>(seconds),
                  static_cast<long long>(week + 1));
  else
    std::snprintf(text, sizeof text, "%s %02lld:%02lld (week %lld)", kWeekdays[day], static_cast<long long>(hours),
                  static_cast<long long>(minutes), static_cast<long long>(week + 1));
  return text;
}

}  // namespace ketasim
