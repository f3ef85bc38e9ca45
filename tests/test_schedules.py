"""jaxopt_lab.schedules against torch.optim.lr_scheduler (and optax where it has the schedule).

Tolerances. Below a schedule's ``horizon`` its value is an entry of a table replayed at
construction with the very Python-float operations torch runs, so it must equal torch's lr
**bit for bit** (``assert_array_equal``). Past the horizon it is computed by XLA, which contracts
``a * b + c`` into an FMA and multiplies by the reciprocal of constant divisors: each operation
may then differ from torch's by an ulp (2^-53 relative). Closed forms take ~10 such operations;
torch's cosine recursion amplifies an ulp in ``1 + cos(x)`` near ``x = pi`` by
``~2 T_max^2 / pi^2`` (324 for ``T_max=40``) and carries it on; over <= 300 steps that stays below
1e-13 relative (measured: 3.7e-14). ``RTOL_GRAPH = 1e-12`` keeps a 10x margin, and
``ATOL_GRAPH = 1e-15 * peak`` covers values that torch rounds to exactly 0 where XLA's are 1e-18.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from optax import contrib
from schedule_cases import (
    BAD,
    CASES,
    EPOCH_RUNS,
    OPTAX_ROWS,
    PLATEAU_CONFIGS,
    PLATEAU_METRICS,
    Bad,
    Case,
    EpochRun,
    OptaxRow,
    Sched,
    build_ours,
    build_ours_momentum,
    build_torch,
    torch_optimizer,
    torch_trajectory,
)
from torch.optim import lr_scheduler as L

import jaxopt_lab as jol
from jaxopt_lab import schedules as S

RTOL_GRAPH = 1e-12
ATOL_GRAPH = 1e-15
# torch's recursion rounds once per step and optax's closed form a handful of times: over <= 300
# counts at most ~300 * 2^-53 = 3.3e-14 apart (measured <= 3.1e-15).
RTOL_CLOSED_VS_RECURSIVE = 1e-13


def _ids(rows: list) -> list[str]:
    return [row.id for row in rows]


def _values(schedule: S.LRSchedule, n: int) -> np.ndarray:
    """The schedule at counts 0..n, from one compiled function (a scalar count per call)."""
    return np.asarray(
        jax.jit(lambda ks: jax.lax.map(schedule, ks))(jnp.arange(n + 1, dtype=jnp.int32))
    )


def _assert_torch(ours: np.ndarray, ref: np.ndarray, horizon: int) -> None:
    np.testing.assert_array_equal(ours[:horizon], ref[:horizon])
    if len(ref) > horizon:
        np.testing.assert_allclose(
            ours[horizon:], ref[horizon:], rtol=RTOL_GRAPH, atol=ATOL_GRAPH * np.abs(ref).max()
        )


@pytest.fixture(scope="module")
def torch_runs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """torch's lr and momentum trajectory per case, computed once."""
    return {c.id: torch_trajectory(c.spec, c.n, lr=c.lr, optimizer=c.optimizer) for c in CASES}


# --------------------------------------------------------------------------------------------
# Parity with torch: every case, every count 0..n.


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_matches_torch(case: Case, torch_runs: dict) -> None:
    ref_lr, ref_momentum = torch_runs[case.id]
    schedule = build_ours(case.spec, case.lr)
    values = _values(schedule, case.n)
    assert values.dtype == np.float64
    _assert_torch(values, ref_lr, case.spec.horizon())
    if case.momentum:
        momentum = _values(build_ours_momentum(case.spec), case.n)
        _assert_torch(momentum, ref_momentum, case.spec.horizon())


# The float32 table and the concrete-count path are the same code for every schedule: they are
# checked on one case per torch class, plus the cases that matter to each.
ONE_PER_CLASS = [
    c for i, c in enumerate(CASES) if c.spec.name not in {d.spec.name for d in CASES[:i]}
]
F32_CASES = ONE_PER_CLASS + [c for c in CASES if c.id == "exponential-growth"]
EAGER_CASES = ONE_PER_CLASS + [
    c
    for c in CASES
    if c not in ONE_PER_CLASS and c.spec.horizon() <= c.n  # past the table
]


@pytest.mark.parametrize("case", F32_CASES, ids=_ids(F32_CASES))
def test_float32_is_torch_rounded(case: Case, torch_runs: dict) -> None:
    """Without x64 the table holds torch's doubles rounded to float32."""
    ref_lr, _ = torch_runs[case.id]
    schedule = build_ours(case.spec, case.lr)
    horizon = min(case.spec.horizon(), case.n + 1)
    with jax.enable_x64(False):
        values = _values(schedule, horizon - 1)
    assert values.dtype == np.float32
    with np.errstate(over="ignore"):  # exponential growth leaves float32's range: inf
        rounded = ref_lr[:horizon].astype(np.float32)
    np.testing.assert_array_equal(values, rounded)


@pytest.mark.parametrize("case", EAGER_CASES, ids=_ids(EAGER_CASES))
def test_jit_matches_eager(case: Case) -> None:
    """A concrete count (table lookup or the schedule's own jit) equals a traced one."""
    schedule = build_ours(case.spec, case.lr)
    horizon = case.spec.horizon()
    counts = sorted({0, 1, 2, case.n // 2, case.n, horizon - 1, horizon, horizon + 7})
    counts = [k for k in counts if k <= case.n]
    jitted = jax.jit(schedule)
    for k in counts:
        eager = schedule(k)
        assert eager.dtype == jnp.float64 and eager.shape == ()
        assert eager == jitted(jnp.int32(k)), k


# --------------------------------------------------------------------------------------------
# Invalid inputs: our error and what torch does with the same arguments.


def _build_bad(bad: Bad) -> object:
    if isinstance(bad.build, Sched):
        return build_ours(bad.build, 0.1)
    return bad.build()


@pytest.mark.parametrize("bad", BAD, ids=_ids(BAD))
def test_invalid_input_raises(bad: Bad) -> None:
    with pytest.raises(bad.error, match=bad.match()):
        schedule = _build_bad(bad)
        if bad.count is not None:
            schedule(bad.count)


TORCH_BAD = [b for b in BAD if b.torch != "n/a" or b.torch_build is not None]


@pytest.mark.parametrize("bad", TORCH_BAD, ids=_ids(TORCH_BAD))
def test_invalid_input_in_torch(bad: Bad) -> None:
    opt = torch_optimizer("sgd", 0.1)

    def build() -> object:
        return bad.torch_build(opt) if bad.torch_build else build_torch(bad.build, opt)

    if bad.torch == "same":
        with pytest.raises(bad.error, match=bad.match()):
            build()
    elif bad.torch == "type":
        with pytest.raises(bad.error):
            build()
    elif bad.torch == "accepts":
        scheduler = build()
        opt.step()
        scheduler.step()
    else:  # "later": torch is fine until scheduler.step() number torch_count raises.
        match = bad.match() if bad.torch_error is bad.error else None
        if bad.torch_count == 0:
            with pytest.raises(bad.torch_error, match=match):
                build()
            return
        scheduler = build()
        for _ in range(bad.torch_count - 1):
            opt.step()
            scheduler.step()
        opt.step()
        with pytest.raises(bad.torch_error, match=match):
            scheduler.step()


@pytest.mark.parametrize("name", ["one_cycle_lr", "one_cycle_momentum"])
def test_one_cycle_traced_past_total_is_nan(name: str) -> None:
    schedule = getattr(S, name)(max_lr=0.1, total_steps=300)
    jitted = jax.jit(schedule)
    assert np.isfinite(jitted(300)) and np.isnan(jitted(301))


# --------------------------------------------------------------------------------------------
# ReduceLROnPlateau: lr and every counter after each update, for configs x metric sequences.


@pytest.mark.parametrize("config", list(PLATEAU_CONFIGS))
def test_reduce_lr_on_plateau_matches_torch(config: str) -> None:
    """lr and every counter after each update, for each metric sequence (vmapped)."""
    kwargs = PLATEAU_CONFIGS[config]
    refs = []
    for sequence in PLATEAU_METRICS.values():
        opt = torch_optimizer("sgd", 0.1)
        scheduler = L.ReduceLROnPlateau(opt, **kwargs)
        ref = []
        for metric in sequence:
            scheduler.step(metric)
            ref.append(
                (
                    opt.param_groups[0]["lr"],
                    scheduler.best,
                    scheduler.num_bad_epochs,
                    scheduler.cooldown_counter,
                    scheduler.last_epoch,
                )
            )
        refs.append([np.asarray(v) for v in zip(*ref, strict=True)])
    plateau = S.reduce_lr_on_plateau(0.1, **kwargs)

    @jax.jit
    @jax.vmap
    def run(metrics_T: jax.Array) -> tuple[S.PlateauState, jax.Array]:
        def body(state: S.PlateauState, metric: jax.Array) -> tuple:
            state, lr = plateau.update(state, metric)
            return state, (state, lr)

        return jax.lax.scan(body, plateau.init(), metrics_T)[1]

    states, lrs = run(jnp.asarray(list(PLATEAU_METRICS.values()), jnp.float64))
    assert states.count.dtype == jnp.int32
    for i, (lr, best, bad, cooldown, count) in enumerate(refs):
        np.testing.assert_array_equal(lrs[i], lr)
        np.testing.assert_array_equal(states.lr[i], lr)
        np.testing.assert_array_equal(states.best[i], best)
        np.testing.assert_array_equal(states.num_bad_epochs[i], bad)
        np.testing.assert_array_equal(states.cooldown_counter[i], cooldown)
        np.testing.assert_array_equal(states.count[i], count)


# --------------------------------------------------------------------------------------------
# Epoch-stepped schedules on an optimizer that steps per batch.


@pytest.mark.parametrize("run", EPOCH_RUNS, ids=_ids(EPOCH_RUNS))
def test_scheduled_training_matches_torch(run: EpochRun) -> None:
    """torch's training loop, optimizer.step() per batch and scheduler.step() per epoch (or per
    batch), against jaxopt_lab's optimizer given the schedule: the lr (and betas[0]) every step
    used, and the params after every step.

    Params: float64, so ``|ours - torch| <= 1e-12 * max|torch|`` as in ``test_parity.py``.
    """
    steps = run.epochs * run.steps_per_epoch
    grads = np.random.default_rng(0).standard_normal((steps, 5))
    opt = torch_optimizer(run.optimizer, 0.01 if run.optimizer == "adam" else 0.1, size=5)
    (param,) = opt.param_groups[0]["params"]
    params0 = jnp.asarray(param.detach().numpy().copy())
    scheduler = build_torch(run.spec, opt)
    lrs, betas, trajectory = [], [], []
    for k in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        betas.append(opt.param_groups[0].get("betas", (None,))[0])
        param.grad = torch.from_numpy(grads[k].copy())
        opt.step()
        trajectory.append(param.detach().numpy().copy())
        if run.per_batch or (k + 1) % run.steps_per_epoch == 0:
            scheduler.step()

    lr = build_ours(run.spec, opt.param_groups[0]["initial_lr"])
    if not run.per_batch:
        lr = S.per_epoch(lr, run.steps_per_epoch)
    np.testing.assert_array_equal(_values(lr, steps - 1), lrs)
    if run.optimizer == "adam":
        beta1 = build_ours_momentum(run.spec)
        np.testing.assert_array_equal(_values(beta1, steps - 1), betas)
        ours = jol.adam(lr=lr, betas=(beta1, 0.999))
    else:
        ours = jol.sgd(lr=lr, momentum=0.9)

    @jax.jit
    def train(params: jax.Array, grads_T: jax.Array) -> jax.Array:
        def body(carry: tuple, grad: jax.Array) -> tuple:
            params, state = ours.update(carry[0], grad, carry[1])
            return (params, state), params

        return jax.lax.scan(body, (params, ours.init(params)), grads_T)[1]

    got = np.asarray(train(params0, jnp.asarray(grads)))
    want = np.asarray(trajectory)
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))


# --------------------------------------------------------------------------------------------
# optax: one test per row of the README's difference table.


@pytest.mark.parametrize("row", OPTAX_ROWS, ids=_ids(OPTAX_ROWS))
def test_optax_counterpart(row: OptaxRow) -> None:
    n = 300
    ours = _values(build_ours(row.spec, 0.1), n)
    counts = jnp.arange(n + 1, dtype=jnp.int32)
    schedule = row.optax()
    evaluate = jax.vmap(schedule) if row.eager else jax.jit(jax.vmap(schedule))
    with jax.numpy_dtype_promotion("standard"):  # optax's own arithmetic is not strict-clean
        assert evaluate(counts).dtype == row.int32_dtype
        theirs = np.asarray(evaluate(counts if row.int_counts else counts.astype(jnp.float64)))
    if row.relation == "equal":
        np.testing.assert_array_equal(ours, theirs)
    elif row.relation == "close":
        np.testing.assert_allclose(ours, theirs, rtol=RTOL_CLOSED_VS_RECURSIVE, atol=0)
        assert np.any(ours != theirs)  # a real (rounding) difference, not an identity
    elif row.relation == "clamped-after-T":
        end = row.boundary
        np.testing.assert_allclose(
            ours[: end + 1], theirs[: end + 1], rtol=RTOL_CLOSED_VS_RECURSIVE, atol=0
        )
        np.testing.assert_array_equal(theirs[end:], theirs[end])  # optax: clamped
        assert np.all(np.diff(ours[end : end + 10]) > 0)  # torch: rises again ...
        assert ours[end:].max() > 0.99 * ours.max()  # ... back to the top
    elif row.relation == "one-count-later":
        peak = row.boundary
        assert np.argmax(ours) == peak and np.argmax(theirs) == peak + 1
        assert ours[0] == theirs[0] and ours[peak] == theirs[peak + 1]
        # After the peak optax is torch delayed by exactly one count (same pct, same formula).
        np.testing.assert_allclose(
            theirs[peak + 1 :], ours[peak:n], rtol=RTOL_CLOSED_VS_RECURSIVE, atol=0
        )
        assert not np.allclose(theirs[1:peak], ours[1:peak], rtol=1e-3)  # steeper warmup
    else:
        raise AssertionError(row.relation)


@pytest.mark.parametrize("patience", [0, 3])
def test_optax_reduce_on_plateau_is_one_patience_later(patience: int) -> None:
    """optax.contrib.reduce_on_plateau(patience=p + 1) reduces when torch's patience=p does.

    torch's ``eps`` (skip reductions smaller than 1e-8) has no optax counterpart: set to 0 here.
    """
    metrics = jnp.asarray(PLATEAU_METRICS["plateaus"], jnp.float64)
    opt = torch_optimizer("sgd", 0.1)
    scheduler = L.ReduceLROnPlateau(opt, patience=patience, factor=0.5, eps=0.0)
    ref = []
    for metric in metrics.tolist():
        scheduler.step(metric)
        ref.append(opt.param_groups[0]["lr"])

    params = jnp.zeros((), jnp.float64)

    @jax.jit
    def lrs(p: jax.Array) -> jax.Array:  # optax takes a traced patience: one compile
        tx = contrib.reduce_on_plateau(factor=0.5, patience=p, rtol=1e-4, atol=0.0)

        def body(state: object, metric: jax.Array) -> tuple:
            _, state = tx.update(params, state, value=metric)
            return state, state.scale

        with jax.numpy_dtype_promotion("standard"):  # optax's own arithmetic
            return 0.1 * jax.lax.scan(body, tx.init(params), metrics)[1]

    ref = np.asarray(ref)
    np.testing.assert_array_equal(np.asarray(lrs(jnp.int32(patience + 1))), ref)
    # With the same patience optax reduces one call earlier.
    assert np.any(np.asarray(lrs(jnp.int32(patience))) != ref)
