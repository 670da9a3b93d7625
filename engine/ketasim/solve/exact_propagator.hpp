#pragma once
// Exact stepping of a linear system x' = A x + b with a constant input b over a step.
//
// A is diagonalised once per subject, A = V diag(lambda) V^-1, and the state is carried in
// modal coordinates z = V^-1 x, where every step is a diagonal update:
//   z(t + h)       = e^(lambda h) z(t) + h phi1(lambda h) g,          g = V^-1 b
//   int_0^h z dt   = h phi1(lambda h) z(t) + h^2 phi2(lambda h) g
// with phi1(x) = (e^x - 1)/x and phi2(x) = (e^x - 1 - x)/x^2. The running integral of z is kept
// too, so any linear quantity's exact integral (plasma AUC, amounts eliminated) is one dot
// product at the end. Outputs are dot products with rows premultiplied by V. This is exact up
// to rounding for any step length, so the output grid and the dose edges cost one diagonal
// update each.
//
// A system whose eigenvalues are complex or nearly repeated (ill-conditioned V) is refused;
// the caller then uses the ODE path.
//
// Modal vectors have a fixed size N >= the state count (4, 8 or 16) so the hot loop is a
// handful of vector instructions; a smaller system is padded with inert modes (lambda = 0, no
// input, no output), which stay exactly zero.

#include <optional>
#include <string>
#include <vector>

#include "ketasim/model/model.hpp"

namespace ketasim {

template <int N>
class ExactPropagator {
 public:
  static constexpr int kModes = N;
  using Vector = Eigen::Matrix<double, N, 1>;
  struct State {
    Vector modal;
    Vector integral;  // of the modal state since the start
  };
  using Input = Vector;  // a constant input in modal coordinates
  struct StepFactors {
    Vector decay;   // e^(lambda h)
    Vector first;   // h phi1(lambda h)
    Vector second;  // h^2 phi2(lambda h)
  };

  // nullopt (with the reason in *why) when the decomposition cannot be trusted.
  static std::optional<ExactPropagator> create(const SubjectModel& model, std::string* why = nullptr);

  State initial_state() const { return State{Vector::Zero(), Vector::Zero()}; }
  // The modal input of a state-space input vector (rates per state).
  Input input(const StateVector& rates) const;
  const Input& channel(int c) const { return channels_[static_cast<std::size_t>(c)]; }
  void bolus(State& state, int c, double amount) const { state.modal.noalias() += amount * channel(c); }

  StepFactors factors(double duration_h) const;
  // Advances by the step the factors were made for, at a constant input.
  void advance(State& state, const StepFactors& f, const Input& g) const {
    state.integral += f.first.cwiseProduct(state.modal) + f.second.cwiseProduct(g);
    state.modal = f.decay.cwiseProduct(state.modal) + f.first.cwiseProduct(g);
  }
  // The state `tau_h` after `state` at a constant input, without changing `state` (its
  // integral is not advanced: peeking serves root finding only).
  State peek(const State& state, double tau_h, const Input& g) const;

  double signal(const State& state, int k) const { return signals_[static_cast<std::size_t>(k)].dot(state.modal); }
  double signal_integral(const State& state, int k) const {
    return signals_[static_cast<std::size_t>(k)].dot(state.integral);
  }
  // A state-space row applied to the state, and to its integral since the start.
  double apply(const State& state, const StateRow& row) const { return to_modal(row).dot(state.modal); }
  double apply_integral(const State& state, const StateRow& row) const { return to_modal(row).dot(state.integral); }
  const Vector& eigenvalues() const { return eigenvalues_; }
  // The state in state-space coordinates (amounts and concentrations, base units), and its
  // integral since the start; and back. Occasion changes carry states across systems this way.
  StateVector physical(const State& state) const { return V_ * state.modal.head(n_); }
  StateVector physical_integral(const State& state) const { return V_ * state.integral.head(n_); }
  State from_physical(const StateVector& x, const StateVector& integral) const {
    State state{Vector::Zero(), Vector::Zero()};
    state.modal.head(n_) = V_inverse_ * x;
    state.integral.head(n_) = V_inverse_ * integral;
    return state;
  }

 private:
  ExactPropagator() = default;
  Vector to_modal(const StateRow& row) const;

  int n_ = 0;
  Vector eigenvalues_;
  StateMatrix V_, V_inverse_;
  std::vector<Input> channels_;  // V^-1 b_c
  std::vector<Vector> signals_;  // signal rows times V, one fixed-size vector each (the hot loop's dot products)
};

extern template class ExactPropagator<4>;
extern template class ExactPropagator<8>;
extern template class ExactPropagator<16>;

}  // namespace ketasim
