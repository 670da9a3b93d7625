#include "ketasim/base/errors.hpp"

namespace ketasim {

std::string to_string(const SourceLocation& where) {
  std::string text = where.file.empty() ? std::string("<scenario>") : where.file;
  if (where.line > 0) {
    text += ':' + std::to_string(where.line);
    if (where.column > 0) text += ':' + std::to_string(where.column);
  }
  return text;
}

namespace {
std::string compose(const SourceLocation& where, const std::string& key_path, const std::string& message) {
  std::string text = to_string(where) + ": error: ";
  if (!key_path.empty()) text += key_path + ": ";
  return text + message;
}
}  // namespace

ScenarioError::ScenarioError(const SourceLocation& where, const std::string& key_path, const std::string& message)
    : Error(ExitCode::scenario, compose(where, key_path, message)), where_(where), key_path_(key_path) {}

}  // namespace ketasim
