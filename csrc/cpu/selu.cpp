// In-place SELU on float32 CPU tensors: torch's own takes ~1.4 ns per element on AVX-512
// (its vectorised exp); this one evaluates exp(x) - 1 by a short polynomial.
#include <cstdint>
#include <cstring>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "cpu_features.h"

#define CVDEEP_SIMD_BODY "selu_simd.h"
#include "simd_instances.h"

namespace cvdeep {
namespace {

constexpr int64_t kGrain = 1 << 16;  // elements per parallel task

at::Tensor& selu_cpu_(at::Tensor& self) {
  TORCH_CHECK(self.scalar_type() == at::kFloat, "selu_: float32 only, got ", self.scalar_type());
  TORCH_CHECK(self.is_non_overlapping_and_dense(), "selu_: the tensor must be dense (any memory format)");
  float* data = self.data_ptr<float>();
  const Isa isa = active_isa();
  at::parallel_for(0, self.numel(), kGrain, [&](int64_t begin, int64_t end) {
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
      case Isa::avx512: selu::avx512::run(data + begin, end - begin); break;
      case Isa::avx2: selu::avx2::run(data + begin, end - begin); break;
#endif
      default: selu::generic::run(data + begin, end - begin);
    }
  });
  return self;
}

}  // namespace
}  // namespace cvdeep

TORCH_LIBRARY_FRAGMENT(cvdeep, m) { m.def("selu_(Tensor(a!) self) -> Tensor(a!)"); }

TORCH_LIBRARY_IMPL(cvdeep, CPU, m) { m.impl("selu_", &cvdeep::selu_cpu_); }
