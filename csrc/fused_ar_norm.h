// Host-side interface of the fused AllReduce + residual-add + RMSNorm kernels.
// Plain C++ (no torch headers) so the .cu files compile quickly; bindings.cpp wraps it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tokenweave {

constexpr int kMaxRanks = 8;

enum class DType : int { kBF16 = 0, kFP16 = 1 };

// How one launch maps rows to threads. A "row group" of threads_per_row threads owns one
// token row, each thread holding vecs_per_thread 16-byte vectors of it; a block holds
// rows_per_block row groups. Chosen in Python (comm/launch_shape.py), validated here.
struct LaunchShape {
  int num_blocks;
  int vecs_per_thread;  // 1, 2 or 4
  int threads_per_row;  // multiple of 32
  int rows_per_block;
};

// Arguments of the P2P kernels, passed by value (kernel parameter space), so peer
// pointers cost no extra memory load.
struct ArNormArgs {
  void* buffers[kMaxRanks];      // every rank's symmetric buffer, mapped into this process
  uint32_t* signals[kMaxRanks];  // every rank's signal pad
  void* residual;                // [rows, hidden] local; may be null when unused
  const void* weight;            // [hidden]
  int world_size;
  int rank;
  int hidden;
  int row_begin;  // rows this launch reduces: [row_begin, row_end)
  int row_end;
  int threads_per_row;
  float eps;
  int has_residual;    // 0 for the first layer: the residual is written, never read
  int write_residual;  // 0 for the final norm: the residual is not needed afterwards
  int signal_base;     // first signal slot this op may use
  unsigned long long timeout_ns;  // barrier spin limit; 0 spins forever
};

// Multimem variant: loads and stores go through the multicast address of the buffer.
struct MultimemArgs {
  void* multicast;               // multicast mapping of the symmetric buffer
  uint32_t* signals[kMaxRanks];  // unicast signal pads, for the barriers
  void* residual;
  const void* weight;
  int world_size;
  int rank;
  int hidden;
  int row_begin;
  int row_end;
  int threads_per_row;
  float eps;
  int has_residual;
  int write_residual;
  int signal_base;
  unsigned long long timeout_ns;
};

// Signal slots one launch needs: two channels (entry and exit/mid) per block per peer.
inline int signal_slots_needed(int num_blocks, int world_size) { return 2 * num_blocks * world_size; }

// Returns an empty string when the shape fits the hidden size, else why not.
const char* check_shape(const LaunchShape& shape, int hidden);

// Token-sharded: reduce and normalise rows [row_begin, row_end), store them into every
// rank's buffer, update the local residual of those rows.
cudaError_t launch_sharded(const ArNormArgs& args, DType dtype, const LaunchShape& shape,
                           cudaStream_t stream);

// One-shot: every rank reduces all rows itself and writes only its own buffer.
cudaError_t launch_oneshot(const ArNormArgs& args, DType dtype, const LaunchShape& shape,
                           cudaStream_t stream);

// Token-sharded through NVLink multicast (multimem.ld_reduce / multimem.st). Compiled for
// every build; the caller must check multicast support before launching it.
cudaError_t launch_multimem(const MultimemArgs& args, DType dtype, const LaunchShape& shape,
                            cudaStream_t stream);

// Data movement of the sharded kernel without its math or barriers, to measure the NVLink
// floor. pattern 0: peer loads + peer stores, 1: peer loads only, 2: peer stores only.
cudaError_t launch_copy_floor(const ArNormArgs& args, const LaunchShape& shape, int pattern,
                              cudaStream_t stream);

}  // namespace tokenweave
