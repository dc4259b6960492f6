// Fused L2 distance + top-k kernel body, compiled once per instruction set.
//
// No include guard on purpose: l2_match.cpp includes this file several times, each
// time under a different `#pragma GCC target` and with these macros defined:
//   CVDEEP_SIMD_NS   namespace of this instance (avx512, avx2, generic)
//   CVDEEP_LANES     floats per vector register (16, 8, 4)
//   CVDEEP_MR        rows of d1 per register tile
// The caller includes <cstring>, <cstdint>, <vector>, <algorithm>, <limits>, <omp.h>,
// l2_match_common.h and (on x86) <immintrin.h> before the first inclusion.

namespace cvdeep {
namespace l2 {
namespace CVDEEP_SIMD_NS {

#include "simd_types.h"
constexpr int kNR = 2 * kLanes;  // columns of d2 per packed panel (two registers)
constexpr int kMR = CVDEEP_MR;   // rows of d1 per register tile

static inline vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline vint load(const int32_t* p) {
  vint v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof v); }
static inline void store(int32_t* p, vint v) { std::memcpy(p, &v, sizeof v); }
static inline vfloat splat(float x) { return vfloat{} + x; }
static inline vint splat_int(int32_t x) { return vint{} + x; }

// Bit l set when lane l of v is < t (false for NaN).
static inline unsigned lanes_below(vfloat v, float t) {
#if CVDEEP_LANES == 16
  return _mm512_cmp_ps_mask((__m512)v, _mm512_set1_ps(t), _CMP_LT_OQ);
#elif CVDEEP_LANES == 8
  return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps((__m256)v, _mm256_set1_ps(t), _CMP_LT_OQ));
#else
  unsigned mask = 0;
  for (int l = 0; l < kLanes; ++l) mask |= unsigned(v[l] < t) << l;
  return mask;
#endif
}

static inline void offer_lanes(unsigned mask, vfloat v, int64_t j0, float* vals, int64_t* idx, float* threshold,
                               int k) {
  while (mask) {
    const int lane = __builtin_ctz(mask);
    mask &= mask - 1;
    offer(vals, idx, threshold, k, v[lane], j0 + lane);
  }
}

// Inputs are the padded problem prepared by l2_match.cpp:
//   a:  (n_pad, d) rows of d1, zero rows after n; n1: squared norms, +inf after n
//   n2: squared norms of d2 padded to a multiple of kNR with +inf
// Outputs:
//   row_val/row_idx (n, k): per row the k smallest of |b|^2 - 2 a.b, ascending (inf / -1 if none)
//   col_val/col_idx (m): per column the smallest |a|^2 - 2 a.b and its row (only if col_val)
static void run(const float* a, const float* n1, int64_t n, int64_t n_pad, const float* b, const float* n2_unpadded,
                int64_t m, int64_t d, int k, int threads, float* row_val, int64_t* row_idx, float* col_val,
                int64_t* col_idx) {
  const int64_t panels = (m + kNR - 1) / kNR;
  const int64_t m_pad = panels * kNR;
  const float inf = std::numeric_limits<float>::infinity();

  // Pack d2 column-panel-major: panel p holds columns p*kNR .. p*kNR+kNR-1, k-th
  // coordinate of all of them contiguous, so one tile step is two vector loads.
  std::vector<float> packed(static_cast<size_t>(m_pad * d));
  std::vector<float> n2(static_cast<size_t>(m_pad), inf);
  std::copy(n2_unpadded, n2_unpadded + m, n2.begin());
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = packed.data() + p * d * kNR;
    for (int c = 0; c < kNR; ++c) {
      const int64_t j = p * kNR + c;
      for (int64_t q = 0; q < d; ++q) dst[q * kNR + c] = j < m ? b[j * d + q] : 0.0f;
    }
  }

  std::vector<float> thresholds(static_cast<size_t>(n), inf);
  std::fill(row_val, row_val + n * k, inf);
  std::fill(row_idx, row_idx + n * k, int64_t(-1));
  const bool want_cols = col_val != nullptr;
  std::vector<float> thread_col_val(want_cols ? static_cast<size_t>(threads * m_pad) : 0, inf);
  std::vector<int32_t> thread_col_row(want_cols ? static_cast<size_t>(threads * m_pad) : 0, -1);

  // Cache blocking: a chunk of d2 panels (~256 KiB) stays in L2 while a block of rows
  // of d1 sweeps it; each thread owns whole row blocks, hence its rows' top-k lists.
  const int64_t row_block = kMR * 16;
  const int64_t chunk = std::max<int64_t>(1, (256 * 1024) / (d * kNR * 4 + 1));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    float* cval = want_cols ? thread_col_val.data() + t * m_pad : nullptr;
    int32_t* crow = want_cols ? thread_col_row.data() + t * m_pad : nullptr;
#pragma omp for schedule(dynamic, 1)
    for (int64_t rb = 0; rb < n_pad; rb += row_block) {
      const int64_t rb_end = std::min(rb + row_block, n_pad);
      for (int64_t p0 = 0; p0 < panels; p0 += chunk) {
        const int64_t p_end = std::min(p0 + chunk, panels);
        for (int64_t r0 = rb; r0 < rb_end; r0 += kMR) {
          const float* ar = a + r0 * d;
          for (int64_t p = p0; p < p_end; ++p) {
            const float* bp = packed.data() + p * d * kNR;
            vfloat acc0[kMR], acc1[kMR];
#pragma GCC unroll 16
            for (int r = 0; r < kMR; ++r) acc0[r] = acc1[r] = splat(0.0f);
            for (int64_t q = 0; q < d; ++q) {
              const vfloat b0 = load(bp + q * kNR), b1 = load(bp + q * kNR + kLanes);
#pragma GCC unroll 16
              for (int r = 0; r < kMR; ++r) {
                const vfloat ark = splat(ar[r * d + q]);
                acc0[r] += ark * b0;
                acc1[r] += ark * b1;
              }
            }
            const int64_t j0 = p * kNR;
            const vfloat n2a = load(n2.data() + j0), n2b = load(n2.data() + j0 + kLanes);
            vfloat cbest0 = splat(inf), cbest1 = splat(inf);
            vint cidx0 = splat_int(-1), cidx1 = splat_int(-1);
#pragma GCC unroll 16
            for (int r = 0; r < kMR; ++r) {
              const int64_t i = r0 + r;
              const vfloat two0 = acc0[r] + acc0[r], two1 = acc1[r] + acc1[r];
              if (i < n) {
                const vfloat v0 = n2a - two0, v1 = n2b - two1;
                float* thr = thresholds.data() + i;
                const unsigned m0 = lanes_below(v0, *thr), m1 = lanes_below(v1, *thr);
                if (m0 | m1) {
                  offer_lanes(m0, v0, j0, row_val + i * k, row_idx + i * k, thr, k);
                  offer_lanes(m1, v1, j0 + kLanes, row_val + i * k, row_idx + i * k, thr, k);
                }
              }
              if (want_cols) {
                const vfloat n1i = splat(n1[i]);
                const vfloat c0 = n1i - two0, c1 = n1i - two1;
                const vint lt0 = c0 < cbest0, lt1 = c1 < cbest1;
                cbest0 = lt0 ? c0 : cbest0;
                cbest1 = lt1 ? c1 : cbest1;
                cidx0 = lt0 ? splat_int(int32_t(i)) : cidx0;
                cidx1 = lt1 ? splat_int(int32_t(i)) : cidx1;
              }
            }
            if (want_cols) {
              const vfloat old0 = load(cval + j0), old1 = load(cval + j0 + kLanes);
              const vint lt0 = cbest0 < old0, lt1 = cbest1 < old1;
              store(cval + j0, lt0 ? cbest0 : old0);
              store(cval + j0 + kLanes, lt1 ? cbest1 : old1);
              store(crow + j0, lt0 ? cidx0 : load(crow + j0));
              store(crow + j0 + kLanes, lt1 ? cidx1 : load(crow + j0 + kLanes));
            }
          }
        }
      }
    }
  }
  if (!want_cols) return;
  // Merge the per-thread column minima; equal values go to the lower row (as in one pass).
  for (int64_t j = 0; j < m; ++j) {
    float best = inf;
    int64_t row = -1;
    for (int t = 0; t < threads; ++t) {
      const float v = thread_col_val[t * m_pad + j];
      const int64_t r = thread_col_row[t * m_pad + j];
      if (r >= 0 && (v < best || (v == best && (row < 0 || r < row)))) {
        best = v;
        row = r;
      }
    }
    col_val[j] = best;
    col_idx[j] = row;
  }
}

}  // namespace CVDEEP_SIMD_NS
}  // namespace l2
}  // namespace cvdeep
