#include "mokd/job.h"

#include <unistd.h>

#include "dist/connect.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "mokd/setup.h"

namespace mokd {

namespace {

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

}  // namespace

Job join_job(TrainConfig& cfg, const dist::Environment& env) {
  dist::LaunchOverrides o;
  o.rank = cfg.dist.rank;
  o.world = cfg.dist.world_size;
  o.local_rank = cfg.dist.local_rank;
  o.master_addr = cfg.dist.master_addr;
  o.master_port = cfg.dist.master_port;
  Job job;
  job.launch = dist::resolve_launch(env, o);
  const dist::Launch& l = job.launch;
  if (l.world == 1 && cfg.dist.backend != "mpi" && cfg.dist.backend != "nccl") {
    job.comm = dist::make_local_communicator();
    return job;
  }
  Device dev = Device::cpu();
  const std::string& d = cfg.run.device;
  const bool wants_gpu = d == "cuda" || (d == "auto" && device_available(Device::cuda()));
  if (wants_gpu) {
    const int n = cuda_device_count();
    MOKD_CHECK(n > 0, "dist: ", dist::describe(l), " sees no GPU but run.device = ", d);
    dev = Device::cuda(dist::device_for_rank(l, n));
    cfg.run.device = dev.str();
  } else if (d != "auto" && d != "cpu") {
    dev = resolve_device(d);  // an explicit cuda:N for this rank
  }
  if (!dev.is_cpu()) use_cuda_device(dev.index);  // before any CUDA work of this process
  job.comm = dist::connect(l, cfg.dist.backend, dev, cfg.dist.timeout_s);
  // Two ranks on one GPU by the automatic choice (local ranks that do not match the GPUs) would
  // share its memory, and NCCL before 2.30 refuses them: an error. An explicit run.device=cuda:N
  // on an MPI job is the user's choice.
  const bool nccl = std::string(job.comm->name()) == "nccl";
  if (!dev.is_cpu() && (wants_gpu || nccl)) {
    // The physical GPU (PCI bus id): under srun --gpus-per-task=1 every rank sees its own GPU as
    // cuda:0.
    const std::vector<std::string> where =
        job.comm->all_gather(host_name() + " GPU " + cuda_device_identity(dev.index));
    for (int a = 0; a < l.world; ++a)
      for (int b = a + 1; b < l.world; ++b)
        MOKD_CHECK(where[a] != where[b], "dist: ranks ", a, " and ", b, " both run on ", where[a],
                   "; give every rank its own GPU (one process per GPU, local ranks 0..N-1)",
                   nccl ? " (NCCL before 2.30 refuses two ranks on one GPU)"
                        : ", or name one with run.device=cuda:N to share it on purpose");
  }
  return job;
}

}  // namespace mokd
