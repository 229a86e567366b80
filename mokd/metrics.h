// Metrics log of a run: one JSON object per line (metrics.jsonl) and the same rows as CSV with a
// fixed header (metrics.csv), appended and flushed row by row so a crash loses nothing written.
// Every write, flush and close is checked: a failure (a full disk) throws naming the file and the
// OS error, which stops the run before its next checkpoint, so the last one stays intact.
// tools/plot_metrics.py draws them.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace mokd {

class MetricsLog {
 public:
  // Opens (appending when resuming) <dir>/metrics.jsonl and <dir>/metrics.csv.
  MetricsLog(const std::string& dir, bool append);
  // Opens the two logs at these paths.
  MetricsLog(const std::string& jsonl_path, const std::string& csv_path, bool append);
  ~MetricsLog();  // closes without reporting; call close() to have errors reported
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  // kind: "step" or "eval"; values by column name (see kColumns in metrics.cpp; others are
  // kept in the JSON line only).
  void write(const std::string& kind, const std::map<std::string, double>& values);
  // Closes both files; throws naming the file when closing fails.
  void close();

  // Before a resume from a checkpoint at `step`: rewrites the two logs (when present) without the
  // rows of later steps, which the resumed run logs again, and without a partial last line left
  // by a killed writer. Returns the number of rows dropped; throws naming the file on an error.
  static int64_t drop_rows_after(const std::string& jsonl_path, const std::string& csv_path,
                                 int64_t step);

 private:
  void put(std::FILE* f, const std::string& path, const std::string& text);
  std::string jsonl_path_, csv_path_;
  std::FILE* jsonl_ = nullptr;
  std::FILE* csv_ = nullptr;
};

}  // namespace mokd
