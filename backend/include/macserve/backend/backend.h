// Backend: device memory and the model's ops on Tensor views. The model forward is written once
// against this interface; CpuBackend runs it in float32 (the oracle), CudaBackend on the GPU.
#pragma once

#include <memory>
#include <string>

#include "macserve/core/tensor.h"
#include "macserve/kernels/mac_attention.h"
#include "macserve/kernels/paged_kv.h"
#include "macserve/kernels/rope.h"

namespace macserve::backend {

// Per-step attention metadata (device copies of the step's block tables etc.).
struct AttentionMeta {
  Tensor query_start;   // [num_seqs + 1] i32
  Tensor context_lens;  // [num_seqs] i32
  Tensor block_tables;  // [num_seqs, max_blocks_per_seq] i32
  Tensor slot_mapping;  // [num_tokens] i64
  Tensor positions;     // [num_tokens] i32
  int64_t num_seqs = 0;
  int64_t max_blocks_per_seq = 0;
  // Host-side facts of the step, for planning the attention launch once per step (0 = unknown:
  // the backend takes its general path).
  int64_t max_query_len = 0;    // longest run of queries of one sequence (1: a pure decode step)
  int64_t max_context_len = 0;  // longest context_lens entry
  // MAC steps: [num_seqs] kernels::MacSeqMode in backend memory, or null. paged_attention may leave
  // the output rows of kMacDecode sequences unwritten (the MAC kernels write them after).
  const int8_t* skip_mac_decode = nullptr;
};

// The largest step the engine will run and the model's attention shape, for scratch estimates.
struct StepBounds {
  int64_t max_tokens = 0;          // tokens of one step
  int64_t max_seqs = 0;            // sequences of one step
  int64_t max_blocks_per_seq = 0;  // block-table width
  int64_t num_q_heads = 0;
  kernels::PagedKvLayout layout{};  // num_blocks unused
};

class Backend {
 public:
  virtual ~Backend() = default;
  [[noreturn]] void throw_unsupported(const char* what) const;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // Element type of activations that feed linear layers (normed hidden, attention output, MLP
  // activation) and of the KV cache: f32 on the CPU, bf16 on CUDA. Residual stream, projections'
  // outputs and logits stay f32 everywhere.
  virtual DType activation_dtype() const { return DType::kF32; }
  virtual DType kv_dtype() const { return DType::kF32; }
  // Device memory still free (bytes), or -1 where memory is the host's (CPU).
  virtual int64_t free_memory_bytes() const { return -1; }
  // Device memory in all (bytes), or -1 where memory is the host's (CPU).
  virtual int64_t total_memory_bytes() const { return -1; }
  // Device scratch beyond the step's activations that steps within `bounds` may make the backend
  // allocate, counting its growth by doubling (CUDA --deterministic: the fixed-segment attention's
  // states and the fixed-order GEMM's segment sums); 0 when it needs none worth reserving.
  virtual int64_t scratch_bytes(const StepBounds& bounds) const {
    (void)bounds;
    return 0;
  }

  // ---- memory --------------------------------------------------------------------------------
  virtual Tensor alloc(DType dtype, std::vector<int64_t> shape) = 0;
  // Host float32 -> backend tensor of the backend's weight dtype (f32 on CPU, bf16 on CUDA).
  virtual Tensor upload_weight(const Tensor& host) = 0;
  virtual void copy_to_host(const Tensor& src, void* dst) = 0;
  // Enqueues the copy and returns: dst is valid once a later synchronize() or copy_to_host returns
  // (stream order). dst must stay alive until then; copies into a buffer given to
  // register_host_buffer run without blocking the host, others (and every copy on the CPU) complete
  // before the call returns.
  virtual void copy_to_host_async(const Tensor& src, void* dst) { copy_to_host(src, dst); }
  virtual void copy_from_host(const void* src, const Tensor& dst) = 0;
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;  // same device, same size
  // Sets every byte of t to 0, in stream order (graph-capturable on CUDA).
  virtual void fill_zero(const Tensor& t) = 0;
  virtual void synchronize() = 0;
  // Page-locks a host buffer the caller keeps (and unregisters before freeing it), so that
  // copy_to_host into it runs at full bus speed without a bounce copy. No-op on the CPU.
  virtual void register_host_buffer(void* p, size_t bytes) { (void)p, (void)bytes; }
  virtual void unregister_host_buffer(void* p) { (void)p; }

  // ---- graphs ----------------------------------------------------------------------------------
  // Whether the ops this backend enqueues can be captured into a graph and replayed (CUDA graphs,
  // unless BackendOptions::graphs is off).
  // Between begin_capture and end_capture ops are recorded, not run; nothing may allocate or copy
  // to or from the host then. end_capture returns a handle for replay_graph until drop_graph.
  virtual bool supports_graphs() const { return false; }
  virtual void begin_capture() { throw_unsupported("graph capture"); }
  virtual int64_t end_capture() { throw_unsupported("graph capture"); }
  virtual void abort_capture() {}
  virtual void replay_graph(int64_t handle) {
    (void)handle;
    throw_unsupported("graph replay");
  }
  virtual void drop_graph(int64_t handle) { (void)handle; }

  // ---- ops (shapes in kernels/include/macserve/kernels/*.h) -----------------------------------
  virtual void embedding(const Tensor& ids, const Tensor& table, const Tensor& out) = 0;
  // A vocabulary-parallel embedding's slice: table [num_rows, hidden] holds the rows of ids
  // [first_id, first_id + num_rows); other ids (valid elsewhere) give zero rows, so the sum over
  // the ranks' slices (Communicator::all_reduce_sum) is the full lookup.
  virtual void embedding_slice(const Tensor& ids, const Tensor& table, int64_t first_id,
                               const Tensor& out) {
    (void)ids, (void)table, (void)first_id, (void)out;
    throw_unsupported("a vocabulary-parallel embedding (tensor parallelism)");
  }
  // With residual: residual += x, out = norm(residual). Without: out = norm(x).
  virtual void rms_norm(const Tensor& x, const Tensor* residual, const Tensor& weight,
                        const Tensor& out, float eps) = 0;
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) = 0;
  virtual void rope(const Tensor& q, const Tensor& k, const Tensor& positions,
                    const Tensor& inv_freq) = 0;
  // Qwen3's RMSNorm over each head's vector of q and of k, before RoPE.
  struct QkNorm {
    const Tensor* q_weight;  // [head_dim]
    const Tensor* k_weight;  // [head_dim]
    float eps;
  };
  // The attention prologue of a layer, on the rows of the fused Q/K/V projection (one GEMM):
  // qkv [num_tokens, (Hq + 2 * Hkv) * head_dim] f32, each row [q heads | k heads | v heads], only
  // read. Per token: the per-head norm of q and k (qk_norm not null), q_pre (not null) = q before
  // RoPE, the rotated q into q [num_tokens, Hq, head_dim] f32 (what attention reads), and the
  // rotated k and the v into the paged cache at meta.slot_mapping (slots < 0 skipped). One kernel
  // on CUDA; on the CPU the same float ops as rms_norm, copy, rope and kv_write on split buffers.
  virtual void rope_kv_write(const Tensor& qkv, const Tensor& q, const Tensor* q_pre,
                             const QkNorm* qk_norm, const Tensor& positions, const Tensor& inv_freq,
                             const Tensor& k_cache, const Tensor& v_cache,
                             const AttentionMeta& meta, const kernels::PagedKvLayout& layout) = 0;
  virtual void swiglu(const Tensor& gate_up, const Tensor& out) = 0;
  // The MLP's gate/up projection and SwiGLU: act = swiglu(x w_gate_up^T). gate_up [num_tokens,
  // 2 * inter] f32 holds the projection where a backend runs the two apart (by default, always);
  // CUDA fuses them at decode-sized batches, giving the same bits.
  virtual void linear_swiglu(const Tensor& x, const Tensor& w_gate_up, const Tensor& gate_up,
                             const Tensor& act) {
    linear(x, w_gate_up, nullptr, gate_up);
    swiglu(gate_up, act);
  }
  virtual void add(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  virtual void kv_write(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                        const Tensor& v_cache, const AttentionMeta& meta,
                        const kernels::PagedKvLayout& layout) = 0;
  virtual void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                               const Tensor& out, const AttentionMeta& meta,
                               const kernels::PagedKvLayout& layout, float scale) = 0;
  // MAC-Attention for the step (kernels/mac_attention.h): exact attention (+ ring rows) for
  // exact-mode sequences, Match-Amend-Complete for decode-mode ones, and for plain ones exactly
  // what paged_attention gives them, in any mix. Every pointer is backend memory (the host's on the
  // CPU, the device's on CUDA): the per-sequence arrays are uploaded once per step with the step's
  // metadata, and the outputs stay there until the step's one telemetry copy (StepExecutor::run),
  // so nothing here synchronises.
  struct MacArgs {
    const kernels::MacConfig* config;
    const kernels::MacRing* ring;
    const int8_t* modes;                  // [num_seqs] kernels::MacSeqMode
    const int32_t* ring_slots;            // [num_seqs]
    const int32_t* ring_valid_from;       // [num_seqs]
    const int32_t* rows_from;             // [num_seqs]
    int64_t num_decode;                   // host fact: sequences in kMacDecode (plans the launches)
    kernels::MacHeadDecision* decisions;  // [num_seqs, Hq] (required on CUDA: the merge reads it)
    int64_t* kv_tokens_read;              // [num_seqs] or null
    // Audit (null: off): exact attention of the same queries into *audit_exact (f32, shaped as q),
    // then audit_sums[0] += sum |mac - exact|^2 and audit_sums[1] += sum |exact|^2 over the rows of
    // decode sequences, both taken in f32 (so bf16 output rounding is not counted as MAC error).
    const Tensor* audit_exact = nullptr;
    double* audit_sums = nullptr;  // [2]
    // Which layer this is (mixes into the benchmark-only forced hit draws, so every layer draws
    // anew).
    int32_t layer = 0;
  };
  virtual void mac_attention(const Tensor& q, const Tensor& q_pre, const Tensor& k_cache,
                             const Tensor& v_cache, const Tensor& out, const AttentionMeta& meta,
                             const kernels::PagedKvLayout& layout, float scale,
                             const MacArgs& mac) = 0;
  // Why MAC-Attention cannot run here for these shapes, or "" when it can (the engine turns a
  // reason into a startup error instead of failing at the first step).
  virtual std::string mac_unsupported(int64_t head_dim, int64_t group, int64_t block_size) const {
    (void)head_dim, (void)group, (void)block_size;
    return {};
  }
  // MAC ring storage for one layer: q and o [num_slots, M, Hq, D] (bf16 as u16 or f32), lse f32
  // [num_slots, M, Hq] set to -inf (empty rows).
  virtual kernels::MacRing alloc_mac_ring(int64_t num_slots, int64_t window, int64_t num_q_heads,
                                          int64_t head_dim, bool bf16) = 0;
  // out[i, :] = x[rows[i], :]
  virtual void gather_rows(const Tensor& x, const Tensor& rows, const Tensor& out) = 0;
  // Greedy sampling where the logits are: out[r] = argmax of logits[r, :] (f32 [rows, vocab] ->
  // i32 [rows]), the lowest index among equal maxima (the CPU sampler's choice).
  virtual void argmax_rows(const Tensor& logits, const Tensor& out) = 0;
};

// Start-up choices of a backend, for comparisons and benchmarks (the engine fills them from its
// EngineConfig; nothing in the backend reads the environment).
struct BackendOptions {
  bool cpu_blas_gemm =
      false;  // CPU: linear layers by OpenBLAS sgemm, not the batch-invariant kernel
  bool cuda_general_attention = false;  // CUDA: every attention step on the general paged kernel
  bool graphs = true;                   // CUDA: decode steps replayed from graphs (supports_graphs)
  // --deterministic: a row's results do not depend on the batch, its place in it, the prefill
  // chunking or the prefix cache (CUDA: fixed-order GEMMs and one attention kernel for prefill and
  // decode; the CPU backend is batch-invariant already).
  bool deterministic = false;
  // CUDA, benchmark only: cuda_set_mac_force_hits(hit rate, clustered) at start (< 0: off).
  float mac_force_hit_rate = -1.0f;
  bool mac_force_clustered = false;
};

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options = {});
// Returns nullptr with `why` filled when CUDA is not built in or no device is present.
std::unique_ptr<Backend> make_cuda_backend(std::string* why, const BackendOptions& options = {});

// The rotary embedding's inverse frequencies, f32 [head_dim / 2] on `be`: computed on the host as
// transformers' rope init functions do (kernels::cpu::rope_inv_freq), then copied to the backend.
Tensor upload_rope_inv_freq(Backend& be, const kernels::RopeFreqParams& p);

}  // namespace macserve::backend
