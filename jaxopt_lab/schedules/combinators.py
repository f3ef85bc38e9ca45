"""Schedules built from schedules: torch's ChainedScheduler and SequentialLR, and per-epoch driving.

The combinators read only the public protocol of the schedules they compose
(:class:`~jaxopt_lab.schedules.core.LRSchedule`'s ``base_lr``, ``first``, ``rule``, ``restart``,
``restartable``, ``table_value`` and ``double_value``; :class:`~jaxopt_lab.schedules.core.Rule`,
:class:`~jaxopt_lab.schedules.core.Restart`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxopt_lab.optim.double import Pair
from jaxopt_lab.schedules.core import DEFAULT_HORIZON, LRSchedule, Num, f32_pair
from jaxopt_lab.schedules.replay import check_positive_int, recursive


def _table_value(schedule: Any, c: int) -> float | None:
    """A wrapped schedule's table entry at concrete count ``c`` (None: compile the wrapper)."""
    if not isinstance(schedule, LRSchedule):
        return None
    return schedule.table_value(c)


def _double_value(schedule: Any, count: jax.Array) -> Pair:
    """A wrapped schedule's pair (any ``count -> value`` callable: its value, remainder 0)."""
    if isinstance(schedule, LRSchedule):
        return schedule.double_value(count)
    return f32_pair(schedule(count))


def chained(schedules: Sequence[LRSchedule], *, horizon: int = DEFAULT_HORIZON) -> LRSchedule:
    """Apply every schedule's update at each count, in order (torch's ``ChainedScheduler``).

    torch steps all schedulers of the chain on the same optimizer, each reading the lr the
    previous one wrote: recursive ones (step, exponential, cosine, linear, constant, polynomial,
    multiplicative, multistep) compose multiplicatively, closed-form ones (lambda, warm restarts,
    cyclic) overwrite the lr. Count 0 is the value after constructing them in order. The combined
    update is replayed like any recursive schedule (table + in-graph continuation).

    Args:
        schedules: the chain, as built with the same ``lr`` (torch's schedulers all share the
            optimizer's ``initial_lr``).
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).

    Differences from torch:
        one_cycle_lr (torch: "not chainable"), sequential_lr, per_epoch and momentum schedules
        are refused with TypeError; schedules with different base lrs with ValueError.
    """
    if len(schedules) < 1:
        raise ValueError(
            "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler."
        )
    for i, schedule in enumerate(schedules):
        if not isinstance(schedule, LRSchedule) or schedule.rule is None:
            raise TypeError(f"chained: the schedule at index {i} ({schedule!r}) is not chainable")
    base = schedules[0].base_lr
    for i, schedule in enumerate(schedules):
        if schedule.base_lr != base:
            raise ValueError(
                f"chained: every schedule must start from the same lr (torch's initial_lr), "
                f"but index 0 has {base} and index {i} has {schedule.base_lr}"
            )
    steps = [s.rule.step for s in schedules]

    def step(k: Any, cur: Num) -> Num:
        for one in steps:
            cur = one(k, cur)
        return cur

    ends = [s.rule.settles_at for s in schedules]
    return recursive(
        f"chained({list(schedules)!r})",
        base,
        step,
        settles_at=None if None in ends else max(ends),
        horizon=horizon,
    )


def sequential_lr(schedules: Sequence[LRSchedule], milestones: Sequence[int]) -> LRSchedule:
    """Run ``schedules[i]`` from ``milestones[i - 1]`` on, restarted (torch's ``SequentialLR``).

    torch: the count of the active scheduler restarts at its milestone, where torch sets the lr
    to the scheduler's closed form at epoch 0 (``_update_lr(0)``, e.g. ``initial_lr`` for
    ExponentialLR or ``initial_lr * start_factor`` for LinearLR), and the scheduler then steps
    recursively from there::

        lr_k = schedules[i](k - milestones[i - 1])   for milestones[i - 1] <= k < milestones[i]

    Where torch's restart value differs from the schedule's own count-0 value (CosineAnnealingLR
    with ``eta_min != 0`` can differ in the last bit; ConstantLR with ``total_iters <= 0``), the
    schedule is rebuilt from torch's value.

    Args:
        schedules: the schedules, in order.
        milestones: non-decreasing, non-negative counts; ``len(schedules) - 1`` of them.

    Differences from torch:
        multiplicative_lr after a positive milestone is refused (torch does not restart it but
        keeps multiplying the previous scheduler's lr); nested sequential/chained schedules are
        allowed (torch raises NotImplementedError at their milestone). Milestones must be sorted
        and non-negative (torch bisects them as given).
    """
    if len(schedules) < 1:
        raise ValueError("SequentialLR expects at least one scheduler, but got no scheduler.")
    if len(milestones) != len(schedules) - 1:
        raise ValueError(
            "Sequential Schedulers expects number of schedulers provided to be one more than the "
            f"number of milestone points, but got number of schedulers {len(schedules)} and the "
            f"number of milestones to be equal to {len(milestones)}"
        )
    milestones = [int(m) for m in milestones]
    if any(m < 0 for m in milestones) or milestones != sorted(milestones):
        raise ValueError(f"milestones must be non-decreasing and non-negative, got {milestones}")
    for i, schedule in enumerate(schedules):
        if not isinstance(schedule, LRSchedule):
            raise TypeError(f"sequential_lr: index {i} is not an LRSchedule: {schedule!r}")
    segments = []
    for i, schedule in enumerate(schedules):
        start = 0 if i == 0 else milestones[i - 1]
        if start > 0:  # torch restarts it with _update_lr(0) at the milestone.
            if not schedule.restartable:
                raise ValueError(
                    f"sequential_lr: {schedule!r} after milestone {start}: torch does not restart "
                    "MultiplicativeLR at a milestone (no closed form) but keeps multiplying the "
                    "previous scheduler's lr; not supported"
                )
            if schedule.restart is not None:
                restart = schedule.restart.value()
                if restart != schedule.first:
                    schedule = schedule.restart.rebuild(restart)
        segments.append((start, schedule))

    def index(count: jax.Array) -> jax.Array:
        return jnp.searchsorted(jnp.asarray(milestones, jnp.int32), count, side="right")

    def graph(count: jax.Array) -> jax.Array:
        branches = [lambda c, s=s, st=st: s(c - st) for st, s in segments]
        return lax.switch(index(count), branches, count)

    def pair(count: jax.Array) -> Pair:
        branches = [lambda c, s=s, st=st: s.double_value(c - st) for st, s in segments]
        return lax.switch(index(count), branches, count)

    def lookup(c: int) -> float | None:
        start, schedule = segments[bisect.bisect_right(milestones, c)]
        return _table_value(schedule, c - start)

    return LRSchedule(
        f"sequential_lr({list(schedules)!r}, milestones={milestones})",
        graph,
        lookup=lookup,
        base_lr=schedules[0].base_lr,
        pair=pair,
    )


def per_epoch(schedule: Callable[[Any], Any], steps_per_epoch: int) -> LRSchedule:
    """Drive an epoch-stepped schedule from the optimizer's step count.

    torch users call ``scheduler.step()`` once per epoch while the optimizer steps once per
    batch; the lr at optimizer step ``k`` (from 0) is then the schedule's value after
    ``k // steps_per_epoch`` scheduler steps::

        per_epoch(schedule, steps_per_epoch)(k) == schedule(k // steps_per_epoch)

    Args:
        schedule: any ``count -> lr`` (e.g. ``step_lr(0.1, step_size=30)``).
        steps_per_epoch: optimizer steps per epoch (batches per epoch).
    """
    check_positive_int("steps_per_epoch", steps_per_epoch)

    def graph(count: jax.Array) -> jax.Array:
        return schedule(count // steps_per_epoch)

    def lookup(c: int) -> float | None:
        return _table_value(schedule, c // steps_per_epoch)

    return LRSchedule(
        f"per_epoch({schedule!r}, {steps_per_epoch})",
        graph,
        lookup=lookup,
        base_lr=getattr(schedule, "base_lr", None),
        pair=lambda count: _double_value(schedule, count // steps_per_epoch),
    )
