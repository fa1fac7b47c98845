// Autocast regions (see autocast.h).
#include "autograd/autocast.h"

#include "autograd/functional.h"
#include "ndarray/error.h"

namespace needle {

namespace {

// Indexed by DeviceType.
thread_local AutocastState g_state[2];

AutocastState& state_of(DeviceType type) { return g_state[static_cast<int>(type)]; }

}  // namespace

AutocastState autocast_state(DeviceType type) { return state_of(type); }

void set_autocast_state(DeviceType type, AutocastState state) {
  NEEDLE_CHECK(state.dtype == DType::BFloat16, TypeError,
               "autocast: expected dtype bfloat16 (the lower precision needle computes in), got ",
               dtype_name(state.dtype));
  state_of(type) = state;
}

AutocastGuard::AutocastGuard(DeviceType type, AutocastState state)
    : type_(type), prev_(autocast_state(type)) {
  set_autocast_state(type, state);
}

AutocastGuard::~AutocastGuard() { state_of(type_) = prev_; }

DType autocast_lower_dtype(const Tensor& t) {
  const AutocastState& s = state_of(t.device().type);
  return s.enabled && t.dtype() == DType::Float32 ? s.dtype : t.dtype();
}

Tensor autocast_lower(const Tensor& t) {
  if (!t.defined()) return t;
  const DType dt = autocast_lower_dtype(t);
  return dt == t.dtype() ? t : astype(t, dt);
}

DType autocast_float32_dtype(const Tensor& t) {
  const AutocastState& s = state_of(t.device().type);
  return s.enabled && t.dtype() == DType::BFloat16 ? DType::Float32 : t.dtype();
}

Tensor autocast_float32(const Tensor& t) {
  if (!t.defined()) return t;
  const DType dt = autocast_float32_dtype(t);
  return dt == t.dtype() ? t : astype(t, dt);
}

}  // namespace needle
