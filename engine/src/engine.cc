#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "engine_impl.h"
#include "macserve/core/error.h"
#include "macserve/engine/engine.h"

namespace macserve::engine {
namespace {

// EOS ids: the tokenizer's, the config's, and generation_config.json's (which may list several).
std::vector<int32_t> collect_eos(const std::string& model_path, const ModelConfig& cfg,
                                 const tokenizer::Tokenizer& tok) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end())
      ids.push_back(static_cast<int32_t>(id));
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
        for (const auto& v : e)
          if (v.is_number_integer()) add(v.get<int64_t>());
    }
  }
  return ids;
}

// Validates the MAC flags and turns them into runner options.
MacRunnerOptions mac_options(const EngineConfig& cfg) {
  MacRunnerOptions m;
  m.enabled = cfg.attention == AttentionMode::kMac;
  if (!std::isfinite(cfg.mac_threshold))
    throw_error(ErrorCode::kInvalidArgument, "--mac-threshold must be a number");
  if (cfg.mac_window < 1 || cfg.mac_window > (1 << 20))
    throw_error(ErrorCode::kInvalidArgument, "--mac-window must be in [1, 1048576], got {}",
                cfg.mac_window);
  if (cfg.mac_band < 1)
    throw_error(ErrorCode::kInvalidArgument, "--mac-band must be at least 1, got {}", cfg.mac_band);
  if (cfg.mac_min_context < 0 || cfg.mac_sink_tokens < 0)
    throw_error(ErrorCode::kInvalidArgument,
                "--mac-min-context and --mac-sink-tokens must not be negative");
  if (!(cfg.mac_audit_rate >= 0.0 && cfg.mac_audit_rate <= 1.0))
    throw_error(ErrorCode::kInvalidArgument, "--mac-audit-rate must be in [0, 1]");
  m.config.threshold =
      std::min(1.0f, std::max(0.0f, cfg.mac_threshold));  // t is clamped (Part A #1)
  m.config.window = cfg.mac_window;
  m.config.band = cfg.mac_band;
  m.config.gen_min = cfg.mac_min_context;
  m.config.sink = cfg.mac_sink_tokens;
  m.config.ring_bf16 = cfg.mac_ring_dtype == RingDtype::kBf16;
  m.audit_rate = cfg.mac_audit_rate;
  m.audit_seed = cfg.default_seed;
  m.dump_path = cfg.mac_dump;
  return m;
}

struct MemoryPlan {
  int64_t kv_tokens = 0;
  int64_t ring_slots = 0;  // MAC ring slots (0 with MAC off)
};

// KV tokens and MAC ring slots. Default KV: every sequence at full length, within a budget for the
// KV pool and the rings together: 1 GiB on the CPU (shared by the tensor-parallel ranks, whose
// KV pools all live in host memory: `mc` is one rank's shapes); on a GPU, --gpu-memory-utilization
// of its memory less what is in use now (weights, workspaces, other processes) and a reserve for
// the step's activations and logits and the backend's scratch (Backend::scratch_bytes). Auto ring
// slots: as many sequences as can be long at once, each holding mac_min_context tokens of KV and
// one slot, i.e. min(max_num_seqs, KV tokens / mac_min_context) with the KV tokens left after the
// rings (none when no request can reach mac_min_context).
MemoryPlan plan_memory(const EngineConfig& cfg, backend::Backend& be, const ModelConfig& mc,
                       int64_t max_model_len, const MacRunnerOptions& mac) {
  const int64_t token_bytes =
      cache::KvPool::bytes_per_token(mc, static_cast<int64_t>(dtype_size(be.kv_dtype())));
  const int64_t slot_bytes = mac.enabled ? cache::KvPool::mac_ring_bytes_per_slot(
                                               mc, {1, mac.config.window, mac.config.ring_bf16})
                                         : 0;
  const int64_t min_context = std::max<int64_t>(mac.config.gen_min, 1);
  const bool can_be_long = max_model_len - 2 >= mac.config.gen_min;  // the last decode's position
  MemoryPlan plan;
  if (cfg.mac_ring_slots < -1)
    throw_error(ErrorCode::kInvalidArgument, "--mac-ring-slots must be auto or >= 0");
  plan.ring_slots = !mac.enabled             ? 0
                    : cfg.mac_ring_slots < 0 ? -1
                                             : std::min(cfg.mac_ring_slots, cfg.max_num_seqs);
  // --deterministic: a sequence that found no free slot would decode exactly instead of through
  // MAC, which would make its tokens depend on the other requests; so every sequence gets one.
  const bool slot_each = cfg.deterministic && mac.enabled && can_be_long;
  if (slot_each && cfg.mac_ring_slots >= 0 && cfg.mac_ring_slots < cfg.max_num_seqs)
    throw_error(ErrorCode::kInvalidArgument,
                "--deterministic with MAC attention needs a ring slot for every sequence: "
                "--mac-ring-slots {} is below --max-num-seqs {} (use auto)",
                cfg.mac_ring_slots, cfg.max_num_seqs);
  if (slot_each) plan.ring_slots = cfg.max_num_seqs;
  if (plan.ring_slots < 0 && !can_be_long) plan.ring_slots = 0;
  plan.kv_tokens = cfg.kv_cache_tokens;
  if (plan.kv_tokens <= 0) {
    int64_t budget = (int64_t{1} << 30) / cfg.tensor_parallel_size;
    if (const int64_t free = be.free_memory_bytes(); free >= 0) {
      const int64_t total = be.total_memory_bytes();
      const int64_t reserve =
          cfg.max_num_batched_tokens * (6 * mc.hidden_size + 6 * mc.intermediate_size) * 4 +
          cfg.max_num_seqs * mc.vocab_size * 4 * 2 + (int64_t{512} << 20) +
          be.scratch_bytes({cfg.max_num_batched_tokens,
                            cfg.max_num_seqs,
                            (max_model_len + cfg.block_size - 1) / cfg.block_size,
                            mc.num_q_heads,
                            {0, mc.num_kv_heads, cfg.block_size, mc.head_dim}});
      const int64_t used = total - free;
      budget = std::max<int64_t>(
          static_cast<int64_t>(cfg.gpu_memory_utilization * static_cast<double>(total)) - used -
              reserve,
          0);
      budget = std::min(budget, std::max<int64_t>(free - reserve, 0));
      spdlog::info(
          "gpu memory: {:.1f} GiB total, {:.1f} GiB in use after the weights, utilization {} -> "
          "{:.1f} GiB activation reserve, {:.1f} GiB for the KV pool and MAC rings",
          total / 1073741824.0, used / 1073741824.0, cfg.gpu_memory_utilization,
          reserve / 1073741824.0, budget / 1073741824.0);
    }
    if (plan.ring_slots < 0)
      plan.ring_slots =
          std::min(cfg.max_num_seqs, budget / (min_context * token_bytes + slot_bytes));
    budget = std::max<int64_t>(budget - plan.ring_slots * slot_bytes, 0);
    plan.kv_tokens =
        std::min(cfg.max_num_seqs * max_model_len, std::max(budget / token_bytes, max_model_len));
  }
  if (cfg.mac_ring_slots < 0 && plan.ring_slots != 0 &&
      !slot_each) {  // auto: no more than the KV pool can make long
    const int64_t fit = std::min(cfg.max_num_seqs, plan.kv_tokens / min_context);
    plan.ring_slots = plan.ring_slots < 0 ? fit : std::min(plan.ring_slots, fit);
  }
  return plan;
}

// An auto|on|off option: auto means `if_auto`.
bool auto_on_off(AutoOnOff value, bool if_auto) {
  switch (value) {
    case AutoOnOff::kAuto:
      return if_auto;
    case AutoOnOff::kOn:
      return true;
    case AutoOnOff::kOff:
      return false;
  }
  return if_auto;
}

models::LoadFormat to_models(LoadFormat f) {
  switch (f) {
    case LoadFormat::kAuto:
      return models::LoadFormat::kAuto;
    case LoadFormat::kSafetensors:
      return models::LoadFormat::kSafetensors;
    case LoadFormat::kGguf:
      return models::LoadFormat::kGguf;
    case LoadFormat::kDummy:
      return models::LoadFormat::kDummy;
  }
  return models::LoadFormat::kAuto;
}

// Device choice: the backend named by --device, with the start-up switches of EngineConfig.
std::unique_ptr<backend::Backend> make_backend(const EngineConfig& cfg) {
  backend::BackendOptions options;
  // OpenBLAS picks its blocking by the matrix shape, so a row's bits would depend on the batch.
  options.cpu_blas_gemm = cfg.cpu_gemm == CpuGemm::kOpenblas && !cfg.deterministic;
  if (cfg.deterministic && cfg.cpu_gemm == CpuGemm::kOpenblas)
    spdlog::warn(
        "MACSERVE_CPU_GEMM=openblas is ignored under --deterministic (it is not batch-invariant); "
        "the CPU uses its invariant GEMM");
  options.cuda_general_attention = cfg.cuda_attention == CudaAttention::kGeneral;
  options.graphs = cfg.cuda_graphs;
  options.deterministic = cfg.deterministic;
  options.mac_force_hit_rate = cfg.mac_force_hit_rate;
  options.mac_force_clustered = cfg.mac_force_clustered;
  switch (cfg.device) {
    case DeviceChoice::kCuda: {
      std::string why;
      auto be = backend::make_cuda_backend(&why, options);
      if (!be) throw_error(ErrorCode::kUnsupported, "--device cuda: {}", why);
      if (cfg.mac_force_hit_rate >= 0.0f)
        spdlog::warn("MAC decisions are forced (hit rate {}, {}); benchmark only",
                     cfg.mac_force_hit_rate, cfg.mac_force_clustered ? "per KV group" : "per head");
      return be;
    }
    case DeviceChoice::kCpu:
    case DeviceChoice::kAuto:
      return backend::make_cpu_backend(options);
  }
  throw_error(ErrorCode::kInvalidArgument, "unknown device {}", static_cast<int>(cfg.device));
}

}  // namespace

// Construction in named steps: device, model and tokenizer, MAC options, KV budget, components.
EngineImpl::EngineImpl(const EngineConfig& cfg) : cfg_(cfg) {
  if (cfg.tensor_parallel_size == 1)
    backend_ = make_backend(cfg);
  else
    start_tensor_parallel();
  const auto t0 = Clock::now();
  const std::string path = load_model();
  const MacRunnerOptions mac = mac_options(cfg);
  if (mac.enabled) {  // shapes the backend's MAC kernels cannot run: say so now, not at the first
                      // step
    const ModelConfig mc = rank_config();
    const std::string why =
        be().mac_unsupported(mc.head_dim, mc.num_q_heads / mc.num_kv_heads, cfg.block_size);
    if (!why.empty())
      throw_error(ErrorCode::kUnsupported, "--attention mac on --device {}: {}", be().name(), why);
  }
  build_components(mac);
  log_ready(path, mac, t0);
  publish_stats();  // stats() describes the KV pool and ring slots before the first step
                    // (GetServerInfo, /metrics)
  thread_ = std::thread([this] { loop(); });
}

// --tensor-parallel-size > 1: the group's workers, each with a backend of its own. Only the CPU
// backend has a communicator (in-process); CUDA would need NCCL, which is not built yet.
void EngineImpl::start_tensor_parallel() {
  const int n = cfg_.tensor_parallel_size;
  models::check_tensor_parallel_size(n);
  if (cfg_.device == DeviceChoice::kCuda)
    throw_error(ErrorCode::kUnsupported,
                "--tensor-parallel-size {} on --device cuda: tensor parallelism over NCCL is not "
                "built yet; it runs on the CPU backend only (--device cpu)",
                n);
  tp_ = std::make_unique<TensorParallel>(n);
  tp_->run([this](int r) { tp_->rank(r).backend = make_backend(cfg_); });
}

ModelConfig EngineImpl::rank_config() const {
  const ModelConfig& mc = model().config();
  if (!tp_) return mc;
  return models::shard_config(mc, models::shard_layout(mc, 0, tp_->size()));
}

int64_t EngineImpl::weight_bytes() const {
  if (!tp_) return model_->weight_bytes();
  int64_t total = 0;  // all ranks' (on the CPU, row slices are views of the same memory)
  for (int r = 0; r < tp_->size(); ++r) total += tp_->rank(r).model->weight_bytes();
  return total;
}

// Model loading: checkpoint (weights, GGUF vocabulary), tokenizer, model, EOS ids and context
// length. Returns the checkpoint's path.
std::string EngineImpl::load_model() {
  const EngineConfig& cfg = cfg_;
  if (cfg.load_format == LoadFormat::kDummy && cfg.tokenizer_path.empty() &&
      !std::filesystem::exists(std::filesystem::path(cfg.model_path) / "tokenizer.json") &&
      !std::filesystem::exists(std::filesystem::path(cfg.model_path) /
                               "tokenizer.model"))  // before GBs of weights
    throw_error(ErrorCode::kInvalidArgument,
                "--load-format dummy: {} has no tokenizer.json or tokenizer.model; "
                "pass --tokenizer DIR",
                cfg.model_path);
  const bool keep_quantized =
      be().device() == Device::kCpu && cfg.cpu_weights == CpuWeights::kNative;
  models::Checkpoint ckpt = models::load_checkpoint(cfg.model_path, to_models(cfg.load_format),
                                                    cfg.dummy_seed, keep_quantized);
  const std::string model_dir = std::filesystem::is_directory(ckpt.path)
                                    ? ckpt.path
                                    : std::filesystem::path(ckpt.path).parent_path().string();
  if (!cfg.tokenizer_path.empty())
    tokenizer_ = tokenizer::load_tokenizer(cfg.tokenizer_path);
  else if (ckpt.gguf_vocab)
    tokenizer_ = tokenizer::tokenizer_from_vocab(*ckpt.gguf_vocab);
  else
    tokenizer_ = tokenizer::load_tokenizer(model_dir);
  std::string path = ckpt.path;
  if (tp_) {  // every rank its slices, built on its worker from its own copy of the handles
    models::check_tensor_parallel(ckpt.config, tp_->size());
    tp_->run([&](int r) {
      TensorParallel::Rank& rank = tp_->rank(r);
      rank.model = models::create_model(models::Checkpoint(ckpt), *rank.backend,
                                        {r, tp_->size(), rank.comm.get()});
    });
  } else {
    model_ = models::create_model(std::move(ckpt), *backend_);
  }
  const ModelConfig& mc = model().config();
  if (tokenizer_->vocab_size() > mc.vocab_size)
    throw_error(ErrorCode::kInvalidModel,
                "{}: tokenizer has {} tokens but the model's vocabulary is {}", path,
                tokenizer_->vocab_size(), mc.vocab_size);
  eos_ids_ = collect_eos(path, mc, *tokenizer_);
  max_model_len_ = cfg.max_model_len > 0 ? std::min(cfg.max_model_len, mc.max_position_embeddings)
                                         : mc.max_position_embeddings;
  return path;
}

// Construction: KV pool and MAC ring slots (sized by the memory plan), block manager, scheduler,
// runner, and the auto|on|off switches resolved for the backend.
void EngineImpl::build_components(const MacRunnerOptions& mac) {
  const EngineConfig& cfg = cfg_;
  const ModelConfig mc = rank_config();  // a rank's KV heads and MAC ring heads
  if (!(cfg.gpu_memory_utilization > 0.0 && cfg.gpu_memory_utilization <= 1.0))
    throw_error(ErrorCode::kInvalidArgument, "--gpu-memory-utilization must be in (0, 1], got {}",
                cfg.gpu_memory_utilization);
  const MemoryPlan mem = plan_memory(cfg, be(), mc, max_model_len_, mac);
  if (mem.kv_tokens < max_model_len_)
    throw_error(ErrorCode::kInvalidArgument,
                "--kv-cache-tokens {} is smaller than the context length {}", mem.kv_tokens,
                max_model_len_);
  const int64_t num_blocks = (mem.kv_tokens + cfg.block_size - 1) / cfg.block_size;
  cache::MacRingSpec ring_spec;
  if (mac.enabled) ring_spec = {mem.ring_slots, mac.config.window, mac.config.ring_bf16};
  if (tp_)
    tp_->run([&](int r) {
      TensorParallel::Rank& rank = tp_->rank(r);
      rank.kv =
          std::make_unique<cache::KvPool>(*rank.backend, mc, num_blocks, cfg.block_size, ring_spec);
    });
  else
    kv_ = std::make_unique<cache::KvPool>(*backend_, mc, num_blocks, cfg.block_size, ring_spec);
  if (mac.enabled) mac_state_ = std::make_unique<cache::MacState>(mem.ring_slots);
  blocks_ =
      std::make_unique<cache::BlockManager>(num_blocks, cfg.block_size, cfg.enable_prefix_caching);
  if (cfg.max_num_seqs < 1 || cfg.max_num_batched_tokens < 1)
    throw_error(ErrorCode::kInvalidArgument,
                "--max-num-seqs and --max-num-batched-tokens must be positive");
  scheduler_ = std::make_unique<Scheduler>(
      *blocks_,
      SchedulerLimits{cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.scheduling_policy},
      mac_state_.get(), MacRingPolicy{mac.config.window, mac.config.gen_min, cfg.deterministic});
  runner_ = std::make_unique<ModelRunner>(be(), model(), kv(), mac, tp_.get());
  async_ = auto_on_off(cfg.async_scheduling, be().device() != Device::kCpu);
  // auto = on for device backends (on the H200: exact against the CPU sampler under the same loop,
  // cuda_engine_test; batch-64 step gap 2.3 -> 0.26 ms on the 8B dummy), off on the CPU.
  device_greedy_ = auto_on_off(cfg.device_sampling, be().device() != Device::kCpu);
}

void EngineImpl::log_ready(const std::string& path, const MacRunnerOptions& mac,
                           Clock::time_point t0) const {
  const EngineConfig& cfg = cfg_;
  const ModelConfig& mc = model().config();
  spdlog::info(
      "engine: {} ({}), {} layers, {:.1f} MiB weights, KV {} blocks x {} tokens ({:.1f} MiB), "
      "context {}, device {}, async scheduling {}, greedy sampling on the device {}, ready in "
      "{:.2f} s",
      path, mc.architecture, mc.num_layers, weight_bytes() / 1048576.0, kv().num_blocks(),
      cfg.block_size, kv().bytes() / 1048576.0, max_model_len_, be().name(), async_ ? "on" : "off",
      device_greedy_ ? "on" : "off", seconds(t0, Clock::now()));
  if (mac.enabled)
    spdlog::info(
        "attention: mac (threshold {}, window {}, band {}, min context {}, sink {}, ring {} = "
        "{:.1f} MiB "
        "for {} ring slots{}, audit rate {})",
        mac.config.threshold, mac.config.window, mac.config.band, mac.config.gen_min,
        mac.config.sink, to_string(cfg.mac_ring_dtype), kv().mac_ring_bytes() / 1048576.0,
        mac_state_ ? mac_state_->num_slots() : 0, cfg.mac_ring_slots < 0 ? " (auto)" : "",
        mac.audit_rate);
  else
    spdlog::info("attention: full");
  if (tp_) {
    const ModelConfig rc = rank_config();
    spdlog::info(
        "tensor parallel: {} ranks (one worker thread each, {} OpenMP threads per rank), per rank "
        "{} query heads, {} KV heads, MLP {} rows, vocabulary {} rows; KV pool and rings above are "
        "one rank's",
        tp_->size(), tp_->threads_per_rank(), rc.num_q_heads, rc.num_kv_heads, rc.intermediate_size,
        rc.vocab_size);
  }
  if (cfg.deterministic)
    spdlog::info(
        "deterministic mode: on (each request's logits are bit-identical whatever its batch, "
        "prefill chunking or prefix-cache hits)");
}

std::unique_ptr<Engine> Engine::create(const EngineConfig& config) {
  return std::make_unique<EngineImpl>(config);
}

void EngineImpl::fail(const std::shared_ptr<ResponseStream>& s, ErrorKind kind,
                      const std::string& why, int64_t prompt_tokens) {
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

std::vector<std::shared_ptr<ResponseStream>> EngineImpl::submit_batch(
    std::vector<Request> requests) {
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
      fail(stream, ErrorKind::kInvalidRequest,
           fmt::format("'n' must be in [1, 128], got {}", request.n), n);
      continue;
    }
    if (n == 0) {
      fail(stream, ErrorKind::kInvalidRequest, "the prompt is empty", n);
      continue;
    }
    const auto bad =
        std::find_if(request.prompt_ids.begin(), request.prompt_ids.end(),
                     [&](int32_t id) { return id < 0 || id >= model().config().vocab_size; });
    if (bad != request.prompt_ids.end()) {
      fail(stream, ErrorKind::kInvalidRequest,
           fmt::format("prompt token id {} is outside the vocabulary", *bad), n);
      continue;
    }
    if (n + request.params.max_tokens > max_model_len_) {
      fail(stream, ErrorKind::kContextLength,
           fmt::format("prompt ({} tokens) + max_tokens ({}) exceeds the context length {}", n,
                       request.params.max_tokens, max_model_len_),
           n);
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
      fail(stream, ErrorKind::kQueueFull,
           fmt::format("too many queued requests (limit {})", cfg_.max_queued_requests), n);
      continue;
    }
    const uint64_t order = ++num_submitted_;
    Sequence* first = nullptr;
    for (int32_t i = 0; i < request.n; ++i) {
      // Unseeded completions get distinct random streams derived from the engine's default seed;
      // seeded ones use seed + index so the n completions differ but reproduce.
      sampling::SamplingParams p = request.params;
      if (p.seed) p.seed = *p.seed + static_cast<uint64_t>(i);
      const uint64_t fallback =
          cfg_.default_seed + 0x9e3779b97f4a7c15ull * (order * 131 + static_cast<uint64_t>(i));
      auto seq = std::make_unique<Sequence>(request.id, i, request.prompt_ids, std::move(p), stream,
                                            *tokenizer_, fallback);
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
