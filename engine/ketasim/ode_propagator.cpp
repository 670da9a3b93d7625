#include "ketasim/ode_propagator.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <boost/numeric/odeint.hpp>

#include "ketasim/errors.hpp"

namespace ketasim {

namespace odeint = boost::numeric::odeint;

OdePropagator::OdePropagator(const SubjectModel& model, double rtol, double atol)
    : model_(model), rtol_(rtol), atol_(atol) {}

void OdePropagator::advance(State& state, StepFactors duration_h, const Input& input) const {
  const Eigen::Index n = model_.states;
  // [x; integral of x], integrated together.
  std::vector<double> values(static_cast<std::size_t>(2 * n));
  Eigen::Map<Eigen::VectorXd>(values.data(), n) = state.x;
  Eigen::Map<Eigen::VectorXd>(values.data() + n, n) = state.integral;
  const auto system = [&](const std::vector<double>& y, std::vector<double>& dydt, double /*t*/) {
    const Eigen::Map<const Eigen::VectorXd> x(y.data(), n);
    Eigen::Map<Eigen::VectorXd>(dydt.data(), n) = model_.A * x + input;
    Eigen::Map<Eigen::VectorXd>(dydt.data() + n, n) = x;
  };
  // A fresh controlled stepper per step: the restart at every boundary happens here and only here.
  auto stepper = odeint::make_controlled(atol_, rtol_, odeint::runge_kutta_dopri5<std::vector<double>>());
  const double first_step = std::min(duration_h, 1.0 / 60.0);
  odeint::integrate_adaptive(stepper, system, values, 0.0, duration_h, first_step);
  for (const double value : values)
    if (!std::isfinite(value)) throw SolverError("the ODE solution became non-finite");
  state.x = Eigen::Map<const Eigen::VectorXd>(values.data(), n);
  state.integral = Eigen::Map<const Eigen::VectorXd>(values.data() + n, n);
}

OdePropagator::State OdePropagator::peek(const State& state, double tau_h, const Input& input) const {
  State result = state;
  if (tau_h > 0.0) advance(result, tau_h, input);
  return result;
}

}  // namespace ketasim
