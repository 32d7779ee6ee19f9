#include "macserve/core/error.h"
#include "macserve/models/loader/checkpoint.h"

namespace macserve::models {

LoadFormat parse_load_format(const std::string& name) {
  if (name == "auto") return LoadFormat::kAuto;
  if (name == "safetensors") return LoadFormat::kSafetensors;
  if (name == "gguf") return LoadFormat::kGguf;
  if (name == "dummy") return LoadFormat::kDummy;
  throw_error(ErrorCode::kInvalidArgument, "unknown load format '{}' (auto|safetensors|gguf|dummy)",
              name);
}

}  // namespace macserve::models
