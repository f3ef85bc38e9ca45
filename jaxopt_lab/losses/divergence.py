"""The Kullback-Leibler divergence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxopt_lab.losses.checks import (
    KL_REDUCTIONS,
    KLReduction,
    as_float_like,
    as_input,
    check_reduction,
    check_same_shape,
    reduce_loss,
)


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

    Returns:
      The loss: ``input``'s shape for ``'none'``, else a 0-d array.

    Differences from torch:
      Keyword-only options; ``'mean'`` keeps torch's semantics but does not emit torch's
      ``UserWarning`` (use ``'batchmean'`` for the true KL divergence).
    """
    fn = "kl_div"
    check_reduction(fn, reduction, KL_REDUCTIONS)
    if not isinstance(log_target, (bool, np.bool_)):
        raise TypeError(f"{fn}: log_target must be a bool, got {type(log_target).__name__}")
    x = as_input(fn, input)
    t = as_float_like(fn, "target", target, x)
    check_same_shape(fn, "target", t, x)
    if log_target:
        loss = jnp.exp(t) * (t - x)
    else:
        loss = jax.scipy.special.xlogy(t, t) - t * x
    if reduction == "batchmean":
        total = jnp.sum(loss)
        return total / x.shape[0] if x.ndim > 0 else total
    return reduce_loss(loss, reduction)
