// cvdeep::soft_nms on CPU: greedy Gaussian soft-NMS on points, O(N * picks).
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

namespace cvdeep {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nms_cpu(const at::Tensor& keypoints, const at::Tensor& scores,
                                                            double sigma, int64_t max_keypoints, double min_score) {
  TORCH_CHECK(keypoints.dim() == 2 && keypoints.size(1) == 2, "soft_nms: keypoints must be (N, 2), got ",
              keypoints.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == keypoints.size(0), "soft_nms: scores must be (N,), got ",
              scores.sizes(), " for ", keypoints.size(0), " keypoints");
  TORCH_CHECK(sigma > 0, "soft_nms: sigma must be > 0, got ", sigma);
  const int64_t n = keypoints.size(0);
  const int64_t limit = max_keypoints > 0 ? std::min(n, max_keypoints) : n;
  at::Tensor points = keypoints.to(at::kFloat).contiguous();
  at::Tensor remaining = scores.to(at::kFloat).contiguous().clone();
  const float* xy = points.data_ptr<float>();
  float* score = remaining.data_ptr<float>();
  const float inv_two_sigma2 = static_cast<float>(1.0 / (2.0 * sigma * sigma));
  const float lowest = -std::numeric_limits<float>::infinity();
  // Non-finite scores never take part (they would turn into NaN under decay).
  std::vector<uint8_t> alive(n);
  for (int64_t i = 0; i < n; ++i) alive[i] = std::isfinite(score[i]);
  std::vector<int64_t> picked;
  std::vector<float> picked_scores;
  picked.reserve(limit);
  // The first candidate is found by a plain scan; afterwards each decay pass also finds
  // the next maximum (first index among equal scores, like torch.argmax).
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i)
    if (alive[i] && (best < 0 || score[i] > score[best])) best = i;
  while (static_cast<int64_t>(picked.size()) < limit && best >= 0 && score[best] > min_score) {
    picked.push_back(best);
    picked_scores.push_back(score[best]);
    alive[best] = 0;
    const float bx = xy[2 * best], by = xy[2 * best + 1];
    int64_t next = -1;
    float next_score = lowest;
    for (int64_t i = 0; i < n; ++i) {
      if (!alive[i]) continue;
      const float dx = xy[2 * i] - bx, dy = xy[2 * i + 1] - by;
      score[i] *= -std::expm1(-(dx * dx + dy * dy) * inv_two_sigma2);  // 1 - Gaussian overlap
      if (next < 0 || score[i] > next_score) {
        next = i;
        next_score = score[i];
      }
    }
    best = next;
  }
  const int64_t count = static_cast<int64_t>(picked.size());
  at::Tensor index = at::empty({count}, keypoints.options().dtype(at::kLong));
  std::copy(picked.begin(), picked.end(), index.data_ptr<int64_t>());
  at::Tensor kept = at::empty({count}, scores.options().dtype(at::kFloat));
  std::copy(picked_scores.begin(), picked_scores.end(), kept.data_ptr<float>());
  return {keypoints.index_select(0, index), kept.to(scores.scalar_type()), index};
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def(
      "soft_nms(Tensor keypoints, Tensor scores, float sigma, int max_keypoints=-1, float min_score=0.0) "
      "-> (Tensor keypoints, Tensor scores, Tensor indices)");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("soft_nms", &cvdeep::soft_nms_cpu); }
