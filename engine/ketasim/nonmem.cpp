#include "ketasim/nonmem.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <optional>

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

}  // namespace ketasim
