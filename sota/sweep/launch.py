"""Running sweep points, each in its own process: `python run.py <overrides> hydra.run.dir=<point dir>`, on
this machine (`local`) or as SLURM jobs through submitit (`slurm`), up to `workers` at a time.

One process per point keeps measurements honest (peak memory is the process's own) and isolates crashes: a
point that raises, NaNs or is killed costs only itself. How it ended is read from its results.json; a process
that died without one is described by its exit code or signal and the tail of its stderr.

The driver owns its local points: each runs in a process group of its own, SIGTERM, SIGHUP or Ctrl-C to the
driver kill those groups (and it exits non-zero), and each running point is recorded in the sweep dir
(`Children`) so that a sweep resumed after its driver was killed outright (SIGKILL cannot be caught) kills
what the dead driver left running before it launches anything.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sota.sweep.children import Children
from sota.sweep.points import Point
from sota.utils import gpu_share
from sota.utils.cpus import usable_cpus

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "run.py"
LAUNCHERS = ("local", "slurm")
TAIL_CHARS = 2000


@dataclass
class ProcessEnd:
    """How a point's process ended (its results.json says how the run itself went)."""
    exit_code: int | None
    wall_s: float
    timed_out: bool = False
    stderr_tail: str = ""
    launcher_error: str | None = None   # the launcher could not run it at all (e.g. a SLURM job lost)

    def describe(self) -> str:
        """Why a process left no results.json, in one line plus the stderr tail."""
        if self.launcher_error:
            why = self.launcher_error
        elif self.timed_out:
            why = f"killed after the {self.wall_s:.0f} s timeout"
        elif self.exit_code is not None and self.exit_code < 0:
            try:
                name = signal.Signals(-self.exit_code).name
            except ValueError:
                name = f"signal {-self.exit_code}"
            why = f"killed by {name} (exit code {self.exit_code})"
        else:
            why = f"exited with code {self.exit_code}"
        last = _last_line(self.stderr_tail)
        return f"{why} without writing results.json" + (f": {last}" if last else "")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Hydra's closing hint says nothing about the error; the line before it does.
    lines = [ln for ln in lines if not ln.startswith("Set the environment variable HYDRA_FULL_ERROR")]
    return lines[-1][:300] if lines else ""


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def command(run_py: Path, point: Point, run_dir: Path) -> list[str]:
    return [sys.executable, str(run_py), *point.overrides, f"hydra.run.dir={run_dir}"]


def child_env(threads: int | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HYDRA_FULL_ERROR", "1")  # the stderr tail then holds the real traceback
    env.setdefault("WANDB_SILENT", "true")
    if threads:
        # N points at once, each with torch's default of one thread per core, would oversubscribe the CPU.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(threads))
    env.update(extra or {})
    return env


def threads_per_point(setting: Any, workers: int) -> int | None:
    if setting in (None, "none", "null"):
        return None
    if setting == "auto":
        return max(1, usable_cpus() // max(1, workers))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"threads_per_point must be auto, null or an integer >= 1, got {setting!r}")
    return setting


def run_command(cmd: Sequence[str], cwd: str, env: Mapping[str, str], run_dir: str,
                timeout_s: float | None, record: str | None = None) -> ProcessEnd:
    """Run one point's process to its end, its output into run_dir/{stdout,stderr}.log. Module-level and
    plain-argument so that submitit can pickle it to a SLURM node. With `record` (a file), the process is
    recorded there while it runs (see Children)."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "stdout.log", "wb") as so, open(out / "stderr.log", "wb") as se:
        # A session of its own: a timeout or Ctrl-C kills the point's whole process group (corpus helpers too).
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=so, stderr=se, start_new_session=True)
        timed_out = False
        try:
            if record:
                Children.write(Path(record), proc.pid, cmd)
            _LIVE.add(proc)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
        except BaseException:
            _kill(proc)
            raise
        finally:
            _LIVE.discard(proc)
            if record:
                Path(record).unlink(missing_ok=True)
    return ProcessEnd(proc.returncode, time.perf_counter() - start, timed_out, tail(out / "stderr.log"))


class _Live:
    """The point processes running now, so that an interrupted sweep takes them down with it."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def open(self) -> None:
        with self._lock:
            self._stopping = False

    def add(self, p: subprocess.Popen) -> None:
        with self._lock:
            stopping = self._stopping
            if not stopping:
                self._procs.add(p)
        # A worker thread may start its process just after kill_all ran: it must not outlive the sweep.
        if stopping:
            _kill(p)

    def discard(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(p)

    def kill_all(self) -> int:
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for p in procs:
            _kill(p)
        return len(procs)


_LIVE = _Live()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# ------------------------------------------------------------------------------------------ signals

class Stopped(SystemExit):
    """The driver got SIGTERM or SIGHUP; its points are killed and it exits with 128 + the signal's number,
    as a shell reports a process that signal killed."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


@contextmanager
def stop_on_signals(signums: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise Stopped in the main thread (their default would end the driver
    at once and leave its points running); SIGINT already raises KeyboardInterrupt. Signals that are ignored
    (nohup) stay ignored. Outside the main thread nothing changes: Python delivers signals to it only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if not fired:  # a second signal while the points are being killed must not cut that short
            fired.append(signum)
            raise Stopped(signum)

    previous = {}
    for signum in signums:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# -------------------------------------------------------------------------------------------- launchers

Runner = Callable[[Point, Path], ProcessEnd]


def local_runner(run_py: Path, env: Mapping[str, str], timeout_s: float | None,
                 gpus: Sequence[int] | None = None, children: Children | None = None,
                 memory_fraction: Callable[[Point], float | None] | None = None) -> Runner:
    """Points as subprocesses here; with `gpus`, each sees one of them (CUDA_VISIBLE_DEVICES), the one with
    the fewest points running on it; with `children`, each running process is on record there; with
    `memory_fraction`, a point given a fraction caps its CUDA allocator there (sota.utils.gpu_share)."""
    pool = GpuPool(gpus) if gpus else None

    def run(point: Point, run_dir: Path) -> ProcessEnd:
        record = str(children.path(point.id)) if children is not None else None
        fraction = memory_fraction(point) if memory_fraction is not None else None
        own = dict(env)
        if memory_fraction is not None:  # the sweep decides: a point it runs alone has no cap at all
            own.pop(gpu_share.ENV, None)
            if fraction is not None:
                own[gpu_share.ENV] = str(fraction)
        if pool is None:
            return run_command(command(run_py, point, run_dir), str(ROOT), own, str(run_dir), timeout_s, record)
        with pool.take() as gpu:
            log.info("point %s: GPU %d", point.id, gpu)
            return run_command(command(run_py, point, run_dir), str(ROOT),
                               {**own, "CUDA_VISIBLE_DEVICES": str(gpu)}, str(run_dir), timeout_s, record)

    return run


class GpuPool:
    """The GPUs of this machine shared by the local workers: each point takes the least-loaded one."""

    def __init__(self, gpus: Sequence[int]) -> None:
        self.load = {int(g): 0 for g in gpus}
        self._lock = threading.Lock()

    @contextmanager
    def take(self) -> Iterator[int]:
        with self._lock:
            gpu = min(self.load, key=lambda g: (self.load[g], g))
            self.load[gpu] += 1
        try:
            yield gpu
        finally:
            with self._lock:
                self.load[gpu] -= 1


def gpu_list(setting: Any) -> list[int] | None:
    """`gpus` of the sweep config: null (points see every GPU), auto (all GPUs here, one per point) or a list
    of GPU indices."""
    if setting in (None, "none", "null"):
        return None
    if setting == "auto":
        import torch

        return list(range(torch.cuda.device_count())) or None
    if (isinstance(setting, (list, tuple)) and setting
            and all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in setting)):
        return [int(g) for g in setting]
    raise ValueError(f"gpus must be null, auto or a non-empty list of GPU indices such as [0, 1], got {setting!r}")


def slurm_runner(run_py: Path, env: Mapping[str, str], timeout_s: float | None, folder: Path,
                 slurm: Mapping[str, Any]) -> Runner:
    """Each point a submitit job that runs the same command on a node; `slurm.cluster: local` runs the jobs
    with submitit's local executor (how the tests exercise this path without a cluster)."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError("launcher=slurm needs submitit: pip install submitit (or use launcher=local)") from None
    params = {k: v for k, v in dict(slurm).items() if k != "cluster" and v is not None}
    additional = params.pop("additional", None) or {}
    executor = submitit.AutoExecutor(folder=str(folder), cluster=slurm.get("cluster"))
    # Names outside the shared set (partition, mem_gb, ...) get the executor's prefix (slurm_partition).
    executor.update_parameters(**_for_executor(executor, params),
                               **({"slurm_additional_parameters": dict(additional)} if additional else {}))

    def run(point: Point, run_dir: Path) -> ProcessEnd:
        start = time.perf_counter()
        job = executor.submit(run_command, command(run_py, point, run_dir), str(ROOT), dict(env), str(run_dir),
                              timeout_s)
        log.info("point %s: submitted job %s", point.id, job.job_id)
        try:
            return job.result()
        except Exception as err:  # the job died (preempted, out of memory, node failure): the point failed
            return ProcessEnd(None, time.perf_counter() - start, stderr_tail=str(err)[-TAIL_CHARS:],
                              launcher_error=f"job {job.job_id} failed: {type(err).__name__}")

    return run


def _for_executor(executor: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """submitit's shared names pass as they are; the rest become `slurm_<name>`, which AutoExecutor applies on
    SLURM and ignores on its local executor."""
    shared = {"timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node", "name",
              "stderr_to_stdout"}
    return {k if k in shared or k.startswith("slurm_") else f"slurm_{k}": v for k, v in params.items()}


# ------------------------------------------------------------------------------------------------- pool

def run_pool(next_point: Callable[[], Point | None], start: Callable[[Point], Path], runner: Runner,
             workers: int, on_done: Callable[[Point, ProcessEnd], None]) -> int:
    """Run points as they come from `next_point` (None: no more for now), `workers` at a time; `on_done` is
    called in this thread as each ends, so it may decide what `next_point` gives next (Optuna asks after each
    tell). Returns the number of points launched. Ctrl-C, SIGTERM or SIGHUP kill the running points' process
    groups and re-raise (KeyboardInterrupt, or Stopped: a non-zero exit)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    launched = 0
    running: dict[Future[ProcessEnd], Point] = {}
    _LIVE.open()
    with stop_on_signals(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="point") as pool:
        try:
            while True:
                while len(running) < workers:
                    point = next_point()
                    if point is None:
                        break
                    run_dir = start(point)
                    running[pool.submit(runner, point, run_dir)] = point
                    launched += 1
                if not running:
                    return launched
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f].index):
                    point = running.pop(fut)
                    try:
                        end = fut.result()
                    except Exception as err:  # a launcher bug must not lose the other points
                        log.exception("point %s: the launcher failed", point.id)
                        end = ProcessEnd(None, 0.0, launcher_error=f"launcher error: {type(err).__name__}: {err}")
                    on_done(point, end)
        except BaseException as err:
            killed = _LIVE.kill_all()
            for fut in running:
                fut.cancel()
            if isinstance(err, (Stopped, KeyboardInterrupt)):
                log.error("sweep %s: killed the process groups of %d running point(s): %s",
                          err if isinstance(err, Stopped) else "interrupted (Ctrl-C)", killed,
                          ", ".join(p.id for p in running.values()) or "none")
            raise
