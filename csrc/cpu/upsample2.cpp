// Output rows [start, stop) of a x2 bilinear upsampling (align_corners=False) of a channels-last
// float32 map, computed from the source rows they read, optionally gated (per-channel affine map
// and PReLU) as they are written: DISK's full-resolution up block, where torch writes the
// upsampled band, reads it back to gate it and writes it again (memory-bound, 25 MB a band).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "cpu_features.h"

#define CVDEEP_SIMD_BODY "upsample2_simd.h"
#include "simd_instances.h"
#define CVDEEP_SIMD_BODY "row_moments_simd.h"
#include "simd_instances.h"

namespace cvdeep {
namespace {

void check_source(const at::Tensor& x, int64_t start, int64_t stop, const char* op) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 3 && x.is_contiguous(), op,
              ": x must be a contiguous float32 (height, width, channels) tensor");
  TORCH_CHECK(0 <= start && start <= stop && stop <= 2 * x.size(0), op, ": rows [", start, ", ", stop,
              ") outside the ", 2 * x.size(0), " output rows");
}

// Calls emit(o, row) for each output row o in [start, stop) of the x2 upsampling of x (h, w, C),
// `row` (2w x C floats) computed by `compute(top, bottom, t, blended, row)` into row_of(o, scratch).
template <typename RowOf, typename Compute, typename Emit>
void for_each_row(const at::Tensor& x, int64_t start, int64_t stop, RowOf row_of, Compute compute, Emit emit) {
  const int64_t height = x.size(0), row_floats = x.size(1) * x.size(2);
  const float* in = x.data_ptr<float>();
  at::parallel_for(start, stop, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> blended(static_cast<size_t>(row_floats));
    std::vector<float> scratch;
    for (int64_t o = begin; o < end; ++o) {
      // source row (o + 0.5) / 2 - 0.5, clamped at 0: rows o/2 - 1 and o/2 (3/4) for even o,
      // o/2 and o/2 + 1 (1/4) for odd o; the first row reads row 0 alone, the last the last
      const int64_t half = o / 2;
      int64_t lower = o % 2 == 0 ? half - 1 : half;
      float t = o % 2 == 0 ? 0.75f : 0.25f;
      if (lower < 0) {
        lower = 0;
        t = 0.0f;
      }
      const int64_t upper = std::min(lower + 1, height - 1);
      float* row = row_of(o, scratch);
      compute(in + lower * row_floats, in + upper * row_floats, t, blended.data(), row);
      emit(o, row);
    }
  });
}

// One output row of the x2 upsampling (upsample2_simd.h's `row`) on the instruction set `isa`:
// `row` gets 2 * width pixels of `channels` floats `stride` apart, gated when gs, go, gp are set.
void upsample_row(Isa isa, const float* top, const float* bottom, float t, int64_t width, int64_t channels,
                  float* blended, float* row, int64_t stride, const float* gs, const float* go, const float* gp) {
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case Isa::avx512: upsample2::avx512::row(top, bottom, t, width, channels, blended, row, stride, gs, go, gp); break;
    case Isa::avx2: upsample2::avx2::row(top, bottom, t, width, channels, blended, row, stride, gs, go, gp); break;
#endif
    default: upsample2::generic::row(top, bottom, t, width, channels, blended, row, stride, gs, go, gp);
  }
}

// x: (h, w, C) float32, contiguous (a channels-last map permuted to channels innermost); scale,
// shift, slope: (C,) float32 each, or all undefined for no gate.
// Returns (stop - start, 2w, C): rows [start, stop) of the (2h, 2w) upsampled map, gated.
// With `into` ((stop - start, 2w, C), channels innermost at equal pixel steps: a channel slice of a
// wider channels-last map), the rows are written there and it is returned.
at::Tensor upsample2_rows_impl(const at::Tensor& x, int64_t start, int64_t stop, const c10::optional<at::Tensor>& scale,
                               const c10::optional<at::Tensor>& shift, const c10::optional<at::Tensor>& slope,
                               const c10::optional<at::Tensor>& into) {
  check_source(x, start, stop, "upsample2_rows");
  const int64_t width = x.size(1), channels = x.size(2);
  const bool gated = scale.has_value();
  TORCH_CHECK(gated == shift.has_value() && gated == slope.has_value(),
              "upsample2_rows: scale, shift and slope come together");
  at::Tensor a, b, s;
  if (gated) {
    for (const at::Tensor* t : {&*scale, &*shift, &*slope}) {
      TORCH_CHECK(t->scalar_type() == at::kFloat && t->dim() == 1 && t->size(0) == channels,
                  "upsample2_rows: scale, shift and slope must be float32 of shape (", channels, ")");
    }
    a = scale->contiguous();
    b = shift->contiguous();
    s = slope->contiguous();
  }
  const float* gs = gated ? a.data_ptr<float>() : nullptr;
  const float* go = gated ? b.data_ptr<float>() : nullptr;
  const float* gp = gated ? s.data_ptr<float>() : nullptr;
  at::Tensor out = into.has_value() ? *into : at::empty({stop - start, 2 * width, channels}, x.options());
  int64_t stride = channels;
  if (into.has_value()) {
    TORCH_CHECK(out.scalar_type() == at::kFloat && out.dim() == 3 && out.size(0) == stop - start &&
                    out.size(1) == 2 * width && out.size(2) == channels,
                "upsample2_rows: out must be float32 of shape (", stop - start, ", ", 2 * width, ", ", channels, ")");
    stride = out.stride(1);
    TORCH_CHECK(out.stride(2) == 1 && stride >= channels && out.stride(0) == stride * 2 * width,
                "upsample2_rows: out must hold its channels innermost at equal pixel steps");
  }
  if (out.numel() == 0) return out;
  float* dst = out.data_ptr<float>();
  const Isa isa = active_isa();
  const auto compute = [&](const float* top, const float* bottom, float t, float* blended, float* row) {
    upsample_row(isa, top, bottom, t, width, channels, blended, row, stride, gs, go, gp);
  };
  for_each_row(
      x, start, stop, [&](int64_t o, std::vector<float>&) { return dst + (o - start) * 2 * width * stride; },
      compute, [](int64_t, float*) {});
  return out;
}

at::Tensor upsample2_rows_cpu(const at::Tensor& x, int64_t start, int64_t stop, const c10::optional<at::Tensor>& scale,
                              const c10::optional<at::Tensor>& shift, const c10::optional<at::Tensor>& slope) {
  return upsample2_rows_impl(x, start, stop, scale, shift, slope, c10::nullopt);
}

at::Tensor& upsample2_rows_into_cpu(const at::Tensor& x, int64_t start, int64_t stop,
                                    const c10::optional<at::Tensor>& scale, const c10::optional<at::Tensor>& shift,
                                    const c10::optional<at::Tensor>& slope, at::Tensor& out) {
  upsample2_rows_impl(x, start, stop, scale, shift, slope, out);
  return out;
}

// The same rows, never stored: per row, the sums of (value - shift[c]) and its square in double
// (as row_moments of upsample2_rows), for an InstanceNorm's statistics. Returns (stop - start, 2, C).
at::Tensor upsample2_moments_cpu(const at::Tensor& x, int64_t start, int64_t stop, const at::Tensor& shift) {
  check_source(x, start, stop, "upsample2_moments");
  const int64_t width = x.size(1), channels = x.size(2);
  TORCH_CHECK(shift.scalar_type() == at::kFloat && shift.dim() == 1 && shift.size(0) == channels,
              "upsample2_moments: shift must be float32 of shape (", channels, ")");
  const at::Tensor centre = shift.contiguous();
  const float* c = centre.data_ptr<float>();
  at::Tensor out = at::empty({stop - start, 2, channels}, x.options().dtype(at::kDouble));
  if (out.numel() == 0) return out;
  double* dst = out.data_ptr<double>();
  const Isa isa = active_isa();
  const auto compute = [&](const float* top, const float* bottom, float t, float* blended, float* row) {
    upsample_row(isa, top, bottom, t, width, channels, blended, row, channels, nullptr, nullptr, nullptr);
  };
  const auto emit = [&](int64_t o, float* row) {
    double* sums = dst + (o - start) * 2 * channels;
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
      case Isa::avx512: row_moments::avx512::run(row, 2 * width, channels, c, sums, sums + channels); break;
      case Isa::avx2: row_moments::avx2::run(row, 2 * width, channels, c, sums, sums + channels); break;
#endif
      default: row_moments::generic::run(row, 2 * width, channels, c, sums, sums + channels);
    }
  };
  const auto scratch_row = [&](int64_t, std::vector<float>& scratch) {
    scratch.resize(static_cast<size_t>(2 * width * channels));  // one row, reused: stays in cache
    return scratch.data();
  };
  for_each_row(x, start, stop, scratch_row, compute, emit);
  return out;
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def("upsample2_rows(Tensor x, int start, int stop, Tensor? scale=None, Tensor? shift=None, Tensor? slope=None)"
        " -> Tensor");
  m.def("upsample2_rows_into(Tensor x, int start, int stop, Tensor? scale, Tensor? shift, Tensor? slope,"
        " Tensor(a!) out) -> Tensor(a!)");
  m.def("upsample2_moments(Tensor x, int start, int stop, Tensor shift) -> Tensor");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) {
  m.impl("upsample2_rows", &cvdeep::upsample2_rows_cpu);
  m.impl("upsample2_rows_into", &cvdeep::upsample2_rows_into_cpu);
  m.impl("upsample2_moments", &cvdeep::upsample2_moments_cpu);
}
