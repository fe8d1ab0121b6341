"""Offline speech synthesis with eSpeak NG (the copy shipped by `espeakng_loader`), driven through ctypes.

Used to voice the synthetic ASR corpus: no model download, and hundreds to ~1600 times faster than real time
on one CPU core.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading
from pathlib import Path

import numpy as np
import soxr

__all__ = ["SAMPLE_RATE", "VOICES", "TTSUnavailableError", "synthesize", "reset"]

SAMPLE_RATE = 16000

# Voice + variant names checked to load and produce audio with the bundled eSpeak NG 1.52 data
# (tests/test_synthetic.py re-checks each). Klatt and whisper variants are left out: they are hard to understand.
# Note that "en-gb" is not a voice name in this data set (the British voice is plain "en").
VOICES: tuple[str, ...] = (
    "en-us",
    "en-us+f2",
    "en-us+f3",
    "en-us+m2",
    "en-us+m7",
    "en+f4",
    "en+m3",
    "en-gb-x-rp+f1",
    "en-gb-scotland+m4",
    "en-029+f5",
    "en-gb-x-gbclan",
    "en-us-nyc+m1",
    "en-gb-x-gbcwmd+f3",
)

# Whisper tiny.en scored best on these (WER 0.34-0.41 at 150 wpm on grammar sentences, vs up to 0.8 for the rest).
CLEAR_VOICES: tuple[str, ...] = ("en-us", "en-us+f2", "en-us+m2", "en-us+m7", "en+f4", "en+m3")

RATE_RANGE = (80, 450)  # espeakRATE_MINIMUM / espeakRATE_MAXIMUM: beyond these eSpeak changes method or clamps
PITCH_RANGE = (0, 100)

# From speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class TTSUnavailableError(RuntimeError):
    """libespeak-ng (from the `espeakng-loader` package) could not be loaded or initialised."""


class _Engine:
    """One loaded, initialised copy of libespeak-ng plus the buffer its callback fills."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - it is a hard dependency of the package
            raise TTSUnavailableError("the `espeakng-loader` package is missing: pip install espeakng-loader") from e
        self.lib_path = espeakng_loader.get_library_path()
        try:
            self.data_path = espeakng_loader.get_data_path()
        except RuntimeError as e:
            raise TTSUnavailableError(f"eSpeak NG data folder missing from espeakng-loader: {e}") from e
        if not Path(self.lib_path).is_file():
            raise TTSUnavailableError(f"libespeak-ng not found at {self.lib_path} (espeakng-loader install is broken)")
        self._chunks: list[bytes] = []
        # ctypes must keep the callback object alive for as long as the library may call it.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self._lib: ctypes.CDLL | None = None
        # The C library of this process: eSpeak draws its breath/voicing noise from libc rand().
        self._libc = ctypes.CDLL(None)
        self._libc.srand.argtypes = [ctypes.c_uint]
        self._libc.srand.restype = None
        self.sample_rate = 0
        self.load()

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, _events: int) -> int:
        if n > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, n * 2))
        return 0  # 0 = keep synthesising

    def load(self) -> None:
        """(Re)load the shared library, which resets every static variable inside it."""
        if self._lib is not None:
            self._lib.espeak_Terminate()
            # dlclose drops the only reference, so the next dlopen maps a pristine copy of the library.
            _ctypes.dlclose(self._lib._handle)
            self._lib = None
        try:
            lib = ctypes.CDLL(self.lib_path, mode=ctypes.RTLD_LOCAL)
        except OSError as e:
            raise TTSUnavailableError(f"cannot load libespeak-ng from {self.lib_path}: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if rate <= 0:
            raise TTSUnavailableError(f"espeak_Initialize failed (returned {rate}) with data at {self.data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self.sample_rate = rate

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        assert self._lib is not None
        lib = self._lib
        # On failure eSpeak silently keeps the previous voice, so an unchecked typo would go unnoticed.
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"unknown eSpeak NG voice {voice!r}; known good ones: {', '.join(VOICES)}")
        # Parameters are set after the voice because loading a voice may reset them.
        lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        # Both random sources (eSpeak's own and libc's) start from a fixed seed for every utterance, so noise in
        # breathy voices does not depend on what ran before. This reseeds libc rand() for the whole process.
        lib.espeak_ng_SetRandSeed(1)
        self._libc.srand(1)
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with code {err} for {text!r}")
        pcm = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        self._chunks = []
        return pcm


_engine: _Engine | None = None
# eSpeak keeps global state, so calls are serialised; concurrent threads simply wait for each other.
_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def reset() -> None:
    """Return eSpeak NG to its freshly initialised state.

    libespeak-ng keeps hidden static state between utterances (e.g. the phase of its pitch "flutter"), so the
    exact samples of an utterance depend on what was synthesised before it in this process. Reloading the shared
    library wipes that state (random seeds are reset on every call anyway), so calling `reset()` before a fixed
    sequence of `synthesize` calls makes that sequence byte-reproducible across runs and processes. It costs a
    few ms (the next call reloads the voice and dictionary), which is why it is not done on every call.
    """
    global _engine
    with _lock:
        if _engine is None:
            _engine = _Engine()  # a fresh load is already pristine
        else:
            _engine.load()


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50) -> np.ndarray:
    """Speak `text` and return float32 mono audio in [-1, 1] at 16 kHz.

    voice: an eSpeak NG voice name, optionally with a variant ("en-us+f3"); see VOICES.
    rate: speaking rate in words per minute (80-450). pitch: base pitch 0-100 (50 is the voice's default).
    The library is loaded and initialised once per process on first use (a lazy singleton); calls are
    serialised with a lock. Output may differ slightly depending on earlier calls: see `reset()`. Each call
    reseeds the process-wide libc rand() (eSpeak's noise source).
    """
    if not text or not text.strip():
        raise ValueError("synthesize() needs non-empty text")
    if not RATE_RANGE[0] <= int(rate) <= RATE_RANGE[1]:
        raise ValueError(f"rate must be in [{RATE_RANGE[0]}, {RATE_RANGE[1]}] words/min, got {rate}")
    if not PITCH_RANGE[0] <= int(pitch) <= PITCH_RANGE[1]:
        raise ValueError(f"pitch must be in [{PITCH_RANGE[0]}, {PITCH_RANGE[1]}], got {pitch}")
    with _lock:
        engine = _get_engine()
        pcm = engine.synth(text, voice, int(rate), int(pitch))
        source_rate = engine.sample_rate
    audio = pcm.astype(np.float32) / 32768.0
    if audio.size == 0:
        return audio
    return soxr.resample(audio, source_rate, SAMPLE_RATE).astype(np.float32, copy=False)
