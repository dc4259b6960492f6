// cvdeep::l2_match on CPU: fused distance + top-k, never the N x M distance matrix.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "cpu_features.h"
#include "l2_match_common.h"

// One instance of the kernel per instruction set; the best one the CPU supports is
// picked at run time, so the binary stays portable without -march=native.
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,fma,avx2")
#define CVDEEP_SIMD_NS avx512
#define CVDEEP_LANES 16
#define CVDEEP_MR 8
#include "l2_match_simd.h"
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#undef CVDEEP_MR
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CVDEEP_SIMD_NS avx2
#define CVDEEP_LANES 8
#define CVDEEP_MR 6
#include "l2_match_simd.h"
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#undef CVDEEP_MR
#pragma GCC pop_options
#endif

#define CVDEEP_SIMD_NS generic
#define CVDEEP_LANES 4
#define CVDEEP_MR 4
#include "l2_match_simd.h"
#undef CVDEEP_SIMD_NS
#undef CVDEEP_LANES
#undef CVDEEP_MR

namespace cvdeep {
namespace {

constexpr int mr_for(Isa isa) { return isa == Isa::avx512 ? 8 : (isa == Isa::avx2 ? 6 : 4); }

// Top-k of one pair (n, d) x (m, d): row_val receives partial values |b|^2 - 2ab (add n1
// for squared distances), col_idx the nearest row of each column when want_cols.
void match_pair(const float* d1, const float* d2, int64_t n, int64_t m, int64_t d, int k, bool want_cols,
                float* row_val, int64_t* row_idx, std::vector<float>& n1, std::vector<float>& col_val,
                std::vector<int64_t>& col_idx) {
  const Isa isa = active_isa();
  const int mr = mr_for(isa);
  const int64_t n_pad = (n + mr - 1) / mr * mr;
  // Every parallel region needs all its threads scheduled at once, which costs far more
  // than it saves on small problems (and on busy machines): small problems run on one
  // thread, and the O((n + m) d) preparation below runs serially.
  const int64_t work = n * m * d;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), work >> 25)));
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> a(static_cast<size_t>(n_pad * d), 0.0f);
  n1.assign(static_cast<size_t>(n_pad), inf);
  std::vector<float> n2(static_cast<size_t>(m));
  for (int64_t i = 0; i < n; ++i) {
    float s = 0.0f;
    for (int64_t q = 0; q < d; ++q) {
      const float x = d1[i * d + q];
      a[i * d + q] = x;
      s += x * x;
    }
    n1[i] = s;
  }
  for (int64_t j = 0; j < m; ++j) {
    float s = 0.0f;
    for (int64_t q = 0; q < d; ++q) s += d2[j * d + q] * d2[j * d + q];
    n2[j] = s;
  }
  col_val.assign(want_cols ? m : 0, inf);
  col_idx.assign(want_cols ? m : 0, -1);
  float* cv = want_cols ? col_val.data() : nullptr;
  int64_t* ci = want_cols ? col_idx.data() : nullptr;
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case Isa::avx512:
      l2::avx512::run(a.data(), n1.data(), n, n_pad, d2, n2.data(), m, d, k, threads, row_val, row_idx, cv, ci);
      break;
    case Isa::avx2:
      l2::avx2::run(a.data(), n1.data(), n, n_pad, d2, n2.data(), m, d, k, threads, row_val, row_idx, cv, ci);
      break;
#endif
    default:
      l2::generic::run(a.data(), n1.data(), n, n_pad, d2, n2.data(), m, d, k, threads, row_val, row_idx, cv, ci);
  }
}

std::tuple<at::Tensor, at::Tensor> l2_match_cpu(const at::Tensor& d1_in, const at::Tensor& d2_in, int64_t k,
                                                bool mutual, std::optional<double> ratio,
                                                std::optional<double> max_distance, bool squared) {
  auto [d1, d2] = l2::batched_inputs(d1_in, d2_in, k, ratio);
  const int64_t batch = d1.size(0), n = d1.size(1), m = d2.size(1), d = d1.size(2);
  TORCH_CHECK(n < std::numeric_limits<int32_t>::max(), "l2_match: too many rows in d1: ", n);
  at::Tensor indices = at::full({batch, n, k}, -1, d1.options().dtype(at::kLong));
  at::Tensor distances = at::full({batch, n, k}, std::numeric_limits<float>::infinity(), d1.options());
  const l2::RowFilters filters = l2::make_filters(mutual, ratio, max_distance, squared);
  std::vector<float> n1, col_val;
  std::vector<int64_t> col_idx;
  for (int64_t b = 0; b < batch && n > 0 && m > 0; ++b) {
    float* dist = distances.data_ptr<float>() + b * n * k;
    int64_t* idx = indices.data_ptr<int64_t>() + b * n * k;
    match_pair(d1.data_ptr<float>() + b * n * d, d2.data_ptr<float>() + b * m * d, n, m, d, static_cast<int>(k),
               mutual, dist, idx, n1, col_val, col_idx);
    for (int64_t i = 0; i < n; ++i)
      l2::finish_row(dist + i * k, idx + i * k, static_cast<int>(k), n1[i], i, col_idx.data(), filters);
  }
  if (d1_in.dim() == 2) return {indices.squeeze(0), distances.squeeze(0)};
  return {indices, distances};
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def(
      "l2_match(Tensor d1, Tensor d2, int k=2, bool mutual=False, float? ratio=None, float? max_distance=None, "
      "bool squared=False) -> (Tensor indices, Tensor distances)");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("l2_match", &cvdeep::l2_match_cpu); }
