"""Perplexity drift of the LLM under each compression, before and after a short LoRA recovery.

    python -m sota.tools.drift [--steps 60] [--configs depth_0.1,nf4,...] [--out FILE]

The LLM alone (default: the bundled SmolLM2-135M-Instruct) is compressed through the same functions and in the
same order as a run (`sota.compress.pipeline`): prune (scored on text calibration batches) -> [nf4: quantize
the base] -> LoRA -> recovery training -> merge -> post-training quantization. Text is the synthetic corpus'
transcript language: recovery trains on one set of grammar sentences, perplexity is measured on a disjoint,
fixed set, and on a fixed set of general English sentences (drift outside that domain). "before" is the
compressed model untouched; "after" is it recovered. Recovery also adapts the model
to the sentences' domain, so the reference for "after" is the uncompressed model given the same recovery
(the `none` row), not the untouched one. Prints a markdown table; --out writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sota.compose import compose
from sota.compress.plan import CompressionPlan

# name -> (prune settings, quant mode); settings not given keep the conf/prune/<method>.yaml defaults.
CONFIGS: dict[str, tuple[dict[str, Any] | None, str]] = {
    "none": (None, "none"),
    "depth_0.1": ({"method": "depth", "ratio": 0.1}, "none"),
    "depth_0.2": ({"method": "depth", "ratio": 0.2}, "none"),
    "width_0.2_activation": ({"method": "width", "ratio": 0.2, "importance": "activation"}, "none"),
    "width_0.2_taylor": ({"method": "width", "ratio": 0.2, "importance": "taylor"}, "none"),
    "width_0.3_activation": ({"method": "width", "ratio": 0.3, "importance": "activation"}, "none"),
    "width_0.3_taylor": ({"method": "width", "ratio": 0.3, "importance": "taylor"}, "none"),
    "int8_weight": (None, "int8_weight"),
    "nf4": (None, "nf4"),
}


# General English, fixed: drift outside the transcripts' domain (the grammar's sentences are lower-case
# combinations that even the uncompressed model finds surprising).
ENGLISH = [
    "The capital of France is Paris, and it is known for its museums.",
    "She opened the window because the room was too warm.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The children walked to school together every morning.",
    "He forgot his umbrella, so he got wet on the way home.",
    "Most plants need sunlight, water and air to grow.",
    "The meeting was moved to Thursday afternoon at three o'clock.",
    "A dog barked loudly when the mail carrier came to the door.",
    "They bought fresh bread and cheese at the market on Saturday.",
    "The train to London leaves from platform four in ten minutes.",
    "My brother plays the guitar in a small band with his friends.",
    "The museum is closed on Mondays and open late on Fridays.",
    "It started to rain just as we reached the top of the hill.",
    "The teacher asked the students to read the first chapter.",
    "Please turn off the lights when you leave the office.",
    "The river flows through the valley and into the sea.",
    "We watched the sun set behind the mountains last night.",
    "The doctor said he should rest for a few days.",
    "Our neighbours are planting tomatoes in their garden this spring.",
    "The computer restarted after the software update finished.",
    "She wrote a letter to her grandmother every week.",
    "The airport was crowded because many flights were delayed.",
    "Cats often sleep for more than twelve hours a day.",
    "The library has thousands of books about history and science.",
]


class TextModel(nn.Module):
    """The LLM where the compression functions expect an AudioLLM's: at `.llm`."""

    def __init__(self, llm: nn.Module) -> None:
        super().__init__()
        self.llm = llm


def sentences(n_train: int = 480, n_eval: int = 64, seed: int = 1) -> tuple[list[str], list[str]]:
    """Disjoint, fixed grammar sentences for recovery and for evaluation."""
    from sota.data.grammar import sentences as grammar_sentences

    pool = grammar_sentences(n_train + n_eval, np.random.default_rng(seed))
    return pool[n_eval:], pool[:n_eval]


def _batches(tokenizer: Any, texts: list[str], size: int) -> list[dict[str, torch.Tensor]]:
    tokenizer.padding_side = "right"  # positions then count from each row's first token
    out = []
    for i in range(0, len(texts), size):
        enc = tokenizer(texts[i:i + size], return_tensors="pt", padding=True)
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


@torch.no_grad()
def perplexity(llm: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """exp of the mean token negative log-likelihood over all real tokens (after the first of each row)."""
    llm.eval()
    total, count = 0.0, 0
    for b in batches:
        ids, mask = b["input_ids"], b["attention_mask"]
        logits = llm(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        target, keep = ids[:, 1:], mask[:, 1:].bool()
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return math.exp(total / count)


def compression(name: str, rank: int) -> CompressionPlan:
    """The compression plan of `name` (its `prune`, `quant` and `lora` groups composed from conf/ as run.py
    would), applied below in a run's order."""
    prune_over, mode = CONFIGS[name]
    overrides = [f"quant={mode}", "lora=lora", f"lora.rank={rank}", f"lora.alpha={2 * rank}"]
    if prune_over is not None:
        overrides.append(f"prune={prune_over['method']}")
        overrides += [f"prune.{k}={v}" for k, v in prune_over.items() if k != "method"]
    return CompressionPlan.of(compose(overrides))


def recover(model: TextModel, batches: list[dict[str, torch.Tensor]], steps: int, lr: float) -> list[float]:
    """`steps` AdamW steps of next-token loss over the trainable (adapter) parameters; returns the losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        b = batches[step % len(batches)]
        ids, mask = b["input_ids"], b["attention_mask"]
        loss = model.llm(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100),
                         use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss))
    model.eval()
    return losses


def measure_one(load: Any, tokenizer: Any, name: str, steps: int, lr: float, rank: int = 8,
                calib_batches: int = 4, seed: int = 0) -> dict[str, Any]:
    """One compression: perplexity before and after recovery, parameters and bytes."""
    from sota.compress import lora, prune, quant
    from sota.models.footprint import footprint

    plan = compression(name, rank)
    train, held_out = sentences()
    train_b, eval_b = _batches(tokenizer, train, 8), _batches(tokenizer, held_out, 16)
    english_b = _batches(tokenizer, ENGLISH, 12)
    torch.manual_seed(seed)
    model = TextModel(load())
    params_before = sum(p.numel() for p in model.llm.parameters())
    record: dict[str, Any] = {"config": name}
    t0 = time.perf_counter()
    if plan.prune is not None:
        report = prune.prune(model, plan.prune, train_b[:calib_batches])
        # The kept channel indices only serve to replay a structure (megabytes for 30 layers): not kept here.
        record["prune"] = {k: ({kk: vv for kk, vv in v.items() if kk != "kept"} if isinstance(v, dict) else v)
                           for k, v in report.items()}
    if plan.qlora:
        quant.quantize(model, plan.quant, "cpu")
    if plan.ptq:  # "before": the compressed model as it would be deployed untouched
        untouched = copy.deepcopy(model)
        quant.quantize(untouched, plan.quant, "cpu")
        record.update(ppl_before=perplexity(untouched.llm, eval_b), english_before=perplexity(untouched.llm, english_b))
        del untouched
    else:
        record.update(ppl_before=perplexity(model.llm, eval_b), english_before=perplexity(model.llm, english_b))
    for p in model.parameters():
        p.requires_grad_(False)
    lora.attach(model, plan.lora)
    losses = recover(model, train_b, steps, lr)
    lora.merge(model)
    if plan.ptq:
        quant.quantize(model, plan.quant, "cpu")
    record.update(ppl_after=perplexity(model.llm, eval_b), english_after=perplexity(model.llm, english_b),
                  recovery_steps=steps, recovery_loss_first=losses[0] if losses else None,
                  recovery_loss_last=losses[-1] if losses else None,
                  params_removed=1 - sum(p.numel() for p in model.llm.parameters()) / params_before
                  if plan.prune is not None else 0.0,
                  weight_bytes=footprint(model.llm)["weight_bytes"], seconds=time.perf_counter() - t0)
    return record


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| compression | transcripts ppl before / after recovery | English ppl before / after | "
           "LLM params removed | LLM weight MB |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['config']} | {r['ppl_before']:.0f} / {r['ppl_after']:.0f} | "
                   f"{r['english_before']:.1f} / {r['english_after']:.1f} | "
                   f"{100 * r['params_removed']:.1f} % | {r['weight_bytes'] / 1e6:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sota.tools.drift", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=60, help="recovery steps (batches of 8 sentences)")
    parser.add_argument("--lr", type=float, default=5e-4, help="recovery learning rate (AdamW, LoRA rank 8)")
    parser.add_argument("--llm", default="bundled:smollm2-135m-instruct", help="LLM: bundled name or directory")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        parser.error(f"--configs: unknown {', '.join(bad)}; choose from {', '.join(CONFIGS)}")
    if args.steps < 0:
        parser.error("--steps must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    from sota.models.llm import pretrained_llm

    llm, tokenizer = pretrained_llm(args.llm)
    state = {k: v.clone() for k, v in llm.state_dict().items()}
    config = llm.config

    def load() -> nn.Module:
        # A fresh copy per compression: pruning and quantization work in place.
        from transformers import AutoModelForCausalLM

        fresh = AutoModelForCausalLM.from_config(config.__class__.from_dict(config.to_dict()))
        fresh.load_state_dict(state)
        return fresh.float().eval()

    rows = []
    for name in names:
        rows.append(measure_one(load, tokenizer, name, args.steps, args.lr))
        r = rows[-1]
        print(f"{name}: transcripts ppl {r['ppl_before']:.1f} -> {r['ppl_after']:.1f}, English "
              f"{r['english_before']:.1f} -> {r['english_after']:.1f} ({r['seconds']:.0f} s)", flush=True)
    print()
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"llm": args.llm, "steps": args.steps, "lr": args.lr, "rows": rows},
                                       indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
