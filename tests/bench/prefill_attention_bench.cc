// Throughput of the paged prefill attention kernels: the Hopper kernel (paged_prefill_wgmma, the
// default where supported) and the mma.sync one (paged_prefill_flash_mma, the fallback). One
// sequence, a chunk of {2048, 8192} queries after {0, 8K, 32K, 128K} prior tokens, Hq 32 with Hkv 8
// and 4, head_dim 128, block size 16, random page order, random bf16 K/V. FLOPs = 4 * head_dim * Hq
// * (keys each query sees, summed over the chunk): the causal work, Q K^T and P V. Median of 5
// timed launches after a warm-up. Prints CSV on stdout; `max_diff` is the largest difference
// between the two kernels' bf16 outputs over the largest output (a cross-check; correctness
// against the CPU oracle is cuda_ops_test's job).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_bench_util.h"
#include "macserve/backend/backend.h"
#include "macserve/backend/cuda_backend.h"
#include "macserve/core/dtype.h"
#include "macserve/kernels/cuda/attention.cuh"

using namespace macserve;
namespace kc = macserve::kernels::cuda;

namespace {

template <typename F>
double median_ms(cudaStream_t st, F&& launch) {
  launch();  // warm-up (kernel attributes, caches)
  CK(cudaStreamSynchronize(st));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> times;
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(a, st));
    launch();
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    times.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// max |a - b| / max |b| over two bf16 device tensors of the same shape.
double max_diff(backend::Backend& be, const Tensor& a, const Tensor& b) {
  std::vector<uint16_t> ha(static_cast<std::size_t>(a.numel())), hb(ha.size());
  be.copy_to_host(a, ha.data());
  be.copy_to_host(b, hb.data());
  const auto f = [](uint16_t h) {
    const uint32_t u = uint32_t{h} << 16;
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
  };
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < ha.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(f(ha[i]) - f(hb[i]))));
    scale = std::max(scale, static_cast<double>(std::fabs(f(hb[i]))));
  }
  return scale > 0.0 ? diff / scale : diff;
}

}  // namespace

int main() {
  std::string why;
  auto gpu = backend::make_cuda_backend(&why);
  if (!gpu) {
    std::fprintf(stderr, "no CUDA device: %s\n", why.c_str());
    return 0;
  }
  auto st = static_cast<cudaStream_t>(backend::cuda_stream(*gpu));
  const int64_t D = 128, bs = 16, Hq = 32, max_ctx = 131072 + 8192;
  const int64_t max_elems = max_ctx * 8 * D;  // Hkv 8
  Tensor kbuf = gpu->alloc(DType::kBF16, {max_elems}), vbuf = gpu->alloc(DType::kBF16, {max_elems});
  backend::cuda_fill_uniform(*gpu, kbuf, 1, 1.5f);
  backend::cuda_fill_uniform(*gpu, vbuf, 2, 1.0f);
  const bool hopper = kc::prefill_wgmma_supported(D, 4, bs);
  if (!hopper) std::fprintf(stderr, "no sm_90 device: the mma.sync kernel only\n");
  std::printf("kernel,hq,hkv,chunk,prior,ms,tflop,tflop_per_s,max_diff\n");
  for (int64_t hkv : {8, 4}) {
    for (int64_t chunk : {2048, 8192}) {
      for (int64_t prior : {0, 8192, 32768, 131072}) {
        const int64_t ctx = prior + chunk, pages = (ctx + bs - 1) / bs;
        const int64_t num_blocks = max_elems / (hkv * bs * D);
        const kernels::PagedKvLayout layout{num_blocks, hkv, bs, D};
        std::vector<int32_t> pool(static_cast<std::size_t>(num_blocks));
        std::iota(pool.begin(), pool.end(), 0);
        std::shuffle(pool.begin(), pool.end(), std::mt19937(static_cast<uint32_t>(ctx + hkv)));
        const std::vector<int32_t> table(pool.begin(), pool.begin() + pages);
        const std::vector<int32_t> qs{0, static_cast<int32_t>(chunk)},
            cl{static_cast<int32_t>(ctx)};
        Tensor qs_d = gpu->alloc(DType::kI32, {2}), cl_d = gpu->alloc(DType::kI32, {1});
        Tensor bt_d = gpu->alloc(DType::kI32, {pages});
        gpu->copy_from_host(qs.data(), qs_d);
        gpu->copy_from_host(cl.data(), cl_d);
        gpu->copy_from_host(table.data(), bt_d);
        Tensor q = gpu->alloc(DType::kF32, {chunk, Hq, D});
        Tensor out = gpu->alloc(DType::kBF16, {chunk, Hq, D});
        Tensor ref = gpu->alloc(DType::kBF16, {chunk, Hq, D});
        backend::cuda_fill_uniform(*gpu, q, 3, 1.0f);
        kc::PagedAttentionCudaParams p{q.data_as<float>(),
                                       kbuf.data(),
                                       vbuf.data(),
                                       ref.data(),
                                       qs_d.data_as<int32_t>(),
                                       cl_d.data_as<int32_t>(),
                                       bt_d.data_as<int32_t>(),
                                       1,
                                       chunk,
                                       pages,
                                       Hq,
                                       1.0f / std::sqrt(static_cast<float>(D)),
                                       layout,
                                       true};
        const double keys = double(chunk) * prior + double(chunk) * (chunk + 1) / 2;
        const double tflop = 4.0 * D * Hq * keys / 1e12;
        const auto row = [&](const char* name, double ms, double diff) {
          std::printf("%s,%lld,%lld,%lld,%lld,%.3f,%.3f,%.1f,%.2e\n", name,
                      static_cast<long long>(Hq), static_cast<long long>(hkv),
                      static_cast<long long>(chunk), static_cast<long long>(prior), ms, tflop,
                      tflop / (ms * 1e-3), diff);
          std::fflush(stdout);
        };
        const double mma_ms =
            median_ms(st, [&] { CK(cudaError_t(kc::paged_prefill_flash_mma(p, st))); });
        if (hopper) {
          p.out = out.data();
          const double ms = median_ms(st, [&] { CK(cudaError_t(kc::paged_prefill_wgmma(p, st))); });
          row("wgmma", ms, max_diff(*gpu, out, ref));
        }
        row("mma", mma_ms, 0.0);
      }
    }
  }
  return 0;
}
