"""The one place that fixes the order of compression steps:

    load [init_from: a trained checkpoint, adapters merged] -> prune (calibration) -> [QLoRA: quantize base]
         -> LoRA -> train/recover -> merge -> post-training quantization -> evaluate -> measure

`load_trained` is the load step for a model an earlier run fine-tuned; `before_training` runs the steps up to
LoRA, `after_training` merges and quantizes; each returns the part of results.json's `compression` record it
produced."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sota.compress import lora, prune, quant
from sota.config import enabled
from sota.models.audio_llm import AudioLLM


def _method(node: DictConfig | None, key: str = "method") -> str:
    return "none" if node is None else str(node.get(key, "none"))


def validate(cfg: DictConfig, device: str, out: list[str]) -> None:
    """Config problems of every compression group, appended to `out` (reported before any heavy work)."""
    prune.validate(cfg.get("prune"), out)
    lora.validate(cfg.get("lora"), out)
    quant.validate(cfg.get("quant"), device, out)


def read_checkpoint(path: str) -> dict[str, Any]:
    """A sota checkpoint (tensors and plain containers only: never arbitrary pickles). A file that is not one
    raises ValueError naming it and saying what it appears to be: missing, empty, not a torch/zip checkpoint,
    refused by weights_only, or a torch file without Lightning's state_dict."""
    import zipfile
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    size = file.stat().st_size
    if size == 0:
        raise ValueError(f"checkpoint {path}: empty file (0 bytes), not a Lightning checkpoint; was its save "
                         "interrupted?")
    with file.open("rb") as f:
        head = f.read(64)
    # torch.save writes a zip archive; files from before torch 1.6 are a pickle (its first byte is 0x80).
    is_zip, is_pickle = zipfile.is_zipfile(file), head[:1] == b"\x80"
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - each kind of bad file fails differently inside torch.load
        message = str(err)
        said = (message.splitlines() or [""])[0][:200]
        text = head.decode("utf-8", "replace")
        if (is_zip or is_pickle) and "Weights only load failed" in message:
            why = next((line.split("error:", 1)[1].split(". Please")[0].strip() for line in message.splitlines()
                        if "WeightsUnpickler error:" in line), "") or "objects other than tensors and containers"
            kind = (f"a torch file refused by torch.load(weights_only=True) ({why}); sota never unpickles "
                    "arbitrary objects")
        elif is_zip:
            kind = f"a zip archive but not a readable torch checkpoint (torch.load: {said})"
        elif head[:4] == b"PK\x03\x04":
            kind = "a truncated zip archive: the start of a torch checkpoint whose save or copy did not finish"
        elif is_pickle:
            kind = f"a damaged torch file in the legacy pickle format (torch.load: {type(err).__name__} {said})"
        elif "\ufffd" not in text[:-1] and all(c.isprintable() or c.isspace() for c in text[:-1]):
            kind = f"a text file, not a torch/zip checkpoint (it starts with {text[:40]!r})"
        else:
            kind = f"not a torch/zip checkpoint (it starts with bytes {head[:8].hex(' ')})"
        raise ValueError(f"checkpoint {path} ({size} bytes): {kind}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        found = (f"top-level keys {', '.join(map(repr, list(ckpt)[:8]))}" if isinstance(ckpt, dict)
                 else f"a {type(ckpt).__name__}")
        raise ValueError(f"checkpoint {path}: a torch file without Lightning's state_dict (it holds {found}); "
                         "give a .ckpt that a sota run wrote (e.g. <run dir>/checkpoints/last.ckpt)")
    return ckpt


def trained_changes_encoder(ckpt: dict[str, Any]) -> bool:
    """Whether loading `ckpt` alters the encoder (its cached features would then be stale)."""
    record = ckpt.get("sota_compression") or {}
    pruned = record.get("prune") or {}
    return ((enabled(pruned) and "encoder" in pruned.get("targets", []))
            or "encoder" in (record.get("lora") or {}).get("on", []))


def load_trained(model: AudioLLM, path: str, ckpt: dict[str, Any] | None = None) -> dict[str, Any]:
    """`init_from`: turn a freshly built model into the one an earlier run trained, as the start of this
    run's compression. The checkpoint's pruning is replayed and its adapters attached, its trained tensors
    (connector, adapters, anything else it trained) loaded, and the adapters merged: what follows sees a
    plain fine-tuned model. Its post-training quantization is not replayed (this run's `quant` decides)."""
    ckpt = ckpt if ckpt is not None else read_checkpoint(path)
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
    model.forget_compiled()  # validation's decoders and the compiled LLM were built on weights about to change
    if _method(cfg.get("lora")) != "none" and cfg.lora.get("merge", False):
        record["lora"]["merge"] = lora.merge(model)
    if _method(cfg.get("quant"), "mode") != "none" and not quant.is_qlora_base(cfg.quant):
        record["quant"] = quant.quantize(model, cfg.quant, device)
    return record
