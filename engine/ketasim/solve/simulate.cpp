#include "ketasim/solve/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ketasim/base/errors.hpp"
#include "ketasim/solve/exact_propagator.hpp"
#include "ketasim/solve/ode_propagator.hpp"
#include "ketasim/solve/subject_solve.hpp"

namespace ketasim {

using solve_units::kNaN;

SimulationPlan SimulationPlan::from(const OutputSpec& output) {
  SimulationPlan plan;
  // The grid is whole steps: an end that is not a multiple of the step is cut back to one.
  plan.grid_step = output.grid_step;
  plan.grid_end = output.grid_end - output.grid_end % output.grid_step;
  plan.dissociation_threshold = output.dissociation_threshold;
  plan.assessments = output.assessments;
  plan.session_assessments = output.assessments_after_each_session;
  plan.before_each_session = output.assessment_before_each_session;
  plan.response_fraction = output.response_fraction;
  plan.remission_threshold = output.remission_threshold;
  plan.relapse = output.relapse;
  plan.metabolites =
      std::find(output.metrics.begin(), output.metrics.end(), Metric::metabolites) != output.metrics.end();
  plan.response = std::find(output.metrics.begin(), output.metrics.end(), Metric::response) != output.metrics.end();
  plan.dissociation_burden =
      std::find(output.metrics.begin(), output.metrics.end(), Metric::dissociation_burden) != output.metrics.end();
  plan.peak_links =
      std::find(output.metrics.begin(), output.metrics.end(), Metric::peak_dissociation) != output.metrics.end();
  return plan;
}

SimulationPlan SimulationPlan::from(const OutputSpec& output, const Model& model) {
  SimulationPlan plan = from(output);
  plan.observation_times = output.observations.times;
  for (const ObservedVariable& variable : output.observations.variables) {
    const ModelOutput* found = model.find_output(variable.name);
    if (!found) throw ModelParameterError("model " + model.card().name + " has no output '" + variable.name + "'");
    plan.observed.push_back({found, variable.proportional, variable.additive});
  }
  return plan;
}

void SessionAssessments::assign(std::size_t sessions, double value) {
  for (std::vector<double>* column : {&madrs, &observed, &response, &remission}) column->assign(sessions, value);
}

SubjectMetrics sized_metrics(const Model& model, const SimulationPlan& plan, std::size_t doses) {
  SubjectMetrics m;
  m.cmax_ng_per_ml = m.tmax_h = m.auc_ng_h_per_ml = m.time_above_dissociation_h = m.dosed_mg = kNaN;
  m.dissociation_burden_score_h = m.sessions_given = m.sessions_missed = m.sessions_triggered = kNaN;
  m.auc_per_week_ng_h_per_ml.assign(plan.weeks(), kNaN);
  m.peak_effect_ng_per_ml.assign(doses, kNaN);
  m.peak_effect_time_h.assign(doses, kNaN);
  m.peak_link.assign(model.links().size(), std::vector<double>(doses, kNaN));
  const std::size_t drugs = model.drugs().size();
  m.metabolite_cmax_ng_per_ml.assign(drugs - 1, kNaN);
  m.metabolite_tmax_h.assign(drugs - 1, kNaN);
  m.baseline_madrs = m.first_response_day = m.days_in_response = kNaN;
  m.responder_end_of_treatment = m.relapse_day = m.relapse_observed = kNaN;
  m.sessions_to_response = m.stopped_early = kNaN;
  m.relapse_visits_at_risk = m.relapse_visits_day = m.relapse_visits_observed = kNaN;
  m.madrs_observed_at_visit.assign(plan.relapse ? plan.relapse->visits.size() : 0, kNaN);
  m.titrated = m.titration_session = m.continued = kNaN;
  const std::size_t assessments = plan.assessments.size();
  m.madrs_at.assign(assessments, kNaN);
  m.madrs_observed_at.assign(assessments, kNaN);
  m.response_at.assign(assessments, kNaN);
  m.remission_at.assign(assessments, kNaN);
  if (plan.before_each_session) m.before_session.assign(doses, kNaN);
  m.after_session.resize(plan.session_assessments.size());
  for (SessionAssessments& after : m.after_session) after.assign(doses, kNaN);
  m.amount_in_body_end_mg.assign(drugs, kNaN);
  m.eliminated_mg.assign(drugs, kNaN);
  m.formed_mg.assign(drugs, kNaN);
  m.given_mg.assign(drugs, kNaN);
  m.observed_ipred.assign(plan.observed.size(), std::vector<double>(plan.observation_times.size(), kNaN));
  m.observed_dv = m.observed_ipred;
  return m;
}

namespace {

// Runs the solve; the plan it ran goes to context.ran_plan also when the subject fails.
template <class Propagator>
void run(SubjectSolve<Propagator>& solve, const SubjectContext& context) {
  try {
    solve.run();
  } catch (...) {
    if (context.ran_plan) *context.ran_plan = solve.plan();
    throw;
  }
  if (context.ran_plan) *context.ran_plan = solve.plan();
}

template <int N>
bool try_exact(const Model& model, const SubjectModel& subject, const SimulationPlan& plan, std::vector<Dose>& doses,
               const SubjectContext& context, const TrajectoryRows& rows, SubjectMetrics& metrics, std::string& why) {
  const auto exact = ExactPropagator<N>::create(subject, &why);
  if (!exact) return false;
  const PropagatorFactory<ExactPropagator<N>> make = [](const SubjectModel& occasion) {
    return ExactPropagator<N>::create(occasion);
  };
  SubjectSolve<ExactPropagator<N>> solve(*exact, model, subject, plan, doses, context, rows, metrics, make);
  run(solve, context);
  return true;
}

}  // namespace

SolveOutcome simulate_subject(const Model& model, const SubjectModel& subject, const SolverSpec& solver,
                              const SimulationPlan& plan, std::vector<Dose>& doses, const SubjectContext& context,
                              const TrajectoryRows& rows, SubjectMetrics& metrics) {
  SolveOutcome outcome;
  if (solver.method != SolverMethod::ode) {
    std::string why;
    // With occasion variability an occasion's system may refuse exact stepping midway: the ODE
    // path then starts again from what was known before the solve.
    std::optional<std::pair<std::vector<Dose>, SubjectMetrics>> before;
    if (context.occasion_model && solver.method == SolverMethod::automatic) before.emplace(doses, metrics);
    try {
      const bool solved = subject.states <= 4 ? try_exact<4>(model, subject, plan, doses, context, rows, metrics, why)
                          : subject.states <= 8
                              ? try_exact<8>(model, subject, plan, doses, context, rows, metrics, why)
                              : try_exact<16>(model, subject, plan, doses, context, rows, metrics, why);
      if (solved) return outcome;
    } catch (const ExactStepUnavailable& error) {
      if (!before) throw;
      why = error.what();
      doses = before->first;
      metrics = before->second;
    }
    if (solver.method == SolverMethod::exact) throw SolverError("exact stepping is not possible: " + why);
    outcome.note = why;
  }
  outcome.path = solver.method == SolverMethod::ode ? SolverPath::ode : SolverPath::fallback;
  const PropagatorFactory<OdePropagator> make = [&](const SubjectModel& occasion) {
    return std::optional<OdePropagator>(OdePropagator(occasion, solver.rtol, solver.atol, context.cancel));
  };
  const OdePropagator ode(subject, solver.rtol, solver.atol, context.cancel);
  SubjectSolve<OdePropagator> solve(ode, model, subject, plan, doses, context, rows, metrics, make);
  run(solve, context);
  return outcome;
}

}  // namespace ketasim
