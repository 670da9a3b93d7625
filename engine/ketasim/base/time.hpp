#pragma once
// Simulation time. Schedules are kept as integer milliseconds ("ticks") from the simulation start,
// which is Monday 00:00 of week 1, so that coinciding events compare equal exactly and repeated
// doses never drift (t_k = t0 + k * interval, never t += interval). Solvers work in hours.

#include <cmath>
#include <cstdint>

namespace ketasim {

using Ticks = std::int64_t;

inline constexpr Ticks kTicksPerSecond = 1000;
inline constexpr Ticks kTicksPerMinute = 60 * kTicksPerSecond;
inline constexpr Ticks kTicksPerHour = 60 * kTicksPerMinute;
inline constexpr Ticks kTicksPerDay = 24 * kTicksPerHour;
inline constexpr Ticks kTicksPerWeek = 7 * kTicksPerDay;
// The longest time a scenario or a dosing table may name: 100 years keeps sums of Ticks (int64
// milliseconds) far from overflow.
inline constexpr double kMaxTimeHours = 100.0 * 365.25 * 24.0;

inline Ticks hours_to_ticks(double hours) {
  return std::llround(hours * static_cast<double>(kTicksPerHour));
}
inline constexpr double ticks_to_hours(Ticks t) {
  return static_cast<double>(t) / static_cast<double>(kTicksPerHour);
}

}  // namespace ketasim
