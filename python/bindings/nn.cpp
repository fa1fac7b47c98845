// needle._C.nn (modules, layers, init, functional extras, save/load) and needle._C.optim over
// src/nn. Module is subclassable from Python: assigning a Parameter or a Module to an attribute
// registers it (__setattr__ below), and a Python forward() overrides the C++ one through the
// PyModule trampoline, so C++ containers (Sequential, Residual) call Python children.
#include <pybind11/functional.h>

#include "bindings.h"
#include "ndarray/error.h"
#include "nn/attention.h"
#include "nn/block_sparse_layout.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/optim.h"

namespace needle::python {
namespace {

using namespace needle::nn;
using ModulePtr = std::shared_ptr<Module>;

// A Tensor that a module registers as a trainable parameter (torch.nn.Parameter).
struct Parameter : Tensor {
  explicit Parameter(const Tensor& t) : Tensor(t.impl()) {}
};

class PyModule : public Module {
 public:
  Tensor forward(const Tensor& x) override { PYBIND11_OVERRIDE(Tensor, Module, forward, x); }
  std::string extra_repr() const override {
    PYBIND11_OVERRIDE(std::string, Module, extra_repr, );
  }
  // The Python subclass's name, so repr() of a tree shows user classes by name.
  std::string type_name() const override {
    py::gil_scoped_acquire gil;
    py::handle self = py::detail::get_object_handle(this, py::detail::get_type_info(typeid(Module)));
    if (!self) return "Module";
    return py::str(self.get_type().attr("__name__"));
  }
};

Tensor tensor_from(py::handle obj) {
  if (py::isinstance<Tensor>(obj)) return py::cast<Tensor>(obj);
  if (py::isinstance<NDArray>(obj)) return Tensor(py::cast<NDArray>(obj));
  return Tensor(to_ndarray(obj));
}

py::object wrap_param(const Tensor& t) {
  return t.defined() ? py::cast(Parameter(t)) : py::none();
}

py::dict arrays_to_dict(const NamedArrays& arrays) {
  py::dict d;
  for (const auto& [name, a] : arrays) d[py::str(name)] = Tensor(a);
  return d;
}

NamedArrays dict_to_arrays(py::handle mapping) {
  NamedArrays out;
  for (auto item : py::reinterpret_borrow<py::dict>(mapping))
    out.emplace_back(py::cast<std::string>(item.first), tensor_from(item.second).data());
  return out;
}

// Recursion over shared_ptr children, so Python gets the existing wrappers of Python modules.
void named_modules_into(const ModulePtr& m, const std::string& prefix, py::list& out) {
  // A shared_ptr self is null when the method is called unbound with None.
  NEEDLE_CHECK(m, TypeError, "named_modules: expected a Module as self, got None");
  out.append(py::make_tuple(prefix, m));
  for (const auto& [name, child] : m->named_children())
    named_modules_into(child, prefix.empty() ? name : prefix + "." + name, out);
}

void set_attr(py::object self, const std::string& name, py::object value) {
  Module& m = py::cast<Module&>(self);
  py::object object_setattr = py::module_::import("builtins").attr("object").attr("__setattr__");
  auto drop_plain = [&] {
    py::dict d = self.attr("__dict__");
    if (d.contains(name)) PyDict_DelItemString(d.ptr(), name.c_str());
  };
  if (py::isinstance<Parameter>(value)) {
    drop_plain();
    m.register_parameter(name, py::cast<Tensor>(value));
  } else if (py::isinstance<Module>(value)) {
    drop_plain();
    m.register_module(name, py::cast<ModulePtr>(value));
    py::detail::keep_alive_impl(self, value);  // the Python part of a Python child lives on
  } else if (m.find_parameter(name)) {
    NEEDLE_CHECK(value.is_none(), TypeError, "cannot assign ",
                 std::string(py::str(value.get_type().attr("__name__"))), " to parameter '", name,
                 "' (expected nn.Parameter or None)");
    m.register_parameter(name, Tensor());
  } else if (m.find_buffer(name) && (py::isinstance<Tensor>(value) || value.is_none())) {
    m.register_buffer(name, value.is_none() ? Tensor() : py::cast<Tensor>(value));
  } else {
    object_setattr(self, name, value);
  }
}

py::object get_attr(py::object self, const std::string& name) {
  Module& m = py::cast<Module&>(self);
  if (auto p = m.find_parameter(name)) return wrap_param(*p);
  if (auto b = m.find_buffer(name)) return b->defined() ? py::cast(*b) : py::none();
  if (ModulePtr c = m.find_child(name)) return py::cast(c);
  throw py::attribute_error("'" + std::string(py::str(self.get_type().attr("__name__"))) +
                            "' object has no attribute '" + name + "'");
}

void bind_module(py::module_& nn) {
  py::class_<Parameter, Tensor>(nn, "Parameter", "A Tensor registered as a module parameter.")
      .def(py::init([](py::handle data, bool requires_grad) {
             Tensor t(tensor_from(data).data(), false);
             t.requires_grad_(requires_grad);
             return Parameter(t);
           }),
           py::arg("data"), py::arg("requires_grad") = true);

  py::object incompatible = py::module_::import("collections").attr("namedtuple")(
      "IncompatibleKeys", "missing_keys unexpected_keys mismatched_keys");

  py::class_<Module, PyModule, ModulePtr>(nn, "Module", py::dynamic_attr())
      .def(py::init<>())
      .def("forward", [](Module& m, const Tensor& x) { return m.forward(x); })
      .def("__call__", [](py::object self, py::args args, py::kwargs kwargs) {
             NEEDLE_CHECK(py::isinstance<Module>(self), TypeError,
                          "Module.__call__: expected a Module as self, got ",
                          py::str(py::type::of(self).attr("__name__")).cast<std::string>());
             return self.attr("forward")(*args, **kwargs);
           })
      .def("__setattr__", &set_attr)
      .def("__getattr__", &get_attr)
      .def("register_parameter", [](Module& m, const std::string& name, py::handle p) {
             m.register_parameter(name, p.is_none() ? Tensor() : tensor_from(p));
           }, py::arg("name"), py::arg("param"))
      .def("register_buffer", [](Module& m, const std::string& name, py::handle t, bool persistent) {
             m.register_buffer(name, t.is_none() ? Tensor() : tensor_from(t), persistent);
           }, py::arg("name"), py::arg("tensor"), py::arg("persistent") = true)
      .def("add_module", [](Module& m, const std::string& name, ModulePtr child) {
             m.register_module(name, child);
           }, py::arg("name"), py::arg("module"), py::keep_alive<1, 3>())
      .def("named_parameters", [](const Module& m, bool recurse) {
             py::list out;
             for (const auto& [n, t] : m.named_parameters(recurse))
               out.append(py::make_tuple(n, wrap_param(t)));
             return out;
           }, py::arg("recurse") = true)
      .def("parameters", [](const Module& m, bool recurse) {
             py::list out;
             for (const Tensor& t : m.parameters(recurse)) out.append(wrap_param(t));
             return out;
           }, py::arg("recurse") = true)
      .def("named_buffers", [](const Module& m, bool recurse) {
             py::list out;
             for (const auto& [n, t] : m.named_buffers(recurse)) out.append(py::make_tuple(n, t));
             return out;
           }, py::arg("recurse") = true)
      .def("buffers", [](const Module& m, bool recurse) {
             py::list out;
             for (const auto& [n, t] : m.named_buffers(recurse)) out.append(t);
             return out;
           }, py::arg("recurse") = true)
      .def("named_children", [](const Module& m) {
             py::list out;
             for (const auto& [n, c] : m.named_children()) out.append(py::make_tuple(n, c));
             return out;
           })
      .def("children", [](const Module& m) {
             py::list out;
             for (const auto& [n, c] : m.named_children()) out.append(c);
             return out;
           })
      .def("named_modules", [](ModulePtr m) {
             py::list out;
             named_modules_into(m, "", out);
             return out;
           })
      .def("modules", [](ModulePtr m) {
             py::list pairs, out;
             named_modules_into(m, "", pairs);
             for (auto p : pairs) out.append(p.cast<py::tuple>()[1]);
             return out;
           })
      .def("train", [](py::object self, bool mode) {
             py::cast<Module&>(self).train(mode);
             return self;
           }, py::arg("mode") = true)
      .def("eval", [](py::object self) {
             py::cast<Module&>(self).eval();
             return self;
           })
      .def_property_readonly("training", self_ref(&Module::training))
      .def("to", [](py::object self, py::handle target, py::handle dtype) {
             std::optional<Device> dev;
             std::optional<DType> dt = to_optional_dtype(dtype);
             if (!target.is_none()) {
               try {
                 dt = to_dtype(target);
               } catch (const std::exception&) {
                 dev = to_device(target);
               }
             }
             py::cast<Module&>(self).to(dev, dt);
             return self;
           }, py::arg("device") = py::none(), py::arg("dtype") = py::none())
      .def("cpu", [](py::object self) {
             py::cast<Module&>(self).to(cpu());
             return self;
           })
      .def("zero_grad", self_ref(&Module::zero_grad))
      .def("state_dict", [](const Module& m) { return arrays_to_dict(m.state_dict()); })
      .def("load_state_dict", [incompatible](Module& m, py::handle state, bool strict) {
             LoadResult r = m.load_state_dict(dict_to_arrays(state), strict);
             return incompatible(r.missing, r.unexpected, r.mismatched);
           }, py::arg("state_dict"), py::arg("strict") = true)
      .def("num_parameters", &Module::num_parameters, py::arg("trainable_only") = false)
      .def("extra_repr", self_ref(&Module::extra_repr))
      .def("__repr__", self_ref(&Module::repr));
}

void bind_layers(py::module_& nn) {
  using py::arg;
  py::class_<Linear, Module, std::shared_ptr<Linear>>(nn, "Linear")
      .def(py::init<int64_t, int64_t, bool>(), arg("in_features"), arg("out_features"),
           arg("bias") = true)
      .def("forward", &Linear::forward, arg("input"))
      .def_readonly("in_features", &Linear::in_features)
      .def_readonly("out_features", &Linear::out_features);
  py::class_<Embedding, Module, std::shared_ptr<Embedding>>(nn, "Embedding")
      .def(py::init<int64_t, int64_t>(), arg("num_embeddings"), arg("embedding_dim"))
      .def("forward", &Embedding::forward, arg("input"))
      .def_readonly("num_embeddings", &Embedding::num_embeddings)
      .def_readonly("embedding_dim", &Embedding::embedding_dim);
  py::class_<LayerNorm, Module, std::shared_ptr<LayerNorm>>(nn, "LayerNorm")
      .def(py::init([](py::handle shape, double eps, bool affine, bool bias) {
             Shape s = to_shape(shape);
             NEEDLE_CHECK(s.size() == 1, ValueError,
                          "LayerNorm: normalized_shape must have one dim, got ", shape_str(s));
             return std::make_shared<LayerNorm>(s[0], eps, affine, bias);
           }),
           arg("normalized_shape"), arg("eps") = 1e-5, arg("elementwise_affine") = true,
           arg("bias") = true)
      .def("forward", &LayerNorm::forward, arg("input"))
      .def_readonly("eps", &LayerNorm::eps);
  py::class_<RMSNorm, Module, std::shared_ptr<RMSNorm>>(nn, "RMSNorm")
      .def(py::init<int64_t, double, bool>(), arg("dim"), arg("eps") = 1e-6,
           arg("elementwise_affine") = true)
      .def("forward", &RMSNorm::forward, arg("input"))
      .def_readonly("eps", &RMSNorm::eps);
  py::class_<Dropout, Module, std::shared_ptr<Dropout>>(nn, "Dropout")
      .def(py::init<double>(), arg("p") = 0.5)
      .def("forward", &Dropout::forward, arg("input"))
      .def_readonly("p", &Dropout::p);
  py::class_<GELU, Module, std::shared_ptr<GELU>>(nn, "GELU")
      .def(py::init<std::string>(), arg("approximate") = "none")
      .def("forward", &GELU::forward, arg("input"));
  py::class_<ReLU, Module, std::shared_ptr<ReLU>>(nn, "ReLU")
      .def(py::init<>())
      .def("forward", &ReLU::forward, arg("input"));
  py::class_<SiLU, Module, std::shared_ptr<SiLU>>(nn, "SiLU")
      .def(py::init<>())
      .def("forward", &SiLU::forward, arg("input"));
  py::class_<Sequential, Module, std::shared_ptr<Sequential>>(nn, "Sequential")
      .def(py::init<>())
      .def("append", &Sequential::append, arg("module"), py::keep_alive<1, 2>())
      .def("forward", &Sequential::forward, arg("input"))
      .def("__len__", self_ref(&Sequential::size))
      .def("__getitem__", self_ref(&Sequential::at));
  py::class_<ModuleList, Module, std::shared_ptr<ModuleList>>(nn, "ModuleList")
      .def(py::init<>())
      .def("append", &ModuleList::append, arg("module"), py::keep_alive<1, 2>())
      .def("__len__", self_ref(&ModuleList::size))
      .def("__getitem__", self_ref(&ModuleList::at));
  py::class_<Residual, Module, std::shared_ptr<Residual>>(nn, "Residual")
      .def(py::init<ModulePtr>(), arg("module"), py::keep_alive<1, 2>())
      .def("forward", &Residual::forward, arg("input"));
  py::class_<CrossEntropyLoss, Module, std::shared_ptr<CrossEntropyLoss>>(nn, "CrossEntropyLoss")
      .def(py::init<int64_t, std::string>(), arg("ignore_index") = -100, arg("reduction") = "mean")
      .def("forward", py::overload_cast<const Tensor&, const Tensor&>(&CrossEntropyLoss::forward),
           arg("input"), arg("target"));
  py::class_<MSELoss, Module, std::shared_ptr<MSELoss>>(nn, "MSELoss")
      .def(py::init<std::string>(), arg("reduction") = "mean")
      .def("forward", py::overload_cast<const Tensor&, const Tensor&>(&MSELoss::forward),
           arg("input"), arg("target"));
  py::class_<MultiHeadAttention, Module, std::shared_ptr<MultiHeadAttention>>(nn,
                                                                              "MultiHeadAttention")
      // attention: a pattern name ("dense", "local", "global", "strided", "mixed", "random")
      // or a BlockSparseLayout of the user's own.
      .def(py::init([](int64_t e, int64_t h, bool bias, bool fused, int64_t rd, double base,
                       bool causal, double dropout, py::handle attention, int64_t block_size) {
             if (py::isinstance<BlockSparseLayout>(attention)) {
               const auto& layout = py::cast<const BlockSparseLayout&>(attention);
               auto m = std::make_shared<MultiHeadAttention>(e, h, bias, fused, rd, base, causal,
                                                             dropout, "dense",
                                                             layout.block_size());
               m->use_layout(layout);
               return m;
             }
             NEEDLE_CHECK(py::isinstance<py::str>(attention), TypeError,
                          "MultiHeadAttention: attention must be a pattern name or a "
                          "BlockSparseLayout, got ",
                          std::string(py::str(py::type::handle_of(attention))));
             return std::make_shared<MultiHeadAttention>(e, h, bias, fused, rd, base, causal,
                                                         dropout, py::cast<std::string>(attention),
                                                         block_size);
           }),
           arg("embed_dim"), arg("num_heads"), arg("bias") = true, arg("fused_qkv") = true,
           arg("rotary_dim") = 0, arg("rotary_base") = 10000.0, arg("causal") = true,
           arg("dropout") = 0.0, arg("attention") = "dense", arg("block_size") = 64)
      .def_readonly("attention", &MultiHeadAttention::attention)
      .def_readonly("block_size", &MultiHeadAttention::block_size)
      .def("forward", [](MultiHeadAttention& m, const Tensor& x, std::optional<bool> is_causal) {
             return m.forward(x, is_causal.value_or(m.causal));
           }, arg("input"), arg("is_causal") = py::none())
      .def_readonly("embed_dim", &MultiHeadAttention::embed_dim)
      .def_readonly("num_heads", &MultiHeadAttention::num_heads)
      .def_readonly("head_dim", &MultiHeadAttention::head_dim)
      .def_readonly("rotary_dim", &MultiHeadAttention::rotary_dim);
}

void bind_functional_and_io(py::module_& nn) {
  using py::arg;
  nn.def("silu", &silu, arg("input"));
  nn.def("relu", [](const Tensor& x) { return relu(x); }, arg("input"));
  nn.def("rms_norm", [](const Tensor& x, std::optional<Tensor> w, double eps) {
           return rms_norm(x, w.value_or(Tensor()), eps);
         }, arg("input"), arg("weight") = py::none(), arg("eps") = 1e-6);
  nn.def("mse_loss", [](const Tensor& a, const Tensor& b, const std::string& r) {
           return mse_loss(a, b, reduction_from_name(r));
         }, arg("input"), arg("target"), arg("reduction") = "mean");
  nn.def("scaled_dot_product_attention", &scaled_dot_product_attention, arg("query"), arg("key"),
         arg("value"), arg("is_causal") = false, arg("dropout_p") = 0.0, arg("scale") = py::none());
  nn.def("apply_rotary", [](const Tensor& x, int64_t rotary_dim, double base, int64_t offset) {
           return RotaryEmbedding(rotary_dim, base).apply(x, offset);
         }, arg("x"), arg("rotary_dim"), arg("base") = 10000.0, arg("offset") = 0);
  nn.def("clip_grad_norm_", [](py::iterable params, double max_norm, double norm_type) {
           std::vector<Tensor> ps;
           for (auto p : params) ps.push_back(py::cast<Tensor>(p));
           return clip_grad_norm_(ps, max_norm, norm_type);
         }, arg("parameters"), arg("max_norm"), arg("norm_type") = 2.0);

  nn.def("save", [](py::handle state, const std::string& path, std::optional<Metadata> metadata) {
           NamedArrays arrays = dict_to_arrays(state);
           py::gil_scoped_release release;
           save_safetensors(arrays, path, metadata.value_or(Metadata{}));
         }, arg("state_dict"), arg("path"), arg("metadata") = py::none(),
         "Writes a dict of tensors to a safetensors file atomically.");
  nn.def("load", [](const std::string& path, py::handle device) {
           Device dev = to_device(device);
           SafetensorsContents c;
           {
             py::gil_scoped_release release;
             c = load_safetensors(path, dev);
           }
           return arrays_to_dict(c.tensors);
         }, arg("path"), arg("device") = py::none(),
         "Reads a safetensors file into a dict of tensors (F16 -> float32, U8 -> int32).");
  nn.def("load_metadata", [](const std::string& path) { return load_safetensors(path).metadata; },
         arg("path"));

  py::module_ init = nn.def_submodule("init", "In-place parameter initialisers.");
  init.def("uniform_", &init::uniform_, arg("tensor"), arg("a") = 0.0, arg("b") = 1.0);
  init.def("normal_", &init::normal_, arg("tensor"), arg("mean") = 0.0, arg("std") = 1.0);
  init.def("constant_", &init::constant_, arg("tensor"), arg("val"));
  init.def("zeros_", &init::zeros_, arg("tensor"));
  init.def("ones_", &init::ones_, arg("tensor"));
  init.def("trunc_normal_", &init::trunc_normal_, arg("tensor"), arg("mean") = 0.0,
           arg("std") = 1.0, arg("a") = -2.0, arg("b") = 2.0);
  init.def("xavier_uniform_", &init::xavier_uniform_, arg("tensor"), arg("gain") = 1.0);
  init.def("xavier_normal_", &init::xavier_normal_, arg("tensor"), arg("gain") = 1.0);
  init.def("kaiming_uniform_", &init::kaiming_uniform_, arg("tensor"), arg("a") = 0.0,
           arg("mode") = "fan_in", arg("nonlinearity") = "leaky_relu");
  init.def("kaiming_normal_", &init::kaiming_normal_, arg("tensor"), arg("a") = 0.0,
           arg("mode") = "fan_in", arg("nonlinearity") = "leaky_relu");
  init.def("small_init_", &init::small_init_, arg("tensor"), arg("dim"));
  init.def("wang_init_", &init::wang_init_, arg("tensor"), arg("dim"), arg("n_layers"));
  init.def("calculate_gain", &init::calculate_gain, arg("nonlinearity"), arg("param") = 0.01);
}

// params: an iterable of tensors, or of dicts {"params": [...], option: value, ...}.
std::vector<ParamGroup> to_groups(py::handle params) {
  std::vector<ParamGroup> groups;
  ParamGroup loose;
  for (auto item : py::reinterpret_borrow<py::iterable>(params)) {
    if (py::isinstance<py::dict>(item)) {
      ParamGroup g;
      for (auto kv : item.cast<py::dict>()) {
        std::string key = py::cast<std::string>(kv.first);
        if (key == "params") {
          for (auto p : py::reinterpret_borrow<py::iterable>(kv.second))
            g.params.push_back(py::cast<Tensor>(p));
        } else if (key == "betas") {
          auto b = py::cast<std::pair<double, double>>(kv.second);
          g.options["beta1"] = b.first;
          g.options["beta2"] = b.second;
        } else {
          g.options[key] = py::cast<double>(kv.second);
        }
      }
      groups.push_back(std::move(g));
    } else {
      loose.params.push_back(py::cast<Tensor>(item));
    }
  }
  NEEDLE_CHECK(loose.params.empty() || groups.empty(), ValueError,
               "optimizer params: expected all tensors or all dicts, got a mix");
  if (!loose.params.empty()) groups.push_back(std::move(loose));
  return groups;
}

void bind_optim(py::module_& m) {
  using py::arg;
  py::module_ optim = m.def_submodule("optim", "Optimizers and learning-rate schedules.");
  py::class_<ParamGroup>(optim, "ParamGroup")
      .def("__getitem__", [](const ParamGroup& g, const std::string& key) -> py::object {
             if (key == "params") {
               py::list out;
               for (const Tensor& t : g.params) out.append(wrap_param(t));
               return out;
             }
             auto it = g.options.find(key);
             if (it == g.options.end()) throw py::key_error(key);
             return py::float_(it->second);
           })
      .def("__setitem__", [](ParamGroup& g, const std::string& key, double v) {
             NEEDLE_CHECK(g.options.count(key), ValueError, "unknown parameter group option '",
                          key, "'");
             g.options[key] = v;
           })
      .def("keys", [](const ParamGroup& g) {
             py::list out;
             out.append("params");
             for (const auto& [k, v] : g.options) out.append(k);
             return out;
           });
  py::class_<Optimizer>(optim, "Optimizer")
      .def("step", [](Optimizer& o) {
             py::gil_scoped_release release;
             o.step();
           })
      .def("zero_grad", [](Optimizer& o, bool set_to_none) { o.zero_grad(); },
           arg("set_to_none") = true)
      .def_property_readonly("param_groups", [](py::object self) {
             py::list out;
             for (ParamGroup& g : py::cast<Optimizer&>(self).param_groups())
               out.append(py::cast(&g, py::return_value_policy::reference_internal, self));
             return out;
           })
      .def("add_param_group", [](Optimizer& o, py::dict group) {
             py::list one;
             one.append(group);
             o.add_param_group(to_groups(one).at(0));
           })
      .def("state_dict", [](const Optimizer& o) { return arrays_to_dict(o.state_dict()); })
      .def("load_state_dict", [](Optimizer& o, py::handle d) { o.load_state_dict(dict_to_arrays(d)); },
           arg("state_dict"))
      .def("__repr__", [](const Optimizer& o) { return o.type_name() + "()"; });
  py::class_<SGD, Optimizer>(optim, "SGD")
      .def(py::init([](py::handle params, double lr, double momentum, double dampening,
                       double weight_decay, bool nesterov) {
             return new SGD(to_groups(params), lr, momentum, dampening, weight_decay, nesterov);
           }),
           arg("params"), arg("lr"), arg("momentum") = 0.0, arg("dampening") = 0.0,
           arg("weight_decay") = 0.0, arg("nesterov") = false);
  py::class_<Adam, Optimizer>(optim, "Adam")
      .def(py::init([](py::handle params, double lr, std::pair<double, double> betas, double eps,
                       double weight_decay) {
             return new Adam(to_groups(params), lr, betas.first, betas.second, eps, weight_decay);
           }),
           arg("params"), arg("lr") = 1e-3, arg("betas") = std::make_pair(0.9, 0.999),
           arg("eps") = 1e-8, arg("weight_decay") = 0.0);
  py::class_<AdamW, Adam>(optim, "AdamW")
      .def(py::init([](py::handle params, double lr, std::pair<double, double> betas, double eps,
                       double weight_decay) {
             return new AdamW(to_groups(params), lr, betas.first, betas.second, eps, weight_decay);
           }),
           arg("params"), arg("lr") = 1e-3, arg("betas") = std::make_pair(0.9, 0.999),
           arg("eps") = 1e-8, arg("weight_decay") = 0.01);

  py::module_ sched = optim.def_submodule("lr_scheduler", "Learning-rate schedules.");
  py::class_<LRScheduler>(sched, "LRScheduler")
      .def("step", self_ref(&LRScheduler::step))
      .def("get_last_lr", self_ref(&LRScheduler::get_last_lr))
      .def("factor", &LRScheduler::factor, arg("step"))
      .def_property("last_step", self_ref(&LRScheduler::last_step),
                    self_ref(&LRScheduler::set_last_step))
      .def("state_dict", [](const LRScheduler& s) {
             py::dict d;
             d["last_step"] = s.last_step();
             return d;
           })
      .def("load_state_dict", [](LRScheduler& s, py::dict d) {
             s.set_last_step(py::cast<int64_t>(d["last_step"]));
           });
  py::class_<ConstantLR, LRScheduler>(sched, "ConstantLR")
      .def(py::init<Optimizer&, int64_t>(), arg("optimizer"), arg("warmup_steps") = 0,
           py::keep_alive<1, 2>());
  py::class_<WarmupCosineLR, LRScheduler>(sched, "WarmupCosineLR")
      .def(py::init<Optimizer&, int64_t, int64_t, double>(), arg("optimizer"),
           arg("warmup_steps"), arg("total_steps"), arg("min_ratio") = 0.1,
           py::keep_alive<1, 2>());
  py::class_<LinearDecayLR, LRScheduler>(sched, "LinearDecayLR")
      .def(py::init<Optimizer&, int64_t, int64_t, double>(), arg("optimizer"),
           arg("warmup_steps"), arg("total_steps"), arg("end_ratio") = 0.0,
           py::keep_alive<1, 2>());
}

}  // namespace

void init_nn(py::module_& m) {
  py::module_ nn = m.def_submodule("nn", "Modules, layers, initialisers and serialization.");
  bind_module(nn);
  bind_layers(nn);
  bind_functional_and_io(nn);
  bind_optim(m);
}

}  // namespace needle::python
