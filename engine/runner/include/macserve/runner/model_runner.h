// ModelRunner: a scheduled batch -> StepInputs (tokens, positions, slot mapping, block tables,
// context lengths, MAC per-request state) -> copy-on-write block copies -> Model::forward ->
// logits on the host; with MAC on, it also folds the step's decisions into telemetry. A step can
// be launched and waited for separately, so the host prepares the next step meanwhile.
#pragma once

#include <iterator>

#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/cache/kv_pool.h"
#include "macserve/models/model.h"
#include "macserve/runner/tensor_parallel.h"
#include "macserve/scheduler/scheduler.h"

namespace macserve::engine {

struct MacRunnerOptions {
  bool enabled = false;  // --attention mac
  kernels::MacConfig config;
  double audit_rate = 0.0;  // fraction of steps re-run with exact attention
  uint64_t audit_seed = 0;
  std::string dump_path;  // JSON lines of the first request's decisions and ring rows
};

// Upper bounds of the audit error histogram (relative L2 of one audited step over all layers);
// a last bucket holds everything above.
inline constexpr double kMacAuditBuckets[] = {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0};

// Engine-wide MAC telemetry (per layer and in total).
struct MacTotals {
  std::vector<int64_t> layer_heads, layer_eligible, layer_hits;
  std::vector<double> layer_audit_err_sq, layer_audit_ref_sq;
  int64_t audited_steps = 0;
  // Per audited step: sqrt(sum over layers of err^2 / sum of ref^2), bucketed (non-cumulative
  // counts, std::size(kMacAuditBuckets) + 1 entries) and summed.
  std::vector<int64_t> audit_step_buckets =
      std::vector<int64_t>(std::size(kMacAuditBuckets) + 1, 0);
  double audit_step_sum = 0.0;
  int64_t kv_bytes_read = 0, kv_bytes_full = 0;
  int64_t groups_all_hit = 0, groups_mixed = 0, groups_all_miss = 0;
};

class ModelRunner {
 public:
  // With `tp`, backend, model and kv are its rank 0's: every step runs on all its ranks (their
  // workers), the logits (gathered, the same on every rank) are rank 0's, and the MAC telemetry of
  // the ranks' heads is put back together in the whole model's head order.
  ModelRunner(backend::Backend& backend, models::Model& model, cache::KvPool& kv,
              MacRunnerOptions mac = {}, TensorParallel* tp = nullptr);
  ~ModelRunner();

  // Runs one step (launch + wait); returns host logits [number of sampled sequences, vocab] in
  // batch order.
  const std::vector<float>& run(const SchedulerOutput& batch);

  // The same in phases, for async scheduling (host work of step N+1 while the device runs step N):
  // prepare() builds the explicit per-step inputs of a batch on the host; tokens the step in flight
  // has yet to sample (Sequence::num_pending) are left as -1. finalize() fills them in once sampled
  // and neutralises the rows of sequences that finished meanwhile (no K/V or ring write, logits
  // ignored). launch() enqueues copy-on-write copies, the forward and the logits copy, and returns;
  // on a synchronous backend (CPU) the work is done when it returns. wait() returns the logits.
  models::StepInputs prepare(const SchedulerOutput& batch) const;
  static void finalize(const SchedulerOutput& batch, models::StepInputs& in);
  // With greedy_on_device, the backend takes each logits row's argmax and only the token ids come
  // back (greedy_tokens() after wait()); the logits stay on the device.
  void launch(const SchedulerOutput& batch, models::StepInputs in, bool greedy_on_device = false);
  const std::vector<float>& wait();
  // The sampled rows' greedy tokens of the step just waited for, or nullptr (logits step).
  const int32_t* greedy_tokens() const { return greedy_step_ ? greedy_host_ : nullptr; }
  bool in_flight() const { return in_flight_; }
  const MacTotals& mac_totals() const { return totals_; }

 private:
  // After a forward: the logits (or, greedy on the device, their argmax) on their way to the host.
  void fetch_logits(const Tensor& logits, bool greedy_on_device);
  // Tensor parallel: the step of in_ and batch_ on every rank, and its MAC telemetry merged.
  void post_ranks();
  void merge_rank_mac_outputs();
  void account_mac(const SchedulerOutput& batch, const models::StepInputs& in,
                   const models::MacStepOutputs& out);
  void dump_mac(const SchedulerOutput& batch, const models::StepInputs& in,
                const models::MacStepOutputs& out);

  backend::Backend& backend_;
  models::Model& model_;
  cache::KvPool& kv_;
  TensorParallel* tp_ = nullptr;
  MacRunnerOptions mac_;
  std::mt19937_64 audit_rng_;
  MacTotals totals_;
  std::FILE* dump_ = nullptr;
  int64_t dump_steps_ = 0;
  void reserve_logits(std::size_t n);
  void release_greedy_host();

  std::vector<float> logits_;
  float* logits_pinned_ = nullptr;  // logits_.data() while page-locked by the backend
  // Device greedy sampling: ids on the device, and a page-locked host copy (page-aligned, so that
  // registering it never overlaps another registered buffer's pages).
  Tensor greedy_dev_;
  int32_t* greedy_host_ = nullptr;
  int64_t greedy_capacity_ = 0;
  bool greedy_step_ = false;
  bool greedy_requested_ = false;  // tensor parallel: launch()'s greedy_on_device, for wait()
  // The step in flight between launch() and wait().
  bool in_flight_ = false;
  SchedulerOutput batch_;
  models::StepInputs in_;
  models::MacStepOutputs mac_out_;
};

}  // namespace macserve::engine
