// --mac-audit-rate on the device: squared error of the MAC output against exact attention and the
// squared reference, summed over the decode rows of a step into two f64 accumulators, so an audited
// step still fetches its telemetry with one copy at the end (interface: mac_attention_cuda.h).
#include <cuda_runtime.h>

#include "../cuda_util.cuh"
#include "macserve/kernels/cuda/mac_attention_cuda.h"

namespace macserve::kernels::cuda {
namespace {

constexpr int kAuditThreads = 256;

// One CTA per sequence: block reduction in f64 over the sequence's decode row, two atomics.
__global__ void __launch_bounds__(kAuditThreads) audit_kernel(MacAuditParams p) {
  const int s = blockIdx.x;
  if (p.modes[s] != kMacDecode) return;
  const int64_t base = static_cast<int64_t>(p.query_start[s]) * p.row_elems;
  double err = 0.0, ref = 0.0;
  for (int64_t i = threadIdx.x; i < p.row_elems; i += kAuditThreads) {
    const double e = p.exact[base + i], d = static_cast<double>(p.got[base + i]) - e;
    err += d * d;
    ref += e * e;
  }
  __shared__ double se[kAuditThreads], sr[kAuditThreads];
  se[threadIdx.x] = err;
  sr[threadIdx.x] = ref;
  __syncthreads();
  for (int o = kAuditThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o)
      se[threadIdx.x] += se[threadIdx.x + o], sr[threadIdx.x] += sr[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(&p.sums[0], se[0]);
    atomicAdd(&p.sums[1], sr[0]);
  }
}

}  // namespace

int mac_audit_accumulate(const MacAuditParams& p, Stream stream) {
  if (p.num_seqs == 0) return 0;
  audit_kernel<<<static_cast<unsigned>(p.num_seqs), kAuditThreads, 0, detail::as_stream(stream)>>>(
      p);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
