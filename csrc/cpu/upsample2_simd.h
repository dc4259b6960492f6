// Rows of a x2 bilinear upsampling of a channels-last map, compiled once per instruction set.
//
// No include guard on purpose: upsample2.cpp includes this file once per instruction set (simd_instances.h), each time under
// a different `#pragma GCC target` and with these macros defined:
//   CVDEEP_SIMD_NS   namespace of this instance (avx512, avx2, generic)
//   CVDEEP_LANES     floats per vector register (16, 8, 4)
// The caller includes <cstdint> and <cstring> before the first inclusion.

namespace cvdeep {
namespace upsample2 {
namespace CVDEEP_SIMD_NS {

#include "simd_types.h"

// dst[i] = a[i] * wa + b[i] * wb over `count` floats.
static inline void blend(const float* a, const float* b, float wa, float wb, float* dst, int64_t count) {
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    vfloat x, y;
    std::memcpy(&x, a + i, sizeof x);
    std::memcpy(&y, b + i, sizeof y);
    x = x * wa + y * wb;
    std::memcpy(dst + i, &x, sizeof x);
  }
  for (; i < count; ++i) dst[i] = a[i] * wa + b[i] * wb;
}

// The same over one pixel's `count` channels, then y = v * scale[c] + shift[c] and
// dst[c] = y > 0 ? y : y * slope[c] (an InstanceNorm's affine form and a PReLU).
static inline void blend_gate(const float* a, const float* b, float wa, float wb, float* dst, int64_t count,
                              const float* scale, const float* shift, const float* slope) {
  int64_t c = 0;
  for (; c + kLanes <= count; c += kLanes) {
    vfloat x, y, m, o, s;
    std::memcpy(&x, a + c, sizeof x);
    std::memcpy(&y, b + c, sizeof y);
    std::memcpy(&m, scale + c, sizeof m);
    std::memcpy(&o, shift + c, sizeof o);
    std::memcpy(&s, slope + c, sizeof s);
    x = (x * wa + y * wb) * m + o;
    x = x > vfloat{} ? x : x * s;
    std::memcpy(dst + c, &x, sizeof x);
  }
  for (; c < count; ++c) {
    const float v = (a[c] * wa + b[c] * wb) * scale[c] + shift[c];
    dst[c] = v > 0.0f ? v : v * slope[c];
  }
}

// One output row from its two source rows `top`, `bottom` (weights 1 - t, t): the rows blended
// into `blended` (width * channels floats), then each output pixel from its two source columns.
// Output column 2j reads columns j - 1 and j (weights 1/4, 3/4; column 0 reads column 0 alone),
// column 2j + 1 reads j and j + 1 (3/4, 1/4; the last reads the last alone): align_corners=False.
// The output values are gated (blend_gate) unless `scale` is null.
// Output pixels lie `stride` floats apart (channels, or more in a channel slice of a wider map).
static void row(const float* top, const float* bottom, float t, int64_t width, int64_t channels, float* blended,
                float* out, int64_t stride, const float* scale, const float* shift, const float* slope) {
  blend(top, bottom, 1.0f - t, t, blended, width * channels);
  for (int64_t j = 0; j < width; ++j) {
    const float* here = blended + j * channels;
    const float* left = j > 0 ? here - channels : here;
    const float* right = j + 1 < width ? here + channels : here;
    float* even = out + (2 * j) * stride;
    float* odd = even + stride;
    if (scale == nullptr) {
      blend(left, here, 0.25f, 0.75f, even, channels);
      blend(here, right, 0.75f, 0.25f, odd, channels);
    } else {
      blend_gate(left, here, 0.25f, 0.75f, even, channels, scale, shift, slope);
      blend_gate(here, right, 0.75f, 0.25f, odd, channels, scale, shift, slope);
    }
  }
}

}  // namespace CVDEEP_SIMD_NS
}  // namespace upsample2
}  // namespace cvdeep
