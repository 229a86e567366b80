// The MPI communicator (Open MPI; any MPI-3 library): CPU tensors, and GPU tensors staged through
// host memory. Every collective is the non-blocking form, polled until it completes or timeout_s
// passes, so a rank that died or hangs ends the others' wait with an error instead of a hang.
//
// sum() is deterministic and in rank order: MPI_Allgather of the slices, then every rank adds them
// as ((r0 + r1) + r2) + ... (add_in_order). An MPI_Allreduce may combine in any order (the
// standard only recommends reproducibility for the same process layout), which would break the
// bitwise equality of N ranks with one process accumulating N micro-batches.
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

#include "dist/backends.h"
#include "engine/error.h"

namespace mokd::dist {

namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  MOKD_FAIL("dist (mpi): ", what, " failed: ", std::string(msg, len));
}

// Initialises MPI once per process and finalises it at exit.
struct MpiProcess {
  MpiProcess() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided),
                "MPI_Init_thread");
    }
    // Errors come back as codes (turned into mokd::Error) instead of aborting inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiProcess() {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  }
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(const Launch& launch, double timeout_s) : timeout_s_(timeout_s) {
    static MpiProcess process;
    int r = 0, w = 0;
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &r), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &w), "MPI_Comm_size");
    MOKD_CHECK(r == launch.rank && w == launch.world, "dist: the launcher (", launch.launcher,
               ") says rank ", launch.rank, " of ", launch.world, ", but MPI says rank ", r, " of ",
               w,
               "; launch with mpirun (or srun with an MPI built for Slurm), or drop the dist.* "
               "overrides");
    rank_ = r;
    world_ = w;
  }

  const char* name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  bool ordered_sum() const override { return true; }

  void sum(Tensor& t) override {
    MOKD_CHECK(t.dtype() == DType::F32 && t.is_contiguous(),
               "dist (mpi): sum() needs a contiguous f32 tensor, got ", t.str());
    if (world_ == 1 || t.numel() == 0) return;
    const bool host = t.device().is_cpu();
    Tensor h = host ? t : t.to(Device::cpu());
    float* data = h.data<float>();
    const int64_t n = h.numel();
    // Pieces small enough for MPI's int counts once multiplied by the world size.
    const int64_t piece = std::max<int64_t>(1, (INT_MAX / 2) / world_);
    for (int64_t off = 0; off < n; off += piece) {
      const int64_t m = std::min(piece, n - off);
      gathered_.resize(static_cast<size_t>(m * world_));
      MPI_Request req;
      check_mpi(MPI_Iallgather(data + off, static_cast<int>(m), MPI_FLOAT, gathered_.data(),
                               static_cast<int>(m), MPI_FLOAT, MPI_COMM_WORLD, &req),
                "MPI_Iallgather");
      wait(req, "sum of gradients (MPI_Iallgather)");
      std::vector<const float*> parts(world_);
      for (int r = 0; r < world_; ++r) parts[r] = gathered_.data() + r * m;
      add_in_order(parts, m, data + off);
    }
    if (!host) t.copy_(h);
  }

  void gather(const Tensor& in, Tensor& out) override { gather_async(in, out)->wait(); }

  // MPI_Iallgather left in flight; the host copies of GPU tensors are staged in and out.
  std::unique_ptr<Request> gather_async(const Tensor& in, Tensor& out) override {
    MOKD_CHECK(in.dtype() == DType::F32 && in.is_contiguous() && out.dtype() == DType::F32 &&
                   out.is_contiguous() && out.numel() == in.numel() * world_,
               "dist (mpi): gather() needs contiguous f32 tensors of n and world x n values, got ",
               in.str(), " and ", out.str());
    const int64_t n = in.numel();
    MOKD_CHECK(n * world_ < INT_MAX, "dist (mpi): gather() of ", n, " values from ", world_,
               " ranks exceeds MPI's int counts; use smaller dist.bucket_mb");
    auto r = std::make_unique<Pending>(*this);
    r->in = in.device().is_cpu() ? in : in.to(Device::cpu());
    r->out = out;
    r->host_out = out.device().is_cpu() ? out : Tensor::empty(out.shape(), DType::F32);
    check_mpi(MPI_Iallgather(r->in.data<float>(), static_cast<int>(n), MPI_FLOAT,
                             r->host_out.data<float>(), static_cast<int>(n), MPI_FLOAT,
                             MPI_COMM_WORLD, &r->req),
              "MPI_Iallgather");
    return r;
  }

  int64_t sum_i64(int64_t v) override { return reduce_i64(v, MPI_SUM); }
  int64_t max_i64(int64_t v) override { return reduce_i64(v, MPI_MAX); }

  std::vector<std::string> all_gather(const std::string& bytes) override {
    long long len = static_cast<long long>(bytes.size());
    std::vector<long long> lens(world_);
    MPI_Request req;
    check_mpi(
        MPI_Iallgather(&len, 1, MPI_LONG_LONG, lens.data(), 1, MPI_LONG_LONG, MPI_COMM_WORLD, &req),
        "MPI_Iallgather");
    wait(req, "all_gather (lengths)");
    std::vector<int> counts(world_), displs(world_);
    long long total = 0;
    for (int r = 0; r < world_; ++r) {
      MOKD_CHECK(total + lens[r] < INT_MAX, "dist (mpi): all_gather of more than 2 GiB");
      counts[r] = static_cast<int>(lens[r]);
      displs[r] = static_cast<int>(total);
      total += lens[r];
    }
    std::string all(static_cast<size_t>(total), '\0');
    check_mpi(MPI_Iallgatherv(bytes.data(), static_cast<int>(len), MPI_CHAR, all.data(),
                              counts.data(), displs.data(), MPI_CHAR, MPI_COMM_WORLD, &req),
              "MPI_Iallgatherv");
    wait(req, "all_gather");
    std::vector<std::string> out(world_);
    for (int r = 0; r < world_; ++r) out[r] = all.substr(displs[r], counts[r]);
    return out;
  }

  void broadcast(std::string& bytes, int root) override {
    long long len = static_cast<long long>(bytes.size());
    MPI_Request req;
    check_mpi(MPI_Ibcast(&len, 1, MPI_LONG_LONG, root, MPI_COMM_WORLD, &req), "MPI_Ibcast");
    wait(req, "broadcast (length)");
    MOKD_CHECK(len >= 0 && len < INT_MAX, "dist (mpi): broadcast of ", len, " bytes");
    bytes.resize(static_cast<size_t>(len));
    check_mpi(MPI_Ibcast(bytes.data(), static_cast<int>(len), MPI_CHAR, root, MPI_COMM_WORLD, &req),
              "MPI_Ibcast");
    wait(req, "broadcast");
  }

  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

  void barrier() override {
    MPI_Request req;
    check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
    wait(req, "barrier");
  }

 private:
  int64_t reduce_i64(int64_t v, MPI_Op op) {
    long long in = v, out = 0;
    MPI_Request req;
    check_mpi(MPI_Iallreduce(&in, &out, 1, MPI_LONG_LONG, op, MPI_COMM_WORLD, &req),
              "MPI_Iallreduce");
    wait(req, "integer all-reduce");
    return out;
  }

  // Polls until req completes; past timeout_s throws (the caller's exit aborts the job).
  void wait(MPI_Request& req, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    int done = 0;
    for (int spins = 0;; ++spins) {
      check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (timeout_s_ > 0 && waited > timeout_s_)
        MOKD_FAIL("dist: rank ", rank_, " waited ", static_cast<int>(waited), " s for the ", what,
                  " of ", world_,
                  " ranks: another rank has died or hangs (dist.timeout_s = ", timeout_s_, ")");
    }
  }

  struct Pending final : Request {
    explicit Pending(MpiCommunicator& c) : comm(c) {}
    void wait() override {
      if (done) return;
      comm.wait(req, "gather of gradients (MPI_Iallgather)");
      done = true;
      if (host_out.impl() != out.impl()) out.copy_(host_out);
    }
    MpiCommunicator& comm;
    MPI_Request req = MPI_REQUEST_NULL;
    Tensor in, out, host_out;
    bool done = false;
  };

  int rank_ = 0, world_ = 1;
  double timeout_s_;
  std::vector<float> gathered_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const Launch& launch, double timeout_s) {
  return std::make_unique<MpiCommunicator>(launch, timeout_s);
}

}  // namespace mokd::dist
