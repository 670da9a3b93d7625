#include "ketasim/base/units.hpp"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

#include "ketasim/base/time.hpp"

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
    {"s", ticks_to_hours(kTicksPerSecond), dim::time},
    {"sec", ticks_to_hours(kTicksPerSecond), dim::time},
    {"min", ticks_to_hours(kTicksPerMinute), dim::time},
    {"h", 1.0, dim::time},
    {"hr", 1.0, dim::time},
    {"hour", 1.0, dim::time},
    {"hours", 1.0, dim::time},
    {"d", kHoursPerDay, dim::time},
    {"day", kHoursPerDay, dim::time},
    {"days", kHoursPerDay, dim::time},
    {"wk", kHoursPerWeek, dim::time},
    {"week", kHoursPerWeek, dim::time},
    {"weeks", kHoursPerWeek, dim::time},
    {"y", kHoursPerYear, dim::time},
    {"year", kHoursPerYear, dim::time},
    {"years", kHoursPerYear, dim::time},
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
      set_problem(problem,
                  "unknown unit '" + std::string(symbol) +
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

namespace {

// The accepted magnitudes of each QuantityKind, in base units (mg, kg, h). Wide enough for any
// person and any dose of any drug, narrow enough to catch a wrong unit or exponent.
const AcceptedRange kAcceptedRanges[] = {
    // 1 ng to 1 kg.
    {QuantityKind::drug_amount, "a drug amount", dim::drug_mass, 1e-6, 1e6, "mg", 1.0},
    // A gram per kilogram is beyond any dose of any drug.
    {QuantityKind::dose_per_weight, "a weight-based dose", dim::dose_per_weight, 1e-6, 1e3, "mg/kg", 1.0},
    // The heaviest people recorded weighed about 600 kg; cohort files refuse more than 500 kg too.
    {QuantityKind::body_weight, "a body weight", dim::body_mass, 0.0, 500.0, "kg", 1.0},
    {QuantityKind::age, "an age", dim::time, 0.0, 120.0 * kHoursPerYear, "y", kHoursPerYear},
    // Schedule times are int64 milliseconds (time.hpp); 100 years keeps sums of them far from
    // overflow.
    {QuantityKind::time, "a time", dim::time, 0.0, kMaxTimeHours, "y", kHoursPerYear},
};

std::string shortest(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

// The number at the start of `text`, as std::from_chars reads it (no leading '+').
struct LeadingNumber {
  enum class Status { ok, none, out_of_range, not_finite };
  double value = 0.0;
  std::size_t length = 0;  // characters read
  Status status = Status::none;
};

LeadingNumber leading_number(std::string_view text) {
  LeadingNumber number;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number.value);
  number.length = static_cast<std::size_t>(end - text.data());
  if (error == std::errc::result_out_of_range)
    number.status = LeadingNumber::Status::out_of_range;
  else if (error != std::errc() || number.length == 0)
    number.status = LeadingNumber::Status::none;
  else
    number.status = std::isfinite(number.value) ? LeadingNumber::Status::ok : LeadingNumber::Status::not_finite;
  return number;
}

std::string out_of_double_range(std::string_view number) {
  return "the number '" + std::string(number) +
         "' is out of the range of a double (magnitudes up to 1.8e308 and, apart from 0, down to 4.9e-324)";
}

}  // namespace

std::optional<double> parse_number(std::string_view text, std::string* problem) {
  const std::string_view written = trim(text);
  std::string_view digits = written;
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  const LeadingNumber number = leading_number(digits);
  const bool whole = number.length == digits.size() && !digits.empty();
  if (whole && number.status == LeadingNumber::Status::ok) return number.value;
  if (whole && number.status == LeadingNumber::Status::out_of_range) set_problem(problem, out_of_double_range(written));
  return std::nullopt;
}

std::optional<WrittenQuantity> parse_written_quantity(std::string_view text, std::string* problem) {
  const std::string_view trimmed = trim(text);
  if (trimmed.empty()) {
    set_problem(problem, "empty value");
    return std::nullopt;
  }
  const LeadingNumber number = leading_number(trimmed);
  switch (number.status) {
    case LeadingNumber::Status::ok:
      break;
    case LeadingNumber::Status::none:
      set_problem(problem, "'" + std::string(trimmed) + "' does not start with a number");
      return std::nullopt;
    case LeadingNumber::Status::out_of_range:
      set_problem(problem, out_of_double_range(trimmed.substr(0, number.length)));
      return std::nullopt;
    case LeadingNumber::Status::not_finite:
      set_problem(problem, "'" + std::string(trimmed) + "' is not a finite number");
      return std::nullopt;
  }
  const auto unit = parse_unit(trimmed.substr(number.length), problem);
  if (!unit) return std::nullopt;
  return WrittenQuantity{number.value, *unit};
}

std::optional<Quantity> parse_quantity(std::string_view text, std::string* problem) {
  const auto written = parse_written_quantity(text, problem);
  if (!written) return std::nullopt;
  const double value = written->base_value();
  if (!std::isfinite(value)) {
    set_problem(problem, "'" + std::string(trim(text)) +
                             "' is out of the range of a double once converted to ketasim's base units (mg, kg, L, h)");
    return std::nullopt;
  }
  return Quantity{value, written->unit.dimension};
}

const AcceptedRange& accepted_range(QuantityKind kind) {
  for (const AcceptedRange& range : kAcceptedRanges)
    if (range.kind == kind) return range;
  throw std::logic_error("no accepted range for a quantity kind");
}

bool in_accepted_range(QuantityKind kind, double base_value) {
  const AcceptedRange& range = accepted_range(kind);
  const double magnitude = std::fabs(base_value);
  return base_value == 0.0 || (magnitude >= range.min && magnitude <= range.max);
}

std::string outside_accepted_range(QuantityKind kind) {
  const AcceptedRange& range = accepted_range(kind);
  const std::string max = shortest(range.max / range.unit_scale) + " " + range.unit;
  const std::string accepted = range.min > 0.0 ? shortest(range.min / range.unit_scale) + " to " + max : "up to " + max;
  return "lies outside the accepted range of " + std::string(range.what) + ": " + accepted;
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
