// cvdeep::soft_nms on CUDA: the greedy loop runs inside one block (picks depend on each
// other, so there is no parallelism across picks; each pick is a block-wide argmax).
// Per-operator ATen headers rather than ATen/ATen.h: the CUDA build compiles much faster.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace cvdeep {
namespace {

constexpr int kThreads = 1024;

__global__ void soft_nms_kernel(const float* xy, float* score, unsigned char* alive, int64_t n, int64_t limit,
                                float inv_two_sigma2, float min_score, int64_t* picked, float* picked_score,
                                int64_t* count) {
  __shared__ float best_value[kThreads];
  __shared__ int64_t best_index[kThreads];
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) alive[i] = isfinite(score[i]);
  __syncthreads();
  int64_t taken = 0;
  while (taken < limit) {
    // Block argmax over alive scores; equal scores go to the lower index.
    float v = -INFINITY;
    int64_t at = -1;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      if (alive[i] && (at < 0 || score[i] > v)) {
        v = score[i];
        at = i;
      }
    best_value[threadIdx.x] = v;
    best_index[threadIdx.x] = at;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) {
        const float ov = best_value[threadIdx.x + stride];
        const int64_t oi = best_index[threadIdx.x + stride];
        const int64_t mi = best_index[threadIdx.x];
        if (oi >= 0 && (mi < 0 || ov > best_value[threadIdx.x] || (ov == best_value[threadIdx.x] && oi < mi))) {
          best_value[threadIdx.x] = ov;
          best_index[threadIdx.x] = oi;
        }
      }
      __syncthreads();
    }
    const int64_t best = best_index[0];
    const float value = best_value[0];
    __syncthreads();
    if (best < 0 || !(value > min_score)) break;
    if (threadIdx.x == 0) {
      picked[taken] = best;
      picked_score[taken] = value;
      alive[best] = 0;
    }
    __syncthreads();
    const float bx = xy[2 * best], by = xy[2 * best + 1];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      if (alive[i]) {
        const float dx = xy[2 * i] - bx, dy = xy[2 * i + 1] - by;
        score[i] *= -expm1f(-(dx * dx + dy * dy) * inv_two_sigma2);  // 1 - Gaussian overlap
      }
    __syncthreads();
    ++taken;
  }
  if (threadIdx.x == 0) *count = taken;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nms_cuda(const at::Tensor& keypoints, const at::Tensor& scores,
                                                             double sigma, int64_t max_keypoints, double min_score) {
  TORCH_CHECK(keypoints.dim() == 2 && keypoints.size(1) == 2, "soft_nms: keypoints must be (N, 2), got ",
              keypoints.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == keypoints.size(0), "soft_nms: scores must be (N,), got ",
              scores.sizes());
  TORCH_CHECK(sigma > 0, "soft_nms: sigma must be > 0, got ", sigma);
  c10::cuda::CUDAGuard guard(scores.device());
  const int64_t n = keypoints.size(0);
  const int64_t limit = max_keypoints > 0 ? std::min(n, max_keypoints) : n;
  at::Tensor xy = keypoints.to(at::kFloat).contiguous();
  at::Tensor remaining = scores.to(at::kFloat).contiguous().clone();
  at::Tensor alive = at::empty({n}, scores.options().dtype(at::kByte));
  at::Tensor picked = at::empty({limit}, scores.options().dtype(at::kLong));
  at::Tensor picked_score = at::empty({limit}, scores.options().dtype(at::kFloat));
  at::Tensor count = at::zeros({1}, scores.options().dtype(at::kLong));
  if (n > 0) {
    soft_nms_kernel<<<1, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        xy.data_ptr<float>(), remaining.data_ptr<float>(), alive.data_ptr<unsigned char>(), n, limit,
        static_cast<float>(1.0 / (2.0 * sigma * sigma)), static_cast<float>(min_score), picked.data_ptr<int64_t>(),
        picked_score.data_ptr<float>(), count.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int64_t kept = count.item<int64_t>();
  at::Tensor index = picked.slice(0, 0, kept);
  return {keypoints.index_select(0, index), picked_score.slice(0, 0, kept).to(scores.scalar_type()), index};
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_IMPL(cvdeep, CUDA, m) { m.impl("soft_nms", &cvdeep::soft_nms_cuda); }
