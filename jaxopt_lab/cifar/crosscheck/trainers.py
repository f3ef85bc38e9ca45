"""The three implementations under test, behind one :class:`Trainer` protocol.

- ``jaxopt_lab``: the Flax :class:`~jaxopt_lab.cifar.models.CifarCNN` trained by
  :data:`jaxopt_lab.cifar.train.train_step` with the jaxopt_lab optimizer (:class:`JaxTrainer`);
- ``optax``: the same Flax model and step with the closest optax optimizer
  (:func:`~jaxopt_lab.cifar.crosscheck.counterparts.optax_equivalent`, adapted by
  :func:`jaxopt_lab.from_optax`), also a :class:`JaxTrainer`;
- ``torch``: the torch model trained eagerly by ``torch.optim`` (``foreach=False``), its NCHW
  input being the same NumPy batch transposed (:class:`TorchTrainer`).

:func:`make_trainers` builds them from the same weights: torch's default init of the tutorial's
CNN, transferred with :func:`jaxopt_lab.cifar.models.from_torch`.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab import registry
from jaxopt_lab.cifar.crosscheck.config import CrossCheckConfig, Schedule
from jaxopt_lab.cifar.crosscheck.counterparts import OptaxEquivalent
from jaxopt_lab.cifar.train import TrainState, evaluate, padded_batches, train_step
from jaxopt_lab.optim.base import Optimizer, Params


class Trainer(Protocol):
    """One implementation as the cross-check drives it: step, read params, evaluate, checkpoint.

    Built (initialised) from the run's shared initial weights by :func:`make_trainers`.
    """

    def step(self, images: np.ndarray, labels: np.ndarray) -> float:
        """One optimizer step on the batch (NHWC images); returns the batch loss (synchronised)."""
        ...

    def params(self) -> Params:
        """A host (NumPy) copy of the parameters, in the Flax model's layout."""
        ...

    def evaluate(self, ds: Any) -> float:
        """Accuracy on all of ``ds``."""
        ...

    def end_epoch(self) -> None:
        """Called after every epoch (torch steps its lr scheduler here)."""
        ...

    def snapshot(self) -> tuple[Any, dict[str, Any]]:
        """The state for a checkpoint: (arrays, JSON extras) that :meth:`load` restores."""
        ...

    def load(self, tree: Any, extras: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (``tree`` restored into the structure it had)."""
        ...


@functools.cache
def _model() -> Any:
    """One CifarCNN for every JAX trainer, so they share the eval step's compilation.

    ``precision=HIGHEST``: full float32 convs and matmuls on GPU/TPU too (no TF32/bf16 passes),
    as torch's CPU kernels compute; a no-op on CPU.
    """
    from jaxopt_lab.cifar.models import CifarCNN

    return CifarCNN(precision=jax.lax.Precision.HIGHEST)


class JaxTrainer:
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


class TorchTrainer:
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
        cls = getattr(torch.optim, registry.get(name).torch_class)
        switches = {"foreach": False} if "foreach" in inspect.signature(cls).parameters else {}
        self.opt = cls(model.parameters(), lr=lr, **{**switches, **kwargs})
        self.closure_driven = not registry.get(name).per_step
        self.scheduler = schedule.make_torch(self.opt) if schedule is not None else None
        self.steps = 0

    def _nchw(self, images: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    def step(self, images: np.ndarray, labels: np.ndarray) -> float:
        torch = self.torch
        self.model.train()
        x, y = self._nchw(images), torch.from_numpy(labels.astype(np.int64))

        def closure() -> Any:
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            loss.backward()
            return loss

        if self.closure_driven:  # L-BFGS re-evaluates the batch; returns the first loss
            loss = self.opt.step(closure)
        else:
            loss = closure()
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
        :func:`jaxopt_lab.interop.torch_state.state_from_torch` (in torch's layout: no
        transposes). Extras: the param groups' hyper-parameters (a scheduler changes ``lr``), the
        scheduler's ``state_dict`` and the step count.
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


def make_trainers(
    config: CrossCheckConfig,
    lr: Any,
    equivalent: OptaxEquivalent | None,
    schedule: Schedule | None,
    dtypes: tuple[np.dtype, Any],
) -> dict[str, Trainer]:
    """The run's trainers, by name in :data:`IMPLEMENTATIONS` order, all from the same weights.

    Args:
        config: the (validated) run settings: optimizer, hyper-parameters, seed, which to compare.
        lr: the JAX side's learning rate, a number or ``schedule.jax_fn``.
        equivalent: the optax counterpart (used when ``config`` compares optax).
        schedule: the per-epoch schedule (torch's half is stepped by :class:`TorchTrainer`).
        dtypes: the (NumPy, torch) dtypes of the run (``set_precision``).
    """
    import jaxopt_lab as jol
    from jaxopt_lab.cifar.models import from_torch, torch_cifar_cnn

    np_dtype, torch_dtype = dtypes
    impls = config.implementations
    jol_opt = getattr(jol, config.optimizer)(lr=lr, **config.opt_kwargs)
    torch_model = torch_cifar_cnn(dtype=torch_dtype, seed=config.seed)
    init_params = jax.tree.map(lambda x: np.array(x, copy=True), from_torch(torch_model))
    trainers: dict[str, Trainer] = {"jaxopt_lab": JaxTrainer(jol_opt, init_params, np_dtype)}
    if "optax" in impls:
        trainers["optax"] = JaxTrainer(equivalent.optimizer, init_params, np_dtype)
    if "torch" in impls:
        trainers["torch"] = TorchTrainer(
            torch_model, config.optimizer, config.lr, config.opt_kwargs, schedule, np_dtype
        )
    return trainers
