// Block-sparse attention, backward (FlashAttention-2 style, no atomics), three launches:
//   1. delta = rowsum(dO * O), one float per query row (scratch from the caching allocator);
//   2. dK, dV: a CTA per 64 keys walks the query blocks that read them (the transposed CSR),
//      recomputes P^T = exp(scale * K Q^T - lse) and accumulates dV += P^T dO and
//      dK += dS^T Q with dS = P * (dO V^T - delta), all in registers;
//   3. dQ: a CTA per 64 queries walks its kept key blocks (the row CSR), recomputes P and dS the
//      same way and accumulates dQ += dS K.
// Each output element is owned by one CTA, so the sums need no atomics and are deterministic.
// Tiles are 64 x 64 as in the forward; the inner products run on 32-wide halves of the secondary
// tile so the four fp32 accumulator sets (dK, dV, S, dP) fit in registers.
#include "backend_cuda/attention_common.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/sm90/attention_sm90.h"

namespace needle::cuda {
namespace attn {
namespace {

constexpr int kHalf = kTile / 2;

__device__ __forceinline__ float load_float(const uint16_t* p, int64_t i) {
  return __uint_as_float(uint32_t(p[i]) << 16);
}
__device__ __forceinline__ float load_float(const float* p, int64_t i) { return p[i]; }

// The R = B * H * Lq rows (b, h, l) of out and dout, rows of d elements (d = D unless Padded):
// delta[r] = sum_j dO[r, j] * O[r, j] with r = (b * H + h) * Lq + l; one warp per row.
template <typename E, int D, bool Padded>
__global__ void delta_kernel(Operand out, Operand dout, float* __restrict__ delta, int64_t rows,
                             int64_t lq, int heads, int d_arg) {
  const int d = row_length<D, Padded>(d_arg);
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    const int64_t bh = r / lq, l = r - bh * lq, b = bh / heads;
    const int h = static_cast<int>(bh - b * heads);
    const E* o = rows_of<const E>(out, b, h).at(l);
    const E* g = rows_of<const E>(dout, b, h).at(l);
    float acc = 0.f;
#pragma unroll
    for (int j = lane; j < d; j += 32) acc += load_float(o, j) * load_float(g, j);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) delta[r] = acc;
  }
}

// dK/dV: K and V tiles, two stages of [Q tile, dO tile] and of [lse, delta]; dQ: Q and dO tiles,
// two stages of [K tile, V tile].
template <MathMode M, int D>
constexpr size_t dkdv_smem_bytes() {
  return 6 * tile_smem_bytes<M, D>() + 4 * kTile * sizeof(float);
}
template <MathMode M, int D>
constexpr size_t dq_smem_bytes() {
  return 6 * tile_smem_bytes<M, D>();
}

// B = batch, H = heads, Lq / Lk = query / key lengths, d = head dim, D = tile width >= d (d = D
// unless Padded).
// One CTA per (64-key tile, head, batch item), in the k_order work order (cta_tile).
// q, dout (B, H, Lq, d); k, v, dk, dv (B, H, Lk, d); lse, delta (B, H, Lq) float32.
template <MathMode M, int D, bool Padded>
__global__ void __launch_bounds__(32 * num_warps<M, D>()) dkdv_kernel(BwdArgs a) {
  using E = elem_t<M>;
  constexpr int MT = m_tiles<M, D>(), NT = 32 * num_warps<M, D>();
  constexpr int LD = smem_stride<M, D>();
  extern __shared__ __align__(16) unsigned char smem[];
  E* sk = reinterpret_cast<E*>(smem);
  E* sv = sk + kTile * LD;
  E* sqdo = sv + kTile * LD;  // two stages of [Q tile, dO tile]
  float* sstat = reinterpret_cast<float*>(sqdo + 4 * kTile * LD);  // two stages of [lse, delta]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16 * MT;
  const CtaTile ct = cta_tile(a.layout.k_order, a.k_tiles, 0, a.heads, a.layout.layout_heads);
  const int64_t k0 = int64_t(ct.tile) * kTile;
  const int h = ct.h;
  const int64_t bh = ct.bh;
  const int d = row_length<D, Padded>(a.d);
  const Rows<const E> q = rows_of<const E>(a.q, ct.b, h);
  const Rows<const E> dout = rows_of<const E>(a.dout, ct.b, h);
  const Rows<const E> k = rows_of<const E>(a.k, ct.b, h);
  const Rows<const E> v = rows_of<const E>(a.v, ct.b, h);
  const float* lse = a.lse + bh * a.lq;
  const float* delta = a.delta + bh * a.lq;
  const BlockLayoutRef& L = a.layout;

  auto key_pos = [&](int j) -> int64_t { return k0 + j < a.lk ? k0 + j : -1; };
  load_tile<E, D, NT>(sk, LD, k, d, key_pos);
  load_tile<E, D, NT>(sv, LD, v, d, key_pos);
  cp_async_commit();

  TileCursor cursor;
  open_cursor(cursor, L, h, k0, true);
  const int gs = cursor.group_size();
  auto load_q = [&](const SlotTile& st, int stage) {
    load_slot_pair<E, D, NT>(sqdo + stage * 2 * kTile * LD, LD, q, dout, d, st, gs, a.lq);
    load_slot_stats(sstat + stage * 2 * kTile, st, gs, lse, delta, a.lq, NT);
  };

  float dk[MT][D / 8][4], dv[MT][D / 8][4];
  zero(dk);
  zero(dv);
  for_each_tile(cursor, load_q, [] {}, [&](const SlotTile& cur, int stage) {
    const E* sq = sqdo + stage * 2 * kTile * LD;
    const E* sdo = sq + kTile * LD;
    const float* st_lse = sstat + stage * 2 * kTile;
    const bool need_mask = tile_needs_mask(cur, gs, k0, a.lq, L.causal, false);
#pragma unroll 1
    for (int half = 0; half < 2; ++half) {
      const int c0 = half * kHalf;
      // S^T (keys x queries) -> P^T.
      float p[MT][kHalf / 8][4];
      zero(p);
      gemm_xyt<M, D, MT, kHalf>(p, sk + row0 * LD, sq + c0 * LD, LD, lane);
      probs_by_col<MT, kHalf>(p, st_lse, c0, a.scale_log2, lane);
      // Masked after the exponential (to exactly 0), so any scale, 0 included, is safe.
      if (need_mask)
        apply_mask<MT, kHalf>(p, cur, gs, k0, row0, c0, a.lq, L.causal, false, 0.f, lane);
      gemm_py<M, D, MT, kHalf>(dv, p, sdo + c0 * LD, LD, lane);
      // dP^T = V dO^T, then dS^T = P^T * (dP^T - delta) in place.
      float ds[MT][kHalf / 8][4];
      zero(ds);
      gemm_xyt<M, D, MT, kHalf>(ds, sv + row0 * LD, sdo + c0 * LD, LD, lane);
      dscores_by_col<MT, kHalf>(ds, p, st_lse + kTile, c0, lane);
      gemm_py<M, D, MT, kHalf>(dk, ds, sq + c0 * LD, LD, lane);
    }
  });
  store_rows<E, D, MT>(rows_at<E>(a.dk, bh, a.heads), d, k0, row0, a.lk, dk, a.scale, lane);
  store_rows<E, D, MT>(rows_at<E>(a.dv, bh, a.heads), d, k0, row0, a.lk, dv, 1.f, lane);
}

// B = batch, H = heads, Lq / Lk = query / key lengths, d = head dim, D = tile width >= d (d = D
// unless Padded).
// One CTA per (64-query tile, head, batch item), in the q_order work order (cta_tile).
// q, dout, dq (B, H, Lq, d); k, v (B, H, Lk, d); lse, delta (B, H, Lq) float32.
template <MathMode M, int D, bool Padded>
__global__ void __launch_bounds__(32 * num_warps<M, D>()) dq_kernel(BwdArgs a) {
  using E = elem_t<M>;
  constexpr int MT = m_tiles<M, D>(), NT = 32 * num_warps<M, D>();
  constexpr int LD = smem_stride<M, D>();
  extern __shared__ __align__(16) unsigned char smem[];
  E* sq = reinterpret_cast<E*>(smem);
  E* sdo = sq + kTile * LD;
  E* skv = sdo + kTile * LD;  // two stages of [K tile, V tile]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16 * MT;
  const CtaTile ct = cta_tile(a.layout.q_order, a.q_tiles, 0, a.heads, a.layout.layout_heads);
  const int64_t q0 = int64_t(ct.tile) * kTile;
  const int h = ct.h;
  const int64_t bh = ct.bh;
  const int d = row_length<D, Padded>(a.d);
  const Rows<const E> q = rows_of<const E>(a.q, ct.b, h);
  const Rows<const E> dout = rows_of<const E>(a.dout, ct.b, h);
  const Rows<const E> k = rows_of<const E>(a.k, ct.b, h);
  const Rows<const E> v = rows_of<const E>(a.v, ct.b, h);
  const BlockLayoutRef& L = a.layout;

  auto query_pos = [&](int j) -> int64_t { return q0 + j < a.lq ? q0 + j : -1; };
  load_tile<E, D, NT>(sq, LD, q, d, query_pos);
  load_tile<E, D, NT>(sdo, LD, dout, d, query_pos);
  cp_async_commit();

  float row_lse[MT][2], row_delta[MT][2];
  load_row_stats(row_lse, row_delta, a.lse + bh * a.lq, a.delta + bh * a.lq, q0, row0, a.lq, lane);

  TileCursor cursor;
  open_cursor(cursor, L, h, q0, false);
  const int gs = cursor.group_size();
  auto load_kv = [&](const SlotTile& st, int stage) {
    load_slot_pair<E, D, NT>(skv + stage * 2 * kTile * LD, LD, k, v, d, st, gs, a.lk);
  };

  float dq[MT][D / 8][4];
  zero(dq);
  for_each_tile(cursor, load_kv, [] {}, [&](const SlotTile& cur, int stage) {
    const E* sk = skv + stage * 2 * kTile * LD;
    const E* sv = sk + kTile * LD;
    const bool need_mask = tile_needs_mask(cur, gs, q0, a.lk, L.causal, true);
#pragma unroll 1
    for (int half = 0; half < 2; ++half) {
      const int c0 = half * kHalf;
      float p[MT][kHalf / 8][4];
      zero(p);
      gemm_xyt<M, D, MT, kHalf>(p, sq + row0 * LD, sk + c0 * LD, LD, lane);
      probs_by_row<MT, kHalf>(p, row_lse, a.scale_log2);
      if (need_mask)
        apply_mask<MT, kHalf>(p, cur, gs, q0, row0, c0, a.lk, L.causal, true, 0.f, lane);
      float ds[MT][kHalf / 8][4];
      zero(ds);
      gemm_xyt<M, D, MT, kHalf>(ds, sdo + row0 * LD, sv + c0 * LD, LD, lane);
      dscores_by_row<MT, kHalf>(ds, p, row_delta);
      gemm_py<M, D, MT, kHalf>(dq, ds, sk + c0 * LD, LD, lane);
    }
  });
  store_rows<E, D, MT>(rows_at<E>(a.dq, bh, a.heads), d, q0, row0, a.lq, dq, a.scale, lane);
}

// Above 48 KB a kernel must opt in to more dynamic shared memory; once per instantiation.
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  NEEDLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
}

template <MathMode M, int D, bool Padded>
void launch_backward(const BwdArgs& a, int64_t batch) {
  constexpr int NT = 32 * num_warps<M, D>();
  constexpr size_t dkdv_smem = dkdv_smem_bytes<M, D>(), dq_smem = dq_smem_bytes<M, D>();
  static const bool configured = [] {
    allow_smem(dkdv_kernel<M, D, Padded>, dkdv_smem);
    allow_smem(dq_kernel<M, D, Padded>, dq_smem);
    return true;
  }();
  (void)configured;
  const unsigned heads = static_cast<unsigned>(a.heads), b = static_cast<unsigned>(batch);
  if (a.lk > 0) {
    dkdv_kernel<M, D, Padded><<<tile_grid(a.k_tiles, heads, b), NT, dkdv_smem, stream()>>>(a);
    NEEDLE_CUDA_LAUNCH_CHECK();
  }
  if (a.lq > 0) {
    dq_kernel<M, D, Padded><<<tile_grid(a.q_tiles, heads, b), NT, dq_smem, stream()>>>(a);
    NEEDLE_CUDA_LAUNCH_CHECK();
  }
}

template <MathMode M>
void dispatch_backward(int64_t d, const BwdArgs& a, int64_t batch) {
  dispatch_head_dim(d, [&](auto D, auto padded) {
    launch_backward<M, decltype(D)::value, decltype(padded)::value>(a, batch);
  });
}

template <typename E>
void launch_delta(const BwdArgs& a, const Operand& out, float* delta, int64_t rows) {
  constexpr int kRowsPerBlock = 8;  // one warp per row
  const unsigned blocks = grid_for(rows, kRowsPerBlock);
  dispatch_head_dim(a.d, [&](auto D, auto padded) {
    delta_kernel<E, decltype(D)::value, decltype(padded)::value>
        <<<blocks, 32 * kRowsPerBlock, 0, stream()>>>(out, a.dout, delta, rows, a.lq, a.heads, a.d);
  });
  NEEDLE_CUDA_LAUNCH_CHECK();
}

}  // namespace
}  // namespace attn

void block_sparse_attention_backward(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                                     const ArrayRef& out, const ArrayRef& lse,
                                     const ArrayRef& dout, const BlockLayoutRef& layout,
                                     double scale, const ArrayRef& dq, const ArrayRef& dk,
                                     const ArrayRef& dv) {
  using namespace attn;
  const char* op = "block_sparse_attention_backward";
  check_attention_args(op, q, k, v, layout);
  NEEDLE_CHECK(layout.q_offset == 0, ValueError,
               "cuda block_sparse_attention_backward: requires q_offset == 0, got ",
               layout.q_offset);
  BwdArgs a{};
  a.q = operand(op, "q", q, q);
  a.k = operand(op, "k", k, k);
  a.v = operand(op, "v", v, k);
  a.dout = operand(op, "dout", dout, q);
  a.dq = operand(op, "dq", dq, q);
  a.dk = operand(op, "dk", dk, k);
  a.dv = operand(op, "dv", dv, k);
  const Operand o = operand(op, "out", out, q);
  const int64_t batch = q.shape[0], heads = q.shape[1], lq = q.shape[2], d = q.shape[3];
  NEEDLE_CHECK(lse.dtype == DType::Float32 && lse.is_compact() && lse.numel() == batch * heads * lq,
               ValueError, "cuda block_sparse_attention_backward: lse must be compact float32 (",
               batch, ", ", heads, ", ", lq, ")");
  if (batch == 0 || heads == 0) return;
  const int64_t rows = batch * heads * lq;
  Workspace delta(static_cast<size_t>(rows) * sizeof(float));
  a.lse = static_cast<const float*>(lse.data);
  a.delta = delta.as<float>();
  a.layout = layout;
  a.heads = static_cast<int>(heads);
  a.d = static_cast<int>(d);
  a.lq = lq;
  a.lk = k.shape[2];
  if (rows > 0) {
    if (q.dtype == DType::BFloat16)
      launch_delta<uint16_t>(a, o, delta.as<float>(), rows);
    else
      launch_delta<float>(a, o, delta.as<float>(), rows);
  }
  a.q_tiles = static_cast<int>(ceil_div(lq, kTile));
  a.k_tiles = static_cast<int>(ceil_div(a.lk, kTile));
  a.scale = static_cast<float>(scale);
  a.scale_log2 = static_cast<float>(scale) * kLog2e;
  switch (math_mode_for(q.dtype)) {
    case MathMode::kBF16:
      if (sm90::enabled()) sm90::backward(a, d, int(heads), batch);
      else dispatch_backward<MathMode::kBF16>(d, a, batch);
      break;
    case MathMode::kTF32:
      dispatch_backward<MathMode::kTF32>(d, a, batch);
      break;
    case MathMode::kF32x3:
      dispatch_backward<MathMode::kF32x3>(d, a, batch);
      break;
  }
}

}  // namespace needle::cuda
