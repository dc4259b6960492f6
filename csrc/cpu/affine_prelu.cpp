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

#define CVDEEP_SIMD_BODY "affine_prelu_simd.h"
#include "simd_instances.h"

namespace cvdeep {
namespace {

constexpr int64_t kGrainElements = 1 << 16;  // elements per parallel task

// The pixel stride of `out` when its pixels lie at equal steps with channels innermost (a channel
// slice of a wider channels-last map, permuted so), else -1.
int64_t pixel_stride(const at::Tensor& out) {
  if (out.stride(-1) != 1) return -1;
  if (out.dim() == 1) return out.size(0);
  for (int64_t d = 0; d + 2 < out.dim(); ++d) {
    if (out.size(d) != 1 && out.stride(d) != out.stride(d + 1) * out.size(d + 1)) return -1;
  }
  return out.stride(-2);
}

// x: (..., C) float32, contiguous (a channels-last map permuted to channels innermost);
// scale, shift, slope: (C,) float32; out: x's shape, channels innermost at equal pixel steps.
at::Tensor& affine_prelu_into_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                  const at::Tensor& slope, at::Tensor& out) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat, "affine_prelu: float32 only, got ",
              x.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && x.is_contiguous(), "affine_prelu: x must be contiguous with channels last");
  TORCH_CHECK(out.sizes() == x.sizes(), "affine_prelu: out must have x's shape ", x.sizes(), ", got ", out.sizes());
  const int64_t channels = x.size(-1);
  const int64_t stride = pixel_stride(out);
  TORCH_CHECK(stride >= channels, "affine_prelu: out must hold its channels innermost at equal pixel steps");
  for (const at::Tensor* t : {&scale, &shift, &slope}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->dim() == 1 && t->size(0) == channels,
                "affine_prelu: scale, shift and slope must be float32 of shape (", channels, ")");
  }
  if (x.numel() == 0) return out;
  const at::Tensor a = scale.contiguous(), b = shift.contiguous(), s = slope.contiguous();
  const int64_t pixels = x.numel() / channels;
  const float* in = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>(), *ps = s.data_ptr<float>();
  const Isa isa = active_isa();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(channels, 1));
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    const float* from = in + begin * channels;
    float* to = dst + begin * stride;
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
      case Isa::avx512: affine_prelu::avx512::run(from, to, stride, end - begin, channels, pa, pb, ps); break;
      case Isa::avx2: affine_prelu::avx2::run(from, to, stride, end - begin, channels, pa, pb, ps); break;
#endif
      default: affine_prelu::generic::run(from, to, stride, end - begin, channels, pa, pb, ps);
    }
  });
  return out;
}

// The same into a new contiguous (..., C) tensor.
at::Tensor affine_prelu_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                            const at::Tensor& slope) {
  at::Tensor out = at::empty(x.sizes(), x.options());  // contiguous: the strides of size-1 dims normalised
  affine_prelu_into_cpu(x, scale, shift, slope, out);
  return out;
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def("affine_prelu(Tensor x, Tensor scale, Tensor shift, Tensor slope) -> Tensor");
  m.def("affine_prelu_into(Tensor x, Tensor scale, Tensor shift, Tensor slope, Tensor(a!) out) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) {
  m.impl("affine_prelu", &cvdeep::affine_prelu_cpu);
  m.impl("affine_prelu_into", &cvdeep::affine_prelu_into_cpu);
}
