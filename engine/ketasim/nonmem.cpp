#include "ketasim/nonmem.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <cstdio>
#include <optional>

#include <H5Cpp.h>

#include "ketasim/errors.hpp"

namespace ketasim {

namespace {

std::string upper(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return text;
}

// Ticks per hour as a double, for converting table times.
constexpr double kTicksPerHourDouble = static_cast<double>(kTicksPerHour);
constexpr double kMaxTableHours = 100.0 * 365.25 * 24.0;

class TableReader {
 public:
  explicit TableReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(int line, const std::string& message) const {
    throw ScenarioError({path_, line, 0}, "", message);
  }

  // The number in a cell, or nullopt for an empty or "." cell (NONMEM's missing value).
  std::optional<double> number(const std::vector<std::string>& cells, int column, int line, const std::string& name) const {
    if (column < 0 || static_cast<std::size_t>(column) >= cells.size()) return std::nullopt;
    const std::string& text = cells[static_cast<std::size_t>(column)];
    if (text.empty() || text == ".") return std::nullopt;
    std::size_t used = 0;
    double value = 0.0;
    try {
      value = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != text.size() || !std::isfinite(value)) fail(line, "column " + name + ": '" + text + "' is not a number");
    return value;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = line.find(',', start);
    std::string cell = line.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto blank = [](unsigned char c) { return std::isspace(c) != 0; };
    cell.erase(cell.begin(), std::find_if_not(cell.begin(), cell.end(), blank));
    cell.erase(std::find_if_not(cell.rbegin(), cell.rend(), blank).base(), cell.end());
    cells.push_back(std::move(cell));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return cells;
}

DosingTable read_dosing_table(const std::string& path, Route route) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read the dosing table '" + path + "'");
  const TableReader reader(path);
  DosingTable table;
  table.file = path;

  std::string line;
  int line_number = 0;
  std::vector<std::string> header;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line.front() == '#') continue;
    header = split_csv_line(line);
    break;
  }
  if (header.empty()) reader.fail(line_number, "the table is empty; expected a header line such as ID,TIME,AMT,RATE,EVID");
  const auto column = [&](const std::string& name) {
    int found = -1;
    for (std::size_t c = 0; c < header.size(); ++c) {
      if (upper(header[c]) != name) continue;
      if (found >= 0) reader.fail(line_number, "column " + name + " appears twice in the header");
      found = static_cast<int>(c);
    }
    return found;
  };
  const int id_column = column("ID"), time_column = column("TIME"), amount_column = column("AMT");
  const int rate_column = column("RATE"), duration_column = column("DUR"), evid_column = column("EVID");
  for (const auto& [index, name] : {std::pair{id_column, "ID"}, {time_column, "TIME"}, {amount_column, "AMT"}})
    if (index < 0) reader.fail(line_number, std::string("the header has no ") + name + " column (it has: " + line + ")");
  if (route == Route::iv_infusion && rate_column < 0 && duration_column < 0)
    reader.fail(line_number, "infusions need a RATE (mg/h) or DUR (h) column");

  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line.front() == '#') continue;
    const std::vector<std::string> cells = split_csv_line(line);
    if (cells.size() != header.size())
      reader.fail(line_number, "the row has " + std::to_string(cells.size()) + " fields, the header " + std::to_string(header.size()));
    if (evid_column >= 0) {
      const auto evid = reader.number(cells, evid_column, line_number, "EVID");
      if (!evid || *evid != 1.0) continue;  // observations and other events are not doses
    }
    const auto id = reader.number(cells, id_column, line_number, "ID");
    if (!id || *id < 1.0 || *id != std::floor(*id) || *id > 9.0e15)
      reader.fail(line_number, "column ID: expected a whole number >= 1 (ID 1 is subject 0), found '" +
                                   cells[static_cast<std::size_t>(id_column)] + "'");
    const auto time = reader.number(cells, time_column, line_number, "TIME");
    if (!time || *time < 0.0 || *time > kMaxTableHours)
      reader.fail(line_number, "column TIME: expected hours from the simulation start, >= 0, found '" +
                                   cells[static_cast<std::size_t>(time_column)] + "'");
    const auto amount = reader.number(cells, amount_column, line_number, "AMT");
    if (!amount || !(*amount > 0.0))
      reader.fail(line_number, "column AMT: a dose needs an amount > 0 mg, found '" + cells[static_cast<std::size_t>(amount_column)] + "'");
    TableDose dose;
    dose.time = std::llround(*time * kTicksPerHourDouble);
    dose.amount_mg = *amount;
    const double rate = reader.number(cells, rate_column, line_number, "RATE").value_or(0.0);
    const auto duration = reader.number(cells, duration_column, line_number, "DUR");
    if (route == Route::iv_infusion) {
      double hours = 0.0;
      if (rate > 0.0) hours = *amount / rate;
      else if ((rate == -2.0 || rate_column < 0 || rate == 0.0) && duration && *duration > 0.0) hours = *duration;
      else reader.fail(line_number, "an infusion needs RATE > 0 (mg/h), or DUR > 0 (h) with RATE -2 or no RATE");
      dose.duration = std::llround(hours * kTicksPerHourDouble);
      if (dose.duration <= 0 || hours > kMaxTableHours) reader.fail(line_number, "the infusion duration is out of range");
    } else if (rate != 0.0 || (duration && *duration != 0.0)) {
      reader.fail(line_number, "an " + to_string(route) + " dose has no rate or duration; use route: iv_infusion");
    }
    table.doses[static_cast<std::int64_t>(*id)].push_back(dose);
  }
  if (table.doses.empty()) reader.fail(line_number, "the table has no dose rows (EVID 1)");
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
