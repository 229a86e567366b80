#include "mokd/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include <unistd.h>

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

namespace {

// Rewrites `path` keeping the lines `keep` accepts (line 0 is passed as the header), through a
// temporary file and a rename; returns the number of lines dropped (0: the file is untouched).
int64_t filter_lines(const std::string& path,
                     const std::function<bool(size_t, const std::string&)>& keep) {
  if (!std::filesystem::exists(path)) return 0;
  std::ifstream in(path, std::ios::binary);
  MOKD_CHECK(in, "metrics: cannot read ", path, ": ", std::strerror(errno));
  std::string kept, line;
  int64_t dropped = 0;
  for (size_t i = 0; std::getline(in, line); ++i) {
    const bool whole = !in.eof();  // a last line without its newline: a killed writer's
    if (whole && keep(i, line))
      kept += line + "\n";
    else
      ++dropped;
  }
  if (dropped == 0) return 0;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    out.flush();
    MOKD_CHECK(out.good(), "metrics: writing ", tmp,
               " failed: ", std::strerror(errno ? errno : EIO));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  MOKD_CHECK(!ec, "metrics: replacing ", path, " failed: ", ec.message());
  return dropped;
}

}  // namespace

int64_t MetricsLog::drop_rows_after(const std::string& jsonl_path, const std::string& csv_path,
                                    int64_t step) {
  int64_t dropped = filter_lines(jsonl_path, [&](size_t, const std::string& line) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    return !j.is_discarded() && j.is_object() && j.contains("step") && j["step"].is_number() &&
           j["step"].get<double>() <= static_cast<double>(step);
  });
  filter_lines(csv_path, [&](size_t i, const std::string& line) {
    if (i == 0) return true;  // the header
    // kind,step,...: the second field
    const size_t a = line.find(',');
    if (a == std::string::npos) return false;
    const size_t b = line.find(',', a + 1);
    const std::string f =
        line.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    char* end = nullptr;
    const double v = std::strtod(f.c_str(), &end);
    return !f.empty() && end && *end == '\0' && v <= static_cast<double>(step);
  });
  return dropped;
}

}  // namespace mokd
