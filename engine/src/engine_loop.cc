// The engine thread: inbox -> reap cancelled/expired -> schedule -> model step -> sample ->
// outputs, until shutdown.
#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "engine_impl.h"
#include "macserve/core/error.h"

namespace macserve::engine {
namespace {

bool contains(const std::vector<int32_t>& v, int32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

void EngineImpl::loop() {
  while (true) {
    {
      std::unique_lock lock(mu_);
      // With a step in flight there is no waiting: its results are due.
      if (!runner_->in_flight())
        cv_.wait_for(lock, std::chrono::milliseconds(50),
                     [&] { return stop_ || !inbox_.empty() || !live_.empty(); });
      if (stop_) break;
    }
    heartbeat_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    drain_inbox();
    stream_deferred();
    reap_cancelled_and_expired();
    if (live_.empty() && !runner_->in_flight()) last_step_end_ = {};  // idle: no gap to count
    if (!live_.empty() || runner_->in_flight()) {
      try {
        if (async_)
          async_step();
        else
          step();
      } catch (const std::exception& e) {
        // A failed step must not leave streams hanging: everyone in flight gets the error.
        spdlog::error("engine step failed: {}", e.what());
        drop_in_flight();
        for (auto& seq : live_) {
          if (seq->status == SeqStatus::kFinished) continue;
          scheduler_->remove(seq.get());
          fail(seq->stream, ErrorKind::kInternal, std::string("internal error: ") + e.what(),
               seq->prompt_len);
        }
        live_.clear();
        retired_.clear();
      }
    }
    publish_stats();
    heartbeat_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
  // Shutdown: the step in flight is dropped, every request still alive ends with reason abort.
  drop_in_flight();
  drain_inbox();
  stream_deferred();
  for (auto& seq : live_)
    if (seq->status != SeqStatus::kFinished)
      finish(*seq, FinishReason::kAbort, seq->stop.flush(), {});
  live_.clear();
  retired_.clear();
  publish_stats();
}

// Waits for the launched step (if any) and discards it: after a failed step, and at shutdown.
void EngineImpl::drop_in_flight() {
  if (runner_->in_flight()) {
    try {
      runner_->wait();
    } catch (const std::exception& e) {
      spdlog::error("engine step in flight failed: {}", e.what());
    }
  }
  in_flight_ = {};
}

void EngineImpl::publish_stats() {
  std::lock_guard lock(mu_);
  stats_.num_running = static_cast<int64_t>(scheduler_->running().size());
  stats_.num_waiting = static_cast<int64_t>(scheduler_->waiting().size());
  stats_.num_free_blocks = blocks_->num_free_blocks();
  stats_.num_blocks = blocks_->num_blocks();
  stats_.num_preemptions = scheduler_->num_preemptions();
  stats_.prefix_cache_queries = blocks_->stats().prefix_queries;
  stats_.prefix_cache_hits = blocks_->stats().prefix_hits;
  const MacTotals& mt = runner_->mac_totals();
  stats_.mac_layer_heads = mt.layer_heads;
  stats_.mac_layer_eligible = mt.layer_eligible;
  stats_.mac_layer_hits = mt.layer_hits;
  stats_.mac_layer_audit_rel_l2.resize(mt.layer_audit_err_sq.size());
  for (std::size_t l = 0; l < mt.layer_audit_err_sq.size(); ++l)
    stats_.mac_layer_audit_rel_l2[l] =
        mt.layer_audit_ref_sq[l] > 0
            ? std::sqrt(mt.layer_audit_err_sq[l] / mt.layer_audit_ref_sq[l])
            : 0.0;
  stats_.mac_audited_steps = mt.audited_steps;
  stats_.mac_audit_bucket_bounds.assign(std::begin(kMacAuditBuckets), std::end(kMacAuditBuckets));
  stats_.mac_audit_bucket_counts = mt.audit_step_buckets;
  stats_.mac_audit_sum = mt.audit_step_sum;
  stats_.mac_kv_bytes_read = mt.kv_bytes_read;
  stats_.mac_kv_bytes_full = mt.kv_bytes_full;
  stats_.mac_groups_all_hit = mt.groups_all_hit;
  stats_.mac_groups_mixed = mt.groups_mixed;
  stats_.mac_groups_all_miss = mt.groups_all_miss;
  stats_.mac_ring_bytes = kv().mac_ring_bytes() * (tp_ ? tp_->size() : 1);  // equal on each rank
  if (mac_state_ != nullptr) {
    stats_.mac_ring_slots = mac_state_->num_slots();
    stats_.mac_ring_slots_in_use = mac_state_->num_slots() - mac_state_->num_free();
  }
  stats_.mac_ring_slots_taken = scheduler_->ring_stats().taken;
  stats_.mac_ring_slot_misses = scheduler_->ring_stats().misses;
  num_queued_ = stats_.num_waiting + static_cast<int64_t>(inbox_.size());
}

void EngineImpl::drain_inbox() {
  std::vector<std::unique_ptr<Sequence>> incoming;
  {
    std::lock_guard lock(mu_);
    incoming.swap(inbox_);
  }
  for (auto& seq : incoming) {
    scheduler_->add(seq.get());
    live_.push_back(std::move(seq));
  }
}

void EngineImpl::reap_cancelled_and_expired() {
  const auto now = Clock::now();
  for (auto& seq : live_) {
    if (seq->stream->is_cancelled())
      finish(*seq, FinishReason::kAbort, {}, {});
    else if (now >= seq->deadline)
      finish(*seq, FinishReason::kAbort, seq->stop.flush(), {});
  }
  retire_finished();
}

void EngineImpl::retire_finished() {
  for (auto& seq : live_)
    if (seq->status == SeqStatus::kFinished) retired_.push_back(std::move(seq));
  std::erase_if(live_, [](const auto& s) { return s == nullptr; });
}

// Synchronous: schedule, run, sample, stream.
void EngineImpl::step() {
  const SchedulerOutput batch = scheduler_->schedule();
  retired_.clear();  // nothing refers to finished sequences any more
  if (batch.seqs.empty()) {
    last_step_end_ = {};
    return;
  }
  models::StepInputs in = prepare(batch);
  const auto t_launch = Clock::now();
  runner_->launch(batch, std::move(in), greedy_on_device(batch));
  launched(t_launch);
  const std::vector<float>& logits = runner_->wait();
  last_step_end_ = Clock::now();
  scheduler_->commit(batch);
  sample(batch, logits, false);
}

// Async scheduling, steady state (step N in flight on the device): schedule step N+1 and build its
// inputs (the loop has already streamed step N-1's text), then wait for step N, sample it, fill
// the sampled tokens into step N+1 and launch it. The device idles only from the end of step N to
// the launch of N+1: the logits copy, sampling and the input upload.
void EngineImpl::async_step() {
  SchedulerOutput next;
  models::StepInputs in;
  // Sequences retired before this schedule cannot be in `next`; the step in flight may still
  // point at them until it is sampled.
  const std::size_t unreferenced = retired_.size();
  if (!live_.empty()) next = scheduler_->schedule();
  if (!next.seqs.empty()) in = prepare(next);
  if (runner_->in_flight()) {
    const std::vector<float>& logits = runner_->wait();
    last_step_end_ = Clock::now();
    const SchedulerOutput done = std::move(in_flight_);
    in_flight_ = {};
    sample(done, logits, true);
  }
  retired_.erase(retired_.begin(), retired_.begin() + static_cast<std::ptrdiff_t>(unreferenced));
  if (next.seqs.empty()) {
    last_step_end_ = {};
    return;
  }
  ModelRunner::finalize(next, in);
  const auto t_launch = Clock::now();
  runner_->launch(next, std::move(in), greedy_on_device(next));
  launched(t_launch);
  scheduler_->commit(next);
  for (const ScheduledSeq& s : next.seqs) {
    if (!s.sample || s.seq->status == SeqStatus::kFinished) continue;
    Sequence& seq = *s.seq;
    seq.num_pending = 1;
    // Known now: this token will be the last (the scheduler gives the sequence no further step).
    seq.pending_is_last = at_length_limit(seq, 1);
  }
  in_flight_ = std::move(next);
}

// Stamps first scheduling times and builds the step's inputs.
models::StepInputs EngineImpl::prepare(const SchedulerOutput& batch) {
  const auto now = Clock::now();
  for (const ScheduledSeq& s : batch.seqs)
    if (s.seq->first_scheduled == Clock::time_point{}) s.seq->first_scheduled = now;
  return runner_->prepare(batch);
}

// Whether the sequence ends by length (max_tokens or the context length) once `more` further
// tokens are appended.
bool EngineImpl::at_length_limit(const Sequence& seq, int64_t more) const {
  return seq.num_generated() + more >= seq.params.max_tokens ||
         seq.total_len() + more >= max_model_len_;
}

void EngineImpl::launched(Clock::time_point launch_start) {
  const auto now = Clock::now();
  std::lock_guard lock(mu_);
  stats_.launch_seconds += seconds(launch_start, now);
  if (last_step_end_ == Clock::time_point{}) return;
  stats_.step_gap_seconds += seconds(last_step_end_, now);
  ++stats_.step_gaps;
  last_step_end_ = {};
}

// Whether every row of the step that will be sampled is plain greedy: then the argmax is taken on
// the device and only token ids come back (the same token the CPU sampler picks from the same
// logits). Decided at launch: a sequence's state does not change between its launch and sampling.
bool EngineImpl::greedy_on_device(const SchedulerOutput& batch) const {
  if (!device_greedy_) return false;
  for (const ScheduledSeq& s : batch.seqs) {
    if (!s.sample || s.seq->status == SeqStatus::kFinished) continue;
    const Sequence& seq = *s.seq;
    if (!seq.sampler.is_plain_argmax(seq.num_generated() < seq.params.min_tokens)) return false;
  }
  return true;
}

// Samples every row of `batch` that wants a token (rows of sequences finished meanwhile are
// skipped) and appends the tokens; with defer_text, the text of tokens that do not end their
// sequence is streamed by the next loop iteration, while the device runs the next step.
void EngineImpl::sample(const SchedulerOutput& batch, const std::vector<float>& logits,
                        bool defer_text) {
  const int64_t vocab = model().config().vocab_size;
  // Prompt tokens are counted once per completion when its prefill ends (cached ones included, as
  // vLLM counts them); recomputation after a preemption is not counted again.
  int64_t prompt_tokens = 0;
  int64_t row = 0;
  std::vector<std::pair<Sequence*, int64_t>> rows;  // (sequence, logits row)
  for (const ScheduledSeq& s : batch.seqs) {
    if (!s.sample) continue;
    Sequence& seq = *s.seq;
    const int64_t r = row++;
    seq.num_pending = 0;
    seq.pending_is_last = false;
    if (seq.status != SeqStatus::kFinished) rows.emplace_back(&seq, r);
  }
  // Rows are independent (each sequence has its own sampler and random stream), so they are
  // sampled in parallel: the device waits for this (a 128K-entry vocabulary is ~0.1 ms per greedy
  // row, far more with top-p), and the results do not depend on the thread count.
  const auto t_sample = Clock::now();
  std::vector<sampling::SampleResult> results(rows.size());
  const auto n = static_cast<int64_t>(rows.size());
  const int32_t* greedy = runner_->greedy_tokens();  // argmax taken on the device
  if (greedy != nullptr)
    for (std::size_t i = 0; i < rows.size(); ++i) results[i].token = greedy[rows[i].second];
#pragma omp parallel if (greedy == nullptr && n > 1 && n * vocab >= (int64_t{1} << 18))
  {
    std::vector<float> row_logits(static_cast<std::size_t>(vocab));
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < (greedy == nullptr ? n : 0); ++i) {
      Sequence& seq = *rows[static_cast<std::size_t>(i)].first;
      const int64_t r = rows[static_cast<std::size_t>(i)].second;
      std::copy(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab, row_logits.begin());
      const bool suppress_eos = seq.num_generated() < seq.params.min_tokens;
      const int32_t eos = seq.params.ignore_eos || eos_ids_.empty() ? -1 : eos_ids_[0];
      results[static_cast<std::size_t>(i)] =
          seq.sampler.sample(row_logits.data(), vocab, seq.tokens,
                             static_cast<std::size_t>(seq.prompt_len), suppress_eos, eos);
    }
  }
  const double sample_time = seconds(t_sample, Clock::now());
  // Counted before the tokens are streamed, so /metrics never lags what a client has received.
  for (const auto& row : rows)
    if (row.first->num_generated() == 0) prompt_tokens += row.first->prompt_len;
  {
    std::lock_guard lock(mu_);
    stats_.prompt_tokens += prompt_tokens;
    stats_.generation_tokens += n;
    stats_.sample_seconds += sample_time;
    ++stats_.num_steps;
  }
  for (std::size_t i = 0; i < rows.size(); ++i) on_token(*rows[i].first, results[i], defer_text);
  retire_finished();
}

// Appends a sampled token. Unless deferred, applies the stop rules and streams the new text now;
// a token that certainly ends the sequence (stop token, length) is never deferred.
void EngineImpl::on_token(Sequence& seq, const sampling::SampleResult& r, bool defer_text) {
  if (seq.num_generated() == 0) seq.first_token = Clock::now();
  seq.tokens.push_back(r.token);
  const bool min_reached = seq.num_generated() > seq.params.min_tokens;
  const bool stop_token = (!seq.params.ignore_eos && contains(eos_ids_, r.token)) ||
                          contains(seq.params.stop_token_ids, r.token);
  const bool ends = (stop_token && min_reached) || at_length_limit(seq, 0);
  if (defer_text && !ends) {
    seq.unstreamed.push_back(r);
    return;
  }
  emit(seq, r);
}

void EngineImpl::stream_deferred() {
  for (auto& seq : live_) {
    std::vector<sampling::SampleResult> pending = std::move(seq->unstreamed);
    seq->unstreamed.clear();
    for (const sampling::SampleResult& r : pending)
      if (seq->status != SeqStatus::kFinished) emit(*seq, r);
  }
  retire_finished();
}

// The stop rules for the token just appended (seq.tokens.back() == r.token), then the new text.
void EngineImpl::emit(Sequence& seq, const sampling::SampleResult& r) {
  std::vector<GeneratedToken> toks{{r.token, r.logprob, r.top}};
  const bool min_reached = seq.num_generated() > seq.params.min_tokens;
  const bool is_eos = !seq.params.ignore_eos && contains(eos_ids_, r.token);
  if ((is_eos || contains(seq.params.stop_token_ids, r.token)) && min_reached) {
    std::string text = seq.stop.push(seq.detokenizer.flush());
    finish(seq, FinishReason::kStop, text + seq.stop.flush(), std::move(toks));
    return;
  }
  std::string text = seq.stop.push(seq.detokenizer.push(r.token));
  if (seq.stop.stopped()) {
    finish(seq, FinishReason::kStop, std::move(text), std::move(toks));
    return;
  }
  if (at_length_limit(seq, 0)) {
    text += seq.stop.push(seq.detokenizer.flush());
    text += seq.stop.flush();
    finish(seq, FinishReason::kLength, std::move(text), std::move(toks));
    return;
  }
  RequestOutput out;
  out.index = seq.index;
  out.text = std::move(text);
  out.tokens = std::move(toks);
  out.prompt_tokens = seq.prompt_len;
  out.completion_tokens = seq.num_generated();
  seq.stream->push(std::move(out));
}

void EngineImpl::finish(Sequence& seq, FinishReason reason, std::string text,
                        std::vector<GeneratedToken> toks) {
  scheduler_->remove(&seq);
  const auto now = Clock::now();
  RequestOutput out;
  out.index = seq.index;
  out.text = std::move(text);
  out.tokens = std::move(toks);
  out.finished = true;
  out.finish_reason = reason;
  out.prompt_tokens = seq.prompt_len;
  out.completion_tokens = seq.num_generated();
  out.cached_prompt_tokens = seq.num_cached_prompt;
  out.num_preemptions = seq.num_preemptions;
  out.mac = seq.mac;
  const auto started = seq.first_scheduled == Clock::time_point{} ? now : seq.first_scheduled;
  out.queue_time = seconds(seq.arrival, started);
  out.time_to_first_token = seq.num_generated() == 0 ? 0.0 : seconds(seq.arrival, seq.first_token);
  out.total_time = seconds(seq.arrival, now);
  if (seq.num_generated() > 0) out.prefill_time = seconds(started, seq.first_token);
  if (seq.num_generated() > 1)
    out.time_per_output_token = seconds(seq.first_token, now) / double(seq.num_generated() - 1);
  seq.stream->push(std::move(out));
  std::lock_guard lock(mu_);
  ++stats_.num_requests_finished;
}

}  // namespace macserve::engine
