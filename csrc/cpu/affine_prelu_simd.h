// Per-channel affine map followed by a per-channel PReLU, compiled once per instruction set.
//
// No include guard on purpose: affine_prelu.cpp includes this file once per instruction set (simd_instances.h), each time
// under a different `#pragma GCC target` and with these macros defined:
//   CVDEEP_SIMD_NS   namespace of this instance (avx512, avx2, generic)
//   CVDEEP_LANES     floats per vector register (16, 8, 4)
// The caller includes <cstdint> and <cstring> before the first inclusion.

namespace cvdeep {
namespace affine_prelu {
namespace CVDEEP_SIMD_NS {

#include "simd_types.h"

// y = x * scale[c] + shift[c] (the compiler may fuse it into one multiply-add: within an ulp of
// torch's addcmul); out = y where y > 0, else y * slope[c]. NaN stays NaN.
static inline vfloat gate(vfloat x, vfloat scale, vfloat shift, vfloat slope) {
  const vfloat y = x * scale + shift;
  return y > vfloat{} ? y : y * slope;
}

// `pixels` rows of `channels` floats each (channels innermost), from `in` to `out`, whose pixels
// lie `out_stride` floats apart (channels, or more when `out` is a channel slice of a wider map).
static void run(const float* in, float* out, int64_t out_stride, int64_t pixels, int64_t channels, const float* scale,
                const float* shift, const float* slope) {
  const int64_t full = channels - channels % kLanes;
  for (int64_t p = 0; p < pixels; ++p) {
    const float* row = in + p * channels;
    float* dst = out + p * out_stride;
    int64_t c = 0;
    for (; c < full; c += kLanes) {
      vfloat x, a, b, s;
      std::memcpy(&x, row + c, sizeof x);
      std::memcpy(&a, scale + c, sizeof a);
      std::memcpy(&b, shift + c, sizeof b);
      std::memcpy(&s, slope + c, sizeof s);
      x = gate(x, a, b, s);
      std::memcpy(dst + c, &x, sizeof x);
    }
    for (; c < channels; ++c) {  // channel counts that are not a multiple of the lanes
      const float y = row[c] * scale[c] + shift[c];
      dst[c] = y > 0.0f ? y : y * slope[c];
    }
  }
}

}  // namespace CVDEEP_SIMD_NS
}  // namespace affine_prelu
}  // namespace cvdeep
