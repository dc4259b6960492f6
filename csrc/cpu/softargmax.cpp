// cvdeep::softargmax on CPU: sub-pixel refinement by a windowed soft-argmax, with its
// backward (torch.autograd.Function in cvdeep/ops wires the two together).
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

namespace cvdeep {
namespace {

// Window of one keypoint: pixel offsets inside the image, their softmax weights, and the
// weighted means of the offsets (ox, oy) and of the scores (value).
template <typename T>
struct Window {
  int64_t cx, cy;
  std::vector<int64_t> pixel;  // flat index into the score map
  std::vector<T> dx, dy, score, weight;
  T ox, oy, value;
};

template <typename T>
void gather_window(const T* scores, int64_t height, int64_t width, T kx, T ky, int64_t radius, double temperature,
                   Window<T>& w) {
  w.cx = static_cast<int64_t>(std::nearbyint(kx));  // round half to even, as torch.round
  w.cy = static_cast<int64_t>(std::nearbyint(ky));
  w.pixel.clear();
  w.dx.clear();
  w.dy.clear();
  w.score.clear();
  T peak = -std::numeric_limits<T>::infinity();
  for (int64_t oy = -radius; oy <= radius; ++oy)
    for (int64_t ox = -radius; ox <= radius; ++ox) {
      const int64_t x = w.cx + ox, y = w.cy + oy;
      if (x < 0 || x >= width || y < 0 || y >= height) continue;
      w.pixel.push_back(y * width + x);
      w.dx.push_back(static_cast<T>(ox));
      w.dy.push_back(static_cast<T>(oy));
      w.score.push_back(scores[y * width + x]);
      peak = std::max(peak, scores[y * width + x]);
    }
  w.weight.resize(w.score.size());
  T total = 0;
  for (size_t p = 0; p < w.score.size(); ++p) total += w.weight[p] = std::exp((w.score[p] - peak) / T(temperature));
  w.ox = w.oy = w.value = 0;
  for (size_t p = 0; p < w.weight.size(); ++p) {
    w.weight[p] /= total;
    w.ox += w.weight[p] * w.dx[p];
    w.oy += w.weight[p] * w.dy[p];
    w.value += w.weight[p] * w.score[p];
  }
}

at::Tensor flat_scores(const at::Tensor& scores) {
  TORCH_CHECK(scores.dim() >= 2 && scores.numel() == scores.size(-1) * scores.size(-2),
              "softargmax: scores must be (H, W) or (1, 1, H, W), got ", scores.sizes());
  return scores.reshape({scores.size(-2), scores.size(-1)}).contiguous();
}

std::tuple<at::Tensor, at::Tensor> softargmax_forward_cpu(const at::Tensor& scores_in, const at::Tensor& keypoints_in,
                                                          int64_t radius, double temperature) {
  TORCH_CHECK(keypoints_in.dim() == 2 && keypoints_in.size(1) == 2, "softargmax: keypoints must be (N, 2), got ",
              keypoints_in.sizes());
  TORCH_CHECK(radius >= 0 && temperature > 0, "softargmax: need window >= 0 and temperature > 0, got ", radius,
              " and ", temperature);
  at::Tensor scores = flat_scores(scores_in);
  at::Tensor keypoints = keypoints_in.to(scores.scalar_type()).contiguous();
  const int64_t n = keypoints.size(0), height = scores.size(0), width = scores.size(1);
  at::Tensor refined = at::empty({n, 2}, scores.options());
  at::Tensor value = at::empty({n}, scores.options());
  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "softargmax_forward_cpu", [&] {
    const scalar_t* s = scores.data_ptr<scalar_t>();
    const scalar_t* kp = keypoints.data_ptr<scalar_t>();
    scalar_t* out = refined.data_ptr<scalar_t>();
    scalar_t* val = value.data_ptr<scalar_t>();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      Window<scalar_t> w;
      for (int64_t i = begin; i < end; ++i) {
        gather_window(s, height, width, kp[2 * i], kp[2 * i + 1], radius, temperature, w);
        out[2 * i] = static_cast<scalar_t>(w.cx) + w.ox;
        out[2 * i + 1] = static_cast<scalar_t>(w.cy) + w.oy;
        val[i] = w.value;
      }
    });
  });
  return {refined, value};
}

// d refined / d s_p = w_p (offset_p - mean offset) / T;  d value / d s_p = w_p (1 + (s_p - value) / T).
at::Tensor softargmax_backward_cpu(const at::Tensor& grad_refined_in, const at::Tensor& grad_value_in,
                                   const at::Tensor& scores_in, const at::Tensor& keypoints_in, int64_t radius,
                                   double temperature) {
  at::Tensor scores = flat_scores(scores_in);
  at::Tensor keypoints = keypoints_in.to(scores.scalar_type()).contiguous();
  at::Tensor grad_refined = grad_refined_in.to(scores.scalar_type()).contiguous();
  at::Tensor grad_value = grad_value_in.to(scores.scalar_type()).contiguous();
  const int64_t n = keypoints.size(0), height = scores.size(0), width = scores.size(1);
  at::Tensor grad = at::zeros_like(scores);
  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "softargmax_backward_cpu", [&] {
    const scalar_t* s = scores.data_ptr<scalar_t>();
    const scalar_t* kp = keypoints.data_ptr<scalar_t>();
    const scalar_t* gr = grad_refined.data_ptr<scalar_t>();
    const scalar_t* gv = grad_value.data_ptr<scalar_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t inv_t = scalar_t(1.0 / temperature);
    Window<scalar_t> w;
    // Serial: windows of nearby keypoints overlap and accumulate into the same pixels.
    for (int64_t i = 0; i < n; ++i) {
      gather_window(s, height, width, kp[2 * i], kp[2 * i + 1], radius, temperature, w);
      for (size_t p = 0; p < w.weight.size(); ++p) {
        const scalar_t wp = w.weight[p];
        g[w.pixel[p]] += gr[2 * i] * wp * (w.dx[p] - w.ox) * inv_t + gr[2 * i + 1] * wp * (w.dy[p] - w.oy) * inv_t +
                         gv[i] * wp * (1 + (w.score[p] - w.value) * inv_t);
      }
    }
  });
  return grad.reshape(scores_in.sizes());
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def("softargmax(Tensor scores, Tensor keypoints, int window, float temperature=1.0) -> (Tensor, Tensor)");
  m.def(
      "softargmax_backward(Tensor grad_refined, Tensor grad_value, Tensor scores, Tensor keypoints, int window, "
      "float temperature) -> Tensor");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) {
  m.impl("softargmax", &cvdeep::softargmax_forward_cpu);
  m.impl("softargmax_backward", &cvdeep::softargmax_backward_cpu);
}
