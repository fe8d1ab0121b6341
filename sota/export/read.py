"""Read an export directory back into an AudioLLM, in a fresh process, without the run, its corpus or its
pretrained sources: every part is built on the meta device and takes the stored tensors as they are, so a
quantized model never exists in float on the way (memory measured after loading is what a user sees)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sota.compress import int4
from sota.export import layout, tensors


def spec(path: str | Path) -> dict[str, Any]:
    """The export's sota.json, checked: format and version this code reads, every part present."""
    root = Path(path)
    file = root / layout.SPEC
    if not file.is_file():
        raise FileNotFoundError(f"{root}: no {layout.SPEC}; not a directory written by python -m sota.export")
    doc = json.loads(file.read_text())
    if doc.get("format") != layout.FORMAT or doc.get("version") != layout.VERSION:
        raise ValueError(f"{file}: format {doc.get('format')!r} version {doc.get('version')!r}; this sota reads "
                         f"{layout.FORMAT!r} version {layout.VERSION}")
    missing = [p for p in layout.PARTS if not (root / p / layout.WEIGHTS).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: {', '.join(f'{p}/{layout.WEIGHTS}' for p in missing)} missing")
    return doc


def _device_fits(doc: dict[str, Any], device: str) -> None:
    """torchao's int4 layout has CUDA kernels only; the compact one is packed again for any device."""
    q = doc["quant"]
    if "int4_weight" in (q["mode"], *(p["mode"] for p in (q.get("parts") or {}).values())) \
            and q.get("int4_layout") != "compact" and not str(device).startswith("cuda"):
        raise ValueError(f"this export holds int4 weights in torchao's layout, packed for CUDA kernels (quant "
                         f"{q['mode']}); load it with device='cuda', not {device!r}")


def _casts(module: nn.Module, doc: dict[str, Any], part: str) -> None:
    from sota.compress.quant import cast_half

    q = doc["quant"]
    if q.get("half") and part in q["targets"]:
        cast_half(module, getattr(torch, q["half"]), q["skip"])
    own = (q.get("parts") or {}).get(part)
    if own and own.get("half"):
        cast_half(module, getattr(torch, own["half"]), [])


def _filled(module: nn.Module, root: Path, part: str, doc: dict[str, Any], device: str) -> nn.Module:
    """A part built on the meta device, given its stored tensors (`_write_part`'s files); compact int4 layers
    packed for the kernel the export names (`load` may have replaced it)."""
    file = root / part / layout.WEIGHTS
    part_spec = doc[part]
    compact = tensors.read_int4(root / part / layout.INT4, part_spec.get("int4_compact") or [], device,
                                doc["quant"].get("int4_kernel") or int4.KERNELS[0])
    tensors.load_into(module, tensors.read(file, device), part_spec.get("shared", {}), file, compact,
                      part_spec.get("int4_embeddings") or [])
    return module


def _encoder(root: Path, doc: dict[str, Any], device: str) -> nn.Module:
    from sota.models.encoder import AudioEncoder

    e = doc["encoder"]
    with torch.device("meta"):
        encoder = AudioEncoder(path=None, config=e["config"], context_s=e["context_s"], frozen=True,
                               second=e["second"], dtype=e["dtype"], bucket_s=e["bucket_s"])
    return _filled(encoder, root, layout.ENCODER, doc, device)


def _connector(root: Path, doc: dict[str, Any], device: str) -> nn.Module:
    from hydra.utils import instantiate

    c = doc["connector"]
    with torch.device("meta"):
        connector = instantiate(c["build"])(in_dim=c["in_dim"], out_dim=c["out_dim"],
                                            frames_per_second=c["frames_per_second"])
    return _filled(connector, root, layout.CONNECTOR, doc, device)


def _compact_llm(where: Path, doc: dict[str, Any], device: str) -> nn.Module:
    """An LLM holding compact int4 linears, which transformers cannot read: built from its config with its
    parameters on the meta device (computed tables such as rotary frequencies real), the int4 layers packed
    for `device` from their own file, every other tensor taken as stored (kept dtypes included)."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(where, local_files_only=True)
    if getattr(config, "quantization_config", None) is not None:  # torchao tensors come back as they were stored
        del config.quantization_config
    with tensors.parameters_on_meta():
        llm = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, doc["llm"]["dtype"]))
    _filled(llm, where.parent, layout.LLM, doc, device)
    if (where / "generation_config.json").is_file():
        llm.generation_config = GenerationConfig.from_pretrained(where, local_files_only=True)
    return llm


def _llm(root: Path, doc: dict[str, Any], device: str) -> tuple[nn.Module, Any]:
    from transformers import AutoTokenizer

    from sota.compress.quant import plain_4bit_layout

    where = root / layout.LLM
    llm = _compact_llm(where, doc, device) if doc["llm"].get("int4_compact") else _pretrained_llm(where, doc)
    plain_4bit_layout(llm)  # the layout sota quantizes with
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
    return llm.to(device).eval(), tokenizer


def _pretrained_llm(where: Path, doc: dict[str, Any]) -> nn.Module:
    """The LLM directory as transformers reads it (torchao and bitsandbytes weights included)."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(where, dtype=getattr(torch, doc["llm"]["dtype"]),
                                               local_files_only=True)
    kept = doc["llm"].get("kept_dtypes") or {}
    if kept:  # from_pretrained cast these to the config's dtype: take them again as stored
        with safe_open(str(where / layout.WEIGHTS), "pt") as f:
            for key in kept:
                owner, _, leaf = key.rpartition(".")
                module = llm.get_submodule(owner)
                old = getattr(module, leaf)
                value = f.get_tensor(key)
                if isinstance(old, nn.Parameter):
                    setattr(module, leaf, nn.Parameter(value, requires_grad=False))
                else:
                    module.register_buffer(leaf, value)
    tensors.tie(llm, doc["llm"].get("shared") or {})
    return llm


def load(path: str | Path, device: str = "cpu", int4_kernel: str | None = None) -> Any:
    """The AudioLLM stored in export directory `path`, on `device`, in eval mode. `int4_kernel` (one of
    sota.compress.int4.KERNELS) replaces the compact int4 kernel the export was written with."""
    from sota.models.audio_llm import AudioLLM

    root = Path(path)
    doc = spec(root)
    if int4_kernel is not None:
        if int4_kernel not in int4.KERNELS:
            raise ValueError(f"int4_kernel must be one of {', '.join(int4.KERNELS)}; got {int4_kernel!r}")
        doc["quant"]["int4_kernel"] = int4_kernel
    _device_fits(doc, device)
    encoder = _encoder(root, doc, device)
    connector = _connector(root, doc, device)
    llm, tokenizer = _llm(root, doc, device)
    model = AudioLLM(encoder, connector, llm, tokenizer, prompts=doc["prompts"], prompt_template=doc["prompt_template"])
    for part in layout.PARTS:
        _casts(getattr(model, part), doc, part)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()
