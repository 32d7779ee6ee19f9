// Greedy sampling on the GPU: the index of each row's maximum, the lowest index among equal maxima
// (std::max_element's choice, which the CPU sampler makes), so the token equals the CPU sampler's
// on the same float32 logits. Plain C++ header; the launcher returns 0 or the cudaError_t value.
#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels::cuda {

// out[r] = argmax_i logits[r, i], r < rows. logits f32 [rows, vocab], out i32 [rows].
int argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, Stream stream);

}  // namespace macserve::kernels::cuda
