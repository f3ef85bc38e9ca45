"""RMSprop (plain, centered, with momentum), as ``torch.optim.RMSprop``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_hyperparams,
    check_ignored_flags,
    epsilon,
    is_dynamic,
    learning_rate,
    may_be_nonzero,
    nonnegative,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, l2_weight_decay, leafwise


class RMSpropState(NamedTuple):
    """``count`` (int32); ``square_avg``; ``momentum_buffer`` and ``grad_avg`` when used."""

    count: jax.Array
    square_avg: Any
    momentum_buffer: Any
    grad_avg: Any


def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: ScalarOrSchedule = 0.99,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    momentum: ScalarOrSchedule = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
) -> Optimizer:
    r"""RMSprop exactly as torch computes it.

    .. math::

        g_t &\leftarrow g_t + \lambda\theta_{t-1} \\
        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        \bar g_t &= \operatorname{lerp}(\bar g_{t-1}, g_t, 1 - \alpha) \text{ (centered)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) else } \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
            \text{ (momentum) else } \theta_t = \theta_{t-1} - \gamma g_t / d_t

    Args:
      lr, alpha, eps, weight_decay, momentum: as torch (numbers or schedules).
      centered: normalize by the estimated variance instead of the second moment.
      maximize: ascend instead of descend.
      foreach, capturable, differentiable: torch switches, accepted and ignored.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`RMSpropState`.

    Complex params: as torch, the weight decay runs on the complex tensors and the rest on
    their real view (:mod:`jaxopt_lab.optim.complex_params`).

    Differences from torch.optim:
      * None in the arithmetic. optax's ``rmsprop`` puts ``eps`` inside the square root by
        default (``eps_in_sqrt=True``), initializes the accumulator with ``initial_scale`` and
        applies momentum to the already-scaled update: see the README's difference table.
      * A dynamic ``momentum`` (a schedule, or a traced value as ``optax.inject_hyperparams``
        passes) always keeps a buffer; at a step where it is 0 the update is torch's
        ``momentum=0`` step, bit for bit, and the buffer is left as it was. A dynamic
        ``weight_decay`` of 0 skips the decay term, as torch does.
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    check_hyperparams(
        learning_rate(lr),
        epsilon(eps),
        nonnegative("momentum", momentum),
        nonnegative("weight_decay", weight_decay),
        nonnegative("alpha", alpha),
    )
    use_momentum = may_be_nonzero(momentum)  # torch: `if momentum > 0` (checked >= 0 above)
    use_decay = may_be_nonzero(weight_decay)
    dynamic_momentum = use_momentum and is_dynamic(momentum)
    dynamic_decay = use_decay and is_dynamic(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[Any, ...]:
        fresh = jnp.zeros_like  # one array per buffer, so the state can be donated
        return fresh(p), (fresh(p) if use_momentum else None), (fresh(p) if centered else None)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        a = math.resolve(alpha)
        return {
            "neg_lr": -math.resolve(lr),
            "alpha": a,
            "one_minus_alpha": 1 - a,
            "eps": math.resolve(eps),
            "weight_decay": math.resolve(weight_decay),
            "momentum": math.resolve(momentum),
            "one": 1.0,
            "minus_one": -1.0,
        }

    def update_leaf(p, g, bufs, ctx: LeafContext):
        square_avg, buf, grad_avg = bufs
        s = ctx.scalars
        g = -g if maximize else g
        if use_decay:
            g = l2_weight_decay(g, p, s["weight_decay"], ctx, dynamic_decay)
        # square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        square_avg = K.addcmul(K.mul(square_avg, s["alpha"], ctx.zero), g, g, s["one_minus_alpha"])
        if centered:
            grad_avg = K.lerp(grad_avg, g, s["one_minus_alpha"])
            # square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            avg = K.sqrt(K.addcmul(square_avg, grad_avg, grad_avg, s["minus_one"]))
        else:
            avg = K.sqrt(square_avg)
        avg = K.add_scalar(avg, s["eps"])

        def with_momentum():
            # buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
            new_buf = K.addcdiv(K.mul(buf, s["momentum"], ctx.zero), g, avg, s["one"])
            return K.add(p, new_buf, s["neg_lr"]), new_buf

        def without():
            return K.addcdiv(p, g, avg, s["neg_lr"]), buf  # param.addcdiv_(grad, avg, -lr)

        if dynamic_momentum:
            # torch's `if momentum > 0`, at run time. A cond, not a select: on 0-d leaves LLVM
            # folds select(c, p + x*y, p + q) into p + select(c, x*y, q), and the product then
            # rounds on its own (add(alpha=-lr) loses its FMA; measured 18 of 200 scalars).
            p, buf = jax.lax.cond(s["momentum"] > 0, with_momentum, without)
        else:
            p, buf = with_momentum() if use_momentum else without()
        return p, (square_avg, buf, grad_avg)

    return leafwise("rmsprop", init_leaf, update_leaf, scalars, RMSpropState)
