"""Validation shared by the losses (at trace time), value checks (only for concrete arrays),
the reduction types and torch's plain reductions.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Reduction: TypeAlias = Literal["none", "mean", "sum"]
KLReduction: TypeAlias = Literal["none", "batchmean", "sum", "mean"]

REDUCTIONS = ("none", "mean", "sum")
KL_REDUCTIONS = ("none", "batchmean", "sum", "mean")


def check_reduction(fn: str, reduction: object, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    if not isinstance(reduction, str) or reduction not in allowed:
        choices = ", ".join(repr(r) for r in allowed)
        raise ValueError(
            f"{fn}: {reduction!r} is not a valid value for reduction; expected one of {choices}"
        )


def check_static_number(fn: str, name: str, value: object) -> float:
    """A hyper-parameter that torch takes as a Python float (it decides control flow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a Python number, got {type(value).__name__}")
    return float(value)


def check_static_int(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be a Python int, got {type(value).__name__}")
    return int(value)


def as_input(fn: str, input: ArrayLike) -> jax.Array:
    x = jnp.asarray(input)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: input must be a floating-point array, got dtype {x.dtype}")
    return x


def as_float_like(fn: str, name: str, value: ArrayLike, x: jax.Array) -> jax.Array:
    """A floating companion of ``input`` (target, weight): same dtype; lists/scalars converted."""
    if not hasattr(value, "dtype"):
        return jnp.asarray(value, dtype=x.dtype)
    v = jnp.asarray(value)
    if v.dtype != x.dtype:
        raise TypeError(
            f"{fn}: {name} has dtype {v.dtype} but input has dtype {x.dtype}; cast one of them "
            "(no implicit dtype promotion)"
        )
    return v


def check_same_shape(fn: str, name: str, v: jax.Array, x: jax.Array) -> None:
    if v.shape != x.shape:
        raise ValueError(
            f"{fn}: {name} shape {v.shape} must equal input shape {x.shape} (no broadcasting)"
        )


def broadcast_weight(fn: str, name: str, w: jax.Array, x: jax.Array) -> jax.Array:
    """torch expands ``weight`` / ``pos_weight`` to the input's shape (trailing-dim rules)."""
    try:
        ok = np.broadcast_shapes(w.shape, x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} of shape {w.shape} cannot be broadcast to {x.shape}")
    return jnp.broadcast_to(w, x.shape)


def concrete_value(value: jax.Array) -> np.ndarray | None:
    """The value of an array when it is known now (not under jit); ``None`` when traced."""
    if isinstance(value, jax.core.Tracer):
        # Eager jax.grad wraps arrays in tracers whose value is nevertheless known.
        to_concrete = getattr(value, "to_concrete_value", None)
        known = to_concrete() if to_concrete is not None else None
        return None if known is None else np.asarray(known)
    return np.asarray(value)


def reduce_loss(loss: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(loss)  # torch: sum, then divide by numel
    if reduction == "sum":
        return jnp.sum(loss)
    return loss
