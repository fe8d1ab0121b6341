"""A configuration's predicted peak memory as the `measure` group reads it: weights after compression, the
widest stage of a batch-1 measurement, the KV cache, the CUDA workspace, and, under the official protocol
(whose peak is never reset), what building the model left in the peak before it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import DictConfig

from sota.compress.plan import QLORA_BASE
from sota.measure.protocol import setting
from sota.plan import activations, model, weights

MB = 2 ** 20
# cuBLAS keeps one workspace per stream it ran on, allocated through PyTorch's allocator (so counted by
# max_memory_allocated): 32 MiB on an H200 (sota/models/decoding.py, capture_stream, measured there). A fresh
# process whose every linear is compact int4 never calls cuBLAS: `mini` in int4 from export peaked at 88.9 MiB
# on an H200 with 82.4 MiB of weights (experiments/2026-12-05_tokens_shippable_h200).
CUBLAS_WORKSPACE = 32 * MB
CPU_NOTE = ("on a CPU, measure reports the process's lifetime peak RSS (Python, libraries, corpus, training), "
            "which no model plan predicts: the figure here is the model's own memory, the quantity CUDA's "
            "max_memory_allocated reports")
TRAIN_NOTE = ("official protocol after training: its never-reset peak also holds training's peak (optimizer "
              "states, gradients, training batches), which is not modelled: this prediction is a lower bound")


@dataclass
class Plan:
    """Predicted memory of one configuration; every figure in bytes unless named _mb."""

    device: str
    mode: str
    weights: list[weights.WeightRow]
    stages: list[activations.Stage]
    audio_tokens: int
    workspace: int
    transient: int            # official protocol: the float model before quantization, when built in-process
    notes: list[str] = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        return sum(r.bytes for r in self.weights)

    @property
    def cache_bytes(self) -> int:
        return sum(s.bytes for s in self.stages if s.name == "kv cache")

    @property
    def activation_bytes(self) -> int:
        return max((s.bytes for s in self.stages if s.name != "kv cache"), default=0)

    @property
    def measured_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes + self.cache_bytes + self.workspace

    @property
    def peak_bytes(self) -> int:
        return max(self.measured_bytes, self.transient)

    @property
    def peak_memory_mb(self) -> float:
        return self.peak_bytes / MB

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "mode": self.mode, "peak_memory_mb": round(self.peak_memory_mb, 1),
                "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes,
                "kv_cache_bytes": self.cache_bytes, "workspace_bytes": self.workspace,
                "transient_bytes": self.transient, "audio_tokens": self.audio_tokens,
                "weights": [asdict(r) for r in self.weights], "stages": [asdict(s) for s in self.stages],
                "notes": self.notes}


def train_device(cfg: DictConfig) -> str:
    """Where `cfg` trains: the trainer's accelerator as a device."""
    return "cuda" if str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda") else "cpu"


def device_of(cfg: DictConfig) -> str:
    """Where `cfg` measures: measure.device, else where it trains (as run.py decides)."""
    return str(setting(cfg.get("measure"), "device", train_device(cfg)))


def plan(cfg: DictConfig, device: str | None = None, words: Sequence[str] | None = None) -> Plan:
    """Predict the peak memory `cfg`'s measurement reports, without loading any weights; `words` as in
    `sota.plan.model.build`."""
    device = device or device_of(cfg)
    cuda = device.startswith("cuda")
    m = model.build(cfg, words)
    rows, notes = weights.weights(m.parts, cfg, "cuda" if cuda else "cpu")
    measure_cfg = cfg.get("measure")
    mode = setting(measure_cfg, "mode", "strict")
    clip_s = float(setting(measure_cfg, "clip_s", 10.0))
    new_tokens = int(setting(measure_cfg, "max_new_tokens", 40))
    stages, audio = activations.stages(m.parts, cfg, clip_s, new_tokens, weights.compute_dtypes(cfg, device))
    transient = 0
    q = cfg.get("quant")
    from_export = bool(setting(measure_cfg, "from_export", False))
    if mode == "official" and cuda and not from_export:
        # The official peak is never reset: a model loaded in float and quantized on the device keeps the float
        # copy in the peak (the seed's 1B NF4 row: 4541 MB built in-process, 3259 MB loaded from export).
        if q is not None and q.get("mode", "none") not in ("none", "bf16", "fp16"):
            float_rows, _ = weights.weights(m.parts, _without_quant(cfg), "cuda")
            transient = sum(r.bytes for r in float_rows)
        if cfg.get("task") == "train":
            notes.append(TRAIN_NOTE)
    if not cuda:
        notes.append(CPU_NOTE)
    if q is not None and q.get("mode") in QLORA_BASE and cfg.get("generate", {}).get("backend", "eager") != "eager":
        notes.append("bitsandbytes layers decode eagerly (static backends fall back)")
    if cfg.get("generate", {}).get("backend", "eager") != "eager":
        notes.append("static backends (static, compiled, fused) add a batch-1 static cache and CUDA-graph pools, "
                     "not modelled")
    workspace = CUBLAS_WORKSPACE if cuda else 0
    if cuda and from_export and not weights.dense_linears(m.parts, cfg, "cuda"):
        # in-process, calibration and evaluation ran float products first, and the workspace stays allocated
        workspace = 0
        notes.append("every linear is compact int4 and the model is loaded from export: no cuBLAS workspace")
    return Plan(device, mode if mode != "none" else "none", rows, stages, audio, workspace, transient,
                [*m.notes, *notes])


def _without_quant(cfg: DictConfig) -> DictConfig:
    from omegaconf import open_dict

    plain = cfg.copy()
    with open_dict(plain):
        plain.quant.mode, plain.quant.parts = "none", {}
    return plain
