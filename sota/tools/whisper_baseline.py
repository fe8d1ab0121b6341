"""The bar the audio-LLM is measured against: Whisper tiny.en's own decoder (the encoder `mini` and `tiny` share),
greedy, on any SALMONN-style speech manifest, scored like a run (WER/CER after Whisper's English normalizer).

    python -m sota.tools.whisper_baseline ../shared/realdev/asr/manifest.json [--out predictions.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from sota.data.audio import load_audio
from sota.data.manifest import read_manifest
from sota.metrics.asr import asr_scores
from sota.models.hub import resolve_pretrained

MODEL = "bundled:whisper-tiny.en"


@torch.no_grad()
def transcribe(manifest: str | Path, model_ref: str = MODEL, batch_size: int = 16) -> list[dict]:
    """One row per speech clip of `manifest`: id, reference, Whisper's greedy transcript (clips over 30 s are
    cut there by Whisper's feature extractor: the row says so)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    local = resolve_pretrained(model_ref, key="model")
    processor = WhisperProcessor.from_pretrained(local, local_files_only=True)
    model = WhisperForConditionalGeneration.from_pretrained(local, local_files_only=True).eval()
    return greedy(model, processor, [s for s in read_manifest(manifest, tasks=["asr"]) if s.text], batch_size)


@torch.no_grad()
def greedy(model: Any, processor: Any, samples: list, batch_size: int = 16) -> list[dict]:
    """`transcribe`'s rows for `samples` (speech rows of a manifest) with a Whisper model already loaded."""
    rows = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        waves = [load_audio(s.path) for s in batch]
        inputs = processor(waves, sampling_rate=16000, return_tensors="pt")
        ids = model.generate(inputs.input_features, max_new_tokens=200)
        for s, w, text in zip(batch, waves, processor.batch_decode(ids, skip_special_tokens=True)):
            rows.append({"id": s.id, "reference": s.text, "prediction": text.strip(),
                         "cut_at_30s": len(w) > 30 * 16000})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sota.tools.whisper_baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="a SALMONN-style manifest with speech rows (task asr, text)")
    parser.add_argument("--model", default=MODEL, help="bundled name, local directory or cached hub id")
    parser.add_argument("--out", help="write the predictions here (JSON lines)")
    args = parser.parse_args(argv)
    rows = transcribe(args.manifest, args.model)
    if not rows:
        sys.exit(f"{args.manifest}: no speech rows with a transcript")
    scores = asr_scores([r["reference"] for r in rows], [r["prediction"] for r in rows])
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({"manifest": str(args.manifest), "model": args.model, "clips": len(rows),
                      "cut_at_30s": sum(r["cut_at_30s"] for r in rows), "wer": scores.metrics["asr/wer"],
                      "cer": scores.metrics["asr/cer"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
