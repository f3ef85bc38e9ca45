#!/usr/bin/env python
"""Where the CNN's training step spends its time: each conv layer's three passes, JAX vs torch.

    python experiments/bench_conv_layers.py            # ~1 min on 2 cores

For the three 5x5 convolutions of :class:`jaxopt_lab.cifar.models.CifarCNN` at batch 64 it times the
forward pass, the input gradient (``dx``) and the weight gradient (``dw``) alone:

* JAX: ``lax.conv_general_dilated`` in NHWC/HWIO, each pass jitted with the train step's CPU
  options (:func:`jaxopt_lab.cifar.train.compiler_options`);
* torch: ``torch.nn.grad.conv2d_input`` / ``conv2d_weight`` and ``F.conv2d`` on
  ``channels_last`` tensors (what torch's eager ``channels_last`` step runs).

The first layer's ``dx`` is listed but a training step never computes it (the images need no
gradient). Median of many runs after warm-up, the two frameworks taking turns. Writes
``experiments/results/bench_conv_layers.{json,md}`` and prints the table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _bench_common as common

BATCH = 64
LAYERS = {"conv1": (32, 3, 32), "conv2": (16, 32, 32), "conv3": (8, 32, 64)}  # H=W, C_in, C_out
PASSES = ("fwd", "dx", "dw")


def _median_ms(fn: Callable[[], Any], reps: int = 30) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def jax_passes(hw: int, cin: int, cout: int) -> dict[str, Callable[[], Any]]:
    import jax

    from jaxopt_lab.cifar import train

    options = train.compiler_options(jax.default_backend()) or None
    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.random((BATCH, hw, hw, cin), np.float32))
    w = jax.numpy.asarray(rng.random((5, 5, cin, cout), np.float32))
    g = jax.numpy.asarray(rng.random((BATCH, hw, hw, cout), np.float32))

    def conv(x: Any, w: Any) -> Any:
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    fwd = jax.jit(conv, compiler_options=options)
    dx = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0], compiler_options=options)
    dw = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1], compiler_options=options)
    return {
        "fwd": lambda: jax.block_until_ready(fwd(x, w)),
        "dx": lambda: jax.block_until_ready(dx(x, w, g)),
        "dw": lambda: jax.block_until_ready(dw(x, w, g)),
    }


def torch_passes(hw: int, cin: int, cout: int) -> dict[str, Callable[[], Any]]:
    import torch

    cl = torch.channels_last
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((BATCH, cin, hw, hw), np.float32)).contiguous(memory_format=cl)
    w = torch.from_numpy(rng.random((cout, cin, 5, 5), np.float32)).contiguous(memory_format=cl)
    g = torch.from_numpy(rng.random((BATCH, cout, hw, hw), np.float32)).contiguous(memory_format=cl)
    f = torch.nn.functional
    return {
        "fwd": lambda: f.conv2d(x, w, padding=2),
        "dx": lambda: torch.nn.grad.conv2d_input(x.shape, w, g, padding=2),
        "dw": lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, padding=2),
    }


def main() -> int:
    rows = []
    for layer, (hw, cin, cout) in LAYERS.items():
        impls = {"jax": jax_passes(hw, cin, cout), "torch_cl": torch_passes(hw, cin, cout)}
        for name in PASSES:
            ms = {impl: _median_ms(fns[name]) for impl, fns in impls.items()}
            ms.update({impl: min(ms[impl], _median_ms(fns[name])) for impl, fns in impls.items()})
            gflop = 2 * BATCH * hw * hw * cin * cout * 25 / 1e9
            needed = not (layer == "conv1" and name == "dx")
            rows.append({"layer": layer, "pass": name, "gflop": gflop, "in_step": needed, **ms})
            print(f"  {layer} {name}: jax {ms['jax']:.2f} ms, torch {ms['torch_cl']:.2f} ms")
    in_step = [r for r in rows if r["in_step"]]
    totals = {impl: sum(r[impl] for r in in_step) for impl in ("jax", "torch_cl")}
    table = [
        [
            r["layer"],
            r["pass"] + ("" if r["in_step"] else " (not in a step)"),
            r["jax"],
            r["torch_cl"],
            r["jax"] / r["torch_cl"],
            r["gflop"] / r["jax"] * 1e3,
            r["gflop"] / r["torch_cl"] * 1e3,
        ]
        for r in rows
    ]
    table.append(["all", "in a step", totals["jax"], totals["torch_cl"], None, None, None])
    md = "\n".join(
        [
            "## bench_conv_layers: the CNN's convolutions, pass by pass (float32, batch 64)",
            "",
            common.machine_markdown(common.machine()),
            "Median ms, best of two turns. `jax`: XLA:CPU with the train step's options; "
            "`torch_cl`: torch eager, `channels_last`. jax/torch > 1: JAX slower.",
            "",
            common.markdown_table(
                [
                    "layer",
                    "pass",
                    "jax ms",
                    "torch_cl ms",
                    "jax/torch",
                    "jax GFLOP/s",
                    "torch GFLOP/s",
                ],
                table,
            ),
        ]
    )
    js, mdp = common.write_results("bench_conv_layers", {"rows": rows, "totals": totals}, md)
    print("\n" + md)
    print(f"\nwrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
