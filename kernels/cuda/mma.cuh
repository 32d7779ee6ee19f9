// Tensor-core and asynchronous-copy primitives shared by the attention kernels (not a public
// header): 16-byte cp.async into shared memory, the XOR swizzle that keeps ldmatrix free of bank
// conflicts, ldmatrix and mma.sync m16n8k16 (bf16 in, fp32 accumulate).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace macserve::kernels::cuda::detail {

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Swizzled position of 16-byte chunk c of row r inside a page held in shared memory (kCpr chunks a
// row). ldmatrix reads one chunk column of 8 consecutive rows at once; without the XOR those rows
// would fall in the same banks (rows are 64-512 bytes apart). The XOR stays inside the row, so a
// warp's cp.async of whole rows still covers every bank once.
template <int kCpr>
__device__ __forceinline__ int swizzle(int r, int c) {
  static_assert(kCpr == 4 || kCpr == 8 || kCpr == 16 || kCpr == 32, "rows of 64-512 bytes");
  return r * kCpr + (c ^ (kCpr >= 8 ? (r & 7) : ((r >> 1) & 3)));
}

// Four 8x8 b16 matrices from shared memory (lane i addresses row i % 8 of matrix i / 8), transposed
// on the way when kTrans.
template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}
// d += a (16x16 bf16, row-major fragment) x b (16x8 bf16, column fragment), fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// cp_async16 that copies only when `valid`, else fills the 16 bytes with zeros (gmem is not read
// then, but must still be a valid address).
__device__ __forceinline__ void cp_async16_or_zero(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(valid ? 16 : 0));
}
// (x, y) rounded to a bf16 pair in one register (x in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float x, float y) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Eight f32 (16-byte aligned) times `scale`, rounded to bf16: one 16-byte shared-memory chunk.
__device__ __forceinline__ uint4 load_scaled_bf16x8(const float* src, float scale) {
  const float4 a = *reinterpret_cast<const float4*>(src);
  const float4 b = *reinterpret_cast<const float4*>(src + 4);
  return make_uint4(pack_bf16(a.x * scale, a.y * scale), pack_bf16(a.z * scale, a.w * scale),
                    pack_bf16(b.x * scale, b.y * scale), pack_bf16(b.z * scale, b.w * scale));
}

}  // namespace macserve::kernels::cuda::detail
