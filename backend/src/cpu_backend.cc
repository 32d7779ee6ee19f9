// CpuBackend: float32 host tensors (weights f32 or kept in GGUF blocks), ops straight to
// kernels/cpu.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/core/error.h"
#include "macserve/kernels/activation.h"
#include "macserve/kernels/attention.h"
#include "macserve/kernels/embedding.h"
#include "macserve/kernels/gemm.h"
#include "macserve/kernels/kv_write.h"
#include "macserve/kernels/mac_attention.h"
#include "macserve/kernels/quant.h"
#include "macserve/kernels/rms_norm.h"
#include "macserve/kernels/rope.h"

namespace macserve::backend {
namespace {

namespace k = macserve::kernels;

// The kernel format of a weight kept quantized (DType kQ*); false for every other dtype.
bool quant_format(DType dtype, k::QuantFormat* f) {
  switch (dtype) {
    case DType::kQ8_0:
      *f = k::QuantFormat::kQ8_0;
      return true;
    case DType::kQ4_0:
      *f = k::QuantFormat::kQ4_0;
      return true;
    case DType::kQ4_1:
      *f = k::QuantFormat::kQ4_1;
      return true;
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
      return false;
  }
  return false;
}

float* f32(const Tensor& t) {
  MACSERVE_CHECK(t.dtype() == DType::kF32, "expected F32, got {}", dtype_name(t.dtype()));
  return t.data_as<float>();
}

// The fields every paged-attention kernel's Params share (plain and MAC).
template <typename Params>
void fill_common(Params& p, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const Tensor& out, const AttentionMeta& meta, const k::PagedKvLayout& layout,
                 float scale) {
  p.k_cache = f32(k_cache);
  p.v_cache = f32(v_cache);
  p.out = f32(out);
  p.query_start = meta.query_start.data_as<int32_t>();
  p.context_lens = meta.context_lens.data_as<int32_t>();
  p.block_tables = meta.block_tables.data_as<int32_t>();
  p.num_seqs = meta.num_seqs;
  p.max_blocks_per_seq = meta.max_blocks_per_seq;
  p.num_q_heads = q.dim(-2);
  p.scale = scale;
  p.layout = layout;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& options) : blas_gemm_(options.cpu_blas_gemm) {}
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }

  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    return Tensor::empty_host(dtype, std::move(shape));
  }
  Tensor upload_weight(const Tensor& host) override { return host; }
  void copy_to_host(const Tensor& src, void* dst) override {
    std::memcpy(dst, src.data(), src.nbytes());
  }
  void copy_from_host(const void* src, const Tensor& dst) override {
    std::memcpy(dst.data(), src, dst.nbytes());
  }
  void copy(const Tensor& src, const Tensor& dst) override {
    MACSERVE_CHECK(src.nbytes() == dst.nbytes(), "copy of {} bytes into {}", src.nbytes(),
                   dst.nbytes());
    std::memmove(dst.data(), src.data(), src.nbytes());
  }
  void fill_zero(const Tensor& t) override { std::memset(t.data(), 0, t.nbytes()); }
  void synchronize() override {}

  void embedding(const Tensor& ids, const Tensor& table, const Tensor& out) override {
    const int64_t vocab = table.dim(0);
    const int32_t* id = ids.data_as<int32_t>();
    for (int64_t i = 0; i < ids.numel(); ++i)
      if (id[i] < 0 || id[i] >= vocab)
        throw_error(ErrorCode::kInvalidArgument, "token id {} is outside the vocabulary (size {})",
                    id[i], vocab);
    if (k::QuantFormat fmt; quant_format(table.dtype(), &fmt)) {
      k::cpu::dequantize_rows(fmt, table.data_as<uint8_t>(), table.dim(1), id, ids.numel(),
                              f32(out));
      return;
    }
    k::cpu::embedding({id, f32(table), f32(out), ids.numel(), table.dim(1), vocab});
  }
  void embedding_slice(const Tensor& ids, const Tensor& table, int64_t first_id,
                       const Tensor& out) override {
    const int64_t rows = table.dim(0), hidden = table.dim(1);
    const int32_t* id = ids.data_as<int32_t>();
    k::QuantFormat fmt{};
    const bool quantized = quant_format(table.dtype(), &fmt);
    for (int64_t i = 0; i < ids.numel(); ++i) {
      float* row = f32(out) + i * hidden;
      const int32_t local = static_cast<int32_t>(id[i] - first_id);
      if (local < 0 || local >= rows)
        std::memset(row, 0, static_cast<std::size_t>(hidden) * sizeof(float));
      else if (quantized)
        k::cpu::dequantize_rows(fmt, table.data_as<uint8_t>(), hidden, &local, 1, row);
      else
        std::memcpy(row, f32(table) + local * hidden,
                    static_cast<std::size_t>(hidden) * sizeof(float));
    }
  }
  void rms_norm(const Tensor& x, const Tensor* residual, const Tensor& weight, const Tensor& out,
                float eps) override {
    const int64_t dim = weight.numel();
    k::cpu::rms_norm({f32(x), residual ? f32(*residual) : nullptr, f32(weight), f32(out),
                      x.numel() / dim, dim, eps});
  }
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    const int64_t kdim = w.dim(1);
    if (k::QuantFormat fmt; quant_format(w.dtype(), &fmt)) {
      k::cpu::quant_linear({f32(x), w.data_as<uint8_t>(), bias ? f32(*bias) : nullptr, f32(y),
                            x.numel() / kdim, w.dim(0), kdim, fmt});
      return;
    }
    k::cpu::linear({f32(x), f32(w), bias ? f32(*bias) : nullptr, f32(y), x.numel() / kdim, w.dim(0),
                    kdim, blas_gemm_});
  }
  void rope(const Tensor& q, const Tensor& kt, const Tensor& positions,
            const Tensor& inv_freq) override {
    const int64_t head_dim = q.dim(-1);
    k::cpu::rope({f32(q), f32(kt), positions.data_as<int32_t>(), f32(inv_freq), positions.numel(),
                  q.dim(-2), kt.dim(-2), head_dim});
  }
  void rope_kv_write(const Tensor& qkv, const Tensor& q, const Tensor* q_pre, const QkNorm* qk_norm,
                     const Tensor& positions, const Tensor& inv_freq, const Tensor& k_cache,
                     const Tensor& v_cache, const AttentionMeta& meta,
                     const k::PagedKvLayout& layout) override {
    const int64_t T = positions.numel(), D = layout.head_dim, Hq = q.dim(-2);
    MACSERVE_CHECK(q.dim(-1) == D && D % 2 == 0 && D <= 1024 &&
                       qkv.numel() == T * (Hq + 2 * layout.num_kv_heads) * D &&
                       q.numel() == T * Hq * D && meta.slot_mapping.numel() == T,
                   "rope_kv_write shapes: qkv {}, q {}, {} tokens, head_dim {}", qkv.shape_string(),
                   q.shape_string(), T, D);
    if (q_pre != nullptr) MACSERVE_CHECK(q_pre->numel() == q.numel(), "q_pre shape");
    k::cpu::rope_kv_write(
        {f32(qkv), f32(q), q_pre ? f32(*q_pre) : nullptr,
         qk_norm ? f32(*qk_norm->q_weight) : nullptr, qk_norm ? f32(*qk_norm->k_weight) : nullptr,
         qk_norm ? qk_norm->eps : 0.0f, positions.data_as<int32_t>(), f32(inv_freq), f32(k_cache),
         f32(v_cache), meta.slot_mapping.data_as<int64_t>(), T, Hq, layout});
  }
  void swiglu(const Tensor& gate_up, const Tensor& out) override {
    const int64_t inter = gate_up.dim(-1) / 2;
    k::cpu::swiglu({f32(gate_up), f32(out), gate_up.numel() / (2 * inter), inter});
  }
  void add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    k::cpu::add({f32(a), f32(b), f32(out), a.numel()});
  }
  void kv_write(const Tensor& kt, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache,
                const AttentionMeta& meta, const k::PagedKvLayout& layout) override {
    k::cpu::kv_write({f32(kt), f32(v), f32(k_cache), f32(v_cache),
                      meta.slot_mapping.data_as<int64_t>(), meta.slot_mapping.numel(), layout});
  }
  void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       const Tensor& out, const AttentionMeta& meta, const k::PagedKvLayout& layout,
                       float scale) override {
    k::PagedAttentionParams p{};
    fill_common(p, q, k_cache, v_cache, out, meta, layout, scale);
    p.q = f32(q);
    k::cpu::paged_attention(p);
  }
  void mac_attention(const Tensor& q, const Tensor& q_pre, const Tensor& k_cache,
                     const Tensor& v_cache, const Tensor& out, const AttentionMeta& meta,
                     const k::PagedKvLayout& layout, float scale, const MacArgs& mac) override {
    k::MacAttentionParams p{};
    fill_common(p, q, k_cache, v_cache, out, meta, layout, scale);
    p.q_post = f32(q);
    p.q_pre = f32(q_pre);
    p.modes = mac.modes;
    p.ring_slots = mac.ring_slots;
    p.ring_valid_from = mac.ring_valid_from;
    p.rows_from = mac.rows_from;
    p.cfg = *mac.config;
    p.ring = *mac.ring;
    p.decisions = mac.decisions;
    p.kv_tokens_read = mac.kv_tokens_read;
    k::cpu::mac_attention(p);
    plain_attention(q, k_cache, v_cache, out, meta, layout, scale, mac.modes);
    if (mac.audit_exact == nullptr) return;
    // Audit: exact attention for the same queries, squared error and reference over decode rows.
    paged_attention(q, k_cache, v_cache, *mac.audit_exact, meta, layout, scale);
    const float* got = f32(out);
    const float* ref = f32(*mac.audit_exact);
    const int64_t row = q.dim(-2) * q.dim(-1);
    for (int64_t s = 0; s < meta.num_seqs; ++s) {
      if (mac.modes[s] != k::kMacDecode) continue;
      const int64_t t = p.query_start[s];
      for (int64_t i = t * row; i < (t + 1) * row; ++i) {
        const double d = static_cast<double>(got[i]) - ref[i];
        mac.audit_sums[0] += d * d;
        mac.audit_sums[1] += static_cast<double>(ref[i]) * ref[i];
      }
    }
  }
  // The kMacPlain sequences of a MAC step: the plain paged kernel over each run of consecutive
  // plain sequences. A (token, head) row's result does not depend on the other rows of the call, so
  // these rows get exactly the bits --attention full computes for them.
  static void plain_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                              const Tensor& out, const AttentionMeta& meta,
                              const k::PagedKvLayout& layout, float scale, const int8_t* modes) {
    k::PagedAttentionParams p{};
    fill_common(p, q, k_cache, v_cache, out, meta, layout, scale);
    const int64_t row = q.dim(-2) * q.dim(-1);
    std::vector<int32_t> starts;
    for (int64_t s0 = 0; s0 < meta.num_seqs;) {
      if (modes[s0] != k::kMacPlain) {
        ++s0;
        continue;
      }
      int64_t s1 = s0;
      while (s1 < meta.num_seqs && modes[s1] == k::kMacPlain) ++s1;
      const int32_t t0 = p.query_start[s0];
      starts.clear();
      for (int64_t s = s0; s <= s1; ++s) starts.push_back(p.query_start[s] - t0);
      k::PagedAttentionParams run = p;
      run.q = f32(q) + t0 * row;
      run.out = f32(out) + t0 * row;
      run.query_start = starts.data();
      run.context_lens = p.context_lens + s0;
      run.block_tables = p.block_tables + s0 * p.max_blocks_per_seq;
      run.num_seqs = s1 - s0;
      k::cpu::paged_attention(run);
      s0 = s1;
    }
  }
  k::MacRing alloc_mac_ring(int64_t num_slots, int64_t window, int64_t num_q_heads,
                            int64_t head_dim, bool bf16) override {
    const int64_t rows = num_slots * window * num_q_heads;
    Tensor q = Tensor::empty_host(bf16 ? DType::kBF16 : DType::kF32, {rows, head_dim});
    Tensor o = Tensor::empty_host(bf16 ? DType::kBF16 : DType::kF32, {rows, head_dim});
    Tensor lse = Tensor::empty_host(DType::kF32, {rows});
    std::fill(lse.data_as<float>(), lse.data_as<float>() + rows,
              -std::numeric_limits<float>::infinity());
    rings_.push_back({q, o, lse});
    return {q.data(), o.data(), lse.data_as<float>(), num_slots};
  }
  void argmax_rows(const Tensor& logits, const Tensor& out) override {
    MACSERVE_CHECK(
        logits.dtype() == DType::kF32 && out.dtype() == DType::kI32 && logits.dim(0) == out.numel(),
        "argmax_rows: f32 [rows, vocab] -> i32 [rows]");
    const int64_t vocab = logits.dim(1);
    for (int64_t r = 0; r < logits.dim(0); ++r) {
      const float* row = logits.data_as<float>() + r * vocab;
      out.data_as<int32_t>()[r] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }

  void gather_rows(const Tensor& x, const Tensor& rows, const Tensor& out) override {
    const int64_t width = x.numel() / x.dim(0);
    const int32_t* r = rows.data_as<int32_t>();
    for (int64_t i = 0; i < rows.numel(); ++i)
      std::memcpy(f32(out) + i * width, f32(x) + static_cast<int64_t>(r[i]) * width,
                  sizeof(float) * width);
  }

 private:
  struct RingStorage {
    Tensor q, o, lse;
  };
  std::vector<RingStorage> rings_;  // keeps MAC ring memory alive
  bool blas_gemm_ = false;          // BackendOptions::cpu_blas_gemm
};

}  // namespace

void Backend::throw_unsupported(const char* what) const {
  throw_error(ErrorCode::kUnsupported, "{} is not supported by the {} backend", what, name());
}

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace macserve::backend
