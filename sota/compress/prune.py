"""Structured pruning of an AudioLLM: width (LLM MLP channels and query heads per KV group, Whisper MLP
channels) or depth (whole layers ranked by block influence), reported as JSON from which `replay` rebuilds the
pruned shapes on a freshly built model so that a saved state_dict loads into it."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sota.compress.plan import enabled
from sota.models.audio_llm import IGNORE, AudioLLM

log = logging.getLogger(__name__)

METHODS = ("none", "width", "depth")
IMPORTANCES = ("activation", "taylor", "magnitude")
TARGETS = ("llm", "encoder")
DEFAULTS: dict[str, Any] = {
    "method": "none", "ratio": 0.0, "targets": ["llm"], "importance": "activation", "protected_layers": [0],
    "round_to": 8, "prune_heads": True, "calib_batches": 4,
}


# ---------------------------------------------------------------------------------------------- settings

def _settings(cfg: DictConfig | dict | None) -> dict[str, Any]:
    raw = {} if cfg is None else (OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig)
                                  else dict(cfg))
    return {**DEFAULTS, **raw}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _needs_data(s: dict[str, Any]) -> bool:
    return s["method"] == "depth" or (s["method"] == "width" and s["importance"] != "magnitude")


def validate(cfg: DictConfig | None, out: list[str]) -> None:
    """Append one message per problem in the `prune` config; needs no model (see `check_model` for that)."""
    if cfg is None:
        return
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        out.append(f"prune: unknown key(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **raw}
    if s["method"] not in METHODS:
        out.append(f"prune.method must be one of {', '.join(METHODS)}; got {s['method']!r}")
    ratio = s["ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        out.append(f"prune.ratio must be a fraction in [0, 1) (the share of structure removed), got {ratio!r}")
    elif s["method"] != "none" and ratio == 0:  # a point labelled pruned that is not would mislead a frontier
        out.append(f"prune.ratio=0 with prune.method={s['method']} prunes nothing; use prune=none for no pruning "
                   "or a ratio in (0, 1)")
    targets = s["targets"]
    if (not isinstance(targets, list) or not targets or any(t not in TARGETS for t in targets)
            or len(set(targets)) != len(targets)):
        out.append(f"prune.targets must be a non-empty subset of [{', '.join(TARGETS)}] without repeats, "
                   f"got {targets!r}")
    if s["importance"] not in IMPORTANCES:
        out.append(f"prune.importance must be one of {', '.join(IMPORTANCES)}; got {s['importance']!r}")
    prot = s["protected_layers"]
    if not isinstance(prot, list) or not all(_is_int(i) for i in prot):
        out.append(f"prune.protected_layers must be a list of decoder layer indices, got {prot!r}")
    if not _is_int(s["round_to"]) or s["round_to"] < 1:
        out.append(f"prune.round_to must be an integer >= 1 (kept channels are a multiple of it), "
                   f"got {s['round_to']!r}")
    if not isinstance(s["prune_heads"], bool):
        out.append(f"prune.prune_heads must be true or false, got {s['prune_heads']!r}")
    calib = s["calib_batches"]
    if not _is_int(calib) or calib < 0:
        out.append(f"prune.calib_batches must be an integer >= 0, got {calib!r}")
    elif calib < 1 and s["method"] in METHODS and s["importance"] in IMPORTANCES and _needs_data(s):
        why = "method=depth" if s["method"] == "depth" else f"importance={s['importance']}"
        out.append(f"prune.calib_batches must be >= 1 for {why} (it scores structure on calibration data), got 0")


# ---------------------------------------------------------------------------------------------- model access

@dataclass
class _Stack:
    """One transformer stack to prune (the LLM decoder or the Whisper encoder) and where its parts live."""

    name: str                 # "llm" | "encoder": the report section and the prefix of messages
    root: nn.Module           # what params_before/after count
    holder: nn.Module         # owns `.layers`
    config: Any
    layers_key: str           # config key holding the number of layers
    ffn_key: str              # config key holding the MLP width
    protected: frozenset[int]
    heads: bool               # query-head pruning applies (the LLM only)

    @property
    def layers(self) -> nn.ModuleList:
        return self.holder.layers


def _linear(module: nn.Module, attr: str, where: str) -> nn.Linear:
    lin = getattr(module, attr, None)
    # Exact nn.Linear: LoRA wrappers and quantized linears cannot be sliced, so pruning must come first.
    if type(lin) is not nn.Linear:
        raise ValueError(f"prune: {where}.{attr} is {type(lin).__name__}, not a plain nn.Linear; structured "
                         "pruning supports Llama-family decoders and Whisper encoders and must run before LoRA "
                         "or quantization")
    return lin


def _mlp_parts(stack: _Stack, layer: nn.Module, i: int) -> tuple[list[nn.Linear], nn.Linear]:
    """(linears whose output channels are the MLP channels, the linear reading them)."""
    where = f"{stack.name} layer {i}"
    if stack.name == "llm":
        mlp = getattr(layer, "mlp", None)
        if mlp is None:
            raise ValueError(f"prune: {where} has no `.mlp`; width pruning supports Llama-family decoders")
        return [_linear(mlp, "gate_proj", where + ".mlp"), _linear(mlp, "up_proj", where + ".mlp")], \
            _linear(mlp, "down_proj", where + ".mlp")
    return [_linear(layer, "fc1", where)], _linear(layer, "fc2", where)


@dataclass
class _Attn:
    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int

    @property
    def n_q(self) -> int:
        return self.q.out_features // self.head_dim

    @property
    def n_kv(self) -> int:
        return self.k.out_features // self.head_dim


def _attn(stack: _Stack, layer: nn.Module, i: int) -> _Attn:
    where = f"{stack.name} layer {i}.self_attn"
    attn = getattr(layer, "self_attn", None)
    if attn is None:
        raise ValueError(f"prune: {stack.name} layer {i} has no `.self_attn`")
    names = ("q_proj", "k_proj", "v_proj", "o_proj") if stack.name == "llm" else ("q_proj", "k_proj", "v_proj",
                                                                                  "out_proj")
    q, k, v, o = (_linear(attn, n, where) for n in names)
    head_dim = getattr(attn, "head_dim", None) or q.out_features // stack.config.num_attention_heads
    return _Attn(attn, q, k, v, o, int(head_dim))


def _stack(model: AudioLLM, name: str, s: dict[str, Any]) -> _Stack:
    if name == "llm":
        llm = model.llm
        holder = llm.get_decoder() if hasattr(llm, "get_decoder") else getattr(llm, "model", None)
        if holder is None or not isinstance(getattr(holder, "layers", None), nn.ModuleList):
            raise ValueError(f"prune.targets=llm: {type(llm).__name__} has no decoder `.layers` list; "
                             "pruning supports Llama-family causal LMs")
        n = len(holder.layers)
        protected = set()
        for i in s["protected_layers"]:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ValueError(f"prune.protected_layers: layer {i} does not exist (the llm has {n} decoder layers)")
            protected.add(j)
        return _Stack("llm", llm, holder, holder.config, "num_hidden_layers", "intermediate_size",
                      frozenset(protected), heads=bool(s["prune_heads"]))
    whisper = getattr(model.encoder, "whisper", None)
    if whisper is None or not isinstance(getattr(whisper, "layers", None), nn.ModuleList):
        raise ValueError("prune.targets=encoder: the model's encoder has no Whisper `.whisper.layers`")
    # protected_layers names LLM decoder layers; no Whisper layer is known to be fragile.
    return _Stack("encoder", whisper, whisper, whisper.config, "encoder_layers", "encoder_ffn_dim",
                  frozenset(), heads=False)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() skips tied duplicates


# ---------------------------------------------------------------------------------------------- plans

def _round_half_up(x: float) -> int:
    # Python's round() rounds 2.5 to 2; the thresholds printed in messages assume half-up.
    return int(math.floor(x + 0.5))


def _keep_channels(n: int, ratio: float, multiple: int) -> int:
    target = n * (1 - ratio)
    if multiple > 1 and n >= multiple:
        return max(multiple, min(n, multiple * _round_half_up(target / multiple)))
    return max(1, min(n, _round_half_up(target)))


@dataclass
class _LayerPlan:
    """How many MLP channels / query heads / KV heads one layer keeps (None: untouched)."""

    mlp: int | None = None
    q: int | None = None
    kv: int | None = None


WHERE = "\0where\0"  # placeholder for the layers a message applies to


def _plan_heads(att: _Attn, ratio: float, issues: dict[str, list[int]], i: int) -> tuple[int, int] | None:
    n_q, n_kv = att.n_q, att.n_kv
    group = n_q // n_kv
    counts = f"{WHERE} {n_q} query heads and {n_kv} KV heads"
    msg = None
    if group > 1:
        # GQA: query head h reads KV head h // group, so every group must keep the same number of query heads;
        # all KV heads stay (a group only disappears with its KV head, which needs every query head of it gone).
        keep = _round_half_up(group * (1 - ratio))
        if keep == 0:
            msg = (f"prune.ratio={ratio} would remove every query head of each KV group ({counts}: {group} per "
                   f"group, round({group} x {1 - ratio:.3g}) = 0 kept); use prune.ratio < {1 - 0.5 / group:.3g} or "
                   "prune.prune_heads=false")
        elif keep == group:
            msg = (f"prune.ratio={ratio} prunes no attention heads ({counts}: {group} per group, round({group} x "
                   f"{1 - ratio:.3g}) = {group} kept); use prune.ratio > {0.5 / group:.3g} or prune.prune_heads=false")
        plan = (keep * n_kv, n_kv)
    else:
        # Multi-head attention: a head is its own KV group, so whole heads (q, k, v, o) go.
        keep = _round_half_up(n_kv * (1 - ratio))
        if keep == 0:
            msg = (f"prune.ratio={ratio} would remove every attention head ({counts}: round({n_kv} x "
                   f"{1 - ratio:.3g}) = 0 kept); use prune.ratio < {1 - 0.5 / n_kv:.3g} or prune.prune_heads=false")
        elif keep == n_kv:
            msg = (f"prune.ratio={ratio} prunes no attention heads ({counts}: round({n_kv} x {1 - ratio:.3g}) = "
                   f"{n_kv} kept); use prune.ratio > {0.5 / n_kv:.3g} or prune.prune_heads=false")
        plan = (keep, keep)
    if msg is not None:
        issues.setdefault(msg, []).append(i)
        return None
    return plan


def _plan_width(stack: _Stack, s: dict[str, Any], out: list[str]) -> list[_LayerPlan]:
    ratio, plans = float(s["ratio"]), []
    issues: dict[str, list[int]] = {}  # message -> layers: layers of one shape share one message
    for i, layer in enumerate(stack.layers):
        if i in stack.protected:
            plans.append(_LayerPlan())
            continue
        ins, _ = _mlp_parts(stack, layer, i)
        n = ins[0].out_features
        keep = _keep_channels(n, ratio, s["round_to"])
        if keep == n:
            issues.setdefault(f"prune.ratio={ratio} prunes no MLP channels ({WHERE} {n} channels; {n} x "
                              f"{1 - ratio:.3g} rounds to {keep} kept with prune.round_to={s['round_to']})",
                              []).append(i)
        plan = _LayerPlan(mlp=keep)
        if stack.heads:
            heads = _plan_heads(_attn(stack, layer, i), ratio, issues, i)
            if heads is not None:
                plan.q, plan.kv = heads
        plans.append(plan)
    for msg, layers in issues.items():
        where = (f"{stack.name} layer {layers[0]} has" if len(layers) == 1 else
                 f"{stack.name} layers {', '.join(map(str, layers))} have")
        out.append(msg.replace(WHERE, where))
    if all(p.mlp is None for p in plans):
        out.append(f"prune.protected_layers={sorted(stack.protected)} protects every {stack.name} layer: nothing "
                   "to prune")
    return plans


def _plan_depth(stack: _Stack, ratio: float, out: list[str]) -> int:
    n = len(stack.layers)
    remove = _round_half_up(ratio * n)
    free = n - len(stack.protected)
    if remove == 0:
        out.append(f"prune.ratio={ratio} removes round({ratio} x {n}) = 0 of the {n} {stack.name} layers; use "
                   f"prune.ratio >= {0.5 / n:.3g}")
    elif remove >= n:
        out.append(f"prune.ratio={ratio} would remove all {n} {stack.name} layers (round({ratio} x {n}) = {remove})")
    elif remove > free:
        out.append(f"prune.ratio={ratio} removes {remove} of {n} {stack.name} layers but only {free} are not in "
                   f"prune.protected_layers={sorted(stack.protected)}")
    return remove


def check_model(model: AudioLLM, cfg: DictConfig | None, out: list[str]) -> None:
    """Append one message per problem that needs the built model (head counts, layer counts, layouts).

    Cheap (no calibration); `prune` runs it first and raises before changing anything.
    """
    s = _settings(cfg)
    if s["method"] == "none" or not s["ratio"]:
        return
    for name in s["targets"]:
        try:
            stack = _stack(model, name, s)
            if s["method"] == "depth":
                _plan_depth(stack, float(s["ratio"]), out)
            else:
                _plan_width(stack, s, out)
        except ValueError as err:
            out.append(str(err))


# ---------------------------------------------------------------------------------------------- calibration

def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return type(x)(_to_device(v, device) for v in x)
    return x


def _loss(model: AudioLLM, batch: dict[str, Any]) -> torch.Tensor:
    if "input_ids" in batch:
        # Text-only calibration of the LLM (e.g. perplexity studies); audio batches go through the model.
        ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(ids))
        return model.llm(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, IGNORE),
                         use_cache=False).loss
    return model(batch)


@dataclass
class _Stats:
    sq: dict[tuple[str, int, str], torch.Tensor]        # "mlp": per-channel sum of squared down_proj/fc2 inputs;
                                                        # "attn": per-head sum of squared o_proj output blocks
    influence: dict[tuple[str, int], list[float]]       # [sum of (1 - cos(in, out)), tokens]
    grads: dict[int, torch.Tensor]                      # id(weight) -> loss gradient summed over batches


def _taylor_params(stacks: list[_Stack]) -> list[nn.Parameter]:
    params = []
    for st in stacks:
        for i, layer in enumerate(st.layers):
            if i in st.protected:
                continue
            ins, o = _mlp_parts(st, layer, i)
            params += [lin.weight for lin in ins] + [o.weight]
            if st.heads:
                a = _attn(st, layer, i)
                params += [a.q.weight, a.o.weight] + ([a.k.weight, a.v.weight] if a.n_q == a.n_kv else [])
    return params


def _calibrate(model: AudioLLM, stacks: list[_Stack], batches: list[dict[str, Any]], want: str) -> _Stats:
    """One pass over the calibration batches collecting what `want` (activation|taylor|influence) needs."""
    stats = _Stats({}, {}, {})
    state: dict[str, Any] = {"llm_mask": None, "frames": None}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def rows(stack: str, x: torch.Tensor) -> torch.Tensor:
        # Only real tokens count: left padding of the LLM batch and the zero-padded tail of Whisper's context
        # carry activations that say nothing about the channels.
        mask = None
        if stack == "llm" and state["llm_mask"] is not None and state["llm_mask"].shape == x.shape[:2]:
            mask = state["llm_mask"].bool()
        elif stack == "encoder" and state["frames"] is not None:
            mask = torch.arange(x.shape[1], device=x.device)[None] < state["frames"].to(x.device)[:, None]
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
                handles.append(_mlp_parts(st, layer, i)[1].register_forward_pre_hook(sq_hook((st.name, i, "mlp"))))
                if st.heads:
                    a = _attn(st, layer, i)
                    handles.append(a.o.register_forward_pre_hook(head_hook((st.name, i, "attn"), a.head_dim)))

    params = _taylor_params(stacks) if want == "taylor" else []
    flags = [p.requires_grad for p in params]
    was_training = model.training
    device = next(model.llm.parameters()).device
    model.eval()  # no dropout: importance must describe the model as it is used
    try:
        for p in params:
            p.requires_grad_(True)  # frozen weights still need gradients for Taylor scores
        for batch in batches:
            batch = _to_device(batch, device)
            state["frames"] = batch.get("num_frames")
            if want == "taylor":
                with torch.enable_grad():
                    grads = torch.autograd.grad(_loss(model, batch), params, allow_unused=True)
                for p, g in zip(params, grads):
                    if g is None:
                        raise RuntimeError("prune: the calibration loss does not depend on a weight being scored "
                                           f"({tuple(p.shape)}); is that part of the model bypassed?")
                    stats.grads[id(p)] = stats.grads.get(id(p), 0) + g.detach().float()
            else:
                with torch.no_grad():
                    _loss(model, batch)
    finally:
        for h in handles:
            h.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    return stats


# ---------------------------------------------------------------------------------------------- importance

def _mlp_scores(st: _Stack, layer: nn.Module, i: int, importance: str, stats: _Stats) -> torch.Tensor:
    ins, o = _mlp_parts(st, layer, i)
    if importance == "activation":
        # Wanda on the down projection: a channel's contribution to the output is |W[:, c]| * ||x_c||.
        return stats.sq[(st.name, i, "mlp")].sqrt() * o.weight.detach().float().abs().sum(0)
    if importance == "taylor":
        # First-order Taylor: |w * dL/dw| summed over the channel's weights (as Torch-Pruning's TaylorImportance).
        return (sum((lin.weight.detach().float() * stats.grads[id(lin.weight)]).abs().sum(1) for lin in ins)
                + (o.weight.detach().float() * stats.grads[id(o.weight)]).abs().sum(0))
    return sum(lin.weight.detach().float().pow(2).sum(1) for lin in ins) + o.weight.detach().float().pow(2).sum(0)


def _head_scores(st: _Stack, att: _Attn, i: int, importance: str, stats: _Stats) -> torch.Tensor:
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


def _top(scores: torch.Tensor, k: int) -> list[int]:
    return sorted(torch.topk(scores, k).indices.tolist())


def _select_heads(scores: torch.Tensor, n_kv: int, q_keep: int, kv_keep: int) -> tuple[list[int], list[int]]:
    if q_keep == kv_keep and scores.numel() == n_kv:  # multi-head attention: whole heads
        kept = _top(scores, kv_keep)
        return kept, kept
    group = scores.numel() // n_kv
    per = q_keep // n_kv
    kept = [g * group + j for g in range(n_kv) for j in _top(scores[g * group:(g + 1) * group], per)]
    return kept, list(range(n_kv))


# ---------------------------------------------------------------------------------------------- surgery

def _slice(lin: nn.Linear, keep: list[int], dim: str, where: str) -> None:
    """Keep `keep` output (`dim="out"`) or input channels of `lin`, via Torch-Pruning's pruning functions."""
    n = lin.out_features if dim == "out" else lin.in_features
    if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= n:
        raise ValueError(f"prune: {where}: kept {dim} channels {keep[:8]}... do not fit {n} channels; was the "
                         "model built with the config the report was made for?")
    drop = sorted(set(range(n)) - set(keep))
    if not drop:
        return
    flags = {name: p.requires_grad for name, p in lin.named_parameters()}
    (tp.prune_linear_out_channels if dim == "out" else tp.prune_linear_in_channels)(lin, drop)
    for name, p in lin.named_parameters():
        p.requires_grad_(flags[name])  # Torch-Pruning makes fresh Parameters that require grad; keep freezing


def _shrink_mlp(st: _Stack, layer: nn.Module, i: int, keep: list[int]) -> None:
    ins, o = _mlp_parts(st, layer, i)
    for lin in ins:
        _slice(lin, keep, "out", f"{st.name} layer {i} MLP")
    _slice(o, keep, "in", f"{st.name} layer {i} MLP")
    mlp = getattr(layer, "mlp", None)
    if mlp is not None and hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def _shrink_heads(st: _Stack, layer: nn.Module, i: int, q_keep: list[int], kv_keep: list[int]) -> None:
    att = _attn(st, layer, i)
    where = f"{st.name} layer {i} attention"
    group = att.n_q // att.n_kv
    per = len(q_keep) // max(1, len(kv_keep))
    # repeat_kv maps query head m to KV head m // per: each kept KV head needs `per` query heads of its group.
    if per * len(kv_keep) != len(q_keep) or any(q // group != kv_keep[m // per] for m, q in enumerate(q_keep)):
        raise ValueError(f"prune: {where}: kept query heads {q_keep} do not form equal groups over KV heads {kv_keep}")
    hd = att.head_dim
    q_ch = [h * hd + d for h in q_keep for d in range(hd)]
    _slice(att.q, q_ch, "out", where)
    _slice(att.o, q_ch, "in", where)
    if len(kv_keep) < att.n_kv:
        kv_ch = [h * hd + d for h in kv_keep for d in range(hd)]
        _slice(att.k, kv_ch, "out", where)
        _slice(att.v, kv_ch, "out", where)
    m = att.module
    m.num_key_value_groups = per  # read by eager/sdpa attention to repeat KV heads
    for attr, value in (("num_heads", len(q_keep)), ("num_attention_heads", len(q_keep)),
                        ("num_key_value_heads", len(kv_keep))):
        if _is_int(getattr(m, attr, None)):
            setattr(m, attr, value)


def _drop_layers(st: _Stack, keep: list[int]) -> None:
    old = st.layers
    if len(set(keep)) != len(keep) or any(not 0 <= i < len(old) for i in keep):
        raise ValueError(f"prune: kept {st.name} layers {keep} do not fit its {len(old)} layers")
    st.holder.layers = nn.ModuleList([old[i] for i in keep])
    for new_idx, layer in enumerate(st.holder.layers):
        # KV caches are indexed by each attention's layer_idx: they must be 0..n-1 again.
        for mod in layer.modules():
            if _is_int(getattr(mod, "layer_idx", None)):
                mod.layer_idx = new_idx
    types = getattr(st.config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(old):
        st.config.layer_types = [types[i] for i in keep]
    setattr(st.config, st.layers_key, len(keep))


def _shape(st: _Stack) -> dict[str, list[int]]:
    inter, heads, kv = [], [], []
    for i, layer in enumerate(st.layers):
        inter.append(_mlp_parts(st, layer, i)[0][0].out_features)
        if st.name == "llm":
            att = _attn(st, layer, i)
            heads.append(att.n_q)
            kv.append(att.n_kv)
        else:
            heads.append(int(layer.self_attn.num_heads))
    return {"heads": heads, "kv_heads": kv, "intermediate": inter} if st.name == "llm" else \
        {"heads": heads, "intermediate": inter}


def _sync_config(st: _Stack) -> None:
    """Make the HF config describe the pruned model where one number can; per-layer sizes live in the report."""
    setattr(st.config, st.layers_key, len(st.layers))
    shape = _shape(st)
    if len(set(shape["intermediate"])) == 1:
        setattr(st.config, st.ffn_key, shape["intermediate"][0])
    if st.name == "llm" and len(set(shape["heads"])) == 1 and len(set(shape["kv_heads"])) == 1:
        # head_dim first: configs without it derive it from hidden_size / num_attention_heads.
        st.config.head_dim = _attn(st, st.layers[0], 0).head_dim
        st.config.num_attention_heads = shape["heads"][0]
        st.config.num_key_value_heads = shape["kv_heads"][0]


# ---------------------------------------------------------------------------------------------- pruning

def _width(st: _Stack, s: dict[str, Any], plans: list[_LayerPlan], stats: _Stats) -> tuple[dict, int]:
    """Prune one stack's width; returns (kept indices for replay, parameters the plan removes)."""
    n = len(st.layers)
    kept: dict[str, list] = {"mlp": [None] * n, "q_heads": [None] * n, "kv_heads": [None] * n}
    expected = 0
    for i, (layer, plan) in enumerate(zip(st.layers, plans)):
        if plan.mlp is None:
            continue
        ins, o = _mlp_parts(st, layer, i)
        width = ins[0].out_features
        per_channel = sum(lin.in_features + (lin.bias is not None) for lin in ins) + o.out_features
        expected += (width - plan.mlp) * per_channel
        keep = _top(_mlp_scores(st, layer, i, s["importance"], stats), plan.mlp)
        _shrink_mlp(st, layer, i, keep)
        kept["mlp"][i] = keep
        if plan.q is not None:
            att = _attn(st, layer, i)
            hd, n_q, n_kv = att.head_dim, att.n_q, att.n_kv
            expected += (n_q - plan.q) * hd * (att.q.in_features + (att.q.bias is not None) + att.o.out_features)
            expected += (n_kv - plan.kv) * hd * (att.k.in_features + (att.k.bias is not None)
                                                 + att.v.in_features + (att.v.bias is not None))
            q_keep, kv_keep = _select_heads(_head_scores(st, att, i, s["importance"], stats), n_kv, plan.q, plan.kv)
            _shrink_heads(st, layer, i, q_keep, kv_keep)
            kept["q_heads"][i], kept["kv_heads"][i] = q_keep, kv_keep
    if not st.heads:
        kept.pop("q_heads"), kept.pop("kv_heads")
    return kept, expected


def _depth(st: _Stack, remove: int, stats: _Stats) -> tuple[dict, int, list[int]]:
    n = len(st.layers)
    score = {i: stats.influence[(st.name, i)][0] / max(1, stats.influence[(st.name, i)][1]) for i in range(n)}
    log.info("prune: %s block influence (1 - cos) per layer: %s", st.name,
             ", ".join(f"{i}:{score[i]:.4f}" for i in range(n)))
    # Lowest influence first: a layer whose output barely turns its input contributes least.
    candidates = sorted((i for i in range(n) if i not in st.protected), key=lambda i: (score[i], i))
    removed = sorted(candidates[:remove])
    expected = sum(_n_params(st.layers[i]) for i in removed)
    keep = [i for i in range(n) if i not in removed]
    _drop_layers(st, keep)
    return {"layers": keep}, expected, removed


def prune(model: AudioLLM, cfg: DictConfig, calib: list[dict]) -> dict:
    """Prune `model` in place as `cfg` (the `prune` group) says, scoring on `calib`; returns the report.

    `calib` holds batches as `model(batch)` takes them; a batch with `input_ids` (and `attention_mask`)
    calibrates the LLM on text alone.
    """
    s = _settings(cfg)
    report: dict[str, Any] = {"method": s["method"], "ratio": float(s["ratio"]), "targets": list(s["targets"])}
    problems: list[str] = []
    validate(cfg, problems)
    if not problems:  # model checks assume well-typed settings
        check_model(model, cfg, problems)
    if problems:
        raise ValueError("prune: invalid configuration for this model:\n  - " + "\n  - ".join(problems))
    if s["method"] == "none" or not s["ratio"]:
        log.info("prune: method=%s ratio=%s: nothing to do", s["method"], s["ratio"])
        return report

    ratio = float(s["ratio"])
    stacks = [_stack(model, name, s) for name in s["targets"]]
    batches = list(itertools.islice(calib, s["calib_batches"]))
    if _needs_data(s):
        if not batches:
            raise ValueError(f"prune: method={s['method']} importance={s['importance']} needs calibration batches; "
                             "got none")
        if any(st.name == "encoder" for st in stacks) and not all("encoder_inputs" in b for b in batches):
            raise ValueError("prune.targets includes encoder, but the calibration batches carry no "
                             "`encoder_inputs` (cached features or text skip the encoder); calibrate on audio")
    want = "influence" if s["method"] == "depth" else s["importance"]
    stats = _calibrate(model, stacks, batches, want) if want != "magnitude" else _Stats({}, {}, {})
    if s["method"] == "width":
        report["importance"] = s["importance"]
    report["protected_layers"] = sorted(next((st.protected for st in stacks if st.name == "llm"), []))

    for st in stacks:
        before, n_before = _n_params(st.root), len(st.layers)
        removed: list[int] = []
        if s["method"] == "depth":
            kept, expected, removed = _depth(st, _plan_depth(st, ratio, []), stats)
        else:
            kept, expected = _width(st, s, _plan_width(st, s, []), stats)
        _sync_config(st)
        after = _n_params(st.root)
        # Assert the structure really went: a pruner that silently keeps everything must not pass.
        if before - after != expected or expected <= 0:
            raise RuntimeError(f"prune: {st.name} lost {before - after} parameters but the plan removes {expected} "
                               f"(method={s['method']}, prune.ratio={ratio})")
        if st.name == "llm" and model.llm.get_input_embeddings().weight.shape[-1] != model.llm.config.hidden_size:
            raise RuntimeError("prune: the LLM hidden size changed; the connector's output would no longer fit")
        report[st.name] = {
            "params_before": before, "params_after": after, "achieved_ratio": round(1 - after / before, 6),
            "layers_before": n_before, "layers_after": len(st.layers), "removed_layers": removed,
            **_shape(st), "kept": kept,
        }
        log.info("prune: %s %s ratio=%s: %d -> %d params (%.1f %% removed), layers %d -> %d%s", st.name,
                 s["method"], ratio, before, after, 100 * (1 - after / before), n_before, len(st.layers),
                 f", removed {removed}" if removed else "")
    return report


def replay(model: AudioLLM, report: dict) -> None:
    """Re-apply the structure recorded in `report` to a freshly built model, so the pruned state_dict loads."""
    if not enabled(report):
        return
    s = {**DEFAULTS, "prune_heads": True, "protected_layers": []}
    for name in TARGETS:
        section = report.get(name)
        if not section:
            continue
        st = _stack(model, name, s)
        if len(st.layers) != section["layers_before"]:
            raise ValueError(f"prune.replay: the report was made on a {name} with {section['layers_before']} layers, "
                             f"this one has {len(st.layers)}")
        kept = section["kept"]
        if kept.get("layers") is not None:
            _drop_layers(st, list(kept["layers"]))
        for i, layer in enumerate(st.layers):
            if kept.get("mlp") and kept["mlp"][i] is not None:
                _shrink_mlp(st, layer, i, list(kept["mlp"][i]))
            if kept.get("q_heads") and kept["q_heads"][i] is not None:
                _shrink_heads(st, layer, i, list(kept["q_heads"][i]), list(kept["kv_heads"][i]))
        _sync_config(st)
        if _n_params(st.root) != section["params_after"]:
            raise RuntimeError(f"prune.replay: {name} has {_n_params(st.root)} parameters after replay, the report "
                               f"says {section['params_after']}")
        log.info("prune.replay: %s rebuilt with %d params", name, section["params_after"])

