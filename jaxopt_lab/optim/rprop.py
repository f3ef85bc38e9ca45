"""Rprop (resilient backpropagation), as ``torch.optim.Rprop``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    Bound,
    check_hyperparams,
    check_ignored_flags,
    check_joint_range,
    check_pair,
    learning_rate,
)
from jaxopt_lab.optim.leafwise import LeafContext, ScalarMath, leafwise


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

    def update_leaf(p, g, bufs, ctx: LeafContext):
        prev, step_size = bufs
        zero = ctx.zero
        # Scalars written into (or compared with) param-dtype tensors take that dtype.
        s = {k: v.astype(p.dtype) for k, v in ctx.scalars.items()}
        g = -g if maximize else g
        sign = K.sign(K.multiply(g, prev, zero))  # grad.mul(prev).sign()
        sign = jnp.where(sign > 0, s["etaplus"], sign)  # sign[sign.gt(0)] = etaplus
        sign = jnp.where(sign < 0, s["etaminus"], sign)  # sign[sign.lt(0)] = etaminus
        sign = jnp.where(sign == 0, jnp.ones_like(sign), sign)  # sign[sign.eq(0)] = 1
        sign = computed_once(sign, zero)  # the only reader of the old ``prev``
        # step_size.mul_(sign).clamp_(step_size_min, step_size_max)
        step_size = K.multiply(step_size, sign, zero)
        step_size = jnp.minimum(jnp.maximum(step_size, s["step_size_min"]), s["step_size_max"])
        step_size = computed_once(step_size, zero)  # the param update reads the new one
        g = jnp.where(sign == s["etaminus"], jnp.zeros_like(g), g)  # grad[sign.eq(etaminus)] = 0
        # param.addcmul_(grad.sign(), step_size, value=-1)
        p = K.addcmul(p, K.sign(g), step_size, ctx.scalars["minus_one"])
        return p, (g, step_size)  # prev.copy_(grad)

    return leafwise("rprop", init_leaf, update_leaf, scalars, RpropState)


def computed_once(x: jax.Array, zero: jax.Array) -> jax.Array:
    """``x`` unchanged, as an array XLA computes in one loop and reads back (a performance hint).

    XLA:CPU fuses a cheap element-wise value into each of its consumers. Rprop's three outputs
    (params, ``prev``, ``step_size``) overwrite their donated inputs, so when the params' loop
    recomputes the sign factor and the new step size from the *old* ``prev`` and ``step_size``,
    XLA must first copy both buffers (measured: 2 copies, a 10M-param step 1.7x slower than
    ``optax.rprop``'s). A division is "expensive" to XLA, so it never duplicates one: a true
    division by 1 (:func:`~jaxopt_lab.optim.kernels.div`, which XLA cannot turn into a product;
    an identity on every value XLA:CPU holds, subnormals being flushed already) makes the factor
    and the new step size loops of their own, each the last reader of the buffer it replaces,
    and the copies go (``experiments/results/bench_update_rest.md``).
    """
    return K.div(x, 1 + zero, zero)
