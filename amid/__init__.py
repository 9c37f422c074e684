"""AMID: adversarial mutual information distillation on cached features.

`amid` (this folder) holds what every stage shares: the typed configuration,
the manifest, the HDF5 feature-cache format and the registries. The stages live
in `amid.extract` (folder `extract/`), `amid.distill` (`distill/`) and
`amid.evaluate` (`evaluate/`).

Importing `amid` changes nothing in the process: the CPU-numerics pins that make
results reproducible across machines are set by the command-line entry points
(`amid.entry`, docs/reproducibility.md), not here.
"""

__version__ = "0.1.0"
