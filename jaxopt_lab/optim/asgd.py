"""Averaged SGD, as ``torch.optim.ASGD``."""

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
    is_dynamic,
    learning_rate,
    may_be_nonzero,
    nonnegative,
)
from jaxopt_lab.optim.leafwise import GroupContext, ScalarMath, computed_once, grouped

_SCALAR_DTYPE = jnp.float32  # torch's _get_scalar_dtype(): the default dtype, float32


class ASGDState(NamedTuple):
    """``count`` (int32); ``eta`` and ``mu`` (per leaf, 0-d float32); the average ``ax``."""

    count: jax.Array
    eta: Any
    mu: Any
    ax: Any


def asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    t0: ScalarOrSchedule = 1e6,
    weight_decay: ScalarOrSchedule = 0.0,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> Optimizer:
    r"""Averaged SGD (Polyak and Juditsky 1992), exactly as torch computes it.

    With :math:`t` the 1-based step and :math:`g_t` the gradient (negated if ``maximize``), and
    :math:`\eta_{t-1}, \mu_{t-1}` the state (float32, as torch keeps them):

    .. math::

        g_t &\leftarrow g_t + w\,\theta_{t-1} \\
        \theta_t &= \theta_{t-1} (1 - \lambda \eta_{t-1}) - \eta_{t-1} g_t \\
        \bar\theta_t &= \bar\theta_{t-1} + \mu_{t-1} (\theta_t - \bar\theta_{t-1})
            \text{, or } \theta_t \text{ while } \mu_{t-1} = 1 \\
        \eta_t &= \gamma_t / (1 + \lambda \gamma_t t)^{\alpha}, \quad
        \mu_t = 1 / \max(1, t - t_0) \quad \text{(rounded to float32)}

    with :math:`\eta_0 = \gamma_0` and :math:`\mu_0 = 1`. The step uses the *previous* step's
    :math:`\eta` (so a scheduled lr acts one step late, as in torch), and
    :math:`1 - \lambda\eta`, :math:`\eta_t` and :math:`\mu_t` are Python doubles in torch:
    double precision here too, rounded once.

    Args:
      lr: :math:`\gamma` (number or schedule).
      lambd: the decay :math:`\lambda`.
      alpha: the power :math:`\alpha` of the :math:`\eta` update.
      t0: the step :math:`t_0` after which averaging starts.
      weight_decay: :math:`w` (L2 penalty).
      maximize: ascend instead of descend.
      foreach, differentiable, capturable: torch implementation switches, accepted and ignored.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`ASGDState`; ``eta`` and ``mu`` hold one
      0-d float32 array per leaf, as torch's ``state[p]["eta"]`` and ``state[p]["mu"]``, and
      ``ax`` the average :math:`\bar\theta`.

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * torch's ``eta``/``mu`` dtype follows ``torch.get_default_dtype()``; here float32.
      * A traced ``lr`` (``optax.inject_hyperparams``) sets the initial ``eta`` to its value
        rounded to float32, taken as a float64 value with x64 on and as its own float32 value
        (exactly, in double-single arithmetic) with x64 off; a Python number is torch's double.
      * optax has no averaged SGD (``optax.contrib``'s schedule-free SGD averages differently).
    """
    check_ignored_flags(foreach, None, capturable, differentiable)
    check_hyperparams(
        learning_rate(lr),
        Bound("lambd", lambd),
        Bound("alpha", alpha),
        Bound("t0", t0),
        nonnegative("weight_decay", weight_decay),
    )
    use_decay = may_be_nonzero(weight_decay)

    def initial_eta() -> jax.Array:
        """torch.as_tensor(lr, dtype=float32) at the first step: lr at count 0, in float32.

        A number is torch's Python double, rounded once; a schedule's or a traced lr's value
        (``optax.inject_hyperparams``) is taken in the scalar arithmetic of the x64 mode (float64
        with x64, else double-single from the value's own float32) and rounded once.
        """
        if not is_dynamic(lr):
            return jnp.asarray(_double.round_to(float(lr), _SCALAR_DTYPE))
        count = jnp.zeros((), jnp.int32)
        wide = jax.config.jax_enable_x64
        return _double.round_to(ScalarMath(count, wide).resolve(lr), _SCALAR_DTYPE)

    def init_leaf(p: jax.Array) -> tuple[Any, ...]:
        return initial_eta(), jnp.ones((), _SCALAR_DTYPE), jnp.zeros_like(p)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        lr_, lambd_, step = math.resolve(lr), math.resolve(lambd), math.step
        # new_eta = lr / ((1 + lambd * lr * step) ** alpha); new_mu = 1 / max(1, step - t0)
        base = 1 + lambd_ * lr_ * step
        return {
            "weight_decay": math.resolve(weight_decay),
            "lambd": lambd_,
            "new_eta": lr_ / _double.pow(base, math.resolve(alpha), math.wide),
            "new_mu": 1 / _double.maximum(1.0, step - math.resolve(t0)),
        }

    def decay(eta: jax.Array, ctx: GroupContext) -> jax.Array:
        """``1 - lambd * eta.item()``, in double precision, rounded once.

        Per leaf, from its own ``eta``: a value sliced from one vector for all leaves would make
        each leaf's loop a kernel of its own (its slice offset differs), compiled once per leaf
        (~20-50 ms each), where leaves of one shape otherwise share one compiled kernel.
        """
        exact = _double.lift(eta, ctx.math.wide, ctx.count)
        return _double.round_to(1 - ctx.values["lambd"] * exact, ctx.zero.dtype)

    def rule(p, g, ax, mu, decay, neg_eta, s, zero):
        g = -g if maximize else g
        if use_decay:
            g = K.add(g, p, s["weight_decay"])  # grad.add(param, alpha=weight_decay)
        p = K.mul(p, decay, zero)  # param.mul_(1 - lambd * eta_value)
        p = K.add(p, g, neg_eta)  # param.add_(grad, alpha=-eta_value)
        # if mu.item() != 1: ax.add_(param.sub(ax).mul_(mu)) else: ax.copy_(param)
        diff = K.add(p, ax, jnp.asarray(-1, zero.dtype))  # param.sub(ax)
        averaged = K.add(ax, K.mul(diff, mu.astype(zero.dtype), zero), jnp.ones((), zero.dtype))
        ax = jnp.where(mu != 1, averaged, p)
        return p, ax

    def update_group(ps, gs, bufs, ctx: GroupContext):
        new_eta = _double.round_to(ctx.values["new_eta"], _SCALAR_DTYPE)  # eta.copy_(...)
        new_mu = _double.round_to(ctx.values["new_mu"], _SCALAR_DTYPE)  # mu.copy_(...)
        s, md = computed_once(ctx.scalars, ctx.zero), ctx.zero.dtype  # not again in each loop
        new_ps, new_bufs = [], []
        for p, g, (eta, mu, ax) in zip(ps, gs, bufs, strict=True):
            neg_eta = (-eta).astype(md)  # -eta.item()
            p, ax = rule(p, g, ax, mu, decay(eta, ctx), neg_eta, s, ctx.zero)
            new_ps.append(p)
            new_bufs.append((new_eta, new_mu, ax))
        return new_ps, new_bufs

    return grouped("asgd", init_leaf, update_group, scalars, ASGDState)
