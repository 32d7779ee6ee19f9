// ModelRunner: a scheduled batch -> StepInputs (tokens, positions, slot mapping, block tables,
// context lengths) -> copy-on-write block copies -> Model::forward -> logits on the host.
#pragma once

#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/cache/kv_pool.h"
#include "macserve/models/model.h"
#include "macserve/scheduler/scheduler.h"

namespace macserve::engine {

class ModelRunner {
 public:
  ModelRunner(backend::Backend& backend, models::Model& model, cache::KvPool& kv)
      : backend_(backend), model_(model), kv_(kv) {}

  // Runs one step; returns host logits [number of sampled sequences, vocab] in batch order.
  const std::vector<float>& run(const SchedulerOutput& batch);
  // The explicit per-step inputs of a batch (public for tests).
  models::StepInputs prepare(const SchedulerOutput& batch) const;

 private:
  backend::Backend& backend_;
  models::Model& model_;
  cache::KvPool& kv_;
  std::vector<float> logits_;
};

}  // namespace macserve::engine
