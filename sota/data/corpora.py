"""Parsers for real corpora's on-disk layouts (LibriSpeech, Clotho, AudioCaps): each returns SALMONN annotation
rows with absolute audio paths; `sota.data.sources` caches them as manifests."""

from __future__ import annotations

import csv
import logging
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Row = dict[str, Any]

CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
AUDIOCAPS_FIELDS = ("youtube_id", "audiocap_id", "start_time")

# Keep apostrophes and in-word hyphens ("dog's", "low-pitched"): they are part of the words the closed-vocabulary
# LLMs learn; other punctuation only splits one word into several vocabulary entries ("barks", "barks.").
_PUNCT = re.compile(r"[^\w\s'-]|(?<!\w)-|-(?!\w)")


class CorpusFormatError(ValueError):
    """A corpus file or folder that does not have the expected layout; the message names it."""


def normalize_text(text: str, lowercase: bool = True, strip_punctuation: bool = False) -> str:
    """Whitespace collapsed, optionally lowercased and without punctuation."""
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header; every column in `required` must be present."""
    # utf-8-sig: spreadsheet exports of these CSVs often start with a byte-order mark that would otherwise
    # become part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise CorpusFormatError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                                    f"{', '.join(repr(c) for c in missing)} (columns: {', '.join(columns) or 'none'})")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)} for row in reader]


def check_pattern(pattern: str, allowed: Sequence[str], key: str) -> None:
    """`pattern` is a str.format pattern whose fields are all in `allowed`."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as err:
        raise ValueError(f"{key}: bad pattern {pattern!r}: {err}") from None
    unknown = sorted(f for f in fields if f not in allowed)
    if unknown:
        raise ValueError(f"{key}: unknown field(s) {', '.join('{' + f + '}' for f in unknown)} in {pattern!r}; "
                         f"use {', '.join('{' + f + '}' for f in allowed)}")


def librispeech_rows(split_dir: Path, lowercase: bool = True, audio_ext: str = "flac") -> list[Row]:
    """One ASR row per line of `<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` (`<utt-id> TRANSCRIPT`), the
    audio being `<utt-id>.<audio_ext>` next to it. Lines without a transcript keep an empty text, so the loader
    reports them per data.on_bad_file like any other empty transcript."""
    transcripts = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise CorpusFormatError(f"{split_dir}: no <speaker>/<chapter>/<speaker>-<chapter>.trans.txt files; give a "
                                "LibriSpeech split folder such as .../LibriSpeech/train-clean-100")
    rows = []
    for trans in transcripts:
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt:
                rows.append({"id": utt, "path": str(trans.parent / f"{utt}.{audio_ext}"),
                             "text": normalize_text(text, lowercase), "task": "asr"})
    log.info("LibriSpeech %s: %d utterances in %d chapters", split_dir, len(rows), len(transcripts))
    return rows


def clotho_rows(captions_csv: Path, audio_dir: Path, lowercase: bool = True,
                strip_punctuation: bool = True) -> list[Row]:
    """One AAC row per clip of a Clotho captions file (`file_name, caption_1..caption_5`): the five captions are
    the references, the first of them the training target."""
    rows = []
    for rec in read_csv(captions_csv, ("file_name", *CLOTHO_CAPTIONS)):
        if not rec["file_name"]:
            continue
        refs = [c for c in (normalize_text(rec[k], lowercase, strip_punctuation) for k in CLOTHO_CAPTIONS) if c]
        rows.append({"id": rec["file_name"], "path": str(audio_dir / rec["file_name"]),
                     "text": refs[0] if refs else "", "references": refs, "task": "aac"})
    log.info("Clotho %s: %d clips", captions_csv, len(rows))
    return rows


def audiocaps_rows(captions_csv: Path, audio_dir: Path, audio_name: str = "{youtube_id}.wav",
                   lowercase: bool = True, strip_punctuation: bool = True) -> list[Row]:
    """One AAC row per clip of an AudioCaps file (`audiocap_id, youtube_id, start_time, caption`, one caption
    per line): a clip (youtube_id, start_time) gets all its captions as references.

    The audio file is `audio_dir / audio_name` filled from the clip's rows; with `{audiocap_id}` in the
    pattern the clip has one candidate name per caption row and the first one that exists is used, since
    downloads differ in which of them they keep.
    """
    clips: dict[tuple[str, str], list[dict[str, str]]] = {}
    for rec in read_csv(captions_csv, AUDIOCAPS_COLUMNS):
        if rec["youtube_id"]:
            clips.setdefault((rec["youtube_id"], rec["start_time"]), []).append(rec)
    rows = []
    for (youtube_id, start_time), recs in clips.items():
        names = list(dict.fromkeys(audio_name.format(**{k: r[k] for k in AUDIOCAPS_FIELDS}) for r in recs))
        path = next((audio_dir / n for n in names if (audio_dir / n).is_file()), audio_dir / names[0])
        refs = [c for c in (normalize_text(r["caption"], lowercase, strip_punctuation) for r in recs) if c]
        rows.append({"id": f"{youtube_id}_{start_time}", "path": str(path), "text": refs[0] if refs else "",
                     "references": refs, "task": "aac", "audiocap_ids": [r["audiocap_id"] for r in recs]})
    log.info("AudioCaps %s: %d clips from %d captions", captions_csv, len(rows), sum(map(len, clips.values())))
    return rows


def missing_audio(rows: Sequence[Row]) -> list[str]:
    """Audio paths of `rows` that are not files."""
    return [r["path"] for r in rows if not Path(r["path"]).is_file()]
