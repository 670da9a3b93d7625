#include "ketasim/cohort.hpp"

#include <cmath>

#include <Eigen/Cholesky>

#include "ketasim/errors.hpp"
#include "ketasim/random_stream.hpp"

namespace ketasim {

double draw_covariate(const CovariateDistribution& distribution, std::uint64_t seed, std::int64_t subject_id,
                      std::uint32_t purpose) {
  if (distribution.kind == CovariateDistribution::Kind::fixed) return distribution.fixed;
  if (distribution.sd == 0.0) return distribution.mean;
  // Rejection sampling from the subject's own stream: deterministic per subject. The loader
  // guarantees the mean lies inside the bounds, so acceptance is at least a few percent.
  RandomStream stream(seed, static_cast<std::uint64_t>(subject_id), static_cast<StreamPurpose>(purpose));
  for (int attempt = 0; attempt < 100000; ++attempt) {
    const double value = distribution.mean + distribution.sd * stream.normal();
    if (value >= distribution.min && value <= distribution.max) return value;
  }
  throw ModelParameterError("could not draw a covariate inside its truncation bounds");
}

CohortSampler::CohortSampler(const Scenario& scenario, const ModelCard& card)
    : card_(card), seed_(scenario.cohort.seed), cohort_(scenario.cohort) {
  typical_.reserve(card.parameters.size());
  for (const auto& spec : card.parameters) typical_.push_back(spec.value);
  for (const auto& override_value : scenario.model.overrides) {
    const int index = card.index_of(override_value.name);
    if (index < 0) throw ModelParameterError("model " + card.name + " has no parameter '" + override_value.name + "'");
    typical_[static_cast<std::size_t>(index)] = override_value.value;
  }

  // The scenario's variability first (its correlation applies among these), then the card's for
  // every other parameter that has one.
  const Variability& variability = cohort_.variability;
  std::vector<double> omega;
  for (std::size_t i = 0; i < variability.parameters.size(); ++i) {
    const int index = card.index_of(variability.parameters[i]);
    if (index < 0) throw ModelParameterError("model " + card.name + " has no parameter '" + variability.parameters[i] + "'");
    eta_parameter_index_.push_back(index);
    const IivKind kind = i < variability.kinds.size() ? variability.kinds[i] : IivKind::log_normal;
    eta_kind_.push_back(kind);
    // omega^2 = ln(1 + CV^2): the exact log-normal relation, not the small-CV approximation.
    omega.push_back(kind == IivKind::log_normal ? std::sqrt(std::log1p(variability.cv[i] * variability.cv[i])) : variability.cv[i]);
  }
  if (variability.from_card) {
    for (std::size_t p = 0; p < card.parameters.size(); ++p) {
      const Iiv& iiv = card.parameters[p].iiv;
      if (iiv.kind == IivKind::none) continue;
      bool overridden = false;
      for (const int index : eta_parameter_index_) overridden |= index == static_cast<int>(p);
      if (overridden) continue;
      eta_parameter_index_.push_back(static_cast<int>(p));
      eta_kind_.push_back(iiv.kind);
      omega.push_back(iiv.kind == IivKind::log_normal ? std::sqrt(std::log1p(iiv.magnitude * iiv.magnitude)) : iiv.magnitude);
    }
  }
  const auto n = static_cast<Eigen::Index>(eta_parameter_index_.size());
  if (n > 0) {
    Eigen::MatrixXd correlation = Eigen::MatrixXd::Identity(n, n);
    const auto m = static_cast<Eigen::Index>(variability.parameters.size());
    if (variability.correlation.size() == m * m) correlation.topLeftCorner(m, m) = variability.correlation;
    // Factor the correlation and scale by omega (Omega = D C D = (D L)(D L)^T): a parameter with
    // 0% CV then simply gets no variability instead of making the covariance singular.
    Eigen::LLT<Eigen::MatrixXd> cholesky(correlation);
    if (cholesky.info() != Eigen::Success)
      throw ModelParameterError("the variability correlation matrix is not positive definite");
    const Eigen::VectorXd omegas = Eigen::Map<const Eigen::VectorXd>(omega.data(), n);
    eta_factor_ = omegas.asDiagonal() * Eigen::MatrixXd(cholesky.matrixL());
  }
}

Subject CohortSampler::draw(std::int64_t subject_id) const {
  Subject subject;
  subject.id = subject_id;
  subject.weight_kg = draw_covariate(cohort_.weight, seed_, subject_id, static_cast<std::uint32_t>(StreamPurpose::covariates));
  subject.age_years = draw_covariate(cohort_.age, seed_, subject_id, static_cast<std::uint32_t>(StreamPurpose::age));
  subject.baseline_madrs =
      draw_covariate(cohort_.baseline_madrs, seed_, subject_id, static_cast<std::uint32_t>(StreamPurpose::baseline_madrs));
  {
    RandomStream stream(seed_, static_cast<std::uint64_t>(subject_id), StreamPurpose::sex);
    subject.female = stream.uniform() < cohort_.female_fraction;
  }
  subject.parameters = typical_;
  const double weight_ratio = subject.weight_kg / card_.reference_weight_kg;
  for (std::size_t i = 0; i < subject.parameters.size(); ++i) {
    const ParameterSpec& spec = card_.parameters[i];
    if (spec.allometric_exponent != 0.0) subject.parameters[i] *= std::pow(weight_ratio, spec.allometric_exponent);
    if (spec.covariate_effect) {
      const double covariate = spec.covariate_effect->covariate == "age" ? subject.age_years : subject.weight_kg;
      subject.parameters[i] += spec.covariate_effect->slope * std::max(0.0, covariate - spec.covariate_effect->reference);
    }
  }
  const auto n = eta_factor_.rows();
  if (n > 0) {
    RandomStream stream(seed_, static_cast<std::uint64_t>(subject_id), StreamPurpose::random_effects);
    Eigen::VectorXd z(n);
    for (Eigen::Index i = 0; i < n; ++i) z(i) = stream.normal();
    const Eigen::VectorXd eta = eta_factor_.triangularView<Eigen::Lower>() * z;
    for (Eigen::Index i = 0; i < n; ++i) {
      double& value = subject.parameters[static_cast<std::size_t>(eta_parameter_index_[static_cast<std::size_t>(i)])];
      switch (eta_kind_[static_cast<std::size_t>(i)]) {
        case IivKind::log_normal: value *= std::exp(eta(i)); break;
        case IivKind::logit_normal: {
          const double logit = std::log(value / (1.0 - value)) + eta(i);
          value = 1.0 / (1.0 + std::exp(-logit));
          break;
        }
        case IivKind::normal: value += eta(i); break;
        case IivKind::none: break;
      }
    }
  }
  return subject;
}

}  // namespace ketasim
