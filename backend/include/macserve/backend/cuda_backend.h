// Extras of the CUDA backend for tests and benchmarks (only in builds with CUDA): the compute
// stream, a seeded device fill, the device's multiprocessor count, and the forced-hit MAC switch.
#pragma once

#include <cstdint>

#include "macserve/backend/backend.h"

namespace macserve::backend {

// The backend's one compute stream (a cudaStream_t); `be` must be a CUDA backend.
void* cuda_stream(Backend& be);
// Fills a CUDA tensor (bf16 or f32) with uniform values in [-scale, scale), on the stream.
void cuda_fill_uniform(Backend& be, const Tensor& t, uint64_t seed, float scale);
int cuda_num_sms(Backend& be);
// Benchmark only: every eligible MAC head's decision becomes a random draw with this hit rate
// (< 0: off, the default), per head or per KV group; a forced hit reuses the row of position
// m - 64, so the ring must hold valid rows there. Benchmarks call it directly; the server reads
// env MACSERVE_MAC_FORCE_HITS=RATE[,clustered] once at start-up and the engine calls it.
// Graphs captured before the call keep the setting they were captured with
// (Model::set_graphs(false) drops them).
void cuda_set_mac_force_hits(Backend& be, float hit_rate, bool clustered);

}  // namespace macserve::backend
