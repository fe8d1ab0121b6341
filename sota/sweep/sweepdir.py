"""The sweep directory: who owns it (`sweep.json`), the points index (`points.jsonl`), each point's run dir
(`points/<id>/`, a run.py output dir with its results.json), and reading any of it -- or a plain Hydra
multirun dir -- back as result rows for the frontier.

    <sweep_dir>/sweep.json         name, spec hash and identity, report settings of the last invocation
    <sweep_dir>/points.jsonl       one line per point: id, overrides, status, error, exit code, key values
    <sweep_dir>/points/<id>/       run.py's run dir: results.json, stdout.log, stderr.log, .hydra/, ...
    <sweep_dir>/attempts/<id>.<n>/ earlier attempts of a point that was run again (rerun_failed, interrupted)
    <sweep_dir>/children/<id>.json the point processes running now (sota.sweep.children), for a resume to kill
                                   those a killed driver left behind

A point's results.json counts only if it reads and passes `results_problems` (status "invalid" otherwise, the
error naming the file and keys). What cannot be read is set aside, never deleted, and its point runs again:
an unreadable results.json becomes `results.json.corrupt-<n>`, a points.jsonl with unreadable lines is
copied to `points.jsonl.corrupt-<n>`.
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

from sota.run_dir import RESULTS  # one name for what every run writes
from sota.sweep.frontier import Row, lookup
from sota.sweep.points import Point, spec_hash
from sota.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SWEEP_JSON = "sweep.json"
INDEX = "points.jsonl"
POINTS = "points"
ATTEMPTS = "attempts"
CHILDREN = "children"
STATUSES = ("pending", "ok", "failed")
SKIPPED = "skipped"   # over the sweep's budget by the planner's prediction: never launched (sota/sweep/budget.py)
INVALID = "invalid"   # results.json says ok but breaks the schema: counted apart, rerun like a failed point
# Sections of results.json (sota/tasks.py writes them all); `metrics` is the one a result cannot lack.
SECTIONS = ("config", "metrics", "model", "efficiency", "compression", "timing", "data", "provenance")
REQUIRED_SECTIONS = ("metrics",)
# Metrics are numbers or null, except the notes that explain a null (`aac/spider_note`, `note`) and the
# manifest a real-speech score came from (`real/manifest`).
_TEXT_METRIC = re.compile(r"(?:^|[/_])(?:note|manifest)$")
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
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------- results

def _load(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in `path`, None), (None, why it is unreadable), or (None, None) when it is missing."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        return None, f"{type(err).__name__}: {err}"
    if not isinstance(data, dict):
        return None, f"it holds a JSON {type(data).__name__}, not an object"
    return data, None


def unreadable(path: Path) -> str | None:
    """Why the existing file `path` is no JSON object (None when it is one, or when it is missing)."""
    return _load(path)[1]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def results_problems(results: Mapping[str, Any]) -> list[str]:
    """What keeps a results.json that says ok from counting: a missing or malformed section, a metric that
    is neither a number nor null. Each problem names its key."""
    problems = [f"section {name!r} is missing" for name in REQUIRED_SECTIONS if name not in results]
    problems += [f"section {name!r} is {_shown(results[name])}, not a mapping" for name in SECTIONS
                 if name in results and not isinstance(results[name], Mapping)]
    metrics = results.get("metrics")
    if isinstance(metrics, Mapping):
        problems += [f"metrics.{k} is {_shown(v)}, not a number or null" for k, v in metrics.items()
                     if v is not None and not _is_number(v) and not _TEXT_METRIC.search(str(k))]
    return problems


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def read_results(path: Path) -> dict[str, Any] | None:
    """A run's results.json as sweeps count it (the one place that decides): None when it is missing; status
    "failed" when it cannot be read, status "invalid" when it says ok but `results_problems` finds something,
    each with an error that names the file and what is wrong."""
    results, why = _load(path)
    if why is not None:
        return {"status": "failed", "error": f"{path} is unreadable ({why})"}
    if results is None or results.get("status") != "ok":
        return results
    problems = results_problems(results)
    if problems:
        return {**results, "status": INVALID, "error": f"{path} says ok but is invalid: " + "; ".join(problems)}
    return results


def set_aside_unreadable(path: Path) -> Path | None:
    """Rename an unreadable results.json to results.json.corrupt-<n> (its point then counts as not run) and
    say so; returns the new name, or None when `path` is readable or missing."""
    why = unreadable(path)
    if why is None:
        return None
    dst = _free(path.with_name(path.name + ".corrupt-"))
    path.rename(dst)
    log.warning("%s is unreadable (%s): set aside as %s; its point runs again", path, why, dst.name)
    return dst


def _free(stem: Path) -> Path:
    """`stem` + the first n (1, 2, ...) not yet taken."""
    n = 1
    while Path(f"{stem}{n}").exists():
        n += 1
    return Path(f"{stem}{n}")


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
    Only the sweep's main thread writes it.

    A line that does not read as a point's entry (a truncated last line, stray bytes) is skipped with a
    warning naming the file and line: its point is then planned afresh, and its results.json, if it reads,
    still says how it went. With `set_aside_corrupt` (the driver, which rewrites the file), the file as it
    was is first copied to points.jsonl.corrupt-<n>, since the rewrite drops the bad lines."""

    def __init__(self, sweep_dir: Path, set_aside_corrupt: bool = False) -> None:
        self.path = sweep_dir / INDEX
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self._read(set_aside_corrupt)

    def _read(self, set_aside_corrupt: bool) -> None:
        bad = []
        for n, raw in enumerate(self.path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError as err:  # bad JSON or bad UTF-8
                bad.append(f"line {n} ({type(err).__name__}: {err})")
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                bad.append(f"line {n} (not an object with an id: {_shown(entry)})")
                continue
            self.entries[entry["id"]] = entry
        if not bad:
            return
        if set_aside_corrupt:
            copy = _free(self.path.with_name(self.path.name + ".corrupt-"))
            shutil.copyfile(self.path, copy)
            kept = f"the file as it was is kept as {copy.name}; "
        else:
            kept = ""
        log.warning("%s: %s unreadable, skipped; %sthe point(s) of those lines run again unless their "
                    "results.json shows them finished", self.path, "; ".join(bad), kept)

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
    """ok | invalid | failed | pending. results.json is the truth; a point that died without one is failed only
    if the index recorded it so (an interrupted sweep leaves it pending, to run again)."""
    results = read_results(point_dir(sweep_dir, pid) / RESULTS)
    if results is not None:
        return results["status"] if results.get("status") in ("ok", INVALID, SKIPPED) else "failed"
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
    kept = results.get("status") if results is not None and results.get("status") in (INVALID, SKIPPED) else None
    status = "ok" if ok else kept or "failed"
    row.update({"id": pid, "status": status, "overrides": overrides,
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
        results = read_results(point_dir(root, pid) / RESULTS)
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
        results = read_results(run_dir / RESULTS)
        tail = _log_tail(run_dir) if results is None else ""
        error = "no results.json: the run died before writing it" + (f"; log tail: {tail}" if tail else "")
        rows.append(_row(pid, results, _hydra_overrides(run_dir), error))
    return rows
