#include "ketasim/base/csv.hpp"

#include <algorithm>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/units.hpp"
#include "ketasim/base/yaml_reader.hpp"

namespace ketasim::csv {

Reader::Reader(std::string_view text, std::string file) : text_(text), file_(std::move(file)) {
  // A UTF-8 byte order mark (spreadsheet exports) is not part of the first header name.
  if (text_.substr(0, 3) == "\xEF\xBB\xBF") text_.remove_prefix(3);
}

void Reader::fail(int line, int column, const std::string& message) const {
  throw ScenarioError(SourceLocation{file_, line, column}, "", message);
}

std::optional<Line> Reader::next() {
  while (position_ < text_.size()) {
    const std::size_t end = std::min(text_.find('\n', position_), text_.size());
    std::string_view raw = text_.substr(position_, end - position_);
    position_ = end + 1;
    ++line_number_;
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    const std::string_view content = yaml::trim(raw);
    if (content.empty() || content.front() == '#') continue;
    return Line{line_number_, split(raw)};
  }
  return std::nullopt;
}

std::vector<Field> Reader::split(std::string_view raw) const {
  std::vector<Field> fields;
  std::size_t i = 0;
  while (true) {
    while (i < raw.size() && (raw[i] == ' ' || raw[i] == '\t')) ++i;
    Field field;
    field.column = static_cast<int>(i) + 1;
    if (i < raw.size() && raw[i] == '"') {
      ++i;
      bool closed = false;
      while (i < raw.size()) {
        if (raw[i] == '"') {
          if (i + 1 < raw.size() && raw[i + 1] == '"') {
            field.text += '"';
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        field.text += raw[i++];
      }
      if (!closed) fail(line_number_, field.column, "the quoted field has no closing quote (fields cannot span lines)");
      while (i < raw.size() && (raw[i] == ' ' || raw[i] == '\t')) ++i;
      if (i < raw.size() && raw[i] != ',')
        fail(line_number_, static_cast<int>(i) + 1, "unexpected text after a closing quote; expected a comma");
    } else {
      const std::size_t end = std::min(raw.find(',', i), raw.size());
      field.text = std::string(yaml::trim(raw.substr(i, end - i)));
      i = end;
    }
    fields.push_back(std::move(field));
    if (i >= raw.size()) break;
    ++i;  // the comma
  }
  return fields;
}

std::optional<double> parse_number(std::string_view text, std::string* problem) {
  return ketasim::parse_number(text, problem);
}

}  // namespace ketasim::csv
