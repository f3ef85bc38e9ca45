"""``experiments/device_check.py --dry-run``: the GPU check's code paths, on the CPU, tiny sizes.

The GPU run itself needs a GPU machine (``bash experiments/device_check.sh``); this keeps the
script from rotting in between. On the CPU, with torch's sqrt made correctly rounded on the
single-tensor path (as in the parity suite), the dry run's parity rows of the elementwise
optimizers must come out bit for bit: a wrong pairing of leaves, fields or steps would not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "device_check.py"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("device_check")
    rng = np.random.default_rng(0)
    npz = tmp / "cifar_sample.npz"
    images = rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    np.savez(npz, image=images, label=rng.integers(0, 10, 100))
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "OUT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp), "--cifar-npz", str(npz)],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert (tmp / "device_check.md").read_text().startswith("## device_check (DRY RUN")
    return json.loads((tmp / "device_check.json").read_text())


def test_dry_run_parity_rows_are_bitwise_on_cpu(dry_run):
    par = dry_run["parity"]
    assert par["torch_sqrt_patched_on_single_path"]
    rows = {r["case"]: r for r in par["rows"]}
    assert set(rows) == {"sgd-momentum", "adam", "adamw-amsgrad", "rmsprop-centered", "adagrad"}
    for case, row in rows.items():
        assert "error" not in row, row
        single = row["single"]
        assert single["bitwise_fraction"] == 1.0, (case, single)
        assert single["max_rel_err"] == 0.0, (case, single)
        assert "max_rel_err" in row["foreach"], (case, row["foreach"])
    # torch has fused CPU kernels for SGD and Adam(W); where it has none the row says why.
    assert "max_rel_err" in rows["adam"]["fused"]
    assert set(par["by_optimizer"]) == {"sgd", "adam", "adamw", "rmsprop", "adagrad"}


def test_dry_run_update_and_train_sections(dry_run):
    assert not dry_run["errors"]
    up = dry_run["update"]
    assert up["bandwidth_used_gbs"] > 0
    timed = [r for r in up["rows"] if "impl" in r]
    assert {r["impl"] for r in timed} == {"jol", "optax", "torch_foreach", "torch_fused"}
    assert all(r["median_s"] > 0 and r["fraction_of_bandwidth"] > 0 for r in timed)
    tr = dry_run["train"]
    assert tr["data"].startswith("CIFAR-10 images from")
    assert {r["impl"] for r in tr["rows"]} == {"jax", "torch_nchw", "torch_channels_last"}
    assert all(r["images_per_s"] > 0 for r in tr["rows"])
    drift = tr["drift"]
    assert len(drift["jax_loss"]) == len(drift["torch_loss"]) == drift["steps"]
    # Same weights and batches, float32 on the CPU: the losses differ only by the two
    # frameworks' convolution summation orders (measured 1.0e-7 over 3 steps); mismatched
    # weights or batches give ~1e-2 (measured: other seeds or another batch, 0.4-1.1%).
    assert drift["max_rel_loss_diff"] < 1e-4


def test_stand_in_data_is_labelled():
    sys.path.insert(0, str(SCRIPT.parent))
    import device_check

    x, y, source = device_check.cifar(None, 5)
    assert source.startswith("SYNTHETIC stand-in")
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32 and y.shape == (5,)
