// Names of EngineConfig's enums: to_string for logs, metrics and server info, parse_enum for the
// front ends (flags, config file, environment), with errors that list the allowed names.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "macserve/core/error.h"
#include "macserve/engine/engine.h"

namespace macserve::engine {
namespace {

// Every value of each enum, in declaration order.
template <class E>
struct Values;
template <>
struct Values<DeviceChoice> {
  static constexpr DeviceChoice kAll[] = {DeviceChoice::kCpu, DeviceChoice::kCuda,
                                          DeviceChoice::kAuto};
};
template <>
struct Values<LoadFormat> {
  static constexpr LoadFormat kAll[] = {LoadFormat::kAuto, LoadFormat::kSafetensors,
                                        LoadFormat::kGguf, LoadFormat::kDummy};
};
template <>
struct Values<SchedulingPolicy> {
  static constexpr SchedulingPolicy kAll[] = {SchedulingPolicy::kFcfs, SchedulingPolicy::kPriority};
};
template <>
struct Values<AutoOnOff> {
  static constexpr AutoOnOff kAll[] = {AutoOnOff::kAuto, AutoOnOff::kOn, AutoOnOff::kOff};
};
template <>
struct Values<AttentionMode> {
  static constexpr AttentionMode kAll[] = {AttentionMode::kMac, AttentionMode::kFull};
};
template <>
struct Values<RingDtype> {
  static constexpr RingDtype kAll[] = {RingDtype::kBf16, RingDtype::kFp32};
};
template <>
struct Values<CpuGemm> {
  static constexpr CpuGemm kAll[] = {CpuGemm::kInvariant, CpuGemm::kOpenblas};
};
template <>
struct Values<CudaAttention> {
  static constexpr CudaAttention kAll[] = {CudaAttention::kAuto, CudaAttention::kGeneral};
};

template <>
struct Values<CpuWeights> {
  static constexpr CpuWeights kAll[] = {CpuWeights::kNative, CpuWeights::kF32};
};

}  // namespace

const char* to_string(DeviceChoice v) {
  switch (v) {
    case DeviceChoice::kCpu:
      return "cpu";
    case DeviceChoice::kCuda:
      return "cuda";
    case DeviceChoice::kAuto:
      return "auto";
  }
  return "cpu";
}

const char* to_string(LoadFormat v) {
  switch (v) {
    case LoadFormat::kAuto:
      return "auto";
    case LoadFormat::kSafetensors:
      return "safetensors";
    case LoadFormat::kGguf:
      return "gguf";
    case LoadFormat::kDummy:
      return "dummy";
  }
  return "auto";
}

const char* to_string(AutoOnOff v) {
  switch (v) {
    case AutoOnOff::kAuto:
      return "auto";
    case AutoOnOff::kOn:
      return "on";
    case AutoOnOff::kOff:
      return "off";
  }
  return "auto";
}

const char* to_string(AttentionMode v) {
  switch (v) {
    case AttentionMode::kMac:
      return "mac";
    case AttentionMode::kFull:
      return "full";
  }
  return "mac";
}

const char* to_string(RingDtype v) {
  switch (v) {
    case RingDtype::kBf16:
      return "bf16";
    case RingDtype::kFp32:
      return "fp32";
  }
  return "bf16";
}

const char* to_string(CpuGemm v) {
  switch (v) {
    case CpuGemm::kInvariant:
      return "invariant";
    case CpuGemm::kOpenblas:
      return "openblas";
  }
  return "invariant";
}

const char* to_string(CudaAttention v) {
  switch (v) {
    case CudaAttention::kAuto:
      return "auto";
    case CudaAttention::kGeneral:
      return "general";
  }
  return "auto";
}

const char* to_string(CpuWeights v) {
  switch (v) {
    case CpuWeights::kNative:
      return "native";
    case CpuWeights::kF32:
      return "f32";
  }
  return "native";
}

template <class E>
std::vector<std::string> enum_names() {
  std::vector<std::string> names;
  for (E v : Values<E>::kAll) names.emplace_back(to_string(v));
  return names;
}

template <class E>
E parse_enum(std::string_view name, std::string_view what) {
  for (E v : Values<E>::kAll)
    if (name == to_string(v)) return v;
  throw_error(ErrorCode::kInvalidArgument, "{} must be one of {}, got '{}'", what,
              fmt::join(enum_names<E>(), ", "), name);
}

#define MACSERVE_ENGINE_ENUM(E)                      \
  template std::vector<std::string> enum_names<E>(); \
  template E parse_enum<E>(std::string_view, std::string_view);
MACSERVE_ENGINE_ENUM(DeviceChoice)
MACSERVE_ENGINE_ENUM(LoadFormat)
MACSERVE_ENGINE_ENUM(SchedulingPolicy)
MACSERVE_ENGINE_ENUM(AutoOnOff)
MACSERVE_ENGINE_ENUM(AttentionMode)
MACSERVE_ENGINE_ENUM(RingDtype)
MACSERVE_ENGINE_ENUM(CpuGemm)
MACSERVE_ENGINE_ENUM(CudaAttention)
MACSERVE_ENGINE_ENUM(CpuWeights)
#undef MACSERVE_ENGINE_ENUM

}  // namespace macserve::engine
