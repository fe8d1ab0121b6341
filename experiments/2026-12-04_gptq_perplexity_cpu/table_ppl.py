"""Perplexity of the bundled SmolLM2-135M-Instruct with its tied token table quantized (quant.parts.embeddings:
int8, or int4 in the compact layout), alone and beside GPTQ int4 linears, on the CPU. Same text and windows as
ppl.py; the linears' calibration is ppl.py's.

    python experiments/2026-12-04_gptq_perplexity_cpu/table_ppl.py [--out table_results.json]
"""
import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from ppl import perplexity, texts
from sota.compress import quant
from sota.formats.gguf import cached_gguf

VARIANTS = [  # name, mode of the linears, algorithm, table mode, table group size, table by GPTQ
    ("bf16", "bf16", "rtn", None, 64, False),
    ("bf16, int8 table", "bf16", "rtn", "int8_weight", 64, False),
    ("bf16, int4 table (groups of 64)", "bf16", "rtn", "int4_weight", 64, False),
    ("bf16, int4 table (groups of 32)", "bf16", "rtn", "int4_weight", 32, False),
    ("bf16, int4 table by GPTQ (groups of 64)", "bf16", "gptq", "int4_weight", 64, True),
    ("int4 gptq 16 batches", "int4_weight", "gptq", None, 64, False),
    ("int4 gptq 16 batches, int4 table (groups of 64)", "int4_weight", "gptq", "int4_weight", 64, False),
    ("int4 gptq 16 batches, int4 table by GPTQ (groups of 64)", "int4_weight", "gptq", "int4_weight", 64, True),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("table_results.json")))
    args = ap.parse_args()
    torch.manual_seed(0)
    path = cached_gguf()
    tok = AutoTokenizer.from_pretrained(path)
    calib, sets = texts(tok)
    batches = [torch.stack(calib[i * 4:(i + 1) * 4]) for i in range(16)]
    rows = []
    for name, mode, algorithm, table, group_size, table_by_gptq in VARIANTS:
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()

        def calibrate() -> int:
            with torch.no_grad():
                for b in batches:
                    model(input_ids=b)
            return len(batches)

        cfg = OmegaConf.create({"mode": mode, "targets": ["llm"], "group_size": group_size, "algorithm": algorithm,
                                "int4_layout": "compact", "skip": quant.EMBEDDINGS, "calib_batches": len(batches),
                                "parts": {"embeddings": table, "encoder": None, "connector": None}})
        notes: list[str] = []
        t0 = time.perf_counter()
        quant._quantize_root(model, mode, cfg, list(quant.EMBEDDINGS), "cpu", notes, "llm",
                             calibrate if mode == "int4_weight" and algorithm == "gptq" else None)
        if table:
            quant.quantize_parts(SimpleNamespace(llm=model), cfg, "cpu", notes, calibrate if table_by_gptq else None)
        row = {"variant": name, "quantize_s": round(time.perf_counter() - t0, 1), "notes": notes}
        for key, chunks in sets.items():
            row[key] = round(perplexity(model, chunks), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
