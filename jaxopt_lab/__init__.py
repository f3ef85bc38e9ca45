"""jaxopt_lab: torch.optim's optimizers as pure, jit-compiled JAX functions, equal to torch.

::

    import jaxopt_lab as jol

    opt = jol.adam(lr=1e-3)
    state = opt.init(params)
    params, state = jax.jit(opt.update)(params, grads, state)
"""

from . import losses as losses
from . import schedules as schedules

# exports: radam, adamax, adadelta, rprop
from . import swa_utils as swa_utils

# exports: nadam, asgd, adafactor
from ._adadelta import AdadeltaState as AdadeltaState
from ._adadelta import adadelta as adadelta
from ._adafactor import AdafactorState as AdafactorState
from ._adafactor import adafactor as adafactor
from ._adagrad import AdagradState as AdagradState
from ._adagrad import adagrad as adagrad
from ._adam import AdamState as AdamState
from ._adam import adam as adam
from ._adam import adamw as adamw
from ._adamax import AdamaxState as AdamaxState
from ._adamax import adamax as adamax
from ._asgd import ASGDState as ASGDState
from ._asgd import asgd as asgd

# exports: sparse_adam, muon, swa_utils
from ._base import ClosureOptimizer as ClosureOptimizer
from ._base import Optimizer as Optimizer
from ._base import Schedule as Schedule
from ._finite import check_finite as check_finite
from ._flat import COMPILER_OPTIONS as COMPILER_OPTIONS
from ._flat import chunked as chunked
from ._flat import flat as flat
from ._flat import unflatten_state as unflatten_state
from ._groups import ParamGroupsState as ParamGroupsState
from ._groups import param_groups as param_groups
from ._lbfgs import LBFGSState as LBFGSState
from ._lbfgs import lbfgs as lbfgs
from ._leafwise import LeafContext as LeafContext
from ._leafwise import ScalarMath as ScalarMath
from ._leafwise import leafwise as leafwise
from ._muon import MuonState as MuonState
from ._muon import muon as muon
from ._nadam import NAdamState as NAdamState
from ._nadam import nadam as nadam
from ._optax_interop import as_optax as as_optax
from ._optax_interop import from_optax as from_optax
from ._radam import RAdamState as RAdamState
from ._radam import radam as radam
from ._rmsprop import RMSpropState as RMSpropState
from ._rmsprop import rmsprop as rmsprop
from ._rprop import RpropState as RpropState
from ._rprop import rprop as rprop
from ._sgd import SGDState as SGDState
from ._sgd import sgd as sgd
from ._sparse_adam import SparseAdamState as SparseAdamState
from ._sparse_adam import sparse_adam as sparse_adam

# exports: lbfgs
from .checkpoint import Checkpointer as Checkpointer
from .checkpoint import DataPosition as DataPosition
from .checkpoint import Restored as Restored

__version__ = "0.1.0"

# Submodules with heavy imports (tensorflow-datasets, flax models, the training loop) load on
# first use: ``jol.data``, ``jol.models``, ``jol.train``, ``jol.crosscheck``, ``jol.torch_state``.
_LAZY = ("crosscheck", "data", "models", "torch_state", "train")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ASGDState",
    "AdadeltaState",
    "AdafactorState",
    "AdagradState",
    "AdamState",
    "AdamaxState",
    "Checkpointer",
    "ClosureOptimizer",
    "DataPosition",
    "LBFGSState",
    "LeafContext",
    "MuonState",
    "NAdamState",
    "Optimizer",
    "ParamGroupsState",
    "RAdamState",
    "RMSpropState",
    "Restored",
    "RpropState",
    "SGDState",
    "ScalarMath",
    "Schedule",
    "SparseAdamState",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "as_optax",
    "asgd",
    "check_finite",
    "chunked",
    "crosscheck",
    "data",
    "flat",
    "from_optax",
    "lbfgs",
    "leafwise",
    "losses",
    "models",
    "muon",
    "nadam",
    "param_groups",
    "radam",
    "rmsprop",
    "rprop",
    "schedules",
    "sgd",
    "sparse_adam",
    "swa_utils",
    "torch_state",
    "train",
    "unflatten_state",
]
