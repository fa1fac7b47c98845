// Block-sparse attention on the CPU, forward and backward: the readable reference for the CUDA
// kernels and, with the dense layout, the CPU's fused dense attention. FlashAttention-style: a
// task owns one query block and walks its kept key blocks with a running max and sum (online
// softmax), so memory stays O(b x b) per thread and no Lq x Lk buffer exists. The backward
// recomputes the probabilities from the saved logsumexp; dQ runs over the row CSR and dK/dV over
// the transposed CSR, so every task writes only its own rows (no atomics, no races).
//
// Padding needs no masking here: tiles are clipped to q_len / k_len. Flagged blocks of causal
// layouts get the element mask (key j visible to query position i iff j <= i).

// GCC 12 reports false "may be used uninitialized" warnings inside Eigen's GEMM kernels.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

template <typename A>
using Tile = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename A>
using ConstTile = Eigen::Map<const Tile<A>, 0, Eigen::OuterStride<>>;
template <typename A>
using Column = Eigen::Array<A, Eigen::Dynamic, 1>;

// B = batch, H = heads, Lq / Lk = query / key lengths, D = head dim.
struct Dims {
  int64_t B = 0, H = 0, Lq = 0, Lk = 0, D = 0;
};

// Row `row` of head bh (batch item * H + head) of a (B, H, L, D) operand, a view whose rows are
// contiguous (attention_operand_ok), and the elements from one row to the next.
template <typename T>
T* row_ptr(const ArrayRef& a, int64_t H, int64_t bh, int64_t row) {
  return static_cast<T*>(a.data) + (bh / H) * a.strides[0] + (bh % H) * a.strides[1] +
         row * a.strides[2];
}
int64_t row_pitch(const ArrayRef& a) { return a.shape[2] == 1 ? a.shape[3] : a.strides[2]; }

// Rows [row, row + n) of head bh of a (B, H, L, D) operand as a compute-type matrix: mapped in
// place when T is the compute type, converted into `buf` (bfloat16) otherwise.
template <typename T, typename A>
ConstTile<A> rows_of(const ArrayRef& a, int64_t H, int64_t D, int64_t bh, int64_t row, int64_t n,
                     Tile<A>& buf) {
  const T* p = row_ptr<const T>(a, H, bh, row);
  const int64_t pitch = row_pitch(a);
  if constexpr (std::is_same_v<T, A>) {
    return ConstTile<A>(p, n, D, Eigen::OuterStride<>(pitch));
  } else {
    buf.resize(n, D);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < D; ++c) buf(i, c) = convert<A>(p[i * pitch + c]);
    return ConstTile<A>(buf.data(), n, D, Eigen::OuterStride<>(D));
  }
}

template <typename T, typename A>
void store_rows(const ArrayRef& a, int64_t H, int64_t bh, int64_t row, const Tile<A>& tile,
                A factor) {
  T* p = row_ptr<T>(a, H, bh, row);
  const int64_t pitch = row_pitch(a);
  for (int64_t i = 0; i < tile.rows(); ++i)
    for (int64_t c = 0; c < tile.cols(); ++c) p[i * pitch + c] = convert<T>(tile(i, c) * factor);
}

// Logsumexp is float32, or float64 for float64 inputs (stats_dtype).
double load_lse(const ArrayRef& lse, int64_t i) {
  return lse.dtype == DType::Float64 ? static_cast<const double*>(lse.data)[i]
                                     : static_cast<const float*>(lse.data)[i];
}
void store_lse(const ArrayRef& lse, int64_t i, double v) {
  if (lse.dtype == DType::Float64)
    static_cast<double*>(lse.data)[i] = v;
  else
    static_cast<float*>(lse.data)[i] = static_cast<float>(v);
}

// S (nr x nc) holds scores of query positions pos0.. against keys c0..: hide keys j > i.
template <typename A>
void mask_causal(Tile<A>& S, int64_t pos0, int64_t c0) {
  for (int64_t i = 0; i < S.rows(); ++i)
    for (int64_t j = std::max<int64_t>(0, pos0 + i - c0 + 1); j < S.cols(); ++j)
      S(i, j) = -std::numeric_limits<A>::infinity();
}

// P = exp(S - lse) row by row, in place; a row with lse = -inf saw no key and stays 0.
template <typename A>
void probabilities(Tile<A>& S, const Column<A>& lse) {
  for (int64_t i = 0; i < S.rows(); ++i) {
    if (std::isinf(lse[i]))
      S.row(i).setZero();
    else
      S.row(i) = (S.row(i).array() - lse[i]).exp();
  }
}

void check_csr(const int32_t* ptr, const int32_t* idx, int64_t heads, int64_t rows, int64_t cols,
               const char* what) {
  int64_t prev = 0;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t r = 0; r <= rows; ++r) {
      const int64_t p = ptr[h * (rows + 1) + r];
      NEEDLE_CHECK(p >= prev, ValueError, what, ": expected non-decreasing absolute offsets, got ",
                   p, " after ", prev, " at head ", h, " row ", r);
      prev = p;
    }
  for (int64_t e = 0; e < prev; ++e)
    NEEDLE_CHECK(idx[e] >= 0 && idx[e] < cols, ValueError, what, ": expected block indices in [0, ",
                 cols, "), got ", idx[e], " at entry ", e);
}

Dims check_args(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v, const BlockLayoutRef& L,
                const ArrayRef& lse, const char* what) {
  NEEDLE_CHECK(q.ndim == 4 && k.ndim == 4 && v.ndim == 4, ValueError, what,
               ": expected 4-D (B, H, L, D) q, k, v, got ", q.ndim, "-D, ", k.ndim, "-D, ", v.ndim,
               "-D");
  Dims d{q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3]};
  for (const ArrayRef* a : {&k, &v})
    NEEDLE_CHECK(
        a->shape[0] == d.B && a->shape[1] == d.H && a->shape[2] == d.Lk && a->shape[3] == d.D,
        ValueError, what, ": expected k and v of shape (", d.B, ", ", d.H, ", ", d.Lk, ", ", d.D,
        "), got (", a->shape[0], ", ", a->shape[1], ", ", a->shape[2], ", ", a->shape[3], ")");
  NEEDLE_CHECK(k.dtype == q.dtype && v.dtype == q.dtype, TypeError, what,
               ": expected q, k, v of one dtype, got ", dtype_name(q.dtype), ", ",
               dtype_name(k.dtype), ", ", dtype_name(v.dtype));
  check_attention_operand("", what, "q", q, q);
  check_attention_operand("", what, "k", k, k);
  check_attention_operand("", what, "v", v, k);
  NEEDLE_CHECK(lse.dtype == stats_dtype(q.dtype) && lse.numel() == d.B * d.H * d.Lq, ValueError,
               what, ": expected lse of ", d.B * d.H * d.Lq, " ", dtype_name(stats_dtype(q.dtype)),
               " values, got ", lse.numel(), " ", dtype_name(lse.dtype));
  const int64_t b = L.block_size;
  NEEDLE_CHECK(b == 16 || b == 32 || b == 64 || b == 128, ValueError, what,
               ": expected block_size in {16, 32, 64, 128}, got ", b);
  NEEDLE_CHECK(L.q_len == d.Lq && L.k_len == d.Lk && L.q_offset >= 0 &&
                   L.num_q_blocks == ceil_div(L.q_offset + d.Lq, b) &&
                   L.num_k_blocks == ceil_div(d.Lk, b),
               ValueError, what, ": the layout was built for q_len ", L.q_len, ", k_len ", L.k_len,
               ", q_offset ", L.q_offset, " (", L.num_q_blocks, " x ", L.num_k_blocks,
               " blocks), but q has ", d.Lq, " and k has ", d.Lk, " positions");
  NEEDLE_CHECK(L.layout_heads == 1 || L.layout_heads == d.H, ValueError, what, ": expected 1 or ",
               d.H, " layout heads, got ", L.layout_heads);
  check_csr(L.row_ptr, L.col_idx, L.layout_heads, L.num_q_blocks, L.num_k_blocks, what);
  return d;
}

// One task per (batch, head, query block): Q tile against each kept K/V tile, online softmax.
template <typename T, typename A>
void forward_impl(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v, const BlockLayoutRef& L,
                  A scale, const Dims& d, const ArrayRef& out, const ArrayRef& lse) {
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  const int64_t b = L.block_size, q_end = L.q_offset + d.Lq, first_qb = L.q_offset / b;
  const int64_t per_head = L.num_q_blocks - first_qb, tasks = d.B * d.H * per_head;
#pragma omp parallel
  {
    Tile<A> qbuf, kbuf, vbuf, Qs, S, O;
    Column<A> m, l;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t bh = t / per_head, qb = first_qb + t % per_head;
      const int64_t lh = L.layout_heads == 1 ? 0 : bh % d.H;
      // Absolute query positions of this tile; row pos - q_offset of q.
      const int64_t pos0 = std::max(qb * b, L.q_offset), pos1 = std::min(qb * b + b, q_end);
      const int64_t nr = pos1 - pos0, r0 = pos0 - L.q_offset;
      Qs.noalias() = scale * rows_of<T, A>(q, d.H, d.D, bh, r0, nr, qbuf);
      O.setZero(nr, d.D);
      m.setConstant(nr, kNegInf);
      l.setZero(nr);
      const int32_t* rp = L.row_ptr + lh * (L.num_q_blocks + 1);
      for (int32_t e = rp[qb]; e < rp[qb + 1]; ++e) {
        const int64_t c0 = int64_t(L.col_idx[e]) * b, nc = std::min(b, d.Lk - c0);
        ConstTile<A> K = rows_of<T, A>(k, d.H, d.D, bh, c0, nc, kbuf);
        ConstTile<A> V = rows_of<T, A>(v, d.H, d.D, bh, c0, nc, vbuf);
        S.noalias() = Qs * K.transpose();
        if (L.causal && L.block_flags[e]) mask_causal(S, pos0, c0);
        for (int64_t i = 0; i < nr; ++i) {
          const A m_new = std::max(m[i], S.row(i).maxCoeff());
          if (m_new == kNegInf) {  // nothing visible to this row yet
            S.row(i).setZero();
            continue;
          }
          const A rescale = std::exp(m[i] - m_new);  // 0 while m[i] is still -inf
          S.row(i) = (S.row(i).array() - m_new).exp();
          l[i] = l[i] * rescale + S.row(i).sum();
          O.row(i) *= rescale;
          m[i] = m_new;
        }
        O.noalias() += S * V;
      }
      T* o = row_ptr<T>(out, d.H, bh, r0);
      const int64_t pitch = row_pitch(out);
      for (int64_t i = 0; i < nr; ++i) {
        const bool empty = l[i] == A(0);
        const A inv = empty ? A(0) : A(1) / l[i];
        for (int64_t c = 0; c < d.D; ++c) o[i * pitch + c] = convert<T>(O(i, c) * inv);
        store_lse(lse, bh * d.Lq + r0 + i,
                  empty ? -std::numeric_limits<double>::infinity()
                        : static_cast<double>(m[i] + std::log(l[i])));
      }
    }
  }
}

// Backward. Shared per-row inputs: lse (saved) and delta_i = rowsum(dO_i * O_i), since
// dS = P * (dP - delta) with dP = dO V^T.
template <typename T, typename A>
void backward_impl(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v, const ArrayRef& out,
                   const ArrayRef& lse, const ArrayRef& dout, const BlockLayoutRef& L, A scale,
                   const Dims& d, const ArrayRef& dq, const ArrayRef& dk, const ArrayRef& dv) {
  const int64_t b = L.block_size, rows = d.B * d.H * d.Lq;
  std::vector<A> delta(static_cast<size_t>(rows));
  std::vector<A> lse_a(static_cast<size_t>(rows));
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(d.D, 1)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const T* o = row_ptr<const T>(out, d.H, r / d.Lq, r % d.Lq);
                   const T* g = row_ptr<const T>(dout, d.H, r / d.Lq, r % d.Lq);
                   A acc = 0;
                   for (int64_t c = 0; c < d.D; ++c) acc += convert<A>(o[c]) * convert<A>(g[c]);
                   delta[static_cast<size_t>(r)] = acc;
                   lse_a[static_cast<size_t>(r)] = static_cast<A>(load_lse(lse, r));
                 }
               });
  const int64_t QB = L.num_q_blocks, KB = L.num_k_blocks;
  auto row_stats = [&](int64_t bh, int64_t r0, int64_t nr, Column<A>& ls, Column<A>& dl) {
    ls = Eigen::Map<const Column<A>>(lse_a.data() + bh * d.Lq + r0, nr);
    dl = Eigen::Map<const Column<A>>(delta.data() + bh * d.Lq + r0, nr);
  };

  // dQ: one task per (batch, head, query block) over the row CSR.
#pragma omp parallel
  {
    Tile<A> qbuf, gbuf, kbuf, vbuf, Qs, S, dP, acc;
    Column<A> ls, dl;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < d.B * d.H * QB; ++t) {
      const int64_t bh = t / QB, qb = t % QB, lh = L.layout_heads == 1 ? 0 : bh % d.H;
      const int64_t r0 = qb * b, nr = std::min(b, d.Lq - r0);
      Qs.noalias() = scale * rows_of<T, A>(q, d.H, d.D, bh, r0, nr, qbuf);
      ConstTile<A> dO = rows_of<T, A>(dout, d.H, d.D, bh, r0, nr, gbuf);
      row_stats(bh, r0, nr, ls, dl);
      acc.setZero(nr, d.D);
      const int32_t* rp = L.row_ptr + lh * (QB + 1);
      for (int32_t e = rp[qb]; e < rp[qb + 1]; ++e) {
        const int64_t c0 = int64_t(L.col_idx[e]) * b, nc = std::min(b, d.Lk - c0);
        ConstTile<A> K = rows_of<T, A>(k, d.H, d.D, bh, c0, nc, kbuf);
        ConstTile<A> V = rows_of<T, A>(v, d.H, d.D, bh, c0, nc, vbuf);
        S.noalias() = Qs * K.transpose();
        if (L.causal && L.block_flags[e]) mask_causal(S, r0, c0);
        probabilities(S, ls);
        dP.noalias() = dO * V.transpose();
        dP = (S.array() * (dP.array().colwise() - dl)).matrix();  // dS
        acc.noalias() += dP * K;
      }
      store_rows<T, A>(dq, d.H, bh, r0, acc, scale);
    }
  }

  // dK, dV: one task per (batch, head, key block) over the transposed CSR.
#pragma omp parallel
  {
    Tile<A> qbuf, gbuf, kbuf, vbuf, Qs, S, dP, dK, dV;
    Column<A> ls, dl;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < d.B * d.H * KB; ++t) {
      const int64_t bh = t / KB, kb = t % KB, lh = L.layout_heads == 1 ? 0 : bh % d.H;
      const int64_t c0 = kb * b, nc = std::min(b, d.Lk - c0);
      ConstTile<A> K = rows_of<T, A>(k, d.H, d.D, bh, c0, nc, kbuf);
      ConstTile<A> V = rows_of<T, A>(v, d.H, d.D, bh, c0, nc, vbuf);
      dK.setZero(nc, d.D);
      dV.setZero(nc, d.D);
      const int32_t* cp = L.col_ptr + lh * (KB + 1);
      for (int32_t e = cp[kb]; e < cp[kb + 1]; ++e) {
        const int64_t r0 = int64_t(L.row_idx[e]) * b, nr = std::min(b, d.Lq - r0);
        Qs.noalias() = scale * rows_of<T, A>(q, d.H, d.D, bh, r0, nr, qbuf);
        ConstTile<A> dO = rows_of<T, A>(dout, d.H, d.D, bh, r0, nr, gbuf);
        row_stats(bh, r0, nr, ls, dl);
        S.noalias() = Qs * K.transpose();
        if (L.causal && L.t_block_flags[e]) mask_causal(S, r0, c0);
        probabilities(S, ls);
        dV.noalias() += S.transpose() * dO;
        dP.noalias() = dO * V.transpose();
        dP = (S.array() * (dP.array().colwise() - dl)).matrix();  // dS
        dK.noalias() += dP.transpose() * Qs;                      // Qs carries the scale of dK
      }
      store_rows<T, A>(dk, d.H, bh, c0, dK, A(1));
      store_rows<T, A>(dv, d.H, bh, c0, dV, A(1));
    }
  }
}

}  // namespace

// q (B, H, Lq, D), k/v (B, H, Lk, D) -> out (B, H, Lq, D), lse (B, H, Lq); b = block size.
void block_sparse_attention_forward(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                                    const BlockLayoutRef& layout, double scale, const ArrayRef& out,
                                    const ArrayRef& lse) {
  const char* what = "block_sparse_attention_forward";
  const Dims d = check_args(q, k, v, layout, lse, what);
  check_attention_operand("", what, "out", out, q);
  if (d.B * d.H * d.Lq == 0) return;
  NEEDLE_DISPATCH_FLOATING(q.dtype, what, [&] {
    using A = acc_t<scalar_t>;
    forward_impl<scalar_t, A>(q, k, v, layout, static_cast<A>(scale), d, out, lse);
  });
}

// Gradients of the forward above (q_offset 0): dq (B, H, Lq, D), dk/dv (B, H, Lk, D).
void block_sparse_attention_backward(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                                     const ArrayRef& out, const ArrayRef& lse, const ArrayRef& dout,
                                     const BlockLayoutRef& layout, double scale, const ArrayRef& dq,
                                     const ArrayRef& dk, const ArrayRef& dv) {
  const char* what = "block_sparse_attention_backward";
  const Dims d = check_args(q, k, v, layout, lse, what);
  NEEDLE_CHECK(layout.q_offset == 0, ValueError, what,
               ": expected q_offset 0 (the backward covers whole sequences), got ",
               layout.q_offset);
  check_csr(layout.col_ptr, layout.row_idx, layout.layout_heads, layout.num_k_blocks,
            layout.num_q_blocks, what);
  check_attention_operand("", what, "out", out, q);
  check_attention_operand("", what, "dout", dout, q);
  check_attention_operand("", what, "dq", dq, q);
  check_attention_operand("", what, "dk", dk, k);
  check_attention_operand("", what, "dv", dv, k);
  if (d.B * d.H == 0) return;
  NEEDLE_DISPATCH_FLOATING(q.dtype, what, [&] {
    using A = acc_t<scalar_t>;
    backward_impl<scalar_t, A>(q, k, v, out, lse, dout, layout, static_cast<A>(scale), d, dq, dk,
                               dv);
  });
}

}  // namespace needle::cpu_kernels
