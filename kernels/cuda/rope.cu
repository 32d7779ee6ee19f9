// RoPE on f32 q/k in place (one CTA per token, full-range sincosf so long positions round like the
// CPU oracle), the scatter of this step's K/V into the bf16 paged cache, and the two fused into the
// attention prologue on the fused Q/K/V rows (with Qwen3's per-head q/k norm).
#include "cuda_util.cuh"
#include "macserve/kernels/cuda/rope.cuh"

namespace macserve::kernels::cuda {
namespace {

__global__ void rope_kernel(RopeCudaParams p) {
  const int64_t t = blockIdx.x;
  const int64_t half = p.head_dim / 2;
  const float pos = static_cast<float>(p.positions[t]);
  const int64_t heads = p.num_q_heads + p.num_kv_heads;
  for (int64_t w = threadIdx.x; w < heads * half; w += blockDim.x) {
    const int64_t h = w / half, i = w % half;
    float* x = h < p.num_q_heads ? p.q + (t * p.num_q_heads + h) * p.head_dim
                                 : p.k + (t * p.num_kv_heads + (h - p.num_q_heads)) * p.head_dim;
    float s, c;
    sincosf(pos * p.inv_freq[i], &s, &c);
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

__global__ void kv_write_kernel(KvWriteCudaParams p) {
  const int64_t t = blockIdx.x;
  const int64_t slot = p.slot_mapping[t];
  if (slot < 0) return;
  const PagedKvLayout& L = p.layout;
  auto* kc = static_cast<__nv_bfloat16*>(p.k_cache);
  auto* vc = static_cast<__nv_bfloat16*>(p.v_cache);
  for (int64_t w = threadIdx.x; w < L.num_kv_heads * L.head_dim; w += blockDim.x) {
    const int64_t h = w / L.head_dim, d = w % L.head_dim;
    const int64_t dst = (slot / L.block_size) * L.num_kv_heads * L.block_size * L.head_dim +
                        h * L.block_size * L.head_dim + (slot % L.block_size) * L.head_dim + d;
    kc[dst] = __float2bfloat16(p.k[t * L.num_kv_heads * L.head_dim + w]);
    vc[dst] = __float2bfloat16(p.v[t * L.num_kv_heads * L.head_dim + w]);
  }
}

constexpr int kPrologueWarps = 4;  // heads per CTA of rope_kv_write_kernel

// Grid (token, group of kPrologueWarps heads), one warp per head of q or of k (with its v), so a
// decode step still spreads over (Hq + Hkv) / 4 CTAs. The head's vector is read from the fused qkv
// row; the norm's sum of squares is a warp reduction; a lane owns rotation pairs (i, i + D/2),
// i = lane, lane + 32, ... Angles use the full-range sincosf like rope_kernel.
__global__ void rope_kv_write_kernel(RopeKvWriteCudaParams p) {
  const int64_t t = blockIdx.x;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t h = static_cast<int64_t>(blockIdx.y) * kPrologueWarps + threadIdx.x / 32;
  const PagedKvLayout& L = p.layout;
  const int64_t Hq = p.num_q_heads, Hkv = L.num_kv_heads, D = L.head_dim, half = D / 2;
  const bool is_q = h < Hq;
  const int64_t slot = p.slot_mapping[t];
  if (h >= Hq + Hkv || (!is_q && slot < 0)) return;  // per warp: the shuffles below stay full
  const float* x = p.qkv + t * (Hq + 2 * Hkv) * D + h * D;  // q head h, or k head h - Hq
  const __nv_bfloat16* w = nullptr;
  float inv = 1.0f;
  if (p.q_norm != nullptr) {
    w = static_cast<const __nv_bfloat16*>(is_q ? p.q_norm : p.k_norm);
    float sum_sq = 0.0f;
    for (int64_t i = lane; i < D; i += 32) sum_sq += x[i] * x[i];
    for (int o = 16; o > 0; o >>= 1) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, o);
    inv = rsqrtf(sum_sq / static_cast<float>(D) + p.eps);
  }
  const float pos = static_cast<float>(p.positions[t]);
  const int64_t q_base = (t * Hq + h) * D;
  const int64_t cache_base = is_q ? 0
                                  : (slot / L.block_size) * Hkv * L.block_size * D +
                                        (h - Hq) * L.block_size * D + (slot % L.block_size) * D;
  auto* kc = static_cast<__nv_bfloat16*>(p.k_cache);
  auto* vc = static_cast<__nv_bfloat16*>(p.v_cache);
  for (int64_t i = lane; i < half; i += 32) {
    float a = x[i], b = x[i + half];
    if (w != nullptr) {
      a = __bfloat162float(w[i]) * (a * inv);
      b = __bfloat162float(w[i + half]) * (b * inv);
    }
    float s, c;
    sincosf(pos * p.inv_freq[i], &s, &c);
    if (is_q) {
      if (p.q_pre != nullptr) {
        detail::store(p.q_pre, p.q_pre_bf16, q_base + i, a);
        detail::store(p.q_pre, p.q_pre_bf16, q_base + i + half, b);
      }
      p.q[q_base + i] = a * c - b * s;
      p.q[q_base + i + half] = b * c + a * s;
    } else {
      const float* v = x + Hkv * D;  // v head h - Hq
      kc[cache_base + i] = __float2bfloat16(a * c - b * s);
      kc[cache_base + i + half] = __float2bfloat16(b * c + a * s);
      vc[cache_base + i] = __float2bfloat16(v[i]);
      vc[cache_base + i + half] = __float2bfloat16(v[i + half]);
    }
  }
}

}  // namespace

int rope_kv_write(const RopeKvWriteCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t heads = p.num_q_heads + p.layout.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(p.num_tokens),
                  static_cast<unsigned>((heads + kPrologueWarps - 1) / kPrologueWarps));
  rope_kv_write_kernel<<<grid, kPrologueWarps * 32, 0, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

int rope(const RopeCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  rope_kernel<<<static_cast<unsigned>(p.num_tokens), 256, 0, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

int kv_write(const KvWriteCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  kv_write_kernel<<<static_cast<unsigned>(p.num_tokens), 256, 0, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
