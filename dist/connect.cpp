// Picks and builds the communicator for a launch (dist/connect.h).
#include "dist/connect.h"

#include "dist/backends.h"
#include "engine/error.h"

namespace mokd::dist {

bool built_with_mpi() {
#ifdef MOKD_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool built_with_nccl() {
#ifdef MOKD_WITH_NCCL
  return true;
#else
  return false;
#endif
}

#ifndef MOKD_WITH_MPI
std::unique_ptr<Communicator> make_mpi_communicator(const Launch& launch, double) {
  MOKD_FAIL("dist: this mokd_train was built without MPI and cannot run ", launch.world,
            " processes (launched by ", launch.launcher,
            "): install Open MPI's development files (apt-get install libopenmpi-dev, or "
            "tools/install_deps.sh) and rebuild with -DMOKD_MPI=ON, or run one process");
}
#endif

#ifndef MOKD_WITH_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(const Launch& launch, int,
                                                     std::unique_ptr<Communicator>, double) {
  MOKD_FAIL("dist: this mokd_train was built without NCCL and cannot run ", launch.world,
            " processes on GPUs with dist.backend = nccl: build with the CUDA toolkit's NCCL "
            "(-DMOKD_NCCL=ON), or use dist.backend = mpi");
}
#endif

std::unique_ptr<Communicator> connect(const Launch& launch, const std::string& backend,
                                      Device device, double timeout_s) {
  MOKD_CHECK(backend == "auto" || backend == "local" || backend == "mpi" || backend == "nccl",
             "dist.backend '", backend, "': expected auto, local, mpi or nccl");
  if (backend == "local" || (backend == "auto" && launch.world == 1)) {
    MOKD_CHECK(launch.world == 1, "dist.backend = local runs one process, but the launcher (",
               launch.launcher, ") started ", launch.world);
    return make_local_communicator();
  }
  const bool nccl =
      backend == "nccl" || (backend == "auto" && !device.is_cpu() && built_with_nccl());
  if (!nccl) return make_mpi_communicator(launch, timeout_s);
  MOKD_CHECK(!device.is_cpu(), "dist.backend = nccl needs the model on a GPU (--device=cuda)");
  if (!built_with_nccl())  // says so, before MPI is started for nothing
    return make_nccl_communicator(launch, device.index, nullptr, timeout_s);
  // MPI carries NCCL's id when this process was started by an MPI launcher; torchrun's use the
  // TCP rendezvous.
  std::unique_ptr<Communicator> bootstrap;
  if (built_with_mpi() && launch.launcher != "torchrun" && launch.launcher != "config")
    bootstrap = make_mpi_communicator(launch, timeout_s);
  return make_nccl_communicator(launch, device.index, std::move(bootstrap), timeout_s);
}

int device_for_rank(const Launch& launch, int visible_devices) {
  MOKD_CHECK(visible_devices > 0, "dist: rank ", launch.rank, " sees no GPU");
  return launch.local_rank % visible_devices;
}

}  // namespace mokd::dist
