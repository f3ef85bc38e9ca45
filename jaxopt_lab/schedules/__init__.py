"""``torch.optim.lr_scheduler`` as pure, jit-traceable functions of the scheduler step count.

Every constructor returns an :class:`LRSchedule`: a pure function ``count -> lr`` whose value at
``count = k`` is torch's ``optimizer.param_groups[0]["lr"]`` after constructing the scheduler and
calling ``scheduler.step()`` ``k`` times. Constructing a torch scheduler already performs one step,
so with torch's loop ``optimizer.step(); scheduler.step()`` the k-th optimizer step (from 0) uses
``schedule(k)``, which is exactly what an optimizer given ``lr=schedule`` evaluates::

    import jaxopt_lab as jol
    from jaxopt_lab import schedules

    opt = jol.sgd(lr=schedules.cosine_annealing_lr(0.1, T_max=100), momentum=0.9)

``count`` is an integer scalar, concrete or traced (use ``jax.vmap`` for many counts at once);
hyper-parameters are Python numbers, fixed when the schedule is built. Argument names and defaults
are torch's.

How torch's numbers are reproduced
----------------------------------
torch's schedulers do their arithmetic on Python floats (IEEE doubles), and most of them update
the *current* lr recursively (``lr <- lr * gamma``, a cosine ratio, ...) instead of evaluating a
closed form. The two differ by rounding, and torch's recursion accumulates it: measured on torch
2.13, CosineAnnealingLR with ``T_max=5000, eta_min=1e-3`` ends up 8e-12 away from its closed form.
Compiled XLA code cannot repeat torch's roundings either: on CPU it fuses ``a * b + c`` into
FMAs and turns division by a constant into multiplication by its reciprocal, and no flag turns
either off.

So each schedule **replays torch's own operations at construction time, in Python floats** (the
operations torch runs, hence bit-identical), for counts ``0 .. horizon - 1`` (default
``horizon=10_000``), and stores them in a table (8 bytes per entry, a constant in the compiled
graph). A call below the horizon is a table lookup: O(1) and equal to torch to the last bit.
Past the horizon the schedule is computed in the graph:

* closed form in torch (LambdaLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR): the same
  expression with torch's operation order, O(1), within a few ulps of torch.
* recursive in torch (StepLR, ExponentialLR, CosineAnnealingLR, MultiplicativeLR,
  ChainedScheduler): torch's update continues from the last table entry in a
  ``lax.fori_loop``, O(count - horizon) per call; raise ``horizon`` for long per-batch runs.

Some schedules are fully described by a few entries and are then exact at every count, as long
as those entries fit below the horizon: LinearLR, ConstantLR and PolynomialLR (``total_iters + 1``
entries), MultiStepLR (one entry per milestone), OneCycleLR (``total_steps + 1``) and
CosineAnnealingWarmRestarts with ``T_mult=1`` (one period of ``T_0``).

Precision: values are float64 when ``jax_enable_x64`` is on, else float32 (the working dtype is
read at call time); in float32 the table entries are torch's doubles correctly rounded. The
optimizers do not read that float32 value: they call ``schedule.double_value(count)``, which gives
torch's double as a pair of float32 numbers (``hi + lo``, ~48 bits), so that their per-step scalars
(``lr / bias_correction1``, ``lr / (1 + (t - 1) * lr_decay)``, ...) are computed from torch's double
lr in every mode, exactly as with a constant lr. Past the horizon the pair is the graph's value
with a zero remainder.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxopt_lab.optim.double import Pair

__all__ = [
    "DEFAULT_HORIZON",
    "LRSchedule",
    "PlateauSchedule",
    "PlateauState",
    "chained",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "cyclic_momentum",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multiplicative_lr",
    "multistep_lr",
    "one_cycle_lr",
    "one_cycle_momentum",
    "per_epoch",
    "polynomial_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
]

DEFAULT_HORIZON = 10_000
"""Counts below this are looked up in a table of torch's replayed values."""

Num: TypeAlias = Any
"""A Python float (host replay of torch's arithmetic) or a traced JAX scalar (in the graph)."""
Step: TypeAlias = Callable[[Any, Num], Num]
"""torch's ``get_lr()`` at ``last_epoch = k`` given the current lr; ``k = 0`` is construction."""


# --------------------------------------------------------------------------------------------
# Arithmetic shared by the host replay (Python int k, Python float lr: torch's exact operations)
# and the graph (int32 k, float arrays). One definition per schedule serves both.


def _float_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _fl(k: Any) -> Num:
    """The step count as a float, as Python promotes ``int`` in ``math.pi * last_epoch``."""
    return float(k) if isinstance(k, int) else k.astype(_float_dtype())


def _user(fn: Callable[[Any], Any], x: Any) -> Num:
    """A user callable (``lr_lambda``, ``scale_fn``) at ``x``, as a float of ``x``'s side.

    torch calls it with Python ints; the table does too. In the graph it gets an int32 scalar and
    runs under standard dtype promotion, so torch-style code such as ``0.95 ** epoch`` works even
    when strict promotion is on.
    """
    if isinstance(x, int):
        return float(fn(x))
    with jax.numpy_dtype_promotion("standard"):
        out = fn(x)
    return jnp.asarray(out).astype(_float_dtype())


def _cos(x: Num) -> Num:
    return math.cos(x) if isinstance(x, float) else jnp.cos(x)


def _select(cond: Any, then: Callable[[], Num], other: Callable[[], Num]) -> Num:
    """``then() if cond else other()``; on the host only the taken branch runs (as in torch)."""
    if isinstance(cond, bool):
        return then() if cond else other()
    return jnp.where(cond, then(), other())


def _as_count(count: Any) -> jax.Array:
    count = jnp.asarray(count)
    if count.ndim != 0:
        raise ValueError(
            f"count must be a scalar, got shape {count.shape}; use jax.vmap for many counts"
        )
    if not jnp.issubdtype(count.dtype, jnp.integer):
        raise TypeError(f"count must be an integer scalar, got dtype {count.dtype}")
    return count.astype(jnp.int32)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected positive integer {name}, but got {value}")


class _Table:
    """torch's values as float64 and, rounded once, float32 (beyond its range: +-inf), with the
    float32 rounding of each remainder (``f32 + lo`` carries ~48 bits of the double; a
    :class:`~jaxopt_lab.optim.double.Pair` per entry)."""

    def __init__(self, values: Sequence[float]) -> None:
        self.f64 = np.asarray(values, np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            self.f32 = self.f64.astype(np.float32)
            rest = self.f64 - self.f32.astype(np.float64)
            self.lo = np.where(np.isfinite(rest), rest, 0.0).astype(np.float32)

    def __len__(self) -> int:
        return len(self.f64)

    def __getitem__(self, i: int) -> float:
        return float(self.f64[i])

    def constant(self) -> jax.Array:
        """The table in the working dtype, as a constant of the graph being traced."""
        return jnp.asarray(self.f64 if _float_dtype() == np.float64 else self.f32)

    def pair(self, index: Any) -> Pair:
        """Entry ``index`` as a float32 pair, in any mode."""
        return Pair(jnp.asarray(self.f32)[index], jnp.asarray(self.lo)[index])


def _f32_pair(value: Any) -> Pair:
    """A traced value with no double behind it (computed in the graph) as a pair ``(v, 0)``."""
    hi = jnp.asarray(value).astype(jnp.float32)
    return Pair(hi, jnp.zeros_like(hi))


def _fmt(name: str, *args: Any, **kwargs: Any) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


# --------------------------------------------------------------------------------------------
# The schedule object.


class LRSchedule:
    """A learning-rate schedule: call it with the scheduler step count to get the lr.

    ``schedule(count)`` is pure and jit-traceable; ``count`` is an integer scalar (concrete or
    traced) and the result is a scalar of the working float dtype (float64 under x64, else
    float32). A concrete count gives the same value as a traced one (past the table, the graph
    is compiled with ``jax.jit`` for it). The private attributes describe torch's per-step rule
    so that :func:`chained` and :func:`sequential_lr` compose schedules with torch's semantics.

    Attributes:
        name: a readable description, e.g. ``"exponential_lr(0.1, gamma=0.9)"``.
        base_lr: torch's ``initial_lr`` for this schedule (``None`` where it has none).
    """

    __slots__ = (
        "__weakref__",
        "_first",
        "_graph",
        "_jitted",
        "_lookup",
        "_max_count",
        "_pair",
        "_rebuild",
        "_reset",
        "_restartable",
        "_settles_at",
        "_step",
        "base_lr",
        "name",
    )

    def __init__(
        self,
        name: str,
        graph: Callable[[jax.Array], Num],
        *,
        base_lr: float | None,
        lookup: Callable[[int], float | None] = lambda c: None,
        step: Step | None = None,
        settles_at: int | None = None,
        first: float | None = None,
        reset: Callable[[], float] | None = None,
        rebuild: Callable[[float], LRSchedule] | None = None,
        restartable: bool = True,
        max_count: tuple[int, str] | None = None,
        pair: Callable[[jax.Array], Pair] | None = None,
    ) -> None:
        self.name = name
        self.base_lr = base_lr
        # The value at a traced int32 count, in the working dtype and as torch's double (a Pair).
        self._graph = graph
        self._pair = pair
        self._jitted: Callable[[jax.Array], jax.Array] | None = None
        # The table entry for a concrete count, or None past the table.
        self._lookup = lookup
        # torch's get_lr as a function of (k, current lr); None: not chainable.
        self._step = step
        # The step is the identity for every k > settles_at (None: it never settles).
        self._settles_at = settles_at
        # The value at count 0 (a host float), where known.
        self._first = first
        # SequentialLR's value when it restarts this scheduler at a milestone (torch's
        # ``_update_lr(0)``: the closed form at epoch 0), and a copy of this schedule started
        # from that value. None: the restart value is schedule(0) itself.
        self._reset = reset
        self._rebuild = rebuild
        self._restartable = restartable
        # (limit, message): torch raises ValueError(message) for counts above limit.
        self._max_count = max_count

    def __call__(self, count: Any) -> jax.Array:
        count = _as_count(count)
        dtype = _float_dtype()
        if isinstance(count, jax.core.Tracer):
            return jnp.asarray(self._graph(count)).astype(dtype)
        c = int(count)
        if self._max_count is not None and c > self._max_count[0]:
            raise ValueError(self._max_count[1].format(c))
        value = self._lookup(c)
        if value is not None:
            with np.errstate(over="ignore"):  # as the float32 table: +-inf past its range
                return jnp.asarray(np.asarray(value, dtype))
        if self._jitted is None:
            self._jitted = jax.jit(self)
        return self._jitted(count)

    def double_value(self, count: Any) -> Pair:
        """torch's double at ``count`` as a float32 :class:`~jaxopt_lab.optim.double.Pair`.

        This is what the optimizers read (``ScalarMath.resolve``) when float64 is off, so that
        their double-precision scalar arithmetic (``lr / bias_correction1``, ...) starts from
        torch's double lr, not from its float32 rounding. Exact (to ~48 bits) for every count
        in the table; past it, where the value is computed in the graph, the pair is the
        working-dtype value with a zero remainder.
        """
        count = _as_count(count)
        if not isinstance(count, jax.core.Tracer):
            c = int(count)
            if self._max_count is not None and c > self._max_count[0]:
                raise ValueError(self._max_count[1].format(c))
            value = self._lookup(c)
            if value is not None:
                return Pair.of(value)
        if self._pair is not None:
            return self._pair(count)
        return _f32_pair(self(count))

    def __repr__(self) -> str:
        return self.name


def _double_value(schedule: Any, count: jax.Array) -> Pair:
    """A wrapped schedule's pair (any ``count -> value`` callable: its value, remainder 0)."""
    if isinstance(schedule, LRSchedule):
        return schedule.double_value(count)
    return _f32_pair(schedule(count))


def _tabled(
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
    table = _Table(values)
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
            return lax.cond(count < size, lambda: value, lambda: _f32_pair(tail(count)))
        past = _f32_pair(tail(count))
        return Pair(*(jnp.where(count < size, v, t) for v, t in zip(value, past, strict=True)))

    return LRSchedule(name, graph, lookup=lookup, first=table[0], pair=pair, **attrs)


def _lookup(schedule: Any, c: int) -> float | None:
    """A wrapped schedule's table entry at concrete count ``c`` (None: compile the wrapper)."""
    if not isinstance(schedule, LRSchedule):
        return None
    if schedule._max_count is not None and c > schedule._max_count[0]:
        raise ValueError(schedule._max_count[1].format(c))
    return schedule._lookup(c)


def _replay(step: Step, lr: float, ks: range) -> list[float]:
    """torch's values for the counts ``ks``, by running its update on Python floats."""
    values = []
    for k in ks:
        lr = step(k, lr)
        values.append(lr)
    return values


def _recursive(
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
    """A schedule torch computes recursively: replayed table, then the update in a loop."""
    _check_positive_int("horizon", horizon)
    size = horizon if settles_at is None else min(settles_at + 1, horizon)
    if first is None:
        values = _replay(step, base_lr, range(size))
    else:  # Restarted by SequentialLR: count 0 holds torch's closed-form value.
        values = [first, *_replay(step, first, range(1, size))]
    tail, last = None, _Table(values[-1:])
    if settles_at is None or settles_at >= size:

        def tail(count: jax.Array) -> jax.Array:
            dtype = _float_dtype()
            stop = count if settles_at is None else jnp.minimum(count, settles_at)
            body = lambda k, lr: jnp.asarray(step(k, lr)).astype(dtype)  # noqa: E731
            return lax.fori_loop(size, stop + 1, body, last.constant()[0])

    def rebuild(new_first: float) -> LRSchedule:
        return _recursive(
            name,
            base_lr,
            step,
            settles_at=settles_at,
            horizon=horizon,
            first=new_first,
            restartable=restartable,
        )

    return _tabled(
        name,
        values,
        tail,
        loop=True,
        base_lr=base_lr,
        step=step,
        settles_at=settles_at,
        reset=reset,
        rebuild=rebuild,
        restartable=restartable,
    )


def _closed(
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
    _check_positive_int("horizon", horizon)
    if period is not None and period <= horizon:
        values = [value(k) for k in range(period)]
        tail, periodic = None, True
    else:
        size = horizon if end is None else min(end, horizon)
        values = [value(k) for k in range(size)]
        tail, periodic = value, False
    return _tabled(
        name,
        values,
        tail,
        period=periodic,
        base_lr=base_lr,
        step=(lambda k, cur: value(k)) if chainable else None,
        **attrs,
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
        horizon: counts below this are a table lookup (see the module docstring).

    Differences from torch:
        ``step_size`` must be a positive int (torch raises ZeroDivisionError at the first step
        for 0 and accepts negative values).
    """
    _check_positive_int("step_size", step_size)
    lr = float(lr)

    def step(k: Any, cur: Num) -> Num:
        # torch: if last_epoch == 0 or last_epoch % step_size != 0: keep, else lr * gamma.
        return _select((k != 0) & (k % step_size == 0), lambda: cur * gamma, lambda: cur)

    return _recursive(
        _fmt("step_lr", lr, step_size, gamma=gamma),
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
        horizon: counts below this are a table lookup (see the module docstring).
    """
    lr = float(lr)

    def step(k: Any, cur: Num) -> Num:
        return _select(k == 0, lambda: cur, lambda: cur * gamma)

    return _recursive(
        _fmt("exponential_lr", lr, gamma=gamma),
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
        horizon: counts below this are a table lookup (see the module docstring).

    Differences from torch:
        :func:`sequential_lr` refuses it after a milestone: torch does not restart it there (it
        has no closed form), it keeps multiplying the previous scheduler's lr.
    """
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")
    lr = float(lr)

    def step(k: Any, cur: Num) -> Num:
        return _select(k == 0, lambda: cur, lambda: cur * _user(lr_lambda, k))

    return _recursive(
        _fmt("multiplicative_lr", lr, lr_lambda=lr_lambda),
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
        horizon: counts below this are a table lookup (see the module docstring).

    Differences from torch:
        ``T_max`` must be a positive int (torch raises ZeroDivisionError at the first step for 0).
    """
    _check_positive_int("T_max", T_max)
    lr, eta_min = float(lr), float(eta_min)
    lift = (lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2

    def step(k: Any, cur: Num) -> Num:
        def ratio() -> Num:
            return (1 + _cos(math.pi * _fl(k) / T_max)) / (
                1 + _cos(math.pi * _fl(k - 1) / T_max)
            ) * (cur - eta_min) + eta_min

        restart_bottom = (k - 1 - T_max) % (2 * T_max) == 0
        return _select(
            k == 0, lambda: cur, lambda: _select(restart_bottom, lambda: cur + lift, ratio)
        )

    return _recursive(
        _fmt("cosine_annealing_lr", lr, T_max, eta_min=eta_min),
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
            return cur * (1.0 + (e - s) / (T * s + _fl(k - 1) * (e - s)))

        return _select(k == 0, lambda: cur * s, lambda: _select(k > T, lambda: cur, ramp))

    return _recursive(
        _fmt("linear_lr", lr, start_factor=s, end_factor=e, total_iters=T),
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
        return _select(
            k == 0,
            lambda: cur * factor,
            lambda: _select(k == T, lambda: cur * (1.0 / factor), lambda: cur),
        )

    return _recursive(
        _fmt("constant_lr", lr, factor=factor, total_iters=T),
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
            return cur * ((1.0 - _fl(k) / T) / (1.0 - _fl(k - 1) / T)) ** power

        return _select((k == 0) | (k > T), lambda: cur, decay)

    return _recursive(
        _fmt("polynomial_lr", lr, total_iters=T, power=power),
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
            out = _select(k == m, lambda m=m: cur * gamma ** counts[m], lambda out=out: out)
        return out

    def build(first: float | None) -> LRSchedule:
        # values[j] holds from the j-th positive milestone on; a milestone at 0 already applies
        # at count 0 (torch's construction step), unless SequentialLR restarts it at `first`.
        starts = [m for m in hits if m > 0]
        values = [step(0, lr) if first is None else first]
        for m in starts:
            values.append(step(m, values[-1]))
        table = _Table(values)

        def index(count: jax.Array) -> jax.Array:
            return jnp.searchsorted(jnp.asarray(starts, jnp.int32), count, side="right")

        def lookup(c: int) -> float:
            return table[bisect.bisect_right(starts, c)]

        milestones_sorted = sorted(counts.elements())
        return LRSchedule(
            _fmt("multistep_lr", lr, milestones, gamma=gamma),
            lambda count: table.constant()[index(count)],
            lookup=lookup,
            pair=lambda count: table.pair(index(count)),
            base_lr=lr,
            step=step,
            settles_at=max(hits, default=0),
            first=values[0],
            # torch's closed form: base_lr * gamma ** bisect_right(milestones, last_epoch)
            reset=lambda: lr * gamma ** bisect.bisect_right(milestones_sorted, 0),
            rebuild=build,
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
        horizon: counts below this are a table lookup (see the module docstring).

    Differences from torch:
        a non-callable ``lr_lambda`` raises TypeError here with a message (torch raises the
        TypeError of calling it).
    """
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")
    lr = float(lr)

    def value(k: Any) -> Num:
        return lr * _user(lr_lambda, k)

    return _closed(_fmt("lambda_lr", lr, lr_lambda=lr_lambda), value, horizon=horizon, base_lr=lr)


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
        horizon: counts below this are a table lookup (see the module docstring).
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
            return _fl(k % T_0), float(T_0)
        if isinstance(k, int):
            i = bisect.bisect_right(starts, k) - 1
            return float(k - starts[i]), float(lengths[i])
        i = jnp.searchsorted(jnp.asarray(starts, jnp.int32), k, side="right") - 1
        dtype = _float_dtype()
        t_cur = (k - jnp.asarray(starts, jnp.int32)[i]).astype(dtype)
        return t_cur, jnp.asarray(lengths, dtype)[i]

    def value(k: Any) -> Num:
        t_cur, t_i = position(k)
        return eta_min + (lr - eta_min) * (1 + _cos(math.pi * t_cur / t_i)) / 2

    return _closed(
        _fmt("cosine_annealing_warm_restarts", lr, T_0, T_mult=T_mult, eta_min=eta_min),
        value,
        horizon=horizon,
        base_lr=lr,
        period=T_0 if T_mult == 1 else None,
    )


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


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
        t = _fl(k) / total_size
        if isinstance(k, int):
            cycle = math.floor(1 + t)
            x = 1.0 + t - cycle
        else:
            cycle_f = jnp.floor(1 + t)
            x = 1.0 + t - cycle_f
            cycle = cycle_f.astype(jnp.int32)
        scale_factor = _select(
            x <= step_ratio, lambda: x / step_ratio, lambda: (x - 1) / (step_ratio - 1)
        )
        height = amplitude * scale_factor
        scale = _user(scale_fn, cycle if scale_mode == "cycle" else k)
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
            inside :func:`chained`).
        scale_mode: ``"cycle"`` or ``"iterations"`` (only with ``scale_fn``).
        cycle_momentum, base_momentum, max_momentum: accepted so that the same keyword arguments
            build :func:`cyclic_momentum`; they do not affect the lr.
        horizon: counts below this are a table lookup (see the module docstring).

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
    name = _fmt(
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
    return _closed(name, value, horizon=horizon, base_lr=base_lr)


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
    if not cycle_momentum:
        raise ValueError(
            "cycle_momentum=False: torch leaves the optimizer's momentum unchanged, so there is "
            "no momentum schedule to build"
        )
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
    name = _fmt(
        "cyclic_momentum",
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        step_size_up=step_size_up,
        step_size_down=step_size_down,
        mode=mode,
    )
    return _closed(name, value, horizon=horizon, base_lr=None, chainable=False)


_ONE_CYCLE_LIMIT = "Tried to step {} times. The specified number of total steps is {}"


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
            return b + (a - b) / 2.0 * (_cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    def value(k: Any) -> Num:
        if isinstance(k, int):  # torch's loop over the phases (the table stops at total)
            start_step = 0.0
            for i, (end_step, a, b) in enumerate(phases):
                if k <= end_step or i == len(phases) - 1:
                    return anneal(a, b, (k - start_step) / (end_step - start_step))
                start_step = end_step
        step_num = _fl(k)
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
    name = _fmt(
        "one_cycle_lr",
        max_lr,
        total,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
    )
    return _closed(
        name,
        value,
        horizon=horizon,
        base_lr=initial_lr,
        end=total + 1,
        chainable=False,
        max_count=(total, _ONE_CYCLE_LIMIT.format("{}", total)),
    )


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
    if not cycle_momentum:
        raise ValueError(
            "cycle_momentum=False: torch leaves the optimizer's momentum unchanged, so there is "
            "no momentum schedule to build"
        )
    hi, lo = float(max_momentum), float(base_momentum)
    total, value = _one_cycle(
        total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, three_phase, hi, lo, hi
    )
    name = _fmt(
        "one_cycle_momentum",
        total_steps=total,
        pct_start=pct_start,
        base_momentum=lo,
        max_momentum=hi,
        three_phase=three_phase,
    )
    return _closed(
        name,
        value,
        horizon=horizon,
        base_lr=None,
        end=total + 1,
        chainable=False,
        max_count=(total, _ONE_CYCLE_LIMIT.format("{}", total)),
    )


# --------------------------------------------------------------------------------------------
# Combinators.


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
        horizon: counts below this are a table lookup (see the module docstring).

    Differences from torch:
        one_cycle_lr (torch: "not chainable"), sequential_lr, per_epoch and momentum schedules
        are refused with TypeError; schedules with different base lrs with ValueError.
    """
    if len(schedules) < 1:
        raise ValueError(
            "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler."
        )
    for i, schedule in enumerate(schedules):
        if not isinstance(schedule, LRSchedule) or schedule._step is None:
            raise TypeError(f"chained: the schedule at index {i} ({schedule!r}) is not chainable")
    base = schedules[0].base_lr
    for i, schedule in enumerate(schedules):
        if schedule.base_lr != base:
            raise ValueError(
                f"chained: every schedule must start from the same lr (torch's initial_lr), "
                f"but index 0 has {base} and index {i} has {schedule.base_lr}"
            )
    steps = [s._step for s in schedules]

    def step(k: Any, cur: Num) -> Num:
        for one in steps:
            cur = one(k, cur)
        return cur

    ends = [s._settles_at for s in schedules]
    return _recursive(
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
            if not schedule._restartable:
                raise ValueError(
                    f"sequential_lr: {schedule!r} after milestone {start}: torch does not restart "
                    "MultiplicativeLR at a milestone (no closed form) but keeps multiplying the "
                    "previous scheduler's lr; not supported"
                )
            if schedule._reset is not None and schedule._rebuild is not None:
                restart = schedule._reset()
                if restart != schedule._first:
                    schedule = schedule._rebuild(restart)
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
        return _lookup(schedule, c - start)

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
    _check_positive_int("steps_per_epoch", steps_per_epoch)

    def graph(count: jax.Array) -> jax.Array:
        return schedule(count // steps_per_epoch)

    def lookup(c: int) -> float | None:
        return _lookup(schedule, c // steps_per_epoch)

    return LRSchedule(
        f"per_epoch({schedule!r}, {steps_per_epoch})",
        graph,
        lookup=lookup,
        base_lr=getattr(schedule, "base_lr", None),
        pair=lambda count: _double_value(schedule, count // steps_per_epoch),
    )


# --------------------------------------------------------------------------------------------
# ReduceLROnPlateau.


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
        dtype = _float_dtype()
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
