// Learning-rate schedules: cosine with linear warm-up (timm's CosineLRScheduler, per step) and
// step decay (torch.optim.lr_scheduler.StepLR). Pure host math; the trainer feeds lr_at(step)
// to the optimizer (Optimizer::set_lr_scale(lr_at(step) / base_lr), or set_group_lr).
#pragma once
#include <cstdint>

namespace mokd {

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  // The learning rate for the update with 0-based index `step` (negative steps throw).
  virtual float lr_at(int64_t step) const = 0;
  virtual float base_lr() const = 0;
};

struct CosineScheduleConfig {
  float base_lr = 1e-3f;
  float min_lr = 0.f;           // reached at total_steps and kept after it
  float warmup_start_lr = 0.f;  // lr at step 0 when warmup_steps > 0
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;  // the whole schedule, warm-up included
  // true: the cosine starts after the warm-up (timm warmup_prefix=True, t_initial = total -
  // warmup); false: the cosine spans [0, total) and the warm-up overlays its start (timm's
  // default warmup_prefix=False, t_initial = total; DeiT's recipe).
  bool warmup_prefix = true;
};

// With W = warmup_steps, T = total_steps:
//   t < W:            warmup_start + (base - warmup_start) * t / W
//   W <= t < T:       min + 0.5 (base - min) (1 + cos(pi c)),
//                     c = (t - W) / (T - W) if warmup_prefix, else t / T
//   t >= T:           min
// This is timm's CosineLRScheduler(t_in_epochs=False, cycle_limit=1, lr_min=min,
// warmup_t=W, warmup_lr_init=warmup_start, warmup_prefix, t_initial = T - W or T).
// Throws naming the field: negative lrs, warmup_steps < 0, total_steps <= warmup_steps
// (or total_steps <= 0).
class CosineSchedule final : public LrSchedule {
 public:
  explicit CosineSchedule(const CosineScheduleConfig& cfg);
  float lr_at(int64_t step) const override;
  float base_lr() const override { return cfg_.base_lr; }
  const CosineScheduleConfig& config() const { return cfg_; }

 private:
  CosineScheduleConfig cfg_;
};

// torch StepLR: lr(t) = base * gamma^floor(t / step_size). Throws naming the field for a
// negative base_lr, gamma <= 0 or step_size <= 0.
class StepSchedule final : public LrSchedule {
 public:
  StepSchedule(float base_lr, int64_t step_size, float gamma);
  float lr_at(int64_t step) const override;
  float base_lr() const override { return base_lr_; }

 private:
  float base_lr_;
  int64_t step_size_;
  float gamma_;
};

}  // namespace mokd
