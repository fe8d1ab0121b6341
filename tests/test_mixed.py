"""quant=mixed: per-linear modes chosen by measured sensitivity under an average-bits budget; the budget holds
in real storage, the least sensitive linears go lowest, and a recorded map rebuilds the same model."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from sota.compress import mixed, quant
from sota.models.footprint import tensor_bytes

from test_lora import qcfg, quiet  # noqa: F401  (quiet: an autouse fixture)
from test_model import batch_for
from test_quant import model_of


def mcfg(**over):
    return OmegaConf.merge(qcfg("mixed"), over)


def calib(model):
    return [batch_for(model, [1.0, 1.5], ["asr", "aac"], ["a red dog barks", "a cat"]),
            batch_for(model, [0.8], ["asr"], ["the dog"])]


def linears(model):
    return {n: m for n, m in model.llm.named_modules() if n and "lm_head" not in n and
            (type(m) is nn.Linear or type(m).__module__.startswith("bitsandbytes"))}


def test_choice_takes_the_least_kl_per_byte_until_the_budget_holds():
    params = {"a": 100, "b": 100}
    options = {"a": {"none": (400, 0.0), "int8_weight": (100, 0.01), "nf4": (55, 0.5)},
               "b": {"none": (400, 0.0), "int8_weight": (100, 0.02), "nf4": (55, 0.03)}}
    modes = ["nf4", "int8_weight", "none"]
    assert mixed.choose(params, options, modes, 32) == {"a": "none", "b": "none"}
    assert mixed.choose(params, options, modes, 8) == {"a": "int8_weight", "b": "int8_weight"}
    assert mixed.choose(params, options, modes, 6.5) == {"a": "int8_weight", "b": "nf4"}   # b loses less
    with pytest.raises(ValueError, match="smallest mode averages 4.40 bits"):
        mixed.choose(params, options, modes, 4)


def sharp(model):
    for p in model.llm.parameters():   # sharper random logits: quantization errors then show in the KL
        p.data.mul_(4.0)
    return model


def test_mixed_meets_its_budget_in_real_bytes_and_a_recorded_map_rebuilds_the_model():
    model = sharp(model_of(hidden=64))
    before = {n: m.weight.numel() for n, m in linears(model).items()}
    rec = quant.quantize(model, mcfg(avg_bits=7.0), "cpu", calib=calib(model))
    assert rec["mode"] == "mixed" and set(rec["map"]) == {f"llm.{n}" for n in before}
    stored = sum(sum(tensor_bytes(p) for p in m.parameters()) for m in linears(model).values())
    assert 8 * stored / sum(before.values()) == pytest.approx(rec["avg_bits"], abs=1e-4) and rec["avg_bits"] <= 7.0
    assert rec["counts"]["nf4"] + rec["counts"]["int8_weight"] > 0 and rec["kl_after"] > 0
    scores = rec["sensitivity"].values()
    assert all(s["none"] == 0.0 for s in scores) and all(s["nf4"] > s["int8_weight"] > 0 for s in scores)
    # the linear least hurt by nf4 went there first
    assert rec["map"][min(rec["sensitivity"], key=lambda k: rec["sensitivity"][k]["nf4"])] == "nf4"
    kinds = {type(m).__name__ for m in linears(model).values()}
    assert "Linear4bit" in kinds or any(type(m.weight).__name__ == "Int8Tensor" for m in linears(model).values())
    b = calib(model)[0]
    with torch.no_grad():
        want = model.outputs(b)[0].logits
    again = sharp(model_of(hidden=64))
    quant.quantize(again, mcfg(avg_bits=7.0), "cpu", recorded=rec)
    with torch.no_grad():
        assert torch.equal(again.outputs(b)[0].logits, want)


def test_mixed_settings_are_checked():
    out = []
    quant.validate(mcfg(modes=["int8_weight"], avg_bits=0), "cpu", out)
    quant.validate(mcfg(modes=["int4_weight", "none"], int4_layout="torchao"), "cpu", out)
    assert any("two or more distinct modes" in o for o in out) and any("avg_bits" in o for o in out)
    assert any("quant.int4_layout=torchao needs a CUDA device" in o for o in out)
    with pytest.raises(ValueError, match="calibration batches"):
        quant.quantize(model_of(hidden=64), mcfg(), "cpu")


@pytest.mark.slow  # two runs of run.py
def test_a_run_chooses_its_map_on_training_batches_and_its_checkpoint_evaluates_the_same(tmp_path):
    import json

    from test_run import run

    combo = ["quant=mixed", "quant.avg_bits=7.0", "quant.calib_batches=2"]
    run(tmp_path / "train", *combo)
    res = json.loads((tmp_path / "train" / "results.json").read_text())
    q = res["compression"]["quant"]
    assert res["status"] == "ok" and q["mode"] == "mixed" and q["avg_bits"] <= 7.0 and q["map"]
    run(tmp_path / "eval", *combo, "task=eval", f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}")
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["compression"]["quant"]["map"] == q["map"]
    preds = [json.loads(x)["prediction"] for x in (tmp_path / "train" / "predictions.jsonl").read_text().splitlines()]
    preds2 = [json.loads(x)["prediction"] for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert preds == preds2


@pytest.mark.slow  # 20 s: a model built and scored through the bench path
def test_the_bench_path_measures_a_mixed_model_and_export_refuses_it(tmp_path):
    from sota.export import rebuild, write

    from test_export import SMALL
    model, cfg, record = rebuild.configured_model([*SMALL, "quant=mixed", "quant.avg_bits=7.0",
                                                   "quant.calib_batches=1"], "cpu")
    assert record["quant"]["avg_bits"] <= 7.0 and any("noise calibration" in n for n in record["quant"]["notes"])
    with pytest.raises(ValueError, match="quant=mixed is not supported"):
        write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_unreachable_budget_is_refused_before_any_scoring_pass(monkeypatch):
    model = model_of(hidden=64)
    passes = []
    monkeypatch.setattr(mixed, "_answer_logprobs", lambda *a: passes.append(1) or [])
    with pytest.raises(ValueError, match="smallest mode averages .* raise avg_bits or add a smaller mode"):
        quant.quantize(model, mcfg(avg_bits=4.0, modes=["int8_weight", "none"]), "cpu", calib=calib(model))
    assert passes == []
