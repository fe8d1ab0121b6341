"""run.py end to end on the tiny preset with a small corpus: results.json contract, predictions, refusal to
overwrite a finished run, failed runs recorded, evaluation of a saved checkpoint."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, SMALL_CORPUS

MEASURE = ["trainer=smoke", "logger=csv", "measure.warmup=1", "measure.iterations=2", "measure.real_clips=1",
           "measure.e2e_repeats=1", "measure.cpu_threads=1"]
# Runs on hand-made manifests leave out the real-speech set: an untrained model answers every one of its 281
# prompts up to the token budget. FAST runs score 8 of them (SMALL_CORPUS caps evaluation sets).
QUICK = [*MEASURE, "data.real_test=null"]
FAST = [*MEASURE, "data.max_clip_s=5.0", *SMALL_CORPUS]


# A random Whisper-shaped encoder: GPU machines need not carry the bundled tiny.en weights.
RANDOM_ENCODER = ["encoder.path=null", "encoder.config={d_model:64,encoder_layers:1,encoder_attention_heads:4,"
                  "encoder_ffn_dim:128,num_mel_bins:80,max_source_positions:1500}"]


def run(out_dir, *overrides, check=True, base=FAST):
    proc = subprocess.run([sys.executable, "run.py", *base, *overrides, f"hydra.run.dir={out_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run(out, "logger=wandb")  # the default logger, offline: no network is touched
    return out


def test_results_json_contract(trained):
    res = json.loads((trained / "results.json").read_text())
    assert res["status"] == "ok" and res["error"] is None
    assert set(res) >= {"status", "error", "config", "metrics", "model", "efficiency", "timing", "provenance"}
    m = res["metrics"]
    assert 0.0 <= m["asr/wer"] and m["aac/cider_d"] >= 0.0 and "aac/spider" in m
    assert m["aac/official_v1_1"] == pytest.approx(100 * m["aac/cider_d"])
    model = res["model"]
    assert 0 < model["params_trainable"] < model["params_total"]
    # the tiny preset's frozen encoder and its trained parts are float32: 4 bytes a parameter, plus a few buffers
    assert 4 * model["params_total"] <= model["weight_bytes"] <= 4 * model["params_total"] + 1024
    assert 1 <= model["audio_tokens"] <= 16  # 5 s context, 17-frame windows
    eff = res["efficiency"]
    assert eff["device"].startswith("cpu") and eff["peak_memory_mb"] > 0 and eff["run_peak_memory_mb"] > 0
    assert eff["mode"] == "strict" and eff["ttft_ms"] > 0 and eff["tpot_ms"] > 0 and eff["backend"] == "eager"
    assert res["timing"]["train_steps"] == 4 and res["timing"]["train_s"] > 0
    # every trainable tensor at optimizer.lr (no param_groups given)
    groups = res["compression"]["recover"]["param_groups"]
    assert groups == [{"match": None, "lr": res["config"]["optimizer"]["lr"], "tensors": groups[0]["tensors"],
                       "parameters": model["params_trainable"]}]
    # steady-state throughput: steps 2-4 (the first step is warm-up), global samples per second
    assert res["timing"]["throughput_steps"] == 3 and res["timing"]["train_samples_per_s"] > 0
    assert res["provenance"]["seed"] == 0 and "torch" in res["provenance"]["versions"]
    assert res["config"]["connector"]["window_s"] == pytest.approx(0.333333)
    # real speech is scored in every run: the built-in Asterisk prompts when installed, else null with the reason
    if m["real/asr/wer"] is None:
        assert "make real-test" in m["real/note"]
    else:
        assert m["real/asr/wer"] >= 0 and m["real/asr/cer"] >= 0 and res["data"]["real"] == 8
    speakers = res["data"]["speakers"]
    assert speakers and all(":" in s for s in speakers)  # engine:voice ids of the training speech


def test_wandb_writes_an_offline_run_with_the_summary(trained):
    runs = list((trained / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_wandb_summary_holds_the_numbers_of_metrics_model_and_agreement(monkeypatch):
    import wandb

    from sota.tasks import _close_wandb

    class Run:
        summary: dict = {}

    finished = []
    monkeypatch.setattr(wandb, "run", Run())
    monkeypatch.setattr(wandb, "finish", lambda exit_code: finished.append(exit_code))
    _close_wandb(None, {"status": "ok", "metrics": {"asr/wer": 0.1, "aac/spider_note": "text"},
                        "model": {"weight_bytes": 10}, "agreement": {"backend": "static", "decisive": 0,
                                                                    "divergences": []}})
    assert Run.summary == {"test/asr/wer": 0.1, "model/weight_bytes": 10, "agreement/decisive": 0, "status": "ok"}
    assert finished == [0]


def test_predictions_are_saved(trained):
    rows = [json.loads(line) for line in (trained / "predictions.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"asr", "aac"}
    assert all(isinstance(r["prediction"], str) and r["references"] for r in rows)
    csv_lines = (trained / "predictions.csv").read_text().splitlines()
    assert csv_lines[0] == "id,task,prediction" and len(csv_lines) == len(rows) + 1


def test_checkpoint_holds_only_trainable_tensors_and_evaluates(trained, tmp_path):
    import torch

    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("model.encoder.") for k in ckpt["state_dict"])
    assert any(k.startswith("model.connector.") for k in ckpt["state_dict"])
    assert ckpt["sota_vocabulary"] and ckpt["sota_config"]["llm"]["layers"] == 2
    # the checkpoint records what it was trained with: the encoder context and the answer-token rate
    assert ckpt["sota_audio"]["context_s"] == 5.0 and ckpt["sota_audio"]["tokens_per_s"] > 0
    assert ckpt["sota_audio"]["bucket_s"] == 0.5
    # evaluated with another encoder context and bucket asked for, the trained 5 s context and 0.5 s buckets
    # are used, and results.json says so
    run(tmp_path, "task=eval", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "encoder.context_s=8.0",
        "encoder.bucket_s=null")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok" and res["timing"]["train_s"] is None
    assert res["data"]["context_s"] == 5.0 and "trained context 5.0" in res["data"]["notes"][0]
    assert res["data"]["bucket_s"] == 0.5 and "checkpoint's 0.5" in res["data"]["notes"][1]
    original = json.loads((trained / "results.json").read_text())
    assert res["metrics"]["asr/wer"] == pytest.approx(original["metrics"]["asr/wer"])


def test_finished_run_is_never_overwritten(trained):
    before = (trained / "results.json").read_bytes()
    proc = run(trained, check=False)
    assert proc.returncode != 0 and "refusing to overwrite" in proc.stderr
    assert (trained / "results.json").read_bytes() == before


def test_crash_leaves_failed_results(tmp_path):
    # A learning rate this large turns the loss into NaN within the smoke steps.
    proc = run(tmp_path, "optimizer.lr=1e30", "scheduler.num_warmup_steps=0", check=False)
    assert proc.returncode != 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "loss" in res["error"]


@pytest.mark.slow  # 20-30 s each: the default tier stays under 8 minutes on 2 cores
def test_salmonn_manifests_with_a_corrupt_file_skip_and_count(tmp_path):
    """data=salmonn reads annotation files; with on_bad_file=skip a corrupt clip is skipped and counted."""
    import numpy as np
    import soundfile as sf

    from sota.data import tts

    rows = []
    words = ["a red dog runs", "the cat sleeps", "a big bird sings", "two cats run"]
    for i, text in enumerate(words * 2):
        sf.write(tmp_path / f"{i}.wav", tts.synthesize(text), 22050 if i % 2 else 16000)  # resampled on load
        rows.append({"path": f"{i}.wav", "text": text, "task": "asr"})
    (tmp_path / "8.wav").write_bytes(b"RIFF garbage")
    rows.append({"path": "8.wav", "text": "broken", "task": "asr"})
    (tmp_path / "m.json").write_text(json.dumps({"annotation": rows}))
    out = tmp_path / "run"
    args = ["data=salmonn", f"data.source.train={tmp_path / 'm.json'}", f"data.source.val={tmp_path / 'm.json'}",
            f"data.source.test={tmp_path / 'm.json'}", "data.tasks=[asr]", "data.max_clip_s=5.0"]
    failed = run(out, *args, check=False, base=QUICK)
    assert failed.returncode != 0 and "8.wav" in failed.stderr and "on_bad_file=skip" in failed.stderr
    run(tmp_path / "run2", *args, "data.on_bad_file=skip", base=QUICK)
    res = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert res["status"] == "ok" and res["data"]["skipped"] >= 1 and res["data"]["test"] == 8
    assert res["metrics"]["aac/cider_d"] is None and res["metrics"]["asr/wer"] is not None
    assert np.isfinite(res["metrics"]["asr/wer"])


def test_training_resumes_from_last_checkpoint(trained, tmp_path):
    run(tmp_path, "trainer.max_steps=6", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok" and res["timing"]["train_steps"] == 6  # 4 restored + 2 new


@pytest.mark.slow  # 20-30 s each: the default tier stays under 8 minutes on 2 cores
def test_compressed_run_records_compression_and_evaluates_identically(tmp_path):
    """prune -> LoRA -> train -> merge -> int8: the checkpoint rebuilds the same model for task=eval."""
    combo = ["prune=depth", "prune.ratio=0.5", "lora=lora", "quant=int8_weight"]
    run(tmp_path / "train", *combo)
    res = json.loads((tmp_path / "train" / "results.json").read_text())
    comp = res["compression"]
    assert comp["prune"]["llm"]["layers_after"] == 1 and comp["prune"]["llm"]["removed_layers"] == [1]
    assert comp["lora"]["rank"] == 16 and comp["lora"]["merge"]["merged"] == ["llm"]
    assert comp["quant"]["mode"] == "int8_weight"
    assert comp["quant"]["weight_bytes_after"] < comp["quant"]["weight_bytes_before"]
    run(tmp_path / "eval", *combo, "task=eval", f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}")
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["model"]["weight_bytes"] == res["model"]["weight_bytes"]
    preds = [json.loads(x)["prediction"] for x in (tmp_path / "train" / "predictions.jsonl").read_text().splitlines()]
    preds2 = [json.loads(x)["prediction"] for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert preds == preds2


@pytest.mark.slow  # two runs of run.py
def test_a_low_rank_encoder_trains_and_its_checkpoint_evaluates_identically(tmp_path):
    """prune=lowrank factorises the encoder from calibration audio; the factors are frozen, so the checkpoint
    must carry them for task=eval to rebuild the same model."""
    combo = ["prune=lowrank", "prune.ratio=0.5", "prune.calib_batches=1", "lora=lora", "lora.rank=4"]
    run(tmp_path / "train", *combo)
    res = json.loads((tmp_path / "train" / "results.json").read_text())
    enc = res["compression"]["prune"]["encoder"]
    assert res["compression"]["prune"]["method"] == "lowrank" and enc["ranks"] and enc["params_after"] < enc["params_before"]
    run(tmp_path / "eval", *combo, "task=eval", f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}")
    preds = [json.loads(x)["prediction"] for x in (tmp_path / "train" / "predictions.jsonl").read_text().splitlines()]
    preds2 = [json.loads(x)["prediction"] for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert preds == preds2


@pytest.mark.slow  # four runs of run.py, about a minute
def test_init_from_compresses_a_trained_model_before_and_after_recovery(trained, tmp_path):
    """init_from: the trained model is the start; eval compresses it untrained, train recovers it, and a
    checkpoint of the recovery evaluates to the same predictions (the starting model is rebuilt first)."""
    start = trained / "checkpoints" / "last.ckpt"
    run(tmp_path / "before", "task=eval", f"init_from={start}", "prune=depth", "prune.ratio=0.5")
    before = json.loads((tmp_path / "before" / "results.json").read_text())
    assert before["status"] == "ok" and before["timing"]["train_s"] is None
    assert before["compression"]["init_from"]["path"] == str(start)
    assert before["compression"]["init_from"]["tensors"] > 0
    assert before["compression"]["prune"]["llm"]["layers_after"] == 1

    # Nothing compressed and nothing trained: the same model as the checkpoint, the same predictions.
    run(tmp_path / "same", "task=eval", f"init_from={start}")
    same = [json.loads(x)["prediction"] for x in (tmp_path / "same" / "predictions.jsonl").read_text().splitlines()]
    orig = [json.loads(x)["prediction"] for x in (trained / "predictions.jsonl").read_text().splitlines()]
    assert same == orig

    combo = ["prune=depth", "prune.ratio=0.5", "lora=lora", "lora.rank=4"]
    run(tmp_path / "after", f"init_from={start}", *combo)
    after = json.loads((tmp_path / "after" / "results.json").read_text())
    assert after["status"] == "ok" and after["timing"]["train_steps"] == 4
    assert after["compression"]["lora"]["rank"] == 4
    run(tmp_path / "again", *combo, "task=eval", f"ckpt_path={tmp_path / 'after' / 'checkpoints' / 'last.ckpt'}")
    preds = [json.loads(x)["prediction"] for x in (tmp_path / "after" / "predictions.jsonl").read_text().splitlines()]
    preds2 = [json.loads(x)["prediction"] for x in (tmp_path / "again" / "predictions.jsonl").read_text().splitlines()]
    assert preds == preds2


@pytest.mark.slow  # 20-30 s each: the default tier stays under 8 minutes on 2 cores
def test_eval_on_an_unlabelled_test_set_writes_predictions_only(trained, tmp_path):
    """The seed's --skip_scoring use: a test manifest without transcripts is transcribed, not scored."""
    import soundfile as sf

    from sota.data import tts

    labelled, unlabelled = [], []
    for i, text in enumerate(["a red dog runs", "the cat sleeps", "a big bird sings"]):
        sf.write(tmp_path / f"{i}.wav", tts.synthesize(text), 22050)
        labelled.append({"path": f"{i}.wav", "text": text, "task": "asr"})
        unlabelled.append({"id": f"clip{i}", "path": f"{i}.wav", "task": "asr"})
    (tmp_path / "labelled.json").write_text(json.dumps({"annotation": labelled}))
    (tmp_path / "test.json").write_text(json.dumps({"annotation": unlabelled}))
    args = ["data=salmonn", f"data.source.train={tmp_path / 'labelled.json'}",
            f"data.source.val={tmp_path / 'labelled.json'}", f"data.source.test={tmp_path / 'test.json'}",
            "data.tasks=[asr]", "data.max_clip_s=5.0", "task=eval", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"]
    run(tmp_path / "run", *args, base=QUICK)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "ok" and res["metrics"]["asr/wer"] is None
    assert res["metrics"]["unscored"] == 3 and "not scored" in res["metrics"]["note"]
    lines = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,task,prediction" and [x.split(",")[0] for x in lines[1:]] == ["clip0", "clip1", "clip2"]
    # a training split without transcripts is still refused, naming the row
    (tmp_path / "bad.json").write_text(json.dumps({"annotation": unlabelled}))
    bad = run(tmp_path / "bad", *[a.replace("labelled.json", "bad.json") for a in args[:3]], *args[3:-2],
              check=False, base=QUICK)
    assert bad.returncode != 0 and "empty transcript" in bad.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("quant", ["bf16", "int8_weight", "int4_weight"])
def test_train_compress_evaluate_and_measure_on_cuda(tmp_path, quant):
    """Lightning's teardown leaves the model on the CPU after fit and after test: compression, evaluation and
    measurement must still happen on the GPU."""
    run(tmp_path, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "backend=static",
        f"quant={quant}", "quant.group_size=32", "data.eval_batch_size=4", *RANDOM_ENCODER)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok", res["error"]
    assert not res["efficiency"]["device"].startswith("cpu") and res["efficiency"]["tpot_ms"] > 0  # the GPU's name


@pytest.mark.slow   # the default tier stays under 8 minutes on 2 cores; CI runs both
def test_static_decoding_after_the_bf16_cast_agrees_with_eager(trained, tmp_path):
    """Validation decodes the float32 model; the bf16 cast after training must get fresh caches and graphs
    (same eval batch size for validation and test, so the decoder would otherwise be reused). compare_with
    records where the two backends agree."""
    run(tmp_path, "backend=static", "quant=bf16", "generate.compare_with=eager", "data.eval_batch_size=4",
        "measure=none")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok" and res["metrics"]["asr/wer"] is not None
    a = res["agreement"]
    assert (a["backend"], a["reference"], a["answers"]) == ("static", "eager", 4)
    assert a["identical"] + a["differ"] == 4 and a["decisive"] == 0, a["divergences"]
    assert "agreement" not in json.loads((trained / "results.json").read_text())  # only when asked for


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["static", "compiled"])
def test_graphed_backends_agree_with_eager_on_the_synthetic_test_split_in_bf16(tmp_path, backend):
    """Trained on the GPU, cast to bf16, the whole synthetic test split decoded by both backends: every answer
    equals eager's or departs from it at a near-tie (sota.models.agreement)."""
    run(tmp_path, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "trainer.max_steps=300",
        "trainer.limit_test_batches=1.0", "quant=bf16", f"backend={backend}", "generate.compare_with=eager",
        "measure=none", *RANDOM_ENCODER)
    res = json.loads((tmp_path / "results.json").read_text())
    a = res["agreement"]
    assert a["answers"] == res["data"]["test"] > 0
    assert a["decisive"] == 0, a["divergences"][:5]


def _losses(run_dir):
    import csv

    rows = list(csv.DictReader(open(next(run_dir.glob("csv/version_*/metrics.csv")))))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.slow
@pytest.mark.skipif(not (__import__("shutil").which("cc") or __import__("shutil").which("gcc")),
                    reason="Inductor on a CPU needs a C compiler")
def test_compiled_training_gives_the_same_losses(tmp_path):
    run(tmp_path / "plain", "logger=csv", "measure=none")
    plain = _losses(tmp_path / "plain")
    for scope in ("llm", "layers"):
        run(tmp_path / scope, "logger=csv", "measure=none", f"compile={scope}")
        compiled = _losses(tmp_path / scope)
        assert len(plain) == len(compiled) == 4
        assert compiled == pytest.approx(plain, rel=1e-4), scope
