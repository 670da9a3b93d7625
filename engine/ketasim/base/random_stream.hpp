#pragma once
// Per-subject random streams. Every draw of subject i comes from Philox4x32-10 keyed by the
// scenario seed, with a counter made of (subject id, stream purpose, draw index): results never
// depend on thread count, MPI rank count or the order in which subjects are processed, and
// subject i gets the same covariates and random effects in every arm.

#include <Random123/philox.h>

#include <cmath>
#include <cstdint>
#include <numbers>

namespace ketasim {

// Independent streams of one subject. A new kind of draw gets a new purpose, so adding it never
// shifts the draws of the others.
enum class StreamPurpose : std::uint32_t {
  covariates = 1,  // body weight
  random_effects = 2,
  age = 3,
  sex = 4,
  baseline_madrs = 5,
  residuals = 6,               // residual errors of simulated observations (one draw per assessment)
  adherence = 7,               // one uniform per scheduled session of an arm: missed when below the probability
  observations = 8,            // residual errors of output.observations: one draw per variable and sampling time
  bootstrap = 9,               // `ketasim compare`: resampled subject indices, one stream per bootstrap replicate
  correlated_covariates = 10,  // weight, age, baseline MADRS together (cohort.correlations)
  cohort_row = 11,             // the row of cohort.from_csv a subject takes (when resampled)
  before_session = 12,         // residual errors of the assessments before each session: one per session
  after_session = 13,          // residual errors of the assessments after each session: per session, per time
  continuation = 14,           // residual error of a given_if rule's assessment (responder-only continuation)
  relapse_visits = 20,         // residual errors of output.relapse's visits: one per visit
  screening = 21,              // cohort.screening: per attempt, a residual error (and from the second, a baseline)
  first_occasion = 1u << 16,   // occasion k (inter-occasion variability) draws from purpose first_occasion + k
};

// The stream of a subject's occasion k (its k-th session): one normal per occasion parameter.
inline StreamPurpose occasion_stream(std::uint32_t occasion) {
  return static_cast<StreamPurpose>(static_cast<std::uint32_t>(StreamPurpose::first_occasion) + occasion);
}

class RandomStream {
 public:
  RandomStream(std::uint64_t seed, std::uint64_t subject, StreamPurpose purpose) {
    key_ = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
    counter_ = {{static_cast<std::uint32_t>(subject), static_cast<std::uint32_t>(subject >> 32),
                 static_cast<std::uint32_t>(purpose), 0u}};
  }

  // Uniform on the open interval (0, 1), 53 random bits.
  double uniform() {
    if (buffered_uniforms_ == 0) refill();
    const std::uint64_t bits = buffer_[2 - buffered_uniforms_];
    --buffered_uniforms_;
    return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53;
  }

  // Standard normal by the Box-Muller transform; both values of a pair are used.
  double normal() {
    if (has_spare_normal_) {
      has_spare_normal_ = false;
      return spare_normal_;
    }
    const double radius = std::sqrt(-2.0 * std::log(uniform()));
    const double angle = 2.0 * std::numbers::pi * uniform();
    spare_normal_ = radius * std::sin(angle);
    has_spare_normal_ = true;
    return radius * std::cos(angle);
  }

 private:
  void refill() {
    const auto block = generator_(counter_, key_);
    ++counter_.v[3];
    buffer_[0] = (static_cast<std::uint64_t>(block.v[0]) << 32) | block.v[1];
    buffer_[1] = (static_cast<std::uint64_t>(block.v[2]) << 32) | block.v[3];
    buffered_uniforms_ = 2;
  }

  r123::Philox4x32 generator_;
  r123::Philox4x32::key_type key_{};
  r123::Philox4x32::ctr_type counter_{};
  std::uint64_t buffer_[2]{};
  int buffered_uniforms_ = 0;
  double spare_normal_ = 0.0;
  bool has_spare_normal_ = false;
};

}  // namespace ketasim
