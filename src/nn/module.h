// Module: a tree of named submodules, parameters and buffers, as torch.nn.Module. Parameters are
// Tensors that require gradients; layers keep Tensor handles to them, which share the registered
// storage, so to(), load_state_dict() and optimizers update what forward() reads.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/functional.h"
#include "nn/safetensors.h"

namespace needle::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What load_state_dict found wrong, by key.
struct LoadResult {
  std::vector<std::string> missing;     // in the module, not in the state dict
  std::vector<std::string> unexpected;  // in the state dict, not in the module
  std::vector<std::string> mismatched;  // "name: expected (a, b), got (c,)"
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
};

class Module {
 public:
  Module() = default;
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The class name shown by repr(), and what goes inside its parentheses.
  virtual std::string type_name() const { return "Module"; }
  virtual std::string extra_repr() const { return ""; }
  // The one-tensor forward that containers (Sequential, Residual) call. Modules with other
  // signatures (losses) also define their own overloads.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // --- registration (re-registering a name replaces it) --------------------------------------------
  // An undefined tensor registers an absent parameter (Linear without bias): listed nowhere.
  Tensor register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value, bool persistent = true);
  std::shared_ptr<Module> register_module(const std::string& name, std::shared_ptr<Module> module);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    register_module(name, std::static_pointer_cast<Module>(module));
    return module;
  }
  // Lookups by direct name; nullopt / null when absent.
  std::optional<Tensor> find_parameter(const std::string& name) const;
  std::optional<Tensor> find_buffer(const std::string& name) const;
  std::shared_ptr<Module> find_child(const std::string& name) const;

  // --- traversal (depth first, registration order, dotted names) ------------------------------------
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  std::vector<std::pair<std::string, const Module*>> named_modules(const std::string& prefix = "") const;
  int64_t num_parameters(bool trainable_only = false) const;

  // --- state -------------------------------------------------------------------------------------------
  void train(bool mode = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  // Moves parameters and buffers; dtype converts floating ones only (int buffers keep theirs).
  void to(std::optional<Device> device, std::optional<DType> dtype = std::nullopt);
  void zero_grad();
  // Parameters and persistent buffers by dotted name (the arrays are shared, not copied).
  NamedArrays state_dict() const;
  // Copies values into the existing parameters/buffers (converted to their dtype and device).
  // strict: any missing, unexpected or shape-mismatched key raises ValueError listing all of
  // them, and nothing is modified. Not strict: matching keys load, the rest is returned.
  LoadResult load_state_dict(const NamedArrays& state, bool strict = true);
  std::string repr() const;

 private:
  struct Slot {
    std::string name;
    Tensor tensor;
    bool persistent = true;
  };
  void collect(const std::string& prefix, bool recurse, bool buffers, bool persistent_only,
               NamedTensors& out) const;
  std::vector<Slot> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace needle::nn
