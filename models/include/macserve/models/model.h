// Model: a decoder-only transformer (Llama, Qwen2, Qwen3 families) whose forward runs on a Backend.
// create_model() picks the implementation from config.json's `architectures`. An implementation is
// its weights and its forward math (run_layers over a step already on the backend); upload, the
// activation workspace, MAC telemetry and CUDA graphs are the backend's StepExecutor, owned here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/backend/step_executor.h"
#include "macserve/core/model_config.h"
#include "macserve/models/loader/checkpoint.h"
#include "macserve/models/shard.h"
#include "macserve/models/step_inputs.h"

namespace macserve::models {

class Model {
 public:
  virtual ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  virtual const ModelConfig& config() const = 0;
  // Bytes of weights resident on the backend.
  virtual int64_t weight_bytes() const = 0;

  // One step over the batch: writes this step's K/V into `kv` and returns the logits of
  // inputs.logits_rows as a backend tensor [num_logits_rows, vocab_size] (valid until the next
  // call). With inputs.mac.enabled, attention runs through MAC-Attention; with `mac_out` given, the
  // step's telemetry (decisions, KV tokens read, audit sums) is kept in backend memory and its one
  // device-to-host copy is enqueued before forward returns (so the logits copy covers it), to be
  // unpacked by read_mac_outputs.
  Tensor forward(const StepInputs& inputs, const KvCacheView& kv,
                 MacStepOutputs* mac_out = nullptr);
  // Fills `out` with the MAC telemetry of the last forward that was given a MacStepOutputs. Call
  // once the step's device work is complete (its logits were copied to the host, or after
  // Backend::synchronize) and before the next forward.
  void read_mac_outputs(MacStepOutputs& out) const;
  // Pure decode steps replayed from graphs captured per batch-size bucket, where the backend
  // supports it (CUDA; on by default, the engine's configuration turns it off). No-op elsewhere.
  void set_graphs(bool enabled);

 protected:
  // `config` as this rank runs it (shard_config: its heads size the step's MAC telemetry).
  Model(backend::Backend& backend, const ModelConfig& config);
  // The forward math: embedding -> layers -> logits of step.logits_rows, over a step whose inputs
  // are on the backend. Activations live in workspace buffers declared with add_buffer; the logits
  // returned must be one of them. Runs without host copies or allocation (graphs capture it).
  virtual Tensor run_layers(const backend::DeviceStep& step, const KvCacheView& kv) = 0;
  // Declares a workspace buffer of `row_shape` per token (or per logits row); call from the
  // constructor. Returns its id for DeviceStep::buffer.
  int add_buffer(backend::StepExecutor::Rows rows, DType dtype, std::vector<int64_t> row_shape);

 private:
  backend::StepExecutor exec_;
};

// Architectures create_model() accepts.
std::vector<std::string> supported_architectures();

// Moves the checkpoint's weights onto `backend` (the checkpoint may be dropped afterwards).
// Throws Error(kUnsupported) for an unknown architecture, naming it and the supported ones. With
// shard.size > 1 the model is that rank's slice (shard.h): it takes only its slices of the
// weights (give each rank its own copy of the Checkpoint: the tensors are shared handles), and its
// forward runs the group's collectives, so every rank must run every step.
std::unique_ptr<Model> create_model(Checkpoint checkpoint, backend::Backend& backend,
                                    const Shard& shard = {});

}  // namespace macserve::models
