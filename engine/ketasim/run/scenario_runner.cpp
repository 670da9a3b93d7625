#include "ketasim/run/scenario_runner.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "ketasim/base/format.hpp"
#include "ketasim/base/random_stream.hpp"
#include "ketasim/model/blocks.hpp"
#include "ketasim/run/metric_columns.hpp"
#include "ketasim/solve/observers.hpp"

namespace ketasim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

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
  if (const auto& background = arm.oral_antidepressant) {
    text += background->stable
                ? "; on a stable oral antidepressant"
                : "; oral antidepressant started " +
                      (background->started == 0 ? std::string("with the first session")
                                                : "at " + format_duration_h(ticks_to_hours(background->started)));
    if (background->stopped) text += ", stopped at " + format_duration_h(ticks_to_hours(*background->stopped));
  }
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
    if (depression.sustained_signal >= 0) signals.push_back(depression.sustained_signal);
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
std::vector<ColumnSpec> subject_columns(const ModelCard& card, std::size_t most, bool screening) {
  std::vector<ColumnSpec> columns{{"weight_kg", "kg", 1, "body weight"},
                                  {"age_y", "y", 1, "age"},
                                  {"female", "", 1, "1 female, 0 male"},
                                  {"baseline_madrs", "", 1, "MADRS at baseline"}};
  if (screening)
    columns.push_back({"screening_madrs", "", 1,
                       "observed MADRS at screening (baseline plus residual error): response is measured from it"});
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

// Residual errors of the assessments relative to sessions, from the subject's own streams: session
// k's draws are the same in every arm, however many sessions the arm has.
void draw_session_normals(SubjectContext& context, const SimulationPlan& plan, std::uint64_t seed,
                          std::int64_t subject_id, std::size_t sessions) {
  const auto subject = static_cast<std::uint64_t>(subject_id);
  if (plan.before_each_session || context.stop || context.titration) {
    RandomStream before(seed, subject, StreamPurpose::before_session);
    for (std::size_t k = 0; k < sessions; ++k) context.before_session_normals.push_back(before.normal());
  }
  RandomStream after(seed, subject, StreamPurpose::after_session);
  for (std::size_t k = 0; k < sessions * plan.session_assessments.size(); ++k)
    context.after_session_normals.push_back(after.normal());
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
  if (model.has_depression() && plan.response && plan.relapse)
    for (const Ticks v : plan.relapse->visits) layout.relapse_visit_time_h.push_back(ticks_to_hours(v));
  for (const Ticks sample : plan.observation_times) layout.observation_time_h.push_back(ticks_to_hours(sample));
  for (const auto& observed : plan.observed) layout.observed_outputs.push_back(observed.output->name);
  const std::size_t most = most_doses(arm, plan.grid_end);
  layout.subject_columns = subject_columns(engine.card, most, scenario.cohort.screening.has_value());
  layout.price_per_session_usd[0] = arm.price_low_usd;
  layout.price_per_session_usd[1] = arm.price_high_usd;
  const SubjectMetrics sized = sized_metrics(model, plan, most);
  for_each_selected_metric(scenario.output.metrics, model, plan, sized, kNaN,
                           [&](const MetricColumn& column, const MetricValues&) { layout.metrics.push_back(column); });
  return layout;
}

}  // namespace

ModelEngine::ModelEngine(const Scenario& scenario, const ModelChoice& model_choice)
    : choice(model_choice),
      card(card_of(choice)),
      model(card),
      sampler(scenario, choice, card),
      plan(SimulationPlan::from(scenario.output, model)),
      outputs(selected_outputs(scenario, model)) {
  for (const Arm& arm : scenario.arms)
    for (const DosingRule& rule : arm.regimen) {
      plan.stop_metrics |= rule.stop.has_value();
      plan.titration_metrics |= rule.titrate.has_value();
      plan.continuation_metrics |= rule.given_if.has_value();
    }
  const SubjectModel typical = model.instantiate(sampler.typical_parameters());
  states = observed_states(scenario, model, plan, outputs, typical, sampler.variable_parameters());
  if (static_cast<int>(states.size()) == typical.states) states.clear();  // nothing to drop
}

ScenarioRunner::ScenarioRunner(const Scenario& scenario) : scenario_(scenario) {
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
    arm.stop = SeriesRule<StopRule>::of(arm_spec, &DosingRule::stop);
    arm.titration = SeriesRule<Titration>::of(arm_spec, &DosingRule::titrate);
    arm.continuation = SeriesRule<ContinuationCondition>::of(arm_spec, &DosingRule::given_if);
    if (const auto& background = arm_spec.oral_antidepressant) {
      AntidepressantCourse course;
      course.since_h =
          background->stable ? -std::numeric_limits<double>::infinity() : ticks_to_hours(background->started);
      if (background->stopped) course.stopped_h = ticks_to_hours(*background->stopped);
      arm.antidepressant = course;
    }
    arms_.push_back(std::move(arm));
  }
}

std::vector<SubjectBlock> ScenarioRunner::simulate(SubjectRange range, const std::atomic<bool>* cancel) const {
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

SubjectSchedule ScenarioRunner::schedule(std::size_t arm, std::int64_t subject_id) const {
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

// cohort.screening: the subject's observed screening score, the model's baseline plus a residual
// error from the subject's screening stream. A subject outside the inclusion bounds is screened
// again: a new baseline from the cohort's distribution and a new error, from the same stream.
void ScenarioRunner::screen(Subject& subject, const Screening& screening, double residual_sd) const {
  constexpr int kMostAttempts = 10'000;
  RandomStream stream(scenario_.cohort.seed, static_cast<std::uint64_t>(subject.id), StreamPurpose::screening);
  for (int attempt = 0; attempt < kMostAttempts; ++attempt) {
    if (attempt > 0) subject.baseline_madrs = truncated_normal_at(scenario_.cohort.baseline_madrs, stream.normal());
    subject.screening_madrs = observed_madrs(subject.baseline_madrs, residual_sd, stream.normal());
    if (screening.at_least.value_or(0.0) <= subject.screening_madrs &&
        subject.screening_madrs <= screening.at_most.value_or(kMadrsMaximum))
      return;
  }
  throw ModelParameterError("no screening score within the inclusion bounds in " + std::to_string(kMostAttempts) +
                            " attempts: the bounds are too narrow for the baseline distribution and residual error");
}

ScenarioRunner::PreparedSubject ScenarioRunner::prepare(const ModelEngine& engine, std::int64_t subject_id) const {
  PreparedSubject prepared;
  prepared.subject = engine.sampler.draw(subject_id);
  const SimulationPlan& plan = engine.plan;
  try {
    prepared.model.emplace(engine.model.instantiate(prepared.subject.parameters));
    if (!engine.states.empty()) prepared.model = restrict_to(*prepared.model, engine.states);
  } catch (const Error& error) {
    prepared.model_problem = error.what();
  }
  if (scenario_.cohort.screening && prepared.model && prepared.model->depression) {
    try {
      screen(prepared.subject, *scenario_.cohort.screening, prepared.model->depression->residual_sd);
    } catch (const Error& error) {
      prepared.model_problem = error.what();
    }
  }
  prepared.context.baseline_madrs = prepared.subject.baseline_madrs;
  if (scenario_.cohort.screening) prepared.context.screening_madrs = prepared.subject.screening_madrs;
  // Residual errors come from the subject's own stream: the same draws in every arm.
  RandomStream residuals(scenario_.cohort.seed, static_cast<std::uint64_t>(subject_id), StreamPurpose::residuals);
  for (std::size_t k = 0; k < plan.assessments.size(); ++k)
    prepared.context.residual_normals.push_back(residuals.normal());
  RandomStream observation(scenario_.cohort.seed, static_cast<std::uint64_t>(subject_id), StreamPurpose::observations);
  for (std::size_t k = 0; k < plan.observed.size() * plan.observation_times.size(); ++k)
    prepared.context.observation_normals.push_back(observation.normal());
  if (plan.relapse) {
    RandomStream visits(scenario_.cohort.seed, static_cast<std::uint64_t>(subject_id), StreamPurpose::relapse_visits);
    for (std::size_t k = 0; k < plan.relapse->visits.size(); ++k)
      prepared.context.visit_normals.push_back(visits.normal());
  }
  return prepared;
}

void ScenarioRunner::allocate(SubjectBlock& block, std::size_t arm, SubjectRange range) const {
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

SubjectDoses ScenarioRunner::simulate_one(SubjectBlock& block, std::size_t row, const PreparedSubject& prepared,
                                          const std::atomic<bool>* cancel) const {
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
  arm_context.oral_antidepressant = arm.antidepressant;
  arm_context.cancel = cancel;
  arm_context.stop = arm.stop;
  arm_context.titration = arm.titration;
  arm_context.continuation = arm.continuation;
  if (plan.assesses_sessions() || arm_context.stop || arm_context.titration)
    draw_session_normals(arm_context, plan, scenario_.cohort.seed, subject.id, arm.doses);
  for (const DosingRule& rule : arm.arm->regimen) {
    if (!rule.titrate) continue;
    DosingRule titrated = rule;
    titrated.dose = rule.titrate->to;
    arm_context.titrated_dose_mg = dose_amount_mg(titrated, subject.weight_kg);
  }
  if (arm_context.continuation)
    arm_context.continuation_normal =
        RandomStream(scenario_.cohort.seed, static_cast<std::uint64_t>(subject.id), StreamPurpose::continuation)
            .normal();
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
                             std::copy(values.values.begin(), values.values.end(),
                                       block.metrics[metric++].begin() + static_cast<std::ptrdiff_t>(row * spec.width));
                           });
  return given;
}

void ScenarioRunner::write_subject_columns(SubjectBlock& block, std::size_t row, const Subject& subject,
                                           const std::vector<Dose>& doses) const {
  const std::size_t width = arms_[block.arm].doses;
  const ModelCard& card_ = engines_[arms_[block.arm].engine]->card;
  std::size_t column = 0;
  block.subject_columns[column++][row] = subject.weight_kg;
  block.subject_columns[column++][row] = subject.age_years;
  block.subject_columns[column++][row] = subject.female ? 1.0 : 0.0;
  block.subject_columns[column++][row] = subject.baseline_madrs;
  if (scenario_.cohort.screening) block.subject_columns[column++][row] = subject.screening_madrs;
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

}  // namespace ketasim
