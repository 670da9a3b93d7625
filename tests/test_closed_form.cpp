// Closed-form oracles: 1- and 2-compartment infusions and the effect compartment, written here
// from the textbook solutions (sums of exponentials and superposition), independently of the
// engine's eigen-decomposition. Both solver paths must agree with them.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "closed_forms.hpp"
#include "engine_fixtures.hpp"

using namespace ketasim;
using namespace ketasim::testing;

namespace {

// |simulated - exact| <= 1e-6 |exact|, or 1e-9 of the peak where the concentration has all but
// vanished (troughs days after a dose, where a relative error means nothing).
void require_agreement(const std::vector<float>& simulated_ng_per_ml, const std::vector<double>& exact_mg_per_L) {
  const double peak = *std::max_element(exact_mg_per_L.begin(), exact_mg_per_L.end());
  for (std::size_t k = 0; k < exact_mg_per_L.size(); ++k) {
    const double exact = exact_mg_per_L[k] * 1000.0;
    const double tolerance = std::max(1e-6 * std::abs(exact), 1e-9 * peak * 1000.0);
    INFO("grid point " << k << ": simulated " << simulated_ng_per_ml[k] << " ng/mL, closed form " << exact);
    REQUIRE(std::abs(simulated_ng_per_ml[k] - exact) <= tolerance);
  }
}

void check_against_closed_form(const MammillaryEffectParameters& parameters, const std::vector<Dose>& doses, Ticks step,
                               Ticks end, SolverMethod method) {
  const SubjectRun run = run_subject(parameters, doses, step, end, method);
  const Disposition d = disposition(parameters);
  std::vector<double> plasma, effect;
  for (std::size_t k = 0; k < run.plasma.size(); ++k) {
    const double t = ticks_to_hours(static_cast<Ticks>(k) * step);
    plasma.push_back(plasma_at(d, doses, t));
    effect.push_back(effect_at(d, doses, t));
  }
  require_agreement(run.plasma, plasma);
  require_agreement(run.effect, effect);
}

}  // namespace

TEST_CASE("1-compartment infusion: both paths match the closed form", "[closed_form]") {
  const std::vector<Dose> doses{infusion(kTicksPerHour, 40 * kTicksPerMinute, 35.0)};
  SECTION("exact") {
    check_against_closed_form(one_compartment(), doses, kTicksPerMinute, kTicksPerDay, SolverMethod::exact);
  }
  SECTION("ode") {
    check_against_closed_form(one_compartment(), doses, kTicksPerMinute, kTicksPerDay, SolverMethod::ode);
  }
}

TEST_CASE("2-compartment twice weekly for 3 weeks: both paths agree with the closed form to 1e-6", "[closed_form]") {
  const auto doses = twice_weekly(3);
  SECTION("exact") {
    check_against_closed_form(two_compartment(), doses, 5 * kTicksPerMinute, 21 * kTicksPerDay, SolverMethod::exact);
  }
  SECTION("ode") {
    check_against_closed_form(two_compartment(), doses, 5 * kTicksPerMinute, 21 * kTicksPerDay, SolverMethod::ode);
  }
}

TEST_CASE("2-compartment, grid not aligned with the doses: closed form still holds", "[closed_form]") {
  // 7-minute grid against doses at 09:00 and 40-minute infusions: most dose edges fall inside
  // grid steps, so the partial steps are exercised.
  std::vector<Dose> doses = twice_weekly(1);
  doses.push_back(infusion(30 * kTicksPerHour + 13 * kTicksPerSecond, 17 * kTicksPerMinute, 10.0));
  std::sort(doses.begin(), doses.end(), [](const Dose& a, const Dose& b) { return a.start < b.start; });
  check_against_closed_form(two_compartment(), doses, 7 * kTicksPerMinute, 7 * kTicksPerDay, SolverMethod::exact);
}

TEST_CASE("the exact AUC equals the closed-form integral, total and per week", "[closed_form]") {
  const auto doses = twice_weekly(3);
  const Ticks end = 21 * kTicksPerDay;
  const SubjectRun run = run_subject(two_compartment(), doses, 5 * kTicksPerMinute, end);
  const Disposition d = disposition(two_compartment());
  const auto auc_until = [&](double t) { return superpose(plasma_auc_infusion, d, doses, t) * 1000.0; };
  CHECK(run.metrics.auc_ng_h_per_ml == Approx(auc_until(ticks_to_hours(end))).epsilon(1e-10));
  REQUIRE(run.metrics.auc_per_week_ng_h_per_ml.size() == 3);
  for (int w = 0; w < 3; ++w) {
    INFO("week " << w + 1);
    CHECK(run.metrics.auc_per_week_ng_h_per_ml[static_cast<std::size_t>(w)] ==
          Approx(auc_until(168.0 * (w + 1)) - auc_until(168.0 * w)).epsilon(1e-10));
  }
}

TEST_CASE("the per-dose effect-site peak is the closed-form maximum", "[closed_form]") {
  const auto doses = twice_weekly(2);
  const Disposition d = disposition(two_compartment());
  for (const SolverMethod method : {SolverMethod::exact, SolverMethod::ode}) {
    const SubjectRun run = run_subject(two_compartment(), doses, 5 * kTicksPerMinute, 14 * kTicksPerDay, method);
    REQUIRE(run.metrics.peak_effect_ng_per_ml.size() == doses.size());
    for (std::size_t k = 0; k < doses.size(); ++k) {
      // Golden-section search of the closed form between the end of the infusion and 1 h later.
      double a = ticks_to_hours(doses[k].start + doses[k].duration), b = a + 1.0;
      const double ratio = (std::sqrt(5.0) - 1.0) / 2.0;
      while (b - a > 1e-10) {
        const double left = b - ratio * (b - a), right = a + ratio * (b - a);
        if (effect_at(d, doses, left) < effect_at(d, doses, right))
          a = left;
        else
          b = right;
      }
      const double peak_time = 0.5 * (a + b);
      INFO("dose " << k << (method == SolverMethod::exact ? " exact" : " ode"));
      CHECK(run.metrics.peak_effect_ng_per_ml[k] == Approx(effect_at(d, doses, peak_time) * 1000.0).epsilon(1e-8));
      CHECK(run.metrics.peak_effect_time_h[k] == Approx(peak_time).margin(1e-5));
      // The effect-site peak lags the end of the infusion by a few minutes.
      CHECK(run.metrics.peak_effect_time_h[k] > ticks_to_hours(doses[k].start + doses[k].duration));
    }
  }
}

TEST_CASE("time above the dissociation threshold matches the closed-form crossings", "[closed_form]") {
  const auto doses = twice_weekly(1);
  const double threshold_score = 4.0;
  const TestModel model(two_compartment());
  const double threshold = model.dissociation().input_for(threshold_score, 0.0);
  const Disposition d = disposition(two_compartment());
  // Closed-form crossings by bisection on a fine scan of the effect-site curve.
  double expected = 0.0;
  const double dt = 1.0 / 3600.0;
  for (double t = 0.0; t < 168.0; t += dt) {
    const bool above0 = effect_at(d, doses, t) >= threshold, above1 = effect_at(d, doses, t + dt) >= threshold;
    if (above0 && above1) {
      expected += dt;
    } else if (above0 != above1) {
      double a = t, b = t + dt;
      for (int i = 0; i < 60; ++i) {
        const double m = 0.5 * (a + b);
        if ((effect_at(d, doses, m) >= threshold) == above0)
          a = m;
        else
          b = m;
      }
      expected += above0 ? a - t : t + dt - a;
    }
  }
  REQUIRE(expected > 0.1);  // the threshold is crossed: the test exercises the crossings
  const SubjectRun run = run_subject(two_compartment(), doses, 5 * kTicksPerMinute, 7 * kTicksPerDay,
                                     SolverMethod::exact, threshold_score);
  CHECK(run.metrics.time_above_dissociation_h == Approx(expected).margin(1e-7));
}

TEST_CASE("3-compartment: the exact and ODE paths agree over 3 weeks", "[closed_form]") {
  const auto doses = twice_weekly(3);
  const SubjectRun exact =
      run_subject(three_compartment(), doses, 5 * kTicksPerMinute, 21 * kTicksPerDay, SolverMethod::exact);
  const SubjectRun ode =
      run_subject(three_compartment(), doses, 5 * kTicksPerMinute, 21 * kTicksPerDay, SolverMethod::ode);
  std::vector<double> reference(exact.plasma.begin(), exact.plasma.end());
  for (double& value : reference) value /= 1000.0;
  require_agreement(ode.plasma, reference);
  CHECK(ode.metrics.auc_ng_h_per_ml == Approx(exact.metrics.auc_ng_h_per_ml).epsilon(1e-7));
  CHECK(exact.outcome.path == SolverPath::exact);
  CHECK(ode.outcome.path == SolverPath::ode);
}
