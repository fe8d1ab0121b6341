"""GPTQ int4 codes (Frantar et al., 2022) for either int4 layout of sota.compress.int4.

GPTQ (Frantar et al., 2022) rounds a linear's weight one input column at a time and spreads each column's
rounding error over the columns not yet rounded, weighted by the inverse Hessian of the layer's squared output
error, ``H = sum x x^T`` over calibration inputs. It minimises ``||X W^T - X Q^T||`` instead of ``||W - Q||``.

torchao's own GPTQ (``torchao.prototype.gptq``) writes int4 only in the ``plain`` layout, whose kernels live in
the separate mslk package; this module runs the same algorithm (lazy batch updates, Cholesky of the damped
inverse Hessian, group parameters chosen when the group's first column is reached, as in the reference code)
and hands the codes to either int4 layout (``sota.compress.int4``), so GPTQ weights decode, fuse and export
exactly like round-to-nearest ones. Inputs are the unquantized model's (all linears observed in one pass).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from sota.compress import int4

class Unreached(ValueError):
    """Linears the calibration batches never reached (nothing was changed)."""


DAMP = 0.01                  # fraction of the Hessian's mean diagonal added to it (GPTQ's default percdamp)
BLOCK = 128                  # columns per lazy batch update


def gptq_round(weight: torch.Tensor, hessian: torch.Tensor, group_size: int,
               damp: float = DAMP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round ``weight`` [N, K] to 4 bits with GPTQ under ``hessian`` [K, K]. Returns the integers [N, K] in
    0..15 (uint8) and each group's scale and zero [N, K // group_size] (bf16)."""
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"GPTQ: in_features {k} is not a multiple of quant.group_size={group_size}")
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    dead = torch.diag(h) == 0      # inputs never active: their columns carry nothing
    h[dead, dead] = 1
    w[:, dead] = 0
    h.diagonal().add_(damp * torch.mean(torch.diag(h)))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros(n, k, dtype=torch.uint8, device=w.device)
    scales = torch.empty(n, k // group_size, dtype=torch.bfloat16, device=w.device)
    zeros = torch.empty_like(scales)
    block = max(BLOCK, group_size)     # a multiple of every allowed group size: groups never span two blocks
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = col // group_size
            if col % group_size == 0:
                s, z = int4.qparams(w1[:, i:i + group_size], group_size)
                scales[:, g], zeros[:, g] = s[:, 0], z[:, 0]
            qi = int4.round_to(w1[:, i], scales[:, g], zeros[:, g])
            q[:, col] = qi.to(torch.uint8)
            err = (w1[:, i] - ((qi - int4.MID) * scales[:, g] + zeros[:, g]).float()) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q, scales, zeros


def hessians(modules: Iterable[nn.Linear], calibrate: Callable[[], int]) -> tuple[dict[int, torch.Tensor], int]:
    """``sum x x^T`` of every input row each of ``modules`` sees while ``calibrate()`` runs the calibration
    batches through the model (float32, on the module's device), keyed by ``id(module)``; and the batch count.
    Linears fed the same tensor one after another (q/k/v, gate/up) share one Hessian object: it is the same
    matrix, and a [K, K] float32 per linear is what bounds GPTQ's memory on large models."""
    sums: dict[int, torch.Tensor] = {}
    last: dict[str, torch.Tensor | None] = {"x": None, "h": None}

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        if last["x"] is x and sums.get(id(module), last["h"]) is last["h"]:
            sums[id(module)] = last["h"]
            return
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        h = sums.setdefault(id(module), torch.zeros(flat.shape[1], flat.shape[1], device=flat.device))
        h.addmm_(flat.t(), flat)
        last.update(x=x, h=h)

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        batches = calibrate()
    finally:
        for handle in handles:
            handle.remove()
        last.update(x=None, h=None)
    return sums, batches


def quantize(named: dict[str, nn.Linear], group_size: int, calibrate: Callable[[], int] | None,
             store: Callable[[str, nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor], None]) -> tuple[int, int]:
    """GPTQ codes for every linear of ``named`` (name -> module), handed to ``store(name, module, codes, scales,
    zeros)``, which puts them in a layout; returns (linears quantized, calibration batches). A linear the batches
    never reached is an error, not a silent round-to-nearest."""
    if calibrate is None:
        raise ValueError("quant.algorithm=gptq weighs rounding errors by activations of calibration batches; "
                         "none were given")
    sums, batches = hessians(named.values(), calibrate)
    unseen = [name for name, m in named.items() if id(m) not in sums]
    if unseen:
        raise Unreached(f"quant.algorithm=gptq: {len(unseen)} linear(s) saw no calibration input "
                        f"(e.g. {unseen[0]}); exclude them with quant.skip")
    for name, m in named.items():
        store(name, m, *gptq_round(m.weight, sums.pop(id(m)), group_size))
    return len(named), batches
