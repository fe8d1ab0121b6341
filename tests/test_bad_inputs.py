"""Bad inputs are refused before any heavy work, with a message that names the config key or the file and what
would be valid: a non-integer seed, manifests that are not UTF-8 or carry wrong types or unknown tasks,
checkpoints that are empty or foreign, and misspelt keys of the config groups."""

import json
import logging

import pytest
import torch

from conftest import CONF
from sota.checkpoint import read as read_checkpoint
from sota.config import group_keys, validate
from sota.data.manifest import BadSample, read_manifest
from sota.errors import ConfigError


def write(path, rows):
    path.write_text(json.dumps({"annotation": rows}))
    return path


# -- config -------------------------------------------------------------------------------------------------

def test_seed_must_be_an_integer(compose_cfg):
    # Lightning would raise a bare ValueError only once the run has started.
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 4294967295\], got 'abc'"):
        validate(compose_cfg("seed=abc"))


@pytest.mark.parametrize("override,message", [
    ("+lora.rnak=4", r"lora.rnak is not a key of the lora group \(did you mean lora.rank\?\); valid: alpha, "),
    ("+quant.grup_size=64", r"quant.grup_size is not a key of the quant group \(did you mean quant.group_size\?\)"),
    ("+connector.window=1", r"connector.window is not a key .* \(did you mean connector.window_s\?\)"),
    ("+generate.num_beam=2", r"generate.num_beam is not a key .* \(did you mean generate.num_beams\?\)"),
    ("+measure.iteration=3", r"measure.iteration is not a key .* \(did you mean measure.iterations\?\)"),
    ("+corpus.asr_trian=5", r"corpus.asr_trian is not a key .* \(did you mean corpus.asr_train\?\)"),
    ("+data.bach_size=3", r"data.bach_size is not a key .* \(did you mean data.batch_size\?\)"),
], ids=lambda v: v.lstrip("+").split(".")[0] if v.startswith("+") else "")
def test_unknown_group_key_is_refused_with_the_nearest_valid_key(compose_cfg, override, message):
    # A misspelt key would otherwise be carried along unread while the default applies.
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(override))


def test_generate_accepts_arguments_of_transformers_generate(compose_cfg):
    # Extra generate keys are passed to transformers' generate (tests/test_ddp.py sets min_new_tokens).
    validate(compose_cfg("++generate.min_new_tokens=4"))


def test_group_keys_come_from_option_files_and_packaged_files():
    keys = group_keys(CONF)
    assert {"rank", "alpha", "_target_", "_partial_"} <= keys["lora"]
    assert "backend" in keys["generate"]  # conf/backend/*.yaml are `# @package generate`
    assert "defaults" not in keys["quant"]


# -- manifests ----------------------------------------------------------------------------------------------

def test_non_utf8_manifest_names_the_file(tmp_path):
    # A Latin-1 transcript used to surface as a UnicodeDecodeError without the file's name.
    m = tmp_path / "latin1.json"
    m.write_bytes(json.dumps({"annotation": [{"path": "a.wav", "text": "café", "task": "asr"}]},
                             ensure_ascii=False).encode("latin-1"))
    with pytest.raises(BadSample, match=r"latin1.json: not UTF-8 JSON"):
        read_manifest(m)


def test_non_string_text_names_the_manifest_row_and_key(tmp_path):
    # A number where a transcript belongs used to fail later as AttributeError: 'int' has no 'strip'.
    m = write(tmp_path / "m.json", [{"path": "a.wav", "text": "ok", "task": "asr"},
                                    {"id": "u2", "path": "b.wav", "text": 12345, "task": "asr"}])
    with pytest.raises(BadSample, match=r"m.json: row 1 \(id 'u2'\): 'text' must be a string, got int 12345"):
        read_manifest(m)


def test_unknown_task_rows_are_counted_logged_and_listed(tmp_path, caplog):
    # Rows of another task are skipped whatever data.on_bad_file says, but never silently.
    m = write(tmp_path / "m.json", [{"path": "a.wav", "text": "ok", "task": "asr"},
                                    {"path": "b.wav", "text": "x", "task": "ars"},
                                    {"path": "c.wav", "text": "y", "task": "ars"}])
    skipped: list[str] = []
    with caplog.at_level(logging.WARNING, logger="sota.data.manifest"):
        rows = read_manifest(m, skipped=skipped)
    assert [r.path.name for r in rows] == ["a.wav"]
    assert skipped == [f"{m}#1: task 'ars' is not one of asr, aac", f"{m}#2: task 'ars' is not one of asr, aac"]
    assert f"{m}: skipping 2 row(s) with task 'ars' (did you mean 'asr'?): not one of asr, aac" in caplog.text


# -- checkpoints --------------------------------------------------------------------------------------------

def test_empty_checkpoint_is_named_as_empty(tmp_path):
    # torch.load says only `EOFError: ` for a 0-byte file (a save that never finished).
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint .*last.ckpt: empty file \(0 bytes\)"):
        read_checkpoint(str(ckpt))


def test_text_file_is_not_a_torch_checkpoint(tmp_path):
    ckpt = tmp_path / "notes.ckpt"
    ckpt.write_text("hello world\n")
    with pytest.raises(ValueError, match=r"notes.ckpt \(12 bytes\): a text file, not a torch/zip checkpoint"):
        read_checkpoint(str(ckpt))


def test_torch_file_without_state_dict_is_named(tmp_path):
    # A plain torch.save of tensors used to fail later as KeyError: 'state_dict'.
    ckpt = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, ckpt)
    with pytest.raises(ValueError, match=r"weights.pt: a torch file without Lightning's state_dict "
                                         r"\(it holds top-level keys 'weight'\)"):
        read_checkpoint(str(ckpt))


class Opaque:
    """Not a tensor or a plain container: torch.load(weights_only=True) refuses to unpickle it."""


def test_pickled_object_is_refused_by_weights_only(tmp_path):
    ckpt = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "extra": Opaque()}, ckpt)
    with pytest.raises(ValueError, match=r"pickled.ckpt .*refused by torch.load\(weights_only=True\) "
                                         r"\(Unsupported global: .*Opaque"):
        read_checkpoint(str(ckpt))


# -- audio --------------------------------------------------------------------------------------------------

def _tone(seconds=0.5):
    import numpy as np

    return (0.1 * np.sin(np.arange(int(16000 * seconds)) * 0.05)).astype("float32")


def test_audio_that_is_not_finite_truncated_or_silent_is_a_bad_file(tmp_path):
    import numpy as np
    import soundfile as sf

    from sota.data.audio import BadAudioFile, load_audio

    sf.write(tmp_path / "ok.wav", _tone(), 16000)
    assert load_audio(tmp_path / "ok.wav").size == 8000
    nan = _tone()
    nan[100:110] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    with pytest.raises(BadAudioFile, match="10 NaN/Inf samples.*nan.wav"):
        load_audio(tmp_path / "nan.wav")
    # An interrupted copy: the header still declares the whole clip.
    whole = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadAudioFile, match="truncated.*cut.wav holds .* of the 16000 bytes"):
        load_audio(tmp_path / "cut.wav")
    sf.write(tmp_path / "zero.wav", np.zeros(8000, dtype="float32"), 16000)
    with pytest.raises(BadAudioFile, match="silent.*zero.wav"):
        load_audio(tmp_path / "zero.wav")


def test_clips_read_by_threads_come_back_in_order_with_each_bad_file_in_its_place(tmp_path):
    import numpy as np
    import soundfile as sf

    from sota.data.audio import BadAudioFile, read_clips

    paths = []
    for i in range(12):
        sf.write(tmp_path / f"{i}.wav", _tone(0.2 + 0.01 * i), 16000)
        paths.append(tmp_path / f"{i}.wav")
    sf.write(tmp_path / "zero.wav", np.zeros(800, dtype="float32"), 16000)
    paths[3], paths[7] = tmp_path / "missing.wav", tmp_path / "zero.wav"
    clips = read_clips(paths, workers=4)
    assert [type(c) for c in clips] == [type(c) for c in read_clips(paths, workers=1)]
    assert isinstance(clips[3], BadAudioFile) and "missing.wav" in str(clips[3])
    assert isinstance(clips[7], BadAudioFile) and "zero.wav" in str(clips[7])
    for i, clip in enumerate(clips):
        if i not in (3, 7):
            assert clip.size == int(16000 * (0.2 + 0.01 * i))


def test_a_pruning_method_with_a_ratio_of_zero_is_refused(compose_cfg):
    with pytest.raises(ConfigError, match="prune.ratio=0 with prune.method=width prunes nothing"):
        validate(compose_cfg("prune=width", "prune.ratio=0"))


def test_a_bad_test_file_stops_the_run_before_training(tmp_path):
    """Every split's audio is read before the first step: a broken test clip is not found after training."""
    import subprocess
    import sys

    import soundfile as sf

    from conftest import ROOT

    good = []
    for i in range(4):
        sf.write(tmp_path / f"{i}.wav", _tone(0.5 + 0.1 * i), 16000)
        good.append({"path": f"{i}.wav", "text": "a red dog", "task": "asr"})
    (tmp_path / "bad.wav").write_bytes(b"RIFF garbage")
    write(tmp_path / "train.json", good)
    write(tmp_path / "test.json", [*good, {"path": "bad.wav", "text": "broken", "task": "asr"}])
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "run.py", "trainer=smoke", "logger=csv", "measure=none", "data.real_test=null",
         "data=salmonn", f"data.source.train={tmp_path / 'train.json'}", f"data.source.val={tmp_path / 'train.json'}",
         f"data.source.test={tmp_path / 'test.json'}", "data.tasks=[asr]", "data.batch_size=2",
         f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "bad.wav" in proc.stderr and "split test" in proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and res["timing"]["train_s"] is None
    assert not (out / "checkpoints").exists()
