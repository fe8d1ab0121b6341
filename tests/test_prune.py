import json

import pytest
import torch
from omegaconf import OmegaConf

from sota.compress.prune import check_model, prune, replay, validate
from sota.models.audio_llm import AudioLLM
from sota.models.connector import WindowQFormer
from sota.models.encoder import AudioEncoder
from sota.models.llm import tiny_llama

from conftest import SMALL_WHISPER
from test_model import PROMPTS, WORDS, batch_for


def build(seed=0, layers=4, heads=4, kv_heads=2, inter=256, enc_layers=2, hidden=64, bucket_s=None):
    torch.manual_seed(seed)
    enc = AudioEncoder(path=None, config=dict(SMALL_WHISPER, encoder_layers=enc_layers), context_s=2.0,
                       bucket_s=bucket_s)
    llm, tok = tiny_llama(WORDS, hidden_size=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                          intermediate_size=inter)
    con = WindowQFormer(enc.out_dim, hidden, frames_per_second=50, hidden_size=32, heads=4, intermediate_size=64,
                        layers=1)
    return AudioLLM(enc, con, llm, tok, PROMPTS).eval()


def calib(model):
    return [batch_for(model, [1.0, 0.5], ["asr", "aac"], ["a red dog barks", "a cat"]),
            batch_for(model, [1.5], ["asr"], ["the dog"])]


@torch.no_grad()
def logits(model, b):
    embeds, mask = model.audio_embeds(b)
    inputs = model.assemble(embeds, mask, b["tasks"], b["answers"])
    inputs.pop("labels")
    return model.llm(**inputs).logits


def mlp_params(model, layers):
    return sum(p.numel() for i in layers for p in model.llm.model.layers[i].mlp.parameters())


def runs(model):
    b = calib(model)[0]
    assert torch.isfinite(model(b))
    out = model.generate(batch_for(model, [1.0, 0.5], ["asr", "aac"]), max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def cfg(**kw):
    return OmegaConf.create(kw)


def test_depth_halves_the_decoder_and_renumbers_layers():
    model = build()
    report = prune(model, cfg(method="depth", ratio=0.5), calib(model))
    llm = report["llm"]
    assert (llm["layers_before"], llm["layers_after"]) == (4, 2) and len(llm["removed_layers"]) == 2
    assert 0 not in llm["removed_layers"] and llm["kept"]["layers"][0] == 0
    assert model.llm.config.num_hidden_layers == 2 and len(model.llm.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in model.llm.model.layers] == [0, 1]
    assert llm["params_after"] < llm["params_before"]
    runs(model)


def identity_first_layer():
    model = build()
    with torch.no_grad():  # layer 0 adds nothing to the residual stream: the lowest block influence of all
        model.llm.model.layers[0].self_attn.o_proj.weight.zero_()
        model.llm.model.layers[0].mlp.down_proj.weight.zero_()
    return model


def test_depth_removes_the_least_influential_layer_unless_protected():
    model = identity_first_layer()
    report = prune(model, cfg(method="depth", ratio=0.25, protected_layers=[]), calib(model))
    assert report["llm"]["removed_layers"] == [0]
    model = identity_first_layer()
    report = prune(model, cfg(method="depth", ratio=0.25, protected_layers=[0]), calib(model))
    assert 0 not in report["llm"]["removed_layers"] and len(report["llm"]["removed_layers"]) == 1


@pytest.mark.parametrize("importance", ["activation", "taylor", "magnitude"])
def test_width_removes_about_the_ratio_of_mlp_channels_and_keeps_hidden_size(importance):
    model = build()
    before = mlp_params(model, [1, 2, 3])
    layer0 = {k: v.clone() for k, v in model.llm.model.layers[0].state_dict().items()}
    report = prune(model, cfg(method="width", ratio=0.3, importance=importance), calib(model))
    removed = 1 - mlp_params(model, [1, 2, 3]) / before
    assert abs(removed - 0.3) < 0.03, removed  # 256 -> 176 channels (a multiple of round_to=8): 31 %
    assert report["llm"]["intermediate"] == [256, 176, 176, 176]
    assert report["llm"]["heads"] == [4, 2, 2, 2] and report["llm"]["kv_heads"] == [2, 2, 2, 2]
    assert model.llm.config.hidden_size == 64 == model.llm.get_input_embeddings().weight.shape[1]
    assert all(torch.equal(v, model.llm.model.layers[0].state_dict()[k]) for k, v in layer0.items())  # protected
    assert 0 < report["llm"]["achieved_ratio"] < 0.3
    json.dumps(report)
    runs(model)


def test_width_equals_the_original_with_pruned_structure_masked():
    """Slicing must keep the GQA head -> KV mapping: the pruned model computes what the original computes with
    the removed heads' and channels' output weights zeroed."""
    model = build(heads=8, kv_heads=2)
    reference = build(heads=8, kv_heads=2)
    report = prune(model, cfg(method="width", ratio=0.5, protected_layers=[], round_to=1), calib(model))
    kept = report["llm"]["kept"]
    with torch.no_grad():
        for i, layer in enumerate(reference.llm.model.layers):
            q_heads = kept["q_heads"][i]
            assert len(q_heads) == 4 and kept["kv_heads"][i] == [0, 1]
            assert sorted(h // 4 for h in q_heads) == [0, 0, 1, 1]  # two query heads kept in each group of four
            assert model.llm.model.layers[i].self_attn.num_key_value_groups == 2
            head_mask = torch.zeros(8, 8)
            head_mask[q_heads] = 1
            layer.self_attn.o_proj.weight.mul_(head_mask.reshape(1, -1))
            mlp_mask = torch.zeros(256)
            mlp_mask[kept["mlp"][i]] = 1
            layer.mlp.down_proj.weight.mul_(mlp_mask)
    b = calib(model)[0]
    torch.testing.assert_close(logits(model, b), logits(reference, b), rtol=1e-4, atol=1e-4)
    runs(model)


@pytest.mark.parametrize("settings", [
    dict(method="width", ratio=0.3, importance="activation", targets=["llm", "encoder"]),
    dict(method="width", ratio=0.4, importance="taylor", protected_layers=[0, -1]),
    dict(method="depth", ratio=0.5, targets=["llm", "encoder"]),
])
def test_replay_on_a_fresh_model_loads_the_pruned_weights(settings):
    model = build()
    report = json.loads(json.dumps(prune(model, cfg(**settings), calib(model))))
    fresh = build(seed=1)
    replay(fresh, report)
    fresh.load_state_dict(model.state_dict())  # strict: every shape matches
    b = calib(model)[0]
    assert torch.equal(logits(model, b), logits(fresh, b))
    runs(fresh)


@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_encoder_scores_count_each_clips_own_frames_whatever_path_the_encoder_takes(importance):
    # bucketed clips and a clip longer than the context (two chunks, beside clips with a silent second one):
    # the scores, hence the channels kept, are those of the same model without buckets
    kept = []
    for bucket_s in (None, 0.5):
        model = build(enc_layers=2, bucket_s=bucket_s)
        batches = [batch_for(model, [1.0, 0.5, 3.0], ["asr", "aac", "asr"], ["a red dog barks", "a cat", "the dog"]),
                   batch_for(model, [1.0, 0.5], ["asr", "aac"], ["a red dog barks", "a cat"])]   # buckets alone
        prune(model, cfg(method="width", ratio=0.5, targets=["encoder"], importance=importance, round_to=1), batches)
        kept.append([layer.fc1.weight.detach().clone() for layer in model.encoder.whisper.layers])
        runs(model)
    for a, b in zip(*kept):
        torch.testing.assert_close(a, b)


def test_encoder_target_prunes_whisper_mlp_and_layers_and_keeps_it_frozen():
    model = build(enc_layers=4)
    report = prune(model, cfg(method="width", ratio=0.5, targets=["encoder"], round_to=1), calib(model))
    assert "llm" not in report and report["encoder"]["intermediate"] == [64] * 4
    assert all(layer.fc1.out_features == 64 == layer.fc2.in_features for layer in model.encoder.whisper.layers)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    runs(model)
    model = build(enc_layers=4)
    report = prune(model, cfg(method="depth", ratio=0.5, targets=["encoder"]), calib(model))
    assert report["encoder"]["layers_after"] == 2 == model.encoder.whisper.config.encoder_layers
    assert len(model.llm.model.layers) == 4
    runs(model)


def test_text_batches_calibrate_the_llm():
    model = build()
    ids = torch.tensor([[5, 6, 7, 8], [5, 9, 6, 0]])
    text = [{"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}]
    report = prune(model, cfg(method="depth", ratio=0.25), text)
    assert report["llm"]["layers_after"] == 3


def test_none_changes_nothing_and_a_method_with_a_zero_ratio_is_refused():
    model = build()
    n = sum(p.numel() for p in model.parameters())
    assert prune(model, cfg(method="none"), []) == {"method": "none", "ratio": 0.0, "targets": ["llm"]}
    with pytest.raises(ValueError, match="prunes nothing"):  # a point labelled pruned that is not
        prune(model, cfg(method="width", ratio=0.0), [])
    assert sum(p.numel() for p in model.parameters()) == n
    replay(model, {"method": "none"})


def errors(settings):
    out = []
    validate(cfg(**settings), out)
    return out


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_outside_the_unit_interval_is_rejected(ratio):
    out = errors(dict(method="width", ratio=ratio))
    assert len(out) == 1 and "prune.ratio" in out[0] and "[0, 1)" in out[0]


def test_validation_names_keys_and_valid_values():
    out = errors(dict(method="width", ratio=0.2, importance="random", targets=["llm", "connector"], round_to=0,
                      calib_batches=0, protected_layers="0"))
    text = "\n".join(out)
    assert "prune.importance must be one of activation, taylor, magnitude; got 'random'" in text
    assert "prune.targets" in text and "llm, encoder" in text
    assert "prune.round_to" in text and "prune.protected_layers" in text
    assert "prune.calib_batches must be >= 1 for importance=random" not in text  # unknown importance: said once
    assert "methodd" in "\n".join(errors(dict(methodd="width")))
    assert "prune.method must be one of none, width, depth" in "\n".join(errors(dict(method="block")))
    assert "prune.calib_batches must be >= 1 for method=depth" in "\n".join(errors(dict(method="depth", ratio=0.1,
                                                                                       calib_batches=0)))
    assert errors(dict(method="width", ratio=0.2, importance="magnitude", calib_batches=0)) == []
    out = []
    validate(None, out)
    assert out == []
    for name in ("none", "width", "depth"):
        out = []
        validate(OmegaConf.load(f"conf/prune/{name}.yaml"), out)
        assert out == [], (name, out)


def test_head_ratio_removing_every_head_or_none_is_rejected_before_any_change():
    model = build()  # 4 query heads over 2 KV heads: groups of 2
    n = sum(p.numel() for p in model.parameters())
    out = []
    check_model(model, cfg(method="width", ratio=0.8), out)
    assert len(out) == 1 and "prune.ratio=0.8 would remove every query head" in out[0]
    assert "(llm layers 1, 2, 3 have 4 query heads and 2 KV heads: 2 per group" in out[0]
    with pytest.raises(ValueError, match=r"prune.ratio=0.2 prunes no attention heads \(llm layers 1, 2, 3 have "
                                         r"4 query heads and 2 KV heads"):
        prune(model, cfg(method="width", ratio=0.2, round_to=1), calib(model))
    assert sum(p.numel() for p in model.parameters()) == n
    out = []
    check_model(model, cfg(method="width", ratio=0.2, prune_heads=False, round_to=1), out)
    assert out == []
    mha = build(heads=4, kv_heads=4)  # multi-head attention: whole heads (with their k and v) go
    report = prune(mha, cfg(method="width", ratio=0.5, round_to=1), calib(mha))
    assert report["llm"]["heads"][1:] == [2, 2, 2] and report["llm"]["kv_heads"][1:] == [2, 2, 2]
    runs(mha)


def test_smollm2_head_layout_keeps_two_of_three_query_heads_per_group():
    model = build(heads=9, kv_heads=3, hidden=72)  # SmolLM2-135M: 9 query heads over 3 KV heads
    out = []
    check_model(model, cfg(method="width", ratio=0.1), out)
    assert out == ["prune.ratio=0.1 prunes no attention heads (llm layers 1, 2, 3 have 9 query heads and 3 KV heads: "
                   "3 per group, round(3 x 0.9) = 3 kept); use prune.ratio > 0.167 or prune.prune_heads=false"]
    report = prune(model, cfg(method="width", ratio=0.3, importance="magnitude"), [])
    assert report["llm"]["heads"] == [9, 6, 6, 6] and report["llm"]["kv_heads"] == [3, 3, 3, 3]
    assert [layer.self_attn.num_key_value_groups for layer in model.llm.model.layers] == [3, 2, 2, 2]
    runs(model)


def test_structure_problems_of_the_model_are_reported():
    model = build()
    out = []
    check_model(model, cfg(method="depth", ratio=0.1), out)  # round(0.4) = 0 layers
    check_model(model, cfg(method="depth", ratio=0.5, protected_layers=[1, 2, 3]), out)
    check_model(model, cfg(method="width", ratio=0.3, protected_layers=[7]), out)
    check_model(model, cfg(method="width", ratio=0.01, prune_heads=False), out)  # 256 x 0.99 rounds back to 256
    assert "removes round(0.1 x 4) = 0 of the 4 llm layers" in out[0]
    assert "only 1 are not in prune.protected_layers" in out[1]
    assert "prune.protected_layers: layer 7 does not exist (the llm has 4 decoder layers)" in out[2]
    assert "prunes no MLP channels (llm layers 1, 2, 3 have 256 channels; 256 x 0.99 rounds to 256" in out[3]
    assert len(out) == 4


# -- low-rank encoder --------------------------------------------------------------------------------------
LOWRANK = dict(method="lowrank", ratio=0.5, targets=["encoder"], importance="activation", round_to=8,
               calib_batches=2)


@torch.no_grad()
def encoder_out(model, batches):
    return torch.cat([model.encoder(**b["encoder_inputs"]).flatten() for b in batches])


def test_lowrank_factorises_every_encoder_linear_to_the_ratio_and_activation_beats_svd_on_its_data():
    from sota.compress.lowrank import LowRankLinear
    errors = {}
    for importance in ("activation", "magnitude"):
        model = build(enc_layers=2)
        batches = calib(model)
        ref, before = encoder_out(model, batches), sum(p.numel() for p in model.encoder.whisper.parameters())
        report = prune(model, cfg(**{**LOWRANK, "importance": importance}), batches)
        sec = report["encoder"]
        factorised = [m for m in model.encoder.whisper.modules() if isinstance(m, LowRankLinear)]
        assert len(factorised) == len(sec["ranks"]) == 2 * 6 and not sec["kept_full_rank"]   # q k v out fc1 fc2
        assert all(m.rank % 8 == 0 and m.rank * (m.in_features + m.out_features) <= 0.5 * m.in_features *
                   m.out_features for m in factorised)
        assert 0.45 <= sec["factorised_weights_ratio"] <= 0.6
        assert sec["params_before"] == before and sec["achieved_ratio"] == round(1 - sec["params_after"] / before, 6)
        assert sum(p.numel() for p in model.encoder.whisper.parameters()) == sec["params_after"] < before
        errors[importance] = ((encoder_out(model, batches) - ref).norm() / ref.norm()).item()
        runs(model)
    assert 0 < errors["activation"] < errors["magnitude"], errors


def test_lowrank_replays_on_a_fresh_model_and_checkpoints_keep_its_factors():
    from sota.compress.lowrank import factor_names
    model = build(enc_layers=2)
    batches = calib(model)
    report = json.loads(json.dumps(prune(model, cfg(**LOWRANK), batches)))
    fresh = build(enc_layers=2)
    replay(fresh, report)
    names = factor_names(fresh)
    assert names == factor_names(model) and all(".down." in n or ".up." in n for n in names)
    state = {k: v for k, v in model.state_dict().items() if k in names}
    fresh.load_state_dict(state, strict=False)
    assert torch.equal(encoder_out(fresh, batches), encoder_out(model, batches))


@pytest.mark.parametrize("factors", ["frozen", "trained"])
def test_lowrank_factors_train_in_recovery_only_when_asked(factors):
    from sota.compress.lowrank import factor_names
    model = build(enc_layers=2)
    report = prune(model, cfg(**LOWRANK, factors=factors), calib(model))
    assert report["encoder"]["factors"] == factors
    params = dict(model.encoder.whisper.named_parameters())
    factor_params = [params[n] for n in factor_names(model.encoder.whisper)]
    model(batch_for(model, [1.0], ["asr"], ["a red dog barks"])).backward()
    if factors == "trained":
        assert all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0 for p in factor_params)
    else:
        assert not any(p.requires_grad for p in factor_params)
    # the rest of the encoder stays frozen either way
    assert not any(p.requires_grad for n, p in params.items() if n not in factor_names(model.encoder.whisper))


def test_lowrank_settings_are_checked():
    out = []
    validate(cfg(**{**LOWRANK, "targets": ["llm"]}), out)
    validate(cfg(**{**LOWRANK, "importance": "taylor"}), out)
    validate(cfg(**{**LOWRANK, "calib_batches": 0}), out)
    validate(cfg(**{**LOWRANK, "factors": "thawed"}), out)
    validate(cfg(method="width", ratio=0.3, factors="trained"), out)
    assert len(out) == 5 and "frozen, trained" in out[3] and "prune.method=lowrank only" in out[4]
    assert "prune.targets must be [encoder]" in out[0]
    assert "activation, magnitude" in out[1] and "taylor" in out[1]
    assert "calib_batches must be >= 1" in out[2]
    model = build(enc_layers=1)
    with pytest.raises(ValueError, match="no encoder linear shrinks"):
        prune(model, cfg(**{**LOWRANK, "ratio": 0.01, "round_to": 64}), calib(model))
