#pragma once
// Numbers and durations as text, for messages, reports and summaries.

#include <cmath>
#include <cstdio>
#include <string>

namespace ketasim {

// `value` with `significant` significant digits (printf %g): 17 round-trips a double exactly.
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

// A duration in hours as "3 d" when it is whole days, else "2.667 h".
inline std::string format_duration_h(double hours) {
  if (hours >= 24.0 && std::fmod(hours, 24.0) == 0.0) return format_significant(hours / 24.0) + " d";
  return format_significant(hours, 4) + " h";
}

}  // namespace ketasim
