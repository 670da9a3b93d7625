// Arms with models of their own (issue 9, section 1): every arm simulates its own card with its own
// parameter values, whatever the other arms and their order; the result file records them.

#include <H5Cpp.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "closed_forms.hpp"
#include "engine_fixtures.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/run/run.hpp"

using namespace ketasim;
using namespace ketasim::testing;
namespace fs = std::filesystem;

namespace {

// One 40 mg infusion over 40 min at time 0, in every arm.
const std::string kDose =
    "regimen: {route: iv_infusion, dose: 40 mg, infusion_duration: 40 min, schedule: {at: [0 h]}}";

std::string arm(const std::string& name, const std::string& model) {
  return "  - {name: " + name + (model.empty() ? "" : ", model: " + model) + ", " + kDose + "}\n";
}

// A scenario of 24 subjects (weights 45-150 kg, the card's variability), the given top-level
// model and arms, a grid of 10 days (the drug is gone long before its end).
Scenario scenario_with(const std::string& model, const std::string& arms, const std::string& cohort_extra = "") {
  return parse_scenario("name: arm_models\nmodel: " + model +
                            "\ncohort:\n  size: 24\n  seed: 77\n"
                            "  weight: {distribution: normal, mean: 80 kg, sd: 20 kg, min: 45 kg, max: 150 kg}\n" +
                            cohort_extra + "arms:\n" + arms +
                            "output: {grid: {every: 1 h, for: 10 d}, variables: []}\n",
                        "arm_models.yaml");
}

// The same bits (a NaN equals the same NaN; 0 and -0 differ).
bool identical_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// Every subject column and metric of two arms, bit for bit.
void require_same_subjects(const ArmResults& a, const ArmResults& b) {
  REQUIRE(a.subject_columns.size() == b.subject_columns.size());
  REQUIRE(a.metrics.size() == b.metrics.size());
  for (const auto& [name, values] : a.subject_columns) {
    INFO("subjects/" << name);
    REQUIRE(b.subject_columns.count(name) == 1);
    CHECK(identical_bits(values, b.subject_columns.at(name)));
  }
  for (const auto& [name, values] : a.metrics) {
    INFO("metrics/" << name);
    REQUIRE(b.metrics.count(name) == 1);
    CHECK(identical_bits(values, b.metrics.at(name)));
  }
  CHECK(a.status == b.status);
}

fs::path temporary_file(const std::string& name) {
  return fs::temp_directory_path() / ("ketasim_test_arm_models_" + std::to_string(::getpid()) + "_" + name);
}

std::vector<std::string> text_array_attribute(const H5::Group& group, const char* name) {
  const H5::Attribute attribute = group.openAttribute(name);
  const auto count = static_cast<std::size_t>(attribute.getSpace().getSimpleExtentNpoints());
  std::vector<char*> pointers(count);
  if (count > 0) attribute.read(attribute.getStrType(), pointers.data());
  std::vector<std::string> values(pointers.begin(), pointers.end());
  if (count > 0)
    H5Dvlen_reclaim(attribute.getStrType().getId(), attribute.getSpace().getId(), H5P_DEFAULT, pointers.data());
  return values;
}

std::vector<double> number_array_attribute(const H5::Group& group, const char* name) {
  const H5::Attribute attribute = group.openAttribute(name);
  std::vector<double> values(static_cast<std::size_t>(attribute.getSpace().getSimpleExtentNpoints()));
  if (!values.empty()) attribute.read(H5::PredType::NATIVE_DOUBLE, values.data());
  return values;
}

}  // namespace

TEST_CASE("arms that differ only in CL: each subject's AUC is dose / its CL, and its CL scales with the arm's",
          "[arm_models]") {
  // The card's variability applies (CL 30% CV): subject i has the same eta in every arm, so its
  // clearance in the 60 L/h arm is exactly 60/100 of that in the 100 L/h arm.
  const Scenario scenario =
      scenario_with("{name: ketamine_venous}", arm("cl_60", "{name: ketamine_venous, parameters: {CL: 60 L/h}}") +
                                                   arm("cl_80", "{name: ketamine_venous, parameters: {CL: 80 L/h}}") +
                                                   arm("cl_100", "{name: ketamine_venous, parameters: {CL: 100 L/h}}"));
  const ScenarioResults results = run_in_memory(scenario, 2, 7);
  const ArmResults& slow = results.arm("cl_60");
  const ArmResults& fast = results.arm("cl_100");
  for (const char* name : {"cl_60", "cl_80", "cl_100"}) {
    const ArmResults& one = results.arm(name);
    for (std::size_t i = 0; i < 24; ++i) {
      INFO(name << " subject " << i);
      REQUIRE(one.status[i] == 0);
      // AUC (ng*h/mL = ug*h/L) of 40,000 ug over the whole elimination = dose / CL.
      CHECK(one.metrics.at("auc_ng_h_per_ml")[i] * one.subject_columns.at("CL")[i] == Approx(40000.0).epsilon(1e-7));
    }
  }
  for (std::size_t i = 0; i < 24; ++i) {
    INFO("subject " << i);
    CHECK(slow.subject_columns.at("CL")[i] / fast.subject_columns.at("CL")[i] == Approx(0.6).epsilon(1e-12));
    CHECK(slow.metrics.at("auc_ng_h_per_ml")[i] / fast.metrics.at("auc_ng_h_per_ml")[i] ==
          Approx(100.0 / 60.0).epsilon(1e-7));
    CHECK(slow.subject_columns.at("V1")[i] == fast.subject_columns.at("V1")[i]);  // the same patient
  }
}

TEST_CASE("an arm's V1 gives the closed-form 2-compartment peak at the end of the infusion", "[arm_models]") {
  // Clements & Nimmo at 70 kg, no PK variability on the card: Cmax is the closed-form
  // concentration at the end of the 40 min infusion, with the arm's V1 (60 L) or the card's.
  const Scenario scenario = parse_scenario(
      "name: v1\nmodel: {name: ketamine_clements_2cmt}\ncohort: {size: 4, seed: 3, weight: 70 kg}\narms:\n" +
          arm("small_v1", "{name: ketamine_clements_2cmt, parameters: {V1: 60 L}}") + arm("card", "") +
          "output: {grid: {every: 5 min, for: 2 d}, variables: []}\n",
      "v1.yaml");
  const ScenarioResults results = run_in_memory(scenario);
  const std::vector<Dose> doses{infusion(0, 40 * kTicksPerMinute, 40.0)};
  MammillaryEffectParameters small = two_compartment();
  small.V1_L = 60.0;
  const double end_of_infusion_h = 40.0 / 60.0;
  const double expected_small = 1000.0 * plasma_at(disposition(small), doses, end_of_infusion_h);
  const double expected_card = 1000.0 * plasma_at(disposition(two_compartment()), doses, end_of_infusion_h);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(results.arm("small_v1").metrics.at("cmax_ng_per_ml")[i] == Approx(expected_small).epsilon(1e-6));
    CHECK(results.arm("card").metrics.at("cmax_ng_per_ml")[i] == Approx(expected_card).epsilon(1e-6));
  }
  CHECK(expected_small / expected_card == Approx(122.654 / 60.0).epsilon(1e-12));  // the oracle itself: C = A / V1
}

TEST_CASE("an arm's results do not depend on the order of the arms", "[arm_models]") {
  // Two arms of one card (one with its own V1), one of the scenario's card with its own CL, one of
  // another card, and one without a model block; then the same arms in reverse order.
  const std::vector<std::string> arms{arm("small_v1", "{name: ketamine_clements_2cmt, parameters: {V1: 60 L}}"),
                                      arm("clements", "{name: ketamine_clements_2cmt}"),
                                      arm("cl_60", "{name: ketamine_venous, parameters: {CL: 60 L/h}}"),
                                      arm("domino", "{name: ketamine_domino_3cmt}"), arm("scenario_model", "")};
  std::string forward, reverse;
  for (std::size_t a = 0; a < arms.size(); ++a) {
    forward += arms[a];
    reverse += arms[arms.size() - 1 - a];
  }
  const std::string variability = "  variability: {cv: {V1: 25%, resp_ec50: 30%}}\n";
  const ScenarioResults one = run_in_memory(scenario_with("{name: ketamine_venous}", forward, variability), 2, 5);
  const ScenarioResults other = run_in_memory(scenario_with("{name: ketamine_venous}", reverse, variability), 1, 24);
  for (const char* name : {"small_v1", "clements", "cl_60", "domino", "scenario_model"}) {
    INFO("arm " << name);
    require_same_subjects(one.arm(name), other.arm(name));
  }
  // And the arms do differ: a smaller V1 gives a higher peak.
  CHECK(one.arm("small_v1").metrics.at("cmax_ng_per_ml")[0] >
        1.5 * one.arm("clements").metrics.at("cmax_ng_per_ml")[0]);
}

TEST_CASE("arms with identical models give identical subjects, and the same as a scenario of that model alone",
          "[arm_models]") {
  // cl_60 and again_60 are the same model (the scenario's V1, their CL; given in another order);
  // cl_100 differs in CL only.
  const Scenario scenario =
      scenario_with("{name: ketamine_venous, parameters: {V1: 90 L}}",
                    arm("cl_60", "{name: ketamine_venous, parameters: {CL: 60 L/h}}") +
                        arm("cl_100", "{name: ketamine_venous, parameters: {CL: 100 L/h}}") +
                        arm("again_60", "{name: ketamine_venous, parameters: {V1: 90 L, CL: 60 L/h}}"));
  const ScenarioResults results = run_in_memory(scenario);
  require_same_subjects(results.arm("cl_60"), results.arm("again_60"));
  const auto& auc_60 = results.arm("cl_60").metrics.at("auc_ng_h_per_ml");
  const auto& auc_100 = results.arm("cl_100").metrics.at("auc_ng_h_per_ml");
  for (std::size_t i = 0; i < 24; ++i) CHECK(auc_60[i] / auc_100[i] == Approx(100.0 / 60.0).epsilon(1e-7));

  // The scenario whose own model is {V1: 90 L, CL: 60 L/h}, with one arm without a model block.
  const Scenario alone = scenario_with("{name: ketamine_venous, parameters: {CL: 60 L/h, V1: 90 L}}", arm("cl_60", ""));
  require_same_subjects(results.arm("cl_60"), run_in_memory(alone).arm("cl_60"));
}

TEST_CASE("an arm of another card is the same patient: covariates and the random effects of shared parameters",
          "[arm_models]") {
  // resp_ec50 is in every card (the PD module); CL only in ketamine_venous. The scenario's 40% CV
  // on resp_ec50 applies to both cards with the same eta, so subject i has the same resp_ec50 in
  // both arms, as it has the same resp_emax and placebo_magnitude (the cards' own variability).
  // Before, the nasal arm lost the scenario's variability and its etas were shifted by CL's.
  const Scenario scenario = scenario_with("{name: ketamine_venous}",
                                          arm("iv", "") +
                                              "  - {name: nasal, model: {name: esketamine_intranasal}, regimen: "
                                              "{route: intranasal, dose: 56 mg, schedule: {at: [0 h]}}}\n",
                                          "  variability: {cv: {CL: 25%, resp_ec50: 40%}}\n");
  const ScenarioResults results = run_in_memory(scenario);
  const ArmResults& iv = results.arm("iv");
  const ArmResults& nasal = results.arm("nasal");
  for (const char* name : {"weight_kg", "age_y", "female", "baseline_madrs", "placebo_magnitude"}) {
    INFO(name);
    CHECK(identical_bits(iv.subject_columns.at(name), nasal.subject_columns.at(name)));
  }
  CHECK(identical_bits(iv.metrics.at("madrs_baseline"), nasal.metrics.at("madrs_baseline")));
  // The esketamine card has its own typical resp_ec50 and resp_emax (calibration
  // esketamine_response): the same eta gives the same ratio to the typical value (log-normal) and
  // the same logit shift (logit-normal).
  const auto typical = [](const char* card, const char* name) {
    const ModelCard& model = *find_builtin_model(card);
    return model.parameters[static_cast<std::size_t>(model.index_of(name))].value;
  };
  const auto logit = [](double p) { return std::log(p / (1.0 - p)); };
  const double ec50_iv = typical("ketamine_venous", "resp_ec50"),
               ec50_nasal = typical("esketamine_intranasal", "resp_ec50");
  const double emax_iv = typical("ketamine_venous", "resp_emax"),
               emax_nasal = typical("esketamine_intranasal", "resp_emax");
  REQUIRE(ec50_iv != ec50_nasal);
  const std::vector<double>& ec50_a = iv.subject_columns.at("resp_ec50");
  const std::vector<double>& ec50_b = nasal.subject_columns.at("resp_ec50");
  const std::vector<double>& emax_a = iv.subject_columns.at("resp_emax");
  const std::vector<double>& emax_b = nasal.subject_columns.at("resp_emax");
  REQUIRE(ec50_a.size() == ec50_b.size());
  for (std::size_t i = 0; i < ec50_a.size(); ++i) {
    INFO("subject " << i);
    CHECK(std::log(ec50_a[i] / ec50_iv) == Approx(std::log(ec50_b[i] / ec50_nasal)).margin(1e-9));
    CHECK(logit(emax_a[i]) - logit(emax_iv) == Approx(logit(emax_b[i]) - logit(emax_nasal)).margin(1e-9));
  }
}

TEST_CASE("the result file records each arm's card and parameter values", "[arm_models][hdf5]") {
  const Scenario scenario = scenario_with(
      "{name: ketamine_venous, parameters: {V1: 120 L}}",
      arm("scenario_model", "") + arm("cl_60", "{name: ketamine_venous, parameters: {CL: 60 L/h, V1: 100000 mL}}") +
          "  - {name: nasal, model: {name: esketamine_intranasal, parameters: {Vc: 150 L}}, regimen: {route: "
          "intranasal, dose: 56 mg, "
          "schedule: {at: [0 h]}}}\n" +
          arm("clements", "{name: ketamine_clements_2cmt, parameters: {V1: 120 L}}"));
  const fs::path output = temporary_file("provenance.h5");
  RunOptions options;
  options.output_path = output.string();
  run_scenario(scenario, options);
  H5::H5File file(output.string(), H5F_ACC_RDONLY);
  const auto read_model = [&](const std::string& name) {
    const H5::Group group = file.openGroup("arms/" + name);
    const H5::Attribute model = group.openAttribute("model");
    std::string card;
    model.read(model.getStrType(), card);
    return std::make_tuple(card, text_array_attribute(group, "model_parameters"),
                           number_array_attribute(group, "model_parameter_values"),
                           text_array_attribute(group, "model_parameter_units"));
  };
  using Strings = std::vector<std::string>;
  using Numbers = std::vector<double>;
  CHECK(read_model("scenario_model") ==
        std::make_tuple(std::string("ketamine_venous"), Strings{"V1"}, Numbers{120.0}, Strings{"L"}));
  // The scenario's V1 is replaced by the arm's (given in mL, recorded in the card's unit).
  CHECK(read_model("cl_60") == std::make_tuple(std::string("ketamine_venous"), Strings{"V1", "CL"},
                                               Numbers{100.0, 60.0}, Strings{"L", "L/h"}));
  CHECK(read_model("nasal") ==
        std::make_tuple(std::string("esketamine_intranasal"), Strings{"Vc"}, Numbers{150.0}, Strings{"L"}));
  CHECK(read_model("clements") ==
        std::make_tuple(std::string("ketamine_clements_2cmt"), Strings{"V1"}, Numbers{120.0}, Strings{"L"}));
  file.close();
  fs::remove(output);
}

TEST_CASE("an arm of another card that sets the scenario's shared parameters itself is accepted",
          "[arm_models][scenario]") {
  // resp_ec50 is in both cards (the PD module): the nasal arm says which value it uses (the
  // corpus has the refusal when it does not). CL is not in the nasal card: it concerns the IV arm.
  const Scenario scenario = scenario_with("{name: ketamine_venous, parameters: {resp_ec50: 200 ng*h/mL, CL: 70 L/h}}",
                                          arm("iv", "") +
                                              "  - {name: nasal, model: {name: esketamine_intranasal, parameters: "
                                              "{resp_ec50: 150 ng*h/mL}}, regimen: {route: "
                                              "intranasal, dose: 56 mg, schedule: {at: [0 h]}}}\n");
  const auto layouts = arm_layouts(scenario);
  CHECK(layouts[0].model_parameters.size() == 2);
  REQUIRE(layouts[1].model_parameters.size() == 1);
  CHECK(layouts[1].model_parameters[0].name == "resp_ec50");
  CHECK(layouts[1].model_parameters[0].value == Approx(150.0));
}
