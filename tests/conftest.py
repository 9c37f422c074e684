"""Fixtures shared across the suite: a small demo dataset, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from amid.entry import pin_cpu_numerics
from amid.extract.demo import DemoSpec, make_demo

# The suite runs commands in-process as well as through their console scripts: the
# same CPU numerics for both (the entry points pin them; importing amid does not).
pin_cpu_numerics()

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A 10-class demo with 10 samples per class (6 train, 2 val, 2 test)."""
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, DemoSpec(n_per_class=10))
    return out
