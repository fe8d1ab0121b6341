"""`python run.py --help`: the config groups of conf/ and their options, for Hydra's help template.

Hydra's own $APP_CONFIG_GROUPS lists every directory of conf/, including shared files that are not options
(data/_loader) and groups run.py never reads (sweep, for sweep.py). The resolver below lists what a user can pick.
Only omegaconf is imported: it is registered before Hydra composes the config, on every start.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sota.paths import CONF

RESOLVER = "sota.config_groups"
NOT_RUN_GROUPS = ("hydra", "sweep")  # Hydra's own settings; sweep.py's sweeps (conf/sweep_config.yaml)


def config_groups(conf: Path = CONF) -> dict[str, list[str]]:
    """group -> its options (file stems), leaving out private files (a leading underscore) and NOT_RUN_GROUPS."""
    groups: dict[str, list[str]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group == "." or group.split("/")[0] in NOT_RUN_GROUPS or path.stem.startswith("_"):
            continue
        groups.setdefault(group, []).append(path.stem)
    return groups


def format_groups(choices: Any = None) -> str:
    """One line per group, `group: a, b*, c`, the current choice starred (from hydra.runtime.choices)."""
    chosen = dict(choices or {})
    groups = config_groups()
    width = max(map(len, groups)) + 1
    lines = []
    for group, options in groups.items():
        shown = [o + "*" if chosen.get(group) == o else o for o in options]
        lines += textwrap.wrap(", ".join(shown), width=110, initial_indent=f"  {group + ':':{width}} ",
                               subsequent_indent=" " * (width + 3), break_on_hyphens=False)
    return "\n".join(lines)


def register() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, format_groups)
