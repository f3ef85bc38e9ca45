"""jaxopt_lab: torch.optim's optimizers as pure, jit-compiled JAX functions, equal to torch.

::

    import jaxopt_lab as jol

    opt = jol.adam(lr=1e-3)
    state = opt.init(params)
    params, state = jax.jit(opt.update)(params, grads, state)
"""

from ._adagrad import AdagradState as AdagradState
from ._adagrad import adagrad as adagrad
from ._adam import AdamState as AdamState
from ._adam import adam as adam
from ._adam import adamw as adamw
from ._base import Optimizer as Optimizer
from ._base import Schedule as Schedule
from ._groups import ParamGroupsState as ParamGroupsState
from ._groups import param_groups as param_groups
from ._leafwise import LeafContext as LeafContext
from ._leafwise import ScalarMath as ScalarMath
from ._leafwise import leafwise as leafwise
from ._optax_interop import as_optax as as_optax
from ._optax_interop import from_optax as from_optax
from ._rmsprop import RMSpropState as RMSpropState
from ._rmsprop import rmsprop as rmsprop
from ._sgd import SGDState as SGDState
from ._sgd import sgd as sgd

__version__ = "0.1.0"

__all__ = [
    "AdagradState",
    "AdamState",
    "LeafContext",
    "Optimizer",
    "ParamGroupsState",
    "RMSpropState",
    "SGDState",
    "ScalarMath",
    "Schedule",
    "adagrad",
    "adam",
    "adamw",
    "as_optax",
    "from_optax",
    "leafwise",
    "param_groups",
    "rmsprop",
    "sgd",
]
