// Trains a small transformer LM (src/nn/transformer.h) with the C++ API on arithmetic sequences
// a_t = (a_0 + t * d) mod V with random a_0 and d: from the second token on, the next token is
// determined by the first two, so a model that attends correctly drives the loss toward zero.
// It trains until the loss falls below kTargetLoss, saves model and optimizer with safetensors,
// reloads both into fresh objects and checks the reloaded model gives identical logits.
// Exit status 0 on success, 1 otherwise.
#include <cstdio>
#include <random>
#include <unistd.h>

#include "ndarray/random.h"
#include "nn/optim.h"
#include "nn/transformer.h"

using namespace needle;
using namespace needle::nn;

namespace {

constexpr double kTargetLoss = 0.1;
constexpr int kMaxSteps = 1500;
constexpr int64_t kBatch = 32, kLen = 12;

// ids (B, L) and next-token targets (B, L); the first target (which needs d) is ignored.
std::pair<Tensor, Tensor> make_batch(std::mt19937& rng, int64_t vocab) {
  std::vector<int64_t> ids(kBatch * kLen), targets(kBatch * kLen);
  for (int64_t b = 0; b < kBatch; ++b) {
    const int64_t a0 = rng() % vocab, d = 1 + rng() % (vocab - 1);
    for (int64_t t = 0; t < kLen; ++t) {
      ids[b * kLen + t] = (a0 + t * d) % vocab;
      targets[b * kLen + t] = t == 0 ? -100 : (a0 + (t + 1) * d) % vocab;
    }
  }
  return {Tensor(NDArray::from_host(ids.data(), {kBatch, kLen}, DType::Int64)),
          Tensor(NDArray::from_host(targets.data(), {kBatch, kLen}, DType::Int64))};
}

// Weight decay on matrices only, none on biases and norm gains (GPT-NeoX's grouping).
std::vector<ParamGroup> param_groups(const Module& model) {
  std::vector<Tensor> decay, no_decay;
  for (const auto& [name, p] : model.named_parameters())
    (p.ndim() >= 2 ? decay : no_decay).push_back(p);
  return {{decay, {{"weight_decay", 0.01}}}, {no_decay, {{"weight_decay", 0.0}}}};
}

}  // namespace

int main() {
  manual_seed(0);
  std::mt19937 rng(0);
  TransformerConfig config;
  TransformerLM model(config);
  AdamW opt(param_groups(model), 3e-3);
  WarmupCosineLR schedule(opt, 50, kMaxSteps, 0.1);
  std::printf("TransformerLM with %lld parameters\n",
              static_cast<long long>(model.num_parameters()));

  double loss_value = 1e9;
  int step = 0;
  for (; step < kMaxSteps && loss_value >= kTargetLoss; ++step) {
    auto [ids, targets] = make_batch(rng, config.vocab_size);
    Tensor logits = model(ids);
    Tensor loss = cross_entropy(reshape(logits, {kBatch * kLen, config.vocab_size}),
                                reshape(targets, {kBatch * kLen}));
    opt.zero_grad();
    loss.backward();
    clip_grad_norm_(model.parameters(), 1.0);
    opt.step();
    schedule.step();
    loss_value = loss.data().item();
    if (step % 50 == 0) std::printf("step %4d  loss %.4f\n", step, loss_value);
  }
  std::printf("final: step %d, loss %.4f (target < %.2f)\n", step, loss_value, kTargetLoss);
  if (loss_value >= kTargetLoss) return 1;

  const std::string dir = "/tmp/needle_tiny_lm_" + std::to_string(::getpid());
  save_safetensors(model.state_dict(), dir + "_model.safetensors", {{"format", "needle"}});
  save_safetensors(opt.state_dict(), dir + "_optim.safetensors");
  TransformerLM reloaded(config);
  reloaded.load_state_dict(load_safetensors(dir + "_model.safetensors").tensors);
  AdamW opt2(param_groups(reloaded), 3e-3);
  opt2.load_state_dict(load_safetensors(dir + "_optim.safetensors").tensors);

  auto [ids, targets] = make_batch(rng, config.vocab_size);
  model.eval();
  reloaded.eval();
  std::vector<float> a = model(ids).data().to_vector<float>();
  std::vector<float> b = reloaded(ids).data().to_vector<float>();
  std::remove((dir + "_model.safetensors").c_str());
  std::remove((dir + "_optim.safetensors").c_str());
  if (a != b) {
    std::printf("FAIL: reloaded logits differ\n");
    return 1;
  }
  std::printf("reloaded model gives identical logits (%zu values)\n", a.size());
  return 0;
}
