"""AMID: adversarial mutual information distillation on cached features.

`amid` holds what every stage shares (configuration, manifest, cache format,
registries); the stages are `amid.extract` (folder `extract/`), `amid.distill`
(`distill/`) and `amid.evaluate` (`evaluate/`). Importing it changes nothing in
the process: the CPU-numerics pins are set by the entry points (`amid.entry`).
"""

__version__ = "0.1.0"
