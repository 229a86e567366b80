// Metrics log of a run: one JSON object per line (metrics.jsonl) and the same rows as CSV with a
// fixed header (metrics.csv), appended and flushed row by row so a crash loses nothing written.
// tools/plot_metrics.py draws them.
#pragma once
#include <fstream>
#include <map>
#include <string>

namespace mokd {

class MetricsLog {
 public:
  // Opens (appending when resuming) <dir>/metrics.jsonl and <dir>/metrics.csv.
  MetricsLog(const std::string& dir, bool append);
  // kind: "step" or "eval"; values by column name (see kColumns in metrics.cpp; others are
  // kept in the JSON line only).
  void write(const std::string& kind, const std::map<std::string, double>& values);

 private:
  std::ofstream jsonl_, csv_;
};

}  // namespace mokd
