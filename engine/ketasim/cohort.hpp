#pragma once
// Scenario cohort -> one subject's covariates and individual parameters.

#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "ketasim/model_catalog.hpp"
#include "ketasim/scenario.hpp"

namespace ketasim {

struct Subject {
  std::int64_t id = 0;
  double weight_kg = 0.0;
  std::vector<double> parameters;  // individual values in card order, base units
};

// Everything about the cohort that is the same for every subject, computed once.
class CohortSampler {
 public:
  CohortSampler(const Scenario& scenario, const ModelCard& card);

  Subject draw(std::int64_t subject_id) const;
  const ModelCard& card() const { return card_; }
  // Typical values (card plus overrides) for the reference weight, base units.
  const std::vector<double>& typical_parameters() const { return typical_; }

 private:
  double draw_weight(std::int64_t subject_id) const;

  const ModelCard& card_;
  std::uint64_t seed_;
  WeightDistribution weight_;
  std::vector<double> typical_;
  std::vector<int> eta_parameter_index_;  // card index of each variable parameter
  Eigen::MatrixXd eta_factor_;            // lower-triangular L with L L^T = Omega
};

}  // namespace ketasim
