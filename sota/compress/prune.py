"""Structured pruning of an AudioLLM: width (LLM MLP channels and query heads per KV group, Whisper MLP
channels), depth (whole layers ranked by block influence) or lowrank (the Whisper encoder's linears factorised,
sota.compress.lowrank), reported as JSON from which `replay` rebuilds the pruned shapes on a freshly built model
so that a saved state_dict loads into it."""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sota.compress import lowrank
from sota.compress.importance import Stats, calibrate, head_scores, mlp_scores, select_heads, top
from sota.compress.plan import enabled
from sota.compress.surgery import (Attn, Stack, attention_of, drop_layers, is_int, layer_shapes, mlp_parts, n_params,
                                   shrink_heads, shrink_mlp, stack_of, sync_config)
from sota.models.audio_llm import AudioLLM

log = logging.getLogger(__name__)

METHODS = ("none", "width", "depth", "lowrank")
IMPORTANCES = ("activation", "taylor", "magnitude")
TARGETS = ("llm", "encoder")
DEFAULTS: dict[str, Any] = {
    "method": "none", "ratio": 0.0, "targets": ["llm"], "importance": "activation", "protected_layers": [0],
    "round_to": 8, "prune_heads": True, "calib_batches": 4, "factors": "frozen",
}


# ---------------------------------------------------------------------------------------------- settings

def _settings(cfg: DictConfig | dict | None) -> dict[str, Any]:
    raw = {} if cfg is None else (OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig)
                                  else dict(cfg))
    return {**DEFAULTS, **raw}


def _needs_data(s: dict[str, Any]) -> bool:
    return s["method"] == "depth" or (s["method"] in ("width", "lowrank") and s["importance"] != "magnitude")


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
    elif s["method"] == "lowrank" and s["importance"] not in lowrank.IMPORTANCES:
        out.append(f"prune.method=lowrank chooses its subspace by prune.importance in "
                   f"{', '.join(lowrank.IMPORTANCES)}; got {s['importance']!r}")
    if s["method"] == "lowrank" and targets != ["encoder"] and isinstance(targets, list):
        out.append(f"prune.method=lowrank factorises the Whisper encoder's linears: prune.targets must be "
                   f"[encoder], got {targets!r}")
    if s["factors"] not in lowrank.FACTORS:
        out.append(f"prune.factors must be one of {', '.join(lowrank.FACTORS)} (whether recovery trains a low-rank "
                   f"encoder's factors); got {s['factors']!r}")
    elif s["factors"] != "frozen" and s["method"] != "lowrank":
        out.append(f"prune.factors={s['factors']} applies to prune.method=lowrank only (got {s['method']})")
    prot = s["protected_layers"]
    if not isinstance(prot, list) or not all(is_int(i) for i in prot):
        out.append(f"prune.protected_layers must be a list of decoder layer indices, got {prot!r}")
    if not is_int(s["round_to"]) or s["round_to"] < 1:
        out.append(f"prune.round_to must be an integer >= 1 (kept channels are a multiple of it), "
                   f"got {s['round_to']!r}")
    if not isinstance(s["prune_heads"], bool):
        out.append(f"prune.prune_heads must be true or false, got {s['prune_heads']!r}")
    calib = s["calib_batches"]
    if not is_int(calib) or calib < 0:
        out.append(f"prune.calib_batches must be an integer >= 0, got {calib!r}")
    elif calib < 1 and s["method"] in METHODS and s["importance"] in IMPORTANCES and _needs_data(s):
        why = "method=depth" if s["method"] == "depth" else f"importance={s['importance']}"
        out.append(f"prune.calib_batches must be >= 1 for {why} (it scores structure on calibration data), got 0")


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


def _plan_heads(att: Attn, ratio: float, issues: dict[str, list[int]], i: int) -> tuple[int, int] | None:
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


def _plan_width(stack: Stack, s: dict[str, Any], out: list[str]) -> list[_LayerPlan]:
    ratio, plans = float(s["ratio"]), []
    issues: dict[str, list[int]] = {}  # message -> layers: layers of one shape share one message
    for i, layer in enumerate(stack.layers):
        if i in stack.protected:
            plans.append(_LayerPlan())
            continue
        ins, _ = mlp_parts(stack, layer, i)
        n = ins[0].out_features
        keep = _keep_channels(n, ratio, s["round_to"])
        if keep == n:
            issues.setdefault(f"prune.ratio={ratio} prunes no MLP channels ({WHERE} {n} channels; {n} x "
                              f"{1 - ratio:.3g} rounds to {keep} kept with prune.round_to={s['round_to']})",
                              []).append(i)
        plan = _LayerPlan(mlp=keep)
        if stack.heads:
            heads = _plan_heads(attention_of(stack, layer, i), ratio, issues, i)
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


def _plan_depth(stack: Stack, ratio: float, out: list[str]) -> int:
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
            stack = stack_of(model, name, s)
            if s["method"] == "depth":
                _plan_depth(stack, float(s["ratio"]), out)
            elif s["method"] == "width":
                _plan_width(stack, s, out)
        except ValueError as err:
            out.append(str(err))


# ---------------------------------------------------------------------------------------------- pruning

def _width(st: Stack, s: dict[str, Any], plans: list[_LayerPlan], stats: Stats) -> tuple[dict, int]:
    """Prune one stack's width; returns (kept indices for replay, parameters the plan removes)."""
    n = len(st.layers)
    kept: dict[str, list] = {"mlp": [None] * n, "q_heads": [None] * n, "kv_heads": [None] * n}
    expected = 0
    for i, (layer, plan) in enumerate(zip(st.layers, plans)):
        if plan.mlp is None:
            continue
        ins, o = mlp_parts(st, layer, i)
        width = ins[0].out_features
        per_channel = sum(lin.in_features + (lin.bias is not None) for lin in ins) + o.out_features
        expected += (width - plan.mlp) * per_channel
        keep = top(mlp_scores(st, layer, i, s["importance"], stats), plan.mlp)
        shrink_mlp(st, layer, i, keep)
        kept["mlp"][i] = keep
        if plan.q is not None:
            att = attention_of(st, layer, i)
            hd, n_q, n_kv = att.head_dim, att.n_q, att.n_kv
            expected += (n_q - plan.q) * hd * (att.q.in_features + (att.q.bias is not None) + att.o.out_features)
            expected += (n_kv - plan.kv) * hd * (att.k.in_features + (att.k.bias is not None)
                                                 + att.v.in_features + (att.v.bias is not None))
            q_keep, kv_keep = select_heads(head_scores(st, att, i, s["importance"], stats), n_kv, plan.q, plan.kv)
            shrink_heads(st, layer, i, q_keep, kv_keep)
            kept["q_heads"][i], kept["kv_heads"][i] = q_keep, kv_keep
    if not st.heads:
        kept.pop("q_heads"), kept.pop("kv_heads")
    return kept, expected


def _depth(st: Stack, remove: int, stats: Stats) -> tuple[dict, int, list[int]]:
    n = len(st.layers)
    score = {i: stats.influence[(st.name, i)][0] / max(1, stats.influence[(st.name, i)][1]) for i in range(n)}
    log.info("prune: %s block influence (1 - cos) per layer: %s", st.name,
             ", ".join(f"{i}:{score[i]:.4f}" for i in range(n)))
    # Lowest influence first: a layer whose output barely turns its input contributes least.
    candidates = sorted((i for i in range(n) if i not in st.protected), key=lambda i: (score[i], i))
    removed = sorted(candidates[:remove])
    expected = sum(n_params(st.layers[i]) for i in removed)
    keep = [i for i in range(n) if i not in removed]
    drop_layers(st, keep)
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
    stacks = [stack_of(model, name, s) for name in s["targets"]]
    batches = list(itertools.islice(calib, s["calib_batches"]))
    if _needs_data(s):
        if not batches:
            raise ValueError(f"prune: method={s['method']} importance={s['importance']} needs calibration batches; "
                             "got none")
        if any(st.name == "encoder" for st in stacks) and not all("encoder_inputs" in b for b in batches):
            raise ValueError("prune.targets includes encoder, but the calibration batches carry no "
                             "`encoder_inputs` (cached features or text skip the encoder); calibrate on audio")
    if s["method"] == "lowrank":
        report["encoder"] = lowrank.factorise(model, s, batches)
        return report
    want = "influence" if s["method"] == "depth" else s["importance"]
    stats = calibrate(model, stacks, batches, want) if want != "magnitude" else Stats({}, {}, {})
    if s["method"] == "width":
        report["importance"] = s["importance"]
    report["protected_layers"] = sorted(next((st.protected for st in stacks if st.name == "llm"), []))

    for st in stacks:
        before, n_before = n_params(st.root), len(st.layers)
        removed: list[int] = []
        if s["method"] == "depth":
            kept, expected, removed = _depth(st, _plan_depth(st, ratio, []), stats)
        else:
            kept, expected = _width(st, s, _plan_width(st, s, []), stats)
        sync_config(st)
        after = n_params(st.root)
        # Assert the structure really went: a pruner that silently keeps everything must not pass.
        if before - after != expected or expected <= 0:
            raise RuntimeError(f"prune: {st.name} lost {before - after} parameters but the plan removes {expected} "
                               f"(method={s['method']}, prune.ratio={ratio})")
        if st.name == "llm" and model.llm.get_input_embeddings().weight.shape[-1] != model.llm.config.hidden_size:
            raise RuntimeError("prune: the LLM hidden size changed; the connector's output would no longer fit")
        report[st.name] = {
            "params_before": before, "params_after": after, "achieved_ratio": round(1 - after / before, 6),
            "layers_before": n_before, "layers_after": len(st.layers), "removed_layers": removed,
            **layer_shapes(st), "kept": kept,
        }
        log.info("prune: %s %s ratio=%s: %d -> %d params (%.1f %% removed), layers %d -> %d%s", st.name,
                 s["method"], ratio, before, after, 100 * (1 - after / before), n_before, len(st.layers),
                 f", removed {removed}" if removed else "")
    return report


def replay(model: AudioLLM, report: dict) -> None:
    """Re-apply the structure recorded in `report` to a freshly built model, so the pruned state_dict loads."""
    if not enabled(report):
        return
    if report.get("method") == "lowrank":
        lowrank.replay(model, report["encoder"])
        return
    s = {**DEFAULTS, "prune_heads": True, "protected_layers": []}
    for name in TARGETS:
        section = report.get(name)
        if not section:
            continue
        st = stack_of(model, name, s)
        if len(st.layers) != section["layers_before"]:
            raise ValueError(f"prune.replay: the report was made on a {name} with {section['layers_before']} layers, "
                             f"this one has {len(st.layers)}")
        kept = section["kept"]
        if kept.get("layers") is not None:
            drop_layers(st, list(kept["layers"]))
        for i, layer in enumerate(st.layers):
            if kept.get("mlp") and kept["mlp"][i] is not None:
                shrink_mlp(st, layer, i, list(kept["mlp"][i]))
            if kept.get("q_heads") and kept["q_heads"][i] is not None:
                shrink_heads(st, layer, i, list(kept["q_heads"][i]), list(kept["kv_heads"][i]))
        sync_config(st)
        if n_params(st.root) != section["params_after"]:
            raise RuntimeError(f"prune.replay: {name} has {n_params(st.root)} parameters after replay, the report "
                               f"says {section['params_after']}")
        log.info("prune.replay: %s rebuilt with %d params", name, section["params_after"])

