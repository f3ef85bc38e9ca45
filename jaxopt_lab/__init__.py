"""jaxopt_lab: torch.optim's optimizers as pure, jit-compiled JAX functions, equal to torch.

::

    import jaxopt_lab as jol

    opt = jol.adam(lr=1e-3)
    state = opt.init(params)
    params, state = jax.jit(opt.update)(params, grads, state)
"""

from jaxopt_lab import losses as losses
from jaxopt_lab import registry as registry
from jaxopt_lab import schedules as schedules
from jaxopt_lab.interop.optax_bridge import as_optax as as_optax
from jaxopt_lab.interop.optax_bridge import from_optax as from_optax
from jaxopt_lab.optim import swa_utils as swa_utils
from jaxopt_lab.optim.adadelta import AdadeltaState as AdadeltaState
from jaxopt_lab.optim.adadelta import adadelta as adadelta
from jaxopt_lab.optim.adafactor import AdafactorState as AdafactorState
from jaxopt_lab.optim.adafactor import adafactor as adafactor
from jaxopt_lab.optim.adagrad import AdagradState as AdagradState
from jaxopt_lab.optim.adagrad import adagrad as adagrad
from jaxopt_lab.optim.adam import AdamState as AdamState
from jaxopt_lab.optim.adam import adam as adam
from jaxopt_lab.optim.adam import adamw as adamw
from jaxopt_lab.optim.adamax import AdamaxState as AdamaxState
from jaxopt_lab.optim.adamax import adamax as adamax
from jaxopt_lab.optim.asgd import ASGDState as ASGDState
from jaxopt_lab.optim.asgd import asgd as asgd
from jaxopt_lab.optim.base import ClosureOptimizer as ClosureOptimizer
from jaxopt_lab.optim.base import Optimizer as Optimizer
from jaxopt_lab.optim.base import Schedule as Schedule
from jaxopt_lab.optim.finite import check_finite as check_finite
from jaxopt_lab.optim.flat import COMPILER_OPTIONS as COMPILER_OPTIONS
from jaxopt_lab.optim.flat import chunked as chunked
from jaxopt_lab.optim.flat import flat as flat
from jaxopt_lab.optim.flat import unflatten_state as unflatten_state
from jaxopt_lab.optim.groups import ParamGroupsState as ParamGroupsState
from jaxopt_lab.optim.groups import param_groups as param_groups
from jaxopt_lab.optim.lbfgs import LBFGSState as LBFGSState
from jaxopt_lab.optim.lbfgs import lbfgs as lbfgs
from jaxopt_lab.optim.leafwise import LeafContext as LeafContext
from jaxopt_lab.optim.leafwise import ScalarMath as ScalarMath
from jaxopt_lab.optim.leafwise import leafwise as leafwise
from jaxopt_lab.optim.muon import MuonState as MuonState
from jaxopt_lab.optim.muon import muon as muon
from jaxopt_lab.optim.nadam import NAdamState as NAdamState
from jaxopt_lab.optim.nadam import nadam as nadam
from jaxopt_lab.optim.radam import RAdamState as RAdamState
from jaxopt_lab.optim.radam import radam as radam
from jaxopt_lab.optim.rmsprop import RMSpropState as RMSpropState
from jaxopt_lab.optim.rmsprop import rmsprop as rmsprop
from jaxopt_lab.optim.rprop import RpropState as RpropState
from jaxopt_lab.optim.rprop import rprop as rprop
from jaxopt_lab.optim.sgd import SGDState as SGDState
from jaxopt_lab.optim.sgd import sgd as sgd
from jaxopt_lab.optim.sparse_adam import SparseAdamState as SparseAdamState
from jaxopt_lab.optim.sparse_adam import sparse_adam as sparse_adam

__version__ = "0.1.0"

# The lab (flax, tensorflow-datasets, orbax, ...: the ``lab`` extra) and the torch hand-off load on
# first use, so that ``import jaxopt_lab`` needs only jax, optax and numpy.
_LAZY_MODULES = {
    "crosscheck": "jaxopt_lab.cifar.crosscheck",
    "data": "jaxopt_lab.cifar.data",
    "models": "jaxopt_lab.cifar.models",
    "train": "jaxopt_lab.cifar.train",
    "torch_state": "jaxopt_lab.interop.torch_state",
}
_LAZY_NAMES = {
    "Checkpointer": "jaxopt_lab.cifar.checkpoint",
    "DataPosition": "jaxopt_lab.cifar.checkpoint",
    "Restored": "jaxopt_lab.cifar.checkpoint",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
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
    "registry",
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
