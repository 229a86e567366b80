#include "mokd/progress.h"

#include <cmath>
#include <cstdio>

namespace mokd {

std::string human_time(double s) {
  char buf[32];
  if (s < 0 || !std::isfinite(s)) return "?";
  int64_t t = static_cast<int64_t>(s);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", (long)(t / 3600), (long)(t / 60 % 60));
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", (long)(t / 60), (long)(t % 60));
  return buf;
}

MetricsRow step_row(const StepProgress& p, const StepStats& st, bool with_speed) {
  MetricsRow row{{"step", double(p.step)},
                 {"epoch", double(p.epoch)},
                 {"lr", p.lr},
                 {"total", st.total},
                 {"grad_norm", st.grad_norm}};
  if (with_speed) row["images_per_s"] = p.images_per_s;
  for (size_t i = 0; i < st.names.size(); ++i) row["loss." + st.names[i]] = st.losses[i];
  for (size_t i = 0; i < st.losses_after.size(); ++i)
    row["loss_after." + st.names[i]] = st.losses_after[i];
  if (st.names.size() > 1)
    for (size_t i = 0; i < st.weights.size(); ++i) row["weight." + st.names[i]] = st.weights[i];
  if (st.diagnostics) {
    size_t k = 0;
    for (size_t i = 0; i < st.names.size(); ++i)
      for (size_t j = i + 1; j < st.names.size(); ++j, ++k) {
        std::string key = std::to_string(i) + "." + std::to_string(j);
        row["cos." + key] = st.grad_cosine[k];
        row["ratio." + key] = st.grad_norm_ratio[k];
      }
  }
  return row;
}

std::string step_line(const StepProgress& p, const StepStats& st) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "epoch %ld/%ld step %ld/%ld | %.0f img/s", (long)p.epoch,
                (long)p.epochs, (long)p.step, (long)p.total_steps, p.images_per_s);
  std::string line = buf;
  if (p.world > 1) line += " on " + std::to_string(p.world) + " ranks";
  std::snprintf(buf, sizeof buf, " | ETA %s | loss", human_time(p.eta_s).c_str());
  line += buf;
  for (size_t i = 0; i < st.names.size(); ++i) {
    std::snprintf(buf, sizeof buf, " %s %.4f", st.names[i].c_str(), st.losses[i]);
    line += buf;
  }
  if (st.names.size() > 1) {
    line += " | w";
    for (size_t i = 0; i < st.weights.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%s%.3f", i ? "/" : " ", st.weights[i]);
      line += buf;
    }
  }
  std::snprintf(buf, sizeof buf, " | lr %.2e", p.lr);
  line += buf;
  return line;
}

MetricsRow eval_row(int64_t step, int64_t epoch, const EvalResult& r, const EvalResult* ema) {
  MetricsRow row{{"step", double(step)},
                 {"epoch", double(epoch)},
                 {"top1", r.top1},
                 {"top5", r.top5},
                 {"eval_loss", r.loss}};
  if (ema) {
    row["ema.top1"] = ema->top1;
    row["ema.top5"] = ema->top5;
  }
  return row;
}

std::string eval_line(int64_t step, const EvalResult& r, const EvalResult* ema) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "eval after %ld steps: top-1 %.2f%%  top-5 %.2f%%  loss %.4f",
                (long)step, r.top1, r.top5, r.loss);
  std::string line = buf;
  if (ema) {
    std::snprintf(buf, sizeof buf, "  (EMA top-1 %.2f%%)", ema->top1);
    line += buf;
  }
  return line;
}

}  // namespace mokd
