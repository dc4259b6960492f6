// cvdeep::nms on CUDA: one thread per pixel tests its window, ATen orders the survivors.
// Per-operator ATen headers rather than ATen/ATen.h: the CUDA build compiles much faster.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/stack.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace cvdeep {
namespace {

// A pixel is kept when it is > threshold, inside the border, and no pixel of its window
// is larger (NaN neighbours never win, NaN pixels are never kept: same as the CPU path).
template <typename T>
__global__ void local_max_kernel(const T* scores, bool* keep, int64_t batch, int64_t height, int64_t width,
                                 int64_t radius, double threshold, int64_t border) {
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= batch * height * width) return;
  const int64_t x = index % width, y = (index / width) % height, b = index / (width * height);
  const T v = scores[index];
  bool kept = static_cast<double>(v) > threshold && x >= border && x < width - border && y >= border &&
              y < height - border;
  const T* image = scores + b * height * width;
  const int64_t y0 = max(int64_t(0), y - radius), y1 = min(height - 1, y + radius);
  const int64_t x0 = max(int64_t(0), x - radius), x1 = min(width - 1, x + radius);
  for (int64_t yy = y0; kept && yy <= y1; ++yy)
    for (int64_t xx = x0; xx <= x1; ++xx)
      if (image[yy * width + xx] > v) {
        kept = false;
        break;
      }
  keep[index] = kept;
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> nms_cuda(const at::Tensor& scores_in, int64_t radius,
                                                                      double threshold, int64_t max_keypoints,
                                                                      int64_t border) {
  TORCH_CHECK(scores_in.dim() == 4 && scores_in.size(1) == 1, "nms: scores must be (B, 1, H, W), got ",
              scores_in.sizes());
  TORCH_CHECK(radius >= 0, "nms: radius must be >= 0, got ", radius);
  c10::cuda::CUDAGuard guard(scores_in.device());
  at::Tensor scores = scores_in.scalar_type() == at::kDouble ? scores_in.contiguous() : scores_in.to(at::kFloat).contiguous();
  const int64_t batch = scores.size(0), height = scores.size(2), width = scores.size(3);
  radius = std::min(radius, std::max(height, width));
  at::Tensor keep = at::empty({batch, height, width}, scores.options().dtype(at::kBool));
  const int64_t total = batch * height * width;
  if (total > 0) {
    const int threads = 256;
    const int64_t blocks = (total + threads - 1) / threads;
    AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "nms_cuda", [&] {
      local_max_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          scores.data_ptr<scalar_t>(), keep.data_ptr<bool>(), batch, height, width, radius, threshold, border);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  std::vector<at::Tensor> keypoints, values;
  for (int64_t b = 0; b < batch; ++b) {
    at::Tensor flat = at::nonzero(keep[b].reshape({-1})).reshape({-1});  // raster order
    at::Tensor s = scores[b].reshape({-1}).index_select(0, flat);
    // Stable descending sort keeps raster order among equal scores.
    at::Tensor order = std::get<1>(s.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
    if (max_keypoints > 0 && max_keypoints < order.size(0)) order = order.slice(0, 0, max_keypoints);
    flat = flat.index_select(0, order);
    keypoints.push_back(at::stack({flat.remainder(width), flat.div(width, "floor")}, 1));
    values.push_back(s.index_select(0, order).to(scores_in.scalar_type()));
  }
  return {keypoints, values};
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_IMPL(cvdeep, CUDA, m) { m.impl("nms", &cvdeep::nms_cuda); }
