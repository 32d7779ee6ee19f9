// Sequence: one completion's state inside the engine thread (never touched by front ends).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "macserve/request/request.h"
#include "macserve/request/stop_matcher.h"
#include "macserve/sampling/sampler.h"
#include "macserve/tokenizer/tokenizer.h"

namespace macserve::engine {

using Clock = std::chrono::steady_clock;

enum class SeqStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  Sequence(std::string request_id, int32_t index, std::vector<int32_t> prompt,
           sampling::SamplingParams p, std::shared_ptr<ResponseStream> out,
           const tokenizer::Tokenizer& tok, uint64_t fallback_seed)
      : id(std::move(request_id)),
        index(index),
        tokens(std::move(prompt)),
        prompt_len(static_cast<int64_t>(tokens.size())),
        params(std::move(p)),
        sampler(params, fallback_seed),
        stream(std::move(out)),
        detokenizer(tok, params.skip_special_tokens),  // params is initialised above
        stop(params.stop) {}

  int64_t total_len() const { return static_cast<int64_t>(tokens.size()); }
  // Whether a step computing `num_new_tokens` tokens of it now runs them as a MAC decode: one new
  // token after this admission's prefill, with a ring slot (else the row is exact).
  bool mac_decode_row(int64_t num_new_tokens) const {
    return ring_slot >= 0 && num_new_tokens == 1 && num_computed >= prefill_end;
  }
  int64_t num_generated() const { return total_len() - prompt_len; }
  bool is_prefill() const { return num_computed < prompt_len; }

  std::string id;
  int32_t index = 0;            // which of the request's n completions
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int64_t prompt_len = 0;
  sampling::SamplingParams params;
  sampling::RequestSampler sampler;
  std::shared_ptr<ResponseStream> stream;
  tokenizer::IncrementalDetokenizer detokenizer;
  StopMatcher stop;
  int32_t priority = 0;
  uint64_t arrival_order = 0;  // FCFS tie-break
  Clock::time_point deadline = Clock::time_point::max();
  Sequence* wait_for = nullptr;  // n > 1: siblings start once completion 0 has its prompt cached

  SeqStatus status = SeqStatus::kWaiting;
  std::vector<int32_t> block_table;
  int64_t num_computed = 0;       // tokens whose K/V are in the cache
  int64_t num_exact_kv = 0;       // leading ones of them that no MAC decode row computed
  int64_t num_sealed_blocks = 0;  // leading blocks registered in the prefix cache
  int64_t num_cached_prompt = 0;  // prompt tokens served by the prefix cache (first admission)
  int64_t num_preemptions = 0;

  // Async scheduling (the step after the one in flight is scheduled while the device runs it):
  // tokens that the step in flight will sample for this sequence (0 or 1), whether that token is
  // certainly its last (max_tokens or the model length), and sampled tokens whose text is still to
  // be detokenized and streamed (done while the next step runs on the device).
  int64_t num_pending = 0;
  bool pending_is_last = false;
  std::vector<sampling::SampleResult> unstreamed;

  // MAC-Attention (mac-attention.md Part A #5). A ring slot is taken from the pool at the first
  // step that computes a position >= ring_rows_from, and given back at finish or preemption.
  int32_t ring_slot = -1;       // request slot of every layer's ring, while held
  int64_t ring_valid_from = 0;  // first position whose ring row this sequence built with its slot
  int64_t ring_rows_from = -1;  // first position a decode of this admission can match; -1: none can
  bool ring_missed = false;     // needed a slot this admission and found none free (counted once)
  int64_t prefill_end = 0;      // total length at (re)admission: later steps are decodes
  MacUsage mac;                 // telemetry, accumulated over decode steps

  Clock::time_point arrival = Clock::now();
  Clock::time_point first_scheduled{};
  Clock::time_point first_token{};
};

}  // namespace macserve::engine
