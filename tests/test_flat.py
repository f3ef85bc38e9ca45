"""The opt-in layouts of ``jaxopt_lab.optim.flat`` are bitwise equal to the plain leafwise update.

Whole float32 trajectories (params and every state field at every step) with ill-scaled
gradients, over a tree with a small leaf, a leaf split into full slices plus a tail, and a leaf
split into full slices only; ``chunked`` jitted with its compiler option, as users are told to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import CASES

from jaxopt_lab.optim.flat import COMPILER_OPTIONS, chunked, flat, unflatten_state

STEPS = 25
CHUNK = 256


def _tree(rng: np.random.Generator, scale: float = 1.0) -> dict:
    def leaf(*shape: int) -> jnp.ndarray:
        mags = 10.0 ** rng.uniform(-6, 3, size=shape)  # ill-scaled: nine decades
        return jnp.asarray(scale * mags * rng.standard_normal(shape), jnp.float32)

    return {"small": leaf(7, 5), "tail": leaf(3, 250), "even": leaf(4 * CHUNK)}


def _bits(tree: object) -> list[np.ndarray]:
    return [np.asarray(x).view(np.uint32) for x in jax.tree_util.tree_leaves(tree)]


def _trajectory(opt, jit_kwargs: dict, to_leafwise=None) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    params = _tree(rng)
    state = opt.init(params)
    step = jax.jit(opt.update, **jit_kwargs)
    out = []
    for _ in range(STEPS):
        params, state = step(params, _tree(rng, 1e-2), state)
        shown = to_leafwise(state, params) if to_leafwise else state
        out.append(_bits((params, shown)))
    return out


# The rows of cases.py that use every state buffer: one SGD with momentum, Adam with AMSGrad,
# AdamW, centered RMSprop with momentum, Adagrad with lr decay (the full table costs minutes).
FLAT_CASES = [
    c
    for c in CASES
    if c.id
    in {
        "sgd-mom-damp-wd",
        "adam-amsgrad-wd",
        "adamw-amsgrad",
        "rmsprop-centered-momentum-wd",
        "adagrad-lr-decay",
    }
]


@pytest.mark.parametrize("case", FLAT_CASES, ids=lambda c: c.id)
def test_chunked_and_flat_bitwise_equal_to_leafwise(case) -> None:
    want = _trajectory(case.make(), {})
    got_chunked = _trajectory(chunked(case.make(), CHUNK), {"compiler_options": COMPILER_OPTIONS})
    got_flat = _trajectory(flat(case.make()), {}, unflatten_state)
    for name, got in (("chunked", got_chunked), ("flat", got_flat)):
        for t, (w, g) in enumerate(zip(want, got, strict=True)):
            for a, b in zip(w, g, strict=True):
                assert a.shape == b.shape
                np.testing.assert_array_equal(a, b, err_msg=f"{name}: step {t}")


def test_chunked_keeps_state_structure() -> None:
    opt = CASES[0].make()
    params = _tree(np.random.default_rng(1))
    state = opt.init(params)
    _, new = chunked(opt, CHUNK).update(params, params, state)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)


def test_chunked_rejects_bad_chunk() -> None:
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        chunked(CASES[0].make(), 0)
