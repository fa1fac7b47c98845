#!/usr/bin/env bash
# Everything on a fresh Debian 12 machine, in one command: installs missing packages, fetches the
# data packages (best effort), builds needle, and runs every CPU test: the C++ tests
# (`ctest -LE gpu`) and the Python tests (pytest). GPU tests: `ctest --test-dir build -L gpu`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup_deps.sh

# Data-dependent tests skip when the data is absent, so an unreachable registry is not fatal.
if [ -x scripts/fetch_data.sh ]; then
  scripts/fetch_data.sh || echo "test.sh: warning: fetching data failed; tests that need it skip"
fi

scripts/build.sh

status=0
ctest --test-dir "${NEEDLE_BUILD_DIR:-build}" -LE gpu --output-on-failure || status=1
PYTHONPATH="$root/python" /usr/bin/python3 -m pytest -p no:cacheprovider -q tests/python || status=1
exit $status
