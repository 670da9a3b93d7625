#include "ketasim/model.hpp"

#include <cmath>
#include <limits>
#include <string>

#include "ketasim/errors.hpp"

namespace ketasim {

namespace {
double value_of(const ModelCard& card, std::span<const double> values, const char* name, double fallback) {
  const int index = card.index_of(name);
  return index < 0 ? fallback : values[static_cast<std::size_t>(index)];
}
}  // namespace

MammillaryEffectParameters to_model_parameters(const ModelCard& card, std::span<const double> values) {
  MammillaryEffectParameters p;
  p.peripheral_compartments = card.peripheral_compartments;
  p.V1_L = value_of(card, values, "V1", 0.0);
  if (card.parameterization == PkParameterization::micro) {
    p.k10_per_h = value_of(card, values, "k10", 0.0);
    p.k12_per_h = value_of(card, values, "k12", 0.0);
    p.k21_per_h = value_of(card, values, "k21", 0.0);
    p.k13_per_h = value_of(card, values, "k13", 0.0);
    p.k31_per_h = value_of(card, values, "k31", 0.0);
  } else {
    const double cl = value_of(card, values, "CL", 0.0);
    const double q2 = value_of(card, values, "Q2", 0.0);
    const double v2 = value_of(card, values, "V2", 1.0);
    const double q3 = value_of(card, values, "Q3", 0.0);
    const double v3 = value_of(card, values, "V3", 1.0);
    p.k10_per_h = cl / p.V1_L;
    p.k12_per_h = q2 / p.V1_L;
    p.k21_per_h = q2 / v2;
    p.k13_per_h = q3 / p.V1_L;
    p.k31_per_h = q3 / v3;
  }
  p.ke0_per_h = value_of(card, values, "ke0", 0.0);
  p.s_fraction = value_of(card, values, "s_fraction", 1.0);
  p.ec50_s_mg_per_L = value_of(card, values, "ec50_s", 1.0);
  p.emax = value_of(card, values, "emax", 0.0);
  p.hill = value_of(card, values, "hill", 1.0);
  if (!(p.V1_L > 0.0) || !(p.k10_per_h > 0.0) || !(p.ke0_per_h > 0.0) || !(p.ec50_s_mg_per_L > 0.0) ||
      !(p.hill > 0.0))
    throw ModelParameterError("model " + card.name + ": V1, k10, ke0, ec50_s and hill must be positive");
  return p;
}

MammillaryEffectModel::MammillaryEffectModel(const MammillaryEffectParameters& parameters) : p_(parameters) {
  if (p_.peripheral_compartments < 0 || p_.peripheral_compartments > 2)
    throw ModelParameterError("a mammillary model has 0, 1 or 2 peripheral compartments, not " +
                              std::to_string(p_.peripheral_compartments));
  if (p_.peripheral_compartments < 2) p_.k13_per_h = p_.k31_per_h = 0.0;
  if (p_.peripheral_compartments < 1) p_.k12_per_h = p_.k21_per_h = 0.0;
}

void MammillaryEffectModel::rhs(const State& x, State& dxdt, double infusion_rate_mg_per_h) const {
  const double V1 = p_.V1_L;
  const double k10 = p_.k10_per_h, k12 = p_.k12_per_h, k21 = p_.k21_per_h;
  const double k13 = p_.k13_per_h, k31 = p_.k31_per_h, ke0 = p_.ke0_per_h;
  const double A1 = x[kCentral];
  const double A2 = p_.peripheral_compartments >= 1 ? x[kPeripheral2] : 0.0;
  const double A3 = p_.peripheral_compartments >= 2 ? x[kPeripheral3] : 0.0;
  const auto effect = static_cast<std::size_t>(effect_state());
  const double Ce = x[effect];

  dxdt.fill(0.0);
  dxdt[kCentral] = infusion_rate_mg_per_h - (k10 + k12 + k13) * A1 + k21 * A2 + k31 * A3;
  if (p_.peripheral_compartments >= 1) dxdt[kPeripheral2] = k12 * A1 - k21 * A2;
  if (p_.peripheral_compartments >= 2) dxdt[kPeripheral3] = k13 * A1 - k31 * A3;
  dxdt[effect] = ke0 * (A1 / V1 - Ce);
}

LinearSystem MammillaryEffectModel::linear_system() const {
  const Eigen::Index n = state_count();
  const Eigen::Index effect = effect_state();
  LinearSystem system;
  system.A = LinearSystem::Matrix::Zero(n, n);
  system.input = LinearSystem::Vector::Zero(n);
  system.plasma = LinearSystem::RowVector::Zero(n);
  system.effect = LinearSystem::RowVector::Zero(n);

  const double k_out = p_.k10_per_h + p_.k12_per_h + p_.k13_per_h;
  system.A(kCentral, kCentral) = -k_out;
  if (p_.peripheral_compartments >= 1) {
    system.A(kCentral, kPeripheral2) = p_.k21_per_h;
    system.A(kPeripheral2, kCentral) = p_.k12_per_h;
    system.A(kPeripheral2, kPeripheral2) = -p_.k21_per_h;
  }
  if (p_.peripheral_compartments >= 2) {
    system.A(kCentral, kPeripheral3) = p_.k31_per_h;
    system.A(kPeripheral3, kCentral) = p_.k13_per_h;
    system.A(kPeripheral3, kPeripheral3) = -p_.k31_per_h;
  }
  system.A(effect, kCentral) = p_.ke0_per_h / p_.V1_L;
  system.A(effect, effect) = -p_.ke0_per_h;
  system.input(kCentral) = 1.0;
  system.plasma(kCentral) = 1.0 / p_.V1_L;
  system.effect(effect) = 1.0;
  return system;
}

double MammillaryEffectModel::amount_in_body_mg(const State& x) const {
  double amount = x[kCentral];
  if (p_.peripheral_compartments >= 1) amount += x[kPeripheral2];
  if (p_.peripheral_compartments >= 2) amount += x[kPeripheral3];
  return amount;
}

double MammillaryEffectModel::effect_concentration_for_score(double score) const {
  if (score <= 0.0) return 0.0;
  if (score >= p_.emax || p_.s_fraction <= 0.0) return std::numeric_limits<double>::infinity();
  const double powered = score / (p_.emax - score);
  return p_.ec50_s_mg_per_L * std::pow(powered, 1.0 / p_.hill) / p_.s_fraction;
}

}  // namespace ketasim
