// RoPE, Hugging Face convention (rotate_half), alone and in the fused attention prologue on the
// Q/K/V GEMM's rows. inv_freq follows transformers' rope init functions step by step in float32 so
// that positions x frequencies round the same way.
#include "macserve/kernels/rope.h"

#include <cmath>
#include <cstring>

#include "macserve/kernels/rms_norm.h"

namespace macserve::kernels::cpu {

void rope_inv_freq(const RopeFreqParams& p, float* inv_freq) {
  const int64_t half = p.head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.head_dim);
    inv_freq[i] = 1.0f / std::pow(p.theta, exponent);
  }
  switch (p.scaling) {
    case RopeScalingType::kNone:
      break;
    case RopeScalingType::kLinear:
      for (int64_t i = 0; i < half; ++i) inv_freq[i] /= p.factor;
      break;
    case RopeScalingType::kLlama3: {
      const float old_len = static_cast<float>(p.original_max_position);
      const float low_wavelen = old_len / p.low_freq_factor;
      const float high_wavelen = old_len / p.high_freq_factor;
      for (int64_t i = 0; i < half; ++i) {
        const float f = inv_freq[i];
        const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
        float scaled = wavelen > low_wavelen ? f / p.factor : f;
        const bool is_medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (is_medium) {
          const float smooth =
              (old_len / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
          scaled = (1.0f - smooth) * scaled / p.factor + smooth * scaled;
        }
        inv_freq[i] = scaled;
      }
      break;
    }
  }
}

namespace {

constexpr int64_t kMaxHalf = 512;  // head_dim <= 1024

// cos and sin of pos * inv_freq[i], i < half (float32, as transformers computes them).
void angles(int32_t position, const float* inv_freq, int64_t half, float* cos_v, float* sin_v) {
  const float pos = static_cast<float>(position);
  for (int64_t i = 0; i < half; ++i) {
    const float angle = pos * inv_freq[i];
    cos_v[i] = std::cos(angle);
    sin_v[i] = std::sin(angle);
  }
}

void rotate(float* x, int64_t half, const float* cos_v, const float* sin_v) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * cos_v[i] - b * sin_v[i];
    x[i + half] = b * cos_v[i] + a * sin_v[i];
  }
}

// x (one head's vector) into out, through the per-head norm when weight is set.
void norm_or_copy(const float* x, const float* weight, float eps, int64_t dim, float* out) {
  if (weight != nullptr)
    rms_norm_row(x, weight, out, dim, eps);
  else
    std::memcpy(out, x, sizeof(float) * dim);
}

}  // namespace

void rope(const RopeParams& p) {
  const int64_t half = p.head_dim / 2;
#pragma omp parallel for if (p.num_tokens > 4)
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    float cos_v[kMaxHalf];
    float sin_v[kMaxHalf];
    angles(p.positions[t], p.inv_freq, half, cos_v, sin_v);
    for (int64_t h = 0; h < p.num_q_heads; ++h)
      rotate(p.q + (t * p.num_q_heads + h) * p.head_dim, half, cos_v, sin_v);
    for (int64_t h = 0; h < p.num_kv_heads; ++h)
      rotate(p.k + (t * p.num_kv_heads + h) * p.head_dim, half, cos_v, sin_v);
  }
}

// Per token: q heads normed (or copied) into q, captured into q_pre, rotated in place; k heads
// normed straight into their cache rows and rotated there; v heads copied. Slots are distinct
// within a step, so tokens run in parallel.
void rope_kv_write(const RopeKvWriteParams& p) {
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim, half = D / 2, Hq = p.num_q_heads, Hkv = L.num_kv_heads;
  const int64_t width = (Hq + 2 * Hkv) * D;
#pragma omp parallel for if (p.num_tokens > 4)
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    float cos_v[kMaxHalf];
    float sin_v[kMaxHalf];
    angles(p.positions[t], p.inv_freq, half, cos_v, sin_v);
    const float* row = p.qkv + t * width;
    for (int64_t h = 0; h < Hq; ++h) {
      float* q = p.q + (t * Hq + h) * D;
      norm_or_copy(row + h * D, p.q_norm, p.eps, D, q);
      if (p.q_pre != nullptr) std::memcpy(p.q_pre + (t * Hq + h) * D, q, sizeof(float) * D);
      rotate(q, half, cos_v, sin_v);
    }
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    for (int64_t h = 0; h < Hkv; ++h) {
      float* k = p.k_cache + L.offset(slot, h);
      norm_or_copy(row + (Hq + h) * D, p.k_norm, p.eps, D, k);
      rotate(k, half, cos_v, sin_v);
      std::memcpy(p.v_cache + L.offset(slot, h), row + (Hq + Hkv + h) * D, sizeof(float) * D);
    }
  }
}

}  // namespace macserve::kernels::cpu
