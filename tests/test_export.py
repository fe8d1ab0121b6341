"""Export: a model written by `python -m sota.export` loads in a fresh process (sota.load) and computes what the
model it came from computed; a QLoRA model re-quantizes from its exactly merged float weights."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import sota
from conftest import ROOT
from test_run import FAST

from sota.export import layout, read, rebuild, write
from sota.tools.bench import _noise_batches, bench_words

SMALL = ["model=tiny", "llm.hidden_size=64", "llm.intermediate_size=128", "data.max_clip_s=4.0"]


def _logits(model, batches):
    from sota.export.verify import first_logits

    return torch.cat([first_logits(model, b, "cpu") for b in batches])


def _answers(model, batches):
    from sota.export.verify import answers

    return answers(model, batches, "cpu", max_new_tokens=8)


@pytest.fixture(scope="module")
def batches():
    model, cfg, _ = rebuild.configured_model(SMALL, "cpu")
    return _noise_batches(model, 2, bench_words(cfg), "cpu")


PARTS = ["quant.parts.embeddings=int8_weight", "quant.parts.encoder=int8_weight", "quant.parts.connector=int8_weight"]


@pytest.mark.parametrize("mode", ["none", "bf16", "int8_weight", "nf4", "bf16+parts"])
def test_round_trip_computes_what_the_model_computed(tmp_path, batches, mode):
    torch.manual_seed(0)
    extra = PARTS if mode.endswith("+parts") else []
    mode = mode.removesuffix("+parts")
    model, cfg, record = rebuild.configured_model([*SMALL, f"quant={mode}", *extra], "cpu")
    ref_logits, ref_answers = _logits(model, batches), _answers(model, batches)
    spec = write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    loaded = sota.load(str(tmp_path / "out"))
    assert torch.equal(_logits(loaded, batches), ref_logits)
    assert _answers(loaded, batches) == ref_answers
    # the loaded model holds the quantized tensors themselves: no float copy of an int8 model exists
    kinds = {type(p).__name__ for p in loaded.llm.parameters()}
    assert ("Int8Tensor" in kinds) == (mode == "int8_weight" or bool(extra)) and ("Params4bit" in kinds) == (mode == "nf4")
    assert spec["quant"]["mode"] == mode and spec["bytes"]["llm"] > 0


def test_bytes_on_disk_follow_the_quantization(tmp_path):
    sizes = {}
    for mode in ("none", "bf16", "int8_weight"):
        model, cfg, record = rebuild.configured_model([*SMALL, f"quant={mode}", "quant.skip=[]"], "cpu")
        sizes[mode] = write.export(model, cfg, record, tmp_path / mode, source="test", device="cpu")["bytes"]["llm"]
    assert sizes["bf16"] < 0.6 * sizes["none"] and sizes["int8_weight"] < 0.7 * sizes["bf16"]


def test_transformers_alone_loads_the_llm_directory(tmp_path):
    from transformers import AutoModelForCausalLM

    model, cfg, record = rebuild.configured_model([*SMALL, "quant=int8_weight"], "cpu")
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / layout.LLM).eval()
    ids = torch.tensor([[5, 9, 11, 3]])
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, model.llm(ids).logits)
    # int8 tables under a bf16 LLM: transformers reads the torchao config the export wrote
    model, cfg, record = rebuild.configured_model([*SMALL, "quant=bf16", "quant.skip=[]", PARTS[0]], "cpu")
    write.export(model, cfg, record, tmp_path / "parts", source="test", device="cpu")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "parts" / layout.LLM, dtype=torch.bfloat16).eval()
    assert type(plain.get_input_embeddings().weight).__name__ == "Int8Tensor"


def test_a_model_fused_for_decoding_exports_in_transformers_layout(tmp_path):
    from transformers import AutoModelForCausalLM

    from sota.models import fuse
    model, cfg, record = rebuild.configured_model([*SMALL, "quant=int8_weight"], "cpu")
    ids = torch.tensor([[5, 9, 11, 3]])
    with torch.no_grad():
        ref = model.llm(ids).logits
    assert sum(fuse.fuse(model.llm).values()) > 0      # what the compiled backend does before decoding
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    assert not fuse.is_fused(model.llm)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / layout.LLM).eval()
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, ref)


def test_qlora_merges_exactly_onto_float_weights(batches):
    torch.manual_seed(0)
    model, cfg, record = rebuild.configured_model([*SMALL, "quant=nf4", "lora=lora"], "cpu")
    for name, p in model.named_parameters():
        if "lora_B" in name:  # trained adapters are not zero
            torch.nn.init.normal_(p, std=0.05)
    before = _logits(model, batches)
    record["quant"] = write.requantize(model, cfg, "none", "cpu")
    assert not any(type(m).__module__.startswith(("bitsandbytes", "peft")) for m in model.modules())
    assert torch.allclose(_logits(model, batches), before, atol=1e-4)
    assert "re-quantized at export from nf4" in record["quant"]["notes"][0]


def test_export_refuses_what_it_cannot_store_or_would_overwrite(tmp_path):
    for bad in (["quant=nf4", "lora=lora"], ["quant=int8_bnb"]):  # adapters over a 4-bit base; LLM.int8() layers
        model, cfg, record = rebuild.configured_model([*SMALL, *bad], "cpu")
        with pytest.raises(ValueError, match="--quant"):
            write.export(model, cfg, record, tmp_path / "a", source="test", device="cpu")
        assert not (tmp_path / "a").exists()  # nothing half-written
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("keep")
    model, cfg, record = rebuild.configured_model(SMALL, "cpu")
    with pytest.raises(FileExistsError, match="never overwritten"):
        write.export(model, cfg, record, tmp_path / "b", source="test", device="cpu")
    assert (tmp_path / "b" / "x").read_text() == "keep"


def test_load_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory written by"):
        read.load(tmp_path)
    model, cfg, record = rebuild.configured_model(SMALL, "cpu")
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    spec_file = tmp_path / "out" / layout.SPEC
    doc = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**doc, "quant": {**doc["quant"], "mode": "int4_weight"}}))
    with pytest.raises(ValueError, match="device='cuda'"):
        read.load(tmp_path / "out", "cpu")
    spec_file.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        read.load(tmp_path / "out")


@pytest.mark.slow
def test_a_finished_run_exports_and_answers_as_it_did(tmp_path):
    """The command line end to end: a run measured from its own export, then exported again by the command, and
    the export answers the run's own test clips as the run's model does (verify rebuilds that model from the
    run's checkpoint)."""
    run_dir, out = tmp_path / "run", tmp_path / "export"
    proc = subprocess.run([sys.executable, "run.py", *FAST, "data.real_test=null", "measure.from_export=true",
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # measure.from_export: the run exported itself and was measured from that export in a fresh process
    eff = json.loads((run_dir / "results.json").read_text())["efficiency"]
    assert eff["source"] == "export" and (run_dir / "export" / layout.SPEC).is_file()
    assert eff["tpot_ms"] > 0 and eff["peak_memory_mb"] > 0 and eff["export_bytes"]["llm"] > 0
    cmd = [sys.executable, "-m", "sota.export"]
    proc = subprocess.run([*cmd, str(run_dir), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = (out / layout.CARD).read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert f"{results['metrics']['asr/wer']:.4f}" in card
    proc = subprocess.run([sys.executable, "-m", "sota.export.verify", str(run_dir), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "10 of 10 answers identical" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "differ by at most 0\n" in proc.stdout
    again = subprocess.run([*cmd, str(run_dir), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "results.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    proc = subprocess.run([*cmd, str(unfinished), str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "only a finished run" in proc.stderr


# On a GPU: int4 weights packed for CUDA, and a QLoRA (nf4) model shipped as int4. A random Whisper-shaped encoder:
# the GPU machine need not carry the bundled weights. Widths are multiples of int4's group size (128).
GPU = [*SMALL, "llm.hidden_size=256", "llm.intermediate_size=512", "llm.heads=4", "llm.kv_heads=2", "encoder.path=null",
       "encoder.config={d_model:64,encoder_layers:1,encoder_attention_heads:4,encoder_ffn_dim:128,num_mel_bins:80,"
       "max_source_positions:1500}"]


def _cuda_batches(model, cfg):
    return _noise_batches(model, 2, bench_words(cfg), "cuda")  # on the device already


def _gpu_logits(model, batches):
    from sota.export.verify import first_logits

    return torch.cat([first_logits(model, b, "cuda") for b in batches])


@pytest.mark.gpu
def test_int4_round_trip_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model, cfg, record = rebuild.configured_model([*GPU, "quant=int4_weight"], "cuda")
    batches = _cuda_batches(model, cfg)
    ref = _gpu_logits(model, batches)
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cuda")
    loaded = sota.load(str(tmp_path / "out"), "cuda")
    assert "Int4TilePackedTo4dTensor" in {type(p).__name__ for p in loaded.llm.parameters()}
    assert torch.equal(_gpu_logits(loaded, batches), ref)


@pytest.mark.gpu
def test_qlora_ships_as_int4_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    model, cfg, record = rebuild.configured_model([*GPU, "quant=nf4", "lora=lora"], "cuda")
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    batches = _cuda_batches(model, cfg)
    qlora = _gpu_logits(model, batches)
    record["quant"] = write.requantize(model, cfg, "int4_weight", "cuda")
    ref = _gpu_logits(model, batches)
    assert (ref - qlora).abs().max() < 0.25 * qlora.abs().max()  # int4 of the merged weights stays close to QLoRA
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cuda")
    loaded = sota.load(str(tmp_path / "out"), "cuda")
    assert not any(type(m).__module__.startswith(("bitsandbytes", "peft")) for m in loaded.modules())
    assert torch.equal(_gpu_logits(loaded, batches), ref)


def test_gguf_is_refused_where_llama_cpp_has_no_form(tmp_path):
    from sota.formats.gguf_writer import GGUFUnsupported

    model, cfg, record = rebuild.configured_model(SMALL, "cpu")  # the tiny LLM's corpus word tokenizer
    with pytest.raises(GGUFUnsupported, match="BPE tokenizer"):
        write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu", fmt="gguf")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gguf_of_smollm2_reads_back_through_transformers(tmp_path):
    """The written GGUF, read by transformers' own GGUF loader: float32 tensors give the same logits (names and
    the rotary row order right), the tokenizer the same ids, Q8_0 the same greedy token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sota.formats import gguf_writer

    model, cfg, record = rebuild.configured_model(["model=mini", "data.max_clip_s=4.0"], "cpu")
    spec = write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu", fmt="gguf")
    assert spec["gguf"]["tensors"].get("F32") and (tmp_path / "out" / layout.GGUF).is_file()
    llm, tok = model.llm, model.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out", gguf_file=layout.GGUF).eval()
    with torch.no_grad():
        ref = llm(ids).logits
        assert torch.allclose(back(ids).logits, ref, atol=1e-3)
    text = "Hello world, <|im_start|>user the quick brown fox"
    assert AutoTokenizer.from_pretrained(tmp_path / "out", gguf_file=layout.GGUF)(text).input_ids == tok(text).input_ids
    q8 = gguf_writer.write(llm, tok, tmp_path / "q8.gguf", "int8_weight")
    assert q8["tensors"]["Q8_0"] > 0 and q8["bytes"] < 0.3 * spec["gguf"]["bytes"]
    q4 = gguf_writer.write(llm, tok, tmp_path / "q4.gguf", "int4_weight")
    assert q4["tensors"]["Q4_1"] > 0 and q4["bytes"] < 0.6 * q8["bytes"]
    assert q8["notes"] == [] and q4["notes"] == []  # SmolLM2's rows (576, 1536) fill whole 32-wide blocks
    for name in ("q8.gguf", "q4.gguf"):
        back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=name).eval()
        with torch.no_grad():
            assert back(ids).logits[0, -1].argmax() == ref[0, -1].argmax(), name


def test_int8_embeddings_of_an_older_torchao_are_refused_with_the_reason(tmp_path, monkeypatch, batches):
    from sota.compress import quant

    from torchao.quantization import Int8WeightOnlyConfig

    try:
        Int8WeightOnlyConfig(version=1)
    except ValueError:
        pytest.skip("this torchao has no AffineQuantizedTensor int8 form (removed in 0.18), so no fallback to refuse")
    monkeypatch.setattr(quant, "int8_tensor_embeds", lambda: False)  # torchao 0.17: no Int8Tensor embedding kernel
    model, cfg, record = rebuild.configured_model([*SMALL, "quant=int8_weight", "quant.skip=[]"], "cpu")
    assert type(model.llm.get_input_embeddings().weight).__name__ == "AffineQuantizedTensor"
    assert torch.isfinite(_logits(model, batches)).all()
    with pytest.raises(ValueError, match="AffineQuantizedTensor"):
        write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")


def test_verify_checks_both_directories_before_rebuilding(tmp_path, capsys):
    from sota.export import verify

    assert verify.main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert f"sota.export.verify: {tmp_path}: no results.json" in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"status": "ok", "config": {}}))   # nothing to rebuild from
    assert verify.main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no sota.json; not a directory written by python -m sota.export" in capsys.readouterr().err


def test_only_a_finished_run_is_rebuilt(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        rebuild.finished_run(tmp_path)
    (tmp_path / "results.json").write_text('{"status": "ok", "conf')
    with pytest.raises(ValueError, match="unreadable"):
        rebuild.finished_run(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"status": "interrupted", "error": "Interrupted: SIGTERM"}))
    with pytest.raises(ValueError, match="status 'interrupted'"):
        rebuild.finished_run(tmp_path)
