// Tensor: a typed, shaped view of memory on one device, optionally owning it. Row-major,
// contiguous. Models and backends pass Tensors; kernels see only the raw pointers.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "macserve/core/dtype.h"

namespace macserve {

enum class Device { kCpu, kCuda };

class Tensor {
 public:
  Tensor() = default;
  // A view of memory someone else owns (keep-alive handle optional).
  Tensor(void* data, DType dtype, std::vector<int64_t> shape, Device device = Device::kCpu,
         std::shared_ptr<void> owner = nullptr);

  // Owned, zero-initialised host tensor.
  static Tensor empty_host(DType dtype, std::vector<int64_t> shape);

  bool defined() const { return data_ != nullptr; }
  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  std::size_t nbytes() const { return dtype_bytes(dtype_, numel()); }
  std::string shape_string() const;

  // Same memory, new shape with the same number of elements.
  Tensor reshape(std::vector<int64_t> shape) const;
  // Rows [begin, end) of the leading dimension (a view).
  Tensor slice_rows(int64_t begin, int64_t end) const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  std::vector<int64_t> shape_;
  Device device_ = Device::kCpu;
  std::shared_ptr<void> owner_;
};

}  // namespace macserve
