"""Hub presets (Whisper small/large, Qwen2.5, Llama 3.2, Vicuna) and the seed-table experiments: they compose,
their architectures have the published sizes (built on the meta device, no weights), and a missing model is
reported offline with the override that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import WhisperConfig

from sota.config import validate
from sota.errors import ConfigError
from sota.models.hub import ModelNotAvailable, resolve_pretrained
from sota.models.meta import ARCHS, build_on_meta

# option -> (hub id, published parameter count). Whisper counts are the encoder alone (large-v3-turbo keeps
# large-v3's encoder); LLM counts are the model cards' (Qwen2.5-0.5B 0.49 B, Llama 3.2 1.23 B / 3.21 B,
# Llama-2-7B = Vicuna-7B 6.74 B).
ENCODERS = {
    "whisper_small": ("openai/whisper-small", 88e6),
    "whisper_large_v3": ("openai/whisper-large-v3", 637e6),
    "whisper_large_v3_turbo": ("openai/whisper-large-v3-turbo", 637e6),
    "whisper_large_v2_beats": ("openai/whisper-large-v2", 637e6),
}
LLMS = {
    "qwen2_5_0_5b_instruct": ("Qwen/Qwen2.5-0.5B-Instruct", 494e6),
    "llama3_2_1b_instruct": ("meta-llama/Llama-3.2-1B-Instruct", 1.24e9),
    "llama3_2_3b_instruct": ("meta-llama/Llama-3.2-3B-Instruct", 3.21e9),
    "vicuna_7b": ("lmsys/vicuna-7b-v1.5", 6.74e9),
}
SMALLEST_LLM = "llm=qwen2_5_0_5b_instruct"
NO_PRESET = "~model"  # the default `model=tiny` preset would set encoder.dtype; test the files as written


def close(n: int, expected: float, tol: float = 0.02) -> bool:
    return abs(n - expected) <= tol * expected


@pytest.fixture()
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline Hugging Face cache, so a model the developer happens to have cached is not found."""
    import huggingface_hub.constants

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))  # read at import time
    monkeypatch.chdir(tmp_path)  # a relative directory named like the hub id cannot exist here
    return hub


@pytest.mark.parametrize("option", sorted(ENCODERS))
def test_encoder_preset_composes_to_a_stock_frozen_hub_whisper(compose_cfg, option):
    path, _ = ENCODERS[option]
    cfg = compose_cfg(f"encoder={option}", NO_PRESET)
    validate(cfg)
    enc = cfg.encoder
    assert enc._target_ == "sota.models.encoder.AudioEncoder"
    assert (enc.path, enc.context_s, enc.frozen, enc.dtype, enc.config) == (path, 30.0, True, "float16", None)
    assert (enc.second is None) == (option != "whisper_large_v2_beats")


@pytest.mark.parametrize("option", sorted(ENCODERS))
def test_encoder_preset_has_the_published_size(compose_cfg, option):
    meta = build_on_meta(compose_cfg(f"encoder={option}", SMALLEST_LLM, NO_PRESET))
    assert close(meta.params()["encoder"], ENCODERS[option][1])
    assert meta.encoder.embed_positions.weight.device.type == "meta"


@pytest.mark.parametrize("option", sorted(LLMS))
def test_llm_preset_composes_and_has_the_published_size(compose_cfg, option):
    path, expected = LLMS[option]
    cfg = compose_cfg(f"llm={option}", "encoder=whisper_small", NO_PRESET)
    validate(cfg)
    assert cfg.llm._target_ == "sota.models.llm.pretrained_llm" and cfg.llm._partial_
    assert set(cfg.llm) == {"_target_", "_partial_", "path", "dtype", "attn_implementation", "prompt_template"}
    assert (cfg.llm.path, cfg.llm.dtype) == (path, "bfloat16")
    # Only Vicuna's tokenizer lacks a chat template; its turn format must take the user prompt.
    if option == "vicuna_7b":
        assert cfg.llm.prompt_template.format(prompt="<AudioHere> hi") == "USER: <AudioHere> hi ASSISTANT:"
    else:
        assert cfg.llm.prompt_template is None
    meta = build_on_meta(cfg)
    assert close(meta.params()["llm"], expected)
    assert meta.llm.dtype.is_floating_point and str(meta.llm.dtype) == "torch.bfloat16"


def test_arch_table_covers_every_hub_preset():
    assert {p for p, _ in ENCODERS.values()} | {p for p, _ in LLMS.values()} <= set(ARCHS)


def test_the_mini_llm_shape_has_smollm2_135m_parameter_count():
    """`llm=shape_only llm.arch=bundled:smollm2-135m-instruct` benchmarks `mini`'s LLM without its weights."""
    from transformers import AutoModelForCausalLM

    from sota.models.meta import arch_config

    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(arch_config("bundled:smollm2-135m-instruct", key="llm.arch"))
    assert sum(p.numel() for p in llm.parameters()) == 134_515_008  # SmolLM2-135M-Instruct, tied head


def test_connector_maps_large_whisper_into_llama_1b_width(compose_cfg):
    meta = build_on_meta(compose_cfg("encoder=whisper_large_v3", "llm=llama3_2_1b_instruct", "connector=qformer",
                                     NO_PRESET))
    assert meta.connector.norm.normalized_shape == (1280,)
    cross = meta.connector.qformer.encoder.layer[0].crossattention.attention.key
    assert (cross.in_features, meta.connector.proj.out_features) == (1280, 2048)
    assert meta.audio_tokens == 89  # 1500 frames in 17-frame windows, the last one padded
    assert meta.weight_bytes()["encoder"] == 2 * meta.params()["encoder"]  # float16, as the preset says


def test_second_encoder_widens_the_connector_input_as_beats_does_in_salmonn(compose_cfg):
    meta = build_on_meta(compose_cfg("encoder=whisper_large_v2_beats", SMALLEST_LLM, NO_PRESET))
    assert meta.second.config.hidden_size == 768 and close(meta.params()["second"], 94.4e6)  # HuBERT base
    assert meta.connector.norm.normalized_shape == (1280 + 768,)  # SALMONN's Q-Former input width
    assert meta.weight_bytes()["second"] == 4 * meta.params()["second"]  # AudioEncoder casts only Whisper


def test_meta_build_follows_the_trimmed_context_of_the_bundled_encoder(compose_cfg):
    full = build_on_meta(compose_cfg(SMALLEST_LLM, NO_PRESET, "encoder.context_s=30.0"))
    short = build_on_meta(compose_cfg(SMALLEST_LLM, NO_PRESET, "data.max_clip_s=5.0"))
    assert full.params()["encoder"] - short.params()["encoder"] == (1500 - 250) * 384


def test_offline_hub_id_without_cache_names_the_model_and_the_override(empty_hub_cache):
    with pytest.raises(ModelNotAvailable) as err:
        resolve_pretrained("openai/whisper-large-v3", key="encoder.path")
    assert "openai/whisper-large-v3" in str(err.value) and "encoder.path=" in str(err.value)


def test_meta_build_reads_a_local_config_and_names_arch_table_for_unknown_ids(compose_cfg, empty_hub_cache,
                                                                           tmp_path):
    local = tmp_path / "my-whisper"
    WhisperConfig(d_model=64, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128,
                  num_mel_bins=80).save_pretrained(local)
    meta = build_on_meta(compose_cfg("encoder=whisper_small", f"encoder.path={local}", SMALLEST_LLM, NO_PRESET))
    assert meta.encoder.config.d_model == 64
    with pytest.raises(ModelNotAvailable, match=r"llm.path=org/unknown-llm.*sota.models.meta.ARCHS"):
        build_on_meta(compose_cfg("encoder=whisper_small", SMALLEST_LLM, "llm.path=org/unknown-llm", NO_PRESET))


# experiment -> (encoder, LLM, seed-table memory in MB or None where the row needs quantization that
# conf/quant/ does not provide yet)
EXPERIMENTS = {
    "salmonn_7b": ("openai/whisper-large-v2", "lmsys/vicuna-7b-v1.5", 15750),
    "salmonn_3b_baseline": ("openai/whisper-large-v2", "meta-llama/Llama-3.2-3B-Instruct", 9176),
    "sota_1b_4bit": ("openai/whisper-large-v3-turbo", "meta-llama/Llama-3.2-1B-Instruct", None),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_selects_the_seed_row(compose_cfg, name):
    encoder, llm, memory_mb = EXPERIMENTS[name]
    # measure=none: these are GPU recipes, and measuring on a machine without CUDA is refused up front
    cfg = compose_cfg(f"experiment={name}", "measure=none")
    if torch.cuda.is_available():
        validate(cfg)
    else:  # so is training on a GPU: the one problem left
        with pytest.raises(ConfigError) as err:
            validate(cfg)
        assert len(err.value.problems) == 1 and "no usable CUDA device" in err.value.problems[0]
    assert (cfg.encoder.path, cfg.llm.path) == (encoder, llm)
    assert cfg.encoder.second.path == "ALM/hubert-base-audioset"  # every row kept BEATs
    assert (cfg.connector.window_s, cfg.connector.num_queries, cfg.connector.layers) == (0.333333, 1, 2)
    assert (cfg.generate.num_beams, cfg.generate.max_new_tokens) == (4, 200)
    assert cfg.data.max_clip_s == 30.0 and cfg.trainer.accelerator == "gpu"
    # the tiny preset is switched off: its encoder dtype and learning rate do not leak into the recipe
    assert cfg.encoder.dtype == "float16" and cfg.optimizer.lr == 3e-5
    if memory_mb is not None:
        # The seed's peak memory was measured with these weights loaded, so it cannot be below them.
        meta = build_on_meta(cfg)
        assert meta.weight_bytes()["total"] / 2**20 < memory_mb
