#pragma once
// Numbers and durations as text, for messages, reports and summaries.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>

#include "ketasim/base/time.hpp"

namespace ketasim {

// `value` with `significant` significant digits (printf %g): 17 round-trips a double exactly.
// The shortest text that reads back as the same double (std::to_chars): exact round trips.
inline std::string format_shortest(double value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ptr);
}

inline std::string format_significant(double value, int significant = 6) {
  char text[48];
  std::snprintf(text, sizeof text, "%.*g", significant, value);
  return text;
}

// As format_significant, with NaN and the infinities spelled "NaN", "+inf" and "-inf" (printf's
// "-nan" tells nothing useful), for messages about values that are not finite.
inline std::string format_value(double value, int significant = 6) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0.0 ? "+inf" : "-inf";
  return format_significant(value, significant);
}

// A number of bytes for people: "12 B", "340 kB", "1.07 GB", "64 TB" (powers of 1000, as df -H;
// three significant digits).
inline std::string format_bytes(std::uintmax_t bytes) {
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  auto value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 999.5 && unit + 1 < std::size(kUnits)) {
    value /= 1000.0;
    ++unit;
  }
  char text[32];
  if (unit == 0)
    std::snprintf(text, sizeof text, "%ju B", bytes);
  else
    std::snprintf(text, sizeof text, "%.3g %s", value, kUnits[unit]);
  return text;
}

// A duration in hours as "3 d" when it is whole days, else "2.667 h".
inline std::string format_duration_h(double hours) {
  if (hours >= kHoursPerDay && std::fmod(hours, kHoursPerDay) == 0.0)
    return format_significant(hours / kHoursPerDay) + " d";
  return format_significant(hours, 4) + " h";
}

}  // namespace ketasim
