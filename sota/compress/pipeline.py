"""The one place that fixes the order of compression steps:

    load [init_from: a trained checkpoint, adapters merged] -> [recover=distill: the teacher copied]
         -> prune (calibration) -> [QLoRA: quantize base] -> LoRA -> train/recover -> merge
         -> post-training quantization -> evaluate -> measure

`load_trained` is the load step for a model an earlier run fine-tuned; `before_training` runs the steps up to
LoRA, `after_training` merges and quantizes; each returns the part of results.json's `compression` record it
produced."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from sota.compress import distill, lora, prune, quant
from sota.compress.plan import CompressionPlan, enabled
from sota.models import token_merge
from sota.models.audio_llm import AudioLLM


def validate(cfg: DictConfig, device: str, out: list[str]) -> None:
    """Config problems of every compression group, appended to `out` (reported before any heavy work)."""
    prune.validate(cfg.get("prune"), out)
    lora.validate(cfg.get("lora"), out)
    quant.validate(cfg.get("quant"), device, out)
    distill.validate(cfg.get("recover"), str(cfg.get("task", "train")), out)
    token_merge.validate(cfg.get("tokens"), cfg.get("generate"), out,
                         recover=distill.settings(cfg.get("recover"))["method"])


def trained_changes_encoder(ckpt: dict[str, Any]) -> bool:
    """Whether loading `ckpt` alters the encoder (its cached features would then be stale)."""
    record = ckpt.get("sota_compression") or {}
    pruned = record.get("prune") or {}
    return ((enabled(pruned) and "encoder" in pruned.get("targets", []))
            or "encoder" in (record.get("lora") or {}).get("on", []))


def load_trained(model: AudioLLM, path: str, ckpt: dict[str, Any]) -> dict[str, Any]:
    """`init_from`: turn a freshly built model into the one an earlier run trained, as the start of this
    run's compression. The checkpoint's pruning is replayed and its adapters attached, its trained tensors
    (connector, adapters, anything else it trained) loaded, and the adapters merged: what follows sees a
    plain fine-tuned model. Its post-training quantization is not replayed (this run's `quant` decides)."""
    record = ckpt.get("sota_compression") or {}
    trained_cfg = ckpt.get("sota_config") or {}
    if "state_dict" not in ckpt or not trained_cfg:
        raise ValueError(f"init_from={path}: not a checkpoint written by sota (no state_dict / sota_config)")
    if quant.is_qlora_base(trained_cfg.get("quant") or {}):
        raise ValueError(f"init_from={path}: the checkpoint trained adapters on a {trained_cfg['quant']['mode']} "
                         "base (QLoRA); start from a checkpoint trained on an unquantized base")
    if enabled(record.get("prune")):
        prune.replay(model, record["prune"])
    if enabled(record.get("lora")):
        lora.attach(model, OmegaConf.create(trained_cfg["lora"]))
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"init_from={path}: {len(unknown)} checkpoint tensors have no place in this model "
                         f"(e.g. {unknown[0]}): encoder, connector and llm must be configured as in the run that "
                         "trained it")
    mismatched = [k for k, v in state.items() if own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"init_from={path}: {mismatched[0]} has shape {tuple(state[mismatched[0]].shape)} in the "
                         f"checkpoint and {tuple(own[mismatched[0]].shape)} here: configure the model as in the "
                         "run that trained it")
    model.load_state_dict(state, strict=False)
    merged = lora.merge(model) if enabled(record.get("lora")) else None
    return {"path": str(path), "tensors": len(state), "global_step": ckpt.get("global_step"),
            "prune": (record.get("prune") or {}).get("method", "none"),
            "lora_merged": (merged or {}).get("merged", [])}


def merge_tokens(model: AudioLLM, cfg: DictConfig) -> token_merge.TokenMerger | None:
    """tokens=merge: the hooks that merge audio tokens inside the (compressed) LLM at generation, and with
    tokens.training=merge in training's teacher-forced forwards too (installed before training), or None."""
    tokens = cfg.get("tokens")
    if tokens is None or tokens.get("method", "none") == "none":
        return None
    return model.merge_tokens(float(tokens.keep), int(tokens.layer), str(tokens.get("training", "none")),
                              str(tokens.get("grouping", "pairs")), str(tokens.get("attention", "plain")))


def before_training(model: AudioLLM, cfg: DictConfig, calib: list[dict[str, Any]], device: str) -> dict[str, Any]:
    plan = CompressionPlan.of(cfg)
    record: dict[str, Any] = {"prune": {"method": "none"}, "lora": {"method": "none"}, "quant": {"mode": "none"}}
    if plan.prune is not None:
        # Calibration runs where the model will train: the encoder is already there (attached to the data), and
        # a model split across devices cannot run a batch.
        model.to(device)
        record["prune"] = prune.prune(model, plan.prune, calib)
    if plan.qlora:  # the frozen base is quantized first and adapters train on top of it
        record["quant"] = quant.quantize(model, plan.quant, device, with_parts=False)
    if plan.lora is not None:
        record["lora"] = lora.attach(model, plan.lora)
    return record


def after_training(model: AudioLLM, cfg: DictConfig, record: dict[str, Any], device: str,
                   calib: list[dict[str, Any]] | None = None, recorded_quant: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Merge and post-training quantization. `calib`: batches that quant=mixed scores its linears on;
    `recorded_quant`: an earlier run's quant record, whose mixed-precision map is applied as it was."""
    model.forget_compiled()  # validation's decoders and the compiled LLM were built on weights about to change
    plan = CompressionPlan.of(cfg)
    if plan.merge:
        record["lora"]["merge"] = lora.merge(model)
    if plan.ptq:
        record["quant"] = quant.quantize(model, plan.quant, device, calib=calib, recorded=recorded_quant)
    elif plan.qlora and quant.parts(plan.quant):  # the base was quantized before training; the parts follow now
        notes = record["quant"].setdefault("notes", [])
        record["quant"]["quantized_modules"] += quant.quantize_parts(model, plan.quant, device, notes)
        record["quant"]["parts"] = quant.parts(plan.quant)
    return record
