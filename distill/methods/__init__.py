"""Training methods by name (`amid-train --method NAME`).

Each module registers its classes with `@METHODS.register("name")`; importing
it here is the one line that makes a new method available. See `base.py` for
what a method provides.
"""

from amid.distill.methods import amid as _amid  # noqa: F401  (registers ts, ts_ta, amid)
from amid.distill.methods import ccl as _ccl  # noqa: F401  (registers ccl)
from amid.distill.methods import crcd as _crcd  # noqa: F401  (registers crcd)
from amid.distill.methods import crd as _crd  # noqa: F401  (registers crd)
from amid.distill.methods import gmc as _gmc  # noqa: F401  (registers gmc)
from amid.distill.methods import kd as _kd  # noqa: F401  (registers kd)
from amid.distill.methods import simple as _simple  # noqa: F401  (registers baseline, teacher)
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    check_method_options,
    method_options,
    weighted_total,
)

__all__ = ["METHODS", "Method", "MethodContext", "check_method_options", "method_options",
           "weighted_total"]
