"""Dataset adapters: each turns a dataset's published layout into a manifest.

Adding one is one file in this folder: a module with an `Options` model and
an `@adapter("name", Options)` function, or a plain `@ADAPTERS.register("name")`
one without options (every module here is imported below; `registry`).
"""

from amid.extract.adapters.registry import ADAPTERS
from amid.registry import import_all

import_all(__name__, __path__)

__all__ = ["ADAPTERS"]
