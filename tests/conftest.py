"""Fixtures shared across the suite: a small demo dataset, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from amid.extract.demo import DemoSpec, make_demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A 10-class demo with 10 samples per class (6 train, 2 val, 2 test)."""
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, DemoSpec(n_per_class=10))
    return out
