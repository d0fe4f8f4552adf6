// Token-sharded fused AllReduce + residual-add + RMSNorm through NVLink multicast.
//
// One multimem.ld_reduce returns the sum of a 16-byte vector over all ranks (the switch
// adds, fp32 accumulation), one multimem.st writes the normalised vector to all ranks. This
// moves 1/W of the P2P variant's NVLink traffic. The reduction order is the hardware's, so
// unlike the P2P variant it is not guaranteed bit-reproducible.
//
// Compiled in every build; the Python side launches it only when the device reports
// multicast support and the user asked for it.
#include "device_utils.cuh"
#include "fused_ar_norm.h"

namespace tokenweave {
namespace {

template <typename T>
__device__ __forceinline__ uint4 multimem_ld_sum(const void* mc);

template <>
__device__ __forceinline__ uint4 multimem_ld_sum<__nv_bfloat16>(const void* mc) {
  uint4 v;
  asm volatile("multimem.ld_reduce.relaxed.sys.global.add.acc::f32.v4.bf16x2 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(mc)
               : "memory");
  return v;
}

template <>
__device__ __forceinline__ uint4 multimem_ld_sum<__half>(const void* mc) {
  uint4 v;
  asm volatile("multimem.ld_reduce.relaxed.sys.global.add.acc::f32.v4.f16x2 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(mc)
               : "memory");
  return v;
}

__device__ __forceinline__ void multimem_st(void* mc, const uint4& v) {
  asm volatile("multimem.st.relaxed.sys.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(mc),
               "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}

template <int VPT>
constexpr int max_block_threads() {
  return VPT == 1 ? 1024 : 512;
}

template <typename T, int W, int VPT>
__global__ void __launch_bounds__(max_block_threads<VPT>())
    multimem_kernel(const __grid_constant__ MultimemArgs a) {
  __shared__ float scratch[2][32];
  const int hidden = a.hidden;
  const int nvec = hidden / 8;
  const int tpr = a.threads_per_row;
  const int rows_per_block = blockDim.x / tpr;
  const int group = threadIdx.x / tpr;
  const int lane = threadIdx.x - group * tpr;
  T* mc = static_cast<T*>(a.multicast);

  block_barrier<W>(a.signals, a.rank, a.signal_base, 0, a.timeout_ns);

  int parity = 0;
  for (int first = a.row_begin + blockIdx.x * rows_per_block; first < a.row_end;
       first += gridDim.x * rows_per_block) {
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
          float x[8], r[8];
          unpack8<T>(multimem_ld_sum<T>(mc + row_elem + v * 8), x);
          if (a.has_residual) {
            unpack8<T>(load_cg(static_cast<const T*>(a.residual) + row_elem + v * 8), r);
          } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) r[j] = 0.f;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            h[k][j] = x[j] + r[j];
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
    const float total = row_sum(sumsq, scratch[parity], group, tpr >> 5);
    parity ^= 1;
    if (active) {
      const float rcp = rsqrtf(total / static_cast<float>(hidden) + a.eps);
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int v = lane + k * tpr;
        if (v < nvec) {
          float w[8], o[8];
          unpack8<T>(load_cg(static_cast<const T*>(a.weight) + v * 8), w);
#pragma unroll
          for (int j = 0; j < 8; ++j) o[j] = h[k][j] * rcp * w[j];
          multimem_st(mc + row_elem + v * 8, pack8<T>(o));
        }
      }
    }
  }
  block_barrier<W>(a.signals, a.rank, a.signal_base, 1, a.timeout_ns);
}

template <typename T, int W>
cudaError_t launch_w(const MultimemArgs& a, const LaunchShape& s, cudaStream_t st) {
  const dim3 grid(s.num_blocks), block(s.threads_per_row * s.rows_per_block);
  switch (s.vecs_per_thread) {
    case 1: multimem_kernel<T, W, 1><<<grid, block, 0, st>>>(a); break;
    case 2: multimem_kernel<T, W, 2><<<grid, block, 0, st>>>(a); break;
    case 4: multimem_kernel<T, W, 4><<<grid, block, 0, st>>>(a); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_t(const MultimemArgs& a, const LaunchShape& s, cudaStream_t st) {
  switch (a.world_size) {
    case 2: return launch_w<T, 2>(a, s, st);
    case 4: return launch_w<T, 4>(a, s, st);
    case 8: return launch_w<T, 8>(a, s, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_multimem(const MultimemArgs& a, DType dtype, const LaunchShape& s,
                            cudaStream_t st) {
  if (a.multicast == nullptr) return cudaErrorNotSupported;
  if (check_shape(s, a.hidden)[0] != '\0') return cudaErrorInvalidValue;
  return dtype == DType::kBF16 ? launch_t<__nv_bfloat16>(a, s, st) : launch_t<__half>(a, s, st);
}

}  // namespace tokenweave
