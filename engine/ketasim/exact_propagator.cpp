#include "ketasim/exact_propagator.hpp"

#include <cmath>

#include <Eigen/Eigenvalues>
#include <Eigen/LU>

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

std::optional<ExactPropagator> ExactPropagator::create(const LinearSystem& system, std::string* why) {
  const Eigen::Index n = system.A.rows();
  Eigen::EigenSolver<LinearSystem::Matrix> solver(system.A, true);
  if (solver.info() != Eigen::Success) {
    set_reason(why, "eigen-decomposition failed");
    return std::nullopt;
  }
  const double scale = system.A.cwiseAbs().maxCoeff();
  if (solver.eigenvalues().imag().cwiseAbs().maxCoeff() > 1e-12 * scale) {
    set_reason(why, "the system has complex eigenvalues");
    return std::nullopt;
  }
  const LinearSystem::Vector lambda = solver.eigenvalues().real();
  const LinearSystem::Matrix V = solver.eigenvectors().real();
  const Eigen::PartialPivLU<LinearSystem::Matrix> lu(V);
  const LinearSystem::Matrix inverse = lu.inverse();
  // Nearly repeated eigenvalues (e.g. ke0 equal to a disposition rate) make V nearly singular;
  // then rounding would dominate, so refuse. 1e8 keeps at least 7 of 16 significant digits.
  const double condition = V.cwiseAbs().rowwise().sum().maxCoeff() * inverse.cwiseAbs().rowwise().sum().maxCoeff();
  if (!std::isfinite(condition) || condition > 1e8) {
    set_reason(why, "nearly repeated eigenvalues (eigenvector condition number " + std::to_string(condition) + ")");
    return std::nullopt;
  }
  const LinearSystem::Matrix rebuilt = V * lambda.asDiagonal() * inverse;
  if ((rebuilt - system.A).cwiseAbs().maxCoeff() > 1e-9 * scale) {
    set_reason(why, "the eigen-decomposition does not reproduce the system matrix");
    return std::nullopt;
  }
  if (n > kModes) {
    set_reason(why, "the system has more than " + std::to_string(kModes) + " states");
    return std::nullopt;
  }
  LinearSystem::RowVector compartments = LinearSystem::RowVector::Ones(n);
  compartments(n - 1) = 0.0;  // the effect site holds a concentration, not drug
  ExactPropagator propagator;
  propagator.eigenvalues_.setZero();
  propagator.input_modal_.setZero();
  propagator.bolus_modal_.setZero();
  propagator.plasma_modal_.setZero();
  propagator.effect_modal_.setZero();
  propagator.amount_modal_.setZero();
  propagator.eigenvalues_.head(n) = lambda;
  propagator.input_modal_.head(n) = inverse * system.input;
  propagator.bolus_modal_.head(n) = inverse.col(0);
  propagator.plasma_modal_.head(n) = (system.plasma * V).transpose();
  propagator.effect_modal_.head(n) = (system.effect * V).transpose();
  propagator.amount_modal_.head(n) = (compartments * V).transpose();
  return propagator;
}

ExactPropagator::State ExactPropagator::initial_state() const { return State{Vector::Zero()}; }

ExactPropagator::StepFactors ExactPropagator::factors(double duration_h) const {
  StepFactors f;
  for (Eigen::Index i = 0; i < kModes; ++i) {
    const double x = eigenvalues_(i) * duration_h;
    const double first = duration_h * phi1(x);
    f.decay(i) = std::exp(x);
    f.state_integral(i) = first;
    f.input_gain(i) = first * input_modal_(i);
    f.input_integral(i) = duration_h * duration_h * phi2(x) * input_modal_(i);
  }
  f.plasma_state_integral = plasma_modal_.cwiseProduct(f.state_integral);
  f.plasma_input_integral = plasma_modal_.dot(f.input_integral);
  return f;
}

ExactPropagator::State ExactPropagator::peek(const State& state, double tau_h, double rate_mg_per_h) const {
  // Only the state is needed (root finding within a step): one expm1 per mode, no integrals.
  // e^x = 1 + expm1(x) loses relative precision only where e^x is negligible next to 1.
  State result;
  for (Eigen::Index i = 0; i < kModes; ++i) {
    const double x = eigenvalues_(i) * tau_h;
    const double growth = std::expm1(x);
    const double first = x == 0.0 ? tau_h : growth / eigenvalues_(i);
    result.modal(i) = (1.0 + growth) * state.modal(i) + first * input_modal_(i) * rate_mg_per_h;
  }
  return result;
}

}  // namespace ketasim
