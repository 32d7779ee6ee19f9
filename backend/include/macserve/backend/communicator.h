// Communicator: the collectives of one tensor-parallel group, as one rank sees them (issue 22).
// Megatron-style sharding needs two: an in-place all-reduce (sum) after each row-parallel layer
// (o_proj, down_proj, the vocabulary-parallel embedding) and an all-gather of the logits slices.
// make_cpu_communicators() is an in-process group for the CPU backend (one thread per rank, a
// shared exchange); a NCCL one for CUDA is not built yet. Every collective is called by every rank
// of the group, in the same order; a rank that fails calls abort(), so that no other rank stays
// waiting.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "macserve/core/tensor.h"

namespace macserve::backend {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // x [any shape] f32, in place: the element-wise sum over the ranks, added in rank order
  // ((x_0 + x_1) + x_2) + ..., so every rank gets the same bits. Every rank passes the same shape.
  virtual void all_reduce_sum(const Tensor& x) = 0;
  // local [rows, cols_r] f32 -> out [rows, cols_0 + ... + cols_{N-1}] f32: row by row, rank r's
  // columns after those of the ranks before it (widths may differ; rows may not).
  virtual void all_gather_cols(const Tensor& local, const Tensor& out) = 0;
  // Marks the group failed: every rank waiting in a collective, and every later collective, throws
  // Error(kInternal) naming `why` (the first reason given wins).
  virtual void abort(const std::string& why) = 0;
};

// The `size` ranks of one in-process group (rank r at index r), to be driven by one thread each.
std::vector<std::unique_ptr<Communicator>> make_cpu_communicators(int size);

}  // namespace macserve::backend
