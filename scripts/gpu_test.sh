#!/usr/bin/env bash
# The GPU tests, on a machine with a CUDA GPU (such as the device machine of ../shared/DEVICE.md),
# in one command: builds needle with CUDA in build-gpu/ for the machine's own python3 (whose torch
# and transformers are the tests' references), then runs the C++ GPU tests (`ctest -L gpu`) and
# the pytest files that exercise CUDA. CI has no GPU and never runs this; scripts/test.sh is CI's.
#
# Where Eigen, Catch2 and PCRE2 are not installed, run ../shared/device/pack-deps.sh first: this
# script sources the .deps/gpu-env.sh it writes. PYTHON picks the interpreter (default: python3 on
# PATH), NEEDLE_GPU_BUILD_DIR the build directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ -f .deps/gpu-env.sh ]; then
  source .deps/gpu-env.sh
fi
python="${PYTHON:-$(command -v python3)}"
build_dir="${NEEDLE_GPU_BUILD_DIR:-build-gpu}"
extra=()
# The device image's default compiler links libstdc++ statically into shared objects, which
# crashes a Python extension that the interpreter's own libstdc++ already serves; link against
# the system one there (README, "On a GPU machine").
if [ -d /usr/lib/gcc/x86_64-linux-gnu/13 ]; then
  extra+=(-DCMAKE_MODULE_LINKER_FLAGS=-L/usr/lib/gcc/x86_64-linux-gnu/13)
fi
generator=()
if [ ! -f "$build_dir/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi

cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DNEEDLE_CUDA=ON \
  -DPython3_EXECUTABLE="$python" "${extra[@]}"
cmake --build "$build_dir" -j"$(nproc)"

status=0
ctest --test-dir "$build_dir" -L gpu --output-on-failure || status=1
t=tests/python
PYTHONPATH="$root/python" "$python" -m pytest -q -p no:cacheprovider \
  $t/test_cuda_ops.py $t/test_autocast.py $t/test_linear_cross_entropy.py $t/test_autograd.py \
  $t/test_train.py $t/test_profile_train_step.py $t/test_block_sparse_gpu.py \
  $t/test_attention_layer.py $t/test_block_sparse.py $t/test_models.py $t/test_optim.py \
  $t/test_rotary.py $t/test_errors.py $t/test_hf_parity.py || status=1
exit $status
