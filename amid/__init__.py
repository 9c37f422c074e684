"""AMID: adversarial mutual information distillation on cached features.

`amid` (this folder) holds what every stage shares: the typed configuration,
the manifest, the HDF5 feature-cache format and the registries. The stages live
in `amid.extract` (folder `extract/`), `amid.distill` (`distill/`) and
`amid.evaluate` (`evaluate/`).

Importing `amid` pins the CPU's numerics (docs/reproducibility.md). PyTorch,
MKL and OpenBLAS each pick their kernels by the CPU they find: AVX-512 code on
one machine and AVX2 code on another add in another order, so the same
training gave other weights on an Intel Xeon than on an AMD EPYC, and the
committed metrics did not come back from a fresh clone. Pinned, the results
depend on the code, the inputs and the thread count only. Each variable is
read lazily by its library (at its first kernel), so this works even after
`import torch`; a value the user has set is left alone.
"""

import os
import platform

__version__ = "0.1.0"

CPU_NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's vectorised CPU kernels: AVX2 on every x86-64
    "MKL_CBWR": "COMPATIBLE",  # MKL's conditional numerical reproducibility, any CPU
    "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy's OpenBLAS (PCA, metrics): AVX2 kernels
}
if platform.machine().lower() in ("x86_64", "amd64"):  # the names are x86 kernel families
    for _name, _value in CPU_NUMERICS.items():
        os.environ.setdefault(_name, _value)
