"""SparseAdam, as ``torch.optim.SparseAdam``: Adam on the entries a sparse gradient holds."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import sparse

from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, Params, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    betas_in_unit_interval,
    check_buffers,
    check_hyperparams,
    check_pair,
    check_params,
    check_state,
    epsilon,
    learning_rate,
    require,
)
from jaxopt_lab.optim.kernels import math_dtype, opaque_zero
from jaxopt_lab.optim.leafwise import ScalarMath

DENSE_GRADS = "SparseAdam does not support dense gradients, please consider Adam instead"


class SparseAdamState(NamedTuple):
    """``count`` (int32) and the dense first/second moments (torch's ``exp_avg``/``exp_avg_sq``)."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def sparse_adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    maximize: bool = False,
) -> Optimizer:
    r"""SparseAdam exactly as torch computes it, for gradients given as ``sparse.BCOO`` leaves.

    Only the entries the gradient holds (after summing duplicates) are read and written; every
    other entry of the params and of both moments is left as it is. With :math:`g` the coalesced
    gradient values (negated if ``maximize``), :math:`m, v` the moments gathered at those entries
    and :math:`t` the 1-based step:

    .. math::

        u_m &= (g - m)(1 - \beta_1), \qquad m \leftarrow m + u_m \\
        u_v &= (g^2 - v)(1 - \beta_2), \qquad v \leftarrow v + u_v \\
        \theta &\leftarrow \theta + \Big(-\frac{\gamma\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\Big)
            \cdot \frac{m}{\sqrt{v} + \epsilon}

    each product, difference and quotient rounded on its own, as torch's
    ``grad_values.sub(old).mul_(1 - beta1)`` etc. do; the step size is computed in double
    precision and rounded once.

    **Gradients.** Each grads leaf is a :class:`jax.experimental.sparse.BCOO` with the shape and
    dtype of its params leaf: element-wise (``n_dense=0``, ``indices`` of shape ``(nse, ndim)``)
    or row-wise (``n_dense > 0``, e.g. an embedding table's gradient
    ``BCOO((rows_grad, ids[:, None]), shape=table.shape)``, like ``nn.Embedding(sparse=True)``).
    A dense leaf raises torch's ``RuntimeError``. Entries with an index out of bounds (BCOO's
    padding convention, e.g. from ``bcoo_sum_duplicates(nse=...)``) are ignored, so a fixed
    ``nse`` with padding avoids recompiling for each new number of entries.

    **Duplicates** are summed before the update, as torch's ``coalesce()`` does: one rounding per
    addition, in the order the entries appear in ``indices``. torch adds them in the order of
    its ``sort`` of the flattened indices, which is that same order when there are at most 16
    entries or at least 32,768 (stable sorts), and otherwise the order of ``std::sort``'s
    unstable introsort. So the result is torch's bit for bit whenever no index occurs more than
    twice (``a + b == b + a``) or the entry count is in those ranges; otherwise an index held
    three or more times may get a sum that differs in its last bits (a reordering of the same
    float additions).

    Args:
      lr: learning rate :math:`\gamma` (number or schedule; must be > 0, as in torch).
      betas: :math:`(\beta_1, \beta_2)`, each a number or a schedule.
      eps: :math:`\epsilon` (> 0), added outside the square root.
      maximize: ascend instead of descend.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`SparseAdamState`; its ``update`` takes
      ``(params, grads, state)`` with BCOO grads leaves.

    Differences from torch.optim:
      * torch keeps a Python-int ``step`` per parameter; here one int32 ``count``. torch counts a
        step for a parameter whose sparse gradient is empty (and skips its update); so does this.
      * The summation order of an index held three or more times (see *Duplicates*).
      * optax has no SparseAdam: JAX gradients are dense, and ``optax.adam`` on a dense gradient
        with zeros decays the moments of every entry, which SparseAdam leaves untouched.
    """
    beta1, beta2 = check_pair(betas, "betas", "beta1, beta2")
    check_hyperparams(
        learning_rate(lr, strict=True),
        epsilon(eps, strict=True),
        *betas_in_unit_interval(beta1, beta2),
    )

    def scalars(math_: ScalarMath) -> dict[str, Any]:
        b1, b2 = math_.resolve(beta1), math_.resolve(beta2)
        bias_correction1 = 1 - math_.pow(b1, math_.count + 1)
        bias_correction2 = 1 - math_.pow(b2, math_.count + 1)
        # step_size = lr * math.sqrt(bias_correction2) / bias_correction1, in this order
        step_size = math_.resolve(lr) * math_.sqrt(bias_correction2) / bias_correction1
        return {
            "one_minus_beta1": 1 - b1,
            "one_minus_beta2": 1 - b2,
            "eps": math_.resolve(eps),
            "neg_step_size": -step_size,
        }

    def init(params: Params) -> SparseAdamState:
        check_params(params)
        zeros = jax.tree.map(jnp.zeros_like, params)
        return SparseAdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, zeros))

    def update(params: Params, grads: Any, state: SparseAdamState) -> tuple[Params, Any]:
        check_params(params)
        check_sparse_grads(params, grads)
        check_state(state, SparseAdamState, "sparse_adam")
        check_buffers(params, state.exp_avg, "exp_avg")
        check_buffers(params, state.exp_avg_sq, "exp_avg_sq")
        leaves, treedef = jax.tree_util.tree_flatten(params)
        g_leaves = jax.tree_util.tree_leaves(grads, is_leaf=_is_bcoo)
        m_leaves = jax.tree_util.tree_leaves(state.exp_avg)
        v_leaves = jax.tree_util.tree_leaves(state.exp_avg_sq)
        count = jnp.asarray(state.count, jnp.int32)
        contexts: dict[Any, tuple[dict[str, jax.Array], jax.Array]] = {}
        out_p, out_m, out_v = [], [], []
        for p, g, m, v in zip(leaves, g_leaves, m_leaves, v_leaves, strict=True):
            md = math_dtype(p.dtype)
            if md not in contexts:  # one set of scalars per math dtype, as in ``leafwise``
                values = scalars(ScalarMath(count, wide=md == jnp.float64))
                rounded = {k: _double.round_to(x, md) for k, x in values.items()}
                contexts[md] = (rounded, opaque_zero(count, md))
            s, zero = contexts[md]
            p, m, v = _update_leaf(p, g, m, v, s, zero, maximize)
            out_p.append(p)
            out_m.append(m)
            out_v.append(v)
        unflatten = jax.tree_util.tree_unflatten
        new_state = SparseAdamState(count + 1, unflatten(treedef, out_m), unflatten(treedef, out_v))
        return unflatten(treedef, out_p), new_state

    return Optimizer(init, jax.jit(update))


def _is_bcoo(x: Any) -> bool:
    return isinstance(x, sparse.BCOO)


def check_sparse_grads(params: Any, grads: Any) -> None:
    """Grads mirror params leaf for leaf, each a BCOO of the leaf's shape and dtype."""
    p_def = jax.tree_util.tree_structure(params)
    g_def = jax.tree_util.tree_structure(grads, is_leaf=_is_bcoo)
    if p_def != g_def:
        raise ValueError(f"grads tree structure {g_def} does not match params structure {p_def}")
    p_leaves = jax.tree_util.tree_leaves_with_path(params)
    for (path, p), g in zip(
        p_leaves, jax.tree_util.tree_leaves(grads, is_leaf=_is_bcoo), strict=True
    ):
        where = jax.tree_util.keystr(path) or "<root>"
        if not _is_bcoo(g):
            raise RuntimeError(DENSE_GRADS)
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"grads leaf {where} has shape {g.shape}, params leaf has {p.shape}")
        if g.dtype != p.dtype:
            raise TypeError(f"grads leaf {where} has dtype {g.dtype}, params leaf has {p.dtype}")


def coalesce(g: sparse.BCOO, maximize: bool = False) -> tuple[jax.Array, jax.Array, jax.Array, int]:
    """torch's ``grad.coalesce()`` on a BCOO: summed values per distinct in-bounds index.

    Returns ``(rows, values, first, n_rows)``: ``rows`` (nse,) are flat indices into the leaf
    viewed as ``(n_rows, -1)`` (the sparse dims flattened row-major), ``values`` (nse, row size)
    the summed values in the storage dtype, and ``first`` marks the one entry per distinct index
    that carries its sum (the others, and out-of-bounds entries, are to be dropped). Duplicates
    are added one at a time, in the order they appear: ``((v0 + v1) + v2) + ...``.
    """
    if g.n_batch:
        g = sparse.bcoo_update_layout(g, n_batch=0)
    require(g.nse > 0, "coalesce needs at least one entry")
    sparse_shape = tuple(g.shape[: g.n_sparse])
    n_rows = math.prod(sparse_shape)
    nse = g.nse
    values = g.data.reshape(nse, -1)
    values = -values if maximize else values  # torch negates before coalescing
    key_dtype = jnp.int32 if n_rows < 2**31 - 1 else jnp.int64
    idx = g.indices.astype(key_dtype)
    inside = jnp.all((idx >= 0) & (idx < jnp.asarray(sparse_shape, key_dtype)[None]), axis=1)
    strides = [math.prod(sparse_shape[d + 1 :]) for d in range(len(sparse_shape))]
    flat = sum((idx[:, d] * s for d, s in enumerate(strides)), jnp.zeros(nse, key_dtype))
    key = jnp.where(inside, flat, n_rows)  # out of bounds: sorts last, dropped
    order = jnp.argsort(key, stable=True)
    key, values = key[order], values[order]
    pos = jnp.arange(nse, dtype=jnp.int32)
    first = jnp.concatenate([jnp.ones(1, bool), key[1:] != key[:-1]])
    # Entries from ``i`` up to the next first entry hold ``key[i]``: ``run[i]`` of them.
    starts = jnp.where(first, pos, nse)
    after = jnp.concatenate([starts[1:], jnp.full(1, nse, jnp.int32)])
    run = jnp.where(first, jax.lax.cummin(after, 0, reverse=True) - pos, 0)
    longest = jnp.max(run)

    def add_next(carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        k, acc = carry
        more = (k < run)[:, None]
        nxt = values[jnp.minimum(pos + k, nse - 1)]
        return k + 1, jnp.where(more, K.plus(acc, nxt), acc)

    _, summed = jax.lax.while_loop(lambda c: c[0] < longest, add_next, (jnp.int32(1), values))
    return key, summed, first & (key < n_rows), n_rows


def _update_leaf(p, g, m, v, s, zero, maximize):
    if g.nse == 0:  # torch: "Skip update for empty grad"
        return p, m, v
    rows, grad, keep, n_rows = coalesce(g, maximize)
    shape = p.shape
    p2, m2, v2 = (x.reshape(n_rows, -1) for x in (p, m, v))
    at = jnp.where(keep, rows, 0)
    old_m, old_v, old_p = m2[at], v2[at], p2[at]  # exp_avg.sparse_mask(grad)._values(), ...
    # exp_avg_update_values = grad_values.sub(old_exp_avg_values).mul_(1 - beta1)
    update_m = K.mul(K.minus(grad, old_m), s["one_minus_beta1"], zero)
    # exp_avg_sq_update_values = grad_values.pow(2).sub_(old_exp_avg_sq_values).mul_(1 - beta2)
    update_v = K.mul(K.minus(K.multiply(grad, grad, zero), old_v), s["one_minus_beta2"], zero)
    new_m = K.plus(update_m, old_m)  # exp_avg.add_(make_sparse(..)); numer = update.add_(old)
    new_v = K.plus(update_v, old_v)
    denom = K.plus(K.sqrt(new_v), s["eps"])  # .sqrt_().add_(eps)
    # param.add_(make_sparse(-step_size * numer.div_(denom)))
    new_p = K.plus(old_p, K.mul(K.divide(new_m, denom, zero), s["neg_step_size"], zero))
    drop = jnp.where(keep, rows, n_rows)  # each kept row once: the scatter has no collisions

    def put(x2: jax.Array, new: jax.Array) -> jax.Array:
        return x2.at[drop].set(new, mode="drop").reshape(shape)

    return put(p2, new_p), put(m2, new_m), put(v2, new_v)
