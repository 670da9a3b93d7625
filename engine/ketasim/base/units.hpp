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
inline constexpr Dimension drug_mass{{1, 0, 0, 0, 0, 0}};           // mg
inline constexpr Dimension body_mass{{0, 1, 0, 0, 0, 0}};           // kg
inline constexpr Dimension volume{{0, 0, 1, 0, 0, 0}};              // L
inline constexpr Dimension time{{0, 0, 0, 1, 0, 0}};                // h
inline constexpr Dimension rate_constant{{0, 0, 0, -1, 0, 0}};      // 1/h
inline constexpr Dimension concentration{{1, 0, -1, 0, 0, 0}};      // mg/L
inline constexpr Dimension clearance{{0, 0, 1, -1, 0, 0}};          // L/h
inline constexpr Dimension dose_per_weight{{1, -1, 0, 0, 0, 0}};    // mg/kg
inline constexpr Dimension volume_per_weight{{0, -1, 1, 0, 0, 0}};  // L/kg
inline constexpr Dimension infusion_rate{{1, 0, 0, -1, 0, 0}};      // mg/h
inline constexpr Dimension exposure{{1, 0, -1, 1, 0, 0}};           // mg*h/L (AUC)
inline constexpr Dimension pressure{{0, 0, 0, 0, 1, 0}};            // mmHg
inline constexpr Dimension heart_rate{{0, 0, 0, -1, 0, 1}};         // beats/h (shown as bpm)
}  // namespace dim

// Human-readable name of a dimension with an example unit, e.g. "a duration (e.g. 40 min)".
std::string describe(const Dimension& dimension);

struct Quantity {
  double value = 0.0;  // in base units
  Dimension dimension;
};

// A finite number written in the C locale ("35", "+0.5", "-1e-8") occupying all of `text`
// (spaces around it are ignored), or nullopt. `problem` is filled only for a number a double
// cannot hold ("1e309": magnitudes up to 1.8e308 and, apart from 0, down to 4.9e-324), so that
// callers say so instead of "not a number"; it is left alone for text that is not a number, inf
// or nan, for which each caller has its own words.
std::optional<double> parse_number(std::string_view text, std::string* problem = nullptr);

// Parses a unit expression alone ("ng/mL"); scale is the factor to base units.
struct Unit {
  double scale = 1.0;
  Dimension dimension;
};
std::optional<Unit> parse_unit(std::string_view text, std::string* problem = nullptr);

// "<number> <unit>" as written, before conversion: the number is a finite double, but the value
// in base units (number * unit.scale) can overflow, e.g. "1e308 g" is 1e311 mg.
struct WrittenQuantity {
  double number = 0.0;
  Unit unit;
  double base_value() const { return number * unit.scale; }
};
std::optional<WrittenQuantity> parse_written_quantity(std::string_view text, std::string* problem = nullptr);

// Parses "<number> <unit>" (the space is optional; "%" and dimensionless numbers allowed).
// Units: mg g ug µg ng (drug mass); kg (body mass); L mL dL (volume); s min h d day(s) week(s)
// wk y year(s) (time); mmHg; beat(s) and bpm; products and quotients with '/' and '*' and '1/h'. Returns nullopt and
// fills `problem` with a one-line explanation on failure, also when the value overflows a double once converted to base
// units.
std::optional<Quantity> parse_quantity(std::string_view text, std::string* problem = nullptr);

// Kinds of quantities with a range of accepted values: a value outside it is a mistake (a unit
// typed wrong, an exponent too many) or breaks the arithmetic (1e308 g is infinite in mg), and is
// refused where it is read. Every such range is in the one table of units.cpp.
enum class QuantityKind {
  drug_amount,      // a dose or a dose cap (mg)
  dose_per_weight,  // a weight-based dose (mg/kg)
  body_weight,      // a weight, its spread or bounds (kg)
  age,              // an age, its spread or bounds (kept in h like every time)
  time,             // a time or a duration in a schedule, grid or window (h)
};

struct AcceptedRange {
  QuantityKind kind;
  const char* what;     // "a drug amount"
  Dimension dimension;  // of the kind's values
  double min = 0.0;     // least magnitude in base units, for values other than 0; 0: no lower bound
  double max = 0.0;     // greatest magnitude in base units
  const char* unit;     // the unit in which the range is shown
  double unit_scale;    // base units per shown unit
};

const AcceptedRange& accepted_range(QuantityKind kind);

// True for 0 and for magnitudes in [min, max]. Signs are checked by the reader of each value.
bool in_accepted_range(QuantityKind kind, double base_value);

// "lies outside the accepted range of a drug amount: 1e-06 to 1e+06 mg": the end of a message
// that starts with the value as written.
std::string outside_accepted_range(QuantityKind kind);
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
