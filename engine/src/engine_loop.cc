// The engine thread: inbox -> schedule -> model step -> sample -> outputs, until shutdown.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "engine_impl.h"
#include "macserve/core/error.h"

namespace macserve::engine {
namespace {

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

void EngineImpl::loop() {
  while (true) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(50), [&] {
        return stop_ || !inbox_.empty() || !live_.empty();
      });
      if (stop_) break;
    }
    drain_inbox();
    reap_cancelled();
    if (!live_.empty()) {
      try {
        step();
      } catch (const std::exception& e) {
        // A failed step must not take other requests' streams down silently: fail everyone in it.
        spdlog::error("engine step failed: {}", e.what());
        for (auto& seq : live_) {
          scheduler_->remove(seq.get());
          fail(seq->stream, std::string("internal error: ") + e.what(), static_cast<int64_t>(seq->prompt.size()));
        }
        live_.clear();
      }
    }
    std::lock_guard lock(mu_);
    stats_.num_running = static_cast<int64_t>(scheduler_->running().size());
    stats_.num_waiting = static_cast<int64_t>(scheduler_->waiting().size());
    stats_.num_free_blocks = blocks_->num_free_blocks();
    stats_.num_blocks = blocks_->num_blocks();
    stats_.num_preemptions = scheduler_->num_preemptions();
  }
  // Shutdown: every request still alive ends with reason abort.
  drain_inbox();
  for (auto& seq : live_) finish(*seq, FinishReason::kAbort, seq->stop.flush(), {});
  live_.clear();
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

void EngineImpl::reap_cancelled() {
  for (auto& seq : live_)
    if (seq->stream->is_cancelled()) finish(*seq, FinishReason::kAbort, {}, {});
  std::erase_if(live_, [](const auto& s) { return s->status == SeqStatus::kFinished; });
}

void EngineImpl::step() {
  const std::vector<ScheduledSeq> batch = scheduler_->schedule();
  if (batch.empty()) return;
  const auto now = Clock::now();
  int64_t prompt_tokens = 0;
  for (const ScheduledSeq& s : batch) {
    if (s.seq->first_scheduled == Clock::time_point{}) s.seq->first_scheduled = now;
    if (s.seq->num_computed < static_cast<int64_t>(s.seq->prompt.size())) prompt_tokens += s.num_new_tokens;
  }
  const std::vector<float>& logits = runner_->run(batch);
  const int64_t vocab = model_->config().vocab_size;
  int64_t row = 0;
  int64_t generated = 0;
  for (const ScheduledSeq& s : batch) {
    Sequence& seq = *s.seq;
    seq.num_computed += s.num_new_tokens;
    if (!s.sample) continue;
    std::vector<float> l(logits.begin() + row * vocab, logits.begin() + (row + 1) * vocab);
    ++row;
    const bool suppress_eos = static_cast<int32_t>(seq.generated.size()) < seq.params.min_tokens;
    const int32_t eos = seq.params.ignore_eos || eos_ids_.empty() ? -1 : eos_ids_[0];
    const sampling::SampleResult r = seq.sampler.sample(l.data(), vocab, seq.prompt, seq.generated, suppress_eos, eos);
    on_token(seq, r);
    ++generated;
  }
  std::erase_if(live_, [](const auto& sq) { return sq->status == SeqStatus::kFinished; });
  std::lock_guard lock(mu_);
  stats_.prompt_tokens += prompt_tokens;
  stats_.generation_tokens += generated;
  ++stats_.num_steps;
}

// Appends a sampled token, applies the stop rules, and streams the new text.
void EngineImpl::on_token(Sequence& seq, const sampling::SampleResult& r) {
  if (seq.generated.empty()) seq.first_token = Clock::now();
  seq.generated.push_back(r.token);
  std::vector<GeneratedToken> toks{{r.token, r.logprob, r.top}};
  const bool is_eos = !seq.params.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), r.token) != eos_ids_.end();
  const bool is_stop_id =
      std::find(seq.params.stop_token_ids.begin(), seq.params.stop_token_ids.end(), r.token) != seq.params.stop_token_ids.end();
  const bool min_reached = static_cast<int32_t>(seq.generated.size()) > seq.params.min_tokens;
  if ((is_eos || is_stop_id) && min_reached) {
    finish(seq, FinishReason::kStop, seq.stop.flush() + seq.stop.push(seq.detokenizer.flush()), std::move(toks));
    return;
  }
  std::string text = seq.stop.push(seq.detokenizer.push(r.token));
  if (seq.stop.stopped() && min_reached) {
    finish(seq, FinishReason::kStop, std::move(text), std::move(toks));
    return;
  }
  if (static_cast<int32_t>(seq.generated.size()) >= seq.params.max_tokens || seq.total_len() >= max_model_len_) {
    text += seq.stop.push(seq.detokenizer.flush());
    text += seq.stop.flush();
    finish(seq, FinishReason::kLength, std::move(text), std::move(toks));
    return;
  }
  RequestOutput out;
  out.text = std::move(text);
  out.tokens = std::move(toks);
  out.prompt_tokens = static_cast<int64_t>(seq.prompt.size());
  out.completion_tokens = static_cast<int64_t>(seq.generated.size());
  seq.stream->push(std::move(out));
}

void EngineImpl::finish(Sequence& seq, FinishReason reason, std::string text, std::vector<GeneratedToken> toks) {
  scheduler_->remove(&seq);
  const auto now = Clock::now();
  RequestOutput out;
  out.text = std::move(text);
  out.tokens = std::move(toks);
  out.finished = true;
  out.finish_reason = reason;
  out.prompt_tokens = static_cast<int64_t>(seq.prompt.size());
  out.completion_tokens = static_cast<int64_t>(seq.generated.size());
  const auto started = seq.first_scheduled == Clock::time_point{} ? now : seq.first_scheduled;
  out.queue_time = seconds(seq.arrival, started);
  out.time_to_first_token = seq.generated.empty() ? 0.0 : seconds(seq.arrival, seq.first_token);
  out.total_time = seconds(seq.arrival, now);
  seq.stream->push(std::move(out));
}

}  // namespace macserve::engine
