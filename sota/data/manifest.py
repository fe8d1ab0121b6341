"""SALMONN-style annotation files (`{"annotation": [{"path", "text", "task", ...}]}`) read into samples;
AAC rows may carry several reference captions."""

from __future__ import annotations

import difflib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

OnBadFile = Literal["error", "skip"]
ON_BAD_FILE = ("error", "skip")


def on_bad_file_problem(value: object, key: str = "data.on_bad_file") -> str | None:
    """The one check of an `on_bad_file` setting: None when valid, else the message naming `key`."""
    return None if value in ON_BAD_FILE else f"{key} must be one of {', '.join(ON_BAD_FILE)}; got {value!r}"
TASKS = ("asr", "aac")  # the tasks a model is trained and scored on (data.tasks is a subset)


class BadSample(ValueError):
    """A manifest row that cannot be used; the message names the manifest and the row."""


@dataclass(frozen=True)
class Sample:
    id: str
    path: Path
    task: str
    text: str
    references: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def targets(self) -> tuple[str, ...]:
        """References to score against: the captions for AAC, the transcript for ASR; none when unlabelled."""
        return self.references or ((self.text,) if self.text else ())


def read_manifest(path: str | Path, on_bad: OnBadFile = "error", tasks: list[str] | None = None,
                  skipped: list[str] | None = None, unlabelled: bool = False) -> list[Sample]:
    """Samples of one annotation file; relative audio paths are resolved against the file's folder (or its parent).

    Rows with no path, or with a field of the wrong type, are errors, or are skipped (and listed in `skipped`)
    with `on_bad="skip"`; so are rows with an empty transcript, unless `unlabelled` (a test set to transcribe,
    not to score: its samples have empty text and no references). Rows whose task is not one of TASKS (e.g.
    another SALMONN task) are always skipped: a warning per task names the manifest, the task and the number
    of rows, and each row is listed in `skipped`. Rows whose task is not in `tasks` are left out.
    """
    path = Path(path)
    problem = on_bad_file_problem(on_bad)
    if problem:
        raise ValueError(problem)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    rows = annotation_rows(path)
    samples = []
    unknown: Counter[str] = Counter()
    for i, row in enumerate(rows):
        task = row.get("task") if isinstance(row, dict) else None
        if isinstance(task, str) and task and task not in TASKS:
            # Another task's row (SALMONN files mix many): checked no further, counted and reported below.
            unknown[task] += 1
            if skipped is not None:
                skipped.append(f"{path}#{i}: task {task!r} is not one of {', '.join(TASKS)}")
            continue
        try:
            sample = _sample(row, i, path.parent, unlabelled)
        except BadSample as err:
            if on_bad == "error":
                raise BadSample(f"{path}: {err} (set data.on_bad_file=skip to skip such rows)") from None
            log.warning("skipping %s: %s", path, err)
            if skipped is not None:
                skipped.append(f"{path}#{i}: {err}")
            continue
        if tasks is None or sample.task in tasks:
            samples.append(sample)
    for task, n in unknown.items():
        close = difflib.get_close_matches(task, TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        log.warning("%s: skipping %d row(s) with task %r%s: not one of %s", path, n, task, hint, ", ".join(TASKS))
    return samples


def annotation_rows(path: Path) -> list:
    """The `annotation` list of a SALMONN file; anything else is a BadSample naming the file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadSample(f"{path}: not UTF-8 JSON (byte {err.object[err.start]:#04x} at offset {err.start} is not "
                        "UTF-8); a SALMONN annotation file must be UTF-8 encoded") from None
    try:
        rows = json.loads(text)["annotation"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise BadSample(f"{path}: not a SALMONN annotation file ({{\"annotation\": [...]}}): {err}") from None
    if not isinstance(rows, list):
        raise BadSample(f"{path}: \"annotation\" must be a list of rows, got {type(rows).__name__}")
    return rows


def _sample(row: dict, index: int, base: Path, unlabelled: bool = False) -> Sample:
    if not isinstance(row, dict):
        raise BadSample(f"row {index} is a {type(row).__name__}, not an object with path, text and task")
    _check_types(row, index)
    missing = [k for k in ("path", "task") if not row.get(k)]
    if missing:
        raise BadSample(f"row {index} has no {', '.join(missing)}")
    refs = tuple(r.strip() for r in row.get("references") or () if r and r.strip())
    text = (row.get("text") or "").strip()
    if not text and refs:
        text = refs[0]
    if not text and not unlabelled:
        raise BadSample(f"row {index} ({row['path']}) has an empty transcript/caption")
    audio = Path(row["path"])
    extra = {k: v for k, v in row.items() if k not in ("path", "task", "text", "references")}
    return Sample(id=str(row.get("id", f"{row['task']}-{index}")), path=_resolve(audio, base),
                  task=row["task"], text=text, references=refs, extra=extra)


def _check_types(row: dict, index: int) -> None:
    """path, task and text are strings (text may be null) and references a list of strings: a number or a list
    where a string belongs is a BadSample naming the row and the key, not an AttributeError later."""
    where = f"row {index}" + (f" (id {row['id']!r})" if "id" in row else "")
    for key in ("path", "task", "text"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise BadSample(f"{where}: {key!r} must be a string, got {type(value).__name__} {value!r}")
    refs = row.get("references")
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, str) for r in refs)):
        raise BadSample(f"{where}: 'references' must be a list of strings, got {refs!r}")


def _resolve(audio: Path, base: Path) -> Path:
    """A relative path is relative to the manifest's folder or, when no file is there, to its parent: sets that
    keep one manifest per subfolder write paths from their root (`asr/x.wav` in `asr/manifest.json`)."""
    if audio.is_absolute():
        return audio
    here = base / audio
    if not here.exists() and (base.parent / audio).exists():
        return base.parent / audio
    return here
