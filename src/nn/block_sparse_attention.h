// Block-sparse attention as one autograd op: a fused kernel pair from the device's kernel table
// (block_sparse_attention_forward / _backward), visiting only the layout's kept blocks.
// B = batch, H = heads, Lq / Lk = query / key lengths, D = head dim.
#pragma once
#include <optional>

#include "autograd/tensor.h"
#include "nn/block_sparse_layout.h"

namespace needle::nn {

// softmax(scale * q k^T over the layout's kept blocks, causal if the layout is) @ v.
// q (B, H, Lq, D), k and v (B, H, Lk, D), one floating dtype and device; the layout has 1 or H
// heads. scale defaults to 1 / sqrt(D). q_offset is the absolute position of q's first row; by
// default the queries are the last Lq positions for a causal layout (Lk - Lq when Lk >= Lq, as
// in scaled_dot_product_attention) and start at 0 otherwise. Rows that see no key give 0.
// Gradients flow to q, k and v when q_offset is 0; their own gradient is not supported.
// lse, when given, receives the (B, H, Lq) logsumexp (float32, float64 for float64 inputs).
Tensor block_sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                              const BlockSparseLayout& layout,
                              std::optional<double> scale = std::nullopt,
                              std::optional<int64_t> q_offset = std::nullopt,
                              NDArray* lse = nullptr);

}  // namespace needle::nn
