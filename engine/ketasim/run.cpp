#include "ketasim/run.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <thread>

#include "ketasim/blocks.hpp"
#include "ketasim/cohort.hpp"
#include "ketasim/hdf5_writer.hpp"
#include "ketasim/model.hpp"
#include "ketasim/simulate.hpp"
#include "ketasim/timeline.hpp"

namespace ketasim {

double quantile(std::vector<double> values, double probability) {
  std::erase_if(values, [](double v) { return !std::isfinite(v); });
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const double position = probability * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (position - static_cast<double>(below)) * (values[above] - values[below]);
}

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Every per-subject metric, in file order, tagged with the Metric that selects it (none for the
// always-written solver path). Building the layout and filling a row both go through
// for_each_selected_metric, so names, widths and values cannot drift apart.
template <class Visit>
void for_each_metric(const SubjectMetrics& m, const double& solver_path, Visit&& visit) {
  const auto one = [](const double& value) { return std::span<const double>(&value, 1); };
  visit(Metric::cmax, ColumnSpec{"cmax_ng_per_ml", "ng/mL", 1, "maximum plasma ketamine concentration"},
        one(m.cmax_ng_per_ml));
  visit(Metric::cmax, ColumnSpec{"tmax_h", "h", 1, "time of the maximum plasma concentration"}, one(m.tmax_h));
  visit(Metric::auc, ColumnSpec{"auc_ng_h_per_ml", "ng*h/mL", 1, "plasma AUC over the whole output grid (exact integral)"},
        one(m.auc_ng_h_per_ml));
  visit(Metric::auc_per_week,
        ColumnSpec{"auc_per_week_ng_h_per_ml", "ng*h/mL", m.auc_per_week_ng_h_per_ml.size(),
                   "plasma AUC in each week from the start (the last may be partial)"},
        std::span<const double>(m.auc_per_week_ng_h_per_ml));
  visit(Metric::peak_dissociation,
        ColumnSpec{"peak_effect_site_ng_per_ml", "ng/mL", m.peak_effect_ng_per_ml.size(),
                   "per dose: maximum effect-site concentration from its start to the next dose"},
        std::span<const double>(m.peak_effect_ng_per_ml));
  visit(Metric::peak_dissociation,
        ColumnSpec{"peak_dissociation", "", m.peak_dissociation.size(),
                   "per dose: peak dissociation score (CADSS-like points)"},
        std::span<const double>(m.peak_dissociation));
  visit(Metric::peak_dissociation,
        ColumnSpec{"peak_dissociation_time_h", "h", m.peak_dissociation_time_h.size(),
                   "per dose: time of the peak dissociation"},
        std::span<const double>(m.peak_dissociation_time_h));
  visit(Metric::time_above_dissociation,
        ColumnSpec{"time_above_dissociation_h", "h", 1,
                   "total time with the dissociation score at or above output.dissociation_threshold"},
        one(m.time_above_dissociation_h));
  visit(Metric::dosed, ColumnSpec{"dosed_mg", "mg", 1, "drug given within the output grid (infusions pro rata)"},
        one(m.dosed_mg));
  visit(std::optional<Metric>(), ColumnSpec{"solver_path", "", 1, "0 = exact stepping, 1 = ODE (Dormand-Prince 5(4))"},
        one(solver_path));
}

template <class Visit>
void for_each_selected_metric(const std::vector<Metric>& selected, const SubjectMetrics& m, const double& solver_path,
                              Visit&& visit) {
  for_each_metric(m, solver_path, [&](std::optional<Metric> metric, const ColumnSpec& spec, std::span<const double> values) {
    if (!metric || std::find(selected.begin(), selected.end(), *metric) != selected.end()) visit(spec, values);
  });
}

struct TrajectoryColumn {
  OutputVariable variable;
  ColumnSpec spec;
};

ColumnSpec trajectory_spec(OutputVariable variable) {
  switch (variable) {
    case OutputVariable::plasma_ketamine:
      return {"plasma_ketamine_ng_per_ml", "ng/mL", 1, "plasma (racemic) ketamine concentration"};
    case OutputVariable::effect_site:
      return {"effect_site_ng_per_ml", "ng/mL", 1, "effect-site (racemic) ketamine concentration"};
    case OutputVariable::dissociation:
      return {"dissociation_score", "", 1, "dissociation proxy (CADSS-like points)"};
  }
  return {};
}

std::string describe_regimen(const Arm& arm) {
  std::string text;
  for (const DosingRule& rule : arm.regimen) {
    if (!text.empty()) text += "; ";
    text += to_string(rule.route) + " " + std::to_string(rule.dose.value) +
            (rule.dose.basis == DoseBasis::per_body_weight ? " mg/kg" : " mg");
    if (rule.route == Route::iv_infusion)
      text += " over " + std::to_string(ticks_to_hours(rule.infusion_duration) * 60.0) + " min";
    text += ", " + std::to_string(dose_times(rule).size()) + " doses";
  }
  return text;
}

SubjectMetrics sized_metrics(const SimulationPlan& plan, std::size_t doses) {
  SubjectMetrics metrics;
  metrics.auc_per_week_ng_h_per_ml.assign(plan.weeks(), kNaN);
  metrics.peak_effect_ng_per_ml.assign(doses, kNaN);
  metrics.peak_dissociation.assign(doses, kNaN);
  metrics.peak_dissociation_time_h.assign(doses, kNaN);
  return metrics;
}

// What every subject of one arm shares.
struct ArmPlan {
  const Arm* arm = nullptr;
  ArmLayout layout;
  std::size_t doses = 0;
};

class ScenarioRunner {
 public:
  ScenarioRunner(const Scenario& scenario, const ModelCard& card)
      : scenario_(scenario), card_(card), sampler_(scenario, card), plan_(SimulationPlan::from(scenario.output)) {
    const auto layouts = arm_layouts(scenario);
    for (std::size_t a = 0; a < scenario.arms.size(); ++a)
      arms_.push_back({&scenario.arms[a], layouts[a], layouts[a].dose_time_h.size()});
  }

  const std::vector<ArmPlan>& arms() const { return arms_; }
  const SimulationPlan& plan() const { return plan_; }

  // All arms for the subjects of one range; one block per arm.
  std::vector<SubjectBlock> simulate(SubjectRange range) const {
    std::vector<SubjectBlock> blocks(arms_.size());
    for (std::size_t a = 0; a < arms_.size(); ++a) allocate(blocks[a], a, range);
    for (std::int64_t row = 0; row < range.count; ++row) {
      const Subject subject = sampler_.draw(range.first + row);
      std::optional<MammillaryEffectModel> model;
      std::string model_problem;
      try {
        model.emplace(to_model_parameters(card_, subject.parameters));
      } catch (const Error& error) {
        model_problem = error.what();
      }
      for (std::size_t a = 0; a < arms_.size(); ++a)
        simulate_one(blocks[a], static_cast<std::size_t>(row), subject, model ? &*model : nullptr, model_problem);
    }
    return blocks;
  }

 private:
  void allocate(SubjectBlock& block, std::size_t arm, SubjectRange range) const {
    const ArmLayout& layout = arms_[arm].layout;
    const auto rows = static_cast<std::size_t>(range.count);
    block.arm = arm;
    block.first_subject = range.first;
    block.count = range.count;
    block.trajectories.assign(layout.trajectories.size(), std::vector<float>(rows * layout.time_h.size()));
    block.subject_columns.clear();
    for (const auto& column : layout.subject_columns) block.subject_columns.emplace_back(rows * column.width);
    block.metrics.clear();
    for (const auto& column : layout.metrics) block.metrics.emplace_back(rows * column.width);
    block.status.assign(rows, 0);
    block.message.assign(rows, std::string());
  }

  void simulate_one(SubjectBlock& block, std::size_t row, const Subject& subject, const MammillaryEffectModel* model,
                    const std::string& model_problem) const {
    const ArmPlan& arm = arms_[block.arm];
    const std::vector<Dose> doses = expand_doses(*arm.arm, subject.weight_kg);

    // Covariates and individual parameters (display units), then the dose amounts.
    std::size_t column = 0;
    block.subject_columns[column++][row] = subject.weight_kg;
    for (std::size_t p = 0; p < card_.parameters.size(); ++p)
      block.subject_columns[column++][row] = to_display_unit(card_.parameters[p], subject.parameters[p]);
    for (std::size_t d = 0; d < arm.doses; ++d) block.subject_columns[column][row * arm.doses + d] = doses[d].amount_mg;

    const std::size_t n_time = arm.layout.time_h.size();
    TrajectoryRows rows;
    for (std::size_t v = 0; v < scenario_.output.variables.size(); ++v) {
      float* destination = block.trajectories[v].data() + row * n_time;
      switch (scenario_.output.variables[v]) {
        case OutputVariable::plasma_ketamine: rows.plasma_ng_per_ml = destination; break;
        case OutputVariable::effect_site: rows.effect_ng_per_ml = destination; break;
        case OutputVariable::dissociation: rows.dissociation = destination; break;
      }
    }

    SubjectMetrics metrics = sized_metrics(plan_, arm.doses);
    double solver_path = kNaN;
    try {
      if (!model) throw ModelParameterError(model_problem);
      const SolveOutcome outcome = simulate_subject(*model, scenario_.solver, plan_, doses, rows, metrics);
      solver_path = outcome.path == SolverPath::exact ? 0.0 : 1.0;
    } catch (const Error& error) {
      // A subject that cannot be solved is recorded and the run goes on.
      block.status[row] = 1;
      block.message[row] = error.what();
      metrics = sized_metrics(plan_, arm.doses);
      metrics.cmax_ng_per_ml = metrics.tmax_h = metrics.auc_ng_h_per_ml = kNaN;
      metrics.time_above_dissociation_h = metrics.dosed_mg = kNaN;
      for (auto& trajectory : block.trajectories)
        std::fill_n(trajectory.begin() + static_cast<std::ptrdiff_t>(row * n_time), n_time, std::numeric_limits<float>::quiet_NaN());
    }
    std::size_t metric = 0;
    for_each_selected_metric(scenario_.output.metrics, metrics, solver_path, [&](const ColumnSpec& spec, std::span<const double> values) {
      std::copy(values.begin(), values.end(), block.metrics[metric++].begin() + static_cast<std::ptrdiff_t>(row * spec.width));
    });
  }

  const Scenario& scenario_;
  const ModelCard& card_;
  CohortSampler sampler_;
  SimulationPlan plan_;
  std::vector<ArmPlan> arms_;
};

// Collects the per-arm figures printed at the end of a run.
class ReportCollector {
 public:
  ReportCollector(const Scenario& scenario, const std::vector<ArmPlan>& arms, const SimulationPlan& plan)
      : weeks_(ticks_to_hours(plan.grid_end) / 168.0) {
    const auto n = static_cast<std::size_t>(scenario.cohort.size);
    for (const ArmPlan& arm : arms) {
      ArmReport report;
      report.name = arm.arm->name;
      report.description = arm.layout.description;
      report.subjects = scenario.cohort.size;
      report.doses = arm.doses;
      reports_.push_back(report);
      values_.emplace_back(4, std::vector<double>(n, kNaN));
      metric_index_.push_back(index_metrics(arm.layout));
    }
  }

  void add(const SubjectBlock& block) {
    auto& report = reports_[block.arm];
    auto& values = values_[block.arm];
    const auto& index = metric_index_[block.arm];
    const std::size_t doses = report.doses;
    for (std::int64_t r = 0; r < block.count; ++r) {
      const auto row = static_cast<std::size_t>(r);
      const auto subject = static_cast<std::size_t>(block.first_subject + r);
      if (block.status[row] != 0) {
        ++report.failed;
        continue;
      }
      if (block.metrics[index.solver_path][row] == 1.0 && scenario_method_auto_) ++report.ode_fallbacks;  // always written
      const auto value = [&](std::size_t metric, std::size_t position) {
        return metric == kAbsent ? kNaN : block.metrics[metric][position];
      };
      values[0][subject] = value(index.cmax, row);
      values[1][subject] = doses > 0 ? value(index.peak_dissociation, row * doses) : kNaN;
      values[2][subject] = value(index.auc, row) / weeks_;
      values[3][subject] = value(index.time_above, row) / weeks_;
    }
  }

  std::vector<ArmReport> finish() {
    for (std::size_t a = 0; a < reports_.size(); ++a) {
      Quantiles* targets[] = {&reports_[a].cmax_ng_per_ml, &reports_[a].first_dose_peak_dissociation,
                              &reports_[a].weekly_auc_ng_h_per_ml, &reports_[a].dissociation_hours_per_week};
      for (std::size_t k = 0; k < 4; ++k)
        *targets[k] = {quantile(values_[a][k], 0.05), quantile(values_[a][k], 0.5), quantile(values_[a][k], 0.95)};
    }
    return reports_;
  }

  bool scenario_method_auto_ = true;

 private:
  static constexpr std::size_t kAbsent = std::numeric_limits<std::size_t>::max();
  struct MetricIndex {
    std::size_t cmax = kAbsent, auc = kAbsent, peak_dissociation = kAbsent, time_above = kAbsent, solver_path = kAbsent;
  };
  static MetricIndex index_metrics(const ArmLayout& layout) {
    MetricIndex index;
    for (std::size_t i = 0; i < layout.metrics.size(); ++i) {
      const std::string& name = layout.metrics[i].name;
      if (name == "cmax_ng_per_ml") index.cmax = i;
      if (name == "auc_ng_h_per_ml") index.auc = i;
      if (name == "peak_dissociation") index.peak_dissociation = i;
      if (name == "time_above_dissociation_h") index.time_above = i;
      if (name == "solver_path") index.solver_path = i;
    }
    return index;
  }

  double weeks_;
  std::vector<ArmReport> reports_;
  std::vector<std::vector<std::vector<double>>> values_;
  std::vector<MetricIndex> metric_index_;
};

std::int64_t default_block_size(const std::vector<ArmPlan>& arms) {
  std::size_t bytes_per_subject = 0;
  for (const ArmPlan& arm : arms) bytes_per_subject += arm.layout.trajectories.size() * arm.layout.time_h.size() * sizeof(float);
  // About 16 MiB of trajectories per block, in multiples of 64 subjects (the writer's chunk rows).
  const std::size_t target = (std::size_t{16} << 20) / std::max<std::size_t>(bytes_per_subject, 1);
  return static_cast<std::int64_t>(std::clamp<std::size_t>(target / 64 * 64, 64, 4096));
}

}  // namespace

std::vector<ArmLayout> arm_layouts(const Scenario& scenario) {
  const ModelCard* card = find_builtin_model(scenario.model.name);
  if (!card) throw ModelParameterError("unknown model '" + scenario.model.name + "'");
  const SimulationPlan plan = SimulationPlan::from(scenario.output);
  std::vector<ArmLayout> layouts;
  for (const Arm& arm : scenario.arms) {
    ArmLayout layout;
    layout.name = arm.name;
    layout.description = describe_regimen(arm);
    for (std::size_t k = 0; k < plan.time_points(); ++k)
      layout.time_h.push_back(ticks_to_hours(static_cast<Ticks>(k) * plan.grid_step));
    for (const OutputVariable variable : scenario.output.variables) layout.trajectories.push_back(trajectory_spec(variable));
    const std::vector<Dose> nominal = expand_doses(arm, 1.0);
    for (const Dose& dose : nominal) {
      layout.dose_time_h.push_back(ticks_to_hours(dose.start));
      layout.dose_duration_h.push_back(ticks_to_hours(dose.duration));
    }
    layout.subject_columns.push_back({"weight_kg", "kg", 1, "body weight"});
    for (const auto& spec : card->parameters)
      layout.subject_columns.push_back({spec.name, spec.unit, 1, "individual " + spec.description});
    layout.subject_columns.push_back({"dose_amount_mg", "mg", nominal.size(), "amount of each dose"});
    const SubjectMetrics sized = sized_metrics(plan, nominal.size());
    for_each_selected_metric(scenario.output.metrics, sized, kNaN,
                             [&](const ColumnSpec& spec, std::span<const double>) { layout.metrics.push_back(spec); });
    layouts.push_back(std::move(layout));
  }
  return layouts;
}

RunReport run_scenario(const Scenario& scenario, const RunOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const ModelCard* card = find_builtin_model(scenario.model.name);
  if (!card) throw ModelParameterError("unknown model '" + scenario.model.name + "'");
  const ScenarioRunner runner(scenario, *card);

  std::optional<ResultWriter> writer;
  if (!options.output_path.empty()) {
    RunInfo info;
    info.scenario_file = scenario.source_file;
    info.scenario_yaml = scenario.yaml_text;
    info.scenario_name = scenario.name;
    info.model_name = scenario.model.name;
    info.seed = scenario.cohort.seed;
    info.subjects_per_arm = scenario.cohort.size;
    info.solver_method = to_string(scenario.solver.method);
    info.solver_rtol = scenario.solver.rtol;
    info.solver_atol = scenario.solver.atol;
    std::vector<ArmLayout> layouts;
    for (const ArmPlan& arm : runner.arms()) layouts.push_back(arm.layout);
    writer.emplace(options.output_path, info, std::move(layouts), scenario.cohort.size);
  }

  const std::int64_t block_size = options.block_size > 0 ? options.block_size : default_block_size(runner.arms());
  const std::vector<SubjectRange> ranges = split_into_blocks({0, scenario.cohort.size}, block_size);
  const unsigned threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  const std::size_t max_in_flight = 2 * static_cast<std::size_t>(threads);

  ReportCollector collector(scenario, runner.arms(), runner.plan());
  collector.scenario_method_auto_ = scenario.solver.method == SolverMethod::automatic;

  // What a worker hands to the calling thread for one range of subjects, one block per arm:
  // with an output file the blocks prepared for the writer (trajectory chunks already
  // compressed, on the worker), without one the blocks themselves.
  struct FinishedRange {
    std::int64_t subjects = 0;
    std::vector<PreparedBlock> prepared;
    std::vector<SubjectBlock> blocks;
  };

  std::mutex mutex;
  std::condition_variable changed;
  std::deque<FinishedRange> finished;
  std::size_t in_flight = 0;
  std::size_t next_range = 0;
  bool abort = false;
  std::exception_ptr failure;
  const auto cancelled = [&] { return options.cancel != nullptr && options.cancel->load(); };

  const auto worker = [&] {
    while (true) {
      std::size_t index = 0;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return abort || in_flight < max_in_flight; });
        if (abort || cancelled() || next_range >= ranges.size()) return;
        index = next_range++;
        ++in_flight;
      }
      try {
        FinishedRange range{ranges[index].count, {}, runner.simulate(ranges[index])};
        if (writer) {
          for (SubjectBlock& block : range.blocks) range.prepared.push_back(writer->prepare(std::move(block)));
          range.blocks.clear();
        }
        std::lock_guard lock(mutex);
        finished.push_back(std::move(range));
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!failure) failure = std::current_exception();
        abort = true;
      }
      changed.notify_all();
    }
  };

  std::vector<std::jthread> pool;
  for (unsigned i = 0; i < threads; ++i) pool.emplace_back(worker);

  Progress progress;
  progress.subjects_total = scenario.cohort.size;
  try {
    for (std::size_t written = 0; written < ranges.size(); ++written) {
      FinishedRange range;
      {
        std::unique_lock lock(mutex);
        // A signal handler cannot notify the condition variable: poll for cancellation.
        do {
          if (cancelled()) throw InterruptedError("interrupted after " + std::to_string(progress.subjects_done) + " of " +
                                                  std::to_string(progress.subjects_total) + " subjects; nothing written");
        } while (!changed.wait_for(lock, std::chrono::milliseconds(100), [&] { return abort || !finished.empty(); }));
        if (abort) break;
        range = std::move(finished.front());
        finished.pop_front();
      }
      for (PreparedBlock& block : range.prepared) {
        collector.add(block.columns());
        writer->write(std::move(block));
      }
      for (const SubjectBlock& block : range.blocks) collector.add(block);
      {
        std::lock_guard lock(mutex);
        --in_flight;
      }
      changed.notify_all();
      progress.subjects_done += range.subjects;
      progress.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (options.on_progress) options.on_progress(progress);
    }
  } catch (...) {
    {
      std::lock_guard lock(mutex);
      abort = true;
      if (!failure) failure = std::current_exception();
    }
    changed.notify_all();
  }
  pool.clear();  // joins
  if (failure) std::rethrow_exception(failure);

  if (writer) writer->finish();
  RunReport report;
  report.arms = collector.finish();
  report.subjects_per_arm = scenario.cohort.size;
  report.threads = threads;
  report.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace ketasim
