"""tokens.training=merge: teacher-forced forwards (the training loss, calibration) merge audio tokens as generation
does; the logits cover the kept positions, the labels are taken there and the loss is their cross-entropy.
tokens.training=none leaves training exactly as without a merger."""

import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sota.compress import lora
from sota.config import validate
from sota.errors import ConfigError
from sota.models import token_merge
from sota.models.audio_llm import IGNORE

from test_lora import lcfg
from test_model import batch_for
from test_token_merge import decisive_model

SECONDS, TASKS, ANSWERS = [2.0, 0.8, 1.4], ["asr", "aac", "asr"], ["a cat", "the red dog barks", "the dog"]


def shares(model, b, keep):
    _, mask = model.audio_embeds(b)
    counts = mask.sum(1)
    return torch.minimum(torch.floor((1 - keep) * counts.float()).long(), counts // 2).tolist()


def test_teacher_forced_forwards_merge_and_score_the_kept_positions():
    model = decisive_model(3)
    b = batch_for(model, SECONDS, TASKS, ANSWERS)
    full, full_labels = model.outputs(b)
    merger = model.merge_tokens(keep=0.6, layer=1, training="merge")
    out, labels = model.outputs(b)
    share = shares(model, b, 0.6)
    assert min(share) > 0 and len(set(share)) > 1
    # every row loses the batch's fewest merges; the rest of a row's are hidden, not removed
    assert out.logits.shape[:2] == labels.shape == (3, full.logits.shape[1] - min(share))
    assert torch.equal(labels, full_labels.gather(1, merger.kept))
    # the answers survive whole, each token right after the original position before it
    at = labels != IGNORE
    assert torch.equal(labels[at], full_labels[full_labels != IGNORE])
    assert (merger.kept[:, 1:] - merger.kept[:, :-1] == 1)[at[:, 1:]].all()
    hand = F.cross_entropy(out.logits[:, :-1].float().reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)
    assert torch.equal(out.loss, hand) and torch.equal(model(b), hand)
    assert not torch.allclose(out.loss, full.loss)
    rec = merger.record()
    assert rec["training"] == "merge" and rec["prefills"] == 0 and rec["kept_ratio"] is None
    assert rec["teacher_forced"]["prefills"] == 2 and rec["teacher_forced"]["merged"] == 2 * sum(share)


def test_a_batch_without_padding_merges_uniformly_and_scores_the_same_way():
    model = decisive_model(4)
    b = batch_for(model, [2.0], ["asr"], ["a red dog"])
    full, full_labels = model.outputs(b)
    model.merge_tokens(keep=0.5, layer=2, training="merge")
    out, labels = model.outputs(b)
    assert out.logits.shape[1] == full.logits.shape[1] - shares(model, b, 0.5)[0]
    assert torch.equal(labels[labels != IGNORE], full_labels[full_labels != IGNORE])
    assert torch.isfinite(out.loss) and not torch.allclose(out.loss, full.loss)


def test_gradients_flow_through_the_merge_to_adapters_and_connector():
    model = decisive_model(5)
    lora.attach(model, lcfg())
    merger = model.merge_tokens(keep=0.6, layer=1, training="merge")
    model.train()
    loss = model(batch_for(model, SECONDS, TASKS, ANSWERS))
    loss.backward()
    assert merger.record()["teacher_forced"]["merged"] > 0
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any("layers.0." in n and "lora_B" in n and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    assert any("layers.2." in n and "lora_B" in n and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    assert any(n.startswith("connector.") and g is not None and g.abs().sum() > 0 for n, g in grads.items())


def test_a_merged_away_token_gets_its_gradient_through_the_average():
    """Merging before layer 0: a token merged away reaches the loss only through the pair's average."""
    model = decisive_model(5)
    b = batch_for(model, SECONDS, TASKS, ANSWERS)
    merger = model.merge_tokens(keep=0.6, layer=0, training="merge")
    embeds, mask = model.audio_embeds(b)
    inputs = model.assemble(embeds, mask, TASKS, ANSWERS)
    labels = inputs.pop("labels")
    x = inputs.pop("inputs_embeds").detach().requires_grad_(True)
    out, _ = merger.scored(model.llm(inputs_embeds=x, **inputs, use_cache=False), labels, IGNORE)
    out.loss.backward()
    gone = torch.ones(labels.shape, dtype=torch.bool)
    gone.scatter_(1, merger.kept, False)
    assert gone.any() and (x.grad[gone].abs().sum(-1) > 0).all()


def test_training_none_leaves_the_loss_and_its_gradients_as_without_a_merger():
    model = decisive_model(6)
    b = batch_for(model, SECONDS, TASKS, ANSWERS)
    ref = model(b)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    merger = model.merge_tokens(keep=0.6, layer=1)
    assert merger.training == "none"
    loss = model(b)
    loss.backward()
    assert torch.equal(loss, ref)
    assert all(torch.equal(p.grad, ref_grads[n]) for n, p in model.named_parameters() if p.grad is not None)
    assert merger.record()["prefills"] == 0 and "teacher_forced" not in merger.record()


def test_generation_counts_stay_apart_from_training_forwards():
    model = decisive_model(7)
    merger = model.merge_tokens(keep=0.6, layer=1, training="merge")
    model(batch_for(model, SECONDS, TASKS, ANSWERS))
    forced = dict(merger.record()["teacher_forced"])
    model.generate_ids(batch_for(model, SECONDS, TASKS), max_new_tokens=2)
    rec = merger.record()
    assert rec["teacher_forced"] == forced and rec["prefills"] == 1
    assert rec["merged"] == sum(shares(model, batch_for(model, SECONDS, TASKS), 0.6))


def test_the_training_key_is_checked():
    out = []
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.7, "layer": 1, "training": "always"}), None, out)
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.7, "layer": 1, "training": "merge"}), None, out,
                         recover="distill")
    token_merge.validate(OmegaConf.create({"method": "none", "training": "merge"}), None, out)
    assert len(out) == 3
    assert "tokens.training" in out[0] and "none, merge" in out[0] and "'always'" in out[0]
    assert "recover=distill" in out[1] and "tokens=merge" in out[2]
    with pytest.raises(ValueError, match="tokens.training"):
        decisive_model(0).merge_tokens(keep=0.5, layer=1, training="yes")


def test_training_merge_composes_with_training_and_the_compression_groups(compose_cfg):
    cfg = compose_cfg("task=train", "tokens=merge", "tokens.training=merge", "prune=width", "quant=int8_weight",
                      "lora=lora")
    assert cfg.tokens.training == "merge"
    validate(cfg)
    assert compose_cfg("tokens=merge").tokens.training == "none"
    with pytest.raises(ConfigError, match=r"tokens\.training must be one of none, merge"):
        validate(compose_cfg("tokens=merge", "tokens.training=sometimes"))
    with pytest.raises(ConfigError, match="recover=distill"):
        validate(compose_cfg("task=train", "tokens=merge", "tokens.training=merge", "recover=distill"))


@pytest.mark.slow  # one run of run.py
def test_a_training_run_merges_in_training_and_records_it(tmp_path):
    from test_run import run

    run(tmp_path, "debug=fast", "task=train", "tokens=merge", "tokens.training=merge", "tokens.keep=0.5",
        "tokens.layer=1")
    res = json.loads((tmp_path / "results.json").read_text())
    tok = res["compression"]["tokens"]
    assert res["status"] == "ok" and tok["method"] == "merge" and tok["training"] == "merge"
    assert tok["teacher_forced"]["prefills"] >= res["timing"]["train_steps"] > 0
    assert tok["teacher_forced"]["merged"] > 0 and 0.4 <= tok["teacher_forced"]["kept_ratio"] < 1
    assert tok["prefills"] > 0 and 0.4 <= tok["kept_ratio"] < 1
