"""Measure jaxopt_lab's float32 bitwise parity with torch.optim and write the README table.

For each optimizer (ill-scaled gradients, 1,000 steps; ``REPORT_CASES``: a chosen configuration
for SGD, Adam, AdamW, RMSprop and Adagrad, the first row of ``tests/cases.py`` -- torch's defaults
-- for every other algorithm of ``jaxopt_lab.registry`` that has rows there), compares params
after the last step with torch's single-tensor path, unpatched and with a correctly rounded sqrt,
and reports the fraction of bitwise-equal elements and the max ULP distance. It also measures, over
every row of ``tests/cases.py`` (200 steps), the largest relative drift against torch's foreach
path (whose MKL sqrt cannot be patched), which sets ``FLOAT32_FOREACH_RTOL``.

    python experiments/parity_report.py [--steps 1000] [--out experiments/results]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys

import jax

jax.config.update("jax_enable_x64", True)  # before the case table builds its float64 inputs

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from _reference import (  # noqa: E402
    bitwise_equal,
    correctly_rounded_torch_sqrt,
    jax_trajectory,
    torch_trajectory,
    ulp_distance,
)
from cases import CASES, Case  # noqa: E402

from jaxopt_lab import registry  # noqa: E402

# A chosen configuration for each of the first five algorithms. An id names one configuration
# everywhere (tests/_reference.py shares a jitted update per id): SGD's is tests/cases.py's row.
REPORT_CASES: list[Case] = [
    next(c for c in CASES if c.id == "sgd-mom-damp-wd"),
    Case("adam", {"lr": 1e-3}),
    Case("adamw", {"lr": 1e-3, "amsgrad": True}, "amsgrad"),
    Case("rmsprop", {"lr": 1e-3, "centered": True, "momentum": 0.9}, "centered-momentum"),
    Case("adagrad", {"lr": 0.1, "lr_decay": 0.01}, "lr-decay"),
]
# ... and the first row (torch's defaults) of every other algorithm with rows there. Muon,
# SparseAdam and L-BFGS have their own tables (tests/test_muon.py, test_sparse_adam.py,
# test_lbfgs.py).
REPORT_CASES += [
    next(c for c in CASES if c.algo == a.name)
    for a in registry.ALGORITHMS
    if a.name not in {c.algo for c in REPORT_CASES} and any(c.algo == a.name for c in CASES)
]


def _last_params(traj: list) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in traj[-1]["params"]])


def bitwise_rows(steps: int) -> list[dict]:
    rows = []
    for case in REPORT_CASES:
        with jax.enable_x64(False):  # float32 in the mode users run
            ours = _last_params(jax_trajectory(case, np.float32, steps))
        torch_plain = _last_params(torch_trajectory(case, np.float32, steps, foreach=False))
        with correctly_rounded_torch_sqrt():
            torch_crsqrt = _last_params(torch_trajectory(case, np.float32, steps, foreach=False))
        rows.append(
            {
                "case": case.id,
                "steps": steps,
                "elements": int(ours.size),
                "bitwise_vs_torch": float(np.mean(bitwise_equal(ours, torch_plain))),
                "max_ulp_vs_torch": float(np.max(ulp_distance(ours, torch_plain))),
                "bitwise_vs_torch_correct_sqrt": float(np.mean(bitwise_equal(ours, torch_crsqrt))),
                "max_ulp_vs_torch_correct_sqrt": float(np.max(ulp_distance(ours, torch_crsqrt))),
            }
        )
        print(rows[-1], flush=True)
    return rows


def torch_sqrt_error_rate(n: int = 1_000_000) -> dict[str, float]:
    """Fraction of inputs where torch's CPU sqrt differs from NumPy's correctly rounded one."""
    rng = np.random.default_rng(0)
    out = {}
    for dtype in (np.float32, np.float64):
        x = (rng.uniform(size=n) * 100).astype(dtype)
        ours = np.sqrt(x)
        theirs = torch.from_numpy(x).sqrt().numpy()
        out[np.dtype(dtype).name] = float(np.mean(~bitwise_equal(ours, theirs)))
    return out


def foreach_drift(steps: int = 200) -> dict[str, float]:
    worst: dict[str, float] = {}
    for case in CASES:
        with jax.enable_x64(False):
            ours = jax_trajectory(case, np.float32, steps)
        theirs = torch_trajectory(case, np.float32, steps, foreach=True)
        for mine, ref in zip(ours, theirs, strict=True):
            for field in ref:
                for a, b in zip(mine[field], ref[field], strict=True):
                    if b is None:  # a key torch keeps for some params only (Adafactor)
                        continue
                    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
                    err = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)) / scale
                    worst[case.algo] = max(worst.get(case.algo, 0.0), err)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args()
    sqrt_rates = torch_sqrt_error_rate()
    print("torch sqrt != correctly rounded:", sqrt_rates, flush=True)
    rows = bitwise_rows(args.steps)
    drift = foreach_drift()
    print("foreach drift (max rel, 200 steps):", drift)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "torch": torch.__version__,
    }
    (out / "parity.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "torch_sqrt_error_rate": sqrt_rates,
                "bitwise": rows,
                "foreach_drift": drift,
            },
            indent=2,
        )
    )
    lines = [
        f"float32, {args.steps} steps, ill-scaled gradients; jax {jax.__version__}, "
        f"torch {torch.__version__} CPU",
        "",
        "| case | bitwise vs torch | max ULP vs torch | bitwise vs torch w/ correct sqrt "
        "| max ULP |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {100 * r['bitwise_vs_torch']:.1f}% | {r['max_ulp_vs_torch']:.0f} "
            f"| {100 * r['bitwise_vs_torch_correct_sqrt']:.1f}% "
            f"| {r['max_ulp_vs_torch_correct_sqrt']:.0f} |"
        )
    lines += [
        "",
        "torch's CPU sqrt differs from the correctly rounded result on "
        + ", ".join(f"{100 * v:.1f}% of {k}" for k, v in sqrt_rates.items())
        + " inputs (1e6 uniform samples in [0, 100)).",
    ]
    lines += ["", "foreach path, max relative drift over 200 steps (all cases of tests/cases.py):"]
    lines += [f"- {k}: {v:.2e}" for k, v in drift.items()]
    (out / "parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
