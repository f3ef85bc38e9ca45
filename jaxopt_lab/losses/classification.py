"""Losses on class targets: negative log-likelihood and cross-entropy (class indices or class
probabilities, label smoothing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxopt_lab.losses.checks import (
    Reduction,
    as_float_like,
    as_input,
    check_reduction,
    check_static_int,
    check_static_number,
    concrete_value,
)


def _class_weight(fn: str, weight: ArrayLike | None, x: jax.Array, n_classes: int) -> jax.Array:
    if weight is None:
        return jnp.ones((n_classes,), x.dtype)
    w = as_float_like(fn, "weight", weight, x)
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
    value = concrete_value(t)
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

    Returns:
      The loss: ``target``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only ``ignore_index`` / ``reduction``; any integer target dtype; an out-of-range index
      is a ``ValueError`` eagerly and NaN under ``jax.jit``.
    """
    fn = "nll_loss"
    check_reduction(fn, reduction)
    ignore_index = check_static_int(fn, "ignore_index", ignore_index)
    x = as_input(fn, input)
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

    Returns:
      The loss: ``input``'s shape without the class dim for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only options after ``weight``; any integer target dtype; ``label_smoothing < 0`` is a
      ``ValueError`` (torch ignores it); an out-of-range index is a ``ValueError`` eagerly and NaN
      under ``jax.jit``.
    """
    fn = "cross_entropy"
    check_reduction(fn, reduction)
    ignore_index = check_static_int(fn, "ignore_index", ignore_index)
    eps = check_static_number(fn, "label_smoothing", label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be between 0.0 and 1.0. Got: {eps}")
    x = as_input(fn, input)
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
        p = as_float_like(fn, "target", target, x)
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
