// Engine: the facade every front end uses. submit(Request) returns a ResponseStream that yields
// text deltas as the engine thread produces them. One engine thread owns all scheduling state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "macserve/core/model_config.h"
#include "macserve/request/request.h"
#include "macserve/tokenizer/tokenizer.h"

namespace macserve::engine {

// The fixed choices of EngineConfig (SchedulingPolicy is request.h's). Front ends turn names into
// values with parse_enum; to_string gives the name back for logs, metrics and server info.
enum class DeviceChoice { kCpu, kCuda, kAuto };
enum class LoadFormat { kAuto, kSafetensors, kGguf, kDummy };
enum class AutoOnOff { kAuto, kOn, kOff };
enum class AttentionMode { kMac, kFull };
enum class RingDtype { kBf16, kFp32 };
enum class CpuGemm { kInvariant, kOpenblas };
enum class CudaAttention { kAuto, kGeneral };
// Weights of a quantized GGUF file on the CPU: kNative keeps Q8_0/Q4_0/Q4_1 blocks and multiplies
// with them in place (memory close to the file size); kF32 dequantizes them at load. CUDA always
// loads f32 (then bf16).
enum class CpuWeights { kNative, kF32 };
const char* to_string(DeviceChoice v);
const char* to_string(LoadFormat v);
const char* to_string(AutoOnOff v);
const char* to_string(AttentionMode v);
const char* to_string(RingDtype v);
const char* to_string(CpuGemm v);
const char* to_string(CudaAttention v);
const char* to_string(CpuWeights v);
// Every name of E, in declaration order.
template <class E>
std::vector<std::string> enum_names();
// The value named `name`; otherwise throws ErrorCode::kInvalidArgument naming `what` (the flag or
// environment variable) and listing the allowed names.
template <class E>
E parse_enum(std::string_view name, std::string_view what);

struct EngineConfig {
  std::string model_path;  // HF directory or .gguf file
  LoadFormat load_format = LoadFormat::kAuto;
  std::string tokenizer_path;                // tokenizer directory; default: the model's own
  DeviceChoice device = DeviceChoice::kCpu;  // auto: the CPU
  CpuWeights cpu_weights = CpuWeights::kNative;
  // --tensor-parallel-size: 1, 2, 4 or 8 ranks, each with its slice of the heads, MLP and
  // vocabulary (one worker thread per rank). The CPU backend only for now (no NCCL build yet).
  int tensor_parallel_size = 1;
  uint64_t dummy_seed = 0;
  int64_t block_size = 16;
  int64_t kv_cache_tokens = 0;  // 0: max_num_seqs x context length, capped at 1 GiB of KV (CPU)
                                // or by gpu_memory_utilization (CUDA)
  double gpu_memory_utilization = 0.9;  // (0, 1]: share of the GPU's total memory for weights,
                                        // activations and the KV pool (CUDA only)
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 2048;
  int64_t max_queued_requests = 1024;
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  // --deterministic: every token's logits are bit-identical whatever else is in its steps (batch
  // size and neighbours, prefill chunk sizes, prefix-cache hits); BackendOptions::deterministic.
  bool deterministic = false;
  SchedulingPolicy scheduling_policy = SchedulingPolicy::kFcfs;
  // On: step N+1 is scheduled and its inputs built while the device runs step N, and
  // step N's text is detokenized and streamed while step N+1 runs; outputs are identical. A
  // sequence that stops on EOS or a stop string costs one discarded row. auto: on for CUDA, off on
  // the CPU (where the forward is synchronous, so there is nothing to overlap).
  AutoOnOff async_scheduling = AutoOnOff::kAuto;
  // On: a step whose sampled rows are all plain greedy (temperature 0, no logprobs,
  // penalties, logit bias or min_tokens still pending) takes the argmax where the logits are and
  // copies back token ids instead of the logits; same tokens. auto: on for CUDA, off on the CPU.
  AutoOnOff device_sampling = AutoOnOff::kAuto;

  // MAC-Attention (mac-attention.md Part A): every decode step goes through it unless kFull.
  AttentionMode attention = AttentionMode::kMac;
  float mac_threshold = 0.45f;                  // t: hit iff |q - q'|^2 < 2 D (1 - t)^2
  int64_t mac_window = 512;                     // M: ring rows per request and head
  int64_t mac_band = 256;                       // r: keys recomputed behind each match boundary
  int64_t mac_min_context = 2048;               // gen_min: match only from this context length on
  int64_t mac_sink_tokens = 0;                  // F: leading keys always recomputed, never stored
  RingDtype mac_ring_dtype = RingDtype::kBf16;  // storage of ring q and o
  // Ring slots in the pool (a sequence holds one from the first ring row a later decode can match
  // until it finishes or is preempted). -1 (auto): as many as sequences can be long at once,
  // min(max_num_seqs, KV tokens / mac_min_context); the KV pool gets the rest of the memory.
  int64_t mac_ring_slots = -1;
  double mac_audit_rate = 0.0;  // fraction of steps re-run exactly to measure the error
  std::string mac_dump;         // JSON-lines dump of the first request's MAC decisions
  uint64_t default_seed = 0;    // random stream of requests without a seed

  // Switches for comparisons and benchmarks, not flags: server/environment.cc reads them from the
  // environment once at start-up; the engine hands them to the backend (backend::BackendOptions).
  CpuGemm cpu_gemm = CpuGemm::kInvariant;               // env: MACSERVE_CPU_GEMM=invariant|openblas
  CudaAttention cuda_attention = CudaAttention::kAuto;  // env: MACSERVE_CUDA_ATTENTION=auto|general
  bool cuda_graphs = true;                              // env: MACSERVE_CUDA_GRAPHS=1|0
  // Benchmark only (CUDA): MAC decisions replaced by random draws at this hit rate (< 0: off), per
  // head or per KV group. env: MACSERVE_MAC_FORCE_HITS=RATE[,clustered]
  float mac_force_hit_rate = -1.0f;
  bool mac_force_clustered = false;
};

struct EngineStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t num_free_blocks = 0;
  int64_t num_blocks = 0;
  int64_t num_preemptions = 0;
  int64_t prompt_tokens =
      0;  // prompt lengths of completions whose prefill ended (cached tokens included)
  int64_t generation_tokens = 0;
  int64_t num_steps = 0;
  // Host time from the end of one device step (its logits on the host) to the launch of the next,
  // summed over back-to-back steps: an upper bound of the device's idle time between steps.
  double step_gap_seconds = 0.0;
  int64_t step_gaps = 0;
  // Where the host's time on the critical path goes, summed over steps: sampling a step's rows,
  // and launching a step (inputs upload, graph replay or kernel launches; on the CPU: the forward).
  double sample_seconds = 0.0;
  double launch_seconds = 0.0;
  int64_t prefix_cache_queries = 0;  // full prompt blocks looked up
  int64_t prefix_cache_hits = 0;     // ... found cached
  int64_t num_requests_finished = 0;
  // MAC-Attention, per layer and in total.
  std::vector<int64_t> mac_layer_heads, mac_layer_eligible, mac_layer_hits;
  std::vector<double> mac_layer_audit_rel_l2;  // sqrt(sum err^2 / sum ref^2) over audited steps
  int64_t mac_audited_steps = 0;
  // Audit error per audited step (relative L2 over all layers): counts per bucket (upper bounds
  // mac_audit_bucket_bounds, then one bucket above the last) and their sum.
  std::vector<double> mac_audit_bucket_bounds;
  std::vector<int64_t> mac_audit_bucket_counts;
  double mac_audit_sum = 0.0;
  int64_t mac_kv_bytes_read = 0, mac_kv_bytes_full = 0;
  int64_t mac_groups_all_hit = 0, mac_groups_mixed = 0, mac_groups_all_miss = 0;
  int64_t mac_ring_bytes = 0;
  int64_t mac_ring_slots = 0, mac_ring_slots_in_use = 0;
  int64_t mac_ring_slots_taken = 0;  // slots handed out since start
  int64_t mac_ring_slot_misses =
      0;  // sequences that needed a slot and found none (exact attention)
  double kv_cache_usage() const {
    return num_blocks > 0
               ? 1.0 - static_cast<double>(num_free_blocks) / static_cast<double>(num_blocks)
               : 0.0;
  }
};

class Engine {
 public:
  // Loads the model and tokenizer and starts the engine thread. Throws macserve::Error.
  static std::unique_ptr<Engine> create(const EngineConfig& config);
  virtual ~Engine() = default;

  // Never blocks on the model. A request the engine cannot take (queue full, prompt too long, bad
  // parameters) yields a stream whose only output is finished with an error.
  virtual std::shared_ptr<ResponseStream> submit(Request request) = 0;
  // submit() for several requests at once, one stream each in order. The accepted ones reach the
  // engine thread together, so the first step that admits any of them admits all (an offline batch
  // is scheduled the same way on every run).
  virtual std::vector<std::shared_ptr<ResponseStream>> submit_batch(
      std::vector<Request> requests) = 0;

  virtual const tokenizer::Tokenizer& tokenizer() const = 0;
  virtual const ModelConfig& model_config() const = 0;
  virtual int64_t max_model_len() const = 0;
  virtual EngineStats stats() const = 0;
  virtual std::string device_name() const = 0;
  virtual int64_t weight_bytes() const = 0;  // resident model weights on the device
  // Stops the engine thread; running requests finish with reason abort.
  virtual void shutdown() = 0;
  // Seconds since the engine thread last began or finished a loop iteration (it wakes at least
  // every 50 ms when idle); a value that keeps growing means the loop is stuck in a step.
  virtual double seconds_since_progress() const = 0;
};

}  // namespace macserve::engine
