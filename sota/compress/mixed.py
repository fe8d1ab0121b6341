"""Mixed precision under a bit budget (`quant=mixed`): each linear of the targets in the mode that costs the
least accuracy for the bytes it saves, so the targets average at most `avg_bits` bits per weight.

1. Sensitivity: for every candidate linear and every mode of `quant.modes`, that linear alone is quantized and
   the KL divergence of the model's next-token distributions (answer positions of `calib_batches` training
   batches) from the unquantized model's is measured. Its effective bits per weight (scales and padding
   included) come from the quantized copy's storage. With `quant.algorithm=gptq` a linear's int4 copy holds
   GPTQ's codes (Hessians of one pass over the same batches), so int4 is scored as it will be stored: scored
   by round-to-nearest copies, GPTQ int4 looked costlier than it is and lost to nf4.
2. Choice: every linear starts in the mode with the most bits; the cheapest step down (least KL added per
   byte saved) is taken until the budget holds, as ModelOpt's auto_quantize and AutoRound's AutoScheme do with
   their own scores.
3. The chosen map is applied and recorded (results.json `compression.quant.map`, with the scores and the bits
   reached).

Summed single-module sensitivities ignore how errors compound; the record's `kl_after` is the whole quantized
model's KL on the same batches, so that gap is visible.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sota.compress import gptq
from sota.compress.surgery import set_module
from sota.models.audio_llm import IGNORE
from sota.models.footprint import footprint

log = logging.getLogger(__name__)

# "none" is the targets' own dtype (on CUDA the `cuda_dtype` they are cast to first); a half-precision cast is
# not a per-linear choice here because a linear's inputs come in the dtype of the layer before it.
MODES = ("int4_weight", "nf4", "int8_weight", "none")
DEFAULTS: dict[str, Any] = {"avg_bits": 6.0, "modes": ["int8_weight", "none"], "calib_batches": 4}


def validate(cfg: Any, out: list[str]) -> None:
    modes = list(cfg.get("modes") or [])
    bad = [m for m in modes if m not in MODES]
    if bad or len(modes) < 2 or len(set(modes)) != len(modes):
        out.append(f"quant.modes (quant=mixed) must list two or more distinct modes of {', '.join(MODES)}; "
                   f"got {modes}")
    bits = cfg.get("avg_bits")
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not 1 <= bits <= 32:
        out.append(f"quant.avg_bits (quant=mixed) must be a number of bits per weight in [1, 32], got {bits!r}")
    calib = cfg.get("calib_batches", 4)
    if isinstance(calib, bool) or not isinstance(calib, int) or calib < 1:
        out.append(f"quant.calib_batches (quant=mixed) must be an integer >= 1 (batches that score each linear), "
                   f"got {calib!r}")


def _answer_logprobs(model: Any, batches: list[dict]) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for b in batches:
            res, labels = model.outputs(b)
            at = labels[:, 1:] != IGNORE
            out.append(F.log_softmax(res.logits[:, :-1][at].float(), -1))
    return out


def _kl(ref: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    total = sum(F.kl_div(g, r, log_target=True, reduction="sum").item() for r, g in zip(ref, got))
    return total / max(1, sum(r.shape[0] for r in ref))


class _Holder(nn.Module):
    """One linear under a root of its own, so the quantizers (which work on a root's modules) see it alone."""

    def __init__(self, lin: nn.Module) -> None:
        super().__init__()
        self.lin = lin


def calibrated(cfg: Any) -> bool:
    """Whether `cfg`'s int4 needs calibration inputs (GPTQ, AWQ)."""
    return str(cfg.get("algorithm", "rtn")) in ("gptq", "awq")


def gptq_codes(candidates: dict[str, dict[str, nn.Module]], cfg: Any, calibrate: Any) -> dict[str, tuple]:
    """GPTQ's int4 codes of every candidate linear (`target.name` -> (q, scales, zeros)), from one pass of the
    calibration batches through the unquantized model: what a linear is scored with and, if chosen, stored as."""
    gs = int(cfg.get("group_size", 128))
    linears = {f"{where}.{name}": lin for where, named in candidates.items() for name, lin in named.items()
               if lin.in_features % gs == 0}
    codes: dict[str, tuple] = {}
    gptq.quantize(linears, gs, calibrate, lambda key, lin, q, scales, zeros: codes.update({key: (q, scales, zeros)}))
    return codes


def quantized_copy(lin: nn.Linear, mode: str, cfg: Any, device: str, quantize_root: Any,
                   codes: tuple | None = None) -> nn.Module:
    """`lin` quantized in `mode` (a copy; `lin` is left as it is). int4 holds `codes` when given (GPTQ's), else
    rounds to nearest (for AWQ that is the cheap stand-in for scoring: same bytes)."""
    from sota.compress.quant import int4_layer, rtn_config

    if mode == "int4_weight" and codes is not None:
        return int4_layer(copy.deepcopy(lin), *codes, cfg)
    holder = _Holder(copy.deepcopy(lin))
    if mode != "none":
        quantize_root(holder, mode, rtn_config(cfg), [], device, [], "mixed")
    return holder.lin


def _bytes(mod: nn.Module) -> int:
    return footprint(mod)["weight_bytes"]   # parameters and buffers (a compact int4 layer's codes are buffers)


def check_budget(params: dict[str, int], sizes: dict[str, dict[str, int]], modes: list[str], avg_bits: float) -> float:
    """The budget in bytes; ValueError when even every linear in its smallest mode is over it (the bytes are
    those of the real layouts: an int4 kernel's padding counts)."""
    budget = avg_bits * sum(params.values()) / 8
    least = sum(min(per_mode.values()) for per_mode in sizes.values())
    if least > budget:
        smallest = {m: sum(1 for per_mode in sizes.values() if min(per_mode, key=per_mode.get) == m) for m in modes}
        raise ValueError(f"quant.avg_bits={avg_bits}: even every linear in its smallest mode averages "
                         f"{8 * least / sum(params.values()):.2f} bits per weight (quant.modes={modes}; linears "
                         f"smallest in each mode: {smallest}); raise avg_bits or add a smaller mode such as nf4")
    return budget


def choose(params: dict[str, int], options: dict[str, dict[str, tuple[int, float]]], modes: list[str],
           avg_bits: float) -> dict[str, str]:
    """module -> mode, from each module's (bytes, KL) per mode: the greedy least-KL-per-byte descent from the
    most bits until `avg_bits` holds. Raises ValueError when even the fewest bits exceed the budget."""
    order = {name: sorted(opts, key=lambda m: -opts[m][0]) for name, opts in options.items()}  # most bytes first
    at = {name: 0 for name in options}
    budget = check_budget(params, {n: {m: v[0] for m, v in opts.items()} for n, opts in options.items()}, modes,
                          avg_bits)
    size = sum(options[n][order[n][0]][0] for n in options)
    while size > budget:
        best, best_rate = None, None
        for n in options:
            if at[n] + 1 >= len(order[n]):
                continue
            cur, nxt = options[n][order[n][at[n]]], options[n][order[n][at[n] + 1]]
            saved = cur[0] - nxt[0]
            if saved <= 0:
                continue
            rate = max(nxt[1] - cur[1], 0.0) / saved
            if best_rate is None or rate < best_rate:
                best, best_rate = n, rate
        if best is None:
            break
        cur, nxt = options[best][order[best][at[best]]], options[best][order[best][at[best] + 1]]
        size -= cur[0] - nxt[0]
        at[best] += 1
    return {n: order[n][at[n]] for n in options}


def apply(model: Any, chosen: dict[str, str], cfg: Any, device: str, quantize_root: Any,
          calibrate: Any = None, notes: list[str] | None = None, codes: dict[str, tuple] | None = None) -> None:
    """Quantize each `target.linear` of `chosen` in its mode (a map recorded by `quantize`). int4 linears take
    their GPTQ `codes` where given. Otherwise, with GPTQ or AWQ (`quant.algorithm`), the int4 linears of each
    target are quantized in one pass over `calibrate`'s batches, before any other linear changes, so their
    inputs are the unquantized model's."""
    notes = [] if notes is None else notes
    together = calibrated(cfg) and codes is None and "int4_weight" in chosen.values()
    if together:
        if calibrate is None:
            raise ValueError(f"quant=mixed with quant.algorithm={cfg.get('algorithm')}: its int4 linears need "
                             "calibration batches (a run's training data); none were given")
        for where in dict.fromkeys(k.partition(".")[0] for k, m in chosen.items() if m == "int4_weight"):
            root = getattr(model, where)
            mine = {k.partition(".")[2] for k, m in chosen.items() if m == "int4_weight" and k.startswith(where + ".")}
            # every other linear or table of the target is skipped by its full name: only the chosen ones change
            others = [n for n, m in root.named_modules() if isinstance(m, (nn.Linear, nn.Embedding)) and n not in mine]
            quantize_root(root, "int4_weight", cfg, others, device, notes, f"mixed.{where}", calibrate)
    for key, mode in chosen.items():
        if together and mode == "int4_weight":
            continue
        where, _, name = key.partition(".")
        root = getattr(model, where)
        set_module(root, name, quantized_copy(root.get_submodule(name), mode, cfg, device, quantize_root,
                                              (codes or {}).get(key)))


def quantize(model: Any, cfg: Any, device: str, batches: list[dict], candidates: dict[str, dict[str, nn.Module]],
             quantize_root: Any, calibrate: Any = None, notes: list[str] | None = None) -> dict[str, Any]:
    """Score, choose and apply; `candidates` maps each target's name to its linears by qualified name."""
    modes = [str(m) for m in cfg.get("modes")]
    avg_bits = float(cfg.get("avg_bits"))
    if not batches:
        raise ValueError("quant=mixed scores each linear on calibration batches (a run's training data) or applies "
                         "the map a run recorded; got neither")
    # Every linear's bytes in every mode first (quantizing is cheap, scoring is not): an unreachable budget is
    # refused before the first scoring pass.
    notes = [] if notes is None else notes
    params = {f"{where}.{name}": lin.weight.numel() for where, linears in candidates.items()
              for name, lin in linears.items()}
    codes = None
    if cfg.get("algorithm", "rtn") == "gptq" and "int4_weight" in modes and calibrate is not None:
        codes = gptq_codes(candidates, cfg, calibrate)
        notes.append(
            f"quant=mixed: int4 scored and stored with GPTQ codes of {len(codes)} linears (one Hessian pass over "
            f"{len(batches)} calibration batches)")
    sizes = {f"{where}.{name}": {mode: _bytes(quantized_copy(lin, mode, cfg, device, quantize_root,
                                                             (codes or {}).get(f"{where}.{name}")))
                                 for mode in modes}
             for where, linears in candidates.items() for name, lin in linears.items()}
    check_budget(params, sizes, modes, avg_bits)
    ref = _answer_logprobs(model, batches)
    options: dict[str, dict[str, tuple[int, float]]] = {}
    total = sum(len(linears) for linears in candidates.values())
    # Each linear costs one pass over the calibration batches per mode: say how far the scoring is.
    log.info("quant=mixed: scoring %d linears x %d modes on %d batches", total, len(modes), len(batches))
    for where, linears in candidates.items():
        root = getattr(model, where)
        for name, lin in linears.items():
            key = f"{where}.{name}"
            if len(options) % max(1, total // 10) == 0:
                log.info("quant=mixed: %d of %d linears scored", len(options), total)
            options[key] = {}
            for mode in modes:
                q = quantized_copy(lin, mode, cfg, device, quantize_root, (codes or {}).get(key))
                set_module(root, name, q)
                try:
                    kl = 0.0 if mode == "none" else _kl(ref, _answer_logprobs(model, batches))
                finally:
                    set_module(root, name, lin)
                options[key][mode] = (sizes[key][mode], kl)
    chosen = choose(params, options, modes, avg_bits)
    apply(model, chosen, cfg, device, quantize_root, calibrate, notes, codes)
    after = sum(options[k][m][0] for k, m in chosen.items())
    reached = 8 * after / sum(params.values())
    kl_after = _kl(ref, _answer_logprobs(model, batches))
    counts = {m: sum(1 for v in chosen.values() if v == m) for m in modes}
    log.info("quant=mixed: %.2f bits per weight (budget %.2f) over %d linears %s; KL %.4g", reached, avg_bits,
             len(chosen), counts, kl_after)
    return {"avg_bits_target": avg_bits, "avg_bits": round(reached, 4), "modes": modes, "counts": counts,
            "map": chosen, "kl_after": kl_after,
            "sensitivity": {k: {m: float(f"{max(v[1], 0.0):.4g}") for m, v in opts.items()} for k, opts in options.items()},
            "bits": {k: {m: round(8 * v[0] / params[k], 4) for m, v in opts.items()} for k, opts in options.items()}}
