"""Test-wide JAX settings: float64 available, strict dtype promotion, rank promotion errors.

x64 is enabled so that float64 parity against torch can be checked; float32 tests pass float32
arrays explicitly, and the optimizers never rely on x64 for their float32 arithmetic.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_kernels: forces the one-pass CPU kernels (JAXOPT_LAB_NATIVE=always); skipped "
        "with the reason where they cannot run (jaxopt_lab.optim.native.status())",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires_kernels``: the one shared gate for tests that force the kernels.

    Checked when such a test is about to run (not at collection), so runs that select none of
    them never load the extension. Without it (installed without g++, or refused by this jaxlib)
    the test is skipped with ``status().reason``; ``test_native.test_extension_is_built`` is
    the test that fails when a C++ compiler was there and the extension still is not.
    """
    if item.get_closest_marker("requires_kernels") is not None:
        from jaxopt_lab.optim import native

        st = native.status()
        if not st.available:
            pytest.skip(f"the one-pass kernels cannot run here: {st.reason}")
