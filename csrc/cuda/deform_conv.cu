// Deformable convolution (DCNv1/DCNv2) on CUDA, torchvision.ops.deform_conv2d semantics.
//
// Same plan as the CPU kernel (csrc/cpu/deform_conv.cpp, which registers the schema):
// one thread per (output pixel, offset group, tap) computes the four bilinear corner
// weights once and writes the sampled values of the group's channels into a channels-last
// column matrix; cuBLAS (through at::mm) multiplies it with the weights. Inference only.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

namespace cvdeep {
namespace {

struct DeformGeometry {
  int64_t channels, height, width;
  int64_t groups, offset_groups, kh, kw, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

template <typename scalar_t>
__global__ void gather_columns_kernel(const scalar_t* __restrict__ input,   // (H, W, C)
                                      const scalar_t* __restrict__ offset,  // (2 * OG * taps, out_h, out_w)
                                      const scalar_t* __restrict__ mask,    // (OG * taps, out_h, out_w) or null
                                      scalar_t* __restrict__ columns,       // (pixels, groups, taps, C / groups)
                                      DeformGeometry g) {
  const int64_t taps = g.kh * g.kw;
  const int64_t pixels = g.out_h * g.out_w;
  const int64_t total = pixels * g.offset_groups * taps;
  const int64_t og_channels = g.channels / g.offset_groups;
  const int64_t w_channels = g.channels / g.groups;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t k = index % taps;
    const int64_t og = (index / taps) % g.offset_groups;
    const int64_t p = index / (taps * g.offset_groups);
    const int64_t oy = p / g.out_w, ox = p % g.out_w;
    const int64_t ki = k / g.kw, kj = k % g.kw;
    const int64_t channel_index = og * taps + k;
    const scalar_t dy = offset[(2 * channel_index) * pixels + p];
    const scalar_t dx = offset[(2 * channel_index + 1) * pixels + p];
    const scalar_t modulation = mask ? mask[channel_index * pixels + p] : scalar_t(1);
    const scalar_t y = static_cast<scalar_t>(oy * g.stride_h - g.pad_h + ki * g.dil_h) + dy;
    const scalar_t x = static_cast<scalar_t>(ox * g.stride_w - g.pad_w + kj * g.dil_w) + dx;
    const scalar_t y0f = floor(y), x0f = floor(x);
    const int64_t y0 = static_cast<int64_t>(y0f), x0 = static_cast<int64_t>(x0f);
    const scalar_t ly = y - y0f, lx = x - x0f, hy = 1 - ly, hx = 1 - lx;
    const bool in_y0 = y0 >= 0 && y0 < g.height, in_y1 = y0 + 1 >= 0 && y0 + 1 < g.height;
    const bool in_x0 = x0 >= 0 && x0 < g.width, in_x1 = x0 + 1 >= 0 && x0 + 1 < g.width;
    const scalar_t w00 = (in_y0 && in_x0) ? hy * hx * modulation : scalar_t(0);
    const scalar_t w01 = (in_y0 && in_x1) ? hy * lx * modulation : scalar_t(0);
    const scalar_t w10 = (in_y1 && in_x0) ? ly * hx * modulation : scalar_t(0);
    const scalar_t w11 = (in_y1 && in_x1) ? ly * lx * modulation : scalar_t(0);
    const int64_t cy0 = min(max(y0, int64_t(0)), g.height - 1), cy1 = min(max(y0 + 1, int64_t(0)), g.height - 1);
    const int64_t cx0 = min(max(x0, int64_t(0)), g.width - 1), cx1 = min(max(x0 + 1, int64_t(0)), g.width - 1);
    const int64_t c_begin = og * og_channels;
    const scalar_t* p00 = input + (cy0 * g.width + cx0) * g.channels + c_begin;
    const scalar_t* p01 = input + (cy0 * g.width + cx1) * g.channels + c_begin;
    const scalar_t* p10 = input + (cy1 * g.width + cx0) * g.channels + c_begin;
    const scalar_t* p11 = input + (cy1 * g.width + cx1) * g.channels + c_begin;
    scalar_t* row = columns + p * taps * g.channels;
    // Walk the group's channels in runs that stay inside one weight group.
    for (int64_t c = 0; c < og_channels;) {
      const int64_t wg = (c_begin + c) / w_channels;
      const int64_t run_end = min(og_channels, (wg + 1) * w_channels - c_begin);
      scalar_t* out = row + (wg * taps + k) * w_channels - wg * w_channels + c_begin;
      for (; c < run_end; ++c) out[c] = w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c];
    }
  }
}

at::Tensor deform_conv2d_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mask,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                              int64_t dil_w) {
  TORCH_CHECK(input.dim() == 4 && offset.dim() == 4 && weight.dim() == 4, "deform_conv2d: 4-D tensors expected");
  const c10::cuda::CUDAGuard device_guard(input.device());
  DeformGeometry g{};
  const int64_t batch = input.size(0), out_channels = weight.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  TORCH_CHECK(weight.size(1) > 0 && g.channels % weight.size(1) == 0, "deform_conv2d: bad weight groups");
  g.groups = g.channels / weight.size(1);
  g.offset_groups = offset.size(1) / (2 * g.kh * g.kw);
  TORCH_CHECK(g.offset_groups > 0 && g.channels % g.offset_groups == 0, "deform_conv2d: bad offset groups");
  g.stride_h = stride_h; g.stride_w = stride_w; g.pad_h = pad_h; g.pad_w = pad_w; g.dil_h = dil_h; g.dil_w = dil_w;
  g.out_h = (g.height + 2 * pad_h - dil_h * (g.kh - 1) - 1) / stride_h + 1;
  g.out_w = (g.width + 2 * pad_w - dil_w * (g.kw - 1) - 1) / stride_w + 1;
  TORCH_CHECK(offset.size(2) == g.out_h && offset.size(3) == g.out_w, "deform_conv2d: offset size mismatch");

  const int64_t taps = g.kh * g.kw, pixels = g.out_h * g.out_w;
  const int64_t w_channels = g.channels / g.groups, out_per_group = out_channels / g.groups;
  auto nhwc = input.permute({0, 2, 3, 1}).contiguous();
  auto offset_c = offset.contiguous();
  at::Tensor mask_c;
  if (mask.has_value() && mask->defined()) mask_c = mask->to(input.scalar_type()).contiguous();
  auto kernels = weight.permute({0, 2, 3, 1}).reshape({g.groups, out_per_group, taps * w_channels});
  auto columns = at::empty({pixels, g.groups, taps * w_channels}, input.options());
  auto output = at::empty({batch, g.out_h, g.out_w, out_channels}, input.options());
  const int64_t work = pixels * g.offset_groups * taps;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((work + threads - 1) / threads, 65535));
  auto stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t b = 0; b < batch; ++b) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_cuda", [&] {
      gather_columns_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
          nhwc[b].data_ptr<scalar_t>(), offset_c[b].data_ptr<scalar_t>(),
          mask_c.defined() ? mask_c[b].data_ptr<scalar_t>() : nullptr, columns.data_ptr<scalar_t>(), g);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto out_b = output[b].view({pixels, g.groups, out_per_group});
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      auto product = at::mm(columns.select(1, gi), kernels[gi].t());
      if (bias.has_value() && bias->defined()) product.add_(bias->narrow(0, gi * out_per_group, out_per_group));
      out_b.select(1, gi).copy_(product);
    }
  }
  return output.permute({0, 3, 1, 2});
}

}  // namespace

TORCH_LIBRARY_IMPL(cvdeep, CUDA, m) { m.impl("deform_conv2d", &deform_conv2d_cuda); }

}  // namespace cvdeep
