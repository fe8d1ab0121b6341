"""Real-corpus sources on tiny fake corpora in each layout (LibriSpeech, Clotho, AudioCaps), mixing, weighted
training draws, and the data config options that point at them."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate
from torch.utils.data import WeightedRandomSampler

from sota.data import sources
from sota.data.audio import BadAudioFile
from sota.data.corpora import CorpusFormatError, normalize_text
from sota.data.datamodule import AudioDataModule, ClipDataset
from sota.data.manifest import Sample, read_manifest

CLOTHO_SPLITS = {"development": 3, "validation": 2, "evaluation": 2}


def tone(path: Path, sr: int = 16000, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def fake_librispeech(base: Path) -> Path:
    """train-clean-100: 2 speakers x 2 utterances (one at 22.05 kHz); dev-clean: 2; test-clean: 1."""
    layout = {"train-clean-100": {(19, 198): 2, (26, 495): 2}, "dev-clean": {(84, 121): 2},
              "test-clean": {(61, 70968): 1}}
    for split, chapters in layout.items():
        for (spk, ch), n in chapters.items():
            folder = base / split / str(spk) / str(ch)
            lines = []
            for i in range(n):
                utt = f"{spk}-{ch}-{i:04d}"
                tone(folder / f"{utt}.flac", sr=22050 if (spk, i) == (19, 1) else 16000)
                lines.append(f"{utt} HE SAID IT'S WORD {spk} {i}")
            (folder / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
    return base


def fake_clotho(base: Path) -> Path:
    for split, n in CLOTHO_SPLITS.items():
        rows = []
        for i in range(n):
            name = f"{split} clip {i}.wav"
            tone(base / split / name, sr=44100 if i == 0 else 16000)
            rows.append([name, *(f"A Dog barks, loudly {j}." for j in range(1, 6))])
        write_csv(base / f"clotho_captions_{split}.csv", ["file_name", *(f"caption_{j}" for j in range(1, 6))], rows)
    return base


def fake_audiocaps(base: Path) -> Path:
    """train: 3 clips with one caption each; val/test: 2 clips with 5 captions each (one row per caption)."""
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    cap_id = 100
    for split, (clips, per_clip) in {"train": (3, 1), "val": (2, 5), "test": (2, 5)}.items():
        rows = []
        for c in range(clips):
            yid = f"{split}Yt{c}"
            tone(base / split / f"{yid}.wav", sr=22050, seconds=0.4)
            for k in range(per_clip):
                cap_id += 1
                rows.append([str(cap_id), yid, "30", f"Rain Falls on a roof {c}-{k}!"])
        write_csv(base / f"{split}.csv", header, rows)
    return base


@pytest.fixture(scope="module")
def corpora_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("corpora")
    return {"librispeech": fake_librispeech(base / "LibriSpeech"), "clotho": fake_clotho(base / "clotho"),
            "audiocaps": fake_audiocaps(base / "audiocaps")}


def rows(manifest: Path) -> list[dict]:
    return json.loads(manifest.read_text())["annotation"]


def check_paths(manifest: Path) -> None:
    for row in rows(manifest):
        assert Path(row["path"]).is_absolute() and Path(row["path"]).is_file(), row["path"]


# -- LibriSpeech -------------------------------------------------------------------------------------------------
def test_librispeech_manifests_and_reuse(corpora_dir, tmp_path):
    ls = corpora_dir["librispeech"]
    m = sources.librispeech(tmp_path, dir=ls, train="train-clean-100", val="dev-clean", test=ls / "test-clean")
    assert {s: len(rows(p)) for s, p in m.items()} == {"train": 4, "val": 2, "test": 1}
    assert m["train"].parent.parent == tmp_path and m["train"].parent.name.startswith("librispeech-")
    first = rows(m["train"])[0]
    assert first == {"id": "19-198-0000", "path": str(ls / "train-clean-100/19/198/19-198-0000.flac"),
                     "text": "he said it's word 19 0", "task": "asr"}
    for p in m.values():
        check_paths(p)
    stamp = (m["train"].parent / "source.json").stat().st_mtime_ns
    assert sources.librispeech(tmp_path, dir=ls, train="train-clean-100", val="dev-clean",
                               test=ls / "test-clean") == m
    assert (m["train"].parent / "source.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    # A list of folders is one split; other inputs are another conversion.
    merged = sources.librispeech(tmp_path, train=[ls / "train-clean-100", ls / "dev-clean"])
    assert list(merged) == ["train"] and len(rows(merged["train"])) == 6
    assert merged["train"].parent != m["train"].parent


def test_librispeech_missing_audio_is_named_or_skipped(corpora_dir, tmp_path):
    ls = tmp_path / "LS"
    fake_librispeech(ls)
    gone = ls / "train-clean-100/26/495/26-495-0001.flac"
    gone.unlink()
    with pytest.raises(BadAudioFile, match=r"data.source.train: audio file not found: .*26-495-0001.flac") as err:
        sources.librispeech(tmp_path / "out", dir=ls, train="train-clean-100")
    assert "1 of the 4" in str(err.value) and "on_bad_file=skip" in str(err.value)
    assert not list((tmp_path / "out").glob("*/source.json"))  # nothing half-converted is left to be reused

    source = partial(sources.librispeech, dir=ls, train="train-clean-100", val="dev-clean", test=None,
                     on_bad_file="skip")
    dm = AudioDataModule(source=source, root=str(tmp_path / "out"), tasks=["asr"], on_bad_file="skip")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3 and len(dm.skipped) == 1 and str(gone) in dm.skipped[0]
    # The 22.05 kHz file went through load_audio's resampling: 0.5 s at 16 kHz.
    lengths = {s.id: len(w) for s, w in zip(dm.datasets["train"].samples, dm.datasets["train"].waves)}
    assert lengths["19-198-0001"] == 8000
    # A conversion made with skip is reused by a later run with error only while the file is still missing.
    with pytest.raises(BadAudioFile, match="26-495-0001.flac"):
        sources.librispeech(tmp_path / "out", dir=ls, train="train-clean-100", val="dev-clean")
    tone(gone)
    assert len(rows(sources.librispeech(tmp_path / "out", dir=ls, train="train-clean-100",
                                        val="dev-clean")["train"])) == 4


def test_missing_folders_and_files_name_the_key(corpora_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.source.train: LibriSpeech split folder not found: .*nope"):
        sources.librispeech(tmp_path, train=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"data.source.dir: corpus folder not found: .*absent"):
        sources.clotho(tmp_path, dir=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"data.source.test: .*captions file .*clotho_captions_eval.csv"):
        sources.clotho(tmp_path, dir=corpora_dir["clotho"], test="eval")
    with pytest.raises(FileNotFoundError, match=r"data.source.train: .*audio folder \(data.source.audio\).*nowhere"):
        sources.audiocaps(tmp_path, dir=corpora_dir["audiocaps"], audio="nowhere")
    with pytest.raises(ValueError, match="give at least one of train, val, test"):
        sources.librispeech(tmp_path)
    with pytest.raises(CorpusFormatError, match=r"no <speaker>/<chapter>/.*trans.txt"):
        sources.librispeech(tmp_path, train=corpora_dir["clotho"])
    with pytest.raises(ValueError, match="data.source.on_bad_file must be one of"):
        sources.librispeech(tmp_path, train=corpora_dir["librispeech"] / "dev-clean", on_bad_file="ignore")


# -- Clotho and AudioCaps ----------------------------------------------------------------------------------------
def test_clotho_five_references(corpora_dir, tmp_path):
    m = sources.clotho(tmp_path, dir=corpora_dir["clotho"])
    assert {s: len(rows(p)) for s, p in m.items()} == {"train": 3, "val": 2, "test": 2}
    row = rows(m["train"])[0]
    assert row["id"] == "development clip 0.wav" and row["task"] == "aac"
    assert row["references"] == [f"a dog barks loudly {j}" for j in range(1, 6)]
    assert row["text"] == row["references"][0]
    for p in m.values():
        check_paths(p)
    samples = read_manifest(m["val"])
    assert all(len(s.targets) == 5 for s in samples)


def test_csv_missing_column_names_column_and_file(tmp_path):
    write_csv(tmp_path / "c" / "clotho_captions_development.csv",
              ["file_name", "caption_1", "caption_2", "caption_4", "caption_5"], [["a.wav", "x", "y", "z", "w"]])
    (tmp_path / "c" / "development").mkdir()
    with pytest.raises(CorpusFormatError, match=r"clotho_captions_development.csv: missing column 'caption_3'"):
        sources.clotho(tmp_path, dir=tmp_path / "c", val=None, test=None)
    write_csv(tmp_path / "a" / "train.csv", ["audiocap_id", "start_time", "caption"], [["1", "0", "x"]])
    (tmp_path / "a" / "train").mkdir()
    with pytest.raises(CorpusFormatError, match=r"a/train.csv: missing column 'youtube_id'"):
        sources.audiocaps(tmp_path, dir=tmp_path / "a", val=None, test=None)


def test_audiocaps_groups_captions_per_clip(corpora_dir, tmp_path):
    m = sources.audiocaps(tmp_path, dir=corpora_dir["audiocaps"])
    train, val = rows(m["train"]), rows(m["val"])
    assert len(train) == 3 and all(len(r["references"]) == 1 for r in train)
    assert len(val) == 2 and all(len(r["references"]) == 5 for r in val)
    assert val[1]["id"] == "valYt1_30" and val[1]["references"][0] == "rain falls on a roof 1-0"
    assert len(val[1]["audiocap_ids"]) == 5
    for p in m.values():
        check_paths(p)


def test_audiocaps_audio_named_by_audiocap_id(tmp_path):
    write_csv(tmp_path / "val.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
              [["7", "abc", "10", "a cat"], ["8", "abc", "10", "a cat meows"], ["9", "xyz", "0", "wind"]])
    tone(tmp_path / "audio" / "Y8.wav")  # this download kept one caption row's id of the clip, not the first
    m = sources.audiocaps(tmp_path / "out", dir=tmp_path, train=None, test=None, audio="audio",
                          audio_name="Y{audiocap_id}.wav", on_bad_file="skip")
    clip, lost = rows(m["val"])
    assert clip["path"] == str(tmp_path / "audio" / "Y8.wav") and clip["references"] == ["a cat", "a cat meows"]
    assert lost["path"] == str(tmp_path / "audio" / "Y9.wav")  # missing: kept for the loader to skip and count
    with pytest.raises(BadAudioFile, match=r"data.source.val: audio file not found: .*Y9.wav"):
        sources.audiocaps(tmp_path / "out", dir=tmp_path, train=None, test=None, audio="audio",
                          audio_name="Y{audiocap_id}.wav")
    with pytest.raises(ValueError, match=r"data.source.audio_name: unknown field\(s\) \{ytid\}"):
        sources.audiocaps(tmp_path / "out", dir=tmp_path, audio_name="{ytid}.wav")


def test_normalize_text():
    assert normalize_text("  A Low-pitched  HUM, then a dog's bark - loud!  ", strip_punctuation=True) == \
        "a low-pitched hum then a dog's bark loud"
    assert normalize_text("IT'S  OK", lowercase=True) == "it's ok"


# -- mixing and weighted draws -----------------------------------------------------------------------------------
def fake_train_set(n_asr: int, n_aac: int, source_of: dict[str, str] | None = None) -> ClipDataset:
    samples = [Sample(id=f"{t}{i}", path=Path(f"/x/{t}{i}.wav"), task=t, text="w",
                      extra={"source": source_of[t]} if source_of else {})
               for t, n in (("asr", n_asr), ("aac", n_aac)) for i in range(n)]
    return ClipDataset(samples, [np.zeros(160, np.float32)] * len(samples), None)


@pytest.mark.parametrize("weights,source_of", [({"asr": 0.8, "aac": 0.2}, None),
                                               ({"ls": 0.8, "clotho": 0.2}, {"asr": "ls", "aac": "clotho"})])
def test_weighted_sampler_draws_requested_proportions(tmp_path, weights, source_of):
    dm = AudioDataModule(source=lambda root: {}, root=str(tmp_path), tasks=["asr", "aac"], weights=weights)
    # Four times as many AAC clips as ASR clips: without weights ASR would get only a fifth of the draws.
    dm.datasets["train"] = fake_train_set(400, 1600, source_of)
    sampler = dm.train_sampler()
    assert isinstance(sampler, WeightedRandomSampler) and sampler.num_samples == 2000 and sampler.replacement
    torch.manual_seed(0)
    tasks = [dm.datasets["train"].samples[i].task for i in sampler]
    assert len(tasks) == 2000 and abs(tasks.count("asr") / 2000 - 0.8) <= 0.05


def test_weight_errors(tmp_path):
    with pytest.raises(ValueError, match=r"data.weights.aac must be a number >= 0"):
        AudioDataModule(source=lambda root: {}, root=str(tmp_path), tasks=["asr"], weights={"asr": 1, "aac": -1})
    dm = AudioDataModule(source=lambda root: {}, root=str(tmp_path), tasks=["asr", "aac"], weights={"asr": 1.0})
    dm.datasets["train"] = fake_train_set(4, 4)
    with pytest.raises(ValueError, match="gives no weight to task aac"):
        dm.train_sampler()
    dm.weights = {"librispeech": 1.0}
    with pytest.raises(ValueError, match="name neither a task .* nor a source"):
        dm.train_sampler()
    assert AudioDataModule(source=lambda root: {}, root=str(tmp_path), tasks=["asr"]).train_sampler() is None


def test_mix_merges_sources_and_weights_the_train_loader(corpora_dir, tmp_path):
    parts = {"libri": partial(sources.librispeech, dir=corpora_dir["librispeech"], train="train-clean-100",
                              val="dev-clean", test=None),
             "clotho": partial(sources.clotho, dir=corpora_dir["clotho"])}
    m = sources.mix(tmp_path, parts)
    assert m["train"].parent.name.startswith("mix-")
    train = rows(m["train"])
    assert [r["source"] for r in train] == ["libri"] * 4 + ["clotho"] * 3
    assert train[0]["id"] == "libri/19-198-0000" and train[-1]["id"] == "clotho/development clip 2.wav"
    assert len(rows(m["val"])) == 2 + 2 and [r["source"] for r in rows(m["test"])] == ["clotho"] * 2
    for p in m.values():
        check_paths(p)
    assert sources.mix(tmp_path, parts) == m

    dm = AudioDataModule(source=partial(sources.mix, sources=parts), root=str(tmp_path), tasks=["asr", "aac"],
                         weights={"asr": 0.5, "aac": 0.5})
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler) and loader.sampler.num_samples == 7
    assert dm.samples("train")[0].extra["source"] == "libri"
    assert not isinstance(dm.val_dataloader().sampler, WeightedRandomSampler) and len(dm.datasets["val"]) == 4
    with pytest.raises(FileNotFoundError, match=r"data.source.sources.clotho.test: .*captions file"):
        sources.mix(tmp_path, {"clotho": partial(sources.clotho, dir=corpora_dir["clotho"], test="nope")})


# -- configs -----------------------------------------------------------------------------------------------------
def overrides(option: str, dirs: dict[str, Path]) -> list[str]:
    if option == "mix":
        return ["data=mix", f"data.source.sources.librispeech.dir={dirs['librispeech']}",
                f"data.source.sources.clotho.dir={dirs['clotho']}", "data.source.sources.librispeech.test=null"]
    return [f"data={option}", f"data.source.dir={dirs[option]}"]


@pytest.mark.parametrize("option,max_clip_s,splits,train", [
    ("librispeech", 30.0, {"train", "val", "test"}, 4), ("clotho", 30.0, {"train", "val", "test"}, 3),
    ("audiocaps", 10.0, {"train", "val", "test"}, 3), ("mix", 30.0, {"train", "val", "test"}, 7)])
def test_data_options_compose_and_instantiate(compose_cfg, corpora_dir, option, max_clip_s, splits, train):
    cfg = compose_cfg(*overrides(option, corpora_dir), "data.on_bad_file=skip")
    assert cfg.data.max_clip_s == max_clip_s and cfg.encoder.context_s == max_clip_s
    dm = instantiate(cfg.data)
    assert isinstance(dm, AudioDataModule) and set(dm.manifests()) - {"real"} == splits
    assert len(dm.samples("train")) == train and dm.on_bad_file == "skip"
    assert {s.task for s in dm.samples("train")} == set(cfg.data.tasks)
    if option == "mix":
        assert dm.weights == {"asr": 0.5, "aac": 0.5}
        assert {s.extra["source"] for s in dm.samples("val")} == {"librispeech", "clotho"}


def test_a_train_split_smaller_than_one_batch_still_trains_and_says_so(tmp_path, caplog):
    dm = AudioDataModule(source=lambda root: {}, root=str(tmp_path), tasks=["asr", "aac"], batch_size=16)
    dm.datasets["train"], dm.datasets["val"] = fake_train_set(4, 4), fake_train_set(1, 1)
    with caplog.at_level("WARNING"):
        assert len(dm.train_dataloader()) == 1  # not 0: a dropped partial batch would leave no step at all
    assert "train split has 8 samples, fewer than data.batch_size=16" in caplog.text
    dm.batch_size = 3
    assert len(dm.train_dataloader()) == 2  # 8 samples in batches of 3: the partial one is dropped
