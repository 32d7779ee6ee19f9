// Extras of the CUDA backend for tests and benchmarks (only in builds with CUDA): the compute
// stream, a seeded device fill, and the device's multiprocessor count.
#pragma once

#include <cstdint>

#include "macserve/backend/backend.h"

namespace macserve::backend {

// The backend's one compute stream (a cudaStream_t); `be` must be a CUDA backend.
void* cuda_stream(Backend& be);
// Fills a CUDA tensor (bf16 or f32) with uniform values in [-scale, scale), on the stream.
void cuda_fill_uniform(Backend& be, const Tensor& t, uint64_t seed, float scale);
int cuda_num_sms(Backend& be);

}  // namespace macserve::backend
