// The ODE path (OdePropagator: Boost.Odeint's Dormand-Prince 5(4)) converges as the method
// promises, against the closed form of a 1-compartment infusion (closed_forms.hpp):
// - with fixed steps, halving the step divides the error by about 2^5 (observed order 5: the
//   stepper propagates the fifth-order solution);
// - with error control, the global error falls in proportion to the tolerance (a decade of
//   tolerance, about a decade of error), and stays below it.
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

// One compartment with fast elimination (k10 = 12/h). The error of a step comes from what changes
// within it, and a linear model forgets it at its rates: so the amounts are read while the
// infusion's start and stop are still fresh (10 min after each, k10 t = 2), where one-minute steps
// leave errors far above rounding. (Ketamine's own rates are so slow for such steps that the
// error reaches rounding after one halving.)
MammillaryEffectParameters fast_one_compartment() {
  MammillaryEffectParameters p = testing::one_compartment();
  p.V1_L = 20.0;
  p.k10_per_h = 12.0;
  return p;
}

constexpr double kReadAfterH = 10.0 / 60.0;

// The amount in the central compartment 10 min into the 40-min infusion and 10 min after its end,
// from `advance` called over pieces of `piece_h` hours (with a tolerance that accepts any step,
// one advance of at most 1 min, the propagator's first trial step, is one Dormand-Prince step).
std::vector<double> central_amounts(const OdePropagator& propagator, double piece_h) {
  const OdePropagator::Input infusing = propagator.input(kRateMgPerH * propagator.channel(0));
  const OdePropagator::Input stopped = propagator.input(StateVector::Zero(infusing.size()));
  Eigen::Index central = 0;  // the state the infusion enters
  propagator.channel(0).cwiseAbs().maxCoeff(&central);
  OdePropagator::State state = propagator.initial_state();
  const auto advance = [&](double duration_h, const OdePropagator::Input& input) {
    const int pieces = std::max(1, static_cast<int>(std::lround(duration_h / piece_h)));
    for (int k = 0; k < pieces; ++k) propagator.advance(state, duration_h / pieces, input);
  };
  advance(kReadAfterH, infusing);
  const double during = state.x[central];
  advance(kInfusionH - kReadAfterH, infusing);
  advance(kReadAfterH, stopped);
  return {during, state.x[central]};
}

std::vector<double> closed_form_amounts(const MammillaryEffectParameters& parameters) {
  const testing::Disposition d = testing::disposition(parameters);
  const std::vector<Dose> doses{testing::infusion(0, 40 * kTicksPerMinute, kDoseMg)};
  return {testing::plasma_at(d, doses, kReadAfterH) * d.V1,
          testing::plasma_at(d, doses, kInfusionH + kReadAfterH) * d.V1};
}

double largest_error(const std::vector<double>& amounts, const std::vector<double>& exact) {
  double error = 0.0;
  for (std::size_t i = 0; i < exact.size(); ++i) error = std::max(error, std::abs(amounts[i] - exact[i]));
  return error;
}

TEST_CASE("ODE path: halving a fixed step divides the error by 2^5 (Dormand-Prince is fifth order)",
          "[ode][convergence]") {
  const MammillaryEffectParameters parameters = fast_one_compartment();
  const testing::TestModel test(parameters);
  // A tolerance no step can fail, so that the controller never shrinks a step: each piece of at
  // most 1 min (the propagator's first trial step) is then exactly one step.
  const OdePropagator propagator(test.subject, 1e6, 1e6);
  const std::vector<double> exact = closed_form_amounts(parameters);
  // Steps of 1 min down to 1/8 min.
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
  // Measured (g++ 12): 1.5e-7 mg at 1 min, 3.4e-12 mg at 1/8 min, orders 5.2, 5.1, 5.1; rounding
  // is near 1e-15 mg here, so the last halving still measured the method.
  CHECK(errors.back() > 1e-13);
}

TEST_CASE("ODE path: with error control the error scales with the tolerance", "[ode][convergence]") {
  const MammillaryEffectParameters parameters = fast_one_compartment();
  const testing::TestModel test(parameters);
  const std::vector<double> exact = closed_form_amounts(parameters);
  const double scale_mg = std::max(exact[0], exact[1]);
  // rtol from 1e-4 to 1e-9, atol (mg) far below the amounts, so rtol rules; each interval
  // integrated adaptively in one piece, as between two breakpoints of a solve.
  constexpr double kWhole = 10.0;
  std::vector<double> tolerances, errors;
  for (double rtol = 1e-4; rtol > 1e-9 * 0.5; rtol /= 10.0) {
    const OdePropagator propagator(test.subject, rtol, rtol * 1e-3);
    tolerances.push_back(rtol);
    errors.push_back(largest_error(central_amounts(propagator, kWhole), exact) / scale_mg);
  }
  for (std::size_t i = 0; i < errors.size(); ++i) {
    INFO("rtol " << tolerances[i] << ": relative error " << errors[i]);
    CHECK(errors[i] < tolerances[i]);  // measured: 7 to 19 times below
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
