"""Do two decoding backends give the same greedy answers, and where they do not, was it a near-tie?

Backends compute the same function with different kernels: a prompt padded to a 32-token bucket with a masked
attention kernel against the exact length with a causal one, fused or tuned reductions against cuBLAS. In
bf16 these round differently, and where an answer's two best next tokens are closer than that rounding,
greedy decoding may take either. Past the first differing token the answers are different texts, so only
the first divergence of each answer says anything about the backends.

For each answer that differs, the logits at its first differing position are recomputed by one uncached
forward over the prompt and the shared answer prefix (`AudioLLM.next_token_logits`). The margin between the
two backends' tokens is expressed in units of resolution: the spacing of numbers at the top logit, in the
coarser of the logits' and the LLM's dtype (bf16: 1/128 of the top logit's power of two; float32: 2^-23 of
it). A divergence within `NEAR_TIE_RESOLUTIONS` of those units is a near-tie; a larger one means the backends
compute different functions (a wrong mask, position or cache entry), which is what the GPU tests rule out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

# Rounding differences of bf16 kernels accumulate over the layers; eight steps of the top logit's spacing
# (bf16 logits in [8, 16): 0.5) separate near-ties from tokens a different computation chose.
NEAR_TIE_RESOLUTIONS = 8
KEPT = 50            # divergences listed in the summary (all are counted)


@dataclass
class Divergence:
    id: str
    position: int            # index of the first differing answer token
    reference_token: int     # -1: the reference answer stopped here
    token: int               # -1: this backend's answer stopped here
    margin: float            # reference logit of reference_token minus that of token
    resolution: float        # spacing of the logit dtype's numbers at the top logit

    @property
    def resolutions(self) -> float:
        return abs(self.margin) / self.resolution

    @property
    def near_tie(self) -> bool:
        return self.resolutions <= NEAR_TIE_RESOLUTIONS


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token of two answers (a stop counts as a token), or None if equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def resolution(logits: torch.Tensor, compute_dtype: torch.dtype | None = None) -> float:
    """The spacing of numbers at the largest logit's magnitude, in the coarser of the logits' dtype and the
    dtype the LLM computes in (a float32 output layer over bf16 hidden states resolves no finer than bf16)."""
    eps = max(torch.finfo(logits.dtype).eps, torch.finfo(compute_dtype or logits.dtype).eps)
    top = float(logits.float().abs().max())
    return eps * 2.0 ** math.floor(math.log2(max(top, torch.finfo(torch.float32).tiny)))


def coarsest_dtype(module: torch.nn.Module) -> torch.dtype:
    """The least precise floating dtype among `module`'s parameters: bf16 decoder layers under a float32
    output layer and embedding table (quant=bf16 skips them) compute in bf16."""
    dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()}
    return max(dtypes, key=lambda d: torch.finfo(d).eps, default=torch.float32)


class Agreement:
    """Answers of `backend` against those of `reference` on the same batches."""

    def __init__(self, backend: str, reference: str) -> None:
        self.backend, self.reference = backend, reference
        self.answers = 0
        self.divergences: list[Divergence] = []

    def add(self, model: Any, batch: dict[str, Any], reference_rows: list[list[int]], rows: list[list[int]]) -> None:
        self.answers += len(rows)
        firsts = {i: first_difference(ref, row) for i, (ref, row) in enumerate(zip(reference_rows, rows))}
        firsts = {i: t for i, t in firsts.items() if t is not None}
        if not firsts:
            return
        logits = model.next_token_logits(batch, {i: reference_rows[i][:t] for i, t in firsts.items()})
        stops = model.prompt.stop_ids
        compute_dtype = coarsest_dtype(model.llm)
        for i, t in firsts.items():
            row_logits = logits[i]
            ref_tok = reference_rows[i][t] if t < len(reference_rows[i]) else -1
            tok = rows[i][t] if t < len(rows[i]) else -1

            def logit(token: int) -> float:
                # an answer that stopped here chose its most likely stop token
                return float(row_logits[token] if token >= 0 else row_logits[stops].max())

            self.divergences.append(Divergence(str(batch["ids"][i]), t, ref_tok, tok, logit(ref_tok) - logit(tok),
                                               resolution(row_logits, compute_dtype)))

    def summary(self) -> dict[str, Any]:
        near = [d for d in self.divergences if d.near_tie]
        worst = max(self.divergences, key=lambda d: d.resolutions, default=None)
        return {
            "backend": self.backend, "reference": self.reference, "answers": self.answers,
            "identical": self.answers - len(self.divergences), "differ": len(self.divergences),
            "near_ties": len(near), "decisive": len(self.divergences) - len(near),
            "near_tie_resolutions": NEAR_TIE_RESOLUTIONS,
            "max_margin_resolutions": worst.resolutions if worst else None,
            "divergences": [{**asdict(d), "resolutions": d.resolutions}
                            for d in sorted(self.divergences, key=lambda d: -d.resolutions)[:KEPT]],
        }
