"""Rprop (resilient backpropagation), as ``torch.optim.Rprop``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim import native as _native
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    Bound,
    check_hyperparams,
    check_ignored_flags,
    check_joint_range,
    check_pair,
    learning_rate,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, leafwise, materialized


class RpropState(NamedTuple):
    """``count`` (int32), the previous (masked) gradient and the per-element step sizes."""

    count: jax.Array
    prev: Any
    step_size: Any


def rprop(
    lr: ScalarOrSchedule = 1e-2,
    etas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.5, 1.2),
    step_sizes: tuple[ScalarOrSchedule, ScalarOrSchedule] = (1e-6, 50),
    *,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> Optimizer:
    r"""Rprop (Riedmiller & Braun, 1993; the variant without weight backtracking), as torch.

    With :math:`g_t` the gradient (negated if ``maximize``), :math:`p` the previous step's
    stored gradient (``prev``) and :math:`\eta_i` the per-element step size (``step_size``):

    .. math::

        s &= \operatorname{sign}(g_t \cdot p) \\
        \eta_i &\leftarrow \operatorname{clamp}\bigl(\eta_i \cdot
            \{\eta_+ \text{ if } s > 0,\ \eta_- \text{ if } s < 0,\ 1 \text{ otherwise}\},
            \ \eta_{\min}, \eta_{\max}\bigr) \\
        g_t &\leftarrow 0 \text{ where } s < 0 \text{ (the sign changed)} \\
        \theta_t &= \theta_{t-1} - \operatorname{sign}(g_t)\, \eta_i, \qquad p \leftarrow g_t

    As torch: the product :math:`g_t p` is rounded to the param dtype before its sign is taken;
    ``sign`` is torch's (``sign(NaN) = 0``, ``sign(-0.0) = +0.0``), so a NaN gradient leaves
    its element and step size unchanged and is stored in ``prev``; the factors are written into
    the sign tensor one after another (``sign[sign > 0] = etaplus``, then ``< 0``, then
    ``== 0``) and the gradient is zeroed where that tensor equals ``etaminus``, all in the param
    dtype. The step sizes start at ``lr``; ``lr`` is read only then (torch reads it when the
    state is created, at the first step), so an lr schedule only sets the initial step size
    (its value at count 0), as a torch LR scheduler does.

    Args:
      lr: the initial step size (number, or a schedule read at count 0).
      etas: :math:`(\eta_-, \eta_+)`, the multiplicative decrease and increase factors,
        :math:`0 < \eta_- < 1 < \eta_+`; numbers or schedules.
      step_sizes: :math:`(\eta_{\min}, \eta_{\max})`, the clamp bounds (not validated, as in
        torch); numbers or schedules.
      maximize: ascend instead of descend.
      capturable, foreach, differentiable: torch switches, accepted and ignored; results equal
        torch's default CPU path (``foreach=False``).

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`RpropState`.

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * XLA on CPU flushes subnormal floats to zero (inputs and results); torch does not. A
        subnormal gradient or product :math:`g_t p` therefore counts as 0 here (factor 1, no
        step) where torch sees its sign; the same holds for every optimizer in this package but
        here it changes a branch, not a last bit.
      * optax's ``rprop`` (``learning_rate`` = initial step size, the same defaults) updates its
        step sizes as torch does (except that it skips the clamp where the sign product is 0)
        but returns the update it computed at the *previous* step, zeroed where the gradient's
        sign flips now: its first update is 0. Measured in float64 over 30 steps: 4.4e-2
        relative apart in the params; its update at step t equals torch's of step t-1 on 98%
        of the elements whose sign does not flip, and is 0 on every flipping one.

    Complex params are stepped on their real view, as torch does (the initial step size is
    ``lr`` for the real and the imaginary part).
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    etaminus, etaplus = check_pair(etas, "etas", "etaminus, etaplus")
    step_size_min, step_size_max = check_pair(step_sizes, "step_sizes", "min, max")
    check_hyperparams(
        learning_rate(lr),
        Bound("etas[0]", etaminus),
        Bound("etas[1]", etaplus),
        Bound("step_sizes[0]", step_size_min),
        Bound("step_sizes[1]", step_size_max),
    )
    check_joint_range(
        (etaminus, etaplus),
        lambda lo, hi: 0.0 < lo < 1.0 < hi,
        f"Invalid eta values: {etaminus}, {etaplus}",
    )

    def init_leaf(p: jax.Array) -> tuple[jax.Array, jax.Array]:
        # state["step_size"] = torch.full_like(grad, lr): lr as torch's group holds it then.
        md = K.math_dtype(p.dtype)
        math = ScalarMath(jnp.zeros((), jnp.int32), wide=md == jnp.float64)
        first = _double.round_to(math.resolve(lr), md).astype(p.dtype)
        return jnp.zeros_like(p), jnp.full_like(p, first)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        return {
            "etaminus": math.resolve(etaminus),
            "etaplus": math.resolve(etaplus),
            "step_size_min": math.resolve(step_size_min),
            "step_size_max": math.resolve(step_size_max),
            "minus_one": -1.0,
        }

    def factor(g: jax.Array, old_prev: jax.Array, s: dict, zero: jax.Array) -> jax.Array:
        sign = K.sign(K.multiply(g, old_prev, zero))  # grad.mul(prev).sign()
        sign = jnp.where(sign > 0, s["etaplus"], sign)  # sign[sign.gt(0)] = etaplus
        sign = jnp.where(sign < 0, s["etaminus"], sign)  # sign[sign.lt(0)] = etaminus
        return jnp.where(sign == 0, jnp.ones_like(sign), sign)  # sign[sign.eq(0)] = 1

    def update_leaves(ps, gs, bufs, ctx: LeafContext):
        # Three loops per leaf, each writing its output over its donated input, and no
        # temporary: the new step sizes (reading the old ``prev``, recomputing the sign
        # factor), then ``prev`` (the other reader of the old one: ordered after the step sizes
        # by ``_after``), then the params, which read both new buffers (``materialized``, for
        # all leaves at once: XLA would fuse their recomputation from the old buffers into the
        # params' loop, and then copy both old buffers first).
        zero = ctx.zero
        gs = [-g if maximize else g for g in gs]
        # Scalars written into (or compared with) param-dtype tensors take that dtype.
        ss = [{k: v.astype(p.dtype) for k, v in ctx.scalars.items()} for p in ps]
        steps = []
        for g, (old_prev, old_step_size), s in zip(gs, bufs, ss, strict=True):
            # step_size.mul_(sign).clamp_(step_size_min, step_size_max)
            step_size = K.multiply(old_step_size, factor(g, old_prev, s, zero), zero)
            steps.append(
                jnp.minimum(jnp.maximum(step_size, s["step_size_min"]), s["step_size_max"])
            )
        steps = materialized(steps, zero)
        after = _after(steps, ctx.count)
        prevs = []
        for g, (old_prev, _), s in zip(gs, bufs, ss, strict=True):
            # grad[sign.eq(etaminus)] = 0; prev.copy_(grad)  (+ -0.0: an identity)
            masked = factor(g, old_prev, s, zero) == s["etaminus"]
            prevs.append(jnp.where(masked, jnp.zeros_like(g), g + after.astype(g.dtype)))
        prevs = materialized(prevs, zero)
        # param.addcmul_(grad.sign(), step_size, value=-1)
        new_ps = [
            K.addcmul(p, K.sign(prev), step_size, ctx.scalars["minus_one"])
            for p, prev, step_size in zip(ps, prevs, steps, strict=True)
        ]
        return new_ps, list(zip(prevs, steps, strict=True))

    def update_leaf(p, g, bufs, ctx: LeafContext):
        new_ps, new_bufs = update_leaves([p], [g], [bufs], ctx)
        return new_ps[0], new_bufs[0]

    # Large float32 leaves: the one-pass kernel (jaxopt_lab.optim.native); the others together.
    target, names = "jaxopt_lab_rprop_f32", _native.RPROP_SCALARS
    many = _native.leaf_updates(target, update_leaf, names, 0, maximize, update_leaves)
    return leafwise("rprop", init_leaf, update_leaf, scalars, RpropState, update_leaves=many)


def _after(xs: list[jax.Array], count: jax.Array) -> jax.Array:
    """An opaque float32 ``-0.0`` that XLA can only compute once ``xs`` are computed.

    :func:`~jaxopt_lab.optim.kernels.opaque_zero` of ``min(count, bits(x[0]) >>> 1)`` for the
    first non-empty ``x``: a non-negative int32 whatever ``x`` holds (``count >= 0``), so
    ``-0.0``; it reads one element.
    """
    first = next((x.ravel()[0] for x in xs if x.size), None)
    if first is None:
        return K.opaque_zero(count, jnp.float32)
    bits = jax.lax.bitcast_convert_type(first.astype(jnp.float32), jnp.int32)
    return K.opaque_zero(
        jnp.minimum(count, jax.lax.shift_right_logical(bits, jnp.int32(1))), jnp.float32
    )
