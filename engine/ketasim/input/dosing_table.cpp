#include "ketasim/input/dosing_table.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <unordered_map>

#include "ketasim/base/csv.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/input_file.hpp"
#include "ketasim/base/time.hpp"
#include "ketasim/base/units.hpp"
#include "ketasim/base/yaml_reader.hpp"

namespace ketasim {

namespace {

std::string upper(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return text;
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
           format_shortest(time) + " is before the previous row's " + format_shortest(last_time_) + " (line " +
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
             "the table holds several arms (ARM " + format_shortest(*arm_) + " and " + format_shortest(*arm) +
                 "); export one arm (ketasim export --arm NAME) to use it as an arm's doses");
    }
    if (const auto subject = number(line, Item::subject); subject && *subject != static_cast<double>(id))
      fail(line, Item::subject,
           "SUBJ " + format_shortest(*subject) + " differs from ID " + std::to_string(id) +
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
      fail(line, Item::amount, format_shortest(*amount) + " mg " + outside_accepted_range(QuantityKind::drug_amount));
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
           "the infusion lasts " + format_shortest(hours) + " h, beyond the limit of 100 years");
    const Ticks ticks = hours_to_ticks(hours);
    if (ticks <= 0)
      fail(line, has(Item::duration) && duration_given ? Item::duration : Item::rate,
           "the infusion lasts " + format_shortest(hours) + " h, shorter than the time resolution of 1 ms");
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
           "ADDL " + format_shortest(count) + " needs an interdose interval II > 0 (h), found " +
               text(line, Item::interval));
    if (count == 0.0 && hours > 0.0)
      fail(line, Item::interval,
           "II " + format_shortest(hours) +
               " without additional doses: NONMEM takes II with ADDL > 0 (or steady state) only; give "
               "ADDL, the number of doses after this one, or II 0");
    const auto k_max = static_cast<std::int64_t>(count);
    const Ticks step = hours_to_ticks(std::min(hours, kMaxTimeHours));
    if (k_max > 0 && step <= 0)
      fail(line, Item::interval, "II " + format_shortest(hours) + " h is shorter than the time resolution of 1 ms");
    if (k_max > 0 && start + k_max * step > kMaxTimeTicks)
      fail(line, Item::additional,
           "the last additional dose, at " +
               format_shortest(ticks_to_hours(start) + static_cast<double>(k_max) * hours) +
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

}  // namespace ketasim
