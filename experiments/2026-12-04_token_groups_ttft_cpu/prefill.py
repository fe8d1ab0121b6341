"""The LLM prefill of one 10 s clip (100 audio tokens + the prompt), with audio tokens merged by pairs or by
runs, plain or proportional attention, against no merging: every setting on the same model and the same
connector output in one process, rounds interleaved (the order rotated each round) so machine drift spreads
evenly. The medians are printed and written as JSON.

    python experiments/2026-12-04_token_groups_ttft_cpu/prefill.py OUT.json [rounds]
"""
import json
import statistics
import sys
import time

import torch

from sota.export import rebuild
from sota.measure.clips import noise_clip
from sota.measure.latency import _features

SETTINGS = {   # name: (keep, grouping, attention) or None for no merging
    "none": None,
    "pairs 0.68 plain": (0.68, "pairs", "plain"),
    "pairs 0.68 proportional": (0.68, "pairs", "proportional"),
    "runs 0.68 plain": (0.68, "runs", "plain"),
    "runs 0.68 proportional": (0.68, "runs", "proportional"),
    "runs 0.5 proportional": (0.5, "runs", "proportional"),
    "runs 0.4 proportional": (0.4, "runs", "proportional"),
}
PER_ROUND = 5


def main(out: str, rounds: int = 8) -> None:
    torch.set_num_threads(2)
    model, _, _ = rebuild.configured_model(["experiment=mini_gpu", "trainer=cpu", "encoder.dtype=float32"], "cpu")
    model.eval()
    inputs, frames = _features(model, noise_clip(model, 10.0, "asr"), "cpu")
    with torch.no_grad():
        embeds, mask = model.connect(model.encode(inputs), frames)
    times = {name: [] for name in SETTINGS}
    kept = {}
    names = list(SETTINGS)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            setting = SETTINGS[name]
            merger = model.__dict__.pop("token_merger", None)
            if merger is not None:
                merger.remove()
            if setting is not None:
                keep, grouping, attention = setting
                merger = model.merge_tokens(keep, 2, grouping=grouping, attention=attention)
            with torch.no_grad():
                model.prefill(embeds, mask, ["asr"])          # warm-up
                for _ in range(PER_ROUND):
                    t0 = time.perf_counter()
                    model.prefill(embeds, mask, ["asr"])
                    times[name].append((time.perf_counter() - t0) * 1000)
            if setting is not None:
                kept[name] = merger.record()["kept_ratio"]
    rows = {name: {"median_ms": round(statistics.median(v), 2), "p10_ms": round(sorted(v)[len(v) // 10], 2),
                   "p90_ms": round(sorted(v)[len(v) * 9 // 10], 2), "n": len(v),
                   "audio_tokens_kept": kept.get(name, 1.0)} for name, v in times.items()}
    for name, row in rows.items():
        print(f"{name:26s} {row['median_ms']:8.2f} ms  [{row['p10_ms']:.2f}, {row['p90_ms']:.2f}]  kept "
              f"{row['audio_tokens_kept']}")
    json.dump({"audio_tokens": int(mask.sum()), "rounds": rounds, "per_round": PER_ROUND, "prefill": rows},
              open(out, "w"), indent=2)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8)
