// TensorParallel: the ranks of one tensor-parallel group in this process (issue 22). One worker
// thread per rank owns that rank's backend, model shard (models/shard.h) and KV pool shard (its KV
// heads, and MAC rings for its query heads); the engine thread schedules once and hands every rank
// the same step (run/post), and the ranks meet in the model's collectives through their
// Communicator. With --tensor-parallel-size 1 none of this exists: the engine thread runs the model
// itself, as before.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/backend/communicator.h"
#include "macserve/cache/kv_pool.h"
#include "macserve/models/model.h"

namespace macserve::engine {

class TensorParallel {
 public:
  struct Rank {
    std::unique_ptr<backend::Backend> backend;
    std::unique_ptr<backend::Communicator> comm;
    std::unique_ptr<models::Model> model;
    std::unique_ptr<cache::KvPool> kv;
    // The last step's results on this rank: the gathered logits [rows, vocab] (the same bits on
    // every rank; the runner reads rank 0's) and the MAC telemetry of this rank's heads.
    Tensor logits;
    models::MacStepOutputs mac_out;
  };

  // Starts `size` (1, 2, 4 or 8) workers around an in-process CPU communicator group. OpenMP: each
  // worker runs its kernels' parallel regions on max(1, T / size) threads, T being
  // omp_get_max_threads() of the constructing thread, so the ranks together use about the threads
  // one rank would (with more ranks than cores, 1 thread each).
  explicit TensorParallel(int size);
  ~TensorParallel();
  TensorParallel(const TensorParallel&) = delete;
  TensorParallel& operator=(const TensorParallel&) = delete;

  int size() const { return static_cast<int>(ranks_.size()); }
  int threads_per_rank() const { return threads_per_rank_; }
  Rank& rank(int r) { return ranks_.at(static_cast<std::size_t>(r)); }

  // fn(rank) on every rank's worker: post() returns at once, wait() returns when all are done,
  // run() is both. A rank whose fn throws aborts the communicator group first, so the others leave
  // their collectives (with an error) instead of waiting forever; wait() then rethrows the first
  // failure (that of the rank which failed first). The group stays aborted: later collectives
  // throw.
  void post(std::function<void(int)> fn);
  void wait();
  void run(std::function<void(int)> fn);

 private:
  void work(int rank);

  std::vector<Rank> ranks_;
  int threads_per_rank_ = 1;
  std::mutex mu_;
  std::condition_variable task_cv_, done_cv_;
  std::function<void(int)> task_;
  uint64_t task_generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
};

}  // namespace macserve::engine
