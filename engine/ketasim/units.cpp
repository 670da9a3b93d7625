#include "ketasim/units.hpp"

#include <cctype>
#include <charconv>
#include <cmath>
#include <string>
#include <utility>

namespace ketasim {

Dimension Dimension::operator*(const Dimension& other) const {
  Dimension result;
  for (std::size_t i = 0; i < exponents.size(); ++i) result.exponents[i] = exponents[i] + other.exponents[i];
  return result;
}

Dimension Dimension::operator/(const Dimension& other) const {
  Dimension result;
  for (std::size_t i = 0; i < exponents.size(); ++i) result.exponents[i] = exponents[i] - other.exponents[i];
  return result;
}

std::string describe(const Dimension& dimension) {
  struct Named {
    Dimension dimension;
    const char* text;
  };
  static const Named known[] = {
      {dim::dimensionless, "a plain number"},
      {dim::drug_mass, "a drug amount (e.g. 35 mg)"},
      {dim::body_mass, "a body weight (e.g. 70 kg)"},
      {dim::volume, "a volume (e.g. 120 L)"},
      {dim::time, "a duration (e.g. 40 min)"},
      {dim::rate_constant, "a rate constant (e.g. 0.65 1/h)"},
      {dim::concentration, "a concentration (e.g. 121 ng/mL)"},
      {dim::clearance, "a clearance (e.g. 80 L/h)"},
      {dim::dose_per_weight, "a weight-based dose (e.g. 0.5 mg/kg)"},
      {dim::volume_per_weight, "a volume per body weight (e.g. 1.75 L/kg)"},
      {dim::infusion_rate, "an infusion rate (e.g. 52.5 mg/h)"},
      {dim::exposure, "an exposure (e.g. 150 ng*h/mL)"},
      {dim::pressure, "a blood pressure (e.g. 12 mmHg)"},
      {dim::heart_rate, "a heart rate (e.g. 8 bpm)"},
  };
  for (const auto& entry : known)
    if (entry.dimension == dimension) return entry.text;
  static const char* base[] = {"mg", "kg", "L", "h", "mmHg", "beat"};
  std::string text = "a quantity in ";
  bool first = true;
  for (std::size_t i = 0; i < dimension.exponents.size(); ++i) {
    const int e = dimension.exponents[i];
    if (e == 0) continue;
    if (!first) text += '*';
    text += base[i];
    if (e != 1) text += '^' + std::to_string(e);
    first = false;
  }
  return text;
}

namespace {

struct AtomicUnit {
  const char* symbol;
  double scale;
  Dimension dimension;
};

// Every unit a scenario may use, with its factor to ketasim's base units (mg, kg, L, h).
constexpr AtomicUnit kAtomicUnits[] = {
    {"mg", 1.0, dim::drug_mass},
    {"g", 1e3, dim::drug_mass},
    {"ug", 1e-3, dim::drug_mass},
    {"\xC2\xB5g", 1e-3, dim::drug_mass},  // µg
    {"mcg", 1e-3, dim::drug_mass},
    {"ng", 1e-6, dim::drug_mass},
    {"kg", 1.0, dim::body_mass},
    {"L", 1.0, dim::volume},
    {"l", 1.0, dim::volume},
    {"dL", 0.1, dim::volume},
    {"mL", 1e-3, dim::volume},
    {"ml", 1e-3, dim::volume},
    {"s", 1.0 / 3600.0, dim::time},
    {"sec", 1.0 / 3600.0, dim::time},
    {"min", 1.0 / 60.0, dim::time},
    {"h", 1.0, dim::time},
    {"hr", 1.0, dim::time},
    {"hour", 1.0, dim::time},
    {"hours", 1.0, dim::time},
    {"d", 24.0, dim::time},
    {"day", 24.0, dim::time},
    {"days", 24.0, dim::time},
    {"wk", 168.0, dim::time},
    {"week", 168.0, dim::time},
    {"weeks", 168.0, dim::time},
    {"y", 8766.0, dim::time},  // 365.25 d
    {"year", 8766.0, dim::time},
    {"years", 8766.0, dim::time},
    {"mmHg", 1.0, dim::pressure},
    {"beat", 1.0, Dimension{{0, 0, 0, 0, 0, 1}}},
    {"beats", 1.0, Dimension{{0, 0, 0, 0, 0, 1}}},
    {"bpm", 60.0, dim::heart_rate},
    {"%", 0.01, dim::dimensionless},
};

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

const AtomicUnit* find_atomic(std::string_view symbol) {
  for (const auto& unit : kAtomicUnits)
    if (symbol == unit.symbol) return &unit;
  return nullptr;
}

void set_problem(std::string* problem, std::string text) {
  if (problem) *problem = std::move(text);
}

}  // namespace

std::optional<Unit> parse_unit(std::string_view text, std::string* problem) {
  text = trim(text);
  Unit result;
  if (text.empty()) return result;
  // A leading "1/" or "/" means a reciprocal ("1/h", "/min").
  if (text.substr(0, 2) == "1/") text.remove_prefix(1);
  bool dividing = false;
  bool expect_factor = true;
  std::size_t position = 0;
  if (!text.empty() && text.front() == '/') {
    dividing = true;
    position = 1;
  }
  while (position < text.size()) {
    std::size_t end = position;
    while (end < text.size() && text[end] != '/' && text[end] != '*') ++end;
    const std::string_view symbol = trim(text.substr(position, end - position));
    const AtomicUnit* unit = find_atomic(symbol);
    if (!unit) {
      set_problem(problem, "unknown unit '" + std::string(symbol) +
                               "' (known: mg g ug ng kg L dL mL s min h d week y mmHg bpm %, combined with '/' or '*')");
      return std::nullopt;
    }
    if (dividing) {
      result.scale /= unit->scale;
      result.dimension = result.dimension / unit->dimension;
    } else {
      result.scale *= unit->scale;
      result.dimension = result.dimension * unit->dimension;
    }
    expect_factor = false;
    if (end == text.size()) break;
    dividing = text[end] == '/';
    position = end + 1;
    expect_factor = true;
  }
  if (expect_factor) {
    set_problem(problem, "the unit '" + std::string(text) + "' ends with an operator");
    return std::nullopt;
  }
  return result;
}

std::optional<Quantity> parse_quantity(std::string_view text, std::string* problem) {
  const std::string_view trimmed = trim(text);
  if (trimmed.empty()) {
    set_problem(problem, "empty value");
    return std::nullopt;
  }
  double number = 0.0;
  const char* begin = trimmed.data();
  const char* end = trimmed.data() + trimmed.size();
  const auto [after_number, error] = std::from_chars(begin, end, number);
  if (error != std::errc() || after_number == begin) {
    set_problem(problem, "'" + std::string(trimmed) + "' does not start with a number");
    return std::nullopt;
  }
  if (!std::isfinite(number)) {
    set_problem(problem, "'" + std::string(trimmed) + "' is not a finite number");
    return std::nullopt;
  }
  const std::string_view unit_text = trimmed.substr(static_cast<std::size_t>(after_number - begin));
  const auto unit = parse_unit(unit_text, problem);
  if (!unit) return std::nullopt;
  return Quantity{number * unit->scale, unit->dimension};
}

std::optional<ParameterRange> plausible_parameter_range(const Dimension& dimension) {
  static const std::pair<Dimension, ParameterRange> ranges[] = {
      {dim::volume, {"a volume", 1e-6, 1e6}},                // 1 uL to 1000 m3
      {dim::clearance, {"a clearance", 1e-6, 1e6}},          // L/h
      {dim::rate_constant, {"a rate constant", 1e-6, 1e8}},  // half-lives from 79 years down to 25 us
      {dim::time, {"a duration", 1e-8, 1e6}},                // 36 us to 114 years
      {dim::concentration, {"a concentration", 1e-9, 1e3}},  // 1e-6 to 1e6 ng/mL
      {dim::exposure, {"an exposure", 1e-9, 1e6}},           // 1e-6 to 1e9 ng*h/mL
      {dim::pressure, {"a blood pressure", 1e-6, 1e3}},      // mmHg
      {dim::heart_rate, {"a heart rate", 6e-5, 6e4}},        // 1e-6 to 1000 bpm
      {dim::dimensionless, {"a plain number", 0.0, 1e4}},    // fractions, Hill coefficients, score points
  };
  for (const auto& [known, range] : ranges)
    if (known == dimension) return range;
  return std::nullopt;
}

}  // namespace ketasim
