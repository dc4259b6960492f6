// Deformable convolution (DCNv1/DCNv2) on the CPU, torchvision.ops.deform_conv2d semantics.
//
// Registers the schema torch.ops.cvdeep.deform_conv2d and its CPU kernel. The input is
// read channels-last so that the inner loop over channels is contiguous: for every
// output pixel and kernel tap the four bilinear corner weights (times the DCNv2 mask)
// are computed once and applied to all channels of the offset group. The gathered
// columns form an (L, groups, taps, C/groups) matrix, multiplied with the weights by one
// GEMM per group, which leaves the result channels-last. Inference only.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace cvdeep {
namespace {

struct DeformGeometry {
  int64_t batch, channels, height, width;
  int64_t out_channels, groups, offset_groups, kh, kw, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

template <typename scalar_t>
void gather_columns(const scalar_t* input,     // (H, W, C) of one image
                    const scalar_t* offset,    // (2 * OG * taps, out_h, out_w)
                    const scalar_t* mask,      // (OG * taps, out_h, out_w) or nullptr
                    scalar_t* columns,         // (out_h * out_w, groups, taps, C / groups)
                    const DeformGeometry& g) {
  const int64_t taps = g.kh * g.kw;
  const int64_t pixels = g.out_h * g.out_w;
  const int64_t og_channels = g.channels / g.offset_groups;
  const int64_t w_channels = g.channels / g.groups;
  at::parallel_for(0, pixels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t oy = p / g.out_w, ox = p % g.out_w;
      scalar_t* row = columns + p * taps * g.channels;
      for (int64_t og = 0; og < g.offset_groups; ++og) {
        for (int64_t k = 0; k < taps; ++k) {
          const int64_t ki = k / g.kw, kj = k % g.kw;
          const int64_t channel_index = (og * taps + k);
          const scalar_t dy = offset[(2 * channel_index) * pixels + p];
          const scalar_t dx = offset[(2 * channel_index + 1) * pixels + p];
          const scalar_t modulation = mask ? mask[channel_index * pixels + p] : scalar_t(1);
          const scalar_t y = static_cast<scalar_t>(oy * g.stride_h - g.pad_h + ki * g.dil_h) + dy;
          const scalar_t x = static_cast<scalar_t>(ox * g.stride_w - g.pad_w + kj * g.dil_w) + dx;
          const scalar_t y0f = std::floor(y), x0f = std::floor(x);
          const int64_t y0 = static_cast<int64_t>(y0f), x0 = static_cast<int64_t>(x0f);
          const scalar_t ly = y - y0f, lx = x - x0f;
          const scalar_t hy = 1 - ly, hx = 1 - lx;
          const bool in_y0 = y0 >= 0 && y0 < g.height, in_y1 = y0 + 1 >= 0 && y0 + 1 < g.height;
          const bool in_x0 = x0 >= 0 && x0 < g.width, in_x1 = x0 + 1 >= 0 && x0 + 1 < g.width;
          const scalar_t w00 = (in_y0 && in_x0) ? hy * hx * modulation : scalar_t(0);
          const scalar_t w01 = (in_y0 && in_x1) ? hy * lx * modulation : scalar_t(0);
          const scalar_t w10 = (in_y1 && in_x0) ? ly * hx * modulation : scalar_t(0);
          const scalar_t w11 = (in_y1 && in_x1) ? ly * lx * modulation : scalar_t(0);
          // Corners outside the image read a valid pixel with weight zero (branch-free inner loop).
          const int64_t cy0 = std::min<int64_t>(std::max<int64_t>(y0, 0), g.height - 1);
          const int64_t cy1 = std::min<int64_t>(std::max<int64_t>(y0 + 1, 0), g.height - 1);
          const int64_t cx0 = std::min<int64_t>(std::max<int64_t>(x0, 0), g.width - 1);
          const int64_t cx1 = std::min<int64_t>(std::max<int64_t>(x0 + 1, 0), g.width - 1);
          const int64_t c_begin = og * og_channels;
          const scalar_t* p00 = input + (cy0 * g.width + cx0) * g.channels + c_begin;
          const scalar_t* p01 = input + (cy0 * g.width + cx1) * g.channels + c_begin;
          const scalar_t* p10 = input + (cy1 * g.width + cx0) * g.channels + c_begin;
          const scalar_t* p11 = input + (cy1 * g.width + cx1) * g.channels + c_begin;
          // Walk the group's channels in runs that stay inside one weight group.
          for (int64_t c = 0; c < og_channels;) {
            const int64_t wg = (c_begin + c) / w_channels;
            const int64_t run_end = std::min<int64_t>(og_channels, (wg + 1) * w_channels - c_begin);
            scalar_t* out = row + (wg * taps + k) * w_channels - wg * w_channels + c_begin;
            for (; c < run_end; ++c) out[c] = w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c];
          }
        }
      }
    }
  });
}

at::Tensor deform_conv2d_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mask,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                             int64_t dil_w) {
  TORCH_CHECK(input.dim() == 4 && offset.dim() == 4 && weight.dim() == 4, "deform_conv2d: 4-D tensors expected");
  DeformGeometry g{};
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.out_channels = weight.size(0);
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
  const int64_t w_channels = g.channels / g.groups, out_per_group = g.out_channels / g.groups;
  auto nhwc = input.permute({0, 2, 3, 1}).contiguous();
  auto offset_c = offset.contiguous();
  at::Tensor mask_c;
  if (mask.has_value() && mask->defined()) mask_c = mask->to(input.scalar_type()).contiguous();
  // (groups, Cout/groups, taps * Cin/groups): the tap-major order the columns use.
  auto kernels = weight.permute({0, 2, 3, 1}).reshape({g.groups, out_per_group, taps * w_channels});
  auto columns = at::empty({pixels, g.groups, taps * w_channels}, input.options());
  auto output = at::empty({g.batch, g.out_h, g.out_w, g.out_channels}, input.options());
  for (int64_t b = 0; b < g.batch; ++b) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_cpu", [&] {
      gather_columns<scalar_t>(nhwc[b].data_ptr<scalar_t>(), offset_c[b].data_ptr<scalar_t>(),
                               mask_c.defined() ? mask_c[b].data_ptr<scalar_t>() : nullptr,
                               columns.data_ptr<scalar_t>(), g);
    });
    auto out_b = output[b].view({pixels, g.groups, out_per_group});
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      auto out_g = out_b.select(1, gi);
      auto cols_g = columns.select(1, gi);
      if (bias.has_value() && bias->defined()) {
        at::addmm_out(out_g, bias->narrow(0, gi * out_per_group, out_per_group), cols_g, kernels[gi].t());
      } else {
        at::mm_out(out_g, cols_g, kernels[gi].t());
      }
    }
  }
  return output.permute({0, 3, 1, 2});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? bias, Tensor? mask, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w) -> Tensor");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("deform_conv2d", &deform_conv2d_cpu); }

}  // namespace cvdeep
