"""Param groups equal torch's multi-group optimizer; optax interop works both ways."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import bitwise_equal, grad_stream, init_params

import jaxopt_lab as jol

torch = pytest.importorskip("torch")

STEPS = 50
LABELS = ["base", "head", "base", "head"]  # per leaf of _reference.SHAPES
GROUPS = {
    "sgd-two-lrs": (
        lambda: {"base": jol.sgd(lr=1e-2, momentum=0.9), "head": jol.sgd(lr=1e-3, momentum=0.9)},
        lambda base, head: torch.optim.SGD(
            [{"params": base}, {"params": head, "lr": 1e-3}], lr=1e-2, momentum=0.9, foreach=False
        ),
    ),
    "adamw-two-decays": (
        lambda: {"base": jol.adamw(weight_decay=0.1), "head": jol.adamw(weight_decay=0.0)},
        lambda base, head: torch.optim.AdamW(
            [{"params": base}, {"params": head, "weight_decay": 0.0}],
            weight_decay=0.1,
            foreach=False,
        ),
    ),
}


@pytest.mark.parametrize("name", list(GROUPS))
def test_param_groups_match_torch(name):
    make_ours, make_torch = GROUPS[name]
    p0 = init_params(np.float64)
    opt = jol.param_groups(LABELS, make_ours())
    params = [jnp.asarray(p) for p in p0]
    state = opt.init(params)
    step = jax.jit(opt.update)
    tp = [torch.tensor(p, requires_grad=True) for p in p0]
    topt = make_torch([tp[0], tp[2]], [tp[1], tp[3]])
    for grads in grad_stream(STEPS, np.float64):
        params, state = step(params, [jnp.asarray(g) for g in grads], state)
        for p, g in zip(tp, grads, strict=True):
            p.grad = torch.from_numpy(g)
        topt.step()
    for ours, theirs in zip(params, tp, strict=True):
        ref = theirs.detach().numpy()
        # float64: same arithmetic up to torch's MKL sqrt; see test_parity's derivation.
        np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=1e-12 * np.max(np.abs(ref)))


def test_param_groups_labels_function():
    labels = lambda params: jax.tree.map(lambda p: "head" if p.ndim == 1 else "base", params)  # noqa: E731
    opt = jol.param_groups(labels, {"base": jol.sgd(lr=0.1), "head": jol.sgd(lr=0.0)})
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    new, _ = opt.update(params, jax.tree.map(jnp.ones_like, params), opt.init(params))
    np.testing.assert_array_equal(new["b"], params["b"])
    np.testing.assert_allclose(new["w"], 0.9)


def test_as_optax_in_chain_equals_direct_update():
    """Through optax (clipping first), the update equals clipping by hand then ``opt.update``."""
    opt = jol.adam(lr=1e-2)
    tx = optax.chain(optax.clip_by_global_norm(1.0), jol.as_optax(opt))
    params = [jnp.asarray(p, jnp.float32) for p in init_params(np.float32)]
    direct_params, direct_state = params, opt.init(params)
    tx_state = tx.init(params)
    for grads in grad_stream(20, np.float32):
        grads = [jnp.asarray(g) for g in grads]
        updates, tx_state = tx.update(grads, tx_state, params)
        params = optax.apply_updates(params, updates)
        clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
        direct_params, direct_state = opt.update(direct_params, clipped, direct_state)
    for a, b in zip(params, direct_params, strict=True):
        # new - old is exact (Sterbenz) for steps this small, so p + (new - old) == new.
        assert bitwise_equal(np.asarray(a), np.asarray(b)).all()


def test_from_optax_wraps_transformation():
    opt = jol.from_optax(optax.sgd(0.1))
    params = {"w": jnp.ones(3, jnp.float32)}
    new, _ = jax.jit(opt.update)(params, {"w": jnp.ones(3, jnp.float32)}, opt.init(params))
    np.testing.assert_allclose(new["w"], 0.9, rtol=1e-7)


def test_custom_leafwise_optimizer_plugs_in():
    """The README's sign-SGD: schedules, param groups and optax interop work with it."""

    def sign_sgd(lr=0.01):
        return jol.leafwise(
            "sign_sgd",
            init_leaf=lambda p: (),
            update_leaf=lambda p, g, bufs, ctx: (p - ctx.scalars["lr"] * jnp.sign(g), ()),
            scalars=lambda math: {"lr": math.resolve(lr)},
        )

    opt = jol.param_groups(
        {"a": "x", "b": "y"},
        {"x": sign_sgd(lambda count: jnp.where(count == 0, 1.0, 0.5)), "y": jol.sgd(lr=0.1)},
    )
    params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    grads = {"a": jnp.array([3.0, -2.0]), "b": jnp.array([1.0, 1.0])}
    state = opt.init(params)
    for _ in range(2):
        params, state = jax.jit(opt.update)(params, grads, state)
    np.testing.assert_allclose(params["a"], [-1.5, 1.5])  # 1 + 0.5 per coordinate, signed
    np.testing.assert_allclose(params["b"], [-0.2, -0.2])
    tx = jol.as_optax(sign_sgd(0.1))
    updates, _ = tx.update(grads["a"], tx.init(jnp.zeros(2)), jnp.zeros(2))
    np.testing.assert_allclose(updates, [-0.1, 0.1])
