#!/usr/bin/env python
"""The CIFAR CNN's training step: jaxopt_lab + Flax (jitted) against torch eager and torch.compile.

    python experiments/bench_train.py            # full run (~10 min on 2 cores)
    python experiments/bench_train.py --quick    # smoke run

Each measurement runs in its own subprocess (one JAX variant per process: a variant's XLA:CPU
thread pools would otherwise load the next one), and the subprocesses run twice in alternating
order; a configuration's number is the better of its two medians. Measured:

* ``jax``: :data:`jaxopt_lab.cifar.train.train_step` as shipped, on
  :class:`jaxopt_lab.cifar.models.CifarCNN`
  (reshape-based max-pool with a scatter-free gradient; XLA:CPU options from
  :func:`jaxopt_lab.cifar.train.compiler_options`, i.e. Eigen instead of YNNPACK convolutions),
  ``jol.sgd(lr=0.01, momentum=0.9)``;
* ``jax_xla_default``: the same step jitted with XLA's default options, to show what
  the compiler options are worth;
* ``jax_nn_max_pool``: the shipped step on the network with ``flax.linen.max_pool`` (whose
  gradient is a scatter on XLA:CPU), to show what the custom pooling is worth;
* ``torch_nchw``, ``torch_channels_last``, ``torch_compile``: the same network from
  :func:`jaxopt_lab.cifar.models.torch_cifar_cnn`, ``torch.optim.SGD(lr=0.01, momentum=0.9)``.

Reported: median step time and images/s at batch 64 and 256, and one epoch of the tutorial
(156 steps of batch 64 from host memory, synthetic CIFAR-shaped data, host-to-device copies
included). Writes ``experiments/results/bench_train.{json,md}`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _bench_common as common

EPOCH_STEPS, EPOCH_BATCH = 156, 64
LR, MOMENTUM = 0.01, 0.9


def _data(batch: int, n_batches: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((n_batches * batch, 32, 32, 3), dtype=np.float32)  # NHWC, [0, 1)
    labels = rng.integers(0, 10, n_batches * batch).astype(np.int32)
    return images, labels


def _median_step(step: Any, reps: int, budget_s: float) -> dict[str, float]:
    for _ in range(3):
        step()
    ts: list[float] = []
    start = time.perf_counter()
    while len(ts) < reps and (len(ts) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "runs": len(ts)}


# --------------------------------------------------------------------------------------------
# JAX child


def _nn_max_pool_cnn() -> Any:
    """CifarCNN with flax's ``nn.max_pool`` (whose gradient is a scatter on XLA:CPU)."""
    import flax.linen as nn

    from jaxopt_lab.cifar.models import CifarCNN

    class NNMaxPoolCNN(CifarCNN):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            for name, c in (("conv1", 32), ("conv2", 32), ("conv3", 64)):
                x = nn.Conv(c, (5, 5), padding=((2, 2), (2, 2)), name=name)(x)
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.Dense(64, name="fc1")(x)
            return nn.Dense(10, name="fc2")(x)

    return NNMaxPoolCNN()


def jax_child(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """One JAX variant per process: XLA:CPU thread pools of one variant would load the next."""
    import jax
    import jax.numpy as jnp

    import jaxopt_lab as jol
    from jaxopt_lab.cifar.models import CifarCNN
    from jaxopt_lab.cifar.train import TrainState, _train_step, train_step

    def fresh_state(model: Any) -> Any:
        params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
        tx = jol.sgd(lr=LR, momentum=MOMENTUM)
        return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    model, step_fn = {
        "jax": (CifarCNN(), train_step),
        # The same step under XLA's default CPU options (YNNPACK convolutions).
        "jax_xla_default": (CifarCNN(), jax.jit(_train_step, donate_argnums=0)),
        "jax_nn_max_pool": (_nn_max_pool_cnn(), train_step),
    }[variant]
    out: dict[str, Any] = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "steps": {}}
    for batch in args.batches:
        images, labels = _data(batch)
        x, y = jnp.asarray(images), jnp.asarray(labels)
        box = {"s": fresh_state(model)}
        t0 = time.perf_counter()
        box["s"], m = step_fn(box["s"], (x, y))
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0

        def step(box=box, x=x, y=y) -> None:
            box["s"], m = step_fn(box["s"], (x, y))
            jax.block_until_ready((box["s"], m))

        st = _median_step(step, args.reps, args.budget)
        out["steps"][f"{variant}/{batch}"] = {**st, "compile_s": compile_s}
        print(f"  {variant} b{batch}: {st['median_s'] * 1e3:.2f} ms", file=sys.stderr)
    if args.epoch and variant != "jax_nn_max_pool":
        images, labels = _data(EPOCH_BATCH, EPOCH_STEPS, seed=1)
        state = fresh_state(model)
        state, m = step_fn(state, (jnp.asarray(images[:64]), jnp.asarray(labels[:64])))
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for i in range(EPOCH_STEPS):
            sl = slice(i * EPOCH_BATCH, (i + 1) * EPOCH_BATCH)
            state, m = step_fn(state, (jnp.asarray(images[sl]), jnp.asarray(labels[sl])))
        jax.block_until_ready((state, m))
        out["epoch_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------
# torch child


def torch_child(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    import torch

    from jaxopt_lab.cifar.models import torch_cifar_cnn

    out: dict[str, Any] = {"threads": torch.get_num_threads(), "steps": {}}
    fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format

    def setup() -> tuple[Any, Any, Any]:
        model = torch_cifar_cnn(seed=0).to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        fwd = model
        if variant == "compile":
            fwd = torch.compile(model)
        return model, opt, fwd

    loss_fn = torch.nn.CrossEntropyLoss()

    def make_step(fwd: Any, opt: Any, x: Any, y: Any) -> Any:
        def step() -> float:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(fwd(x), y)
            loss.backward()
            opt.step()
            return loss

        return step

    for batch in args.batches:
        images, labels = _data(batch)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        y = torch.from_numpy(labels).long()
        _, opt, fwd = setup()
        step = make_step(fwd, opt, x, y)
        t0 = time.perf_counter()
        step()
        compile_s = time.perf_counter() - t0
        st = _median_step(step, args.reps, args.budget)
        out["steps"][f"torch_{variant}/{batch}"] = {**st, "compile_s": compile_s}
        print(f"  torch_{variant} b{batch}: {st['median_s'] * 1e3:.2f} ms", file=sys.stderr)
    if args.epoch:
        images, labels = _data(EPOCH_BATCH, EPOCH_STEPS, seed=1)
        _, opt, fwd = setup()
        x0 = torch.from_numpy(images[:64]).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        make_step(fwd, opt, x0, torch.from_numpy(labels[:64]).long())()
        t0 = time.perf_counter()
        for i in range(EPOCH_STEPS):
            sl = slice(i * EPOCH_BATCH, (i + 1) * EPOCH_BATCH)
            x = torch.from_numpy(images[sl]).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
            make_step(fwd, opt, x, torch.from_numpy(labels[sl]).long())()
        out["epoch_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------


def _child_cmd(kind: str, args: argparse.Namespace) -> list[str]:
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        kind,
        "--batches",
        ",".join(map(str, args.batches)),
        "--reps",
        str(args.reps),
        "--budget",
        str(args.budget),
    ]
    return cmd + (["--quick"] if args.quick else []) + ([] if args.epoch else ["--no-epoch"])


def run_child(kind: str, xla_flags: str | None, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    label = kind if xla_flags is None else f"{kind} XLA_FLAGS='{xla_flags}'"
    print(f"running {label}", flush=True)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            _child_cmd(kind, args),
            env=env,
            capture_output=True,
            text=True,
            timeout=args.child_timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.child_timeout} s"}
    sys.stderr.write(out.stderr[-2000:] if out.returncode else "")
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][:300] if out.stderr else "failed"}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per step measurement")
    ap.add_argument("--repeats", type=int, default=2, help="runs of every subprocess")
    ap.add_argument("--jax", default="jax,jax_xla_default,jax_nn_max_pool")
    ap.add_argument("--torch", default="nchw,channels_last,compile")
    ap.add_argument("--epoch", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--child-timeout", type=int, default=900)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench_train")
    ap.add_argument("--_child", dest="child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in str(args.batches).split(",")]
    if args.child:
        if args.child.startswith("jax"):
            res = jax_child(args, args.child)
        else:
            res = torch_child(args, args.child[6:])
        print(json.dumps(res))
        return 0
    if args.quick:
        args.batches, args.reps, args.budget, args.repeats = [64], 10, 5.0, 1
        args.torch, args.out = "nchw,channels_last", "bench_train_quick"
        args.jax = "jax,jax_xla_default"
    runs: list[tuple[str, str | None]] = [(v, None) for v in args.jax.split(",") if v]
    runs += [(f"torch_{v}", None) for v in args.torch.split(",") if v]
    results: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.repeats):
        order = runs if r % 2 == 0 else runs[::-1]
        for kind, flags in order:
            key = kind
            results.setdefault(key, []).append(run_child(kind, flags, args))
    res = summarize(results, args)
    md = render(res)
    js, mdp = common.write_results(args.out, res, md)
    print("\n" + md)
    print(f"\nwrote {js} and {mdp}")
    return 0


def summarize(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    rows, epochs, errors = [], {}, {}
    for key, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            errors[key] = runs[0]["error"]
            continue
        names = sorted({n for r in ok for n in r["steps"]})
        for name in names:
            meds = [r["steps"][name]["median_s"] for r in ok if name in r["steps"]]
            impl, batch = name.rsplit("/", 1)
            best = min(meds)
            rows.append(
                {
                    "impl": impl,
                    "batch": int(batch),
                    "median_s": best,
                    "all_medians_s": meds,
                    "images_per_s": int(batch) / best,
                    "compile_s": ok[0]["steps"][name]["compile_s"],
                }
            )
        if all("epoch_s" in r for r in ok) and ok:
            epochs[key] = min(r["epoch_s"] for r in ok)
    ref = {r["batch"]: r for r in rows if r["impl"] == "torch_channels_last"}
    for r in rows:
        if r["batch"] in ref:
            r["speed_vs_torch_channels_last"] = r["images_per_s"] / ref[r["batch"]]["images_per_s"]
    return {
        "machine": common.machine(),
        "rows": rows,
        "epoch_s": epochs,
        "errors": errors,
        "epoch": {"steps": EPOCH_STEPS, "batch": EPOCH_BATCH},
        "optimizer": f"sgd lr={LR} momentum={MOMENTUM}",
    }


def render(res: dict[str, Any]) -> str:
    rows = sorted(res["rows"], key=lambda r: (r["batch"], -r["images_per_s"]))
    table = [
        [
            r["impl"],
            r["batch"],
            r["median_s"] * 1e3,
            r["images_per_s"],
            r.get("speed_vs_torch_channels_last"),
            r["compile_s"],
        ]
        for r in rows
    ]
    md = [
        "## bench_train: CIFAR CNN training step (float32, SGD momentum 0.9)",
        "",
        common.machine_markdown(res["machine"]),
        "Best of the per-process medians. `jax`: `jaxopt_lab.cifar.train.train_step` as shipped "
        "(XLA:CPU options from `jaxopt_lab.cifar.train.compiler_options`: Eigen convolutions); "
        "`jax_xla_default`: the same step jitted with XLA's default options (YNNPACK "
        "convolutions); `jax_nn_max_pool`: the shipped step with `flax.linen.max_pool` "
        "(scatter gradient). Speed > 1: faster than torch `channels_last`.",
        "",
        common.markdown_table(
            ["impl", "batch", "ms/step", "images/s", "vs torch CL", "first step s"], table
        ),
    ]
    if res["epoch_s"]:
        md += [
            "",
            f"One epoch ({EPOCH_STEPS} steps of batch {EPOCH_BATCH}, synthetic data in host "
            "memory, after one warm-up step):",
            "",
            common.markdown_table(
                ["impl", "epoch s"],
                [[k, v] for k, v in sorted(res["epoch_s"].items(), key=lambda kv: kv[1])],
            ),
        ]
    if res["errors"]:
        md += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in res["errors"].items())]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
