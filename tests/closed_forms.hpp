#pragma once
// Closed-form oracles of mammillary models: 1- and 2-compartment infusions and the effect
// compartment, written from the textbook solutions (sums of exponentials and superposition),
// independently of the engine's eigen-decomposition.

#include <cmath>
#include <vector>

#include "engine_fixtures.hpp"

namespace ketasim::testing {

// Disposition of a unit impulse into the central compartment: C(t) = sum_i A_i e^(-l_i t) / V1.
struct Disposition {
  std::vector<double> A, lambda;
  double V1 = 0.0, ke0 = 0.0;
};

inline Disposition disposition(const MammillaryEffectParameters& p) {
  Disposition d;
  d.V1 = p.V1_L;
  d.ke0 = p.ke0_per_h;
  if (p.peripheral_compartments == 0) {
    d.A = {1.0};
    d.lambda = {p.k10_per_h};
    return d;
  }
  const double sum = p.k10_per_h + p.k12_per_h + p.k21_per_h;
  const double product = p.k10_per_h * p.k21_per_h;
  const double alpha = 0.5 * (sum + std::sqrt(sum * sum - 4.0 * product));
  const double beta = product / alpha;
  d.A = {(alpha - p.k21_per_h) / (alpha - beta), (p.k21_per_h - beta) / (alpha - beta)};
  d.lambda = {alpha, beta};
  return d;
}

// Responses to a constant infusion of rate R started at 0, at time tau >= 0.
inline double plasma_infusion(const Disposition& d, double R, double tau) {
  double c = 0.0;
  for (std::size_t i = 0; i < d.A.size(); ++i) c += d.A[i] * -std::expm1(-d.lambda[i] * tau) / d.lambda[i];
  return R * c / d.V1;
}

inline double effect_infusion(const Disposition& d, double R, double tau) {
  double c = 0.0;
  for (std::size_t i = 0; i < d.A.size(); ++i)
    c += d.A[i] / (d.ke0 - d.lambda[i]) *
         (-std::expm1(-d.lambda[i] * tau) / d.lambda[i] - -std::expm1(-d.ke0 * tau) / d.ke0);
  return R * d.ke0 * c / d.V1;
}

inline double plasma_auc_infusion(const Disposition& d, double R, double tau) {
  double c = 0.0;
  for (std::size_t i = 0; i < d.A.size(); ++i)
    c += d.A[i] / d.lambda[i] * (tau - -std::expm1(-d.lambda[i] * tau) / d.lambda[i]);
  return R * c / d.V1;
}

// Superposition: each infusion is "on at its start" minus "on at its end".
template <class Response>
double superpose(const Response& response, const Disposition& d, const std::vector<Dose>& doses, double t_h) {
  double total = 0.0;
  for (const Dose& dose : doses) {
    const double start = ticks_to_hours(dose.start);
    const double end = ticks_to_hours(dose.start + dose.duration);
    const double R = dose.rate_mg_per_h();
    if (t_h > start) total += response(d, R, t_h - start);
    if (t_h > end) total -= response(d, R, t_h - end);
  }
  return total;
}

inline double plasma_at(const Disposition& d, const std::vector<Dose>& doses, double t) {
  return superpose(plasma_infusion, d, doses, t);
}
inline double effect_at(const Disposition& d, const std::vector<Dose>& doses, double t) {
  return superpose(effect_infusion, d, doses, t);
}

}  // namespace ketasim::testing
