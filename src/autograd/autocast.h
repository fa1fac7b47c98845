// Automatic mixed precision, as torch.autocast: inside a region enabled for a device type, the ops
// that gain from lower precision compute in the region's dtype (bfloat16) and the ops that need
// float32's range or precision compute in float32; every other op computes in its inputs'
// promoted dtype, as outside a region.
//   lower precision: matmul, linear, scaled_dot_product_attention, block_sparse_attention
//                    (float32 inputs are cast; float64 ones are left alone, as torch does)
//   float32:         layer_norm, softmax, log_softmax, logsumexp, cross_entropy
//                    (bfloat16 inputs are cast; cross_entropy's kernels read bfloat16 logits
//                    as they are, computing and returning the loss in float32)
// The casts are the differentiable astype, so a float32 parameter receives a float32 gradient.
// The state is thread-local and kept per device type; backward() runs with every region off, and
// the engine hands each input a gradient of its own dtype.
#pragma once
#include "autograd/tensor.h"

namespace needle {

struct AutocastState {
  bool enabled = false;
  DType dtype = DType::BFloat16;
};

AutocastState autocast_state(DeviceType type);
// Throws TypeError for a dtype autocast cannot compute in (only bfloat16: needle has no float16).
void set_autocast_state(DeviceType type, AutocastState state);

// Sets a device type's state for a scope and restores the previous one.
class AutocastGuard {
 public:
  AutocastGuard(DeviceType type, AutocastState state);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DeviceType type_;
  AutocastState prev_;
};

// Turns every device type's region off for a scope (backward, the body of a composed op).
class AutocastOffGuard {
 public:
  AutocastOffGuard() : cpu_(DeviceType::CPU, {}), cuda_(DeviceType::CUDA, {}) {}

 private:
  AutocastGuard cpu_, cuda_;
};

// t as a lower-precision op's input: in the region's dtype when a region is on for t's device and
// t is float32; otherwise t itself.
Tensor autocast_lower(const Tensor& t);
// The dtype autocast_lower(t) has: for an op that lowers a parameter itself (linear, whose
// weight and bias gradients so come out in the parameters' dtype).
DType autocast_lower_dtype(const Tensor& t);
// t as a float32 op's input: float32 when a region is on for t's device and t is bfloat16.
Tensor autocast_float32(const Tensor& t);
// The dtype a float32 op returns for input t: what autocast_float32(t) would have. For a fused op
// whose kernels read bfloat16 and compute in float32 anyway (cross_entropy), which so skips the
// float32 copy of its input.
DType autocast_float32_dtype(const Tensor& t);

}  // namespace needle
