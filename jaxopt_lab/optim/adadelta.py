"""Adadelta, as ``torch.optim.Adadelta``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import complex_params as C
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim import native as _native
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    Bound,
    check_hyperparams,
    check_ignored_flags,
    epsilon,
    is_dynamic,
    learning_rate,
    may_be_nonzero,
    nonnegative,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, l2_weight_decay, leafwise


class AdadeltaState(NamedTuple):
    """``count`` (int32), the running averages of squared gradients and of squared updates."""

    count: jax.Array
    square_avg: Any
    acc_delta: Any


def adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    foreach: bool | None = None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
) -> Optimizer:
    r"""Adadelta (Zeiler, 2012), exactly as torch computes it.

    With :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        g_t &\leftarrow g_t + \lambda\theta_{t-1} \\
        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} \cdot g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \Delta_t

    (:math:`v` is ``square_avg``, :math:`u` is ``acc_delta``.) Each line is torch's op sequence:
    ``square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)``, ``square_avg.add(eps).sqrt_()``,
    ``acc_delta.add(eps).sqrt_().div_(std).mul_(grad)``, the same update of ``acc_delta`` with
    :math:`\Delta_t`, and ``param.add_(delta, alpha=-lr)`` (one fused multiply-add).

    Args:
      lr: :math:`\gamma`, a plain scale of the step (default 1.0, as in the paper, where there
        is no learning rate); number or schedule.
      rho: :math:`\rho`, the decay of both running averages, in :math:`[0, 1]`.
      eps: :math:`\epsilon`, inside both square roots.
      weight_decay: :math:`\lambda` (L2 term added to the gradient).
      foreach: torch switch (positional, as in torch), accepted and ignored.
      maximize: ascend instead of descend.
      capturable, differentiable: torch switches, accepted and ignored; results equal torch's
        default CPU path (``foreach=False``).

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`AdadeltaState`.

    Differences from torch.optim:
      * None in the arithmetic. A dynamic ``weight_decay`` (a schedule, or a traced value) of 0
        skips the L2 term, as torch's ``if weight_decay != 0`` does.
      * optax's ``adadelta`` is the same recursion, L2 decay included, with other roundings
        (moments as ``(1 - rho) x**2 + rho m``, no fused multiply-adds): 1.7e-16 relative apart
        in float64 over 30 steps. Its ``learning_rate`` defaults to ``None``, which returns the
        un-negated step (an ascent); pass ``1.0`` for torch's default.

    Complex params: as torch, the weight decay and the final ``param.add_`` run on the complex
    tensors, the rest on their real view (:mod:`jaxopt_lab.optim.complex_params`).
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    check_hyperparams(
        learning_rate(lr),
        Bound("rho", rho, lambda v: 0.0 <= v <= 1.0, f"Invalid rho value: {rho}"),
        epsilon(eps),
        nonnegative("weight_decay", weight_decay),
    )
    use_decay = may_be_nonzero(weight_decay)
    dynamic_decay = use_decay and is_dynamic(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.zeros_like(p), jnp.zeros_like(p)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        r = math.resolve(rho)
        return {
            "neg_lr": -math.resolve(lr),
            "rho": r,
            "one_minus_rho": 1 - r,
            "eps": math.resolve(eps),
            "weight_decay": math.resolve(weight_decay),
        }

    def update_leaf(p, g, bufs, ctx: LeafContext):
        square_avg, acc_delta = bufs
        s, zero = ctx.scalars, ctx.zero
        g = -g if maximize else g
        if use_decay:
            g = l2_weight_decay(g, p, s["weight_decay"], ctx, dynamic_decay)
        # square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        square_avg = K.addcmul(K.mul(square_avg, s["rho"], zero), g, g, s["one_minus_rho"])
        std = K.sqrt(K.add_scalar(square_avg, s["eps"]))  # square_avg.add(eps).sqrt_()
        delta = K.sqrt(K.add_scalar(acc_delta, s["eps"]))  # acc_delta.add(eps).sqrt_()
        delta = K.multiply(K.divide(delta, std, zero), g, zero)  # delta.div_(std).mul_(grad)
        # acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        acc_delta = K.addcmul(K.mul(acc_delta, s["rho"], zero), delta, delta, s["one_minus_rho"])
        # param.add_(delta, alpha=-lr): on the complex param (view_as_complex(delta)) if complex
        if ctx.complex:
            p = C.add(p, delta, s["neg_lr"], zero)
        else:
            p = K.add(p, delta, s["neg_lr"])
        return p, (square_avg, acc_delta)

    decay = _native.decay_mode(use_decay, False, dynamic_decay)
    target, names = "jaxopt_lab_adadelta_f32", _native.ADADELTA_SCALARS
    many = _native.leaf_updates(target, update_leaf, names, decay, maximize)
    return leafwise("adadelta", init_leaf, update_leaf, scalars, AdadeltaState, update_leaves=many)
