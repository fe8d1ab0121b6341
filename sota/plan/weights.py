"""Weight memory of a planned model by part and storage kind after quantization and LoRA, as
`sota.models.footprint` would count the built model. Quantized sizes come from quantizing a small probe of
each distinct linear shape through `sota.compress.quant` itself and reading its footprint, so there is no
second table of bytes per weight; only torchao's int4 tile layout, which packs on CUDA alone, is computed from
its layout."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sota.compress import int4, quant
from sota.compress.plan import QLORA_BASE, CompressionPlan, quant_parts
from sota.models.footprint import footprint

PROBE_ROWS = (64, 128)   # two probe heights: a layer's bytes are an intercept (shared tables) plus a cost per row
# torchao's Int4TilePackedTo4dTensor.from_hp pads in_features to a multiple of 1024 and out_features to a multiple
# of 8 (its n-tile), packs two 4-bit values per byte and keeps one bf16 scale and one bf16 zero per group and
# output row (pack_tinygemm_scales_and_zeros); quant.py's note about the padding reads the same layout. The compact
# layout (sota.compress.int4) pads nothing but output rows (int4.ROW_MULTIPLE).
INT4_K_MULTIPLE, INT4_N_MULTIPLE = 1024, 8


@dataclass
class WeightRow:
    part: str
    kind: str          # storage: a dtype name, a quantization mode, or "lora adapters (float32)"
    params: int
    bytes: int


def _ceil(x: int, m: int) -> int:
    return -(-x // m) * m


@functools.cache
def _probe(mode: str, in_features: int, dtype: torch.dtype, embedding: bool, group_size: int) -> tuple[float, float]:
    """(intercept, bytes per output row) of one layer in `mode`, measured on two real probes."""
    sizes = []
    for rows in PROBE_ROWS:
        root = nn.Module()
        root.layer = (nn.Embedding(rows, in_features) if embedding else nn.Linear(in_features, rows, bias=False)).to(dtype)
        cfg = OmegaConf.create({"mode": mode, "targets": ["llm"], "group_size": group_size, "skip": []})
        quant._quantize_root(root, mode, cfg, [], "cpu", [], "llm" if embedding else "probe")
        sizes.append(footprint(root)["weight_bytes"])
    slope = (sizes[1] - sizes[0]) / (PROBE_ROWS[1] - PROBE_ROWS[0])
    return sizes[0] - slope * PROBE_ROWS[0], slope


def layer_bytes(mode: str, out_features: int, in_features: int, dtype: torch.dtype, group_size: int = 128,
                embedding: bool = False, int4_layout: str = "torchao", device_type: str = "cuda",
                int4_kernel: str = int4.KERNELS[0]) -> int:
    """Storage of one [out, in] weight (bias excluded) quantized in `mode` (int4: in `int4_layout` and, compact,
    packed for `int4_kernel`; both resolved)."""
    if mode == "int4_weight":
        compact = int4_layout == "compact"
        rows = 1 if int4_kernel == "triton" else int4.ROW_MULTIPLE[device_type]   # Triton's: no row padding
        n = _ceil(out_features, rows if compact else INT4_N_MULTIPLE)
        k = in_features if compact else _ceil(in_features, INT4_K_MULTIPLE)
        return n * k // 2 + (k // group_size) * n * 2 * 2
    intercept, per_row = _probe(mode, in_features, dtype, embedding, group_size)
    return int(round(intercept + per_row * out_features))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _modes(cfg: Any, device: str) -> dict[str, str]:
    """part -> the quantization mode it is stored in at measurement."""
    q = cfg.get("quant")
    if q is None:
        return {}
    mode = q.get("mode", "none")
    out = {t: mode for t in (q.get("targets") or ["llm"])} if mode != "none" else {}
    out.update(quant_parts(q))
    return out


def compute_dtypes(cfg: Any, device: str) -> dict[str, torch.dtype]:
    """part -> the floating dtype it computes in after quantization, where that differs from how it was built
    (bf16 or fp16 casts, int4's bf16, `quant.cuda_dtype` on CUDA)."""
    q = cfg.get("quant")
    if q is None:
        return {}
    out = {}
    for part, mode in _modes(cfg, device).items():
        half = quant.half_dtype({"mode": mode, "cuda_dtype": q.get("cuda_dtype")}, device)
        if half is not None and part != "embeddings":
            out[part] = half
    return out


def _skip_patterns(q: Any) -> list[str]:
    """Module names the targets' quantization leaves out: quant.skip, and the token table and head when
    quant.parts.embeddings quantizes them on their own."""
    if q is None:
        return []
    patterns = [str(p) for p in (q.get("skip") or [])]
    return patterns + quant.EMBEDDINGS if "embeddings" in quant_parts(q) else patterns


def _own_patterns(part: str, q: Any, patterns: list[str]) -> list[str]:
    """The skip patterns that apply in `part`: none in an LLM outside quant.targets."""
    return patterns if part in (q.get("targets") or []) or part != "llm" else []


def _token_tables(root: nn.Module, part: str, modes: dict[str, str]) -> list[nn.Embedding]:
    """The LLM's token tables that quant.parts.embeddings stores in a mode of their own."""
    if part != "llm" or not modes.get("embeddings"):
        return []
    return [m for _, m in root.named_modules()
            if isinstance(m, nn.Embedding) and any(n in quant.EMBEDDINGS for n in _names(root, m))]


def _lora_unmerged(plan: CompressionPlan, part: str, q: Any) -> bool:
    """Whether `part` keeps LoRA adapters beside its weights at measurement: not merged, or merged into nothing
    because its base is QLoRA's quantized one."""
    if plan.lora is None or part not in (plan.lora.get("on") or ["llm"]):
        return False
    main = q.get("mode", "none") if q is not None else "none"
    return not plan.merge or (main in QLORA_BASE and part in (q.get("targets") or []))


def _quantized(root: nn.Module, mode: str, q: Any, patterns: list[str], part: str) -> dict[int, nn.Module]:
    """Modules (by id) whose weight `mode` replaces, chosen as quant.py chooses them."""
    if mode in ("none", "bf16", "fp16"):
        return {}
    kinds: tuple[type, ...] = (nn.Linear, nn.Embedding) if mode == "int8_weight" and part == "llm" else (nn.Linear,)
    chosen = {}
    for _, m in quant._candidates(root, patterns):
        if mode in QLORA_BASE and type(m) is not nn.Linear:
            continue
        if not isinstance(m, kinds) or type(m).__name__ == "LowRankLinear":
            continue
        if mode == "int4_weight" and m.in_features % quant.group_size(q, part):
            continue  # kept in bf16, as quant.py notes
        chosen[id(m)] = m
    return chosen


def _lora_targets(root: nn.Module, lora: Any) -> list[nn.Linear]:
    leaves = set(lora.get("targets") or [])
    return [m for name, m in root.named_modules() if name.rsplit(".", 1)[-1] in leaves and isinstance(m, nn.Linear)]


def weights(parts: dict[str, nn.Module | None], cfg: Any, device: str) -> tuple[list[WeightRow], list[str]]:
    """Rows (part, storage kind, parameters, bytes) of the model at measurement, and notes."""
    plan, notes = CompressionPlan.of(cfg), []
    q = cfg.get("quant")
    modes = _modes(cfg, device)
    patterns = _skip_patterns(q)
    kind_dev = quant._device_type(device)
    layout = int4.resolve_layout(q.get("int4_layout", "auto"), kind_dev) if q is not None else "torchao"
    kernel = int4.resolve_kernel(quant.int4_kernel(q) if q is not None else int4.KERNELS[0], kind_dev)
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for part, root in parts.items():
        if root is None:
            continue
        mode = modes.get(part, "none")
        own = _own_patterns(part, q, patterns)
        half = quant.half_dtype({"mode": mode, "cuda_dtype": q.get("cuda_dtype")}, device) if q is not None else None
        chosen = _quantized(root, mode, q, own, part) if mode != "none" else {}
        cast = {id(m) for _, m in quant._candidates(root, own)} if half is not None else set()
        embeds = {id(m) for m in _token_tables(root, part, modes)}
        seen: set[int] = set()
        for _, m in root.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                key = id(p)
                if key in seen:
                    continue
                seen.add(key)
                if pname == "weight" and (id(m) in chosen or id(m) in embeds):
                    kind = modes["embeddings"] if id(m) in embeds else mode
                    dtype = half or p.dtype
                    n_out, n_in = p.shape[0], p.shape[1]
                    b = layer_bytes(kind, n_out, n_in, dtype, quant.group_size(q, "embeddings" if id(m) in embeds else part),
                                    embedding=isinstance(m, nn.Embedding), int4_layout=layout, device_type=kind_dev,
                                    int4_kernel=kernel)
                    acc[(part, kind)][0] += p.numel()
                    acc[(part, kind)][1] += b
                    continue
                dtype = half if (half is not None and id(m) in cast and p.is_floating_point()) else p.dtype
                acc[(part, _dtype_name(dtype))][0] += p.numel()
                acc[(part, _dtype_name(dtype))][1] += p.numel() * torch.empty((), dtype=dtype).element_size()
        for b in root.buffers():
            if id(b) not in seen:
                seen.add(id(b))
                acc[(part, _dtype_name(b.dtype))][1] += b.numel() * b.element_size()
        if _lora_unmerged(plan, part, q):
            rank = int(plan.lora.get("rank", 8))
            n = sum(rank * (lin.in_features + lin.out_features) for lin in _lora_targets(root, plan.lora))
            acc[(part, "lora adapters (float32)")][0] += n
            acc[(part, "lora adapters (float32)")][1] += 4 * n
            notes.append(f"{part}: LoRA adapters stay unmerged (float32)")
    rows = [WeightRow(part, kind, params, nbytes) for (part, kind), (params, nbytes) in acc.items()]
    return rows, notes


def dense_linears(parts: dict[str, nn.Module | None], cfg: Any, device: str) -> list[str]:
    """The linears (and unmerged LoRA adapters) that still multiply in floating point at measurement, as
    `part.name`. Compact int4 runs its own kernels; every other linear goes through cuBLAS on CUDA, torchao's
    int4 layout included, since no measurement has shown it does not."""
    q = cfg.get("quant")
    if q is None:
        return [f"{part}.*" for part, root in parts.items() if root is not None]
    plan, modes = CompressionPlan.of(cfg), _modes(cfg, device)
    compact = int4.resolve_layout(q.get("int4_layout", "auto"), quant._device_type(device)) == "compact"
    patterns = _skip_patterns(q)
    dense = []
    for part, root in parts.items():
        if root is None:
            continue
        mode = modes.get(part, "none")
        chosen = _quantized(root, mode, q, _own_patterns(part, q, patterns), part) \
            if mode == "int4_weight" and compact else {}
        # a head tied to an int4 token table reads that table through the same kernel
        tables = ({id(m.weight) for m in _token_tables(root, part, modes)}
                  if modes.get("embeddings") == "int4_weight" and compact else set())
        dense += [f"{part}.{name}" for name, m in root.named_modules()
                  if isinstance(m, nn.Linear) and id(m) not in chosen and id(m.weight) not in tables]
        if _lora_unmerged(plan, part, q):
            dense.append(f"{part}: LoRA adapters")
    return dense


def _names(root: nn.Module, target: nn.Module) -> list[str]:
    return [n.rsplit(".", 1)[-1] for n, m in root.named_modules(remove_duplicate=False) if m is target]
