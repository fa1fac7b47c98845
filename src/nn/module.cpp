// Module tree bookkeeping: registration, traversal, device/dtype moves, state dicts, repr.
#include "nn/module.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "ndarray/error.h"

namespace needle::nn {
namespace {

template <typename Vec>
auto find_named(Vec& v, const std::string& name) {
  return std::find_if(v.begin(), v.end(), [&](const auto& s) { return s.name == name; });
}

void check_name(const std::string& name, const char* what) {
  NEEDLE_CHECK(!name.empty() && name.find('.') == std::string::npos, ValueError, what,
               " name must be non-empty and contain no '.', got '", name, "'");
}

}  // namespace

Module::~Module() = default;

Tensor Module::forward(const Tensor&) {
  throw TypeError(type_name() + " has no single-tensor forward(x); call its own forward");
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_name(name, "parameter");
  if (value.defined() && !value.requires_grad() && is_floating(value.dtype()))
    value.requires_grad_(true);
  auto it = find_named(params_, name);
  if (it != params_.end()) it->tensor = value;
  else params_.push_back({name, value, true});
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value, bool persistent) {
  check_name(name, "buffer");
  auto it = find_named(buffers_, name);
  if (it != buffers_.end()) *it = Slot{name, value, persistent};
  else buffers_.push_back({name, value, persistent});
  return value;
}

std::shared_ptr<Module> Module::register_module(const std::string& name,
                                                std::shared_ptr<Module> module) {
  check_name(name, "submodule");
  NEEDLE_CHECK(module != nullptr, ValueError, "register_module('", name, "'): module is null");
  NEEDLE_CHECK(module.get() != this, ValueError, "a module cannot be its own child ('", name, "')");
  auto it = std::find_if(children_.begin(), children_.end(),
                         [&](const auto& c) { return c.first == name; });
  if (it != children_.end()) it->second = module;
  else children_.emplace_back(name, module);
  return module;
}

std::optional<Tensor> Module::find_parameter(const std::string& name) const {
  auto it = find_named(params_, name);
  if (it == params_.end()) return std::nullopt;
  return it->tensor;
}

std::optional<Tensor> Module::find_buffer(const std::string& name) const {
  auto it = find_named(buffers_, name);
  if (it == buffers_.end()) return std::nullopt;
  return it->tensor;
}

std::shared_ptr<Module> Module::find_child(const std::string& name) const {
  for (const auto& [n, m] : children_)
    if (n == name) return m;
  return nullptr;
}

void Module::collect(const std::string& prefix, bool recurse, bool buffers, bool persistent_only,
                     NamedTensors& out) const {
  for (const Slot& s : buffers ? buffers_ : params_)
    if (s.tensor.defined() && (!persistent_only || s.persistent))
      out.emplace_back(prefix + s.name, s.tensor);
  if (!recurse) return;
  for (const auto& [name, child] : children_)
    child->collect(prefix + name + ".", true, buffers, persistent_only, out);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect("", recurse, false, false, out);
  // A parameter shared by two modules (tied embeddings) is listed once, under its first name.
  NamedTensors unique;
  for (auto& p : out) {
    bool seen = std::any_of(unique.begin(), unique.end(),
                            [&](const auto& u) { return u.second.same(p.second); });
    if (!seen) unique.push_back(std::move(p));
  }
  return unique;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  collect("", recurse, true, false, out);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  return children_;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules(
    const std::string& prefix) const {
  std::vector<std::pair<std::string, const Module*>> out{{prefix, this}};
  for (const auto& [name, child] : children_) {
    auto sub = child->named_modules(prefix.empty() ? name : prefix + "." + name);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

void Module::train(bool mode) {
  training_ = mode;
  for (auto& [name, child] : children_) child->train(mode);
}

void Module::to(std::optional<Device> device, std::optional<DType> dtype) {
  NEEDLE_CHECK(!dtype || is_floating(*dtype), TypeError,
               "Module.to: expected a floating dtype, got ", dtype_name(*dtype));
  auto move = [&](const Tensor& t) {
    NDArray a = t.data();
    if (dtype && is_floating(a.dtype())) a = a.astype(*dtype);
    if (device) a = a.to(*device);
    t.set_data(a);
    t.zero_grad();  // a gradient of the old dtype/device no longer matches
  };
  for (Slot& s : params_)
    if (s.tensor.defined()) move(s.tensor);
  for (Slot& s : buffers_)
    if (s.tensor.defined()) move(s.tensor);
  for (auto& [name, child] : children_) child->to(device, dtype);
}

void Module::zero_grad() {
  for (const Tensor& p : parameters()) p.zero_grad();
}

NamedArrays Module::state_dict() const {
  NamedTensors all;
  collect("", true, false, false, all);
  collect("", true, true, true, all);
  NamedArrays out;
  for (auto& [name, t] : all) out.emplace_back(name, t.data());
  return out;
}

LoadResult Module::load_state_dict(const NamedArrays& state, bool strict) {
  NamedTensors targets;
  collect("", true, false, false, targets);
  collect("", true, true, true, targets);
  std::map<std::string, const NDArray*> given;
  for (const auto& [name, a] : state) given[name] = &a;

  LoadResult r;
  std::vector<std::pair<Tensor, const NDArray*>> assignments;
  std::map<std::string, bool> known;
  for (const auto& [name, t] : targets) {
    known[name] = true;
    auto it = given.find(name);
    if (it == given.end()) {
      r.missing.push_back(name);
    } else if (it->second->shape() != t.shape()) {
      r.mismatched.push_back(name + ": expected " + shape_str(t.shape()) + ", got " +
                             shape_str(it->second->shape()));
    } else {
      assignments.emplace_back(t, it->second);
    }
  }
  for (const auto& [name, a] : state)
    if (!known.count(name)) r.unexpected.push_back(name);

  if (strict && !r.ok()) {
    std::ostringstream os;
    os << "load_state_dict(strict=True) for " << type_name() << ":";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      os << " " << what << " keys:";
      for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : " ") << "'" << v[i] << "'";
      os << ".";
    };
    list("missing", r.missing);
    list("unexpected", r.unexpected);
    list("shape-mismatched", r.mismatched);
    throw ValueError(os.str());
  }
  NoGradGuard no_grad;
  for (auto& [t, a] : assignments) t.data().assign(a->to(t.device()));
  return r;
}

std::string Module::repr() const {
  std::string head = type_name() + "(" + extra_repr();
  if (children_.empty()) return head + ")";
  std::ostringstream os;
  os << head << "\n";
  for (const auto& [name, child] : children_) {
    std::string sub = child->repr();
    // Indent the child's own lines under this one.
    std::string indented;
    for (char c : sub) {
      indented += c;
      if (c == '\n') indented += "  ";
    }
    os << "  (" << name << "): " << indented << "\n";
  }
  os << ")";
  return os.str();
}

}  // namespace needle::nn
