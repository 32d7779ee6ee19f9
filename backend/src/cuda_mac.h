// The MAC-Attention part of the CUDA backend (private to backend/): ring storage, the
// per-step dispatch of exact and MAC attention over a (possibly mixed) batch, the device audit.
// Owned by CudaBackend, which forwards Backend::alloc_mac_ring / mac_attention here.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/kernels/cuda/mac_attention_cuda.h"
#include "macserve/kernels/cuda/mac_force_hits_cuda.h"

namespace macserve::backend {

class CudaMac {
 public:
  // `be` allocates and runs the exact attention; every launch goes to `stream`.
  CudaMac(Backend& be, cudaStream_t stream) : be_(be), stream_(stream) {}

  kernels::MacRing alloc_ring(int64_t num_slots, int64_t window, int64_t num_q_heads,
                              int64_t head_dim, bool bf16);
  // Backend::mac_attention. `capturing`: a graph is being recorded (no allocation may happen);
  // `graphs_exist`: a buffer that must grow is kept alive in *retired (captured graphs point at
  // it).
  void attention(const Tensor& q, const Tensor& q_pre, const Tensor& k_cache, const Tensor& v_cache,
                 const Tensor& out, const AttentionMeta& meta, const kernels::PagedKvLayout& layout,
                 float scale, const Backend::MacArgs& mac, bool capturing, bool graphs_exist,
                 std::vector<Tensor>* retired);
  static std::string unsupported(int64_t head_dim, int64_t group, int64_t block_size);
  // Benchmark only: every eligible head's decision replaced by a draw with this hit rate (< 0:
  // off), per head or per KV group (clustered); forced hits match position m - 64. While on, decode
  // steps launch the kernels' benchmark hook (mac_force_hits_cuda.h) instead of mac_decode.
  void set_force_hits(float hit_rate, bool clustered);
  // --deterministic: the split-KV partials cut every sequence's ranges into chunks of this many
  // keys (a multiple of 16), not into sizes chosen from the whole step's work.
  void set_fixed_chunk_tokens(int32_t tokens) { chunk_tokens_ = tokens; }

 private:
  Tensor grow(Tensor& buf, DType dtype, int64_t numel, bool capturing, bool graphs_exist,
              std::vector<Tensor>* retired, const char* what);

  struct PlanKey {
    int64_t seqs = -1, ctx = -1, hq = -1, hkv = -1, d = -1;
    bool operator==(const PlanKey&) const = default;
  };

  Backend& be_;
  cudaStream_t stream_;
  kernels::cuda::MacForceHits force_;  // hit_rate < 0: off (production)
  std::vector<Tensor> rings_;          // keeps ring memory alive
  Tensor workspace_;                   // u8: task list and partials of mac_decode
  Tensor audit_out_;  // f32 MAC output of an audited step (converted to the bf16 out after)
  PlanKey plan_key_;
  int64_t workspace_bytes_ = 0;
  int32_t chunk_tokens_ = 0;  // 0: adaptive (mac_attention_cuda.h)
};

}  // namespace macserve::backend
