"""Write an in-memory AudioLLM as an export directory (layout.py), atomically: a failed export leaves nothing,
and an existing export is never overwritten."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sota.compress import lora, quant
from sota.export import layout, tensors
from sota.models import fuse
from sota.models.audio_llm import AudioLLM
from sota.models.footprint import footprint
from sota.utils.io import build_dir, remove_stale_staging

log = logging.getLogger(__name__)

HEADLINE = ("asr/wer", "asr/cer", "aac/cider_d", "real/asr/wer", "real/asr/cer")


def requantize(model: AudioLLM, cfg: DictConfig, mode: str, device: str) -> dict[str, Any]:
    """Adapters folded into float weights (exactly, also over a QLoRA base), every quantized weight back to
    float, then `quant=<mode>` applied to the targets the run quantized (the LLM if none): how a QLoRA point
    ships as fast int4."""
    from sota.compose import compose

    merged = lora.merge_onto_float(model)
    dequantized = sum(quant.dequantize(getattr(model, t)) for t in quant.TARGETS)
    new = compose([f"quant={mode}"]).quant
    old = cfg.get("quant")
    if old is not None and old.get("mode", "none") != "none":
        new.targets, new.skip = list(old.get("targets") or ["llm"]), list(old.get("skip") or [])
    record = quant.quantize(model, new, device)
    record["notes"] = [f"re-quantized at export from {old.get('mode') if old else 'none'}: adapters merged into "
                       f"float weights ({', '.join(merged['merged']) or 'none'}), {dequantized} quantized layers "
                       "dequantized first", *record.get("notes", [])]
    OmegaConf.update(cfg, "quant", new, force_add=True)
    return record


def _main_dtype(module: torch.nn.Module) -> torch.dtype:
    counts = Counter(p.dtype for p in module.parameters() if p.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return str(dtype).removeprefix("torch.") if dtype is not None else None


def _quant_spec(cfg: DictConfig, device: str) -> dict[str, Any]:
    """What the loader needs to restore the dtype boundaries quantization drew: the main mode's targets with
    the patterns it skipped, and each part of quant.parts with its own compute dtype."""
    q = cfg.get("quant")
    mode = q.get("mode", "none") if q is not None else "none"
    chosen = quant.parts(q) if q is not None else {}
    parts = {part: {"mode": m, "half": _dtype_name(quant.half_dtype({"mode": m, "cuda_dtype": q.get("cuda_dtype")},
                                                                     device)),
                    **({"group_size": quant.group_size(q, part)} if m == "int4_weight" else {})}
             for part, m in chosen.items()}
    # int4's layout, as quantization resolved it on `device`: torchao's (CUDA only) or sota's compact one
    int4_layout = (("compact" if quant.uses_compact_int4(q, device) else "torchao")
                   if q is not None and quant.uses_int4(q) else None)
    # the compact layout's kernel as configured: a load packs the stored codes for it (sota.load can override)
    int4_kernel = quant.int4_kernel(q) if int4_layout == "compact" else None
    if mode == "none":
        return {"mode": "none", "targets": [], "skip": [], "half": None, "parts": parts, "int4_layout": int4_layout,
                "int4_kernel": int4_kernel}
    if mode == "mixed":
        # transformers' quantization configs describe one method per model; a map of several is not loadable
        raise ValueError("export of quant=mixed is not supported: transformers' quantization configs hold one "
                         "method per model. Export with --quant MODE (one mode), or export a single-mode run")
    skip = [str(p) for p in q.get("skip") or []] + (quant.EMBEDDINGS if "embeddings" in chosen else [])
    return {"mode": mode, "targets": list(q.get("targets") or ["llm"]), "skip": skip,
            "half": _dtype_name(quant.half_dtype(q, device)), "group_size": q.get("group_size"), "parts": parts,
            "device": "cuda" if str(device).startswith("cuda") else "cpu", "int4_layout": int4_layout,
            "int4_kernel": int4_kernel}


def _torchao_config(state: dict[str, torch.Tensor], qspec: dict[str, Any], quantized: list[str]) -> Any:
    """transformers' TorchAoConfig saying how the LLM's torchao weights were made: one torchao config when all
    are of one kind, else one per module (int4 linears with int8 tables)."""
    from transformers import TorchAoConfig

    def config_of(tensor: torch.Tensor) -> Any:
        kind = "int8_weight" if type(tensor).__name__ == "Int8Tensor" else "int4_weight"
        return quant.torchao_config(kind, qspec)

    configs = {k.rsplit(".", 1)[0]: config_of(state[k]) for k in quantized}
    embeds = any(".embed_tokens." in k or k.startswith("lm_head.") for k in quantized)
    kinds = {type(c).__name__ for c in configs.values()}
    if len(kinds) == 1:
        return TorchAoConfig(next(iter(configs.values())), include_input_output_embeddings=embeds)
    from torchao.quantization import ModuleFqnToConfig

    return TorchAoConfig(ModuleFqnToConfig(configs), include_input_output_embeddings=embeds)


def _write_llm(model: AudioLLM, where: Path, qspec: dict[str, Any]) -> dict[str, Any]:
    llm = model.llm
    stored = _write_part(llm, where)
    shared = stored["shared"]
    main = _main_dtype(llm)
    # persistent tensors only (rotary tables are rebuilt, not stored), int4 layers' own file apart
    state = tensors.state_outside_int4(llm)
    named = dict(llm.named_parameters(remove_duplicate=False)) | dict(llm.named_buffers(remove_duplicate=False))
    kept = {k: _dtype_name(v.dtype) for k, v in named.items() if k in state and k not in shared
            and v.is_floating_point() and not tensors.is_torchao(v) and v.dtype != main}
    quantized = [k for k, v in state.items() if k not in shared and tensors.is_torchao(v)]
    four_bit = {n: m for n, m in llm.named_modules() if type(m).__module__.startswith("bitsandbytes")}
    config = llm.config
    before = (getattr(config, "quantization_config", None), getattr(config, "dtype", None))
    try:
        if quantized:
            config.quantization_config = _torchao_config(state, qspec, quantized)
        elif four_bit:
            from transformers import BitsAndBytesConfig

            # transformers turns every linear not named here into a 4-bit layer while loading
            plain = [n for n, m in llm.named_modules() if isinstance(m, torch.nn.Linear) and n not in four_bit]
            config.quantization_config = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=next(iter(four_bit.values())).compute_dtype, llm_int8_skip_modules=plain)
        config.dtype = main
        config.save_pretrained(where)
    finally:
        config.quantization_config, config.dtype = before
        if before[0] is None:
            del config.quantization_config
    if getattr(llm, "generation_config", None) is not None:
        llm.generation_config.save_pretrained(where)
    model.tokenizer.save_pretrained(where)
    return {"dir": layout.LLM, "dtype": _dtype_name(main), "kept_dtypes": kept, **stored,
            "quantized_tensors": len(quantized)}


def _write_part(module: torch.nn.Module, where: Path) -> dict[str, Any]:
    """`module`'s tensors in a new directory `where`: compact int4 linears in their own file, the rest in the
    weights file. Returns the shared keys and the int4 layers, for sota.json."""
    where.mkdir()
    compact = tensors.save_int4(module, where / layout.INT4)
    return {"shared": tensors.save(module, where / layout.WEIGHTS), "int4_compact": compact,
            "int4_embeddings": tensors.int4_embedding_specs(module)}


def _encoder_spec(model: AudioLLM, cfg: DictConfig) -> dict[str, Any]:
    enc = model.encoder
    second = {"config": enc.second.model.config.to_dict()} if enc.second is not None else None
    return {"config": enc.whisper.config.to_dict(), "context_s": float(enc.context_s), "frozen": True,
            "dtype": str(cfg.encoder.get("dtype", "float32")), "second": second, "bucket_s": enc.bucket_s}


def _llm_note(spec: dict[str, Any]) -> str:
    """What reads `llm/`: transformers alone, or (compact int4 linears) sota.load only."""
    if not spec["llm"].get("int4_compact"):
        return ("`llm/` alone is a transformers directory (`AutoModelForCausalLM.from_pretrained`); it expects the "
                "audio tokens\nthat `encoder/` and `connector/` make from 16 kHz audio, between the prompts of "
                "`sota.json`.")
    return f"""`llm/` is not loadable by transformers alone: its {len(spec['llm']['int4_compact'])} int4 linears are \
in sota's compact layout (`quant.int4_layout=compact`),
stored apart in `llm/{layout.INT4}` (codes two per byte, bf16 scales and zeros), which no reader
outside sota knows. `sota.load` rebuilds the LLM from `llm/config.json`, `llm/{layout.WEIGHTS}` and that file,
packing the int4 weights for the device it loads on (CPU or CUDA), without a float copy. The LLM expects the
audio tokens that `encoder/` and `connector/` make from 16 kHz audio, between the prompts of `sota.json`."""


def _card(spec: dict[str, Any], cfg: DictConfig, out: Path) -> str:
    groups = {g: OmegaConf.to_container(cfg.get(g), resolve=True) for g in ("encoder", "connector", "llm", "prune", "lora", "quant")
              if cfg.get(g) is not None}
    metrics = spec["results"]["metrics"]
    shown = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float))) or "| – | – |"
    sizes = "\n".join(f"| {k} | {v / 2**20:.2f} |" for k, v in spec["bytes"].items())
    return f"""# sota export

An audio-language model exported by `python -m sota.export` from {spec['source']}.

```python
import sota
model = sota.load({str(out)!r}, device="cpu")   # the AudioLLM: model.generate(batch)
```
{_llm_note(spec)}

## Results of the run

| metric | value |
|---|---|
{shown}

## Files (MiB)

| part | MiB |
|---|---|
{sizes}

Quantization: `{spec['quant']['mode']}` on {', '.join(spec['quant']['targets']) or 'nothing'}; compute dtype
{spec['quant']['half'] or 'as stored'}. transformers' `from_pretrained` loads every float tensor of `llm/` in its
config's dtype; `sota.load` keeps tensors that were stored in another precision (`kept_dtypes` in `sota.json`) as
they were evaluated.

## Configuration

```json
{json.dumps(groups, indent=2, default=str)}
```
"""


FORMATS = ("hf", "gguf")


def _gguf_mode(model: AudioLLM, qspec: dict[str, Any]) -> str:
    """The LLM's quantization as a GGUF writer mode, or a clear refusal before anything is written."""
    from sota.formats import gguf_writer

    mode = qspec["mode"] if "llm" in qspec["targets"] else "none"
    if mode not in gguf_writer.TYPES:
        raise gguf_writer.GGUFUnsupported(f"--format gguf: the LLM is quantized as {mode}, which has no GGUF type here "
                                          f"({', '.join(gguf_writer.TYPES)} do)")
    gguf_writer.check(model.llm, model.tokenizer)
    return mode


def _write_gguf(model: AudioLLM, path: Path, mode: str) -> dict[str, Any]:
    """The LLM as one GGUF file: a float copy of its weights (quantized ones dequantized) in `mode`'s type."""
    import copy

    from sota.formats import gguf_writer

    llm = copy.deepcopy(model.llm)
    quant.dequantize(llm)
    return gguf_writer.write(llm.float(), model.tokenizer, path, mode)


def export(model: AudioLLM, cfg: DictConfig, record: dict[str, Any], out: Path, *, source: str,
           device: str, results: dict[str, Any] | None = None, fmt: str = "hf") -> dict[str, Any]:
    """Write `model` (already compressed as `cfg` and `record` say) to `out`; returns the spec written. `fmt`
    gguf also writes the LLM as `llm.gguf` for llama.cpp."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; an export is never overwritten: choose another "
                              "directory or remove it")
    if fuse.unfuse(model.llm):   # decoding fused projections; an export keeps transformers' layout
        model.forget_compiled()
    if lora.adapter_places(model):
        merged = lora.merge(model)  # an export holds one set of weights: adapters folded in
        record.setdefault("notes", []).append(f"adapters merged at export: {', '.join(merged['merged'])}")
    for part in layout.PARTS:
        tensors.check_storable(getattr(model, part), part)
    qspec = _quant_spec(cfg, device)
    gguf_mode = _gguf_mode(model, qspec) if fmt == "gguf" else None
    spec: dict[str, Any] = {
        "format": layout.FORMAT, "version": layout.VERSION, "source": source,
        "encoder": _encoder_spec(model, cfg),
        "connector": {"build": OmegaConf.to_container(cfg.connector, resolve=True), "in_dim": model.encoder.out_dim,
                      "out_dim": int(model.llm.config.hidden_size),
                      "frames_per_second": model.encoder.frames_per_second},
        "prompts": dict(model.prompt.prompts), "prompt_template": model.prompt.template,
        "generate": OmegaConf.to_container(cfg.generate, resolve=True) if cfg.get("generate") is not None else {},
        "quant": qspec, "compression": record,
        "results": {"metrics": {k: (results or {}).get("metrics", {}).get(k) for k in HEADLINE},
                    "git_sha": ((results or {}).get("provenance") or {}).get("git_sha")},
        "footprint": {part: footprint(getattr(model, part)) for part in layout.PARTS},
    }

    def build(tmp: Path) -> None:
        spec["llm"] = _write_llm(model, tmp / layout.LLM, qspec)
        spec["encoder"].update(_write_part(model.encoder, tmp / layout.ENCODER))
        spec["connector"].update(_write_part(model.connector, tmp / layout.CONNECTOR))
        spec["bytes"] = {p: sum(f.stat().st_size for f in (tmp / p).rglob("*") if f.is_file()) for p in layout.PARTS}
        if gguf_mode is not None:
            spec["gguf"] = _write_gguf(model, tmp / layout.GGUF, gguf_mode)
        (tmp / layout.SPEC).write_text(json.dumps(spec, indent=2, default=str) + "\n")
        (tmp / layout.CARD).write_text(_card(spec, cfg, out))

    remove_stale_staging(out)
    build_dir(out, build)
    log.info("exported to %s (%s MiB)", out, f"{sum(spec['bytes'].values()) / 2**20:.1f}")
    return spec
