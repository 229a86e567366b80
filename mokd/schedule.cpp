// Learning-rate schedules (see schedule.h for the formulas); doubles inside, f32 out.
#include "mokd/schedule.h"

#include <cmath>
#include <numbers>

#include "engine/error.h"

namespace mokd {

namespace {
void check_lr(const char* sched, const char* field, float v) {
  MOKD_CHECK(std::isfinite(v) && v >= 0.f, sched, ": ", field, " must be finite and >= 0, got ", v);
}
void check_step(const char* sched, int64_t step) {
  MOKD_CHECK(step >= 0, sched, ": step must be >= 0, got ", step);
}
}  // namespace

CosineSchedule::CosineSchedule(const CosineScheduleConfig& cfg) : cfg_(cfg) {
  const char* n = "cosine schedule";
  check_lr(n, "base_lr", cfg.base_lr);
  check_lr(n, "min_lr", cfg.min_lr);
  check_lr(n, "warmup_start_lr", cfg.warmup_start_lr);
  MOKD_CHECK(cfg.warmup_steps >= 0, n, ": warmup_steps must be >= 0, got ", cfg.warmup_steps);
  MOKD_CHECK(cfg.total_steps > cfg.warmup_steps, n, ": total_steps (", cfg.total_steps,
             ") must be greater than warmup_steps (", cfg.warmup_steps, ")");
}

float CosineSchedule::lr_at(int64_t step) const {
  check_step("cosine schedule", step);
  const double base = cfg_.base_lr, lo = cfg_.min_lr, start = cfg_.warmup_start_lr;
  const double t = static_cast<double>(step), W = static_cast<double>(cfg_.warmup_steps),
               T = static_cast<double>(cfg_.total_steps);
  if (step < cfg_.warmup_steps) return static_cast<float>(start + (base - start) * t / W);
  if (step >= cfg_.total_steps) return static_cast<float>(lo);
  const double c = cfg_.warmup_prefix ? (t - W) / (T - W) : t / T;
  return static_cast<float>(lo + 0.5 * (base - lo) * (1.0 + std::cos(std::numbers::pi * c)));
}

StepSchedule::StepSchedule(float base_lr, int64_t step_size, float gamma)
    : base_lr_(base_lr), step_size_(step_size), gamma_(gamma) {
  const char* n = "step schedule";
  check_lr(n, "base_lr", base_lr);
  MOKD_CHECK(step_size > 0, n, ": step_size must be > 0, got ", step_size);
  MOKD_CHECK(std::isfinite(gamma) && gamma > 0.f, n, ": gamma must be finite and > 0, got ", gamma);
}

float StepSchedule::lr_at(int64_t step) const {
  check_step("step schedule", step);
  return static_cast<float>(
      static_cast<double>(base_lr_) *
      std::pow(static_cast<double>(gamma_), static_cast<double>(step / step_size_)));
}

}  // namespace mokd
