"""The README's optax-vs-torch difference table, one row per test: it cannot rot.

``ROWS``: each runs jaxopt_lab (== torch.optim, see test_parity) and an optax configuration for
30 float64 steps on ill-scaled gradients. ``same=True`` rows must agree to 1e-12 of the params'
scale (the two compute the same maths in another order); ``same=False`` rows document a real
difference, so they must *disagree* by more than 1e-6.

``EFFECTS`` (the algorithms beyond SGD/Adam/RMSprop/Adagrad): each row runs jaxopt_lab, torch and
the optax counterpart side by side, checks jaxopt_lab against torch, and asserts the *specific*
measured effect of the difference (its size at a given step, derived where the maths gives it,
and the configuration that makes it vanish), so that a row fails if optax or torch changes.
"""

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from _reference import SHAPES, grad_stream, init_params

import jaxopt_lab as jol
from jaxopt_lab import registry

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
    ("adamax", lambda: jol.adamax(2e-3), lambda: optax.adamax(2e-3), True),  # measured 6e-17
    (
        "adamax-weight-decay: optax.adamax has none; chained before it, torch's L2 term",
        lambda: jol.adamax(2e-3, weight_decay=0.1),
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.adamax(2e-3)),
        True,
    ),
    ("adadelta", lambda: jol.adadelta(1.0), lambda: optax.adadelta(1.0), True),  # 6e-17
    (
        "adadelta-weight-decay: optax's weight_decay is torch's L2 term",
        lambda: jol.adadelta(1.0, weight_decay=0.1),
        lambda: optax.adadelta(1.0, weight_decay=0.1),
        True,
    ),
    (
        "radam-weight-decay: optax.radam has none; chained before it, torch's L2 term (eps=0: "
        "see EFFECTS for eps)",
        lambda: jol.radam(1e-3, eps=0.0, weight_decay=0.1),
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.radam(1e-3, eps=0.0)),
        True,
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


# --- The other algorithms: each row asserts its measured effect ------------------------------

STEPS = 30
FLOAT64_BOUND = 1e-12  # jaxopt_lab vs torch in float64: test_parity's bound, of max|torch|
U32 = 2.0**-24  # float32 unit roundoff


@dataclasses.dataclass(frozen=True)
class Runs:
    """Params after each step (index t-1 for step t), float64, and what the checks need."""

    start: list[np.ndarray]
    grads: list[list[np.ndarray]]
    ours: list[list[np.ndarray]]
    torch: list[list[np.ndarray]]
    torch_state: list[list[dict[str, np.ndarray]]]  # per step, per param: torch's state
    optax: list[list[np.ndarray]]
    optax_updates: list[list[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Effect:
    id: str  # "<row>: what differs"
    algo: str  # the registry row; torch and jaxopt_lab take the same kwargs
    kwargs: dict[str, Any]
    optax: Callable[[], optax.GradientTransformation]
    check: Callable[[Runs], None]
    ours_is_torch: bool = True  # assert jaxopt_lab == torch first (FLOAT64_BOUND)
    shapes: tuple[tuple[int, ...], ...] = tuple(SHAPES)
    grad_scale: float = 1.0
    steps: int = STEPS
    torch_default_float64: bool = False  # torch's scalar state (NAdam's mu_product) in float64


def gap(runs: Runs, impl: str, step: int, leaves: list[int] | None = None) -> float:
    """Relative difference of the displacement after ``step`` steps: the largest over leaves
    of ``max|d - d_torch| / max|d_torch|``, ``d = params - start``."""
    out = 0.0
    for i in range(len(runs.start)) if leaves is None else leaves:
        mine = getattr(runs, impl)[step - 1][i] - runs.start[i]
        ref = runs.torch[step - 1][i] - runs.start[i]
        scale = np.max(np.abs(ref))
        if scale == 0:
            out = max(out, 0.0 if np.max(np.abs(mine)) == 0 else math.inf)
            continue
        out = max(out, float(np.max(np.abs(mine - ref)) / scale))
    return out


def assert_same(runs: Runs, impl: str, steps: range, bound: float = FLOAT64_BOUND) -> None:
    """``impl``'s params within ``bound * max|torch|`` of torch's, per leaf, at each step."""
    for t in steps:
        pairs = zip(getattr(runs, impl)[t - 1], runs.torch[t - 1], strict=True)
        for i, (mine, ref) in enumerate(pairs):
            err = np.max(np.abs(mine - ref), initial=0.0)
            assert err <= bound * np.max(np.abs(ref), initial=0.0), (impl, t, i, err)


def _nadam_mu_schedule(r: Runs) -> None:
    # Step 1, both d = sqrt(v / (1 - beta2)) + eps: torch steps lr (c_t g / d) with
    # c_t = (1 - mu_1) / (1 - mu_1) + (1 - beta1) mu_2 / (1 - mu_1 mu_2), optax with
    # c_o = 1 + beta1 (1 - beta1) / (1 - beta1^2): every element is c_o / c_t apart.
    b1, psi = 0.9, 4e-3
    mu1, mu2 = (b1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in (1, 2))
    c_t = 1 + (1 - b1) * mu2 / (1 - mu1 * mu2)
    c_o = 1 + b1 * (1 - b1) / (1 - b1**2)
    # torch's mu_product is float32: 1 - mu_1 is off by <= mu_1 / (1 - mu_1) * U32 relative
    assert abs(gap(r, "optax", 1) - (c_o / c_t - 1)) < 1e-6  # 0.3949 (measured 0.3949)
    assert gap(r, "optax", STEPS) > 0.5  # measured 1.17


def _nadam_constant_mu(r: Runs) -> None:
    assert_same(r, "optax", range(1, STEPS + 1))  # measured 6.9e-16 (params), 1.5e-13 (steps)


def _radam_eps(r: Runs) -> None:
    # rho_t <= 5 for t <= 5 (beta2 = 0.999): the unrectified step lr m_hat has no eps at all
    assert_same(r, "optax", range(1, 6))
    # rectified: torch's (sqrt(v) + eps) / sqrt(1 - beta2^t) is optax's sqrt(v_hat) + eps
    # with eps / sqrt(1 - beta2^t) (10 eps at t = 10) in its place; |g| ~ 1e-10..1e-4
    assert gap(r, "optax", 10) > 0.1  # measured 0.365
    assert gap(r, "optax", STEPS) > 0.02  # measured 0.078


def _radam_eps_zero(r: Runs) -> None:
    assert_same(r, "optax", range(1, STEPS + 1))


def _rprop_previous_update(r: Runs) -> None:
    # torch's update at step t, from its state: -sign(prev_t) * step_size_t
    torch_updates = [
        [-np.sign(s["prev"]) * s["step_size"] for s in states] for states in r.torch_state
    ]
    lr = 1e-2
    for g, u_torch, u_optax in zip(r.grads[0], torch_updates[0], r.optax_updates[0], strict=True):
        assert np.array_equal(u_torch, -lr * np.sign(g))  # +-lr (0 where g == 0)
        assert not np.any(u_optax)  # optax's first update is 0
    for t in range(2, STEPS + 1):  # optax's update at t is torch's at t - 1, 0 on a sign flip
        for i, g in enumerate(r.grads[t - 1]):
            flips = g * r.torch_state[t - 2][i]["prev"] < 0
            expected = np.where(flips, 0.0, torch_updates[t - 2][i])
            assert np.array_equal(r.optax_updates[t - 1][i], expected), (t, i)


def _float32_decay_bound(steps: int) -> float:
    # optax computes the decay 1 - t^-0.8 in float32 (optax._src.factorized._decay_rate_pow):
    # each step's second moment is off by ~U32 relative, its root by half that, accumulated
    return steps * U32  # 1.8e-6; measured 7.6e-8


def _adafactor_factoring(r: Runs) -> None:
    vectors, matrices = [1, 2], [0, 3]  # (101,), () / (37, 11), (3, 4, 5)
    assert gap(r, "optax", 1, vectors) <= FLOAT64_BOUND  # measured 0
    assert gap(r, "optax", STEPS, vectors) <= _float32_decay_bound(STEPS)
    # optax does not factor dims < min_dim_size_to_factor (128); torch factors every ndim > 1
    # tensor on its last two dims
    assert gap(r, "optax", 1, matrices) > 0.5  # measured 0.90


def _adafactor_same_update(r: Runs) -> None:
    assert gap(r, "optax", 1) <= FLOAT64_BOUND  # measured 5.4e-16
    for t in range(1, STEPS + 1):
        assert gap(r, "optax", t) <= _float32_decay_bound(t), t  # measured <= 7.6e-8


def _adafactor_relative_step(r: Runs) -> None:
    # lr = 1: torch steps min(lr, 1/sqrt(t)) RMS(p) U, optax lr RMS(p) U. Step 1 is the same,
    # step 2 (same p, same U up to the float32 decay) is sqrt(2) larger in optax.
    assert gap(r, "optax", 1) <= FLOAT64_BOUND
    for i in range(len(r.start)):
        inc_t = r.torch[1][i] - r.torch[0][i]
        inc_o = r.optax[1][i] - r.optax[0][i]
        err = np.max(np.abs(inc_o - math.sqrt(2) * inc_t), initial=0.0)
        assert err <= 1e-6 * np.max(np.abs(inc_o), initial=0.0), (i, err)  # measured ~1e-8
    assert gap(r, "optax", 2) > 0.1  # measured 0.41


def _muon_shape_scale(r: Runs) -> None:
    # torch Muon's bfloat16 products may round an element differently from XLA's (other
    # accumulation order; tests/test_muon.py): a few bfloat16 ULPs (2^-8) at most; measured 0
    for mine, ref, p0 in zip(r.ours[0], r.torch[0], r.start, strict=True):
        assert np.linalg.norm(mine - ref) <= 1e-2 * np.linalg.norm(ref - p0)
    for p0, ref, theirs in zip(r.start, r.torch[0], r.optax[0], strict=True):
        rows, cols = p0.shape
        expected = math.sqrt(max(1, rows / cols)) / math.sqrt(max(1, cols / rows))
        ratio = np.linalg.norm(ref - p0) / np.linalg.norm(theirs - p0)
        # the same orthogonalized direction (bfloat16 vs float64 iteration: ~0.5% apart)
        assert abs(ratio / expected - 1) < 2e-2, (p0.shape, ratio, expected)  # measured 0.5%


EFFECTS = [
    Effect(
        "nadam-mu-schedule: optax keeps beta1 constant; torch uses mu_t = beta1 (1 - 0.5 "
        "0.96^(t momentum_decay)) and a running product of mu",
        "nadam",
        {"lr": 2e-3},
        lambda: optax.nadam(2e-3),
        _nadam_mu_schedule,
    ),
    Effect(
        "nadam-constant-mu: once mu_t = beta1 (momentum_decay=1e6: 0.96^(1e6 t) = 0) torch's "
        "NAdam is optax.nadam (mu_product in float64, torch's default dtype float64)",
        "nadam",
        {"lr": 2e-3, "momentum_decay": 1e6},
        lambda: optax.nadam(2e-3),
        _nadam_constant_mu,
        ours_is_torch=False,  # jaxopt_lab's mu_product is float32, torch's default dtype's
        torch_default_float64=True,
    ),
    Effect(
        "radam-eps: optax adds eps to sqrt(nu_hat), torch to sqrt(v) (eps / sqrt(1 - beta2^t) "
        "in effect); |g| ~ 1e-7",
        "radam",
        {"lr": 1e-3},
        lambda: optax.radam(1e-3),
        _radam_eps,
        grad_scale=1e-7,
    ),
    Effect(
        "radam-eps-zero: with eps=0 optax.radam is torch's RAdam (|g| ~ 1e-7)",
        "radam",
        {"lr": 1e-3, "eps": 0.0},
        lambda: optax.radam(1e-3, eps=0.0),
        _radam_eps_zero,
        grad_scale=1e-7,
    ),
    Effect(
        "rprop-previous-update: optax returns the previous step's update (its first is 0, "
        "torch's -lr sign(g)), and 0 where the gradient's sign flips",
        "rprop",
        {"lr": 1e-2},
        lambda: optax.rprop(1e-2),
        _rprop_previous_update,
    ),
    Effect(
        "adafactor-factoring: optax factors only dims >= min_dim_size_to_factor (128), torch "
        "every ndim > 1 tensor; vectors the same",
        "adafactor",
        {"lr": 1e-2},
        lambda: optax.adafactor(1e-2),
        _adafactor_factoring,
    ),
    Effect(
        "adafactor-same-update: min_dim_size_to_factor=1, lr <= 1/sqrt(t): torch's update but "
        "for optax's float32 decay 1 - t^-0.8",
        "adafactor",
        {"lr": 1e-2},
        lambda: optax.adafactor(1e-2, min_dim_size_to_factor=1),
        _adafactor_same_update,
    ),
    Effect(
        "adafactor-relative-step: torch's step size is min(lr, 1/sqrt(t)) RMS(p), optax's lr "
        "RMS(p)",
        "adafactor",
        {"lr": 1.0},
        lambda: optax.adafactor(1.0, min_dim_size_to_factor=1),
        _adafactor_relative_step,
    ),
    Effect(
        "muon-shape-scale: torch scales an A x B (out, in) weight's update by sqrt(max(1, A/B)), "
        "optax.contrib.muon by sqrt(max(1, B/A)) (an (in, out) kernel)",
        "muon",
        {"lr": 0.02, "weight_decay": 0.0, "nesterov": False},
        lambda: optax.contrib.muon(0.02, weight_decay=0.0, nesterov=False),
        _muon_shape_scale,
        ours_is_torch=False,  # bfloat16 products: checked in the row
        shapes=((37, 11), (11, 37), (24, 24)),
        steps=1,
    ),
]


@contextlib.contextmanager
def _torch_default_dtype(dtype: Any) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _inputs(row: Effect) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    if row.shapes == tuple(SHAPES):
        stream = grad_stream(row.steps, np.float64)
        grads = [[np.asarray(g * row.grad_scale) for g in gs] for gs in stream]
        return init_params(np.float64), grads
    rng = np.random.default_rng(0)
    start = [rng.normal(size=s) for s in row.shapes]
    grads = [
        [rng.normal(size=s) * 10.0 ** rng.uniform(-1, 1, size=s) for s in row.shapes]
        for _ in range(row.steps)
    ]
    return start, grads


def run_all(row: Effect) -> Runs:
    """jaxopt_lab, torch and optax from the same start on the same gradients, float64."""
    start, grads = _inputs(row)
    opt = getattr(jol, row.algo)(**row.kwargs)
    params = [jnp.asarray(p) for p in start]
    state, update = opt.init(params), jax.jit(opt.update)
    ours = []
    for g in grads:
        params, state = update(params, [jnp.asarray(x) for x in g], state)
        ours.append([np.asarray(p) for p in params])

    dtype = torch.float64 if row.torch_default_float64 else torch.get_default_dtype()
    with _torch_default_dtype(dtype):
        tparams = [torch.tensor(p, requires_grad=True) for p in start]
        topt = getattr(torch.optim, registry.get(row.algo).torch_class)(tparams, **row.kwargs)
        theirs, theirs_state = [], []
        for g in grads:
            for p, x in zip(tparams, g, strict=True):
                p.grad = torch.from_numpy(x)
            topt.step()
            theirs.append([p.detach().numpy().copy() for p in tparams])
            theirs_state.append(
                [
                    {k: v.detach().numpy().copy() for k, v in topt.state[p].items() if k != "step"}
                    for p in tparams
                ]
            )

    tx = row.optax()
    params = [jnp.asarray(p) for p in start]
    # optax mixes Python floats and int32 counts: standard promotion, as users run it
    with jax.numpy_dtype_promotion("standard"):
        tx_state = tx.init(params)
        tx_update = jax.jit(tx.update)
        out, updates_out = [], []
        for g in grads:
            updates, tx_state = tx_update([jnp.asarray(x) for x in g], tx_state, params)
            params = optax.apply_updates(params, updates)
            out.append([np.asarray(p) for p in params])
            updates_out.append([np.asarray(u) for u in updates])
    return Runs(start, grads, ours, theirs, theirs_state, out, updates_out)


@pytest.mark.parametrize("row", EFFECTS, ids=[r.id.split(":")[0] for r in EFFECTS])
def test_optax_effect(row: Effect) -> None:
    runs = run_all(row)
    if row.ours_is_torch:
        assert_same(runs, "ours", range(1, row.steps + 1))
    row.check(runs)


def test_every_optax_counterpart_has_a_row() -> None:
    """Each registry algorithm with an optax counterpart is in one of the two tables."""
    covered = {r[0].split(":")[0].split("-")[0] for r in ROWS} | {r.algo for r in EFFECTS}
    missing = [a.name for a in registry.ALGORITHMS if a.optax and a.name not in covered]
    assert missing == ["lbfgs"], missing  # L-BFGS: tests/test_lbfgs.py
