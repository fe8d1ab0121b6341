"""results.json as one typed object: each section is filled by the stage that measures it and the whole is
serialised once, when the run ends (sota/sweep/sweepdir.py reads it back)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sota.config import as_dict
from sota.run_dir import RESULTS
from sota.utils.provenance import git_sha, versions

HEADLINE = ("asr/wer", "aac/cider_d", "real/asr/wer")


def _metrics() -> dict[str, Any]:
    # Present in every results.json, null until measured: a reader never has to guess whether a key exists.
    return {"asr/wer": None, "aac/cider_d": None, "aac/spider": None, "real/asr/wer": None, "real/asr/cer": None}


@dataclass
class Results:
    config: dict[str, Any]
    provenance: dict[str, Any]
    status: str = "failed"
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=_metrics)
    model: dict[str, Any] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)
    compression: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=lambda: {"train_s": None, "eval_s": None})
    data: dict[str, Any] = field(default_factory=dict)
    resumed_from: dict[str, Any] | None = None
    agreement: dict[str, Any] | None = None
    traceback: str | None = None

    @classmethod
    def start(cls, cfg: DictConfig) -> Results:
        return cls(config=as_dict(cfg), provenance={"git_sha": git_sha(), "seed": int(cfg.seed),
                                                    "versions": versions()})

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; optional sections appear only when a stage filled them."""
        out = {k: getattr(self, k) for k in ("status", "error", "config", "metrics", "model", "efficiency",
                                              "compression", "timing", "data", "provenance")}
        out.update({k: getattr(self, k) for k in ("resumed_from", "agreement", "traceback")
                    if getattr(self, k) is not None})
        return out

    def summary_line(self, out_dir: Path) -> str:
        """The run in one line: status, the headline metrics it has, wall time and where results.json is."""
        shown = [f"{k} {self.metrics[k]:.3f}" for k in HEADLINE if isinstance(self.metrics.get(k), (int, float))]
        status = self.status if self.status == "ok" else f"{self.status} ({self.error})"
        total = self.timing.get("total_s")
        wall = f"{total:.0f} s" if isinstance(total, (int, float)) else "?"
        line = " | ".join(["sota: " + status, *shown, wall, str(out_dir / RESULTS)])
        if any(isinstance(self.metrics.get(k), (int, float)) and self.metrics[k] > 1 for k in ("asr/wer", "real/asr/wer")):
            # WER counts inserted words too: a model that rambles past the reference scores above 1.
            line += " | WER > 1: the answers hold more wrong or extra words than the references have words"
        return line
