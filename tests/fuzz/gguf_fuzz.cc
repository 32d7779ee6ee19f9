// Fuzz target: GGUF parsing (header, metadata, tensor infos) and the conversion to a Hugging Face
// checkpoint (config, vocab, dequantisation, q/k un-permutation) on untrusted bytes. Any input may
// be rejected with macserve::Error; none may crash, read out of bounds or allocate absurdly.
#include <cstddef>
#include <cstdint>
#include <span>

#include "macserve/core/error.h"
#include "macserve/models/loader/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace macserve;
  const std::span<const uint8_t> file(data, size);
  try {
    const models::GgufFile gguf = models::parse_gguf(file, "fuzz.gguf");
    models::checkpoint_from_gguf(gguf, file, nullptr, "fuzz.gguf");
  } catch (const Error&) {
  }
  return 0;
}
