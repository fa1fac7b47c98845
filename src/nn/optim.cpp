// Optimizer steps, state dicts, gradient clipping and lr schedules (see optim.h).
#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "ndarray/error.h"

namespace needle::nn {
namespace {

double option(const Options& o, const char* key) {
  auto it = o.find(key);
  NEEDLE_CHECK(it != o.end(), ValueError, "optimizer option '", key, "' is not set");
  return it->second;
}

// Moments of bfloat16 parameters are kept in float32: bfloat16 cannot hold v's small values.
DType state_dtype(DType param) { return param == DType::BFloat16 ? DType::Float32 : param; }

NDArray& buffer(std::map<std::string, NDArray>& buffers, const std::string& name,
                const NDArray& like) {
  auto it = buffers.find(name);
  if (it == buffers.end())
    it = buffers.emplace(name, NDArray::zeros(like.shape(), state_dtype(like.dtype()),
                                              like.device())).first;
  return it->second;
}

// Items grouped by the backend (device) they belong to, in order of first appearance: the
// list-taking kernel entries get one call per device.
template <typename T>
struct ByBackend {
  std::vector<std::pair<const Backend*, std::vector<T>>> groups;
  void add(const Backend& be, T item) {
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == &be; });
    if (it == groups.end()) it = groups.insert(groups.end(), {&be, {}});
    it->second.push_back(std::move(item));
  }
};

// "lr, momentum, ..." for error messages (type_name() is not callable from the constructor).
std::string option_names(const Options& o) {
  std::string out;
  for (const auto& [key, value] : o) out += (out.empty() ? "" : ", ") + key;
  return out;
}

}  // namespace

Optimizer::Optimizer(std::vector<ParamGroup> groups, Options defaults)
    : defaults_(std::move(defaults)) {
  NEEDLE_CHECK(!groups.empty(), ValueError, "optimizer got an empty parameter list");
  for (ParamGroup& g : groups) add_param_group(std::move(g));
}

Optimizer::~Optimizer() = default;

void Optimizer::add_param_group(ParamGroup group) {
  NEEDLE_CHECK(!group.params.empty(), ValueError, "parameter group ", groups_.size(),
               " has no parameters");
  for (const auto& [key, value] : group.options)
    NEEDLE_CHECK(defaults_.count(key), ValueError, "parameter group option '", key,
                 "' is unknown; this optimizer's options are ", option_names(defaults_));
  for (const auto& [key, value] : defaults_) group.options.emplace(key, value);
  for (const Tensor& p : group.params) {
    NEEDLE_CHECK(p.defined() && is_floating(p.dtype()), TypeError,
                 "optimizer parameters must be floating tensors");
    for (const ParamGroup& g : groups_)
      for (const Tensor& q : g.params)
        NEEDLE_CHECK(!q.same(p), ValueError,
                     "a parameter appears in more than one parameter group");
  }
  state_.resize(state_.size() + group.params.size());
  groups_.push_back(std::move(group));
}

void Optimizer::step() {
  NoGradGuard no_grad;
  std::vector<Update> updates;
  size_t index = 0;
  for (const ParamGroup& group : groups_) {
    for (const Tensor& p : group.params) {
      ParamState& s = state_[index++];
      Tensor g = p.grad();
      if (!g.defined()) continue;
      // Kernels write the parameter's buffer directly, which needs compact storage.
      if (!p.data().is_compact()) p.set_data(p.data().compact());
      ++s.step;
      updates.push_back({&p, g.data().compact(), &group.options, &s});
    }
  }
  if (!updates.empty()) update(updates);
}

void Optimizer::zero_grad() {
  for (const ParamGroup& group : groups_)
    for (const Tensor& p : group.params) p.zero_grad();
}

NamedArrays Optimizer::state_dict() const {
  NamedArrays out;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (const auto& [key, value] : groups_[g].options)
      out.emplace_back("param_groups." + std::to_string(g) + "." + key,
                       NDArray::scalar(value, DType::Float64));
  for (size_t i = 0; i < state_.size(); ++i) {
    if (state_[i].step == 0) continue;
    const std::string prefix = "state." + std::to_string(i) + ".";
    out.emplace_back(prefix + "step",
                     NDArray::scalar(static_cast<double>(state_[i].step), DType::Int64));
    for (const auto& [name, a] : state_[i].buffers) out.emplace_back(prefix + name, a);
  }
  return out;
}

void Optimizer::load_state_dict(const NamedArrays& state) {
  std::vector<const Tensor*> params;
  for (const ParamGroup& g : groups_)
    for (const Tensor& p : g.params) params.push_back(&p);
  std::vector<Options> options(groups_.size());
  std::vector<ParamState> loaded(state_.size());
  std::set<std::string> seen;
  for (const auto& [key, a] : state) {
    auto fail = [&](const std::string& why) {
      throw ValueError(type_name() + ".load_state_dict: key '" + key + "': " + why);
    };
    const size_t dot1 = key.find('.');
    const size_t dot2 = dot1 == std::string::npos ? dot1 : key.find('.', dot1 + 1);
    if (dot2 == std::string::npos) fail("expected 'state.<i>.<name>' or 'param_groups.<g>.<option>'");
    const std::string kind = key.substr(0, dot1), name = key.substr(dot2 + 1);
    size_t idx = 0;
    try {
      size_t used = 0;
      idx = std::stoul(key.substr(dot1 + 1, dot2 - dot1 - 1), &used);
      if (used != dot2 - dot1 - 1) fail("the index is not a number");
    } catch (const std::logic_error&) {
      fail("the index is not a number");
    }
    if (kind == "param_groups") {
      if (idx >= groups_.size())
        fail("this optimizer has " + std::to_string(groups_.size()) + " parameter groups");
      if (!defaults_.count(name)) fail("unknown option for " + type_name());
      if (a.numel() != 1) fail("expected a scalar");
      options[idx][name] = a.item();
    } else if (kind == "state") {
      if (idx >= params.size())
        fail("this optimizer has " + std::to_string(params.size()) + " parameters");
      if (name == "step") {
        if (a.numel() != 1 || a.item() < 1) fail("expected a positive scalar step");
        loaded[idx].step = static_cast<int64_t>(a.item());
      } else {
        if (a.shape() != params[idx]->shape())
          fail("shape " + shape_str(a.shape()) + " does not match the parameter's " +
               shape_str(params[idx]->shape()));
        loaded[idx].buffers[name] =
            a.astype(state_dtype(params[idx]->dtype())).to(params[idx]->device()).clone();
      }
    } else {
      fail("expected 'state.<i>.<name>' or 'param_groups.<g>.<option>'");
    }
  }
  for (size_t i = 0; i < loaded.size(); ++i)
    NEEDLE_CHECK(loaded[i].buffers.empty() || loaded[i].step > 0, ValueError, type_name(),
                 ".load_state_dict: state.", i, " has buffers but no step");
  for (size_t g = 0; g < groups_.size(); ++g)
    for (const auto& [k, v] : options[g]) groups_[g].options[k] = v;
  state_ = std::move(loaded);
}

// --- SGD ---------------------------------------------------------------------------------------------
SGD::SGD(std::vector<ParamGroup> groups, double lr, double momentum, double dampening,
         double weight_decay, bool nesterov)
    : Optimizer(std::move(groups), {{"lr", lr},
                                    {"momentum", momentum},
                                    {"dampening", dampening},
                                    {"weight_decay", weight_decay},
                                    {"nesterov", nesterov ? 1.0 : 0.0}}) {
  NEEDLE_CHECK(lr >= 0 && momentum >= 0 && weight_decay >= 0, ValueError,
               "SGD: expected lr, momentum and weight_decay >= 0, got ", lr, ", ", momentum,
               ", ", weight_decay);
  NEEDLE_CHECK(!nesterov || (momentum > 0 && dampening == 0), ValueError,
               "SGD: nesterov needs momentum > 0 and dampening 0, got momentum ", momentum,
               " and dampening ", dampening);
}

void SGD::update(const std::vector<Update>& updates) {
  for (const Update& u : updates) {
    const Tensor& p = *u.param;
    const Options& o = *u.options;
    const double lr = option(o, "lr"), mu = option(o, "momentum"), wd = option(o, "weight_decay");
    NDArray g = u.grad.astype(state_dtype(p.dtype()));
    if (wd != 0) g = add(g, mul(p.data().astype(g.dtype()), Scalar(wd)));
    if (mu != 0) {
      auto& buffers = u.state->buffers;
      auto it = buffers.find("momentum_buffer");
      if (it == buffers.end()) {
        it = buffers.emplace("momentum_buffer", g.clone()).first;
      } else {
        it->second.assign(add(mul(it->second, Scalar(mu)),
                              mul(g, Scalar(1.0 - option(o, "dampening")))));
      }
      g = option(o, "nesterov") != 0 ? add(g, mul(it->second, Scalar(mu))) : it->second;
    }
    p.data().assign(sub(p.data().astype(g.dtype()), mul(g, Scalar(lr))));
  }
}

// --- Adam / AdamW --------------------------------------------------------------------------------------
Adam::Adam(std::vector<ParamGroup> groups, double lr, double beta1, double beta2, double eps,
           double weight_decay)
    : Adam(std::move(groups), lr, beta1, beta2, eps, weight_decay, false) {}

Adam::Adam(std::vector<ParamGroup> groups, double lr, double beta1, double beta2, double eps,
           double weight_decay, bool decoupled)
    : Optimizer(std::move(groups), {{"lr", lr},
                                    {"beta1", beta1},
                                    {"beta2", beta2},
                                    {"eps", eps},
                                    {"weight_decay", weight_decay}}),
      decoupled_(decoupled) {
  NEEDLE_CHECK(lr >= 0 && eps >= 0 && weight_decay >= 0, ValueError,
               "Adam: expected lr, eps and weight_decay >= 0, got ", lr, ", ", eps, ", ",
               weight_decay);
  NEEDLE_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, ValueError,
               "Adam: expected betas in [0, 1), got (", beta1, ", ", beta2, ")");
}

void Adam::update(const std::vector<Update>& updates) {
  ByBackend<AdamWParam> calls;
  std::vector<NDArray> keep;  // arrays the AdamWParams point into (a gradient with L2 decay)
  for (const Update& u : updates) {
    const Options& o = *u.options;
    const double lr = option(o, "lr"), b1 = option(o, "beta1"), b2 = option(o, "beta2"),
                 eps = option(o, "eps"), wd = option(o, "weight_decay");
    const NDArray& param = u.param->data();
    NDArray& m = buffer(u.state->buffers, "exp_avg", param);
    NDArray& v = buffer(u.state->buffers, "exp_avg_sq", param);
    NDArray g = u.grad;
    // Adam's L2 decay enters the gradient; AdamW's decoupled decay is the kernel's own term.
    if (!decoupled_ && wd != 0)
      g = add(g.astype(m.dtype()), mul(param.astype(m.dtype()), Scalar(wd)));
    const double kernel_wd = decoupled_ ? wd : 0.0;
    const double step = static_cast<double>(u.state->step);
    const double bc1 = 1.0 - std::pow(b1, step), bc2 = 1.0 - std::pow(b2, step);
    const Backend& be = param.backend();
    if (!be.adamw) {
      // Composed fallback for backends without the fused entry: the same formula in NDArray ops.
      NDArray gf = g.astype(m.dtype());
      m.assign(add(mul(m, Scalar(b1)), mul(gf, Scalar(1.0 - b1))));
      v.assign(add(mul(v, Scalar(b2)), mul(mul(gf, gf), Scalar(1.0 - b2))));
      NDArray denom = add(div(sqrt(v), Scalar(std::sqrt(bc2))), Scalar(eps));
      NDArray pf = param.astype(m.dtype());
      param.assign(
          sub(mul(pf, Scalar(1.0 - lr * kernel_wd)), mul(div(m, denom), Scalar(lr / bc1))));
      continue;
    }
    keep.push_back(g);
    calls.add(be, {param.ref(), g.ref(), m.ref(), v.ref(), lr, b1, b2, eps, kernel_wd, bc1, bc2});
  }
  for (const auto& [be, params] : calls.groups)
    be->adamw(params.data(), static_cast<int64_t>(params.size()));
}

// --- clipping --------------------------------------------------------------------------------------------
namespace {

std::vector<ArrayRef> refs(const std::vector<NDArray>& arrays) {
  std::vector<ArrayRef> out;
  out.reserve(arrays.size());
  for (const NDArray& a : arrays) out.push_back(a.ref());
  return out;
}

// The gradients grouped by device, as the foreach kernels take them: compact arrays.
using DeviceGroups = ByBackend<NDArray>;

// The global norm of the gradients as a float64 scalar on the first group's device, with no host
// read: for p = 2 one foreach_sum_squares call per device; any other p from per-gradient partial
// norms (the max norm exact in the gradients' dtype, |g|^p summed in float64). A device's partial
// result is copied to the first device when the gradients span several.
NDArray total_norm(const DeviceGroups& groups, double norm_type) {
  const Device first = groups.groups.front().second.front().device();
  const bool inf = std::isinf(norm_type);
  NDArray total;
  auto add_part = [&](const NDArray& part) {
    const NDArray here = part.device() == first ? part : part.to(first);
    total = !total.defined() ? here : inf ? maximum(total, here) : add(total, here);
  };
  for (const auto& [be, arrays] : groups.groups) {
    if (norm_type == 2.0) {
      NDArray out = NDArray::empty({}, DType::Float64, arrays.front().device());
      const std::vector<ArrayRef> r = refs(arrays);
      be->foreach_sum_squares(r.data(), static_cast<int64_t>(r.size()), out.ref());
      add_part(out);
      continue;
    }
    for (const NDArray& g : arrays)
      add_part(inf ? max(abs(g)).astype(DType::Float64)
                   : sum(pow(abs(g.astype(DType::Float64)), Scalar(norm_type))));
  }
  if (norm_type == 2.0) return sqrt(total);
  return inf ? total : pow(total, Scalar(1.0 / norm_type));
}

// Scales every gradient in place by max_norm / (norm + 1e-6) where that is below 1, the factor
// computed on each device from `norm` (one foreach_scale_to_max_norm call per device).
void scale_to_max_norm(const DeviceGroups& groups, const NDArray& norm, double max_norm) {
  for (const auto& [be, arrays] : groups.groups) {
    const Device device = arrays.front().device();
    const NDArray n = norm.device() == device ? norm : norm.to(device);
    const std::vector<ArrayRef> r = refs(arrays);
    be->foreach_scale_to_max_norm(r.data(), static_cast<int64_t>(r.size()), n.ref(), max_norm);
  }
}

}  // namespace

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  NEEDLE_CHECK(max_norm >= 0, ValueError, "clip_grad_norm_: expected max_norm >= 0, got ",
               max_norm);
  NEEDLE_CHECK(norm_type >= 1, ValueError,  // inf passes; -inf and NaN do not
               "clip_grad_norm_: expected norm_type >= 1 or inf, got ", norm_type);
  NoGradGuard no_grad;
  DeviceGroups groups;
  std::vector<std::pair<NDArray, NDArray>> write_back;  // (strided gradient, its compact copy)
  for (const Tensor& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    const NDArray g = p.grad().data();
    if (!g.is_compact()) write_back.emplace_back(g, g.compact());
    groups.add(g.backend(), g.is_compact() ? g : write_back.back().second);
  }
  if (groups.groups.empty()) return Tensor(NDArray::scalar(0.0, DType::Float64));
  const NDArray norm = total_norm(groups, norm_type);
  scale_to_max_norm(groups, norm, max_norm);
  for (const auto& [g, scaled] : write_back) g.assign(scaled);
  return Tensor(norm);
}

// --- schedules -------------------------------------------------------------------------------------------
LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(optimizer) {
  for (const ParamGroup& g : optimizer.param_groups()) base_lrs_.push_back(g.options.at("lr"));
}
LRScheduler::~LRScheduler() = default;

void LRScheduler::apply() {
  auto& groups = optimizer_.param_groups();
  NEEDLE_CHECK(groups.size() == base_lrs_.size(), ValueError, "lr scheduler: the optimizer has ",
               groups.size(), " groups, the scheduler was built for ", base_lrs_.size());
  const double f = factor(step_);
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options["lr"] = base_lrs_[i] * f;
}

void LRScheduler::step() {
  ++step_;
  apply();
}

void LRScheduler::set_last_step(int64_t step) {
  NEEDLE_CHECK(step >= 0, ValueError, "lr scheduler: expected a step >= 0, got ", step);
  step_ = step;
  apply();
}

std::vector<double> LRScheduler::get_last_lr() const {
  std::vector<double> out;
  for (const ParamGroup& g : optimizer_.param_groups()) out.push_back(g.options.at("lr"));
  return out;
}

namespace {
double warmup_factor(int64_t step, int64_t warmup) {
  return static_cast<double>(step + 1) / static_cast<double>(warmup);
}
}  // namespace

ConstantLR::ConstantLR(Optimizer& optimizer, int64_t warmup)
    : LRScheduler(optimizer), warmup_steps(warmup) {
  NEEDLE_CHECK(warmup >= 0, ValueError, "ConstantLR: expected warmup_steps >= 0, got ", warmup);
  apply();
}
double ConstantLR::factor(int64_t step) const {
  return step < warmup_steps ? warmup_factor(step, warmup_steps) : 1.0;
}

namespace {

// Warm-up-then-decay schedules: the checks they share, and how far into the decay a step is.
void check_decay(const char* who, int64_t warmup, int64_t total, const char* ratio_name,
                 double ratio) {
  NEEDLE_CHECK(warmup >= 0 && total > warmup, ValueError, who,
               ": expected 0 <= warmup_steps < total_steps, got ", warmup, " and ", total);
  NEEDLE_CHECK(ratio >= 0 && ratio <= 1, ValueError, who, ": expected ", ratio_name,
               " in [0, 1], got ", ratio);
}

double decay_progress(int64_t step, int64_t warmup, int64_t total) {
  return std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
}

}  // namespace

WarmupCosineLR::WarmupCosineLR(Optimizer& optimizer, int64_t warmup, int64_t total, double min_r)
    : LRScheduler(optimizer), warmup_steps(warmup), total_steps(total), min_ratio(min_r) {
  check_decay("WarmupCosineLR", warmup, total, "min_ratio", min_r);
  apply();
}
double WarmupCosineLR::factor(int64_t step) const {
  if (step < warmup_steps) return warmup_factor(step, warmup_steps);
  const double progress = decay_progress(step, warmup_steps, total_steps);
  return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

LinearDecayLR::LinearDecayLR(Optimizer& optimizer, int64_t warmup, int64_t total, double end_r)
    : LRScheduler(optimizer), warmup_steps(warmup), total_steps(total), end_ratio(end_r) {
  check_decay("LinearDecayLR", warmup, total, "end_ratio", end_r);
  apply();
}
double LinearDecayLR::factor(int64_t step) const {
  if (step < warmup_steps) return warmup_factor(step, warmup_steps);
  return 1.0 + (end_ratio - 1.0) * decay_progress(step, warmup_steps, total_steps);
}

}  // namespace needle::nn
