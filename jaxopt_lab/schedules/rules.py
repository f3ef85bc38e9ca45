"""torch's per-scheduler rules, one constructor per ``torch.optim.lr_scheduler`` class.

Recursive in torch: StepLR, ExponentialLR, MultiplicativeLR, CosineAnnealingLR, LinearLR,
ConstantLR, PolynomialLR, MultiStepLR. Closed form: LambdaLR, CosineAnnealingWarmRestarts.

Each constructor writes torch's ``get_lr`` once, in the arithmetic of
:mod:`jaxopt_lab.schedules.replay` (Python floats in the replay, traced scalars in the graph), and
hands it to :func:`~jaxopt_lab.schedules.replay.recursive` or
:func:`~jaxopt_lab.schedules.replay.closed_form`. The per-batch cyclical policies (CyclicLR,
OneCycleLR) are in :mod:`jaxopt_lab.schedules.cyclical`.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.schedules.core import (
    DEFAULT_HORIZON,
    LRSchedule,
    Num,
    Restart,
    Rule,
    Table,
    float_dtype,
    format_call,
)
from jaxopt_lab.schedules.replay import (
    as_float,
    call_user,
    check_positive_int,
    closed_form,
    cos,
    recursive,
    select,
)

# --------------------------------------------------------------------------------------------
# Recursive schedules.


def step_lr(
    lr: float, step_size: int, gamma: float = 0.1, *, horizon: int = DEFAULT_HORIZON
) -> LRSchedule:
    """Decay the lr by ``gamma`` every ``step_size`` counts (torch's ``StepLR``).

    torch (recursive)::

        lr_0 = lr
        lr_k = lr_{k-1} * gamma   if k % step_size == 0 else lr_{k-1}

    i.e. ``lr * gamma ** (k // step_size)`` computed as repeated products.

    Args:
        lr: the initial learning rate (torch's ``initial_lr``).
        step_size: period of the decay, in counts.
        gamma: multiplicative decay factor.
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).

    Differences from torch:
        ``step_size`` must be a positive int (torch raises ZeroDivisionError at the first step
        for 0 and accepts negative values).
    """
    check_positive_int("step_size", step_size)
    lr = float(lr)

    def step(k: Any, cur: Num) -> Num:
        # torch: if last_epoch == 0 or last_epoch % step_size != 0: keep, else lr * gamma.
        return select((k != 0) & (k % step_size == 0), lambda: cur * gamma, lambda: cur)

    return recursive(
        format_call("step_lr", lr, step_size, gamma=gamma),
        lr,
        step,
        settles_at=None,
        horizon=horizon,
        # torch's closed form (used by SequentialLR): base_lr * gamma ** (last_epoch // step_size)
        reset=lambda: lr * gamma ** (0 // step_size),
    )


def exponential_lr(lr: float, gamma: float, *, horizon: int = DEFAULT_HORIZON) -> LRSchedule:
    """Multiply the lr by ``gamma`` every count (torch's ``ExponentialLR``).

    torch (recursive): ``lr_0 = lr``, ``lr_k = lr_{k-1} * gamma``; the closed form
    ``lr * gamma ** k`` differs from it by rounding.

    Args:
        lr: the initial learning rate.
        gamma: multiplicative decay factor.
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).
    """
    lr = float(lr)

    def step(k: Any, cur: Num) -> Num:
        return select(k == 0, lambda: cur, lambda: cur * gamma)

    return recursive(
        format_call("exponential_lr", lr, gamma=gamma),
        lr,
        step,
        settles_at=None,
        horizon=horizon,
        reset=lambda: lr * gamma**0,
    )


def multiplicative_lr(
    lr: float, lr_lambda: Callable[[Any], Any], *, horizon: int = DEFAULT_HORIZON
) -> LRSchedule:
    """Multiply the lr by ``lr_lambda(k)`` at every count k >= 1 (torch's ``MultiplicativeLR``).

    torch (recursive): ``lr_0 = lr``, ``lr_k = lr_{k-1} * lr_lambda(k)``.

    Args:
        lr: the initial learning rate.
        lr_lambda: ``k -> factor``. It is called with Python ints to build the table (as torch
            calls it) and with a traced int32 scalar beyond ``horizon``, so it must accept both
            (e.g. ``lambda k: 0.95``, ``lambda k: 0.99 ** k``, ``jnp.where`` expressions).
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).

    Differences from torch:
        :func:`~jaxopt_lab.schedules.sequential_lr` refuses it after a milestone: torch does
        not restart it there (it has no closed form), it keeps multiplying the previous
        scheduler's lr.
    """
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")
    lr = float(lr)

    def step(k: Any, cur: Num) -> Num:
        return select(k == 0, lambda: cur, lambda: cur * call_user(lr_lambda, k))

    return recursive(
        format_call("multiplicative_lr", lr, lr_lambda=lr_lambda),
        lr,
        step,
        settles_at=None,
        horizon=horizon,
        restartable=False,
    )


def cosine_annealing_lr(
    lr: float, T_max: int, eta_min: float = 0.0, *, horizon: int = DEFAULT_HORIZON
) -> LRSchedule:
    """Cosine-anneal the lr from ``lr`` down to ``eta_min`` in ``T_max`` counts (CosineAnnealingLR).

    torch (recursive; the closed form is ``eta_min + (lr - eta_min) * (1 + cos(pi k/T_max)) / 2``)::

        lr_0 = lr
        lr_k = lr_{k-1} + (lr - eta_min) * (1 - cos(pi / T_max)) / 2
                                        if (k - 1 - T_max) % (2 T_max) == 0
        lr_k = (1 + cos(pi k / T_max)) / (1 + cos(pi (k - 1) / T_max)) * (lr_{k-1} - eta_min)
               + eta_min                otherwise

    It is not clamped at ``T_max``: past it the lr rises again, with period ``2 T_max``. The ratio
    suffers cancellation near the bottom (``1 + cos`` ~ ``pi^2 / 2 T_max^2``), so torch's values
    drift from the closed form by up to ~T_max^2 ulps; the table reproduces that drift.

    Args:
        lr: the initial (maximum) learning rate.
        T_max: half-period, in counts.
        eta_min: the minimum learning rate.
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).

    Differences from torch:
        ``T_max`` must be a positive int (torch raises ZeroDivisionError at the first step for 0).
    """
    check_positive_int("T_max", T_max)
    lr, eta_min = float(lr), float(eta_min)
    lift = (lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2

    def step(k: Any, cur: Num) -> Num:
        def ratio() -> Num:
            return (1 + cos(math.pi * as_float(k) / T_max)) / (
                1 + cos(math.pi * as_float(k - 1) / T_max)
            ) * (cur - eta_min) + eta_min

        restart_bottom = (k - 1 - T_max) % (2 * T_max) == 0
        return select(
            k == 0, lambda: cur, lambda: select(restart_bottom, lambda: cur + lift, ratio)
        )

    return recursive(
        format_call("cosine_annealing_lr", lr, T_max, eta_min=eta_min),
        lr,
        step,
        settles_at=None,
        horizon=horizon,
        reset=lambda: eta_min + (lr - eta_min) * (1 + math.cos(math.pi * 0 / T_max)) / 2,
    )


def linear_lr(
    lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
    *,
    horizon: int = DEFAULT_HORIZON,
) -> LRSchedule:
    """Scale the lr linearly from ``start_factor`` to ``end_factor`` (torch's ``LinearLR``).

    torch (recursive; the closed form is ``lr * (s + (e - s) * min(k, T) / T)``)::

        lr_0 = lr * s
        lr_k = lr_{k-1} * (1 + (e - s) / (T * s + (k - 1) * (e - s)))   for 1 <= k <= T
        lr_k = lr_{k-1}                                                  for k > T

    with ``s = start_factor``, ``e = end_factor``, ``T = total_iters``.

    Args:
        lr: the base learning rate.
        start_factor: factor at count 0, in (0, 1].
        end_factor: factor from ``total_iters`` on, in [0, 1].
        total_iters: number of counts of the ramp.
        horizon: table size bound (the table needs ``total_iters + 1`` entries).
    """
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError(
            "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
        )
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
    lr = float(lr)
    s, e, T = start_factor, end_factor, total_iters

    def step(k: Any, cur: Num) -> Num:
        def ramp() -> Num:
            return cur * (1.0 + (e - s) / (T * s + as_float(k - 1) * (e - s)))

        return select(k == 0, lambda: cur * s, lambda: select(k > T, lambda: cur, ramp))

    return recursive(
        format_call("linear_lr", lr, start_factor=s, end_factor=e, total_iters=T),
        lr,
        step,
        settles_at=max(T, 0),
        horizon=horizon,
        reset=lambda: lr * (s + (e - s) * min(T, 0) / T),
    )


def constant_lr(
    lr: float, factor: float = 1.0 / 3, total_iters: int = 5, *, horizon: int = DEFAULT_HORIZON
) -> LRSchedule:
    """Scale the lr by ``factor`` until ``total_iters`` (torch's ``ConstantLR``).

    torch (recursive)::

        lr_0 = lr * factor
        lr_k = lr_{k-1} * (1 / factor)   if k == total_iters
        lr_k = lr_{k-1}                  otherwise

    so from ``total_iters`` on the value is ``(lr * factor) * (1 / factor)``, which may differ
    from ``lr`` in the last bit. With ``total_iters <= 0`` the factor is never undone.

    Args:
        lr: the base learning rate.
        factor: the multiplier, in [0, 1].
        total_iters: the count at which the factor is undone.
        horizon: table size bound (the table needs ``total_iters + 1`` entries).

    Differences from torch:
        ``factor=0`` with ``total_iters >= 1`` raises ZeroDivisionError when the schedule is
        built; torch raises it at step ``total_iters``.
    """
    if factor > 1.0 or factor < 0:
        raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
    lr = float(lr)
    T = total_iters

    def step(k: Any, cur: Num) -> Num:
        return select(
            k == 0,
            lambda: cur * factor,
            lambda: select(k == T, lambda: cur * (1.0 / factor), lambda: cur),
        )

    return recursive(
        format_call("constant_lr", lr, factor=factor, total_iters=T),
        lr,
        step,
        settles_at=max(T, 0),
        horizon=horizon,
        reset=lambda: lr * (factor + (0 >= T) * (1 - factor)),
    )


def polynomial_lr(
    lr: float, total_iters: int = 5, power: float = 1.0, *, horizon: int = DEFAULT_HORIZON
) -> LRSchedule:
    """Decay the lr polynomially to 0 over ``total_iters`` counts (torch's ``PolynomialLR``).

    torch (recursive; the closed form is ``lr * (1 - min(k, T) / T) ** power``)::

        lr_0 = lr
        lr_k = lr_{k-1} * ((1 - k / T) / (1 - (k - 1) / T)) ** power   for 1 <= k <= T
        lr_k = lr_{k-1}                                                for k > T

    Args:
        lr: the initial learning rate.
        total_iters: number of counts of the decay (``T``).
        power: the polynomial's power.
        horizon: table size bound (the table needs ``total_iters + 1`` entries).
    """
    lr = float(lr)
    T = total_iters

    def step(k: Any, cur: Num) -> Num:
        def decay() -> Num:
            return cur * ((1.0 - as_float(k) / T) / (1.0 - as_float(k - 1) / T)) ** power

        return select((k == 0) | (k > T), lambda: cur, decay)

    return recursive(
        format_call("polynomial_lr", lr, total_iters=T, power=power),
        lr,
        step,
        settles_at=max(T, 0),
        horizon=horizon,
        reset=lambda: lr * (1.0 - min(T, 0) / T) ** power,
    )


def multistep_lr(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> LRSchedule:
    """Decay the lr by ``gamma`` at each milestone (torch's ``MultiStepLR``).

    torch (recursive): ``lr_k = lr_{k-1} * gamma ** milestones.count(k)`` (a milestone listed
    twice decays by ``gamma ** 2`` at once), starting from ``lr`` at count -1 -- so a milestone at
    0 already applies at count 0. The lr only changes at the distinct milestones, so the products
    are replayed once per milestone and a call is a search among them: O(log #milestones).

    Args:
        lr: the initial learning rate.
        milestones: counts at which to decay (any order, repeats allowed).
        gamma: multiplicative decay factor.
    """
    lr = float(lr)
    milestones = [int(m) for m in milestones]
    counts = Counter(milestones)
    hits = sorted(m for m in counts if m >= 0)  # negative milestones are never reached

    def step(k: Any, cur: Num) -> Num:
        out = cur
        for m in hits:
            out = select(k == m, lambda m=m: cur * gamma ** counts[m], lambda out=out: out)
        return out

    def build(first: float | None) -> LRSchedule:
        # values[j] holds from the j-th positive milestone on; a milestone at 0 already applies
        # at count 0 (torch's construction step), unless SequentialLR restarts it at `first`.
        starts = [m for m in hits if m > 0]
        values = [step(0, lr) if first is None else first]
        for m in starts:
            values.append(step(m, values[-1]))
        table = Table(values)

        def index(count: jax.Array) -> jax.Array:
            return jnp.searchsorted(jnp.asarray(starts, jnp.int32), count, side="right")

        def lookup(c: int) -> float:
            return table[bisect.bisect_right(starts, c)]

        milestones_sorted = sorted(counts.elements())
        return LRSchedule(
            format_call("multistep_lr", lr, milestones, gamma=gamma),
            lambda count: table.constant()[index(count)],
            lookup=lookup,
            pair=lambda count: table.pair(index(count)),
            base_lr=lr,
            rule=Rule(step, settles_at=max(hits, default=0)),
            first=values[0],
            restart=Restart(
                # torch's closed form: base_lr * gamma ** bisect_right(milestones, last_epoch)
                value=lambda: lr * gamma ** bisect.bisect_right(milestones_sorted, 0),
                rebuild=build,
            ),
        )

    return build(None)


# --------------------------------------------------------------------------------------------
# Closed-form schedules.


def lambda_lr(
    lr: float, lr_lambda: Callable[[Any], Any], *, horizon: int = DEFAULT_HORIZON
) -> LRSchedule:
    """The lr times a function of the count (torch's ``LambdaLR``).

    torch (closed form): ``lr_k = lr * lr_lambda(k)``.

    Args:
        lr: the base learning rate.
        lr_lambda: ``k -> factor``. It is called with Python ints to build the table (as torch
            calls it) and with a traced int32 scalar past ``horizon``, under standard dtype
            promotion, so torch-style lambdas such as ``lambda k: 0.95 ** k`` work as they are.
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).

    Differences from torch:
        a non-callable ``lr_lambda`` raises TypeError here with a message (torch raises the
        TypeError of calling it).
    """
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")
    lr = float(lr)

    def value(k: Any) -> Num:
        return lr * call_user(lr_lambda, k)

    return closed_form(
        format_call("lambda_lr", lr, lr_lambda=lr_lambda), value, horizon=horizon, base_lr=lr
    )


def cosine_annealing_warm_restarts(
    lr: float,
    T_0: int,
    T_mult: int = 1,
    eta_min: float = 0.0,
    *,
    horizon: int = DEFAULT_HORIZON,
) -> LRSchedule:
    """Cosine annealing restarted every ``T_i`` counts (``CosineAnnealingWarmRestarts``, SGDR).

    torch (closed form in the position within the cycle)::

        lr_k = eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    where cycle ``i`` lasts ``T_i = T_0 * T_mult ** i`` counts and ``T_cur`` counts from its start
    (torch tracks both with integer increments; here they are found from the cycle starts
    ``T_0 * (T_mult ** i - 1) / (T_mult - 1)``, exact integers). The value at count 0 is
    ``eta_min + (lr - eta_min)``, torch's, which may differ from ``lr`` in the last bit. With
    ``T_mult=1`` the value only depends on ``k % T_0``, so one period of torch's values is the
    whole table and every count is exact.

    Args:
        lr: the maximum learning rate (torch's ``initial_lr``).
        T_0: length of the first cycle.
        T_mult: growth factor of the cycle length.
        eta_min: the minimum learning rate.
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).
    """
    if T_0 <= 0 or not isinstance(T_0, int):
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if T_mult < 1 or not isinstance(T_mult, int):
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    if not isinstance(eta_min, (float, int)):
        raise ValueError(
            f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
        )
    lr, eta_min = float(lr), float(eta_min)
    # Cycle starts that fit an int32 count (a handful when T_mult >= 2).
    starts = [0]
    if T_mult > 1:
        while T_0 * (T_mult ** len(starts) - 1) // (T_mult - 1) <= np.iinfo(np.int32).max:
            starts.append(T_0 * (T_mult ** len(starts) - 1) // (T_mult - 1))
    lengths = [T_0 * T_mult**i for i in range(len(starts))]

    def position(k: Any) -> tuple[Num, Num]:
        if T_mult == 1:
            return as_float(k % T_0), float(T_0)
        if isinstance(k, int):
            i = bisect.bisect_right(starts, k) - 1
            return float(k - starts[i]), float(lengths[i])
        i = jnp.searchsorted(jnp.asarray(starts, jnp.int32), k, side="right") - 1
        dtype = float_dtype()
        t_cur = (k - jnp.asarray(starts, jnp.int32)[i]).astype(dtype)
        return t_cur, jnp.asarray(lengths, dtype)[i]

    def value(k: Any) -> Num:
        t_cur, t_i = position(k)
        return eta_min + (lr - eta_min) * (1 + cos(math.pi * t_cur / t_i)) / 2

    return closed_form(
        format_call("cosine_annealing_warm_restarts", lr, T_0, T_mult=T_mult, eta_min=eta_min),
        value,
        horizon=horizon,
        base_lr=lr,
        period=T_0 if T_mult == 1 else None,
    )
