"""Audio-token merging inside the LLM (`tokens=merge`): before decoder layer `layer`, the most similar
neighbouring audio tokens are averaged into one, so that layer, every later one, their KV caches and their
attention see fewer audio tokens. By default (`training: none`) it is training-free: prompts are merged at
generation only. With `training: merge` the teacher-forced forwards (recovery training's loss, calibration)
merge the same way, so recovery adapts the LLM to the merged tokens.

Neighbours are scored by the cosine similarity of their hidden states at that layer, and the `1 - keep` share
of a clip's audio tokens goes, most similar neighbours first. `grouping` says which neighbours may merge:
- `pairs`: only (audio token 2i, audio token 2i + 1) of each clip, one merge per pair (bipartite merging as in
  ToMe, Bolya et al. 2023; FastAdaSP merges neighbouring speech tokens the same way): at most half go;
- `runs`: any two adjacent audio tokens, so a run of similar ones (a pause, a held vowel) becomes one token
  while dissimilar neighbours all stay (adjacent token merging, A-ToMe, Li et al. 2023).
A merged token is the mean of its group, at the group's last position. `attention: proportional` adds
log(group size) to the attention logits towards it in every later layer (ToMe's proportional attention), so
it draws the attention its members drew together instead of one token's share.

Text tokens are never touched. Each row of a batch merges its own share: the batch stays rectangular by
removing, in every row, as many positions as the row that merges fewest, and the rest of a row's merged-away
tokens stay in place masked out like padding, so a clip's answer does not depend on its batch. (Where a layer
gets no 4D mask to hide them in, every row merges the fewest; the record says how often.) The record counts
the merged tokens per clip and, apart, the positions hidden rather than removed; teacher-forced forwards are
counted apart from generation's prefills.

Mechanics: forward pre-hooks on the decoder layers from `layer` on. At the prefill of a prompt (or the one
forward of a teacher-forced sequence) the hook of `layer` merges and remembers which positions stayed
(`kept`); the later layers' hooks cut their attention mask, rotary tables and position ids to those
positions. The LLM's logits then cover the kept positions only: `scored` lines the labels up with them and
computes the loss. Keys and values of layers before `layer` keep every position, so each layer's cache has
its own length; on a decode step the hooks keep the mask's columns of the positions their own cache holds.
Generation needs a cache whose layers grow independently (transformers' dynamic cache:
`generate.backend=eager`) and one beam.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

METHODS = ("none", "merge")
TRAINING = ("none", "merge")   # teacher-forced forwards: unmerged, or merged as at generation
# transformers sizes a decode step's attention mask by layer 0's cache, so generation needs that cache to keep
# every position: merging before layer 0 serves teacher-forced forwards only.
FIRST_LAYER = 1
GROUPING = ("pairs", "runs")   # which neighbours may merge: disjoint pairs, or runs of adjacent tokens
ATTENTION = ("plain", "proportional")   # a merged token's attention logits: as one token, or + log(its size)


def validate(cfg: Any, generate: Any, out: list[str], recover: str = "lora") -> None:
    """Problems of the `tokens` group; `recover`: the recovery method (distillation cannot see merged tokens)."""
    if cfg is None:
        return
    method = cfg.get("method", "none")
    if method not in METHODS:
        out.append(f"tokens.method must be one of {', '.join(METHODS)}; got {method!r}")
        return
    training = cfg.get("training", "none")
    if training not in TRAINING:
        out.append(f"tokens.training must be one of {', '.join(TRAINING)} (none: merge at generation only; merge: "
                   f"training forwards merge too); got {training!r}")
    elif training == "merge" and method == "none":
        out.append("tokens.training=merge merges audio tokens in training: it needs tokens=merge")
    elif training == "merge" and recover == "distill":
        out.append("tokens.training=merge cannot train with recover=distill: distillation compares the student's "
                   "logits with the unmerged teacher's position by position; use recover=lora or "
                   "tokens.training=none")
    if method == "none":
        return
    grouping, attention = cfg.get("grouping", "pairs"), cfg.get("attention", "plain")
    if grouping not in GROUPING:
        out.append(f"tokens.grouping must be one of {', '.join(GROUPING)} (pairs: disjoint neighbour pairs; runs: "
                   f"runs of adjacent tokens); got {grouping!r}")
    if attention not in ATTENTION:
        out.append(f"tokens.attention must be one of {', '.join(ATTENTION)} (proportional: + log(group size) on "
                   f"the attention logits towards a merged token); got {attention!r}")
    keep, layer = cfg.get("keep"), cfg.get("layer")
    low = 0.5 if grouping == "pairs" else 0.0
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not low <= keep < 1 or keep == 0:
        what = "[0.5, 1) (the share of audio tokens kept; one merge per pair)" if grouping == "pairs" else \
            "(0, 1) (the share of audio tokens kept)"
        out.append(f"tokens.keep must be in {what}, got {keep!r}")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < FIRST_LAYER:
        out.append(f"tokens.layer must be a decoder layer index >= {FIRST_LAYER} (merging happens before it; layer 0 "
                   f"keeps every position because transformers sizes decode steps' masks by its cache), got {layer!r}")
    if generate is not None:
        backend, beams = generate.get("backend", "eager"), generate.get("num_beams", 1)
        if backend != "eager" or beams != 1:
            out.append(f"tokens=merge gives each layer's KV cache its own length: it needs generate.backend=eager "
                       f"and generate.num_beams=1 (got backend={backend}, num_beams={beams})")


def _gather(t: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """`t` at positions `index` [B, K] along `dim` (t's batch dim 0 is broadcast to B when it is 1)."""
    b = index.shape[0]
    if t.shape[0] != b:
        t = t.expand(b, *t.shape[1:])
    shape = [b] + [1] * (t.dim() - 1)
    shape[dim] = index.shape[1]
    idx = index.reshape(shape).expand(*[t.shape[i] if i not in (0, dim) else shape[i] for i in range(t.dim())])
    return t.gather(dim, idx)


class TokenMerger:
    """The hooks of one LLM, and what they merged."""

    def __init__(self, llm: nn.Module, keep: float, layer: int, training: str = "none", grouping: str = "pairs",
                 attention: str = "plain") -> None:
        decoder = llm.get_decoder() if hasattr(llm, "get_decoder") else llm.model
        layers = decoder.layers
        if layer >= len(layers):
            raise ValueError(f"tokens.layer={layer}: the LLM has {len(layers)} decoder layers (0..{len(layers) - 1})")
        for key, value, valid in (("training", training, TRAINING), ("grouping", grouping, GROUPING),
                                  ("attention", attention, ATTENTION)):
            if value not in valid:
                raise ValueError(f"tokens.{key} must be one of {', '.join(valid)}; got {value!r}")
        self.keep, self.layer, self.training = float(keep), int(layer), training
        self.grouping, self.attention = grouping, attention
        self.size: torch.Tensor | None = None        # [B, L - r] group size per kept position (proportional only)
        self.audio_at: torch.Tensor | None = None    # [B, L] of the prompt (or teacher-forced sequence) to merge
        self.teacher_forced = False                  # whether audio_at belongs to a sequence with answers
        self.kept: torch.Tensor | None = None        # [B, L - r] positions that stayed, after a prefill
        self.hide: torch.Tensor | None = None        # [B, L - r] of those, merged away but kept as masked columns
        self.prompt_len = 0
        self._cut_memo: tuple[tuple, dict] | None = None   # this forward's cut (_hook)
        self.stats = self._counters()             # generation's prefills
        self.forced_stats = self._counters()      # teacher-forced forwards (tokens.training=merge)
        # Layer 0 sees every forward first: a new sequence (more than one query) forgets the last prefill's cut.
        self.handles = [layers[0].register_forward_pre_hook(self._start, with_kwargs=True)]
        self.handles += [layers[i].register_forward_pre_hook(self._hook(i), with_kwargs=True)
                         for i in range(self.layer, len(layers))]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    @staticmethod
    def _counters() -> dict[str, int]:
        return {"prefills": 0, "audio_tokens": 0, "merged": 0, "hidden": 0, "uniform_prefills": 0}

    @staticmethod
    def _summary(stats: dict[str, int]) -> dict[str, Any]:
        seen = stats["audio_tokens"]
        return {**stats, "kept_ratio": round(1 - stats["merged"] / seen, 4) if seen else None}

    def record(self) -> dict[str, Any]:
        """Generation's counts at the top level; with training=merge, the teacher-forced forwards' (training
        steps, calibration) under `teacher_forced`, where `prefills` counts forwards."""
        out = {"method": "merge", "keep": self.keep, "layer": self.layer, "training": self.training,
               "grouping": self.grouping, "attention": self.attention, **self._summary(self.stats)}
        if self.training == "merge":
            out["teacher_forced"] = self._summary(self.forced_stats)
        return out

    def arm(self, is_audio: torch.Tensor, teacher_forced: bool) -> None:
        """Merge the audio positions `is_audio` [B, L] of the next forward: a generation prompt, or (only with
        training=merge) a teacher-forced sequence."""
        if teacher_forced and self.training != "merge":
            return
        self.audio_at, self.teacher_forced = is_audio, teacher_forced

    def scored(self, out: Any, labels: torch.Tensor, ignore: int) -> tuple[Any, torch.Tensor]:
        """A teacher-forced forward's output with the loss, and its labels, on the positions its logits cover.

        After a merge the logits are those of the kept positions (`kept`, in order); the labels are taken at
        the same positions. Answer tokens and the text before them are never merged, and a clip's last audio
        token is never merged away (it is the last of its group), so the kept position before an
        answer token is the original one before it: shifting by one along the kept positions pairs each answer
        token with the logits that predict it, as the unmerged loss does."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if self.kept is not None:
            labels = labels.gather(1, self.kept.to(labels.device))
        logits = out.logits
        if labels.shape[1] != logits.shape[1]:
            raise RuntimeError(f"tokens.training=merge: {logits.shape[1]} logits per row but {labels.shape[1]} "
                               "labels: the merge's kept positions do not describe this forward")
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=ignore)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states), labels

    # -- merging -----------------------------------------------------------------------------------------
    def _merge(self, hidden: torch.Tensor, per_row: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(reduced hidden states, kept positions [B, L - r], of those the merged-away ones to mask or None, the
        group size of each kept position or None). `per_row`: each row merges its own share (needs a 4D mask
        to hide the surplus); else the fewest."""
        audio = self.audio_at.to(hidden.device)
        b, length = audio.shape
        counts = audio.sum(1)
        cap = counts // 2 if self.grouping == "pairs" else (counts - 1).clamp(min=0)   # merges a clip allows
        share = torch.minimum(torch.floor((1 - self.keep) * counts.float()).long(), cap)   # [B]
        if not per_row:
            share = share.min().expand(b)
        r, r_max = int(share.min().item()), int(share.max().item())
        stats = self.forced_stats if self.teacher_forced else self.stats
        stats["prefills"] += 1
        stats["audio_tokens"] += int(counts.sum())
        stats["uniform_prefills"] += int(not per_row and b > 1)
        every = torch.arange(length, device=hidden.device).expand(b, length)
        if r_max <= 0:
            return hidden, every, None, None
        # Audio positions of each row, in order (a row's missing ones at `length`); edge j joins audio token j
        # to j + 1, and a chosen edge merges token j into j + 1's group.
        n = int(counts.max())
        order = torch.where(audio, torch.arange(length, device=audio.device), length).sort(1).values[:, :n]
        src, dst = order[:, :-1], order[:, 1:]                                         # [B, n - 1]
        real = dst < length
        if self.grouping == "pairs":
            real &= torch.arange(n - 1, device=real.device) % 2 == 0
        h_src, h_dst = _gather(hidden, src.clamp(max=length - 1), 1), _gather(hidden, dst.clamp(max=length - 1), 1)
        sim = F.cosine_similarity(h_src.float(), h_dst.float(), dim=-1).masked_fill(~real, float("-inf"))
        chosen = sim.topk(r_max, dim=1).indices                                       # [B, r_max], best first
        valid = torch.arange(r_max, device=hidden.device)[None] < share[:, None]    # a row's own share
        joins = torch.zeros_like(real).scatter(1, chosen, valid)                      # [B, n - 1]
        # Groups along each row's audio tokens: a token starts one unless the edge before it joins it in.
        starts = torch.cat([torch.ones_like(joins[:, :1]), ~joins], 1)                 # [B, n]
        group = starts.long().cumsum(1) - 1
        tokens = _gather(hidden, order.clamp(max=length - 1), 1).float()             # [B, n, D]
        sums = torch.zeros_like(tokens).scatter_add(1, group[..., None].expand_as(tokens), tokens)
        sizes = torch.zeros(b, n, device=hidden.device).scatter_add(1, group, torch.ones(b, n, device=hidden.device))
        mean, size = _gather(sums / sizes.clamp(min=1)[..., None], group, 1), sizes.gather(1, group)
        # Every member takes its group's mean and size (the merged-away ones are removed or hidden below); a
        # row's missing tokens write into one extra position that is cut off again.
        pad = F.pad(hidden, (0, 0, 0, 1))
        hidden = pad.scatter(1, order[..., None].expand(-1, -1, hidden.shape[-1]), mean.to(hidden.dtype))[:, :length]
        # Merged-away positions, best first; a row's picks beyond its share point at the extra position.
        drop = torch.where(valid, src.gather(1, chosen), length)
        rows = torch.arange(b, device=hidden.device)[:, None]
        keep = torch.ones(b, length + 1, dtype=torch.bool, device=hidden.device)
        keep[rows, drop[:, :r]] = False                                               # removed in every row
        kept = torch.where(keep[:, :length], every, length).sort(1).values[:, :length - r]
        surplus = torch.zeros(b, length + 1, dtype=torch.bool, device=hidden.device)
        surplus[rows, drop[:, r:]] = True
        hide = surplus[:, :length].gather(1, kept) if r_max > r else None
        stats["merged"] += int(share.sum())
        stats["hidden"] += int(share.sum()) - r * b
        if self.attention == "proportional":   # each kept position's group size (1 outside the audio)
            size = torch.ones(b, length + 1, device=hidden.device).scatter(1, order, size)[:, :length].gather(1, kept)
        else:
            size = None
        return _gather(hidden, kept, 1), kept, hide, size

    def _start(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._cut_memo = None
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] > 1:
            self.kept, self.hide, self.size = None, None, None
            if self.audio_at is not None and self.audio_at.shape[1] != hidden.shape[1]:
                self.audio_at = None    # not the prompt it was set for

    def _hook(self, i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            hidden = args[0] if args else kwargs["hidden_states"]
            if i == self.layer and hidden.shape[1] > 1 and self.audio_at is not None:
                self.prompt_len = hidden.shape[1]
                mask = kwargs.get("attention_mask")
                hidden, self.kept, self.hide, self.size = self._merge(
                    hidden, isinstance(mask, torch.Tensor) and mask.dim() == 4)
                self.audio_at = None
                args, kwargs = self._with_hidden(args, kwargs, hidden)
            if self.kept is None or (self.kept.shape[1] == self.prompt_len and self.hide is None
                                     and self.size is None):
                return args, kwargs
            if i < FIRST_LAYER and hidden.shape[1] == 1:
                raise RuntimeError(f"tokens.layer={self.layer}: a decode step needs layer 0's KV cache to keep every "
                                   f"position (transformers sizes its attention mask by it); merge from layer "
                                   f"{FIRST_LAYER} on to generate")
            # Within one forward every layer from `layer` on gets the same mask, rotary tables and cache length,
            # so the cut is made once: a decode step would otherwise rebuild its mask in each of those layers.
            # A model whose layers get different masks (sliding-window layers) passes other objects: cut again.
            key = (id(kwargs.get("attention_mask")), id(kwargs.get("position_embeddings")), hidden.shape[1])
            if self._cut_memo is None or self._cut_memo[0] != key:
                self._cut_memo = (key, self._cut(kwargs, hidden, i))
            return args, {**kwargs, **self._cut_memo[1]}
        return hook

    @staticmethod
    def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _cut(self, kwargs: dict, hidden: torch.Tensor, i: int) -> dict:
        """The kwargs layer `i` gets changed, as its cache holds only the kept prompt positions."""
        kept, out, q_len = self.kept, {}, hidden.shape[1]
        prefill = q_len == kept.shape[1]
        if prefill:
            cos, sin = kwargs["position_embeddings"]
            out["position_embeddings"] = (_gather(cos, kept, 1), _gather(sin, kept, 1))
            if kwargs.get("position_ids") is not None:
                out["position_ids"] = _gather(kwargs["position_ids"], kept, 1)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            total = mask.shape[-1]
            cols = torch.cat([kept, torch.arange(self.prompt_len, total, device=kept.device).expand(kept.shape[0], -1)], 1)
            mask = _gather(mask, cols, 3)
            if prefill:
                mask = _gather(mask, kept, 2)
            if self.hide is not None:   # a row's surplus merged-away tokens: nobody attends to them
                hide = F.pad(self.hide, (0, mask.shape[-1] - self.hide.shape[1]))[:, None, None, :]
                mask = mask.masked_fill(hide, False) if mask.dtype == torch.bool else \
                    mask.masked_fill(hide, torch.finfo(mask.dtype).min)
        elif mask is None and self.size is not None:
            mask = self._full_mask(kwargs, hidden, i, prefill)
        if self.size is not None:   # proportional attention: + log(group size) towards each kept prompt position
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(hidden.dtype).min)
            bias = F.pad(self.size.log(), (0, mask.shape[-1] - self.size.shape[1]))[:, None, None, :]
            mask = mask + bias.to(mask.dtype)
        if mask is not None:
            out["attention_mask"] = mask
        return out

    def _full_mask(self, kwargs: dict, hidden: torch.Tensor, i: int, prefill: bool) -> torch.Tensor:
        """The additive mask transformers left out (no padding: it lets attention be plainly causal), built so
        proportional attention has logits to add to: causal over the kept prompt at the prefill, every cached
        position on a decode step."""
        q_len, dtype = hidden.shape[1], hidden.dtype
        if prefill:
            return torch.full((q_len, q_len), torch.finfo(dtype).min, dtype=dtype, device=hidden.device
                              ).triu(1)[None, None]
        # The KV cache, under the name this transformers version gives it (past_key_values, cache, ...).
        cache = next((v for v in kwargs.values() if hasattr(v, "get_seq_length")), None)
        if cache is None:
            raise RuntimeError("tokens.attention=proportional: a decode step reached layer "
                               f"{i} without an attention mask or a KV cache to size one")
        total = cache.get_seq_length(i) + q_len
        return torch.zeros(hidden.shape[0], 1, q_len, total, dtype=dtype, device=hidden.device)
