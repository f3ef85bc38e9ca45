#!/usr/bin/env bash
# Install smoke test: the package as users get it, outside this checkout.
#
# Builds an sdist and a wheel from a copy of the repository's files (the checkout stays clean),
# installs each into its own clean venv under a temporary directory (jax, jaxlib, optax, numpy and
# their dependencies only: no torch, no flax; the package itself with --no-deps), and from a
# directory outside the checkout runs the smoke check below in each: the package imports from the
# venv; one Adam step on a 10,000-element float32 leaf (and two more) is bitwise the same with
# JAXOPT_LAB_NATIVE=off and =auto; where a C++ compiler is present the one-pass kernel is built,
# passes its self-test (jaxopt_lab.optim.native.status()) and is in the lowered update; without one,
# the package still works and says why the kernels are off.
#
# The sdist is installed with hostile compiler flags (CFLAGS/CXXFLAGS/LDFLAGS="-O2 -ffast-math"):
# setup.py's -fno-fast-math must keep the kernels' roundings (the bitwise check) and keep
# crtfastmath.o, which turns on flush-to-zero for the whole process, out of the extension (the
# subnormal check).
#
# Uses pip's cache; versions of the core dependencies are those of .venv when it exists (run after
# `make test`), so nothing new is downloaded. About 3 minutes, most of it the two C++ builds.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3}"
CXX_BIN="${CXX:-g++}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/jaxopt-lab-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
start=$SECONDS
say() { echo "[smoke_install +$((SECONDS - start))s] $*"; }

EXPECT_KERNEL=0
if command -v "${CXX_BIN%% *}" >/dev/null 2>&1; then EXPECT_KERNEL=1; fi

CORE="jax jaxlib optax numpy"
if [ -x "$REPO/.venv/bin/python" ]; then
  CORE="$("$REPO/.venv/bin/python" - <<'EOF'
from importlib import metadata
print(" ".join(f"{p}=={metadata.version(p)}" for p in ("jax", "jaxlib", "optax", "numpy")))
EOF
)"
fi
say "core dependencies: $CORE; C++ compiler ${CXX_BIN}: $([ $EXPECT_KERNEL = 1 ] && echo yes || echo no)"

# The repository's files (tracked and untracked-but-not-ignored), as a fresh clone has them.
mkdir "$WORK/src"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
  | tar -C "$REPO" --null --ignore-failed-read -T - -cf - | tar -xf - -C "$WORK/src"

say "building the sdist (no compile) and the wheel (isolated build env: setuptools, jaxlib)"
"$PY" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install -q --upgrade pip "setuptools>=77" build
(cd "$WORK/src" && "$WORK/tools/bin/python" -m build -q --sdist --no-isolation \
  --skip-dependency-check --outdir "$WORK/dist" . >/dev/null)
"$WORK/tools/bin/python" -m pip wheel -q --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/*.whl)"
say "built $(basename "$SDIST") and $(basename "$WHEEL")"
grep -q "jaxopt_lab/optim/csrc/native.cc" <<<"$(tar -tzf "$SDIST")" || { echo "no native.cc in sdist"; exit 1; }
if [ $EXPECT_KERNEL = 1 ]; then
  "$WORK/tools/bin/python" -c 'import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(not any(n.startswith("jaxopt_lab/optim/_native_ext") for n in names))' "$WHEEL" \
    || { echo "the wheel lacks the C++ extension although ${CXX_BIN} is here"; exit 1; }
fi

cat >"$WORK/smoke.py" <<'EOF'
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxopt_lab as jol
from jaxopt_lab.optim import native as _native

expect_kernel = sys.argv[1] == "1"
assert jol.__file__.startswith(sys.prefix), f"imported {jol.__file__}, not the venv's copy"
assert "torch" not in sys.modules and "flax" not in sys.modules


def steps(mode: str) -> tuple[str, list[np.ndarray]]:
    os.environ["JAXOPT_LAB_NATIVE"] = mode  # read when the update is traced
    opt = jol.adam(1e-3)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal(10_000, dtype=np.float32))}
    update = jax.jit(opt.update)
    state = opt.init(params)
    lowered = update.lower(params, params, state).as_text()
    out = []
    for _ in range(3):
        grads = {"w": jnp.asarray(rng.standard_normal(10_000, dtype=np.float32) * 1e-3)}
        params, state = update(params, grads, state)
        out += [np.asarray(x).view(np.uint32) for x in jax.tree.leaves((params, state))]
    return lowered, out


st = _native.status()
hlo_off, off = steps("off")
hlo_auto, auto = steps("auto")
kernel_in_auto = "jaxopt_lab_adam_f32" in hlo_auto
same = all(np.array_equal(a, b) for a, b in zip(off, auto, strict=True))
tiny = float(np.float32(1e-38) * np.float32(1e-3))  # a subnormal unless flush-to-zero is on
report = {
    "package": jol.__file__,
    "status": {"available": st.available, "reason": st.reason, "build": dict(st.build)},
    "kernel_in_auto_update": kernel_in_auto,
    "bitwise_off_vs_auto": same,
    "subnormal_kept": tiny != 0.0,
}
print(json.dumps(report))
assert same, "JAXOPT_LAB_NATIVE=auto differs from =off"
assert tiny != 0.0, "flush-to-zero is on after loading jaxopt_lab (crtfastmath.o linked in?)"
assert "jaxopt_lab_adam_f32" not in hlo_off
if expect_kernel:
    assert st.available, st.reason
    assert kernel_in_auto == st.hardware_fma, (kernel_in_auto, st.build)
    if st.hardware_fma is False:
        print("note: no hardware FMA for the kernels on this CPU: auto keeps XLA's loops")
    hlo_always, always = steps("always")
    assert "jaxopt_lab_adam_f32" in hlo_always
    assert all(np.array_equal(a, b) for a, b in zip(off, always, strict=True))
else:
    assert not st.available and "was not built" in st.reason, st.reason
    assert not kernel_in_auto
print("smoke ok")
EOF

smoke() {  # smoke VENV ARTIFACT [env assignments for the install...]
  local venv="$1" artifact="$2"
  shift 2
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q $CORE
  env "$@" "$venv/bin/python" -m pip install -q --no-deps "$artifact"
  say "installed $(basename "$artifact") into $(basename "$venv"); running the smoke check"
  (cd "$WORK" && "$venv/bin/python" smoke.py "$EXPECT_KERNEL")
}

smoke "$WORK/venv-wheel" "$WHEEL"
smoke "$WORK/venv-sdist" "$SDIST" CFLAGS="-O2 -ffast-math" CXXFLAGS="-O2 -ffast-math" \
  LDFLAGS="-ffast-math"
say "done: wheel and sdist install and run outside the checkout"
