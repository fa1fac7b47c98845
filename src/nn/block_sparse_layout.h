// BlockSparseLayout: which (query-block, key-block) pairs block-sparse attention computes.
// b = block_size, QB = ceil(q_len / b) query blocks, KB = ceil(k_len / b) key blocks, LH = layout
// heads (1: shared by every attention head, or one layout per head). The kept pairs are stored
// as a row CSR per head; the kernels also get the transposed CSR and per-block masking flags
// (see BlockLayoutRef in ndarray/backend.h), built for the lengths of each call and cached per
// device, so a training step with fixed lengths never copies the layout to the device again.
//
// Every named pattern keeps the diagonal block, so with causal masking no query row is empty.
// Causal layouts drop every block above the diagonal (kb > qb): positions are absolute, and key
// j is visible to query i iff j <= i.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ndarray/ndarray.h"

namespace needle::nn {

class BlockSparseLayout {
 public:
  // --- named patterns over a seq_len x seq_len attention (docs/block_sparse.md has pictures) ----
  // Every block (the causal lower triangle when causal).
  static BlockSparseLayout dense(int64_t seq_len, int64_t block_size = 64, bool causal = true);
  // A band: kb kept iff |qb - kb| <= window.
  static BlockSparseLayout local(int64_t seq_len, int64_t block_size = 64, int64_t window = 1,
                                 bool causal = true);
  // Longformer/BigBird global tokens: kb kept iff qb < global_blocks or kb < global_blocks or
  // kb == qb.
  static BlockSparseLayout global(int64_t seq_len, int64_t block_size = 64,
                                  int64_t global_blocks = 1, bool causal = true);
  // Sparse Transformer: kb kept iff |qb - kb| % stride == 0 (the diagonal included).
  static BlockSparseLayout strided(int64_t seq_len, int64_t block_size = 64, int64_t stride = 4,
                                   bool causal = true);
  // The union of local(window), global(global_blocks) and strided(stride). The default window is
  // 3, wider than local's 1: with window 1 (64-128 tokens of local context per query at b = 64)
  // Pythia-70M at L = 2048 trained 0.076 nats behind dense (issue #9).
  static BlockSparseLayout mixed(int64_t seq_len, int64_t block_size = 64, int64_t window = 3,
                                 int64_t global_blocks = 1, int64_t stride = 4, bool causal = true);
  // BigBird random blocks: the diagonal plus `blocks_per_row` distinct key blocks drawn uniformly
  // (without replacement) from the other allowed ones (kb < qb when causal), from a splitmix64
  // stream keyed by seed, so the pattern is the same on every platform. num_heads > 1 draws one
  // pattern per head (head h uses seed + h).
  static BlockSparseLayout random(int64_t seq_len, int64_t block_size = 64,
                                  int64_t blocks_per_row = 3, uint64_t seed = 0, bool causal = true,
                                  int64_t num_heads = 1);

  // --- user layouts
  // -------------------------------------------------------------------------------- mask: heads *
  // QB * KB values, nonzero = kept (row-major (heads, QB, KB)). Causal layouts drop the kept blocks
  // above the diagonal.
  static BlockSparseLayout from_block_mask(const std::vector<uint8_t>& mask, int64_t heads,
                                           int64_t rows, int64_t cols, int64_t block_size,
                                           int64_t q_len, int64_t k_len, bool causal);
  // row_ptr: heads * (QB + 1) absolute offsets into col_idx (each head's run starts where the
  // previous ended); col_idx sorted ascending within a row, no duplicates, in [0, KB).
  static BlockSparseLayout from_csr(const std::vector<int64_t>& row_ptr,
                                    const std::vector<int64_t>& col_idx, int64_t block_size,
                                    int64_t q_len, int64_t k_len, bool causal, int64_t heads = 1);
  // One layout per head from single-head layouts of equal geometry.
  static BlockSparseLayout per_head(const std::vector<BlockSparseLayout>& heads);

  // --- geometry and statistics
  // ---------------------------------------------------------------------
  int64_t block_size() const;
  int64_t q_len() const;
  int64_t k_len() const;
  int64_t num_q_blocks() const;  // QB
  int64_t num_k_blocks() const;  // KB
  int64_t heads() const;         // LH
  bool causal() const;
  int64_t num_blocks() const;  // kept blocks, summed over layout heads
  // Kept blocks / the blocks of the dense layout with the same causality (averaged over heads).
  double density() const;
  const std::string& name() const;  // "local(window=1)", "from_block_mask", ...
  std::string repr() const;
  // heads * QB * KB bytes, 1 = kept.
  std::vector<uint8_t> block_mask() const;
  const std::vector<int32_t>& row_ptr() const;
  const std::vector<int32_t>& col_idx() const;

  // The kernels' view for one call: q holds absolute positions q_offset .. q_offset + q_len - 1,
  // k/v hold k_len keys. Needs q_offset + q_len <= this->q_len() and k_len <= this->k_len().
  // The arrays are built for the call's block counts and partial-block padding and cached on
  // `device`; they live as long as this layout (or any copy of it).
  BlockLayoutRef ref(const Device& device, int64_t q_len, int64_t k_len,
                     int64_t q_offset = 0) const;

 private:
  struct Data;
  struct Cache;
  explicit BlockSparseLayout(std::shared_ptr<const Data> data);
  static BlockSparseLayout renamed(const BlockSparseLayout& layout, std::string name);
  static BlockSparseLayout pattern(const std::vector<uint8_t>& mask, int64_t seq_len,
                                   int64_t block_size, bool causal, std::string label);
  std::shared_ptr<const Data> data_;
  std::shared_ptr<Cache> cache_;
};

}  // namespace needle::nn
