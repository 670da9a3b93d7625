#pragma once
// Published models as data. A model card (models/NAME.yaml, compiled into the library) lists
// every parameter with value, unit, allometric exponent, covariate effect, inter-individual
// variability and source, and describes the model's structure as a list of blocks from a small
// fixed vocabulary (docs/model-cards.md):
//
//   compartments   linear disposition of one drug (1 central + peripherals, optional
//                  hepato-portal compartment), optionally formed from a parent drug (metabolite)
//   depot          first-order absorption into a compartment, with bioavailability
//   effect_site    effect compartment of a drug's plasma concentration (ke0)
//   turnover       a slowly turning-over state driven linearly by a signal (indirect response)
//   sum            a linear signal adding others (e.g. fast plasticity + its consolidation)
//   session_memory a state that jumps at every treatment session of given kinds and decays
//   link           linear / Emax / sigmoid-Emax function of a signal (dissociation, blood pressure)
//   depression     the MADRS-like score: baseline, placebo, session effect and drug response
//
// Every state is linear in the inputs, so the whole system x' = A x + B u is stepped exactly;
// links and the depression score are algebraic functions of the states. The engine turns a card
// plus one subject's parameters into that system (model.hpp).

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/units.hpp"

namespace ketasim {

// Inter-individual variability of one parameter.
enum class IivKind {
  none,
  log_normal,    // P_i = P exp(eta), eta ~ N(0, omega^2), omega^2 = ln(1 + CV^2); magnitude = CV
  logit_normal,  // logit P_i = logit P + eta, eta ~ N(0, sd^2) (fractions); magnitude = sd
  normal,        // P_i = P + eta, eta ~ N(0, sd^2), in the parameter's base unit; magnitude = sd
};

struct Iiv {
  IivKind kind = IivKind::none;
  double magnitude = 0.0;
  // Drawn after every other random effect of the subject (`order: last`), not in parameter order:
  // variability added to a published card then leaves every other draw, and earlier results, as
  // they were.
  bool drawn_last = false;
  friend bool operator==(const Iiv&, const Iiv&) = default;
};

// P_i += slope * max(0, covariate - reference) (e.g. hepatic flow falling with age above 60 y).
struct LinearCovariateEffect {
  std::string covariate;   // "age" (years) or "weight" (kg)
  double reference = 0.0;  // in the covariate's unit (years, kg)
  double slope = 0.0;      // parameter base unit per covariate unit
};

struct ParameterSpec {
  std::string name;                // as used in scenarios, e.g. "V1", "k10", "ec50_s"
  double value = 0.0;              // typical value for a subject of the reference weight, base units
  std::string unit;                // display unit, e.g. "L", "1/h", "ng/mL"
  Dimension dimension;             // checked against overrides
  double allometric_exponent = 0;  // P = P_ref * (WT / WT_ref)^exponent
  std::optional<LinearCovariateEffect> covariate_effect;
  Iiv iiv;                    // the card's default variability (a scenario may override it)
  bool positive = true;       // typical value must be > 0 (else >= 0)
  double upper_bound = 0.0;   // > 0: must not exceed it (e.g. a fraction <= 1)
  bool assumed = false;       // not a published value
  std::string calibrated_by;  // the calibration that fitted it, if any
  std::string description;
  std::string source;
};

// A parameter used by a block: its index in ModelCard::parameters. -1 = not given.
struct ParameterRef {
  int index = -1;
  explicit operator bool() const { return index >= 0; }
};

// A first-order transfer written as a rate constant, or as a clearance divided by the volume of
// the compartment it leaves.
struct FirstOrder {
  ParameterRef rate;       // 1/h
  ParameterRef clearance;  // L/h
};

struct PeripheralSpec {
  FirstOrder out;       // central -> peripheral (rate k12, or clearance Q over V1)
  FirstOrder back;      // peripheral -> central (rate k21, or clearance Q over the peripheral volume)
  ParameterRef volume;  // needed for the clearance form
};

// A hepato-portal compartment (Perez-Ruixo 2021): exchanges with the central compartment at the
// hepatic blood flow; the drug is eliminated from it, not from the central compartment.
struct LiverSpec {
  ParameterRef flow;                            // L/h
  ParameterRef volume;                          // L
  std::vector<ParameterRef> elimination_rates;  // 1/h, summed
};

// A metabolite formed from part of a parent compartment's elimination.
struct FormationSpec {
  std::string drug;         // the parent drug
  std::string compartment;  // "central" or "liver"
  FirstOrder flux;          // the parent's elimination path that forms the metabolite
  ParameterRef fraction;    // of that path; default 1
};

struct CompartmentsBlock {
  static constexpr std::string_view kind = "compartments";
  std::string drug;
  double molar_mass_g_per_mol = 0.0;
  ParameterRef central_volume;
  std::vector<PeripheralSpec> peripherals;
  std::optional<FirstOrder> elimination;  // from the central compartment
  std::optional<LiverSpec> liver;
  std::optional<FormationSpec> formed_from;
};

struct DepotBlock {
  static constexpr std::string_view kind = "depot";
  std::string name;  // the state is "<drug>.<name>"
  std::string drug;
  std::string into;  // "central" or "liver" of the drug
  ParameterRef ka;
  ParameterRef bioavailability;  // fraction of the outflow reaching `into`; default 1
};

struct EffectSiteBlock {
  static constexpr std::string_view kind = "effect_site";
  std::string name;  // a signal name, e.g. "effect_site"
  std::string drug;  // driven by the drug's plasma (central) concentration
  ParameterRef ke0;
};

// A slowly turning-over state driven linearly by a signal (an indirect response with linear
// stimulation), R(0) = 0, k = ln 2 / half_life:
//   integrating:   dR/dt = scale * input - k R     (R in the input's unit times h: exposure with forgetting)
//   equilibrating: dR/dt = k (scale * input - R)   (R in the input's unit: a slow follower)
struct TurnoverBlock {
  static constexpr std::string_view kind = "turnover";
  enum class Form { integrating, equilibrating };
  std::string name;
  std::string input;   // a signal
  ParameterRef scale;  // dimensionless
  ParameterRef half_life;
  Form form = Form::integrating;
};

// A linear signal that is the weighted sum of others of the same dimension (no state).
struct SumBlock {
  static constexpr std::string_view kind = "sum";
  std::string name;
  std::vector<std::string> inputs;
  std::vector<ParameterRef> weights;  // per input; unset = 1
};

// Kinds of treatment session: the model's drug, an inert placebo, an active placebo (midazolam).
enum class SessionKind { drug, placebo, active_placebo };
std::string to_string(SessionKind kind);

// dS/dt = -ln 2 / half_life * S, S jumps by 1 at the start of every session of the given kinds.
struct SessionMemoryBlock {
  static constexpr std::string_view kind = "session_memory";
  std::string name;
  std::vector<SessionKind> sessions;
  ParameterRef half_life;
};

enum class LinkShape { linear, emax, sigmoid_emax };
std::string to_string(LinkShape shape);
// What a link stands for beyond its own outputs (card key `role`), so that no stage finds a link by
// its name: the dissociation link drives the threshold metrics and the report's peak dissociation;
// the systolic blood pressure link's per-dose peak is what `compare` reports as the peak SBP rise.
// For each role the first link that has it counts.
enum class LinkRole { none, dissociation, systolic_blood_pressure };

// value = f(scale * input): slope * x, or emax * x^hill / (ec50^hill + x^hill) (hill = 1 for
// emax). With attenuation, emax is divided by (1 + strength * T), T a turnover of x / ec50 with
// the given half-life: repeated exposure lowers the response (tolerance).
struct LinkBlock {
  static constexpr std::string_view kind = "link";
  std::string name;     // signal name, e.g. "dissociation"
  std::string dataset;  // HDF5 trajectory name, e.g. "dissociation_score"
  std::string unit;     // display unit of the value ("", "mmHg", "bpm")
  LinkRole role = LinkRole::none;
  std::string input;  // a signal
  LinkShape shape = LinkShape::linear;
  ParameterRef scale, slope, emax, ec50, hill;
  ParameterRef attenuation_strength, attenuation_half_life;
};

// The MADRS scale's maximum: ten items scored 0 to 6. A property of the scale, not of a card: no
// card declares it (the depression block has no bound key), so this is the one value the scenario
// checks, the model's score and the observed scores use.
inline constexpr double kMadrsMaximum = 60.0;

// MADRS-like score (empirical; docs/model.md):
//   score = baseline * (1 - placebo(t) - session_magnitude * S(t)) * (1 - drug(t)), in [0, kMadrsMaximum]
//   placebo(t) = placebo_magnitude * (1 - 2^(-(t - t_first) / onset_half_life)) after the first session
//   drug(t)    = 1 - (1 - fast(t)) * (1 - sustained(t)), each an Emax of its own input:
//   fast(t)    = emax * R^hill / (ec50^hill + R^hill), R the drug input (a turnover)
//   sustained(t) likewise of the optional sustained input (0 without one)
// Observed scores add N(0, residual_sd^2) at the assessments.
struct DepressionBlock {
  static constexpr std::string_view kind = "depression";
  std::string name;  // "madrs"
  std::string drug_input;
  ParameterRef drug_emax, drug_ec50, drug_hill;
  std::string sustained_input;  // a second, independent drug component (e.g. consolidation), or "" for none
  ParameterRef sustained_emax, sustained_ec50, sustained_hill;
  ParameterRef placebo_magnitude, placebo_onset_half_life;
  std::string session_input;  // a session_memory, or "" for none
  ParameterRef session_magnitude;
  ParameterRef background_magnitude, background_onset_half_life;  // an oral antidepressant started with treatment
  ParameterRef residual_sd;
};

// A card's structure is a list of blocks, each a map whose one key is its block type's `kind`.
// Code that branches on the kind visits a Block with one overload per alternative, so that a new
// kind fails to compile until every such visit handles it (model_card.cpp reads it, Model lays it
// out and instantiates it; docs/model-cards.md, "Adding a block kind").
using Block = std::variant<CompartmentsBlock, DepotBlock, EffectSiteBlock, TurnoverBlock, SumBlock, SessionMemoryBlock,
                           LinkBlock, DepressionBlock>;

// How a dose given by a route enters the model.
struct IvEntry {
  std::string drug;  // into the drug's central compartment
};
struct IntranasalEntry {
  std::string drug;
  double device_mg = 0.0;            // drug per device; a dose is a whole number of devices
  double device_interval_h = 0.0;    // between devices of one session
  std::string nasal_depot;           // depot name
  ParameterRef nasal_fraction;       // of each device absorbed nasally
  ParameterRef later_device_factor;  // multiplies nasal_fraction from the second device on
  std::string swallowed_depot;       // the rest enters this depot at a constant rate ...
  ParameterRef swallowed_duration;   // ... over this time
};

struct RouteEntries {
  std::optional<IvEntry> iv;  // iv_infusion and iv_bolus
  std::optional<IntranasalEntry> intranasal;
};

struct ResidualError {
  std::string analyte;        // a drug
  double proportional = 0.0;  // fraction (CV)
  double additive_mg_per_L = 0.0;
  bool log_scale = false;  // exponential error: magnitude is the SD on the log scale
  std::string source;
};

struct ModelCard {
  std::string name;
  std::string title;
  std::string citation;
  std::string sampling;  // "venous" or "arterial"
  std::string drug;      // the dosed drug; Cmax and AUC metrics refer to its plasma concentration
  double reference_weight_kg = 70.0;
  std::vector<ParameterSpec> parameters;
  std::vector<Block> blocks;
  RouteEntries routes;
  std::vector<ResidualError> residual_errors;
  std::vector<std::string> included_modules;
  // The calibrations whose fitted values the card uses, in the order they are applied: its modules'
  // (`calibration:` of a module), then its own (`calibration:` of the card), whose values replace
  // a module calibration's for the parameters both fit.
  std::vector<std::string> calibrations;
  std::string notes;
  std::string source_file;  // models/NAME.yaml

  // Index of a parameter by name, or -1.
  int index_of(std::string_view parameter) const;
  const ParameterSpec& parameter(ParameterRef ref) const { return parameters[static_cast<std::size_t>(ref.index)]; }
  // The blocks of one kind, in card order.
  template <class BlockType>
  std::vector<const BlockType*> blocks_of() const {
    std::vector<const BlockType*> found;
    for (const Block& block : blocks)
      if (const auto* typed = std::get_if<BlockType>(&block)) found.push_back(typed);
    return found;
  }
  // The first link with `role` (the one that counts), or nullptr.
  const LinkBlock* link_with_role(LinkRole role) const {
    for (const LinkBlock* link : blocks_of<LinkBlock>())
      if (link->role == role) return link;
    return nullptr;
  }
};

// Parses a card (or a module, which has parameters and blocks only). `find_module` resolves
// `include:` names; `find_calibration` returns the YAML text of a calibration's fitted values.
// Throws ScenarioError (file:line:column, key path) for a malformed card.
struct CardSources {
  std::string (*module_text)(std::string_view name) = nullptr;       // "" when unknown
  std::string (*calibration_text)(std::string_view name) = nullptr;  // "" when unknown
};
ModelCard parse_model_card(const std::string& yaml_text, const std::string& source_name, const CardSources& sources);

// The built-in cards (models/*.yaml, compiled in), parsed once.
const std::vector<ModelCard>& builtin_models();
// nullptr when no card has that name.
const ModelCard* find_builtin_model(std::string_view name);
// The YAML text a built-in module or calibration was compiled from ("" when unknown).
std::string builtin_module_text(std::string_view name);
std::string builtin_calibration_text(std::string_view name);

// Value of `value_in_base_units` expressed in the card's display unit.
double to_display_unit(const ParameterSpec& spec, double value_in_base_units);

// Why `value` (base units) cannot be a value of the parameter, by plausible_parameter_range of its
// dimension: "lies outside the plausible range for a volume, 1e-06 to 1e+06 L", or "" when it can.
std::string implausible_parameter_value(const ParameterSpec& spec, double value);

}  // namespace ketasim
