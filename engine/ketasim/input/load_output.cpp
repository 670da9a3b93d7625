// The scenario's `output` (grid, variables, metrics, assessments, response, observations) and
// `solver` sections.

#include <algorithm>
#include <array>

#include "ketasim/input/load_common.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim::loader {

namespace {

constexpr std::int64_t kMaxGridPoints = 10'000'000;  // per subject and variable
// The ODE path's tolerances (docs/model.md, "ODE path"): a relative tolerance below 1e-14 (45
// times the double's precision) asks for more than rounding lets a solution keep over its steps;
// an absolute one below 1e-20 (mg: a fraction of one molecule) means nothing.
constexpr double kMinRelativeTolerance = 1e-14;
constexpr double kMaxRelativeTolerance = 0.1;
constexpr double kMinAbsoluteTolerance = 1e-20;

void read_grid(const NodeRef& node, OutputSpec& output) {
  node.expect_map("a map {every: 5 min, for: 21 d}");
  node.check_keys({"every", "for"});
  const auto every = node.find("every");
  const auto end = node.find("for");
  if (every) output.grid_step = read_duration(*every);
  if (end) output.grid_end = read_duration(*end);
  const NodeRef& blame = end ? *end : every ? *every : node;
  if (output.grid_end < output.grid_step) {
    blame.fail("the grid ends (" + format_hours(output.grid_end) + ") before its first step (" +
               format_hours(output.grid_step) + ")");
  }
  if (output.grid_end / output.grid_step + 1 > kMaxGridPoints) {
    blame.fail("the grid has " + std::to_string(output.grid_end / output.grid_step + 1) + " points; at most " +
               std::to_string(kMaxGridPoints) + " are supported (use a coarser step)");
  }
}

// observations: {times: [...], variables: [{name, error: {proportional, additive}}]}
ObservationSpec read_observations(const NodeRef& node, const ModelCard& card, const OutputSpec& output) {
  node.expect_map("a map {times: [0.5 h, 2 h], variables: [{name: plasma_ketamine, error: {proportional: 20%}}]}");
  node.check_keys({"times", "variables"});
  ObservationSpec spec;
  const auto times = node.require("times", "sampling times from the simulation start, e.g. times: [9.67 h, 12 h, 33 h]")
                         .items("sampling times (e.g. [9.67 h, 12 h])");
  if (times.empty()) node.fail("observations lists no sampling times");
  for (std::size_t i = 0; i < times.size(); ++i) {
    const Ticks t = read_time_point(times[i]);
    if (i > 0 && t <= spec.times.back())
      times[i].fail("sampling times must be in ascending order without repeats: " + times[i].kind() + " follows " +
                    times[i - 1].kind());
    if (t > output.grid_end - output.grid_end % output.grid_step)
      times[i].fail("sampling time " + times[i].kind() + " lies after the end of the output grid (" +
                    format_hours(output.grid_end) + ")");
    spec.times.push_back(t);
  }
  const Model model(card);
  std::vector<std::string> names;
  for (const ModelOutput& known : model.outputs()) names.push_back(known.name);
  const auto variables =
      node.require("variables", "e.g. variables: [{name: plasma_ketamine, error: {proportional: 20%}}]")
          .items("observed variables");
  if (variables.empty()) node.fail("observations lists no variables");
  for (const NodeRef& item : variables) {
    item.expect_map("{name: plasma_ketamine, error: {proportional: 20%, additive: 1}}");
    item.check_keys({"name", "error"});
    ObservedVariable variable;
    const NodeRef name = item.require("name", "a model output, e.g. plasma_ketamine");
    variable.name = name.scalar("a model output");
    const ModelOutput* known = model.find_output(variable.name);
    if (!known)
      name.fail("model " + in_quotes(card.name) + " has no output " + in_quotes(variable.name) +
                yaml::did_you_mean(variable.name, names));
    for (const ObservedVariable& earlier : spec.variables)
      if (earlier.name == variable.name) name.fail(name.kind() + " is listed twice");
    if (const auto error = item.find("error")) {
      error->expect_map("{proportional: 20%, additive: 1} (additive in " +
                        (known->unit.empty() ? std::string("score points") : known->unit) + ")");
      error->check_keys({"proportional", "additive"});
      if (const auto proportional = error->find("proportional")) {
        variable.proportional = proportional->as_percentage();
        if (!(variable.proportional >= 0.0)) proportional->fail("a proportional error must not be negative");
      }
      if (const auto additive = error->find("additive")) {
        variable.additive = additive->as_number();
        check_sign(*additive, variable.additive, Sign::non_negative);
      }
    }
    spec.variables.push_back(variable);
  }
  return spec;
}

// output.variables: model outputs, each once. An empty list writes no trajectories: metrics only,
// for very large cohorts.
std::vector<std::string> read_variables(const NodeRef& node, const ModelCard& card) {
  const Model model(card);
  std::vector<std::string> names;
  for (const ModelOutput& known : model.outputs()) names.push_back(known.name);
  std::vector<std::string> chosen;
  const auto items = node.items("output variables (e.g. [plasma_" + card.drug + ", dissociation])");
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string name = items[i].scalar("an output variable");
    if (!model.find_output(name)) {
      items[i].fail("model " + in_quotes(card.name) + " has no output " + in_quotes(name) +
                    yaml::did_you_mean(name, names) + "; expected " + yaml::join_alternatives(names));
    }
    const auto earlier = std::find(chosen.begin(), chosen.end(), name);
    if (earlier != chosen.end())
      items[i].fail(items[i].kind() + " is listed twice (also at " +
                    items[static_cast<std::size_t>(earlier - chosen.begin())].path + ")");
    chosen.push_back(name);
  }
  return chosen;
}

// A list of times, strictly ascending; `positive`: each > 0 (a duration), else >= 0.
std::vector<Ticks> read_ascending_times(const NodeRef& node, const std::string& what, bool positive) {
  std::vector<Ticks> times;
  const auto items = node.items(what);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Ticks t = positive ? read_duration(items[i]) : read_time_point(items[i]);
    if (i > 0 && t <= times.back())
      items[i].fail("assessment times must be in ascending order without repeats: " + items[i].kind() + " follows " +
                    items[i - 1].kind());
    times.push_back(t);
  }
  return times;
}

// output.assessments: a list of times after the first session, or a map {after_first: [...],
// after_each_session: [...], before_each_session: true} (after_first keeps its default when absent).
void read_assessments(const NodeRef& node, OutputSpec& output) {
  const std::string after_first = "assessment times after the first session (e.g. [2 h, 1 d, 15 d])";
  if (!node.is_map()) {
    output.assessments = read_ascending_times(node, after_first, false);
    return;
  }
  node.check_keys({"after_first", "after_each_session", "before_each_session"});
  if (node.node.size() == 0)
    node.fail("an empty assessments map; give after_first, after_each_session or before_each_session");
  if (const auto first = node.find("after_first"))
    output.assessments = read_ascending_times(*first, after_first, false);
  if (const auto each = node.find("after_each_session")) {
    output.assessments_after_each_session =
        read_ascending_times(*each, "durations after the start of each session (e.g. [24 h])", true);
    if (output.assessments_after_each_session.empty())
      each->fail("after_each_session lists no times; give at least one (e.g. [24 h]) or remove the key");
  }
  if (const auto before = node.find("before_each_session"))
    output.assessment_before_each_session = before->as_boolean();
}

constexpr std::size_t kMaxRelapseVisits = 100'000;

// output.relapse.visits: a list of times after the first session, or {from, every, until}.
std::vector<Ticks> read_visits(const NodeRef& node, const OutputSpec& output) {
  std::vector<Ticks> visits;
  if (!node.is_map()) {
    visits = read_ascending_times(node, "visit times after the first session (e.g. [28 d, 35 d, 42 d])", false);
  } else {
    node.check_keys({"from", "every", "until"});
    const Ticks from = read_time_point(node.require("from", "the first visit, e.g. from: 28 d"));
    const NodeRef every_node = node.require("every", "the time between visits, e.g. every: 7 d");
    const Ticks every = read_duration(every_node);
    Ticks until = output.grid_end;
    if (const auto last = node.find("until")) {
      until = read_time_point(*last);
      if (until < from)
        last->fail("the visits end (" + format_hours(until) + ") before they start (" + format_hours(from) + ")");
    }
    if ((until - from) / every + 1 > static_cast<Ticks>(kMaxRelapseVisits))
      every_node.fail("gives more than " + std::to_string(kMaxRelapseVisits) + " visits; use a longer interval");
    for (Ticks t = from; t <= until; t += every) visits.push_back(t);
  }
  if (visits.size() < 2)
    node.fail("relapse needs at least two visits: the first decides who is at risk, later ones who relapses");
  if (visits.size() > kMaxRelapseVisits) node.fail("more than " + std::to_string(kMaxRelapseVisits) + " visits");
  if (visits.back() > output.grid_end)
    node.fail("the last visit (" + format_hours(visits.back()) +
              " after the first session) lies after the end of the output grid (" + format_hours(output.grid_end) +
              ")");
  return visits;
}

// output.relapse: {visits, among, threshold, consecutive, dated}
RelapseVisits read_relapse(const NodeRef& node, const OutputSpec& output) {
  node.expect_map(
      "a relapse definition {visits: {from: 28 d, every: 7 d}, among: responders, threshold: {madrs_at_least: 22}, "
      "consecutive: 2}");
  node.check_keys({"visits", "among", "threshold", "consecutive", "dated"});
  RelapseVisits relapse;
  relapse.visits = read_visits(node.require("visits", "visits: {from: 28 d, every: 7 d} or a list of times"), output);
  if (const auto among = node.find("among")) {
    const std::string text = among->scalar("responders or remitters");
    if (text == "remitters")
      relapse.among = RelapseVisits::Among::remitters;
    else if (text != "responders")
      among->fail("expected responders or remitters (at the first visit), found " + among->kind() +
                  yaml::did_you_mean(text, {"responders", "remitters"}));
  }
  if (const auto threshold = node.find("threshold")) {
    const std::string expected = "{madrs_at_least: 22} or {improvement_below: 50%}";
    threshold->expect_map(expected);
    threshold->check_keys({"madrs_at_least", "improvement_below"});
    const auto at_least = threshold->find("madrs_at_least");
    const auto below = threshold->find("improvement_below");
    if (at_least.has_value() == below.has_value()) threshold->fail("give exactly one of " + expected);
    if (at_least) {
      relapse.threshold = RelapseVisits::Threshold::madrs_at_least;
      relapse.value = read_score(*at_least, Sign::positive);
    } else {
      relapse.threshold = RelapseVisits::Threshold::improvement_below;
      relapse.value = below->as_percentage();
      if (!(relapse.value > 0.0 && relapse.value <= 1.0))
        below->fail(below->kind() + " must lie above 0% and at most 100%");
    }
  }
  if (const auto consecutive = node.find("consecutive")) {
    const std::int64_t visits_after_first = static_cast<std::int64_t>(relapse.visits.size()) - 1;
    relapse.consecutive = static_cast<int>(consecutive->as_integer(1, visits_after_first));
  }
  if (const auto dated = node.find("dated")) {
    const std::string text = dated->scalar("first_visit or last_visit");
    if (text == "last_visit")
      relapse.dated = RelapseVisits::Dated::last;
    else if (text != "first_visit")
      dated->fail("expected first_visit or last_visit (of the consecutive visits), found " + dated->kind() +
                  yaml::did_you_mean(text, {"first_visit", "last_visit"}));
  }
  return relapse;
}
}  // namespace

OutputSpec read_output(const NodeRef& node, const ModelCard& card) {
  node.expect_map(
      "a map of output settings (grid, variables, metrics, dissociation_threshold, assessments, "
      "response); remove the key for defaults");
  node.check_keys(
      {"grid", "variables", "metrics", "dissociation_threshold", "assessments", "response", "observations", "relapse"});
  OutputSpec output;
  if (const auto grid = node.find("grid")) read_grid(*grid, output);
  if (const auto variables = node.find("variables")) output.variables = read_variables(*variables, card);
  if (const auto metrics = node.find("metrics")) {
    output.metrics =
        read_unique_choices(*metrics,
                            std::array{Metric::cmax, Metric::auc, Metric::auc_per_week, Metric::peak_dissociation,
                                       Metric::time_above_dissociation, Metric::dissociation_burden, Metric::dosed,
                                       Metric::metabolites, Metric::response, Metric::mass_balance},
                            "per-subject metrics (e.g. [cmax, auc, peak_dissociation])", "metric");
  }
  if (const auto threshold = node.find("dissociation_threshold")) {
    output.dissociation_threshold = threshold->as_number();
    check_sign(*threshold, output.dissociation_threshold, Sign::non_negative);
  }
  if (const auto assessments = node.find("assessments")) read_assessments(*assessments, output);
  if (const auto response = node.find("response")) {
    response->expect_map("{fraction: 50%, remission_at_or_below: 10}");
    response->check_keys({"fraction", "remission_at_or_below"});
    if (const auto fraction = response->find("fraction")) {
      output.response_fraction = fraction->as_percentage();
      if (!(output.response_fraction > 0.0 && output.response_fraction < 1.0))
        fraction->fail(fraction->kind() + " must lie strictly between 0% and 100%");
    }
    if (const auto remission = response->find("remission_at_or_below"))
      output.remission_threshold = read_score(*remission);
  }
  if (const auto observations = node.find("observations"))
    output.observations = read_observations(*observations, card, output);
  if (const auto relapse = node.find("relapse")) {
    require_depression(*relapse, card, "define relapse at visits by");
    if (std::find(output.metrics.begin(), output.metrics.end(), Metric::response) == output.metrics.end())
      relapse->fail("relapse at visits is a response metric, but output.metrics does not list response");
    output.relapse = read_relapse(*relapse, output);
  }
  return output;
}

SolverSpec read_solver(const NodeRef& node) {
  node.expect_map("a map of solver settings (method, rtol, atol); remove the key for defaults");
  node.check_keys({"method", "rtol", "atol"});
  SolverSpec solver;
  if (const auto method = node.find("method")) {
    solver.method =
        read_choice(*method, std::array{SolverMethod::automatic, SolverMethod::exact, SolverMethod::ode}, "method");
  }
  if (const auto rtol = node.find("rtol")) {
    solver.rtol = rtol->as_number();
    if (!(solver.rtol >= kMinRelativeTolerance && solver.rtol <= kMaxRelativeTolerance)) {
      rtol->fail("expected a relative tolerance from " + yaml::format_number(kMinRelativeTolerance) +
                 " (about the most that doubles can deliver) to " + yaml::format_number(kMaxRelativeTolerance) +
                 ", found " + rtol->kind());
    }
  }
  if (const auto atol = node.find("atol")) {
    solver.atol = atol->as_number();
    if (!(solver.atol >= kMinAbsoluteTolerance)) {
      atol->fail("expected an absolute tolerance of at least " + yaml::format_number(kMinAbsoluteTolerance) +
                 " (in base units: mg for amounts), found " + atol->kind());
    }
  }
  return solver;
}

}  // namespace ketasim::loader
