#include "ketasim/model/model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <variant>

#include "ketasim/base/errors.hpp"

namespace ketasim {

namespace {

constexpr double kLn2 = std::numbers::ln2;

// Display unit and factor of a signal, from its base dimension.
struct Display {
  std::string unit;
  double per_base = 1.0;
};

Display display_of_unit(const std::string& unit) {
  if (unit.empty()) return {};
  const auto parsed = parse_unit(unit);
  return {unit, parsed ? 1.0 / parsed->scale : 1.0};
}

const Display kNgPerMl{"ng/mL", 1000.0};

// emax * (x / ec50)^hill / (1 + (x / ec50)^hill), 0 for x <= 0.
double sigmoid_emax(double x, double emax, double ec50, double hill) {
  if (!(x > 0.0)) return 0.0;
  const double ratio = x / ec50;
  const double powered = hill == 2.0 ? ratio * ratio : std::pow(ratio, hill);
  return emax * powered / (1.0 + powered);
}

}  // namespace

double LinkValues::input_for(double value, double tolerance) const {
  if (!(value > 0.0)) return 0.0;
  if (shape == LinkShape::linear)
    return slope > 0.0 ? value / (slope * scale) : std::numeric_limits<double>::infinity();
  const double top = attenuation > 0.0 ? emax / (1.0 + attenuation * tolerance) : emax;
  if (value >= top || scale <= 0.0) return std::numeric_limits<double>::infinity();
  const double powered = value / (top - value);
  return ec50 * std::pow(powered, 1.0 / hill) / scale;
}

double AntidepressantCourse::effect_fraction(double hours, double rate_per_h) const {
  if (hours < since_h) return 0.0;
  const double on_until = std::min(hours, stopped_h);
  double fraction = std::isinf(since_h) ? 1.0 : -std::expm1(-rate_per_h * (on_until - since_h));
  if (hours > stopped_h) fraction *= std::exp(-rate_per_h * (hours - stopped_h));
  return fraction;
}

double DepressionValues::score(double baseline, double hours_since_first, double drug_input, double sustained_input,
                               double session_memory, const AntidepressantCourse* antidepressant) const {
  // Each non-drug component keeps a share of the score in [0, 1]: the components combine as
  // independent shares of the possible improvement, so no subject is pushed below 0 or above the
  // baseline by them, however large their between-subject variability.
  const auto kept = [](double improvement) { return 1.0 - std::clamp(improvement, 0.0, 1.0); };
  double remaining = kept(session_magnitude * session_memory);
  if (hours_since_first >= 0.0) {
    remaining *= kept(placebo * -std::expm1(-placebo_rate_per_h * hours_since_first));
    if (antidepressant) {
      // Relative to the first session, whose score (the baseline) has the effect it had then: an
      // antidepressant at its full effect changes nothing until it is stopped, and stopping it
      // raises the score towards baseline / (1 - background).
      const double at_start = kept(background * antidepressant->effect_fraction(0.0, background_rate_per_h));
      const double now = kept(background * antidepressant->effect_fraction(hours_since_first, background_rate_per_h));
      remaining *= at_start > 0.0 ? now / at_start : 1.0;
    }
  }
  // The fast and the sustained drug components, too, are independent shares of the improvement.
  double drug_kept = 1.0 - sigmoid_emax(drug_input, emax, ec50, hill);
  if (sustained_signal >= 0)
    drug_kept *= 1.0 - sigmoid_emax(sustained_input, sustained_emax, sustained_ec50, sustained_hill);
  return std::clamp(baseline * remaining * drug_kept, 0.0, kMadrsMaximum);
}

int Model::add_state(const std::string& name) {
  if (state_count() >= kMaxStates)
    throw ModelParameterError("model " + card_.name + " has more than " + std::to_string(kMaxStates) + " states");
  state_names_.push_back(name);
  return state_count() - 1;
}

int Model::add_signal(const std::string& name) {
  if (signal_count() >= kMaxSignals)
    throw ModelParameterError("model " + card_.name + " has more than " + std::to_string(kMaxSignals) + " signals");
  signal_names_.push_back(name);
  return signal_count() - 1;
}

int Model::find_signal(std::string_view name) const {
  for (std::size_t i = 0; i < signal_names_.size(); ++i)
    if (signal_names_[i] == name) return static_cast<int>(i);
  return -1;
}

const ModelOutput& Model::link_output(std::size_t link) const {
  for (const ModelOutput& output : outputs_)
    if (output.kind == OutputKind::link && output.index == static_cast<int>(link)) return output;
  throw std::out_of_range("model " + card_.name + " has no link " + std::to_string(link));
}

const ModelOutput* Model::find_output(std::string_view name) const {
  for (const ModelOutput& output : outputs_)
    if (output.name == name) return &output;
  return nullptr;
}

// Lays out the states, signals and outputs of one block (Model::Model), in card order. One
// operator() per alternative of Block: std::visit fails to compile when a kind has none.
struct Model::Layout {
  Model& model;
  std::vector<Display> signal_display;  // per signal

  // A linear signal a scenario can also ask for; `state`: the state the output reads (-1 for a
  // sum of signals).
  int linear_output(const std::string& name, const std::string& dataset, const Display& display,
                    const std::string& description, int state) {
    const int signal = model.add_signal(name);
    signal_display.push_back(display);
    model.outputs_.push_back(
        {name, dataset, display.unit, display.per_base, description, OutputKind::linear, signal, state});
    return signal;
  }
  // A copy: linear_output may grow signal_display.
  Display display_of_signal(const std::string& name) const {
    return signal_display[static_cast<std::size_t>(model.find_signal(name))];
  }

  BlockStates operator()(const CompartmentsBlock& compartments);
  BlockStates operator()(const DepotBlock& depot);
  BlockStates operator()(const EffectSiteBlock& effect);
  BlockStates operator()(const TurnoverBlock& turnover);
  BlockStates operator()(const SumBlock& sum);
  BlockStates operator()(const SessionMemoryBlock& memory);
  BlockStates operator()(const LinkBlock& link);
  BlockStates operator()(const DepressionBlock& depression);
};

Model::BlockStates Model::Layout::operator()(const CompartmentsBlock& compartments) {
  BlockStates states;
  DrugSpec drug;
  drug.name = compartments.drug;
  drug.molar_mass_g_per_mol = compartments.molar_mass_g_per_mol;
  drug.central_state = states.first = model.add_state(drug.name + ".central");
  drug.states.push_back(states.first);
  for (std::size_t p = 0; p < compartments.peripherals.size(); ++p) {
    states.peripherals.push_back(model.add_state(drug.name + ".peripheral" + std::to_string(p + 1)));
    drug.states.push_back(states.peripherals.back());
  }
  if (compartments.liver) {
    states.liver = model.add_state(drug.name + ".liver");
    drug.states.push_back(states.liver);
  }
  if (compartments.formed_from) drug.formed_from = model.drug_index(compartments.formed_from->drug);
  drug.plasma_signal = linear_output("plasma_" + drug.name, "plasma_" + drug.name + "_ng_per_ml", kNgPerMl,
                                     "plasma " + drug.name + " concentration", drug.central_state);
  states.drug = static_cast<int>(model.drugs_.size());
  model.drugs_.push_back(std::move(drug));
  return states;
}

Model::BlockStates Model::Layout::operator()(const DepotBlock& depot) {
  BlockStates states;
  states.drug = model.drug_index(depot.drug);
  states.first = model.add_state(depot.drug + "." + depot.name);
  model.drugs_[static_cast<std::size_t>(states.drug)].states.push_back(states.first);
  return states;
}

Model::BlockStates Model::Layout::operator()(const EffectSiteBlock& effect) {
  BlockStates states;
  states.drug = model.drug_index(effect.drug);
  states.first = model.add_state(effect.name);
  linear_output(effect.name, effect.name + "_ng_per_ml", kNgPerMl, "effect-site " + effect.drug + " concentration",
                states.first);
  return states;
}

Model::BlockStates Model::Layout::operator()(const TurnoverBlock& turnover) {
  BlockStates states;
  states.first = model.add_state(turnover.name);
  const Display input = display_of_signal(turnover.input);
  const bool integrating = turnover.form == TurnoverBlock::Form::integrating;
  const Display display = !integrating            ? input
                          : input.unit == "ng/mL" ? Display{"ng*h/mL", 1000.0}
                                                  : Display{input.unit + "*h", input.per_base};
  linear_output(
      turnover.name, turnover.name, display,
      "turnover state driven by " + turnover.input + (integrating ? " (decaying exposure)" : " (slow follower)"),
      states.first);
  return states;
}

Model::BlockStates Model::Layout::operator()(const SumBlock& sum) {
  std::string names;
  for (const std::string& input : sum.inputs) names += (names.empty() ? "" : " + ") + input;
  linear_output(sum.name, sum.name, display_of_signal(sum.inputs.front()), "sum of " + names, -1);
  return {};
}

Model::BlockStates Model::Layout::operator()(const SessionMemoryBlock& memory) {
  BlockStates states;
  states.first = model.add_state(memory.name);
  linear_output(memory.name, memory.name, Display{}, "memory of treatment sessions (sessions, decaying)", states.first);
  return states;
}

Model::BlockStates Model::Layout::operator()(const LinkBlock& link) {
  BlockStates states;
  const int index = static_cast<int>(model.links_.size());
  model.links_.push_back(&link);
  if (link.attenuation_strength) {
    model.link_tolerance_state_.push_back(states.first = model.add_state(link.name + ".tolerance"));
    model.link_tolerance_signal_.push_back(model.add_signal(link.name + ".tolerance"));
    signal_display.push_back({});
  } else {
    model.link_tolerance_state_.push_back(-1);
    model.link_tolerance_signal_.push_back(-1);
  }
  const Display display = display_of_unit(link.unit);
  model.outputs_.push_back({link.name, link.dataset, display.unit, display.per_base,
                            link.name + " (" + to_string(link.shape) + " link on " + link.input + ")", OutputKind::link,
                            index});
  return states;
}

Model::BlockStates Model::Layout::operator()(const DepressionBlock& depression) {
  model.depression_ = &depression;
  model.outputs_.push_back(
      {depression.name, depression.name, "", 1.0, "MADRS-like depression score (points)", OutputKind::depression, 0});
  return {};
}

int Model::drug_index(const std::string& name) const {
  for (std::size_t d = 0; d < drugs_.size(); ++d)
    if (drugs_[d].name == name) return static_cast<int>(d);
  throw ModelParameterError("model " + card_.name + ": unknown drug '" + name + "'");
}

Model::Model(const ModelCard& card) : card_(card) {
  Layout layout{*this, {}};
  for (const Block& block : card.blocks) block_states_.push_back(std::visit(layout, block));
  dosed_drug_ = drug_index(card.drug);
  find_dissociation();
  add_channels();
}

// The dissociation link is the first link with that role, and it counts only when it reads an
// effect site, which is driven by its drug's plasma concentration.
void Model::find_dissociation() {
  for (std::size_t index = 0; index < links_.size(); ++index) {
    const LinkBlock* link = links_[index];
    if (link->role == LinkRole::dissociation && dissociation_link_ < 0) {
      dissociation_link_ = static_cast<int>(index);
      dissociation_effect_site_ = find_signal(link->input);
    }
  }
  if (dissociation_effect_site_ < 0) return;
  for (const EffectSiteBlock* effect : card_.blocks_of<EffectSiteBlock>()) {
    if (find_signal(effect->name) == dissociation_effect_site_)
      dissociation_driver_ = drugs_[static_cast<std::size_t>(drug_index(effect->drug))].plasma_signal;
  }
  if (dissociation_driver_ < 0) {  // the link reads something other than an effect site
    dissociation_link_ = -1;
    dissociation_effect_site_ = -1;
  }
}

void Model::add_channels() {
  const auto find_depot_state = [&](const std::string& drug, const std::string& name) {
    for (std::size_t b = 0; b < card_.blocks.size(); ++b)
      if (const auto* depot = std::get_if<DepotBlock>(&card_.blocks[b]);
          depot && depot->drug == drug && depot->name == name)
        return block_states_[b].first;
    throw ModelParameterError("model " + card_.name + ": no depot '" + name + "'");
  };
  if (card_.routes.iv) {
    iv_channel_ = channel_count_++;
    channel_state_.push_back(drugs_[static_cast<std::size_t>(drug_index(card_.routes.iv->drug))].central_state);
  }
  if (card_.routes.intranasal) {
    nasal_channel_ = channel_count_++;
    channel_state_.push_back(find_depot_state(card_.routes.intranasal->drug, card_.routes.intranasal->nasal_depot));
    swallowed_channel_ = channel_count_++;
    channel_state_.push_back(find_depot_state(card_.routes.intranasal->drug, card_.routes.intranasal->swallowed_depot));
  }
  session_states_.assign(3, {});
  for (std::size_t b = 0; b < card_.blocks.size(); ++b) {
    if (const auto* memory = std::get_if<SessionMemoryBlock>(&card_.blocks[b]))
      for (const SessionKind kind : memory->sessions)
        session_states_[static_cast<std::size_t>(kind)].push_back(block_states_[b].first);
  }
  for (std::size_t kind = 0; kind < 3; ++kind) {
    if (session_states_[kind].empty()) continue;
    session_channel_[kind] = channel_count_++;
    channel_state_.push_back(-1);  // a session channel feeds several memories
  }
}

std::vector<int> states_needed(const SubjectModel& subject, const std::vector<int>& signals) {
  std::vector<bool> needed(static_cast<std::size_t>(subject.states), false);
  std::vector<int> pending;
  const auto need = [&](int state) {
    if (!needed[static_cast<std::size_t>(state)]) {
      needed[static_cast<std::size_t>(state)] = true;
      pending.push_back(state);
    }
  };
  for (const int signal : signals)
    for (int state = 0; state < subject.states; ++state)
      if (subject.signals(signal, state) != 0.0) need(state);
  while (!pending.empty()) {
    const int state = pending.back();
    pending.pop_back();
    for (int source = 0; source < subject.states; ++source)
      if (source != state && subject.A(state, source) != 0.0) need(source);
  }
  std::vector<int> states;
  for (int state = 0; state < subject.states; ++state)
    if (needed[static_cast<std::size_t>(state)]) states.push_back(state);
  return states;
}

SubjectModel restrict_to(const SubjectModel& subject, const std::vector<int>& states) {
  const auto n = static_cast<Eigen::Index>(states.size());
  SubjectModel reduced = subject;
  reduced.states = static_cast<int>(n);
  reduced.A.resize(n, n);
  reduced.signals.resize(subject.signals.rows(), n);
  for (Eigen::Index j = 0; j < n; ++j) {
    for (Eigen::Index i = 0; i < n; ++i)
      reduced.A(i, j) = subject.A(states[static_cast<std::size_t>(i)], states[static_cast<std::size_t>(j)]);
    reduced.signals.col(j) = subject.signals.col(states[static_cast<std::size_t>(j)]);
  }
  const auto restrict_rows = [&](std::vector<StateRow>& rows, const std::vector<StateRow>& full) {
    for (std::size_t r = 0; r < rows.size(); ++r) {
      rows[r].resize(n);
      for (Eigen::Index j = 0; j < n; ++j) rows[r](j) = full[r](states[static_cast<std::size_t>(j)]);
    }
  };
  restrict_rows(reduced.drug_amount, subject.drug_amount);
  restrict_rows(reduced.drug_loss, subject.drug_loss);
  restrict_rows(reduced.drug_formed, subject.drug_formed);
  for (std::size_t c = 0; c < reduced.channels.size(); ++c) {
    reduced.channels[c].resize(n);
    for (Eigen::Index i = 0; i < n; ++i)
      reduced.channels[c](i) = subject.channels[c](states[static_cast<std::size_t>(i)]);
  }
  return reduced;
}

// Writes one block's part of a subject's system (Model::instantiate), in card order. One
// operator() per alternative of Block: std::visit fails to compile when a kind has none.
struct Model::Assembly {
  const Model& model;
  std::span<const double> parameters;  // card order, base units
  SubjectModel& subject;
  const BlockStates* states = nullptr;  // of the block being assembled
  // Per drug, set by its compartments block for the blocks after it.
  std::vector<double> central_volume, liver_volume;
  std::vector<int> liver_state;

  double value(ParameterRef ref, double fallback = 0.0) const {
    return ref ? parameters[static_cast<std::size_t>(ref.index)] : fallback;
  }
  double positive(ParameterRef ref) const {
    const double v = value(ref);
    if (!(v > 0.0) || !std::isfinite(v))
      throw ModelParameterError("parameter " + model.card_.parameter(ref).name + " = " + std::to_string(v) +
                                " must be positive");
    return v;
  }
  double fraction(ParameterRef ref) const {  // 1 when not given
    const double v = value(ref, 1.0);
    if (!(v >= 0.0 && v <= 1.0))
      throw ModelParameterError("parameter " + model.card_.parameter(ref).name + " = " + std::to_string(v) +
                                " must lie in [0, 1]");
    return v;
  }
  double first_order(const FirstOrder& transfer, double volume) const {
    return transfer.rate ? positive(transfer.rate) : positive(transfer.clearance) / volume;
  }
  int signal(const std::string& name) const { return model.find_signal(name); }

  void operator()(const CompartmentsBlock& compartments);
  void operator()(const DepotBlock& depot);
  void operator()(const EffectSiteBlock& effect);
  void operator()(const TurnoverBlock& turnover);
  void operator()(const SumBlock& sum);
  void operator()(const SessionMemoryBlock& memory);
  void operator()(const LinkBlock& link);
  void operator()(const DepressionBlock& depression);
};

void Model::Assembly::operator()(const CompartmentsBlock& compartments) {
  StateMatrix& A = subject.A;
  const auto d = static_cast<std::size_t>(states->drug);
  const DrugSpec& drug = model.drugs_[d];
  const int c = states->first;
  const double V1 = positive(compartments.central_volume);
  central_volume[d] = V1;
  subject.signals(drug.plasma_signal, c) = 1.0 / V1;
  for (std::size_t p = 0; p < compartments.peripherals.size(); ++p) {
    const PeripheralSpec& spec = compartments.peripherals[p];
    const int s = states->peripherals[p];
    const double out = first_order(spec.out, V1);
    const double back =
        spec.back.rate ? positive(spec.back.rate) : positive(spec.back.clearance) / positive(spec.volume);
    A(c, c) -= out;
    A(s, c) += out;
    A(s, s) -= back;
    A(c, s) += back;
  }
  if (compartments.elimination) {
    const double k = first_order(*compartments.elimination, V1);
    A(c, c) -= k;
    subject.drug_loss[d](c) += k;
  }
  if (compartments.liver) {
    const int l = states->liver;
    const double flow = positive(compartments.liver->flow);
    const double Vh = positive(compartments.liver->volume);
    double elimination = 0.0;
    for (const ParameterRef rate : compartments.liver->elimination_rates) elimination += positive(rate);
    A(c, c) -= flow / V1;
    A(l, c) += flow / V1;
    A(l, l) -= flow / Vh + elimination;
    A(c, l) += flow / Vh;
    subject.drug_loss[d](l) += elimination;
    liver_volume[d] = Vh;
    liver_state[d] = l;
  }
  if (compartments.formed_from) {
    const FormationSpec& formation = *compartments.formed_from;
    const auto parent = static_cast<std::size_t>(drug.formed_from);
    const bool from_liver = formation.compartment == "liver";
    const int source = from_liver ? liver_state[parent] : model.drugs_[parent].central_state;
    const double k = first_order(formation.flux, from_liver ? liver_volume[parent] : central_volume[parent]);
    const double molar_ratio = drug.molar_mass_g_per_mol / model.drugs_[parent].molar_mass_g_per_mol;
    const double formed = fraction(formation.fraction) * k * molar_ratio;  // mg of metabolite per mg of parent per h
    A(c, source) += formed;
    subject.drug_formed[d](source) += formed;
  }
}

void Model::Assembly::operator()(const DepotBlock& depot) {
  StateMatrix& A = subject.A;
  const auto d = static_cast<std::size_t>(states->drug);
  const int s = states->first;
  const double ka = positive(depot.ka);
  const double F = fraction(depot.bioavailability);
  const int into = depot.into == "liver" ? liver_state[d] : model.drugs_[d].central_state;
  A(s, s) -= ka;
  A(into, s) += F * ka;
  subject.drug_loss[d](s) += (1.0 - F) * ka;
}

void Model::Assembly::operator()(const EffectSiteBlock& effect) {
  const auto d = static_cast<std::size_t>(states->drug);
  const double ke0 = positive(effect.ke0);
  subject.A(states->first, model.drugs_[d].central_state) += ke0 / central_volume[d];
  subject.A(states->first, states->first) -= ke0;
  subject.signals(signal(effect.name), states->first) = 1.0;
}

void Model::Assembly::operator()(const TurnoverBlock& turnover) {
  const double k = kLn2 / positive(turnover.half_life);
  const double drive = value(turnover.scale, 1.0) * (turnover.form == TurnoverBlock::Form::equilibrating ? k : 1.0);
  subject.A.row(states->first) += drive * subject.signals.row(signal(turnover.input));
  subject.A(states->first, states->first) -= k;
  subject.signals(signal(turnover.name), states->first) = 1.0;
}

void Model::Assembly::operator()(const SumBlock& sum) {
  for (std::size_t i = 0; i < sum.inputs.size(); ++i)
    subject.signals.row(signal(sum.name)) += value(sum.weights[i], 1.0) * subject.signals.row(signal(sum.inputs[i]));
}

void Model::Assembly::operator()(const SessionMemoryBlock& memory) {
  subject.A(states->first, states->first) -= kLn2 / positive(memory.half_life);
  subject.signals(signal(memory.name), states->first) = 1.0;
}

void Model::Assembly::operator()(const LinkBlock& link) {
  const auto index = subject.links.size();
  LinkValues values;
  values.input_signal = signal(link.input);
  values.shape = link.shape;
  values.scale = value(link.scale, 1.0);
  if (link.shape == LinkShape::linear) {
    values.slope = value(link.slope);
  } else {
    values.emax = value(link.emax);
    values.ec50 = positive(link.ec50);
    values.hill = link.hill ? positive(link.hill) : 1.0;
    values.negligible_below = values.ec50 * std::pow(1e-12, 1.0 / values.hill);
  }
  const int tolerance_state = model.link_tolerance_state_[index];
  if (tolerance_state >= 0) {
    values.attenuation = value(link.attenuation_strength);
    values.tolerance_signal = model.link_tolerance_signal_[index];
    // dT/dt = x / ec50 - ln 2 / half-life * T: exposure in ec50-hours, decaying.
    subject.A.row(tolerance_state) += values.scale / values.ec50 * subject.signals.row(values.input_signal);
    subject.A(tolerance_state, tolerance_state) -= kLn2 / positive(link.attenuation_half_life);
    subject.signals(values.tolerance_signal, tolerance_state) = 1.0;
  }
  subject.links.push_back(values);
}

void Model::Assembly::operator()(const DepressionBlock& depression) {
  DepressionValues values;
  values.drug_signal = signal(depression.drug_input);
  values.emax = fraction(depression.drug_emax);
  values.ec50 = positive(depression.drug_ec50);
  values.hill = positive(depression.drug_hill);
  if (!depression.sustained_input.empty()) {
    values.sustained_signal = signal(depression.sustained_input);
    values.sustained_emax = fraction(depression.sustained_emax);
    values.sustained_ec50 = positive(depression.sustained_ec50);
    values.sustained_hill = positive(depression.sustained_hill);
  }
  values.placebo = value(depression.placebo_magnitude);
  values.placebo_rate_per_h = kLn2 / positive(depression.placebo_onset_half_life);
  if (!depression.session_input.empty()) {
    values.session_signal = signal(depression.session_input);
    values.session_magnitude = value(depression.session_magnitude);
  }
  if (depression.background_magnitude) {
    values.background = value(depression.background_magnitude);
    values.background_rate_per_h = kLn2 / positive(depression.background_onset_half_life);
  }
  values.residual_sd = value(depression.residual_sd);
  subject.depression = values;
}

SubjectModel Model::instantiate(std::span<const double> parameters) const {
  const int n = state_count();
  SubjectModel subject;
  subject.states = n;
  subject.A = StateMatrix::Zero(n, n);
  subject.signals = SignalMatrix::Zero(signal_count(), n);
  subject.drug_amount.assign(drugs_.size(), StateRow::Zero(n));
  subject.drug_loss.assign(drugs_.size(), StateRow::Zero(n));
  subject.drug_formed.assign(drugs_.size(), StateRow::Zero(n));
  for (std::size_t d = 0; d < drugs_.size(); ++d)
    for (const int state : drugs_[d].states) subject.drug_amount[d](state) = 1.0;

  Assembly assembly{*this,
                    parameters,
                    subject,
                    nullptr,
                    std::vector<double>(drugs_.size(), 0.0),
                    std::vector<double>(drugs_.size(), 0.0),
                    std::vector<int>(drugs_.size(), -1)};
  for (std::size_t b = 0; b < card_.blocks.size(); ++b) {
    assembly.states = &block_states_[b];
    std::visit(assembly, card_.blocks[b]);
  }

  subject.channels.assign(static_cast<std::size_t>(channel_count_), StateVector::Zero(n));
  for (int c = 0; c < channel_count_; ++c)
    if (channel_state_[static_cast<std::size_t>(c)] >= 0)
      subject.channels[static_cast<std::size_t>(c)](channel_state_[static_cast<std::size_t>(c)]) = 1.0;
  for (std::size_t kind = 0; kind < 3; ++kind) {
    if (session_channel_[kind] < 0) continue;
    for (const int state : session_states_[kind])
      subject.channels[static_cast<std::size_t>(session_channel_[kind])](state) = 1.0;
  }
  if (const auto& nasal = card_.routes.intranasal) {
    subject.nasal_fraction = assembly.fraction(nasal->nasal_fraction);
    subject.later_device_factor = nasal->later_device_factor ? assembly.fraction(nasal->later_device_factor) : 1.0;
    subject.swallowed_duration_h = assembly.positive(nasal->swallowed_duration);
  }
  return subject;
}

std::string occasion_variability_problem(const Model& model, const std::vector<double>& typical, int parameter,
                                         bool* changes_mass_rows) {
  std::vector<double> changed = typical;
  changed[static_cast<std::size_t>(parameter)] *= 1.25;
  const SubjectModel a = model.instantiate(typical);
  const SubjectModel b = model.instantiate(changed);
  const auto rows_equal = [](const std::vector<StateRow>& x, const std::vector<StateRow>& y) {
    for (std::size_t i = 0; i < x.size(); ++i)
      if (!(x[i] - y[i]).isZero(0.0)) return false;
    return true;
  };
  if (changes_mass_rows)
    *changes_mass_rows = !rows_equal(a.drug_loss, b.drug_loss) || !rows_equal(a.drug_formed, b.drug_formed);
  if ((a.A - b.A).isZero(0.0)) return "it does not enter the linear dynamics";
  for (std::size_t c = 0; c < a.channels.size(); ++c)
    if (!(a.channels[c] - b.channels[c]).isZero(0.0)) return "it changes how doses enter";
  if (!(a.signals - b.signals).isZero(0.0)) return "it changes how concentrations are read from amounts (a volume)";
  if (a.nasal_fraction != b.nasal_fraction || a.later_device_factor != b.later_device_factor ||
      a.swallowed_duration_h != b.swallowed_duration_h)
    return "it changes the intranasal entry";
  for (std::size_t l = 0; l < a.links.size(); ++l)
    for (const double x : {1e-4, 1e-3, 1e-2, 1e-1, 1.0})
      if (a.links[l](x, x) != b.links[l](x, x)) return "it changes a pharmacodynamic link";
  const AntidepressantCourse started;
  if (a.depression)
    for (const double x : {0.0, 1.0, 10.0, 100.0})
      if (a.depression->score(30.0, 100.0, x, x, 1.0, &started) !=
          b.depression->score(30.0, 100.0, x, x, 1.0, &started))
        return "it changes the depression score";
  return "";
}

}  // namespace ketasim
