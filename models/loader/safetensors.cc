#include "macserve/models/loader/safetensors.h"

#include <cstring>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "loader_internal.h"
#include "macserve/core/dtype.h"
#include "macserve/core/error.h"

namespace macserve::models {
namespace {

using nlohmann::json;

// Real headers are a few hundred KB even for 100B-parameter models; the cap bounds the JSON
// parse of a hostile file.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// Dimensions above 2^48 cannot describe a real tensor and keep every product far from overflow
// in the common case (the products are still checked).
constexpr uint64_t kMaxDim = 1ull << 48;

// Element sizes of every dtype the safetensors format defines; the loader converts only
// F32/F16/BF16 but must know the others to validate the offsets of tensors it ignores.
std::optional<uint64_t> safetensors_dtype_size(const std::string& dtype) {
  static const std::unordered_map<std::string, uint64_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(dtype);
  if (it == kSizes.end()) return std::nullopt;
  return it->second;
}

[[noreturn]] void bad_tensor(const std::string& source, const std::string& name,
                             const std::string& what) {
  throw_error(ErrorCode::kInvalidModel, "{}: tensor '{}' {}", source, name, what);
}

// A JSON value that must be a non-negative integer no larger than `limit`.
uint64_t get_unsigned(const json& v, uint64_t limit, const std::string& source,
                      const std::string& name, const char* field) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
    bad_tensor(source, name,
               fmt::format("has a '{}' entry that is not a non-negative integer", field));
  const uint64_t x = v.get<uint64_t>();
  if (x > limit) bad_tensor(source, name, fmt::format("has '{}' value {} out of range", field, x));
  return x;
}

SafetensorsTensorInfo parse_entry(const std::string& name, const json& e, uint64_t data_size,
                                  const std::string& source) {
  if (!e.is_object()) bad_tensor(source, name, "header entry is not an object");
  SafetensorsTensorInfo info;
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) bad_tensor(source, name, "has no 'dtype' string");
  info.dtype = dt->get<std::string>();
  const auto elem_size = safetensors_dtype_size(info.dtype);
  if (!elem_size)
    throw_error(ErrorCode::kUnsupported, "{}: tensor '{}' has unknown dtype '{}'", source, name,
                info.dtype);

  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) bad_tensor(source, name, "has no 'shape' list");
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    const uint64_t dim = get_unsigned(d, kMaxDim, source, name, "shape");
    info.shape.push_back(static_cast<int64_t>(dim));
    if (!checked_mul(numel, dim, &numel))
      bad_tensor(source, name, "has a shape whose size overflows");
  }
  uint64_t nbytes = 0;
  if (!checked_mul(numel, *elem_size, &nbytes))
    bad_tensor(source, name, "has a shape whose size overflows");

  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2)
    bad_tensor(source, name, "has no 'data_offsets' [begin, end]");
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  info.begin = get_unsigned((*off)[0], max, source, name, "data_offsets");
  info.end = get_unsigned((*off)[1], max, source, name, "data_offsets");
  if (info.begin > info.end || info.end > data_size)
    bad_tensor(source, name,
               fmt::format("has data_offsets [{}, {}] outside the data section of {} bytes",
                           info.begin, info.end, data_size));
  if (info.end - info.begin != nbytes)
    bad_tensor(
        source, name,
        fmt::format("has data_offsets [{}, {}] ({} bytes) but {} {} needs {} bytes", info.begin,
                    info.end, info.end - info.begin, info.dtype, shape_string(info.shape), nbytes));
  return info;
}

template <typename Convert>
void convert_to_f32(const uint8_t* src, float* dst, std::size_t n, Convert convert) {
  for (std::size_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, sizeof(bits));  // memcpy: the source may be unaligned
    dst[i] = convert(bits);
  }
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> file,
                                           const std::string& source) {
  if (file.size() < 8)
    throw_error(ErrorCode::kInvalidModel,
                "{}: truncated safetensors file ({} bytes, the header length alone is 8)", source,
                file.size());
  uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), sizeof(header_len));  // little-endian host (x86-64, arm64)
  if (header_len > kMaxHeaderBytes)
    throw_error(ErrorCode::kInvalidModel,
                "{}: safetensors header length {} exceeds the {} byte limit", source, header_len,
                kMaxHeaderBytes);
  if (header_len > file.size() - 8)
    throw_error(ErrorCode::kInvalidModel,
                "{}: safetensors header length {} is larger than the file ({} bytes)", source,
                header_len, file.size());
  const auto* begin = reinterpret_cast<const char*>(file.data() + 8);
  json header = json::parse(begin, begin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded())
    throw_error(ErrorCode::kInvalidModel, "{}: safetensors header is not valid JSON", source);
  if (!header.is_object())
    throw_error(ErrorCode::kInvalidModel, "{}: safetensors header is not a JSON object", source);

  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = file.size() - out.data_offset;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;  // free-form string map; nothing the loader needs
    out.tensors.emplace(name, parse_entry(name, entry, data_size, source));
  }
  return out;
}

Tensor safetensors_tensor_to_f32(const std::string& name, const SafetensorsTensorInfo& info,
                                 const SafetensorsHeader& header, std::span<const uint8_t> file,
                                 const std::shared_ptr<void>& owner, const std::string& source) {
  MACSERVE_CHECK(header.data_offset + info.end <= file.size(), "tensor '{}' outside {}", name,
                 source);
  const uint8_t* src = file.data() + header.data_offset + info.begin;
  const std::size_t bytes = info.end - info.begin;
  if (info.dtype == "F32") {
    // The data section starts wherever the JSON header ends; writers pad it to 8 bytes, but a file
    // that does not gets a copy rather than a misaligned float pointer.
    if (reinterpret_cast<uintptr_t>(src) % alignof(float) == 0)
      return Tensor(const_cast<uint8_t*>(src), DType::kF32, info.shape, Device::kCpu, owner);
    Tensor t = alloc_f32(info.shape);
    if (bytes > 0) std::memcpy(t.data(), src, bytes);
    return t;
  }
  if (info.dtype == "BF16" || info.dtype == "F16") {
    Tensor t = alloc_f32(info.shape);
    if (info.dtype == "BF16")
      convert_to_f32(src, t.data_as<float>(), bytes / 2, bf16_to_float);
    else
      convert_to_f32(src, t.data_as<float>(), bytes / 2, half_to_float);
    return t;
  }
  throw_error(ErrorCode::kUnsupported,
              "{}: tensor '{}' has dtype {}, which is not supported (F32, F16, BF16)", source, name,
              info.dtype);
}

}  // namespace macserve::models
