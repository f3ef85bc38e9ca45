"""torch's CPU reductions (``jaxopt_lab.optim.reductions``) against torch, bit for bit, x64 off.

Adafactor reads ``vector_norm`` over all elements, the last dim and the second-to-last, and
``mean`` over the second-to-last, and torch sums each in an order of its own (8 float32 lanes, a
tail by fours then by fused multiply-adds, a multi-level cascade for sums). The shapes cover each
branch: rows shorter than a block (tails 1..7), whole blocks, reductions over one element (torch
returns ``abs``), a contiguous second-to-last dim (last dim 1), empty dims, and cascade sums long
enough for every level (70,000 and 20,000 elements).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from _reference import bitwise_equal, from_torch, to_torch

from jaxopt_lab.optim import reductions as _reductions
from jaxopt_lab.optim.kernels import opaque_zero

torch = pytest.importorskip("torch")

SHAPES = [
    (37, 11), (101,), (), (3, 4, 5), (1, 7), (9, 1), (5, 300), (300, 5), (17, 2), (6, 13),
    (2, 3, 64), (2000, 3), (4096,), (70000,), (1, 1), (20000, 1), (3, 0), (0,),
]  # fmt: skip
DTYPES = [np.float32, np.float64, ml_dtypes.bfloat16, np.float16]


def _ours(fn, x: np.ndarray):
    acc = jnp.float64 if x.dtype == np.float64 else jnp.float32

    def run(a, count):
        return fn(a, opaque_zero(count, acc))

    with jax.enable_x64(x.dtype == np.float64):
        return np.asarray(jax.jit(run)(jnp.asarray(x), jnp.int32(1)))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(bitwise_equal(a, b)))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_norms_and_means_equal_torch(dtype):
    rng = np.random.default_rng(0)
    bad = []
    for shape in SHAPES:
        x = np.asarray(10.0 ** rng.uniform(-3, 3, shape) * rng.choice([-1, 1], shape), dtype)
        t = to_torch(x)
        cases = [(None, t.norm(2))]
        if x.ndim > 1:
            cases += [(d, torch.linalg.vector_norm(t, 2, d, keepdim=True)) for d in (-1, -2)]
        for dim, want in cases:
            got = _ours(lambda a, z, d=dim: _reductions.vector_norm(a, d, z), x)
            if not _same(got, from_torch(want)):
                bad.append((shape, "norm", dim))
        if x.ndim > 1 and x.shape[-1]:
            v = np.ascontiguousarray(np.abs(x)[..., :1])  # a row factor: (..., m, 1)
            got = _ours(lambda a, z: _reductions.mean(a, -2, z), v)
            if not _same(got, from_torch(to_torch(v).mean(dim=-2, keepdim=True))):
                bad.append((shape, "mean"))
    assert not bad, bad
