#!/usr/bin/env python
"""GPU readiness: parity figures against torch CUDA, the update step's bandwidth, the CNN step.

    bash experiments/device_check.sh [--cifar-npz cifar10.npz]   # one GPU, under 8 minutes
    python experiments/device_check.py --dry-run --out /tmp/dc   # CPU, tiny sizes, < 1 minute

Three sections, each written to ``device_check.{json,md}`` in ``--out`` as soon as it is done
(default: ``$OUT``, else ``experiments/results/device``):

* ``parity``: every row of ``tests/cases.py``'s ``CASES``, float32, JAX x64 off (the mode users
  run), ``_reference.grad_stream`` gradients: jaxopt_lab on the GPU against torch CUDA's
  single-tensor (``foreach=False``), ``foreach`` and ``fused`` paths (where torch has them).
  Per row and path: the largest ``|ours - torch| / max|torch|`` over every leaf, state field and
  step, and the fraction of elements that are bitwise equal (two NaNs count as equal). Figures,
  not assertions: GPU compilers contract ``a * b + c`` into FMAs where they see fit (XLA and
  nvcc alike), so the CPU suite's bit-for-bit guarantee does not carry over.
* ``update``: one optimizer step (``experiments/bench_update.py``'s sizes, optimizers and
  byte counts) for jaxopt_lab, optax, torch ``foreach`` and ``fused``, as achieved GB/s and as a
  fraction of the device bandwidth measured in the same run (a device-to-device copy).
* ``train``: the CIFAR CNN's training step (SGD lr 0.01, momentum 0.9, float32), images/s for
  ``jaxopt_lab.cifar.train.train_step`` and torch (NCHW and channels_last), with each framework's
  default float32 convolution precision (TF32 on recent GPUs; recorded); then a short drift
  check: both trained from the same weights on the same batches with full float32 precision,
  the losses side by side. Data: CIFAR-10 images from ``--cifar-npz`` (``image`` uint8
  N x 32 x 32 x 3, ``label``), else a generated stand-in, labelled so everywhere.

``--dry-run`` runs the same code on the CPU (torch CPU, JAX CPU) at tiny sizes; there torch's
sqrt is made correctly rounded for the single-tensor path (as in the parity suite), so those
rows must come out bitwise. ``tests/test_device_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT / "tests"), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

PATHS = ("single", "foreach", "fused")
TORCH_FLAGS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}

# Dry run: the same code at sizes that take seconds on a CPU.
DRY_PARITY = ("sgd-momentum", "adam", "adamw-amsgrad", "rmsprop-centered", "adagrad")
DRY_SIZES = {"dry-4k": [(4096,), (10,)]}
GPU_SIZES = ("100m", "10m", "cnn", "1000x1k")  # the bandwidth-bound ones first
OPTIMIZERS = ("momentum", "adam", "adamw")
DRY_OPTIMIZERS = ("momentum", "adam")
UPDATE_IMPLS = ("jol", "optax", "torch_foreach", "torch_fused")


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "results" / "device"


# --------------------------------------------------------------------------------------------
# Environment


def environment(device: str) -> dict[str, Any]:
    import _bench_common as common
    import jax
    import torch

    from jaxopt_lab.optim import native as _native

    st = _native.status()
    info = common.machine()
    info.update(
        {
            "jax_devices": [str(d) for d in jax.devices()],
            "jax_backend": jax.default_backend(),
            "torch_device": device,
            "torch_cuda": torch.version.cuda,
            "torch_device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch_tf32": {
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            },
            "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "jax_enable_x64": bool(jax.config.jax_enable_x64),
            "jaxopt_lab_native": {"available": st.available, "reason": st.reason},
        }
    )
    return info


# --------------------------------------------------------------------------------------------
# (a) parity against torch on the device


def torch_run(case: Any, steps: int, path: str, device: str) -> list[dict[str, list]]:
    """Params and state after every step of ``case``'s torch optimizer on ``device``."""
    import torch
    from _reference import _fields, grad_stream, init_params
    from cases import SCHEDULES, TORCH_CLASS

    params = [torch.from_numpy(p).to(device).requires_grad_(True) for p in init_params(np.float32)]
    opt = getattr(torch.optim, TORCH_CLASS[case.algo])(params, **TORCH_FLAGS[path], **case.kwargs)
    sched = SCHEDULES[case.schedule].torch(opt) if case.schedule is not None else None
    fields = _fields(case)
    out = []
    for grads in grad_stream(steps, np.float32):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g).to(device)
        opt.step()
        if sched is not None:
            sched.step()
        record = {"params": [p.detach().cpu().numpy().copy() for p in params]}
        for f in fields:  # None where torch keeps no such key (Adafactor: per param's rank)
            record[f] = [_host(opt.state[p].get(f)) for p in params]
        out.append(record)
    return out


def _host(t: Any) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().copy()


def compare(ours: list[dict], theirs: list[dict]) -> dict[str, float]:
    """Largest relative error (over leaves, fields, steps) and the bitwise-equal fraction.

    Where torch keeps no key (``None``), ours must hold an empty placeholder array.
    """
    from _reference import bitwise_equal_or_both_nan

    worst, equal, total = 0.0, 0, 0
    for mine, ref in zip(ours, theirs, strict=True):
        if mine.keys() != ref.keys():
            raise ValueError(f"state fields differ: {sorted(mine)} vs {sorted(ref)}")
        for field in ref:
            for a, b in zip(mine[field], ref[field], strict=True):
                if b is None:
                    if np.asarray(a).size:
                        raise ValueError(f"{field}: torch keeps no such key, ours {a!r}")
                    continue
                a, b = np.asarray(a), np.asarray(b)
                if a.shape != b.shape or a.dtype != b.dtype:
                    raise ValueError(f"{field}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
                same = bitwise_equal_or_both_nan(a, b)
                equal += int(np.count_nonzero(same))
                total += same.size
                both = np.isfinite(a) & np.isfinite(b)
                if both.any():
                    a64, b64 = a[both].astype(np.float64), b[both].astype(np.float64)
                    scale = max(float(np.max(np.abs(b64))), np.finfo(np.float32).tiny)
                    worst = max(worst, float(np.max(np.abs(a64 - b64))) / scale)
    return {"max_rel_err": worst, "bitwise_fraction": equal / max(total, 1)}


def parity(cfg: argparse.Namespace, device: str) -> dict[str, Any]:
    from _reference import correctly_rounded_torch_sqrt, jax_trajectory
    from cases import CASES

    rows_in = [c for c in CASES if c.id in DRY_PARITY] if cfg.dry_run else round_robin(CASES)
    rows, start = [], time.perf_counter()
    for case in rows_in:
        row: dict[str, Any] = {"case": case.id, "algo": case.algo}
        rows.append(row)
        if time.perf_counter() - start > cfg.parity_budget:
            row["skipped"] = f"time budget ({cfg.parity_budget:.0f} s) spent"
            continue
        try:
            ours = jax_trajectory(case, np.float32, cfg.steps)  # x64 off: main() checks
        except Exception as e:
            row["error"] = f"jaxopt_lab: {type(e).__name__}: {e}"[:300]
            continue
        for path in PATHS:
            patch = path == "single" and device == "cpu"  # MKL sqrt: see _reference
            try:
                with correctly_rounded_torch_sqrt() if patch else contextlib.nullcontext():
                    theirs = torch_run(case, cfg.steps, path, device)
                row[path] = compare(ours, theirs)
            except Exception as e:  # e.g. no fused implementation of this optimizer
                row[path] = {"n/a": f"{type(e).__name__}: {e}"[:200]}
        print(f"parity {case.id}: " + json.dumps({p: row.get(p) for p in PATHS}), flush=True)
    return {
        "steps": cfg.steps,
        "dtype": "float32",
        "x64": False,
        "torch_sqrt_patched_on_single_path": device == "cpu",
        "rows": rows,
        "by_optimizer": summarize_parity(rows),
    }


def round_robin(cases: list[Any]) -> list[Any]:
    """The rows in rounds of one per optimizer: under a time budget every optimizer gets some."""
    by_algo: dict[str, list[Any]] = {}
    for c in cases:
        by_algo.setdefault(c.algo, []).append(c)
    rounds = max(len(v) for v in by_algo.values())
    return [v[i] for i in range(rounds) for v in by_algo.values() if i < len(v)]


def summarize_parity(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per optimizer and torch path: worst relative error and lowest bitwise fraction."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        for path in PATHS:
            fig = row.get(path)
            if not fig or "max_rel_err" not in fig:
                continue
            agg = out.setdefault(row["algo"], {}).setdefault(
                path, {"rows": 0, "max_rel_err": 0.0, "min_bitwise_fraction": 1.0}
            )
            agg["rows"] += 1
            agg["max_rel_err"] = max(agg["max_rel_err"], fig["max_rel_err"])
            agg["min_bitwise_fraction"] = min(agg["min_bitwise_fraction"], fig["bitwise_fraction"])
    return out


# --------------------------------------------------------------------------------------------
# (b) the update step against device bandwidth


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def device_bandwidth(device: str, n: int) -> dict[str, float]:
    """GB/s (1e9 bytes) of a device copy: torch ``y.copy_(x)`` and a donated jax ``2*x+1``
    (each reads and writes 4n bytes); best of 10."""
    import jax
    import jax.numpy as jnp
    import torch

    x = torch.ones(n, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(10):
        sync(device)
        t0 = time.perf_counter()
        y.copy_(x)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    torch_gbs = 8 * n / best / 1e9
    del x, y
    f = jax.jit(lambda v: 2 * v + 1, donate_argnums=0)
    v = jax.block_until_ready(f(jnp.ones(n, jnp.float32)))
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        v = jax.block_until_ready(f(v))
        best = min(best, time.perf_counter() - t0)
    del v
    return {"torch_copy_gbs": torch_gbs, "jax_inplace_axpb_gbs": 8 * n / best / 1e9}


def update_step(
    impl: str, opt: str, size: str, p0: list[np.ndarray], g0: list[np.ndarray], device: str
) -> Callable[[], Any]:
    """A zero-argument step that takes one optimizer step and waits for it."""
    import bench_update as bu

    if impl.startswith("torch"):
        import torch

        params = []
        for x, g in zip(p0, g0, strict=True):
            p = torch.nn.Parameter(torch.from_numpy(x).to(device))
            p.grad = torch.from_numpy(g).to(device)
            params.append(p)
        o = bu._torch_opt(opt, params, impl.split("_")[1])

        def step() -> None:
            o.step()
            sync(device)

        return step
    import jax.numpy as jnp

    # bench_update's JAX steps put arrays on the default device: the GPU here.
    return bu.make_step(impl, opt, size, p0, [jnp.asarray(g) for g in g0])


def update_bench(cfg: argparse.Namespace, device: str) -> dict[str, Any]:
    import _bench_common as common
    import bench_update as bu

    sizes = DRY_SIZES if cfg.dry_run else {s: bu.SIZES[s] for s in GPU_SIZES}
    bu.SIZES.update(sizes)  # bench_update.make_step looks sizes up by name
    bw = device_bandwidth(device, 1 << 16 if cfg.dry_run else 1 << 28)
    used = max(bw.values())
    print(f"device bandwidth: {bw}", flush=True)
    rows, start = [], time.perf_counter()
    for size in sizes:
        n = bu.n_params(size)
        p0, g0 = bu.make_data(size)
        for opt in DRY_OPTIMIZERS if cfg.dry_run else OPTIMIZERS:
            if time.perf_counter() - start > cfg.update_budget:
                rows.append({"size": size, "optimizer": opt, "skipped": "time budget spent"})
                continue
            steps = {i: update_step(i, opt, size, p0, g0, device) for i in UPDATE_IMPLS}
            stats = common.interleaved(
                steps,
                rounds=3 if cfg.dry_run else 30,
                block=1 if cfg.dry_run else 5,
                warmup=1 if cfg.dry_run else 3,
                settle=0 if cfg.dry_run else 1,
                budget_s=1.0 if cfg.dry_run else 6.0,
            )
            for impl, st in stats.items():
                gbs = bu.BYTES_PER_PARAM[opt] * n / st["median_s"] / 1e9
                rows.append(
                    {
                        "size": size,
                        "n_params": n,
                        "optimizer": opt,
                        "impl": impl,
                        **st,
                        "gbs": gbs,
                        "fraction_of_bandwidth": gbs / used,
                    }
                )
            line = "  ".join(f"{k} {v['median_s'] * 1e3:.3f}" for k, v in stats.items())
            print(f"update {size} {opt} ms: {line}", flush=True)
            del steps
    return {"bandwidth": bw, "bandwidth_used_gbs": used, "rows": rows}


# --------------------------------------------------------------------------------------------
# (c) the CNN training step


def cifar(path: str | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` images (NHWC float32, the tutorial's normalisation) and labels, and their source."""
    if path:
        with np.load(path) as d:
            images, labels = np.asarray(d["image"]), np.asarray(d["label"])
        if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"{path}: image must be uint8 N x 32 x 32 x 3, got {images.shape}")
        source = f"CIFAR-10 images from {path} ({len(images)} in the file"
        reps = -(-n // len(images))
        images, labels = np.tile(images, (reps, 1, 1, 1))[:n], np.tile(labels, reps)[:n]
        source += f", {n} used, repeated if fewer)"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        source = "SYNTHETIC stand-in: random uint8 images and labels (no --cifar-npz given)"
    x = (images.astype(np.float32) / 255.0 - 0.5) / 0.5
    return x, labels.astype(np.int32), source


def _torch_model(device: str, channels_last: bool) -> Any:
    import torch

    from jaxopt_lab.cifar.models import torch_cifar_cnn

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch_cifar_cnn(seed=0).to(device).to(memory_format=fmt), fmt


def train_bench(cfg: argparse.Namespace, device: str) -> dict[str, Any]:
    import bench_train as bt
    import jax
    import jax.numpy as jnp
    import torch

    import jaxopt_lab as jol
    from jaxopt_lab.cifar.models import CifarCNN, from_torch
    from jaxopt_lab.cifar.train import TrainState, train_step

    batches = [64] if cfg.dry_run else [64, 256]  # dry: the drift check reuses the compile
    reps, budget = (2, 1.0) if cfg.dry_run else (40, 10.0)
    n_drift = 3 if cfg.dry_run else 30
    x_all, y_all, source = cifar(cfg.cifar_npz, max(max(batches), 64 * n_drift))
    print(f"train data: {source}", flush=True)
    model = CifarCNN()
    loss_fn = torch.nn.CrossEntropyLoss()

    def jax_state(weights: Any) -> Any:
        tx = jol.sgd(lr=bt.LR, momentum=bt.MOMENTUM)
        return TrainState.create(apply_fn=model.apply, params=weights, tx=tx)

    rows = []
    for batch in batches:
        x, y = jnp.asarray(x_all[:batch]), jnp.asarray(y_all[:batch])
        box = {"s": jax_state(from_torch(_torch_model("cpu", False)[0]))}
        t0 = time.perf_counter()
        box["s"], m = train_step(box["s"], (x, y))
        jax.block_until_ready(m)
        first = time.perf_counter() - t0

        def jstep(box: dict = box, x: Any = x, y: Any = y) -> None:
            box["s"], m = train_step(box["s"], (x, y))
            jax.block_until_ready((box["s"], m))

        st = bt._median_step(jstep, reps, budget)
        rows.append({"impl": "jax", "batch": batch, **st, "first_step_s": first})
        for variant in ("nchw", "channels_last"):
            net, fmt = _torch_model(device, variant == "channels_last")
            opt = torch.optim.SGD(net.parameters(), lr=bt.LR, momentum=bt.MOMENTUM)
            tx = torch.from_numpy(x_all[:batch]).permute(0, 3, 1, 2).to(device)
            tx = tx.contiguous(memory_format=fmt)
            ty = torch.from_numpy(y_all[:batch]).long().to(device)

            def tstep(net: Any = net, opt: Any = opt, tx: Any = tx, ty: Any = ty) -> None:
                opt.zero_grad(set_to_none=True)
                loss_fn(net(tx), ty).backward()
                opt.step()
                sync(device)

            t0 = time.perf_counter()
            tstep()
            first = time.perf_counter() - t0
            st = bt._median_step(tstep, reps, budget)
            rows.append({"impl": f"torch_{variant}", "batch": batch, **st, "first_step_s": first})
        for r in rows[-3:]:
            r["images_per_s"] = batch / r["median_s"]
        print(
            f"train b{batch}: "
            + ", ".join(f"{r['impl']} {r['images_per_s']:.0f} img/s" for r in rows[-3:]),
            flush=True,
        )
    return {
        "data": source,
        "optimizer": f"sgd lr={bt.LR} momentum={bt.MOMENTUM}",
        "rows": rows,
        "drift": drift(x_all, y_all, n_drift, device),
    }


def drift(x_all: np.ndarray, y_all: np.ndarray, steps: int, device: str) -> dict[str, Any]:
    """Both frameworks from the same weights on the same batches (64), full float32 precision:
    the per-step losses and their largest relative difference."""
    import bench_train as bt
    import jax
    import jax.numpy as jnp
    import torch

    import jaxopt_lab as jol
    from jaxopt_lab.cifar.models import CifarCNN, from_torch
    from jaxopt_lab.cifar.train import TrainState, train_step

    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        net, _ = _torch_model(device, False)
        model = CifarCNN()
        state = TrainState.create(
            apply_fn=model.apply,
            params=from_torch(net),
            tx=jol.sgd(lr=bt.LR, momentum=bt.MOMENTUM),
        )
        opt = torch.optim.SGD(net.parameters(), lr=bt.LR, momentum=bt.MOMENTUM)
        loss_fn = torch.nn.CrossEntropyLoss()
        jax_losses, torch_losses = [], []
        highest = jax.default_matmul_precision("highest")  # part of the compile's key
        with highest if device == "cuda" else contextlib.nullcontext():
            for i in range(steps):
                xb, yb = x_all[64 * i : 64 * (i + 1)], y_all[64 * i : 64 * (i + 1)]
                state, m = train_step(state, (jnp.asarray(xb), jnp.asarray(yb)))
                jax_losses.append(float(m["loss"]))
                opt.zero_grad(set_to_none=True)
                tx = torch.from_numpy(xb).permute(0, 3, 1, 2).contiguous().to(device)
                loss = loss_fn(net(tx), torch.from_numpy(yb).long().to(device))
                loss.backward()
                opt.step()
                torch_losses.append(float(loss.detach()))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    rel = [abs(a - b) / max(abs(b), 1e-30) for a, b in zip(jax_losses, torch_losses, strict=True)]
    return {
        "steps": steps,
        "batch": 64,
        "precision": "float32 (torch TF32 off, jax default_matmul_precision=highest)",
        "jax_loss": jax_losses,
        "torch_loss": torch_losses,
        "max_rel_loss_diff": max(rel),
    }


# --------------------------------------------------------------------------------------------
# Output


def render(res: dict[str, Any]) -> str:
    import _bench_common as common

    env = res["environment"]
    md = [
        "## device_check" + (" (DRY RUN: CPU, tiny sizes)" if res["dry_run"] else ""),
        "",
        common.machine_markdown(env),
        f"JAX devices: {', '.join(env['jax_devices'])}; torch device: "
        f"{env['torch_device_name']} (CUDA {env['torch_cuda']}).",
        "",
    ]
    if "parity" in res:
        par = res["parity"]
        md += [
            f"### Parity with torch ({par['steps']} steps, float32, x64 off)",
            "",
            "Per optimizer and torch path: worst `|ours - torch| / max|torch|` over leaves, "
            "state fields and steps of its rows of `tests/cases.py`, and the lowest fraction "
            "of bitwise-equal elements among those rows. Figures, not assertions."
            + (
                " Dry run: torch's sqrt correctly rounded on the single path."
                if res["dry_run"]
                else ""
            ),
            "",
        ]
        table = []
        for algo, paths in par["by_optimizer"].items():
            cells = []
            for path in PATHS:
                f = paths.get(path)
                cells += [f["max_rel_err"], f["min_bitwise_fraction"]] if f else [None, None]
            table.append([algo, *cells])
        header = ["optimizer"] + [f"{p} {k}" for p in PATHS for k in ("rel err", "bitwise")]
        md += [common.markdown_table(header, table), ""]
        notes = [
            f"{r['case']}: {r.get('error') or r.get('skipped')}"
            for r in par["rows"]
            if r.get("error") or r.get("skipped")
        ]
        if notes:
            md += ["Not compared: " + "; ".join(notes), ""]
    if "update" in res:
        up = res["update"]
        md += [
            f"### Update step (median ms; device bandwidth {up['bandwidth_used_gbs']:.0f} GB/s)",
            "",
        ]
        table = [
            [
                r["size"],
                r["optimizer"],
                r["impl"],
                r["median_s"] * 1e3,
                r["gbs"],
                100 * r["fraction_of_bandwidth"],
            ]
            for r in up["rows"]
            if "impl" in r
        ]
        md += [common.markdown_table(["params", "opt", "impl", "ms", "GB/s", "% bw"], table), ""]
    if "train" in res:
        tr = res["train"]
        md += [f"### CNN training step ({tr['optimizer']}; data: {tr['data']})", ""]
        table = [
            [r["impl"], r["batch"], r["median_s"] * 1e3, r["images_per_s"], r["first_step_s"]]
            for r in tr["rows"]
        ]
        md += [
            common.markdown_table(["impl", "batch", "ms/step", "images/s", "first step s"], table)
        ]
        d = tr["drift"]
        md += [
            "",
            f"Drift, {d['steps']} steps of batch {d['batch']} from the same weights "
            f"({d['precision']}): largest relative loss difference {d['max_rel_loss_diff']:.2e}.",
        ]
    for key, err in res.get("errors", {}).items():
        md += ["", f"**{key} failed**: {err}"]
    return "\n".join(md) + "\n"


def write(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / "device_check.md").write_text(render(res))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (< 1 minute)")
    ap.add_argument("--out", type=Path, default=None, help="default: $OUT or results/device")
    ap.add_argument("--cifar-npz", default=None, help="CIFAR-10 .npz (image uint8 NHWC, label)")
    ap.add_argument("--steps", type=int, default=None, help="parity steps (default 200; dry 3)")
    ap.add_argument("--parity-budget", type=float, default=200.0, help="seconds for parity rows")
    ap.add_argument("--update-budget", type=float, default=120.0, help="seconds for the bench")
    ap.add_argument("--sections", default="parity,update,train")
    cfg = ap.parse_args(argv)
    cfg.steps = cfg.steps or (3 if cfg.dry_run else 200)
    out = cfg.out or default_out()
    import jax

    if cfg.dry_run:
        jax.config.update("jax_platforms", "cpu")
        device = "cpu"
    else:
        import torch

        if jax.default_backend() == "cpu" or not torch.cuda.is_available():
            print("no GPU for JAX and torch here: use --dry-run", file=sys.stderr)
            return 2
        device = "cuda"
    if jax.config.jax_enable_x64:
        print("JAX_ENABLE_X64 is on: the parity figures are for x64 off", file=sys.stderr)
        return 2
    res: dict[str, Any] = {"dry_run": cfg.dry_run, "environment": environment(device)}
    res["errors"] = {}
    sections = {"parity": parity, "update": update_bench, "train": train_bench}
    for name in cfg.sections.split(","):
        t0 = time.perf_counter()
        try:
            res[name] = sections[name](cfg, device)
        except Exception as e:
            traceback.print_exc()
            res["errors"][name] = f"{type(e).__name__}: {e}"[:500]
        res.setdefault("seconds", {})[name] = time.perf_counter() - t0
        write(res, out)  # after every section: a timeout keeps what is done
        print(f"section {name}: {res['seconds'][name]:.1f} s", flush=True)
    print(render(res))
    print(f"wrote {out / 'device_check.json'} and {out / 'device_check.md'}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
