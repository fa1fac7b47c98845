// Parameter initialisers, in place and without recording a graph (torch.nn.init names). Random
// values come from needle's default generator, so a seeded program initialises identically on
// every device. fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field.
#pragma once
#include <string>

#include "autograd/tensor.h"

namespace needle::nn::init {

void uniform_(const Tensor& t, double low = 0.0, double high = 1.0);
void normal_(const Tensor& t, double mean = 0.0, double std = 1.0);
void constant_(const Tensor& t, double value);
void zeros_(const Tensor& t);
void ones_(const Tensor& t);
// Normal(mean, std) restricted to [a, b] by resampling the values that fall outside.
void trunc_normal_(const Tensor& t, double mean = 0.0, double std = 1.0, double a = -2.0,
                   double b = 2.0);
void xavier_uniform_(const Tensor& t, double gain = 1.0);
void xavier_normal_(const Tensor& t, double gain = 1.0);
// mode "fan_in" or "fan_out"; nonlinearity "leaky_relu" (slope a), "relu", "linear", "tanh".
void kaiming_uniform_(const Tensor& t, double a = 0.0, const std::string& mode = "fan_in",
                      const std::string& nonlinearity = "leaky_relu");
void kaiming_normal_(const Tensor& t, double a = 0.0, const std::string& mode = "fan_in",
                     const std::string& nonlinearity = "leaky_relu");
// GPT-NeoX: small_init std = sqrt(2 / (5 d)); wang_init std = 2 / (n_layers sqrt(d)).
void small_init_(const Tensor& t, int64_t dim);
void wang_init_(const Tensor& t, int64_t dim, int64_t n_layers);

double calculate_gain(const std::string& nonlinearity, double param = 0.01);
std::pair<int64_t, int64_t> fan_in_and_fan_out(const Tensor& t);

}  // namespace needle::nn::init
