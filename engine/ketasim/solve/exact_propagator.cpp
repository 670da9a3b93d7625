#include "ketasim/solve/exact_propagator.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/LU>
#include <cmath>

namespace ketasim {

namespace {

// (e^x - 1) / x, accurate near 0.
double phi1(double x) {
  if (std::abs(x) < 1e-5) return 1.0 + x * (0.5 + x / 6.0);
  return std::expm1(x) / x;
}

// (e^x - 1 - x) / x^2, accurate near 0 (the series avoids the cancellation).
double phi2(double x) {
  if (std::abs(x) < 1e-2) return 0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x / 720.0)));
  return (std::expm1(x) - x) / (x * x);
}

void set_reason(std::string* why, const std::string& text) {
  if (why) *why = text;
}

}  // namespace

template <int N>
std::optional<ExactPropagator<N>> ExactPropagator<N>::create(const SubjectModel& model, std::string* why) {
  const Eigen::Index n = model.states;
  if (n > N) {
    set_reason(why, "the system has more than " + std::to_string(N) + " states");
    return std::nullopt;
  }
  Eigen::EigenSolver<StateMatrix> solver(model.A, true);
  if (solver.info() != Eigen::Success) {
    set_reason(why, "eigen-decomposition failed");
    return std::nullopt;
  }
  const double scale = std::max(model.A.cwiseAbs().maxCoeff(), 1e-300);
  if (solver.eigenvalues().imag().cwiseAbs().maxCoeff() > 1e-12 * scale) {
    set_reason(why, "the system has complex eigenvalues");
    return std::nullopt;
  }
  ExactPropagator propagator;
  propagator.n_ = static_cast<int>(n);
  const StateVector lambda = solver.eigenvalues().real();
  propagator.V_ = solver.eigenvectors().real();
  const Eigen::PartialPivLU<StateMatrix> lu(propagator.V_);
  propagator.V_inverse_ = lu.inverse();
  // Nearly repeated eigenvalues (e.g. ke0 equal to a disposition rate) make V nearly singular;
  // rounding errors grow with its condition number, so refuse above 1e7 (at least 9 of 16
  // significant digits kept). An exact coincidence lands near 1/sqrt(machine epsilon) ~ 7e7.
  const double condition =
      propagator.V_.cwiseAbs().rowwise().sum().maxCoeff() * propagator.V_inverse_.cwiseAbs().rowwise().sum().maxCoeff();
  if (!std::isfinite(condition) || condition > 1e7) {
    set_reason(why, "nearly repeated eigenvalues (eigenvector condition number " + std::to_string(condition) + ")");
    return std::nullopt;
  }
  const StateMatrix rebuilt = propagator.V_ * lambda.asDiagonal() * propagator.V_inverse_;
  if ((rebuilt - model.A).cwiseAbs().maxCoeff() > 1e-9 * scale) {
    set_reason(why, "the eigen-decomposition does not reproduce the system matrix");
    return std::nullopt;
  }
  propagator.eigenvalues_.setZero();
  propagator.eigenvalues_.head(n) = lambda;
  for (const StateVector& b : model.channels) propagator.channels_.push_back(propagator.input(b));
  const SignalMatrix modal_signals = model.signals * propagator.V_;
  for (Eigen::Index k = 0; k < modal_signals.rows(); ++k) {
    Vector row = Vector::Zero();
    row.head(n) = modal_signals.row(k).transpose();
    propagator.signals_.push_back(row);
  }
  return propagator;
}

template <int N>
typename ExactPropagator<N>::Input ExactPropagator<N>::input(const StateVector& rates) const {
  Input g = Input::Zero();
  g.head(n_) = V_inverse_ * rates;
  return g;
}

template <int N>
typename ExactPropagator<N>::Vector ExactPropagator<N>::to_modal(const StateRow& row) const {
  Vector modal = Vector::Zero();
  modal.head(n_) = (row * V_).transpose();
  return modal;
}

template <int N>
typename ExactPropagator<N>::StepFactors ExactPropagator<N>::factors(double duration_h) const {
  StepFactors f;
  for (Eigen::Index i = 0; i < N; ++i) {
    const double x = eigenvalues_(i) * duration_h;
    f.decay(i) = std::exp(x);
    f.first(i) = duration_h * phi1(x);
    f.second(i) = duration_h * duration_h * phi2(x);
  }
  return f;
}

template <int N>
typename ExactPropagator<N>::State ExactPropagator<N>::peek(const State& state, double tau_h, const Input& g) const {
  // Only the state is needed (root finding within a step): one expm1 per mode, no integrals.
  // e^x = 1 + expm1(x) loses relative precision only where e^x is negligible next to 1.
  State result;
  result.integral = state.integral;
  for (Eigen::Index i = 0; i < N; ++i) {
    const double x = eigenvalues_(i) * tau_h;
    const double growth = std::expm1(x);
    const double first = x == 0.0 ? tau_h : growth / eigenvalues_(i);
    result.modal(i) = (1.0 + growth) * state.modal(i) + first * g(i);
  }
  return result;
}

template class ExactPropagator<4>;
template class ExactPropagator<8>;
template class ExactPropagator<16>;

}  // namespace ketasim
