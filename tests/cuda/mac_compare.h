// Comparison of MAC decisions between two runs of the same step (GPU vs the CPU oracle, or batched
// vs alone): per (layer, decode row, head), with mismatches classified as near-ties from the rings.
//
// A flipped decision is a near-tie when (1) one side's best distance lies within eps x threshold of
// the threshold (hit/miss flip), or (2) the row one side matched is, by the other side's own
// numbers, within eps x threshold of that side's best distance (candidate flip, also a hit demoted
// by the sink on one side only). eps is set from the data: 3 x the 99th percentile of |d_a - d_b| /
// max(d_b, threshold) over heads whose decisions agree (the distance noise of the two numeric
// paths), clamped to [eps_min, 0.3]. The noise itself is reported and bounded by the caller.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend_harness.h"
#include "cuda_test_util.h"

namespace macserve::testing {

// A decode row of a step: its index in the step, its ring slot, and its position m.
struct DecodeRow {
  int64_t row, slot, pos;
};

struct DecisionStats {
  int64_t eligible = 0, hits_a = 0, hits_b = 0, agree = 0, eligibility_mismatches = 0;
  std::vector<double> noise;        // agreeing heads: |d_a - d_b| / max(d_b, thr)
  std::vector<double> flip_margin;  // flipped heads: smallest margin / thr (near-tie when <= eps)
  std::vector<std::string> flips;   // description of each flip
  std::vector<int64_t> layer_hits_a, layer_hits_b, layer_eligible;

  double eps(double eps_min) const {
    if (noise.empty()) return eps_min;
    std::vector<double> v = noise;
    std::sort(v.begin(), v.end());
    const double p99 =
        v[std::min(v.size() - 1, static_cast<std::size_t>(0.99 * static_cast<double>(v.size())))];
    return std::clamp(3.0 * p99, eps_min, 0.3);
  }
  double noise_p99() const {
    if (noise.empty()) return 0.0;
    std::vector<double> v = noise;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1,
                      static_cast<std::size_t>(0.99 * static_cast<double>(v.size())))];
  }
  int64_t near_ties(double eps) const {
    return std::count_if(flip_margin.begin(), flip_margin.end(),
                         [&](double m) { return m <= eps; });
  }
  int64_t mismatches(double eps) const {
    return static_cast<int64_t>(flip_margin.size()) - near_ties(eps);
  }
};

// Host copy of one layer's ring q rows as floats.
inline std::vector<float> ring_q_rows(BackendHarness& h, int64_t layer, bool bf16) {
  const ModelConfig& c = h.config();
  const kernels::MacRing& ring = h.kv().mac_rings.at(static_cast<std::size_t>(layer));
  const int64_t rows = ring.num_slots * h.ring_window() * c.num_q_heads;
  Tensor t(ring.q, bf16 ? DType::kBF16 : DType::kF32, {rows * c.head_dim}, h.backend().device());
  return to_host(h.backend(), t);
}

// Squared L2 between ring rows (slot, x, h) and (slot, m, h) of a host ring copy.
inline double ring_dist(const std::vector<float>& q, int64_t window, int64_t hq, int64_t d,
                        int64_t slot, int64_t x, int64_t m, int64_t h) {
  const int64_t a = ((slot * window + x % window) * hq + h) * d,
                b = ((slot * window + m % window) * hq + h) * d;
  double s = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double df = static_cast<double>(q[b + i]) - q[a + i];
    s += df * df;
  }
  return s;
}

// Adds the decisions of the last step of `a` and `b` (same inputs) for the given decode rows.
inline void compare_decisions(BackendHarness& a, BackendHarness& b, int64_t num_seqs_in_step,
                              const std::vector<DecodeRow>& rows, const kernels::MacConfig& cfg,
                              int step, DecisionStats& st) {
  const ModelConfig& c = a.config();
  const int64_t L = c.num_layers, Hq = c.num_q_heads, D = c.head_dim, S = num_seqs_in_step;
  const double t = std::clamp(static_cast<double>(cfg.threshold), 0.0, 1.0);
  const double thr = 2.0 * static_cast<double>(D) * (1.0 - t) * (1.0 - t);
  const auto& da = a.mac_outputs().decisions;
  const auto& db = b.mac_outputs().decisions;
  st.layer_hits_a.resize(static_cast<std::size_t>(L)),
      st.layer_hits_b.resize(static_cast<std::size_t>(L));
  st.layer_eligible.resize(static_cast<std::size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    std::vector<float> ra, rb;  // rings, fetched on the first flip of the layer
    for (const DecodeRow& r : rows) {
      for (int64_t h = 0; h < Hq; ++h) {
        const kernels::MacHeadDecision x = da[static_cast<std::size_t>((l * S + r.row) * Hq + h)];
        const kernels::MacHeadDecision y = db[static_cast<std::size_t>((l * S + r.row) * Hq + h)];
        if (x.eligible != y.eligible) ++st.eligibility_mismatches;
        if (!x.eligible || !y.eligible) continue;
        ++st.eligible;
        ++st.layer_eligible[static_cast<std::size_t>(l)];
        st.hits_a += x.hit, st.hits_b += y.hit;
        st.layer_hits_a[static_cast<std::size_t>(l)] += x.hit,
            st.layer_hits_b[static_cast<std::size_t>(l)] += y.hit;
        const bool agree = x.hit == y.hit && (!x.hit || x.matched == y.matched);
        if (agree) {
          ++st.agree;
          if (std::isfinite(x.distance) && std::isfinite(y.distance))
            st.noise.push_back(std::fabs(double(x.distance) - y.distance) /
                               std::max<double>(y.distance, thr));
          continue;
        }
        if (ra.empty())
          ra = ring_q_rows(a, l, cfg.ring_bf16), rb = ring_q_rows(b, l, cfg.ring_bf16);
        double margin =
            std::min(std::fabs(double(x.distance) - thr), std::fabs(double(y.distance) - thr));
        if (x.hit)  // b's distance to a's row vs b's best
          margin = std::min(
              margin, std::fabs(ring_dist(rb, cfg.window, Hq, D, r.slot, x.matched, r.pos, h) -
                                y.distance));
        if (y.hit)
          margin = std::min(
              margin, std::fabs(ring_dist(ra, cfg.window, Hq, D, r.slot, y.matched, r.pos, h) -
                                x.distance));
        st.flip_margin.push_back(margin / thr);
        char buf[200];
        std::snprintf(
            buf, sizeof(buf),
            "step %d layer %lld row %lld head %lld pos %lld: a hit %d at %d d %.4g, b hit %d at %d "
            "d %.4g, thr %.4g, margin %.3g thr",
            step, (long long)l, (long long)r.row, (long long)h, (long long)r.pos, x.hit, x.matched,
            x.distance, y.hit, y.matched, y.distance, thr, margin / thr);
        st.flips.emplace_back(buf);
      }
    }
  }
}

inline int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

inline float top2_margin(const std::vector<float>& l) {
  float a = -INFINITY, b = -INFINITY;
  for (float x : l) {
    if (x > a)
      b = a, a = x;
    else if (x > b)
      b = x;
  }
  return a - b;
}

}  // namespace macserve::testing
