#pragma once
// Built-in published models as data: every parameter with its value, unit, allometric exponent
// and source. The scenario loader validates overrides and variability against these cards; the
// engine turns a card plus a subject's covariates and random effects into individual parameters.

#include <string>
#include <string_view>
#include <vector>

#include "ketasim/units.hpp"

namespace ketasim {

// How a card writes its disposition parameters.
enum class PkParameterization {
  micro,      // V1 and first-order rate constants k10, k12, k21, k13, k31
  clearance,  // CL, V1, Q2, V2, Q3, V3
};

struct ParameterSpec {
  std::string name;                // as used in scenarios, e.g. "V1", "k10", "ec50_s"
  double value = 0.0;              // typical value for a subject of the reference weight, base units
  std::string unit;                // display unit, e.g. "L", "1/h", "ng/mL"
  Dimension dimension;             // checked against overrides
  double allometric_exponent = 0;  // P = P_ref * (WT / WT_ref)^exponent
  bool positive = true;            // must be > 0 (else >= 0)
  double upper_bound = 0.0;        // > 0: must not exceed it (e.g. a fraction <= 1)
  bool assumed = false;            // not a published value
  std::string description;
  std::string source;
};

struct ModelCard {
  std::string name;
  std::string title;
  std::string citation;
  std::string sampling;  // "venous" or "arterial"
  PkParameterization parameterization = PkParameterization::micro;
  int peripheral_compartments = 1;  // 0, 1 or 2
  double reference_weight_kg = 70.0;
  std::vector<ParameterSpec> parameters;
  std::string notes;

  // Index of a parameter by name, or -1.
  int index_of(std::string_view parameter) const;
};

const std::vector<ModelCard>& builtin_models();
// nullptr when no card has that name.
const ModelCard* find_builtin_model(std::string_view name);

// Value of `value_in_base_units` expressed in the card's display unit.
double to_display_unit(const ParameterSpec& spec, double value_in_base_units);

}  // namespace ketasim
