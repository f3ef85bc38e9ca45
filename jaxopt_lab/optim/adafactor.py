"""Adafactor, as ``torch.optim.Adafactor``."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    at_least,
    at_most,
    check_hyperparams,
    check_ignored_flags,
    check_pair,
    may_be_nonzero,
)
from jaxopt_lab.optim.leafwise import GroupContext, ScalarMath, computed_once, grouped
from jaxopt_lab.optim.reductions import mean, vector_norm


class AdafactorState(NamedTuple):
    """``count`` (int32) and torch's per-param state: for a param with two or more dims the row
    and column factors ``row_var`` (shape ``(..., m, 1)``) and ``col_var`` (``(..., 1, n)``) of
    its second moment, else the full ``variance``.

    Every field is a tree with the params' structure (as ``optax.tree.map_params`` and sharding
    code expect): where torch keeps no such key for a param, the field holds an empty
    placeholder there (:func:`absent`).
    """

    count: jax.Array
    row_var: Any
    col_var: Any
    variance: Any

    @staticmethod
    def torch_keys(shape: tuple[int, ...]) -> tuple[str, ...]:
        """The fields torch keeps (its state keys) for a param of ``shape``; the other fields
        hold :func:`absent` at that param."""
        return ("row_var", "col_var") if _factored(shape) else ("variance",)


def _factored(shape: tuple[int, ...]) -> bool:
    """torch factors the second moment of a param with two or more dims."""
    return len(shape) > 1


def absent(p: jax.Array) -> jax.Array:
    """The placeholder of a field torch keeps no key for at param ``p``: an empty array of
    ``p``'s dtype and of its rank (at least 1), so that a partition spec of ``p`` fits it."""
    return jnp.zeros((0,) * max(p.ndim, 1), p.dtype)


def adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: ScalarOrSchedule = -0.8,
    eps: tuple[ScalarOrSchedule | None, ScalarOrSchedule] = (None, 1e-3),
    d: ScalarOrSchedule = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
) -> Optimizer:
    r"""Adafactor (Shazeer and Stern 2018) as torch 2.13 implements it, exactly.

    With :math:`t` the 1-based step, :math:`G_t` the gradient (negated if ``maximize``), and
    for a param of two or more dims factored on its last two (:math:`m \times n`):

    .. math::

        \hat\beta_{2,t} &= 1 - t^{\tau}, \quad
            \rho_t = \min(\gamma, 1/\sqrt t), \quad
            \alpha_t = \max(\epsilon_2, \operatorname{RMS}(\theta_{t-1})) \rho_t \\
        \theta &\leftarrow \theta (1 - \gamma\lambda) \\
        R_t &= \operatorname{lerp}(R_{t-1}, \overline{G_t^2}^{\,\text{row}}, 1 - \hat\beta_{2,t}),
            \quad C_t = \operatorname{lerp}(C_{t-1},
            \overline{G_t^2}^{\,\text{col}}, 1 - \hat\beta_{2,t}) \\
        \hat V_t &= R_t C_t / \max(\overline{R_t}, \epsilon_1)
            \quad \text{(else } \hat V_t = V_t = \operatorname{lerp}(V_{t-1}, G_t^2,
            1 - \hat\beta_{2,t})\text{)} \\
        U_t &= G_t / \sqrt{\max(\hat V_t, \epsilon_1^2)} \\
        \theta_t &= \theta - \frac{\alpha_t}{\max(1, \operatorname{RMS}(U_t) / d)} U_t

    where :math:`\overline{G^2}^{\text{row}}` is torch's ``norm(G, dim=-1)**2 / n`` (and the
    column one over ``dim=-2``). Like torch, the RMS values come from float norms read back as
    Python doubles (``.item()``), and :math:`\alpha_t`, the clipping and the step are computed in
    double precision and rounded once; the norms and the mean of :math:`R_t` reproduce torch's
    CPU summation order (:mod:`jaxopt_lab.optim.reductions`).

    Args:
      lr: :math:`\gamma` (number or schedule): a cap on the relative step size.
      beta2_decay: :math:`\tau \le 0`, the decay rate of :math:`\hat\beta_{2,t}`.
      eps: :math:`(\epsilon_1, \epsilon_2)`; ``None`` for :math:`\epsilon_1` is torch's
        ``finfo(dtype).eps`` of the *first* param (torch resolves it once per group).
      d: the clipping threshold :math:`d \ge 1`.
      weight_decay: :math:`\lambda` (decoupled, scaled by :math:`\gamma`).
      maximize: ascend instead of descend.
      foreach: torch implementation switch, accepted and ignored.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`AdafactorState`.

    Differences from torch.optim:
      * torch keeps a float32 ``step`` tensor per parameter; here one int32 ``count``.
      * torch keeps ``row_var``/``col_var`` or ``variance`` per parameter; here each field
        spans all params, with an empty placeholder where torch has no key
        (:meth:`AdafactorState.torch_keys`; the torch hand-off maps one to the other).
      * torch raises ``ZeroDivisionError`` for an empty param (``0 / 0 ** 0.5``); here its
        (empty) update is a no-op.
      * bfloat16/float16: torch's vectorized ``rsqrt`` rounds ``1/sqrt(x)`` once, its scalar
        tail (the last ``numel % 32`` elements) rounds the ``sqrt`` to the dtype first; both are
        reproduced for leaves below 32,768 elements, beyond which torch splits the loop across
        threads (its tails then depend on the thread count).
      * optax's ``adafactor`` by default factors only dims of at least
        ``min_dim_size_to_factor=128`` (torch: every tensor of two or more dims), computes the
        decay :math:`1 - t^{-0.8}` in float32, and steps ``lr`` times the parameter scale with
        no :math:`\rho_t = \min(\gamma, 1/\sqrt t)` cap. With ``min_dim_size_to_factor=1`` and
        ``lr <= 1/sqrt(t)`` it takes torch's update up to that float32 decay (measured, the
        ``adafactor-*`` rows of ``tests/test_optax_differences.py``).
    """
    check_ignored_flags(foreach, None, False, False)
    eps1, eps2 = check_pair(eps, "eps", "eps1 or None, eps2")
    eps1_check = () if eps1 is None else (at_least("eps[0]", eps1, 0, "epsilon1"),)
    check_hyperparams(
        at_least("lr", lr, 0, "Learning rate"),
        at_most("beta2_decay", beta2_decay, 0),
        *eps1_check,
        at_least("eps[1]", eps2, 0, "epsilon2"),
        at_least("d", d, 1, "Clipping threshold d"),
        at_least("weight_decay", weight_decay, 0),
    )
    use_decay = may_be_nonzero(weight_decay)

    def init_leaf(p: jax.Array) -> tuple[Any, ...]:
        if _factored(p.shape):  # grad.new_zeros(row_shape), grad.new_zeros(col_shape)
            row = jnp.zeros((*p.shape[:-1], 1), p.dtype)
            col = jnp.zeros((*p.shape[:-2], 1, p.shape[-1]), p.dtype)
            return row, col, absent(p)
        return absent(p), absent(p), jnp.zeros_like(p)

    def scalars(math: ScalarMath) -> dict[str, Any]:
        step, lr_ = math.step, math.resolve(lr)
        out = {
            # one_minus_beta2_t = step_float ** beta2_decay
            "one_minus_beta2": _double.pow(step, math.resolve(beta2_decay), math.wide),
            # rho_t = min(lr, 1 / (step_float ** 0.5))
            "rho": _double.minimum(lr_, 1 / _double.sqrt(step)),
            "decay": 1 - lr_ * math.resolve(weight_decay),
            "eps2": math.resolve(eps2),
            "d": math.resolve(d),
        }
        if eps1 is not None:
            out["eps1"] = math.resolve(eps1)
        return out

    def update_group(ps, gs, bufs, ctx: GroupContext):
        math, v, zero = ctx.math, ctx.values, ctx.zero
        md = zero.dtype
        # the step's scalars, computed once, not again in each leaf's loop (compile time)
        s = computed_once(ctx.scalars, zero)
        e1 = float(jnp.finfo(ctx.first_dtype).eps) if eps1 is None else v["eps1"]
        # eps1 and eps1 * eps1 rounded to each storage dtype, once per dtype
        dtypes = sorted({jnp.dtype(p.dtype) for p in ps}, key=str)
        floors = computed_once(
            {d.name: (_double.round_to(e1, d), _double.round_to(e1 * e1, d)) for d in dtypes}, zero
        )
        numels = [int(np.prod(p.shape)) for p in ps]
        root_n = _double.lift_array([n**0.5 for n in numels], math.wide, ctx.count)
        if isinstance(v["d"], float):  # (update.numel() ** 0.5) * d, in Python
            root_n_d = _double.lift_array([n**0.5 * v["d"] for n in numels], math.wide, ctx.count)
        else:
            root_n_d = root_n * v["d"]
        # alpha = max(eps2, param.norm(2).item() / (param.numel() ** 0.5)) * rho_t
        param_norms = _norms(ps, zero)
        updates, new_bufs, new_ps = [], [], []
        for p, g, (row_var, col_var, variance) in zip(ps, gs, bufs, strict=True):
            g = -g if maximize else g
            eps1_p, floor = floors[jnp.dtype(p.dtype).name]
            if use_decay:
                p = K.mul(p, s["decay"], zero)  # param.mul_(1 - lr * weight_decay)
            if _factored(g.shape):  # (the placeholders pass through unchanged)
                row_var, col_var, var_estimate = _factored_moment(
                    g, row_var, col_var, eps1_p, s, zero
                )
            else:
                # grad * grad; variance.lerp_(grad_squared, one_minus_beta2_t)
                variance = K.lerp(variance, K.multiply(g, g, zero), s["one_minus_beta2"])
                var_estimate = variance
            # update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_(); update.mul_(grad)
            update = K.multiply(K.rsqrt(K.clamp_min(var_estimate, floor), zero), g, zero)
            updates.append(update)
            new_ps.append(p)
            new_bufs.append((row_var, col_var, variance))
        # denom = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * d)), and the step
        # -alpha / denom, in double precision (Python's max() keeps eps2 and 1.0 over a NaN);
        # with an infinite norm the step is +-inf, NaN or -0.0, which float arithmetic gives
        # exactly (double-single arithmetic would give NaN)
        update_norms = _norms(updates, zero)

        def step(pn, un, root, root_d, eps2_, rho):
            alpha = _double.maximum(eps2_, pn / root) * rho
            return -alpha / _double.maximum(1.0, un / root_d)

        lift = functools.partial(_double.lift, wide=math.wide, anchor=ctx.count)
        exact = step(lift(param_norms), lift(update_norms), root_n, root_n_d, v["eps2"], v["rho"])
        leading = map(_double.leading_float, (root_n, root_n_d, v["eps2"], v["rho"]))
        naive = step(param_norms, update_norms, *leading)
        infinite = jnp.isinf(param_norms) | jnp.isinf(update_norms)
        steps = jnp.where(infinite, jnp.asarray(naive).astype(md), _double.round_to(exact, md))
        steps = computed_once(steps, zero)  # one vector, not recomputed in each leaf's loop
        new_ps = [  # param.add_(update, alpha=-alpha / denom)
            K.add(p, u, steps[i]) for i, (p, u) in enumerate(zip(new_ps, updates, strict=True))
        ]
        return new_ps, new_bufs

    return grouped("adafactor", init_leaf, update_group, scalars, AdafactorState, False)


def _norms(arrays: list[jax.Array], zero: jax.Array) -> jax.Array:
    """``[a.norm(2).item() for a in arrays]``: the norms, exactly, in the math dtype.

    Arrays of one size and dtype are reduced together, as the rows of one ``(B, n)`` array
    (each row's sum in torch's order, exactly as alone): one summation loop for them all rather
    than one per leaf (compile time).
    """
    groups: dict[tuple[int, Any], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault((a.size, jnp.dtype(a.dtype)), []).append(i)
    norms: list[Any] = [None] * len(arrays)
    for idx in groups.values():
        rows = jnp.stack([arrays[i].reshape(-1) for i in idx])
        out = vector_norm(rows, -1, zero).reshape(len(idx)).astype(zero.dtype)
        for j, i in enumerate(idx):
            norms[i] = out[j]
    return jnp.stack(norms)


def _factored_moment(g, row_var, col_var, eps1, s, zero):
    """torch's factored second moment of a >= 2-d gradient and its estimate ``R C / mean(R)``
    (``eps1``: already rounded to the storage dtype)."""
    w = s["one_minus_beta2"]
    md = zero.dtype
    # row_mean = torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))
    row_norm = vector_norm(g, -1, zero)
    row_mean = K.div(K.multiply(row_norm, row_norm, zero), jnp.asarray(g.shape[-1], md), zero)
    row_var = K.lerp(row_var, row_mean, w)
    col_norm = vector_norm(g, -2, zero)
    col_mean = K.div(K.multiply(col_norm, col_norm, zero), jnp.asarray(g.shape[-2], md), zero)
    col_var = K.lerp(col_var, col_mean, w)
    # var_estimate = row_var @ col_var (an outer product: one rounded product per element)
    var_estimate = K.multiply(row_var, col_var, zero)
    # var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
    row_mean_all = K.clamp_min(mean(row_var, -2, zero), eps1)
    return row_var, col_var, K.div(var_estimate, row_mean_all.astype(md), zero)
