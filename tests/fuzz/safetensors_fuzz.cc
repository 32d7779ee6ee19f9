// Fuzz target: safetensors header parsing and tensor conversion on untrusted bytes. Any input may
// be rejected with macserve::Error; none may crash, read out of bounds or allocate absurdly.
#include <cstddef>
#include <cstdint>
#include <span>

#include "macserve/core/error.h"
#include "macserve/models/loader/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace macserve;
  const std::span<const uint8_t> file(data, size);
  try {
    const auto header = models::parse_safetensors_header(file, "fuzz.safetensors");
    for (const auto& [name, info] : header.tensors) {
      try {
        const Tensor t = models::safetensors_tensor_to_f32(name, info, header, file, nullptr,
                                                           "fuzz.safetensors");
        // Touch the first and last element so a bad view would be caught by ASan.
        if (t.numel() > 0) {
          volatile float x = t.data_as<float>()[0] + t.data_as<float>()[t.numel() - 1];
          (void)x;
        }
      } catch (const Error&) {
        // kUnsupported dtypes are expected here.
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
