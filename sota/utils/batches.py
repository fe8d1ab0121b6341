"""Batches (dicts of tensors, nested dicts and lists of tensors) moved to a device, whatever else they hold."""

from __future__ import annotations

from typing import Any

import torch


def to_device(x: Any, device: torch.device | str) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return type(x)(to_device(v, device) for v in x)
    return x
