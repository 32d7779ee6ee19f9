#include "macserve/core/tensor.h"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "macserve/core/error.h"

namespace macserve {

Tensor::Tensor(void* data, DType dtype, std::vector<int64_t> shape, Device device,
               std::shared_ptr<void> owner)
    : data_(data),
      dtype_(dtype),
      shape_(std::move(shape)),
      device_(device),
      owner_(std::move(owner)) {}

Tensor Tensor::empty_host(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MACSERVE_CHECK(d >= 0, "negative dimension {}", d);
    n *= d;
  }
  const std::size_t bytes = dtype_bytes(dtype, n);
  // 64-byte alignment keeps BLAS and vector loads on their fast path.
  const std::size_t alloc = ((bytes + 63) / 64) * 64 + 64;
  void* p = std::aligned_alloc(64, alloc);
  if (p == nullptr)
    throw_error(ErrorCode::kResourceExhausted, "out of host memory ({} bytes)", bytes);
  std::memset(p, 0, alloc);
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return Tensor(p, dtype, std::move(shape), Device::kCpu, std::move(owner));
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (std::size_t i = 0; i < shape_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape_[i]);
  }
  return s + "]";
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  MACSERVE_CHECK(t.numel() == numel(), "reshape {} -> {} changes the element count", shape_string(),
                 t.shape_string());
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  MACSERVE_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
                 "slice [{}, {}) of {}", begin, end, shape_string());
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + dtype_bytes(dtype_, begin * row);
  return t;
}

}  // namespace macserve
