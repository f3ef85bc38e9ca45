"""Both directions between jaxopt_lab optimizers and ``optax.GradientTransformation``."""

from __future__ import annotations

from typing import Any

import jax
import optax

from ._base import Optimizer, Params


def as_optax(opt: Optimizer) -> optax.GradientTransformation:
    """Wrap an optimizer as an optax transformation (usable inside ``optax.chain``).

    The incoming ``updates`` play the role of gradients (so a preceding
    ``optax.clip_by_global_norm`` clips what the optimizer sees), ``params`` are required, and
    the returned updates are ``new_params - params``. ``optax.apply_updates`` then gives back
    ``new_params`` bit for bit whenever old and new values are within a factor of two
    (Sterbenz's lemma makes the subtraction exact) -- i.e. in any ordinary step.
    """

    def update(updates: Any, state: Any, params: Params | None = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError(
                "as_optax(...).update needs params: call tx.update(grads, state, params)"
            )
        new_params, state = opt.update(params, updates, state)
        return jax.tree.map(lambda new, old: new - old, new_params, params), state

    return optax.GradientTransformation(opt.init, update)


def from_optax(tx: optax.GradientTransformation) -> Optimizer:
    """Use any optax transformation in the ``(params, grads, state) -> (params, state)`` form."""

    def update(params: Params, grads: Any, state: Any) -> tuple[Params, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return Optimizer(tx.init, update)
