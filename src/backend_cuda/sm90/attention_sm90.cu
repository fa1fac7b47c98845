// Block-sparse attention on Hopper (sm_90a), bfloat16, any head dim the CUDA backend takes (a
// multiple of 8 up to 128): tile width 64 or 128, with head dims below a width run "padded" as in
// attention_common.cuh (rows d elements apart, columns d .. width - 1 zero-filled in shared memory
// and never stored; the k-steps of S = Q K^T past d are skipped). The forward, dK/dV and dQ
// kernels of attention_forward.cu / attention_backward.cu with their warp-level mma.sync products
// replaced by warpgroup wgmma products read straight from swizzled shared memory. On Hopper they
// beat the mma.sync kernels at every head dim, 16 and 32 included (docs/block_sparse.md).
//
// Same tiling, layout walk, masking and numerics as the mma.sync kernels (the TileCursor, 64 x 64
// tiles, online softmax in log2 units, no atomics): a CTA is one warpgroup (4 warps, 128 threads)
// owning 64 primary rows, warp w the 16 rows 16w..16w+15, so every accumulator is in the same
// m16n8 fragment layout as before and the softmax / masking code is shared. Per key tile:
//   forward  S = Q K^T (smem x smem), online softmax in registers, O += P V (P from registers);
//   dK/dV    S^T = K Q^T and dP^T = V dO^T in one batch, then dV += P^T dO and dK += dS^T Q;
//   dQ       S = Q K^T and dP = dO V^T in one batch, then dQ += dS K.
// Several CTAs share an SM (40-48 KB of shared memory each at D = 64), so one CTA's softmax runs
// while another's products occupy the tensor cores.
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/sm90/attention_sm90.h"
#include "backend_cuda/sm90/wgmma.cuh"

namespace needle::cuda::attn::sm90 {
namespace {

// The dynamic shared memory rounded up to the 1024-byte alignment the swizzle needs.
__device__ __forceinline__ unsigned char* aligned_smem(unsigned char* raw) {
  return raw + ((1024u - (smem_addr(raw) & 1023u)) & 1023u);
}

// One CTA per (64-position query tile, head, batch item), in the q_order work order (cta_tile).
template <int D, bool Padded>
__global__ void __launch_bounds__(kThreads, D == 64 ? 5 : 1) forward_kernel(FwdArgs a) {
  constexpr uint32_t TB = tile_bytes<D>();
  const int rl = row_length<D, Padded>(a.d);
  extern __shared__ unsigned char smem_raw[];
  const uint32_t sq = smem_addr(aligned_smem(smem_raw));
  const uint32_t skv = sq + TB;  // two stages of [K tile, V tile]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16;
  const CtaTile ct = cta_tile(a.layout.q_order, a.tiles, a.first_tile, a.heads,
                             a.layout.layout_heads);
  const int tile = ct.tile, h = ct.h;
  const int64_t q0 = int64_t(tile) * kTile;
  const Rows<const uint16_t> q = rows_of<const uint16_t>(a.q, ct.b, h);
  const Rows<const uint16_t> k = rows_of<const uint16_t>(a.k, ct.b, h);
  const Rows<const uint16_t> v = rows_of<const uint16_t>(a.v, ct.b, h);
  const BlockLayoutRef& L = a.layout;

  load_rows_sw<D, Padded, 1>({sq}, {q}, rl, [&](int j) -> int64_t {
    const int64_t r = q0 + j - a.q_offset;
    return r >= 0 && r < a.lq ? r : -1;
  });
  cp_async_commit();

  TileCursor cursor;
  open_cursor(cursor, L, h, q0, false);
  const int gs = cursor.group_size();
  auto load_kv = [&](const SlotTile& st, int stage) {
    const uint32_t dst = skv + stage * 2 * TB;
    load_slot_pair_sw<D, Padded>(dst, dst + TB, k, v, rl, st, gs, a.lk);
  };

  float o[1][D / 8][4];
  zero(o);
  float mrow[1][2] = {{-INFINITY, -INFINITY}}, lrow[1][2] = {{0.f, 0.f}};

  for_each_tile(cursor, load_kv, fence_proxy_async, [&](const SlotTile& cur, int stage) {
    const uint32_t sk = skv + stage * 2 * TB, sv = sk + TB;
    float s[1][kTile / 8][4];  // written by the first k-step (scale_d 0)
    with_ksteps<D, Padded>(rl, [&](auto ks) {
      wgmma_run([&] { wgmma_xyt<ks()>(flat(s), sq, sk); }, flat(s));
    });
    // Raw scores; the softmax scales them by scale * log2(e) (> 0: checked by the caller).
    if (tile_needs_mask(cur, gs, q0, a.lk, L.causal, true))
      apply_mask<1, kTile>(s, cur, gs, q0, row0, 0, a.lk, L.causal, true, -INFINITY, lane);
    online_softmax<1, kTile, D>(s, o, mrow, lrow, a.scale_log2);
    uint32_t pa[4][4];
    pack_a(pa, s);
    wgmma_run([&] { wgmma_py<D>(flat(o), pa, sv); }, flat(o));
  });
  store_output<uint16_t, D, 1>(a, rl, ct, q0, row0, o, mrow, lrow, lane);
}

// One CTA per (64-key tile, head, batch item), in the k_order work order (cta_tile).
template <int D, bool Padded>
__global__ void __launch_bounds__(kThreads, D == 64 ? 3 : 1) dkdv_kernel(BwdArgs a) {
  constexpr uint32_t TB = tile_bytes<D>();
  const int rl = row_length<D, Padded>(a.d);
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = aligned_smem(smem_raw);
  const uint32_t sk = smem_addr(base), sv = sk + TB;
  const uint32_t sqdo = sv + TB;                              // two stages of [Q, dO]
  float* sstat = reinterpret_cast<float*>(base + 6 * TB);     // two stages of [lse, delta]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16;
  const CtaTile ct = cta_tile(a.layout.k_order, a.k_tiles, 0, a.heads, a.layout.layout_heads);
  const int64_t k0 = int64_t(ct.tile) * kTile;
  const int h = ct.h;
  const int64_t bh = ct.bh;
  const Rows<const uint16_t> q = rows_of<const uint16_t>(a.q, ct.b, h);
  const Rows<const uint16_t> dout = rows_of<const uint16_t>(a.dout, ct.b, h);
  const Rows<const uint16_t> k = rows_of<const uint16_t>(a.k, ct.b, h);
  const Rows<const uint16_t> v = rows_of<const uint16_t>(a.v, ct.b, h);
  const float* lse = a.lse + bh * a.lq;
  const float* delta = a.delta + bh * a.lq;
  const BlockLayoutRef& L = a.layout;

  load_run_sw<D, Padded, 2>({sk, sv}, {k, v}, rl, k0, a.lk);
  cp_async_commit();

  TileCursor cursor;
  open_cursor(cursor, L, h, k0, true);
  const int gs = cursor.group_size();
  auto load_q = [&](const SlotTile& st, int stage) {
    const uint32_t dst = sqdo + stage * 2 * TB;
    load_slot_pair_sw<D, Padded>(dst, dst + TB, q, dout, rl, st, gs, a.lq);
    load_slot_stats(sstat + stage * 2 * kTile, st, gs, lse, delta, a.lq, kThreads);
  };

  float dk[1][D / 8][4], dv[1][D / 8][4];
  zero(dk);
  zero(dv);
  for_each_tile(cursor, load_q, fence_proxy_async, [&](const SlotTile& cur, int stage) {
    const uint32_t sq = sqdo + stage * 2 * TB, sdo = sq + TB;
    const float* st_lse = sstat + stage * 2 * kTile;
    // S^T (keys x queries) and dP^T = V dO^T.
    float p[1][kTile / 8][4], dp[1][kTile / 8][4];  // written by the first k-step (scale_d 0)
    with_ksteps<D, Padded>(rl, [&](auto ks) {
      wgmma_run([&] {
        wgmma_xyt<ks()>(flat(p), sk, sq);
        wgmma_xyt<ks()>(flat(dp), sv, sdo);
      }, flat(p), flat(dp));
    });
    probs_by_col<1, kTile>(p, st_lse, 0, a.scale_log2, lane);
    // Masked after the exponential (to exactly 0), so any scale, 0 included, is safe.
    if (tile_needs_mask(cur, gs, k0, a.lq, L.causal, false))
      apply_mask<1, kTile>(p, cur, gs, k0, row0, 0, a.lq, L.causal, false, 0.f, lane);
    dscores_by_col<1, kTile>(dp, p, st_lse + kTile, 0, lane);  // dS^T, in place
    uint32_t pa[4][4], da[4][4];
    pack_a(pa, p);
    pack_a(da, dp);
    wgmma_run([&] {
      wgmma_py<D>(flat(dv), pa, sdo);
      wgmma_py<D>(flat(dk), da, sq);
    }, flat(dv), flat(dk));
  });
  store_rows<uint16_t, D, 1>(rows_at<uint16_t>(a.dk, bh, a.heads), rl, k0, row0, a.lk, dk, a.scale,
                             lane);
  store_rows<uint16_t, D, 1>(rows_at<uint16_t>(a.dv, bh, a.heads), rl, k0, row0, a.lk, dv, 1.f,
                             lane);
}

// One CTA per (64-query tile, head, batch item), in the q_order work order (cta_tile).
template <int D, bool Padded>
__global__ void __launch_bounds__(kThreads, D == 64 ? 4 : 1) dq_kernel(BwdArgs a) {
  constexpr uint32_t TB = tile_bytes<D>();
  const int rl = row_length<D, Padded>(a.d);
  extern __shared__ unsigned char smem_raw[];
  const uint32_t sq = smem_addr(aligned_smem(smem_raw)), sdo = sq + TB;
  const uint32_t skv = sdo + TB;  // two stages of [K, V]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16;
  const CtaTile ct = cta_tile(a.layout.q_order, a.q_tiles, 0, a.heads, a.layout.layout_heads);
  const int64_t q0 = int64_t(ct.tile) * kTile;
  const int h = ct.h;
  const int64_t bh = ct.bh;
  const Rows<const uint16_t> q = rows_of<const uint16_t>(a.q, ct.b, h);
  const Rows<const uint16_t> dout = rows_of<const uint16_t>(a.dout, ct.b, h);
  const Rows<const uint16_t> k = rows_of<const uint16_t>(a.k, ct.b, h);
  const Rows<const uint16_t> v = rows_of<const uint16_t>(a.v, ct.b, h);
  const BlockLayoutRef& L = a.layout;

  load_run_sw<D, Padded, 2>({sq, sdo}, {q, dout}, rl, q0, a.lq);
  cp_async_commit();

  float row_lse[1][2], row_delta[1][2];
  load_row_stats(row_lse, row_delta, a.lse + bh * a.lq, a.delta + bh * a.lq, q0, row0, a.lq, lane);

  TileCursor cursor;
  open_cursor(cursor, L, h, q0, false);
  const int gs = cursor.group_size();
  auto load_kv = [&](const SlotTile& st, int stage) {
    const uint32_t dst = skv + stage * 2 * TB;
    load_slot_pair_sw<D, Padded>(dst, dst + TB, k, v, rl, st, gs, a.lk);
  };

  float dq[1][D / 8][4];
  zero(dq);
  for_each_tile(cursor, load_kv, fence_proxy_async, [&](const SlotTile& cur, int stage) {
    const uint32_t sk = skv + stage * 2 * TB, sv = sk + TB;
    float p[1][kTile / 8][4], dp[1][kTile / 8][4];  // written by the first k-step (scale_d 0)
    with_ksteps<D, Padded>(rl, [&](auto ks) {
      wgmma_run([&] {
        wgmma_xyt<ks()>(flat(p), sq, sk);
        wgmma_xyt<ks()>(flat(dp), sdo, sv);
      }, flat(p), flat(dp));
    });
    probs_by_row<1, kTile>(p, row_lse, a.scale_log2);
    if (tile_needs_mask(cur, gs, q0, a.lk, L.causal, true))
      apply_mask<1, kTile>(p, cur, gs, q0, row0, 0, a.lk, L.causal, true, 0.f, lane);
    dscores_by_row<1, kTile>(dp, p, row_delta);
    uint32_t da[4][4];
    pack_a(da, dp);
    wgmma_run([&] { wgmma_py<D>(flat(dq), da, sk); }, flat(dq));
  });
  store_rows<uint16_t, D, 1>(rows_at<uint16_t>(a.dq, bh, a.heads), rl, q0, row0, a.lq, dq, a.scale,
                             lane);
}

// Shared memory of each kernel: `tiles` tiles of 64 x D bf16, extra bytes, and 1 KB of slack for
// the alignment.
template <int D>
constexpr size_t smem_bytes(int tiles, size_t extra = 0) {
  return size_t(tiles) * tile_bytes<D>() + extra + 1024;
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  NEEDLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
}

template <int D, bool Padded>
void launch_forward(const FwdArgs& a, int tiles, int heads, int batch) {
  constexpr size_t smem = smem_bytes<D>(5);
  static const bool configured = (allow_smem(forward_kernel<D, Padded>, smem), true);
  (void)configured;
  forward_kernel<D, Padded><<<tile_grid(tiles, heads, batch), kThreads, smem, stream()>>>(a);
  NEEDLE_CUDA_LAUNCH_CHECK();
}

template <int D, bool Padded>
void launch_backward(const BwdArgs& a, int heads, int64_t batch) {
  constexpr size_t dkdv_smem = smem_bytes<D>(6, 4 * kTile * sizeof(float));
  constexpr size_t dq_smem = smem_bytes<D>(6);
  static const bool configured = (allow_smem(dkdv_kernel<D, Padded>, dkdv_smem),
                                  allow_smem(dq_kernel<D, Padded>, dq_smem), true);
  (void)configured;
  const unsigned hs = static_cast<unsigned>(heads), b = static_cast<unsigned>(batch);
  if (a.lk > 0) {
    dkdv_kernel<D, Padded><<<tile_grid(a.k_tiles, hs, b), kThreads, dkdv_smem, stream()>>>(a);
    NEEDLE_CUDA_LAUNCH_CHECK();
  }
  if (a.lq > 0) {
    dq_kernel<D, Padded><<<tile_grid(a.q_tiles, hs, b), kThreads, dq_smem, stream()>>>(a);
    NEEDLE_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace

void forward(const FwdArgs& a, int64_t d, int tiles, int heads, int batch) {
  dispatch_tile_width<64, 128>(d, [&](auto D, auto padded) {
    launch_forward<decltype(D)::value, decltype(padded)::value>(a, tiles, heads, batch);
  });
}

void backward(const BwdArgs& a, int64_t d, int heads, int64_t batch) {
  dispatch_tile_width<64, 128>(d, [&](auto D, auto padded) {
    launch_backward<decltype(D)::value, decltype(padded)::value>(a, heads, batch);
  });
}

}  // namespace needle::cuda::attn::sm90
