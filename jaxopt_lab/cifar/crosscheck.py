"""The three-way cross-check: jaxopt_lab vs optax vs torch.optim, step by step on CIFAR-10.

One run starts three trainers from the same weights (torch's default init of the tutorial's CNN,
transferred with :func:`jaxopt_lab.cifar.models.from_torch`) and feeds them the same batches in the
same
order:

- ``jaxopt_lab``: the Flax :class:`~jaxopt_lab.cifar.models.CifarCNN` trained by
  :data:`jaxopt_lab.cifar.train.train_step` with the jaxopt_lab optimizer;
- ``optax``: the same Flax model and step with the closest optax optimizer
  (:func:`optax_equivalent`, adapted by :func:`jaxopt_lab.from_optax`);
- ``torch``: the torch model trained eagerly by ``torch.optim`` (``foreach=False``), its NCHW
  input being the same NumPy batch transposed.

After every step it records the three batch losses and, for each pair of implementations, the
**relative parameter distance**

.. math::

    d(a, b) = \\max_{\\text{leaves } \\ell}
        \\frac{\\lVert a_\\ell - b_\\ell \\rVert_\\infty}
             {\\max(\\lVert a_\\ell \\rVert_\\infty, \\lVert b_\\ell \\rVert_\\infty, \\text{tiny})}

(computed in float64, ``tiny`` the smallest normal number of the params' dtype): the worst
elementwise difference of a layer, relative to that layer's largest weight. It is symmetric, and
scale-free per layer (biases are not drowned by kernels).

Outputs (in ``out_dir``): ``metrics.jsonl`` (one row per step), ``summary.json``, ``summary.md``
(Markdown tables) and ``crosscheck.png`` (the three loss curves and the pairwise distances).

Use :func:`run`; ``experiments/cifar10.py`` is its command line.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab import registry
from jaxopt_lab.cifar.checkpoint import Checkpointer, DataPosition
from jaxopt_lab.cifar.train import TrainState, evaluate, padded_batches, train_step
from jaxopt_lab.optim.base import Optimizer, Params

IMPLEMENTATIONS = ("jaxopt_lab", "optax", "torch")
"""The three trainers, in the order they step."""

PAIRS = (("jaxopt_lab", "torch"), ("jaxopt_lab", "optax"), ("optax", "torch"))
"""Pairs compared; the key of a pair is ``"a~b"``."""

OPTIMIZERS = registry.names(per_step=True)
"""The algorithms the cross-check can train (``jaxopt_lab.registry``: those that step per gradient
on any param shape)."""


class ConfigError(ValueError):
    """A bad run setting (unknown optimizer, schedule, too little data...): one readable line."""


F64_TOLERANCE = 1e-9
"""Largest relative parameter distance accepted over a float64 run for pairs with the same math."""

_TORCH_CLASSES = {a.name: a.torch_class for a in registry.ALGORITHMS}


def pair_key(a: str, b: str) -> str:
    """``"a~b"``, the key of a pair of implementations in metrics and summaries."""
    return f"{a}~{b}"


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def rel_param_distance(a: Params, b: Params) -> float:
    """Max over leaves of ``||a - b||_inf / max(||a||_inf, ||b||_inf, tiny)``, in float64.

    Args:
        a, b: params pytrees of the same structure and shapes (NumPy or JAX arrays).

    Returns:
        The relative distance (0 for identical trees; ``inf``/``nan`` propagate).
    """
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(leaves_a) != len(leaves_b):
        raise ValueError(f"params trees differ: {len(leaves_a)} vs {len(leaves_b)} leaves")
    worst = 0.0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        tiny = float(np.finfo(np.result_type(x.dtype, y.dtype)).tiny)
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = max(float(np.max(np.abs(x64))), float(np.max(np.abs(y64))), tiny)
        d = float(np.max(np.abs(x64 - y64))) / scale
        if math.isnan(d):
            return d
        worst = max(worst, d)
    return worst


def rel_diff(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|, tiny)`` for two scalars (0 when both are 0)."""
    scale = max(abs(a), abs(b), float(np.finfo(np.float64).tiny))
    return abs(a - b) / scale


# ----------------------------------------------------------------------------------------------
# optax equivalents
# ----------------------------------------------------------------------------------------------


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
    if row.optax is None:
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


# ----------------------------------------------------------------------------------------------
# The trainers
# ----------------------------------------------------------------------------------------------


@functools.cache
def _model() -> Any:
    """One CifarCNN for every JAX trainer, so they share the eval step's compilation.

    ``precision=HIGHEST``: full float32 convs and matmuls on GPU/TPU too (no TF32/bf16 passes),
    as torch's CPU kernels compute; a no-op on CPU.
    """
    from jaxopt_lab.cifar.models import CifarCNN

    return CifarCNN(precision=jax.lax.Precision.HIGHEST)


class _JaxTrainer:
    """A Flax model trained by :data:`train_step` with one optimizer."""

    def __init__(self, tx: Optimizer, params_np: Params, dtype: np.dtype) -> None:
        params = jax.tree.map(lambda x: jnp.array(x, copy=True), params_np)  # owned: donated
        self.state = TrainState.create(apply_fn=_model().apply, params=params, tx=tx)
        self.dtype = dtype

    def step(self, images: np.ndarray, labels: np.ndarray) -> float:
        self.state, metrics = train_step(self.state, (images, labels))
        return float(metrics["loss"])

    def params(self) -> Params:
        return jax.tree.map(lambda x: np.array(x, copy=True), self.state.params)

    def evaluate(self, ds: Any) -> float:
        return evaluate(self.state, ds, dtype=self.dtype)["accuracy"]

    def end_epoch(self) -> None:
        pass

    def snapshot(self) -> tuple[Any, dict[str, Any]]:
        """(arrays, JSON extras) that :meth:`load` restores: the whole train state."""
        return self.state, {}

    def load(self, tree: Any, extras: dict[str, Any]) -> None:
        self.state = tree


class _TorchTrainer:
    """The torch model trained eagerly by ``torch.optim`` (``foreach=False`` by default)."""

    def __init__(
        self,
        model: Any,
        name: str,
        lr: float,
        kwargs: dict[str, Any],
        schedule: Schedule | None,
        dtype: np.dtype,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.dtype = dtype
        cls = getattr(torch.optim, _TORCH_CLASSES[name])
        self.opt = cls(model.parameters(), lr=lr, **{"foreach": False, **kwargs})
        self.scheduler = schedule.make_torch(self.opt) if schedule is not None else None
        self.steps = 0

    def _nchw(self, images: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    def step(self, images: np.ndarray, labels: np.ndarray) -> float:
        torch = self.torch
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(self._nchw(images))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels.astype(np.int64)))
        loss.backward()
        self.opt.step()
        self.steps += 1
        return float(loss.item())

    def params(self) -> Params:
        from jaxopt_lab.cifar.models import from_torch

        return jax.tree.map(lambda x: np.array(x, copy=True), from_torch(self.model))

    def evaluate(self, ds: Any) -> float:
        torch = self.torch
        self.model.eval()
        correct = count = 0
        with torch.no_grad():
            for images, labels, mask in padded_batches(ds, min(500, len(ds)), self.dtype):
                pred = self.model(self._nchw(images)).argmax(dim=1).numpy()
                correct += int(np.sum((pred == labels) & mask))
                count += int(np.sum(mask))
        return correct / max(count, 1)

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def _ids(self) -> dict[str, int]:
        """Each parameter's torch param id, by name."""
        return {n: i for i, (n, _) in enumerate(self.model.named_parameters())}

    def snapshot(self) -> tuple[Any, dict[str, Any]]:
        """(arrays, JSON extras) that :meth:`load` restores.

        Arrays: the parameters and the optimizer state, converted bit for bit by
        :func:`jaxopt_lab.state_from_torch` (in torch's layout: no transposes). Extras: the
        param groups' hyper-parameters (a scheduler changes ``lr``), the scheduler's
        ``state_dict`` and the step count.
        """
        from jaxopt_lab.interop.torch_state import state_from_torch

        params = {n: p.detach().numpy().copy() for n, p in self.model.named_parameters()}
        state = state_from_torch(self.opt, params, ids=self._ids(), count=self.steps)
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.opt.param_groups]
        extras = {
            "param_groups": json.loads(json.dumps(groups)),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "steps": self.steps,
        }
        return {"params": params, "opt_state": state}, extras

    def load(self, tree: Any, extras: dict[str, Any]) -> None:
        from jaxopt_lab.interop.torch_state import state_to_torch

        torch = self.torch
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(torch.from_numpy(np.array(tree["params"][name])))
        sd = state_to_torch(tree["opt_state"], tree["params"], self.opt, ids=self._ids())
        for group, saved in zip(sd["param_groups"], extras["param_groups"], strict=True):
            group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
        self.opt.load_state_dict(sd)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(extras["scheduler"])
        self.steps = int(extras["steps"])


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


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


def versions() -> dict[str, str]:
    """Versions of everything that can change the numbers, and the machine."""
    import flax
    import jaxlib

    out = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
    }
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a test dependency
        pass
    out["platform"] = platform.platform()
    out["machine"] = platform.machine()
    out["cpu_count"] = str(os.cpu_count())
    out["jax_backend"] = jax.default_backend()
    out["jax_devices"] = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return out


def _set_precision(precision: str) -> tuple[np.dtype, Any]:
    import torch

    if precision == "f64":
        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
        return np.dtype(np.float64), torch.float64
    return np.dtype(np.float32), torch.float32


@dataclass
class _Log:
    """Everything a run accumulates: the per-step rows and the per-epoch and running figures.

    Checkpointed as JSON next to the trainers' arrays (``rows`` excepted: they are re-read from
    ``metrics.jsonl``), so a resumed run's summary is the uninterrupted run's.
    """

    step: int  # steps taken
    epoch: int  # the epoch in progress (1-based)
    in_epoch: int  # its batches consumed
    running: dict[str, float]  # its loss sums so far
    epoch_steps: list[int]
    epoch_losses: dict[str, list[float]]
    epoch_acc: dict[str, list[float]]
    max_param: dict[str, float]
    max_loss: dict[str, float]
    wall: dict[str, float]  # all steps, the first (compilation) included
    first: dict[str, float]  # the first step alone
    warmup: dict[str, float]  # the first step of every process (compiles): step 1 and resumes
    warmup_steps: int  # how many such steps
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, impls: Sequence[str], pairs: Sequence[tuple[str, str]]) -> _Log:
        keys = [pair_key(*p) for p in pairs]
        return cls(
            step=0,
            epoch=1,
            in_epoch=0,
            running=dict.fromkeys(impls, 0.0),
            epoch_steps=[],
            epoch_losses={i: [] for i in impls},
            epoch_acc={i: [] for i in impls},
            max_param=dict.fromkeys(keys, 0.0),
            max_loss=dict.fromkeys(keys, 0.0),
            wall=dict.fromkeys(impls, 0.0),
            first=dict.fromkeys(impls, 0.0),
            warmup=dict.fromkeys(impls, 0.0),
            warmup_steps=0,
        )

    def record(
        self,
        epoch: int,
        row_loss: dict[str, float],
        params: dict[str, Params],
        lr: Any,
        pairs: Sequence[tuple[str, str]],
    ) -> dict[str, Any]:
        """Append the row of the step just taken (losses, pairwise distances) and return it."""
        row: dict[str, Any] = {
            "step": self.step,
            "epoch": epoch,
            "lr": float(lr(self.step - 1)) if callable(lr) else lr,
            "loss": row_loss,
            "rel_param_diff": {},
            "rel_loss_diff": {},
        }
        for a, b in pairs:
            key = pair_key(a, b)
            d = rel_param_distance(params[a], params[b])
            dl = rel_diff(row_loss[a], row_loss[b])
            row["rel_param_diff"][key] = d
            row["rel_loss_diff"][key] = dl
            self.max_param[key] = _nanmax(self.max_param[key], d)
            self.max_loss[key] = _nanmax(self.max_loss[key], dl)
        self.rows.append(row)
        return row

    def end_epoch(self) -> None:
        self.epoch_steps.append(self.in_epoch)
        for impl, total in self.running.items():
            self.epoch_losses[impl].append(total)
        self.running = dict.fromkeys(self.running, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "rows"}


def _run_id(config: CrossCheckConfig, train_ds: Any) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it (epochs and max_steps may grow)."""
    fixed = {
        k: v for k, v in dataclasses.asdict(config).items() if k not in ("epochs", "max_steps")
    }
    return json.loads(json.dumps({**fixed, "examples": len(train_ds)}))


def _resume(
    checkpointer: Checkpointer, trainers: dict[str, Any], run_id: dict[str, Any], out: Path | None
) -> _Log:
    """Load the latest checkpoint into ``trainers``; return its log (rows from metrics.jsonl)."""
    like = {impl: t.snapshot()[0] for impl, t in trainers.items()}
    try:
        restored = checkpointer.restore(like, expect_extras=run_id)
    except ValueError as err:  # another run's checkpoint, or a corrupt one: one line
        raise ConfigError(f"cannot resume: {str(err).splitlines()[0]}") from None
    for impl, trainer in trainers.items():
        trainer.load(restored.state[impl], restored.extras["trainers"][impl])
    log = _Log(**restored.extras["log"])
    if out is not None:
        log.rows = _read_rows(out / "metrics.jsonl", log.step)
    return log


def _read_rows(path: Path, steps: int) -> list[dict[str, Any]]:
    """The first ``steps`` rows of a run's ``metrics.jsonl`` (later ones came after the save)."""
    try:
        with open(path) as f:
            rows = [json.loads(line) for _, line in zip(range(steps), f, strict=False)]
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot resume: {path} is unreadable ({err})") from None
    if len(rows) < steps:
        raise ConfigError(
            f"cannot resume: {path} has {len(rows)} rows, the checkpoint is at step {steps}"
        )
    return rows


def _open_metrics(out: Path, rows: list[dict[str, Any]]) -> Any:
    """``metrics.jsonl`` opened for appending, holding exactly ``rows`` (the resumed steps)."""
    f = open(out / "metrics.jsonl", "w")
    for row in rows:
        f.write(json.dumps(row) + "\n")
    return f


def run(
    config: CrossCheckConfig,
    train_ds: Any,
    eval_ds: Any | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    plot: bool = True,
    print_fn: Callable[[str], None] | None = print,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 0,
) -> dict[str, Any]:
    """Run the cross-check and write its outputs.

    Args:
        config: the run's settings (validated here).
        train_ds: the :class:`jaxopt_lab.cifar.data.Dataset` trained on.
        eval_ds: accuracy after each epoch is measured on it (default: ``train_ds``, which is what
            the tutorial does with the test split).
        out_dir: where ``metrics.jsonl``, ``summary.json``, ``summary.md`` and ``crosscheck.png``
            go (created if needed; None: write nothing).
        progress: show a tqdm bar on stderr.
        plot: write the PNG plot.
        print_fn: per-epoch lines go here (None: silent).
        checkpointer: save all three trainers (the torch optimizer through
            :func:`jaxopt_lab.state_from_torch`) and the run's figures into it after every epoch
            and every ``checkpoint_every`` steps; if it already holds a step, resume from the
            latest first. A resumed run writes the same ``metrics.jsonl`` and summary numbers as
            the uninterrupted run (timings aside); the settings must match the checkpoint's
            (``epochs`` and ``max_steps`` may grow).
        checkpoint_every: also save every this many steps (0: at epoch ends only).

    Returns:
        The summary (also written to ``summary.json``).
    """
    from tqdm.auto import tqdm

    import jaxopt_lab as jol
    from jaxopt_lab.cifar.data import batches, num_batches
    from jaxopt_lab.cifar.models import from_torch, torch_cifar_cnn

    config.validate()
    say = print_fn or (lambda _: None)
    eval_ds = train_ds if eval_ds is None else eval_ds
    np_dtype, torch_dtype = _set_precision(config.precision)
    impls = config.implementations
    pairs = [p for p in PAIRS if p[0] in impls and p[1] in impls]
    steps_per_epoch = num_batches(train_ds, batch_size=config.batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"the dataset has {len(train_ds.labels)} examples: fewer than one batch of "
            f"{config.batch_size}"
        )
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    epochs = math.ceil(total / steps_per_epoch)

    schedule = (
        make_schedule(config.schedule, config.lr, steps_per_epoch) if config.schedule else None
    )
    lr: Any = schedule.jax_fn if schedule is not None else config.lr
    jol_opt = getattr(jol, config.optimizer)(lr=lr, **config.opt_kwargs)
    equivalent = optax_equivalent(config.optimizer, lr, config.opt_kwargs)

    torch_model = torch_cifar_cnn(dtype=torch_dtype, seed=config.seed)
    init_params = jax.tree.map(lambda x: np.array(x, copy=True), from_torch(torch_model))
    trainers: dict[str, Any] = {"jaxopt_lab": _JaxTrainer(jol_opt, init_params, np_dtype)}
    if "optax" in impls:
        trainers["optax"] = _JaxTrainer(equivalent.optimizer, init_params, np_dtype)
    if "torch" in impls:
        trainers["torch"] = _TorchTrainer(
            torch_model, config.optimizer, config.lr, config.opt_kwargs, schedule, np_dtype
        )

    label = _dataset_label(train_ds)
    say(f"data: {label}")
    say(
        f"run: {config.optimizer} lr={config.lr} {config.opt_kwargs or ''} "
        f"schedule={config.schedule} batch={config.batch_size} steps={total} "
        f"({steps_per_epoch}/epoch) precision={config.precision} implementations={','.join(impls)}"
    )
    if "optax" in impls:
        say(
            f"optax equivalent: {equivalent.expression}"
            + ("" if equivalent.exact else " (inexact)")
        )

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    log = _Log.start(impls, pairs)
    run_id = _run_id(config, train_ds)
    if checkpointer is not None and checkpointer.latest_step() is not None:
        log = _resume(checkpointer, trainers, run_id, out)
        say(f"resumed at step {log.step} (epoch {log.epoch}) from {checkpointer.directory}")
    rows = log.rows
    metrics_file = _open_metrics(out, rows) if out is not None else None

    def save() -> None:
        if checkpointer is None or log.step in checkpointer.all_steps():
            return
        if metrics_file is not None:
            metrics_file.flush()  # a resume re-reads the rows up to this step
        snaps = {impl: trainers[impl].snapshot() for impl in impls}
        extras = {**run_id, "log": log.to_json(), "trainers": {k: v[1] for k, v in snaps.items()}}
        data = DataPosition(log.epoch, log.in_epoch, config.seed)
        checkpointer.save(log.step, {k: v[0] for k, v in snaps.items()}, data=data, extras=extras)

    bar = tqdm(total=total, initial=min(log.step, total), disable=not progress, unit="step")
    warming = True  # this process's first step compiles: kept out of steps_per_s
    try:
        while log.epoch <= epochs and log.step < total:
            epoch = log.epoch
            for images, labels in islice(
                batches(
                    train_ds,
                    batch_size=config.batch_size,
                    drop_last=True,
                    shuffle=config.shuffle,
                    seed=config.seed,
                    epoch=epoch,
                    dtype=np_dtype,
                ),
                log.in_epoch,  # batches consumed before the checkpoint this run resumed from
                None,
            ):
                if log.step == total:
                    break
                row_loss, params = {}, {}
                for impl in impls:
                    start = time.perf_counter()
                    row_loss[impl] = trainers[impl].step(images, labels)  # syncs: timing is fair
                    elapsed = time.perf_counter() - start
                    log.wall[impl] += elapsed
                    if log.step == 0:
                        log.first[impl] = elapsed
                    if warming:
                        log.warmup[impl] += elapsed
                    log.running[impl] += row_loss[impl]
                    if pairs:
                        params[impl] = trainers[impl].params()
                log.warmup_steps += warming
                warming = False
                log.step += 1
                log.in_epoch += 1
                row = log.record(epoch, row_loss, params, lr, pairs)
                if metrics_file is not None:
                    metrics_file.write(json.dumps(row) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{row_loss['jaxopt_lab']:.4f}", refresh=False)
                if checkpoint_every and log.step % checkpoint_every == 0:
                    if log.in_epoch < steps_per_epoch:  # epoch ends are saved after evaluation
                        save()
            if log.in_epoch < steps_per_epoch:  # stopped by max_steps: resuming continues here
                save()
            log.end_epoch()
            for impl in impls:
                trainers[impl].end_epoch()
                if config.evaluate:
                    log.epoch_acc[impl].append(trainers[impl].evaluate(eval_ds))
            bar.clear()
            say(
                _epoch_line(
                    epoch,
                    log.epoch_steps[-1],
                    steps_per_epoch,
                    log.epoch_losses,
                    log.epoch_acc,
                    rows,
                    pairs,
                )
            )
            if log.epoch_steps[-1] == steps_per_epoch:
                log.epoch, log.in_epoch = epoch + 1, 0
                save()
            else:
                break
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()

    epoch_steps, epoch_losses, epoch_acc = log.epoch_steps, log.epoch_losses, log.epoch_acc
    max_param, max_loss, wall, first = log.max_param, log.max_loss, log.wall, log.first
    warmup, warmup_steps = log.warmup, log.warmup_steps
    summary = _summary(
        config=config,
        train_ds=train_ds,
        eval_ds=eval_ds,
        label=label,
        impls=impls,
        pairs=pairs,
        rows=rows,
        steps_per_epoch=steps_per_epoch,
        epoch_steps=epoch_steps,
        epoch_losses=epoch_losses,
        epoch_acc=epoch_acc,
        max_param=max_param,
        max_loss=max_loss,
        wall=wall,
        first=first,
        warmup=warmup,
        warmup_steps=warmup_steps,
        equivalent=equivalent,
    )
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "summary.md").write_text(markdown_table(summary))
        if plot:
            plot_run(rows, summary, out / "crosscheck.png")
    for line in _verdict_lines(summary):
        say(line)
    return summary


def _nanmax(a: float, b: float) -> float:
    return b if math.isnan(b) or b > a else a


def _dataset_label(ds: Any) -> str:
    if getattr(ds, "synthetic", False) and "SYNTHETIC" not in ds.name:
        return f"SYNTHETIC stand-in, not CIFAR-10: {ds.name}"
    return ds.name


def _epoch_line(
    epoch: int,
    in_epoch: int,
    steps_per_epoch: int,
    losses: dict[str, list[float]],
    acc: dict[str, list[float]],
    rows: list[dict[str, Any]],
    pairs: Sequence[tuple[str, str]],
) -> str:
    part = "" if in_epoch == steps_per_epoch else f" (partial: {in_epoch} steps)"
    loss = "  ".join(f"{k} {v[-1]:.3f}" for k, v in losses.items())
    text = f"[epoch {epoch}]{part} running loss: {loss}"
    if any(acc.values()):
        text += " | accuracy: " + "  ".join(f"{k} {100 * v[-1]:.2f}%" for k, v in acc.items())
    if pairs:
        last = rows[-1]["rel_param_diff"]
        text += " | rel param diff: " + "  ".join(f"{k} {last[k]:.1e}" for k in last)
    return text


def _summary(
    *,
    config: CrossCheckConfig,
    train_ds: Any,
    eval_ds: Any,
    label: str,
    impls: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    rows: list[dict[str, Any]],
    steps_per_epoch: int,
    epoch_steps: list[int],
    epoch_losses: dict[str, list[float]],
    epoch_acc: dict[str, list[float]],
    max_param: dict[str, float],
    max_loss: dict[str, float],
    wall: dict[str, float],
    first: dict[str, float],
    warmup: dict[str, float],
    warmup_steps: int,
    equivalent: OptaxEquivalent | None,
) -> dict[str, Any]:
    steps = len(rows)
    all_keys = [pair_key(*p) for p in PAIRS]
    last = rows[-1] if rows else {"loss": {}, "rel_param_diff": {}}
    f64 = config.precision == "f64"

    def expected_exact(a: str, b: str) -> bool:
        return "optax" not in (a, b) or (equivalent is not None and equivalent.exact)

    within = {
        pair_key(a, b): (max_param[pair_key(a, b)] <= F64_TOLERANCE)
        for a, b in pairs
        if f64 and expected_exact(a, b)
    }
    return {
        "dataset": {
            "name": train_ds.name,
            "synthetic": bool(getattr(train_ds, "synthetic", False)),
            "label": label,
            "num_examples": len(train_ds.labels),
            "eval_name": eval_ds.name,
            "eval_num_examples": len(eval_ds.labels),
        },
        "synthetic": bool(getattr(train_ds, "synthetic", False)),
        "config": dataclasses.asdict(config) | {"compare": list(config.compare)},
        "optimizer": config.optimizer,
        "lr": config.lr,
        "opt_kwargs": config.opt_kwargs,
        "schedule": config.schedule,
        "precision": config.precision,
        "implementations": list(impls),
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "epoch_steps": epoch_steps,
        "final_loss": {i: last["loss"].get(i) for i in IMPLEMENTATIONS},
        "epoch_running_loss": {i: epoch_losses.get(i, []) for i in IMPLEMENTATIONS},
        "epoch_accuracy": {i: epoch_acc.get(i, []) for i in IMPLEMENTATIONS},
        "max_rel_param_diff": {k: max_param.get(k) for k in all_keys},
        "final_rel_param_diff": {k: last["rel_param_diff"].get(k) for k in all_keys},
        "max_rel_loss_diff": {k: max_loss.get(k) for k in all_keys},
        "param_distance": (
            "max over leaves of ||a-b||_inf / max(||a||_inf, ||b||_inf, tiny), float64, after "
            "every step; max_rel_param_diff is its largest value over the run"
        ),
        "tolerance": F64_TOLERANCE if f64 else None,
        "within_tolerance": within,
        "agree": all(within.values()) if within else None,
        "optax_equivalent": (
            {
                "expression": equivalent.expression,
                "exact": equivalent.exact,
                "notes": list(equivalent.notes),
            }
            if equivalent is not None
            else {"expression": "none", "exact": False, "notes": ["optax has no counterpart"]}
        ),
        "wall_time_s": {i: wall.get(i) for i in IMPLEMENTATIONS},
        "first_step_s": {i: first.get(i) for i in IMPLEMENTATIONS},
        "steps_per_s": {
            i: (steps - warmup_steps) / (wall[i] - warmup[i])
            if i in impls and steps > warmup_steps
            else None
            for i in IMPLEMENTATIONS
        },
        "timing": (
            "wall_time_s: all training steps (evaluation excluded), each synchronised; "
            "first_step_s: step 1 alone (includes JAX compilation); steps_per_s: steps 2.. only "
            "(and, in a resumed run, without the first step after each resume)"
        ),
        "versions": versions(),
        "command": " ".join(sys.argv),
    }


def _verdict_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in summary["max_rel_param_diff"].items():
        if value is None:
            continue
        ok = summary["within_tolerance"].get(key)
        mark = "" if ok is None else ("  OK (<= 1e-9)" if ok else "  FAIL (> 1e-9)")
        lines.append(f"max rel param diff {key}: {value:.3e}{mark}")
    rates = {k: v for k, v in summary["steps_per_s"].items() if v}
    lines.append("steps/s: " + "  ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    return lines


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def markdown_table(summary: dict[str, Any]) -> str:
    """The run as Markdown: settings, a table per implementation and a table per pair."""
    impls = summary["implementations"]
    ds = summary["dataset"]
    has_optax = "optax" in impls
    lines = [f"# Cross-check: {summary['optimizer']} on {ds['label']}", ""]
    if ds["synthetic"]:
        lines += [
            "> **SYNTHETIC stand-in data, not CIFAR-10**: real CIFAR-10 was not available, so "
            "the losses say nothing about the tutorial; the agreement numbers still hold.",
            "",
        ]
    cfg = summary["config"]
    kwargs = ", ".join(f"{k}={v}" for k, v in summary["opt_kwargs"].items())
    schedule = f", schedule `{summary['schedule']}`" if summary["schedule"] else ""
    lines.append(
        f"- optimizer: `{summary['optimizer']}(lr={summary['lr']}{', ' if kwargs else ''}"
        f"{kwargs})`{schedule}"
    )
    if has_optax:
        equivalent = summary["optax_equivalent"]
        lines.append(
            f"- optax equivalent: `{equivalent['expression']}`"
            + ("" if equivalent["exact"] else " (not the same math: see notes)")
        )
    lines += [
        f"- batch size {cfg['batch_size']}, {summary['steps']} steps "
        f"({summary['steps_per_epoch']} per epoch), precision {summary['precision']}, "
        f"seed {cfg['seed']}, shuffle {cfg['shuffle']}",
        f"- jax {summary['versions']['jax']} ({summary['versions']['jax_devices']}), "
        f"torch {summary['versions'].get('torch', '–')}, optax {summary['versions']['optax']}, "
        f"flax {summary['versions']['flax']}",
        "",
        "| implementation | final batch loss | running loss per epoch (sum of batch losses) "
        "| accuracy per epoch | train time (s) | steps/s |",
        "|---|---|---|---|---|---|",
    ]
    for i in impls:
        losses = ", ".join(f"{x:.1f}" for x in summary["epoch_running_loss"][i])
        accs = ", ".join(f"{100 * x:.1f}%" for x in summary["epoch_accuracy"][i]) or "–"
        lines.append(
            f"| {i} | {_fmt(summary['final_loss'][i])} | {losses} | {accs} "
            f"| {_fmt(summary['wall_time_s'][i], '.1f')} "
            f"| {_fmt(summary['steps_per_s'][i], '.2f')} |"
        )
    lines += [
        "",
        "Train time: all training steps, each synchronised, evaluation excluded; steps/s counts "
        "steps 2.. only (step 1 includes JAX compilation).",
    ]
    compared = {k: v for k, v in summary["max_rel_param_diff"].items() if v is not None}
    if compared:
        lines += [
            "",
            "Relative parameter distance: max over layers of ||a-b||∞ / max(||a||∞, ||b||∞), "
            "after every step.",
            "",
            "| pair | max over the run | after the last step | max rel. loss difference "
            "| verdict |",
            "|---|---|---|---|---|",
        ]
    for key, value in compared.items():
        ok = summary["within_tolerance"].get(key)
        if ok is not None:
            verdict = "≤ 1e-9 ✓" if ok else "> 1e-9 ✗"
        elif summary["precision"] == "f32":
            verdict = "f32: reported"
        else:
            verdict = "different math (see notes)"
        lines.append(
            f"| {key} | {_fmt(value, '.3e')} | {_fmt(summary['final_rel_param_diff'][key], '.3e')} "
            f"| {_fmt(summary['max_rel_loss_diff'][key], '.3e')} | {verdict} |"
        )
    notes = summary["optax_equivalent"]["notes"] if has_optax else []
    if notes:
        lines += ["", "Notes on the optax mapping:", ""] + [f"- {n}" for n in notes]
    if summary["precision"] == "f32" and compared:
        lines += [
            "",
            "In float32 the implementations agree only to rounding after the first step: XLA and "
            "torch use different convolution algorithms and summation orders, so the gradients "
            "differ in their last bits. Training carries those differences forward and amplifies "
            "them (in jumps, when a rounding difference changes a discrete outcome such as which "
            "element wins a max-pool window), so the distance grows over the run while the loss "
            "curves stay on top of each other. The float64 run is the exactness check.",
        ]
    return "\n".join(lines) + "\n"


def plot_run(
    rows: list[dict[str, Any]], summary: dict[str, Any], path: str | os.PathLike[str]
) -> None:
    """Save a PNG: the three loss curves (top) and the pairwise parameter distances (bottom).

    Top: every batch loss (thin); over several epochs also each epoch's mean batch loss (the
    tutorial's running loss / steps, dots at the epoch ends). Bottom, log scale: the relative
    parameter distance of each pair after every step, and the float64 tolerance line. A pair that
    stays bit-identical (distance 0 throughout) is listed in the legend but cannot be drawn on a
    log axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_diff) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    styles = {"jaxopt_lab": ("-", 2.2, "C0"), "optax": ("--", 1.4, "C1"), "torch": (":", 1.8, "C3")}
    many_epochs = len(summary["epoch_steps"]) > 2
    ends = np.cumsum(summary["epoch_steps"])
    for impl in summary["implementations"]:
        ls, lw, color = styles[impl]
        losses = [r["loss"][impl] for r in rows]
        if many_epochs:
            ax_loss.plot(steps, losses, "-", lw=0.5, color=color, alpha=0.35)
            means = np.asarray(summary["epoch_running_loss"][impl]) / summary["epoch_steps"]
            ax_loss.plot(ends, means, ls, lw=lw, color=color, marker="o", ms=3, label=impl)
        else:
            ax_loss.plot(steps, losses, ls, lw=lw, color=color, label=impl)
    ax_loss.set_ylabel("batch loss" + (" (dots: epoch mean)" if many_epochs else ""))
    ds = summary["dataset"]
    title = f"{summary['optimizer']} lr={summary['lr']}, {summary['precision']}, {ds['label']}"
    if ds["synthetic"] and "SYNTHETIC" not in title:
        title = "SYNTHETIC DATA, not CIFAR-10 — " + title
    ax_loss.set_title(title, fontsize=9, color="C3" if ds["synthetic"] else "black")
    ax_loss.legend()
    pair_styles = {"jaxopt_lab~torch": "-", "jaxopt_lab~optax": "--", "optax~torch": ":"}
    for key, worst in summary["max_rel_param_diff"].items():
        if worst is None:
            continue
        if worst == 0:
            ax_diff.plot([], [], pair_styles[key], label=f"{key}: identical (0) at every step")
            continue
        values = [r["rel_param_diff"][key] for r in rows]
        values = [v if v > 0 else np.nan for v in values]
        ax_diff.semilogy(steps, values, pair_styles[key], lw=1.5, label=key)
    if summary["tolerance"] is not None:
        ax_diff.axhline(summary["tolerance"], color="k", lw=0.8, ls="-.", label="f64 tolerance")
    ax_diff.set_xlabel("step")
    ax_diff.set_ylabel("relative parameter distance")
    if any(v is not None for v in summary["max_rel_param_diff"].values()):
        ax_diff.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
