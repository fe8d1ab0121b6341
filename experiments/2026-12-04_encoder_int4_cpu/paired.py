"""Paired bootstrap intervals (sota.sweep.paired.paired_delta) of each setting's WER against float32, from the
predictions `encoder_int4.py` wrote: python experiments/2026-12-04_encoder_int4_cpu/paired.py DIR [DIR ...]"""
import json
import sys
from pathlib import Path

from sota.metrics.asr import asr_scores
from sota.sweep.paired import paired_delta


def errors(path: Path) -> dict[str, tuple[int, int]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    scored = asr_scores([r["reference"] for r in rows], [r["prediction"] for r in rows]).rows
    return {r["id"]: (s["substitutions"] + s["deletions"] + s["insertions"], s["hits"] + s["substitutions"] + s["deletions"])
            for r, s in zip(rows, scored) if not s["skipped"]}


def main(dirs: list[str]) -> None:
    files = {f"{Path(d).name}/{p.stem}": p for d in dirs for p in sorted(Path(d).glob("*.jsonl"))}
    ref = errors(next(p for name, p in files.items() if name.endswith("/float32")))
    out = {}
    for name, path in files.items():
        delta, lo, hi = paired_delta(ref, errors(path))
        out[name] = {"delta_wer": round(delta, 4), "lo": round(lo, 4), "hi": round(hi, 4)}
        print(f"{name:28s} {delta:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    Path(dirs[0]).parent.joinpath("paired.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
