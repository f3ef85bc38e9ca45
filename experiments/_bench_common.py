"""Shared pieces of the benchmarks: machine and version info, interleaved timing, result files.

Timing is *interleaved*: every implementation of one configuration runs a short block of steps
per round, round after round, so load from other processes on a shared machine hits all of them
alike; the ratios of medians taken side by side are the robust numbers, absolute times less so.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def kernels_status() -> str:
    """Whether jaxopt_lab's one-pass CPU kernels are on in this process ("on", or "OFF: why").

    Every ``jol`` figure depends on it: a process whose extension fails its self-test (e.g. one
    built from an older ``native.cc`` than ``native.py`` expects) runs XLA's loops instead."""
    from jaxopt_lab.optim import native

    st = native.status()
    return "on" if st.available else f"OFF: {st.reason}"


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, load and versions of the libraries compared."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
    except (OSError, AttributeError):
        pass
    caches = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("L1d cache", "L2 cache", "L3 cache"):
                caches[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "torch", "optax", "flax", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "kernels": kernels_status(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "caches": caches,
        "ram_gib": round(ram_gib, 1),
        "load_avg_at_start": os.getloadavg(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": versions,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


def interleaved(
    fns: dict[str, Callable[[], Any]],
    rounds: int,
    block: int = 1,
    warmup: int = 2,
    settle: int = 1,
    budget_s: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Median/min/p25/p75 seconds of each ``fn()`` (which must block), timed round-robin.

    Each round runs every ``fn`` for ``settle`` untimed steps, then ``block`` timed steps: switching
    between frameworks costs the first step after the switch several ms on a 2-core machine
    (torch's OpenMP and XLA's thread pools wake up and compete), which is not the step's cost.
    Stops early (after at least 6 rounds, the fewest a 95% interval needs) once ``budget_s``
    seconds have passed. ``round_s`` keeps each round's median step, for :func:`paired_ratio`.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(rounds):
        for name, fn in fns.items():
            for _ in range(settle):
                fn()
            block_s = []
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                block_s.append(time.perf_counter() - t0)
            times[name] += block_s
            per_round[name].append(float(np.median(block_s)))
        if budget_s is not None and r >= 5 and time.perf_counter() - start > budget_s:
            break
    return {
        k: {
            "median_s": float(np.median(v)),
            "min_s": float(np.min(v)),
            "p25_s": float(np.percentile(v, 25)),
            "p75_s": float(np.percentile(v, 75)),
            "runs": len(v),
            "round_s": per_round[k],
        }
        for k, v in times.items()
    }


def median_ci(n: int, level: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the order statistics that bound the median of ``n`` samples
    with at least ``level`` confidence, or None when ``n`` is too small.

    Distribution-free: the number of samples below the median is Binomial(n, 1/2), so
    ``[x_(k), x_(n-1-k)]`` (sorted) misses it with probability ``2 P(Bin(n, 1/2) <= k)``; k is the
    largest rank that keeps that at or below ``1 - level``.
    """
    k, below = -1, 0.0
    while k + 1 < n / 2:
        below_next = below + math.comb(n, k + 1) / 2**n
        if 2 * below_next > 1 - level:
            break
        k, below = k + 1, below_next
    return None if k < 0 else (k, n - 1 - k)


def paired_ratio(a: list[float], b: list[float], level: float = 0.95) -> dict[str, Any] | None:
    """The median of the per-round ratios ``a[i] / b[i]`` with its ``level`` confidence interval
    (:func:`median_ci`), and a verdict: ``faster`` (the interval below 1), ``slower`` (above 1)
    or ``tie``.

    Each round times ``a`` and ``b`` within milliseconds of each other (``interleaved``), so load
    from other processes scales both; their ratio is the quantity to estimate, and rounds give
    the samples. (Rounds are not strictly independent, since load drifts; pairing removes most of
    that.) None for fewer rounds than an interval needs (6 at 95%).
    """
    if len(a) != len(b):
        return None
    ranks = median_ci(len(a), level)
    if ranks is None:
        return None
    r = sorted(x / y for x, y in zip(a, b, strict=True))
    lo, hi = r[ranks[0]], r[ranks[1]]
    verdict = "faster" if hi < 1 else "slower" if lo > 1 else "tie"
    return {"median": float(np.median(r)), "lo": lo, "hi": hi, "rounds": len(r), "verdict": verdict}


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        if x is None:
            return "–"
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_markdown(info: dict[str, Any]) -> str:
    v = info["versions"]
    vs = ", ".join(f"{k} {v[k]}" for k in v)
    load = ", ".join(f"{x:.1f}" for x in info["load_avg_at_start"])
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM "
        f"({', '.join(f'{k} {c}' for k, c in info['caches'].items())}); load average at start "
        f"{load}. Versions: {vs}. One-pass kernels: {info.get('kernels', 'not recorded')}. "
        f"{info['date_utc']}.\n"
    )


def write_results(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """``results/{name}.json`` and ``results/{name}.md``; returns their paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    js.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    md.write_text(markdown + "\n")
    return js, md


def vm_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
