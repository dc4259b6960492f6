"""Build script: the Python package plus the C++/CUDA kernels in csrc/ as ``cvdeep._C``.

The extension is compiled against the torch that is installed, so install with
``pip install --no-build-isolation .`` after installing torch (see README.md).

- Sources: every ``csrc/*.cpp``, ``csrc/cpu/*.cpp`` and, with CUDA, ``csrc/cuda/*.cu``;
  each kernel file registers its own ops, so adding a kernel means adding a file.
- OpenMP when the compiler accepts ``-fopenmp`` (checked, not assumed).
- Vector code: no ``-march=native`` (the wheel must run on other CPUs); the kernels
  carry AVX-512, AVX2 and generic paths and pick one at run time.
- CUDA when nvcc and a CUDA build of torch are present (``CVDEEP_WITH_CUDA=1`` forces
  it, ``=0`` disables it).
- If compiling fails the package still installs and every op runs on its pure-torch
  reference; ``CVDEEP_REQUIRE_EXT=1`` makes that failure fatal instead.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _compiler_accepts(flag: str) -> bool:
    """True when the C++ compiler builds and links a trivial OpenMP-using file with ``flag``."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.cpp")
        with open(source, "w") as handle:
            handle.write("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        result = subprocess.run([compiler, flag, source, "-o", os.path.join(tmp, "probe")], capture_output=True)
        return result.returncode == 0


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("cvdeep: torch is not installed at build time; building without the compiled kernels", file=sys.stderr)
        return [], {}
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    cuda_sources = _sources("csrc/cuda/*.cu")
    want_cuda = os.environ.get("CVDEEP_WITH_CUDA")
    with_cuda = want_cuda == "1" or (
        want_cuda is None and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    )
    openmp = ["-fopenmp"] if _compiler_accepts("-fopenmp") else []
    if not openmp:
        print("cvdeep: the compiler does not accept -fopenmp; kernels will run on one thread", file=sys.stderr)
    extra = {"cxx": ["-O3", "-std=c++20", "-fno-math-errno", *openmp]}
    define_macros = []
    extension_class = cpp_extension.CppExtension
    if with_cuda and cuda_sources:
        sources += cuda_sources
        define_macros.append(("CVDEEP_WITH_CUDA", None))
        extension_class = cpp_extension.CUDAExtension
        extra["nvcc"] = ["-O3", "-std=c++20"]
    ext = extension_class(
        "cvdeep._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=openmp,
    )

    class BuildExtension(cpp_extension.BuildExtension):
        def run(self):
            try:
                super().run()
            except Exception as exc:  # a missing compiler must not make the package uninstallable
                if os.environ.get("CVDEEP_REQUIRE_EXT") == "1":
                    raise
                print(f"cvdeep: compiling the kernels failed ({exc}); ops will use the torch references", file=sys.stderr)

    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
