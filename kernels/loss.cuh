// Host-side declarations of the fused loss launchers in kernels/loss.cu (plain C++: included by
// engine/cuda/loss.cpp). Each takes raw device pointers and sizes of row-major [B, C] f32
// logits, queues its kernel on `stream` and checks the launch (mokd::CudaError naming it). Shapes,
// dtypes and contiguity are checked by the caller.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mokd::kernels {

// Cross-entropy of each row against q = (1 - smoothing) t + smoothing / C, t = one_hot(labels)
// (labels: i64 [B]) or soft [B, C] (exactly one non-null): loss[b] = lse_b sum(q) - sum(q x),
// lse[b] = logsumexp of row b. bad: one i64 the caller set to B; a label outside [0, C) lowers it
// to the smallest such row (that row's loss is NaN).
void cross_entropy(const float* x, const int64_t* labels, const float* soft, float smoothing,
                   int64_t B, int64_t C, float* loss, float* lse, int64_t* bad,
                   cudaStream_t stream);
// g_b = grad_scale * gloss[gloss_broadcast ? 0 : b]; glogits = g_b (sum(q) softmax(x) - q),
// gsoft = g_b (1 - smoothing) (lse_b - x). glogits or gsoft may be null.
void cross_entropy_backward(const float* x, const int64_t* labels, const float* soft,
                            float smoothing, const float* lse, const float* gloss,
                            bool gloss_broadcast, float grad_scale, int64_t B, int64_t C,
                            float* glogits, float* gsoft, cudaStream_t stream);
// KL(p_t || p_s) of each row with p = softmax(x / T); lse_s, lse_t: logsumexp(x / T) per row.
void kl_div(const float* student, const float* teacher, float temperature, int64_t B, int64_t C,
            float* loss, float* lse_s, float* lse_t, cudaStream_t stream);
// gstudent = g_b / T (p_s - p_t), g_b as in cross_entropy_backward.
void kl_div_backward(const float* student, const float* teacher, float temperature,
                     const float* lse_s, const float* lse_t, const float* gloss,
                     bool gloss_broadcast, float grad_scale, int64_t B, int64_t C, float* gstudent,
                     cudaStream_t stream);

}  // namespace mokd::kernels
