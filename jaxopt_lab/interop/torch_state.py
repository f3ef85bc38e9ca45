"""Hand optimizer state between ``torch.optim`` and jaxopt_lab, both ways, without changing a bit.

A torch optimizer keeps its state per parameter, keyed by an integer *param id*: the position of
the parameter in its ``param_groups``, counted across groups in order (group 0's params are
``0..k-1``, group 1's ``k..``). jaxopt_lab keeps it per leaf of a params pytree. The map between
the two is ``ids``:

* by default, torch param id ``k`` is leaf ``k`` of ``jax.tree_util.tree_leaves(params)``
  (so pass the torch parameters in that order, e.g. ``torch.optim.Adam(params_to_torch(p))``);
* otherwise ``ids`` is a pytree of ints with the params' structure, holding each leaf's torch id
  (``{"w": 1, "b": 0}``: leaf ``w`` is torch param 1).

Every torch.optim algorithm hands off (``KINDS``). A buffer maps like its parameter: the
same shape (most), a 0-d tensor (ASGD's ``eta``/``mu``; NAdam's ``mu_product``, which ours keeps
as one vector, an entry per leaf, as the state type's ``vector_fields`` says), or factors torch
keeps for some params only (Adafactor: ``row_var``/``col_var`` for params of two or more dims,
``variance`` for the others; ours hold an empty placeholder where torch has no key, as the state
type's ``torch_keys`` says). L-BFGS is the exception:
torch keeps its whole state under its *first* param (``d``, ``t``, ``old_dirs``, ``old_stps``,
``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``n_iter``, ``func_evals``), its vectors
over all params flattened in torch's param order, and allows one param group only. The
hand-off::

    # torch -> jaxopt_lab
    opt = jol.torch_state.optimizer_from_torch(torch_opt)  # same algorithm and hyper-params
    params = jol.torch_state.params_from_torch(list(model.parameters()), like=params)
    state = jol.torch_state.state_from_torch(torch_opt, params)  # == init + k steps

    # jaxopt_lab -> torch
    torch_opt.load_state_dict(jol.torch_state.state_to_torch(state, params, torch_opt))

One torch group becomes a plain state (``AdamState``...); several become a
:class:`~jaxopt_lab.ParamGroupsState` with groups named ``"group0"``, ``"group1"``... (or
``group_names``), matching :func:`optimizer_from_torch`'s :func:`~jaxopt_lab.param_groups`.

Differences from torch.optim:
  * torch stores a float32 ``step`` tensor per parameter; jaxopt_lab one int32 ``count`` per
    group. Every parameter of a group must have taken the same number of steps (a parameter
    that missed steps because it had no gradient cannot be represented: ``ValueError``).
  * torch's SGD stores no step at all. Its count is only used to tell the first step (and by
    schedules): ``state_from_torch`` sets it to 1 when momentum buffers exist, else 0, unless you
    pass ``count`` (the number of steps taken, needed when a hyper-parameter is a schedule).
  * Buffers must already have the dtype of their parameter (torch's ``load_state_dict`` would
    cast silently; here a mismatch is a ``TypeError``).
  * SparseAdam's ``step`` is a Python int in torch (its bias corrections run in double
    precision); it is written back as one (``registry`` row: ``torch_int_step``).
  * L-BFGS: torch keeps no count of ``step`` calls (``state_from_torch`` sets ``count`` to 0
    unless passed; it matters only for a scheduled ``lr``); its history lists, oldest first,
    are our ring buffers unrolled (see :func:`~jaxopt_lab.optim.lbfgs.lbfgs_state_to_torch`);
    torch's scratch list ``al`` is dropped (torch recreates it).

Length: one module for the whole hand-off (param ids and groups, per-leaf states, L-BFGS's flat
state, both directions), each reader next to the writer it mirrors.

torch is imported only when a function here is called.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab import registry
from jaxopt_lab.optim.adagrad import AdagradState
from jaxopt_lab.optim.adam import AdamState
from jaxopt_lab.optim.base import Optimizer, Params, State
from jaxopt_lab.optim.groups import ParamGroupsState, param_groups
from jaxopt_lab.optim.lbfgs import LBFGSState, lbfgs_state_from_torch, lbfgs_state_to_torch
from jaxopt_lab.optim.leafwise import field_leaves, vector_fields
from jaxopt_lab.optim.rmsprop import RMSpropState
from jaxopt_lab.optim.sgd import SGDState

# States whose every buffer is laid out like its parameter (relayout_state moves them as is).
_ELEMENTWISE_STATES = (SGDState, AdamState, RMSpropState, AdagradState)

__all__ = [
    "optimizer_from_torch",
    "params_from_torch",
    "params_to_torch",
    "relayout_state",
    "state_from_torch",
    "state_to_torch",
    "torch_kind",
]

KINDS = registry.names()
"""The torch optimizers that can be handed over (``jaxopt_lab.registry`` names)."""

# torch implementation switches: in every param group, never a hyper-parameter of ours.
_SWITCHES = frozenset({"foreach", "fused", "capturable", "differentiable"})


def _hyper(kind: str) -> tuple[str, ...]:
    """torch param_group keys that are hyper-parameters of ours (same names, the factory's)."""
    return (*(k for k in registry.get(kind).defaults() if k not in _SWITCHES), "lr")


_MAX_STEP = 2**24  # float32 counts every integer up to here; torch's own step is exact below it


# ---------------------------------------------------------------------------------------------
# Reading the torch side


def _state_dict(source: Any) -> tuple[dict[str, Any], str | None]:
    """``(state_dict, class kind or None)`` from an optimizer, a state_dict or param_groups."""
    if hasattr(source, "state_dict") and hasattr(source, "param_groups"):
        return source.state_dict(), type(source).__name__.lower()
    if isinstance(source, Mapping) and "param_groups" in source:
        return {"state": source.get("state", {}), "param_groups": source["param_groups"]}, None
    if isinstance(source, Sequence) and all(isinstance(g, Mapping) for g in source):
        return {"state": {}, "param_groups": list(source)}, None
    raise TypeError(
        "expected a torch.optim optimizer, its state_dict(), or its state_dict()['param_groups'], "
        f"got {type(source).__name__}"
    )


def _group_kind(group: Mapping[str, Any]) -> str:
    """The algorithm whose hyper-parameters are the most specific subset of the group's keys
    ("adam" for Adam and AdamW alike: told apart by decoupled_weight_decay)."""
    fits = [k for k in KINDS if k != "adamw" and set(_hyper(k)) <= set(group)]
    if fits:
        return max(fits, key=lambda k: len(_hyper(k)))
    # A partial group (hand-written): the first five algorithms' distinctive keys.
    for key, kind in (("nesterov", "sgd"), ("betas", "adam"), ("centered", "rmsprop")):
        if key in group:
            return kind
    if "lr_decay" in group:
        return "adagrad"
    raise ValueError(
        f"unsupported torch optimizer: a param group with keys {sorted(group)} is none of "
        f"{', '.join(KINDS)}"
    )


def torch_kind(source: Any, kind: str | None = None) -> str:
    """The optimizer's kind: its :mod:`~jaxopt_lab.registry` name (``"sgd"``, ``"adamw"``...).

    Read from the optimizer's class when given one, else from the param_groups' keys. ``kind``,
    when given, is checked against what torch says (``ValueError`` on a mismatch); it is needed
    only to tell Adam from AdamW in a state_dict of a torch older than 2.5 (no
    ``decoupled_weight_decay`` key).
    """
    sd, cls_kind = _state_dict(source)
    cls_kind = _CLASS_KINDS.get(cls_kind, cls_kind)
    groups = sd["param_groups"]
    if not groups:
        raise ValueError("the torch optimizer has no param_groups")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if cls_kind is not None and cls_kind not in KINDS:
        raise ValueError(f"unsupported torch optimizer {cls_kind!r}: supported are {KINDS}")
    family = _group_kind(groups[0])
    found = cls_kind
    if family == "adam":
        flag = groups[0].get("decoupled_weight_decay")
        if found is None:
            found = {True: "adamw", False: "adam"}.get(flag) if flag is not None else kind
            if found is None:
                raise ValueError(
                    "cannot tell Adam from AdamW: the param_groups have no "
                    "'decoupled_weight_decay' key; pass kind='adam' or kind='adamw'"
                )
        if found == "adamw" and flag is False:
            raise ValueError("an AdamW state_dict with decoupled_weight_decay=False")
    elif found is None:
        found = family
    if (found in ("adam", "adamw")) != (family == "adam") or (family != "adam" and found != family):
        raise ValueError(f"the torch optimizer is {found!r} but its param_groups are {family!r}'s")
    if kind is not None and kind != found:
        raise ValueError(f"kind={kind!r}, but the torch optimizer is {found!r}")
    for i, g in enumerate(groups[1:], 1):
        if _group_kind(g) != family:
            raise ValueError(f"param group {i} is {_group_kind(g)!r}'s, group 0 is {family!r}'s")
    return found


_CLASS_KINDS = {a.torch_class.lower(): a.name for a in registry.ALGORITHMS}


def _number(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (bool, np.bool_)):  # tensor / numpy
        return float(value.item()) if np.ndim(value) == 0 else value
    if isinstance(value, (tuple, list)):
        return tuple(_number(v) for v in value)
    return value


def _group_optimizer(kind: str, group: Mapping[str, Any]) -> Optimizer:
    family = "adam" if kind in ("adam", "adamw") else kind
    kwargs = {k: _number(group[k]) for k in _hyper(family) if k in group}
    if family == "adam":
        decoupled = group.get("decoupled_weight_decay", kind == "adamw")
        kwargs["decoupled_weight_decay"] = bool(decoupled)
    return registry.get(family).factory(**kwargs)


def _one_group_only(kind: str, groups: Sequence[Any]) -> None:
    """torch's LBFGS takes one param group (its constructor's rule); so does the hand-off."""
    if kind == "lbfgs" and len(groups) != 1:
        raise ValueError(
            "LBFGS doesn't support per-parameter options (parameter groups): the torch state "
            f"has {len(groups)} param groups, torch's LBFGS (and jaxopt_lab's) takes one"
        )


def _group_names(n_groups: int, group_names: Sequence[str] | None) -> list[str]:
    if group_names is None:
        return [f"group{i}" for i in range(n_groups)]
    names = list(group_names)
    if len(names) != n_groups or len(set(names)) != n_groups:
        raise ValueError(
            f"group_names must be {n_groups} distinct names (one per torch param group), "
            f"got {names!r}"
        )
    return names


# ---------------------------------------------------------------------------------------------
# The param-id map


class _Layout:
    """Leaves of ``params`` (in ``tree_leaves`` order) and, for each, its torch id and group."""

    def __init__(self, params: Params, groups: Sequence[Mapping[str, Any]], ids: Any) -> None:
        with_path = jax.tree_util.tree_leaves_with_path(params)
        self.treedef = jax.tree_util.tree_structure(params)
        self.paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in with_path]
        self.leaves = [leaf for _, leaf in with_path]
        n = len(self.leaves)
        group_of: dict[int, int] = {}
        for gi, g in enumerate(groups):
            for pid in g["params"]:
                if pid in group_of:
                    raise ValueError(
                        f"torch param id {pid} is in param groups {group_of[pid]} and {gi}"
                    )
                group_of[int(pid)] = gi
        if len(group_of) != n:
            sizes = [len(g["params"]) for g in groups]
            raise ValueError(
                f"the torch optimizer has {len(group_of)} params (param groups of {sizes}), "
                f"but params has {n} leaves"
            )
        self.ids = _leaf_ids(self.treedef, n, ids)
        for path, pid in zip(self.paths, self.ids, strict=True):
            if pid not in group_of:
                raise ValueError(
                    f"params leaf {path} maps to torch param id {pid}, which is in no param "
                    f"group (ids are {sorted(group_of)})"
                )
        self.group = [group_of[pid] for pid in self.ids]
        self.members = [[i for i in range(n) if self.group[i] == gi] for gi in range(len(groups))]

    def name(self, i: int) -> str:
        return f"params leaf {self.paths[i]} (torch param id {self.ids[i]})"


def _leaf_ids(treedef: Any, n: int, ids: Any) -> list[int]:
    if ids is None:
        return list(range(n))
    try:
        flat = treedef.flatten_up_to(ids)
    except (ValueError, TypeError) as err:
        raise ValueError(f"ids must have the params' tree structure: {err}") from None
    out = []
    for x in flat:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"ids must hold ints (torch param ids), got {x!r}")
        out.append(int(x))
    if len(set(out)) != len(out):
        raise ValueError(f"ids must be distinct, got {out}")
    return out


def _labels(layout_ids: Any, names: list[str], groups: Sequence[Mapping[str, Any]]) -> Any:
    group_of = {int(pid): names[gi] for gi, g in enumerate(groups) for pid in g["params"]}

    def labels(params: Params) -> Any:
        treedef = jax.tree_util.tree_structure(params)
        n = treedef.num_leaves
        ids = _leaf_ids(treedef, n, layout_ids)
        missing = [pid for pid in ids if pid not in group_of]
        if missing or n != len(group_of):
            raise ValueError(
                f"params has {n} leaves mapping to torch ids {ids}; the torch param groups hold "
                f"ids {sorted(group_of)}"
            )
        return jax.tree_util.tree_unflatten(treedef, [group_of[pid] for pid in ids])

    return labels


def optimizer_from_torch(
    source: Any,
    *,
    ids: Any = None,
    kind: str | None = None,
    group_names: Sequence[str] | None = None,
) -> Optimizer:
    """The jaxopt_lab optimizer with a torch optimizer's algorithm and hyper-parameters.

    Args:
      source: a ``torch.optim`` optimizer, its ``state_dict()``, or the ``param_groups`` list.
      ids: the leaf -> torch param id map (see the module docstring); only used with several
        param groups, to label each leaf with its group.
      kind: optional check of the algorithm (see :func:`torch_kind`).
      group_names: names of the groups in the returned :func:`~jaxopt_lab.param_groups`
        (default ``"group0"``, ``"group1"``...).

    Returns:
      ``jol.sgd(...)``, ``jol.adam(...)``... (the registry's factory) with the group's values
      for one group; for several, ``jol.param_groups(labels, {name: optimizer})``. Scalar
      tensors (``lr=torch.tensor(0.01)``) become floats; torch's implementation switches are
      dropped. L-BFGS (a :class:`~jaxopt_lab.ClosureOptimizer`) takes one group only
      (``ValueError`` otherwise).
    """
    sd, _ = _state_dict(source)
    kind = torch_kind(source, kind)
    groups = sd["param_groups"]
    _one_group_only(kind, groups)
    opts = [_group_optimizer(kind, g) for g in groups]
    if len(groups) == 1:
        return opts[0]
    names = _group_names(len(groups), group_names)
    return param_groups(_labels(ids, names, groups), dict(zip(names, opts, strict=True)))


# ---------------------------------------------------------------------------------------------
# Tensors <-> arrays


def _to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
        return t.view(torch.int16).numpy().view(jnp.bfloat16)
    return t.numpy()


def _to_tensor(a: Any) -> Any:
    import torch

    a = np.array(a, order="C", copy=True)  # (np.ascontiguousarray would make 0-d arrays 1-d)
    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _as_array(value: Any, like: Any, what: str) -> jax.Array:
    a = _to_numpy(value) if hasattr(value, "detach") else np.asarray(value)
    if a.shape != tuple(like.shape):
        raise ValueError(f"{what} has shape {a.shape}, the params leaf has {tuple(like.shape)}")
    if a.dtype != like.dtype:
        raise TypeError(
            f"{what} has dtype {a.dtype}, the params leaf has {like.dtype} (cast one of them; "
            "converting silently would change the numbers)"
        )
    return jnp.asarray(a, dtype=like.dtype)


def params_to_torch(params: Params, ids: Any = None) -> list[Any]:
    """The params' leaves as torch tensors, in torch param id order (ready for ``torch.optim``).

    Leaf ``i`` of ``tree_leaves(params)`` goes to position ``ids``'s value for it (default ``i``).
    The tensors are new CPU tensors with ``requires_grad=True``, bit-identical to the leaves.
    """
    treedef = jax.tree_util.tree_structure(params)
    leaves = jax.tree_util.tree_leaves(params)
    order = _leaf_ids(treedef, len(leaves), ids)
    if sorted(order) != list(range(len(leaves))):
        raise ValueError(f"ids must be a permutation of 0..{len(leaves) - 1}, got {order}")
    out: list[Any] = [None] * len(leaves)
    for pid, leaf in zip(order, leaves, strict=True):
        out[pid] = _to_tensor(leaf).requires_grad_(True)
    return out


def params_from_torch(tensors: Sequence[Any], like: Params, ids: Any = None) -> Params:
    """A params pytree shaped like ``like`` from torch tensors in param id order.

    Raises ``ValueError`` on a count or shape mismatch and ``TypeError`` on a dtype mismatch,
    naming the leaf.
    """
    tensors = list(tensors)
    treedef = jax.tree_util.tree_structure(like)
    with_path = jax.tree_util.tree_leaves_with_path(like)
    if len(tensors) != len(with_path):
        raise ValueError(f"got {len(tensors)} torch tensors for {len(with_path)} params leaves")
    order = _leaf_ids(treedef, len(with_path), ids)
    out = []
    for (path, leaf), pid in zip(with_path, order, strict=True):
        if not 0 <= pid < len(tensors):
            raise ValueError(f"ids: torch param id {pid} is out of range 0..{len(tensors) - 1}")
        what = f"torch param {pid} (for params leaf {jax.tree_util.keystr(path) or '<root>'})"
        out.append(_as_array(tensors[pid], leaf, what))
    return jax.tree_util.tree_unflatten(treedef, out)


# ---------------------------------------------------------------------------------------------
# State: torch -> jaxopt_lab


def _step_value(step: Any, what: str) -> int:
    v = float(step.item() if hasattr(step, "item") else step)
    if not (math.isfinite(v) and v >= 0 and v.is_integer() and v <= _MAX_STEP):
        raise ValueError(f"{what} has step {v}; expected a whole number of steps in 0..2**24")
    return int(v)


def _entry(states: Mapping[Any, Any], pid: int) -> dict[str, Any]:
    entry = states.get(pid, states.get(str(pid), {}))
    return {k: v for k, v in entry.items() if v is not None}  # old SGD stored buffer=None


def _per_leaf(state: Any, field: str) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """A state field's values, one per params leaf of its group, and the function that builds
    the field from such a list: the field's leaves and their tree, or the entries of a vector
    field (NAdam's ``mu_product``, a 0-d tensor per param in torch) and their stack."""
    value = getattr(state, field)
    if field in vector_fields(type(state)):
        n, dtype = np.shape(value)[0], value.dtype
        if isinstance(value, jax.ShapeDtypeStruct):  # (a template: the entries' shape and dtype)
            entries = [jax.ShapeDtypeStruct((), dtype)] * n
        else:
            entries = field_leaves(state, field)
        # (stacked on the host: moves bits only)
        return entries, lambda col: jnp.asarray(np.array([np.asarray(x) for x in col], dtype))
    leaves, treedef = jax.tree_util.tree_flatten(value, is_leaf=lambda x: x is None)
    return leaves, lambda col: jax.tree_util.tree_unflatten(treedef, col)


def _torch_keeps(state: Any, field: str, param: Any) -> bool:
    """Whether torch keeps the state key ``field`` for ``param``: always, unless the state type
    says otherwise (``torch_keys(shape)``: Adafactor's factors; the field then holds an empty
    placeholder at that param)."""
    keys = getattr(type(state), "torch_keys", None)
    return keys is None or field in keys(np.shape(param))


def _group_from_torch(
    kind: str,
    layout: _Layout,
    states: Mapping[Any, Any],
    members: list[int],
    init: Any,
    count: int | None,
) -> Any:
    fields = [f for f in type(init)._fields[1:] if getattr(init, f) is not None]
    has_step = registry.get(kind).torch_step
    per_leaf = {f: _per_leaf(init, f) for f in fields}
    like = {f: leaves for f, (leaves, _) in per_leaf.items()}
    position = {i: j for j, i in enumerate(members)}
    entries = {i: _entry(states, layout.ids[i]) for i in members}
    fresh = [i for i in members if not entries[i]]
    if len(fresh) == len(members) or (kind == "sgd" and not fields):  # torch: no step yet
        if count not in (None, 0) and fields:
            raise ValueError(f"count={count}, but torch has no state yet for these params")
        return init._replace(count=jnp.asarray(count or 0, jnp.int32))
    if fresh:
        raise ValueError(
            f"torch has no state for {layout.name(fresh[0])} but has for other params of its "
            "group (it never got a gradient?); jaxopt_lab keeps one step count per group"
        )
    steps: dict[int, list[int]] = {}
    columns: dict[str, list[jax.Array]] = {f: [] for f in fields}
    for i in members:
        e = entries[i]
        kept = {f for f in fields if _torch_keeps(init, f, layout.leaves[i])}
        expected = kept | ({"step"} if has_step else set())
        if set(e) != expected:
            extra, missing = sorted(set(e) - expected), sorted(expected - set(e))
            raise ValueError(
                f"torch state of {layout.name(i)} has keys {sorted(e)}: unexpected {extra}, "
                f"missing {missing} for this {kind} configuration"
            )
        for f in fields:  # (no key: the placeholder ``init`` holds)
            like_f = like[f][position[i]]
            columns[f].append(
                _as_array(e[f], like_f, f"{f} of {layout.name(i)}") if f in kept else like_f
            )
        if has_step:
            steps.setdefault(_step_value(e["step"], layout.name(i)), []).append(i)
    if not has_step:
        n = 1 if count is None else count
        if n < 1:
            raise ValueError(f"count={count}, but torch's SGD has momentum buffers (a step taken)")
    else:
        if len(steps) > 1:
            detail = "; ".join(f"step {s}: {layout.name(ix[0])}" for s, ix in sorted(steps.items()))
            raise ValueError(
                f"params of one group have taken different numbers of steps ({detail}); "
                "jaxopt_lab keeps one count per group: put them in separate param groups"
            )
        (n,) = steps
        if count is not None and count != n:
            raise ValueError(f"count={count}, but torch's state says step {n}")
    new = {f: per_leaf[f][1](columns[f]) for f in fields}
    return init._replace(count=jnp.asarray(n, jnp.int32), **new)


def state_from_torch(
    source: Any,
    params: Params,
    *,
    ids: Any = None,
    kind: str | None = None,
    count: int | None = None,
    group_names: Sequence[str] | None = None,
) -> State:
    """jaxopt_lab optimizer state equal to a torch optimizer's state.

    Args:
      source: a ``torch.optim`` optimizer or its ``state_dict()``.
      params: the jaxopt_lab params (arrays or ``jax.ShapeDtypeStruct``); their structure,
        shapes and dtypes define the state's.
      ids: the leaf -> torch param id map (default: ``tree_leaves`` order; see module docstring).
      kind: optional check of the algorithm (:func:`torch_kind`).
      count: steps taken. Checked against torch's ``step`` where torch keeps one; for SGD
        (which keeps none) it sets the count (default 1 with momentum buffers, else 0); for
        L-BFGS (none either) too (default 0; at most torch's ``func_evals``).
      group_names: group names for several param groups (default ``"group0"``...).

    Returns:
      The state of ``optimizer_from_torch(source, ids=ids, group_names=group_names)``: a
      plain state for one group, a :class:`~jaxopt_lab.ParamGroupsState` for several, with
      every buffer equal bit for bit to torch's.

    Raises:
      ValueError: unsupported optimizer or wrong ``kind``; params/torch id counts differ; a
        buffer's shape differs from its leaf's; missing or unexpected state keys; params of one
        group at different steps; a non-integral ``step``. The message names the leaf.
      TypeError: a buffer's dtype differs from its leaf's.
    """
    sd, _ = _state_dict(source)
    kind = torch_kind(source, kind)
    groups = sd["param_groups"]
    _one_group_only(kind, groups)
    layout = _Layout(params, groups, ids)
    opt = optimizer_from_torch(source, ids=ids, kind=kind, group_names=group_names)
    arrays = jax.tree_util.tree_unflatten(
        layout.treedef, [jnp.zeros(x.shape, x.dtype) for x in layout.leaves]
    )
    states = sd.get("state", {})
    if kind == "lbfgs":
        return _lbfgs_from_torch(layout, groups[0], states, arrays, count)
    init = opt.init(arrays)
    if len(groups) == 1:
        return _group_from_torch(kind, layout, states, layout.members[0], init, count)
    names = _group_names(len(groups), group_names)
    inner = {
        name: _group_from_torch(kind, layout, states, layout.members[gi], init.inner[name], count)
        for gi, name in enumerate(names)
    }
    outer = max(int(s.count) for s in inner.values())
    return ParamGroupsState(jnp.asarray(outer, jnp.int32), inner)


def relayout_state(state: State, relayout: Callable[[Params], Params]) -> State:
    """The same optimizer state for the params stored in another layout.

    The optimizers here are elementwise, so a buffer is laid out exactly like its parameter: a
    function that moves the params between two layouts (renaming, reordering, transposing,
    reshaping, without arithmetic) moves every buffer too, bit for bit. ``count`` is kept.

    This is how a torch optimizer's state reaches a Flax model whose kernels are transposed::

        from jaxopt_lab.cifar import models
        from jaxopt_lab.interop import torch_state as ts

        named = {n: p.detach().numpy() for n, p in model.named_parameters()}  # torch layout
        ids = {n: i for i, n in enumerate(named)}                              # torch param ids
        state = ts.relayout_state(ts.state_from_torch(opt, named, ids=ids), models.from_torch)

    and back: ``relayout_state(state, lambda p: {k: v.numpy() for k, v in
    models.to_torch(p).items()})`` then :func:`state_to_torch` with the torch-layout params.

    Args:
      state: a plain jaxopt_lab state (``SGDState``, ``AdamState``, ``RMSpropState``,
        ``AdagradState``); unused buffers (``None``) stay ``None``.
      relayout: params in the old layout -> params in the new one.

    Raises:
      TypeError: ``state`` is not a plain optimizer state (a ``ParamGroupsState``'s groups hold
        parts of the tree; re-layout the params before grouping instead).
    """
    if not isinstance(state, tuple(_ELEMENTWISE_STATES)):
        raise TypeError(
            f"relayout_state takes SGDState, AdamState, RMSpropState or AdagradState, "
            f"got {type(state).__name__}"
        )
    return state._replace(
        **{
            f: relayout(getattr(state, f))
            for f in state._fields[1:]
            if getattr(state, f) is not None
        }
    )


# ---------------------------------------------------------------------------------------------
# State: jaxopt_lab -> torch


def _check_type(state: Any, template: Any, where: str) -> None:
    if type(state) is not type(template):
        raise ValueError(
            f"{where}is a {type(state).__name__}, but the torch optimizer needs a "
            f"{type(template).__name__}"
        )


def _group_to_torch(
    kind: str, layout: _Layout, members: list[int], state: Any, template: Any, where: str
) -> dict[int, dict[str, Any]]:
    import torch

    _check_type(state, template, where)
    count = int(jax.device_get(state.count))
    if not 0 <= count <= _MAX_STEP:
        raise ValueError(f"{where}count {count} is outside 0..2**24 (torch's float32 step)")
    columns = {}
    for f in type(template)._fields[1:]:
        ours, theirs = getattr(state, f), getattr(template, f)
        if (ours is None) != (theirs is None):
            have = "has no" if ours is None else "has a"
            raise ValueError(
                f"{where}{have} {f!r} buffer, but the torch optimizer's hyper-parameters "
                f"{'need' if ours is None else 'keep no'} one (amsgrad, momentum, centered?)"
            )
        if ours is None:
            continue
        if jax.tree_util.tree_structure(ours) != jax.tree_util.tree_structure(theirs):
            raise ValueError(
                f"{where}field {f!r} has tree structure {jax.tree_util.tree_structure(ours)}, "
                f"expected {jax.tree_util.tree_structure(theirs)}"
            )
        if f in vector_fields(type(template)) and np.shape(ours) != theirs.shape:
            raise ValueError(
                f"{where}field {f!r} has shape {np.shape(ours)}, expected {theirs.shape} (one "
                "entry per params leaf)"
            )
        (leaves, _), (likes, _) = _per_leaf(state, f), _per_leaf(template, f)
        columns[f] = []
        for leaf, like, i in zip(leaves, likes, members, strict=True):
            value = _as_array(leaf, like, f"{where}{f} of {layout.name(i)}")  # (placeholders too)
            columns[f].append(value if _torch_keeps(template, f, layout.leaves[i]) else None)
    out: dict[int, dict[str, Any]] = {}
    if kind == "sgd" and count == 0:
        return out  # torch's SGD before its first step: no buffer yet
    info = registry.get(kind)
    for j, i in enumerate(members):
        entry: dict[str, Any] = {}
        if info.torch_step:  # SparseAdam's is a Python int, the others' a float32 tensor
            step = torch.tensor(float(count), dtype=torch.float32)
            entry["step"] = count if info.torch_int_step else step
        for f, col in columns.items():
            if col[j] is not None:  # (None: torch keeps no such key for this param)
                entry[f] = _to_tensor(np.asarray(col[j]))
        if entry:
            out[layout.ids[i]] = entry
    return out


def state_to_torch(
    state: State,
    params: Params,
    target: Any,
    *,
    ids: Any = None,
    kind: str | None = None,
    group_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A torch ``state_dict`` holding a jaxopt_lab optimizer state, for ``load_state_dict``.

    Args:
      state: the jaxopt_lab state (plain, or ``ParamGroupsState`` for several torch groups).
      params: the params the state belongs to (structure, shapes, dtypes).
      target: the torch optimizer to load into (or its ``state_dict()`` / ``param_groups``);
        its param_groups (ids and hyper-parameters) are copied into the result.
      ids, kind, group_names: as in :func:`state_from_torch`.

    Returns:
      ``{"state": {param_id: {...}}, "param_groups": [...]}``: per param ``step`` (a float32
      scalar tensor; a Python int for SparseAdam; omitted for SGD) and the buffers as CPU
      tensors of the params' dtypes, where torch keeps them for that param. An SGD state at
      ``count == 0`` gives an empty state (torch's SGD before its first step). L-BFGS: one
      entry, under the first param, in torch's layout (see the module docstring), none before
      its first step.

    Raises:
      ValueError: the state is not the target's kind or hyper-parameter configuration (e.g. no
        ``max_exp_avg_sq`` for ``amsgrad=True``), or does not match ``params``, naming the
        field and leaf. TypeError: a buffer dtype differs from its leaf's.
    """
    sd, _ = _state_dict(target)
    kind = torch_kind(target, kind)
    groups = sd["param_groups"]
    _one_group_only(kind, groups)
    layout = _Layout(params, groups, ids)
    opt = optimizer_from_torch(target, ids=ids, kind=kind, group_names=group_names)
    template = jax.eval_shape(opt.init, params)
    out: dict[int, dict[str, Any]] = {}
    if kind == "lbfgs":
        out.update(_lbfgs_to_torch(layout, groups[0], state, template))
    elif len(groups) == 1:
        out.update(_group_to_torch(kind, layout, layout.members[0], state, template, "state "))
    else:
        _check_type(state, template, "state ")
        names = _group_names(len(groups), group_names)
        if set(state.inner) != set(names):
            raise ValueError(
                f"state has param groups {sorted(state.inner)}, the torch optimizer's are "
                f"{names} (pass group_names in torch's group order)"
            )
        for gi, name in enumerate(names):
            out.update(
                _group_to_torch(
                    kind,
                    layout,
                    layout.members[gi],
                    state.inner[name],
                    template.inner[name],
                    f"state of group {name!r} ",
                )
            )
    return {"state": dict(sorted(out.items())), "param_groups": copy.deepcopy(list(groups))}


# ---------------------------------------------------------------------------------------------
# L-BFGS: one state for all params, under torch's first param

_LBFGS_KEYS = frozenset(registry.get("lbfgs").state_keys)
_LBFGS_COUNTERS = frozenset({"func_evals", "n_iter"})  # all torch has before it iterates
_LBFGS_SCRATCH = frozenset({"al"})  # torch's two-loop scratch list, recreated by torch


def _flat_permutation(layout: _Layout, group: Mapping[str, Any]) -> np.ndarray | None:
    """``perm`` with ``ours == theirs[perm]``: torch flattens the params in its group's order,
    jaxopt_lab in ``tree_leaves`` order (``None`` where the two orders agree)."""
    where = {int(pid): k for k, pid in enumerate(group["params"])}
    sizes = [int(np.prod(np.shape(x), dtype=np.int64)) for x in layout.leaves]
    by_torch = sorted(range(len(sizes)), key=lambda i: where[layout.ids[i]])
    if by_torch == list(range(len(sizes))):
        return None
    start, offset = {}, 0
    for i in by_torch:
        start[i], offset = offset, offset + sizes[i]
    return np.concatenate([np.arange(start[i], start[i] + sizes[i]) for i in range(len(sizes))])


def _lbfgs_like(template: LBFGSState) -> dict[str, Any]:
    """The shape and dtype each tensor of torch's entry must have (lists: each element's)."""
    n, P = template.d.shape, template.d.dtype
    vector, scalar = jax.ShapeDtypeStruct(n, P), jax.ShapeDtypeStruct((), P)
    return {
        "d": vector,
        "prev_flat_grad": vector,
        "old_dirs": vector,
        "old_stps": vector,
        "ro": scalar,
        "H_diag": scalar,  # (torch's first iteration stores the int 1)
        "t": scalar,  # Python floats in torch, or a tensor of the params' dtype
        "prev_loss": scalar,
    }


def _lbfgs_entry_checked(entry: Mapping[str, Any], template: LBFGSState, pid: int) -> None:
    keys = set(entry) - _LBFGS_SCRATCH
    n_iter = int(entry.get("n_iter", 0))
    expected = _LBFGS_COUNTERS if keys <= _LBFGS_COUNTERS and n_iter == 0 else _LBFGS_KEYS
    if keys and keys != expected:
        extra, missing = sorted(keys - expected), sorted(expected - keys)
        raise ValueError(
            f"torch's LBFGS state (under param id {pid}) has keys {sorted(keys)}: unexpected "
            f"{extra}, missing {missing}"
        )
    if expected is _LBFGS_COUNTERS:
        return
    pairs = {len(entry[k]) for k in ("old_dirs", "old_stps", "ro")}
    if len(pairs) != 1:
        raise ValueError(f"torch's LBFGS history lists differ in length: {sorted(pairs)}")
    for key, like in _lbfgs_like(template).items():
        values = entry[key] if isinstance(entry[key], (list, tuple)) else [entry[key]]
        for k, value in enumerate(values):
            if hasattr(value, "detach") or isinstance(value, np.ndarray):
                what = f"LBFGS {key}" + (f"[{k}]" if isinstance(entry[key], list) else "")
                _as_array(value, like, what)  # shape and dtype, or a clear error
            elif key in ("d", "prev_flat_grad", "old_dirs", "old_stps", "ro"):
                raise TypeError(f"torch's LBFGS {key} must hold tensors, got {type(value)}")


def _permuted(entry: Mapping[str, Any], index: np.ndarray) -> dict[str, Any]:
    """The entry with every flat vector re-ordered: ``v[index]`` (tensors stay tensors)."""

    def take(v: Any) -> Any:
        if hasattr(v, "detach"):
            import torch

            return v[torch.from_numpy(index)]
        return np.asarray(v)[index]

    out = dict(entry)
    for key in ("d", "prev_flat_grad"):
        if key in out:
            out[key] = take(out[key])
    for key in ("old_dirs", "old_stps"):
        if key in out:
            out[key] = [take(v) for v in out[key]]
    return out


def _lbfgs_from_torch(
    layout: _Layout,
    group: Mapping[str, Any],
    states: Mapping[Any, Any],
    arrays: Params,
    count: int | None,
) -> LBFGSState:
    first = int(group["params"][0]) if group["params"] else 0
    others = sorted(int(pid) for pid, e in states.items() if int(pid) != first and e)
    if others:
        raise ValueError(
            f"torch's LBFGS keeps its state under its first param (id {first}); this state "
            f"has entries for param ids {others}"
        )
    entry = _entry(states, first)
    history_size = int(group["history_size"])
    template = jax.eval_shape(registry.get("lbfgs").factory(history_size=history_size).init, arrays)
    _lbfgs_entry_checked(entry, template, first)
    func_evals = int(entry.get("func_evals", 0))
    if count is not None and not 0 <= count <= func_evals:
        raise ValueError(
            f"count={count}, but torch's LBFGS state says {func_evals} closure evaluations "
            "(each step call evaluates at least once)"
        )
    perm = _flat_permutation(layout, group)
    if perm is not None:
        entry = _permuted(entry, perm)
    return lbfgs_state_from_torch(entry, arrays, history_size=history_size, count=count)


def _lbfgs_to_torch(
    layout: _Layout, group: Mapping[str, Any], state: Any, template: LBFGSState
) -> dict[int, dict[str, Any]]:
    _check_type(state, template, "state ")
    for f in type(template)._fields:
        ours, theirs = getattr(state, f), getattr(template, f)
        if np.shape(ours) != theirs.shape or jnp.result_type(ours) != theirs.dtype:
            raise ValueError(
                f"state field {f!r} is {jnp.result_type(ours)}{list(np.shape(ours))}; the torch "
                f"optimizer (history_size={group['history_size']}) over these params needs "
                f"{theirs.dtype}{list(theirs.shape)}"
            )
    if not 0 <= int(state.count) <= int(state.func_evals):
        raise ValueError(
            f"state count {int(state.count)} with {int(state.func_evals)} closure evaluations "
            "(each step call evaluates at least once)"
        )
    entry = lbfgs_state_to_torch(state)
    perm = _flat_permutation(layout, group)
    if perm is not None:
        entry = _permuted(entry, np.argsort(perm))
    return {int(group["params"][0]): entry} if entry else {}
