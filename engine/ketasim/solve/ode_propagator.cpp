#include "ketasim/solve/ode_propagator.hpp"

#include <algorithm>
#include <boost/numeric/odeint.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"

namespace ketasim {

namespace odeint = boost::numeric::odeint;

namespace {

constexpr double kStepCapPerHour = 10'000.0;
constexpr std::size_t kMinimumStepCap = 10'000;
constexpr std::size_t kStepsBetweenCancelChecks = 1024;

// Dormand-Prince 5(4) is stable for steps up to about 3.3 / rate: when the last step tried is of
// that order for the fastest rate, stability, not accuracy, limited the steps.
std::string why_capped(double fastest_rate_per_h, double last_step_h, double rtol, double atol) {
  if (fastest_rate_per_h * last_step_h > 0.1) {
    return "the system is too stiff for an explicit method (fastest rate " + format_significant(fastest_rate_per_h, 3) +
           "/h); use solver.method exact or auto";
  }
  return "its steps shrank to about " + format_significant(last_step_h, 3) + " h without meeting rtol " +
         format_significant(rtol, 3) + " and atol " + format_significant(atol, 3);
}

}  // namespace

OdeStepCapReached::OdeStepCapReached(std::size_t steps, double step_h, double reached, const std::string& why)
    : SolverError("the ODE solver reached its cap of " + std::to_string(steps) + " steps: " + why),
      cap(steps),
      duration_h(step_h),
      reached_h(reached),
      reason(why) {}

OdePropagator::OdePropagator(const SubjectModel& model, double rtol, double atol, const std::atomic<bool>* cancel)
    : model_(model), rtol_(rtol), atol_(atol), cancel_(cancel) {}

std::size_t OdePropagator::step_cap(double duration_h) {
  return std::max(kMinimumStepCap, static_cast<std::size_t>(std::ceil(kStepCapPerHour * duration_h)));
}

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
  // odeint's integrate_adaptive, step for step, with a cap on the steps and a cancellation check.
  const std::size_t cap = step_cap(duration_h);
  constexpr double kEndTolerance = std::numeric_limits<double>::epsilon();  // integrate_adaptive's
  double t = 0.0;
  double dt = std::min(duration_h, 1.0 / kMinutesPerHour);
  for (std::size_t tries = 1; duration_h - t > kEndTolerance; ++tries) {
    if (tries > cap) {
      const double fastest_rate_per_h = model_.A.diagonal().cwiseAbs().maxCoeff();
      throw OdeStepCapReached(cap, duration_h, t, why_capped(fastest_rate_per_h, dt, rtol_, atol_));
    }
    if (cancel_ != nullptr && tries % kStepsBetweenCancelChecks == 0 && cancel_->load(std::memory_order_relaxed))
      throw InterruptedError("interrupted");
    if (t + dt - duration_h > kEndTolerance) dt = duration_h - t;
    stepper.try_step(system, values, t, dt);  // advances t and grows dt, or shrinks dt
  }
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
