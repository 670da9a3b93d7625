#pragma once
// The per-subject metric list of a run, in file order: one walk (for_each_metric) both builds an
// arm's layout (the columns) and fills a subject's row (the values), so ids, names, widths and
// values cannot drift apart. Internal to run/.

#include <algorithm>
#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ketasim/base/format.hpp"
#include "ketasim/input/scenario.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/solve/results.hpp"
#include "ketasim/solve/simulate.hpp"

namespace ketasim {

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
inline MetricValues one(const double& value) {
  return MetricValues{std::span<const double>(&value, 1)};
}
inline MetricValues many(const std::vector<double>& values) {
  return MetricValues{std::span<const double>(values)};
}
inline MetricValues nan_if_undefined(MetricValues values) {
  values.nan = NanMeaning::undefined;
  return values;
}

// A column of the metric list, named after its id (metric_dataset) and what it is about.
MetricColumn metric_column(MetricId id, std::string unit, std::size_t width, std::string description,
                           std::string_view about = {}, LinkRole role = LinkRole::none);

// Its columns are per assessment: "per assessment (1 d, 2 w after the first session)".
std::string per_assessment(const SimulationPlan& plan);

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

// "24h", "90min": a time after each session, as it names datasets.
std::string session_time_label(Ticks after);

// One group of per-session assessments (before each session, or a time after each).
template <class Visit>
void visit_session_assessments(const SessionAssessments& a, const std::array<MetricId, 4>& ids, std::string_view about,
                               const std::string& when, Visit&& visit) {
  const std::size_t sessions = a.madrs.size();
  visit(Metric::response, metric_column(ids[0], "", sessions, when + ": the model's MADRS (no residual error)", about),
        nan_if_undefined(many(a.madrs)));
  visit(Metric::response,
        metric_column(
            ids[1], "", sessions,
            when + ": observed MADRS (with residual error, in [0, " + format_significant(kMadrsMaximum) + "])", about),
        nan_if_undefined(many(a.observed)));
  visit(Metric::response,
        metric_column(ids[2], "", sessions, when + ": 1 if the observed MADRS fell by at least the response fraction",
                      about),
        nan_if_undefined(many(a.response)));
  visit(Metric::response,
        metric_column(ids[3], "", sessions, when + ": 1 if the observed MADRS is at or below the remission threshold",
                      about),
        nan_if_undefined(many(a.remission)));
}

// Assessments relative to each session: one column per session (NaN for a session not given).
template <class Visit>
void visit_session_metrics(const SimulationPlan& plan, const SubjectMetrics& m, Visit&& visit) {
  if (plan.before_each_session)
    visit_session_assessments(m.before_session,
                              {MetricId::madrs_before_session, MetricId::madrs_observed_before_session,
                               MetricId::response_before_session, MetricId::remission_before_session},
                              "", "per session: just before its start", visit);
  for (std::size_t j = 0; j < plan.session_assessments.size(); ++j) {
    const Ticks after = plan.session_assessments[j];
    visit_session_assessments(m.after_session[j],
                              {MetricId::madrs_after_session, MetricId::madrs_observed_after_session,
                               MetricId::response_after_session, MetricId::remission_after_session},
                              session_time_label(after),
                              "per session: " + format_duration_h(ticks_to_hours(after)) + " after its start", visit);
  }
}

// Relapse at visits (output.relapse).
template <class Visit>
void visit_relapse_visit_metrics(const SimulationPlan& plan, const SubjectMetrics& m, Visit&& visit) {
  if (!plan.relapse) return;
  visit(Metric::response,
        metric_column(MetricId::madrs_observed_at_visit, "", plan.relapse->visits.size(),
                      "per visit (relapse_visits_h): observed MADRS, with residual error"),
        nan_if_undefined(many(m.madrs_observed_at_visit)));
  visit(Metric::response,
        metric_column(MetricId::relapse_visits_at_risk, "", 1,
                      "1 if at risk of relapse (observed response or remission at the first visit), else 0; NaN "
                      "if the first visit is past the grid"),
        nan_if_undefined(one(m.relapse_visits_at_risk)));
  visit(Metric::response,
        metric_column(MetricId::relapse_visits_day, "d", 1,
                      "at risk: days from the first visit to the relapse at visits, or to the last visit within "
                      "the grid (censored)"),
        nan_if_undefined(one(m.relapse_visits_day)));
  visit(Metric::response,
        metric_column(MetricId::relapse_visits_observed, "", 1,
                      "at risk: 1 if a relapse at visits was observed, 0 if censored"),
        nan_if_undefined(one(m.relapse_visits_observed)));
}

// Stop rules (written in every arm when some arm has one).
template <class Visit>
void visit_stop_metrics(const SimulationPlan& plan, const SubjectMetrics& m, Visit&& visit) {
  if (!plan.stop_metrics) return;
  visit(Metric::response,
        metric_column(MetricId::sessions_to_response, "", 1,
                      "sessions of the series given when its stop rule ended it; NaN if it did not"),
        nan_if_undefined(one(m.sessions_to_response)));
  visit(Metric::response,
        metric_column(MetricId::stopped_early, "", 1, "1 if the arm's stop rule ended the series, else 0"),
        one(m.stopped_early));
}

// Titrations and given_if rules (written in every arm when some arm has one; NaN in the others).
template <class Visit>
void visit_titration_metrics(const SimulationPlan& plan, const SubjectMetrics& m, Visit&& visit) {
  if (plan.titration_metrics) {
    visit(Metric::response,
          metric_column(MetricId::titrated, "", 1,
                        "1 if the arm's titration changed the dose, else 0; NaN in an arm without one"),
          nan_if_undefined(one(m.titrated)));
    visit(Metric::response,
          metric_column(MetricId::titration_session, "", 1,
                        "the series' session (1-based) from which the titrated dose was given; NaN if none"),
          nan_if_undefined(one(m.titration_session)));
  }
  if (plan.continuation_metrics)
    visit(Metric::response,
          metric_column(MetricId::continued, "", 1,
                        "1 if the arm's given_if rule was given (response or remission at its assessment), 0 if "
                        "not; NaN in an arm without one or an assessment past the grid"),
          nan_if_undefined(one(m.continued)));
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
    visit_relapse_visit_metrics(plan, m, visit);
    visit_session_metrics(plan, m, visit);
    visit_stop_metrics(plan, m, visit);
    visit_titration_metrics(plan, m, visit);
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
                                    const SubjectMetrics& m);

}  // namespace ketasim
