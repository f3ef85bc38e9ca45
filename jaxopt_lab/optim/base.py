"""The optimizer type shared by every algorithm: a pair of pure functions.

An :class:`Optimizer` is the JAX analogue of a ``torch.optim.Optimizer`` instance::

    state = opt.init(params)
    params, state = opt.update(params, grads, state)
    params, state, loss = opt.step(params, state, closure)   # torch's step(closure)

Both functions are pure and jittable; ``update`` is donate-friendly (it never aliases its inputs
in its outputs), so ``jax.jit(opt.update, donate_argnums=(0, 2))`` updates in place.

``step`` is torch's ``optimizer.step(closure)``: ``closure(params) -> (loss, grads)`` (e.g.
``jax.value_and_grad(f)``) is evaluated once, the update applied, and the loss returned. A
:class:`ClosureOptimizer` (L-BFGS) has the same ``init``/``step`` but re-evaluates the closure
itself and has no ``update``; training code written with ``step`` works with both.
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

Closure: TypeAlias = Callable[[Params], tuple[Any, Grads]]
"""``params -> (loss, grads)``, e.g. ``jax.value_and_grad(f)``: torch's ``closure``."""


class Optimizer(NamedTuple):
    """A pure optimizer: ``init(params) -> state`` and ``update(params, grads, state)``.

    Attributes:
        init: builds the state for a params pytree.
        update: one step; returns ``(new_params, new_state)``.
    """

    init: Callable[[Params], State]
    update: Callable[[Params, Grads, State], tuple[Params, State]]

    def step(self, params: Params, state: State, closure: Closure) -> tuple[Params, State, Any]:
        """torch's ``step(closure)``: evaluate once, update, return ``(params, state, loss)``."""
        loss, grads = closure(params)
        params, state = self.update(params, grads, state)
        return params, state, loss


class ClosureOptimizer(NamedTuple):
    """An optimizer that must re-evaluate the objective itself (L-BFGS): ``init`` and ``step``.

    Attributes:
        init: builds the state for a params pytree.
        step: ``step(params, state, closure) -> (params, state, loss)``; ``loss`` is the
            closure's first value, as torch's ``step`` returns.
        name: the factory's name, for messages.
    """

    init: Callable[[Params], State]
    step: Callable[[Params, State, Closure], tuple[Params, State, Any]]
    name: str = "optimizer"

    def update(self, params: Params, grads: Grads, state: State) -> tuple[Params, State]:
        """Not available: this optimizer evaluates the objective several times per step."""
        raise TypeError(
            f"{self.name} needs a closure: it re-evaluates the loss and gradients several times "
            f"per step, so call {self.name}(...).step(params, state, closure) with "
            "closure(params) -> (loss, grads), e.g. jax.value_and_grad(f)"
        )
