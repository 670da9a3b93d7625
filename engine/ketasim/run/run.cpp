#include "ketasim/run/run.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <limits>
#include <mutex>
#include <numeric>
#include <optional>
#include <span>
#include <thread>

#include "ketasim/base/format.hpp"
#include "ketasim/base/random_stream.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/input/covariate_table.hpp"
#include "ketasim/model/blocks.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/output/hdf5_writer.hpp"
#include "ketasim/output/output_file.hpp"
#include "ketasim/run/cohort.hpp"
#include "ketasim/solve/simulate.hpp"
#include "ketasim/solve/timeline.hpp"

namespace ketasim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// What NaN among a metric's values of a solved subject means. Most metrics are defined for every
// subject: NaN there (like an infinity anywhere) is a failure of the solve, and fails the subject.
// A few are undefined for some subjects by definition, and NaN is then their value: no response
// (first_response_day), not a responder (relapse_day), a dose not given (the per-dose columns,
// padded to the most doses), an assessment past the grid. A NaN computed in those comes from the
// MADRS or the effect site, which the solve checks where it computes them.
enum class NanMeaning { failure, undefined };

struct MetricValues {
  std::span<const double> values;
  NanMeaning nan = NanMeaning::failure;
};

// Every per-subject metric, in file order, tagged with the Metric (scenario output.metrics) that
// selects it (none for the always-written ones). Building the layout and filling a row both go
// through for_each_selected_metric, so ids, names, widths and values cannot drift apart. The
// metrics come in groups, one function each; a group visits (selector, column, values).
MetricValues one(const double& value) {
  return MetricValues{std::span<const double>(&value, 1)};
}
MetricValues many(const std::vector<double>& values) {
  return MetricValues{std::span<const double>(values)};
}
MetricValues nan_if_undefined(MetricValues values) {
  values.nan = NanMeaning::undefined;
  return values;
}

MetricColumn metric_column(MetricId id, std::string unit, std::size_t width, std::string description,
                           std::string_view about = {}, LinkRole role = LinkRole::none) {
  MetricColumn column;
  column.name = metric_dataset(id, about);
  column.unit = std::move(unit);
  column.width = width;
  column.description = std::move(description);
  column.id = id;
  column.link_role = role;
  return column;
}

template <class Visit>
void visit_exposure_metrics(const Model& model, const SubjectMetrics& m, Visit&& visit) {
  const std::string& drug = model.card().drug;
  visit(Metric::cmax, metric_column(MetricId::cmax, "ng/mL", 1, "maximum plasma " + drug + " concentration"),
        one(m.cmax_ng_per_ml));
  visit(Metric::cmax, metric_column(MetricId::tmax, "h", 1, "time of the maximum plasma concentration"), one(m.tmax_h));
  visit(
      Metric::auc,
      metric_column(MetricId::auc, "ng*h/mL", 1, "plasma " + drug + " AUC over the whole output grid (exact integral)"),
      one(m.auc_ng_h_per_ml));
  visit(Metric::auc_per_week,
        metric_column(MetricId::auc_per_week, "ng*h/mL", m.auc_per_week_ng_h_per_ml.size(),
                      "plasma AUC in each week from the start (the last may be partial)"),
        many(m.auc_per_week_ng_h_per_ml));
}

template <class Visit>
void visit_dissociation_metrics(const Model& model, const SubjectMetrics& m, Visit&& visit) {
  if (model.dissociation_link() < 0) return;
  const std::size_t doses = m.peak_effect_ng_per_ml.size();
  visit(Metric::peak_dissociation,
        metric_column(MetricId::peak_effect_site, "ng/mL", doses,
                      "per dose: maximum effect-site concentration from its start to the next dose"),
        nan_if_undefined(many(m.peak_effect_ng_per_ml)));
  for (std::size_t l = 0; l < model.links().size(); ++l) {
    const LinkBlock& link = *model.links()[l];
    if (model.find_signal(link.input) != model.dissociation_effect_site()) continue;
    visit(Metric::peak_dissociation,
          metric_column(MetricId::peak_link, link.unit, doses, "per dose: " + link.name + " at the effect-site maximum",
                        link.name, link.role),
          nan_if_undefined(many(m.peak_link[l])));
  }
  visit(Metric::peak_dissociation,
        metric_column(MetricId::peak_time, "h", doses,
                      "per dose: time of the effect-site maximum (and peak dissociation)"),
        nan_if_undefined(many(m.peak_effect_time_h)));
  visit(Metric::time_above_dissociation,
        metric_column(MetricId::time_above_dissociation, "h", 1,
                      "total time with the dissociation score at or above output.dissociation_threshold"),
        one(m.time_above_dissociation_h));
  visit(Metric::dissociation_burden,
        metric_column(MetricId::dissociation_burden, "h", 1,
                      "integral of the dissociation score over the output grid (score-hours; trapezoid over the grid "
                      "and breakpoints)"),
        one(m.dissociation_burden_score_h));
}

template <class Visit>
void visit_dosing_metrics(const Model& model, const SubjectMetrics& m, Visit&& visit) {
  visit(Metric::dosed,
        metric_column(MetricId::dosed, "mg", 1,
                      model.card().drug + " given within the output grid (constant-rate inputs pro rata)"),
        one(m.dosed_mg));
  visit(Metric::dosed,
        metric_column(MetricId::sessions_given, "", 1, "sessions (drug or placebo) started within the output grid"),
        one(m.sessions_given));
  visit(
      Metric::dosed,
      metric_column(MetricId::sessions_missed, "", 1, "scheduled sessions missed (adherence), within the output grid"),
      one(m.sessions_missed));
  visit(Metric::dosed, metric_column(MetricId::sessions_triggered, "", 1, "sessions given by the arm's as-needed rule"),
        one(m.sessions_triggered));
}

template <class Visit>
void visit_metabolite_metrics(const Model& model, const SubjectMetrics& m, Visit&& visit) {
  std::size_t slot = 0;
  for (std::size_t d = 0; d < model.drugs().size(); ++d) {
    if (static_cast<int>(d) == model.dosed_drug()) continue;
    const std::string& name = model.drugs()[d].name;
    visit(Metric::metabolites,
          metric_column(MetricId::metabolite_cmax, "ng/mL", 1, "maximum plasma " + name + " concentration", name),
          one(m.metabolite_cmax_ng_per_ml[slot]));
    visit(
        Metric::metabolites,
        metric_column(MetricId::metabolite_tmax, "h", 1, "time of the maximum plasma " + name + " concentration", name),
        one(m.metabolite_tmax_h[slot]));
    ++slot;
  }
}

// Its columns are per assessment: "per assessment (1 d, 2 w after the first session)".
std::string per_assessment(const SimulationPlan& plan) {
  std::string at = "per assessment (";
  for (std::size_t k = 0; k < plan.assessments.size(); ++k)
    at += (k ? ", " : "") + format_duration_h(ticks_to_hours(plan.assessments[k]));
  return at + " after the first session)";
}

template <class Visit>
void visit_assessment_metrics(const SimulationPlan& plan, const SubjectMetrics& m, Visit&& visit) {
  const std::string at = per_assessment(plan);
  const std::size_t a = plan.assessments.size();
  visit(Metric::response, metric_column(MetricId::madrs_baseline, "", 1, "MADRS at baseline"), one(m.baseline_madrs));
  visit(Metric::response, metric_column(MetricId::madrs_at, "", a, at + ": the model's MADRS (no residual error)"),
        nan_if_undefined(many(m.madrs_at)));
  visit(Metric::response,
        metric_column(MetricId::madrs_observed_at, "", a,
                      at + ": observed MADRS (with residual error, in [0, " + format_significant(kMadrsMaximum) + "])"),
        nan_if_undefined(many(m.madrs_observed_at)));
  visit(Metric::response,
        metric_column(MetricId::response_at, "", a,
                      at + ": 1 if the observed MADRS fell by at least the response fraction"),
        nan_if_undefined(many(m.response_at)));
  visit(Metric::response,
        metric_column(MetricId::remission_at, "", a,
                      at + ": 1 if the observed MADRS is at or below the remission threshold"),
        nan_if_undefined(many(m.remission_at)));
}

template <class Visit>
void visit_response_course_metrics(const SubjectMetrics& m, Visit&& visit) {
  visit(Metric::response,
        metric_column(MetricId::first_response_day, "d", 1,
                      "days from the first session to the first response (model MADRS); NaN if none"),
        nan_if_undefined(one(m.first_response_day)));
  visit(Metric::response,
        metric_column(MetricId::days_in_response, "d", 1, "days in response (model MADRS) over the output grid"),
        one(m.days_in_response));
  visit(Metric::response,
        metric_column(MetricId::responder_end_of_treatment, "", 1,
                      "1 if in response 1 d after the last session; NaN if past the grid"),
        nan_if_undefined(one(m.responder_end_of_treatment)));
  visit(Metric::response,
        metric_column(MetricId::relapse_day, "d", 1,
                      "responders at the end of treatment: days from the last session to the loss of response "
                      "(censored at the end of the grid)"),
        nan_if_undefined(one(m.relapse_day)));
  visit(Metric::response,
        metric_column(MetricId::relapse_observed, "", 1,
                      "1 if the loss of response happened within the grid, 0 if censored"),
        nan_if_undefined(one(m.relapse_observed)));
}

template <class Visit>
void visit_mass_balance_metrics(const Model& model, const SubjectMetrics& m, Visit&& visit) {
  const std::size_t drugs = model.drugs().size();
  std::string drug_names;
  for (const DrugSpec& spec : model.drugs()) drug_names += (drug_names.empty() ? "" : ", ") + spec.name;
  visit(Metric::mass_balance,
        metric_column(MetricId::given_mg, "mg", drugs, "per drug (" + drug_names + "): entered by dosing"),
        many(m.given_mg));
  visit(Metric::mass_balance,
        metric_column(MetricId::amount_in_body_end_mg, "mg", drugs, "per drug: in the body at the end of the grid"),
        many(m.amount_in_body_end_mg));
  visit(Metric::mass_balance,
        metric_column(MetricId::eliminated_mg, "mg", drugs,
                      "per drug: eliminated, metabolised or lost before absorption"),
        many(m.eliminated_mg));
  visit(Metric::mass_balance, metric_column(MetricId::formed_mg, "mg", drugs, "per drug: formed from a parent drug"),
        many(m.formed_mg));
}

template <class Visit>
void visit_observation_metrics(const SimulationPlan& plan, const SubjectMetrics& m, Visit&& visit) {
  for (std::size_t v = 0; v < plan.observed.size(); ++v) {
    const ModelOutput& output = *plan.observed[v].output;
    const std::size_t samples = plan.observation_times.size();
    visit(std::optional<Metric>(),
          metric_column(MetricId::ipred, output.unit, samples,
                        "per sampling time (observation_times_h): " + output.name + ", the model's value",
                        output.dataset),
          many(m.observed_ipred[v]));
    visit(std::optional<Metric>(),
          metric_column(MetricId::dv, output.unit, samples,
                        "per sampling time (observation_times_h): " + output.name + " observed, with residual error",
                        output.dataset),
          many(m.observed_dv[v]));
  }
}

template <class Visit>
void for_each_metric(const Model& model, const SimulationPlan& plan, const SubjectMetrics& m, const double& solver_path,
                     Visit&& visit) {
  visit_exposure_metrics(model, m, visit);
  visit_dissociation_metrics(model, m, visit);
  visit_dosing_metrics(model, m, visit);
  visit_metabolite_metrics(model, m, visit);
  if (model.has_depression()) {
    visit_assessment_metrics(plan, m, visit);
    visit_response_course_metrics(m, visit);
  }
  visit_mass_balance_metrics(model, m, visit);
  visit_observation_metrics(plan, m, visit);
  visit(std::optional<Metric>(),
        metric_column(MetricId::solver_path, "", 1, "0 = exact stepping, 1 = ODE (Dormand-Prince 5(4))"),
        one(solver_path));
}

template <class Visit>
void for_each_selected_metric(const std::vector<Metric>& selected, const Model& model, const SimulationPlan& plan,
                              const SubjectMetrics& m, const double& solver_path, Visit&& visit) {
  for_each_metric(model, plan, m, solver_path,
                  [&](std::optional<Metric> metric, const MetricColumn& spec, const MetricValues& values) {
                    if (!metric || std::find(selected.begin(), selected.end(), *metric) != selected.end())
                      visit(spec, values);
                  });
}

// Why a solved subject's metrics cannot be written ("" if they can): the first value that is not
// finite where the metric must be (NanMeaning), or infinite anywhere.
std::string first_non_finite_metric(const std::vector<Metric>& selected, const Model& model, const SimulationPlan& plan,
                                    const SubjectMetrics& m) {
  std::string problem;
  for_each_selected_metric(selected, model, plan, m, 0.0, [&](const ColumnSpec& spec, const MetricValues& metric) {
    for (std::size_t i = 0; i < metric.values.size() && problem.empty(); ++i) {
      const double value = metric.values[i];
      if (std::isfinite(value) || (std::isnan(value) && metric.nan == NanMeaning::undefined)) continue;
      problem = "metric " + spec.name + (spec.width == 1 ? "" : "[" + std::to_string(i) + "]") + " is not finite (" +
                format_value(value) + ")";
    }
  });
  return problem;
}

std::string describe_as_needed(const AsNeeded& rule) {
  std::string text = rule.threshold == AsNeeded::Threshold::madrs_above
                         ? "as needed when MADRS > " + format_significant(rule.value)
                         : "as needed when the improvement falls below " + format_significant(100.0 * rule.value) + "%";
  text += " from " + format_duration_h(ticks_to_hours(rule.from));
  if (rule.until) text += " to " + format_duration_h(ticks_to_hours(*rule.until));
  text += ", at least " + format_duration_h(ticks_to_hours(rule.min_interval)) + " apart";
  if (rule.max_doses) text += ", at most " + std::to_string(*rule.max_doses);
  return text;
}

std::string describe_regimen(const Arm& arm) {
  std::string text;
  for (const DosingRule& rule : arm.regimen) {
    if (!text.empty()) text += "; ";
    text += to_string(rule.route);
    if (rule.drug != DoseDrug::model_drug) text += " " + to_string(rule.drug);
    if (rule.schedule == ScheduleKind::table) {
      text += " doses per subject from " + rule.table->file;
      continue;
    }
    if (rule.dose.value > 0.0) {
      text += " " + format_significant(rule.dose.value) +
              (rule.dose.basis == DoseBasis::per_body_weight ? " mg/kg" : " mg");
      if (rule.max_dose_mg) text += " (at most " + format_significant(*rule.max_dose_mg) + " mg)";
    }
    if (rule.route == Route::iv_infusion)
      text += " over " + format_significant(ticks_to_hours(rule.infusion_duration) * kMinutesPerHour) + " min";
    if (rule.as_needed)
      text += ", " + describe_as_needed(*rule.as_needed);
    else
      text += ", " + std::to_string(dose_times(rule).size()) + " doses";
  }
  if (arm.missed_session_probability > 0.0)
    text += "; each scheduled session missed with probability " + format_significant(arm.missed_session_probability);
  if (arm.oral_antidepressant) text += "; oral antidepressant started";
  return text;
}

// The trajectories a scenario asks for, or the model's defaults.
std::vector<const ModelOutput*> selected_outputs(const Scenario& scenario, const Model& model) {
  std::vector<const ModelOutput*> outputs;
  if (scenario.output.variables) {
    for (const std::string& name : *scenario.output.variables) {
      const ModelOutput* output = model.find_output(name);
      if (!output) throw ModelParameterError("model " + model.card().name + " has no output '" + name + "'");
      outputs.push_back(output);
    }
    return outputs;
  }
  const std::string plasma = "plasma_" + model.card().drug;
  for (const ModelOutput& output : model.outputs()) {
    const bool dissociation = output.kind == OutputKind::link && output.index == model.dissociation_link();
    if (output.name == plasma || output.name == "effect_site" || dissociation || output.kind == OutputKind::depression)
      outputs.push_back(&output);
  }
  return outputs;
}

// The states a run must integrate: those its trajectories and metrics observe (model.hpp,
// states_needed). A parameter of zero in the typical subject (e.g. no dissociation tolerance)
// drops what only it would observe.
std::vector<int> observed_states(const Scenario& scenario, const Model& model, const SimulationPlan& plan,
                                 const std::vector<const ModelOutput*>& outputs, const SubjectModel& typical,
                                 const std::vector<int>& variable_parameters) {
  std::vector<int> all(static_cast<std::size_t>(typical.states));
  std::iota(all.begin(), all.end(), 0);
  const auto& metrics = scenario.output.metrics;
  if (std::find(metrics.begin(), metrics.end(), Metric::mass_balance) != metrics.end()) return all;
  std::vector<int> signals{model.drugs()[static_cast<std::size_t>(model.dosed_drug())].plasma_signal};
  // A link's tolerance matters when its strength is not zero in the typical subject, or may not be
  // in some subject (the strength has variability).
  const auto attenuation_varies = [&](const LinkValues& link) {
    for (std::size_t l = 0; l < typical.links.size(); ++l) {
      if (&typical.links[l] != &link) continue;
      const int strength = model.links()[l]->attenuation_strength.index;
      return std::find(variable_parameters.begin(), variable_parameters.end(), strength) != variable_parameters.end();
    }
    return false;
  };
  const auto add_link = [&](const LinkValues& link) {
    signals.push_back(link.input_signal);
    if (link.tolerance_signal >= 0 && (link.attenuation != 0.0 || attenuation_varies(link)))
      signals.push_back(link.tolerance_signal);
  };
  const auto add_depression = [&] {
    const DepressionValues& depression = *typical.depression;
    signals.push_back(depression.drug_signal);
    if (depression.session_signal >= 0) signals.push_back(depression.session_signal);
  };
  if (plan.metabolites)
    for (const DrugSpec& drug : model.drugs()) signals.push_back(drug.plasma_signal);
  if (model.dissociation_link() >= 0) {
    signals.push_back(model.dissociation_driver());
    add_link(typical.links[static_cast<std::size_t>(model.dissociation_link())]);
  }
  if (plan.response && typical.depression) add_depression();
  for (const ModelOutput* output : outputs) {
    if (output->kind == OutputKind::linear) signals.push_back(output->index);
    if (output->kind == OutputKind::link) add_link(typical.links[static_cast<std::size_t>(output->index)]);
    if (output->kind == OutputKind::depression) add_depression();
  }
  return states_needed(typical, signals);
}

const ModelCard& card_of(const ModelChoice& model) {
  const ModelCard* card = find_builtin_model(model.name);
  if (!card) throw ModelParameterError("unknown model '" + model.name + "'");
  return *card;
}

// Everything that depends on the model (card and overrides) only, shared by every arm that
// simulates the same model.
struct ModelEngine {
  ModelEngine(const Scenario& scenario, const ModelChoice& model_choice)
      : choice(model_choice),
        card(card_of(choice)),
        model(card),
        sampler(scenario, choice, card),
        plan(SimulationPlan::from(scenario.output, model)),
        outputs(selected_outputs(scenario, model)) {
    const SubjectModel typical = model.instantiate(sampler.typical_parameters());
    states = observed_states(scenario, model, plan, outputs, typical, sampler.variable_parameters());
    if (static_cast<int>(states.size()) == typical.states) states.clear();  // nothing to drop
  }
  ModelEngine(const ModelEngine&) = delete;
  ModelEngine& operator=(const ModelEngine&) = delete;

  ModelChoice choice;
  const ModelCard& card;
  Model model;
  CohortSampler sampler;
  SimulationPlan plan;
  std::vector<const ModelOutput*> outputs;
  std::vector<int> states;  // the observed states; empty = all
};

// What every subject of one arm shares.
struct ArmPlan {
  const Arm* arm = nullptr;
  ArmLayout layout;
  std::size_t doses = 0;  // the most doses a subject can be given (width of the per-dose columns)
  const DosingRule* as_needed = nullptr;
  int as_needed_rule = -1;
  std::size_t engine = 0;  // index into the runner's model engines
};

ArmLayout layout_of(const Scenario& scenario, const Arm& arm, const ModelEngine& engine);

class ScenarioRunner {
 public:
  explicit ScenarioRunner(const Scenario& scenario) : scenario_(scenario) {
    for (const Arm& arm_spec : scenario.arms) {
      const ModelChoice choice = model_of(scenario, arm_spec);
      std::size_t engine = 0;
      while (engine < engines_.size() && !same_model(engines_[engine]->choice, choice)) ++engine;
      if (engine == engines_.size()) engines_.push_back(std::make_unique<ModelEngine>(scenario, choice));
      ArmPlan arm{&arm_spec, layout_of(scenario, arm_spec, *engines_[engine]),
                  most_doses(arm_spec, engines_[engine]->plan.grid_end)};
      arm.engine = engine;
      for (std::size_t r = 0; r < arm_spec.regimen.size(); ++r)
        if (arm_spec.regimen[r].as_needed) {
          arm.as_needed = &arm_spec.regimen[r];
          arm.as_needed_rule = static_cast<int>(r);
        }
      arms_.push_back(std::move(arm));
    }
  }

  std::vector<ArmLayout> layouts() const {
    std::vector<ArmLayout> layouts;
    for (const ArmPlan& arm : arms_) layouts.push_back(arm.layout);
    return layouts;
  }
  const std::vector<ArmPlan>& arms() const { return arms_; }
  const SimulationPlan& plan() const { return engines_.front()->plan; }

  // All arms for the subjects of one range; one block per arm. Throws InterruptedError once
  // `cancel` is set (checked between subjects and within their solves).
  std::vector<SubjectBlock> simulate(SubjectRange range, const std::atomic<bool>* cancel = nullptr) const {
    std::vector<SubjectBlock> blocks(arms_.size());
    for (std::size_t a = 0; a < arms_.size(); ++a) allocate(blocks[a], a, range);
    std::vector<PreparedSubject> prepared(engines_.size());
    for (std::int64_t row = 0; row < range.count; ++row) {
      if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) throw InterruptedError("interrupted");
      for (std::size_t e = 0; e < engines_.size(); ++e) prepared[e] = prepare(*engines_[e], range.first + row);
      for (std::size_t a = 0; a < arms_.size(); ++a)
        simulate_one(blocks[a], static_cast<std::size_t>(row), prepared[arms_[a].engine], cancel);
    }
    return blocks;
  }

  // One subject in one arm, for the timeline command: the doses it was given.
  SubjectSchedule schedule(std::size_t arm, std::int64_t subject_id) const {
    SubjectBlock block;
    allocate(block, arm, {subject_id, 1});
    PreparedSubject prepared = prepare(*engines_[arms_[arm].engine], subject_id);
    SubjectSchedule result;
    prepared.context.ran_plan = &result.plan;
    const SubjectDoses doses = simulate_one(block, 0, prepared);
    result.subject = prepared.subject;
    result.doses = doses.doses;
    result.missed = doses.missed;
    result.failure = block.message[0];
    return result;
  }

 private:
  // A subject as every arm shares it: covariates, individual model, residual draws.
  struct PreparedSubject {
    Subject subject;
    std::optional<SubjectModel> model;
    std::string model_problem;
    SubjectContext context;
  };

  PreparedSubject prepare(const ModelEngine& engine, std::int64_t subject_id) const {
    PreparedSubject prepared;
    prepared.subject = engine.sampler.draw(subject_id);
    const SimulationPlan& plan = engine.plan;
    try {
      prepared.model.emplace(engine.model.instantiate(prepared.subject.parameters));
      if (!engine.states.empty()) prepared.model = restrict_to(*prepared.model, engine.states);
    } catch (const Error& error) {
      prepared.model_problem = error.what();
    }
    prepared.context.baseline_madrs = prepared.subject.baseline_madrs;
    // Residual errors come from the subject's own stream: the same draws in every arm.
    RandomStream residuals(scenario_.cohort.seed, static_cast<std::uint64_t>(subject_id), StreamPurpose::residuals);
    for (std::size_t k = 0; k < plan.assessments.size(); ++k)
      prepared.context.residual_normals.push_back(residuals.normal());
    RandomStream observation(scenario_.cohort.seed, static_cast<std::uint64_t>(subject_id),
                             StreamPurpose::observations);
    for (std::size_t k = 0; k < plan.observed.size() * plan.observation_times.size(); ++k)
      prepared.context.observation_normals.push_back(observation.normal());
    return prepared;
  }

 private:
  void allocate(SubjectBlock& block, std::size_t arm, SubjectRange range) const {
    const ArmLayout& layout = arms_[arm].layout;
    const auto rows = static_cast<std::size_t>(range.count);
    block.arm = arm;
    block.first_subject = range.first;
    block.count = range.count;
    // Not assign(count, row): that builds the row even for no trajectories, rows x T floats.
    block.trajectories.clear();
    for (std::size_t k = 0; k < layout.trajectories.size(); ++k)
      block.trajectories.emplace_back(rows * layout.time_h.size());
    block.subject_columns.clear();
    for (const auto& column : layout.subject_columns) block.subject_columns.emplace_back(rows * column.width);
    block.metrics.clear();
    for (const auto& column : layout.metrics) block.metrics.emplace_back(rows * column.width);
    block.status.assign(rows, 0);
    block.message.assign(rows, std::string());
  }

  // Simulates one subject of one arm into row `row` of the block; returns the doses it was given.
  SubjectDoses simulate_one(SubjectBlock& block, std::size_t row, const PreparedSubject& prepared,
                            const std::atomic<bool>* cancel = nullptr) const {
    const Subject& subject = prepared.subject;
    const SubjectModel* system = prepared.model ? &*prepared.model : nullptr;  // null: it could not be built
    const ArmPlan& arm = arms_[block.arm];
    const ModelEngine& engine = *engines_[arm.engine];
    const Model& model = engine.model;
    const SimulationPlan& plan = engine.plan;
    SubjectDoses given = subject_doses(*arm.arm, subject.weight_kg, subject.id, scenario_.cohort.seed);
    std::vector<Dose>& doses = given.doses;
    std::optional<TriggeredDosing> as_needed;
    SubjectContext arm_context = prepared.context;
    arm_context.oral_antidepressant = arm.arm->oral_antidepressant;
    arm_context.cancel = cancel;
    if (engine.sampler.has_occasion_variability())
      arm_context.occasion_model = [&engine, &subject](int occasion) {
        SubjectModel occasion_system = engine.model.instantiate(engine.sampler.occasion_parameters(subject, occasion));
        return engine.states.empty() ? occasion_system : restrict_to(occasion_system, engine.states);
      };
    if (arm.as_needed) {
      as_needed.emplace(TriggeredDosing{*arm.as_needed->as_needed,
                                        make_dose(*arm.as_needed, arm.as_needed_rule, 0, subject.weight_kg)});
      arm_context.as_needed = &*as_needed;
    }

    const std::size_t n_time = arm.layout.time_h.size();
    TrajectoryRows rows;
    for (std::size_t v = 0; v < engine.outputs.size(); ++v)
      rows.push_back({engine.outputs[v], block.trajectories[v].data() + row * n_time});

    SubjectMetrics metrics = sized_metrics(model, plan, arm.doses);
    double solver_path = kNaN;
    try {
      if (!system) throw ModelParameterError(prepared.model_problem);
      const SolveOutcome outcome =
          simulate_subject(model, *system, scenario_.solver, plan, doses, arm_context, rows, metrics);
      solver_path = outcome.path == SolverPath::exact ? 0.0 : 1.0;
      metrics.sessions_missed = given.missed;
      const std::string non_finite = first_non_finite_metric(scenario_.output.metrics, model, plan, metrics);
      if (!non_finite.empty()) throw SolverError(non_finite);
    } catch (const InterruptedError&) {
      throw;  // the run stops; the subject did not fail
    } catch (const Error& error) {
      // A subject that cannot be solved is recorded and the run goes on.
      block.status[row] = 1;
      block.message[row] = error.what();
      metrics = sized_metrics(model, plan, arm.doses);
      for (auto& trajectory : block.trajectories)
        std::fill_n(trajectory.begin() + static_cast<std::ptrdiff_t>(row * n_time), n_time,
                    std::numeric_limits<float>::quiet_NaN());
    }
    write_subject_columns(block, row, subject, doses);
    std::size_t metric = 0;
    for_each_selected_metric(scenario_.output.metrics, model, plan, metrics, solver_path,
                             [&](const ColumnSpec& spec, const MetricValues& values) {
                               std::copy(
                                   values.values.begin(), values.values.end(),
                                   block.metrics[metric++].begin() + static_cast<std::ptrdiff_t>(row * spec.width));
                             });
    return given;
  }

  // Covariates and individual parameters (display units), then the doses given, NaN-padded to the
  // arm's most doses (arm_layouts lists the same columns).
  void write_subject_columns(SubjectBlock& block, std::size_t row, const Subject& subject,
                             const std::vector<Dose>& doses) const {
    const std::size_t width = arms_[block.arm].doses;
    const ModelCard& card_ = engines_[arms_[block.arm].engine]->card;
    std::size_t column = 0;
    block.subject_columns[column++][row] = subject.weight_kg;
    block.subject_columns[column++][row] = subject.age_years;
    block.subject_columns[column++][row] = subject.female ? 1.0 : 0.0;
    block.subject_columns[column++][row] = subject.baseline_madrs;
    for (std::size_t p = 0; p < card_.parameters.size(); ++p)
      block.subject_columns[column++][row] = to_display_unit(card_.parameters[p], subject.parameters[p]);
    for (const auto field : {&Dose::start, &Dose::duration}) {
      auto& values = block.subject_columns[column++];
      for (std::size_t d = 0; d < width; ++d)
        values[row * width + d] = d < doses.size() ? ticks_to_hours(doses[d].*field) : kNaN;
    }
    auto& amounts = block.subject_columns[column++];
    for (std::size_t d = 0; d < width; ++d) amounts[row * width + d] = d < doses.size() ? doses[d].amount_mg : kNaN;
    auto& routes = block.subject_columns[column++];
    for (std::size_t d = 0; d < width; ++d)
      routes[row * width + d] = d < doses.size() ? static_cast<double>(static_cast<int>(route_code(doses[d]))) : kNaN;
    block.subject_columns[column++][row] = static_cast<double>(scenario_.cohort.replicate_of(subject.id));
  }

  const Scenario& scenario_;
  std::vector<std::unique_ptr<ModelEngine>> engines_;  // one per distinct model (same_model), in order of first use
  std::vector<ArmPlan> arms_;
};

// The end-of-run report's values per subject and arm: the kQuantiledPerSubject values of
// ReportCollector::ArmValues (Cmax, dose-1 dissociation, weekly AUC, hours above the threshold
// per week, sessions given) and the MADRS change at each assessment.
constexpr std::size_t kQuantiledPerSubject = 5;

std::size_t report_series(const std::vector<ArmLayout>& layouts) {
  std::size_t series = 0;
  for (const ArmLayout& layout : layouts) series += kQuantiledPerSubject + layout.assessment_time_h.size();
  return series;
}

// How many values each of them keeps in memory: the budget shared out equally.
std::size_t report_memory_values(const std::vector<ArmLayout>& layouts, std::size_t memory_bytes) {
  return memory_bytes / sizeof(double) / std::max<std::size_t>(report_series(layouts), 1);
}

// The mean of the finite values added (NaN if none).
struct FiniteMean {
  double sum = 0.0;
  std::uint64_t count = 0;
  void add(double value) {
    if (!std::isfinite(value)) return;
    sum += value;
    ++count;
  }
  double mean() const { return count ? sum / static_cast<double>(count) : kNaN; }
};

// The metric columns of an arm that the report reads (nullopt: the arm does not write it).
struct ReportColumns {
  explicit ReportColumns(const ArmLayout& layout)
      : cmax(find_metric(layout.metrics, MetricId::cmax)),
        auc(find_metric(layout.metrics, MetricId::auc)),
        peak_dissociation(find_metric(layout.metrics, MetricId::peak_link, LinkRole::dissociation)),
        time_above(find_metric(layout.metrics, MetricId::time_above_dissociation)),
        sessions_given(find_metric(layout.metrics, MetricId::sessions_given)),
        solver_path(find_metric(layout.metrics, MetricId::solver_path)),
        madrs_baseline(find_metric(layout.metrics, MetricId::madrs_baseline)),
        madrs_observed_at(find_metric(layout.metrics, MetricId::madrs_observed_at)),
        response_at(find_metric(layout.metrics, MetricId::response_at)),
        remission_at(find_metric(layout.metrics, MetricId::remission_at)) {}
  std::optional<std::size_t> cmax, auc, peak_dissociation, time_above, sessions_given, solver_path;
  std::optional<std::size_t> madrs_baseline, madrs_observed_at, response_at, remission_at;
};

// Collects the per-arm figures printed at the end of a run, in memory that does not depend on the
// cohort size: the values whose quantiles it reports go to QuantileAccumulators (in memory up to
// `memory_bytes` in all, then to unlinked temporary files in `spill_directory`), the response and
// remission fractions to running counts (their values are 0 or 1, so the sums are exact in any
// order and the result does not depend on the order the blocks finish in).
class ReportCollector {
 public:
  ReportCollector(const Scenario& scenario, const std::vector<ArmPlan>& arms, const SimulationPlan& plan,
                  std::size_t memory_bytes, const std::filesystem::path& spill_directory)
      : weeks_(ticks_to_hours(plan.grid_end) / kHoursPerWeek),
        method_auto_(scenario.solver.method == SolverMethod::automatic) {
    std::vector<ArmLayout> layouts;
    for (const ArmPlan& arm : arms) layouts.push_back(arm.layout);
    const std::size_t in_memory = report_memory_values(layouts, memory_bytes);
    for (const ArmPlan& arm : arms) {
      ArmReport& report = reports_.emplace_back();
      report.name = arm.arm->name;
      report.description = arm.layout.description;
      report.subjects = scenario.cohort.size;
      report.doses = arm.doses;
      report.assessment_h = arm.layout.assessment_time_h;
      values_.emplace_back(in_memory, spill_directory, report.assessment_h.size());
      columns_.emplace_back(arm.layout);
    }
  }

  void add(const SubjectBlock& block) {
    ArmReport& report = reports_[block.arm];
    for (std::int64_t r = 0; r < block.count; ++r) {
      const auto row = static_cast<std::size_t>(r);
      if (block.status[row] != 0) {
        ++report.failed;
        continue;
      }
      add_row(block, row);
    }
  }

  std::vector<ArmReport> finish() {
    constexpr std::array<double, 1> kMedian{0.5};
    for (std::size_t a = 0; a < reports_.size(); ++a) {
      ArmReport& report = reports_[a];
      ArmValues& values = values_[a];
      report.cmax_ng_per_ml = spread_of(values.cmax);
      report.first_dose_peak_dissociation = spread_of(values.first_dose_peak_dissociation);
      report.weekly_auc_ng_h_per_ml = spread_of(values.weekly_auc);
      report.dissociation_hours_per_week = spread_of(values.hours_above_per_week);
      report.sessions_given = spread_of(values.sessions_given);
      for (std::size_t k = 0; k < report.assessment_h.size(); ++k) {
        report.madrs_change_median.push_back(values.madrs_change[k].quantiles(kMedian)[0]);
        report.response_fraction.push_back(values.responding[k].mean());
        report.remission_fraction.push_back(values.remitting[k].mean());
      }
    }
    return reports_;
  }

 private:
  // kQuantiledPerSubject accumulators, then one per assessment.
  struct ArmValues {
    ArmValues(std::size_t in_memory, const std::filesystem::path& spill, std::size_t assessments)
        : cmax(in_memory, spill),
          first_dose_peak_dissociation(in_memory, spill),
          weekly_auc(in_memory, spill),
          hours_above_per_week(in_memory, spill),
          sessions_given(in_memory, spill),
          responding(assessments),
          remitting(assessments) {
      for (std::size_t k = 0; k < assessments; ++k) madrs_change.emplace_back(in_memory, spill);
    }
    QuantileAccumulator cmax, first_dose_peak_dissociation, weekly_auc, hours_above_per_week, sessions_given;
    std::vector<QuantileAccumulator> madrs_change;  // per assessment: observed MADRS - baseline
    std::vector<FiniteMean> responding;             // per assessment
    std::vector<FiniteMean> remitting;
  };

  static Quantiles spread_of(QuantileAccumulator& values) {
    constexpr std::array<double, 3> kProbabilities{0.05, 0.5, 0.95};
    const std::vector<double> q = values.quantiles(kProbabilities);
    return {q[0], q[1], q[2]};
  }

  void add_row(const SubjectBlock& block, std::size_t row) {
    ArmReport& report = reports_[block.arm];
    ArmValues& values = values_[block.arm];
    const ReportColumns& columns = columns_[block.arm];
    const auto value = [&](std::optional<std::size_t> column, std::size_t position) {
      return column ? block.metrics[*column][position] : kNaN;
    };
    if (method_auto_ && value(columns.solver_path, row) == 1.0) ++report.ode_fallbacks;
    values.cmax.add(value(columns.cmax, row));
    values.first_dose_peak_dissociation.add(report.doses > 0 ? value(columns.peak_dissociation, row * report.doses)
                                                             : kNaN);
    values.weekly_auc.add(value(columns.auc, row) / weeks_);
    values.hours_above_per_week.add(value(columns.time_above, row) / weeks_);
    values.sessions_given.add(value(columns.sessions_given, row));
    const std::size_t assessments = report.assessment_h.size();
    for (std::size_t k = 0; k < assessments; ++k) {
      const std::size_t at = row * assessments + k;
      values.madrs_change[k].add(value(columns.madrs_observed_at, at) - value(columns.madrs_baseline, row));
      values.responding[k].add(value(columns.response_at, at));
      values.remitting[k].add(value(columns.remission_at, at));
    }
  }

  double weeks_;
  bool method_auto_;  // ODE fallbacks are counted under solver method auto only
  std::vector<ArmReport> reports_;
  std::vector<ArmValues> values_;
  std::vector<ReportColumns> columns_;
};

std::int64_t default_block_size(const std::vector<ArmPlan>& arms) {
  std::size_t bytes_per_subject = 0;
  for (const ArmPlan& arm : arms)
    bytes_per_subject += arm.layout.trajectories.size() * arm.layout.time_h.size() * sizeof(float);
  // About 16 MiB of trajectories per block, in multiples of 64 subjects (the writer's chunk rows).
  const std::size_t target = (std::size_t{16} << 20) / std::max<std::size_t>(bytes_per_subject, 1);
  return static_cast<std::int64_t>(std::clamp<std::size_t>(target / 64 * 64, 64, 4096));
}

}  // namespace

namespace {

// The model card's parameters the arm's model overrides, in display units.
std::vector<ParameterValue> overridden_parameters(const ModelChoice& choice, const ModelCard& card) {
  std::vector<ParameterValue> values;
  for (const ParameterOverride& override_value : choice.overrides) {
    const int index = card.index_of(override_value.name);
    if (index < 0) throw ModelParameterError("model " + card.name + " has no parameter '" + override_value.name + "'");
    const ParameterSpec& spec = card.parameters[static_cast<std::size_t>(index)];
    values.push_back({spec.name, to_display_unit(spec, override_value.value), spec.unit});
  }
  return values;
}

// Covariates, individual parameters, the doses given (per dose, NaN-padded to `most` doses) and
// the replicate: write_subject_columns fills them in this order.
std::vector<ColumnSpec> subject_columns(const ModelCard& card, std::size_t most) {
  std::vector<ColumnSpec> columns{{"weight_kg", "kg", 1, "body weight"},
                                  {"age_y", "y", 1, "age"},
                                  {"female", "", 1, "1 female, 0 male"},
                                  {"baseline_madrs", "", 1, "MADRS at baseline"}};
  for (const auto& spec : card.parameters)
    columns.push_back({spec.name, spec.unit, 1, "individual " + spec.description});
  columns.push_back({"dose_time_h", "h", most, "start of each dose given, in time order (NaN-padded)"});
  columns.push_back(
      {"dose_duration_h", "h", most, "infusion duration of each dose given; 0 for a bolus or intranasal session"});
  columns.push_back({"dose_amount_mg", "mg", most, "amount of each dose given (0 for a placebo without an amount)"});
  columns.push_back(
      {"dose_route", "", most,
       "what each dose given gives: 0 no drug (placebo or midazolam), 1 iv_infusion, 2 iv_bolus, 3 intranasal"});
  columns.push_back(
      {"replicate", "", 1,
       "trial replicate, 0 ... R-1: replicate r is subjects r*n ... r*n+n-1 (n = subjects_per_replicate)"});
  return columns;
}

ArmLayout layout_of(const Scenario& scenario, const Arm& arm, const ModelEngine& engine) {
  const Model& model = engine.model;
  const SimulationPlan& plan = engine.plan;
  ArmLayout layout;
  layout.model = engine.card.name;
  layout.model_parameters = overridden_parameters(engine.choice, engine.card);
  layout.name = arm.name;
  layout.description = describe_regimen(arm);
  for (std::size_t k = 0; k < plan.time_points(); ++k)
    layout.time_h.push_back(ticks_to_hours(static_cast<Ticks>(k) * plan.grid_step));
  for (const ModelOutput* output : engine.outputs)
    layout.trajectories.push_back({output->dataset, output->unit, 1, output->description});
  for (const Dose& dose : expand_doses(arm, 1.0)) {
    layout.dose_time_h.push_back(ticks_to_hours(dose.start));
    layout.dose_duration_h.push_back(ticks_to_hours(dose.duration));
  }
  if (model.has_depression())
    for (const Ticks a : plan.assessments) layout.assessment_time_h.push_back(ticks_to_hours(a));
  for (const Ticks sample : plan.observation_times) layout.observation_time_h.push_back(ticks_to_hours(sample));
  for (const auto& observed : plan.observed) layout.observed_outputs.push_back(observed.output->name);
  const std::size_t most = most_doses(arm, plan.grid_end);
  layout.subject_columns = subject_columns(engine.card, most);
  layout.price_per_session_usd[0] = arm.price_low_usd;
  layout.price_per_session_usd[1] = arm.price_high_usd;
  const SubjectMetrics sized = sized_metrics(model, plan, most);
  for_each_selected_metric(scenario.output.metrics, model, plan, sized, kNaN,
                           [&](const MetricColumn& column, const MetricValues&) { layout.metrics.push_back(column); });
  return layout;
}

}  // namespace

std::vector<ArmLayout> arm_layouts(const Scenario& scenario) {
  return ScenarioRunner(scenario).layouts();
}

std::string describe_model(const ArmLayout& layout) {
  std::string overrides;
  for (const ParameterValue& parameter : layout.model_parameters)
    overrides += (overrides.empty() ? " with " : ", ") + parameter.name + " = " + format_significant(parameter.value) +
                 (parameter.unit.empty() ? "" : " " + parameter.unit);
  return layout.model + (overrides.empty() ? " (the card's values)" : overrides);
}

std::vector<std::string> scenario_input_files(const Scenario& scenario) {
  std::vector<std::string> files{scenario.source_file};
  if (scenario.cohort.table) files.push_back(scenario.cohort.table->file);
  for (const Arm& arm : scenario.arms)
    for (const DosingRule& rule : arm.regimen)
      if (rule.table) files.push_back(rule.table->file);
  return files;
}

namespace {

OutputSpace space_for(const std::vector<ArmLayout>& layouts, std::int64_t subjects_per_arm,
                      const std::string& output_path) {
  return {estimate_result_size(layouts, subjects_per_arm), free_space_for(output_path)};
}

// Before anything is simulated: a file that cannot fit would fail after all the work.
void refuse_if_it_cannot_fit(const OutputSpace& space, const std::string& output_path) {
  if (!space.certainly_too_small()) return;
  throw IoError(output_path + ": not enough space: the result file needs at least " +
                format_bytes(space.size.least_bytes) + " (" + describe_output_space(space, output_path) +
                "). Free some space, write it elsewhere, simulate fewer subjects, or write the metrics only "
                "(`variables: []` under `output:` in the scenario: " +
                format_bytes(space.size.without_trajectories_bytes) + ")");
}

}  // namespace

OutputSpace output_space(const Scenario& scenario, const std::string& output_path) {
  return space_for(arm_layouts(scenario), scenario.cohort.size, output_path);
}

std::string describe_output_space(const OutputSpace& space, const std::string& output_path) {
  std::string text = "about " + format_bytes(space.size.expected_bytes) + ", at most " +
                     format_bytes(space.size.upper_bound_bytes) + " uncompressed";
  if (space.free_bytes) {
    const std::filesystem::path directory = std::filesystem::path(output_path).parent_path();
    text +=
        "; " + format_bytes(*space.free_bytes) + " free in '" + (directory.empty() ? "." : directory.string()) + "'";
  }
  return text;
}

SubjectSchedule subject_schedule(const Scenario& scenario, std::size_t arm, std::int64_t subject_id) {
  return ScenarioRunner(scenario).schedule(arm, subject_id);
}

std::uint64_t report_temporary_bytes(const std::vector<ArmLayout>& layouts, std::int64_t subjects_per_arm,
                                     std::size_t report_memory_bytes) {
  if (static_cast<std::uint64_t>(subjects_per_arm) <= report_memory_values(layouts, report_memory_bytes)) return 0;
  return static_cast<std::uint64_t>(subjects_per_arm) * report_series(layouts) * sizeof(double);
}

namespace {

// What a run needs besides its output and a bounded amount of memory: the temporary files of the
// end-of-run statistics, for large cohorts. Refused before anything runs when they cannot fit.
void check_temporary_space(const Scenario& scenario, const std::filesystem::path& directory, std::uint64_t bytes) {
  if (bytes == 0) return;
  const std::optional<std::uintmax_t> available = free_space_for((directory / "report").string());
  if (!available || bytes <= *available) return;  // unknown: the writer reports a bad directory
  throw Error(ExitCode::scenario, scenario.source_file + ": cohort.size: " + std::to_string(scenario.cohort.size) +
                                      " subjects per arm need " + format_bytes(bytes) +
                                      " of temporary files for the end-of-run statistics in " + directory.string() +
                                      ", which has " + format_bytes(*available) +
                                      " free: run fewer subjects, or write the output where there is room");
}

}  // namespace

RunReport run_scenario(const Scenario& scenario, const RunOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const ScenarioRunner runner(scenario);
  const unsigned threads = thread_count(options.threads);
  const std::vector<ArmLayout> layouts = runner.layouts();
  if (options.on_start) options.on_start(layouts);
  // Before any work: where the output may go, and room for the end-of-run report's temporary files.
  if (!options.output_path.empty()) check_output_path(options.output_path, scenario_input_files(scenario));
  const std::filesystem::path spill_directory = options.output_path.empty()
                                                    ? std::filesystem::temp_directory_path()
                                                    : std::filesystem::absolute(options.output_path).parent_path();
  check_temporary_space(scenario, spill_directory,
                        report_temporary_bytes(layouts, scenario.cohort.size, options.report_memory_bytes));

  std::optional<ResultWriter> writer;
  if (!options.output_path.empty()) {
    RunInfo info;
    info.scenario_file = scenario.source_file;
    info.scenario_yaml = scenario.yaml_text;
    info.scenario_name = scenario.name;
    info.model_name = scenario.model.name;
    info.seed = scenario.cohort.seed;
    info.subjects_per_arm = scenario.cohort.size;
    info.replicates = scenario.cohort.replicates;
    info.subjects_per_replicate = scenario.cohort.trial_size();
    info.solver_method = to_string(scenario.solver.method);
    info.solver_rtol = scenario.solver.rtol;
    info.solver_atol = scenario.solver.atol;
    refuse_if_it_cannot_fit(space_for(layouts, scenario.cohort.size, options.output_path), options.output_path);
    ResultWriterOptions writer_options;
    writer_options.summary_threads = threads;
    writer_options.cancel = options.cancel;
    writer.emplace(options.output_path, info, layouts, scenario.cohort.size, writer_options);
  }

  const std::int64_t block_size = options.block_size > 0 ? options.block_size : default_block_size(runner.arms());
  const SubjectRange cohort{0, scenario.cohort.size};
  const auto blocks = static_cast<std::size_t>(block_count(cohort, block_size));
  const std::size_t max_in_flight = 2 * static_cast<std::size_t>(threads);

  ReportCollector collector(scenario, runner.arms(), runner.plan(), options.report_memory_bytes, spill_directory);

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
  Progress progress;
  progress.subjects_total = scenario.cohort.size;
  progress.arms = runner.arms().size();
  const auto interrupted = [&] {
    return InterruptedError("interrupted after " + std::to_string(progress.subjects_done) + " of " +
                            std::to_string(progress.subjects_total) + " subjects; nothing written");
  };

  const auto worker = [&] {
    while (true) {
      std::size_t index = 0;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return abort || in_flight < max_in_flight; });
        if (abort || cancelled() || next_range >= blocks) return;
        index = next_range++;
        ++in_flight;
      }
      try {
        const SubjectRange subjects = block_of(cohort, block_size, static_cast<std::int64_t>(index));
        FinishedRange range{subjects.count, {}, runner.simulate(subjects, options.cancel)};
        if (writer && !options.on_block) {
          for (SubjectBlock& block : range.blocks) range.prepared.push_back(writer->prepare(std::move(block)));
          range.blocks.clear();
        }
        std::lock_guard lock(mutex);
        finished.push_back(std::move(range));
      } catch (const InterruptedError&) {  // the calling thread reports it
        std::lock_guard lock(mutex);
        abort = true;
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

  try {
    for (std::size_t written = 0; written < blocks; ++written) {
      FinishedRange range;
      {
        std::unique_lock lock(mutex);
        // A signal handler cannot notify the condition variable: poll for cancellation.
        do {
          if (cancelled()) throw interrupted();
        } while (!changed.wait_for(lock, std::chrono::milliseconds(100), [&] { return abort || !finished.empty(); }));
        if (abort) break;
        range = std::move(finished.front());
        finished.pop_front();
      }
      for (PreparedBlock& block : range.prepared) {
        collector.add(block.columns());
        writer->write(std::move(block));
      }
      for (const SubjectBlock& block : range.blocks) {
        collector.add(block);
        if (options.on_block) options.on_block(block);
        if (writer) writer->write(block);
      }
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
  if (cancelled()) throw interrupted();  // a worker saw it first

  try {
    if (writer)
      writer->finish([&](const FinishProgress& step) {
        progress.phase =
            step.summaries_done < step.summaries_total ? Progress::Phase::summaries : Progress::Phase::closing;
        progress.summaries_done = step.summaries_done;
        progress.summaries_total = step.summaries_total;
        progress.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        if (options.on_progress) options.on_progress(progress);
      });
  } catch (const InterruptedError&) {
    throw InterruptedError("interrupted while computing the summaries; nothing written");
  }
  RunReport report;
  report.arms = collector.finish();
  report.subjects_per_arm = scenario.cohort.size;
  report.threads = threads;
  report.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace ketasim
