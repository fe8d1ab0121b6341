"""One decode step's TPOT at batch 1 on the fused backend, as a run measures it after evaluating: the step first
decodes a batch of `--first` prompts (autotuning there), then one prompt is timed. `--first 1` skips the batch.

    python experiments/2026-12-06_batch_keyed_tuning/batch_then_one.py ARCH --first 64 --quant bf16|int4t
"""
import argparse
import json
import statistics
import time

import torch

from sota.models.decoding import Decoders
from sota.tools import bench

ENCODER = ("encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,"
           "encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arch")
    ap.add_argument("--first", type=int, default=64)
    ap.add_argument("--quant", default="bf16")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    quant = ["quant=bf16"] if args.quant == "bf16" else [
        "quant=int4_weight", "quant.int4_layout=compact", "quant.int4_kernel=triton", "quant.group_size=64",
        "quant.parts.embeddings=int4_weight"]
    cfg = bench.compose(["model=mini", *ENCODER.split(), "llm=shape_only", f"llm.device={args.device}", f"llm.arch={args.arch}",
                         *quant])
    model, _ = bench.build(cfg, args.device)
    llm = model.llm
    decoders = Decoders(llm, "fused", 40)
    with torch.no_grad():
        if args.first > 1:
            embeds, mask = bench._noise_prompt(llm, 134)
            dec = decoders.get(args.first, 134)
            dec.generate(embeds.expand(args.first, -1, -1).contiguous(), mask.expand(args.first, -1).contiguous(),
                         40, stop_ids=[])
            torch.cuda.synchronize() if args.device == "cuda" else None
        embeds, mask = bench._noise_prompt(llm, 134)
        dec = decoders.get(1, 134)
        dec.prefill(embeds, mask)
        for _ in range(5):
            dec.step()
        times = []
        for _ in range(30):
            start = time.perf_counter()
            dec.step()
            torch.cuda.synchronize() if args.device == "cuda" else None
            times.append((time.perf_counter() - start) * 1e3)
    res = dict(arch=args.arch, quant=args.quant, first=args.first, tpot_ms=statistics.median(times),
               device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu")
    print(json.dumps(res))
    with open(args.out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
