"""The CIFAR-10 lab: the tutorial's CNN (``models``), tfds loading (``data``), the jitted training
loop (``train``), checkpoints (``checkpoint``) and the three-way cross-check (``crosscheck``).

It needs the ``lab`` extra (flax, tensorflow-datasets, array_record, pillow, orbax, tqdm,
matplotlib): ``pip install 'jaxopt_lab[lab]'``. Importing any module here without it raises an
``ImportError`` that names the extra and the missing packages.
"""

from __future__ import annotations

import importlib.util

# import name -> pip name, for the ``lab`` extra of pyproject.toml.
LAB_EXTRA = {
    "flax": "flax",
    "tensorflow_datasets": "tensorflow-datasets",
    "array_record": "array_record",
    "PIL": "pillow",
    "orbax.checkpoint": "orbax-checkpoint",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
}


def _missing() -> list[str]:
    missing = []
    for module, dist in LAB_EXTRA.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent is missing, or sys.modules holds None
            found = False
        if not found:
            missing.append(dist)
    return missing


def require_lab_extra() -> None:
    """Raises ImportError naming the ``lab`` extra if any of its packages is missing."""
    if missing := _missing():
        raise ImportError(
            f"jaxopt_lab.cifar needs the 'lab' extra, missing: {', '.join(missing)}. "
            "Install it with: pip install 'jaxopt_lab[lab]'"
        )


require_lab_extra()
