"""Training: a pure jitted train step, an eval step, the epoch loop, and data parallelism.

The pieces, in the Flax-examples shape::

    state = TrainState.create(apply_fn=CifarCNN().apply, params=params, tx=jol.sgd(lr=0.01))
    state, metrics = train_step(state, (images_BxHxWxC, labels_B))  # jitted, state donated
    metrics = eval_step(state, (images_BxHxWxC, labels_B, mask_B))  # sums, for padded batches
    state, history = fit(state, dataset, epochs=20, batch_size=64, eval_ds=test_ds)

:func:`fit` is one :class:`EpochTask` (a train state) driven by :func:`run_epochs`, the epoch loop
with the data position, checkpoints and resume; the cross-check drives its three trainers
through the same loop.

``tx`` is any :class:`jaxopt_lab.Optimizer` (``init`` / ``update(params, grads, state)``); an optax
transformation plugs in through :func:`jaxopt_lab.from_optax`.

Nothing here names a backend: the same code runs on CPU, GPU and TPU. On CPU, :func:`fit` drives a
Python loop over the jitted step, because a whole-epoch ``lax.scan`` is much slower there
(convolutions inside a while loop lose their fast layout, jax-ml/jax#12868). On GPU/TPU,
``fit(..., scan=True)`` runs each epoch as one ``lax.scan`` (one dispatch per epoch).

Data parallelism
----------------
``fit(..., mesh=data_mesh())`` runs the *same* jitted step over all devices: the batch is sharded
on its leading axis over the mesh axis ``"data"`` and the train state is replicated
(:func:`shard_batch`, :func:`replicate`). XLA inserts the gradient all-reduce; the result equals
the single-device step up to the summation order of the batch reductions (see
``tests/test_train.py`` for the measured size of that difference).

Multi-host (several processes, each with its local devices) uses the same code:

1. call ``jax.distributed.initialize()`` first in every process (on TPU pods and SLURM/Open MPI
   clusters it finds the coordinator by itself; otherwise pass ``coordinator_address``,
   ``num_processes`` and ``process_id``);
2. build the mesh over ``jax.devices()`` (all global devices, process-major order) with
   :func:`data_mesh`;
3. let every process feed only its own slice of each global batch: :func:`shard_batch` turns
   process-local arrays into one global array with ``jax.make_array_from_process_local_data``.
   :func:`fit` reads the same global batch in every process (same seed) and keeps its slice,
   rows ``[i * B / P, (i + 1) * B / P)`` for process ``i`` of ``P``;
4. metrics come back as replicated global arrays, so every process prints the same numbers
   (print from ``jax.process_index() == 0`` only).

Length: the Flax examples' one ``train.py`` (step, evaluation, data parallelism, and the resumable
epoch loop :func:`run_epochs` that :func:`fit` and the cross-check share); each part is short and
they are read together.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache, wraps
from itertools import islice
from typing import Any, Protocol, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxopt_lab.cifar.checkpoint import Checkpointer, DataPosition
from jaxopt_lab.losses import cross_entropy
from jaxopt_lab.optim.base import ClosureOptimizer, Optimizer, Params

Batch: TypeAlias = tuple[Any, ...]
"""``(images_BxHxWxC, labels_B)`` for training, plus ``mask_B`` (bool) for evaluation."""

Metrics: TypeAlias = dict[str, jax.Array]

DATA_AXIS = "data"
"""Name of the mesh axis the batch is sharded over."""


class TrainState(struct.PyTreeNode):
    """Everything one training step reads and writes: a pytree, so it can be jitted and donated.

    ``apply_fn`` (the model's ``apply``) and ``tx`` (the optimizer) are static fields: they are
    part of the tree structure, not leaves, so ``train_step`` compiles once per model/optimizer.

    Attributes:
        step: int32 scalar, number of steps taken.
        params: the model parameters (a pytree of arrays).
        opt_state: the optimizer state, ``tx.init(params)``.
        apply_fn: ``apply_fn({"params": params}, images) -> logits``.
        tx: the optimizer, an ``init`` / ``update(params, grads, state)`` pair.
    """

    step: jax.Array
    params: Params
    opt_state: Any
    apply_fn: Callable[..., jax.Array] = struct.field(pytree_node=False)
    tx: Optimizer = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, apply_fn: Callable[..., jax.Array], params: Params, tx: Any) -> TrainState:
        """A fresh state at step 0.

        The state takes ownership of ``params``' buffers: :func:`train_step` donates them, so do
        not reuse the arrays you pass here (build each state from host/NumPy params instead).
        """
        params, opt_state = _unaliased((params, tx.init(params)))
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=opt_state,
            apply_fn=apply_fn,
            tx=tx,
        )


# ----------------------------------------------------------------------------------------------
# Compiler options per backend
# ----------------------------------------------------------------------------------------------

CPU_OPTIONS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""XLA:CPU options for the training and evaluation steps.

jaxlib 0.10's CPU pipeline hands convolutions (and their gradients) to YNNPACK fusions, which for
this CNN are about 2.4x slower than XLA's Eigen path: 214 -> 88 ms per batch-64 step on 2
cores (``experiments/bench_train.py``, rows ``jax_xla_default`` and ``jax``).
An empty fusion-type list turns those fusions off for these jits only, the same as
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` does for the whole process.
"""


@cache
def compiler_options(backend: str) -> dict[str, str]:
    """The compiler options the train/eval steps use on ``backend`` (``{}`` off CPU).

    Empty as well when the user's ``XLA_FLAGS`` already sets one of :data:`CPU_OPTIONS` (their
    choice wins) or when this jaxlib does not know the option (checked once by compiling an
    identity function with it).
    """
    if backend != "cpu":
        return {}
    user_flags = os.environ.get("XLA_FLAGS", "")
    if any(f"--{name}" in user_flags for name in CPU_OPTIONS):
        return {}
    try:
        probe = jax.jit(lambda x: x, compiler_options=CPU_OPTIONS)
        probe.lower(np.zeros((), np.float32)).compile()
    except jax.errors.JaxRuntimeError:  # "No such compile option": keep XLA's defaults
        return {}
    return dict(CPU_OPTIONS)


class BackendTunedJit:
    """``jax.jit(fun, **jit_kwargs)`` compiled with :func:`compiler_options` of the backend.

    The backend is read at the first call, not at import, so ``jax.config.update(
    "jax_platforms", ...)`` and ``XLA_FLAGS`` set after importing this module still count.
    """

    def __init__(self, fun: Callable[..., Any], **jit_kwargs: Any) -> None:
        self.fun, self.jit_kwargs = fun, jit_kwargs
        self._jitted: dict[str, Any] = {}
        wraps(fun)(self)

    @property
    def jitted(self) -> Any:
        """The ``jax.jit`` object for the current default backend."""
        backend = jax.default_backend()
        if backend not in self._jitted:
            options = compiler_options(backend) or None
            self._jitted[backend] = jax.jit(self.fun, compiler_options=options, **self.jit_kwargs)
        return self._jitted[backend]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted.lower(*args, **kwargs)

    def _cache_size(self) -> int:
        return self.jitted._cache_size()


def _unaliased(tree: Any) -> Any:
    """Copy every leaf whose device buffer another leaf already uses.

    Donation needs distinct buffers: an ``init`` that returns one ``zeros_like`` array for two
    state fields (or that stores ``params`` itself) would otherwise make the first donated
    :func:`train_step` fail with "Attempt to donate the same buffer twice".
    """
    seen: set[tuple[int, ...]] = set()

    def fresh(x: Any) -> Any:
        if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
            return x
        key = tuple(shard.data.unsafe_buffer_pointer() for shard in x.addressable_shards)
        if key in seen:
            return jnp.array(x, copy=True)
        seen.add(key)
        return x

    return jax.tree.map(fresh, tree)


def _predictions(logits_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
    # argmax gives the default int type (int64 under x64); cast so the comparison does not promote.
    return jnp.argmax(logits_BxK, axis=-1).astype(labels_B.dtype)


def _train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One optimizer step on the mean cross-entropy of ``batch`` (the tutorial's loss)."""
    images_BxHxWxC, labels_B = batch[0], batch[1]

    def loss_fn(params: Params) -> tuple[jax.Array, jax.Array]:
        logits_BxK = state.apply_fn({"params": params}, images_BxHxWxC)
        return cross_entropy(logits_BxK, labels_B), logits_BxK

    if isinstance(state.tx, ClosureOptimizer):  # L-BFGS: the closure re-evaluates the batch
        params, opt_state, loss = state.tx.step(
            state.params, state.opt_state, jax.value_and_grad(lambda p: loss_fn(p)[0])
        )
        logits_BxK = state.apply_fn({"params": state.params}, images_BxHxWxC)
    else:
        (loss, logits_BxK), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        params, opt_state = state.tx.update(state.params, grads, state.opt_state)
    correct = jnp.sum(_predictions(logits_BxK, labels_B) == labels_B, dtype=jnp.int32)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "correct": correct}


train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]] = BackendTunedJit(
    _train_step, donate_argnums=0
)
"""``(state, (images_BxHxWxC, labels_B)) -> (state, {"loss", "correct"})``, jitted.

The input state is donated (its buffers are reused for the output): keep only the returned one.
Compiled with :func:`compiler_options` for the default backend (on CPU: Eigen convolutions).
"""


def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Sums over the valid rows of a (possibly padded) batch: ``loss_sum``, ``correct``, ``count``.

    Jitted on ``(apply_fn, params, batch)`` only, so states with different optimizers share one
    compilation.

    Args:
        state: the train state (only ``params`` and ``apply_fn`` are read).
        batch: ``(images_BxHxWxC, labels_B, mask_B)``; rows with ``mask_B == False`` are padding.
    """
    return _eval_sums(state.apply_fn, state.params, batch)


def _eval_sums_impl(apply_fn: Callable[..., jax.Array], params: Params, batch: Batch) -> Metrics:
    images_BxHxWxC, labels_B, mask_B = batch
    logits_BxK = apply_fn({"params": params}, images_BxHxWxC)
    losses_B = cross_entropy(logits_BxK, labels_B, reduction="none")
    hits_B = (_predictions(logits_BxK, labels_B) == labels_B) & mask_B
    return {
        "loss_sum": jnp.sum(jnp.where(mask_B, losses_B, jnp.zeros_like(losses_B))),
        "correct": jnp.sum(hits_B, dtype=jnp.int32),
        "count": jnp.sum(mask_B, dtype=jnp.int32),
    }


_eval_sums = BackendTunedJit(_eval_sums_impl, static_argnums=0)


def _scan_epoch(state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
    return jax.lax.scan(_train_step, state, batches)


train_epoch_scan: Callable[[TrainState, Batch], tuple[TrainState, Metrics]] = BackendTunedJit(
    _scan_epoch, donate_argnums=0
)
"""A whole epoch as one ``lax.scan``: ``(state, (images_SxBxHxWxC, labels_SxB))``.

Metrics come back stacked (shape ``S``). Use it on GPU/TPU; on CPU it is much slower than a
Python loop over :data:`train_step` (jax-ml/jax#12868).
"""


# ----------------------------------------------------------------------------------------------
# Data parallelism
# ----------------------------------------------------------------------------------------------


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all global devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf of ``tree`` on all devices of ``mesh`` (fully replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(local_batch: Batch, mesh: Mesh, axis: int = 0) -> Batch:
    """Shard a batch over the mesh's ``"data"`` axis along dimension ``axis``.

    Args:
        local_batch: this process's rows of every array (in a single process: the whole batch).
        mesh: from :func:`data_mesh`.
        axis: the batch dimension (``1`` for the stacked ``S x B`` arrays of a scanned epoch).

    Returns:
        Global arrays whose batch dimension is split evenly over the mesh devices.
    """
    spec = P(*([None] * axis), DATA_AXIS)
    sharding = NamedSharding(mesh, spec)
    out = []
    for x in local_batch:
        x = np.asarray(x)
        global_shape = list(x.shape)
        global_shape[axis] *= jax.process_count()
        if global_shape[axis] % mesh.size:
            raise ValueError(
                f"the batch dimension ({global_shape[axis]}) must be divisible by the number of "
                f"devices in the mesh ({mesh.size})"
            )
        out.append(jax.make_array_from_process_local_data(sharding, x, tuple(global_shape)))
    return tuple(out)


def _process_slice(batch: Batch, axis: int = 0) -> Batch:
    """This process's contiguous share of a global batch (identity in a single process)."""
    count, index = jax.process_count(), jax.process_index()
    if count == 1:
        return batch
    size = batch[0].shape[axis] // count
    rows = slice(index * size, (index + 1) * size)
    return tuple(np.asarray(x)[(slice(None),) * axis + (rows,)] for x in batch)


# ----------------------------------------------------------------------------------------------
# The epoch loop
# ----------------------------------------------------------------------------------------------


@dataclass
class EpochResult:
    """What :func:`fit` reports after each epoch.

    Attributes:
        epoch: 1-based epoch number.
        steps: optimizer steps taken in this epoch.
        running_loss: the tutorial's number: the SUM of the batch losses over the epoch.
        losses: every batch loss of the epoch, in order.
        accuracy: fraction of ``eval_ds`` classified correctly (``None`` without ``eval_ds``).
        seconds: wall time of the epoch's training (evaluation excluded).
    """

    epoch: int
    steps: int
    running_loss: float
    losses: list[float] = field(repr=False)
    accuracy: float | None
    seconds: float


def padded_batches(
    ds: Any, batch_size: int, dtype: Any = np.float32
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All of ``ds`` in batches of exactly ``batch_size`` rows: the last one padded, with a mask.

    Fixed shapes mean one compilation of :func:`eval_step`.
    """
    from jaxopt_lab.cifar.data import batches

    for images, labels in batches(ds, batch_size=batch_size, drop_last=False, dtype=dtype):
        n = len(labels)
        mask = np.ones(batch_size, dtype=bool)
        if n < batch_size:
            pad = batch_size - n
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
            mask[n:] = False
        yield images, labels, mask


def evaluate(
    state: TrainState,
    ds: Any,
    batch_size: int = 500,
    dtype: Any = np.float32,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``state`` on all of ``ds`` (no example dropped).

    Batches of ``min(batch_size, len(ds))`` rows (rounded up to a multiple of the mesh size);
    the last one is padded and masked, so :func:`eval_step` compiles once.
    """
    batch_size = max(1, min(batch_size, len(ds)))
    if mesh is not None:
        batch_size += -batch_size % mesh.size
    totals = {"loss_sum": 0.0, "correct": 0, "count": 0}
    pending = []
    for batch in padded_batches(ds, batch_size, dtype):
        if mesh is not None:
            batch = shard_batch(_process_slice(batch), mesh)
        pending.append(eval_step(state, batch))
    for metrics in jax.device_get(pending):
        totals["loss_sum"] += float(metrics["loss_sum"])
        totals["correct"] += int(metrics["correct"])
        totals["count"] += int(metrics["count"])
    count = max(totals["count"], 1)
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


class EpochTask(Protocol):
    """What :func:`run_epochs` drives: :func:`fit`'s one train state, or the cross-check's trainers.

    The loop owns the data position and the checkpoint rules; a task owns its model state, what it
    records and prints, and what goes into a checkpoint.
    """

    @property
    def step(self) -> int:
        """The current state's checkpoint key: the steps it has taken."""
        ...

    def restore(self, checkpointer: Checkpointer) -> tuple[DataPosition, int]:
        """Load the latest checkpoint; return its data position and the steps taken up to it."""
        ...

    def train(self, batches: Iterator[Batch], epoch: int, steps: int, bar: Any) -> None:
        """Take ``steps`` steps of ``epoch``, one batch of ``batches`` each; advance ``bar``."""
        ...

    def end_epoch(self, epoch: int, steps: int, seconds: float, bar: Any) -> None:
        """``epoch`` ended after ``steps`` steps (fewer than a whole epoch where ``max_steps``
        stopped it) and ``seconds`` of training: evaluate, record, report (``bar.clear()`` first).
        """
        ...

    def snapshot(self, position: DataPosition) -> tuple[Any, dict[str, Any]]:
        """(arrays, JSON extras) to checkpoint at ``position``."""
        ...


def run_epochs(
    task: EpochTask,
    train_ds: Any,
    *,
    epochs: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    dtype: Any = np.float32,
    max_steps: int | None = None,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
    leave_bar: bool = True,
) -> None:
    """The resumable epoch loop: ``task`` trained on ``epochs`` passes over ``train_ds``.

    The rules it owns, shared by :func:`fit` and the cross-check:

    - data: epoch ``e`` (1-based) reads ``batches(train_ds, batch_size, drop_last=True,
      shuffle=shuffle, seed=seed, epoch=e, dtype=dtype)``; a run stops after ``max_steps`` steps
      in all, possibly inside an epoch (which then ends short: ``task.end_epoch`` sees fewer
      steps);
    - checkpoints (with a ``checkpointer``): a save every ``checkpoint_every`` steps inside an
      epoch, one where ``max_steps`` stops an epoch (before ``end_epoch``: the epoch is still in
      progress) and one after each complete epoch (after ``end_epoch``, at the next epoch's first
      batch). Each holds ``task.snapshot(position)`` and the :class:`DataPosition` (1-based epoch,
      batches of it consumed, ``seed``), keyed by ``task.step``; a step already saved is not saved
      again;
    - resume: if ``checkpointer`` holds a step, ``task.restore`` loads the latest one first and the
      loop continues from its data position: the skipped batches are read and dropped, so the
      batches, and with them the whole run, are those of the run that was never interrupted.

    Raises:
        ValueError: ``checkpoint_every`` is negative.
    """
    from tqdm.auto import tqdm

    from jaxopt_lab.cifar.data import batches, num_batches

    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    steps_per_epoch = num_batches(train_ds, batch_size=batch_size, drop_last=True)
    position, done = DataPosition(1, 0, seed), 0  # done: the steps taken so far
    if checkpointer is not None and checkpointer.latest_step() is not None:
        position, done = task.restore(checkpointer)
    total = steps_per_epoch * epochs
    if max_steps is not None:
        total = min(total, max_steps)
    every = checkpoint_every if checkpointer is not None else 0

    def save(position: DataPosition) -> None:
        if checkpointer is None or task.step in checkpointer.all_steps():
            return
        tree, extras = task.snapshot(position)
        checkpointer.save(task.step, tree, data=position, extras=extras)

    bar = tqdm(
        total=total, initial=min(done, total), disable=not progress, unit="step", leave=leave_bar
    )
    try:
        for epoch in range(position.epoch, epochs + 1):
            if done >= total:
                break
            in_epoch = position.batch_index if epoch == position.epoch else 0
            start = time.perf_counter()
            epoch_batches: Iterator[Batch] = islice(
                batches(
                    train_ds,
                    batch_size=batch_size,
                    drop_last=True,
                    shuffle=shuffle,
                    seed=seed,
                    epoch=epoch,
                    dtype=dtype,
                ),
                in_epoch,  # batches consumed before the checkpoint this run resumed from
                None,
            )
            take = min(steps_per_epoch - in_epoch, total - done)
            while take > 0:
                n = min(take, every - done % every) if every else take
                task.train(epoch_batches, epoch, n, bar)
                in_epoch, done, take = in_epoch + n, done + n, take - n
                if take > 0:
                    save(DataPosition(epoch, in_epoch, seed))
            seconds = time.perf_counter() - start
            complete = in_epoch == steps_per_epoch
            if not complete:  # stopped by max_steps: resuming continues this epoch
                save(DataPosition(epoch, in_epoch, seed))
            task.end_epoch(epoch, in_epoch, seconds, bar)
            if complete:
                save(DataPosition(epoch + 1, 0, seed))
    finally:
        bar.close()


def fit(
    state: TrainState,
    train_ds: Any,
    *,
    epochs: int,
    batch_size: int = 64,
    eval_ds: Any | None = None,
    shuffle: bool = False,
    seed: int = 0,
    dtype: Any = np.float32,
    mesh: Mesh | None = None,
    max_steps: int | None = None,
    scan: bool = False,
    progress: bool = True,
    print_fn: Callable[[str], None] | None = print,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 0,
) -> tuple[TrainState, list[EpochResult]]:
    """Train for ``epochs`` passes over ``train_ds``, printing the tutorial's per-epoch line.

    After each epoch it prints ``[epoch N] running loss: SUM  accuracy: A %`` where ``SUM`` is the
    sum of the epoch's batch losses (what the tutorial prints) and ``A`` the accuracy on
    ``eval_ds``. The loop, its checkpoints and the resume are :func:`run_epochs`'.

    Args:
        state: from :meth:`TrainState.create`; donated, use the returned one.
        train_ds: a :class:`jaxopt_lab.cifar.data.Dataset`.
        epochs: number of passes.
        batch_size: rows per step (``drop_last``, like the tutorial's DataLoader).
        eval_ds: evaluated after each epoch, if given.
        shuffle: a new order every epoch (``batches``' ``(seed, epoch)``); off, like the tutorial.
        seed: base shuffling seed.
        dtype: image dtype fed to the model (``np.float64`` for float64 runs).
        mesh: run data-parallel over this mesh (see the module docstring); ``None``: one device.
        max_steps: stop after this many steps in total.
        scan: run each epoch as one ``lax.scan`` (GPU/TPU; slow on CPU, see the module docstring).
        progress: show a tqdm progress bar (on stderr).
        print_fn: where the per-epoch lines go (``None``: silent).
        checkpointer: save into it after every epoch (and every ``checkpoint_every`` steps),
            and, if it already holds a step, resume from its latest one first: train state, data
            position and the history so far. Resuming after ``k`` steps and training on gives
            bit for bit the run that was never interrupted (``tests/test_train.py``). The run's
            ``batch_size``, ``shuffle``, ``seed`` and dataset size must match the checkpoint's.
        checkpoint_every: also save every this many steps (0: at epoch ends only; with ``scan``
            only epoch ends are saved).

    Returns:
        The final state and one :class:`EpochResult` per epoch (resumed epochs included).
    """
    run_id = {"batch_size": batch_size, "shuffle": shuffle, "seed": seed, "examples": len(train_ds)}
    task = _Fit(
        state, run_id, eval_ds=eval_ds, dtype=dtype, mesh=mesh, scan=scan, print_fn=print_fn
    )
    every = checkpoint_every
    if scan and every > 0:  # a scanned epoch is one dispatch: only its end is saved
        every = 0
    run_epochs(
        task,
        train_ds,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        dtype=dtype,
        max_steps=max_steps,
        checkpointer=checkpointer,
        checkpoint_every=every,
        progress=progress,
        leave_bar=False,
    )
    return task.state, task.history


class _Fit:
    """:func:`fit`'s :class:`EpochTask`: one train state, its history and this epoch's losses."""

    def __init__(
        self,
        state: TrainState,
        run_id: dict[str, Any],
        *,
        eval_ds: Any | None,
        dtype: Any,
        mesh: Mesh | None,
        scan: bool,
        print_fn: Callable[[str], None] | None,
    ) -> None:
        self.state = replicate(state, mesh) if mesh is not None else state
        self.run_id, self.eval_ds, self.dtype = run_id, eval_ds, dtype
        self.mesh, self.scan, self.print_fn = mesh, scan, print_fn
        self.history: list[EpochResult] = []
        self.losses: list[float] = []  # the batch losses of the epoch in progress

    @property
    def step(self) -> int:
        return int(self.state.step)

    def restore(self, checkpointer: Checkpointer) -> tuple[DataPosition, int]:
        """The latest checkpoint's state, history and current-epoch losses."""
        restored = checkpointer.restore(self.state, expect_extras=self.run_id)
        self.state = restored.state
        if self.mesh is not None:
            self.state = replicate(self.state, self.mesh)
        self.history = [EpochResult(**h) for h in restored.extras["history"]]
        self.losses = list(restored.extras["losses"])
        if self.print_fn is not None:
            self.print_fn(f"resumed from step {self.step} in {checkpointer.directory}")
        position = restored.data or DataPosition(len(self.history) + 1, 0, self.run_id["seed"])
        return position, sum(h.steps for h in self.history) + len(self.losses)

    def train(self, batches: Iterator[Batch], epoch: int, steps: int, bar: Any) -> None:
        if self.scan:
            self.state, new = _fit_epoch_scan(self.state, batches, steps, self.mesh)
            bar.update(steps)
        else:
            self.state, new = _fit_epoch_loop(self.state, batches, steps, self.mesh, bar)
        self.losses = self.losses + new

    def end_epoch(self, epoch: int, steps: int, seconds: float, bar: Any) -> None:
        accuracy = None
        if self.eval_ds is not None:
            metrics = evaluate(self.state, self.eval_ds, dtype=self.dtype, mesh=self.mesh)
            accuracy = metrics["accuracy"]
        losses, self.losses = self.losses, []
        result = EpochResult(epoch, len(losses), float(np.sum(losses)), losses, accuracy, seconds)
        self.history.append(result)
        if self.print_fn is not None:
            acc = "" if accuracy is None else f"  accuracy: {100 * accuracy:.2f} %"
            bar.clear()
            self.print_fn(f"[epoch {epoch}] running loss: {result.running_loss:.3f}{acc}")

    def snapshot(self, position: DataPosition) -> tuple[Any, dict[str, Any]]:
        extras = {
            **self.run_id,
            "history": [asdict(h) for h in self.history],
            "losses": self.losses,
        }
        return self.state, extras


def _fit_epoch_loop(
    state: TrainState, epoch_batches: Iterable[Batch], take: int, mesh: Mesh | None, bar: Any
) -> tuple[TrainState, list[float]]:
    pending = []
    for i, batch in enumerate(islice(epoch_batches, take)):  # leaves later batches unread
        if mesh is not None:
            batch = shard_batch(_process_slice(batch), mesh)
        state, metrics = train_step(state, batch)
        pending.append(metrics["loss"])  # stays on device: no sync per step
        bar.update(1)
        if i % 20 == 19:
            bar.set_postfix(loss=f"{float(pending[-1]):.4f}")
    return state, [float(x) for x in jax.device_get(pending)]


def _fit_epoch_scan(
    state: TrainState, epoch_batches: Iterable[Batch], take: int, mesh: Mesh | None
) -> tuple[TrainState, list[float]]:
    rows = [b for _, b in zip(range(take), epoch_batches, strict=False)]
    stacked = (np.stack([b[0] for b in rows]), np.stack([b[1] for b in rows]))
    if mesh is not None:
        stacked = shard_batch(_process_slice(stacked, axis=1), mesh, axis=1)
    state, metrics = train_epoch_scan(state, stacked)
    return state, [float(x) for x in jax.device_get(metrics["loss"])]
