// --mac-dump: one JSON line per decode step of the first request (arrival 1, completion 0): its
// position, and per layer and query head the decision (eligible, hit, matched position, distance)
// and the ring row the step wrote (q_pre, o, lse). Lets the algorithm be checked from outside.
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "macserve/core/dtype.h"
#include "macserve/runner/model_runner.h"

namespace macserve::engine {
namespace {

// Reads element i of a ring row stored as bf16 (u16) or f32.
float ring_value(const void* base, bool bf16, int64_t i) {
  return bf16 ? bf16_to_float(static_cast<const uint16_t*>(base)[i]) : static_cast<const float*>(base)[i];
}

nlohmann::json finite_or_null(float v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

void ModelRunner::dump_mac(const SchedulerOutput& batch, const models::StepInputs& in,
                           const models::MacStepOutputs& out) {
  const ModelConfig& c = model_.config();
  const int64_t S = in.num_seqs(), Hq = c.num_q_heads, D = c.head_dim, M = mac_.config.window;
  const bool host_rings = backend_.device() == Device::kCpu;
  for (int64_t s = 0; s < S; ++s) {
    const Sequence& seq = *batch.seqs[static_cast<std::size_t>(s)].seq;
    if (seq.arrival_order != 1 || seq.index != 0 || in.mac.modes[static_cast<std::size_t>(s)] != kernels::kMacDecode)
      continue;
    const int64_t m = in.context_lens[static_cast<std::size_t>(s)] - 1;
    nlohmann::json line = {{"request", seq.id}, {"step", dump_steps_++}, {"position", m},
                           {"ring_slot", seq.ring_slot}, {"ring_valid_from", seq.ring_valid_from}};
    nlohmann::json layers = nlohmann::json::array();
    for (int64_t l = 0; l < c.num_layers; ++l) {
      nlohmann::json heads = nlohmann::json::array();
      for (int64_t h = 0; h < Hq; ++h) {
        const kernels::MacHeadDecision& d = out.decisions[static_cast<std::size_t>((l * S + s) * Hq + h)];
        nlohmann::json head = {{"eligible", bool(d.eligible)}, {"hit", bool(d.hit)}, {"matched", d.matched},
                               {"distance", finite_or_null(d.distance)}};
        if (host_rings && seq.ring_slot >= 0) {
          const kernels::MacRing& ring = kv_.view().mac_rings[static_cast<std::size_t>(l)];
          const int64_t row = (seq.ring_slot * M + m % M) * Hq + h;
          const std::size_t esz = mac_.config.ring_bf16 ? 2 : 4;
          const char* qb = static_cast<const char*>(ring.q) + static_cast<std::size_t>(row * D) * esz;
          const char* ob = static_cast<const char*>(ring.o) + static_cast<std::size_t>(row * D) * esz;
          std::vector<float> q(static_cast<std::size_t>(D)), o(static_cast<std::size_t>(D));
          for (int64_t i = 0; i < D; ++i) {
            q[static_cast<std::size_t>(i)] = ring_value(qb, mac_.config.ring_bf16, i);
            o[static_cast<std::size_t>(i)] = ring_value(ob, mac_.config.ring_bf16, i);
          }
          head["row"] = {{"q_pre", q}, {"o", o}, {"lse", finite_or_null(ring.lse[row])}};
        }
        heads.push_back(std::move(head));
      }
      layers.push_back({{"layer", l}, {"heads", std::move(heads)},
                        {"kv_tokens_read", out.kv_tokens_read[static_cast<std::size_t>(l * S + s)]}});
    }
    line["layers"] = std::move(layers);
    const std::string text = line.dump() + "\n";
    std::fwrite(text.data(), 1, text.size(), dump_);
    std::fflush(dump_);
  }
}

}  // namespace macserve::engine
