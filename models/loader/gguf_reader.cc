// GGUF parsing. The layout (all little-endian):
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count,
//   kv_count x (string key, u32 value type, value),
//   tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset),
//   padding to general.alignment, data section.
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
// Every length and count is checked against the bytes left before anything is allocated, so a
// lying count gives an error instead of a huge allocation.
#include <bit>
#include <cstring>
#include <unordered_map>

#include "gguf_dequant.h"
#include "loader_internal.h"
#include "macserve/core/error.h"
#include "macserve/models/loader/gguf.h"

namespace macserve::models {
namespace {

static_assert(std::endian::native == std::endian::little,
              "GGUF reading assumes a little-endian host");

constexpr int kMaxArrayDepth = 4;  // nested arrays deeper than this are never legitimate
constexpr uint32_t kMaxDims = 4;   // GGML_MAX_DIMS
constexpr uint64_t kMaxDim = 1ull << 48;
constexpr uint64_t kMaxAlignment = 1ull << 20;

class ByteReader {
 public:
  ByteReader(std::span<const uint8_t> bytes, const std::string& source)
      : bytes_(bytes), source_(source) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      throw_error(ErrorCode::kInvalidModel,
                  "{}: truncated GGUF file: {} at offset {} needs {} bytes, {} left", source_, what,
                  pos_, n, remaining());
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const char* what) {
    const uint64_t len = read<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_),
                  static_cast<std::size_t>(len));
    pos_ += len;
    return s;
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& source_;
  uint64_t pos_ = 0;
};

// The fewest bytes one value of `type` occupies; bounds array counts before reserving memory.
uint64_t min_value_bytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kString:  // its u64 length
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    case GgufValueType::kArray:
      return 12;  // u32 type + u64 count
  }
  return 1;
}

GgufValueType checked_value_type(uint32_t raw, const std::string& key, const std::string& source) {
  if (raw > static_cast<uint32_t>(GgufValueType::kF64))
    throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}' has unknown value type {}", source,
                key, raw);
  return static_cast<GgufValueType>(raw);
}

GgufValue read_value(ByteReader& r, GgufValueType type, const std::string& key,
                     const std::string& source, int depth);

void read_array(ByteReader& r, GgufValue& v, const std::string& key, const std::string& source,
                int depth) {
  if (depth >= kMaxArrayDepth)
    throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}' nests arrays deeper than {}", source,
                key, kMaxArrayDepth);
  v.elem_type = checked_value_type(r.read<uint32_t>("array type"), key, source);
  const uint64_t count = r.read<uint64_t>("array length");
  if (count > r.remaining() / min_value_bytes(v.elem_type))
    throw_error(ErrorCode::kInvalidModel,
                "{}: metadata '{}' claims {} array elements, more than the {} bytes left", source,
                key, count, r.remaining());
  v.items.reserve(static_cast<std::size_t>(count));
  for (uint64_t k = 0; k < count; ++k)
    v.items.push_back(read_value(r, v.elem_type, key, source, depth + 1));
}

GgufValue read_value(ByteReader& r, GgufValueType type, const std::string& key,
                     const std::string& source, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::kU8:
      v.u = r.read<uint8_t>("u8 value");
      break;
    case GgufValueType::kI8:
      v.i = r.read<int8_t>("i8 value");  // NOLINT(bugprone-signed-char-misuse): GGUF i8 is signed
      break;
    case GgufValueType::kU16:
      v.u = r.read<uint16_t>("u16 value");
      break;
    case GgufValueType::kI16:
      v.i = r.read<int16_t>("i16 value");
      break;
    case GgufValueType::kU32:
      v.u = r.read<uint32_t>("u32 value");
      break;
    case GgufValueType::kI32:
      v.i = r.read<int32_t>("i32 value");
      break;
    case GgufValueType::kF32:
      v.f = r.read<float>("f32 value");
      break;
    case GgufValueType::kBool:
      v.u = r.read<uint8_t>("bool value") != 0 ? 1 : 0;
      break;
    case GgufValueType::kString:
      v.str = r.read_string("string value");
      break;
    case GgufValueType::kArray:
      read_array(r, v, key, source, depth);
      break;
    case GgufValueType::kU64:
      v.u = r.read<uint64_t>("u64 value");
      break;
    case GgufValueType::kI64:
      v.i = r.read<int64_t>("i64 value");
      break;
    case GgufValueType::kF64:
      v.f = r.read<double>("f64 value");
      break;
  }
  return v;
}

void read_header(ByteReader& r, GgufFile& out, uint64_t* tensor_count, uint64_t* kv_count,
                 const std::string& source) {
  if (r.remaining() < 4 ||
      r.read<uint32_t>("magic") != 0x46554747u)  // "GGUF" read as a little-endian u32
    throw_error(ErrorCode::kInvalidModel, "{}: not a GGUF file (bad magic)", source);
  out.version = r.read<uint32_t>("version");
  if (out.version == 1)
    throw_error(ErrorCode::kUnsupported,
                "{}: GGUF version 1 is not supported (re-convert the model)", source);
  if (out.version != 2 && out.version != 3) {
    const uint32_t swapped = __builtin_bswap32(out.version);
    if (swapped >= 1 && swapped <= 3)
      throw_error(ErrorCode::kUnsupported, "{}: big-endian GGUF files are not supported", source);
    throw_error(ErrorCode::kUnsupported, "{}: GGUF version {} is not supported (2 or 3)", source,
                out.version);
  }
  *tensor_count = r.read<uint64_t>("tensor count");
  *kv_count = r.read<uint64_t>("metadata count");
  // A tensor info takes at least 24 bytes, a key/value pair 13: counts beyond that are lies.
  if (*tensor_count > r.remaining() / 24 || *kv_count > r.remaining() / 13)
    throw_error(ErrorCode::kInvalidModel,
                "{}: GGUF header claims {} tensors and {} metadata entries, more than "
                "the file's {} bytes can hold",
                source, *tensor_count, *kv_count, r.remaining());
}

void read_alignment(GgufFile& out, const std::string& source) {
  const GgufValue* a = out.find("general.alignment");
  if (a == nullptr) return;
  const auto v = a->as_int();
  if (!v || *v <= 0 || static_cast<uint64_t>(*v) > kMaxAlignment ||
      !std::has_single_bit(static_cast<uint64_t>(*v)))
    throw_error(ErrorCode::kInvalidModel, "{}: general.alignment must be a power of two up to {}",
                source, kMaxAlignment);
  out.alignment = static_cast<uint64_t>(*v);
}

GgufTensorInfo read_tensor_info(ByteReader& r, const std::string& source) {
  GgufTensorInfo t;
  t.name = r.read_string("tensor name");
  const uint32_t n_dims = r.read<uint32_t>("tensor rank");
  if (n_dims == 0 || n_dims > kMaxDims)
    throw_error(ErrorCode::kInvalidModel, "{}: tensor '{}' has {} dimensions (1..{} allowed)",
                source, t.name, n_dims, kMaxDims);
  uint64_t numel = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = r.read<uint64_t>("tensor dimension");
    if (ne > kMaxDim || !checked_mul(numel, ne, &numel))
      throw_error(ErrorCode::kInvalidModel, "{}: tensor '{}' has an absurd dimension {}", source,
                  t.name, ne);
    t.dims.push_back(static_cast<int64_t>(ne));
  }
  t.type = r.read<uint32_t>("tensor type");
  t.offset = r.read<uint64_t>("tensor offset");
  const GgmlTypeTraits* traits = ggml_type_traits(t.type);
  if (traits == nullptr)
    throw_error(ErrorCode::kUnsupported, "{}: tensor '{}' has unknown ggml type {}", source, t.name,
                t.type);
  if (t.dims[0] % traits->block_size != 0)
    throw_error(ErrorCode::kInvalidModel,
                "{}: tensor '{}' has rows of {} elements, not a multiple of the {} block "
                "size {}",
                source, t.name, t.dims[0], traits->name, traits->block_size);
  if (!checked_mul(numel / traits->block_size, traits->block_bytes, &t.nbytes))
    throw_error(ErrorCode::kInvalidModel, "{}: tensor '{}' size overflows", source, t.name);
  return t;
}

// Places the data section and checks that every tensor's bytes lie inside the file.
void place_tensors(GgufFile& out, uint64_t header_end, uint64_t file_size,
                   const std::string& source) {
  const uint64_t a = out.alignment;
  if (!checked_add(header_end, a - 1, &out.data_offset))
    throw_error(ErrorCode::kInvalidModel, "{}: GGUF data section offset overflows", source);
  out.data_offset = out.data_offset / a * a;
  for (const GgufTensorInfo& t : out.tensors) {
    uint64_t begin = 0, end = 0;
    if (t.offset % a != 0)
      throw_error(ErrorCode::kInvalidModel,
                  "{}: tensor '{}' offset {} is not a multiple of the alignment {}", source, t.name,
                  t.offset, a);
    if (!checked_add(out.data_offset, t.offset, &begin) || !checked_add(begin, t.nbytes, &end) ||
        end > file_size)
      throw_error(ErrorCode::kInvalidModel,
                  "{}: tensor '{}' data (offset {}, {} bytes) lies outside the file "
                  "({} bytes)",
                  source, t.name, t.offset, t.nbytes, file_size);
  }
}

}  // namespace

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kU16:
    case GgufValueType::kI16:
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kU64:
    case GgufValueType::kI64:
      return true;
    case GgufValueType::kF32:
    case GgufValueType::kBool:
    case GgufValueType::kString:
    case GgufValueType::kArray:
    case GgufValueType::kF64:
      return false;
  }
  return false;
}

std::optional<int64_t> GgufValue::as_int() const {
  if (!is_integer()) return std::nullopt;
  const bool is_unsigned = type == GgufValueType::kU8 || type == GgufValueType::kU16 ||
                           type == GgufValueType::kU32 || type == GgufValueType::kU64;
  if (!is_unsigned) return i;
  if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return static_cast<int64_t>(u);
}

std::optional<double> GgufValue::as_number() const {
  if (type == GgufValueType::kF32 || type == GgufValueType::kF64) return f;
  if (auto v = as_int()) return static_cast<double>(*v);
  return std::nullopt;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::string ggml_type_name(uint32_t type) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  return t != nullptr ? t->name : fmt::format("type {}", type);
}

GgufFile parse_gguf(std::span<const uint8_t> file, const std::string& source) {
  ByteReader r(file, source);
  GgufFile out;
  uint64_t tensor_count = 0, kv_count = 0;
  read_header(r, out, &tensor_count, &kv_count, source);
  for (uint64_t k = 0; k < kv_count; ++k) {
    std::string key = r.read_string("metadata key");
    const GgufValueType type = checked_value_type(r.read<uint32_t>("metadata type"), key, source);
    GgufValue value = read_value(r, type, key, source, 0);
    if (!out.metadata.emplace(key, std::move(value)).second)
      throw_error(ErrorCode::kInvalidModel, "{}: duplicate metadata key '{}'", source, key);
  }
  read_alignment(out, source);
  out.tensors.reserve(static_cast<std::size_t>(tensor_count));
  std::unordered_map<std::string, std::size_t> seen;
  for (uint64_t k = 0; k < tensor_count; ++k) {
    out.tensors.push_back(read_tensor_info(r, source));
    if (!seen.emplace(out.tensors.back().name, k).second)
      throw_error(ErrorCode::kInvalidModel, "{}: duplicate tensor '{}'", source,
                  out.tensors.back().name);
  }
  place_tensors(out, r.pos(), file.size(), source);
  return out;
}

}  // namespace macserve::models
