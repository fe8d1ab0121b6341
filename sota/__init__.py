"""sota: compression studies of audio-language models."""

from __future__ import annotations

from typing import Any


def load(path: str, device: str = "cpu", int4_kernel: str | None = None) -> Any:
    """The AudioLLM of an export directory (`python -m sota.export`), on `device`; `int4_kernel` replaces the
    compact int4 kernel it was written with (tinygemm | triton)."""
    from sota.export.read import load as _load

    return _load(path, device, int4_kernel)
