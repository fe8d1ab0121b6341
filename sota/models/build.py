"""Builds the audio-LLM from a composed config: the one place where encoder, connector and LLM meet."""

from __future__ import annotations

from collections.abc import Iterable

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sota.models.audio_llm import AudioLLM


def build_model(cfg: DictConfig, words: Iterable[str]) -> AudioLLM:
    """`words` is the corpus vocabulary, used by LLM builders that make their own tokenizer."""
    encoder = instantiate(cfg.encoder)
    llm_cfg = OmegaConf.to_container(cfg.llm, resolve=True)
    template = llm_cfg.pop("prompt_template", None)
    llm, tokenizer = instantiate(llm_cfg)(words=sorted(words))
    connector = instantiate(cfg.connector)(
        in_dim=encoder.out_dim, out_dim=llm.config.hidden_size, frames_per_second=encoder.frames_per_second)
    prompts = OmegaConf.to_container(cfg.prompts, resolve=True)
    return AudioLLM(encoder, connector, llm, tokenizer, prompts=prompts, prompt_template=template)


def encoder_fingerprint(cfg: DictConfig) -> str:
    """Identifies encoder outputs for the feature cache: same encoder config, same features."""
    return OmegaConf.to_yaml(cfg.encoder, resolve=True, sort_keys=True)
