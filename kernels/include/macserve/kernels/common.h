// Shared by every kernel header: the stream handle type. CPU kernels take a null stream.
#pragma once

#include <cstdint>

namespace macserve::kernels {

using Stream = void*;  // cudaStream_t for CUDA kernels, nullptr for CPU kernels

}  // namespace macserve::kernels
