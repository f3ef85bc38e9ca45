"""Adamax (Adam with an infinity norm), as ``torch.optim.Adamax``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim import native as _native
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_adam_family,
    check_ignored_flags,
    is_dynamic,
    may_be_nonzero,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, l2_weight_decay, leafwise


class AdamaxState(NamedTuple):
    """``count`` (int32), the first moment and the exponentially weighted infinity norm."""

    count: jax.Array
    exp_avg: Any
    exp_inf: Any


def adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> Optimizer:
    r"""Adamax (Kingma & Ba, 2015, section 7), exactly as torch computes it.

    With :math:`t` the 1-based step and :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        g_t &\leftarrow g_t + \lambda\theta_{t-1} \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1) \\
        u_t &= \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \cdot \frac{m_t}{u_t}

    :math:`\gamma / (1 - \beta_1^t)` is computed in double precision and rounded once, as torch
    does in Python. The maximum is ``torch.maximum`` (and, with ``differentiable=True``,
    ``torch.amax``, the same values): a NaN on either side gives NaN, so a NaN gradient
    poisons :math:`u` for good, in torch as here (the NaN's sign and payload may differ).

    Args:
      lr: learning rate :math:`\gamma` (number or schedule).
      betas: :math:`(\beta_1, \beta_2)`, each a number or a schedule.
      eps: :math:`\epsilon`, added to :math:`|g_t|` *inside* the maximum (not to the
        denominator): :math:`u_t \ge \epsilon` after the first step.
      weight_decay: :math:`\lambda` (L2 term added to the gradient).
      foreach: torch switch (here positional, as in torch), accepted and ignored.
      maximize: ascend instead of descend.
      differentiable, capturable: torch switches, accepted and ignored; results equal torch's
        default CPU path (``foreach=False``).

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`AdamaxState`.

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * A dynamic ``weight_decay`` (a schedule, or a traced value) of 0 skips the L2 term, as
        torch's ``if weight_decay != 0`` does.
      * optax's ``adamax`` is the same algorithm (``eps`` inside the maximum too) with other
        roundings (its moment is ``(1 - b1) g + b1 m``, not a ``lerp``; it divides by the bias
        correction, then by :math:`u`, then scales by ``lr``): 6e-17 relative apart in float64
        over 30 steps. It has no weight decay: ``optax.chain(optax.add_decayed_weights(wd),
        optax.adamax(lr))`` is torch's; ``optax.adamaxw`` decays decoupled (6e-3 apart).

    Complex params: as torch, the weight decay runs on the complex tensors and the rest on
    their real view (:mod:`jaxopt_lab.optim.complex_params`).
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    beta1, beta2 = check_adam_family(lr, betas, eps, weight_decay)
    use_decay = may_be_nonzero(weight_decay)
    dynamic_decay = use_decay and is_dynamic(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.zeros_like(p), jnp.zeros_like(p)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        b1 = math.resolve(beta1)
        bias_correction = 1 - math.pow(b1, math.count + 1)
        return {
            "one_minus_beta1": 1 - b1,
            "beta2": math.resolve(beta2),
            "eps": math.resolve(eps),
            "weight_decay": math.resolve(weight_decay),
            "neg_clr": -(math.resolve(lr) / bias_correction),
        }

    def update_leaf(p, g, bufs, ctx: LeafContext):
        exp_avg, exp_inf = bufs
        s, zero = ctx.scalars, ctx.zero
        g = -g if maximize else g
        if use_decay:
            g = l2_weight_decay(g, p, s["weight_decay"], ctx, dynamic_decay)
        exp_avg = K.lerp(exp_avg, g, s["one_minus_beta1"])
        # torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)
        exp_inf = K.maximum(K.mul(exp_inf, s["beta2"], zero), K.add_scalar(jnp.abs(g), s["eps"]))
        p = K.addcdiv(p, exp_avg, exp_inf, s["neg_clr"])  # param.addcdiv_(.., value=-clr)
        return p, (exp_avg, exp_inf)

    decay = _native.decay_mode(use_decay, False, dynamic_decay)
    target, names = "jaxopt_lab_adamax_f32", _native.ADAMAX_SCALARS
    many = _native.leaf_updates(target, update_leaf, names, decay, maximize)
    return leafwise("adamax", init_leaf, update_leaf, scalars, AdamaxState, update_leaves=many)
