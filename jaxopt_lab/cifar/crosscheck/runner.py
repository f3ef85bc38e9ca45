"""The cross-check run: the trainers stepped side by side on the same batches, and its outputs.

:func:`run` builds the trainers (:mod:`~jaxopt_lab.cifar.crosscheck.trainers`) and hands them, as
one :class:`~jaxopt_lab.cifar.train.EpochTask`, to :func:`jaxopt_lab.cifar.train.run_epochs`: the
resumable epoch loop that :func:`~jaxopt_lab.cifar.train.fit` uses too, which owns the data
position and the checkpoint rules (save every N steps, after each epoch and where ``max_steps``
stops; resume from the latest checkpoint). After every step this module records the batch losses
and the drift of each pair (:class:`_Log`); at the end it writes the outputs of
:mod:`~jaxopt_lab.cifar.crosscheck.report`.

This module is named ``runner`` rather than ``run`` so that the package's ``run`` is only ever the
function.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

from jaxopt_lab.cifar.checkpoint import Checkpointer, DataPosition
from jaxopt_lab.cifar.crosscheck.config import (
    PAIRS,
    ConfigError,
    CrossCheckConfig,
    make_schedule,
    pair_key,
    set_precision,
)
from jaxopt_lab.cifar.crosscheck.counterparts import optax_equivalent
from jaxopt_lab.cifar.crosscheck.report import (
    dataset_label,
    epoch_line,
    markdown_table,
    nanmax,
    plot_run,
    rel_diff,
    rel_param_distance,
    summarize,
    verdict_lines,
)
from jaxopt_lab.cifar.crosscheck.trainers import Trainer, make_trainers
from jaxopt_lab.cifar.train import Batch, run_epochs
from jaxopt_lab.optim.base import Params


@dataclass
class _Log:
    """Everything a run accumulates: the per-step rows and the per-epoch and running figures.

    Checkpointed as JSON next to the trainers' arrays (``rows`` excepted: they are re-read from
    ``metrics.jsonl``), so a resumed run's summary is the uninterrupted run's.
    """

    step: int  # steps taken
    epoch: int  # the data position at the last checkpoint (the loop owns the live one):
    in_epoch: int  # the 1-based epoch in progress and its batches consumed
    running: dict[str, float]  # the loss sums of the epoch in progress so far
    epoch_steps: list[int]
    epoch_losses: dict[str, list[float]]
    epoch_acc: dict[str, list[float]]
    max_param: dict[str, float]
    max_loss: dict[str, float]
    wall: dict[str, float]  # all steps, the first (compilation) included
    first: dict[str, float]  # the first step alone
    warmup: dict[str, float]  # the first step of every process (compiles): step 1 and resumes
    warmup_steps: int  # how many such steps
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, impls: Sequence[str], pairs: Sequence[tuple[str, str]]) -> _Log:
        keys = [pair_key(*p) for p in pairs]
        return cls(
            step=0,
            epoch=1,
            in_epoch=0,
            running=dict.fromkeys(impls, 0.0),
            epoch_steps=[],
            epoch_losses={i: [] for i in impls},
            epoch_acc={i: [] for i in impls},
            max_param=dict.fromkeys(keys, 0.0),
            max_loss=dict.fromkeys(keys, 0.0),
            wall=dict.fromkeys(impls, 0.0),
            first=dict.fromkeys(impls, 0.0),
            warmup=dict.fromkeys(impls, 0.0),
            warmup_steps=0,
        )

    def record(
        self,
        epoch: int,
        row_loss: dict[str, float],
        params: dict[str, Params],
        lr: Any,
        pairs: Sequence[tuple[str, str]],
    ) -> dict[str, Any]:
        """Append the row of the step just taken (losses, pairwise distances) and return it."""
        row: dict[str, Any] = {
            "step": self.step,
            "epoch": epoch,
            "lr": float(lr(self.step - 1)) if callable(lr) else lr,
            "loss": row_loss,
            "rel_param_diff": {},
            "rel_loss_diff": {},
        }
        for a, b in pairs:
            key = pair_key(a, b)
            d = rel_param_distance(params[a], params[b])
            dl = rel_diff(row_loss[a], row_loss[b])
            row["rel_param_diff"][key] = d
            row["rel_loss_diff"][key] = dl
            self.max_param[key] = nanmax(self.max_param[key], d)
            self.max_loss[key] = nanmax(self.max_loss[key], dl)
        self.rows.append(row)
        return row

    def end_epoch(self, steps: int) -> None:
        """Close the epoch in progress after its ``steps`` steps."""
        self.epoch_steps.append(steps)
        for impl, total in self.running.items():
            self.epoch_losses[impl].append(total)
        self.running = dict.fromkeys(self.running, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "rows"}


def _run_id(config: CrossCheckConfig, train_ds: Any) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it (epochs and max_steps may grow)."""
    fixed = {
        k: v for k, v in dataclasses.asdict(config).items() if k not in ("epochs", "max_steps")
    }
    return json.loads(json.dumps({**fixed, "examples": len(train_ds)}))


def _read_rows(path: Path, steps: int) -> list[dict[str, Any]]:
    """The first ``steps`` rows of a run's ``metrics.jsonl`` (later ones came after the save)."""
    try:
        with open(path) as f:
            rows = [json.loads(line) for _, line in zip(range(steps), f, strict=False)]
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot resume: {path} is unreadable ({err})") from None
    if len(rows) < steps:
        raise ConfigError(
            f"cannot resume: {path} has {len(rows)} rows, the checkpoint is at step {steps}"
        )
    return rows


class _Metrics:
    """``metrics.jsonl``, rewritten from the rows a resumed run starts with (None: no file).

    Opened on first use, so after a resume has read the old file's rows back, and never by a run
    that fails to resume (the old file stays as it was).
    """

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self._file: IO[str] | None = None

    def open(self) -> IO[str] | None:
        """The file, created on the first call holding exactly ``rows`` (the resumed steps)."""
        if self._file is None and self.out is not None:
            self._file = open(self.out / "metrics.jsonl", "w")
            for row in self.rows:
                self._file.write(json.dumps(row) + "\n")
        return self._file

    def write(self, row: dict[str, Any]) -> None:
        if (f := self.open()) is not None:
            f.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        if (f := self.open()) is not None:
            f.flush()  # a resume re-reads the rows up to the checkpoint's step

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _CrossCheck:
    """The trainers side by side, as the :class:`~jaxopt_lab.cifar.train.EpochTask` of one run."""

    def __init__(
        self,
        trainers: dict[str, Trainer],
        config: CrossCheckConfig,
        *,
        run_id: dict[str, Any],
        lr: Any,
        eval_ds: Any,
        steps_per_epoch: int,
        out: Path | None,
        say: Callable[[str], None],
    ) -> None:
        self.trainers, self.config, self.run_id, self.lr = trainers, config, run_id, lr
        self.impls = tuple(trainers)
        self.pairs = [p for p in PAIRS if p[0] in self.impls and p[1] in self.impls]
        self.eval_ds, self.steps_per_epoch, self.say = eval_ds, steps_per_epoch, say
        self.log = _Log.start(self.impls, self.pairs)
        self.metrics = _Metrics(out)
        self.warming = True  # this process's first step compiles: kept out of steps_per_s

    @property
    def step(self) -> int:
        return self.log.step

    def restore(self, checkpointer: Checkpointer) -> tuple[DataPosition, int]:
        """Load the latest checkpoint into the trainers and the log (rows from metrics.jsonl)."""
        like = {impl: t.snapshot()[0] for impl, t in self.trainers.items()}
        try:
            restored = checkpointer.restore(like, expect_extras=self.run_id)
        except ValueError as err:  # another run's checkpoint, or a corrupt one: one line
            raise ConfigError(f"cannot resume: {str(err).splitlines()[0]}") from None
        for impl, trainer in self.trainers.items():
            trainer.load(restored.state[impl], restored.extras["trainers"][impl])
        log = self.log = _Log(**restored.extras["log"])
        if self.metrics.out is not None:
            log.rows = _read_rows(self.metrics.out / "metrics.jsonl", log.step)
        self.metrics.rows = list(log.rows)  # a copy: log.rows grows before the file opens
        self.say(f"resumed at step {log.step} (epoch {log.epoch}) from {checkpointer.directory}")
        position = restored.data or DataPosition(log.epoch, log.in_epoch, self.config.seed)
        return position, log.step

    def train(self, batches: Iterator[Batch], epoch: int, steps: int, bar: Any) -> None:
        """``steps`` steps of every trainer on the same batches, each timed and recorded."""
        log = self.log
        for images, labels in islice(batches, steps):
            row_loss, params = {}, {}
            for impl in self.impls:
                start = time.perf_counter()
                row_loss[impl] = self.trainers[impl].step(images, labels)  # syncs: fair timing
                elapsed = time.perf_counter() - start
                log.wall[impl] += elapsed
                if log.step == 0:
                    log.first[impl] = elapsed
                if self.warming:
                    log.warmup[impl] += elapsed
                log.running[impl] += row_loss[impl]
                if self.pairs:
                    params[impl] = self.trainers[impl].params()
            log.warmup_steps += self.warming
            self.warming = False
            log.step += 1
            self.metrics.write(log.record(epoch, row_loss, params, self.lr, self.pairs))
            bar.update(1)
            bar.set_postfix(loss=f"{row_loss['jaxopt_lab']:.4f}", refresh=False)

    def end_epoch(self, epoch: int, steps: int, seconds: float, bar: Any) -> None:
        """Close the epoch's figures, step torch's scheduler, evaluate, print the epoch line."""
        log = self.log
        log.end_epoch(steps)
        for impl in self.impls:
            self.trainers[impl].end_epoch()
            if self.config.evaluate:
                log.epoch_acc[impl].append(self.trainers[impl].evaluate(self.eval_ds))
        bar.clear()
        self.say(
            epoch_line(
                epoch,
                log.epoch_steps[-1],
                self.steps_per_epoch,
                log.epoch_losses,
                log.epoch_acc,
                log.rows,
                self.pairs,
            )
        )

    def snapshot(self, position: DataPosition) -> tuple[Any, dict[str, Any]]:
        """All trainers' arrays; the run's settings, figures and the trainers' extras as JSON."""
        self.metrics.flush()
        self.log.epoch, self.log.in_epoch = position.epoch, position.batch_index
        snaps = {impl: self.trainers[impl].snapshot() for impl in self.impls}
        extras = {
            **self.run_id,
            "log": self.log.to_json(),
            "trainers": {k: v[1] for k, v in snaps.items()},
        }
        return {k: v[0] for k, v in snaps.items()}, extras


def run(
    config: CrossCheckConfig,
    train_ds: Any,
    eval_ds: Any | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    plot: bool = True,
    print_fn: Callable[[str], None] | None = print,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 0,
) -> dict[str, Any]:
    """Run the cross-check and write its outputs.

    Args:
        config: the run's settings (validated here).
        train_ds: the :class:`jaxopt_lab.cifar.data.Dataset` trained on.
        eval_ds: accuracy after each epoch is measured on it (default: ``train_ds``, which is what
            the tutorial does with the test split).
        out_dir: where ``metrics.jsonl``, ``summary.json``, ``summary.md`` and ``crosscheck.png``
            go (created if needed; None: write nothing).
        progress: show a tqdm bar on stderr.
        plot: write the PNG plot.
        print_fn: per-epoch lines go here (None: silent).
        checkpointer: save all three trainers (the torch optimizer through
            :func:`jaxopt_lab.interop.torch_state.state_from_torch`) and the run's figures into
            it after every epoch and every ``checkpoint_every`` steps; if it already holds a step,
            resume from the latest first. A resumed run writes the same ``metrics.jsonl`` and
            summary numbers as the uninterrupted run (timings aside); the settings must match the
            checkpoint's (``epochs`` and ``max_steps`` may grow).
        checkpoint_every: also save every this many steps (0: at epoch ends only).

    Returns:
        The summary (also written to ``summary.json``).
    """
    from jaxopt_lab.cifar.data import num_batches

    config.validate()
    say = print_fn or (lambda _: None)
    eval_ds = train_ds if eval_ds is None else eval_ds
    dtypes = set_precision(config.precision)
    steps_per_epoch = num_batches(train_ds, batch_size=config.batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"the dataset has {len(train_ds.labels)} examples: fewer than one batch of "
            f"{config.batch_size}"
        )
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)

    schedule = (
        make_schedule(config.schedule, config.lr, steps_per_epoch) if config.schedule else None
    )
    lr: Any = schedule.jax_fn if schedule is not None else config.lr
    equivalent = optax_equivalent(config.optimizer, lr, config.opt_kwargs)
    no_optax = equivalent is None and "optax" in config.compare
    if no_optax:  # ASGD, SparseAdam: optax has none; L-BFGS: optax.lbfgs is another algorithm
        config = dataclasses.replace(
            config, compare=tuple(c for c in config.compare if c != "optax")
        )
    trainers = make_trainers(config, lr, equivalent, schedule, dtypes)
    impls = config.implementations

    label = dataset_label(train_ds)
    say(f"data: {label}")
    say(
        f"run: {config.optimizer} lr={config.lr} {config.opt_kwargs or ''} "
        f"schedule={config.schedule} batch={config.batch_size} steps={total} "
        f"({steps_per_epoch}/epoch) precision={config.precision} implementations={','.join(impls)}"
    )
    if no_optax:
        say(f"optax equivalent: none for {config.optimizer} (jaxopt_lab.registry); not run")
    if "optax" in impls:
        say(
            f"optax equivalent: {equivalent.expression}"
            + ("" if equivalent.exact else " (inexact)")
        )

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    task = _CrossCheck(
        trainers,
        config,
        run_id=_run_id(config, train_ds),
        lr=lr,
        eval_ds=eval_ds,
        steps_per_epoch=steps_per_epoch,
        out=out,
        say=say,
    )
    try:
        run_epochs(
            task,
            train_ds,
            epochs=config.epochs,
            batch_size=config.batch_size,
            shuffle=config.shuffle,
            seed=config.seed,
            dtype=dtypes[0],
            max_steps=config.max_steps,
            checkpointer=checkpointer,
            checkpoint_every=checkpoint_every,
            progress=progress,
        )
        task.metrics.open()  # also when nothing was left to train: the file holds the run's rows
    finally:
        task.metrics.close()

    log = task.log
    summary = summarize(
        config=config,
        train_ds=train_ds,
        eval_ds=eval_ds,
        label=label,
        impls=impls,
        pairs=task.pairs,
        rows=log.rows,
        steps_per_epoch=steps_per_epoch,
        epoch_steps=log.epoch_steps,
        epoch_losses=log.epoch_losses,
        epoch_acc=log.epoch_acc,
        max_param=log.max_param,
        max_loss=log.max_loss,
        wall=log.wall,
        first=log.first,
        warmup=log.warmup,
        warmup_steps=log.warmup_steps,
        equivalent=equivalent,
    )
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "summary.md").write_text(markdown_table(summary))
        if plot:
            plot_run(log.rows, summary, out / "crosscheck.png")
    for line in verdict_lines(summary):
        say(line)
    return summary
