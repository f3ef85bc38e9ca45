#!/usr/bin/env python
"""One optimizer step, side by side: jaxopt_lab, optax and torch.optim, against memory bandwidth.

    python experiments/bench_update.py                 # full run (~15 min on 2 cores)
    python experiments/bench_update.py --quick         # smoke run (~1 min)
    python experiments/bench_update.py --sizes 10m,100m --optimizers adam --rounds 10
    python experiments/bench_update.py --no-rss --out bench_update_rest \
        --optimizers nadam,radam,adamax,adadelta,asgd,rprop,adafactor,muon,sparse_adam \
        --sizes cnn,1000x1k,1m,10m --skip adafactor@1000x1k  # bench_update_rest.md: 12 min
        # on 2 idle cores, 25 min at load 7 (adafactor@1000x1k: minutes of compile)
    python experiments/bench_update.py --sizes cnn,mixed --impls jol,jol_xla,jol_kernel,optax \
        --optimizers momentum,adam,amsgrad,radam,nadam,adamax,adadelta,rprop --no-rss \
        --out bench_update_join  # whether small leaves should join the kernel call (JOIN_MAX)
    python experiments/bench_update.py --optimizers rest --sizes 1m --no-rss --out x  # + RMSprop,
        # Adagrad: every registry algorithm but SGD, Adam, AdamW (the default, "core") and L-BFGS

For each parameter set (``--sizes``) and optimizer (``--optimizers``) every implementation runs
one step per round, round-robin (see ``_bench_common.interleaved``); medians after warm-up, each
step blocking on its result. ``--optimizers`` takes names and groups: ``core`` (the default:
``sgd``, ``momentum``, ``adam``, ``adamw``, ``amsgrad``, the configurations with one-pass
kernels and torch fused kernels), ``rest`` (every other algorithm of ``jaxopt_lab.registry``
but L-BFGS, which needs a closure: ``experiments/bench_lbfgs.py``) and ``all``. A ``rest``
optimizer runs with torch's defaults (the factory's); its torch class and optax counterpart are
the registry row's (``torch_class``, ``optax``), optax given the torch hyper-parameters it has a
name for (``lr`` -> ``learning_rate``, ``betas`` -> ``b1, b2``, ...; see ``OPTAX_NAMES``). Muon
steps 2-D params only: each leaf is viewed as a matrix (``as_matrix``), and sizes with a matrix
over ``MUON_MAX_ELEMENTS`` elements or over ``MUON_MAX_LEAVES`` leaves are skipped (a
Newton-Schulz step on a 10M-element matrix takes seconds). SparseAdam steps embedding tables
(the same matrices) with a ``BCOO`` row gradient touching ``SPARSE_ROWS`` of the rows (torch: an
uncoalesced ``sparse_coo_tensor``, as ``nn.Embedding(sparse=True)`` gives). Implementations:

* ``jol``: ``jax.jit(opt.update, donate_argnums=(0, 2))`` as a user gets it: float32 leaves of
  at least ``jaxopt_lab.optim.native.MIN_SIZE`` elements (per kernel) take the one-pass C++ kernel
  (Adam, AdamW, AMSGrad, momentum SGD, RAdam, NAdam, Adamax, Adadelta, Rprop), the rest XLA's
  fused loops;
* ``jol_xla`` / ``jol_kernel``: the same with ``JAXOPT_LAB_NATIVE=off`` (XLA only) /
  ``=always`` (the kernel for every float32 leaf); ``--sizes 4k,16k,64k,256k --impls
  jol_xla,jol_kernel`` measures where the kernel starts to pay (``MIN_SIZE``);
* ``jol_chunked`` (not run by default; superseded by the kernel on CPU): the XLA rule over
  cache-sized slices (``jaxopt_lab.optim.flat.chunked`` with its ``COMPILER_OPTIONS``);
* ``jol_flat``: the state in one buffer per dtype (``jaxopt_lab.optim.flat.flat``), multi-leaf sets
  only;
* ``optax``: ``optax.sgd/adam/adamw/adam(amsgrad)`` or the registry's counterpart (none for
  ASGD and SparseAdam) + ``apply_updates``, jitted and donated;
* ``torch_loop`` / ``torch_foreach`` / ``torch_fused``: ``foreach=False`` / ``foreach=True`` /
  ``fused=True`` (CPU fused kernels exist for SGD, Adam, AdamW and Adagrad; Muon and SparseAdam
  have neither foreach nor fused: ``torch_loop`` is their only path).

Achieved bandwidth counts the bytes an ideal single pass moves per float32 parameter (SGD 12:
read p, g, write p; momentum 20; Adam/AdamW 28; AMSGrad 36; the others 4 (3 + 2k) for k state
elements per param, times the touched fraction for SparseAdam; Muon is compute-bound) and is
compared with the machine's bandwidth measured in the same run (best of a numpy copy and a
donated in-place jax ``a*x+b``). The load average (``os.getloadavg``) is recorded at the start
and the end of the run, and each row keeps the seconds its step took to set up (``setup_s``:
for JAX init, trace and compile; the table's ``jol compile s`` for the non-core rows).
``--skip opt@size,...`` leaves configurations out (e.g. one whose compile takes minutes).
``--rss`` adds the peak resident memory of the step, one subprocess per configuration.
Writes ``experiments/results/{--out}.{json,md}`` (default ``bench_update``) and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common

from jaxopt_lab import registry

SIZES: dict[str, list[tuple[int, ...]]] = {
    # The tutorial CNN (HWIO conv kernels, (in, out) dense kernels): 145,578 params in 10 leaves.
    "cnn": [
        (5, 5, 3, 32),
        (32,),
        (5, 5, 32, 32),
        (32,),
        (5, 5, 32, 64),
        (64,),
        (1024, 64),
        (64,),
        (64, 10),
        (10,),
    ],
    "1000x1k": [(1000,)] * 1000,
    # One large leaf beside many small ones (a model's weights beside its biases and norms).
    "mixed": [(1_000_000,)] + [(1000,)] * 200,
    "256": [(256,)],
    "1k": [(1024,)],
    "4k": [(4096,)],
    "16k": [(16384,)],
    "64k": [(65536,)],
    "256k": [(262144,)],
    "1m": [(1_000_000,)],
    "10m": [(10_000_000,)],
    "100m": [(100_000_000,)],
}
BYTES_PER_PARAM = {"sgd": 12, "momentum": 20, "adam": 28, "adamw": 28, "amsgrad": 36}
CORE = tuple(BYTES_PER_PARAM)  # configurations of SGD, Adam, AdamW (kernels, torch fused)
# Every other per-gradient algorithm of the registry (L-BFGS needs a closure: bench_lbfgs.py).
REST = tuple(n for n in registry.names() if n not in CORE and n != "lbfgs")
OPTIMIZERS = (*CORE, *REST)
GROUPS = {"core": CORE, "rest": REST, "all": OPTIMIZERS}
# torch hyper-parameter -> optax argument name(s), passed where the optax function has them.
OPTAX_NAMES: dict[str, tuple[str, ...]] = {
    "lr": ("learning_rate",),
    "betas": ("b1", "b2"),
    "eps": ("eps",),
    "rho": ("rho",),
    "alpha": ("decay",),
    "weight_decay": ("weight_decay",),
    "initial_accumulator_value": ("initial_accumulator_value",),
    "etas": ("eta_minus", "eta_plus"),
    "step_sizes": ("min_step_size", "max_step_size"),
    "momentum": ("beta",),
    "nesterov": ("nesterov",),
    "ns_coefficients": ("ns_coeffs",),
    "ns_steps": ("ns_steps",),
}
MATRIX_ONLY = {"muon", "sparse_adam"}  # 2-D params (Muon) / embedding tables (SparseAdam)
MUON_MAX_ELEMENTS = 1_000_000
MUON_MAX_LEAVES = 100
SPARSE_ROWS = 0.1  # fraction of an embedding table's rows a SparseAdam gradient touches
_SMALL = {"256": 200, "1k": 200, "4k": 200, "16k": 200, "64k": 100, "256k": 60}
ROUNDS = {"cnn": 60, "1000x1k": 30, "mixed": 30, "1m": 30, "10m": 12, "100m": 3, **_SMALL}
BLOCK = {
    "cnn": 5,
    "1000x1k": 3,
    "mixed": 3,
    "1m": 5,
    "10m": 2,
    "100m": 1,
    **dict.fromkeys(_SMALL, 10),
}
BUDGET_S = {
    "cnn": 10,
    "1000x1k": 15,
    "mixed": 12,
    "1m": 10,
    "10m": 25,
    "100m": 60,
    **dict.fromkeys(_SMALL, 8),
}
IMPLS = ("jol", "jol_xla", "jol_flat", "optax", "torch_loop", "torch_foreach", "torch_fused")
ALL_IMPLS = (*IMPLS, "jol_kernel", "jol_chunked", "jol_nodonate")
NATIVE_MODE = {"jol_xla": "off", "jol_kernel": "always"}  # JAXOPT_LAB_NATIVE per impl
TORCH_FUSED = {"sgd", "momentum", "adam", "adamw", "amsgrad"}


def n_params(size: str) -> int:
    return sum(int(np.prod(s)) for s in SIZES[size])


# --------------------------------------------------------------------------------------------
# Implementations: each returns a zero-argument ``step()`` that takes one step and blocks.


def _jol_opt(name: str) -> Any:
    import jaxopt_lab as jol

    if name not in CORE:
        return registry.get(name).factory()  # torch's defaults
    return {
        "sgd": lambda: jol.sgd(lr=0.01),
        "momentum": lambda: jol.sgd(lr=0.01, momentum=0.9),
        "adam": lambda: jol.adam(lr=1e-3),
        "adamw": lambda: jol.adamw(lr=1e-3),
        "amsgrad": lambda: jol.adam(lr=1e-3, amsgrad=True),
    }[name]()


def optax_factory(name: str) -> Callable[..., Any] | None:
    """The registry's optax counterpart of ``name`` (``"optax.contrib.muon"``), or None."""
    import importlib

    dotted = registry.get(name).optax
    if dotted is None:
        return None
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def optax_kwargs(name: str) -> dict[str, Any]:
    """torch's default hyper-parameters of ``name`` under the optax counterpart's names."""
    import inspect

    accepted = inspect.signature(optax_factory(name)).parameters
    out = {}
    for key, value in registry.get(name).defaults().items():
        names = OPTAX_NAMES.get(key, ())
        values = value if len(names) > 1 else (value,)
        for optax_name, v in zip(names, values, strict=False):
            numbers = v if isinstance(v, tuple) else (v,)  # not adafactor's eps (None, 1e-3)
            if optax_name in accepted and all(isinstance(x, (int, float)) for x in numbers):
                out[optax_name] = v
    return out


def _optax_opt(name: str) -> Any:
    import optax

    if name not in CORE:
        return optax_factory(name)(**optax_kwargs(name))
    return {
        "sgd": lambda: optax.sgd(0.01),
        "momentum": lambda: optax.sgd(0.01, momentum=0.9),
        "adam": lambda: optax.adam(1e-3),
        "adamw": lambda: optax.adamw(1e-3, weight_decay=1e-2),
        "amsgrad": lambda: optax.amsgrad(1e-3),
    }[name]()


def _torch_class(name: str) -> Any:
    import torch

    return getattr(torch.optim, registry.get(name).torch_class)


def _torch_flags(name: str) -> set[str]:
    """Which of ``foreach`` / ``fused`` the torch class of ``name`` takes."""
    import inspect

    if name in CORE:
        return {"foreach", "fused"}
    return {"foreach", "fused"} & set(inspect.signature(_torch_class(name)).parameters)


def _torch_opt(name: str, params: list, how: str) -> Any:
    import torch

    flags = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    kw = flags[how]
    if name not in CORE:  # torch's defaults; "loop" without a foreach flag is the only path
        return _torch_class(name)(params, **(kw if _torch_flags(name) else {}))
    if name in ("sgd", "momentum"):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9 if name == "momentum" else 0, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, **kw)
    return torch.optim.Adam(params, lr=1e-3, amsgrad=name == "amsgrad", **kw)


@contextlib.contextmanager
def native_mode(mode: str) -> Iterator[None]:
    """``JAXOPT_LAB_NATIVE=mode`` for the block, then the previous value."""
    old = os.environ.get("JAXOPT_LAB_NATIVE")
    os.environ["JAXOPT_LAB_NATIVE"] = mode
    try:
        yield
    finally:
        if old is None:
            del os.environ["JAXOPT_LAB_NATIVE"]
        else:
            os.environ["JAXOPT_LAB_NATIVE"] = old


def make_step(
    impl: str, opt: str, size: str, p0: list[np.ndarray], grads: Any
) -> Callable[[], Any]:
    """``impl``'s one-step closure over fresh params/state; ``grads`` shared (jax or torch)."""
    if impl.startswith("torch"):
        import torch

        params = []
        for x, g in zip(p0, grads, strict=True):
            p = torch.nn.Parameter(torch.from_numpy(x.copy()))
            p.grad = g
            params.append(p)
        o = _torch_opt(opt, params, impl.split("_")[1])
        return o.step

    import jax
    import jax.numpy as jnp

    params = [jnp.asarray(x) for x in p0]
    if impl == "optax":
        import optax

        tx = _optax_opt(opt)

        def update(p, g, s):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        init, jit_kw = tx.init, {}
    else:
        from jaxopt_lab.optim import flat as _flat

        o = _jol_opt(opt)
        jit_kw = {}
        if impl == "jol_chunked":
            o = _flat.chunked(o)
            jit_kw = {"compiler_options": _flat.COMPILER_OPTIONS}
        elif impl == "jol_flat":
            o = _flat.flat(o)
        elif impl == "jol_nodonate":
            box = {"p": params, "s": o.init(params)}
            fn = jax.jit(o.update)

            def step_nd() -> Any:
                box["p"], box["s"] = fn(box["p"], grads, box["s"])
                return jax.block_until_ready(box["p"])

            return step_nd
        init, update = o.init, o.update
    box = {"p": params, "s": jax.block_until_ready(init(params))}
    # Compiled now, under this impl's JAXOPT_LAB_NATIVE (read when the update is traced).
    with native_mode(NATIVE_MODE.get(impl, "auto")):
        fn = jax.jit(update, donate_argnums=(0, 2), **jit_kw)
        fn = fn.lower(box["p"], grads, box["s"]).compile()

    def step() -> Any:
        box["p"], box["s"] = fn(box["p"], grads, box["s"])
        return jax.block_until_ready(box["p"])

    return step


def applicable(impl: str, opt: str, size: str) -> bool:
    if opt == "muon" and (
        len(SIZES[size]) > MUON_MAX_LEAVES
        or max(int(np.prod(s)) for s in SIZES[size]) > MUON_MAX_ELEMENTS
    ):
        return False
    if opt not in CORE:
        row = registry.get(opt)
        if impl in ("jol_xla", "jol_kernel"):  # == jol without one-pass kernels
            return bool(row.kernels)
        if impl in ("jol_chunked", "jol_flat"):  # elementwise rules with params-shaped state
            return _flat_ok(opt) and (impl == "jol_chunked" or len(SIZES[size]) > 1)
        if impl == "optax":
            return row.optax is not None
        if impl in ("torch_foreach", "torch_fused"):
            return impl.split("_")[1] in _torch_flags(opt)
    if impl == "jol_chunked":
        from jaxopt_lab.optim.flat import DEFAULT_CHUNK

        return any(int(np.prod(s)) >= 2 * DEFAULT_CHUNK for s in SIZES[size])
    if impl == "jol_flat":
        return len(SIZES[size]) > 1
    if impl == "torch_fused":
        return opt in TORCH_FUSED or "fused" in _torch_flags(opt)
    return True


def _flat_ok(opt: str) -> bool:
    """Whether ``flat``/``chunked`` apply: an elementwise rule whose state fields are all
    ``None`` or shaped like the params (not NAdam's vector or ASGD's per-leaf scalars)."""
    import jax
    import jax.numpy as jnp

    if opt in MATRIX_ONLY or opt == "adafactor":  # row/column statistics, matrix iterations
        return False
    params = [jnp.zeros((3,)), jnp.zeros((2, 2))]
    state = jax.eval_shape(_jol_opt(opt).init, params)
    shapes = [(3,), (2, 2)]
    return all(f is None or [x.shape for x in jax.tree.leaves(f)] == shapes for f in state[1:])


def as_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """A 2-D view of ``shape``: ``(prod(shape[:-1]), shape[-1])``; a vector of ``n`` as
    ``(n // c, c)``, ``c`` its largest divisor up to ``sqrt(n)`` (1m: 1000 x 1000)."""
    if len(shape) >= 2:
        return int(np.prod(shape[:-1])), shape[-1]
    n = shape[0]
    c = max(d for d in range(1, int(np.sqrt(n)) + 1) if n % d == 0)
    return n // c, c


def make_data(size: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal(s, dtype=np.float32) for s in SIZES[size]]
    g0 = [(rng.standard_normal(s, dtype=np.float32) * 1e-3) for s in SIZES[size]]
    return p0, g0


def layout(opt: str) -> str:
    return {"muon": "matrix", "sparse_adam": "sparse"}.get(opt, "dense")


def make_inputs(opt: str, size: str) -> tuple[list[np.ndarray], Any, Any, float]:
    """``(p0, jax grads, torch grads, touched fraction)`` in ``opt``'s layout (``layout``)."""
    import jax.numpy as jnp
    import torch

    p0, g0 = make_data(size)
    kind = layout(opt)
    if kind != "dense":
        p0 = [x.reshape(as_matrix(x.shape)) for x in p0]
        g0 = [g.reshape(as_matrix(g.shape)) for g in g0]
    if kind != "sparse":
        return p0, [jnp.asarray(g) for g in g0], [torch.from_numpy(g) for g in g0], 1.0
    from jax.experimental import sparse

    rng = np.random.default_rng(1)
    jgrads, tgrads, touched = [], [], 0
    for g in g0:
        rows = np.sort(rng.choice(g.shape[0], max(1, round(SPARSE_ROWS * g.shape[0])), False))
        values = np.ascontiguousarray(g[rows])
        touched += values.size
        jgrads.append(sparse.BCOO((jnp.asarray(values), jnp.asarray(rows[:, None])), shape=g.shape))
        index = torch.from_numpy(rows[None, :].astype(np.int64))
        tgrads.append(torch.sparse_coo_tensor(index, torch.from_numpy(values), g.shape))
    return p0, jgrads, tgrads, touched / sum(g.size for g in g0)


def bytes_per_param(opt: str, p0: list[np.ndarray], touched: float = 1.0) -> float:
    """Bytes an ideal single pass moves per param: ``BYTES_PER_PARAM``, else 4 (3 + 2k) for ``k``
    state elements per param (read p, g and the state, write p and the state), times the
    fraction of entries a sparse gradient touches."""
    if opt in CORE:
        return BYTES_PER_PARAM[opt]
    import jax

    state = jax.eval_shape(_jol_opt(opt).init, [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in p0])
    n = sum(x.size for x in p0)
    k = sum(x.size for f in state[1:] for x in jax.tree.leaves(f)) / n
    return 4 * (3 + 2 * k) * touched


# --------------------------------------------------------------------------------------------
# Memory bandwidth, measured in the same process.


def bandwidth(n: int = 50_000_000, repeats: int = 8) -> dict[str, float]:
    """GB/s (1e9 bytes) of a numpy copy (2 x 4n bytes) and a donated jax ``2*x+1`` (2 x 4n)."""
    import jax
    import jax.numpy as jnp

    a = np.ones(n, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    numpy_copy = 8 * n / best / 1e9
    del a, b
    f = jax.jit(lambda x: 2 * x + 1, donate_argnums=0)
    x = jax.block_until_ready(f(jnp.ones(n, jnp.float32)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = jax.block_until_ready(f(x))
        best = min(best, time.perf_counter() - t0)
    del x
    return {"numpy_copy_gbs": numpy_copy, "jax_inplace_axpb_gbs": 8 * n / best / 1e9}


# --------------------------------------------------------------------------------------------
# Peak RSS of the step (one subprocess per configuration).


def rss_child(size: str, opt: str, impl: str, steps: int = 3) -> dict[str, Any]:
    """Peak RSS above the live arrays while taking ``steps`` steps (after a warm-up step)."""
    p0, jgrads, tgrads, _ = make_inputs(opt, size)
    step = make_step(impl, opt, size, p0, tgrads if impl.startswith("torch") else jgrads)
    del p0, jgrads, tgrads
    step()  # compiles and (torch) creates the state
    gc.collect()
    common.reset_peak_rss()
    before = common.vm_kib("VmRSS")
    for _ in range(steps):
        step()
    peak = common.vm_kib("VmHWM")
    n = n_params(size)
    extra = (peak - before) * 1024
    return {
        "size": size,
        "optimizer": opt,
        "impl": impl,
        "rss_before_mib": before / 1024,
        "peak_mib": peak / 1024,
        "extra_peak_mib": extra / 2**20,
        "extra_in_param_copies": extra / (4 * n),
    }


def rss_run(size: str, opt: str, impl: str) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--_rss-child", f"{size},{opt},{impl}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        print(f"rss {size} {opt} {impl} failed: {out.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import torch

    info = common.machine()
    info["torch_threads"] = torch.get_num_threads()
    if info["kernels"] != "on":  # every jol figure below is then XLA's loops
        print(f"WARNING: one-pass kernels {info['kernels']}", file=sys.stderr, flush=True)
    bw0 = bandwidth()
    print(f"bandwidth at start: {bw0}", flush=True)
    rows = []
    for size in args.sizes:
        n = n_params(size)
        inputs: dict[str, Any] = {}  # per layout
        for opt in args.optimizers:
            impls = [i for i in args.impls if applicable(i, opt, size)]
            if not impls or f"{opt}@{size}" in args.skip:
                continue
            if layout(opt) not in inputs:
                inputs[layout(opt)] = make_inputs(opt, size)
            p0, jgrads, tgrads, touched = inputs[layout(opt)]
            ideal_bytes = bytes_per_param(opt, p0, touched)
            steps, setup = {}, {}
            for impl in impls:
                grads = tgrads if impl.startswith("torch") else jgrads
                t0 = time.perf_counter()
                steps[impl] = make_step(impl, opt, size, p0, grads)
                setup[impl] = time.perf_counter() - t0  # JAX: init, trace and compile
            rounds = args.rounds or ROUNDS[size]
            big = size == "100m"  # seconds per torch step: no settling step, one warm-up
            stats = common.interleaved(
                steps,
                rounds,
                BLOCK[size],
                warmup=1 if big else 2,
                settle=0 if big else 1,
                budget_s=args.budget or BUDGET_S[size],
            )
            del steps
            gc.collect()
            for impl, st in stats.items():
                gbs = ideal_bytes * n / st["median_s"] / 1e9
                rows.append(
                    {
                        "size": size,
                        "n_params": n,
                        "n_leaves": len(SIZES[size]),
                        "optimizer": opt,
                        "impl": impl,
                        **st,
                        "gbs": gbs,
                        "bytes_per_param": ideal_bytes,
                        "setup_s": setup[impl],
                    }
                )
            line = "  ".join(f"{k} {v['median_s'] * 1e3:.3f}" for k, v in stats.items())
            print(f"{size:8s} {opt:11s} ms: {line}", flush=True)
        del inputs
        gc.collect()
    info["load_avg_at_end"] = os.getloadavg()
    bw1 = bandwidth()
    print(f"bandwidth at end: {bw1}", flush=True)
    bw = max(*bw0.values(), *bw1.values())
    for r in rows:
        r["fraction_of_bandwidth"] = r["gbs"] / bw
    rss = []
    if args.rss:
        for size in args.rss_sizes:
            for opt in args.rss_optimizers:
                for impl in args.rss_impls:
                    if applicable(impl, opt, size):
                        r = rss_run(size, opt, impl)
                        if r:
                            rss.append(r)
                            print(
                                f"rss {size} {opt} {impl}: extra peak "
                                f"{r['extra_peak_mib']:.1f} MiB = "
                                f"{r['extra_in_param_copies']:.2f} param copies",
                                flush=True,
                            )
    return {
        "machine": info,
        "bandwidth": {"start": bw0, "end": bw1, "used_gbs": bw},
        "rows": rows,
        "ratios": ratios(rows),
        "rss": rss,
        "jax_devices": str(jax.devices()),
    }


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, optimizer): jaxopt_lab (plain and best variant) vs torch fused and optax.

    ``*_min`` ratios use the fastest run of each instead of the median: under load from other
    processes they approximate the uncontended machine. ``*_ci``: the median of the per-round
    ratios with its 95% confidence interval and verdict (``_bench_common.paired_ratio``), the
    figure that says whether a cell is slower, faster, or a tie within this run's noise.
    """
    out = []
    order = list(SIZES), list(OPTIMIZERS)
    keys = sorted(
        {(r["size"], r["optimizer"]) for r in rows},
        key=lambda k: (order[0].index(k[0]), order[1].index(k[1])),
    )
    for size, opt in keys:
        sel = [r for r in rows if r["size"] == size and r["optimizer"] == opt]
        entry: dict[str, Any] = {"size": size, "optimizer": opt}
        for stat, suffix in (("median_s", ""), ("min_s", "_min")):
            t = {r["impl"]: r[stat] for r in sel}
            jol = {k: v for k, v in t.items() if k.startswith("jol")}
            best = min(jol, key=jol.get) if jol else None
            entry["best_jol" + suffix] = best
            for ref in ("torch_fused", "optax", "torch_foreach", "torch_loop"):
                if ref in t and "jol" in t:
                    entry[f"jol/{ref}{suffix}"] = t["jol"] / t[ref]
                if ref in t and best:
                    entry[f"best_jol/{ref}{suffix}"] = t[best] / t[ref]
        rounds = {r["impl"]: r.get("round_s") for r in sel}
        for ref in ("torch_fused", "optax"):
            for label, impl in (("jol", "jol"), ("best_jol", entry["best_jol"])):
                if rounds.get(ref) and rounds.get(impl):
                    ci = common.paired_ratio(rounds[impl], rounds[ref])
                    if ci:
                        entry[f"{label}/{ref}_ci"] = ci
        out.append(entry)
    return out


RATIO_COLUMNS = (
    ("jol/fused", "jol/torch_fused"),
    ("best/fused", "best_jol/torch_fused"),
    ("jol/loop", "jol/torch_loop"),
    ("jol/foreach", "jol/torch_foreach"),
    ("jol/optax", "jol/optax"),
    ("best/optax", "best_jol/optax"),
    ("best/fused (min)", "best_jol/torch_fused_min"),
    ("jol/optax (min)", "jol/optax_min"),
    ("best/optax (min)", "best_jol/optax_min"),
    ("best/fused 95% CI", "best_jol/torch_fused_ci"),
    ("best/optax 95% CI", "best_jol/optax_ci"),
)
CORE_RATIOS = {  # the columns of a core-only table
    "jol/torch_fused",
    "best_jol/torch_fused",
    "best_jol/optax",
    "best_jol/torch_fused_min",
    "best_jol/optax_min",
    "best_jol/torch_fused_ci",
    "best_jol/optax_ci",
}


def ci_cell(ci: dict[str, Any] | None) -> str | None:
    """A paired ratio's interval as a table cell: ``0.81–0.95`` (a tie is marked ``~``)."""
    if ci is None:
        return None
    mark = " ~" if ci["verdict"] == "tie" else ""
    return f"{ci['lo']:.2f}–{ci['hi']:.2f}{mark}"


def render(res: dict[str, Any]) -> str:
    bw = res["bandwidth"]["used_gbs"]
    impls = [i for i in ALL_IMPLS if any(r["impl"] == i for r in res["rows"])]
    # the ratio columns some row has: torch fused for the core, loop/foreach/optax for the rest
    ratio_cols = [
        (label, key)
        for label, key in RATIO_COLUMNS
        if any(e.get(key) is not None for e in res["ratios"])
        and (key in CORE_RATIOS or any(e["optimizer"] not in CORE for e in res["ratios"]))
    ]
    # seconds to init, trace and compile the plain jol step (non-core rows only)
    compile_col = any("setup_s" in r and r["optimizer"] not in CORE for r in res["rows"])
    header = [
        "params",
        "opt",
        *[f"{i} ms" for i in impls],
        "best jol",
        "GB/s",
        "% bw",
        *[label for label, _ in ratio_cols],
        *(["jol compile s"] if compile_col else []),
    ]
    table = []
    for entry in res["ratios"]:
        size, opt = entry["size"], entry["optimizer"]
        rs = {r["impl"]: r for r in res["rows"] if r["size"] == size and r["optimizer"] == opt}
        best = entry["best_jol"]
        table.append(
            [
                size,
                opt,
                *[rs[i]["median_s"] * 1e3 if i in rs else None for i in impls],
                best,
                rs[best]["gbs"],
                100 * rs[best]["fraction_of_bandwidth"],
                *[
                    ci_cell(entry.get(key)) if key.endswith("_ci") else entry.get(key)
                    for _, key in ratio_cols
                ],
                *([rs["jol"].get("setup_s") if "jol" in rs else None] if compile_col else []),
            ]
        )
    b = res["bandwidth"]
    others = ""
    if any(e["optimizer"] not in CORE for e in res["ratios"]):
        others = ", the others 4 (3 + 2k) for k state elements per param"
        if any(e["optimizer"] == "sparse_adam" for e in res["ratios"]):
            others += f" (SparseAdam: times the {SPARSE_ROWS:.0%} of rows touched)"
        if any(e["optimizer"] == "muon" for e in res["ratios"]):
            others += " (Muon is compute-bound: its bandwidth means little)"
    load_end = ""
    if "load_avg_at_end" in res["machine"]:
        load = ", ".join(f"{x:.1f}" for x in res["machine"]["load_avg_at_end"])
        load_end = f" Load average at the end of the run: {load}."
    md = [
        "## bench_update: one optimizer step (median ms; float32)",
        "",
        common.machine_markdown(res["machine"]),
        f"Measured bandwidth (best of start/end, numpy copy and in-place jax a*x+b): "
        f"**{bw:.1f} GB/s** (start {b['start']['numpy_copy_gbs']:.1f}/"
        f"{b['start']['jax_inplace_axpb_gbs']:.1f}, end {b['end']['numpy_copy_gbs']:.1f}/"
        f"{b['end']['jax_inplace_axpb_gbs']:.1f}). GB/s and % bw are the best jaxopt_lab "
        f"variant's, counting SGD 12, momentum 20, Adam/AdamW 28, AMSGrad 36 bytes/param"
        f"{others}. Ratios < 1: jaxopt_lab faster; `best` is the fastest jaxopt_lab variant; "
        f"`(min)` ratios compare fastest runs (the uncontended machine), the others medians; "
        f"`95% CI`: the interval of the median of per-round paired ratios (each round times every "
        f"implementation back to back), `~` where it contains 1 (a tie within this run's noise)."
        f"{load_end}",
        "",
        common.markdown_table(header, table),
    ]
    if res["rss"]:
        md += [
            "",
            "Peak RSS of the step above the live params, grads and state "
            "(`extra`, in MiB and in copies of the params):",
            "",
            common.markdown_table(
                ["params", "opt", "impl", "extra MiB", "param copies"],
                [
                    [
                        r["size"],
                        r["optimizer"],
                        r["impl"],
                        r["extra_peak_mib"],
                        r["extra_in_param_copies"],
                    ]
                    for r in res["rss"]
                ],
            ),
        ]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="cnn,1000x1k,1m,10m,100m")
    ap.add_argument(
        "--optimizers",
        default="core",
        help=f"names or groups ({', '.join(GROUPS)}); known: {', '.join(OPTIMIZERS)}",
    )
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument(
        "--skip", default="", help="configurations not to run, e.g. nadam@1000x1k,adafactor@cnn"
    )
    ap.add_argument("--rounds", type=int, default=0, help="rounds per config (0: per-size default)")
    ap.add_argument("--budget", type=float, default=0, help="seconds per config (0: default)")
    ap.add_argument("--rss", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--rss-sizes", default="10m,100m")
    ap.add_argument("--rss-optimizers", default="adam")
    ap.add_argument("--rss-impls", default="jol,jol_xla,jol_nodonate,optax,torch_fused")
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, few rounds")
    ap.add_argument("--out", default="bench_update", help="results/{out}.json/.md")
    ap.add_argument("--render", default=None, help="only re-render a results JSON (rows kept)")
    ap.add_argument("--_rss-child", dest="rss_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(*args.rss_child.split(","))))
        return 0
    if args.quick:
        args.sizes, args.optimizers = "cnn,1000x1k,1m", "sgd,adam"
        args.rounds, args.budget, args.rss_sizes = args.rounds or 6, args.budget or 3, "1m"
        args.out = args.out if args.out != "bench_update" else "bench_update_quick"
    lists = ("sizes", "optimizers", "impls", "skip", "rss_sizes", "rss_optimizers", "rss_impls")
    for name in lists:
        setattr(args, name, [x for x in getattr(args, name).split(",") if x])
    for name in ("optimizers", "rss_optimizers"):  # groups -> names, first occurrence kept
        names = [n for x in getattr(args, name) for n in GROUPS.get(x, (x,))]
        setattr(args, name, list(dict.fromkeys(names)))
    for s in args.sizes + args.rss_sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    for i in args.impls + args.rss_impls:
        if i not in ALL_IMPLS:
            ap.error(f"unknown impl {i!r}; choose from {', '.join(ALL_IMPLS)}")
    for o in args.optimizers + args.rss_optimizers:
        if o not in OPTIMIZERS:
            ap.error(f"unknown optimizer {o!r}; choose from {', '.join((*GROUPS, *OPTIMIZERS))}")
    if args.render:
        res = json.loads(Path(args.render).read_text())
        res["ratios"] = ratios(res["rows"])
        args.out = Path(args.render).stem
    else:
        res = run(args)
    md = render(res)
    js, mdp = common.write_results(args.out, res, md)
    print("\n" + md)
    print(f"\nwrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
