// Architecture registry: config.json `architectures[0]` -> implementation. The Llama-family
// decoder covers all three; ModelConfig carries their differences (biases, q/k norm, head_dim).
#include "macserve/core/error.h"
#include "macserve/models/llama.h"
#include "macserve/models/model.h"

namespace macserve::models {

std::vector<std::string> supported_architectures() {
  return {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"};
}

std::unique_ptr<Model> create_model(Checkpoint checkpoint, backend::Backend& backend,
                                    const Shard& shard) {
  const std::string& arch = checkpoint.config.architecture;
  for (const std::string& known : supported_architectures()) {
    if (arch == known) return std::make_unique<LlamaModel>(std::move(checkpoint), backend, shard);
  }
  std::string list;
  for (const std::string& known : supported_architectures())
    list += (list.empty() ? "" : ", ") + known;
  throw_error(ErrorCode::kUnsupported, "{}: architecture '{}' is not supported (supported: {})",
              checkpoint.path, arch, list);
}

}  // namespace macserve::models
