// Embedding, RMSNorm, SwiGLU, residual add: float32, parallel over rows with OpenMP.
#include <cmath>
#include <cstring>

#include "macserve/kernels/activation.h"
#include "macserve/kernels/embedding.h"
#include "macserve/kernels/rms_norm.h"

namespace macserve::kernels::cpu {

void embedding(const EmbeddingParams& p) {
#pragma omp parallel for if (p.num_tokens > 4)
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    std::memcpy(p.out + t * p.hidden, p.table + static_cast<int64_t>(p.ids[t]) * p.hidden,
                sizeof(float) * p.hidden);
  }
}

void rms_norm_row(const float* x, const float* weight, float* out, int64_t dim, float eps) {
  double sum_sq = 0.0;  // double: the oracle should not depend on summation order
  for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(sum_sq / dim) + eps);
  for (int64_t i = 0; i < dim; ++i) out[i] = weight[i] * (x[i] * inv);
}

void rms_norm(const RmsNormParams& p) {
#pragma omp parallel for if (p.num_rows > 4)
  for (int64_t r = 0; r < p.num_rows; ++r) {
    const float* x = p.x + r * p.dim;
    float* out = p.out + r * p.dim;
    const float* src = x;
    if (p.residual != nullptr) {
      float* res = p.residual + r * p.dim;
      for (int64_t i = 0; i < p.dim; ++i) res[i] += x[i];
      src = res;
    }
    rms_norm_row(src, p.weight, out, p.dim, p.eps);
  }
}

void swiglu(const SwigluParams& p) {
#pragma omp parallel for if (p.num_tokens > 4)
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const float* gate = p.gate_up + t * 2 * p.inter;
    const float* up = gate + p.inter;
    float* out = p.out + t * p.inter;
    for (int64_t i = 0; i < p.inter; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

void add(const AddParams& p) {
  for (int64_t i = 0; i < p.n; ++i) p.out[i] = p.a[i] + p.b[i];
}

}  // namespace macserve::kernels::cpu
