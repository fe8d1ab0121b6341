"""tokens.grouping (pairs | runs) and tokens.attention (plain | proportional): which neighbouring audio tokens
may merge, each group's mean at its last position, and + log(group size) on the attention logits towards it."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from sota.config import validate
from sota.errors import ConfigError
from sota.models import token_merge
from sota.models.token_merge import TokenMerger

from test_model import batch_for
from test_token_merge import decisive_model


def clip_states(dim=8, seed=0):
    """Hidden states of one row: text, then six audio tokens in runs a a a | b | c c, then text. The runs' members
    differ slightly, so their means are not any member."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(dim, generator=g) for _ in range(3))
    noise = lambda: 0.01 * torch.randn(dim, generator=g)   # noqa: E731
    rows = [torch.randn(dim, generator=g), a + noise(), a + noise(), a + noise(), b, c + noise(), c + noise(),
            torch.randn(dim, generator=g)]
    audio = torch.tensor([[False, True, True, True, True, True, True, False]])
    return torch.stack(rows)[None], audio


def merged(grouping, attention="plain", keep=0.5):
    merger = TokenMerger(decisive_model(0).llm, keep=keep, layer=1, grouping=grouping, attention=attention)
    hidden, audio = clip_states()
    merger.audio_at = audio
    out, kept, hide, size = merger._merge(hidden, per_row=True)
    return hidden, out, kept, hide, size, merger


def test_runs_merge_each_run_of_similar_neighbours_into_its_mean_at_its_last_position():
    hidden, out, kept, hide, size, merger = merged("runs", "proportional")
    # keep 0.5 of 6 audio tokens: the three most similar edges are the runs' own (a-a, a-a, c-c)
    assert kept.tolist() == [[0, 3, 4, 6, 7]] and hide is None
    h = hidden[0]
    expect = torch.stack([h[0], h[1:4].mean(0), h[4], h[5:7].mean(0), h[7]])
    assert torch.allclose(out[0], expect, atol=1e-6)
    assert size.tolist() == [[1, 3, 1, 2, 1]]
    assert merger.record()["merged"] == 3 and merger.record()["grouping"] == "runs"


def test_pairs_merge_only_disjoint_pairs_whatever_their_neighbours():
    hidden, out, kept, _, size, _ = merged("pairs")
    # pairs (1, 2), (3, 4), (5, 6): all three merge at keep 0.5, so a-b is averaged though b stands alone
    h = hidden[0]
    assert kept.tolist() == [[0, 2, 4, 6, 7]] and size is None
    assert torch.allclose(out[0, 2], (h[3] + h[4]) / 2, atol=1e-6)


def test_runs_may_keep_fewer_than_half_and_count_what_they_merged():
    model = decisive_model(5)
    merger = model.merge_tokens(keep=0.3, layer=1, grouping="runs")
    seconds, tasks = [2.0, 1.6], ["asr", "aac"]
    b = batch_for(model, seconds, tasks)
    model.generate_ids(b, max_new_tokens=3)
    _, mask = model.audio_embeds(b)
    counts = mask.sum(1)
    shares = torch.floor(0.7 * counts.float()).long()
    rec = merger.record()
    assert rec["merged"] == int(shares.sum()) and rec["kept_ratio"] < 0.5
    assert (shares > counts // 2).all()   # more than pairs could merge


def attention_masks(model, layer):
    """The attention mask layer `layer` receives on each forward (after the merger's hooks)."""
    seen = []
    model.llm.model.layers[layer].register_forward_pre_hook(
        lambda m, a, k: seen.append(k.get("attention_mask")), with_kwargs=True)
    return seen


def additive(mask, shape, causal):
    """A layer's attention mask as float logits to add; None (transformers left it out) as what it stands for."""
    low = torch.finfo(torch.float32).min
    if mask is None:
        return torch.full(shape, low).triu(1) if causal else torch.zeros(shape)
    return torch.zeros(mask.shape).masked_fill(~mask, low) if mask.dtype == torch.bool else mask.float()


@pytest.mark.parametrize("seconds", [[2.0, 1.2], [2.0]], ids=["padded batch", "one clip, no padding"])
def test_proportional_attention_adds_the_log_of_each_group_size_to_its_column(seconds):
    tasks = ["asr", "aac"][:len(seconds)]
    seen = {}
    for attention in ("plain", "proportional"):
        model = decisive_model(3)
        merger = model.merge_tokens(keep=0.4, layer=1, grouping="runs", attention=attention)
        seen[attention] = attention_masks(model, 2)
        model.generate_ids(batch_for(model, seconds, tasks), max_new_tokens=3)
    bias = merger.size.log()                                         # [B, kept prompt positions]
    assert (bias > 0).any() and (bias == 0).any()
    for step, causal in ((0, True), (1, False)):                     # the prefill, then a decode step
        got = seen["proportional"][step].float()
        plain = additive(seen["plain"][step], got.shape, causal)
        visible = plain > torch.finfo(torch.float32).min / 2
        added = torch.nn.functional.pad(bias, (0, got.shape[-1] - bias.shape[1]))[:, None, None, :].expand_as(got)
        assert torch.allclose((got - plain)[visible], added[visible], atol=1e-5), step
        assert (got[~visible] < -1e30).all()


@pytest.mark.parametrize("seconds", [[2.0, 1.2], [2.0]], ids=["padded batch", "one clip, no padding"])
def test_each_forward_cuts_its_mask_once_for_every_later_layer(seconds):
    """The later layers of one forward share their cut (mask, rotary tables, cache length): a decode step builds
    its proportional mask once, not once per layer."""
    model = decisive_model(3, layers=6)
    merger = model.merge_tokens(keep=0.4, layer=1, grouping="runs", attention="proportional")
    forwards, cuts, cut = [], [], merger._cut
    model.llm.model.layers[0].register_forward_pre_hook(lambda *a: forwards.append(1))
    merger._cut = lambda *a: cuts.append(1) or cut(*a)
    model.generate_ids(batch_for(model, seconds, ["asr", "aac"][:len(seconds)]), max_new_tokens=4)
    assert len(forwards) >= 3 and len(cuts) == len(forwards)      # 5 hooked layers, one cut per forward


@pytest.mark.parametrize("grouping,attention", [("runs", "plain"), ("runs", "proportional"),
                                                ("pairs", "proportional")])
@pytest.mark.parametrize("seconds", [[2.0, 1.2], [2.0]], ids=["padded batch", "one clip, no padding"])
def test_cached_decoding_equals_full_forwards_with_the_same_merge(grouping, attention, seconds):
    """As for pairs: layer k's states are causal, so each greedy token of the cached decode (per-layer cache
    lengths, cut masks, the proportional bias on every step) equals the argmax of an uncached forward."""
    model = decisive_model(7)
    merger = model.merge_tokens(keep=0.4 if grouping == "runs" else 0.6, layer=1, grouping=grouping,
                                attention=attention)
    tasks = ["asr", "aac"][:len(seconds)]
    b = batch_for(model, seconds, tasks)
    rows = model.generate_ids(b, max_new_tokens=5)
    steps = min(len(r) for r in rows)
    assert steps >= 2
    n = len(seconds)
    with torch.no_grad():
        embeds, mask = model.audio_embeds(b)
        inputs = model.assemble(embeds, mask, tasks)
        audio_at = merger.audio_at.clone()
        table = model.llm.get_input_embeddings()
        tokens = torch.tensor([r[:steps] for r in rows])
        for t in range(steps):
            e = torch.cat([inputs["inputs_embeds"], table(tokens[:, :t])], 1)
            attn = torch.cat([inputs["attention_mask"], torch.ones(n, t, dtype=torch.long)], 1)
            merger.audio_at = torch.cat([audio_at, torch.zeros(n, t, dtype=torch.bool)], 1)
            logits = model.llm(inputs_embeds=e, attention_mask=attn,
                               position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
            assert logits.argmax(-1).tolist() == tokens[:, t].tolist(), t


def test_proportional_attention_changes_what_the_answer_sees():
    seconds, tasks = [2.0], ["asr"]
    logits = {}
    for attention in ("plain", "proportional"):
        model = decisive_model(4)
        model.merge_tokens(keep=0.4, layer=1, grouping="runs", attention=attention)
        b = batch_for(model, seconds, tasks)
        with torch.no_grad():
            embeds, mask = model.audio_embeds(b)
            inputs = model.assemble(embeds, mask, tasks)
            model.__dict__["token_merger"].arm(model.__dict__["token_merger"].audio_at, False)
            logits[attention] = model.llm(inputs_embeds=inputs["inputs_embeds"],
                                          attention_mask=inputs["attention_mask"]).logits[:, -1]
    assert not torch.allclose(logits["plain"], logits["proportional"])
    assert math.isfinite(float(logits["proportional"].abs().max()))


@pytest.mark.parametrize("attention", ["plain", "proportional"])
def test_teacher_forced_runs_score_every_answer_token_after_its_original_neighbour(attention):
    """tokens.training=merge with runs: the answers survive whole and each answer token is scored by the logits of
    the position before it, as with pairs, whether the batch is padded (4D masks) or not."""
    from sota.models.audio_llm import IGNORE

    for seconds, tasks, answers in (([2.0, 0.8, 1.4], ["asr", "aac", "asr"], ["a cat", "the red dog barks", "the dog"]),
                                    ([2.0], ["asr"], ["a red dog"])):
        model = decisive_model(3)
        b = batch_for(model, seconds, tasks, answers)
        full, full_labels = model.outputs(b)
        merger = model.merge_tokens(keep=0.3, layer=1, training="merge", grouping="runs", attention=attention)
        out, labels = model.outputs(b)
        at = labels != IGNORE
        assert torch.equal(labels[at], full_labels[full_labels != IGNORE])
        assert (merger.kept[:, 1:] - merger.kept[:, :-1] == 1)[at[:, 1:]].all()
        assert torch.isfinite(out.loss) and not torch.allclose(out.loss, full.loss)
        assert merger.record()["teacher_forced"]["kept_ratio"] < 0.5


def test_settings_are_checked():
    out = []
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.3, "layer": 1, "grouping": "runs"}), None, out)
    assert out == []
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.3, "layer": 1}), None, out)
    token_merge.validate(OmegaConf.create({"method": "merge", "keep": 0.7, "layer": 1, "grouping": "blobs",
                                           "attention": "loud"}), None, out)
    assert len(out) == 3 and "[0.5, 1)" in out[0] and "pairs, runs" in out[1] and "plain, proportional" in out[2]
    with pytest.raises(ValueError, match="tokens.grouping"):
        decisive_model(0).merge_tokens(keep=0.5, layer=1, grouping="blobs")


def test_grouping_and_attention_compose_with_the_other_groups(compose_cfg):
    cfg = compose_cfg("task=train", "tokens=merge", "tokens.grouping=runs", "tokens.attention=proportional",
                      "tokens.keep=0.3", "tokens.training=merge", "prune=depth", "quant=int8_weight")
    validate(cfg)
    assert compose_cfg("tokens=merge").tokens.grouping == "pairs"
    with pytest.raises(ConfigError, match=r"tokens\.keep must be in \[0\.5, 1\)"):
        validate(compose_cfg("tokens=merge", "tokens.keep=0.3"))


@pytest.mark.slow  # one run of run.py
def test_a_run_merges_runs_with_proportional_attention_and_records_them(tmp_path):
    import json

    from test_run import run

    run(tmp_path, "tokens=merge", "tokens.keep=0.4", "tokens.layer=1", "tokens.grouping=runs",
        "tokens.attention=proportional")
    res = json.loads((tmp_path / "results.json").read_text())
    tok = res["compression"]["tokens"]
    assert res["status"] == "ok" and (tok["grouping"], tok["attention"]) == ("runs", "proportional")
    assert tok["merged"] > 0 and tok["kept_ratio"] < 0.5
