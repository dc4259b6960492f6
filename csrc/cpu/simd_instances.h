// Includes the kernel body named by CVDEEP_SIMD_BODY (a header name in quotes) once per
// instruction set: AVX-512 and AVX2 on x86, each under its `#pragma GCC target`, and the portable
// one everywhere, in namespaces avx512, avx2 and generic (CVDEEP_SIMD_NS) with CVDEEP_LANES floats
// per vector register. The best one the CPU supports is picked at run time (cpu_features.h), so
// the binary stays portable without -march=native.
//
// No include guard on purpose: a kernel file includes it once per body, e.g.
//   #define CVDEEP_SIMD_BODY "selu_simd.h"
//   #include "simd_instances.h"
// The caller includes <cstdint> and <cstring> first; CVDEEP_SIMD_BODY is undefined afterwards.
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,fma,avx2")
#define CVDEEP_SIMD_NS avx512
#define CVDEEP_LANES 16
#include CVDEEP_SIMD_BODY
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CVDEEP_SIMD_NS avx2
#define CVDEEP_LANES 8
#include CVDEEP_SIMD_BODY
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#pragma GCC pop_options
#endif

#define CVDEEP_SIMD_NS generic
#define CVDEEP_LANES 4
#include CVDEEP_SIMD_BODY
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#undef CVDEEP_SIMD_BODY
