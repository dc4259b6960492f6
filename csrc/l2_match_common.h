// Pieces of cvdeep::l2_match shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#ifdef __CUDACC__
#define CVDEEP_HOST_DEVICE __host__ __device__
#else
#define CVDEEP_HOST_DEVICE
#endif

namespace cvdeep {
namespace l2 {

// Offer candidate column j with value v to a row's ascending top-k list whose k-th value
// is *threshold. Columns arrive in ascending order, so equal values keep the lower index.
CVDEEP_HOST_DEVICE inline void offer(float* vals, int64_t* idx, float* threshold, int k, float v, int64_t j) {
  if (!(v < *threshold)) return;
  int pos = k - 1;
  while (pos > 0 && vals[pos - 1] > v) {
    vals[pos] = vals[pos - 1];
    idx[pos] = idx[pos - 1];
    --pos;
  }
  vals[pos] = v;
  idx[pos] = j;
  *threshold = vals[k - 1];
}

// Filters of one row, as plain values so that a CUDA kernel can take them by value.
struct RowFilters {
  bool mutual;
  float ratio;         // <= 0: no ratio test
  float max_distance;  // < 0: no distance limit
  bool squared;
};

inline RowFilters make_filters(bool mutual, std::optional<double> ratio, std::optional<double> max_distance,
                               bool squared) {
  return {mutual, ratio.has_value() ? static_cast<float>(*ratio) : -1.0f,
          max_distance.has_value() ? static_cast<float>(*max_distance) : -1.0f, squared};
}

// Turns a row's partial values |b|^2 - 2 a.b into distances and applies the filters to
// its first neighbour. col_best_row: nearest row of each column (used when mutual).
CVDEEP_HOST_DEVICE inline void finish_row(float* vals, int64_t* idx, int k, float n1, int64_t row,
                                          const int64_t* col_best_row, RowFilters f) {
  const float inf = INFINITY;
  for (int c = 0; c < k; ++c) {
    const float v = vals[c] + n1;
    vals[c] = (v == v && v != inf && v != -inf) ? (v > 0.0f ? v : 0.0f) : inf;
    if (vals[c] == inf) idx[c] = -1;
  }
  const float first = sqrtf(vals[0]);
  bool reject = idx[0] < 0;
  if (f.ratio > 0) reject = reject || !(first < f.ratio * sqrtf(vals[1]));
  if (f.max_distance >= 0) reject = reject || first > f.max_distance;
  if (f.mutual && !reject) reject = col_best_row[idx[0]] != row;
  if (!f.squared)
    for (int c = 0; c < k; ++c) vals[c] = sqrtf(vals[c]);
  if (reject) {
    idx[0] = -1;
    vals[0] = inf;
  }
}

// Validates the arguments and returns (d1, d2) as contiguous float (B, N, D) / (B, M, D).
inline std::pair<at::Tensor, at::Tensor> batched_inputs(const at::Tensor& d1, const at::Tensor& d2, int64_t k,
                                                        std::optional<double> ratio) {
  TORCH_CHECK(d1.dim() == d2.dim() && (d1.dim() == 2 || d1.dim() == 3),
              "l2_match: d1 and d2 must both be (N, D) or (B, N, D), got ", d1.sizes(), " and ", d2.sizes());
  TORCH_CHECK(k >= 1, "l2_match: k must be >= 1, got ", k);
  TORCH_CHECK(!ratio.has_value() || k >= 2, "l2_match: the ratio test needs k >= 2");
  at::Tensor a = (d1.dim() == 3 ? d1 : d1.unsqueeze(0)).to(at::kFloat).contiguous();
  at::Tensor b = (d2.dim() == 3 ? d2 : d2.unsqueeze(0)).to(at::kFloat).contiguous();
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(2),
              "l2_match: batch sizes and descriptor sizes must agree, got ", a.sizes(), " and ", b.sizes());
  return {a, b};
}

}  // namespace l2
}  // namespace cvdeep
