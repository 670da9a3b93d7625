#pragma once
// Quantities with units. Every number in a scenario carries its unit; this is where a text such
// as "0.5 mg/kg" or "40 min" becomes a value in ketasim's base units and a dimension to check.
//
// Base units: drug mass mg, body mass kg, volume L, time h (ages too: 1 y = 365.25 d), blood
// pressure mmHg, heart beats (heart rate in beats/h internally; "bpm" is beats per minute). "kg" always means body mass
// (weight), so "mg/kg" is a weight-based dose and cannot be mistaken for a duration.
// Concentrations are therefore mg/L internally (1 mg/L = 1000 ng/mL).

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace ketasim {

struct Dimension {
  // Exponents of drug mass, body mass, volume, time, pressure, heart beats.
  std::array<int, 6> exponents{0, 0, 0, 0, 0, 0};

  friend bool operator==(const Dimension&, const Dimension&) = default;
  Dimension operator*(const Dimension& other) const;
  Dimension operator/(const Dimension& other) const;
};

namespace dim {
inline constexpr Dimension dimensionless{{0, 0, 0, 0, 0, 0}};
inline constexpr Dimension drug_mass{{1, 0, 0, 0, 0, 0}};            // mg
inline constexpr Dimension body_mass{{0, 1, 0, 0, 0, 0}};            // kg
inline constexpr Dimension volume{{0, 0, 1, 0, 0, 0}};               // L
inline constexpr Dimension time{{0, 0, 0, 1, 0, 0}};                 // h
inline constexpr Dimension rate_constant{{0, 0, 0, -1, 0, 0}};       // 1/h
inline constexpr Dimension concentration{{1, 0, -1, 0, 0, 0}};       // mg/L
inline constexpr Dimension clearance{{0, 0, 1, -1, 0, 0}};           // L/h
inline constexpr Dimension dose_per_weight{{1, -1, 0, 0, 0, 0}};     // mg/kg
inline constexpr Dimension volume_per_weight{{0, -1, 1, 0, 0, 0}};   // L/kg
inline constexpr Dimension infusion_rate{{1, 0, 0, -1, 0, 0}};       // mg/h
inline constexpr Dimension exposure{{1, 0, -1, 1, 0, 0}};            // mg*h/L (AUC)
inline constexpr Dimension pressure{{0, 0, 0, 0, 1, 0}};             // mmHg
inline constexpr Dimension heart_rate{{0, 0, 0, -1, 0, 1}};          // beats/h (shown as bpm)
}  // namespace dim

// Human-readable name of a dimension with an example unit, e.g. "a duration (e.g. 40 min)".
std::string describe(const Dimension& dimension);

struct Quantity {
  double value = 0.0;  // in base units
  Dimension dimension;
};

// Parses "<number> <unit>" (the space is optional; "%" and dimensionless numbers allowed).
// Units: mg g ug µg ng (drug mass); kg (body mass); L mL dL (volume); s min h d day(s) week(s)
// wk y year(s) (time); mmHg; beat(s) and bpm; products and quotients with '/' and '*' and '1/h'. Returns nullopt and fills
// `problem` with a one-line explanation on failure.
std::optional<Quantity> parse_quantity(std::string_view text, std::string* problem = nullptr);

// Parses a unit expression alone ("ng/mL"); scale is the factor to base units.
struct Unit {
  double scale = 1.0;
  Dimension dimension;
};
std::optional<Unit> parse_unit(std::string_view text, std::string* problem = nullptr);

// The values a model parameter may take, by dimension, in base units. Wide enough for every
// published model and for deliberately extreme ones (an effect site with ke0 = 1e7 1/h standing in
// for instant equilibration), narrow enough that nothing downstream overflows or divides by
// almost nothing: a value outside is a unit slip ("1e-300 L", "150 mg*h/L" meant as ng*h/mL by a
// factor of a million) or a typo, never a model. The limits of rate constants and of durations
// (half-lives) are each other's reciprocals. docs/scenario.md lists them in display units.
struct ParameterRange {
  const char* what;  // "a volume"
  double lowest;     // the smallest value above 0 (a parameter that may be 0 may also be exactly 0)
  double highest;
};
// nullopt for a dimension no model parameter has.
std::optional<ParameterRange> plausible_parameter_range(const Dimension& dimension);

}  // namespace ketasim
