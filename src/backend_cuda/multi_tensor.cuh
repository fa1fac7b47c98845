// Launches over lists of arrays (torch's multi_tensor_apply): one launch covers a batch of
// arrays, each cut into chunks of a fixed number of elements, one block per chunk. The batch
// travels in the kernel's parameters (at most 4 KB), so no table is copied to the device and a
// list of 76 parameters takes a few launches instead of 76.
#pragma once
#include <cstdint>
#include <vector>

#include "backend_cuda/cuda_common.cuh"

namespace needle::cuda {

// Items (per-array arguments, each with an element count `n`) of one launch, and the first block
// of each: item i owns blocks [first_block[i], first_block[i + 1]).
template <typename Item>
struct TensorBatch {
  static constexpr int kMax = static_cast<int>((4000 - 16) / (sizeof(Item) + sizeof(int64_t)));
  int count;
  int64_t first_block[kMax + 1];
  Item items[kMax];
};

// The item that owns this block (binary search of first_block).
template <typename Item>
__device__ __forceinline__ int batch_item(const TensorBatch<Item>& b) {
  int lo = 0, hi = b.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (b.first_block[mid] <= static_cast<int64_t>(blockIdx.x))
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// The item that owns this block (in blocks of `chunk` elements), and the [begin, end) of its
// elements the block covers. adamw.cu still computes the same range inline: through this helper
// its kernels' PTX changes (the same instructions in another order), not yet run on a GPU.
template <typename Item>
struct BlockChunk {
  const Item& item;
  int64_t begin, end;
};
template <typename Item>
__device__ __forceinline__ BlockChunk<Item> block_chunk(const TensorBatch<Item>& b, int64_t chunk) {
  const int i = batch_item(b);
  const Item& it = b.items[i];
  const int64_t begin = (static_cast<int64_t>(blockIdx.x) - b.first_block[i]) * chunk;
  return {it, begin, begin + chunk < it.n ? begin + chunk : it.n};
}

// Cuts `items` (arrays of `chunk` elements per block; empty ones skipped) into batches and calls
// launch(batch, blocks, first) for each: `blocks` is the batch's grid, `first` the number of
// blocks launched before it (for outputs indexed by block across launches). Returns the total.
template <typename Item, typename Launch>
int64_t launch_batches(const std::vector<Item>& items, int64_t chunk, Launch launch) {
  static_assert(sizeof(TensorBatch<Item>) <= 4096, "kernel parameters are limited to 4 KB");
  TensorBatch<Item> batch;
  batch.count = 0;
  batch.first_block[0] = 0;
  int64_t done = 0;
  auto flush = [&] {
    if (batch.count == 0) return;
    const int64_t blocks = batch.first_block[batch.count];
    launch(batch, static_cast<unsigned>(blocks), done);
    done += blocks;
    batch.count = 0;
  };
  for (const Item& item : items) {
    if (item.n == 0) continue;
    const int64_t blocks = ceil_div(item.n, chunk);
    if (batch.count == TensorBatch<Item>::kMax ||
        batch.first_block[batch.count] + blocks > INT32_MAX)
      flush();
    batch.items[batch.count] = item;
    batch.first_block[batch.count + 1] = batch.first_block[batch.count] + blocks;
    ++batch.count;
  }
  flush();
  return done;
}

}  // namespace needle::cuda
