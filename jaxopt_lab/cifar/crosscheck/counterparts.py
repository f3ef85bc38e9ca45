"""The optax counterpart of each torch.optim configuration, and how far it is from torch's math.

:func:`optax_equivalent` builds the optax transformation closest to ``torch.optim.<Name>(lr,
**kwargs)``; the optimizers beyond the first five take their counterpart and its known
differences from their row of :mod:`jaxopt_lab.registry` (``optax``, ``optax_exact``,
``optax_differences``). An :class:`OptaxEquivalent` with ``exact=True`` has torch's math, so that
a float64 run must agree with torch to :data:`~jaxopt_lab.cifar.crosscheck.config.F64_TOLERANCE`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import optax

from jaxopt_lab import registry
from jaxopt_lab.cifar.crosscheck.config import OPTIMIZERS, ConfigError
from jaxopt_lab.optim.base import Optimizer, Params


@dataclass(frozen=True)
class OptaxEquivalent:
    """The optax optimizer closest to a torch.optim configuration.

    Attributes:
        tx: the optax transformation.
        expression: how it was built, as Python source (for the report).
        exact: True when the math is the same as torch's, so that only rounding differs (then a
            float64 run must agree to :data:`F64_TOLERANCE`).
        notes: where the semantics differ or coincide only under conditions.
    """

    tx: optax.GradientTransformation
    expression: str
    exact: bool
    notes: tuple[str, ...] = ()

    @property
    def optimizer(self) -> Optimizer:
        """``tx`` in jaxopt_lab's ``update(params, grads, state)`` form (see ``from_optax``)."""
        import jaxopt_lab as jol

        return _standard_promotion(jol.from_optax(self.tx))


def full_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` completed with the defaults of ``jaxopt_lab.<name>`` (torch.optim's)."""
    import jaxopt_lab as jol

    sig = inspect.signature(getattr(jol, name))
    out = {
        k: p.default
        for k, p in sig.parameters.items()
        if k != "lr" and p.default is not inspect.Parameter.empty
    }
    out.update(kwargs)
    return out


def _betas(kw: dict[str, Any]) -> tuple[Any, Any]:
    return kw["betas"][0], kw["betas"][1]


# The optax counterparts of the algorithms beyond the first five: (lr, torch kwargs) -> (the optax
# transformation, its source). Their differences from torch are the registry's notes.
_COUNTERPARTS: dict[str, Callable[[Any, dict[str, Any]], tuple[Any, str]]] = {
    "nadam": lambda lr, kw: (
        optax.nadam(lr, *_betas(kw), eps=kw["eps"]),
        f"optax.nadam(lr, {kw['betas'][0]}, {kw['betas'][1]}, eps={kw['eps']})",
    ),
    "radam": lambda lr, kw: (
        optax.radam(lr, *_betas(kw), eps=kw["eps"]),
        f"optax.radam(lr, {kw['betas'][0]}, {kw['betas'][1]}, eps={kw['eps']})",
    ),
    "adamax": lambda lr, kw: (
        optax.adamax(lr, *_betas(kw), eps=kw["eps"]),
        f"optax.adamax(lr, {kw['betas'][0]}, {kw['betas'][1]}, eps={kw['eps']})",
    ),
    "adadelta": lambda lr, kw: (
        optax.adadelta(lr, rho=kw["rho"], eps=kw["eps"]),
        f"optax.adadelta(lr, rho={kw['rho']}, eps={kw['eps']})",
    ),
    "rprop": lambda lr, kw: (
        optax.rprop(
            lr,
            eta_minus=kw["etas"][0],
            eta_plus=kw["etas"][1],
            min_step_size=kw["step_sizes"][0],
            max_step_size=kw["step_sizes"][1],
        ),
        f"optax.rprop(lr, eta_minus={kw['etas'][0]}, eta_plus={kw['etas'][1]}, "
        f"min_step_size={kw['step_sizes'][0]}, max_step_size={kw['step_sizes'][1]})",
    ),
    "adafactor": lambda lr, kw: (optax.adafactor(lr), "optax.adafactor(lr)"),
}


def optax_equivalent(name: str, lr: Any, kwargs: dict[str, Any]) -> OptaxEquivalent | None:
    """The optax optimizer matching ``torch.optim.<Name>(lr=lr, **kwargs)`` as closely as optax can.

    Mapping and known differences (``maximize`` is ``optax.scale(-1)`` first, and an L2
    ``weight_decay`` is ``optax.add_decayed_weights`` before the optimizer, both exactly torch's
    order: negate, then add ``wd * p`` to the gradient):

    - ``sgd`` -> ``optax.sgd(lr, momentum or None, nesterov)``. optax's ``trace`` starts from a
      zero buffer, so its first step gives ``b = g``, the same as torch's ``b = g``. torch's
      ``dampening`` has no optax counterpart (and torch does not dampen the first step): not
      exact when ``momentum > 0 and dampening != 0``.
    - ``adam`` -> ``optax.adam(lr, b1, b2, eps)``. torch computes
      ``p - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)``, optax ``p - lr * (m/bc1) / (sqrt(v/bc2) +
      eps)``: same math, different rounding. ``amsgrad=True`` -> ``optax.amsgrad``, not exact:
      optax keeps the running max of the bias-corrected ``v/bc2``, torch the max of raw ``v``
      then divides by the current ``bc2``. ``decoupled_weight_decay=True`` is mapped as adamw.
    - ``adamw`` -> ``optax.adamw(lr, b1, b2, eps, weight_decay)``: optax adds ``lr * wd * p``
      to the update, torch first scales ``p`` by ``1 - lr * wd``: same math. ``amsgrad`` as adam.
    - ``rmsprop`` -> ``optax.rmsprop(lr, decay=alpha, eps, eps_in_sqrt=False, centered,
      momentum or None)``: torch's ``eps`` is outside the square root, hence
      ``eps_in_sqrt=False``. With momentum optax scales by ``lr`` before the momentum trace and
      torch after: the same for a constant ``lr``, not under a schedule.
    - ``adagrad`` -> ``optax.adagrad(lr / (1 + count * lr_decay), initial_accumulator_value,
      eps)``, not exact: optax computes ``g * rsqrt(s + eps)`` (``eps`` inside the root, and 0
      where ``s == 0``), torch ``g / (sqrt(s) + eps)``; relative step difference about
      ``eps / sqrt(s)``.

    Args:
        name: one of :data:`OPTIMIZERS`.
        lr: a number or a schedule ``count -> lr`` (optax and jaxopt_lab count steps the same way:
            0 at the first update).
        kwargs: torch.optim keyword arguments (missing ones take torch's defaults).

    Returns:
        The :class:`OptaxEquivalent`, or None where optax has no counterpart (``registry``).
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    row = registry.get(name)
    if row.optax is None or not row.per_step:
        # L-BFGS: optax.lbfgs is another algorithm (one iteration per update, see the table in
        # jaxopt_lab.optim.lbfgs), not a counterpart of torch's step(closure).
        return None
    kw = full_kwargs(name, kwargs)
    scheduled = callable(lr)
    pre: list[optax.GradientTransformation] = []
    pre_src: list[str] = []
    notes: list[str] = []
    exact = True
    if kw.get("maximize"):
        pre.append(optax.scale(-1.0))
        pre_src.append("optax.scale(-1.0)")
    wd = kw.get("weight_decay", 0.0)
    decoupled = name in ("adamw", "adafactor") or kw.get("decoupled_weight_decay", False)
    if wd and decoupled and name not in ("adam", "adamw"):
        exact = False
        notes.append(f"weight_decay={wd!r} is decoupled in torch; the optax counterpart has none")
    if wd and not decoupled:
        pre.append(optax.add_decayed_weights(wd))
        pre_src.append(f"optax.add_decayed_weights({wd!r})")
    lr_src = "schedule" if scheduled else repr(lr)

    if name == "sgd":
        momentum, dampening = kw["momentum"], kw["dampening"]
        core = optax.sgd(lr, momentum=momentum or None, nesterov=kw["nesterov"])
        core_src = f"optax.sgd({lr_src}, momentum={momentum or None!r}, nesterov={kw['nesterov']})"
        if momentum and dampening:
            exact = False
            notes.append(
                f"dampening={dampening} has no optax counterpart (optax never dampens; torch "
                "dampens every step but the first)"
            )
        elif momentum:
            notes.append("optax.trace's zero-initialised buffer gives b=g at step 1, like torch")
    elif name in ("adam", "adamw"):
        b1, b2 = kw["betas"]
        eps = kw["eps"]
        if kw.get("amsgrad"):
            exact = False
            notes.append(
                "amsgrad: optax keeps max(v/bc2) over steps, torch keeps max(v) and divides by the "
                "current bc2 (not the same math)"
            )
            parts = [optax.scale_by_amsgrad(b1, b2, eps)]
            src = [f"optax.scale_by_amsgrad({b1}, {b2}, {eps})"]
            if decoupled and wd:
                parts.append(optax.add_decayed_weights(wd))
                src.append(f"optax.add_decayed_weights({wd!r})")
            parts.append(optax.scale_by_learning_rate(lr))
            src.append(f"optax.scale_by_learning_rate({lr_src})")
            core = optax.chain(*parts)
            core_src = f"optax.chain({', '.join(src)})"
        elif decoupled:
            core = optax.adamw(lr, b1, b2, eps, weight_decay=wd)
            core_src = f"optax.adamw({lr_src}, {b1}, {b2}, {eps}, weight_decay={wd!r})"
            notes.append(
                "decoupled decay: optax adds lr*wd*p to the update, torch scales p by 1-lr*wd "
                "first (same math)"
            )
        else:
            core = optax.adam(lr, b1, b2, eps)
            core_src = f"optax.adam({lr_src}, {b1}, {b2}, {eps})"
        notes.append(
            "bias correction: torch folds 1/bc1 into the step and divides sqrt(v) by sqrt(bc2); "
            "optax corrects m and v first (rounding only)"
        )
    elif name == "rmsprop":
        momentum = kw["momentum"]
        core = optax.rmsprop(
            lr,
            decay=kw["alpha"],
            eps=kw["eps"],
            eps_in_sqrt=False,
            centered=kw["centered"],
            momentum=momentum or None,
        )
        core_src = (
            f"optax.rmsprop({lr_src}, decay={kw['alpha']}, eps={kw['eps']}, eps_in_sqrt=False, "
            f"centered={kw['centered']}, momentum={momentum or None!r})"
        )
        notes.append("eps outside the square root in both (eps_in_sqrt=False)")
        if momentum:
            notes.append(
                "momentum: optax applies lr before the trace, torch after (same if lr fixed)"
            )
            if scheduled:
                exact = False
    elif name == "adagrad":
        lr_decay, iav, eps = kw["lr_decay"], kw["initial_accumulator_value"], kw["eps"]
        if lr_decay:

            def decayed(count: jax.Array, base: Any = lr, decay: float = lr_decay) -> jax.Array:
                value = base(count) if callable(base) else base
                return value / (1 + count * decay)

            lr_eff: Any = decayed
            lr_src = f"{lr_src} / (1 + count * {lr_decay})"
        else:
            lr_eff = lr
        core = optax.adagrad(lr_eff, initial_accumulator_value=iav, eps=eps)
        core_src = f"optax.adagrad({lr_src}, initial_accumulator_value={iav}, eps={eps})"
        exact = False
        notes.append(
            "eps: optax uses g*rsqrt(s+eps) (inside the root, 0 where s=0), torch g/(sqrt(s)+eps)"
        )
    else:
        core, core_src = _COUNTERPARTS[name](lr, kw)
        core_src = core_src.replace("lr", lr_src, 1)
        exact = row.optax_exact
        notes.append(row.optax_differences)
    tx = optax.chain(*pre, core) if pre else core
    expression = f"optax.chain({', '.join([*pre_src, core_src])})" if pre else core_src
    return OptaxEquivalent(tx=tx, expression=expression, exact=exact, notes=tuple(notes))


def _standard_promotion(opt: Optimizer) -> Optimizer:
    """``opt`` traced under standard dtype promotion.

    optax mixes Python floats with int32 step counts (``b1 ** count``), which
    ``jax_numpy_dtype_promotion="strict"`` (our test setting) rejects.
    """

    def update(params: Params, grads: Params, state: Any) -> tuple[Params, Any]:
        with jax.numpy_dtype_promotion("standard"):
            return opt.update(params, grads, state)

    return Optimizer(init=opt.init, update=update)
