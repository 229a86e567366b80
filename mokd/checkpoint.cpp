#include "mokd/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/ops.h"

namespace mokd {

namespace fs = std::filesystem;

void check_output_file(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;  // absent (or unreachable: the write reports it)
  const char* what = nullptr;
  if (S_ISREG(st.st_mode)) return;
  if (S_ISLNK(st.st_mode))
    what = "a symbolic link";
  else if (S_ISDIR(st.st_mode))
    what = "a directory";
  else if (S_ISCHR(st.st_mode))
    what = "a character device";
  else if (S_ISBLK(st.st_mode))
    what = "a block device";
  else if (S_ISFIFO(st.st_mode))
    what = "a FIFO";
  else if (S_ISSOCK(st.st_mode))
    what = "a socket";
  else
    what = "not a regular file";
  std::string target;
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    target = " to " + fs::read_symlink(path, ec).string();
  }
  MOKD_FAIL(path, " is ", what, target,
            ", not a regular file; mokd_train writes only regular files (remove it or name "
            "another path)");
}

RunLock::RunLock(const std::string& dir) : path_(dir + "/run.lock") {
  std::error_code ec;
  fs::create_directories(dir, ec);
  MOKD_CHECK(!ec, "run.out_dir: cannot create ", dir, ": ", ec.message());
  check_output_file(path_);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  MOKD_CHECK(fd_ >= 0, "run.out_dir: cannot open ", path_, ": ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[512] = {0};
    ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK) MOKD_FAIL("run.out_dir: cannot lock ", path_, ": ", std::strerror(err));
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    std::string pid = holder.substr(0, holder.find(' '));
    std::string host =
        holder.find(' ') == std::string::npos ? "?" : holder.substr(holder.find(' ') + 1);
    MOKD_FAIL("run.out_dir: ", dir, " is in use by another run (pid ", pid.empty() ? "?" : pid,
              " on host ", host, ", holding ", path_,
              "); wait for it to end or choose another run.out_dir");
  }
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  const std::string text = std::to_string(::getpid()) + " " + host + "\n";
  bool ok = ::ftruncate(fd_, 0) == 0 &&
            ::pwrite(fd_, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size());
  if (!ok) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    MOKD_FAIL("run.out_dir: cannot write ", path_, ": ", std::strerror(err));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

void RunFolder::lock() {
  if (!lock_) lock_ = std::make_unique<RunLock>(dir_);
}

RunFolder::RunFolder(const TrainConfig& cfg) : dir_(cfg.run.out_dir) {
  MOKD_CHECK(!dir_.empty(), "run.out_dir: empty (resolve it with default_out_dir)");
}

bool RunFolder::has_state() const { return fs::exists(state_file()); }

std::string RunFolder::run_file() const {
  for (const std::string& f : {config_file(), dir_ + "/metrics.jsonl", state_file()}) {
    std::error_code ec;
    if (fs::symlink_status(f, ec).type() != fs::file_type::not_found && !ec) return f;
  }
  return "";
}

namespace {

// Whether `p` is `dir` or inside it, both canonical (symlinks and "..", absolute).
bool inside(const fs::path& p, const fs::path& dir) {
  auto d = dir.begin(), q = p.begin();
  for (; d != dir.end(); ++d, ++q) {
    if (d->empty()) continue;  // a trailing separator
    if (q == p.end() || *q != *d) return false;
  }
  return true;
}

fs::path canonical_path(const std::string& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal() : c;
}

}  // namespace

void RunFolder::check_fresh_run(const TrainConfig& cfg, TrainMode mode) const {
  {
    const fs::path out = canonical_path(dir_);
    const bool distill = mode == TrainMode::Distill;
    const std::pair<const char*, std::string> inputs[] = {
        {"model.teacher_weights", distill ? cfg.model.teacher_weights : ""},
        {"model.student_init", distill ? cfg.model.student_init : ""},
        {"model.teacher_init", distill ? "" : cfg.model.teacher_init}};
    for (const auto& [key, value] : inputs) {
      if (value.empty()) continue;
      const fs::path p = canonical_path(value);
      MOKD_CHECK(!inside(p, out), key, ": ", value, " (", p.string(),
                 ") is inside this run's output folder run.out_dir = ", dir_, " (", out.string(),
                 "), whose files the run writes; copy the file elsewhere or choose another "
                 "run.out_dir");
    }
  }
  if (cfg.run.resume) return;
  const std::string found = run_file();
  if (found.empty()) return;
  MOKD_CHECK(cfg.run.overwrite, "run.out_dir: ", dir_, " already holds a run (", found,
             "); resume it with --run.resume=true, choose another run.out_dir, or pass "
             "--run.overwrite=true to replace it");
}

void RunFolder::remove_run_files() const {
  for (const std::string& f : {config_file(), dir_ + "/metrics.jsonl", dir_ + "/metrics.csv",
                               state_file(), last_weights(), best_weights()}) {
    std::error_code ec;
    fs::remove(f, ec);
    MOKD_CHECK(!ec, "run.overwrite: cannot remove ", f, ": ", ec.message());
  }
}

TrainConfig RunFolder::check_resume(const TrainConfig& cfg) const {
  const std::string path = config_file();
  std::error_code ec;
  if (!fs::exists(path, ec)) return cfg;
  std::ifstream f(path, std::ios::binary);
  MOKD_CHECK(f, "run.resume: cannot read ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  TrainConfig stored;
  try {
    stored = ConfigParser::resolve(ss.str(), path, {});
  } catch (const Error& e) {
    MOKD_FAIL("run.resume: the run's configuration cannot be read: ", e.what());
  }
  const std::vector<std::string> diff = config_differences(stored, cfg);
  if (!diff.empty()) {
    std::string list;
    for (const auto& d : diff) list += "\n  " + d;
    MOKD_FAIL("run.resume: ", dir_, " was run with another configuration (", path,
              "); these keys differ:", list, "\nonly ", resume_safe_keys(),
              " may change on --resume; nothing was written");
  }
  return stored;
}

std::vector<std::string> RunFolder::remove_stale_temporaries() const {
  std::vector<std::string> removed;
  for (const std::string& d : {dir_, checkpoints()}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      const std::string name = e.path().filename().string();
      const size_t at = name.rfind(".tmp.");
      if (at == std::string::npos || at == 0) continue;
      const std::string digits = name.substr(at + 5);
      if (digits.empty() || digits.size() > 9 ||
          digits.find_first_not_of("0123456789") != std::string::npos)
        continue;
      const long pid = std::stol(digits);
      if (pid <= 0 || pid == ::getpid()) continue;
      std::error_code tec;
      if (!fs::is_regular_file(fs::symlink_status(e.path(), tec))) continue;
      if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or unknown
      if (fs::remove(e.path(), tec)) removed.push_back(e.path().string());
    }
  }
  return removed;
}

void RunFolder::create() const { fs::create_directories(checkpoints()); }

void RunFolder::write_safetensors(const std::string& path, const io::TensorMap& tensors,
                                  const io::Metadata& meta) const {
  check_output_file(path);
  check_output_file(path + ".tmp." + std::to_string(::getpid()));
  io::save_safetensors(path, tensors, meta);  // temporary file + rename
}

void write_file_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  check_output_file(path);
  check_output_file(tmp);
  // Every call is checked: a failed write, fsync or close names the file and the OS error, and
  // the file at `path` stays as it was.
  auto fail = [&](const char* what, int err) {
    ::unlink(tmp.c_str());
    MOKD_FAIL("cannot write ", path, ": ", what, " ", tmp, " failed: ", std::strerror(err));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) fail("creating", errno);
  for (size_t done = 0; done < text.size();) {
    ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : EIO;
      ::close(fd);
      fail("writing", err);
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail("fsync of", err);
  }
  if (::close(fd) != 0) fail("closing", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming", errno);
}

void RunFolder::write_text(const std::string& path, const std::string& text) const {
  write_file_atomically(path, text);
}

int64_t RunFolder::drop_metrics_after(int64_t step) const {
  check_output_file(dir_ + "/metrics.jsonl");
  check_output_file(dir_ + "/metrics.csv");
  return MetricsLog::drop_rows_after(dir_ + "/metrics.jsonl", dir_ + "/metrics.csv", step);
}

std::unique_ptr<MetricsLog> RunFolder::open_metrics(bool append) const {
  check_output_file(dir_ + "/metrics.jsonl");
  check_output_file(dir_ + "/metrics.csv");
  return std::make_unique<MetricsLog>(dir_, append);
}

RunIdentity run_identity(const TrainConfig& cfg, const Training& t) {
  return run_identity(cfg, t, cfg);
}

RunIdentity run_identity(const TrainConfig& cfg, const Training& t, const TrainConfig& stored) {
  TrainConfig old = cfg;
  old.run.out_dir = stored.run.out_dir;
  return {config_hash(cfg), config_hash_with_out_dir(old), t.teacher_sha256,
          cfg.model.teacher_weights};
}

namespace {

// Every part of a Training under its prefix (see the header for the layout).
io::State training_state(Training& t) {
  io::State s;
  io::State weights;
  weights.tensors = t.model->state_dict();
  s.add("model", weights);
  io::State optim;
  for (auto& [k, v] : t.optimizer->state()) optim.tensors[k] = v;
  s.add("optim", optim);
  s.add("", t.step->state());
  s.add("", t.loader->state());
  s.add("dropout", io::generator_state(t.model->dropout_generator()));
  if (t.ema) s.add("ema", t.ema->state());
  return s;
}

void load_training_state(Training& t, const io::State& s) {
  t.model->load_state_dict(s.part("model").tensors);
  t.optimizer->load_state(s.part("optim").tensors);
  t.step->load_state(s);
  t.loader->load_state(s);
  io::load_generator_state(t.model->dropout_generator(), s.part("dropout"));
  if (t.ema) t.ema->load_state(s.part("ema"));
}

}  // namespace

void save_checkpoint(const RunFolder& folder, Training& t, const RunIdentity& id, const Progress& p,
                     bool best) {
  NoGrad ng;
  io::State s = training_state(t);
  io::TensorMap weights = s.part("model").tensors;
  io::Metadata meta{{"model", t.model->name()},
                    {"step", std::to_string(p.step)},
                    {"epoch", std::to_string(s.counter("epoch", "checkpoint"))},
                    {"format", "mokd-weights-1"}};
  folder.write_safetensors(folder.last_weights(), weights, meta);
  if (best) folder.write_safetensors(folder.best_weights(), weights, meta);

  nlohmann::json j;
  for (const auto& [k, v] : s.counters) j[k] = v;
  MOKD_CHECK(!j.contains("step") && !j.contains("best_top1") && !j.contains("best_top5") &&
                 !j.contains("config_hash") && !j.contains("teacher_sha256"),
             "checkpoint: a part's counter uses a name of the run's own entries");
  j["step"] = p.step;
  j["best_top1"] = p.best_top1;
  j["best_top5"] = p.best_top5;
  j["config_hash"] = id.config_hash;
  j["teacher_sha256"] = id.teacher_sha256;
  folder.write_safetensors(folder.state_file(), s.tensors, {{"mokd_state", j.dump()}});
}

Progress load_checkpoint(const RunFolder& folder, Training& t, const RunIdentity& id) {
  const std::string path = folder.state_file();
  io::Metadata meta;
  io::State s;
  s.tensors = io::load_safetensors(path, {}, &meta);
  MOKD_CHECK(meta.count("mokd_state"), path,
             ": not a mokd training state (no mokd_state metadata)");
  nlohmann::json j = nlohmann::json::parse(meta.at("mokd_state"));
  const std::string hash = j.at("config_hash").get<std::string>();
  MOKD_CHECK(hash == id.config_hash || hash == id.hash_with_out_dir, path,
             ": the checkpoint was written with a different configuration (only ",
             resume_safe_keys(), " may change on --resume); see ", folder.config_file());
  MOKD_CHECK(j.at("teacher_sha256").get<std::string>() == id.teacher_sha256, path,
             ": the teacher file ", id.teacher_weights,
             " changed since the checkpoint (SHA-256 differs)");
  Progress p;
  p.step = j.at("step").get<int64_t>();
  p.best_top1 = j.at("best_top1").get<double>();
  p.best_top5 = j.at("best_top5").get<double>();
  for (const auto& [k, v] : j.items())
    if (v.is_number_integer() && k != "step") s.counters[k] = v.get<int64_t>();
  load_training_state(t, s);
  return p;
}

}  // namespace mokd
