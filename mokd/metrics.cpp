#include "mokd/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "engine/error.h"

namespace mokd {

namespace {
const std::vector<std::string> kColumns = {
    "step",           "epoch",        "lr",        "total",        "loss.task", "loss.kl",
    "loss.feat",      "loss.distill", "loss.hard", "weight.task",  "weight.kl", "weight.feat",
    "weight.distill", "weight.hard",  "grad_norm", "cos.0.1",      "cos.0.2",   "cos.1.2",
    "ratio.0.1",      "ratio.0.2",    "ratio.1.2", "images_per_s", "top1",      "top5",
    "eval_loss",      "ema.top1",     "ema.top5"};
}

namespace {
const std::string& created(const std::string& dir) {
  std::filesystem::create_directories(dir);
  return dir;
}
}  // namespace

MetricsLog::MetricsLog(const std::string& dir, bool append)
    : MetricsLog(created(dir) + "/metrics.jsonl", dir + "/metrics.csv", append) {}

MetricsLog::MetricsLog(const std::string& jsonl_path, const std::string& csv_path, bool append)
    : jsonl_path_(jsonl_path), csv_path_(csv_path) {
  bool csv_exists = append && std::filesystem::exists(csv_path_);
  const char* mode = append ? "a" : "w";
  jsonl_ = std::fopen(jsonl_path_.c_str(), mode);
  MOKD_CHECK(jsonl_, "metrics: cannot open ", jsonl_path_, " for writing: ", std::strerror(errno));
  csv_ = std::fopen(csv_path_.c_str(), mode);
  if (!csv_) {
    const int err = errno;
    std::fclose(jsonl_);
    jsonl_ = nullptr;
    MOKD_FAIL("metrics: cannot open ", csv_path_, " for writing: ", std::strerror(err));
  }
  if (!csv_exists) {
    std::string header = "kind";
    for (auto& c : kColumns) header += "," + c;
    put(csv_, csv_path_, header + "\n");
  }
}

MetricsLog::~MetricsLog() {
  if (jsonl_) std::fclose(jsonl_);
  if (csv_) std::fclose(csv_);
}

void MetricsLog::put(std::FILE* f, const std::string& path, const std::string& text) {
  MOKD_CHECK(f, "metrics: ", path, " is closed");
  errno = 0;
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = std::fflush(f) == 0 && ok;
  MOKD_CHECK(ok, "metrics: writing ", path, " failed: ", std::strerror(errno ? errno : EIO));
}

void MetricsLog::write(const std::string& kind, const std::map<std::string, double>& values) {
  nlohmann::json j;
  j["kind"] = kind;
  for (auto& [k, v] : values) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  put(jsonl_, jsonl_path_, j.dump() + "\n");
  std::ostringstream csv;
  csv << kind;
  for (auto& c : kColumns) {
    csv << ",";
    auto it = values.find(c);
    if (it != values.end()) csv << it->second;
  }
  csv << "\n";
  put(csv_, csv_path_, csv.str());
}

void MetricsLog::close() {
  for (auto [f, path] :
       {std::pair<std::FILE**, const std::string*>{&jsonl_, &jsonl_path_}, {&csv_, &csv_path_}}) {
    if (!*f) continue;
    errno = 0;
    const int rc = std::fclose(*f);
    *f = nullptr;
    MOKD_CHECK(rc == 0, "metrics: closing ", *path,
               " failed: ", std::strerror(errno ? errno : EIO));
  }
}

}  // namespace mokd
