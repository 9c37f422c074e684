"""Dataset adapters: `prepare_<name>(root, **options) -> manifest DataFrame`."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from amid.registry import Registry

Adapter = Callable[..., pd.DataFrame]
ADAPTERS: Registry[Adapter] = Registry("dataset adapter")
