// CUDA backend, as engine/cpu/cpu_backend.cpp: registration, stream and library handles, memory
// (copies, fills, host transfers: from pinned loader blocks directly, else through the pinned
// staging ring) and random draws. The kernel
// families have one file each, named as in engine/cpu (file map: cuda_backend.h).
#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "engine/cuda/check.h"
#include "engine/cuda/pinned_host.h"
#include "engine/host_sync.h"
#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

namespace {

CudaBackend* g_backend = nullptr;
CudaCachingAllocator* g_allocator = nullptr;

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

std::atomic<bool> g_tf32{env_flag("MOKD_TF32")};
std::atomic<bool> g_fused_epilogues{env_flag("MOKD_FUSED_EPILOGUES")};

// Registers the backend only when the runtime sees a device: on a machine without one
// device_available(Device::cuda()) stays false and nothing else touches CUDA. Both objects are
// leaked on purpose: tensors in static storage may outlive any destruction order.
struct Registrar {
  Registrar() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
      (void)cudaGetLastError();
      return;
    }
    g_allocator = new CudaCachingAllocator(0);
    g_backend = new CudaBackend(0);
    register_allocator(DeviceType::CUDA, g_allocator);
    register_backend(DeviceType::CUDA, g_backend);
    cuda_register_pinned_host(*g_backend);
    register_cuda_devices(
        n,
        [](int device) {
          g_backend->select_device(device);
          g_allocator->set_device(device);
        },
        [](int device) -> std::string {
          char bus[64] = {0};
          if (cudaDeviceGetPCIBusId(bus, sizeof bus, device) != cudaSuccess) {
            (void)cudaGetLastError();
            return "cuda:" + std::to_string(device);
          }
          return bus;
        });
  }
};
Registrar g_registrar;

}  // namespace

kernels::StridedDesc cuda_strided_desc(const char* k, const Shape& shape, const Shape& sa,
                                       const Shape& sb) {
  MOKD_CHECK(shape.size() <= static_cast<size_t>(kernels::kMaxDims), k, ": rank ", shape.size(),
             " of ", shape_str(shape), " exceeds the CUDA backend's limit of ", kernels::kMaxDims);
  kernels::StridedDesc d;
  d.rank = static_cast<int>(shape.size());
  for (int i = 0; i < d.rank; ++i) {
    d.shape[i] = shape[i];
    d.sa[i] = sa[i];
    d.sb[i] = sb[i];
  }
  return d;
}

CudaBackend* cuda_backend() { return g_backend; }
CudaCachingAllocator* cuda_allocator() { return g_allocator; }
void cuda_set_tf32(bool on) { g_tf32 = on; }
void cuda_set_fused_epilogues(bool on) { g_fused_epilogues = on; }
bool cuda_fused_epilogues() { return g_fused_epilogues; }
bool cuda_tf32() { return g_tf32; }

cudaStream_t cuda_compute_stream() { return g_backend ? g_backend->stream() : nullptr; }

void cuda_expect_on_gpu(const Tensor& t, const char* kernel, const char* arg) {
  expect_on(t, DeviceType::CUDA, kernel, arg);
}

void cuda_expect_f32(const Tensor& t, const char* kernel, const char* arg) {
  expect_f32(t, DeviceType::CUDA, kernel, arg);
}

void cuda_rethrow_with_context(const char* op, std::initializer_list<const Tensor*> tensors,
                               const std::exception& e) {
  std::string shapes;
  for (const Tensor* t : tensors) {
    if (!t) continue;
    if (!shapes.empty()) shapes += ", ";
    shapes += t->defined() ? t->str() : "undefined";
  }
  throw Error(detail::concat(op, " on cuda failed (", shapes, "): ", e.what()));
}

// ---- stream, handles, scratch ----

// The library handles are created on first use, each on its own: a cuBLASLt or cuDNN that fails
// to load then fails only the ops that need it, not every copy and kernel.
void CudaBackend::select_device(int device) {
  MOKD_CHECK(device == device_ || !started_, "cuda: cannot move to cuda:", device,
             " after work has started on cuda:", device_);
  device_ = device;
  MOKD_CUDA_CHECK(cudaSetDevice(device_));
}

void CudaBackend::init() {
  std::call_once(once_, [this] {
    started_ = true;
    MOKD_CUDA_CHECK(cudaSetDevice(device_));
    MOKD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  });
}

cudaStream_t CudaBackend::stream() {
  init();
  return stream_;
}
cublasLtHandle_t CudaBackend::lt_handle() {
  init();
  std::call_once(lt_once_, [this] { MOKD_CUBLAS_CHECK(cublasLtCreate(&lt_)); });
  return lt_;
}
cudnnHandle_t CudaBackend::cudnn_handle() {
  init();
  std::call_once(dnn_once_, [this] {
    cudnnHandle_t h = nullptr;
    MOKD_CUDNN_CHECK(cudnnCreate(&h));
    MOKD_CUDNN_CHECK(cudnnSetStream(h, stream_));
    dnn_ = h;
  });
  return dnn_;
}

void CudaBackend::synchronize() {
  note_host_sync("synchronize");
  MOKD_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void* CudaBackend::lt_workspace(size_t& bytes) {
  constexpr size_t kWs = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper
  std::lock_guard<std::mutex> lock(ws_mu_);
  if (!lt_ws_.defined())
    lt_ws_ = Tensor::empty({static_cast<int64_t>(kWs / 8)}, DType::F64, device());
  bytes = kWs;
  return lt_ws_.raw_data();
}

Tensor CudaBackend::scratch(int64_t n_doubles) {
  return Tensor::empty({n_doubles < 1 ? 1 : n_doubles}, DType::F64, device());
}

// ---- deferred checks ----

void CudaBackend::set_deferred_checks(bool on) {
  std::lock_guard<std::mutex> lock(checks_mu_);
  defer_checks_ = on;
  if (!on) checks_.clear();  // turning them off drops what was not checked (a run that ended)
}

int64_t* CudaBackend::deferred_label_check(const char* kernel, const Tensor& labels, int64_t B,
                                           int64_t C, std::string context) {
  {
    std::lock_guard<std::mutex> lock(checks_mu_);
    if (!defer_checks_) return nullptr;
    if (static_cast<int64_t>(checks_.size()) < kCheckSlots) {
      if (!check_slots_.defined())
        check_slots_ = Tensor::empty({kCheckSlots}, DType::I64, device());
      int64_t* slot = static_cast<int64_t*>(check_slots_.raw_data()) + checks_.size();
      kernels::fill(slot, DType::I64, static_cast<double>(B), 1, stream());
      checks_.push_back({kernel, labels, B, C, std::move(context)});
      return slot;
    }
  }
  check_deferred();  // the table is full: read it (one host read per kCheckSlots checks)
  return deferred_label_check(kernel, labels, B, C, std::move(context));
}

void CudaBackend::check_deferred() {
  std::vector<LabelCheck> checks;
  {
    std::lock_guard<std::mutex> lock(checks_mu_);
    checks.swap(checks_);
  }
  if (checks.empty()) return;
  std::vector<int64_t> bad(checks.size());
  copy_to_host(bad.data(), check_slots_.raw_data(), bad.size() * sizeof(int64_t));
  for (size_t i = 0; i < checks.size(); ++i) {
    const LabelCheck& c = checks[i];
    if (bad[i] >= c.B) continue;
    int64_t label = 0;
    copy_to_host(&label, static_cast<const int64_t*>(c.labels.raw_data()) + bad[i], sizeof(label));
    MOKD_FAIL(c.kernel, ": label ", label, " at index ", bad[i], " is outside [0, ", c.C, ")",
              c.context);
  }
}

// ---- memory ----

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  MOKD_CHECK(src.device().is_cuda() && dst.device().is_cuda(), "cuda copy: ", src.str(), " -> ",
             dst.str());
  MOKD_CHECK(src.shape() == dst.shape(), "cuda copy: shapes differ: ", src.str(), " -> ",
             dst.str());
  if (src.numel() == 0) return;
  cuda_guarded("copy", {&src, &dst}, [&] {
    if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
      if (src.raw_data() != dst.raw_data()) {
        count_launch();
        MOKD_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(),
                                        cudaMemcpyDeviceToDevice, stream()));
      }
      return;
    }
    kernels::StridedDesc d = cuda_strided_desc("copy", src.shape(), src.strides(), dst.strides());
    kernels::copy_strided(src.raw_data(), src.dtype(), dst.raw_data(), dst.dtype(), d, src.numel(),
                          stream());
  });
}

void CudaBackend::fill(Tensor& dst, double value) {
  MOKD_CHECK(dst.device().is_cuda() && dst.is_contiguous(),
             "cuda fill: needs a contiguous cuda tensor, got ", dst.str());
  cuda_guarded("fill", {&dst},
               [&] { kernels::fill(dst.raw_data(), dst.dtype(), value, dst.numel(), stream()); });
}

void CudaBackend::copy_to_host(void* host_dst, const void* dev_src, size_t nbytes) {
  if (nbytes == 0) return;
  cuda_guarded("copy_to_host", {}, [&] {
    MOKD_CUDA_CHECK(cudaMemcpyAsync(host_dst, dev_src, nbytes, cudaMemcpyDeviceToHost, stream()));
    // The host reads the bytes next: wait for them (and surface any earlier asynchronous error).
    note_host_sync("copy_to_host");
    MOKD_CUDA_CHECK(cudaStreamSynchronize(stream()));
  });
}

void CudaBackend::copy_from_host(void* dev_dst, const void* host_src, size_t nbytes) {
  if (nbytes == 0) return;
  // From a pinned host block (a loader batch, engine/pinned_host.h): one DMA straight from the
  // caller's bytes; the block is not reused before the event recorded after it has fired.
  PinnedHostAllocator* pinned = pinned_host_allocator();
  if (pinned && pinned->is_pinned(host_src, nbytes)) {
    cuda_guarded("copy_from_host", {}, [&] {
      MOKD_CUDA_CHECK(cudaMemcpyAsync(dev_dst, host_src, nbytes, cudaMemcpyHostToDevice, stream()));
      pinned->add_fence(host_src, cuda_record_fence(stream()));
    });
    return;
  }
  cuda_guarded("copy_from_host", {}, [&] {
    std::lock_guard<std::mutex> lock(staging_mu_);
    const char* src = static_cast<const char*>(host_src);
    char* dst = static_cast<char*>(dev_dst);
    for (size_t off = 0; off < nbytes;) {
      const size_t n = std::min(kStagingMaxBytes, nbytes - off);
      StagingSlot& s = staging_[staging_next_];
      staging_next_ = (staging_next_ + 1) % kStagingSlots;
      if (!s.done)
        MOKD_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
      else if (cudaEventQuery(s.done) != cudaSuccess) {  // the slot's last DMA is still going
        (void)cudaGetLastError();  // "not ready" must not reach the next launch check
        note_host_sync("copy_from_host (staging slot busy)");
        MOKD_CUDA_CHECK(cudaEventSynchronize(s.done));
      }
      if (s.bytes < n) {
        if (s.buf) MOKD_CUDA_CHECK(cudaFreeHost(s.buf));
        s.buf = nullptr;
        s.bytes = 0;
        if (cudaHostAlloc(&s.buf, n, cudaHostAllocDefault) != cudaSuccess) {
          // No pinned memory to be had (limits, containers): this piece goes the pageable way,
          // synchronously, as uploads did before the ring.
          (void)cudaGetLastError();
          s.buf = nullptr;
          MOKD_CUDA_CHECK(
              cudaMemcpyAsync(dst + off, src + off, n, cudaMemcpyHostToDevice, stream()));
          note_host_sync("copy_from_host (pageable)");
          MOKD_CUDA_CHECK(cudaStreamSynchronize(stream()));
          off += n;
          continue;
        }
        s.bytes = n;
      }
      // The caller's buffer may be freed as soon as we return: it is copied out now.
      std::memcpy(s.buf, src + off, n);
      MOKD_CUDA_CHECK(cudaMemcpyAsync(dst + off, s.buf, n, cudaMemcpyHostToDevice, stream()));
      MOKD_CUDA_CHECK(cudaEventRecord(s.done, stream()));
      off += n;
    }
  });
}

// ---- random ----

void CudaBackend::fill_uniform(Tensor& dst, float lo, float hi, RngKey key) {
  // f32 or bf16 (the value drawn in f32, rounded once).
  expect_activation(dst, DeviceType::CUDA, "fill_uniform", "dst");
  cuda_guarded("fill_uniform", {&dst}, [&] {
    with_activation_type(dst.dtype(), [&](auto t) {
      kernels::fill_uniform(mp<decltype(t)>(dst), dst.numel(), lo, hi, key, stream());
    });
  });
}

void CudaBackend::fill_normal(Tensor& dst, float mean, float std, RngKey key) {
  // f32 or bf16 (the value drawn in f32, rounded once).
  expect_activation(dst, DeviceType::CUDA, "fill_normal", "dst");
  cuda_guarded("fill_normal", {&dst}, [&] {
    with_activation_type(dst.dtype(), [&](auto t) {
      kernels::fill_normal(mp<decltype(t)>(dst), dst.numel(), mean, std, key, stream());
    });
  });
}

void CudaBackend::bernoulli_scaled(Tensor& dst, float keep_prob, RngKey key) {
  // f32 or bf16 (the value drawn in f32, rounded once).
  expect_activation(dst, DeviceType::CUDA, "bernoulli_scaled", "dst");
  cuda_guarded("bernoulli_scaled", {&dst}, [&] {
    with_activation_type(dst.dtype(), [&](auto t) {
      kernels::bernoulli_scaled(mp<decltype(t)>(dst), dst.numel(), keep_prob, key, stream());
    });
  });
}

}  // namespace mokd
