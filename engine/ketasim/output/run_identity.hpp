#pragma once
// What makes two pieces of output belong to one run, for the commands that join pieces written at
// different times: `ketasim merge` (shard files) and `ketasim run --resume` (a journal). One
// comparison for both, so that they refuse the same differences.

#include <string>
#include <vector>

#include "ketasim/solve/results.hpp"

namespace ketasim {

// The same doubles, bit for bit (NaN payloads and the sign of zero included).
bool same_numbers(const std::vector<double>& a, const std::vector<double>& b);

// What differs between two layouts of one arm, in words ("its time grid (time_h)"); "" when nothing
// does.
std::string layout_difference(const ArmLayout& a, const ArmLayout& b);

// "ketasim 0.1.0 (abc123)"
std::string build_of(const std::string& version, const std::string& revision);

}  // namespace ketasim
