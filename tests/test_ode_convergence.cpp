// The ODE path (OdePropagator: Boost.Odeint's Dormand-Prince 5(4)) converges as the method
// promises, against the closed form of a 2-compartment infusion (closed_forms.hpp):
// - with fixed steps, halving the step divides the error by about 2^5 (observed order 5: the
//   stepper propagates the fifth-order solution);
// - with error control, the global error falls in proportion to the tolerance (a decade of
//   tolerance, about a decade of error), and stays within a small multiple of it.
// A wrong stage coefficient, an input added at the wrong time within a step or a lower-order
// stepper passes a loose comparison with the closed form but not these.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <utility>
#include <vector>

#include "closed_forms.hpp"
#include "engine_fixtures.hpp"
#include "ketasim/solve/ode_propagator.hpp"

namespace ketasim {
namespace {

using testing::MammillaryEffectParameters;

constexpr double kDoseMg = 35.0;
constexpr double kInfusionH = 40.0 / 60.0;
constexpr double kRateMgPerH = kDoseMg / kInfusionH;

// The state that the infusion enters: the central compartment.
Eigen::Index central_state(const OdePropagator& propagator) {
  Eigen::Index central = 0;
  propagator.channel(0).cwiseAbs().maxCoeff(&central);
  return central;
}

// The amount in the central compartment at the end of the 40-min infusion and 2 h later, from
// `advance` called over pieces of `piece_h` hours (with a tolerance that accepts any step, one
// advance is one Dormand-Prince step of that length).
std::vector<double> central_amounts(const OdePropagator& propagator, double piece_h) {
  const OdePropagator::Input infusing = propagator.input(kRateMgPerH * propagator.channel(0));
  const OdePropagator::Input stopped = propagator.input(StateVector::Zero(infusing.size()));
  const Eigen::Index central = central_state(propagator);
  OdePropagator::State state = propagator.initial_state();
  std::vector<double> amounts;
  for (const auto& [duration_h, input] : {std::pair{kInfusionH, infusing}, std::pair{2.0, stopped}}) {
    const auto pieces = static_cast<int>(std::lround(duration_h / piece_h));
    for (int k = 0; k < pieces; ++k) propagator.advance(state, duration_h / pieces, input);
    amounts.push_back(state.x[central]);
  }
  return amounts;
}

std::vector<double> closed_form_amounts(const MammillaryEffectParameters& parameters) {
  const testing::Disposition d = testing::disposition(parameters);
  const std::vector<Dose> doses{testing::infusion(0, 40 * kTicksPerMinute, kDoseMg)};
  return {testing::plasma_at(d, doses, kInfusionH) * d.V1, testing::plasma_at(d, doses, kInfusionH + 2.0) * d.V1};
}

double largest_error(const std::vector<double>& amounts, const std::vector<double>& exact) {
  double error = 0.0;
  for (std::size_t i = 0; i < exact.size(); ++i) error = std::max(error, std::abs(amounts[i] - exact[i]));
  return error;
}

TEST_CASE("ODE path: halving a fixed step divides the error by 2^5 (Dormand-Prince is fifth order)",
          "[ode][convergence]") {
  const MammillaryEffectParameters parameters = testing::two_compartment();
  const testing::TestModel test(parameters);
  // A tolerance no step can fail, so that the controller never shrinks a step: each piece of at
  // most 1 min (the propagator's first trial step) is then exactly one step.
  const OdePropagator propagator(test.subject, 1e6, 1e6);
  const std::vector<double> exact = closed_form_amounts(parameters);
  // Steps of 1 min down to 1/8 min: the errors stay far above rounding (about 1e-13 mg here).
  std::vector<double> errors;
  for (const double step_h : {1.0 / 60.0, 1.0 / 120.0, 1.0 / 240.0, 1.0 / 480.0})
    errors.push_back(largest_error(central_amounts(propagator, step_h), exact));
  for (std::size_t i = 1; i < errors.size(); ++i) {
    const double observed_order = std::log2(errors[i - 1] / errors[i]);
    INFO("step 1/" << (60 << (i - 1)) << " h -> 1/" << (60 << i) << " h: error " << errors[i - 1] << " -> " << errors[i]
                   << " mg, observed order " << observed_order);
    CHECK(observed_order > 4.6);
    CHECK(observed_order < 5.4);
  }
  CHECK(errors.back() > 1e-11);  // the last halving still measured the method, not rounding
}

TEST_CASE("ODE path: with error control the error scales with the tolerance", "[ode][convergence]") {
  const MammillaryEffectParameters parameters = testing::two_compartment();
  const testing::TestModel test(parameters);
  const std::vector<double> exact = closed_form_amounts(parameters);
  const double scale_mg = std::max(exact[0], exact[1]);
  // rtol from 1e-4 to 1e-9, atol (mg) far below the amounts, so rtol rules; pieces of 20 min,
  // each integrated adaptively as between two breakpoints of a solve.
  std::vector<double> tolerances, errors;
  for (double rtol = 1e-4; rtol > 1e-9 * 0.5; rtol /= 10.0) {
    const OdePropagator propagator(test.subject, rtol, rtol * 1e-3);
    tolerances.push_back(rtol);
    errors.push_back(largest_error(central_amounts(propagator, 1.0 / 3.0), exact) / scale_mg);
  }
  for (std::size_t i = 0; i < errors.size(); ++i) {
    INFO("rtol " << tolerances[i] << ": relative error " << errors[i]);
    CHECK(errors[i] < 10.0 * tolerances[i]);
    if (i > 0) {
      // One decade of tolerance: between about half a decade and a decade and a half of error.
      const double decades = std::log10(errors[i - 1] / errors[i]);
      INFO("error fell by " << decades << " decades");
      CHECK(decades > 0.5);
      CHECK(decades < 1.5);
    }
  }
  // Over the whole range: the least-squares slope of log(error) on log(rtol) is near 1.
  double mean_x = 0.0, mean_y = 0.0;
  for (std::size_t i = 0; i < errors.size(); ++i) {
    mean_x += std::log10(tolerances[i]) / static_cast<double>(errors.size());
    mean_y += std::log10(errors[i]) / static_cast<double>(errors.size());
  }
  double sxy = 0.0, sxx = 0.0;
  for (std::size_t i = 0; i < errors.size(); ++i) {
    sxy += (std::log10(tolerances[i]) - mean_x) * (std::log10(errors[i]) - mean_y);
    sxx += (std::log10(tolerances[i]) - mean_x) * (std::log10(tolerances[i]) - mean_x);
  }
  INFO("slope " << sxy / sxx);
  CHECK(sxy / sxx == Approx(1.0).margin(0.2));
}

}  // namespace
}  // namespace ketasim
