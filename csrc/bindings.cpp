// The Python module cvdeep._C: loading it registers every torch.ops.cvdeep.* kernel
// (each kernel file registers itself with TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL);
// the module itself only reports how it was built.
#include <torch/extension.h>

#include "cpu/cpu_features.h"

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef CVDEEP_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
#ifdef _OPENMP
  info["openmp"] = _OPENMP;
#else
  info["openmp"] = 0;
#endif
  info["cpu_isa"] = cvdeep::isa_name(cvdeep::active_isa());
  info["cpu_flags"] = cvdeep::cpu_flags();
  info["bf16_attention"] = cvdeep::cpu_has_avx512_bf16();
  info["compiler"] = __VERSION__;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cvdeep compiled kernels (registered as torch.ops.cvdeep.*)";
  m.def("build_info", &build_info, "How the extension was built and which CPU path it takes.");
}
