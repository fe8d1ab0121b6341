"""W&B for a sweep: each point a run in one group named after the sweep (config, overrides, results summary,
and its per-clip table: reference text, its answer, the reference point's answer, per-clip WER, the audio),
plus a summary run with a table of all points, a scatter of them, the frontier as a line, and the frontier
PNG and HTML. Offline by default (`<sweep_dir>/wandb/offline-run-*`, uploaded later by `wandb sync`).

W&B is a view, never the record: results.json and points.jsonl are. Any W&B failure is logged as a warning and
the sweep goes on. Points are logged once per status (`wandb.json` remembers which), so a resumed sweep does not
log its finished points again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sota.sweep.frontier import Objective, Row, is_ok, number, pareto_front
from sota.sweep.sweepdir import read_json
from sota.utils.io import atomic_write_json

log = logging.getLogger(__name__)

LOGGED = "wandb.json"
SUMMARY_SECTIONS = ("metrics", "model", "efficiency", "timing")
# Clips per point logged with their audio: W&B copies each file into the run, and a sweep of 20 points over a
# 300-clip test set would copy 6,000 files. Every clip still gets its row; the cut is logged.
CLIP_AUDIO = 100
CLIP_COLUMNS = ("split", "id", "task", "reference", "answer", "reference_answer", "wer", "audio")


def _flat_numbers(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in SUMMARY_SECTIONS:
        for k, v in (row.get(section) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{section}/{k}" if section != "metrics" else k] = v
    return out


def log_sweep(sweep_dir: Path, group: str, rows: Sequence[Row], objectives: Sequence[Objective],
              files: Mapping[str, Path], settings: Mapping[str, Any]) -> None:
    """Log new points and a fresh summary run. Never raises."""
    mode = str(settings.get("mode", "offline"))
    if mode == "disabled":
        return
    try:
        _log(sweep_dir, group, rows, objectives, files, settings, mode)
    except Exception as err:  # a W&B problem must never cost a sweep its report
        log.warning("W&B logging failed (%s: %s); results.json, points.jsonl and the frontier files are complete",
                    type(err).__name__, err)


def _init(settings: Mapping[str, Any], mode: str, sweep_dir: Path, **kwargs: Any) -> Any:
    import wandb

    return wandb.init(project=settings.get("project") or "sota", entity=settings.get("entity"), mode=mode,  # type: ignore[arg-type]
                      dir=str(sweep_dir), reinit="finish_previous",
                      settings=wandb.Settings(silent=True, console="off"), **kwargs)


def _reference(rows: Sequence[Row]) -> Row | None:
    """The point every clip table compares with (the sweep's first, as `sweep.py paired`), None if it failed."""
    from sota.sweep.remeasure import reference_row
    from sota.sweep.sweepdir import SweepDirError

    try:
        return reference_row(rows)
    except SweepDirError as err:
        log.warning("W&B clip tables without the reference point's answers: %s", err)
        return None


def _clip_table(sweep_dir: Path, row: Row, reference: Row | None) -> Any:
    """The point's clips as a wandb.Table (review.clip_rows, with wandb.Audio), or None when it has no answers."""
    import wandb

    from sota.sweep.review import clip_rows
    from sota.sweep.sweepdir import SweepDirError

    try:
        clips = clip_rows(sweep_dir, row, reference)
    except (SweepDirError, OSError, ValueError) as err:  # the point's run and the rest of the sweep still log
        log.warning("W&B: no clip table for point %s: %s", row["id"], err)
        return None
    data, playable = [], [c for c in clips if c["audio"] is not None and Path(c["audio"]).is_file()]
    with_audio = {id(c) for c in playable[:CLIP_AUDIO]}
    for c in clips:
        audio = wandb.Audio(str(c["audio"]), caption=f"{c['split']}:{c['id']}") if id(c) in with_audio else None
        data.append([*(c[k] for k in CLIP_COLUMNS[:-1]), audio])
    if len(clips) > len(with_audio):
        log.info("W&B: point %s: %d clips, %d with audio (%d have no audio file found; at most %d are copied)",
                 row["id"], len(clips), len(with_audio), len(clips) - len(playable), CLIP_AUDIO)
    return wandb.Table(columns=list(CLIP_COLUMNS), data=data)


def _log(sweep_dir: Path, group: str, rows: Sequence[Row], objectives: Sequence[Objective],
         files: Mapping[str, Path], settings: Mapping[str, Any], mode: str) -> None:
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    logged_path = sweep_dir / LOGGED
    logged: dict[str, str] = (read_json(logged_path) or {}) if logged_path.exists() else {}
    new = [r for r in rows if logged.get(str(r["id"])) != r.get("status")]
    reference = _reference(rows) if new else None
    for row in new:
        config = {"overrides": list(row.get("overrides") or []), "params": row.get("params") or {},
                  "sweep": group, **(row.get("config") or {})}
        run = _init(settings, mode, sweep_dir, group=group, job_type="point", name=str(row["id"]), config=config)
        run.summary.update({**_flat_numbers(row), "status": row.get("status"), "error": row.get("error")})
        if is_ok(row):
            clips = _clip_table(sweep_dir, row, reference)
            if clips is not None:
                run.log({"clips": clips})
        run.finish(exit_code=0 if is_ok(row) else 1)
        logged[str(row["id"])] = str(row.get("status"))
        atomic_write_json(logged_path, logged)

    acc, cost = objectives[0], objectives[1]
    front = {id(r) for r in pareto_front(rows, objectives)}
    columns = ["id", "status", "on_frontier", acc.label, cost.label, "overrides", "error"]
    data = [[str(r["id"]), r.get("status"), id(r) in front, number(r, acc.key), number(r, cost.key),
             " ".join(r.get("overrides") or []), r.get("error") or ""] for r in rows]
    run = _init(settings, mode, sweep_dir, group=group, job_type="summary", name=f"{group}/summary",
                config={"sweep": group, "objectives": [str(o) for o in objectives], "points": len(rows)})
    points = wandb.Table(columns=columns, data=data)
    ok = wandb.Table(columns=columns, data=[d for d in data if d[1] == "ok" and d[3] is not None and d[4] is not None])
    frontier_rows = sorted((d for d in data if d[2]), key=lambda d: d[4])
    frontier = wandb.Table(columns=columns, data=frontier_rows)
    payload: dict[str, Any] = {
        "points": points,
        "frontier_points": frontier,
        "scatter": wandb.plot.scatter(ok, x=cost.label, y=acc.label, title=f"{acc.label} vs {cost.label}"),
        "frontier": wandb.plot.line(frontier, x=cost.label, y=acc.label,
                                    title=f"Pareto frontier: {acc.label} vs {cost.label}"),
    }
    if files.get("png") and Path(files["png"]).is_file():
        payload["frontier_png"] = wandb.Image(str(files["png"]))
    if files.get("html") and Path(files["html"]).is_file():
        payload["frontier_html"] = wandb.Html(Path(files["html"]).read_text())
    run.log(payload)
    hv = read_json(Path(files["hypervolume"])) if files.get("hypervolume") else None
    for step in (hv or {}).get("history", []):   # the frontier's growth as the points finished
        run.log({"hypervolume": step["hypervolume"], "points_finished": step["points"]})
    if hv is not None:
        run.summary.update({"hypervolume": hv.get("hypervolume"), "hypervolume_reference": json.dumps(hv["reference"])})
    run.summary.update({"points": len(rows), "failed": sum(not is_ok(r) for r in rows),
                        "frontier_ids": json.dumps(sorted(str(d[0]) for d in frontier_rows))})
    run.finish()
    log.info("W&B (%s): %d point run(s) and a summary run in group %r under %s", mode, len(new), group,
             sweep_dir / "wandb")
