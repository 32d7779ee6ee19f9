// StepExecutor on the CPU: upload of a step's arrays, the declared workspace sliced to the step,
// MAC telemetry unpacked per sequence, and the decode-graph bookkeeping (padding to a bucket,
// eager run + capture, replay, drop on workspace growth, fallback when a capture fails) through a
// CPU backend that pretends to record graphs.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "macserve/backend/step_executor.h"
#include "macserve/core/error.h"

namespace macserve::backend {
namespace {

// The CPU backend with graph calls counted: ops between begin_capture and end_capture still run
// (the tests look at what the layers saw, not at replayed results), and an allocation while
// capturing throws as it does on CUDA.
class GraphCountingBackend final : public Backend {
 public:
  int captures = 0, aborts = 0, replays = 0, drops = 0;
  bool capturing = false;

  std::string name() const override { return "cpu-graphs"; }
  Device device() const override { return Device::kCpu; }
  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    MACSERVE_CHECK(!capturing, "allocation during graph capture");
    return cpu_->alloc(dtype, std::move(shape));
  }
  Tensor upload_weight(const Tensor& host) override { return cpu_->upload_weight(host); }
  void copy_to_host(const Tensor& src, void* dst) override { cpu_->copy_to_host(src, dst); }
  void copy_from_host(const void* src, const Tensor& dst) override {
    cpu_->copy_from_host(src, dst);
  }
  void copy(const Tensor& src, const Tensor& dst) override { cpu_->copy(src, dst); }
  void fill_zero(const Tensor& t) override { cpu_->fill_zero(t); }
  void synchronize() override {}

  bool supports_graphs() const override { return true; }
  void begin_capture() override { capturing = true; }
  int64_t end_capture() override {
    capturing = false;
    return captures++;
  }
  void abort_capture() override {
    capturing = false;
    ++aborts;
  }
  void replay_graph(int64_t) override { ++replays; }
  void drop_graph(int64_t) override { ++drops; }

  // Ops the executor never calls.
  void embedding(const Tensor&, const Tensor&, const Tensor&) override { ADD_FAILURE(); }
  void rms_norm(const Tensor&, const Tensor*, const Tensor&, const Tensor&, float) override {
    ADD_FAILURE();
  }
  void linear(const Tensor&, const Tensor&, const Tensor*, const Tensor&) override {
    ADD_FAILURE();
  }
  void rope(const Tensor&, const Tensor&, const Tensor&, const Tensor&) override { ADD_FAILURE(); }
  void rope_kv_write(const Tensor&, const Tensor&, const Tensor*, const QkNorm*, const Tensor&,
                     const Tensor&, const Tensor&, const Tensor&, const AttentionMeta&,
                     const kernels::PagedKvLayout&) override {
    ADD_FAILURE();
  }
  void swiglu(const Tensor&, const Tensor&) override { ADD_FAILURE(); }
  void add(const Tensor&, const Tensor&, const Tensor&) override { ADD_FAILURE(); }
  void kv_write(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AttentionMeta&,
                const kernels::PagedKvLayout&) override {
    ADD_FAILURE();
  }
  void paged_attention(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                       const AttentionMeta&, const kernels::PagedKvLayout&, float) override {
    ADD_FAILURE();
  }
  void mac_attention(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                     const AttentionMeta&, const kernels::PagedKvLayout&, float,
                     const MacArgs&) override {
    ADD_FAILURE();
  }
  kernels::MacRing alloc_mac_ring(int64_t, int64_t, int64_t, int64_t, bool) override { return {}; }
  void gather_rows(const Tensor&, const Tensor&, const Tensor&) override { ADD_FAILURE(); }
  void argmax_rows(const Tensor&, const Tensor&) override { ADD_FAILURE(); }

 private:
  std::unique_ptr<Backend> cpu_ = make_cpu_backend();
};

constexpr int64_t kLayers = 2, kHq = 4, kHkv = 2, kVocab = 5, kBlockSize = 4;

std::vector<int32_t> ints(const Tensor& t) {
  const int32_t* p = t.data_as<int32_t>();
  return {p, p + t.numel()};
}

// A KV view with the executor's layer count (validate looks at nothing else but the block size).
KvCacheView kv_view(bool mac) {
  KvCacheView kv;
  kv.k.resize(kLayers);
  kv.v.resize(kLayers);
  kv.layout = {64, kHkv, kBlockSize, 8};
  if (mac) kv.mac_rings.resize(kLayers);
  return kv;
}

// Host arrays of one step, built like the model runner builds StepInputs.
struct Step {
  std::vector<int32_t> token_ids, positions, query_start{0}, context_lens, block_tables,
      logits_rows;
  std::vector<int64_t> slot_mapping;
  int64_t max_blocks = 0;
  std::vector<int8_t> modes;
  std::vector<int32_t> slots, valid_from, rows_from;
  bool mac = false, audit = false;

  // A sequence of `n` new tokens ending at context `ctx`, its blocks 10 * (s + 1) + b.
  void add(int32_t n, int32_t ctx, bool decode = false) {
    const auto s = static_cast<int32_t>(context_lens.size());
    for (int32_t i = 0; i < n; ++i) {
      token_ids.push_back(100 * (s + 1) + i);
      positions.push_back(ctx - n + i);
      slot_mapping.push_back(ctx - n + i);
    }
    query_start.push_back(static_cast<int32_t>(token_ids.size()));
    context_lens.push_back(ctx);
    logits_rows.push_back(static_cast<int32_t>(token_ids.size()) - 1);
    modes.push_back(decode ? kernels::kMacDecode : kernels::kMacExact);
    slots.push_back(s);
    valid_from.push_back(0);
    rows_from.push_back(0);
  }
  StepArrays arrays() {
    for (int64_t c : context_lens)
      max_blocks = std::max(max_blocks, (c + kBlockSize - 1) / kBlockSize);
    block_tables.clear();
    for (std::size_t s = 0; s < context_lens.size(); ++s)
      for (int64_t b = 0; b < max_blocks; ++b)
        block_tables.push_back(static_cast<int32_t>(10 * (s + 1) + b));
    StepArrays a;
    a.token_ids = token_ids;
    a.positions = positions;
    a.slot_mapping = slot_mapping;
    a.query_start = query_start;
    a.context_lens = context_lens;
    a.block_tables = block_tables;
    a.max_blocks_per_seq = max_blocks;
    a.logits_rows = logits_rows;
    if (mac) {
      a.mac = true;
      a.mac_audit = audit;
      a.mac_modes = modes;
      a.mac_ring_slots = slots;
      a.mac_ring_valid_from = valid_from;
      a.mac_rows_from = rows_from;
    }
    return a;
  }
};

struct Fixture {
  explicit Fixture(Backend& be) : exec(be, {kLayers, kHq, kHkv}) {
    hidden = exec.add_buffer(StepExecutor::Rows::kTokens, DType::kF32, {kHq, 3});
    logits = exec.add_buffer(StepExecutor::Rows::kLogits, DType::kF32, {kVocab});
  }
  // Layers that record what they saw and return the logits buffer.
  StepExecutor::Layers layers() {
    return [this](const DeviceStep& st) {
      ++calls;
      seen_tokens = ints(st.token_ids);
      seen_slots.assign(st.meta.slot_mapping.data_as<int64_t>(),
                        st.meta.slot_mapping.data_as<int64_t>() + st.meta.slot_mapping.numel());
      seen_context = ints(st.meta.context_lens);
      seen_tables_shape = st.meta.block_tables.shape();
      seen_hidden_shape = st.buffer(hidden).shape();
      seen_max_context = st.meta.max_context_len;
      seen_max_query = st.meta.max_query_len;
      if (st.mac) seen_ring_slots = ints(st.mac_ring_slots);
      return st.buffer(logits);
    };
  }
  StepExecutor exec;
  int hidden = 0, logits = 0, calls = 0;
  std::vector<int32_t> seen_tokens, seen_context, seen_ring_slots;
  std::vector<int64_t> seen_slots, seen_tables_shape, seen_hidden_shape;
  int64_t seen_max_context = 0, seen_max_query = 0;
};

TEST(StepExecutor, EagerStepUploadsItsArraysAndSlicesTheWorkspace) {
  auto be = make_cpu_backend();
  Fixture f(*be);
  Step s;
  s.add(3, 3);
  s.add(1, 9);
  const Tensor out = f.exec.run(s.arrays(), kv_view(false), false, f.layers());
  EXPECT_EQ(f.calls, 1);
  EXPECT_EQ(out.shape(), (std::vector<int64_t>{2, kVocab}));
  EXPECT_EQ(f.seen_tokens, (std::vector<int32_t>{100, 101, 102, 200}));
  EXPECT_EQ(f.seen_slots, (std::vector<int64_t>{0, 1, 2, 8}));
  EXPECT_EQ(f.seen_context, (std::vector<int32_t>{3, 9}));
  EXPECT_EQ(f.seen_tables_shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.seen_hidden_shape, (std::vector<int64_t>{4, kHq, 3}));
  EXPECT_EQ(f.seen_max_query, 3);
  EXPECT_EQ(f.seen_max_context, 9);
  MacStepOutputs mo;
  EXPECT_THROW(f.exec.read_mac_outputs(mo), Error);  // the step had no MAC outputs
}

TEST(StepExecutor, RejectsInconsistentSteps) {
  auto be = make_cpu_backend();
  Fixture f(*be);
  Step s;
  s.add(2, 2);
  StepArrays a = s.arrays();
  a.positions = a.positions.subspan(1);
  EXPECT_THROW(f.exec.run(a, kv_view(false), false, f.layers()), Error);
  Step m;
  m.mac = true;
  m.add(2, 2, /*decode=*/true);  // a MAC decode needs exactly one query
  EXPECT_THROW(f.exec.run(m.arrays(), kv_view(true), true, f.layers()), Error);
  EXPECT_EQ(f.calls, 0);
}

TEST(StepExecutor, MacTelemetryIsUnpackedPerSequence) {
  auto be = make_cpu_backend();
  Fixture f(*be);
  Step s;
  s.mac = s.audit = true;
  s.add(3, 3);                   // exact: reports its whole context
  s.add(1, 7, /*decode=*/true);  // decode: reports what the layers wrote
  const KvCacheView kv = kv_view(true);
  StepExecutor::Layers layers = [&](const DeviceStep& st) {
    EXPECT_TRUE(st.mac_audit);
    EXPECT_EQ(st.mac_num_decode, 1);
    const Tensor exact;
    for (int64_t l = 0; l < kLayers; ++l) {
      const Backend::MacArgs a = st.mac_args(l, kv.mac_rings[l], exact);
      EXPECT_EQ(a.layer, l);
      EXPECT_EQ(a.audit_exact, &exact);
      for (int64_t h = 0; h < kHq; ++h)
        a.decisions[kHq + h] = {1, static_cast<int8_t>(h % 2), 3, 0.5f};
      a.kv_tokens_read[1] = 10 + l;
      a.audit_sums[0] += 1.0 + l;
      a.audit_sums[1] += 2.0;
    }
    return st.buffer(f.logits);
  };
  f.exec.run(s.arrays(), kv, true, layers);
  MacStepOutputs out;
  f.exec.read_mac_outputs(out);
  ASSERT_EQ(out.decisions.size(), static_cast<std::size_t>(kLayers * 2 * kHq));
  for (int64_t l = 0; l < kLayers; ++l) {
    EXPECT_EQ(out.kv_tokens_read[l * 2], 3 * kHkv);
    EXPECT_EQ(out.kv_tokens_read[l * 2 + 1], 10 + l);
    for (int64_t h = 0; h < kHq; ++h) {
      EXPECT_EQ(out.decisions[(l * 2) * kHq + h].eligible, 0);
      EXPECT_EQ(out.decisions[(l * 2 + 1) * kHq + h].hit, h % 2);
    }
    EXPECT_EQ(out.audit_err_sq[l], 1.0 + l);
    EXPECT_EQ(out.audit_ref_sq[l], 2.0);
  }
}

TEST(StepExecutor, DecodeStepsArePaddedCapturedReplayedAndDroppedWhenBuffersMove) {
  GraphCountingBackend be;
  Fixture f(be);
  const KvCacheView kv = kv_view(false);
  Step s;
  for (int q = 0; q < 3; ++q) s.add(1, 17 + q);  // 3 rows -> bucket 4, 5 blocks -> width 8
  const Tensor first = f.exec.run(s.arrays(), kv, false, f.layers());
  EXPECT_EQ(f.calls, 2);  // eager, then captured
  EXPECT_EQ(be.captures, 1);
  EXPECT_EQ(first.dim(0), 3);
  EXPECT_EQ(f.seen_tokens, (std::vector<int32_t>{100, 200, 300, 0}));
  EXPECT_EQ(f.seen_slots.back(), -1);  // a padding row writes no K/V
  EXPECT_EQ(f.seen_context.back(), 1);
  EXPECT_EQ(f.seen_tables_shape, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(f.seen_max_context, 8 * kBlockSize);  // planned for the width
  const Tensor again = f.exec.run(s.arrays(), kv, false, f.layers());
  EXPECT_EQ(f.calls, 2);
  EXPECT_EQ(be.replays, 1);
  EXPECT_EQ(again.data(), first.data());
  EXPECT_EQ(again.dim(0), 3);

  Step wide;
  for (int q = 0; q < 5; ++q) wide.add(1, 5);  // bucket 8: the workspace grows
  f.exec.run(wide.arrays(), kv, false, f.layers());
  EXPECT_EQ(be.drops, 1);  // the bucket-4 graph pointed at the old buffers
  EXPECT_EQ(be.captures, 2);

  f.exec.set_graphs(false);
  EXPECT_EQ(be.drops, 2);
  f.calls = 0;
  f.exec.run(wide.arrays(), kv, false, f.layers());
  EXPECT_EQ(f.calls, 1);
  EXPECT_EQ(f.seen_tokens.size(), 5u);  // eager: not padded
  EXPECT_EQ(be.captures, 2);
}

TEST(StepExecutor, MacDecodeGraphsPadWithInactiveRowsAndPrefillRunsEagerly) {
  GraphCountingBackend be;
  Fixture f(be);
  const KvCacheView kv = kv_view(true);
  Step d;
  d.mac = true;
  for (int q = 0; q < 3; ++q) d.add(1, 9, /*decode=*/true);
  f.exec.run(d.arrays(), kv, true, f.layers());
  EXPECT_EQ(be.captures, 1);
  EXPECT_EQ(f.seen_context, (std::vector<int32_t>{9, 9, 9, 0}));      // padding: inactive
  EXPECT_EQ(f.seen_ring_slots, (std::vector<int32_t>{0, 1, 2, -1}));  // and without a ring slot
  MacStepOutputs out;
  f.exec.read_mac_outputs(out);
  EXPECT_EQ(out.kv_tokens_read.size(), static_cast<std::size_t>(kLayers * 3));
  Step p = d;
  p.add(2, 2);  // an exact chunk: eager
  f.calls = 0;
  f.exec.run(p.arrays(), kv, true, f.layers());
  EXPECT_EQ(f.calls, 1);
  EXPECT_EQ(be.captures, 1);
  d.audit = true;  // audited: eager
  f.exec.run(d.arrays(), kv, true, f.layers());
  EXPECT_EQ(f.calls, 2);
  EXPECT_EQ(be.captures, 1);
}

TEST(StepExecutor, FailedCaptureTurnsGraphsOff) {
  GraphCountingBackend be;
  Fixture f(be);
  const KvCacheView kv = kv_view(false);
  Step s;
  s.add(1, 4);
  StepExecutor::Layers allocating = [&](const DeviceStep& st) {
    ++f.calls;
    be.alloc(DType::kF32, {1});  // a stray allocation: fails a capture
    return st.buffer(f.logits);
  };
  EXPECT_EQ(f.exec.run(s.arrays(), kv, false, allocating).dim(0), 1);
  EXPECT_EQ(f.calls, 2);
  EXPECT_EQ(be.aborts, 1);
  EXPECT_EQ(be.captures, 0);
  f.exec.run(s.arrays(), kv, false, allocating);
  EXPECT_EQ(f.calls, 3);  // eager from now on
  EXPECT_EQ(be.aborts, 1);
}

}  // namespace
}  // namespace macserve::backend
