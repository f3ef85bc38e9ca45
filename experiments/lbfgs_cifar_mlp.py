#!/usr/bin/env python
"""L-BFGS on a small MLP on real CIFAR-10: jaxopt_lab and torch.optim.LBFGS, step by step.

    python experiments/lbfgs_cifar_mlp.py                      # ~3 min on 2 cores
    python experiments/lbfgs_cifar_mlp.py --steps 5 --images 500 --no-sequential   # a smoke run

Problem (full batch, one closure for every ``step``): the first ``--images`` (2,000) images of
CIFAR-10's training split read from ``--data`` (``../shared/data/tfds``, through
``jaxopt_lab.cifar.data.load_cifar10``), scaled as torchvision's ``ToTensor()`` (``to_float``),
average-pooled 4x4 to 8x8x3 = 192 features, each standardised over the set (all in float64, then
rounded once to the run's dtype). The model is a 192-100-10 MLP (tanh), softmax cross-entropy
plus ``0.5 * 1e-2 * (|W1|^2 + |W2|^2)``: 20,310 parameters, initialised once in float32
(seed 0) so that the float64 runs start from the same numbers. Both optimizers run
``lr=1, max_iter=5, history_size=10`` (torch's ``max_eval`` default, 6), ``--steps`` (50)
``step`` calls, for ``line_search_fn=None`` and ``"strong_wolfe"``, in float64 (JAX x64 on) and
float32 (JAX x64 off, the mode users run).

**The same loss and gradients on both sides.** The closure is one ahead-of-time compiled XLA
executable per dtype (``jax.jit(jax.value_and_grad(loss)).lower(...).compile()``), called on host
arrays: torch's closure calls it on the torch params' NumPy views and sets ``.grad`` from its
output; ``jol.lbfgs`` reaches it through ``jax.pure_callback``. Every evaluation on both sides is
logged (a hash of the params' bytes -> a hash of the loss's and gradients' bytes); the script
asserts that the executable is deterministic (repeated calls at the start point agree bit for bit)
and that every params bit pattern evaluated by both sides got the same output on both. So any
difference below is the L-BFGS arithmetic: torch's MKL ``dot``/``sum`` against XLA's reductions
(another summation order), and with x64 off nothing else (``tests/test_lbfgs.py``).

Reported per step: the params' max relative distance ``max|ours - torch| / max|torch|``, the
returned losses' relative difference, whether ``n_iter``/``func_evals`` agree; float32: the share
of bit-identical params and the largest ULP distance. Unless ``--no-sequential``, float64 and
float32 also run with both sides summing left to right (``jaxopt_lab.optim.line_search.
sequential_reductions`` and the tests' torch patches, torch's sqrt correctly rounded, subnormals
flushed as XLA:CPU does): then the runs must be equal bit for bit, and the script asserts it.

**The float64 bound (derived, then asserted).** torch and jaxopt_lab differ in float64 only by the
order in which their dot products and sums add (each result moves by at most ``gamma_n
sum|a_i b_i|``, ``gamma_n ~ n u``, ``u = 2**-53``); L-BFGS then carries such perturbations through
its iterations with a problem-dependent gain. That gain is measured here on the same problem: the
float32 run is the float64 run with perturbations of the same kind (every rounding, the dots'
included) of relative size ``u32 = 2**-24`` instead. In the linear regime the response scales with
the perturbation, so at step ``k``

    bound_k = 10 * (u64 / u32) * max_{j <= k} D32_j,  D32_j = reldist(torch f32, torch f64)

(factor 10: margin for the two orders' errors adding, and for the dots' share of D32 being
smaller than the dots' share of the float64 difference). The derivation holds while the float32
run is still a perturbation of the float64 one (``D32 < 1e-2``); past that (the runs take different
line-search branches) no bound is derived, and the table says so. The script asserts
``drift64_k <= bound_k`` at every step where it is derived.

Writes ``experiments/results/lbfgs-cifar-mlp.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

NAME = "lbfgs-cifar-mlp"
HIDDEN, CLASSES, POOL, L2 = 100, 10, 4, 1e-2
OPTIONS = {"lr": 1, "max_iter": 5, "history_size": 10}
SEARCHES = {"fixed": None, "wolfe": "strong_wolfe"}
U = {"float32": 2.0**-24, "float64": 2.0**-53}
LINEAR_REGIME = 1e-2
BOUND_MARGIN = 10.0


# ---------------------------------------------------------------------------------------------
# The problem


def load_features(data: str, images: int) -> tuple[np.ndarray, np.ndarray, str]:
    """float64 features (N, 192) and int32 labels of the first ``images`` training images."""
    from jaxopt_lab.cifar.data import load_cifar10, to_float

    ds = load_cifar10(data, split=f"train[:{images}]")
    if getattr(ds, "synthetic", False):
        raise SystemExit(f"{data}: not real CIFAR-10 ({ds.name})")
    x = to_float(ds.images, np.float64)  # (N, 32, 32, 3), torchvision's ToTensor() values
    n, side = len(x), 32 // POOL
    x = x.reshape(n, side, POOL, side, POOL, 3).mean(axis=(2, 4)).reshape(n, -1)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, np.asarray(ds.labels, np.int32), ds.name


def init_params(features: int) -> list[np.ndarray]:
    """float32 leaves [W1, b1, W2, b2] (torch's parameter order)."""
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal((features, HIDDEN)) / np.sqrt(features)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        (rng.standard_normal((HIDDEN, CLASSES)) / np.sqrt(HIDDEN)).astype(np.float32),
        np.zeros(CLASSES, np.float32),
    ]


def loss_fn(params: list[Any], x: Any, y: Any) -> Any:
    import jax
    import jax.numpy as jnp

    w1, b1, w2, b2 = params
    logits = jnp.tanh(x @ w1 + b1) @ w2 + b2
    nll = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    return nll + 0.5 * L2 * (jnp.sum(w1 * w1) + jnp.sum(w2 * w2))


class Closure:
    """The one compiled loss-and-gradient both sides call, with a log of every evaluation."""

    def __init__(self, x: np.ndarray, y: np.ndarray, params: list[np.ndarray]) -> None:
        import jax

        self.dtype = params[0].dtype
        self.x, self.y = jax.device_put(x.astype(self.dtype)), jax.device_put(y)
        spec = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params]
        lowered = jax.jit(jax.value_and_grad(loss_fn)).lower(spec, self.x, self.y)
        self.executable = lowered.compile()
        self.log: dict[str, dict[bytes, bytes]] = {}

    def __call__(self, params: list[np.ndarray], side: str) -> tuple[np.ndarray, list[np.ndarray]]:
        import jax

        params = [np.ascontiguousarray(p, self.dtype) for p in params]
        with jax.enable_x64(self.dtype == np.float64):  # the mode it was compiled in
            loss, grads = self.executable(params, self.x, self.y)
        loss, grads = np.asarray(loss), [np.asarray(g) for g in grads]
        self.log.setdefault(side, {})[_digest(params)] = _digest([loss, *grads])
        return loss, grads

    def check(self, params: list[np.ndarray]) -> dict[str, Any]:
        """Deterministic at ``params``, and the same output wherever both sides evaluated."""
        outs = set()
        for _ in range(3):
            loss, grads = self(params, "check")
            outs.add(_digest([loss, *grads]))
        assert len(outs) == 1, "the compiled closure is not deterministic"
        torch_log, jol_log = self.log.get("torch", {}), self.log.get("jol", {})
        shared = torch_log.keys() & jol_log.keys()
        same = sum(torch_log[k] == jol_log[k] for k in shared)
        assert same == len(shared), f"{len(shared) - same} shared points evaluated differently"
        return {"torch_points": len(torch_log), "jol_points": len(jol_log), "shared": len(shared)}


def _digest(arrays: list[np.ndarray]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


# ---------------------------------------------------------------------------------------------
# The two optimizers


def tests_helpers() -> Any:
    """The tests' exact-comparison patches (torch's reductions left to right, correctly rounded
    sqrt, subnormals flushed) -- the same code ``tests/test_lbfgs.py`` runs."""
    sys.path.insert(0, str(ROOT / "tests"))
    import _reference
    import test_lbfgs

    return _reference, test_lbfgs


@contextlib.contextmanager
def torch_patches(sequential: bool) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if sequential:
            ref, tl = tests_helpers()
            stack.enter_context(tl.torch_sequential_reductions())
            stack.enter_context(ref.correctly_rounded_torch_sqrt())
            stack.enter_context(tl.torch_flushing_denormals())
        yield


def run_torch(
    closure: Closure, params0: list[np.ndarray], search: str, steps: int, sequential: bool, bar
) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)  # its OpenMP pool spins when other processes hold the cores
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params0]
    opt = torch.optim.LBFGS(tensors, line_search_fn=SEARCHES[search], **OPTIONS)

    def torch_closure() -> Any:
        loss, grads = closure([t.detach().numpy() for t in tensors], "torch")
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.from_numpy(g.copy())
        return torch.from_numpy(loss.copy())

    out = []
    for _ in range(steps):
        with torch_patches(sequential):
            loss = opt.step(torch_closure)
        state = opt.state[tensors[0]]
        flat = np.concatenate([t.detach().numpy().ravel() for t in tensors])
        out.append(_record(flat, loss, state["n_iter"], state["func_evals"]))
        bar.update(1)
    return out


def run_jol(
    closure: Closure, params0: list[np.ndarray], search: str, steps: int, sequential: bool, bar
) -> list[dict[str, Any]]:
    import jax

    import jaxopt_lab as jol
    from jaxopt_lab.optim.line_search import sequential_reductions

    dtype = closure.dtype
    with jax.enable_x64(dtype == np.float64):
        params = [jax.numpy.asarray(p) for p in params0]
        shapes = (
            jax.ShapeDtypeStruct((), dtype),
            [jax.ShapeDtypeStruct(p.shape, dtype) for p in params0],
        )

        def host(p: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
            return closure(p, "jol")

        opt = jol.lbfgs(line_search_fn=SEARCHES[search], **OPTIONS)
        state = opt.init(params)
        step = jax.jit(lambda p, s: opt.step(p, s, lambda q: jax.pure_callback(host, shapes, q)))
        with sequential_reductions() if sequential else contextlib.nullcontext():
            step = step.lower(params, state).compile()
        out = []
        for _ in range(steps):
            params, state, loss = step(params, state)
            flat = np.concatenate([np.asarray(p).ravel() for p in params])
            out.append(_record(flat, loss, state.n_iter, state.func_evals))
            bar.update(1)
    return out


def _record(flat: np.ndarray, loss: Any, n_iter: Any, func_evals: Any) -> dict[str, Any]:
    return {"params": flat.copy(), "loss": float(loss), "counters": (int(n_iter), int(func_evals))}


# ---------------------------------------------------------------------------------------------
# Comparison


def reldist(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) or 1.0))


def compare(ours: list[dict], theirs: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        row = {
            "step": k + 1,
            "params_rel": reldist(a["params"], b["params"]),
            "loss_rel": abs(a["loss"] - b["loss"]) / (abs(b["loss"]) or 1.0),
            "loss_torch": b["loss"],
            "counters_equal": a["counters"] == b["counters"],
            "counters": [a["counters"], b["counters"]],
        }
        if a["params"].dtype == np.float32:
            u = tests_helpers()[0].ulp_distance(a["params"], b["params"])
            row["bitwise_pct"] = 100.0 * float(np.mean(u == 0))
            row["max_ulp"] = int(u.max())
            row["p99_ulp"] = float(np.percentile(u, 99))
            row["loss_bitwise"] = a["loss"] == b["loss"]
        rows.append(row)
    return rows


def float64_bound(f64: list[dict], d32: list[float]) -> None:
    """Adds ``bound`` (None where the float32 run left the linear regime) and asserts it."""
    worst = 0.0
    for row, d in zip(f64, d32, strict=True):
        worst = max(worst, d)
        derived = worst < LINEAR_REGIME
        row["d32"] = d
        row["bound"] = BOUND_MARGIN * (U["float64"] / U["float32"]) * worst if derived else None
        # the constant the model needs here: drift64 / ((u64 / u32) * max D32), <= 10 asserted
        row["ratio"] = row["params_rel"] / ((U["float64"] / U["float32"]) * worst or 1.0)
        if derived:
            assert row["params_rel"] <= row["bound"], (row["step"], row["params_rel"], row["bound"])


# ---------------------------------------------------------------------------------------------
# Driver, report


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    from tqdm import tqdm

    # x64 on globally, as in the tests: jax.pure_callback's host thread checks the callback's
    # float64 results under the global mode. The float32 runs trace with x64 off (run_jol).
    jax.config.update("jax_enable_x64", True)

    x, y, name = load_features(args.data, args.images)
    params32 = init_params(x.shape[1])
    params = {"float32": params32, "float64": [p.astype(np.float64) for p in params32]}
    closures = {}
    for dtype, ps in params.items():
        with jax.enable_x64(dtype == "float64"):
            closures[dtype] = Closure(x, y, ps)
    plan = [(s, d, False) for s in args.searches for d in ("float64", "float32")]
    if args.sequential:
        plan += [(s, d, True) for s in args.searches for d in ("float64", "float32")]
    runs: dict[str, Any] = {}
    trajectories: dict[tuple, list[dict]] = {}
    t0 = time.perf_counter()
    with tqdm(total=2 * args.steps * len(plan), desc="L-BFGS steps", unit="step") as bar:
        for search, dtype, sequential in plan:
            key = f"{search}-{dtype}{'-sequential' if sequential else ''}"
            bar.set_postfix_str(key)
            c = closures[dtype]
            c.log.clear()
            theirs = run_torch(c, params[dtype], search, args.steps, sequential, bar)
            ours = run_jol(c, params[dtype], search, args.steps, sequential, bar)
            identity = c.check(params[dtype])
            trajectories[(search, dtype, sequential)] = theirs
            rows = compare(ours, theirs)
            if sequential:  # the same summation order: bit for bit, float64 and float32
                assert all(r["params_rel"] == 0 and r["loss_rel"] == 0 for r in rows), key
                assert all(r["counters_equal"] for r in rows), key
            runs[key] = {
                "search": search,
                "dtype": dtype,
                "sequential": sequential,
                "closure": identity,
                "steps": rows,
            }
    for search in args.searches:
        t32, t64 = (
            trajectories[(search, "float32", False)],
            trajectories[(search, "float64", False)],
        )
        d32 = [reldist(a["params"], b["params"]) for a, b in zip(t32, t64, strict=True)]
        float64_bound(runs[f"{search}-float64"]["steps"], d32)
    return {
        "machine": common.machine(),
        "data": name,
        "images": args.images,
        "features": int(x.shape[1]),
        "n_params": int(sum(p.size for p in params32)),
        "options": OPTIONS,
        "l2": L2,
        "steps": args.steps,
        "seconds": time.perf_counter() - t0,
        "runs": runs,
    }


def _sci(v: float | None) -> str:
    return "—" if v is None else f"{v:.1e}"


def render(res: dict[str, Any]) -> str:
    summary, detail = [], []
    for r in res["runs"].values():
        steps = r["steps"]
        first = next((s["step"] for s in steps if s["params_rel"] > 0 or s["loss_rel"] > 0), None)
        last = steps[-1]
        f32 = r["dtype"] == "float32"
        bounds = [s["bound"] for s in steps if s.get("bound") is not None]
        summary.append(
            [
                r["search"],
                r["dtype"] + (" x64 off" if f32 else ""),
                "left to right" if r["sequential"] else "MKL / XLA",
                first or "none",
                _sci(max(s["params_rel"] for s in steps)),
                _sci(last["params_rel"]),
                _sci(max(s["loss_rel"] for s in steps)),
                f"{min(s['bitwise_pct'] for s in steps):.1f}" if f32 else "",
                f"{max(s['p99_ulp'] for s in steps):g} / {max(s['max_ulp'] for s in steps)}"
                if f32
                else "",
                f"{sum(s['counters_equal'] for s in steps)}/{len(steps)}",
                (
                    f"{sum(s.get('bound') is not None for s in steps)}/{len(steps)} steps"
                    f" (max {_sci(max(bounds))}; largest drift / (bound / 10) "
                    f"{max(s['ratio'] for s in steps if s.get('bound') is not None):.2f})"
                    if bounds
                    else ("not derived" if not (f32 or r["sequential"]) else "")
                ),
                f"{r['closure']['shared']}/{r['closure']['torch_points']}",
            ]
        )
    header = [
        "search",
        "dtype",
        "reductions",
        "first differing step",
        "max params rel",
        "params rel at last step",
        "max loss rel",
        "min % bitwise",
        "ULP: max p99 / max",
        "counters equal",
        "float64 bound held",
        "closure points shared",
    ]
    picks = sorted({1, 2, 5, 10, 20, 30, 40, res["steps"]} & set(range(1, res["steps"] + 1)))
    for key, r in res["runs"].items():
        if r["sequential"]:
            continue
        cells = []
        for s in r["steps"]:
            if s["step"] not in picks:
                continue
            cell = f"{_sci(s['params_rel'])} / {_sci(s['loss_rel'])}"
            if r["dtype"] == "float32":
                cell += f" ({s['bitwise_pct']:.0f}%, {s['max_ulp']} ULP)"
            elif "bound" in s:
                cell += f" ≤ {_sci(s['bound'])} (D32 {_sci(s['d32'])})"
            cells.append(cell)
        detail.append([key, *cells])
    m = res["machine"]
    return "\n".join(
        [
            f"## {NAME}: L-BFGS on a {res['n_params']:,}-parameter MLP, real CIFAR-10 "
            f"({res['images']:,} images, full batch), jaxopt_lab vs torch.optim.LBFGS",
            "",
            common.machine_markdown(m),
            f"Data: {res['data']}; {res['features']} pooled, standardised features; "
            f"options {res['options']}; {res['steps']} `step` calls; both sides call one "
            "compiled loss-and-gradient executable (checked: deterministic, and identical output "
            "at every params bit pattern both sides evaluated: 'closure points shared'). "
            "Relative distances: params `max|ours - torch| / max|torch|`, losses "
            "`|ours - torch| / |torch|`. float64 bound: `10 * (u64/u32) * max_{j<=k} D32_j`, "
            "D32 = torch float32 vs torch float64, derived while D32 < 1e-2 "
            "(see `experiments/lbfgs_cifar_mlp.py`). Generated by "
            "`python experiments/lbfgs_cifar_mlp.py` "
            f"in {res['seconds']:.0f} s.",
            "",
            common.markdown_table(header, summary),
            "",
            "Per step: params rel / loss rel (float32: % bitwise params, max ULP; float64: the "
            "derived bound and D32).",
            "",
            common.markdown_table(["run", *(f"step {p}" for p in picks)], detail),
        ]
    )


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, r in res["runs"].items():
        if r["sequential"]:
            continue
        steps = [s["step"] for s in r["steps"]]
        ax.semilogy(steps, [max(s["params_rel"], 1e-18) for s in r["steps"]], label=key)
        if r["dtype"] == "float64":
            bound = [s["bound"] if s["bound"] is not None else np.nan for s in r["steps"]]
            ax.semilogy(steps, bound, "--", label=f"{key} bound", alpha=0.7)
    ax.set_xlabel("step() call")
    ax.set_ylabel("max|ours - torch| / max|torch| (floor 1e-18)")
    ax.set_title(f"L-BFGS, {res['n_params']:,}-param MLP, CIFAR-10 ({res['images']} images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    global L2
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tfds"))
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--searches", default="fixed,wolfe")
    ap.add_argument("--no-sequential", dest="sequential", action="store_false")
    ap.add_argument("--max-iter", type=int, default=OPTIONS["max_iter"])
    ap.add_argument("--l2", type=float, default=L2)
    ap.add_argument("--out", default=NAME, help="results/{out}.json/.md/.png")
    args = ap.parse_args(argv)
    args.searches = [s for s in args.searches.split(",") if s]
    L2 = args.l2
    OPTIONS["max_iter"] = args.max_iter
    for s in args.searches:
        if s not in SEARCHES:
            ap.error(f"unknown search {s!r}; choose from {', '.join(SEARCHES)}")
    res = run(args)
    md = render(res)
    js, mdp = common.write_results(args.out, res, md)
    plot(res, js.with_suffix(".png"))
    print("\n" + md)
    print(f"\nwrote {js}, {mdp} and {js.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
