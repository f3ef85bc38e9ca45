"""The schedule type: torch's values replayed into a double-precision table, then the graph.

:class:`LRSchedule` is what every constructor in :mod:`jaxopt_lab.schedules` returns; this module
also holds the table it looks values up in, the typed description of torch's per-step rule that
the combinators compose (:class:`Rule`, :class:`Restart`), and the helpers the other modules
share (count checking, the working float dtype, names).

How torch's numbers are reproduced
----------------------------------
torch's schedulers do their arithmetic on Python floats (IEEE doubles), and most of them update
the *current* lr recursively (``lr <- lr * gamma``, a cosine ratio, ...) instead of evaluating a
closed form. The two differ by rounding, and torch's recursion accumulates it: over thousands of
steps CosineAnnealingLR's values drift measurably from its closed form (see
:func:`~jaxopt_lab.schedules.cosine_annealing_lr`). Compiled XLA code cannot repeat torch's
roundings either: on CPU it fuses ``a * b + c`` into FMAs and turns division by a constant into
multiplication by its reciprocal, and no flag turns either off.

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

The builders that fill the table from torch's rules are in :mod:`jaxopt_lab.schedules.replay`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.optim.double import Pair

DEFAULT_HORIZON = 10_000
"""Counts below this are looked up in a table of torch's replayed values."""

Num: TypeAlias = Any
"""A Python float (host replay of torch's arithmetic) or a traced JAX scalar (in the graph)."""
Step: TypeAlias = Callable[[Any, Num], Num]
"""torch's ``get_lr()`` at ``last_epoch = k`` given the current lr; ``k = 0`` is construction."""


# --------------------------------------------------------------------------------------------
# Helpers shared by every schedule module.


def float_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def as_count(count: Any) -> jax.Array:
    """``count`` as an int32 scalar (concrete or traced); rejects arrays and floats."""
    count = jnp.asarray(count)
    if count.ndim != 0:
        raise ValueError(
            f"count must be a scalar, got shape {count.shape}; use jax.vmap for many counts"
        )
    if not jnp.issubdtype(count.dtype, jnp.integer):
        raise TypeError(f"count must be an integer scalar, got dtype {count.dtype}")
    return count.astype(jnp.int32)


class Table:
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
        return jnp.asarray(self.f64 if float_dtype() == np.float64 else self.f32)

    def pair(self, index: Any) -> Pair:
        """Entry ``index`` as a float32 pair, in any mode."""
        return Pair(jnp.asarray(self.f32)[index], jnp.asarray(self.lo)[index])


def f32_pair(value: Any) -> Pair:
    """A traced value with no double behind it (computed in the graph) as a pair ``(v, 0)``."""
    hi = jnp.asarray(value).astype(jnp.float32)
    return Pair(hi, jnp.zeros_like(hi))


def format_call(name: str, *args: Any, **kwargs: Any) -> str:
    """``name(args..., key=value...)``: the readable :attr:`LRSchedule.name` of a call."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


# --------------------------------------------------------------------------------------------
# What a schedule exposes to the combinators: torch's per-step rule and its SequentialLR restart.


class Rule(NamedTuple):
    """torch's per-step update of one scheduler, as :func:`~jaxopt_lab.schedules.chained` runs it.

    torch's ``ChainedScheduler`` steps every scheduler on the same optimizer, each reading the lr
    the previous one wrote; a chain is therefore the composition of the members' ``step``.

    Attributes:
        step: torch's ``get_lr()`` at ``last_epoch = k`` given the current lr (``k = 0`` is
            construction): ``(k, lr) -> lr``. One definition serves the host replay (Python
            int ``k``, Python float lr: torch's exact operations) and the graph (int32 ``k``).
        settles_at: the step is the identity for every ``k > settles_at`` (None: it never
            settles), so that a chain of settling rules needs a finite table only.
    """

    step: Step
    settles_at: int | None


class Restart(NamedTuple):
    """How torch's ``SequentialLR`` restarts a scheduler at a positive milestone.

    torch sets the lr to the scheduler's closed form at epoch 0 (``_update_lr(0)``, e.g.
    ``initial_lr`` for ExponentialLR, ``initial_lr * start_factor`` for LinearLR) and the
    scheduler then steps recursively from there. Where that value differs from the schedule's own
    count-0 value (:attr:`LRSchedule.first`), :func:`~jaxopt_lab.schedules.sequential_lr` uses
    ``rebuild(value())`` in its place.

    Attributes:
        value: torch's closed form at epoch 0, a Python float.
        rebuild: the same schedule replayed with the given value at count 0.
    """

    value: Callable[[], float]
    rebuild: Callable[[float], LRSchedule]


# --------------------------------------------------------------------------------------------
# The schedule object.


class LRSchedule:
    """A learning-rate schedule: call it with the scheduler step count to get the lr.

    ``schedule(count)`` is pure and jit-traceable; ``count`` is an integer scalar (concrete or
    traced) and the result is a scalar of the working float dtype (float64 under x64, else
    float32). A concrete count gives the same value as a traced one (past the table, the graph
    is compiled with ``jax.jit`` for it). The public attributes below describe torch's per-step
    rule so that :func:`~jaxopt_lab.schedules.chained` and
    :func:`~jaxopt_lab.schedules.sequential_lr` compose schedules with torch's semantics; the
    combinators read nothing else of another schedule.

    Attributes:
        name: a readable description, e.g. ``"exponential_lr(0.1, gamma=0.9)"``.
        base_lr: torch's ``initial_lr`` for this schedule (``None`` where it has none).
        first: the value at count 0, a host float (``None`` where not known up front).
        rule: torch's per-step rule (``None``: not chainable, e.g. OneCycleLR).
        restart: how ``SequentialLR`` restarts it at a milestone (``None``: the restart value
            is ``schedule(0)`` itself).
        restartable: False where torch does not restart it at a milestone at all
            (MultiplicativeLR keeps multiplying the previous scheduler's lr).
    """

    __slots__ = (
        "__weakref__",
        "_graph",
        "_jitted",
        "_lookup",
        "_max_count",
        "_pair",
        "base_lr",
        "first",
        "name",
        "restart",
        "restartable",
        "rule",
    )

    def __init__(
        self,
        name: str,
        graph: Callable[[jax.Array], Num],
        *,
        base_lr: float | None,
        lookup: Callable[[int], float | None] = lambda c: None,
        rule: Rule | None = None,
        first: float | None = None,
        restart: Restart | None = None,
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
        self.rule = rule
        self.first = first
        self.restart = restart
        self.restartable = restartable
        # (limit, message): torch raises ValueError(message) for counts above limit.
        self._max_count = max_count

    def table_value(self, count: int) -> float | None:
        """torch's double at the concrete ``count`` from the table; None past the table.

        Raises ValueError where torch raises when stepped that far (OneCycleLR past
        ``total_steps``).
        """
        if self._max_count is not None and count > self._max_count[0]:
            raise ValueError(self._max_count[1].format(count))
        return self._lookup(count)

    def __call__(self, count: Any) -> jax.Array:
        count = as_count(count)
        dtype = float_dtype()
        if isinstance(count, jax.core.Tracer):
            return jnp.asarray(self._graph(count)).astype(dtype)
        value = self.table_value(int(count))
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
        count = as_count(count)
        if not isinstance(count, jax.core.Tracer):
            value = self.table_value(int(count))
            if value is not None:
                return Pair.of(value)
        if self._pair is not None:
            return self._pair(count)
        return f32_pair(self(count))

    def __repr__(self) -> str:
        return self.name
