#pragma once
// What the engine hands to an output writer: the fixed layout of each arm, and blocks of
// finished subjects. Columns are generic (name, unit, width) so the writer knows nothing about
// models; docs/hdf5-layout.md describes the file these become.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ketasim/input/scenario.hpp"    // kDefaultPricePerSessionUsd
#include "ketasim/model/blocks.hpp"      // Shard, SubjectRange
#include "ketasim/model/model_card.hpp"  // LinkRole

namespace ketasim {

struct ColumnSpec {
  std::string name;       // dataset name, e.g. "cmax_ng_per_ml"
  std::string unit;       // e.g. "ng/mL"; "" for dimensionless
  std::size_t width = 1;  // values per subject (1 = a column; >1 = a [subject x width] matrix)
  std::string description;
};

// The per-subject metrics (docs/model.md defines each). A stage that needs one finds it by id in
// ArmLayout::metrics, never by its dataset name or its position.
enum class MetricId {
  cmax,
  tmax,
  auc,
  auc_per_week,
  peak_effect_site,  // per dose
  peak_link,         // per dose: a link at the effect-site maximum (MetricColumn::link_role says which)
  peak_time,         // per dose
  time_above_dissociation,
  dissociation_burden,
  dosed,
  sessions_given,
  sessions_missed,
  sessions_triggered,
  metabolite_cmax,  // one per metabolite
  metabolite_tmax,
  madrs_baseline,
  madrs_at,  // per assessment
  madrs_observed_at,
  response_at,
  remission_at,
  first_response_day,
  days_in_response,
  responder_end_of_treatment,
  relapse_day,
  relapse_observed,
  madrs_observed_at_visit,  // output.relapse: per visit
  relapse_visits_at_risk,
  relapse_visits_day,
  relapse_visits_observed,
  sessions_to_response,  // stop rules
  stopped_early,
  titrated,  // titration
  titration_session,
  continued,             // responder-only continuation (given_if)
  madrs_before_session,  // per session
  madrs_observed_before_session,
  response_before_session,
  remission_before_session,
  madrs_after_session,  // per session, one dataset per time after it (`about`: the time, e.g. 24h)
  madrs_observed_after_session,
  response_after_session,
  remission_after_session,
  given_mg,  // per drug
  amount_in_body_end_mg,
  eliminated_mg,
  formed_mg,
  ipred,  // one per observed output, per sampling time
  dv,
  solver_path,
};

// The names of the stop-rule metrics and the per-session assessments ("<what>_before_session",
// "<what>_<about>_after_session").
inline std::string session_metric_dataset(MetricId id, const std::string& about) {
  if (id == MetricId::sessions_to_response) return "sessions_to_response";
  if (id == MetricId::stopped_early) return "stopped_early";
  const bool before = id == MetricId::madrs_before_session || id == MetricId::madrs_observed_before_session ||
                      id == MetricId::response_before_session || id == MetricId::remission_before_session;
  std::string what = "madrs";
  if (id == MetricId::madrs_observed_before_session || id == MetricId::madrs_observed_after_session)
    what = "madrs_observed";
  if (id == MetricId::response_before_session || id == MetricId::response_after_session) what = "response";
  if (id == MetricId::remission_before_session || id == MetricId::remission_after_session) what = "remission";
  return before ? what + "_before_session" : what + "_" + about + "_after_session";
}

// A metric's dataset name (docs/hdf5-layout.md). Metrics of which an arm has one per link, drug
// or observed output are named after it (`about`: the link's name, the drug's name, the output's
// dataset); the others ignore `about`. Readers of result files (compare) use it too, so the names
// are written in one place.
inline std::string metric_dataset(MetricId id, std::string_view about = {}) {
  const std::string of(about);
  switch (id) {
    case MetricId::cmax:
      return "cmax_ng_per_ml";
    case MetricId::tmax:
      return "tmax_h";
    case MetricId::auc:
      return "auc_ng_h_per_ml";
    case MetricId::auc_per_week:
      return "auc_per_week_ng_h_per_ml";
    case MetricId::peak_effect_site:
      return "peak_effect_site_ng_per_ml";
    case MetricId::peak_link:
      return "peak_" + of;
    case MetricId::peak_time:
      return "peak_dissociation_time_h";
    case MetricId::time_above_dissociation:
      return "time_above_dissociation_h";
    case MetricId::dissociation_burden:
      return "dissociation_burden_score_h";
    case MetricId::dosed:
      return "dosed_mg";
    case MetricId::sessions_given:
      return "sessions_given";
    case MetricId::sessions_missed:
      return "sessions_missed";
    case MetricId::sessions_triggered:
      return "sessions_triggered";
    case MetricId::metabolite_cmax:
      return "cmax_" + of + "_ng_per_ml";
    case MetricId::metabolite_tmax:
      return "tmax_" + of + "_h";
    case MetricId::madrs_baseline:
      return "madrs_baseline";
    case MetricId::madrs_at:
      return "madrs_at";
    case MetricId::madrs_observed_at:
      return "madrs_observed_at";
    case MetricId::response_at:
      return "response_at";
    case MetricId::remission_at:
      return "remission_at";
    case MetricId::first_response_day:
      return "first_response_day";
    case MetricId::days_in_response:
      return "days_in_response";
    case MetricId::responder_end_of_treatment:
      return "responder_end_of_treatment";
    case MetricId::relapse_day:
      return "relapse_day";
    case MetricId::relapse_observed:
      return "relapse_observed";
    case MetricId::madrs_observed_at_visit:
      return "madrs_observed_at_visit";
    case MetricId::relapse_visits_at_risk:
      return "relapse_visits_at_risk";
    case MetricId::relapse_visits_day:
      return "relapse_visits_day";
    case MetricId::relapse_visits_observed:
      return "relapse_visits_observed";
    case MetricId::titrated:
      return "titrated";
    case MetricId::titration_session:
      return "titration_session";
    case MetricId::continued:
      return "continued";
    case MetricId::sessions_to_response:
    case MetricId::stopped_early:
    case MetricId::madrs_before_session:
    case MetricId::madrs_observed_before_session:
    case MetricId::response_before_session:
    case MetricId::remission_before_session:
    case MetricId::madrs_after_session:
    case MetricId::madrs_observed_after_session:
    case MetricId::response_after_session:
    case MetricId::remission_after_session:
      return session_metric_dataset(id, of);
    case MetricId::given_mg:
      return "given_mg";
    case MetricId::amount_in_body_end_mg:
      return "amount_in_body_end_mg";
    case MetricId::eliminated_mg:
      return "eliminated_mg";
    case MetricId::formed_mg:
      return "formed_mg";
    case MetricId::ipred:
      return "ipred_" + of;
    case MetricId::dv:
      return "dv_" + of;
    case MetricId::solver_path:
      return "solver_path";
  }
  return of;  // not reached: every id is named above
}

// A metric column of an arm: the dataset (name = metric_dataset(id, ...)) and which metric it is.
struct MetricColumn : ColumnSpec {
  MetricId id = MetricId::solver_path;
  LinkRole link_role = LinkRole::none;  // peak_link: the role of its link
};

// The column of metric `id` in `metrics` (for peak_link: of the link with `role`); nullopt when
// the arm does not write it.
inline std::optional<std::size_t> find_metric(const std::vector<MetricColumn>& metrics, MetricId id,
                                              LinkRole role = LinkRole::none) {
  for (std::size_t i = 0; i < metrics.size(); ++i)
    if (metrics[i].id == id && metrics[i].link_role == role) return i;
  return std::nullopt;
}

// A model parameter value as the user reads it: in the parameter's display unit ("" = none).
struct ParameterValue {
  std::string name;
  double value = 0.0;
  std::string unit;
};

struct ArmLayout {
  std::string name;
  std::string model;  // the model card of the arm (the scenario's, or the arm's own)
  // The typical values the arm's model overrides in its card (model_of: the scenario's and the
  // arm's model.parameters), in the order given; empty = the card's own values.
  std::vector<ParameterValue> model_parameters;
  std::string description;                  // human-readable regimen
  std::vector<double> time_h;               // output grid, hours from the simulation start
  std::vector<ColumnSpec> trajectories;     // one [subject x time] matrix each (width unused)
  std::vector<ColumnSpec> subject_columns;  // covariates and individual parameters
  std::vector<MetricColumn> metrics;        // per-subject metrics
  // The arm's nominal dose schedule: the doses of its scheduled rules, the same for every subject
  // (the doses each subject was given, after adherence, as-needed triggers and dosing tables, are
  // the subject columns dose_time_h, dose_amount_mg and dose_duration_h).
  std::vector<double> dose_time_h;
  std::vector<double> dose_duration_h;        // 0 for a bolus
  std::vector<double> assessment_time_h;      // MADRS assessments, hours after the first session
  std::vector<double> observation_time_h;     // sampling times of output.observations, hours from the start
  std::vector<double> relapse_visit_time_h;   // output.relapse's visits, hours after the first session
  std::vector<std::string> observed_outputs;  // the outputs observed there, in the scenario's order
  double price_per_session_usd[2] = {kDefaultPricePerSessionUsd[0], kDefaultPricePerSessionUsd[1]};  // low, high
};

// Provenance written as root attributes.
struct RunInfo {
  std::string scenario_file;
  std::string scenario_yaml;  // verbatim
  std::string scenario_name;
  std::string model_name;
  std::uint64_t seed = 0;
  std::int64_t subjects_per_arm = 0;
  std::int64_t replicates = 1;              // trials of subjects_per_replicate subjects each
  std::int64_t subjects_per_replicate = 0;  // 0: subjects_per_arm (one replicate)
  std::string solver_method;
  double solver_rtol = 0.0;
  double solver_atol = 0.0;
  // A shard of a split run (`ketasim run --shard`): the file holds the rows of these subjects
  // only, and no summaries (`ketasim merge` computes them over every shard).
  struct ShardPart {
    Shard shard;
    SubjectRange subjects;
  };
  std::optional<ShardPart> shard;
  // A merged file (`ketasim merge`): the shards it was made from, in subject order.
  struct MergedShard {
    std::string path;  // as given to merge
    std::string host;
    std::int64_t threads = 0;
    std::string created_utc;
  };
  std::vector<MergedShard> merged_from;
  // A file of `mpirun -n R ketasim run` (written from its ranks' journals): R; 0 otherwise.
  std::int64_t mpi_ranks = 0;
  // With mpi_ranks: the seconds each rank was busy (rank 0 first), from its start to its journal
  // complete; the ranks that finished early idled the difference to the slowest.
  std::vector<double> mpi_rank_busy_seconds;
};

// Consecutive subjects [first_subject, first_subject + count) of one arm. Row-major buffers.
struct SubjectBlock {
  std::size_t arm = 0;
  std::int64_t first_subject = 0;
  std::int64_t count = 0;
  std::vector<std::vector<float>> trajectories;      // [trajectory][row * n_time + t]
  std::vector<std::vector<double>> subject_columns;  // [column][row * width + j]
  std::vector<std::vector<double>> metrics;          // [metric][row * width + j], ArmLayout::metrics order
  std::vector<std::int8_t> status;                   // [row]: 0 solved, 1 failed (values NaN)
  std::vector<std::string> message;                  // [row]: "" when solved, else why it failed
};

}  // namespace ketasim
