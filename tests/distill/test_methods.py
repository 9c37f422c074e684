"""Methods: gradient routing, warm-up, dynamic weights, fixed teacher, missing modalities."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from amid.distill.train import data_from_config

from .conftest import build_method, make_dataset, total


def _method(syn, name="amid", **options):
    data = data_from_config(syn.cfg, torch.device("cpu"))
    method = build_method(syn.cfg, data, name, **options)
    batch = data.batch(data.splits["train"][:24])
    return method, batch


def _grads(module):
    return [p.grad for p in module.parameters()]


def _zero_or_none(grads):
    return all(g is None or not g.abs().any() for g in grads)


@pytest.fixture
def syn(tmp_path):
    return make_dataset(tmp_path)


def test_adversarial_term_reaches_only_the_student_side(syn):
    method, batch = _method(syn, warmup_epochs=1)
    method.train()
    terms = method.losses(batch, method(batch), epoch=1)
    assert terms["adv"] > 0
    terms["adv"].backward()
    assert _zero_or_none(_grads(method.teacher.head))
    assert _zero_or_none(_grads(method.teacher.aux_encoder))
    assert all(g is None for g in _grads(method.discriminators))
    assert not _zero_or_none(_grads(method.student.encoder))


def test_total_loss_never_gives_the_discriminators_gradients(syn):
    method, batch = _method(syn, warmup_epochs=0)
    total(method, batch, method(batch), 0)["total"].backward()
    assert all(g is None for g in _grads(method.discriminators))


def test_discriminator_loss_never_reaches_the_networks(syn):
    method, batch = _method(syn, warmup_epochs=0)
    d = method.discriminator_losses(batch, method(batch), epoch=0)
    d["total"].backward()
    assert all(g is None for g in _grads(method.student)) and all(
        g is None for g in _grads(method.teacher))
    assert not _zero_or_none(_grads(method.discriminators["f"]))
    assert not _zero_or_none(_grads(method.discriminators["e"]))


def test_warmup_switches_the_adversarial_terms_off(syn):
    method, batch = _method(syn, warmup_epochs=2)
    for epoch in (0, 1):
        out = method(batch)
        assert method.discriminator_losses(batch, out, epoch) is None
        assert method.losses(batch, out, epoch)["adv"] == 0
    out = method(batch)
    assert method.discriminator_losses(batch, out, 2) is not None
    assert method.losses(batch, out, 2)["adv"] > 0


def test_enhanced_discriminator_switch(syn):
    method, batch = _method(syn, warmup_epochs=0, enhanced_disc=False)
    assert set(method.discriminators) == {"f"}
    assert method.losses(batch, method(batch), 0)["adv_e"] == 0


@pytest.mark.parametrize("dynamic", [True, False])
def test_dynamic_weights_follow_the_epochs_alignment(syn, dynamic):
    method, _ = _method(syn, warmup_epochs=0, mu=0.6, dynamic_weights=dynamic)
    data = method.ctx.data
    method.begin_epoch(0)
    ts, ss, ys = [], [], []
    for rows in data.splits["train"].split(20):
        batch = data.batch(rows)
        out = method(batch)
        method.losses(batch, out, 0)
        ts.append(out["t"].detach())
        ss.append(out["s"].detach())
        ys.append(batch.labels)
    got = method.end_epoch(0)
    if not dynamic:
        assert (got["w_f"].item(), got["w_e"].item()) == (0.5, 0.5)
        return
    # naive reference: per batch, cos over same-sample and same-class-other-sample pairs
    same_sum = same_n = cls_sum = cls_n = 0.0
    for t, s, y in zip(ts, ss, ys, strict=True):
        for i in range(len(y)):
            for j in range(len(y)):
                c = F.cosine_similarity(t[i], s[j], dim=0).item()
                if i == j:
                    same_sum, same_n = same_sum + c, same_n + 1
                elif y[i] == y[j]:
                    cls_sum, cls_n = cls_sum + c, cls_n + 1
    c_f, c_e = same_sum / same_n, cls_sum / cls_n
    soft = torch.softmax(torch.tensor([-c_f, -c_e]), 0)
    expect = 0.6 * 0.5 + 0.4 * soft
    assert got["w_f"].item() == pytest.approx(expect[0].item(), abs=1e-5)
    assert got["w_e"].item() == pytest.approx(expect[1].item(), abs=1e-5)
    assert got["w_f"].item() + got["w_e"].item() == pytest.approx(1.0)


def test_fixed_teacher_pretrains_then_freezes(syn):
    method, batch = _method(syn, "amid", fixed_teacher=True, teacher_epochs=1, warmup_epochs=0)
    assert method.teacher.student_encoder is not method.student.encoder  # its own copy
    method.begin_epoch(0)
    method.train()
    terms = total(method, batch, method(batch), 0)  # pre-training: teacher CE only
    assert method.weights(0) == {"cls_teacher": 1.0}
    torch.testing.assert_close(terms["total"], terms["cls_teacher"])
    assert terms["ts"] == 0 and terms["jsd"] == 0  # no distillation before the teacher is done
    assert method.discriminator_losses(batch, method(batch), 0) is None
    method.begin_epoch(1)
    method.train()
    assert not method.teacher.training
    assert all(not p.requires_grad for p in method.teacher.parameters())
    assert all(p.requires_grad for p in method.student.encoder.parameters())
    before = copy.deepcopy(method.teacher.state_dict())
    opt = torch.optim.AdamW(method.network_parameters(), lr=0.1)
    for _ in range(2):
        out = method(batch)
        opt.zero_grad()
        total(method, batch, out, 1)["total"].backward()
        opt.step()
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_missing_auxiliary_rows_only_train_the_student(tmp_path):
    syn = make_dataset(tmp_path, missing_aux=12)
    method, _ = _method(syn, "ts")
    data = method.ctx.data
    batch = data.batch(torch.arange(20))  # rows 0..11 lack audio
    assert batch.teacher_rows.tolist() == list(range(12, 20))
    out = method(batch)
    terms = method.losses(batch, out, 0)
    y = batch.labels
    torch.testing.assert_close(terms["cls_teacher"], F.cross_entropy(out["logits_t"][12:], y[12:]))
    torch.testing.assert_close(terms["cls_student"], F.cross_entropy(out["logits_s"], y))
    # the pair terms see the complete rows only: equal to the same batch without rows 0..11
    sub = method.losses(data.batch(torch.arange(12, 20)), {k: v[12:] for k, v in out.items()}, 0)
    torch.testing.assert_close(terms["ts"], sub["ts"])
    torch.testing.assert_close(terms["jsd"], sub["jsd"])


def test_baseline_and_teacher_objectives(syn):
    method, batch = _method(syn, "baseline")
    out = method(batch)
    assert set(out) == {"s", "logits_s"}
    terms = total(method, batch, out, 0)
    torch.testing.assert_close(terms["total"], F.cross_entropy(out["logits_s"], batch.labels))
    method, batch = _method(syn, "teacher")
    out = method(batch)
    assert method.teacher.student_encoder is method.student.encoder  # shared by default
    torch.testing.assert_close(total(method, batch, out, 0)["total"],
                               F.cross_entropy(out["logits_t"], batch.labels))


@pytest.mark.parametrize("name", ["ts", "ts_ta", "amid"])
def test_instance_positives_count_only_the_same_sample(syn, name):
    """positives=instance: L_TS (and L_TA) against the naive loop with P(i) = {i};
    positives=class on the same outputs: the naive loop with the batch's labels."""
    from .test_losses_mi import naive_mi

    for positives in ("class", "instance"):
        extra = {"warmup_epochs": 0} if name == "amid" else {}
        method, batch = _method(syn, name, positives=positives, tau=0.5, **extra)
        method.eval()  # no dropout: the forward below is the one the losses saw
        with torch.no_grad():
            out = method(batch)
            terms = method.losses(batch, out, epoch=0)
        y = batch.labels.tolist()
        assert len(set(y)) < len(y)  # repeated labels: the two settings must differ
        pos = list(range(len(y))) if positives == "instance" else y
        t, s = out["t"].double().numpy(), out["s"].double().numpy()
        form = "class_prior"  # the default mi_variant: the paper's Eq. 9
        want = 0.5 * (naive_mi(t, s, pos, 0.5, form) + naive_mi(s, t, pos, 0.5, form))
        assert terms["ts"].item() == pytest.approx(want, rel=1e-4)
        if name != "ts":
            a = out["a"].double().numpy()
            want = 0.5 * (naive_mi(t, a, pos, 0.5, form) + naive_mi(a, t, pos, 0.5, form))
            assert terms["ta"].item() == pytest.approx(want, rel=1e-4)
