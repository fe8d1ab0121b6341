"""The planner's predictions for the validation rows against the peaks measured on an H200 (the figures are
read from the experiments that measured them). Run: .venv/bin/python experiments/2026-12-04_planner/error_table.py"""

import csv
import json
from pathlib import Path

from sota.compose import compose
from sota.plan import plan

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "experiments/2026-12-03_export_h200"
FRONTIER = ROOT / "experiments/2026-11-29_mini_frontier/frontier.csv"
HUB = ["encoder.second.path=null", "+encoder.second.config={model_type:hubert,hidden_size:768,num_hidden_layers:12,"
       "num_attention_heads:12,intermediate_size:3072}"]
# mini as the frontier ran it (commit b17decb): the Q-Former connector, no buckets, a 5 s context
MINI_THEN = ["connector=qformer", "encoder.bucket_s=null", "data.max_clip_s=5.0"]


def seed(name: str, overrides: list[str], mode: str) -> tuple[str, list[str], float]:
    runs = json.loads((EXPORT / f"seed_{name}.json").read_text())["results"]
    return f"seed {name} ({mode}, from export)", overrides, runs[f"eager/{mode}"]["peak_memory_mb"]


ROWS = [
    seed("7b", ["experiment=salmonn_7b", "llm=shape_only", "llm.arch=lmsys/vicuna-7b-v1.5", *HUB,
                "measure=official", "measure.from_export=true"], "official"),
    seed("3b", ["experiment=salmonn_3b_baseline", "llm=shape_only", "llm.arch=meta-llama/Llama-3.2-3B-Instruct",
                *HUB, "measure=official", "measure.from_export=true"], "official"),
    seed("1b_nf4", ["experiment=sota_1b_4bit", "llm=shape_only", "llm.arch=meta-llama/Llama-3.2-1B-Instruct", *HUB,
                    "measure=official", "measure.from_export=true"], "official"),
    ("seed 1b_nf4 (strict, built in-process)", ["experiment=sota_1b_4bit", "llm=shape_only",
     "llm.arch=meta-llama/Llama-3.2-1B-Instruct", *HUB, "measure=strict"], 3264.0),
]


def frontier_rows():
    for r in csv.DictReader(FRONTIER.open()):
        ov = [o for o in r["overrides"].split(" ") if not o.startswith(("init_from", "encoder.path", "llm.path"))]
        backend = next((o.split("=")[1] for o in ov if o.startswith("backend=")), "static")
        if backend != "eager" and "quant=nf4" not in ov:
            continue   # static/compiled peaks then held evaluation's batch decoders (fixed in 2b122c2): no row
        yield f"mini {r['id']} {r['param:point']}", [ov[0], *MINI_THEN, *ov[1:]], float(r["efficiency.peak_memory_mb"])


OPEN = ROOT / "experiments/2026-12-04_open_figures_h200"


def open_figures_rows():
    """The eval points of a later `mini` study whose quantization the planner can size (not quant=mixed, whose
    map only the run knows)."""
    spec = json.loads((OPEN / "sweep.json").read_text())["identity"]
    base = [o for o in spec["base"] if not o.startswith(("init_from", "encoder.path", "data.real_test"))]
    ids = sorted(f.stem for f in (OPEN / "results").glob("*.json"))
    for pid, point in zip(ids, spec["points"]):
        r = json.loads((OPEN / "results" / f"{pid}.json").read_text())
        if r["status"] != "ok" or "task=eval" not in point or "quant=mixed" in point:
            continue
        yield f"mini {pid} {','.join(point)}", [*base, *point], float(r["efficiency"]["peak_memory_mb"])


def main() -> None:
    print("| row | measured MB | predicted MB | error | weights MiB | widest stage | stage MiB |")
    print("|---|---|---|---|---|---|---|")
    for label, overrides, measured in [*ROWS, *frontier_rows(), *open_figures_rows()]:
        p = plan(compose([*overrides, "trainer=gpu"]), "cuda")
        widest = max((s for s in p.stages if s.name != "kv cache"), key=lambda s: s.bytes)
        print(f"| {label} | {measured:.0f} | {p.peak_memory_mb:.0f} | {100 * (p.peak_memory_mb / measured - 1):+.1f} % "
              f"| {p.weight_bytes / 2**20:.0f} | {widest.name} | {widest.bytes / 2**20:.0f} |")


if __name__ == "__main__":
    main()
