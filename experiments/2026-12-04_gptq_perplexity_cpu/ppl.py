"""Perplexity of the bundled SmolLM2-135M-Instruct with its linears in int4 (compact layout, groups of 64):
round-to-nearest against GPTQ, on the CPU. Calibration and evaluation text are disjoint.

    python experiments/2026-12-04_gptq_perplexity_cpu/ppl.py [--out results.json]
"""
import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from sota.compress import quant
from sota.data.sentences import natural_sentences
from sota.formats.gguf import cached_gguf

WINDOW = 128
LICENSE = Path("/usr/share/common-licenses/GPL-3")   # real English prose shipped by Debian


def windows(tok, text: str, n: int) -> list[torch.Tensor]:
    ids = tok(text, return_tensors="pt").input_ids[0]
    return [ids[i * WINDOW:(i + 1) * WINDOW] for i in range(min(n, len(ids) // WINDOW))]


@torch.no_grad()
def perplexity(model, chunks: list[torch.Tensor]) -> float:
    nll, count = 0.0, 0
    for i in range(0, len(chunks), 8):
        x = torch.stack(chunks[i:i + 8])
        out = model(input_ids=x, labels=x)
        nll += out.loss.item() * x.shape[0] * (WINDOW - 1)
        count += x.shape[0] * (WINDOW - 1)
    return math.exp(nll / count)


def texts(tok) -> tuple[list[torch.Tensor], dict[str, list[torch.Tensor]]]:
    """Calibration windows (half of the shuffled natural sentences) and the evaluation sets (the other half, and
    the GPL-3 prose)."""
    sentences = list(natural_sentences())
    random.Random(0).shuffle(sentences)
    half = len(sentences) // 2
    calib = windows(tok, " ".join(sentences[:half]), 256)
    return calib, {"natural_sentences_heldout": windows(tok, " ".join(sentences[half:]), 48),
                   "gpl3_text": windows(tok, LICENSE.read_text(), 48)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args()
    torch.manual_seed(0)
    path = cached_gguf()
    tok = AutoTokenizer.from_pretrained(path)
    calib, sets = texts(tok)
    rows = []
    variants = [("bf16", "bf16", None, 0), ("int4 rtn", "int4_weight", "rtn", 0),
                ("int4 gptq, 4 batches", "int4_weight", "gptq", 4), ("int4 gptq, 16 batches", "int4_weight", "gptq", 16),
                ("int4 gptq, 64 batches", "int4_weight", "gptq", 64)]
    for name, mode, algorithm, n_batches in variants:
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        cfg = OmegaConf.create({"mode": mode, "targets": ["llm"], "group_size": 64, "algorithm": algorithm or "rtn",
                                "int4_layout": "compact", "skip": quant.EMBEDDINGS, "calib_batches": n_batches})
        batches = [torch.stack(calib[i * 4:(i + 1) * 4]) for i in range(n_batches)]

        def calibrate() -> int:
            with torch.no_grad():
                for b in batches:
                    model(input_ids=b)
            return len(batches)

        notes: list[str] = []
        t0 = time.perf_counter()
        quant._quantize_root(model, mode, cfg, list(quant.EMBEDDINGS), "cpu", notes, "llm",
                             calibrate if algorithm == "gptq" else None)
        quant_s = time.perf_counter() - t0
        row = {"variant": name, "quantize_s": round(quant_s, 1), "notes": notes,
               "calibration_tokens": n_batches * 4 * WINDOW}
        for key, chunks in sets.items():
            row[key] = round(perplexity(model, chunks), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"window": WINDOW, "eval_windows": {k: len(v) for k, v in sets.items()},
                                          "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
