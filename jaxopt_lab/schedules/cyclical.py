"""torch's per-batch cyclical policies: CyclicLR and OneCycleLR, with the momentum each one sets.

Both are closed form in torch. torch's schedulers also write the optimizer's momentum (or Adam's
``betas[0]``) as a side effect; here that is a second schedule (:func:`cyclic_momentum`,
:func:`one_cycle_momentum`) built from the same keyword arguments and passed as the optimizer's
``momentum`` next to ``lr``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from jaxopt_lab.schedules.core import DEFAULT_HORIZON, LRSchedule, Num, format_call
from jaxopt_lab.schedules.replay import as_float, call_user, closed_form, cos, select

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _check_cycle_momentum(cycle_momentum: bool) -> None:
    """A momentum schedule exists only with ``cycle_momentum`` (both momentum factories)."""
    if not cycle_momentum:
        raise ValueError(
            "cycle_momentum=False: torch leaves the optimizer's momentum unchanged, so there is "
            "no momentum schedule to build"
        )


def _cyclic(
    low: float,
    high: float,
    sign: float,
    step_size_up: int,
    step_size_down: int | None,
    mode: str,
    gamma: float,
    scale_fn: Callable[[Any], Any] | None,
    scale_mode: str,
) -> Callable[[Any], Num]:
    """torch's CyclicLR.get_lr: ``anchor + sign * (high - low) * scale_factor * scale``."""
    if mode not in _CYCLIC_MODES and scale_fn is None:
        raise ValueError("mode is invalid and scale_fn is None")
    if scale_fn is None:
        scale_mode = "iterations" if mode == "exp_range" else "cycle"
        if mode == "triangular":
            scale_fn = lambda x: 1.0  # noqa: E731
        elif mode == "triangular2":
            scale_fn = lambda x: 1 / (2.0 ** (x - 1))  # noqa: E731
        else:
            scale_fn = lambda x: gamma**x  # noqa: E731
    elif scale_mode not in ("cycle", "iterations"):
        raise ValueError(f"scale_mode must be 'cycle' or 'iterations', but got {scale_mode!r}")
    if step_size_down is None:
        step_size_down = step_size_up
    if step_size_up <= 0 or step_size_down < 0:
        raise ValueError(
            "Expected step_size_up > 0 and step_size_down >= 0, but got "
            f"{step_size_up} and {step_size_down}"
        )
    total_size = float(step_size_up) + float(step_size_down)
    step_ratio = float(step_size_up) / total_size
    anchor = low if sign > 0 else high
    amplitude = high - low

    def value(k: Any) -> Num:
        t = as_float(k) / total_size
        if isinstance(k, int):
            cycle = math.floor(1 + t)
            x = 1.0 + t - cycle
        else:
            cycle_f = jnp.floor(1 + t)
            x = 1.0 + t - cycle_f
            cycle = cycle_f.astype(jnp.int32)
        scale_factor = select(
            x <= step_ratio, lambda: x / step_ratio, lambda: (x - 1) / (step_ratio - 1)
        )
        height = amplitude * scale_factor
        scale = call_user(scale_fn, cycle if scale_mode == "cycle" else k)
        return anchor + height * scale if sign > 0 else anchor - height * scale

    return value


def cyclic_lr(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    *,
    horizon: int = DEFAULT_HORIZON,
) -> LRSchedule:
    """Cycle the lr between ``base_lr`` and ``max_lr`` (torch's ``CyclicLR``, per batch).

    torch (closed form)::

        cycle = floor(1 + k / (up + down));   x = 1 + k / (up + down) - cycle
        scale_factor = x / r  if x <= r  else (x - 1) / (r - 1),   r = up / (up + down)
        lr_k = base_lr + (max_lr - base_lr) * scale_factor * scale_fn(cycle or k)

    with ``scale_fn = 1`` (``"triangular"``), ``1 / 2 ** (cycle - 1)`` (``"triangular2"``) or
    ``gamma ** k`` (``"exp_range"``, per iteration); a custom ``scale_fn`` overrides ``mode`` and
    is evaluated on the cycle number or the count according to ``scale_mode``.

    Args:
        base_lr: the lower boundary (the lr at count 0).
        max_lr: the upper boundary.
        step_size_up: counts in the increasing half of a cycle.
        step_size_down: counts in the decreasing half (default: ``step_size_up``).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: the ``"exp_range"`` constant.
        scale_fn: custom ``x -> scale`` (called with a traced int32 scalar; with Python ints
            inside :func:`~jaxopt_lab.schedules.chained`).
        scale_mode: ``"cycle"`` or ``"iterations"`` (only with ``scale_fn``).
        cycle_momentum, base_momentum, max_momentum: accepted so that the same keyword arguments
            build :func:`cyclic_momentum`; they do not affect the lr.
        horizon: counts below this are a table lookup (see :mod:`jaxopt_lab.schedules.core`).

    Differences from torch:
        torch sets the optimizer's momentum as a side effect; here that is the separate
        schedule :func:`cyclic_momentum`. ``step_size_up`` must be positive (torch divides by
        zero) and a custom ``scale_mode`` must be ``"cycle"`` or ``"iterations"``.
    """
    del cycle_momentum, base_momentum, max_momentum
    base_lr, max_lr = float(base_lr), float(max_lr)
    value = _cyclic(
        base_lr, max_lr, 1.0, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
    )
    name = format_call(
        "cyclic_lr",
        base_lr,
        max_lr,
        step_size_up=step_size_up,
        step_size_down=step_size_down,
        mode=mode,
        gamma=gamma,
        scale_fn=scale_fn,
        scale_mode=scale_mode,
    )
    return closed_form(name, value, horizon=horizon, base_lr=base_lr)


def cyclic_momentum(
    base_lr: float | None = None,
    max_lr: float | None = None,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    *,
    horizon: int = DEFAULT_HORIZON,
) -> LRSchedule:
    """The momentum (or Adam's ``betas[0]``) that torch's ``CyclicLR`` sets at each count.

    torch cycles it inversely to the lr::

        momentum_k = max_momentum - (max_momentum - base_momentum) * scale_factor * scale

    with :func:`cyclic_lr`'s ``scale_factor`` and ``scale``. Pass it as an optimizer's
    ``momentum`` (SGD) or first beta (Adam) next to ``lr=cyclic_lr(...)``.

    Args:
        The same as :func:`cyclic_lr`; ``base_lr`` and ``max_lr`` are accepted for symmetry and
        ignored.

    Raises:
        ValueError: if ``cycle_momentum`` is False (torch then leaves the momentum unchanged).
    """
    del base_lr, max_lr
    _check_cycle_momentum(cycle_momentum)
    base_momentum, max_momentum = float(base_momentum), float(max_momentum)
    value = _cyclic(
        base_momentum,
        max_momentum,
        -1.0,
        step_size_up,
        step_size_down,
        mode,
        gamma,
        scale_fn,
        scale_mode,
    )
    name = format_call(
        "cyclic_momentum",
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        step_size_up=step_size_up,
        step_size_down=step_size_down,
        mode=mode,
    )
    return closed_form(name, value, horizon=horizon, base_lr=None, chainable=False)


_ONE_CYCLE_LIMIT = "Tried to step {} times. The specified number of total steps is {}"


def _one_cycle_schedule(
    name: str, value: Callable[[Any], Num], total: int, horizon: int, base_lr: float | None
) -> LRSchedule:
    """A 1cycle schedule (lr or momentum): valid for counts 0 .. ``total``, as torch's."""
    return closed_form(
        name,
        value,
        horizon=horizon,
        base_lr=base_lr,
        end=total + 1,
        chainable=False,
        max_count=(total, _ONE_CYCLE_LIMIT.format("{}", total)),
    )


def _one_cycle(
    total_steps: int | None,
    epochs: int | None,
    steps_per_epoch: int | None,
    pct_start: float,
    anneal_strategy: str,
    three_phase: bool,
    start: float,
    peak: float,
    end: float,
) -> tuple[int, Callable[[Any], Num]]:
    """torch's OneCycleLR validation and ``get_lr`` for one quantity (lr or momentum).

    ``start``/``peak``/``end`` are the values at the phase boundaries: for the lr
    ``initial_lr, max_lr, min_lr``; for the momentum ``max_momentum, base_momentum, max_momentum``.
    """
    if total_steps is not None:
        if total_steps <= 0 or not isinstance(total_steps, int):
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
        total = total_steps
    elif epochs is not None and steps_per_epoch is not None:
        if not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"Expected positive integer epochs, but got {epochs}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(
                f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}"
            )
        total = epochs * steps_per_epoch
    else:
        raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    # (end_step, start value, end value) per phase; torch's phase boundaries.
    if three_phase:
        phases = [
            (float(pct_start * total) - 1, start, peak),
            (float(2 * pct_start * total) - 2, peak, start),
            (total - 1, start, end),
        ]
    else:
        phases = [(float(pct_start * total) - 1, start, peak), (total - 1, peak, end)]
    if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(
            f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
        )

    def anneal(a: float, b: float, pct: Num) -> Num:
        if anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    def value(k: Any) -> Num:
        if isinstance(k, int):  # torch's loop over the phases (the table stops at total)
            start_step = 0.0
            for i, (end_step, a, b) in enumerate(phases):
                if k <= end_step or i == len(phases) - 1:
                    return anneal(a, b, (k - start_step) / (end_step - start_step))
                start_step = end_step
        step_num = as_float(k)
        start_step = 0.0
        candidates = []
        for end_step, a, b in phases:
            pct = (step_num - start_step) / (end_step - start_step)
            candidates.append((step_num <= end_step, anneal(a, b, pct)))
            start_step = end_step
        out = candidates[-1][1]  # the last phase takes every count past its predecessors
        for in_phase, v in reversed(candidates[:-1]):
            out = jnp.where(in_phase, v, out)
        return jnp.where(k > total, jnp.nan, out)  # torch raises ValueError past total_steps

    return total, value


def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    *,
    horizon: int = DEFAULT_HORIZON,
) -> LRSchedule:
    """The 1cycle policy (torch's ``OneCycleLR``, stepped per batch).

    torch (closed form): with ``initial_lr = max_lr / div_factor`` and
    ``min_lr = initial_lr / final_div_factor``, phases end at counts ``pct_start * total - 1``
    and ``total - 1`` (three-phase: ``pct_start * total - 1``, ``2 * pct_start * total - 2``,
    ``total - 1``); inside a phase from ``start_step`` to ``end_step``::

        pct = (k - start_step) / (end_step - start_step)
        cos:    lr_k = end + (start - end) / 2 * (cos(pi * pct) + 1)
        linear: lr_k = (end - start) * pct + start

    annealing ``initial_lr -> max_lr -> min_lr`` (three-phase:
    ``initial_lr -> max_lr -> initial_lr -> min_lr``). Counts 0 .. ``total`` are valid.

    Args:
        max_lr: the peak learning rate.
        total_steps: the cycle length; else ``epochs * steps_per_epoch``.
        epochs, steps_per_epoch: used when ``total_steps`` is None.
        pct_start: fraction of the cycle spent increasing the lr (a float).
        anneal_strategy: ``"cos"`` or ``"linear"``.
        cycle_momentum, base_momentum, max_momentum: accepted so that the same keyword arguments
            build :func:`one_cycle_momentum`; they do not affect the lr.
        div_factor: ``initial_lr = max_lr / div_factor``.
        final_div_factor: ``min_lr = initial_lr / final_div_factor``.
        three_phase: use torch's three-phase variant.
        horizon: table size bound (the table needs ``total + 1`` entries).

    Differences from torch:
        torch raises ValueError when stepped past ``total_steps``; so does a call with a
        concrete count, while a traced count past it gives NaN (jit cannot raise). torch's
        momentum side effect is the separate schedule :func:`one_cycle_momentum`.
    """
    del cycle_momentum, base_momentum, max_momentum
    max_lr = float(max_lr)
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    total, value = _one_cycle(
        total_steps,
        epochs,
        steps_per_epoch,
        pct_start,
        anneal_strategy,
        three_phase,
        initial_lr,
        max_lr,
        min_lr,
    )
    name = format_call(
        "one_cycle_lr",
        max_lr,
        total,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
    )
    return _one_cycle_schedule(name, value, total, horizon, base_lr=initial_lr)


def one_cycle_momentum(
    max_lr: float | None = None,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    *,
    horizon: int = DEFAULT_HORIZON,
) -> LRSchedule:
    """The momentum (or Adam's ``betas[0]``) that torch's ``OneCycleLR`` sets at each count.

    torch anneals it with :func:`one_cycle_lr`'s phases and ``pct``, inversely to the lr:
    ``max_momentum -> base_momentum -> max_momentum`` (three-phase: ``max_momentum ->
    base_momentum -> max_momentum -> max_momentum``). Pass it as an optimizer's ``momentum``
    (SGD) or first beta (Adam) next to ``lr=one_cycle_lr(...)``.

    Args:
        The same as :func:`one_cycle_lr`; ``max_lr``, ``div_factor`` and ``final_div_factor``
        are accepted for symmetry and ignored.

    Raises:
        ValueError: if ``cycle_momentum`` is False (torch then leaves the momentum unchanged).
    """
    del max_lr, div_factor, final_div_factor
    _check_cycle_momentum(cycle_momentum)
    hi, lo = float(max_momentum), float(base_momentum)
    total, value = _one_cycle(
        total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, three_phase, hi, lo, hi
    )
    name = format_call(
        "one_cycle_momentum",
        total_steps=total,
        pct_start=pct_start,
        base_momentum=lo,
        max_momentum=hi,
        three_phase=three_phase,
    )
    return _one_cycle_schedule(name, value, total, horizon, base_lr=None)
