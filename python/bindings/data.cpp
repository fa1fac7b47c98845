// needle._C.data: the byte-level BPE tokenizer (src/data/tokenizer.h). Encoding
// runs with the GIL released; texts and ids are converted while it is held.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "data/tokenizer.h"

namespace needle::python {

namespace py = pybind11;
using data::Tokenizer;

namespace {

// ids -> list[int] without going through std::vector<int> -> casters per item.
py::list to_list(const std::vector<int32_t>& ids) {
  py::list out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    PyObject* v = PyLong_FromLong(ids[i]);
    if (!v) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), v);
  }
  return out;
}

std::vector<int32_t> to_ids(const py::iterable& ids) {
  std::vector<int32_t> out;
  for (py::handle h : ids) {
    if (!PyLong_Check(h.ptr()) && !py::hasattr(h, "__index__"))
      throw py::type_error("token ids must be integers, got " +
                           std::string(py::str(py::type::of(h))));
    const long long v = py::int_(py::reinterpret_borrow<py::object>(h)).cast<long long>();
    if (v < INT32_MIN || v > INT32_MAX)
      throw std::out_of_range("token id " + std::to_string(v) + " is not in the vocabulary");
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}

}  // namespace

void init_data(py::module_& m) {
  py::module_ data = m.def_submodule("data", "Tokenization and data loading.");
  // Registered so that `from needle._C.data import Tokenizer` works: an extension
  // module is not a package, so the import system only finds submodules listed here.
  py::module_::import("sys").attr("modules")[data.attr("__name__")] = data;

  py::class_<Tokenizer>(data, "Tokenizer",
                        "Byte-level BPE tokenizer (GPT-2, GPT-NeoX/Pythia).\n\n"
                        "Build it with Tokenizer.from_gpt2(encoder_json, vocab_bpe) or "
                        "Tokenizer.from_file(tokenizer_json).")
      .def_static("from_gpt2", &Tokenizer::from_gpt2, py::arg("encoder_json"), py::arg("vocab_bpe"),
                  py::call_guard<py::gil_scoped_release>(),
                  "Loads GPT-2's encoder.json and vocab.bpe.")
      .def_static("from_file", &Tokenizer::from_file, py::arg("path"),
                  py::call_guard<py::gil_scoped_release>(),
                  "Loads a Hugging Face tokenizer.json holding a byte-level BPE model.")
      .def(
          "encode",
          [](const Tokenizer& tok, const std::string& text) {
            std::vector<int32_t> ids;
            {
              py::gil_scoped_release release;
              ids = tok.encode(text);
            }
            return to_list(ids);
          },
          py::arg("text"),
          "Token ids of text; <|endoftext|> and other added tokens are recognised.")
      .def(
          "encode_batch",
          [](const Tokenizer& tok, const std::vector<std::string>& texts, int num_threads) {
            std::vector<std::vector<int32_t>> ids;
            {
              py::gil_scoped_release release;
              ids = tok.encode_batch(texts, num_threads);
            }
            py::list out(ids.size());
            for (size_t i = 0; i < ids.size(); ++i) out[i] = to_list(ids[i]);
            return out;
          },
          py::arg("texts"), py::arg("num_threads") = 0,
          "Encodes each text, on num_threads threads (0: all hardware threads).")
      .def(
          "decode",
          [](const Tokenizer& tok, const py::iterable& ids) {
            const std::vector<int32_t> v = to_ids(ids);
            return tok.decode(v);
          },
          py::arg("ids"), "Text of the ids; bytes that do not form UTF-8 become U+FFFD.")
      .def(
          "decode_bytes",
          [](const Tokenizer& tok, const py::iterable& ids) {
            const std::vector<int32_t> v = to_ids(ids);
            return py::bytes(tok.decode_bytes(v));
          },
          py::arg("ids"), "The raw bytes of the ids (may end inside a UTF-8 character).")
      .def_property_readonly("vocab_size", self_ref(&Tokenizer::vocab_size))
      .def_property_readonly("eot_token", self_ref(&Tokenizer::eot_token),
                             "Id of <|endoftext|>, or None.")
      .def("token_to_id", &Tokenizer::token_to_id, py::arg("token"),
           "Id of a token as the vocabulary spells it (\"Ġworld\"), or None.")
      .def("id_to_token", &Tokenizer::id_to_token, py::arg("id"),
           "The vocabulary's spelling of an id; IndexError if the id is unknown.")
      .def("__len__", self_ref(&Tokenizer::vocab_size))
      .def("__repr__", [](const Tokenizer& tok) {
        return "Tokenizer(vocab_size=" + std::to_string(tok.vocab_size()) + ")";
      });
}

}  // namespace needle::python
