"""What a configuration asks compression to do, read once: which groups are on, in which order they act
(pruning, then a QLoRA base, then adapters; merging and post-training quantization after training), and what
that implies for the rest of a run (calibration batches, whether the encoder changes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QLORA_BASE = ("nf4", "int8_bnb")  # bitsandbytes modes quantize the frozen base BEFORE the adapters train


def quant_parts(quant: Any) -> dict[str, str]:
    """quant.parts that are set: part -> mode."""
    given = (quant.get("parts") if quant is not None else None) or {}
    return {str(k): str(v) for k, v in given.items() if v not in (None, "none")}


def enabled(node: Any, key: str = "method") -> bool:
    """Whether a compression group or its record does anything: prune/lora by `method`, quant by `mode`."""
    return node is not None and node.get(key, "none") != "none"


@dataclass(frozen=True)
class CompressionPlan:
    """The `prune`, `quant` and `lora` groups of a config, each None when off."""

    prune: Any = None
    quant: Any = None
    lora: Any = None

    @classmethod
    def of(cls, cfg: Any) -> CompressionPlan:
        prune, quant, lora = cfg.get("prune"), cfg.get("quant"), cfg.get("lora")
        return cls(prune if enabled(prune) else None, quant if enabled(quant, "mode") or quant_parts(quant) else None,
                   lora if enabled(lora) else None)

    @property
    def qlora(self) -> bool:
        """The base is quantized before training and adapters train on top of it."""
        return self.quant is not None and self.quant.get("mode") in QLORA_BASE

    @property
    def ptq(self) -> bool:
        """The trained (and merged) model is quantized after training."""
        return self.quant is not None and not self.qlora

    @property
    def merge(self) -> bool:
        return self.lora is not None and bool(self.lora.get("merge", False))

    @property
    def prune_targets(self) -> list[str]:
        return list(self.prune.get("targets", [])) if self.prune is not None else []

    @property
    def mixed(self) -> bool:
        """quant=mixed: per-linear modes chosen on calibration batches after training."""
        return self.quant is not None and self.quant.get("mode") == "mixed"

    @property
    def quant_calibration(self) -> bool:
        """Post-training quantization that reads calibration batches: quant=mixed's sensitivities, AWQ's scales,
        GPTQ's Hessians."""
        return self.ptq and (self.mixed or self.quant.get("algorithm", "rtn") in ("awq", "gptq"))

    @property
    def needs_calibration(self) -> bool:
        """Pruning scores importance on a few training batches; quant=mixed, AWQ and GPTQ read them too."""
        return bool(self.prune_targets) or self.quant_calibration

    @property
    def calib_batches(self) -> int:
        return max(int(self.prune.get("calib_batches", 4)) if self.prune is not None else 0,
                   int(self.quant.get("calib_batches", 4)) if self.quant_calibration else 0)

    @property
    def changes_encoder(self) -> bool:
        """Whether any group touches the encoder (then its cached features would be stale)."""
        return ("encoder" in self.prune_targets
                or (self.quant is not None and self.quant.get("mode", "none") != "none"
                    and "encoder" in self.quant.get("targets", []))
                or "encoder" in quant_parts(self.quant)
                or (self.lora is not None and "encoder" in self.lora.get("on", [])))
