"""Errors every layer may raise; this module imports nothing from sota, so any module can use it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run: every problem found, each naming its key and the valid values."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))
