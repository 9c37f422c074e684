"""Device names of both stages resolve the same way, with errors naming the option."""

from __future__ import annotations

import os
import platform
import resource

import pytest
import torch

from amid import devices
from amid.devices import amp_allowed, resolve_device
from amid.errors import ConfigError


def test_auto_and_explicit_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"extract\.audio\.device is 'cuda:1' but no CUDA"):
        resolve_device("cuda:1", "extract.audio.device")
    with pytest.raises(ConfigError, match=r"train\.device: .*gpu"):
        resolve_device("gpu", "train.device")


def test_autocast_only_on_the_listed_devices(monkeypatch):
    assert amp_allowed(torch.device("cuda", 0)) and not amp_allowed(torch.device("cpu"))
    monkeypatch.setattr(devices, "AMP_DEVICES", ("cuda", "cpu"))
    assert amp_allowed(torch.device("cpu"))


REUSE = r"""
import json, resource, sys
import torch
from amid.devices import keep_large_blocks_in_heap
done = keep_large_blocks_in_heap() if sys.argv[1] == "on" else []
faults = []
for _ in range(8):  # a step's worth of 64 MiB blocks, written, freed, asked for again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.ones(16 << 20)
    b = a * 2
    c = b + a
    del a, b, c
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"done": done, "faults": faults}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_large_blocks_are_reused_not_faulted_in_again(monkeypatch):
    import json
    import subprocess
    import sys

    def run(mode, **env):
        out = subprocess.run([sys.executable, "-c", REUSE, mode], check=True, text=True,
                             capture_output=True, env={**os.environ, **env})
        return json.loads(out.stdout)

    pages = (64 << 20) // resource.getpagesize()  # pages of one block
    off, on = run("off"), run("on")
    # glibc's default: each block is a fresh mmap whose every page faults in, each time
    assert all(f >= 3 * pages * 0.9 for f in off["faults"])
    # raised thresholds: freed blocks stay in the heap and later ones reuse them (how
    # many depends on where each lands; measured about a third of the default's faults)
    assert on["done"] == list(devices.HEAP_LIMITS)
    assert sum(on["faults"][1:]) < 0.6 * sum(off["faults"][1:])
    # a limit the user set in the environment is theirs. Asked in this process: which
    # limits it sets depends on os.environ alone (no page faults to count), a third
    # interpreter would cost a torch import, and the suite's in-process trainings call it
    # in this process too
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert devices.keep_large_blocks_in_heap() == ["MALLOC_MMAP_THRESHOLD_"]
