"""recover=distill: a frozen copy of the uncompressed model teaches the compressed one (logit KD, optionally the
last hidden states); its terms are what they claim, training lowers them, and the teacher never trains."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from sota.compress import distill, lora, prune, quant
from sota.compress.distill import Distiller
from sota.lit_module import AudioLLMModule

from test_lora import lcfg, qcfg, quiet  # noqa: F401  (quiet: an autouse fixture)
from test_model import batch_for
from test_prune import build
from test_run import run

DISTILL = {"method": "distill", "temperature": 2.0, "alpha": 0.5, "hidden_weight": 0.0}


def batch(model):
    return batch_for(model, [1.0, 1.5], ["asr", "aac"], ["a red dog barks", "a cat"])


def test_settings_are_checked_and_lora_recovery_has_no_teacher():
    out = []
    distill.validate(OmegaConf.create({**DISTILL, "alpha": 0}), "train", out)
    distill.validate(OmegaConf.create({**DISTILL, "temperature": -1, "tempreature": 2}), "train", out)
    distill.validate(OmegaConf.create({"method": "kd"}), "train", out)
    distill.validate(OmegaConf.create(DISTILL), "eval", out)
    distill.validate(OmegaConf.create({"method": "lora"}), "eval", out)
    assert len(out) == 5, out
    assert "recover.alpha" in out[0] and "unknown key(s) tempreature" in out[1] and "recover.temperature" in out[2]
    assert "lora, distill" in out[3] and "task=eval trains nothing" in out[4]
    assert Distiller.of(build(), OmegaConf.create({"method": "lora"})) is None


def test_an_identical_student_has_no_distillation_loss():
    model = build()
    d = Distiller.of(model, {**DISTILL, "hidden_weight": 1.0})
    b = batch(model)
    loss, terms = d.loss(model, b)
    assert terms["kd"].abs().item() < 1e-5 and terms["hidden"].item() < 1e-10
    torch.testing.assert_close(loss, (1 - d.alpha) * terms["ce"], rtol=1e-5, atol=1e-6)
    assert d.record()["teacher_params"] == sum(p.numel() for p in model.parameters())


def test_distillation_pulls_a_pruned_student_toward_its_teacher_and_never_trains_the_teacher():
    model = build(layers=4)
    for p in model.llm.parameters():   # sharper random logits: a pruned student then differs clearly
        p.data.mul_(4.0)
    d = Distiller.of(model, {**DISTILL, "alpha": 1.0})
    teacher_state = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    prune.prune(model, OmegaConf.create({"method": "depth", "ratio": 0.5, "calib_batches": 1}), [batch(model)])
    lora.attach(model, lcfg(rank=8))
    module = AudioLLMModule(model, lambda params: torch.optim.SGD(params, lr=0.01), distiller=d)
    assert not any(k.startswith("distiller") for k in module.state_dict())
    assert all(p.requires_grad is False for p in d.teacher.parameters())
    b = batch(model)
    opt = module.configure_optimizers()
    kd = []
    model.train()
    for _ in range(12):
        loss, terms = d.loss(model, b)
        kd.append(terms["kd"].item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert kd[0] > 1e-3 and kd[-1] < 0.6 * kd[0], kd
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k


def test_a_qlora_student_distils_from_its_float_teacher():
    model = build()
    d = Distiller.of(model, {**DISTILL, "hidden_weight": 0.5})
    quant.quantize(model, qcfg("nf4"), "cpu", with_parts=False)
    lora.attach(model, lcfg())
    assert not any("Params4bit" == type(p).__name__ for p in d.teacher.parameters())
    loss, terms = d.loss(model, batch(model))
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert terms["kd"].item() > 0 and terms["hidden"].item() > 0


def test_the_whole_teacher_follows_the_batch_device_even_when_its_first_parameter_is_already_there():
    """The teacher lives outside the LightningModule, so Lightning never moves it; tasks.py moves the encoder
    to the GPU before the copy is taken, leaving a teacher whose first parameter (the encoder's) is already on
    the batch's device while its LLM is not. The first use must move all of it, once (no CUDA here: spy `.to`)."""
    model = build()
    d = Distiller.of(model, DISTILL)
    moved, to = [], d.teacher.to
    d.teacher.to = lambda *a, **k: (moved.append(a[0] if a else k.get("device")), to(*a, **k))[1]
    b = batch(model)
    d.loss(model, b)
    d.loss(model, b)
    device = next(model.parameters()).device
    assert [torch.device(m) for m in moved] == [device]   # moved on first use only, to the student's device
    assert not d.teacher.training and all(not p.requires_grad for p in d.teacher.parameters())


@pytest.mark.slow  # one run of run.py
def test_a_run_recovers_by_distillation_and_records_it(tmp_path):
    run(tmp_path, "prune=depth", "prune.ratio=0.5", "lora=lora", "lora.rank=4", "recover=distill")
    res = json.loads((tmp_path / "results.json").read_text())
    rec = res["compression"]["recover"]
    assert res["status"] == "ok" and rec["method"] == "distill" and rec["alpha"] == 0.5
    assert rec["teacher_params"] > res["model"]["params"]["total"] if isinstance(res["model"].get("params"), dict) \
        else rec["teacher_params"] > 0
