// MAC-Attention on the CUDA backend: ring storage in device memory and the per-step dispatch.
// A step may mix exact sequences (prefill chunks: exact attention through the flash prefill kernel,
// plus ring rows for positions >= rows_from) and decode sequences (mac_decode: match, schedule,
// partials, merge + ring write). Every per-sequence array is already on the device and every
// decision is taken there, so a pure decode step is a fixed sequence of launches (CUDA-graph
// capturable).
#include "cuda_mac.h"

#include <limits>

#include "cuda_check.h"
#include "macserve/core/error.h"
#include "macserve/core/logging.h"
#include "macserve/kernels/cuda/attention.cuh"
#include "macserve/kernels/cuda/elementwise.cuh"

namespace macserve::backend {
namespace kc = macserve::kernels::cuda;

void CudaMac::set_force_hits(float hit_rate, bool clustered) {
  force_.hit_rate = hit_rate;
  force_.clustered = clustered;
  force_.seed = 1;
}

std::string CudaMac::unsupported(int64_t head_dim, int64_t group, int64_t block_size) {
  if (kc::mac_supported(head_dim, group, block_size)) return {};
  return fmt::format(
      "MAC-Attention on CUDA needs head_dim 32, 64 or 128, 1 to 8 query heads per KV head and KV "
      "blocks of 16 tokens; here head_dim is {}, {} query heads per KV head, block size {} (use "
      "--attention full, or --device cpu)",
      head_dim, group, block_size);
}

kernels::MacRing CudaMac::alloc_ring(int64_t num_slots, int64_t window, int64_t num_q_heads,
                                     int64_t head_dim, bool bf16) {
  const int64_t rows = num_slots * window * num_q_heads;
  Tensor q = be_.alloc(bf16 ? DType::kBF16 : DType::kF32, {rows, head_dim});
  Tensor o = be_.alloc(bf16 ? DType::kBF16 : DType::kF32, {rows, head_dim});
  Tensor lse = be_.alloc(DType::kF32, {rows});
  const std::vector<float> empty(static_cast<std::size_t>(rows),
                                 -std::numeric_limits<float>::infinity());
  be_.copy_from_host(empty.data(), lse);  // every row invalid until written
  rings_.insert(rings_.end(), {q, o, lse});
  return {q.data(), o.data(), lse.data_as<float>(), num_slots};
}

Tensor CudaMac::grow(Tensor& buf, DType dtype, int64_t numel, bool capturing, bool graphs_exist,
                     std::vector<Tensor>* retired, const char* what) {
  if (buf.numel() < numel) {
    MACSERVE_CHECK(!capturing, "{} growth during graph capture", what);
    if (graphs_exist && buf.defined())
      retired->push_back(buf);  // captured graphs still point at it
    buf = be_.alloc(dtype, {std::max<int64_t>(numel, 2 * buf.numel())});
  }
  return buf.slice_rows(0, numel);
}

void CudaMac::attention(const Tensor& q, const Tensor& q_pre, const Tensor& k_cache,
                        const Tensor& v_cache, const Tensor& out, const AttentionMeta& meta,
                        const kernels::PagedKvLayout& layout, float scale,
                        const Backend::MacArgs& mac, bool capturing, bool graphs_exist,
                        std::vector<Tensor>* retired) {
  const int64_t S = meta.num_seqs, T = q.dim(0), Hq = q.dim(-2), D = layout.head_dim;
  const int64_t Hkv = layout.num_kv_heads;
  if (const std::string why = unsupported(D, Hq / Hkv, layout.block_size);
      !why.empty() || Hq % Hkv != 0)
    throw_error(ErrorCode::kUnsupported, "{}",
                why.empty() ? "query heads must be a multiple of KV heads" : why);
  MACSERVE_CHECK(
      q.dtype() == DType::kF32 && q_pre.dtype() == DType::kF32 && q_pre.numel() == q.numel(),
      "mac_attention: q and q_pre must be f32 of the same shape");
  MACSERVE_CHECK(k_cache.dtype() == DType::kBF16 &&
                     (out.dtype() == DType::kBF16 || out.dtype() == DType::kF32),
                 "mac_attention: bf16 KV cache and a bf16 or f32 output expected");
  MACSERVE_CHECK(mac.decisions != nullptr && mac.num_decode >= 0 && mac.num_decode <= S,
                 "mac_attention arguments");
  const bool audit = mac.audit_exact != nullptr;
  // An audited step compares f32 with f32: MAC writes f32 there and it is rounded to `out` after
  // (the same rounding the kernels apply when they store bf16, so the step's result is unchanged).
  Tensor dst = out;
  if (audit && out.dtype() != DType::kF32)
    dst = grow(audit_out_, DType::kF32, q.numel(), capturing, graphs_exist, retired,
               "MAC audit buffer")
              .reshape(q.shape());
  const auto* query_start = meta.query_start.data_as<int32_t>();
  const auto* context_lens = meta.context_lens.data_as<int32_t>();
  const auto* block_tables = meta.block_tables.data_as<int32_t>();

  // Exact and plain sequences: the plain paged kernel, as --attention full would run it (decode
  // sequences skipped where the kernel can, else overwritten by MAC below); then exact ones' ring
  // rows.
  if (mac.num_decode < S) {
    AttentionMeta exact_meta = meta;
    if (mac.num_decode > 0) exact_meta.skip_mac_decode = mac.modes;
    be_.paged_attention(q, k_cache, v_cache, dst, exact_meta, layout, scale);
    const kc::MacPrefillRowsParams rp{q.data_as<float>(),
                                      q_pre.data_as<float>(),
                                      k_cache.data(),
                                      v_cache.data(),
                                      query_start,
                                      context_lens,
                                      block_tables,
                                      mac.ring_slots,
                                      mac.rows_from,
                                      mac.modes,
                                      S,
                                      T,
                                      meta.max_blocks_per_seq,
                                      Hq,
                                      scale,
                                      layout,
                                      *mac.config,
                                      *mac.ring};
    check_launch(kc::mac_prefill_rows(rp, stream_), "mac_prefill_rows");
  }

  // Decode sequences: Match-Amend-Complete, planned once per (batch, longest context).
  if (mac.num_decode > 0) {
    MACSERVE_CHECK(meta.max_context_len > 0, "mac_attention needs the step's longest context");
    const PlanKey key{S, meta.max_context_len, Hq, Hkv, D};
    if (!(key == plan_key_)) {
      workspace_bytes_ =
          kc::mac_workspace_bytes(S, Hq, Hkv, D, meta.max_context_len, chunk_tokens_);
      plan_key_ = key;
    }
    const Tensor ws = grow(workspace_, DType::kU8, workspace_bytes_, capturing, graphs_exist,
                           retired, "MAC workspace");
    kc::MacCudaParams p{};
    p.q_post = q.data_as<float>();
    p.q_pre = q_pre.data_as<float>();
    p.k_cache = k_cache.data();
    p.v_cache = v_cache.data();
    p.out = dst.data();
    p.out_bf16 = dst.dtype() == DType::kBF16;
    p.context_lens = context_lens;
    p.block_tables = block_tables;
    p.ring_slots = mac.ring_slots;
    p.ring_valid_from = mac.ring_valid_from;
    p.num_seqs = S;
    p.max_blocks_per_seq = meta.max_blocks_per_seq;
    p.num_q_heads = Hq;
    p.scale = scale;
    p.layout = layout;
    p.cfg = *mac.config;
    p.ring = *mac.ring;
    p.decisions = mac.decisions;
    p.kv_tokens_read = mac.kv_tokens_read;
    p.chunk_tokens = chunk_tokens_;  // 0: adaptive, from the step's real work, on the device
    p.token_index = query_start;     // token query_start[s] is decode sequence s's one query
    p.modes = mac.modes;
    const kc::MacWorkspace w{ws.data(), workspace_bytes_};
    if (force_.hit_rate >= 0.0f) {  // benchmark only (set_force_hits)
      kc::MacForceHits force = force_;
      force.seed =
          force_.seed + 0x9E3779B9u * static_cast<uint32_t>(mac.layer + 1);  // a new draw per layer
      check_launch(kc::mac_decode_forced_hits(p, force, w, meta.max_context_len, stream_),
                   "mac_decode_forced_hits");
    } else {
      check_launch(kc::mac_decode(p, w, meta.max_context_len, stream_), "mac_decode");
    }
  }

  // Audit: exact attention for every token, error sums of the decode rows on the device.
  if (audit) {
    MACSERVE_CHECK(mac.audit_exact->dtype() == DType::kF32 &&
                       mac.audit_exact->numel() == q.numel() && mac.audit_sums != nullptr,
                   "MAC audit buffers");
    be_.paged_attention(q, k_cache, v_cache, *mac.audit_exact, meta, layout, scale);
    const kc::MacAuditParams ap{
        dst.data_as<float>(), mac.audit_exact->data_as<float>(), query_start, mac.modes, S, Hq * D,
        mac.audit_sums};
    check_launch(kc::mac_audit_accumulate(ap, stream_), "mac_audit_accumulate");
    if (dst.data() != out.data())
      check_launch(kc::convert_f32_to_bf16(dst.data_as<float>(), out.data(), q.numel(), stream_),
                   "convert");
  }
}

}  // namespace macserve::backend
