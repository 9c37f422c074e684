"""Training methods by name (`amid-train --method NAME`): every module of this folder is
imported below, each registering its classes (`base.py` says what a method provides)."""

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
