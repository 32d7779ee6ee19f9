// Helpers of the GPU tests: skip without a device, move host float data to and from CUDA tensors of
// any dtype, poison outputs, relative L2.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/backend/cuda_backend.h"
#include "macserve/core/dtype.h"

namespace macserve::testing {

// The CUDA backend, or nullptr after GTEST_SKIP when no device is present (CI).
// env: MACSERVE_TEST_CPU_AS_GPU=1 runs the backend-generic tests on the CPU backend (host-side
// debugging without a GPU; tests that use CUDA-only helpers then fail).
inline std::unique_ptr<backend::Backend> cuda_or_skip_impl(
    std::string* why, const backend::BackendOptions& options = {}) {
  if (std::getenv("MACSERVE_TEST_CPU_AS_GPU") != nullptr) return backend::make_cpu_backend(options);
  return backend::make_cuda_backend(why, options);
}
// The backend with `options` (e.g. deterministic_options()), or nullptr after GTEST_SKIP.
#define MACSERVE_REQUIRE_CUDA_WITH(var, options)                          \
  std::string why_##var;                                                  \
  auto var = ::macserve::testing::cuda_or_skip_impl(&why_##var, options); \
  if (!var) GTEST_SKIP() << "no CUDA device, GPU test skipped: " << why_##var
#define MACSERVE_REQUIRE_CUDA(var) \
  MACSERVE_REQUIRE_CUDA_WITH(var, ::macserve::backend::BackendOptions{})

// Backend options of --deterministic (BackendOptions::deterministic).
inline backend::BackendOptions deterministic_options() {
  backend::BackendOptions o;
  o.deterministic = true;
  return o;
}

inline std::vector<float> randn(std::size_t n, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Rounds through bf16 (what the GPU sees of a bf16 input).
inline std::vector<float> round_bf16(std::vector<float> v) {
  for (float& x : v) x = bf16_to_float(float_to_bf16(x));
  return v;
}

// Host floats -> CUDA tensor of `dtype` (F32 or BF16).
inline Tensor to_device(backend::Backend& be, const std::vector<float>& v, DType dtype,
                        std::vector<int64_t> shape) {
  Tensor t = be.alloc(dtype, std::move(shape));
  if (dtype == DType::kF32) {
    be.copy_from_host(v.data(), t);
  } else {
    std::vector<uint16_t> b(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) b[i] = float_to_bf16(v[i]);
    be.copy_from_host(b.data(), t);
  }
  return t;
}

template <typename T>
Tensor to_device_raw(backend::Backend& be, const std::vector<T>& v, DType dtype) {
  Tensor t = be.alloc(dtype, {static_cast<int64_t>(v.size())});
  be.copy_from_host(v.data(), t);
  return t;
}

inline std::vector<float> to_host(backend::Backend& be, const Tensor& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  if (t.dtype() == DType::kF32) {
    be.copy_to_host(t, out.data());
  } else {
    std::vector<uint16_t> b(out.size());
    be.copy_to_host(t, b.data());
    for (std::size_t i = 0; i < b.size(); ++i) out[i] = bf16_to_float(b[i]);
  }
  return out;
}

// NaN in every element (0xFF bytes are NaN in f32 and bf16): an unwritten output fails the test.
inline void poison(backend::Backend& be, const Tensor& t) {
  std::vector<uint8_t> bytes(t.nbytes(), 0xFF);
  be.copy_from_host(bytes.data(), t);
}

inline Tensor host_tensor(const std::vector<float>& v, std::vector<int64_t> shape) {
  Tensor t = Tensor::empty_host(DType::kF32, std::move(shape));
  std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
  return t;
}

// ||a - b|| / ||b||; infinity when any element of a is not finite or sizes differ.
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

constexpr double kBf16Tol = 1e-2;  // outputs rounded to bf16 or computed from bf16 operands

}  // namespace macserve::testing
