"""Model size as stored, not as labelled: parameters, and the bytes every distinct tensor really occupies."""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor; quantized tensor subclasses report their packed storage."""
    inner = getattr(t, "__tensor_flatten__", None)
    if inner is not None and type(t) is not torch.Tensor and type(t) is not nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def footprint(model: nn.Module) -> dict[str, int]:
    """params_total, params_trainable and weight_bytes (parameters + persistent buffers, shared ones once)."""
    seen: set[int] = set()
    total = trainable = nbytes = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        nbytes += tensor_bytes(p)
    for b in model.buffers():
        if id(b) not in seen:
            seen.add(id(b))
            nbytes += tensor_bytes(b)
    return {"params_total": total, "params_trainable": trainable, "weight_bytes": nbytes}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
