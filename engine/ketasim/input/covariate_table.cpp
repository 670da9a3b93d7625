#include "ketasim/input/covariate_table.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <optional>

#include "ketasim/base/csv.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/time.hpp"
#include "ketasim/base/units.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim {

namespace {

using yaml::in_quotes;

std::string lowercase(std::string_view text) {
  std::string result(text);
  for (char& c : result) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return result;
}

// What a column holds, recognised by its header name (any case).
enum class Role { id, weight, age, sex, female, baseline_madrs };

struct ColumnName {
  const char* name;
  Role role;
};

// NONMEM-style names beside the scenario's own.
constexpr std::array<ColumnName, 10> kColumnNames{{
    {"id", Role::id},
    {"weight_kg", Role::weight},
    {"wt", Role::weight},
    {"weight", Role::weight},
    {"age", Role::age},
    {"age_y", Role::age},
    {"sex", Role::sex},
    {"female", Role::female},
    {"baseline_madrs", Role::baseline_madrs},
    {"madrs", Role::baseline_madrs},
}};

// Sex and female are two spellings of one covariate: a file may have one of them.
Role covariate_of(Role role) {
  return role == Role::female ? Role::sex : role;
}

const char* describe(Role role) {
  switch (role) {
    case Role::id:
      return "the patient id";
    case Role::weight:
      return "the body weight";
    case Role::age:
      return "the age";
    case Role::sex:
    case Role::female:
      return "the sex";
    case Role::baseline_madrs:
      return "the baseline MADRS";
  }
  return "a covariate";
}

std::optional<Role> role_of(std::string_view header) {
  const std::string name = lowercase(header);
  for (const ColumnName& known : kColumnNames)
    if (name == known.name) return known.role;
  return std::nullopt;
}

std::vector<std::string> known_column_names() {
  std::vector<std::string> names;
  for (const ColumnName& known : kColumnNames) names.emplace_back(known.name);
  return names;
}

struct Column {
  std::size_t index = 0;  // field position
  std::string header;     // as written
};

class TableParser {
 public:
  TableParser(std::string_view text, const std::string& file) : reader_(text, file) { table_.file = file; }

  CovariateTable parse() {
    const std::optional<csv::Line> header = reader_.next();
    if (!header) {
      reader_.fail(1, 0,
                   "the file has no header line (and no data); expected a header naming the columns, e.g. "
                   "ID,WT,AGE,SEX,MADRS");
    }
    read_header(*header);
    while (const std::optional<csv::Line> line = reader_.next()) read_row(*line);
    if (table_.rows == 0)
      reader_.fail(header->number, 0, "the file has a header but no data rows; expected one row per patient");
    return std::move(table_);
  }

 private:
  void read_header(const csv::Line& line) {
    header_fields_ = line.fields.size();
    for (std::size_t f = 0; f < line.fields.size(); ++f) {
      const csv::Field& field = line.fields[f];
      if (field.text.empty())
        reader_.fail(line.number, field.column, "column " + std::to_string(f + 1) + " of the header has no name");
      for (std::size_t earlier = 0; earlier < f; ++earlier) {
        if (lowercase(line.fields[earlier].text) == lowercase(field.text)) {
          reader_.fail(line.number, field.column,
                       "the header names column " + in_quotes(field.text) + " twice (also column " +
                           std::to_string(earlier + 1) + ")");
        }
      }
      const std::optional<Role> role = role_of(field.text);
      if (!role) continue;  // other columns (TIME, AMT, DV, ...) are allowed and ignored
      const Role covariate = covariate_of(*role);
      const auto taken = columns_.find(covariate);
      if (taken != columns_.end()) {
        reader_.fail(line.number, field.column,
                     "columns " + in_quotes(taken->second.header) + " and " + in_quotes(field.text) + " both give " +
                         describe(*role) + "; keep one");
      }
      columns_[covariate] = Column{f, field.text};
      if (*role == Role::female) female_coded_as_number_ = true;
    }
    // An unknown name one or two letters from a known one is a typo when that covariate has no
    // column: refuse it rather than silently draw the covariate from its distribution.
    for (const csv::Field& field : line.fields) {
      if (role_of(field.text)) continue;
      const auto match = yaml::closest_match(lowercase(field.text), known_column_names());
      if (match && !columns_.contains(covariate_of(*role_of(*match)))) {
        reader_.fail(line.number, field.column,
                     "unknown column " + in_quotes(field.text) + " (did you mean " + in_quotes(*match) +
                         "?): the file has no column for " + describe(*role_of(*match)) +
                         ", which would be drawn from the cohort's distribution instead; "
                         "rename or remove the column");
      }
    }
    bool any_covariate = false;
    for (const auto& [role, column] : columns_) any_covariate |= role != Role::id;
    if (!any_covariate) {
      reader_.fail(line.number, 1,
                   "the header names no covariate column; expected some of weight_kg or WT (kg), age or "
                   "AGE (years), sex or SEX (F/M), female (1/0), baseline_madrs or MADRS (any case)");
    }
    const auto header_of = [&](Role role) { return columns_.contains(role) ? columns_[role].header : std::string(); };
    table_.id_column = header_of(Role::id);
    table_.weight_column = header_of(Role::weight);
    table_.age_column = header_of(Role::age);
    table_.sex_column = header_of(Role::sex);
    table_.baseline_madrs_column = header_of(Role::baseline_madrs);
  }

  void read_row(const csv::Line& line) {
    if (line.fields.size() != header_fields_) {
      reader_.fail(line.number, 0,
                   "expected " + std::to_string(header_fields_) + " fields as in the header, found " +
                       std::to_string(line.fields.size()));
    }
    table_.lines.push_back(line.number);
    for (const auto& entry : columns_) {
      // Not a structured binding: clang 14 cannot capture one in the lambda below.
      const Role role = entry.first;
      const Column& column = entry.second;
      const csv::Field& field = line.fields[column.index];
      const auto fail = [&](const std::string& message) {
        reader_.fail(line.number, field.column, "column " + column.header + ": " + message);
      };
      if (role == Role::id) {
        if (field.text.empty()) fail("empty id; give every row an id, or remove the column");
        const auto [earlier, inserted] = id_lines_.emplace(field.text, line.number);
        if (!inserted) {
          fail("id " + in_quotes(field.text) + " appears again (first on line " + std::to_string(earlier->second) +
               "); expected one row per patient");
        }
        table_.ids.push_back(field.text);
        continue;
      }
      if (field.text.empty() || field.text == ".") {
        fail("missing value" + (field.text.empty() ? std::string() : " " + in_quotes(field.text)) +
             "; every row needs " + describe(role) + " (remove the column to draw it from the cohort's distribution)");
      }
      if (role == Role::sex) {
        const std::optional<std::int8_t> female = read_sex(field.text);
        if (!female && female_coded_as_number_)
          fail(in_quotes(field.text) + " is not a sex code; expected 1 (female) or 0 (male)");
        if (!female) {
          fail(in_quotes(field.text) +
               " is not a sex; expected F or M (or female or male); for 1/0 codes name the column "
               "'female'");
        }
        table_.female.push_back(*female);
        continue;
      }
      std::string problem;
      const std::optional<double> value = csv::parse_number(field.text, &problem);
      if (!value) fail(problem.empty() ? in_quotes(field.text) + " is not a number" : problem);
      switch (role) {
        case Role::weight:
          if (!(*value > 0.0)) fail("body weight " + in_quotes(field.text) + " must be greater than 0 kg");
          if (!in_accepted_range(QuantityKind::body_weight, *value))
            fail("body weight " + in_quotes(field.text) + " " + outside_accepted_range(QuantityKind::body_weight));
          table_.weight_kg.push_back(*value);
          break;
        case Role::age:
          if (*value < 0.0) fail("age " + in_quotes(field.text) + " must not be negative");
          if (!in_accepted_range(QuantityKind::age, *value * kHoursPerYear))
            fail("age " + in_quotes(field.text) + " " + outside_accepted_range(QuantityKind::age));
          table_.age_years.push_back(*value);
          break;
        case Role::baseline_madrs:
          if (*value < 0.0 || *value > kMadrsMaximum)
            fail("MADRS " + in_quotes(field.text) + " lies outside the scale's 0 to " +
                 format_significant(kMadrsMaximum));
          table_.baseline_madrs.push_back(*value);
          break;
        default:
          break;
      }
    }
    ++table_.rows;
  }

  // 1 female, 0 male; nullopt when `text` is not a value this column accepts.
  std::optional<std::int8_t> read_sex(const std::string& text) const {
    const std::string value = lowercase(text);
    if (female_coded_as_number_) {
      if (value == "1" || value == "0") return static_cast<std::int8_t>(value == "1");
      return std::nullopt;
    }
    if (value == "f" || value == "female") return 1;
    if (value == "m" || value == "male") return 0;
    return std::nullopt;
  }

  csv::Reader reader_;
  CovariateTable table_;
  std::size_t header_fields_ = 0;
  std::map<Role, Column> columns_;  // by covariate (female is stored under sex)
  bool female_coded_as_number_ = false;
  std::map<std::string, int> id_lines_;
};

}  // namespace

CovariateTable parse_covariate_table(std::string_view text, const std::string& file) {
  return TableParser(text, file).parse();
}

}  // namespace ketasim
