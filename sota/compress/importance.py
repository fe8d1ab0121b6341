"""What pruning keeps: one calibration pass collecting activations, gradients (Taylor) or block influence, and the
channel and head scores computed from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sota.compress.surgery import Attn, Stack, attention_of, mlp_parts
from sota.models.audio_llm import IGNORE, AudioLLM
from sota.utils.batches import to_device


def loss(model: AudioLLM, batch: dict[str, Any]) -> torch.Tensor:
    if "input_ids" in batch:
        # Text-only calibration of the LLM (e.g. perplexity studies); audio batches go through the model.
        ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(ids))
        return model.llm(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, IGNORE),
                         use_cache=False).loss
    return model(batch)


def _plain(batch: dict[str, Any], mel_frames: int) -> dict[str, Any]:
    """The batch with the encoder on its plain path: every chunk of every clip through Whisper's whole context
    (`mel_frames` long), in clip order. Bucketing (mel_frames) and skipping silent chunks (num_chunks) run
    sub-batches whose rows the calibration hooks could not match to clips. A bucketed batch's mel is padded
    with silence as Whisper's log-mel has it: its floor, 8 decades (2.0 once scaled) below the chunk's loudest."""
    if "encoder_inputs" not in batch:
        return batch
    plain = {k: v for k, v in batch["encoder_inputs"].items() if k not in ("mel_frames", "num_chunks")}
    mel = plain["mel"]
    if mel.shape[-1] < mel_frames:
        floor = mel.amax(dim=(-2, -1), keepdim=True) - 2.0
        pad = floor.expand(*mel.shape[:-1], mel_frames - mel.shape[-1])
        plain["mel"] = torch.cat([mel, pad], dim=-1)
    return {**batch, "encoder_inputs": plain}


@dataclass
class Stats:
    sq: dict[tuple[str, int, str], torch.Tensor]        # "mlp": per-channel sum of squared down_proj/fc2 inputs;
                                                        # "attn": per-head sum of squared o_proj output blocks
    influence: dict[tuple[str, int], list[float]]       # [sum of (1 - cos(in, out)), tokens]
    grads: dict[int, torch.Tensor]                      # id(weight) -> loss gradient summed over batches


def taylor_params(stacks: list[Stack]) -> list[nn.Parameter]:
    params = []
    for st in stacks:
        for i, layer in enumerate(st.layers):
            if i in st.protected:
                continue
            ins, o = mlp_parts(st, layer, i)
            params += [lin.weight for lin in ins] + [o.weight]
            if st.heads:
                a = attention_of(st, layer, i)
                params += [a.q.weight, a.o.weight] + ([a.k.weight, a.v.weight] if a.n_q == a.n_kv else [])
    return params


def calibrate(model: AudioLLM, stacks: list[Stack], batches: list[dict[str, Any]], want: str) -> Stats:
    """One pass over the calibration batches collecting what `want` (activation|taylor|influence) needs."""
    stats = Stats({}, {}, {})
    state: dict[str, Any] = {"llm_mask": None, "frames": None}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def rows(stack: str, x: torch.Tensor) -> torch.Tensor:
        # Only real tokens count: left padding of the LLM batch and the zero-padded tail of Whisper's context
        # carry activations that say nothing about the channels.
        mask = None
        if stack == "llm" and state["llm_mask"] is not None and state["llm_mask"].shape == x.shape[:2]:
            mask = state["llm_mask"].bool()
        elif stack == "encoder" and state["frames"] is not None:
            # rows are every clip's chunks in order (see `_plain`): chunk j of a clip holds its frames j*T..(j+1)*T
            frames, (n, t) = state["frames"].to(x.device), x.shape[:2]
            if n % len(frames):
                raise RuntimeError(f"prune: the encoder ran {n} rows for {len(frames)} clips; cannot tell their frames")
            chunk = torch.arange(n // len(frames), device=x.device)[None] * t
            mask = torch.arange(t, device=x.device)[None] < (frames[:, None] - chunk).clamp(0, t).flatten()[:, None]
        return x[mask] if mask is not None else x.reshape(-1, x.shape[-1])

    def grab_mask(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        state["llm_mask"] = kwargs.get("attention_mask")

    def sq_hook(key: tuple[str, int, str]) -> Callable:
        def hook(_mod: nn.Module, args: tuple) -> None:
            x = rows(key[0], args[0].detach()).float()
            stats.sq[key] = stats.sq.get(key, 0) + (x * x).sum(0)
        return hook

    def head_hook(key: tuple[str, int, str], head_dim: int) -> Callable:
        def hook(mod: nn.Module, args: tuple) -> None:
            x = rows(key[0], args[0].detach()).float()
            w = mod.weight.detach().float()
            out = torch.stack([(x[:, h * head_dim:(h + 1) * head_dim] @ w[:, h * head_dim:(h + 1) * head_dim].T)
                               .pow(2).sum() for h in range(x.shape[1] // head_dim)])
            stats.sq[key] = stats.sq.get(key, 0) + out
        return hook

    def influence_hook(key: tuple[str, int]) -> Callable:
        def hook(_mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(rows(key[0], h_in.detach()).float(),
                                                        rows(key[0], h_out.detach()).float(), dim=-1)
            acc = stats.influence.setdefault(key, [0.0, 0])
            acc[0] += float((1 - cos).sum())
            acc[1] += cos.numel()
        return hook

    handles.append(model.llm.register_forward_pre_hook(grab_mask, with_kwargs=True))
    for st in stacks:
        for i, layer in enumerate(st.layers):
            if want == "influence":
                handles.append(layer.register_forward_hook(influence_hook((st.name, i)), with_kwargs=True))
            elif want == "activation" and i not in st.protected:
                handles.append(mlp_parts(st, layer, i)[1].register_forward_pre_hook(sq_hook((st.name, i, "mlp"))))
                if st.heads:
                    a = attention_of(st, layer, i)
                    handles.append(a.o.register_forward_pre_hook(head_hook((st.name, i, "attn"), a.head_dim)))

    params = taylor_params(stacks) if want == "taylor" else []
    flags = [p.requires_grad for p in params]
    was_training = model.training
    device = next(model.llm.parameters()).device
    encoder = any(st.name == "encoder" for st in stacks)
    model.eval()  # no dropout: importance must describe the model as it is used
    try:
        for p in params:
            p.requires_grad_(True)  # frozen weights still need gradients for Taylor scores
        for batch in batches:
            if encoder:
                batch = _plain(batch, 2 * model.encoder.total_frames)   # Whisper's convolutions halve the mel frames
            batch = to_device(batch, device)
            state["frames"] = batch.get("num_frames")
            if want == "taylor":
                with torch.enable_grad():
                    grads = torch.autograd.grad(loss(model, batch), params, allow_unused=True)
                for p, g in zip(params, grads):
                    if g is None:
                        raise RuntimeError("prune: the calibration loss does not depend on a weight being scored "
                                           f"({tuple(p.shape)}); is that part of the model bypassed?")
                    stats.grads[id(p)] = stats.grads.get(id(p), 0) + g.detach().float()
            else:
                with torch.no_grad():
                    loss(model, batch)
    finally:
        for h in handles:
            h.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    return stats



def mlp_scores(st: Stack, layer: nn.Module, i: int, importance: str, stats: Stats) -> torch.Tensor:
    ins, o = mlp_parts(st, layer, i)
    if importance == "activation":
        # Wanda on the down projection: a channel's contribution to the output is |W[:, c]| * ||x_c||.
        return stats.sq[(st.name, i, "mlp")].sqrt() * o.weight.detach().float().abs().sum(0)
    if importance == "taylor":
        # First-order Taylor: |w * dL/dw| summed over the channel's weights (as Torch-Pruning's TaylorImportance).
        return (sum((lin.weight.detach().float() * stats.grads[id(lin.weight)]).abs().sum(1) for lin in ins)
                + (o.weight.detach().float() * stats.grads[id(o.weight)]).abs().sum(0))
    return sum(lin.weight.detach().float().pow(2).sum(1) for lin in ins) + o.weight.detach().float().pow(2).sum(0)


def head_scores(st: Stack, att: Attn, i: int, importance: str, stats: Stats) -> torch.Tensor:
    """One score per query head (per head for multi-head attention, where k and v go with it)."""
    if importance == "activation":
        # A head's output is one block of o_proj's input: score it by the norm of what it adds to the residual
        # stream, ||W_o[:, head] x_head|| over calibration tokens (per-channel Wanda sums overrated heads: 299 vs
        # 243 perplexity on SmolLM2 at ratio 0.3).
        return stats.sq[(st.name, i, "attn")].sqrt()

    def term(w: torch.Tensor, dim: int) -> torch.Tensor:
        w32 = w.detach().float()
        return ((w32 * stats.grads[id(w)]).abs() if importance == "taylor" else w32.pow(2)).sum(dim)

    ch = term(att.q.weight, 1) + term(att.o.weight, 0)
    if att.n_q == att.n_kv:
        ch = ch + term(att.k.weight, 1) + term(att.v.weight, 1)
    return ch.view(att.n_q, att.head_dim).sum(1)


def top(scores: torch.Tensor, k: int) -> list[int]:
    return sorted(torch.topk(scores, k).indices.tolist())


def select_heads(scores: torch.Tensor, n_kv: int, q_keep: int, kv_keep: int) -> tuple[list[int], list[int]]:
    if q_keep == kv_keep and scores.numel() == n_kv:  # multi-head attention: whole heads
        kept = top(scores, kv_keep)
        return kept, kept
    group = scores.numel() // n_kv
    per = q_keep // n_kv
    kept = [g * group + j for g in range(n_kv) for j in top(scores[g * group:(g + 1) * group], per)]
    return kept, list(range(n_kv))
