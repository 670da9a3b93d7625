#pragma once
// Mammillary PK (central + 0-2 peripheral compartments) with an effect compartment and a sigmoid
// Emax dissociation link. Doses are not part of the model: the engine passes the infusion rate
// of the current segment and applies boluses as jumps on the central amount.

#include <array>
#include <cmath>
#include <span>

#include <Eigen/Core>

#include "ketasim/model_catalog.hpp"

namespace ketasim {

struct MammillaryEffectParameters {
  int peripheral_compartments = 1;  // 0, 1 or 2
  double V1_L = 0.0;
  double k10_per_h = 0.0;
  double k12_per_h = 0.0;
  double k21_per_h = 0.0;
  double k13_per_h = 0.0;
  double k31_per_h = 0.0;
  double ke0_per_h = 0.0;
  double s_fraction = 0.5;       // share of the concentration that drives the effect
  double ec50_s_mg_per_L = 0.0;  // of the driving enantiomer
  double emax = 0.0;             // score points
  double hill = 1.0;
};

// Individual card values (base units, card order) -> model parameters.
MammillaryEffectParameters to_model_parameters(const ModelCard& card, std::span<const double> values);

// A linear time-invariant system x' = A x + input * rate, with the rows that read outputs.
struct LinearSystem {
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0, 4, 4>;
  using Vector = Eigen::Matrix<double, Eigen::Dynamic, 1, 0, 4, 1>;
  using RowVector = Eigen::Matrix<double, 1, Eigen::Dynamic, Eigen::RowMajor, 1, 4>;
  Matrix A;
  Vector input;         // d x / d t per unit infusion rate (mg/h) into the central compartment
  RowVector plasma;     // plasma concentration (mg/L) = plasma * x
  RowVector effect;     // effect-site concentration (mg/L) = effect * x
};

class MammillaryEffectModel {
 public:
  static constexpr int kMaxStates = 4;
  using State = std::array<double, kMaxStates>;
  // Named state indices. The effect site comes after the peripheral compartments in use.
  static constexpr int kCentral = 0;
  static constexpr int kPeripheral2 = 1;
  static constexpr int kPeripheral3 = 2;

  explicit MammillaryEffectModel(const MammillaryEffectParameters& parameters);

  int state_count() const { return 2 + p_.peripheral_compartments; }
  int effect_state() const { return 1 + p_.peripheral_compartments; }
  const MammillaryEffectParameters& parameters() const { return p_; }

  // The model equations as in the papers; amounts in mg, effect site in mg/L, time in h.
  void rhs(const State& x, State& dxdt, double infusion_rate_mg_per_h) const;
  LinearSystem linear_system() const;

  double plasma_concentration(const State& x) const { return x[kCentral] / p_.V1_L; }
  double effect_concentration(const State& x) const { return x[static_cast<std::size_t>(effect_state())]; }
  double amount_in_body_mg(const State& x) const;
  double clearance_L_per_h() const { return p_.k10_per_h * p_.V1_L; }

  // CADSS-like score from the effect-site concentration of the racemate (mg/L).
  double dissociation(double effect_mg_per_L) const {
    const double drive = p_.s_fraction * effect_mg_per_L;
    if (!(drive > 0.0)) return 0.0;
    const double ratio = drive / p_.ec50_s_mg_per_L;
    // Common Hill coefficients without pow(): this runs at every output time point.
    double powered;
    if (p_.hill == 1.0)
      powered = ratio;
    else if (p_.hill == 1.5)
      powered = ratio * std::sqrt(ratio);
    else if (p_.hill == 2.0)
      powered = ratio * ratio;
    else
      powered = std::pow(ratio, p_.hill);
    return p_.emax * powered / (1.0 + powered);
  }
  // The effect-site concentration at which the score equals `score`; +inf if never reached.
  double effect_concentration_for_score(double score) const;

 private:
  MammillaryEffectParameters p_;
};

}  // namespace ketasim
