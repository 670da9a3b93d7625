#include "ketasim/nonmem.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <cstdio>
#include <optional>

#include <H5Cpp.h>

#include "ketasim/csv.hpp"
#include "ketasim/errors.hpp"

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

// One arm of a result file, read for the export.
class ArmReader {
 public:
  ArmReader(const std::string& path, const std::string& arm) : path_(path), arm_("/arms/" + arm), file_(path, H5F_ACC_RDONLY) {}

  H5::H5File& file() { return file_; }

  bool exists(const std::string& name) const { return file_.nameExists(arm_ + "/" + name); }

  // A float64 dataset as a flat vector with its row width (1 for [N]).
  std::vector<double> doubles(const std::string& name, std::size_t rows, std::size_t* width) const {
    const H5::DataSet dataset = file_.openDataSet(arm_ + "/" + name);
    const H5::DataSpace space = dataset.getSpace();
    hsize_t dims[2] = {0, 1};
    const int rank = space.getSimpleExtentDims(dims);
    if (rank < 1 || rank > 2 || (rows != 0 && dims[0] != rows))
      throw IoError(path_ + ": " + arm_ + "/" + name + " has an unexpected shape");
    std::vector<double> values(static_cast<std::size_t>(dims[0] * (rank == 2 ? dims[1] : 1)));
    if (!values.empty()) dataset.read(values.data(), H5::PredType::NATIVE_DOUBLE);
    if (width) *width = rank == 2 ? static_cast<std::size_t>(dims[1]) : 1;
    return values;
  }

 private:
  std::string path_;
  std::string arm_;
  H5::H5File file_;
};

std::string number_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

}  // namespace

std::vector<std::string> arms_in_result(const std::string& result_path) {
  H5::Exception::dontPrint();
  try {
    const H5::H5File file(result_path, H5F_ACC_RDONLY);
    const H5::Attribute attribute = file.openAttribute("arms");
    hsize_t count = 0;
    attribute.getSpace().getSimpleExtentDims(&count);
    if (count == 0) throw IoError(result_path + " has no arms");
    std::vector<char*> texts(static_cast<std::size_t>(count));
    H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
    type.setCset(H5T_CSET_UTF8);
    attribute.read(type, texts.data());
    std::vector<std::string> names(texts.begin(), texts.end());
    H5Dvlen_reclaim(type.getId(), attribute.getSpace().getId(), H5P_DEFAULT, texts.data());
    return names;
  } catch (const H5::Exception& error) {
    throw IoError("cannot read '" + result_path + "' as a ketasim result file: " + error.getDetailMsg());
  }
}

std::vector<std::string> write_nonmem_data(const std::string& result_path, const std::string& arm, std::ostream& out) {
  H5::Exception::dontPrint();
  std::vector<std::string> variables;
  try {
    ArmReader reader(result_path, arm);
    int layout = 0;
    reader.file().openAttribute("layout_version").read(H5::PredType::NATIVE_INT, &layout);
    if (layout < 3) throw IoError(result_path + ": layout version " + std::to_string(layout) + " has no per-subject doses; rerun with this version");
    if (!reader.file().nameExists("/arms/" + arm)) throw IoError(result_path + ": no arm '" + arm + "'");
    const std::vector<double> ids = [&] {
      const H5::DataSet dataset = reader.file().openDataSet("/arms/" + arm + "/subjects/id");
      hsize_t n = 0;
      dataset.getSpace().getSimpleExtentDims(&n);
      std::vector<double> values(static_cast<std::size_t>(n));
      if (n) dataset.read(values.data(), H5::PredType::NATIVE_DOUBLE);
      return values;
    }();
    const std::size_t n = ids.size();
    const auto column = [&](const std::string& name) { return reader.doubles("subjects/" + name, n, nullptr); };
    const std::vector<double> weight = column("weight_kg"), age = column("age_y"), female = column("female"),
                              madrs0 = column("baseline_madrs");
    std::size_t doses = 0, check = 0;
    const std::vector<double> dose_time = reader.doubles("subjects/dose_time_h", n, &doses);
    const std::vector<double> dose_duration = reader.doubles("subjects/dose_duration_h", n, &check);
    const std::vector<double> dose_amount = reader.doubles("subjects/dose_amount_mg", n, &check);
    std::vector<double> status(n, 0.0);
    {
      const H5::DataSet dataset = reader.file().openDataSet("/arms/" + arm + "/metrics/status");
      if (n) dataset.read(status.data(), H5::PredType::NATIVE_DOUBLE);
    }
    const std::vector<double> sample_times = reader.exists("observation_times_h") ? reader.doubles("observation_times_h", 0, nullptr)
                                                                                   : std::vector<double>();
    std::vector<std::vector<double>> observed;
    if (!sample_times.empty()) {
      const H5::Group metrics = reader.file().openGroup("/arms/" + arm + "/metrics");
      for (hsize_t i = 0; i < metrics.getNumObjs(); ++i) {
        const std::string name = metrics.getObjnameByIdx(i);
        if (name.rfind("dv_", 0) != 0) continue;
        variables.push_back(name.substr(3));
        observed.push_back(reader.doubles("metrics/" + name, n, nullptr));
      }
    }

    out << "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV,DVID,WT,AGE,FEMALE,MADRS0\n";
    const std::size_t samples = sample_times.size();
    for (std::size_t i = 0; i < n; ++i) {
      if (status[i] != 0.0) continue;  // failed subjects have no simulated values
      const std::string id = number_text(ids[i] + 1.0);
      const std::string covariates =
          number_text(weight[i]) + "," + number_text(age[i]) + "," + number_text(female[i]) + "," + number_text(madrs0[i]);
      std::size_t d = 0, s = 0;
      while (true) {
        const bool dose_left = d < doses && !std::isnan(dose_time[i * doses + d]);
        const bool sample_left = s < samples;
        if (!dose_left && !sample_left) break;
        if (dose_left && (!sample_left || dose_time[i * doses + d] <= sample_times[s])) {
          const double amount = dose_amount[i * doses + d];
          const double duration = dose_duration[i * doses + d];
          const double rate = duration > 0.0 ? amount / duration : 0.0;
          if (amount > 0.0)  // placebo sessions give no drug and are not NONMEM doses
            out << id << "," << number_text(dose_time[i * doses + d]) << "," << number_text(amount) << "," << number_text(rate)
                << ",1,1,1,.,0," << covariates << "\n";
          ++d;
        } else {
          for (std::size_t v = 0; v < observed.size(); ++v)
            out << id << "," << number_text(sample_times[s]) << ",0,0," << v + 2 << ",0,0,"
                << number_text(observed[v][i * samples + s]) << "," << v + 1 << "," << covariates << "\n";
          ++s;
        }
      }
    }
  } catch (const H5::Exception& error) {
    throw IoError("cannot read arm '" + arm + "' of the result file '" + result_path + "': " + error.getDetailMsg());
  }
  if (!out) throw IoError("writing the NONMEM data set failed");
  return variables;
}

}  // namespace ketasim
