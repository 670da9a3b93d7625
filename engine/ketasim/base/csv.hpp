#pragma once
// Reading the CSV files a scenario may name (a cohort of patients, a NONMEM-style dosing table):
// lines with comma-separated fields, each field with the column where it starts, so that every
// problem is reported as file:line:column.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ketasim::csv {

// One field of a CSV line: its text (quotes removed) and the 1-based column where it starts.
struct Field {
  std::string text;
  int column = 0;
};

struct Line {
  int number = 0;  // 1-based
  std::vector<Field> fields;
};

// Lines of a CSV text. Blank lines and lines starting with '#' are skipped; a UTF-8 byte order mark
// and Windows line ends are accepted; a field may be quoted ("a, b" and "say ""hi""") but may not
// span lines; spaces around fields are dropped.
class Reader {
 public:
  Reader(std::string_view text, std::string file);

  // Throws ScenarioError at file:line:column.
  [[noreturn]] void fail(int line, int column, const std::string& message) const;

  // The next line that is neither blank nor a comment, split into fields; nullopt at the end.
  std::optional<Line> next();

  const std::string& file() const { return file_; }

 private:
  std::vector<Field> split(std::string_view raw) const;

  std::string_view text_;
  std::string file_;
  std::size_t position_ = 0;
  int line_number_ = 0;
};

// A plain finite number occupying all of `text` (a leading '+' allowed), or nullopt: units.hpp's
// parse_number, whose `problem` says when the number is out of the range of a double.
std::optional<double> parse_number(std::string_view text, std::string* problem = nullptr);

}  // namespace ketasim::csv
