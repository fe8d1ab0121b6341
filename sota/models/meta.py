"""Builds a composed config's encoder, connector and LLM on the `meta` device: every module and shape, no
weights, files or network. Sizes hub-scale presets (Whisper large, Llama, Vicuna) and checks that their parts
fit together on a machine that could never load them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from sota.models.connector import max_audio_tokens
from sota.models.encoder import DTYPES, WHISPER_FRAMES_PER_SECOND, trim_whisper_context
from sota.models.hub import ModelNotAvailable, resolve_pretrained

# The numbers that fix every parameter shape, from each model's config.json on the hub (a comment names the
# file; no hub here, so they were written from the published files and are checked against the published
# parameter counts in tests/test_presets.py, which they match). Everything else (rope scaling, norm epsilons,
# token ids, ...) changes values, not shapes, and is left at the transformers default: modules built from
# these are the right size, not the real model.
# Keyed by the reference a preset writes in `encoder.path`, `encoder.second.path` or `llm.path`.
_WHISPER_LARGE = dict(model_type="whisper", d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                      encoder_ffn_dim=5120, max_source_positions=1500)
_LLAMA_3_2 = dict(model_type="llama", vocab_size=128256, intermediate_size=8192, num_key_value_heads=8,
                  tie_word_embeddings=True)

ARCHS: dict[str, dict[str, Any]] = {
    # Whisper: only the encoder is built, so the decoder fields are irrelevant.
    # openai/whisper-tiny.en, as sota.formats.whisper_ct2 converts the bundled weights (its config.json).
    "bundled:whisper-tiny.en": dict(model_type="whisper", d_model=384, encoder_layers=4, encoder_attention_heads=6,
                                    encoder_ffn_dim=1536, num_mel_bins=80, max_source_positions=1500),
    # openai/whisper-small/config.json
    "openai/whisper-small": dict(model_type="whisper", d_model=768, encoder_layers=12, encoder_attention_heads=12,
                                 encoder_ffn_dim=3072, num_mel_bins=80, max_source_positions=1500),
    # openai/whisper-large-v2/config.json: large-v3's shape with 80 mel bins.
    "openai/whisper-large-v2": {**_WHISPER_LARGE, "num_mel_bins": 80},
    # openai/whisper-large-v3/config.json: 128 mel bins.
    "openai/whisper-large-v3": {**_WHISPER_LARGE, "num_mel_bins": 128},
    # openai/whisper-large-v3-turbo/config.json: large-v3's encoder; only decoder_layers (4) differs.
    "openai/whisper-large-v3-turbo": {**_WHISPER_LARGE, "num_mel_bins": 128},
    # ALM/hubert-base-audioset: HuBERT base (the model card's architecture); HubertConfig's defaults are the
    # base feature extractor (7 convolutions of 512 channels, group norm, 128-wide positional convolution).
    "ALM/hubert-base-audioset": dict(model_type="hubert", hidden_size=768, num_hidden_layers=12,
                                     num_attention_heads=12, intermediate_size=3072),
    # HuggingFaceTB/SmolLM2-135M-Instruct/config.json, the LLM of `mini` (bundled as a GGUF).
    "bundled:smollm2-135m-instruct": dict(model_type="llama", vocab_size=49152, hidden_size=576,
                                          intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                                          num_key_value_heads=3, tie_word_embeddings=True),
    # Qwen/Qwen2.5-0.5B-Instruct/config.json (q/k/v biases come with the qwen2 model type).
    "Qwen/Qwen2.5-0.5B-Instruct": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                       num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                       tie_word_embeddings=True),
    # meta-llama/Llama-3.2-1B-Instruct/config.json (head_dim 64 = 2048 / 32).
    "meta-llama/Llama-3.2-1B-Instruct": {**_LLAMA_3_2, "hidden_size": 2048, "num_hidden_layers": 16,
                                         "num_attention_heads": 32},
    # meta-llama/Llama-3.2-3B-Instruct/config.json (head_dim 128 = 3072 / 24).
    "meta-llama/Llama-3.2-3B-Instruct": {**_LLAMA_3_2, "hidden_size": 3072, "num_hidden_layers": 28,
                                         "num_attention_heads": 24},
    # lmsys/vicuna-7b-v1.5/config.json: Llama-2-7B, full multi-head attention, untied output layer.
    "lmsys/vicuna-7b-v1.5": dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                 tie_word_embeddings=False),
}


def arch_config(ref: str, key: str) -> PretrainedConfig:
    """The architecture config of `ref`: from ARCHS, else the config.json of a local or cached copy."""
    if ref in ARCHS:
        arch = dict(ARCHS[ref])
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    try:
        local = resolve_pretrained(ref, key=key)
    except ModelNotAvailable as err:
        raise ModelNotAvailable(f"{err} To size it without any files, add its architecture to "
                                f"sota.models.meta.ARCHS (known: {', '.join(sorted(ARCHS))}).") from None
    return AutoConfig.from_pretrained(local, local_files_only=True)


def _params(module: nn.Module | None) -> int:
    # parameters() yields a tied weight once, as the real model holds it once.
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def _bytes(module: nn.Module | None) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


@dataclass
class MetaAudioLLM:
    """The parts `build_model` would assemble, as meta-device modules in the dtypes a run would load."""

    encoder: WhisperEncoder
    second: nn.Module | None
    connector: nn.Module
    llm: PreTrainedModel
    audio_tokens: int            # audio tokens of a full-context clip

    def _parts(self) -> dict[str, nn.Module | None]:
        return {"encoder": self.encoder, "second": self.second, "connector": self.connector, "llm": self.llm}

    def params(self) -> dict[str, int]:
        """Parameters per part and in total."""
        counts = {name: _params(m) for name, m in self._parts().items()}
        return {**counts, "total": sum(counts.values())}

    def weight_bytes(self) -> dict[str, int]:
        """Weight memory per part and in total, unquantized (conf/quant/ is not applied here)."""
        sizes = {name: _bytes(m) for name, m in self._parts().items()}
        return {**sizes, "total": sum(sizes.values())}


def _whisper(enc: DictConfig) -> WhisperEncoder:
    if enc.path is None:
        if enc.config is None:
            raise ValueError("encoder: set either `path` (pretrained weights) or `config` (random init)")
        config = AutoConfig.for_model("whisper", **OmegaConf.to_container(enc.config, resolve=True))
    else:
        config = arch_config(enc.path, key="encoder.path")
    if config.model_type != "whisper":
        raise ValueError(f"encoder.path={enc.path} is a {config.model_type!r} model; the encoder must be Whisper")
    # AudioEncoder trims the context and casts only Whisper; the second encoder stays float32.
    return trim_whisper_context(WhisperEncoder(config), enc.context_s).to(DTYPES[enc.dtype])


def _second(spec: DictConfig | None) -> nn.Module | None:
    if not spec:
        return None
    if spec.get("path") is not None:
        config = arch_config(spec.path, key="encoder.second.path")
    elif spec.get("config") is not None:
        arch = OmegaConf.to_container(spec.config, resolve=True)
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    else:
        raise ValueError("encoder.second: set `path` or `config`")
    return AutoModel.from_config(config)


def _llm(llm: DictConfig) -> PreTrainedModel:
    if llm.get("path") is None:
        raise ValueError(f"build_on_meta sizes pretrained LLMs (llm.path); llm._target_={llm._target_} builds its "
                         "model from the corpus vocabulary, so only a real build knows its size")
    model = AutoModelForCausalLM.from_config(arch_config(llm.path, key="llm.path"))
    return model.to(getattr(torch, llm.get("dtype", "float32")))


def build_on_meta(cfg: DictConfig, make_llm: Callable[[], nn.Module] | None = None) -> MetaAudioLLM:
    """Encoder (+ second encoder), connector and LLM of `cfg` on the meta device; reads no weights. `make_llm`
    builds the LLM instead of `llm.path`'s architecture (the planner's, for shape-only and corpus-built LLMs)."""
    with torch.device("meta"):
        encoder = _whisper(cfg.encoder)
        second = _second(cfg.encoder.get("second"))
        llm = make_llm() if make_llm is not None else _llm(cfg.llm)
        in_dim = encoder.config.d_model + (second.config.hidden_size if second is not None else 0)
        connector = instantiate(cfg.connector)(in_dim=in_dim, out_dim=llm.config.hidden_size,
                                               frames_per_second=WHISPER_FRAMES_PER_SECOND)
    c = cfg.connector
    tokens = max_audio_tokens(cfg.encoder.context_s, WHISPER_FRAMES_PER_SECOND, c.window_s, c.stride_s,
                              connector.num_queries)  # the connector's: a projector's config has none
    return MetaAudioLLM(encoder=encoder, second=second, connector=connector, llm=llm, audio_tokens=tokens)
