#pragma once
// A model card compiled into a linear system x' = A x + B u with algebraic outputs.
//
// Model (one per card, shared by every subject) lays out the states block by block and names
// the signals; Model::instantiate turns one subject's parameter values into the numbers
// (SubjectModel). Doses are not part of the model: the engine feeds input channels (drug into a
// compartment or depot, a session into the session memories) as constant rates per segment or
// as jumps. States hold drug amounts (mg), effect-site concentrations (mg/L), turnovers (input x
// h) and session memories (sessions).

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ketasim/model/model_card.hpp"

namespace ketasim {

inline constexpr int kMaxStates = 16;
inline constexpr int kMaxSignals = 24;

using StateMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0, kMaxStates, kMaxStates>;
using StateVector = Eigen::Matrix<double, Eigen::Dynamic, 1, 0, kMaxStates, 1>;
using StateRow = Eigen::Matrix<double, 1, Eigen::Dynamic, Eigen::RowMajor, 1, kMaxStates>;
using SignalMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor, kMaxSignals, kMaxStates>;

enum class OutputKind { linear, link, depression };

// Something a scenario can ask for as a trajectory: a linear signal (a row of the state), a
// link, or the depression score.
struct ModelOutput {
  std::string name;         // scenario name, e.g. "plasma_ketamine", "dissociation", "madrs"
  std::string dataset;      // HDF5 name, e.g. "plasma_ketamine_ng_per_ml"
  std::string unit;         // display unit ("ng/mL", "mmHg", "")
  double display_per_base;  // display value = base value * display_per_base
  std::string description;
  OutputKind kind = OutputKind::linear;
  int index = 0;  // signal row (linear), link index or 0 (depression)
  // The state whose content this output is (a drug's central compartment for its plasma
  // concentration, an effect site, a turnover, a session memory); -1 for outputs computed from
  // several states (sums, links, the depression score).
  int state = -1;
};

struct DrugSpec {
  std::string name;
  double molar_mass_g_per_mol = 0.0;
  int central_state = 0;
  int plasma_signal = 0;
  int formed_from = -1;     // index of the parent drug, or -1
  std::vector<int> states;  // compartments and depots holding this drug
};

struct LinkValues {
  int input_signal = 0;
  int tolerance_signal = -1;  // attenuation: a hidden linear signal, or -1
  LinkShape shape = LinkShape::linear;
  double scale = 1.0, slope = 0.0, emax = 0.0, ec50 = 1.0, hill = 1.0, attenuation = 0.0;
  // Below this x, (x / ec50)^hill < 1e-12: the link is under 1e-12 emax and taken as 0, which
  // spares a pow() at most output points (between doses the drug is all but gone).
  double negligible_below = 0.0;

  // The link at input signal value `input` (base units) and tolerance state `tolerance`.
  double operator()(double input, double tolerance) const {
    const double x = scale * input;
    if (shape == LinkShape::linear) return slope * x;
    if (!(x > negligible_below)) return 0.0;
    const double ratio = x / ec50;
    // Common Hill coefficients without pow(): this runs at every output time point.
    double powered;
    if (hill == 1.0)
      powered = ratio;
    else if (hill == 1.5)
      powered = ratio * std::sqrt(ratio);
    else if (hill == 2.0)
      powered = ratio * ratio;
    else
      powered = std::pow(ratio, hill);
    const double top = attenuation > 0.0 ? emax / (1.0 + attenuation * tolerance) : emax;
    return top * powered / (1.0 + powered);
  }
  // The input at which the (unattenuated, or attenuated by `tolerance`) link reaches `value`;
  // +inf if never, 0 for value <= 0.
  double input_for(double value, double tolerance) const;
};

// An oral antidepressant's course, in hours from the first session: started at `since_h`
// (-infinity: long before, at its full effect) and stopped at `stopped_h` (+infinity: never).
struct AntidepressantCourse {
  double since_h = 0.0;
  double stopped_h = std::numeric_limits<double>::infinity();

  // The share of its full effect at `hours` (from the first session), with first-order onset
  // and offset at `rate_per_h`.
  double effect_fraction(double hours, double rate_per_h) const;
};

struct DepressionValues {
  int drug_signal = 0;
  int session_signal = -1;
  double emax = 0.0, ec50 = 1.0, hill = 1.0;
  int sustained_signal = -1;  // -1: no sustained component
  double sustained_emax = 0.0, sustained_ec50 = 1.0, sustained_hill = 1.0;
  double placebo = 0.0, placebo_rate_per_h = 0.0;
  double session_magnitude = 0.0;
  double background = 0.0, background_rate_per_h = 0.0;
  double residual_sd = 0.0;

  // The noise-free score at `hours_since_first` (negative: before treatment) with the drug input,
  // sustained input (ignored without a sustained component) and session memory at their current
  // values; `antidepressant` null without one. The baseline is the score at the first session,
  // with the antidepressant's effect there.
  double score(double baseline, double hours_since_first, double drug_input, double sustained_input,
               double session_memory, const AntidepressantCourse* antidepressant) const;
};

// One subject's numbers.
struct SubjectModel {
  int states = 0;
  StateMatrix A;
  std::vector<StateVector> channels;  // dx/dt per unit input rate, or the jump per unit bolus
  SignalMatrix signals;               // linear signals (base units) = signals * x
  std::vector<StateRow> drug_amount;  // per drug: mg in the body (its compartments and depots)
  std::vector<StateRow> drug_loss;    // per drug: mg/h leaving it (eliminated, metabolised, lost)
  std::vector<StateRow> drug_formed;  // per drug: mg/h formed from a parent (0 for a parent)
  std::vector<LinkValues> links;
  std::optional<DepressionValues> depression;
  // Intranasal entry
  double nasal_fraction = 0.0;
  double later_device_factor = 1.0;
  double swallowed_duration_h = 0.0;
};

// The states that the given signals depend on, directly or through the dynamics (if a needed
// state's derivative reads state i, i is needed too), ascending. `subject` gives the structure:
// an entry that is zero for it is taken as absent.
std::vector<int> states_needed(const SubjectModel& subject, const std::vector<int>& signals);

// The system restricted to `states` (ascending): what no requested output or metric can observe
// is not integrated. Signals and rows keep their meaning for every signal that depends only on
// the kept states.
SubjectModel restrict_to(const SubjectModel& subject, const std::vector<int>& states);

class Model {
 public:
  explicit Model(const ModelCard& card);

  const ModelCard& card() const { return card_; }
  int state_count() const { return static_cast<int>(state_names_.size()); }
  const std::vector<std::string>& state_names() const { return state_names_; }
  const std::vector<DrugSpec>& drugs() const { return drugs_; }
  int dosed_drug() const { return dosed_drug_; }
  int signal_count() const { return static_cast<int>(signal_names_.size()); }
  int find_signal(std::string_view name) const;
  // Outputs a scenario may request as trajectories, in card order.
  const std::vector<ModelOutput>& outputs() const { return outputs_; }
  const ModelOutput* find_output(std::string_view name) const;
  const std::vector<const LinkBlock*>& links() const { return links_; }
  const ModelOutput& link_output(std::size_t link) const;
  int dissociation_link() const { return dissociation_link_; }                // -1 if none
  int dissociation_effect_site() const { return dissociation_effect_site_; }  // its input signal
  int dissociation_driver() const { return dissociation_driver_; }            // plasma signal driving it
  bool has_depression() const { return depression_ != nullptr; }

  // Input channels; -1 where the card has none.
  int iv_channel() const { return iv_channel_; }
  int nasal_channel() const { return nasal_channel_; }
  int swallowed_channel() const { return swallowed_channel_; }
  int session_channel(SessionKind kind) const { return session_channel_[static_cast<std::size_t>(kind)]; }
  int channel_count() const { return channel_count_; }
  // The state a drug channel enters (-1 for a session channel, which feeds several memories).
  int channel_state(int channel) const { return channel_state_[static_cast<std::size_t>(channel)]; }

  // Individual parameter values (card order, base units) -> the subject's system. Throws
  // ModelParameterError for values outside their domain (e.g. a negative volume).
  SubjectModel instantiate(std::span<const double> parameters) const;

 private:
  struct Layout;    // lays out one block of each kind (model.cpp)
  struct Assembly;  // writes one block of each kind into a SubjectModel (model.cpp)
  int add_state(const std::string& name);
  int add_signal(const std::string& name);
  int drug_index(const std::string& name) const;
  void find_dissociation();
  void add_channels();

  const ModelCard& card_;
  std::vector<std::string> state_names_;
  std::vector<std::string> signal_names_;
  std::vector<ModelOutput> outputs_;
  std::vector<DrugSpec> drugs_;
  int dosed_drug_ = 0;
  std::vector<const LinkBlock*> links_;
  std::vector<int> link_tolerance_state_;
  std::vector<int> link_tolerance_signal_;
  const DepressionBlock* depression_ = nullptr;
  int dissociation_link_ = -1;
  int dissociation_effect_site_ = -1;
  int dissociation_driver_ = -1;
  int iv_channel_ = -1, nasal_channel_ = -1, swallowed_channel_ = -1;
  std::array<int, 3> session_channel_{-1, -1, -1};
  int channel_count_ = 0;
  std::vector<int> channel_state_;                // the state each drug channel enters
  std::vector<std::vector<int>> session_states_;  // per session kind: the memories it feeds

  // Per block, the states it created (in block order); used by instantiate.
  struct BlockStates {
    int first = -1;  // compartments: central; depot/effect/turnover/session: the state
    int liver = -1;
    std::vector<int> peripherals;
    int drug = -1;
  };
  std::vector<BlockStates> block_states_;
};

// Whether occasion-to-occasion variability on card parameter `parameter` can be stepped exactly:
// the parameter must change the dynamics (A) and nothing read from the states (signal rows,
// inputs, links, depression score), so that states carry over from one occasion to the next and
// concentrations keep their meaning. Checked by perturbing the typical subject. Returns "" when it
// can, else why not. *changes_mass_rows tells whether it changes the eliminated/formed rows
// (which the mass-balance integrals assume constant).
std::string occasion_variability_problem(const Model& model, const std::vector<double>& typical, int parameter,
                                         bool* changes_mass_rows);

}  // namespace ketasim
