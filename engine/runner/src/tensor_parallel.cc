// TensorParallel: one worker thread per rank, each running what the engine thread posts.
#include "macserve/runner/tensor_parallel.h"

#include <omp.h>

#include <algorithm>
#include <string>
#include <utility>

#include "macserve/core/error.h"
#include "macserve/models/shard.h"

namespace macserve::engine {
namespace {

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

}  // namespace

TensorParallel::TensorParallel(int size) {
  models::check_tensor_parallel_size(size);
  threads_per_rank_ = std::max(1, omp_get_max_threads() / size);
  ranks_.resize(static_cast<std::size_t>(size));
  auto comms = backend::make_cpu_communicators(size);
  for (int r = 0; r < size; ++r) ranks_[static_cast<std::size_t>(r)].comm = std::move(comms[r]);
  for (int r = 0; r < size; ++r) workers_.emplace_back([this, r] { work(r); });
}

TensorParallel::~TensorParallel() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  task_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void TensorParallel::post(std::function<void(int)> fn) {
  std::lock_guard lock(mu_);
  MACSERVE_CHECK(pending_ == 0, "tensor parallel: a task is still running on the ranks");
  task_ = std::move(fn);
  pending_ = size();
  ++task_generation_;
  task_cv_.notify_all();
}

void TensorParallel::wait() {
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void TensorParallel::run(std::function<void(int)> fn) {
  post(std::move(fn));
  wait();
}

void TensorParallel::work(int rank) {
  omp_set_num_threads(threads_per_rank_);  // this thread's OpenMP teams (see the header)
  uint64_t seen = 0;
  for (;;) {
    std::function<void(int)> task;
    {
      std::unique_lock lock(mu_);
      task_cv_.wait(lock, [&] { return stop_ || task_generation_ != seen; });
      if (stop_) return;
      seen = task_generation_;
      task = task_;
    }
    try {
      task(rank);
    } catch (...) {
      const std::exception_ptr error = std::current_exception();
      {
        std::lock_guard lock(mu_);  // recorded before the abort wakes the others with theirs
        if (!error_) error_ = error;
      }
      ranks_[static_cast<std::size_t>(rank)].comm->abort(
          fmt::format("rank {} failed: {}", rank, describe(error)));
    }
    std::lock_guard lock(mu_);
    if (--pending_ == 0) done_cv_.notify_all();
  }
}

}  // namespace macserve::engine
