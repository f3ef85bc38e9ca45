"""Installs that cannot run the one-pass kernels degrade clearly
(``jaxopt_lab.optim.native.status``).

Each case runs in a fresh interpreter (the kernels are loaded once per process) in which the
extension is made to fail the way it fails on users' machines: not built (no C++ compiler at
install), refused by XLA at registration (built against newer XLA FFI headers than the running
jaxlib supports, as after an isolated build with a newer jaxlib), or failing its test run. In
each: under ``JAXOPT_LAB_NATIVE=auto`` two different optimizers with leaves big enough for the
kernels step bit for bit as under ``=off``, and ONE warning naming the cause reaches stderr;
under ``=always`` the update raises a ``RuntimeError`` naming it. The real install (wheel and
sdist into clean venvs, outside the checkout) is ``.ci/smoke_install.sh``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jaxopt_lab
from jaxopt_lab.optim import native as _native

# The children import the jaxopt_lab this process runs (a checkout or an installed copy).
PACKAGE_PARENT = Path(jaxopt_lab.__file__).resolve().parents[1]
MESSAGE = "the one-pass CPU kernels are off"

# Run in the child after the failure is set up: two optimizers under auto (one warning for
# both), the same under off, then always.
CHECK = """
import json, os
import jax, jax.numpy as jnp, numpy as np
import jaxopt_lab as jol
from jaxopt_lab.optim import native as _native

def steps(mode):
    os.environ["JAXOPT_LAB_NATIVE"] = mode  # read when the update is traced
    out = []
    for opt, n in ((jol.adam(1e-3), 5000), (jol.sgd(1e-2, momentum=0.9), 70000)):
        p = [jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)]
        g = [jnp.cos(p[0] * 3.0)]
        q, s = jax.jit(opt.update)(p, g, opt.init(p))
        q, s = jax.jit(opt.update)(q, g, s)
        out += [np.asarray(x).view(np.int32) for x in jax.tree.leaves((q, s))]
    return out

auto, off = steps("auto"), steps("off")
try:
    steps("always")
    always = "no error"
except RuntimeError as e:
    always = str(e)
print(json.dumps({
    "bitwise": all(np.array_equal(a, b) for a, b in zip(auto, off, strict=True)),
    "available": _native.available(),
    "reason": _native.status().reason,
    "always": always,
}))
"""

NOT_BUILT = """
import sys

sys.modules["jaxopt_lab.optim._native_ext"] = None  # as if g++ had been missing at install
"""

REFUSED = """
import sys, types
import jax

# An extension as built against jaxlib 0.10.2 (whether or not g++ built the real one here).
ext = types.ModuleType("jaxopt_lab.optim._native_ext")
ext.handlers = lambda: dict.fromkeys(["jaxopt_lab_adam_f32", "jaxopt_lab_sgd_momentum_f32"])
ext.build_info = lambda: {"jaxlib": "0.10.2", "ffi_api": "0.3", "hardware_fma": True}
sys.modules[ext.__name__] = ext

def refuse(name, fn, platform="cpu", **kwargs):  # what jaxlib 0.8.0 says to 0.10.2's headers
    raise RuntimeError(
        f"INVALID_ARGUMENT: FFI handler registration for {name} on platform Host failed because "
        "the handler's API version (0.3) is incompatible with the framework's API version (0.1)"
    )

jax.ffi.register_ffi_target = refuse
"""

MISWIRED = """
from jaxopt_lab.optim import _native_ext

real = _native_ext.handlers()
names = sorted(real)
# Each target gets another one's handler: XLA registers them, running them fails.
_native_ext.handlers = lambda: {n: real[names[(i + 1) % len(names)]] for i, n in enumerate(names)}
"""


def _run(setup: str, cwd: Path) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAXOPT_LAB_NATIVE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(setup) + CHECK],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.mark.parametrize(
    ("setup", "cause"),
    [
        (NOT_BUILT, "was not built when jaxopt_lab was installed"),
        (REFUSED, "XLA refused its FFI handlers"),
        pytest.param(
            MISWIRED,
            "its kernels failed a test run",
            marks=pytest.mark.requires_kernels,  # miswires the real extension's handlers
        ),
    ],
    ids=["not-built", "refused-by-xla", "failing-test-run"],
)
def test_unavailable_kernels_fall_back_with_one_warning(setup, cause, tmp_path):
    res, stderr = _run(setup, tmp_path)
    assert not res["available"]
    assert cause in res["reason"]
    assert res["bitwise"], "auto must step exactly as off when the kernels are unavailable"
    assert stderr.count(MESSAGE) == 1, stderr[-3000:]
    assert cause in stderr
    assert res["always"].startswith("JAXOPT_LAB_NATIVE=always, but the kernels cannot run")
    assert cause in res["always"]


@pytest.mark.requires_kernels
def test_status_names_the_build():
    """A working extension says what it was built against and how it computes ``fma`` here."""
    st = _native.status()
    if not st.build:
        pytest.skip("an extension built before build_info(): rebuild it")
    assert set(st.build) == {"jaxlib", "ffi_api", "compiler", "hardware_fma", "fma"}
    assert st.hardware_fma == st.build["hardware_fma"]
