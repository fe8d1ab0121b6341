"""State dicts to and from safetensors, quantized tensors included: torchao's tensor subclasses are flattened
into plain tensors plus metadata by torchao's own safetensors support (the format transformers reads), and
weights shared by several modules (tied embeddings) are stored once. Int4 linears of sota's compact layout
(`Int4Linear`) go to a file of their own, device-independent: `<module>.codes` (uint8 [out, in / 2], two codes a
byte), `<module>.scales` and `<module>.zeros` (bf16 [out, in / group_size]) and `<module>.bias`; loading packs
them again for the device it loads on. An int4 token table (`Int4Embedding`) is stored once, as the int4 layer it
reads (the lm_head's when tied), and rebuilt around it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sota.compress import int4
from sota.compress.int4_embedding import Int4Embedding
from sota.compress.surgery import set_module


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
    layers outside the LLM or other than nf4 (transformers serialises the LLM's 4-bit layers), a compact int4
    layer under two names."""
    fix = ("export with --quant MODE (e.g. --quant int4_weight on CUDA, --quant nf4, --quant bf16): the adapters are "
           "folded into float weights exactly, then quantized again")
    if any(type(m).__name__ == "PeftModel" for m in module.modules()):
        raise ValueError(f"{where}: LoRA adapters over a bitsandbytes base cannot be merged without re-quantizing; {fix}")
    old = sorted({n for n, p in module.named_parameters() if type(p).__name__ == "AffineQuantizedTensor"})
    if old:
        raise ValueError(f"{where}: {old[0]} is a torchao AffineQuantizedTensor (int8 embeddings on torchao < 0.18), "
                         "which safetensors cannot hold; upgrade torchao, or keep embeddings out of int8 "
                         "(quant.skip, quant.parts.embeddings=null)")
    int4_layers(module, where)
    bnb = {type(m).__name__ for m in module.modules() if type(m).__module__.startswith("bitsandbytes")}
    if bnb - ({"Linear4bit"} if where == "llm" else set()):
        raise ValueError(f"{where}: bitsandbytes layers ({', '.join(sorted(bnb))}) cannot be exported as they are; {fix}")


def int4_embeddings(module: nn.Module) -> dict[str, Int4Embedding]:
    """The int4 token tables under `module` (`Int4Embedding`), by qualified name."""
    return {n: m for n, m in module.named_modules() if isinstance(m, Int4Embedding)}


def _int4_names(module: nn.Module) -> list[tuple[str, int4.Int4Linear]]:
    """Every (name, layer) of a compact int4 linear, a layer under each name it is reachable by."""
    return [(n, m) for n, m in module.named_modules(remove_duplicate=False) if isinstance(m, int4.Int4Linear)]


def int4_layers(module: nn.Module, where: str = "") -> dict[str, int4.Int4Linear]:
    """The compact int4 linears under `module`, each once by one qualified name. An int4 token table is named
    by the module that uses it as a linear (a tied lm_head), else by its embedding's `<name>.table`; a linear
    reachable under two other names is refused."""
    views = {f"{n}.table" for n in int4_embeddings(module)}
    names: dict[int, list[str]] = {}
    for n, m in _int4_names(module):
        names.setdefault(id(m), []).append(n)
    layers = {}
    for all_names in names.values():
        own = [n for n in all_names if n not in views]
        if len(own) > 1:
            raise ValueError(f"{where or 'module'}: the int4 layer {own[0]} is reachable under two names; the export "
                             "stores each compact int4 layer once, by one name")
        name = own[0] if own else all_names[0]
        layers[name] = module.get_submodule(name)
    return layers


def int4_embedding_specs(module: nn.Module) -> list[dict[str, Any]]:
    """What the loader needs to rebuild each int4 token table: its name, the int4 layer it reads (by the name
    `int4_layers` stores it under) and its padding index."""
    stored = {id(m): n for n, m in int4_layers(module).items()}
    return [{"name": n, "table": stored[id(m.table)], "padding_idx": m.padding_idx}
            for n, m in int4_embeddings(module).items()]


def _outside(keys: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    prefixes = tuple(f"{n}." for n in names)
    return {k: v for k, v in keys.items() if not (prefixes and k.startswith(prefixes))}


def save_int4(module: nn.Module, path: Path) -> list[dict[str, Any]]:
    """`module`'s compact int4 linears into `path` (written only if there are any); returns what the loader
    needs to rebuild each: name, in/out features, group size, bias or not."""
    from safetensors.torch import save_file

    layers = int4_layers(module)
    state: dict[str, torch.Tensor] = {}
    specs = []
    for name, m in layers.items():
        q, scales, zeros = m.codes()
        state.update({f"{name}.codes": int4.pack_nibbles(q), f"{name}.scales": scales, f"{name}.zeros": zeros})
        if m.bias is not None:
            state[f"{name}.bias"] = m.bias.detach()
        specs.append({"name": name, "in_features": m.in_features, "out_features": m.out_features,
                      "group_size": m.group_size, "bias": m.bias is not None})
    if layers:
        save_file({k: v.cpu().contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return specs


def read_int4(path: Path, specs: list[dict[str, Any]], device: str = "cpu",
              kernel: str = int4.KERNELS[0]) -> dict[str, int4.Int4Linear]:
    """The layers `save_int4` wrote to `path`, packed for `kernel` on `device`; nothing else is materialised in
    float."""
    if not specs:
        return {}
    from safetensors import safe_open

    layers = {}
    with safe_open(str(path), "pt", device=str(device)) as f:
        names = set(f.keys())
        for s in specs:
            name, n, k, gs = s["name"], s["out_features"], s["in_features"], s["group_size"]
            keys = [f"{name}.{part}" for part in ("codes", "scales", "zeros", *(("bias",) if s["bias"] else ()))]
            if not names.issuperset(keys):
                raise ValueError(f"{path}: {', '.join(sorted(set(keys) - names))} missing")
            names -= set(keys)
            q = int4.unpack_nibbles(f.get_tensor(keys[0]))
            scales, zeros = f.get_tensor(keys[1]), f.get_tensor(keys[2])
            if q.shape != (n, k) or scales.shape != zeros.shape or scales.shape != (n, k // gs):
                raise ValueError(f"{path}: {name} holds codes {tuple(q.shape)} and scales {tuple(scales.shape)}, not "
                                 f"those of a {k} -> {n} linear in groups of {gs}")
            bias = f.get_tensor(keys[3]) if s["bias"] else None
            layers[name] = int4.Int4Linear.from_codes(q, scales, zeros, gs, bias, kernel)
    if names:
        raise ValueError(f"{path}: {len(names)} tensors belong to no int4 layer it lists (e.g. {sorted(names)[0]})")
    return layers


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device and their buffers as usual: tables a
    model computes when it is built (rotary frequencies, not stored) are real, weights cost nothing."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(self, name, param)
        if param is not None and not param.is_meta:
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def state_outside_int4(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s state dict without its compact int4 linears' tensors, under any of their names (what `save`
    stores)."""
    int4_layers(module)   # refuses what the int4 file cannot name
    return _outside(module.state_dict(), [n for n, _ in _int4_names(module)])


def save(module: nn.Module, path: Path) -> dict[str, str]:
    """`module`'s state into `path` (safetensors), its compact int4 linears left out (`save_int4` stores them);
    returns the shared keys left out (key -> the stored one)."""
    from safetensors.torch import save_file

    outside = state_outside_int4(module)
    shared = {k: v for k, v in shared_keys(module).items() if k in outside}   # int4 tables are rebuilt shared
    state = {k: v.detach() for k, v in outside.items() if k not in shared}
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


def load_into(module: nn.Module, state: dict[str, torch.Tensor], shared: dict[str, str], path: Path,
              compact: dict[str, nn.Module] | None = None, tables: list[dict[str, Any]] | None = None) -> None:
    """`state` into a module built on the meta device: its tensors become the module's (no copies), the
    `compact` int4 layers (`read_int4`) take their places, int4 token `tables` (`int4_embedding_specs`) read
    them, shared ones are tied again, and nothing may stay unloaded."""
    for name, layer in (compact or {}).items():
        set_module(module, name, layer)
    for t in tables or []:
        if t["table"] not in (compact or {}):
            raise ValueError(f"{path}: the int4 token table {t['name']} reads {t['table']}, which the int4 file lacks")
        set_module(module, t["name"], Int4Embedding(compact[t["table"]], t.get("padding_idx")))
    for key, source in shared.items():
        state[key] = state[source]
    for p in module.parameters():
        p.requires_grad_(False)
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    missing = list(_outside(dict.fromkeys(missing), [n for n, _ in _int4_names(module)]))
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
