// The linear layers of one Llama-3.1-8B decoder layer (and its lm_head) at decode batch sizes:
// cuBLAS GEMMs (bf16 in, f32 out; Q, K and V fused into one GEMM, gate/up then the SwiGLU kernel;
// qkv_3gemm is the former three Q, K, V GEMMs, for comparison; us, tbps, frac_of_peak), the same
// GEMMs through --deterministic's fixed-order kernel (linear.cuh; fixed_us, and fixed_ratio =
// fixed_us / us), and up to m = kLinearGemvMaxRows through linear_gemv (gate/up with SwiGLU in its
// epilogue; CudaBackend runs it at m = 1 instead of cuBLAS: gemv_us, gemv_frac of the peak,
// gemv_ratio = gemv_us / us); m up to 2048 (a prefill chunk; TFLOP/s there, lm_head only to 64).
// Each weight set is replicated so the copies a graph cycles through exceed 4x the L2 cache (every
// launch reads its weights from memory). Time per launch: median of CUDA-graph replays. Achieved
// bandwidth counts the weight bytes only. Prints CSV on stdout; report, never gate.
//   linear_gpu_bench [peak TB/s for the fraction column, default 4.52 (H200 reads; H100: 3.35)]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "macserve/kernels/cuda/elementwise.cuh"
#include "macserve/kernels/cuda/linear.cuh"

namespace kc = macserve::kernels::cuda;

namespace {

void check(int rc, const char* what) {
  if (rc != 0) {
    std::fprintf(stderr, "%s failed: %s\n", what, cudaGetErrorString(static_cast<cudaError_t>(rc)));
    std::exit(1);
  }
}

void check_cublas(cublasStatus_t s) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cuBLAS error %d\n", static_cast<int>(s));
    std::exit(1);
  }
}

struct Op {
  std::string name;
  std::vector<int64_t> n;  // output rows of each projection (gate_up: {2 * inter})
  int64_t k;
  bool swiglu;
};

// y[m, n] = x[m, k] w[n, k]^T through cuBLAS, as CudaBackend calls it.
void cublas_linear(cublasHandle_t h, const void* x, const void* w, float* y, int64_t m, int64_t n,
                   int64_t k) {
  const float alpha = 1.0f, beta = 0.0f;
  check_cublas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                            static_cast<int>(k), &alpha, w, CUDA_R_16BF, static_cast<int>(k), x,
                            CUDA_R_16BF, static_cast<int>(k), &beta, y, CUDA_R_32F,
                            static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

int main(int argc, char** argv) {
  const double peak_tbps = argc > 1 ? std::atof(argv[1]) : 4.52;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cublasHandle_t h;
  check_cublas(cublasCreate(&h));
  check_cublas(cublasSetStream(h, st));
  void* ws = nullptr;
  CK(cudaMalloc(&ws, size_t{32} << 20));
  check_cublas(cublasSetWorkspace(h, ws, size_t{32} << 20));

  const int64_t hidden = 4096, inter = 14336, vocab = 128256;
  const std::vector<Op> ops = {{"qkv", {4096 + 1024 + 1024}, hidden, false},
                               {"qkv_3gemm", {4096, 1024, 1024}, hidden, false},
                               {"o_proj", {4096}, hidden, false},
                               {"gate_up_swiglu", {2 * inter}, hidden, true},
                               {"down_proj", {hidden}, inter, false},
                               {"lm_head", {vocab}, hidden, false}};
  const int64_t max_m = 2048;
  std::printf("# %s, %d SMs, L2 %d MB; peak for frac: %.2f TB/s\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, peak_tbps);
  std::printf(
      "op,m,n,k,weight_mb,us,tbps,frac_of_peak,tflops,fixed_us,fixed_ratio,gemv_us,gemv_frac,"
      "gemv_ratio\n");
  for (const Op& op : ops) {
    int64_t rows = 0;
    for (int64_t n : op.n) rows += n;
    const size_t wbytes = static_cast<size_t>(rows * op.k) * 2;
    const int copies =
        static_cast<int>(std::max<size_t>(2, (size_t{4} * prop.l2CacheSize + wbytes - 1) / wbytes));
    std::vector<void*> w(static_cast<size_t>(copies));
    for (void*& p : w) {
      CK(cudaMalloc(&p, wbytes));
      check(kc::fill_uniform(p, rows * op.k, true, reinterpret_cast<uintptr_t>(p), 0.05f, st),
            "fill");
    }
    void *x = nullptr, *act = nullptr;
    float* y = nullptr;
    CK(cudaMalloc(&x, static_cast<size_t>(max_m * op.k) * 2));
    CK(cudaMalloc(&y, static_cast<size_t>(max_m * rows) * 4));
    CK(cudaMalloc(&act, static_cast<size_t>(max_m * rows) * 2));
    check(kc::fill_uniform(x, max_m * op.k, true, 7, 1.0f, st), "fill");
    for (int64_t m : {1, 2, 4, 8, 16, 64, 256, 2048}) {
      if (op.name == "lm_head" && m > 64) break;  // only sampled rows reach the lm_head
      int i = 0;
      int64_t ws_floats = 0;
      for (int64_t n : op.n)
        ws_floats = std::max(ws_floats, kc::linear_fixed_workspace_floats(m, n, op.k));
      float* ws_fixed = nullptr;
      if (ws_floats > 0) CK(cudaMalloc(&ws_fixed, static_cast<size_t>(ws_floats) * 4));
      enum Kernel { kCublas, kFixed, kGemv };
      const auto make_step = [&](Kernel kernel) {
        return [&, kernel] {
          const auto* wb = static_cast<const char*>(w[static_cast<size_t>(i++ % copies)]);
          int64_t off = 0;
          for (int64_t n : op.n) {
            if (kernel == kFixed)
              check(
                  kc::linear_fixed({x, wb + off * op.k * 2, y + m * off, m, n, op.k}, ws_fixed, st),
                  "linear_fixed");
            else if (kernel == kGemv && op.swiglu)  // SwiGLU in the epilogue, as CudaBackend
              check(kc::linear_gemv_swiglu({x, wb, act, true, m, n / 2, op.k}, st),
                    "linear_gemv_swiglu");
            else if (kernel == kGemv)
              check(kc::linear_gemv({x, wb + off * op.k * 2, y + m * off, m, n, op.k}, st),
                    "linear_gemv");
            else
              cublas_linear(h, x, wb + off * op.k * 2, y + m * off, m, n, op.k);
            off += n;
          }
          if (op.swiglu && kernel != kGemv)
            check(kc::swiglu({y, act, m, op.n[0] / 2, true}, st), "swiglu");
        };
      };
      float us[3] = {0, 0, 0};
      const int kernels = m <= kc::kLinearGemvMaxRows ? 3 : 2;
      for (int kernel = 0; kernel < kernels; ++kernel) {
        const auto step = make_step(static_cast<Kernel>(kernel));
        for (int r = 0; r < 3; ++r) step();  // cuBLAS plans, first launches
        CK(cudaStreamSynchronize(st));
        us[kernel] = median_graph_step_us(st, 2 * copies, 15, cudaStreamCaptureModeGlobal, step);
      }
      if (ws_fixed != nullptr) CK(cudaFree(ws_fixed));
      const float cub = us[0];
      const double gb = static_cast<double>(wbytes) / 1e9;
      const double tflops = 2.0 * static_cast<double>(m * rows * op.k) / (cub * 1e-6) / 1e12;
      std::printf("%s,%lld,%lld,%lld,%.1f,%.2f,%.3f,%.3f,%.1f,%.2f,%.3f,", op.name.c_str(),
                  static_cast<long long>(m), static_cast<long long>(rows),
                  static_cast<long long>(op.k), static_cast<double>(wbytes) / 1e6, cub,
                  gb / (cub * 1e-6) / 1e3, gb / (cub * 1e-6) / 1e3 / peak_tbps, tflops, us[1],
                  us[1] / cub);
      if (kernels == 3)
        std::printf("%.2f,%.3f,%.3f\n", us[2], gb / (us[2] * 1e-6) / 1e3 / peak_tbps, us[2] / cub);
      else
        std::printf(",,\n");
      std::fflush(stdout);
    }
    for (void* p : w) CK(cudaFree(p));
    CK(cudaFree(x));
    CK(cudaFree(y));
    CK(cudaFree(act));
  }
  check_cublas(cublasDestroy(h));
  CK(cudaFree(ws));
  return 0;
}
