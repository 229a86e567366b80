// A run folder and the checkpoints in it: where mokd_train writes, what a checkpoint holds, and
// how --resume reads it back.
//
// Files under run.out_dir (RunFolder: the one place a run folder is opened and its files named
// and written):
//   config.toml                      the resolved configuration
//   metrics.jsonl, metrics.csv       one row per step and per evaluation (MetricsLog, appended)
//   checkpoints/last.safetensors     the trained model's weights (timm names), every checkpoint
//   checkpoints/best.safetensors     the weights with the best test top-1 so far
//   checkpoints/state.safetensors    everything --resume needs (below)
//   run.lock                         the running run's pid and host (RunLock)
// Whole files are written to a temporary name in the same folder and renamed, so a run that
// stops for any reason leaves the previous checkpoint intact.
//
// state.safetensors composes the state() of each part of a Training (mokd/setup.h) under a
// prefix (io::State: tensors "<prefix>.<name>", counters "<prefix>_<name>" in the JSON metadata
// entry "mokd_state"):
//   model.<name>     the trained model's weights (state_dict, file layout)
//   optim.<name>     the optimizer's state (Optimizer::state)
//   (no prefix)      the training step's (DistillStep: projector.*, famo.*, famo_step,
//                    distill_steps; TeacherStep: nothing) and the loader position's (epoch,
//                    batch_in_epoch)
//   dropout_counter  the trained model's dropout stream
//   ema.<name>       the EMA's averages (when optim.ema_decay > 0)
// and the run's own entries: step, best_top1, best_top5, and its identity, config_hash and
// teacher_sha256, which a resume must match.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "mokd/config.h"
#include "mokd/metrics.h"
#include "mokd/setup.h"

namespace mokd {

// Refuses an output path that exists and is not a regular file, naming the path and what it is:
// a symbolic link, a directory, a device node (/dev/null, /dev/full), a FIFO or a socket. Every
// file mokd_train writes (the run folder's files, export --out) is checked first. Refusing, rather
// than following a symlink or renaming over it, because replacing what a link points to (a
// teacher's weights, another run's checkpoint) or a device node without a word is what destroys
// data; a user who means another place names it.
void check_output_file(const std::string& path);

// Writes a whole file as every mokd output is written: check_output_file on the path and on its
// temporary `<path>.tmp.<pid>`, the bytes written there and fsync'ed, then renamed over the path.
// A failed write, fsync, close or rename throws naming the file and the OS error; the file at
// `path` is then as it was.
void write_file_atomically(const std::string& path, const std::string& bytes);

// out_dir/run.lock, held with flock(LOCK_EX | LOCK_NB) from before a run's first write until it
// ends, and holding the holder's "pid host". The OS releases the lock when the process exits in
// any way, so a dead run leaves no stale lock. flock locks belong to an open file description:
// two RunLocks on one folder conflict within one process too.
class RunLock {
 public:
  // Creates the folder when needed and takes the lock; throws naming the holder's pid and host
  // when another run holds it.
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// A run folder belongs to one run. A fresh run (no --run.resume) refuses a folder that already
// holds one (config.toml, metrics.jsonl or checkpoints/state.safetensors there) unless
// run.overwrite, and every run refuses the input files it reads (model.teacher_weights and
// model.student_init when distilling, model.teacher_init when training a teacher) inside its own
// folder, which it would overwrite.
class RunFolder {
 public:
  // Names the folder of cfg.run.out_dir; writes nothing.
  explicit RunFolder(const TrainConfig& cfg);

  const std::string& dir() const { return dir_; }
  // Before a resume from a checkpoint at `step`: drops the metrics rows of later steps (they are
  // logged again); returns how many (MetricsLog::drop_rows_after).
  int64_t drop_metrics_after(int64_t step) const;
  std::string config_file() const { return dir_ + "/config.toml"; }
  std::string checkpoints() const { return dir_ + "/checkpoints"; }
  std::string state_file() const { return checkpoints() + "/state.safetensors"; }
  std::string last_weights() const { return checkpoints() + "/last.safetensors"; }
  std::string best_weights() const { return checkpoints() + "/best.safetensors"; }
  bool has_state() const;
  // The first file of a run found in the folder ("" when none): config.toml, metrics.jsonl or
  // checkpoints/state.safetensors.
  std::string run_file() const;
  // Throws, naming the folder and the ways on, when a fresh run (cfg.run.resume false) finds a
  // run there and cfg.run.overwrite is false. Throws when an input file the run reads (see above)
  // is inside the folder (canonical paths compared). Writes nothing.
  void check_fresh_run(const TrainConfig& cfg, TrainMode mode) const;
  // run.overwrite: removes the files of the run in the folder (config.toml, metrics, checkpoints).
  void remove_run_files() const;
  // --run.resume, before anything is written: compares cfg with the run's config.toml key by
  // key (the keys that may change on --resume aside) and throws naming each differing key with
  // both values. Returns the configuration stored there (cfg when there is no config.toml).
  TrainConfig check_resume(const TrainConfig& cfg) const;
  // Takes the folder's RunLock (creating the folder) for the lifetime of this RunFolder.
  void lock();
  // Removes the temporary files (`<name>.tmp.<pid>`, in the folder and checkpoints/) left by a
  // writer that died mid-write: those whose pid is no running process (kill(pid, 0) fails with
  // ESRCH). Call it holding the lock. Returns the paths removed.
  std::vector<std::string> remove_stale_temporaries() const;
  // Creates the folder and its checkpoints/ folder.
  void create() const;

  // Every file of the folder is written by one of these: whole files atomically (temporary name,
  // then rename), the metrics logs appended (append: continue the existing logs, as on resume).
  void write_safetensors(const std::string& path, const io::TensorMap& tensors,
                         const io::Metadata& meta) const;
  void write_text(const std::string& path, const std::string& text) const;
  std::unique_ptr<MetricsLog> open_metrics(bool append) const;

 private:
  std::string dir_;
  std::unique_ptr<RunLock> lock_;
};

// What a checkpoint must match to be resumed: the configuration (config_hash, which leaves out
// what may change on --resume) and the teacher file's contents. A checkpoint written when
// run.out_dir was part of the hash matches hash_with_out_dir: config_hash_with_out_dir of the
// configuration with the run.out_dir the run was started with (`stored`, its config.toml).
struct RunIdentity {
  std::string config_hash;
  std::string hash_with_out_dir;
  std::string teacher_sha256;   // "" when training a teacher
  std::string teacher_weights;  // the file's path, for messages
};
RunIdentity run_identity(const TrainConfig& cfg, const Training& t);
RunIdentity run_identity(const TrainConfig& cfg, const Training& t, const TrainConfig& stored);

// The loop's own progress, saved with the parts' state.
struct Progress {
  int64_t step = 0;  // updates done
  double best_top1 = -1, best_top5 = 0;
};

// Writes the weights (last, and best when `best`), then the state. The tensors are read from the
// live objects: call it between steps.
void save_checkpoint(const RunFolder& folder, Training& t, const RunIdentity& id, const Progress& p,
                     bool best);

// Restores a Training built from the same configuration from folder.state_file() and returns the
// progress saved with it. Throws, before changing anything, when the file is not a mokd state or
// was written by a run with another identity (a changed configuration or teacher file).
Progress load_checkpoint(const RunFolder& folder, Training& t, const RunIdentity& id);

}  // namespace mokd
