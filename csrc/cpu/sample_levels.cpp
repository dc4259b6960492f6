// Weighted sums of L2-normalised vectors of a multi-level feature map (ALIKED's descriptor
// head reads its map this way); semantics in cvdeep/ops/reference.py (sample_levels).
// One pass per output row: each corner's vector is assembled in a small buffer (its
// full-resolution part copied, each coarse level interpolated from four rows with the
// bilinear weights combined: the reference's row-then-column lerps to float rounding),
// normalised and accumulated. The torch reference instead writes every part of every
// corner out. Compiled once per instruction set (sample_levels_simd.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "cpu_features.h"

namespace cvdeep {
namespace sample {

struct Level {
  const float* table;
  int64_t channels, width;
  const int64_t *top, *bottom, *left, *right;
  const float *wy, *wx;
};

struct Args {
  const float* fine;
  const int64_t* fine_index;
  int64_t fine_channels;
  std::vector<sample::Level> levels;
  const int64_t* corners;
  const float* weights;
  int64_t corner_count, count, width, total;
  float* out;
};

}  // namespace sample
}  // namespace cvdeep

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,fma,avx2")
#define CVDEEP_SIMD_NS avx512
#include "sample_levels_simd.h"
#undef CVDEEP_SIMD_NS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CVDEEP_SIMD_NS avx2
#include "sample_levels_simd.h"
#undef CVDEEP_SIMD_NS
#pragma GCC pop_options

#define CVDEEP_SIMD_NS generic
#include "sample_levels_simd.h"
#undef CVDEEP_SIMD_NS

namespace cvdeep {
namespace {

void check_range(const at::Tensor& index, int64_t limit, const char* what) {
  if (index.numel() == 0) return;
  const auto [low, high] = at::aminmax(index);
  TORCH_CHECK(low.item<int64_t>() >= 0 && high.item<int64_t>() < limit, "sample_levels: ", what, " outside [0, ",
              limit, ")");
}

at::Tensor sample_levels_cpu(const at::Tensor& fine_in, const at::Tensor& fine_index_in, at::TensorList tables,
                             at::IntArrayRef widths, at::TensorList positions, const at::Tensor& corners_in,
                             const at::Tensor& weights_in, int64_t width) {
  TORCH_CHECK(fine_in.dim() == 2 && fine_in.scalar_type() == at::kFloat, "sample_levels: fine must be (N, C) float32");
  TORCH_CHECK(corners_in.dim() == 2 && corners_in.scalar_type() == at::kLong, "sample_levels: corners must be (K, P) long");
  TORCH_CHECK(fine_index_in.sizes() == corners_in.sizes() && fine_index_in.scalar_type() == at::kLong,
              "sample_levels: fine_index must be long, shaped as corners");
  TORCH_CHECK(weights_in.sizes() == corners_in.sizes() && weights_in.scalar_type() == at::kFloat,
              "sample_levels: weights must be float32, shaped as corners");
  TORCH_CHECK(static_cast<int64_t>(widths.size()) == static_cast<int64_t>(tables.size()) &&
                  positions.size() == 6 * tables.size(),
              "sample_levels: one width and six position tensors per level");
  TORCH_CHECK(width > 0, "sample_levels: width must be positive");
  const at::Tensor fine = fine_in.contiguous(), fine_index = fine_index_in.contiguous();
  const at::Tensor corners = corners_in.contiguous(), weights = weights_in.contiguous();
  check_range(fine_index, fine.size(0), "fine_index");
  std::vector<at::Tensor> kept;  // contiguous copies live until the end
  std::vector<sample::Level> levels;
  int64_t total = fine.size(1), grid_rows = -1;
  for (size_t l = 0; l < tables.size(); ++l) {
    const at::Tensor table = tables[l].contiguous();
    TORCH_CHECK(table.dim() == 2 && table.scalar_type() == at::kFloat, "sample_levels: level tables must be (h*w, C) float32");
    const int64_t level_width = widths[l];
    TORCH_CHECK(level_width > 0 && table.size(0) % level_width == 0, "sample_levels: a level's width must divide its rows");
    const int64_t level_rows = table.size(0) / level_width;
    std::vector<at::Tensor> p;
    for (int i = 0; i < 6; ++i) p.push_back(positions[6 * l + i].contiguous());
    for (int i : {0, 1, 3, 4}) TORCH_CHECK(p[i].scalar_type() == at::kLong, "sample_levels: position indices must be long");
    for (int i : {2, 5}) TORCH_CHECK(p[i].scalar_type() == at::kFloat, "sample_levels: position weights must be float32");
    TORCH_CHECK(p[3].numel() == width && p[4].numel() == width && p[5].numel() == width,
                "sample_levels: column positions must have one entry per grid column");
    TORCH_CHECK(p[0].numel() == p[1].numel() && p[0].numel() == p[2].numel(), "sample_levels: row positions differ in length");
    TORCH_CHECK(grid_rows < 0 || grid_rows == p[0].numel(), "sample_levels: levels disagree on the grid's rows");
    grid_rows = p[0].numel();
    check_range(p[0], level_rows, "a row position");
    check_range(p[1], level_rows, "a row position");
    check_range(p[3], level_width, "a column position");
    check_range(p[4], level_width, "a column position");
    levels.push_back({table.data_ptr<float>(), table.size(1), level_width, p[0].data_ptr<int64_t>(),
                      p[1].data_ptr<int64_t>(), p[3].data_ptr<int64_t>(), p[4].data_ptr<int64_t>(),
                      p[2].data_ptr<float>(), p[5].data_ptr<float>()});
    total += table.size(1);
    kept.push_back(table);
    for (auto& t : p) kept.push_back(t);
  }
  if (grid_rows >= 0) check_range(corners, grid_rows * width, "a corner");
  const int64_t k_count = corners.size(0), count = corners.size(1), c0 = fine.size(1);
  at::Tensor out = at::zeros({count, total}, fine.options());
  sample::Args args{fine.data_ptr<float>(), fine_index.data_ptr<int64_t>(), c0, levels,
                    corners.data_ptr<int64_t>(), weights.data_ptr<float>(), k_count, count, width, total,
                    out.data_ptr<float>()};
  const Isa isa = active_isa();
  at::parallel_for(0, count, 256, [&](int64_t begin, int64_t end) {
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
      case Isa::avx512: sample::avx512::run(args, begin, end); break;
      case Isa::avx2: sample::avx2::run(args, begin, end); break;
#endif
      default: sample::generic::run(args, begin, end);
    }
  });
  return out;
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) {
  m.def(
      "sample_levels(Tensor fine, Tensor fine_index, Tensor[] tables, int[] widths, Tensor[] positions, "
      "Tensor corners, Tensor weights, int width) -> Tensor");
}

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("sample_levels", &cvdeep::sample_levels_cpu); }
