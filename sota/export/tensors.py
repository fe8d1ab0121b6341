"""State dicts to and from safetensors, quantized tensors included: torchao's tensor subclasses are flattened
into plain tensors plus metadata by torchao's own safetensors support (the format transformers reads), and
weights shared by several modules (tied embeddings) are stored once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


PREFIX, PREFIX_KEY = "module.", "sota_key_prefix"


def is_torchao(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and type(t).__module__.startswith("torchao")


def shared_keys(module: nn.Module) -> dict[str, str]:
    """key -> the key whose tensor it shares (later names of one tensor point at the first)."""
    first: dict[int, str] = {}
    out = {}
    for key, t in module.state_dict(keep_vars=True).items():
        if id(t) in first:
            out[key] = first[id(t)]
        else:
            first[id(t)] = key
    return out


def check_storable(module: nn.Module, where: str) -> None:
    """Refuse what this format cannot hold: adapters left unmerged (over a bitsandbytes base), bitsandbytes
    layers outside the LLM or other than nf4 (transformers serialises the LLM's 4-bit layers)."""
    fix = ("export with --quant MODE (e.g. --quant int4_weight on CUDA, --quant nf4, --quant bf16): the adapters are "
           "folded into float weights exactly, then quantized again")
    if any(type(m).__name__ == "PeftModel" for m in module.modules()):
        raise ValueError(f"{where}: LoRA adapters over a bitsandbytes base cannot be merged without re-quantizing; {fix}")
    old = sorted({n for n, p in module.named_parameters() if type(p).__name__ == "AffineQuantizedTensor"})
    if old:
        raise ValueError(f"{where}: {old[0]} is a torchao AffineQuantizedTensor (int8 embeddings on torchao < 0.18), "
                         "which safetensors cannot hold; upgrade torchao, or keep embeddings out of int8 "
                         "(quant.skip, quant.parts.embeddings=null)")
    compact = sorted(n for n, m in module.named_modules() if type(m).__name__ == "Int4Linear")
    if compact:
        raise ValueError(f"{where}: {compact[0]} holds int4 in sota's compact layout (quant.int4_layout=compact), which "
                         "no reader outside sota knows; export with --quant int4_weight on CUDA (torchao's layout) or "
                         "--quant int8_weight")
    bnb = {type(m).__name__ for m in module.modules() if type(m).__module__.startswith("bitsandbytes")}
    if bnb - ({"Linear4bit"} if where == "llm" else set()):
        raise ValueError(f"{where}: bitsandbytes layers ({', '.join(sorted(bnb))}) cannot be exported as they are; {fix}")


def save(module: nn.Module, path: Path) -> dict[str, str]:
    """`module`'s state into `path` (safetensors); returns the shared keys left out (key -> the stored one)."""
    from safetensors.torch import save_file

    shared = shared_keys(module)
    state = {k: v.detach() for k, v in module.state_dict().items() if k not in shared}
    metadata = {"format": "pt"}
    if any(is_torchao(v) for v in state.values()):
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        # torchao's reader splits each name at its last dot: top-level names (a connector's queries) get a prefix
        prefix = PREFIX if any("." not in k for k in state) else ""
        state, metadata = flatten_tensor_state_dict({prefix + k: v for k, v in state.items()})
        metadata[PREFIX_KEY] = prefix
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(path), metadata=metadata)
    return shared


def read(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file written by `save`, torchao tensors rebuilt."""
    from safetensors import safe_open

    with safe_open(str(path), "pt", device=device) as f:
        metadata = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "tensor_names" in metadata:
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        state, leftover = unflatten_tensor_state_dict(state, metadata)
        if leftover:
            raise ValueError(f"{path}: {len(leftover)} tensors belong to no quantized weight (e.g. {next(iter(leftover))})")
        prefix = metadata.get(PREFIX_KEY, "")
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], shared: dict[str, str], path: Path) -> None:
    """`state` into a module built on the meta device: its tensors become the module's (no copies), shared
    ones are tied again, and nothing may stay unloaded."""
    for key, source in shared.items():
        state[key] = state[source]
    for p in module.parameters():
        p.requires_grad_(False)
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the model it describes: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"{path}: {len(left)} tensors were not stored (e.g. {left[0]})")
    tie(module, shared)


def tie(module: nn.Module, shared: dict[str, str]) -> None:
    """Make each key of `shared` the very tensor of the key it names, as in the exported model."""
    for key, source in shared.items():
        owner, _, leaf = key.rpartition(".")
        src_owner, _, src_leaf = source.rpartition(".")
        setattr(module.get_submodule(owner), leaf, getattr(module.get_submodule(src_owner), src_leaf))
