// The statistics of an InstanceNorm measured band by band: per row, per channel, the sums of
// (x - shift) and (x - shift)^2 in double, in one pass over a channels-last float32 band. torch
// needs four passes (subtract, square, and two sums that first copy the band to double).
#include <cstdint>
#include <cstring>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "cpu_features.h"

#define CVDEEP_SIMD_BODY "row_moments_simd.h"
#include "simd_instances.h"

namespace cvdeep {
namespace {

// x: (R, W, C) float32, contiguous (a channels-last band permuted to channels innermost);
// shift: (C,) float32. Returns (R, 2, C) float64: per row, the sums of x - shift and of its square.
at::Tensor row_moments_cpu(const at::Tensor& x, const at::Tensor& shift) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 3 && x.is_contiguous(),
              "row_moments: x must be a contiguous float32 (rows, width, channels) tensor");
  const int64_t rows = x.size(0), width = x.size(1), channels = x.size(2);
  TORCH_CHECK(shift.scalar_type() == at::kFloat && shift.dim() == 1 && shift.size(0) == channels,
              "row_moments: shift must be float32 of shape (", channels, ")");
  const at::Tensor centre = shift.contiguous();
  at::Tensor out = at::empty({rows, 2, channels}, x.options().dtype(at::kDouble));
  const float* in = x.data_ptr<float>();
  const float* c = centre.data_ptr<float>();
  double* dst = out.data_ptr<double>();
  const Isa isa = active_isa();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = in + r * width * channels;
      double* sums = dst + r * 2 * channels;
      double* squares = sums + channels;
      switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
        case Isa::avx512: row_moments::avx512::run(row, width, channels, c, sums, squares); break;
        case Isa::avx2: row_moments::avx2::run(row, width, channels, c, sums, squares); break;
#endif
        default: row_moments::generic::run(row, width, channels, c, sums, squares);
      }
    }
  });
  return out;
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) { m.def("row_moments(Tensor x, Tensor shift) -> Tensor"); }

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("row_moments", &cvdeep::row_moments_cpu); }
