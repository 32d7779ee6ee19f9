// --mac-dump: one JSON line per decode step of the first request (arrival 1, completion 0): its
// position, and per layer and query head the decision (eligible, hit, matched position, distance)
// and the ring row the step wrote (q_pre, o, lse). Lets the algorithm be checked from outside.
#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "macserve/core/dtype.h"
#include "macserve/runner/model_runner.h"

namespace macserve::engine {
namespace {

// Elements [first, first + n) of a ring array (bf16 as u16, or f32) as floats, through the
// backend's copy (a synchronous one on a device: the dump is a debugging aid, run after the step).
std::vector<float> ring_values(backend::Backend& be, const void* base, bool bf16, int64_t first,
                               int64_t n) {
  void* p = const_cast<char*>(static_cast<const char*>(base)) +
            static_cast<std::size_t>(first) * (bf16 ? 2 : 4);
  std::vector<float> out(static_cast<std::size_t>(n));
  if (!bf16) {
    be.copy_to_host(Tensor(p, DType::kF32, {n}, be.device()), out.data());
    return out;
  }
  std::vector<uint16_t> raw(static_cast<std::size_t>(n));
  be.copy_to_host(Tensor(p, DType::kBF16, {n}, be.device()), raw.data());
  std::transform(raw.begin(), raw.end(), out.begin(), bf16_to_float);
  return out;
}

nlohmann::json finite_or_null(float v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

void ModelRunner::dump_mac(const SchedulerOutput& batch, const models::StepInputs& in,
                           const models::MacStepOutputs& out) {
  const ModelConfig& c = model_.config();
  const int64_t S = in.num_seqs(), Hq = c.num_q_heads, D = c.head_dim, M = mac_.config.window;
  for (int64_t s = 0; s < S; ++s) {
    const Sequence& seq = *batch.seqs[static_cast<std::size_t>(s)].seq;
    if (seq.arrival_order != 1 || seq.index != 0 ||
        in.mac.modes[static_cast<std::size_t>(s)] != kernels::kMacDecode)
      continue;
    const int64_t m = in.context_lens[static_cast<std::size_t>(s)] - 1;
    nlohmann::json line = {{"request", seq.id},
                           {"step", dump_steps_++},
                           {"position", m},
                           {"ring_slot", seq.ring_slot},
                           {"ring_valid_from", seq.ring_valid_from}};
    nlohmann::json layers = nlohmann::json::array();
    for (int64_t l = 0; l < c.num_layers; ++l) {
      // the step's ring row: Hq heads x D, contiguous in q and o, Hq values in lse
      std::vector<float> rq, ro, rlse;
      if (seq.ring_slot >= 0) {
        const kernels::MacRing& ring = kv_.view().mac_rings[static_cast<std::size_t>(l)];
        const int64_t row0 = (seq.ring_slot * M + m % M) * Hq;
        const bool bf16 = mac_.config.ring_bf16;
        rq = ring_values(backend_, ring.q, bf16, row0 * D, Hq * D);
        ro = ring_values(backend_, ring.o, bf16, row0 * D, Hq * D);
        rlse = ring_values(backend_, ring.lse, false, row0, Hq);
      }
      nlohmann::json heads = nlohmann::json::array();
      for (int64_t h = 0; h < Hq; ++h) {
        const kernels::MacHeadDecision& d =
            out.decisions[static_cast<std::size_t>((l * S + s) * Hq + h)];
        nlohmann::json head = {{"eligible", bool(d.eligible)},
                               {"hit", bool(d.hit)},
                               {"matched", d.matched},
                               {"distance", finite_or_null(d.distance)}};
        if (seq.ring_slot >= 0) {
          const auto at = static_cast<std::ptrdiff_t>(h * D);
          head["row"] = {{"q_pre", std::vector<float>(rq.begin() + at, rq.begin() + at + D)},
                         {"o", std::vector<float>(ro.begin() + at, ro.begin() + at + D)},
                         {"lse", finite_or_null(rlse[static_cast<std::size_t>(h)])}};
        }
        heads.push_back(std::move(head));
      }
      layers.push_back(
          {{"layer", l},
           {"heads", std::move(heads)},
           {"kv_tokens_read", out.kv_tokens_read[static_cast<std::size_t>(l * S + s)]}});
    }
    line["layers"] = std::move(layers);
    const std::string text = line.dump() + "\n";
    std::fwrite(text.data(), 1, text.size(), dump_);
    std::fflush(dump_);
  }
}

}  // namespace macserve::engine
