"""LoRA adapters (peft) on the LLM and/or the Whisper encoder of a built AudioLLM, in place: only the adapted
module is wrapped, its base weights frozen; a bitsandbytes-quantized base gives QLoRA. `merge` folds the
adapters back into plain modules after training."""

from __future__ import annotations

from typing import Any

from torch import nn

METHODS = ("none", "lora")
# `on` name -> path of the module that gets adapters (the encoder's Whisper, not its feature extractor).
PLACES = {"llm": ("llm",), "encoder": ("encoder", "whisper")}


def validate(cfg: Any, out: list[str]) -> None:
    """Append every problem of the `lora` group to `out`."""
    if cfg is None:
        return
    method = cfg.get("method", "none")
    if method not in METHODS:
        out.append(f"lora.method must be one of {', '.join(METHODS)}; got {method!r}")
        return
    if method == "none":
        return
    rank = cfg.get("rank", 16)
    if not isinstance(rank, int) or rank < 1:
        out.append(f"lora.rank must be an integer >= 1, got {rank!r}")
    if not cfg.get("alpha", 32) > 0:
        out.append(f"lora.alpha must be > 0, got {cfg.get('alpha')}")
    if not 0 <= cfg.get("dropout", 0.0) < 1:
        out.append(f"lora.dropout must be in [0, 1), got {cfg.get('dropout')}")
    targets = list(cfg.get("targets") or [])
    if not targets:
        out.append("lora.targets must list at least one module name (e.g. [q_proj, v_proj])")
    on = list(cfg.get("on") or [])
    bad = [o for o in on if o not in PLACES]
    if bad or not on:
        out.append(f"lora.on must be a non-empty subset of [{', '.join(PLACES)}], got {on}")


def _get(model: nn.Module, path: tuple[str, ...]) -> nn.Module:
    for part in path:
        model = getattr(model, part)
    return model


def _set(model: nn.Module, path: tuple[str, ...], value: nn.Module) -> None:
    setattr(_get(model, path[:-1]), path[-1], value)


def _adaptable_names(module: nn.Module) -> list[str]:
    """Leaf names of the layers LoRA can adapt (linear, embedding, convolution, bitsandbytes linear)."""
    kinds = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)
    return sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if name and isinstance(m, kinds)})


def _matches(name: str, target: str) -> bool:
    # peft's rule for a plain target name: the whole qualified name or its last components.
    return name == target or name.endswith("." + target)


def _is_bnb(module: nn.Module) -> bool:
    return any(type(m).__module__.startswith("bitsandbytes") for m in module.modules())


def attach(model: nn.Module, cfg: Any) -> dict[str, Any]:
    """Wrap each module in `cfg.on` with peft LoRA adapters (the AudioLLM itself stays unwrapped)."""
    from peft import LoraConfig, get_peft_model

    problems: list[str] = []
    validate(cfg, problems)
    if problems:
        raise ValueError("; ".join(problems))
    record: dict[str, Any] = {"method": cfg.get("method", "none")}
    if record["method"] == "none":
        return record
    targets = [str(t) for t in cfg.targets]
    on = list(cfg.get("on") or ["llm"])
    # A target must exist in at least one adapted module, and every adapted module must have one: the
    # defaults name Llama's o_proj, which Whisper calls out_proj.
    names = {place: [n for n, _ in _get(model, PLACES[place]).named_modules() if n] for place in on}
    unknown = [t for t in targets if not any(_matches(n, t) for ns in names.values() for n in ns)]
    if unknown:
        listed = "; ".join(f"{p}: {', '.join(_adaptable_names(_get(model, PLACES[p])))}" for p in on)
        raise ValueError(f"lora.targets {unknown} match no module in {', '.join(on)}; layers that exist: {listed}")
    adapted = trainable = 0
    for place in on:
        base = _get(model, PLACES[place])
        here = [t for t in targets if any(_matches(n, t) for n in names[place])]
        if not here:
            raise ValueError(f"lora.targets {targets} match no module in {place}; layers that exist: "
                             f"{', '.join(_adaptable_names(base))}")
        config = LoraConfig(r=int(cfg.rank), lora_alpha=float(cfg.alpha), lora_dropout=float(cfg.dropout),
                            target_modules=here, bias="none")
        wrapped = get_peft_model(base, config)
        _set(model, PLACES[place], wrapped)
        adapted += sum(1 for n, m in wrapped.named_modules() if hasattr(m, "lora_A") and n)
        trainable += sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    record.update(rank=int(cfg.rank), alpha=float(cfg.alpha), targets=targets, on=on,
                  trainable_params=trainable, adapted_modules=adapted)
    return record


def adapter_places(model: nn.Module) -> list[tuple[str, tuple[str, ...], nn.Module]]:
    """(place, path, peft wrapper) of each place of `model` that carries adapters."""
    from peft import PeftModel

    out = []
    for place, path in PLACES.items():
        try:
            wrapped = _get(model, path)
        except AttributeError:
            continue
        if isinstance(wrapped, PeftModel):
            out.append((place, path, wrapped))
    return out


def merge(model: nn.Module) -> dict[str, Any]:
    """Fold adapters into the base weights (peft merge_and_unload), leaving plain modules.

    A bitsandbytes base keeps its adapters unmerged: peft would dequantize, add and re-quantize, a second
    rounding step that changes the model that was trained and evaluated.
    """
    record: dict[str, Any] = {"merged": [], "notes": []}
    for place, path, wrapped in adapter_places(model):
        if _is_bnb(wrapped):
            record["notes"].append(f"{place}: base is bitsandbytes-quantized; adapters kept unmerged (merging "
                                   "would re-quantize base + update and add rounding error)")
            continue
        _set(model, path, wrapped.merge_and_unload())
        record["merged"].append(place)
    if not record["merged"] and not record["notes"]:
        record["notes"].append("no LoRA adapters attached; nothing to merge")
    return record


def merge_onto_float(model: nn.Module) -> dict[str, Any]:
    """Fold adapters into float weights even where the base is quantized (QLoRA): each adapted layer becomes
    an nn.Linear holding dequantized base + update, exactly, with no second rounding; other quantized layers
    are dequantized too. The start of re-quantizing a QLoRA model in another format (export)."""
    from sota.compress.quant import dequantize

    record: dict[str, Any] = {"merged": [], "dequantized": 0}
    for place, path, wrapped in adapter_places(model):
        if not _is_bnb(wrapped):
            _set(model, path, wrapped.merge_and_unload())
            record["merged"].append(place)
            continue
        base = wrapped.get_base_model()
        for name, layer in list(base.named_modules()):
            if not hasattr(layer, "get_delta_weight") or not hasattr(layer, "base_layer"):
                continue
            record["dequantized"] += dequantize(layer)  # the base layer -> nn.Linear of its float weight
            linear = layer.get_base_layer()
            delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters)
            linear.weight = nn.Parameter((linear.weight.float() + delta.float()).to(linear.weight.dtype),
                                         requires_grad=False)
            _set(base, tuple(name.split(".")), linear)
        record["dequantized"] += dequantize(base)  # quantized layers without adapters
        _set(model, path, base)
        record["merged"].append(place)
    return record
