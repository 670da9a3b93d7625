// Formatting a Comparison (compare.hpp): the aligned text table, markdown, and the tidy long form
// as csv and json.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "ketasim/analysis/compare.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"

namespace ketasim {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

OutputFormat parse_output_format(const std::string& name) {
  if (name == "table") return OutputFormat::table;
  if (name == "csv") return OutputFormat::csv;
  if (name == "markdown") return OutputFormat::markdown;
  if (name == "json") return OutputFormat::json;
  throw Error(ExitCode::usage, "--format: '" + name + "' is not one of table, csv, markdown, json");
}

namespace {

std::string fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "n/a";
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string signed_fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "n/a";
  char text[64];
  std::snprintf(text, sizeof text, "%+.*f", decimals, value);
  return text;
}

std::string interval_text(double low, double high, int decimals) {
  return "[" + fixed(low, decimals) + ", " + fixed(high, decimals) + "]";
}

std::string arm_cell(const OutcomeLine& line, const Cell& cell) {
  std::string text = fixed(cell.value, line.decimals);
  if (line.interval != IntervalKind::none) text += " " + interval_text(cell.low, cell.high, line.decimals);
  if (cell.skipped > 0) text += " (" + std::to_string(cell.skipped) + " undefined)";
  return text;
}

// Without bootstrap resamples (--bootstrap 0) a difference has no interval to show.
std::string difference_cell(const OutcomeLine& line, const Cell& cell, bool with_interval) {
  std::string text = signed_fixed(cell.value, line.decimals) + " " + line.difference_unit;
  if (with_interval) text += " " + interval_text(cell.low, cell.high, line.decimals);
  if (cell.skipped > 0) text += " (" + std::to_string(cell.skipped) + " samples skipped)";
  return text;
}

// The table of `table` and `markdown`: a label column, then one column per arm.
std::vector<std::vector<std::string>> wide_rows(const Comparison& c) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header{"outcome"};
  for (const std::string& arm : c.arms) header.push_back(arm + (&arm == &c.arms[c.reference] ? " (reference)" : ""));
  rows.push_back(header);
  for (const OutcomeLine& line : c.lines) {
    std::vector<std::string>& row = rows.emplace_back();
    row.push_back(line.unit == "subjects" ? line.label : line.label + " (" + line.unit + ")");
    for (std::size_t a = 0; a < c.arms.size(); ++a) {
      const bool not_for_reference = line.outcome == "excluded_pairs" || line.statistic == "probability";
      row.push_back(a == c.reference && not_for_reference ? "-" : arm_cell(line, line.arms[a]));
    }
    if (!line.has_difference) continue;
    std::vector<std::string>& difference = rows.emplace_back();
    const bool with_interval = c.bootstrap > 0;
    difference.push_back("  difference vs " + c.arms[c.reference] + (with_interval ? " [95% CI]" : ""));
    for (std::size_t a = 0; a < c.arms.size(); ++a)
      difference.push_back(a == c.reference ? "-" : difference_cell(line, line.differences[a], with_interval));
  }
  return rows;
}

std::string bootstrap_sentence(const Comparison& c) {
  const std::string paired = "differences are paired (arm - " + c.arms[c.reference] + ", the same subjects)";
  if (c.bootstrap == 0) return paired + ", without confidence intervals (--bootstrap 0)";
  return paired + ", 95% CI: percentiles of " + std::to_string(c.bootstrap) +
         " bootstrap resamples of subjects, seed " + std::to_string(c.seed);
}

std::string heading(const Comparison& c) {
  std::string text = c.file + ": scenario " + (c.scenario_name.empty() ? "?" : c.scenario_name) + ", layout " +
                     std::to_string(c.layout_version) + "; reference arm " + c.arms[c.reference];
  if (c.replicates > 1) text += "; " + std::to_string(c.replicates) + " trial replicates";
  return text;
}

std::string format_table(const Comparison& c) {
  const auto rows = wide_rows(c);
  std::vector<std::size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows)
    for (std::size_t k = 0; k < row.size(); ++k) widths[k] = std::max(widths[k], row[k].size());
  std::string text = heading(c) + "\n" + bootstrap_sentence(c) + "\n\n";
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t k = 0; k < row.size(); ++k) {
      line += row[k];
      if (k + 1 < row.size()) line += std::string(widths[k] - row[k].size() + 2, ' ');
    }
    text += line + "\n";
  }
  for (const std::string& note : c.notes) text += "note: " + note + "\n";
  return text;
}

std::string format_markdown(const Comparison& c) {
  const auto rows = wide_rows(c);
  std::string text = "# Comparison of arms\n\n" + heading(c) + ".\n\n" + bootstrap_sentence(c) + ".\n\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    text += "|";
    for (const std::string& cell : rows[r]) {
      std::string escaped;
      for (const char ch : cell) escaped += ch == '|' ? std::string("\\|") : std::string(1, ch);
      text += " " + escaped + " |";
    }
    text += "\n";
    if (r == 0) {
      text += "|";
      for (std::size_t k = 0; k < rows[r].size(); ++k) text += k == 0 ? "---|" : "--:|";
      text += "\n";
    }
  }
  if (!c.notes.empty()) text += "\n";
  for (const std::string& note : c.notes) text += "- " + note + "\n";
  return text;
}

// The tidy long form shared by csv and json.
struct TidyRow {
  std::string arm, outcome;
  double day;
  std::string statistic;
  double value, ci_low, ci_high;
  std::string unit;
  std::string exact_value = {};  // printed instead of `value` when set (a 64-bit seed)
};

std::vector<TidyRow> tidy_rows(const Comparison& c) {
  std::vector<TidyRow> rows;
  rows.push_back({"", "bootstrap", kNaN, "seed", static_cast<double>(c.seed), kNaN, kNaN, "", std::to_string(c.seed)});
  rows.push_back({"", "bootstrap", kNaN, "resamples", static_cast<double>(c.bootstrap), kNaN, kNaN, ""});
  if (c.replicates > 1) rows.push_back({"", "margin", kNaN, "pp", c.margin_pp, kNaN, kNaN, "pp"});
  for (const OutcomeLine& line : c.lines)
    for (std::size_t a = 0; a < c.arms.size(); ++a) {
      const Cell& cell = line.arms[a];
      const bool spread = line.interval == IntervalKind::spread90;
      const bool ci = line.interval == IntervalKind::ci95;
      if (!(line.statistic == "probability" && a == c.reference) &&
          !(line.outcome == "excluded_pairs" && a == c.reference))
        rows.push_back({c.arms[a], line.outcome, line.day, line.statistic, cell.value, ci ? cell.low : kNaN,
                        ci ? cell.high : kNaN, line.unit});
      if (spread) {
        rows.push_back({c.arms[a], line.outcome, line.day, "p05", cell.low, kNaN, kNaN, line.unit});
        rows.push_back({c.arms[a], line.outcome, line.day, "p95", cell.high, kNaN, kNaN, line.unit});
      }
      if (cell.skipped >= 0)
        rows.push_back({c.arms[a], line.outcome, line.day, line.statistic + "_undefined",
                        static_cast<double>(cell.skipped), kNaN, kNaN, "replicates"});
      if (!line.has_difference || a == c.reference) continue;
      const Cell& difference = line.differences[a];
      rows.push_back({c.arms[a], line.outcome, line.day, line.statistic + "_difference", difference.value,
                      difference.low, difference.high, line.difference_unit});
      if (difference.skipped >= 0)
        rows.push_back({c.arms[a], line.outcome, line.day, line.statistic + "_difference_skipped",
                        static_cast<double>(difference.skipped), kNaN, kNaN, "bootstrap samples"});
    }
  return rows;
}

std::string number_or(double value, const std::string& missing) {
  return std::isfinite(value) ? format_significant(value, 12) : missing;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char ch : text) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return quoted + "\"";
}

std::string format_csv(const Comparison& c) {
  std::string text = "arm,outcome,day,statistic,value,ci_low,ci_high,unit\n";
  for (const TidyRow& row : tidy_rows(c))
    text += csv_field(row.arm) + "," + csv_field(row.outcome) + "," + number_or(row.day, "") + "," +
            csv_field(row.statistic) + "," + (row.exact_value.empty() ? number_or(row.value, "") : row.exact_value) +
            "," + number_or(row.ci_low, "") + "," + number_or(row.ci_high, "") + "," + csv_field(row.unit) + "\n";
  return text;
}

std::string json_string(const std::string& text) {
  std::string quoted = "\"";
  for (const char ch : text) {
    switch (ch) {
      case '"':
        quoted += "\\\"";
        break;
      case '\\':
        quoted += "\\\\";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\t':
        quoted += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char escape[8];
          std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(ch));
          quoted += escape;
        } else {
          quoted += ch;
        }
    }
  }
  return quoted + "\"";
}

std::string format_json(const Comparison& c) {
  std::string text = "{\n  \"file\": " + json_string(c.file) + ",\n  \"scenario\": " + json_string(c.scenario_name) +
                     ",\n  \"layout_version\": " + std::to_string(c.layout_version) + ",\n  \"arms\": [";
  for (std::size_t a = 0; a < c.arms.size(); ++a) text += (a ? ", " : "") + json_string(c.arms[a]);
  text += "],\n  \"reference\": " + json_string(c.arms[c.reference]) + ",\n  \"at_days\": [";
  for (std::size_t d = 0; d < c.at_days.size(); ++d) text += (d ? ", " : "") + number_or(c.at_days[d], "null");
  text += "],\n  \"bootstrap\": {\"resamples\": " + std::to_string(c.bootstrap) +
          ", \"seed\": " + std::to_string(c.seed) +
          ", \"interval\": \"percentile 95%\"},\n  \"replicates\": " + std::to_string(c.replicates) +
          ",\n  \"margin_pp\": " + number_or(c.margin_pp, "null") + ",\n  \"notes\": [";
  for (std::size_t n = 0; n < c.notes.size(); ++n) text += (n ? ", " : "") + json_string(c.notes[n]);
  text += "],\n  \"results\": [";
  const std::vector<TidyRow> rows = tidy_rows(c);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const TidyRow& row = rows[r];
    text += std::string(r ? "," : "") + "\n    {\"arm\": " + json_string(row.arm) +
            ", \"outcome\": " + json_string(row.outcome) + ", \"day\": " + number_or(row.day, "null") +
            ", \"statistic\": " + json_string(row.statistic) +
            ", \"value\": " + (row.exact_value.empty() ? number_or(row.value, "null") : row.exact_value) +
            ", \"ci_low\": " + number_or(row.ci_low, "null") + ", \"ci_high\": " + number_or(row.ci_high, "null") +
            ", \"unit\": " + json_string(row.unit) + "}";
  }
  text += "\n  ]\n}\n";
  return text;
}

}  // namespace

std::string format_comparison(const Comparison& comparison, OutputFormat format) {
  switch (format) {
    case OutputFormat::table:
      return format_table(comparison);
    case OutputFormat::csv:
      return format_csv(comparison);
    case OutputFormat::markdown:
      return format_markdown(comparison);
    case OutputFormat::json:
      return format_json(comparison);
  }
  return {};
}

}  // namespace ketasim
