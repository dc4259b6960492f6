"""Build script: the Python package plus the C++/CUDA kernels in csrc/ as ``cvdeep._C``.

The extension is compiled against the torch that is installed, so install with
``pip install --no-build-isolation .`` after installing torch (see README.md).
CPU kernels are always built (OpenMP); CUDA kernels too when nvcc and a CUDA build of
torch are present (or CVDEEP_WITH_CUDA=1). If the compiler fails, the package still
installs and every op runs on its pure-torch reference (CVDEEP_REQUIRE_EXT=1 makes
that failure fatal instead).
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("cvdeep: torch is not installed at build time; building without the compiled kernels", file=sys.stderr)
        return [], {}
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    want_cuda = os.environ.get("CVDEEP_WITH_CUDA")
    with_cuda = (want_cuda == "1") or (
        want_cuda is None and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    )
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx_flags = ["-O3", "-std=c++17", *openmp]
    define_macros = []
    extension_class = cpp_extension.CppExtension
    extra = {"cxx": cxx_flags}
    if with_cuda and cuda_sources:
        sources += cuda_sources
        define_macros.append(("CVDEEP_WITH_CUDA", None))
        extension_class = cpp_extension.CUDAExtension
        extra["nvcc"] = ["-O3", "-std=c++17", "--use_fast_math"]
    ext = extension_class(
        "cvdeep._C",
        sources,
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
