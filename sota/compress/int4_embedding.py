"""int4 token tables (``quant.parts.embeddings=int4_weight``, compact layout): the LLM's embedding table held
once as an ``Int4Linear``, which is the lm_head when the two are tied, and read row by row for the lookup.

tinygemm's packing keeps output rows in independent tiles (8 rows on CUDA, blocks of 64 on the CPU).
A lookup gathers the tiles of the wanted rows, which form a valid packed weight of their own, and multiplies the
identity by it: the kernel itself dequantizes exactly those rows, so no float copy of the table ever exists and
the lookup costs one small kernel call. The Triton kernel's packing (``quant.int4_kernel``) holds a row's codes
as they are stored, so its rows are dequantized directly. A tied table then stores its codes once for both uses
(4.5 bits per weight at groups of 64, against 8 for int8 and 16 for bf16).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sota.compress import gptq, int4


# Rows per independently packed tile: tinygemm's n-tile on CUDA; torch's CPU packing works in blocks of 64 rows,
# with a last shorter block (a multiple of 16) packed on its own.
TILE = {"cuda": 8, "cpu": 64}


def _gathered(table: int4.Int4Linear, flat: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """Rows `flat` from the table's whole tiles (a CUDA table has only those: nothing here waits on the GPU)."""
    tile = TILE[flat.device.type]
    blocks, within = flat // tile, flat % tile
    if flat.device.type == "cuda":   # [rows / 8, k-tiles, 32, inner k-tiles / 2]: dim 0 is the n-tile
        packed = table.qdata[blocks]
    else:                            # [rows, in / 2]
        width = table.qdata.shape[-1]
        packed = table.qdata[:table.qdata.shape[0] // tile * tile].view(-1, tile, width)[blocks].reshape(-1, width)
    picked = (blocks[:, None] * tile + torch.arange(tile, device=flat.device)).reshape(-1)
    tiles_t = int4.int4pack_mm(eye, packed.contiguous(), table.group_size, table.scale_and_zero[:, picked].contiguous())
    return tiles_t[:, torch.arange(flat.numel(), device=flat.device) * tile + within].t()


def rows(table: int4.Int4Linear, ids: torch.Tensor) -> torch.Tensor:
    """The bf16 rows ``ids`` (any shape) of ``table``'s weight [out, in]: shape ``ids.shape + (in,)``."""
    device = table.qdata.device
    flat = ids.reshape(-1).to(device)
    if table.packing == "triton":   # codes as stored, a row per output: dequantize just the rows asked for
        scales, zeros = table.scale_and_zero[:, flat].unbind(-1)              # [groups, T] each
        w = int4.dequantize(int4.unpack_nibbles(table.qdata[flat]), scales.t(), zeros.t(), table.group_size)
        return w.to(torch.bfloat16).reshape(*ids.shape, table.in_features)
    eye = torch.eye(table.in_features, dtype=torch.bfloat16, device=device)
    whole = table.scale_and_zero.shape[1] // TILE[device.type] * TILE[device.type]
    if whole == table.scale_and_zero.shape[1]:
        return _gathered(table, flat, eye).reshape(*ids.shape, table.in_features)
    # a CPU table whose last block is shorter than 64 rows: its rows come from that block, read whole
    out = torch.empty(flat.numel(), table.in_features, dtype=torch.bfloat16, device=device)
    head, tail = (flat < whole).nonzero().squeeze(1), (flat >= whole).nonzero().squeeze(1)
    if head.numel():
        out[head] = _gathered(table, flat[head], eye)
    if tail.numel():
        last = int4.int4pack_mm(eye, table.qdata[whole:].contiguous(), table.group_size,
                                table.scale_and_zero[:, whole:].contiguous())
        out[tail] = last[:, flat[tail] - whole].t()
    return out.reshape(*ids.shape, table.in_features)


class Int4Embedding(nn.Module):
    """An embedding whose table is an ``Int4Linear`` (shared with the lm_head when tied)."""

    def __init__(self, table: int4.Int4Linear, padding_idx: int | None = None) -> None:
        super().__init__()
        self.table = table
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features
        self.padding_idx = padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return rows(self.table, ids)

    def to_embedding(self) -> nn.Embedding:
        """A bf16 nn.Embedding of the same rows."""
        emb = nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx, device="meta")
        emb.weight = nn.Parameter(self.table.dequantized_weight(), requires_grad=False)
        return emb

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int4 rows of the table below"


def quantize_tables(llm: nn.Module, group_size: int, calibrate: Callable[[], int] | None = None,
                    kernel: str = int4.KERNELS[0]) -> list[str]:
    """The LLM's input table, and its output table (the lm_head), as int4 in the compact layout (`kernel`'s
    packing) on the device they are on; a tied pair stays one table. With `calibrate` (a call that runs
    calibration batches through the model) the head's codes are GPTQ's over its inputs, the final hidden states,
    and a tied table's lookups read those same codes; else both round to nearest. Returns what was done, for the
    record's notes."""
    emb, head = llm.get_input_embeddings(), llm.get_output_embeddings()
    if emb.embedding_dim % group_size:
        raise ValueError(f"quant.parts.embeddings=int4_weight: the table is {emb.embedding_dim} wide, not a multiple "
                         f"of quant.group_size={group_size}")
    tied = head is not None and getattr(head, "weight", None) is emb.weight
    head_codes, how = None, "round-to-nearest"
    if calibrate is not None and isinstance(head, nn.Linear) and head.in_features % group_size == 0:
        codes: dict[str, tuple[torch.Tensor, ...]] = {}
        _, batches = gptq.quantize({"lm_head": head}, group_size, calibrate,
                                   lambda name, m, q, scales, zeros: codes.update(head=(q, scales, zeros)))
        head_codes, how = codes["head"], f"GPTQ over the lm_head's inputs, {batches} calibration batches"
    codes_of_table = head_codes if tied and head_codes else int4.rtn(emb.weight.detach(), group_size)
    table = int4.Int4Linear.from_codes(*codes_of_table, group_size, kernel=kernel)
    llm.set_input_embeddings(Int4Embedding(table, emb.padding_idx))
    done = [f"embeddings: int4 table of {table.out_features} x {table.in_features} (compact layout, groups of "
            f"{group_size}, {how if tied else 'round-to-nearest'}), rows read through the kernel"]
    if tied:
        llm.set_output_embeddings(table)
        done.append("lm_head: the same int4 table (tied)")
    elif isinstance(head, nn.Linear) and head.in_features % group_size == 0:
        llm.set_output_embeddings(int4.Int4Linear.from_codes(
            *(head_codes or int4.rtn(head.weight.detach(), group_size)), group_size, head.bias, kernel))
        done.append(f"lm_head: its own int4 table (untied, {how})")
    return done
