"""Adam, AdamW and AMSGrad, as ``torch.optim.Adam`` / ``torch.optim.AdamW``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import complex_params as C
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim import native as _native
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_adam_family,
    check_ignored_flags,
    may_be_nonzero,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, leafwise


class AdamState(NamedTuple):
    """``count`` (int32), first/second moments, and the running max of the second (AMSGrad)."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> Optimizer:
    r"""Adam (and AMSGrad, and AdamW via ``decoupled_weight_decay``), exactly as torch computes it.

    With :math:`t` the 1-based step, :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        \theta &\leftarrow \theta (1 - \gamma\lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\theta \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ (AMSGrad) else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \cdot
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    The scalars :math:`\gamma/(1-\beta_1^t)`, :math:`\sqrt{1-\beta_2^t}` and
    :math:`1-\gamma\lambda` are computed in double precision and rounded once, as torch does
    in Python.

    Args:
      lr: learning rate :math:`\gamma` (number or schedule).
      betas: :math:`(\beta_1, \beta_2)`, each a number or a schedule (OneCycleLR cycles
        :math:`\beta_1`).
      eps: :math:`\epsilon`, added *outside* the square root.
      weight_decay: :math:`\lambda`.
      amsgrad: keep the running maximum of :math:`v_t` (of the raw, not bias-corrected, value).
      maximize: ascend instead of descend.
      decoupled_weight_decay: AdamW's decay of the params instead of an L2 gradient term.
      foreach, capturable, differentiable, fused: torch implementation switches, accepted and
        ignored; results equal torch's default CPU path (``foreach=False``). torch's
        ``fused=True`` and ``differentiable=True`` use other formulas (``fused`` differs from
        the default path by a few ULP in float32).

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`AdamState`.

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * optax's ``amsgrad`` takes the max of the *bias-corrected* :math:`\hat\nu`; torch (and
        this) the max of the raw :math:`v_t`. optax's ``adamw`` defaults to ``weight_decay=1e-4``
        and scales the decay by the scheduled lr only; torch's default is ``1e-2``.
    """
    check_ignored_flags(foreach, fused, capturable, differentiable)
    beta1, beta2 = check_adam_family(lr, betas, eps, weight_decay)
    use_decay = may_be_nonzero(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[Any, ...]:
        # One array per buffer: aliased buffers could not be donated together.
        return jnp.zeros_like(p), jnp.zeros_like(p), (jnp.zeros_like(p) if amsgrad else None)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        b1, b2, lr_ = math.resolve(beta1), math.resolve(beta2), math.resolve(lr)
        bias_correction1 = 1 - math.pow(b1, math.count + 1)
        bias_correction2 = 1 - math.pow(b2, math.count + 1)
        return {
            "one_minus_beta1": 1 - b1,
            "beta2": b2,
            "one_minus_beta2": 1 - b2,
            "eps": math.resolve(eps),
            "weight_decay": math.resolve(weight_decay),
            "decay": 1 - lr_ * math.resolve(weight_decay),
            "neg_step_size": -(lr_ / bias_correction1),
            "bias_correction2_sqrt": math.sqrt(bias_correction2),
        }

    def rule(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, s, zero, is_complex=False):
        g = -g if maximize else g
        if use_decay:  # on the complex tensors, before torch's view_as_real
            if decoupled_weight_decay:  # param.mul_(1 - lr * weight_decay)
                p = (C.mul if is_complex else K.mul)(p, s["decay"], zero)
            elif is_complex:  # grad.add(param, alpha=weight_decay)
                g = C.add(g, p, s["weight_decay"], zero)
            else:
                g = K.add(g, p, s["weight_decay"])
        exp_avg = K.lerp(exp_avg, g, s["one_minus_beta1"])
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg_sq = K.addcmul(K.mul(exp_avg_sq, s["beta2"], zero), g, g, s["one_minus_beta2"])
        second = exp_avg_sq
        if amsgrad:
            max_exp_avg_sq = K.maximum(max_exp_avg_sq, exp_avg_sq)
            second = max_exp_avg_sq
        # denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        denom = K.add_scalar(K.div(K.sqrt(second), s["bias_correction2_sqrt"], zero), s["eps"])
        p = K.addcdiv(p, exp_avg, denom, s["neg_step_size"])
        return p, exp_avg, exp_avg_sq, max_exp_avg_sq

    def update_leaf(p, g, bufs, ctx: LeafContext):
        p, exp_avg, exp_avg_sq, max_exp_avg_sq = rule(
            p, g, *bufs, ctx.scalars, ctx.zero, ctx.complex
        )
        return p, (exp_avg, exp_avg_sq, max_exp_avg_sq)

    update_leaves = _native.leaf_updates(
        "jaxopt_lab_amsgrad_f32" if amsgrad else "jaxopt_lab_adam_f32",
        update_leaf,
        _native.ADAM_SCALARS,
        _native.decay_mode(use_decay, decoupled_weight_decay),
        maximize,
    )
    name = "adamw" if decoupled_weight_decay else "adam"
    return leafwise(name, init_leaf, update_leaf, scalars, AdamState, update_leaves=update_leaves)


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> Optimizer:
    r"""AdamW: :func:`adam` with ``decoupled_weight_decay=True`` and torch's default decay 1e-2.

    The params are first scaled by :math:`1 - \gamma\lambda` (rounded once from double), then
    the Adam step is taken. See :func:`adam` for the equations and the differences note.
    """
    return adam(
        lr,
        betas,
        eps,
        weight_decay,
        amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        foreach=foreach,
        capturable=capturable,
        differentiable=differentiable,
        fused=fused,
    )
