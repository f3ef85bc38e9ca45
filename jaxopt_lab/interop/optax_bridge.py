"""Both directions between jaxopt_lab optimizers and ``optax.GradientTransformation``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_lab.optim.base import Optimizer, Params


@jax.tree_util.register_pytree_node_class
class _Probe:
    """A params tree of a type no state contains, to find the params-shaped subtrees."""

    def __init__(self, *leaves: Any) -> None:
        self.leaves = leaves

    def tree_flatten(self) -> tuple[tuple[Any, ...], None]:
        return self.leaves, None

    @classmethod
    def tree_unflatten(cls, aux: None, children: tuple[Any, ...]) -> _Probe:
        del aux
        return cls(*children)


def _is_probe(x: Any) -> bool:
    return isinstance(x, _Probe)


# Probe leaves, tried in order: one of each rank first, so that a field whose leaves depend on
# the param's rank (Adafactor: ``row_var``/``col_var`` for >= 2-D, ``variance`` below, an empty
# placeholder elsewhere) is still found params-shaped; then a 2-D leaf alone, for optimizers that
# take nothing else (Muon).
_PROBES = (((), (1,), (1, 1)), ((1, 1),))


def _init_empty(opt: Optimizer, params: Params) -> Any:
    """The state ``opt.init`` would give for ``params`` that have no leaves.

    torch refuses an empty parameter list (so does ``opt.init``), but an optax transformation
    must accept one: ``optax.tree.map_params`` initializes with an empty placeholder tree, and
    ``optax.partition``/``masked`` hand over empty or fully masked subtrees. The state is built
    for a probe params tree, and each probe-shaped subtree (a buffer tree shaped like the params)
    is replaced by the empty params tree itself, which is what a state made for them holds.
    """
    empty = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [])
    for shapes in _PROBES:
        try:
            state = opt.init(_Probe(*(jnp.zeros(s, jnp.float32) for s in shapes)))
            break
        except (ValueError, TypeError):
            if shapes is _PROBES[-1]:
                raise
    return jax.tree.map(lambda x: empty if _is_probe(x) else x, state, is_leaf=_is_probe)


def _advance(state: Any) -> Any:
    """One step taken on nothing: only a NamedTuple state's int ``count`` moves."""
    fields = getattr(state, "_fields", ())
    if "count" in fields and jnp.issubdtype(jnp.result_type(state.count), jnp.integer):
        return state._replace(count=state.count + 1)
    return state


def as_optax(opt: Optimizer) -> optax.GradientTransformationExtraArgs:
    """Wrap an optimizer as an optax transformation (usable inside ``optax.chain``).

    The incoming ``updates`` play the role of gradients (so a preceding
    ``optax.clip_by_global_norm`` clips what the optimizer sees), ``params`` are required, and
    the returned updates are ``new_params - params``. ``optax.apply_updates`` then gives back
    ``new_params`` bit for bit whenever old and new values are within a factor of two
    (Sterbenz's lemma makes the subtraction exact) -- i.e. in any ordinary step.

    It behaves as optax's own optimizers do: ``update`` accepts and ignores extra keyword
    arguments (``value=loss``, as ``optax.chain`` and ``nnx.Optimizer.update`` pass them on);
    empty and fully masked params trees are accepted (``optax.tree.map_params``,
    ``optax.partition``); and the hyper-parameters may be injected (traced)::

        tx = optax.inject_hyperparams(
            lambda learning_rate, momentum: jol.as_optax(
                jol.sgd(lr=learning_rate, momentum=momentum)
            )
        )(learning_rate=1e-3, momentum=0.9)

    ``tests/test_optax_contract.py`` runs optax's own optimizer contract on every optimizer.
    """

    def init(params: Params) -> Any:
        if not jax.tree_util.tree_leaves(params):
            return _init_empty(opt, params)
        return opt.init(params)

    def update(
        updates: Any, state: Any, params: Params | None = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        del extra_args  # optax's GradientTransformationExtraArgs protocol: ignore what we need not
        if params is None:
            raise ValueError(
                "as_optax(...).update needs params: call tx.update(grads, state, params)"
            )
        if not jax.tree_util.tree_leaves(params):
            return updates, _advance(state)
        new_params, state = opt.update(params, updates, state)
        return jax.tree.map(lambda new, old: new - old, new_params, params), state

    return optax.GradientTransformationExtraArgs(init, update)


def from_optax(tx: optax.GradientTransformation) -> Optimizer:
    """Use any optax transformation in the ``(params, grads, state) -> (params, state)`` form."""

    def update(params: Params, grads: Any, state: Any) -> tuple[Params, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return Optimizer(tx.init, update)
