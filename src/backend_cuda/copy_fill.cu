// Data movement: copy (with dtype conversion, into possibly strided views), fill and where.
#include <cstring>

#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/elementwise.cuh"

namespace needle::cuda {
namespace {

// Moves a stored value unchanged (same dtype on both sides).
template <typename Bits>
struct MoveBits {
  __device__ Bits operator()(Bits v) const { return v; }
};

template <typename To, typename From>
struct Convert {
  __device__ To operator()(From v) const { return convert<To>(v); }
};

template <typename Bits>
struct FillBits {
  Bits value;
  __device__ Bits operator()() const { return value; }
};

template <typename Bits>
struct Select {
  __device__ Bits operator()(bool c, Bits a, Bits b) const { return c ? a : b; }
};

}  // namespace

// N = number of elements of dst (src has the same shape).
void copy(const ArrayRef& src, const ArrayRef& dst) {
  if (dst.numel() == 0) return;
  if (src.dtype == dst.dtype) {
    size_t size = itemsize(dst.dtype);
    // A dense-to-dense copy of one dtype is a plain memcpy on the stream.
    if (src.is_compact() && dst.is_compact()) {
      NEEDLE_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.numel() * size,
                                        cudaMemcpyDeviceToDevice, stream()));
      return;
    }
    NEEDLE_DISPATCH_BITS(
        size, [&] { launch_elementwise<bits_t, bits_t>("copy", MoveBits<bits_t>{}, dst, src); });
    return;
  }
  NEEDLE_DISPATCH_ALL(dst.dtype, "copy", [&] {
    using to_t = scalar_t;
    NEEDLE_DISPATCH_ALL(src.dtype, "copy", [&] {
      launch_elementwise<to_t, scalar_t>("copy", Convert<to_t, scalar_t>{}, dst, src);
    });
  });
}

void fill(const ArrayRef& dst, double value) {
  if (dst.numel() == 0) return;
  // The value is converted once on the host; the kernel only stores its bit pattern.
  uint64_t bits = 0;
  size_t size = itemsize(dst.dtype);
  NEEDLE_DISPATCH_ALL(dst.dtype, "fill", [&] {
    scalar_t v = convert<scalar_t>(value);
    std::memcpy(&bits, &v, sizeof(scalar_t));
  });
  if (bits == 0 && dst.is_compact()) {
    NEEDLE_CUDA_CHECK(cudaMemsetAsync(dst.data, 0, dst.numel() * size, stream()));
    return;
  }
  NEEDLE_DISPATCH_BITS(size, [&] {
    launch_elementwise<bits_t>("fill", FillBits<bits_t>{static_cast<bits_t>(bits)}, dst);
  });
}

void where(const ArrayRef& cond, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out) {
  NEEDLE_CHECK(cond.dtype == DType::Bool, TypeError, "cuda where: condition must be bool, got ",
               dtype_name(cond.dtype));
  NEEDLE_CHECK(a.dtype == out.dtype && b.dtype == out.dtype, TypeError,
               "cuda where: a, b and out must share a dtype, got ", dtype_name(a.dtype), ", ",
               dtype_name(b.dtype), " and ", dtype_name(out.dtype));
  NEEDLE_DISPATCH_BITS(itemsize(out.dtype), [&] {
    launch_elementwise<bits_t, bool, bits_t, bits_t>("where", Select<bits_t>{}, out, cond, a, b);
  });
}

}  // namespace needle::cuda
