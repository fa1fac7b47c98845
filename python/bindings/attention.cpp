// needle._C.attention: BlockSparseLayout (named patterns, layouts from NumPy block masks or CSR
// arrays, statistics, block masks for plots) and the block_sparse_attention op over src/nn.
#include "bindings.h"
#include "ndarray/error.h"
#include "nn/block_sparse_attention.h"
#include "nn/block_sparse_layout.h"

namespace needle::python {
namespace {

using needle::nn::BlockSparseLayout;

py::array numpy_array(py::handle obj, const char* dtype) {
  return py::module_::import("numpy").attr("ascontiguousarray")(obj, dtype);
}

BlockSparseLayout from_block_mask(py::handle mask, int64_t block_size, int64_t seq_len, bool causal,
                                  std::optional<int64_t> k_len) {
  py::array arr = numpy_array(mask, "bool");
  NEEDLE_CHECK(arr.ndim() == 2 || arr.ndim() == 3, ValueError,
               "BlockSparseLayout.from_block_mask: expected a 2-D (query blocks, key blocks) or "
               "3-D (heads, query blocks, key blocks) mask, got ",
               arr.ndim(), " dims");
  const int nd = static_cast<int>(arr.ndim());
  const int64_t heads = nd == 3 ? arr.shape(0) : 1;
  const auto* data = static_cast<const uint8_t*>(arr.data());
  std::vector<uint8_t> values(data, data + arr.size());
  return BlockSparseLayout::from_block_mask(values, heads, arr.shape(nd - 2), arr.shape(nd - 1),
                                            block_size, seq_len, k_len.value_or(seq_len), causal);
}

std::vector<int64_t> int_vector(py::handle obj, const char* what) {
  py::array arr = numpy_array(obj, "int64");
  NEEDLE_CHECK(arr.ndim() == 1, ValueError, "BlockSparseLayout.from_csr: expected a 1-D ", what,
               ", got ", arr.ndim(), " dims");
  const auto* data = static_cast<const int64_t*>(arr.data());
  return std::vector<int64_t>(data, data + arr.size());
}

// (QB, KB) for a shared layout, (heads, QB, KB) for one layout per head.
py::array block_mask(const BlockSparseLayout& l) {
  std::vector<py::ssize_t> shape{l.num_q_blocks(), l.num_k_blocks()};
  if (l.heads() > 1) shape.insert(shape.begin(), l.heads());
  py::array_t<bool> out(shape);
  const std::vector<uint8_t> mask = l.block_mask();
  std::copy(mask.begin(), mask.end(), static_cast<bool*>(out.mutable_data()));
  return out;
}

py::array int32_array(const std::vector<int32_t>& v) {
  return py::array_t<int32_t>(static_cast<py::ssize_t>(v.size()), v.data());
}

}  // namespace

void init_attention(py::module_& m) {
  using py::arg;
  py::module_ a = m.def_submodule("attention", "Block-sparse attention: layouts and the op.");
  py::class_<BlockSparseLayout>(a, "BlockSparseLayout",
                                "Which (query-block, key-block) pairs block-sparse attention "
                                "computes; build one from a named pattern, a block mask or CSR.")
      .def_static("dense", &BlockSparseLayout::dense, arg("seq_len"), arg("block_size") = 64,
                  arg("causal") = true)
      .def_static("local", &BlockSparseLayout::local, arg("seq_len"), arg("block_size") = 64,
                  arg("window") = 1, arg("causal") = true)
      .def_static("global_", &BlockSparseLayout::global, arg("seq_len"), arg("block_size") = 64,
                  arg("global_blocks") = 1, arg("causal") = true)
      .def_static("strided", &BlockSparseLayout::strided, arg("seq_len"), arg("block_size") = 64,
                  arg("stride") = 4, arg("causal") = true)
      .def_static("mixed", &BlockSparseLayout::mixed, arg("seq_len"), arg("block_size") = 64,
                  arg("window") = 3, arg("global_blocks") = 1, arg("stride") = 4,
                  arg("causal") = true)
      .def_static("random", &BlockSparseLayout::random, arg("seq_len"), arg("block_size") = 64,
                  arg("blocks_per_row") = 3, arg("seed") = 0, arg("causal") = true,
                  arg("num_heads") = 1)
      .def_static("from_block_mask", &from_block_mask, arg("mask"), arg("block_size"),
                  arg("seq_len"), arg("causal") = true, arg("k_len") = py::none(),
                  "mask: bool (QB, KB) or (heads, QB, KB), QB = ceil(seq_len / block_size), "
                  "KB = ceil(k_len / block_size) with k_len defaulting to seq_len.")
      .def_static(
          "from_csr",
          [](py::handle row_ptr, py::handle col_idx, int64_t block_size, int64_t seq_len,
             bool causal, std::optional<int64_t> k_len, int64_t num_heads) {
            return BlockSparseLayout::from_csr(int_vector(row_ptr, "row_ptr"),
                                               int_vector(col_idx, "col_idx"), block_size, seq_len,
                                               k_len.value_or(seq_len), causal, num_heads);
          },
          arg("row_ptr"), arg("col_idx"), arg("block_size"), arg("seq_len"), arg("causal") = true,
          arg("k_len") = py::none(), arg("num_heads") = 1,
          "row_ptr: num_heads * (QB + 1) absolute offsets into col_idx; col_idx: sorted kept "
          "key blocks of each query block.")
      .def_static("per_head", &BlockSparseLayout::per_head, arg("layouts"),
                  "One layout per attention head from single-head layouts of equal geometry.")
      .def_property_readonly("block_size", self_ref(&BlockSparseLayout::block_size))
      .def_property_readonly("num_blocks", self_ref(&BlockSparseLayout::num_blocks),
                             "Kept blocks, summed over layout heads.")
      .def_property_readonly("seq_len", self_ref(&BlockSparseLayout::q_len))
      .def_property_readonly("q_len", self_ref(&BlockSparseLayout::q_len))
      .def_property_readonly("k_len", self_ref(&BlockSparseLayout::k_len))
      .def_property_readonly("num_q_blocks", self_ref(&BlockSparseLayout::num_q_blocks))
      .def_property_readonly("num_k_blocks", self_ref(&BlockSparseLayout::num_k_blocks))
      .def_property_readonly("num_heads", self_ref(&BlockSparseLayout::heads))
      .def_property_readonly("causal", self_ref(&BlockSparseLayout::causal))
      .def_property_readonly("name", self_ref(&BlockSparseLayout::name))
      .def_property_readonly("row_ptr",
                             [](const BlockSparseLayout& l) { return int32_array(l.row_ptr()); })
      .def_property_readonly("col_idx",
                             [](const BlockSparseLayout& l) { return int32_array(l.col_idx()); })
      .def("density", self_ref(&BlockSparseLayout::density),
           "Kept blocks / blocks of the dense layout of the same causality.")
      .def("to_block_mask", &block_mask, "NumPy bool (QB, KB), or (heads, QB, KB) per head.")
      .def("__repr__", self_ref(&BlockSparseLayout::repr));

  a.def(
      "block_sparse_attention",
      [](const Tensor& q, const Tensor& k, const Tensor& v, const BlockSparseLayout& layout,
         std::optional<double> scale, std::optional<int64_t> q_offset,
         bool return_lse) -> py::object {
        NDArray lse;
        Tensor out = without_gil(
            [&] { return nn::block_sparse_attention(q, k, v, layout, scale, q_offset, &lse); });
        if (!return_lse) return py::cast(out);
        return py::make_tuple(out, Tensor(lse));
      },
      arg("q"), arg("k"), arg("v"), arg("layout"), arg("scale") = py::none(),
      arg("q_offset") = py::none(), arg("return_lse") = false,
      "softmax(scale * q k^T over the layout's kept blocks) @ v for q (B, H, Lq, D), k and v "
      "(B, H, Lk, D); scale defaults to 1/sqrt(D). q_offset: absolute position of q's first "
      "row (default Lk - Lq for causal layouts, else 0). return_lse=True also returns the "
      "(B, H, Lq) logsumexp (no gradient).");
}

}  // namespace needle::python
