"""Dataset adapters: `prepare_<name>(root, **options) -> manifest DataFrame`.

An adapter declares its options (`dataset.adapter_options`, `--option`) as an
`AdapterOptions` model and registers with `@adapter(name, Options)`: the
function then receives them typed and checked, `fn(root, opts)`, and is
called as `ADAPTERS.get(name)(root, **options)`. A plain function registered
with `@ADAPTERS.register(name)` takes no options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from amid.registry import Registry
from amid.schema import Schema, load

Adapter = Callable[..., pd.DataFrame]
ADAPTERS: Registry[Adapter] = Registry("dataset adapter")


class AdapterOptions(Schema):
    """Base of an adapter's options (none of its own)."""


def options_of(fn: Adapter) -> type[AdapterOptions]:
    return getattr(fn, "Options", AdapterOptions)


def check_options(name: str, options: dict[str, Any], where: str) -> AdapterOptions:
    """The options of adapter `name` typed, any mistake one line naming `where`."""
    unknown = (f"{{where}}: unknown option(s) {{names}} for the {name!r} adapter; "
               "its options: {known}")
    return load(options_of(ADAPTERS.get(name)), options, where, unknown=unknown)


def adapter(name: str, options: type[AdapterOptions]) -> Callable[[Callable], Adapter]:
    """Register `fn(root, opts)` as adapter `name`, called with keyword options."""

    def register(fn: Callable[[Path, Any], pd.DataFrame]) -> Adapter:
        @functools.wraps(fn)
        def call(root: Path, **given: Any) -> pd.DataFrame:
            return fn(Path(root), check_options(name, given, f"{name} adapter"))

        call.Options = options  # type: ignore[attr-defined]
        return ADAPTERS.register(name)(call)

    return register
