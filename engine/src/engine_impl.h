// EngineImpl: owns the model, KV pool, block manager, scheduler and the engine thread. Front ends
// talk to it only through submit() (a locked inbox) and ResponseStream.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "macserve/engine/engine.h"
#include "macserve/runner/model_runner.h"

namespace macserve::engine {

inline double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

class EngineImpl final : public Engine {
 public:
  explicit EngineImpl(const EngineConfig& cfg);
  ~EngineImpl() override { shutdown(); }

  std::shared_ptr<ResponseStream> submit(Request request) override;
  std::vector<std::shared_ptr<ResponseStream>> submit_batch(std::vector<Request> requests) override;
  const tokenizer::Tokenizer& tokenizer() const override { return *tokenizer_; }
  const ModelConfig& model_config() const override { return model().config(); }
  int64_t max_model_len() const override { return max_model_len_; }
  EngineStats stats() const override;
  std::string device_name() const override { return be().name(); }
  int64_t weight_bytes() const override;
  void shutdown() override;
  double seconds_since_progress() const override;

 private:
  // The device, model and KV pool the engine thread drives: its own, or tensor parallel rank 0's.
  backend::Backend& be() const { return tp_ ? *tp_->rank(0).backend : *backend_; }
  models::Model& model() const { return tp_ ? *tp_->rank(0).model : *model_; }
  cache::KvPool& kv() const { return tp_ ? *tp_->rank(0).kv : *kv_; }
  // The shapes one rank runs (models::shard_config; the model's own without tensor parallelism).
  ModelConfig rank_config() const;
  void start_tensor_parallel();

  // Construction steps (engine.cc), in order after the device is chosen.
  std::string load_model();
  void build_components(const MacRunnerOptions& mac);
  void log_ready(const std::string& path, const MacRunnerOptions& mac, Clock::time_point t0) const;

  void loop();
  void drain_inbox();
  void reap_cancelled_and_expired();
  void step();
  void async_step();
  void sample(const SchedulerOutput& batch, const std::vector<float>& logits, bool defer_text);
  void on_token(Sequence& seq, const sampling::SampleResult& r, bool defer_text);
  void emit(Sequence& seq, const sampling::SampleResult& r);
  void stream_deferred();
  void retire_finished();
  void drop_in_flight();
  models::StepInputs prepare(const SchedulerOutput& batch);
  bool at_length_limit(const Sequence& seq, int64_t more) const;
  void finish(Sequence& seq, FinishReason reason, std::string text,
              std::vector<GeneratedToken> toks);
  void fail(const std::shared_ptr<ResponseStream>& s, ErrorKind kind, const std::string& why,
            int64_t prompt_tokens);
  void publish_stats();

  EngineConfig cfg_;
  // --tensor-parallel-size > 1: the ranks own backend, model and KV pool (backend_, model_ and kv_
  // stay empty); declared first, so that it goes last.
  std::unique_ptr<TensorParallel> tp_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<models::Model> model_;
  std::unique_ptr<cache::KvPool> kv_;
  std::unique_ptr<cache::BlockManager> blocks_;
  std::unique_ptr<cache::MacState> mac_state_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ModelRunner> runner_;
  std::vector<int32_t> eos_ids_;
  int64_t max_model_len_ = 0;
  bool async_ = false;          // --async-scheduling
  bool device_greedy_ = false;  // --device-sampling
  bool greedy_on_device(const SchedulerOutput& batch) const;

  // Engine-thread state.
  std::vector<std::unique_ptr<Sequence>> live_;
  // Finished sequences, kept while a scheduled or launched step may still point at them.
  std::vector<std::unique_ptr<Sequence>> retired_;
  SchedulerOutput in_flight_;  // async scheduling: the launched step, sampled next iteration
  Clock::time_point last_step_end_{};  // when the last step's logits reached the host (none: idle)
  void launched(
      Clock::time_point launch_start);  // accounts launch time and the gap since last_step_end_

  // Shared with front ends.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  bool stop_ = false;
  uint64_t num_submitted_ = 0;
  int64_t num_queued_ = 0;  // sequences submitted and not yet running or finished
  mutable EngineStats stats_;
  std::atomic<Clock::rep> heartbeat_{Clock::now().time_since_epoch().count()};
  std::thread thread_;
};

}  // namespace macserve::engine
