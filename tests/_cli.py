"""Run a script's ``main(argv)`` in the test process, as its command line would run it.

A subprocess pays the Python, JAX and torch imports (2-4 s of CPU on the project's machine) on
every call, and compiles from cold. ``experiments/cifar10.py`` ends in ``sys.exit(main())``:
``main`` returns the process's exit status and argparse's usage errors raise ``SystemExit`` with
it, so a test that checks the status, stdout, stderr and the files a run writes can call ``main``
directly. test_crosscheck.py keeps true subprocess runs of the real command for what only a fresh
interpreter shows (``__main__``, import-time output on stderr).

What a fresh process would not share with the test process is set for the call and restored
after it: JAX x64 is off (its default, the mode the CLI's users run; ``--precision f64`` turns it
on itself, and it is restored after), and ``sys.path``, the working directory and the
environment come back as they were. Log records at WARNING and above (absl/orbax print those on
a process's stderr) are appended to the returned ``stderr``, so "one line on stderr" stays a
real claim in process. The suite's own settings stay on: strict dtype and rank promotion
(tests/conftest.py) only turn an implicit promotion into an error, and warnings are errors
(pyproject.toml); either makes a run fail, never pass, where a fresh process would differ.

Not for ``experiments/device_check.py``: its dry run imports tests/cases.py under x64 off and
relies on standard promotion, so it stays a subprocess (tests/test_device_check.py).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import jax


class Result(NamedTuple):
    """What ``subprocess.run(..., capture_output=True, text=True)`` would report."""

    returncode: int
    stdout: str
    stderr: str


@functools.cache
def load_script(path: Path) -> ModuleType:
    """The script at ``path`` as a module (imported once; its ``__name__`` is not ``__main__``)."""
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}:{record.name}:{record.getMessage()}\n")


def _exit_status(code: object) -> int:
    """The status ``SystemExit(code)`` gives a process: None is 0, a message is 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def run_main(script: Path, *args: str) -> Result:
    """``python script *args``, in this process: exit status, stdout, stderr (+ log records)."""
    main = load_script(script).main
    out, err, records = io.StringIO(), io.StringIO(), _Records()
    saved_path, saved_cwd, saved_env = list(sys.path), os.getcwd(), dict(os.environ)
    saved_x64 = jax.config.jax_enable_x64
    root = logging.getLogger()
    jax.config.update("jax_enable_x64", False)
    root.addHandler(records)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse: a usage error (2) or --help (0)
                code = _exit_status(exit_.code)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
    finally:
        root.removeHandler(records)
        jax.config.update("jax_enable_x64", saved_x64)
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        if dict(os.environ) != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
    return Result(code, out.getvalue(), err.getvalue() + "".join(records.lines))
