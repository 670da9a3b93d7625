// The model library: every built-in card loads and compiles, each block agrees with its closed
// form, mass balance holds through metabolite formation and the intranasal paths, and malformed
// cards are refused with a located message.

#include <catch2/catch.hpp>
#include <cmath>
#include <numbers>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "engine_fixtures.hpp"
#include "ketasim/analysis/statistics.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/solve/exact_propagator.hpp"
#include "ketasim/solve/simulate.hpp"

using namespace ketasim;
using namespace ketasim::testing;

namespace {

constexpr double kLn2 = std::numbers::ln2;

std::vector<double> typical_values(const ModelCard& card) {
  std::vector<double> values;
  for (const ParameterSpec& spec : card.parameters) values.push_back(spec.value);
  return values;
}

// A small card in the card language, parsed without modules.
ModelCard card_from(const std::string& text) {
  return parse_model_card(text, "test_card.yaml", CardSources{});
}

struct Trajectories {
  std::vector<std::vector<float>> rows;
  SubjectMetrics metrics;
};

// Runs a card's typical subject and returns the requested outputs on the grid.
Trajectories run_card(const ModelCard& card, const std::vector<Dose>& doses, const std::vector<std::string>& outputs,
                      Ticks step, Ticks end, SolverMethod method = SolverMethod::exact) {
  const Model model(card);
  const SubjectModel subject = model.instantiate(typical_values(card));
  SimulationPlan plan;
  plan.grid_step = step;
  plan.grid_end = end;
  Trajectories result;
  result.rows.assign(outputs.size(), std::vector<float>(plan.time_points()));
  TrajectoryRows rows;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const ModelOutput* output = model.find_output(outputs[i]);
    REQUIRE(output != nullptr);
    rows.push_back({output, result.rows[i].data()});
  }
  SolverSpec solver;
  solver.method = method;
  solver.rtol = 1e-10;
  solver.atol = 1e-14;
  result.metrics = sized_metrics(model, plan, doses.size());
  std::vector<Dose> given = doses;
  simulate_subject(model, subject, solver, plan, given, SubjectContext{}, rows, result.metrics);
  return result;
}

// A 1-compartment parent (V 100 L, k 0.5/h) with a depot (ka 2/h, F 0.8), a metabolite formed from
// 60% of its elimination (V 50 L, k 0.2/h, molar ratio 0.9), and a turnover and a session memory.
const char* kBlocksCard = R"(
card: blocks
title: test
citation: test
drug: parent
parameters:
  V:    {value: 100 L, description: d, source: s}
  k:    {value: 0.5 1/h, description: d, source: s}
  ka:   {value: 2 1/h, description: d, source: s}
  F:    {value: 0.8, max: 1, description: d, source: s}
  fm:   {value: 0.6, max: 1, description: d, source: s}
  Vm:   {value: 50 L, description: d, source: s}
  CLm:  {value: 10 L/h, description: d, source: s}
  CL:   {value: 50 L/h, description: d, source: s}
  t_slow: {value: 10 h, description: d, source: s}
  w:    {value: 2, description: d, source: s}
  t_memory: {value: 24 h, description: d, source: s}
structure:
  - compartments:
      drug: parent
      molar_mass: 100
      central: {volume: V}
      elimination: {clearance: CL}
  - depot: {name: gut, drug: parent, into: central, ka: ka, bioavailability: F}
  - compartments:
      drug: child
      molar_mass: 90
      central: {volume: Vm}
      elimination: {clearance: CLm}
      formed_from: {drug: parent, compartment: central, clearance: CL, fraction: fm}
  - turnover: {name: exposure, input: plasma_parent, half_life: t_slow}
  - turnover: {name: follower, input: plasma_parent, scale: w, half_life: t_slow, form: equilibrating}
  - session_memory: {name: memory, sessions: [drug, placebo], half_life: t_memory}
routes:
  iv: {drug: parent}
)";

}  // namespace

TEST_CASE("every built-in card loads, compiles and can be stepped exactly", "[cards]") {
  REQUIRE(builtin_models().size() >= 4);
  for (const ModelCard& card : builtin_models()) {
    INFO(card.name);
    CHECK_FALSE(card.citation.empty());
    CHECK(card.index_of("ke0") >= 0);  // every card includes the pharmacodynamic module
    const Model model(card);
    CHECK(model.find_output("plasma_" + card.drug) != nullptr);
    CHECK(model.find_output("dissociation") != nullptr);
    CHECK(model.find_output("madrs") != nullptr);
    const SubjectModel subject = model.instantiate(typical_values(card));
    std::string why;
    CHECK(ExactPropagator<16>::create(subject, &why).has_value());
    for (const ParameterSpec& spec : card.parameters) {
      INFO(spec.name);
      CHECK_FALSE(spec.source.empty());
      CHECK(std::isfinite(spec.value));
    }
  }
  // The response parameters come from the committed calibration, and say so.
  const ModelCard& venous = *find_builtin_model("ketamine_venous");
  CHECK(venous.parameter(ParameterRef{venous.index_of("resp_ec50")}).calibrated_by == "ketamine_response");
  CHECK(venous.parameter(ParameterRef{venous.index_of("ec50_s")}).calibrated_by.empty());
  // A card may replace a module parameter: esketamine is all S-enantiomer.
  const ModelCard& esketamine = *find_builtin_model("esketamine_intranasal");
  CHECK(esketamine.parameter(ParameterRef{esketamine.index_of("s_fraction")}).value == 1.0);
  CHECK(venous.parameter(ParameterRef{venous.index_of("s_fraction")}).value == 0.5);
}

TEST_CASE("depot block: the Bateman function", "[cards][closed_form]") {
  const ModelCard card = card_from(kBlocksCard);
  // The depot has no route of its own: give the dose as a jump into the depot by hand.
  const Model model(card);
  const SubjectModel subject = model.instantiate(typical_values(card));
  const auto exact = ExactPropagator<8>::create(subject);
  REQUIRE(exact);
  auto state = exact->initial_state();
  // Channel 0 is iv (parent.central); build the depot jump from the state vector directly.
  StateVector jump = StateVector::Zero(subject.states);
  jump(1) = 100.0;  // parent.gut is the second state (after parent.central)
  REQUIRE(model.state_names()[1] == "parent.gut");
  state.modal.head(subject.states) += exact->input(jump).head(subject.states);
  const double V = 100, k = 0.5, ka = 2, F = 0.8;
  const auto zero = exact->input(StateVector::Zero(subject.states));
  for (const double t : {0.25, 1.0, 3.0, 10.0}) {
    auto at = state;
    exact->advance(at, exact->factors(t), zero);
    const double bateman = F * 100.0 * ka / (V * (ka - k)) * (std::exp(-k * t) - std::exp(-ka * t));
    CHECK(exact->signal(at, model.find_signal("plasma_parent")) == Approx(bateman).epsilon(1e-10));
  }
}

TEST_CASE("metabolite, turnover and equilibrating blocks: closed forms after a bolus", "[cards][closed_form]") {
  const ModelCard card = card_from(kBlocksCard);
  const double V = 100, k = 0.5, fm = 0.6, Vm = 50, km = 0.2, ratio = 0.9, kslow = kLn2 / 10.0, w = 2.0;
  const double dose = 100.0, C0 = dose / V;
  for (const SolverMethod method : {SolverMethod::exact, SolverMethod::ode}) {
    const Trajectories run = run_card(card, {bolus(0, dose)}, {"plasma_parent", "plasma_child", "exposure", "follower"},
                                      kTicksPerHour, 24 * kTicksPerHour, method);
    for (std::size_t h = 1; h <= 24; h += 5) {
      const double t = static_cast<double>(h);
      INFO("t = " << t << " h, method " << static_cast<int>(method));
      const double parent = C0 * std::exp(-k * t);
      // Metabolite amount: fm k D ratio / (km - k) (e^-kt - e^-km t), as a concentration in Vm.
      const double child = fm * k * dose * ratio / (km - k) * (std::exp(-k * t) - std::exp(-km * t)) / Vm;
      const double exposure = C0 * (std::exp(-k * t) - std::exp(-kslow * t)) / (kslow - k);
      const double follower = w * kslow * exposure;
      CHECK(run.rows[0][h] == Approx(parent * 1000.0).epsilon(1e-6));
      CHECK(run.rows[1][h] == Approx(child * 1000.0).epsilon(1e-6));
      CHECK(run.rows[2][h] == Approx(exposure * 1000.0).epsilon(1e-6));
      CHECK(run.rows[3][h] == Approx(follower * 1000.0).epsilon(1e-6));
    }
  }
}

TEST_CASE("session memory: a unit jump per session, decaying", "[cards][closed_form]") {
  const ModelCard card = card_from(kBlocksCard);
  Dose placebo = infusion(2 * kTicksPerHour, 40 * kTicksPerMinute, 0.0);
  placebo.drug = DoseDrug::placebo;
  Dose midazolam = infusion(5 * kTicksPerHour, 40 * kTicksPerMinute, 0.0);
  midazolam.drug = DoseDrug::active_placebo;  // not a session kind the memory counts
  const Trajectories run = run_card(card, {placebo, midazolam, bolus(10 * kTicksPerHour, 1.0)},
                                    {"memory", "plasma_parent"}, kTicksPerHour, 24 * kTicksPerHour);
  const double kmem = kLn2 / 24.0;
  for (std::size_t h = 0; h <= 24; ++h) {
    const double t = static_cast<double>(h);
    double expected = 0.0;
    for (const double session : {2.0, 10.0})
      if (t >= session) expected += std::exp(-kmem * (t - session));
    INFO("t = " << t);
    CHECK(run.rows[0][h] == Approx(expected).margin(1e-6));
  }
  CHECK(run.rows[1][5] == 0.0f);  // placebo sessions give no drug
}

TEST_CASE("mass balance through metabolite formation, with a depot losing part of its drug", "[cards][mass_balance]") {
  const ModelCard card = card_from(kBlocksCard);
  const std::vector<Dose> doses{infusion(0, 2 * kTicksPerHour, 60.0), bolus(5 * kTicksPerHour, 40.0)};
  for (const SolverMethod method : {SolverMethod::exact, SolverMethod::ode}) {
    const Trajectories run = run_card(card, doses, {}, 30 * kTicksPerMinute, 30 * kTicksPerHour, method);
    const SubjectMetrics& m = run.metrics;
    INFO("method " << static_cast<int>(method));
    CHECK(m.given_mg[0] == Approx(100.0));
    CHECK(m.amount_in_body_end_mg[0] + m.eliminated_mg[0] == Approx(m.given_mg[0]).epsilon(1e-8));
    // What the metabolite received is 60% of the parent's elimination, in its own molar mass.
    CHECK(m.formed_mg[1] == Approx(0.6 * 0.9 * m.eliminated_mg[0]).epsilon(1e-8));
    CHECK(m.amount_in_body_end_mg[1] + m.eliminated_mg[1] == Approx(m.formed_mg[1]).epsilon(1e-8));
  }
}

TEST_CASE("intranasal esketamine: devices, swallowed part and mass balance of both drugs", "[cards][mass_balance]") {
  const ModelCard& card = *find_builtin_model("esketamine_intranasal");
  const Model model(card);
  const SubjectModel subject = model.instantiate(typical_values(card));
  Dose session;
  session.start = kTicksPerHour;
  session.amount_mg = 84.0;
  session.route = Route::intranasal;
  const std::vector<ModelInput> inputs = model_inputs({session}, model, subject);
  double nasal = 0.0, swallowed = 0.0;
  int devices = 0;
  for (const ModelInput& input : inputs) {
    if (input.channel == model.nasal_channel()) {
      nasal += input.amount;
      ++devices;
      CHECK(input.start == kTicksPerHour + (devices - 1) * 5 * kTicksPerMinute);
    }
    if (input.channel == model.swallowed_channel()) {
      swallowed += input.amount;
      CHECK(input.duration == std::llround(0.53 * kTicksPerHour));
    }
  }
  CHECK(devices == 3);
  // Device 1: FRn; devices 2 and 3: FRn x 0.62 (Perez-Ruixo 2021).
  CHECK(nasal == Approx(28.0 * 0.54 * (1.0 + 2.0 * 0.62)));
  CHECK(nasal + swallowed == Approx(84.0));

  for (const SolverMethod method : {SolverMethod::exact, SolverMethod::ode}) {
    const Trajectories run = run_card(card, {session}, {"plasma_esketamine", "plasma_noresketamine"},
                                      15 * kTicksPerMinute, 48 * kTicksPerHour, method);
    const SubjectMetrics& m = run.metrics;
    INFO("method " << static_cast<int>(method));
    CHECK(m.given_mg[0] == Approx(84.0));
    CHECK(m.amount_in_body_end_mg[0] + m.eliminated_mg[0] == Approx(84.0).epsilon(1e-7));
    CHECK(m.formed_mg[1] > 0.0);
    CHECK(m.amount_in_body_end_mg[1] + m.eliminated_mg[1] == Approx(m.formed_mg[1]).epsilon(1e-7));
    // Noresketamine peaks after esketamine.
    CHECK(m.metabolite_tmax_h[0] > m.tmax_h);
  }
}

TEST_CASE("links and the depression score follow their formulas", "[cards]") {
  LinkValues link;
  link.shape = LinkShape::sigmoid_emax;
  link.scale = 0.5;
  link.emax = 30.0;
  link.ec50 = 0.1;
  link.hill = 2.0;
  CHECK(link(0.2, 0.0) == Approx(15.0));  // scale x input = ec50: half of emax
  CHECK(link(0.0, 0.0) == 0.0);
  CHECK(link.input_for(15.0, 0.0) == Approx(0.2));
  CHECK(link.input_for(30.0, 0.0) == std::numeric_limits<double>::infinity());
  link.attenuation = 1.0;
  CHECK(link(0.2, 1.0) == Approx(7.5));  // emax halved by a tolerance of 1
  link.hill = 2.7;
  CHECK(link(0.4, 0.0) == Approx(30.0 * std::pow(2.0, 2.7) / (1.0 + std::pow(2.0, 2.7))));

  DepressionValues depression;
  depression.emax = 0.6;
  depression.ec50 = 100.0;
  depression.hill = 2.0;
  depression.placebo = 0.2;
  depression.placebo_rate_per_h = kLn2 / 24.0;
  depression.session_magnitude = 0.1;
  depression.background = 0.1;
  depression.background_rate_per_h = kLn2 / 24.0;
  const AntidepressantCourse started;                                   // with the first session
  CHECK(depression.score(30.0, -1.0, 0.0, 0.0, 0.0, nullptr) == 30.0);  // before treatment
  // One day in: half the placebo, half the background, the session memory 2, drug input = ec50.
  // The components are shares of the possible improvement: (1 - 0.1 * 2)(1 - 0.1)(1 - 0.05).
  const double expected = 30.0 * (1.0 - 0.2) * (1.0 - 0.1) * (1.0 - 0.05) * (1.0 - 0.3);
  CHECK(depression.score(30.0, 24.0, 100.0, 0.0, 2.0, &started) == Approx(expected));
  CHECK(depression.score(30.0, 24.0, 100.0, 0.0, 2.0, nullptr) == Approx(30.0 * (1.0 - 0.2) * (1.0 - 0.1) * 0.7));
  // Without a sustained component its input is ignored; with one, it is a further independent
  // share: at its ec50 (hill 3), half of emax 0.4, so the drug keeps (1 - 0.3)(1 - 0.2).
  CHECK(depression.score(30.0, 24.0, 100.0, 7.0, 2.0, nullptr) == Approx(30.0 * (1.0 - 0.2) * (1.0 - 0.1) * 0.7));
  depression.sustained_signal = 1;
  depression.sustained_emax = 0.4;
  depression.sustained_ec50 = 7.0;
  depression.sustained_hill = 3.0;
  CHECK(depression.score(30.0, 24.0, 100.0, 7.0, 2.0, nullptr) == Approx(30.0 * (1.0 - 0.2) * (1.0 - 0.1) * 0.7 * 0.8));
  CHECK(depression.score(30.0, 24.0, 0.0, 14.0, 0.0, nullptr) ==
        Approx(30.0 * (1.0 - 0.2 * 0.5) * (1.0 - 0.4 * 8.0 / 9.0)));
  depression.sustained_signal = -1;
  // No share of improvement beyond all of it or below none: the score stays within [0, baseline]
  // whatever the components' values (a subject drawn far in a tail, many session memories).
  depression.placebo = -5.0;
  CHECK(depression.score(50.0, 1e6, 0.0, 0.0, 0.0, nullptr) == 50.0);
  depression.placebo = 0.2;
  CHECK(depression.score(30.0, 24.0, 0.0, 0.0, 50.0, nullptr) == 0.0);

  // Antidepressant courses, without the other components (onset and offset half-life 1 d).
  depression.placebo = 0.0;
  depression.session_magnitude = 0.0;
  depression.background = 0.2;
  const auto score = [&](const AntidepressantCourse& course, double hours) {
    return depression.score(30.0, hours, 0.0, 0.0, 0.0, &course);
  };
  CHECK(score(started, 24.0) == Approx(30.0 * (1.0 - 0.2 * 0.5)));
  // Stable, at its full effect (in the baseline): nothing changes until it is stopped; then the
  // effect halves each day and the score rises towards 30 / (1 - 0.2) = 37.5.
  AntidepressantCourse stable{-std::numeric_limits<double>::infinity()};
  CHECK(score(stable, 24.0 * 30) == Approx(30.0));
  stable.stopped_h = 48.0;
  CHECK(score(stable, 48.0) == Approx(30.0));
  CHECK(score(stable, 72.0) == Approx(30.0 * (1.0 - 0.2 * 0.5) / 0.8));
  CHECK(score(stable, 1e5) == Approx(37.5));
  // A lead-in: started 1 d before the first session, the baseline has half its effect; a day later,
  // three quarters: 30 (1 - 0.15) / (1 - 0.1).
  const AntidepressantCourse lead_in{-24.0};
  CHECK(score(lead_in, 0.0) == Approx(30.0));
  CHECK(score(lead_in, 24.0) == Approx(30.0 * (1.0 - 0.2 * 0.75) / (1.0 - 0.2 * 0.5)));
  // Started a day after the first session, stopped two days later.
  const AntidepressantCourse later{24.0, 72.0};
  CHECK(score(later, 24.0) == Approx(30.0));
  CHECK(score(later, 72.0) == Approx(30.0 * (1.0 - 0.2 * 0.75)));
  CHECK(score(later, 96.0) == Approx(30.0 * (1.0 - 0.2 * 0.375)));
}

TEST_CASE("Kaplan-Meier: survival and the median against hand-computed cases", "[statistics]") {
  // Times 1, 2, 2+, 3, 4+, 5 (the censoring at 2 counts as at risk at 2): S = 5/6 after 1,
  // x 4/5 after 2 (2/3), x 2/3 after 3 (4/9), x 0 after 5.
  const KaplanMeier km = kaplan_meier({1, 2, 2, 3, 4, 5}, {true, true, false, true, false, true});
  REQUIRE(km.times == std::vector<double>{1, 2, 3, 5});
  CHECK(km.survival[0] == Approx(5.0 / 6.0));
  CHECK(km.survival[1] == Approx(2.0 / 3.0));
  CHECK(km.survival[2] == Approx(4.0 / 9.0));
  CHECK(km.at_risk == std::vector<int>{6, 5, 3, 1});
  CHECK(km.survival[3] == 0.0);
  CHECK(km.median == 3.0);
  // S = 0.5 exactly on [2, 4): R's survfit reports the midpoint, 3.
  CHECK(kaplan_meier({1, 2, 4, 5}, {true, true, true, true}).median == 3.0);
  // More than half censored before an event: no median.
  CHECK(std::isnan(kaplan_meier({1, 2, 3}, {true, false, false}).median));
}

TEST_CASE("malformed cards are refused with file:line:column and what was expected", "[cards][errors]") {
  const auto message_of = [](const std::string& text) {
    try {
      card_from(text);
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  const std::string head =
      "card: bad\ntitle: t\ncitation: c\ndrug: parent\nparameters:\n"
      "  V: {value: 100 L, description: d, source: s}\n  CL: {value: 10 L/h, description: d, source: s}\n";
  const std::string routes = "routes:\n  iv: {drug: parent}\n";
  CHECK_THAT(message_of(head +
                        "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: VV}, "
                        "elimination: {clearance: CL}}\n" +
                        routes),
             Catch::Contains("test_card.yaml:9:") && Catch::Contains("no parameter 'VV' (did you mean 'V'?)"));
  CHECK_THAT(message_of(head +
                        "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: CL}, "
                        "elimination: {clearance: CL}}\n" +
                        routes),
             Catch::Contains("parameter 'CL' is a clearance (e.g. 80 L/h), expected a volume"));
  CHECK_THAT(message_of(head + "structure:\n  - compartment: {drug: parent}\n" + routes),
             Catch::Contains("unknown block kind 'compartment' (did you mean 'compartments'?)"));
  CHECK_THAT(message_of(head +
                        "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: V}, "
                        "elimination: {clearance: CL}}\n  - effect_site: {name: ce, drug: other, ke0: CL}\n" +
                        routes),
             Catch::Contains("no compartments block for 'other'"));
  CHECK_THAT(
      message_of(head +
                 "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: V}, "
                 "elimination: {clearance: CL}}\n  - link: {name: l, input: nothing, shape: linear, slope: V}\n" +
                 routes),
      Catch::Contains("no signal 'nothing' defined before this block"));
  // A metabolite must take part of an elimination path of its parent (mass balance).
  CHECK_THAT(
      message_of(
          head +
          "  k: {value: 1 1/h, description: d, source: s}\nstructure:\n"
          "  - compartments: {drug: parent, molar_mass: 100, central: {volume: V}, elimination: {clearance: CL}}\n"
          "  - compartments: {drug: child, molar_mass: 90, central: {volume: V}, elimination: {clearance: CL},"
          " formed_from: {drug: parent, compartment: central, rate: k}}\n" +
          routes),
      Catch::Contains("the flux must be one of the elimination paths"));
}

namespace {

std::string card_error(const std::string& text) {
  try {
    card_from(text);
  } catch (const ScenarioError& error) {
    return error.what();
  }
  return "no error";
}

// The message a card whose only block is `- KIND: 5` (a body that is not a map) fails with.
std::string message_for_block_body_of_kind(std::string_view kind) {
  return card_error(
      "card: bad\ntitle: t\ncitation: c\ndrug: parent\nparameters:\n"
      "  V: {value: 100 L, description: d, source: s}\nstructure:\n  - " +
      std::string(kind) + ": 5\nroutes:\n  iv: {drug: parent}\n");
}

template <std::size_t... Kind>
std::vector<std::string_view> every_block_kind(std::index_sequence<Kind...>) {
  return {std::variant_alternative_t<Kind, Block>::kind...};
}

}  // namespace

TEST_CASE("link roles: a link is found by its role, not its name, an unknown role is refused", "[cards][errors]") {
  const std::string head =
      "card: roles\ntitle: t\ncitation: c\ndrug: parent\nparameters:\n"
      "  V: {value: 100 L, description: d, source: s}\n  CL: {value: 10 L/h, description: d, source: s}\n"
      "  e: {value: 10 mmHg, description: d, source: s}\n  c: {value: 100 ng/mL, description: d, source: s}\n"
      "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: V}, "
      "elimination: {clearance: CL}}\n";
  const std::string routes = "routes:\n  iv: {drug: parent}\n";
  // Two blood-pressure-like links; the second has the role, and its name says nothing.
  const ModelCard card =
      card_from(head +
                "  - link: {name: pressure_a, unit: mmHg, input: plasma_parent, shape: emax, emax: e, ec50: c}\n"
                "  - link: {name: pressure_b, unit: mmHg, role: systolic_blood_pressure, input: plasma_parent, "
                "shape: emax, emax: e, ec50: c}\n" +
                routes);
  REQUIRE(card.link_with_role(LinkRole::systolic_blood_pressure) != nullptr);
  CHECK(card.link_with_role(LinkRole::systolic_blood_pressure)->name == "pressure_b");
  CHECK(card.link_with_role(LinkRole::dissociation) == nullptr);
  // The shipped PD module marks its systolic link so (compare's peak SBP rise).
  for (const ModelCard& builtin : builtin_models()) {
    REQUIRE(builtin.link_with_role(LinkRole::systolic_blood_pressure) != nullptr);
    CHECK(builtin.link_with_role(LinkRole::systolic_blood_pressure)->name == "sbp_change");
  }
  CHECK_THAT(card_error(head +
                        "  - link: {name: p, unit: mmHg, role: systolic_blood_presure, input: plasma_parent, "
                        "shape: emax, emax: e, ec50: c}\n" +
                        routes),
             Catch::Contains("unknown role 'systolic_blood_presure' (did you mean 'systolic_blood_pressure'?); "
                             "expected dissociation or systolic_blood_pressure"));
}

TEST_CASE("every alternative of Block is a block kind of the card language, under its own key", "[cards][errors]") {
  const auto kinds = every_block_kind(std::make_index_sequence<std::variant_size_v<Block>>());
  REQUIRE(kinds.size() == 8);
  for (const std::string_view kind : kinds) {
    INFO("block kind " << kind);
    // Read by the kind's own reader: it asks for that block's map, not for a known kind.
    const std::string message = message_for_block_body_of_kind(kind);
    CHECK_THAT(message, Catch::Contains("test_card.yaml:8:") && !Catch::Contains("unknown block kind"));
  }
  // The list in the messages (and in docs/model-cards.md) is the variant's, in its order.
  CHECK_THAT(message_for_block_body_of_kind("compartment"),
             Catch::EndsWith("unknown block kind 'compartment' (did you mean 'compartments'?); expected compartments, "
                             "depot, effect_site, turnover, sum, session_memory, link or depression"));
  CHECK_THAT(card_error("card: bad\ntitle: t\ncitation: c\ndrug: parent\nparameters: {}\nstructure: [5]\n"),
             Catch::Contains("a block: a map with one key (compartments, depot, effect_site, turnover, sum, "
                             "session_memory, link or depression)"));
}

TEST_CASE("depression: a sustained component is read with its own input and parameters", "[cards][errors]") {
  const std::string head =
      "card: sustained\ntitle: t\ncitation: c\ndrug: parent\nparameters:\n"
      "  V: {value: 100 L, description: d, source: s}\n  CL: {value: 10 L/h, description: d, source: s}\n"
      "  th: {value: 2 d, description: d, source: s}\n  e: {value: 0.5, description: d, source: s}\n"
      "  c: {value: 50 ng*h/mL, description: d, source: s}\n  h: {value: 2, description: d, source: s}\n"
      "  p: {value: 0.1, description: d, source: s}\n  r: {value: 3, description: d, source: s}\n"
      "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: V}, "
      "elimination: {clearance: CL}}\n"
      "  - turnover: {name: fast, input: plasma_parent, half_life: th}\n"
      "  - turnover: {name: slow, input: fast, half_life: th, form: equilibrating}\n"
      "  - depression:\n      name: madrs\n      drug: {input: fast, emax: e, ec50: c, hill: h}\n";
  const std::string tail =
      "      placebo: {magnitude: p, onset_half_life: th}\n      residual_sd: r\n"
      "routes:\n  iv: {drug: parent}\n";
  const ModelCard card = card_from(head + "      sustained: {input: slow, emax: e, ec50: c, hill: h}\n" + tail);
  const auto* depression = std::get_if<DepressionBlock>(&card.blocks.back());
  REQUIRE(depression != nullptr);
  CHECK(depression->sustained_input == "slow");
  CHECK(std::get_if<DepressionBlock>(&card_from(head + tail).blocks.back())->sustained_input.empty());
  CHECK_THAT(card_error(head + "      sustained: {input: fast, emax: e, ec50: c, hill: h}\n" + tail),
             Catch::Contains("the sustained input must differ from the drug input (fast)"));
  CHECK_THAT(card_error(head + "      sustained: {input: slow, emax: e, ec50: c}\n" + tail), Catch::Contains("hill"));
}

TEST_CASE("a card's own calibration applies after its module's, for that card only", "[cards][calibration]") {
  // The module's calibration fits a and b; the card's fits b again and c. The card's value of b wins.
  const CardSources sources{
      [](std::string_view name) {
        return name == "m" ? std::string(
                                 "module: m\ncalibration: [fit_m]\nparameters:\n"
                                 "  a: {value: 1, description: d, source: s}\n"
                                 "  b: {value: 2, description: d, source: s}\nstructure: []\n")
                           : std::string();
      },
      [](std::string_view name) {
        if (name == "fit_m") return std::string("calibration: fit_m\nfitted:\n  a: 10\n  b: 20\n");
        if (name == "fit_card")
          return std::string("calibration: fit_card\nfitted:\n  b: 200\n  c: 300\n  c.iiv: 0.5\n");
        return std::string();
      }};
  const std::string card_text =
      "card: own\ntitle: t\ncitation: c\ndrug: parent\ninclude: [m]\ncalibration: fit_card\nparameters:\n"
      "  V: {value: 100 L, description: d, source: s}\n  CL: {value: 10 L/h, description: d, source: s}\n"
      "  c: {value: 3, description: d, source: s}\n"
      "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: V}, "
      "elimination: {clearance: CL}}\nroutes:\n  iv: {drug: parent}\n";
  const ModelCard card = parse_model_card(card_text, "own.yaml", sources);
  const auto value = [&](const char* name) { return card.parameters[static_cast<std::size_t>(card.index_of(name))]; };
  CHECK(card.calibrations == std::vector<std::string>{"fit_m", "fit_card"});
  CHECK(value("a").value == 10.0);
  CHECK(value("a").calibrated_by == "fit_m");
  CHECK(value("b").value == 200.0);
  CHECK(value("b").calibrated_by == "fit_card");
  CHECK(value("c").value == 300.0);
  CHECK(value("c").iiv.kind == IivKind::log_normal);
  CHECK(value("c").iiv.magnitude == 0.5);
  CHECK(value("V").calibrated_by.empty());

  // The module's own calibration named again by the card is refused.
  std::string twice = card_text;
  twice.replace(twice.find("calibration: fit_card"), 21, "calibration: fit_m");
  CHECK_THROWS_WITH(parse_model_card(twice, "own.yaml", sources),
                    Catch::Contains("own.yaml:6:") && Catch::Contains("already a module's calibration"));
}

TEST_CASE("iiv order: only last, and only with a kind of variability", "[cards][errors]") {
  const auto card_with = [](const std::string& iiv) {
    return card_from(
        "card: o\ntitle: t\ncitation: c\ndrug: parent\nparameters:\n"
        "  V: {value: 100 L, iiv: " +
        iiv +
        ", description: d, source: s}\n  CL: {value: 10 L/h, description: d, source: s}\n"
        "structure:\n  - compartments: {drug: parent, molar_mass: 100, central: {volume: V}, "
        "elimination: {clearance: CL}}\nroutes:\n  iv: {drug: parent}\n");
  };
  const ModelCard last = card_with("{cv: 30%, order: last}");
  CHECK(last.parameters[0].iiv.drawn_last);
  CHECK(last.parameters[0].iiv.kind == IivKind::log_normal);
  CHECK_FALSE(card_with("{cv: 30%}").parameters[0].iiv.drawn_last);
  CHECK_THROWS_WITH(card_with("{cv: 30%, order: first}"), Catch::Contains("expected last"));
  CHECK_THROWS_WITH(card_with("{order: last}"), Catch::Contains("give exactly one of cv, logit_sd or sd"));
}
