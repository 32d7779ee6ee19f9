// RoPE, Hugging Face convention (rotate_half). inv_freq follows transformers' rope init functions
// step by step in float32 so that positions x frequencies round the same way.
#include "macserve/kernels/rope.h"

#include <cmath>

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

void rotate(float* x, int64_t half, const float* cos_v, const float* sin_v) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * cos_v[i] - b * sin_v[i];
    x[i + half] = b * cos_v[i] + a * sin_v[i];
  }
}

}  // namespace

void rope(const RopeParams& p) {
  const int64_t half = p.head_dim / 2;
#pragma omp parallel for if (p.num_tokens > 4)
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    float cos_v[512];
    float sin_v[512];
    const float pos = static_cast<float>(p.positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * p.inv_freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < p.num_q_heads; ++h)
      rotate(p.q + (t * p.num_q_heads + h) * p.head_dim, half, cos_v, sin_v);
    for (int64_t h = 0; h < p.num_kv_heads; ++h)
      rotate(p.k + (t * p.num_kv_heads + h) * p.head_dim, half, cos_v, sin_v);
  }
}

}  // namespace macserve::kernels::cpu
