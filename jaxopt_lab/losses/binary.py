"""Binary cross-entropy, on probabilities and on logits, with torch's backward formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxopt_lab.losses.checks import (
    Reduction,
    as_float_like,
    as_input,
    broadcast_weight,
    check_reduction,
    check_same_shape,
    concrete_value,
    reduce_loss,
)

# torch clamps BCE's logs at -100 and the denominator of its gradient at ATen's
# `constexpr float EPSILON = 1e-12` (Loss.cpp) -- a float32 constant, also in float64 (the
# float64 gradient at an input of exactly 0 or 1 is off by 4e-9 relative with the double 1e-12).
_BCE_LOG_FLOOR = -100.0
_BCE_GRAD_EPS = float(np.float32(1e-12))


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

    Returns:
      The loss: ``input``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only ``reduction``; an input outside ``[0, 1]`` raises ``ValueError`` eagerly (torch:
      ``RuntimeError``) and gives NaN under ``jax.jit``.
    """
    fn = "binary_cross_entropy"
    check_reduction(fn, reduction)
    x = as_input(fn, input)
    y = as_float_like(fn, "target", target, x)
    check_same_shape(fn, "target", y, x)
    value = concrete_value(x)
    if value is not None and not np.all((value >= 0) & (value <= 1)):
        raise ValueError(f"{fn}: all elements of input should be between 0 and 1")
    loss = _bce(x, y)
    if weight is not None:
        loss = loss * broadcast_weight(fn, "weight", as_float_like(fn, "weight", weight, x), x)
    return reduce_loss(loss, reduction)


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

    Returns:
      The loss: ``input``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only ``reduction`` / ``pos_weight``; ``weight`` and ``pos_weight`` must broadcast *to*
      the input's shape (torch may broadcast the loss larger).
    """
    fn = "binary_cross_entropy_with_logits"
    check_reduction(fn, reduction)
    x = as_input(fn, input)
    y = as_float_like(fn, "target", target, x)
    check_same_shape(fn, "target", y, x)
    if pos_weight is None:
        loss = _bce_logits(x, y)
    else:
        pw = as_float_like(fn, "pos_weight", pos_weight, x)
        loss = _bce_logits_pw(x, y, broadcast_weight(fn, "pos_weight", pw, x))
    if weight is not None:
        loss = loss * broadcast_weight(fn, "weight", as_float_like(fn, "weight", weight, x), x)
    return reduce_loss(loss, reduction)
