// The vector types of one instruction-set instance of a kernel body. No include guard on
// purpose: a *_simd.h body includes it inside its CVDEEP_SIMD_NS namespace, once per instance,
// with CVDEEP_LANES (floats per vector register) defined.
typedef float vfloat __attribute__((vector_size(CVDEEP_LANES * 4)));
typedef int32_t vint __attribute__((vector_size(CVDEEP_LANES * 4)));
constexpr int kLanes = CVDEEP_LANES;
