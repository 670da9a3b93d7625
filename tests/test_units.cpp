// Quantities with units: the text a scenario author writes becomes base units (mg, kg, L, h) and a
// dimension the loader can check.

#include <catch2/catch.hpp>
#include <string>

#include "ketasim/base/time.hpp"
#include "ketasim/base/units.hpp"

using ketasim::Dimension;
using ketasim::parse_quantity;
using ketasim::parse_unit;
namespace dim = ketasim::dim;

namespace {

// The parsed value of a text that must parse, with its dimension checked.
double value_of(const std::string& text, const Dimension& expected) {
  std::string problem;
  const auto quantity = parse_quantity(text, &problem);
  INFO(text << ": " << problem);
  REQUIRE(quantity.has_value());
  CHECK(quantity->dimension == expected);
  return quantity->value;
}

std::string problem_with(const std::string& text) {
  std::string problem;
  const auto quantity = parse_quantity(text, &problem);
  INFO(text);
  CHECK_FALSE(quantity.has_value());
  return problem;
}

}  // namespace

TEST_CASE("a weight-based dose is drug mass per body mass, not a duration", "[units]") {
  CHECK(value_of("0.5 mg/kg", dim::dose_per_weight) == Approx(0.5));
  CHECK(dim::dose_per_weight == dim::drug_mass / dim::body_mass);
  CHECK_FALSE(dim::dose_per_weight == dim::time);
}

TEST_CASE("drug amounts and body weights convert to mg and kg", "[units]") {
  CHECK(value_of("35 mg", dim::drug_mass) == Approx(35.0));
  CHECK(value_of("0.035 g", dim::drug_mass) == Approx(35.0));
  CHECK(value_of("500 ug", dim::drug_mass) == Approx(0.5));
  CHECK(value_of("70 kg", dim::body_mass) == Approx(70.0));
  CHECK(value_of("70kg", dim::body_mass) == Approx(70.0));  // the space is optional
}

TEST_CASE("ng/mL is 1e-3 mg/L", "[units]") {
  const auto unit = parse_unit("ng/mL");
  REQUIRE(unit.has_value());
  CHECK(unit->scale == Approx(1e-3));
  CHECK(unit->dimension == dim::concentration);
  CHECK(value_of("121 ng/mL", dim::concentration) == Approx(0.121));
}

TEST_CASE("rate constants: 1/h and /min", "[units]") {
  CHECK(value_of("0.65 1/h", dim::rate_constant) == Approx(0.65));
  const auto per_minute = parse_unit("/min");
  REQUIRE(per_minute.has_value());
  CHECK(per_minute->scale == Approx(60.0));
  CHECK(per_minute->dimension == dim::rate_constant);
  CHECK(value_of("0.0109 /min", dim::rate_constant) == Approx(0.654));
  CHECK(value_of("80 L/h", dim::clearance) == Approx(80.0));
}

TEST_CASE("times convert to hours", "[units]") {
  CHECK(value_of("40 min", dim::time) == Approx(2.0 / 3.0));
  CHECK(value_of("90 s", dim::time) == Approx(0.025));
  CHECK(value_of("1.5 d", dim::time) == Approx(36.0));
  CHECK(value_of("3 weeks", dim::time) == Approx(504.0));
}

// The time units are time.hpp's constants, bit for bit the literals they replaced: a unit's scale
// multiplies every time a scenario writes, so a change of one ulp would change outputs.
TEST_CASE("the time units are the time constants, exactly", "[units]") {
  const auto scale = [](const char* unit) {
    const auto parsed = parse_unit(unit);
    REQUIRE(parsed.has_value());
    return parsed->scale;
  };
  CHECK(scale("s") == 1.0 / 3600.0);
  CHECK(scale("min") == 1.0 / 60.0);
  CHECK(scale("d") == ketasim::kHoursPerDay);
  CHECK(scale("week") == ketasim::kHoursPerWeek);
  CHECK(scale("y") == ketasim::kHoursPerYear);
  CHECK(ketasim::ticks_to_hours(ketasim::kTicksPerSecond) == 1.0 / 3600.0);
  CHECK(ketasim::ticks_to_hours(ketasim::kTicksPerMinute) == 1.0 / 60.0);
}

TEST_CASE("a percentage is a dimensionless fraction, a plain number is dimensionless", "[units]") {
  CHECK(value_of("30%", dim::dimensionless) == Approx(0.3));
  CHECK(value_of("30 %", dim::dimensionless) == Approx(0.3));
  CHECK(value_of("1.5", dim::dimensionless) == Approx(1.5));
  CHECK(value_of("1e-8", dim::dimensionless) == Approx(1e-8));
}

TEST_CASE("unknown units and garbage are refused with a reason", "[units]") {
  CHECK_THAT(problem_with("5 furlongs"), Catch::Contains("unknown unit 'furlongs'"));
  CHECK_THAT(problem_with("0.5 mg/lb"), Catch::Contains("unknown unit 'lb'"));
  CHECK_THAT(problem_with("forty min"), Catch::Contains("does not start with a number"));
  CHECK_THAT(problem_with(""), Catch::Contains("empty"));
  CHECK_THAT(problem_with("5 mg/"), Catch::Contains("ends with an operator"));
  CHECK_FALSE(parse_quantity("inf h").has_value());
  CHECK_FALSE(parse_unit("parsec").has_value());
}

TEST_CASE("describe names a dimension with an example unit", "[units]") {
  CHECK(ketasim::describe(dim::time) == "a duration (e.g. 40 min)");
  CHECK(ketasim::describe(dim::dose_per_weight) == "a weight-based dose (e.g. 0.5 mg/kg)");
  CHECK(ketasim::describe(dim::drug_mass * dim::time) == "a quantity in mg*h");
}
