"""A tiny deterministic training run that checkpoints every step (helper for test_checkpoint.py).

The run: a 4-8-3 tanh MLP with dropout on 24 fixed random examples, batches of 8 drawn from a
per-epoch permutation (seeded by ``(shuffle_seed, epoch)``), a jitted step that splits the RNG key
for the dropout mask, a jaxopt_lab optimizer, and a plateau-like auxiliary state (best loss, bad
steps). Everything a resume needs is in :class:`RunState` plus the RNG key and the
:class:`~jaxopt_lab.cifar.checkpoint.DataPosition`.

Imported by the test (the uninterrupted reference run), and run as a script by the kill test::

    python tests/_resume_worker.py DIR TOTAL_STEPS [OPTIMIZER] [--hold K PHASE]

which resumes from DIR's latest checkpoint if there is one, trains to TOTAL_STEPS and saves after
every step, printing ``saving K`` before and ``saved K`` after each save (K = steps taken).

``--hold K PHASE`` stops the run at a chosen point of step K's save, prints ``holding K PHASE``
and blocks until it is killed, so that the test kills it at a known point rather than after a
guessed delay (PHASE is one of :data:`PHASES`):

- ``before-save``: step K is trained, its save has not started;
- ``mid-save``: inside orbax's save of step K, once ``K.orbax-checkpoint-tmp*`` is complete
  (arrays, manifest, orbax metadata and ``commit_success.txt`` written) and is about to be renamed
  to ``K`` (the rename is the commit);
- ``mid-delete``: step K is committed, and orbax's ``max_to_keep`` clean-up has removed the first
  file of an older step's directory (the directory and the rest of its files are still there);
- ``after-save``: ``ckpt.save(K, ...)`` has returned (``saved K`` printed).

The two orbax hook points are private orbax functions wrapped in this process only; if a hold
point is not reached during step K's save (orbax changed its internals), the worker exits with
status 3 and says so on stderr instead of running on.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import jax
import jax.numpy as jnp
import numpy as np

import jaxopt_lab as jol
from jaxopt_lab.cifar.checkpoint import Checkpointer, DataPosition

N_EXAMPLES, BATCH = 24, 8
BATCHES_PER_EPOCH = N_EXAMPLES // BATCH
SHUFFLE_SEED = 1234
KEEP = 2  # max_to_keep of the worker's checkpointer
PHASES = ("before-save", "mid-save", "mid-delete", "after-save")

OPTIMIZERS: dict[str, Callable[[], jol.Optimizer]] = {
    "adam": lambda: jol.adam(lr=1e-2, weight_decay=1e-3, amsgrad=True),
    "sgd": lambda: jol.sgd(lr=0.1, momentum=0.9, nesterov=True),
}


class Plateau(NamedTuple):
    """Stands in for schedule state such as ReduceLROnPlateau's: one f32 and one int32 scalar."""

    best: jax.Array
    bad_steps: jax.Array


class RunState(NamedTuple):
    params: Any
    opt_state: Any
    plateau: Plateau
    step: jax.Array  # int32 scalar: steps taken


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x_NxD = rng.standard_normal((N_EXAMPLES, 4)).astype(np.float32)
    y_N = rng.integers(0, 3, N_EXAMPLES).astype(np.int32)
    return x_NxD, y_N


def init(optimizer: str = "adam") -> tuple[RunState, jax.Array, DataPosition]:
    """The state of a fresh run: (state, rng key, data position)."""
    k1, k2 = jax.random.split(jax.random.key(42))
    params = {
        "dense1": {
            "kernel": 0.5 * jax.random.normal(k1, (4, 8), jnp.float32),
            "bias": jnp.zeros((8,), jnp.float32),
        },
        "dense2": {
            "kernel": 0.5 * jax.random.normal(k2, (8, 3), jnp.float32),
            "bias": jnp.zeros((3,), jnp.float32),
        },
    }
    plateau = Plateau(jnp.array(jnp.inf, jnp.float32), jnp.array(0, jnp.int32))
    state = RunState(params, OPTIMIZERS[optimizer]().init(params), plateau, jnp.array(0, jnp.int32))
    return state, jax.random.key(7), DataPosition(0, 0, SHUFFLE_SEED)


@functools.cache  # one jitted step per optimizer and process: compile once
def make_step(optimizer: str = "adam") -> Callable[..., tuple[RunState, jax.Array]]:
    opt = OPTIMIZERS[optimizer]()

    def loss_fn(params: Any, key: jax.Array, x_BxD: jax.Array, y_B: jax.Array) -> jax.Array:
        h_BxH = jnp.tanh(x_BxD @ params["dense1"]["kernel"] + params["dense1"]["bias"][None, :])
        keep_BxH = jax.random.bernoulli(key, 0.75, h_BxH.shape)
        h_BxH = jnp.where(keep_BxH, h_BxH / 0.75, 0.0)
        logits_BxC = h_BxH @ params["dense2"]["kernel"] + params["dense2"]["bias"][None, :]
        logp_BxC = jax.nn.log_softmax(logits_BxC)
        return -jnp.mean(jnp.take_along_axis(logp_BxC, y_B[:, None], axis=1))

    @jax.jit
    def step(state: RunState, key: jax.Array, x_BxD: jax.Array, y_B: jax.Array):
        key, dropout_key = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, dropout_key, x_BxD, y_B)
        params, opt_state = opt.update(state.params, grads, state.opt_state)
        better = loss < state.plateau.best
        plateau = Plateau(
            jnp.where(better, loss, state.plateau.best),
            jnp.where(better, 0, state.plateau.bad_steps + 1).astype(jnp.int32),
        )
        return RunState(params, opt_state, plateau, state.step + 1), key

    return step


def batch(pos: DataPosition, x_NxD: np.ndarray, y_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    perm_N = np.random.default_rng([pos.shuffle_seed, pos.epoch]).permutation(N_EXAMPLES)
    idx_B = perm_N[pos.batch_index * BATCH : (pos.batch_index + 1) * BATCH]
    return x_NxD[idx_B], y_N[idx_B]


def advance(pos: DataPosition) -> DataPosition:
    if pos.batch_index + 1 == BATCHES_PER_EPOCH:
        return DataPosition(pos.epoch + 1, 0, pos.shuffle_seed)
    return DataPosition(pos.epoch, pos.batch_index + 1, pos.shuffle_seed)


def train(
    total_steps: int,
    start: tuple[RunState, jax.Array, DataPosition],
    optimizer: str = "adam",
    on_step: Callable[[RunState, jax.Array, DataPosition], None] | None = None,
) -> tuple[RunState, jax.Array, DataPosition]:
    """Trains from ``start`` until ``state.step == total_steps``, calling ``on_step`` after each."""
    step, (x_NxD, y_N) = make_step(optimizer), data()
    state, key, pos = start
    while int(state.step) < total_steps:
        state, key = step(state, key, *batch(pos, x_NxD, y_N))
        pos = advance(pos)
        if on_step is not None:
            on_step(state, key, pos)
    return state, key, pos


def extras(optimizer: str) -> dict[str, Any]:
    return {"optimizer": optimizer, "model": "mlp-4-8-3"}


def configure_jax() -> None:
    """The test suite's settings (tests/conftest.py), so both processes compile the same step."""
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")


class Hold(NamedTuple):
    """Where to stop: step ``step``'s save, at ``phase`` (one of :data:`PHASES`)."""

    step: int
    phase: str


_HELD = threading.Lock()  # taken by the first thread to hold, never released


def hold_here(at: Hold) -> NoReturn:
    """Reports the hold point on stdout (once), then blocks every caller until killed.

    Several threads may get here (orbax's parallel deleter unlinks from a thread pool); only the
    first prints, the others block on the lock.
    """
    _HELD.acquire()
    print(f"holding {at.step} {at.phase}", flush=True)
    while True:
        threading.Event().wait()


def install_orbax_hooks(directory: Path, at: Hold, saving: list[int | None]) -> None:
    """Makes orbax hold at ``at`` (mid-save or mid-delete of step ``saving[0] == at.step``).

    mid-save: orbax commits a step by renaming its complete temporary directory to ``<step>``
    (``AtomicRenameTemporaryPath.finalize`` -> ``async_path.rename``); we hold before that rename.
    mid-delete: after the commit, ``CheckpointManager._finalize`` removes the steps beyond
    ``max_to_keep`` with ``StandardCheckpointDeleter.delete(step)``, which unlinks the step's files
    one by one (``shutil.rmtree`` or orbax's parallel deleter, both through ``os.unlink``); we hold
    right after the first file of an old step is unlinked.
    """
    from orbax.checkpoint._src.path import async_path, deleter

    if at.phase == "mid-save":
        rename = async_path.rename
        final = directory / str(at.step)

        async def rename_or_hold(src: Any, dst: Any) -> Any:
            if saving[0] == at.step and Path(dst) == final:
                hold_here(at)
            return await rename(src, dst)

        async_path.rename = rename_or_hold
    elif at.phase == "mid-delete":
        delete, unlink = deleter.StandardCheckpointDeleter.delete, os.unlink
        deleting = threading.Event()

        def delete_marked(self: Any, step: int) -> None:
            if saving[0] == at.step:
                print(f"deleting step {step}", file=sys.stderr, flush=True)
                deleting.set()
            try:
                delete(self, step)
            finally:
                deleting.clear()

        def unlink_then_hold(path: Any, *, dir_fd: int | None = None) -> None:
            unlink(path, dir_fd=dir_fd)
            if deleting.is_set():
                hold_here(at)

        deleter.StandardCheckpointDeleter.delete = delete_marked
        os.unlink = unlink_then_hold


def main(directory: str, total_steps: int, optimizer: str = "adam", at: Hold | None = None) -> None:
    configure_jax()
    saving: list[int | None] = [None]  # the step being saved, read by the orbax hooks
    if at is not None:
        install_orbax_hooks(Path(directory).absolute(), at, saving)
    ckpt = Checkpointer(directory, max_to_keep=KEEP)
    start = init(optimizer)
    if ckpt.latest_step() is not None:
        r = ckpt.restore(like=start[0], expect_extras=extras(optimizer))
        start = (r.state, r.rng, r.data)
    print(f"start {int(start[0].step)}", flush=True)

    def save(state: RunState, key: jax.Array, pos: DataPosition) -> None:
        k = int(state.step)
        holding = at is not None and at.step == k
        if holding and at.phase == "before-save":
            hold_here(at)
        print(f"saving {k}", flush=True)
        saving[0] = k
        ckpt.save(k, state, rng=key, data=pos, extras=extras(optimizer))
        saving[0] = None
        print(f"saved {k}", flush=True)
        if holding and at.phase == "after-save":
            hold_here(at)
        if holding:
            print(f"hold point {at} was never reached (orbax internals changed?)", file=sys.stderr)
            sys.exit(3)

    train(total_steps, start, optimizer, on_step=save)
    ckpt.close()
    print("done", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("total_steps", type=int)
    parser.add_argument("optimizer", nargs="?", default="adam", choices=sorted(OPTIMIZERS))
    parser.add_argument("--hold", nargs=2, metavar=("K", "PHASE"), help=f"PHASE in {PHASES}")
    args = parser.parse_args(argv)
    if args.hold is not None:
        step, phase = args.hold
        if not step.isdigit() or phase not in PHASES:
            parser.error(f"--hold wants a step and one of {PHASES}, got {args.hold}")
        args.hold = Hold(int(step), phase)
    return args


if __name__ == "__main__":
    a = parse_args(sys.argv[1:])
    main(a.directory, a.total_steps, a.optimizer, a.hold)
