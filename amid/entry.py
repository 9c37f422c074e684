"""Console-script entry points: pin the CPU's numerics, then run the stage's command.

Why (docs/reproducibility.md): PyTorch, MKL and OpenBLAS pick their kernels by
the CPU they find, so AVX-512 code on one machine and AVX2 code on another add
in another order, and the committed metrics did not come back on another CPU
model. Pinned, results depend on the code, inputs, library versions and thread
count only. Not in `amid/__init__.py`: a library must not change the process it
is imported into (the pins make MKL's batched products two to three times
slower). Each variable is read lazily by its library (at its first kernel), so
pinning works even after `import torch`; a value the user has set is left alone.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform

CPU_NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's vectorised CPU kernels: AVX2 on every x86-64
    "MKL_CBWR": "COMPATIBLE",  # MKL's conditional numerical reproducibility, any CPU
    "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy's OpenBLAS (PCA, metrics): AVX2 kernels
}


def pin_cpu_numerics() -> dict[str, str]:
    """Set each unset `CPU_NUMERICS` (x86-64 only: x86 kernel families); returns those in force."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {name: os.environ.setdefault(name, value) for name, value in CPU_NUMERICS.items()}


def _run(module: str, function: str = "main") -> None:
    pin_cpu_numerics()  # before the command's module imports torch and numpy
    getattr(importlib.import_module(module), function)()


# the console scripts of pyproject.toml: amid-extract, amid-train, amid-evaluate, amid-predict
extract = functools.partial(_run, "amid.extract.cli")
train = functools.partial(_run, "amid.distill.cli")
evaluate = functools.partial(_run, "amid.evaluate.cli")
predict = functools.partial(_run, "amid.evaluate.cli", "predict_main")
