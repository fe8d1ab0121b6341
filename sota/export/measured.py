"""`measure.from_export: true`: a run's final model exported into its run directory and measured by
`python -m sota.tools.bench --from` in a fresh process, so memory counts what loading the artifact costs (no
float copy, no training, no evaluation before it) rather than everything the run's process did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sota.export import write
from sota.models.audio_llm import AudioLLM

EXPORT_DIR = "export"
BENCH_FILE = "export_bench.json"
# measure.* keys handed to the fresh process as they are
PASSED = ("warmup", "iterations", "clip_s", "e2e_repeats", "max_new_tokens", "seed", "task", "cpu_threads")


def measure(model: AudioLLM, cfg: DictConfig, record: dict[str, Any], results: dict[str, Any], out_dir: Path,
            device: str) -> dict[str, Any]:
    """Export the model to `out_dir/export`, measure it in a fresh process; the efficiency keys of that
    measurement, with `source: export`."""
    export_dir = out_dir / EXPORT_DIR
    spec = write.export(model, cfg, record, export_dir, source=f"the run {out_dir}", device=device, results=results)
    m = cfg.measure
    mode, backend = str(m.mode), str(cfg.generate.get("backend", "eager"))
    overrides = [f"measure.{k}={m.get(k)}" for k in PASSED if m.get(k) is not None]
    overrides.append(f"measure.device={m.get('device') or device}")
    cmd = [sys.executable, "-m", "sota.tools.bench", "--from", str(export_dir), "--modes", mode, "--backends", backend,
           "--no-hf-generate", "--out", str(out_dir / BENCH_FILE), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring the export in a fresh process failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    bench = json.loads((out_dir / BENCH_FILE).read_text())
    measured = dict(bench["results"][f"{backend}/{mode}"])
    measured["notes"] = [*measured.get("notes", []), "measured from the export in a fresh process "
                         f"(measure.from_export): {export_dir}; real test clips are not part of it"]
    return {**measured, "source": "export", "export_dir": str(export_dir), "export_bytes": spec["bytes"],
            "load_s": bench["build_s"]}
