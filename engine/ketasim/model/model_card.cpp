#include "ketasim/model/model_card.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <variant>

#include "ketasim/base/time.hpp"
#include "ketasim/base/yaml_reader.hpp"

namespace ketasim {

std::string to_string(SessionKind kind) {
  switch (kind) {
    case SessionKind::drug:
      return "drug";
    case SessionKind::placebo:
      return "placebo";
    case SessionKind::active_placebo:
      return "active_placebo";
  }
  return "unknown";
}

std::string to_string(LinkShape shape) {
  switch (shape) {
    case LinkShape::linear:
      return "linear";
    case LinkShape::emax:
      return "emax";
    case LinkShape::sigmoid_emax:
      return "sigmoid_emax";
  }
  return "unknown";
}

int ModelCard::index_of(std::string_view parameter) const {
  for (std::size_t i = 0; i < parameters.size(); ++i)
    if (parameters[i].name == parameter) return static_cast<int>(i);
  return -1;
}

double to_display_unit(const ParameterSpec& spec, double value_in_base_units) {
  const auto unit = parse_unit(spec.unit);
  return unit ? value_in_base_units / unit->scale : value_in_base_units;
}

std::string implausible_parameter_value(const ParameterSpec& spec, double value) {
  const auto range = plausible_parameter_range(spec.dimension);
  if (!range || (value >= range->lowest && value <= range->highest) || (value == 0.0 && !spec.positive)) return "";
  const std::string unit = spec.unit.empty() ? "" : " " + spec.unit;
  const auto shown = [&](double bound) { return yaml::format_number(to_display_unit(spec, bound)); };
  const std::string lowest = range->lowest > 0.0 ? shown(range->lowest) : "0";
  return std::string("lies outside the plausible range for ") + range->what + " (" + lowest + " to " +
         shown(range->highest) + unit + (spec.positive || range->lowest == 0.0 ? "" : ", or exactly 0") +
         "); if the number is right, check its unit";
}

namespace {

using yaml::in_quotes;
using yaml::MapEntry;
using yaml::NodeRef;

constexpr const char* kDosedDrug = "dosed";  // a module's name for the including card's drug

// ---- Parameters ------------------------------------------------------------------------------

Iiv read_iiv(const NodeRef& node, const ParameterSpec& spec) {
  if (node.is_scalar()) {
    const double cv = node.as_percentage();
    if (!(cv >= 0.0 && cv <= 5.0)) node.fail(node.kind() + " lies outside 0% to 500%");
    return cv == 0.0 ? Iiv{} : Iiv{IivKind::log_normal, cv};
  }
  node.expect_map("a CV (e.g. 30%), {logit_sd: 0.7} or {sd: 0.1}, optionally with order: last");
  node.check_keys({"cv", "logit_sd", "sd", "order"});
  bool drawn_last = false;
  if (const auto order = node.find("order")) {
    if (order->as_string() != "last")
      order->fail("expected last (drawn after the subject's other random effects), not " + order->kind());
    drawn_last = true;
  }
  std::vector<MapEntry> entries = node.entries();
  std::erase_if(entries, [](const MapEntry& entry) { return entry.key == "order"; });
  if (entries.size() != 1) node.fail("give exactly one of cv, logit_sd or sd");
  const MapEntry& entry = entries.front();
  Iiv iiv;
  if (entry.key == "cv") {
    iiv = read_iiv(entry.value, spec);
  } else if (entry.key == "logit_sd") {
    const double sd = entry.value.as_number();
    if (!(sd >= 0.0)) entry.value.fail("a standard deviation must not be negative");
    iiv = Iiv{IivKind::logit_normal, sd};
  } else {
    const double sd =
        spec.dimension == dim::dimensionless ? entry.value.as_number() : entry.value.as_quantity(spec.dimension).value;
    if (!(sd >= 0.0)) entry.value.fail("a standard deviation must not be negative");
    iiv = Iiv{IivKind::normal, sd};
  }
  iiv.drawn_last = drawn_last && iiv.kind != IivKind::none;
  return iiv;
}

ParameterSpec read_parameter(const MapEntry& entry) {
  const NodeRef& node = entry.value;
  node.expect_map("a parameter {value: 80 L/h, allometry: 0.75, iiv: 30%, description: ..., source: ...}");
  node.check_keys(
      {"value", "unit", "allometry", "iiv", "age_effect", "assumed", "non_negative", "max", "description", "source"});
  ParameterSpec spec;
  spec.name = entry.key;
  const NodeRef value = node.require("value", "the typical value with its unit, e.g. value: 80 L/h");
  const std::string text = value.scalar("a value with its unit");
  std::string problem;
  const auto quantity = parse_quantity(text, &problem);
  if (!quantity) value.fail("cannot read " + in_quotes(text) + ": " + problem);
  spec.value = quantity->value;
  spec.dimension = quantity->dimension;
  // The display unit is the value's own unit ("80 L/h" -> "L/h"), unless given.
  const std::string_view trimmed = yaml::trim(text);
  const std::size_t unit_start = trimmed.find_first_not_of("+-0123456789.eE");
  spec.unit = unit_start == std::string_view::npos ? "" : std::string(yaml::trim(trimmed.substr(unit_start)));
  if (spec.unit == "%") spec.unit.clear();
  if (const auto unit = node.find("unit")) {
    spec.unit = unit->as_string();
    const auto parsed = parse_unit(spec.unit, &problem);
    if (!parsed || !(parsed->dimension == spec.dimension))
      unit->fail("the display unit " + unit->kind() + " does not match the value " + in_quotes(text));
  }
  if (const auto non_negative = node.find("non_negative")) spec.positive = !non_negative->as_boolean();
  if (spec.positive ? !(spec.value > 0.0) : !(spec.value >= 0.0))
    value.fail(value.kind() + (spec.positive ? " must be greater than 0" : " must not be negative"));
  if (const std::string implausible = implausible_parameter_value(spec, spec.value); !implausible.empty())
    value.fail(value.kind() + " " + implausible);
  if (const auto max = node.find("max")) {
    spec.upper_bound = max->as_quantity(spec.dimension).value;
    if (spec.value > spec.upper_bound) value.fail(value.kind() + " exceeds max " + max->kind());
  }
  if (const auto allometry = node.find("allometry")) spec.allometric_exponent = allometry->as_number();
  if (const auto iiv = node.find("iiv")) spec.iiv = read_iiv(*iiv, spec);
  if (const auto age = node.find("age_effect")) {
    age->expect_map("{above: 60 y, per_year: -2.19 L/h}");
    age->check_keys({"above", "per_year"});
    LinearCovariateEffect effect;
    effect.covariate = "age";
    effect.reference = age->require("above", "e.g. above: 60 y").as_quantity(dim::time).value / kHoursPerYear;
    effect.slope =
        age->require("per_year", "the change per year, e.g. per_year: -2.19 L/h").as_quantity(spec.dimension).value;
    spec.covariate_effect = effect;
  }
  if (const auto assumed = node.find("assumed")) spec.assumed = assumed->as_boolean();
  spec.description = node.require("description", "what the parameter is").as_string();
  spec.source = node.require("source", "where the value comes from (or why it is assumed)").as_string();
  return spec;
}

// ---- Blocks ----------------------------------------------------------------------------------

// Resolves parameter names in blocks and checks their dimensions.
class Resolver {
 public:
  explicit Resolver(const std::vector<ParameterSpec>& parameters) : parameters_(parameters) {}

  ParameterRef require(const NodeRef& block, std::string_view key, const Dimension& dimension) const {
    return resolve(block.require(key, "a parameter name"), dimension);
  }
  ParameterRef optional(const NodeRef& block, std::string_view key, const Dimension& dimension) const {
    const auto node = block.find(key);
    return node ? resolve(*node, dimension) : ParameterRef{};
  }
  ParameterRef resolve(const NodeRef& node, const Dimension& dimension) const {
    const std::string name = node.scalar("a parameter name");
    std::vector<std::string> names;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      if (parameters_[i].name == name) {
        if (!(parameters_[i].dimension == dimension)) {
          node.fail("parameter " + in_quotes(name) + " is " + describe(parameters_[i].dimension) + ", expected " +
                    describe(dimension));
        }
        return ParameterRef{static_cast<int>(i)};
      }
      names.push_back(parameters_[i].name);
    }
    node.fail("no parameter " + in_quotes(name) + yaml::did_you_mean(name, names));
  }
  // A rate constant or a clearance: {rate: k10} or {clearance: CL}.
  FirstOrder first_order(const NodeRef& node, std::string_view what) const {
    node.expect_map(std::string(what) + ": {rate: k10} or {clearance: CL}");
    node.check_keys({"rate", "clearance"});
    FirstOrder transfer;
    transfer.rate = optional(node, "rate", dim::rate_constant);
    transfer.clearance = optional(node, "clearance", dim::clearance);
    if (bool(transfer.rate) == bool(transfer.clearance)) node.fail("give exactly one of rate or clearance");
    return transfer;
  }

 private:
  const std::vector<ParameterSpec>& parameters_;
};

std::string read_name(const NodeRef& node, std::string_view key, std::string_view hint) {
  const NodeRef name = node.require(key, hint);
  std::string text = name.as_string();
  const bool safe = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
  if (!safe) name.fail("a name may contain only letters, digits and '_'");
  return text;
}

std::string read_drug(const NodeRef& node, std::string_view key, const std::string& dosed_drug) {
  std::string drug = read_name(node, key, "a drug name, e.g. ketamine");
  return drug == kDosedDrug ? dosed_drug : drug;
}

CompartmentsBlock read_compartments(const NodeRef& node, const Resolver& resolve, const std::string& dosed_drug) {
  node.expect_map("a compartments block {drug, molar_mass, central, peripherals, elimination | liver, formed_from}");
  node.check_keys({"drug", "molar_mass", "central", "peripherals", "elimination", "liver", "formed_from"});
  CompartmentsBlock block;
  block.drug = read_drug(node, "drug", dosed_drug);
  block.molar_mass_g_per_mol = node.require("molar_mass", "in g/mol, e.g. 237.7").as_number();
  if (!(block.molar_mass_g_per_mol > 0.0)) node.fail("molar_mass must be greater than 0");
  const NodeRef central = node.require("central", "{volume: V1}");
  central.expect_map("{volume: V1}");
  central.check_keys({"volume"});
  block.central_volume = resolve.require(central, "volume", dim::volume);
  if (const auto peripherals = node.find("peripherals")) {
    for (const NodeRef& item : peripherals->items("peripheral compartments")) {
      item.expect_map("{rate_out: k12, rate_back: k21} or {clearance: Q2, volume: V2}");
      item.check_keys({"rate_out", "rate_back", "clearance", "volume"});
      PeripheralSpec peripheral;
      if (item.find("clearance")) {
        peripheral.out.clearance = resolve.require(item, "clearance", dim::clearance);
        peripheral.back.clearance = peripheral.out.clearance;
        peripheral.volume = resolve.require(item, "volume", dim::volume);
      } else {
        peripheral.out.rate = resolve.require(item, "rate_out", dim::rate_constant);
        peripheral.back.rate = resolve.require(item, "rate_back", dim::rate_constant);
      }
      block.peripherals.push_back(peripheral);
    }
  }
  if (const auto elimination = node.find("elimination"))
    block.elimination = resolve.first_order(*elimination, "elimination");
  if (const auto liver = node.find("liver")) {
    liver->expect_map("{flow: Qh, volume: Vh, elimination_rates: [kel, kmet]}");
    liver->check_keys({"flow", "volume", "elimination_rates"});
    LiverSpec spec;
    spec.flow = resolve.require(*liver, "flow", dim::clearance);
    spec.volume = resolve.require(*liver, "volume", dim::volume);
    for (const NodeRef& rate : liver->require("elimination_rates", "[kel, kmet]").items("rate constants"))
      spec.elimination_rates.push_back(resolve.resolve(rate, dim::rate_constant));
    block.liver = spec;
  }
  if (!block.elimination && !block.liver)
    node.fail("a compartments block needs elimination or a liver to eliminate from");
  if (const auto formed = node.find("formed_from")) {
    formed->expect_map("{drug: ketamine, compartment: central, clearance: CL, fraction: fm}");
    formed->check_keys({"drug", "compartment", "rate", "clearance", "fraction"});
    FormationSpec formation;
    formation.drug = read_drug(*formed, "drug", dosed_drug);
    formation.compartment = read_name(*formed, "compartment", "central or liver");
    if (formation.compartment != "central" && formation.compartment != "liver")
      formed->require("compartment", "").fail("expected central or liver");
    formation.flux.rate = resolve.optional(*formed, "rate", dim::rate_constant);
    formation.flux.clearance = resolve.optional(*formed, "clearance", dim::clearance);
    if (bool(formation.flux.rate) == bool(formation.flux.clearance))
      formed->fail("give exactly one of rate or clearance");
    formation.fraction = resolve.optional(*formed, "fraction", dim::dimensionless);
    block.formed_from = formation;
  }
  return block;
}

// The signals defined so far, with their dimensions: a block may read only signals defined by
// an earlier block. Linear signals (plasma concentrations, effect sites, turnovers, session
// memories) may drive states; algebraic ones (links, the depression score) may not.
class Signals {
 public:
  void add(const NodeRef& where, const std::string& name, const Dimension& dimension, bool linear) {
    if (find(name)) where.fail("the signal " + in_quotes(name) + " is defined twice");
    signals_.push_back({name, dimension, linear});
  }
  // The dimension of a linear signal read by `key`; fails with the known names otherwise.
  Dimension linear_input(const NodeRef& block, std::string_view key) const {
    const NodeRef node = block.require(key, "the signal it reads, e.g. effect_site");
    const std::string name = node.as_string();
    const Entry* entry = find(name);
    std::vector<std::string> names;
    for (const Entry& known : signals_)
      if (known.linear) names.push_back(known.name);
    if (!entry) {
      node.fail("no signal " + in_quotes(name) + " defined before this block" + yaml::did_you_mean(name, names) +
                (names.empty() ? std::string() : "; known: " + yaml::join_alternatives(names, "and")));
    }
    if (!entry->linear) node.fail(in_quotes(name) + " is an algebraic signal; a state can only read linear signals");
    return entry->dimension;
  }
  // The dimension of the linear signal `name` (read at `node`).
  Dimension linear_signal(const NodeRef& node, const std::string& name) const {
    const Entry* entry = find(name);
    if (!entry) node.fail("no signal " + in_quotes(name) + " defined before this block");
    if (!entry->linear) node.fail(in_quotes(name) + " is an algebraic signal; only linear signals can be added");
    return entry->dimension;
  }

 private:
  struct Entry {
    std::string name;
    Dimension dimension;
    bool linear = true;
  };
  const Entry* find(const std::string& name) const {
    for (const Entry& entry : signals_)
      if (entry.name == name) return &entry;
    return nullptr;
  }
  std::vector<Entry> signals_;
};

Dimension unit_dimension(const NodeRef& node, const std::string& unit) {
  std::string problem;
  const auto parsed = parse_unit(unit, &problem);
  if (!parsed) node.fail("cannot read the unit " + in_quotes(unit) + ": " + problem);
  return parsed->dimension;
}

LinkRole read_link_role(const NodeRef& role) {
  const std::string name = role.as_string();
  if (name == "dissociation") return LinkRole::dissociation;
  if (name == "systolic_blood_pressure") return LinkRole::systolic_blood_pressure;
  role.fail("unknown role " + role.kind() + yaml::did_you_mean(name, {"dissociation", "systolic_blood_pressure"}) +
            "; expected dissociation or systolic_blood_pressure");
}

LinkBlock read_link(const NodeRef& node, const Resolver& resolve, Signals& signals) {
  node.expect_map("a link {name, input, shape, slope | emax, ec50, hill, ...}");
  node.check_keys(
      {"name", "dataset", "unit", "role", "input", "scale", "shape", "slope", "emax", "ec50", "hill", "attenuation"});
  LinkBlock link;
  link.name = read_name(node, "name", "a signal name, e.g. dissociation");
  link.dataset = node.find("dataset") ? read_name(node, "dataset", "") : link.name;
  if (const auto unit = node.find("unit")) link.unit = unit->as_string();
  const Dimension output = unit_dimension(node, link.unit);
  if (const auto role = node.find("role")) link.role = read_link_role(*role);
  const Dimension input = signals.linear_input(node, "input");
  link.input = node.require("input", "").as_string();
  link.scale = resolve.optional(node, "scale", dim::dimensionless);
  const NodeRef shape = node.require("shape", "linear, emax or sigmoid_emax");
  const std::string shape_name = shape.as_string();
  if (shape_name == "linear") {
    link.shape = LinkShape::linear;
  } else if (shape_name == "emax") {
    link.shape = LinkShape::emax;
  } else if (shape_name == "sigmoid_emax") {
    link.shape = LinkShape::sigmoid_emax;
  } else {
    shape.fail("unknown shape " + shape.kind() + yaml::did_you_mean(shape_name, {"linear", "emax", "sigmoid_emax"}) +
               "; expected linear, emax or sigmoid_emax");
  }
  if (link.shape == LinkShape::linear) {
    link.slope = resolve.require(node, "slope", output / input);
  } else {
    link.emax = resolve.require(node, "emax", output);
    link.ec50 = resolve.require(node, "ec50", input);
    if (link.shape == LinkShape::sigmoid_emax) link.hill = resolve.require(node, "hill", dim::dimensionless);
  }
  if (const auto attenuation = node.find("attenuation")) {
    attenuation->expect_map("{strength: diss_attenuation, half_life: diss_tolerance_half_life}");
    attenuation->check_keys({"strength", "half_life"});
    if (link.shape == LinkShape::linear) attenuation->fail("attenuation needs an Emax link (it lowers emax)");
    link.attenuation_strength = resolve.require(*attenuation, "strength", dim::dimensionless);
    link.attenuation_half_life = resolve.require(*attenuation, "half_life", dim::time);
  }
  signals.add(node, link.name, output, false);
  return link;
}

DepressionBlock read_depression(const NodeRef& node, const Resolver& resolve, Signals& signals) {
  node.expect_map("a depression block {name, drug, sustained, placebo, session, background, residual_sd}");
  node.check_keys({"name", "drug", "sustained", "placebo", "session", "background", "residual_sd"});
  DepressionBlock block;
  block.name = read_name(node, "name", "e.g. madrs");
  const NodeRef drug = node.require("drug", "{input: plasticity, emax: resp_emax, ec50: resp_ec50, hill: resp_hill}");
  drug.expect_map("{input, emax, ec50, hill}");
  drug.check_keys({"input", "emax", "ec50", "hill"});
  const Dimension input = signals.linear_input(drug, "input");
  block.drug_input = drug.require("input", "").as_string();
  block.drug_emax = resolve.require(drug, "emax", dim::dimensionless);
  block.drug_ec50 = resolve.require(drug, "ec50", input);
  block.drug_hill = resolve.require(drug, "hill", dim::dimensionless);
  if (const auto sustained = node.find("sustained")) {
    sustained->expect_map("{input: consolidation, emax: resp_sustained_emax, ec50: resp_sustained_ec50, hill: ...}");
    sustained->check_keys({"input", "emax", "ec50", "hill"});
    const Dimension sustained_dimension = signals.linear_input(*sustained, "input");
    block.sustained_input = sustained->require("input", "").as_string();
    if (block.sustained_input == block.drug_input)
      sustained->fail("the sustained input must differ from the drug input (" + block.drug_input + ")");
    block.sustained_emax = resolve.require(*sustained, "emax", dim::dimensionless);
    block.sustained_ec50 = resolve.require(*sustained, "ec50", sustained_dimension);
    block.sustained_hill = resolve.require(*sustained, "hill", dim::dimensionless);
  }
  const NodeRef placebo =
      node.require("placebo", "{magnitude: placebo_magnitude, onset_half_life: placebo_onset_half_life}");
  placebo.expect_map("{magnitude, onset_half_life}");
  placebo.check_keys({"magnitude", "onset_half_life"});
  block.placebo_magnitude = resolve.require(placebo, "magnitude", dim::dimensionless);
  block.placebo_onset_half_life = resolve.require(placebo, "onset_half_life", dim::time);
  if (const auto session = node.find("session")) {
    session->expect_map("{input: active_placebo_memory, magnitude: act_magnitude}");
    session->check_keys({"input", "magnitude"});
    const Dimension session_dimension = signals.linear_input(*session, "input");
    if (!(session_dimension == dim::dimensionless))
      session->fail("the session input must be dimensionless (a session_memory)");
    block.session_input = session->require("input", "").as_string();
    block.session_magnitude = resolve.require(*session, "magnitude", dim::dimensionless);
  }
  if (const auto background = node.find("background")) {
    background->expect_map("{magnitude: ad_magnitude, onset_half_life: ad_onset_half_life}");
    background->check_keys({"magnitude", "onset_half_life"});
    block.background_magnitude = resolve.require(*background, "magnitude", dim::dimensionless);
    block.background_onset_half_life = resolve.require(*background, "onset_half_life", dim::time);
  }
  block.residual_sd = resolve.require(node, "residual_sd", dim::dimensionless);
  signals.add(node, block.name, dim::dimensionless, false);
  return block;
}

std::vector<SessionKind> read_session_kinds(const NodeRef& node) {
  std::vector<SessionKind> kinds;
  for (const NodeRef& item : node.items("session kinds")) {
    const std::string name = item.as_string();
    bool known = false;
    for (const SessionKind kind : {SessionKind::drug, SessionKind::placebo, SessionKind::active_placebo}) {
      if (to_string(kind) == name) {
        kinds.push_back(kind);
        known = true;
      }
    }
    if (!known) item.fail("unknown session kind " + item.kind() + "; expected drug, placebo or active_placebo");
  }
  return kinds;
}

// Reads the body of one block (the map under its kind's key) into a block of that kind and checks
// it against the blocks before it (`drugs`: their compartments blocks by drug). One operator() per
// alternative of Block: std::visit fails to compile when a kind has none.
struct BlockReader {
  const NodeRef& node;
  const Resolver& resolve;
  Signals& signals;
  const std::string& dosed_drug;
  const std::map<std::string, const CompartmentsBlock*>& drugs;
  const std::vector<Block>& blocks;

  void operator()(CompartmentsBlock& block) const;
  void operator()(DepotBlock& block) const;
  void operator()(EffectSiteBlock& block) const;
  void operator()(TurnoverBlock& block) const;
  void operator()(SumBlock& block) const;
  void operator()(SessionMemoryBlock& block) const;
  void operator()(LinkBlock& block) const;
  void operator()(DepressionBlock& block) const;
};

void BlockReader::operator()(CompartmentsBlock& block) const {
  block = read_compartments(node, resolve, dosed_drug);
  if (drugs.count(block.drug)) node.fail("the drug " + in_quotes(block.drug) + " has two compartments blocks");
  if (block.formed_from) {
    const auto parent = drugs.find(block.formed_from->drug);
    if (parent == drugs.end())
      node.fail("formed_from: no compartments block for " + in_quotes(block.formed_from->drug) + " before this one");
    const FormationSpec& formation = *block.formed_from;
    const CompartmentsBlock& from = *parent->second;
    bool eliminates = false;
    if (formation.compartment == "liver") {
      if (!from.liver) node.fail("formed_from: " + in_quotes(formation.drug) + " has no liver compartment");
      for (const ParameterRef rate : from.liver->elimination_rates)
        eliminates |= rate.index == formation.flux.rate.index;
    } else if (from.elimination) {
      eliminates = (formation.flux.rate && from.elimination->rate.index == formation.flux.rate.index) ||
                   (formation.flux.clearance && from.elimination->clearance.index == formation.flux.clearance.index);
    }
    // Mass balance: the metabolite may only take part of a path that removes the parent.
    if (!eliminates)
      node.fail("formed_from: the flux must be one of the elimination paths of " + in_quotes(formation.drug) + "'s " +
                formation.compartment + " compartment");
  }
  signals.add(node, "plasma_" + block.drug, dim::concentration, true);
}

void BlockReader::operator()(DepotBlock& block) const {
  node.expect_map("a depot {name, drug, into, ka, bioavailability}");
  node.check_keys({"name", "drug", "into", "ka", "bioavailability"});
  block.name = read_name(node, "name", "e.g. nasal");
  block.drug = read_drug(node, "drug", dosed_drug);
  block.into = read_name(node, "into", "central or liver");
  const auto drug = drugs.find(block.drug);
  if (drug == drugs.end()) node.fail("no compartments block for " + in_quotes(block.drug) + " before this depot");
  if (block.into != "central" && !(block.into == "liver" && drug->second->liver))
    node.require("into", "").fail("expected central" + std::string(drug->second->liver ? " or liver" : ""));
  block.ka = resolve.require(node, "ka", dim::rate_constant);
  block.bioavailability = resolve.optional(node, "bioavailability", dim::dimensionless);
}

void BlockReader::operator()(EffectSiteBlock& block) const {
  node.expect_map("an effect site {name, drug, ke0}");
  node.check_keys({"name", "drug", "ke0"});
  block.name = read_name(node, "name", "e.g. effect_site");
  block.drug = read_drug(node, "drug", dosed_drug);
  if (!drugs.count(block.drug))
    node.fail("no compartments block for " + in_quotes(block.drug) + " before this effect site");
  block.ke0 = resolve.require(node, "ke0", dim::rate_constant);
  signals.add(node, block.name, dim::concentration, true);
}

void BlockReader::operator()(TurnoverBlock& block) const {
  node.expect_map("a turnover {name, input, scale, half_life, form}");
  node.check_keys({"name", "input", "scale", "half_life", "form"});
  block.name = read_name(node, "name", "e.g. plasticity");
  const Dimension input = signals.linear_input(node, "input");
  block.input = node.require("input", "").as_string();
  block.scale = resolve.optional(node, "scale", dim::dimensionless);
  block.half_life = resolve.require(node, "half_life", dim::time);
  if (const auto form = node.find("form")) {
    const std::string name = form->as_string();
    if (name == "equilibrating")
      block.form = TurnoverBlock::Form::equilibrating;
    else if (name != "integrating")
      form->fail("unknown form " + form->kind() + "; expected integrating or equilibrating");
  }
  signals.add(node, block.name, block.form == TurnoverBlock::Form::integrating ? input * dim::time : input, true);
}

void BlockReader::operator()(SumBlock& block) const {
  node.expect_map("a sum {name, inputs: [a, {signal: b, weight: w}]}");
  node.check_keys({"name", "inputs"});
  block.name = read_name(node, "name", "e.g. response_drive");
  const NodeRef inputs = node.require("inputs", "the signals added, e.g. [plasticity, consolidation]");
  std::optional<Dimension> dimension;
  for (const NodeRef& input : inputs.items("signal names")) {
    std::string name;
    if (input.is_map()) {
      input.check_keys({"signal", "weight"});
      name = input.require("signal", "the signal added").as_string();
      block.weights.push_back(resolve.require(input, "weight", dim::dimensionless));
    } else {
      name = input.as_string();
      block.weights.push_back(ParameterRef{});
    }
    // Each input must be a linear signal defined earlier, all of one dimension.
    const Dimension d = signals.linear_signal(input, name);
    if (dimension && !(*dimension == d)) input.fail("the inputs of a sum must have one dimension");
    dimension = d;
    block.inputs.push_back(name);
  }
  if (block.inputs.empty()) inputs.fail("a sum needs at least one input");
  signals.add(node, block.name, *dimension, true);
}

void BlockReader::operator()(SessionMemoryBlock& block) const {
  node.expect_map("a session memory {name, sessions, half_life}");
  node.check_keys({"name", "sessions", "half_life"});
  block.name = read_name(node, "name", "e.g. active_placebo_memory");
  block.sessions = read_session_kinds(node.require("sessions", "e.g. [active_placebo]"));
  block.half_life = resolve.require(node, "half_life", dim::time);
  signals.add(node, block.name, dim::dimensionless, true);
}

void BlockReader::operator()(LinkBlock& block) const {
  block = read_link(node, resolve, signals);
}

void BlockReader::operator()(DepressionBlock& block) const {
  for (const Block& earlier : blocks)
    if (std::holds_alternative<DepressionBlock>(earlier)) node.fail("a card has at most one depression block");
  block = read_depression(node, resolve, signals);
}

// Block's alternatives as indices 0..N-1, for the two functions below.
constexpr auto kBlockKinds = std::make_index_sequence<std::variant_size_v<Block>>();

template <std::size_t... Kind>
std::vector<std::string> block_kind_names(std::index_sequence<Kind...>) {
  return {std::string(std::variant_alternative_t<Kind, Block>::kind)...};
}

// A default block of the kind named `name`, or nullopt when no alternative of Block has that kind.
template <std::size_t... Kind>
std::optional<Block> block_of_kind(std::string_view name, std::index_sequence<Kind...>) {
  std::optional<Block> block;
  ((name == std::variant_alternative_t<Kind, Block>::kind ? void(block.emplace(std::in_place_index<Kind>)) : void()),
   ...);
  return block;
}

const Block& read_block(const NodeRef& item, const Resolver& resolve, Signals& signals, const std::string& dosed_drug,
                        const std::map<std::string, const CompartmentsBlock*>& drugs, std::vector<Block>& blocks) {
  const std::vector<std::string> kinds = block_kind_names(kBlockKinds);
  item.expect_map("a block: a map with one key (" + yaml::join_alternatives(kinds) + ")");
  const auto entries = item.entries();
  if (entries.size() != 1) item.fail("a block is a map with exactly one key, its kind");
  const MapEntry& entry = entries.front();
  std::optional<Block> block = block_of_kind(entry.key, kBlockKinds);
  if (!block)
    throw ScenarioError(entry.key_where, entry.value.path,
                        "unknown block kind " + in_quotes(entry.key) + yaml::did_you_mean(entry.key, kinds) +
                            "; expected " + yaml::join_alternatives(kinds));
  std::visit(BlockReader{entry.value, resolve, signals, dosed_drug, drugs, blocks}, *block);
  blocks.push_back(std::move(*block));
  return blocks.back();
}

RouteEntries read_routes(const NodeRef& node, const Resolver& resolve, const std::vector<Block>& blocks,
                         const std::string& dosed_drug) {
  node.expect_map("how doses enter: {iv: {drug: ketamine}, intranasal: {...}}");
  node.check_keys({"iv", "intranasal"});
  const auto has_depot = [&](const std::string& drug, const std::string& name) {
    for (const Block& block : blocks)
      if (const auto* depot = std::get_if<DepotBlock>(&block); depot && depot->drug == drug && depot->name == name)
        return true;
    return false;
  };
  const auto has_drug = [&](const std::string& drug) {
    for (const Block& block : blocks)
      if (const auto* compartments = std::get_if<CompartmentsBlock>(&block); compartments && compartments->drug == drug)
        return true;
    return false;
  };
  RouteEntries routes;
  if (const auto iv = node.find("iv")) {
    iv->expect_map("{drug: ketamine}");
    iv->check_keys({"drug"});
    routes.iv = IvEntry{read_drug(*iv, "drug", dosed_drug)};
    if (!has_drug(routes.iv->drug)) iv->fail("no compartments block for " + in_quotes(routes.iv->drug));
  }
  if (const auto nasal = node.find("intranasal")) {
    nasal->expect_map(
        "{drug, device, device_interval, nasal: {depot, fraction, later_device_factor}, swallowed: {depot, duration}}");
    nasal->check_keys({"drug", "device", "device_interval", "nasal", "swallowed"});
    IntranasalEntry entry;
    entry.drug = read_drug(*nasal, "drug", dosed_drug);
    const NodeRef device = nasal->require("device", "the drug per device, e.g. 28 mg");
    entry.device_mg = device.as_quantity(dim::drug_mass).value;
    if (!(entry.device_mg > 0.0)) device.fail("must be greater than 0");
    entry.device_interval_h = nasal->require("device_interval", "e.g. 5 min").as_quantity(dim::time).value;
    const NodeRef nasal_part = nasal->require("nasal", "{depot: nasal, fraction: FRn, later_device_factor: FRn_later}");
    nasal_part.check_keys({"depot", "fraction", "later_device_factor"});
    entry.nasal_depot = read_name(nasal_part, "depot", "a depot name");
    entry.nasal_fraction = resolve.require(nasal_part, "fraction", dim::dimensionless);
    entry.later_device_factor = resolve.optional(nasal_part, "later_device_factor", dim::dimensionless);
    const NodeRef swallowed = nasal->require("swallowed", "{depot: gut, duration: Tswallow}");
    swallowed.check_keys({"depot", "duration"});
    entry.swallowed_depot = read_name(swallowed, "depot", "a depot name");
    entry.swallowed_duration = resolve.require(swallowed, "duration", dim::time);
    for (const auto* depot : {&entry.nasal_depot, &entry.swallowed_depot})
      if (!has_depot(entry.drug, *depot)) nasal->fail("no depot " + in_quotes(*depot) + " of " + in_quotes(entry.drug));
    routes.intranasal = entry;
  }
  return routes;
}

std::vector<ResidualError> read_residual_errors(const NodeRef& node) {
  std::vector<ResidualError> errors;
  for (const NodeRef& item : node.items("residual errors")) {
    item.expect_map("{analyte: ketamine, proportional: 30%, source: ...} or {analyte, log_sd: 0.276, source}");
    item.check_keys({"analyte", "proportional", "additive", "log_sd", "assumed", "source"});
    ResidualError error;
    error.analyte = read_name(item, "analyte", "a drug");
    if (const auto proportional = item.find("proportional")) error.proportional = proportional->as_percentage();
    if (const auto additive = item.find("additive"))
      error.additive_mg_per_L = additive->as_quantity(dim::concentration).value;
    if (const auto log_sd = item.find("log_sd")) {
      error.log_scale = true;
      error.proportional = log_sd->as_number();
    }
    if (error.proportional == 0.0 && error.additive_mg_per_L == 0.0) item.fail("give proportional, additive or log_sd");
    error.source = item.require("source", "where the error model comes from").as_string();
    if (const auto assumed = item.find("assumed"); assumed && assumed->as_string() == "true")
      error.source = "ASSUMED: " + error.source;
    errors.push_back(error);
  }
  return errors;
}

struct ParsedParts {
  std::vector<ParameterSpec> parameters;
  std::vector<NodeRef> structure;  // block items, resolved once every parameter is known
  std::string calibration;
};

// Parameters of a module (each name once across modules), or of the card itself, which may
// replace a module's parameter (e.g. the S-enantiomer share of esketamine is 1, not 0.5).
void read_parameters(const NodeRef& node, std::vector<ParameterSpec>& parameters, bool card_level) {
  node.expect_map("a map of parameters by name");
  for (const MapEntry& entry : node.entries()) {
    ParameterSpec spec = read_parameter(entry);
    const auto known =
        std::find_if(parameters.begin(), parameters.end(), [&](const ParameterSpec& p) { return p.name == entry.key; });
    if (known == parameters.end()) {
      parameters.push_back(std::move(spec));
    } else if (card_level) {
      if (!(known->dimension == spec.dimension))
        throw ScenarioError(entry.key_where, entry.value.path,
                            "parameter " + in_quotes(entry.key) +
                                " replaces a module parameter of another dimension (" + describe(known->dimension) +
                                ")");
      *known = std::move(spec);
    } else {
      throw ScenarioError(entry.key_where, entry.value.path,
                          "parameter " + in_quotes(entry.key) + " is defined by two modules");
    }
  }
}

// Replaces the values of the parameters a calibration fitted.
void apply_calibration(const std::string& name, const CardSources& sources, std::vector<ParameterSpec>& parameters) {
  const std::string text = sources.calibration_text ? sources.calibration_text(name) : std::string();
  if (text.empty()) return;  // not fitted yet: the card's starting values stand
  const NodeRef root = yaml::load_document(text, "models/calibration/" + name + ".fit.yaml");
  root.expect_map("a calibration result {calibration, fitted: {...}}");
  const NodeRef fitted = root.require("fitted", "the fitted values by parameter");
  // "P: value" replaces a typical value; "P.iiv: magnitude" the size of P's variability (a CV as
  // a fraction for log-normal, else an SD), keeping its kind.
  for (const MapEntry& entry : fitted.entries()) {
    const bool iiv = entry.key.size() > 4 && entry.key.ends_with(".iiv");
    const std::string parameter = iiv ? entry.key.substr(0, entry.key.size() - 4) : entry.key;
    const auto found =
        std::find_if(parameters.begin(), parameters.end(), [&](const ParameterSpec& p) { return p.name == parameter; });
    if (found == parameters.end())
      throw ScenarioError(entry.key_where, entry.value.path,
                          "the calibration fitted " + in_quotes(entry.key) + ", which the card does not have");
    if (iiv) {
      if (found->iiv.kind == IivKind::none) found->iiv.kind = IivKind::log_normal;
      found->iiv.magnitude = entry.value.as_number();
    } else {
      found->value = entry.value.as_quantity(found->dimension).value;
    }
    found->calibrated_by = name;
    found->assumed = false;
  }
}

}  // namespace

ModelCard parse_model_card(const std::string& yaml_text, const std::string& source_name, const CardSources& sources) {
  const NodeRef root = yaml::load_document(yaml_text, source_name);
  root.expect_map("a model card (card, title, citation, drug, parameters, structure, routes)");
  root.check_keys({"card", "title", "citation", "sampling", "drug", "reference_weight", "include", "calibration",
                   "parameters", "structure", "routes", "residual_error", "notes"});
  ModelCard card;
  card.source_file = source_name;
  card.name = read_name(root, "card", "the card's name, e.g. card: ketamine_venous");
  card.title = root.require("title", "a one-line title").as_string();
  card.citation = root.require("citation", "the publication(s) the card transcribes").as_string();
  if (const auto sampling = root.find("sampling")) card.sampling = sampling->as_string();
  card.drug = read_name(root, "drug", "the dosed drug, e.g. drug: ketamine");
  if (const auto weight = root.find("reference_weight"))
    card.reference_weight_kg = weight->as_quantity(dim::body_mass).value;
  if (const auto notes = root.find("notes")) card.notes = notes->as_string();

  // Modules first (their parameters and blocks), then the card's own.
  std::vector<NodeRef> structure;
  std::vector<NodeRef> module_roots;  // kept alive for their blocks' locations
  if (const auto include = root.find("include")) {
    for (const NodeRef& item : include->items("module names")) {
      const std::string module = item.as_string();
      const std::string text = sources.module_text ? sources.module_text(module) : std::string();
      if (text.empty()) item.fail("unknown module " + item.kind());
      const NodeRef module_root = yaml::load_document(text, "models/modules/" + module + ".yaml");
      module_root.expect_map("a module (module, parameters, structure)");
      module_root.check_keys({"module", "description", "calibration", "parameters", "structure"});
      read_parameters(module_root.require("parameters", "its parameters"), card.parameters, false);
      // `calibration: NAME` or a list of names, applied in order.
      if (const auto calibration = module_root.find("calibration")) {
        const std::vector<NodeRef> names =
            calibration->is_sequence() ? calibration->items("calibration names") : std::vector<NodeRef>{*calibration};
        for (const NodeRef& name : names) card.calibrations.push_back(name.as_string());
      }
      for (const NodeRef& block : module_root.require("structure", "its blocks").items("blocks"))
        structure.push_back(block);
      card.included_modules.push_back(module);
      module_roots.push_back(module_root);
    }
  }
  read_parameters(root.require("parameters", "the card's parameters"), card.parameters, true);
  // The card's own calibration (e.g. esketamine's response fitted to esketamine trials) comes last.
  if (const auto calibration = root.find("calibration")) {
    const std::string name = read_name(root, "calibration", "the name of the card's own calibration");
    if (std::find(card.calibrations.begin(), card.calibrations.end(), name) != card.calibrations.end())
      calibration->fail("calibration " + in_quotes(name) + " is already a module's calibration");
    card.calibrations.push_back(name);
  }
  for (const std::string& calibration : card.calibrations) apply_calibration(calibration, sources, card.parameters);

  // The card's own blocks come before the modules': a module reads the card's drug.
  std::vector<NodeRef> own = root.require("structure", "the card's blocks").items("blocks");
  own.insert(own.end(), structure.begin(), structure.end());
  const Resolver resolve(card.parameters);
  Signals signals;
  std::map<std::string, const CompartmentsBlock*> drugs;
  card.blocks.reserve(own.size());  // pointers into blocks stay valid
  for (const NodeRef& item : own) {
    const Block& block = read_block(item, resolve, signals, card.drug, drugs, card.blocks);
    if (const auto* compartments = std::get_if<CompartmentsBlock>(&block)) drugs[compartments->drug] = compartments;
  }
  if (!drugs.count(card.drug))
    root.require("drug", "").fail("no compartments block for the dosed drug " + in_quotes(card.drug));
  card.routes = read_routes(root.require("routes", "how doses enter, e.g. routes: {iv: {drug: ketamine}}"), resolve,
                            card.blocks, card.drug);
  if (const auto errors = root.find("residual_error")) {
    card.residual_errors = read_residual_errors(*errors);
    for (std::size_t i = 0; i < card.residual_errors.size(); ++i) {
      if (!drugs.count(card.residual_errors[i].analyte))
        errors->items("residual errors")[i].fail("no compartments block for the analyte " +
                                                 in_quotes(card.residual_errors[i].analyte));
    }
  }
  return card;
}

// ---- Built-in cards ----------------------------------------------------------------------------

namespace embedded {
// Generated from models/ at build time (cmake/embed_models.cmake).
struct Text {
  const char* kind;  // "card", "module" or "calibration"
  const char* name;
  const char* text;
};
extern const Text kTexts[];
extern const std::size_t kTextCount;
}  // namespace embedded

namespace {
std::string embedded_text(std::string_view kind, std::string_view name) {
  for (std::size_t i = 0; i < embedded::kTextCount; ++i)
    if (kind == embedded::kTexts[i].kind && name == embedded::kTexts[i].name) return embedded::kTexts[i].text;
  return {};
}
}  // namespace

std::string builtin_module_text(std::string_view name) {
  return embedded_text("module", name);
}
std::string builtin_calibration_text(std::string_view name) {
  return embedded_text("calibration", name);
}

const std::vector<ModelCard>& builtin_models() {
  static const std::vector<ModelCard> cards = [] {
    std::vector<ModelCard> parsed;
    const CardSources sources{[](std::string_view name) { return builtin_module_text(name); },
                              [](std::string_view name) { return builtin_calibration_text(name); }};
    for (std::size_t i = 0; i < embedded::kTextCount; ++i) {
      if (std::string_view(embedded::kTexts[i].kind) != "card") continue;
      parsed.push_back(parse_model_card(embedded::kTexts[i].text,
                                        std::string("models/") + embedded::kTexts[i].name + ".yaml", sources));
    }
    return parsed;
  }();
  return cards;
}

const ModelCard* find_builtin_model(std::string_view name) {
  for (const auto& card : builtin_models())
    if (card.name == name) return &card;
  return nullptr;
}

}  // namespace ketasim
