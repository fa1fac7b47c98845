// block_sparse_attention: the autograd op over the fused kernels (see the header).
#include "nn/block_sparse_attention.h"

#include <cmath>
#include <string>

#include "autograd/autocast.h"
#include "ndarray/error.h"

namespace needle::nn {
namespace {

// The gradients are kernel outputs, not a graph of differentiable ops.
struct BlockSparseAttentionBackwardFn : Op {
  const char* name() const override { return "block_sparse_attention_backward"; }
  std::vector<Tensor> gradient(const Tensor&, const Tensor&) override {
    throw RuntimeError(
        "block_sparse_attention: double backward not supported (its gradient is a fused kernel)");
  }
};

// x as the kernels may read it: x itself where attention_operand_ok (views of a fused projection
// included), else a compact copy.
NDArray as_operand(const NDArray& x) { return attention_operand_ok(x.ref()) ? x : x.clone(); }

struct BlockSparseAttentionFn : Op {
  BlockSparseLayout layout;
  NDArray q, k, v, lse;  // the inputs as the kernel read them, and the saved logsumexp
  double scale;
  int64_t q_offset;
  BlockSparseAttentionFn(BlockSparseLayout l, NDArray q_, NDArray k_, NDArray v_, NDArray lse_,
                         double s, int64_t off)
      : layout(std::move(l)),
        q(std::move(q_)),
        k(std::move(k_)),
        v(std::move(v_)),
        lse(std::move(lse_)),
        scale(s),
        q_offset(off) {}
  const char* name() const override { return "block_sparse_attention"; }

  std::vector<Tensor> gradient(const Tensor& g, const Tensor& out) override {
    NEEDLE_CHECK(q_offset == 0, RuntimeError,
                 "block_sparse_attention: gradients need q_offset "
                 "0 (whole sequences), got q_offset ",
                 q_offset, "; run decoding steps under no_grad");
    const Backend& be = q.backend();
    NEEDLE_CHECK(be.block_sparse_attention_backward, RuntimeError, "the ", be.name,
                 " backend has no fused block_sparse_attention backward kernel");
    const BlockLayoutRef ref = layout.ref(q.device(), q.size(2), k.size(2), 0);
    NDArray dout = as_operand(g.data());  // g has the output's dtype, q's
    NDArray o = as_operand(out.data());
    NDArray dq = NDArray::empty(q.shape(), q.dtype(), q.device());
    NDArray dk = NDArray::empty(k.shape(), k.dtype(), k.device());
    NDArray dv = NDArray::empty(v.shape(), v.dtype(), v.device());
    be.block_sparse_attention_backward(q.ref(), k.ref(), v.ref(), o.ref(), lse.ref(), dout.ref(),
                                       ref, scale, dq.ref(), dk.ref(), dv.ref());
    std::vector<Tensor> grads;
    for (size_t i = 0; i < 3; ++i) {
      const NDArray& d = i == 0 ? dq : i == 1 ? dk : dv;
      grads.push_back(inputs[i].requires_grad()
                          ? make_result(d, std::make_shared<BlockSparseAttentionBackwardFn>(), {g})
                          : Tensor());
    }
    return grads;
  }
};

}  // namespace

Tensor block_sparse_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                              const BlockSparseLayout& layout, std::optional<double> scale,
                              std::optional<int64_t> q_offset, NDArray* lse_out) {
  const Tensor q = autocast_lower(q_in), k = autocast_lower(k_in), v = autocast_lower(v_in);
  const char* what = "block_sparse_attention";
  NEEDLE_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, ValueError, what,
               ": expected 4-D (B, H, L, D) q, k, v, got shapes ", shape_str(q.shape()), ", ",
               shape_str(k.shape()), ", ", shape_str(v.shape()));
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2), D = q.size(3);
  const Shape kv_shape{B, H, Lk, D};
  NEEDLE_CHECK(k.shape() == kv_shape && v.shape() == kv_shape, ValueError, what,
               ": expected k and v of shape ", shape_str(kv_shape), " to match q ",
               shape_str(q.shape()), ", got ", shape_str(k.shape()), " and ", shape_str(v.shape()));
  NEEDLE_CHECK(is_floating(q.dtype()) && k.dtype() == q.dtype() && v.dtype() == q.dtype(),
               TypeError, what, ": expected q, k, v of one floating dtype, got ",
               dtype_name(q.dtype()), ", ", dtype_name(k.dtype()), ", ", dtype_name(v.dtype()));
  NEEDLE_CHECK(k.device() == q.device() && v.device() == q.device(), RuntimeError, what,
               ": expected q, k, v on one device, got ", q.device().str(), ", ", k.device().str(),
               ", ", v.device().str());
  NEEDLE_CHECK(layout.heads() == 1 || layout.heads() == H, ValueError, what,
               ": expected a layout with 1 or ", H, " heads (q has ", H, "), got ", layout.heads());
  NEEDLE_CHECK(D > 0, ValueError, what, ": expected a positive head dim, got ", D);
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  const int64_t offset = q_offset.value_or(layout.causal() && Lk > Lq ? Lk - Lq : 0);
  const Backend& be = q.data().backend();
  NEEDLE_CHECK(be.block_sparse_attention_forward, RuntimeError, "the ", be.name,
               " backend has no fused block_sparse_attention kernel");
  const BlockLayoutRef ref = layout.ref(q.device(), Lq, Lk, offset);

  NDArray qc = as_operand(q.data()), kc = as_operand(k.data()), vc = as_operand(v.data());
  // Written in (B, Lq, H, D) memory and returned as its (B, H, Lq, D) view, as FlashAttention
  // does: merging the heads afterwards, out.permute(0, 2, 1, 3).reshape(B, Lq, H * D), is free.
  NDArray out = NDArray::empty({B, Lq, H, D}, q.dtype(), q.device()).permute({0, 2, 1, 3});
  NDArray lse = NDArray::empty({B, H, Lq}, stats_dtype(q.dtype()), q.device());
  if (B * H * Lq > 0)
    be.block_sparse_attention_forward(qc.ref(), kc.ref(), vc.ref(), ref, s, out.ref(), lse.ref());
  if (lse_out) *lse_out = lse;
  return make_result(
      out, std::make_shared<BlockSparseAttentionFn>(layout, qc, kc, vc, lse, s, offset), {q, k, v});
}

}  // namespace needle::nn
