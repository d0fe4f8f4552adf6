// P2P fused AllReduce + residual-add + RMSNorm over symmetric-memory peer pointers.
//
// Token-sharded (the default): rank r owns rows [row_begin, row_end). For each owned row a
// row group of threads loads the row's partial sums from every rank's buffer (peer loads,
// fixed rank order 0..W-1), adds the residual, normalises, and stores the result into every
// rank's buffer at the same row (peer stores), in place over the partial sums. No rank reads
// a row that another rank writes during the launch, so in place is safe.
//
// One-shot (small batches): every rank reduces all rows from all buffers and writes the
// result only into its own buffer, after a barrier that tells it every peer has finished
// reading those rows. No peer stores, one less trip over NVLink.
#include "device_utils.cuh"
#include "fused_ar_norm.h"

namespace tokenweave {
namespace {

// Register budget per thread: 64 with 1024-thread blocks, 128 with 512.
template <int VPT>
constexpr int max_block_threads() {
  return VPT == 1 ? 1024 : 512;
}

// One row's inputs for one thread: its vectors of every rank's partial sums and of the
// residual.
template <int W, int VPT>
struct RowLoads {
  uint4 part[VPT][W];
  uint4 res[VPT];
};

// Issue every load of a row before any is used: W * VPT independent 16-byte loads (+VPT
// residual loads) in flight per thread.
template <typename T, int W, int VPT>
__device__ __forceinline__ void issue_row_loads(RowLoads<W, VPT>& l, const ArNormArgs& a, int row,
                                                int lane, int nvec) {
  const size_t row_elem = static_cast<size_t>(row) * a.hidden;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int v = lane + k * a.threads_per_row;
    if (v < nvec) {
#pragma unroll
      for (int p = 0; p < W; ++p) {
        l.part[k][p] = load_cg(static_cast<const T*>(a.buffers[p]) + row_elem + v * 8);
      }
      if (a.has_residual) l.res[k] = load_cg(static_cast<const T*>(a.residual) + row_elem + v * 8);
    }
  }
}

template <typename T, int W, int VPT, bool kOneShot>
__global__ void __launch_bounds__(max_block_threads<VPT>())
    ar_norm_kernel(const __grid_constant__ ArNormArgs a) {
  __shared__ float scratch[2][32];
  const int hidden = a.hidden;
  const int nvec = hidden / 8;
  const int tpr = a.threads_per_row;
  const int rows_per_block = blockDim.x / tpr;
  const int group = threadIdx.x / tpr;
  const int lane = threadIdx.x - group * tpr;
  const int warps_per_row = tpr >> 5;
  const int stride = gridDim.x * rows_per_block;

  // Entry: every peer's kernel has started, so its partial sums (written by earlier work on
  // its stream) are complete.
  block_barrier<W>(a.signals, a.rank, a.signal_base, 0, a.timeout_ns);

  RowLoads<W, VPT> loads;
  int first = a.row_begin + blockIdx.x * rows_per_block;
  if (first + group < a.row_end) issue_row_loads<T, W, VPT>(loads, a, first + group, lane, nvec);

  int parity = 0;
  for (; first < a.row_end; first += stride) {
    const int row = first + group;
    const bool active = row < a.row_end;
    const size_t row_elem = static_cast<size_t>(row) * hidden;

    float h[VPT][8];
    float sumsq = 0.f;
    if (active) {
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int v = lane + k * tpr;
        if (v < nvec) {
          // fp32 sum in fixed rank order, whatever this rank's index
          float acc[8];
          unpack8<T>(loads.part[k][0], acc);
#pragma unroll
          for (int p = 1; p < W; ++p) {
            float f[8];
            unpack8<T>(loads.part[k][p], f);
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[j] += f[j];
          }
          float r[8];
          if (a.has_residual) {
            unpack8<T>(loads.res[k], r);
          } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) r[j] = 0.f;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            // all-reduce result in the model dtype, then the residual add in fp32
            h[k][j] = round_to<T>(acc[j]) + r[j];
            sumsq += h[k][j] * h[k][j];
          }
          if (a.write_residual) {
            store_v4(static_cast<T*>(a.residual) + row_elem + v * 8, pack8<T>(h[k]));
          }
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j) h[k][j] = 0.f;
        }
      }
    }

    // Prefetch the next row now, so its NVLink round trip overlaps this row's reduction and
    // stores. Nobody writes a row this block will read later during the launch.
    if (row + stride < a.row_end) issue_row_loads<T, W, VPT>(loads, a, row + stride, lane, nvec);

    const float total = row_sum(sumsq, scratch[parity], group, warps_per_row);
    parity ^= 1;

    uint4 out[VPT];
    if (active) {
      const float rcp = rsqrtf(total / static_cast<float>(hidden) + a.eps);
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int v = lane + k * tpr;
        if (v < nvec) {
          float w[8];
          unpack8<T>(load_cg(static_cast<const T*>(a.weight) + v * 8), w);
          float o[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) o[j] = h[k][j] * rcp * w[j];
          out[k] = pack8<T>(o);
          if (!kOneShot) {
            // Start with the next rank so the W ranks spread their stores over the links.
#pragma unroll
            for (int i = 1; i <= W; ++i) {
              const int p = (a.rank + i) % W;
              store_v4(static_cast<T*>(a.buffers[p]) + row_elem + v * 8, out[k]);
            }
          }
        }
      }
    }

    if (kOneShot) {
      // Every peer's block has read these rows from our buffer: overwrite them.
      block_barrier<W>(a.signals, a.rank, a.signal_base, 1, a.timeout_ns);
      if (active) {
#pragma unroll
        for (int k = 0; k < VPT; ++k) {
          const int v = lane + k * tpr;
          if (v < nvec) store_v4(static_cast<T*>(a.buffers[a.rank]) + row_elem + v * 8, out[k]);
        }
      }
    }
  }

  if (!kOneShot) {
    // Exit: every peer's stores into our buffer have landed, and every peer has finished
    // reading our buffer, so the next op on our stream may read or overwrite it.
    block_barrier<W>(a.signals, a.rank, a.signal_base, 1, a.timeout_ns);
  }
}

template <typename T, int W, int VPT>
cudaError_t launch_typed(const ArNormArgs& a, const LaunchShape& s, bool one_shot,
                         cudaStream_t stream) {
  const dim3 grid(s.num_blocks), block(s.threads_per_row * s.rows_per_block);
  if (one_shot) {
    ar_norm_kernel<T, W, VPT, true><<<grid, block, 0, stream>>>(a);
  } else {
    ar_norm_kernel<T, W, VPT, false><<<grid, block, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

template <typename T, int W>
cudaError_t launch_w(const ArNormArgs& a, const LaunchShape& s, bool one_shot, cudaStream_t st) {
  switch (s.vecs_per_thread) {
    case 1: return launch_typed<T, W, 1>(a, s, one_shot, st);
    case 2: return launch_typed<T, W, 2>(a, s, one_shot, st);
    case 4: return launch_typed<T, W, 4>(a, s, one_shot, st);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t launch_t(const ArNormArgs& a, const LaunchShape& s, bool one_shot, cudaStream_t st) {
  switch (a.world_size) {
    case 2: return launch_w<T, 2>(a, s, one_shot, st);
    case 4: return launch_w<T, 4>(a, s, one_shot, st);
    case 8: return launch_w<T, 8>(a, s, one_shot, st);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch(const ArNormArgs& a, DType dtype, const LaunchShape& s, bool one_shot,
                   cudaStream_t st) {
  if (check_shape(s, a.hidden)[0] != '\0') return cudaErrorInvalidValue;
  // A rank that owns no rows still launches: its peers wait for its blocks at the barriers.
  return dtype == DType::kBF16 ? launch_t<__nv_bfloat16>(a, s, one_shot, st)
                               : launch_t<__half>(a, s, one_shot, st);
}

}  // namespace

const char* check_shape(const LaunchShape& s, int hidden) {
  if (hidden <= 0 || hidden % 8 != 0) return "hidden size must be a positive multiple of 8";
  if (s.vecs_per_thread != 1 && s.vecs_per_thread != 2 && s.vecs_per_thread != 4)
    return "vecs_per_thread must be 1, 2 or 4";
  if (s.threads_per_row <= 0 || s.threads_per_row % 32 != 0)
    return "threads_per_row must be a positive multiple of 32";
  if (s.threads_per_row * s.vecs_per_thread * 8 < hidden)
    return "threads_per_row * vecs_per_thread * 8 must cover the hidden size";
  const int cap = s.vecs_per_thread == 1 ? 1024 : 512;
  if (s.rows_per_block < 1 || s.threads_per_row * s.rows_per_block > cap)
    return "threads_per_row * rows_per_block exceeds the block limit for vecs_per_thread";
  if (s.num_blocks < 1) return "num_blocks must be >= 1";
  return "";
}

cudaError_t launch_sharded(const ArNormArgs& args, DType dtype, const LaunchShape& shape,
                           cudaStream_t stream) {
  return launch(args, dtype, shape, false, stream);
}

cudaError_t launch_oneshot(const ArNormArgs& args, DType dtype, const LaunchShape& shape,
                           cudaStream_t stream) {
  return launch(args, dtype, shape, true, stream);
}

}  // namespace tokenweave
