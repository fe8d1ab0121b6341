"""sweep.py review: the page's data from a small sweep dir (reference, frontier, config diff, paired intervals,
per-clip answers and WER, embedded audio and what was left out), the CLI and its errors, W&B's per-clip table
with audio, and the page in headless Chromium (clicking a point shows its clips)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT

from sota.sweep import cli
from sota.sweep.report import ReportSettings
from sota.sweep.review import REVIEW_HTML, review_data

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).is_file()), None)
SETTINGS = ReportSettings.from_config(["metrics.asr/wer:min", "model.weight_bytes:min"])
SENTENCE = "the cook must enter now"
# (id, params, weight bytes, clips answered with one word wrong, config changes, answer marker)
POINTS = [("000-ref", {"quant": "none"}, 400, {0, 1}, {}, "may"),
          ("001-int8", {"quant": "int8"}, 100, {0, 1, 2}, {"quant": {"mode": "int8_weight"}}, "could"),
          ("002-bad", {"quant": "bad"}, 300, {0, 1, 2, 3}, {"quant": {"mode": "nf4"}}, "would")]
CLIPS = 4


def _clip(marker: str, wrong: bool) -> str:
    # one word of five wrong on the clips in `wrong`, a different one per point (its answers recognisable)
    return f"the cook {marker} enter now" if wrong else SENTENCE


def make_sweep(root: Path, missing_audio: bool = False) -> Path:
    """A finished sweep dir of three points over four ASR clips and one AAC clip, with their audio on disk."""
    data = root / "corpus"
    data.mkdir(parents=True)
    rows = []
    for i in range(CLIPS + 1):
        task = "asr" if i < CLIPS else "aac"
        name = f"{task}-{i}"
        if not (missing_audio and i == 0):
            t = np.arange(8000) / 16000
            sf.write(data / f"{name}.wav", 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t), 16000)
        rows.append({"id": name, "path": f"{name}.wav", "task": task,
                     "text": SENTENCE if task == "asr" else "rain on a roof"})
    (data / "test.json").write_text(json.dumps({"annotation": rows}))
    d = root / "sweep"
    (d / "points").mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"name": "fake-review"}))
    index = []
    for n, (pid, params, size, wrong, change, marker) in enumerate(POINTS):
        run = d / "points" / pid
        run.mkdir()
        answers = [{"id": f"asr-{i}", "task": "asr", "references": [SENTENCE],
                    "prediction": _clip(marker, i in wrong)} for i in range(CLIPS)]
        answers.append({"id": f"aac-{CLIPS}", "task": "aac", "references": ["rain on a roof", "rain"],
                        "prediction": f"rain {marker}"})
        (run / "predictions.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
        config = {"seed": 0, "quant": {"mode": "none"}, "paths": {"output_dir": str(run)},
                  "logger": {"save_dir": str(run)}}
        config = {**config, **change}
        results = {"status": "ok", "error": None, "config": config,
                   "metrics": {"asr/wer": len(wrong) / (5 * CLIPS), "aac/cider_d": 0.1},
                   "model": {"weight_bytes": size},
                   "efficiency": {"mode": "strict", "device": "cpu", "peak_memory_mb": size / 2, "ttft_ms": 10.0 + n,
                                  "tpot_ms": 2.0,
                                  "breakdown_ms": {"features": 1.0, "encoder": 5.0 + n, "connector": 1.0,
                                                   "prefill": 4.0, "decode": 2.0}},
                   "data": {"splits": {"test": {"clips": CLIPS + 1, "manifest": str(data / "test.json")}}}}
        (run / "results.json").write_text(json.dumps(results))
        index.append({"id": pid, "index": n, "overrides": [f"quant={params['quant']}"], "params": params,
                      "status": "ok"})
    (d / "points.jsonl").write_text("".join(json.dumps(e) + "\n" for e in index))
    return d


def test_review_data_pairs_each_point_with_the_reference_clip_by_clip(tmp_path):
    from sota.sweep.paired import paired

    d = make_sweep(tmp_path)
    data = review_data(d, SETTINGS, draws=500)
    assert data["reference"] == "000-ref" and data["title"] == "fake-review"
    assert data["frontiers"]["metrics.asr/wer|model.weight_bytes"]["None"] == ["000-ref", "001-int8"]  # 002 dominated
    int8 = data["points"]["001-int8"]
    # config diff: the changed key only; each run's own directory is no difference
    assert int8["config_diff"] == [["quant.mode", '"none"', '"int8_weight"']]
    assert data["points"]["000-ref"]["config_diff"] == []
    # per-clip answers with paired's word errors (errors, reference words)
    assert int8["answers"]["test:asr-2"] == ["the cook could enter now", 1, 5]
    assert int8["answers"]["test:asr-3"] == [SENTENCE, 0, 5]
    assert int8["answers"]["test:aac-4"] == ["rain could", None, None]  # a caption has no WER
    # the same paired interval as `sweep.py paired` (one implementation)
    csv = {r["id"]: r for r in paired(d, draws=500)["rows"]}
    assert int8["paired"]["wer_delta"] == pytest.approx(1 / 20) == csv["001-int8"]["wer_delta"]
    assert int8["paired"]["wer_delta_lo"] == csv["001-int8"]["wer_delta_lo"]
    assert int8["latency"]["breakdown"] == {"features": 1.0, "encoder": 6.0, "connector": 1.0, "prefill": 4.0,
                                            "decode": 2.0}
    assert [c["key"] for c in data["clips"]] == [f"test:asr-{i}" for i in range(CLIPS)] + ["test:aac-4"]
    assert data["clips"][-1]["references"] == ["rain on a roof", "rain"]
    # every clip's audio embedded as Ogg, none left out
    assert len(data["audio"]) == CLIPS + 1 and not data["no_audio"]
    assert all(uri.startswith("data:audio/ogg;base64,T2dn") for uri in data["audio"].values())  # "OggS"


def test_clips_without_audio_are_named_with_the_reason(tmp_path, caplog):
    from sota.sweep.review import encode_clip

    d = make_sweep(tmp_path, missing_audio=True)
    one_clip_mb = len(encode_clip(tmp_path / "corpus" / "asr-1.wav")) * 1.5 / 1e6  # room for one clip, not two
    with caplog.at_level(logging.WARNING, logger="sota.sweep.review"):
        data = review_data(d, SETTINGS, reference="001", draws=200, audio_mb=one_clip_mb)
    assert data["reference"] == "001-int8"
    assert data["points"]["000-ref"]["paired"]["wer_delta"] == pytest.approx(-1 / 20)
    assert "asr-0.wav" in data["no_audio"]["test:asr-0"]  # the missing file, named
    assert list(data["audio"]) == ["test:asr-1"]
    assert all("audio budget" in data["no_audio"][f"test:{c}"] for c in ("asr-2", "asr-3", "aac-4"))
    assert "clips have no audio player" in caplog.text and "audio budget" in caplog.text


def test_cli_writes_a_self_contained_review_page(tmp_path):
    d = make_sweep(tmp_path)
    proc = subprocess.run([sys.executable, "sweep.py", "review", str(d), "--audio-mb", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = d / REVIEW_HTML
    assert proc.stdout.strip().endswith(str(page))
    from plotly.offline import get_plotlyjs

    text = page.read_text()
    assert get_plotlyjs() in text  # plotly.js inlined: nothing is fetched at view time
    assert "http" not in text.replace(get_plotlyjs(), "") and "<script src" not in text.replace(get_plotlyjs(), "")
    assert "the cook would enter now" in text and "data:audio/ogg;base64," in text


def test_bad_input_is_a_clear_error_naming_it(tmp_path, capsys):
    d = make_sweep(tmp_path)
    assert cli.main(["review", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["review", str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty'} holds no finished runs" in capsys.readouterr().err
    assert cli.main(["review", str(d), "--reference", "9zz"]) == 2
    err = capsys.readouterr().err
    assert "'9zz' matches 0 finished points" in err and "000-ref" in err and str(d) in err
    (d / "points" / "001-int8" / "predictions.jsonl").write_text('{"id": "asr-0", "task"\n')
    assert cli.main(["review", str(d), "--reference", "001"]) == 2
    assert "001-int8/predictions.jsonl is unreadable (JSONDecodeError" in capsys.readouterr().err
    (d / "points" / "000-ref" / "predictions.jsonl").unlink()
    assert cli.main(["review", str(d)]) == 2
    assert "000-ref/predictions.jsonl is missing" in capsys.readouterr().err
    assert not (d / REVIEW_HTML).exists()


def test_wandb_logs_each_points_clip_table_with_audio(tmp_path):
    from sota.sweep import wandb_log
    from sota.sweep.sweepdir import load_rows

    d = make_sweep(tmp_path)
    wandb_log.log_sweep(d, "fake-review", load_rows(d), SETTINGS.objectives, {}, {"mode": "offline"})
    tables = list((d / "wandb").glob("offline-run-*/files/media/table/clips_*.table.json"))
    assert len(tables) == len(POINTS)
    path = next(t for t in tables if "cook could" in t.read_text())  # 001-int8's run
    table = json.loads(path.read_text())
    assert table["columns"] == ["split", "id", "task", "reference", "answer", "reference_answer", "wer", "audio"]
    by_id = {r[1]: r for r in table["data"]}
    assert by_id["asr-2"][4:7] == ["the cook could enter now", SENTENCE, pytest.approx(0.2)]
    # the audio travels in the run's table artifact, recorded in the offline run file
    records = b"".join(f.read_bytes() for f in path.parents[3].glob("*.wandb"))
    assert records.count(b"media/audio/") >= CLIPS + 1


@pytest.mark.slow
def test_clicking_a_point_shows_its_clips_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from matplotlib.image import imread

    d = make_sweep(tmp_path)
    assert cli.main(["review", str(d)]) == 0
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((d / REVIEW_HTML).as_uri())
        page.wait_for_selector("#plot .main-svg")
        assert "the cook could enter now" not in page.inner_text("#clips")  # before: the reference's clips only
        before = tmp_path / "before.png"
        page.locator("#clips").screenshot(path=str(before))
        # the first trace holds every point in sweep order: the second is 001-int8
        page.locator("#plot .scatterlayer .trace").first.locator(".point").nth(1).click(force=True)
        page.wait_for_function("document.querySelector('#clips').innerText.includes('cook could')", timeout=10000)
        assert page.locator("#selA").input_value() == "001-int8"
        assert "A: 001-int8" in page.inner_text("#panelA") and "quant.mode" in page.inner_text("#panelA")
        rows = page.locator("#clips tr[data-clip]")
        assert rows.count() == CLIPS + 1 and page.locator("#clips audio").count() == CLIPS + 1
        assert "the cook could enter now" in rows.nth(2).inner_text()
        after = tmp_path / "after.png"
        page.locator("#clips").screenshot(path=str(after))
        browser.close()
    assert not errors, errors
    # the A column's header (#1f77b4) appears in the clip table only once a point is clicked
    blue = [(np.abs(img[..., :3] - np.array([0x1F, 0x77, 0xB4]) / 255).max(-1) < 0.05).sum()
            for img in (imread(before), imread(after))]
    assert blue[0] == 0 and blue[1] > 200, blue


def test_a_run_records_each_splits_manifest_and_the_review_finds_its_audio(tmp_path):
    from sota.data.datamodule import AudioDataModule
    from sota.sweep.review import audio_paths

    make_sweep(tmp_path)
    manifest = tmp_path / "corpus" / "test.json"
    dm = AudioDataModule(source=lambda root: {"test": manifest}, root=str(tmp_path), tasks=["asr", "aac"],
                         cache_features=False, real_test=None)
    splits = dm.load_splits(("test",))  # what run.py records as results.json data.splits
    assert splits["test"]["manifest"] == str(manifest)
    paths, notes = audio_paths({"data": {"splits": splits}})
    assert paths[("test", "asr-2")] == tmp_path / "corpus" / "asr-2.wav" and len(paths) == CLIPS + 1 and not notes
    _, notes = audio_paths({"data": {"splits": {"test": {"clips": 5}}}})  # a run from before the record
    assert notes and "data.splits.test.manifest" in notes[0]


def test_a_sweep_whose_first_point_did_not_finish_names_the_finished_ones_to_compare_with():
    from sota.sweep.paired import pick_reference
    from sota.sweep.sweepdir import SweepDirError

    rows = [{"id": "000-a", "index": 0, "status": "skipped", "error": "skipped: over budget (predicted 6e8 bytes)"},
            {"id": "001-b", "index": 1, "status": "ok"}, {"id": "002-c", "index": 2, "status": "failed"}]
    with pytest.raises(SweepDirError, match=r"000-a .*did not finish: skipped: over budget.*--reference ID "
                                            r"\(finished: 001-b\)$"):
        pick_reference(rows, None)
    assert pick_reference(rows, "001")["id"] == "001-b"
