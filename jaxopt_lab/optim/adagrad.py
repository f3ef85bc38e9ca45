"""Adagrad with learning-rate decay, as ``torch.optim.Adagrad``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import complex_params as C
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_hyperparams,
    check_ignored_flags,
    epsilon,
    learning_rate,
    may_be_nonzero,
    nonnegative,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, leafwise


class AdagradState(NamedTuple):
    """``count`` (int32) and ``sum``, the running sum of squared gradients."""

    count: jax.Array
    sum: Any


def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: ScalarOrSchedule = 1e-10,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
) -> Optimizer:
    r"""Adagrad exactly as torch computes it.

    .. math::

        g_t &\leftarrow g_t + \lambda\theta_{t-1} \\
        \tilde\gamma &= \gamma / (1 + (t - 1)\eta) \quad \text{(double precision, rounded once)} \\
        s_t &= s_{t-1} + g_t^2 \\
        \theta_t &= \theta_{t-1} - \tilde\gamma\, g_t / (\sqrt{s_t} + \epsilon)

    Args:
      lr: :math:`\gamma`; lr_decay: :math:`\eta`; weight_decay: :math:`\lambda`.
      initial_accumulator_value: the starting value of :math:`s`.
      eps: :math:`\epsilon`, added outside the square root.
      maximize: ascend instead of descend.
      foreach, differentiable, fused: torch switches, accepted and ignored.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`AdagradState`.

    Differences from torch.optim:
      * Sparse gradients do not exist in JAX; dense is the only path. optax's ``adagrad``
        starts the accumulator at 0.1 and puts ``eps`` inside the square root.
    """
    check_ignored_flags(foreach, fused, False, differentiable)
    check_hyperparams(
        learning_rate(lr),
        nonnegative("lr_decay", lr_decay),
        nonnegative("weight_decay", weight_decay),
        nonnegative("initial_accumulator_value", initial_accumulator_value),
        epsilon(eps),
    )
    use_decay = may_be_nonzero(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[jax.Array]:
        return (jnp.full_like(p, initial_accumulator_value),)  # torch.full_like

    def scalars(math: ScalarMath) -> dict[str, Any]:
        clr = math.resolve(lr) / (1 + (math.step - 1) * math.resolve(lr_decay))
        return {
            "neg_clr": -clr,
            "eps": math.resolve(eps),
            "weight_decay": math.resolve(weight_decay),
            "one": 1.0,
        }

    def update_leaf(p, g, bufs, ctx: LeafContext):
        (state_sum,) = bufs
        s = ctx.scalars
        g = -g if maximize else g
        if use_decay:  # grad.add(param, alpha=wd), on the complex tensors for a complex param
            if ctx.complex:
                g = C.add(g, p, s["weight_decay"], ctx.zero)
            else:
                g = K.add(g, p, s["weight_decay"])
        state_sum = K.addcmul(state_sum, g, g, s["one"])  # state_sum.addcmul_(grad, grad, 1)
        std = K.add_scalar(K.sqrt(state_sum), s["eps"])  # state_sum.sqrt().add_(eps)
        return K.addcdiv(p, g, std, s["neg_clr"]), (state_sum,)  # addcdiv_(.., value=-clr)

    return leafwise("adagrad", init_leaf, update_leaf, scalars, AdagradState)
