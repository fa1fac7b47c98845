// The default random generator: a seed and a Philox counter offset. Every random array advances
// the offset past the counters it consumed, so a seeded program is reproducible on any device.
#pragma once
#include <cstdint>

namespace needle {

struct GeneratorState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x853c49e6748fea9bull) { manual_seed(seed); }
  void manual_seed(uint64_t seed) {
    state_.seed = seed;
    state_.offset = 0;
  }
  // Reserves `count` counters (each gives 4 values) and returns the first.
  uint64_t reserve(uint64_t count) {
    uint64_t first = state_.offset;
    state_.offset += count;
    return first;
  }
  uint64_t seed() const { return state_.seed; }
  GeneratorState get_state() const { return state_; }
  void set_state(const GeneratorState& s) { state_ = s; }

 private:
  GeneratorState state_;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace needle
