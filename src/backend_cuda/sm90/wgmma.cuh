// Hopper (sm_90a) warpgroup matrix products for the attention kernels in this folder: wgmma
// wrappers, shared-memory matrix descriptors and the 128-byte-swizzled tile layout they read.
// Compiled only into the sm_90a object (see CMakeLists.txt); nothing here runs elsewhere.
//
// Tile layout. A tile is 64 rows of D bf16 (tile width D = 64 or 128), stored as D / 64 column panels of
// 64 x 64 (8 KB each, 1024-byte aligned). Inside a panel, row r is 128 bytes and its 16-byte
// chunk c lives at chunk c ^ (r % 8): the 128-byte swizzle the tensor cores undo on read, which
// also keeps cp.async writes and the hardware's reads free of bank conflicts.
// The same tile serves as a K-major operand (rows = M or N, the D columns = K: Q, K, V, dO in
// S = Q K^T and friends) and as an MN-major one (rows = K, columns = N: V in O = P V, dO in
// dV = P^T dO, Q in dK = dS^T Q, K in dQ = dS K).
#pragma once
#include <cstdint>
#include <type_traits>

#include "backend_cuda/attention_common.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "backend_cuda/sm90 must be compiled for sm_90a only (-gencode arch=compute_90a,code=sm_90a)"
#endif

namespace needle::cuda::attn::sm90 {

constexpr int kPanelBytes = kTile * 64 * 2;  // one 64 x 64 bf16 panel
constexpr int kThreads = 128;                // one warpgroup per CTA

// Shared-memory tiles are handled as 32-bit shared-space byte addresses (smem_addr), so the
// loads and the matrix descriptors below add compile-time offsets to a few base registers.
template <int D>
constexpr uint32_t tile_bytes() {
  return kTile * D * 2;
}

// 16-byte global->shared copies: `full` copies all 16 bytes, `zfill` copies src_bytes (0 or 16)
// and zero-fills the rest (padding rows must be finite: a masked probability of 0 times a
// garbage NaN would still be NaN).
__device__ __forceinline__ void cp_async16_full(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async16_zfill(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}

// Tile loads with cp.async. Thread t always copies 16-byte chunk t % C of a row (C = D / 8
// chunks per row) for rows t / C + i * (128 / C) (R = 128 / C rows apart, a multiple of 8, so
// every row it copies has the same row % 8): the swizzled byte offset of its first chunk is
// fixed for the CTA's lifetime and later rows add i * R * 128 bytes.
//
// Rows hold `rl` elements: D in the exact kernels, the head dim d < D in the padded ones
// (Padded), where a thread whose chunk lies at or past d zero-fills it instead (the columns d ..
// D - 1 then add 0 to every product). Each matrix's rows lie its own pitch apart (Rows).
template <int D, bool Padded>
struct ChunkMap {
  static constexpr int C = D / 8, R = kThreads / C;
  int chunk, r0;
  bool live;        // the chunk holds data (always, unless Padded)
  uint32_t offset;  // byte offset of (row r0, chunk) in a tile
  __device__ __forceinline__ explicit ChunkMap(int rl) {
    chunk = threadIdx.x % C;
    r0 = threadIdx.x / C;
    live = !Padded || chunk * 8 < rl;
    offset = uint32_t(r0 * 128 + (chunk / 8) * kPanelBytes + ((chunk % 8) ^ (r0 % 8)) * 16);
  }
};

// Gathered rows: row j is src's row pos_j = row_pos(j), or is zero-filled when pos_j < 0; a row's
// position is computed once for all NMat matrices.
template <int D, bool Padded, int NMat, typename RowPos>
__device__ __forceinline__ void load_rows_sw(const uint32_t (&dst)[NMat],
                                             const Rows<const uint16_t> (&src)[NMat], int rl,
                                             RowPos row_pos) {
  const ChunkMap<D, Padded> cm(rl);
#pragma unroll
  for (int i = 0; i < kTile / cm.R; ++i) {
    const int64_t pos = row_pos(cm.r0 + i * cm.R);
    const bool copy = pos >= 0 && cm.live;
#pragma unroll
    for (int m = 0; m < NMat; ++m)
      cp_async16_zfill(dst[m] + cm.offset + i * cm.R * 128,
                       copy ? src[m].at(pos) + cm.chunk * 8 : src[m].p, copy ? 16 : 0);
  }
}

// A run: row j comes from position start + j, rows at or past limit are zero-filled. A run that
// lies wholly below limit (every tile but a sequence's last) needs one base pointer per matrix
// and no per-row checks.
template <int D, bool Padded, int NMat>
__device__ __forceinline__ void load_run_sw(const uint32_t (&dst)[NMat],
                                            const Rows<const uint16_t> (&src)[NMat], int rl,
                                            int64_t start, int64_t limit) {
  const ChunkMap<D, Padded> cm(rl);
  if (start + kTile <= limit) {
#pragma unroll
    for (int m = 0; m < NMat; ++m) {
      const uint16_t* s = cm.live ? src[m].at(start + cm.r0) + cm.chunk * 8 : src[m].p;
      const int64_t step = cm.live ? int64_t(cm.R) * src[m].pitch : 0;
#pragma unroll
      for (int i = 0; i < kTile / cm.R; ++i) {
        const uint32_t d = dst[m] + cm.offset + i * cm.R * 128;
        if constexpr (Padded) cp_async16_zfill(d, s + i * step, cm.live ? 16 : 0);
        else cp_async16_full(d, s + i * step);
      }
    }
  } else {
    load_rows_sw<D, Padded, NMat>(dst, src, rl, [&](int j) -> int64_t {
      return start + j < limit ? start + j : -1;
    });
  }
}

// The K and V (or Q and dO) rows of slot tile st (group size gs, positions below limit).
template <int D, bool Padded>
__device__ __forceinline__ void load_slot_pair_sw(uint32_t dx, uint32_t dy, Rows<const uint16_t> x,
                                                  Rows<const uint16_t> y, int rl,
                                                  const SlotTile& st, int gs, int64_t limit) {
  // A tile of block size >= 64 is one run of 64 consecutive positions.
  if (gs == kTile) {
    load_run_sw<D, Padded, 2>({dx, dy}, {x, y}, rl, st.start[0], limit);
  } else {
    load_rows_sw<D, Padded, 2>({dx, dy}, {x, y}, rl, [&](int j) -> int64_t {
      const int64_t p = slot_pos(st, j, gs);
      return p < limit ? p : -1;
    });
  }
}

// Shared-memory matrix descriptor of the tile at shared address `tile`, `offset` bytes in:
// start address, leading / stride byte offsets (16-byte units), 128-byte swizzle (mode 1 in
// bits 62-63). The start field (bits 0-13) holds any shared address >> 4 with room for the
// offsets, so the offset is added to the tile's low word without carries: the compiler keeps
// one base per tile and adds a constant per k-step.
__device__ __forceinline__ uint64_t make_desc(uint32_t tile, uint32_t offset, uint32_t lbo,
                                              uint32_t sbo) {
  const uint32_t lo = ((tile >> 4) | ((lbo >> 4) << 16)) + (offset >> 4);
  const uint32_t hi = (sbo >> 4) | (1u << 30);
  return (uint64_t(hi) << 32) | lo;
}

// K-major operand (64 rows of M or N, K along the D columns), k-step ks of 16 columns: the
// panel ks / 4, 32 bytes per step inside it; 8-row core groups 1024 bytes apart (SBO); LBO is
// unused with a swizzle (1 by convention).
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t tile, int ks) {
  return make_desc(tile, (ks / 4) * kPanelBytes + (ks % 4) * 32, 16, 1024);
}

// MN-major operand (rows = K, the D columns = N), k-step j of 16 rows: 2048 bytes per step;
// 8-row groups along K 1024 bytes apart (SBO), 64-column panels along N kPanelBytes apart (LBO).
__device__ __forceinline__ uint64_t desc_mnmajor(uint32_t tile, int j) {
  return make_desc(tile, j * 2048, kPanelBytes, 1024);
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared memory written through the generic proxy (cp.async, st.shared) and read next by the
// tensor cores (async proxy): each writing thread fences before the barrier.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving reads or writes of accumulator registers across the points
// where wgmma owns them (between issue and wait).
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Issues the products of issue() as one wgmma group and waits for it. The accumulators it writes
// are fenced on both sides, so the compiler keeps every other access to them out of the window in
// which the tensor cores own them.
template <typename Issue, typename... Acc>
__device__ __forceinline__ void wgmma_run(Issue issue, Acc&... acc) {
  (fence_regs(acc), ...);
  wgmma_fence();
  issue();
  wgmma_commit();
  wgmma_wait<0>();
  (fence_regs(acc), ...);
}

template <int MT, int N>
__device__ __forceinline__ float (&flat(float (&c)[MT][N][4]))[MT * N * 4] {
  return reinterpret_cast<float(&)[MT * N * 4]>(c);
}

// d (m64n64, f32) += A (64 x 16, shared, K-major) . B (16 x 64, shared; tnspB 1: MN-major).
// scale_d 0 ignores the old d (the first k-step of a product).
template <int TnspB>
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                              int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, %35;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TnspB));
}

// d (m64n64, f32) += A (64 x 16, registers: a[4] per thread) . B (16 x 64, shared;
// tnspB 1: MN-major).
template <int TnspB>
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[32], const uint32_t (&a)[4],
                                              uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TnspB));
}

// d (m64n128, f32) += A (64 x 16, registers: a[4] per thread) . B (16 x 128, shared;
// tnspB 1: MN-major).
template <int TnspB>
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const uint32_t (&a)[4],
                                              uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TnspB));
}

// o (64 x D) += A (registers) . B (16 x D, MN-major tile at k-step j).
template <int D>
__device__ __forceinline__ void wgmma_rs_mn(float (&o)[D / 2], const uint32_t (&a)[4],
                                            uint32_t tile, int j) {
  if constexpr (D == 64) wgmma_rs_n64<1>(o, a, desc_mnmajor(tile, j), 1);
  else wgmma_rs_n128<1>(o, a, desc_mnmajor(tile, j), 1);
}

// c (64 x 64) = X . Y^T over the first KS k-steps (16 columns each) of two K-major tiles (rows of
// X = M, rows of Y = N); issued, not waited for.
template <int KS>
__device__ __forceinline__ void wgmma_xyt(float (&c)[32], uint32_t x, uint32_t y) {
#pragma unroll
  for (int ks = 0; ks < KS; ++ks)
    wgmma_ss_n64<0>(c, desc_kmajor(x, ks), desc_kmajor(y, ks), ks > 0);
}

// Calls f(std::integral_constant<int, KS>) with the k-steps a product over head dim d needs in
// tiles of width D: all D / 16, or in a padded tile those of the quarters of the tile that hold a
// column below d (the columns past d are zero in both operands). KS is a constant in each branch,
// so every wgmma group is one straight run of instructions: a run-time bound inside a group makes
// ptxas fence each wgmma.
template <int D, bool Padded, typename F>
__device__ __forceinline__ void with_ksteps(int d, F f) {
  constexpr int Q = D / 64;  // k-steps per quarter of the tile
  using std::integral_constant;
  if constexpr (!Padded) {
    f(integral_constant<int, 4 * Q>{});
  } else {
    switch (((d + 15) / 16 + Q - 1) / Q) {
      case 1: return f(integral_constant<int, Q>{});
      case 2: return f(integral_constant<int, 2 * Q>{});
      case 3: return f(integral_constant<int, 3 * Q>{});
      default: return f(integral_constant<int, 4 * Q>{});
    }
  }
}

// The A-operand fragments of a 64 x 64 product P . Y from P in accumulator layout (the
// m16n8k16 A layout, one per 16-column k-step), rounded to bf16.
__device__ __forceinline__ void pack_a(uint32_t (&a)[4][4], const float (&p)[1][8][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    a[j][0] = pack_bf16(p[0][2 * j][0], p[0][2 * j][1]);
    a[j][1] = pack_bf16(p[0][2 * j][2], p[0][2 * j][3]);
    a[j][2] = pack_bf16(p[0][2 * j + 1][0], p[0][2 * j + 1][1]);
    a[j][3] = pack_bf16(p[0][2 * j + 1][2], p[0][2 * j + 1][3]);
  }
}

// acc (64 x D) += P . Y for a P held as packed A fragments and Y an MN-major tile; issued.
template <int D>
__device__ __forceinline__ void wgmma_py(float (&acc)[D / 2], const uint32_t (&a)[4][4],
                                         uint32_t y) {
#pragma unroll
  for (int j = 0; j < 4; ++j) wgmma_rs_mn<D>(acc, a[j], y, j);
}

}  // namespace needle::cuda::attn::sm90
