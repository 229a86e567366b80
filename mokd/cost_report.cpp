#include "mokd/cost_report.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace mokd {

double floor_ms(const KernelCost& c, const CardRates& card) {
  const double bytes = c.bytes_read + c.bytes_written;
  double s = 0;
  if (card.copy_gbps > 0) s += bytes / (card.copy_gbps * 1e9);
  if (card.gemm_tflops > 0) s += c.flops / (card.gemm_tflops * 1e12);
  return 1000 * s;
}

std::string format_ledger(const std::map<std::string, KernelCost>& costs, double steps,
                          const CardRates& card, const std::map<std::string, double>* gpu_ms) {
  const double n = steps > 0 ? steps : 1;
  std::vector<std::pair<std::string, KernelCost>> rows;
  KernelCost total;
  for (const auto& [k, c] : costs) {
    KernelCost per = c;
    per.calls = static_cast<int64_t>(c.calls / n + 0.5);
    per.bytes_read /= n;
    per.bytes_written /= n;
    per.flops /= n;
    rows.emplace_back(k, per);
    total += per;
  }
  std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) {
    return floor_ms(a.second, card) > floor_ms(b.second, card);
  });
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "cost ledger per step (from shapes, the same on every device); floor at %.0f GB/s "
                "copies and %.1f TFLOP/s GEMMs\n",
                card.copy_gbps, card.gemm_tflops);
  out += buf;
  std::snprintf(buf, sizeof buf, "  %-28s %7s %11s %11s %10s %9s%s\n", "kernel", "calls", "read MB",
                "written MB", "GFLOP", "floor ms", gpu_ms ? "    GPU ms" : "");
  out += buf;
  double gpu_total = 0;
  auto row = [&](const std::string& name, const KernelCost& c, const double* g) {
    std::snprintf(buf, sizeof buf, "  %-28s %7lld %11.2f %11.2f %10.3f %9.3f", name.c_str(),
                  static_cast<long long>(c.calls), c.bytes_read / 1e6, c.bytes_written / 1e6,
                  c.flops / 1e9, floor_ms(c, card));
    out += buf;
    if (g) {
      std::snprintf(buf, sizeof buf, " %9.3f", *g);
      out += buf;
    }
    out += "\n";
  };
  for (const auto& [k, c] : rows) {
    double g = 0;
    const double* gp = nullptr;
    if (gpu_ms) {
      auto it = gpu_ms->find(k);
      g = it == gpu_ms->end() ? 0 : it->second / n;
      gpu_total += g;
      gp = &g;
    }
    row(k, c, gp);
  }
  row("total", total, gpu_ms ? &gpu_total : nullptr);
  return out;
}

}  // namespace mokd
