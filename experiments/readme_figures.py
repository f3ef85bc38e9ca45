#!/usr/bin/env python
"""Every count and measured figure of README.md, computed from code and committed results.

The README keeps its prose by hand; each figure sits between markers that this script owns::

    <!-- figures:NAME -->generated text<!-- /figures:NAME -->

(on one line, or with the markers on lines of their own around a generated table). ``NAME`` is a
function of :data:`BLOCKS` below: counts come from the test tables themselves (imported, never
run), measured figures from the committed files under ``experiments/results/`` (written by the
``experiments/*.py`` scripts named next to each block). Nothing here trains, times or runs torch.

    python experiments/readme_figures.py           # rewrite the blocks of README.md, RESULTS.md
    python experiments/readme_figures.py --check   # exit 1 with a diff if any block is stale

``tests/test_readme.py`` runs ``--check``. A marker without a function, a function without a
marker, or an unreadable source is an error, never a silently kept old number.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
RESULTS = ROOT / "experiments" / "results"
DOCS = [ROOT / "README.md", RESULTS / "RESULTS.md"]

BLOCKS: dict[str, Callable[[], str]] = {}


def block(fn: Callable[[], str]) -> Callable[[], str]:
    """Register ``fn`` as the generator of the block named like it (``_`` -> ``-``)."""
    BLOCKS[fn.__name__.replace("_", "-")] = fn
    return fn


# ---------------------------------------------------------------------------------------------
# Sources: the test modules (imported as pytest imports them) and the committed results.


def tests_module(name: str) -> Any:
    """A module of ``tests/``, imported with the suite's JAX settings (``tests/conftest.py``)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
        importlib.import_module("conftest")
    return importlib.import_module(name)


def result(path: str) -> Any:
    """A committed results file under ``experiments/results/`` (JSON)."""
    return json.loads((RESULTS / path).read_text())


def function_node(module: str, function: str) -> ast.FunctionDef:
    tree = ast.parse((TESTS / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return node
    raise LookupError(f"tests/{module}.py has no function {function}")


def call_args(module: str, function: str, callee: str) -> list[Any]:
    """Literal positional arguments of the first call to ``callee`` inside a test function."""
    for node in ast.walk(function_node(module, function)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == callee:
            return [ast.literal_eval(a) for a in node.args if not isinstance(a, ast.Attribute)]
    raise LookupError(f"tests/{module}.py::{function} calls no {callee}")


def compared_constants(module: str, function: str, name: str) -> dict[str, Any]:
    """``{operator: constant}`` of the comparisons ``name OP constant`` in a test function."""
    ops = {ast.LtE: "<=", ast.Lt: "<", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "=="}
    found = {}
    for node in ast.walk(function_node(module, function)):
        if isinstance(node, ast.Compare) and ast.unparse(node.left) == name:
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(right, ast.Constant):
                    found[ops[type(op)]] = right.value
    if not found:
        raise LookupError(f"tests/{module}.py::{function} compares {name} with no constant")
    return found


def literal_in(module: str, function: str, pattern: str) -> str:
    """The first group of ``pattern`` in the source of a test function (e.g. a bound it asserts)."""
    node = function_node(module, function)
    source = ast.get_source_segment((TESTS / f"{module}.py").read_text(), node) or ""
    m = re.search(pattern, source)
    if m is None:
        raise LookupError(f"tests/{module}.py::{function} has no {pattern!r}")
    return m.group(1)


# ---------------------------------------------------------------------------------------------
# Formatting.


def _short_exponent(text: str) -> str:
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text).replace("e+", "e")


def g(x: float) -> str:
    """Python's shortest form, exponents without padding: ``1e-12``, ``1e-9``, ``0.01``."""
    return _short_exponent(f"{x:g}")


def power_of_ten(x: float) -> str:
    """``1e-3`` for 0.001; other numbers as :func:`g`."""
    exponent = round(math.log10(x))
    return f"1e{exponent}" if x == 10.0**exponent else g(x)


def sig(x: float, digits: int = 3) -> str:
    """``digits`` significant figures; numbers of 100 and more without a decimal point."""
    if x == 0:
        return "0"
    if abs(x) >= 100 and digits <= 3:
        return f"{x:.0f}"
    return _short_exponent(f"{x:.{digits}g}")


def sci(x: float) -> str:
    """Two significant figures, as the README quotes distances (``5.8e-16``; ``0`` for 0)."""
    return "0" if x == 0 else _short_exponent(f"{x:.1e}")


def span(values: Iterable[float], fmt: Callable[[float], str] = lambda x: f"{x:.2f}") -> str:
    values = list(values)
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def count(n: int) -> str:
    return f"{n:,}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Invalid inputs: counted from the tests themselves.
#
# An invalid input is one expected failure a test checks: a ``pytest.raises(...)`` or an
# ``assert X.returncode == N`` with N != 0 (the CLI's errors), once per parametrized case that
# runs (``skip``/``xfail`` cases not counted). Every module-level test function of tests/ is
# scanned, so new tables count themselves; the functions below re-run rows already counted.

AREAS = {  # test module -> README area; any other module: "optimizers"
    "test_losses": "losses (`tests/loss_cases.py::INVALID`)",
    "test_schedules": "schedules (`tests/schedule_cases.py::BAD`)",
    "test_data": "data sources and calls",
    "test_models": "model weight transfer",
    "test_torch_state": "torch hand-off",
    "test_checkpoint": "checkpoints",
    "test_crosscheck": "cross-check and its CLI (flags, schedules, output folder, resume)",
    "test_train": "training loop (batch sharding, resume)",
}
OPTIMIZERS_AREA = "optimizers (`tests/cases.py::INVALID` and the optimizer tests)"
NOT_COUNTED = {
    ("test_losses", "test_invalid_input_under_jit"): "test_invalid_input_raises's rows under jit",
    ("test_losses", "test_tolerance_is_not_vacuous"): "checks the test's tolerance, not an input",
    ("test_schedules", "test_invalid_input_in_torch"): "schedule_cases.BAD's rows run in torch",
    ("test_swa_utils", "test_invalid_rows_are_torchs_errors"): "cases.INVALID's rows in torch",
    ("test_crosscheck", "test_cli_error_is_the_exit_status_of_a_fresh_process"): "a CLI_ERRORS "
    "row again, as a real process",
}


def _expected_failures(fn: ast.FunctionDef) -> int:
    n = 0
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "pytest.raises":
            n += 1
        elif (
            isinstance(node, ast.Compare)
            and ast.unparse(node.left).endswith(".returncode")
            and isinstance(node.ops[0], ast.Eq)
            and not (
                isinstance(node.comparators[0], ast.Constant) and node.comparators[0].value == 0
            )
        ):
            n += 1
    return n


def _cases(fn: Callable) -> int:
    """Parametrized cases of a test function that run (not marked skip or xfail)."""
    n = 1
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            values = list(mark.args[1])
            n *= sum(
                not any(m.name in ("skip", "xfail") for m in getattr(v, "marks", ()))
                for v in values
            )
    return n


def invalid_inputs() -> dict[str, int]:
    """Invalid inputs per README area, optimizers first."""
    by_area: dict[str, int] = {OPTIMIZERS_AREA: 0, **dict.fromkeys(AREAS.values(), 0)}
    seen = set()
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and _expected_failures(node):
                raise NotImplementedError(f"{path.name}::{node.name}: test classes not counted")
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
                continue
            per_case = _expected_failures(node)
            key = (path.stem, node.name)
            if not per_case or key in NOT_COUNTED:
                seen.add(key)
                continue
            n = per_case * _cases(getattr(tests_module(path.stem), node.name))
            by_area[AREAS.get(path.stem, OPTIMIZERS_AREA)] += n
    stale = set(NOT_COUNTED) - seen
    if stale:
        raise LookupError(f"NOT_COUNTED names test functions that are gone: {sorted(stale)}")
    return by_area


@block
def invalid_counts() -> str:
    by_area = invalid_inputs()
    parts = ", ".join(f"{area} {n}" for area, n in by_area.items() if n)
    return f"**{count(sum(by_area.values()))} invalid inputs** with their expected error: {parts}"


@block
def python_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    (version,) = re.findall(r'requires-python = ">=([\d.]+)"', text)
    return f"Python {version}+"


@block
def probe_timeout() -> str:
    from jaxopt_lab.cifar import data

    return f"{g(data.PROBE_TIMEOUT_S)}-second"


@block
def parity_f64_bound() -> str:
    return literal_in("test_parity", "test_float64_trajectory", r"err <= ([\d.e-]+) \* scale")


@block
def schedule_epoch_bound() -> str:
    test = "test_scheduled_training_matches_torch"
    return literal_in("test_schedules", test, r"<= ([\d.e-]+) \* np.max")


@block
def property_scales() -> str:
    text = (TESTS / "test_properties.py").read_text()
    (values,) = re.findall(r"_scales = st.sampled_from\(\[(.*?)\]\)", text)
    scales = [float(v) for v in values.split(",")]
    return f"{power_of_ten(min(scales))}…{power_of_ten(max(scales))}"


# ---------------------------------------------------------------------------------------------
# Optimizers, kernels, parity.


@block
def kernel_thresholds() -> str:
    from jaxopt_lab.optim import native as _native

    names = {
        "jaxopt_lab_adam_f32": "Adam/AdamW",
        "jaxopt_lab_amsgrad_f32": "AMSGrad",
        "jaxopt_lab_sgd_momentum_f32": "momentum SGD",
        "jaxopt_lab_radam_f32": "RAdam",
        "jaxopt_lab_nadam_f32": "NAdam",
        "jaxopt_lab_adamax_f32": "Adamax",
        "jaxopt_lab_adadelta_f32": "Adadelta",
        "jaxopt_lab_rprop_f32": "Rprop",
    }
    by_size: dict[int, list[str]] = {}
    for target, size in _native.MIN_SIZE.items():
        by_size.setdefault(size, []).append(names.get(target, target))
    parts = [
        f"{'/'.join(algos)} (float32 leaves of ≥ {count(n)} elements)"
        for n, algos in sorted(by_size.items())
    ]
    return " and ".join(parts)


def _update_rows() -> dict[tuple[str, str, str], dict]:
    return {(r["size"], r["optimizer"], r["impl"]): r for r in result("bench_update.json")["rows"]}


@block
def xla_vs_kernel() -> str:
    rows = _update_rows()
    ms = {impl: rows["100m", "adam", impl]["median_s"] * 1e3 for impl in ("jol", "jol_xla")}
    return (
        f"a 100M-parameter Adam step takes {sig(ms['jol_xla'])} ms in XLA:CPU's own loops and "
        f"{sig(ms['jol'])} ms in one pass (`bench_update.md`)"
    )


@block
def parity_steps() -> str:
    return str(tests_module("test_parity").STEPS)


@block
def double_single_steps() -> str:
    test = "test_double_single_scalars_round_like_python"
    start, stop, step = call_args("test_dtypes_grad", test, "np.arange")
    return f"every one of {count(len(range(start, stop, step)))} sampled steps up to {count(stop)}"


@block
def torch_sqrt_error_rate() -> str:
    rate = result("parity.json")["torch_sqrt_error_rate"]
    return (
        f"{100 * rate['float32']:.1f}% of float32 inputs here ({100 * rate['float64']:.1f}% of "
        f"float64; `experiments/parity_report.py`)"
    )


@block
def parity_setup() -> str:
    data = result("parity.json")
    rows = data["bitwise"]
    steps, elements = {r["steps"] for r in rows}, {r["elements"] for r in rows}
    (steps,), (elements,) = steps, elements
    ref = tests_module("_reference")
    lo, hi = call_args("_reference", "grad_stream", "rng.uniform")[:2]
    return (
        f"float32, {count(steps)} steps, {count(elements)} parameters in {len(ref.SHAPES)} leaves, "
        f"gradients 1e{lo}…1e{hi} with sign flips and zeros; jax {data['meta']['jax']}, "
        f"torch {data['meta']['torch']}"
    )


@block
def parity_table() -> str:
    rows = [
        [
            r["case"],
            f"{100 * r['bitwise_vs_torch']:.1f}%",
            sig(r["max_ulp_vs_torch"]),
            f"{100 * r['bitwise_vs_torch_correct_sqrt']:.1f}%",
        ]
        for r in result("parity.json")["bitwise"]
    ]
    header = ["case", "bitwise vs torch", "max ULP vs torch", "bitwise vs torch with correct sqrt"]
    return table(header, rows)


def _signature(fn: Callable) -> str:
    """``name(a=1, b=2, *, c=False)`` without torch's ignored implementation switches."""
    switches = {"foreach", "fused", "capturable", "differentiable"}
    parts, star = [], False
    for p in inspect.signature(fn).parameters.values():
        if p.name in switches:
            continue
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}")
    return f"{fn.__name__}({', '.join(parts)})"


@block
def optimizer_table() -> str:
    """One row per ``jaxopt_lab.registry`` algorithm: signature, torch class, state, optax."""
    from jaxopt_lab import registry

    cases = tests_module("cases")
    rows = []
    for a in registry.ALGORITHMS:
        n_cases = sum(c.algo == a.name for c in cases.CASES)
        kinds = ["float64", "float32 x64 off/on", "schedules", "special values"]
        if a.name not in cases.NOT_ELEMENTWISE:
            kinds.insert(3, "bf16/f16")
        parity = (
            f"{n_cases} rows × ({', '.join(kinds)})"
            if n_cases
            else f"own table (`tests/test_{a.name}.py`)"
        )
        optax = "none"
        if a.optax:
            optax = f"`{a.optax}`" + (" (same math)" if a.optax_exact else " (differs)")
        rows.append(
            [
                f"`{_signature(a.factory)}`",
                f"`{a.torch_class}`",
                ", ".join(f"`{k}`" for k in a.state_keys),
                optax,
                parity,
            ]
        )
    header = ["jaxopt_lab", "torch.optim", "state fields (torch's keys)", "optax", "parity tests"]
    return table(header, rows)


@block
def lbfgs_parity() -> str:
    """L-BFGS's rows (``tests/test_lbfgs.py``): problems, bitwise modes, bounds vs MKL torch."""
    mod = tests_module("test_lbfgs")
    rows = mod.ROWS
    problems = sorted({r.problem for r in rows})
    bounds = {d: [r.rtol[d] for r in rows if r.rtol.get(d) is not None] for d in mod.DTYPES}
    compared = {d: sum(r.rtol.get(d) is not None for r in rows) for d in mod.DTYPES}
    modes = ", ".join(
        d if d == "float64" else f"{d} with x64 {'on' if x else 'off'}" for d, x in mod._MODES
    )
    long = sorted({r.steps for r in rows if r.steps != mod.STEPS})
    longer = sum(r.steps != mod.STEPS for r in rows)
    return (
        f"{len(rows)} rows ({', '.join(problems)}; fixed step and strong Wolfe, wrapping "
        f"histories, the stop rules), {mod.STEPS} `step` calls each"
        + (f" ({longer} long strong-Wolfe rows: {', '.join(map(str, long))})" if long else "")
        + ". With both sides summing "
        "left to right, params, losses, every state key and the counters are equal **bit for "
        f"bit** in {modes}. Against torch as shipped (MKL's reduction order) "
        f"the params stay within {sci(max(bounds['float64']))} of max|torch| in float64 (all "
        f"{compared['float64']} rows) and within {sci(max(bounds['float32']))} in float32 "
        f"({compared['float32']} rows; the others diverge chaotically from the first ULP, so "
        "they are compared bit for bit only)."
    )


@block
def parity_tests() -> str:
    cases = tests_module("cases")
    parity = tests_module("test_parity")
    algos = len({c.algo for c in cases.CASES})
    return (
        f"at every one of {parity.STEPS} steps for all {len(cases.CASES)} configurations of "
        f"`tests/cases.py` ({algos} algorithms; every option and meaningful combination), and "
        f"{len(cases.SCHEDULED)} scheduled variants of them ({cases.SCHEDULED_STEPS} steps)"
    )


@block
def optax_differences_setup() -> str:
    (steps,) = call_args("test_optax_differences", "test_optax_row", "grad_stream")[:1]
    bounds = compared_constants("test_optax_differences", "test_optax_row", "rel")
    n = len(tests_module("test_optax_differences").ROWS)
    return (
        f'{n} rows, {steps} float64 steps each; "same" rows agree to {g(bounds["<="])}, '
        f'"differs" rows disagree by > {g(bounds[">"])}'
    )


@block
def optax_effects() -> str:
    """The measured-effect rows (``EFFECTS``) of ``tests/test_optax_differences.py``."""
    mod = tests_module("test_optax_differences")
    rows = []
    for e in mod.EFFECTS:
        name, _, what = e.id.partition(": ")
        rows.append([f"`{name}`", f"`{e.algo}`", what.replace("|", "\\|")])
    return table(["row", "jaxopt_lab", "how optax differs (measured; a test each)"], rows)


# ---------------------------------------------------------------------------------------------
# Schedules and losses.


@block
def schedule_horizon() -> str:
    from jaxopt_lab import schedules

    default = inspect.signature(schedules.step_lr).parameters["horizon"].default
    return f"default {count(default)}"


@block
def schedule_graph_bound() -> str:
    return g(tests_module("test_schedules").RTOL_GRAPH)


@block
def loss_figures() -> str:
    data = result("losses.json")["summary"]
    cases = tests_module("loss_cases").CASES
    if data["cases"] != len(cases):
        raise ValueError(
            f"losses.json measured {data['cases']} cases, tests/loss_cases.py has {len(cases)}: "
            "rerun python experiments/loss_report.py"
        )
    worst = {d: s["max_eps"] for d, s in data["by_dtype"].items()}
    return (
        f"float64 ≤ {worst['float64']:.2f} eps, float32 ≤ {worst['float32']:.2f} eps of the "
        f"largest entry, measured over {data['cases']} cases × their reductions "
        f"({data['case_reductions']} rows per dtype; `python experiments/loss_report.py` → "
        f"`results/losses.md`)"
    )


@block
def loss_tutorial() -> str:
    rows = {}
    for fn, x, target, kwargs, expected in tests_module("loss_cases").TUTORIAL:
        args = ", ".join([json.dumps(x).replace(".0", ""), json.dumps(target).replace(".0", "")])
        opts = "".join(f", {k}={v!r}" for k, v in kwargs.items()).replace("'", '"')
        rows.setdefault((fn, expected), f"`{fn}({args}{opts})` = {g(expected)}")
    return "; ".join(rows.values())


# ---------------------------------------------------------------------------------------------
# The CNN, the cross-check, training.


@block
def cnn_params() -> str:
    from jaxopt_lab.cifar import models

    return count(models.NUM_PARAMS)


@block
def cnn_logit_bound() -> str:
    import numpy as np

    k = sum(tests_module("test_models").FORWARD_REDUCTIONS)
    bound = {d: 2 * math.sqrt(k) * float(np.finfo(d).eps) / 2 for d in (np.float64, np.float32)}
    return (
        f"2·√{k}·u of the largest logit ({sci(bound[np.float64])} f64, {sci(bound[np.float32])} f32"
    )


def _bench_train() -> dict[tuple[str, int], float]:
    return {
        (r["impl"], r["batch"]): r["median_s"] * 1e3 for r in result("bench_train.json")["rows"]
    }


@block
def pooling_speed() -> str:
    ms = _bench_train()
    return f"{sig(ms['jax_nn_max_pool', 64])} ms instead of {sig(ms['jax', 64])}"


@block
def compiler_options_speed() -> str:
    ms = _bench_train()
    cores = result("bench_train.json")["machine"]["cores"]
    return (
        f"{sig(ms['jax_xla_default', 64])} → {sig(ms['jax', 64])} ms at batch 64 on {cores} cores"
    )


CROSSCHECK_RUNS = [  # committed by the commands in their summary.json
    "cifar10-sgd-f64-12steps",
    "cifar10-adam-f64-12steps",
    "cifar10-sgd-f32-20steps",
]
PAIRS = ["jaxopt_lab~torch", "jaxopt_lab~optax", "optax~torch"]


def _summary(run: str) -> dict:
    return result(f"{run}/summary.json")


@block
def lbfgs_cifar() -> str:
    """The per-batch L-BFGS cross-checks on real CIFAR-10 (float64): drift per step."""
    parts = []
    for run, name in (
        ("cifar10-lbfgs-f64-4steps", "fixed step"),
        ("cifar10-lbfgs-wolfe-f64-4steps", "strong Wolfe"),
    ):
        rows = [
            json.loads(line) for line in (RESULTS / run / "metrics.jsonl").read_text().splitlines()
        ]
        drift = [sci(r["rel_param_diff"]["jaxopt_lab~torch"]) for r in rows]
        parts.append(f"{name} ([{run}/](experiments/results/{run}/)): {' → '.join(drift)}")
    return "; ".join(parts)


@block
def lbfgs_cifar_mlp() -> str:
    """L-BFGS on a small MLP on real CIFAR-10, full batch (``experiments/lbfgs_cifar_mlp.py``)."""
    res = result("lbfgs-cifar-mlp.json")
    runs = list(res["runs"].values())
    exact = [r for r in runs if r["sequential"]]
    points = sum(r["closure"]["shared"] for r in exact)
    f64 = [r for r in runs if not r["sequential"] and r["dtype"] == "float64"]
    f32 = [r for r in runs if not r["sequential"] and r["dtype"] == "float32"]
    derived = [s for r in f64 for s in r["steps"] if s.get("bound") is not None]
    linear = min(sum(s.get("bound") is not None for s in r["steps"]) for r in f64)
    modes = sorted({r["dtype"] + (" (x64 off)" if r["dtype"] == "float32" else "") for r in exact})
    return (
        f"a {res['n_params']:,}-parameter MLP on {res['images']:,} real CIFAR-10 training "
        f"images (full batch, {res['steps']} `step` calls, fixed step and strong Wolfe; "
        "[lbfgs-cifar-mlp.md](experiments/results/lbfgs-cifar-mlp.md)): with both sides summing "
        f"left to right, bit for bit in {' and '.join(modes)} ({points:,} closure evaluations, "
        "each at bit-identical params on both sides). With "
        f"MKL's order the float64 params stay within the bound derived from the problem's own "
        f"float32-vs-float64 sensitivity for the first {linear} steps (drift ≤ "
        f"{sci(max(s['params_rel'] for s in derived))}); after that this full-batch L-BFGS is "
        "chaotic (torch's own float32 and float64 runs part by more than 1e-2) and the runs "
        f"part by up to {sci(max(s['params_rel'] for r in f64 for s in r['steps']))} in float64, "
        f"{sci(max(s['params_rel'] for r in f32 for s in r['steps']))} in float32"
    )


@block
def crosscheck_table() -> str:
    rows = []
    for run in CROSSCHECK_RUNS:
        s = _summary(run)
        flags = s["command"].split("cifar10.py ", 1)[1]
        flags = re.sub(r"--data \S+ |--out \S+|--no-\w+ ?", "", flags).strip()
        diff = s["max_rel_param_diff"]
        link = f"[{run}/](experiments/results/{run}/)"
        rows.append([f"`{flags}` ({link})", *(sci(diff[p]) for p in PAIRS)])
    return table(["run", *PAIRS], rows)


@block
def crosscheck_tolerance() -> str:
    f64 = [_summary(r) for r in CROSSCHECK_RUNS if _summary(r)["precision"] == "f64"]
    (tol,) = {s["tolerance"] for s in f64}
    return g(tol)


def _main_run() -> dict:
    return _summary("cifar10-sgd-f32-20ep")


@block
def main_job() -> str:
    s = _main_run()
    loss = s["epoch_running_loss"]["jaxopt_lab"]
    acc = s["epoch_accuracy"]["jaxopt_lab"]
    n = len(loss)
    head = " → ".join(f"{x:.1f}" for x in loss[:3])
    tail = " → ".join(f"{loss[e - 1]:.1f} (epoch {e})" for e in (n - 2, n))
    rounded = {k: [f"{x:.1f}" for x in v] for k, v in s["epoch_running_loss"].items()}
    who = (
        "all three implementations"
        if len({tuple(v) for v in rounded.values()}) == 1
        else ("jaxopt_lab (the others in `summary.md`)")
    )
    images = count(s["dataset"]["num_examples"])
    return (
        f"SGD lr={g(s['lr'])}, batch {s['config']['batch_size']}, {n} epochs of the {images}-image "
        f"test split, {count(s['steps'])} steps: the running loss goes {head} → … → {tail} for "
        f"{who}, accuracy {100 * acc[0]:.1f}% → {100 * acc[-1]:.1f}%"
    )


@block
def main_job_agreement() -> str:
    s = _main_run()
    diff = s["max_rel_param_diff"]
    torch_loss = s["epoch_running_loss"]["torch"]
    ours = s["epoch_running_loss"]["jaxopt_lab"]
    same_digits = min(
        math.floor(-math.log10(abs(a - b) / abs(b))) if a != b else 15
        for a, b in zip(ours, torch_loss, strict=True)
    )
    rate = s["steps_per_s"]
    return (
        f"jaxopt_lab~optax distance {sci(diff['jaxopt_lab~optax'])} at every step; either vs torch "
        f"stays below {sci(max(diff['jaxopt_lab~torch'], diff['optax~torch']))} (relative, "
        f"largest layer) with the epoch losses equal to {same_digits} or more significant digits. "
        f"On this {s['versions']['cpu_count']}-core CPU the JAX trainers ran "
        f"{span([rate['jaxopt_lab'], rate['optax']], lambda x: f'{x:.1f}')} steps/s and torch "
        f"{rate['torch']:.1f}"
    )


@block
def main_job_time() -> str:
    s = _main_run()
    minutes = sum(s["wall_time_s"].values()) / 60
    cores = s["versions"]["cpu_count"]
    return (
        f"{minutes:.0f} minutes of training for the three trainers together on a {cores}-core CPU"
    )


@block
def test_devices() -> str:
    text = (TESTS / "conftest.py").read_text()
    (n,) = re.findall(r"--xla_force_host_platform_device_count=(\d+)", text)
    return n


@block
def kill_trials() -> str:
    worker = tests_module("_resume_worker")
    return (
        f"{len(worker.PHASES)} seeded SIGKILLs, one in each phase of a save "
        f"({', '.join(worker.PHASES)})"
    )


@block
def fit_resumes() -> str:
    return str(len(tests_module("test_train").RESUMES))


@block
def handoff_figures() -> str:
    T = tests_module("test_torch_state")
    rows = result("handoff.json")["rows"]
    measured = {r["case"] for r in rows}
    if measured != {c.name for c in T.HANDOFF_CASES}:
        raise ValueError("handoff.json is not of tests/test_torch_state.py::HANDOFF_CASES")

    def sel(setting: str) -> list[dict]:
        return [r for r in rows if r["setting"] == setting]

    def bitwise(setting: str) -> str:
        return span([100 * r["bitwise_fraction"] for r in sel(setting)], lambda x: f"{x:.0f}")

    f64, f32 = sel("float64"), sel("float32 (stock torch)")
    exact = all(r["rel"] == 0 for r in sel("float32 (correct sqrt)"))
    x64_on = sorted({r["case"] for r in sel("float32 (correct sqrt)") if r.get("x64")})
    mode = "with x64 off" + (f" (x64 on for {', '.join(x64_on)})" if x64_on else "")
    return (
        f"For {len(measured)} configurations, torch training {T.STEPS} steps → hand-off → "
        f"jaxopt_lab {T.STEPS} more equals torch training {2 * T.STEPS} steps, and the reverse: "
        f"float64 within {sci(max(r['rel'] for r in f64))} ({bitwise('float64')}% of numbers "
        f"bitwise); float32 {mode} {'bit for bit' if exact else 'NOT bit for bit'} with a "
        f"correctly rounded torch sqrt, and within {sig(max(r['rel'] for r in f32))} "
        f"({bitwise('float32 (stock torch)')}% bitwise) against stock torch (measured by "
        f"`python experiments/handoff_report.py` → `results/handoff.md`; "
        f"`tests/test_torch_state.py` asserts the derived bounds {sig(T.F32_REL_BOUND, 1)} and "
        f"{g(T.F64_REL_BOUND)})"
    )


@block
def handoff_cnn() -> str:
    T = tests_module("test_torch_state")
    from jaxopt_lab.cifar import crosscheck

    n = T.CNN_STEPS
    return (
        f"torch {n} steps → Flax {n} more agrees with torch {2 * n} steps within the cross-check's "
        f"{g(crosscheck.F64_TOLERANCE)}"
    )


@block
def properties_examples() -> str:
    P = tests_module("test_properties")
    P.settings.load_profile("ci")  # the CI profile, whatever HYPOTHESIS_PROFILE says
    per = {name: P.examples(name) for name in P.OPTIMIZERS}
    groups: dict[int, list[str]] = {}
    for name, n in per.items():
        groups.setdefault(n, []).append(name)
    parts = [
        f"{n} per test for {', '.join(names)}" for n, names in sorted(groups.items(), reverse=True)
    ]
    return (
        f"{'; '.join(parts)} in CI (`EXAMPLES` in the test; `HYPOTHESIS_PROFILE=dev` for "
        f"{P.EXAMPLES['dev']}, a quarter of it for Adam/AdamW)"
    )


# ---------------------------------------------------------------------------------------------
# Benchmarks (committed bench_*.json).

KERNEL_OPTIMIZERS = ["momentum", "adam", "adamw", "amsgrad"]  # those with a one-pass kernel
SIZE_NAMES = {"cnn": "the CNN", "1000x1k": "1,000 × 1k", "1m": "1M", "10m": "10M", "100m": "100M"}


def _ratio(size: str, optimizer: str, key: str) -> float:
    for r in result("bench_update.json")["ratios"]:
        if r["size"] == size and r["optimizer"] == optimizer:
            return r[key]
    raise LookupError((size, optimizer, key))


def _ms(size: str, optimizer: str, impl: str) -> float:
    return _update_rows()[size, optimizer, impl]["median_s"] * 1e3


@block
def update_bandwidth() -> str:
    return f"{result('bench_update.json')['bandwidth']['used_gbs']:.1f} GB/s"


@block
def update_large_table() -> str:
    rows = []
    for size in ("10m", "100m"):
        for opt in ["sgd", *KERNEL_OPTIMIZERS]:
            times = [sig(_ms(size, opt, i)) for i in ("jol", "jol_xla", "optax", "torch_fused")]
            best = _update_rows()[size, opt, _ratio(size, opt, "best_jol")]
            fused = _ratio(size, opt, "jol/torch_fused")
            bandwidth = 100 * best["fraction_of_bandwidth"]
            rows.append([SIZE_NAMES[size], opt, *times, f"{fused:.2f}", f"{bandwidth:.0f}%"])
    header = ["params", "optimizer", "jaxopt_lab ms", "XLA only ms", "optax ms", "torch fused ms"]
    header += ["jaxopt_lab / fused", "best's % of bandwidth"]
    return table(header, rows)


@block
def update_summary() -> str:
    big = [(s, o) for s in ("10m", "100m") for o in KERNEL_OPTIMIZERS]
    fused = span([_ratio(s, o, "jol/torch_fused") for s, o in big])
    rows = _update_rows()
    bw = span(
        [100 * rows[s, o, _ratio(s, o, "best_jol")]["fraction_of_bandwidth"] for s, o in big],
        lambda x: f"{x:.0f}",
    )
    optax = span([_ratio(s, o, "best_jol/optax") for s, o in big])
    optax_1m = span([_ratio("1m", o, "best_jol/optax") for o in KERNEL_OPTIMIZERS])
    return (
        f"With the kernels (momentum, Adam, AdamW, AMSGrad) at 10M and 100M params jaxopt_lab "
        f"takes {fused}× torch `fused=True`'s time, at {bw}% of the measured bandwidth, and "
        f"{optax}× optax's ({optax_1m}× at 1M)"
    )


REST_SIZES = ("cnn", "1000x1k", "1m", "10m")


# The other algorithms' runs, newest first: an optimizer's row comes from the newest run that
# measured it (one full run since the Adamax/Adadelta/Rprop kernels).
REST_RUNS = ("bench_update_rest",)


def _rest_ratios() -> dict[tuple[str, str], dict]:
    out: dict[tuple[str, str], dict] = {}
    for run in REST_RUNS:
        taken = {o for o, _ in out}
        for r in result(f"{run}.json")["ratios"]:
            if r["optimizer"] not in taken:
                out[r["optimizer"], r["size"]] = {**r, "run": run}
    return out


@block
def update_rest_table() -> str:
    ratios = _rest_ratios()
    rows = []
    for opt in dict.fromkeys(o for o, _ in ratios):
        cells = []
        for size in REST_SIZES:
            ci = ratios.get((opt, size), {}).get("best_jol/optax_ci")
            cells.append(
                "–" if ci is None else f"{ci['median']:.2f} ({ci['lo']:.2f}–{ci['hi']:.2f})"
            )
        if set(cells) != {"–"}:
            run = next(r["run"] for (o, _), r in ratios.items() if o == opt)
            rows.append([f"`{opt}`", *cells, f"`{run}.md`"])
    return table(["optimizer", *(SIZE_NAMES[s] for s in REST_SIZES), "run"], rows)


@block
def update_rest_summary() -> str:
    ratios = _rest_ratios().values()
    cis = [r["best_jol/optax_ci"] for r in ratios if r.get("best_jol/optax_ci")]
    verdicts = [ci["verdict"] for ci in cis]
    above = sum(ci["median"] > 1 for ci in cis)
    torch = [r["best_jol/torch_foreach"] for r in ratios if r.get("best_jol/torch_foreach")]
    return (
        f"of {len(cis)} cells, {verdicts.count('faster')} are faster than optax (the 95% interval "
        f"below 1), {verdicts.count('tie')} ties (the interval contains 1) and "
        f"{verdicts.count('slower')} slower; {above} medians are above 1; against torch's "
        f"`foreach=True` path jaxopt_lab takes {span(torch)}× its time (medians, every optimizer "
        f"and size)"
    )


@block
def update_small() -> str:
    cnn_opts = ["sgd", *KERNEL_OPTIMIZERS]
    rows = _update_rows()
    n_leaves = rows["cnn", "sgd", "jol"]["n_leaves"]
    jol = span([_ms("cnn", o, "jol") for o in cnn_opts])
    optax = span([_ms("cnn", o, "optax") for o in cnn_opts])
    fused = span([_ms("cnn", o, "torch_fused") for o in cnn_opts])
    best = span([_ratio("cnn", o, "best_jol/optax") for o in cnn_opts])
    same = _ms("1m", "sgd", "jol") / _ms("1m", "sgd", "jol_xla")
    return (
        f"the CNN's {n_leaves} leaves: jaxopt_lab {jol} ms, optax {optax}, torch fused {fused}; "
        f"the best jaxopt_lab variant is {best}× optax's time, within the run's noise (`jol` and "
        f"`jol_xla` run identical code for plain SGD and still differ by "
        f"{100 * abs(same - 1):.0f}% at 1M)"
    )


@block
def update_many_leaves() -> str:
    ms = {
        impl: _ms("1000x1k", "adam", impl) for impl in ("jol_flat", "jol", "optax", "torch_fused")
    }
    return (
        f"1,000 leaves of 1k, Adam {sig(ms['jol_flat'])} ms vs {sig(ms['jol'])} plain, optax "
        f"{sig(ms['optax'])}, torch fused {sig(ms['torch_fused'])}"
    )


@block
def update_rss() -> str:
    rss = {(r["size"], r["impl"]): r for r in result("bench_update.json")["rss"]}
    return (
        f"peak RSS +{rss['10m', 'jol']['extra_peak_mib']:.2f} MiB at 10M; without, "
        f"{rss['10m', 'jol_nodonate']['extra_in_param_copies']:.0f} param copies"
    )


TRAIN_NAMES = {
    "torch_channels_last": "torch `channels_last`",
    "torch_compile": "`torch.compile`",
    "jax": "**jaxopt_lab + Flax**",
    "torch_nchw": "torch NCHW",
    "jax_xla_default": "JAX with XLA's default CPU options",
    "jax_nn_max_pool": "JAX with `nn.max_pool` instead of our pooling",
}


@block
def train_step() -> str:
    data = result("bench_train.json")
    ms = _bench_train()
    steps = sorted((v, k) for (k, b), v in ms.items() if b == 64)
    listed = ", ".join(f"{TRAIN_NAMES.get(k, k)} {sig(v)}" for v, k in steps)
    epoch = data["epoch_s"]
    return (
        f"batch 64, ms per step: {listed}. One epoch ({data['epoch']['steps']} steps): torch "
        f"`channels_last` {epoch['torch_channels_last']:.1f} s, jaxopt_lab "
        f"{epoch['jax']:.1f} s"
    )


@block
def conv_layers() -> str:
    data = result("bench_conv_layers.json")
    rows = [r for r in data["rows"] if r["in_step"]]
    first = next(r for r in rows if r["layer"] == "conv1" and r["pass"] == "fwd")
    others = [r["jax"] / r["torch_cl"] for r in rows if r is not first]

    def gflops(r: dict, k: str) -> str:
        return f"{r['gflop'] / (r[k] / 1e3):.0f}"

    return (
        f"the {len(rows)} convolution passes a step runs (forward, input and weight gradients) "
        f"take {data['totals']['jax']:.1f} ms in XLA:CPU (Eigen) and "
        f"{data['totals']['torch_cl']:.1f} ms in torch's oneDNN `channels_last` kernels; the "
        f"first layer's forward (3 input channels) is {first['jax'] / first['torch_cl']:.1f}× "
        f"slower ({gflops(first, 'jax')} vs {gflops(first, 'torch_cl')} GFLOP/s), the others "
        f"{span(others)}×"
    )


@block
def three_way_speed() -> str:
    rate = _main_run()["steps_per_s"]
    return (
        f"{span([rate['jaxopt_lab'], rate['optax']], lambda x: f'{x:.1f}')} vs "
        f"{rate['torch']:.1f} steps/s"
    )


@block
def update_sizes() -> str:
    sizes = dict.fromkeys(r["size"] for r in result("bench_update.json")["rows"])
    names = {"cnn": "the CNN's shapes", "1000x1k": "1,000 leaves of 1k"}
    return ", ".join(names.get(s, SIZE_NAMES.get(s, s)) for s in sizes)


@block
def train_batches() -> str:
    batches = sorted({r["batch"] for r in result("bench_train.json")["rows"]})
    return "/".join(str(b) for b in batches)


@block
def f64_step_time() -> str:
    runs = [_summary(r) for r in CROSSCHECK_RUNS if _summary(r)["precision"] == "f64"]
    seconds = [sum(1 / rate for rate in s["steps_per_s"].values()) for s in runs]
    cores = {s["versions"]["cpu_count"] for s in runs}
    return f"{span(seconds, lambda x: f'{x:.0f}')} s on the loaded {'/'.join(cores)}-core machine"


# ---------------------------------------------------------------------------------------------
# RESULTS.md


def _epoch_table(run: str, epochs: list[int], merge: bool) -> str:
    loss = _summary(run)["epoch_running_loss"]
    rows = {impl: [f"{v[e - 1]:.1f}" for e in epochs] for impl, v in loss.items()}
    if merge and rows["jaxopt_lab"] == rows["optax"]:
        rows = {"jaxopt_lab = optax": rows.pop("jaxopt_lab"), **rows}
        del rows["optax"]
    return table(["epoch", *map(str, epochs)], [[impl, *v] for impl, v in rows.items()])


def _passes(run: str, thresholds: list[float]) -> str:
    """Step at which the jaxopt_lab~torch distance first exceeds each threshold (metrics.jsonl)."""
    lines = (RESULTS / run / "metrics.jsonl").read_text().splitlines()
    diffs = [json.loads(line)["rel_param_diff"]["jaxopt_lab~torch"] for line in lines]
    steps = [next((i + 1 for i, d in enumerate(diffs) if d > t), None) for t in thresholds]
    parts = [
        f"{power_of_ten(t)} at step {count(k)}" for t, k in zip(thresholds, steps, strict=True) if k
    ]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]


@block
def results_sgd_table() -> str:
    return _epoch_table("cifar10-sgd-f32-20ep", [1, 2, 3, 5, 10, 15, 18, 20], merge=True)


@block
def results_sgd_summary() -> str:
    s = _main_run()
    acc = s["epoch_accuracy"]["jaxopt_lab"]
    diff = s["max_rel_param_diff"]
    return (
        f"Accuracy (on the same split, as the tutorial measures it) {100 * acc[0]:.1f}% → "
        f"{100 * acc[-1]:.1f}%. jaxopt_lab and optax are at distance "
        f"{sci(diff['jaxopt_lab~optax'])} over all {count(s['steps'])} steps. Against torch the "
        f"relative parameter distance (max over layers of ‖a−b‖∞ / max‖·‖∞) passes "
        f"{_passes('cifar10-sgd-f32-20ep', [1e-4, 1e-3])} (command below), and peaks at "
        f"{sci(diff['jaxopt_lab~torch'])} (`summary.json`)"
    )


@block
def results_sgd_speed() -> str:
    rate = _main_run()["steps_per_s"]
    return ", ".join(f"{impl} {r:.2f} steps/s" for impl, r in rate.items())


@block
def results_adam_table() -> str:
    return _epoch_table("cifar10-adam-f32-20ep", [1, 2, 5, 10, 15, 20], merge=False)


@block
def results_adam_summary() -> str:
    s = _summary("cifar10-adam-f32-20ep")
    acc = s["epoch_accuracy"]
    last = span([100 * a[-1] for a in acc.values()], lambda x: f"{x:.0f}")
    passes = _passes("cifar10-adam-f32-20ep", [1e-3, 1e-2, 0.1, 0.5])
    return (
        f"Accuracy {100 * acc['jaxopt_lab'][0]:.1f}% → {last}% (the test split is memorised: "
        f"training and evaluation use the same images, as in the tutorial). Here the three runs "
        f"*separate*: the distance to torch passes {passes} (max "
        f"{s['max_rel_param_diff']['jaxopt_lab~torch']:.2f})"
    )


@block
def results_f64_runs() -> str:
    parts = []
    for run in CROSSCHECK_RUNS:
        s = _summary(run)
        if s["precision"] != "f64":
            continue
        worst = max(s["max_rel_param_diff"].values())
        parts.append(f"{s['optimizer']} agrees to {sci(worst)} over {s['steps']} steps (`{run}/`)")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Rewriting the documents.

MARKER = re.compile(r"<!-- figures:([\w-]+) -->(.*?)<!-- /figures:\1 -->", re.S)


def render(text: str, values: dict[str, str]) -> str:
    def fill(m: re.Match) -> str:
        name, old = m.group(1), m.group(2)
        if old.startswith("\n"):  # a block on lines of its own
            return f"<!-- figures:{name} -->\n{values[name]}\n<!-- /figures:{name} -->"
        return f"<!-- figures:{name} -->{values[name]}<!-- /figures:{name} -->"

    return MARKER.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = ap.parse_args(argv)

    texts = {doc: doc.read_text() for doc in DOCS}
    used = [m.group(1) for text in texts.values() for m in MARKER.finditer(text)]
    unknown = sorted(set(used) - set(BLOCKS))
    unused = sorted(set(BLOCKS) - set(used))
    opened = sum(len(re.findall(r"<!-- figures:", t)) for t in texts.values())
    if unknown or unused or opened != len(used):
        print(
            f"markers without a generator: {unknown}; generators without a marker: {unused}; "
            f"{opened - len(used)} unclosed markers",
            file=sys.stderr,
        )
        return 2
    values = {name: BLOCKS[name]() for name in sorted(set(used))}
    stale = False
    for doc, text in texts.items():
        new = render(text, values)
        if new == text:
            continue
        stale = True
        rel = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc
        if args.check:
            old_lines, new_lines = text.splitlines(True), new.splitlines(True)
            diff = difflib.unified_diff(old_lines, new_lines, f"{rel} (committed)", f"{rel} (new)")
            sys.stdout.writelines(diff)
        else:
            doc.write_text(new)
            print(f"rewrote {rel}")
    if args.check and stale:
        print("\nstale figures: run python experiments/readme_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
