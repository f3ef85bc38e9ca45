"""torch.nn.functional's losses as pure, jittable JAX functions, equal to torch number by number.

Every function keeps torch's name, argument names, defaults and semantics (``reduction``,
``weight``, ``ignore_index``, ``label_smoothing``, ...); each ``*Loss`` class is the module form,
a frozen dataclass whose ``__call__(input, target)`` calls the function, like ``torch.nn.L1Loss``.
Values *and* gradients follow torch's formulas: where torch has a hand-written backward (L1's
``sgn``, smooth L1 / Huber, both binary cross-entropies) a ``jax.custom_jvp`` reproduces it, so
e.g. ``jax.grad`` of ``l1_loss`` is 0 (not 1) where ``input == target``, and the gradient of
``binary_cross_entropy`` at an input of exactly 0 or 1 is torch's finite clamped value.

Differences from torch.nn.functional (all of them):

* The deprecated ``size_average`` / ``reduce`` arguments are gone, so every argument that in torch
  sits after one of them is keyword-only here (``l1_loss(x, y, reduction="sum")``); a positional
  call that torch would bind to ``size_average`` is a ``TypeError`` instead of a silent mix-up.
* No broadcasting between ``input`` and ``target`` and no implicit dtype promotion: shapes must be
  equal (torch warns and broadcasts for the regression losses) and a floating ``target`` /
  ``weight`` must have ``input``'s dtype (a Python scalar or list is converted to it).
* Class-index targets may have any integer dtype (torch: int64 or uint8 only).
* ``label_smoothing`` outside ``[0, 1]`` is an error (torch silently ignores negative values).
* ``kl_div(reduction="mean")`` is torch's element-wise mean, without torch's ``UserWarning``;
  ``reduction="batchmean"`` is the mathematical KL divergence (sum divided by ``input.shape[0]``).

Validation and jit: reductions, option values, shapes and dtypes are checked when the function is
traced, so they raise the same ``ValueError`` / ``TypeError`` eagerly and under ``jax.jit``.
Two checks depend on *values* and run only when the array is concrete (eager calls, including
eager ``jax.grad``); under ``jax.jit`` they cannot run and the loss becomes NaN instead:

* ``nll_loss`` / ``cross_entropy``: a class index outside ``[0, C)`` that is not ``ignore_index``
  raises ``ValueError`` eagerly; traced, its term and the ``'mean'`` denominator are NaN, so every
  reduced loss is NaN (``reduction='none'`` marks exactly the offending positions).
* ``binary_cross_entropy``: an ``input`` outside ``[0, 1]`` (or NaN) raises ``ValueError``
  eagerly; traced, the log of a negative number makes those terms NaN.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "nll_loss",
    "smooth_l1_loss",
]

Reduction: TypeAlias = Literal["none", "mean", "sum"]
KLReduction: TypeAlias = Literal["none", "batchmean", "sum", "mean"]

_REDUCTIONS = ("none", "mean", "sum")
_KL_REDUCTIONS = ("none", "batchmean", "sum", "mean")

# torch clamps BCE's logs at -100 and the denominator of its gradient at ATen's
# `constexpr float EPSILON = 1e-12` (Loss.cpp) -- a float32 constant, also in float64 (the
# float64 gradient at an input of exactly 0 or 1 is off by 4e-9 relative with the double 1e-12).
_BCE_LOG_FLOOR = -100.0
_BCE_GRAD_EPS = float(np.float32(1e-12))


# --------------------------------------------------------------------------------------------
# Validation (trace time) and value checks (only for concrete arrays).
# --------------------------------------------------------------------------------------------


def _check_reduction(fn: str, reduction: object, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    if not isinstance(reduction, str) or reduction not in allowed:
        choices = ", ".join(repr(r) for r in allowed)
        raise ValueError(
            f"{fn}: {reduction!r} is not a valid value for reduction; expected one of {choices}"
        )


def _check_static_number(fn: str, name: str, value: object) -> float:
    """A hyper-parameter that torch takes as a Python float (it decides control flow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a Python number, got {type(value).__name__}")
    return float(value)


def _check_static_int(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be a Python int, got {type(value).__name__}")
    return int(value)


def _as_input(fn: str, input: ArrayLike) -> jax.Array:
    x = jnp.asarray(input)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: input must be a floating-point array, got dtype {x.dtype}")
    return x


def _as_float_like(fn: str, name: str, value: ArrayLike, x: jax.Array) -> jax.Array:
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


def _check_same_shape(fn: str, name: str, v: jax.Array, x: jax.Array) -> None:
    if v.shape != x.shape:
        raise ValueError(
            f"{fn}: {name} shape {v.shape} must equal input shape {x.shape} (no broadcasting)"
        )


def _broadcast_weight(fn: str, name: str, w: jax.Array, x: jax.Array) -> jax.Array:
    """torch expands ``weight`` / ``pos_weight`` to the input's shape (trailing-dim rules)."""
    try:
        ok = np.broadcast_shapes(w.shape, x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} of shape {w.shape} cannot be broadcast to {x.shape}")
    return jnp.broadcast_to(w, x.shape)


def _concrete(value: jax.Array) -> np.ndarray | None:
    """The value of an array when it is known now (not under jit); ``None`` when traced."""
    if isinstance(value, jax.core.Tracer):
        # Eager jax.grad wraps arrays in tracers whose value is nevertheless known.
        to_concrete = getattr(value, "to_concrete_value", None)
        known = to_concrete() if to_concrete is not None else None
        return None if known is None else np.asarray(known)
    return np.asarray(value)


def _reduce(loss: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(loss)  # torch: sum, then divide by numel
    if reduction == "sum":
        return jnp.sum(loss)
    return loss


# --------------------------------------------------------------------------------------------
# Element-wise kernels with torch's backward formulas.
# --------------------------------------------------------------------------------------------


@jax.custom_jvp
def _abs(d: jax.Array) -> jax.Array:
    """``|d|`` whose derivative is torch's ``sgn(d)``: 0 at ``d == 0`` (jnp.abs gives 1)."""
    return jnp.abs(d)


@_abs.defjvp
def _abs_jvp(primals: tuple, tangents: tuple) -> tuple:
    (d,), (dd,) = primals, tangents
    return jnp.abs(d), jnp.sign(d) * dd


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _smooth_l1(d: jax.Array, beta: float) -> jax.Array:
    z = jnp.abs(d)
    # torch: z < beta ? 0.5 * z * z / beta : z - 0.5 * beta   (left to right, in input's dtype)
    return jnp.where(z < beta, 0.5 * z * z / beta, z - 0.5 * beta)


@_smooth_l1.defjvp
def _smooth_l1_jvp(beta: float, primals: tuple, tangents: tuple) -> tuple:
    (d,), (dd,) = primals, tangents
    # torch backward: d <= -beta ? -1 : d >= beta ? 1 : d / beta   (times the incoming grad)
    slope = jnp.where(d <= -beta, -1.0, jnp.where(d >= beta, 1.0, d / beta))
    return _smooth_l1(d, beta), slope * dd


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _huber(d: jax.Array, delta: float) -> jax.Array:
    z = jnp.abs(d)
    # torch: z < delta ? 0.5 * z * z : delta * (z - 0.5 * delta)
    return jnp.where(z < delta, 0.5 * z * z, delta * (z - 0.5 * delta))


@_huber.defjvp
def _huber_jvp(delta: float, primals: tuple, tangents: tuple) -> tuple:
    (d,), (dd,) = primals, tangents
    # torch backward: d < -delta ? -delta : d > delta ? delta : d
    slope = jnp.where(d < -delta, -delta, jnp.where(d > delta, delta, d))
    return _huber(d, delta), slope * dd


@jax.custom_jvp
def _bce(x: jax.Array, y: jax.Array) -> jax.Array:
    # torch 2.x CPU kernel: (y - 1) * max(log1p(-x), -100) - y * max(log(x), -100)
    log_1mx = jnp.maximum(jnp.log1p(-x), _BCE_LOG_FLOOR)
    log_x = jnp.maximum(jnp.log(x), _BCE_LOG_FLOOR)
    return (y - 1) * log_1mx - y * log_x


@_bce.defjvp
def _bce_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, y), (dx, dy) = primals, tangents
    # torch backward w.r.t. input: (x - y) / max((1 - x) * x, 1e-12)  -- finite at x in {0, 1}
    slope_x = (x - y) / jnp.maximum((1 - x) * x, _BCE_GRAD_EPS)
    # torch backward w.r.t. target: -logit(x) = -log(x / (1 - x))
    slope_y = -jnp.log(x / (1 - x))
    return _bce(x, y), slope_x * dx + slope_y * dy


@jax.custom_jvp
def _bce_logits(x: jax.Array, t: jax.Array) -> jax.Array:
    # torch: (1 - t) * x - log_sigmoid(x)
    return (1 - t) * x - jax.nn.log_sigmoid(x)


@_bce_logits.defjvp
def _bce_logits_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, t), (dx, dt) = primals, tangents
    # torch backward: sigmoid(x) - t ; w.r.t. target: -x
    return _bce_logits(x, t), (jax.nn.sigmoid(x) - t) * dx - x * dt


@jax.custom_jvp
def _bce_logits_pw(x: jax.Array, t: jax.Array, pw: jax.Array) -> jax.Array:
    # torch: (1 - t) * x - ((pw - 1) * t + 1) * log_sigmoid(x)
    log_sig = jax.nn.log_sigmoid(x)
    return (1 - t) * x - ((pw - 1) * t + 1) * log_sig


@_bce_logits_pw.defjvp
def _bce_logits_pw_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, t, pw), (dx, dt, dpw) = primals, tangents
    log_sig = jax.nn.log_sigmoid(x)
    pw_t = pw * t
    # torch backward: (pw * t + 1 - t) * sigmoid(x) - pw * t
    slope_x = (pw_t + 1 - t) * jax.nn.sigmoid(x) - pw_t
    slope_t = -x - (pw - 1) * log_sig
    slope_pw = -t * log_sig
    return _bce_logits_pw(x, t, pw), slope_x * dx + slope_t * dt + slope_pw * dpw


# --------------------------------------------------------------------------------------------
# Regression losses.
# --------------------------------------------------------------------------------------------


def _regression_operands(
    fn: str, input: ArrayLike, target: ArrayLike, weight: ArrayLike | None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    x = _as_input(fn, input)
    y = _as_float_like(fn, "target", target, x)
    _check_same_shape(fn, "target", y, x)
    w = None
    if weight is not None:
        w = _as_float_like(fn, "weight", weight, x)
        _check_same_shape(fn, "weight", w, x)
    return x, y, w


def _weighted_reduce(loss: jax.Array, w: jax.Array | None, reduction: str) -> jax.Array:
    """torch's weighted L1/MSE: 'mean' divides by the sum of the weights."""
    if w is None:
        return _reduce(loss, reduction)
    loss = loss * w
    if reduction == "mean":
        return jnp.sum(loss) / jnp.sum(w)
    return _reduce(loss, reduction)


def l1_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: Reduction = "mean",
    weight: ArrayLike | None = None,
) -> jax.Array:
    """Mean absolute error, ``torch.nn.functional.l1_loss``.

    ``l_i = w_i |x_i - y_i|``; ``'mean'`` is ``sum(l) / numel`` (``sum(l) / sum(w)`` with a
    weight), ``'sum'`` is ``sum(l)``, ``'none'`` returns ``l``. The gradient is torch's
    ``w_i sgn(x_i - y_i)``, which is 0 where ``x_i == y_i``.

    Args:
        input: predictions, any floating shape.
        target: same shape and dtype as ``input``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        weight: optional per-element weights, same shape and dtype as ``input`` (torch >= 2.6).

    Differences from torch: keyword-only options; no broadcasting of ``target``.
    """
    _check_reduction("l1_loss", reduction)
    x, y, w = _regression_operands("l1_loss", input, target, weight)
    return _weighted_reduce(_abs(x - y), w, reduction)


def mse_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: Reduction = "mean",
    weight: ArrayLike | None = None,
) -> jax.Array:
    """Mean squared error, ``torch.nn.functional.mse_loss``.

    ``l_i = w_i (x_i - y_i)^2``; ``'mean'`` is ``sum(l) / numel`` (``sum(l) / sum(w)`` with a
    weight), ``'sum'`` is ``sum(l)``, ``'none'`` returns ``l``.

    Args:
        input: predictions, any floating shape.
        target: same shape and dtype as ``input``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        weight: optional per-element weights, same shape and dtype as ``input`` (torch >= 2.6).

    Differences from torch: keyword-only options; no broadcasting of ``target``.
    """
    _check_reduction("mse_loss", reduction)
    x, y, w = _regression_operands("mse_loss", input, target, weight)
    d = x - y
    return _weighted_reduce(d * d, w, reduction)


def smooth_l1_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: Reduction = "mean",
    beta: float = 1.0,
) -> jax.Array:
    """Smooth L1 loss, ``torch.nn.functional.smooth_l1_loss``.

    With ``z_i = |x_i - y_i|``: ``l_i = 0.5 z_i^2 / beta`` if ``z_i < beta`` else
    ``z_i - 0.5 beta``; ``beta == 0`` is exactly ``l1_loss``. Reduced like :func:`l1_loss`.

    Args:
        input: predictions, any floating shape.
        target: same shape and dtype as ``input``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        beta: the switch point, ``>= 0`` (a Python number: it selects the formula).

    Differences from torch: keyword-only options; no broadcasting of ``target``; a negative
    ``beta`` is a ``ValueError`` (torch: ``RuntimeError``).
    """
    fn = "smooth_l1_loss"
    _check_reduction(fn, reduction)
    beta = _check_static_number(fn, "beta", beta)
    if not beta >= 0:
        raise ValueError(f"{fn} does not support negative values for beta (got {beta})")
    x, y, _ = _regression_operands(fn, input, target, None)
    d = x - y
    loss = _abs(d) if beta == 0 else _smooth_l1(d, beta)
    return _reduce(loss, reduction)


def huber_loss(
    input: ArrayLike,
    target: ArrayLike,
    reduction: Reduction = "mean",
    delta: float = 1.0,
    weight: ArrayLike | None = None,
) -> jax.Array:
    """Huber loss, ``torch.nn.functional.huber_loss``.

    With ``z_i = |x_i - y_i|``: ``l_i = w_i 0.5 z_i^2`` if ``z_i < delta`` else
    ``w_i delta (z_i - 0.5 delta)``; ``'mean'`` is ``sum(l) / numel`` even with a weight (torch).

    Args:
        input: predictions, any floating shape.
        target: same shape and dtype as ``input``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        delta: the switch point, ``> 0`` (a Python number).
        weight: optional per-element weights, same shape and dtype as ``input`` (torch >= 2.6).

    Differences from torch: no broadcasting of ``target``; a non-positive ``delta`` is a
    ``ValueError`` (torch: ``RuntimeError``).
    """
    fn = "huber_loss"
    _check_reduction(fn, reduction)
    delta = _check_static_number(fn, "delta", delta)
    if not delta > 0:
        raise ValueError(f"{fn} does not support non-positive values for delta (got {delta})")
    x, y, w = _regression_operands(fn, input, target, weight)
    loss = _huber(x - y, delta)
    if w is not None:
        loss = loss * w  # torch: weighted 'mean' is still the plain mean
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------------------------
# Binary cross-entropy.
# --------------------------------------------------------------------------------------------


def binary_cross_entropy(
    input: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Binary cross-entropy on probabilities, ``torch.nn.functional.binary_cross_entropy``.

    ``l_i = -w_i [y_i max(log x_i, -100) + (1 - y_i) max(log(1 - x_i), -100)]`` (torch clamps
    the logs at -100 so that ``x`` of exactly 0 or 1 gives a finite loss); the gradient is torch's
    ``w_i (x_i - y_i) / max(x_i (1 - x_i), 1e-12)``. ``'mean'`` divides by ``numel``.

    Args:
        input: probabilities in ``[0, 1]``, any floating shape.
        target: same shape and dtype as ``input`` (usually in ``[0, 1]``).
        weight: optional rescaling weight, broadcastable to ``input``'s shape, same dtype.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Differences from torch: keyword-only ``reduction``; an input outside ``[0, 1]`` raises
    ``ValueError`` eagerly (torch: ``RuntimeError``) and gives NaN under ``jax.jit``.
    """
    fn = "binary_cross_entropy"
    _check_reduction(fn, reduction)
    x = _as_input(fn, input)
    y = _as_float_like(fn, "target", target, x)
    _check_same_shape(fn, "target", y, x)
    value = _concrete(x)
    if value is not None and not np.all((value >= 0) & (value <= 1)):
        raise ValueError(f"{fn}: all elements of input should be between 0 and 1")
    loss = _bce(x, y)
    if weight is not None:
        loss = loss * _broadcast_weight(fn, "weight", _as_float_like(fn, "weight", weight, x), x)
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(
    input: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    reduction: Reduction = "mean",
    pos_weight: ArrayLike | None = None,
) -> jax.Array:
    """Sigmoid + binary cross-entropy, ``torch.nn.functional.binary_cross_entropy_with_logits``.

    ``l_i = w_i [(1 - y_i) x_i - (1 + (p_i - 1) y_i) log_sigmoid(x_i)]`` with ``p`` the
    ``pos_weight`` (1 when absent); the gradient is torch's
    ``w_i [(p_i y_i + 1 - y_i) sigmoid(x_i) - p_i y_i]``. ``'mean'`` divides by ``numel``.

    Args:
        input: logits, any floating shape.
        target: same shape and dtype as ``input``.
        weight: optional rescaling weight, broadcastable to ``input``'s shape, same dtype.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        pos_weight: optional weight of positive examples, broadcastable to ``input``'s shape
            (typically ``(C,)`` for the last axis), same dtype.

    Differences from torch: keyword-only ``reduction`` / ``pos_weight``; ``weight`` and
    ``pos_weight`` must broadcast *to* the input's shape (torch may broadcast the loss larger).
    """
    fn = "binary_cross_entropy_with_logits"
    _check_reduction(fn, reduction)
    x = _as_input(fn, input)
    y = _as_float_like(fn, "target", target, x)
    _check_same_shape(fn, "target", y, x)
    if pos_weight is None:
        loss = _bce_logits(x, y)
    else:
        pw = _as_float_like(fn, "pos_weight", pos_weight, x)
        loss = _bce_logits_pw(x, y, _broadcast_weight(fn, "pos_weight", pw, x))
    if weight is not None:
        loss = loss * _broadcast_weight(fn, "weight", _as_float_like(fn, "weight", weight, x), x)
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------------------------
# KL divergence.
# --------------------------------------------------------------------------------------------


def kl_div(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: KLReduction = "mean",
    log_target: bool = False,
) -> jax.Array:
    """Kullback-Leibler divergence, ``torch.nn.functional.kl_div``.

    ``input`` holds log-probabilities ``log q``. ``l_i = xlogy(p_i, p_i) - p_i input_i`` (0 where
    ``p_i == 0``), or ``exp(t_i) (t_i - input_i)`` with ``log_target`` (``target = log p``).
    ``'batchmean'`` is ``sum(l) / input.shape[0]`` -- the KL divergence per sample; ``'mean'`` is
    ``sum(l) / numel``, torch's default, which also divides by the support size.

    Args:
        input: log-probabilities, any floating shape.
        target: probabilities (or log-probabilities with ``log_target``), same shape and dtype.
        reduction: ``'none'`` | ``'batchmean'`` | ``'sum'`` | ``'mean'``.
        log_target: whether ``target`` is given in log space.

    Differences from torch: keyword-only options; ``'mean'`` keeps torch's semantics but does not
    emit torch's ``UserWarning`` (use ``'batchmean'`` for the true KL divergence).
    """
    fn = "kl_div"
    _check_reduction(fn, reduction, _KL_REDUCTIONS)
    if not isinstance(log_target, (bool, np.bool_)):
        raise TypeError(f"{fn}: log_target must be a bool, got {type(log_target).__name__}")
    x = _as_input(fn, input)
    t = _as_float_like(fn, "target", target, x)
    _check_same_shape(fn, "target", t, x)
    if log_target:
        loss = jnp.exp(t) * (t - x)
    else:
        loss = jax.scipy.special.xlogy(t, t) - t * x
    if reduction == "batchmean":
        total = jnp.sum(loss)
        return total / x.shape[0] if x.ndim > 0 else total
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------------------------
# NLL and cross-entropy.
# --------------------------------------------------------------------------------------------


def _class_weight(fn: str, weight: ArrayLike | None, x: jax.Array, n_classes: int) -> jax.Array:
    if weight is None:
        return jnp.ones((n_classes,), x.dtype)
    w = _as_float_like(fn, "weight", weight, x)
    if w.shape != (n_classes,):
        raise ValueError(
            f"{fn}: weight tensor should be defined either for all {n_classes} classes or no "
            f"classes but got weight tensor of shape: {w.shape}"
        )
    return w


def _check_class_target(fn: str, x: jax.Array, target: ArrayLike) -> jax.Array:
    if x.ndim == 0:
        raise ValueError(f"{fn}: input must have a class dimension, got a 0-d array")
    t = jnp.asarray(target)
    expected = (*x.shape[:1], *x.shape[2:]) if x.ndim > 1 else ()
    if t.shape != expected:
        layout = "(C,) input needs a 0-d target" if x.ndim == 1 else "(N, C, d1, ...) input"
        raise ValueError(
            f"{fn}: expected target shape {expected} of class indices for input shape {x.shape} "
            f"({layout} -> (N, d1, ...) target), got {t.shape}"
        )
    if t.dtype == jnp.bool_ or not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: class-index target must have an integer dtype, got {t.dtype}"
            + (
                f" (class probabilities need target shape {x.shape}, equal to the input's)"
                if jnp.issubdtype(t.dtype, jnp.floating)
                else ""
            )
        )
    if t.dtype not in (jnp.int32, jnp.int64):
        t = t.astype(jnp.int32)  # uint8 / int16 ...: compare with ignore_index and arange safely
    return t


def _check_target_values(fn: str, t: jax.Array, n_classes: int, ignore_index: int) -> None:
    value = _concrete(t)
    if value is None:
        return  # traced: out-of-range targets turn the loss into NaN (see the module docstring)
    bad = (value != ignore_index) & ((value < 0) | (value >= n_classes))
    if np.any(bad):
        first = value[bad].flat[0]
        raise ValueError(
            f"{fn}: Target {first} is out of bounds: class indices must lie in [0, {n_classes}) "
            f"or equal ignore_index={ignore_index}"
        )


def _picked_terms(
    logp: jax.Array, t: jax.Array, w: jax.Array, ignore_index: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-target ``-w[t] * logp[t]``, the weights ``w[t]``, and the ignore mask.

    Ignored positions give 0 and 0; out-of-range ones (possible only under jit) give NaN.
    """
    class_dim = 0 if logp.ndim == 1 else 1
    n_classes = logp.shape[class_dim]
    ignored = t == ignore_index
    in_range = (t >= 0) & (t < n_classes)
    # Select with a one-hot mask rather than a gather: exact (one non-zero term per sum, and
    # `where` never multiplies a -inf logit by 0), and its transpose is a select, not a scatter.
    class_shape = [n_classes if i == class_dim else 1 for i in range(logp.ndim)]
    one_hot = jnp.expand_dims(t, class_dim) == jnp.arange(n_classes, dtype=t.dtype).reshape(
        class_shape
    )
    picked = jnp.sum(jnp.where(one_hot, logp, 0), axis=class_dim)
    w_t = jnp.sum(jnp.where(one_hot, jnp.reshape(w, class_shape), 0), axis=class_dim)
    nan = jnp.nan
    term = jnp.where(ignored, 0, jnp.where(in_range, -picked * w_t, nan))  # torch: -x[t] * w[t]
    w_t = jnp.where(ignored, 0, jnp.where(in_range, w_t, nan))
    return term, w_t, ignored


def _nll(
    logp: jax.Array, t: jax.Array, w: jax.Array, ignore_index: int, reduction: str
) -> jax.Array:
    term, w_t, _ = _picked_terms(logp, t, w, ignore_index)
    if reduction == "mean":
        return jnp.sum(term) / jnp.sum(w_t)  # 0 / 0 = NaN when every target is ignored (torch)
    if reduction == "sum":
        return jnp.sum(term)
    return term


def nll_loss(
    input: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Negative log-likelihood of class indices, ``torch.nn.functional.nll_loss``.

    For log-probabilities ``input`` of shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)`` and
    integer ``target`` of shape ``()``, ``(N,)`` or ``(N, d1, ...)``:
    ``l_n = -w[y_n] input[n, y_n]`` (0 where ``y_n == ignore_index``); ``'mean'`` is
    ``sum(l) / sum_{n not ignored} w[y_n]`` -- NaN when every target is ignored, as in torch.

    Args:
        input: log-probabilities.
        target: class indices in ``[0, C)`` or ``ignore_index``, any integer dtype.
        weight: optional per-class weight of shape ``(C,)``, ``input``'s dtype.
        ignore_index: target value that contributes neither loss nor weight.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Differences from torch: keyword-only ``ignore_index`` / ``reduction``; any integer target
    dtype; an out-of-range index is a ``ValueError`` eagerly and NaN under ``jax.jit``.
    """
    fn = "nll_loss"
    _check_reduction(fn, reduction)
    ignore_index = _check_static_int(fn, "ignore_index", ignore_index)
    x = _as_input(fn, input)
    t = _check_class_target(fn, x, target)
    n_classes = x.shape[0 if x.ndim == 1 else 1]
    w = _class_weight(fn, weight, x, n_classes)
    _check_target_values(fn, t, n_classes, ignore_index)
    return _nll(x, t, w, ignore_index, reduction)


def cross_entropy(
    input: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> jax.Array:
    """Cross-entropy of logits, ``torch.nn.functional.cross_entropy``.

    ``logp = log_softmax(input, class_dim)`` with ``class_dim`` 0 for a ``(C,)`` input, else 1.

    * Class-index target (shape of ``input`` without the class dim): with ``eps =
      label_smoothing``, ``loss = (1 - eps) nll_loss(logp, y, weight, ignore_index, reduction)
      + (eps / C) S``, where ``s_n = -sum_c w_c logp[n, c]`` (0 for ignored targets) and ``S`` is
      ``s`` reduced like the NLL term -- for ``'mean'`` divided by the same ``sum w[y_n]`` over
      non-ignored targets, exactly as torch does.
    * Probability target (same shape as ``input``, floating): with ``p = (1 - eps) target +
      eps / C``, ``l_n = -sum_c w_c p[n, c] logp[n, c]``; ``'mean'`` divides by the number of
      samples ``numel / C`` (*not* by the weights); ``ignore_index`` must stay negative.

    Args:
        input: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices (any integer dtype) or class probabilities (see above).
        weight: optional per-class weight of shape ``(C,)``, ``input``'s dtype.
        ignore_index: class-index target value that is skipped.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        label_smoothing: ``eps`` in ``[0, 1]`` (a Python number).

    Differences from torch: keyword-only options after ``weight``; any integer target dtype;
    ``label_smoothing < 0`` is a ``ValueError`` (torch ignores it); an out-of-range index is a
    ``ValueError`` eagerly and NaN under ``jax.jit``.
    """
    fn = "cross_entropy"
    _check_reduction(fn, reduction)
    ignore_index = _check_static_int(fn, "ignore_index", ignore_index)
    eps = _check_static_number(fn, "label_smoothing", label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be between 0.0 and 1.0. Got: {eps}")
    x = _as_input(fn, input)
    if x.ndim == 0:
        raise ValueError(f"{fn}: input must have a class dimension, got a 0-d array")
    class_dim = 0 if x.ndim == 1 else 1
    n_classes = x.shape[class_dim]
    w = _class_weight(fn, weight, x, n_classes)
    w_b = jnp.reshape(w, [n_classes if i == class_dim else 1 for i in range(x.ndim)])
    logp = jax.nn.log_softmax(x, axis=class_dim)

    if np.shape(target) == x.shape:  # torch: equal shapes mean class probabilities
        if not jnp.issubdtype(jnp.asarray(target).dtype, jnp.floating):
            raise TypeError(
                f"{fn}: target of shape {x.shape} (equal to input's) holds class probabilities "
                f"and must be floating-point, got {jnp.asarray(target).dtype}"
            )
        if ignore_index >= 0:
            raise ValueError(f"{fn}: ignore_index is not supported for probability targets")
        p = _as_float_like(fn, "target", target, x)
        if eps > 0:
            p = p * (1 - eps) + eps / n_classes
        prod = logp * p * w_b  # torch: (input * target) * weight
        if reduction == "mean":
            return -jnp.sum(prod) / (x.size // n_classes)
        if reduction == "sum":
            return -jnp.sum(prod)
        return -jnp.sum(prod, axis=class_dim)

    t = _check_class_target(fn, x, target)
    _check_target_values(fn, t, n_classes, ignore_index)
    if eps == 0:
        return _nll(logp, t, w, ignore_index, reduction)

    term, w_t, ignored = _picked_terms(logp, t, w, ignore_index)
    smooth = jnp.where(ignored, 0, -jnp.sum(logp * w_b, axis=class_dim))
    if reduction == "mean":
        denominator = jnp.sum(w_t)
        nll, smooth_red = jnp.sum(term) / denominator, jnp.sum(smooth) / denominator
    elif reduction == "sum":
        nll, smooth_red = jnp.sum(term), jnp.sum(smooth)
    else:
        nll, smooth_red = term, smooth
    return (1 - eps) * nll + smooth_red * (eps / n_classes)


# --------------------------------------------------------------------------------------------
# Module forms (torch.nn.*Loss): frozen dataclasses calling the functions above.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class L1Loss:
    """``torch.nn.L1Loss``: ``L1Loss(reduction="sum")(input, target)`` is :func:`l1_loss`."""

    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        _check_reduction("L1Loss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return l1_loss(input, target, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class MSELoss:
    """``torch.nn.MSELoss``: calls :func:`mse_loss`."""

    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        _check_reduction("MSELoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return mse_loss(input, target, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class SmoothL1Loss:
    """``torch.nn.SmoothL1Loss``: calls :func:`smooth_l1_loss`."""

    reduction: Reduction = "mean"
    beta: float = 1.0

    def __post_init__(self) -> None:
        _check_reduction("SmoothL1Loss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


@dataclasses.dataclass(frozen=True, eq=False)
class HuberLoss:
    """``torch.nn.HuberLoss``: calls :func:`huber_loss` (torch's module has no ``weight``)."""

    reduction: Reduction = "mean"
    delta: float = 1.0

    def __post_init__(self) -> None:
        _check_reduction("HuberLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


@dataclasses.dataclass(frozen=True, eq=False)
class BCELoss:
    """``torch.nn.BCELoss``: calls :func:`binary_cross_entropy`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        _check_reduction("BCELoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, eq=False)
class BCEWithLogitsLoss:
    """``torch.nn.BCEWithLogitsLoss``: calls :func:`binary_cross_entropy_with_logits`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    reduction: Reduction = "mean"
    pos_weight: ArrayLike | None = None

    def __post_init__(self) -> None:
        _check_reduction("BCEWithLogitsLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class KLDivLoss:
    """``torch.nn.KLDivLoss``: calls :func:`kl_div` (``'mean'`` is torch's element mean)."""

    reduction: KLReduction = "mean"
    log_target: bool = False

    def __post_init__(self) -> None:
        _check_reduction("KLDivLoss", self.reduction, _KL_REDUCTIONS)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


@dataclasses.dataclass(frozen=True, eq=False)
class NLLLoss:
    """``torch.nn.NLLLoss``: calls :func:`nll_loss`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    ignore_index: int = -100
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        _check_reduction("NLLLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return nll_loss(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


@dataclasses.dataclass(frozen=True, eq=False)
class CrossEntropyLoss:
    """``torch.nn.CrossEntropyLoss``: calls :func:`cross_entropy`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    ignore_index: int = -100
    reduction: Reduction = "mean"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _check_reduction("CrossEntropyLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
