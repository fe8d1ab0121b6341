"""Audio-captioning accuracy (CIDEr-D, BLEU-1..4, ROUGE-L, and METEOR/SPICE/SPIDEr when their Java jars
are present) via aac-metrics 0.5.4, with a Java-free PTB-style tokenization applied first.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["AACScores", "aac_scores", "caption_scores", "ptb_like_tokenize"]

# Newest Java major version on which we ran aac-metrics' METEOR 1.5 (jar from the pycocoevalcap 1.2
# wheel) and its PTB tokenizer successfully: OpenJDK 17.0.15. aac-metrics 0.5.4 itself refuses Java
# above 13; majors above 17 stay refused until someone verifies them. SPICE was not verified (no jars).
_JAVA_MAX_VERIFIED = 17
_JAVA_MIN = 8

# File layout that aac-metrics 0.5.4 looks up under its cache dir (aac_metrics/functional/meteor.py,
# functional/spice.py check_spice_install, download.py). Copied here so that checking for the jars
# does not import aac_metrics, which takes seconds.
_METEOR_FILES = ("aac-metrics/meteor/meteor-1.5.jar", "aac-metrics/meteor/data/paraphrase-en.gz")
_SPICE_JAR = "aac-metrics/spice/spice-1.0.jar"
_SPICE_CACHE_DIR = "aac-metrics/spice/cache"
_SPICE_LIB_DIR = "aac-metrics/spice/lib"
_SPICE_LIB_JARS = (
    "ejml-0.23.jar", "fst-2.47.jar", "guava-19.0.jar", "hamcrest-core-1.3.jar",
    "jackson-core-2.5.3.jar", "javassist-3.19.0-GA.jar", "json-simple-1.1.1.jar", "junit-4.12.jar",
    "lmdbjni-0.4.6.jar", "lmdbjni-linux64-0.4.6.jar", "lmdbjni-osx64-0.4.6.jar",
    "lmdbjni-win64-0.4.6.jar", "Meteor-1.5.jar", "objenesis-2.4.jar", "SceneGraphParser-1.0.jar",
    "slf4j-api-1.7.12.jar", "slf4j-simple-1.7.21.jar", "stanford-corenlp-3.6.0.jar",
    "stanford-corenlp-3.6.0-models.jar",
)

# Exceptions a Java-backed metric can raise when its external program misbehaves (bad jar, killed
# JVM, garbled stdout). They become a note instead of losing the whole evaluation.
_JAVA_RUN_ERRORS = (OSError, RuntimeError, ValueError, subprocess.SubprocessError)


# --------------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------------

# The official pipeline (aac_metrics.evaluate) first runs Stanford's PTBTokenizer
# (stanford-corenlp-3.4.1.jar, `-preserveLines -lowerCase`) and drops these punctuation tokens
# (aac_metrics/utils/tokenization.py PTB_PUNCTUATIONS). The bracket names are uppercase there while
# the tokenizer lowercases its output, so "-lrb-" survives in the official pipeline; we keep that quirk.
_PTB_PUNCTUATIONS = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
     "...", ";"}
)
# Two tables because str.translate is a single pass: curly quotes must become '"' before '"' is padded.
_UNICODE_PUNCT = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": " -- ", "\u2013": " -- ",
     "\u2026": "..."}
)
_BRACKETS_QUOTES = str.maketrans(
    {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ", "{": " -lcb- ", "}": " -rcb- ",
     '"': ' " '}
)
_BRACKET_TOKENS = frozenset({"-lrb-", "-rrb-", "-lsb-", "-rsb-", "-lcb-", "-rcb-"})
# Symbols PTBTokenizer always splits off as their own token.
_SPLIT_SYMBOLS = re.compile(r"([;*+=~^|\\_$%&])")
# Commas/colons split off unless inside a number ("1,000", "10:30").
_COMMA_COLON = re.compile(r"(?<!\d)([,:])|([,:])(?!\d)")
_DIGIT_APOSTROPHE = re.compile(r"(?<=\d)'(?=\d)")
_TRAILING_PUNCT = re.compile(r"(.*?[^.!?])([.!?]+)")
_ACRONYM = re.compile(r"(?:[a-z]\.)+")  # "a.", "u.s.", "p.m.", "e.g." keep their periods
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "mt", "capt", "col", "gen", "lt",
     "sgt", "rev", "inc", "corp", "ltd", "messrs", "hon", "pres", "gov", "sen", "rep"}
)
_CLITICS = frozenset({"'s", "'re", "'ve", "'ll", "'d", "'m", "n't", "'n'"})
_CLITIC_SUFFIX = re.compile(r"(.*[a-z0-9])('s|'re|'ve|'ll|'d|'m)")
_NT_SUFFIX = re.compile(r"(.*[a-z])(n't)")


def _split_word(word: str) -> list[str]:
    if word in _CLITICS or word in _BRACKET_TOKENS:  # already tokenized: stays as it is
        return [word]
    suffix: list[str] = []
    m = _TRAILING_PUNCT.fullmatch(word)
    if m is not None:
        stem, run = m.groups()
        keeps_period = run == "." and (_ACRONYM.fullmatch(word) or stem in _ABBREVIATIONS)
        if not keeps_period:
            word, suffix = stem, [run]
    prefix: list[str] = []
    while len(word) > 1 and word[0] in "'-":
        prefix.append(word[0])
        word = word[1:]
    while len(word) > 1 and word[-1] == "-":
        suffix.insert(0, word[-1])
        word = word[:-1]
    if word in _CLITICS:
        return prefix + [word] + suffix
    if (m := _NT_SUFFIX.fullmatch(word)) is not None:
        return prefix + list(m.groups()) + suffix
    if (m := _CLITIC_SUFFIX.fullmatch(word)) is not None:
        return prefix + list(m.groups()) + suffix
    if len(word) > 1 and word.endswith("'"):  # plural possessive "dogs'"
        return prefix + [word[:-1], "'"] + suffix
    return prefix + [word] + suffix


def ptb_like_tokenize(sentence: str) -> str:
    """Lowercase and tokenize like aac-metrics' PTB preprocessing, without Java.

    Matches Stanford PTBTokenizer 3.4.1 + aac-metrics' punctuation removal on ordinary captions
    (punctuation, quotes, brackets, dashes, contractions "is n't"/"it 's", abbreviations, numbers);
    rare constructs ("'tis", "y'all", "can't-miss") may split differently. Deterministic and
    machine-independent, so scores do not change with whether a jar happens to be installed.
    """
    s = sentence.translate(_UNICODE_PUNCT).translate(_BRACKETS_QUOTES).lower()
    s = _SPLIT_SYMBOLS.sub(r" \1 ", s)
    s = _COMMA_COLON.sub(lambda m: f" {m.group(1) or m.group(2)} ", s)
    s = _DIGIT_APOSTROPHE.sub(" ' ", s)
    s = re.sub(r"(?<=[a-z])'n'(?=[a-z])", " 'n' ", s)
    s = s.replace("n't-", "n't -")  # "can't-miss" -> "ca n't miss", as PTBTokenizer does
    tokens = [tok for word in s.split() for tok in _split_word(word)]
    return " ".join(tok for tok in tokens if tok not in _PTB_PUNCTUATIONS and tok != '"')


# --------------------------------------------------------------------------------------------------
# Java / jar availability
# --------------------------------------------------------------------------------------------------

def _cache_dir(cache_path: str | os.PathLike[str] | None) -> Path:
    # Same resolution order as aac_metrics.utils.globals: argument, $AAC_METRICS_CACHE_PATH, ~/.cache.
    raw = cache_path if cache_path is not None else os.environ.get("AAC_METRICS_CACHE_PATH", "~/.cache")
    return Path(os.path.expandvars(os.path.expanduser(str(raw))))


def _java_exe(java_path: str | os.PathLike[str] | None) -> str:
    raw = java_path if java_path is not None else os.environ.get("AAC_METRICS_JAVA_PATH", "java")
    return os.path.expandvars(os.path.expanduser(str(raw)))


@functools.lru_cache(maxsize=8)
def _java_problem(java: str) -> str | None:
    """None if `java` runs and its major version is in [8, verified max]; else what is wrong."""
    exe = shutil.which(java)
    if exe is None:
        return (f"no Java executable '{java}' (not on PATH / not a file); install a JDK "
                f"{_JAVA_MIN}..{_JAVA_MAX_VERIFIED} (e.g. apt-get install openjdk-17-jre-headless) "
                "or set AAC_METRICS_JAVA_PATH")
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"Java executable '{exe}' failed to run `-version`: {err}"
    m = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    if m is None:
        return f"cannot read the version of Java executable '{exe}'"
    parts = m.group(1).split(".")
    # Java <= 8 reports "1.8.0_x"; later ones "17.0.15".
    lead = re.match(r"\d+", parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0])
    if lead is None:
        return f"cannot read the version of Java executable '{exe}' ({m.group(1)!r})"
    major = int(lead.group(0))
    if not _JAVA_MIN <= major <= _JAVA_MAX_VERIFIED:
        return (f"Java {m.group(1)} at '{exe}' is outside the range this code runs aac-metrics' "
                f"Java metrics with ({_JAVA_MIN}..{_JAVA_MAX_VERIFIED}); set AAC_METRICS_JAVA_PATH to a "
                "JDK in that range")
    return None


def _missing(paths: list[Path]) -> list[str]:
    return [str(p) for p in paths if not p.exists()]


def _meteor_problem(cache: Path, java: str) -> str | None:
    missing = _missing([cache / f for f in _METEOR_FILES])
    if missing:
        return (f"METEOR not computed: missing {', '.join(missing)}. Add them with "
                f"`aac-metrics-download --cache_path {cache}` when online, or copy meteor-1.5.jar and "
                "data/paraphrase-en.gz from the pycocoevalcap 1.2 wheel (pycocoevalcap/meteor/) to "
                f"{cache / 'aac-metrics/meteor'}/")
    problem = _java_problem(java)
    return None if problem is None else f"METEOR not computed: {problem}"


def _spice_problem(cache: Path, java: str) -> str | None:
    jar, lib, spice_cache = cache / _SPICE_JAR, cache / _SPICE_LIB_DIR, cache / _SPICE_CACHE_DIR
    missing = _missing([jar, spice_cache])
    if not lib.is_dir():
        missing.append(f"{lib}/ (with its {len(_SPICE_LIB_JARS)} jars, stanford-corenlp-3.6.0.jar "
                       "and stanford-corenlp-3.6.0-models.jar among them)")
    else:
        lib_missing = [name for name in _SPICE_LIB_JARS if not (lib / name).exists()]
        if lib_missing:
            missing.append(f"{', '.join(lib_missing)} in {lib}/")
    if missing:
        return (f"SPICE (hence SPIDEr) not computed: missing {'; '.join(missing)}. Add them with "
                f"`aac-metrics-download --cache_path {cache}` when online (it fetches SPICE-1.0 and "
                "stanford-corenlp-full-2015-12-09.zip), or copy spice-1.0.jar to "
                f"{jar.parent}/, SPICE's lib/*.jar plus stanford-corenlp-3.6.0.jar and "
                f"stanford-corenlp-3.6.0-models.jar to {lib}/, and create {spice_cache}/")
    problem = _java_problem(java)
    return None if problem is None else f"SPICE (hence SPIDEr) not computed: {problem}"


@contextlib.contextmanager
def _java_limit_raised() -> Iterator[None]:
    # aac-metrics 0.5.4 rejects Java > 13 (utils/checks.py MAX_JAVA_MAJOR_VERSION) although METEOR 1.5
    # runs fine on 17; _java_problem already enforces our verified range, so lift theirs meanwhile.
    from aac_metrics.utils import checks

    old = checks.MAX_JAVA_MAJOR_VERSION
    checks.MAX_JAVA_MAJOR_VERSION = max(old, _JAVA_MAX_VERIFIED)
    try:
        yield
    finally:
        checks.MAX_JAVA_MAJOR_VERSION = old


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------

@dataclass
class AACScores:
    """Corpus metrics (`aac/...` keys, see `caption_scores`) and one row per clip, in input order."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _check_inputs(candidates: list[str], references: list[list[str]]) -> None:
    if len(candidates) != len(references):
        raise ValueError(
            f"caption metrics got {len(candidates)} candidates but {len(references)} reference lists; "
            "they must pair up one-to-one"
        )
    if len(candidates) < 2:
        raise ValueError(
            f"caption metrics need references for at least 2 clips (CIDEr-D takes its document "
            f"frequencies from the reference corpus and aac-metrics refuses fewer); got {len(candidates)}"
        )
    for i, (cand, refs) in enumerate(zip(candidates, references)):
        if not isinstance(cand, str):
            raise TypeError(f"candidate {i} is {type(cand).__name__}, expected str")
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"references {i} must be a list[str]")


def aac_scores(
    candidates: list[str],
    references: list[list[str]],
    *,
    tokenize: bool = True,
    cache_path: str | os.PathLike[str] | None = None,
    java_path: str | os.PathLike[str] | None = None,
) -> AACScores:
    """Caption metrics plus per-clip rows. See `caption_scores` for the keys.

    `tokenize=False` skips `ptb_like_tokenize` (for inputs already PTB-tokenized). `cache_path` and
    `java_path` default like aac-metrics ($AAC_METRICS_CACHE_PATH or ~/.cache; $AAC_METRICS_JAVA_PATH
    or java). Nothing is ever downloaded.
    """
    _check_inputs(candidates, references)
    cands = [ptb_like_tokenize(c) if tokenize else c for c in candidates]
    mrefs: list[list[str]] = []
    for i, refs in enumerate(references):
        toks = [ptb_like_tokenize(r) if tokenize else r for r in refs]
        # An empty reference carries no n-grams and makes aac-metrics' ROUGE-L divide by zero.
        toks = [t for t in toks if t.strip()]
        if not toks:
            raise ValueError(
                f"clip {i} has no non-empty reference caption: caption metrics need references"
            )
        mrefs.append(toks)

    # Imported here: aac_metrics pulls in torchmetrics/transformers/sentence-transformers (~6 s).
    from aac_metrics.functional import bleu_1, bleu_2, bleu_3, bleu_4, cider_d, rouge_l

    corpus: dict[str, Any] = {}
    per_clip: dict[str, list[float] | None] = {}

    def add(outs: tuple[dict[str, Any], dict[str, Any]], name: str) -> None:
        corpus[name] = float(outs[0][name])
        per_clip[name] = [float(x) for x in outs[1][name]]

    add(cider_d(cands, mrefs), "cider_d")
    for fn, name in ((bleu_1, "bleu_1"), (bleu_2, "bleu_2"), (bleu_3, "bleu_3"), (bleu_4, "bleu_4")):
        add(fn(cands, mrefs), name)
    add(rouge_l(cands, mrefs), "rouge_l")

    cache, java = _cache_dir(cache_path), _java_exe(java_path)
    notes: dict[str, str] = {}

    meteor_note = _meteor_problem(cache, java)
    if meteor_note is None:
        from aac_metrics.functional import meteor

        try:
            with _java_limit_raised():
                add(meteor(cands, mrefs, cache_path=str(cache), java_path=java), "meteor")
        except _JAVA_RUN_ERRORS as err:
            meteor_note = f"METEOR failed to run: {type(err).__name__}: {err}"
    if meteor_note is not None:
        corpus["meteor"], per_clip["meteor"] = None, None
        notes["meteor_note"] = meteor_note

    spice_note = _spice_problem(cache, java)
    if spice_note is None:
        from aac_metrics.functional import spice

        try:
            with _java_limit_raised():
                add(spice(cands, mrefs, cache_path=str(cache), java_path=java), "spice")
        except _JAVA_RUN_ERRORS as err:
            spice_note = f"SPICE (hence SPIDEr) failed to run: {type(err).__name__}: {err}"
    if spice_note is None:
        # SPIDEr = mean of CIDEr-D and SPICE, corpus and per clip (aac_metrics/functional/spider.py).
        corpus["spider"] = (corpus["cider_d"] + corpus["spice"]) / 2.0
        per_clip["spider"] = [(c + s) / 2.0 for c, s in zip(per_clip["cider_d"], per_clip["spice"])]
        notes["spider_note"] = "SPIDEr = (CIDEr-D + SPICE) / 2 on PTB-like tokenized captions"
    else:
        corpus["spice"] = corpus["spider"] = None
        per_clip["spice"] = per_clip["spider"] = None
        notes["spider_note"] = spice_note

    metrics: dict[str, Any] = {f"aac/{k}": v for k, v in corpus.items()}
    metrics.update({f"aac/{k}": v for k, v in notes.items()})
    # The hackathon evaluator v1.1 printed 100 * CIDEr-D under the name "SPIDEr"; kept for comparison
    # under an honest name.
    metrics["aac/official_v1_1"] = 100.0 * corpus["cider_d"]

    rows = []
    for i, (cand, refs) in enumerate(zip(candidates, references)):
        row: dict[str, Any] = {
            "id": i,
            "candidate": cand,
            "references": list(refs),
            "candidate_tok": cands[i],
            "references_tok": mrefs[i],
        }
        row.update({name: (None if vals is None else vals[i]) for name, vals in per_clip.items()})
        rows.append(row)
    return AACScores(metrics=metrics, rows=rows)


def caption_scores(
    candidates: list[str],
    references: list[list[str]],
    *,
    tokenize: bool = True,
    cache_path: str | os.PathLike[str] | None = None,
    java_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Corpus caption metrics for `candidates[i]` against `references[i]` (one or more captions).

    Keys: aac/cider_d (aac-metrics scale, 0..10), aac/bleu_1..aac/bleu_4, aac/rouge_l, aac/meteor,
    aac/spice, aac/spider (None when their Java jars/Java are missing, explained in aac/meteor_note /
    aac/spider_note; aac/spider_note is always present), aac/official_v1_1 (= 100 * CIDEr-D).
    Needs at least 2 clips (CIDEr-D). Captions are first tokenized by `ptb_like_tokenize`.
    """
    return aac_scores(
        candidates, references, tokenize=tokenize, cache_path=cache_path, java_path=java_path
    ).metrics
