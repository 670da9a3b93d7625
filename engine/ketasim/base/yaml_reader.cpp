#include "ketasim/base/yaml_reader.hpp"

#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <sstream>
#include <unordered_map>

namespace ketasim::yaml {

namespace {

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

// A quantity of the expected dimension, finite in base units and, for a kind, in its range.
Quantity checked_quantity(const NodeRef& node, const std::string& text, const Dimension& expected,
                          std::optional<QuantityKind> kind) {
  std::string problem;
  const auto written = parse_written_quantity(text, &problem);
  if (!written) node.fail("cannot read " + in_quotes(text) + " as " + describe(expected) + ": " + problem);
  const Dimension& dimension = written->unit.dimension;
  if (!(dimension == expected)) {
    if (dimension == dim::dimensionless) node.fail(in_quotes(text) + " has no unit, expected " + describe(expected));
    node.fail(in_quotes(text) + " is " + describe(dimension) + ", expected " + describe(expected));
  }
  // Out of range before not finite: 1e308 g is infinite in mg, and the range says what is meant.
  const double value = written->base_value();
  if (kind && !in_accepted_range(*kind, value)) node.fail(in_quotes(text) + " " + outside_accepted_range(*kind));
  if (!std::isfinite(value))
    node.fail(in_quotes(text) +
              " is out of the range of a double once converted to ketasim's base units (mg, kg, L, h)");
  return Quantity{value, dimension};
}

}  // namespace

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

std::string in_quotes(std::string_view text) {
  return "'" + std::string(text) + "'";
}

std::string format_number(double value) {
  std::ostringstream stream;
  stream.precision(6);
  stream << value;
  return stream.str();
}

int edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: insertions, deletions, substitutions and adjacent transpositions.
  const std::size_t rows = a.size() + 1;
  const std::size_t columns = b.size() + 1;
  std::vector<int> d(rows * columns, 0);
  const auto at = [columns, &d](std::size_t i, std::size_t j) -> int& { return d[i * columns + j]; };
  for (std::size_t i = 0; i < rows; ++i) at(i, 0) = static_cast<int>(i);
  for (std::size_t j = 0; j < columns; ++j) at(0, j) = static_cast<int>(j);
  for (std::size_t i = 1; i < rows; ++i) {
    for (std::size_t j = 1; j < columns; ++j) {
      const int cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      at(i, j) = std::min({at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) && lower(a[i - 2]) == lower(b[j - 1]))
        at(i, j) = std::min(at(i, j), at(i - 2, j - 2) + 1);
    }
  }
  return at(rows - 1, columns - 1);
}

std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  int best_distance = std::numeric_limits<int>::max();
  for (const auto& candidate : candidates) {
    const int distance = edit_distance(word, candidate);
    // Two edits turn most three-letter names into each other; allow only one there.
    const int limit = std::min(word.size(), candidate.size()) <= 3 ? 1 : 2;
    if (distance <= limit && distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  const auto match = closest_match(word, candidates);
  return match ? " (did you mean " + in_quotes(*match) + "?)" : std::string();
}

std::string join_alternatives(const std::vector<std::string>& words, std::string_view conjunction) {
  std::string text;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) text += i + 1 == words.size() ? " " + std::string(conjunction) + " " : std::string(", ");
    text += words[i];
  }
  return text;
}

SourceLocation location_of(const YAML::Mark& mark, const std::string& file) {
  if (mark.is_null()) return SourceLocation{file, 0, 0};
  return SourceLocation{file, mark.line + 1, mark.column + 1};
}

void NodeRef::fail(const std::string& message) const {
  throw ScenarioError(where, path, message);
}

std::string NodeRef::kind() const {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  return in_quotes(node.Scalar());
}

void NodeRef::expect_map(std::string_view what) const {
  if (!node.IsMap()) fail("expected " + std::string(what) + ", found " + kind());
}

std::string NodeRef::child_path(std::string_view key) const {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::vector<MapEntry> NodeRef::entries() const {
  expect_map("a map of keys");
  std::vector<MapEntry> result;
  // A hash map, not a scan of the earlier keys: a map of n keys costs O(n), not O(n^2) (80,000
  // keys took 20 s with a scan).
  std::unordered_map<std::string, int> first_given;  // key -> its line
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key = it->first;
    const SourceLocation key_where = location_of(key.Mark(), where.file);
    if (!key.IsScalar()) {
      throw ScenarioError(key_where, path, "keys must be plain names, found " + NodeRef{key, path, key_where}.kind());
    }
    const std::string name = key.Scalar();
    const auto [earlier, first] = first_given.emplace(name, key_where.line);
    if (!first) {
      throw ScenarioError(
          key_where, child_path(name),
          "duplicate key " + in_quotes(name) + " (first given at line " + std::to_string(earlier->second) + ")");
    }
    const YAML::Node value = it->second;
    const SourceLocation value_where = value.Mark().is_null() ? key_where : location_of(value.Mark(), where.file);
    result.push_back(MapEntry{name, key_where, NodeRef{value, child_path(name), value_where}});
  }
  return result;
}

void NodeRef::check_keys(const std::vector<std::string>& allowed) const {
  for (const auto& entry : entries()) {
    if (std::find(allowed.begin(), allowed.end(), entry.key) != allowed.end()) continue;
    const auto suggestion = closest_match(entry.key, allowed);
    const std::string advice =
        suggestion ? " (did you mean " + in_quotes(*suggestion) + "?)" : "; expected " + join_alternatives(allowed);
    throw ScenarioError(entry.key_where, child_path(entry.key), "unknown key " + in_quotes(entry.key) + advice);
  }
}

std::optional<NodeRef> NodeRef::find(std::string_view key) const {
  for (auto& entry : entries())
    if (entry.key == key) return std::move(entry.value);
  return std::nullopt;
}

NodeRef NodeRef::require(std::string_view key, std::string_view hint) const {
  auto value = find(key);
  if (!value) {
    throw ScenarioError(where, child_path(key),
                        "missing required key " + in_quotes(key) + " (" + std::string(hint) + ")");
  }
  return std::move(*value);
}

std::vector<NodeRef> NodeRef::items(std::string_view what) const {
  if (!node.IsSequence()) fail("expected " + std::string(what) + " as a list, found " + kind());
  std::vector<NodeRef> result;
  std::size_t index = 0;
  for (const auto& item : node) {
    const SourceLocation item_where = item.Mark().is_null() ? where : location_of(item.Mark(), where.file);
    result.push_back(NodeRef{item, path + "[" + std::to_string(index) + "]", item_where});
    ++index;
  }
  return result;
}

std::string NodeRef::scalar(std::string_view what) const {
  if (!node.IsScalar()) fail("expected " + std::string(what) + ", found " + kind());
  return node.Scalar();
}

std::string NodeRef::as_string() const {
  return scalar("a string");
}

std::int64_t NodeRef::as_integer(std::int64_t min, std::int64_t max) const {
  const std::string text = scalar("a whole number");
  std::string_view digits = trim(text);
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error == std::errc::result_out_of_range) fail(in_quotes(text) + " is too large for a whole number");
  if (error != std::errc() || end != digits.data() + digits.size() || digits.empty())
    fail("expected a whole number, found " + in_quotes(text));
  if (value < min || value > max) {
    const std::string range = max == std::numeric_limits<std::int64_t>::max()
                                  ? "a whole number >= " + std::to_string(min)
                                  : "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
    fail("expected " + range + ", found " + in_quotes(text));
  }
  return value;
}

std::uint64_t NodeRef::as_unsigned() const {
  const std::string text = scalar("a non-negative whole number");
  std::string_view digits = trim(text);
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error == std::errc::result_out_of_range) fail(in_quotes(text) + " is too large (at most 2^64 - 1)");
  if (error != std::errc() || end != digits.data() + digits.size() || digits.empty())
    fail("expected a non-negative whole number, found " + in_quotes(text));
  return value;
}

double NodeRef::as_number() const {
  const std::string text = scalar("a number");
  std::string problem;
  const auto value = parse_number(text, &problem);
  if (value) return *value;
  if (!problem.empty()) fail(problem);
  if (parse_quantity(text)) fail("expected a plain number without a unit, found " + in_quotes(text));
  fail("expected a number, found " + in_quotes(text));
}

bool NodeRef::as_boolean() const {
  const std::string flag = scalar("true or false");
  if (flag != "true" && flag != "false") fail("expected true or false, found " + kind());
  return flag == "true";
}

Quantity NodeRef::as_quantity(const Dimension& expected) const {
  return quantity_from(scalar(describe(expected)), expected);
}

Quantity NodeRef::as_quantity(QuantityKind kind) const {
  return quantity_from(scalar(describe(accepted_range(kind).dimension)), kind);
}

Quantity NodeRef::quantity_from(const std::string& text, const Dimension& expected) const {
  return checked_quantity(*this, text, expected, std::nullopt);
}

Quantity NodeRef::quantity_from(const std::string& text, QuantityKind kind) const {
  return checked_quantity(*this, text, accepted_range(kind).dimension, kind);
}

double NodeRef::as_percentage() const {
  const std::string text = scalar("a percentage (e.g. 30%)");
  const std::string_view trimmed = trim(text);
  if (trimmed.empty() || trimmed.back() != '%') {
    if (const auto bare = parse_number(trimmed)) {
      // Both readings of a bare number are common (0.3 and 30 for 30%); make the author choose.
      if (std::fabs(*bare) < 1.0 && *bare != 0.0) {
        fail(in_quotes(text) + " is a bare number; write it as a percentage with a % sign (a fraction of " + text +
             " is '" + format_number(*bare * 100.0) + "%')");
      }
      fail(in_quotes(text) + " is a bare number; write it as a percentage with a % sign: '" + text + "%'");
    }
    fail("expected a percentage (e.g. 30%), found " + in_quotes(text));
  }
  std::string problem;
  const auto quantity = parse_quantity(trimmed, &problem);
  if (!quantity) fail("cannot read " + in_quotes(text) + " as a percentage (e.g. 30%): " + problem);
  if (!(quantity->dimension == dim::dimensionless)) fail("expected a percentage (e.g. 30%), found " + in_quotes(text));
  return quantity->value;
}

namespace {

// Deeper than any file ketasim reads (a scenario nests about 8 levels). yaml-cpp parses by
// recursion and stops at about 1000 levels itself, with the message "bad file"; the scan below
// stops first, so YAML::Load never meets deeper nesting.
constexpr int kMaxNesting = 64;

// A pass over the parser's events before YAML::Load builds the nodes: where each document starts,
// and two defects yaml-cpp 0.7 does not report well, each raised as a ScenarioError at its place.
class DocumentScan : public YAML::EventHandler {
 public:
  DocumentScan(const std::string& text, const std::string& source_name) : text_(text), source_name_(source_name) {}

  std::vector<YAML::Mark> starts;

  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string&) override {
    check_quote_closed(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    enter(mark);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    enter(mark);
  }
  void OnMapEnd() override { --depth_; }

 private:
  // Refused well before yaml-cpp's own limit, with a message that says what is wrong.
  void enter(const YAML::Mark& mark) {
    if (++depth_ > kMaxNesting) {
      throw ScenarioError(location_of(mark, source_name_), "",
                          "invalid YAML: lists and maps nested more than " + std::to_string(kMaxNesting) +
                              " levels deep (ketasim's files need fewer than 10)");
    }
  }

  // yaml-cpp 0.7 accepts a quoted scalar whose closing quote is missing: the scalar takes the
  // rest of the file, and the error reported later ("missing required key") misleads.
  void check_quote_closed(const YAML::Mark& mark) const {
    if (mark.pos < 0) return;
    const std::size_t open = after_properties(static_cast<std::size_t>(mark.pos));
    if (open >= text_.size()) return;
    const char quote = text_[open];
    if (quote != '"' && quote != '\'') return;
    for (std::size_t i = open + 1; i < text_.size(); ++i) {
      if (quote == '"' && text_[i] == '\\') {
        ++i;  // an escaped character, e.g. \"
      } else if (text_[i] == quote) {
        if (quote == '\'' && i + 1 < text_.size() && text_[i + 1] == '\'') {
          ++i;  // '' is a quote inside a single-quoted string
          continue;
        }
        return;
      }
    }
    throw ScenarioError(location_of(mark_at(mark, open), source_name_), "",
                        std::string("invalid YAML: the quoted text that starts here has no closing ") + quote);
  }

  // A scalar's mark is at its anchor (&a) or tag (!t) when it has one: skip them, and the spaces,
  // line breaks and comments between them and the scalar.
  std::size_t after_properties(std::size_t position) const {
    while (position < text_.size()) {
      const char c = text_[position];
      if (c == '&' || c == '!') {
        while (position < text_.size() && !std::isspace(static_cast<unsigned char>(text_[position]))) ++position;
      } else if (c == '#') {
        while (position < text_.size() && text_[position] != '\n') ++position;
      } else if (std::isspace(static_cast<unsigned char>(c))) {
        ++position;
      } else {
        break;
      }
    }
    return position;
  }

  // The mark of `position`, found from an earlier mark.
  YAML::Mark mark_at(YAML::Mark mark, std::size_t position) const {
    for (auto i = static_cast<std::size_t>(mark.pos); i < position; ++i) {
      ++mark.pos;
      ++mark.column;
      if (text_[i] == '\n') {
        ++mark.line;
        mark.column = 0;
      }
    }
    return mark;
  }

  const std::string& text_;
  const std::string& source_name_;
  int depth_ = 0;
};

// The start of every document, at most three. yaml-cpp 0.7 stalls on a stray ',' outside a flow
// collection: it reports one empty document after another at the same position without
// consuming anything (YAML::LoadAll then never returns). Such a repeat is a syntax error here.
std::vector<YAML::Mark> document_starts(const std::string& text, const std::string& source_name) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  DocumentScan handler(text, source_name);
  while (handler.starts.size() < 3 && parser.HandleNextDocument(handler)) {
    const auto& starts = handler.starts;
    if (starts.size() >= 2 && starts[starts.size() - 1].pos == starts[starts.size() - 2].pos) {
      const YAML::Mark& mark = starts.back();
      const auto position = static_cast<std::size_t>(mark.pos);
      const std::string found =
          position < text.size() ? "unexpected " + in_quotes(text.substr(position, 1)) : std::string("unexpected text");
      throw ScenarioError(location_of(mark, source_name), "",
                          "invalid YAML: " + found + " (a ',' may only separate items inside [...] or {...})");
    }
  }
  return handler.starts;
}

}  // namespace

NodeRef load_document(const std::string& text, const std::string& source_name) {
  const SourceLocation start{source_name, 1, 1};
  YAML::Node root;
  try {
    const std::vector<YAML::Mark> starts = document_starts(text, source_name);
    if (starts.size() > 1) {
      throw ScenarioError(location_of(starts[1], source_name), "",
                          "the file holds more than one YAML document (separated by '---'); a scenario is a "
                          "single document");
    }
    root = YAML::Load(text);
  } catch (const YAML::Exception& error) {
    const SourceLocation where = error.mark.is_null() ? start : location_of(error.mark, source_name);
    throw ScenarioError(where, "", "invalid YAML: " + error.msg);
  }
  // The root is reported at 1:1 whatever comments precede its first key.
  return NodeRef{root, "", start};
}

}  // namespace ketasim::yaml
