#!/usr/bin/env bash
# The main job. The training app (Pythia-70M / OPT-125M with block-sparse attention) arrives in a
# later issue; until then this builds needle's Python extension and runs a short demo of the
# array API: NumPy round trips, broadcasting, reductions, a softmax attention step and a timing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup_deps.sh
scripts/build.sh --target _C

PYTHONPATH="$root/python" /usr/bin/python3 - <<'PY'
import time

import numpy as np

import needle as ndl
from needle import array_api as nd

ndl.manual_seed(0)
print("needle arrays on", ndl.cpu(), "| CUDA available:", ndl.cuda.is_available())

x = ndl.NDArray(np.arange(6, dtype=np.float32).reshape(2, 3))
print("x =", x)
print("x * 2 + 1 =", (x * 2 + 1).tolist())
print("x.sum(dim=1) =", x.sum(dim=1).tolist(), "| x.mean() =", x.mean().item())
print("x[:, ::-1] =", x[:, ::-1].tolist())
print("np.asarray(x) shares memory with x:", np.shares_memory(np.asarray(x), x.numpy()))

# One attention step, softmax(q k^T / sqrt(d)) v, checked against NumPy in float64.
q, k, v = (nd.randn(4, 8, 16, dtype=ndl.float64) for _ in range(3))
out = nd.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1) @ v
qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
s = qn @ kn.transpose(0, 2, 1) / 4.0
p = np.exp(s - s.max(-1, keepdims=True))
ref = (p / p.sum(-1, keepdims=True)) @ vn
print("attention output", out.shape, "max |needle - numpy| =", float(np.abs(out.numpy() - ref).max()))

devices = [ndl.cpu()] + ([ndl.device("cuda")] if ndl.cuda.is_available() else [])
for device in devices:
    a = nd.randn(1024, 1024, device=device)
    (a @ a).sum().item()  # warm-up (and, on CUDA, the cuBLAS handle)
    start = time.perf_counter()
    reps = 5
    for _ in range(reps):
        c = a @ a
    c.sum().item()  # waits for the device
    seconds = (time.perf_counter() - start) / reps
    print(f"1024x1024 float32 matmul on {device}: {seconds * 1e3:.1f} ms "
          f"({2 * 1024**3 / seconds / 1e9:.1f} GFLOP/s)")
PY
