// Deformable convolution (DCNv1/DCNv2) on the CPU, torchvision.ops.deform_conv2d semantics.
//
// Registers the schema torch.ops.cvdeep.deform_conv2d and its CPU kernel: the columns are
// gathered channels-last (so the inner loop over channels is contiguous), in parallel
// over output pixels, then multiplied with the weights by one GEMM per group (see
// csrc/deform_conv.h). Inference only.
#include <torch/library.h>
#include <ATen/Parallel.h>

#include "../deform_conv.h"

namespace cvdeep {
namespace {

void gather_columns_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, at::Tensor& columns,
                        const DeformGeometry& g) {
  const int64_t taps = g.kh * g.kw;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_cpu", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* off = offset.data_ptr<scalar_t>();
    const scalar_t* modulation = mask.defined() ? mask.data_ptr<scalar_t>() : nullptr;
    scalar_t* out = columns.data_ptr<scalar_t>();
    at::parallel_for(0, g.out_h * g.out_w, 16, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        for (int64_t og = 0; og < g.offset_groups; ++og)
          for (int64_t k = 0; k < taps; ++k) gather_tap<scalar_t>(in, off, modulation, out, g, p, og, k);
    });
  });
}

at::Tensor deform_conv2d_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mask,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                             int64_t dil_w) {
  return deform_conv2d_forward(input, offset, weight, bias, mask, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                               gather_columns_cpu);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? bias, Tensor? mask, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w) -> Tensor");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("deform_conv2d", &deform_conv2d_cpu); }

}  // namespace cvdeep
