#include "command_line.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>
#include <optional>
#include <string_view>

#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/model/blocks.hpp"

namespace ketasim::cli {
namespace {

using yaml::closest_match;
using yaml::in_quotes;
using yaml::join_alternatives;

std::string not_allowed(const std::string& value, const std::string& expected) {
  return in_quotes(value) + " is not allowed; expected " + expected;
}

std::string suggestion(std::string_view word, const std::vector<std::string>& candidates) {
  const std::optional<std::string> match = closest_match(word, candidates);
  return match ? "; did you mean " + in_quotes(*match) + "?" : std::string();
}

std::vector<std::string> command_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* command : app.get_subcommands([](const CLI::App*) { return true; }))
    names.push_back(command->get_name());
  return names;
}

// "--subjects" and "-t": the names a user can type for the options of `command`.
std::vector<std::string> option_names(const CLI::App& command) {
  std::vector<std::string> names;
  for (const CLI::Option* option : command.get_options()) {
    for (const std::string& name : option->get_lnames()) names.push_back("--" + name);
    for (const std::string& name : option->get_snames()) names.push_back("-" + name);
  }
  return names;
}

std::string command_label(const CLI::App* command) {
  return command ? command->get_name() + ": " : std::string();
}

// The option of `command` a CLI11 message is about: the longest option name it contains.
const CLI::Option* option_in_message(const CLI::App& command, const std::string& message) {
  const CLI::Option* found = nullptr;
  std::size_t longest = 0;
  for (const CLI::Option* option : command.get_options()) {
    const std::string name = option->get_name();
    if (!name.empty() && name.size() > longest && message.find(name) != std::string::npos) {
      found = option;
      longest = name.size();
    }
  }
  return found;
}

// What a value of `option` must be: its validator's description ("a whole number from 1 to
// 1024"; CLI11 appends it to the type name as "INT:..."), else from its type.
std::string expected_value(const CLI::Option& option) {
  const std::string type_name = option.get_type_name();
  const std::size_t colon = type_name.find(':');
  if (colon != std::string::npos) return type_name.substr(colon + 1);
  if (type_name == "INT") return "a whole number";
  if (type_name == "UINT") return "a whole number >= 0";
  if (type_name == "FLOAT") return "a number";
  return "text (" + option.get_description() + ")";
}

std::string joined_values(const std::vector<std::string>& values) {
  std::string text;
  for (const std::string& value : values) text += (text.empty() ? "" : " ") + value;
  return text;
}

// CLI11's own words for the errors our validators do not see, made to say what is allowed.
std::string translate(const CLI::App& app, const CLI::App* command, const CLI::Error& error) {
  const std::string message = error.what();
  const CLI::App& scope = command ? *command : app;
  if (dynamic_cast<const CLI::RequiredError*>(&error)) {
    if (!command) return "missing command; expected one of " + join_alternatives(command_names(app));
    for (const CLI::Option* option : command->get_options()) {
      if (option->get_required() && option->count() == 0) {
        return command_label(command) + "missing " + (option->get_positional() ? "" : "option ") + option->get_name() +
               " (" + option->get_description() + ")";
      }
    }
  }
  if (dynamic_cast<const CLI::ValidationError*>(&error)) return command_label(command) + message;  // our validators
  const CLI::Option* option = option_in_message(scope, message);
  if (option && dynamic_cast<const CLI::ArgumentMismatch*>(&error)) {
    return command_label(command) + option->get_name() + ": expects a value after it: " + expected_value(*option);
  }
  if (option && dynamic_cast<const CLI::ConversionError*>(&error)) {
    return command_label(command) + option->get_name() + ": " +
           not_allowed(joined_values(option->results()), expected_value(*option));
  }
  return command_label(command) + message;
}

}  // namespace

CLI::Validator whole_number(std::uint64_t least, std::uint64_t most) {
  const std::string expected = most == std::numeric_limits<std::uint64_t>::max()
                                   ? "a whole number >= " + std::to_string(least)
                                   : "a whole number from " + std::to_string(least) + " to " + std::to_string(most);
  return CLI::Validator(
      [least, most, expected](std::string& text) {
        std::uint64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        const bool digits_only = !text.empty() && stop == end && error == std::errc();
        if (!digits_only || value < least || value > most) return not_allowed(text, expected);
        return std::string();
      },
      expected);
}

CLI::Validator finite_number() {
  return CLI::Validator(
      [](std::string& text) {
        double value = 0.0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (text.empty() || stop != end || error != std::errc() || !std::isfinite(value))
          return not_allowed(text, "a number");
        return std::string();
      },
      "a number");
}

CLI::Validator one_of(std::vector<std::string> allowed) {
  const std::string expected = join_alternatives(allowed);
  return CLI::Validator(
      [allowed, expected](std::string& text) {
        if (std::find(allowed.begin(), allowed.end(), text) != allowed.end()) return std::string();
        return not_allowed(text, expected) + suggestion(text, allowed);
      },
      expected);
}

CLI::Validator not_empty(const std::string& what) {
  return CLI::Validator([what](std::string& text) { return text.empty() ? not_allowed(text, what) : std::string(); },
                        what);
}

CLI::Validator shard_value() {
  const std::string expected =
      "INDEX/COUNT, whole numbers with 1 <= INDEX <= COUNT (e.g. 3/100: the third of 100 shards)";
  return CLI::Validator(
      [expected](std::string& text) { return parse_shard(text) ? std::string() : not_allowed(text, expected); },
      expected);
}

const CLI::App* selected_command(const CLI::App& app) {
  const std::vector<const CLI::App*> selected =
      app.get_subcommands([](const CLI::App* command) { return command->parsed(); });
  return selected.empty() ? nullptr : selected.front();
}

std::string unused_arguments_problem(const CLI::App& app) {
  const CLI::App* command = selected_command(app);
  const CLI::App& scope = command ? *command : app;
  for (const std::string& argument : app.remaining(true)) {
    if (argument.size() > 1 && argument[0] == '-') {
      const std::string name = argument.substr(0, argument.find('='));
      // A one-letter option is one edit from every other: suggest only for long names.
      const std::string hint = name.rfind("--", 0) == 0 ? suggestion(name, option_names(scope)) : std::string();
      return command_label(command) + "unknown option " + in_quotes(name) + hint;
    }
    if (!command) {
      const std::string hint = suggestion(argument, command_names(app));
      return "unknown command " + in_quotes(argument) +
             (hint.empty() ? "; expected one of " + join_alternatives(command_names(app)) : hint);
    }
    if (!command->get_allow_extras()) return command_label(command) + "unexpected argument " + in_quotes(argument);
  }
  return "";
}

std::string usage_hint(const CLI::App& app, const CLI::App* command) {
  if (!command) return "usage: ketasim COMMAND [OPTIONS] (`ketasim help` lists the commands)";
  const auto formatter = std::dynamic_pointer_cast<CLI::Formatter>(app.get_formatter());
  if (!formatter) return "usage: see `ketasim help " + command->get_name() + "`";
  std::string usage = formatter->make_usage(command, app.get_name() + " " + command->get_name());
  usage.erase(0, usage.find(':') + 2);  // "Usage: "
  while (!usage.empty() && usage.back() == '\n') usage.pop_back();
  return "usage: " + usage + " (`ketasim help " + command->get_name() + "` for more)";
}

std::string failure_message(const CLI::App* app, const CLI::Error& error) {
  const CLI::App* command = selected_command(*app);
  std::string problem = unused_arguments_problem(*app);
  if (problem.empty()) problem = translate(*app, command, error);
  return "ketasim: error: " + problem + "\n" + usage_hint(*app, command) + "\n";
}

std::string help_text(const CLI::App& app, const std::string& command, std::string& problem) {
  if (command.empty())
    return app.get_formatter()->make_help(&app, app.get_name(),
                                          CLI::AppFormatMode::Normal);  // app.help() would show `help`'s
  for (const CLI::App* candidate : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (candidate->get_name() == command) return candidate->help(app.get_name());
  }
  const std::string hint = suggestion(command, command_names(app));
  problem = "help: unknown command " + in_quotes(command) +
            (hint.empty() ? "; expected one of " + join_alternatives(command_names(app)) : hint);
  return "";
}

}  // namespace ketasim::cli
