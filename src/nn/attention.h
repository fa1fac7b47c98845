// Attention: scaled dot-product attention, GPT-NeoX rotary position embeddings and the
// MultiHeadAttention module. B = batch, H = heads, L = query length, S = key length, D = head dim,
// E = embedding dim = H * D.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

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
// attention: the attention pattern; only "dense" exists until block-sparse attention lands.
class MultiHeadAttention : public Module {
 public:
  MultiHeadAttention(int64_t embed_dim, int64_t num_heads, bool bias = true, bool fused_qkv = true,
                     int64_t rotary_dim = 0, double rotary_base = 10000.0, bool causal = true,
                     double dropout = 0.0, const std::string& attention = "dense");
  std::string type_name() const override { return "MultiHeadAttention"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override { return forward(x, causal); }
  Tensor forward(const Tensor& x, bool is_causal);

  int64_t embed_dim, num_heads, head_dim, rotary_dim;
  bool causal;
  double dropout_p;
  std::string attention;
  std::shared_ptr<Linear> qkv, q_proj, k_proj, v_proj, out_proj;

 private:
  std::unique_ptr<RotaryEmbedding> rotary_;
};

}  // namespace needle::nn
