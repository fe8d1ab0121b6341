"""Build (once, then cache) the built-in synthetic corpus: speech for ASR from a weighted pool of offline voices
(natural text and grammar sentences, varied and augmented), and sound scenes for AAC.

Output is a folder of 16 kHz wavs plus train/val/test manifests in SALMONN's annotation layout; the folder name is a
hash of the spec, so every distinct spec gets its own corpus and a rebuild is a cache hit.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf

from sota.data import augment as augmentation
from sota.data import grammar, scenes, sentences, voices as voice_pool
from sota.data.corpus_spec import (GENERATOR_VERSION, SAMPLE_RATE, SPLITS, TASK_IDS, SyntheticCorpusSpec, fingerprint,
                                    usable_voices)
from sota.utils.cpus import usable_cpus

__all__ = ["build_corpus", "transcript"]

logger = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30  # seconds between progress lines in logs

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_POOL_STREAM = 7  # rng stream id of the shared sentence pool, distinct from the split ids
_NATURAL_STREAM = 8  # rng stream of the natural-sentence pool
_NOISE_STREAM = 9  # rng stream of the background-noise bank
_NOISE_BANK = 48  # background clips (real recordings and scenes) that speech is mixed with
_SHARD = 128  # clips per unit of work for the worker processes
_DONE = "DONE"


def _manifests(folder: Path) -> dict[str, Path]:
    return {split: folder / f"{split}.json" for split in SPLITS}


# ---------------------------------------------------------------------------------------------------------------
def transcript(sentence: str) -> str:
    """A natural sentence in the corpus' transcript form: lowercase words and apostrophes, as the grammar's."""
    return " ".join(re.sub(r"[^a-z' ]", " ", sentence.lower().replace("-", " ")).split())


def _natural_pool(spec: SyntheticCorpusSpec) -> list[str]:
    """Natural sentences short enough for the clips, in a seeded order, as transcripts."""
    pool = [t for t in dict.fromkeys(transcript(x) for x in sentences.natural_sentences())
            if 3 <= len(t.split()) <= spec.max_words]
    order = np.random.default_rng([spec.seed, _NATURAL_STREAM]).permutation(len(pool))
    return [pool[i] for i in order]


def _sentence_pools(spec: SyntheticCorpusSpec) -> dict[str, tuple[list[str], list[str]]]:
    """Per split: (sentences, reserve sentences for clips that will not fit), no sentence in two splits.

    A `natural_text` share of each split's sentences comes from the natural pool, the rest from the grammar; both
    pools are cut test-first, so the test set does not change when only train/val sizes do. Each natural training
    sentence is said `natural_repeats` times (shuffled apart); every other sentence once.
    """
    order = ("test", "val", "train")
    reserve = {s: max(4, math.ceil(0.05 * spec.count("asr", s))) for s in SPLITS}
    natural_n = {s: round(spec.natural_text * (spec.count("asr", s) + reserve[s])) for s in SPLITS}
    repeats = {s: spec.natural_repeats if s == "train" else 1 for s in SPLITS}
    distinct = {s: math.ceil(natural_n[s] / repeats[s]) for s in SPLITS}
    natural = _natural_pool(spec) if spec.natural_text > 0 else []
    if sum(distinct.values()) > len(natural):
        raise ValueError(f"SyntheticCorpusSpec.natural_text={spec.natural_text} with natural_repeats="
                         f"{spec.natural_repeats} asks for {sum(distinct.values())} distinct natural sentences of at "
                         f"most {spec.max_words} words; {len(natural)} exist: lower natural_text or the corpus sizes, "
                         "or raise natural_repeats")
    grammar_total = sum(spec.count("asr", s) + reserve[s] - natural_n[s] for s in SPLITS)
    made = grammar.sentences(grammar_total, np.random.default_rng([spec.seed, _POOL_STREAM]), max_words=spec.max_words)
    # Natural sentences that the grammar happens to produce too stay on one side only.
    natural = [t for t in natural if t not in set(made)]
    out, at_g, at_n = {}, 0, 0
    for split in order:
        k, g = distinct[split], spec.count("asr", split) + reserve[split] - natural_n[split]
        mixed = made[at_g:at_g + g] + (natural[at_n:at_n + k] * repeats[split])[:natural_n[split]]
        at_g, at_n = at_g + g, at_n + k
        mixed = [mixed[i] for i in np.random.default_rng([spec.seed, _POOL_STREAM, _SPLIT_IDS[split]]).permutation(len(mixed))]
        n = spec.count("asr", split)
        out[split] = (mixed[:n], mixed[n:])
    return out


class _Speaker:
    """Draws voices by weight and speaks; holds the background-noise bank once per process."""

    def __init__(self, spec: SyntheticCorpusSpec, used: tuple[tuple[str, float], ...]) -> None:
        self.spec = spec
        self.names = [v for v, _ in used]
        weights = np.array([w for _, w in used], dtype=np.float64)
        self.p = weights / weights.sum()
        self.noises: list[np.ndarray] = []
        if spec.augment is not None and spec.augment.noise_p > 0:
            self.noises = scenes.noise_bank(np.random.default_rng([spec.seed, _NOISE_STREAM]), _NOISE_BANK,
                                            spec.max_clip_s)

    def clip(self, text: str, rng: np.random.Generator) -> tuple[np.ndarray, str] | None:
        """(noisy speech within spec.max_samples, voice), or None if even the fastest allowed speed is too long."""
        spec = self.spec
        voice = self.names[int(rng.choice(len(self.names), p=self.p))]
        speed = float(rng.uniform(*spec.speed_range))
        pitch = float(rng.uniform(*spec.pitch_semitones))
        lead = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
        trail = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
        snr_db = float(rng.uniform(*spec.noise_snr_db))
        peak = float(rng.uniform(0.3, 0.9))
        tilt = float(rng.choice([0.0, 0.5, 1.0]))  # white, pink or brown-ish room tone
        aug_seed = int(rng.integers(2**63))
        budget = spec.max_samples - lead - trail
        speech = voice_pool.synthesize(text, voice, speed, pitch)
        for _ in range(3):
            if len(speech) <= budget or speed >= voice_pool.SPEED_RANGE[1]:
                break
            # Faster in proportion to the overshoot, with a margin: engines' timing is not linear in speed.
            speed = min(voice_pool.SPEED_RANGE[1], speed * len(speech) / budget * 1.05)
            speech = voice_pool.synthesize(text, voice, speed, pitch)
        if len(speech) > budget or len(speech) == 0:
            return None
        speech = speech * (peak / (np.abs(speech).max() + 1e-9))
        clip = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
        speech_rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
        clip = clip + scenes.band_noise(rng, len(clip), 20.0, 8000.0, tilt=tilt) * (speech_rms / 10 ** (snr_db / 20))
        if spec.augment is not None:
            clip = augmentation.augment(clip.astype(np.float32), np.random.default_rng(aug_seed), spec.augment,
                                        self.noises)
        return np.asarray(clip, dtype=np.float64)[: spec.max_samples], voice


def _write_wav(path: Path, audio: np.ndarray) -> int:
    # Quantise ourselves (rather than letting libsndfile do it) so clipping and rounding are explicit and stable.
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    # Encode in memory: closing a real file makes libsndfile fsync it, which is ~10x the cost of the whole write.
    buffer = io.BytesIO()
    sf.write(buffer, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    path.write_bytes(buffer.getvalue())
    return len(pcm)


def _asr_shard(spec: SyntheticCorpusSpec, speaker: _Speaker, split: str, folder: Path, start: int,
               texts: list[str], reserve: list[str]) -> list[dict]:
    """Clips start, start+1, ... of a split; a sentence too long for the clip is replaced from `reserve`."""
    rows: list[dict] = []
    reserve_at = 0
    for idx, text in enumerate(texts, start):
        attempt = 0
        while True:
            rng = np.random.default_rng([spec.seed, _SPLIT_IDS[split], TASK_IDS["asr"], idx, attempt])
            made = speaker.clip(text, rng)
            if made is not None:
                break
            if reserve_at >= len(reserve):
                raise RuntimeError(f"{split}: too many sentences do not fit in max_clip_s={spec.max_clip_s}s even at "
                                   f"speed {voice_pool.SPEED_RANGE[1]}; raise max_clip_s")
            text, reserve_at, attempt = reserve[reserve_at], reserve_at + 1, attempt + 1
        clip, voice = made
        rel = f"audio/{split}/asr_{idx:05d}.wav"
        n = _write_wav(folder / rel, clip)
        rows.append({"path": rel, "text": text, "task": "asr", "speaker": voice, "duration": round(n / SAMPLE_RATE, 4)})
    return rows


def _aac_shard(spec: SyntheticCorpusSpec, split: str, folder: Path, start: int, stop: int) -> list[dict]:
    rows: list[dict] = []
    low = max(1.0, 0.5 * spec.max_clip_s)
    for idx in range(start, stop):
        rng = np.random.default_rng([spec.seed, _SPLIT_IDS[split], TASK_IDS["aac"], idx])
        duration = min(math.floor(rng.uniform(low, spec.max_clip_s) * 100) / 100, spec.max_samples / SAMPLE_RATE)
        audio, captions = scenes.make_scene(rng, duration)
        rel = f"audio/{split}/aac_{idx:05d}.wav"
        n = _write_wav(folder / rel, audio[: spec.max_samples])
        rows.append({"path": rel, "text": captions[0], "task": "aac", "references": captions,
                     "duration": round(n / SAMPLE_RATE, 4)})
    return rows


def _shards(spec: SyntheticCorpusSpec, pools: dict[str, tuple[list[str], list[str]]]) -> list[dict]:
    """Units of work: runs of clips of one task and split. Each clip's bytes depend only on its own seeds, so the
    corpus is the same however the shards are spread over processes."""
    jobs = []
    for split in SPLITS:
        primary, reserve = pools[split]
        n = len(primary)
        parts = max(1, math.ceil(n / _SHARD))
        for k, start in enumerate(range(0, n, _SHARD)):
            # Each shard owns a slice of the split's reserve, so replacements never collide across processes.
            r0, r1 = k * len(reserve) // parts, (k + 1) * len(reserve) // parts
            jobs.append({"task": "asr", "split": split, "start": start, "texts": primary[start:start + _SHARD],
                         "reserve": reserve[r0:r1]})
        count = spec.count("aac", split)
        jobs += [{"task": "aac", "split": split, "start": a, "stop": min(count, a + _SHARD)}
                 for a in range(0, count, _SHARD)]
    return jobs


def _run_shards(spec: SyntheticCorpusSpec, used: tuple[tuple[str, float], ...], folder: Path,
                jobs: list[dict]) -> list[list[dict]]:
    speaker = _Speaker(spec, used) if any(j["task"] == "asr" for j in jobs) else None
    out = []
    for job in jobs:
        (folder / "audio" / job["split"]).mkdir(parents=True, exist_ok=True)
        if job["task"] == "asr":
            out.append(_asr_shard(spec, speaker, job["split"], folder, job["start"], job["texts"], job["reserve"]))
        else:
            out.append(_aac_shard(spec, job["split"], folder, job["start"], job["stop"]))
    return out


# Worker processes are plain `python -m` subprocesses rather than multiprocessing, so they never re-import the
# caller's __main__ (unguarded scripts, notebooks, Hydra).
def _worker_main(folder: str, job_file: str) -> None:
    folder_path = Path(folder)
    record = json.loads((folder_path / "spec.json").read_text())
    spec = SyntheticCorpusSpec(**record["spec"])
    used = tuple((v, float(w)) for v, w in record["voices_used"])
    jobs = json.loads(Path(job_file).read_text())
    rows = _run_shards(spec, used, folder_path, jobs)
    Path(job_file + ".rows").write_text(json.dumps(rows))


def _in_workers(folder: Path, jobs: list[dict], workers: int) -> list[list[dict]]:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    # One thread per process: the parallelism is the processes.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # Longest first, dealt round-robin: the processes finish at about the same time.
    order = sorted(range(len(jobs)), key=lambda i: -(len(jobs[i].get("texts", ())) * 3
                                                      + jobs[i].get("stop", 0) - jobs[i].get("start", 0)))
    assigned = [order[w::workers] for w in range(workers)]
    procs = []
    for w, ids in enumerate(assigned):
        if not ids:
            continue
        job_file = folder / f"worker{w}.json"
        job_file.write_text(json.dumps([jobs[i] for i in ids]))
        log = open(folder / f"worker{w}.log", "wb")
        procs.append((ids, job_file, log, subprocess.Popen(
            [sys.executable, "-m", "sota.data.synthetic", "--worker", str(folder.resolve()), str(job_file.resolve())],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)))
    results: list[list[dict] | None] = [None] * len(jobs)
    try:
        t0 = time.monotonic()
        for ids, job_file, log, proc in procs:
            while True:  # a log line every 30 s: tqdm shows nothing when the output is not a terminal
                try:
                    code = proc.wait(timeout=PROGRESS_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    written = sum(1 for _ in (folder / "audio").rglob("*.wav"))
                    logger.info("corpus: %d clips written (%.0f s)", written, time.monotonic() - t0)
            log.close()
            if code != 0:
                text = Path(log.name).read_text(errors="replace")[-4000:]
                raise RuntimeError(f"a corpus worker process failed with exit code {code}:\n{text}")
            for i, rows in zip(ids, json.loads(Path(str(job_file) + ".rows").read_text())):
                results[i] = rows
    finally:
        for _, job_file, log, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            for path in (job_file, Path(str(job_file) + ".rows"), Path(log.name)):
                path.unlink(missing_ok=True)
    return results  # type: ignore[return-value]


def _host_tag() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _remove_stale_partials(root: Path, fp: str) -> None:
    """Delete temp folders left by interrupted builds of this spec on this host (their process is gone)."""
    host = _host_tag()
    for tmp in root.glob(f".{fp}.partial-*"):
        try:
            _, tmp_host, pid, _ = tmp.name.rsplit("-", 3)
            if tmp_host != host:
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            logger.info("removing stale partial build %s", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def build_corpus(spec: SyntheticCorpusSpec, root: str | Path, workers: int | None = None) -> dict[str, Path]:
    """Build the corpus for `spec` under `root/<fingerprint>/` (or reuse it) and return the manifest paths.

    Manifests: {"annotation": [{"path", "text", "task", "duration"[, "speaker"][, "references"]}, ...]} with paths
    relative to the manifest's folder. The build happens in a temp folder that is renamed into place when
    complete, so an interrupted build never leaves a corpus that looks finished. Same spec, voices and installed
    recordings -> byte-identical manifests and wavs, whatever `workers` is (default: one process per core this
    process may use; 1: all in this process). Voices are checked before anything is built; a cached corpus needs
    none installed.
    """
    if not isinstance(spec, SyntheticCorpusSpec):
        raise TypeError(f"spec must be a SyntheticCorpusSpec, got {type(spec).__name__}")
    if workers is None:
        workers = usable_cpus()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(root)
    if spec.on_missing_voice == "error":
        fp = fingerprint(spec)
        if (root / fp / _DONE).is_file():
            logger.info("synthetic corpus %s: cached at %s", fp, root / fp)
            return _manifests(root / fp)
    used = usable_voices(spec)
    fp = fingerprint(spec, used)
    final = root / fp
    if (final / _DONE).is_file():
        logger.info("synthetic corpus %s: cached at %s", fp, final)
        return _manifests(final)

    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, fp)
    tmp = root / f".{fp}.partial-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        (tmp / "spec.json").write_text(json.dumps({
            "generator_version": GENERATOR_VERSION, "fingerprint": fp, "spec": asdict(spec),
            "voices_used": [list(p) for p in used], "real_sounds": list(scenes.real_sources())},
            indent=1, sort_keys=True) + "\n")
        jobs = _shards(spec, _sentence_pools(spec))
        workers = min(workers, len(jobs))
        logger.info("synthetic corpus %s: building %d speech and %d sound clips in %d process(es), voices %s",
                    fp, sum(spec.count("asr", s) for s in SPLITS), sum(spec.count("aac", s) for s in SPLITS),
                    workers, ", ".join(v for v, _ in used))
        rows = _run_shards(spec, used, tmp, jobs) if workers == 1 else _in_workers(tmp, jobs, workers)
        for split in SPLITS:
            split_rows = [r for job, part in zip(jobs, rows) if job["split"] == split and job["task"] == "asr"
                          for r in part]
            split_rows += [r for job, part in zip(jobs, rows) if job["split"] == split and job["task"] == "aac"
                           for r in part]
            logger.info("synthetic corpus %s: %s split, %d clips, %.1f min of audio", fp, split, len(split_rows),
                        sum(r["duration"] for r in split_rows) / 60)
            text = json.dumps({"annotation": split_rows}, indent=1, ensure_ascii=False) + "\n"
            (tmp / f"{split}.json").write_text(text, encoding="utf-8")
        (tmp / _DONE).write_text(f"built in {time.perf_counter() - start:.1f} s\n")
        try:
            if final.exists() and not (final / _DONE).is_file():
                shutil.rmtree(final)  # not ours and unfinished: cannot happen with os.replace, but be safe
            os.replace(tmp, final)
        except OSError:
            if not (final / _DONE).is_file():
                raise
            # Another process finished the same corpus first; theirs is byte-identical.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("synthetic corpus %s: built at %s in %.1f s", fp, final, time.perf_counter() - start)
    return _manifests(final)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("internal entry point of build_corpus(): python -m sota.data.synthetic --worker FOLDER JOBS")
