// The fixed-order linear layer's Hopper main loop (linear_wgmma.cu; not a public header).
#pragma once

#include "macserve/kernels/cuda/linear.cuh"

namespace macserve::kernels::cuda {

// Whether linear_wgmma runs here: an sm_90 GPU with TMA, k a multiple of 8, 16-byte aligned x and
// w.
bool linear_wgmma_supported(const LinearFixedParams& p);
// Whether linear_fixed takes linear_wgmma for this shape (measured; it needs no workspace).
bool linear_wgmma_preferred(const LinearFixedParams& p);
// y = x w^T in linear_fixed's order, every segment in one CTA, the total into p.y.
int linear_wgmma(const LinearFixedParams& p, Stream stream);

}  // namespace macserve::kernels::cuda
