#!/usr/bin/env python
"""Measure how far jaxopt_lab.losses are from torch.nn.functional, per table row.

Runs every row of ``tests/loss_cases.py`` (``CASES`` x its reductions x float32/float64) through
``tests/test_losses.py``'s own functions -- one jitted value-and-VJP per dtype against torch's
value and ``autograd.grad`` -- and reports each error in the unit the test bounds it in:
``max|jax - torch| / (eps(dtype) * max|torch|)``, for the value and the input gradient. The test
asserts ``K_ULPS[loss]`` (16 or 64, derived in its comment); this prints what that bounds.

    python experiments/loss_report.py     # ~1 min; writes results/losses.{json,md}
"""

from __future__ import annotations

import math
import pathlib
import sys

import jax

# As tests/conftest.py: float64 available, strict promotion (the numbers the test sees).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import _bench_common as common  # noqa: E402
import test_losses as T  # noqa: E402


def measure() -> list[dict]:
    rows = []
    for dtype, (np_dtype, _) in T.DTYPES.items():
        results = T._jax_results(dtype)
        for case in T.CASES:
            ops = T._operands(case, dtype)
            for reduction in case.reductions:
                value, grad = results[case.id][reduction]
                ct = np.asarray(T._jax_args(case, dtype)[1][reduction])
                t_value, t_grad = T._torch_value_and_grad(case, reduction, ops, ct)
                what = f"{case.id}-{reduction}-{dtype}"
                row = {
                    "case": case.id,
                    "loss": case.loss,
                    "reduction": reduction,
                    "dtype": dtype,
                    "bound_eps": T.K_ULPS[case.loss],
                    # math.inf: measure, never fail (the test asserts the bound)
                    "value_eps": T._assert_close(value, t_value, np_dtype, math.inf, what),
                    "grad_eps": T._assert_close(grad, t_grad, np_dtype, math.inf, what),
                }
                rows.append(row)
                print(f"{what:60s} value {row['value_eps']:.3g}  grad {row['grad_eps']:.3g}")
    return rows


def summarize(rows: list[dict]) -> dict:
    by_dtype = {}
    for dtype in T.DTYPES:
        sel = [r for r in rows if r["dtype"] == dtype]
        by_dtype[dtype] = {
            "rows": len(sel),
            "max_value_eps": max(r["value_eps"] for r in sel),
            "max_grad_eps": max(r["grad_eps"] for r in sel),
            "max_eps": max(max(r["value_eps"], r["grad_eps"]) for r in sel),
            "bitwise_rows": sum(r["value_eps"] == 0 and r["grad_eps"] == 0 for r in sel),
        }
    return {
        "cases": len(T.CASES),
        "losses": len({c.loss for c in T.CASES}),
        "case_reductions": sum(len(c.reductions) for c in T.CASES),
        "by_dtype": by_dtype,
    }


def render(rows: list[dict], summary: dict, info: dict) -> str:
    per_loss = []
    for loss in dict.fromkeys(r["loss"] for r in rows):
        sel = [r for r in rows if r["loss"] == loss]
        per_loss.append(
            [loss, len({r["case"] for r in sel}), sel[0]["bound_eps"]]
            + [
                max(max(r["value_eps"], r["grad_eps"]) for r in sel if r["dtype"] == d)
                for d in T.DTYPES
            ]
        )
    totals = [
        [d, s["rows"], s["max_value_eps"], s["max_grad_eps"], s["bitwise_rows"]]
        for d, s in summary["by_dtype"].items()
    ]
    return "\n".join(
        [
            "## Losses: jaxopt_lab.losses vs torch.nn.functional (value and input gradient)",
            "",
            common.machine_markdown(info),
            f"{summary['cases']} cases of tests/loss_cases.py ({summary['losses']} losses), "
            f"{summary['case_reductions']} case x reduction rows per dtype. Error unit: "
            "max|jax - torch| / (eps(dtype) * max|torch|); the bound is tests/test_losses.py's "
            "K_ULPS.",
            "",
            common.markdown_table(
                ["dtype", "rows", "max value error", "max grad error", "rows exactly equal"],
                totals,
            ),
            "",
            common.markdown_table(
                ["loss", "cases", "bound (eps)"] + [f"max error {d}" for d in T.DTYPES],
                per_loss,
            ),
        ]
    )


def main() -> int:
    info = common.machine()
    rows = measure()
    summary = summarize(rows)
    md = render(rows, summary, info)
    payload = {"machine": info, "summary": summary, "rows": rows}
    js, mdp = common.write_results("losses", payload, md)
    print("\n" + md + f"\n\nwrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
