// BlockSparseLayout: the named patterns, validation of user layouts, and the per-call kernel
// arrays (row CSR, transposed CSR, masking flags) cached per device (see the header).
#include "nn/block_sparse_layout.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#include "ndarray/error.h"

namespace needle::nn {

struct BlockSparseLayout::Data {
  int64_t block_size = 64, q_len = 0, k_len = 0, q_blocks = 0, k_blocks = 0, heads = 1;
  bool causal = true;
  std::string name;
  std::vector<int32_t> row_ptr, col_idx;  // heads * (q_blocks + 1) absolute offsets; kept kb
};

// The kernel arrays of one call geometry. Flags depend on the lengths only through the block
// counts and whether the last query / key block is partial, so decoding one token at a time
// uploads new arrays once per block boundary, not once per token.
struct BlockSparseLayout::Cache {
  struct Arrays {
    int64_t q_blocks = 0, k_blocks = 0;
    NDArray row_ptr, col_idx, block_flags, col_ptr, row_idx, t_block_flags, q_order, k_order;
  };
  // (device type, device index, query blocks, key blocks, query tiles, key tiles, q_pad, k_pad)
  using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, bool, bool>;
  std::mutex mutex;
  std::map<Key, Arrays> entries;
};

namespace {

// The CUDA kernels' work order over one side of the layout (see q_order in BlockLayoutRef): ptr is
// a per-head CSR offset array (heads runs of blocks + 1 entries) over blocks of size b; a kernel
// tile is `tile` consecutive positions, and its work is the number of (position, kept key or
// query position) pairs it covers. Returns entry = head * tiles + t for every pair, heaviest
// first; equal work keeps the later tile first (causal rows grow with the tile index).
std::vector<int32_t> tile_work_order(const std::vector<int32_t>& ptr, int64_t heads, int64_t blocks,
                                     int64_t b, int64_t tiles, int64_t tile) {
  std::vector<int64_t> work(static_cast<size_t>(heads * tiles), 0);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const size_t r = static_cast<size_t>(h * (blocks + 1) + blk);
      const int64_t kept = ptr[r + 1] - ptr[r];
      for (int64_t t = blk * b / tile; t < tiles && t * tile < (blk + 1) * b; ++t) {
        const int64_t overlap =
            std::min((blk + 1) * b, (t + 1) * tile) - std::max(blk * b, t * tile);
        work[static_cast<size_t>(h * tiles + t)] += kept * b * overlap;
      }
    }
  std::vector<int32_t> order(work.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) {
    const int64_t wx = work[static_cast<size_t>(x)], wy = work[static_cast<size_t>(y)];
    return wx != wy ? wx > wy : x % tiles > y % tiles;
  });
  return order;
}

void check_geometry(const char* what, int64_t block_size, int64_t q_len, int64_t k_len) {
  NEEDLE_CHECK(block_size == 16 || block_size == 32 || block_size == 64 || block_size == 128,
               ValueError, "BlockSparseLayout.", what,
               ": expected block_size in {16, 32, 64, 128}, got ", block_size);
  NEEDLE_CHECK(q_len > 0 && k_len > 0, ValueError, "BlockSparseLayout.", what,
               ": expected positive sequence lengths, got q_len=", q_len, ", k_len=", k_len);
  // int32 CSR offsets: QB * KB per head must stay far below 2^31. Each count is bounded first,
  // so that the product cannot overflow.
  const int64_t qb = ceil_div(q_len, block_size), kb = ceil_div(k_len, block_size);
  constexpr int64_t kMaxBlocks = int64_t(1) << 28;
  NEEDLE_CHECK(qb <= kMaxBlocks && kb <= kMaxBlocks && qb * kb <= kMaxBlocks, ValueError,
               "BlockSparseLayout.", what, ": at most 2^28 blocks per head, got ", qb, " x ", kb);
}

void check_heads(const char* what, int64_t heads, int64_t q_len, int64_t k_len,
                 int64_t block_size) {
  NEEDLE_CHECK(heads >= 1, ValueError, "BlockSparseLayout.", what,
               ": expected at least one head, got ", heads);
  // The CSR offsets run on over the heads, in int32.
  const int64_t per_head = ceil_div(q_len, block_size) * ceil_div(k_len, block_size);
  NEEDLE_CHECK(heads <= std::numeric_limits<int32_t>::max() / per_head, ValueError,
               "BlockSparseLayout.", what, ": at most 2^31 blocks over all heads, got ", heads,
               " heads of ", per_head, " blocks");
}

void check_nonnegative(const char* what, const char* arg, int64_t value) {
  NEEDLE_CHECK(value >= 0, ValueError, "BlockSparseLayout.", what, ": expected ", arg,
               " >= 0, got ", value);
}

// splitmix64: a tiny, fully specified generator, so random layouts match across platforms.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

BlockSparseLayout::BlockSparseLayout(std::shared_ptr<const Data> data)
    : data_(std::move(data)), cache_(std::make_shared<Cache>()) {}

// --- construction
// ---------------------------------------------------------------------------------

BlockSparseLayout BlockSparseLayout::from_block_mask(const std::vector<uint8_t>& mask,
                                                     int64_t heads, int64_t rows, int64_t cols,
                                                     int64_t block_size, int64_t q_len,
                                                     int64_t k_len, bool causal) {
  check_geometry("from_block_mask", block_size, q_len, k_len);
  const int64_t qb_count = ceil_div(q_len, block_size), kb_count = ceil_div(k_len, block_size);
  check_heads("from_block_mask", heads, q_len, k_len, block_size);
  NEEDLE_CHECK(rows == qb_count && cols == kb_count, ValueError,
               "BlockSparseLayout.from_block_mask: expected a block mask of shape (", qb_count,
               ", ", kb_count, ") for q_len ", q_len, ", k_len ", k_len, " and block_size ",
               block_size, ", got (", rows, ", ", cols, ")");
  NEEDLE_CHECK(static_cast<int64_t>(mask.size()) == heads * rows * cols, ValueError,
               "BlockSparseLayout.from_block_mask: expected ", heads * rows * cols,
               " mask values, got ", mask.size());
  auto d = std::make_shared<Data>();
  d->block_size = block_size, d->q_len = q_len, d->k_len = k_len;
  d->q_blocks = qb_count, d->k_blocks = kb_count, d->heads = heads, d->causal = causal;
  d->name = "from_block_mask";
  d->row_ptr.reserve(static_cast<size_t>(heads * (qb_count + 1)));
  for (int64_t h = 0; h < heads; ++h) {
    d->row_ptr.push_back(static_cast<int32_t>(d->col_idx.size()));
    for (int64_t qb = 0; qb < qb_count; ++qb) {
      // Causal: query positions of block qb reach qb * b + b - 1, so blocks kb > qb see nothing.
      const int64_t last = causal ? std::min(qb, kb_count - 1) : kb_count - 1;
      for (int64_t kb = 0; kb <= last; ++kb)
        if (mask[static_cast<size_t>((h * rows + qb) * cols + kb)])
          d->col_idx.push_back(static_cast<int32_t>(kb));
      d->row_ptr.push_back(static_cast<int32_t>(d->col_idx.size()));
    }
  }
  return BlockSparseLayout(std::move(d));
}

BlockSparseLayout BlockSparseLayout::from_csr(const std::vector<int64_t>& row_ptr,
                                              const std::vector<int64_t>& col_idx,
                                              int64_t block_size, int64_t q_len, int64_t k_len,
                                              bool causal, int64_t heads) {
  check_geometry("from_csr", block_size, q_len, k_len);
  check_heads("from_csr", heads, q_len, k_len, block_size);
  const int64_t qb_count = ceil_div(q_len, block_size), kb_count = ceil_div(k_len, block_size);
  NEEDLE_CHECK(static_cast<int64_t>(row_ptr.size()) == heads * (qb_count + 1), ValueError,
               "BlockSparseLayout.from_csr: expected row_ptr of length ", heads * (qb_count + 1),
               " (", heads, " head(s) x (", qb_count, " query blocks + 1)), got ", row_ptr.size());
  const int64_t nnz = static_cast<int64_t>(col_idx.size());
  std::vector<uint8_t> mask(static_cast<size_t>(heads * qb_count * kb_count), 0);
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t base = h * (qb_count + 1);
    const int64_t head_start = h == 0 ? 0 : row_ptr[base - 1];
    NEEDLE_CHECK(row_ptr[base] == head_start, ValueError,
                 "BlockSparseLayout.from_csr: expected "
                 "row_ptr[",
                 base, "] == ", head_start, " (head ", h,
                 " starts where the previous "
                 "head ends; offsets are absolute), got ",
                 row_ptr[base]);
    for (int64_t qb = 0; qb < qb_count; ++qb) {
      const int64_t begin = row_ptr[base + qb], end = row_ptr[base + qb + 1];
      NEEDLE_CHECK(begin <= end && end <= nnz, ValueError,
                   "BlockSparseLayout.from_csr: expected "
                   "non-decreasing row_ptr within [0, ",
                   nnz, "] (len(col_idx)), got row_ptr[", base + qb, "]=", begin, ", row_ptr[",
                   base + qb + 1, "]=", end);
      for (int64_t e = begin; e < end; ++e) {
        const int64_t kb = col_idx[static_cast<size_t>(e)];
        NEEDLE_CHECK(kb >= 0 && kb < kb_count, ValueError,
                     "BlockSparseLayout.from_csr: expected "
                     "col_idx in [0, ",
                     kb_count, ") (key blocks), got col_idx[", e, "]=", kb, " in row ", qb,
                     " of head ", h);
        NEEDLE_CHECK(e == begin || kb > col_idx[static_cast<size_t>(e - 1)], ValueError,
                     "BlockSparseLayout.from_csr: expected strictly increasing col_idx within a "
                     "row (sorted, no duplicates), got ",
                     col_idx[static_cast<size_t>(e - 1)], " then ", kb, " in row ", qb, " of head ",
                     h);
        mask[static_cast<size_t>((h * qb_count + qb) * kb_count + kb)] = 1;
      }
    }
  }
  NEEDLE_CHECK(row_ptr.back() == nnz, ValueError,
               "BlockSparseLayout.from_csr: expected the last "
               "row_ptr to equal len(col_idx) = ",
               nnz, ", got ", row_ptr.back());
  return renamed(from_block_mask(mask, heads, qb_count, kb_count, block_size, q_len, k_len, causal),
                 "from_csr");
}

BlockSparseLayout BlockSparseLayout::renamed(const BlockSparseLayout& layout, std::string name) {
  auto d = std::make_shared<Data>(*layout.data_);
  d->name = std::move(name);
  return BlockSparseLayout(std::move(d));
}

namespace {

// A named single-head pattern over seq_len: keep(qb, kb) decides each block before the causal
// trim; returns the (n, n) block mask.
template <typename Keep>
std::vector<uint8_t> pattern_mask(const char* what, int64_t seq_len, int64_t block_size,
                                  const Keep& keep) {
  check_geometry(what, block_size, seq_len, seq_len);
  const int64_t n = ceil_div(seq_len, block_size);
  std::vector<uint8_t> mask(static_cast<size_t>(n * n));
  for (int64_t qb = 0; qb < n; ++qb)
    for (int64_t kb = 0; kb < n; ++kb) mask[static_cast<size_t>(qb * n + kb)] = keep(qb, kb);
  return mask;
}

}  // namespace

BlockSparseLayout BlockSparseLayout::pattern(const std::vector<uint8_t>& mask, int64_t seq_len,
                                             int64_t block_size, bool causal, std::string label) {
  const int64_t n = ceil_div(seq_len, block_size);
  return renamed(from_block_mask(mask, 1, n, n, block_size, seq_len, seq_len, causal),
                 std::move(label));
}

BlockSparseLayout BlockSparseLayout::dense(int64_t seq_len, int64_t block_size, bool causal) {
  return pattern(pattern_mask("dense", seq_len, block_size, [](int64_t, int64_t) { return true; }),
                 seq_len, block_size, causal, "dense");
}

BlockSparseLayout BlockSparseLayout::local(int64_t seq_len, int64_t block_size, int64_t window,
                                           bool causal) {
  check_nonnegative("local", "window", window);
  return pattern(pattern_mask("local", seq_len, block_size,
                              [&](int64_t qb, int64_t kb) { return std::abs(qb - kb) <= window; }),
                 seq_len, block_size, causal, "local(window=" + std::to_string(window) + ")");
}

BlockSparseLayout BlockSparseLayout::global(int64_t seq_len, int64_t block_size,
                                            int64_t global_blocks, bool causal) {
  check_nonnegative("global_", "global_blocks", global_blocks);
  return pattern(pattern_mask("global_", seq_len, block_size,
                              [&](int64_t qb, int64_t kb) {
                                return qb < global_blocks || kb < global_blocks || qb == kb;
                              }),
                 seq_len, block_size, causal,
                 "global(global_blocks=" + std::to_string(global_blocks) + ")");
}

BlockSparseLayout BlockSparseLayout::strided(int64_t seq_len, int64_t block_size, int64_t stride,
                                             bool causal) {
  NEEDLE_CHECK(stride >= 1, ValueError, "BlockSparseLayout.strided: expected stride >= 1, got ",
               stride);
  return pattern(
      pattern_mask("strided", seq_len, block_size,
                   [&](int64_t qb, int64_t kb) { return std::abs(qb - kb) % stride == 0; }),
      seq_len, block_size, causal, "strided(stride=" + std::to_string(stride) + ")");
}

BlockSparseLayout BlockSparseLayout::mixed(int64_t seq_len, int64_t block_size, int64_t window,
                                           int64_t global_blocks, int64_t stride, bool causal) {
  check_nonnegative("mixed", "window", window);
  check_nonnegative("mixed", "global_blocks", global_blocks);
  NEEDLE_CHECK(stride >= 1, ValueError, "BlockSparseLayout.mixed: expected stride >= 1, got ",
               stride);
  return pattern(pattern_mask("mixed", seq_len, block_size,
                              [&](int64_t qb, int64_t kb) {
                                return std::abs(qb - kb) <= window || qb < global_blocks ||
                                       kb < global_blocks || std::abs(qb - kb) % stride == 0;
                              }),
                 seq_len, block_size, causal,
                 "mixed(window=" + std::to_string(window) + ", global_blocks=" +
                     std::to_string(global_blocks) + ", stride=" + std::to_string(stride) + ")");
}

BlockSparseLayout BlockSparseLayout::random(int64_t seq_len, int64_t block_size,
                                            int64_t blocks_per_row, uint64_t seed, bool causal,
                                            int64_t num_heads) {
  check_geometry("random", block_size, seq_len, seq_len);
  check_nonnegative("random", "blocks_per_row", blocks_per_row);
  check_heads("random", num_heads, seq_len, seq_len, block_size);
  const int64_t n = ceil_div(seq_len, block_size);
  std::vector<uint8_t> mask(static_cast<size_t>(num_heads * n * n), 0);
  std::vector<int64_t> candidates;
  for (int64_t h = 0; h < num_heads; ++h) {
    uint64_t state = seed + static_cast<uint64_t>(h);
    for (int64_t qb = 0; qb < n; ++qb) {
      uint8_t* row = &mask[static_cast<size_t>((h * n + qb) * n)];
      row[qb] = 1;
      candidates.clear();
      for (int64_t kb = 0; kb < (causal ? qb : n); ++kb)
        if (kb != qb) candidates.push_back(kb);
      // Partial Fisher-Yates: the first `take` entries become a uniform sample.
      const int64_t take = std::min<int64_t>(blocks_per_row, candidates.size());
      for (int64_t i = 0; i < take; ++i) {
        const int64_t left = static_cast<int64_t>(candidates.size()) - i;
        const int64_t j = i + static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(left));
        std::swap(candidates[i], candidates[j]);
        row[candidates[i]] = 1;
      }
    }
  }
  return renamed(from_block_mask(mask, num_heads, n, n, block_size, seq_len, seq_len, causal),
                 "random(blocks_per_row=" + std::to_string(blocks_per_row) +
                     ", seed=" + std::to_string(seed) + ")");
}

BlockSparseLayout BlockSparseLayout::per_head(const std::vector<BlockSparseLayout>& layouts) {
  NEEDLE_CHECK(!layouts.empty(), ValueError,
               "BlockSparseLayout.per_head: expected at least one layout, got none");
  const Data& first = *layouts[0].data_;
  std::vector<uint8_t> mask;
  for (size_t i = 0; i < layouts.size(); ++i) {
    const Data& d = *layouts[i].data_;
    NEEDLE_CHECK(d.heads == 1, ValueError,
                 "BlockSparseLayout.per_head: expected single-head "
                 "layouts, layout ",
                 i, " has ", d.heads, " heads");
    NEEDLE_CHECK(d.block_size == first.block_size && d.q_len == first.q_len &&
                     d.k_len == first.k_len && d.causal == first.causal,
                 ValueError,
                 "BlockSparseLayout.per_head: expected every layout to match layout 0 "
                 "(block_size ",
                 first.block_size, ", q_len ", first.q_len, ", k_len ", first.k_len, ", causal ",
                 first.causal, "), layout ", i, " has block_size ", d.block_size, ", q_len ",
                 d.q_len, ", k_len ", d.k_len, ", causal ", d.causal);
    std::vector<uint8_t> m = layouts[i].block_mask();
    mask.insert(mask.end(), m.begin(), m.end());
  }
  return renamed(
      from_block_mask(mask, static_cast<int64_t>(layouts.size()), first.q_blocks, first.k_blocks,
                      first.block_size, first.q_len, first.k_len, first.causal),
      "per_head");
}

// --- geometry and statistics
// -----------------------------------------------------------------------

int64_t BlockSparseLayout::block_size() const { return data_->block_size; }
int64_t BlockSparseLayout::q_len() const { return data_->q_len; }
int64_t BlockSparseLayout::k_len() const { return data_->k_len; }
int64_t BlockSparseLayout::num_q_blocks() const { return data_->q_blocks; }
int64_t BlockSparseLayout::num_k_blocks() const { return data_->k_blocks; }
int64_t BlockSparseLayout::heads() const { return data_->heads; }
bool BlockSparseLayout::causal() const { return data_->causal; }
int64_t BlockSparseLayout::num_blocks() const {
  return static_cast<int64_t>(data_->col_idx.size());
}
const std::string& BlockSparseLayout::name() const { return data_->name; }
const std::vector<int32_t>& BlockSparseLayout::row_ptr() const { return data_->row_ptr; }
const std::vector<int32_t>& BlockSparseLayout::col_idx() const { return data_->col_idx; }

double BlockSparseLayout::density() const {
  const Data& d = *data_;
  int64_t dense_blocks = 0;
  for (int64_t qb = 0; qb < d.q_blocks; ++qb)
    dense_blocks += d.causal ? std::min(qb + 1, d.k_blocks) : d.k_blocks;
  return static_cast<double>(num_blocks()) / static_cast<double>(d.heads * dense_blocks);
}

std::vector<uint8_t> BlockSparseLayout::block_mask() const {
  const Data& d = *data_;
  std::vector<uint8_t> mask(static_cast<size_t>(d.heads * d.q_blocks * d.k_blocks), 0);
  for (int64_t h = 0; h < d.heads; ++h)
    for (int64_t qb = 0; qb < d.q_blocks; ++qb) {
      const size_t r = static_cast<size_t>(h * (d.q_blocks + 1) + qb);
      for (int32_t e = d.row_ptr[r]; e < d.row_ptr[r + 1]; ++e)
        mask[static_cast<size_t>((h * d.q_blocks + qb) * d.k_blocks + d.col_idx[e])] = 1;
    }
  return mask;
}

std::string BlockSparseLayout::repr() const {
  std::ostringstream os;
  os << "BlockSparseLayout(" << data_->name << ", q_len=" << data_->q_len
     << ", k_len=" << data_->k_len << ", block_size=" << data_->block_size
     << ", causal=" << (data_->causal ? "True" : "False") << ", heads=" << data_->heads
     << ", num_blocks=" << num_blocks() << ", density=" << density() << ")";
  return os.str();
}

// --- kernel arrays
// ---------------------------------------------------------------------------------

BlockLayoutRef BlockSparseLayout::ref(const Device& device, int64_t q_len, int64_t k_len,
                                      int64_t q_offset) const {
  const Data& d = *data_;
  NEEDLE_CHECK(q_len >= 0 && k_len >= 0 && q_offset >= 0, ValueError,
               "block_sparse_attention: expected non-negative lengths and q_offset, got q_len=",
               q_len, ", k_len=", k_len, ", q_offset=", q_offset);
  NEEDLE_CHECK(q_offset + q_len <= d.q_len && k_len <= d.k_len, ValueError,
               "block_sparse_attention: the layout covers ", d.q_len, " query and ", d.k_len,
               " key positions, got queries at positions ", q_offset, "..", q_offset + q_len - 1,
               " and ", k_len, " keys");
  const int64_t b = d.block_size, q_end = q_offset + q_len;
  const int64_t qbc = ceil_div(q_end, b), kbc = ceil_div(k_len, b);
  const bool q_pad = q_end % b != 0, k_pad = k_len % b != 0;
  // The kernels' 64-position tiles (kAttentionTile in backend.h), counted from position 0.
  const int64_t q_tiles = ceil_div(q_end, kAttentionTile);
  const int64_t k_tiles = ceil_div(k_len, kAttentionTile);
  const Cache::Key key{static_cast<int>(device.type), device.index, qbc, kbc, q_tiles, k_tiles,
                       q_pad, k_pad};

  std::lock_guard<std::mutex> lock(cache_->mutex);
  auto it = cache_->entries.find(key);
  if (it == cache_->entries.end()) {
    // Rows past qbc and columns past kbc are cut; a block is flagged when its elements need
    // masking: the causal diagonal, or a partial last query / key block.
    std::vector<int32_t> rp, ci, fl, cp(static_cast<size_t>(d.heads * (kbc + 1))), ri, tf;
    for (int64_t h = 0; h < d.heads; ++h) {
      std::vector<std::vector<std::pair<int32_t, int32_t>>> by_col(static_cast<size_t>(kbc));
      rp.push_back(static_cast<int32_t>(ci.size()));
      for (int64_t qb = 0; qb < qbc; ++qb) {
        const size_t r = static_cast<size_t>(h * (d.q_blocks + 1) + qb);
        for (int32_t e = d.row_ptr[r]; e < d.row_ptr[r + 1]; ++e) {
          const int32_t kb = d.col_idx[e];
          if (kb >= kbc) break;  // sorted: the rest lie past k_len too
          const bool flag =
              (d.causal && kb >= qb) || (k_pad && kb == kbc - 1) || (q_pad && qb == qbc - 1);
          ci.push_back(kb);
          fl.push_back(flag);
          by_col[static_cast<size_t>(kb)].emplace_back(static_cast<int32_t>(qb), flag);
        }
        rp.push_back(static_cast<int32_t>(ci.size()));
      }
      for (int64_t kb = 0; kb < kbc; ++kb) {
        cp[static_cast<size_t>(h * (kbc + 1) + kb)] = static_cast<int32_t>(ri.size());
        for (const auto& [qb, flag] : by_col[static_cast<size_t>(kb)]) {
          ri.push_back(qb);
          tf.push_back(flag);
        }
      }
      cp[static_cast<size_t>(h * (kbc + 1) + kbc)] = static_cast<int32_t>(ri.size());
    }
    auto upload = [&](const std::vector<int32_t>& v) {
      return NDArray::from_host(v.data(), {static_cast<int64_t>(v.size())}, DType::Int32, device);
    };
    Cache::Arrays arrays;
    arrays.q_blocks = qbc, arrays.k_blocks = kbc;
    arrays.row_ptr = upload(rp), arrays.col_idx = upload(ci), arrays.block_flags = upload(fl);
    arrays.col_ptr = upload(cp), arrays.row_idx = upload(ri), arrays.t_block_flags = upload(tf);
    arrays.q_order = upload(tile_work_order(rp, d.heads, qbc, b, q_tiles, kAttentionTile));
    arrays.k_order = upload(tile_work_order(cp, d.heads, kbc, b, k_tiles, kAttentionTile));
    it = cache_->entries.emplace(key, std::move(arrays)).first;
  }
  const Cache::Arrays& a = it->second;
  BlockLayoutRef ref;
  ref.block_size = static_cast<int32_t>(b);
  ref.q_len = q_len, ref.k_len = k_len, ref.q_offset = q_offset;
  ref.num_q_blocks = static_cast<int32_t>(a.q_blocks);
  ref.num_k_blocks = static_cast<int32_t>(a.k_blocks);
  ref.layout_heads = static_cast<int32_t>(d.heads);
  ref.causal = d.causal;
  auto ptr = [](const NDArray& x) { return static_cast<const int32_t*>(x.data_ptr()); };
  ref.row_ptr = ptr(a.row_ptr), ref.col_idx = ptr(a.col_idx), ref.block_flags = ptr(a.block_flags);
  ref.col_ptr = ptr(a.col_ptr), ref.row_idx = ptr(a.row_idx);
  ref.t_block_flags = ptr(a.t_block_flags);
  ref.q_order = q_offset == 0 ? ptr(a.q_order) : nullptr;
  ref.k_order = ptr(a.k_order);
  return ref;
}

}  // namespace needle::nn
