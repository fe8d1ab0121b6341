"""Fully sharded data parallel (FSDP2, `torch.distributed.fsdp.fully_shard`) of an AudioLLM for trainer=fsdp.

Each transformer layer (of the LLM always, of the encoder when it trains) becomes one unit whose parameters
every rank holds a 1/world shard of, gathered for its forward and backward and freed after; gradients of
trained tensors are reduce-scattered, so every trained tensor must sit in a unit. The frozen base is sharded
with its layers, which is what lets a model too large for one device's memory train on several. FSDP2 shards
per parameter, so frozen bf16 weights and float32 adapters share a unit.

Sharded parameters are gathered by the forward of their unit and of the model, so training (the model's
forward) runs sharded; generation does not go through the model's forward, which is why trainer=fsdp does
not validate during training and rank zero evaluates the model rebuilt whole (sota/tasks.py)."""

from __future__ import annotations

from typing import Any

from torch import nn

from sota.models.blocks import transformer_layers


def _trains(mod: nn.Module) -> bool:
    return any(p.requires_grad for p in mod.parameters())


def shard(model: nn.Module, mesh: Any) -> dict[str, Any]:
    """Shard `model` (an AudioLLM) over `mesh` in place; returns what was sharded, for results.json."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    units: list[nn.Module] = list(transformer_layers(model.llm))
    if _trains(model.encoder):
        units += transformer_layers(model.encoder)
    if _trains(model.connector):
        units.append(model.connector)
    if not units:
        raise ValueError("trainer=fsdp found no transformer layers to shard (no ModuleList named `layers`)")
    for unit in units:
        fully_shard(unit, mesh=mesh)
    # The model itself is the root unit FSDP2 needs. It holds the trained tensors outside the layers (the `tiny`
    # preset trains its token table, head and final norm; a table tied to the head stays one tensor); frozen
    # ones outside the layers are left out of it, whole on every rank.
    frozen = {p for p in model.parameters() if not isinstance(p, DTensor) and not p.requires_grad}
    fully_shard(model, mesh=mesh, ignored_params=frozen)
    loose = [n for n, p in model.named_parameters() if p.requires_grad and not isinstance(p, DTensor)]
    if loose:
        raise ValueError(f"trainer=fsdp: {len(loose)} trained tensor(s) sit outside the sharded layers and the "
                         f"connector (e.g. {loose[0]}), so their gradients would not be averaged across ranks; "
                         "train them with trainer=ddp, or freeze them")
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    return {"strategy": "fsdp2", "world_size": int(mesh.size()), "units": len(units),
            "params_total": total, "params_local": local, "sharded_fraction": round(
                sum(p.numel() for p in params if isinstance(p, DTensor)) / total, 6)}
