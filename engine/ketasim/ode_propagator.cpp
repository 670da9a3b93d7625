#include "ketasim/ode_propagator.hpp"

#include <algorithm>
#include <cmath>

#include <boost/numeric/odeint.hpp>

#include "ketasim/errors.hpp"

namespace ketasim {

namespace odeint = boost::numeric::odeint;

namespace {
using OdeState = std::array<double, MammillaryEffectModel::kMaxStates + 1>;

MammillaryEffectModel::State model_part(const OdeState& values) {
  MammillaryEffectModel::State x{};
  std::copy_n(values.begin(), x.size(), x.begin());
  return x;
}
}  // namespace

double OdePropagator::advance(State& state, StepFactors duration_h, double rate_mg_per_h) const {
  const double auc_before = state.values[kAucIndex];
  const auto system = [this, rate_mg_per_h](const OdeState& values, OdeState& derivative, double /*t*/) {
    MammillaryEffectModel::State dxdt{};
    const auto x = model_part(values);
    model_.rhs(x, dxdt, rate_mg_per_h);
    std::copy(dxdt.begin(), dxdt.end(), derivative.begin());
    derivative[kAucIndex] = model_.plasma_concentration(x);
  };
  // A fresh controlled stepper per step: the restart at every boundary happens here and only here.
  auto stepper = odeint::make_controlled(atol_, rtol_, odeint::runge_kutta_dopri5<OdeState>());
  const double first_step = std::min(duration_h, 1.0 / 60.0);
  odeint::integrate_adaptive(stepper, system, state.values, 0.0, duration_h, first_step);
  for (const double value : state.values)
    if (!std::isfinite(value)) throw SolverError("the ODE solution became non-finite");
  return state.values[kAucIndex] - auc_before;
}

OdePropagator::State OdePropagator::peek(const State& state, double tau_h, double rate_mg_per_h) const {
  State result = state;
  advance(result, tau_h, rate_mg_per_h);
  return result;
}

double OdePropagator::plasma(const State& state) const { return model_.plasma_concentration(model_part(state.values)); }

double OdePropagator::effect(const State& state) const { return model_.effect_concentration(model_part(state.values)); }

double OdePropagator::amount_in_body_mg(const State& state) const {
  return model_.amount_in_body_mg(model_part(state.values));
}

}  // namespace ketasim
