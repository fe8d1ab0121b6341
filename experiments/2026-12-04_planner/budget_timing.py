"""The same 16-point grid sweep on the tiny preset run twice, one after the other on one machine: without a
budget, then with `budget.peak_memory_mb` set so that the planner skips a quarter of the points. Prints the wall
times, per-point times and skipped points, and writes them to budget_timing.json beside this file.

    .venv/bin/python experiments/2026-12-04_planner/budget_timing.py [--out /tmp/budget_timing]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# sweep=toy (tiny preset, 4 training steps, a 62-clip corpus) x four seeds = 16 points; the measurement shortened
# as tests/test_run.py shortens it, and the real-speech set left out (an untrained model answers its prompts up
# to the token budget). The corpus seed is fixed (conf/corpus/natural.yaml), so every point shares one corpus.
GRID = ["sweep=toy", "+sweep.params.seed=[0,1,2,3]", "workers=1", "wandb.mode=disabled",
        *(f"+sweep.base.{o}" for o in ("measure.warmup=1", "measure.iterations=2", "measure.real_clips=1",
                                        "measure.e2e_repeats=1", "measure.cpu_threads=1", "data.real_test=null"))]
# The planner's peaks of the four model shapes (sweep.py plan, CPU): tiny_s 56.1 / int8 53.8, tiny_m 69.9 /
# int8 60.9 MB. 65 MB puts tiny_m in float32 over: 4 of the 16 points.
BUDGET = "+sweep.budget.peak_memory_mb=65"
# The first point's run, once before both sweeps: the corpus and the encoder's feature cache are then warm for both.
WARM = ["model=tiny", "llm=tiny_s", "quant=none", "trainer=smoke", "logger=csv", "data.max_clip_s=5.0",
        "corpus.asr_train=24", "corpus.asr_val=4", "corpus.asr_test=6", "corpus.aac_train=12", "corpus.aac_val=4",
        "corpus.aac_test=4", "data.max_eval_samples=8", "measure.warmup=1", "measure.iterations=2",
        "measure.real_clips=1", "measure.e2e_repeats=1", "measure.cpu_threads=1", "data.real_test=null"]


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def sweep(out: Path, name: str, *extra: str) -> dict:
    d = out / name
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "sweep.py", *GRID, f"sweep.name={name}", f"sweep_dir={d}", *extra],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    entries = [json.loads(x) for x in (d / "points.jsonl").read_text().splitlines()]
    return {"wall_s": round(wall, 1), "summary": proc.stdout.strip().splitlines()[-1],
            "points": sorted(({"id": e["id"], "params": e["params"], "status": e["status"],
                               "wall_s": e.get("wall_s"), "error": e.get("error")} for e in entries),
                             key=lambda e: e["id"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/budget_timing"))
    args = parser.parse_args()
    record = {"load_before": load()}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "run.py", *WARM, f"hydra.run.dir={args.out / 'warm'}"], cwd=ROOT, check=True,
                   capture_output=True)
    record["warm_run_s"] = round(time.perf_counter() - t0, 1)
    record["without"] = sweep(args.out, "no_budget")
    record["load_between"] = load()
    record["with"] = sweep(args.out, "budget", BUDGET)
    record["load_after"] = load()
    record["ratio"] = round(record["with"]["wall_s"] / record["without"]["wall_s"], 3)
    (HERE / "budget_timing.json").write_text(json.dumps(record, indent=1) + "\n")
    for key in ("without", "with"):
        r = record[key]
        ran = [p["wall_s"] for p in r["points"] if p["status"] == "ok"]
        print(f"{key} budget: {r['wall_s']} s wall, {len(ran)} points run, {sum(ran):.1f} s in points "
              f"(first {ran[0] if ran else None} s); {r['summary']}")
    for p in record["with"]["points"]:
        if p["status"] == "skipped":
            print(f"  skipped {p['id']} {p['params']}: {p['error']}")
    print(f"ratio {record['ratio']} (expected 12/16 = 0.75); load {record['load_before']} -> {record['load_after']}")


if __name__ == "__main__":
    main()
