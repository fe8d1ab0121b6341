"""Resolve a model reference to a local directory: a bundled offline model, a local path, or a hub id that
is already in the local Hugging Face cache. Nothing is downloaded at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

BUNDLED_PREFIX = "bundled:"


def _bundled() -> dict[str, Callable[[], Path]]:
    from sota.formats.gguf import cached_gguf
    from sota.formats.whisper_ct2 import cached_whisper_ct2

    return {"whisper-tiny.en": cached_whisper_ct2, "smollm2-135m-instruct": cached_gguf}


class ModelNotAvailable(RuntimeError):
    """A configured model is neither bundled, a local directory, nor in the offline hub cache."""


def resolve_pretrained(ref: str, key: str) -> Path:
    """Local directory for `ref`; `key` is the config key to name in the error (e.g. `llm.path`)."""
    if ref.startswith(BUNDLED_PREFIX):
        name = ref[len(BUNDLED_PREFIX):]
        bundled = _bundled()
        if name not in bundled:
            raise ModelNotAvailable(f"{key}={ref}: unknown bundled model; valid: "
                                    + ", ".join(BUNDLED_PREFIX + n for n in sorted(bundled)))
        return bundled[name]()
    local = Path(ref).expanduser()
    if local.is_dir():
        return local
    if local.is_absolute() or ref.startswith("."):
        raise ModelNotAvailable(f"{key}={ref}: directory does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, local_files_only=True))
    except Exception as err:  # the hub client raises several unrelated types for "not cached"
        raise ModelNotAvailable(
            f"{key}={ref}: model not found offline ({type(err).__name__}). sota never downloads at run time: "
            f"fetch it once on a connected machine (`huggingface-cli download {ref}`) or point {key} at a local "
            f"directory, e.g. `{key}=/models/{ref.split('/')[-1]}`."
        ) from None
