"""Real speech scored in every run: the built-in set (the Asterisk telephone prompts that Debian ships, with
their published transcripts) or any SALMONN-style manifest named by `data.real_test`."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from pathlib import Path

from sota.utils.io import atomic_write_text

log = logging.getLogger(__name__)

BUILTIN = "builtin"
# Asterisk's core English prompts: one professional speaker (Allison Smith), real recordings at 8 kHz, CC-BY-SA-3.0.
SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
INSTALL = "make real-test (as root: apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en)"
SPEAKER = "asterisk:allison"
# Single words and two-word prompts are mostly digits, letters and menu labels: sentences test transcription.
MIN_WORDS = 3
_FORMAT = 1


class RealTestMissing(FileNotFoundError):
    """The built-in real-speech set is not installed; the message names the packages and the command."""


def parse_transcripts(text: str) -> dict[str, str]:
    """`name: transcript` lines -> {name: transcript}; `[...]` marks a non-speech prompt or a spoken symbol."""
    out = {}
    for line in text.splitlines():
        if line.startswith(";") or ":" not in line:
            continue
        name, said = (part.strip() for part in line.split(":", 1))
        if name and said:
            out[name] = said
    return out


def _speech(said: str) -> str | None:
    """The words of a prompt, or None for prompts that are tones or symbols ("[ascending tones]", "dot [.]")."""
    if "[" in said:
        return None
    return re.sub(r"\s+", " ", said).strip() or None


def asterisk_rows(sounds_dir: Path = SOUNDS_DIR, transcripts: Path = TRANSCRIPTS,
                  min_words: int = MIN_WORDS) -> list[dict]:
    """Manifest rows of the prompts with at least `min_words` words, shortest first (absolute wav paths)."""
    missing = [str(p) for p in (sounds_dir, transcripts) if not p.exists()]
    if missing:
        raise RealTestMissing(f"the built-in real-speech test set is not installed ({', '.join(missing)} not "
                              f"found); install it with: {INSTALL}")
    opener = gzip.open if transcripts.suffix == ".gz" else open
    with opener(transcripts, "rt", encoding="utf-8") as f:
        said = parse_transcripts(f.read())
    rows = []
    for name in sorted(said):
        text = _speech(said[name])
        wav = sounds_dir / f"{name}.wav"
        if text is None or len(text.split()) < min_words or not wav.is_file():
            continue
        rows.append({"id": f"asterisk/{name}", "path": str(wav), "text": text, "task": "asr", "speaker": SPEAKER})
    if not rows:
        raise RealTestMissing(f"{transcripts} and {sounds_dir} hold no prompt of {min_words}+ words with a wav")
    # Shortest first (size is duration for these PCM files): evaluation batches then hold clips of similar length,
    # so few are padded to a long clip's encoder chunks and token budget.
    return sorted(rows, key=lambda r: (Path(r["path"]).stat().st_size, r["id"]))


def builtin_manifest(root: str | Path) -> Path:
    """The built-in set written once as a manifest under `root` (keyed by the installed files)."""
    rows = asterisk_rows()
    key = hashlib.sha1(json.dumps({"format": _FORMAT, "rows": rows}, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(root) / f"asterisk-{key}" / "test.json"
    if not path.is_file():
        atomic_write_text(path, json.dumps({"annotation": rows}, indent=1))
        log.info("real-speech test set: %d Asterisk prompts -> %s", len(rows), path)
    return path


def resolve(real_test: str | None, root: str | Path) -> tuple[Path | None, str | None]:
    """`data.real_test` -> (manifest, note). `builtin`: the Asterisk prompts, or (None, note saying how to
    install them) when absent; a path: that manifest, which must exist; null or `none`: (None, note)."""
    if real_test is None or str(real_test).lower() == "none":
        return None, "data.real_test is off (null): no real-speech evaluation"
    if str(real_test) == BUILTIN:
        try:
            return builtin_manifest(root), None
        except RealTestMissing as err:
            return None, str(err)
    path = Path(str(real_test)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.real_test={real_test}: manifest not found (give a SALMONN-style "
                                f"annotation file, `{BUILTIN}` for the Asterisk prompts, or null)")
    return path.resolve(), None
