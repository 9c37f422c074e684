"""Training methods by name (`amid-train --method NAME`).

Each module of this folder registers its classes with `@METHODS.register("name")`;
every module here is imported below, so adding a method is one file (plus its loss
in `distill/losses/`). See `base.py` for what a method provides.
"""

from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    check_method_options,
    method_options,
    weighted_total,
)
from amid.registry import import_all

import_all(__name__, __path__)

__all__ = ["METHODS", "Method", "MethodContext", "check_method_options", "method_options",
           "weighted_total"]
