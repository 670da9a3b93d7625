#pragma once
// Reading YAML with the context an error message needs. A NodeRef is a YAML node together with
// its key path ("arms[1].regimen.dose") and its 1-based file:line:column, so every reader can
// throw a ScenarioError that says where and what. Internal to the scenario loader: nothing
// outside engine/ needs yaml-cpp.

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/units.hpp"

namespace ketasim::yaml {

// Text helpers for messages.
std::string_view trim(std::string_view text);
std::string in_quotes(std::string_view text);  // 'text'
std::string format_number(double value);       // 6 significant digits, no trailing zeros

// Edit distance with adjacent transpositions (optimal string alignment), case-insensitive:
// "cohrot" -> "cohort" is 1.
int edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is a plausible misspelling (at most 2 edits, fewer for
// short names), else nullopt.
std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates);

// " (did you mean 'cohort'?)" or "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

// "a, b or c" (or "a, b and c").
std::string join_alternatives(const std::vector<std::string>& words, std::string_view conjunction = "or");

struct MapEntry;

struct NodeRef {
  YAML::Node node;
  std::string path;  // key path from the document root; "" for the root
  SourceLocation where;

  [[noreturn]] void fail(const std::string& message) const;

  // "a map", "a list", "nothing", or the quoted scalar "'40 min'": the Y of "expected X, found Y".
  std::string kind() const;
  bool is_null() const { return node.IsNull(); }
  bool is_map() const { return node.IsMap(); }
  bool is_sequence() const { return node.IsSequence(); }
  bool is_scalar() const { return node.IsScalar(); }

  // --- maps -------------------------------------------------------------------------------
  // Fails unless this is a map; `what` names the expected content ("a map of model settings").
  void expect_map(std::string_view what) const;
  // The entries in document order. Fails on a non-map, a non-scalar key or a duplicate key.
  std::vector<MapEntry> entries() const;
  // Fails on the first key not in `allowed`, suggesting the closest allowed key.
  void check_keys(const std::vector<std::string>& allowed) const;
  std::optional<NodeRef> find(std::string_view key) const;
  // Fails with "missing required key 'key' (hint)" at this map's location.
  NodeRef require(std::string_view key, std::string_view hint) const;
  std::string child_path(std::string_view key) const;

  // --- lists ------------------------------------------------------------------------------
  // The items of a list; fails unless this is a list.
  std::vector<NodeRef> items(std::string_view what) const;

  // --- scalars ----------------------------------------------------------------------------
  // The text of a non-null scalar; fails on maps, lists and empty values.
  std::string scalar(std::string_view what) const;
  std::string as_string() const;  // like scalar(), described as "a string"
  // A whole number in [min, max]; rejects "3.5", "1e3", "ten".
  std::int64_t as_integer(std::int64_t min, std::int64_t max) const;
  std::uint64_t as_unsigned() const;
  // A plain finite number without a unit.
  double as_number() const;
  // true or false (nothing else: "yes", 1 and "True" are refused).
  bool as_boolean() const;
  // A finite quantity of the `expected` dimension, in base units. A dimensionless expectation
  // accepts a plain number (and a percentage).
  Quantity as_quantity(const Dimension& expected) const;
  // A quantity of a kind with an accepted range (units.hpp): its dimension, and a magnitude in
  // the range or 0; the message of a value outside says the range.
  Quantity as_quantity(QuantityKind kind) const;
  // The same for a text taken from this node (e.g. the "3.5 d" of "every 3.5 d").
  Quantity quantity_from(const std::string& text, const Dimension& expected) const;
  Quantity quantity_from(const std::string& text, QuantityKind kind) const;
  // "30%" -> 0.3. A bare number is refused: 0.3 and 30 are both plausible meanings.
  double as_percentage() const;
};

// One entry of a YAML map: the key (a bad key is reported at the key's location) and its value.
struct MapEntry {
  std::string key;
  SourceLocation key_where;
  NodeRef value;
};

SourceLocation location_of(const YAML::Mark& mark, const std::string& file);

// Parses a single YAML document. Syntax errors become ScenarioErrors at the parser's location.
NodeRef load_document(const std::string& text, const std::string& source_name);

}  // namespace ketasim::yaml
