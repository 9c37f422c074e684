"""Dataset adapters: each turns a dataset's published layout into a manifest.

Adding one: a module with a `@ADAPTERS.register("name")` function, imported here.
"""

from amid.extract.adapters import (  # noqa: F401  (registration)
    activitynet,
    csv,
    demo,
    iemocap,
    ucf51,
)
from amid.extract.adapters.registry import ADAPTERS

__all__ = ["ADAPTERS"]
