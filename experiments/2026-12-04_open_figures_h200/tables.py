"""points.csv of this folder from the points' results.json (results/): python tables.py"""
import csv
import json
from pathlib import Path

HERE = Path(__file__).parent
COLUMNS = ["id", "point", "status", "asr_wer", "real_asr_wer", "aac_cider_d", "weight_mb", "peak_memory_mb",
           "ttft_ms", "tpot_ms", "train_s", "avg_bits", "mixed_counts", "audio_tokens_kept"]
with open(HERE / "paired.csv") as fh:   # the point column: each point's overrides
    names = {row["id"]: row["point"] for row in csv.DictReader(fh)}
rows = []
for f in sorted((HERE / "results").glob("*.json")):
    r = json.loads(f.read_text())
    m, e, mo = r.get("metrics") or {}, r.get("efficiency") or {}, r.get("model") or {}
    q, tok = (r.get("compression") or {}).get("quant") or {}, (r.get("compression") or {}).get("tokens") or {}
    rows.append({"id": f.stem, "point": names.get(f.stem, ""), "status": r["status"],
                 "asr_wer": m.get("asr/wer"), "real_asr_wer": m.get("real/asr/wer"), "aac_cider_d": m.get("aac/cider_d"),
                 "weight_mb": round(mo.get("weight_bytes", 0) / 1e6, 1), "peak_memory_mb": e.get("peak_memory_mb"),
                 "ttft_ms": e.get("ttft_ms"), "tpot_ms": e.get("tpot_ms"), "train_s": (r.get("timing") or {}).get("train_s"),
                 "avg_bits": q.get("avg_bits"), "mixed_counts": q.get("counts"), "audio_tokens_kept": tok.get("kept_ratio")})
with open(HERE / "points.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, COLUMNS)
    w.writeheader()
    w.writerows(rows)
print(f"{len(rows)} points -> points.csv")
