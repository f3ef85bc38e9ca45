"""Builds jaxopt_lab's optional C++ extension: the one-pass XLA FFI kernels of the update step.

Everything else about the package is in pyproject.toml. The extension compiles against the XLA
FFI headers that jaxlib ships (a build requirement). If it cannot be built (no C++17 compiler, no
jaxlib in the build environment), the install goes on without it and every optimizer uses its
pure-JAX rule; ``jaxopt_lab.optim.native`` says so once, at the first update that would have used it.

The headers are those of the *build* environment's jaxlib (pip's isolated build env: the newest
jaxlib on the index), while the kernels run under the user's jaxlib. A handler built against
newer FFI headers than the running jaxlib supports is refused by XLA; ``jaxopt_lab.optim.native`` then
falls back to the pure rules with one warning. ``pip install --no-build-isolation jaxopt_lab``
builds against the jaxlib already installed.

The flags are part of the numerics: ``-fno-fast-math`` first, so that a ``-ffast-math`` (or
``-Ofast``, ``-funsafe-math-optimizations``...) in the user's ``CFLAGS``, which setuptools puts
before these, cannot change a rounding (it is also passed to the link step, where ``-ffast-math``
would link ``crtfastmath.o``, which turns on flush-to-zero for the whole process);
``-ffp-contract=off`` so that the compiler adds no fused multiply-add the source does not spell
(the kernels must round exactly as torch does); ``-fno-math-errno`` only lets ``sqrt`` vectorize.
``csrc/native.cc`` refuses to compile if value-changing math options are still in effect.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

NUMERICS_FLAGS = ["-fno-fast-math", "-ffp-contract=off", "-fno-math-errno"]


def jaxlib_headers() -> tuple[list[str], str]:
    """(compile flags naming the include dir, version) of the build environment's jaxlib."""
    try:
        import jaxlib
        from jaxlib import version
    except ImportError:  # then the compile fails and, the extension being optional, is skipped
        print("jaxopt_lab: no jaxlib to build the C++ kernels against", file=sys.stderr)
        return [], "none"
    include = os.path.join(os.path.dirname(os.path.abspath(jaxlib.__file__)), "include")
    return ["-isystem", include], version.__version__


include_flags, jaxlib_version = jaxlib_headers()
native = Extension(
    "jaxopt_lab.optim._native_ext",
    sources=["jaxopt_lab/optim/csrc/native.cc"],
    language="c++",
    define_macros=[("JOL_JAXLIB_VERSION", f'"{jaxlib_version}"')],
    extra_compile_args=[
        "-std=c++17",
        "-O3",
        *NUMERICS_FLAGS,
        "-fvisibility=hidden",
        *include_flags,
    ],
    # Also at the link step: the driver links crtfastmath.o for a -ffast-math or -Ofast (from
    # CFLAGS) that no later flag undoes.
    extra_link_args=["-O3", "-fno-fast-math", "-fno-unsafe-math-optimizations"],
    optional=True,
)

setup(ext_modules=[native])
