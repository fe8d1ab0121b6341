"""One sweep from its composed config (`conf/sweep_config.yaml`): claim the sweep dir, kill the points a
killed earlier driver left running, expand or search the points, run those not yet finished (each in its own
process), keep points.jsonl current, then write the frontier report and log to W&B."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sota.compose import compose, conf_dir
from sota.run_dir import LAST_CHECKPOINT
from sota.sweep import launch, points, sweepdir
from sota.sweep.budget import Budget, skipped_results
from sota.sweep.children import Children
from sota.sweep.frontier import Objective
from sota.sweep.points import Point, SweepSpecError
from sota.sweep.report import ObjectiveError, ReportSettings, write_report
from sota.sweep.sweepdir import (
    CHILDREN,
    INVALID,
    RESULTS,
    Index,
    SweepDirError,
    point_dir,
    read_results,
    set_aside_unreadable,
)
from sota.utils import gpu_share
from sota.utils.io import atomic_write_json

log = logging.getLogger(__name__)

# Problems of the sweep's config or directory, reported as one message (nothing else is wrong with the code).
SWEEP_ERRORS = (SweepSpecError, SweepDirError, ObjectiveError)
LEAD = "@lead"  # an override value: the first point's checkpoint (see resolve_lead)


OUT_OF_MEMORY = ("alone", "fail")


@dataclass
class SweepSettings:
    spec: dict[str, Any]
    sweep_dir: Path
    workers: int
    threads: int | None
    gpus: list[int] | None
    memory_fraction: float | None     # each point's cap while it shares its GPU (gpu_memory_per_point)
    timeout_s: float | None
    rerun_failed: bool
    on_out_of_memory: str
    launcher: str
    run_py: Path
    report: ReportSettings
    wandb: dict[str, Any]
    slurm: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SweepSettings:
        c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        problems = []
        workers = c.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            problems.append(f"workers must be an integer >= 1, got {workers!r}")
            workers = 1
        if c.get("launcher", "local") not in launch.LAUNCHERS:
            problems.append(f"launcher must be one of {', '.join(launch.LAUNCHERS)}; got {c.get('launcher')!r}")
        timeout = c.get("timeout_s")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            problems.append(f"timeout_s must be null or a number of seconds > 0, got {timeout!r}")
        if c.get("on_out_of_memory", "alone") not in OUT_OF_MEMORY:
            problems.append(f"on_out_of_memory must be one of {', '.join(OUT_OF_MEMORY)}; got "
                            f"{c.get('on_out_of_memory')!r}")
        try:
            threads = launch.threads_per_point(c.get("threads_per_point", "auto"), workers)
        except ValueError as err:
            problems.append(str(err))
            threads = None
        try:
            gpus = launch.gpu_list(c.get("gpus"))
        except ValueError as err:
            problems.append(str(err))
            gpus = None
        try:
            fraction = gpu_share.share(c.get("gpu_memory_per_point", "auto"), workers, len(gpus) if gpus else None)
        except ValueError as err:
            problems.append(str(err))
            fraction = None
        if gpus and c.get("launcher", "local") != "local":
            problems.append("gpus spreads the points of launcher=local over this machine's GPUs; with "
                            "launcher=slurm set slurm.gpus_per_node instead")
        try:
            report = ReportSettings.from_config(c.get("objectives") or [], c.get("report"))
        except ValueError as err:
            problems.append(str(err))
        run_py = Path(c.get("run_py") or launch.RUN_PY).expanduser().resolve()
        if not run_py.is_file():
            problems.append(f"run_py={run_py} is not a file")
        if problems:
            raise SweepSpecError("invalid sweep settings:\n  - " + "\n  - ".join(problems))
        launcher = c.get("launcher", "local")
        return cls(spec=dict(c["sweep"]), sweep_dir=Path(str(c["sweep_dir"])).expanduser().resolve(),
                   workers=workers, threads=threads, gpus=gpus,
                   memory_fraction=fraction if launcher == "local" else None,   # a SLURM job has its own GPU
                   timeout_s=timeout, rerun_failed=bool(c.get("rerun_failed")),
                   on_out_of_memory=c.get("on_out_of_memory", "alone"), launcher=launcher, run_py=run_py,
                   report=report, wandb=dict(c.get("wandb") or {}), slurm=dict(c.get("slurm") or {}))

    @property
    def name(self) -> str:
        return str(self.spec.get("name"))

    @property
    def objectives(self) -> list[Objective]:
        return self.report.objectives


def check_overrides(pts: list[Point]) -> None:
    """Compose run.py's config for `pts` (a spec's `points.probes`) before launching anything: a typo in a key
    or an option fails the sweep now, with every bad point named, instead of once per point minutes later."""
    problems = []
    with conf_dir():  # initialised once for all points
        for p in pts:
            try:
                compose(p.overrides)
            except Exception as err:
                problems.append(f"point {p.id} ({' '.join(p.overrides)}): {str(err).splitlines()[0]}")
    if problems:
        raise SweepSpecError("run.py rejects the overrides of some points (nothing was run):\n  - "
                             + "\n  - ".join(problems))


class Recorder:
    """Turns a finished process into the point's index entry, and logs progress."""

    def __init__(self, sweep_dir: Path, index: Index, keys: list[str], total: int) -> None:
        self.sweep_dir, self.index, self.keys, self.total, self.done = sweep_dir, index, keys, total, 0

    def start(self, point: Point) -> Path:
        run_dir = point_dir(self.sweep_dir, point.id)
        moved = sweepdir.set_aside(self.sweep_dir, point.id)
        if moved:
            log.info("point %s: earlier attempt moved to %s", point.id, moved)
        run_dir.mkdir(parents=True)
        self.index.update({**point.record(), "status": "running", "error": None, "started": time.time()})
        # the params, not the overrides: the base is the same for every point
        log.info("point %s: %s", point.id, points.describe(point.params) or " ".join(point.overrides))
        return run_dir

    def finish(self, point: Point, end: launch.ProcessEnd) -> dict[str, Any] | None:
        results = read_results(point_dir(self.sweep_dir, point.id) / RESULTS)
        if results is not None:
            status = results["status"] if results.get("status") in ("ok", INVALID) else "failed"
            error = results.get("error")
            if status == "ok" and end.exit_code not in (0, None):
                log.warning("point %s: results.json says ok but the process exited with %s", point.id, end.exit_code)
        else:
            status, error = "failed", end.describe()
        entry: dict[str, Any] = {**point.record(), "status": status, "error": error, "exit_code": end.exit_code,
                                 "wall_s": round(end.wall_s, 2), "values": sweepdir.key_values(results, self.keys)}
        if status != "ok":
            entry["stderr_tail"] = end.stderr_tail[-1000:]
        self.index.update(entry)
        self.done += 1
        shown = ", ".join(f"{k.split('.', 1)[-1]}={v:.4g}" for k, v in entry["values"].items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool))
        log.info("point %s %s in %.0f s [%d/%d]%s", point.id, status, end.wall_s, self.done, self.total,
                 f": {shown}" if status == "ok" else f": {error}")
        return results


def run_sweep(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) the sweep `cfg` describes; returns a summary (dir, counts, report paths)."""
    s = SweepSettings.from_config(cfg)
    ident = points.identity(s.spec, [str(o) for o in s.objectives])
    method = s.spec.get("method", "grid")
    planned = points.expand(s.spec) if method == "grid" else []
    if method != "grid" and LEAD in repr(s.spec):
        raise SweepSpecError(f"{LEAD} (the first point's checkpoint) needs method=grid; {method} has no first point")
    needs_lead = any(o.endswith(f"={LEAD}") for p in planned for o in p.overrides)
    planned = resolve_lead(planned, s.sweep_dir)
    if s.run_py == launch.RUN_PY.resolve():  # another script (a test's stand-in) has other keys
        check_overrides(points.probes(s.spec))
    s.sweep_dir.mkdir(parents=True, exist_ok=True)
    sweepdir.claim(s.sweep_dir, s.name, ident, {**s.report.record(), "method": method})
    children = Children(s.sweep_dir / CHILDREN)
    children.check_no_live_driver()
    children.kill_leftovers()  # before anything is launched: a leftover still writes into its point's dir
    index = Index(s.sweep_dir, set_aside_corrupt=True)
    index.plan(planned)
    index.save()
    keys = list(dict.fromkeys(o.key for o in s.objectives + s.report.accuracy + s.report.cost))
    alone: set[str] = set()   # points run with no other beside them: no memory cap
    runner = _runner(s, children, alone)
    t0 = time.perf_counter()
    if method == "grid":
        launched = _run_grid(s, planned, index, keys, runner, needs_lead, alone)
    else:
        launched = _run_optuna(s, index, keys, runner)
    wall = time.perf_counter() - t0
    rows = sweepdir.load_rows(s.sweep_dir)
    files = write_report(s.sweep_dir, rows, s.report, title=s.name)
    from sota.sweep import wandb_log

    wandb_log.log_sweep(s.sweep_dir, s.sweep_dir.name, rows, s.objectives, files, s.wandb)
    counts = index.counts()
    log.info("sweep %s: %d launched in %.0f s; %d ok, %d failed%s -> %s", s.name, launched, wall, counts["ok"],
             counts["failed"], _invalid(counts), files["html"])
    return {"sweep_dir": str(s.sweep_dir), "launched": launched, "wall_s": wall, "counts": counts,
            "files": {k: str(v) for k, v in files.items()}}


def _invalid(counts: Mapping[str, int]) -> str:
    return f", {counts[INVALID]} invalid" if counts.get(INVALID) else ""


def _runner(s: SweepSettings, children: Children, alone: set[str]) -> launch.Runner:
    env = launch.child_env(s.threads)
    if s.launcher == "slurm":
        return launch.slurm_runner(s.run_py, env, s.timeout_s, s.sweep_dir / "slurm", s.slurm)
    fraction = s.memory_fraction
    if fraction is not None:
        log.info("sweep %s: each point caps its CUDA memory at %.4g of its GPU while others share it "
                 "(gpu_memory_per_point)", s.name, fraction)
    return launch.local_runner(s.run_py, env, s.timeout_s, s.gpus, children,
                               (lambda p: None if p.id in alone else fraction) if fraction is not None else None)


def resolve_lead(planned: list[Point], sweep_dir: Path) -> list[Point]:
    """An override value `@lead` names the first point's checkpoint (`init_from: "@lead"`): one trained model,
    compressed and evaluated by the others. Ids stay those of the spec, so every sweep dir shares them."""
    if not planned:
        return planned
    ckpt = point_dir(sweep_dir, planned[0].id) / LAST_CHECKPOINT
    out = []
    for p in planned:
        overrides = tuple(o.replace(f"={LEAD}", f"={ckpt}") if o.endswith(f"={LEAD}") else o for o in p.overrides)
        if overrides != p.overrides and p is planned[0]:
            raise SweepSpecError(f"point {p.id} is the first point: it cannot start from its own checkpoint ({LEAD})")
        out.append(replace(p, overrides=overrides))
    return out


def _run_grid(s: SweepSettings, planned: list[Point], index: Index, keys: list[str], runner: launch.Runner,
              needs_lead: bool = False, alone: set[str] | None = None) -> int:
    for p in planned:  # an unreadable results.json is no result: set aside, and its point runs again
        if set_aside_unreadable(point_dir(s.sweep_dir, p.id) / RESULTS) is not None:
            index.entries[p.id] = {**(index.get(p.id) or {}), "status": "pending", "error": None}
    states = {p.id: sweepdir.state(s.sweep_dir, p.id, index.get(p.id)) for p in planned}
    for p in planned:  # the index follows results.json (e.g. after a crash between a point's end and its entry)
        entry = index.get(p.id) or {}
        if states[p.id] != entry.get("status") and states[p.id] != "pending":
            results = read_results(point_dir(s.sweep_dir, p.id) / RESULTS)
            index.entries[p.id] = {**entry, "status": states[p.id],
                                   "error": (results or {}).get("error", entry.get("error")),
                                   "values": sweepdir.key_values(results, keys)}
        elif states[p.id] == "pending" and entry.get("status") != "pending":  # interrupted, or its results lost
            index.entries[p.id] = {**entry, "status": "pending"}
    index.save()
    rerun = ("failed", INVALID) if s.rerun_failed else ()
    todo = [p for p in planned if states[p.id] in ("pending", "skipped") or states[p.id] in rerun]
    todo = _within_budget(s, todo, index, states)
    n_ok = sum(v == "ok" for v in states.values())
    n_failed = sum(v in ("failed", INVALID) for v in states.values())
    n_invalid = sum(v == INVALID for v in states.values())
    log.info("sweep %s: %d points: %d done, %d failed%s%s, %d to run with %d worker(s) (%s)", s.name,
             len(planned), n_ok, n_failed, f" ({n_invalid} of them invalid)" if n_invalid else "",
             " (run again: rerun_failed=true)" if n_failed and not s.rerun_failed else "",
             len(todo), s.workers, s.launcher)
    rec = Recorder(s.sweep_dir, index, keys, len(todo))
    # Before any point has finished, the corpus and the encoder-feature cache may not exist yet: parallel
    # points would each build them (measured: a cold 2-worker start took 632 s instead of ~130). The first
    # point therefore runs alone and the others share what it built.
    # Points that start from the first point's checkpoint (@lead) wait for it the same way.
    first_pending = bool(todo) and todo[0] is planned[0]
    lead = todo[0] if s.workers > 1 and todo and (n_ok == 0 or (first_pending and needs_lead)) else None
    queue = list(todo[1:] if lead is not None else todo)
    state = {"lead_sent": lead is None, "open": lead is None}
    # Points that ran out of GPU memory beside others, or under the cap they had for sharing the GPU
    # (on_out_of_memory=alone), run again once, alone and uncapped, at the end.
    alone = set() if alone is None else alone
    if lead is not None:
        alone.add(lead.id)
    running: dict[str, int] = {}          # running point id -> how many other points have run beside it so far
    retry: list[Point] = []
    retried: set[str] = set()

    def next_point() -> Point | None:
        if not state["lead_sent"]:
            state["lead_sent"] = True
            log.info("sweep %s: point %s runs alone first (it builds the shared corpus and feature caches)",
                     s.name, lead.id)
            return lead
        if not state["open"]:
            return None
        if queue:
            return queue.pop(0)
        if retry and not running:
            point = retry.pop(0)
            log.info("sweep %s: point %s runs again, alone, after running out of GPU memory beside others",
                     s.name, point.id)
            return point
        return None

    def start(point: Point) -> Path:
        for other in running:
            running[other] += 1
        running[point.id] = len(running)
        return rec.start(point)

    def on_done(point: Point, end: launch.ProcessEnd) -> None:
        beside = running.pop(point.id, 0)
        results = rec.finish(point, end)
        if point is lead:
            state["open"] = True
        capped = s.memory_fraction is not None and point.id not in alone
        if (s.on_out_of_memory == "alone" and (beside or capped) and point.id not in retried
                and out_of_memory(results, end)):
            retried.add(point.id)
            retry.append(point)
            alone.add(point.id)
            rec.total += 1
            log.warning("point %s ran out of GPU memory %s: it runs again alone after the others "
                        "(on_out_of_memory=alone)", point.id, f"beside {beside} other point(s)" if beside else
                        f"under its cap of {s.memory_fraction:.4g} of the GPU (gpu_memory_per_point)")

    return launch.run_pool(next_point, start, runner, s.workers, on_done)


def out_of_memory(results: Mapping[str, Any] | None, end: launch.ProcessEnd) -> bool:
    """Whether a point failed because the GPU ran out of memory (torch's OutOfMemoryError, in its results.json
    or, when it died before writing one, its stderr)."""
    if results is not None and results.get("status") == "ok":
        return False
    text = f"{(results or {}).get('error') or ''}\n{end.stderr_tail or ''}"
    return "OutOfMemoryError" in text or "CUDA out of memory" in text


def _within_budget(s: SweepSettings, todo: list[Point], index: Index, states: dict[str, str]) -> list[Point]:
    """The points of `todo` the planner puts within `sweep.budget`; the others are recorded as skipped (a
    results.json with the predicted figures) and never launched. Skipped points are planned again on every
    run, so a raised budget runs them."""
    budget = Budget.from_spec(s.spec)
    if budget is None or not budget.predictable:
        return todo
    keep = []
    for p in todo:
        try:
            predicted = budget.predict(p.overrides)
        except Exception as err:  # a configuration the planner cannot size still runs, and says so
            log.warning("point %s: the planner could not size it (%s); it runs", p.id, str(err).splitlines()[0])
            keep.append(p)
            continue
        reason = budget.over(predicted)
        if reason is None:
            keep.append(p)
            continue
        atomic_write_json(point_dir(s.sweep_dir, p.id) / RESULTS, skipped_results(reason, predicted, p.overrides))
        index.update({**p.record(), "status": "skipped", "error": reason, "values": {}})
        states[p.id] = "skipped"
        log.info("point %s %s", p.id, reason)
    return keep


def _run_optuna(s: SweepSettings, index: Index, keys: list[str], runner: launch.Runner) -> int:
    from sota.sweep.optuna_search import Search

    search = Search(s.spec, s.objectives, s.sweep_dir, rerun_failed=s.rerun_failed, budget=Budget.from_spec(s.spec))
    left = max(0, search.n_trials - search.finished())
    log.info("sweep %s: optuna NSGA-II, %d of %d trials finished, %d to run with %d worker(s)", s.name,
             search.finished(), search.n_trials, left, s.workers)
    rec = Recorder(s.sweep_dir, index, keys, left)

    def done(point: Point, end: launch.ProcessEnd) -> None:
        search.tell(point, rec.finish(point, end))

    return launch.run_pool(search.next_point, rec.start, runner, s.workers, done)


def summary_line(result: Mapping[str, Any]) -> str:
    c = result["counts"]
    skipped = f", {c['skipped']} skipped (over budget)" if c.get("skipped") else ""
    return (f"sweep dir {result['sweep_dir']}: {c['ok']} ok, {c['failed']} failed{_invalid(c)}{skipped}, "
            f"{c['pending']} pending; "
            f"{result['launched']} launched in {result['wall_s']:.0f} s; report {result['files']['html']}")
