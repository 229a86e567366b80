// Joins the data-parallel job this process was launched in (dist/launch.h) and returns its
// communicator (dist/communicator.h):
//
//   backend "auto"   world 1: local (no library is touched); more processes: NCCL when the model
//                    lives on a GPU and the binary has NCCL, MPI otherwise
//   "local", "mpi", "nccl"   that one, or an error saying why it cannot be
//
// A binary built without the library a launch needs stops at once, naming the library and the
// build option, instead of training `world` independent copies.
#pragma once
#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/launch.h"
#include "engine/dtype.h"

namespace mokd::dist {

bool built_with_mpi();
bool built_with_nccl();

// `device` is where the model lives (for NCCL, the GPU already chosen for this rank).
std::unique_ptr<Communicator> connect(const Launch& launch, const std::string& backend,
                                      Device device, double timeout_s);

// The GPU of a rank: local_rank modulo the visible devices.
int device_for_rank(const Launch& launch, int visible_devices);

}  // namespace mokd::dist
