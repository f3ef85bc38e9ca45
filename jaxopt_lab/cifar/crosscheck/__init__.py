"""The three-way cross-check: jaxopt_lab vs optax vs torch.optim, step by step on CIFAR-10.

One run starts three trainers from the same weights (torch's default init of the tutorial's CNN,
transferred with :func:`jaxopt_lab.cifar.models.from_torch`) and feeds them the same batches in the
same order:

- ``jaxopt_lab``: the Flax :class:`~jaxopt_lab.cifar.models.CifarCNN` trained by
  :data:`jaxopt_lab.cifar.train.train_step` with the jaxopt_lab optimizer;
- ``optax``: the same Flax model and step with the closest optax optimizer
  (:func:`optax_equivalent`, adapted by :func:`jaxopt_lab.from_optax`);
- ``torch``: the torch model trained eagerly by ``torch.optim`` (``foreach=False``), its NCHW
  input being the same NumPy batch transposed.

After every step it records the three batch losses and, for each pair of implementations, the
relative parameter distance :func:`rel_param_distance` (the worst elementwise difference of a
layer, relative to that layer's largest weight).

Outputs (in ``out_dir``): ``metrics.jsonl`` (one row per step), ``summary.json``, ``summary.md``
(Markdown tables) and ``crosscheck.png`` (the three loss curves and the pairwise distances).

Use :func:`run`; ``experiments/cifar10.py`` is its command line. The modules, one concern each:

- :mod:`~jaxopt_lab.cifar.crosscheck.config`: the run's settings (:class:`CrossCheckConfig`),
  the schedule flag, the constants;
- :mod:`~jaxopt_lab.cifar.crosscheck.counterparts`: the optax equivalents and their differences;
- :mod:`~jaxopt_lab.cifar.crosscheck.trainers`: the three trainers behind one :class:`Trainer`
  protocol;
- :mod:`~jaxopt_lab.cifar.crosscheck.report`: the drift metrics, the summary, tables and plot;
- :mod:`~jaxopt_lab.cifar.crosscheck.runner`: :func:`run`, on the epoch loop it shares with
  :func:`jaxopt_lab.cifar.train.fit` (:func:`jaxopt_lab.cifar.train.run_epochs`).
"""

from __future__ import annotations

from jaxopt_lab.cifar.crosscheck.config import F64_TOLERANCE as F64_TOLERANCE
from jaxopt_lab.cifar.crosscheck.config import IMPLEMENTATIONS as IMPLEMENTATIONS
from jaxopt_lab.cifar.crosscheck.config import OPTIMIZERS as OPTIMIZERS
from jaxopt_lab.cifar.crosscheck.config import PAIRS as PAIRS
from jaxopt_lab.cifar.crosscheck.config import ConfigError as ConfigError
from jaxopt_lab.cifar.crosscheck.config import CrossCheckConfig as CrossCheckConfig
from jaxopt_lab.cifar.crosscheck.config import Schedule as Schedule
from jaxopt_lab.cifar.crosscheck.config import make_schedule as make_schedule
from jaxopt_lab.cifar.crosscheck.config import pair_key as pair_key
from jaxopt_lab.cifar.crosscheck.config import parse_schedule as parse_schedule
from jaxopt_lab.cifar.crosscheck.counterparts import OptaxEquivalent as OptaxEquivalent
from jaxopt_lab.cifar.crosscheck.counterparts import full_kwargs as full_kwargs
from jaxopt_lab.cifar.crosscheck.counterparts import optax_equivalent as optax_equivalent
from jaxopt_lab.cifar.crosscheck.report import markdown_table as markdown_table
from jaxopt_lab.cifar.crosscheck.report import plot_run as plot_run
from jaxopt_lab.cifar.crosscheck.report import rel_diff as rel_diff
from jaxopt_lab.cifar.crosscheck.report import rel_param_distance as rel_param_distance
from jaxopt_lab.cifar.crosscheck.report import versions as versions
from jaxopt_lab.cifar.crosscheck.runner import run as run
from jaxopt_lab.cifar.crosscheck.trainers import JaxTrainer as JaxTrainer
from jaxopt_lab.cifar.crosscheck.trainers import TorchTrainer as TorchTrainer
from jaxopt_lab.cifar.crosscheck.trainers import Trainer as Trainer
from jaxopt_lab.cifar.crosscheck.trainers import make_trainers as make_trainers

__all__ = [
    "F64_TOLERANCE",
    "IMPLEMENTATIONS",
    "OPTIMIZERS",
    "PAIRS",
    "ConfigError",
    "CrossCheckConfig",
    "JaxTrainer",
    "OptaxEquivalent",
    "Schedule",
    "TorchTrainer",
    "Trainer",
    "full_kwargs",
    "make_schedule",
    "make_trainers",
    "markdown_table",
    "optax_equivalent",
    "pair_key",
    "parse_schedule",
    "plot_run",
    "rel_diff",
    "rel_param_distance",
    "run",
    "versions",
]
