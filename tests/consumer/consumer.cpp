// Uses the installed engine through its public headers: a scenario parsed from text (the loader,
// yaml-cpp underneath) and the built-in model card it names (the embedded model texts). It prints
// what it read, so the test can check that the library did the work, not only that it linked.
#include <cstdio>
#include <string>

#include "ketasim/base/version.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/model_card.hpp"

int main() {
  const std::string text = R"(name: consumer
model: {name: ketamine_venous}
cohort: {size: 3, seed: 1, weight: 70 kg, baseline_madrs: 33}
arms:
  - name: single
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 1 week}
output:
  grid: {every: 1 h, for: 1 d}
)";
  const ketasim::Scenario scenario = ketasim::parse_scenario(text, "consumer.yaml");
  const ketasim::ModelCard* card = ketasim::find_builtin_model(scenario.model.name);
  if (card == nullptr) return 1;
  std::printf("ketasim %s: scenario '%s', %zu arm(s), model %s\n", ketasim::kVersion, scenario.name.c_str(),
              scenario.arms.size(), card->name.c_str());
  return 0;
}
