"""Opt-in layouts for a faster update step, bitwise equal to the plain leafwise one.

Two wrappers around any optimizer whose state is ``(count, *fields)`` with every field ``None`` or
a pytree shaped like the params (all of :func:`~jaxopt_lab.sgd`, :func:`~jaxopt_lab.adam`,
:func:`~jaxopt_lab.adamw`, :func:`~jaxopt_lab.rmsprop`, :func:`~jaxopt_lab.adagrad`):

* :func:`chunked` -- cache blocking for large leaves. XLA:CPU compiles an Adam step into three
  loops over memory (new ``m``, new ``v``, new ``p``), ~40 bytes per parameter instead of 28.
  ``chunked`` runs the same per-leaf rule over cache-sized slices in a ``fori_loop``, so the
  second and third loop read from cache: one pass over memory. It needs the jit option
  :data:`COMPILER_OPTIONS` (``jax.jit(..., compiler_options=COMPILER_OPTIONS)``); without it
  XLA:CPU copies every loop-carried buffer on every iteration (10-100x slower).
* :func:`flat` -- one buffer per dtype for the optimizer state of many small leaves: the update
  ravels params and grads, runs one chain of loops instead of one per leaf, and splits the result.

On CPU the one-pass kernels of :mod:`jaxopt_lab.optim.native` (used by default for Adam, AdamW,
AMSGrad and momentum SGD) supersede ``chunked``: one pass over memory on all cores, where
``chunked``'s slices run on one thread. ``flat`` still pays off for very many small leaves
(its one buffer also goes to the kernel).

Both are only for rules that are elementwise (every optimizer in this library); a rule that takes
a norm over a leaf (LAMB-style) would see slices or the concatenation instead of the leaf.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_lab.optim.base import Optimizer, Params

COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_copy_insertion_use_region_analysis": True}
"""The XLA:CPU option that lets a ``fori_loop`` update its carried buffers in place."""

DEFAULT_CHUNK = 65536
"""Elements per slice: 7 slices of 256 KiB (p, g, 2 state fields, 3 outputs) fit in L2/L3."""


def _split_state(state: Any, treedef: Any) -> tuple[Any, list[list[Any] | None]]:
    """``state -> (count, columns)``: each field's leaves, or None; checks the state's shape."""
    if not (isinstance(state, tuple) and getattr(state, "_fields", ("",))[0] == "count"):
        raise TypeError(f"expected a leafwise optimizer state (count, *fields), got {type(state)}")
    columns: list[list[Any] | None] = []
    for field in state._fields[1:]:
        tree = getattr(state, field)
        if tree is None:
            columns.append(None)
            continue
        if jax.tree_util.tree_structure(tree) != treedef:
            raise TypeError(f"state field {field!r} is not shaped like the params")
        columns.append(jax.tree_util.tree_leaves(tree))
    return state.count, columns


def _sub_state(state: Any, count: jax.Array, columns: list[list[Any] | None]) -> Any:
    return type(state)(count, *columns)


def chunked(opt: Optimizer, chunk_size: int = DEFAULT_CHUNK) -> Optimizer:
    """``opt`` with every leaf of at least ``2 * chunk_size`` elements updated slice by slice.

    Only optimizers with two or more state buffers per leaf (Adam, AdamW, AMSGrad, centered
    RMSprop, ...) are sliced; for the others the wrapper is the identity.

    Same state, same results bit for bit (the rule is elementwise; each element sees the same
    operations in the same order). Jit the update with :data:`COMPILER_OPTIONS` and donate
    params and state::

        opt = jol.chunked(jol.adam(1e-3))
        step = jax.jit(opt.update, donate_argnums=(0, 2), compiler_options=jol.COMPILER_OPTIONS)

    Args:
      opt: a leafwise optimizer (state ``(count, *fields)``, fields shaped like the params).
      chunk_size: elements per slice; the default keeps one slice's working set in cache.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with ``opt``'s ``init`` and state.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    def update(params: Params, grads: Any, state: Any) -> tuple[Params, Any]:
        leaves, treedef = jax.tree_util.tree_flatten(params)
        g_leaves = treedef.flatten_up_to(grads)
        count, columns = _split_state(state, treedef)
        # Only rules with two or more state buffers are split into several loops by XLA (SGD
        # is one loop, momentum SGD one or two); for them slicing only adds loop overhead.
        n_bufs = sum(col is not None for col in columns)
        big = [i for i, p in enumerate(leaves) if p.size >= 2 * chunk_size and n_bufs >= 2]
        small = [i for i in range(len(leaves)) if i not in set(big)]
        new_leaves: list[Any] = list(leaves)
        new_columns = [None if col is None else list(col) for col in columns]
        new_count = None

        def run(ps, gs, cols):
            new_p, new_s = opt.update(ps, gs, _sub_state(state, count, cols))
            _, out_cols = _split_state(new_s, jax.tree_util.tree_structure(ps))
            return new_p, new_s.count, out_cols

        if small:
            pick = lambda xs: [xs[i] for i in small]  # noqa: E731
            ps, new_count, cols = run(
                pick(leaves), pick(g_leaves), [None if c is None else pick(c) for c in columns]
            )
            for j, i in enumerate(small):
                new_leaves[i] = ps[j]
                for col, out in zip(new_columns, cols, strict=True):
                    if col is not None:
                        col[i] = out[j]
        for i in big:
            shape, n = leaves[i].shape, leaves[i].size
            p, g = leaves[i].reshape(-1), g_leaves[i].reshape(-1)
            bufs = [None if c is None else c[i].reshape(-1) for c in columns]
            live = [k for k, b in enumerate(bufs) if b is not None]
            n_full = n // chunk_size

            def body(k, carry, g=g, bufs=bufs, live=live):
                p, live_bufs, _ = carry
                start = k * chunk_size
                cut = lambda x, start=start: jax.lax.dynamic_slice_in_dim(x, start, chunk_size)  # noqa: E731
                cols = [None] * len(bufs)
                for k2, b in zip(live, live_bufs, strict=True):
                    cols[k2] = [cut(b)]
                (pc,), c, out = run([cut(p)], [cut(g)], cols)
                put = lambda x, y, start=start: jax.lax.dynamic_update_slice_in_dim(x, y, start, 0)  # noqa: E731
                new_bufs = tuple(put(b, out[k2][0]) for k2, b in zip(live, live_bufs, strict=True))
                return put(p, pc), new_bufs, c

            live_bufs = tuple(bufs[k] for k in live)
            p, live_bufs, c = jax.lax.fori_loop(
                0, n_full, body, (p, live_bufs, jnp.asarray(count, jnp.int32))
            )
            tail = n - n_full * chunk_size
            if tail:  # the remainder, sliced as the loop does so that it is updated in place
                # (a start the compiler cannot fold: a static slice makes XLA rewrite the whole
                # buffer instead of the tail; count >> 31 is 0 for any count >= 0)
                start = n_full * chunk_size + (jnp.asarray(count, jnp.int32) >> 31)
                cut = partial(jax.lax.dynamic_slice_in_dim, start_index=start, slice_size=tail)
                put = partial(jax.lax.dynamic_update_slice_in_dim, start_index=start, axis=0)
                cols = [None] * len(bufs)
                for k2, b in zip(live, live_bufs, strict=True):
                    cols[k2] = [cut(b)]
                (pt,), c, out = run([cut(p)], [cut(g)], cols)
                p = put(p, pt)
                live_bufs = tuple(put(b, out[k2][0]) for k2, b in zip(live, live_bufs, strict=True))
            new_count = c if new_count is None else new_count
            new_leaves[i] = p.reshape(shape)
            for k2, b in zip(live, live_bufs, strict=True):
                new_columns[k2][i] = b.reshape(shape)
        new_state = type(state)(
            new_count,
            *[None if col is None else treedef.unflatten(col) for col in new_columns],
        )
        return treedef.unflatten(new_leaves), new_state

    return Optimizer(opt.init, update)


def _ravel(leaves: list[jax.Array]) -> dict[str, jax.Array]:
    """Leaves -> one 1-D buffer per dtype (in leaf order)."""
    groups: dict[str, list[jax.Array]] = {}
    for x in leaves:
        groups.setdefault(jnp.dtype(x.dtype).name, []).append(x.reshape(-1))
    return {k: v[0] if len(v) == 1 else jnp.concatenate(v) for k, v in groups.items()}


def _unravel(flat: dict[str, jax.Array], like: list[Any]) -> list[jax.Array]:
    offsets: dict[str, int] = {}
    out = []
    for x in like:
        key = jnp.dtype(x.dtype).name
        start = offsets.get(key, 0)
        out.append(flat[key][start : start + x.size].reshape(x.shape))
        offsets[key] = start + x.size
    return out


def flat(opt: Optimizer) -> Optimizer:
    """``opt`` with its state held as one 1-D buffer per dtype (for many small leaves).

    ``init(params)`` returns ``opt``'s state type whose fields are ``{dtype name: buffer}``
    dicts; ``update(params, grads, state)`` takes and returns params as the usual pytree.
    :func:`unflatten_state` turns the state back into ``opt``'s leafwise state.

    Args:
      opt: a leafwise optimizer (state ``(count, *fields)``, fields shaped like the params).

    Returns:
      An :class:`~jaxopt_lab.Optimizer`; results are bitwise equal to ``opt``'s.
    """

    def init(params: Params) -> Any:
        treedef = jax.tree_util.tree_structure(params)
        state = opt.init(params)
        count, columns = _split_state(state, treedef)
        return type(state)(count, *[None if c is None else _ravel(c) for c in columns])

    def update(params: Params, grads: Any, state: Any) -> tuple[Params, Any]:
        leaves, treedef = jax.tree_util.tree_flatten(params)
        g_leaves = treedef.flatten_up_to(grads)
        new_p, new_state = opt.update(_ravel(leaves), _ravel(g_leaves), state)
        return treedef.unflatten(_unravel(new_p, leaves)), new_state

    return Optimizer(init, update)


def unflatten_state(state: Any, params: Params) -> Any:
    """A :func:`flat` state as the wrapped optimizer's own (leafwise) state for ``params``."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    fields = [getattr(state, f) for f in state._fields[1:]]
    return type(state)(
        state.count,
        *[None if f is None else treedef.unflatten(_unravel(f, leaves)) for f in fields],
    )
