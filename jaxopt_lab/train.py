"""Training: a pure jitted train step, an eval step, the epoch loop, and data parallelism.

The pieces, in the Flax-examples shape::

    state = TrainState.create(apply_fn=CifarCNN().apply, params=params, tx=jol.sgd(lr=0.01))
    state, metrics = train_step(state, (images_BxHxWxC, labels_B))  # jitted, state donated
    metrics = eval_step(state, (images_BxHxWxC, labels_B, mask_B))  # sums, for padded batches
    state, history = fit(state, dataset, epochs=20, batch_size=64, eval_ds=test_ds)

``tx`` is any :class:`jaxopt_lab.Optimizer` (``init`` / ``update(params, grads, state)``); an optax
transformation plugs in through :func:`jaxopt_lab.from_optax`.

Nothing here names a backend: the same code runs on CPU, GPU and TPU. On CPU, :func:`fit` drives a
Python loop over the jitted step, because a whole-epoch ``lax.scan`` is about 25x slower there
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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxopt_lab._base import Optimizer, Params
from jaxopt_lab.losses import cross_entropy

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

    (loss, logits_BxK), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = state.tx.update(state.params, grads, state.opt_state)
    correct = jnp.sum(_predictions(logits_BxK, labels_B) == labels_B, dtype=jnp.int32)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "correct": correct}


train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]] = jax.jit(
    _train_step, donate_argnums=0
)
"""``(state, (images_BxHxWxC, labels_B)) -> (state, {"loss", "correct"})``, jitted.

The input state is donated (its buffers are reused for the output): keep only the returned one.
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


@partial(jax.jit, static_argnums=0)
def _eval_sums(apply_fn: Callable[..., jax.Array], params: Params, batch: Batch) -> Metrics:
    images_BxHxWxC, labels_B, mask_B = batch
    logits_BxK = apply_fn({"params": params}, images_BxHxWxC)
    losses_B = cross_entropy(logits_BxK, labels_B, reduction="none")
    hits_B = (_predictions(logits_BxK, labels_B) == labels_B) & mask_B
    return {
        "loss_sum": jnp.sum(jnp.where(mask_B, losses_B, jnp.zeros_like(losses_B))),
        "correct": jnp.sum(hits_B, dtype=jnp.int32),
        "count": jnp.sum(mask_B, dtype=jnp.int32),
    }


def _scan_epoch(state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
    return jax.lax.scan(_train_step, state, batches)


train_epoch_scan: Callable[[TrainState, Batch], tuple[TrainState, Metrics]] = jax.jit(
    _scan_epoch, donate_argnums=0
)
"""A whole epoch as one ``lax.scan``: ``(state, (images_SxBxHxWxC, labels_SxB))``.

Metrics come back stacked (shape ``S``). Use it on GPU/TPU; on CPU it is ~25x slower than a
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
    from jaxopt_lab.data import batches

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
) -> tuple[TrainState, list[EpochResult]]:
    """Train for ``epochs`` passes over ``train_ds``, printing the tutorial's per-epoch line.

    After each epoch it prints ``[epoch N] running loss: SUM  accuracy: A %`` where ``SUM`` is the
    sum of the epoch's batch losses (what the tutorial prints) and ``A`` the accuracy on
    ``eval_ds``.

    Args:
        state: from :meth:`TrainState.create`; donated, use the returned one.
        train_ds: a :class:`jaxopt_lab.data.Dataset`.
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

    Returns:
        The final state and one :class:`EpochResult` per epoch.
    """
    from tqdm.auto import tqdm

    from jaxopt_lab.data import batches, num_batches

    if mesh is not None:
        state = replicate(state, mesh)
    steps_per_epoch = num_batches(train_ds, batch_size=batch_size, drop_last=True)
    total = (
        steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    )
    history: list[EpochResult] = []
    done = 0
    bar = tqdm(total=total, disable=not progress, unit="step", leave=False)
    for epoch in range(1, epochs + 1):
        if done >= total:
            break
        start = time.perf_counter()
        epoch_batches: Iterable[Batch] = batches(
            train_ds,
            batch_size=batch_size,
            drop_last=True,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            dtype=dtype,
        )
        take = min(steps_per_epoch, total - done)
        if scan:
            state, losses = _fit_epoch_scan(state, epoch_batches, take, mesh)
            bar.update(take)
        else:
            state, losses = _fit_epoch_loop(state, epoch_batches, take, mesh, bar)
        seconds = time.perf_counter() - start
        done += take
        accuracy = None
        if eval_ds is not None:
            accuracy = evaluate(state, eval_ds, dtype=dtype, mesh=mesh)["accuracy"]
        result = EpochResult(epoch, take, float(np.sum(losses)), losses, accuracy, seconds)
        history.append(result)
        if print_fn is not None:
            acc = "" if accuracy is None else f"  accuracy: {100 * accuracy:.2f} %"
            bar.clear()
            print_fn(f"[epoch {epoch}] running loss: {result.running_loss:.3f}{acc}")
    bar.close()
    return state, history


def _fit_epoch_loop(
    state: TrainState, epoch_batches: Iterable[Batch], take: int, mesh: Mesh | None, bar: Any
) -> tuple[TrainState, list[float]]:
    pending = []
    for i, batch in enumerate(epoch_batches):
        if i == take:
            break
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
