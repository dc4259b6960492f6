// cvdeep::softargmax on CUDA: one thread per keypoint, forward and backward.
// Per-operator ATen headers rather than ATen/ATen.h: the CUDA build compiles much faster.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace cvdeep {
namespace {

// Softmax statistics of one window: peak, normaliser, mean offsets and mean score.
template <typename T>
struct WindowStats {
  int64_t cx, cy;
  T peak, total, ox, oy, value;
};

template <typename T>
__device__ WindowStats<T> window_stats(const T* s, int64_t height, int64_t width, T kx, T ky, int64_t radius,
                                       T inv_t) {
  WindowStats<T> w;
  w.cx = static_cast<int64_t>(nearbyint(kx));
  w.cy = static_cast<int64_t>(nearbyint(ky));
  w.peak = -INFINITY;
  for (int64_t oy = -radius; oy <= radius; ++oy)
    for (int64_t ox = -radius; ox <= radius; ++ox) {
      const int64_t x = w.cx + ox, y = w.cy + oy;
      if (x >= 0 && x < width && y >= 0 && y < height) w.peak = max(w.peak, s[y * width + x]);
    }
  w.total = w.ox = w.oy = w.value = 0;
  for (int64_t oy = -radius; oy <= radius; ++oy)
    for (int64_t ox = -radius; ox <= radius; ++ox) {
      const int64_t x = w.cx + ox, y = w.cy + oy;
      if (x < 0 || x >= width || y < 0 || y >= height) continue;
      const T e = exp((s[y * width + x] - w.peak) * inv_t);
      w.total += e;
      w.ox += e * ox;
      w.oy += e * oy;
      w.value += e * s[y * width + x];
    }
  w.ox /= w.total;
  w.oy /= w.total;
  w.value /= w.total;
  return w;
}

template <typename T>
__global__ void forward_kernel(const T* s, const T* kp, int64_t n, int64_t height, int64_t width, int64_t radius,
                               T inv_t, T* refined, T* value) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const WindowStats<T> w = window_stats(s, height, width, kp[2 * i], kp[2 * i + 1], radius, inv_t);
  refined[2 * i] = static_cast<T>(w.cx) + w.ox;
  refined[2 * i + 1] = static_cast<T>(w.cy) + w.oy;
  value[i] = w.value;
}

template <typename T>
__global__ void backward_kernel(const T* s, const T* kp, const T* grad_refined, const T* grad_value, int64_t n,
                                int64_t height, int64_t width, int64_t radius, T inv_t, T* grad) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const WindowStats<T> w = window_stats(s, height, width, kp[2 * i], kp[2 * i + 1], radius, inv_t);
  for (int64_t oy = -radius; oy <= radius; ++oy)
    for (int64_t ox = -radius; ox <= radius; ++ox) {
      const int64_t x = w.cx + ox, y = w.cy + oy;
      if (x < 0 || x >= width || y < 0 || y >= height) continue;
      const T sp = s[y * width + x];
      const T wp = exp((sp - w.peak) * inv_t) / w.total;
      const T g = grad_refined[2 * i] * wp * (ox - w.ox) * inv_t + grad_refined[2 * i + 1] * wp * (oy - w.oy) * inv_t +
                  grad_value[i] * wp * (1 + (sp - w.value) * inv_t);
      atomicAdd(grad + y * width + x, g);  // windows of nearby keypoints overlap
    }
}

at::Tensor flat_scores(const at::Tensor& scores) {
  TORCH_CHECK(scores.dim() >= 2 && scores.numel() == scores.size(-1) * scores.size(-2),
              "softargmax: scores must be (H, W) or (1, 1, H, W), got ", scores.sizes());
  return scores.reshape({scores.size(-2), scores.size(-1)}).contiguous();
}

std::tuple<at::Tensor, at::Tensor> softargmax_forward_cuda(const at::Tensor& scores_in, const at::Tensor& keypoints_in,
                                                           int64_t radius, double temperature) {
  TORCH_CHECK(radius >= 0 && temperature > 0, "softargmax: need window >= 0 and temperature > 0");
  c10::cuda::CUDAGuard guard(scores_in.device());
  at::Tensor scores = flat_scores(scores_in);
  at::Tensor keypoints = keypoints_in.to(scores.scalar_type()).contiguous();
  const int64_t n = keypoints.size(0);
  at::Tensor refined = at::empty({n, 2}, scores.options());
  at::Tensor value = at::empty({n}, scores.options());
  if (n == 0) return {refined, value};
  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "softargmax_forward_cuda", [&] {
    forward_kernel<scalar_t><<<(n + 255) / 256, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        scores.data_ptr<scalar_t>(), keypoints.data_ptr<scalar_t>(), n, scores.size(0), scores.size(1), radius,
        scalar_t(1.0 / temperature), refined.data_ptr<scalar_t>(), value.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {refined, value};
}

at::Tensor softargmax_backward_cuda(const at::Tensor& grad_refined_in, const at::Tensor& grad_value_in,
                                    const at::Tensor& scores_in, const at::Tensor& keypoints_in, int64_t radius,
                                    double temperature) {
  c10::cuda::CUDAGuard guard(scores_in.device());
  at::Tensor scores = flat_scores(scores_in);
  at::Tensor keypoints = keypoints_in.to(scores.scalar_type()).contiguous();
  at::Tensor grad_refined = grad_refined_in.to(scores.scalar_type()).contiguous();
  at::Tensor grad_value = grad_value_in.to(scores.scalar_type()).contiguous();
  const int64_t n = keypoints.size(0);
  at::Tensor grad = at::zeros_like(scores);
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "softargmax_backward_cuda", [&] {
      backward_kernel<scalar_t><<<(n + 255) / 256, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
          scores.data_ptr<scalar_t>(), keypoints.data_ptr<scalar_t>(), grad_refined.data_ptr<scalar_t>(),
          grad_value.data_ptr<scalar_t>(), n, scores.size(0), scores.size(1), radius, scalar_t(1.0 / temperature),
          grad.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return grad.reshape(scores_in.sizes());
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_IMPL(cvdeep, CUDA, m) {
  m.impl("softargmax", &cvdeep::softargmax_forward_cuda);
  m.impl("softargmax_backward", &cvdeep::softargmax_backward_cuda);
}
