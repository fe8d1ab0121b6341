"""Rotary position tables by broadcasting instead of a matrix product.

transformers' rotary embeddings (the versions the GPU stack pins, e.g. 5.17) form position x frequency as a
float32 batched matrix product whose inner dimension is 1 (`inv_freq_expanded @ position_ids_expanded`). On
CUDA that is a cuBLAS call, and cuBLAS's first call allocates its workspace (32 MiB on an H200) in the caching
allocator. A model whose every other product runs through int4 kernels would hold that workspace for this one
product. Over an inner dimension of one, each entry of the product is a single rounded multiplication, so
multiplying by broadcasting gives the same float32 values; later transformers versions compute it that way.

`use_broadcast(llm)` gives each rotary module of `llm` that forward, only after checking on the CPU that it
returns exactly what the module's own forward returns (a family with another layout, or a rope type that
updates its frequencies per call, keeps its own).
"""

from __future__ import annotations

import logging
import types

import torch
from torch import nn

log = logging.getLogger(__name__)

UPDATES_PER_CALL = ("dynamic", "longrope")   # rope types whose forward recomputes inv_freq first
PROBE_POSITIONS = (0, 1, 2, 7, 63, 1000, 131071)


@torch.no_grad()
def _forward(self: nn.Module, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def _rotary_modules(llm: nn.Module) -> list[nn.Module]:
    return [m for m in llm.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)
            and hasattr(m, "attention_scaling")]


def _same_on_cpu(module: nn.Module) -> bool:
    """Whether the broadcast forward returns the module's own cos and sin, to the bit, on CPU probes (the module's
    forward computes on `x`'s device, so nothing runs where the module lives)."""
    if module.inv_freq.is_meta:
        return False
    positions = torch.tensor([PROBE_POSITIONS, PROBE_POSITIONS[::-1]])
    x = torch.zeros(1, dtype=torch.float32)
    try:
        own = module.forward(x, positions)
    except Exception:   # a forward with another signature: not this layout
        return False
    mine = _forward(module, x, positions)
    return isinstance(own, tuple) and len(own) == 2 and all(
        isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a, b) for a, b in zip(own, mine))


def use_broadcast(llm: nn.Module) -> int:
    """Give `llm`'s rotary modules the broadcast forward where it is exactly theirs; how many took it."""
    count = 0
    for module in _rotary_modules(llm):
        if getattr(module.forward, "__func__", None) is _forward:
            count += 1
            continue
        if getattr(module, "rope_type", "default") in UPDATES_PER_CALL or not _same_on_cpu(module):
            log.info("rotary %s keeps its own forward", type(module).__name__)
            continue
        module.forward = types.MethodType(_forward, module)
        count += 1
    return count
