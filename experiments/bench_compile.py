"""Compile time of one jitted update step, by optimizer, over many parameter leaves.

Each optimizer's ``update`` is lowered and compiled for ``--leaves`` float32 leaves of
``--shape`` (x64 off, JAX's default; SparseAdam gets BCOO row gradients touching 10% of the
rows, as in ``bench_update.py``). Per optimizer: lowering and compile seconds (wall), CPU
seconds, and the StableHLO line count. One fresh process per optimizer, so no JAX cache is
shared between rows. Writes ``results/{out}.json`` and ``.md``.

    python experiments/bench_compile.py --optimizers asgd,adafactor,radam,nadam,adadelta
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench_common as common

HERE = Path(__file__).resolve().parent


def measure(name: str, leaves: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """Lower and compile ``jol.<name>()``'s update in this process (the child's work)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import sparse

    import jaxopt_lab as jol

    rng = np.random.default_rng(0)
    opt = getattr(jol, name)()
    params = [jnp.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(leaves)]
    if name == "sparse_adam":
        grads = []
        for _ in range(leaves):
            rows = np.sort(rng.choice(shape[0], max(1, round(0.1 * shape[0])), replace=False))
            vals = rng.standard_normal((len(rows), *shape[1:]), dtype=np.float32)
            grads.append(sparse.BCOO((jnp.asarray(vals), jnp.asarray(rows[:, None])), shape=shape))
    else:
        grads = [jnp.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(leaves)]
    state = opt.init(params)
    cpu0, t0 = time.process_time(), time.perf_counter()
    lowered = jax.jit(opt.update).lower(params, grads, state)
    t1 = time.perf_counter()
    lowered.compile()
    t2, cpu2 = time.perf_counter(), time.process_time()
    return {
        "optimizer": name,
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "cpu_s": cpu2 - cpu0,
        "stablehlo_lines": len(lowered.as_text().splitlines()),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.optimizers:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", name]
        cmd += ["--leaves", str(args.leaves), "--shape", ",".join(map(str, args.shape))]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=HERE)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:12s} lower {r['lower_s']:.2f} s  compile {r['compile_s']:.2f} s", flush=True)
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> str:
    header = ["optimizer", "lower s", "compile s", "total s", "cpu s", "StableHLO lines"]
    table = [
        [
            r["optimizer"],
            f"{r['lower_s']:.2f}",
            f"{r['compile_s']:.2f}",
            f"{r['lower_s'] + r['compile_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            r["stablehlo_lines"],
        ]
        for r in rows
    ]
    return (
        f"## bench_compile: jit of one update, {args.leaves} float32 leaves of shape "
        f"{tuple(args.shape)}, x64 off\n\n{common.machine_markdown(info)}\n"
        f"{common.markdown_table(header, table)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizers", default="adam,adadelta,asgd,adafactor,radam,nadam,rprop")
    ap.add_argument("--leaves", type=int, default=200)
    ap.add_argument("--shape", default="1000", help="comma-separated leaf shape")
    ap.add_argument("--out", default="bench_compile", help="results/{out}.json/.md")
    ap.add_argument("--_child", dest="child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.shape = [int(x) for x in args.shape.split(",") if x]
    if args.child:
        print(json.dumps(measure(args.child, args.leaves, tuple(args.shape))))
        return 0
    args.optimizers = [s for s in args.optimizers.split(",") if s]
    info = common.machine()
    rows = run(args)
    md = render(rows, args, info)
    js, mdp = common.write_results(args.out, {"machine": info, "rows": rows}, md)
    print("\n" + md)
    print(f"\nwrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
