#!/usr/bin/env bash
# Configures and builds needle in build/ (Release). The CUDA backend is compiled when nvcc is found
# (NEEDLE_CUDA=AUTO; set NEEDLE_CUDA=OFF or ON to force). Extra arguments go to `cmake --build`,
# e.g. `scripts/build.sh --target _C`. Used by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The toolkit's usual home is not on PATH in a fresh shell; CMake looks for nvcc there.
if [ -d /usr/local/cuda/bin ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

build_dir="${NEEDLE_BUILD_DIR:-build}"
generator=()
# The generator can only be chosen when the build directory is first configured.
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); else generator=(-G "Unix Makefiles"); fi
fi

# Debian's python3, not a pyenv one earlier on PATH: numpy and pybind11 come from Debian packages.
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DNEEDLE_CUDA="${NEEDLE_CUDA:-AUTO}" -DPython3_EXECUTABLE=/usr/bin/python3
cmake --build "$build_dir" -j"$(nproc)" "$@"
