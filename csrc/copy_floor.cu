// The NVLink floor: the sharded kernel's data movement with no math and no barriers.
// Timing it with a generous grid gives the fastest the links move these bytes in this
// access pattern (16-byte accesses, one row per row group), which the fused kernel's time
// is reported against.
#include "device_utils.cuh"
#include "fused_ar_norm.h"

namespace tokenweave {
namespace {

template <int VPT>
constexpr int max_block_threads() {
  return VPT == 1 ? 1024 : 512;
}

template <int W, int VPT>
__global__ void __launch_bounds__(max_block_threads<VPT>())
    copy_floor_kernel(const __grid_constant__ ArNormArgs a, int pattern) {
  const int nvec = a.hidden / 8;
  const int tpr = a.threads_per_row;
  const int rows_per_block = blockDim.x / tpr;
  const int group = threadIdx.x / tpr;
  const int lane = threadIdx.x - group * tpr;
  const bool peer_loads = pattern != 2;
  const bool peer_stores = pattern != 1;
  for (int first = a.row_begin + blockIdx.x * rows_per_block; first < a.row_end;
       first += gridDim.x * rows_per_block) {
    const int row = first + group;
    if (row >= a.row_end) continue;
    const size_t row_bytes = static_cast<size_t>(row) * a.hidden * 2;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int v = lane + k * tpr;
      if (v >= nvec) continue;
      const size_t off = row_bytes + static_cast<size_t>(v) * 16;
      uint4 x = make_uint4(0, 0, 0, 0);
      if (peer_loads) {
        uint4 raw[W];
#pragma unroll
        for (int p = 0; p < W; ++p) raw[p] = load_cg(static_cast<const char*>(a.buffers[p]) + off);
#pragma unroll
        for (int p = 0; p < W; ++p) {
          x.x ^= raw[p].x;
          x.y ^= raw[p].y;
          x.z ^= raw[p].z;
          x.w ^= raw[p].w;
        }
      } else {
        x = load_cg(static_cast<const char*>(a.buffers[a.rank]) + off);
      }
      if (peer_stores) {
#pragma unroll
        for (int i = 1; i <= W; ++i) {
          store_v4(static_cast<char*>(a.buffers[(a.rank + i) % W]) + off, x);
        }
      } else {
        store_v4(static_cast<char*>(a.buffers[a.rank]) + off, x);
      }
    }
  }
}

template <int W>
cudaError_t launch_w(const ArNormArgs& a, const LaunchShape& s, int pattern, cudaStream_t st) {
  const dim3 grid(s.num_blocks), block(s.threads_per_row * s.rows_per_block);
  switch (s.vecs_per_thread) {
    case 1: copy_floor_kernel<W, 1><<<grid, block, 0, st>>>(a, pattern); break;
    case 2: copy_floor_kernel<W, 2><<<grid, block, 0, st>>>(a, pattern); break;
    case 4: copy_floor_kernel<W, 4><<<grid, block, 0, st>>>(a, pattern); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_copy_floor(const ArNormArgs& a, const LaunchShape& s, int pattern,
                              cudaStream_t st) {
  if (check_shape(s, a.hidden)[0] != '\0' || pattern < 0 || pattern > 2) return cudaErrorInvalidValue;
  switch (a.world_size) {
    case 2: return launch_w<2>(a, s, pattern, st);
    case 4: return launch_w<4>(a, s, pattern, st);
    case 8: return launch_w<8>(a, s, pattern, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace tokenweave
