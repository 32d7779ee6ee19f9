#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <cmath>
#include <cstdlib>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "macserve/core/error.h"
#include "macserve/engine/engine.h"
#include "engine_impl.h"

namespace macserve::engine {
namespace {

// EOS ids: the tokenizer's, the config's, and generation_config.json's (which may list several).
std::vector<int32_t> collect_eos(const std::string& model_path, const ModelConfig& cfg,
                                 const tokenizer::Tokenizer& tok) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(static_cast<int32_t>(id));
  };
  add(tok.eos_id());
  add(cfg.eos_token_id);
  const auto gen = std::filesystem::path(model_path) / "generation_config.json";
  std::ifstream f(gen);
  if (f) {
    const auto j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("eos_token_id")) {
      const auto& e = j["eos_token_id"];
      if (e.is_number_integer()) add(e.get<int64_t>());
      if (e.is_array())
        for (const auto& v : e) if (v.is_number_integer()) add(v.get<int64_t>());
    }
  }
  return ids;
}

// Validates the MAC flags and turns them into runner options.
MacRunnerOptions mac_options(const EngineConfig& cfg) {
  MacRunnerOptions m;
  if (cfg.attention != "mac" && cfg.attention != "full")
    throw_error(ErrorCode::kInvalidArgument, "--attention must be mac or full, got '{}'", cfg.attention);
  m.enabled = cfg.attention == "mac";
  if (!std::isfinite(cfg.mac_threshold))
    throw_error(ErrorCode::kInvalidArgument, "--mac-threshold must be a number");
  if (cfg.mac_window < 1 || cfg.mac_window > (1 << 20))
    throw_error(ErrorCode::kInvalidArgument, "--mac-window must be in [1, 1048576], got {}", cfg.mac_window);
  if (cfg.mac_band < 1) throw_error(ErrorCode::kInvalidArgument, "--mac-band must be at least 1, got {}", cfg.mac_band);
  if (cfg.mac_min_context < 0 || cfg.mac_sink_tokens < 0)
    throw_error(ErrorCode::kInvalidArgument, "--mac-min-context and --mac-sink-tokens must not be negative");
  if (cfg.mac_ring_dtype != "bf16" && cfg.mac_ring_dtype != "fp32")
    throw_error(ErrorCode::kInvalidArgument, "--mac-ring-dtype must be bf16 or fp32, got '{}'", cfg.mac_ring_dtype);
  if (!(cfg.mac_audit_rate >= 0.0 && cfg.mac_audit_rate <= 1.0))
    throw_error(ErrorCode::kInvalidArgument, "--mac-audit-rate must be in [0, 1]");
  m.config.threshold = std::min(1.0f, std::max(0.0f, cfg.mac_threshold));  // t is clamped (Part A #1)
  m.config.window = cfg.mac_window;
  m.config.band = cfg.mac_band;
  m.config.gen_min = cfg.mac_min_context;
  m.config.sink = cfg.mac_sink_tokens;
  m.config.ring_bf16 = cfg.mac_ring_dtype == "bf16";
  m.audit_rate = cfg.mac_audit_rate;
  m.audit_seed = cfg.default_seed;
  m.dump_path = cfg.mac_dump;
  return m;
}

// An auto|on|off option: auto means `if_auto`.
bool auto_on_off(const char* flag, const std::string& value, bool if_auto) {
  if (value == "auto") return if_auto;
  if (value != "on" && value != "off")
    throw_error(ErrorCode::kInvalidArgument, "{} must be auto, on or off, got '{}'", flag, value);
  return value == "on";
}

}  // namespace

EngineImpl::EngineImpl(const EngineConfig& cfg) : cfg_(cfg) {
  if (cfg.device == "cuda") {
    std::string why;
    backend_ = backend::make_cuda_backend(&why);
    if (!backend_) throw_error(ErrorCode::kUnsupported, "--device cuda: {}", why);
  } else if (cfg.device == "cpu" || cfg.device == "auto") {
    backend_ = backend::make_cpu_backend();
  } else {
    throw_error(ErrorCode::kInvalidArgument, "unknown device '{}' (cpu|cuda|auto)", cfg.device);
  }
  const auto t0 = Clock::now();
  if (cfg.load_format == "dummy" && cfg.tokenizer_path.empty() &&
      !std::filesystem::exists(std::filesystem::path(cfg.model_path) / "tokenizer.json") &&
      !std::filesystem::exists(std::filesystem::path(cfg.model_path) / "tokenizer.model"))  // before GBs of weights
    throw_error(ErrorCode::kInvalidArgument, "--load-format dummy: {} has no tokenizer.json or tokenizer.model; "
                "pass --tokenizer DIR", cfg.model_path);
  models::Checkpoint ckpt = models::load_checkpoint(cfg.model_path, models::parse_load_format(cfg.load_format),
                                                    cfg.dummy_seed);
  const std::string model_dir = std::filesystem::is_directory(ckpt.path)
                                    ? ckpt.path
                                    : std::filesystem::path(ckpt.path).parent_path().string();
  if (!cfg.tokenizer_path.empty()) tokenizer_ = tokenizer::load_tokenizer(cfg.tokenizer_path);
  else if (ckpt.gguf_vocab) tokenizer_ = tokenizer::tokenizer_from_vocab(*ckpt.gguf_vocab);
  else tokenizer_ = tokenizer::load_tokenizer(model_dir);
  const std::string path = ckpt.path;
  model_ = models::create_model(std::move(ckpt), *backend_);
  const ModelConfig& mc = model_->config();
  if (tokenizer_->vocab_size() > mc.vocab_size)
    throw_error(ErrorCode::kInvalidModel, "{}: tokenizer has {} tokens but the model's vocabulary is {}", path,
                tokenizer_->vocab_size(), mc.vocab_size);
  eos_ids_ = collect_eos(path, mc, *tokenizer_);
  max_model_len_ = cfg.max_model_len > 0 ? std::min(cfg.max_model_len, mc.max_position_embeddings)
                                         : mc.max_position_embeddings;
  const MacRunnerOptions mac = mac_options(cfg);
  if (mac.enabled) {  // shapes the backend's MAC kernels cannot run: say so now, not at the first step
    const std::string why = backend_->mac_unsupported(mc.head_dim, mc.num_q_heads / mc.num_kv_heads, cfg.block_size);
    if (!why.empty()) throw_error(ErrorCode::kUnsupported, "--attention mac on --device {}: {}", backend_->name(), why);
  }
  cache::MacRingSpec ring_spec;
  if (mac.enabled) ring_spec = {cfg.max_num_seqs, mac.config.window, mac.config.ring_bf16};
  const int64_t ring_bytes = ring_spec.num_slots * cache::KvPool::mac_ring_bytes_per_slot(mc, ring_spec);
  if (!(cfg.gpu_memory_utilization > 0.0 && cfg.gpu_memory_utilization <= 1.0))
    throw_error(ErrorCode::kInvalidArgument, "--gpu-memory-utilization must be in (0, 1], got {}",
                cfg.gpu_memory_utilization);
  const int64_t kv_token_bytes =
      cache::KvPool::bytes_per_token(mc, static_cast<int64_t>(dtype_size(backend_->kv_dtype())));
  int64_t kv_tokens = cfg.kv_cache_tokens;
  if (kv_tokens <= 0) {
    // Default: every sequence at full length, within 1 GiB for KV and MAC rings together (CPU), or
    // (GPU) within --gpu-memory-utilization of the device's total memory, less what is in use now
    // (weights, workspaces, other processes) and a reserve for the step's activations and logits.
    int64_t budget = std::max<int64_t>((int64_t{1} << 30) - ring_bytes, 0);
    if (const int64_t free = backend_->free_memory_bytes(); free >= 0) {
      const int64_t total = backend_->total_memory_bytes();
      const int64_t reserve = cfg.max_num_batched_tokens * (6 * mc.hidden_size + 6 * mc.intermediate_size) * 4 +
                              cfg.max_num_seqs * mc.vocab_size * 4 * 2 + (int64_t{512} << 20);
      const int64_t used = total - free;
      budget = std::max<int64_t>(
          static_cast<int64_t>(cfg.gpu_memory_utilization * static_cast<double>(total)) - used - reserve - ring_bytes,
          0);
      budget = std::min(budget, std::max<int64_t>(free - reserve - ring_bytes, 0));
      spdlog::info("gpu memory: {:.1f} GiB total, {:.1f} GiB in use after the weights, utilization {} -> "
                   "{:.1f} GiB activation reserve, {:.1f} GiB for the KV pool = {} tokens",
                   total / 1073741824.0, used / 1073741824.0, cfg.gpu_memory_utilization,
                   reserve / 1073741824.0, budget / 1073741824.0, budget / kv_token_bytes);
    }
    const int64_t cap = budget / kv_token_bytes;
    kv_tokens = std::min(cfg.max_num_seqs * max_model_len_, std::max(cap, max_model_len_));
  }
  if (kv_tokens < max_model_len_)
    throw_error(ErrorCode::kInvalidArgument, "--kv-cache-tokens {} is smaller than the context length {}",
                kv_tokens, max_model_len_);
  const int64_t num_blocks = (kv_tokens + cfg.block_size - 1) / cfg.block_size;
  kv_ = std::make_unique<cache::KvPool>(*backend_, mc, num_blocks, cfg.block_size, ring_spec);
  if (mac.enabled) mac_state_ = std::make_unique<cache::MacState>(cfg.max_num_seqs);
  blocks_ = std::make_unique<cache::BlockManager>(num_blocks, cfg.block_size, cfg.enable_prefix_caching);
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
  if (cfg.scheduling_policy == "priority") policy = SchedulingPolicy::kPriority;
  else if (cfg.scheduling_policy != "fcfs")
    throw_error(ErrorCode::kInvalidArgument, "unknown scheduling policy '{}' (fcfs|priority)", cfg.scheduling_policy);
  if (cfg.max_num_seqs < 1 || cfg.max_num_batched_tokens < 1)
    throw_error(ErrorCode::kInvalidArgument, "--max-num-seqs and --max-num-batched-tokens must be positive");
  scheduler_ = std::make_unique<Scheduler>(*blocks_, SchedulerLimits{cfg.max_num_seqs, cfg.max_num_batched_tokens, policy},
                                           mac_state_.get(), mac.config.window);
  runner_ = std::make_unique<ModelRunner>(*backend_, *model_, *kv_, mac);
  async_ = auto_on_off("--async-scheduling", cfg.async_scheduling, backend_->device() != Device::kCpu);
  // auto = on for device backends (on the H200: exact against the CPU sampler under the same loop,
  // cuda_engine_test; batch-64 step gap 2.3 -> 0.26 ms on the 8B dummy), off on the CPU.
  device_greedy_ = auto_on_off("--device-sampling", cfg.device_sampling, backend_->device() != Device::kCpu);
  spdlog::info("engine: {} ({}), {} layers, {:.1f} MiB weights, KV {} blocks x {} tokens ({:.1f} MiB), "
               "context {}, device {}, async scheduling {}, greedy sampling on the device {}, ready in {:.2f} s",
               path, mc.architecture, mc.num_layers, model_->weight_bytes() / 1048576.0, num_blocks,
               cfg.block_size, kv_->bytes() / 1048576.0, max_model_len_, backend_->name(), async_ ? "on" : "off", device_greedy_ ? "on" : "off",
               seconds(t0, Clock::now()));
  if (mac.enabled)
    spdlog::info("attention: mac (threshold {}, window {}, band {}, min context {}, sink {}, ring {} = {:.1f} MiB "
                 "for {} request slots, audit rate {})",
                 mac.config.threshold, mac.config.window, mac.config.band, mac.config.gen_min, mac.config.sink,
                 cfg.mac_ring_dtype, kv_->mac_ring_bytes() / 1048576.0, cfg.max_num_seqs, mac.audit_rate);
  else
    spdlog::info("attention: full");
  thread_ = std::thread([this] { loop(); });
}

std::unique_ptr<Engine> Engine::create(const EngineConfig& config) {
  return std::make_unique<EngineImpl>(config);
}

void EngineImpl::fail(const std::shared_ptr<ResponseStream>& s, ErrorKind kind, const std::string& why,
                      int64_t prompt_tokens) {
  RequestOutput out;
  out.finished = true;
  out.finish_reason = FinishReason::kError;
  out.error = why;
  out.error_kind = kind;
  out.prompt_tokens = prompt_tokens;
  s->push(std::move(out));
}

std::shared_ptr<ResponseStream> EngineImpl::submit(Request request) {
  std::vector<Request> one;
  one.push_back(std::move(request));
  return submit_batch(std::move(one)).front();
}

std::vector<std::shared_ptr<ResponseStream>> EngineImpl::submit_batch(std::vector<Request> requests) {
  std::vector<std::shared_ptr<ResponseStream>> streams;
  std::vector<bool> ok(requests.size(), false);
  for (std::size_t r = 0; r < requests.size(); ++r) {
    Request& request = requests[r];
    auto stream = std::make_shared<ResponseStream>(request.n);
    streams.push_back(stream);
    const auto n = static_cast<int64_t>(request.prompt_ids.size());
    try {
      request.params.validate();
    } catch (const Error& e) {
      fail(stream, ErrorKind::kInvalidRequest, e.what(), n);
      continue;
    }
    if (request.n < 1 || request.n > 128) {
      fail(stream, ErrorKind::kInvalidRequest, fmt::format("'n' must be in [1, 128], got {}", request.n), n);
      continue;
    }
    if (n == 0) {
      fail(stream, ErrorKind::kInvalidRequest, "the prompt is empty", n);
      continue;
    }
    const auto bad = std::find_if(request.prompt_ids.begin(), request.prompt_ids.end(),
                                  [&](int32_t id) { return id < 0 || id >= model_->config().vocab_size; });
    if (bad != request.prompt_ids.end()) {
      fail(stream, ErrorKind::kInvalidRequest, fmt::format("prompt token id {} is outside the vocabulary", *bad), n);
      continue;
    }
    if (n + request.params.max_tokens > max_model_len_) {
      fail(stream, ErrorKind::kContextLength, fmt::format("prompt ({} tokens) + max_tokens ({}) exceeds the context length {}", n,
                               request.params.max_tokens, max_model_len_), n);
      continue;
    }
    ok[r] = true;
  }
  // Every accepted request reaches the inbox under one lock, so the engine thread admits them
  // together (one step sees all of them or none).
  std::lock_guard lock(mu_);
  for (std::size_t r = 0; r < requests.size(); ++r) {
    if (!ok[r]) continue;
    Request& request = requests[r];
    const auto& stream = streams[r];
    const auto n = static_cast<int64_t>(request.prompt_ids.size());
    if (stop_) {
      fail(stream, ErrorKind::kUnavailable, "the engine is shutting down", n);
      continue;
    }
    if (num_queued_ + request.n > cfg_.max_queued_requests) {
      fail(stream, ErrorKind::kQueueFull, fmt::format("too many queued requests (limit {})", cfg_.max_queued_requests), n);
      continue;
    }
    const uint64_t order = ++num_submitted_;
    Sequence* first = nullptr;
    for (int32_t i = 0; i < request.n; ++i) {
      // Unseeded completions get distinct random streams derived from the engine's default seed;
      // seeded ones use seed + index so the n completions differ but reproduce.
      sampling::SamplingParams p = request.params;
      if (p.seed) p.seed = *p.seed + static_cast<uint64_t>(i);
      const uint64_t fallback = cfg_.default_seed + 0x9e3779b97f4a7c15ull * (order * 131 + static_cast<uint64_t>(i));
      auto seq = std::make_unique<Sequence>(request.id, i, request.prompt_ids, std::move(p), stream, *tokenizer_, fallback);
      seq->priority = request.priority;
      seq->arrival_order = order;
      seq->deadline = request.deadline;
      seq->wait_for = first;
      if (i == 0) first = seq.get();
      inbox_.push_back(std::move(seq));
    }
    num_queued_ += request.n;
  }
  cv_.notify_one();
  return streams;
}

double EngineImpl::seconds_since_progress() const {
  const Clock::time_point last{Clock::duration{heartbeat_.load(std::memory_order_relaxed)}};
  return seconds(last, Clock::now());
}

EngineStats EngineImpl::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void EngineImpl::shutdown() {
  {
    std::lock_guard lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace macserve::engine
