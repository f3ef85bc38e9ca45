"""Optimizers whose per-parameter state is not shaped like the parameter.

:func:`~jaxopt_lab.leafwise` keeps one buffer per state field shaped and typed like each param.
Some torch optimizers keep other tensors per param: NAdam's ``mu_product`` and ASGD's ``eta``
and ``mu`` are 0-d tensors of torch's default dtype (float32, also for float64 or bfloat16
params: ``torch.optim.optimizer._get_scalar_dtype``), and Adafactor keeps a row and a column
factor (``(..., m, 1)`` and ``(..., 1, n)``) for a param with two or more dims but a full
``variance`` only for the others. And their per-step scalars depend on that state or on
reductions of the param (Adafactor's ``param.norm().item()``), so the rule needs the double
arithmetic (``ScalarMath``) itself, not only the rounded step scalars.

:func:`grouped` builds an :class:`~jaxopt_lab.Optimizer` from

* ``init_leaf(p) -> tuple``: each field's buffer for ``p`` -- an array of any shape and dtype,
  or ``None`` where the field does not apply to ``p`` (the state field then holds ``None`` at
  that leaf, or is ``None`` altogether if it applies to no leaf);
* ``scalars(math) -> dict``: the step's scalars, as in ``leafwise``;
* ``update_group(ps, gs, buffers, ctx) -> (ps, buffers)``: the step for all leaves that share
  a math dtype (lists in tree order), with :class:`GroupContext`: the scalars rounded to the
  math dtype (``ctx.scalars``) and unrounded (``ctx.values``, Python floats, double-single or
  float64 values) with the ``ScalarMath`` that made them (``ctx.math``).

The state is checked leaf by leaf against what ``init_leaf`` gives for the params (shapes,
dtypes, where ``None``), so a state made for other params is a clear ``ValueError``. Complex
leaves reach ``update_group`` as torch steps them, as their real views (``torch.view_as_real``),
together with the real views of their complex buffers; other buffers are passed unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import complex_params as _complex
from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim.base import Optimizer, Params
from jaxopt_lab.optim.checks import check_grads, check_params, check_real, check_state
from jaxopt_lab.optim.kernels import math_dtype, opaque_zero
from jaxopt_lab.optim.leafwise import ScalarMath


class GroupContext(NamedTuple):
    """What a group rule sees besides its arrays.

    ``scalars``: the step's scalars rounded to the group's math dtype; ``values``: the same
    unrounded; ``math``: the ``ScalarMath`` (x64 semantics of the group) for further double
    arithmetic; ``zero``: an opaque ``-0.0`` of the math dtype; ``first_dtype``: the dtype of the
    first leaf of all params (torch's first parameter); ``complex``: the arrays are real views.
    """

    count: jax.Array
    scalars: Mapping[str, jax.Array]
    values: Mapping[str, _double.Real]
    math: ScalarMath
    zero: jax.Array
    first_dtype: Any
    complex: bool = False


InitLeaf = Callable[[jax.Array], Sequence[jax.Array | None]]
UpdateGroup = Callable[
    [list[jax.Array], list[jax.Array], list[tuple[Any, ...]], GroupContext],
    tuple[list[jax.Array], list[Sequence[Any]]],
]
Scalars = Callable[[ScalarMath], Mapping[str, _double.Real]]


def _real_views(bufs: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(
        _complex.view_as_real(b) if b is not None and jnp.iscomplexobj(b) else b for b in bufs
    )


def _complex_like(new: Sequence[Any], old: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(
        _complex.view_as_complex(n) if o is not None and jnp.iscomplexobj(o) else n
        for n, o in zip(new, old, strict=True)
    )


def _check_field(field: str, tree: Any, treedef: Any, expected: list[Any], paths: list[str]):
    """The field's buffers, one per leaf (``None`` where the field does not apply)."""

    def fail(why: str) -> ValueError:
        return ValueError(f"optimizer state field {field!r} does not match params: {why}")

    if tree is None:
        if any(e is not None for e in expected):
            raise fail("it is None, but these params need it")
        return [None] * len(expected)
    try:
        leaves = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise fail(f"tree structure differs ({err})") from None
    for path, leaf, want in zip(paths, leaves, expected, strict=True):
        if (leaf is None) != (want is None):
            need = "None" if want is None else f"an array of shape {want.shape}"
            raise fail(f"state leaf {path} is {'None' if leaf is None else 'an array'}; {need}")
        if leaf is None:
            continue
        shape, dtype = jnp.shape(leaf), getattr(leaf, "dtype", None)
        if shape != want.shape or dtype != want.dtype:
            raise fail(
                f"state leaf {path} has shape {shape} and dtype {dtype}, expected "
                f"{want.shape} and {want.dtype}"
            )
    return leaves


def grouped(
    name: str,
    init_leaf: InitLeaf,
    update_group: UpdateGroup,
    scalars: Scalars,
    state_type: type,
    complex_params: bool = True,
) -> Optimizer:
    """Turn a per-dtype-group rule into an :class:`Optimizer` (see the module docstring).

    Args:
      name: the optimizer's name, for messages.
      init_leaf: ``p -> tuple`` of buffers, one per field; any shape and dtype, or ``None``.
      update_group: ``(ps, gs, buffers, ctx) -> (new_ps, new_buffers)`` for the leaves of one
        math dtype (and complexity), in tree order.
      scalars: ``math -> {name: value}``, the step's hyper-parameter scalars.
      state_type: a NamedTuple class ``(count, *fields)``.
      complex_params: accept complex leaves (stepped on their real views); ``False`` raises
        torch's ``TypeError``.

    Returns:
      An optimizer whose state is ``state_type(count, *fields)``, ``count`` an int32 scalar.
    """
    field_names = state_type._fields[1:]

    def validate(params: Params) -> None:
        check_params(params)
        if not complex_params:
            check_real(params, name)

    def init_one(p: jax.Array) -> tuple[Any, ...]:
        if not jnp.iscomplexobj(p):
            return tuple(init_leaf(p))
        bufs = tuple(init_leaf(_complex.view_as_real(p)))
        # Buffers shaped like the real view are the complex buffers torch keeps, viewed.
        view_shape = (*p.shape, 2)
        return tuple(
            _complex.view_as_complex(b) if b is not None and b.shape == view_shape else b
            for b in bufs
        )

    def columns(per_leaf: list[tuple[Any, ...]], treedef: Any) -> list[Any]:
        out = []
        for i, _ in enumerate(field_names):
            col = [bufs[i] for bufs in per_leaf]
            everywhere_none = all(b is None for b in col)
            out.append(None if everywhere_none else jax.tree_util.tree_unflatten(treedef, col))
        return out

    def init(params: Params) -> Any:
        validate(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        per_leaf = [init_one(p) for p in leaves]
        return state_type(jnp.zeros((), jnp.int32), *columns(per_leaf, treedef))

    def update(params: Params, grads: Any, state: Any) -> tuple[Params, Any]:
        validate(params)
        check_grads(params, grads)
        check_state(state, state_type, name)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = [jax.tree_util.keystr(path) or "<root>" for path, _ in with_paths]
        leaves = [p for _, p in with_paths]
        g_leaves = jax.tree_util.tree_leaves(grads)
        expected = [jax.eval_shape(init_one, p) for p in leaves]
        cols = [
            _check_field(f, getattr(state, f), treedef, [e[i] for e in expected], paths)
            for i, f in enumerate(field_names)
        ]
        count = jnp.asarray(state.count, jnp.int32)

        def context(md: Any, is_complex: bool) -> GroupContext:
            math = ScalarMath(count, wide=md == jnp.float64)
            values = dict(scalars(math))
            rounded = {k: _double.round_to(v, md) for k, v in values.items()}
            zero = opaque_zero(count, md)
            return GroupContext(count, rounded, values, math, zero, leaves[0].dtype, is_complex)

        groups: dict[tuple[Any, bool], list[int]] = {}
        for i, p in enumerate(leaves):
            is_complex = bool(jnp.iscomplexobj(p))
            groups.setdefault((math_dtype(jnp.finfo(p.dtype).dtype), is_complex), []).append(i)
        new_leaves: list[Any] = [None] * len(leaves)
        new_bufs: list[tuple[Any, ...]] = [()] * len(leaves)
        for (md, is_complex), idx in groups.items():
            bufs = [tuple(col[i] for col in cols) for i in idx]
            ps, gs = [leaves[i] for i in idx], [g_leaves[i] for i in idx]
            if is_complex:
                ps = [_complex.view_as_real(p) for p in ps]
                gs = [_complex.view_as_real(g) for g in gs]
                views = [_real_views(b) for b in bufs]
                out_ps, out_bufs = update_group(ps, gs, views, context(md, True))
                out_ps = [_complex.view_as_complex(p) for p in out_ps]
                out_bufs = [_complex_like(n, o) for n, o in zip(out_bufs, bufs, strict=True)]
            else:
                out_ps, out_bufs = update_group(ps, gs, bufs, context(md, False))
            for j, i in enumerate(idx):
                new_leaves[i], new_bufs[i] = out_ps[j], tuple(out_bufs[j])
        new_state = state_type(count + 1, *columns(new_bufs, treedef))
        return jax.tree_util.tree_unflatten(treedef, new_leaves), new_state

    # Always compiled, as ``leafwise`` (eager execution would round fused operations twice).
    return Optimizer(init, jax.jit(update))
