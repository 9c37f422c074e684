"""Saving and reloading modules: multi-modal order, wrong files."""

from __future__ import annotations

import torch
from torch import nn

from amid.distill.inference import load_weights, save_module
from amid.distill.models import MultiModalEncoder, Student


def _student(order: list[str]) -> Student:
    dims = {"visual": 5, "audio": 3}
    mods = {m: {"in_dim": dims[m], "out_dim": 4, "kind": "pool", "hidden": 8} for m in order}
    return Student(MultiModalEncoder(mods, 4), nn.Linear(4, 2))


def test_reloaded_student_fuses_modalities_in_training_order(tmp_path):
    torch.manual_seed(0)
    model = _student(["visual", "audio"]).eval()  # not alphabetical on purpose
    save_module(model, {"arch": {"encoder": model.encoder.config()}}, tmp_path, "student")
    import json

    arch = json.loads((tmp_path / "student.json").read_text())["arch"]["encoder"]
    again = Student(MultiModalEncoder(**arch), nn.Linear(4, 2)).eval()
    load_weights(again, tmp_path / "student.safetensors")
    x = {"visual": (torch.randn(3, 2, 5), torch.tensor([2, 1, 2])),
         "audio": (torch.randn(3, 4, 3), torch.tensor([4, 4, 1]))}
    torch.testing.assert_close(again(x)[1], model(x)[1])
