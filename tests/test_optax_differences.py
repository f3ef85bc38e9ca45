"""The README's optax-vs-torch difference table, one row per test: it cannot rot.

Each row runs jaxopt_lab (== torch.optim, see test_parity) and an optax configuration for 30
float64 steps on ill-scaled gradients. ``same=True`` rows must agree to 1e-12 of the params'
scale (the two compute the same maths in another order); ``same=False`` rows document a real
difference, so they must *disagree* by more than 1e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import grad_stream, init_params

import jaxopt_lab as jol

ROWS = [
    # (id, jaxopt_lab, optax, same)
    (
        "sgd-momentum",
        lambda: jol.sgd(0.01, momentum=0.9),
        lambda: optax.sgd(0.01, momentum=0.9),
        True,
    ),
    (
        "sgd-nesterov",
        lambda: jol.sgd(0.01, momentum=0.9, nesterov=True),
        lambda: optax.sgd(0.01, momentum=0.9, nesterov=True),
        True,
    ),
    (
        "sgd-dampening: optax has none (torch: first buffer = g, then (1-dampening) g)",
        lambda: jol.sgd(0.01, momentum=0.9, dampening=0.5),
        lambda: optax.sgd(0.01, momentum=0.9),
        False,
    ),
    ("adam", lambda: jol.adam(1e-3), lambda: optax.adam(1e-3), True),
    (
        "amsgrad: optax takes the max of bias-corrected nu, torch of raw v",
        lambda: jol.adam(1e-3, amsgrad=True),
        lambda: optax.amsgrad(1e-3),
        False,
    ),
    (
        "adamw-defaults: optax weight_decay=1e-4, torch 1e-2",
        lambda: jol.adamw(1e-3),
        lambda: optax.adamw(1e-3),
        False,
    ),
    (
        "adamw-same-decay",
        lambda: jol.adamw(1e-3),
        lambda: optax.adamw(1e-3, weight_decay=1e-2),
        True,
    ),
    (
        "rmsprop-eps: optax default puts eps inside the sqrt",
        lambda: jol.rmsprop(1e-3),
        lambda: optax.rmsprop(1e-3, decay=0.99, eps=1e-8),
        False,
    ),
    (
        "rmsprop-eps-outside",
        lambda: jol.rmsprop(1e-3),
        lambda: optax.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        True,
    ),
    (
        "adagrad: optax starts the sum at 0.1 and puts eps inside the sqrt",
        lambda: jol.adagrad(1e-2),
        lambda: optax.adagrad(1e-2, eps=1e-10),
        False,
    ),
]


@pytest.mark.parametrize(
    ("make_ours", "make_optax", "same"),
    [r[1:] for r in ROWS],
    ids=[r[0].split(":")[0] for r in ROWS],
)
def test_optax_row(make_ours, make_optax, same):
    ours, theirs = make_ours(), jol.from_optax(make_optax())
    p0 = [jnp.asarray(p) for p in init_params(np.float64)]
    a, b = p0, p0
    sa, sb = ours.init(a), theirs.init(b)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and float betas
        step_a, step_b = jax.jit(ours.update), jax.jit(theirs.update)
        for grads in grad_stream(30, np.float64):
            grads = [jnp.asarray(g) for g in grads]
            a, sa = step_a(a, grads, sa)
            b, sb = step_b(b, grads, sb)
    rel = max(
        float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-300))
        for x, y in zip(a, b, strict=True)
    )
    if same:
        assert rel <= 1e-12, rel
    else:
        assert rel > 1e-6, rel
