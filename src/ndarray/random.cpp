// The process-wide default generator behind needle.manual_seed.
#include "ndarray/random.h"

namespace needle {

Generator& default_generator() {
  static Generator gen;
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace needle
