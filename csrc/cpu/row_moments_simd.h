// Per-row, per-channel first and second moments about a shift, compiled once per instruction set.
//
// No include guard on purpose: row_moments.cpp includes this file once per instruction set (simd_instances.h), each time
// under a different `#pragma GCC target` and with these macros defined:
//   CVDEEP_SIMD_NS   namespace of this instance (avx512, avx2, generic)
//   CVDEEP_LANES     floats per vector register (16, 8, 4)
// The caller includes <cstdint> and <cstring> before the first inclusion.

namespace cvdeep {
namespace row_moments {
namespace CVDEEP_SIMD_NS {

#include "simd_types.h"

typedef double vdouble __attribute__((vector_size(CVDEEP_LANES * 8)));

// One row of `width` pixels of `channels` floats (channels innermost): sums over the row of
// d = x - shift[c] and of d * d, accumulated in double, into sums[c] and squares[c].
static void run(const float* row, int64_t width, int64_t channels, const float* shift, double* sums,
                double* squares) {
  const int64_t full = channels - channels % kLanes;
  for (int64_t c = 0; c < full; c += kLanes) {
    vfloat centre;
    std::memcpy(&centre, shift + c, sizeof centre);
    vdouble sum = vdouble{}, square = vdouble{};
    for (int64_t w = 0; w < width; ++w) {
      vfloat x;
      std::memcpy(&x, row + w * channels + c, sizeof x);
      const vdouble d = __builtin_convertvector(x - centre, vdouble);
      sum += d;
      square += d * d;
    }
    std::memcpy(sums + c, &sum, sizeof sum);
    std::memcpy(squares + c, &square, sizeof square);
  }
  for (int64_t c = full; c < channels; ++c) {  // channel counts that are not a multiple of the lanes
    double sum = 0.0, square = 0.0;
    for (int64_t w = 0; w < width; ++w) {
      const double d = static_cast<double>(row[w * channels + c] - shift[c]);
      sum += d;
      square += d * d;
    }
    sums[c] = sum;
    squares[c] = square;
  }
}

}  // namespace CVDEEP_SIMD_NS
}  // namespace row_moments
}  // namespace cvdeep
