"""``torch.optim.lr_scheduler`` as pure, jit-traceable functions of the scheduler step count.

Every constructor returns an :class:`LRSchedule`: a pure function ``count -> lr`` whose value at
``count = k`` is torch's ``optimizer.param_groups[0]["lr"]`` after constructing the scheduler and
calling ``scheduler.step()`` ``k`` times. Constructing a torch scheduler already performs one step,
so with torch's loop ``optimizer.step(); scheduler.step()`` the k-th optimizer step (from 0) uses
``schedule(k)``, which is exactly what an optimizer given ``lr=schedule`` evaluates::

    import jaxopt_lab as jol
    from jaxopt_lab import schedules

    opt = jol.sgd(lr=schedules.cosine_annealing_lr(0.1, T_max=100), momentum=0.9)

``count`` is an integer scalar, concrete or traced (use ``jax.vmap`` for many counts at once);
hyper-parameters are Python numbers, fixed when the schedule is built. Argument names and defaults
are torch's. Values below ``horizon`` (default :data:`DEFAULT_HORIZON`) are torch's own doubles,
replayed when the schedule is built; :mod:`jaxopt_lab.schedules.core` explains how.

Modules:
    core: :class:`LRSchedule`, its table of torch's doubles, and the protocol the combinators
        read (:class:`Rule`, :class:`Restart`).
    replay: building a schedule from torch's rule (host replay into the table, graph past it).
    rules: StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, ConstantLR,
        PolynomialLR, MultiplicativeLR, LambdaLR, CosineAnnealingWarmRestarts.
    cyclical: CyclicLR and OneCycleLR, with their momentum schedules.
    combinators: ChainedScheduler, SequentialLR, and per-epoch driving.
    plateau: ReduceLROnPlateau (a state and an update).
"""

from jaxopt_lab.schedules.combinators import chained as chained
from jaxopt_lab.schedules.combinators import per_epoch as per_epoch
from jaxopt_lab.schedules.combinators import sequential_lr as sequential_lr
from jaxopt_lab.schedules.core import DEFAULT_HORIZON as DEFAULT_HORIZON
from jaxopt_lab.schedules.core import LRSchedule as LRSchedule
from jaxopt_lab.schedules.core import Restart as Restart
from jaxopt_lab.schedules.core import Rule as Rule
from jaxopt_lab.schedules.cyclical import cyclic_lr as cyclic_lr
from jaxopt_lab.schedules.cyclical import cyclic_momentum as cyclic_momentum
from jaxopt_lab.schedules.cyclical import one_cycle_lr as one_cycle_lr
from jaxopt_lab.schedules.cyclical import one_cycle_momentum as one_cycle_momentum
from jaxopt_lab.schedules.plateau import PlateauSchedule as PlateauSchedule
from jaxopt_lab.schedules.plateau import PlateauState as PlateauState
from jaxopt_lab.schedules.plateau import reduce_lr_on_plateau as reduce_lr_on_plateau
from jaxopt_lab.schedules.rules import constant_lr as constant_lr
from jaxopt_lab.schedules.rules import cosine_annealing_lr as cosine_annealing_lr
from jaxopt_lab.schedules.rules import (
    cosine_annealing_warm_restarts as cosine_annealing_warm_restarts,
)
from jaxopt_lab.schedules.rules import exponential_lr as exponential_lr
from jaxopt_lab.schedules.rules import lambda_lr as lambda_lr
from jaxopt_lab.schedules.rules import linear_lr as linear_lr
from jaxopt_lab.schedules.rules import multiplicative_lr as multiplicative_lr
from jaxopt_lab.schedules.rules import multistep_lr as multistep_lr
from jaxopt_lab.schedules.rules import polynomial_lr as polynomial_lr
from jaxopt_lab.schedules.rules import step_lr as step_lr

__all__ = [
    "DEFAULT_HORIZON",
    "LRSchedule",
    "PlateauSchedule",
    "PlateauState",
    "Restart",
    "Rule",
    "chained",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "cyclic_momentum",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multiplicative_lr",
    "multistep_lr",
    "one_cycle_lr",
    "one_cycle_momentum",
    "per_epoch",
    "polynomial_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
]
