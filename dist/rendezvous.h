// A TCP rendezvous that hands a small blob from rank 0 to every rank of a job, for launches
// without MPI (torchrun: MASTER_ADDR, MASTER_PORT). The NCCL communicator sends its 128-byte
// ncclUniqueId this way; nothing else of a run goes through it.
//
//   rank 0      listens on master_port on every interface (IPv6 and IPv4), accepts one
//               connection per other rank, checks each hello, and once all world - 1 peers are
//               connected sends the blob to each of them
//   rank r > 0  connects to master_addr:master_port, retrying until timeout_s (rank 0 may start
//               later), sends its hello and waits for the blob
//
// A hello carries the protocol's magic, the peer's rank, the world size and the caller's nonce.
// Rank 0 refuses (with the reason, which that peer raises as its error) a peer whose nonce or
// world differs, a rank outside [1, world) or a rank already connected; the refused peer is
// named in rank 0's own error if the job then does not assemble. So a process left over from
// another job on the same port fails with a message instead of joining the wrong job.
//
// Every wait is bounded by timeout_s: instead of hanging, each rank throws naming itself, the
// address and port, and (rank 0) how many of how many peers arrived and which ranks are missing.
// Returning on every rank also means every rank has reached the rendezvous (a barrier).
#pragma once
#include <cstddef>
#include <string>

#include "dist/launch.h"

namespace mokd::dist {

// The largest blob and nonce a rendezvous carries: a longer length prefix on the wire is refused
// as garbage (a stray client) instead of allocating it.
inline constexpr size_t kRendezvousMaxBlob = size_t(1) << 20;
inline constexpr size_t kRendezvousMaxNonce = 4096;

// Returns rank 0's `blob_on_rank0` on every rank of `launch` (the argument is ignored on the other
// ranks). `nonce` identifies the job: every rank of one job must pass the same bytes, and two
// jobs that may meet on one host and port must pass different ones (the trainer passes a hash of
// the configuration and MASTER_PORT). world 1 returns the blob without touching the network.
// Needs 1 <= master_port <= 65535 on every rank and a master_addr (a host name or an address,
// resolved with getaddrinfo) on the ranks above 0. Throws mokd::Error on a timeout, a refusal, a
// port rank 0 cannot listen on, or a malformed message.
std::string rendezvous_broadcast(const Launch& launch, const std::string& nonce,
                                 const std::string& blob_on_rank0, double timeout_s);

}  // namespace mokd::dist
