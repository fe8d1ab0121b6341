"""Low-rank factorisation of the Whisper encoder's linears (`prune.method=lowrank`).

Each linear W [out, in] of every encoder layer (q, k, v, out projections, fc1, fc2) becomes `up(down(x))` of
rank r, with r chosen so the pair holds (1 - ratio) of W's parameters (rounded down to `round_to`). Linears
that a factorisation of that rank would not shrink keep their shape, and the report says which.

- `importance: activation` (LiteASR's way, arXiv 2502.20583): the rank-r subspace is the top principal
  directions of the layer's outputs on calibration batches, Y ~ mu + U_r U_r^T (Y - mu); so down = U_r^T W,
  up = U_r and the bias becomes U_r U_r^T (b - mu) + mu. The error is smallest on the activations the layer
  actually produces, which concentrate in few directions.
- `importance: magnitude`: the truncated SVD of W, without data.

The report keeps every factorised linear's rank, so `replay` rebuilds the same shapes on a fresh model, and
checkpoints keep the factors (`factor_names`): activation-aware ones depend on calibration data.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from sota.compress.surgery import n_params, set_module

log = logging.getLogger(__name__)

IMPORTANCES = ("activation", "magnitude")
# Whether recovery trains the factors: `frozen` keeps them as the frozen encoder they replace (training then
# adapts the LLM around them); `trained` lets recovery move them, the encoder's only trainable tensors.
FACTORS = ("frozen", "trained")


class LowRankLinear(nn.Module):
    """`up(down(x))`: a linear of rank `rank` in place of an [out, in] one."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def rank_for(lin: nn.Linear, ratio: float, round_to: int) -> int:
    """The rank that keeps (1 - ratio) of the linear's weights, down to a multiple of `round_to` (at least it)."""
    n, m = lin.out_features, lin.in_features
    r = int((1 - ratio) * n * m / (n + m))
    return max(round_to, r - r % round_to)


def targets(whisper: nn.Module) -> dict[str, nn.Linear]:
    """Every plain linear of the encoder's layers, by name under the encoder's Whisper module."""
    found = {}
    for name, mod in whisper.named_modules():
        if name.startswith("layers.") and type(mod) is nn.Linear:
            found[name] = mod
    return found


class _Outputs:
    """Running mean and uncentred second moment of one linear's outputs (float64)."""

    def __init__(self, width: int, device: torch.device) -> None:
        self.count = 0
        self.sum = torch.zeros(width, dtype=torch.float64, device=device)
        self.gram = torch.zeros(width, width, dtype=torch.float64, device=device)

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        y = output.detach().reshape(-1, output.shape[-1]).double()
        self.count += y.shape[0]
        self.sum += y.sum(0)
        self.gram += y.T @ y

    def principal(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(top `rank` principal directions [out, rank], mean [out]) of the outputs seen."""
        mean = self.sum / self.count
        cov = self.gram / self.count - torch.outer(mean, mean)
        _, vecs = torch.linalg.eigh(cov)          # ascending eigenvalues
        return vecs[:, -rank:].flip(-1), mean


def _calibrate(model: Any, linears: dict[str, nn.Linear], batches: list[dict]) -> dict[str, _Outputs]:
    stats = {name: _Outputs(lin.out_features, lin.weight.device) for name, lin in linears.items()}
    hooks = [lin.register_forward_hook(stats[name]) for name, lin in linears.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model.encoder(**batch["encoder_inputs"])
    finally:
        for h in hooks:
            h.remove()
    return stats


def _factors(lin: nn.Linear, rank: int, outputs: _Outputs | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(down [rank, in], up [out, rank], bias [out] or None) approximating `lin`."""
    w = lin.weight.detach().double()
    b = None if lin.bias is None else lin.bias.detach().double()
    if outputs is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return vh[:rank] * s[:rank, None], u[:, :rank], b
    basis, mean = outputs.principal(rank)
    bias = basis @ (basis.T @ ((b if b is not None else 0) - mean)) + mean
    return basis.T @ w, basis, bias


def factorise(model: Any, s: dict[str, Any], batches: list[dict]) -> dict[str, Any]:
    """Factorise the encoder's linears in place as the `prune` settings `s` say; the report's encoder section."""
    whisper = model.encoder.whisper
    before = n_params(whisper)
    linears = targets(whisper)
    ratio, round_to = float(s["ratio"]), int(s["round_to"])
    ranks = {name: rank_for(lin, ratio, round_to) for name, lin in linears.items()}
    kept_full = sorted(n for n, lin in linears.items() if ranks[n] * (lin.in_features + lin.out_features)
                       >= lin.in_features * lin.out_features)
    ranks = {n: r for n, r in ranks.items() if n not in kept_full}
    if not ranks:
        raise ValueError(f"prune.method=lowrank ratio={ratio}: no encoder linear shrinks at a rank that is a multiple "
                         f"of prune.round_to={round_to}; raise the ratio or lower round_to")
    stats = _calibrate(model, {n: linears[n] for n in ranks}, batches) if s["importance"] == "activation" else {}
    bias_added = []   # centring gives a bias-free linear (Whisper's k_proj) one: replay must know
    for name, rank in ranks.items():
        lin = linears[name]
        down, up, bias = _factors(lin, rank, stats.get(name))
        if bias is not None and lin.bias is None:
            bias_added.append(name)
        new = LowRankLinear(lin.in_features, lin.out_features, rank, bias is not None,
                            device=lin.weight.device, dtype=lin.weight.dtype)
        with torch.no_grad():
            new.down.weight.copy_(down)
            new.up.weight.copy_(up)
            if bias is not None:
                new.up.bias.copy_(bias)
        new.requires_grad_(lin.weight.requires_grad or s.get("factors") == "trained")
        set_module(whisper, name, new)
    after = n_params(whisper)
    targeted = sum(linears[n].weight.numel() for n in ranks)
    log.info("prune: encoder lowrank ratio=%s (%s): %d -> %d params, %d linears factorised, %d kept whole",
             ratio, s["importance"], before, after, len(ranks), len(kept_full))
    return {"params_before": before, "params_after": after, "achieved_ratio": round(1 - after / before, 6),
            "factorised_weights_ratio": round((before - after) / targeted, 6), "importance": s["importance"],
            "ranks": ranks, "bias_added": bias_added, "kept_full_rank": kept_full,
            "factors": s.get("factors", "frozen")}


def factor_names(root: nn.Module) -> set[str]:
    """Qualified names of every low-rank factor under `root` (what checkpoints keep beside trainable tensors)."""
    return {f"{name}.{p}" if name else p for name, mod in root.named_modules() if isinstance(mod, LowRankLinear)
            for p, _ in mod.named_parameters()}


def replay(model: Any, section: dict[str, Any]) -> None:
    """Rebuild the factorised shapes recorded in a report's encoder section on a freshly built model."""
    whisper = model.encoder.whisper
    linears = targets(whisper)
    missing = sorted(set(section["ranks"]) - set(linears))
    if missing:
        raise ValueError(f"prune.replay: the low-rank report names encoder linears this model lacks: {missing[:5]}")
    for name, rank in section["ranks"].items():
        lin = linears[name]
        bias = lin.bias is not None or name in section.get("bias_added", [])
        set_module(whisper, name, LowRankLinear(lin.in_features, lin.out_features, int(rank), bias,
                                                device=lin.weight.device, dtype=lin.weight.dtype))
    if n_params(whisper) != section["params_after"]:
        raise RuntimeError(f"prune.replay: the encoder has {n_params(whisper)} parameters after replay, the report "
                           f"says {section['params_after']}")
