#pragma once
// Exact stepping of a linear system x' = A x + b r with constant input r over a step.
//
// A is diagonalised once per subject, A = V diag(lambda) V^-1, and the state is carried in
// modal coordinates z = V^-1 x, where every step is a diagonal update:
//   z(t + h)       = e^(lambda h) z(t) + h phi1(lambda h) g r,          g = V^-1 b
//   int_0^h z dt   = h phi1(lambda h) z(t) + h^2 phi2(lambda h) g r
// with phi1(x) = (e^x - 1)/x and phi2(x) = (e^x - 1 - x)/x^2. Outputs are dot products with
// rows premultiplied by V. This is exact up to rounding for any step length, so the output grid
// and the dose edges cost one diagonal update each.
//
// A system whose eigenvalues are complex or nearly repeated (ill-conditioned V) is refused;
// the caller then uses the ODE path.
//
// Modal vectors have a fixed size of 4 (the largest model's state count) so the hot loop is a
// handful of vector instructions; a smaller system is padded with inert modes (lambda = 0, no
// input, no output), which stay exactly zero.

#include <optional>
#include <string>

#include "ketasim/model.hpp"
#include "ketasim/time.hpp"

namespace ketasim {

class ExactPropagator {
 public:
  static constexpr int kModes = MammillaryEffectModel::kMaxStates;
  using Vector = Eigen::Matrix<double, kModes, 1>;
  struct State {
    Vector modal;
  };
  struct StepFactors {
    Vector decay;           // e^(lambda h)
    Vector input_gain;      // h phi1(lambda h) g
    Vector state_integral;  // h phi1(lambda h)
    Vector input_integral;  // h^2 phi2(lambda h) g
    Vector plasma_state_integral;   // plasma row times state_integral: AUC per unit modal state
    double plasma_input_integral;   // plasma row dot input_integral: AUC per unit rate
  };

  // nullopt (with the reason in *why) when the decomposition cannot be trusted.
  static std::optional<ExactPropagator> create(const LinearSystem& system, std::string* why = nullptr);

  State initial_state() const;
  void bolus(State& state, double amount_mg) const { state.modal.noalias() += amount_mg * bolus_modal_; }

  StepFactors factors(double duration_h) const;
  // Advances by the step the factors were made for, at a constant infusion rate; returns the integral of the
  // plasma concentration over the step (mg h / L).
  double advance(State& state, const StepFactors& f, double rate_mg_per_h) const {
    const double plasma_integral = f.plasma_state_integral.dot(state.modal) + f.plasma_input_integral * rate_mg_per_h;
    state.modal = f.decay.cwiseProduct(state.modal) + f.input_gain * rate_mg_per_h;
    return plasma_integral;
  }
  // The state `tau_h` after `state` at a constant rate, without changing `state`.
  State peek(const State& state, double tau_h, double rate_mg_per_h) const;

  double plasma(const State& state) const { return plasma_modal_.dot(state.modal); }
  double effect(const State& state) const { return effect_modal_.dot(state.modal); }
  // Drug in the compartments (every state but the effect site).
  double amount_in_body_mg(const State& state) const { return amount_modal_.dot(state.modal); }
  const Vector& eigenvalues() const { return eigenvalues_; }

 private:
  ExactPropagator() = default;

  Vector eigenvalues_;
  Vector amount_modal_;  // row of ones over the compartments, times V
  Vector input_modal_;  // g = V^-1 b
  Vector bolus_modal_;  // V^-1 e_central
  Vector plasma_modal_;
  Vector effect_modal_;
};

}  // namespace ketasim
