#include "mokd/metrics.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
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

MetricsLog::MetricsLog(const std::string& dir, bool append) {
  std::filesystem::create_directories(dir);
  std::string jp = dir + "/metrics.jsonl", cp = dir + "/metrics.csv";
  bool csv_exists = std::filesystem::exists(cp) && append;
  auto mode = append ? std::ios::app : std::ios::trunc;
  jsonl_.open(jp, std::ios::out | mode);
  csv_.open(cp, std::ios::out | mode);
  MOKD_CHECK(jsonl_ && csv_, "metrics: cannot open ", jp, " or ", cp, " for writing");
  if (!csv_exists) {
    csv_ << "kind";
    for (auto& c : kColumns) csv_ << "," << c;
    csv_ << "\n";
    csv_.flush();
  }
}

void MetricsLog::write(const std::string& kind, const std::map<std::string, double>& values) {
  nlohmann::json j;
  j["kind"] = kind;
  for (auto& [k, v] : values) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
  csv_ << kind;
  for (auto& c : kColumns) {
    csv_ << ",";
    auto it = values.find(c);
    if (it != values.end()) csv_ << it->second;
  }
  csv_ << "\n";
  csv_.flush();
}

}  // namespace mokd
