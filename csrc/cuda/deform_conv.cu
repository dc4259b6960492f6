// Deformable convolution (DCNv1/DCNv2) on CUDA, torchvision.ops.deform_conv2d semantics.
//
// One thread per (output pixel, offset group, tap) gathers the channels-last columns
// (csrc/deform_conv.h, shared with the CPU kernel, which also registers the schema);
// cuBLAS multiplies them with the weights through at::mm. Inference only.
#include <torch/library.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../deform_conv.h"

namespace cvdeep {
namespace {

template <typename scalar_t>
__global__ void gather_columns_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                                      const scalar_t* __restrict__ mask, scalar_t* __restrict__ columns,
                                      DeformGeometry g) {
  const int64_t taps = g.kh * g.kw;
  const int64_t total = g.out_h * g.out_w * g.offset_groups * taps;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t k = index % taps;
    const int64_t og = (index / taps) % g.offset_groups;
    gather_tap<scalar_t>(input, offset, mask, columns, g, index / (taps * g.offset_groups), og, k);
  }
}

void gather_columns_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                         at::Tensor& columns, const DeformGeometry& g) {
  const int64_t work = g.out_h * g.out_w * g.offset_groups * g.kh * g.kw;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((work + threads - 1) / threads, 65535));
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_cuda", [&] {
    gather_columns_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
        mask.defined() ? mask.data_ptr<scalar_t>() : nullptr, columns.data_ptr<scalar_t>(), g);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor deform_conv2d_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mask,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                              int64_t dil_w) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  return deform_conv2d_forward(input, offset, weight, bias, mask, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                               gather_columns_cuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(cvdeep, CUDA, m) { m.impl("deform_conv2d", &deform_conv2d_cuda); }

}  // namespace cvdeep
