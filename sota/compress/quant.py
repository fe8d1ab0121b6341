"""Weight quantization of a built AudioLLM, in place: half-precision casts, torchao int8/int4 weight-only
(post-training), and bitsandbytes nf4 / LLM.int8() module replacement (the frozen base of QLoRA).

Modules whose qualified name matches a `skip` pattern keep their precision. Quantization is a deterministic
function of the float weights, so a quantized model is reloaded by rebuilding it from its float weights (or a
checkpoint of its trainable tensors) and calling `quantize` again -- the pipeline's way. A full quantized
state_dict also round-trips: `torch.save(model.state_dict())` -> rebuild -> `quantize` -> `load_state_dict`
(safetensors cannot hold torchao's tensor subclasses, so that file is a torch pickle, read back with
`torch.load(..., weights_only=True)`)."""

from __future__ import annotations

import fnmatch
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import PreTrainedModel

from sota.compress import gptq, int4, int4_embedding, int4_triton, mixed
from sota.compress.plan import QLORA_BASE
from sota.compress.plan import quant_parts as parts
from sota.compress.surgery import set_module
from sota.models.footprint import footprint

# mode -> device types its kernels run on (int4 on the CPU through the compact layout only: torchao's int4
# weight-only layout has CUDA kernels only; sota.compress.int4).
MODES: dict[str, set[str]] = {
    "none": {"cpu", "cuda"},
    "bf16": {"cpu", "cuda"},
    "fp16": {"cpu", "cuda"},
    "int8_weight": {"cpu", "cuda"},
    "int4_weight": {"cpu", "cuda"},
    "nf4": {"cpu", "cuda"},
    "int8_bnb": {"cpu", "cuda"},
    "mixed": {"cpu", "cuda"},   # per linear, one of quant.modes (sota.compress.mixed); each checked below
}
TARGETS = ("llm", "encoder", "connector")
# quant.parts: a part quantized in its own mode, after training, beside the main `mode` of `targets`.
# Embeddings (embed_tokens and the lm_head that may share its table) take int8 (torchao), or int4 in the compact
# layout (sota.compress.int4_embedding: rows read through the int4 kernel; torchao's int4 layouts are for linears).
PARTS: dict[str, tuple[str, ...]] = {
    "embeddings": ("int8_weight", "int4_weight"),
    "encoder": ("bf16", "fp16", "int8_weight", "int4_weight"),
    "connector": ("bf16", "fp16", "int8_weight", "int4_weight"),
}
EMBEDDINGS = ["embed_tokens", "lm_head"]
# How int4 weights are chosen (torchao): rtn rounds each group to its min-max grid (tinygemm's own qparams);
# hqq fits scale and zero point by half-quadratic optimisation of the weight error, without data; awq scales
# input channels by activation statistics of calibration batches before rounding (activation-aware); gptq
# rounds column by column and spreads each column's error over the rest by the inputs' Hessian
# (sota.compress.gptq; either int4 layout, sota.compress.int4).
ALGORITHMS = ("rtn", "hqq", "awq", "gptq")
CALIBRATED = ("awq", "gptq")
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16, "int4_weight": torch.bfloat16}
HALF_NAMES = ("bfloat16", "float16")
# Outlier threshold of LLM.int8() (bitsandbytes' and transformers' default): activation columns above it
# are multiplied in float.
INT8_THRESHOLD = 6.0


def _device_type(device: str | torch.device) -> str:
    name = str(device)
    if name == "gpu":
        return "cuda"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def validate(cfg: Any, device: str, out: list[str]) -> None:
    """Append every problem of the `quant` group to `out`; `device` is where the run will execute."""
    if cfg is None:
        return
    mode = cfg.get("mode", "none")
    if mode not in MODES:
        out.append(f"quant.mode must be one of {', '.join(MODES)}; got {mode!r}")
        return
    _validate_parts(cfg, device, out)
    try:
        kind = _device_type(device)
    except RuntimeError:
        out.append(f"quant: unknown device {device!r}")
        return
    _validate_int4_layout(cfg, kind, cfg.get("algorithm", "rtn"), out)
    if mode == "none":
        return
    if kind not in MODES[mode]:
        out.append(f"quant.mode={mode} needs a {_need(mode)} device; this run is on {kind}")
    elif kind not in set(cfg.get("devices") or MODES[mode]):
        out.append(f"quant.devices={list(cfg.devices)} does not include {kind}, where this run is")
    targets = list(cfg.get("targets") or [])
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        out.append(f"quant.targets must be a non-empty subset of [{', '.join(TARGETS)}], got {targets}")
    if cfg.get("cuda_dtype") not in (None, *HALF_NAMES):
        out.append(f"quant.cuda_dtype must be null or one of {', '.join(HALF_NAMES)}, got {cfg.get('cuda_dtype')!r}")
    if mode == "mixed":
        mixed.validate(cfg, out)
    if mode == "int4_weight" or (mode == "mixed" and "int4_weight" in (cfg.get("modes") or [])):
        gs = cfg.get("group_size", 128)
        if gs not in (32, 64, 128, 256):
            out.append(f"quant.group_size must be one of 32, 64, 128, 256 (int4 kernels), got {gs}")
    algorithm = cfg.get("algorithm", "rtn")
    if algorithm not in ALGORITHMS:
        out.append(f"quant.algorithm must be one of {', '.join(ALGORITHMS)}; got {algorithm!r}")
    elif algorithm != "rtn" and mode != "int4_weight" and \
            not (mode == "mixed" and "int4_weight" in (cfg.get("modes") or [])):
        out.append(f"quant.algorithm={algorithm} chooses int4 weights: it needs quant.mode=int4_weight, or "
                   f"quant=mixed with int4_weight among quant.modes (got {mode})")
    calib = cfg.get("calib_batches", 4)
    if algorithm in CALIBRATED and (isinstance(calib, bool) or not isinstance(calib, int) or calib < 1):
        out.append(f"quant.calib_batches must be an integer >= 1 for quant.algorithm={algorithm}, got {calib!r}")


def _need(mode: str) -> str:
    return " or ".join(sorted(d.upper() if d == "cuda" else d for d in MODES[mode]))


def uses_int4(cfg: Any) -> bool:
    mode = cfg.get("mode", "none")
    return "int4_weight" in (mode, *parts(cfg).values()) or (mode == "mixed" and "int4_weight" in (cfg.get("modes") or []))


def uses_compact_int4(cfg: Any, device: str) -> bool:
    """Whether some part is int4 in the compact layout when the run is on `device`."""
    return uses_int4(cfg) and int4.resolve_layout(cfg.get("int4_layout", "auto"), _device_type(device)) == "compact"


def _validate_int4_layout(cfg: Any, kind: str, algorithm: str, out: list[str]) -> None:
    layout = cfg.get("int4_layout", "auto")
    if layout not in int4.LAYOUTS:
        out.append(f"quant.int4_layout must be one of {', '.join(int4.LAYOUTS)}; got {layout!r}")
        return
    if not uses_int4(cfg):
        return
    kernel = int4_kernel(cfg)
    if kernel not in int4.KERNELS:
        out.append(f"quant.int4_kernel must be one of {', '.join(int4.KERNELS)}; got {kernel!r}")
    elif kernel == "triton" and kind == "cuda" and not int4_triton.available():
        out.append("quant.int4_kernel=triton needs Triton (it ships with CUDA builds of torch); it does not import "
                   "here: use quant.int4_kernel=tinygemm")
    resolved = int4.resolve_layout(layout, kind)
    if resolved == "torchao" and kind != "cuda":
        out.append(f"quant.int4_layout=torchao needs a CUDA device (torchao's int4 kernels); this run is on {kind}: "
                   f"use quant.int4_layout=compact (or auto)")
    if resolved == "compact" and algorithm in ("hqq", "awq"):
        why = (f"auto is compact on {kind}" if layout == "auto"
               else "set here or by backend=fused, whose step reads only compact int4")
        out.append(f"quant.algorithm={algorithm} runs through torchao's int4 layout: it needs "
                   f"quant.int4_layout=torchao (CUDA), got {layout} ({why})")


def _validate_parts(cfg: Any, device: str, out: list[str]) -> None:
    given = (cfg.get("parts") or {})
    unknown = [k for k in given if k not in PARTS]
    if unknown:
        out.append(f"quant.parts: unknown part(s) {', '.join(map(str, unknown))}; parts are {', '.join(PARTS)}")
    targets = list(cfg.get("targets") or ["llm"]) if cfg.get("mode", "none") != "none" else []
    for part, mode in parts(cfg).items():
        if part not in PARTS:
            continue
        if mode not in PARTS[part]:
            out.append(f"quant.parts.{part} must be null or one of {', '.join(PARTS[part])}; got {mode!r}")
        elif part in targets:
            out.append(f"quant.parts.{part}={mode} and quant.targets={targets} both quantize the {part}: "
                       f"drop it from one of them")
        elif _device_type(device) not in MODES[mode]:
            out.append(f"quant.parts.{part}={mode} needs a {_need(mode)} device; this run is on {_device_type(device)}")
        elif part == "embeddings" and mode == "int4_weight" and \
                int4.resolve_layout(cfg.get("int4_layout", "auto"), _device_type(device)) != "compact":
            out.append("quant.parts.embeddings=int4_weight reads token rows through the compact int4 layout: set "
                       f"quant.int4_layout=compact (got {cfg.get('int4_layout', 'auto')} on {_device_type(device)})")
    for part, gs in (cfg.get("part_group_size") or {}).items():
        if gs is None:
            continue
        if part not in PARTS:
            out.append(f"quant.part_group_size: unknown part {part!r}; parts are {', '.join(PARTS)}")
        elif gs not in (32, 64, 128, 256):
            out.append(f"quant.part_group_size.{part} must be null or one of 32, 64, 128, 256 (int4 kernels), got {gs!r}")
        elif parts(cfg).get(part) != "int4_weight":
            out.append(f"quant.part_group_size.{part}={gs} sets an int4 group size: it needs "
                       f"quant.parts.{part}=int4_weight (got {parts(cfg).get(part)})")


def int4_kernel(cfg: Any) -> str:
    """The compact int4 layout's kernel on CUDA (quant.int4_kernel), as configured."""
    return cfg.get("int4_kernel", int4.KERNELS[0])


def group_size(cfg: Any, part: str | None = None) -> int:
    """int4's group size for `part` (quant.part_group_size, for the parts of quant.parts), else quant.group_size."""
    own = (cfg.get("part_group_size") or {}).get(part) if part is not None else None
    return int(own if own is not None else cfg.get("group_size", 128))


def _with(cfg: Any, key: str, value: Any) -> Any:
    """A copy of `cfg` with `key` set to `value`."""
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)) if OmegaConf.is_config(cfg) else dict(cfg)
    plain[key] = value
    return plain


def _with_group_size(cfg: Any, part: str) -> Any:
    """`cfg` with `part`'s own int4 group size as its group_size."""
    own = group_size(cfg, part)
    return cfg if own == group_size(cfg) else _with(cfg, "group_size", own)


def is_qlora_base(cfg: Any) -> bool:
    """bitsandbytes modes quantize the frozen base BEFORE LoRA (QLoRA); the others quantize after training."""
    return cfg is not None and cfg.get("mode", "none") in QLORA_BASE


# -- module selection --------------------------------------------------------------------------------------
def _skipped(name: str, patterns: list[str]) -> bool:
    """A pattern matches a whole name component (`lm_head`, `embed_tokens`) or the name as a glob."""
    parts = name.split(".")
    return any(p in parts or fnmatch.fnmatchcase(name, p) for p in patterns)


def _is_adapter(name: str) -> bool:
    # LoRA adapters (peft `lora_A`, `lora_B`, `lora_embedding_A`, ...) stay in float: they are what trains.
    return any(part.startswith("lora_") for part in name.split("."))


def _candidates(root: nn.Module, patterns: list[str]) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module under `root` outside skipped subtrees and LoRA adapters."""
    blocked: list[str] = []
    for name, mod in root.named_modules():
        if any(name == b or name.startswith(b + ".") for b in blocked):
            continue
        if name and (_skipped(name, patterns) or _is_adapter(name)):
            blocked.append(name)
            continue
        yield name, mod


def _targets(model: nn.Module, cfg: Any) -> dict[str, nn.Module]:
    return {t: getattr(model, t) for t in (cfg.get("targets") or ["llm"])}


def _untie_config(root: nn.Module) -> None:
    config = getattr(root, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False  # or a later tie_weights() would share the weights again


def _untie_skipped(root: nn.Module, patterns: list[str], notes: list[str], where: str) -> None:
    """A weight shared by a skipped module and a quantized one (tied lm_head/embed_tokens) gets its own copy
    in the quantized module, so the skipped one really keeps its precision."""
    kept = {id(p) for name, m in root.named_modules() if name and _skipped(name, patterns)
            for p in m.parameters()}
    for name, mod in _candidates(root, patterns):
        for pname, p in list(mod.named_parameters(recurse=False)):
            if id(p) in kept:
                setattr(mod, pname, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
                _untie_config(root)
                notes.append(f"{where}.{name}.{pname} was tied to a skipped module: untied, so the skipped copy "
                             "stays in full precision and both copies are stored")


# -- half precision ----------------------------------------------------------------------------------------
def _cast_inputs(dtype: torch.dtype):
    def cast(x: Any) -> Any:
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype else x

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


def _cast_output(dtype: torch.dtype):
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.to(dtype)
        return output

    return hook


def _entry(target: nn.Module) -> nn.Module:
    """The module whose inputs start the half-precision region: an LLM's decoder (it receives inputs_embeds
    even when a peft wrapper calls the LLM's forward directly), else the target itself."""
    get_decoder = getattr(target, "get_decoder", None)
    if get_decoder is not None and hasattr(target, "get_input_embeddings"):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError):
            decoder = None
        if isinstance(decoder, nn.Module) and decoder is not target:
            return decoder
    return target


def cast_half(root: nn.Module, dtype: torch.dtype, patterns: list[str]) -> int:
    """Cast parameters outside skipped subtrees to `dtype`; skipped modules compute in their own precision.

    Buffers keep their dtype (rotary `inv_freq` is meant to stay float32). Dtype boundaries get hooks: the
    region's entry casts its float inputs to `dtype`; a skipped module casts its inputs to its own dtype and
    its output back to `dtype`, except the output head, whose float32 logits are the point of skipping it.
    On weights already cast (an exported model read back) it only draws those boundaries.
    """
    n = 0
    for _, mod in _candidates(root, patterns):
        params = [p for p in mod.parameters(recurse=False) if p.is_floating_point() and p.dtype != dtype]
        for p in params:
            p.data = p.data.to(dtype)
        n += bool(params)
    head = root.get_output_embeddings() if hasattr(root, "get_output_embeddings") else None
    _entry(root).register_forward_pre_hook(_cast_inputs(dtype), with_kwargs=True)
    for name, mod in root.named_modules():
        if not name or not _skipped(name, patterns) or _is_adapter(name):
            continue
        own = next((p.dtype for p in mod.parameters() if p.is_floating_point()), None)
        if own is None or own == dtype:
            continue
        mod.register_forward_pre_hook(_cast_inputs(own), with_kwargs=True)
        if mod is not head:
            mod.register_forward_hook(_cast_output(dtype))
    return n


# -- torchao -----------------------------------------------------------------------------------------------
@functools.cache
def int8_tensor_embeds() -> bool:
    """Whether torchao's Int8Tensor can be read as an embedding table (torchao 0.18 can, 0.17 cannot)."""
    from torchao.quantization import quantize_

    table = nn.Embedding(4, 32)
    quantize_(table, torchao_config("int8_weight", {}), filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    try:
        table(torch.tensor([1]))
    except NotImplementedError:
        return False
    return True


def torchao_config(mode: str, cfg: Any) -> Any:
    """torchao's config object for a torchao `mode` (also what an exported model's quantization_config says)."""
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if mode == "int8_weight":
        # version 2: torchao's Int8Tensor, which safetensors export can hold (torchao 0.17 defaults to the older
        # AffineQuantizedTensor, 0.18 to this)
        return Int8WeightOnlyConfig(version=2)
    # tile_packed_to_4d runs on torch's own CUDA kernel (aten._weight_int4pack_mm, bf16 activations);
    # torchao's default `plain` packing needs the separate mslk kernel package.
    qparams = "hqq" if cfg.get("algorithm", "rtn") == "hqq" else "tinygemm"
    return Int4WeightOnlyConfig(group_size=int(cfg.get("group_size", 128)), int4_packing_format="tile_packed_to_4d",
                                int4_choose_qparams_algorithm=qparams)


def _device_of(root: nn.Module) -> str:
    t = next(iter(root.parameters()), None)
    return t.device.type if t is not None else "cpu"


def int4_layer(lin: nn.Module, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, cfg: Any) -> nn.Module:
    """`lin` holding the int4 codes `(q, scales, zeros)` in `cfg`'s layout on their device: a compact Int4Linear,
    or `lin` itself with torchao's packed weight."""
    gs = int(cfg.get("group_size", 128))
    if int4.resolve_layout(cfg.get("int4_layout", "auto"), q.device.type) == "compact":
        return int4.Int4Linear.from_codes(q, scales, zeros, gs, lin.bias, int4_kernel(cfg))
    lin.weight = nn.Parameter(int4.pack_torchao(q, scales, zeros, gs), requires_grad=False)
    return lin


def _compact_int4(root: nn.Module, cfg: Any, chosen: set[int], calibrate: Any, notes: list[str], where: str) -> int:
    """The chosen linears as sota's unpadded Int4Linear (quant.int4_layout=compact), by RTN or GPTQ codes."""
    gs = int(cfg.get("group_size", 128))
    named = {name: m for name, m in root.named_modules() if id(m) in chosen}

    def store(name: str, m: nn.Module, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> None:
        set_module(root, name, int4_layer(m, q, scales, zeros, cfg))

    if cfg.get("algorithm", "rtn") == "gptq":
        done, batches = gptq.quantize(named, gs, calibrate, store)
        how = f"GPTQ, Hessians of {batches} calibration batches"
    else:
        for name, m in named.items():
            store(name, m, *int4.rtn(m.weight.detach(), gs))
        done, how = len(named), "round-to-nearest"
    notes.append(f"{where}: int4 weights of {done} linear(s) in the compact layout (no padding; "
                 f"{_device_of(root)} kernels), {how}")
    return done


def _awq(root: nn.Module, config: Any, chosen: set[int], calibrate: Any, notes: list[str], where: str) -> None:
    """torchao's AWQ over `config`: observers on the chosen linears, the calibration batches through the model,
    then each linear converted with its activation-aware channel scales."""
    from torchao.prototype.awq import AWQConfig
    from torchao.quantization import quantize_

    if calibrate is None:
        raise ValueError("quant.algorithm=awq scales channels by activations of calibration batches; none were given")
    quantize_(root, AWQConfig(config, step="prepare"), filter_fn=lambda m, fqn: id(m) in chosen)
    batches = calibrate()
    observed = {id(m) for m in root.modules() if type(m).__name__ == "AWQObservedLinear"}
    quantize_(root, AWQConfig(config, step="convert"), filter_fn=lambda m, fqn: id(m) in observed)
    notes.append(f"{where}: int4 weights by AWQ (torchao), activation statistics of {batches} calibration batches")


def _torchao(root: nn.Module, mode: str, cfg: Any, patterns: list[str], notes: list[str], where: str,
             calibrate: Any = None) -> int:
    from torchao.quantization import quantize_

    config = torchao_config(mode, cfg)
    # Only an LLM's token tables are read as embeddings: Whisper's positional table is sliced as a weight.
    kinds = (nn.Linear, nn.Embedding) if mode == "int8_weight" and where.startswith("llm") else (nn.Linear,)
    chosen = {id(m) for name, m in _candidates(root, patterns) if isinstance(m, kinds)}
    if mode == "int4_weight":
        misfit = [name for name, m in _candidates(root, patterns)
                  if isinstance(m, nn.Linear) and m.in_features % int(cfg.get("group_size", 128))]
        chosen -= {id(root.get_submodule(n)) for n in misfit}
        if misfit:
            notes.append(f"{where}: {len(misfit)} linear(s) kept in bf16, in_features not a multiple of "
                         f"quant.group_size={cfg.get('group_size', 128)} (e.g. {misfit[0]})")
        embeds = [n for n, m in _candidates(root, patterns) if isinstance(m, nn.Embedding)]
        if embeds:
            notes.append(f"{where}: int4_weight quantizes linears only; embeddings stay bf16 ({', '.join(embeds)})")
        if int4.resolve_layout(cfg.get("int4_layout", "auto"), _device_of(root)) == "compact":
            return _compact_int4(root, cfg, chosen, calibrate, notes, where)
        padded = [(name, m.in_features) for name, m in _candidates(root, patterns)
                  if id(m) in chosen and m.in_features % 1024]
        if padded:
            notes.append(f"{where}: the tinygemm int4 layout pads in_features to a multiple of 1024, so "
                         f"{len(padded)} linear(s) store padding (e.g. {padded[0][0]}: {padded[0][1]} -> "
                         f"{-(-padded[0][1] // 1024) * 1024}); weight_bytes counts it")
    # A weight shared by two chosen modules (tied lm_head / embed_tokens) is quantized once and shared again:
    # int8 per-row scales of [vocab, dim] are the same whether the table is read as embedding or projection.
    owners: dict[int, list[nn.Module]] = {}
    for _, m in root.named_modules(remove_duplicate=False):
        if id(m) in chosen and isinstance(getattr(m, "weight", None), torch.Tensor):
            owners.setdefault(id(m.weight), [])
            if m not in owners[id(m.weight)]:
                owners[id(m.weight)].append(m)
    first = {id(ms[0]) for ms in owners.values()}
    tables = {id(m) for ms in owners.values() for m in ms[:1] if isinstance(m, nn.Embedding)}
    if mode == "int8_weight" and tables and not int8_tensor_embeds():
        from torchao.quantization import Int8WeightOnlyConfig

        # older torchao: its Int8Tensor has no embedding kernel, the AffineQuantizedTensor form does, without a
        # padding index (which only stops the padding row's gradient: these tables do not train)
        for m in root.modules():
            if id(m) in tables:
                m.padding_idx = None
        quantize_(root, Int8WeightOnlyConfig(version=1), filter_fn=lambda m, fqn: id(m) in tables)
        first -= tables
        notes.append(f"{where}: int8 embeddings as torchao's AffineQuantizedTensor (this torchao's Int8Tensor has no "
                     "embedding kernel, and it takes no padding index: dropped, as it only stops a gradient); "
                     "exports cannot hold that form")
    if mode == "int4_weight" and cfg.get("algorithm", "rtn") == "awq":
        _awq(root, config, first, calibrate, notes, where)
    elif mode == "int4_weight" and cfg.get("algorithm", "rtn") == "gptq":
        named = {name: m for name, m in root.named_modules() if id(m) in first}

        done, batches = gptq.quantize(named, int(cfg.get("group_size", 128)), calibrate,
                                      lambda name, m, q, scales, zeros: int4_layer(m, q, scales, zeros, cfg))
        notes.append(f"{where}: int4 weights of {done} linear(s) by GPTQ (torchao's tinygemm layout), Hessians of "
                     f"{batches} calibration batches")
    else:
        quantize_(root, config, filter_fn=lambda m, fqn: id(m) in first)
    for ms in owners.values():
        for m in ms[1:]:
            m.weight = ms[0].weight
    return sum(len(ms) for ms in owners.values())


# -- bitsandbytes ------------------------------------------------------------------------------------------
def _drop_cast_notice(record: logging.LogRecord) -> bool:
    # LLM.int8() always multiplies in float16; bitsandbytes logs that on every call from a float32 model.
    return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


def plain_4bit_layout(root: nn.Module) -> None:
    """bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel on the first eval forward and converts
    them back (re-quantizing the absmax statistics) on every state_dict() -- which Lightning calls at each
    checkpoint. That round trip changed the in-memory model in our tests; the plain layout, set here on every
    4-bit layer under `root`, keeps results identical between train/eval and across saves (about 1.4x slower
    on CPU)."""
    for m in root.modules():
        if type(m).__module__.startswith("bitsandbytes") and type(m).__name__ == "Linear4bit":
            m.support_avx512bf16_for_cpu = False


def _bnb(root: nn.Module, mode: str, patterns: list[str], notes: list[str], where: str) -> int:
    import bitsandbytes as bnb

    if mode == "int8_bnb":
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_drop_cast_notice)
        notes.append(f"{where}: LLM.int8() layers multiply in float16 (inputs cast from float32)")
    embeds = [name for name, mod in _candidates(root, patterns) if name and type(mod) is nn.Embedding]
    if embeds:
        # bitsandbytes 0.50's Embedding4bit/Embedding8bit raise in state_dict() (so no checkpoint could be
        # written), and Embedding4bit misreads double-quantized statistics (SmolLM2 perplexity 68 -> 12556).
        notes.append(f"{where}: bitsandbytes modes keep embeddings in float ({', '.join(embeds)})")
    users: dict[int, int] = {}
    for _, m in root.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            users[id(p)] = users.get(id(p), 0) + 1
    n = 0
    for name, mod in list(_candidates(root, patterns)):
        if not name or type(mod) is not nn.Linear:
            continue
        if users.get(id(mod.weight), 1) > 1:
            notes.append(f"{where}.{name}.weight is shared (tied embeddings): the quantized copy is separate, "
                         "the float original stays, and both are stored")
            _untie_config(root)
        # The float copy goes through the CPU: bitsandbytes' Int8Params quantize only on a move *from* the CPU.
        w = mod.weight.detach().cpu()
        device = mod.weight.device
        bias = mod.bias is not None
        if mode == "nf4":
            new = bnb.nn.Linear4bit(mod.in_features, mod.out_features, bias=bias, compute_dtype=w.dtype,
                                    quant_type="nf4", device="meta")
            new.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, quant_type="nf4",
                                           compress_statistics=True, module=new)
            plain_4bit_layout(new)
        else:
            new = bnb.nn.Linear8bitLt(mod.in_features, mod.out_features, bias=bias, has_fp16_weights=False,
                                      threshold=INT8_THRESHOLD, device="meta")
            new.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
        if bias:
            new.bias = nn.Parameter(mod.bias.detach().cpu().clone(), requires_grad=False)
        new = new.to(device)  # bitsandbytes quantizes on the move to a device
        new.train(mod.training)
        set_module(root, name, new)
        n += 1
    flag = "is_loaded_in_4bit" if mode == "nf4" else "is_loaded_in_8bit"
    for m in root.modules():
        # peft reads this flag on the model it wraps (the LLM, or the encoder's Whisper) to give bnb layers its
        # bnb-aware LoRA layers; without it a plain LoRA layer would "merge" into packed integers.
        if m is root or isinstance(m, PreTrainedModel):
            setattr(m, flag, True)
    return n


def half_dtype(cfg: Any, device: str) -> torch.dtype | None:
    """The floating dtype the targets compute in after `quantize(model, cfg, device)`: the mode's own half
    precision, else `cuda_dtype` on CUDA, else None (they keep theirs)."""
    mode = cfg.get("mode", "none") if cfg is not None else "none"
    if mode == "none":
        return None
    if mode in HALF:
        return HALF[mode]
    if cfg.get("cuda_dtype") and _device_type(device) == "cuda":
        return getattr(torch, cfg.get("cuda_dtype"))
    return None


def _dequantize_int4_tables(root: nn.Module) -> int:
    """int4 token tables back to bf16 nn.Embedding, and a head that shared the table to an nn.Linear sharing the
    new embedding's weight (tied again)."""
    n = 0
    for name, mod in list(root.named_modules()):
        if not isinstance(mod, int4_embedding.Int4Embedding):
            continue
        emb = mod.to_embedding()
        for other, m in list(root.named_modules(remove_duplicate=False)):
            if m is mod.table and not other.startswith(name + "."):
                head = nn.Linear(emb.embedding_dim, emb.num_embeddings, bias=False, device="meta")
                head.weight = emb.weight
                set_module(root, other, head)
        set_module(root, name, emb)
        n += 1
    return n


def dequantize(root: nn.Module) -> int:
    """Quantized weights under `root` back to float, in place: bitsandbytes and compact int4 layers become
    nn.Linear, torchao tensors plain tensors. What a different quantization of the same model starts from; returns the count."""
    n = _dequantize_int4_tables(root)
    for name, mod in list(root.named_modules()):
        if type(mod).__module__.startswith("bitsandbytes") and type(mod).__name__ in ("Linear4bit", "Linear8bitLt"):
            new = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, device="meta")
            new.weight = nn.Parameter(bnb_weight(mod), requires_grad=False)
            if mod.bias is not None:
                new.bias = nn.Parameter(mod.bias.detach().clone(), requires_grad=False)
            set_module(root, name, new)
            n += 1
        elif isinstance(mod, int4.Int4Linear):
            set_module(root, name, mod.to_linear())
            n += 1
        elif type(getattr(mod, "weight", None)).__module__.startswith("torchao"):
            mod.weight = nn.Parameter(mod.weight.dequantize(), requires_grad=False)
            n += 1
    for m in root.modules():
        for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):
            if getattr(m, flag, False):
                setattr(m, flag, False)
    return n


def bnb_weight(layer: nn.Module) -> torch.Tensor:
    """The float weight a bitsandbytes Linear4bit / Linear8bitLt layer computes with."""
    import bitsandbytes as bnb

    w = layer.weight
    if type(layer).__name__ == "Linear4bit":
        return bnb.functional.dequantize_4bit(w.data, w.quant_state).to(layer.compute_dtype or torch.float32)
    scb = w.SCB if getattr(w, "SCB", None) is not None else layer.state.SCB
    return (w.data.float() * scb.float()[:, None] / 127.0).to(torch.float32)


# -- entry point -------------------------------------------------------------------------------------------
def _quantize_root(root: nn.Module, mode: str, cfg: Any, patterns: list[str], device: str, notes: list[str],
                   where: str, calibrate: Any = None) -> int:
    """One part of the model (`root`) in one mode; returns the modules changed."""
    if any(_is_adapter(name) for name, _ in root.named_modules()):
        notes.append(f"{where}: unmerged LoRA adapters stay in float32; only base layers are quantized")
    _untie_skipped(root, patterns, notes, where)
    half = half_dtype({**_plain(cfg), "mode": mode}, device)
    if half is not None and mode not in HALF:
        notes.append(f"{where}: cast to {cfg.cuda_dtype} before quantizing (quant.cuda_dtype)")
    n = 0
    if half is not None:
        n_cast = cast_half(root, half, patterns)
        n += n_cast if mode in ("bf16", "fp16") else 0
    if mode in ("int8_weight", "int4_weight"):
        n += _torchao(root, mode, cfg, patterns, notes, where, calibrate)
    elif mode in QLORA_BASE:
        n += _bnb(root, mode, patterns, notes, where)
    return n


def rtn_config(cfg: Any) -> Any:
    """`cfg` with int4 chosen by round-to-nearest: for what calibration does not reach (single linears scored
    alone, parts quantized after the targets)."""
    return cfg if cfg.get("algorithm", "rtn") == "rtn" else _with(cfg, "algorithm", "rtn")


def _plain(cfg: Any) -> dict[str, Any]:
    return {k: cfg.get(k) for k in ("mode", "cuda_dtype", "group_size")}


def _to_device_for_int4(model: nn.Module, device: str, notes: list[str]) -> None:
    # Packed int4 layouts are device specific: quantize where the model will run.
    model.to(_device_type(device) if str(device) in ("gpu", "auto") else device)
    notes.append(f"model moved to {device} (int4 packing is device specific)")


def quantize(model: nn.Module, cfg: Any, device: str, with_parts: bool = True, calib: list[dict] | None = None,
             recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantize `cfg.targets` of `model` in place in `cfg.mode`, then (`with_parts`) each of `cfg.parts` in its
    own mode, and report what changed. `quant=mixed` scores its linears on `calib` batches, or applies the map
    of an earlier run's `recorded` quant record."""
    mode = cfg.get("mode", "none")
    problems: list[str] = []
    validate(cfg, device, problems)
    if problems:
        raise ValueError("; ".join(problems))
    targets = list(cfg.get("targets") or ["llm"])
    record: dict[str, Any] = {"mode": mode, "targets": targets, "quantized_modules": 0}
    before = footprint(model)["weight_bytes"]
    notes: list[str] = []
    chosen = parts(cfg) if with_parts else {}
    patterns = [str(p) for p in (cfg.get("skip") or [])]
    if "embeddings" in chosen:
        patterns = [*patterns, *EMBEDDINGS]  # their own pass below
    if "int4_weight" in (mode, *chosen.values()):
        _to_device_for_int4(model, device, notes)
    n = 0
    if mode == "mixed":
        n += _mixed(model, cfg, device, targets, patterns, notes, calib, recorded, record)
    calibrate = _calibrator(model, calib) if calib else None
    for where in targets if mode not in ("none", "mixed") else []:
        n += _quantize_root(getattr(model, where), mode, cfg, patterns, device, notes, where, calibrate)
    if chosen:
        n += quantize_parts(model, cfg, device, notes, calibrate)
        record["parts"] = chosen
    record.update(quantized_modules=n, weight_bytes_before=before,
                  weight_bytes_after=footprint(model)["weight_bytes"], notes=notes)
    return record


def _calibrator(model: nn.Module, batches: list[dict]) -> Any:
    """A call that runs `batches` through the model (what AWQ's observers watch); returns how many ran."""
    def run() -> int:
        with torch.no_grad():
            for b in batches:
                model.outputs(b)
        return len(batches)
    return run


def _mixed(model: nn.Module, cfg: Any, device: str, targets: list[str], patterns: list[str], notes: list[str],
           calib: list[dict] | None, recorded: dict[str, Any] | None, record: dict[str, Any]) -> int:
    half = half_dtype({**_plain(cfg), "mode": "int8_weight"}, device)   # cuda_dtype on CUDA, else None
    if half is not None:   # the base precision every unquantized linear keeps, and what int4 computes in
        for where in targets:
            cast_half(getattr(model, where), half, patterns)
        notes.append(f"targets cast to {cfg.cuda_dtype} first (quant.cuda_dtype): quant.modes' `none` is that dtype")
    if recorded and recorded.get("map"):
        mixed.apply(model, dict(recorded["map"]), cfg, device, _quantize_root,
                    _calibrator(model, calib) if calib else None, notes)
        record.update({k: recorded[k] for k in ("avg_bits_target", "avg_bits", "modes", "counts", "map") if k in recorded})
        notes.append("quant=mixed: the recorded map applied (no new sensitivity scores)")
        return len(recorded["map"])
    candidates = {where: {name: m for name, m in _candidates(getattr(model, where), patterns)
                          if type(m) is nn.Linear} for where in targets}
    record.update(mixed.quantize(model, cfg, device, list(calib or []), candidates, _quantize_root,
                                 _calibrator(model, calib) if calib else None, notes))
    if cfg.get("algorithm", "rtn") == "awq":
        notes.append("quant=mixed: linears scored with round-to-nearest int4; the chosen int4 linears quantized by awq")
    return len(record["map"])


def quantize_parts(model: nn.Module, cfg: Any, device: str, notes: list[str], calibrate: Any = None) -> int:
    """`cfg.parts`, each in its own mode (after training: the connector trains, a QLoRA base does not). With
    quant.algorithm=gptq and calibration batches (`calibrate`), int4 parts the batches reach are GPTQ's too (the
    connector; the token table through the lm_head's inputs); the rest round to nearest, noted (an encoder whose
    features are cached never runs in calibration). Other algorithms are the targets' only."""
    n = 0
    algorithm = cfg.get("algorithm", "rtn")
    by_gptq = algorithm == "gptq" and calibrate is not None
    if algorithm != "rtn" and not by_gptq and "int4_weight" in parts(cfg).values():
        notes.append(f"quant.parts: int4 by round-to-nearest (quant.algorithm={algorithm} is for the targets"
                     f"{'' if algorithm != 'gptq' else '; no calibration batches here'})")
    for part, mode in parts(cfg).items():
        own = _with_group_size(cfg, part) if mode == "int4_weight" else cfg
        if own is not cfg:
            notes.append(f"quant.parts.{part}: int4 in groups of {group_size(cfg, part)} (quant.part_group_size)")
        cfg_parts = rtn_config(own)
        if part == "embeddings" and mode == "int4_weight":
            done = int4_embedding.quantize_tables(model.llm, group_size(cfg, part), calibrate if by_gptq else None,
                                                  int4_kernel(cfg))
            notes.extend(f"llm.{d}" for d in done)
            n += len(done)
        elif mode == "int4_weight" and by_gptq:
            try:
                n += _quantize_root(getattr(model, part), mode, own, [], device, notes, part, calibrate)
            except gptq.Unreached as e:
                notes.append(f"quant.parts.{part}: int4 by round-to-nearest, not GPTQ ({e})")
                n += _quantize_root(getattr(model, part), mode, cfg_parts, [], device, notes, part)
        elif part == "embeddings":
            llm = model.llm
            # every other module is skipped by its full name, so only the tables (one, when tied) are chosen
            others = [name for name, m in llm.named_modules()
                      if isinstance(m, (nn.Linear, nn.Embedding)) and not _skipped(name, EMBEDDINGS)]
            n += _torchao(llm, mode, cfg, others, notes, "llm.embeddings")
        else:
            n += _quantize_root(getattr(model, part), mode, cfg_parts, [], device, notes, part)
    return n


def load_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state_dict saved from a quantized model into `model`, rebuilt and `quantize`d with the same
    config. torchao tensors load as usual; bitsandbytes 4-bit weights carry their statistics under
    `<name>.weight.*` keys, rebuilt here into the layer's quantization state."""
    import bitsandbytes as bnb

    state = dict(state)
    taken: set[str] = set()
    for name, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear8bitLt) and mod.state.SCB is not None:
            # After a forward the int8 statistics live in the layer state; put them back where loading looks.
            mod.weight.CB, mod.weight.SCB = mod.weight.data, mod.state.SCB
            mod.state.CB = mod.state.SCB = None
        if not isinstance(mod, bnb.nn.Linear4bit):
            continue
        key = f"{name}.weight"
        if key not in state:
            continue
        stats = {k[len(key) + 1:]: state.pop(k) for k in list(state) if k.startswith(key + ".")}
        data = state.pop(key)
        mod.weight = bnb.nn.Params4bit.from_prequantized(data, stats, device=data.device, module=mod)
        taken.add(key)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in taken]
    if missing or unexpected:
        raise KeyError(f"quantized state_dict does not fit the model: missing {missing[:10]}, "
                       f"unexpected {unexpected[:10]}")
