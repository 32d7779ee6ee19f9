// CudaBackend: bf16 weights and KV cache, f32 residual stream, one compute stream. GEMMs go to
// cuBLAS (bf16 in, f32 accumulate and out); every other op is a kernel of kernels/cuda. Host <->
// device copies of step inputs go through a pinned staging arena so they stay asynchronous; the one
// synchronisation per step is the copy of the logits to the host.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "cuda_check.h"
#include "cuda_mac.h"
#include "macserve/backend/backend.h"
#include "macserve/backend/cuda_backend.h"
#include "macserve/core/error.h"
#include "macserve/kernels/cuda/argmax.cuh"
#include "macserve/kernels/cuda/attention.cuh"
#include "macserve/kernels/cuda/elementwise.cuh"
#include "macserve/kernels/cuda/linear.cuh"
#include "macserve/kernels/cuda/rms_norm.cuh"
#include "macserve/kernels/cuda/rope.cuh"

namespace macserve::backend {
namespace {

namespace kc = macserve::kernels::cuda;

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw_error(ErrorCode::kInternal, "cuBLAS error {} in {}", static_cast<int>(s), what);
}

void expect(const Tensor& t, DType d, const char* what) {
  MACSERVE_CHECK(t.dtype() == d, "{}: expected {}, got {}", what, dtype_name(d),
                 dtype_name(t.dtype()));
}

constexpr size_t kStagingBytes = size_t{32} << 20;  // pinned arena for step inputs and logits
constexpr size_t kCublasWorkspace = size_t{32} << 20;
// --deterministic: MAC's split-KV chunks, in keys, fixed rather than sized from the step's work.
constexpr int32_t kDeterministicMacChunk = 1024;
constexpr int64_t kUploadChunk = int64_t{64} << 20;  // f32 elements per weight upload chunk

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const BackendOptions& options)
      : device_(device),
        force_general_(options.cuda_general_attention),
        use_graphs_(options.graphs),
        deterministic_(options.deterministic) {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check_cuda(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device),
               "device attributes");
    check_cuda(cudaMallocHost(&staging_, kStagingBytes), "cudaMallocHost");
    check_cublas(cublasCreate(&cublas_), "cublasCreate");
    check_cublas(cublasSetStream(cublas_, stream_), "cublasSetStream");
    check_cuda(cudaMalloc(&cublas_ws_, kCublasWorkspace), "cudaMalloc");
    check_cublas(cublasSetWorkspace(cublas_, cublas_ws_, kCublasWorkspace), "cublasSetWorkspace");
    mac_ = std::make_unique<CudaMac>(*this, stream_);
    if (options.mac_force_hit_rate >= 0.0f)
      mac_->set_force_hits(options.mac_force_hit_rate, options.mac_force_clustered);
    if (deterministic_) mac_->set_fixed_chunk_tokens(kDeterministicMacChunk);
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    for (int64_t h = 0; h < static_cast<int64_t>(graphs_.size()); ++h) drop_graph(h);
    for (auto& r : registered_) cudaHostUnregister(r.first);
    if (bounce_ != nullptr) cudaFreeHost(bounce_);
    cublasDestroy(cublas_);
    cudaFree(cublas_ws_);
    cudaFreeHost(staging_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  DType activation_dtype() const override { return DType::kBF16; }
  DType kv_dtype() const override { return DType::kBF16; }
  int64_t free_memory_bytes() const override {
    size_t free = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    return static_cast<int64_t>(free);
  }
  int64_t total_memory_bytes() const override {
    size_t free = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    return static_cast<int64_t>(total);
  }
  int64_t scratch_bytes(const StepBounds& b) const override {
    if (!deterministic_) return 0;
    kc::PagedAttentionCudaParams p{};
    p.num_seqs = b.max_seqs;
    p.num_tokens = b.max_tokens;
    p.max_blocks_per_seq = b.max_blocks_per_seq;
    p.num_q_heads = b.num_q_heads;
    p.layout = b.layout;
    const int64_t attention = kc::fixed_attention_workspace_floats(p) * 4;
    return 2 * (attention + kc::linear_fixed_max_workspace_bytes());  // grown by doubling
  }
  cudaStream_t stream() const { return stream_; }
  int num_sms() const { return num_sms_; }
  CudaMac& mac() { return *mac_; }

  // ---- memory ----------------------------------------------------------------------------------
  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    Tensor probe(nullptr, dtype, shape);
    const size_t bytes = std::max<size_t>(probe.nbytes(), 16);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess)
      throw_error(ErrorCode::kResourceExhausted, "cudaMalloc of {} bytes failed: {}", bytes,
                  cudaGetErrorString(e));
    // Zeroed like host tensors: nothing may depend on it, but no stale NaNs either.
    check_cuda(cudaMemsetAsync(p, 0, bytes, stream_), "cudaMemsetAsync");
    std::shared_ptr<void> owner(p, [](void* q) { cudaFree(q); });
    return Tensor(p, dtype, std::move(shape), Device::kCuda, std::move(owner));
  }

  Tensor upload_weight(const Tensor& host) override {
    if (is_quantized(host.dtype()))
      throw_error(ErrorCode::kUnsupported,
                  "{} weights are kept quantized only on the CPU (load them as f32)",
                  dtype_name(host.dtype()));
    if (host.dtype() != DType::kF32) {
      Tensor t = alloc(host.dtype(), host.shape());
      copy_from_host(host.data(), t);
      return t;
    }
    // f32 host -> bf16 device, in chunks through an f32 scratch buffer on the device.
    Tensor out = alloc(DType::kBF16, host.shape());
    const int64_t n = host.numel();
    const int64_t chunk = std::min(n, kUploadChunk);
    if (upload_scratch_.numel() < chunk) upload_scratch_ = alloc(DType::kF32, {chunk});
    for (int64_t b = 0; b < n; b += chunk) {
      const int64_t m = std::min(chunk, n - b);
      check_cuda(cudaMemcpyAsync(upload_scratch_.data(), host.data_as<float>() + b,
                                 m * sizeof(float), cudaMemcpyHostToDevice, stream_),
                 "weight upload");
      check_launch(kc::convert_f32_to_bf16(upload_scratch_.data_as<float>(),
                                           out.data_as<uint16_t>() + b, m, stream_),
                   "convert_f32_to_bf16");
      check_cuda(cudaStreamSynchronize(stream_),
                 "weight upload");  // scratch reused by the next chunk
    }
    return out;
  }

  void copy_to_host(const Tensor& src, void* dst) override {
    MACSERVE_CHECK(!capturing_, "copy_to_host during graph capture");
    const size_t bytes = src.nbytes();
    if (bytes <= kStagingBytes / 4) {
      check_cuda(cudaStreamSynchronize(stream_), "sync");  // staging may still feed earlier copies
      check_cuda(cudaMemcpyAsync(staging_, src.data(), bytes, cudaMemcpyDeviceToHost, stream_),
                 "copy_to_host");
      check_cuda(cudaStreamSynchronize(stream_), "copy_to_host");
      std::memcpy(dst, staging_, bytes);
    } else {
      // Large (the logits of a big batch: 64 x 128256 f32 = 32.8 MB). Straight into the caller's
      // buffer when it is page-locked (register_host_buffer: the model runner's logits), else
      // through a page-locked bounce buffer; a pageable copy ran at a fraction of the bus speed and
      // was 28% of the batch-64 step.
      const bool pinned = is_registered(dst, bytes);
      if (!pinned && bytes > bounce_bytes_) {
        if (bounce_ != nullptr) cudaFreeHost(bounce_);
        bounce_ = nullptr;
        bounce_bytes_ = 0;
        check_cuda(cudaMallocHost(&bounce_, bytes), "cudaMallocHost");
        bounce_bytes_ = bytes;
      }
      check_cuda(cudaMemcpyAsync(pinned ? dst : bounce_, src.data(), bytes, cudaMemcpyDeviceToHost,
                                 stream_),
                 "copy_to_host");
      check_cuda(cudaStreamSynchronize(stream_), "copy_to_host");
      if (!pinned) std::memcpy(dst, bounce_, bytes);
    }
    staging_used_ = 0;
  }

  void copy_to_host_async(const Tensor& src, void* dst) override {
    MACSERVE_CHECK(!capturing_, "copy_to_host_async during graph capture");
    if (!is_registered(dst, src.nbytes())) {
      copy_to_host(src, dst);
      return;
    }
    check_cuda(cudaMemcpyAsync(dst, src.data(), src.nbytes(), cudaMemcpyDeviceToHost, stream_),
               "copy_to_host_async");
  }

  void copy_from_host(const void* src, const Tensor& dst) override {
    MACSERVE_CHECK(!capturing_, "copy_from_host during graph capture");
    const size_t bytes = dst.nbytes();
    if (bytes == 0) return;
    if (bytes > kStagingBytes / 4) {  // large (weights, test data): pageable copy, synchronous
      check_cuda(cudaMemcpyAsync(dst.data(), src, bytes, cudaMemcpyHostToDevice, stream_),
                 "copy_from_host");
      check_cuda(cudaStreamSynchronize(stream_), "copy_from_host");
      return;
    }
    const size_t aligned = (bytes + 255) & ~size_t{255};
    if (staging_used_ + aligned > kStagingBytes) {  // arena full: wait for its copies, reuse it
      check_cuda(cudaStreamSynchronize(stream_), "sync");
      staging_used_ = 0;
    }
    char* stage = static_cast<char*>(staging_) + staging_used_;
    staging_used_ += aligned;
    std::memcpy(stage, src, bytes);
    check_cuda(cudaMemcpyAsync(dst.data(), stage, bytes, cudaMemcpyHostToDevice, stream_),
               "copy_from_host");
  }

  void copy(const Tensor& src, const Tensor& dst) override {
    MACSERVE_CHECK(src.nbytes() == dst.nbytes(), "copy of {} bytes into {}", src.nbytes(),
                   dst.nbytes());
    check_cuda(
        cudaMemcpyAsync(dst.data(), src.data(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_),
        "copy");
  }

  void fill_zero(const Tensor& t) override {
    check_cuda(cudaMemsetAsync(t.data(), 0, t.nbytes(), stream_), "cudaMemsetAsync");
  }

  void register_host_buffer(void* p, size_t bytes) override {
    if (p == nullptr || bytes == 0) return;
    check_cuda(cudaHostRegister(p, bytes, cudaHostRegisterDefault), "cudaHostRegister");
    registered_.emplace_back(static_cast<char*>(p), bytes);
  }
  void unregister_host_buffer(void* p) override {
    auto it = std::find_if(registered_.begin(), registered_.end(),
                           [&](const auto& r) { return r.first == p; });
    if (it == registered_.end()) return;
    cudaHostUnregister(p);
    registered_.erase(it);
  }

  // ---- graphs
  // ------------------------------------------------------------------------------------
  bool supports_graphs() const override { return use_graphs_; }
  void begin_capture() override {
    MACSERVE_CHECK(!capturing_, "nested graph capture");
    // Thread-local mode: a stray allocation or synchronous call on this thread fails the capture
    // instead of silently running outside the graph.
    check_cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
               "cudaStreamBeginCapture");
    capturing_ = true;
  }
  int64_t end_capture() override {
    MACSERVE_CHECK(capturing_, "end_capture without begin_capture");
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    check_cuda(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check_cuda(e, "cudaGraphInstantiate");
    graphs_.push_back(exec);
    return static_cast<int64_t>(graphs_.size()) - 1;
  }
  void abort_capture() override {
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();  // clear the capture's error
  }
  void replay_graph(int64_t handle) override {
    MACSERVE_CHECK(
        handle >= 0 && handle < static_cast<int64_t>(graphs_.size()) && graphs_[handle] != nullptr,
        "unknown graph {}", handle);
    check_cuda(cudaGraphLaunch(graphs_[static_cast<std::size_t>(handle)], stream_),
               "cudaGraphLaunch");
  }
  void drop_graph(int64_t handle) override {
    if (handle < 0 || handle >= static_cast<int64_t>(graphs_.size())) return;
    auto& g = graphs_[static_cast<std::size_t>(handle)];
    if (g == nullptr) return;
    cudaStreamSynchronize(stream_);
    cudaGraphExecDestroy(g);
    g = nullptr;  // handles are never reused
    if (std::all_of(graphs_.begin(), graphs_.end(), [](cudaGraphExec_t x) { return x == nullptr; }))
      retired_.clear();
  }

  void synchronize() override {
    check_cuda(cudaStreamSynchronize(stream_), "synchronize");
    staging_used_ = 0;
  }

  // ---- ops
  // ---------------------------------------------------------------------------------------
  void embedding(const Tensor& ids, const Tensor& table, const Tensor& out) override {
    expect(table, DType::kBF16, "embedding table");
    expect(out, DType::kF32, "embedding out");
    check_launch(kc::embedding({ids.data_as<int32_t>(), table.data(), out.data_as<float>(),
                                ids.numel(), table.dim(1)},
                               stream_),
                 "embedding");
  }

  void rms_norm(const Tensor& x, const Tensor* residual, const Tensor& weight, const Tensor& out,
                float eps) override {
    expect(x, DType::kF32, "rms_norm x");
    expect(weight, DType::kBF16, "rms_norm weight");
    const int64_t dim = weight.numel();
    check_launch(kc::rms_norm({x.data_as<float>(), residual ? residual->data_as<float>() : nullptr,
                               weight.data(), out.data(), x.numel() / dim, dim, eps,
                               out.dtype() == DType::kBF16},
                              stream_),
                 "rms_norm");
  }

  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    expect(w, DType::kBF16, "linear weight");
    expect(y, DType::kF32, "linear out");
    const int64_t k = w.dim(1), n = w.dim(0), m = x.numel() / k;
    if (m == 0) return;
    const void* xb = bf16_rows(x);
    const kc::LinearGemvParams gemv{xb, w.data(), y.data_as<float>(), m, n, k};
    if (deterministic_) {
      linear_fixed(xb, w, y, m, n, k);
    } else if (use_gemv(gemv)) {
      check_launch(kc::linear_gemv(gemv, stream_), "linear_gemv");
    } else {
      // Row-major y[m, n] = x[m, k] w[n, k]^T is column-major y^T[n, m] = w^T... : C = op(A) B
      // with A = w viewed column-major [k, n] (transposed), B = x viewed column-major [k, m].
      const float alpha = 1.0f, beta = 0.0f;
      check_cublas(
          cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                       static_cast<int>(k), &alpha, w.data(), CUDA_R_16BF, static_cast<int>(k), xb,
                       CUDA_R_16BF, static_cast<int>(k), &beta, y.data(), CUDA_R_32F,
                       static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
    }
    if (bias != nullptr) {
      expect(*bias, DType::kBF16, "linear bias");
      check_launch(kc::add_bias(y.data_as<float>(), bias->data(), m, n, stream_), "add_bias");
    }
  }

  void linear_swiglu(const Tensor& x, const Tensor& w_gate_up, const Tensor& gate_up,
                     const Tensor& act) override {
    expect(w_gate_up, DType::kBF16, "linear_swiglu weight");
    const int64_t k = w_gate_up.dim(1), inter = w_gate_up.dim(0) / 2, m = x.numel() / k;
    if (deterministic_ || x.dtype() != DType::kBF16 ||
        !use_gemv({x.data(), w_gate_up.data(), nullptr, m, 2 * inter, k})) {
      Backend::linear_swiglu(x, w_gate_up, gate_up, act);
      return;
    }
    check_launch(kc::linear_gemv_swiglu({x.data(), w_gate_up.data(), act.data(),
                                         act.dtype() == DType::kBF16, m, inter, k},
                                        stream_),
                 "linear_gemv_swiglu");
  }

  // The GEMV for one row of x (batch-1 decode, the lm_head of one sampled row): it read the 8B
  // model's weights at 0.75-0.92 of the H100's bandwidth against cuBLAS's 0.63-0.85; from two rows
  // on cuBLAS was as fast or faster (log run 27).
  static bool use_gemv(const kc::LinearGemvParams& p) {
    return p.m == 1 && kc::linear_gemv_supports(p);
  }

  // x's rows as bf16: x itself (callers normally pass bf16 activations), else converted into a
  // scratch buffer.
  const void* bf16_rows(const Tensor& x) {
    if (x.dtype() != DType::kF32) {
      expect(x, DType::kBF16, "linear x");
      return x.data();
    }
    if (x_scratch_.numel() < x.numel()) {
      if (any_graph()) retired_.push_back(x_scratch_);  // captured graphs still point at it
      x_scratch_ = alloc(DType::kBF16, {x.numel()});
    }
    check_launch(kc::convert_f32_to_bf16(x.data_as<float>(), x_scratch_.data(), x.numel(), stream_),
                 "convert");
    return x_scratch_.data();
  }

  // --deterministic's GEMM (linear.cuh): one summation order per output whatever m is.
  void linear_fixed(const void* xb, const Tensor& w, const Tensor& y, int64_t m, int64_t n,
                    int64_t k) {
    float* ws = grow_workspace(linear_ws_, kc::linear_fixed_workspace_floats(m, n, k), "linear");
    check_launch(kc::linear_fixed({xb, w.data(), y.data_as<float>(), m, n, k}, ws, stream_),
                 "linear_fixed");
  }

  // An f32 workspace of at least `floats` (null while none is needed), grown to twice its size when
  // short. The eager step before a capture grows it (step_executor); graphs captured before keep
  // pointing at the old buffer, so it is retired rather than freed.
  float* grow_workspace(Tensor& ws, int64_t floats, const char* what) {
    if (floats > ws.numel()) {
      MACSERVE_CHECK(!capturing_, "{} workspace growth during graph capture", what);
      if (any_graph()) retired_.push_back(ws);
      ws = alloc(DType::kF32, {std::max(floats, 2 * ws.numel())});
    }
    return ws.defined() ? ws.data_as<float>() : nullptr;
  }

  void rope(const Tensor& q, const Tensor& k, const Tensor& positions,
            const Tensor& inv_freq) override {
    expect(q, DType::kF32, "rope q");
    expect(k, DType::kF32, "rope k");
    check_launch(
        kc::rope({q.data_as<float>(), k.data_as<float>(), positions.data_as<int32_t>(),
                  inv_freq.data_as<float>(), positions.numel(), q.dim(-2), k.dim(-2), q.dim(-1)},
                 stream_),
        "rope");
  }

  void rope_kv_write(const Tensor& qkv, const Tensor& q, const Tensor* q_pre, const QkNorm* qk_norm,
                     const Tensor& positions, const Tensor& inv_freq, const Tensor& k_cache,
                     const Tensor& v_cache, const AttentionMeta& meta,
                     const kernels::PagedKvLayout& layout) override {
    expect(qkv, DType::kF32, "rope qkv");
    expect(q, DType::kF32, "rope q");
    expect(k_cache, DType::kBF16, "k_cache");
    const int64_t T = positions.numel(), D = layout.head_dim, Hq = q.dim(-2);
    MACSERVE_CHECK(q.dim(-1) == D && D % 2 == 0 &&
                       qkv.numel() == T * (Hq + 2 * layout.num_kv_heads) * D &&
                       q.numel() == T * Hq * D,
                   "rope_kv_write shapes: qkv {}, q {}, {} tokens, head_dim {}", qkv.shape_string(),
                   q.shape_string(), T, D);
    MACSERVE_CHECK(meta.slot_mapping.numel() == T, "slot_mapping/positions size");
    if (q_pre != nullptr)
      MACSERVE_CHECK(q_pre->numel() == q.numel() &&
                         (q_pre->dtype() == DType::kF32 || q_pre->dtype() == DType::kBF16),
                     "q_pre shape/dtype");
    if (qk_norm != nullptr) {
      expect(*qk_norm->q_weight, DType::kBF16, "q_norm weight");
      expect(*qk_norm->k_weight, DType::kBF16, "k_norm weight");
    }
    check_launch(
        kc::rope_kv_write(
            {qkv.data_as<float>(), q.data_as<float>(), q_pre ? q_pre->data() : nullptr,
             q_pre && q_pre->dtype() == DType::kBF16, qk_norm ? qk_norm->q_weight->data() : nullptr,
             qk_norm ? qk_norm->k_weight->data() : nullptr, qk_norm ? qk_norm->eps : 0.0f,
             positions.data_as<int32_t>(), inv_freq.data_as<float>(), k_cache.data(),
             v_cache.data(), meta.slot_mapping.data_as<int64_t>(), T, Hq, layout},
            stream_),
        "rope_kv_write");
  }

  void swiglu(const Tensor& gate_up, const Tensor& out) override {
    expect(gate_up, DType::kF32, "swiglu gate_up");
    const int64_t inter = gate_up.dim(-1) / 2;
    check_launch(kc::swiglu({gate_up.data_as<float>(), out.data(), gate_up.numel() / (2 * inter),
                             inter, out.dtype() == DType::kBF16},
                            stream_),
                 "swiglu");
  }

  void add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    expect(a, DType::kF32, "add");
    check_launch(kc::add_f32(a.data_as<float>(), b.data_as<float>(), out.data_as<float>(),
                             a.numel(), stream_),
                 "add");
  }

  void kv_write(const Tensor& k, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache,
                const AttentionMeta& meta, const kernels::PagedKvLayout& layout) override {
    expect(k_cache, DType::kBF16, "k_cache");
    check_launch(
        kc::kv_write({k.data_as<float>(), v.data_as<float>(), k_cache.data(), v_cache.data(),
                      meta.slot_mapping.data_as<int64_t>(), meta.slot_mapping.numel(), layout},
                     stream_),
        "kv_write");
  }

  void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       const Tensor& out, const AttentionMeta& meta,
                       const kernels::PagedKvLayout& layout, float scale) override {
    expect(q, DType::kF32, "attention q");
    expect(k_cache, DType::kBF16, "attention k_cache");
    kc::PagedAttentionCudaParams p{q.data_as<float>(),
                                   k_cache.data(),
                                   v_cache.data(),
                                   out.data(),
                                   meta.query_start.data_as<int32_t>(),
                                   meta.context_lens.data_as<int32_t>(),
                                   meta.block_tables.data_as<int32_t>(),
                                   meta.num_seqs,
                                   q.dim(0),
                                   meta.max_blocks_per_seq,
                                   q.dim(-2),
                                   scale,
                                   layout,
                                   out.dtype() == DType::kBF16};
    p.skip = meta.skip_mac_decode;
    const int64_t group = p.num_q_heads / layout.num_kv_heads;
    // --deterministic: fixed key segments for every row (attention.cuh, paged_attention_fixed), so
    // a decode row, a prefill row, a recomputed or a cached one meet the same computation (the
    // split-KV decode kernel's splits follow the batch, and its numerics differ from the prefill
    // kernel's).
    if (deterministic_ && !force_general_ &&
        kc::prefill_flash_supported(layout.head_dim, group, layout.block_size)) {
      float* ws = grow_workspace(workspace_, kc::fixed_attention_workspace_floats(p), "attention");
      check_launch(kc::paged_attention_fixed(p, meta.max_query_len, ws, stream_),
                   "paged_attention_fixed");
      return;
    }
    const bool decode = meta.max_query_len == 1 && meta.max_context_len > 0 && !force_general_ &&
                        !deterministic_ &&
                        kc::decode_supported(layout.head_dim, group, layout.block_size);
    if (!decode) {
      if (!force_general_ && kc::prefill_flash_supported(layout.head_dim, group, layout.block_size))
        check_launch(kc::paged_prefill_flash(p, stream_), "paged_prefill_flash");
      else
        check_launch(kc::paged_attention_general(p, stream_), "paged_attention_general");
      return;
    }
    // Plan once per step: every layer of a step has the same batch and context lengths.
    const PlanKey key{meta.num_seqs, meta.max_context_len, p.num_q_heads, layout.num_kv_heads,
                      layout.head_dim};
    if (!(key == plan_key_)) {
      plan_ = kc::plan_decode(p, meta.max_context_len, num_sms_);
      plan_key_ = key;
    }
    float* ws = grow_workspace(workspace_, plan_.workspace_floats, "decode");
    check_launch(kc::paged_decode(p, plan_, ws, stream_), "paged_decode");
  }

  void mac_attention(const Tensor& q, const Tensor& q_pre, const Tensor& k_cache,
                     const Tensor& v_cache, const Tensor& out, const AttentionMeta& meta,
                     const kernels::PagedKvLayout& layout, float scale,
                     const MacArgs& mac) override {
    mac_->attention(q, q_pre, k_cache, v_cache, out, meta, layout, scale, mac, capturing_,
                    any_graph(), &retired_);
  }
  kernels::MacRing alloc_mac_ring(int64_t num_slots, int64_t window, int64_t num_q_heads,
                                  int64_t head_dim, bool bf16) override {
    return mac_->alloc_ring(num_slots, window, num_q_heads, head_dim, bf16);
  }
  std::string mac_unsupported(int64_t head_dim, int64_t group, int64_t block_size) const override {
    return CudaMac::unsupported(head_dim, group, block_size);
  }

  void argmax_rows(const Tensor& logits, const Tensor& out) override {
    expect(logits, DType::kF32, "argmax_rows logits");
    expect(out, DType::kI32, "argmax_rows out");
    MACSERVE_CHECK(logits.dim(0) == out.numel(), "argmax_rows: {} rows, {} outputs", logits.dim(0),
                   out.numel());
    check_launch(kc::argmax_rows(logits.data_as<float>(), logits.dim(0), logits.dim(1),
                                 out.data_as<int32_t>(), stream_),
                 "argmax_rows");
  }

  void gather_rows(const Tensor& x, const Tensor& rows, const Tensor& out) override {
    const int64_t row_bytes = static_cast<int64_t>(x.nbytes()) / x.dim(0);
    check_launch(kc::gather_rows(x.data(), rows.data_as<int32_t>(), out.data(), rows.numel(),
                                 row_bytes, stream_),
                 "gather_rows");
  }

 private:
  bool is_registered(const void* p, size_t bytes) const {
    const char* c = static_cast<const char*>(p);
    return std::any_of(registered_.begin(), registered_.end(), [&](const auto& r) {
      return c >= r.first && c + bytes <= r.first + r.second;
    });
  }
  bool any_graph() const {
    return std::any_of(graphs_.begin(), graphs_.end(),
                       [](cudaGraphExec_t x) { return x != nullptr; });
  }

  struct PlanKey {
    int64_t seqs = -1, ctx = -1, hq = -1, hkv = -1, d = -1;
    bool operator==(const PlanKey& o) const {
      return seqs == o.seqs && ctx == o.ctx && hq == o.hq && hkv == o.hkv && d == o.d;
    }
  };

  int device_;
  cudaStream_t stream_ = nullptr;
  int num_sms_ = 0;
  void* staging_ = nullptr;
  size_t staging_used_ = 0;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_ws_ = nullptr;
  bool force_general_ = false;  // BackendOptions::cuda_general_attention
  bool use_graphs_ = true;      // BackendOptions::graphs
  bool deterministic_ = false;  // BackendOptions::deterministic
  Tensor linear_ws_;            // f32 segment sums of linear_fixed
  Tensor upload_scratch_, x_scratch_, workspace_;
  PlanKey plan_key_;
  bool capturing_ = false;
  std::vector<cudaGraphExec_t> graphs_;  // by handle; null once dropped
  std::vector<Tensor> retired_;          // buffers replaced while graphs that use them exist
  std::vector<std::pair<char*, size_t>> registered_;  // page-locked caller buffers
  void* bounce_ = nullptr;
  size_t bounce_bytes_ = 0;
  kc::DecodePlan plan_;
  std::unique_ptr<CudaMac> mac_;  // MAC-Attention: rings, dispatch, audit (cuda_mac.cc)
};

CudaBackend& as_cuda(Backend& be) {
  auto* c = dynamic_cast<CudaBackend*>(&be);
  MACSERVE_CHECK(c != nullptr, "not a CUDA backend: {}", be.name());
  return *c;
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(std::string* why, const BackendOptions& options) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    if (why != nullptr)
      *why = e != cudaSuccess ? fmt::format("no usable CUDA device ({})", cudaGetErrorString(e))
                              : std::string("no CUDA device is present");
    return nullptr;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major < 9) {
    if (why != nullptr)
      *why = fmt::format(
          "device 0 ({}) has compute capability {}.{}; this build targets sm_90a (H100/H200)",
          prop.name, prop.major, prop.minor);
    return nullptr;
  }
  return std::make_unique<CudaBackend>(0, options);
}

void* cuda_stream(Backend& be) { return as_cuda(be).stream(); }
void cuda_fill_uniform(Backend& be, const Tensor& t, uint64_t seed, float scale) {
  MACSERVE_CHECK(t.dtype() == DType::kBF16 || t.dtype() == DType::kF32, "fill of {}",
                 dtype_name(t.dtype()));
  check_launch(kc::fill_uniform(t.data(), t.numel(), t.dtype() == DType::kBF16, seed, scale,
                                as_cuda(be).stream()),
               "fill_uniform");
}
int cuda_num_sms(Backend& be) { return as_cuda(be).num_sms(); }
void cuda_set_mac_force_hits(Backend& be, float hit_rate, bool clustered) {
  as_cuda(be).mac().set_force_hits(hit_rate, clustered);
}

}  // namespace macserve::backend
