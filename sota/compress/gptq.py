"""GPTQ int4 weights in torch's tinygemm layout (the layout of sota's other int4 algorithms).

GPTQ (Frantar et al., 2022) rounds a linear's weight one input column at a time and spreads each column's
rounding error over the columns not yet rounded, weighted by the inverse Hessian of the layer's squared output
error, ``H = sum x x^T`` over calibration inputs. It minimises ``||X W^T - X Q^T||`` instead of ``||W - Q||``.

torchao's own GPTQ (``torchao.prototype.gptq``) writes int4 only in the ``plain`` layout, whose kernels live in
the separate mslk package; this module runs the same algorithm (lazy batch updates, Cholesky of the damped
inverse Hessian, group parameters chosen when the group's first column is reached, as in the reference code)
and packs the result into torchao's ``Int4TilePackedTo4dTensor``, so GPTQ weights decode, fuse and export
exactly like round-to-nearest ones. Inputs are the unquantized model's (all linears observed in one pass).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

QMIN, QMAX, MID = 0, 15, 8   # tinygemm: unsigned 4-bit, dequantized as (q - 8) * scale + zero
DAMP = 0.01                  # fraction of the Hessian's mean diagonal added to it (GPTQ's default percdamp)
BLOCK = 128                  # columns per lazy batch update


def tinygemm_qparams(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero of one group of columns ``w`` [N, g], per row, exactly as torchao's tinygemm RTN picks
    them (min-max in bf16); both [N]."""
    from torchao.quantization.quant_primitives import MappingType, _choose_qparams_affine_tinygemm

    w = w.to(torch.bfloat16)
    scale, zero = _choose_qparams_affine_tinygemm(w, MappingType.ASYMMETRIC, (1, w.shape[1]), torch.int32,
                                                  quant_min=QMIN, quant_max=QMAX, scale_dtype=torch.bfloat16,
                                                  zero_point_dtype=torch.bfloat16)
    return scale.reshape(-1), zero.reshape(-1)


def _round(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    # torchao's _quantize_affine_tinygemm, in bf16 as it computes there
    low = zero - scale * MID
    return torch.clamp(torch.round((w.to(torch.bfloat16) - low) / scale), QMIN, QMAX)


def _dequant(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return ((q - MID) * scale + zero).float()


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
            if col % group_size == 0:
                g = col // group_size
                scales[:, g], zeros[:, g] = tinygemm_qparams(w1[:, i:i + group_size])
            g = col // group_size
            qi = _round(w1[:, i], scales[:, g], zeros[:, g])
            q[:, col] = qi.to(torch.uint8)
            err = (w1[:, i] - _dequant(qi, scales[:, g], zeros[:, g])) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q, scales, zeros


def dequantize(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """The float weight [N, K] that ``(q, scales, zeros)`` stand for."""
    expand = lambda t: t.repeat_interleave(group_size, dim=1)  # noqa: E731
    return _dequant(q.float(), expand(scales).float(), expand(zeros).float())


def pack(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """torchao's ``Int4TilePackedTo4dTensor`` holding exactly ``(q, scales, zeros)`` (CUDA), padded as its
    ``from_hp`` pads (in_features to a multiple of 1024, out_features to 8; padding dequantizes to 0)."""
    from torchao.quantization.quantize_.workflows import Int4TilePackedTo4dTensor
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros
    from torchao.utils import find_multiple

    n, k = q.shape
    n_pad, k_pad = find_multiple(n, 8) - n, find_multiple(k, 1024) - k
    g_pad = k_pad // group_size
    q = torch.nn.functional.pad(q.to(torch.int32), (0, k_pad, 0, n_pad), value=MID)
    scales = torch.nn.functional.pad(scales, (0, g_pad, 0, n_pad), value=1.0)
    zeros = torch.nn.functional.pad(zeros, (0, g_pad, 0, n_pad), value=0.0)
    packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).contiguous(), 8)
    return Int4TilePackedTo4dTensor(qdata=packed, scale_and_zero=pack_tinygemm_scales_and_zeros(scales, zeros),
                                    block_size=[1, group_size], shape=torch.Size((n, k)))


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


def quantize(modules: list[nn.Linear], group_size: int, calibrate: Callable[[], int] | None) -> tuple[int, int]:
    """Replace each linear's weight in ``modules`` by its GPTQ int4 tensor; returns (linears quantized,
    calibration batches). A linear the batches never reached is an error, not a silent round-to-nearest."""
    if calibrate is None:
        raise ValueError("quant.algorithm=gptq weighs rounding errors by activations of calibration batches; "
                         "none were given")
    sums, batches = hessians(modules, calibrate)
    unseen = [m for m in modules if id(m) not in sums]
    if unseen:
        raise ValueError(f"quant.algorithm=gptq: {len(unseen)} linear(s) saw no calibration input "
                         f"(e.g. {unseen[0]}); exclude them with quant.skip")
    for m in modules:
        q, scales, zeros = gptq_round(m.weight, sums.pop(id(m)), group_size)
        m.weight = nn.Parameter(pack(q, scales, zeros, group_size), requires_grad=False)
    return len(modules), batches
