// Hostile or absurd input (issue 9, section 7): files that are not regular files or are too large,
// YAML that nests without end, a quote that is never closed, a map of 80,000 keys, numbers beyond
// a double. Each is refused with a message that says where and what, and never crashes or hangs.

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/input_file.hpp"
#include "ketasim/base/units.hpp"
#include "ketasim/input/covariate_table.hpp"
#include "ketasim/input/scenario_loader.hpp"

namespace fs = std::filesystem;
using ketasim::IoError;
using ketasim::ScenarioError;

namespace {

const std::string kValidScenario = R"(name: hostile
model:
  name: ketamine_clements_2cmt
cohort:
  size: 10
  seed: 1
  weight: 70 kg
arms:
  - name: weekly
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 3 weeks}
)";

// The message of the ScenarioError that `text` raises ("" if it is accepted).
std::string scenario_error(const std::string& text) {
  try {
    ketasim::parse_scenario(text, "hostile.yaml");
  } catch (const ScenarioError& error) {
    CHECK(error.where().line > 0);
    CHECK(error.where().column > 0);
    return error.what();
  }
  return "";
}

// The message of the IoError that reading `path` raises ("" if it is read).
std::string read_error(const fs::path& path, std::size_t limit = ketasim::kMaxYamlFileBytes) {
  try {
    ketasim::read_text_file(path.string(), "scenario file", limit);
  } catch (const IoError& error) {
    CHECK(error.code() == ketasim::ExitCode::io);
    return error.what();
  }
  return "";
}

class TemporaryFolder {
 public:
  TemporaryFolder() : path_(fs::temp_directory_path() / ("ketasim-hostile-" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TemporaryFolder() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

}  // namespace

TEST_CASE("read_text_file refuses what is not a regular file, naming the path and what it is", "[hostile][io]") {
  const TemporaryFolder folder;
  CHECK(read_error(folder.path()) ==
        "cannot read scenario file '" + folder.path().string() + "': it is a directory, not a regular file");
  // A FIFO is refused at once: opening it for reading would wait for a writer forever.
  const fs::path fifo = folder.path() / "pipe.yaml";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(read_error(fifo) ==
        "cannot read scenario file '" + fifo.string() + "': it is a FIFO (named pipe), not a regular file");
  // /dev/zero never ends: reading it would grow without bound.
  CHECK(read_error("/dev/zero") ==
        "cannot read scenario file '/dev/zero': it is a character device, not a regular file");
  const fs::path socket_path = folder.path() / "socket.yaml";
  const int socket = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(socket >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  socket_path.string().copy(address.sun_path, sizeof address.sun_path - 1);
  REQUIRE(::bind(socket, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  CHECK(read_error(socket_path) ==
        "cannot read scenario file '" + socket_path.string() + "': it is a socket, not a regular file");
  ::close(socket);
  CHECK(read_error(folder.path() / "missing.yaml") ==
        "cannot read scenario file '" + (folder.path() / "missing.yaml").string() + "': No such file or directory");
  // Through a symbolic link, the file it names is what counts.
  fs::create_symlink("/dev/zero", folder.path() / "zero.yaml");
  CHECK_THAT(read_error(folder.path() / "zero.yaml"), Catch::Contains("it is a character device"));
}

TEST_CASE("read_text_file reads a file up to its limit and refuses one byte more", "[hostile][io]") {
  const TemporaryFolder folder;
  const fs::path file = folder.path() / "ten.csv";
  std::ofstream(file, std::ios::binary) << "0123456789";
  CHECK(ketasim::read_text_file(file.string(), "cohort file", 10) == "0123456789");
  CHECK(read_error(file, 9) == "cannot read scenario file '" + file.string() +
                                   "': it holds 10 bytes, more than the limit of 9 bytes for a scenario file "
                                   "(docs/scenario.md#limits)");
  CHECK_THAT(read_error(file, std::size_t{1} << 20), Catch::Equals(""));
  CHECK(ketasim::kMaxYamlFileBytes == std::size_t{4} << 20);
  CHECK(ketasim::kMaxTableFileBytes == std::size_t{64} << 20);
}

TEST_CASE("a scenario file that is a FIFO, a device or too large is an IoError from load_scenario_file",
          "[hostile][io]") {
  const TemporaryFolder folder;
  const fs::path fifo = folder.path() / "scenario.yaml";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(ketasim::load_scenario_file(fifo.string()), Catch::Contains("it is a FIFO (named pipe)"));
  const fs::path large = folder.path() / "large.yaml";
  {
    std::ofstream out(large, std::ios::binary);
    out << kValidScenario << "description: \"" << std::string(ketasim::kMaxYamlFileBytes, 'x') << "\"\n";
  }
  CHECK_THROWS_WITH(ketasim::load_scenario_file(large.string()),
                    Catch::Contains("more than the limit of 4 MiB for a scenario file"));
  CHECK_THROWS_AS(ketasim::load_scenario_file(large.string()), IoError);
}

TEST_CASE("a map of 80,000 keys: a duplicate is found at its line and names the first, however far apart",
          "[hostile][yaml]") {
  // The keys are checked with a hash map; these pin the behaviour the quadratic scan had.
  std::string many;
  for (int k = 0; k < 80000; ++k) many += "k" + std::to_string(k) + ": " + std::to_string(k) + "\n";
  const int first_line = 11;  // kValidScenario has 10 lines
  const int last_line = first_line + 80000;
  CHECK(scenario_error(kValidScenario + many + "k0: again\n") ==
        "hostile.yaml:" + std::to_string(last_line) + ":1: error: k0: duplicate key 'k0' (first given at line " +
            std::to_string(first_line) + ")");
  CHECK(scenario_error(kValidScenario + many + "k79999: again\n") ==
        "hostile.yaml:" + std::to_string(last_line) +
            ":1: error: k79999: duplicate key 'k79999' (first given at line " + std::to_string(last_line - 1) + ")");
  // All different: no duplicate is invented, and the first unknown key is the one reported.
  CHECK(scenario_error(kValidScenario + many) ==
        "hostile.yaml:" + std::to_string(first_line) +
            ":1: error: k0: unknown key 'k0'; expected name, description, model, "
            "cohort, arms, output or solver");
  // Keys that differ only in case are different keys.
  CHECK_THAT(scenario_error(kValidScenario + "Name: x\n"),
             Catch::Contains("unknown key 'Name' (did you mean 'name'?)"));
}

TEST_CASE("YAML nested 100,000 deep is refused with a clear message, whatever the nesting", "[hostile][yaml]") {
  const std::string expected = "invalid YAML: lists and maps nested more than 64 levels deep";
  CHECK_THAT(scenario_error("name: " + std::string(100000, '[')), Catch::Contains(expected));
  std::string maps = "name: ";
  for (int level = 0; level < 100000; ++level) maps += "{a: ";
  CHECK_THAT(scenario_error(maps), Catch::Contains(expected));
  std::string dashes = "arms:\n";
  for (int level = 0; level < 100000; ++level) dashes += "- ";
  CHECK_THAT(scenario_error(dashes + "x\n"), Catch::Contains(expected));
  std::string indented;
  for (int level = 0; level < 100; ++level) indented += std::string(static_cast<std::size_t>(level), ' ') + "a:\n";
  CHECK_THAT(scenario_error(indented), Catch::Contains(expected));
  // On the line where the 65th level opens (the root map is the first); yaml-cpp's columns of
  // unclosed brackets are not exact (tests/invalid_scenarios/yaml_nested_too_deep.yaml checks one).
  CHECK_THAT(scenario_error("name: " + std::string(100000, '[')), Catch::StartsWith("hostile.yaml:1:"));
  // 64 levels are still YAML (and then the wrong type for a name).
  CHECK_THAT(scenario_error("name: " + std::string(63, '[') + std::string(63, ']') + "\n"),
             Catch::Contains("name: expected a string, found a list"));
}

TEST_CASE("a quote that is never closed is a YAML error at the quote, not a later missing key", "[hostile][yaml]") {
  CHECK(scenario_error("name: \"hostile\nmodel: {name: ketamine_clements_2cmt}\n") ==
        "hostile.yaml:1:7: error: invalid YAML: the quoted text that starts here has no closing \"");
  CHECK(scenario_error(kValidScenario + "description: 'it''s\n") ==
        "hostile.yaml:11:14: error: invalid YAML: the quoted text that starts here has no closing '");
  CHECK(scenario_error(kValidScenario + "\"description: x\n") ==
        "hostile.yaml:11:1: error: invalid YAML: the quoted text that starts here has no closing \"");
  // After an anchor or a tag, which is where yaml-cpp marks the scalar.
  CHECK(scenario_error(kValidScenario + "description: &text !!str \"x\n") ==
        "hostile.yaml:11:26: error: invalid YAML: the quoted text that starts here has no closing \"");
  // An escaped quote does not close a string; a doubled one inside single quotes neither.
  CHECK_THAT(scenario_error(kValidScenario + "description: \"say \\\"hi\\\"\n"), Catch::Contains("has no closing \""));
  // Closed strings with escaped quotes inside are fine.
  CHECK(scenario_error(kValidScenario + "description: \"say \\\"hi\\\"\"\n") == "");
  CHECK(scenario_error(kValidScenario + "description: 'it''s'\n") == "");
}

TEST_CASE("numbers beyond a double say so and give the range of a double", "[hostile][units]") {
  std::string problem;
  CHECK_FALSE(ketasim::parse_number("1e309", &problem).has_value());
  CHECK(problem ==
        "the number '1e309' is out of the range of a double (magnitudes up to 1.8e308 and, apart from 0, "
        "down to 4.9e-324)");
  problem.clear();
  CHECK_FALSE(ketasim::parse_number("-1e-400", &problem).has_value());
  CHECK_THAT(problem, Catch::Contains("'-1e-400' is out of the range of a double"));
  problem.clear();
  CHECK_FALSE(ketasim::parse_number("ten", &problem).has_value());
  CHECK(problem.empty());  // not a number at all: the caller says so in its own words
  CHECK(ketasim::parse_number(" +2.5 ") == 2.5);
  CHECK(ketasim::parse_number("4.9e-324") > 0.0);

  CHECK_FALSE(ketasim::parse_quantity("1e309 mg", &problem).has_value());
  CHECK_THAT(problem, Catch::StartsWith("the number '1e309' is out of the range of a double"));
  // Finite as written, infinite in base units.
  CHECK_FALSE(ketasim::parse_quantity("1e308 g", &problem).has_value());
  CHECK(problem == "'1e308 g' is out of the range of a double once converted to ketasim's base units (mg, kg, L, h)");
  const auto written = ketasim::parse_written_quantity("1e308 g");
  REQUIRE(written.has_value());
  CHECK(written->number == 1e308);
  CHECK(std::isinf(written->base_value()));
}

TEST_CASE("the accepted ranges: one per kind, applied where doses, weights, ages and times are read",
          "[hostile][units]") {
  using ketasim::QuantityKind;
  for (const QuantityKind kind : {QuantityKind::drug_amount, QuantityKind::dose_per_weight, QuantityKind::body_weight,
                                  QuantityKind::age, QuantityKind::time}) {
    const ketasim::AcceptedRange& range = ketasim::accepted_range(kind);
    CHECK(range.kind == kind);
    CHECK(range.max > range.min);
    CHECK(ketasim::in_accepted_range(kind, 0.0));
    CHECK(ketasim::in_accepted_range(kind, range.max));
    CHECK_FALSE(ketasim::in_accepted_range(kind, range.max * 1.01));
    CHECK_FALSE(ketasim::in_accepted_range(kind, std::numeric_limits<double>::infinity()));
  }
  CHECK(ketasim::outside_accepted_range(QuantityKind::drug_amount) ==
        "lies outside the accepted range of a drug amount: 1e-06 to 1e+06 mg");
  CHECK(ketasim::outside_accepted_range(QuantityKind::body_weight) ==
        "lies outside the accepted range of a body weight: up to 500 kg");
  CHECK(ketasim::outside_accepted_range(QuantityKind::time) ==
        "lies outside the accepted range of a time: up to 100 y");

  const auto with_weight = [](const std::string& weight) {
    std::string text = kValidScenario;
    text.replace(text.find("70 kg"), 5, weight);
    return scenario_error(text);
  };
  CHECK(with_weight("{distribution: normal, mean: 70 kg, sd: 1e300 kg, min: 40 kg, max: 100 kg}") ==
        "hostile.yaml:7:51: error: cohort.weight.sd: '1e300 kg' lies outside the accepted range of a body weight: up "
        "to 500 kg");
  CHECK_THAT(with_weight("7000 kg"), Catch::Contains("'7000 kg' lies outside the accepted range of a body weight"));
  CHECK(with_weight("{distribution: normal, mean: 70 kg, sd: 0 kg, min: 40 kg, max: 100 kg}") == "");
  const auto with_dose = [](const std::string& dose) {
    std::string text = kValidScenario;
    text.replace(text.find("0.5 mg/kg"), 9, dose);
    return scenario_error(text);
  };
  CHECK(with_dose("1e308 g") ==
        "hostile.yaml:10:41: error: arms[0].regimen.dose: '1e308 g' lies outside the accepted range of a drug amount: "
        "1e-06 to 1e+06 mg");
  CHECK_THAT(with_dose("2 g/kg"),
             Catch::Contains("'2 g/kg' lies outside the accepted range of a weight-based dose: 1e-06 to 1000 mg/kg"));
  CHECK_THAT(with_dose("1e-300 mg"), Catch::Contains("lies outside the accepted range of a drug amount"));
  CHECK(with_dose("1 kg") != "");    // a body mass, not a dose
  CHECK(with_dose("1000 g") == "");  // 1 kg of drug is the most accepted
  CHECK_THAT(with_dose("-0.5 mg/kg"), Catch::Contains("'-0.5 mg/kg' must be greater than 0"));
  std::string age = kValidScenario;
  age.replace(age.find("  weight: 70 kg"), 15,
              "  weight: 70 kg\n  age: {distribution: normal, mean: 40 y, sd: 1e300 y, min: 18 y, max: 65 y}");
  CHECK_THAT(scenario_error(age),
             Catch::Contains("cohort.age.sd: '1e300 y' lies outside the accepted range of an age: up to 120 y"));
  std::string time = kValidScenario;
  time.replace(time.find("3 weeks"), 7, "101 y");
  CHECK_THAT(scenario_error(time),
             Catch::Contains("arms[0].regimen.for: '101 y' lies outside the accepted range of a time: up to 100 y"));
}

TEST_CASE("every schedule ends within 100 years, whatever bounds it", "[hostile][schedule]") {
  const auto with_regimen = [](const std::string& regimen) {
    std::string text = kValidScenario;
    const std::size_t start = text.find("{route:");
    text.replace(start, text.size() - start, regimen + "\n");
    return scenario_error(text);
  };
  const std::string bolus = "{route: iv_bolus, dose: 1 mg, ";
  CHECK_THAT(with_regimen(bolus + "schedule: every 1 h, count: 1000000}"),
             Catch::Contains(
                 "arms[0].regimen.count: this schedule's last dose ends 114.077 years after the simulation start"));
  CHECK(with_regimen(bolus + "schedule: every 1 h, count: 876000}") == "");  // 99.93 years
  CHECK_THAT(with_regimen(bolus + "schedule: every 1 h, count: 1000, start: 99.99 y}"),
             Catch::Contains("regimen.count: this schedule's last"));
  CHECK_THAT(with_regimen(bolus + "schedule: every 1 d, for: 60 y, start: 50 y}"),
             Catch::Contains("regimen.for: this schedule's last"));
  CHECK_THAT(with_regimen(bolus + "schedule: [Mon 09:00], count: 6000}"),
             Catch::Contains("regimen.count: this schedule's last dose ends 114.97"));
  CHECK_THAT(with_regimen(bolus + "schedule: {at: [1 h, 60 y]}, start: 50 y}"),
             Catch::Contains("regimen.schedule: this schedule's last"));
  CHECK_THAT(with_regimen(bolus + "phases: [{schedule: every 1 d, for: 60 y}, {schedule: every 1 d, for: 50 y}]}"),
             Catch::Contains("regimen.phases[1].for: this schedule's last dose ends 110"));
  // An infusion ends after its duration.
  CHECK_THAT(with_regimen("{route: iv_infusion, dose: 1 mg, infusion_duration: 2 d, schedule: {at: [99.999 y]}}"),
             Catch::Contains("this schedule's last dose ends 100.004 years"));
}

TEST_CASE("an arm gives a subject at most 1,000,000 doses, all its rules together", "[hostile][schedule]") {
  const auto with_regimen = [](const std::string& regimen, const std::string& output = "") {
    std::string text = kValidScenario;
    const std::size_t start = text.find("{route:");
    text.replace(start, text.size() - start, regimen + "\n" + output);
    return scenario_error(text);
  };
  const std::string rule = "{route: iv_bolus, dose: 1 mg, schedule: every 1 min, count: 500000}";
  CHECK(with_regimen("[" + rule + ", " + rule + "]") == "");
  CHECK_THAT(with_regimen("[" + rule + ", " + rule + ", {route: iv_bolus, dose: 1 mg, schedule: {at: [1 h]}}]"),
             Catch::Contains("arms[0].regimen: arm 'weekly' can give a subject 1000001 doses or more"));
  // An as-needed rule counts a session per min_interval of its window (here the 100-year grid).
  const std::string grid = "output: {grid: {every: 6 min, for: 100 y}}\n";
  const std::string as_needed = "{route: iv_bolus, dose: 1 mg, as_needed: {madrs_above: 22, min_interval: ";
  const auto with_as_needed = [&](const std::string& rest) {
    std::string text = kValidScenario;
    text.replace(text.find("ketamine_clements_2cmt"), 22, "ketamine_venous");
    const std::size_t start = text.find("{route:");
    text.replace(start, text.size() - start, as_needed + rest + "}}\n" + grid);
    return scenario_error(text);
  };
  CHECK_THAT(with_as_needed("1 s"), Catch::Contains("can give a subject 3155760001 doses or more"));
  CHECK(with_as_needed("1 s, max_doses: 1000") == "");
  CHECK(with_as_needed("1 h") == "");
}

TEST_CASE("a cohort CSV number beyond a double says so", "[hostile][csv]") {
  CHECK_THROWS_WITH(ketasim::parse_covariate_table("WT\n1e309\n", "p.csv"),
                    Catch::Contains("p.csv:2:1: error: column WT: the number '1e309' is out of the range of a double"));
  CHECK_THROWS_WITH(
      ketasim::parse_covariate_table("WT\n600\n", "p.csv"),
      Catch::Contains("column WT: body weight '600' lies outside the accepted range of a body weight: up to 500 kg"));
  CHECK_THROWS_WITH(ketasim::parse_covariate_table("WT,AGE\n60,-1\n", "p.csv"),
                    Catch::Contains("age '-1' must not be negative"));
}
