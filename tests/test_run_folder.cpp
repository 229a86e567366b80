// The run folder's safety rules: one run per folder, input files outside it, resume checked before
// anything is written, a lock for the run's lifetime, regular output files only, checked writes
// and stale temporary files removed.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/dataset.h"
#include "models/registry.h"
#include "mokd/checkpoint.h"
#include "mokd/metrics.h"
#include "mokd/setup.h"
#include "mokd/trainer.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;

#define EXPECT_CONTAINS(hay, needle)                          \
  EXPECT_NE(std::string(hay).find(needle), std::string::npos) \
      << "'" << (hay) << "' lacks '" << (needle) << "'"

bool have_fashion_mnist() {
  return fs::exists(std::string(data::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz");
}

std::string temp_dir(const std::string& name) {
  std::string d =
      (fs::temp_directory_path() / ("mokd_runfolder_" + name + "_" + std::to_string(::getpid())))
          .string();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TrainConfig tiny_config(const std::string& out) {
  TrainConfig c;
  c.run.out_dir = out;
  c.run.device = "cpu";
  c.data.train_limit = 64;
  c.data.eval_limit = 32;
  c.data.batch_size = 32;
  c.data.eval_batch_size = 32;
  c.data.workers = 0;
  c.model.student = "vit_fmnist_micro_distilled";
  c.model.teacher = "resnet_fmnist_small";
  c.optim.steps = 1;
  return c;
}

TEST(RunFolder, DefaultOutDirNamesTheSubcommandAndModel) {
  TrainConfig c;
  EXPECT_EQ(c.run.out_dir, "");
  EXPECT_EQ(default_out_dir(c, TrainMode::Teacher), "runs/teacher-resnet_fmnist_small");
  EXPECT_EQ(default_out_dir(c, TrainMode::Distill), "runs/distill-vit_fmnist_tiny_distilled");
  c.run.out_dir = "elsewhere/x";
  EXPECT_EQ(default_out_dir(c, TrainMode::Teacher), "elsewhere/x");
  EXPECT_EQ(default_out_dir(c, TrainMode::Distill), "elsewhere/x");
}

TEST(RunFolder, AFreshRunRefusesAFolderHoldingARun) {
  const std::string dir = temp_dir("fresh");
  TrainConfig c = tiny_config(dir);
  RunFolder f(c);
  EXPECT_NO_THROW(f.check_fresh_run(c, TrainMode::Teacher));  // empty folder
  for (const std::string& file :
       {dir + "/config.toml", dir + "/metrics.jsonl", dir + "/checkpoints/state.safetensors"}) {
    fs::remove_all(dir);
    write_file(file, "x");
    std::string msg = test::error_of([&] { f.check_fresh_run(c, TrainMode::Teacher); });
    EXPECT_CONTAINS(msg, dir);
    EXPECT_CONTAINS(msg, file);
    EXPECT_CONTAINS(msg, "--run.resume=true");
    EXPECT_CONTAINS(msg, "run.out_dir");
    EXPECT_CONTAINS(msg, "--run.overwrite=true");
    TrainConfig r = c;
    r.run.resume = true;
    EXPECT_NO_THROW(f.check_fresh_run(r, TrainMode::Teacher));
    TrainConfig o = c;
    o.run.overwrite = true;
    EXPECT_NO_THROW(f.check_fresh_run(o, TrainMode::Teacher));
    f.remove_run_files();
    EXPECT_EQ(f.run_file(), "");
  }
  fs::remove_all(dir);
}

TEST(RunFolder, AnInputFileInsideTheRunFolderIsRefused) {
  const std::string dir = temp_dir("inside");
  TrainConfig c = tiny_config(dir + "/run");
  const std::string best = dir + "/run/checkpoints/best.safetensors";
  write_file(best, "x");
  RunFolder f(c);
  for (const std::string& given :
       {best, dir + "/run/../run/checkpoints/best.safetensors", fs::relative(best).string()}) {
    TrainConfig d = c;
    d.run.overwrite = true;
    d.model.teacher_weights = given;
    std::string msg = test::error_of([&] { f.check_fresh_run(d, TrainMode::Distill); });
    EXPECT_CONTAINS(msg, "model.teacher_weights");
    EXPECT_CONTAINS(msg, given);
    EXPECT_CONTAINS(msg, fs::canonical(best).string());
    EXPECT_CONTAINS(msg, fs::canonical(dir + "/run").string());
    // A teacher run does not read model.teacher_weights.
    EXPECT_NO_THROW(f.check_fresh_run(d, TrainMode::Teacher));
    d.model.teacher_weights = "";
    d.model.student_init = given;
    msg = test::error_of([&] { f.check_fresh_run(d, TrainMode::Distill); });
    EXPECT_CONTAINS(msg, "model.student_init");
    // A teacher run reads model.teacher_init, a distillation does not.
    d.model.student_init = "";
    d.model.teacher_init = given;
    msg = test::error_of([&] { f.check_fresh_run(d, TrainMode::Teacher); });
    EXPECT_CONTAINS(msg, "model.teacher_init");
    EXPECT_CONTAINS(msg, given);
    EXPECT_NO_THROW(f.check_fresh_run(d, TrainMode::Distill));
  }
  // A sibling folder whose name starts with the run's is outside it.
  write_file(dir + "/run2/best.safetensors", "x");
  TrainConfig d = c;
  d.model.teacher_weights = dir + "/run2/best.safetensors";
  EXPECT_NO_THROW(f.check_fresh_run(d, TrainMode::Distill));
  fs::remove_all(dir);
}

// The reported loss: a distill run pointed at its teacher's folder replaced the teacher's weights.
TEST(RunFolder, ADistillRunDoesNotOverwriteItsTeacher) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  const std::string dir = temp_dir("teacher_kept");
  TrainConfig t = tiny_config(dir + "/run");
  train(t, TrainMode::Teacher);
  const std::string best = t.run.out_dir + "/checkpoints/best.safetensors";
  const std::string weights = read_file(best), metrics = read_file(t.run.out_dir + "/metrics.csv");
  ASSERT_FALSE(weights.empty());
  TrainConfig s = t;
  s.model.teacher_weights = best;
  std::string msg = test::error_of([&] { train(s, TrainMode::Distill); });
  EXPECT_CONTAINS(msg, "model.teacher_weights");
  // A second fresh teacher run in the same folder.
  msg = test::error_of([&] { train(t, TrainMode::Teacher); });
  EXPECT_CONTAINS(msg, "already holds a run");
  EXPECT_EQ(read_file(best), weights);
  EXPECT_EQ(read_file(t.run.out_dir + "/metrics.csv"), metrics);
  // run.overwrite replaces it.
  t.run.overwrite = true;
  EXPECT_NO_THROW(train(t, TrainMode::Teacher));
  fs::remove_all(dir);
}

// The files of a run folder, by path relative to it, with their bytes.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_file(e.path());
  return out;
}

TEST(RunFolder, AResumeIsCheckedBeforeAnythingIsWritten) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  const std::string dir = temp_dir("resume_first");
  TrainConfig a = tiny_config(dir + "/run");
  a.optim.steps = 3;
  a.run.stop_after = 1;
  EXPECT_TRUE(train(a, TrainMode::Teacher).stopped);
  const auto before = snapshot(a.run.out_dir);
  ASSERT_TRUE(before.count("config.toml"));
  TrainConfig b = a;
  b.run.resume = true;
  b.optim.lr = 5e-3;
  b.optim.weight_decay = 0.1;
  std::string msg = test::error_of([&] { train(b, TrainMode::Teacher); });
  EXPECT_CONTAINS(msg, "optim.lr = 0.001 in the run, 0.005 now");
  EXPECT_CONTAINS(msg, "optim.weight_decay = 0.05 in the run, 0.1 now");
  EXPECT_CONTAINS(msg, a.run.out_dir + "/config.toml");
  EXPECT_EQ(snapshot(a.run.out_dir), before) << "a refused resume changed the run folder";
  // A moved folder, named by an absolute path, resumes.
  const std::string moved = fs::absolute(dir + "/moved").string();
  fs::rename(a.run.out_dir, moved);
  TrainConfig c = a;
  c.run.resume = true;
  c.run.out_dir = moved;
  TrainSummary r = train(c, TrainMode::Teacher);
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.steps, 2);
  fs::remove_all(dir);
}

// A checkpoint written when run.out_dir was part of the configuration hash resumes.
TEST(RunFolder, ACheckpointHashedWithItsOutDirResumes) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  const std::string dir = temp_dir("old_hash");
  TrainConfig a = tiny_config(dir + "/run");
  a.optim.steps = 2;
  a.run.stop_after = 1;
  train(a, TrainMode::Teacher);
  const std::string state = a.run.out_dir + "/checkpoints/state.safetensors";
  io::Metadata meta;
  io::TensorMap tensors = io::load_safetensors(state, {}, &meta);
  nlohmann::json j = nlohmann::json::parse(meta.at("mokd_state"));
  ASSERT_EQ(j.at("config_hash").get<std::string>(), config_hash(a));
  j["config_hash"] = config_hash_with_out_dir(a);
  meta["mokd_state"] = j.dump();
  io::save_safetensors(state, tensors, meta);
  TrainConfig b = a;
  b.run.resume = true;
  b.run.stop_after = 0;
  EXPECT_EQ(train(b, TrainMode::Teacher).steps, 2);
  // Another hash is still refused.
  j["config_hash"] = std::string(64, '0');
  meta["mokd_state"] = j.dump();
  io::save_safetensors(state, tensors, meta);
  b.optim.steps = 3;
  std::string msg = test::error_of([&] { train(b, TrainMode::Teacher); });
  EXPECT_CONTAINS(msg, "different configuration");
  fs::remove_all(dir);
}

TEST(RunFolder, ALockRefusesASecondRunNamingItsHolder) {
  const std::string dir = temp_dir("lock") + "/run";
  char host[256] = {0};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  const std::string pid = std::to_string(::getpid());
  {
    RunLock a(dir);  // creates the folder
    EXPECT_EQ(read_file(dir + "/run.lock"), pid + " " + host + "\n");
    std::string msg = test::error_of([&] { RunLock b(dir); });
    EXPECT_CONTAINS(msg, dir);
    EXPECT_CONTAINS(msg, "pid " + pid);
    EXPECT_CONTAINS(msg, std::string("host ") + host);
    // A run on the locked folder is refused before it writes anything.
    TrainConfig c = tiny_config(dir);
    msg = test::error_of([&] { train(c, TrainMode::Teacher); });
    EXPECT_CONTAINS(msg, "in use by another run");
    EXPECT_EQ(fs::exists(dir + "/config.toml"), false);
  }
  // Released with its holder; the file left behind is no lock.
  EXPECT_TRUE(fs::exists(dir + "/run.lock"));
  EXPECT_NO_THROW(RunLock c(dir));
  fs::remove_all(fs::path(dir).parent_path());
}

TEST(RunFolder, OutputsMustBeRegularFiles) {
  const std::string dir = temp_dir("regular");
  const std::string victim = dir + "/victim.safetensors";
  write_file(victim, "precious");
  EXPECT_NO_THROW(check_output_file(victim));
  EXPECT_NO_THROW(check_output_file(dir + "/absent"));
  fs::create_symlink(victim, dir + "/link");
  std::string msg = test::error_of([&] { check_output_file(dir + "/link"); });
  EXPECT_CONTAINS(msg, dir + "/link is a symbolic link to " + victim);
  // /dev/null is writable, as root everything under /dev is: a rename over it would replace it.
  msg = test::error_of([&] { check_output_file("/dev/null"); });
  EXPECT_CONTAINS(msg, "/dev/null is a character device");
  msg = test::error_of([&] { check_output_file(dir); });
  EXPECT_CONTAINS(msg, dir + " is a directory");
  ASSERT_EQ(::mkfifo((dir + "/fifo").c_str(), 0644), 0);
  msg = test::error_of([&] { check_output_file(dir + "/fifo"); });
  EXPECT_CONTAINS(msg, dir + "/fifo is a FIFO");

  // The run folder's writers refuse them, and the link's target is untouched.
  TrainConfig c = tiny_config(dir + "/run");
  RunFolder f(c);
  f.create();
  fs::create_symlink(victim, f.config_file());
  msg = test::error_of([&] { f.write_text(f.config_file(), "x"); });
  EXPECT_CONTAINS(msg, f.config_file() + " is a symbolic link");
  fs::create_symlink(victim, f.last_weights());
  msg = test::error_of([&] { f.write_safetensors(f.last_weights(), {}, {}); });
  EXPECT_CONTAINS(msg, f.last_weights() + " is a symbolic link");
  fs::create_symlink("/dev/null", dir + "/run/metrics.csv");
  msg = test::error_of([&] { f.open_metrics(false); });
  EXPECT_CONTAINS(msg, dir + "/run/metrics.csv is a symbolic link to /dev/null");
  EXPECT_EQ(read_file(victim), "precious");
  fs::remove_all(dir);
}

// Rows logged after the last checkpoint are logged again by the resumed run: before resuming at
// step 3, rows of steps 4 and 5 (and a killed writer's partial line) go; earlier rows stay.
TEST(RunFolder, MetricsRowsAfterTheCheckpointAreDroppedOnResume) {
  const std::string dir = temp_dir("metrics_resume");
  {
    MetricsLog log(dir, false);
    for (int s = 1; s <= 5; ++s) log.write("step", {{"step", s}, {"loss.task", 1.0 / s}});
    log.write("eval", {{"step", 3}, {"top1", 50}});
    log.close();
  }
  {
    std::ofstream partial(dir + "/metrics.jsonl", std::ios::app);
    partial << "{\"kind\":\"step\",\"st";  // no newline: cut off mid-write
  }
  EXPECT_EQ(MetricsLog::drop_rows_after(dir + "/metrics.jsonl", dir + "/metrics.csv", 3), 3);
  std::vector<double> steps;
  std::istringstream jsonl(read_file(dir + "/metrics.jsonl"));
  for (std::string line; std::getline(jsonl, line);)
    steps.push_back(nlohmann::json::parse(line)["step"].get<double>());
  EXPECT_EQ(steps, (std::vector<double>{1, 2, 3, 3}));
  std::istringstream csv(read_file(dir + "/metrics.csv"));
  std::vector<std::string> rows;
  for (std::string line; std::getline(csv, line);)
    rows.push_back(line.substr(0, line.find(',', 5)));
  ASSERT_EQ(rows.size(), 5u);  // the header and four rows
  EXPECT_EQ(rows[0].substr(0, 9), "kind,step");
  EXPECT_EQ(rows[3], "step,3");
  EXPECT_EQ(rows[4], "eval,3");
  // Nothing to drop: the files stay as they are.
  EXPECT_EQ(MetricsLog::drop_rows_after(dir + "/metrics.jsonl", dir + "/metrics.csv", 3), 0);
  fs::remove_all(dir);
}

TEST(RunFolder, AFailedMetricsWriteNamesTheFileAndTheError) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string full = std::strerror(ENOSPC);
  // A new log writes the CSV header at once.
  std::string msg = test::error_of([] { MetricsLog("/dev/full", "/dev/full", false); });
  EXPECT_CONTAINS(msg, "writing /dev/full failed: " + full);
  // Appending: the first row fails, the JSON line before it was written whole.
  const std::string dir = temp_dir("metrics_full");
  MetricsLog log(dir + "/metrics.jsonl", "/dev/full", true);
  msg = test::error_of([&] { log.write("step", {{"step", 1}}); });
  EXPECT_CONTAINS(msg, "writing /dev/full failed: " + full);
  EXPECT_EQ(read_file(dir + "/metrics.jsonl"), "{\"kind\":\"step\",\"step\":1.0}\n");
  fs::remove_all(dir);
}

TEST(RunFolder, AFailedConfigWriteNamesTheFileAndKeepsTheOldOne) {
  const std::string dir = temp_dir("config_full");
  TrainConfig c = tiny_config(dir);
  RunFolder f(c);
  f.write_text(f.config_file(), "old\n");
  // A file size limit makes write() fail with EFBIG (SIGXFSZ ignored), as a full disk would.
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 16;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string msg = test::error_of([&] { f.write_text(f.config_file(), std::string(100, 'x')); });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_CONTAINS(msg, f.config_file());
  EXPECT_CONTAINS(msg, std::strerror(EFBIG));
  EXPECT_EQ(read_file(f.config_file()), "old\n");
  EXPECT_FALSE(fs::exists(f.config_file() + ".tmp." + std::to_string(::getpid())));
  fs::remove_all(dir);
}

TEST(RunFolder, StaleTemporaryFilesOfDeadWritersAreRemoved) {
  const std::string dir = temp_dir("stale");
  // The pid of a process that has exited (and been reaped).
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  const std::string dead = std::to_string(child), alive = std::to_string(::getppid());
  const std::string stale = dir + "/checkpoints/state.safetensors.tmp." + dead,
                    stale_top = dir + "/config.toml.tmp." + dead,
                    live = dir + "/checkpoints/last.safetensors.tmp." + alive,
                    mine = dir + "/metrics.csv.tmp." + std::to_string(::getpid()),
                    other = dir + "/notes.tmp.backup";
  for (const auto& p : {stale, stale_top, live, mine, other}) write_file(p, "x");
  TrainConfig c = tiny_config(dir);
  RunFolder f(c);
  auto removed = f.remove_stale_temporaries();
  std::sort(removed.begin(), removed.end());
  std::vector<std::string> want = {stale, stale_top};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(removed, want);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_FALSE(fs::exists(stale_top));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(mine));
  EXPECT_TRUE(fs::exists(other));
  // A run's start removes them (here one that then fails on a missing dataset).
  write_file(stale, "x");
  c.data.dir = dir + "/no_such_dataset";
  EXPECT_THROW(train(c, TrainMode::Teacher), Error);
  EXPECT_FALSE(fs::exists(stale));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mokd
