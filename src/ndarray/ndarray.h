// NDArray: a dtype, a device, and shape/strides/offset over a shared, reference-counted buffer.
// Every view (reshape of compact data, permute, broadcast_to, slicing, squeeze, as_strided) is
// metadata only; compact() copies only when the layout requires it. All arithmetic goes through
// the device's kernel table (backend.h), so this file holds the view logic once for all devices.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ndarray/backend.h"
#include "ndarray/device.h"
#include "ndarray/dtype.h"
#include "ndarray/ops.h"

namespace needle {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

// Raw device memory owned by one or more NDArrays.
class Buffer {
 public:
  Buffer(size_t nbytes, Device device);
  // Host memory a device backend is still copying into (NDArray::to(cpu(), true)): ready() waits
  // for the copy, once.
  Buffer(std::unique_ptr<PendingHostCopy> pending, size_t nbytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return ptr_; }
  size_t nbytes() const { return nbytes_; }
  const Device& device() const { return device_; }
  // Page-locked host memory owned by a device backend (what a non-blocking copy returns).
  bool pinned() const { return pending_ != nullptr; }
  // Waits until the memory holds its values: a no-op except after a non-blocking copy.
  void ready() const {
    if (pending_ && !landed_.load(std::memory_order_acquire)) wait_for_copy();
  }

 private:
  void wait_for_copy() const;
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  std::unique_ptr<PendingHostCopy> pending_;
  mutable std::atomic<bool> landed_{false};
};

// A Python-style scalar: its kind decides promotion ("weak" scalars, see dtype.h).
struct Scalar {
  enum class Kind : uint8_t { Bool, Int, Float } kind = Kind::Float;
  double value = 0.0;
  // An int64's exact value; `value` rounds it beyond 2**53.
  std::optional<int64_t> exact_int;
  Scalar() = default;
  Scalar(double v) : kind(Kind::Float), value(v) {}
  Scalar(float v) : kind(Kind::Float), value(v) {}
  Scalar(int v) : kind(Kind::Int), value(v), exact_int(v) {}
  Scalar(int64_t v) : kind(Kind::Int), value(static_cast<double>(v)), exact_int(v) {}
  Scalar(bool v) : kind(Kind::Bool), value(v ? 1.0 : 0.0) {}
  // Whether `value` differs from exact_int: integer arrays then take exact_int (binary ops, full,
  // setitem), as a kernel's float64 scalar would round it.
  bool rounds_int() const {
    return exact_int && (value >= 0x1p63 || static_cast<int64_t>(value) != *exact_int);
  }
  // Whether an array of dtype `dt` holds this value (truncated toward zero, as a cast would, for a
  // float on an integer dtype): always for floating and bool dtypes; never for NaN or infinity on
  // an integer dtype.
  bool fits(DType dt) const;
  // ValueError naming `op` unless fits(dt): writing the value would be undefined behaviour (the
  // cast of an out-of-range double to an int), so it is refused as torch refuses it.
  void check_fits(DType dt, const char* op) const;
  // The value as Python prints it: 9007199254740993, 1e+30, nan, True.
  std::string repr() const;
};
// The dtype an operation between an array of type `dt` and scalar `s` computes in.
DType promote_with_scalar(DType dt, const Scalar& s);
// The dtype of a one-element array made from `s` alone: bool, int64 or float32 (torch.tensor's).
DType default_dtype(const Scalar& s);

// One component of an index expression: x[1, 2:5:2, None, ...].
struct Index {
  enum class Kind : uint8_t { Integer, Slice, NewAxis, Ellipsis } kind = Kind::Ellipsis;
  int64_t integer = 0;
  std::optional<int64_t> start, stop, step;
  static Index at(int64_t i) {
    Index r;
    r.kind = Kind::Integer;
    r.integer = i;
    return r;
  }
  static Index slice(std::optional<int64_t> start = {}, std::optional<int64_t> stop = {},
                     std::optional<int64_t> step = {}) {
    Index r;
    r.kind = Kind::Slice;
    r.start = start;
    r.stop = stop;
    r.step = step;
    return r;
  }
  static Index new_axis() {
    Index r;
    r.kind = Kind::NewAxis;
    return r;
  }
  static Index ellipsis() { return Index(); }
};

class NDArray {
 public:
  NDArray() = default;  // an undefined array; defined() is false

  // --- creation ----------------------------------------------------------------------------------
  static NDArray empty(const Shape& shape, DType dtype = DType::Float32, Device device = cpu());
  static NDArray full(const Shape& shape, double value, DType dtype = DType::Float32,
                      Device device = cpu());
  static NDArray zeros(const Shape& shape, DType dtype = DType::Float32, Device device = cpu());
  static NDArray ones(const Shape& shape, DType dtype = DType::Float32, Device device = cpu());
  static NDArray scalar(double value, DType dtype = DType::Float32, Device device = cpu());
  // full() of a Scalar: exact for an int a float64 would round (Scalar::rounds_int).
  static NDArray full(const Shape& shape, const Scalar& value, DType dtype, Device device = cpu());
  // Values start, start + step, ... below stop (above it for a negative step).
  static NDArray arange(double start, double stop, double step = 1.0, DType dtype = DType::Int64,
                        Device device = cpu());
  // arange counted in int64, exact beyond 2**53 (where float64 steps round).
  static NDArray arange_int(int64_t start, int64_t stop, int64_t step = 1,
                            DType dtype = DType::Int64, Device device = cpu());
  static NDArray eye(int64_t n, int64_t m = -1, DType dtype = DType::Float32,
                     Device device = cpu());
  // Copies nbytes = numel * itemsize from host memory laid out compactly.
  static NDArray from_host(const void* data, const Shape& shape, DType dtype,
                           Device device = cpu());
  // Wraps an existing buffer without copying.
  static NDArray from_buffer(std::shared_ptr<Buffer> buffer, const Shape& shape,
                             const Strides& strides, int64_t offset, DType dtype);
  // Seeded random arrays drawn from the default generator (see random.h).
  static NDArray rand(const Shape& shape, DType dtype = DType::Float32, Device device = cpu());
  static NDArray randn(const Shape& shape, DType dtype = DType::Float32, Device device = cpu());
  static NDArray uniform(const Shape& shape, double low, double high, DType dtype = DType::Float32,
                         Device device = cpu());
  static NDArray normal(const Shape& shape, double mean, double std, DType dtype = DType::Float32,
                        Device device = cpu());
  static NDArray bernoulli(const Shape& shape, double p, DType dtype = DType::Float32,
                           Device device = cpu());

  // --- metadata ----------------------------------------------------------------------------------
  bool defined() const { return buffer_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const;
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  int64_t size(int dim) const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * itemsize(dtype_); }
  bool is_compact() const;
  void* data_ptr() const;  // address of element 0
  const std::shared_ptr<Buffer>& buffer() const { return buffer_; }
  ArrayRef ref() const;  // the kernel descriptor (throws if ndim > kMaxDims)
  const Backend& backend() const;

  // --- views (no copy) -------------------------------------------------------------------------------
  NDArray view(const Shape& shape) const;     // compact-compatible reshape; -1 allowed; else error
  NDArray reshape(const Shape& shape) const;  // a view when possible, else a compact copy
  NDArray permute(const std::vector<int>& dims) const;
  NDArray transpose(int d0, int d1) const;
  NDArray broadcast_to(const Shape& shape) const;
  NDArray expand(const Shape& shape) const;  // broadcast_to with -1 meaning "keep"
  NDArray squeeze() const;
  NDArray squeeze(int dim) const;
  NDArray unsqueeze(int dim) const;
  NDArray as_strided(const Shape& shape, const Strides& strides, int64_t offset) const;
  NDArray slice(int dim, std::optional<int64_t> start, std::optional<int64_t> stop,
                int64_t step = 1) const;
  NDArray select(int dim, int64_t index) const;  // removes dim
  NDArray getitem(const std::vector<Index>& index) const;
  NDArray flatten(int start_dim = 0, int end_dim = -1) const;

  // --- copies ------------------------------------------------------------------------------------
  NDArray compact() const;  // *this when already compact
  NDArray clone() const;    // always a fresh compact copy
  // non_blocking: a copy from a GPU to the CPU is queued, not waited for; the result lives in
  // page-locked memory and waits for the copy on its first use (any read, kernel or copy), and
  // then only for the work queued before the copy. Other copies are the same either way.
  NDArray to(const Device& device, bool non_blocking = false) const;
  NDArray astype(DType dtype) const;  // *this when dtype matches
  // Writes src (broadcast to this view's shape, converted to its dtype) into this view.
  void assign(const NDArray& src) const;
  void fill(double value) const;
  // fill() of a Scalar: exact for an int a float64 would round; ValueError for a value the dtype
  // cannot hold (Scalar::check_fits).
  void fill(const Scalar& value) const;
  void setitem(const std::vector<Index>& index, const NDArray& value) const;
  void setitem(const std::vector<Index>& index, const Scalar& value) const;

  // --- host access (waits for the device) ---------------------------------------------------
  void copy_to_host(void* dst) const;  // compact layout, nbytes() bytes
  double item() const;                 // a one-element array's value
  template <typename T>
  std::vector<T> to_vector() const {
    NDArray c = astype(dtype_of<T>::value);
    std::vector<T> out(static_cast<size_t>(numel()));
    if (!out.empty()) c.copy_to_host(out.data());
    return out;
  }
  std::string repr() const;

 private:
  std::shared_ptr<Buffer> buffer_;
  Shape shape_;
  Strides strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::Float32;
};

Strides compact_strides(const Shape& shape);
int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);
// NumPy broadcasting of two shapes; ValueError naming both shapes when impossible.
Shape broadcast_shapes(const Shape& a, const Shape& b);
// Wraps a possibly negative dim into [0, ndim); IndexError when out of range.
int normalize_dim(int dim, int ndim);
// normalize_dim for an op that indexes the dim itself (size, slice, select, split, index_add):
// a 0-d array has no dim to index, so dim 0 and -1 raise IndexError there, naming `op`.
int normalize_existing_dim(int dim, int ndim, const char* op);
// A slice of a dim of size n by Python's slice.indices() rules (step != 0, negative steps
// included): the first index taken and how many are taken, `step` apart.
struct SliceRange {
  int64_t begin, length;
};
SliceRange slice_range(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                       int64_t step);

// --- elementwise ----------------------------------------------------------------------------------
#define NEEDLE_DECLARE_UNARY(Name, fname, ...) NDArray fname(const NDArray& a);
NEEDLE_UNARY_OPS(NEEDLE_DECLARE_UNARY)
#undef NEEDLE_DECLARE_UNARY
NDArray logical_not(const NDArray& a);
NDArray unary(UnaryOp op, const NDArray& a);

#define NEEDLE_DECLARE_BINARY(Name, fname, ...)             \
  NDArray fname(const NDArray& a, const NDArray& b);        \
  NDArray fname(const NDArray& a, const Scalar& b);         \
  NDArray fname(const Scalar& a, const NDArray& b);
NEEDLE_BINARY_OPS(NEEDLE_DECLARE_BINARY)
#undef NEEDLE_DECLARE_BINARY
NDArray binary(BinaryOp op, const NDArray& a, const NDArray& b);
NDArray binary(BinaryOp op, const NDArray& a, const Scalar& b, bool scalar_first = false);

// dst += src in place, elementwise: src broadcast to dst's shape and converted to dst's dtype; dst
// may be a strided view (the autograd engine gathers slice gradients this way); src may share
// dst's buffer (it is copied first then).
void add_into(const NDArray& dst, const NDArray& src);

NDArray where(const NDArray& cond, const NDArray& a, const NDArray& b);
NDArray where(const NDArray& cond, const NDArray& a, const Scalar& b);
// The result's dtype follows the bounds as a binary op's would: an int tensor clamped by ints
// stays int, by a float becomes float32.
NDArray clamp(const NDArray& a, const std::optional<Scalar>& min, const std::optional<Scalar>& max);

inline NDArray operator+(const NDArray& a, const NDArray& b) { return add(a, b); }
inline NDArray operator-(const NDArray& a, const NDArray& b) { return sub(a, b); }
inline NDArray operator*(const NDArray& a, const NDArray& b) { return mul(a, b); }
inline NDArray operator/(const NDArray& a, const NDArray& b) { return div(a, b); }
inline NDArray operator+(const NDArray& a, const Scalar& b) { return add(a, b); }
inline NDArray operator-(const NDArray& a, const Scalar& b) { return sub(a, b); }
inline NDArray operator*(const NDArray& a, const Scalar& b) { return mul(a, b); }
inline NDArray operator/(const NDArray& a, const Scalar& b) { return div(a, b); }
inline NDArray operator-(const NDArray& a) { return neg(a); }

// --- reductions (dims empty = all dims) -------------------------------------------------------------
// How many elements each output of a reduction over `dims` combines.
int64_t reduced_numel(const Shape& shape, const std::vector<int>& dims);
NDArray reduce(ReduceOp op, const NDArray& a, std::vector<int> dims, bool keepdim);
NDArray sum(const NDArray& a, const std::vector<int>& dims = {}, bool keepdim = false);
NDArray prod(const NDArray& a, const std::vector<int>& dims = {}, bool keepdim = false);
NDArray mean(const NDArray& a, const std::vector<int>& dims = {}, bool keepdim = false);
NDArray max(const NDArray& a, const std::vector<int>& dims = {}, bool keepdim = false);
NDArray min(const NDArray& a, const std::vector<int>& dims = {}, bool keepdim = false);
// Unbiased by default (correction 1), as torch.var.
NDArray var(const NDArray& a, const std::vector<int>& dims = {}, int64_t correction = 1,
            bool keepdim = false);
// Over the flattened array when dim is empty.
NDArray argmax(const NDArray& a, std::optional<int> dim = {}, bool keepdim = false);
NDArray argmin(const NDArray& a, std::optional<int> dim = {}, bool keepdim = false);

// --- linear algebra and row ops -----------------------------------------------------------------------
// NumPy matmul semantics: 1-D operands are promoted and the added dim removed; batch dims broadcast.
NDArray matmul(const NDArray& a, const NDArray& b);
// matmul(a, b) + bias with bias of shape (n) (n = b's last dim) added to every row, in one GEMM
// whose epilogue adds it (a Linear layer's forward); bias is cast to the product's dtype.
NDArray matmul(const NDArray& a, const NDArray& b, const NDArray& bias);
// A Linear layer's parameter gradients from its output gradient g (rows, out) and input x
// (rows, in): returns g^T x (out, in) and, given bias_grad, stores g summed over rows (out) there,
// both in `dtype`: the operands' dtype, or float32 for bfloat16 operands (float32 parameters of an
// autocast region get gradients never rounded to bfloat16). One GEMM, whose epilogue sums the bias
// gradient from the same pass over g where the backend has one.
NDArray linear_param_grads(const NDArray& g, const NDArray& x, DType dtype, NDArray* bias_grad);
NDArray softmax(const NDArray& a, int dim);
NDArray log_softmax(const NDArray& a, int dim);
NDArray logsumexp(const NDArray& a, int dim, bool keepdim = false);

// --- indexing and joining ------------------------------------------------------------------------------
NDArray index_select(const NDArray& a, int dim, const NDArray& index);  // index: int64/int32 1-D
// A copy of `a` with src added at `index` along dim (repeated indices accumulate).
NDArray index_add(const NDArray& a, int dim, const NDArray& index, const NDArray& src);
NDArray embedding(const NDArray& weight, const NDArray& ids);  // ids any shape -> ids.shape + [d]
NDArray concatenate(const std::vector<NDArray>& arrays, int dim = 0);
NDArray stack(const std::vector<NDArray>& arrays, int dim = 0);
std::vector<NDArray> split(const NDArray& a, const std::vector<int64_t>& sizes, int dim = 0);
// torch.split's sizes for split_size `each` along dim `dim` of `shape`: parts of `each`, the last
// one smaller, one empty part for an empty dim; ValueError unless each > 0, IndexError for a 0-d
// shape.
std::vector<int64_t> split_sizes(const Shape& shape, int64_t each, int dim);
std::vector<NDArray> chunk(const NDArray& a, int64_t chunks, int dim = 0);
NDArray flip(const NDArray& a, const std::vector<int>& dims);
// pads[2*i], pads[2*i+1]: before/after amounts for dim i (leading dims first, unlike torch's
// reversed order); constant value.
NDArray pad(const NDArray& a, const std::vector<int64_t>& pads, double value = 0.0);

}  // namespace needle
