// Attention: scaled dot-product attention, GPT-NeoX rotary position embeddings and the
// MultiHeadAttention module. B = batch, H = heads, L = query length, S = key length, D = head dim,
// E = embedding dim = H * D.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <map>
#include <optional>
#include <tuple>
#include <utility>

#include "nn/block_sparse_layout.h"
#include "nn/layers.h"

namespace needle::nn {

// softmax(q k^T * scale [+ causal mask]) v; q (B, H, L, D), k and v (B, H, S, D). The causal
// mask lets query i see keys j <= i + (S - L) (queries are the last L positions). scale
// defaults to 1 / sqrt(D).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    bool is_causal = false, double dropout_p = 0.0,
                                    std::optional<double> scale = std::nullopt);

// Rotary embeddings with GPT-NeoX's half-split convention: the first `rotary_dim` dims of each
// head rotate, pairing dim i with dim i + rotary_dim / 2 (rotate_half), the rest pass through.
// cos/sin tables are cached per (length, device, dtype).
class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t rotary_dim, double base = 10000.0);
  // x (B, H, L, D) with D >= rotary_dim; positions offset .. offset + L - 1.
  Tensor apply(const Tensor& x, int64_t offset = 0);
  // cos, sin of shape (L, rotary_dim) for positions offset .. offset + L - 1.
  std::pair<NDArray, NDArray> tables(int64_t length, const Device& device, DType dtype);
  int64_t rotary_dim;
  double base;

 private:
  std::map<std::tuple<int64_t, std::string, int>, std::pair<NDArray, NDArray>> cache_;
};

// Self-attention over x (B, L, E). fused_qkv: one "qkv" Linear (E -> 3E, output laid out as
// [q | k | v]); otherwise "q_proj", "k_proj", "v_proj". "out_proj" maps back to E.
// attention: "dense" (scaled_dot_product_attention) or a block-sparse pattern with its documented
// defaults, blocks of block_size: "local" (window 1), "global" (1 global block), "strided"
// (stride 4), "mixed" (window 3, 1 global block, stride 4), "random" (3 blocks per row, seed 0);
// see docs/block_sparse.md.
class MultiHeadAttention : public Module {
 public:
  MultiHeadAttention(int64_t embed_dim, int64_t num_heads, bool bias = true, bool fused_qkv = true,
                     int64_t rotary_dim = 0, double rotary_base = 10000.0, bool causal = true,
                     double dropout = 0.0, const std::string& attention = "dense",
                     int64_t block_size = 64);
  // A user's own layout (any pattern, per-head layouts included) instead of a named one; calls
  // may be shorter than the layout's length.
  void use_layout(const BlockSparseLayout& layout);
  std::string type_name() const override { return "MultiHeadAttention"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override { return forward(x, causal); }
  Tensor forward(const Tensor& x, bool is_causal);

  int64_t embed_dim, num_heads, head_dim, rotary_dim;
  bool causal;
  double dropout_p;
  std::string attention;
  int64_t block_size;
  std::shared_ptr<Linear> qkv, q_proj, k_proj, v_proj, out_proj;

 private:
  std::unique_ptr<RotaryEmbedding> rotary_;
  // One layout per (sequence length, causal), built on first use; its kernel arrays are cached
  // per device inside the layout.
  const BlockSparseLayout& layout_for(int64_t seq_len, bool is_causal);
  std::map<std::pair<int64_t, bool>, BlockSparseLayout> layouts_;
  std::optional<BlockSparseLayout> custom_layout_;
};

}  // namespace needle::nn
