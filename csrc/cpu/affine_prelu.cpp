// An InstanceNorm's per-channel affine form followed by a PReLU, in one pass over a
// channels-last float32 map: DISK's gating, which torch runs as three passes (addcmul, then
// PReLU's slow channels-last kernel) at ~1.5 ns per element.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "cpu_features.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,fma,avx2")
#define CVDEEP_SIMD_NS avx512
#define CVDEEP_LANES 16
#include "affine_prelu_simd.h"
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CVDEEP_SIMD_NS avx2
#define CVDEEP_LANES 8
#include "affine_prelu_simd.h"
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#pragma GCC pop_options

#define CVDEEP_SIMD_NS generic
#define CVDEEP_LANES 4
#include "affine_prelu_simd.h"
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES

namespace cvdeep {
namespace {

constexpr int64_t kGrainElements = 1 << 16;  // elements per parallel task

// x: (..., C) float32, contiguous (a channels-last map permuted to channels innermost);
// scale, shift, slope: (C,) float32. Returns a new (..., C) contiguous tensor.
at::Tensor affine_prelu_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                            const at::Tensor& slope) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "affine_prelu: float32 only, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && x.is_contiguous(), "affine_prelu: x must be contiguous with channels last");
  const int64_t channels = x.size(-1);
  for (const at::Tensor* t : {&scale, &shift, &slope}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->dim() == 1 && t->size(0) == channels,
                "affine_prelu: scale, shift and slope must be float32 of shape (", channels, ")");
  }
  const at::Tensor a = scale.contiguous(), b = shift.contiguous(), s = slope.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());  // contiguous: the strides of size-1 dims normalised
  if (x.numel() == 0) return out;
  const int64_t pixels = x.numel() / channels;
  const float* in = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>(), *ps = s.data_ptr<float>();
  const Isa isa = active_isa();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(channels, 1));
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    const float* from = in + begin * channels;
    float* to = dst + begin * channels;
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
      case Isa::avx512: affine_prelu::avx512::run(from, to, end - begin, channels, pa, pb, ps); break;
      case Isa::avx2: affine_prelu::avx2::run(from, to, end - begin, channels, pa, pb, ps); break;
#endif
      default: affine_prelu::generic::run(from, to, end - begin, channels, pa, pb, ps);
    }
  });
  return out;
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def("affine_prelu(Tensor x, Tensor scale, Tensor shift, Tensor slope) -> Tensor");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("affine_prelu", &cvdeep::affine_prelu_cpu); }
