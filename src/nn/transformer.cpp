// TransformerBlock and TransformerLM (see transformer.h).
#include "nn/transformer.h"

#include <cmath>

#include "nn/init.h"

namespace needle::nn {

TransformerBlock::TransformerBlock(const TransformerConfig& c) {
  ln1 = register_module("ln1", std::make_shared<LayerNorm>(c.d_model));
  attn = register_module("attn", std::make_shared<MultiHeadAttention>(
                                     c.d_model, c.n_heads, true, true, c.rotary_dim));
  ln2 = register_module("ln2", std::make_shared<LayerNorm>(c.d_model));
  auto fc_in = std::make_shared<Linear>(c.d_model, 4 * c.d_model);
  auto fc_out = std::make_shared<Linear>(4 * c.d_model, c.d_model);
  // GPT-NeoX's scheme: small_init on inputs, wang_init on the projections into the residual.
  init::small_init_(fc_in->weight, c.d_model);
  init::small_init_(attn->qkv->weight, c.d_model);
  init::wang_init_(fc_out->weight, c.d_model, c.n_layers);
  init::wang_init_(attn->out_proj->weight, c.d_model, c.n_layers);
  mlp = register_module("mlp", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                   fc_in, std::make_shared<GELU>(), fc_out}));
}

Tensor TransformerBlock::forward(const Tensor& x) {
  Tensor h = add(x, attn->forward(ln1->forward(x)));
  return add(h, mlp->forward(ln2->forward(h)));
}

TransformerLM::TransformerLM(const TransformerConfig& c) : config(c) {
  embed = register_module("embed", std::make_shared<Embedding>(c.vocab_size, c.d_model));
  init::small_init_(embed->weight, c.d_model);
  blocks = register_module("blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < c.n_layers; ++i) blocks->append(std::make_shared<TransformerBlock>(c));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.d_model));
  head = register_module("head", std::make_shared<Linear>(c.d_model, c.vocab_size, false));
}

Tensor TransformerLM::forward(const Tensor& ids) {
  Tensor h = embed->forward(ids);
  for (size_t i = 0; i < blocks->size(); ++i) h = blocks->at(static_cast<int64_t>(i))->forward(h);
  return head->forward(ln_f->forward(h));
}

}  // namespace needle::nn
