// Fuzz target: cohort CSV text -> parse_covariate_table (cohort.from_csv). Every refusal must be a
// ketasim::Error; anything else escaping, or a crash, is a finding. docs/testing.md says how to run it.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ketasim/base/errors.hpp"
#include "ketasim/input/covariate_table.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    ketasim::parse_covariate_table(text, "fuzz.csv");
  } catch (const ketasim::Error&) {
    // Refused with a typed error.
  }
  return 0;
}
