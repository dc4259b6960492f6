// C++ unit tests of the CPU kernels through the dispatcher (run with ctest; see CMakeLists.txt).
// Each result is checked against a brute-force computation written here in plain loops.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

std::tuple<at::Tensor, at::Tensor> l2_match(const at::Tensor& a, const at::Tensor& b, int64_t k, bool mutual) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("cvdeep::l2_match", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t, bool,
                                                                 std::optional<double>, std::optional<double>, bool)>();
  return op.call(a, b, k, mutual, std::nullopt, std::nullopt, false);
}

// Nearest neighbours by exhaustive search in double precision.
void test_l2_match_against_brute_force(const char* isa) {
  setenv("CVDEEP_CPU_ISA", isa, 1);
  torch::manual_seed(3);
  const int64_t n = 77, m = 131, d = 40, k = 3;
  at::Tensor a = torch::randn({n, d}), b = torch::randn({m, d});
  auto [indices, distances] = l2_match(a, b, k, /*mutual=*/true);
  at::Tensor exact = torch::cdist(a.to(torch::kDouble), b.to(torch::kDouble));
  auto sorted = exact.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false);
  at::Tensor want_idx = std::get<1>(sorted).slice(1, 0, k);
  at::Tensor want_dist = std::get<0>(sorted).slice(1, 0, k).to(torch::kFloat);
  at::Tensor backward = std::get<1>(exact.min(0));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t first = want_idx[i][0].item<int64_t>();
    const bool is_mutual = backward[first].item<int64_t>() == i;
    check(indices[i][0].item<int64_t>() == (is_mutual ? first : -1), std::string(isa) + ": mutual first neighbour");
    for (int64_t c = 1; c < k; ++c)
      check(indices[i][c].item<int64_t>() == want_idx[i][c].item<int64_t>(), std::string(isa) + ": neighbour order");
  }
  check(torch::allclose(distances.slice(1, 1, k), want_dist.slice(1, 1, k), 1e-4, 1e-4),
        std::string(isa) + ": distances");
  unsetenv("CVDEEP_CPU_ISA");
}

void test_nms_against_brute_force() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("cvdeep::nms", "")
                       .typed<std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>>(
                           const at::Tensor&, int64_t, double, int64_t, int64_t)>();
  torch::manual_seed(4);
  for (int64_t radius : {1, 3, 12}) {
    at::Tensor scores = torch::randint(0, 4, {1, 1, 23, 31}).to(torch::kFloat);
    auto [keypoints, values] = op.call(scores, radius, 0.5, -1, 0);
    int64_t expected = 0;
    auto s = scores.accessor<float, 4>();
    for (int64_t y = 0; y < 23; ++y)
      for (int64_t x = 0; x < 31; ++x) {
        bool is_max = s[0][0][y][x] > 0.5f;
        for (int64_t yy = std::max<int64_t>(0, y - radius); yy <= std::min<int64_t>(22, y + radius); ++yy)
          for (int64_t xx = std::max<int64_t>(0, x - radius); xx <= std::min<int64_t>(30, x + radius); ++xx)
            is_max = is_max && s[0][0][yy][xx] <= s[0][0][y][x];
        expected += is_max;
      }
    check(keypoints[0].size(0) == expected, "nms: number of local maxima, radius " + std::to_string(radius));
    check(values[0].size(0) < 2 || (values[0].slice(0, 1) <= values[0].slice(0, 0, -1)).all().item<bool>(),
          "nms: scores sorted descending");
  }
}

void test_soft_nms_decay() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("cvdeep::soft_nms", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                             double, int64_t, double)>();
  at::Tensor points = torch::tensor({0.0f, 0.0f, 1.0f, 0.0f, 10.0f, 0.0f}).reshape({3, 2});
  at::Tensor scores = torch::tensor({1.0f, 0.9f, 0.5f});
  auto [kept, kept_scores, index] = op.call(points, scores, 1.0, -1, 0.0);
  // After point 0: point 1 (1 px away) drops to 0.9 * (1 - exp(-1/2)) = 0.354, point 2
  // (10 px) keeps 0.5, so the order is 0, 2, 1.
  check(index.size(0) == 3 && index[1].item<int64_t>() == 2, "soft_nms: greedy order");
  const float expected = 0.9f * (1.0f - std::exp(-0.5f)) * (1.0f - std::exp(-40.5f));
  check(std::abs(kept_scores[2].item<float>() - expected) < 1e-6f, "soft_nms: Gaussian decay");
}

}  // namespace

int main() {
  for (const char* isa : {"avx512", "avx2", "generic"}) test_l2_match_against_brute_force(isa);
  test_nms_against_brute_force();
  test_soft_nms_decay();
  if (failures == 0) std::puts("all kernel tests passed");
  return failures == 0 ? 0 : 1;
}
