"""Building a schedule from torch's rule: replay it on Python floats into the table, then the graph.

torch's schedulers are either recursive (``get_lr`` updates the current lr) or closed-form (a
function of the count). :func:`recursive` and :func:`closed_form` turn one such rule into an
:class:`~jaxopt_lab.schedules.core.LRSchedule`: the rule runs on the host with torch's exact
operations for the counts below the horizon (the table), and in the graph past it. Each rule is
written once, in the arithmetic below, which runs on Python numbers in the replay and on traced
scalars in the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxopt_lab.optim.double import Pair
from jaxopt_lab.schedules.core import (
    LRSchedule,
    Num,
    Restart,
    Rule,
    Step,
    Table,
    f32_pair,
    float_dtype,
)

# --------------------------------------------------------------------------------------------
# Arithmetic shared by the host replay (Python int k, Python float lr: torch's exact operations)
# and the graph (int32 k, float arrays). One definition per schedule serves both.


def as_float(k: Any) -> Num:
    """The step count as a float, as Python promotes ``int`` in ``math.pi * last_epoch``."""
    return float(k) if isinstance(k, int) else k.astype(float_dtype())


def call_user(fn: Callable[[Any], Any], x: Any) -> Num:
    """A user callable (``lr_lambda``, ``scale_fn``) at ``x``, as a float of ``x``'s side.

    torch calls it with Python ints; the table does too. In the graph it gets an int32 scalar and
    runs under standard dtype promotion, so torch-style code such as ``0.95 ** epoch`` works even
    when strict promotion is on.
    """
    if isinstance(x, int):
        return float(fn(x))
    with jax.numpy_dtype_promotion("standard"):
        out = fn(x)
    return jnp.asarray(out).astype(float_dtype())


def cos(x: Num) -> Num:
    """``math.cos`` on a host float, ``jnp.cos`` in the graph."""
    return math.cos(x) if isinstance(x, float) else jnp.cos(x)


def select(cond: Any, then: Callable[[], Num], other: Callable[[], Num]) -> Num:
    """``then() if cond else other()``; on the host only the taken branch runs (as in torch)."""
    if isinstance(cond, bool):
        return then() if cond else other()
    return jnp.where(cond, then(), other())


def check_positive_int(name: str, value: Any) -> None:
    """torch's message for a non-positive (or non-int) ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected positive integer {name}, but got {value}")


# --------------------------------------------------------------------------------------------
# From torch's rule to a schedule.


def tabled(
    name: str,
    values: Sequence[float],
    tail: Callable[[jax.Array], Num] | None,
    *,
    loop: bool = False,
    period: bool = False,
    **attrs: Any,
) -> LRSchedule:
    """A schedule from torch's values at counts ``0 .. len(values) - 1`` and a ``tail`` for later.

    ``tail=None``: the last value holds forever (or, with ``period``, the table repeats).
    ``loop``: the tail is a loop, skipped with ``lax.cond`` below the table.
    """
    table = Table(values)
    size = len(table)

    def index(count: Any) -> Any:
        if period:
            return count % size
        return (
            min(max(count, 0), size - 1) if isinstance(count, int) else jnp.clip(count, 0, size - 1)
        )

    def lookup(c: int) -> float | None:
        return table[index(c)] if tail is None or c < size else None

    def graph(count: jax.Array) -> Num:
        value = table.constant()[index(count)]
        if tail is None:
            return value
        if loop:
            return lax.cond(count < size, lambda: value, lambda: tail(count))
        return jnp.where(count < size, value, tail(count))

    def pair(count: jax.Array) -> Pair:
        value = table.pair(index(count))
        if tail is None:
            return value
        if loop:
            return lax.cond(count < size, lambda: value, lambda: f32_pair(tail(count)))
        past = f32_pair(tail(count))
        return Pair(*(jnp.where(count < size, v, t) for v, t in zip(value, past, strict=True)))

    return LRSchedule(name, graph, lookup=lookup, first=table[0], pair=pair, **attrs)


def replay(step: Step, lr: float, ks: range) -> list[float]:
    """torch's values for the counts ``ks``, by running its update on Python floats."""
    values = []
    for k in ks:
        lr = step(k, lr)
        values.append(lr)
    return values


def recursive(
    name: str,
    base_lr: float,
    step: Step,
    *,
    settles_at: int | None,
    horizon: int,
    first: float | None = None,
    reset: Callable[[], float] | None = None,
    restartable: bool = True,
) -> LRSchedule:
    """A schedule torch computes recursively: replayed table, then the update in a loop.

    ``first``: the value at count 0 in place of ``step(0, base_lr)`` (a SequentialLR restart);
    ``reset``: torch's closed form at epoch 0, the :class:`~jaxopt_lab.schedules.core.Restart`
    value (None: SequentialLR restarts it at its own count-0 value); ``restartable``: False where
    SequentialLR does not restart it at all.
    """
    check_positive_int("horizon", horizon)
    size = horizon if settles_at is None else min(settles_at + 1, horizon)
    if first is None:
        values = replay(step, base_lr, range(size))
    else:  # Restarted by SequentialLR: count 0 holds torch's closed-form value.
        values = [first, *replay(step, first, range(1, size))]
    tail, last = None, Table(values[-1:])
    if settles_at is None or settles_at >= size:

        def tail(count: jax.Array) -> jax.Array:
            dtype = float_dtype()
            stop = count if settles_at is None else jnp.minimum(count, settles_at)
            body = lambda k, lr: jnp.asarray(step(k, lr)).astype(dtype)  # noqa: E731
            return lax.fori_loop(size, stop + 1, body, last.constant()[0])

    def rebuild(new_first: float) -> LRSchedule:
        return recursive(
            name,
            base_lr,
            step,
            settles_at=settles_at,
            horizon=horizon,
            first=new_first,
            restartable=restartable,
        )

    return tabled(
        name,
        values,
        tail,
        loop=True,
        base_lr=base_lr,
        rule=Rule(step, settles_at),
        restart=None if reset is None else Restart(reset, rebuild),
        restartable=restartable,
    )


def closed_form(
    name: str,
    value: Callable[[Any], Num],
    *,
    horizon: int,
    base_lr: float | None,
    end: int | None = None,
    period: int | None = None,
    chainable: bool = True,
    **attrs: Any,
) -> LRSchedule:
    """A schedule torch computes in closed form: ``value(k)`` on the host for the table, in the
    graph past it. ``end``: counts from ``end`` on are not valid (the graph gives NaN there);
    ``period``: ``value(k) == value(k % period)`` exactly, so one period is the whole table."""
    check_positive_int("horizon", horizon)
    if period is not None and period <= horizon:
        values = [value(k) for k in range(period)]
        tail, periodic = None, True
    else:
        size = horizon if end is None else min(end, horizon)
        values = [value(k) for k in range(size)]
        tail, periodic = value, False
    return tabled(
        name,
        values,
        tail,
        period=periodic,
        base_lr=base_lr,
        rule=Rule(lambda k, cur: value(k), None) if chainable else None,
        **attrs,
    )
