"""Checkpoint and resume a training pytree with orbax: arrays bit for bit, metadata as JSON.

One :class:`Checkpointer` per run directory; ``save`` writes one step, ``restore`` reads one back
into the structure of a template tree (``like=``)::

    ckpt = Checkpointer("runs/cifar", max_to_keep=3)
    ckpt.save(step, state, rng=key, data=DataPosition(epoch, batch_index, seed),
              extras={"optimizer": "adam", "lr": 1e-3})
    ...
    r = ckpt.restore(like=fresh_state, expect_extras={"optimizer": "adam"})
    state, key, pos = r.state, r.rng, r.data   # resume exactly where the run stopped

What is saved, per step (one orbax step directory, ``<directory>/<step>``):

- every array leaf of ``state`` (any pytree: dicts, lists, NamedTuples such as ``jol.AdamState``,
  flax ``struct`` nodes, ``None`` fields), as host numpy data with its exact dtype (int32 ``count``,
  float16/bfloat16/float32/float64 all round-trip bit for bit), plus a checksum of its bytes;
- a JSON manifest: the step, the data position, the RNG key (its raw data and PRNG
  implementation), the ``extras`` you pass (optimizer name, hyper-parameters, an architecture
  fingerprint...), and the tree's layout: every leaf's path, shape and dtype and every node's type.

``restore`` rebuilds ``state`` by unflattening into ``like``'s tree structure, so NamedTuple and
flax node types, ``None`` fields and static fields come from your code, not from the file. Before
reading any array it compares the saved layout with ``like``'s and raises one ``ValueError``
listing what differs: a node of another type (``AdamState`` vs ``SGDState``: another optimizer), a
leaf of another shape or dtype, or a leaf present on one side only (another architecture). An
unreadable or corrupt step directory (missing files, bad JSON, garbled array data, checksum
mismatch) is also a ``ValueError`` naming the directory, never an orbax or tensorstore traceback.
Restoring never writes to or deletes from the checkpoint directory (it never saves).

Atomicity and retention come from ``orbax.checkpoint.CheckpointManager``: a step is written into
``<step>.orbax-checkpoint-tmp`` and renamed to ``<step>`` only when complete, so a process killed
mid-save leaves the previous steps untouched and readable (the stale temporary directory is ignored
and cleaned up by the next :class:`Checkpointer` on that directory). Saves are synchronous: when
``save`` returns the step is on disk. After each save only the newest ``max_to_keep`` steps remain.

Scope: single-process runs (arrays are gathered to the host before writing). Multi-host training
should use orbax's sharded array handlers directly.

Length: one on-disk format and the one class that writes and reads it; the private helpers (tree
layout and its differences, leaves to and from the host, orbax's noise on a failed read) serve
only :class:`Checkpointer` and are read with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

FORMAT = "jaxopt_lab.cifar.checkpoint/1"
"""Written into every manifest; a manifest without it is not one of ours."""

_ARRAYS = "arrays"  # orbax item: flat dict of numpy arrays (StandardSave)
_META = "meta"  # orbax item: the JSON manifest (JsonSave)
_RNG = "rng"  # key of the RNG's raw data inside the arrays item
_MAX_LISTED = 8  # differences listed in one error message


class DataPosition(NamedTuple):
    """Where the input pipeline stands: enough to rebuild the next batch exactly.

    Saved and restored as given, in the caller's numbering. jaxopt_lab's own epoch loop
    (:func:`jaxopt_lab.cifar.train.run_epochs`, so ``fit`` and the cross-check) numbers epochs
    from 1, as the ``epoch`` it passes to :func:`jaxopt_lab.cifar.data.batches`: its checkpoint
    after the whole of epoch ``e`` holds ``DataPosition(e + 1, 0, seed)``.

    Attributes:
        epoch: the epoch in progress (1-based in jaxopt_lab's loop, which never stores the
            default 0).
        batch_index: batches of ``epoch`` already consumed; the next batch is this index.
        shuffle_seed: the seed the epoch's permutation was drawn from.
    """

    epoch: int = 0
    batch_index: int = 0
    shuffle_seed: int = 0


class Restored(NamedTuple):
    """What :meth:`Checkpointer.restore` returns.

    Attributes:
        step: the step the checkpoint was saved at.
        state: the saved pytree, in ``like``'s structure, leaves of ``like``'s kind.
        rng: the saved RNG key (a typed key if a typed key was saved, raw ``uint32`` data if raw
            data was saved), or ``None``.
        data: the saved :class:`DataPosition`, or ``None``.
        extras: the saved ``extras`` as JSON gives them back (tuples come back as lists).
    """

    step: int
    state: Any
    rng: jax.Array | None
    data: DataPosition | None
    extras: dict[str, Any]


# ----------------------------------------------------------------------------- tree layout


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _type_name(x: Any) -> str:
    return "None" if x is None else type(x).__qualname__


def _children(node: Any) -> list[tuple[Any, Any]] | None:
    """``(key, child)`` pairs one level down, or ``None`` if ``node`` is a leaf."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda c: c is not node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # not a registered node: a leaf
        return None
    return [(path[0], child) for path, child in pairs]


def _walk(tree: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Any, bool]]:
    """Pre-order ``(path, value, is_leaf)`` over every node and leaf, in flattening order."""
    kids = _children(tree)
    if kids is None:
        yield prefix, tree, True
        return
    yield prefix, tree, False
    for key, child in kids:
        yield from _walk(child, (*prefix, key))


def _leaf_spec(x: Any) -> tuple[tuple[int, ...], str]:
    """``(shape, dtype name)`` of an array-like leaf; raises TypeError for anything else."""
    if isinstance(x, bool | int | float) and not isinstance(x, np.generic):
        x = np.asarray(x)
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"{type(x).__name__} is not an array")
    return tuple(int(d) for d in x.shape), str(x.dtype)


def _layout(tree: Any) -> dict[str, str]:
    """``{path: description}`` for every node (``"node AdamState"``) and leaf (``"float32[3]"``)."""
    out = {}
    for path, value, is_leaf in _walk(tree):
        where = jax.tree_util.keystr(path) or "<root>"
        if is_leaf:
            try:
                shape, dtype = _leaf_spec(value)
            except TypeError:
                raise ValueError(
                    f"checkpoint: leaf {where} is a {type(value).__name__}, not an array; only "
                    "array leaves (jax/numpy arrays, Python numbers) can be checkpointed"
                ) from None
            out[where] = f"{dtype}{list(shape)}"
        else:
            out[where] = f"node {_type_name(value)}"
    return out


def _below(path: str, node: str) -> bool:
    """Whether ``path`` lies strictly inside the subtree at ``node`` (keystr paths)."""
    if node == "<root>":
        return path != node
    return path.startswith(node) and path[len(node) : len(node) + 1] in (".", "[")


def _describe_differences(saved: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """Human-readable differences, skipping everything below a node that already differs."""
    diffs: list[str] = []
    blocked: list[str] = []
    ordered = list(saved) + [p for p in wanted if p not in saved]
    for path in ordered:
        if any(_below(path, b) for b in blocked):
            continue
        a, b = saved.get(path), wanted.get(path)
        if a == b:
            continue
        blocked.append(path)
        if a is None:
            diffs.append(f"{path}: only in the template ({b})")
        elif b is None:
            diffs.append(f"{path}: only in the checkpoint ({a})")
        else:
            diffs.append(
                f"{path}: checkpoint has {a.removeprefix('node ')}, "
                f"template has {b.removeprefix('node ')}"
            )
    return diffs


def _mismatch_hint(saved: Mapping[str, str], wanted: Mapping[str, str]) -> str:
    node_types = {
        p
        for p in saved
        if saved[p].startswith("node ")
        and p in wanted
        and wanted[p].startswith("node ")
        and saved[p] != wanted[p]
    }
    if node_types:
        return (
            "a node has another type (saved with a different optimizer or state type?); "
            "build `like` with the optimizer and model the run was saved with"
        )
    return (
        "leaves differ in presence, shape or dtype (saved with a different architecture, "
        "optimizer setting or dtype?); build `like` with the configuration the run was saved "
        "with"
    )


# ----------------------------------------------------------------------------- leaves <-> host


def _to_host(x: Any) -> tuple[np.ndarray, str | None]:
    """Host numpy copy of a leaf; key arrays become their raw data plus the PRNG impl name."""
    impl = None
    if hasattr(x, "dtype") and _is_key_dtype(x.dtype):
        impl = str(jax.random.key_impl(x))
        x = jax.random.key_data(x)
    return np.asarray(jax.device_get(x)), impl


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).hexdigest()


def _leaf_like(host: np.ndarray, impl: str | None, like: Any) -> Any:
    """Turn restored host data into a leaf of ``like``'s kind (and sharding, for jax arrays).

    An uncommitted ``like`` (placed by default, as a fresh ``init`` leaves it) gives an
    uncommitted leaf: pinning it to ``like.sharding`` would make a jitted step that reads it a
    different program from the fresh run's (sharding annotations), so a resumed run compiled
    its train step again and missed the compilation cache.
    """
    if isinstance(like, bool | int | float) and not isinstance(like, np.generic):
        return type(like)(host.item())
    if isinstance(like, np.generic):
        return host[()]
    if isinstance(like, np.ndarray):
        return host
    sharding = getattr(like, "sharding", None) if getattr(like, "committed", True) else None
    value = jax.device_put(host, sharding) if sharding is not None else jax.device_put(host)
    if impl is not None:
        value = jax.random.wrap_key_data(value, impl=impl)
    return value


def _dtype(name: str) -> np.dtype:
    return np.dtype(jax.numpy.dtype(name))


# ----------------------------------------------------------------------------- the checkpointer


def _orbax() -> Any:
    import orbax.checkpoint as ocp  # imported lazily: it pulls in tensorstore

    return ocp


def _is_closed_loop_callback(u: Any) -> bool:
    """``RuntimeError('Event loop is closed')`` raised by asyncio's ``call_soon_threadsafe``."""
    if u.exc_type is not RuntimeError or str(u.exc_value) != "Event loop is closed":
        return False
    frames = [f.name for f in _traceback_frames(u.exc_traceback)]
    return "call_soon_threadsafe" in frames


def _traceback_frames(tb: Any) -> list[Any]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    return frames


@contextlib.contextmanager
def _quiet_failed_reads() -> Iterator[None]:
    """Drops the stray callbacks of a failed orbax read; lets every other unraisable through.

    When one array read fails, orbax's ``asyncio.run`` closes its event loop while tensorstore
    still completes the sibling reads; each completion then calls ``call_soon_threadsafe`` on the
    closed loop from a tensorstore thread, and Python prints an "Exception ignored" traceback per
    array (under pytest's ``-W error`` they fail the test). They carry no information beyond the
    error we raise, so on failure we wait for them to settle (at most 0.5 s) and drop them.
    """
    previous = sys.unraisablehook
    lock, last = threading.Lock(), [time.monotonic()]

    def hook(u: Any) -> None:
        if _is_closed_loop_callback(u):
            with lock:
                last[0] = time.monotonic()
            return
        previous(u)

    sys.unraisablehook = hook
    try:
        yield
    except Exception:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            with lock:
                quiet_for = time.monotonic() - last[0]
            if quiet_for > 0.1:
                break
            time.sleep(0.02)
        raise
    finally:
        sys.unraisablehook = previous


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


class Checkpointer:
    """Saves and restores training pytrees under one directory, keeping the newest ``max_to_keep``.

    Args:
        directory: the run's checkpoint directory; created on the first save if missing.
        max_to_keep: how many of the newest steps to keep (``None`` keeps all).

    Raises:
        ValueError: ``max_to_keep`` is not a positive int or ``None``; ``directory`` exists and is
            not a directory.

    Example::

        with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
            ckpt.save(10, {"params": params, "opt_state": opt_state}, rng=key)
            r = ckpt.restore(like={"params": params, "opt_state": opt_state})
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int | None = 3) -> None:
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1
        ):
            raise ValueError(f"max_to_keep must be a positive int or None, got {max_to_keep!r}")
        self._directory = Path(directory).absolute()
        if self._directory.exists() and not self._directory.is_dir():
            raise ValueError(
                f"checkpoint directory {self._directory} exists and is not a directory"
            )
        self._max_to_keep = max_to_keep
        self._manager: Any = None
        self._writable = False

    @property
    def directory(self) -> Path:
        return self._directory

    def _mgr(self, write: bool) -> Any:
        """The orbax manager, opened lazily: read-only until the first save.

        For reading, it creates nothing and deletes nothing, so restoring (or an evaluation process
        watching a run) never touches the directory; opened for writing, it removes the stale
        temporary directory a killed save left behind.
        """
        if self._manager is not None and (self._writable or not write):
            return self._manager
        if not write and not self._directory.is_dir():
            return None
        self.close()
        ocp = _orbax()
        if write:
            options = ocp.CheckpointManagerOptions(
                enable_async_checkpointing=False,  # save() returns once the step is committed
                preservation_policy=ocp.checkpoint_managers.LatestN(n=self._max_to_keep),
                cleanup_tmp_directories=True,  # drop the partial step of a run killed mid-save
                create=True,
            )
        else:
            # Not orbax's read_only mode (it logs a warning per open): a manager that is never
            # asked to save creates, cleans and deletes nothing.
            options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
        try:
            self._manager = ocp.CheckpointManager(self._directory, options=options)
        except Exception as e:
            raise ValueError(
                f"cannot open checkpoint directory {self._directory}: {_first_line(e)}"
            ) from None
        self._writable = write
        return self._manager

    def all_steps(self) -> list[int]:
        """The committed steps, ascending (partial, killed-mid-save steps are not listed)."""
        mgr = self._mgr(write=False)
        if mgr is None:
            return []
        mgr.reload()  # another process (or a killed one) may have changed the directory
        return sorted(int(s) for s in mgr.all_steps())

    def latest_step(self) -> int | None:
        """The newest committed step, or ``None`` if there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- save

    def save(
        self,
        step: int,
        state: Any,
        *,
        rng: jax.Array | None = None,
        data: DataPosition | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        """Writes ``state`` (and the metadata) as checkpoint ``step``; atomic, synchronous.

        Args:
            step: a non-negative int, new to this directory (usually the number of steps taken).
            state: any pytree of arrays (jax, numpy, Python numbers); ``None`` subtrees allowed.
            rng: a typed key (``jax.random.key``) or raw key data (``jax.random.PRNGKey``).
            data: the input pipeline's position.
            extras: JSON-able values to keep with the step (optimizer name, hyper-parameters,
                architecture fingerprint); check them on restore with ``expect_extras``.

        Raises:
            ValueError: bad ``step``; ``step`` already saved; a non-array leaf; ``extras`` or
                ``data`` not JSON-able; the write failed (the previous steps are unaffected).
        """
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        step = int(step)
        layout = _layout(state)
        leaves: dict[str, np.ndarray] = {}
        records = []
        for i, (path, x) in enumerate(jax.tree_util.tree_flatten_with_path(state)[0]):
            host, impl = _to_host(x)
            name = f"leaf_{i:05d}"
            record = {
                "path": jax.tree_util.keystr(path) or "<root>",
                "name": name,
                "impl": impl,
                "shape": list(host.shape),
                "dtype": str(host.dtype),
                "digest": _digest(host),
            }
            if host.size:  # orbax refuses zero-size arrays; the manifest alone rebuilds them
                leaves[name] = host
            records.append(record)
        rng_record = None
        if rng is not None:
            host, impl = _to_host(rng)
            leaves[_RNG] = host
            rng_record = {
                "impl": impl,
                "shape": list(host.shape),
                "dtype": str(host.dtype),
                "digest": _digest(host),
            }
        meta = {
            "format": FORMAT,
            "step": step,
            "data": None
            if data is None
            else {k: int(v) for k, v in DataPosition(*data)._asdict().items()},
            "rng": rng_record,
            "extras": dict(extras or {}),
            "layout": layout,
            "leaves": records,
        }
        try:
            json.dumps(meta, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint extras must be JSON-serializable: {e}") from None
        mgr = self._mgr(write=True)
        if step in self.all_steps():
            raise ValueError(f"step {step} is already saved in {self._directory}")
        ocp = _orbax()
        items = {_META: ocp.args.JsonSave(meta)}
        if leaves:
            items[_ARRAYS] = ocp.args.StandardSave(leaves)
        try:
            mgr.save(step, args=ocp.args.Composite(**items), force=True)
            mgr.wait_until_finished()
        except Exception as e:
            raise ValueError(
                f"saving step {step} to {self._directory} failed: {_first_line(e)} "
                "(earlier steps are unaffected)"
            ) from None

    # ------------------------------------------------------------------------- restore

    def _read_meta(self, step: int) -> dict[str, Any]:
        ocp = _orbax()
        where = self._directory / str(step)
        try:
            with _quiet_failed_reads():
                meta = self._manager.restore(
                    step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
                )[_META]
        except Exception as e:
            raise ValueError(
                f"checkpoint {where} is unreadable ({_first_line(e)}); it is corrupt or not a "
                f"jaxopt_lab checkpoint — restore another step ({self._other_steps(step)}) "
                "or start over"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(
                f"checkpoint {where} is not a jaxopt_lab checkpoint (no {FORMAT!r} manifest)"
            )
        return meta

    def _other_steps(self, step: int) -> list[int]:
        return [s for s in self.all_steps() if s != step]

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON manifest of ``step`` (default: the latest): step, data, rng, extras, layout."""
        return self._read_meta(self._resolve(step))

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise ValueError(f"no checkpoint found in {self._directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise ValueError(
                f"no checkpoint for step {step} in {self._directory}; saved steps: {steps}"
            )
        return step

    def restore(
        self,
        like: Any,
        *,
        step: int | None = None,
        expect_extras: Mapping[str, Any] | None = None,
    ) -> Restored:
        """Reads checkpoint ``step`` (default: the latest) into the structure of ``like``.

        Args:
            like: a template pytree with the saved structure: e.g. a freshly initialised train
                state (``opt.init(params)``), or the same tree of ``jax.ShapeDtypeStruct``.
                Restored leaves take each template leaf's kind (jax array on its sharding, numpy
                array, Python number); dtypes and shapes must match exactly (nothing is cast).
            step: which step; ``None`` for the latest.
            expect_extras: values that ``extras`` must hold (e.g. ``{"optimizer": "adamw"}``);
                compared after a JSON round trip.

        Raises:
            ValueError: no such step; the step is unreadable or corrupt; ``like`` differs from
                the saved tree (each difference listed); ``expect_extras`` differs.
        """
        step = self._resolve(step)
        where = self._directory / str(step)
        meta = self._read_meta(step)
        if expect_extras:
            expected = json.loads(json.dumps(dict(expect_extras)))
            saved_extras = meta.get("extras", {})
            bad = [
                f"{k}: checkpoint has {saved_extras.get(k, '<missing>')!r}, expected {v!r}"
                for k, v in expected.items()
                if saved_extras.get(k, "<missing>") != v
            ]
            if bad:
                raise ValueError(
                    f"checkpoint {where} was saved with other settings: " + "; ".join(bad)
                )
        wanted = _layout(like)
        saved = meta["layout"]
        diffs = _describe_differences(saved, wanted)
        if diffs:
            shown = diffs[:_MAX_LISTED] + (
                [f"... and {len(diffs) - _MAX_LISTED} more"] if len(diffs) > _MAX_LISTED else []
            )
            raise ValueError(
                f"checkpoint {where} does not match the template `like`: "
                f"{_mismatch_hint(saved, wanted)}. Differences:\n  " + "\n  ".join(shown)
            )
        host = self._read_arrays(step, meta)
        like_leaves, treedef = jax.tree_util.tree_flatten(like)
        leaves = [
            _leaf_like(host[r["name"]], r["impl"], x)
            for r, x in zip(meta["leaves"], like_leaves, strict=True)
        ]
        rng = None
        if meta["rng"] is not None:
            rng = jax.device_put(host[_RNG])
            if meta["rng"]["impl"] is not None:
                rng = jax.random.wrap_key_data(rng, impl=meta["rng"]["impl"])
        data = None if meta["data"] is None else DataPosition(**meta["data"])
        return Restored(
            step, jax.tree_util.tree_unflatten(treedef, leaves), rng, data, meta.get("extras", {})
        )

    def _read_arrays(self, step: int, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Every saved array as host numpy, checked against the manifest's shape/dtype/digest."""
        ocp = _orbax()
        where = self._directory / str(step)
        records = {r["name"]: r for r in meta["leaves"]}
        if meta["rng"] is not None:
            records[_RNG] = {"path": "rng", **meta["rng"]}
        stored = {n: r for n, r in records.items() if math.prod(r["shape"])}
        host: dict[str, np.ndarray] = {}
        if stored:
            abstract = {n: np.empty(r["shape"], _dtype(r["dtype"])) for n, r in stored.items()}
            try:
                with _quiet_failed_reads():
                    got = self._manager.restore(
                        step,
                        args=ocp.args.Composite(**{_ARRAYS: ocp.args.StandardRestore(abstract)}),
                    )[_ARRAYS]
                host = {n: np.asarray(got[n]) for n in stored}
            except Exception as e:
                raise ValueError(
                    f"checkpoint {where} is unreadable ({_first_line(e)}); its array data is "
                    f"missing or corrupt — restore another step ({self._other_steps(step)}) "
                    "or start over"
                ) from None
        for n, r in records.items():
            if n not in host:
                host[n] = np.zeros(r["shape"], _dtype(r["dtype"]))
            a = host[n]
            if (
                list(a.shape) != r["shape"]
                or str(a.dtype) != r["dtype"]
                or _digest(a) != r["digest"]
            ):
                raise ValueError(
                    f"checkpoint {where} is corrupt: the data of {r['path']} does not match its "
                    "recorded shape, dtype or checksum — restore another step "
                    f"({self._other_steps(step)}) or start over"
                )
        return host
