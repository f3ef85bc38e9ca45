"""Dtype preservation, differentiability (hyper-gradients) and the double-single scalars."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import ALGOS

import jaxopt_lab as jol
from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim.leafwise import ScalarMath


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("algo", ALGOS)
def test_params_and_state_keep_dtype(algo, dtype):
    opt = getattr(jol, algo)()
    params = {"w": jnp.ones((4, 3), dtype), "b": jnp.full((3,), 0.5, dtype)}
    state = opt.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    for _ in range(3):
        params, state = jax.jit(opt.update)(params, grads, state)
    for leaf in jax.tree.leaves((params, state[1:])):
        assert leaf.dtype == dtype
    assert state.count.dtype == jnp.int32 and int(state.count) == 3


@pytest.mark.parametrize("algo", ALGOS)
def test_hypergradient_matches_finite_difference(algo):
    """d(loss after 5 unrolled steps)/d(lr), float64, against a central difference.

    The loss is smooth in lr, so the central difference has truncation error h^2 f'''/6 and
    rounding error ~eps |f| / h. At h = 1e-6 the first is ~1e-12 f''' (RMSprop's normalized step
    gives the largest f'''; 5e-6 relative was measured at h = 1e-5) and the second ~1e-10:
    both well below the 1e-6 relative tolerance.
    """
    target = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float64)

    def final_loss(lr):
        opt = getattr(jol, algo)(lr=lambda count: lr)
        params = jnp.zeros(6, jnp.float64)
        state = opt.init(params)
        for _ in range(5):
            grads = jax.grad(lambda p: jnp.sum((p - target) ** 2 * (1 + p**2)))(params)
            params, state = opt.update(params, grads, state)
        return jnp.sum((params - target) ** 2)

    lr0, h = 0.05, 1e-6
    fd = (final_loss(lr0 + h) - final_loss(lr0 - h)) / (2 * h)
    ad = jax.grad(final_loss)(jnp.float64(lr0))
    np.testing.assert_allclose(ad, fd, rtol=1e-6)


def test_double_single_scalars_round_like_python():
    """Adam's and Adagrad's per-step scalars, evaluated without x64, equal torch's Python-double
    values rounded once to float32 -- at every one of 2,000 sampled steps up to 20,000."""

    def scalars(n):
        m = ScalarMath(n, wide=False)
        bc1 = 1 - m.pow(0.9, n + 1)
        bc2 = 1 - m.pow(0.999, n + 1)
        clr = 0.1 / (1 + (m.step - 1) * 0.01)
        values = (bc1, bc2, -(1e-3 / bc1), m.sqrt(bc2), clr)
        return jnp.stack([_double.round_to(v, jnp.float32) for v in values])

    ns = np.arange(0, 20_000, 10, dtype=np.int32)
    got = np.asarray(jax.jit(jax.vmap(scalars))(jnp.asarray(ns)))
    for n, row in zip(ns, got, strict=True):
        t = float(n + 1)
        b1, b2 = 1 - 0.9**t, 1 - 0.999**t
        want = [b1, b2, -(1e-3 / b1), b2**0.5, 0.1 / (1 + (t - 1) * 0.01)]
        np.testing.assert_array_equal(row, np.asarray(want, np.float32), err_msg=f"step {n}")
