// cvdeep::nms on CPU: exact hard NMS with a separable max filter.
//
// A pixel survives when it equals the maximum of its (2r+1)^2 window, which is the
// max of row maxima. Row and column maxima cost O(r) per pixel for small radii and
// O(1) (van Herk / Gil-Werman) for large ones, instead of O(r^2) for max-pool.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

namespace cvdeep {
namespace {

constexpr int64_t kDirectRadius = 8;  // above this, van Herk / Gil-Werman wins

// Sliding max over `count` lines of `length` elements; element e of line l is at
// data[l * line_stride + e * step]. Out of range counts as -inf.
template <typename T>
void max_filter_1d(const T* in, T* out, int64_t length, int64_t radius, int64_t step, int64_t line_stride,
                   int64_t count) {
  const T lowest = -std::numeric_limits<T>::infinity();
  const int64_t padded = length + 2 * radius, width = 2 * radius + 1;
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    // line[p] is element p - radius, -inf outside: the window of e is line[e .. e + 2r].
    std::vector<T> line(padded, lowest), result(length), prefix, suffix;
    for (int64_t l = begin; l < end; ++l) {
      const T* src = in + l * line_stride;
      for (int64_t e = 0; e < length; ++e) line[radius + e] = src[e * step];
      if (radius <= kDirectRadius) {
        // Offsets outermost so the inner loop vectorises.
        std::copy(line.begin(), line.begin() + length, result.begin());
        for (int64_t f = 1; f < width; ++f)
          for (int64_t e = 0; e < length; ++e) result[e] = std::max(result[e], line[e + f]);
      } else {
        // van Herk / Gil-Werman: prefix and suffix maxima within blocks of width 2r + 1.
        prefix.resize(padded);
        suffix.resize(padded);
        for (int64_t p = 0; p < padded; ++p) prefix[p] = (p % width == 0) ? line[p] : std::max(prefix[p - 1], line[p]);
        for (int64_t p = padded - 1; p >= 0; --p)
          suffix[p] = (p % width == width - 1 || p == padded - 1) ? line[p] : std::max(suffix[p + 1], line[p]);
        for (int64_t e = 0; e < length; ++e) result[e] = std::max(suffix[e], prefix[e + 2 * radius]);
      }
      T* dst = out + l * line_stride;
      for (int64_t e = 0; e < length; ++e) dst[e * step] = result[e];
    }
  });
}

// Column pass over whole rows at once, so the inner loop runs along contiguous memory.
template <typename T>
void max_filter_columns(const T* in, T* out, int64_t height, int64_t width, int64_t radius) {
  if (radius > kDirectRadius) {
    max_filter_1d(in, out, height, radius, width, 1, width);
    return;
  }
  at::parallel_for(0, height, 8, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) {
      T* dst = out + y * width;
      const int64_t lo = std::max<int64_t>(0, y - radius), hi = std::min(height - 1, y + radius);
      std::copy(in + lo * width, in + (lo + 1) * width, dst);
      for (int64_t yy = lo + 1; yy <= hi; ++yy) {
        const T* src = in + yy * width;
        for (int64_t x = 0; x < width; ++x) dst[x] = std::max(dst[x], src[x]);
      }
    }
  });
}

template <typename T>
void nms_image(const T* scores, int64_t height, int64_t width, int64_t radius, double threshold, int64_t max_keypoints,
               int64_t border, std::vector<int64_t>& kept, std::vector<T>& kept_scores) {
  const T lowest = -std::numeric_limits<T>::infinity();
  const int64_t size = height * width;
  std::vector<T> clean(size), rows(size), window(size);
  at::parallel_for(0, size, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) clean[p] = std::isnan(scores[p]) ? lowest : scores[p];
  });
  // A radius beyond the image is the same as the whole image.
  radius = std::min(radius, std::max(height, width));
  if (radius > 0) {
    max_filter_1d(clean.data(), rows.data(), width, radius, 1, width, height);
    max_filter_columns(rows.data(), window.data(), height, width, radius);
  } else {
    window = clean;
  }
  const int64_t y0 = std::max<int64_t>(border, 0), y1 = height - std::max<int64_t>(border, 0);
  const int64_t x0 = std::max<int64_t>(border, 0), x1 = width - std::max<int64_t>(border, 0);
  std::vector<std::vector<int64_t>> per_row(std::max<int64_t>(y1 - y0, 0));
  at::parallel_for(y0, std::max(y0, y1), 16, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y)
      for (int64_t x = x0; x < x1; ++x) {
        const int64_t p = y * width + x;
        if (clean[p] == window[p] && static_cast<double>(clean[p]) > threshold) per_row[y - y0].push_back(p);
      }
  });
  kept.clear();
  for (const auto& row : per_row) kept.insert(kept.end(), row.begin(), row.end());
  // Descending score, raster order among equal scores.
  auto before = [&](int64_t p, int64_t q) { return clean[p] > clean[q] || (clean[p] == clean[q] && p < q); };
  if (max_keypoints > 0 && max_keypoints < static_cast<int64_t>(kept.size())) {
    std::partial_sort(kept.begin(), kept.begin() + max_keypoints, kept.end(), before);
    kept.resize(max_keypoints);
  } else {
    std::sort(kept.begin(), kept.end(), before);
  }
  kept_scores.resize(kept.size());
  for (size_t i = 0; i < kept.size(); ++i) kept_scores[i] = clean[kept[i]];
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> nms_cpu(const at::Tensor& scores_in, int64_t radius,
                                                                     double threshold, int64_t max_keypoints,
                                                                     int64_t border) {
  TORCH_CHECK(scores_in.dim() == 4 && scores_in.size(1) == 1, "nms: scores must be (B, 1, H, W), got ",
              scores_in.sizes());
  TORCH_CHECK(radius >= 0, "nms: radius must be >= 0, got ", radius);
  at::Tensor scores = scores_in.is_floating_point() ? scores_in.contiguous() : scores_in.to(at::kFloat).contiguous();
  if (scores.scalar_type() != at::kDouble) scores = scores.to(at::kFloat);
  const int64_t batch = scores.size(0), height = scores.size(2), width = scores.size(3);
  std::vector<at::Tensor> keypoints, values;
  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "nms_cpu", [&] {
    std::vector<int64_t> kept;
    std::vector<scalar_t> kept_scores;
    for (int64_t b = 0; b < batch; ++b) {
      nms_image(scores.data_ptr<scalar_t>() + b * height * width, height, width, radius, threshold, max_keypoints,
                border, kept, kept_scores);
      const int64_t count = static_cast<int64_t>(kept.size());
      at::Tensor xy = at::empty({count, 2}, scores.options().dtype(at::kLong));
      int64_t* out = xy.data_ptr<int64_t>();
      for (int64_t i = 0; i < count; ++i) {
        out[2 * i] = kept[i] % width;
        out[2 * i + 1] = kept[i] / width;
      }
      at::Tensor s = at::empty({count}, scores.options());
      std::copy(kept_scores.begin(), kept_scores.end(), s.data_ptr<scalar_t>());
      keypoints.push_back(xy);
      values.push_back(s.to(scores_in.scalar_type()));
    }
  });
  return {keypoints, values};
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def(
      "nms(Tensor scores, int radius, float threshold=0.0, int max_keypoints=-1, int border=0) "
      "-> (Tensor[] keypoints, Tensor[] scores)");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("nms", &cvdeep::nms_cpu); }
