// cvdeep::l2_match on CUDA: cuBLAS dot products of one (rows x columns) tile at a time,
// then custom kernels fold each tile into the running per-row top-k and per-column
// minimum. Peak extra memory is one tile, never the N x M matrix.
// Per-operator ATen headers rather than ATen/ATen.h: the CUDA build compiles much faster.
#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "l2_match_common.h"

namespace cvdeep {
namespace {

constexpr int64_t kTileRows = 4096;
constexpr int64_t kTileCols = 8192;

// tile_t is (cols, rows) = d2_tile @ d1_tile^T, so consecutive threads (rows) read
// consecutive addresses. Each thread scans its row's columns in ascending order and
// keeps a sorted top-k of |b|^2 - 2 a.b (equal values: lower column first).
__global__ void fold_rows_kernel(const float* tile_t, const float* n2, int64_t rows, int64_t cols, int64_t row0,
                                 int64_t col0, int k, float* row_val, int64_t* row_idx) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  float* vals = row_val + (row0 + r) * k;
  int64_t* idx = row_idx + (row0 + r) * k;
  float threshold = vals[k - 1];
  for (int64_t c = 0; c < cols; ++c)
    l2::offer(vals, idx, &threshold, k, n2[col0 + c] - 2.0f * tile_t[c * rows + r], col0 + c);
}

// One thread per column: smallest |a|^2 - 2 a.b over this tile's rows (lowest row on ties).
__global__ void fold_cols_kernel(const float* tile_t, const float* n1, int64_t rows, int64_t cols, int64_t row0,
                                 int64_t col0, float* col_val, int64_t* col_idx) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float best = col_val[col0 + c];
  int64_t row = col_idx[col0 + c];
  for (int64_t r = 0; r < rows; ++r) {
    const float v = n1[row0 + r] - 2.0f * tile_t[c * rows + r];
    if (v < best) {
      best = v;
      row = row0 + r;
    }
  }
  col_val[col0 + c] = best;
  col_idx[col0 + c] = row;
}

__global__ void finish_kernel(float* row_val, int64_t* row_idx, const float* n1, const int64_t* col_idx, int64_t n,
                              int k, l2::RowFilters filters) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) l2::finish_row(row_val + i * k, row_idx + i * k, k, n1[i], i, col_idx, filters);
}

std::tuple<at::Tensor, at::Tensor> l2_match_cuda(const at::Tensor& d1_in, const at::Tensor& d2_in, int64_t k,
                                                 bool mutual, std::optional<double> ratio,
                                                 std::optional<double> max_distance, bool squared) {
  c10::cuda::CUDAGuard guard(d1_in.device());
  auto [d1, d2] = l2::batched_inputs(d1_in, d2_in, k, ratio);
  const int64_t batch = d1.size(0), n = d1.size(1), m = d2.size(1);
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor indices = at::full({batch, n, k}, -1, d1.options().dtype(at::kLong));
  at::Tensor distances = at::full({batch, n, k}, inf, d1.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t b = 0; b < batch && n > 0 && m > 0; ++b) {
    at::Tensor a = d1[b], t = d2[b];
    at::Tensor n1 = a.mul(a).sum(1), n2 = t.mul(t).sum(1);
    at::Tensor col_val = at::full({m}, inf, a.options());
    at::Tensor col_idx = at::full({m}, -1, a.options().dtype(at::kLong));
    float* row_val = distances[b].data_ptr<float>();
    int64_t* row_idx = indices[b].data_ptr<int64_t>();
    for (int64_t r0 = 0; r0 < n; r0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, n - r0);
      for (int64_t c0 = 0; c0 < m; c0 += kTileCols) {
        const int64_t cols = std::min(kTileCols, m - c0);
        at::Tensor tile_t = at::mm(t.slice(0, c0, c0 + cols), a.slice(0, r0, r0 + rows).t()).contiguous();
        fold_rows_kernel<<<(rows + 255) / 256, 256, 0, stream>>>(tile_t.data_ptr<float>(), n2.data_ptr<float>(), rows,
                                                                 cols, r0, c0, static_cast<int>(k), row_val, row_idx);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (mutual) {
          fold_cols_kernel<<<(cols + 255) / 256, 256, 0, stream>>>(tile_t.data_ptr<float>(), n1.data_ptr<float>(),
                                                                   rows, cols, r0, c0, col_val.data_ptr<float>(),
                                                                   col_idx.data_ptr<int64_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    }
    finish_kernel<<<(n + 255) / 256, 256, 0, stream>>>(row_val, row_idx, n1.data_ptr<float>(),
                                                        col_idx.data_ptr<int64_t>(), n, static_cast<int>(k),
                                                        l2::make_filters(mutual, ratio, max_distance, squared));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (d1_in.dim() == 2) return {indices.squeeze(0), distances.squeeze(0)};
  return {indices, distances};
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_IMPL(cvdeep, CUDA, m) { m.impl("l2_match", &cvdeep::l2_match_cuda); }
