#include "ketasim/output/nonmem_export.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/time.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/output/result_reader.hpp"
#include "ketasim/solve/timeline.hpp"

namespace ketasim {

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
      reader.fail("/arms/" + arm.name + "/subjects/dose_route", "expected 0 to 3, found " + format_shortest(code));
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
  const std::string key = format_shortest(static_cast<double>(id));
  const std::string tail = "," + std::to_string(arm.number) + "," + format_shortest(static_cast<double>(subject + 1)) +
                           "," + format_shortest(arm.weight[subject]) + "," + format_shortest(arm.age[subject]) + "," +
                           format_shortest(arm.female[subject]) + "," + format_shortest(arm.madrs0[subject]) + "\n";
  const std::vector<DoseRow> doses = dose_rows(reader, arm, subject);
  std::size_t d = 0, s = 0;
  while (d < doses.size() || s < arm.sample_times.size()) {
    if (d < doses.size() && (s == arm.sample_times.size() || doses[d].time <= arm.sample_times[s])) {
      const DoseRow& row = doses[d++];
      out << key << ',' << format_shortest(row.time) << ',' << format_shortest(row.amount) << ','
          << format_shortest(row.rate) << ',' << row.compartment << ",1,1,.,.,0" << tail;
      continue;
    }
    for (std::size_t v = 0; v < arm.observed.size(); ++v) {
      const double dv = arm.observed[v].dv.at(subject, s), ipred = arm.observed[v].ipred.at(subject, s);
      if (!std::isfinite(dv) || !std::isfinite(ipred))
        reader.fail("/arms/" + arm.name + "/metrics",
                    "subject " + std::to_string(subject) + " is marked solved but its " + arm.observed[v].label +
                        " at " + format_shortest(arm.sample_times[s]) + " h is not finite");
      out << key << ',' << format_shortest(arm.sample_times[s]) << ",0,0," << arm.observed[v].compartment << ",0,0,"
          << format_shortest(dv) << ',' << format_shortest(ipred) << ',' << v + 1 << tail;
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
