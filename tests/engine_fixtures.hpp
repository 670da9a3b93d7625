#pragma once
// Shared helpers for the engine tests: mammillary models with known parameters (as model cards
// built from the same blocks as the built-in ones), dose lists, and a run of one subject that
// returns its trajectories.

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/solve/simulate.hpp"
#include "ketasim/solve/timeline.hpp"

namespace ketasim::testing {

// A mammillary model with an effect compartment and a sigmoid-Emax dissociation link, in the
// units of the closed forms (L, 1/h, mg/L).
struct MammillaryEffectParameters {
  int peripheral_compartments = 1;
  double V1_L = 0.0;
  double k10_per_h = 0.0, k12_per_h = 0.0, k21_per_h = 0.0, k13_per_h = 0.0, k31_per_h = 0.0;
  double ke0_per_h = 0.0;
  double s_fraction = 0.5;
  double ec50_s_mg_per_L = 0.121;
  double emax = 24.0;
  double hill = 1.5;
};

inline MammillaryEffectParameters one_compartment() {
  MammillaryEffectParameters p;
  p.peripheral_compartments = 0;
  p.V1_L = 250.0;
  p.k10_per_h = 80.0 / 250.0;
  p.ke0_per_h = 5.0;
  return p;
}

// Clements & Nimmo at 70 kg (micro constants per hour).
inline MammillaryEffectParameters two_compartment() {
  MammillaryEffectParameters p = one_compartment();
  p.peripheral_compartments = 1;
  p.V1_L = 1.7522 * 70.0;
  p.k10_per_h = 0.0109 * 60.0;
  p.k12_per_h = 0.0186 * 60.0;
  p.k21_per_h = 0.0137 * 60.0;
  p.ke0_per_h = std::log(2.0) / (8.3 / 60.0);
  return p;
}

// Domino at 70 kg.
inline MammillaryEffectParameters three_compartment() {
  MammillaryEffectParameters p = two_compartment();
  p.peripheral_compartments = 2;
  p.V1_L = 0.063 * 70.0;
  p.k10_per_h = 0.4381 * 60.0;
  p.k12_per_h = 0.5921 * 60.0;
  p.k21_per_h = 0.2470 * 60.0;
  p.k13_per_h = 0.5900 * 60.0;
  p.k31_per_h = 0.0146 * 60.0;
  return p;
}

// The card of such a model, written in the card language.
inline std::string card_text(const MammillaryEffectParameters& p) {
  std::ostringstream y;
  y.precision(17);
  const auto parameter = [&](const char* name, double value, const char* unit) {
    y << "  " << name << ": {value: " << value << (unit[0] ? " " : "") << unit
      << ", description: test, source: test}\n";
  };
  y << "card: test_mammillary\ntitle: test\ncitation: test\ndrug: ketamine\nparameters:\n";
  parameter("V1", p.V1_L, "L");
  parameter("k10", p.k10_per_h, "1/h");
  if (p.peripheral_compartments >= 1) {
    parameter("k12", p.k12_per_h, "1/h");
    parameter("k21", p.k21_per_h, "1/h");
  }
  if (p.peripheral_compartments >= 2) {
    parameter("k13", p.k13_per_h, "1/h");
    parameter("k31", p.k31_per_h, "1/h");
  }
  parameter("ke0", p.ke0_per_h, "1/h");
  parameter("s_fraction", p.s_fraction, "");
  parameter("ec50_s", p.ec50_s_mg_per_L, "mg/L");
  parameter("emax", p.emax, "");
  parameter("hill", p.hill, "");
  y << "structure:\n  - compartments:\n      drug: ketamine\n      molar_mass: 237.7\n      central: {volume: V1}\n"
    << "      elimination: {rate: k10}\n";
  if (p.peripheral_compartments >= 1) {
    y << "      peripherals: [{rate_out: k12, rate_back: k21}";
    if (p.peripheral_compartments >= 2) y << ", {rate_out: k13, rate_back: k31}";
    y << "]\n";
  }
  y << "  - effect_site: {name: effect_site, drug: ketamine, ke0: ke0}\n"
    << "  - link: {name: dissociation, role: dissociation, input: effect_site, scale: s_fraction, shape: sigmoid_emax, "
       "emax: emax, ec50: ec50_s, hill: hill}\n"
    << "routes:\n  iv: {drug: ketamine}\n";
  return y.str();
}

// A card, its compiled model and one subject's numbers, kept together (Model refers to its card).
struct TestModel {
  explicit TestModel(const MammillaryEffectParameters& p) {
    card = std::make_unique<ModelCard>(parse_model_card(card_text(p), "test_mammillary.yaml", CardSources{}));
    model = std::make_unique<Model>(*card);
    std::vector<double> values;
    for (const ParameterSpec& spec : card->parameters) values.push_back(spec.value);
    subject = model->instantiate(values);
  }
  std::unique_ptr<ModelCard> card;
  std::unique_ptr<Model> model;
  SubjectModel subject;
  const LinkValues& dissociation() const { return subject.links.front(); }
};

// Equal element by element, NaN equal to NaN (unfilled columns, padded doses).
inline bool same_values(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

inline Dose infusion(Ticks start, Ticks duration, double amount_mg) {
  Dose dose;
  dose.start = start;
  dose.duration = duration;
  dose.amount_mg = amount_mg;
  dose.route = Route::iv_infusion;
  return dose;
}

inline Dose bolus(Ticks start, double amount_mg) {
  Dose dose;
  dose.start = start;
  dose.amount_mg = amount_mg;
  dose.route = Route::iv_bolus;
  return dose;
}

// The inputs of intravenous doses into channel 0 (no session channels).
inline std::vector<ModelInput> iv_inputs(const std::vector<Dose>& doses) {
  std::vector<ModelInput> inputs;
  for (std::size_t i = 0; i < doses.size(); ++i)
    inputs.push_back({doses[i].start, doses[i].duration, doses[i].amount_mg, 0, static_cast<int>(i)});
  return inputs;
}

// 35 mg over 40 min on Mon and Thu 09:00 for `weeks` weeks.
inline std::vector<Dose> twice_weekly(int weeks, double amount_mg = 35.0) {
  std::vector<Dose> doses;
  for (int w = 0; w < weeks; ++w)
    for (const Ticks day : {Ticks{0}, Ticks{3}})
      doses.push_back(
          infusion(w * kTicksPerWeek + day * kTicksPerDay + 9 * kTicksPerHour, 40 * kTicksPerMinute, amount_mg));
  return doses;
}

struct SubjectRun {
  std::vector<float> plasma, effect, dissociation;
  SubjectMetrics metrics;
  SolveOutcome outcome;
};

inline SubjectRun run_subject(const MammillaryEffectParameters& parameters, const std::vector<Dose>& doses,
                              Ticks grid_step, Ticks grid_end, SolverMethod method = SolverMethod::exact,
                              double threshold = 5.0, double rtol = 1e-10, double atol = 1e-14,
                              const SubjectContext& context = {}) {
  const TestModel test(parameters);
  SimulationPlan plan;
  plan.grid_step = grid_step;
  plan.grid_end = grid_end;
  plan.dissociation_threshold = threshold;
  SubjectRun run;
  const std::size_t n = plan.time_points();
  run.plasma.resize(n);
  run.effect.resize(n);
  run.dissociation.resize(n);
  SolverSpec solver;
  solver.method = method;
  solver.rtol = rtol;
  solver.atol = atol;
  const TrajectoryRows rows{{test.model->find_output("plasma_ketamine"), run.plasma.data()},
                            {test.model->find_output("effect_site"), run.effect.data()},
                            {test.model->find_output("dissociation"), run.dissociation.data()}};
  run.metrics = sized_metrics(*test.model, plan, doses.size());
  std::vector<Dose> given = doses;
  run.outcome = simulate_subject(*test.model, test.subject, solver, plan, given, context, rows, run.metrics);
  return run;
}

}  // namespace ketasim::testing
