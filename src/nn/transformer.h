// A small pre-LayerNorm transformer language model built from the nn modules: the model of the
// C++ example (apps/tiny_lm.cpp) and of its Catch2 test. B = batch, L = tokens, V = vocab.
#pragma once
#include <memory>

#include "nn/attention.h"

namespace needle::nn {

struct TransformerConfig {
  int64_t vocab_size = 16;
  int64_t d_model = 32;
  int64_t n_heads = 2;
  int64_t n_layers = 2;
  int64_t rotary_dim = 8;  // per head; 0 disables rotary embeddings
};

// x + attn(ln1(x)), then x + mlp(ln2(x)) with a 4x GELU MLP.
class TransformerBlock : public Module {
 public:
  explicit TransformerBlock(const TransformerConfig& c);
  std::string type_name() const override { return "TransformerBlock"; }
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<LayerNorm> ln1, ln2;
  std::shared_ptr<MultiHeadAttention> attn;
  std::shared_ptr<Sequential> mlp;
};

class TransformerLM : public Module {
 public:
  explicit TransformerLM(const TransformerConfig& c);
  std::string type_name() const override { return "TransformerLM"; }
  // ids (B, L) int64 -> logits (B, L, V).
  Tensor forward(const Tensor& ids) override;
  TransformerConfig config;
  std::shared_ptr<Embedding> embed;
  std::shared_ptr<ModuleList> blocks;
  std::shared_ptr<LayerNorm> ln_f;
  std::shared_ptr<Linear> head;
};

}  // namespace needle::nn
