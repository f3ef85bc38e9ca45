"""SGD with momentum, dampening, Nesterov and weight decay, as ``torch.optim.SGD``."""

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
    is_dynamic,
    learning_rate,
    may_be_nonzero,
    nonnegative,
    require,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, leafwise


class SGDState(NamedTuple):
    """``count``: steps taken (int32); ``momentum_buffer``: params-shaped, None without momentum."""

    count: jax.Array
    momentum_buffer: Any


def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: ScalarOrSchedule = 0.0,
    dampening: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
) -> Optimizer:
    r"""Stochastic gradient descent, step for step and rounding for rounding as torch's.

    With :math:`g_t` the gradient (negated if ``maximize``), :math:`\lambda` the weight decay,
    :math:`\mu` the momentum and :math:`\tau` the dampening:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        b_t &= g_t \text{ at the first step, else } \mu b_{t-1} + (1 - \tau) g_t \\
        g_t &\leftarrow g_t + \mu b_t \text{ if nesterov, else } b_t \\
        \theta_t &= \theta_{t-1} - \gamma g_t

    Args:
      lr: learning rate :math:`\gamma`, a number or a schedule ``count -> lr``.
      momentum: :math:`\mu`; 0 keeps no buffer.
      dampening: :math:`\tau`.
      weight_decay: :math:`\lambda` (L2 penalty added to the gradient).
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      maximize: ascend instead of descend.
      foreach, differentiable, fused: torch implementation switches, accepted and ignored: the
        result always equals torch's ``foreach=False`` CPU path, and the update is always
        differentiable with ``jax.grad``.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`SGDState`.

    Complex params are stepped with torch's complex arithmetic (SGD, unlike Adam, never views
    them as real; see :mod:`jaxopt_lab.optim.complex_params`).

    Differences from torch.optim:
      * The first step copies the gradient into the buffer (torch's ``momentum_buffer is None``
        case) by testing ``count == 0``, so a zero-initialized buffer in the state is fine.
      * A dynamic ``momentum`` -- a schedule, or a traced value as ``optax.inject_hyperparams``
        passes -- always keeps a buffer (the state's structure cannot depend on a run-time
        value). At a step where it is 0 the update is torch's ``momentum=0`` step, bit for bit,
        and the buffer is left as it was, as torch leaves an existing one; but torch creates the
        buffer (``buf = grad``) at the first step with a non-zero momentum, this at step 0, so a
        momentum that starts at 0 and later turns non-zero continues from the buffer's zeros
        (equal values when ``dampening == 0``). A dynamic ``weight_decay`` of 0 likewise skips
        the decay term as torch does. The Nesterov check needs numbers.
      * A NaN hyper-parameter is rejected (torch's SGD lets a NaN ``lr`` through).
    """
    check_ignored_flags(foreach, fused, False, differentiable)
    check_hyperparams(
        learning_rate(lr),
        nonnegative("momentum", momentum),
        Bound("dampening", dampening),
        nonnegative("weight_decay", weight_decay),
    )
    if nesterov and not is_dynamic(momentum) and not is_dynamic(dampening):
        require(
            momentum > 0 and dampening == 0,
            "Nesterov momentum requires a momentum and zero dampening",
        )
    use_momentum = may_be_nonzero(momentum)
    use_decay = may_be_nonzero(weight_decay)
    dynamic_momentum = use_momentum and is_dynamic(momentum)
    dynamic_decay = use_decay and is_dynamic(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[jax.Array | None]:
        return (jnp.zeros_like(p) if use_momentum else None,)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        return {
            "neg_lr": -math.resolve(lr),
            "momentum": math.resolve(momentum),
            "one_minus_dampening": 1 - math.resolve(dampening),
            "weight_decay": math.resolve(weight_decay),
        }

    def rule(p, g, buf, s, count, zero, is_complex=False):
        def add(a, b, alpha):  # a.add(b, alpha=alpha): fused for real, not for complex tensors
            return C.add(a, b, alpha, zero) if is_complex else K.add(a, b, alpha)

        def mul(a, scalar):
            return C.mul(a, scalar, zero) if is_complex else K.mul(a, scalar, zero)

        g = -g if maximize else g
        if use_decay:
            decayed = add(g, p, s["weight_decay"])  # grad.add(param, alpha=wd)
            # torch's `if weight_decay != 0`, taken at run time for a dynamic value
            g = jnp.where(s["weight_decay"] != 0, decayed, g) if dynamic_decay else decayed
        if use_momentum:
            # buf.mul_(momentum).add_(grad, alpha=1 - dampening): the product is rounded first.
            later = add(mul(buf, s["momentum"]), g, s["one_minus_dampening"])
            new_buf = jnp.where(count == 0, g, later)  # first step: buf = grad.clone()
            stepped = add(g, new_buf, s["momentum"]) if nesterov else new_buf
            if dynamic_momentum:  # torch's `if momentum != 0`, at run time
                on = s["momentum"] != 0
                buf, g = jnp.where(on, new_buf, buf), jnp.where(on, stepped, g)
            else:
                buf, g = new_buf, stepped
        return add(p, g, s["neg_lr"]), buf  # param.add_(grad, alpha=-lr)

    def native_rule(p, g, buf, packed, count, zero):  # as _native.one_pass passes them
        return rule(p, g, buf, _native.unpack(packed, _native.SGD_SCALARS), count, zero)

    def update_leaf(p, g, bufs, ctx: LeafContext):
        p, buf = rule(p, g, bufs[0], ctx.scalars, ctx.count, ctx.zero, ctx.complex)
        return p, (buf,)

    target = "jaxopt_lab_sgd_momentum_f32"

    def kernel(ps, gs, bufs, ctx: LeafContext):  # the float32 leaves, in one call
        new_p, new_buf = _native.one_pass(
            target,
            native_rule,
            [ps, gs, [b[0] for b in bufs]],
            outputs=(0, 2),
            operands=(_native.pack(ctx.scalars, _native.SGD_SCALARS), ctx.count),
            rule_only=(ctx.zero,),
            decay=use_decay,
            maximize=maximize,
            nesterov=nesterov,
        )
        return new_p, [(b,) for b in new_buf]

    def routed(ps, gs, bufs, ctx: LeafContext):
        return _native.route(ps, gs, bufs, ctx, update_leaf, kernel, target)

    def pure(ps, gs, bufs, ctx: LeafContext):
        out = [update_leaf(p, g, b, ctx) for p, g, b in zip(ps, gs, bufs, strict=True)]
        return [p for p, _ in out], [b for _, b in out]

    def update_leaves(ps, gs, bufs, ctx: LeafContext):
        if not (dynamic_momentum or dynamic_decay) or not any(
            _native.use_for(p, target) for p in ps
        ):
            return routed(ps, gs, bufs, ctx)
        # The kernel always takes the momentum (and decay) arithmetic: torch's only while the
        # dynamic values are non-zero; otherwise the pure rule takes torch's zero-value branch.
        fits = ctx.scalars["momentum"] != 0
        if dynamic_decay:
            fits = fits & (ctx.scalars["weight_decay"] != 0)
        return jax.lax.cond(
            fits, lambda: routed(ps, gs, bufs, ctx), lambda: pure(ps, gs, bufs, ctx)
        )

    # Plain SGD is one loop in XLA already; the kernel is for momentum's second array.
    many = update_leaves if use_momentum else None
    return leafwise("sgd", init_leaf, update_leaf, scalars, SGDState, update_leaves=many)
