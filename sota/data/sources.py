"""Data sources: callables that return `{split: manifest path}` for the datamodule."""

from __future__ import annotations

from pathlib import Path


def manifest_files(root: str | Path, train: str | None = None, val: str | None = None,
                   test: str | None = None) -> dict[str, Path]:
    """SALMONN-style annotation files given per split (absolute, or relative to the working directory)."""
    splits = {"train": train, "val": val, "test": test}
    out = {}
    for split, path in splits.items():
        if path is None:
            continue
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"data.source.{split}: manifest not found: {p}")
        out[split] = p
    if not out:
        raise ValueError("data.source: give at least one of train, val, test (SALMONN annotation JSON files)")
    return out
