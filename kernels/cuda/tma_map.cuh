// Host side of the Hopper TMA loads (tma_map.cu; not a public header): whether the device has them,
// and the 2-D tensor maps the wgmma kernels load their operands through.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace macserve::kernels::cuda::detail {

// Whether the current device is an sm_90 GPU and the driver gives cuTensorMapEncodeTiled.
bool hopper_tma_available();

// `rows` rows of `cols` bf16 at `data` (row-major, 16-byte aligned, cols a multiple of 8) as boxes
// of 64 columns x box_rows rows, written to shared memory in the SW128 layout of hopper.cuh;
// elements past the edges arrive as zeros. False where the encoder is missing or refuses.
bool make_sw128_map(CUtensorMap* map, const void* data, int64_t rows, int64_t cols, int box_rows);

}  // namespace macserve::kernels::cuda::detail
