"""RAdam (rectified Adam, and RAdamW), as ``torch.optim.RAdam``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim import native as _native
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_adam_family,
    check_ignored_flags,
    is_dynamic,
    may_be_nonzero,
)
from jaxopt_lab.optim.leafwise import (
    LeafContext,
    ScalarMath,
    computed_once,
    constant_scalars,
    l2_weight_decay,
    leafwise,
)

# A host table of torch's ``rho_t > 5`` longer than this falls back to the traced comparison
# (only for 1 - beta2 below ~1e-13, where torch's rho_t is rounding noise anyway).
_MAX_TABLE = 1 << 16


class RAdamState(NamedTuple):
    """``count`` (int32) and the first and second moments."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def radam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> Optimizer:
    r"""RAdam (Liu et al., 2019), exactly as torch computes it.

    With :math:`t` the 1-based step and :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        \theta &\leftarrow \theta (1 - \gamma\lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\theta \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1), \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \rho_\infty &= 2 / (1 - \beta_2) - 1, \quad
        \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
        u_t &= \bigl(m_t / (1 - \beta_1^t)\bigr) \cdot \gamma \\
        \theta_t &= \theta - u_t \cdot \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon}
            \cdot r_t \text{ if } \rho_t > 5 \text{, else } \theta - u_t, \qquad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
            {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}

    Each factor is rounded as torch rounds it: :math:`1 - \beta_1^t`, :math:`\gamma`,
    :math:`\sqrt{1 - \beta_2^t}`, :math:`r_t` and :math:`1 - \gamma\lambda` are Python doubles
    rounded once; ``m / bc1``, ``* lr``, ``reciprocal(sqrt(v) + eps)`` (torch's
    ``scalar / tensor``), ``* sqrt(bc2)``, ``* adaptive`` and ``* r_t`` are each one rounded
    tensor op, and ``param.add_(update, alpha=-1)`` the last.

    The branch :math:`\rho_t > 5` depends only on the step. With a numeric :math:`\beta_2` it is
    decided exactly: torch's own double-precision :math:`\rho_t` is evaluated on the host for
    :math:`t = 1, 2, \ldots` until it exceeds 5 by more than its rounding error can reach (the
    exact :math:`\rho_t` increases with :math:`t`), and the step looks its answer up in that
    table (``rho_t > 5`` first holds at :math:`t = 6` for :math:`\beta_2 = 0.999`; never for
    :math:`\beta_2 \le 2/3`). A scheduled :math:`\beta_2` is compared in the traced
    double-precision arithmetic instead (exact unless :math:`\rho_t` is within ~1e-13 relative
    of 5).

    Args:
      lr: learning rate :math:`\gamma` (number or schedule).
      betas: :math:`(\beta_1, \beta_2)`, each a number or a schedule.
      eps: :math:`\epsilon`, added to :math:`\sqrt{v_t}` (only used by rectified steps).
      weight_decay: :math:`\lambda`.
      decoupled_weight_decay: decay the params (RAdamW) instead of adding :math:`\lambda\theta`
        to the gradient.
      maximize: ascend instead of descend.
      foreach, capturable, differentiable: torch implementation switches, accepted and
        ignored; results equal torch's default CPU path (``foreach=False``).

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`RAdamState`.

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * Scalars without x64 (float32 leaves): :math:`r_t` is computed in double-single arithmetic
        with :math:`\beta^t` built from host-computed doubles :math:`\beta^{2^k}`; it equals
        torch's double rounded to float32 at every one of 20,000 steps for
        :math:`\beta_2 \in \{0.7, 0.9, 0.95, 0.99, 0.999, 0.9999\}`. For
        :math:`\beta_2 \ge 0.99999` torch's :math:`\rho_t` cancels
        :math:`\rho_\infty \approx 2/(1-\beta_2)` against a term of the same size, so the last
        bit of its ``pow`` decides :math:`r_t`'s float32 rounding on some steps (measured: 17
        of 20,000 steps 1 ULP apart at 0.99999, 259 at 0.999999).
      * A dynamic ``weight_decay`` (a schedule, or a traced value) of 0 skips the L2 term, as
        torch's ``if weight_decay != 0`` does (the decoupled factor ``1 - lr * 0`` is exact).
      * optax's ``radam`` adds ``eps`` to the bias-corrected :math:`\sqrt{v_t/(1-\beta_2^t)}`
        (torch: to :math:`\sqrt{v_t}`, i.e. an effective
        :math:`\epsilon/\sqrt{1-\beta_2^t}` there), rectifies when :math:`\rho_t \ge 5`
        (torch: :math:`> 5`; equal unless :math:`\rho_t` is exactly 5) and has no weight decay
        (``optax.chain(optax.add_decayed_weights(wd), optax.radam(lr))`` is torch's coupled
        decay). Measured in float64, 30 steps of gradients 1e-3..1e3: 1.5e-10 relative apart
        with the default ``eps``, 1e-16 (rounding) with ``eps=0``.

    Complex params are stepped on their real view, as torch does (all of RAdam's arithmetic,
    weight decay included, runs after torch's ``view_as_real``).
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    beta1, beta2 = check_adam_family(lr, betas, eps, weight_decay)
    use_decay = may_be_nonzero(weight_decay)
    dynamic_decay = use_decay and is_dynamic(weight_decay)
    table = None if is_dynamic(beta2) else rectified_steps(float(beta2))

    def init_leaf(p: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.zeros_like(p), jnp.zeros_like(p)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        b1, b2, lr_ = math.resolve(beta1), math.resolve(beta2), math.resolve(lr)
        step = math.step
        beta2_t = math.pow(b2, math.count + 1)
        bias_correction1 = 1 - math.pow(b1, math.count + 1)
        bias_correction2 = 1 - beta2_t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * step * beta2_t / bias_correction2
        if table is not None:
            rectify = jnp.asarray(table)[jnp.minimum(math.count, len(table) - 1)]
        else:
            rectify = _double.greater_than(rho_t, 5.0)
        radicand = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        return {
            "one_minus_beta1": 1 - b1,
            "beta2": b2,
            "one_minus_beta2": 1 - b2,
            "eps": math.resolve(eps),
            "weight_decay": math.resolve(weight_decay),
            "decay": 1 - lr_ * math.resolve(weight_decay),
            "lr": lr_,
            "bias_correction1": bias_correction1,
            "bias_correction2_sqrt": math.sqrt(bias_correction2),
            # unrectified steps never use r_t; 1 keeps its NaN out of derivatives through `where`
            "rect": math.sqrt(_double.where(rectify, radicand, 1.0)),
            "rectify": rectify,
            "minus_one": -1.0,
        }

    # The scalars that are numbers whatever the step: XLA folds them into the loops.
    constant = constant_scalars(
        {
            "one_minus_beta1": (beta1,),
            "beta2": (beta2,),
            "one_minus_beta2": (beta2,),
            "eps": (eps,),
            "weight_decay": (weight_decay,),
            "decay": (lr, weight_decay),
            "lr": (lr,),
            "minus_one": (),
        }
    )

    def rule(p, g, bufs, s, ctx: LeafContext):
        exp_avg, exp_avg_sq = bufs
        zero = ctx.zero
        g = -g if maximize else g
        if use_decay:
            if decoupled_weight_decay:
                p = K.mul(p, s["decay"], zero)  # param.mul_(1 - lr * weight_decay): exact at 0
            else:
                # grad.add(param, alpha=weight_decay), on the real views: torch's RAdam takes
                # view_as_real before the decay (Adam, Adadelta, ... decay the complex tensors)
                real = ctx._replace(complex=False)
                g = l2_weight_decay(g, p, s["weight_decay"], real, dynamic_decay)
        exp_avg = K.lerp(exp_avg, g, s["one_minus_beta1"])
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg_sq = K.addcmul(K.mul(exp_avg_sq, s["beta2"], zero), g, g, s["one_minus_beta2"])
        # (exp_avg / bias_correction1) * lr
        step = K.mul(K.div(exp_avg, s["bias_correction1"], zero), s["lr"], zero)
        # (bias_correction2 ** 0.5) / exp_avg_sq.sqrt().add_(eps): Tensor.__rtruediv__ is
        # ``reciprocal() * scalar``, two roundings.
        denom = K.add_scalar(K.sqrt(exp_avg_sq), s["eps"])
        adaptive = K.mul(K.reciprocal(denom), s["bias_correction2_sqrt"], zero)
        rectified = K.mul(K.multiply(step, adaptive, zero), s["rect"], zero)  # step * ada * rect
        # param.add_(..., alpha=-1.0), on either branch of ``rho_t > 5``
        p = jnp.where(
            s["rectify"] > 0, K.add(p, rectified, s["minus_one"]), K.add(p, step, s["minus_one"])
        )
        return p, (exp_avg, exp_avg_sq)

    def update_leaf(p, g, bufs, ctx: LeafContext):
        return rule(p, g, bufs, computed_once(ctx.scalars, ctx.zero, constant), ctx)

    # The kernel route: the scalars computed once for all the leaves, then one rule per leaf
    # that reads them from its context (in the kernel's rule, only the packed RADAM_SCALARS).
    routed = _native.leaf_updates(
        "jaxopt_lab_radam_f32",
        lambda p, g, bufs, ctx: rule(p, g, bufs, {**ctx.scalars, "minus_one": -1.0}, ctx),
        _native.RADAM_SCALARS,
        _native.decay_mode(use_decay, decoupled_weight_decay, dynamic_decay),
        maximize,
    )

    def update_leaves(ps, gs, bufs, ctx: LeafContext):
        return routed(
            ps, gs, bufs, ctx._replace(scalars=computed_once(ctx.scalars, ctx.zero, constant))
        )

    return leafwise(
        "radam", init_leaf, update_leaf, scalars, RAdamState, update_leaves=update_leaves
    )


def rectified_steps(beta2: float) -> np.ndarray:
    """torch's ``rho_t > 5`` (Python doubles) for ``t = 1, 2, ...``; the last entry holds on.

    The exact :math:`\\rho_t` increases with :math:`t`, and the rounding error of torch's
    expression is below ``bound`` (a few units in the last place of each operand, the
    ``1 - beta2**t`` cancellation included). Once the computed value exceeds 5 by twice that
    bound, every later exact value exceeds 5 by more than its own (smaller) bound, so every later
    computed value is above 5 too. Once ``beta2**t`` underflows, :math:`\\rho_t = \\rho_\\infty`.
    Returns ``None`` when the table would be longer than ``_MAX_TABLE``.
    """
    rho_inf = 2 / (1 - beta2) - 1
    if not rho_inf > 5.0:  # rho_t = rho_inf - (a term >= 0) <= rho_inf, in doubles too
        return np.zeros(1, dtype=bool)
    ulp = 2.0**-52
    flags = []
    for t in range(1, _MAX_TABLE + 1):
        step = float(t)
        power = beta2**step
        bias_correction2 = 1 - beta2**step
        term = 2 * step * power / bias_correction2  # torch's expression, as torch groups it
        rho_t = rho_inf - term
        flags.append(rho_t > 5.0)
        if power == 0.0:
            break
        bound = 4 * ulp * (abs(rho_inf) + abs(term) * (2 + 1 / bias_correction2) + 8)
        if rho_t > 5.0 + 2 * bound:
            break
    else:
        return None
    return np.asarray(flags, dtype=bool)
