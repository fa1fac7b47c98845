// Ops over lists of arrays (torch's _foreach_*): the squared 2-norm of a whole gradient list and
// its in-place scaling to a maximum norm, as clip_grad_norm_ uses them.
#include <vector>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

// Elements per partial sum. The arrays are cut into pieces of this many elements (an array's
// last piece may be shorter), each summed in order, and the pieces' sums added in order: the
// order depends only on the sizes, never on the thread count.
constexpr int64_t kSquaresPiece = 65536;

struct Piece {
  const ArrayRef* array;
  int64_t begin, end;
};

double piece_sum_squares(const Piece& p) {
  double s = 0;
  NEEDLE_DISPATCH_FLOATING(p.array->dtype, "foreach_sum_squares", [&] {
    const scalar_t* x = static_cast<const scalar_t*>(p.array->data);
    for (int64_t i = p.begin; i < p.end; ++i) {
      const double v = convert<double>(x[i]);
      s += v * v;
    }
  });
  return s;
}

}  // namespace

void foreach_sum_squares(const ArrayRef* arrays, int64_t count, const ArrayRef& out) {
  check_foreach_with_scalar("foreach_sum_squares", arrays, count, out);
  std::vector<Piece> pieces;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t b = 0; b < arrays[i].numel(); b += kSquaresPiece)
      pieces.push_back({&arrays[i], b, std::min(b + kSquaresPiece, arrays[i].numel())});
  std::vector<double> sums(pieces.size());
  parallel_for(static_cast<int64_t>(pieces.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) sums[j] = piece_sum_squares(pieces[j]);
  });
  double total = 0;
  for (double s : sums) total += s;
  *static_cast<double*>(out.data) = total;
}

void foreach_scale_to_max_norm(const ArrayRef* arrays, int64_t count, const ArrayRef& norm,
                               double max_norm) {
  check_foreach_with_scalar("foreach_scale_to_max_norm", arrays, count, norm);
  const double coef = max_norm / (*static_cast<const double*>(norm.data) + 1e-6);
  if (!(coef < 1.0)) return;
  for (int64_t i = 0; i < count; ++i)
    binary_scalar(BinaryOp::Mul, arrays[i], coef, false, arrays[i]);
}

}  // namespace needle::cpu_kernels
