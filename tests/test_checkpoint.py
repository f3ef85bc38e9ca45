"""jaxopt_lab.cifar.checkpoint: bit-exact round trips, bitwise resume, keep-last-N, clear errors,
kills.

The training run under test is ``_resume_worker`` (a tiny MLP with dropout, a shuffled data
stream and a plateau-like auxiliary state). "Bitwise" means: same tree structure and node types,
same dtype and shape per leaf, same bytes (key arrays compared through their raw data).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import _resume_worker as worker
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_lab as jol
from jaxopt_lab.cifar.checkpoint import Checkpointer, DataPosition

REPO = Path(__file__).resolve().parents[1]
KILL_SEED = 20261123  # picks the kill steps and the order of the phases
KILL_TOTAL_STEPS = 12
KILL_OPTIMIZER = "sgd"  # Nesterov momentum; its trace is 5x cheaper than amsgrad Adam's per worker
WORKER_TIMEOUT_S = 300.0  # only bounds a hung worker (each takes ~3 s idle); nothing sleeps


def _bytes(x: Any) -> tuple[str, tuple[int, ...], bytes]:
    if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return (
            f"key<{jax.random.key_impl(x)}>",
            x.shape,
            np.asarray(jax.random.key_data(x)).tobytes(),
        )
    a = np.asarray(x)
    return (str(a.dtype), a.shape, a.tobytes())


def assert_bitwise_equal(got: Any, want: Any) -> None:
    """Same structure (node types included), and per leaf the same kind, dtype, shape, bytes."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    for (path, g), w in zip(got_leaves, jax.tree.leaves(want), strict=True):
        assert type(g) is type(w) or (isinstance(g, jax.Array) and isinstance(w, jax.Array)), path
        assert _bytes(g) == _bytes(w), f"{jax.tree_util.keystr(path)}: {g!r} != {w!r}"


def assert_no_chained_trace(e: BaseException) -> None:
    """The error stands alone: no orbax/tensorstore exception printed under it."""
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(directory.rglob("*"))
    }


# ----------------------------------------------------------------------------- round trip


class Extra(NamedTuple):
    scale: Any
    nothing: Any


def _every_kind_of_leaf() -> dict[str, Any]:
    params = {
        "w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) / 7,
        "b": jnp.array([1.5, -0.0, jnp.nan], jnp.float32),
    }
    return {
        "params": params,
        "adam": jol.adam(amsgrad=False).init(params),  # max_exp_avg_sq is None
        "sgd": jol.sgd(momentum=0.9).init(params),
        "dtypes": {
            "bf16": jnp.array([1.0, 2.0**-9, -3.5], jnp.bfloat16),
            "f16": jnp.array([65504.0, 2.0**-24], jnp.float16),
            "f64": jnp.array([np.pi, 1e-300, -np.inf], jnp.float64),
            "i32": jnp.array(-(2**31), jnp.int32),
            "u8": np.arange(4, dtype=np.uint8),
            "bool": jnp.array([True, False]),
            "empty": jnp.zeros((0, 3), jnp.float32),
        },
        "typed_key": jax.random.key(3),
        "raw_key": jax.random.PRNGKey(4),
        "extra": Extra(np.float64(0.25), None),
        "python": [1.5, 7, True],
        "optimizers": _every_optimizer_state(params),
    }


def _every_optimizer_state(params: dict[str, Any]) -> dict[str, Any]:
    """Each registry algorithm's state (after one step where it steps from one gradient): its
    NamedTuple type, None fields and int32 count must survive the round trip."""
    from jaxopt_lab import registry

    states = {}
    for algorithm in registry.ALGORITHMS:
        opt = algorithm.factory()
        # Muon takes 2-D params only; L-BFGS and SparseAdam are initialised, not stepped.
        state = opt.init(params if algorithm.per_step else {"w": params["w"]})
        if algorithm.per_step:
            grads = jax.tree.map(lambda p: jnp.cos(p * 3.0), params)
            _, state = opt.update(params, grads, state)
        states[algorithm.name] = state
    return states


def test_round_trip_is_bit_exact_and_keeps_types(tmp_path: Path) -> None:
    tree = _every_kind_of_leaf()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(
            3,
            tree,
            rng=jax.random.key(9),
            data=DataPosition(2, 5, 17),
            extras={"optimizer": "adam", "betas": (0.9, 0.999)},
        )
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x, tree
    )
    for like in (tree, abstract):
        r = Checkpointer(tmp_path).restore(like=like)
        assert_bitwise_equal(r.state, tree)
        assert type(r.state["adam"]) is jol.AdamState and r.state["adam"].max_exp_avg_sq is None
        assert r.state["adam"].count.dtype == jnp.int32
        assert r.step == 3 and r.data == DataPosition(2, 5, 17)
        assert r.extras == {"optimizer": "adam", "betas": [0.9, 0.999]}  # JSON: tuple -> list
        assert_bitwise_equal(r.rng, jax.random.key(9))


def test_restored_leaves_keep_the_placement_of_like(tmp_path: Path) -> None:
    """A committed ``like`` (pinned or sharded) gives leaves with its sharding; an uncommitted
    one (a fresh ``init``'s default placement) uncommitted leaves, so a jitted step reading them
    is the fresh run's program (no recompilation on resume)."""
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    tree = {
        "free": jnp.arange(8.0),
        "pinned": jax.device_put(jnp.arange(8.0), jax.devices()[-1]),
        "sharded": jax.device_put(jnp.arange(8.0), sharded),
    }
    Checkpointer(tmp_path).save(1, tree)
    got = Checkpointer(tmp_path).restore(like=tree).state
    assert_bitwise_equal(got, tree)
    for name, leaf in tree.items():
        assert got[name].committed == leaf.committed, name
        assert got[name].sharding == leaf.sharding, name
    step = jax.jit(lambda x: x * 2.0)
    assert step.lower(got["free"]).as_text() == step.lower(tree["free"]).as_text()


# ----------------------------------------------------------------------------- bitwise resume


@pytest.mark.parametrize("optimizer", sorted(worker.OPTIMIZERS))
def test_resume_after_k_steps_is_bitwise_identical(tmp_path: Path, optimizer: str) -> None:
    total, k = 7, 4  # k = 4 resumes mid-epoch (3 batches per epoch)
    reference = worker.train(total, worker.init(optimizer), optimizer)

    ckpt = Checkpointer(tmp_path, max_to_keep=2)
    state, key, pos = worker.train(k, worker.init(optimizer), optimizer)
    ckpt.save(k, state, rng=key, data=pos, extras=worker.extras(optimizer))
    ckpt.close()
    del state, key, pos

    fresh = Checkpointer(tmp_path)
    r = fresh.restore(like=worker.init(optimizer)[0], expect_extras=worker.extras(optimizer))
    assert r.data == DataPosition(1, 1, worker.SHUFFLE_SEED)
    resumed = worker.train(total, (r.state, r.rng, r.data), optimizer)
    assert_bitwise_equal(resumed, reference)


# ----------------------------------------------------------------------------- keep-last-N


def test_keep_last_n_and_step_errors(tmp_path: Path) -> None:
    tree = {"w": jnp.ones((2,), jnp.float32)}
    ckpt = Checkpointer(tmp_path, max_to_keep=2)
    assert ckpt.all_steps() == [] and ckpt.latest_step() is None
    for step in range(5):
        ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, tree))
    assert ckpt.all_steps() == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("_")) == ["3", "4"]
    assert_bitwise_equal(ckpt.restore(like=tree).state, {"w": jnp.full((2,), 4.0, jnp.float32)})
    assert_bitwise_equal(
        ckpt.restore(like=tree, step=3).state, {"w": jnp.full((2,), 3.0, jnp.float32)}
    )
    with pytest.raises(
        ValueError, match=re.escape("no checkpoint for step 1") + ".*saved steps: \\[3, 4\\]"
    ):
        ckpt.restore(like=tree, step=1)
    with pytest.raises(ValueError, match="step 4 is already saved"):
        ckpt.save(4, tree)
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        ckpt.save(-1, tree)
    with pytest.raises(ValueError, match="max_to_keep must be a positive int"):
        Checkpointer(tmp_path, max_to_keep=0)


# ----------------------------------------------------------------------------- mismatch table


def _run_state(optimizer: str = "adam", hidden: int = 8, dtype: Any = jnp.float32) -> Any:
    state = worker.init(optimizer)[0]
    if hidden == 8 and dtype == jnp.float32:
        return state
    params = {
        "dense1": {"kernel": jnp.zeros((4, hidden), dtype), "bias": jnp.zeros((hidden,), dtype)},
        "dense2": {"kernel": jnp.zeros((hidden, 3), dtype), "bias": jnp.zeros((3,), dtype)},
    }
    return state._replace(params=params, opt_state=worker.OPTIMIZERS[optimizer]().init(params))


class Mismatch(NamedTuple):
    desc: str
    like: Any  # () -> template
    message: str  # regex the ValueError must match
    expect_extras: dict[str, Any] | None = None


MISMATCHES = [
    Mismatch(
        "other optimizer (state type)",
        lambda: _run_state("sgd"),
        r"another type.*\n  \.opt_state: checkpoint has AdamState, template has SGDState",
    ),
    Mismatch(
        "same state type, other optimizer (extras)",
        lambda: _run_state("adam"),
        r"saved with other settings: optimizer: checkpoint has 'adam', expected 'adamw'",
        {"optimizer": "adamw"},
    ),
    Mismatch(
        "amsgrad off (None buffer)",
        lambda: _run_state()._replace(
            opt_state=_run_state().opt_state._replace(max_exp_avg_sq=None)
        ),
        r"\.opt_state\.max_exp_avg_sq: checkpoint has dict, template has None",
    ),
    Mismatch(
        "wider hidden layer (architecture)",
        lambda: _run_state(hidden=16),
        r"different architecture.*\n  \.params\['dense1'\]\['bias'\]: checkpoint has float32\[8\], "
        r"template has float32\[16\]",
    ),
    Mismatch(
        "float64 params",
        lambda: _run_state(dtype=jnp.float64),
        r"checkpoint has float32\[4, 8\], template has float64\[4, 8\]",
    ),
    Mismatch(
        "extra layer",
        lambda: _run_state()._replace(
            params={**_run_state().params, "dense3": {"kernel": jnp.zeros((3, 3), jnp.float32)}}
        ),
        r"\.params\['dense3'\]: only in the template \(node dict\)",
    ),
]


@pytest.mark.parametrize("case", MISMATCHES, ids=lambda c: c.desc)
def test_mismatched_template_is_one_clear_value_error(tmp_path: Path, case: Mismatch) -> None:
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, _run_state(), extras=worker.extras("adam"))
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=case.message) as info:
        Checkpointer(tmp_path).restore(like=case.like(), expect_extras=case.expect_extras)
    assert str(tmp_path / "1") in str(info.value)
    assert_no_chained_trace(info.value)
    assert _snapshot(tmp_path) == before  # nothing written, nothing deleted


# ----------------------------------------------------------------------------- corrupt files


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 7):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _data_files(step_dir: Path) -> list[Path]:
    return [p for p in (step_dir / "arrays").rglob("*") if p.is_file() and p.parent.name == "d"]


CORRUPTIONS = {
    "manifest not JSON": lambda d: (d / "meta" / "metadata").write_text("{not json"),
    "manifest missing": lambda d: (d / "meta" / "metadata").unlink(),
    "manifest of another program": lambda d: (d / "meta" / "metadata").write_text('{"a": 1}'),
    "array data deleted": lambda d: [p.unlink() for p in _data_files(d)],
    "array data garbled": lambda d: [_garble(p) for p in _data_files(d)],
    "array data truncated": lambda d: [
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]) for p in _data_files(d)
    ],
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=str)
def test_corrupt_checkpoint_is_one_clear_value_error(tmp_path: Path, corrupt: str) -> None:
    like = _run_state()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, like)
        ckpt.save(2, like)
    assert _data_files(tmp_path / "2")
    CORRUPTIONS[corrupt](tmp_path / "2")
    before = _snapshot(tmp_path)
    with pytest.raises(
        ValueError, match=r"checkpoint .*/2 (is unreadable|is corrupt|is not a jaxopt_lab)"
    ) as info:
        Checkpointer(tmp_path).restore(like=like)
    assert_no_chained_trace(info.value)
    assert _snapshot(tmp_path) == before
    assert_bitwise_equal(Checkpointer(tmp_path).restore(like=like, step=1).state, like)


def test_missing_directory_file_path_and_partial_save(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpoint found in"):
        Checkpointer(tmp_path / "nowhere").restore(like={})
    assert not (tmp_path / "nowhere").exists()  # restoring creates nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        Checkpointer(tmp_path / "file")
    # A save killed midway leaves only `<step>.orbax-checkpoint-tmp`: not a step; removed by the
    # next writer.
    tree = {"w": jnp.ones((3,), jnp.float32)}
    Checkpointer(tmp_path / "run").save(1, tree)
    partial = tmp_path / "run" / "2.orbax-checkpoint-tmp"
    (partial / "arrays").mkdir(parents=True)
    (partial / "arrays" / "junk").write_bytes(b"\0" * 10)
    reader = Checkpointer(tmp_path / "run")
    assert reader.all_steps() == [1]
    assert_bitwise_equal(reader.restore(like=tree).state, tree)
    assert partial.exists()  # the reader deleted nothing
    writer = Checkpointer(tmp_path / "run")
    writer.save(2, tree)
    assert writer.all_steps() == [1, 2] and not partial.exists()
    with pytest.raises(ValueError, match=r"leaf \['f'\] is a function, not an array"):
        writer.save(3, {"f": lambda: 0})
    with pytest.raises(ValueError, match="JSON-serializable"):
        writer.save(3, tree, extras={"bad": object()})
    assert writer.all_steps() == [1, 2]


# ----------------------------------------------------------------------------- kill and resume


def _worker_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Compile the step once across the worker processes (the same executable, so bit-for-bit
    # the same numbers); XLA compilation dominates each worker's start-up otherwise.
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


class _Worker:
    """``_resume_worker.py`` as a child process: stdout read line by line, stderr kept in a log.

    A context manager: leaving it kills the worker if it still runs, closes its stdout pipe and
    reaps it, on every path (a failed assertion included), so nothing leaks into the next test.
    """

    def __init__(self, directory: Path, tmp_path: Path, name: str, at: worker.Hold | None) -> None:
        self.log = tmp_path / f"{name}.log"
        hold = [] if at is None else ["--hold", str(at.step), at.phase]
        script = Path(__file__).with_name("_resume_worker.py")
        argv = [str(script), str(directory), str(KILL_TOTAL_STEPS), KILL_OPTIMIZER, *hold]
        with self.log.open("wb") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, *argv],
                stdout=subprocess.PIPE,
                stderr=stderr,
                bufsize=0,  # unbuffered: select() on the pipe sees every byte the worker wrote
                cwd=REPO,
                env=_worker_env(tmp_path),
            )
        self.lines: list[str] = []
        self._partial = b""

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.__exit__(*exc)  # closes the stdout pipe, waits for the process

    def read_until(self, line: str) -> list[str]:
        """Reads stdout up to ``line``; returns the lines before it (since the last call).

        Fails, with the worker's stderr, if the worker ends first or prints nothing for
        ``WORKER_TIMEOUT_S`` (then it is killed).
        """
        assert self.proc.stdout is not None
        fd, first = self.proc.stdout.fileno(), len(self.lines)
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while True:
            while b"\n" in self._partial:
                got, self._partial = self._partial.split(b"\n", 1)
                self.lines.append(got.decode().strip())
                if self.lines[-1] == line:
                    return self.lines[first:-1]
            left = deadline - time.monotonic()
            ready = left > 0 and bool(select.select([fd], [], [], left)[0])
            chunk = os.read(fd, 1 << 16) if ready else None  # b"": end of file, the worker ended
            if chunk:
                self._partial += chunk
                continue
            if chunk is None:
                self.proc.kill()
            rc = self.proc.wait()
            why = (
                f"printed no {line!r} within {WORKER_TIMEOUT_S:.0f} s, killed"
                if chunk is None
                else f"ended (rc={rc}) before printing {line!r}"
            )
            raise AssertionError(
                f"worker {why}; its stdout: {[*self.lines, self._partial.decode()]}; "
                f"the end of its stderr ({self.log}):\n{self.log.read_text()[-6000:]}"
            )

    def kill(self) -> None:
        self.proc.kill()
        assert self.proc.wait() == -signal.SIGKILL, f"the worker ended on its own; see {self.log}"


def _kill_plan(seed: int) -> list[worker.Hold]:
    """One kill per phase of :data:`_resume_worker.PHASES`, in a seeded order at seeded steps.

    Steps are increasing and above ``KEEP``, so every kill step's save has an older step to delete.
    """
    rng = random.Random(seed)
    phases = rng.sample(worker.PHASES, len(worker.PHASES))
    steps = sorted(rng.sample(range(worker.KEEP + 1, KILL_TOTAL_STEPS), len(phases)))
    return [worker.Hold(k, phase) for k, phase in zip(steps, phases, strict=True)]


def _tmp_dirs(directory: Path, step: int) -> list[Path]:
    return list(directory.glob(f"{step}.orbax-checkpoint-tmp*"))


def _assert_killed_at(directory: Path, at: worker.Hold, steps: list[int]) -> int:
    """Checks what a kill at ``at`` leaves on disk; returns the step a resume must start from."""
    k = at.step
    if at.phase in ("before-save", "mid-save"):
        assert steps[-1] == k - 1, f"{at}: committed steps {steps}, want latest {k - 1}"
        assert not (directory / str(k)).exists()
        # mid-save: step k's complete temporary directory was never renamed; not a step.
        assert bool(_tmp_dirs(directory, k)) == (at.phase == "mid-save"), os.listdir(directory)
        return k - 1
    if at.phase == "mid-delete":
        # The step being removed is still listed (its directory is there, part of its files
        # gone); the latest is k. The next run's first save deletes it (checked at the end).
        assert steps[-1] == k and steps[0] <= k - worker.KEEP, f"{at}: committed steps {steps}"
        return k
    assert at.phase == "after-save"
    assert steps == [k - 1, k], f"{at}: committed steps {steps}"
    return k


def test_killed_run_resumes_bitwise_identical(tmp_path: Path) -> None:
    """SIGKILL a checkpointing run at seeded points of every save phase, resume, finish, compare.

    Each trial starts a worker that resumes from the directory's latest step and holds at a chosen
    point of step k's save (``_resume_worker --hold k PHASE``): before the save, inside orbax's
    save just before the commit (rename), while max_to_keep deletes an older step, after the save.
    The test reads the worker's ``holding k PHASE`` line, kills it with SIGKILL, and checks that
    the latest committed step is exactly the one that phase implies (k-1 or k) and restores bit for
    bit equal to the uninterrupted run at that step; the next worker must resume from it. A final
    run to the end must equal the uninterrupted run, and leave only the newest 2 steps.
    """
    plan = _kill_plan(KILL_SEED)
    assert sorted(at.phase for at in plan) == sorted(worker.PHASES)
    reference = {}
    worker.train(
        KILL_TOTAL_STEPS,
        worker.init(KILL_OPTIMIZER),
        KILL_OPTIMIZER,
        on_step=lambda s, k, p: reference.__setitem__(int(s.step), (s, k, p)),
    )
    like = worker.init(KILL_OPTIMIZER)[0]
    directory = tmp_path / "run"
    resume_from = 0
    for trial, at in enumerate(plan):
        with _Worker(directory, tmp_path, f"trial{trial}", at) as w:
            before = w.read_until(f"holding {at.step} {at.phase}")
            w.kill()
        assert before[0] == f"start {resume_from}", before
        with Checkpointer(directory) as ckpt:
            resume_from = _assert_killed_at(directory, at, ckpt.all_steps())
            r = ckpt.restore(like=like)
        assert r.step == resume_from
        assert_bitwise_equal((r.state, r.rng, r.data), reference[resume_from])

    with _Worker(directory, tmp_path, "final", None) as w:
        before = w.read_until("done")
        assert w.proc.wait() == 0
    assert before[0] == f"start {resume_from}" and before[-1] == f"saved {KILL_TOTAL_STEPS}"
    with Checkpointer(directory) as ckpt:
        assert ckpt.all_steps() == [KILL_TOTAL_STEPS - 1, KILL_TOTAL_STEPS]  # keep-last-2
        r = ckpt.restore(like=like)
    assert_bitwise_equal((r.state, r.rng, r.data), reference[KILL_TOTAL_STEPS])
    # No stale temporary directory and no half-deleted step is left behind.
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("_")) == [
        str(KILL_TOTAL_STEPS - 1),
        str(KILL_TOTAL_STEPS),
    ]
