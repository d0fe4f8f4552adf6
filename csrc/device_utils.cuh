// Device helpers shared by the fused kernels: 16-byte vectors, peer memory access,
// cross-GPU signals and the per-row sum of squares.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace tokenweave {

// ---- 16-byte vectors of 8 half-precision values -------------------------------------------

template <typename T>
struct Half2Of;
template <>
struct Half2Of<__nv_bfloat16> {
  using type = __nv_bfloat162;
};
template <>
struct Half2Of<__half> {
  using type = __half2;
};

__device__ __forceinline__ float2 to_float2(__nv_bfloat162 v) { return __bfloat1622float2(v); }
__device__ __forceinline__ float2 to_float2(__half2 v) { return __half22float2(v); }

template <typename T>
__device__ __forceinline__ typename Half2Of<T>::type from_float2(float a, float b);
template <>
__device__ __forceinline__ __nv_bfloat162 from_float2<__nv_bfloat16>(float a, float b) {
  return __floats2bfloat162_rn(a, b);
}
template <>
__device__ __forceinline__ __half2 from_float2<__half>(float a, float b) {
  return __floats2half2_rn(a, b);
}

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  using H2 = typename Half2Of<T>::type;
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    H2 h;
    __builtin_memcpy(&h, &w[i], 4);
    const float2 p = to_float2(h);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const auto h = from_float2<T>(f[2 * i], f[2 * i + 1]);
    __builtin_memcpy(&w[i], &h, 4);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Round an fp32 value to T and back: the all-reduce result is materialised in the model
// dtype in SGLang's unfused path, so we round at the same place.
template <typename T>
__device__ __forceinline__ float round_to(float x);
template <>
__device__ __forceinline__ float round_to<__nv_bfloat16>(float x) {
  return __bfloat162float(__float2bfloat16_rn(x));
}
template <>
__device__ __forceinline__ float round_to<__half>(float x) {
  return __half2float(__float2half_rn(x));
}

// ---- memory access ------------------------------------------------------------------------

// Loads that skip L1: peer rows are read once, and L1 is not coherent with peer writes.
__device__ __forceinline__ uint4 load_cg(const void* p) {
  uint4 v;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p)
               : "memory");
  return v;
}

__device__ __forceinline__ void store_v4(void* p, const uint4& v) {
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y),
               "r"(v.z), "r"(v.w)
               : "memory");
}

// ---- signals between GPUs -----------------------------------------------------------------
// A slot is 0 (empty) or 1 (signalled). The sender sets it 0 -> 1 in the receiver's pad and
// the receiver sets it back 1 -> 0 when it consumes it, so every slot is 0 again after each
// launch: no host reset, safe to replay in a CUDA graph. Both sides use system-scope
// acquire-release atomics: the sender's earlier writes (its peer stores) are visible to the
// receiver once it has seen the signal.

__device__ __forceinline__ uint32_t cas_acq_rel_sys(uint32_t* addr, uint32_t expect, uint32_t value) {
  uint32_t old;
  asm volatile("atom.acq_rel.sys.global.cas.b32 %0, [%1], %2, %3;"
               : "=r"(old)
               : "l"(addr), "r"(expect), "r"(value)
               : "memory");
  return old;
}

__device__ __forceinline__ unsigned long long global_time_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Spin until the slot holds `expect`, then swap in `value`. With a timeout, a peer that
// never arrives turns into a device error instead of a hang.
__device__ __forceinline__ void swap_when(uint32_t* addr, uint32_t expect, uint32_t value,
                                          unsigned long long timeout_ns) {
  const unsigned long long start = timeout_ns ? global_time_ns() : 0;
  while (cas_acq_rel_sys(addr, expect, value) != expect) {
    if (timeout_ns && global_time_ns() - start > timeout_ns) {
      __trap();
    }
  }
}

// Barrier between block b of this rank and block b of every peer. Every rank launches the
// same grid and maps the same rows to block b, so pairwise block barriers order exactly the
// accesses that conflict. Slot layout: [channel][block][source rank].
template <int W>
__device__ __forceinline__ void block_barrier(uint32_t* const (&signals)[8], int rank, int base,
                                              int channel, unsigned long long timeout_ns) {
  __syncthreads();  // the block's earlier writes happen before the signal
  if (threadIdx.x < W && threadIdx.x != rank) {
    const int peer = threadIdx.x;
    const int slot = base + (channel * gridDim.x + blockIdx.x) * W;
    swap_when(signals[peer] + slot + rank, 0u, 1u, timeout_ns);
    swap_when(signals[rank] + slot + peer, 1u, 0u, timeout_ns);
  }
  __syncthreads();  // the block's later accesses happen after every peer arrived
}

// ---- per-row sum of squares ----------------------------------------------------------------
// Each row is owned by `warps_per_row` consecutive warps. The sum is taken in a fixed order
// (butterfly within a warp, then warps in index order), so a row's result depends only on
// the row's data and the launch shape, never on the batch or the grid.
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

// scratch: 32 floats per parity; alternating parity between calls makes one
// __syncthreads per call enough.
__device__ __forceinline__ float row_sum(float x, float* scratch, int group, int warps_per_row) {
  x = warp_sum(x);
  const int warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) {
    scratch[warp] = x;
  }
  __syncthreads();
  float total = 0.f;
  for (int i = 0; i < warps_per_row; ++i) {
    total += scratch[group * warps_per_row + i];
  }
  return total;
}

}  // namespace tokenweave
