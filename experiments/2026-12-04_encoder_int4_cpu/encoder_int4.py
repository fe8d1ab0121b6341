"""What int4 costs the Whisper tiny.en encoder that `mini` and `tiny` share, on real speech, read through
Whisper's own decoder (kept in float32): the encoder's linears in compact int4 by round-to-nearest against
GPTQ calibrated on synthetic training clips (never on the evaluation audio), against int8 and float32.

    python experiments/2026-12-04_encoder_int4_cpu/encoder_int4.py OUT_DIR [--calib-clips 64] [--group-size 64]

Calibration: `--calib-clips` speech clips of the synthetic corpus's *train* split (found under
$SOTA_CACHE/data/synthetic/*/audio/train/asr_*.wav). Evaluation: ../shared/realdev/asr (read by path).
"""
import argparse
import glob
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from sota.compress import gptq, int4
from sota.data.audio import load_audio
from sota.data.manifest import read_manifest
from sota.metrics.asr import asr_scores
from sota.models.hub import resolve_pretrained
from sota.tools.whisper_baseline import MODEL, greedy

GROUP = 64   # --group-size


def encoder_linears(model):
    enc = model.model.encoder
    return {name: m for name, m in enc.named_modules() if isinstance(m, nn.Linear)}


def replace(model, name, layer):
    parent_name, _, child = name.rpartition(".")
    setattr(model.model.encoder.get_submodule(parent_name) if parent_name else model.model.encoder, child, layer)


def quantize(model, mode, calib_features):
    linears = encoder_linears(model)
    if mode == "float32":
        return {}
    if mode == "int8":   # per-row symmetric int8, dequantized into the float weight (the stored values)
        for lin in linears.values():
            w = lin.weight.data
            scale = w.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
            lin.weight.data = (w / scale).round().clamp(-127, 127) * scale
        return {"linears": len(linears)}
    if mode == "int4_rtn":
        for name, lin in linears.items():
            q, s, z = int4.rtn(lin.weight.data, GROUP)
            replace(model, name, int4.Int4Linear.from_codes(q, s, z, GROUP, lin.bias))
        return {"linears": len(linears)}
    if mode == "int4_gptq":
        def calibrate():
            with torch.no_grad():
                for f in calib_features:
                    model.model.encoder(f)
            return len(calib_features)

        def store(name, lin, q, s, z):
            replace(model, name, int4.Int4Linear.from_codes(q, s, z, GROUP, lin.bias))

        n, batches = gptq.quantize(linears, GROUP, calibrate, store)
        return {"linears": n, "calibration_batches": batches}
    raise ValueError(mode)


def main():
    global GROUP
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--manifest", default="../shared/realdev/asr/manifest.json")
    parser.add_argument("--calib-clips", type=int, default=64)
    parser.add_argument("--modes", default="float32,int8,int4_rtn,int4_gptq")
    parser.add_argument("--group-size", type=int, default=64)
    args = parser.parse_args()
    GROUP = args.group_size
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    torch.set_num_threads(2)
    local = resolve_pretrained(MODEL, key="model")
    processor = WhisperProcessor.from_pretrained(local, local_files_only=True)
    cache = os.environ.get("SOTA_CACHE", os.path.expanduser("~/.cache/sota"))
    calib_paths = sorted(glob.glob(f"{cache}/data/synthetic/*/audio/train/asr_*.wav"))[:args.calib_clips]
    if len(calib_paths) < args.calib_clips:
        raise SystemExit(f"{len(calib_paths)} synthetic training clips under {cache}/data/synthetic; build the corpus "
                         "first (python run.py ... builds it)")
    calib = [processor([load_audio(p) for p in calib_paths[i:i + 8]], sampling_rate=16000,
                       return_tensors="pt").input_features for i in range(0, len(calib_paths), 8)]
    samples = [s for s in read_manifest(args.manifest, tasks=["asr"]) if s.text]
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"manifest": args.manifest, "clips": len(samples), "calibration_clips": len(calib_paths),
               "group_size": GROUP, "results": {}}
    for mode in args.modes.split(","):
        model = WhisperForConditionalGeneration.from_pretrained(local, local_files_only=True).eval()
        t0 = time.perf_counter()
        info = quantize(model, mode, calib)
        quant_s = time.perf_counter() - t0
        rows = greedy(model, processor, samples, batch_size=8)
        scores = asr_scores([r["reference"] for r in rows], [r["prediction"] for r in rows]).metrics
        summary["results"][mode] = {"wer": scores["asr/wer"], "cer": scores["asr/cer"], **info,
                                    "quantize_s": round(quant_s, 1)}
        (args.out / f"{mode}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(mode, {k: v for k, v in summary["results"][mode].items()}, flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
