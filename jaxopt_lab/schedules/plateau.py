"""torch's ReduceLROnPlateau: an lr driven by a metric, so a state and an update, not a schedule.

Unlike the other schedules its value is not a function of the step count; it follows optax's
shape instead: ``init() -> state`` and ``update(state, metric) -> (state, lr)``, both pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.schedules.core import float_dtype


class PlateauState(NamedTuple):
    """The state of :func:`reduce_lr_on_plateau` (torch's scheduler attributes).

    Attributes:
        count: number of ``update`` calls so far (torch's ``last_epoch``), int32.
        lr: the current learning rate.
        best: the best metric so far (``+inf``/``-inf`` before the first call).
        num_bad_epochs: consecutive calls without improvement, int32.
        cooldown_counter: calls left in the cooldown, int32.
    """

    count: jax.Array
    lr: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array


class PlateauSchedule(NamedTuple):
    """``init() -> state`` and ``update(state, metric) -> (state, lr)``, both pure."""

    init: Callable[[], PlateauState]
    update: Callable[[PlateauState, Any], tuple[PlateauState, jax.Array]]


def reduce_lr_on_plateau(
    lr: float,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0,
    eps: float = 1e-8,
) -> PlateauSchedule:
    """Reduce the lr when a metric stops improving (torch's ``ReduceLROnPlateau``).

    torch, at each ``step(metric)``::

        better = metric < best * (1 - threshold)   (min, rel)   | metric < best - threshold (abs)
                 metric > best * (1 + threshold)   (max, rel)   | metric > best + threshold (abs)
        if better: best = metric; num_bad_epochs = 0   else: num_bad_epochs += 1
        if cooldown_counter > 0: cooldown_counter -= 1; num_bad_epochs = 0
        if num_bad_epochs > patience:
            new = max(lr * factor, min_lr);  if lr - new > eps: lr = new
            cooldown_counter = cooldown; num_bad_epochs = 0

    so the first reduction happens on the ``patience + 1``-th consecutive bad call. Unlike the
    other schedules the lr depends on the metrics, so it lives in a state: feed ``state.lr`` to
    the optimizer (e.g. through an optimizer state's hyper-parameter) after each ``update``.

    Args:
        lr: the initial learning rate.
        mode: ``"min"`` (metric should decrease) or ``"max"``.
        factor: ``new_lr = lr * factor``, < 1.
        patience: bad calls tolerated before a reduction.
        threshold: minimal significant change.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: calls to wait after a reduction before counting bad calls again.
        min_lr: lower bound on the lr (a scalar: one schedule per param group).
        eps: reductions smaller than this are skipped.

    Returns:
        A :class:`PlateauSchedule`; ``update`` is jit-traceable.
    """
    if factor >= 1.0:
        raise ValueError("Factor should be < 1.0.")
    if mode not in {"min", "max"}:
        raise ValueError("mode " + mode + " is unknown!")
    if threshold_mode not in {"rel", "abs"}:
        raise ValueError("threshold mode " + threshold_mode + " is unknown!")
    lr, min_lr = float(lr), float(min_lr)
    worst = math.inf if mode == "min" else -math.inf

    def is_better(a: jax.Array, best: jax.Array) -> jax.Array:
        if mode == "min" and threshold_mode == "rel":
            return a < best * (1.0 - threshold)
        if mode == "min":
            return a < best - threshold
        if threshold_mode == "rel":
            return a > best * (threshold + 1.0)
        return a > best + threshold

    def init() -> PlateauState:
        dtype = float_dtype()
        zero = jnp.zeros((), jnp.int32)
        return PlateauState(
            count=zero,
            lr=jnp.asarray(lr, dtype),
            best=jnp.asarray(worst, dtype),
            num_bad_epochs=zero,
            cooldown_counter=zero,
        )

    def update(state: PlateauState, metric: Any) -> tuple[PlateauState, jax.Array]:
        current = jnp.asarray(metric).astype(state.best.dtype)
        better = is_better(current, state.best)
        best = jnp.where(better, current, state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(
            in_cooldown, state.cooldown_counter - 1, state.cooldown_counter
        )
        bad = jnp.where(in_cooldown, 0, bad)  # bad calls in cooldown are ignored
        reduce = bad > patience
        new_lr = jnp.maximum(state.lr * factor, min_lr)
        lr_out = jnp.where(reduce & (state.lr - new_lr > eps), new_lr, state.lr)
        state = PlateauState(
            count=state.count + 1,
            lr=lr_out,
            best=best,
            num_bad_epochs=jnp.where(reduce, 0, bad).astype(jnp.int32),
            cooldown_counter=jnp.where(reduce, cooldown, cooldown_counter).astype(jnp.int32),
        )
        return state, lr_out

    return PlateauSchedule(init, update)
