"""Every way a run starts from a checkpoint, in one place: the checkpoint evaluated (task=eval), the one it
starts from (`init_from`, given or recorded inside the evaluated one), and the one an interrupted run left
(resume). Each is read once (`starts`); what it recorded (vocabulary, encoder context) rules over the config."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sota.compress import pipeline, prune
from sota.compress.plan import enabled
from sota.run_dir import resume_checkpoint

log = logging.getLogger(__name__)

__all__ = ["Starts", "read", "starts", "changes_encoder", "recorded_audio", "vocabulary", "init_from", "restore_evaluated",
           "load_evaluated", "resume_from"]


def read(path: str) -> dict[str, Any]:
    """A sota checkpoint (tensors and plain containers only: never arbitrary pickles). A file that is not one
    raises ValueError naming it and saying what it appears to be: missing, empty, not a torch/zip checkpoint,
    refused by weights_only, or a torch file without Lightning's state_dict."""
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


@dataclass
class Starts:
    """The checkpoints a run starts from, each read once: `evaluated` (task=eval) and `init` (init_from)."""

    evaluated: dict[str, Any] | None = None
    init_path: str | None = None
    init: dict[str, Any] | None = None

    @property
    def recorded(self) -> list[dict[str, Any]]:
        """The checkpoints whose records rule, the evaluated one first."""
        return [c for c in (self.evaluated, self.init) if c is not None]


def starts(cfg: DictConfig) -> Starts:
    evaluated = read(cfg.ckpt_path) if cfg.task == "eval" and cfg.ckpt_path else None
    init_path = cfg.get("init_from") or _trained_from(cfg, evaluated)
    return Starts(evaluated, init_path, read(init_path) if init_path else None)


def init_from(model: Any, start: Starts) -> dict[str, Any] | None:
    """`init_from`: the model an earlier run trained, as the start of this run (see pipeline.load_trained)."""
    return pipeline.load_trained(model, start.init_path, start.init) if start.init is not None else None


def changes_encoder(start: Starts) -> bool:
    return start.init is not None and pipeline.trained_changes_encoder(start.init)


def _trained_from(cfg: DictConfig, evaluated: dict[str, Any] | None) -> str | None:
    """task=eval of a checkpoint whose run started from another (init_from): that one's path, so the same
    starting model is rebuilt before this checkpoint's own tensors are loaded."""
    if evaluated is None:
        return None
    record = evaluated.get("sota_compression") or {}
    path = (record.get("init_from") or {}).get("path")
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"{cfg.ckpt_path} was trained from init_from={path}, which no longer exists: "
                                "the evaluation needs that checkpoint too")
    return path


def vocabulary(dm: Any, start: Starts) -> list[str]:
    """The first given checkpoint's vocabulary (word-level tokenizers must match it), else the corpus'."""
    for ckpt in start.recorded:
        if "sota_vocabulary" in ckpt:
            return ckpt["sota_vocabulary"]
    return sorted(dm.vocabulary())


def recorded_audio(cfg: DictConfig, start: Starts) -> tuple[dict[str, Any], list[str]]:
    """What the recorded checkpoint was trained with (encoder context, token rate), and notes. The encoder
    is built with the trained context whatever `encoder.context_s` says: a model trained on 5 s windows has
    never seen a 30 s encoding, and clips longer than its context are encoded in chunks of it instead."""
    for ckpt in start.recorded:
        record = ckpt.get("sota_audio")
        if not record:
            continue
        notes = []
        trained = record.get("context_s")
        if trained is not None and abs(float(trained) - float(cfg.encoder.context_s)) > 1e-9:
            notes.append(f"encoder.context_s={cfg.encoder.context_s} replaced by the checkpoint's trained context "
                         f"{trained} s (longer clips are encoded in chunks of it)")
            log.warning(notes[-1])
            OmegaConf.update(cfg, "encoder.context_s", float(trained), force_add=False)
        # Checkpoints from before buckets existed were trained on whole contexts (bucket_s null).
        bucket = record.get("bucket_s")
        if bucket != cfg.encoder.get("bucket_s"):
            notes.append(f"encoder.bucket_s={cfg.encoder.get('bucket_s')} replaced by the checkpoint's {bucket}: "
                         "its features were padded that way in training")
            log.warning(notes[-1])
            OmegaConf.update(cfg, "encoder.bucket_s", bucket, force_add=True)
        return dict(record), notes
    return {"context_s": float(cfg.encoder.context_s), "bucket_s": cfg.encoder.get("bucket_s")}, []


def restore_evaluated(model: Any, cfg: DictConfig, start: Starts, device: str) -> dict[str, Any]:
    """task=eval: rebuild what compression changed before training (pruned structure, QLoRA base, adapters),
    so the checkpoint's trainable tensors fit; merge and post-training quantization follow as in training."""
    record = start.evaluated.get("sota_compression") or {}
    if enabled(record.get("prune")):
        prune.replay(model, record["prune"])
    rest = pipeline.before_training(model, OmegaConf.merge(cfg, {"prune": {"method": "none"}}), [], device)
    rest["prune"] = record.get("prune", rest["prune"])
    return rest


def load_evaluated(module: Any, cfg: DictConfig, start: Starts) -> None:
    """task=eval: the evaluated checkpoint's trained tensors into the (restored) model."""
    ckpt, ckpt_path = start.evaluated, cfg.ckpt_path
    missing_trainable = [n for n, p in module.named_parameters() if p.requires_grad and n not in ckpt["state_dict"]]
    if missing_trainable:
        raise ValueError(f"{ckpt_path} lacks {len(missing_trainable)} trainable tensors of this model "
                         f"(e.g. {missing_trainable[0]}): it was saved from a different configuration")
    module.load_state_dict(ckpt["state_dict"], strict=False)


def resume_from(cfg: DictConfig, out_dir: Path, results: Any) -> str | None:
    """`ckpt_path` when given; else the checkpoint an interrupted run left in this directory (the same command
    run again continues it), recorded in results.json."""
    if cfg.ckpt_path:
        return str(cfg.ckpt_path)
    last = resume_checkpoint(out_dir)
    if last is None:
        return None
    step = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
    log.warning("resuming the interrupted run in %s from %s (step %d)", out_dir, last, step)
    results.resumed_from = {"path": str(last), "step": step}
    return str(last)
