// Shared by the CPU and CUDA deformable-convolution kernels (csrc/cpu/deform_conv.cpp,
// csrc/cuda/deform_conv.cu): the geometry, the per-tap bilinear gather (host and device)
// and the host driver that turns gathered columns into the output with one GEMM per group.
//
// Semantics are torchvision.ops.deform_conv2d's; see cvdeep/ops/deform.py.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <functional>

namespace cvdeep {

struct DeformGeometry {
  int64_t channels, height, width;
  int64_t groups, offset_groups, kh, kw, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// One (output pixel p, offset group og, tap k): the four bilinear corner weights (times the
// DCNv2 mask) are computed once and applied to all of the group's channels, read from a
// channels-last image and written into the row of p in the (pixels, groups, taps, C/groups)
// column matrix. Corners outside the image read a clamped pixel with weight zero.
template <typename scalar_t>
C10_HOST_DEVICE inline void gather_tap(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                                       const scalar_t* __restrict__ mask, scalar_t* __restrict__ columns,
                                       const DeformGeometry& g, int64_t p, int64_t og, int64_t k) {
  const int64_t taps = g.kh * g.kw, pixels = g.out_h * g.out_w;
  const int64_t og_channels = g.channels / g.offset_groups, w_channels = g.channels / g.groups;
  const int64_t oy = p / g.out_w, ox = p % g.out_w, ki = k / g.kw, kj = k % g.kw;
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
  auto clamp = [](int64_t v, int64_t hi) { return v < 0 ? int64_t(0) : (v > hi ? hi : v); };
  const int64_t cy0 = clamp(y0, g.height - 1), cy1 = clamp(y0 + 1, g.height - 1);
  const int64_t cx0 = clamp(x0, g.width - 1), cx1 = clamp(x0 + 1, g.width - 1);
  const int64_t c_begin = og * og_channels;
  const scalar_t* p00 = input + (cy0 * g.width + cx0) * g.channels + c_begin;
  const scalar_t* p01 = input + (cy0 * g.width + cx1) * g.channels + c_begin;
  const scalar_t* p10 = input + (cy1 * g.width + cx0) * g.channels + c_begin;
  const scalar_t* p11 = input + (cy1 * g.width + cx1) * g.channels + c_begin;
  scalar_t* row = columns + p * taps * g.channels;
  // Walk the group's channels in runs that stay inside one weight group.
  for (int64_t c = 0; c < og_channels;) {
    const int64_t wg = (c_begin + c) / w_channels;
    const int64_t limit = (wg + 1) * w_channels - c_begin;
    const int64_t run_end = limit < og_channels ? limit : og_channels;
    scalar_t* out = row + (wg * taps + k) * w_channels - wg * w_channels + c_begin;
    for (; c < run_end; ++c) out[c] = w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c];
  }
}

// Gathers the columns of one image: (channels-last input, offset, mask or null, columns, geometry).
using GatherColumns = std::function<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
                                         const DeformGeometry&)>;

// Checks the arguments, gathers each image's columns with `gather` and multiplies them with the
// weights (one GEMM per group); returns a channels_last (B, Cout, Hout, Wout) tensor.
inline at::Tensor deform_conv2d_forward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                                        const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mask,
                                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                        int64_t dil_h, int64_t dil_w, const GatherColumns& gather) {
  TORCH_CHECK(input.dim() == 4 && offset.dim() == 4 && weight.dim() == 4, "deform_conv2d: 4-D tensors expected");
  DeformGeometry g{};
  const int64_t batch = input.size(0), out_channels = weight.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  TORCH_CHECK(weight.size(1) > 0 && g.channels % weight.size(1) == 0, "deform_conv2d: bad weight groups");
  g.groups = g.channels / weight.size(1);
  TORCH_CHECK(out_channels % g.groups == 0, "deform_conv2d: output channels do not split into groups");
  g.offset_groups = offset.size(1) / (2 * g.kh * g.kw);
  TORCH_CHECK(g.offset_groups > 0 && g.channels % g.offset_groups == 0, "deform_conv2d: bad offset groups");
  g.stride_h = stride_h; g.stride_w = stride_w; g.pad_h = pad_h; g.pad_w = pad_w; g.dil_h = dil_h; g.dil_w = dil_w;
  g.out_h = (g.height + 2 * pad_h - dil_h * (g.kh - 1) - 1) / stride_h + 1;
  g.out_w = (g.width + 2 * pad_w - dil_w * (g.kw - 1) - 1) / stride_w + 1;
  TORCH_CHECK(offset.size(0) == batch && offset.size(2) == g.out_h && offset.size(3) == g.out_w,
              "deform_conv2d: offset size mismatch");

  const int64_t taps = g.kh * g.kw, pixels = g.out_h * g.out_w;
  const int64_t w_channels = g.channels / g.groups, out_per_group = out_channels / g.groups;
  const auto nhwc = input.permute({0, 2, 3, 1}).contiguous();  // free for a channels_last input
  const auto offset_c = offset.to(input.scalar_type()).contiguous();
  at::Tensor mask_c;
  if (mask.has_value() && mask->defined()) mask_c = mask->to(input.scalar_type()).contiguous();
  // (groups, Cout/groups, taps * Cin/groups): the tap-major order of the columns.
  const auto kernels = weight.to(input.scalar_type()).permute({0, 2, 3, 1}).reshape({g.groups, out_per_group, taps * w_channels});
  auto columns = at::empty({pixels, g.groups, taps * w_channels}, input.options());
  auto output = at::empty({batch, g.out_h, g.out_w, out_channels}, input.options());
  for (int64_t b = 0; b < batch; ++b) {
    gather(nhwc[b], offset_c[b], mask_c.defined() ? mask_c[b] : mask_c, columns, g);
    auto out_b = output[b].view({pixels, g.groups, out_per_group});
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      auto product = at::mm(columns.select(1, gi), kernels[gi].t());
      if (bias.has_value() && bias->defined()) product.add_(bias->narrow(0, gi * out_per_group, out_per_group));
      out_b.select(1, gi).copy_(product);
    }
  }
  return output.permute({0, 3, 1, 2});
}

}  // namespace cvdeep
