"""needle.cuda: CUDA availability, memory statistics and synchronisation (torch.cuda's names).
In a build without CUDA every function but is_available() and device_count() raises
RuntimeError saying so."""
from ._C import cuda as _cuda

is_available = _cuda.is_available
device_count = _cuda.device_count
memory_stats = _cuda.memory_stats
memory_allocated = _cuda.memory_allocated
max_memory_allocated = _cuda.max_memory_allocated
memory_reserved = _cuda.memory_reserved
reset_peak_memory_stats = _cuda.reset_peak_memory_stats
empty_cache = _cuda.empty_cache
synchronize = _cuda.synchronize
set_matmul_precision = _cuda.set_matmul_precision
get_matmul_precision = _cuda.get_matmul_precision
