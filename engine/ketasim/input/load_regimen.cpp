// The scenario's `arms`: each arm's name, own model, price and regimen, a list of dosing rules
// (route, drug, dose; weekly, interval or explicit schedules, phases, as-needed rules, dosing
// tables).

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <tuple>

#include "ketasim/base/format.hpp"
#include "ketasim/input/dosing_table.hpp"
#include "ketasim/input/load_common.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim::loader {

namespace {

constexpr std::array<const char*, 7> kWeekdays{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

// "Fri 09:00".
std::string format_slot(const WeeklySlot& slot) {
  const auto two_digits = [](std::int64_t value) { return (value < 10 ? "0" : "") + std::to_string(value); };
  return std::string(kWeekdays[static_cast<std::size_t>(slot.weekday)]) + " " +
         two_digits(slot.time_of_day / kTicksPerHour) + ":" +
         two_digits(slot.time_of_day % kTicksPerHour / kTicksPerMinute);
}

// "Mon 09:00" -> weekday 0, 9 h. Fails at `node` with what is wrong.
WeeklySlot parse_weekly_slot(const NodeRef& node) {
  const std::string text = node.scalar("a weekly slot such as 'Mon 09:00'");
  const std::string_view trimmed = trim(text);
  const std::string expected = "expected a weekday and a 24-hour time such as 'Mon 09:00'";
  const std::size_t space = trimmed.find_first_of(" \t");
  if (space == std::string_view::npos) {
    node.fail(in_quotes(text) + " is not a weekly slot; " + expected +
              " (for times from the start, write schedule: {at: [9 h, 81 h]})");
  }
  const std::string_view day = trimmed.substr(0, space);
  const std::string_view clock = trim(trimmed.substr(space));
  WeeklySlot slot;
  const auto found = std::find_if(kWeekdays.begin(), kWeekdays.end(),
                                  [day](const char* name) { return equals_ignoring_case(day, name); });
  if (found == kWeekdays.end()) {
    node.fail("unknown weekday " + in_quotes(day) + " in " + in_quotes(text) +
              "; expected Mon, Tue, Wed, Thu, Fri, Sat or Sun");
  }
  slot.weekday = static_cast<int>(found - kWeekdays.begin());
  const std::size_t colon = clock.find(':');
  const auto all_digits = [](std::string_view part) {
    return !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const std::string_view hour_text = colon == std::string_view::npos ? clock : clock.substr(0, colon);
  const std::string_view minute_text = colon == std::string_view::npos ? std::string_view() : clock.substr(colon + 1);
  if (colon == std::string_view::npos || hour_text.size() > 2 || minute_text.size() != 2 || !all_digits(hour_text) ||
      !all_digits(minute_text)) {
    node.fail(in_quotes(text) + " is not a weekly slot; " + expected + " (time as HH:MM)");
  }
  const int hour = std::stoi(std::string(hour_text));
  const int minute = std::stoi(std::string(minute_text));
  if (hour > 23 || minute > 59)
    node.fail(in_quotes(text) + " is not a valid 24-hour time; expected 00:00 to 23:59, e.g. 'Mon 09:00'");
  slot.time_of_day = hour * kTicksPerHour + minute * kTicksPerMinute;
  return slot;
}

void read_weekly_schedule(const std::vector<NodeRef>& items, DosingRule& rule) {
  for (const auto& item : items) {
    const WeeklySlot slot = parse_weekly_slot(item);
    for (std::size_t i = 0; i < rule.weekly_slots.size(); ++i) {
      if (rule.weekly_slots[i].time_in_week() == slot.time_in_week())
        item.fail("slot " + item.kind() + " is listed twice (also at " + items[i].path + ")");
    }
    rule.weekly_slots.push_back(slot);
  }
  std::sort(rule.weekly_slots.begin(), rule.weekly_slots.end(),
            [](const WeeklySlot& a, const WeeklySlot& b) { return a.time_in_week() < b.time_in_week(); });
}

void read_schedule(const NodeRef& node, DosingRule& rule) {
  const std::string expected =
      "expected weekly slots (e.g. [Mon 09:00, Thu 09:00]), an interval (e.g. 'every 3.5 d') or "
      "explicit times (e.g. {at: [9 h, 81 h]})";
  if (node.is_sequence()) {
    const auto items = node.items("weekly slots");
    if (items.empty()) node.fail("the schedule lists no weekly slots; " + expected);
    rule.schedule = ScheduleKind::weekly;
    read_weekly_schedule(items, rule);
  } else if (node.is_scalar()) {
    const std::string text = node.scalar("a schedule");
    const std::string_view trimmed = trim(text);
    const std::string_view keyword = "every";
    const bool is_interval = trimmed.size() > keyword.size() &&
                             equals_ignoring_case(trimmed.substr(0, keyword.size()), keyword) &&
                             std::isspace(static_cast<unsigned char>(trimmed[keyword.size()]));
    if (!is_interval) node.fail(in_quotes(text) + " is not a schedule; " + expected);
    rule.schedule = ScheduleKind::interval;
    rule.interval = to_ticks(node, std::string(trim(trimmed.substr(keyword.size()))), Sign::positive);
  } else if (node.is_map()) {
    node.check_keys({"at"});
    const NodeRef at = node.require("at", "the dose times from the simulation start, e.g. at: [9 h, 81 h]");
    const auto items = at.items("dose times (e.g. [9 h, 81 h])");
    if (items.empty()) at.fail("the schedule lists no dose times");
    rule.schedule = ScheduleKind::explicit_times;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const Ticks t = read_time_point(items[i]);
      if (i > 0 && t == rule.explicit_times.back())
        items[i].fail("time " + items[i].kind() + " is listed twice (also at " + items[i - 1].path + ")");
      if (i > 0 && t < rule.explicit_times.back()) {
        items[i].fail("dose times must be in ascending order: " + items[i].kind() + " comes after " +
                      items[i - 1].kind());
      }
      rule.explicit_times.push_back(t);
    }
  } else {
    node.fail(expected + ", found " + node.kind());
  }
}

DoseAmount read_dose(const NodeRef& node) {
  const std::string expected = "a drug amount (e.g. 35 mg) or a weight-based dose (e.g. 0.5 mg/kg)";
  const std::string text = node.scalar(expected);
  std::string problem;
  const auto written = parse_written_quantity(text, &problem);
  if (!written) node.fail("cannot read " + in_quotes(text) + " as a dose: " + problem);
  const Dimension& dimension = written->unit.dimension;
  DoseAmount dose;
  if (dimension == dim::drug_mass) {
    dose.basis = DoseBasis::flat;
  } else if (dimension == dim::dose_per_weight) {
    dose.basis = DoseBasis::per_body_weight;
  } else if (dimension == dim::dimensionless) {
    node.fail(in_quotes(text) + " has no unit, expected " + expected);
  } else {
    node.fail(in_quotes(text) + " is " + describe(dimension) + ", expected " + expected);
  }
  const QuantityKind kind = dose.basis == DoseBasis::flat ? QuantityKind::drug_amount : QuantityKind::dose_per_weight;
  dose.value = read_quantity(node, kind, Sign::positive);
  return dose;
}

std::string schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::weekly:
      return "weekly";
    case ScheduleKind::interval:
      return "interval";
    case ScheduleKind::explicit_times:
      return "explicit";
    case ScheduleKind::as_needed:
      return "as-needed";
    case ScheduleKind::table:
      return "table";
  }
  return "unknown";
}

// `for` / `count`: exactly one for repeating schedules, neither for an explicit list.
void read_repeat_bounds(const NodeRef& node, DosingRule& rule) {
  const auto repeat_for = node.find("for");
  const auto count = node.find("count");
  if (rule.schedule == ScheduleKind::explicit_times) {
    for (const auto* bound : {&repeat_for, &count}) {
      if (*bound) {
        (*bound)->fail(
            "'for' and 'count' do not apply to an explicit {at: [...]} schedule, whose doses are "
            "listed; remove the key");
      }
    }
    return;
  }
  const std::string name = schedule_name(rule.schedule);
  if (repeat_for && count) count->fail("give either 'for' or 'count' for a " + name + " schedule, not both");
  if (!repeat_for && !count) {
    node.fail((name == "interval" ? "an " : "a ") + name +
              " schedule needs 'for' (e.g. for: 3 weeks) or 'count' (e.g. count: 6) to say when dosing stops");
  }
  if (count) rule.count = static_cast<int>(count->as_integer(1, kMaxDoseCount));
  if (repeat_for) {
    rule.repeat_for = read_duration(*repeat_for);
    // The same cap as for `count`, so a short interval over a long window cannot expand into
    // billions of events (for weekly slots this counts whole weeks, an upper bound).
    const Ticks period = rule.schedule == ScheduleKind::interval ? rule.interval : kTicksPerWeek;
    const std::int64_t per_period =
        rule.schedule == ScheduleKind::interval ? 1 : static_cast<std::int64_t>(rule.weekly_slots.size());
    const std::int64_t doses = (*rule.repeat_for + period - 1) / period * per_period;
    if (doses > kMaxDoseCount) {
      repeat_for->fail(repeat_for->kind() + " gives up to " + std::to_string(doses) + " doses; at most " +
                       std::to_string(kMaxDoseCount) + " per rule are supported");
    }
    // Weekly doses start at `start` plus their time in the week: the window must reach the first.
    if (rule.schedule == ScheduleKind::weekly && *rule.repeat_for <= rule.weekly_slots.front().time_in_week()) {
      const WeeklySlot& first = rule.weekly_slots.front();
      repeat_for->fail(repeat_for->kind() + " ends before the first weekly slot (" + format_slot(first) + ", " +
                       format_hours(first.time_in_week()) + " into the week): no dose would be given");
    }
  }
}

DoseDrug read_dose_drug(const NodeRef& node, const ModelCard& card) {
  const std::string text = node.scalar("a drug");
  if (text == card.drug) return DoseDrug::model_drug;
  if (text == "placebo" || text == "saline") return DoseDrug::placebo;
  if (text == "midazolam" || text == "active_placebo") return DoseDrug::active_placebo;
  const std::vector<std::string> names{card.drug, "placebo", "saline", "midazolam", "active_placebo"};
  node.fail("unknown drug " + in_quotes(text) + yaml::did_you_mean(text, names) + "; model " + in_quotes(card.name) +
            " doses " + in_quotes(card.drug) +
            ", and a session may give placebo (saline) or midazolam (active placebo)");
}

// max_dose: the cap of a weight-based dose.
double read_max_dose(const NodeRef& cap, const DoseAmount& dose) {
  if (dose.basis != DoseBasis::per_body_weight)
    cap.fail("max_dose caps a weight-based dose (e.g. dose: 0.5 mg/kg, max_dose: 60 mg); the dose here is flat");
  return read_quantity(cap, QuantityKind::drug_amount, Sign::positive);
}

// An intranasal dose of the card's drug is a whole number of the card's devices.
void check_intranasal_devices(const NodeRef& dose_node, const DoseAmount& dose, const ModelCard& card) {
  const double device = card.routes.intranasal->device_mg;
  const double devices = dose.value / device;
  if (dose.basis != DoseBasis::flat || std::abs(devices - std::round(devices)) > 1e-9 || devices < 1.0) {
    dose_node.fail("an intranasal dose is a whole number of " + yaml::format_number(device) + " mg devices (e.g. " +
                   yaml::format_number(2 * device) + " mg), found " + dose_node.kind());
  }
}

// What a rule gives at each session: route, drug, amount (capped), infusion duration.
void read_dose_part(const NodeRef& node, const ModelCard& card, DosingRule& rule, bool amount_from_table) {
  const NodeRef route = node.require("route", "iv_infusion, iv_bolus or intranasal");
  rule.route = read_choice(route, std::array{Route::iv_infusion, Route::iv_bolus, Route::intranasal}, "route");
  if (const auto drug = node.find("drug")) rule.drug = read_dose_drug(*drug, card);
  const bool gives_drug = rule.drug == DoseDrug::model_drug;
  if (gives_drug) {
    if (rule.route == Route::intranasal && !card.routes.intranasal)
      route.fail("model " + in_quotes(card.name) + " has no intranasal route (see `ketasim models show " + card.name +
                 "`)");
    if (rule.route != Route::intranasal && !card.routes.iv)
      route.fail("model " + in_quotes(card.name) + " has no intravenous route");
  }
  if (amount_from_table) {
    for (const char* key : {"dose", "max_dose", "infusion_duration"})
      if (const auto given = node.find(key))
        given->fail(
            std::string(
                "the amounts and durations of a dosing table come from its AMT and RATE (or DUR) columns; remove '") +
            key + "'");
    if (rule.route == Route::intranasal)
      route.fail("a dosing table gives intravenous doses; use route: iv_infusion or iv_bolus");
    return;
  }
  if (gives_drug) {
    rule.dose = read_dose(node.require("dose", "e.g. dose: 0.5 mg/kg or dose: 35 mg"));
  } else if (const auto dose = node.find("dose")) {
    rule.dose = read_dose(*dose);  // recorded (e.g. midazolam 0.045 mg/kg); no drug enters the model
  }
  if (const auto cap = node.find("max_dose")) rule.max_dose_mg = read_max_dose(*cap, rule.dose);
  if (gives_drug && rule.route == Route::intranasal) check_intranasal_devices(*node.find("dose"), rule.dose, card);
  if (rule.route == Route::iv_infusion) {
    rule.infusion_duration =
        read_duration(node.require("infusion_duration", "an iv_infusion needs its duration, e.g. 40 min"));
  } else if (const auto duration = node.find("infusion_duration")) {
    duration->fail("an " + to_string(rule.route) +
                   " dose has no infusion_duration; remove the key or use route: iv_infusion");
  }
}

// as_needed: {from, until, madrs_above | improvement_below, min_interval, max_doses}
AsNeeded read_as_needed(const NodeRef& node, const ModelCard& card) {
  node.expect_map("a map {madrs_above: 22, from: 3 weeks, min_interval: 7 d, max_doses: 6}");
  node.check_keys({"madrs_above", "improvement_below", "from", "until", "min_interval", "max_doses", "delay", "slots"});
  require_depression(node, card, "trigger as-needed dosing");
  AsNeeded rule;
  const auto above = node.find("madrs_above");
  const auto below = node.find("improvement_below");
  if (above && below) below->fail("give either madrs_above or improvement_below, not both");
  if (!above && !below)
    node.fail(
        "as-needed dosing needs a threshold: madrs_above (e.g. 22: MADRS points) or improvement_below (e.g. 50%: "
        "the improvement from baseline)");
  if (above) {
    rule.threshold = AsNeeded::Threshold::madrs_above;
    rule.value = above->as_number();
    if (!(rule.value >= 0.0 && rule.value < kMadrsMaximum))
      above->fail("expected a MADRS score in [0, " + format_significant(kMadrsMaximum) + "), found " + above->kind());
  } else {
    rule.threshold = AsNeeded::Threshold::improvement_below;
    rule.value = below->as_percentage();
    if (!(rule.value > 0.0 && rule.value <= 1.0))
      below->fail("expected an improvement in (0%, 100%], found " + below->kind());
  }
  if (const auto from = node.find("from")) rule.from = read_time_point(*from);
  if (const auto until = node.find("until")) {
    rule.until = read_time_point(*until);
    if (*rule.until <= rule.from) until->fail("until (" + until->kind() + ") must come after from");
  }
  rule.min_interval =
      read_duration(node.require("min_interval", "the shortest time between two sessions, e.g. min_interval: 7 d"));
  if (const auto most = node.find("max_doses")) rule.max_doses = static_cast<int>(most->as_integer(1, kMaxDoseCount));
  if (const auto delay = node.find("delay")) rule.delay = read_time_point(*delay);
  if (const auto slots = node.find("slots")) {
    const auto items = slots->items("clinic slots, e.g. [Mon 09:00, Thu 09:00]");
    if (items.empty()) slots->fail("slots lists no clinic slots; remove the key to dose at the crossing");
    DosingRule weekly;
    read_weekly_schedule(items, weekly);
    rule.slots = weekly.weekly_slots;
  }
  return rule;
}

// When the last dose of a weekly, interval or explicit schedule ends (for a `for` bound, when its
// window ends, if later), from the simulation start. Computed, not expanded.
Ticks schedule_end(const DosingRule& rule) {
  Ticks last_start = rule.start;
  switch (rule.schedule) {
    case ScheduleKind::explicit_times:
      last_start += rule.explicit_times.back();
      break;
    case ScheduleKind::interval:
      last_start += rule.count ? (*rule.count - 1) * rule.interval : *rule.repeat_for;
      break;
    case ScheduleKind::weekly:
      if (rule.count) {
        const auto slots = static_cast<std::int64_t>(rule.weekly_slots.size());
        const std::int64_t last = *rule.count - 1;
        last_start +=
            last / slots * kTicksPerWeek + rule.weekly_slots[static_cast<std::size_t>(last % slots)].time_in_week();
      } else {
        last_start += *rule.repeat_for;
      }
      break;
    case ScheduleKind::as_needed:
    case ScheduleKind::table:
      break;
  }
  return last_start + rule.infusion_duration;
}

// Every time is limited to 100 years; a schedule's start plus its repeats must be too (count:
// 1000000 at every 1 h would end after 114 years). Blamed on count or for, else on schedule.
void check_schedule_end(const NodeRef& node, const DosingRule& rule) {
  const Ticks end = schedule_end(rule);
  const double limit_hours = accepted_range(QuantityKind::time).max;
  if (ticks_to_hours(end) <= limit_hours) return;
  const auto bound = rule.count ? node.find("count") : node.find("for");
  const NodeRef blame = bound ? *bound : node.require("schedule", "");
  blame.fail("this schedule's last dose ends " + yaml::format_number(ticks_to_hours(end) / kHoursPerYear) +
             " years after the simulation start; every time must lie within 100 years of it");
}

// The schedule keys of a rule or a phase: schedule, start, for, count.
void read_schedule_part(const NodeRef& node, DosingRule& rule) {
  read_schedule(node.require("schedule", "e.g. schedule: [Mon 09:00, Thu 09:00], 'every 3.5 d' or {at: [9 h]}"), rule);
  if (const auto start = node.find("start")) rule.start = read_time_point(*start);
  read_repeat_bounds(node, rule);
  check_schedule_end(node, rule);
}

// phases: consecutive schedules of the same dose; phase k starts when phase k-1's `for` ends.
std::vector<DosingRule> read_phases(const NodeRef& node, const DosingRule& base, const ModelCard& card) {
  const auto items = node.items("the phases (a list of {schedule, for or count})");
  if (items.empty()) node.fail("phases lists no phases");
  std::vector<DosingRule> rules;
  Ticks start = base.start;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const NodeRef& item = items[i];
    item.expect_map("a phase (a map with schedule and for, e.g. {schedule: [Mon 09:00, Thu 09:00], for: 3 weeks})");
    item.check_keys({"schedule", "for", "count", "dose", "max_dose"});
    DosingRule rule = base;
    rule.where = item.where;
    // A phase may change the amount (e.g. 56 mg then 84 mg); route and duration stay the rule's.
    if (const auto dose = item.find("dose")) {
      rule.dose = read_dose(*dose);
      if (rule.route == Route::intranasal && rule.drug == DoseDrug::model_drug)
        check_intranasal_devices(*dose, rule.dose, card);
    }
    if (const auto cap = item.find("max_dose")) rule.max_dose_mg = read_max_dose(*cap, rule.dose);
    rule.start = start;
    read_schedule(item.require("schedule", "e.g. schedule: [Mon 09:00, Thu 09:00] or 'every 2 weeks'"), rule);
    if (rule.schedule == ScheduleKind::explicit_times)
      item.fail("a phase repeats a weekly or interval schedule; list explicit times in a rule of their own");
    // Weekly slots are placed from the phase start: it must be a Monday 00:00 of the rule's weeks.
    if (rule.schedule == ScheduleKind::weekly && (start - base.start) % kTicksPerWeek != 0)
      item.fail("a phase with weekly slots must start at a whole week; the phases before it last " +
                format_hours(start - base.start) + " (give them 'for' in whole weeks)");
    read_repeat_bounds(item, rule);
    check_schedule_end(item, rule);
    const bool last = i + 1 == items.size();
    if (!last && !rule.repeat_for)
      item.fail("every phase but the last needs 'for' (e.g. for: 3 weeks): the next phase starts when it ends");
    if (rule.repeat_for) start += *rule.repeat_for;
    rules.push_back(std::move(rule));
  }
  return rules;
}

// Where the doses of a table rule go: for the card's drug, the compartment its route doses into
// (the card's IV entry; dosing tables give intravenous doses).
TableDoseTarget table_dose_target(const ModelCard& card, const DosingRule& rule) {
  TableDoseTarget target;
  target.route = rule.route;
  target.gives_drug = rule.drug == DoseDrug::model_drug;
  if (target.gives_drug) {
    const Model model(card);
    const int state = model.channel_state(model.iv_channel());
    target.compartment = compartment_number(state);
    target.compartment_name = model.state_names()[static_cast<std::size_t>(state)];
  }
  return target;
}

// doses_from: the path of a dosing table (relative to the scenario), or {file: PATH,
// ignore_columns: [NAMES]} to list columns the table has that ketasim does not read.
std::shared_ptr<const DosingTable> read_doses_from(const NodeRef& node, const ModelCard& card, const DosingRule& rule,
                                                   const std::string& scenario_dir) {
  const std::string expected = "the path of a NONMEM-style dosing table (CSV), relative to the scenario";
  std::string file;
  std::vector<std::string> ignored;
  if (node.is_map()) {
    node.check_keys({"file", "ignore_columns"});
    file = node.require("file", expected).scalar(expected);
    if (const auto list = node.find("ignore_columns"))
      for (const NodeRef& item : list->items("a list of column names, e.g. [WT, STUDY]"))
        ignored.push_back(item.scalar("a column name"));
  } else {
    file = node.scalar(expected + ", or {file: PATH, ignore_columns: [NAMES]}");
  }
  const fs::path path = fs::path(file).is_absolute() ? fs::path(file) : fs::path(scenario_dir) / file;
  try {
    return std::make_shared<const DosingTable>(
        read_dosing_table(path.string(), table_dose_target(card, rule), ignored));
  } catch (const Error& error) {  // unreadable or malformed: reported at the key that names it
    node.fail(error.what());
  }
}

// when: response | remission (a stop rule, given_if).
StopRule::When read_when(const NodeRef& node) {
  const NodeRef when = node.require("when", "when: response or when: remission");
  const std::string what = when.scalar("response or remission");
  if (what == "remission") return StopRule::When::remission;
  if (what != "response")
    when.fail("expected response or remission, found " + when.kind() +
              yaml::did_you_mean(what, {"response", "remission"}));
  return StopRule::When::response;
}

// assessed: before_each_session, the only value for now (a stop rule, a titration).
void check_assessed_before_each_session(const NodeRef& node, const std::string& what) {
  if (const auto assessed = node.find("assessed"))
    if (assessed->scalar("before_each_session") != "before_each_session")
      assessed->fail(what + " is assessed before each session; expected before_each_session, found " +
                     assessed->kind());
}

// stop: {when: response | remission, observed: true, assessed: before_each_session, at_most: 6 sessions}
StopRule read_stop(const NodeRef& node, const ModelCard& card) {
  node.expect_map("a stop rule {when: response, observed: true, assessed: before_each_session, at_most: 6 sessions}");
  node.check_keys({"when", "observed", "assessed", "at_most"});
  require_depression(node, card, "decide a stop by");
  StopRule stop;
  stop.when = read_when(node);
  if (const auto observed = node.find("observed")) stop.observed = observed->as_boolean();
  check_assessed_before_each_session(node, "a stop rule");
  if (const auto at_most = node.find("at_most")) {
    std::string text = at_most->scalar("a number of sessions, e.g. 6 sessions");
    for (const std::string suffix : {" sessions", " session"})
      if (text.size() > suffix.size() && text.ends_with(suffix)) text.resize(text.size() - suffix.size());
    NodeRef count = *at_most;
    count.node = YAML::Node(text);
    stop.at_most = static_cast<int>(count.as_integer(1, kMaxDoseCount));
  }
  return stop;
}

// A time from the first session that may lie before it ("-6 weeks").
Ticks read_signed_time(const NodeRef& node) {
  const std::string text = node.scalar("a time from the first session, e.g. -6 weeks or 0 d");
  const std::string_view trimmed = trim(text);
  if (!trimmed.starts_with('-')) return read_time_point(node);
  return -to_ticks(node, std::string(trim(trimmed.substr(1))), Sign::positive);
}

// oral_antidepressant: true (started with the treatment), false, stable, or
// {started: -6 weeks | stable, stopped: 8 weeks}
std::optional<OralAntidepressant> read_oral_antidepressant(const NodeRef& node) {
  const std::string expected =
      "true (started with the first session), false, stable, or {started: -6 weeks, stopped: 8 weeks}";
  OralAntidepressant course;
  if (!node.is_map()) {
    const std::string text = node.scalar(expected);
    if (text == "stable") {
      course.stable = true;
      return course;
    }
    if (text == "true") return course;
    if (text != "false") node.fail("expected " + expected + ", found " + node.kind());
    return std::nullopt;
  }
  node.check_keys({"started", "stopped"});
  const NodeRef started = node.require("started", "started: 0 d (with the first session), -6 weeks, or stable");
  if (started.scalar("a time or stable") == "stable")
    course.stable = true;
  else
    course.started = read_signed_time(started);
  if (const auto stopped = node.find("stopped")) {
    course.stopped = read_signed_time(*stopped);
    if (!course.stable && *course.stopped <= course.started)
      stopped->fail("the antidepressant is stopped (" + format_hours(*course.stopped) + ") before it is started (" +
                    format_hours(course.started) + ")");
  }
  return course;
}

// titrate: {to: 0.75 mg/kg, when: {improvement_below: 50%}, observed: true, assessed:
// before_each_session, from_session: 2, unless: {peak_dissociation_above: 30}}
Titration read_titrate(const NodeRef& node, const DosingRule& rule, const ModelCard& card) {
  node.expect_map("a titration {to: 0.75 mg/kg, when: {improvement_below: 50%}, from_session: 3}");
  node.check_keys({"to", "when", "observed", "assessed", "from_session", "unless"});
  require_depression(node, card, "decide a titration by");
  Titration titration;
  const NodeRef to = node.require("to", "the new dose, e.g. to: 0.75 mg/kg");
  titration.to = read_dose(to);
  const auto basis = [](DoseBasis b) { return std::string(b == DoseBasis::flat ? "mg" : "mg/kg"); };
  if (titration.to.basis != rule.dose.basis)
    to.fail("the new dose must be in " + basis(rule.dose.basis) + " like the rule's dose, found " + to.kind());
  if (titration.to.value == rule.dose.value)
    to.fail("the new dose " + to.kind() + " is the rule's dose; give another amount or remove titrate");
  if (rule.route == Route::intranasal && rule.drug == DoseDrug::model_drug)
    check_intranasal_devices(to, titration.to, card);
  const NodeRef when = node.require("when", "the condition, e.g. when: {improvement_below: 50%}");
  when.expect_map("a condition {improvement_below: 50%} (the improvement from baseline assessed before a session)");
  when.check_keys({"improvement_below"});
  const NodeRef below = when.require("improvement_below", "e.g. improvement_below: 50%");
  titration.improvement_below = below.as_percentage();
  if (!(titration.improvement_below > 0.0 && titration.improvement_below <= 1.0))
    below.fail("expected an improvement in (0%, 100%], found " + below.kind());
  if (const auto observed = node.find("observed")) titration.observed = observed->as_boolean();
  check_assessed_before_each_session(node, "a titration");
  if (const auto from = node.find("from_session")) {
    titration.from_session = static_cast<int>(from->as_integer(1, kMaxDoseCount));
    if (titration.from_session < 2)
      from->fail("expected a session of 2 or later (the first session is given before any assessment), found " +
                 from->kind());
  }
  if (const auto unless = node.find("unless")) {
    unless->expect_map("a tolerability bar {peak_dissociation_above: 30}");
    unless->check_keys({"peak_dissociation_above"});
    const NodeRef above = unless->require("peak_dissociation_above", "e.g. peak_dissociation_above: 30");
    if (!card.link_with_role(LinkRole::dissociation))
      above.fail("model " + in_quotes(card.name) + " has no dissociation score to bar a titration by");
    titration.peak_dissociation_above = above.as_number();
    check_sign(above, *titration.peak_dissociation_above, Sign::non_negative);
  }
  return titration;
}

// given_if: {when: response | remission, observed: true, assessed_at: 28 d}
ContinuationCondition read_given_if(const NodeRef& node, const ModelCard& card) {
  node.expect_map("a condition {when: response, observed: true, assessed_at: 28 d}");
  node.check_keys({"when", "observed", "assessed_at"});
  require_depression(node, card, "decide a responder-only continuation by");
  ContinuationCondition condition;
  condition.when = read_when(node);
  if (const auto observed = node.find("observed")) condition.observed = observed->as_boolean();
  condition.assessed_at =
      read_duration(node.require("assessed_at", "the assessment's time after the arm's first session, e.g. 28 d"));
  return condition;
}

// A dosing rule: what is given (route, drug, dose) and when: one schedule, consecutive phases, as
// needed, or per subject from a dosing table. Phases expand into one rule each.
std::vector<DosingRule> read_rule(const NodeRef& node, const ModelCard& card, const std::string& scenario_dir) {
  node.expect_map("a dosing rule (a map with route, dose, infusion_duration, schedule, ...)");
  node.check_keys({"route", "drug", "dose", "max_dose", "infusion_duration", "schedule", "start", "for", "count",
                   "phases", "as_needed", "doses_from", "stop", "titrate", "given_if"});
  DosingRule rule;
  rule.where = node.where;
  const std::vector<std::string> timings{"schedule", "phases", "as_needed", "doses_from"};
  std::vector<NodeRef> given;
  for (const std::string& key : timings)
    if (const auto found = node.find(key)) given.push_back(*found);
  if (given.empty())
    node.fail("a dosing rule needs one of schedule (e.g. [Mon 09:00, Thu 09:00]), phases, as_needed or doses_from");
  if (given.size() > 1)
    given[1].fail("a dosing rule takes one of schedule, phases, as_needed or doses_from; this one has several");
  const auto doses_from = node.find("doses_from");
  read_dose_part(node, card, rule, doses_from.has_value());
  if (const auto stop = node.find("stop")) {
    if (!node.find("schedule") && !node.find("phases"))
      stop->fail("a stop rule ends a scheduled series; an as-needed rule or a dosing table cannot have one");
    rule.stop = read_stop(*stop, card);
  }
  if (const auto titrate = node.find("titrate")) {
    if (!node.find("schedule"))
      titrate->fail(
          "a titration changes the dose of a weekly, interval or explicit schedule; an as-needed rule, a dosing "
          "table or phases (which set their own doses) cannot have one");
    rule.titrate = read_titrate(*titrate, rule, card);
  }
  if (const auto given_if = node.find("given_if")) {
    if (!node.find("schedule") && !node.find("phases"))
      given_if->fail("given_if conditions a scheduled series; an as-needed rule or a dosing table cannot have one");
    rule.given_if = read_given_if(*given_if, card);
  }
  if (node.find("schedule")) {
    read_schedule_part(node, rule);
    return {rule};
  }
  for (const char* key : {"for", "count"})
    if (const auto bound = node.find(key))
      bound->fail(std::string("'") + key + "' belongs to a schedule or to each of the phases; remove it here");
  if (const auto phases = node.find("phases")) {
    if (const auto start = node.find("start")) rule.start = read_time_point(*start);
    return read_phases(*phases, rule, card);
  }
  if (const auto start = node.find("start"))
    start->fail("an as-needed rule or a dosing table has no start; remove the key");
  if (const auto as_needed = node.find("as_needed")) {
    rule.schedule = ScheduleKind::as_needed;
    rule.as_needed = read_as_needed(*as_needed, card);
    return {rule};
  }
  rule.schedule = ScheduleKind::table;
  rule.table = read_doses_from(*doses_from, card, rule, scenario_dir);
  return {rule};
}

// The first session of a weekly, interval or explicit schedule, from the simulation start.
Ticks first_session(const DosingRule& rule) {
  switch (rule.schedule) {
    case ScheduleKind::explicit_times:
      return rule.start + rule.explicit_times.front();
    case ScheduleKind::weekly:
      return rule.start + rule.weekly_slots.front().time_in_week();
    case ScheduleKind::interval:
    case ScheduleKind::as_needed:
    case ScheduleKind::table:
      break;
  }
  return rule.start;
}

// given_if: the assessment is timed from the arm's first scheduled session (of the rules given
// unconditionally), and every session of the conditional rule comes after it.
void time_continuation(const NodeRef& node, std::vector<DosingRule>& regimen) {
  std::optional<Ticks> first;
  for (const DosingRule& rule : regimen) {
    if (rule.given_if || rule.schedule == ScheduleKind::as_needed || rule.schedule == ScheduleKind::table) continue;
    first = std::min(first.value_or(first_session(rule)), first_session(rule));
  }
  const NodeRef given_if = node.require("given_if", "");
  if (!first)
    given_if.fail(
        "given_if needs an induction: another scheduled rule in the arm, from whose first session the assessment "
        "is timed");
  for (DosingRule& rule : regimen) {
    if (!rule.given_if) continue;
    rule.given_if->assessment_time = *first + rule.given_if->assessed_at;
    if (first_session(rule) <= rule.given_if->assessment_time)
      given_if.fail("the rule's first session (" + format_hours(first_session(rule)) +
                    " from the simulation start) must come after its assessment (" +
                    format_hours(rule.given_if->assessment_time) + ": " + format_hours(rule.given_if->assessed_at) +
                    " after the arm's first session); move the rule's start or assess earlier");
  }
}

void check_arm_name(const NodeRef& node, const std::string& name) {
  if (name.empty()) node.fail("an arm name must not be empty");
  const bool safe = std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (!safe) {
    node.fail("arm name " + in_quotes(name) +
              " may contain only letters, digits, '_' and '-' (it becomes an HDF5 group name)");
  }
}

// price_per_session: 600 (USD), or a range [400, 800].
void read_price(const NodeRef& node, Arm& arm) {
  const std::string expected = "a price per session in USD, e.g. 600, or a range [400, 800]";
  if (node.is_sequence()) {
    const auto items = node.items(expected);
    if (items.size() != 2)
      node.fail("expected two prices [low, high], found " + std::to_string(items.size()) + " values");
    arm.price_low_usd = items[0].as_number();
    arm.price_high_usd = items[1].as_number();
  } else {
    arm.price_low_usd = arm.price_high_usd = node.as_number();
  }
  if (!(arm.price_low_usd >= 0.0 && arm.price_high_usd >= arm.price_low_usd))
    node.fail("expected prices >= 0 with the low price first; found " + node.kind());
}

}  // namespace

std::vector<Arm> read_arms(const NodeRef& node, const ModelCard& card, const std::string& scenario_dir) {
  const auto items = node.items("the arms (a list of {name, regimen})");
  if (items.empty()) node.fail("a scenario needs at least one arm");
  std::vector<Arm> arms;
  std::vector<std::string> name_paths;
  for (const auto& item : items) {
    item.expect_map("an arm (a map with name and regimen)");
    item.check_keys(
        {"name", "model", "regimen", "oral_antidepressant", "missed_session_probability", "price_per_session"});
    const NodeRef name_node = item.require("name", "e.g. name: twice_weekly");
    Arm arm;
    arm.name = name_node.scalar("an arm name");
    check_arm_name(name_node, arm.name);
    for (std::size_t i = 0; i < arms.size(); ++i) {
      if (arms[i].name == arm.name)
        name_node.fail("duplicate arm name " + in_quotes(arm.name) + " (also " + name_paths[i] + ")");
    }
    const NodeRef regimen = item.require("regimen", "a dosing rule, or a list of dosing rules");
    const ModelCard* arm_card = &card;
    if (const auto model = item.find("model")) {
      arm.model = read_model(*model);
      arm_card = find_builtin_model(arm.model->name);
    }
    std::vector<NodeRef> rules{regimen};
    if (regimen.is_sequence()) {
      rules = regimen.items("dosing rules");
      if (rules.empty()) regimen.fail("the regimen lists no dosing rules");
    }
    std::optional<NodeRef> as_needed;
    std::optional<NodeRef> stop;
    std::optional<NodeRef> titrate;
    std::optional<NodeRef> given_if;
    for (const auto& rule : rules) {
      for (DosingRule& read : read_rule(rule, *arm_card, scenario_dir)) arm.regimen.push_back(std::move(read));
      const DosingRule& read = arm.regimen.back();
      for (auto [present, first, what] : {std::tuple(read.stop.has_value(), &stop, "stop rule"),
                                          std::tuple(read.titrate.has_value(), &titrate, "titration"),
                                          std::tuple(read.given_if.has_value(), &given_if, "given_if rule")}) {
        if (!present) continue;
        if (*first)
          rule.fail(std::string("an arm has at most one ") + what + " (the other is at " + (*first)->path + ")");
        *first = rule;
      }
      if (arm.regimen.back().as_needed) {
        if (as_needed) rule.fail("an arm has at most one as-needed rule (the other is at " + as_needed->path + ")");
        as_needed = rule;
      }
    }
    if (given_if) time_continuation(*given_if, arm.regimen);
    if (const auto background = item.find("oral_antidepressant"))
      arm.oral_antidepressant = read_oral_antidepressant(*background);
    if (const auto missed = item.find("missed_session_probability")) {
      arm.missed_session_probability = missed->as_percentage();
      if (!(arm.missed_session_probability >= 0.0 && arm.missed_session_probability < 1.0))
        missed->fail("expected a probability in [0%, 100%), found " + missed->kind());
    }
    if (const auto price = item.find("price_per_session")) read_price(*price, arm);
    name_paths.push_back(name_node.path);
    arms.push_back(std::move(arm));
  }
  return arms;
}

}  // namespace ketasim::loader
