// Dense attention, rotary embeddings and MultiHeadAttention (see attention.h).
#include "nn/attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/autocast.h"
#include "ndarray/error.h"
#include "nn/block_sparse_attention.h"

namespace needle::nn {

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    bool is_causal, double dropout_p, std::optional<double> scale) {
  // Under autocast, one lower-precision op as a whole (torch's is a fused kernel): the inputs are
  // cast once and the composition below, softmax included, runs in their dtype.
  const Tensor q = autocast_lower(q_in), k = autocast_lower(k_in), v = autocast_lower(v_in);
  AutocastOffGuard autocast_off;
  NEEDLE_CHECK(q.ndim() >= 2 && k.ndim() == q.ndim() && v.ndim() == q.ndim(), ValueError,
               "scaled_dot_product_attention: expected q, k, v of equal rank >= 2, got shapes ",
               shape_str(q.shape()), ", ", shape_str(k.shape()), ", ", shape_str(v.shape()));
  NEEDLE_CHECK(q.shape().back() == k.shape().back(), ValueError,
               "scaled_dot_product_attention: q and k head dims differ: ", q.shape().back(),
               " and ", k.shape().back());
  const int64_t L = q.shape()[q.ndim() - 2], S = k.shape()[k.ndim() - 2];
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.shape().back())));
  Tensor scores = mul(matmul(q, transpose(k, -2, -1)), Scalar(s));
  if (is_causal) {
    NEEDLE_CHECK(S >= L, ValueError, "scaled_dot_product_attention: causal attention needs at "
                 "least as many keys as queries, got ", S, " keys and ", L, " queries");
    NDArray i = NDArray::arange(0, static_cast<double>(L), 1, DType::Int64, q.device()).reshape({L, 1});
    NDArray j = NDArray::arange(0, static_cast<double>(S), 1, DType::Int64, q.device()).reshape({1, S});
    NDArray future = gt(j, add(i, Scalar(static_cast<int64_t>(S - L))));
    scores = masked_fill(scores, Tensor(future), -std::numeric_limits<double>::infinity());
  }
  Tensor probs = softmax(scores, -1);
  if (dropout_p > 0) probs = dropout(probs, dropout_p, true);
  return matmul(probs, v);
}

RotaryEmbedding::RotaryEmbedding(int64_t dim, double b) : rotary_dim(dim), base(b) {
  NEEDLE_CHECK(dim > 0 && dim % 2 == 0, ValueError,
               "RotaryEmbedding: rotary_dim must be positive and even, got ", dim);
  NEEDLE_CHECK(b > 0, ValueError, "RotaryEmbedding: base must be positive, got ", b);
}

std::pair<NDArray, NDArray> RotaryEmbedding::tables(int64_t length, const Device& device,
                                                    DType dtype) {
  auto key = std::make_tuple(length, device.str(), static_cast<int>(dtype));
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  // Computed once per key in float64 on the host: angles of long positions need the precision.
  const int64_t half = rotary_dim / 2;
  std::vector<double> c(static_cast<size_t>(length * rotary_dim)), s(c.size());
  for (int64_t t = 0; t < length; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(base, -2.0 * static_cast<double>(i) / rotary_dim);
      const double angle = static_cast<double>(t) * inv_freq;
      for (int64_t rep : {i, i + half}) {
        c[static_cast<size_t>(t * rotary_dim + rep)] = std::cos(angle);
        s[static_cast<size_t>(t * rotary_dim + rep)] = std::sin(angle);
      }
    }
  NDArray cos_t = NDArray::from_host(c.data(), {length, rotary_dim}, DType::Float64, device).astype(dtype);
  NDArray sin_t = NDArray::from_host(s.data(), {length, rotary_dim}, DType::Float64, device).astype(dtype);
  return cache_[key] = {cos_t, sin_t};
}

Tensor RotaryEmbedding::apply(const Tensor& x, int64_t offset) {
  NEEDLE_CHECK(x.ndim() >= 2 && x.shape().back() >= rotary_dim, ValueError,
               "rotary: expected (..., L, D) with D >= rotary_dim ", rotary_dim, ", got shape ",
               shape_str(x.shape()));
  const int64_t L = x.shape()[x.ndim() - 2];
  auto [cos_full, sin_full] = tables(offset + L, x.device(), x.dtype());
  return rotary_embedding(x, Tensor(cos_full.slice(0, offset, offset + L)),
                          Tensor(sin_full.slice(0, offset, offset + L)));
}

MultiHeadAttention::MultiHeadAttention(int64_t e, int64_t h, bool bias, bool fused, int64_t rd,
                                       double rotary_base, bool c, double dropout,
                                       const std::string& pattern, int64_t b)
    : embed_dim(e), num_heads(h), head_dim(h > 0 ? e / h : 0), rotary_dim(rd), causal(c),
      dropout_p(dropout), attention(pattern), block_size(b) {
  NEEDLE_CHECK(e > 0 && h > 0 && e % h == 0, ValueError,
               "MultiHeadAttention: embed_dim must be a positive multiple of num_heads, got ", e,
               " and ", h);
  NEEDLE_CHECK(pattern == "dense" || pattern == "local" || pattern == "global" ||
                   pattern == "strided" || pattern == "mixed" || pattern == "random",
               ValueError, "MultiHeadAttention: expected attention in {dense, local, global, "
               "strided, mixed, random}, got '", pattern, "'");
  NEEDLE_CHECK(b == 16 || b == 32 || b == 64 || b == 128, ValueError,
               "MultiHeadAttention: expected block_size in {16, 32, 64, 128}, got ", b);
  NEEDLE_CHECK(rd >= 0 && rd <= head_dim && rd % 2 == 0, ValueError,
               "MultiHeadAttention: rotary_dim must be even and in [0, head_dim=", head_dim,
               "], got ", rd);
  NEEDLE_CHECK(dropout >= 0 && dropout < 1, ValueError,
               "MultiHeadAttention: expected 0 <= dropout < 1, got ", dropout);
  if (fused) {
    qkv = register_module("qkv", std::make_shared<Linear>(e, 3 * e, bias));
  } else {
    q_proj = register_module("q_proj", std::make_shared<Linear>(e, e, bias));
    k_proj = register_module("k_proj", std::make_shared<Linear>(e, e, bias));
    v_proj = register_module("v_proj", std::make_shared<Linear>(e, e, bias));
  }
  out_proj = register_module("out_proj", std::make_shared<Linear>(e, e, bias));
  if (rd > 0) rotary_ = std::make_unique<RotaryEmbedding>(rd, rotary_base);
}

std::string MultiHeadAttention::extra_repr() const {
  return "embed_dim=" + std::to_string(embed_dim) + ", num_heads=" + std::to_string(num_heads) +
         ", rotary_dim=" + std::to_string(rotary_dim) + ", attention='" + attention + "'" +
         (attention == "dense" ? "" : ", block_size=" + std::to_string(block_size));
}

void MultiHeadAttention::use_layout(const BlockSparseLayout& layout) {
  custom_layout_ = layout;
  attention = "custom";
  block_size = layout.block_size();
  layouts_.clear();
}

const BlockSparseLayout& MultiHeadAttention::layout_for(int64_t seq_len, bool is_causal) {
  if (custom_layout_) {
    NEEDLE_CHECK(seq_len <= custom_layout_->q_len(), ValueError,
                 "MultiHeadAttention: the custom layout covers ", custom_layout_->q_len(),
                 " positions, got a sequence of ", seq_len);
    NEEDLE_CHECK(is_causal == custom_layout_->causal(), ValueError,
                 "MultiHeadAttention: the custom layout is ",
                 custom_layout_->causal() ? "causal" : "not causal", " but the call asks for ",
                 is_causal ? "causal" : "non-causal", " attention");
    return *custom_layout_;
  }
  auto key = std::make_pair(seq_len, is_causal);
  auto it = layouts_.find(key);
  if (it != layouts_.end()) return it->second;
  const int64_t b = block_size;
  BlockSparseLayout layout =
      attention == "local"     ? BlockSparseLayout::local(seq_len, b, 1, is_causal)
      : attention == "global"  ? BlockSparseLayout::global(seq_len, b, 1, is_causal)
      : attention == "strided" ? BlockSparseLayout::strided(seq_len, b, 4, is_causal)
      : attention == "mixed"   ? BlockSparseLayout::mixed(seq_len, b, 3, 1, 4, is_causal)
                               : BlockSparseLayout::random(seq_len, b, 3, 0, is_causal);
  return layouts_.emplace(key, std::move(layout)).first->second;
}

Tensor MultiHeadAttention::forward(const Tensor& x, bool is_causal) {
  NEEDLE_CHECK(x.ndim() == 3 && x.shape()[2] == embed_dim, ValueError,
               "MultiHeadAttention: expected input (B, L, ", embed_dim, "), got ",
               shape_str(x.shape()));
  const int64_t B = x.shape()[0], L = x.shape()[1];
  Tensor q, k, v;
  if (qkv) {
    std::vector<Tensor> parts = chunk(qkv->forward(x), 3, -1);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    q = q_proj->forward(x), k = k_proj->forward(x), v = v_proj->forward(x);
  }
  // (B, L, E) -> (B, H, L, D)
  auto heads = [&](const Tensor& t) {
    return transpose(reshape(t, {B, L, num_heads, head_dim}), 1, 2);
  };
  q = heads(q), k = heads(k), v = heads(v);
  if (rotary_) q = rotary_->apply(q), k = rotary_->apply(k);
  Tensor o;
  if (attention == "dense") {
    o = scaled_dot_product_attention(q, k, v, is_causal, training() ? dropout_p : 0.0);
  } else {
    NEEDLE_CHECK(!training() || dropout_p == 0, ValueError, "MultiHeadAttention: attention "
                 "dropout is not supported with the block-sparse pattern '", attention,
                 "', got dropout=", dropout_p, "; use dropout=0 or eval()");
    o = block_sparse_attention(q, k, v, layout_for(L, is_causal));
  }
  return out_proj->forward(reshape(transpose(o, 1, 2), {B, L, embed_dim}));
}

}  // namespace needle::nn
