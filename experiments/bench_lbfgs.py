#!/usr/bin/env python
"""One L-BFGS ``step``, side by side: jaxopt_lab, torch.optim.LBFGS and optax.lbfgs.

    python experiments/bench_lbfgs.py                       # 10k and 1m params (~3 min, 2 cores)
    python experiments/bench_lbfgs.py --sizes 10k --rounds 5

Problem: L2-regularised logistic regression, float32, ``n`` weights on ``N`` synthetic samples
(10k: N=1024; 1m: N=32, so the data stays at 40-128 MB). Every timed call starts from the same
params and a fresh state and runs one torch-style ``step``: ``max_iter=20`` iterations with
``history_size=10`` (optax's default memory), tolerances off (``tolerance_grad=0``,
``tolerance_change=0``) so that every implementation does all 20 iterations:

* ``fixed`` (no line search, ``lr=1``): 20 gradient evaluations and two-loop recursions.
  ``jol``: ``jax.jit(opt.step)`` with the closure ``jax.value_and_grad(loss)`` traced inside;
  ``torch``: ``torch.optim.LBFGS(...).step(closure)`` with an autograd closure;
  ``optax``: 20 ``optax.lbfgs(learning_rate=1, linesearch=None)`` updates in one jitted
  ``fori_loop`` (optax's first-step scale differs, see ``jaxopt_lab.optim.lbfgs``; the work is the
  same).
* ``wolfe``: jol and torch with ``line_search_fn="strong_wolfe"`` (``max_eval`` 25; the step
  may stop before 20 iterations, when the search finds no decrease: iterations and evaluations are
  reported); optax's default zoom line search for as many updates as jol/torch took iterations,
  reusing the search's value and gradient (``optax.value_and_grad_from_state``).
* ``torch_1t``: torch on one intra-op thread (see ``one_thread``).

Timing is interleaved round-robin (``_bench_common.interleaved``); ratios are of medians taken in
the same run. Writes ``experiments/results/bench_lbfgs.{json,md}`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common

SIZES = {"10k": (10_000, 1024), "100k": (100_000, 256), "1m": (1_000_000, 32)}
MAX_ITER = 20
HISTORY = 10
L2 = 1e-3
IMPLS = ("jol", "torch", "torch_1t", "optax")


def make_data(size: str) -> tuple[np.ndarray, np.ndarray]:
    n, samples = SIZES[size]
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(samples, n)) / np.sqrt(n)).astype(np.float32)
    y = (x @ rng.normal(size=n).astype(np.float32) > 0).astype(np.float32)
    return x, y


def jax_steps(x: np.ndarray, y: np.ndarray, search: str) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxopt_lab as jol

    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss(w: jax.Array) -> jax.Array:
        z = xj @ w
        return jnp.mean(jax.nn.softplus(z) - yj * z) + 0.5 * L2 * jnp.sum(w * w)

    w0 = jnp.zeros(x.shape[1], jnp.float32)
    kwargs = {"line_search_fn": "strong_wolfe"} if search == "wolfe" else {}
    opt = jol.lbfgs(
        lr=1,
        max_iter=MAX_ITER,
        history_size=HISTORY,
        tolerance_grad=0,
        tolerance_change=0,
        **kwargs,
    )
    state0 = opt.init(w0)
    jol_step = jax.jit(lambda w, s: opt.step(w, s, jax.value_and_grad(loss)))

    if search == "wolfe":
        tx = optax.lbfgs(memory_size=HISTORY)
        value_and_grad = optax.value_and_grad_from_state(loss)

        def one(_, carry):
            w, s = carry
            value, grad = value_and_grad(w, state=s)
            updates, s = tx.update(grad, s, w, value=value, grad=grad, value_fn=loss)
            return optax.apply_updates(w, updates), s
    else:
        tx = optax.lbfgs(learning_rate=1.0, memory_size=HISTORY, linesearch=None)

        def one(_, carry):
            w, s = carry
            updates, s = tx.update(jax.grad(loss)(w), s, w)
            return optax.apply_updates(w, updates), s

    _, state1, _ = jol_step(w0, state0)
    counts = (int(state1.n_iter), int(state1.func_evals))
    assert search == "wolfe" or counts[0] == MAX_ITER, counts
    # as many optax iterations as jol/torch took (the strong-Wolfe step may stop early)
    optax_run = jax.jit(lambda w, s: jax.lax.fori_loop(0, counts[0], one, (w, s)))
    ostate0 = tx.init(w0)
    optax_run = optax_run.lower(w0, ostate0).compile()
    return {
        "jol": lambda: jax.block_until_ready(jol_step(w0, state0)),
        "optax": lambda: jax.block_until_ready(optax_run(w0, ostate0)),
        "_jol_counts": counts,
    }


def torch_step(x: np.ndarray, y: np.ndarray, search: str) -> tuple[Any, tuple[int, int]]:
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    w = torch.zeros(x.shape[1], requires_grad=True)
    kwargs = {"line_search_fn": "strong_wolfe"} if search == "wolfe" else {}
    opt = torch.optim.LBFGS(
        [w],
        lr=1,
        max_iter=MAX_ITER,
        history_size=HISTORY,
        tolerance_grad=0,
        tolerance_change=0,
        **kwargs,
    )

    def closure() -> Any:
        opt.zero_grad()
        z = xt @ w
        out = (torch.nn.functional.softplus(z) - yt * z).mean() + 0.5 * L2 * (w * w).sum()
        out.backward()
        return out

    def run() -> None:
        with torch.no_grad():
            w.zero_()
        opt.state.clear()
        opt.step(closure)

    run()
    state = opt.state[w]
    counts = (int(state["n_iter"]), int(state["func_evals"]))
    assert search == "wolfe" or counts[0] == MAX_ITER, counts
    return run, counts


def one_thread(fn: Any) -> Any:
    """``fn`` with torch on one intra-op thread (its OpenMP pool spins badly when the machine's
    cores are taken by other processes: measured 6.4 s vs 0.35 s per 10k step at load 10)."""
    import torch

    def run() -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fn()
        finally:
            torch.set_num_threads(threads)

    return run


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    info = common.machine()
    info["torch_threads"] = torch.get_num_threads()
    rows = []
    for size in args.sizes:
        x, y = make_data(size)
        for search in args.searches:
            fns = jax_steps(x, y, search)
            jol_counts = fns.pop("_jol_counts")
            fns["torch"], torch_counts = torch_step(x, y, search)
            fns["torch_1t"] = one_thread(fns["torch"])
            stats = common.interleaved(fns, args.rounds, warmup=1, budget_s=args.budget)
            counts = (jol_counts, torch_counts)
            for impl, st in stats.items():
                rows.append(
                    {
                        "size": size,
                        "n_params": SIZES[size][0],
                        "samples": SIZES[size][1],
                        "search": search,
                        "impl": impl,
                        **st,
                        "iters_evals": None if impl == "optax" else counts[impl != "jol"],
                    }
                )
            line = "  ".join(f"{k} {v['median_s'] * 1e3:.2f}" for k, v in stats.items())
            print(
                f"{size:5s} {search:6s} ms: {line}  (iterations, evaluations: jol {jol_counts}, "
                f"torch {torch_counts})",
                flush=True,
            )
    return {"machine": info, "rows": rows, "max_iter": MAX_ITER, "history_size": HISTORY}


def render(res: dict[str, Any]) -> str:
    by = {(r["size"], r["search"], r["impl"]): r for r in res["rows"]}
    table = []
    for size, search in dict.fromkeys((r["size"], r["search"]) for r in res["rows"]):
        jol, tor, tor1, opx = (by[(size, search, i)] for i in IMPLS)
        counts = [f"{r['iters_evals'][0]}, {r['iters_evals'][1]}" for r in (jol, tor)]
        table.append(
            [
                size,
                search,
                jol["median_s"] * 1e3,
                tor["median_s"] * 1e3,
                tor1["median_s"] * 1e3,
                opx["median_s"] * 1e3,
                jol["median_s"] / tor["median_s"],
                jol["median_s"] / tor1["median_s"],
                jol["median_s"] / opx["median_s"],
                " / ".join(counts),
            ]
        )
    header = [
        "params",
        "search",
        "jol ms",
        "torch ms",
        "torch 1 thread ms",
        "optax ms",
        "jol/torch",
        "jol/torch 1 thread",
        "jol/optax",
        "iterations, evals: jol / torch",
    ]
    return "\n".join(
        [
            "## bench_lbfgs: one L-BFGS step (max_iter 20, history 10; median ms; float32)",
            "",
            common.machine_markdown(res["machine"]),
            "Logistic regression (see `experiments/bench_lbfgs.py`); every call from the same "
            "start with a fresh state. optax runs as many `update`s as jol/torch took iterations, "
            "in one jitted loop (its zoom search makes its own evaluations). Ratios < 1: "
            "jaxopt_lab faster; torch's default thread pool spins when other processes hold the "
            "cores (load average above), hence the one-thread column.",
            "",
            common.markdown_table(header, table),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10k,1m")
    ap.add_argument("--searches", default="fixed,wolfe")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=40.0, help="seconds per configuration")
    ap.add_argument("--out", default="bench_lbfgs", help="results/{out}.json/.md")
    args = ap.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.searches = [s for s in args.searches.split(",") if s]
    for s in args.sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    res = run(args)
    md = render(res)
    js, mdp = common.write_results(args.out, res, md)
    print("\n" + md)
    print(f"\nwrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
