"""The optimizers: the ``Optimizer`` type, the per-leaf builder and torch's arithmetic.

Layout (one concept per module):

- ``base``: ``Optimizer``/``ClosureOptimizer``, the ``(params, grads, state) -> (params, state)``
  contract; ``leafwise``: the builders, ``leafwise`` (a per-leaf rule, every elementwise
  algorithm) and ``grouped`` (a rule over all leaves of a dtype with state of any shape: NAdam,
  ASGD, Adafactor).
- torch's arithmetic: ``kernels`` (one function per ATen op, with its rounding), ``double`` (torch's
  Python-double scalars carried as double-single pairs when x64 is off), ``reductions`` (torch's
  reduction orders), ``complex_params`` (complex tensors as torch's ``view_as_real``).
- ``native`` and ``csrc/``: the optional one-pass C++ kernels (XLA FFI) and their routing.
- ``checks`` (torch's validation messages), ``groups`` (param groups), ``flat`` (one flat buffer
  per dtype), ``finite`` (non-finite guards).
- One module per algorithm: ``sgd``, ``adam`` (Adam, AdamW), ``adagrad``, ``rmsprop``, ``nadam``,
  ``radam``, ``adamax``, ``adadelta``, ``asgd``, ``rprop``, ``adafactor``, ``muon``,
  ``sparse_adam``, ``lbfgs`` (with ``line_search``); ``swa_utils`` as ``torch.optim.swa_utils``.

The public names are re-exported by :mod:`jaxopt_lab`; nothing here is imported by path from
user code except ``jaxopt_lab.optim.swa_utils`` (also ``jaxopt_lab.swa_utils``).
"""
