"""Which device a stage runs on (`train.device` and `extract.<m>.device` alike: "auto"
is the GPU when there is one), and where it may use mixed precision."""

from __future__ import annotations

import torch

from amid.errors import ConfigError

# Autocast only on GPUs, where it is the difference between model speed and a fraction
# of it; a CPU without bf16 units runs it slower than fp32. Tests add "cpu" to run the
# mixed-precision path (its dtype handling) without a GPU.
AMP_DEVICES = ("cuda",)


def resolve_device(name: str, option: str = "device") -> torch.device:
    """`auto` -> cuda when available, else cpu; a CUDA device without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{option} is {name!r} but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError as exc:  # e.g. "gpu", "cuda:x"
        raise ConfigError(f"{option}: {exc}") from None


def amp_allowed(device: torch.device) -> bool:
    """Whether autocast may run on `device` (see `AMP_DEVICES`)."""
    return device.type in AMP_DEVICES


# glibc's malloc hands every block over 32 MiB straight to mmap and back to the kernel
# on free, so each new one faults its pages in afresh; a stacked sweep allocates such
# blocks (M members' batches, their normalised copies) every step. Kept in the heap,
# they are reused: on 0.1 x UCF51 with 16 members, 1.6 M page faults became 0.4 M and
# a stacked epoch about 7 % shorter (docs/results.md section 8). Numbers unchanged.
HEAP_LIMITS = {"MALLOC_MMAP_THRESHOLD_": (-3, 1 << 30),  # mallopt(M_MMAP_THRESHOLD, 1 GiB)
               "MALLOC_TRIM_THRESHOLD_": (-1, 1 << 30)}  # mallopt(M_TRIM_THRESHOLD, 1 GiB)


def keep_large_blocks_in_heap() -> list[str]:
    """Raise glibc's mmap and trim thresholds for this process (training on the CPU),
    except those the user set (glibc's variables); off glibc nothing. Returns what was set.
    """
    import ctypes
    import os
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return []
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return []
    done = []
    for env, (param, value) in HEAP_LIMITS.items():
        if env not in os.environ and libc.mallopt(param, ctypes.c_int(value)) == 1:
            done.append(env)
    return done
