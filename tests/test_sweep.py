"""sweep.py: the pure Pareto frontier, spec expansion, the sweep dir (ownership, index, resume, failures),
the launcher (one process per point, killed and timed-out points), Optuna ask/tell with resume, reports of
sweep and multirun dirs, compare, W&B offline, the HTML in headless Chromium, the review notebook, the review
page's clips and audio of the toy sweep, the toy sweep end to end, and the smoke sweep (one trained model,
compressed three ways) on a small corpus.

Fast tests drive the real sweep machinery with a stand-in for run.py (FAKE_RUN below) that writes a
results.json in milliseconds; the slow tier runs the real toy and smoke sweeps through `python sweep.py`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT
from omegaconf import OmegaConf, open_dict

from sota.compose import compose
from sota.sweep import frontier, points
from sota.sweep.frontier import Objective, best_within_budgets, lookup, mark_frontier, pareto_front
from sota.sweep.points import SweepSpecError
from sota.sweep.report import ObjectiveError
from sota.sweep.sweepdir import SweepDirError, load_rows

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# A stand-in for run.py. Overrides: size (bigger: better and hungrier), q=int8 (half the memory),
# fail=kill|exit|nan|raise, sleep=<s>; each launch is appended to $RECORD_LAUNCHES.
FAKE_RUN = r'''
import json, os, signal, sys, time
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:])
out = Path(args["hydra.run.dir"]); out.mkdir(parents=True, exist_ok=True)
if os.environ.get("RECORD_LAUNCHES"):
    with open(os.environ["RECORD_LAUNCHES"], "a") as f:
        f.write(out.name + "\n")
if os.environ.get("RECORD_GPUS"):
    with open(os.environ["RECORD_GPUS"], "a") as f:
        f.write(f"{out.name} {os.environ.get('CUDA_VISIBLE_DEVICES', 'all')}\n")
if os.environ.get("RECORD_TIMES"):
    with open(os.environ["RECORD_TIMES"], "a") as f:
        f.write(f"start {out.name} {time.time()}\n")
time.sleep(float(args.get("sleep", 0)))
if os.environ.get("RECORD_TIMES"):
    with open(os.environ["RECORD_TIMES"], "a") as f:
        f.write(f"end {out.name} {time.time()}\n")
if "init_from" in args and not Path(args["init_from"]).is_file():
    print(f"sota.config.ConfigError: init_from={args['init_from']}: no such file", file=sys.stderr)
    sys.exit(2)
(out / "checkpoints").mkdir(exist_ok=True)
(out / "checkpoints" / "last.ckpt").write_text("trained")
how = args.get("fail", "none")
if how == "kill":
    print("about to be killed", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if how == "exit":
    print("sota.config.ConfigError: prune.ratio must be a fraction in [0, 1), got 1.5", file=sys.stderr)
    sys.exit(3)
size, q = float(args.get("size", 1)), args.get("q", "none")
mem = size * (0.5 if q == "int8" else 1.0) * 100
res = {"status": "ok", "error": None, "config": {"size": size, "q": q},
       "metrics": {"asr/wer": float(args.get("wer", 1.0 / size)), "aac/cider_d": size / 10},
       "model": {"weight_bytes": int(mem * 1e6)}, "efficiency": {"device": "cpu", "peak_memory_mb": mem},
       "timing": {"total_s": 0.01}}
if how == "nan":
    res.update(status="failed", error="FloatingPointError: the training loss is nan at step 2")
    res["metrics"] = {"asr/wer": None, "aac/cider_d": None}
(out / "results.json").write_text(json.dumps(res))
sys.exit(1 if how == "nan" else 0)
'''

WER, MEM, CIDER = "metrics.asr/wer", "efficiency.peak_memory_mb", "metrics.aac/cider_d"


def row(pid, wer=None, mem=None, cider=None, status="ok"):
    return {"id": pid, "status": status, "metrics": {"asr/wer": wer, "aac/cider_d": cider},
            "efficiency": {"peak_memory_mb": mem}}


def ids(rows):
    return [r["id"] for r in rows]


# ------------------------------------------------------------------------------------------ frontier

def test_dominated_points_leave_the_frontier_and_it_is_sorted():
    rows = [row("a", 0.5, 100), row("b", 0.4, 200), row("c", 0.6, 150), row("d", 0.3, 400), row("e", 0.3, 500)]
    # c is worse than a on both; e ties d on WER but needs more memory
    assert ids(pareto_front(rows, [f"{WER}:min", f"{MEM}:min"])) == ["d", "b", "a"]
    assert frontier.dominates(rows[0], rows[2], [Objective(WER), Objective(MEM)])
    assert not frontier.dominates(rows[0], rows[1], [Objective(WER), Objective(MEM)])


def test_maximize_flips_the_direction():
    rows = [row("a", cider=0.5, mem=100), row("b", cider=0.4, mem=200), row("c", cider=0.9, mem=300)]
    assert ids(pareto_front(rows, [f"{CIDER}:max", f"{MEM}:min"])) == ["c", "a"]  # b: less CIDEr for more memory
    assert ids(pareto_front(rows, [f"{CIDER}:min", f"{MEM}:max"])) == ["b", "c"]


def test_ties_are_all_on_the_frontier():
    rows = [row("a", 0.5, 100), row("b", 0.5, 100), row("c", 0.5, 120)]
    front = pareto_front(rows, [f"{WER}:min", f"{MEM}:min"])
    assert sorted(ids(front)) == ["a", "b"]  # identical points do not dominate each other; c is dominated


def test_failed_missing_and_non_finite_points_are_excluded():
    rows = [row("ok", 0.5, 100), row("failed", 0.1, 10, status="failed"), row("none", None, 5),
            row("nan", math.nan, 5), row("inf", 0.1, math.inf), {"id": "bool", "status": "ok",
                                                                  "metrics": {"asr/wer": True},
                                                                  "efficiency": {"peak_memory_mb": 1}}]
    objs = [f"{WER}:min", f"{MEM}:min"]
    assert ids(pareto_front(rows, objs)) == ["ok"]
    marked = {r["id"]: r["on_frontier"] for r in mark_frontier(rows, objs)}
    assert marked == {"ok": True, "failed": None, "none": None, "nan": None, "inf": None, "bool": None}
    assert pareto_front([row("x", status="failed")], objs) == []


def test_mark_frontier_copies_rows():
    rows = [row("a", 0.5, 100), row("b", 0.6, 200)]
    marked = mark_frontier(rows, [f"{WER}:min", f"{MEM}:min"])
    assert [m["on_frontier"] for m in marked] == [True, False] and "on_frontier" not in rows[0]


def test_key_addressing():
    r = {"metrics": {"asr/wer": 0.2}, "efficiency": {"peak_memory_mb": 9.0}, "config": {"lora": {"rank": 8}},
         "odd": {"a.b": 1}}
    assert lookup(r, "metrics.asr/wer") == 0.2 and lookup(r, "asr/wer") == 0.2  # slash before a dot: a metric
    assert lookup(r, "efficiency.peak_memory_mb") == 9.0 and lookup(r, "config.lora.rank") == 8
    assert lookup(r, "odd.a.b") == 1 and lookup(r, "metrics.asr/cer") is None and lookup(r, "nope.x") is None
    assert lookup({"metrics.asr/wer": 0.3}, "metrics.asr/wer") == 0.3  # flat rows (frontier.csv)
    assert frontier.parse_objective("aac/cider_d:max") == Objective("metrics.aac/cider_d", "max")
    assert frontier.parse_objective("efficiency.tpot_ms") == Objective("efficiency.tpot_ms", "min")
    with pytest.raises(ValueError, match="min or max"):
        frontier.parse_objective("metrics.asr/wer:lowest")


def test_best_point_per_budget():
    rows = [row("a", 0.5, 100), row("b", 0.4, 200), row("b2", 0.4, 250), row("c", 0.3, 400)]
    best = best_within_budgets(rows, f"{WER}:min", f"{MEM}:min", [50, 100, 260, 1000])
    assert [(b, r and r["id"]) for b, r in best] == [(50, None), (100, "a"), (260, "b"), (1000, "c")]


# -------------------------------------------------------------------------------------------- points

def test_grid_expansion_bundles_base_and_stable_ids():
    spec = {"name": "t", "base": {"model": "tiny", "llm": "tiny_s"},
            "params": {"llm": ["tiny_s", "tiny_m"], "prune": ["none", {"prune": "width", "prune.ratio": 0.5}],
                       "lora.rank": "range(4,9,4)"},
            "points": [{"llm": "tiny_m", "prune": "none", "lora.rank": 4}, {"quant": "int8_weight"}]}
    pts = points.expand(spec)
    assert len(pts) == 2 * 2 * 2 + 1  # the first hand-picked point repeats a grid point and runs once
    assert pts[0].overrides == ("model=tiny", "llm=tiny_s", "prune=none", "lora.rank=4")  # the axis wins over base
    assert "prune.ratio=0.5" in pts[2].overrides and pts[2].params["prune"] == "prune=width,prune.ratio=0.5"
    assert pts[-1].overrides == ("model=tiny", "llm=tiny_s", "quant=int8_weight")
    assert [p.id for p in points.expand(spec)] == [p.id for p in pts] and len({p.id for p in pts}) == len(pts)
    assert points.expand({"name": "v", "params": {"x": "a,b", "y": [True, None, [1, 2]]}})[5].overrides == \
        ("x=b", "y=[1,2]")


@pytest.mark.parametrize("params, message", [
    ({"lora.rank": "range(16,4)"}, "yields no values"),
    ({"llm": []}, "yields no values"),
    ({"optimizer.lr": "interval(1e-4,1e-2)"}, "continuous"),
    ({}, "zero points"),
    ({"llm": {"a": 1}}, "mapping"),
    ({"llm": ["tiny_s", "tiny_s"]}, "repeated"),
])
def test_bad_ranges_are_clear_errors(params, message):
    with pytest.raises(SweepSpecError, match=message):
        points.expand({"name": "t", "params": params})


def test_spec_identity_covers_points_not_settings():
    spec = {"name": "t", "params": {"llm": ["tiny_s", "tiny_m"]}}
    h = points.spec_hash(points.identity(spec))
    assert points.spec_hash(points.identity({**spec, "params": {"llm": "tiny_s,tiny_m"}})) == h  # same points
    assert points.spec_hash(points.identity({**spec, "params": {"llm": ["tiny_s"]}})) != h
    assert points.spec_hash(points.identity({**spec, "base": {"seed": 1}})) != h


def _compose_sweep(*overrides):
    return compose(overrides, config_name="sweep_config")


def test_every_sweep_config_composes_and_expands():
    names = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
    assert {"frontier_grid", "frontier_optuna", "smoke", "toy"} <= set(names)
    cfg = _compose_sweep()
    assert cfg.sweep.name == "frontier_grid" and cfg.launcher == "local" and cfg.rerun_failed is False
    assert cfg.wandb.mode == "offline" and cfg.wandb.project == "sota" and cfg.objectives[0] == f"{WER}:min"
    grid = points.expand(OmegaConf.to_container(cfg.sweep))
    assert len(grid) >= 8 and not any("int4_weight" in o for p in grid for o in p.overrides)  # CUDA only
    assert len(points.expand(OmegaConf.to_container(_compose_sweep("sweep=toy").sweep))) == 4
    smoke = points.expand(OmegaConf.to_container(_compose_sweep("sweep=smoke").sweep))
    assert len(smoke) == 4 and all("init_from=@lead" in p.overrides for p in smoke[1:])
    opt = _compose_sweep("sweep=frontier_optuna")
    assert opt.sweep.method == "optuna" and opt.sweep.optuna.n_trials >= 8
    from sota.sweep.optuna_search import distribution

    dists = {a.name: distribution(a) for a in points.axes(OmegaConf.to_container(opt.sweep))}
    assert type(dists["prune.ratio"]).__name__ == "FloatDistribution"


def test_slurm_section_composes():
    cfg = _compose_sweep("launcher=slurm", "slurm.partition=gpu", "+slurm.additional.account=lab")
    assert cfg.launcher == "slurm" and cfg.slurm.partition == "gpu" and cfg.slurm.timeout_min > 0
    assert cfg.slurm.additional.account == "lab" and "gpus_per_node" in cfg.slurm


def test_every_point_of_the_shipped_sweeps_composes_with_run_py():
    from sota.sweep.driver import check_overrides

    for name in ("smoke", "toy", "frontier_grid", "frontier_optuna"):
        spec = OmegaConf.to_container(_compose_sweep(f"sweep={name}").sweep)
        probes = points.probes(spec)
        assert len(probes) < 10 and {o for p in probes for o in p.overrides} >= \
            {o for p in (points.expand(spec) if spec["method"] == "grid" else []) for o in p.overrides}
        check_overrides(probes)
    bad = points.probes({"name": "t", "params": {"llm": ["tiny_s", "no_such_llm"], "quant": ["none", "int8_weight"]}})
    with pytest.raises(SweepSpecError, match="no_such_llm"):
        check_overrides(bad)


def test_unknown_sweep_name_lists_the_valid_ones(tmp_path):
    proc = subprocess.run([sys.executable, "sweep.py", "sweep=nope", f"sweep_dir={tmp_path / 's'}"], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "smoke" in proc.stderr and "frontier_grid" in proc.stderr


# ------------------------------------------------------------------------------ sweeps with a fake run.py

@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """run_sweep(...) with FAKE_RUN standing in for run.py; returns (sweep(spec, **settings), launches())."""
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    log = tmp_path / "launches.txt"
    monkeypatch.setenv("RECORD_LAUNCHES", str(log))

    def sweep(spec, sweep_dir=None, **settings):
        from sota.sweep.driver import run_sweep

        settings = {"workers": 2, "wandb.mode": "disabled", **settings}
        cfg = _compose_sweep(f"run_py={script}", f"sweep_dir={sweep_dir or tmp_path / 'sweep'}",
                             *[f"{k}={v}" for k, v in settings.items() if k != "objectives"])
        with open_dict(cfg):
            cfg.sweep = {"method": "grid", **spec}
            if "objectives" in settings:
                cfg.objectives = settings["objectives"]
        return run_sweep(cfg)

    def launches():
        return log.read_text().split() if log.exists() else []

    return sweep, launches


GRID = {"name": "fake", "params": {"size": [1, 2, 4], "q": ["none", "int8"]}}
FAILING = [{"fail": "kill"}, {"fail": "exit"}, {"fail": "nan"}]


def test_failures_are_recorded_and_the_sweep_completes(fake, tmp_path):
    sweep, launches = fake
    result = sweep({**GRID, "points": FAILING})
    d = tmp_path / "sweep"
    assert result["counts"] == {"pending": 0, "ok": 6, "failed": 3} and len(launches()) == 9
    for name in ("sweep.json", "points.jsonl", "frontier.csv", "frontier.png", "frontier.html"):
        assert (d / name).is_file(), name
    entries = [json.loads(line) for line in (d / "points.jsonl").read_text().splitlines()]
    index = {e["params"].get("point", e["id"]): e for e in entries}
    assert index["fail=kill"]["status"] == "failed" and "SIGKILL" in index["fail=kill"]["error"]
    assert "about to be killed" in index["fail=kill"]["stderr_tail"]
    assert index["fail=exit"]["exit_code"] == 3 and "without writing results.json" in index["fail=exit"]["error"]
    assert "prune.ratio must be" in index["fail=exit"]["error"]  # the stderr's last line says why
    assert "nan" in index["fail=nan"]["error"] and (d / "points" / index["fail=nan"]["id"] / "results.json").is_file()
    ok = [e for e in entries if e["status"] == "ok"]
    assert len(ok) == 6 and all(e["values"][WER] > 0 and e["values"][MEM] > 0 for e in ok)
    # frontier over the 6 ok points: int8 halves memory at equal WER, so each size's int8 point dominates
    csv_rows = (d / "frontier.csv").read_text().splitlines()
    front = [line for line in csv_rows[1:] if ",True," in line]
    assert len(front) == 3 and all("q=int8" in line for line in front)
    assert sum(",failed," in line for line in csv_rows) == 3
    html = (d / "frontier.html").read_text()
    assert "SIGKILL" in html and "loss is nan" in html and "<script>" in html
    assert "<script src" not in html and "<link" not in html  # self-contained: opens offline


def test_resume_skips_finished_points_and_reruns_failed_on_request(fake, tmp_path):
    sweep, launches = fake
    spec = {**GRID, "points": FAILING}
    sweep(spec)
    assert len(launches()) == 9
    again = sweep(spec)
    assert again["launched"] == 0 and len(launches()) == 9  # nothing launched the second time
    rerun = sweep(spec, rerun_failed="true")
    assert rerun["launched"] == 3 and rerun["counts"]["failed"] == 3
    attempts = sorted(p.name for p in (tmp_path / "sweep" / "attempts").iterdir())
    assert len(attempts) == 3 and all(a.endswith(".1") for a in attempts)  # earlier attempts kept aside


def test_interrupted_points_run_again(fake, tmp_path):
    sweep, launches = fake
    sweep(GRID)
    d = tmp_path / "sweep"
    # a sweep killed mid-point leaves the point "running" in the index and no results.json
    lines = [json.loads(x) for x in (d / "points.jsonl").read_text().splitlines()]
    lines[0]["status"] = "running"
    (d / "points.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "points" / lines[0]["id"] / "results.json").unlink()
    assert sweep(GRID)["launched"] == 1 and launches()[-1] == lines[0]["id"]


def test_a_dir_of_another_sweep_config_is_refused(fake, tmp_path):
    sweep, launches = fake
    sweep(GRID)
    with pytest.raises(SweepDirError, match=r"different sweep config(.|\n)*params\.size"):
        sweep({**GRID, "params": {"size": [1, 8], "q": ["none", "int8"]}})
    assert len(launches()) == 6
    sweep(GRID, workers=1, timeout_s=30)  # workers, timeouts, W&B and report axes may change on resume


def test_an_objective_no_result_has_is_a_clear_error(fake):
    sweep, _ = fake
    with pytest.raises(ObjectiveError, match=r"metrics.asr/wr.*did you mean metrics.asr/wer"):
        sweep(GRID, objectives=["metrics.asr/wr:min", f"{MEM}:min"])


def test_a_point_past_its_timeout_is_killed(fake):
    sweep, _ = fake
    result = sweep({"name": "slow", "params": {"sleep": [0, 60]}}, timeout_s=2)
    assert result["counts"]["failed"] == 1 and result["wall_s"] < 30
    rows = {r["overrides"][0]: r for r in load_rows(result["sweep_dir"])}
    assert "timeout" in rows["sleep=60"]["error"]


def test_wandb_offline_logs_each_point_and_a_summary(fake, tmp_path):
    sweep, _ = fake
    sweep({**GRID, "points": [{"fail": "exit"}]}, **{"wandb.mode": "offline"})
    runs = list((tmp_path / "sweep" / "wandb").glob("offline-run-*"))
    assert len(runs) == 7 + 1  # 7 points and the summary
    logged = json.loads((tmp_path / "sweep" / "wandb.json").read_text())
    assert len(logged) == 7 and sorted(set(logged.values())) == ["failed", "ok"]
    # the summary run carries the hypervolume and its history (W&B's offline record is binary; the key is in it)
    assert any(b"hypervolume" in f.read_bytes() and b"points_finished" in f.read_bytes()
               for r in runs for f in r.glob("*.wandb"))
    sweep({**GRID, "points": [{"fail": "exit"}]}, **{"wandb.mode": "offline"})  # resumed: only a new summary
    assert len(list((tmp_path / "sweep" / "wandb").glob("offline-run-*"))) == 9


def test_optuna_search_resumes_from_its_sqlite_study(fake, tmp_path):
    pytest.importorskip("optuna")
    sweep, launches = fake
    spec = {"name": "opt", "method": "optuna", "params": {"size": "range(1,9)", "q": ["none", "int8"]},
            "optuna": {"n_trials": 6, "population_size": 2, "seed": 0}}
    first = sweep(spec)
    assert first["launched"] == 6 and (tmp_path / "sweep" / "optuna.db").is_file()
    assert sweep(spec)["launched"] == 0
    more = sweep({**spec, "optuna": {**spec["optuna"], "n_trials": 9}})  # a bigger budget continues the study
    assert more["launched"] == 3 and len(set(launches())) == 9
    import optuna

    study = optuna.load_study(study_name="opt", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    assert len(study.trials) == 9 and all(t.values is not None and len(t.values) == 2 for t in study.trials)
    assert {t.number for t in study.best_trials} and (tmp_path / "sweep" / "frontier.html").is_file()


def test_slurm_launcher_runs_points_through_submitit(fake, tmp_path):
    pytest.importorskip("submitit")
    sweep, launches = fake
    result = sweep({"name": "sl", "params": {"size": [1, 2]}}, launcher="slurm", **{"slurm.cluster": "local",
                                                                                  "slurm.timeout_min": 5})
    assert result["counts"]["ok"] == 2 and len(launches()) == 2
    assert list((tmp_path / "sweep" / "slurm").iterdir())  # submitit's job folder


# ----------------------------------------------------------------------------------- report and compare

def _multirun(root: Path) -> Path:
    """A Hydra multirun dir as `python run.py -m ...` leaves it: numbered job dirs, one that died."""
    base = root / "multirun" / "2026-11-25" / "10-00-00"
    for n, (q, mem, wer) in enumerate([("none", 800, 0.5), ("int8_weight", 600, 0.5), ("bf16", 700, 0.7)]):
        job = base / str(n)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- quant={q}\n")
        res = row(str(n), wer, mem, cider=0.1)
        res["model"] = {"weight_bytes": mem * 1000}
        (job / "results.json").write_text(json.dumps(res))
    dead = base / "3"
    (dead / ".hydra").mkdir(parents=True)
    (dead / ".hydra" / "overrides.yaml").write_text("- quant=nf4\n")
    (dead / "run.log").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    return base


def test_report_of_a_hydra_multirun_dir(tmp_path):
    from sota.sweep.cli import main

    base = _multirun(tmp_path)
    assert main(["report", str(base)]) == 0
    csv_text = (base / "frontier.csv").read_text()
    assert (base / "frontier.png").stat().st_size > 10_000 and "CUDA out of memory" in (base / "frontier.html").read_text()
    lines = csv_text.splitlines()
    assert lines[1].startswith("1,ok,True") and "quant=nf4" in lines[-1] and ",failed," in lines[-1]
    assert main(["report", str(base), "objectives=[metrics.aac/cider_d:max,model.weight_bytes:min]"]) == 0
    assert main(["report", str(base), "objectives=[metrics.nope:min,model.weight_bytes:min]"]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_report_regenerates_a_sweep_dir_with_its_own_objectives(fake, tmp_path):
    from sota.sweep.cli import main

    sweep, _ = fake
    sweep(GRID, objectives=[f"{CIDER}:max", "model.weight_bytes:min"])
    d = tmp_path / "sweep"
    for name in ("frontier.csv", "frontier.png", "frontier.html"):
        (d / name).unlink()
    assert main(["report", str(d)]) == 0
    header = (d / "frontier.csv").read_text().splitlines()[0].split(",")
    assert header[3:5] == [CIDER, "model.weight_bytes"]  # the sweep's objectives, recorded in sweep.json
    assert main(["report", str(d), f"objectives=[{WER}:min,{MEM}:min]"]) == 0  # overrides win
    assert (d / "frontier.csv").read_text().splitlines()[0].split(",")[3:5] == [WER, MEM]


def test_compare_overlays_several_sweeps(fake, tmp_path):
    sweep, _ = fake
    sweep(GRID, sweep_dir=tmp_path / "a")
    sweep({**GRID, "name": "fake2", "base": {"wer": 0.2}}, sweep_dir=tmp_path / "b")
    proc = subprocess.run([sys.executable, "sweep.py", "compare", str(tmp_path / "a"), str(tmp_path / "b"),
                           str(_multirun(tmp_path)), f"out={tmp_path / 'cmp'}"], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert lines[0].startswith("id,sweep,status,on_frontier")
    assert {line.split(",")[1] for line in lines[1:]} == {"fake", "fake2", "10-00-00"}
    assert (tmp_path / "cmp" / "compare.png").is_file() and '"grouped": true' in (tmp_path / "cmp" / "compare.html").read_text()


def test_notebook_executes_on_a_sweep_dir(fake, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    sweep, _ = fake
    sweep({**GRID, "points": [{"fail": "exit"}]})
    monkeypatch.setenv("SOTA_SWEEP_DIR", str(tmp_path / "sweep"))
    nb = nbformat.read(ROOT / "notebooks" / "frontier_review.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    assert "7 points, 1 failed" in text and "image/png" in text and "exited with code 3" in text
    assert "size=4 q=int8" in text  # the best point of the largest budget


# ------------------------------------------------------------------------------------------------ slow

SMOKE_FAILURES = [
    {"optimizer.lr": 1e30, "scheduler.num_warmup_steps": 0},   # the loss NaNs: run.py records the failure
    {"prune": "depth", "prune.ratio": 1.5},                    # rejected before any work: no results.json
]


def _sweep_cmd(sweep_dir: Path, *extra: str) -> list[str]:
    injected = "[" + ",".join("{" + ",".join(f"{k}:{v}" for k, v in p.items()) + "}" for p in SMOKE_FAILURES) + "]"
    return [sys.executable, "sweep.py", "sweep=toy", "workers=2", f"sweep_dir={sweep_dir}",
            f"sweep.points={injected}", *extra]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy sweep (4 tiny points) plus two failing points, with 2 workers and W&B offline."""
    d = tmp_path_factory.mktemp("toy") / "sweep"
    proc = subprocess.run(_sweep_cmd(d), cwd=ROOT, check=False, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d, proc


@pytest.mark.slow
def test_toy_sweep_end_to_end(toy):
    d, proc = toy
    assert "4 ok, 2 failed" in proc.stdout
    for name in ("sweep.json", "points.jsonl", "frontier.csv", "frontier.png", "frontier.html"):
        assert (d / name).is_file(), name
    index = [json.loads(x) for x in (d / "points.jsonl").read_text().splitlines()]
    assert len(index) == 6 and len(list((d / "points").glob("*/results.json"))) == 5
    ok = [e for e in index if e["status"] == "ok"]
    assert {e["params"]["llm"] for e in ok} == {"tiny_s", "tiny_m"}
    assert all(e["values"][MEM] > 0 and e["values"][WER] >= 0 for e in ok)
    failed = {e["params"]["point"]: e for e in index if e["status"] == "failed"}
    nan = next(e for k, e in failed.items() if "optimizer.lr" in k)
    assert "loss" in nan["error"]
    rejected = next(e for k, e in failed.items() if "prune.ratio" in k)
    assert rejected["exit_code"] != 0 and "prune.ratio" in rejected["error"]
    results = {e["params"].get("quant"): json.loads((d / "points" / e["id"] / "results.json").read_text())
               for e in ok if e["params"]["llm"] == "tiny_m"}
    # int8 weight-only stores the tiny LLM's linears in a quarter of the bytes
    assert results["int8_weight"]["model"]["weight_bytes"] < results["none"]["model"]["weight_bytes"]
    front = [line for line in (d / "frontier.csv").read_text().splitlines()[1:] if ",True," in line]
    assert 1 <= len(front) <= 4
    runs = list((d / "wandb").glob("offline-run-*"))
    assert len(runs) == 7 and all(list(r.glob("run-*.wandb")) for r in runs)


@pytest.mark.slow
def test_toy_sweep_resume_launches_nothing(toy):
    d, _ = toy
    before = {p: p.stat().st_mtime_ns for p in (d / "points").glob("*/results.json")}
    proc = subprocess.run(_sweep_cmd(d, "wandb.mode=disabled"), cwd=ROOT, check=False, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 launched" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (d / "points").glob("*/results.json")} == before
    refused = subprocess.run([sys.executable, "sweep.py", "sweep=toy", f"sweep_dir={d}"], cwd=ROOT,
                             check=False, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "different sweep config" in refused.stderr  # no injected points: another sweep


@pytest.mark.slow
def test_smoke_sweep_compresses_the_model_its_first_point_trained(tmp_path):
    """sweep=smoke on a small corpus: the first point trains, the others evaluate its checkpoint compressed."""
    from conftest import SMALL_CORPUS

    d = tmp_path / "smoke"
    base = [f"+sweep.base.{o}" for o in ["trainer=smoke", "measure=none", *SMALL_CORPUS]]
    proc = subprocess.run([sys.executable, "sweep.py", "sweep=smoke", "workers=2", f"sweep_dir={d}",
                           "wandb.mode=disabled", *base], cwd=ROOT, check=False, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0 and "4 ok, 0 failed" in proc.stdout, proc.stderr[-3000:]
    index = sorted((json.loads(x) for x in (d / "points.jsonl").read_text().splitlines()), key=lambda e: e["index"])
    results = [json.loads((d / "points" / e["id"] / "results.json").read_text()) for e in index]
    ckpt = str(d / "points" / index[0]["id"] / "checkpoints" / "last.ckpt")
    assert results[0]["config"]["task"] == "train" and results[0]["config"]["init_from"] is None
    assert all(r["config"]["task"] == "eval" and r["config"]["init_from"] == ckpt for r in results[1:])
    trained, int8, depth, width = (r["model"] for r in results)
    assert int8["weight_bytes"] < trained["weight_bytes"]
    assert depth["weight_bytes"] < trained["weight_bytes"] and width["weight_bytes"] < trained["weight_bytes"]


@pytest.mark.slow
def test_frontier_html_renders_in_headless_chromium(toy, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it")
    import numpy as np
    from matplotlib.image import imread

    d, _ = toy
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1100,900", (d / "frontier.html").as_uri()], check=False, capture_output=True, timeout=120)
    img = imread(shot)[..., :3]
    assert img.shape[0] == 900 and (img < 0.9).mean() > 0.01  # not blank
    # the frontier's red (#d62728) only appears if the script ran and drew the frontier points
    red = (np.abs(img[..., 0] - 0xD6 / 255) < 0.06) & (np.abs(img[..., 1] - 0x27 / 255) < 0.06)
    assert red.sum() > 50


@pytest.mark.slow
def test_the_review_of_a_real_sweep_finds_every_answered_clips_audio(toy):
    from sota.sweep.cli import settings_for
    from sota.sweep.review import review_data

    d, _ = toy
    data = review_data(d, settings_for(d, []), draws=200)
    ref = json.loads((d / "points" / data["reference"] / "results.json").read_text())
    answered = sum(len((d / "points" / data["reference"] / f).read_text().splitlines())
                   for f in ("predictions.jsonl", "predictions_real.jsonl"))
    assert {c["split"] for c in data["clips"]} == {"test", "real"} and len(data["clips"]) == answered
    assert len(data["audio"]) == answered and not data["no_audio"]  # through data.splits.<split>.manifest
    assert ref["data"]["splits"]["test"]["manifest"].endswith("test.json")
    assert len(data["points"]) == 4 and all(p["latency"]["breakdown"]["encoder"] > 0 for p in data["points"].values())


def test_nested_base_keys_from_the_command_line_are_dotted_overrides():
    from sota.sweep.points import expand

    spec = {"name": "t", "method": "grid", "base": {"model": "tiny", "llm": {"path": "/models/x"}},
            "params": {"quant": ["none", "bf16"]}, "points": []}
    pts = expand(spec)
    assert len(pts) == 2
    assert all("llm.path=/models/x" in p.overrides and "model=tiny" in p.overrides for p in pts)


def test_the_first_point_of_a_fresh_sweep_runs_alone(fake, tmp_path, monkeypatch):
    """It builds the corpus and feature caches the other points share; then the workers fill up."""
    times = tmp_path / "times.txt"
    monkeypatch.setenv("RECORD_TIMES", str(times))
    sweep, launches = fake
    sweep({"name": "lead", "params": {"size": [1, 2, 4, 8]}, "base": {"sleep": 0.5}}, workers=3)
    events = [line.split() for line in times.read_text().splitlines()]
    starts = {name: float(t) for kind, name, t in events if kind == "start"}
    ends = {name: float(t) for kind, name, t in events if kind == "end"}
    first = min(starts, key=starts.get)
    assert len(starts) == 4 and all(starts[n] >= ends[first] for n in starts if n != first)
    others = sorted(starts[n] for n in starts if n != first)
    assert others[2] - others[0] < 0.5  # the rest ran side by side, not one after another


def test_points_start_from_the_first_points_checkpoint(fake, tmp_path, monkeypatch):
    """init_from: "@lead": one trained model, compressed by the other points, which wait for it."""
    times = tmp_path / "times.txt"
    monkeypatch.setenv("RECORD_TIMES", str(times))
    sweep, _ = fake
    result = sweep({"name": "lead", "params": {}, "points": [
        {"sleep": 0.5}, {"init_from": "@lead", "q": "int8"}, {"init_from": "@lead", "size": 0.5}]}, workers=3)
    assert result["counts"]["ok"] == 3
    d = tmp_path / "sweep"
    entries = [json.loads(line) for line in (d / "points.jsonl").read_text().splitlines()]
    lead = min(entries, key=lambda e: e["index"])
    ckpt = str(d / "points" / lead["id"] / "checkpoints" / "last.ckpt")
    assert sorted(o for e in entries for o in e["overrides"] if o.startswith("init_from=")) == [f"init_from={ckpt}"] * 2
    events = [line.split() for line in times.read_text().splitlines()]
    ends = {name: float(t) for kind, name, t in events if kind == "end"}
    assert all(float(t) >= ends[lead["id"]] for kind, name, t in events if kind == "start" and name != lead["id"])


def test_the_first_point_cannot_start_from_itself(fake):
    sweep, launches = fake
    with pytest.raises(SweepSpecError, match="first point"):
        sweep({"name": "self", "params": {}, "points": [{"init_from": "@lead"}, {"q": "int8"}]})
    with pytest.raises(SweepSpecError, match="method=grid"):
        sweep({"name": "opt", "method": "optuna", "params": {"size": [1, 2]}, "base": {"init_from": "@lead"},
               "optuna": {"n_trials": 2}})
    assert launches() == []


def test_local_points_are_spread_over_the_listed_gpus(fake, tmp_path, monkeypatch):
    record = tmp_path / "gpus.txt"
    monkeypatch.setenv("RECORD_GPUS", str(record))
    sweep, _ = fake
    result = sweep({"name": "gpus", "params": {"size": [1, 2, 4, 8, 16]}, "base": {"sleep": 0.3}},
                   workers=2, gpus="[0,3]")
    assert result["counts"]["ok"] == 5
    seen = dict(line.split() for line in record.read_text().splitlines())
    assert len(seen) == 5 and set(seen.values()) == {"0", "3"}  # one GPU each, both used


@pytest.mark.parametrize("gpus", ["[-1]", "[]", "two"])
def test_a_bad_gpu_list_is_a_clear_error(fake, gpus):
    from sota.sweep.driver import SweepSpecError

    sweep, launches = fake
    with pytest.raises(SweepSpecError, match="gpus must be null, auto or a non-empty list"):
        sweep(GRID, gpus=gpus)
    assert launches() == []


# ------------------------------------------------------------------------------------------- remeasure

def test_remeasure_picks_the_reference_and_the_best_point_and_keeps_finished_runs(fake, tmp_path):
    from sota.sweep.frontier import parse_objective
    from sota.sweep.remeasure import remeasure

    sweep, launches = fake
    # size 2 is the reference (first point): wer 0.5, memory 200; int8 halves memory; size 4 is better, hungrier
    sweep({"name": "rem", "points": [{"size": 2}, {"size": 2, "q": "int8", "wer": 0.54},
                                     {"size": 2, "q": "int8", "wer": 0.6}, {"size": 4}]})
    objectives = [parse_objective(WER + ":min"), parse_objective(MEM + ":min")]
    script = tmp_path / "fake_run.py"
    before = len(launches())
    result = remeasure(tmp_path / "sweep", "reference,best", "official", objectives, 1.10, ["seed=1"],
                       run_py=script)
    ids = [line["id"] for line in result["rows"]]
    assert ids[0].startswith("000") and ids[1].startswith("001")  # 0.54 <= 1.1 x 0.5 at half the memory
    assert all(line["status"] == "ok" for line in result["rows"])
    assert len(launches()) == before + 2
    args = (tmp_path / "sweep" / "remeasure" / "official" / ids[1] / "results.json")
    assert args.is_file() and result["csv"].read_text().startswith("id,point,status")
    header = result["csv"].read_text().splitlines()[0]
    assert f"sweep {WER}" in header and f"official {MEM}" in header
    remeasure(tmp_path / "sweep", "reference", "official", objectives, run_py=script)
    assert len(launches()) == before + 2  # finished: not run again


def test_a_failed_remeasure_is_kept_aside_and_tried_again(fake, tmp_path):
    from sota.sweep.frontier import parse_objective
    from sota.sweep.remeasure import remeasure

    sweep, _ = fake
    sweep({"name": "rem3", "points": [{"size": 2}, {"size": 4}]})
    objectives = [parse_objective(WER + ":min"), parse_objective(MEM + ":min")]
    script, root = tmp_path / "fake_run.py", tmp_path / "sweep" / "remeasure" / "official"
    failed = remeasure(tmp_path / "sweep", "reference", "official", objectives, extra=["fail=exit"], run_py=script)
    assert failed["rows"][0]["status"] == "failed" and "exited with code 3" in failed["rows"][0]["error"]
    again = remeasure(tmp_path / "sweep", "reference", "official", objectives, run_py=script)
    pid = again["rows"][0]["id"]
    assert again["rows"][0]["status"] == "ok"
    assert (root / "attempts" / f"{pid}.1" / "stderr.log").read_text().strip()  # the failed try, kept


def test_remeasure_evaluates_a_trained_point_from_its_checkpoint(tmp_path):
    from sota.sweep.remeasure import overrides_for

    ckpt = tmp_path / "points" / "003-abc" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    row = {"id": "003-abc", "config": {"task": "train"},
           "overrides": ["experiment=mini_gpu", "measure.iterations=20", "init_from=/x.ckpt", "task=train",
                         "quant=int4_weight", "hydra.job.chdir=false"]}
    assert overrides_for(row, tmp_path, "official", ["measure.real_clips=4"]) == [
        "experiment=mini_gpu", "quant=int4_weight", "task=eval", f"ckpt_path={ckpt}", "measure=official",
        "measure.real_clips=4"]


def test_remeasure_names_unknown_points(fake, tmp_path):
    from sota.sweep.frontier import parse_objective
    from sota.sweep.remeasure import remeasure
    from sota.sweep.sweepdir import SweepDirError

    sweep, _ = fake
    sweep({"name": "rem2", "points": [{"size": 2}, {"size": 4}]})
    objectives = [parse_objective(WER + ":min"), parse_objective(MEM + ":min")]
    with pytest.raises(SweepDirError, match="matches 0 points"):
        remeasure(tmp_path / "sweep", "999", "official", objectives, run_py=tmp_path / "fake_run.py")


@pytest.mark.slow
def test_remeasure_runs_the_reference_of_a_real_sweep_in_the_official_protocol(toy):
    d, _ = toy
    proc = subprocess.run([sys.executable, "sweep.py", "remeasure", str(d), "--points", "reference",
                           "--measure", "official", "measure.iterations=2", "measure.warmup=1",
                           "measure.real_clips=1", "measure.e2e_repeats=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((d / "remeasure" / "official").glob("*/results.json"))
    assert len(runs) == 1
    res = json.loads(runs[0].read_text())
    assert res["status"] == "ok" and res["efficiency"]["mode"] == "official" and res["config"]["task"] == "eval"
    assert (d / "remeasure" / "official" / "remeasure.csv").is_file()


def _answers(run_dir: Path, wrong: set[int], clips: int = 40, real_wrong: set[int] | None = None) -> None:
    """A finished run whose ASR answers get one word of five wrong on the `wrong` clips (and, with
    `real_wrong`, on those clips of a real-speech set)."""
    run_dir.mkdir(parents=True)
    metrics = {}
    for name, metric, bad in (("predictions.jsonl", "asr/wer", wrong), ("predictions_real.jsonl", "real/asr/wer",
                                                                          real_wrong)):
        if bad is None:
            continue
        rows = [{"id": f"asr-{i}", "task": "asr", "references": ["the cook must enter now"],
                 "prediction": "the cook could enter now" if i in bad else "the cook must enter now"}
                for i in range(clips)]
        rows.append({"id": "aac-0", "task": "aac", "references": ["rain"], "prediction": "wind"})
        (run_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        metrics[metric] = len(bad) / (5 * clips)
    (run_dir / "results.json").write_text(json.dumps({"status": "ok", "metrics": metrics}))


def test_paired_bootstrap_separates_a_real_gain_from_noise(tmp_path):
    from sota.sweep.paired import paired

    _answers(tmp_path / "0_ref", wrong=set(range(20)))
    _answers(tmp_path / "1_better", wrong=set())
    _answers(tmp_path / "2_same", wrong=set(range(20)))
    _answers(tmp_path / "3_one_fewer", wrong=set(range(19)))
    rows = {r["id"]: r for r in paired(tmp_path, reference="0_")["rows"]}
    assert rows["1_better"]["wer_delta"] == pytest.approx(-20 / 200) and rows["1_better"]["verdict"] == "better"
    assert rows["1_better"]["wer_delta_hi"] < 0 and rows["1_better"]["clips"] == 40
    assert rows["2_same"]["wer_delta"] == 0 and rows["2_same"]["verdict"] == "within noise"
    assert rows["3_one_fewer"]["wer_delta"] == pytest.approx(-1 / 200)
    assert rows["3_one_fewer"]["verdict"] == "within noise"  # one clip of 40: the interval straddles zero
    assert (tmp_path / "paired.csv").read_text().startswith("id,point,reference,clips,wer,wer_delta")
    assert "real_clips" not in rows["1_better"]  # no real-speech answers, no real-speech columns


def test_paired_pairs_the_real_speech_set_on_its_own_clips(tmp_path):
    from sota.sweep.paired import paired

    _answers(tmp_path / "0_ref", wrong=set(), real_wrong=set(range(20)))
    _answers(tmp_path / "1_real_gain", wrong=set(), real_wrong=set())
    _answers(tmp_path / "2_no_real", wrong={0})
    rows = {r["id"]: r for r in paired(tmp_path, reference="0_")["rows"]}
    gain = rows["1_real_gain"]
    assert gain["verdict"] == "within noise" and gain["wer_delta"] == 0
    assert gain["real_wer_delta"] == pytest.approx(-20 / 200) and gain["real_verdict"] == "better"
    assert gain["real_clips"] == 40 and gain["real_wer"] == 0
    assert rows["2_no_real"]["real_clips"] == 0 and rows["2_no_real"]["real_verdict"] == "no common clips"
    proc = subprocess.run([sys.executable, "sweep.py", "paired", str(tmp_path), "--reference", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "real-speech WER" in proc.stdout and "| better |" in proc.stdout


def test_paired_cli_names_a_point_without_answers(tmp_path):
    _answers(tmp_path / "0_ref", wrong={1})
    (tmp_path / "1_bare").mkdir()
    (tmp_path / "1_bare" / "results.json").write_text(json.dumps({"status": "ok", "metrics": {"asr/wer": 0.1}}))
    proc = subprocess.run([sys.executable, "sweep.py", "paired", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "1_bare/predictions.jsonl is missing" in proc.stderr
    (tmp_path / "1_bare" / "results.json").unlink()
    shutil.rmtree(tmp_path / "1_bare")
    proc = subprocess.run([sys.executable, "sweep.py", "paired", str(tmp_path), "--reference", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "| 0_ref |" in proc.stdout and "within noise" in proc.stdout


def test_the_methods_study_composes_every_point_with_run_py():
    from sota.sweep.driver import check_overrides

    spec = OmegaConf.to_container(_compose_sweep("sweep=mini_methods").sweep)
    pts = points.expand(spec)
    assert len(pts) == 18
    check_overrides(pts)
    flat = [" ".join(p.overrides) for p in pts]
    for method in ("recover=distill", "quant.algorithm=awq", "quant=mixed", "tokens=merge", "prune=lowrank"):
        assert any(method in f for f in flat), method
