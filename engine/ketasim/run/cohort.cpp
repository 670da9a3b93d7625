#include "ketasim/run/cohort.hpp"

#include <Eigen/Cholesky>
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numbers>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/random_stream.hpp"
#include "ketasim/input/covariate_table.hpp"

namespace ketasim {

namespace {

// p(r) = c[0] + c[1] r + ... + c[7] r^7 by Horner's rule.
double polynomial(const std::array<double, 8>& c, double r) {
  double value = c[7];
  for (int i = 6; i >= 0; --i) value = value * r + c[static_cast<std::size_t>(i)];
  return value;
}

// A random effect of one card: cohort.variability's `cv` entries first (in their order), then the
// card's own variability for every other parameter that has one.
struct RandomEffect {
  int parameter = 0;  // card index
  IivKind kind = IivKind::log_normal;
  double omega = 0.0;  // SD of eta
  int cv_entry = -1;   // position in cohort.variability.parameters; -1 for the card's own
};

// `all_named`: every parameter cohort.variability names must be in the card (the scenario's);
// another card leaves out those it does not have.
std::vector<RandomEffect> random_effects(const Variability& variability, const ModelCard& card, bool all_named) {
  // omega^2 = ln(1 + CV^2): the exact log-normal relation, not the small-CV approximation.
  const auto omega = [](IivKind kind, double magnitude) {
    return kind == IivKind::log_normal ? std::sqrt(std::log1p(magnitude * magnitude)) : magnitude;
  };
  std::vector<RandomEffect> effects;
  for (std::size_t i = 0; i < variability.parameters.size(); ++i) {
    const int index = card.index_of(variability.parameters[i]);
    if (index < 0) {
      if (!all_named) continue;
      throw ModelParameterError("model " + card.name + " has no parameter '" + variability.parameters[i] + "'");
    }
    const IivKind kind = i < variability.kinds.size() ? variability.kinds[i] : IivKind::log_normal;
    effects.push_back({index, kind, omega(kind, variability.cv[i]), static_cast<int>(i)});
  }
  if (!variability.from_card) return effects;
  for (std::size_t p = 0; p < card.parameters.size(); ++p) {
    const Iiv& iiv = card.parameters[p].iiv;
    const auto listed = [&](const RandomEffect& effect) { return effect.parameter == static_cast<int>(p); };
    if (iiv.kind == IivKind::none || std::any_of(effects.begin(), effects.end(), listed)) continue;
    effects.push_back({static_cast<int>(p), iiv.kind, omega(iiv.kind, iiv.magnitude), -1});
  }
  // `order: last`: after the others, which keep the draws they had without it.
  std::stable_partition(effects.begin(), effects.end(), [&](const RandomEffect& effect) {
    return effect.cv_entry >= 0 || !card.parameters[static_cast<std::size_t>(effect.parameter)].iiv.drawn_last;
  });
  return effects;
}

}  // namespace

double standard_normal_cdf(double x) {
  return 0.5 * std::erfc(-x / std::numbers::sqrt2);
}

double standard_normal_quantile(double p) {
  if (!(p >= 0.0 && p <= 1.0)) return std::numeric_limits<double>::quiet_NaN();
  if (p == 0.0) return -std::numeric_limits<double>::infinity();
  if (p == 1.0) return std::numeric_limits<double>::infinity();
  // AS 241 (PPND16): rational approximations in three regions of p, coefficients as published.
  static constexpr std::array<double, 8> a{3.3871328727963666080e0,  1.3314166789178437745e+2, 1.9715909503065514427e+3,
                                           1.3731693765509461125e+4, 4.5921953931549871457e+4, 6.7265770927008700853e+4,
                                           3.3430575583588128105e+4, 2.5090809287301226727e+3};
  static constexpr std::array<double, 8> b{1.0,
                                           4.2313330701600911252e+1,
                                           6.8718700749205790830e+2,
                                           5.3941960214247511077e+3,
                                           2.1213794301586595867e+4,
                                           3.9307895800092710610e+4,
                                           2.8729085735721942674e+4,
                                           5.2264952788528545610e+3};
  static constexpr std::array<double, 8> c{
      1.42343711074968357734e0, 4.63033784615654529590e0,  5.76949722146069140550e0,  3.64784832476320460504e0,
      1.27045825245236838258e0, 2.41780725177450611770e-1, 2.27238449892691845833e-2, 7.74545014278341407640e-4};
  static constexpr std::array<double, 8> d{1.0,
                                           2.05319162663775882187e0,
                                           1.67638483018380384940e0,
                                           6.89767334985100004550e-1,
                                           1.48103976427480074590e-1,
                                           1.51986665636164571966e-2,
                                           5.47593808499534494600e-4,
                                           1.05075007164441684324e-9};
  static constexpr std::array<double, 8> e{
      6.65790464350110377720e0,  5.46378491116411436990e0,  1.78482653991729133580e0,  2.96560571828504891230e-1,
      2.65321895265761230930e-2, 1.24266094738807843860e-3, 2.71155556874348757815e-5, 2.01033439929228813265e-7};
  static constexpr std::array<double, 8> f{1.0,
                                           5.99832206555887937690e-1,
                                           1.36929880922735805310e-1,
                                           1.48753612908506148525e-2,
                                           7.86869131145613259100e-4,
                                           1.84631831751005468180e-5,
                                           1.42151175831644588870e-7,
                                           2.04426310338993978564e-15};
  const double q = p - 0.5;
  if (std::fabs(q) <= 0.425) {
    const double r = 0.180625 - q * q;
    return q * polynomial(a, r) / polynomial(b, r);
  }
  double r = std::sqrt(-std::log(q < 0.0 ? p : 1.0 - p));
  double x = 0.0;
  if (r <= 5.0) {
    r -= 1.6;
    x = polynomial(c, r) / polynomial(d, r);
  } else {
    r -= 5.0;
    x = polynomial(e, r) / polynomial(f, r);
  }
  return q < 0.0 ? -x : x;
}

double truncated_normal_at(const CovariateDistribution& distribution, double z) {
  if (distribution.kind == CovariateDistribution::Kind::fixed) return distribution.fixed;
  if (distribution.sd == 0.0) return distribution.mean;
  const double a = (distribution.min - distribution.mean) / distribution.sd;
  const double b = (distribution.max - distribution.mean) / distribution.sd;
  // Work in z's own tail, where the probabilities are small numbers rather than 1 minus small
  // numbers: for z > 0, with Q(x) = Phi(-x), 1 - p = Q(b) + Q(z) (Q(a) - Q(b)) and
  // Phi^-1(p) = -Phi^-1(1 - p).
  double x = 0.0;
  if (z <= 0.0) {
    const double below = standard_normal_cdf(a);
    const double p = below + standard_normal_cdf(z) * (standard_normal_cdf(b) - below);
    x = distribution.mean + distribution.sd * standard_normal_quantile(p);
  } else {
    const double above = standard_normal_cdf(-b);
    const double q = above + standard_normal_cdf(-z) * (standard_normal_cdf(-a) - above);
    x = distribution.mean - distribution.sd * standard_normal_quantile(q);
  }
  return std::clamp(x, distribution.min, distribution.max);  // rounding at the bounds
}

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

CohortSampler::CohortSampler(const Scenario& scenario, const ModelChoice& model, const ModelCard& card)
    : card_(card), seed_(scenario.cohort.seed), cohort_(scenario.cohort) {
  typical_.reserve(card.parameters.size());
  for (const auto& spec : card.parameters) typical_.push_back(spec.value);
  for (const auto& override_value : model.overrides) {
    const int index = card.index_of(override_value.name);
    if (index < 0) throw ModelParameterError("model " + card.name + " has no parameter '" + override_value.name + "'");
    typical_[static_cast<std::size_t>(index)] = override_value.value;
  }

  const Variability& variability = cohort_.variability;
  const bool scenario_card = card.name == scenario.model.name;
  const std::vector<RandomEffect> effects = random_effects(variability, card, scenario_card);
  // Another card's random effects take the draws of the scenario model's parameters of the same
  // name, and draws after all of those for parameters the scenario's model does not have.
  std::vector<std::string> shared;
  if (!scenario_card) {
    const ModelCard* scenario_model = find_builtin_model(scenario.model.name);
    if (!scenario_model) throw ModelParameterError("unknown model '" + scenario.model.name + "'");
    for (const RandomEffect& effect : random_effects(variability, *scenario_model, true))
      shared.push_back(scenario_model->parameters[static_cast<std::size_t>(effect.parameter)].name);
  }
  eta_draws_ = shared.size();
  for (const RandomEffect& effect : effects) {
    eta_parameter_index_.push_back(effect.parameter);
    eta_kind_.push_back(effect.kind);
    const auto same =
        std::find(shared.begin(), shared.end(), card.parameters[static_cast<std::size_t>(effect.parameter)].name);
    eta_draw_.push_back(same != shared.end() ? static_cast<std::size_t>(same - shared.begin()) : eta_draws_++);
  }
  const auto n = static_cast<Eigen::Index>(effects.size());
  if (n > 0) {
    Eigen::MatrixXd correlation = Eigen::MatrixXd::Identity(n, n);
    const auto m = static_cast<Eigen::Index>(variability.parameters.size());
    if (variability.correlation.size() == m * m) {
      for (Eigen::Index i = 0; i < n; ++i)
        for (Eigen::Index j = 0; j < n; ++j) {
          const int a = effects[static_cast<std::size_t>(i)].cv_entry,
                    b = effects[static_cast<std::size_t>(j)].cv_entry;
          if (a >= 0 && b >= 0) correlation(i, j) = variability.correlation(a, b);
        }
    }
    // Factor the correlation and scale by omega (Omega = D C D = (D L)(D L)^T): a parameter with
    // 0% CV then simply gets no variability instead of making the covariance singular.
    Eigen::LLT<Eigen::MatrixXd> cholesky(correlation);
    if (cholesky.info() != Eigen::Success)
      throw ModelParameterError("the variability correlation matrix is not positive definite");
    Eigen::VectorXd omegas(n);
    for (Eigen::Index i = 0; i < n; ++i) omegas(i) = effects[static_cast<std::size_t>(i)].omega;
    eta_factor_ = omegas.asDiagonal() * Eigen::MatrixXd(cholesky.matrixL());
  }
  const OccasionVariability& occasions = scenario.cohort.occasion_variability;
  // It names parameters of the scenario's model (the loader refuses it with arms of other cards).
  if (!occasions.parameters.empty() && !scenario_card)
    throw ModelParameterError("occasion variability names parameters of model " + scenario.model.name + ", not of " +
                              card.name);
  for (std::size_t i = 0; i < occasions.parameters.size(); ++i) {
    const int index = card.index_of(occasions.parameters[i]);
    if (index < 0)
      throw ModelParameterError("model " + card.name + " has no parameter '" + occasions.parameters[i] + "'");
    occasion_index_.push_back(index);
    occasion_omega_.push_back(std::sqrt(std::log1p(occasions.cv[i] * occasions.cv[i])));
  }

  if (cohort_.covariate_correlation.size() > 0) {
    const Eigen::LLT<Eigen::MatrixXd> cholesky(cohort_.covariate_correlation);
    if (cohort_.covariate_correlation.rows() != 3 || cohort_.covariate_correlation.cols() != 3 ||
        cholesky.info() != Eigen::Success)
      throw ModelParameterError("the covariate correlation matrix is not a positive definite 3 x 3 matrix");
    copula_factor_ = cholesky.matrixL();
  }
  if (const CovariateTable* table = cohort_.table.get()) {
    if (table->rows == 0) throw ModelParameterError("the cohort file " + table->file + " has no rows");
    if (cohort_.table_rows == Cohort::TableRows::in_order &&
        (cohort_.trial_size() < 1 || static_cast<std::size_t>(cohort_.trial_size()) > table->rows)) {
      throw ModelParameterError("the cohort is the " + std::to_string(table->rows) + " patients of " + table->file +
                                " in order, but a replicate has " + std::to_string(cohort_.trial_size()) + " subjects");
    }
  }
}

std::size_t CohortSampler::table_row(std::int64_t subject_id) const {
  if (cohort_.table_rows == Cohort::TableRows::in_order)
    return static_cast<std::size_t>(subject_id % cohort_.trial_size());
  // Uniform with replacement, from the subject's own stream.
  const std::size_t rows = cohort_.table->rows;
  RandomStream stream(seed_, static_cast<std::uint64_t>(subject_id), StreamPurpose::cohort_row);
  return std::min(static_cast<std::size_t>(stream.uniform() * static_cast<double>(rows)), rows - 1);
}

void CohortSampler::draw_covariates(Subject& subject) const {
  const CovariateTable* table = cohort_.table.get();
  std::size_t row = 0;
  if (table) {
    row = table_row(subject.id);
    subject.table_row = static_cast<std::int64_t>(row);
  }
  // Weight, age and baseline MADRS: a table column if there is one, else the distribution.
  const std::array<const CovariateDistribution*, 3> distributions{&cohort_.weight, &cohort_.age,
                                                                  &cohort_.baseline_madrs};
  const std::array<const std::vector<double>*, 3> columns{table ? &table->weight_kg : nullptr,
                                                          table ? &table->age_years : nullptr,
                                                          table ? &table->baseline_madrs : nullptr};
  const std::array<StreamPurpose, 3> purposes{StreamPurpose::covariates, StreamPurpose::age,
                                              StreamPurpose::baseline_madrs};
  const auto from_table = [&](std::size_t k) { return columns[k] != nullptr && !columns[k]->empty(); };
  std::array<double, 3> values{};
  if (copula_factor_.size() > 0) {
    // Gaussian copula: correlated standard normals, each mapped to its covariate's quantile.
    RandomStream stream(seed_, static_cast<std::uint64_t>(subject.id), StreamPurpose::correlated_covariates);
    Eigen::Vector3d independent;
    for (Eigen::Index k = 0; k < 3; ++k) independent(k) = stream.normal();
    const Eigen::Vector3d z = copula_factor_.triangularView<Eigen::Lower>() * independent;
    for (std::size_t k = 0; k < 3; ++k)
      values[k] = truncated_normal_at(*distributions[k], z(static_cast<Eigen::Index>(k)));
  } else {
    for (std::size_t k = 0; k < 3; ++k) {
      if (!from_table(k))
        values[k] = draw_covariate(*distributions[k], seed_, subject.id, static_cast<std::uint32_t>(purposes[k]));
    }
  }
  for (std::size_t k = 0; k < 3; ++k)
    if (from_table(k)) values[k] = (*columns[k])[row];
  subject.weight_kg = values[0];
  subject.age_years = values[1];
  subject.baseline_madrs = values[2];
  if (table && table->has_sex()) {
    subject.female = table->female[row] != 0;
  } else {
    RandomStream stream(seed_, static_cast<std::uint64_t>(subject.id), StreamPurpose::sex);
    subject.female = stream.uniform() < cohort_.female_fraction;
  }
}

std::vector<double> CohortSampler::occasion_parameters(const Subject& subject, int occasion) const {
  std::vector<double> parameters = subject.parameters;
  RandomStream stream(seed_, static_cast<std::uint64_t>(subject.id),
                      occasion_stream(static_cast<std::uint32_t>(occasion)));
  for (std::size_t i = 0; i < occasion_index_.size(); ++i)
    parameters[static_cast<std::size_t>(occasion_index_[i])] *= std::exp(occasion_omega_[i] * stream.normal());
  return parameters;
}

Subject CohortSampler::draw(std::int64_t subject_id) const {
  Subject subject;
  subject.id = subject_id;
  draw_covariates(subject);
  subject.parameters = typical_;
  const double weight_ratio = subject.weight_kg / card_.reference_weight_kg;
  for (std::size_t i = 0; i < subject.parameters.size(); ++i) {
    const ParameterSpec& spec = card_.parameters[i];
    if (spec.allometric_exponent != 0.0) subject.parameters[i] *= std::pow(weight_ratio, spec.allometric_exponent);
    if (spec.covariate_effect) {
      const double covariate = spec.covariate_effect->covariate == "age" ? subject.age_years : subject.weight_kg;
      subject.parameters[i] +=
          spec.covariate_effect->slope * std::max(0.0, covariate - spec.covariate_effect->reference);
    }
  }
  const auto n = eta_factor_.rows();
  if (n > 0) {
    RandomStream stream(seed_, static_cast<std::uint64_t>(subject_id), StreamPurpose::random_effects);
    Eigen::VectorXd normals(static_cast<Eigen::Index>(eta_draws_));
    for (Eigen::Index i = 0; i < normals.size(); ++i) normals(i) = stream.normal();
    Eigen::VectorXd z(n);
    for (Eigen::Index i = 0; i < n; ++i)
      z(i) = normals(static_cast<Eigen::Index>(eta_draw_[static_cast<std::size_t>(i)]));
    const Eigen::VectorXd eta = eta_factor_.triangularView<Eigen::Lower>() * z;
    for (Eigen::Index i = 0; i < n; ++i) {
      double& value = subject.parameters[static_cast<std::size_t>(eta_parameter_index_[static_cast<std::size_t>(i)])];
      switch (eta_kind_[static_cast<std::size_t>(i)]) {
        case IivKind::log_normal:
          value *= std::exp(eta(i));
          break;
        case IivKind::logit_normal: {
          const double logit = std::log(value / (1.0 - value)) + eta(i);
          value = 1.0 / (1.0 + std::exp(-logit));
          break;
        }
        case IivKind::normal:
          value += eta(i);
          break;
        case IivKind::none:
          break;
      }
    }
  }
  return subject;
}

}  // namespace ketasim
