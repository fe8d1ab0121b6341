"""Decoding backends: the static-cache loop gives eager generate's greedy tokens (CPU here; CUDA graphs and
Inductor in the gpu tier), config checks, and the eager fallback for bitsandbytes layers."""

import pytest
import torch

from sota.models.decoding import BACKENDS, BUCKET, Decoders, StaticDecoder, fallback_reason, validate

from test_model import batch_for, small_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def decisive_model(seed=0):
    """A random model whose logits have clear winners, so tiny float differences cannot flip a token."""
    torch.manual_seed(seed)
    model = small_model()
    for p in model.llm.parameters():
        p.data.normal_(0.0, 0.4)
    return model.eval()


def answers(model, seconds, tasks, backend, max_new_tokens=12):
    batch = batch_for(model, seconds, tasks)
    device = next(model.llm.parameters()).device
    batch["encoder_inputs"] = {k: v.to(device) for k, v in batch["encoder_inputs"].items()}
    batch["num_frames"] = batch["num_frames"].to(device)
    return model.generate(batch, max_new_tokens=max_new_tokens, backend=backend)


def test_static_backend_matches_eager_generate_with_left_padding():
    model = decisive_model()
    seconds, tasks = [0.4, 2.0, 1.1], ["asr", "aac", "asr"]
    eager = answers(model, seconds, tasks, "eager")
    static = answers(model, seconds, tasks, "static")
    assert static == eager
    assert len({len(a.split()) for a in eager}) >= 1 and any(eager)


def test_static_decoder_reuses_its_cache_and_rejects_other_batch_sizes():
    model = decisive_model(1)
    dec = Decoders(model.llm, "static", max_new_tokens=8)
    first = dec.get(2, 20)
    assert dec.get(2, 20 + BUCKET // 2) is first or first.max_len >= 2 * BUCKET
    assert dec.get(2, 20).max_len == first.max_len
    grown = dec.get(2, 5 * BUCKET)
    assert grown.max_len > 5 * BUCKET and grown is not first
    with pytest.raises(ValueError, match="batches of 2"):
        grown.prefill(torch.zeros(3, 4, 32), torch.ones(3, 4, dtype=torch.long))


def test_static_decoder_steps_match_a_full_forward():
    """Each decode step's token equals the argmax of a full uncached forward over the sequence so far."""
    model = decisive_model(2)
    llm = model.llm
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 3, 4, 5]])
    attn = (torch.arange(5)[None] >= torch.tensor([[0], [2]])).long()
    embeds = llm.get_input_embeddings()(ids)
    dec = StaticDecoder(llm, batch_size=2, max_len=2 * BUCKET, graphs=False)
    got = [dec.prefill(embeds, attn).clone()]
    for _ in range(4):
        got.append(dec.step().clone())
    seq, mask = ids.clone(), attn.clone()
    for t in range(5):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = llm(input_ids=seq, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1]
        assert logits.argmax(-1).tolist() == got[t].tolist(), f"step {t}"
        seq = torch.cat([seq, got[t][:, None]], 1)
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)


def test_backend_config_checks():
    out = []
    validate("turbo", 1, out)
    validate("compiled", 4, out)
    validate("eager", 4, out)
    assert len(out) == 2
    assert "generate.backend must be one of eager, static, compiled, fused" in out[0]
    assert "num_beams=1" in out[1]
    assert BACKENDS == ("eager", "static", "compiled", "fused")


def test_beam_search_with_a_static_backend_is_refused_up_front(compose_cfg):
    from sota.config import validate as validate_cfg
    from sota.errors import ConfigError

    cfg = compose_cfg("generate=beam", "backend=compiled")
    with pytest.raises(ConfigError, match="generate.backend=compiled decodes greedily"):
        validate_cfg(cfg)


def test_the_fused_backend_stores_int4_as_its_step_reads_it(compose_cfg):
    """On CUDA, quant's own int4 defaults are torchao's tinygemm tiles, which the fused step cannot read:
    backend=fused chooses the compact codes and the Triton kernel; a choice on the command line still wins."""
    from sota.compress import quant

    cfg = compose_cfg("quant=int4_weight", "backend=fused")
    assert (cfg.generate.backend, cfg.quant.int4_layout, cfg.quant.int4_kernel) == ("fused", "compact", "triton")
    assert quant.uses_compact_int4(cfg.quant, "cuda") and quant.int4_kernel(cfg.quant) == "triton"
    compiled = compose_cfg("quant=int4_weight", "backend=compiled").quant
    assert not quant.uses_compact_int4(compiled, "cuda") and quant.int4_kernel(compiled) == "tinygemm"
    chosen = compose_cfg("backend=fused", "quant=int4_weight", "quant.int4_layout=torchao",
                         "quant.int4_kernel=tinygemm")
    assert (chosen.quant.int4_layout, chosen.quant.int4_kernel) == ("torchao", "tinygemm")


def test_bitsandbytes_layers_fall_back_to_eager():
    pytest.importorskip("bitsandbytes")
    from omegaconf import OmegaConf

    from sota.compress import quant

    model = decisive_model(3)
    assert fallback_reason(model.llm) is None
    quant.quantize(model, OmegaConf.create({"mode": "nf4", "targets": ["llm"], "skip": ["lm_head"]}), "cpu")
    assert "bitsandbytes" in fallback_reason(model.llm)
    assert model.static_decoders("static", 8) is None
    assert answers(model, [1.0], ["asr"], "static") == answers(model, [1.0], ["asr"], "eager")


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("batch", [4, 1])  # a batch-1 compiled step is compiled with other Inductor options
@pytest.mark.parametrize("backend", ["static", "compiled", "fused"])
def test_graphed_backends_match_eager_on_cuda(backend, batch):
    model = decisive_model(4).cuda()
    model.llm.requires_grad_(False)   # a frozen LLM: the compiled and fused steps fuse its projections
    seconds, tasks = [0.4, 2.0, 1.1, 0.7][:batch], ["asr", "aac", "asr", "aac"][:batch]
    eager = answers(model, seconds, tasks, "eager", max_new_tokens=16)
    first = answers(model, seconds, tasks, backend, max_new_tokens=16)
    again = answers(model, seconds, tasks, backend, max_new_tokens=16)  # replays the captured graphs
    assert first == eager and again == eager
    dec = model.static_decoders(backend, 16).get(batch, 1)
    assert dec.graphs and dec._decode_graph is not None and dec._prefill_graphs
    assert dec.compiled == (backend == "compiled")
    assert (dec.fused is not None) == (backend == "fused") and dec.note is None


def test_measure_times_the_static_backend_and_counts_its_tokens():
    from sota.measure import latency

    model = decisive_model(5)
    cfg = {"mode": "strict", "warmup": 1, "iterations": 2, "real_clips": 0, "e2e_repeats": 1,
           "max_new_tokens": 6, "clip_s": 1.0}
    r = latency.measure(model, cfg, "cpu", backend="static")
    assert r["backend"] == "static" and r["tpot_ms"] > 0 and r["ttft_ms"] > 0
    assert 1 <= r["e2e_tokens"] <= 6


def test_static_decoding_under_autocast_keeps_the_models_dtype():
    """Lightning's bf16-mixed validation runs generation under autocast: keys would leave rotary embedding in
    float32 and values in bf16, and a static cache of one dtype cannot hold both (seen on an H200)."""
    model = decisive_model()
    batch = batch_for(model, [0.4, 2.0, 1.1], ["asr", "aac", "asr"])
    eager = model.generate(batch, max_new_tokens=12, backend="eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        static = model.generate(batch, max_new_tokens=12, backend="static")
    layer = model.static_decoders("static", 12).last.cache.layers[0]
    assert layer.keys.dtype == layer.values.dtype == torch.float32
    assert static == eager


# -- agreement between backends ----------------------------------------------------------------------------

def test_first_difference_counts_a_stop_as_a_token():
    from sota.models.agreement import first_difference

    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2 and first_difference([], [4]) == 0


def test_resolution_is_the_spacing_of_the_logit_dtype_at_the_top_logit():
    from sota.models.agreement import resolution

    assert resolution(torch.tensor([0.5, -12.0], dtype=torch.bfloat16)) == 8 / 128
    assert resolution(torch.tensor([3.0], dtype=torch.float32)) == 2 * 2.0 ** -23
    assert resolution(torch.tensor([3.0], dtype=torch.float32), torch.bfloat16) == 2 / 128  # bf16 hidden states


def test_the_compute_dtype_is_the_least_precise_of_the_parameters():
    from sota.models.agreement import coarsest_dtype

    mixed = torch.nn.Sequential(torch.nn.Linear(2, 2).to(torch.bfloat16), torch.nn.Linear(2, 2))
    assert coarsest_dtype(mixed) == torch.bfloat16 and coarsest_dtype(torch.nn.Linear(2, 2)) == torch.float32


def test_agreement_of_identical_backends_and_the_margin_of_a_planted_divergence():
    """Static and eager agree on a decisive float32 model; a divergence planted at the runner-up token is
    found at its position, with the reference forward's margin, far beyond float32's resolution."""
    from sota.models.agreement import Agreement

    model = decisive_model(6)
    batch = batch_for(model, [0.4, 2.0, 1.1], ["asr", "aac", "asr"])
    batch["ids"] = ["a", "b", "c"]
    eager = model.generate_ids(batch, max_new_tokens=10, backend="eager")
    static = model.generate_ids(batch, max_new_tokens=10, backend="static")
    same = Agreement("static", "eager")
    same.add(model, batch, eager, static)
    assert static == eager and same.summary()["identical"] == 3 and same.summary()["differ"] == 0
    row = next(i for i, r in enumerate(eager) if len(r) >= 3)
    logits = model.next_token_logits(batch, {row: eager[row][:2]})[row]
    assert int(logits.argmax()) == eager[row][2]  # the reference forward picks the decoded token
    runner_up = int(logits.topk(2).indices[1])
    planted = [list(r) for r in eager]
    planted[row] = eager[row][:2] + [runner_up]
    found = Agreement("static", "eager")
    found.add(model, batch, eager, planted)
    s = found.summary()
    assert (s["answers"], s["identical"], s["differ"], s["decisive"]) == (3, 2, 1, 1)
    d = s["divergences"][0]
    assert (d["id"], d["position"], d["reference_token"], d["token"]) == ("abc"[row], 2, eager[row][2], runner_up)
    assert d["margin"] == pytest.approx(float(logits[eager[row][2]] - logits[runner_up]))
    assert d["margin"] > 0 and s["max_margin_resolutions"] > 1e4


def test_a_divergence_within_a_few_steps_of_the_resolution_is_a_near_tie():
    from sota.models.agreement import NEAR_TIE_RESOLUTIONS, Divergence

    assert Divergence("x", 0, 1, 2, margin=-0.25, resolution=1 / 16).near_tie
    assert not Divergence("x", 0, 1, -1, margin=(NEAR_TIE_RESOLUTIONS + 1) / 16, resolution=1 / 16).near_tie


def test_compare_with_must_be_another_greedy_backend():
    out = []
    validate("static", 1, out, compare_with="static")
    validate("eager", 1, out, compare_with="fast")
    validate("eager", 4, out, compare_with="static")
    validate("compiled", 1, out, compare_with="eager")
    assert len(out) == 3
    assert "another backend than generate.backend=static (eager, compiled, fused); got 'static'" in out[0]
    assert "got 'fast'" in out[1] and "needs generate.num_beams=1 (got 4)" in out[-1]
