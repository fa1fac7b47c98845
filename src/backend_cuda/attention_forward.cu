// Block-sparse attention, forward: a fused FlashAttention-2-style kernel. Each CTA owns 64 query
// rows of one (batch, head), walks the kept key blocks of their layout rows 64 keys at a time
// (K/V tiles double-buffered through cp.async), computes S = QK^T on the tensor cores, keeps the
// softmax online in registers (running max and sum in log2 units, so exp2 needs one FFMA), and
// accumulates O = PV. Only the diagonal / padded / gathered tiles pay for element masking. It
// writes O and the row logsumexp the backward needs; nothing of size L x L exists anywhere.
// The dense layout through this kernel is needle's dense fused attention.
// Also here: the argument checks and math-mode choice shared with attention_backward.cu.
#include <cstdlib>
#include <string>

#include "backend_cuda/attention_common.cuh"
#include "backend_cuda/cuda_backend.h"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/sm90/attention_sm90.h"

namespace needle::cuda {
namespace attn {

void check_attention_args(const char* op, const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                          const BlockLayoutRef& layout) {
  NEEDLE_CHECK(q.ndim == 4 && k.ndim == 4 && v.ndim == 4, ValueError, "cuda ", op,
               ": expected 4-d q, k, v (B, H, L, D), got ", q.ndim, "-d, ", k.ndim, "-d, ",
               v.ndim, "-d");
  NEEDLE_CHECK(q.dtype == k.dtype && q.dtype == v.dtype, TypeError, "cuda ", op,
               ": q, k, v must share a dtype, got ", dtype_name(q.dtype), ", ",
               dtype_name(k.dtype), ", ", dtype_name(v.dtype));
  NEEDLE_CHECK(q.dtype == DType::Float32 || q.dtype == DType::BFloat16, TypeError, "cuda ", op,
               ": expected float32 or bfloat16 inputs, got ", dtype_name(q.dtype));
  const int64_t d = q.shape[3];
  NEEDLE_CHECK(d > 0 && d <= kMaxHeadDim && d % 8 == 0, ValueError, "cuda ", op,
               ": head dim must be a multiple of 8 from 8 to ", kMaxHeadDim, ", got ", d,
               " (the CPU backend takes any head dim)");
  for (int i = 0; i < 4; ++i)
    NEEDLE_CHECK(k.shape[i] == v.shape[i], ValueError, "cuda ", op,
                 ": k and v shapes differ at dim ", i);
  NEEDLE_CHECK(k.shape[0] == q.shape[0] && k.shape[1] == q.shape[1] && k.shape[3] == d,
               ValueError, "cuda ", op, ": k (", k.shape[0], ", ", k.shape[1], ", ", k.shape[2],
               ", ", k.shape[3], ") does not match q (", q.shape[0], ", ", q.shape[1], ", ",
               q.shape[2], ", ", d, ")");
  const int b = layout.block_size;
  NEEDLE_CHECK(b == 16 || b == 32 || (b > 0 && b % kTile == 0), ValueError, "cuda ", op,
               ": block size must be 16, 32 or a multiple of 64, got ", b);
  NEEDLE_CHECK(layout.q_len == q.shape[2] && layout.k_len == k.shape[2], ValueError, "cuda ", op,
               ": layout is for q_len ", layout.q_len, ", k_len ", layout.k_len, " but q has ",
               q.shape[2], " rows and k ", k.shape[2]);
  NEEDLE_CHECK(layout.q_offset >= 0, ValueError, "cuda ", op, ": negative q_offset");
  NEEDLE_CHECK(layout.num_q_blocks == ceil_div(layout.q_offset + layout.q_len, b) &&
                   layout.num_k_blocks == ceil_div(layout.k_len, b),
               ValueError, "cuda ", op, ": layout has ", layout.num_q_blocks, " x ",
               layout.num_k_blocks, " blocks, inconsistent with its lengths");
  NEEDLE_CHECK(layout.layout_heads == 1 || layout.layout_heads == q.shape[1], ValueError, "cuda ",
               op, ": layout has ", layout.layout_heads, " heads, q has ", q.shape[1]);
  NEEDLE_CHECK(layout.q_offset + layout.q_len < (int64_t(1) << 31) &&
                   layout.k_len < (int64_t(1) << 31),
               ValueError, "cuda ", op, ": sequence positions must fit in int32");
}

Operand operand(const char* op, const char* name, const ArrayRef& x, const ArrayRef& like) {
  check_attention_operand("cuda ", op, name, x, like);
  return {x.data, x.strides[0], x.strides[1], static_cast<int>(x.strides[2])};
}

namespace sm90 {
bool enabled() {
  static const bool allowed = [] {
    const char* env = std::getenv("NEEDLE_ATTENTION_WGMMA");
    return !(env && std::string(env) == "0");
  }();
  return allowed && compute_capability() == 90;
}
}  // namespace sm90

MathMode math_mode_for(DType dtype) {
  if (dtype == DType::BFloat16) return MathMode::kBF16;
  return matmul_precision() == MatmulPrecision::kHighest ? MathMode::kF32x3 : MathMode::kTF32;
}

namespace {

// B = batch, H = heads, Lq / Lk = query / key lengths, d = head dim, D = tile width >= d (d = D
// unless Padded).
// One CTA per (64-position query tile, head, batch item), in the q_order work order (cta_tile);
// q (B, H, Lq, d), k, v (B, H, Lk, d), out (B, H, Lq, d), lse (B, H, Lq) float32.
// Q tile plus two stages of [K tile, V tile].
template <MathMode M, int D>
constexpr size_t fwd_smem_bytes() {
  return 5 * tile_smem_bytes<M, D>();
}

// The minimum of 1 CTA per SM lifts ptxas's own register cap: with the thread count alone it held
// the float32 head-dim-128 forward to 168 registers and spilled 108 bytes (bf16: no change).
template <MathMode M, int D, bool Padded>
__global__ void __launch_bounds__(32 * num_warps<M, D>(), 1) forward_kernel(FwdArgs a) {
  using E = elem_t<M>;
  constexpr int MT = m_tiles<M, D>(), NT = 32 * num_warps<M, D>(), LD = smem_stride<M, D>();
  extern __shared__ __align__(16) unsigned char smem[];
  E* sq = reinterpret_cast<E*>(smem);
  E* skv = sq + kTile * LD;  // two stages of [K tile, V tile]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16 * MT;  // the warp's first row within the tile
  const CtaTile ct = cta_tile(a.layout.q_order, a.tiles, a.first_tile, a.heads,
                             a.layout.layout_heads);
  const int tile = ct.tile, h = ct.h;
  const int64_t q0 = int64_t(tile) * kTile;
  const int d = row_length<D, Padded>(a.d);
  const Rows<const E> q = rows_of<const E>(a.q, ct.b, h);
  const Rows<const E> k = rows_of<const E>(a.k, ct.b, h);
  const Rows<const E> v = rows_of<const E>(a.v, ct.b, h);
  const BlockLayoutRef& L = a.layout;

  load_tile<E, D, NT>(sq, LD, q, d, [&](int j) -> int64_t {
    const int64_t r = q0 + j - a.q_offset;
    return r >= 0 && r < a.lq ? r : -1;
  });
  cp_async_commit();

  TileCursor cursor;
  open_cursor(cursor, L, h, q0, false);
  const int gs = cursor.group_size();
  auto load_kv = [&](const SlotTile& st, int stage) {
    load_slot_pair<E, D, NT>(skv + stage * 2 * kTile * LD, LD, k, v, d, st, gs, a.lk);
  };

  float o[MT][D / 8][4];
  zero(o);
  float mrow[MT][2], lrow[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mrow[m][i] = -INFINITY;
      lrow[m][i] = 0.f;
    }
  uint32_t qa[MT][M == MathMode::kBF16 ? D / 16 : 1][4];
  bool q_loaded = false;

  for_each_tile(cursor, load_kv, [] {}, [&](const SlotTile& cur, int stage) {
    const E* sk = skv + stage * 2 * kTile * LD;
    const E* sv = sk + kTile * LD;

    float s[MT][kTile / 8][4];
    zero(s);
    if constexpr (M == MathMode::kBF16) {
      if (!q_loaded) load_a_regs<D, MT>(qa, sq + row0 * LD, LD, lane);
      q_loaded = true;
      gemm_xyt_regs<D, MT, kTile>(s, qa, sk, LD, lane);
    } else {
      gemm_xyt<M, D, MT, kTile>(s, sq + row0 * LD, sk, LD, lane);
    }
    // Scaled before masking, so any scale (0 or negative included) is exact.
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < kTile / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[m][n][e] *= a.scale_log2;
    if (tile_needs_mask(cur, gs, q0, a.lk, L.causal, true))
      apply_mask<MT, kTile>(s, cur, gs, q0, row0, 0, a.lk, L.causal, true, -INFINITY, lane);
    online_softmax<MT, kTile, D>(s, o, mrow, lrow, 1.f);
    gemm_py<M, D, MT, kTile>(o, s, sv, LD, lane);
  });

  store_output<E, D, MT>(a, d, ct, q0, row0, o, mrow, lrow, lane);
}

template <MathMode M, int D, bool Padded>
void launch_forward(const FwdArgs& a, int tiles, int heads, int batch) {
  constexpr size_t smem = fwd_smem_bytes<M, D>();
  // Above 48 KB a kernel must opt in to more dynamic shared memory; once per instantiation.
  static const bool configured = [] {
    NEEDLE_CUDA_CHECK(cudaFuncSetAttribute(forward_kernel<M, D, Padded>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
    return true;
  }();
  (void)configured;
  forward_kernel<M, D, Padded><<<tile_grid(tiles, heads, batch), 32 * num_warps<M, D>(), smem,
                                 stream()>>>(a);
  NEEDLE_CUDA_LAUNCH_CHECK();
}

template <MathMode M>
void dispatch_forward(int64_t d, const FwdArgs& a, int tiles, int heads, int batch) {
  dispatch_head_dim(d, [&](auto D, auto padded) {
    launch_forward<M, decltype(D)::value, decltype(padded)::value>(a, tiles, heads, batch);
  });
}

}  // namespace
}  // namespace attn

void block_sparse_attention_forward(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                                    const BlockLayoutRef& layout, double scale,
                                    const ArrayRef& out, const ArrayRef& lse) {
  using namespace attn;
  const char* op = "block_sparse_attention_forward";
  check_attention_args(op, q, k, v, layout);
  NEEDLE_CHECK(lse.dtype == DType::Float32 && lse.is_compact() &&
                   lse.numel() == q.shape[0] * q.shape[1] * q.shape[2],
               ValueError, "cuda block_sparse_attention_forward: lse must be compact float32 (",
               q.shape[0], ", ", q.shape[1], ", ", q.shape[2], ")");
  FwdArgs a{};
  a.q = operand(op, "q", q, q);
  a.k = operand(op, "k", k, k);
  a.v = operand(op, "v", v, k);
  a.out = operand(op, "out", out, q);
  const int64_t batch = q.shape[0], heads = q.shape[1], lq = q.shape[2], d = q.shape[3];
  if (batch == 0 || heads == 0 || lq == 0) return;
  a.lse = static_cast<float*>(lse.data);
  a.layout = layout;
  a.heads = static_cast<int>(heads);
  a.d = static_cast<int>(d);
  a.lq = lq;
  a.lk = k.shape[2];
  a.q_offset = layout.q_offset;
  a.first_tile = static_cast<int>(layout.q_offset / kTile);
  a.scale_log2 = static_cast<float>(scale) * kLog2e;
  const int tiles =
      static_cast<int>(ceil_div(layout.q_offset + lq, kTile) - layout.q_offset / kTile);
  a.tiles = tiles;
  switch (math_mode_for(q.dtype)) {
    case MathMode::kBF16:
      // The Hopper forward scales inside its softmax, which needs scale > 0.
      if (sm90::enabled() && scale > 0) sm90::forward(a, d, tiles, int(heads), int(batch));
      else dispatch_forward<MathMode::kBF16>(d, a, tiles, int(heads), int(batch));
      break;
    case MathMode::kTF32:
      dispatch_forward<MathMode::kTF32>(d, a, tiles, int(heads), int(batch));
      break;
    case MathMode::kF32x3:
      dispatch_forward<MathMode::kF32x3>(d, a, tiles, int(heads), int(batch));
      break;
  }
}

}  // namespace needle::cuda
