"""The optimizer type shared by every algorithm: a pair of pure functions.

An :class:`Optimizer` is the JAX analogue of a ``torch.optim.Optimizer`` instance::

    state = opt.init(params)
    params, state = opt.update(params, grads, state)

Both functions are pure and jittable; ``update`` is donate-friendly (it never aliases its inputs
in its outputs), so ``jax.jit(opt.update, donate_argnums=(0, 2))`` updates in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import jax

Params: TypeAlias = Any
"""Any pytree of floating-point arrays."""

Grads: TypeAlias = Any
"""A pytree with the structure, shapes and dtypes of the params."""

State: TypeAlias = Any
"""An optimizer state: a NamedTuple whose first field is an int32 scalar ``count``."""

Schedule: TypeAlias = Callable[[jax.Array], Any]
"""``count -> value``: ``count`` is the number of steps already taken (an int32 scalar)."""

ScalarOrSchedule: TypeAlias = float | int | Schedule


class Optimizer(NamedTuple):
    """A pure optimizer: ``init(params) -> state`` and ``update(params, grads, state)``.

    Attributes:
        init: builds the state for a params pytree.
        update: one step; returns ``(new_params, new_state)``.
    """

    init: Callable[[Params], State]
    update: Callable[[Params, Grads, State], tuple[Params, State]]
