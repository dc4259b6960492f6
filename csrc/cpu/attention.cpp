// Scaled dot-product attention in bfloat16 for CPUs with AVX512-BF16: softmax(Q K^T / sqrt(D)) V,
// the two products as bf16 dot products into float32 (vdpbf16ps), the softmax in float32 with an
// exponential by polynomial. torch's CPU flash attention spends half its time in exp and runs no
// faster in bf16 than in float32 on such a CPU (LightGlue's matcher: 91 % attention and products).
//
// Inputs are float32 (rounded to bf16 as they are packed) or bf16. Per (batch, head), K and V are
// packed once so that each 32-bit lane holds a pair of bf16 values
// along the reduced dimension (what vdpbf16ps multiplies and adds): K as (D/2, keys) pairs over the
// head dimension, V as (keys/2, D) pairs over keys. Queries go in blocks of kRows: their score rows
// (float32, all keys) stay in a small buffer, become probabilities in bf16, and multiply V.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu_features.h"

namespace cvdeep {
namespace {

constexpr int64_t kRows = 4;       // queries per block
constexpr int64_t kTiles = 4;      // key vectors per step of the score products
constexpr int64_t kLanes = 16;     // float32 lanes of a zmm register
constexpr int64_t kMaxChunks = 8;  // head dimensions up to 8 x 16 = 128

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")

// exp(x) for x <= 0 (scores minus their row maximum): x = n ln2 + r, exp(r) by a degree-6 Taylor
// polynomial (|r| <= ln2/2: relative error below 3e-7), times 2^n. Below -87 (padded keys: -inf)
// the result is 0 (exp(-87) = 1.6e-38); NaN stays NaN.
inline __m512 exp_nonpositive(__m512 x) {
  const __m512 low = _mm512_set1_ps(-87.0f);
  const __mmask16 vanishing = _mm512_cmp_ps_mask(x, low, _CMP_LT_OQ);  // false for NaN (unordered)
  x = _mm512_max_ps(low, x);  // max returns its second operand when one is NaN: NaN goes through
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~vanishing), _mm512_scalef_ps(p, n));
}

// 16 bf16 values -> float32 (exact: a bf16 is the high half of a float)
inline __m512 widen_bf16(__m256i half) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

inline __m512 dot_pairs(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

// Scores of kRows queries (pairs of bf16 as 32-bit lanes) against keys [0, padded) of the packed K,
// scaled, into rows of `scores`; kTiles key vectors at a time so that 4 x kTiles accumulators are in
// flight (a dot product's latency is several cycles).
void block_scores(const uint32_t* const* query, const uint32_t* packed_k, int64_t pairs, int64_t padded, float scale,
                  float* scores) {
  const __m512 factor = _mm512_set1_ps(scale);
  for (int64_t tile = 0; tile < padded; tile += kTiles * kLanes) {
    __m512 s[kRows][kTiles];
    for (auto& row : s)
      for (auto& value : row) value = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      __m512i b[kTiles];
      for (int64_t t = 0; t < kTiles; ++t) b[t] = _mm512_loadu_si512(packed_k + p * padded + tile + t * kLanes);
      for (int64_t m = 0; m < kRows; ++m) {
        const __m512i a = _mm512_set1_epi32(static_cast<int>(query[m][p]));
        for (int64_t t = 0; t < kTiles; ++t) s[m][t] = dot_pairs(s[m][t], a, b[t]);
      }
    }
    for (int64_t m = 0; m < kRows; ++m)
      for (int64_t t = 0; t < kTiles; ++t)
        _mm512_storeu_ps(scores + m * padded + tile + t * kLanes, _mm512_mul_ps(s[m][t], factor));
  }
}

// Softmax numerators of a score row (keys past `keys` masked) as bf16 into `target`; returns the sum
// of the rounded values, so that the normalisation matches what multiplies V.
float row_probabilities(float* row, int64_t keys, int64_t padded, uint16_t* target) {
  for (int64_t n = keys; n < padded; ++n) row[n] = -INFINITY;
  __m512 high = _mm512_set1_ps(-INFINITY);
  __mmask16 unordered = 0;  // a NaN score makes the whole row NaN, as in torch's softmax
  for (int64_t n = 0; n < padded; n += kLanes) {
    const __m512 value = _mm512_loadu_ps(row + n);
    unordered |= _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q);
    high = _mm512_max_ps(high, value);
  }
  // scores minus the maximum: an infinite maximum gives inf - inf = NaN, as torch's softmax does
  const __m512 top = _mm512_set1_ps(unordered ? NAN : _mm512_reduce_max_ps(high));
  __m512 total = _mm512_setzero_ps();
  for (int64_t n = 0; n < padded; n += 2 * kLanes) {  // padded is a multiple of 2 x 16
    const __m512 e0 = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + n), top));
    const __m512 e1 = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + n + kLanes), top));
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(e1, e0);  // e0 in the low half
    total = _mm512_add_ps(total, _mm512_add_ps(widen_bf16(_mm512_castsi512_si256(both)),
                                               widen_bf16(_mm512_extracti64x4_epi64(both, 1))));
    _mm512_storeu_si512(target + n, both);
  }
  return _mm512_reduce_add_ps(total);
}

// out rows [first, first + rows) = (probabilities x V) / sums, Chunks x 16 = D output lanes per query.
template <int Chunks>
void block_values(const uint16_t* probabilities, const uint32_t* packed_v, int64_t padded, const float* sums,
                  int64_t rows, float* out) {
  constexpr int64_t dim = Chunks * kLanes;
  __m512 acc[kRows][Chunks];
  for (auto& row : acc)
    for (auto& value : row) value = _mm512_setzero_ps();
  const uint32_t* prob[kRows];
  for (int64_t m = 0; m < kRows; ++m) prob[m] = reinterpret_cast<const uint32_t*>(probabilities + m * padded);
  for (int64_t pair = 0; pair < padded / 2; ++pair) {
    const uint32_t* vrow = packed_v + pair * dim;
    __m512i b[Chunks];
    for (int c = 0; c < Chunks; ++c) b[c] = _mm512_loadu_si512(vrow + c * kLanes);
    for (int64_t m = 0; m < kRows; ++m) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(prob[m][pair]));
      for (int c = 0; c < Chunks; ++c) acc[m][c] = dot_pairs(acc[m][c], a, b[c]);
    }
  }
  for (int64_t m = 0; m < rows; ++m) {
    const __m512 inverse = _mm512_set1_ps(1.0f / sums[m]);
    for (int c = 0; c < Chunks; ++c) _mm512_storeu_ps(out + m * dim + c * kLanes, _mm512_mul_ps(acc[m][c], inverse));
  }
}

using BlockValues = void (*)(const uint16_t*, const uint32_t*, int64_t, const float*, int64_t, float*);
constexpr BlockValues kBlockValues[kMaxChunks] = {block_values<1>, block_values<2>, block_values<3>, block_values<4>,
                                                  block_values<5>, block_values<6>, block_values<7>, block_values<8>};

// The bf16 bits of a value: itself, or a float rounded to nearest even (c10's conversion).
inline uint16_t bf16_bits(at::BFloat16 value) { return value.x; }
inline uint16_t bf16_bits(float value) { return at::BFloat16(value).x; }

// One (batch, head): q (queries, D), k (keys, D), v (keys, D) rows of float32 or bf16 (converted to bf16
// as they are packed); out (queries, D) float32.
template <typename T>
void attend_one(const T* q, const T* k, const T* v, float* out, int64_t queries, int64_t keys, int64_t dim,
                float scale) {
  const int64_t pairs = dim / 2;
  const int64_t group = kTiles * kLanes;
  const int64_t padded = (keys + group - 1) / group * group;  // keys rounded up to whole groups of tiles
  // Q in bf16, rows of pairs
  std::vector<uint16_t> query_bits(static_cast<size_t>(queries * dim));
  for (int64_t i = 0; i < queries * dim; ++i) query_bits[i] = bf16_bits(q[i]);
  // K as (pairs, padded) 32-bit lanes: lane n of row p holds (K[n][2p], K[n][2p + 1])
  std::vector<uint16_t> packed_k(static_cast<size_t>(pairs * padded * 2), 0u);
  for (int64_t n = 0; n < keys; ++n) {
    for (int64_t d = 0; d < dim; ++d) packed_k[((d / 2) * padded + n) * 2 + d % 2] = bf16_bits(k[n * dim + d]);
  }
  // V as (padded / 2, dim) 32-bit lanes: lane d of row m holds (V[2m][d], V[2m + 1][d])
  std::vector<uint16_t> packed_v(static_cast<size_t>(padded * dim), 0u);
  for (int64_t n = 0; n < keys; ++n) {
    for (int64_t d = 0; d < dim; ++d) packed_v[((n / 2) * dim + d) * 2 + n % 2] = bf16_bits(v[n * dim + d]);
  }
  const auto* packed_k32 = reinterpret_cast<const uint32_t*>(packed_k.data());
  const auto* packed_v32 = reinterpret_cast<const uint32_t*>(packed_v.data());
  std::vector<float> scores(static_cast<size_t>(kRows * padded));
  std::vector<uint16_t> probabilities(static_cast<size_t>(kRows * padded));
  const BlockValues values = kBlockValues[dim / kLanes - 1];
  for (int64_t first = 0; first < queries; first += kRows) {
    const int64_t rows = std::min(kRows, queries - first);
    const uint32_t* query[kRows];  // rows past the last query repeat it
    for (int64_t m = 0; m < kRows; ++m) {
      query[m] = reinterpret_cast<const uint32_t*>(query_bits.data() + (first + std::min(m, rows - 1)) * dim);
    }
    block_scores(query, packed_k32, pairs, padded, scale, scores.data());
    float sums[kRows];
    for (int64_t m = 0; m < kRows; ++m) {
      sums[m] = row_probabilities(scores.data() + m * padded, keys, padded, probabilities.data() + m * padded);
    }
    values(probabilities.data(), packed_v32, padded, sums, rows, out + first * dim);
  }
}

#pragma GCC pop_options
#endif

// q (B, H, Nq, D), k and v (B, H, Nk, D): float32 or bf16 (all three alike), contiguous, D a multiple of
// 16 up to 128, Nk >= 1. Returns (B, H, Nq, D) float32.
at::Tensor attention_bf16_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(cpu_has_avx512_bf16(), "attention_bf16: this CPU has no AVX512-BF16");
  const auto type = q.scalar_type();
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK((type == at::kFloat || type == at::kBFloat16) && t->scalar_type() == type && t->dim() == 4 &&
                    t->is_contiguous(),
                "attention_bf16: q, k and v must be contiguous (batch, heads, tokens, dim) tensors, all float32 "
                "or all bfloat16");
  }
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), dim = q.size(3), keys = k.size(2);
  TORCH_CHECK(k.size(0) == batch && v.size(0) == batch && k.size(1) == heads && v.size(1) == heads &&
                  k.size(3) == dim && v.size(3) == dim && v.size(2) == keys,
              "attention_bf16: q, k and v disagree in batch, heads or dim, or k and v in tokens");
  TORCH_CHECK(dim % 16 == 0 && dim > 0 && dim <= 128,
              "attention_bf16: the head dimension must be a multiple of 16 up to 128, got ", dim);
  TORCH_CHECK(keys > 0, "attention_bf16: no keys");
  at::Tensor out = at::empty({batch, heads, queries, dim}, q.options().dtype(at::kFloat));
  if (queries == 0) return out;
#if defined(__x86_64__)
  float* od = out.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const auto run = [&](auto* qd, auto* kd, auto* vd) {
    at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        attend_one(qd + bh * queries * dim, kd + bh * keys * dim, vd + bh * keys * dim, od + bh * queries * dim,
                   queries, keys, dim, scale);
      }
    });
  };
  if (type == at::kFloat) {
    run(q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>());
  } else {
    run(q.data_ptr<at::BFloat16>(), k.data_ptr<at::BFloat16>(), v.data_ptr<at::BFloat16>());
  }
#endif
  return out;
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) { m.def("attention_bf16(Tensor q, Tensor k, Tensor v) -> Tensor"); }

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("attention_bf16", &cvdeep::attention_bf16_cpu); }
