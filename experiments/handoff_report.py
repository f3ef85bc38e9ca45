#!/usr/bin/env python
"""Measure the torch <-> jaxopt_lab optimizer-state hand-off and write the README's figures.

Runs the comparison of ``tests/test_torch_state.py`` (its own functions, imported) for every
``HANDOFF_CASES`` row and both directions -- torch 50 steps, hand-off, jaxopt_lab 50 more vs
torch 100 steps, and the reverse -- in float64, float32 against stock torch, and float32 with a
correctly rounded torch sqrt; reports per row the relative difference (max over leaves of
max|a - b| / max|b|), the fraction of bitwise-equal numbers and the max ULP distance. The test
asserts the bounds (``F32_REL_BOUND``, ``F64_REL_BOUND``); this prints what they bound.

    python experiments/handoff_report.py     # ~1 min; writes results/handoff.{json,md}
"""

from __future__ import annotations

import pathlib
import sys

import jax

jax.config.update("jax_enable_x64", True)  # as tests/conftest.py: float64 rows need it

import jax.numpy as jnp  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import _bench_common as common  # noqa: E402
import test_torch_state as T  # noqa: E402

SETTINGS = {
    "float64": (jnp.float64, False),
    "float32 (stock torch)": (jnp.float32, False),
    "float32 (correct sqrt)": (jnp.float32, True),
}


def measure() -> list[dict]:
    rows = []
    for case in T.HANDOFF_CASES:
        for direction, run in T.DIRECTIONS.items():
            for setting, (dtype, patch) in SETTINGS.items():
                if dtype == jnp.float64 and not case.float64:
                    continue  # see HandoffCase.float64: torch's loaded state changes dtype
                if (
                    not patch
                    and dtype == jnp.float32
                    and case.drive == "closure"
                    and case.uses_sqrt
                ):
                    continue  # as the test: torch's 1-ULP sqrt steers the line search apart
                x64 = dtype == jnp.float64  # float32 with x64 off: the mode users run
                if patch:
                    with T.correctly_rounded_torch_sqrt(), jax.enable_x64(x64):
                        result = run(case, dtype)
                else:
                    with jax.enable_x64(x64):
                        result = run(case, dtype)
                rows.append({"case": case.name, "direction": direction, "setting": setting})
                rows[-1]["x64"] = x64
                rows[-1].update(result)
                print(f"{case.name:28s} {direction:15s} {setting:24s} {result}", flush=True)
    return rows


def render(rows: list[dict], info: dict) -> str:
    summary = []
    for setting in SETTINGS:
        sel = [r for r in rows if r["setting"] == setting]
        summary.append(
            [
                setting,
                max(r["rel"] for r in sel),
                min(r["bitwise_fraction"] for r in sel) * 100,
                max(r["bitwise_fraction"] for r in sel) * 100,
                max(r["max_ulp"] for r in sel),
            ]
        )
    table = [
        [r["case"], r["direction"], r["setting"], r["rel"], 100 * r["bitwise_fraction"]]
        for r in rows
    ]
    return "\n".join(
        [
            "## Optimizer-state hand-off, torch <-> jaxopt_lab (50 + 50 steps)",
            "",
            common.machine_markdown(info),
            f"Bounds asserted by tests/test_torch_state.py: float32 rel <= {T.F32_REL_BOUND:.3g}, "
            f"float64 rel <= {T.F64_REL_BOUND:.3g}.",
            "",
            common.markdown_table(
                ["setting", "max rel", "min % bitwise", "max % bitwise", "max ULP"], summary
            ),
            "",
            common.markdown_table(["case", "direction", "setting", "rel", "% bitwise"], table),
        ]
    )


def main() -> int:
    info = common.machine()
    rows = measure()
    md = render(rows, info)
    js, mdp = common.write_results("handoff", {"machine": info, "rows": rows}, md)
    print("\n" + md + f"\n\nwrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
