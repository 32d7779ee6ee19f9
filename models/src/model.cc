// Model: a step's host inputs handed to the StepExecutor, which runs the implementation's layers.
#include "macserve/models/model.h"

namespace macserve::models {
namespace {

backend::StepArrays step_arrays(const StepInputs& in) {
  backend::StepArrays a;
  a.token_ids = in.token_ids;
  a.positions = in.positions;
  a.slot_mapping = in.slot_mapping;
  a.query_start = in.query_start;
  a.context_lens = in.context_lens;
  a.block_tables = in.block_tables;
  a.max_blocks_per_seq = in.max_blocks_per_seq;
  a.logits_rows = in.logits_rows;
  if (!in.mac.enabled) return a;
  a.mac = true;
  a.mac_audit = in.mac.audit;
  a.mac_config = in.mac.config;
  a.mac_modes = in.mac.modes;
  a.mac_ring_slots = in.mac.ring_slots;
  a.mac_ring_valid_from = in.mac.ring_valid_from;
  a.mac_rows_from = in.mac.rows_from;
  return a;
}

}  // namespace

Model::Model(backend::Backend& backend, const ModelConfig& config)
    : exec_(backend, {config.num_layers, config.num_q_heads, config.num_kv_heads}) {}

Model::~Model() = default;

Tensor Model::forward(const StepInputs& inputs, const KvCacheView& kv, MacStepOutputs* mac_out) {
  return exec_.run(step_arrays(inputs), kv, mac_out != nullptr,
                   [&](const backend::DeviceStep& step) { return run_layers(step, kv); });
}

void Model::read_mac_outputs(MacStepOutputs& out) const { exec_.read_mac_outputs(out); }

void Model::set_graphs(bool enabled) { exec_.set_graphs(enabled); }

int Model::add_buffer(backend::StepExecutor::Rows rows, DType dtype,
                      std::vector<int64_t> row_shape) {
  return exec_.add_buffer(rows, dtype, std::move(row_shape));
}

}  // namespace macserve::models
