"""The competing methods crd, gmc, ccl, crcd: phases, gradient routing, objectives, runs."""

from __future__ import annotations

import copy
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amid.distill.inference import save_module
from amid.distill.losses import crcd_loss, ntxent_loss
from amid.distill.train import data_from_config, train
from amid.errors import ConfigError, ManifestError

from .conftest import build_method, make_dataset, set_options, total

COMPETITORS = ("crd", "gmc", "ccl", "crcd")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    # 3 training samples of class 0 lack audio: the teacher-side terms must skip them
    s = make_dataset(tmp_path_factory.mktemp("synth"), missing_aux=3)
    s.cfg.train.model.dropout = 0.0  # deterministic forwards for the hand checks
    for name in ("crd", "crcd"):
        set_options(s.cfg, name, teacher_epochs=1)
    return s


@pytest.fixture(scope="module")
def data(syn):
    return data_from_config(syn.cfg, torch.device("cpu"))


# the old flat keys these tests were written with, and each method's own name for them
_OPTION = {"crd_weight": ("crd", "weight"), "crcd_weight": ("crcd", "weight"),
           "gmc_weight": ("gmc", "weight"), "ccl_nce_weight": ("ccl", "nce_weight"),
           "ccl_kl_weight": ("ccl", "kl_weight"), "crd_negatives": ("crd", "negatives")}


def _method(syn, data, name, epochs=3, **options):
    mine = {_OPTION[k][1] if k in _OPTION else k: v for k, v in options.items()
            if k not in _OPTION or _OPTION[k][0] == name}
    return build_method(syn.cfg, data, name, epochs, **mine)


def _batch(data, n=30):
    """Distinct training rows of several classes, including the 3 without audio."""
    train = data.splits["train"]
    g = torch.Generator().manual_seed(1)
    rest = train[3:][torch.randperm(len(train) - 3, generator=g)[: n - 3]]
    batch = data.batch(torch.cat([train[:3], rest]))
    assert batch.teacher_rows is not None and len(batch.teacher_rows) == n - 3
    return batch


def _has_grad(module):
    return all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def _no_grad(module):
    return all(p.grad is None or not p.grad.abs().any() for p in module.parameters())


def _step(method, batch, epoch):
    method.begin_epoch(epoch)
    method.train()
    method.zero_grad(set_to_none=True)
    out = method(batch)
    terms = total(method, batch, out, epoch)
    terms["total"].backward()
    return out, terms


# ------------------------------------------------------------------ all four


@pytest.mark.parametrize("name", COMPETITORS)
def test_terms_finite_and_key_set_stable(syn, data, name):
    method = _method(syn, data, name, epochs=3)
    batch = _batch(data)
    opt = torch.optim.AdamW(method.network_parameters(), lr=1e-3)
    keys = None
    for epoch in range(3):  # crd/crcd: epoch 0 pre-trains the teacher, then distillation
        _, terms = _step(method, batch, epoch)
        opt.step()
        assert "total" in terms and all(torch.isfinite(v) and v.dim() == 0 for v in terms.values())
        keys = keys or list(terms)
        assert list(terms) == keys
    assert method.has_teacher == (name != "gmc")


# ------------------------------------------------------------------ crd, crcd (fixed teacher)


@pytest.mark.parametrize("name", ["crd", "crcd"])
def test_teacher_pretrains_then_freezes(syn, data, name):
    extra = {"crd": "crd", "crcd": "embed_s"}[name]
    method = _method(syn, data, name, epochs=3, crd_weight=0.3, crcd_weight=0.7)
    batch = _batch(data)
    assert method.teacher.student_encoder is not method.student.encoder
    assert method.teacher.classifier is not method.student.classifier

    _, terms = _step(method, batch, 0)  # pre-training: the teacher's CE only
    assert method.weights(0) == {"cls_teacher": 1.0}  # the student's CE: logged, not trained
    assert torch.equal(terms["total"], terms["cls_teacher"])
    assert all(terms[k] == 0 for k in terms if k not in ("total", "cls_teacher", "cls_student"))
    assert _has_grad(method.teacher)
    assert _no_grad(method.student) and _no_grad(getattr(method, extra))

    opt = torch.optim.AdamW(method.network_parameters(), lr=1e-2, weight_decay=0.1)
    out, terms = _step(method, batch, 1)  # distillation: teacher frozen for good
    assert not method.teacher.training and method.student.training
    assert not any(p.requires_grad for p in method.teacher.parameters())
    assert not out["t"].requires_grad
    assert _no_grad(method.teacher)
    assert _has_grad(method.student) and _has_grad(getattr(method, extra))
    if name == "crd":
        assert torch.allclose(terms["crd"], terms["crd_s"] + terms["crd_t"])
        want = terms["cls_student"] + 0.3 * terms["crd"]
    else:
        want = terms["cls_student"] + 0.7 * terms["crcd"]
    assert torch.allclose(terms["total"], want)  # the frozen teacher's CE is logged, not trained
    assert terms["cls_teacher"] > 0
    before = copy.deepcopy(method.teacher.state_dict())
    opt.step()
    after = method.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weight decay skipped it too


def test_fixed_teacher_needs_pretraining_epochs(syn, data):
    for name in ("crd", "crcd"):
        with pytest.raises(ConfigError, match="teacher_epochs"):
            _method(syn, data, name, epochs=3, teacher_epochs=3)
        with pytest.raises(ConfigError, match="teacher_run"):
            _method(syn, data, name, epochs=3, teacher_epochs=0)


def test_crd_loads_a_teacher_run_frozen(syn, data, tmp_path):
    source = _method(syn, data, "teacher")
    save_module(source.teacher, {}, tmp_path, "teacher")
    method = _method(syn, data, "crd", epochs=3, teacher_epochs=0, teacher_run=str(tmp_path))
    assert method.phase.pretrain == 0 and not method.teacher.training
    # RepDistiller's defaults: nce_k 16384, nce_t 0.07, nce_m 0.5, feat_dim 128
    crd = method.crd
    assert (crd.n_negatives, crd.temperature, crd.momentum) == (16384, 0.07, 0.5)
    assert crd.embed_s.out_features == 128
    mine, theirs = method.teacher.state_dict(), source.teacher.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    _, terms = _step(method, _batch(data), 0)
    assert terms["crd"] > 0 and _no_grad(method.teacher)


def test_crd_memory_banks_are_buffers_updated_with_momentum(syn, data):
    method = _method(syn, data, "crd", epochs=3, crd_negatives=10_000)
    crd = method.crd
    params, buffers = dict(method.named_parameters()), dict(method.named_buffers())
    for bank in ("crd.memory_s", "crd.memory_t"):
        assert bank in buffers and bank not in params
    # banks cover the training rows with every auxiliary modality, nothing else
    train = data.splits["train"].tolist()
    banked = [r for r in train if bool(data.aux_present[r])]
    assert crd.memory_s.shape == (len(banked), 128)
    # K as configured, more than the bank holds: drawn with replacement, as the authors do
    assert crd.n_negatives == 10_000 > len(banked)
    slots = method.bank_slot.tolist()
    assert [slots[r] for r in banked] == list(range(len(banked)))
    assert all(s == -1 for r, s in enumerate(slots) if r not in banked)
    assert crd.labels.tolist() == data.labels[banked].tolist()

    batch = _batch(data)
    method.begin_epoch(1)
    method.train()
    old_s, old_t = crd.memory_s.clone(), crd.memory_t.clone()
    out = method(batch)
    method.losses(batch, out, 1)
    rows = batch.teacher_rows
    idx = method.bank_slot[batch.index[rows]]
    with torch.no_grad():
        e_s = F.normalize(crd.embed_s(out["s"][rows]), dim=1)
        e_t = F.normalize(crd.embed_t(out["t"][rows]), dim=1)
    np.testing.assert_allclose(crd.memory_s[idx], F.normalize(0.5 * old_s[idx] + 0.5 * e_s, dim=1),
                               atol=1e-6)
    np.testing.assert_allclose(crd.memory_t[idx], F.normalize(0.5 * old_t[idx] + 0.5 * e_t, dim=1),
                               atol=1e-6)
    untouched = torch.ones(len(banked), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(crd.memory_s[untouched], old_s[untouched])
    # the negatives of a training anchor are bank rows of the other classes
    neg = crd.sample_negatives(idx)
    assert (crd.labels[neg] != crd.labels[idx][:, None]).all()


def test_crd_needs_two_classes_in_its_bank(tmp_path):
    """One class is refused for every method when the data loads (issue 23 item 6), before
    crd's own bank check."""
    one = make_dataset(tmp_path, n_classes=1, per_class=10)
    set_options(one.cfg, "crd", teacher_epochs=1)
    with pytest.raises(ManifestError, match="only 1 class .*at least two"):
        _method(one, data_from_config(one.cfg, torch.device("cpu")), "crd")


def test_crcd_term_is_the_relation_loss_of_head_and_frozen_teacher(syn, data):
    method = _method(syn, data, "crcd", epochs=3)
    batch = _batch(data)
    _, terms = _step(method, batch, 1)
    rows = batch.teacher_rows
    with torch.no_grad():
        s, _ = method.student(batch.target)
        t = method.teacher(batch.target, batch.auxiliary)["t"]
        want = crcd_loss(method.embed_s(s[rows]), t[rows], 0.05, 64)  # the authors' nce_t
    assert terms["crcd"].item() == pytest.approx(want.item(), rel=1e-5)


# ------------------------------------------------------------------ gmc


def test_gmc_terms_are_ntxent_of_shared_projections(syn, data):
    method = _method(syn, data, "gmc", gmc_weight=0.4)
    batch = _batch(data)
    _, terms = _step(method, batch, 0)
    assert list(terms) == ["cls_student", "gmc_visual", "gmc_audio", "gmc_text", "gmc", "total"]
    rows = batch.teacher_rows
    with torch.no_grad():
        proj = method.projection
        views = {
            "visual": method.student.encoder(batch.target),
            "audio": method.aux_encoders["audio"]({"audio": batch.auxiliary["audio"]}),
            "text": method.aux_encoders["text"]({"text": batch.auxiliary["text"]}),
        }
        joint = method.joint({**batch.target, **batch.auxiliary})
        for name, h in views.items():
            want = ntxent_loss(proj(h[rows]), proj(joint[rows]), 0.3)  # supervised GMC's
            assert terms[f"gmc_{name}"].item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.allclose(terms["gmc"], terms["gmc_visual"] + terms["gmc_audio"]
                          + terms["gmc_text"])
    assert torch.allclose(terms["total"], terms["cls_student"] + 0.4 * terms["gmc"])
    # predictions: the student alone
    method.eval()
    pred = method.predict(batch)
    assert list(pred) == ["student"]
    assert torch.equal(pred["student"][0], method.student(batch.target)[0])


def test_gmc_gradient_routing(syn, data):
    method = _method(syn, data, "gmc")
    batch = _batch(data)
    method.train()
    out = method(batch)
    terms = method.losses(batch, out, 0)
    terms["gmc_audio"].backward(retain_graph=True)
    assert _has_grad(method.aux_encoders["audio"]) and _has_grad(method.projection)
    assert _has_grad(method.joint.fuse) and _has_grad(method.joint.encoders["text"])
    assert _no_grad(method.student) and _no_grad(method.aux_encoders["text"])
    method.zero_grad(set_to_none=True)
    terms["cls_student"].backward()
    assert _has_grad(method.student)
    for module in (method.aux_encoders, method.joint, method.projection):
        assert _no_grad(module)


# ------------------------------------------------------------------ ccl


def naive_ccl_nce(u: np.ndarray, v: np.ndarray, y: np.ndarray, tau: float) -> float:
    """yanbeic/CCL loss/nce_loss.py NCELoss(u, v), a loop over anchors (eps left out)."""
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(u)):
        # the authors' cosine: 1 - |u - v|^2 / 2 on unit rows
        logits = [(1 - 0.5 * float(((u[i] - v[j]) ** 2).sum())) / tau for j in range(len(v))]
        m = max(logits)
        lse = m + math.log(sum(math.exp(x - m) for x in logits))
        h = [math.exp(x - lse) for x in logits]
        pos = [j for j in range(len(v)) if y[j] == y[i]]
        neg = [j for j in range(len(v)) if y[j] != y[i]]
        loss = -sum(math.log(h[j]) for j in pos) / len(pos)
        if neg:
            loss -= sum(math.log(1 - h[j]) for j in neg) / len(neg)
        total += loss
    return total / len(u)


def naive_jsd_loss(a: np.ndarray, b: np.ndarray) -> float:
    """yanbeic/CCL loss/jsd_loss.py JSDLoss(weight=0.5) on logits (eps left out)."""
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(b - b.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return float(np.mean((p * np.log(p / q)).sum(1) + (q * np.log(q / p)).sum(1)) * 0.5)


def test_ccl_composition_and_objectives_are_the_authors(syn, data):
    method = _method(syn, data, "ccl", ccl_nce_weight=0.6, ccl_kl_weight=0.25)
    assert method.teacher.student_encoder is method.student.encoder
    assert method.teacher.classifier is not method.student.classifier  # its own fc
    assert isinstance(method.teacher.head, torch.nn.Linear)  # ONE linear layer, 2d -> d
    batch = _batch(data)
    out, terms = _step(method, batch, 0)
    with torch.no_grad():  # CompositionClassifier(normalization=True)
        s = method.student.encoder(batch.target)
        a = method.teacher.aux_encoder(batch.auxiliary)
        head = method.teacher.head
        t = a + torch.cat([F.normalize(a, dim=1), F.normalize(s, dim=1)], 1) @ head.weight.T \
            + head.bias
    torch.testing.assert_close(out["t"], t)
    torch.testing.assert_close(out["t_sg"], t)
    assert torch.equal(out["a"], a)
    torch.testing.assert_close(out["logits_t"], method.teacher.classifier(t))

    rows = batch.teacher_rows.numpy()
    y = batch.labels.numpy()[rows]
    sn, tn, an = (x.detach().numpy()[rows] for x in (s, t, a))

    def pair(x, z):  # criterion_ct_av(x, z) + criterion_ct_av(z, x): not halved
        return naive_ccl_nce(x, z, y, 0.5) + naive_ccl_nce(z, x, y, 0.5)

    loss_vm, loss_va, loss_ma = pair(sn, tn), pair(sn, an), pair(tn, an)
    logits_s, logits_t = (out[k].detach().numpy()[rows] for k in ("logits_s", "logits_t"))
    jsd = naive_jsd_loss(logits_s, logits_t)
    assert terms["nce_student"].item() == pytest.approx(loss_vm + loss_va, rel=1e-4)
    assert terms["nce_teacher"].item() == pytest.approx(loss_vm + loss_ma, rel=1e-4)
    assert terms["kl_student"].item() == pytest.approx(jsd, rel=1e-4)
    assert terms["kl_teacher"].item() == pytest.approx(jsd, rel=1e-4)
    # teacher CE on the rows with audio only (the authors filter them)
    keep = batch.aux_present
    want_ce_t = F.cross_entropy(out["logits_t"][keep], batch.labels[keep])
    assert terms["cls_teacher"].item() == pytest.approx(want_ce_t.item(), rel=1e-5)
    # total_loss_v (the option weights scale the student's terms) + total_loss_a
    want = (terms["cls_student"] + 0.6 * (loss_vm + loss_va) + 0.25 * jsd
            + terms["cls_teacher"] + loss_vm + loss_ma + jsd)
    assert terms["total"].item() == pytest.approx(want.item(), rel=1e-4)
    assert "composition" in method.exports()["teacher"][1]


def _official_ccl_step(method, batch):
    """The authors' train_a_epoch step on a copy of `method`, from their formulas: two
    objectives, total_loss_a backward first, the student's gradients zeroed, then
    total_loss_v backward; returns every parameter's gradient by name."""
    m = copy.deepcopy(method).train()
    m.zero_grad(set_to_none=True)
    eps = 1e-10

    def nce(f1, f2, targets, tau=0.5):  # loss/nce_loss.py
        f1, f2 = F.normalize(f1, dim=1), F.normalize(f2, dim=1)
        neg = (targets[:, None] - targets) != 0
        cos = 1 - 0.5 * (f1[:, None] - f2).pow(2).sum(2)
        pred = torch.softmax(cos / tau, dim=1)
        lp = (-torch.log(pred + eps) * (~neg)).sum(1) / (~neg).sum(1)
        ln = (-torch.log(1 - pred + eps) * neg).sum(1) / neg.sum(1)
        return (lp + ln).mean()

    def jsd(p, q):  # loss/jsd_loss.py, weight 0.5
        p, q = torch.softmax(p, 1), torch.softmax(q, 1)
        kl_pq = (p * torch.log(p / q + eps)).sum(1)
        kl_qp = (q * torch.log(q / p + eps)).sum(1)
        return 0.5 * (kl_pq + kl_qp).mean()

    features = m.student.encoder(batch.target)
    outputs = m.student.classifier(features)
    rows = batch.teacher_rows
    f_aud = m.teacher.aux_encoder(batch.auxiliary)[rows]
    f_vid, y_new, out_new = features[rows], batch.labels[rows], outputs[rows]
    residual = m.teacher.head(torch.cat([F.normalize(f_aud, dim=1), F.normalize(f_vid, dim=1)], 1))
    f_av = f_aud + residual
    out_av = m.teacher.classifier(f_av)
    loss_vm = nce(f_vid, f_av, y_new) + nce(f_av, f_vid, y_new)
    loss_va = nce(f_vid, f_aud, y_new) + nce(f_aud, f_vid, y_new)
    loss_ma = nce(f_av, f_aud, y_new) + nce(f_aud, f_av, y_new)
    loss_jsd = jsd(out_new, out_av)
    total_v = F.cross_entropy(outputs, batch.labels) + loss_vm + loss_va + loss_jsd
    total_a = F.cross_entropy(out_av, y_new) + loss_vm + loss_ma + loss_jsd
    total_a.backward(retain_graph=True)
    m.student.zero_grad(set_to_none=True)  # optimizer.zero_grad(): the video model only
    total_v.backward()
    return {n: p.grad for n, p in m.named_parameters()}


def test_ccl_gradients_are_the_authors_two_backward_passes(syn, data):
    method = _method(syn, data, "ccl")  # dropout 0; 4 classes: every anchor has negatives
    batch = _batch(data)
    want = _official_ccl_step(method, batch)
    _step(method, batch, 0)
    got = {n: p.grad for n, p in method.named_parameters()}
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    # the student's share: its objective only (no teacher CE, no NCE2(t, a))
    method.zero_grad(set_to_none=True)
    method.train()
    out = method(batch)
    terms = method.losses(batch, out, 0)
    (terms["cls_teacher"] + terms["nce_teacher"] + terms["kl_teacher"]).backward()
    assert _no_grad(method.student)
    assert _has_grad(method.teacher.head) and _has_grad(method.teacher.classifier)
    assert _has_grad(method.teacher.aux_encoder)


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("name", COMPETITORS)
def test_short_run_learns_and_writes_finite_outputs(tmp_path, name):
    syn = make_dataset(tmp_path, n_classes=3, per_class=20, missing_aux=2)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 6
    cfg.train.batch_size = 16
    cfg.train.lr = 3e-3
    if name in ("crd", "crcd"):
        set_options(cfg, name, teacher_epochs=2)
    history = train(name, cfg, tmp_path / name, live=False)
    assert len(history) == 6
    assert all(list(row) == list(history[0]) for row in history)  # one column per term
    assert all(math.isfinite(v) for row in history for v in row.values())
    first = 2 if name in ("crd", "crcd") else 0  # distillation starts after the teacher's epochs
    assert history[-1]["loss_total"] < history[first]["loss_total"]
    if name in ("crd", "crcd"):
        assert history[1]["loss_cls_teacher"] < history[0]["loss_cls_teacher"]
    with h5py.File(tmp_path / name / "outputs.h5") as f:
        for split in ("train", "val", "test"):
            for role in ("student", "teacher") if name != "gmc" else ("student",):
                for key in ("embeddings", "logits"):
                    assert np.isfinite(f[f"{split}/{role}/{key}"][()]).all()
            assert (name == "gmc") == (f"{split}/teacher" not in f)
    assert (tmp_path / name / "student.safetensors").exists()
