// Model: a decoder-only transformer (Llama, Qwen2, Qwen3 families) whose forward runs on a Backend.
// create_model() picks the implementation from config.json's `architectures`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/core/model_config.h"
#include "macserve/models/loader/checkpoint.h"
#include "macserve/models/step_inputs.h"

namespace macserve::models {

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // One step over the batch: writes this step's K/V into `kv` and returns the logits of
  // inputs.logits_rows as a backend tensor [num_logits_rows, vocab_size] (valid until the next call).
  // With inputs.mac.enabled, attention runs through MAC-Attention; with `mac_out` given, the step's
  // telemetry (decisions, KV tokens read, audit sums) is kept in backend memory and its one
  // device-to-host copy is enqueued before forward returns (so the logits copy covers it), to be
  // unpacked by read_mac_outputs.
  virtual Tensor forward(const StepInputs& inputs, const KvCacheView& kv, MacStepOutputs* mac_out = nullptr) = 0;
  // Fills `out` with the MAC telemetry of the last forward that was given a MacStepOutputs. Call once
  // the step's device work is complete (its logits were copied to the host, or after
  // Backend::synchronize) and before the next forward.
  virtual void read_mac_outputs(MacStepOutputs& out) { (void)out; }
  // Bytes of weights resident on the backend.
  virtual int64_t weight_bytes() const = 0;
  // Pure decode steps replayed from graphs captured per batch-size bucket, where the backend
  // supports it (CUDA; on by default, env MACSERVE_CUDA_GRAPHS=0 turns it off). No-op elsewhere.
  virtual void set_graphs(bool enabled) { (void)enabled; }
};

// Architectures create_model() accepts.
std::vector<std::string> supported_architectures();

// Moves the checkpoint's weights onto `backend` (the checkpoint may be dropped afterwards).
// Throws Error(kUnsupported) for an unknown architecture, naming it and the supported ones.
std::unique_ptr<Model> create_model(Checkpoint checkpoint, backend::Backend& backend);

}  // namespace macserve::models
