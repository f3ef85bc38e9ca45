"""The settings of one cross-check run, as data: what is compared, how it is trained, the schedule.

:class:`CrossCheckConfig` is the whole run (``experiments/cifar10.py`` builds one from its flags);
:func:`parse_schedule` reads a ``--schedule`` flag and :func:`make_schedule` builds it for both
worlds (JAX's ``count -> lr`` and torch's ``lr_scheduler``). Every bad setting is a
:class:`ConfigError`: one readable line.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxopt_lab import registry

IMPLEMENTATIONS = ("jaxopt_lab", "optax", "torch")
"""The three trainers, in the order they step."""

PAIRS = (("jaxopt_lab", "torch"), ("jaxopt_lab", "optax"), ("optax", "torch"))
"""Pairs compared; the key of a pair is ``"a~b"``."""

CLOSURE_DRIVEN = ("lbfgs",)
"""Algorithms trained through ``step(closure)``, one call per batch (a per-batch closure: the
closure evaluates the batch's loss and gradients; torch's ``optimizer.step(closure)`` alike)."""

OPTIMIZERS = (*registry.names(per_step=True), *CLOSURE_DRIVEN)
"""The algorithms the cross-check can train (``jaxopt_lab.registry``: those that step per gradient
on any param shape, and L-BFGS through a per-batch closure)."""

F64_TOLERANCE = 1e-9
"""Largest relative parameter distance accepted over a float64 run for pairs with the same math."""


class ConfigError(ValueError):
    """A bad run setting (unknown optimizer, schedule, too little data...): one readable line."""


def pair_key(a: str, b: str) -> str:
    """``"a~b"``, the key of a pair of implementations in metrics and summaries."""
    return f"{a}~{b}"


@dataclass
class CrossCheckConfig:
    """One cross-check run.

    Attributes:
        optimizer: one of :data:`OPTIMIZERS`.
        lr: learning rate (the base value when ``schedule`` is set).
        opt_kwargs: torch.optim keyword arguments (same names in jaxopt_lab).
        schedule: ``"name:key=value,..."`` (see :func:`make_schedule`) or None.
        batch_size: rows per step (``drop_last``).
        epochs: passes over the data.
        max_steps: stop after this many steps (None: all epochs).
        precision: ``"f32"`` or ``"f64"`` (enables ``jax_enable_x64``; torch in double).
        compare: which of ``"optax"``, ``"torch"`` to run next to jaxopt_lab.
        seed: torch init seed (also the shuffling seed).
        shuffle: reshuffle every epoch (seeded); off by default like the tutorial.
        evaluate: measure accuracy on the eval set after every epoch.
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    opt_kwargs: dict[str, Any] = field(default_factory=dict)
    schedule: str | None = None
    batch_size: int = 64
    epochs: int = 1
    max_steps: int | None = None
    precision: str = "f32"
    compare: tuple[str, ...] = ("optax", "torch")
    seed: int = 0
    shuffle: bool = False
    evaluate: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` with one readable line for any bad setting."""
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if registry.get(self.optimizer).optax is None and "optax" in self.compare:
            # No optax counterpart (optax: none): the run compares jaxopt_lab with torch alone.
            self.compare = tuple(c for c in self.compare if c != "optax")
        if self.precision not in ("f32", "f64"):
            raise ConfigError(f"precision must be f32 or f64, got {self.precision!r}")
        bad = [c for c in self.compare if c not in IMPLEMENTATIONS[1:]]
        if bad:
            raise ConfigError(f"--compare takes optax and/or torch, got {', '.join(bad)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max steps must be positive, got {self.max_steps}")
        import jaxopt_lab as jol

        params = inspect.signature(getattr(jol, self.optimizer)).parameters
        unknown = sorted(set(self.opt_kwargs) - set(params) - {"lr"})
        if "lr" in self.opt_kwargs or unknown:
            raise ConfigError(
                f"{self.optimizer} does not take {', '.join(unknown or ['lr'])} "
                f"(it takes: {', '.join(k for k in params if k != 'lr')}; set lr with --lr)"
            )

    @property
    def implementations(self) -> tuple[str, ...]:
        """The trainers this run uses, in :data:`IMPLEMENTATIONS` order."""
        return tuple(i for i in IMPLEMENTATIONS if i == "jaxopt_lab" or i in self.compare)


def set_precision(precision: str) -> tuple[np.dtype, Any]:
    """The (NumPy, torch) dtypes of a ``"f32"`` or ``"f64"`` run; ``"f64"`` turns JAX x64 on."""
    import torch

    if precision == "f64":
        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
        return np.dtype(np.float64), torch.float64
    return np.dtype(np.float32), torch.float32


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------

_TORCH_SCHEDULERS = {
    "step_lr": "StepLR",
    "multistep_lr": "MultiStepLR",
    "exponential_lr": "ExponentialLR",
    "cosine_annealing_lr": "CosineAnnealingLR",
    "linear_lr": "LinearLR",
    "constant_lr": "ConstantLR",
    "polynomial_lr": "PolynomialLR",
    "cosine_annealing_warm_restarts": "CosineAnnealingWarmRestarts",
}


def parse_schedule(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"name:key=value,key=value"`` (values are Python literals; lists may hold commas).

    >>> parse_schedule("step_lr:step_size=5,gamma=0.5")
    ('step_lr', {'step_size': 5, 'gamma': 0.5})
    >>> parse_schedule("multistep_lr:milestones=[5, 10],gamma=0.1")
    ('multistep_lr', {'milestones': [5, 10], 'gamma': 0.1})
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"bad schedule {spec!r}: expected name:key=value,...")
    kwargs: dict[str, Any] = {}
    depth, start, items = 0, 0, []
    for i, ch in enumerate(rest):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(rest[start:i])
            start = i + 1
    items.append(rest[start:])
    for item in filter(None, (s.strip() for s in items)):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"bad schedule argument {item!r} in {spec!r}: expected key=value")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ConfigError(
                f"bad value {value.strip()!r} for {key.strip()!r} in {spec!r}"
            ) from None
    return name, kwargs


@dataclass
class Schedule:
    """A per-epoch learning-rate schedule in both worlds.

    Attributes:
        spec: the ``name:key=value`` text.
        jax_fn: ``count -> lr`` (optimizer steps), for jaxopt_lab and optax.
        make_torch: ``torch_optimizer -> torch.optim.lr_scheduler`` instance, stepped after every
            epoch (the usual torch pattern).
    """

    spec: str
    jax_fn: Callable[[jax.Array], Any]
    make_torch: Callable[[Any], Any]


def make_schedule(spec: str, lr: float, steps_per_epoch: int) -> Schedule:
    """Build ``spec`` (a torch scheduler name in snake case, e.g. ``step_lr``) for both worlds.

    The jaxopt_lab schedule ``jaxopt_lab.schedules.<name>(lr, **kwargs)`` counts epochs and is
    wrapped by ``per_epoch(..., steps_per_epoch)``; torch gets ``lr_scheduler.<Name>(**kwargs)``
    stepped once per epoch.
    """
    import torch

    from jaxopt_lab import schedules

    name, kwargs = parse_schedule(spec)
    if name not in _TORCH_SCHEDULERS or not hasattr(schedules, name):
        have = sorted(n for n in _TORCH_SCHEDULERS if hasattr(schedules, n))
        raise ConfigError(f"unknown schedule {name!r}; available: {', '.join(have) or 'none'}")
    try:
        epoch_fn = getattr(schedules, name)(lr, **kwargs)
    except TypeError as err:
        raise ConfigError(f"bad arguments for schedule {name!r}: {err}") from None
    jax_fn = schedules.per_epoch(epoch_fn, steps_per_epoch)
    torch_cls = getattr(torch.optim.lr_scheduler, _TORCH_SCHEDULERS[name])
    return Schedule(spec=spec, jax_fn=jax_fn, make_torch=lambda opt: torch_cls(opt, **kwargs))
