"""NAdam (and NAdamW), as ``torch.optim.NAdam``."""

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
    nonnegative,
)
from jaxopt_lab.optim.leafwise import (
    GroupContext,
    LeafContext,
    ScalarMath,
    computed_once,
    constant_scalars,
    grouped,
    l2_weight_decay,
    materialized,
)

_SCALAR_DTYPE = jnp.float32  # torch's _get_scalar_dtype(): the default dtype, float32


class NAdamState(NamedTuple):
    """``count`` (int32), the first/second moments (trees shaped like the params), and
    ``mu_product``: one float32 vector, each params leaf's own product (torch's per-param 0-d
    ``state[p]["mu_product"]``) at its position in ``jax.tree.leaves(params)``."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    mu_product: jax.Array

    # One buffer for the field, not one per leaf (see jaxopt_lab.optim.leafwise.grouped).
    vector_fields = ("mu_product",)


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
      An :class:`~jaxopt_lab.Optimizer` with :class:`NAdamState`; ``mu_product`` is one float32
      vector holding each leaf's torch ``state[p]["mu_product"]`` (entry ``i``: leaf ``i`` of
      ``jax.tree.leaves(params)``).

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * torch keeps a 0-d ``mu_product`` tensor per parameter; here they are the entries of one
        vector (``state.mu_product[i]`` is leaf ``i``'s), so a jitted update passes one buffer
        for them instead of one per leaf (``experiments/bench_update.py``, 1,000 leaves of 1k
        elements: 1.07-1.25x optax's median step time with per-leaf 0-d arrays, 0.89-0.98x with
        the vector, same runs interleaved on a shared 2-core CPU). Each entry is still
        the leaf's own value (params handed over from torch may have different ones);
        ``jaxopt_lab.torch_state`` splits and gathers them. Being not shaped like the params, the
        vector is left alone by ``optax.tree.map_params`` and by params-shaped shardings.
      * torch's ``mu_product`` dtype follows ``torch.get_default_dtype()``; here it is float32,
        torch's default (a float64 default dtype makes torch keep it in float64).
      * A dynamic ``weight_decay`` (a schedule, or a traced value) of 0 skips the L2 term, as
        torch's ``if weight_decay != 0`` does (the decoupled factor ``1 - lr * 0`` is exact).
      * optax's ``nadam`` (``adam(..., nesterov=True)``) has no momentum schedule: it uses a
        constant :math:`\beta_1` in place of :math:`\mu_t, \mu_{t+1}` and the plain Adam bias
        corrections, and puts ``eps`` after the bias-corrected root.
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    beta1, beta2 = check_adam_family(
        lr, betas, eps, weight_decay, nonnegative("momentum_decay", momentum_decay)
    )
    use_decay = may_be_nonzero(weight_decay)
    dynamic_decay = use_decay and is_dynamic(weight_decay)

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

    # The scalars the per-leaf rule reads, and those that are numbers whatever the step.
    rule_scalars = (
        "decay",
        "weight_decay",
        "one_minus_beta1",
        "beta2",
        "one_minus_beta2",
        "bias_correction2",
        "eps",
    )
    constant = constant_scalars(
        {
            "decay": (lr, weight_decay),
            "weight_decay": (weight_decay,),
            "one_minus_beta1": (beta1,),
            "beta2": (beta2,),
            "one_minus_beta2": (beta2,),
            "eps": (eps,),
        }
    )

    def step_sizes(mu_products: list[jax.Array], ctx: GroupContext) -> tuple[jax.Array, ...]:
        """``mu_product *= mu`` and the two ``addcdiv`` values, one vector each (leaf order)."""
        v, math = ctx.values, ctx.math
        # mu_product *= mu: the float32 product, subnormal once mu_product underflows (~step
        # 110 at beta1 = 0.9), as torch's (XLA would flush it to zero)
        mu32 = _double.round_to(v["mu"], _SCALAR_DTYPE)
        zero32 = K.opaque_zero(ctx.count, _SCALAR_DTYPE)
        mp = _double.mul_gradual_underflow(jnp.stack(mu_products), mu32, zero32)
        # computed once, not again in each leaf's slice (compile time, see leafwise.computed_once),
        # with its bits as they are (subnormals included)
        mp = materialized(mp, zero32)
        mp_exact = _double.lift(mp, math.wide, math.count)  # _get_value(mu_product): exact
        neg_lr = -v["lr"]
        value1 = neg_lr * (1.0 - v["mu"]) / (1.0 - mp_exact)
        value2 = neg_lr * v["mu_next"] / (1.0 - mp_exact * v["mu_next"])
        md = ctx.zero.dtype
        return mp, _double.round_to(value1, md), _double.round_to(value2, md)

    def per_leaf(c1s: jax.Array, c2s: jax.Array, zero: jax.Array) -> list[jax.Array]:
        """Each leaf's ``(value1, value2)`` as a buffer of its own, bits unchanged.

        A leaf's loop that read its entry of ``c1s`` itself (a slice at its own offset) would be
        a program of its own: XLA:CPU compiles each distinct fusion once, identical ones once in
        all, so 1,000 leaves' loops were compiled 1,000 times (most of NAdam's compile time).
        Here each leaf's two values are sliced out once (a row of a ``(leaves, 2)`` stack) and
        pass through one :func:`materialized`: every leaf's loop reads a row of its own and is
        the same program.
        """
        stacked = jnp.stack([c1s, c2s], axis=1)
        return materialized([stacked[i] for i in range(stacked.shape[0])], zero)

    def rule(p, g, exp_avg, exp_avg_sq, value1, value2, s, zero):
        g = -g if maximize else g
        if use_decay:
            if decoupled_weight_decay:
                p = K.mul(p, s["decay"], zero)  # param.mul_(1 - lr * weight_decay)
            else:
                # grad.add(param, alpha=weight_decay), on the real views (torch's NAdam takes
                # view_as_real first), where the step's weight_decay != 0
                real = LeafContext(jnp.zeros((), jnp.int32), s, zero)
                g = l2_weight_decay(g, p, s["weight_decay"], real, dynamic_decay)
        exp_avg = K.lerp(exp_avg, g, s["one_minus_beta1"])  # exp_avg.lerp_(grad, 1 - beta1)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg_sq = K.addcmul(K.mul(exp_avg_sq, s["beta2"], zero), g, g, s["one_minus_beta2"])
        # denom = exp_avg_sq.div(bias_correction2).sqrt(); denom.add_(eps)
        denom = K.add_scalar(K.sqrt(K.div(exp_avg_sq, s["bias_correction2"], zero)), s["eps"])
        p = K.addcdiv(p, g, denom, value1)  # value=(-lr * (1 - mu) / (1 - mu_product))
        p = K.addcdiv(p, exp_avg, denom, value2)  # value=(-lr * mu_next) / (1 - mu_product_next)
        return p, exp_avg, exp_avg_sq

    target = "jaxopt_lab_nadam_f32"

    def native_rule(p, g, exp_avg, exp_avg_sq, packed, value1, value2, zero):  # from one_pass
        s = _native.unpack(packed, _native.NADAM_SCALARS)
        return rule(p, g, exp_avg, exp_avg_sq, value1, value2, s, zero)

    def update_group(ps, gs, bufs, ctx: GroupContext):
        mps, c1s, c2s = step_sizes([b[2] for b in bufs], ctx)
        # the step sizes and the step's scalars: computed once (one cond), not in each leaf's loop
        scalars = {k: ctx.scalars[k] for k in rule_scalars}
        dynamic = {k: v for k, v in scalars.items() if k not in constant}
        c1s, c2s, dynamic = computed_once((c1s, c2s, dynamic), ctx.zero)
        scalars.update(dynamic)
        rows = per_leaf(c1s, c2s, ctx.zero)  # the XLA loops' values (the kernel's: c1s, c2s)

        # Leaves carry their index through route, for their row (or entries of c1s and c2s).
        def update_leaf(p, g, leaf_bufs, _):
            m, v, i = leaf_bufs
            p, m, v = rule(p, g, m, v, rows[i][0], rows[i][1], scalars, ctx.zero)
            return p, (m, v, i)

        def kernel(ps, gs, leaf_bufs, _):  # the float32 leaves, in one call
            idx = [i for _, _, i in leaf_bufs]
            every = idx == list(range(len(bufs)))
            value1, value2 = (c1s, c2s) if every else (c1s[np.asarray(idx)], c2s[np.asarray(idx)])
            new_p, new_m, new_v = _native.one_pass(
                target,
                native_rule,
                [ps, gs, [b[0] for b in leaf_bufs], [b[1] for b in leaf_bufs]],
                outputs=(0, 2, 3),
                operands=(_native.pack(scalars, _native.NADAM_SCALARS),),
                leaf_operands=(value1, value2),
                rule_only=(ctx.zero,),
                decay=_native.decay_mode(use_decay, decoupled_weight_decay, dynamic_decay),
                maximize=maximize,
            )
            return new_p, list(zip(new_m, new_v, idx, strict=True))

        indexed = [(m, v, i) for i, (m, v, _) in enumerate(bufs)]
        if ctx.complex:  # real views of complex leaves: the pure rule (as leafwise does)
            out = [update_leaf(p, g, b, None) for p, g, b in zip(ps, gs, indexed, strict=True)]
            new_ps, new_bufs = [p for p, _ in out], [b for _, b in out]
        else:
            new_ps, new_bufs = _native.route(ps, gs, indexed, ctx, update_leaf, kernel, target)
        # each leaf's entry of mps: grouped stacks them back into the state's one vector
        mp_of = [jax.lax.index_in_dim(mps, i, keepdims=False) for i in range(len(bufs))]
        return new_ps, [(m, v, mp_of[i]) for m, v, i in new_bufs]

    return grouped("nadam", init_leaf, update_group, scalars, NAdamState)
