"""Test-wide JAX settings: float64 available, strict dtype promotion, rank promotion errors.

x64 is enabled so that float64 parity against torch can be checked; float32 tests pass float32
arrays explicitly, and the optimizers never rely on x64 for their float32 arithmetic.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
