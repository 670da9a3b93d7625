#include "ketasim/solve/observers.hpp"

#include "ketasim/model/model_card.hpp"
#include "ketasim/solve/as_needed_trigger.hpp"
#include "ketasim/solve/effect_peaks.hpp"

namespace ketasim {

using solve_units::kNaN;
using solve_units::kNgPerMlPerMgPerL;

namespace {
// Dissociation scores below this count as 0 in the burden integral (score points).
constexpr double kBurdenFloorScore = 1e-4;
}  // namespace

void fail_not_finite(const std::string& what, double value, double hours) {
  const std::string where = " at t = " + format_significant(hours, 10) + " h";
  if (std::isfinite(value)) {
    throw SolverError(what + " is " + format_significant(value) + where +
                      ", beyond the range of the float32 trajectories (3.4e+38)");
  }
  throw SolverError(what + " is not finite" + where + " (" + format_value(value) + ")");
}

OutputReader::OutputReader(const SubjectModel& subject, const MadrsScore* madrs, bool reads_outputs)
    : subject_(subject), madrs_(madrs), nonnegative_(static_cast<std::size_t>(subject.signals.rows()), 0) {
  if (!reads_outputs) return;
  bool positive_system = true;
  for (Eigen::Index i = 0; i < subject.A.rows(); ++i)
    for (Eigen::Index j = 0; j < subject.A.cols(); ++j) positive_system &= i == j || subject.A(i, j) >= 0.0;
  for (Eigen::Index k = 0; k < subject.signals.rows(); ++k)
    nonnegative_[static_cast<std::size_t>(k)] = positive_system && subject.signals.row(k).minCoeff() >= 0.0;
}

Metabolites::Metabolites(const Model& model, SubjectMetrics& metrics) : metrics_(metrics) {
  for (std::size_t d = 0; d < model.drugs().size(); ++d)
    if (static_cast<int>(d) != model.dosed_drug()) signals_.push_back(model.drugs()[d].plasma_signal);
  for (std::size_t slot = 0; slot < signals_.size(); ++slot) metrics_.metabolite_cmax_ng_per_ml[slot] = -1.0;
}

ResponseScores::ResponseScores(const DepressionValues& depression, const SimulationPlan& plan,
                               const SubjectContext& context, Ticks first_session, Ticks last_session,
                               bool has_sessions, SubjectMetrics& metrics)
    : depression_(depression),
      plan_(plan),
      context_(context),
      metrics_(metrics),
      first_session_(first_session),
      last_session_(last_session),
      threshold_(context.improvement_bar(plan.response_fraction)) {
  metrics_.baseline_madrs = context.baseline_madrs;
  metrics_.days_in_response = 0.0;
  end_of_treatment_ = has_sessions ? last_session + kTicksPerDay : -1;
}

void ResponseScores::add_marks(std::vector<PlanMark>& marks) const {
  for (const Ticks a : plan_.assessments) marks.push_back({first_session_ + a, Mark::assessment});
  if (plan_.relapse)
    for (const Ticks v : plan_.relapse->visits) marks.push_back({first_session_ + v, Mark::assessment});
  if (end_of_treatment_ >= 0) marks.push_back({end_of_treatment_, Mark::end_of_treatment});
}

void ResponseScores::at_point(Ticks t, double score) {
  if (!std::isfinite(score)) [[unlikely]]
    fail_not_finite("madrs", score, t);
  const bool responding = score <= threshold_;
  if (previous_time_ >= 0) {
    crossing(t, score, responding);
  } else if (responding && t >= first_session_) {
    metrics_.first_response_day = ticks_to_hours(t - first_session_) / kHoursPerDay;
  }
  if (t == end_of_treatment_) {
    metrics_.responder_end_of_treatment = responding ? 1.0 : 0.0;
    relapse_watch_ = responding;
  }
  assessments(t, score);
  if (plan_.relapse && next_visit_ < plan_.relapse->visits.size() &&
      t == first_session_ + plan_.relapse->visits[next_visit_])
    visit(next_visit_++, score);
  previous_time_ = t;
  previous_score_ = score;
  previous_responding_ = responding;
}

// Since the previous point: the first response, a relapse, and the days in response.
void ResponseScores::crossing(Ticks t, double score, bool responding) {
  const double t0 = ticks_to_hours(previous_time_);
  const double t1 = ticks_to_hours(t);
  double crossing = t1;
  if (responding != previous_responding_) {
    const double d0 = previous_score_ - threshold_;
    const double d1 = score - threshold_;
    crossing = d0 == d1 ? t1 : t0 + (t1 - t0) * d0 / (d0 - d1);
    if (responding && std::isnan(metrics_.first_response_day) && previous_time_ >= first_session_)
      metrics_.first_response_day = (crossing - ticks_to_hours(first_session_)) / kHoursPerDay;
    if (!responding && relapse_watch_ && previous_time_ >= end_of_treatment_) {
      metrics_.relapse_day = (crossing - ticks_to_hours(last_session_)) / kHoursPerDay;
      metrics_.relapse_observed = 1.0;
      relapse_watch_ = false;
    }
  }
  if (responding && previous_responding_)
    metrics_.days_in_response += (t1 - t0) / kHoursPerDay;
  else if (responding)
    metrics_.days_in_response += (t1 - crossing) / kHoursPerDay;
  else if (previous_responding_)
    metrics_.days_in_response += (crossing - t0) / kHoursPerDay;
}

void ResponseScores::assessments(Ticks t, double score) {
  for (std::size_t k = 0; k < plan_.assessments.size(); ++k) {
    if (first_session_ + plan_.assessments[k] != t) continue;
    const double observed = observed_madrs(score, depression_.residual_sd, context_.residual_normals[k]);
    metrics_.madrs_at[k] = score;
    metrics_.madrs_observed_at[k] = observed;
    metrics_.response_at[k] = observed <= threshold_ ? 1.0 : 0.0;
    metrics_.remission_at[k] = observed <= plan_.remission_threshold ? 1.0 : 0.0;
  }
}

void ResponseScores::visit(std::size_t k, double score) {
  const RelapseVisits& relapse = *plan_.relapse;
  const double observed = observed_madrs(score, depression_.residual_sd, context_.visit_normals[k]);
  metrics_.madrs_observed_at_visit[k] = observed;
  if (k == 0) {
    const bool at_risk = relapse.among == RelapseVisits::Among::responders ? observed <= threshold_
                                                                           : observed <= plan_.remission_threshold;
    metrics_.relapse_visits_at_risk = at_risk ? 1.0 : 0.0;
    visit_watch_ = at_risk;
    if (at_risk) metrics_.relapse_visits_day = metrics_.relapse_visits_observed = 0.0;
    return;
  }
  if (!visit_watch_) return;
  const auto days_since_first = [&](std::size_t visit) {
    return ticks_to_hours(relapse.visits[visit] - relapse.visits[0]) / kHoursPerDay;
  };
  metrics_.relapse_visits_day = days_since_first(k);  // censored here unless a relapse follows
  visit_run_ = relapsing_at_visit(observed) ? visit_run_ + 1 : 0;
  if (visit_run_ < relapse.consecutive) return;
  const std::size_t dated =
      relapse.dated == RelapseVisits::Dated::first ? k + 1 - static_cast<std::size_t>(relapse.consecutive) : k;
  metrics_.relapse_visits_day = days_since_first(dated);
  metrics_.relapse_visits_observed = 1.0;
  visit_watch_ = false;
}

bool ResponseScores::relapsing_at_visit(double observed) const {
  const RelapseVisits& relapse = *plan_.relapse;
  switch (relapse.threshold) {
    case RelapseVisits::Threshold::loss_of_response:
      return observed > threshold_;
    case RelapseVisits::Threshold::madrs_at_least:
      return observed >= relapse.value;
    case RelapseVisits::Threshold::improvement_below:
      return observed > context_.improvement_bar(relapse.value);
  }
  return false;
}

void ResponseScores::treatment_stopped(Ticks at, Ticks last_given) {
  last_session_ = last_given;
  end_of_treatment_ = std::max(last_given + kTicksPerDay, at);
}

void ResponseScores::finish(Ticks grid_end) {
  if (relapse_watch_) {  // still in response at the end: censored
    metrics_.relapse_day = ticks_to_hours(grid_end - last_session_) / kHoursPerDay;
    metrics_.relapse_observed = 0.0;
  }
}

SessionScores::SessionScores(const DepressionValues& depression, const SimulationPlan& plan,
                             const SubjectContext& context, const std::vector<Dose>& doses, SubjectMetrics& metrics)
    : depression_(depression),
      plan_(plan),
      context_(context),
      doses_(doses),
      metrics_(metrics),
      threshold_(context.improvement_bar(plan.response_fraction)) {}

void SessionScores::add_marks(std::vector<PlanMark>& marks) const {
  for (const Dose& dose : doses_)
    for (const Ticks after : plan_.session_assessments) marks.push_back({dose.start + after, Mark::assessment});
}

void SessionScores::before_session(int session, double score) {
  const auto k = static_cast<std::size_t>(session);
  if (k < metrics_.before_session.madrs.size())
    record(metrics_.before_session, k, score, context_.before_session_normals[k]);
}

void SessionScores::after_sessions(Ticks t, double score) {
  const std::size_t offsets = plan_.session_assessments.size();
  for (std::size_t j = 0; j < offsets; ++j) {
    const Ticks start = t - plan_.session_assessments[j];
    auto dose =
        std::lower_bound(doses_.begin(), doses_.end(), start, [](const Dose& d, Ticks time) { return d.start < time; });
    for (; dose != doses_.end() && dose->start == start; ++dose) {
      const auto k = static_cast<std::size_t>(dose - doses_.begin());
      if (k < metrics_.after_session[j].madrs.size())
        record(metrics_.after_session[j], k, score, context_.after_session_normals[k * offsets + j]);
    }
  }
}

void SessionScores::record(SessionAssessments& into, std::size_t session, double score, double normal) const {
  if (!std::isfinite(score)) [[unlikely]]
    fail_not_finite("madrs", score, ticks_to_hours(doses_[session].start));
  const double observed = observed_madrs(score, depression_.residual_sd, normal);
  into.madrs[session] = score;
  into.observed[session] = observed;
  into.response[session] = observed <= threshold_ ? 1.0 : 0.0;
  into.remission[session] = observed <= plan_.remission_threshold ? 1.0 : 0.0;
}

DissociationBurden::DissociationBurden(const LinkValues& link, SubjectMetrics& metrics)
    : link_(link), floor_(link.input_for(kBurdenFloorScore, 0.0)), metrics_(metrics) {
  metrics_.dissociation_burden_score_h = 0.0;
}

void MassBalance::count_sessions(Ticks end) {
  metrics_.sessions_given = static_cast<double>(
      std::count_if(doses_.begin(), doses_.end(), [&](const Dose& dose) { return dose.start <= end; }));
  std::vector<double> given(model_.drugs().size(), 0.0);
  for (const ModelInput& input : plan_.inputs) {
    if (input.start > end) continue;
    const double fraction =
        input.duration == 0
            ? 1.0
            : std::min(1.0, static_cast<double>(end - input.start) / static_cast<double>(input.duration));
    for (std::size_t d = 0; d < given.size(); ++d)
      given[d] += input.amount * fraction *
                  subject_.drug_amount[d].dot(subject_.channels[static_cast<std::size_t>(input.channel)].transpose());
  }
  metrics_.dosed_mg = given[static_cast<std::size_t>(model_.dosed_drug())];
  metrics_.given_mg = given;
}

EffectPeaks::EffectPeaks(const Model& model, const SubjectModel& subject, double threshold_score, bool peak_links,
                         SubjectMetrics& metrics)
    : model_(model),
      subject_(subject),
      metrics_(metrics),
      link_(subject.links[static_cast<std::size_t>(model.dissociation_link())]),
      driver_signal_(model.dissociation_driver()),
      effect_signal_(model.dissociation_effect_site()),
      tolerance_signal_(link_.tolerance_signal),
      threshold_score_(threshold_score),
      threshold_(link_.input_for(threshold_score, 0.0)),
      peak_links_(peak_links),
      peak_tolerance_(metrics.peak_effect_ng_per_ml.size(), 0.0) {
  metrics_.time_above_dissociation_h = 0.0;
}

double EffectPeaks::peak_score(std::size_t link, std::size_t dose) const {
  const double peak = metrics_.peak_effect_ng_per_ml[dose] / kNgPerMlPerMgPerL;
  return subject_.links[link](peak, peak_tolerance_[dose]) * model_.link_output(link).display_per_base;
}

void EffectPeaks::record_peak_links() {
  for (std::size_t l = 0; l < subject_.links.size(); ++l) {
    // Only links of the dissociation effect site peak where it peaks.
    if (subject_.links[l].input_signal != effect_signal_) continue;
    for (std::size_t k = 0; k < metrics_.peak_effect_ng_per_ml.size(); ++k) {
      if (std::isnan(metrics_.peak_effect_ng_per_ml[k])) continue;  // the dose was not given within the grid
      const double value = peak_score(l, k);
      if (!std::isfinite(value))
        fail_not_finite("peak_" + model_.links()[l]->name, value, metrics_.peak_effect_time_h[k]);
      metrics_.peak_link[l][k] = value;
    }
  }
}

AsNeededTrigger::AsNeededTrigger(const TriggeredDosing& dosing, const MadrsScore& madrs, double baseline_madrs,
                                 Ticks grid_end)
    : dosing_(dosing),
      madrs_(madrs),
      threshold_(dosing.rule.threshold == AsNeeded::Threshold::madrs_above
                     ? dosing.rule.value
                     : (1.0 - dosing.rule.value) * baseline_madrs),
      until_(std::min(grid_end + 1, dosing.rule.until.value_or(grid_end + 1))) {}

void AsNeededTrigger::add_marks(std::vector<PlanMark>& marks, const std::vector<Dose>& doses) const {
  marks.push_back({dosing_.rule.from, Mark::as_needed_window});
  for (const Dose& dose : doses) marks.push_back({dose.start + dosing_.rule.min_interval, Mark::as_needed_window});
}

Ticks AsNeededTrigger::allowed_from(Ticks t, const std::vector<Dose>& doses) const {
  if (dosing_.rule.max_doses && fired_ >= *dosing_.rule.max_doses) return kNever;
  Ticks allowed = dosing_.rule.from;
  for (const Dose& dose : doses) {
    if (dose.start <= t)
      allowed = std::max(allowed, dose.start + dosing_.rule.min_interval);
    else if (dose.triggered)
      return kNever;
  }
  return allowed < until_ ? allowed : kNever;
}

Dose AsNeededTrigger::fire(Ticks at, std::vector<Dose>& doses, std::size_t most_doses) {
  Dose dose = dosing_.dose;
  dose.start = dosing_.rule.dose_time(at);
  dose.triggered = true;
  if (doses.size() >= most_doses)
    throw SolverError("as-needed dosing gave more doses than the arm's bound (" + std::to_string(doses.size()) + ")");
  const auto position = std::upper_bound(doses.begin(), doses.end(), dose.start,
                                         [](Ticks time, const Dose& d) { return time < d.start; });
  doses.insert(position, dose);
  ++fired_;
  return dose;
}

}  // namespace ketasim
