// `--load-format dummy`: a config.json and random weights of the right shapes, for benchmarks at
// real sizes without the files. A Llama-3.1-8B config means ~32 GB of float32, so the fill is one
// parallel pass over fixed-size chunks, each with its own generator seeded from (seed, tensor
// name, chunk index): the values depend only on the seed, never on the thread count.
#include <algorithm>
#include <string_view>

#include "loader_internal.h"
#include "macserve/core/error.h"
#include "parallel.h"

namespace macserve::models {
namespace {

constexpr int64_t kChunk = int64_t{1} << 16;  // elements per generator stream
constexpr float kStd = 0.02f;                 // the usual initializer_range of HF configs

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

// Norm weights start at 1 (as in HF's init) so activations keep their scale through the layers.
bool is_norm(std::string_view name) { return name.find("norm.weight") != std::string_view::npos; }

// Approximately normal(0, kStd): the sum of four 16-bit uniforms (Irwin-Hall, variance 1/3 per
// unit range) from one 64-bit draw. Bounded at +-3.5 sigma and ~10x cheaper than Box-Muller, which
// matters at 8 billion elements.
void fill_normal(float* dst, int64_t n, uint64_t stream) {
  uint64_t state = stream;
  // The sum has mean 2 * 65535 and standard deviation 65536 / sqrt(3).
  constexpr float kScale = kStd * 1.7320508f / 65536.0f;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = splitmix64(state);
    const int32_t sum = static_cast<int32_t>(r & 0xffff) +
                        static_cast<int32_t>((r >> 16) & 0xffff) +
                        static_cast<int32_t>((r >> 32) & 0xffff) + static_cast<int32_t>(r >> 48);
    dst[i] = static_cast<float>(sum - 2 * 65535) * kScale;
  }
}

struct Chunk {
  std::size_t tensor;
  int64_t begin;
  int64_t end;
};

}  // namespace

Checkpoint load_dummy_checkpoint(const std::string& path, uint64_t seed) {
  Checkpoint ckpt;
  ckpt.config = read_hf_config(path);
  const auto expected = sorted_expected_shapes(ckpt.config);
  std::vector<Tensor> tensors;
  std::vector<Chunk> chunks;
  tensors.reserve(expected.size());
  for (const auto& [name, shape] : expected) {
    tensors.push_back(alloc_f32(shape));
    const int64_t n = tensors.back().numel();
    for (int64_t b = 0; b < n; b += kChunk)
      chunks.push_back({tensors.size() - 1, b, std::min(n, b + kChunk)});
  }
  parallel_for(static_cast<int64_t>(chunks.size()), [&](int64_t i) {
    const Chunk& c = chunks[static_cast<std::size_t>(i)];
    const std::string& name = expected[c.tensor].first;
    float* dst = tensors[c.tensor].data_as<float>() + c.begin;
    if (is_norm(name)) {
      std::fill(dst, dst + (c.end - c.begin), 1.0f);
      return;
    }
    uint64_t stream = seed ^ fnv1a(name);
    stream = splitmix64(stream) ^ static_cast<uint64_t>(c.begin / kChunk);
    fill_normal(dst, c.end - c.begin, splitmix64(stream));
  });
  for (std::size_t k = 0; k < expected.size(); ++k)
    ckpt.weights.emplace(expected[k].first, std::move(tensors[k]));
  return ckpt;
}

}  // namespace macserve::models
