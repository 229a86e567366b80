// CUDA optimizer updates, as engine/cpu/optim.cpp: Adam/AdamW and SGD one tensor at a time or over
// a list, plus the multi-tensor sum of squares and scale behind gradient clipping. Host glue only:
// checks every entry (all before any launch, so a bad entry leaves the whole list untouched),
// gathers raw pointers and queues the launches of kernels/optim.cu. Nothing here waits for the
// device.
#include <string>
#include <vector>

#include "engine/cuda/check.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v,
                              const AdamHyper& h) {
  const char* k = "adam_update";
  adam_args(DeviceType::CUDA, k, p, g, m, v, h);
  cuda_guarded(k, {&p, &g},
               [&] { kernels::adam_update(mf(p), cf(g), mf(m), mf(v), p.numel(), h, stream()); });
}

void CudaBackend::sgd_update(Tensor& p, const Tensor& g, Tensor& buf, const SgdHyper& h) {
  const char* k = "sgd_update";
  sgd_args(DeviceType::CUDA, k, p, g, buf, h);
  const bool use_momentum = h.momentum != 0.f;
  cuda_guarded(k, {&p, &g}, [&] {
    kernels::sgd_update(mf(p), cf(g), use_momentum ? mf(buf) : nullptr, p.numel(), h, stream());
  });
}

void CudaBackend::adam_update_multi(const std::vector<AdamTensorRef>& list) {
  const char* k = "adam_update_multi";
  std::vector<kernels::AdamMultiEntry> entries;
  entries.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const AdamTensorRef& r = list[i];
    adam_args(DeviceType::CUDA, entry_name(k, i), r.p, r.g, r.m, r.v, r.h, r.p_bf16);
    bf16* p16 = r.p_bf16.defined() ? static_cast<bf16*>(r.p_bf16.raw_data()) : nullptr;
    entries.push_back({mf(r.p), mf(r.g), mf(r.m), mf(r.v), p16, r.p.numel(), r.h});
  }
  cuda_guarded(k, {},
               [&] { kernels::adam_update_multi(entries.data(), entries.size(), stream()); });
}

void CudaBackend::sgd_update_multi(const std::vector<SgdTensorRef>& list) {
  const char* k = "sgd_update_multi";
  std::vector<kernels::SgdMultiEntry> entries;
  entries.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const SgdTensorRef& r = list[i];
    sgd_args(DeviceType::CUDA, entry_name(k, i), r.p, r.g, r.buf, r.h, r.p_bf16);
    const bool use_momentum = r.h.momentum != 0.f;
    bf16* p16 = r.p_bf16.defined() ? static_cast<bf16*>(r.p_bf16.raw_data()) : nullptr;
    entries.push_back(
        {mf(r.p), mf(r.g), use_momentum ? mf(r.buf) : nullptr, p16, r.p.numel(), r.h});
  }
  cuda_guarded(k, {}, [&] { kernels::sgd_update_multi(entries.data(), entries.size(), stream()); });
}

void CudaBackend::sum_squares_multi(const std::vector<const Tensor*>& xs, Tensor& out) {
  const char* k = "sum_squares_multi";
  cuda_expect_f32(out, k, "out");
  MOKD_CHECK(out.numel() == 1, k, ": out must have one element, got ", out.str());
  std::vector<const float*> ptrs;
  std::vector<int64_t> ns;
  ptrs.reserve(xs.size());
  ns.reserve(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    MOKD_CHECK(xs[i] != nullptr, k, ": entry ", i, " is null");
    cuda_expect_f32(*xs[i], entry_name(k, i).c_str(), "x");
    ptrs.push_back(mf(*xs[i]));
    ns.push_back(xs[i]->numel());
  }
  const int64_t np = kernels::sum_squares_multi_partials(ns.data(), ns.size());
  if (np == 0) return;
  cuda_guarded(k, {&out}, [&] {
    // Dropped as soon as the kernels are queued: the stream orders any reuse after them.
    Tensor part = scratch(np);
    kernels::sum_squares_multi(ptrs.data(), ns.data(), ns.size(), mf(out),
                               static_cast<double*>(part.raw_data()), stream());
  });
}

void CudaBackend::scale_multi(const std::vector<Tensor*>& xs, const Tensor& s) {
  const char* k = "scale_multi";
  cuda_expect_f32(s, k, "scale");
  MOKD_CHECK(s.numel() == 1, k, ": scale must have one element, got ", s.str());
  std::vector<float*> ptrs;
  std::vector<int64_t> ns;
  ptrs.reserve(xs.size());
  ns.reserve(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    MOKD_CHECK(xs[i] != nullptr, k, ": entry ", i, " is null");
    cuda_expect_f32(*xs[i], entry_name(k, i).c_str(), "x");
    ptrs.push_back(mf(*xs[i]));
    ns.push_back(xs[i]->numel());
  }
  cuda_guarded(k, {&s}, [&] {
    kernels::scale_multi(ptrs.data(), ns.data(), ns.size(), static_cast<const float*>(s.raw_data()),
                         stream());
  });
}

}  // namespace mokd
