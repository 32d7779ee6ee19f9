// ModelRunner: a scheduled batch -> StepInputs -> Model::forward -> logits on the host.
#pragma once

#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/cache/kv_pool.h"
#include "macserve/models/model.h"
#include "scheduler.h"

namespace macserve::engine {

class ModelRunner {
 public:
  ModelRunner(backend::Backend& backend, models::Model& model, cache::KvPool& kv)
      : backend_(backend), model_(model), kv_(kv) {}

  // Runs one step; returns host logits [num sampled sequences, vocab] in batch order.
  const std::vector<float>& run(const std::vector<ScheduledSeq>& batch);

 private:
  models::StepInputs prepare(const std::vector<ScheduledSeq>& batch) const;

  backend::Backend& backend_;
  models::Model& model_;
  cache::KvPool& kv_;
  std::vector<float> logits_;
};

}  // namespace macserve::engine
