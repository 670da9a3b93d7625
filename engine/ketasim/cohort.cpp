#include "ketasim/cohort.hpp"

#include <cmath>

#include <Eigen/Cholesky>

#include "ketasim/errors.hpp"
#include "ketasim/random_stream.hpp"

namespace ketasim {

CohortSampler::CohortSampler(const Scenario& scenario, const ModelCard& card)
    : card_(card), seed_(scenario.cohort.seed), weight_(scenario.cohort.weight) {
  typical_.reserve(card.parameters.size());
  for (const auto& spec : card.parameters) typical_.push_back(spec.value);
  for (const auto& override_value : scenario.model.overrides) {
    const int index = card.index_of(override_value.name);
    if (index < 0) throw ModelParameterError("model " + card.name + " has no parameter '" + override_value.name + "'");
    typical_[static_cast<std::size_t>(index)] = override_value.value;
  }

  const Variability& variability = scenario.cohort.variability;
  const auto n = static_cast<Eigen::Index>(variability.parameters.size());
  for (const auto& name : variability.parameters) {
    const int index = card.index_of(name);
    if (index < 0) throw ModelParameterError("model " + card.name + " has no parameter '" + name + "'");
    eta_parameter_index_.push_back(index);
  }
  if (n > 0) {
    // omega^2 = ln(1 + CV^2): the exact log-normal relation, not the small-CV approximation.
    Eigen::VectorXd omega(n);
    for (Eigen::Index i = 0; i < n; ++i) omega(i) = std::sqrt(std::log1p(std::pow(variability.cv[static_cast<std::size_t>(i)], 2)));
    const Eigen::MatrixXd correlation =
        variability.correlation.size() == n * n ? variability.correlation : Eigen::MatrixXd::Identity(n, n);
    // Factor the correlation and scale by omega (Omega = D C D = (D L)(D L)^T): a parameter with
    // 0% CV then simply gets no variability instead of making the covariance singular.
    Eigen::LLT<Eigen::MatrixXd> cholesky(correlation);
    if (cholesky.info() != Eigen::Success)
      throw ModelParameterError("the variability correlation matrix is not positive definite");
    eta_factor_ = omega.asDiagonal() * Eigen::MatrixXd(cholesky.matrixL());
  }
}

double CohortSampler::draw_weight(std::int64_t subject_id) const {
  if (weight_.kind == WeightDistribution::Kind::fixed) return weight_.fixed_kg;
  if (weight_.sd_kg == 0.0) return weight_.mean_kg;
  // Rejection sampling from the subject's own stream: deterministic per subject. The loader
  // guarantees the mean lies inside the bounds, so acceptance is at least a few percent.
  RandomStream stream(seed_, static_cast<std::uint64_t>(subject_id), StreamPurpose::covariates);
  for (int attempt = 0; attempt < 100000; ++attempt) {
    const double weight = weight_.mean_kg + weight_.sd_kg * stream.normal();
    if (weight >= weight_.min_kg && weight <= weight_.max_kg) return weight;
  }
  throw ModelParameterError("could not draw a body weight inside the truncation bounds");
}

Subject CohortSampler::draw(std::int64_t subject_id) const {
  Subject subject;
  subject.id = subject_id;
  subject.weight_kg = draw_weight(subject_id);
  subject.parameters = typical_;
  const double weight_ratio = subject.weight_kg / card_.reference_weight_kg;
  for (std::size_t i = 0; i < subject.parameters.size(); ++i) {
    const double exponent = card_.parameters[i].allometric_exponent;
    if (exponent != 0.0) subject.parameters[i] *= std::pow(weight_ratio, exponent);
  }
  const auto n = eta_factor_.rows();
  if (n > 0) {
    RandomStream stream(seed_, static_cast<std::uint64_t>(subject_id), StreamPurpose::random_effects);
    Eigen::VectorXd z(n);
    for (Eigen::Index i = 0; i < n; ++i) z(i) = stream.normal();
    const Eigen::VectorXd eta = eta_factor_.triangularView<Eigen::Lower>() * z;
    for (Eigen::Index i = 0; i < n; ++i)
      subject.parameters[static_cast<std::size_t>(eta_parameter_index_[static_cast<std::size_t>(i)])] *= std::exp(eta(i));
  }
  return subject;
}

}  // namespace ketasim
