// sample_levels' inner loop, compiled once per instruction set.
//
// No include guard on purpose: sample_levels.cpp includes this file several times, each time
// under a different `#pragma GCC target` and with CVDEEP_SIMD_NS (avx512, avx2, generic)
// naming this instance's namespace; the loops over channels are left to the vectoriser.

namespace cvdeep {
namespace sample {
namespace CVDEEP_SIMD_NS {

// The reads are scattered over maps of tens of MB: waiting for memory, not arithmetic, is
// the cost, so the rows of the row kAhead places on are requested while this one is summed.
constexpr int64_t kAhead = 6;

static inline void prefetch_row(const float* row, int64_t channels) {
  for (int64_t q = 0; q < channels; q += 16) __builtin_prefetch(row + q);
}

static void prefetch(const Args& args, const Level* level, int64_t p) {
  for (int64_t k = 0; k < args.corner_count; ++k) {
    const int64_t at = k * args.count + p;
    prefetch_row(args.fine + args.fine_index[at] * args.fine_channels, args.fine_channels);
    if (level == nullptr) continue;
    const int64_t pixel = args.corners[at], y = pixel / args.width, x = pixel % args.width, c = level->channels;
    prefetch_row(level->table + (level->top[y] * level->width + level->left[x]) * c, 2 * c);
    prefetch_row(level->table + (level->bottom[y] * level->width + level->left[x]) * c, 2 * c);
  }
}

static void run(const Args& args, int64_t begin, int64_t end) {
  std::vector<float> buffer(static_cast<size_t>(args.total));
  float* vec = buffer.data();
  const int64_t c0 = args.fine_channels, total = args.total;
  const Level* largest = args.levels.empty() ? nullptr : &args.levels.front();
  for (int64_t p = begin; p < end; ++p) {
    if (p + kAhead < end) prefetch(args, largest, p + kAhead);
    float* acc = args.out + p * total;
    for (int64_t k = 0; k < args.corner_count; ++k) {
      const int64_t at = k * args.count + p;
      const int64_t pixel = args.corners[at], y = pixel / args.width, x = pixel % args.width;
      const float* row = args.fine + args.fine_index[at] * c0;
      for (int64_t q = 0; q < c0; ++q) vec[q] = row[q];
      int64_t offset = c0;
      for (const Level& level : args.levels) {
        const int64_t c = level.channels, y0 = level.top[y] * level.width, y1 = level.bottom[y] * level.width;
        const int64_t x0 = level.left[x], x1 = level.right[x];
        const float wy = level.wy[y], wx = level.wx[x];
        const float w00 = (1.0f - wy) * (1.0f - wx), w10 = wy * (1.0f - wx), w01 = (1.0f - wy) * wx, w11 = wy * wx;
        const float* __restrict a = level.table + (y0 + x0) * c;
        const float* __restrict b = level.table + (y1 + x0) * c;
        const float* __restrict d = level.table + (y0 + x1) * c;
        const float* __restrict e = level.table + (y1 + x1) * c;
        float* __restrict v = vec + offset;
        for (int64_t q = 0; q < c; ++q) v[q] = w00 * a[q] + w10 * b[q] + w01 * d[q] + w11 * e[q];
        offset += c;
      }
      float partial[16] = {};  // 16 running sums: a vector register, where one sum would serialise the adds
      int64_t q = 0;
      for (; q + 16 <= total; q += 16)
        for (int l = 0; l < 16; ++l) partial[l] += vec[q + l] * vec[q + l];
      float square = 0.0f;
      for (int l = 0; l < 16; ++l) square += partial[l];
      for (; q < total; ++q) square += vec[q] * vec[q];
      const float scale = args.weights[at] / std::max(std::sqrt(square), 1e-12f);
      float* __restrict out = acc;
      for (int64_t q = 0; q < total; ++q) out[q] += vec[q] * scale;
    }
  }
}

}  // namespace CVDEEP_SIMD_NS
}  // namespace sample
}  // namespace cvdeep
