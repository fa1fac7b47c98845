// The Hopper (sm_90a, wgmma) block-sparse attention kernels, bfloat16, any head dim the CUDA
// backend takes (tile widths 64 and 128, padded below them).
// attention_forward.cu / attention_backward.cu call these instead of their mma.sync kernels when
// enabled() says so; the arguments are theirs, already checked.
#pragma once
#include <cstdint>

#include "backend_cuda/attention_common.cuh"

namespace needle::cuda::attn::sm90 {

// True when the device is compute capability 9.0 and the environment variable
// NEEDLE_ATTENTION_WGMMA is not "0" (read once; "0" keeps the mma.sync kernels, for comparison).
bool enabled();

// grid (tiles, heads, batch) as launch_forward in attention_forward.cu; needs a.scale_log2 > 0.
void forward(const FwdArgs& a, int64_t d, int tiles, int heads, int batch);
// dK/dV then dQ, as launch_backward in attention_backward.cu; a.delta already computed.
void backward(const BwdArgs& a, int64_t d, int heads, int64_t batch);

}  // namespace needle::cuda::attn::sm90
