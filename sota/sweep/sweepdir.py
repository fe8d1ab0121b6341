"""The sweep directory: who owns it (`sweep.json`), the points index (`points.jsonl`), each point's run dir
(`points/<id>/`, a run.py output dir with its results.json), and reading any of it -- or a plain Hydra
multirun dir -- back as result rows for the frontier.

    <sweep_dir>/sweep.json         name, spec hash and identity, report settings of the last invocation
    <sweep_dir>/points.jsonl       one line per point: id, overrides, status, error, exit code, key values
    <sweep_dir>/points/<id>/       run.py's run dir: results.json, stdout.log, stderr.log, .hydra/, ...
    <sweep_dir>/attempts/<id>.<n>/ earlier attempts of a point that was run again (rerun_failed, interrupted)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sota.sweep.frontier import Row, lookup
from sota.sweep.points import Point, spec_hash
from sota.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SWEEP_JSON = "sweep.json"
INDEX = "points.jsonl"
POINTS = "points"
ATTEMPTS = "attempts"
RESULTS = "results.json"
STATUSES = ("pending", "ok", "failed")
# Folders inside a run dir that never hold another run (skipped when a multirun dir is scanned).
_NOT_RUNS = {"wandb", "checkpoints", "csv", ".hydra", ATTEMPTS, "__pycache__", "lightning_logs"}


class SweepDirError(RuntimeError):
    """The directory belongs to another sweep, or holds no runs to report."""


def point_dir(sweep_dir: Path, pid: str) -> Path:
    return sweep_dir / POINTS / pid


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None if it is missing or unreadable (a half-written file is no result)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------------------- ownership

def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}: {json.dumps(a)} there, {json.dumps(b)} now")
    return out


def claim(sweep_dir: Path, name: str, ident: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Make `sweep_dir` this sweep's, or check that it already is; refuse a directory of another sweep."""
    h = spec_hash(ident)
    path = sweep_dir / SWEEP_JSON
    record = read_json(path) if path.exists() else None
    if path.exists() and record is None:
        raise SweepDirError(f"{path} is unreadable, so {sweep_dir} cannot be checked as this sweep's directory; "
                            "choose another sweep_dir=...")
    if record is None and ((sweep_dir / POINTS).exists() or (sweep_dir / INDEX).exists()):
        raise SweepDirError(f"{sweep_dir} holds points but no {SWEEP_JSON}: it was not made by sweep.py for this "
                            "sweep; choose another sweep_dir=... or move it away")
    if record is not None and record.get("spec_hash") != h:
        diff = _differences(record.get("identity") or {}, ident)
        raise SweepDirError(
            f"{sweep_dir} belongs to a different sweep config: sweep {record.get('name')!r} with spec hash "
            f"{record.get('spec_hash')}, while sweep {name!r} here hashes to {h}. Differences:\n  - "
            + "\n  - ".join(diff or ["(identity not recorded)"])
            + "\nResuming it would mix points of two sweeps. Choose another sweep_dir=... or move the old one away.")
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    record = {**(record or {"created": now}), "name": name, "spec_hash": h, "identity": dict(ident),
              "settings": dict(settings), "updated": now}
    atomic_write_json(path, record)
    return record


# ----------------------------------------------------------------------------------------------- index

class Index:
    """points.jsonl: the plan and the state of every point, rewritten whole (atomically) on each change.
    Only the sweep's main thread writes it."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / INDEX
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.entries[entry["id"]] = entry

    def get(self, pid: str) -> dict[str, Any] | None:
        return self.entries.get(pid)

    def plan(self, points: Iterable[Point]) -> None:
        """Add points not yet listed, as pending."""
        for p in points:
            self.entries.setdefault(p.id, {**p.record(), "status": "pending", "error": None})

    def update(self, entry: dict[str, Any]) -> None:
        self.entries[entry["id"]] = {**self.entries.get(entry["id"], {}), **entry}
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(e, default=str) + "\n" for e in self.entries.values()))

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for e in self.entries.values():
            out[e.get("status", "pending")] = out.get(e.get("status", "pending"), 0) + 1
        return out


def state(sweep_dir: Path, pid: str, entry: Mapping[str, Any] | None) -> str:
    """ok | failed | pending. results.json is the truth; a point that died without one is failed only if the
    index recorded it so (an interrupted sweep leaves it pending, to run again)."""
    results = read_json(point_dir(sweep_dir, pid) / RESULTS)
    if results is not None:
        return "ok" if results.get("status") == "ok" else "failed"
    return "failed" if entry and entry.get("status") == "failed" else "pending"


def set_aside(sweep_dir: Path, pid: str) -> Path | None:
    """Move an earlier attempt's run dir to attempts/<id>.<n> so the new attempt starts clean (run.py only
    refuses a finished run dir, but a stale failed results.json must not pass for the new attempt's)."""
    return move_to_attempts(point_dir(sweep_dir, pid), sweep_dir / ATTEMPTS, pid)


def move_to_attempts(src: Path, attempts: Path, name: str) -> Path | None:
    """Move run dir `src`, if it exists, to `attempts`/<name>.<n> (the first free n): kept, never overwritten."""
    if not src.exists():
        return None
    n = 1
    while (attempts / f"{name}.{n}").exists():
        n += 1
    dst = attempts / f"{name}.{n}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    return dst


def key_values(results: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    return {k: lookup(dict(results), k) for k in keys} if results else {}


# ------------------------------------------------------------------------------------------------- rows

def load_rows(directory: str | Path) -> list[Row]:
    """Result rows of a sweep dir (made by sweep.py) or of any dir of Hydra runs (`multirun/<date>/<time>/`,
    nested or not): one row per finished point, with `id`, `status`, `error`, `overrides` and results.json's
    sections. Pending points are left out."""
    root = Path(directory)
    if not root.is_dir():
        raise SweepDirError(f"{root} is not a directory")
    rows = _sweep_rows(root) if (root / SWEEP_JSON).is_file() else _multirun_rows(root)
    if not rows:
        raise SweepDirError(f"{root} holds no finished runs: no results.json below it, and no run dirs "
                            "(.hydra/) of runs that died")
    return rows


def sweep_name(directory: str | Path) -> str:
    record = read_json(Path(directory) / SWEEP_JSON)
    return str(record["name"]) if record and record.get("name") else Path(directory).resolve().name


def _row(pid: str, results: dict[str, Any] | None, overrides: list[str], fallback_error: str | None,
         extra: Mapping[str, Any] | None = None) -> Row:
    row: Row = dict(results or {})
    ok = results is not None and results.get("status") == "ok"
    row.update({"id": pid, "status": "ok" if ok else "failed", "overrides": overrides,
                "error": row.get("error") if results is not None else fallback_error, **(extra or {})})
    if not ok and not row["error"]:
        row["error"] = fallback_error or "failed without an error message"
    return row


def _sweep_rows(root: Path) -> list[Row]:
    index = Index(root)
    ids = list(index.entries)
    if (root / POINTS).is_dir():  # a lost or stale index must not hide finished points
        ids += sorted(p.name for p in (root / POINTS).iterdir() if p.name not in index.entries and p.is_dir())
    rows = []
    for pid in ids:
        entry = index.get(pid) or {}
        results = read_json(point_dir(root, pid) / RESULTS)
        if results is None and entry.get("status") != "failed":
            continue  # pending, running or interrupted
        extra = {k: entry[k] for k in ("index", "params", "exit_code", "wall_s", "trial") if k in entry}
        rows.append(_row(pid, results, list(entry.get("overrides") or _hydra_overrides(point_dir(root, pid))),
                         entry.get("error"), extra))
    return rows


def _hydra_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path) if not str(o).startswith("hydra.")]


def _log_tail(run_dir: Path, chars: int = 800) -> str:
    logs = sorted(run_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1].read_text(errors="replace")[-chars:].strip() if logs else ""


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _multirun_rows(root: Path) -> list[Row]:
    rows = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted((d for d in dirs if d not in _NOT_RUNS), key=_natural)  # job 2 before job 10
        run_dir = Path(here)
        if RESULTS not in files and not (run_dir / ".hydra" / "overrides.yaml").is_file():
            continue
        dirs[:] = []  # a run dir does not nest runs
        pid = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
        results = read_json(run_dir / RESULTS)
        tail = _log_tail(run_dir) if results is None else ""
        error = "no results.json: the run died before writing it" + (f"; log tail: {tail}" if tail else "")
        rows.append(_row(pid, results, _hydra_overrides(run_dir), error))
    return rows
