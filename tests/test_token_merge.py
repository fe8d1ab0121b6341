"""tokens=merge: audio tokens merged inside the LLM after layer k at generation; later layers and their caches
see fewer positions, text tokens stay, greedy generation runs through transformers' dynamic cache, and a
keep of 1 would change nothing."""

import pytest
import torch
from omegaconf import OmegaConf

from sota.models import token_merge

from test_decoding import answers
from test_model import batch_for
from test_prune import build


def decisive_model(seed=0, layers=3):
    """A random 3-layer model with clear winners among its logits."""
    model = build(seed=seed, layers=layers)
    for p in model.llm.parameters():
        p.data.normal_(0.0, 0.4)
    return model.eval()


def seen_lengths(model):
    """Sequence lengths each decoder layer's forward received, recorded by hooks."""
    seen = {i: [] for i in range(len(model.llm.model.layers))}
    for i, layer in enumerate(model.llm.model.layers):
        layer.register_forward_pre_hook(lambda m, a, k, i=i: seen[i].append((a[0] if a else k["hidden_states"]).shape[1]),
                                        with_kwargs=True)
    return seen


def test_later_layers_see_fewer_positions_and_generation_runs():
    model = decisive_model(5)
    layers = len(model.llm.model.layers)
    merger = model.merge_tokens(keep=0.5, layer=1)
    seen = seen_lengths(model)   # registered after the merger's hooks: sees what each layer got
    seconds, tasks = [2.0, 1.6], ["asr", "aac"]
    out = answers(model, seconds, tasks, "eager")
    assert len(out) == 2
    prefill = {i: v[0] for i, v in seen.items()}
    rec = merger.record()
    assert rec["prefills"] == 1 and rec["merged"] > 0
    # half of each clip's audio tokens went; the batch lost the smaller clip's count of positions in every row
    b = batch_for(model, seconds, tasks)
    embeds, mask = model.audio_embeds(b)
    counts = mask.sum(1).tolist()
    removed = min(counts) // 2
    assert rec["merged"] == sum(c // 2 for c in counts) and rec["hidden"] == rec["merged"] - 2 * removed
    assert all(prefill[i] == prefill[0] for i in range(1))
    assert all(prefill[i] == prefill[0] - removed for i in range(1, layers))
    assert all(n == 1 for i in seen for n in seen[i][1:])     # decode steps: one position each


def test_each_clip_merges_its_own_share_whatever_its_batch():
    """Clips of three lengths in one batch: each row merges its own share (the surplus over the batch's
    fewest hidden as masked columns), so every answer is the one the clip gets alone."""
    model = decisive_model(8)
    seconds, tasks = [2.0, 0.8, 1.4], ["asr", "aac", "asr"]
    merger = model.merge_tokens(keep=0.6, layer=1)
    together = answers(model, seconds, tasks, "eager")
    rec = merger.record()
    _, mask = model.audio_embeds(batch_for(model, seconds, tasks))
    counts = mask.sum(1)
    shares = torch.minimum(torch.floor((1 - 0.6) * counts.float()).long(), counts // 2).tolist()
    assert len(set(shares)) > 1 and rec["merged"] == sum(shares)
    assert rec["hidden"] == sum(shares) - len(shares) * min(shares) and rec["uniform_prefills"] == 0
    alone = [answers(model, [s], [t], "eager")[0] for s, t in zip(seconds, tasks)]
    assert together == alone and any(together)


def test_merged_generation_stays_close_to_the_full_one():
    model = decisive_model(6)
    seconds, tasks = [2.0], ["asr"]
    full = answers(model, seconds, tasks, "eager", max_new_tokens=6)
    model.merge_tokens(keep=0.9, layer=1)
    merged = answers(model, seconds, tasks, "eager", max_new_tokens=6)
    assert isinstance(merged[0], str)
    # training forwards are untouched by the merger (it acts on generation prompts only)
    b = batch_for(model, seconds, tasks, ["a cat"])
    model.__dict__["token_merger"].remove()
    ref = model(b)
    model.merge_tokens(keep=0.5, layer=1)
    assert torch.equal(model(b), ref)
    assert full and merged


def test_settings_are_checked():
    out = []
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.3, "layer": -1}), None, out)
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.7, "layer": 1}),
                         OmegaConf.create({"backend": "static", "num_beams": 1}), out)
    token_merge.validate(OmegaConf.create({"method": "squash"}), None, out)
    assert len(out) == 4 and "tokens.keep" in out[0] and "tokens.layer" in out[1]
    assert "generate.backend=eager" in out[2] and "merge" in out[3]
    with pytest.raises(ValueError, match="decoder layers"):
        decisive_model(0).merge_tokens(keep=0.5, layer=99)
    # layer 0's cache sizes transformers' decode masks: generation cannot merge before it
    model = decisive_model(0)
    model.merge_tokens(keep=0.5, layer=0)
    with pytest.raises(RuntimeError, match="merge from layer 1 on to generate"):
        answers(model, [2.0], ["asr"], "eager")
    out = []
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.7, "layer": 0}), None, out)
    assert len(out) == 1 and "tokens.layer must be a decoder layer index >= 1" in out[0]


def test_cached_decoding_over_merged_tokens_equals_full_forwards_with_the_same_merge():
    """Causal attention makes layer k's audio states, hence the merged pairs, the same whether the prompt is
    prefilled alone or with the answer so far: each greedy token of the cached decode (per-layer cache lengths,
    cut masks) must equal the argmax of an uncached forward over the batch's prompts + answers so far."""
    model = decisive_model(7)
    merger = model.merge_tokens(keep=0.6, layer=1)
    seconds, tasks = [2.0, 1.2], ["asr", "aac"]     # clips of two lengths: a left-padded batch, 4D masks
    b = batch_for(model, seconds, tasks)
    rows = model.generate_ids(b, max_new_tokens=5)
    steps = min(len(r) for r in rows)
    assert steps >= 2
    with torch.no_grad():
        embeds, mask = model.audio_embeds(b)
        inputs = model.assemble(embeds, mask, tasks)
        audio_at = merger.audio_at.clone()
        assert (inputs["attention_mask"] == 0).any()
        table = model.llm.get_input_embeddings()
        tokens = torch.tensor([r[:steps] for r in rows])
        for t in range(steps):
            e = torch.cat([inputs["inputs_embeds"], table(tokens[:, :t])], 1)
            attn = torch.cat([inputs["attention_mask"], torch.ones(2, t, dtype=torch.long)], 1)
            merger.audio_at = torch.cat([audio_at, torch.zeros(2, t, dtype=torch.bool)], 1)
            logits = model.llm(inputs_embeds=e, attention_mask=attn,
                               position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
            assert logits.argmax(-1).tolist() == tokens[:, t].tolist(), t


@pytest.mark.slow  # one run of run.py
def test_a_run_merges_audio_tokens_at_evaluation_and_records_how_many(tmp_path):
    import json

    from test_run import run

    run(tmp_path, "tokens=merge", "tokens.keep=0.5", "tokens.layer=1")
    res = json.loads((tmp_path / "results.json").read_text())
    tok = res["compression"]["tokens"]
    assert res["status"] == "ok" and tok["method"] == "merge" and tok["prefills"] > 0
    assert tok["merged"] > 0 and 0.4 <= tok["kept_ratio"] < 1
