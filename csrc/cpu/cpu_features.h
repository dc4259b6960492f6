// Which vector instruction set the CPU kernels use, decided at run time.
#pragma once

#include <string>

namespace cvdeep {

enum class Isa { generic, avx2, avx512 };

// Best instruction set this CPU supports, lowered by $CVDEEP_CPU_ISA
// ("generic", "avx2", "avx512") so tests can exercise every compiled path.
Isa active_isa();
// Whether the CPU has AVX512-BF16 (bf16 dot products) and the AVX-512 path is active.
bool cpu_has_avx512_bf16();
const char* isa_name(Isa isa);
// Vector flags of this CPU that matter to the kernels, e.g. "avx2 fma avx512f avx512bw".
std::string cpu_flags();

}  // namespace cvdeep
