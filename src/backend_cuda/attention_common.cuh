// Pieces shared by the block-sparse attention kernels (attention_forward.cu,
// attention_backward.cu): the math modes, the warp-level tensor-core GEMMs over shared-memory
// tiles, cp.async tile loads, the cursor that walks a layout's CSR lists tile by tile, element
// masking, and host-side checks.
//
// Operands. q, k, v, out and the gradients are (B, H, L, d) views (Operand): each row of d
// elements is contiguous and 16-byte aligned, rows lie `row` elements apart and a (batch item,
// head) `batch` and `head` elements in, so the (B, H, L, d) views of a fused QKV projection and
// an output written in (B, L, H, d) memory are read and written where they lie.
//
// Head dims. Any head dim d that is a multiple of 8 up to 128. A d that equals a tile width (32,
// 64, 96 or 128) runs in kernels compiled for that width, every row length a constant. Any other d
// runs in the "padded" kernels of the next tile width D (dispatch_head_dim): rows hold d
// elements, the tile's columns d .. D - 1 are zero-filled by the loads (they add 0 to every dot
// product) and never stored. The exact kernels are kept apart because a run-time row
// length costs the float32 and bf16 mma.sync kernels 17-34% at d = 64 (address and predicate
// arithmetic in the tile loads, whose instruction issue competes with the MMAs'; measured on an
// H100). The Hopper kernels (sm90/) do the same with tile widths 64 and 128 only.
//
// Tiling. Every kernel works on tiles of 64 positions on both sides. A CTA owns 64 "primary"
// positions (query rows in the forward and dQ kernels, key rows in the dK/dV kernel) and walks the
// kept blocks of the other side ("secondary") 64 slots at a time. A secondary tile is a list of
// slot groups: with block size b >= 64 one group of 64 consecutive positions (a block of 128 is
// two tiles); with b = 16 or 32 it gathers the G = 64 / b next blocks kept by any of the G
// primary layout rows the CTA covers, each group carrying the bit set of the rows that keep it.
// Gathering rows from different blocks into one tile keeps the tensor-core tiles full for small
// block sizes; the row bits then drive the element mask.
//
// Warp GEMMs. mma.sync m16n8k16 (bf16) or m16n8k8 (tf32) with fp32 accumulators; a warp owns
// MT * 16 primary rows so each B fragment read from shared memory feeds MT MMAs (shared-memory
// bandwidth, not the tensor cores, bounds a warp that owns only 16 rows).
//   bf16: fragments through ldmatrix (.trans for the second GEMM), rows padded by 16 bytes so the
//   eight row addresses of an 8x8 matrix fall in distinct banks.
//   fp32: the k index of m16n8k8 is permuted (logical t -> 2t, t+4 -> 2t+1) in both operands,
//   which leaves the product unchanged, lets Q/K fragments load as float2 and makes the
//   accumulator layout of S = QK^T exactly the A-operand layout of P for the PV product, so P
//   never moves between lanes. kTF32 hands the float32 bits to the tensor cores as they are:
//   they read a tf32 operand's sign, exponent and top 10 mantissa bits, i.e. truncate it (torch's
//   "high" precision). kF32x3 splits each operand x into hi (x with its low 13 bits cleared, an
//   exact tf32) and lo = x - hi (exact in float32, read truncated) and sums three products
//   (lo*hi + hi*lo + hi*hi): float32 accuracy (outputs within ~3e-6 of float64) on the tensor
//   cores, torch's "highest" precision. The split is one LOP and one FADD per value; the
//   round-to-nearest cvt.rna.tf32.f32 it replaced compiles on sm_90 to a branchy sequence of
//   about ten instructions per value and made the float32 backward 1.4x slower.
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend_cuda/cuda_common.cuh"
#include "ndarray/error.h"

namespace needle::cuda::attn {

enum class MathMode { kBF16, kTF32, kF32x3 };

constexpr int kTile = kAttentionTile;  // primary rows per CTA and secondary slots per tile
constexpr int kMaxGroups = 4; // slot groups per tile: 64 / 16 for the smallest block size
constexpr int kMaxHeadDim = 128;

// Calls launch(std::integral_constant<int, D>, std::bool_constant<Padded>) with the kernels that
// run head dim d (a multiple of 8, at most kMaxHeadDim): the narrowest of the tile widths
// W, Wider... (ascending, the last kMaxHeadDim) that holds d, padded unless d == D. The mma.sync kernels come
// in widths 32, 64, 96 and 128 (dispatch_head_dim), the Hopper ones (sm90/) in 64 and 128.
template <int W, int... Wider, typename Launch>
void dispatch_tile_width(int64_t d, Launch&& launch) {
  if constexpr (sizeof...(Wider) > 0) {
    if (d > W) return dispatch_tile_width<Wider...>(d, launch);
  }
  if (d == W) return launch(std::integral_constant<int, W>{}, std::false_type{});
  return launch(std::integral_constant<int, W>{}, std::true_type{});
}

// The mma.sync kernels' tile widths.
template <typename Launch>
void dispatch_head_dim(int64_t d, Launch&& launch) {
  dispatch_tile_width<32, 64, 96, 128>(d, launch);
}

// The row length of q, k, v and their results in a kernel of tile width D: D itself unless the
// kernel is a padded one, which reads it from its arguments.
template <int D, bool Padded>
__device__ __forceinline__ int row_length(int d) {
  return Padded ? d : D;
}

template <MathMode M>
using elem_t = std::conditional_t<M == MathMode::kBF16, uint16_t, float>;

// Row stride of every shared-memory tile, in elements: D plus 16 bytes (bf16) or 32 bytes (fp32)
// of padding, which keeps ldmatrix rows (bf16) and the half-warp float2 reads (fp32) on distinct
// banks.
template <MathMode M, int D>
constexpr int smem_stride() {
  return D + 8;
}

// Rows a warp owns (MT m16 tiles) and warps per CTA. bf16 gives a warp two m-tiles up to tile
// width 64, so each B fragment read from shared memory feeds two MMAs; float32 keeps one (its
// three products per step leave the tensor cores, not shared memory, the bound, and four warps
// per CTA hide their latency better than two: float32 forward 1.2x faster than with two
// m-tiles), as do widths 96 and 128, whose fp32 accumulators would not fit otherwise.
template <MathMode M, int D>
constexpr int m_tiles() {
  return M == MathMode::kBF16 && D <= 64 ? 2 : 1;
}
template <MathMode M, int D>
constexpr int num_warps() {
  return kTile / (16 * m_tiles<M, D>());
}
// Bytes of one shared tile (64 rows of smem_stride elements).
template <MathMode M, int D>
constexpr size_t tile_smem_bytes() {
  return size_t(kTile) * smem_stride<M, D>() * sizeof(elem_t<M>);
}

// --- PTX wrappers (smem_addr and the cp.async ones are in cuda_common.cuh) --------------------
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// c += a * b for one m16n8k8 step with fp32 operands, in mode M (kTF32 or kF32x3).
template <MathMode M>
__device__ __forceinline__ void mma_f32(float (&c)[4], const float (&a)[4], float b0, float b1) {
  if constexpr (M == MathMode::kF32x3) {
    constexpr uint32_t kHi = 0xffffe000u;  // sign, exponent and the 10 mantissa bits of tf32
    uint32_t ah[4], al[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      ah[i] = __float_as_uint(a[i]) & kHi;
      al[i] = __float_as_uint(a[i] - __uint_as_float(ah[i]));
    }
    const uint32_t bh0 = __float_as_uint(b0) & kHi, bh1 = __float_as_uint(b1) & kHi;
    const uint32_t bl0 = __float_as_uint(b0 - __uint_as_float(bh0));
    const uint32_t bl1 = __float_as_uint(b1 - __uint_as_float(bh1));
    // Small terms first, so they are not lost against the large one.
    mma_tf32(c, al[0], al[1], al[2], al[3], bh0, bh1);
    mma_tf32(c, ah[0], ah[1], ah[2], ah[3], bl0, bl1);
    mma_tf32(c, ah[0], ah[1], ah[2], ah[3], bh0, bh1);
  } else {
    mma_tf32(c, __float_as_uint(a[0]), __float_as_uint(a[1]), __float_as_uint(a[2]),
             __float_as_uint(a[3]), __float_as_uint(b0), __float_as_uint(b1));
  }
}

// --- warp GEMMs over shared-memory tiles ---------------------------------------------------------
// c[m][n] (MT m16 tiles x N/8 n8 tiles) += X[rows of this warp] . Y[N rows]^T, contracting over D.
// x: the warp's first row; y: the first of N rows; both with row stride ld elements.
template <MathMode M, int D, int MT, int N>
__device__ __forceinline__ void gemm_xyt(float (&c)[MT][N / 8][4], const elem_t<M>* x,
                                         const elem_t<M>* y, int ld, int lane) {
  if constexpr (M == MathMode::kBF16) {
#pragma unroll
    for (int s = 0; s < D / 16; ++s) {
      uint32_t a[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m)
        ldmatrix_x4(a[m], x + (m * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + s * 16 +
                              8 * (lane >> 4));
#pragma unroll
      for (int p = 0; p < N / 16; ++p) {
        uint32_t b[4];
        ldmatrix_x4(b, y + (p * 16 + (lane & 7) + 8 * (lane >> 4)) * ld + s * 16 +
                           8 * ((lane >> 3) & 1));
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma_bf16(c[m][2 * p], a[m], b[0], b[1]);
          mma_bf16(c[m][2 * p + 1], a[m], b[2], b[3]);
        }
      }
    }
  } else {
    const int g = lane >> 2, t = lane & 3;
    // Not unrolled: unrolled, ptxas hoists every k-step's shared-memory reads and the backward's
    // four accumulator sets then spill.
#pragma unroll 1
    for (int s = 0; s < D / 8; ++s) {
      float a[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const float2 lo = *reinterpret_cast<const float2*>(x + (m * 16 + g) * ld + s * 8 + 2 * t);
        const float2 hi =
            *reinterpret_cast<const float2*>(x + (m * 16 + g + 8) * ld + s * 8 + 2 * t);
        a[m][0] = lo.x;
        a[m][1] = hi.x;
        a[m][2] = lo.y;
        a[m][3] = hi.y;
      }
#pragma unroll
      for (int n = 0; n < N / 8; ++n) {
        const float2 b = *reinterpret_cast<const float2*>(y + (n * 8 + g) * ld + s * 8 + 2 * t);
#pragma unroll
        for (int m = 0; m < MT; ++m) mma_f32<M>(c[m][n], a[m], b.x, b.y);
      }
    }
  }
}

// The bf16 variant with the X fragments already in registers (the forward keeps its Q tile there:
// it is read once per key tile and would otherwise cost a quarter of the shared-memory traffic).
template <int D, int MT, int N>
__device__ __forceinline__ void gemm_xyt_regs(float (&c)[MT][N / 8][4],
                                              const uint32_t (&xa)[MT][D / 16][4],
                                              const uint16_t* y, int ld, int lane) {
#pragma unroll
  for (int s = 0; s < D / 16; ++s) {
#pragma unroll
    for (int p = 0; p < N / 16; ++p) {
      uint32_t b[4];
      ldmatrix_x4(b,
                  y + (p * 16 + (lane & 7) + 8 * (lane >> 4)) * ld + s * 16 + 8 * ((lane >> 3) & 1));
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        mma_bf16(c[m][2 * p], xa[m][s], b[0], b[1]);
        mma_bf16(c[m][2 * p + 1], xa[m][s], b[2], b[3]);
      }
    }
  }
}

template <int D, int MT>
__device__ __forceinline__ void load_a_regs(uint32_t (&xa)[MT][D / 16][4], const uint16_t* x,
                                            int ld, int lane) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int s = 0; s < D / 16; ++s)
      ldmatrix_x4(xa[m][s], x + (m * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + s * 16 +
                                8 * (lane >> 4));
}

// c[m][d] (MT m16 tiles x D/8 n8 tiles) += P . Y, contracting over N: P (MT*16 x N) in the
// accumulator layout gemm_xyt produced, Y (N rows x D) in shared memory from its first row.
template <MathMode M, int D, int MT, int N>
__device__ __forceinline__ void gemm_py(float (&c)[MT][D / 8][4], const float (&p)[MT][N / 8][4],
                                        const elem_t<M>* y, int ld, int lane) {
  if constexpr (M == MathMode::kBF16) {
#pragma unroll
    for (int j = 0; j < N / 16; ++j) {
      uint32_t a[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        a[m][0] = pack_bf16(p[m][2 * j][0], p[m][2 * j][1]);
        a[m][1] = pack_bf16(p[m][2 * j][2], p[m][2 * j][3]);
        a[m][2] = pack_bf16(p[m][2 * j + 1][0], p[m][2 * j + 1][1]);
        a[m][3] = pack_bf16(p[m][2 * j + 1][2], p[m][2 * j + 1][3]);
      }
#pragma unroll
      for (int q = 0; q < D / 16; ++q) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, y + (j * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + q * 16 +
                                 8 * (lane >> 4));
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma_bf16(c[m][2 * q], a[m], b[0], b[1]);
          mma_bf16(c[m][2 * q + 1], a[m], b[2], b[3]);
        }
      }
    }
  } else {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
      float a[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        // Logical k = t is slot 2t, k = t + 4 is slot 2t + 1: the accumulator's own columns.
        a[m][0] = p[m][j][0];
        a[m][1] = p[m][j][2];
        a[m][2] = p[m][j][1];
        a[m][3] = p[m][j][3];
      }
      const elem_t<M>* y0 = y + (j * 8 + 2 * t) * ld + g;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const float b0 = y0[n * 8], b1 = y0[ld + n * 8];
#pragma unroll
        for (int m = 0; m < MT; ++m) mma_f32<M>(c[m][n], a[m], b0, b1);
      }
    }
  }
}

template <int MT, int N>
__device__ __forceinline__ void zero(float (&c)[MT][N][4]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < N; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) c[m][n][i] = 0.f;
}

// --- operands ------------------------------------------------------------------------------------
// A (B, H, L, d) view: element (b, h, l, j) at data + b * batch + h * head + l * row + j, strides
// in elements, each a multiple of 16 bytes (attention_operand_ok in ndarray/backend.h).
struct Operand {
  void* data;
  int64_t batch, head;
  int row;  // below 2^31 (attention_operand_ok)
};

// The rows of one (batch item, head) of an operand: row l starts at p + l * pitch. Positions and
// the pitch fit in 32 bits, so an address is one wide multiply-add, and a pitch takes one register
// in the kernels' loops (spills appeared at 64 bits in the Hopper forward at head dim 64).
template <typename E>
struct Rows {
  E* p;
  int pitch;
  __device__ __forceinline__ E* at(int64_t l) const {
    return p + static_cast<int64_t>(static_cast<int>(l)) * pitch;
  }
};

// Batch item b, head h of x; E is const for the inputs.
template <typename E>
__device__ __forceinline__ Rows<E> rows_of(const Operand& x, int64_t b, int h) {
  return {static_cast<E*>(x.data) + b * x.batch + h * x.head, x.row};
}

// The same from bh = b * heads + h, for the epilogues: only bh then stays live through a
// kernel's main loop, where registers are tightest (the Hopper forward at head dim 64 and dK/dV
// at 128 spilled with b and h kept).
template <typename E>
__device__ __forceinline__ Rows<E> rows_at(const Operand& x, int64_t bh, int heads) {
  const int64_t b = bh / heads;
  return rows_of<E>(x, b, static_cast<int>(bh - b * heads));
}

// --- tile loads ----------------------------------------------------------------------------------
// Copies 64 rows into a shared tile of width D (row stride ld) with cp.async; row j is the d
// elements of src's row pos_j = row_pos(j), or zeros when row_pos(j) < 0; columns d .. D - 1 are
// zeros.
template <typename E, int D, int NT, typename RowPos>
__device__ __forceinline__ void load_tile(E* dst, int ld, Rows<const E> src, int d,
                                          RowPos row_pos) {
  constexpr int kChunks = D * int(sizeof(E)) / 16;  // 16-byte chunks per row
  constexpr int kPer = sizeof(E) == 2 ? 8 : 4;       // elements per chunk
  for (int c = threadIdx.x; c < kTile * kChunks; c += NT) {
    const int row = c / kChunks, col = (c % kChunks) * kPer;
    const int64_t pos = col < d ? row_pos(row) : -1;
    const E* s = pos >= 0 ? src.at(pos) + col : src.p;
    cp_async16(dst + row * ld + col, s, pos >= 0 ? 16 : 0);
  }
}

// --- walking a layout's CSR lists ------------------------------------------------------------------
// One secondary tile: up to four slot groups of `size` = min(b, 64) positions each. Group i holds
// positions start[i] .. start[i] + size - 1 (start -1: empty group) and is kept by the primary
// layout rows whose bits are set in bits[i] (bit g: the CTA's g-th layout row of b positions).
struct SlotTile {
  int start[kMaxGroups];
  int bits[kMaxGroups];
  bool flagged;  // the layout marked a block of this tile as needing element masking
};

// Picks a[i] for a run-time i without indexing a register array (which would go to local memory).
__device__ __forceinline__ int pick(const int (&a)[kMaxGroups], int i) {
  int r = a[0];
#pragma unroll
  for (int k = 1; k < kMaxGroups; ++k) r = i == k ? a[k] : r;
  return r;
}

// Walks the kept secondary blocks of the primary layout rows a CTA covers (the CTA's 64 primary
// positions starting at p0), tile by tile. ptr/idx/flags are one CSR (row or transposed) with
// num_primary_blocks rows per layout head; head_row0 = layout head * (num_primary_blocks + 1).
class TileCursor {
 public:
  __device__ void init(const int32_t* ptr, const int32_t* idx, const int32_t* flags,
                       int64_t head_row0, int num_primary_blocks, int block_size, int64_t p0) {
    idx_ = idx;
    flags_ = flags;
    b_ = block_size;
    groups_ = b_ >= kTile ? 1 : kTile / b_;
    units_ = b_ >= kTile ? b_ / kTile : 1;
    unit_ = 0;
    const int first = static_cast<int>(p0 / b_);
#pragma unroll
    for (int g = 0; g < kMaxGroups; ++g) {
      const int row = first + g;
      const bool ok = g < groups_ && row < num_primary_blocks;
      cur_[g] = ok ? ptr[head_row0 + row] : 0;
      end_[g] = ok ? ptr[head_row0 + row + 1] : 0;
    }
  }

  // Fills t with the next tile; false when every list is exhausted.
  __device__ bool next(SlotTile& t) {
    if (groups_ == 1) {
      // One group of 64 slots: only group 0 of t is ever read (slot j is in group j / 64).
      if (cur_[0] >= end_[0]) return false;
      t.start[0] = idx_[cur_[0]] * b_ + unit_ * kTile;
      t.bits[0] = 1;
      t.flagged = flags_[cur_[0]] != 0;
      if (++unit_ == units_) {
        unit_ = 0;
        ++cur_[0];
      }
      return true;
    }
#pragma unroll
    for (int i = 0; i < kMaxGroups; ++i) {
      t.start[i] = -1;
      t.bits[i] = 0;
    }
    t.flagged = false;
    // Small blocks: merge the sorted lists of the G layout rows, G distinct blocks per tile.
    bool any = false;
#pragma unroll
    for (int i = 0; i < kMaxGroups; ++i) {
      if (i >= groups_) break;
      int lo = INT32_MAX;
#pragma unroll
      for (int g = 0; g < kMaxGroups; ++g)
        if (cur_[g] < end_[g]) lo = min(lo, idx_[cur_[g]]);
      if (lo == INT32_MAX) break;
      any = true;
      int bits = 0;
#pragma unroll
      for (int g = 0; g < kMaxGroups; ++g) {
        if (cur_[g] < end_[g] && idx_[cur_[g]] == lo) {
          bits |= 1 << g;
          t.flagged |= flags_[cur_[g]] != 0;
          ++cur_[g];
        }
      }
      t.start[i] = lo * b_;
      t.bits[i] = bits;
    }
    return any;
  }

  __device__ int group_size() const { return b_ >= kTile ? kTile : b_; }

 private:
  const int32_t* idx_;
  const int32_t* flags_;
  int b_, groups_, units_, unit_;
  int cur_[kMaxGroups], end_[kMaxGroups];
};

// The secondary position of slot j of tile t (-1 for an empty group), group size gs.
__device__ __forceinline__ int64_t slot_pos(const SlotTile& t, int j, int gs) {
  const int start = pick(t.start, j / gs);
  return start < 0 ? -1 : int64_t(start) + j % gs;
}

// A cursor over the row CSR (transposed = false: key tiles of a query tile) or the transposed
// CSR (true: query tiles of a key tile) of layout head h, for the tile starting at position p0.
__device__ __forceinline__ void open_cursor(TileCursor& c, const BlockLayoutRef& L, int h,
                                            int64_t p0, bool transposed) {
  const int lh = L.layout_heads == 1 ? 0 : h;
  if (transposed)
    c.init(L.col_ptr, L.row_idx, L.t_block_flags, int64_t(lh) * (L.num_k_blocks + 1),
           L.num_k_blocks, L.block_size, p0);
  else
    c.init(L.row_ptr, L.col_idx, L.block_flags, int64_t(lh) * (L.num_q_blocks + 1),
           L.num_q_blocks, L.block_size, p0);
}

// Loads the rows slot tile st gathers (positions below `limit`) from x and y (rows of d elements)
// into two consecutive kTile x LD shared-memory tiles starting at dst.
template <typename E, int D, int NT>
__device__ __forceinline__ void load_slot_pair(E* dst, int ld, Rows<const E> x, Rows<const E> y,
                                               int d, const SlotTile& st, int gs, int64_t limit) {
  auto pos = [&](int j) -> int64_t {
    const int64_t p = slot_pos(st, j, gs);
    return p < limit ? p : -1;
  };
  load_tile<E, D, NT>(dst, ld, x, d, pos);
  load_tile<E, D, NT>(dst + kTile * ld, ld, y, d, pos);
}

// Whether secondary tile st (group size gs) needs element masking for the primary tile at p0:
// the layout flagged one of its blocks, it gathers small blocks, it crosses the causal diagonal,
// or it runs past sec_len.
__device__ __forceinline__ bool tile_needs_mask(const SlotTile& st, int gs, int64_t p0,
                                                int64_t sec_len, bool causal,
                                                bool primary_is_query) {
  const int64_t s0 = st.start[0];
  const bool diagonal = primary_is_query ? s0 + kTile - 1 > p0 : p0 + kTile - 1 > s0;
  return st.flagged || gs < kTile || (causal && diagonal) || s0 + kTile > sec_len;
}

// Sets s (accumulator layout: MT m16 tiles x N/8 n8 tiles of this warp) to `fill` wherever primary
// row (p0 + row0 + r) may not see slot (col0 + c) of tile st: an empty group, a position past
// sec_len, a group the row's layout row does not keep, or, if causal, a key after the query.
template <int MT, int N>
__device__ __forceinline__ void apply_mask(float (&s)[MT][N / 8][4], const SlotTile& st, int gs,
                                           int64_t p0, int row0, int col0, int64_t sec_len,
                                           bool causal, bool primary_is_query, float fill,
                                           int lane) {
  const int g = lane >> 2, t = lane & 3;
  if (gs == kTile) {
    // One run of 64 positions from s0 (every row keeps it): slot c is position s0 + c, and the
    // checks reduce to 32-bit compares of c against the tile's end and the diagonal offset
    // d = p0 - s0 (clamped: |c - row| < 64, so any |d| >= 128 decides the same way).
    const int64_t s0 = st.start[0];
    const int lim = static_cast<int>(max(int64_t(0), min(sec_len - s0, int64_t(kTile))));
    const int d = static_cast<int>(max(int64_t(-2 * kTile), min(p0 - s0, int64_t(2 * kTile))));
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < N / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = row0 + m * 16 + g + 8 * (e >> 1);
          const int col = col0 + n * 8 + 2 * t + (e & 1);
          bool ok = col < lim;
          if (causal) ok = ok && (primary_is_query ? col <= row + d : row + d <= col);
          if (!ok) s[m][n][e] = fill;
        }
    return;
  }
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < N / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + m * 16 + g + 8 * (e >> 1);
        const int col = col0 + n * 8 + 2 * t + (e & 1);
        const int64_t ppos = p0 + row;
        const int64_t spos = slot_pos(st, col, gs);
        const int sub = gs < kTile ? row / gs : 0;
        bool ok = spos >= 0 && spos < sec_len && ((pick(st.bits, col / gs) >> sub) & 1);
        if (causal) ok = ok && (primary_is_query ? spos <= ppos : ppos <= spos);
        if (!ok) s[m][n][e] = fill;
      }
}

// --- kernel arguments and epilogue pieces shared by the mma.sync and the Hopper (sm90/) kernels --
// B = batch, H = heads, Lq / Lk = query / key lengths, d = head dim. q (B, H, Lq, d), k, v
// (B, H, Lk, d), out (B, H, Lq, d), lse (B, H, Lq) float32.
struct FwdArgs {
  Operand q, k, v, out;
  float* lse;  // compact (B, H, Lq)
  BlockLayoutRef layout;
  int heads;
  int d;  // head dim: the row length of q, k, v and out
  int64_t lq, lk, q_offset;
  int first_tile;    // the tile holding absolute position q_offset
  int tiles;         // query tiles in the grid: first_tile .. first_tile + tiles - 1
  float scale_log2;  // scale * log2(e): scores in log2 units
};

struct BwdArgs {
  Operand q, k, v, dout, dq, dk, dv;
  const float* lse;    // compact (B, H, Lq)
  const float* delta;  // compact (B, H, Lq)
  BlockLayoutRef layout;
  int heads;
  int d;  // head dim: the row length of q, k, v and their gradients
  int64_t lq, lk;
  int q_tiles, k_tiles;  // ceil(lq / 64), ceil(lk / 64)
  float scale;       // dK, dQ = scale * (dS^T Q, dS K)
  float scale_log2;  // scale * log2(e)
};

// Which tile of which head and batch item a CTA owns. Every kernel's grid is one-dimensional,
// tiles x heads x batch CTAs, enumerated through the layout's work order (q_order / k_order in
// BlockLayoutRef; entry = layout head * tiles + tile, heaviest first): the CTA's position in the
// order is blockIdx.x / reps and its batch item (and head, when all heads share one layout)
// blockIdx.x % reps, so every head's and batch item's longest rows launch before any shorter
// one. Without an order (forward with q_offset > 0) the tiles run last-first.
struct CtaTile {
  int tile;    // absolute 64-position tile
  int h;       // head
  int64_t b;   // batch item
  int64_t bh;  // b * heads + h: the row of the compact statistics (lse, delta)
};
__device__ __forceinline__ CtaTile cta_tile(const int32_t* order, int tiles, int first_tile,
                                            int heads, int layout_heads) {
  const bool per_head = order != nullptr && layout_heads > 1;
  const unsigned entries = per_head ? unsigned(tiles) * unsigned(heads) : unsigned(tiles);
  const unsigned reps = gridDim.x / entries;
  const unsigned pos = blockIdx.x / reps, rep = blockIdx.x % reps;
  CtaTile c;
  if (order == nullptr) {
    c.tile = first_tile + tiles - 1 - static_cast<int>(pos);
  } else {
    const int e = __ldg(order + pos);
    c.tile = e % tiles;
    if (per_head) {
      c.h = e / tiles;
      c.b = rep;
      c.bh = int64_t(rep) * heads + c.h;
      return c;
    }
  }
  c.h = static_cast<int>(rep % unsigned(heads));
  c.b = rep / unsigned(heads);
  c.bh = rep;
  return c;
}

// The grid of cta_tile: tiles x heads x batch CTAs in one dimension.
inline dim3 tile_grid(int64_t tiles, int64_t heads, int64_t batch) {
  const int64_t n = tiles * heads * batch;
  NEEDLE_CHECK(n <= int64_t(0x7fffffff), ValueError,
               "cuda block_sparse_attention: at most 2^31 - 1 tiles x heads x batch, got ", n);
  return dim3(static_cast<unsigned>(n));
}

// The row logsumexp in log2 units for exp2; a row with no visible key (lse = -inf) gets +inf so
// that any score gives p = 0 rather than inf.
__device__ __forceinline__ float lse_log2(float lse) {
  return lse == -INFINITY ? INFINITY : lse * kLog2e;
}

// Stores the accumulator rows (layout of gemm_xyt) this lane holds, times mul, to rows p0 + row0 +
// ... of dst (row length d <= D, a multiple of 8), skipping rows at or past len.
template <typename E, int D, int MT>
__device__ __forceinline__ void store_rows(Rows<E> dst, int d, int64_t p0, int row0, int64_t len,
                                           const float (&c)[MT][D / 8][4], float mul, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t r = p0 + row0 + m * 16 + g + 8 * i;
      if (r >= len) continue;
      E* row = dst.at(r) + 2 * t;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        if (n * 8 >= d) break;
        const float x = c[m][n][2 * i] * mul, y = c[m][n][2 * i + 1] * mul;
        if constexpr (sizeof(E) == 2) {
          *reinterpret_cast<uint32_t*>(row + n * 8) = pack_bf16(x, y);
        } else {
          *reinterpret_cast<float2*>(row + n * 8) = make_float2(x, y);
        }
      }
    }
}

// One step of the forward's online softmax over a tile of N scores per row: s (accumulator
// layout, masked entries -inf) times `scale` are the scores in log2 units; scale must be > 0 (the
// maximum is taken before scaling). Rescales what o, l accumulated by 2^(m_old - m_new), skipped
// when no row of the warp changed its maximum, and turns s into the probabilities
// 2^(s * scale - m_new) for the P.V product (one FFMA and one EX2 each). A row that has seen only
// masked keys keeps m = -inf and subtracts 0 instead, so it stays at p = 0, never NaN. l holds
// per-lane partial sums: the four lanes of a row are added once, in store_output.
template <int MT, int N, int D>
__device__ __forceinline__ void online_softmax(float (&s)[MT][N / 8][4], float (&o)[MT][D / 8][4],
                                               float (&mrow)[MT][2], float (&lrow)[MT][2],
                                               float scale) {
  float alpha[MT][2];
  bool rescale = false;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < N / 8; ++n) mx = fmaxf(mx, fmaxf(s[m][n][2 * i], s[m][n][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(mrow[m][i], mx * scale);
      const float base = m_new == -INFINITY ? 0.f : m_new;
      alpha[m][i] = exp2_approx(mrow[m][i] - base);
      rescale |= m_new != mrow[m][i];
      mrow[m][i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < N / 8; ++n) {
        s[m][n][2 * i] = exp2_approx(fmaf(s[m][n][2 * i], scale, -base));
        s[m][n][2 * i + 1] = exp2_approx(fmaf(s[m][n][2 * i + 1], scale, -base));
        sum += s[m][n][2 * i] + s[m][n][2 * i + 1];
      }
      lrow[m][i] = lrow[m][i] * alpha[m][i] + sum;
    }
  if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
          o[m][n][2 * i] *= alpha[m][i];
          o[m][n][2 * i + 1] *= alpha[m][i];
        }
  }
}

// The forward's epilogue: O = o / l and lse = (m + log2 l) ln 2 for the rows of query tile q0
// (absolute positions) this lane holds, rows of d <= D elements; rows before q_offset or past Lq
// are not stored.
template <typename E, int D, int MT>
__device__ __forceinline__ void store_output(const FwdArgs& a, int d, const CtaTile& ct, int64_t q0,
                                             int row0, const float (&o)[MT][D / 8][4],
                                             const float (&mrow)[MT][2], const float (&lrow)[MT][2],
                                             int lane) {
  const Rows<E> out = rows_at<E>(a.out, ct.bh, a.heads);
  float* lse = a.lse + ct.bh * a.lq;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float l = lrow[m][i];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int64_t r = q0 + row0 + m * 16 + g + 8 * i - a.q_offset;
      if (r < 0 || r >= a.lq) continue;
      E* orow = out.at(r) + 2 * t;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        if (n * 8 >= d) break;
        const float x = o[m][n][2 * i] * inv, y = o[m][n][2 * i + 1] * inv;
        if constexpr (sizeof(E) == 2) {
          *reinterpret_cast<uint32_t*>(orow + n * 8) = pack_bf16(x, y);
        } else {
          *reinterpret_cast<float2*>(orow + n * 8) = make_float2(x, y);
        }
      }
      if (t == 0) lse[r] = l > 0.f ? (mrow[m][i] + __log2f(l)) * kLn2 : -INFINITY;
    }
}

// --- the main loop and the backward's probability pieces, shared by every kernel --------------
// Walks the cursor's tiles through a two-stage cp.async pipeline: load(tile, stage) issues the
// copies of a tile into a stage, body(tile, stage) runs once that stage has landed and the whole
// CTA may read it, while the next tile's copies are in flight. visible() runs in each thread
// between its wait and the barrier (the Hopper kernels fence the async proxy there). Copies the
// caller issued before and committed form the oldest group and have landed by the first body.
template <typename Load, typename Visible, typename Body>
__device__ __forceinline__ void for_each_tile(TileCursor& cursor, Load load, Visible visible,
                                              Body body) {
  SlotTile cur{}, nxt{};
  bool has = cursor.next(cur);
  if (has) load(cur, 0);
  cp_async_commit();
  for (int stage = 0; has; stage ^= 1) {
    const bool has_next = cursor.next(nxt);
    if (has_next) {
      load(nxt, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    visible();
    __syncthreads();
    body(cur, stage);
    __syncthreads();  // the next step overwrites this stage
    cur = nxt;
    has = has_next;
  }
  cp_async_wait<0>();  // a CTA with no kept tile still has its own copies in flight
}

// The dK/dV kernels' per-slot statistics of query tile st (group size gs): the logsumexp in log2
// units at dst[0, 64) and delta at dst[64, 128); a slot past lq gets lse +inf (p = 0), delta 0.
// Plain stores: the stage was released by the barrier that ended its last use.
__device__ __forceinline__ void load_slot_stats(float* dst, const SlotTile& st, int gs,
                                                const float* lse, const float* delta, int64_t lq,
                                                int nthreads) {
  for (int j = threadIdx.x; j < kTile; j += nthreads) {
    const int64_t sp = slot_pos(st, j, gs);
    const int64_t p = sp < lq ? sp : -1;
    dst[j] = p >= 0 ? lse_log2(lse[p]) : INFINITY;
    dst[kTile + j] = p >= 0 ? delta[p] : 0.f;
  }
}

// The dQ kernels' statistics of the rows (g, g + 8 of each m-tile) this lane holds, for query
// rows r0 + row0 + ...; rows past lq get lse +inf, delta 0.
template <int MT>
__device__ __forceinline__ void load_row_stats(float (&row_lse)[MT][2], float (&row_delta)[MT][2],
                                               const float* lse, const float* delta, int64_t r0,
                                               int row0, int64_t lq, int lane) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t r = r0 + row0 + m * 16 + (lane >> 2) + 8 * i;
      row_lse[m][i] = r < lq ? lse_log2(lse[r]) : INFINITY;
      row_delta[m][i] = r < lq ? delta[r] : 0.f;
    }
}

// Backward probabilities in place, p = 2^(s * scale_log2 - lse): per accumulator row (queries are
// the rows: dQ) or per column from the staged statistics (queries are the columns c0 + ...: dK/dV).
template <int MT, int N>
__device__ __forceinline__ void probs_by_row(float (&p)[MT][N / 8][4],
                                             const float (&row_lse)[MT][2], float scale_log2) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < N / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        p[m][n][e] = exp2_approx(p[m][n][e] * scale_log2 - row_lse[m][e >> 1]);
}
template <int MT, int N>
__device__ __forceinline__ void probs_by_col(float (&p)[MT][N / 8][4], const float* col_lse,
                                             int c0, float scale_log2, int lane) {
#pragma unroll
  for (int n = 0; n < N / 8; ++n) {
    // Columns 2t and 2t + 1 together (col is even, the stage arrays 8-byte aligned).
    const float2 l = *reinterpret_cast<const float2*>(col_lse + c0 + n * 8 + 2 * (lane & 3));
    const float l0 = l.x, l1 = l.y;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      p[m][n][0] = exp2_approx(p[m][n][0] * scale_log2 - l0);
      p[m][n][1] = exp2_approx(p[m][n][1] * scale_log2 - l1);
      p[m][n][2] = exp2_approx(p[m][n][2] * scale_log2 - l0);
      p[m][n][3] = exp2_approx(p[m][n][3] * scale_log2 - l1);
    }
  }
}

// dS = P * (dP - delta) in place over dp, delta per row or per column as above.
template <int MT, int N>
__device__ __forceinline__ void dscores_by_row(float (&dp)[MT][N / 8][4],
                                               const float (&p)[MT][N / 8][4],
                                               const float (&row_delta)[MT][2]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < N / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[m][n][e] = p[m][n][e] * (dp[m][n][e] - row_delta[m][e >> 1]);
}
template <int MT, int N>
__device__ __forceinline__ void dscores_by_col(float (&dp)[MT][N / 8][4],
                                               const float (&p)[MT][N / 8][4],
                                               const float* col_delta, int c0, int lane) {
#pragma unroll
  for (int n = 0; n < N / 8; ++n) {
    const float2 d = *reinterpret_cast<const float2*>(col_delta + c0 + n * 8 + 2 * (lane & 3));
    const float d0 = d.x, d1 = d.y;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      dp[m][n][0] = p[m][n][0] * (dp[m][n][0] - d0);
      dp[m][n][1] = p[m][n][1] * (dp[m][n][1] - d1);
      dp[m][n][2] = p[m][n][2] * (dp[m][n][2] - d0);
      dp[m][n][3] = p[m][n][3] * (dp[m][n][3] - d1);
    }
  }
}

// --- host side -----------------------------------------------------------------------------------
// Validates shapes, dtypes and the layout against the contract in backend.h; throws otherwise.
// Each operand's strides are checked as it becomes an Operand (operand()).
void check_attention_args(const char* op, const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                          const BlockLayoutRef& layout);
// x as an Operand, after check_attention_operand (backend.h): `like`'s shape and dtype, passing
// attention_operand_ok.
Operand operand(const char* op, const char* name, const ArrayRef& x, const ArrayRef& like);
// The math mode for the inputs' dtype and the current matmul precision.
MathMode math_mode_for(DType dtype);

}  // namespace needle::cuda::attn
