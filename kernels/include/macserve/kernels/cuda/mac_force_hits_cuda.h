// Benchmark only: MAC-Attention decode on CUDA with forced decisions, to time the kernels at a
// chosen hit rate on random data (mac_cuda_bench; the backend's cuda_set_mac_force_hits).
// Production launches (mac_decode, mac_attention_cuda.h) carry none of this.
#pragma once

#include <cstdint>

#include "macserve/kernels/cuda/mac_attention_cuda.h"

namespace macserve::kernels::cuda {

// Each eligible head's decision becomes a random draw (the match scan still runs). hit_rate < 0:
// off (mac_decode's decisions). clustered: one draw per KV group (all heads of a group agree). The
// draw hashes (seed + m, sequence, head or group). A forced hit matches position m - lag (its row
// must be valid: the benchmark fills the ring).
struct MacForceHits {
  float hit_rate = -1.0f;
  bool clustered = false;
  uint32_t seed = 0;
  int32_t lag = 64;
};

// mac_decode with the decisions forced (returns a cudaError_t value, 0 = ok).
int mac_decode_forced_hits(const MacCudaParams& p, const MacForceHits& force,
                           const MacWorkspace& ws, int64_t max_context_len, Stream stream);

}  // namespace macserve::kernels::cuda
