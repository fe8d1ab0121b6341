"""Filesystem locations shared across sota: the Hydra config directory and the per-user cache for derived
artefacts."""

from __future__ import annotations

import os
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config groups


def cache_dir() -> Path:
    """Return the sota cache directory, creating it if needed.

    Resolution order: ``$SOTA_CACHE``, then ``$XDG_CACHE_HOME/sota``, then ``~/.cache/sota``.
    ``SOTA_CACHE`` comes first so tests and CI can isolate themselves from a user's real cache.
    """
    env = os.environ.get("SOTA_CACHE")
    if env:
        path = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "sota"
    path = path.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
