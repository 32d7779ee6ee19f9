// Without libFuzzer: replays every file of the seed corpus directory given as argv[1], then
// deterministic mutations of each (bit flips, truncations, byte insertions), so the fuzz targets
// run in every ctest run. A crash or sanitizer report fails the test.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  std::vector<std::vector<uint8_t>> seeds;
  if (argc > 1 && std::filesystem::is_directory(argv[1])) {
    for (const auto& e : std::filesystem::directory_iterator(argv[1])) {
      std::ifstream f(e.path(), std::ios::binary);
      seeds.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
  }
  seeds.emplace_back();  // the empty input
  std::mt19937_64 rng(12345);
  const int mutations = argc > 2 ? std::stoi(argv[2]) : 2000;
  std::size_t runs = 0;
  for (const auto& seed : seeds) {
    LLVMFuzzerTestOneInput(seed.data(), seed.size());
    ++runs;
    for (int i = 0; i < mutations; ++i) {
      std::vector<uint8_t> m = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        switch (rng() % 4) {
          case 0:
            if (!m.empty()) m[rng() % m.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
            break;
          case 1:
            if (!m.empty()) m.resize(rng() % m.size());
            break;
          case 2:
            m.insert(m.begin() + (m.empty() ? 0 : rng() % m.size()), static_cast<uint8_t>(rng()));
            break;
          default:
            if (!m.empty()) m[rng() % m.size()] = static_cast<uint8_t>(rng() % 2 ? 0xff : 0x00);
            break;
        }
      }
      LLVMFuzzerTestOneInput(m.data(), m.size());
      ++runs;
    }
  }
  std::printf("%zu inputs replayed without a crash\n", runs);
  return 0;
}
