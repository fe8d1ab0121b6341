"""sota: compression studies of audio-language models."""

from __future__ import annotations

from typing import Any


def load(path: str, device: str = "cpu") -> Any:
    """The AudioLLM of an export directory (`python -m sota.export`), on `device`."""
    from sota.export.read import load as _load

    return _load(path, device)
