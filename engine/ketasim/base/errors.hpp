#pragma once
// Typed errors, each mapped to a stable process exit code (docs/cli.md lists them).

#include <stdexcept>
#include <string>

namespace ketasim {

enum class ExitCode : int {
  ok = 0,
  internal = 1,
  usage = 2,            // command-line misuse
  scenario = 3,         // the scenario file is malformed or invalid
  model_parameter = 4,  // a model parameter is out of its domain
  solver = 5,           // every subject of a run failed to solve
  io = 6,               // reading or writing a file failed
  check_failed = 7,     // a reproduction target or a calibration check did not hold
  interrupted = 130,    // stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it)
};

// Where in a YAML file a value came from. Lines and columns are 1-based; 0 means unknown.
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;
};

std::string to_string(const SourceLocation& where);

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

// A scenario that cannot be run: always says where (file:line:column), which key, the value
// found and what was expected.
class ScenarioError : public Error {
 public:
  ScenarioError(const SourceLocation& where, const std::string& key_path, const std::string& message);
  const SourceLocation& where() const { return where_; }
  const std::string& key_path() const { return key_path_; }

 private:
  SourceLocation where_;
  std::string key_path_;
};

class ModelParameterError : public Error {
 public:
  explicit ModelParameterError(const std::string& message) : Error(ExitCode::model_parameter, message) {}
};

class SolverError : public Error {
 public:
  explicit SolverError(const std::string& message) : Error(ExitCode::solver, message) {}
};

class IoError : public Error {
 public:
  explicit IoError(const std::string& message) : Error(ExitCode::io, message) {}
};

// The run was cancelled (RunOptions::cancel) before it finished; no output file was written.
class InterruptedError : public Error {
 public:
  explicit InterruptedError(const std::string& message) : Error(ExitCode::interrupted, message) {}
};

}  // namespace ketasim
