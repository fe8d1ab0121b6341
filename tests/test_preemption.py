"""Runs that are stopped and run again: real signals sent to real `run.py` processes, the checkpoint they leave,
the status they record, and run directories that a refused command leaves exactly as they were."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SMALL_CORPUS
from sota.preemption import Interrupted, interruptible

BASE = ["trainer=smoke", "logger=csv", "measure=none", "data.real_test=null", "data.max_clip_s=5.0", *SMALL_CORPUS]
LONG = ["trainer.max_steps=60", "resume_every_n_steps=10"]


def command(out_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "run.py", *BASE, *overrides, f"hydra.run.dir={out_dir}"]


def run(out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(out_dir, *overrides), cwd=ROOT, capture_output=True, text=True, timeout=600)


def results(out_dir: Path) -> dict:
    return json.loads((out_dir / "results.json").read_text())


def saved_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def start_and_signal(out_dir: Path, signum: int, at_step: int) -> tuple[subprocess.Popen, int]:
    """Start a training run and send `signum` once its checkpoint shows `at_step` steps or more."""
    proc = subprocess.Popen(command(out_dir, *LONG), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    ckpt = out_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    step = -1
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.is_file():
            try:
                step = saved_step(ckpt)
            except Exception:  # never half-written (atomic rename); a race with the rename itself is retried
                step = -1
            if step >= at_step:
                break
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before step {at_step}: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signum)
    return proc, step


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    proc = run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_finished_run_ends_with_a_summary_line(finished):
    log = (finished / "run.log").read_text()
    line = [ln for ln in log.splitlines() if "sota: ok" in ln]
    assert line and "asr/wer" in line[-1] and str(finished / "results.json") in line[-1]


def test_a_refused_rerun_leaves_the_finished_run_byte_for_byte(finished):
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    proc = run(finished, "seed=7")
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr and "Traceback" not in proc.stderr
    after = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    assert after == before  # .hydra/*.yaml, run.log, predictions and checkpoints alike


def test_an_unreadable_results_json_is_a_refusal_not_an_empty_directory(tmp_path):
    (tmp_path / "results.json").write_text('{"status": "ok", "metr')
    proc = run(tmp_path)
    assert proc.returncode == 2 and "unreadable" in proc.stderr and "results.json" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_configuration_error_is_one_message_and_exit_status_2(tmp_path):
    proc = run(tmp_path, "task=bogus")
    assert proc.returncode == 2 and "task must be one of" in proc.stderr and "Traceback" not in proc.stderr


def test_a_signal_outside_training_raises_interrupted_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as err, interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread long before
    assert err.value.exit_code == 143 and "SIGTERM" in str(err.value)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_training_checkpoints_records_interrupted_and_the_same_command_resumes(tmp_path, signum):
    proc, seen = start_and_signal(tmp_path, signum, at_step=10)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    res = results(tmp_path)
    assert res["status"] == "interrupted" and signal.Signals(signum).name in res["error"]
    stopped = saved_step(tmp_path / "checkpoints" / "last.ckpt")
    assert seen <= stopped < 60  # saved when the signal stopped it, not only at the last periodic checkpoint

    again = run(tmp_path, *LONG)
    assert again.returncode == 0, again.stderr[-3000:]
    res = results(tmp_path)
    assert res["status"] == "ok" and res["resumed_from"]["step"] == stopped
    assert res["timing"]["train_steps"] == 60


@pytest.mark.slow
def test_kill_9_at_a_quarter_of_training_repeats_less_than_30_percent_of_the_steps(tmp_path):
    proc, seen = start_and_signal(tmp_path, signal.SIGKILL, at_step=15)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = saved_step(tmp_path / "checkpoints" / "last.ckpt")

    again = run(tmp_path, *LONG)
    assert again.returncode == 0, again.stderr[-3000:]
    res = results(tmp_path)
    assert res["status"] == "ok" and res["timing"]["train_steps"] == 60
    # It continued from the newest checkpoint, which the kill did not damage. The steps trained twice are those
    # after it: fewer than one period of resume_every_n_steps (10 of 60, 17 %) plus the polling delay.
    assert res["resumed_from"]["step"] == killed_at >= seen >= 15


def test_an_interrupted_run_is_not_continued_with_other_overrides(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"stand-in: the guard refuses before reading it")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    proc = run(tmp_path, "seed=2")
    assert proc.returncode == 2 and "interrupted run" in proc.stderr and "seed=1" in proc.stderr
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- seed=1\n"
