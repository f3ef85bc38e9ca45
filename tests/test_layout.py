"""The package layout's promises: a light core import, a clear message for a missing ``lab`` extra,
every public name resolvable, and no module longer than ~600 lines without a stated reason.

Each import check runs in a fresh interpreter, so that modules other tests loaded do not hide an
import the core makes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jaxopt_lab

PACKAGE = Path(jaxopt_lab.__file__).resolve().parent
# The `lab` extra's packages and the test-only torch: none may load with `import jaxopt_lab`.
HEAVY = ("flax", "tensorflow_datasets", "orbax", "tqdm", "matplotlib", "PIL", "torch")
# A module over this many lines states why at its top, in a line starting "Length:".
MAX_LINES = 600


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PACKAGE.parent,
    )


def test_core_import_loads_no_lab_dependency():
    out = run_python(
        f"""
        import sys
        import jaxopt_lab as jol
        jol.adam(1e-3), jol.schedules.step_lr, jol.registry.get("nadam")
        heavy = {HEAVY!r}
        print(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("missing", ["flax", "orbax.checkpoint"])
def test_lab_without_its_extra_names_the_extra(missing):
    out = run_python(
        f"""
        import sys
        sys.modules[{missing!r}] = None  # as if not installed
        try:
            import jaxopt_lab.cifar.models
        except ImportError as e:
            print(e)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'jaxopt_lab[lab]'" in out.stdout
    assert missing.split(".")[0] in out.stdout


@pytest.mark.parametrize("name", jaxopt_lab.__all__)
def test_public_name_resolves(name):
    assert getattr(jaxopt_lab, name) is not None


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_long_module_states_why(path):
    lines = path.read_text().splitlines()
    if len(lines) > MAX_LINES:
        head = "\n".join(lines[:60])
        assert "Length:" in head, f"{len(lines)} lines and no 'Length:' reason at its top"
