#pragma once
// Bring your own cohort: the covariates of listed patients, read once from a CSV file when the
// scenario is loaded (cohort.from_csv, docs/scenario.md#from_csv). The sampler only indexes it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ketasim {

// One row per patient. A covariate the file has no column for is an empty vector: the cohort's
// distribution for it applies.
struct CovariateTable {
  std::string file;  // as resolved from the scenario, for messages
  std::size_t rows = 0;
  std::vector<int> lines;              // [row]: the row's line in the file (1-based)
  std::vector<std::string> ids;        // [row]: the id column, if any (kept for messages only)
  std::vector<double> weight_kg;       // kg
  std::vector<double> age_years;       // years
  std::vector<std::int8_t> female;     // 1 female, 0 male
  std::vector<double> baseline_madrs;  // MADRS points, 0 ... kMadrsMaximum

  bool has_weight() const { return !weight_kg.empty(); }
  bool has_age() const { return !age_years.empty(); }
  bool has_sex() const { return !female.empty(); }
  bool has_baseline_madrs() const { return !baseline_madrs.empty(); }
  // The header name of a covariate's column ("WT"), or "" when the file has none.
  std::string weight_column, age_column, sex_column, baseline_madrs_column, id_column;
};

// Parses CSV text (comma-separated, RFC 4180 quoting, a header line naming the columns; '#'
// lines and blank lines are skipped). Anything wrong is a ScenarioError at `file`:line:column
// naming the column, the value and what was expected.
CovariateTable parse_covariate_table(std::string_view text, const std::string& file);

}  // namespace ketasim
