"""Param groups equal torch's multi-group optimizer; optax interop works both ways.

The group table covers every per-step algorithm of ``jaxopt_lab.registry`` (two groups, the
second with a tenth of the lr) plus groups that differ in another hyper-parameter, in the mode
users run: float32 with x64 off, bit for bit against torch's single-tensor path with a correctly
rounded sqrt (the parity suite's reference), params and every state field after every step.
"""

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import (
    bitwise_equal,
    bitwise_equal_or_both_nan,
    correctly_rounded_torch_sqrt,
    from_torch,
    grad_stream,
    init_params,
)

import jaxopt_lab as jol
from jaxopt_lab import registry
from jaxopt_lab.optim.leafwise import field_leaves

torch = pytest.importorskip("torch")

STEPS = 30
LABELS = ["base", "head", "base", "head"]  # per leaf of _reference.SHAPES


class Group:
    """Two param groups: ``base`` with ``kwargs``, ``head`` with ``kwargs | head``."""

    def __init__(self, algo: str, head: dict[str, Any], kwargs: dict[str, Any] | None = None):
        self.algo, self.head, self.kwargs = algo, head, kwargs or {}
        self.id = f"{algo}-" + "-".join(f"{k}={v}" for k, v in head.items())

    def make(self) -> jol.Optimizer:
        factory = registry.get(self.algo).factory
        return jol.param_groups(
            LABELS,
            {"base": factory(**self.kwargs), "head": factory(**{**self.kwargs, **self.head})},
        )

    def make_torch(self, base: list, head: list) -> Any:
        cls = getattr(torch.optim, registry.get(self.algo).torch_class)
        switches = {"foreach": False} if "foreach" in inspect.signature(cls).parameters else {}
        groups = [{"params": base}, {"params": head, **self.head}]
        return cls(groups, **self.kwargs, **switches)


def _tenth_lr(algo: str) -> Group:
    return Group(algo, {"lr": registry.get(algo).defaults()["lr"] / 10})


GROUPS: list[Group] = [_tenth_lr(a) for a in registry.names(per_step=True)] + [
    Group("sgd", {"lr": 1e-3}, {"lr": 1e-2, "momentum": 0.9}),
    Group("adamw", {"weight_decay": 0.0}, {"weight_decay": 0.1}),
    Group("rmsprop", {"momentum": 0.5, "centered": True}),
]


def _state_leaves(state: Any, field: str) -> list[Any]:
    """A field's leaves in params order, from the group states (None where a group keeps no
    such field)."""
    taken = {}
    for name, group_state in state.inner.items():
        value = getattr(group_state, field)
        leaves = [] if value is None else field_leaves(group_state, field)  # (vectors: entries)
        taken[name] = iter(leaves)
    return [next(taken[label], None) for label in LABELS]


@pytest.mark.parametrize("row", GROUPS, ids=lambda r: r.id)
def test_param_groups_match_torch(row: Group):
    with jax.enable_x64(False), correctly_rounded_torch_sqrt():
        opt = row.make()
        params = [jnp.asarray(p) for p in init_params(np.float32)]
        state = opt.init(params)
        step = jax.jit(opt.update)
        tp = [torch.tensor(p, requires_grad=True) for p in init_params(np.float32)]
        topt = row.make_torch([tp[0], tp[2]], [tp[1], tp[3]])
        fields = [f for f in next(iter(state.inner.values()))._fields[1:]]
        for t, grads in enumerate(grad_stream(STEPS, np.float32)):
            params, state = step(params, [jnp.asarray(g) for g in grads], state)
            for p, g in zip(tp, grads, strict=True):
                p.grad = torch.from_numpy(g)
            topt.step()
            for i, (ours, theirs) in enumerate(zip(params, tp, strict=True)):
                same = bitwise_equal_or_both_nan(np.asarray(ours), from_torch(theirs))
                assert same.all(), f"step {t}, param {i}: {(~same).sum()} elements differ"
            for field in fields:
                for i, leaf in enumerate(_state_leaves(state, field)):
                    if leaf is None:
                        continue
                    if field not in topt.state[tp[i]]:  # ours: an empty placeholder (Adafactor)
                        assert leaf.size == 0, f"{field}[{i}]: torch keeps no such key"
                        continue
                    theirs = from_torch(topt.state[tp[i]][field])
                    same = bitwise_equal_or_both_nan(np.asarray(leaf), theirs)
                    assert same.all(), f"step {t}, {field}[{i}]: {(~same).sum()} elements differ"


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
