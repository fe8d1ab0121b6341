"""sota.tools.drift on a tiny LLM: the before/after-recovery rows come out of the real compression functions."""

import math

import pytest
import torch

from sota.tools import drift
from sota.models.llm import tiny_llama


@pytest.fixture()
def tiny(monkeypatch):
    train, held_out = drift.sentences(n_train=32, n_eval=8)
    words = sorted({w for s in train + held_out + drift.ENGLISH for w in s.split()})
    torch.manual_seed(0)
    llm, tok = tiny_llama(words, hidden_size=32, layers=2, heads=4, kv_heads=2, intermediate_size=64)
    state = {k: v.clone() for k, v in llm.state_dict().items()}

    def load():
        fresh, _ = tiny_llama(words, hidden_size=32, layers=2, heads=4, kv_heads=2, intermediate_size=64)
        fresh.load_state_dict(state)
        return fresh.eval()

    monkeypatch.setattr(drift, "sentences", lambda: (train, held_out))
    monkeypatch.setitem(drift.CONFIGS, "depth_0.5", ({"method": "depth", "ratio": 0.5, "protected_layers": []},
                                                      "none"))
    return load, tok


def test_recovery_trains_the_adapters_and_pruning_removes_parameters(tiny):
    load, tok = tiny
    none = drift.measure_one(load, tok, "none", steps=20, lr=1e-2, rank=4)
    assert none["ppl_after"] != none["ppl_before"] and none["params_removed"] == 0.0
    assert none["recovery_loss_last"] < none["recovery_loss_first"]
    untouched = drift.measure_one(load, tok, "none", steps=0, lr=1e-2, rank=4)
    assert untouched["ppl_after"] == pytest.approx(untouched["ppl_before"], rel=1e-5)  # merge of zero updates
    depth = drift.measure_one(load, tok, "depth_0.5", steps=5, lr=1e-2, rank=4)
    assert depth["prune"]["llm"]["layers_after"] == 1 and 0 < depth["params_removed"] < 0.5
    assert math.isfinite(depth["ppl_before"]) and depth["ppl_before"] != none["ppl_before"]
    text = drift.table([none, depth])
    assert "| none |" in text and "| depth_0.5 |" in text


def test_post_training_quantization_is_measured_after_recovery(tiny):
    load, tok = tiny
    row = drift.measure_one(load, tok, "int8_weight", steps=2, lr=1e-2, rank=4)
    fp = drift.measure_one(load, tok, "none", steps=2, lr=1e-2, rank=4)
    assert row["weight_bytes"] < 0.6 * fp["weight_bytes"]


def test_unknown_config_is_refused():
    with pytest.raises(SystemExit):
        drift.main(["--configs", "depth_0.9"])
