"""What a cross-check run reports: the drift metrics, the summary, its Markdown tables and plot.

The drift metric is the **relative parameter distance** of two implementations

.. math::

    d(a, b) = \\max_{\\text{leaves } \\ell}
        \\frac{\\lVert a_\\ell - b_\\ell \\rVert_\\infty}
             {\\max(\\lVert a_\\ell \\rVert_\\infty, \\lVert b_\\ell \\rVert_\\infty, \\text{tiny})}

(computed in float64, ``tiny`` the smallest normal number of the params' dtype): the worst
elementwise difference of a layer, relative to that layer's largest weight. It is symmetric, and
scale-free per layer (biases are not drowned by kernels).

:func:`summarize` turns a run's figures into the ``summary.json`` dictionary; :func:`markdown_table`
writes it as ``summary.md`` and :func:`plot_run` draws ``crosscheck.png``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from jaxopt_lab.cifar.crosscheck.config import (
    F64_TOLERANCE,
    IMPLEMENTATIONS,
    PAIRS,
    CrossCheckConfig,
    pair_key,
)
from jaxopt_lab.cifar.crosscheck.counterparts import OptaxEquivalent
from jaxopt_lab.optim.base import Params

# ----------------------------------------------------------------------------------------------
# Drift metrics
# ----------------------------------------------------------------------------------------------


def rel_param_distance(a: Params, b: Params) -> float:
    """Max over leaves of ``||a - b||_inf / max(||a||_inf, ||b||_inf, tiny)``, in float64.

    Args:
        a, b: params pytrees of the same structure and shapes (NumPy or JAX arrays).

    Returns:
        The relative distance (0 for identical trees; ``inf``/``nan`` propagate).
    """
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(leaves_a) != len(leaves_b):
        raise ValueError(f"params trees differ: {len(leaves_a)} vs {len(leaves_b)} leaves")
    worst = 0.0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        tiny = float(np.finfo(np.result_type(x.dtype, y.dtype)).tiny)
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = max(float(np.max(np.abs(x64))), float(np.max(np.abs(y64))), tiny)
        d = float(np.max(np.abs(x64 - y64))) / scale
        if math.isnan(d):
            return d
        worst = max(worst, d)
    return worst


def rel_diff(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|, tiny)`` for two scalars (0 when both are 0)."""
    scale = max(abs(a), abs(b), float(np.finfo(np.float64).tiny))
    return abs(a - b) / scale


def nanmax(a: float, b: float) -> float:
    """The larger of ``a`` and ``b``, NaN winning (a NaN distance must show)."""
    return b if math.isnan(b) or b > a else a


# ----------------------------------------------------------------------------------------------
# The summary
# ----------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of everything that can change the numbers, and the machine."""
    import flax
    import jaxlib

    out = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
    }
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a test dependency
        pass
    out["platform"] = platform.platform()
    out["machine"] = platform.machine()
    out["cpu_count"] = str(os.cpu_count())
    out["jax_backend"] = jax.default_backend()
    out["jax_devices"] = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return out


def dataset_label(ds: Any) -> str:
    """The dataset's name, flagged loudly when it is the synthetic stand-in."""
    if getattr(ds, "synthetic", False) and "SYNTHETIC" not in ds.name:
        return f"SYNTHETIC stand-in, not CIFAR-10: {ds.name}"
    return ds.name


def epoch_line(
    epoch: int,
    in_epoch: int,
    steps_per_epoch: int,
    losses: dict[str, list[float]],
    acc: dict[str, list[float]],
    rows: list[dict[str, Any]],
    pairs: Sequence[tuple[str, str]],
) -> str:
    """The line printed after each epoch: running losses, accuracies, last distances."""
    part = "" if in_epoch == steps_per_epoch else f" (partial: {in_epoch} steps)"
    loss = "  ".join(f"{k} {v[-1]:.3f}" for k, v in losses.items())
    text = f"[epoch {epoch}]{part} running loss: {loss}"
    if any(acc.values()):
        text += " | accuracy: " + "  ".join(f"{k} {100 * v[-1]:.2f}%" for k, v in acc.items())
    if pairs:
        last = rows[-1]["rel_param_diff"]
        text += " | rel param diff: " + "  ".join(f"{k} {last[k]:.1e}" for k in last)
    return text


def summarize(
    *,
    config: CrossCheckConfig,
    train_ds: Any,
    eval_ds: Any,
    label: str,
    impls: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    rows: list[dict[str, Any]],
    steps_per_epoch: int,
    epoch_steps: list[int],
    epoch_losses: dict[str, list[float]],
    epoch_acc: dict[str, list[float]],
    max_param: dict[str, float],
    max_loss: dict[str, float],
    wall: dict[str, float],
    first: dict[str, float],
    warmup: dict[str, float],
    warmup_steps: int,
    equivalent: OptaxEquivalent | None,
) -> dict[str, Any]:
    """The run's ``summary.json``: settings, per-epoch and final figures, drift, timings."""
    steps = len(rows)
    all_keys = [pair_key(*p) for p in PAIRS]
    last = rows[-1] if rows else {"loss": {}, "rel_param_diff": {}}
    f64 = config.precision == "f64"

    def expected_exact(a: str, b: str) -> bool:
        return "optax" not in (a, b) or (equivalent is not None and equivalent.exact)

    within = {
        pair_key(a, b): (max_param[pair_key(a, b)] <= F64_TOLERANCE)
        for a, b in pairs
        if f64 and expected_exact(a, b)
    }
    return {
        "dataset": {
            "name": train_ds.name,
            "synthetic": bool(getattr(train_ds, "synthetic", False)),
            "label": label,
            "num_examples": len(train_ds.labels),
            "eval_name": eval_ds.name,
            "eval_num_examples": len(eval_ds.labels),
        },
        "synthetic": bool(getattr(train_ds, "synthetic", False)),
        "config": dataclasses.asdict(config) | {"compare": list(config.compare)},
        "optimizer": config.optimizer,
        "lr": config.lr,
        "opt_kwargs": config.opt_kwargs,
        "schedule": config.schedule,
        "precision": config.precision,
        "implementations": list(impls),
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "epoch_steps": epoch_steps,
        "final_loss": {i: last["loss"].get(i) for i in IMPLEMENTATIONS},
        "epoch_running_loss": {i: epoch_losses.get(i, []) for i in IMPLEMENTATIONS},
        "epoch_accuracy": {i: epoch_acc.get(i, []) for i in IMPLEMENTATIONS},
        "max_rel_param_diff": {k: max_param.get(k) for k in all_keys},
        "final_rel_param_diff": {k: last["rel_param_diff"].get(k) for k in all_keys},
        "max_rel_loss_diff": {k: max_loss.get(k) for k in all_keys},
        "param_distance": (
            "max over leaves of ||a-b||_inf / max(||a||_inf, ||b||_inf, tiny), float64, after "
            "every step; max_rel_param_diff is its largest value over the run"
        ),
        "tolerance": F64_TOLERANCE if f64 else None,
        "within_tolerance": within,
        "agree": all(within.values()) if within else None,
        "optax_equivalent": (
            {
                "expression": equivalent.expression,
                "exact": equivalent.exact,
                "notes": list(equivalent.notes),
            }
            if equivalent is not None
            else {"expression": "none", "exact": False, "notes": ["optax has no counterpart"]}
        ),
        "wall_time_s": {i: wall.get(i) for i in IMPLEMENTATIONS},
        "first_step_s": {i: first.get(i) for i in IMPLEMENTATIONS},
        "steps_per_s": {
            i: (steps - warmup_steps) / (wall[i] - warmup[i])
            if i in impls and steps > warmup_steps
            else None
            for i in IMPLEMENTATIONS
        },
        "timing": (
            "wall_time_s: all training steps (evaluation excluded), each synchronised; "
            "first_step_s: step 1 alone (includes JAX compilation); steps_per_s: steps 2.. only "
            "(and, in a resumed run, without the first step after each resume)"
        ),
        "versions": versions(),
        "command": " ".join(sys.argv),
    }


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """The closing lines: each pair's largest distance and its verdict, then steps/s."""
    lines = []
    for key, value in summary["max_rel_param_diff"].items():
        if value is None:
            continue
        ok = summary["within_tolerance"].get(key)
        mark = "" if ok is None else ("  OK (<= 1e-9)" if ok else "  FAIL (> 1e-9)")
        lines.append(f"max rel param diff {key}: {value:.3e}{mark}")
    rates = {k: v for k, v in summary["steps_per_s"].items() if v}
    lines.append("steps/s: " + "  ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    return lines


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def markdown_table(summary: dict[str, Any]) -> str:
    """The run as Markdown: settings, a table per implementation and a table per pair."""
    impls = summary["implementations"]
    ds = summary["dataset"]
    has_optax = "optax" in impls
    lines = [f"# Cross-check: {summary['optimizer']} on {ds['label']}", ""]
    if ds["synthetic"]:
        lines += [
            "> **SYNTHETIC stand-in data, not CIFAR-10**: real CIFAR-10 was not available, so "
            "the losses say nothing about the tutorial; the agreement numbers still hold.",
            "",
        ]
    cfg = summary["config"]
    kwargs = ", ".join(f"{k}={v}" for k, v in summary["opt_kwargs"].items())
    schedule = f", schedule `{summary['schedule']}`" if summary["schedule"] else ""
    lines.append(
        f"- optimizer: `{summary['optimizer']}(lr={summary['lr']}{', ' if kwargs else ''}"
        f"{kwargs})`{schedule}"
    )
    if has_optax:
        equivalent = summary["optax_equivalent"]
        lines.append(
            f"- optax equivalent: `{equivalent['expression']}`"
            + ("" if equivalent["exact"] else " (not the same math: see notes)")
        )
    lines += [
        f"- batch size {cfg['batch_size']}, {summary['steps']} steps "
        f"({summary['steps_per_epoch']} per epoch), precision {summary['precision']}, "
        f"seed {cfg['seed']}, shuffle {cfg['shuffle']}",
        f"- jax {summary['versions']['jax']} ({summary['versions']['jax_devices']}), "
        f"torch {summary['versions'].get('torch', '–')}, optax {summary['versions']['optax']}, "
        f"flax {summary['versions']['flax']}",
        "",
        "| implementation | final batch loss | running loss per epoch (sum of batch losses) "
        "| accuracy per epoch | train time (s) | steps/s |",
        "|---|---|---|---|---|---|",
    ]
    for i in impls:
        losses = ", ".join(f"{x:.1f}" for x in summary["epoch_running_loss"][i])
        accs = ", ".join(f"{100 * x:.1f}%" for x in summary["epoch_accuracy"][i]) or "–"
        lines.append(
            f"| {i} | {_fmt(summary['final_loss'][i])} | {losses} | {accs} "
            f"| {_fmt(summary['wall_time_s'][i], '.1f')} "
            f"| {_fmt(summary['steps_per_s'][i], '.2f')} |"
        )
    lines += [
        "",
        "Train time: all training steps, each synchronised, evaluation excluded; steps/s counts "
        "steps 2.. only (step 1 includes JAX compilation).",
    ]
    compared = {k: v for k, v in summary["max_rel_param_diff"].items() if v is not None}
    if compared:
        lines += [
            "",
            "Relative parameter distance: max over layers of ||a-b||∞ / max(||a||∞, ||b||∞), "
            "after every step.",
            "",
            "| pair | max over the run | after the last step | max rel. loss difference "
            "| verdict |",
            "|---|---|---|---|---|",
        ]
    for key, value in compared.items():
        ok = summary["within_tolerance"].get(key)
        if ok is not None:
            verdict = "≤ 1e-9 ✓" if ok else "> 1e-9 ✗"
        elif summary["precision"] == "f32":
            verdict = "f32: reported"
        else:
            verdict = "different math (see notes)"
        lines.append(
            f"| {key} | {_fmt(value, '.3e')} | {_fmt(summary['final_rel_param_diff'][key], '.3e')} "
            f"| {_fmt(summary['max_rel_loss_diff'][key], '.3e')} | {verdict} |"
        )
    notes = summary["optax_equivalent"]["notes"] if has_optax else []
    if notes:
        lines += ["", "Notes on the optax mapping:", ""] + [f"- {n}" for n in notes]
    if summary["precision"] == "f32" and compared:
        lines += [
            "",
            "In float32 the implementations agree only to rounding after the first step: XLA and "
            "torch use different convolution algorithms and summation orders, so the gradients "
            "differ in their last bits. Training carries those differences forward and amplifies "
            "them (in jumps, when a rounding difference changes a discrete outcome such as which "
            "element wins a max-pool window), so the distance grows over the run while the loss "
            "curves stay on top of each other. The float64 run is the exactness check.",
        ]
    return "\n".join(lines) + "\n"


def plot_run(
    rows: list[dict[str, Any]], summary: dict[str, Any], path: str | os.PathLike[str]
) -> None:
    """Save a PNG: the three loss curves (top) and the pairwise parameter distances (bottom).

    Top: every batch loss (thin); over several epochs also each epoch's mean batch loss (the
    tutorial's running loss / steps, dots at the epoch ends). Bottom, log scale: the relative
    parameter distance of each pair after every step, and the float64 tolerance line. A pair that
    stays bit-identical (distance 0 throughout) is listed in the legend but cannot be drawn on a
    log axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_diff) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    styles = {"jaxopt_lab": ("-", 2.2, "C0"), "optax": ("--", 1.4, "C1"), "torch": (":", 1.8, "C3")}
    many_epochs = len(summary["epoch_steps"]) > 2
    ends = np.cumsum(summary["epoch_steps"])
    for impl in summary["implementations"]:
        ls, lw, color = styles[impl]
        losses = [r["loss"][impl] for r in rows]
        if many_epochs:
            ax_loss.plot(steps, losses, "-", lw=0.5, color=color, alpha=0.35)
            means = np.asarray(summary["epoch_running_loss"][impl]) / summary["epoch_steps"]
            ax_loss.plot(ends, means, ls, lw=lw, color=color, marker="o", ms=3, label=impl)
        else:
            ax_loss.plot(steps, losses, ls, lw=lw, color=color, label=impl)
    ax_loss.set_ylabel("batch loss" + (" (dots: epoch mean)" if many_epochs else ""))
    ds = summary["dataset"]
    title = f"{summary['optimizer']} lr={summary['lr']}, {summary['precision']}, {ds['label']}"
    if ds["synthetic"] and "SYNTHETIC" not in title:
        title = "SYNTHETIC DATA, not CIFAR-10 — " + title
    ax_loss.set_title(title, fontsize=9, color="C3" if ds["synthetic"] else "black")
    ax_loss.legend()
    pair_styles = {"jaxopt_lab~torch": "-", "jaxopt_lab~optax": "--", "optax~torch": ":"}
    for key, worst in summary["max_rel_param_diff"].items():
        if worst is None:
            continue
        if worst == 0:
            ax_diff.plot([], [], pair_styles[key], label=f"{key}: identical (0) at every step")
            continue
        values = [r["rel_param_diff"][key] for r in rows]
        values = [v if v > 0 else np.nan for v in values]
        ax_diff.semilogy(steps, values, pair_styles[key], lw=1.5, label=key)
    if summary["tolerance"] is not None:
        ax_diff.axhline(summary["tolerance"], color="k", lw=0.8, ls="-.", label="f64 tolerance")
    ax_diff.set_xlabel("step")
    ax_diff.set_ylabel("relative parameter distance")
    if any(v is not None for v in summary["max_rel_param_diff"].values()):
        ax_diff.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
