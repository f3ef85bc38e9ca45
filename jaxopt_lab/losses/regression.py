"""Regression losses: L1, MSE, smooth L1 and Huber, with torch's backward formulas."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_lab.losses.checks import (
    Reduction,
    as_float_like,
    as_input,
    check_reduction,
    check_same_shape,
    check_static_number,
    reduce_loss,
)

# Element-wise kernels with torch's backward formulas.


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


def _regression_operands(
    fn: str, input: ArrayLike, target: ArrayLike, weight: ArrayLike | None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    x = as_input(fn, input)
    y = as_float_like(fn, "target", target, x)
    check_same_shape(fn, "target", y, x)
    w = None
    if weight is not None:
        w = as_float_like(fn, "weight", weight, x)
        check_same_shape(fn, "weight", w, x)
    return x, y, w


def _weighted_reduce(
    loss: jax.Array, w: jax.Array | None, reduction: str, *, mean_by_weight: bool
) -> jax.Array:
    """``w * loss`` reduced as torch does: a weighted ``'mean'`` divides by the sum of the
    weights for L1 and MSE (``mean_by_weight``), by the element count for Huber."""
    if w is None:
        return reduce_loss(loss, reduction)
    loss = loss * w
    if reduction == "mean" and mean_by_weight:
        return jnp.sum(loss) / jnp.sum(w)
    return reduce_loss(loss, reduction)


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

    Returns:
      The loss: ``input``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only options; no broadcasting of ``target``.
    """
    check_reduction("l1_loss", reduction)
    x, y, w = _regression_operands("l1_loss", input, target, weight)
    return _weighted_reduce(_abs(x - y), w, reduction, mean_by_weight=True)


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

    Returns:
      The loss: ``input``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only options; no broadcasting of ``target``.
    """
    check_reduction("mse_loss", reduction)
    x, y, w = _regression_operands("mse_loss", input, target, weight)
    d = x - y
    return _weighted_reduce(d * d, w, reduction, mean_by_weight=True)


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

    Returns:
      The loss: ``input``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only options; no broadcasting of ``target``; a negative ``beta`` is a ``ValueError``
      (torch: ``RuntimeError``).
    """
    fn = "smooth_l1_loss"
    check_reduction(fn, reduction)
    beta = check_static_number(fn, "beta", beta)
    if not beta >= 0:
        raise ValueError(f"{fn} does not support negative values for beta (got {beta})")
    x, y, _ = _regression_operands(fn, input, target, None)
    d = x - y
    loss = _abs(d) if beta == 0 else _smooth_l1(d, beta)
    return reduce_loss(loss, reduction)


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

    Returns:
      The loss: ``input``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      No broadcasting of ``target``; a non-positive ``delta`` is a ``ValueError`` (torch:
      ``RuntimeError``).
    """
    fn = "huber_loss"
    check_reduction(fn, reduction)
    delta = check_static_number(fn, "delta", delta)
    if not delta > 0:
        raise ValueError(f"{fn} does not support non-positive values for delta (got {delta})")
    x, y, w = _regression_operands(fn, input, target, weight)
    return _weighted_reduce(_huber(x - y, delta), w, reduction, mean_by_weight=False)
