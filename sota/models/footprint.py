"""Model size as stored, not as labelled: parameters, and the bytes every distinct tensor really occupies."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable, Iterator

import torch
from torch import nn


def _parts(t: torch.Tensor | None) -> Iterator[torch.Tensor]:
    """The plain tensors that hold `t`'s data: inner tensors of torchao subclasses, bitsandbytes' packed data
    plus its quantization statistics (absmax, code tables, int8 row scales)."""
    if t is None:
        return
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        for n in names:
            yield from _parts(getattr(t, n, None))
        return
    yield t
    state = getattr(t, "quant_state", None)  # bitsandbytes Params4bit
    if state is not None:
        yield from _quant_state_parts(state)
    yield from _parts(getattr(t, "SCB", None))  # bitsandbytes Int8Params (before its first forward)


def _quant_state_parts(state: object) -> Iterator[torch.Tensor]:
    for name in ("absmax", "code", "offset"):
        value = getattr(state, name, None)
        if isinstance(value, torch.Tensor):
            yield value
    nested = getattr(state, "state2", None)
    if nested is not None:
        yield from _quant_state_parts(nested)


def _key(t: torch.Tensor) -> tuple[int, int, int]:
    ptr = t.data_ptr() if t.device.type != "meta" else 0
    # Shared tensors (tied weights, the code table every 4-bit layer points to) count once.
    return (ptr, t.numel() * t.element_size(), 0 if ptr else id(t))


def _bytes(parts: Iterable[torch.Tensor], seen: set[tuple[int, int, int]]) -> int:
    total = 0
    for part in parts:
        key = _key(part)
        if key not in seen:
            seen.add(key)
            total += part.numel() * part.element_size()
    return total


def _logical_numel(p: torch.Tensor) -> int:
    """Parameters a tensor stands for: a bitsandbytes 4-bit weight stores two per byte."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else p.numel()


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor; quantized tensors report their packed storage plus their scales."""
    return _bytes(_parts(t), set())


def footprint(model: nn.Module) -> dict[str, int]:
    """params_total, params_trainable and weight_bytes (parameters, buffers and quantization statistics,
    shared storage once)."""
    seen_params: set[int] = set()
    seen: set[tuple[int, int, int]] = set()
    total = trainable = nbytes = 0
    for p in model.parameters():
        if id(p) in seen_params:
            continue
        seen_params.add(id(p))
        n = _logical_numel(p)
        total += n
        trainable += n if p.requires_grad else 0
        nbytes += _bytes(_parts(p), seen)
    for b in model.buffers():
        if id(b) not in seen_params:
            seen_params.add(id(b))
            nbytes += _bytes(_parts(b), seen)
    for m in model.modules():
        # bitsandbytes LLM.int8() layers move their row scales from the weight into `state` on first forward.
        state = getattr(m, "state", None)
        if state is not None and type(state).__name__ == "MatmulLtState":
            nbytes += _bytes(_parts(getattr(state, "SCB", None)), seen)
    return {"params_total": total, "params_trainable": trainable, "weight_bytes": nbytes}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
