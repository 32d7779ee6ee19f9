// RoPE on f32 q/k in place (one CTA per token, full-range sincosf so long positions round like the
// CPU oracle), and the scatter of this step's K/V into the bf16 paged cache.
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

// One CTA per token; a thread owns one rotation pair (i, i + D/2) of one head at a time, so every
// element is read once and written once. Angles use the full-range sincosf like rope_kernel.
__global__ void rope_kv_write_kernel(RopeKvWriteCudaParams p) {
  const int64_t t = blockIdx.x;
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim, half = D / 2;
  const float pos = static_cast<float>(p.positions[t]);
  const int64_t slot = p.slot_mapping[t];
  const int64_t heads = p.num_q_heads + L.num_kv_heads;
  auto* kc = static_cast<__nv_bfloat16*>(p.k_cache);
  auto* vc = static_cast<__nv_bfloat16*>(p.v_cache);
  const int64_t cache_base = slot < 0 ? 0
                                      : (slot / L.block_size) * L.num_kv_heads * L.block_size * D +
                                            (slot % L.block_size) * D;
  for (int64_t w = threadIdx.x; w < heads * half; w += blockDim.x) {
    const int64_t h = w / half, i = w % half;
    float s, c;
    sincosf(pos * p.inv_freq[i], &s, &c);
    if (h < p.num_q_heads) {
      const int64_t base = (t * p.num_q_heads + h) * D;
      float* x = p.q + base;
      const float a = x[i], b = x[i + half];
      if (p.q_pre != nullptr) {
        detail::store(p.q_pre, p.q_pre_bf16, base + i, a);
        detail::store(p.q_pre, p.q_pre_bf16, base + i + half, b);
      }
      x[i] = a * c - b * s;
      x[i + half] = b * c + a * s;
    } else if (slot >= 0) {
      const int64_t hk = h - p.num_q_heads;
      const int64_t src = (t * L.num_kv_heads + hk) * D;
      const int64_t dst = cache_base + hk * L.block_size * D;
      const float a = p.k[src + i], b = p.k[src + i + half];
      kc[dst + i] = __float2bfloat16(a * c - b * s);
      kc[dst + i + half] = __float2bfloat16(b * c + a * s);
      vc[dst + i] = __float2bfloat16(p.v[src + i]);
      vc[dst + i + half] = __float2bfloat16(p.v[src + i + half]);
    }
  }
}

}  // namespace

int rope_kv_write(const RopeKvWriteCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  rope_kv_write_kernel<<<static_cast<unsigned>(p.num_tokens), 256, 0, detail::as_stream(stream)>>>(
      p);
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
