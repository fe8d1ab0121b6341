"""Faults of a sweep and its driver: a driver killed or signalled while its points run, a damaged points.jsonl,
an unreadable or schema-breaking results.json.

The sweeps here run the real driver with a stand-in for run.py (FAKE_RUN) that writes a results.json in
milliseconds, or, with FAKE_SLEEP set, starts a helper process (as run.py's data loaders are) and sleeps, so
that a test can kill or signal the driver while its point runs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from omegaconf import open_dict

from sota.compose import compose
from sota.sweep import children as on_record
from sota.sweep.points import SweepSpecError
from sota.sweep.sweepdir import INVALID, load_rows, read_results, results_problems

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process records read /proc (Linux)")

# Overrides: size (the metric values), bad=banana|nometrics|exit|oom_once. Each launch is appended to $RECORD_LAUNCHES.
FAKE_RUN = r'''
import json, os, subprocess, sys, time
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:])
out = Path(args["hydra.run.dir"]); out.mkdir(parents=True, exist_ok=True)
if os.environ.get("RECORD_LAUNCHES"):
    with open(os.environ["RECORD_LAUNCHES"], "a") as f:
        f.write(out.name + "\n")
if os.environ.get("RECORD_FRACTIONS"):
    with open(os.environ["RECORD_FRACTIONS"], "a") as f:
        f.write(f"{out.name} {os.environ.get('SOTA_CUDA_MEMORY_FRACTION', 'none')}\n")
sleep = float(os.environ.get("FAKE_SLEEP", "0"))
if sleep:
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (out / "pids.tmp").write_text(f"{os.getpid()} {helper.pid}")
    os.replace(out / "pids.tmp", out / "pids")
    time.sleep(sleep)
size, bad = float(args.get("size", 1)), args.get("bad", "none")
if bad == "exit":
    sys.exit(3)
if bad == "oom_once" and not (out.parent.parent / "oom_seen").exists():   # the GPU full on its first try
    (out.parent.parent / "oom_seen").write_text("")
    (out / "results.json").write_text(json.dumps({"status": "failed", "error": "OutOfMemoryError: CUDA out of "
                                                  "memory. Tried to allocate 1.70 GiB."}))
    sys.exit(1)
res = {"status": "ok", "error": None, "config": {"size": size},
       "metrics": {"asr/wer": size / 10, "aac/spider_note": "SPICE jar missing", "real/manifest": "/m.json"},
       "model": {"weight_bytes": 1000}, "efficiency": {"device": "cpu", "peak_memory_mb": size * 100},
       "timing": {"total_s": 0.01}}
if bad == "banana":
    res["metrics"]["asr/wer"] = "banana"
if bad == "nometrics":
    del res["metrics"]
(out / "results.json").write_text(json.dumps(res))
'''

# A driver in a process of its own, so that a test can kill or signal it: argv = conf dir, run_py, sweep dir,
# spec (JSON).
DRIVER = r'''
import json, logging, sys
from omegaconf import open_dict
from sota.compose import compose
from sota.sweep.driver import run_sweep
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
run_py, sweep_dir, spec = sys.argv[1:4]
cfg = compose([f"run_py={run_py}", f"sweep_dir={sweep_dir}", "workers=1", "wandb.mode=disabled"],
              config_name="sweep_config")
with open_dict(cfg):
    cfg.sweep = json.loads(spec)
run_sweep(cfg)
'''

ONE = {"name": "orphans", "method": "grid", "points": [{"size": 1}]}


def compose_sweep(script: Path, sweep_dir: Path, spec: dict, **settings):
    overrides = [f"run_py={script}", f"sweep_dir={sweep_dir}", "workers=1", "wandb.mode=disabled",
                 *[f"{k}={v}" for k, v in settings.items()]]
    cfg = compose(overrides, config_name="sweep_config")
    with open_dict(cfg):
        cfg.sweep = {"method": "grid", **spec}
    return cfg


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """(sweep(spec, **settings) run in this process, launches(), the stand-in's path)."""
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    record = tmp_path / "launches.txt"
    monkeypatch.setenv("RECORD_LAUNCHES", str(record))
    monkeypatch.delenv("FAKE_SLEEP", raising=False)

    def sweep(spec, **settings):
        from sota.sweep.driver import run_sweep

        return run_sweep(compose_sweep(script, tmp_path / "sweep", spec, **settings))

    def launches():
        return record.read_text().split() if record.exists() else []

    return sweep, launches, script


@pytest.fixture()
def reap():
    """Pids a test started or expects dead: whatever is still alive at the end is killed, so that a failing
    test leaves no sleeper behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running and not a zombie: a killed orphan may stay a zombie until its new parent reaps it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def wait_until(condition, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def start_driver(script: Path, sweep_dir: Path, spec: dict, reap: list[int]) -> tuple[subprocess.Popen, list[int]]:
    """A driver process whose one point sleeps; returns it and the pids of its point (run.py, helper)."""
    env = {**os.environ, "FAKE_SLEEP": "60"}
    env.pop("RECORD_LAUNCHES", None)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(script), str(sweep_dir), json.dumps(spec)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reap.append(driver.pid)
    found: list[Path] = []
    ok = wait_until(lambda: bool(found.extend(sweep_dir.glob("points/*/pids")) or found), 20)
    if not ok:
        driver.kill()
        pytest.fail(f"the driver's point never started; driver stderr:\n{driver.communicate()[1][-3000:]}")
    pids = [int(p) for p in found[0].read_text().split()]
    reap.extend(pids)
    return driver, pids


# ------------------------------------------------------------------------------------- the driver's children

def test_a_resumed_sweep_kills_what_a_killed_driver_left_running_before_relaunching(fake, tmp_path, reap, caplog):
    sweep, launches, script = fake
    sweep_dir = tmp_path / "sweep"
    driver, pids = start_driver(script, sweep_dir, ONE, reap)
    driver.kill()  # SIGKILL: the driver cannot take its point down
    driver.communicate()
    assert all(alive(p) for p in pids), "the point's processes should outlive a SIGKILLed driver"
    records = list((sweep_dir / "children").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["pid"] == pids[0]

    with caplog.at_level(logging.INFO):
        result = sweep(ONE)
    assert not any(alive(p) for p in pids), "run.py and its helper should be killed (their process group)"
    messages = [r.getMessage() for r in caplog.records]
    killed = [i for i, m in enumerate(messages) if f"killed process group {pids[0]}" in m]
    relaunched = [i for i, m in enumerate(messages) if "earlier attempt moved to" in m]
    assert killed and relaunched and killed[0] < relaunched[0], messages
    assert records[0].stem in messages[killed[0]] and "fake_run.py" in messages[killed[0]]
    assert result["counts"]["ok"] == 1 and launches() == [records[0].stem]
    assert not list((sweep_dir / "children").glob("*.json"))  # the relaunched point ended: off the record


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_driver_kills_its_points_and_exits_non_zero(fake, tmp_path, reap, signum):
    _, _, script = fake
    sweep_dir = tmp_path / "sweep"
    driver, pids = start_driver(script, sweep_dir, ONE, reap)
    os.kill(driver.pid, signum)
    _, stderr = driver.communicate(timeout=20)
    assert driver.returncode != 0, stderr[-2000:]
    if signum == signal.SIGTERM:
        assert driver.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in stderr
    assert "killed the process groups of 1 running point(s)" in stderr, stderr[-2000:]
    assert wait_until(lambda: not any(alive(p) for p in pids), 5), "run.py or its helper survived the driver"
    assert not list((sweep_dir / "children").glob("*.json"))


def _sleeper(reap: list[int]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    reap.append(proc.pid)
    return proc


def test_only_the_process_on_record_is_killed_not_one_that_reused_its_pid(tmp_path, reap):
    children = on_record.Children(tmp_path / "children")
    children.folder.mkdir()
    mine, recycled = _sleeper(reap), _sleeper(reap)
    on_record.Children.write(children.path("000-a"), mine.pid, ["python", "run.py"])
    on_record.Children.write(children.path("001-b"), recycled.pid, ["python", "run.py"])
    record = json.loads(children.path("001-b").read_text())
    children.path("001-b").write_text(json.dumps({**record, "start": "1"}))  # another process had that pid
    killed = children.kill_leftovers()
    assert len(killed) == 1 and "point 000-a" in killed[0]
    assert mine.wait(timeout=5) == -signal.SIGKILL and recycled.poll() is None
    assert not list(children.folder.iterdir())
    recycled.kill()
    recycled.wait()


def test_points_of_a_driver_still_running_are_refused_not_killed(tmp_path, reap):
    children = on_record.Children(tmp_path / "sweep" / "children")
    children.folder.mkdir(parents=True)
    other_driver = _sleeper(reap)
    on_record.Children.write(children.path("000-a"), other_driver.pid, ["python", "run.py"])
    record = json.loads(children.path("000-a").read_text())
    record["driver"] = {**record["driver"], "pid": other_driver.pid, "start": on_record.start_time(other_driver.pid)}
    children.path("000-a").write_text(json.dumps(record))
    with pytest.raises(on_record.ChildrenError, match=f"another sweep.py \\(pid {other_driver.pid}"):
        children.check_no_live_driver()
    assert other_driver.poll() is None
    other_driver.kill()
    other_driver.wait()


# ----------------------------------------------------------------------------------------- damaged files

def test_a_corrupt_index_line_is_set_aside_and_its_point_runs_again(fake, tmp_path, caplog):
    sweep, launches, _ = fake
    spec = {"name": "index", "points": [{"size": 1}, {"size": 2}, {"bad": "exit"}]}
    assert sweep(spec)["counts"] == {"pending": 0, "ok": 2, "failed": 1}
    index = tmp_path / "sweep" / "points.jsonl"
    lines = index.read_text().splitlines()
    entries = [json.loads(x) for x in lines]
    failed_id, ok_id = entries[2]["id"], entries[1]["id"]
    damaged = "\n".join([lines[0], "{not json", lines[2][: len(lines[2]) // 2]]) + "\n"  # truncated last line
    index.write_text(damaged)

    with caplog.at_level(logging.WARNING):
        assert {r["id"] for r in load_rows(tmp_path / "sweep")} >= {entries[0]["id"], ok_id}  # a report reads it
    assert not list(index.parent.glob("points.jsonl.corrupt-*"))  # reporting changes nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = sweep(spec)
    warning = next(r.getMessage() for r in caplog.records if "unreadable, skipped" in r.getMessage())
    assert str(index) in warning and "line 2" in warning and "line 3" in warning
    assert (index.parent / "points.jsonl.corrupt-1").read_text() == damaged
    # the failed point's record was lost, so it runs again; the ok one still has its results.json
    assert again["launched"] == 1 and launches()[-1] == failed_id
    assert again["counts"] == {"pending": 0, "ok": 2, "failed": 1}
    rebuilt = {e["id"]: e for e in map(json.loads, index.read_text().splitlines())}
    assert rebuilt[ok_id]["status"] == "ok" and rebuilt[ok_id]["values"]["metrics.asr/wer"] == pytest.approx(0.2)


def test_an_unreadable_results_json_is_set_aside_and_its_point_runs_again(fake, tmp_path, caplog):
    sweep, launches, _ = fake
    spec = {"name": "results", "points": [{"size": 1}, {"size": 2}]}
    sweep(spec)
    pid = launches()[0]
    results = tmp_path / "sweep" / "points" / pid / "results.json"
    truncated = results.read_text()[:40]
    results.write_text(truncated)

    rows = {r["id"]: r for r in load_rows(tmp_path / "sweep")}
    assert rows[pid]["status"] == "failed" and f"{results} is unreadable" in rows[pid]["error"]
    with caplog.at_level(logging.WARNING):
        again = sweep(spec)
    assert any(str(results) in r.getMessage() and "set aside as results.json.corrupt-1" in r.getMessage()
               for r in caplog.records)
    assert again["launched"] == 1 and launches()[-1] == pid and again["counts"]["ok"] == 2
    assert (tmp_path / "sweep" / "attempts" / f"{pid}.1" / "results.json.corrupt-1").read_text() == truncated


# ---------------------------------------------------------------------------------------- results schema

def test_results_that_say_ok_but_break_the_schema_are_invalid_and_name_file_and_key(fake, tmp_path):
    sweep, launches, _ = fake
    spec = {"name": "schema", "points": [{"size": 1}, {"bad": "banana"}, {"bad": "nometrics"}]}
    result = sweep(spec)
    assert result["counts"] == {"pending": 0, "ok": 1, "failed": 0, INVALID: 2}
    d = tmp_path / "sweep"
    entries = {e["params"]["point"]: e for e in map(json.loads, (d / "points.jsonl").read_text().splitlines())}
    banana, nometrics = entries["bad=banana"], entries["bad=nometrics"]
    assert banana["status"] == INVALID and str(d / "points" / banana["id"] / "results.json") in banana["error"]
    assert "metrics.asr/wer is \"banana\", not a number or null" in banana["error"]
    assert nometrics["status"] == INVALID and "section 'metrics' is missing" in nometrics["error"]
    csv_rows = (d / "frontier.csv").read_text().splitlines()
    assert sum(f",{INVALID}," in line for line in csv_rows) == 2 and "banana" in (d / "frontier.html").read_text()
    from sota.sweep.driver import summary_line

    assert "2 invalid" in summary_line(result)
    assert sweep(spec)["launched"] == 0  # invalid is a verdict, like failed: run again only on request
    assert sweep(spec, rerun_failed="true")["launched"] == 2


@pytest.mark.parametrize("results, problem", [
    ({"status": "ok", "metrics": {"asr/wer": 0.1, "aac/spider": None, "aac/spider_note": "no Java",
                                  "note": "2 unscored", "real/manifest": "/m.json"}}, None),
    ({"status": "ok", "metrics": {"asr/wer": "banana"}}, "metrics.asr/wer is \"banana\""),
    ({"status": "ok", "metrics": {"asr/wer": True}}, "metrics.asr/wer is true"),
    ({"status": "ok", "metrics": {"asr/wer": 0.1}, "efficiency": "fast"}, "section 'efficiency' is \"fast\""),
    ({"status": "ok"}, "section 'metrics' is missing"),
])
def test_the_results_schema(tmp_path, results, problem):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    got = read_results(path)
    if problem is None:
        assert results_problems(results) == [] and got == results
    else:
        assert got["status"] == INVALID and str(path) in got["error"] and problem in got["error"]


def test_a_failed_run_is_not_checked_and_a_missing_one_is_none(tmp_path):
    path = tmp_path / "results.json"
    assert read_results(path) is None
    path.write_text(json.dumps({"status": "failed", "error": "nan loss"}))
    assert read_results(path) == {"status": "failed", "error": "nan loss"}


def test_an_optuna_study_survives_a_killed_driver_and_recomputes_nothing_finished(fake, tmp_path, reap, caplog):
    """Two trials finish, the driver is SIGKILLed while a third runs; the rerun settles the interrupted trial
    (asked again with its parameters), runs nothing that had finished, and ends with every trial told."""
    optuna = pytest.importorskip("optuna")
    sweep, launches, script = fake
    sweep_dir = tmp_path / "sweep"
    spec = {"name": "opt", "method": "optuna", "params": {"size": "range(1,9)"},
            "optuna": {"n_trials": 2, "population_size": 2, "seed": 0}}
    assert sweep(spec)["launched"] == 2
    finished = launches()
    spec["optuna"]["n_trials"] = 3
    driver, pids = start_driver(script, sweep_dir, spec, reap)
    driver.kill()
    driver.communicate()
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    states = [t.state.name for t in optuna.load_study(study_name="opt", storage=storage).trials]
    assert states.count("COMPLETE") == 2 and states.count("RUNNING") == 1, states

    with caplog.at_level(logging.INFO):
        result = sweep(spec)
    assert any("was interrupted; asking its parameters again" in r.getMessage() for r in caplog.records)
    assert not any(alive(p) for p in pids)
    again = launches()[len(finished):]
    assert len(again) == 1 and again[0] not in finished      # only the interrupted trial ran, once
    trials = optuna.load_study(study_name="opt", storage=storage).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 3 and result["counts"]["ok"] == 3
    assert not [t for t in trials if t.state.name == "RUNNING"]


def test_an_optuna_trial_whose_worker_was_killed_is_failed_then_asked_again(fake, tmp_path, reap):
    optuna = pytest.importorskip("optuna")
    sweep, launches, script = fake
    sweep_dir = tmp_path / "sweep"
    spec = {"name": "opt", "method": "optuna", "params": {"size": "range(1,9)"},
            "optuna": {"n_trials": 1, "population_size": 2, "seed": 0}}
    driver, pids = start_driver(script, sweep_dir, spec, reap)
    os.kill(pids[0], signal.SIGKILL)   # the point's run.py, not the driver
    driver.communicate(timeout=60)
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    assert [t.state.name for t in optuna.load_study(study_name="opt", storage=storage).trials] == ["FAIL"]
    result = sweep(spec, rerun_failed="true")
    trials = optuna.load_study(study_name="opt", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and result["counts"]["ok"] == 1
    assert trials[1].params == trials[0].params and len(launches()) == 1   # the same parameters, run again


def test_a_point_out_of_gpu_memory_beside_others_runs_again_alone_at_the_end(fake, tmp_path, caplog, monkeypatch):
    sweep, launches, _ = fake
    monkeypatch.setenv("FAKE_SLEEP", "0.5")   # the points overlap
    spec = {"name": "oom", "points": [{"size": 1}, {"size": 2, "bad": "oom_once"}, {"size": 3}, {"size": 4}]}
    with caplog.at_level(logging.INFO):
        sweep(spec, workers=3)
    rows = {r["id"]: r for r in load_rows(tmp_path / "sweep")}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    oom = next(i for i in rows if i.startswith("001"))                    # the second point of the spec
    assert launches().count(oom) == 2 and launches()[-1] == oom   # again, last
    assert (tmp_path / "sweep" / "attempts").is_dir()             # the failed attempt kept aside
    assert "runs again alone after the others" in caplog.text


def test_points_sharing_a_gpu_are_capped_and_one_out_of_memory_under_its_cap_runs_again_uncapped(
        fake, tmp_path, monkeypatch):
    sweep, launches, script = fake
    record = tmp_path / "fractions.txt"
    monkeypatch.setenv("RECORD_FRACTIONS", str(record))
    monkeypatch.setenv("SOTA_CUDA_MEMORY_FRACTION", "0.5")     # the sweep decides, not the caller's environment
    spec = {"name": "cap", "points": [{"size": 1}, {"size": 2, "bad": "oom_once"}, {"size": 3}]}
    sweep(spec, workers=4)        # no FAKE_SLEEP: the points need not overlap, the cap is for sharing at all
    runs = [line.split() for line in record.read_text().splitlines()]
    first, oom = runs[0][0], next(i for i, _ in runs if i.startswith("001"))
    assert runs[0] == [first, "none"] and first.startswith("000")          # the first point runs alone
    assert [f for i, f in runs[1:-1]] == ["0.2375", "0.2375"]             # 0.95 / 4 workers on one GPU
    assert runs[-1] == [oom, "none"] and launches().count(oom) == 2       # again, alone, uncapped
    assert all(r["status"] == "ok" for r in load_rows(tmp_path / "sweep"))
    record.unlink()
    from sota.sweep.driver import run_sweep

    run_sweep(compose_sweep(script, tmp_path / "nocap", {"name": "nocap", "points": [{"size": 1}, {"size": 2}]},
                            workers=2, gpu_memory_per_point="null"))
    assert {line.split()[1] for line in record.read_text().splitlines()} == {"0.5"}   # no cap: left as it was
    with pytest.raises(SweepSpecError, match=r"gpu_memory_per_point must be a fraction of the GPU in \(0, 1\]"):
        sweep(spec, gpu_memory_per_point=1.5)


def test_gpu_shares():
    from sota.utils import gpu_share

    assert gpu_share.share("auto", 1, None) is None and gpu_share.share("auto", 4, 4) is None
    assert gpu_share.share("auto", 8, None) == 0.1187 and gpu_share.share("auto", 3, 2) == 0.475
    assert gpu_share.share(0.3, 8, None) == 0.3 and gpu_share.share(None, 8, None) is None
    for bad in (0, -0.1, 2, "half", True):
        with pytest.raises(ValueError, match="gpu_memory_per_point must be a fraction"):
            gpu_share.share(bad, 2, None)
    assert gpu_share.apply("cpu") is None


def test_a_run_caps_every_cuda_device_it_touches(monkeypatch):
    import torch

    from sota.utils import gpu_share

    capped = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: capped.append((f, str(d))))
    monkeypatch.setenv(gpu_share.ENV, "0.25")
    # trains on the GPU, measures on the CPU
    assert gpu_share.apply("cpu", "cuda") == 0.25 and capped == [(0.25, "cuda")]
    capped.clear()
    assert gpu_share.apply("cuda:1", "cuda") == 0.25 and sorted(c[1] for c in capped) == ["cuda", "cuda:1"]
    capped.clear()
    assert gpu_share.apply("cpu") is None and capped == []
    monkeypatch.delenv(gpu_share.ENV)
    assert gpu_share.apply("cuda") is None and capped == []


def test_a_bad_memory_fraction_in_the_environment_is_named(monkeypatch):
    from sota.utils import gpu_share

    monkeypatch.setenv(gpu_share.ENV, "lots")
    with pytest.raises(ValueError, match="SOTA_CUDA_MEMORY_FRACTION must be a fraction of the GPU"):
        gpu_share.apply("cuda")


def test_out_of_memory_alone_is_not_retried_and_fail_keeps_it_failed(fake, tmp_path, monkeypatch):
    from sota.sweep.driver import run_sweep

    sweep, launches, script = fake
    sweep({"name": "oom1", "points": [{"size": 2, "bad": "oom_once"}]}, workers=2)
    rows = load_rows(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["failed"] and len(launches()) == 1   # it ran alone: nothing to retry
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    (tmp_path / "sweep" / "oom_seen").unlink()
    spec = {"name": "oom2", "points": [{"size": 1}, {"size": 2, "bad": "oom_once"}, {"size": 3}]}
    run_sweep(compose_sweep(script, tmp_path / "fail", spec, workers=3, on_out_of_memory="fail"))
    assert sorted(r["status"] for r in load_rows(tmp_path / "fail")) == ["failed", "ok", "ok"]
    with pytest.raises(SweepSpecError, match="on_out_of_memory must be one of alone, fail; got 'retry'"):
        run_sweep(compose_sweep(script, tmp_path / "bad", spec, on_out_of_memory="retry"))


@pytest.mark.gpu
def test_the_cap_holds_a_cuda_process_to_its_share():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    code = ("import os, torch\nfrom sota.utils import gpu_share\nf = gpu_share.apply('cuda')\n"
            "total = torch.cuda.get_device_properties(0).total_memory\n"
            "x = torch.empty(int(total * f * 0.8), dtype=torch.uint8, device='cuda')\n"
            "try:\n    torch.empty(int(total * f * 0.4), dtype=torch.uint8, device='cuda')\nexcept torch.OutOfMemoryError:\n"
            "    print('capped', f)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "SOTA_CUDA_MEMORY_FRACTION": "0.05"},
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and "capped 0.05" in proc.stdout, proc.stderr[-2000:]
