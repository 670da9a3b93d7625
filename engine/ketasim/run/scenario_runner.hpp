#pragma once
// The subjects of a scenario, every arm per subject, in blocks: what run_scenario (run.cpp) runs
// on its threads and the timeline command runs for one subject. The model-dependent work (card,
// cohort sampler, output plan, observed states) is done once per distinct model (ModelEngine),
// the arm's layout once per arm (ArmPlan). Internal to run/.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ketasim/input/scenario.hpp"
#include "ketasim/model/blocks.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/run/cohort.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/solve/results.hpp"
#include "ketasim/solve/simulate.hpp"
#include "ketasim/solve/timeline.hpp"

namespace ketasim {

// Everything that depends on the model (card and overrides) only, shared by every arm that
// simulates the same model.
struct ModelEngine {
  ModelEngine(const Scenario& scenario, const ModelChoice& model_choice);
  ModelEngine(const ModelEngine&) = delete;
  ModelEngine& operator=(const ModelEngine&) = delete;

  ModelChoice choice;
  const ModelCard& card;
  Model model;
  CohortSampler sampler;
  SimulationPlan plan;
  std::vector<const ModelOutput*> outputs;
  std::vector<int> states;  // the observed states; empty = all
};

// What every subject of one arm shares.
struct ArmPlan {
  const Arm* arm = nullptr;
  ArmLayout layout;
  std::size_t doses = 0;  // the most doses a subject can be given (width of the per-dose columns)
  const DosingRule* as_needed = nullptr;
  int as_needed_rule = -1;
  std::size_t engine = 0;  // index into the runner's model engines
  // What every subject of the arm shares in its context: the rules decided during the solve and
  // the oral antidepressant's course.
  SeriesRule<StopRule> stop{};
  SeriesRule<Titration> titration{};
  SeriesRule<ContinuationCondition> continuation{};
  std::optional<AntidepressantCourse> antidepressant{};
};

class ScenarioRunner {
 public:
  explicit ScenarioRunner(const Scenario& scenario);

  std::vector<ArmLayout> layouts() const {
    std::vector<ArmLayout> layouts;
    for (const ArmPlan& arm : arms_) layouts.push_back(arm.layout);
    return layouts;
  }
  const std::vector<ArmPlan>& arms() const { return arms_; }
  const SimulationPlan& plan() const { return engines_.front()->plan; }

  // All arms for the subjects of one range; one block per arm. Throws InterruptedError once
  // `cancel` is set (checked between subjects and within their solves).
  std::vector<SubjectBlock> simulate(SubjectRange range, const std::atomic<bool>* cancel = nullptr) const;

  // One subject in one arm, for the timeline command: the doses it was given.
  SubjectSchedule schedule(std::size_t arm, std::int64_t subject_id) const;

 private:
  // A subject as every arm shares it: covariates, individual model, residual draws.
  struct PreparedSubject {
    Subject subject;
    std::optional<SubjectModel> model;
    std::string model_problem;
    SubjectContext context;
  };

  PreparedSubject prepare(const ModelEngine& engine, std::int64_t subject_id) const;
  // cohort.screening: sets the subject's screening score (and, when screened again, its baseline).
  void screen(Subject& subject, const Screening& screening, double residual_sd) const;
  void allocate(SubjectBlock& block, std::size_t arm, SubjectRange range) const;

  // Simulates one subject of one arm into row `row` of the block; returns the doses it was given.
  SubjectDoses simulate_one(SubjectBlock& block, std::size_t row, const PreparedSubject& prepared,
                            const std::atomic<bool>* cancel = nullptr) const;

  // Covariates and individual parameters (display units), then the doses given, NaN-padded to the
  // arm's most doses (arm_layouts lists the same columns).
  void write_subject_columns(SubjectBlock& block, std::size_t row, const Subject& subject,
                             const std::vector<Dose>& doses) const;

  const Scenario& scenario_;
  std::vector<std::unique_ptr<ModelEngine>> engines_;  // one per distinct model (same_model), in order of first use
  std::vector<ArmPlan> arms_;
};

}  // namespace ketasim
