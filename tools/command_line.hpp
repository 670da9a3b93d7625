#pragma once
// ketasim's command line in its own words. CLI11 parses; these hooks say what is wrong: the
// option, the value, what is allowed, and the closest name when a command, an option or a value
// looks misspelled. Every usage error exits with 2 (docs/cli.md).

#include <CLI/CLI.hpp>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace ketasim::cli {

// Option validators. CLI11 puts the option's name in front of the message:
// "--subjects: '0' is not allowed; expected a whole number from 1 to 1099511627776".
CLI::Validator whole_number(std::uint64_t least, std::uint64_t most = std::numeric_limits<std::uint64_t>::max());
CLI::Validator finite_number();
CLI::Validator one_of(std::vector<std::string> allowed);  // with a did-you-mean
CLI::Validator not_empty(const std::string& what);        // e.g. "a file name"
CLI::Validator shard_value();                             // INDEX/COUNT (ketasim::parse_shard)

// What is wrong with the arguments CLI11 could not place (an unknown command or option, a word too
// many), or "" when there is none. A command that allows extras (`models [show] NAME`) takes its
// extra words itself; an unknown option is an error for every command.
std::string unused_arguments_problem(const CLI::App& app);

// The message for a CLI11 parse error (for app.failure_message): the problem, then the usage of
// the command that was given.
std::string failure_message(const CLI::App* app, const CLI::Error& error);

// "usage: ketasim run [OPTIONS] scenario (`ketasim help run` for more)"; for no command (nullptr)
// the tool's usage.
std::string usage_hint(const CLI::App& app, const CLI::App* command);

// The command CLI11 selected, or nullptr.
const CLI::App* selected_command(const CLI::App& app);

// `ketasim help [COMMAND]`: the help text, or "" for an unknown command (`problem` then says which,
// with a suggestion).
std::string help_text(const CLI::App& app, const std::string& command, std::string& problem);

}  // namespace ketasim::cli
