// The table of op cases that drives the kernel tests of every backend (ggml's test-backend-ops):
// each case builds its inputs from a seed on a given device (random shapes with size-0 and size-1
// dims, transposed / strided / flipped / broadcast views, several dtypes), runs one NDArray op,
// and knows a float64 reference written as plain loops plus its tolerance per dtype.
//
//   check_against_reference(c, device): the op on `device` against the float64 reference.
//   check_against_cpu(c, device):       the op on `device` against the same op on the CPU.
//
// Reference values are read straight from each array's memory through its strides (read_host),
// never through the copy kernels under test.
#pragma once
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ndarray/ndarray.h"
#include "ndarray/philox.h"
#include "ndarray/random.h"

namespace needle::optest {

using Rng = std::mt19937_64;

// --- host values -------------------------------------------------------------------------------

// An array's logical values in row-major order, as double. `scale` (optional, per element)
// multiplies the absolute tolerance where the error grows with the inputs (sums, dot products).
struct HostArray {
  Shape shape;
  DType dtype = DType::Float64;
  std::vector<double> v;
  std::vector<double> scale;
  int64_t numel() const { return static_cast<int64_t>(v.size()); }
};

inline double read_scalar(const char* p, DType dt) {
  switch (dt) {
    case DType::Bool:
      return *reinterpret_cast<const uint8_t*>(p) ? 1.0 : 0.0;
    case DType::Int32:
      return *reinterpret_cast<const int32_t*>(p);
    case DType::Int64:
      return static_cast<double>(*reinterpret_cast<const int64_t*>(p));
    case DType::BFloat16:
      return static_cast<float>(*reinterpret_cast<const bfloat16*>(p));
    case DType::Float32:
      return *reinterpret_cast<const float*>(p);
    case DType::Float64:
      return *reinterpret_cast<const double*>(p);
  }
  return 0;
}

inline void write_scalar(char* p, DType dt, double v) {
  switch (dt) {
    case DType::Bool:
      *reinterpret_cast<uint8_t*>(p) = v != 0;
      break;
    case DType::Int32:
      *reinterpret_cast<int32_t*>(p) = static_cast<int32_t>(v);
      break;
    case DType::Int64:
      *reinterpret_cast<int64_t*>(p) = static_cast<int64_t>(v);
      break;
    case DType::BFloat16:
      *reinterpret_cast<bfloat16*>(p) = bfloat16(static_cast<float>(v));
      break;
    case DType::Float32:
      *reinterpret_cast<float*>(p) = static_cast<float>(v);
      break;
    case DType::Float64:
      *reinterpret_cast<double*>(p) = v;
      break;
  }
}

// The value v becomes when stored as dt (what a kernel reading a `dt` array sees).
inline double round_to(DType dt, double v) {
  char buf[8];
  write_scalar(buf, dt, v);
  return read_scalar(buf, dt);
}

// float32 bit patterns for testing the rounding to bfloat16: every upper half (sign, exponent and
// the 7 kept bits: zeros, subnormals, the largest finite values, infinities, NaNs of every payload)
// with the lower halves that decide the rounding: exact, just above and below a tie, the tie itself
// (to even: up from an odd kept value, down from an even one), the largest, and two others.
inline std::vector<uint32_t> bfloat16_rounding_cases() {
  const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x3a5c, 0xc5a3};
  std::vector<uint32_t> bits;
  for (uint32_t hi = 0; hi < 0x10000u; ++hi)
    for (uint32_t lo : lows) bits.push_back(hi << 16 | lo);
  return bits;
}

// The bfloat16 bits of an array of them, read through float32 (bfloat16 -> float32 is a shift, so
// the float32 bits hold them exactly, NaN payloads included).
inline std::vector<uint16_t> bfloat16_bits(const NDArray& a) {
  std::vector<uint32_t> wide(static_cast<size_t>(a.numel()));
  a.to(cpu()).astype(DType::Float32).copy_to_host(wide.data());
  std::vector<uint16_t> out(wide.size());
  for (size_t i = 0; i < wide.size(); ++i) out[i] = static_cast<uint16_t>(wide[i] >> 16);
  return out;
}

inline std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  return idx;
}

inline int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + idx[d];
  return flat;
}

// Reads any view element by element through its strides (a CUDA array is moved to the CPU first).
inline HostArray read_host(const NDArray& x_in) {
  NDArray x = x_in.device().is_cpu() ? x_in : x_in.to(cpu());
  HostArray h;
  h.shape = x.shape();
  h.dtype = x.dtype();
  const int64_t n = x.numel();
  h.v.resize(n);
  const char* base = static_cast<const char*>(x.data_ptr());
  const int64_t isz = static_cast<int64_t>(itemsize(x.dtype()));
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> idx = unravel(i, h.shape);
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * x.strides()[d];
    h.v[i] = read_scalar(base + off * isz, x.dtype());
  }
  return h;
}

inline NDArray from_values(const std::vector<double>& v, const Shape& shape, DType dt,
                           Device device) {
  std::vector<char> bytes(v.size() * itemsize(dt) + 1);
  for (size_t i = 0; i < v.size(); ++i) write_scalar(bytes.data() + i * itemsize(dt), dt, v[i]);
  return NDArray::from_host(bytes.data(), shape, dt, device);
}

// --- random inputs -------------------------------------------------------------------------------

// Value ranges: Real (-3, 3); Positive (0.1, 3); NonZero +-(0.5, 3); Discrete (multiples of 0.5
// in [-2, 2], so comparisons see ties); NearOne (0.5, 1.5) for products; Exponent (-1, 1), or
// 0..3 for integers.
enum class Domain { Real, Positive, NonZero, Discrete, NearOne, Exponent };

inline double draw(Rng& rng, Domain dom, DType dt) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (dt == DType::Bool) return u(rng) < 0.5 ? 1.0 : 0.0;
  if (dt == DType::Int32 || dt == DType::Int64) {
    auto pick = [&](int lo, int hi) {
      return static_cast<double>(lo + static_cast<int>(rng() % (hi - lo + 1)));
    };
    switch (dom) {
      case Domain::Positive:
        return pick(1, 5);
      case Domain::NonZero:
        return (u(rng) < 0.5 ? -1 : 1) * pick(1, 5);
      case Domain::Discrete:
        return pick(-2, 2);
      case Domain::NearOne:
        return pick(-1, 2);
      case Domain::Exponent:
        return pick(0, 3);
      case Domain::Real:
        return pick(-5, 5);
    }
  }
  double v = 0;
  switch (dom) {
    case Domain::Real:
      v = -3 + 6 * u(rng);
      break;
    case Domain::Positive:
      v = 0.1 + 2.9 * u(rng);
      break;
    case Domain::NonZero:
      v = (u(rng) < 0.5 ? -1 : 1) * (0.5 + 2.5 * u(rng));
      break;
    case Domain::Discrete:
      v = 0.5 * static_cast<int>(rng() % 9) - 2.0;
      break;
    case Domain::NearOne:
      v = 0.5 + u(rng);
      break;
    case Domain::Exponent:
      v = -1 + 2 * u(rng);
      break;
  }
  return round_to(dt, v);
}

// How an input array is laid out in memory.
enum class Layout { Compact, Transposed, Strided, Flipped, Broadcast };

inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Compact:
      return "compact";
    case Layout::Transposed:
      return "transposed";
    case Layout::Strided:
      return "strided";
    case Layout::Flipped:
      return "flipped";
    case Layout::Broadcast:
      return "broadcast";
  }
  return "?";
}

// The storage an array of logical shape `shape` needs for layout `lay` (Broadcast excluded):
// transposed stores all dims reversed, strided takes every other element of a larger last dim
// at offset 1, flipped walks dim 0 backwards.
inline Shape storage_shape(const Shape& shape, Layout lay) {
  Shape s = shape;
  if (lay == Layout::Transposed) s.assign(shape.rbegin(), shape.rend());
  if (lay == Layout::Strided && !s.empty()) s.back() = 2 * s.back() + 1;
  return s;
}

// The view of `storage` (of storage_shape(shape, lay)) that has the logical shape.
inline NDArray view_of(const NDArray& storage, Layout lay) {
  const int nd = storage.ndim();
  switch (lay) {
    case Layout::Transposed: {
      std::vector<int> perm(nd);
      for (int i = 0; i < nd; ++i) perm[i] = nd - 1 - i;
      return storage.permute(perm);
    }
    case Layout::Strided:
      return nd ? storage.slice(nd - 1, 1, std::nullopt, 2) : storage;
    case Layout::Flipped:
      return nd ? storage.slice(0, std::nullopt, std::nullopt, -1) : storage;
    default:
      return storage;
  }
}

inline NDArray random_values(Rng& rng, const Shape& shape, DType dt, Domain dom, Device device) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = draw(rng, dom, dt);
  return from_values(v, shape, dt, device);
}

// An array of logical shape `shape` laid out as `lay` in memory; Broadcast stores a random
// subset of dims once (stride 0).
inline NDArray make_array(Rng& rng, const Shape& shape, DType dt, Domain dom, Layout lay,
                          Device device) {
  if (lay == Layout::Broadcast) {
    Shape storage = shape;
    for (int64_t& d : storage)
      if (rng() % 2) d = 1;
    return random_values(rng, storage, dt, dom, device).broadcast_to(shape);
  }
  return view_of(random_values(rng, storage_shape(shape, lay), dt, dom, device), lay);
}

// Flat storage positions covered by view_of(storage, lay), in the view's logical order: computed
// on a host array holding 0, 1, 2, ... so it depends on view metadata only.
inline std::vector<int64_t> covered_positions(const Shape& storage, Layout lay) {
  std::vector<double> iota(static_cast<size_t>(shape_numel(storage)));
  for (size_t i = 0; i < iota.size(); ++i) iota[i] = static_cast<double>(i);
  HostArray h = read_host(view_of(from_values(iota, storage, DType::Float64, cpu()), lay));
  return std::vector<int64_t>(h.v.begin(), h.v.end());
}

// A random shape of up to max_ndim dims: sizes 2..max_dim mostly, with size-1 dims and, when
// allowed, a rare size-0 dim.
inline Shape random_shape(Rng& rng, int min_ndim, int max_ndim, int max_dim, bool allow_zero) {
  int nd = min_ndim + static_cast<int>(rng() % (max_ndim - min_ndim + 1));
  Shape s(nd);
  for (int64_t& d : s) {
    int r = static_cast<int>(rng() % 20);
    d = (allow_zero && r == 0) ? 0 : (r < 5 ? 1 : 2 + static_cast<int64_t>(rng() % (max_dim - 1)));
  }
  return s;
}

// A shape that broadcasts against `shape`: some leading dims dropped, some dims set to 1.
inline Shape broadcastable(Rng& rng, const Shape& shape) {
  size_t drop = shape.empty() ? 0 : rng() % (shape.size() + 1);
  Shape s(shape.begin() + drop, shape.end());
  for (int64_t& d : s)
    if (rng() % 3 == 0) d = 1;
  return s;
}

inline std::string shape_tag(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

// --- tolerances and comparison
// ---------------------------------------------------------------------

struct Tolerance {
  double atol = 0, rtol = 0;
};

// Elementwise tolerance of one computation rounded to dt (a few ulps of the output type).
inline Tolerance tol_for(DType dt) {
  switch (dt) {
    case DType::BFloat16:
      return {1e-2, 1e-2};
    case DType::Float32:
      return {1e-5, 1e-5};
    case DType::Float64:
      return {1e-12, 1e-12};
    default:
      return {0, 0};
  }
}

inline bool values_close(double actual, double expected, double atol, double rtol) {
  if (std::isnan(expected)) return std::isnan(actual);
  if (std::isinf(expected)) return actual == expected;
  return std::abs(actual - expected) <= atol + rtol * std::abs(expected);
}

// Checks shape, dtype and every value; reports the first few mismatches with their index.
inline void expect_close(const HostArray& actual, const HostArray& expected, Tolerance tol,
                         const std::string& what) {
  INFO(what);
  REQUIRE(shape_str(actual.shape) == shape_str(expected.shape));
  REQUIRE(std::string(dtype_name(actual.dtype)) == dtype_name(expected.dtype));
  int reported = 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    double scale = expected.scale.empty() ? 1.0 : std::max(1.0, expected.scale[i]);
    if (!values_close(actual.v[i], expected.v[i], tol.atol * scale, tol.rtol)) {
      ++bad;
      if (reported++ < 5) {
        UNSCOPED_INFO("element " << i << " " << shape_tag(unravel(i, expected.shape)) << ": got "
                                 << actual.v[i] << ", expected " << expected.v[i]);
      }
    }
  }
  CHECK(bad == 0);
}

// --- the case table ------------------------------------------------------------------------------

struct OpCase {
  std::string family;  // "unary", "binary", "reduce", ... (one TEST_CASE per family)
  std::string name;    // unique and readable: family/op/dtype/shapes(layouts)
  DType dtype = DType::Float32;
  uint64_t seed = 0;
  // Builds the inputs on `device`; the same seed gives the same values on every device.
  std::function<std::vector<NDArray>(Device)> inputs;
  // Runs the op under test.
  std::function<std::vector<NDArray>(const std::vector<NDArray>&)> run;
  // The float64 reference from the inputs' values, with expected shapes and dtypes.
  std::function<std::vector<HostArray>(const std::vector<HostArray>&)> reference;
  Tolerance tol;
};

inline std::vector<HostArray> host_all(const std::vector<NDArray>& xs) {
  std::vector<HostArray> h;
  for (const NDArray& x : xs) h.push_back(read_host(x));
  return h;
}

inline void check_against_reference(const OpCase& c, Device device) {
  std::vector<NDArray> in = c.inputs(device);
  std::vector<HostArray> expected = c.reference(host_all(in));
  std::vector<NDArray> out = c.run(in);
  REQUIRE(out.size() == expected.size());
  for (size_t i = 0; i < out.size(); ++i) {
    CHECK(out[i].device() == device);
    expect_close(read_host(out[i]), expected[i], c.tol, c.name + " output " + std::to_string(i));
  }
}

// The CPU is the oracle: both devices compute in the same precision but in different orders, so
// twice the reference tolerance.
// linear_param_grads' results dw and db against the float64 product of the same operands, g64
// (rows, out) and x64 (rows, in) widened to float64: g64^T x64 and g64 summed over rows.
inline void expect_param_grads_close(const NDArray& dw, const NDArray& db, const NDArray& g64,
                                     const NDArray& x64, Tolerance t) {
  expect_close(read_host(dw.astype(DType::Float64)), read_host(matmul(g64.transpose(0, 1), x64)), t,
               "dw");
  expect_close(read_host(db.astype(DType::Float64)), read_host(sum(g64, {0})), t, "db");
}

inline void check_against_cpu(const OpCase& c, Device device) {
  std::vector<NDArray> in_cpu = c.inputs(cpu());
  std::vector<NDArray> in_dev = c.inputs(device);
  std::vector<HostArray> expected = c.reference(host_all(in_cpu));
  std::vector<NDArray> out_cpu = c.run(in_cpu);
  std::vector<NDArray> out_dev = c.run(in_dev);
  REQUIRE(out_cpu.size() == out_dev.size());
  Tolerance tol{2 * c.tol.atol, 2 * c.tol.rtol};
  for (size_t i = 0; i < out_cpu.size(); ++i) {
    HostArray oracle = read_host(out_cpu[i]);
    if (i < expected.size()) oracle.scale = expected[i].scale;
    expect_close(read_host(out_dev[i]), oracle, tol, c.name + " output " + std::to_string(i));
  }
}

// --- elementwise cases
// -------------------------------------------------------------------------------

inline DType result_dtype_unary(UnaryOp op, DType dt) {
  if (op == UnaryOp::LogicalNot) return DType::Bool;
  return is_float_only(op) && !is_floating(dt) ? DType::Float32 : dt;
}

// The op's functor evaluated in double: the reference formula for every elementwise op.
inline double apply_unary(UnaryOp op, double a) {
  switch (op) {
#define NEEDLE_REF_CASE(Name, ...) \
  case UnaryOp::Name:              \
    return functors::Name##Functor{}(a);
    NEEDLE_UNARY_OPS(NEEDLE_REF_CASE)
#undef NEEDLE_REF_CASE
    case UnaryOp::LogicalNot:
      return a == 0 ? 1.0 : 0.0;
  }
  return 0;
}

inline double apply_binary(BinaryOp op, double a, double b) {
  switch (op) {
#define NEEDLE_REF_CASE(Name, ...) \
  case BinaryOp::Name:             \
    return static_cast<double>(functors::Name##Functor{}(a, b));
    NEEDLE_BINARY_OPS(NEEDLE_REF_CASE)
#undef NEEDLE_REF_CASE
  }
  return 0;
}

// Inputs each op accepts: positive for log / sqrt / rsqrt, and so on.
inline Domain unary_domain(UnaryOp op) {
  switch (op) {
    case UnaryOp::Log:
    case UnaryOp::Sqrt:
    case UnaryOp::Rsqrt:
      return Domain::Positive;
    case UnaryOp::LogicalNot:
    case UnaryOp::Sign:
      return Domain::Discrete;
    default:
      return Domain::Real;
  }
}

inline Tolerance op_tol(DType out, DType in) {
  // Integer results are exact; bool results of float inputs are exact too.
  if (!is_floating(out)) return {0, 0};
  return tol_for(in == DType::BFloat16 || out == DType::BFloat16 ? DType::BFloat16 : out);
}

inline Layout random_layout(Rng& rng, bool allow_broadcast) {
  int n = allow_broadcast ? 5 : 4;
  return static_cast<Layout>(rng() % n);
}

inline void add_unary_cases(std::vector<OpCase>& cases) {
  std::vector<std::pair<UnaryOp, const char*>> ops = {
#define NEEDLE_LIST(Name, fname, ...) {UnaryOp::Name, #fname},
      NEEDLE_UNARY_OPS(NEEDLE_LIST)
#undef NEEDLE_LIST
          {UnaryOp::LogicalNot, "logical_not"}};
  uint64_t seed = 1000;
  for (auto [op, fname] : ops) {
    std::vector<DType> dtypes = {DType::Float32, DType::Float64, DType::BFloat16, DType::Int32};
    if (op == UnaryOp::LogicalNot) dtypes.push_back(DType::Bool);
    for (DType dt : dtypes) {
      for (int variant = 0; variant < 3; ++variant) {
        Rng rng(++seed);
        // variant 2 is large enough for the parallel path (more than kGrain elements).
        Shape shape = variant == 2 ? Shape{181, 193} : random_shape(rng, 0, 4, 5, true);
        Layout lay = random_layout(rng, true);
        OpCase c;
        c.family = "unary";
        c.name = std::string("unary/") + fname + "/" + dtype_name(dt) + "/" + shape_tag(shape) +
                 "(" + layout_name(lay) + ")";
        c.dtype = dt;
        c.seed = seed;
        Domain dom = unary_domain(op);
        c.inputs = [=](Device dev) {
          Rng r(seed);
          return std::vector<NDArray>{make_array(r, shape, dt, dom, lay, dev)};
        };
        c.run = [op = op](const std::vector<NDArray>& in) {
          return std::vector<NDArray>{unary(op, in[0])};
        };
        c.reference = [op = op, dt](const std::vector<HostArray>& in) {
          HostArray out{in[0].shape, result_dtype_unary(op, dt), {}, {}};
          for (double a : in[0].v) out.v.push_back(apply_unary(op, a));
          return std::vector<HostArray>{out};
        };
        c.tol = op_tol(result_dtype_unary(op, dt), dt);
        cases.push_back(c);
      }
    }
  }
}

// Every unary op on the special values (signed zeros, infinities, NaN, out-of-domain and
// overflowing inputs) of each floating dtype, against the functor in double rounded to the dtype.
inline void add_unary_special_cases(std::vector<OpCase>& cases) {
  std::vector<std::pair<UnaryOp, const char*>> ops = {
#define NEEDLE_LIST(Name, fname, ...) {UnaryOp::Name, #fname},
      NEEDLE_UNARY_OPS(NEEDLE_LIST)
#undef NEEDLE_LIST
  };
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> specials = {0.0,   -0.0,  inf,    -inf, std::nan(""), -1.0,
                                        1e-30, 100.0, -100.0, 0.5,  20.0,         -20.0};
  uint64_t seed = 4000;
  for (auto [op, fname] : ops) {
    for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
      OpCase c;
      c.family = "unary";
      c.name = std::string("unary/") + fname + "/" + dtype_name(dt) + "/special values";
      c.dtype = dt;
      c.seed = ++seed;
      c.inputs = [=](Device dev) {
        return std::vector<NDArray>{
            from_values(specials, {static_cast<int64_t>(specials.size())}, dt, dev)};
      };
      c.run = [op = op](const std::vector<NDArray>& in) {
        return std::vector<NDArray>{unary(op, in[0])};
      };
      c.reference = [op = op, dt](const std::vector<HostArray>& in) {
        HostArray out{in[0].shape, dt, {}, {}};
        for (double a : in[0].v) out.v.push_back(round_to(dt, apply_unary(op, a)));
        return std::vector<HostArray>{out};
      };
      c.tol = op_tol(dt, dt);
      cases.push_back(c);
    }
  }
}

inline Domain binary_domain(BinaryOp op, bool rhs) {
  if (is_comparison(op) || op == BinaryOp::Maximum || op == BinaryOp::Minimum)
    return Domain::Discrete;
  if ((op == BinaryOp::Div || op == BinaryOp::FloorDiv || op == BinaryOp::Remainder) && rhs)
    return Domain::NonZero;
  if (op == BinaryOp::Pow) return rhs ? Domain::Exponent : Domain::Positive;
  return Domain::Real;
}

// Broadcast reference: out[idx] = f(a[idx mapped], b[idx mapped]), NumPy alignment from the right.
inline double at_broadcast(const HostArray& x, const std::vector<int64_t>& out_idx) {
  int64_t flat = 0;
  size_t lead = out_idx.size() - x.shape.size();
  for (size_t d = 0; d < x.shape.size(); ++d)
    flat = flat * x.shape[d] + (x.shape[d] == 1 ? 0 : out_idx[lead + d]);
  return x.v[flat];
}

inline void add_binary_cases(std::vector<OpCase>& cases) {
  std::vector<std::pair<BinaryOp, const char*>> ops = {
#define NEEDLE_LIST(Name, fname, ...) {BinaryOp::Name, #fname},
      NEEDLE_BINARY_OPS(NEEDLE_LIST)
#undef NEEDLE_LIST
  };
  uint64_t seed = 5000;
  for (auto [op, fname] : ops) {
    std::vector<DType> dtypes = {DType::Float32, DType::Float64, DType::BFloat16, DType::Int32,
                                 DType::Int64};
    if (is_logical(op) || op == BinaryOp::Eq) dtypes.push_back(DType::Bool);
    for (DType dt : dtypes) {
      // variants: 0-2 array op array (random shapes, broadcasting), 3 large, 4 array op scalar,
      // 5 scalar op array.
      for (int variant = 0; variant < 6; ++variant) {
        Rng rng(++seed);
        Shape sa = variant == 3 ? Shape{257, 131} : random_shape(rng, 0, 4, 5, true);
        Shape sb = variant == 3 ? Shape{131} : broadcastable(rng, sa);
        if (variant < 3 && rng() % 2) std::swap(sa, sb);
        Layout la = random_layout(rng, true), lb = random_layout(rng, true);
        const bool scalar = variant >= 4, scalar_first = variant == 5;
        const double s = draw(rng, binary_domain(op, !scalar_first), dt);
        OpCase c;
        c.family = "binary";
        std::ostringstream name;
        name << "binary/" << fname << "/" << dtype_name(dt) << "/" << shape_tag(sa) << "("
             << layout_name(la) << ")";
        if (scalar) {
          name << (scalar_first ? "/scalar_first=" : "/scalar=") << s;
        } else {
          name << "x" << shape_tag(sb) << "(" << layout_name(lb) << ")";
        }
        c.name = name.str();
        c.dtype = dt;
        c.seed = seed;
        c.inputs = [=](Device dev) {
          Rng r(seed);
          std::vector<NDArray> in{make_array(r, sa, dt, binary_domain(op, scalar_first), la, dev)};
          if (!scalar) in.push_back(make_array(r, sb, dt, binary_domain(op, true), lb, dev));
          return in;
        };
        // Integer scalars stay integers (weak scalar: the array keeps its dtype).
        const bool int_like = !is_floating(dt);
        c.run = [=](const std::vector<NDArray>& in) {
          if (!scalar) return std::vector<NDArray>{binary(op, in[0], in[1])};
          Scalar sc = int_like ? Scalar(static_cast<int64_t>(s)) : Scalar(s);
          return std::vector<NDArray>{binary(op, in[0], sc, scalar_first)};
        };
        DType compute = dt;
        if (scalar && dt == DType::Bool) compute = DType::Int64;  // bool op int scalar
        if (op == BinaryOp::Div && !is_floating(compute)) compute = DType::Float32;
        const DType out_dt = is_comparison(op) ? DType::Bool : compute;
        c.reference = [=](const std::vector<HostArray>& in) {
          Shape shape = scalar ? in[0].shape : broadcast_shapes(in[0].shape, in[1].shape);
          HostArray out{shape, out_dt, {}, {}};
          for (int64_t i = 0; i < shape_numel(shape); ++i) {
            std::vector<int64_t> idx = unravel(i, shape);
            double x = at_broadcast(in[0], idx);
            double y = scalar ? s : at_broadcast(in[1], idx);
            if (scalar_first) std::swap(x, y);
            // Integer inputs of a float computation are converted first, as the kernel sees them.
            out.v.push_back(
                round_to(out_dt, apply_binary(op, round_to(compute, x), round_to(compute, y))));
          }
          return std::vector<HostArray>{out};
        };
        c.tol = op_tol(out_dt, compute);
        cases.push_back(c);
      }
    }
  }
}

inline void add_where_cases(std::vector<OpCase>& cases) {
  uint64_t seed = 9000;
  for (DType dt :
       {DType::Float32, DType::Float64, DType::BFloat16, DType::Int32, DType::Int64, DType::Bool}) {
    for (int variant = 0; variant < 4; ++variant) {
      Rng rng(++seed);
      Shape shape = variant == 3 ? Shape{200, 201} : random_shape(rng, 0, 4, 5, true);
      Shape sc = broadcastable(rng, shape), sb = broadcastable(rng, shape);
      Layout lc = random_layout(rng, true), la = random_layout(rng, true),
             lb = random_layout(rng, true);
      OpCase c;
      c.family = "where";
      c.name = std::string("where/") + dtype_name(dt) + "/" + shape_tag(sc) + "(" +
               layout_name(lc) + ")," + shape_tag(shape) + "(" + layout_name(la) + ")," +
               shape_tag(sb) + "(" + layout_name(lb) + ")";
      c.dtype = dt;
      c.seed = seed;
      c.inputs = [=](Device dev) {
        Rng r(seed);
        return std::vector<NDArray>{make_array(r, sc, DType::Bool, Domain::Real, lc, dev),
                                    make_array(r, shape, dt, Domain::Real, la, dev),
                                    make_array(r, sb, dt, Domain::Real, lb, dev)};
      };
      c.run = [](const std::vector<NDArray>& in) {
        return std::vector<NDArray>{where(in[0], in[1], in[2])};
      };
      c.reference = [=](const std::vector<HostArray>& in) {
        Shape out_shape = broadcast_shapes(broadcast_shapes(in[0].shape, in[1].shape), in[2].shape);
        HostArray out{out_shape, dt, {}, {}};
        for (int64_t i = 0; i < shape_numel(out_shape); ++i) {
          std::vector<int64_t> idx = unravel(i, out_shape);
          out.v.push_back(at_broadcast(in[0], idx) != 0 ? at_broadcast(in[1], idx)
                                                        : at_broadcast(in[2], idx));
        }
        return std::vector<HostArray>{out};
      };
      c.tol = {0, 0};
      cases.push_back(c);
    }
  }
}

// astype between every pair of dtypes from non-contiguous views, and assignment into a strided
// destination (setitem) with conversion.
inline void add_copy_cases(std::vector<OpCase>& cases) {
  const DType all[] = {DType::Bool,     DType::Int32,   DType::Int64,
                       DType::BFloat16, DType::Float32, DType::Float64};
  uint64_t seed = 11000;
  for (DType from : all) {
    for (DType to : all) {
      for (int variant = 0; variant < 2; ++variant) {
        Rng rng(++seed);
        Shape shape = variant == 1 ? Shape{190, 180} : random_shape(rng, 1, 4, 5, true);
        Layout lay = static_cast<Layout>(1 + rng() % 3);  // never compact
        OpCase c;
        c.family = "copy";
        c.name = std::string("astype/") + dtype_name(from) + "->" + dtype_name(to) + "/" +
                 shape_tag(shape) + "(" + layout_name(lay) + ")";
        c.dtype = to;
        c.seed = seed;
        c.inputs = [=](Device dev) {
          Rng r(seed);
          return std::vector<NDArray>{make_array(r, shape, from, Domain::Real, lay, dev)};
        };
        // astype of the same dtype returns the view itself: clone() forces the copy kernel.
        c.run = [=](const std::vector<NDArray>& in) {
          return std::vector<NDArray>{from == to ? in[0].clone() : in[0].astype(to)};
        };
        c.reference = [=](const std::vector<HostArray>& in) {
          HostArray out{in[0].shape, to, {}, {}};
          for (double v : in[0].v) out.v.push_back(round_to(to, v));
          return std::vector<HostArray>{out};
        };
        c.tol = {0, 0};
        cases.push_back(c);
      }
    }
  }
  // Into every other column (and flipped rows) of a matrix, from a transposed float64 source
  // converted to the matrix's dtype: assign into zeros, and add_into ones; the elements outside
  // the view keep their value.
  for (bool add : {false, true}) {
    for (DType dt : {DType::Float32, DType::Float64, DType::Int64, DType::BFloat16}) {
      uint64_t s = ++seed;
      const double init = add ? 1.0 : 0.0;
      OpCase c;
      c.family = "copy";
      c.name = std::string(add ? "add_into" : "assign") + "/strided_dst/" + dtype_name(dt) +
               (add ? "/[7,5]+=float64[7,5]" : "/[7,5]<-float64[7,5]");
      c.dtype = dt;
      c.seed = s;
      c.inputs = [=](Device dev) {
        Rng r(s);
        return std::vector<NDArray>{
            make_array(r, {7, 5}, DType::Float64, Domain::Real, Layout::Transposed, dev)};
      };
      c.run = [=](const std::vector<NDArray>& in) {
        NDArray dst = NDArray::full({7, 11}, init, dt, in[0].device());
        NDArray view = dst.slice(1, 1, std::nullopt, 2).slice(0, std::nullopt, std::nullopt, -1);
        if (add) {
          add_into(view, in[0]);
        } else {
          view.assign(in[0]);
        }
        return std::vector<NDArray>{dst};
      };
      c.reference = [=](const std::vector<HostArray>& in) {
        HostArray out{{7, 11}, dt, std::vector<double>(77, init), {}};
        for (int64_t i = 0; i < 7; ++i)
          for (int64_t j = 0; j < 5; ++j)
            out.v[(6 - i) * 11 + 1 + 2 * j] = round_to(dt, init + round_to(dt, in[0].v[i * 5 + j]));
        return std::vector<HostArray>{out};
      };
      c.tol = {0, 0};
      cases.push_back(c);
    }
  }
}

// fill() of a compact array and of transposed, strided and flipped views: the view's elements
// take the value, the rest of the storage is untouched.
inline void add_fill_cases(std::vector<OpCase>& cases) {
  uint64_t seed = 12000;
  for (DType dt :
       {DType::Bool, DType::Int32, DType::Int64, DType::BFloat16, DType::Float32, DType::Float64}) {
    for (Layout lay : {Layout::Compact, Layout::Transposed, Layout::Strided, Layout::Flipped}) {
      for (int variant = 0; variant < 2; ++variant) {
        uint64_t s = ++seed;
        Rng rng(s);
        Shape shape = variant == 1 ? Shape{250, 140} : random_shape(rng, 0, 4, 6, true);
        Shape storage = storage_shape(shape, lay);
        const double value = round_to(dt, -2.75 + static_cast<double>(rng() % 7));
        OpCase c;
        c.family = "fill";
        c.name = std::string("fill/") + dtype_name(dt) + "/" + shape_tag(shape) + "(" +
                 layout_name(lay) + ")=" + std::to_string(value);
        c.dtype = dt;
        c.seed = s;
        c.inputs = [=](Device dev) {
          Rng r(s);
          return std::vector<NDArray>{random_values(r, storage, dt, Domain::Real, dev)};
        };
        c.run = [=](const std::vector<NDArray>& in) {
          NDArray base = in[0].clone();
          view_of(base, lay).fill(value);
          return std::vector<NDArray>{base};
        };
        c.reference = [=](const std::vector<HostArray>& in) {
          HostArray out = in[0];
          for (int64_t p : covered_positions(storage, lay)) out.v[p] = round_to(dt, value);
          return std::vector<HostArray>{out};
        };
        c.tol = {0, 0};
        cases.push_back(c);
      }
    }
  }
}

// --- reductions ---------------------------------------------------------------------------------

enum class RefReduce { Sum, Prod, Max, Min, Mean, Var, ArgMax, ArgMin };

inline const char* ref_reduce_name(RefReduce r) {
  const char* names[] = {"sum", "prod", "max", "min", "mean", "var", "argmax", "argmin"};
  return names[static_cast<int>(r)];
}

inline DType reduce_result_dtype(RefReduce r, DType in) {
  switch (r) {
    case RefReduce::ArgMax:
    case RefReduce::ArgMin:
      return DType::Int64;
    case RefReduce::Sum:
    case RefReduce::Prod:
      return is_floating(in) ? in : DType::Int64;
    case RefReduce::Mean:
    case RefReduce::Var:
      return is_floating(in) ? in : DType::Float32;
    default:
      return in;
  }
}

// Reduces x over the dims in `mask` (keepdim or not) with plain loops over the slices: for
// each output position, its input elements in row-major order.
inline HostArray reduce_reference(RefReduce r, const HostArray& x, const std::vector<bool>& mask,
                                  bool keepdim, DType out_dt) {
  Shape out_shape, kept_shape;
  for (size_t d = 0; d < x.shape.size(); ++d) {
    if (!mask[d]) kept_shape.push_back(x.shape[d]);
    if (!mask[d] || keepdim) out_shape.push_back(mask[d] ? 1 : x.shape[d]);
  }
  const int64_t outs = shape_numel(kept_shape);
  std::vector<std::vector<double>> slices(outs);
  for (int64_t i = 0; i < x.numel(); ++i) {
    std::vector<int64_t> idx = unravel(i, x.shape), kept;
    for (size_t d = 0; d < idx.size(); ++d)
      if (!mask[d]) kept.push_back(idx[d]);
    slices[ravel(kept, kept_shape)].push_back(x.v[i]);
  }
  HostArray out{out_shape, out_dt, {}, {}};
  for (const std::vector<double>& sl : slices) {
    double v = 0, mag = 0;
    for (double e : sl) mag += std::abs(e);
    const double n = static_cast<double>(sl.size());
    switch (r) {
      case RefReduce::Sum:
        for (double e : sl) v += e;
        break;
      case RefReduce::Mean:
        for (double e : sl) v += e;
        v /= n;
        mag /= std::max(n, 1.0);
        break;
      case RefReduce::Var: {
        double m = 0;
        for (double e : sl) m += e;
        m /= n;
        for (double e : sl) v += (e - m) * (e - m);
        v /= (n - 1);
        mag = 0;
        for (double e : sl) mag += (std::abs(e) + std::abs(m)) * (std::abs(e) + std::abs(m));
        mag /= std::max(n - 1, 1.0);
        break;
      }
      case RefReduce::Prod:
        v = 1;
        for (double e : sl) v *= e;
        mag = std::abs(v) * std::max(n, 1.0);
        break;
      case RefReduce::Max:
      case RefReduce::Min: {
        v = sl[0];
        for (double e : sl) {
          if (std::isnan(e) || std::isnan(v)) {
            v = std::numeric_limits<double>::quiet_NaN();
          } else {
            v = r == RefReduce::Max ? std::max(v, e) : std::min(v, e);
          }
        }
        mag = 1;
        break;
      }
      case RefReduce::ArgMax:
      case RefReduce::ArgMin: {
        size_t best = 0;
        for (size_t k = 0; k < sl.size(); ++k) {
          if (std::isnan(sl[best])) break;
          if (std::isnan(sl[k]) || (r == RefReduce::ArgMax ? sl[k] > sl[best] : sl[k] < sl[best]))
            best = k;
        }
        v = static_cast<double>(best);
        mag = 1;
        break;
      }
    }
    out.v.push_back(v);
    out.scale.push_back(mag);
  }
  return out;
}

inline NDArray run_reduce(RefReduce r, const NDArray& x, const std::vector<int>& dims,
                          bool keepdim) {
  switch (r) {
    case RefReduce::Sum:
      return sum(x, dims, keepdim);
    case RefReduce::Prod:
      return prod(x, dims, keepdim);
    case RefReduce::Max:
      return max(x, dims, keepdim);
    case RefReduce::Min:
      return min(x, dims, keepdim);
    case RefReduce::Mean:
      return mean(x, dims, keepdim);
    case RefReduce::Var:
      return var(x, dims, 1, keepdim);
    case RefReduce::ArgMax:
      return argmax(x, dims.empty() ? std::nullopt : std::optional<int>(dims[0]), keepdim);
    case RefReduce::ArgMin:
      return argmin(x, dims.empty() ? std::nullopt : std::optional<int>(dims[0]), keepdim);
  }
  return x;
}

inline void add_reduce_cases(std::vector<OpCase>& cases) {
  uint64_t seed = 20000;
  for (RefReduce r : {RefReduce::Sum, RefReduce::Prod, RefReduce::Max, RefReduce::Min,
                      RefReduce::Mean, RefReduce::Var, RefReduce::ArgMax, RefReduce::ArgMin}) {
    std::vector<DType> dtypes = {DType::Float32, DType::Float64, DType::BFloat16, DType::Int32};
    if (r == RefReduce::Sum || r == RefReduce::Max) dtypes.push_back(DType::Bool);
    if (r == RefReduce::Sum || r == RefReduce::ArgMax) dtypes.push_back(DType::Int64);
    for (DType dt : dtypes) {
      for (int variant = 0; variant < 8; ++variant) {
        Rng rng(++seed);
        if (variant == 7 && r == RefReduce::Prod) continue;
        const bool needs_elements =
            r != RefReduce::Sum && r != RefReduce::Prod && r != RefReduce::Mean;
        Shape shape;
        std::vector<int> dims;
        // variants: 0-3 random dims, 4 all dims, 5 large rows (parallel, inner == 1),
        // 6 large columns (inner > 1), 7 one long row (split over threads).
        if (variant == 7) {
          shape = {140001};
          dims = {0};
        } else if (variant == 5) {
          shape = {96, 1031};
          dims = {-1};
        } else if (variant == 6) {
          shape = {515, 3, 67};
          dims = {0};
        } else {
          shape = random_shape(rng, 1, 4, 5, !needs_elements);
          if (r == RefReduce::Prod) shape.resize(std::min<size_t>(shape.size(), 3));
          if (variant != 4) {
            for (int d = 0; d < static_cast<int>(shape.size()); ++d)
              if (rng() % 2) dims.push_back(rng() % 2 ? d : d - static_cast<int>(shape.size()));
            if (dims.empty()) dims.push_back(static_cast<int>(rng() % shape.size()));
          }
        }
        if (r == RefReduce::ArgMax || r == RefReduce::ArgMin) {
          if (dims.size() > 1) dims.resize(1);
        }
        if (r == RefReduce::Var) {
          // The unbiased variance needs two elements per slice.
          for (int64_t& d : shape) d = std::max<int64_t>(d, 2);
        }
        const bool keepdim = rng() % 2;
        Layout lay = random_layout(rng, false);
        // Discrete values give ties (first occurrence) for max/min/arg; near-one keeps
        // products bounded.
        const Domain dom = r == RefReduce::Prod
                               ? Domain::NearOne
                               : (needs_elements ? Domain::Discrete : Domain::Real);
        OpCase c;
        c.family = "reduce";
        std::ostringstream name;
        name << "reduce/" << ref_reduce_name(r) << "/" << dtype_name(dt) << "/" << shape_tag(shape)
             << "(" << layout_name(lay) << ")/dims=";
        for (int d : dims) name << d << ",";
        name << (keepdim ? "/keepdim" : "");
        c.name = name.str();
        c.dtype = dt;
        c.seed = seed;
        c.inputs = [=](Device dev) {
          Rng rr(seed);
          return std::vector<NDArray>{make_array(rr, shape, dt, dom, lay, dev)};
        };
        c.run = [=](const std::vector<NDArray>& in) {
          return std::vector<NDArray>{run_reduce(r, in[0], dims, keepdim)};
        };
        const DType out_dt = reduce_result_dtype(r, dt);
        c.reference = [=](const std::vector<HostArray>& in) {
          const size_t nd = in[0].shape.size();
          std::vector<bool> mask(nd, dims.empty());
          for (int d : dims) mask[d < 0 ? d + nd : d] = true;
          HostArray out = reduce_reference(r, in[0], mask, keepdim, out_dt);
          // argmax over all dims with keepdim keeps every dim as size 1.
          return std::vector<HostArray>{out};
        };
        Tolerance t = op_tol(out_dt, dt);
        if (is_floating(out_dt)) t.atol = std::max(t.atol, dt == DType::Float32 ? 1e-6 : t.atol);
        c.tol = t;
        cases.push_back(c);
      }
    }
  }
  // NaN propagation: max / min / argmax / argmin of rows holding a NaN.
  for (RefReduce r : {RefReduce::Max, RefReduce::Min, RefReduce::ArgMax, RefReduce::ArgMin}) {
    for (int dim : {0, 1}) {
      OpCase c;
      c.family = "reduce";
      c.name =
          std::string("reduce/") + ref_reduce_name(r) + "/float32/nan/dim=" + std::to_string(dim);
      c.dtype = DType::Float32;
      const uint64_t s = ++seed;
      c.seed = s;
      c.inputs = [=](Device dev) {
        Rng rr(s);
        std::vector<double> v(6 * 7);
        for (double& x : v) x = draw(rr, Domain::Discrete, DType::Float32);
        v[1 * 7 + 3] = std::numeric_limits<double>::quiet_NaN();
        v[4 * 7 + 0] = std::numeric_limits<double>::quiet_NaN();
        v[4 * 7 + 5] = std::numeric_limits<double>::quiet_NaN();
        return std::vector<NDArray>{from_values(v, {6, 7}, DType::Float32, dev)};
      };
      c.run = [=](const std::vector<NDArray>& in) {
        return std::vector<NDArray>{run_reduce(r, in[0], {dim}, false)};
      };
      c.reference = [=](const std::vector<HostArray>& in) {
        std::vector<bool> mask{dim == 0, dim == 1};
        return std::vector<HostArray>{
            reduce_reference(r, in[0], mask, false, reduce_result_dtype(r, DType::Float32))};
      };
      c.tol = {0, 0};
      cases.push_back(c);
    }
  }
}

// --- matmul
// ---------------------------------------------------------------------------------------

// NumPy matmul in plain loops: 1-D operands promoted and squeezed, batch dims broadcast.
inline HostArray matmul_reference(const HostArray& a_in, const HostArray& b_in, DType dt) {
  HostArray a = a_in, b = b_in;
  const bool vec_a = a.shape.size() == 1, vec_b = b.shape.size() == 1;
  if (vec_a) a.shape.insert(a.shape.begin(), 1);
  if (vec_b) b.shape.push_back(1);
  const int64_t m = a.shape[a.shape.size() - 2], k = a.shape.back(), n = b.shape.back();
  Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  Shape batch = broadcast_shapes(ba, bb);
  HostArray out;
  out.dtype = dt;
  out.shape = batch;
  if (!vec_a) out.shape.push_back(m);
  if (!vec_b) out.shape.push_back(n);
  for (int64_t bi = 0; bi < shape_numel(batch); ++bi) {
    std::vector<int64_t> bidx = unravel(bi, batch);
    auto base = [&](const Shape& bs) {
      int64_t flat = 0;
      size_t lead = bidx.size() - bs.size();
      for (size_t d = 0; d < bs.size(); ++d)
        flat = flat * bs[d] + (bs[d] == 1 ? 0 : bidx[lead + d]);
      return flat;
    };
    const int64_t oa = base(ba) * m * k, ob = base(bb) * k * n;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0, mag = 0;
        for (int64_t p = 0; p < k; ++p) {
          acc += a.v[oa + i * k + p] * b.v[ob + p * n + j];
          mag += std::abs(a.v[oa + i * k + p] * b.v[ob + p * n + j]);
        }
        out.v.push_back(acc);
        out.scale.push_back(mag);
      }
    }
  }
  return out;
}

inline void add_matmul_cases(std::vector<OpCase>& cases) {
  struct Shapes {
    Shape a, b;
  };
  const std::vector<Shapes> shapes = {{{5, 7}, {7, 3}},
                                      {{1, 4}, {4, 1}},
                                      {{6, 0}, {0, 4}},
                                      {{0, 3}, {3, 5}},
                                      {{3, 4}, {4, 0}},
                                      {{3, 9, 4}, {3, 4, 6}},
                                      {{2, 1, 5, 3}, {4, 3, 2}},
                                      {{4, 5, 3}, {3, 7}},
                                      {{7}, {7, 4}},
                                      {{2, 5, 7}, {7}},
                                      {{8}, {8}},
                                      {{1, 6}, {3, 6, 2}},
                                      {{67, 130}, {130, 71}},
                                      {{64, 48, 40}, {40, 36}},
                                      {{9, 17, 33}, {9, 33, 5}}};
  uint64_t seed = 30000;
  for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
    for (const Shapes& sh : shapes) {
      for (int variant = 0; variant < 2; ++variant) {
        Rng rng(++seed);
        // variant 0: compact; variant 1: transposed / strided / broadcast views.
        Layout la = variant ? random_layout(rng, true) : Layout::Compact;
        Layout lb = variant ? random_layout(rng, true) : Layout::Compact;
        OpCase c;
        c.family = "matmul";
        c.name = std::string("matmul/") + dtype_name(dt) + "/" + shape_tag(sh.a) + "(" +
                 layout_name(la) + ")@" + shape_tag(sh.b) + "(" + layout_name(lb) + ")";
        c.dtype = dt;
        c.seed = seed;
        const uint64_t s = seed;
        const Shape sa = sh.a, sb = sh.b;
        c.inputs = [=](Device dev) {
          Rng r(s);
          return std::vector<NDArray>{make_array(r, sa, dt, Domain::Real, la, dev),
                                      make_array(r, sb, dt, Domain::Real, lb, dev)};
        };
        c.run = [](const std::vector<NDArray>& in) {
          return std::vector<NDArray>{matmul(in[0], in[1])};
        };
        c.reference = [=](const std::vector<HostArray>& in) {
          return std::vector<HostArray>{matmul_reference(in[0], in[1], dt)};
        };
        // Error grows with the sum of |products| (the scale); bf16 results are rounded once.
        c.tol = dt == DType::Float64   ? Tolerance{1e-13, 1e-12}
                : dt == DType::Float32 ? Tolerance{2e-6, 1e-5}
                                       : Tolerance{8e-3, 8e-3};
        cases.push_back(c);
      }
    }
  }
}

// --- softmax, log_softmax, logsumexp
// ---------------------------------------------------------------

enum class RefRow { Softmax, LogSoftmax, LogSumExp };

inline HostArray row_reference(RefRow op, const HostArray& x, int dim, bool keepdim) {
  const int nd = static_cast<int>(x.shape.size());
  const int d = nd == 0 ? 0 : (dim < 0 ? dim + nd : dim);
  Shape out_shape = x.shape;
  if (op == RefRow::LogSumExp && nd > 0) {
    if (keepdim) {
      out_shape[d] = 1;
    } else {
      out_shape.erase(out_shape.begin() + d);
    }
  }
  HostArray out{out_shape, x.dtype, std::vector<double>(shape_numel(out_shape)), {}};
  const int64_t len = nd ? x.shape[d] : 1;
  int64_t stride = 1;
  for (int i = d + 1; i < nd; ++i) stride *= x.shape[i];
  const int64_t outer = nd ? shape_numel(Shape(x.shape.begin(), x.shape.begin() + d)) : 1;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t in = 0; in < stride; ++in) {
      const int64_t base = o * len * stride + in;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < len; ++j) m = std::max(m, x.v[base + j * stride]);
      double s = 0;
      for (int64_t j = 0; j < len; ++j) s += std::exp(x.v[base + j * stride] - m);
      if (op == RefRow::LogSumExp) {
        out.v[o * stride + in] = m + std::log(s);
      } else {
        for (int64_t j = 0; j < len; ++j) {
          const double e = x.v[base + j * stride] - m;
          out.v[base + j * stride] = op == RefRow::Softmax ? std::exp(e) / s : e - std::log(s);
        }
      }
    }
  }
  return out;
}

inline void add_row_cases(std::vector<OpCase>& cases) {
  uint64_t seed = 40000;
  for (RefRow op : {RefRow::Softmax, RefRow::LogSoftmax, RefRow::LogSumExp}) {
    const char* fname = op == RefRow::Softmax      ? "softmax"
                        : op == RefRow::LogSoftmax ? "log_softmax"
                                                   : "logsumexp";
    for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
      for (int variant = 0; variant < 6; ++variant) {
        Rng rng(++seed);
        Shape shape = variant == 5 ? Shape{300, 257} : random_shape(rng, 1, 4, 6, false);
        const int nd = static_cast<int>(shape.size());
        int dim = static_cast<int>(rng() % nd);
        if (rng() % 2) dim -= nd;
        const bool keepdim = rng() % 2;
        Layout lay = random_layout(rng, false);
        OpCase c;
        c.family = "rowops";
        c.name = std::string(fname) + "/" + dtype_name(dt) + "/" + shape_tag(shape) + "(" +
                 layout_name(lay) + ")/dim=" + std::to_string(dim) + (keepdim ? "/keepdim" : "");
        c.dtype = dt;
        c.seed = seed;
        const uint64_t s = seed;
        c.inputs = [=](Device dev) {
          Rng r(s);
          return std::vector<NDArray>{make_array(r, shape, dt, Domain::Real, lay, dev)};
        };
        c.run = [=](const std::vector<NDArray>& in) {
          if (op == RefRow::Softmax) return std::vector<NDArray>{softmax(in[0], dim)};
          if (op == RefRow::LogSoftmax) return std::vector<NDArray>{log_softmax(in[0], dim)};
          return std::vector<NDArray>{logsumexp(in[0], dim, keepdim)};
        };
        c.reference = [=](const std::vector<HostArray>& in) {
          return std::vector<HostArray>{row_reference(op, in[0], dim, keepdim)};
        };
        c.tol = tol_for(dt);
        if (dt == DType::Float32) c.tol = {1e-6, 1e-5};
        cases.push_back(c);
      }
    }
  }
  // Rows of -inf: softmax / log_softmax give NaN and logsumexp -inf, as in torch.
  for (RefRow op : {RefRow::Softmax, RefRow::LogSoftmax, RefRow::LogSumExp}) {
    OpCase c;
    c.family = "rowops";
    c.name = std::string("rowops/") + std::to_string(static_cast<int>(op)) + "/float32/-inf rows";
    c.dtype = DType::Float32;
    c.inputs = [](Device dev) {
      const double inf = std::numeric_limits<double>::infinity();
      std::vector<double> v = {-inf, -inf, -inf, 1.0, -inf, 2.0, 0.5, 0.25, 3.0};
      return std::vector<NDArray>{from_values(v, {3, 3}, DType::Float32, dev)};
    };
    c.run = [=](const std::vector<NDArray>& in) {
      if (op == RefRow::Softmax) return std::vector<NDArray>{softmax(in[0], 1)};
      if (op == RefRow::LogSoftmax) return std::vector<NDArray>{log_softmax(in[0], 1)};
      return std::vector<NDArray>{logsumexp(in[0], 1)};
    };
    c.reference = [=](const std::vector<HostArray>& in) {
      HostArray r = row_reference(op, in[0], 1, false);
      const double nan = std::numeric_limits<double>::quiet_NaN();
      if (op == RefRow::LogSumExp) {
        r.v[0] = -std::numeric_limits<double>::infinity();
      } else {
        r.v[0] = r.v[1] = r.v[2] = nan;
      }
      return std::vector<HostArray>{r};
    };
    c.tol = {1e-6, 1e-5};
    cases.push_back(c);
  }
}

// --- indexing and joining ------------------------------------------------------------------------

inline void add_indexing_cases(std::vector<OpCase>& cases) {
  uint64_t seed = 50000;
  for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16, DType::Int32, DType::Int64}) {
    for (DType index_dt : {DType::Int64, DType::Int32}) {
      for (int variant = 0; variant < 4; ++variant) {
        Rng rng(++seed);
        Shape shape = variant == 3 ? Shape{40, 50, 30} : random_shape(rng, 1, 3, 5, false);
        const int nd = static_cast<int>(shape.size());
        const int dim = static_cast<int>(rng() % nd);
        const int64_t n = shape[dim];
        // k indices with repeats; k == 0 in some cases.
        const int64_t k = variant == 2 ? 0 : 1 + static_cast<int64_t>(rng() % 7);
        std::vector<double> idx(k);
        for (double& v : idx) v = static_cast<double>(rng() % n);
        Layout lay = random_layout(rng, false);
        const uint64_t s = seed;
        Shape src_shape = shape;
        src_shape[dim] = k;
        for (int which = 0; which < 2; ++which) {
          OpCase c;
          c.family = "indexing";
          c.name = std::string(which ? "index_add/" : "index_select/") + dtype_name(dt) + "/" +
                   dtype_name(index_dt) + "/" + shape_tag(shape) + "(" + layout_name(lay) +
                   ")/dim=" + std::to_string(dim) + "/k=" + std::to_string(k);
          c.dtype = dt;
          c.seed = s;
          c.inputs = [=](Device dev) {
            Rng r(s);
            std::vector<NDArray> in{make_array(r, shape, dt, Domain::Real, lay, dev),
                                    from_values(idx, {k}, index_dt, dev)};
            if (which)
              in.push_back(make_array(r, src_shape, dt, Domain::Real, Layout::Transposed, dev));
            return in;
          };
          c.run = [=](const std::vector<NDArray>& in) {
            if (which) return std::vector<NDArray>{index_add(in[0], dim, in[1], in[2])};
            return std::vector<NDArray>{index_select(in[0], dim, in[1])};
          };
          c.reference = [=](const std::vector<HostArray>& in) {
            const HostArray& x = in[0];
            int64_t outer = 1, inner = 1;
            for (int i = 0; i < dim; ++i) outer *= shape[i];
            for (int i = dim + 1; i < nd; ++i) inner *= shape[i];
            HostArray out;
            out.dtype = dt;
            if (which) {
              out.shape = shape;
              out.v = x.v;
              out.scale.assign(x.v.size(), 0.0);
              for (int64_t o = 0; o < outer; ++o)
                for (int64_t j = 0; j < k; ++j)
                  for (int64_t i = 0; i < inner; ++i) {
                    int64_t at = (o * n + static_cast<int64_t>(idx[j])) * inner + i;
                    double add = in[2].v[(o * k + j) * inner + i];
                    out.v[at] += add;
                    out.scale[at] += std::abs(add);
                  }
              for (int64_t i = 0; i < out.numel(); ++i) out.scale[i] += std::abs(x.v[i]);
            } else {
              out.shape = src_shape;
              for (int64_t o = 0; o < outer; ++o)
                for (int64_t j = 0; j < k; ++j)
                  for (int64_t i = 0; i < inner; ++i)
                    out.v.push_back(x.v[(o * n + static_cast<int64_t>(idx[j])) * inner + i]);
            }
            return std::vector<HostArray>{out};
          };
          // index_add sums repeated rows: bf16 rounds after each addition.
          c.tol = which && dt == DType::BFloat16 ? Tolerance{1e-2, 2e-2} : op_tol(dt, dt);
          cases.push_back(c);
        }
      }
    }
  }
  // embedding: ids of any shape -> ids.shape + [d].
  for (DType dt : {DType::Float32, DType::BFloat16}) {
    const uint64_t s = ++seed;
    OpCase c;
    c.family = "indexing";
    c.name = std::string("embedding/") + dtype_name(dt) + "/[11,6]/ids[2,3]";
    c.dtype = dt;
    c.seed = s;
    c.inputs = [=](Device dev) {
      Rng r(s);
      std::vector<double> ids = {3, 0, 10, 3, 7, 1};
      return std::vector<NDArray>{make_array(r, {11, 6}, dt, Domain::Real, Layout::Compact, dev),
                                  from_values(ids, {2, 3}, DType::Int64, dev)};
    };
    c.run = [](const std::vector<NDArray>& in) {
      return std::vector<NDArray>{embedding(in[0], in[1])};
    };
    c.reference = [=](const std::vector<HostArray>& in) {
      HostArray out{{2, 3, 6}, dt, {}, {}};
      for (double id : in[1].v)
        for (int64_t j = 0; j < 6; ++j) out.v.push_back(in[0].v[static_cast<int64_t>(id) * 6 + j]);
      return std::vector<HostArray>{out};
    };
    c.tol = {0, 0};
    cases.push_back(c);
  }
}

inline void add_join_cases(std::vector<OpCase>& cases) {
  uint64_t seed = 60000;
  for (DType dt : {DType::Float32, DType::Int64, DType::BFloat16, DType::Bool}) {
    for (int variant = 0; variant < 4; ++variant) {
      Rng rng(++seed);
      Shape base = random_shape(rng, 1, 3, 5, false);
      const int nd = static_cast<int>(base.size());
      const int dim = static_cast<int>(rng() % nd);
      const int parts = 1 + static_cast<int>(rng() % 3);
      std::vector<Shape> shapes;
      std::vector<Layout> lays;
      for (int p = 0; p < parts; ++p) {
        Shape sh = base;
        sh[dim] = static_cast<int64_t>(rng() % 4);  // includes size-0 pieces
        shapes.push_back(sh);
        lays.push_back(random_layout(rng, true));
      }
      const uint64_t s = seed;
      std::string tag;
      for (int p = 0; p < parts; ++p)
        tag += shape_tag(shapes[p]) + "(" + layout_name(lays[p]) + ")";
      auto inputs = [=](Device dev) {
        Rng r(s);
        std::vector<NDArray> in;
        for (int p = 0; p < parts; ++p)
          in.push_back(make_array(r, shapes[p], dt, Domain::Real, lays[p], dev));
        return in;
      };
      // concatenate along dim: out index maps to (piece, offset along dim).
      auto concat_ref = [=](const std::vector<HostArray>& in, const std::vector<Shape>& sh, int d) {
        Shape out_shape = sh[0];
        out_shape[d] = 0;
        for (const Shape& x : sh) out_shape[d] += x[d];
        HostArray out{out_shape, dt, {}, {}};
        for (int64_t i = 0; i < shape_numel(out_shape); ++i) {
          std::vector<int64_t> idx = unravel(i, out_shape);
          size_t p = 0;
          while (idx[d] >= sh[p][d]) idx[d] -= sh[p++][d];
          out.v.push_back(in[p].v[ravel(idx, sh[p])]);
        }
        return out;
      };
      {
        OpCase c;
        c.family = "join";
        c.name = std::string("concatenate/") + dtype_name(dt) + "/dim=" + std::to_string(dim) +
                 "/" + tag;
        c.dtype = dt;
        c.seed = s;
        c.inputs = inputs;
        c.run = [=](const std::vector<NDArray>& in) {
          return std::vector<NDArray>{concatenate(in, s % 2 ? dim - nd : dim)};
        };
        c.reference = [=](const std::vector<HostArray>& in) {
          return std::vector<HostArray>{concat_ref(in, shapes, dim)};
        };
        c.tol = {0, 0};
        cases.push_back(c);
      }
      {
        // stack of equal shapes (all pieces take the first piece's shape).
        OpCase c;
        c.family = "join";
        const int sdim = static_cast<int>(rng() % (nd + 1));
        c.name = std::string("stack/") + dtype_name(dt) + "/dim=" + std::to_string(sdim) + "/" +
                 std::to_string(parts) + "x" + shape_tag(shapes[0]);
        c.dtype = dt;
        c.seed = s;
        c.inputs = [=](Device dev) {
          Rng r(s);
          std::vector<NDArray> in;
          for (int p = 0; p < parts; ++p)
            in.push_back(make_array(r, shapes[0], dt, Domain::Real, lays[p], dev));
          return in;
        };
        c.run = [=](const std::vector<NDArray>& in) {
          return std::vector<NDArray>{stack(in, sdim)};
        };
        c.reference = [=](const std::vector<HostArray>& in) {
          std::vector<HostArray> ex = in;
          std::vector<Shape> sh;
          for (HostArray& h : ex) {
            h.shape.insert(h.shape.begin() + sdim, 1);
            sh.push_back(h.shape);
          }
          return std::vector<HostArray>{concat_ref(ex, sh, sdim)};
        };
        c.tol = {0, 0};
        cases.push_back(c);
      }
      {
        // split of one array into the pieces' sizes: each piece a view of the input.
        OpCase c;
        c.family = "join";
        std::vector<int64_t> sizes;
        for (const Shape& sh : shapes) sizes.push_back(sh[dim]);
        Shape whole = base;
        whole[dim] = 0;
        for (int64_t z : sizes) whole[dim] += z;
        c.name = std::string("split/") + dtype_name(dt) + "/dim=" + std::to_string(dim) + "/" +
                 shape_tag(whole) + "(" + layout_name(lays[0]) + ")";
        c.dtype = dt;
        c.seed = s;
        c.inputs = [=](Device dev) {
          Rng r(s);
          return std::vector<NDArray>{make_array(r, whole, dt, Domain::Real, lays[0], dev)};
        };
        c.run = [=](const std::vector<NDArray>& in) { return split(in[0], sizes, dim); };
        c.reference = [=](const std::vector<HostArray>& in) {
          std::vector<HostArray> outs;
          int64_t at = 0;
          for (size_t p = 0; p < shapes.size(); ++p) {
            HostArray out{shapes[p], dt, {}, {}};
            for (int64_t i = 0; i < shape_numel(shapes[p]); ++i) {
              std::vector<int64_t> idx = unravel(i, shapes[p]);
              idx[dim] += at;
              out.v.push_back(in[0].v[ravel(idx, whole)]);
            }
            at += sizes[p];
            outs.push_back(out);
          }
          return outs;
        };
        c.tol = {0, 0};
        cases.push_back(c);
      }
    }
  }
}

// --- random ------------------------------------------------------------------------------------

// The documented stream (src/backend_cpu/random.cpp) rewritten here in plain double arithmetic:
// element i uses counter offset + i / 4, lane i % 4.
inline double reference_uniform(uint64_t seed, uint64_t offset, int64_t i, DType dt) {
  const uint64_t counter = offset + static_cast<uint64_t>(i / 4);
  const int lane = static_cast<int>(i % 4);
  const Philox4 x = philox4x32_10(seed, counter);
  if (dt == DType::Float64) {
    const Philox4 y = philox4x32_10(seed ^ 0x9E3779B97F4A7C15ull, counter);
    return philox_uniform_double(y.x[lane], x.x[lane]);
  }
  return philox_uniform_float(x.x[lane]);
}

inline void add_random_cases(std::vector<OpCase>& cases) {
  uint64_t seed = 70000;
  for (RandomKind kind : {RandomKind::Uniform, RandomKind::Normal, RandomKind::Bernoulli}) {
    const char* kname = kind == RandomKind::Uniform  ? "uniform"
                        : kind == RandomKind::Normal ? "normal"
                                                     : "bernoulli";
    for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
      for (Shape shape : {Shape{7}, Shape{3, 0}, Shape{301, 257}}) {
        const uint64_t s = ++seed;
        const double p0 = kind == RandomKind::Bernoulli ? 0.3 : -1.5, p1 = 2.5;
        OpCase c;
        c.family = "random";
        c.name = std::string("random/") + kname + "/" + dtype_name(dt) + "/" + shape_tag(shape);
        c.dtype = dt;
        c.seed = s;
        // The only input is an empty array that names the device to draw on.
        c.inputs = [](Device dev) {
          return std::vector<NDArray>{NDArray::empty({0}, DType::Float32, dev)};
        };
        c.run = [=](const std::vector<NDArray>& in) {
          manual_seed(s);
          const Device dev = in[0].device();
          if (kind == RandomKind::Uniform)
            return std::vector<NDArray>{NDArray::uniform(shape, p0, p1, dt, dev)};
          if (kind == RandomKind::Normal)
            return std::vector<NDArray>{NDArray::normal(shape, p0, p1, dt, dev)};
          return std::vector<NDArray>{NDArray::bernoulli(shape, p0, dt, dev)};
        };
        c.reference = [=](const std::vector<HostArray>&) {
          HostArray out{shape, dt, {}, {}};
          const int64_t n = shape_numel(shape);
          for (int64_t i = 0; i < n; ++i) {
            double v;
            if (kind == RandomKind::Uniform) {
              v = p0 + (p1 - p0) * reference_uniform(s, 0, i, dt);
            } else if (kind == RandomKind::Bernoulli) {
              v = reference_uniform(s, 0, i, dt) < p0 ? 1.0 : 0.0;
            } else {
              const int64_t pair = i - (i % 2);
              const double a = reference_uniform(s, 0, pair, dt),
                           b = reference_uniform(s, 0, pair + 1, dt);
              const double r = std::sqrt(-2.0 * std::log(1.0 - a)), theta = 6.283185307179586 * b;
              v = p0 + p1 * (i % 2 ? r * std::sin(theta) : r * std::cos(theta));
            }
            out.v.push_back(round_to(dt, v));
          }
          return std::vector<HostArray>{out};
        };
        // float32 normals: logf / cosf against double; the extreme tail (a near 1) amplifies
        // the rounding of 1 - a, hence the absolute 1e-4.
        c.tol = dt == DType::BFloat16  ? Tolerance{1e-2, 1e-2}
                : dt == DType::Float32 ? Tolerance{1e-4, 1e-5}
                                       : Tolerance{1e-12, 1e-12};
        cases.push_back(c);
      }
    }
  }
}

// --- the whole table
// ---------------------------------------------------------------------------------

inline std::vector<OpCase> all_op_cases() {
  std::vector<OpCase> cases;
  add_unary_cases(cases);
  add_unary_special_cases(cases);
  add_binary_cases(cases);
  add_where_cases(cases);
  add_copy_cases(cases);
  add_fill_cases(cases);
  add_reduce_cases(cases);
  add_matmul_cases(cases);
  add_row_cases(cases);
  add_indexing_cases(cases);
  add_join_cases(cases);
  add_random_cases(cases);
  // Random shapes can repeat within a family: the seed makes every name unique.
  for (OpCase& c : cases) c.name += " #" + std::to_string(c.seed);
  return cases;
}

inline std::vector<OpCase> op_cases(const std::string& family) {
  std::vector<OpCase> out;
  for (OpCase& c : all_op_cases())
    if (c.family == family) out.push_back(std::move(c));
  return out;
}

}  // namespace needle::optest
