#include "ketasim/nonmem.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <cstdio>
#include <optional>

#include "ketasim/csv.hpp"
#include "ketasim/errors.hpp"
#include "ketasim/result_reader.hpp"

namespace ketasim {

namespace {

std::string upper(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return text;
}

constexpr double kTicksPerHourDouble = static_cast<double>(kTicksPerHour);
constexpr double kMaxTableHours = 100.0 * 365.25 * 24.0;

// The columns of a dosing table, by position in the header (-1: absent).
struct DoseColumns {
  int id = -1, time = -1, amount = -1, rate = -1, duration = -1, evid = -1;
};

DoseColumns find_columns(const csv::Reader& reader, const csv::Line& header) {
  DoseColumns columns;
  const std::pair<const char*, int*> known[] = {{"ID", &columns.id},     {"TIME", &columns.time},     {"AMT", &columns.amount},
                                                {"RATE", &columns.rate}, {"DUR", &columns.duration}, {"EVID", &columns.evid}};
  for (std::size_t c = 0; c < header.fields.size(); ++c)
    for (const auto& [name, index] : known) {
      if (upper(header.fields[c].text) != name) continue;
      if (*index >= 0) reader.fail(header.number, header.fields[c].column, std::string("column ") + name + " appears twice in the header");
      *index = static_cast<int>(c);
    }
  for (const auto& [name, index] : {std::pair{"ID", columns.id}, {"TIME", columns.time}, {"AMT", columns.amount}})
    if (index < 0) reader.fail(header.number, 1, std::string("the header has no ") + name + " column");
  return columns;
}

// The number in a cell, or nullopt for an absent, empty or "." cell (NONMEM's missing value).
std::optional<double> cell(const csv::Reader& reader, const csv::Line& line, int column, const char* name) {
  if (column < 0) return std::nullopt;
  const csv::Field& field = line.fields[static_cast<std::size_t>(column)];
  if (field.text.empty() || field.text == ".") return std::nullopt;
  const auto value = csv::parse_number(field.text);
  if (!value) reader.fail(line.number, field.column, std::string("column ") + name + ": '" + field.text + "' is not a number");
  return value;
}

}  // namespace

DosingTable read_dosing_table(const std::string& path, Route route) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read the dosing table '" + path + "'");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  csv::Reader reader(text, path);
  DosingTable table;
  table.file = path;

  const std::optional<csv::Line> header = reader.next();
  if (!header) reader.fail(1, 0, "the table is empty; expected a header line such as ID,TIME,AMT,RATE,EVID");
  const DoseColumns columns = find_columns(reader, *header);
  if (route == Route::iv_infusion && columns.rate < 0 && columns.duration < 0)
    reader.fail(header->number, 1, "infusions need a RATE (mg/h) or DUR (h) column");

  int last_line = header->number;
  while (const std::optional<csv::Line> line = reader.next()) {
    last_line = line->number;
    if (line->fields.size() != header->fields.size())
      reader.fail(line->number, 1, "the row has " + std::to_string(line->fields.size()) + " fields, the header " +
                                       std::to_string(header->fields.size()));
    const auto field_of = [&](int column) { return line->fields[static_cast<std::size_t>(column)]; };
    if (columns.evid >= 0) {
      const auto evid = cell(reader, *line, columns.evid, "EVID");
      if (!evid || *evid != 1.0) continue;  // observations and other events are not doses
    }
    const auto id = cell(reader, *line, columns.id, "ID");
    if (!id || *id < 1.0 || *id != std::floor(*id) || *id > 9.0e15)
      reader.fail(line->number, field_of(columns.id).column,
                  "column ID: expected a whole number >= 1 (ID 1 is subject 0), found '" + field_of(columns.id).text + "'");
    const auto time = cell(reader, *line, columns.time, "TIME");
    if (!time || *time < 0.0 || *time > kMaxTableHours)
      reader.fail(line->number, field_of(columns.time).column,
                  "column TIME: expected hours from the simulation start, >= 0, found '" + field_of(columns.time).text + "'");
    const auto amount = cell(reader, *line, columns.amount, "AMT");
    if (!amount || !(*amount > 0.0))
      reader.fail(line->number, field_of(columns.amount).column,
                  "column AMT: a dose needs an amount > 0 mg, found '" + field_of(columns.amount).text + "'");
    TableDose dose;
    dose.time = std::llround(*time * kTicksPerHourDouble);
    dose.amount_mg = *amount;
    const double rate = cell(reader, *line, columns.rate, "RATE").value_or(0.0);
    const auto duration = cell(reader, *line, columns.duration, "DUR");
    if (route == Route::iv_infusion) {
      double hours = 0.0;
      if (rate > 0.0)
        hours = *amount / rate;
      else if ((rate == -2.0 || rate == 0.0) && duration && *duration > 0.0)
        hours = *duration;
      else
        reader.fail(line->number, 1, "an infusion needs RATE > 0 (mg/h), or DUR > 0 (h) with RATE -2 or no RATE");
      dose.duration = std::llround(hours * kTicksPerHourDouble);
      if (dose.duration <= 0 || hours > kMaxTableHours) reader.fail(line->number, 1, "the infusion duration is out of range");
    } else if (rate != 0.0 || (duration && *duration != 0.0)) {
      reader.fail(line->number, 1, "an " + to_string(route) + " dose has no rate or duration; use route: iv_infusion");
    }
    table.doses[static_cast<std::int64_t>(*id)].push_back(dose);
  }
  if (table.doses.empty()) reader.fail(last_line, 0, "the table has no dose rows (EVID 1)");
  for (auto& [id, doses] : table.doses)
    std::stable_sort(doses.begin(), doses.end(), [](const TableDose& a, const TableDose& b) { return a.time < b.time; });
  return table;
}

namespace {

std::string number_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

// What the export reads of one arm, every dataset checked for its shape.
struct ExportArm {
  std::size_t subjects = 0;
  std::vector<double> id, weight, age, female, madrs0, failed;
  NumberTable dose_time, dose_duration, dose_amount;  // [N x Dmax]
  std::vector<double> sample_times;                   // observation_times_h, [S]
  std::vector<std::string> variables;                 // observed outputs, DVID order
  std::vector<NumberTable> observed;                  // dv_<variable>, [N x S]
};

ExportArm read_export_arm(const FileReader& reader, const H5::H5File& file, const std::string& arm) {
  const std::string arm_path = "/arms/" + arm;
  const H5::Group arms = reader.open_group(file, "", "arms");
  if (!FileReader::has_link(arms, arm)) reader.fail(arm_path, "no such arm");
  const H5::Group group = reader.open_group(arms, "/arms", arm);
  const std::string subjects_path = arm_path + "/subjects", metrics_path = arm_path + "/metrics";
  const H5::Group subjects = reader.open_group(group, arm_path, "subjects");
  const H5::Group metrics = reader.open_group(group, arm_path, "metrics");
  ExportArm data;
  data.id = reader.read_vector(subjects, subjects_path, "id", std::nullopt);
  data.subjects = data.id.size();
  const std::size_t n = data.subjects;
  data.weight = reader.read_vector(subjects, subjects_path, "weight_kg", n);
  data.age = reader.read_vector(subjects, subjects_path, "age_y", n);
  data.female = reader.read_vector(subjects, subjects_path, "female", n);
  data.madrs0 = reader.read_vector(subjects, subjects_path, "baseline_madrs", n);
  data.failed = reader.read_vector(metrics, metrics_path, "status", n);
  data.dose_time = reader.read_numbers(subjects, subjects_path, "dose_time_h");
  data.dose_duration = reader.read_numbers(subjects, subjects_path, "dose_duration_h");
  data.dose_amount = reader.read_numbers(subjects, subjects_path, "dose_amount_mg");
  for (const auto& [table, name] : {std::pair{&data.dose_time, "dose_time_h"}, {&data.dose_duration, "dose_duration_h"},
                                    {&data.dose_amount, "dose_amount_mg"}})
    if (table->rows != n || table->columns != data.dose_time.columns)
      reader.fail(subjects_path + "/" + name, "expected " + std::to_string(n) + " subjects x " +
                                                  std::to_string(data.dose_time.columns) + " doses");
  if (FileReader::has_link(group, "observation_times_h"))
    data.sample_times = reader.read_vector(group, arm_path, "observation_times_h", std::nullopt);
  if (data.sample_times.empty()) return data;
  for (hsize_t i = 0; i < metrics.getNumObjs(); ++i) {
    const std::string name = metrics.getObjnameByIdx(i);
    if (name.rfind("dv_", 0) != 0) continue;
    NumberTable values = reader.read_numbers(metrics, metrics_path, name);
    if (values.rows != n || values.columns != data.sample_times.size())
      reader.fail(metrics_path + "/" + name, "expected " + std::to_string(n) + " subjects x " +
                                                 std::to_string(data.sample_times.size()) + " sampling times");
    data.variables.push_back(name.substr(3));
    data.observed.push_back(std::move(values));
  }
  return data;
}

}  // namespace

std::vector<std::string> arms_in_result(const std::string& result_path) {
  const QuietHdf5Errors quiet;
  const FileReader reader(result_path);
  try {
    const std::vector<std::string> names = reader.read_strings(open_result_file(result_path), "/", "arms");
    if (names.empty()) reader.fail("/ attribute arms", "expected at least one arm name");
    return names;
  } catch (const H5::Exception& error) {
    throw IoError("cannot read result file '" + result_path + "': " + error.getDetailMsg());
  }
}

std::vector<std::string> write_nonmem_data(const std::string& result_path, const std::string& arm, std::ostream& out) {
  const QuietHdf5Errors quiet;
  const FileReader reader(result_path);
  ExportArm data;
  try {
    const H5::H5File file = open_result_file(result_path);
    const std::int64_t layout = reader.read_integer(file, "/", "layout_version");
    if (layout < 3)
      reader.fail("/ attribute layout_version", "layout version " + std::to_string(layout) +
                                                    " has no per-subject doses; rerun the scenario with this version");
    data = read_export_arm(reader, file, arm);
  } catch (const H5::Exception& error) {
    throw IoError("cannot read arm '" + arm + "' of the result file '" + result_path + "': " + error.getDetailMsg());
  }

  out << "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV,DVID,WT,AGE,FEMALE,MADRS0\n";
  const std::size_t doses = data.dose_time.columns, samples = data.sample_times.size();
  for (std::size_t i = 0; i < data.subjects; ++i) {
    if (data.failed[i] != 0.0) continue;  // failed subjects have no simulated values
    const std::string id = number_text(data.id[i] + 1.0);
    const std::string covariates = number_text(data.weight[i]) + "," + number_text(data.age[i]) + "," +
                                   number_text(data.female[i]) + "," + number_text(data.madrs0[i]);
    std::size_t d = 0, s = 0;
    while (true) {
      const bool dose_left = d < doses && !std::isnan(data.dose_time.at(i, d));
      const bool sample_left = s < samples;
      if (!dose_left && !sample_left) break;
      if (dose_left && (!sample_left || data.dose_time.at(i, d) <= data.sample_times[s])) {
        const double amount = data.dose_amount.at(i, d);
        const double duration = data.dose_duration.at(i, d);
        const double rate = duration > 0.0 ? amount / duration : 0.0;
        if (amount > 0.0)  // placebo sessions give no drug and are not NONMEM doses
          out << id << "," << number_text(data.dose_time.at(i, d)) << "," << number_text(amount) << "," << number_text(rate)
              << ",1,1,1,.,0," << covariates << "\n";
        ++d;
      } else {
        for (std::size_t v = 0; v < data.observed.size(); ++v)
          out << id << "," << number_text(data.sample_times[s]) << ",0,0," << v + 2 << ",0,0,"
              << number_text(data.observed[v].at(i, s)) << "," << v + 1 << "," << covariates << "\n";
        ++s;
      }
    }
  }
  if (!out) throw IoError("writing the NONMEM data set failed");
  return data.variables;
}

}  // namespace ketasim
