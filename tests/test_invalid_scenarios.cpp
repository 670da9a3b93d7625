// The corpus of invalid scenarios (tests/invalid_scenarios), replayed: every file has exactly one
// defect and says on its first line which message the loader must give:
//   # expect: <substring of the error message>
//   # expect-location: LINE:COL        (optional second line)

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"

namespace fs = std::filesystem;

namespace {

struct Expectation {
  std::string message;
  std::optional<int> line;
  std::optional<int> column;
};

std::optional<std::string> header_value(const std::string& line, const std::string& prefix) {
  if (line.rfind(prefix, 0) != 0) return std::nullopt;
  return line.substr(prefix.size());
}

Expectation read_expectation(const fs::path& file) {
  std::ifstream in(file);
  std::string first;
  std::string second;
  std::getline(in, first);
  std::getline(in, second);
  Expectation expectation;
  expectation.message = header_value(first, "# expect: ").value_or("");
  if (const auto location = header_value(second, "# expect-location: ")) {
    const auto colon = location->find(':');
    REQUIRE(colon != std::string::npos);
    expectation.line = std::stoi(location->substr(0, colon));
    expectation.column = std::stoi(location->substr(colon + 1));
  }
  return expectation;
}

std::vector<fs::path> corpus_files() {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(KETASIM_INVALID_SCENARIOS_DIR))
    if (entry.is_regular_file() && entry.path().extension() == ".yaml") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("every invalid scenario in the corpus is rejected with its expected message", "[scenario][corpus]") {
  const auto files = corpus_files();
  REQUIRE(files.size() >= 24);
  for (const auto& file : files) {
    DYNAMIC_SECTION(file.filename().string()) {
      const Expectation expected = read_expectation(file);
      INFO("the first line must be '# expect: <message substring>'");
      REQUIRE_FALSE(expected.message.empty());
      try {
        ketasim::load_scenario_file(file.string());
        FAIL("the scenario was accepted");
      } catch (const ketasim::ScenarioError& error) {
        const std::string message = error.what();
        CHECK_THAT(message, Catch::Contains(expected.message));
        CHECK_THAT(message, Catch::StartsWith(file.string() + ":"));
        CHECK(error.code() == ketasim::ExitCode::scenario);
        CHECK(error.where().file == file.string());
        // Every message points into the file.
        CHECK(error.where().line > 0);
        CHECK(error.where().column > 0);
        if (expected.line) {
          CHECK(error.where().line == *expected.line);
          CHECK(error.where().column == *expected.column);
          CHECK_THAT(message, Catch::StartsWith(file.string() + ":" + std::to_string(*expected.line) + ":" +
                                                std::to_string(*expected.column) + ": error: "));
        }
      }
    }
  }
}
