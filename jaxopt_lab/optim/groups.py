"""torch-style param groups: different optimizers or hyper-parameters for parts of a pytree."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_lab.optim.base import Optimizer, Params
from jaxopt_lab.optim.checks import check_params, check_state, require


class ParamGroupsState(NamedTuple):
    """``count`` (int32) and each group's own optimizer state, by group name."""

    count: jax.Array
    inner: dict[str, Any]


Labels = Any | Callable[[Params], Any]


def _group_masks(labels: Labels, params: Params, names: list[str]) -> tuple[Any, list[str]]:
    tree = labels(params) if callable(labels) else labels
    treedef = jax.tree_util.tree_structure(params)
    try:
        flat = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(f"param_groups labels do not match the params tree: {err}") from None
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    for path, label in zip(paths, flat, strict=True):
        require(
            label in names,
            f"params leaf {path} has label {label!r}, but the groups are {sorted(names)}",
        )
    return treedef, flat


def _select(params: Params, treedef: Any, flat_labels: list[str], name: str) -> Params:
    leaves = treedef.flatten_up_to(params)
    picked = [
        x if lab == name else optax.MaskedNode() for x, lab in zip(leaves, flat_labels, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, picked)


def param_groups(labels: Labels, optimizers: Mapping[str, Optimizer]) -> Optimizer:
    """Give each part of the params its own optimizer, like torch's ``param_groups``.

    ``torch.optim.SGD([{"params": base, "lr": 1e-2}, {"params": head, "lr": 1e-3}], momentum=0.9)``
    becomes::

        opt = jol.param_groups(
            labels,  # a pytree of group names shaped like params, or params -> such a pytree
            {"base": jol.sgd(lr=1e-2, momentum=0.9), "head": jol.sgd(lr=1e-3, momentum=0.9)},
        )

    Groups may use different algorithms. Each group keeps its own state (and step count, as
    torch's per-parameter ``step`` does), so the result equals torch's multi-group optimizer.

    Args:
      labels: a pytree of strings with the params' structure, or a function of the params
        returning one.
      optimizers: group name -> optimizer; every label must name one, and every group must
        own at least one leaf.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` whose state is a :class:`ParamGroupsState` (each group's
      own state).
    """
    require(len(optimizers) > 0, "param_groups needs at least one group", ValueError)
    names = list(optimizers)

    def init(params: Params) -> ParamGroupsState:
        check_params(params)
        treedef, flat = _group_masks(labels, params, names)
        inner = {}
        for name, opt in optimizers.items():
            require(name in flat, f"param group {name!r} has no params")
            inner[name] = opt.init(_select(params, treedef, flat, name))
        return ParamGroupsState(jnp.zeros((), jnp.int32), inner)

    def update(params: Params, grads: Any, state: ParamGroupsState) -> tuple[Params, Any]:
        check_state(state, ParamGroupsState, "param_groups")
        treedef, flat = _group_masks(labels, params, names)
        new_leaves = treedef.flatten_up_to(params)
        inner = {}
        for name, opt in optimizers.items():
            sub_params = _select(params, treedef, flat, name)
            sub_grads = _select(grads, treedef, flat, name)
            new_sub, inner[name] = opt.update(sub_params, sub_grads, state.inner[name])
            for i, leaf in enumerate(treedef.flatten_up_to(new_sub)):
                if flat[i] == name:
                    new_leaves[i] = leaf
        return jax.tree_util.tree_unflatten(treedef, new_leaves), ParamGroupsState(
            state.count + 1, inner
        )

    return Optimizer(init, update)
