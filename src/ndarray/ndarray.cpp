// NDArray storage, creation, metadata, views and copies. Arithmetic lives in ndarray_ops.cpp.
#include "ndarray/ndarray.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "ndarray/error.h"
#include "ndarray/random.h"

namespace needle {

// --- Buffer ---------------------------------------------------------------------------------------

Buffer::Buffer(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (nbytes_ > 0) ptr_ = backend_for(device_).alloc(nbytes_);
}

Buffer::Buffer(std::unique_ptr<PendingHostCopy> pending, size_t nbytes)
    : ptr_(pending->data()), nbytes_(nbytes), device_(cpu()), pending_(std::move(pending)) {}

Buffer::~Buffer() {
  if (pending_) return;  // pending_'s destructor hands the memory back to its backend
  if (ptr_) backend_for(device_).free(ptr_, nbytes_);
}

void Buffer::wait_for_copy() const {
  pending_->wait();
  landed_.store(true, std::memory_order_release);
}

// --- shape helpers --------------------------------------------------------------------------------

Strides compact_strides(const Shape& shape) {
  Strides s(shape.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

int64_t shape_numel(const Shape& shape) {
  // The product of the non-zero dims must fit in int64 (as a compact array's strides do), even
  // when a zero dim makes the array empty; it wrapped before, so (2**62, 4) had 0 elements.
  int64_t n = 1;
  bool empty = false;
  for (int64_t d : shape) {
    if (d == 0) {
      empty = true;
      continue;
    }
    NEEDLE_CHECK(!__builtin_mul_overflow(n, d, &n), ValueError, "invalid shape ", shape_str(shape),
                 ": its number of elements does not fit in int64");
  }
  return empty ? 0 : n;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    NEEDLE_CHECK(da == db || da == 1 || db == 1, ValueError, "shapes ", shape_str(a), " and ",
                 shape_str(b), " cannot be broadcast together (dimension ", i, ": ", da, " vs ",
                 db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

SliceRange slice_range(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                       int64_t step) {
  NEEDLE_CHECK(step != 0, ValueError, "slice step cannot be zero");
  int64_t b, e, len;
  if (step > 0) {
    b = start.value_or(0);
    e = stop.value_or(n);
    if (b < 0) b = std::max<int64_t>(b + n, 0);
    if (e < 0) e = std::max<int64_t>(e + n, 0);
    b = std::min(b, n);
    e = std::min(e, n);
    // Not (e - b + step - 1) / step, which overflowed for a step near 2^63.
    len = e > b ? (e - b - 1) / step + 1 : 0;
  } else {
    b = start.has_value() ? *start : n - 1;
    e = stop.has_value() ? *stop : -1 - n;
    if (b < 0) b = std::max<int64_t>(b + n, -1);
    if (e < 0) e = std::max<int64_t>(e + n, -1);
    b = std::min(b, n - 1);
    e = std::min(e, n - 1);
    // In uint64, as -step overflows for a step of -2^63.
    const uint64_t stride = 0 - static_cast<uint64_t>(step);
    len = b > e ? static_cast<int64_t>(static_cast<uint64_t>(b - e - 1) / stride) + 1 : 0;
  }
  return {b, len};
}

int normalize_dim(int dim, int ndim) {
  int n = std::max(ndim, 1);  // a 0-d array accepts dim 0 and -1, as in PyTorch
  NEEDLE_CHECK(dim >= -n && dim < n, IndexError, "dimension ", dim,
               " is out of range: expected a value in [", -n, ", ", n - 1, "] for a ", ndim,
               "-d array");
  return dim < 0 ? dim + n : dim;
}

int normalize_existing_dim(int dim, int ndim, const char* op) {
  NEEDLE_CHECK(ndim > 0, IndexError, op, ": dimension ", dim,
               " was given, but the array is 0-d (it has no dimensions)");
  return normalize_dim(dim, ndim);
}

// Returns the shape's number of elements, refusing negative dims and a count that overflows.
static int64_t check_shape_valid(const Shape& shape) {
  for (int64_t d : shape)
    NEEDLE_CHECK(d >= 0, ValueError, "invalid shape ", shape_str(shape),
                 ": dimensions must be non-negative");
  return shape_numel(shape);
}

// --- creation -------------------------------------------------------------------------------------

NDArray NDArray::empty(const Shape& shape, DType dtype, Device device) {
  const int64_t numel = check_shape_valid(shape);
  NEEDLE_CHECK(numel <= std::numeric_limits<int64_t>::max() / static_cast<int64_t>(itemsize(dtype)),
               ValueError, "invalid shape ", shape_str(shape), ": ", numel, " elements of ",
               dtype_name(dtype), " take more bytes than fit in int64");
  NDArray a;
  a.buffer_ = std::make_shared<Buffer>(numel * itemsize(dtype), device);
  a.shape_ = shape;
  a.strides_ = compact_strides(shape);
  a.dtype_ = dtype;
  return a;
}

NDArray NDArray::full(const Shape& shape, double value, DType dtype, Device device) {
  NDArray a = empty(shape, dtype, device);
  a.fill(value);
  return a;
}

NDArray NDArray::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
NDArray NDArray::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
NDArray NDArray::scalar(double value, DType dtype, Device device) {
  return full({}, value, dtype, device);
}
NDArray NDArray::full(const Shape& shape, const Scalar& value, DType dtype, Device device) {
  value.check_fits(dtype, "full");
  if (!value.rounds_int() || is_floating(dtype)) return full(shape, value.value, dtype, device);
  // fill() takes a float64; the exact int64 goes through one converted element instead.
  const int64_t exact = *value.exact_int;
  NDArray one = from_host(&exact, {}, DType::Int64, cpu()).astype(dtype).to(device);
  return one.broadcast_to(shape).clone();
}

// n values value_at(0), value_at(1), ... computed on the host as T, then moved and converted. They
// are written into a needle array (not a std::vector), so running out of memory is needle's
// OutOfMemoryError. The values are monotonic: the first and the last must fit an integer dtype.
template <typename T, typename F>
static NDArray host_sequence(int64_t n, const F& value_at, DType dtype, Device device) {
  if (n > 0) {
    Scalar(value_at(0)).check_fits(dtype, "arange");
    Scalar(value_at(n - 1)).check_fits(dtype, "arange");
  }
  NDArray values = NDArray::empty({n}, dtype_of<T>::value, cpu());
  auto* v = static_cast<T*>(values.data_ptr());
  for (int64_t i = 0; i < n; ++i) v[i] = value_at(i);
  return values.to(device).astype(dtype);
}

NDArray NDArray::arange(double start, double stop, double step, DType dtype, Device device) {
  NEEDLE_CHECK(step != 0.0, ValueError, "arange: step must be non-zero");
  NEEDLE_CHECK(std::isfinite(start) && std::isfinite(stop) && std::isfinite(step), ValueError,
               "arange: start, stop and step must be finite, got ", start, ", ", stop, ", ",
               step);
  double count = std::ceil((stop - start) / step);
  // 2**62 float64 values would not fit in int64 bytes anyway; the bound keeps the cast defined.
  NEEDLE_CHECK(count < 0x1p62, ValueError, "arange: start ", start, ", end ", stop, " and step ",
               step, " give ", count, " values, more than an array can hold");
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  return host_sequence<double>(
      n, [&](int64_t i) { return start + static_cast<double>(i) * step; }, dtype, device);
}

NDArray NDArray::arange_int(int64_t start, int64_t stop, int64_t step, DType dtype, Device device) {
  NEEDLE_CHECK(step != 0, ValueError, "arange: step must be non-zero");
  // In 128 bits: stop - start and the values' offsets may pass the int64 range.
  const __int128 diff = static_cast<__int128>(stop) - start, by = step;
  __int128 count = 0;
  if (by > 0 && diff > 0) count = (diff - 1) / by + 1;
  if (by < 0 && diff < 0) count = (-diff - 1) / -by + 1;
  NEEDLE_CHECK(count < (static_cast<__int128>(1) << 62), ValueError, "arange: start ", start,
               ", end ", stop, " and step ", step, " give ", static_cast<double>(count),
               " values, more than an array can hold");
  return host_sequence<int64_t>(
      static_cast<int64_t>(count),
      [&](int64_t i) { return static_cast<int64_t>(start + static_cast<__int128>(i) * by); }, dtype,
      device);
}

NDArray NDArray::eye(int64_t n, int64_t m, DType dtype, Device device) {
  if (m < 0) m = n;
  NEEDLE_CHECK(n >= 0, ValueError, "eye: n must be non-negative, got ", n);
  NDArray a = zeros({n, m}, dtype, device);
  const int64_t diagonal = std::min(n, m);
  if (diagonal > 0) a.as_strided({diagonal}, {m + 1}, 0).fill(1.0);
  return a;
}

NDArray NDArray::from_host(const void* data, const Shape& shape, DType dtype, Device device) {
  NDArray a = empty(shape, dtype, device);
  if (a.nbytes() > 0) a.backend().copy_from_host(a.data_ptr(), data, a.nbytes());
  return a;
}

NDArray NDArray::from_buffer(std::shared_ptr<Buffer> buffer, const Shape& shape,
                             const Strides& strides, int64_t offset, DType dtype) {
  NDArray a;
  a.buffer_ = std::move(buffer);
  a.shape_ = shape;
  a.strides_ = compact_strides(shape);
  a.dtype_ = dtype;
  return a.as_strided(shape, strides, offset);
}

static NDArray random_array(RandomKind kind, const Shape& shape, double p0, double p1, DType dtype,
                            Device device, const char* name) {
  DType gen_dtype = is_floating(dtype) ? dtype : DType::Float32;
  NEEDLE_CHECK(is_floating(dtype) || kind == RandomKind::Bernoulli, TypeError, name,
               ": expected a floating dtype, got ", dtype_name(dtype));
  NDArray a = NDArray::empty(shape, gen_dtype, device);
  // One counter per element is more than any scheme consumes, so streams never overlap.
  uint64_t offset = default_generator().reserve(static_cast<uint64_t>(a.numel()));
  if (a.numel() > 0)
    a.backend().random(kind, a.ref(), default_generator().seed(), offset, p0, p1);
  return a.astype(dtype);
}

NDArray NDArray::rand(const Shape& shape, DType dtype, Device device) {
  return uniform(shape, 0.0, 1.0, dtype, device);
}
NDArray NDArray::randn(const Shape& shape, DType dtype, Device device) {
  return normal(shape, 0.0, 1.0, dtype, device);
}
NDArray NDArray::uniform(const Shape& shape, double low, double high, DType dtype, Device device) {
  return random_array(RandomKind::Uniform, shape, low, high, dtype, device, "uniform");
}
NDArray NDArray::normal(const Shape& shape, double mean, double std, DType dtype, Device device) {
  NEEDLE_CHECK(std >= 0, ValueError, "normal: std must be non-negative, got ", std);
  return random_array(RandomKind::Normal, shape, mean, std, dtype, device, "normal");
}
NDArray NDArray::bernoulli(const Shape& shape, double p, DType dtype, Device device) {
  NEEDLE_CHECK(p >= 0 && p <= 1, ValueError, "bernoulli: p must be in [0, 1], got ", p);
  return random_array(RandomKind::Bernoulli, shape, p, 0.0, dtype, device, "bernoulli");
}

// --- metadata -------------------------------------------------------------------------------------

Device NDArray::device() const {
  NEEDLE_CHECK(defined(), ValueError, "the array is undefined");
  return buffer_->device();
}

int64_t NDArray::numel() const { return shape_numel(shape_); }

int64_t NDArray::size(int dim) const { return shape_[normalize_existing_dim(dim, ndim(), "size")]; }

bool NDArray::is_compact() const {
  int64_t expect = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] == 0) return true;
    if (shape_[i] != 1 && strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

void* NDArray::data_ptr() const {
  NEEDLE_CHECK(defined(), ValueError, "the array is undefined");
  buffer_->ready();  // every access to the elements comes through here
  if (!buffer_->data()) return nullptr;
  return static_cast<char*>(buffer_->data()) + offset_ * static_cast<int64_t>(itemsize(dtype_));
}

ArrayRef NDArray::ref() const {
  NEEDLE_CHECK(ndim() <= kMaxDims, ValueError, "arrays with more than ", kMaxDims,
               " dimensions are not supported by the kernels, got ", ndim());
  ArrayRef r;
  r.data = data_ptr();
  r.dtype = dtype_;
  r.ndim = ndim();
  for (int i = 0; i < r.ndim; ++i) {
    r.shape[i] = shape_[i];
    r.strides[i] = strides_[i];
  }
  return r;
}

const Backend& NDArray::backend() const { return backend_for(device()); }

// --- views ----------------------------------------------------------------------------------------

static Shape infer_shape(const Shape& requested, int64_t numel, const Shape& from) {
  Shape shape = requested;
  int infer = -1;
  Shape known_dims = requested;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      NEEDLE_CHECK(infer < 0, ValueError, "only one dimension can be -1, got ",
                   shape_str(requested));
      infer = static_cast<int>(i);
      known_dims[i] = 1;
    } else {
      NEEDLE_CHECK(shape[i] >= 0, ValueError, "invalid shape ", shape_str(requested));
    }
  }
  int64_t known = shape_numel(known_dims);  // refuses a product that overflows
  if (infer >= 0) {
    NEEDLE_CHECK(known != 0 && numel % known == 0, ValueError, "cannot reshape array of shape ",
                 shape_str(from), " (", numel, " elements) into shape ", shape_str(requested));
    shape[infer] = numel / known;
    known *= shape[infer];
  }
  NEEDLE_CHECK(known == numel, ValueError, "cannot reshape array of shape ", shape_str(from), " (",
               numel, " elements) into shape ", shape_str(requested));
  return shape;
}

// Strides that view (old_shape, old_strides) as new_shape without copying, if any exist
// (PyTorch's computeStride): each run of dims that is contiguous in memory may be re-split.
static bool view_strides(const Shape& old_shape, const Strides& old_strides,
                         const Shape& new_shape, Strides* out) {
  Strides ns(new_shape.size());
  if (shape_numel(old_shape) == 0 || old_shape.empty()) {
    *out = compact_strides(new_shape);
    return true;
  }
  int view_d = static_cast<int>(new_shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int d = static_cast<int>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    if (d == 0 ||
        (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        ns[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return false;
  *out = ns;
  return true;
}

NDArray NDArray::view(const Shape& shape) const {
  Shape ns = infer_shape(shape, numel(), shape_);
  Strides st;
  NEEDLE_CHECK(view_strides(shape_, strides_, ns, &st), ValueError, "cannot view array of shape ",
               shape_str(shape_), " with strides ", shape_str(strides_), " as shape ",
               shape_str(ns), " without a copy: call reshape() (or compact() first)");
  NDArray r = *this;
  r.shape_ = ns;
  r.strides_ = st;
  return r;
}

NDArray NDArray::reshape(const Shape& shape) const {
  Shape ns = infer_shape(shape, numel(), shape_);
  Strides st;
  if (view_strides(shape_, strides_, ns, &st)) return view(ns);
  return compact().view(ns);
}

NDArray NDArray::permute(const std::vector<int>& dims) const {
  NEEDLE_CHECK(static_cast<int>(dims.size()) == ndim(), ValueError, "permute: expected ", ndim(),
               " dims for an array of shape ", shape_str(shape_), ", got ", dims.size());
  std::vector<bool> seen(ndim(), false);
  NDArray r = *this;
  for (int i = 0; i < ndim(); ++i) {
    int d = normalize_dim(dims[i], ndim());
    NEEDLE_CHECK(!seen[d], ValueError, "permute: dim ", d, " repeated");
    seen[d] = true;
    r.shape_[i] = shape_[d];
    r.strides_[i] = strides_[d];
  }
  return r;
}

NDArray NDArray::transpose(int d0, int d1) const {
  if (ndim() < 2 && (d0 == 0 || d0 == -1) && (d1 == 0 || d1 == -1)) return *this;
  std::vector<int> dims(ndim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(d0, ndim())], dims[normalize_dim(d1, ndim())]);
  return permute(dims);
}

NDArray NDArray::broadcast_to(const Shape& shape) const {
  NEEDLE_CHECK(shape.size() >= shape_.size(), ValueError, "cannot broadcast array of shape ",
               shape_str(shape_), " to shape ", shape_str(shape), ": target has fewer dims");
  size_t lead = shape.size() - shape_.size();
  NDArray r = *this;
  r.shape_ = shape;
  r.strides_.assign(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) {
    int64_t have = shape_[i], want = shape[lead + i];
    NEEDLE_CHECK(have == want || have == 1, ValueError, "cannot broadcast array of shape ",
                 shape_str(shape_), " to shape ", shape_str(shape), " (dimension ", lead + i,
                 ": ", have, " vs ", want, ")");
    r.strides_[lead + i] = (have == want) ? strides_[i] : 0;
  }
  check_shape_valid(shape);
  return r;
}

NDArray NDArray::expand(const Shape& shape) const {
  Shape target = shape;
  size_t lead = shape.size() >= shape_.size() ? shape.size() - shape_.size() : 0;
  for (size_t i = 0; i < target.size(); ++i)
    if (target[i] == -1) {
      NEEDLE_CHECK(i >= lead, ValueError, "expand: -1 is not allowed for a new leading dim in ",
                   shape_str(shape));
      target[i] = shape_[i - lead];
    }
  return broadcast_to(target);
}

NDArray NDArray::squeeze() const {
  NDArray r = *this;
  r.shape_.clear();
  r.strides_.clear();
  for (int i = 0; i < ndim(); ++i)
    if (shape_[i] != 1) {
      r.shape_.push_back(shape_[i]);
      r.strides_.push_back(strides_[i]);
    }
  return r;
}

NDArray NDArray::squeeze(int dim) const {
  if (ndim() == 0) {
    normalize_dim(dim, 0);
    return *this;
  }
  int d = normalize_dim(dim, ndim());
  if (shape_[d] != 1) return *this;  // PyTorch semantics: squeezing a non-1 dim is a no-op
  NDArray r = *this;
  r.shape_.erase(r.shape_.begin() + d);
  r.strides_.erase(r.strides_.begin() + d);
  return r;
}

NDArray NDArray::unsqueeze(int dim) const {
  int d = normalize_dim(dim, ndim() + 1);
  NDArray r = *this;
  int64_t stride = d < ndim() ? strides_[d] * shape_[d] : 1;
  r.shape_.insert(r.shape_.begin() + d, 1);
  r.strides_.insert(r.strides_.begin() + d, stride);
  return r;
}

NDArray NDArray::as_strided(const Shape& shape, const Strides& strides, int64_t offset) const {
  NEEDLE_CHECK(shape.size() == strides.size(), ValueError, "as_strided: shape ", shape_str(shape),
               " and strides ", shape_str(strides), " differ in length");
  check_shape_valid(shape);
  int64_t capacity = static_cast<int64_t>(buffer_->nbytes() / itemsize(dtype_));
  if (shape_numel(shape) > 0) {
    int64_t lo = offset, hi = offset;
    bool overflow = false;
    for (size_t i = 0; i < shape.size(); ++i) {
      int64_t span;
      overflow |= __builtin_mul_overflow(shape[i] - 1, strides[i], &span);
      overflow |= __builtin_add_overflow(span < 0 ? lo : hi, span, span < 0 ? &lo : &hi);
    }
    NEEDLE_CHECK(!overflow, ValueError, "as_strided: shape ", shape_str(shape), " and strides ",
                 shape_str(strides), " reach past the int64 range");
    NEEDLE_CHECK(lo >= 0 && hi < capacity, ValueError, "as_strided: shape ", shape_str(shape),
                 ", strides ", shape_str(strides), " and offset ", offset,
                 " reach elements [", lo, ", ", hi, "] outside the buffer of ", capacity,
                 " elements");
  }
  NDArray r = *this;
  r.shape_ = shape;
  r.strides_ = strides;
  r.offset_ = offset;
  return r;
}

NDArray NDArray::slice(int dim, std::optional<int64_t> start, std::optional<int64_t> stop,
                       int64_t step) const {
  int d = normalize_existing_dim(dim, ndim(), "slice");
  const SliceRange range = slice_range(shape_[d], start, stop, step);
  NDArray r = *this;
  if (range.length > 0) r.offset_ += range.begin * strides_[d];
  r.shape_[d] = range.length;
  r.strides_[d] = strides_[d] * step;
  return r;
}

NDArray NDArray::select(int dim, int64_t index) const {
  int d = normalize_existing_dim(dim, ndim(), "select");
  int64_t n = shape_[d];
  NEEDLE_CHECK(index >= -n && index < n, IndexError, "index ", index,
               " is out of bounds for dimension ", d, " with size ", n);
  if (index < 0) index += n;
  NDArray r = *this;
  r.offset_ += index * strides_[d];
  r.shape_.erase(r.shape_.begin() + d);
  r.strides_.erase(r.strides_.begin() + d);
  return r;
}

NDArray NDArray::getitem(const std::vector<Index>& index) const {
  int consumed = 0, ellipses = 0;
  for (const Index& ix : index) {
    if (ix.kind == Index::Kind::Integer || ix.kind == Index::Kind::Slice) ++consumed;
    if (ix.kind == Index::Kind::Ellipsis) ++ellipses;
  }
  NEEDLE_CHECK(ellipses <= 1, IndexError, "an index can only have a single ellipsis ('...')");
  NEEDLE_CHECK(consumed <= ndim(), IndexError, "too many indices for array: array is ", ndim(),
               "-dimensional, but ", consumed, " were indexed");
  NDArray r = *this;
  int d = 0;  // current dim of r
  for (const Index& ix : index) {
    switch (ix.kind) {
      case Index::Kind::Integer: r = r.select(d, ix.integer); break;
      case Index::Kind::Slice: r = r.slice(d, ix.start, ix.stop, ix.step.value_or(1)); ++d; break;
      case Index::Kind::NewAxis: r = r.unsqueeze(d); ++d; break;
      case Index::Kind::Ellipsis: d += ndim() - consumed; break;
    }
  }
  return r;
}

NDArray NDArray::flatten(int start_dim, int end_dim) const {
  if (ndim() == 0) return reshape({1});
  int s = normalize_dim(start_dim, ndim()), e = normalize_dim(end_dim, ndim());
  NEEDLE_CHECK(s <= e, ValueError, "flatten: start_dim ", s, " is after end_dim ", e);
  Shape ns(shape_.begin(), shape_.begin() + s);
  int64_t merged = 1;
  for (int i = s; i <= e; ++i) merged *= shape_[i];
  ns.push_back(merged);
  ns.insert(ns.end(), shape_.begin() + e + 1, shape_.end());
  return reshape(ns);
}

// --- copies ---------------------------------------------------------------------------------------

NDArray NDArray::compact() const {
  if (is_compact()) return *this;
  return clone();
}

NDArray NDArray::clone() const {
  NDArray out = empty(shape_, dtype_, device());
  if (numel() > 0) backend().copy(ref(), out.ref());
  return out;
}

NDArray NDArray::to(const Device& target, bool non_blocking) const {
  Device here = device();
  if (here == target) return *this;
  NDArray src = compact();
  if (non_blocking && target.is_cpu() && src.nbytes() > 0 && src.backend().copy_to_host_async) {
    auto host = std::make_shared<Buffer>(
        src.backend().copy_to_host_async(src.data_ptr(), src.nbytes()), src.nbytes());
    return from_buffer(std::move(host), shape_, compact_strides(shape_), 0, dtype_);
  }
  NDArray out = empty(shape_, dtype_, target);
  if (out.nbytes() == 0) return out;
  if (here.is_cpu()) {
    out.backend().copy_from_host(out.data_ptr(), src.data_ptr(), out.nbytes());
  } else if (target.is_cpu()) {
    src.backend().copy_to_host(out.data_ptr(), src.data_ptr(), out.nbytes());
  } else {
    return src.to(cpu()).to(target);
  }
  return out;
}

NDArray NDArray::astype(DType dtype) const {
  if (dtype == dtype_) return *this;
  NDArray out = empty(shape_, dtype, device());
  if (numel() > 0) backend().copy(ref(), out.ref());
  return out;
}

static bool shares_memory(const NDArray& a, const NDArray& b) {
  return a.defined() && b.defined() && a.buffer() == b.buffer();
}

void NDArray::assign(const NDArray& value) const {
  NDArray src = value.device() == device() ? value : value.to(device());
  if (shares_memory(src, *this)) src = src.clone();  // the copy kernel needs disjoint operands
  src = src.broadcast_to(shape_);
  if (numel() > 0) backend().copy(src.ref(), ref());
}

void NDArray::fill(double value) const {
  if (numel() > 0) backend().fill(ref(), value);
}

void NDArray::setitem(const std::vector<Index>& index, const NDArray& value) const {
  getitem(index).assign(value);
}

void NDArray::fill(const Scalar& value) const {
  value.check_fits(dtype_, "fill_");
  if (value.rounds_int() && !is_floating(dtype_))
    assign(full({}, value, dtype_, device()));
  else
    fill(value.value);
}

void NDArray::setitem(const std::vector<Index>& index, const Scalar& value) const {
  getitem(index).fill(value);
}

// --- host access ----------------------------------------------------------------------------------

void NDArray::copy_to_host(void* dst) const {
  NDArray c = compact();
  if (c.nbytes() > 0) c.backend().copy_to_host(dst, c.data_ptr(), c.nbytes());
}

double NDArray::item() const {
  NEEDLE_CHECK(numel() == 1, ValueError, "item(): expected an array with one element, got shape ",
               shape_str(shape_), " (", numel(), " elements)");
  return to_vector<double>()[0];
}

// Integer dtypes print from int64 values (a double rounds them beyond 2**53), the rest from
// doubles.
static void format_value(std::ostringstream& os, int64_t v, DType) { os << v; }
static void format_value(std::ostringstream& os, double v, DType dt) {
  if (dt == DType::Bool) {
    os << (v != 0 ? "True" : "False");
  } else if (std::isnan(v)) {
    os << "nan";  // as Python and torch print it, whatever its sign bit ("-nan" from printf)
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    os << buf;
    if (std::isfinite(v) && std::string(buf).find_first_of(".en") == std::string::npos) os << ".";
  }
}

template <typename T>
static void format_rec(std::ostringstream& os, const std::vector<T>& v, const Shape& shape,
                       const Strides& strides, int dim, int64_t base, DType dt, bool summarise,
                       int indent) {
  if (dim == static_cast<int>(shape.size())) {
    format_value(os, v[base], dt);
    return;
  }
  os << "[";
  int64_t n = shape[dim];
  const int64_t edge = 3;
  for (int64_t i = 0; i < n; ++i) {
    if (summarise && n > 2 * edge && i == edge) {
      os << "...";
      i = n - edge - 1;
      os << (dim + 1 == static_cast<int>(shape.size()) ? ", " : ",\n" + std::string(indent + 1, ' '));
      continue;
    }
    format_rec(os, v, shape, strides, dim + 1, base + i * strides[dim], dt, summarise, indent + 1);
    if (i + 1 < n)
      os << (dim + 1 == static_cast<int>(shape.size()) ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}

std::string NDArray::repr() const {
  if (!defined()) return "NDArray(undefined)";
  std::ostringstream os;
  os << "NDArray(";
  auto format = [&](const auto& values) {
    format_rec(os, values, shape_, compact_strides(shape_), 0, 0, dtype_, numel() > 1000, 8);
  };
  if (numel() == 0)
    os << "[]";
  else if (is_integral(dtype_))
    format(to_vector<int64_t>());
  else
    format(to_vector<double>());
  os << ", shape=" << shape_str(shape_) << ", dtype=" << dtype_name(dtype_)
     << ", device=" << device().str() << ")";
  return os.str();
}

}  // namespace needle
