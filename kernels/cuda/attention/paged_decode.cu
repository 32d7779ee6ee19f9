// Split-KV decode: the per-step plan, the dispatch over head_dim, and the kernel that merges the
// splits' partial outputs by their log2-sum-exp.
#include <algorithm>

#include "paged_decode_impl.cuh"

namespace macserve::kernels::cuda {
namespace {

// One CTA per (sequence, q head), one thread per dim.
__global__ void combine_kernel(PagedAttentionCudaParams p, int num_splits, const float* ws_o,
                               const float* ws_lse) {
  const int seq = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  if (p.skip != nullptr && p.skip[seq] == 1) return;  // a MAC decode row: its splits were not run
  const int D = static_cast<int>(p.layout.head_dim), Hq = static_cast<int>(p.num_q_heads);
  const int64_t base = (static_cast<int64_t>(seq) * Hq + h) * num_splits;
  float M = -INFINITY;
  for (int s = 0; s < num_splits; ++s) M = fmaxf(M, ws_lse[base + s]);
  float W = 0.0f, O = 0.0f;
  for (int s = 0; s < num_splits; ++s) {
    const float lse = ws_lse[base + s];
    if (lse == -INFINITY) continue;
    const float w = exp2f(lse - M);
    W += w;
    O += w * ws_o[(base + s) * D + d];
  }
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
