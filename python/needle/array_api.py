"""The NDArray-level functions: creation, elementwise ops, reductions and joining on plain
NDArrays (no autograd). `needle` re-exports them today; once the autograd Tensor arrives, the
top-level names create Tensors and these stay here for code that wants raw arrays, as
`needle.array_api` in the original Needle."""
from . import _C

NDArray = _C.NDArray

# Creation.
zeros = _C.zeros
ones = _C.ones
full = _C.full
empty = _C.empty
arange = _C.arange
eye = _C.eye
rand = _C.rand
randn = _C.randn
zeros_like = _C.zeros_like
ones_like = _C.ones_like
full_like = _C.full_like
empty_like = _C.empty_like
rand_like = _C.rand_like
randn_like = _C.randn_like

# Joining and indexing.
concatenate = _C.concatenate
cat = _C.cat
stack = _C.stack
split = _C.split
chunk = _C.chunk
flip = _C.flip
where = _C.where
index_select = _C.index_select
index_add = _C.index_add
embedding = _C.embedding
pad = _C.pad

# Linear algebra, row ops and reductions.
matmul = _C.matmul
softmax = _C.softmax
log_softmax = _C.log_softmax
logsumexp = _C.logsumexp
sum = _C.sum
prod = _C.prod
mean = _C.mean
max = _C.max
min = _C.min
amax = _C.amax
amin = _C.amin
var = _C.var
std = _C.std
argmax = _C.argmax
argmin = _C.argmin
any = _C.any
all = _C.all
clamp = _C.clamp
clip = _C.clip


# The elementwise ops (neg, exp, ..., add, eq, logical_and, ...) are generated in C++ from the op
# lists of src/ndarray/ops.h; the extension names them, so a new op needs no edit here.
for _name in _C.elementwise_ops:
    globals()[_name] = getattr(_C, _name)
del _name
