// Portability macros shared by host code and CUDA translation units.
#pragma once
#ifdef __CUDACC__
#define NEEDLE_HD __host__ __device__ __forceinline__
#else
#define NEEDLE_HD inline
#endif
