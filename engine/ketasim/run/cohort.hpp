#pragma once
// Scenario cohort + model card -> one subject's covariates and individual parameters.
//
// P_i = g(P_typical * (WT_i / WT_ref)^allometry + covariate effects, eta_i), where g applies the
// parameter's variability: log-normal (P exp(eta)), logit-normal (expit(logit P + eta)) or normal
// (P + eta). The card gives each parameter's default variability; the scenario may override it
// (cohort.variability.cv, log-normal, optionally correlated) or switch the card's off.
//
// Covariates come from, in this order of precedence: a column of cohort.from_csv (the subject's
// row), the Gaussian copula of cohort.correlations, or each covariate's own rejection draw.

#include <Eigen/Core>
#include <cstdint>
#include <limits>
#include <vector>

#include "ketasim/input/scenario.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim {

struct Subject {
  std::int64_t id = 0;
  double weight_kg = 0.0;
  double age_years = 0.0;
  bool female = false;
  double baseline_madrs = 0.0;
  double screening_madrs = std::numeric_limits<double>::quiet_NaN();  // cohort.screening: observed at screening
  std::int64_t table_row = -1;     // the row of cohort.from_csv this subject is; -1 without a table
  std::vector<double> parameters;  // individual values in card order, base units
};

// Everything about the cohort that is the same for every subject, computed once, for one model.
class CohortSampler {
 public:
  // The cohort as `model` (the scenario's or an arm's, see model_of; `card` is its card) sees it:
  // the model's overrides give the typical values; cohort.variability applies to the parameters
  // the card has; each random effect takes the normal draw of the parameter of the same name in
  // the scenario's model, so that arms with different cards stay paired where they share
  // parameters (the PD module's), and a card's own parameters take draws no other card uses.
  CohortSampler(const Scenario& scenario, const ModelChoice& model, const ModelCard& card);
  // The scenario's own model.
  CohortSampler(const Scenario& scenario, const ModelCard& card) : CohortSampler(scenario, scenario.model, card) {}

  Subject draw(std::int64_t subject_id) const;
  // The subject's parameters during occasion k (from its k-th session on): its individual values
  // times exp(kappa) for each parameter of cohort.occasion_variability.
  std::vector<double> occasion_parameters(const Subject& subject, int occasion) const;
  bool has_occasion_variability() const { return !occasion_index_.empty(); }
  const ModelCard& card() const { return card_; }
  // Typical values (card plus overrides) for the reference weight, base units.
  const std::vector<double>& typical_parameters() const { return typical_; }
  // The parameters with variability and their kinds, in draw order.
  const std::vector<int>& variable_parameters() const { return eta_parameter_index_; }

 private:
  const ModelCard& card_;
  std::uint64_t seed_;
  Cohort cohort_;
  std::vector<double> typical_;
  std::vector<int> eta_parameter_index_;  // card index of each variable parameter
  std::vector<IivKind> eta_kind_;
  std::vector<std::size_t> eta_draw_;   // which normal of the subject's random-effects stream each one takes
  std::size_t eta_draws_ = 0;           // normals drawn per subject
  Eigen::MatrixXd eta_factor_;          // lower-triangular L with L L^T = Omega
  std::vector<int> occasion_index_;     // card index of each parameter with occasion variability
  std::vector<double> occasion_omega_;  // its SD of kappa
  Eigen::MatrixXd copula_factor_;       // lower-triangular L with L L^T = covariate correlation; 0 x 0 without

  std::size_t table_row(std::int64_t subject_id) const;
  void draw_covariates(Subject& subject) const;
};

// A draw from a covariate distribution with the subject's stream for that purpose.
double draw_covariate(const CovariateDistribution& distribution, std::uint64_t seed, std::int64_t subject_id,
                      std::uint32_t purpose);

// The standard normal distribution function, Phi(x).
double standard_normal_cdf(double x);
// Its inverse, Phi^-1(p) for p in (0, 1) (-inf at 0, +inf at 1), by Wichura's algorithm AS 241
// (PPND16, Applied Statistics 37:477-484, 1988): relative error about 1e-16.
double standard_normal_quantile(double p);
// The value of a covariate's truncated normal at the same quantile as z has in N(0, 1):
// x = mu + sigma Phi^-1(Phi(a) + Phi(z) (Phi(b) - Phi(a))), a = (min - mu) / sigma,
// b = (max - mu) / sigma. Monotone in z, always within [min, max]; a fixed value is returned as is.
double truncated_normal_at(const CovariateDistribution& distribution, double z);

}  // namespace ketasim
