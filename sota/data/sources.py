"""Data sources: callables that return `{split: manifest path}` for the datamodule. Real corpora (LibriSpeech,
Clotho, AudioCaps) are converted once into SALMONN manifests under `root/<name>-<hash>/`, and `mix` merges
several sources into one set of manifests."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sota.data import corpora
from sota.data.audio import BadAudioFile
from sota.data.corpora import Row
from sota.data.manifest import BadSample, annotation_rows, on_bad_file_problem
from sota.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Bump when the rows written for the same inputs change, so that old conversions are not reused.
FORMAT_VERSION = 1
_DONE = "source.json"

PathLike = str | os.PathLike


def manifest_files(root: str | Path, train: str | None = None, val: str | None = None,
                   test: str | None = None, config_key: str = "data.source") -> dict[str, Path]:
    """SALMONN-style annotation files given per split (absolute, or relative to the working directory)."""
    splits = {"train": train, "val": val, "test": test}
    out = {}
    for split, path in splits.items():
        if path is None:
            continue
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{config_key}.{split}: manifest not found: {p}")
        out[split] = p
    if not out:
        raise ValueError(f"{config_key}: give at least one of train, val, test (SALMONN annotation JSON files)")
    return out


# -- real corpora ------------------------------------------------------------------------------------------------
def librispeech(root: str | Path, train: PathLike | Sequence[PathLike] | None = None,
                val: PathLike | Sequence[PathLike] | None = None, test: PathLike | Sequence[PathLike] | None = None,
                dir: PathLike | None = None, on_bad_file: str = "error", lowercase: bool = True,
                audio_ext: str = "flac", config_key: str = "data.source") -> dict[str, Path]:
    """LibriSpeech split folders (e.g. train-clean-100; a list of them is merged into one split), absolute or
    relative to `dir`, as ASR manifests with lowercased transcripts."""
    _check_on_bad(on_bad_file, config_key)
    base = _base_dir(dir, config_key)
    folders = {split: [_existing(p, base, f"{config_key}.{split}", "LibriSpeech split folder", folder=True)
                       for p in _as_list(value)]
               for split, value in {"train": train, "val": val, "test": test}.items() if value is not None}
    if not folders:
        raise ValueError(f"{config_key}: give at least one of train, val, test (LibriSpeech split folders)")
    inputs = {"splits": {s: [str(p) for p in ps] for s, ps in folders.items()}, "lowercase": lowercase,
              "audio_ext": audio_ext}

    def build() -> dict[str, list[Row]]:
        return {s: [r for p in ps for r in corpora.librispeech_rows(p, lowercase, audio_ext)]
                for s, ps in folders.items()}

    return _convert(root, "librispeech", inputs, build, on_bad_file, config_key)


def clotho(root: str | Path, dir: PathLike | None = None, train: str | None = "development",
           val: str | None = "validation", test: str | None = "evaluation",
           captions: str = "clotho_captions_{split}.csv", audio: str = "{split}", on_bad_file: str = "error",
           lowercase: bool = True, strip_punctuation: bool = True, config_key: str = "data.source") -> dict[str, Path]:
    """Clotho: per split a captions CSV (`file_name, caption_1..caption_5`) and an audio folder, found by the
    `captions` and `audio` patterns (`{split}` is the Clotho split name given for train/val/test), relative
    to `dir` unless absolute. AAC rows with the five captions as references."""
    return _captions_corpus("clotho", root, dir, {"train": train, "val": val, "test": test}, captions, audio,
                            on_bad_file, config_key, lambda csv, folder: corpora.clotho_rows(
                                csv, folder, lowercase, strip_punctuation),
                            {"lowercase": lowercase, "strip_punctuation": strip_punctuation})


def audiocaps(root: str | Path, dir: PathLike | None = None, train: str | None = "train", val: str | None = "val",
              test: str | None = "test", captions: str = "{split}.csv", audio: str = "{split}",
              audio_name: str = "{youtube_id}.wav", on_bad_file: str = "error", lowercase: bool = True,
              strip_punctuation: bool = True, config_key: str = "data.source") -> dict[str, Path]:
    """AudioCaps: per split a CSV with one caption per line (`audiocap_id, youtube_id, start_time, caption`)
    and an audio folder whose files are named by `audio_name` (fields `{youtube_id}`, `{audiocap_id}`,
    `{start_time}`). AAC rows, one per clip, with all of the clip's captions as references."""
    corpora.check_pattern(audio_name, corpora.AUDIOCAPS_FIELDS, f"{config_key}.audio_name")
    return _captions_corpus("audiocaps", root, dir, {"train": train, "val": val, "test": test}, captions, audio,
                            on_bad_file, config_key, lambda csv, folder: corpora.audiocaps_rows(
                                csv, folder, audio_name, lowercase, strip_punctuation),
                            {"audio_name": audio_name, "lowercase": lowercase,
                             "strip_punctuation": strip_punctuation})


def _captions_corpus(name: str, root: str | Path, dir: PathLike | None, splits: dict[str, str | None],
                     captions: str, audio: str, on_bad_file: str, config_key: str,
                     parse: Callable[[Path, Path], list[Row]], options: dict[str, Any]) -> dict[str, Path]:
    _check_on_bad(on_bad_file, config_key)
    for key, pattern in (("captions", captions), ("audio", audio)):
        corpora.check_pattern(pattern, ("split",), f"{config_key}.{key}")
    base = _base_dir(dir, config_key)
    files: dict[str, tuple[Path, Path]] = {}
    for split, value in splits.items():
        if value is None:
            continue
        key = f"{config_key}.{split}"
        csv = _existing(captions.format(split=value), base, key, f"{name} captions file ({config_key}.captions)")
        folder = _existing(audio.format(split=value), base, key, f"{name} audio folder ({config_key}.audio)",
                           folder=True)
        files[split] = (csv, folder)
    if not files:
        raise ValueError(f"{config_key}: give at least one of train, val, test ({name} split names)")
    # The CSV's size and mtime are part of the key, so that an edited captions file is converted again.
    inputs = {"splits": {s: {"captions": str(c), "audio": str(a), "stat": [c.stat().st_size, c.stat().st_mtime_ns]}
                         for s, (c, a) in files.items()}, **options}
    return _convert(root, name, inputs, lambda: {s: parse(c, a) for s, (c, a) in files.items()}, on_bad_file,
                    config_key)


# -- mixing ------------------------------------------------------------------------------------------------------
def mix(root: str | Path, sources: Mapping[str, Callable[..., Mapping[str, PathLike]] | None],
        config_key: str = "data.source") -> dict[str, Path]:
    """Several sources merged per split into one set of manifests; each row gets `source` (the source's name) and
    an id prefixed by it, and relative audio paths are made absolute. Sampling weights are the datamodule's
    (`data.weights`): here every split is a plain concatenation."""
    active = {str(n): s for n, s in sources.items() if s is not None}
    if not active:
        raise ValueError(f"{config_key}.sources: give at least one source")
    manifests: dict[str, dict[str, Path]] = {}
    for name, source in active.items():
        key = f"{config_key}.sources.{name}"
        kwargs: dict[str, Any] = {"root": root}
        if _accepts(source, "config_key"):
            kwargs["config_key"] = key
        manifests[name] = {s: Path(p) for s, p in source(**kwargs).items()}
    # Content hashes rather than paths: a source such as manifest_files may point at a file edited in place.
    inputs = {n: {s: hashlib.sha1(p.read_bytes()).hexdigest() for s, p in sorted(m.items())}
              for n, m in manifests.items()}

    def build() -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {}
        for split in SPLITS:
            rows = [row for name, m in manifests.items() if split in m for row in _tagged_rows(m[split], name)]
            if any(split in m for m in manifests.values()):
                out[split] = rows
        return out

    # The sources already checked their audio (each per its own on_bad_file), so nothing is missing here that
    # they did not accept.
    return _convert(root, "mix", inputs, build, "skip", config_key, check_audio=False)


def _tagged_rows(manifest: Path, name: str) -> list[Row]:
    try:
        rows = annotation_rows(manifest)  # one reader: encoding and layout errors name the file alike
    except BadSample as err:
        raise ValueError(f"{err} (source {name!r})") from None
    out = []
    for i, row in enumerate(rows):
        row = dict(row)
        # read_manifest's fallback id, made explicit so that it survives the merge unchanged apart from the prefix.
        own_id = row.get("id", f"{row.get('task')}-{i}")
        row["id"] = f"{name}/{own_id}"
        if row.get("path") and not Path(row["path"]).is_absolute():
            row["path"] = str(manifest.parent / row["path"])
        row["source"] = name
        out.append(row)
    return out


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# -- shared ------------------------------------------------------------------------------------------------------
def _convert(root: str | Path, name: str, inputs: dict[str, Any], build: Callable[[], dict[str, list[Row]]],
             on_bad_file: str, config_key: str, check_audio: bool = True) -> dict[str, Path]:
    """Manifests of `build()` in `root/<name>-<hash of inputs>/`, reused when a complete conversion is there.

    Rows whose audio file is missing are an error (naming the file) with on_bad_file=error; with skip they are
    kept, so that the datamodule skips them and counts them in results.json like any other bad file.
    """
    payload = json.dumps({"format": FORMAT_VERSION, "name": name, "inputs": inputs}, sort_keys=True, default=str)
    folder = Path(root) / f"{name}-{hashlib.sha1(payload.encode()).hexdigest()[:10]}"
    done = folder / _DONE
    if done.is_file():
        record = json.loads(done.read_text())
        manifests = {s: folder / f"{s}.json" for s in record["splits"]}
        if all(p.is_file() for p in manifests.values()):
            log.info("%s: reusing the manifests in %s", name, folder)
            missing = {s: [p for p in paths if not Path(p).is_file()] for s, paths in record["missing"].items()}
            _report_missing(missing, record["counts"], on_bad_file, config_key, name)
            return manifests

    rows = build()
    missing = {s: corpora.missing_audio(r) if check_audio else [] for s, r in rows.items()}
    counts = {s: len(r) for s, r in rows.items()}
    _report_missing(missing, counts, on_bad_file, config_key, name)
    for split, split_rows in rows.items():
        atomic_write_text(folder / f"{split}.json", json.dumps({"annotation": split_rows}, indent=1))
    # Written last: its presence marks the conversion complete.
    atomic_write_json(done, {"name": name, "format": FORMAT_VERSION, "inputs": inputs, "splits": list(rows),
                             "counts": counts, "missing": missing})
    log.info("%s: wrote %s to %s", name, ", ".join(f"{s} ({n} rows)" for s, n in counts.items()), folder)
    return {s: folder / f"{s}.json" for s in rows}


def _report_missing(missing: dict[str, list[str]], counts: dict[str, int], on_bad_file: str, config_key: str,
                    name: str) -> None:
    for split, paths in missing.items():
        if not paths:
            continue
        what = f"{len(paths)} of the {counts.get(split, '?')} audio files listed for {split} are missing"
        if on_bad_file == "error":
            raise BadAudioFile(f"{config_key}.{split}: audio file not found: {paths[0]} ({what}; set "
                               "data.on_bad_file=skip to skip them)")
        log.warning("%s %s: %s (first: %s); data.on_bad_file=skip: they are skipped when the audio is loaded",
                    name, split, what, paths[0])


def _check_on_bad(on_bad_file: str, config_key: str) -> None:
    problem = on_bad_file_problem(on_bad_file, f"{config_key}.on_bad_file")
    if problem:
        raise ValueError(problem)


def _as_list(value: PathLike | Sequence[PathLike]) -> list[PathLike]:
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def _base_dir(dir: PathLike | None, config_key: str) -> Path | None:
    if dir is None:
        return None
    return _existing(dir, None, f"{config_key}.dir", "corpus folder", folder=True)


def _existing(value: PathLike, base: Path | None, key: str, what: str, folder: bool = False) -> Path:
    """`value` (relative to `base` when given) as an absolute path that exists; errors name `key`."""
    p = Path(value).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    p = p.resolve()
    if not (p.is_dir() if folder else p.is_file()):
        relative = base is None and not Path(value).expanduser().is_absolute() and not key.endswith(".dir")
        hint = "" if not relative else \
            f" (relative to the working directory: set {key.rsplit('.', 1)[0]}.dir or give an absolute path)"
        raise FileNotFoundError(f"{key}: {what} not found: {p}{hint}")
    return p
