"""Build an optimizer from a per-leaf (or per-group) rule: the mechanism behind every algorithm.

A torch optimizer's ``step()`` loops over parameters and applies the same rule to each; so does
:func:`leafwise`. You give

* ``init_leaf(p) -> tuple of buffers`` (one array per state field, shaped like ``p``),
* ``scalars(math) -> dict`` -- the step's hyper-parameter scalars, computed once per step with
  Python-double semantics (``math.resolve``, ``math.pow``, ``math.sqrt``, ``math.step``), and
* ``update_leaf(p, g, buffers, ctx) -> (p, buffers)`` -- the rule for one array, where
  ``ctx.scalars`` holds those scalars rounded to the leaf's math dtype, ``ctx.count`` the number
  of steps already taken and ``ctx.zero`` an opaque ``-0.0`` (see :mod:`jaxopt_lab.optim.kernels`).

and get an :class:`~jaxopt_lab.Optimizer` with validation, schedules, dtype handling and a
NamedTuple state ``(count, *fields)`` whose fields are pytrees shaped like the params.

Complex leaves (complex64/complex128) reach the rule as torch steps them: as their real view
(``torch.view_as_real``, a trailing axis of 2), their buffers too, with ``ctx.complex`` set so
that the ops torch runs on the complex tensors use :mod:`jaxopt_lab.optim.complex_params`; the
buffers stay complex in the state. They always take ``update_leaf`` (never ``update_leaves``'
kernels).

Some torch optimizers keep per-param state that is not shaped like the param, and need more than
the rounded step scalars; :func:`grouped` builds those. NAdam's ``mu_product`` and ASGD's ``eta``
and ``mu`` are 0-d tensors of torch's default dtype (float32, also for float64 or bfloat16
params: ``torch.optim.optimizer._get_scalar_dtype``), and Adafactor keeps a row and a column
factor (``(..., m, 1)`` and ``(..., 1, n)``) for a param with two or more dims but a full
``variance`` only for the others. Their per-step scalars depend on that state or on reductions
of the param (Adafactor's ``param.norm().item()``), so the rule needs the double arithmetic
(``ScalarMath``) itself. You give

* ``init_leaf(p) -> tuple``: each field's buffer for ``p`` -- an array of any shape and dtype,
  or ``None`` where the field does not apply to ``p`` (the state field then holds ``None`` at
  that leaf, or is ``None`` altogether if it applies to no leaf);
* ``scalars(math) -> dict``: the step's scalars, as above;
* ``update_group(ps, gs, buffers, ctx) -> (ps, buffers)``: the step for all leaves that share
  a math dtype (lists in tree order), with :class:`GroupContext`: the scalars rounded to the
  math dtype (``ctx.scalars``) and unrounded (``ctx.values``, Python floats, double-single or
  float64 values) with the ``ScalarMath`` that made them (``ctx.math``).

A field named in the state type's ``vector_fields`` (NAdam's ``mu_product``) holds one vector
instead of a tree: ``init_leaf`` gives a 0-d array for every leaf, the state keeps them stacked
(one entry per params leaf, in ``tree_leaves`` order) and ``update_group`` sees each leaf's entry
as a 0-d array. A jitted update then takes and returns one buffer for that field, not one per
leaf (each buffer crossing the jit boundary costs time; :func:`field_leaves` lists the entries).

Its state is checked leaf by leaf against what ``init_leaf`` gives for the params (shapes,
dtypes, where ``None``), so a state made for other params is a clear ``ValueError``. Complex
leaves reach ``update_group`` as their real views, together with the real views of their
complex buffers; other buffers are passed unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import complex_params as _complex
from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, Params, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_buffers,
    check_grads,
    check_params,
    check_real,
    check_state,
    is_dynamic,
    is_schedule,
    is_traced,
)
from jaxopt_lab.optim.kernels import math_dtype, opaque_zero


class ScalarMath(NamedTuple):
    """Scalar arithmetic for one step: Python doubles, double-single or float64 values."""

    count: jax.Array
    wide: bool

    def resolve(self, value: ScalarOrSchedule) -> _double.Real:
        """A hyper-parameter's value at this step (schedules are called with ``count``).

        A schedule that carries torch's doubles (``double_value(count) -> _double.Pair``, as every
        :mod:`jaxopt_lab.schedules` schedule does) hands them over exactly in every mode; any
        other ``count -> value`` callable gives a value in its own dtype.
        """
        if is_schedule(value):
            double_value = getattr(value, "double_value", None)
            exact = double_value is not None and not self.wide  # float64 holds the double
            value = double_value(self.count) if exact else value(self.count)
        if jnp.issubdtype(getattr(value, "dtype", float), jnp.complexfloating):
            value = jnp.real(value)  # optax.inject_hyperparams casts to complex params' dtype
        return _double.lift(value, self.wide, self.count)

    @property
    def step(self) -> _double.Real:
        """torch's 1-based ``step`` after its increment, as a double."""
        return _double.lift((self.count + 1).astype(jnp.float32), self.wide, self.count)

    def pow(self, base: _double.Real, exponent: jax.Array) -> _double.Real:
        """``base ** exponent`` for an integer exponent, in double precision: from host doubles
        (``table_pow``) for a Python ``base`` without x64, else by binary exponentiation."""
        if isinstance(base, float) and not self.wide:
            return _double.table_pow(base, exponent)
        return _double.ipow(base, exponent, self.wide)

    def sqrt(self, x: _double.Real) -> _double.Real:
        return _double.sqrt(x)


class LeafContext(NamedTuple):
    """What a per-leaf rule sees besides its arrays.

    ``complex``: the arrays are the real views of a complex leaf and its buffers; ops that torch
    runs on the complex tensors (before its ``view_as_real``) must use
    :mod:`jaxopt_lab.optim.complex_params`.
    """

    count: jax.Array
    scalars: Mapping[str, jax.Array]
    zero: jax.Array
    complex: bool = False


def l2_weight_decay(
    g: jax.Array, p: jax.Array, weight_decay: jax.Array, ctx: LeafContext, dynamic: bool
) -> jax.Array:
    """torch's ``if weight_decay != 0: grad = grad.add(param, alpha=weight_decay)``.

    On the complex tensors for a complex param (not fused there, as ATen's complex ``add``);
    ``dynamic``: the value is traced or scheduled, so torch's ``!= 0`` test is taken at run time.
    """
    if ctx.complex:
        decayed = _complex.add(g, p, weight_decay, ctx.zero)
    else:
        decayed = K.add(g, p, weight_decay)
    return jnp.where(weight_decay != 0, decayed, g) if dynamic else decayed


def materialized(values: Any, zero: jax.Array) -> Any:
    """``values`` (a pytree of arrays) unchanged, computed by loops of their own and read back.

    XLA:CPU fuses a cheap element-wise value into every consumer, where it is recomputed and
    compiled again. The result of a ``lax.cond`` is opaque to fusion: its operands are computed
    once (their own loops) and every reader reads the buffer. The branch taken passes them
    through (``zero``, the opaque ``-0.0`` -- NaN for a negative count -- is never ``> 0``); the
    other, never run, gives zeros. No arithmetic per element, every bit kept (subnormals too).
    """
    zeros = lambda v: jax.tree_util.tree_map(jnp.zeros_like, v)  # noqa: E731
    return jax.lax.cond(zero > 0, zeros, lambda v: v, values)


def constant_scalars(sources: Mapping[str, tuple[Any, ...]]) -> frozenset[str]:
    """The names whose hyper-parameters (``sources[name]``) are all numbers: constant scalars."""
    return frozenset(k for k, hs in sources.items() if not any(is_dynamic(h) for h in hs))


def computed_once(values: Any, zero: jax.Array, constant: frozenset[str] = frozenset()) -> Any:
    """``values`` (a pytree of arrays) unchanged, each traced float array computed once per step.

    XLA fuses a cheap element-wise value into every consumer that reads it, and compiles it
    there: a step scalar's double-single chain (``pow``, ``sqrt``, ``exp``/``log``: 100s to 1000s
    of HLO ops), or the vector of per-leaf step sizes each leaf slices its entry from, is then
    compiled once per leaf, and compile time grows with the leaf count (ASGD, Adafactor, RAdam,
    NAdam: minutes at 1,000 leaves before this). So the traced float arrays go through one
    :func:`materialized` (0-d ones of a dtype stacked into one vector) and their readers read
    one computed value. Other leaves pass unchanged: constants (XLA folds them into the loops as
    literals, so loops that need no step scalar do not wait for the step's scalar computation,
    and ``K.lerp`` picks its branch when compiled), integers, and, for a mapping, the names in
    ``constant`` (numeric hyper-parameters' scalars, see :func:`constant_scalars`).
    """
    kept = {}
    if constant and isinstance(values, Mapping):
        kept = {k: v for k, v in values.items() if k in constant}
        values = {k: v for k, v in values.items() if k not in constant}
    leaves, treedef = jax.tree_util.tree_flatten(values)
    scalars: dict[Any, list[int]] = {}
    arrays: list[int] = []
    for i, x in enumerate(leaves):
        if not is_traced(x) or not jnp.issubdtype(x.dtype, jnp.floating):
            continue  # a constant is not computed at run time at all
        (scalars.setdefault(x.dtype, []) if x.ndim == 0 else arrays).append(i)
    if not scalars and not arrays:
        out = leaves
    else:
        stacks = [jnp.stack([leaves[i] for i in idx]) for idx in scalars.values()]
        stacks, whole = materialized((stacks, [leaves[i] for i in arrays]), zero)
        out = list(leaves)
        for idx, once in zip(scalars.values(), stacks, strict=True):
            for j, i in enumerate(idx):
                out[i] = once[j]
        for i, once in zip(arrays, whole, strict=True):
            out[i] = once
    result = jax.tree_util.tree_unflatten(treedef, out)
    return {**result, **kept} if kept else result


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
UpdateLeaf = Callable[
    [jax.Array, jax.Array, tuple[Any, ...], LeafContext], tuple[jax.Array, Sequence[Any]]
]
Scalars = Callable[[ScalarMath], Mapping[str, _double.Real]]
UpdateLeaves = Callable[
    [list[jax.Array], list[jax.Array], list[tuple[Any, ...]], LeafContext],
    tuple[list[jax.Array], list[Sequence[Any]]],
]
UpdateGroup = Callable[
    [list[jax.Array], list[jax.Array], list[tuple[Any, ...]], GroupContext],
    tuple[list[jax.Array], list[Sequence[Any]]],
]


def make_state_type(name: str, fields: Sequence[str]) -> type:
    """A NamedTuple state class ``(count, *fields)``."""
    return NamedTuple(name, [("count", jax.Array), *[(f, Any) for f in fields]])


def _validate(params: Params, name: str, complex_params: bool) -> None:
    check_params(params)
    if not complex_params:
        check_real(params, name)


def _by_math_dtype(leaves: list[Any]) -> dict[tuple[Any, bool], list[int]]:
    """Leaf indices grouped by (math dtype, complex), in order; one set of scalars per group."""
    groups: dict[tuple[Any, bool], list[int]] = {}
    for i, p in enumerate(leaves):
        is_complex = bool(jnp.iscomplexobj(p))
        real_dtype = jnp.finfo(p.dtype).dtype  # complex64 -> float32, float32 -> float32
        groups.setdefault((math_dtype(real_dtype), is_complex), []).append(i)
    return groups


def _step_scalars(
    scalars: Scalars, count: jax.Array, md: Any
) -> tuple[ScalarMath, dict[str, _double.Real], dict[str, jax.Array]]:
    """The step's scalars for math dtype ``md``: the ``ScalarMath``, the values, and the values
    rounded once to ``md``."""
    math = ScalarMath(count, wide=md == jnp.float64)
    values = dict(scalars(math))
    rounded = {k: _double.round_to(v, md) for k, v in values.items()}
    return math, values, rounded


def leafwise(
    name: str,
    init_leaf: InitLeaf,
    update_leaf: UpdateLeaf,
    scalars: Scalars,
    state_type: type | None = None,
    fields: Sequence[str] = (),
    update_leaves: UpdateLeaves | None = None,
    complex_params: bool = True,
) -> Optimizer:
    """Turn a per-leaf update rule into an :class:`Optimizer` over any pytree.

    Args:
      name: the optimizer's name, used in error messages.
      init_leaf: ``p -> tuple`` of initial buffers, one per field (``None`` for an unused field).
      update_leaf: ``(p, g, buffers, ctx) -> (new_p, new_buffers)`` for one array.
      scalars: ``math -> {name: value}``, the step's hyper-parameter scalars.
      state_type: a NamedTuple class ``(count, *fields)``; made from ``fields`` when omitted.
      fields: the buffer field names (only needed without ``state_type``).
      update_leaves: optional ``(ps, gs, buffers, ctx) -> (new_ps, new_buffers)`` for all the
        leaves that share a math dtype at once (lists, one entry per leaf), to update them in
        one kernel call (:mod:`jaxopt_lab.optim.native`); it must equal ``update_leaf`` leaf by
        leaf. Default: ``update_leaf`` on each. Complex leaves never take it.
      complex_params: whether complex leaves are accepted (stepped on their real view, see the
        module docstring); ``False`` raises a ``TypeError`` for them, as torch's Adafactor, Muon
        and SparseAdam do.

    Returns:
      An optimizer whose state is ``state_type(count, *fields)``, ``count`` an int32 scalar.

    Example (sign-SGD)::

        opt = jol.leafwise(
            "sign_sgd",
            init_leaf=lambda p: (),
            update_leaf=lambda p, g, bufs, ctx: (p - ctx.scalars["lr"] * jnp.sign(g), ()),
            scalars=lambda math: {"lr": math.resolve(0.01)},
        )
    """
    if state_type is None:
        state_type = make_state_type(f"{name.title().replace('_', '')}State", fields)
    field_names = state_type._fields[1:]

    def each(ps, gs, bufs, ctx):
        out = [update_leaf(p, g, b, ctx) for p, g, b in zip(ps, gs, bufs, strict=True)]
        return [p for p, _ in out], [b for _, b in out]

    many = update_leaves or each

    def init_one(p: jax.Array) -> tuple[Any, ...]:
        if not jnp.iscomplexobj(p):
            return tuple(init_leaf(p))
        return tuple(
            None if b is None else _complex.view_as_complex(b)
            for b in init_leaf(_complex.view_as_real(p))
        )

    def init(params: Params) -> Any:
        _validate(params, name, complex_params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        per_leaf = [init_one(p) for p in leaves]
        columns = []
        for i, _ in enumerate(field_names):
            col = [bufs[i] for bufs in per_leaf]
            columns.append(None if col[0] is None else jax.tree_util.tree_unflatten(treedef, col))
        return state_type(jnp.zeros((), jnp.int32), *columns)

    def on_complex(ps, gs, bufs, ctx):  # real views in, complex arrays out; pure rule only
        real = [tuple(None if b is None else _complex.view_as_real(b) for b in bb) for bb in bufs]
        views = [_complex.view_as_real(x) for x in (*ps, *gs)]
        new_ps, new_bufs = each(views[: len(ps)], views[len(ps) :], real, ctx)
        back = [
            tuple(None if b is None else _complex.view_as_complex(b) for b in bb) for bb in new_bufs
        ]
        return [_complex.view_as_complex(p) for p in new_ps], back

    def update(params: Params, grads: Any, state: Any) -> tuple[Params, Any]:
        _validate(params, name, complex_params)
        check_grads(params, grads)
        check_state(state, state_type, name)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        g_leaves = jax.tree_util.tree_leaves(grads)
        columns = []
        for field in field_names:
            tree = getattr(state, field)
            if tree is not None:
                check_buffers(params, tree, field)
                columns.append(jax.tree_util.tree_leaves(tree))
            else:
                columns.append([None] * len(leaves))
        count = jnp.asarray(state.count, jnp.int32)

        def context(md: Any, is_complex: bool) -> LeafContext:
            _, _, rounded = _step_scalars(scalars, count, md)
            return LeafContext(count, rounded, opaque_zero(count, md), is_complex)

        new_leaves: list[Any] = [None] * len(leaves)
        new_columns: list[list[Any]] = [[None] * len(leaves) for _ in field_names]
        for (md, is_complex), idx in _by_math_dtype(leaves).items():
            ps, gs = [leaves[i] for i in idx], [g_leaves[i] for i in idx]
            bufs = [tuple(col[i] for col in columns) for i in idx]
            step = on_complex if is_complex else many
            new_ps, new_bufs = step(ps, gs, bufs, context(md, is_complex))
            for j, i in enumerate(idx):
                new_leaves[i] = new_ps[j]
                for col, b in zip(new_columns, new_bufs[j], strict=True):
                    col[i] = b
        new_state = state_type(
            count + 1,
            *[
                None if getattr(state, f) is None else jax.tree_util.tree_unflatten(treedef, col)
                for f, col in zip(field_names, new_columns, strict=True)
            ],
        )
        return jax.tree_util.tree_unflatten(treedef, new_leaves), new_state

    # Always compiled: op-by-op (eager) execution would round ``a + s * b`` twice where the
    # compiled kernel -- like torch's -- fuses it, so eager and jit results would differ.
    # Validation still runs (at trace time) on every new input structure.
    return Optimizer(init, jax.jit(update))


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


def vector_fields(state_type: type) -> tuple[str, ...]:
    """The fields of a :func:`grouped` state type that hold one vector, an entry per params leaf
    (``state_type.vector_fields``), rather than a tree shaped like the params."""
    return tuple(getattr(state_type, "vector_fields", ()))


def field_leaves(state: Any, field: str) -> list[Any]:
    """A state field's value at each params leaf, in ``tree_leaves`` order: a vector field's
    entries (0-d arrays), else the field's leaves (``None`` where the field does not apply)."""
    value = getattr(state, field)
    if field in vector_fields(type(state)):
        return [value[i] for i in range(len(value))]
    return jax.tree_util.tree_leaves(value, is_leaf=lambda x: x is None)


def _check_vector(field: str, value: Any, expected: list[Any]) -> list[Any]:
    """A vector field's entries, one per leaf (0-d slices), after checking its shape and dtype."""
    n, want = len(expected), expected[0].dtype  # (params are never empty: check_params)
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        got = f"is a {type(value).__name__}"
    elif value.shape != (n,) or value.dtype != want:
        got = f"has shape {value.shape} and dtype {value.dtype}"
    else:
        return [jax.lax.index_in_dim(value, i, keepdims=False) for i in range(n)]
    raise ValueError(
        f"optimizer state field {field!r} does not match params: it {got}, expected shape ({n},) "
        f"and dtype {want} (one entry per params leaf)"
    )


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
      state_type: a NamedTuple class ``(count, *fields)``; its ``vector_fields`` (if any) hold
        one vector of the leaves' 0-d buffers (see the module docstring).
      complex_params: accept complex leaves (stepped on their real views); ``False`` raises
        torch's ``TypeError``.

    Returns:
      An optimizer whose state is ``state_type(count, *fields)``, ``count`` an int32 scalar.
    """
    field_names = state_type._fields[1:]
    vectors = vector_fields(state_type)

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
        for i, f in enumerate(field_names):
            col = [bufs[i] for bufs in per_leaf]
            if f in vectors:  # (params are never empty: check_params)
                out.append(jnp.stack(col))
                continue
            everywhere_none = all(b is None for b in col)
            out.append(None if everywhere_none else jax.tree_util.tree_unflatten(treedef, col))
        return out

    def init(params: Params) -> Any:
        _validate(params, name, complex_params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        per_leaf = [init_one(p) for p in leaves]
        return state_type(jnp.zeros((), jnp.int32), *columns(per_leaf, treedef))

    def update(params: Params, grads: Any, state: Any) -> tuple[Params, Any]:
        _validate(params, name, complex_params)
        check_grads(params, grads)
        check_state(state, state_type, name)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = [jax.tree_util.keystr(path) or "<root>" for path, _ in with_paths]
        leaves = [p for _, p in with_paths]
        g_leaves = jax.tree_util.tree_leaves(grads)
        expected = [jax.eval_shape(init_one, p) for p in leaves]
        cols = [
            _check_vector(f, getattr(state, f), [e[i] for e in expected])
            if f in vectors
            else _check_field(f, getattr(state, f), treedef, [e[i] for e in expected], paths)
            for i, f in enumerate(field_names)
        ]
        count = jnp.asarray(state.count, jnp.int32)

        def context(md: Any, is_complex: bool) -> GroupContext:
            math, values, rounded = _step_scalars(scalars, count, md)
            zero = opaque_zero(count, md)
            return GroupContext(count, rounded, values, math, zero, leaves[0].dtype, is_complex)

        new_leaves: list[Any] = [None] * len(leaves)
        new_bufs: list[tuple[Any, ...]] = [()] * len(leaves)
        for (md, is_complex), idx in _by_math_dtype(leaves).items():
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
