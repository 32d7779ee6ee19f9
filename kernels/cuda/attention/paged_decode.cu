// Split-KV decode: the per-step plan, the dispatch over head_dim, and the kernel that merges the
// splits' partial outputs by their log2-sum-exp.
#include <algorithm>

#include "../lse_merge.cuh"
#include "paged_decode_impl.cuh"

namespace macserve::kernels::cuda {
namespace {

// One CTA of D threads per (sequence, q head): the largest log2-sum-exp of the head's splits (the
// threads split the loads), then the weights exp2(lse_s - max) a tile at a time, each tile's
// partial outputs summed kMergeLanes splits at once (lse_merge.cuh). A batch-1 decode has up to
// hundreds of splits per head, and one thread per dim walking them one dependent load at a time
// took 10.5 us at 4K context and 17 us at 127K on an H100 (log runs 11 and 19). An empty split
// (lse -inf, o 0) weighs 0; a head without any key gets 0.
__global__ void combine_kernel(PagedAttentionCudaParams p, int num_splits, const float* ws_o,
                               const float* ws_lse) {
  __shared__ float wts[detail::kMergeTile];
  __shared__ float warp_mx[4];
  __shared__ detail::Acc8 sums[detail::kMergeLanes][16];  // [lane r][c]: D / 8 <= 16
  __shared__ float wsum[detail::kMergeLanes];
  const int seq = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  if (p.skip != nullptr && p.skip[seq] == 1) return;  // a MAC decode row: its splits were not run
  const int D = static_cast<int>(p.layout.head_dim), Hq = static_cast<int>(p.num_q_heads);
  const int64_t base = (static_cast<int64_t>(seq) * Hq + h) * num_splits;
  float M = -INFINITY;
  for (int s = d; s < num_splits; s += D) M = fmaxf(M, ws_lse[base + s]);
  M = detail::warp_max(M);
  if ((d & 31) == 0) warp_mx[d >> 5] = M;
  __syncthreads();
  for (int i = 0; i < D / 32; ++i) M = fmaxf(M, warp_mx[i]);
  const int cols = D / 8, c = d % cols, r = d / cols;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  detail::Acc8 acc{zero, zero};
  float W = 0.0f;
  for (int t0 = 0; t0 < num_splits; t0 += detail::kMergeTile) {
    const int m = min(detail::kMergeTile, num_splits - t0);
    __syncthreads();  // the previous tile's weights have been read
    for (int k = d; k < m; k += D) {
      const float lse = ws_lse[base + t0 + k];
      wts[k] = lse == -INFINITY ? 0.0f : exp2f(lse - M);
    }
    __syncthreads();
    const float4* po = reinterpret_cast<const float4*>(ws_o + (base + t0) * D) + 2 * c;
    detail::sum_slots(acc, W, po, D / 4, wts, r, m);
  }
  sums[r][c] = acc;
  if (c == 0) wsum[r] = W;
  __syncthreads();
  float O = 0.0f;
  W = 0.0f;
  for (int i = 0; i < detail::kMergeLanes; ++i)
    O += detail::acc8_dim(sums[i][d / 8], d % 8), W += wsum[i];
  const int t = p.query_start[seq];
  detail::store(p.out, p.out_bf16, (static_cast<int64_t>(t) * Hq + h) * D + d,
                W > 0.0f ? O / W : 0.0f);
}

}  // namespace

bool decode_supported(int64_t head_dim, int64_t group, int64_t block_size) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8 &&
         block_size == decode_detail::kPage;
}

DecodePlan plan_decode(const PagedAttentionCudaParams& p, int64_t max_context_len, int num_sms) {
  using namespace decode_detail;
  DecodePlan plan;
  const int64_t D = p.layout.head_dim;
  const size_t smem = D == 64 ? smem_bytes<64>() : smem_bytes<128>();
  const int64_t per_sm = std::max<int64_t>(1, static_cast<int64_t>((227 * 1024) / (smem + 1024)));
  const int64_t slots = per_sm * num_sms;
  const int64_t work = p.num_seqs * p.layout.num_kv_heads;
  const int64_t max_pages = std::max<int64_t>(1, (max_context_len + kPage - 1) / kPage);
  // One wave of CTAs when the batch alone does not fill the GPU; at least 2 pages per warp.
  int64_t splits = std::max<int64_t>(1, slots / std::max<int64_t>(work, 1));
  splits = std::min(splits, std::max<int64_t>(1, max_pages / (2 * kWarps)));
  const int64_t pps = (max_pages + splits - 1) / splits;
  splits = (max_pages + pps - 1) / pps;
  plan.num_splits = static_cast<int>(splits);
  plan.pages_per_split = static_cast<int>(pps);
  plan.workspace_floats = splits > 1 ? p.num_seqs * p.num_q_heads * splits * (D + 1) : 0;
  return plan;
}

int paged_decode(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* workspace,
                 Stream stream) {
  if (p.num_seqs == 0) return 0;
  const auto st = detail::as_stream(stream);
  float* ws_o = workspace;
  float* ws_lse = plan.num_splits > 1
                      ? workspace + p.num_seqs * p.num_q_heads * plan.num_splits * p.layout.head_dim
                      : nullptr;
  const int rc = p.layout.head_dim == 64 ? decode_detail::dispatch_d64(p, plan, ws_o, ws_lse, st)
                                         : decode_detail::dispatch_d128(p, plan, ws_o, ws_lse, st);
  if (rc != 0 || plan.num_splits == 1) return rc;
  dim3 grid(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_q_heads));
  combine_kernel<<<grid, static_cast<unsigned>(p.layout.head_dim), 0, st>>>(p, plan.num_splits,
                                                                            ws_o, ws_lse);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
