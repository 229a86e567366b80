// The NCCL communicator (dist/backends.h): GPU tensors, one NCCL communicator per process on the
// GPU the caller made current.
//
// sum() runs on a stream of its own, ordered by events and never by a host wait: the NCCL stream
// waits for the compute stream's work so far, the all-reduce runs in place, and the compute
// stream waits for the all-reduce, so whatever the trainer queues next (and every reuse of the
// gradient's memory by the caching allocator, which is ordered on the compute stream) comes after
// it. NCCL's ring and tree sums are reproducible run to run but not in rank order:
// ordered_sum() is false.
//
// The host-side collectives (sum_i64, max_i64, all_gather, broadcast, barrier) go through the
// bootstrap communicator when there is one (MPI), otherwise through NCCL on small device buffers
// staged via pinned host memory; their results are read back, so they wait for the NCCL stream.
//
// The communicator is non-blocking (ncclConfig_t::blocking = 0): initialisation and every enqueue
// are polled, and every host-side wait is bounded by timeout_s; past it the communicator is
// aborted (ncclCommAbort), which also ends the kernels it has queued, and the call throws naming
// the collective. A peer that stops calling collectives in the middle of training is noticed at
// the next host-side collective or host read of the compute stream's results, not within sum().
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "dist/backends.h"
#include "dist/rendezvous.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/error.h"

namespace mokd::dist {

namespace {

using Clock = std::chrono::steady_clock;

void check_cuda(cudaError_t rc, const char* call) {
  if (rc == cudaSuccess) return;
  (void)cudaGetLastError();  // a non-sticky error must not fail the next call
  MOKD_FAIL("dist (nccl): ", call, " failed: ", cudaGetErrorString(rc));
}

// NCCL's message for rc and, when it has one, its detail of the last error.
std::string nccl_message(ncclResult_t rc, ncclComm_t comm) {
  std::string s = ncclGetErrorString(rc);
  const char* last = ncclGetLastError(comm);
  if (last && *last) s += std::string(": ") + last;
  return s;
}

// What every rank of one torchrun job shares (and two jobs on one port do not, short of the
// trainer's own configuration hash): the world, the port and torchrun's run id.
std::string rendezvous_nonce(const Launch& l) {
  const char* run = std::getenv("TORCHELASTIC_RUN_ID");
  return detail::concat("mokd nccl id; world ", l.world, "; port ", l.master_port, "; run ",
                        run ? run : "");
}

// Initial size of the staging buffers; all_gather grows them for longer strings.
constexpr size_t kStagingBytes = 64 << 10;

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const Launch& launch, int cuda_device, std::unique_ptr<Communicator> bootstrap,
                   double timeout_s)
      : rank_(launch.rank),
        world_(launch.world),
        device_(cuda_device),
        timeout_s_(timeout_s),
        bootstrap_(std::move(bootstrap)) {}

  // Separate from the constructor so that a failure half-way releases what was made (the
  // destructor runs on the owning unique_ptr).
  void init(const Launch& launch) {
    int current = -1;
    check_cuda(cudaGetDevice(&current), "cudaGetDevice");
    MOKD_CHECK(current == device_, "dist (nccl): rank ", rank_, " should run on cuda:", device_,
               ", but the current device is cuda:", current, " (call cudaSetDevice first)");
    if (bootstrap_)
      MOKD_CHECK(bootstrap_->rank() == rank_ && bootstrap_->world() == world_,
                 "dist (nccl): the launcher says rank ", rank_, " of ", world_, ", but ",
                 bootstrap_->name(), " says rank ", bootstrap_->rank(), " of ",
                 bootstrap_->world());
    // The compute stream this rank orders its sums against: the CUDA backend computes on one
    // device per process, which must be this one.
    Backend& b = backend_for(Device::cuda(device_));
    compute_ = dynamic_cast<CudaBackend*>(&b);
    MOKD_CHECK(compute_ && b.device() == Device::cuda(device_), "dist (nccl): rank ", rank_,
               " runs on cuda:", device_, ", but the CUDA backend computes on ", b.device().str(),
               ": start each rank with CUDA_VISIBLE_DEVICES naming its own GPU");

    ncclUniqueId id;
    std::string blob;
    if (rank_ == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      blob.assign(id.internal, sizeof id.internal);
    }
    if (bootstrap_)
      bootstrap_->broadcast(blob, 0);
    else
      blob = rendezvous_broadcast(launch, rendezvous_nonce(launch), blob, timeout_s_);
    MOKD_CHECK(blob.size() == sizeof id.internal, "dist (nccl): rank ", rank_,
               " received an id of ", blob.size(), " bytes from rank 0, expected ",
               sizeof id.internal);
    std::memcpy(id.internal, blob.data(), sizeof id.internal);

    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
               "cudaStreamCreateWithFlags");
    check_cuda(cudaEventCreateWithFlags(&computed_, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming), "cudaEventCreate");
    reserve(kStagingBytes);

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every call returns at once; wait() polls it with the timeout
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, world_, id, rank_, &config);
    if (rc != ncclSuccess && rc != ncclInProgress) {
      const std::string msg = nccl_message(rc, comm_);
      if (comm_) ncclCommAbort(comm_);
      comm_ = nullptr;
      MOKD_FAIL("dist (nccl): ncclCommInitRankConfig failed on rank ", rank_, " of ", world_, ": ",
                msg);
    }
    wait("ncclCommInitRankConfig (joining the other ranks)");
  }

  ~NcclCommunicator() override {
    if (comm_) {
      // A clean end flushes the queued work (bounded: a vanished peer must not hold the exit);
      // while an exception unwinds, the other ranks may never get here: abort at once.
      bool clean = std::uncaught_exceptions() == 0;
      if (clean) {
        ncclResult_t rc = ncclCommFinalize(comm_);
        const auto start = Clock::now();
        while (rc == ncclSuccess || rc == ncclInProgress) {
          ncclResult_t state = ncclInProgress;
          rc = ncclCommGetAsyncError(comm_, &state);
          if (rc != ncclSuccess || state == ncclSuccess) break;
          if (state != ncclInProgress || (timeout_s_ > 0 && waited(start) > timeout_s_)) {
            rc = ncclInternalError;
            break;
          }
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        clean = rc == ncclSuccess;
      }
      if (clean)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    }
    if (device_buf_) cudaFreeAsync(device_buf_, stream_);
    if (host_buf_) cudaFreeHost(host_buf_);
    if (computed_) cudaEventDestroy(computed_);
    if (reduced_) cudaEventDestroy(reduced_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  bool ordered_sum() const override { return false; }

  void sum(Tensor& t) override {
    MOKD_CHECK(t.dtype() == DType::F32 && t.is_contiguous() && t.device() == Device::cuda(device_),
               "dist (nccl): sum() needs a contiguous f32 tensor on cuda:", device_, ", got ",
               t.str());
    if (t.numel() == 0) return;  // world 1 too: a one-rank job runs the same path
    usable("sum");
    cudaStream_t compute = compute_->stream();
    check_cuda(cudaEventRecord(computed_, compute), "cudaEventRecord (compute stream)");
    check_cuda(cudaStreamWaitEvent(stream_, computed_, 0), "cudaStreamWaitEvent (NCCL stream)");
    void* p = t.raw_data();
    check(ncclAllReduce(p, p, static_cast<size_t>(t.numel()), ncclFloat32, ncclSum, comm_, stream_),
          "ncclAllReduce (sum of gradients)");
    // Recorded only once wait() has seen the enqueue complete: before, the all-reduce may not be
    // on the stream yet.
    check_cuda(cudaEventRecord(reduced_, stream_), "cudaEventRecord (NCCL stream)");
    check_cuda(cudaStreamWaitEvent(compute, reduced_, 0), "cudaStreamWaitEvent (compute stream)");
  }

  // The all-reduce queued on the NCCL stream after the compute stream's work so far; the compute
  // stream is made to wait for it only in wait(), so backward goes on meanwhile.
  std::unique_ptr<Request> sum_async(Tensor& t) override {
    MOKD_CHECK(t.dtype() == DType::F32 && t.is_contiguous() && t.device() == Device::cuda(device_),
               "dist (nccl): sum_async() needs a contiguous f32 tensor on cuda:", device_, ", got ",
               t.str());
    auto r = std::make_unique<Queued>(compute_->stream());
    if (t.numel() == 0) return r;
    usable("sum_async");
    check_cuda(cudaEventRecord(computed_, compute_->stream()), "cudaEventRecord (compute stream)");
    check_cuda(cudaStreamWaitEvent(stream_, computed_, 0), "cudaStreamWaitEvent (NCCL stream)");
    void* p = t.raw_data();
    check(ncclAllReduce(p, p, static_cast<size_t>(t.numel()), ncclFloat32, ncclSum, comm_, stream_),
          "ncclAllReduce (sum of a gradient bucket)");
    check_cuda(cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventRecord(r->done, stream_), "cudaEventRecord (NCCL stream)");
    return r;
  }

  void gather(const Tensor& in, Tensor& out) override {
    MOKD_CHECK(in.dtype() == DType::F32 && in.is_contiguous() && out.dtype() == DType::F32 &&
                   out.is_contiguous() && out.numel() == in.numel() * world_ &&
                   in.device() == Device::cuda(device_) && out.device() == Device::cuda(device_),
               "dist (nccl): gather() needs contiguous f32 tensors of n and world x n values on "
               "cuda:",
               device_, ", got ", in.str(), " and ", out.str());
    if (in.numel() == 0) return;
    usable("gather");
    cudaStream_t compute = compute_->stream();
    check_cuda(cudaEventRecord(computed_, compute), "cudaEventRecord (compute stream)");
    check_cuda(cudaStreamWaitEvent(stream_, computed_, 0), "cudaStreamWaitEvent (NCCL stream)");
    check(ncclAllGather(in.raw_data(), out.raw_data(), static_cast<size_t>(in.numel()), ncclFloat32,
                        comm_, stream_),
          "ncclAllGather (gather of gradients)");
    check_cuda(cudaEventRecord(reduced_, stream_), "cudaEventRecord (NCCL stream)");
    check_cuda(cudaStreamWaitEvent(compute, reduced_, 0), "cudaStreamWaitEvent (compute stream)");
  }

  int64_t sum_i64(int64_t v) override {
    return bootstrap_ ? bootstrap_->sum_i64(v) : reduce_i64(v, ncclSum, "sum_i64");
  }
  int64_t max_i64(int64_t v) override {
    return bootstrap_ ? bootstrap_->max_i64(v) : reduce_i64(v, ncclMax, "max_i64");
  }

  std::vector<std::string> all_gather(const std::string& bytes) override {
    if (bootstrap_) return bootstrap_->all_gather(bytes);
    usable("all_gather");
    // The lengths first, then every rank's bytes padded to the longest.
    const size_t w = static_cast<size_t>(world_);
    reserve(8 * (w + 1));
    const int64_t len = static_cast<int64_t>(bytes.size());
    std::memcpy(host_buf_, &len, 8);
    upload(8);
    check(ncclAllGather(device_buf_, dev(8), 1, ncclInt64, comm_, stream_),
          "ncclAllGather (all_gather lengths)");
    download(8, 8 * w);
    finish("all_gather (lengths)");
    std::vector<int64_t> lens(w);
    std::memcpy(lens.data(), host(8), 8 * w);
    const int64_t longest = *std::max_element(lens.begin(), lens.end());
    MOKD_CHECK(longest >= 0 && longest <= (int64_t(1) << 30) / world_,
               "dist (nccl): all_gather of ", longest, " bytes per rank (at most 1 GiB in all)");
    std::vector<std::string> out(w);
    if (longest == 0) return out;

    const size_t m = static_cast<size_t>(longest);
    reserve(m * (w + 1));
    std::memcpy(host_buf_, bytes.data(), bytes.size());
    upload(bytes.size());
    check(ncclAllGather(device_buf_, dev(m), m, ncclUint8, comm_, stream_),
          "ncclAllGather (all_gather)");
    download(m, m * w);
    finish("all_gather");
    for (size_t r = 0; r < w; ++r)
      out[r].assign(static_cast<const char*>(host(m + r * m)), static_cast<size_t>(lens[r]));
    return out;
  }

  void broadcast(std::string& bytes, int root) override {
    if (bootstrap_) return bootstrap_->broadcast(bytes, root);
    MOKD_CHECK(root >= 0 && root < world_, "dist (nccl): broadcast from rank ", root,
               ", outside a world of ", world_);
    usable("broadcast");
    int64_t len = static_cast<int64_t>(bytes.size());
    std::memcpy(host_buf_, &len, 8);
    upload(8);
    check(ncclBroadcast(device_buf_, device_buf_, 1, ncclInt64, root, comm_, stream_),
          "ncclBroadcast (broadcast length)");
    download(0, 8);
    finish("broadcast (length)");
    std::memcpy(&len, host_buf_, 8);
    MOKD_CHECK(len >= 0 && len <= (int64_t(1) << 30), "dist (nccl): broadcast of ", len,
               " bytes from rank ", root, " (at most 1 GiB)");
    if (len == 0) {
      bytes.clear();
      return;
    }
    const size_t n = static_cast<size_t>(len);
    reserve(n);
    if (rank_ == root) {
      std::memcpy(host_buf_, bytes.data(), n);
      upload(n);
    }
    check(ncclBroadcast(device_buf_, device_buf_, n, ncclUint8, root, comm_, stream_),
          "ncclBroadcast (broadcast)");
    download(0, n);
    finish("broadcast");
    bytes.assign(static_cast<const char*>(host_buf_), n);
  }

  void barrier() override {
    if (bootstrap_) return bootstrap_->barrier();
    usable("barrier");
    check(ncclAllReduce(device_buf_, device_buf_, 1, ncclInt32, ncclSum, comm_, stream_),
          "ncclAllReduce (barrier)");
    finish("barrier");
  }

  [[noreturn]] void abort(int code) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    if (bootstrap_) bootstrap_->abort(code);
    std::exit(code);
  }

 private:
  static double waited(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

  void usable(const char* what) const {
    MOKD_CHECK(comm_, "dist (nccl): ", what, " on rank ", rank_,
               " after the communicator was aborted by an earlier error");
  }

  // Aborts the communicator (its queued kernels end) and throws `msg`.
  [[noreturn]] void fail(const std::string& msg) {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    MOKD_FAIL(msg);
  }

  // The result of an NCCL call: an error throws naming the call (and aborts the communicator
  // unless the arguments alone were wrong); otherwise waits until the call has been enqueued.
  void check(ncclResult_t rc, const char* call) {
    if (rc == ncclSuccess || rc == ncclInProgress) {
      if (comm_) wait(call);
      return;
    }
    const std::string msg = detail::concat("dist (nccl): ", call, " failed on rank ", rank_, " of ",
                                           world_, ": ", nccl_message(rc, comm_));
    if (rc == ncclInvalidArgument || rc == ncclInvalidUsage || !comm_) MOKD_FAIL(msg);
    fail(msg);
  }

  // The state of the communicator: nonzero past an asynchronous error (a peer failed, a network
  // error), ncclInProgress while a non-blocking call is still being carried out.
  ncclResult_t state(const char* what) {
    ncclResult_t s = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm_, &s);
    if (rc != ncclSuccess) s = rc;
    if (s != ncclSuccess && s != ncclInProgress)
      fail(detail::concat("dist (nccl): ", what, " failed on rank ", rank_, " of ", world_, ": ",
                          nccl_message(s, comm_)));
    return s;
  }

  [[noreturn]] void timed_out(const char* what, double seconds) {
    fail(detail::concat(
        "dist (nccl): rank ", rank_, " waited ", static_cast<int>(seconds), " s for ", what, " of ",
        world_, " ranks: another rank has died or hangs (dist.timeout_s = ", timeout_s_, ")"));
  }

  // Until the last non-blocking call has been carried out (for a collective: enqueued).
  void wait(const char* what) {
    const auto start = Clock::now();
    for (int spins = 0; state(what) == ncclInProgress; ++spins) {
      if (timeout_s_ > 0 && waited(start) > timeout_s_) timed_out(what, waited(start));
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // Until everything queued on the NCCL stream has run: the host-side results are in host_buf_.
  void finish(const char* what) {
    const auto start = Clock::now();
    for (int spins = 0;; ++spins) {
      const cudaError_t rc = cudaStreamQuery(stream_);
      if (rc == cudaSuccess) return;
      if (rc != cudaErrorNotReady) check_cuda(rc, "cudaStreamQuery (NCCL stream)");
      if (comm_) state(what);
      if (timeout_s_ > 0 && waited(start) > timeout_s_) timed_out(what, waited(start));
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  int64_t reduce_i64(int64_t v, ncclRedOp_t op, const char* what) {
    usable(what);
    std::memcpy(host_buf_, &v, 8);
    upload(8);
    check(ncclAllReduce(device_buf_, device_buf_, 1, ncclInt64, op, comm_, stream_),
          op == ncclSum ? "ncclAllReduce (sum_i64)" : "ncclAllReduce (max_i64)");
    download(0, 8);
    finish(what);
    int64_t out;
    std::memcpy(&out, host_buf_, 8);
    return out;
  }

  // Staging: pinned host memory, so the copies stay asynchronous (a copy to pageable memory would
  // wait for the stream, past any timeout), and a device buffer of the same size.
  void reserve(size_t bytes) {
    if (bytes <= staging_bytes_) return;
    const size_t n = std::max(bytes, staging_bytes_ * 2);
    if (comm_) finish("growing the staging buffers");  // nothing may still use the old ones
    if (device_buf_) check_cuda(cudaFreeAsync(device_buf_, stream_), "cudaFreeAsync");
    if (host_buf_) check_cuda(cudaFreeHost(host_buf_), "cudaFreeHost");
    device_buf_ = host_buf_ = nullptr;
    staging_bytes_ = 0;
    check_cuda(cudaMallocHost(&host_buf_, n), "cudaMallocHost");
    check_cuda(cudaMallocAsync(&device_buf_, n, stream_), "cudaMallocAsync");
    staging_bytes_ = n;
  }
  void* dev(size_t offset) const { return static_cast<char*>(device_buf_) + offset; }
  void* host(size_t offset) const { return static_cast<char*>(host_buf_) + offset; }
  void upload(size_t n) {
    if (n > 0)
      check_cuda(cudaMemcpyAsync(device_buf_, host_buf_, n, cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync (to the device)");
  }
  void download(size_t offset, size_t n) {
    check_cuda(cudaMemcpyAsync(host(offset), dev(offset), n, cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync (to the host)");
  }

  int rank_, world_, device_;
  double timeout_s_;
  std::unique_ptr<Communicator> bootstrap_;
  CudaBackend* compute_ = nullptr;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t computed_ = nullptr, reduced_ = nullptr;
  // A queued all-reduce: the compute stream waits for its event in wait().
  struct Queued final : Request {
    explicit Queued(cudaStream_t c) : compute(c) {}
    ~Queued() override {
      if (done) cudaEventDestroy(done);
    }
    void wait() override {
      if (!done || waited) return;
      check_cuda(cudaStreamWaitEvent(compute, done, 0), "cudaStreamWaitEvent (compute stream)");
      waited = true;
    }
    cudaStream_t compute;
    cudaEvent_t done = nullptr;
    bool waited = false;
  };
  void* device_buf_ = nullptr;
  void* host_buf_ = nullptr;
  size_t staging_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const Launch& launch, int cuda_device,
                                                     std::unique_ptr<Communicator> bootstrap,
                                                     double timeout_s) {
  auto c = std::make_unique<NcclCommunicator>(launch, cuda_device, std::move(bootstrap), timeout_s);
  c->init(launch);
  return c;
}

}  // namespace mokd::dist
