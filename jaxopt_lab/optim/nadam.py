"""NAdam (and NAdamW), as ``torch.optim.NAdam``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_ignored_flags,
    check_number,
    check_range,
    may_be_nonzero,
    require,
)
from jaxopt_lab.optim.grouped import GroupContext, grouped
from jaxopt_lab.optim.leafwise import ScalarMath

_SCALAR_DTYPE = jnp.float32  # torch's _get_scalar_dtype(): the default dtype, float32


class NAdamState(NamedTuple):
    """``count`` (int32), first/second moments, and ``mu_product`` (per leaf, 0-d float32)."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    mu_product: Any


def nadam(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    momentum_decay: ScalarOrSchedule = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> Optimizer:
    r"""NAdam (Dozat 2016), and NAdamW with ``decoupled_weight_decay``, exactly as torch.

    With :math:`t` the 1-based step and :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        \theta &\leftarrow \theta (1 - \gamma\lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\theta \\
        \mu_t &= \beta_1 (1 - \tfrac12\, 0.96^{t\psi}), \quad
            \mu_{t+1} = \beta_1 (1 - \tfrac12\, 0.96^{(t+1)\psi}) \\
        \Pi_t &= \Pi_{t-1} \mu_t \quad \text{(float32 state, } \Pi_0 = 1) \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1), \quad
            v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        d_t &= \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
        \theta_t &= \theta_{t-1} - \frac{\gamma (1 - \mu_t)}{1 - \Pi_t} \frac{g_t}{d_t}
            - \frac{\gamma \mu_{t+1}}{1 - \Pi_t \mu_{t+1}} \frac{m_t}{d_t}

    The momentum cache :math:`\mu_t, \mu_{t+1}` (non-integer powers of 0.96), the bias
    correction and the two step sizes are Python doubles in torch; here double precision too
    (double-single with x64 off, see :mod:`jaxopt_lab.optim.double`), rounded once. :math:`\Pi_t` is
    torch's ``mu_product``: a float32 tensor for every param dtype (torch's default dtype), so
    it is rounded at every step, and read back exactly (``.item()``) for the step sizes.

    Args:
      lr: learning rate :math:`\gamma` (number or schedule).
      betas: :math:`(\beta_1, \beta_2)`, numbers or schedules (OneCycleLR cycles :math:`\beta_1`).
      eps: :math:`\epsilon`, added outside the square root.
      weight_decay: :math:`\lambda`.
      momentum_decay: :math:`\psi`.
      decoupled_weight_decay: decay the params by :math:`1 - \gamma\lambda` (NAdamW) instead of
        adding :math:`\lambda\theta` to the gradient.
      maximize: ascend instead of descend.
      foreach, capturable, differentiable: torch implementation switches, accepted and ignored;
        results equal torch's default CPU path (``foreach=False``).

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`NAdamState`; ``mu_product`` holds one 0-d
      float32 array per leaf, as torch's ``state[p]["mu_product"]``.

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * torch's ``mu_product`` dtype follows ``torch.get_default_dtype()``; here it is float32,
        torch's default (a float64 default dtype makes torch keep it in float64).
      * optax's ``nadam`` (``adam(..., nesterov=True)``) has no momentum schedule: it uses a
        constant :math:`\beta_1` in place of :math:`\mu_t, \mu_{t+1}` and the plain Adam bias
        corrections, and puts ``eps`` after the bias-corrected root.
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    require(
        isinstance(betas, (tuple, list)) and len(betas) == 2,
        f"betas must be a pair (beta1, beta2), got {betas!r}",
        TypeError,
    )
    beta1, beta2 = betas
    for name, value in (
        ("lr", lr),
        ("eps", eps),
        ("weight_decay", weight_decay),
        ("momentum_decay", momentum_decay),
    ):
        check_number(value, name)
    check_number(beta1, "betas[0]")
    check_number(beta2, "betas[1]")
    check_range(lr, lambda v: v >= 0.0, f"Invalid learning rate: {lr}")
    check_range(eps, lambda v: v >= 0.0, f"Invalid epsilon value: {eps}")
    check_range(beta1, lambda v: 0.0 <= v < 1.0, f"Invalid beta parameter at index 0: {beta1}")
    check_range(beta2, lambda v: 0.0 <= v < 1.0, f"Invalid beta parameter at index 1: {beta2}")
    check_range(weight_decay, lambda v: v >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    check_range(
        momentum_decay, lambda v: v >= 0.0, f"Invalid momentum_decay value: {momentum_decay}"
    )
    use_decay = may_be_nonzero(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[Any, ...]:
        # torch.tensor(1.0, dtype=_get_scalar_dtype()): float32 whatever the param dtype
        return jnp.zeros_like(p), jnp.zeros_like(p), jnp.ones((), _SCALAR_DTYPE)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        b1, b2, lr_ = math.resolve(beta1), math.resolve(beta2), math.resolve(lr)
        psi, step, wide = math.resolve(momentum_decay), math.step, math.wide
        return {
            "lr": lr_,
            "one_minus_beta1": 1 - b1,
            "beta2": b2,
            "one_minus_beta2": 1 - b2,
            "eps": math.resolve(eps),
            "weight_decay": math.resolve(weight_decay),
            "decay": 1 - lr_ * math.resolve(weight_decay),
            "bias_correction2": 1 - _double.pow(b2, step, wide),  # beta2**step, a float step
            # mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
            "mu": b1 * (1.0 - 0.5 * _double.pow(0.96, step * psi, wide)),
            "mu_next": b1 * (1.0 - 0.5 * _double.pow(0.96, (step + 1) * psi, wide)),
        }

    def step_sizes(mu_products: list[jax.Array], ctx: GroupContext) -> tuple[list, list, list]:
        """``mu_product *= mu`` and the two ``addcdiv`` values, for all leaves at once."""
        v, math = ctx.values, ctx.math
        # mu_product *= mu: the float32 product, subnormal once mu_product underflows (~step
        # 110 at beta1 = 0.9), as torch's (XLA would flush it to zero)
        mu32 = _double.round_to(v["mu"], _SCALAR_DTYPE)
        zero32 = K.opaque_zero(ctx.count, _SCALAR_DTYPE)
        mp = mul_gradual_underflow(jnp.stack(mu_products), mu32, zero32)
        mp_exact = _double.lift(mp, math.wide, math.count)  # _get_value(mu_product): exact
        neg_lr = -v["lr"]
        value1 = neg_lr * (1.0 - v["mu"]) / (1.0 - mp_exact)
        value2 = neg_lr * v["mu_next"] / (1.0 - mp_exact * v["mu_next"])
        md = ctx.zero.dtype
        c1, c2 = _double.round_to(value1, md), _double.round_to(value2, md)
        n = len(mu_products)
        return [mp[i] for i in range(n)], [c1[i] for i in range(n)], [c2[i] for i in range(n)]

    def rule(p, g, exp_avg, exp_avg_sq, value1, value2, s, zero):
        g = -g if maximize else g
        if use_decay:
            if decoupled_weight_decay:
                p = K.mul(p, s["decay"], zero)  # param.mul_(1 - lr * weight_decay)
            else:
                g = K.add(g, p, s["weight_decay"])  # grad.add(param, alpha=weight_decay)
        exp_avg = K.lerp(exp_avg, g, s["one_minus_beta1"])  # exp_avg.lerp_(grad, 1 - beta1)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg_sq = K.addcmul(K.mul(exp_avg_sq, s["beta2"], zero), g, g, s["one_minus_beta2"])
        # denom = exp_avg_sq.div(bias_correction2).sqrt(); denom.add_(eps)
        denom = K.add_scalar(K.sqrt(K.div(exp_avg_sq, s["bias_correction2"], zero)), s["eps"])
        p = K.addcdiv(p, g, denom, value1)  # value=(-lr * (1 - mu) / (1 - mu_product))
        p = K.addcdiv(p, exp_avg, denom, value2)  # value=(-lr * mu_next) / (1 - mu_product_next)
        return p, exp_avg, exp_avg_sq

    def update_group(ps, gs, bufs, ctx: GroupContext):
        mps, c1s, c2s = step_sizes([b[2] for b in bufs], ctx)
        new_ps, new_bufs = [], []
        for p, g, (m, v, _), mp, c1, c2 in zip(ps, gs, bufs, mps, c1s, c2s, strict=True):
            p, m, v = rule(p, g, m, v, c1, c2, ctx.scalars, ctx.zero)
            new_ps.append(p)
            new_bufs.append((m, v, mp))
        return new_ps, new_bufs

    return grouped("nadam", init_leaf, update_group, scalars, NAdamState)


def _bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, jnp.int32)


def _float(bits: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _decompose(magnitude_bits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``|x| = m * 2**e`` with ``m`` in [1, 2), from the bits of ``|x| > 0`` (subnormals too)."""
    subnormal = (magnitude_bits >> 23) == 0
    # a subnormal's significand as an exact (normal) float32 integer
    y = jnp.where(subnormal, magnitude_bits.astype(jnp.float32), _float(magnitude_bits))
    y_bits = _bits(y)
    m = _float((y_bits & 0x7FFFFF) | 0x3F800000)
    return m, (y_bits >> 23) - 127 - jnp.where(subnormal, 149, 0)


def _pow2(k: jax.Array) -> jax.Array:
    """``2.0**k`` for an int32 ``k`` in [-126, 127], exact."""
    return _float((k + 127) << 23)


def mul_gradual_underflow(a: jax.Array, b: jax.Array, zero: jax.Array) -> jax.Array:
    """float32 ``a * b`` rounded as IEEE 754 (and torch) do, subnormal results included.

    XLA:CPU runs with subnormals flushed to zero, inputs and results (so even ``a == 0`` is true
    for a subnormal ``a``); this reads the operands from their bits, multiplies the significands
    exactly (``two_prod``) and writes a subnormal result's bits itself, rounding to nearest even
    at 2**-149. For finite operands; ``zero`` is an opaque float32 ``-0.0`` (see ``_double``).
    """
    a_bits, b_bits = _bits(a), _bits(b)
    a_mag, b_mag = a_bits & 0x7FFFFFFF, b_bits & 0x7FFFFFFF
    ma, ea = _decompose(a_mag)
    mb, eb = _decompose(b_mag)
    hi, lo = _double._two_prod(ma, mb, zero)  # ma * mb == hi + lo exactly, hi in [1, 4]
    e = ea + eb  # |a * b| = (hi + lo) * 2**e
    normal = e + (hi >= 2).astype(jnp.int32) >= -126
    e_big = jnp.clip(e, -252, 254)
    big = (hi * _pow2(e_big // 2)) * _pow2(e_big - e_big // 2)  # exact, or inf
    s = jnp.clip(e + 149, -30, 22)  # the result in units of 2**-149 is (hi + lo) * 2**s < 2**23
    x, xl = hi * _pow2(s), lo * _pow2(s)
    f = jnp.floor(x)
    d = (x - f) - 0.5  # exact; |d| >= ulp(x) > |xl| unless d == 0
    odd = (f.astype(jnp.int32) & 1) == 1
    up = (d > 0) | ((d == 0) & ((xl > 0) | ((xl == 0) & odd)))
    tiny_bits = f.astype(jnp.int32) + up.astype(jnp.int32)  # 2**23 is the least normal: right
    magnitude = jnp.where(normal, _bits(big), tiny_bits)
    magnitude = jnp.where((a_mag == 0) | (b_mag == 0), 0, magnitude)
    sign = (a_bits ^ b_bits) & jnp.int32(-(2**31))
    return _float(magnitude | sign)
