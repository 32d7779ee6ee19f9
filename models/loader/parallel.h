// parallel_for: runs fn(i) for i in [0, n) on the machine's cores. Loading is memory-bound
// conversion work (BF16 -> F32, GGUF dequantisation, random fill), so plain threads pulling items
// off a shared counter are enough; the first exception thrown by any item is rethrown here.
#pragma once

#include <cstdint>
#include <functional>

namespace macserve::models {

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace macserve::models
