"""Atomic file and directory writes: a reader sees the old one or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    # os.umask only reads by setting: done once at import, since the umask is process-wide and writes may come
    # from several threads (a sweep's launcher), which must never see it at 0
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600); the result gets the permissions a plain open() would give
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def replace_dir(tmp: Path, dst: Path) -> None:
    """Move the finished directory `tmp` into place at `dst`, replacing any previous `dst` without a partial state."""
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)


def build_dir(dst: Path, build: Callable[[Path], None]) -> None:
    """`build` fills a staging directory beside `dst`, which then replaces `dst` whole; on any failure the staging
    directory is removed and an earlier `dst` is kept."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_staging(dst: Path, max_age_s: float = 3600.0) -> None:
    """Delete staging directories of `dst` left by killed builds; young ones may belong to a build still running."""
    now = time.time()
    for stale in dst.parent.glob(f".{dst.name}.*-*"):
        try:
            if stale.is_dir() and now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:  # raced with another process cleaning up
            continue
