#include "cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace cvdeep {

static Isa detected_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

Isa active_isa() {
  static const Isa detected = detected_isa();
  const char* wanted = std::getenv("CVDEEP_CPU_ISA");
  if (wanted == nullptr) return detected;
  Isa request = detected;
  if (std::strcmp(wanted, "generic") == 0) request = Isa::generic;
  if (std::strcmp(wanted, "avx2") == 0) request = Isa::avx2;
  if (std::strcmp(wanted, "avx512") == 0) request = Isa::avx512;
  return static_cast<int>(request) < static_cast<int>(detected) ? request : detected;
}

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__)
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return supported && active_isa() == Isa::avx512;
#else
  return false;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

std::string cpu_flags() {
  std::string flags;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports takes only string literals, hence a macro rather than a loop.
#define CVDEEP_APPEND_FLAG(name) \
  if (__builtin_cpu_supports(name)) flags += std::string(flags.empty() ? "" : " ") + name;
  CVDEEP_APPEND_FLAG("sse4.2")
  CVDEEP_APPEND_FLAG("avx")
  CVDEEP_APPEND_FLAG("avx2")
  CVDEEP_APPEND_FLAG("fma")
  CVDEEP_APPEND_FLAG("avx512f")
  CVDEEP_APPEND_FLAG("avx512dq")
  CVDEEP_APPEND_FLAG("avx512bw")
  CVDEEP_APPEND_FLAG("avx512vl")
  CVDEEP_APPEND_FLAG("avx512bf16")
#undef CVDEEP_APPEND_FLAG
#endif
  return flags;
}

}  // namespace cvdeep
