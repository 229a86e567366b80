// CUDA elementwise kernels, reductions and one-hot, as engine/cpu/elementwise.cpp: the shared
// operand contracts (engine/kernel_args.h), then launches of kernels/elementwise.cu and reduce.cu.
// Unary, binary and reduce_sum take f32 or bf16 activations (binary: a bf16 a with a bf16 or f32
// b; reduce_sum: an f32 or x-typed out); argmax and sum_squares take f32.
#include "engine/cuda/cuda_backend.h"

#include <type_traits>

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, float alpha) {
  unary_args(DeviceType::CUDA, op, x, out);
  cuda_guarded(unary_name(op), {&x, &out}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::unary(op, cp<T>(x), mp<T>(out), x.numel(), alpha, stream());
    });
  });
}

void CudaBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& gout, Tensor& gin,
                                 float alpha) {
  unary_backward_args(DeviceType::CUDA, op, x, gout, gin);
  cuda_guarded(unary_name(op), {&x, &gout, &gin}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::unary_backward(op, cp<T>(x), cp<T>(gout), mp<T>(gin), x.numel(), alpha, stream());
    });
  });
}

void CudaBackend::bias_act(const Tensor& x, const Tensor& bias, const Tensor* residual, bool relu,
                           Tensor& y) {
  if (!cuda_fused_epilogues()) return Backend::bias_act(x, bias, residual, relu, y);
  bias_act_args(DeviceType::CUDA, x, bias, residual, y);
  cuda_guarded("bias_act", {&x, &bias, residual, &y}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::bias_act(cp<T>(x), cf(bias), residual ? cp<T>(*residual) : nullptr, relu, mp<T>(y),
                        x.numel(), bias.numel(), stream());
    });
  });
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  binary_args(DeviceType::CUDA, a, b, out);
  cuda_guarded("binary", {&a, &b, &out}, [&] {
    bool contiguous = a.is_contiguous() && b.is_contiguous();
    kernels::StridedDesc d;
    if (!contiguous) d = cuda_strided_desc("binary", out.shape(), a.strides(), b.strides());
    const int64_t n = out.numel();
    if (a.dtype() == DType::F32)
      kernels::binary(op, cf(a), cf(b), mf(out), d, n, contiguous, stream());
    else if (b.dtype() == DType::BF16)
      kernels::binary(op, cp<bf16>(a), cp<bf16>(b), mp<bf16>(out), d, n, contiguous, stream());
    else  // a bf16 activation with an f32 parameter or mask
      kernels::binary(op, cp<bf16>(a), cf(b), mp<bf16>(out), d, n, contiguous, stream());
  });
}

namespace {

// reduce_sum for x of TX and out of TO (both checked): picks the kernel for the pattern.
template <class TX, class TO>
void reduce_sum_typed(CudaBackend& be, const Tensor& x, Tensor& out, float scale) {
  const int64_t n = x.numel(), on = out.numel();
  const TX* px = cp<TX>(x);
  TO* po = mp<TO>(out);
  if (on == 1) {
    Tensor part = be.scratch(kernels::kReducePartials);
    kernels::reduce_all(px, n, po, scale, false, static_cast<double*>(part.raw_data()),
                        be.stream());
    return;
  }
  if (on == n) {  // nothing reduced (only size-1 dims)
    if constexpr (std::is_same_v<TX, TO>)
      kernels::unary(UnaryOp::Scale, px, po, n, scale, be.stream());
    else
      kernels::scale_convert(px, po, n, scale, be.stream());
    return;
  }
  // Classify: non-trivial dims (size > 1) are kept or reduced. All reduced after all kept:
  // row sums; all reduced before all kept: column sums; anything else: the generic kernel.
  const Shape& xs = x.shape();
  const Shape& os = out.shape();
  bool seen_kept = false, seen_red = false, red_after_kept = false, kept_after_red = false;
  for (int64_t k = 0; k < x.dim(); ++k) {
    if (xs[k] == 1) continue;
    bool kept = os[k] == xs[k];
    if (kept) {
      if (seen_red) kept_after_red = true;
      seen_kept = true;
    } else {
      if (seen_kept) red_after_kept = true;
      seen_red = true;
    }
  }
  if (!kept_after_red) {
    kernels::reduce_rows(px, on, n / on, po, scale, be.stream());
  } else if (!red_after_kept) {
    Tensor part = be.scratch(kernels::col_partials_size(n / on, on));
    kernels::reduce_cols(px, n / on, on, po, scale, static_cast<double*>(part.raw_data()),
                         be.stream());
  } else {
    kernels::StridedDesc d = cuda_strided_desc("reduce_sum", xs, x.strides(), x.strides());
    kernels::reduce_generic(px, po, on, d, os.data(), scale, be.stream());
  }
}

}  // namespace

void CudaBackend::reduce_sum(const Tensor& x, Tensor& out, float scale) {
  reduce_sum_args(DeviceType::CUDA, x, out);
  cuda_guarded("reduce_sum", {&x, &out}, [&] {
    const int64_t n = x.numel(), on = out.numel();
    if (on == 0) return;
    if (n == 0) {  // sums over nothing
      kernels::fill(out.raw_data(), out.dtype(), 0.0, on, stream());
      return;
    }
    if (x.dtype() == DType::F32)
      reduce_sum_typed<float, float>(*this, x, out, scale);
    else if (out.dtype() == DType::BF16)
      reduce_sum_typed<bf16, bf16>(*this, x, out, scale);
    else
      reduce_sum_typed<bf16, float>(*this, x, out, scale);
  });
}

void CudaBackend::argmax_lastdim(const Tensor& x, Tensor& out) {
  const RowDims d = argmax_args(DeviceType::CUDA, x, out);
  cuda_guarded("argmax", {&x, &out}, [&] {
    kernels::argmax_lastdim(cf(x), d.rows, d.cols, static_cast<int64_t*>(out.raw_data()), stream());
  });
}

void CudaBackend::sum_squares_accumulate(const Tensor& x, Tensor& out) {
  sum_squares_args(DeviceType::CUDA, x, out);
  if (x.numel() == 0) return;
  cuda_guarded("sum_squares", {&x, &out}, [&] {
    Tensor part = scratch(kernels::kReducePartials);
    kernels::reduce_all(cf(x), x.numel(), mf(out), 1.f, true, static_cast<double*>(part.raw_data()),
                        stream());
  });
}

void CudaBackend::one_hot(const Tensor& labels, Tensor& out, float on, float off) {
  const LossDims d = one_hot_args(DeviceType::CUDA, labels, out);
  const int64_t B = d.B, C = d.C;
  if (B == 0) return;
  Tensor lc = labels.contiguous();
  if (C == 0) {  // no class is valid: the first label is outside [0, 0), as the CPU reports
    int64_t label = 0;
    copy_to_host(&label, lc.raw_data(), sizeof(label));
    MOKD_FAIL("one_hot: label ", label, " at index 0 is outside [0, 0)");
  }
  int64_t* slot = deferred_label_check("one_hot", lc, B, C, "");
  int64_t bad = B;
  cuda_guarded("one_hot", {&labels, &out}, [&] {
    Tensor flag;
    int64_t* flag_ptr = slot;
    if (!slot) {
      flag = Tensor::empty({1}, DType::I64, device());
      kernels::fill(flag.raw_data(), DType::I64, static_cast<double>(B), 1, stream());
      flag_ptr = static_cast<int64_t*>(flag.raw_data());
    }
    kernels::one_hot(static_cast<const int64_t*>(lc.raw_data()), B, C, on, off, mf(out), flag_ptr,
                     stream());
    // One small synchronous read per call: a bad label must throw here, as on the CPU (unless
    // the check is deferred to check_deferred()).
    if (flag.defined()) copy_to_host(&bad, flag.raw_data(), sizeof(bad));
  });
  if (bad < B) {
    int64_t label = 0;
    copy_to_host(&label, static_cast<const int64_t*>(lc.raw_data()) + bad, sizeof(label));
    MOKD_FAIL("one_hot: label ", label, " at index ", bad, " is outside [0, ", C, ")");
  }
}

}  // namespace mokd
