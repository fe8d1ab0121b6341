"""Each finished point's WER against the reference point's, paired on the same test clips:

    python sweep.py paired DIR [--reference ID] [--draws 10000] [--seed 0]

A sweep's points are scored on the same test split, so the honest question about "point X beats the
reference" is paired: resample the clips (a paired bootstrap) and read the 95 % interval of the WER
difference. Word errors per clip are counted again from each point's predictions.jsonl with the platform's
own normalization (sota.metrics.asr), so the differences add up to the points' corpus WERs. Where the
reference also answered the real-speech set (data.real_test, predictions_real.jsonl), the same is done there
in columns prefixed `real_`. Writes DIR/paired.csv; the reference is the sweep's first point unless
`--reference` names an id or id prefix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sota.sweep.frontier import Row, is_ok
from sota.sweep.points import describe
from sota.sweep.remeasure import reference_row
from sota.sweep.report import write_csv
from sota.sweep.sweepdir import SWEEP_JSON, SweepDirError, load_rows, point_dir

PREDICTIONS = "predictions.jsonl"
# (column prefix, answers file, results.json metric): the test split, then the real-speech set
SETS = (("", PREDICTIONS, "asr/wer"), ("real_", "predictions_real.jsonl", "real/asr/wer"))


def clip_errors(run_dir: Path, answers: str = PREDICTIONS) -> dict[str, tuple[int, int]]:
    """{clip id: (word errors, reference words)} of a run's scored ASR answers."""
    from sota.metrics.asr import asr_scores

    path = run_dir / answers
    if not path.is_file():
        raise SweepDirError(f"{path} is missing: a paired comparison needs each point's answers")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    asr = [r for r in rows if r.get("task") == "asr" and r.get("references")]
    if not asr:
        return {}
    scored = asr_scores([r["references"][0] for r in asr], [r["prediction"] for r in asr]).rows
    return {str(r["id"]): (s["substitutions"] + s["deletions"] + s["insertions"],
                           s["hits"] + s["substitutions"] + s["deletions"])
            for r, s in zip(asr, scored) if not s["skipped"]}


def paired_delta(ref: dict[str, tuple[int, int]], other: dict[str, tuple[int, int]], draws: int = 10000,
                 seed: int = 0) -> tuple[float, float, float]:
    """WER(other) - WER(ref) on their common clips, and the 2.5 and 97.5 percentiles of its bootstrap."""
    ids = sorted(set(ref) & set(other))
    if not ids:
        raise SweepDirError("no scored ASR clip in common with the reference")
    e_ref, e_other, words = (np.array(v, dtype=float) for v in
                             zip(*[(ref[i][0], other[i][0], ref[i][1]) for i in ids]))
    idx = np.random.default_rng(seed).integers(0, len(ids), size=(draws, len(ids)))
    deltas = (e_other[idx].sum(1) - e_ref[idx].sum(1)) / words[idx].sum(1)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float((e_other.sum() - e_ref.sum()) / words.sum()), float(lo), float(hi)


def run_dir_of(root: Path, row: Row) -> Path:
    return point_dir(root, row["id"]) if (root / SWEEP_JSON).is_file() else root / row["id"]


def pick_reference(rows: Sequence[Row], prefix: str | None) -> Row:
    """The finished row `prefix` names (an id or a unique id prefix), or the sweep's first point when None."""
    if prefix is None:
        return reference_row(rows)
    picked = [r for r in rows if is_ok(r) and (r["id"] == prefix or r["id"].startswith(prefix))]
    if len(picked) != 1:
        raise SweepDirError(f"--reference {prefix!r} matches {len(picked)} finished points; give an id or a "
                            f"unique id prefix (ids: {', '.join(r['id'] for r in rows[:8])} ...)")
    return picked[0]


def paired(directory: Path, reference: str | None = None, draws: int = 10000, seed: int = 0) -> dict[str, Any]:
    if draws < 100:
        raise ValueError(f"--draws must be at least 100, got {draws}")
    everything = load_rows(directory)
    ref_row = pick_reference(everything, reference)
    refs = set_errors(run_dir_of(directory, ref_row))
    if not refs[""]:
        raise SweepDirError(f"the reference point {ref_row['id']} has no scored ASR answers")
    table = [point_line(row, ref_row, refs, set_errors(run_dir_of(directory, row), refs), draws, seed)
             for row in everything if is_ok(row)]
    csv_path = directory / "paired.csv"
    write_csv(csv_path, table)
    return {"rows": table, "csv": csv_path}


def set_errors(run_dir: Path, like: dict[str, Any] | None = None) -> dict[str, dict[str, tuple[int, int]]]:
    """{column prefix: clip_errors} of each answer set the run has (the test split always; the real-speech set
    where answered). With `like` (the reference's), exactly its sets: a point run without the real-speech set
    has no clips there."""
    out = {}
    for prefix, answers, _ in SETS:
        if like is not None and prefix not in like:
            continue
        if prefix == "" or (run_dir / answers).is_file():
            out[prefix] = clip_errors(run_dir, answers)
        elif like is not None:
            out[prefix] = {}
    return out


def point_line(row: Row, ref_row: Row, refs: dict[str, dict[str, tuple[int, int]]],
               errors: dict[str, dict[str, tuple[int, int]]], draws: int = 10000, seed: int = 0) -> dict[str, Any]:
    """One row of paired.csv: the point's WER per answer set and its paired interval against the reference's."""
    line: dict[str, Any] = {"id": row["id"], "point": describe(row.get("params") or {}), "reference": ref_row["id"]}
    for prefix, _, metric in SETS:
        if prefix not in refs:
            continue
        mine = errors.get(prefix, {})
        line[f"{prefix}clips"] = len(set(refs[prefix]) & set(mine))
        line[f"{prefix}wer"] = (row.get("metrics") or {}).get(metric)
        delta = paired_delta(refs[prefix], mine, draws, seed) if line[f"{prefix}clips"] else (None,) * 3
        line.update(zip((f"{prefix}wer_delta", f"{prefix}wer_delta_lo", f"{prefix}wer_delta_hi"), delta))
        line[f"{prefix}verdict"] = _verdict(*delta)
    return line


def _verdict(delta: float | None, lo: float | None, hi: float | None) -> str:
    if delta is None:
        return "no common clips"
    if lo > 0:
        return "worse"
    if hi < 0:
        return "better"
    return "within noise"
