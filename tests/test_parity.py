"""Whole-trajectory parity with torch.optim: params and state at every one of 200 steps.

Every row of ``cases.CASES`` runs against torch's single-tensor path (``foreach=False``) and its
foreach path, in float64 and float32, with ill-scaled gradients (see ``_reference``).

Tolerances, and where they come from:

* float64: ``|ours - torch| <= 1e-12 * max|torch|`` per leaf and step. Our arithmetic is torch's
  operation for operation; what differs is torch's MKL sqrt (1 ULP off correctly rounded on ~1%
  of float64 inputs here) and ``beta**t`` (binary exponentiation here, libm ``pow`` in Python),
  each ~1e-16 relative per step. 200 steps of such perturbations, amplified by at most
  1/(1-beta2) in Adam's second moment, stay well under 1e-12.
* float32, single-tensor path: **bit for bit**, through the pure-JAX rules and again (``kernel``)
  through the one-pass CPU kernels of ``jaxopt_lab._native`` (``JAXOPT_LAB_NATIVE=always``).
  For the algorithms that take a square root, torch runs with a correctly rounded sqrt patched
  in (see ``correctly_rounded_torch_sqrt``); the unpatched comparison is the ULP report in
  ``test_bitwise_report.py``.
* float32, foreach path: its kernels round like the single-tensor ones except the MKL sqrt,
  which the patch cannot reach (``torch._foreach_sqrt``): bit for bit for SGD, and within the
  drift bound of ``cases.FLOAT32_FOREACH_RTOL`` for the rest (measured, see there).
"""

from __future__ import annotations

import numpy as np
import pytest
from _reference import bitwise_equal, correctly_rounded_torch_sqrt, jax_trajectory, torch_trajectory
from cases import CASES, FLOAT32_FOREACH_RTOL

pytest.importorskip("torch")

STEPS = 200
_OURS: dict = {}


def _ours(case, dtype, native="off"):
    """jaxopt_lab's trajectory, computed once per (case, dtype, native mode) and shared."""
    key = (case.id, np.dtype(dtype).name, native)
    if key not in _OURS:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JAXOPT_LAB_NATIVE", native)  # read when the update is traced
            _OURS[key] = jax_trajectory(case, dtype, STEPS)
    return _OURS[key]


def _compare(ours, theirs, check) -> None:
    for step, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        assert mine.keys() == ref.keys()
        for field in ref:
            for leaf, (a, b) in enumerate(zip(mine[field], ref[field], strict=True)):
                assert a.dtype == b.dtype, (field, leaf)
                check(a, b, f"step {step}, {field}[{leaf}]")


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float64_trajectory(case, foreach):
    ours = _ours(case, np.float64)
    theirs = torch_trajectory(case, np.float64, STEPS, foreach)

    def check(a, b, where):
        scale = max(float(np.max(np.abs(b), initial=0.0)), np.finfo(np.float64).tiny)
        err = float(np.max(np.abs(a - b), initial=0.0))
        assert err <= 1e-12 * scale, f"{where}: {err:.3e} > 1e-12 * {scale:.3e}"

    _compare(ours, theirs, check)


@pytest.mark.parametrize(
    ("case", "native"),
    [(c, "off") for c in CASES] + [(c, "always") for c in CASES if c.has_kernel],
    ids=lambda x: x.id if hasattr(x, "id") else {"off": "xla", "always": "kernel"}[x],
)
def test_float32_bitwise_single_tensor(case, native):
    ours = _ours(case, np.float32, native)
    with correctly_rounded_torch_sqrt():
        theirs = torch_trajectory(case, np.float32, STEPS, foreach=False)

    def check(a, b, where):
        same = bitwise_equal(a, b)
        assert same.all(), f"{where}: {np.count_nonzero(~same)} of {same.size} elements differ"

    _compare(ours, theirs, check)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_foreach(case):
    ours = _ours(case, np.float32)
    theirs = torch_trajectory(case, np.float32, STEPS, foreach=True)
    rtol = FLOAT32_FOREACH_RTOL[case.algo]

    def check(a, b, where):
        if rtol == 0.0:
            same = bitwise_equal(a, b)
            assert same.all(), f"{where}: {np.count_nonzero(~same)} elements differ"
            return
        scale = max(float(np.max(np.abs(b), initial=0.0)), np.finfo(np.float32).tiny)
        err = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
        assert err <= rtol * scale, f"{where}: {err:.3e} > {rtol} * {scale:.3e}"

    _compare(ours, theirs, check)
