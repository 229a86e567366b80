// The communicator implementations behind dist/connect.h, each in its own file and built only
// with its library (CMake options MOKD_MPI, MOKD_NCCL). Internal to dist/.
#pragma once
#include <memory>

#include "dist/communicator.h"
#include "dist/launch.h"

namespace mokd::dist {

// mpi_communicator.cpp: initialises MPI (once per process) and checks that MPI's world agrees with
// `launch`. CPU tensors.
std::unique_ptr<Communicator> make_mpi_communicator(const Launch& launch, double timeout_s);

// nccl_communicator.cpp: one NCCL communicator over the ranks of `launch`, on the GPU
// `cuda_device` (the caller has made it current). The ncclUniqueId travels through `bootstrap`
// (broadcast from rank 0) when it is given (MPI; the NCCL communicator keeps it and may use it
// for its host-side collectives), otherwise through the TCP rendezvous of dist/rendezvous.h on
// launch.master_addr:master_port. GPU tensors, on a stream of its own that is ordered against the
// compute stream by events.
std::unique_ptr<Communicator> make_nccl_communicator(const Launch& launch, int cuda_device,
                                                     std::unique_ptr<Communicator> bootstrap,
                                                     double timeout_s);

}  // namespace mokd::dist
