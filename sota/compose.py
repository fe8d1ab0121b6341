"""run.py's configuration composed outside run.py (tools, sweeps, tests): one conf directory, one way in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from omegaconf import DictConfig

from sota.paths import CONF


@contextmanager
def conf_dir() -> Iterator[None]:
    """Hydra initialised on conf/; inside a @hydra.main app (sweep.py) Hydra already is, on the same directory."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        yield


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """`config_name` (run.py's `config`, sweep.py's `sweep_config`, or a group option such as `lora/lora`)
    composed with `overrides`, as the entry point would."""
    from hydra import compose as hydra_compose

    with conf_dir():
        return hydra_compose(config_name=config_name, overrides=list(overrides))
