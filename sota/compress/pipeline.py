"""The one place that fixes the order of compression steps:

    load -> prune (calibration) -> [QLoRA: quantize base] -> LoRA -> train/recover -> merge
         -> post-training quantization -> evaluate -> measure

`before_training` runs the steps up to LoRA, `after_training` merges and quantizes; each returns the part
of results.json's `compression` record it produced."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from sota.compress import lora, prune, quant
from sota.models.audio_llm import AudioLLM


def _method(node: DictConfig | None, key: str = "method") -> str:
    return "none" if node is None else str(node.get(key, "none"))


def validate(cfg: DictConfig, device: str, out: list[str]) -> None:
    """Config problems of every compression group, appended to `out` (reported before any heavy work)."""
    prune.validate(cfg.get("prune"), out)
    lora.validate(cfg.get("lora"), out)
    quant.validate(cfg.get("quant"), device, out)


def before_training(model: AudioLLM, cfg: DictConfig, calib: list[dict[str, Any]], device: str) -> dict[str, Any]:
    record: dict[str, Any] = {"prune": {"method": "none"}, "lora": {"method": "none"}, "quant": {"mode": "none"}}
    if _method(cfg.get("prune")) != "none":
        record["prune"] = prune.prune(model, cfg.prune, calib)
    if _method(cfg.get("quant"), "mode") != "none" and quant.is_qlora_base(cfg.quant):
        # QLoRA: the frozen base is quantized first and adapters train on top of it.
        record["quant"] = quant.quantize(model, cfg.quant, device)
    if _method(cfg.get("lora")) != "none":
        record["lora"] = lora.attach(model, cfg.lora)
    return record


def after_training(model: AudioLLM, cfg: DictConfig, record: dict[str, Any], device: str) -> dict[str, Any]:
    if _method(cfg.get("lora")) != "none" and cfg.lora.get("merge", False):
        record["lora"]["merge"] = lora.merge(model)
    if _method(cfg.get("quant"), "mode") != "none" and not quant.is_qlora_base(cfg.quant):
        record["quant"] = quant.quantize(model, cfg.quant, device)
    return record
