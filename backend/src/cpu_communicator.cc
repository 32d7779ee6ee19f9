// The in-process communicator: N ranks on N threads exchange through one shared Group. A collective
// is two barriers: every rank publishes its buffer, then (after the first) works on the published
// buffers, and waits at the second before touching its own buffer again. The all-reduce splits the
// elements into one range per rank; each rank sums its range over all ranks in rank order into a
// shared result, which every rank copies back after the second barrier (bit-identical everywhere,
// and the summing work spread over the ranks).
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>

#include "macserve/backend/communicator.h"
#include "macserve/core/error.h"

namespace macserve::backend {
namespace {

struct Group {
  explicit Group(int n) : size(n), slots(static_cast<std::size_t>(n)) {}
  struct Slot {
    const float* src = nullptr;
    int64_t rows = 0, cols = 0;  // all-reduce: rows 1, cols = elements
  };
  const int size;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool aborted = false;
  std::string reason;
  std::vector<Slot> slots;
  std::vector<float> result;  // the all-reduce's sums
};

class CpuCommunicator final : public Communicator {
 public:
  CpuCommunicator(std::shared_ptr<Group> group, int rank) : g_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_->size; }

  void all_reduce_sum(const Tensor& x) override {
    expect_f32(x, "all_reduce_sum");
    const int64_t n = x.numel();
    publish({x.data_as<float>(), 1, n}, [this, n] {
      for (const Group::Slot& s : g_->slots)
        if (s.cols != n)
          return fmt::format("all_reduce_sum: ranks pass {} and {} elements", n, s.cols);
      g_->result.resize(static_cast<std::size_t>(n));
      return std::string();
    });
    const int64_t begin = n * rank_ / g_->size, end = n * (rank_ + 1) / g_->size;
    float* sum = g_->result.data();
    for (int64_t i = begin; i < end; ++i) sum[i] = g_->slots[0].src[i];
    for (int r = 1; r < g_->size; ++r) {
      const float* src = g_->slots[static_cast<std::size_t>(r)].src;
      for (int64_t i = begin; i < end; ++i) sum[i] += src[i];
    }
    barrier({});
    std::memcpy(x.data(), sum, static_cast<std::size_t>(n) * sizeof(float));
  }

  void all_gather_cols(const Tensor& local, const Tensor& out) override {
    expect_f32(local, "all_gather_cols local");
    expect_f32(out, "all_gather_cols out");
    if (local.rank() != 2 || out.rank() != 2 || local.dim(0) != out.dim(0))
      fail(fmt::format("all_gather_cols: local {} and out {} are not [rows, cols] of equal rows",
                       local.shape_string(), out.shape_string()));
    const int64_t rows = local.dim(0), width = out.dim(1);
    publish({local.data_as<float>(), rows, local.dim(1)}, [this, rows, width] {
      int64_t cols = 0;
      for (const Group::Slot& s : g_->slots) {
        if (s.rows != rows)
          return fmt::format("all_gather_cols: ranks pass {} and {} rows", rows, s.rows);
        cols += s.cols;
      }
      if (cols != width)
        return fmt::format("all_gather_cols: the slices have {} columns in all, out has {}", cols,
                           width);
      return std::string();
    });
    int64_t offset = 0;
    for (const Group::Slot& s : g_->slots) {
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(out.data_as<float>() + r * width + offset, s.src + r * s.cols,
                    static_cast<std::size_t>(s.cols) * sizeof(float));
      offset += s.cols;
    }
    barrier({});  // the others may still read this rank's slice
  }

  void abort(const std::string& why) override {
    std::lock_guard lock(g_->mu);
    if (!g_->aborted) g_->reason = why;
    g_->aborted = true;
    g_->cv.notify_all();
  }

 private:
  using Check = std::function<std::string()>;  // run by the last rank to arrive; "" = fine

  void expect_f32(const Tensor& t, const char* what) {
    if (t.dtype() != DType::kF32 || t.device() != Device::kCpu)
      fail(fmt::format("{}: needs host f32, got {}", what, t.shape_string()));
  }

  [[noreturn]] void fail(const std::string& why) {
    abort(fmt::format("rank {}: {}", rank_, why));
    throw_aborted();
  }

  [[noreturn]] void throw_aborted() const {
    throw_error(ErrorCode::kInternal, "tensor-parallel group aborted (seen by rank {} of {}): {}",
                rank_, g_->size, g_->reason);
  }

  void publish(Group::Slot slot, const Check& check) {
    {
      std::lock_guard lock(g_->mu);
      g_->slots[static_cast<std::size_t>(rank_)] = slot;
    }
    barrier(check);
  }

  // Waits until every rank arrived (the last one runs `check`), or throws once the group aborted.
  void barrier(const Check& check) {
    std::unique_lock lock(g_->mu);
    if (g_->aborted) throw_aborted();
    const uint64_t gen = g_->generation;
    if (++g_->arrived == g_->size) {
      g_->arrived = 0;
      ++g_->generation;
      if (check) {
        if (std::string why = check(); !why.empty() && !g_->aborted) {
          g_->aborted = true;
          g_->reason = std::move(why);
        }
      }
      g_->cv.notify_all();
    } else {
      g_->cv.wait(lock, [&] { return g_->generation != gen || g_->aborted; });
    }
    if (g_->aborted) throw_aborted();
  }

  std::shared_ptr<Group> g_;
  int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_cpu_communicators(int size) {
  if (size < 1) throw_error(ErrorCode::kInvalidArgument, "a communicator group needs >= 1 rank");
  auto group = std::make_shared<Group>(size);
  std::vector<std::unique_ptr<Communicator>> ranks;
  ranks.reserve(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<CpuCommunicator>(group, r));
  return ranks;
}

}  // namespace macserve::backend
