#include "ketasim/model_catalog.hpp"

#include <cmath>
#include <stdexcept>

namespace ketasim {

int ModelCard::index_of(std::string_view parameter) const {
  for (std::size_t i = 0; i < parameters.size(); ++i)
    if (parameters[i].name == parameter) return static_cast<int>(i);
  return -1;
}

double to_display_unit(const ParameterSpec& spec, double value_in_base_units) {
  const auto unit = parse_unit(spec.unit);
  return unit ? value_in_base_units / unit->scale : value_in_base_units;
}

namespace {

struct SpecText {
  const char* name;
  double value;  // in `unit`
  const char* unit;
  double allometric_exponent;
  const char* description;
  const char* source;
  bool assumed = false;
  double upper_bound = 0.0;
};

ParameterSpec make_spec(const SpecText& text) {
  const auto unit = parse_unit(text.unit);
  if (!unit) throw std::logic_error(std::string("built-in model card uses an unknown unit: ") + text.unit);
  ParameterSpec spec;
  spec.name = text.name;
  spec.value = text.value * unit->scale;
  spec.unit = text.unit;
  spec.dimension = unit->dimension;
  spec.allometric_exponent = text.allometric_exponent;
  spec.upper_bound = text.upper_bound;
  spec.assumed = text.assumed;
  spec.description = text.description;
  spec.source = text.source;
  return spec;
}

// Allometric exponents for micro constants: CL and Q scale with WT^0.75 and volumes with WT, so
// every k = CL/V or Q/V scales with WT^-0.25.
constexpr double kRateExponent = -0.25;

// Dissociation (CADSS-like) proxy shared by the racemic IV cards: effect compartment and a
// sigmoid Emax on the S-enantiomer share of the effect-site concentration.
std::vector<ParameterSpec> dissociation_specs() {
  const double ke0_per_h = std::log(2.0) / (8.3 / 60.0);
  return {
      make_spec({"ke0", ke0_per_h, "1/h", 0.0, "plasma to effect-site equilibration (t1/2ke0 8.3 min)",
                 "Olofsen 2022, Anesthesiology 136:792 (S-ketamine psychedelic effects)"}),
      make_spec({"s_fraction", 0.5, "", 0.0, "S-enantiomer share of racemic ketamine driving dissociation",
                 "racemate is 1:1; R-ketamine did not contribute (Olofsen 2022)", false, 1.0}),
      make_spec({"ec50_s", 121.0, "ng/mL", 0.0, "S-ketamine effect-site concentration at half-maximal score",
                 "0.51 uM S-ketamine, Olofsen 2022"}),
      make_spec({"emax", 24.0, "", 0.0, "maximal dissociation score (CADSS-like points)",
                 "assumed: typical peak near the mean CADSS 7.7 after 0.5 mg/kg/40 min", true}),
      make_spec({"hill", 1.5, "", 0.0, "sigmoidicity of the dissociation link", "assumed: not retrieved (1-2)",
                 true}),
  };
}

ModelCard clements_2cmt() {
  ModelCard card;
  card.name = "ketamine_clements_2cmt";
  card.title = "Racemic ketamine IV, 2-compartment (venous default)";
  card.citation = "Clements JA, Nimmo WS. Br J Anaesth 1981;53:27-30 (parameters as coded in public TCI sets)";
  card.sampling = "venous";
  card.parameterization = PkParameterization::micro;
  card.peripheral_compartments = 1;
  const char* source = "Clements & Nimmo 1981; per-kg V1 of 1.7522 L/kg times 70 kg";
  card.parameters = {
      make_spec({"V1", 1.7522 * 70.0, "L", 1.0, "central volume", source}),
      make_spec({"k10", 0.0109 * 60.0, "1/h", kRateExponent, "elimination rate constant (0.0109 /min)", source}),
      make_spec({"k12", 0.0186 * 60.0, "1/h", kRateExponent, "central to peripheral (0.0186 /min)", source}),
      make_spec({"k21", 0.0137 * 60.0, "1/h", kRateExponent, "peripheral to central (0.0137 /min)", source}),
  };
  for (auto& spec : dissociation_specs()) card.parameters.push_back(std::move(spec));
  card.notes =
      "70 kg: CL 80 L/h, Vss 289 L. End of a 35 mg/40 min infusion about 177 ng/mL, close to the "
      "venous 185 ng/mL of psychiatric studies. Allometric scaling (CL, Q with WT^0.75, V with WT) "
      "replaces the original per-kg scaling.";
  return card;
}

ModelCard domino_3cmt() {
  ModelCard card;
  card.name = "ketamine_domino_3cmt";
  card.title = "Racemic ketamine IV, 3-compartment (arterial, TCI set)";
  card.citation = "Domino EF et al., STANPUMP/TCI parameter set (as coded in public TCI sets)";
  card.sampling = "arterial";
  card.parameterization = PkParameterization::micro;
  card.peripheral_compartments = 2;
  const char* source = "Domino (STANPUMP); per-kg V1 of 0.063 L/kg times 70 kg";
  card.parameters = {
      make_spec({"V1", 0.063 * 70.0, "L", 1.0, "central volume", source}),
      make_spec({"k10", 0.4381 * 60.0, "1/h", kRateExponent, "elimination rate constant (0.4381 /min)", source}),
      make_spec({"k12", 0.5921 * 60.0, "1/h", kRateExponent, "central to fast peripheral (0.5921 /min)", source}),
      make_spec({"k21", 0.2470 * 60.0, "1/h", kRateExponent, "fast peripheral to central (0.2470 /min)", source}),
      make_spec({"k13", 0.5900 * 60.0, "1/h", kRateExponent, "central to slow peripheral (0.5900 /min)", source}),
      make_spec({"k31", 0.0146 * 60.0, "1/h", kRateExponent, "slow peripheral to central (0.0146 /min)", source}),
  };
  for (auto& spec : dissociation_specs()) card.parameters.push_back(std::move(spec));
  card.notes =
      "Fitted to arterial samples with a small V1: over-predicts the venous end-of-infusion peak "
      "(about 240 ng/mL at 70 kg) and falls fast (about 55 ng/mL at 60 min). 70 kg: CL 116 L/h.";
  return card;
}

}  // namespace

const std::vector<ModelCard>& builtin_models() {
  static const std::vector<ModelCard> models{clements_2cmt(), domino_3cmt()};
  return models;
}

const ModelCard* find_builtin_model(std::string_view name) {
  for (const auto& card : builtin_models())
    if (card.name == name) return &card;
  return nullptr;
}

}  // namespace ketasim
