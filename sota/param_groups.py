"""Learning rates per group of trainable parameters: `param_groups` in the config, a list of
`{match: <glob over parameter names>, lr_scale: <factor of optimizer.lr>}`.

A parameter takes the first group whose glob matches its name (as `AudioLLMModule.named_parameters()` spells
it, e.g. `model.encoder.model.layers.0.fc1.down.weight`); the rest train at `optimizer.lr`. Pretrained tensors
that recovery fine-tunes (a low-rank encoder's factors) need a smaller step than adapters trained from zero:
at the adapters' rate they lose what the factorisation kept."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch


def validate(groups: Any, out: list[str]) -> None:
    """Append every problem of `param_groups` to `out`."""
    if groups is None:
        return
    if not isinstance(groups, Sequence) or isinstance(groups, str):
        out.append(f"param_groups must be a list of {{match: glob, lr_scale: number}}, got {groups!r}")
        return
    for i, g in enumerate(groups):
        where = f"param_groups[{i}]"
        if not isinstance(g, Mapping):
            out.append(f"{where} must be a mapping {{match: glob, lr_scale: number}}, got {g!r}")
            continue
        unknown = sorted(set(map(str, g)) - {"match", "lr_scale"})
        if unknown:
            out.append(f"{where}: unknown key(s) {', '.join(unknown)}; valid: match, lr_scale")
        if not isinstance(g.get("match"), str) or not g.get("match"):
            out.append(f"{where}.match must be a non-empty glob over parameter names, got {g.get('match')!r}")
        scale = g.get("lr_scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            out.append(f"{where}.lr_scale must be a number > 0 (a factor of optimizer.lr), got {scale!r}")


def split(named: Iterable[tuple[str, torch.nn.Parameter]], groups: Sequence[Mapping[str, Any]] | None,
          base_lr: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """torch optimizer param groups for the trainable parameters in `named`, and their record.

    A glob that matches no trainable parameter is an error: a misspelt pattern would otherwise leave those
    tensors at the base rate without a word."""
    groups = list(groups or [])
    members: list[list[torch.nn.Parameter]] = [[] for _ in groups]
    rest: list[torch.nn.Parameter] = []
    names: list[str] = []
    for name, p in named:
        if not p.requires_grad:
            continue
        names.append(name)
        i = next((i for i, g in enumerate(groups) if fnmatch.fnmatchcase(name, str(g["match"]))), None)
        (rest if i is None else members[i]).append(p)
    empty = [str(g["match"]) for g, ps in zip(groups, members) if not ps]
    if empty:
        example = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ValueError(f"param_groups: {', '.join(map(repr, empty))} match no trainable parameter "
                         f"(trainable: {len(names)}, e.g. {example})")
    out = [{"params": rest}] if rest else []
    record = [{"match": None, "lr": base_lr, "tensors": len(rest), "parameters": sum(p.numel() for p in rest)}]
    for g, ps in zip(groups, members):
        lr = base_lr * float(g["lr_scale"])
        out.append({"params": ps, "lr": lr})
        record.append({"match": str(g["match"]), "lr": lr, "tensors": len(ps),
                       "parameters": sum(p.numel() for p in ps)})
    return out, record
