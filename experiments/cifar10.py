#!/usr/bin/env python
"""The PyTorch tutorial's CIFAR-10 experiment, trained three ways and cross-checked step by step.

    python experiments/cifar10.py --data PATH_OR_TFDS_DIR --optimizer sgd --lr 0.01 \\
        --batch-size 64 --epochs 20 [--max-steps N] [--precision f32|f64] \\
        [--compare optax,torch] --out DIR

All the logic lives in :mod:`jaxopt_lab.cifar.crosscheck`; this file parses flags, checks them,
finds the data and reports errors as one line on stderr (exit 2 for bad flags, 1 for missing data
or an unwritable output folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from jaxopt_lab import registry

# Every per-step algorithm, and L-BFGS through a per-batch closure (jaxopt_lab.cifar.crosscheck).
OPTIMIZERS = (*registry.names(per_step=True), "lbfgs")
# torch.optim's default lr per optimizer (the registry reads the factories), except sgd: 0.01 is
# the tutorial's.
DEFAULT_LR = {name: registry.get(name).defaults()["lr"] for name in OPTIMIZERS} | {"sgd": 0.01}


class CLIError(Exception):
    """A user error: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is ONE line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _betas(text: str) -> tuple[float, float]:
    try:
        b1, b2 = (float(x) for x in text.replace(" ", "").strip("()[]").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two numbers like 0.9,0.999, got {text!r}"
        ) from None
    return b1, b2


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object like '{\"momentum\": 0.9}'")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _compare(text: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip() and x.strip() != "none")
    bad = [x for x in items if x not in ("optax", "torch")]
    if bad:
        raise argparse.ArgumentTypeError(f"expected optax and/or torch (or none), got {text!r}")
    return items


def build_parser() -> argparse.ArgumentParser:
    """The command line (the first block is the contract other tools drive)."""
    p = _Parser(
        prog="cifar10.py",
        description="Train the PyTorch tutorial's CIFAR-10 CNN with a jaxopt_lab optimizer, the "
        "optax equivalent and torch.optim from the same weights on the same batches, and report "
        "how far apart they get.",
    )
    p.add_argument(
        "--data",
        metavar="PATH_OR_TFDS_DIR",
        help="a tfds data_dir holding a prepared cifar10 (array_record or TFRecord), "
        "cifar-10-python.tar.gz or its cifar-10-batches-py folder, or an .npz with image "
        "(N,32,32,3 uint8) and label; default: auto-detect ($TFDS_DATA_DIR, "
        "~/tensorflow_datasets, the download cache, else a download through $HTTPS_PROXY if "
        "set), else a clearly labelled synthetic stand-in",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="sgd",
        help="lbfgs: one step(closure) per batch, the closure evaluating that batch (per-batch "
        "L-BFGS: up to max_iter iterations on each batch, as torch's optimizer.step(closure))",
    )
    p.add_argument(
        "--lr", type=float, help="learning rate (default 0.01 for sgd, else torch.optim's)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, help="default 64 (drop_last)")
    p.add_argument("--epochs", type=_positive_int, default=20, help="default 20")
    p.add_argument(
        "--max-steps",
        type=_positive_int,
        help="stop after N steps in total (156 = one test-split epoch at batch 64)",
    )
    p.add_argument(
        "--precision",
        choices=("f32", "f64"),
        default="f32",
        help="f32 (default) or f64: JAX x64 + torch double, where all three must agree to 1e-9",
    )
    p.add_argument(
        "--compare",
        type=_compare,
        default=("optax", "torch"),
        help="implementations next to jaxopt_lab: optax,torch (default), one of them, or none",
    )
    p.add_argument("--out", help="output folder (default runs/cifar10-OPTIMIZER-PRECISION)")
    p.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="split to train on (default test, like the tutorial); accuracy is on test",
    )
    p.add_argument("--seed", type=int, default=0, help="torch init and shuffling seed")
    p.add_argument("--shuffle", action="store_true", help="reshuffle every epoch (seeded)")
    p.add_argument(
        "--schedule",
        help="per-epoch lr schedule: torch's scheduler name in snake case and its arguments, "
        "e.g. step_lr:step_size=5,gamma=0.5",
    )

    o = p.add_argument_group("optimizer options (torch.optim's names; unset = torch's default)")
    o.add_argument("--momentum", type=float)
    o.add_argument("--dampening", type=float)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--nesterov", action="store_const", const=True)
    o.add_argument("--betas", type=_betas, metavar="B1,B2")
    o.add_argument("--eps", type=float)
    o.add_argument("--amsgrad", action="store_const", const=True)
    o.add_argument("--alpha", type=float)
    o.add_argument("--centered", action="store_const", const=True)
    o.add_argument("--lr-decay", type=float)
    o.add_argument("--initial-accumulator-value", type=float)
    o.add_argument("--maximize", action="store_const", const=True)
    o.add_argument(
        "--opt-kwargs",
        type=_json_object,
        default={},
        metavar="JSON",
        help="any other keyword arguments, e.g. '{\"momentum\": 0.9}'",
    )

    c = p.add_argument_group("checkpoints (in OUT/checkpoints; all three trainers)")
    c.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="save every N steps and after every epoch (orbax, atomic, last 2 kept)",
    )
    c.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in OUT/checkpoints (same flags; --epochs/--max-steps may "
        "grow); the result equals the uninterrupted run",
    )

    r = p.add_argument_group("output")
    r.add_argument("--no-eval", action="store_true", help="skip the per-epoch accuracy")
    r.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


_KWARG_FLAGS = (
    "momentum",
    "dampening",
    "weight_decay",
    "nesterov",
    "betas",
    "eps",
    "amsgrad",
    "alpha",
    "centered",
    "lr_decay",
    "initial_accumulator_value",
    "maximize",
)


def optimizer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The optimizer keyword arguments given on the command line (flags win over --opt-kwargs)."""
    kwargs = dict(args.opt_kwargs)
    if isinstance(kwargs.get("betas"), list):
        kwargs["betas"] = tuple(kwargs["betas"])
    for name in _KWARG_FLAGS:
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def prepare_out_dir(path: str) -> Path:
    """Create the output folder and prove it is writable, or raise :class:`CLIError`."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise CLIError(f"cannot write to output folder {path!r}: {reason}") from None
    return out


def open_checkpoints(out: Path, args: argparse.Namespace) -> Any:
    """The run's :class:`jaxopt_lab.Checkpointer` (None without checkpoint flags), or CLIError.

    A fresh run never writes over another run's checkpoints, and ``--resume`` needs one.
    """
    if not (args.resume or args.checkpoint_every):
        return None
    import jaxopt_lab as jol

    where = out / "checkpoints"
    try:
        checkpointer = jol.Checkpointer(where, max_to_keep=2)
        steps = checkpointer.all_steps()
    except ValueError as err:
        raise CLIError(str(err).splitlines()[0]) from None
    if args.resume and not steps:
        raise CLIError(f"nothing to resume: no checkpoint in {where}")
    if steps and not args.resume:
        raise CLIError(
            f"{where} holds checkpoints (steps {steps}): pass --resume to continue that run, "
            "or choose another --out"
        )
    return checkpointer


def load_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """(train set, eval set); with no --data, auto-detect or fall back to the synthetic stand-in."""
    from jaxopt_lab.cifar.data import load_cifar10

    source = args.data
    if source is not None and not Path(source).exists():
        raise CLIError(
            f"dataset not found: {source!r} (pass a tfds data_dir, cifar-10-python.tar.gz or an "
            ".npz; or set TFDS_DATA_DIR and leave --data out)"
        )
    try:
        train = load_cifar10(source, split=args.split, offline_ok=source is None)
        test = train if args.split == "test" else load_cifar10(source, "test", offline_ok=True)
    except Exception as err:  # the data layer's own message is the one line worth showing
        where = source if source is not None else "auto-detected locations"
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CLIError(f"cannot load CIFAR-10 from {where}: {message}") from None
    if train.synthetic:
        print(
            "CIFAR-10 not found (no --data, nothing in $TFDS_DATA_DIR or ~/tensorflow_datasets): "
            "running the same cross-check on a SYNTHETIC stand-in, NOT CIFAR-10. Pass --data PATH "
            "(a tfds data_dir with cifar10, cifar-10-python.tar.gz or an .npz) or set "
            "TFDS_DATA_DIR to use the real data.",
            flush=True,
        )
    return train, test


def main(argv: list[str] | None = None) -> int:
    """Parse, check, run; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    out_path = args.out or f"runs/cifar10-{args.optimizer}-{args.precision}"
    kwargs = optimizer_kwargs(args)
    try:
        out = prepare_out_dir(out_path)  # before the heavy imports: fail fast
        if args.precision == "f64":
            import jax

            jax.config.update("jax_enable_x64", True)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import jaxopt_lab as jol
        from jaxopt_lab.cifar import crosscheck

        config = crosscheck.CrossCheckConfig(
            optimizer=args.optimizer,
            lr=lr,
            opt_kwargs=kwargs,
            schedule=args.schedule,
            batch_size=args.batch_size,
            epochs=args.epochs,
            max_steps=args.max_steps,
            precision=args.precision,
            compare=args.compare,
            seed=args.seed,
            shuffle=args.shuffle,
            evaluate=not args.no_eval,
        )
        try:
            config.validate()
            getattr(jol, args.optimizer)(lr=lr, **kwargs)  # torch's hyper-parameter checks
            if args.schedule:
                crosscheck.parse_schedule(args.schedule)
        except (ValueError, TypeError) as err:
            raise CLIError(str(err).splitlines()[0], code=2) from None
        checkpointer = open_checkpoints(out, args)
        start = time.perf_counter()
        train, test = load_data(args)
        print(f"data ready in {time.perf_counter() - start:.1f} s", flush=True)
        try:
            crosscheck.run(
                config,
                train,
                test,
                out,
                progress=not args.no_progress,
                checkpointer=checkpointer,
                checkpoint_every=args.checkpoint_every or 0,
            )
        except crosscheck.ConfigError as err:  # incl. a checkpoint of another run
            raise CLIError(str(err).splitlines()[0], code=2) from None
    except CLIError as err:
        print(f"cifar10.py: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("cifar10.py: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'}, {out / 'metrics.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
