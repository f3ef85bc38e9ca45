"""The three-way cross-check: its metric, the optax mapping, f64 agreement and the CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cli import Result, run_main

import jaxopt_lab as jol
from jaxopt_lab.cifar import crosscheck
from jaxopt_lab.cifar.data import synthetic_cifar10

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "experiments" / "cifar10.py"


# ----------------------------------------------------------------------------- the metric


def test_rel_param_distance_is_per_leaf_relative_and_symmetric() -> None:
    a = {"w": np.array([1.0, 2.0]), "b": np.array([1e-3, 0.0])}
    b = {"w": np.array([1.0, 2.002]), "b": np.array([1e-3, 1e-6])}
    # w: 0.002 / 2.002; b: 1e-6 / 1e-3 -- the small leaf is judged on its own scale.
    assert crosscheck.rel_param_distance(a, b) == pytest.approx(1e-3, rel=1e-12)
    assert crosscheck.rel_param_distance(a, b) == crosscheck.rel_param_distance(b, a)
    assert crosscheck.rel_param_distance(a, a) == 0.0
    zeros = {"w": np.zeros(2, np.float32)}
    assert crosscheck.rel_param_distance(zeros, zeros) == 0.0  # tiny floor: no 0/0
    assert np.isnan(crosscheck.rel_param_distance({"w": np.array([np.nan])}, {"w": np.ones(1)}))


# ----------------------------------------------------------------------------- schedules

GOOD_SCHEDULES = [
    ("step_lr:step_size=5,gamma=0.5", ("step_lr", {"step_size": 5, "gamma": 0.5})),
    (
        "multistep_lr:milestones=[2, 4],gamma=0.1",
        ("multistep_lr", {"milestones": [2, 4], "gamma": 0.1}),
    ),
    ("exponential_lr:gamma=0.9", ("exponential_lr", {"gamma": 0.9})),
]
BAD_SCHEDULES = ["", ":gamma=1", "step_lr:step_size", "step_lr:gamma=oops"]


@pytest.mark.parametrize(("spec", "expected"), GOOD_SCHEDULES)
def test_parse_schedule(spec: str, expected: tuple) -> None:
    assert crosscheck.parse_schedule(spec) == expected


@pytest.mark.parametrize("spec", BAD_SCHEDULES)
def test_parse_schedule_rejects(spec: str) -> None:
    with pytest.raises(crosscheck.ConfigError, match=r"schedule|bad value"):
        crosscheck.parse_schedule(spec)


# ----------------------------------------------------------------------------- optax mapping

# (optimizer, kwargs, exact): exact rows must match jaxopt_lab to rounding; the others are the
# documented differences (see `optax_equivalent`), which must really show.
OPTAX_ROWS = [
    ("sgd", {}, True),
    ("sgd", {"momentum": 0.9}, True),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, True),
    ("sgd", {"momentum": 0.9, "maximize": True}, True),
    ("sgd", {"momentum": 0.9, "dampening": 0.5}, False),
    ("adam", {}, True),
    ("adam", {"weight_decay": 0.1, "betas": (0.8, 0.99)}, True),
    ("adam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, True),
    ("adam", {"amsgrad": True}, False),
    ("adamw", {"weight_decay": 0.1}, True),
    ("adamw", {"amsgrad": True}, False),
    ("rmsprop", {}, True),
    ("rmsprop", {"momentum": 0.9, "centered": True, "weight_decay": 0.1}, True),
    ("adagrad", {}, False),
    ("adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.1}, False),
]


def _ids(row: tuple) -> str:
    return f"{row[0]}-{'-'.join(f'{k}={v}' for k, v in row[1].items()) or 'defaults'}"


@pytest.mark.parametrize(("name", "kwargs", "exact"), OPTAX_ROWS, ids=map(_ids, OPTAX_ROWS))
def test_optax_equivalent_matches_jaxopt_lab(name: str, kwargs: dict, exact: bool) -> None:
    """Eight steps on a small float64 problem with ill-scaled, step-varying gradients."""
    equivalent = crosscheck.optax_equivalent(name, 0.01, kwargs)
    assert equivalent.exact is exact
    assert exact or equivalent.notes
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3))), "b": jnp.asarray([1e-3, 2.0, -5.0])}
    ours, theirs = getattr(jol, name)(lr=0.01, **kwargs), equivalent.optimizer
    p1, s1 = params, ours.init(params)
    p2, s2 = params, theirs.init(params)
    for k in range(8):
        noise = {key: jnp.asarray(rng.standard_normal(v.shape)) for key, v in params.items()}
        grads = {key: 10.0 ** (k % 3 - 1) * (p1[key] + noise[key]) for key in params}
        p1, s1 = ours.update(p1, grads, s1)
        p2, s2 = theirs.update(p2, grads, s2)
    distance = crosscheck.rel_param_distance(jax.device_get(p1), jax.device_get(p2))
    if exact:  # measured <= 5.4e-16: rounding only
        assert distance <= 1e-13, distance
    else:  # the documented difference is real (measured 6.8e-13 for adagrad+iav .. 0.71)
        assert distance > 1e-13, distance


def test_optax_equivalent_rejects_unknown_optimizer() -> None:
    with pytest.raises(crosscheck.ConfigError, match="unknown optimizer"):
        crosscheck.optax_equivalent("muon", 0.1, {})  # 2-D params only: not in OPTIMIZERS


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def tiny_data() -> object:
    return synthetic_cifar10(24, seed=3)  # batch 8: 3 steps per epoch


def test_f64_adam_agrees_and_writes_every_output(tiny_data: object, tmp_path: Path) -> None:
    config = crosscheck.CrossCheckConfig(
        optimizer="adam", lr=1e-3, batch_size=8, max_steps=5, epochs=3, precision="f64"
    )
    summary = crosscheck.run(config, tiny_data, out_dir=tmp_path, progress=False, print_fn=None)
    assert summary["agree"] is True
    assert max(summary["max_rel_param_diff"].values()) <= crosscheck.F64_TOLERANCE

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]["loss"]) == set(crosscheck.IMPLEMENTATIONS)
    assert set(rows[0]["rel_param_diff"]) == {"jaxopt_lab~torch", "jaxopt_lab~optax", "optax~torch"}

    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["epoch_steps"] == [3, 2]  # max_steps cuts the second epoch
    for impl in crosscheck.IMPLEMENTATIONS:
        assert len(written["epoch_running_loss"][impl]) == 2
        assert written["epoch_running_loss"][impl][0] == pytest.approx(
            sum(r["loss"][impl] for r in rows[:3]), rel=1e-12
        )
        assert len(written["epoch_accuracy"][impl]) == 2
    assert written["synthetic"] is True and written["dataset"]["synthetic"] is True
    table = (tmp_path / "summary.md").read_text()
    assert "SYNTHETIC" in table and "| jaxopt_lab~torch |" in table
    assert (tmp_path / "crosscheck.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- the CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python experiments/cifar10.py *args`` in a fresh interpreter: the command users run."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run(
        [sys.executable, str(CLI), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def _main(*args: str) -> Result:
    """The same command line through ``main(argv)`` in this process (see tests/_cli.py)."""
    return run_main(CLI, *args)


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = synthetic_cifar10(24, seed=5)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, image=ds.images, label=ds.labels)
    return path


def test_cli_f64_sgd_with_step_lr_agrees_and_keeps_the_contract(npz: Path, tmp_path: Path) -> None:
    """The command-line contract, on SGD+momentum under torch's StepLR stepped per epoch.

    Run as the real command, in a fresh interpreter (``sys.exit(main())``, the imports,
    ``--precision f64`` switching JAX x64 on), as is one error below; the other CLI tests call
    ``main`` in this process (tests/_cli.py).
    24 images, batch 8: 3 steps per epoch; --max-steps 8 stops inside the third epoch, so the
    run crosses two lr drops (per_epoch(step_lr) on the JAX side, StepLR.step() on torch's).
    """
    out = tmp_path / "run"
    result = _cli(
        "--data", str(npz), "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "8",
        "--epochs", "20", "--max-steps", "8", "--precision", "f64", "--compare", "optax,torch",
        "--momentum", "0.9", "--schedule", "step_lr:step_size=1,gamma=0.5", "--no-progress",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["epoch_steps"] == [3, 3, 2]
    assert set(summary["final_loss"]) == {"jaxopt_lab", "optax", "torch"}
    assert all(isinstance(v, float) for v in summary["final_loss"].values())
    pairs = {"jaxopt_lab~torch", "jaxopt_lab~optax", "optax~torch"}
    assert set(summary["max_rel_param_diff"]) == pairs
    for key, value in summary["max_rel_param_diff"].items():
        assert value <= crosscheck.F64_TOLERANCE, (key, value)
    assert summary["agree"] is True
    assert all(len(v) == 3 for v in summary["epoch_running_loss"].values())
    assert summary["precision"] == "f64" and summary["opt_kwargs"] == {"momentum": 0.9}
    assert summary["dataset"]["synthetic"] is False  # an .npz is taken as real data
    assert {"jax", "torch", "optax", "flax"} <= set(summary["versions"])
    assert all(summary["wall_time_s"][i] > 0 for i in crosscheck.IMPLEMENTATIONS)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.05] * 3 + [0.025] * 3 + [0.0125] * 2)
    for name in ("summary.md", "crosscheck.png"):
        assert (out / name).is_file()


def test_f64_lbfgs_per_batch_closure_agrees_with_torch(tiny_data: object, tmp_path: Path) -> None:
    """``--optimizer lbfgs``: one ``step(closure)`` per batch on both sides (torch's closure
    re-evaluates the batch); optax has no counterpart, so the run compares jaxopt_lab and torch."""
    config = crosscheck.CrossCheckConfig(
        optimizer="lbfgs",
        lr=1.0,
        opt_kwargs={"max_iter": 3, "history_size": 2},
        batch_size=8,
        max_steps=2,
        epochs=1,
        precision="f64",
    )
    summary = crosscheck.run(config, tiny_data, out_dir=tmp_path, progress=False, print_fn=None)
    assert summary["implementations"] == ["jaxopt_lab", "torch"]
    assert summary["steps"] == 2
    assert summary["max_rel_param_diff"]["jaxopt_lab~torch"] <= crosscheck.F64_TOLERANCE
    assert summary["agree"] is True


CLI_ERRORS = [
    (["--optimizer", "muon"], 2, "invalid choice"),  # 2-D params only: not a CNN optimizer
    (["--betas", "0.9"], 2, "expected two numbers"),
    (["--precision", "f16"], 2, "invalid choice"),
    (["--opt-kwargs", "{momentum: 0.9}"], 2, "not JSON"),
    (["--lr", "-1"], 2, "Invalid learning rate"),
    (["--optimizer", "adam", "--momentum", "0.9"], 2, "adam does not take momentum"),
    (["--schedule", "step_lr:step_size"], 2, "expected key=value"),
    (["--data", "/nonexistent/cifar10"], 1, "dataset not found"),
    (["--resume"], 1, "nothing to resume: no checkpoint in"),
]


def _assert_one_line_error(result: Result | subprocess.CompletedProcess[str], message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("cifar10.py: error:")


@pytest.mark.parametrize(("args", "code", "message"), CLI_ERRORS, ids=lambda x: str(x))
def test_cli_errors_are_one_line(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    result = _main(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == code
    _assert_one_line_error(result, message)


def test_cli_error_is_the_exit_status_of_a_fresh_process(tmp_path: Path) -> None:
    """``main``'s status reaches the shell: one row of CLI_ERRORS again, as a real process."""
    result = _cli("--data", "/nonexistent/cifar10", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    _assert_one_line_error(result, "dataset not found")


def test_cli_unwritable_output_is_one_line(npz: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made under a file, even by root
    result = _main("--data", str(npz), "--out", str(blocker / "out"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to output folder" in lines[0], result.stderr


# ----------------------------------------------------------------------------- resume


class Resume(NamedTuple):
    """A run interrupted after each of ``stops`` steps and resumed; 3 steps per epoch."""

    id: str
    optimizer: str
    kwargs: dict
    stops: tuple[int, ...]
    schedule: str | None = None
    checkpoint_every: int = 0
    precision: str = "f32"


RESUMES = [
    Resume(
        "adam-amsgrad-mid-epoch", "adam", {"amsgrad": True, "weight_decay": 0.01}, (4,), None, 2
    ),
    Resume(
        "sgd-momentum-step_lr-twice",
        "sgd",
        {"momentum": 0.9, "nesterov": True},
        (3, 5),
        "step_lr:step_size=2,gamma=0.5",  # the counter matters
    ),
]
TIMINGS = {"wall_time_s", "first_step_s", "steps_per_s"}


@pytest.mark.parametrize("case", RESUMES, ids=lambda c: c.id)
def test_resumed_cross_check_equals_the_uninterrupted_run(
    tiny_data: object, tmp_path: Path, case: Resume
) -> None:
    """float32, all three trainers, bit for bit: every metrics row and every summary figure.

    The torch side goes through the checkpoint as jaxopt_lab state (``state_from_torch`` /
    ``state_to_torch``), its lr and scheduler as JSON; a lost bit anywhere would show in the
    float32 losses and distances of the steps after the resume.
    """

    def run(out: Path, max_steps: int, ckpt: jol.Checkpointer | None) -> dict:
        config = crosscheck.CrossCheckConfig(
            optimizer=case.optimizer,
            lr=0.01,
            opt_kwargs=case.kwargs,
            schedule=case.schedule,
            batch_size=8,
            epochs=3,
            max_steps=max_steps,
            precision=case.precision,
        )
        return crosscheck.run(
            config,
            tiny_data,
            out_dir=out,
            progress=False,
            plot=False,
            print_fn=None,
            checkpointer=ckpt,
            checkpoint_every=case.checkpoint_every,
        )

    reference = run(tmp_path / "reference", 7, None)
    ckpt = jol.Checkpointer(tmp_path / "ckpt")
    for stop in case.stops:
        run(tmp_path / "resumed", stop, ckpt)
        assert ckpt.latest_step() == stop
    resumed = run(tmp_path / "resumed", 7, ckpt)

    def rows(out: Path) -> list[dict]:
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "resumed") == rows(tmp_path / "reference")
    assert {k: v for k, v in resumed.items() if k not in TIMINGS} == {
        k: v for k, v in reference.items() if k not in TIMINGS
    }
    assert reference["max_rel_param_diff"]["jaxopt_lab~torch"] > 0  # float32: torch's own bits


def test_resume_refuses_another_runs_checkpoint(tiny_data: object, tmp_path: Path) -> None:
    ckpt = jol.Checkpointer(tmp_path / "ckpt")
    kwargs = dict(batch_size=8, max_steps=1, compare=())
    crosscheck.run(crosscheck.CrossCheckConfig(**kwargs), tiny_data, progress=False,
                   print_fn=None, checkpointer=ckpt)  # fmt: skip
    other = crosscheck.CrossCheckConfig(optimizer="adam", lr=1e-3, **kwargs)
    with pytest.raises(crosscheck.ConfigError, match=r"cannot resume: .*optimizer: checkpoint has"):
        crosscheck.run(other, tiny_data, progress=False, print_fn=None, checkpointer=ckpt)


def test_cli_resume_continues_and_never_overwrites(npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--data", str(npz), "--batch-size", "8", "--compare", "none", "--no-progress",
              "--no-plot", "--out", str(out)]  # fmt: skip
    first = _main(*common, "--checkpoint-every", "2", "--max-steps", "2")
    assert first.returncode == 0, first.stderr
    again = _main(*common, "--checkpoint-every", "2", "--max-steps", "4")
    assert again.returncode == 1
    assert again.stderr.strip().endswith(
        "pass --resume to continue that run, or choose another --out"
    )
    other = _main(*common, "--resume", "--max-steps", "4", "--lr", "0.5")
    assert other.returncode == 2 and "lr: checkpoint has 0.01, expected 0.5" in other.stderr
    resumed = _main(*common, "--resume", "--max-steps", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 2" in resumed.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["epoch_steps"] == [3, 1]
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
    ]
