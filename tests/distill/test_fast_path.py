"""`train.compile`: compiled and eager training agree; a failing compiler falls back to eager."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from amid.distill import compiled as fast
from amid.distill.train import data_from_config, train

from .conftest import make_dataset, set_options


def _cfg(syn, compile_: bool):
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 2
    cfg.train.compile = compile_
    return cfg


def _broken_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_compiled_training_matches_eager(tmp_path, monkeypatch):
    # aot_eager runs Dynamo capture and AOTAutograd's joint forward/backward graphs (the parts
    # that can change semantics) without inductor's C++ build, which takes minutes on 2 cores
    monkeypatch.setattr(fast, "BACKEND", "aot_eager")
    syn = make_dataset(tmp_path)
    data = data_from_config(syn.cfg, torch.device("cpu"))
    eager = train("amid", _cfg(syn, False), tmp_path / "eager", data=data, live=False)
    calls = []
    real = fast.compile_method

    def spy(method, device):
        guards = real(method, device)
        calls.append(guards)
        return guards

    monkeypatch.setattr(fast, "compile_method", spy)
    compiled = train("amid", _cfg(syn, True), tmp_path / "compiled", data=data, live=False)
    assert len(calls) == 1 and calls[0]["losses"].active  # compiled code ran, no fallback
    assert set(calls[0]) == {"losses"}  # a GRU student: forward stays eager
    for a, b in zip(eager, compiled, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["epoch"], key)


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fast, "BACKEND", _broken_backend)
    syn = make_dataset(tmp_path)
    syn.cfg.train.model.student = "pool"  # no RNN: forward is compiled too
    syn.cfg.train.model.auxiliary = "pool"
    data = data_from_config(syn.cfg, torch.device("cpu"))
    eager = train("ts", _cfg(syn, False), tmp_path / "eager", data=data, live=False)
    with caplog.at_level(logging.WARNING, logger="amid.distill"):
        fell_back = train("ts", _cfg(syn, True), tmp_path / "fallback", data=data, live=False)
    warned = [r.getMessage() for r in caplog.records if "running it eagerly" in r.getMessage()]
    assert any(m.startswith("torch.compile of TS.forward failed") for m in warned)
    assert any(m.startswith("torch.compile of TS.losses failed") for m in warned)
    assert any("no compiler here" in m for m in warned)
    assert fell_back == eager  # the eager code path, bit for bit


def test_a_compiled_stack_matches_the_eager_stack(tmp_path, monkeypatch):
    """train.compile inside a --sweep stack: its vmapped loss terms compiled.

    Batches of 24 divide the 72 training samples: one graph per phase (warm-up, then
    adversarial), where the default 32 adds a ragged last batch and a dynamic-shape
    recompile that took more than half of the test's CPU time. That recompile is
    test_compiled_training_matches_eager's (a shape change is the same Dynamo path
    whether or not the losses are vmapped); here what is new is the stack's own graph.
    """
    from amid.distill.train import train_members

    monkeypatch.setattr(fast, "BACKEND", "aot_eager")
    syn = make_dataset(tmp_path)
    data = data_from_config(syn.cfg, torch.device("cpu"))
    made, real = [], fast.compile_stack
    monkeypatch.setattr(fast, "compile_stack", lambda st, d: made.append(real(st, d)) or made[-1])
    stacks = {}
    for compile_ in (False, True):
        cfgs = [_cfg(syn, compile_) for _ in range(2)]
        for cfg in cfgs:
            cfg.train.batch_size = 24
        cfgs[1].train.seed = 1
        set_options(cfgs[1], "amid", alpha=2.0)
        runs = [tmp_path / f"{compile_}-{i}" for i in range(2)]
        stacks[compile_] = train_members("amid", cfgs, runs, data=data, live=False)
    assert len(made) == 1  # only the compiled stack asked for it
    assert set(made[0]) == {"losses"}
    assert all(g.active for g in made[0].values())  # compiled code ran, no fallback
    for eager, compiled in zip(stacks[False], stacks[True], strict=True):
        assert compiled.error is None and len(eager.history) == len(compiled.history) > 0
        for a, b in zip(eager.history, compiled.history, strict=True):
            for key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["epoch"], key)


def test_a_stack_whose_compiler_fails_runs_eagerly(tmp_path, monkeypatch, caplog):
    from amid.distill.train import train_members

    monkeypatch.setattr(fast, "BACKEND", _broken_backend)
    syn = make_dataset(tmp_path)
    syn.cfg.train.model.dropout = 0.0  # so the stacked member equals its lone run
    data = data_from_config(syn.cfg, torch.device("cpu"))
    cfgs = [_cfg(syn, True) for _ in range(2)]
    cfgs[1].train.seed = 1
    with caplog.at_level(logging.WARNING, logger="amid.distill"):
        res = train_members("ts", cfgs, [tmp_path / "a", tmp_path / "b"], data=data, live=False)
    assert all(r.error is None for r in res)
    assert "torch.compile of Stack.losses failed" in caplog.text
    lone = train("ts", _cfg(syn, False), tmp_path / "lone", data=data, live=False)
    for a, b in zip(lone, res[0].history, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), (a["epoch"], key)
