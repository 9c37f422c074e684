"""Fixtures shared across the suite: a small demo dataset, made once per session."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from amid.entry import pin_cpu_numerics
from amid.extract.demo import DemoSpec, make_demo

# The suite runs commands in-process as well as through their console scripts: the
# same CPU numerics for both (the entry points pin them; importing amid does not).
pin_cpu_numerics()

# One torch thread per xdist worker (and per console script or `dvc repro` it starts: they
# inherit the variable): `pytest -n auto` already runs one worker per core, and a second
# thread each only spins against the other worker in OpenMP's busy wait. Tests compare what
# they computed in the same run, never committed bytes (logmel's FFT differs in the last
# bit between 1 and 2 threads; training on the same caches does not).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]

# Console scripts and dvc from this interpreter's own bin/, first on PATH for every
# subprocess a test starts: a version manager's shim (pyenv's is a bash script that runs
# `pyenv exec`) adds a tenth of a second to each of the suite's many processes.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                      os.environ.get("PATH", "")])


# what a command run in-process (typer's CliRunner, or its main()) sets globally through
# amid.cli.setup_logging: the root logger's handlers (basicConfig(force=True) points them
# at the runner's stream, which it closes) and the quiet mode's variables for transformers
_QUIET_VARIABLES = ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")


@pytest.fixture(autouse=True)
def _restore_logging_and_quiet_variables():
    """Each test starts with the logging and environment the one before it found: a
    closed stream left on the root logger printed '--- Logging error ---' at the next
    log line, and a quiet run's variables silenced the bars of later, loud ones."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {k: os.environ.get(k) for k in _QUIET_VARIABLES}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A 10-class demo with 10 samples per class (6 train, 2 val, 2 test)."""
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, DemoSpec(n_per_class=10))
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding end-to-end (`slow`) tests first, each file's tests in their order.

    With `--dist loadfile --no-loadscope-reorder` (pyproject.toml) xdist hands the files to
    the workers in this order, so the long ones start early and the many short ones even out
    the workers' ends (xdist's default order, most tests first, sent the one-test end-to-end
    files last, where one worker ran them while the other sat idle)."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: the rest keep their order
