"""int4 weights: integer codes with a scale and a zero per group of input features (tinygemm's convention,
dequantized as ``(q - 8) * scale + zero``), and the two layouts that hold them (``quant.int4_layout``).

- ``torchao``: torchao's ``Int4TilePackedTo4dTensor`` (CUDA). Its packing pads in_features to a multiple of 1024,
  so a 576-wide linear stores 1.78x its codes; transformers and ``sota.export`` read it.
- ``compact``: ``Int4Linear`` below, torch's own int4 kernels without that padding. On CUDA the same tinygemm
  kernel (``aten._weight_int4pack_mm``) with the largest inner k-tile count that divides in_features (8, 4 or 2
  tiles of 16); on the CPU ``aten._weight_int4pack_mm_for_cpu``. Output rows are padded to 8 (CUDA) or 16 (CPU).
  ``sota.export`` stores it device-independently (``Int4Linear.codes``: unpadded codes two per byte, bf16 scales
  and zeros) and ``sota.load`` packs it again for the device it loads on; no reader outside sota knows it.
- ``auto``: ``torchao`` on CUDA, ``compact`` on the CPU (where torchao's layout has no kernel).

On CUDA the compact layout has two kernels (``quant.int4_kernel``), each with its own packing:
- ``tinygemm`` (the default): as above;
- ``triton``: ``sota.compress.int4_triton``, which reads the codes as stored (two a byte, no row padding);
  1.9-4.4x faster than tinygemm on 128 rows of the Llama-3.2-3B shapes (prefill;
  experiments/2026-12-05_int4_kernels_h200). On one row, with its products in f16x2, it is faster than tinygemm
  on the q/k/v and gate/up products and slower on o and down (experiments/2026-12-06_packed_int4_h100).
The CPU always runs torch's CPU kernel.
"""
from __future__ import annotations

import torch
from torch import nn

from sota.compress import int4_triton

LAYOUTS = ("auto", "torchao", "compact")
KERNELS = ("tinygemm", "triton")   # quant.int4_kernel; the first is the default
QMIN, QMAX, MID = 0, 15, 8
# Output rows the compact layout's kernels take in multiples of: tinygemm's n-tile on CUDA; torch's CPU packing
# refuses other row counts.
ROW_MULTIPLE = {"cuda": 8, "cpu": 16}


def resolve_layout(layout: str, device_type: str) -> str:
    return ("torchao" if device_type == "cuda" else "compact") if layout == "auto" else layout


def resolve_kernel(kernel: str, device_type: str) -> str:
    """The compact layout's kernel on ``device_type``: the CPU has torch's only."""
    return kernel if device_type == "cuda" else "tinygemm"


def qparams(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero [N, K // group_size] (bf16) of ``w`` [N, K], exactly as torchao's tinygemm RTN picks them."""
    from torchao.quantization.quant_primitives import MappingType, _choose_qparams_affine_tinygemm

    scale, zero = _choose_qparams_affine_tinygemm(w.to(torch.bfloat16), MappingType.ASYMMETRIC, (1, group_size),
                                                  torch.int32, quant_min=QMIN, quant_max=QMAX,
                                                  scale_dtype=torch.bfloat16, zero_point_dtype=torch.bfloat16)
    return scale.reshape(w.shape[0], -1), zero.reshape(w.shape[0], -1)


def round_to(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Codes of ``w`` on the grid of ``scale``/``zero`` (same shape, or broadcastable), computed in bf16 as
    torchao's ``_quantize_affine_tinygemm`` computes them."""
    low = zero - scale * MID
    return torch.clamp(torch.round((w.to(torch.bfloat16) - low) / scale), QMIN, QMAX)


def rtn(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest codes (uint8 [N, K]) with their scales and zeros."""
    n, k = w.shape
    scale, zero = qparams(w, group_size)
    grouped = w.reshape(n, k // group_size, group_size)
    q = round_to(grouped, scale.unsqueeze(-1), zero.unsqueeze(-1)).reshape(n, k)
    return q.to(torch.uint8), scale, zero


def dequantize(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """The float weight [N, K] that ``(q, scales, zeros)`` stand for."""
    expand = lambda t: t.float().repeat_interleave(group_size, dim=1)  # noqa: E731
    return (q.float() - MID) * expand(scales) + expand(zeros)


def _scales_and_zeros(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    return pack_tinygemm_scales_and_zeros(scales.to(torch.bfloat16), zeros.to(torch.bfloat16))


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] two per byte (uint8 [N, K // 2]): the even column in the high nibble."""
    q = q.to(torch.int32)
    return (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).contiguous()


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """The codes (uint8 [N, 2 * M]) that ``pack_nibbles`` packed into ``packed`` [N, M]."""
    return torch.stack((packed >> 4, packed & 15), dim=-1).reshape(packed.shape[0], -1)


def pack_torchao(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """torchao's ``Int4TilePackedTo4dTensor`` holding exactly ``(q, scales, zeros)`` (CUDA), padded as its
    ``from_hp`` pads (in_features to a multiple of 1024, out_features to 8; padding dequantizes to 0)."""
    from torchao.quantization.quantize_.workflows import Int4TilePackedTo4dTensor
    from torchao.utils import find_multiple

    n, k = q.shape
    n_pad, k_pad = find_multiple(n, 8) - n, find_multiple(k, 1024) - k
    g_pad = k_pad // group_size
    q = nn.functional.pad(q.to(torch.int32), (0, k_pad, 0, n_pad), value=MID)
    scales = nn.functional.pad(scales, (0, g_pad, 0, n_pad), value=1.0)
    zeros = nn.functional.pad(zeros, (0, g_pad, 0, n_pad), value=0.0)
    packed = torch.ops.aten._convert_weight_to_int4pack(pack_nibbles(q), 8)
    return Int4TilePackedTo4dTensor(qdata=packed, scale_and_zero=_scales_and_zeros(scales, zeros),
                                    block_size=[1, group_size], shape=torch.Size((n, k)))


def inner_k_tiles(in_features: int) -> int:
    """tinygemm's inner k-tiles (16 input features each) for ``in_features``: the most that divide it."""
    for tiles in (8, 4, 2):
        if in_features % (tiles * 16) == 0:
            return tiles
    raise ValueError(f"int4 compact layout: in_features {in_features} is not a multiple of 32")


def int4pack_mm(x: torch.Tensor, qdata: torch.Tensor, group_size: int, scale_and_zero: torch.Tensor) -> torch.Tensor:
    """bf16 ``x`` [M, in] times codes packed for ``qdata``'s device type: [M, rows of qdata]."""
    if qdata.device.type == "cuda":
        return torch.ops.aten._weight_int4pack_mm(x, qdata, group_size, scale_and_zero)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, qdata, group_size, scale_and_zero)


def kernels_in(model: nn.Module) -> dict[str, int]:
    """How many compact int4 layers of ``model`` are packed for each kernel (tied ones counted once)."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, Int4Linear):
            counts[m.packing] = counts.get(m.packing, 0) + 1
    return counts


class Int4Linear(nn.Module):
    """A linear layer whose weight is int4 codes packed for one device type (the ``compact`` layout)."""

    def __init__(self, qdata: torch.Tensor, scale_and_zero: torch.Tensor, in_features: int, out_features: int,
                 group_size: int, bias: torch.Tensor | None, kernel: str = KERNELS[0]) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.kernel = kernel                                           # as asked; kept across device moves
        self.register_buffer("qdata", qdata)
        self.register_buffer("scale_and_zero", scale_and_zero)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def packing(self) -> str:
        """The kernel ``qdata`` is packed for: ``kernel`` where the device has it."""
        return resolve_kernel(self.kernel, self.qdata.device.type)

    @classmethod
    def from_codes(cls, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                   bias: torch.Tensor | None = None, kernel: str = KERNELS[0]) -> Int4Linear:
        """Pack ``(q, scales, zeros)`` for ``kernel`` on the device they are on."""
        n, k = q.shape
        if kernel not in KERNELS:
            raise ValueError(f"int4 kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
        if resolve_kernel(kernel, q.device.type) == "triton":
            if not int4_triton.available():
                raise RuntimeError("the triton int4 kernel needs Triton (CUDA builds of torch ship it); it does not "
                                   "import here: use the tinygemm kernel")
            if k % 2:
                raise ValueError(f"int4 compact layout: in_features {k} is odd")
            return cls(pack_nibbles(q), _scales_and_zeros(scales, zeros), k, n, group_size, bias, kernel)
        rows = -(-n // ROW_MULTIPLE[q.device.type]) * ROW_MULTIPLE[q.device.type]
        pad = (0, 0, 0, rows - n)   # padded rows dequantize to 0 and are cut from the output
        q = nn.functional.pad(q.to(torch.int32), pad, value=MID)
        scales = nn.functional.pad(scales, pad, value=1.0)
        zeros = nn.functional.pad(zeros, pad, value=0.0)
        if q.device.type == "cuda":
            packed = torch.ops.aten._convert_weight_to_int4pack(pack_nibbles(q), inner_k_tiles(k))
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), inner_k_tiles(k))
        return cls(packed, _scales_and_zeros(scales, zeros), k, n, group_size, bias, kernel)

    def _mm(self, flat: torch.Tensor, scale_and_zero: torch.Tensor) -> torch.Tensor:
        """bf16 ``flat`` [M, in] times the packed codes under ``scale_and_zero``: [M, rows padded]."""
        if self.packing == "triton":
            return int4_triton.int4_mm(flat, self.qdata, scale_and_zero, self.group_size, scale_and_zero.shape[1])
        return int4pack_mm(flat, self.qdata, self.group_size, scale_and_zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()   # the kernels read A contiguous
        y = self._mm(flat, self.scale_and_zero)[:, :self.out_features].reshape(*x.shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype)

    @torch.no_grad()
    def dequantized_weight(self) -> torch.Tensor:
        """The bf16 weight [out, in] the kernel multiplies by: the identity read back through it."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16, device=self.qdata.device)
        bias, self.bias = self.bias, None
        try:
            return self.forward(eye).t().contiguous()
        finally:
            self.bias = bias

    @torch.no_grad()
    def codes(self, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, scales, zeros)`` exactly as ``from_codes`` packed them, padded rows cut: codes uint8 [out, in] read
        back through the layer's own kernel (the identity, ``block`` rows at a time, under unit scales and zero
        zeros gives ``q - 8``, exact in bf16), scales and zeros bf16 [out, in // group_size] from
        ``scale_and_zero`` ([groups, rows, 2]: scale, zero)."""
        device, n = self.qdata.device, self.out_features
        groups, rows, _ = self.scale_and_zero.shape
        scales, zeros = self.scale_and_zero.unbind(-1)
        if self.packing == "triton":   # the codes as stored
            return unpack_nibbles(self.qdata)[:n], scales.t()[:n].contiguous(), zeros.t()[:n].contiguous()
        unit = _scales_and_zeros(torch.ones(rows, groups, device=device), torch.zeros(rows, groups, device=device))
        q = torch.empty(n, self.in_features, dtype=torch.uint8, device=device)
        for start in range(0, self.in_features, block):
            stop = min(start + block, self.in_features)
            eye = torch.zeros(stop - start, self.in_features, dtype=torch.bfloat16, device=device)
            eye[:, start:stop] = torch.eye(stop - start, dtype=torch.bfloat16, device=device)
            q[:, start:stop] = (self._mm(eye, unit)[:, :n].t() + MID).to(torch.uint8)
        return q, scales.t()[:n].contiguous(), zeros.t()[:n].contiguous()

    def stack_key(self) -> tuple:
        """Layers with equal keys can be stacked into one (`stacked`)."""
        return self.in_features, self.group_size, self.qdata.device.type, self.kernel, self.bias is None

    @classmethod
    def stacked(cls, layers: list[Int4Linear]) -> Int4Linear:
        """One layer holding `layers`' output rows in order, their codes packed once (fused projections,
        `sota.models.fuse`): each row of its product is that layer's row."""
        if len({layer.stack_key() for layer in layers}) != 1:
            raise ValueError("Int4Linear.stacked: the layers differ in input width, group size, device, kernel or bias")
        codes = [layer.codes() for layer in layers]
        q, scales, zeros = (torch.cat([c[j] for c in codes]) for j in range(3))
        bias = None if layers[0].bias is None else torch.cat([layer.bias.detach() for layer in layers])
        return cls.from_codes(q, scales, zeros, layers[0].group_size, bias, layers[0].kernel)

    def rows(self, start: int, stop: int) -> Int4Linear:
        """Output rows [start, stop) as a layer of their own, with the same codes."""
        q, scales, zeros = self.codes()
        bias = None if self.bias is None else self.bias.detach()[start:stop]
        return Int4Linear.from_codes(q[start:stop], scales[start:stop], zeros[start:stop], self.group_size, bias,
                                     self.kernel)

    def to_linear(self) -> nn.Linear:
        """A float (bf16) nn.Linear of the same weight and bias."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        lin.weight = nn.Parameter(self.dequantized_weight(), requires_grad=False)
        if self.bias is not None:
            lin.bias = nn.Parameter(self.bias.detach().to(torch.bfloat16), requires_grad=False)
        return lin

    def _apply(self, fn, recurse=True):  # noqa: ANN001
        # The kernels read bf16 scales: a cast of the model (.float(), .half()) leaves them as they are.
        # A move to another device type (Lightning moves a model to the CPU when it tears down) packs the codes
        # again for that device: they are read back exactly first, on the device they are packed for.
        target = fn(torch.empty(0, device=self.qdata.device)).device
        if target.type != self.qdata.device.type and target.type not in ROW_MULTIPLE:
            raise RuntimeError(f"Int4Linear: its int4 codes are packed for the kernels of {', '.join(ROW_MULTIPLE)}; "
                               f"they cannot move to {target.type}")
        if target.type != self.qdata.device.type:
            q, scales, zeros = (t.to(target) for t in self.codes())
            moved = Int4Linear.from_codes(q, scales, zeros, self.group_size,
                                          None if self.bias is None else self.bias.to(target), self.kernel)
            self.qdata, self.scale_and_zero, self.bias = moved.qdata, moved.scale_and_zero, moved.bias
            return self
        super()._apply(fn, recurse)
        if self.scale_and_zero.dtype != torch.bfloat16:   # bf16 -> wider -> bf16 is exact
            self.scale_and_zero = self.scale_and_zero.to(torch.bfloat16)
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"bias={self.bias is not None}, device={self.qdata.device.type}, kernel={self.packing}")
