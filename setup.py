"""Builds jaxopt_lab's optional C++ extension: the one-pass XLA FFI kernels of the update step.

Everything else about the package is in pyproject.toml. The extension compiles against the XLA
FFI headers that jaxlib ships (a build requirement). If it cannot be built (no C++17 compiler),
the install goes on without it and every optimizer uses its pure-JAX rule (``jaxopt_lab._native``).

The flags are part of the numerics: ``-ffp-contract=off`` so that the compiler adds no fused
multiply-add the source does not spell (the kernels must round exactly as torch does), and no
``-ffast-math``. ``-fno-math-errno`` only lets ``sqrt`` vectorize.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup


def ffi_include_dir() -> str:
    import jaxlib

    return os.path.join(os.path.dirname(os.path.abspath(jaxlib.__file__)), "include")


native = Extension(
    "jaxopt_lab._native_ext",
    sources=["jaxopt_lab/csrc/native.cc"],
    language="c++",
    extra_compile_args=[
        "-std=c++17",
        "-O3",
        "-ffp-contract=off",
        "-fno-math-errno",
        "-fvisibility=hidden",
        "-isystem",
        ffi_include_dir(),
    ],
    optional=True,
)

setup(ext_modules=[native])
