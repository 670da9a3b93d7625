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

inline Ticks hours_to_ticks(double hours) {
  return std::llround(hours * static_cast<double>(kTicksPerHour));
}
inline constexpr double ticks_to_hours(Ticks t) {
  return static_cast<double>(t) / static_cast<double>(kTicksPerHour);
}

// The same units in hours, for code that works in hours (solvers, metrics, units, display). A year
// is 365.25 days: the unit "y" and ages.
inline constexpr double kMinutesPerHour = static_cast<double>(kTicksPerHour) / static_cast<double>(kTicksPerMinute);
inline constexpr double kHoursPerDay = ticks_to_hours(kTicksPerDay);
inline constexpr double kHoursPerWeek = ticks_to_hours(kTicksPerWeek);
inline constexpr double kHoursPerYear = 365.25 * kHoursPerDay;
static_assert(kMinutesPerHour == 60.0 && kHoursPerDay == 24.0 && kHoursPerWeek == 168.0 && kHoursPerYear == 8766.0);

// The longest time a scenario or a dosing table may name: 100 years keeps sums of Ticks (int64
// milliseconds) far from overflow.
inline constexpr double kMaxTimeHours = 100.0 * kHoursPerYear;

}  // namespace ketasim
