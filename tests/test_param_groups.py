import functools

import pytest
import torch

from sota.compress.lowrank import factor_names
from sota.compress.prune import prune
from sota.errors import ConfigError
from sota.lit_module import AudioLLMModule
from sota.param_groups import split, validate

from test_model import batch_for
from test_prune import LOWRANK, build, calib, cfg

ENCODER = "model.encoder.*"


def module_with_trained_factors(groups):
    model = build(enc_layers=2)
    prune(model, cfg(**LOWRANK, factors="trained"), calib(model))
    for name, p in model.named_parameters():   # adapters stand-in: the connector trains too
        p.requires_grad_(p.requires_grad or name.startswith("connector."))
    optimizer = functools.partial(torch.optim.SGD, lr=0.1)
    return AudioLLMModule(model, optimizer, param_groups=groups)


def test_a_group_trains_its_parameters_at_its_own_rate_and_the_rest_at_the_base_rate():
    module = module_with_trained_factors([{"match": ENCODER, "lr_scale": 0.05}])
    opt = module.configure_optimizers()
    base, slow = opt.param_groups
    factors = {id(module.model.encoder.whisper.get_parameter(n)) for n in factor_names(module.model.encoder.whisper)}
    assert {id(p) for p in slow["params"]} == factors and slow["lr"] == pytest.approx(0.005)
    assert base["lr"] == 0.1 and all(p.requires_grad and id(p) not in factors for p in base["params"])
    record = module.param_group_record
    assert [r["match"] for r in record] == [None, ENCODER] and record[1]["tensors"] == len(factors)
    # one SGD step moves each factor by its group's rate: 0.005 * grad, not 0.1 * grad
    before = {id(p): p.detach().clone() for g in opt.param_groups for p in g["params"]}
    module.model(batch_for(module.model, [1.0], ["asr"], ["a red dog barks"])).backward()
    opt.step()
    for g in opt.param_groups:
        for p in g["params"]:
            if p.grad is not None:
                assert torch.allclose(before[id(p)] - p.detach(), g["lr"] * p.grad, atol=1e-7)


def test_first_match_wins_frozen_tensors_are_left_out_and_an_unmatched_glob_is_an_error():
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    c.requires_grad_(False)
    groups, record = split([("enc.x", a), ("con.y", b), ("enc.z", c)],
                           [{"match": "enc.*", "lr_scale": 0.5}, {"match": "*", "lr_scale": 2}], 1.0)
    assert [g.get("lr") for g in groups] == [0.5, 2.0] and groups[0]["params"] == [a] and groups[1]["params"] == [b]
    assert record[0]["tensors"] == 0
    with pytest.raises(ValueError, match=r"'decoder\.\*' match no trainable parameter.*enc\.x"):
        split([("enc.x", a)], [{"match": "decoder.*", "lr_scale": 0.5}], 1.0)


def test_bad_groups_are_named_before_anything_is_built(compose_cfg):
    out = []
    validate([{"match": "", "lr_scale": 0}, {"lr_scale": True, "glob": "x"}, "encoder"], out)
    assert len(out) == 6 and "param_groups[0].match" in out[0] and "param_groups[0].lr_scale" in out[1]
    assert "unknown key(s) glob; valid: match, lr_scale" in out[2] and "param_groups[2] must be a mapping" in out[5]
    from sota.config import validate as validate_config
    with pytest.raises(ConfigError, match=r"param_groups\[0\]\.lr_scale must be a number > 0"):
        validate_config(compose_cfg("model=tiny", "param_groups=[{match:'model.encoder.*',lr_scale:-1}]"))
    ok = compose_cfg("model=tiny", "param_groups=[{match:'model.encoder.*',lr_scale:0.05}]")
    validate_config(ok)
    assert list(ok.param_groups) == [{"match": "model.encoder.*", "lr_scale": 0.05}]
