// MappedFile: a whole file memory-mapped for reading. Weight tensors that are zero-copy views keep
// the mapping alive by holding the shared_ptr as their Tensor owner, so the file stays mapped for
// as long as any view of it exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace macserve::models {

class MappedFile {
 public:
  // Throws Error(kNotFound) when the file does not exist, kInvalidModel when it cannot be mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

}  // namespace macserve::models
