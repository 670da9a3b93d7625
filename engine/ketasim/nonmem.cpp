#include "ketasim/nonmem.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <unordered_map>

#include "ketasim/csv.hpp"
#include "ketasim/errors.hpp"
#include "ketasim/input_file.hpp"
#include "ketasim/model.hpp"
#include "ketasim/model_card.hpp"
#include "ketasim/result_reader.hpp"
#include "ketasim/units.hpp"
#include "ketasim/scenario_loader.hpp"
#include "ketasim/timeline.hpp"
#include "ketasim/yaml_reader.hpp"

namespace ketasim {

namespace {

std::string upper(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return text;
}

// The shortest text that reads back as the same double (std::to_chars): exact round trips.
std::string number_text(double value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ptr);
}

Ticks hours_to_ticks(double hours) {
  return std::llround(hours * static_cast<double>(kTicksPerHour));
}

// ---------------------------------------------------------------------------------------------
// Reading a dosing table

// The data items a dosing table may have; docs/nonmem.md says what each means.
enum class Item {
  id,
  time,
  amount,
  rate,
  duration,
  evid,
  mdv,
  compartment,
  additional,
  interval,
  steady_state,
  dv,
  ipred,
  dvid,
  arm,
  subject
};
constexpr std::array<std::pair<Item, const char*>, 16> kItems{{{Item::id, "ID"},
                                                               {Item::time, "TIME"},
                                                               {Item::amount, "AMT"},
                                                               {Item::rate, "RATE"},
                                                               {Item::duration, "DUR"},
                                                               {Item::evid, "EVID"},
                                                               {Item::mdv, "MDV"},
                                                               {Item::compartment, "CMT"},
                                                               {Item::additional, "ADDL"},
                                                               {Item::interval, "II"},
                                                               {Item::steady_state, "SS"},
                                                               {Item::dv, "DV"},
                                                               {Item::ipred, "IPRED"},
                                                               {Item::dvid, "DVID"},
                                                               {Item::arm, "ARM"},
                                                               {Item::subject, "SUBJ"}}};

// kItems is indexed by Item (name_of, the column positions): it must list them in that order.
constexpr bool items_in_enum_order() {
  for (std::size_t i = 0; i < kItems.size(); ++i)
    if (static_cast<std::size_t>(kItems[i].first) != i) return false;
  return true;
}
static_assert(items_in_enum_order());

const char* name_of(Item item) {
  return kItems[static_cast<std::size_t>(item)].second;
}

// NONMEM's event types. ketasim reads doses, checks observations and other events, and refuses
// resets (one continuous course per subject).
enum class Evid { observation = 0, dose = 1, other = 2, reset = 3, reset_and_dose = 4 };

const Ticks kMaxTimeTicks = hours_to_ticks(kMaxTimeHours);

class TableReader {
 public:
  TableReader(const std::string& path, const std::string& text, const TableDoseTarget& target)
      : reader_(text, path), target_(target) {
    table_.file = path;
    columns_.fill(-1);
  }

  DosingTable read(const std::vector<std::string>& ignored_columns) {
    const std::optional<csv::Line> header = reader_.next();
    if (!header) reader_.fail(1, 1, "the table is empty; expected a header line such as ID,TIME,AMT,RATE,EVID");
    read_header(*header, ignored_columns);
    int last_line = header->number;
    while (const std::optional<csv::Line> line = reader_.next()) {
      last_line = line->number;
      if (line->fields.size() != header->fields.size())
        reader_.fail(line->number, 1,
                     "the row has " + std::to_string(line->fields.size()) + " fields, the header " +
                         std::to_string(header->fields.size()));
      read_row(*line);
    }
    if (table_.doses.empty()) reader_.fail(last_line, 1, "the table has no dose rows (EVID 1)");
    // Additional doses (ADDL) may fall after later rows of the same ID.
    for (auto& entry : table_.doses)
      std::stable_sort(entry.second.begin(), entry.second.end(),
                       [](const TableDose& a, const TableDose& b) { return a.time < b.time; });
    return std::move(table_);
  }

 private:
  bool has(Item item) const { return columns_[static_cast<std::size_t>(item)] >= 0; }

  const csv::Field& field(const csv::Line& line, Item item) const {
    return line.fields[static_cast<std::size_t>(columns_[static_cast<std::size_t>(item)])];
  }

  // Fails at the cell of `item` (the line's start when the table has no such column).
  [[noreturn]] void fail(const csv::Line& line, Item item, const std::string& message) const {
    reader_.fail(line.number, has(item) ? field(line, item).column : 1,
                 std::string("column ") + name_of(item) + ": " + message);
  }

  // The number in a cell; nullopt for an absent column, an empty cell or "." (NONMEM's missing value).
  std::optional<double> number(const csv::Line& line, Item item) const {
    if (!has(item)) return std::nullopt;
    const std::string& text = field(line, item).text;
    if (text.empty() || text == ".") return std::nullopt;
    const auto value = csv::parse_number(text);
    if (!value) fail(line, item, "'" + text + "' is not a number");
    return value;
  }

  std::string text(const csv::Line& line, Item item) const {
    return has(item) ? "'" + field(line, item).text + "'" : "nothing";
  }

  // Fails unless the cell is missing or 0: what the row does not use must not carry a value.
  void require_zero(const csv::Line& line, Item item, const std::string& why) const {
    const auto value = number(line, item);
    if (value && *value != 0.0) fail(line, item, "found " + text(line, item) + " (expected 0 or '.'): " + why);
  }

  void read_header(const csv::Line& header, const std::vector<std::string>& ignored_columns) {
    std::vector<std::string> ignored;
    for (const std::string& name : ignored_columns) ignored.push_back(upper(name));
    std::vector<bool> ignored_seen(ignored.size(), false);
    std::vector<std::string> known;
    for (const auto& [item, name] : kItems) known.emplace_back(name);
    for (std::size_t c = 0; c < header.fields.size(); ++c) {
      const csv::Field& cell = header.fields[c];
      const std::string name = upper(cell.text);
      if (name.empty())
        reader_.fail(header.number, cell.column, "the header's column " + std::to_string(c + 1) + " has no name");
      const auto found = std::find(known.begin(), known.end(), name);
      if (found != known.end()) {
        int& column = columns_[static_cast<std::size_t>(found - known.begin())];
        if (column >= 0) reader_.fail(header.number, cell.column, "column " + name + " appears twice in the header");
        column = static_cast<int>(c);
        continue;
      }
      const auto listed = std::find(ignored.begin(), ignored.end(), name);
      if (listed != ignored.end()) {
        ignored_seen[static_cast<std::size_t>(listed - ignored.begin())] = true;
        continue;
      }
      reader_.fail(
          header.number, cell.column,
          "column " + cell.text + " is not a data item ketasim reads" + yaml::did_you_mean(name, known) +
              " (it reads " + yaml::join_alternatives(known, "and") +
              "; a subject's covariates come from cohort:, e.g. cohort.from_csv). List it in doses_from.ignore_columns "
              "to use the table without it");
    }
    for (std::size_t i = 0; i < ignored.size(); ++i) {
      if (std::find(known.begin(), known.end(), ignored[i]) != known.end())
        reader_.fail(header.number, 1,
                     "doses_from.ignore_columns lists " + ignored_columns[i] +
                         ", a column ketasim reads; remove it from the list");
      if (!ignored_seen[i])
        reader_.fail(header.number, 1,
                     "doses_from.ignore_columns lists " + ignored_columns[i] + ", which the header does not have");
    }
    for (const Item item : {Item::id, Item::time, Item::amount})
      if (!has(item)) reader_.fail(header.number, 1, std::string("the header has no ") + name_of(item) + " column");
    if (target_.route == Route::iv_infusion && !has(Item::rate) && !has(Item::duration))
      reader_.fail(header.number, 1, "infusions need a RATE (mg/h) or DUR (h) column");
  }

  void read_row(const csv::Line& line) {
    const auto id = number(line, Item::id);
    if (!id || *id < 1.0 || *id != std::floor(*id) || *id > 9.0e15)
      fail(line, Item::id, "expected a whole number >= 1 (ID 1 is subject 0), found " + text(line, Item::id));
    const auto time = number(line, Item::time);
    if (!time || *time < 0.0)
      fail(line, Item::time, "expected hours from the simulation start, >= 0, found " + text(line, Item::time));
    if (*time > kMaxTimeHours) fail(line, Item::time, text(line, Item::time) + " h is beyond the limit of 100 years");
    check_order(line, static_cast<std::int64_t>(*id), *time);
    check_bookkeeping(line, static_cast<std::int64_t>(*id));
    require_zero(
        line, Item::steady_state,
        "ketasim does not simulate steady-state doses (SS 1 or 2; steady state comes in a later version). Give the "
        "doses that lead to steady state explicitly, e.g. one row with ADDL and II");
    switch (event_of(line)) {
      case Evid::dose:
        read_dose(line, static_cast<std::int64_t>(*id), hours_to_ticks(*time));
        break;
      case Evid::observation:
        check_observation(line);
        break;
      case Evid::other:
        check_other_event(line);
        break;
      case Evid::reset:
      case Evid::reset_and_dose:
        fail(line, Item::evid,
             "EVID " + field(line, Item::evid).text +
                 " is a reset (every compartment and the response state emptied); ketasim simulates one continuous "
                 "course "
                 "per subject and cannot reset it. Simulate each period as an arm of its own (the same virtual "
                 "patients are "
                 "in every arm)");
    }
  }

  Evid event_of(const csv::Line& line) const {
    if (!has(Item::evid)) return Evid::dose;  // without EVID every row is a dose
    const auto evid = number(line, Item::evid);
    if (evid && (*evid == 0.0 || *evid == 1.0 || *evid == 2.0 || *evid == 3.0 || *evid == 4.0))
      return static_cast<Evid>(static_cast<int>(*evid));
    fail(line, Item::evid, "expected 0 (observation), 1 (dose) or 2 (other event), found " + text(line, Item::evid));
  }

  // NONMEM starts a new individual at every change of ID and requires ascending times within one.
  void check_order(const csv::Line& line, std::int64_t id, double time) {
    if (id != current_id_) {
      const auto seen = last_line_of_id_.find(id);
      if (seen != last_line_of_id_.end())
        fail(line, Item::id,
             "ID " + std::to_string(id) + " appears again after other IDs (its rows ended at line " +
                 std::to_string(seen->second) +
                 "); NONMEM starts a new individual at every change of ID, so the rows of one ID must be together");
      current_id_ = id;
      last_time_ = time;
    } else if (time < last_time_) {
      fail(line, Item::time,
           number_text(time) + " is before the previous row's " + number_text(last_time_) + " (line " +
               std::to_string(last_line_of_id_[id]) + "); NONMEM requires ascending times within an individual");
    }
    last_time_ = time;
    last_line_of_id_[id] = line.number;
  }

  // ARM and SUBJ are what `ketasim export` writes beside ID: a table of one arm, whose IDs are the
  // subject ids + 1, can be read back; an export of several arms cannot.
  void check_bookkeeping(const csv::Line& line, std::int64_t id) {
    if (const auto arm = number(line, Item::arm)) {
      if (!arm_) arm_ = *arm;
      if (*arm != *arm_)
        fail(line, Item::arm,
             "the table holds several arms (ARM " + number_text(*arm_) + " and " + number_text(*arm) +
                 "); export one arm (ketasim export --arm NAME) to use it as an arm's doses");
    }
    if (const auto subject = number(line, Item::subject); subject && *subject != static_cast<double>(id))
      fail(line, Item::subject,
           "SUBJ " + number_text(*subject) + " differs from ID " + std::to_string(id) +
               ": the IDs are not subject ids + 1 (an export of several arms); export one arm");
  }

  void read_dose(const csv::Line& line, std::int64_t id, Ticks time) {
    TableDose dose;
    dose.time = time;
    const auto amount = number(line, Item::amount);
    if (!amount || !(*amount > 0.0))
      fail(line, Item::amount,
           "a dose needs an amount > 0 mg, found " + text(line, Item::amount) +
               (has(Item::evid) ? "" : " (without an EVID column every row is a dose)"));
    if (!in_accepted_range(QuantityKind::drug_amount, *amount))
      fail(line, Item::amount, number_text(*amount) + " mg " + outside_accepted_range(QuantityKind::drug_amount));
    dose.amount_mg = *amount;
    if (const auto mdv = number(line, Item::mdv); mdv && *mdv != 1.0)
      fail(line, Item::mdv,
           "a dose row has MDV 1 (or '.'); MDV " + field(line, Item::mdv).text +
               " would make it an observation too, which a dosing table cannot give");
    for (const Item item : {Item::dv, Item::ipred, Item::dvid})
      require_zero(line, item, "a dose row carries no observation");
    check_compartment(line);
    dose.duration = infusion_duration(line, *amount);
    std::vector<TableDose>& doses = table_.doses[id];
    for (const Ticks start : additional_dose_times(line, time, doses.size())) {
      dose.time = start;
      doses.push_back(dose);
    }
  }

  void check_compartment(const csv::Line& line) const {
    const auto compartment = number(line, Item::compartment);
    if (!compartment || *compartment == 0.0) return;  // NONMEM's default dose compartment: the route's
    if (!target_.gives_drug)
      fail(line, Item::compartment,
           "a placebo session enters no compartment; expected 0 or '.', found " + text(line, Item::compartment));
    if (*compartment != static_cast<double>(target_.compartment))
      fail(line, Item::compartment,
           "route " + to_string(target_.route) + " doses into " + target_.compartment_name + ", CMT " +
               std::to_string(target_.compartment) +
               " (the model's states are numbered from 1 in the order `ketasim models show` "
               "lists them), found " +
               text(line, Item::compartment));
  }

  // RATE > 0: AMT / RATE; RATE -2 (the model's duration in NONMEM, here the DUR column) or no RATE:
  // DUR. RATE -1 (the model's rate) cannot be honoured: ketasim's models have no modelled rate.
  Ticks infusion_duration(const csv::Line& line, double amount) const {
    const auto rate = number(line, Item::rate);
    const auto duration = number(line, Item::duration);
    if (rate && *rate == -1.0)
      fail(line, Item::rate,
           "RATE -1 asks the model for the infusion rate (R1 in NONMEM's $PK), which ketasim's models do not "
           "define; give RATE > 0 (mg/h) or a duration in DUR (h)");
    if (rate && *rate < 0.0 && *rate != -2.0)
      fail(line, Item::rate,
           "expected a rate > 0 (mg/h), 0, -2 (duration in DUR) or '.', found " + text(line, Item::rate));
    const bool duration_given = duration && *duration != 0.0;
    if (target_.route != Route::iv_infusion) {
      if ((rate && *rate != 0.0))
        fail(line, Item::rate,
             "route " + to_string(target_.route) + " gives boluses: expected 0 or '.', found " +
                 text(line, Item::rate) + "; use route: iv_infusion for infusions");
      if (duration_given)
        fail(line, Item::duration,
             "route " + to_string(target_.route) + " gives boluses: expected 0 or '.', found " +
                 text(line, Item::duration) + "; use route: iv_infusion for infusions");
      return 0;
    }
    double hours = 0.0;
    if (rate && *rate > 0.0) {
      if (duration_given)
        fail(line, Item::duration, "give the infusion's RATE or its DUR (with RATE -2, 0 or '.'), not both");
      hours = amount / *rate;
    } else if (duration_given) {
      if (*duration < 0.0) fail(line, Item::duration, "expected a duration > 0 h, found " + text(line, Item::duration));
      hours = *duration;
    } else if (rate && *rate == -2.0) {
      fail(line, Item::rate,
           "RATE -2 takes the infusion's duration from the model (D1 in NONMEM's $PK); ketasim reads it from "
           "a DUR column (h), which is " +
               std::string(has(Item::duration) ? "empty in this row" : "missing"));
    } else {
      fail(line, has(Item::rate) ? Item::rate : Item::duration,
           "an infusion needs RATE > 0 (mg/h), or DUR > 0 (h) with RATE -2, 0 or '.'");
    }
    if (hours > kMaxTimeHours)
      fail(line, has(Item::duration) && duration_given ? Item::duration : Item::rate,
           "the infusion lasts " + number_text(hours) + " h, beyond the limit of 100 years");
    const Ticks ticks = hours_to_ticks(hours);
    if (ticks <= 0)
      fail(line, has(Item::duration) && duration_given ? Item::duration : Item::rate,
           "the infusion lasts " + number_text(hours) + " h, shorter than the time resolution of 1 ms");
    return ticks;
  }

  // The row's dose and its ADDL additional doses, II apart: t0 + k * II, by multiplication (II is
  // rounded to the 1 ms resolution once, as every interval of a schedule).
  std::vector<Ticks> additional_dose_times(const csv::Line& line, Ticks start, std::size_t doses_so_far) const {
    const auto additional = number(line, Item::additional);
    const auto interval = number(line, Item::interval);
    const double count = additional.value_or(0.0);
    if (count < 0.0 || count != std::floor(count) || count > static_cast<double>(kMaxDoseCount))
      fail(line, Item::additional,
           "expected a whole number of additional doses, 0 to " + std::to_string(kMaxDoseCount) + ", found " +
               text(line, Item::additional));
    const double hours = interval.value_or(0.0);
    if (hours < 0.0)
      fail(line, Item::interval, "expected an interdose interval >= 0 h, found " + text(line, Item::interval));
    if (count > 0.0 && !(hours > 0.0))
      fail(line, has(Item::interval) ? Item::interval : Item::additional,
           "ADDL " + number_text(count) + " needs an interdose interval II > 0 (h), found " +
               text(line, Item::interval));
    if (count == 0.0 && hours > 0.0)
      fail(line, Item::interval,
           "II " + number_text(hours) +
               " without additional doses: NONMEM takes II with ADDL > 0 (or steady state) only; give "
               "ADDL, the number of doses after this one, or II 0");
    const auto k_max = static_cast<std::int64_t>(count);
    const Ticks step = hours_to_ticks(std::min(hours, kMaxTimeHours));
    if (k_max > 0 && step <= 0)
      fail(line, Item::interval, "II " + number_text(hours) + " h is shorter than the time resolution of 1 ms");
    if (k_max > 0 && start + k_max * step > kMaxTimeTicks)
      fail(line, Item::additional,
           "the last additional dose, at " + number_text(ticks_to_hours(start) + static_cast<double>(k_max) * hours) +
               " h, is beyond the limit of 100 years");
    if (doses_so_far + static_cast<std::size_t>(k_max) + 1 > static_cast<std::size_t>(kMaxDoseCount))
      fail(line, Item::additional, "more than " + std::to_string(kMaxDoseCount) + " doses for one ID");
    std::vector<Ticks> times;
    for (std::int64_t k = 0; k <= k_max; ++k) times.push_back(start + k * step);
    return times;
  }

  // An observation (EVID 0) is not a dose: ketasim simulates its own observations
  // (output.observations). Its values are not used; what would make it a dose is refused.
  void check_observation(const csv::Line& line) const {
    const std::string why = "an observation row (EVID 0) gives no dose";
    for (const Item item : {Item::amount, Item::rate, Item::duration, Item::additional, Item::interval})
      require_zero(line, item, why);
    if (const auto mdv = number(line, Item::mdv); mdv && *mdv != 0.0 && *mdv != 1.0)
      fail(line, Item::mdv, "expected 0 or 1, found " + text(line, Item::mdv));
  }

  // An other-type event (EVID 2) carries neither a dose nor an observation; turning a compartment
  // on or off (EVID 2 with CMT) is not supported.
  void check_other_event(const csv::Line& line) const {
    const std::string why = "an other-type event (EVID 2) gives no dose";
    for (const Item item : {Item::amount, Item::rate, Item::duration, Item::additional, Item::interval})
      require_zero(line, item, why);
    require_zero(line, Item::compartment,
                 "an other-type event with a CMT turns a compartment on or off, which ketasim's models do not support");
    for (const Item item : {Item::dv, Item::ipred, Item::dvid})
      require_zero(line, item, "an other-type event (EVID 2) carries no observation");
    if (const auto mdv = number(line, Item::mdv); mdv && *mdv != 1.0)
      fail(line, Item::mdv, "an other-type event (EVID 2) has MDV 1 (or '.'), found " + text(line, Item::mdv));
  }

  csv::Reader reader_;
  const TableDoseTarget& target_;
  DosingTable table_;
  std::array<int, kItems.size()> columns_{};  // position in the header, -1 when absent
  std::int64_t current_id_ = 0;
  double last_time_ = 0.0;
  std::unordered_map<std::int64_t, int> last_line_of_id_;
  std::optional<double> arm_;
};

}  // namespace

DosingTable read_dosing_table(const std::string& path, const TableDoseTarget& target,
                              const std::vector<std::string>& ignored_columns) {
  const std::string text = read_text_file(path, "dosing table", kMaxTableFileBytes);
  return TableReader(path, text, target).read(ignored_columns);
}

// ---------------------------------------------------------------------------------------------
// Export

namespace {

// An observed output of one arm: its dv_ and ipred_ metrics, [N x S].
struct ObservedColumns {
  std::string label;    // "plasma_ketamine (ng/mL)"
  int compartment = 0;  // CMT of its rows: the state it reads, 0 when it is no state's
  NumberTable dv, ipred;
};

// What the export reads of one arm, every dataset checked for its shape.
struct ExportArm {
  std::string name;
  int number = 0;  // ARM: 1-based position in the scenario
  const ModelCard* card = nullptr;
  std::size_t subjects = 0;
  std::vector<double> weight, age, female, madrs0, status;
  NumberTable dose_time, dose_duration, dose_amount, dose_route;  // [N x Dmax]
  std::vector<double> sample_times;                               // observation_times_h, [S]
  std::vector<ObservedColumns> observed;                          // DVID order
  // CMT of each route's entry; 0 where the card has no such route.
  int iv_compartment = 0, nasal_compartment = 0, gut_compartment = 0;
};

// One dose row of the data set.
struct DoseRow {
  double time = 0.0;
  double amount = 0.0;
  double rate = 0.0;  // mg/h; 0 for a bolus; -2: the duration is the model's (D in NONMEM's $PK)
  int compartment = 0;
};

void read_compartments(const Model& model, ExportArm& arm, ExportLegend& legend) {
  const auto compartment_of = [&](int channel) {
    if (channel < 0) return 0;
    const int state = model.channel_state(channel);
    legend.compartments.emplace_back(compartment_number(state), model.state_names()[static_cast<std::size_t>(state)]);
    return compartment_number(state);
  };
  arm.iv_compartment = compartment_of(model.iv_channel());
  arm.nasal_compartment = compartment_of(model.nasal_channel());
  arm.gut_compartment = compartment_of(model.swallowed_channel());
}

void read_observed(const FileReader& reader, const H5::Group& group, const std::string& arm_path, const Model& model,
                   ExportArm& arm, ExportLegend& legend) {
  if (FileReader::has_link(group, "observation_times_h"))
    arm.sample_times = reader.read_vector(group, arm_path, "observation_times_h", std::nullopt);
  if (arm.sample_times.empty()) return;
  const H5::Group metrics = reader.open_group(group, arm_path, "metrics");
  const std::string metrics_path = arm_path + "/metrics";
  for (const std::string& name : reader.read_strings(group, arm_path, "observed_outputs")) {
    const ModelOutput* output = model.find_output(name);
    if (!output)
      reader.fail(arm_path + " attribute observed_outputs",
                  "model " + arm.card->name + " has no output '" + name + "'");
    ObservedColumns columns;
    columns.label = name + (output->unit.empty() ? "" : " (" + output->unit + ")");
    columns.compartment = output->state >= 0 ? compartment_number(output->state) : 0;
    if (output->state >= 0)
      legend.compartments.emplace_back(columns.compartment,
                                       model.state_names()[static_cast<std::size_t>(output->state)]);
    for (auto [table, prefix] : {std::pair{&columns.dv, "dv_"}, {&columns.ipred, "ipred_"}}) {
      *table = reader.read_numbers(metrics, metrics_path, prefix + output->dataset);
      if (table->rows != arm.subjects || table->columns != arm.sample_times.size())
        reader.fail(metrics_path + "/" + prefix + output->dataset,
                    "expected " + std::to_string(arm.subjects) + " subjects x " +
                        std::to_string(arm.sample_times.size()) + " sampling times");
    }
    arm.observed.push_back(std::move(columns));
  }
}

ExportArm read_export_arm(const FileReader& reader, const H5::Group& arms, const std::string& name, int number,
                          std::size_t subjects, ExportLegend& legend) {
  const std::string arm_path = "/arms/" + name;
  const H5::Group group = reader.open_group(arms, "/arms", name);
  ExportArm arm;
  arm.name = name;
  arm.number = number;
  arm.subjects = subjects;
  const std::vector<std::string> model_names = reader.read_strings(group, arm_path, "model");
  if (model_names.size() != 1) reader.fail(arm_path + " attribute model", "expected one model name");
  const std::string& model_name = model_names.front();
  arm.card = find_builtin_model(model_name);
  if (!arm.card)
    reader.fail(arm_path + " attribute model", "model '" + model_name + "' is not built into this ketasim");
  const Model model(*arm.card);
  read_compartments(model, arm, legend);

  const std::string subjects_path = arm_path + "/subjects";
  const H5::Group columns = reader.open_group(group, arm_path, "subjects");
  arm.weight = reader.read_vector(columns, subjects_path, "weight_kg", subjects);
  arm.age = reader.read_vector(columns, subjects_path, "age_y", subjects);
  arm.female = reader.read_vector(columns, subjects_path, "female", subjects);
  arm.madrs0 = reader.read_vector(columns, subjects_path, "baseline_madrs", subjects);
  arm.status =
      reader.read_vector(reader.open_group(group, arm_path, "metrics"), arm_path + "/metrics", "status", subjects);
  if (!FileReader::has_link(columns, "dose_route"))
    reader.fail(subjects_path + "/dose_route",
                "missing: the file was written by a ketasim that did not record each dose's route; rerun the scenario "
                "to export it");
  for (auto [table, dataset] : {std::pair{&arm.dose_time, "dose_time_h"},
                                {&arm.dose_duration, "dose_duration_h"},
                                {&arm.dose_amount, "dose_amount_mg"},
                                {&arm.dose_route, "dose_route"}}) {
    *table = reader.read_numbers(columns, subjects_path, dataset);
    if (table->rows != subjects || table->columns != arm.dose_time.columns)
      reader.fail(subjects_path + "/" + dataset, "expected " + std::to_string(subjects) + " subjects x " +
                                                     std::to_string(arm.dose_time.columns) + " doses");
  }
  read_observed(reader, group, arm_path, model, arm, legend);
  return arm;
}

// A subject's dose rows in time order: an IV dose is one row into the drug's central
// compartment; an intranasal session is, per device, a bolus into the nasal depot and a record of
// the same amount into the gut depot whose duration is the model's (RATE -2): NONMEM's two-record
// form of parallel absorption, with the split (F) and the duration (D) in $PK. A session without
// drug (placebo, midazolam) enters no compartment and gives no row.
std::vector<DoseRow> dose_rows(const FileReader& reader, const ExportArm& arm, std::size_t subject) {
  std::vector<DoseRow> rows;
  for (std::size_t d = 0; d < arm.dose_time.columns; ++d) {
    const double time = arm.dose_time.at(subject, d);
    if (std::isnan(time)) break;  // NaN-padded
    const double amount = arm.dose_amount.at(subject, d);
    const double code = arm.dose_route.at(subject, d);
    if (!(code >= 0.0 && code <= 3.0 && code == std::floor(code)))
      reader.fail("/arms/" + arm.name + "/subjects/dose_route", "expected 0 to 3, found " + number_text(code));
    switch (static_cast<DoseRouteCode>(static_cast<int>(code))) {
      case DoseRouteCode::no_drug:
        break;
      case DoseRouteCode::iv_infusion:
      case DoseRouteCode::iv_bolus: {
        const double duration = arm.dose_duration.at(subject, d);
        rows.push_back({time, amount, duration > 0.0 ? amount / duration : 0.0, arm.iv_compartment});
        break;
      }
      case DoseRouteCode::intranasal: {
        const IntranasalEntry& entry = *arm.card->routes.intranasal;
        Dose dose;
        dose.start = hours_to_ticks(time);
        dose.amount_mg = amount;
        dose.route = Route::intranasal;
        for (const Ticks at : device_times(dose, entry)) {
          rows.push_back({ticks_to_hours(at), entry.device_mg, 0.0, arm.nasal_compartment});
          rows.push_back({ticks_to_hours(at), entry.device_mg, -2.0, arm.gut_compartment});
        }
        break;
      }
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [](const DoseRow& a, const DoseRow& b) { return a.time < b.time; });
  return rows;
}

// One subject's rows: doses and observations by TIME, doses first at the same time.
void write_subject(const FileReader& reader, const ExportArm& arm, std::size_t subject, std::int64_t id,
                   std::ostream& out) {
  const std::string key = number_text(static_cast<double>(id));
  const std::string tail = "," + std::to_string(arm.number) + "," + number_text(static_cast<double>(subject + 1)) +
                           "," + number_text(arm.weight[subject]) + "," + number_text(arm.age[subject]) + "," +
                           number_text(arm.female[subject]) + "," + number_text(arm.madrs0[subject]) + "\n";
  const std::vector<DoseRow> doses = dose_rows(reader, arm, subject);
  std::size_t d = 0, s = 0;
  while (d < doses.size() || s < arm.sample_times.size()) {
    if (d < doses.size() && (s == arm.sample_times.size() || doses[d].time <= arm.sample_times[s])) {
      const DoseRow& row = doses[d++];
      out << key << ',' << number_text(row.time) << ',' << number_text(row.amount) << ',' << number_text(row.rate)
          << ',' << row.compartment << ",1,1,.,.,0" << tail;
      continue;
    }
    for (std::size_t v = 0; v < arm.observed.size(); ++v) {
      const double dv = arm.observed[v].dv.at(subject, s), ipred = arm.observed[v].ipred.at(subject, s);
      if (!std::isfinite(dv) || !std::isfinite(ipred))
        reader.fail("/arms/" + arm.name + "/metrics",
                    "subject " + std::to_string(subject) + " is marked solved but its " + arm.observed[v].label +
                        " at " + number_text(arm.sample_times[s]) + " h is not finite");
      out << key << ',' << number_text(arm.sample_times[s]) << ",0,0," << arm.observed[v].compartment << ",0,0,"
          << number_text(dv) << ',' << number_text(ipred) << ',' << v + 1 << tail;
    }
    ++s;
  }
}

}  // namespace

std::vector<std::string> arms_in_result(const std::string& result_path) {
  const QuietHdf5Errors quiet;
  const FileReader reader(result_path);
  try {
    const std::vector<std::string> names = reader.read_strings(open_result_file(result_path), "/", "arms");
    if (names.empty()) reader.fail("/ attribute arms", "expected at least one arm name");
    return names;
  } catch (const H5::Exception& error) {
    throw IoError("cannot read result file '" + result_path + "': " + error.getDetailMsg());
  }
}

ExportLegend write_nonmem_data(const std::string& result_path, const std::vector<std::string>& arms,
                               std::ostream& out) {
  if (arms.empty()) throw Error(ExitCode::usage, "no arm to export");
  const QuietHdf5Errors quiet;
  const FileReader reader(result_path);
  ExportLegend legend;
  std::vector<ExportArm> data;
  try {
    const H5::H5File file = open_result_file(result_path);
    const int layout = read_layout_version(reader, file);
    if (layout < 3)
      reader.fail("/ attribute layout_version", "layout version " + std::to_string(layout) +
                                                    " has no per-subject doses; rerun the scenario with this version");
    legend.arms = reader.read_strings(file, "/", "arms");
    const std::int64_t subjects = reader.read_integer(file, "/", "subjects_per_arm");
    if (subjects < 0)
      reader.fail("/ attribute subjects_per_arm", "expected a count, found " + std::to_string(subjects));
    const H5::Group groups = reader.open_group(file, "", "arms");
    for (const std::string& name : arms) {
      const auto found = std::find(legend.arms.begin(), legend.arms.end(), name);
      if (found == legend.arms.end()) {
        std::string names;
        for (const std::string& arm : legend.arms) names += (names.empty() ? "" : ", ") + arm;
        throw Error(ExitCode::usage, "--arm: no arm '" + name + "' in " + result_path +
                                         yaml::did_you_mean(name, legend.arms) + "; its arms: " + names);
      }
      data.push_back(read_export_arm(reader, groups, name, static_cast<int>(found - legend.arms.begin()) + 1,
                                     static_cast<std::size_t>(subjects), legend));
    }
  } catch (const H5::Exception& error) {
    throw IoError("cannot read the result file '" + result_path + "': " + error.getDetailMsg());
  }
  for (const ObservedColumns& columns : data.front().observed) legend.observed.push_back(columns.label);
  legend.has_observations = !data.front().sample_times.empty();
  std::sort(legend.compartments.begin(), legend.compartments.end());
  legend.compartments.erase(std::unique(legend.compartments.begin(), legend.compartments.end()),
                            legend.compartments.end());

  out << "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV,IPRED,DVID,ARM,SUBJ,WT,AGE,FEMALE,MADRS0\n";
  for (std::size_t k = 0; k < data.size(); ++k) {
    const ExportArm& arm = data[k];
    // Several arms: the k-th arm's subjects get IDs after the previous arms' (docs/nonmem.md).
    const auto first_id = static_cast<std::int64_t>(data.size() > 1 ? k * arm.subjects : 0) + 1;
    for (std::size_t i = 0; i < arm.subjects; ++i) {
      if (arm.status[i] != 0.0) {  // a failed subject has no simulated values
        ++legend.failed_subjects;
        continue;
      }
      write_subject(reader, arm, i, first_id + static_cast<std::int64_t>(i), out);
    }
  }
  if (!out) throw IoError("writing the NONMEM data set failed");
  return legend;
}

ExportLegend write_nonmem_data(const std::string& result_path, const std::string& arm, std::ostream& out) {
  return write_nonmem_data(result_path, std::vector<std::string>{arm}, out);
}

}  // namespace ketasim
