// In-place SELU body, compiled once per instruction set.
//
// No include guard on purpose: selu.cpp includes this file once per instruction set (simd_instances.h), each time under
// a different `#pragma GCC target` and with these macros defined:
//   CVDEEP_SIMD_NS   namespace of this instance (avx512, avx2, generic)
//   CVDEEP_LANES     floats per vector register (16, 8, 4)
// The caller includes <cstdint> and <cstring> before the first inclusion.

namespace cvdeep {
namespace selu {
namespace CVDEEP_SIMD_NS {

#include "simd_types.h"

// SELU (Klambauer et al. 2017): scale * x for x > 0, scale * alpha * (exp(x) - 1) otherwise.
// exp(x) - 1 = 2^n (exp(r) - 1) + (2^n - 1) with x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite
// split of ln2), exp(r) - 1 a degree-7 Taylor polynomial (truncation below 6e-9): a few ulp
// everywhere, exact near 0 where the expm1 form avoids cancellation. Below -87 (2^n would
// leave float's normal range) the result is -scale * alpha to float rounding. NaN stays NaN.
static inline vfloat selu(vfloat x) {
  const vfloat zero = vfloat{} + 0.0f;
  vfloat v = x > zero ? zero : x;  // the negative branch's argument; NaN goes through
  v = v < zero - 87.0f ? zero - 87.0f : v;
  const vfloat shifter = zero + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const vfloat n = (v * 1.44269504088896341f + shifter) - shifter;
  vfloat r = v - n * 0.693145751953125f;  // ln2 = 0.693145751953125 + 1.42860682030941723e-6
  r = r - n * 1.42860682030941723e-6f;
  vfloat p = zero + (1.0f / 5040.0f);
  p = p * r + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r;  // exp(r) - 1
  const vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const vfloat negative = (scale * p + (scale - 1.0f)) * (1.0507009873554804934f * 1.6732632423543772848f);
  return x > zero ? x * 1.0507009873554804934f : negative;
}

static void run(float* data, int64_t count) {
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    vfloat x;
    std::memcpy(&x, data + i, sizeof x);
    x = selu(x);
    std::memcpy(data + i, &x, sizeof x);
  }
  if (i < count) {  // the tail through one padded vector
    vfloat x = vfloat{};
    std::memcpy(&x, data + i, (count - i) * sizeof(float));
    x = selu(x);
    std::memcpy(data + i, &x, (count - i) * sizeof(float));
  }
}

}  // namespace CVDEEP_SIMD_NS
}  // namespace selu
}  // namespace cvdeep
