"""The CPU-numerics pins: set by the console scripts, never by importing the library."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from amid.entry import CPU_NUMERICS

X86 = platform.machine().lower() in ("x86_64", "amd64")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CPU_NUMERICS}
    return {**env, **extra}


def _python(code: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_importing_amid_and_its_stages_changes_no_environment_variable():
    code = ("import os; before = dict(os.environ); import amid, amid.distill.train, "
            "amid.evaluate.report, amid.extract.run; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    assert _python(code, _clean_env()) == "[]"
    assert _python("import os, amid; print(os.environ.get('MKL_CBWR'))", _clean_env()) == "None"


@pytest.mark.skipif(not X86, reason="the pins name x86 kernel families; elsewhere none is set")
def test_entry_points_pin_what_the_user_left_unset():
    code = ("import os; from amid.entry import pin_cpu_numerics; pin_cpu_numerics(); "
            "print(os.environ['MKL_CBWR'], os.environ['ATEN_CPU_CAPABILITY'], "
            "os.environ['OPENBLAS_CORETYPE'])")
    assert _python(code, _clean_env()) == "COMPATIBLE avx2 Haswell"
    # a value the user chose is theirs
    assert _python(code, _clean_env(MKL_CBWR="AUTO")).split()[0] == "AUTO"


def test_every_console_script_goes_through_the_pinning_entry():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")
               if e.name.startswith("amid-")}
    assert set(scripts) == {"amid-extract", "amid-train", "amid-evaluate", "amid-predict"}
    assert all(v.startswith("amid.entry:") for v in scripts.values())
