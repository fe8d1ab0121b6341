"""What a run directory may become: a finished run is never touched again, and an interrupted one is continued
by the same command. `RunDirGuard` checks before Hydra writes anything into the directory (its `.hydra/` files,
run.log); `sota.tasks.run` checks again for entry points that bypass Hydra's run mode."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULTS = "results.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
# trainer=fsdp: the trained tensors gathered from every rank's shard, which rank zero evaluates
SHARDED_TRAINED = Path("checkpoints") / "trained.ckpt"


class RunExists(RuntimeError):
    """The run directory holds a finished run (never overwritten), or one that cannot be continued safely."""


def recorded_status(out_dir: Path) -> str | None:
    """The status in the directory's results.json; None when there is none. An unreadable one is a refusal:
    treating it as absent would overwrite predictions and checkpoints of a run that may have finished."""
    path = out_dir / RESULTS
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
        return str(results["status"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunExists(f"{path} is unreadable ({type(err).__name__}: {err}); refusing to write into {out_dir}. "
                        "Move it away, or choose another directory (hydra.run.dir=...).") from None


def check_output_dir(out_dir: Path) -> None:
    if recorded_status(out_dir) == "ok":
        raise RunExists(f"{out_dir / RESULTS} holds a finished run; refusing to overwrite it. "
                        "Choose another directory (hydra.run.dir=...) or move the old one away.")


def resume_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint an interrupted training run left in its directory, if any."""
    path = out_dir / LAST_CHECKPOINT
    return path if path.is_file() else None


def _saved_overrides(out_dir: Path) -> list[str] | None:
    path = out_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path)) or []]
    except Exception:  # an unreadable record of overrides cannot tell a different command apart
        return None


class RunDirGuard(Callback):
    """Hydra callback, run before the run directory is written: refuses a finished or unreadable run, and a
    command whose overrides differ from those of the interrupted run it would continue. A refusal is one
    message on stderr and exit status 2, like every other configuration error."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._check(config)
        except RunExists as err:
            print(f"sota: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def _check(self, config: DictConfig) -> None:
        try:
            out_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        except Exception:  # a run dir built from values only Hydra's job runtime knows: tasks.run checks later
            return
        check_output_dir(out_dir)
        if resume_checkpoint(out_dir) is None:
            return
        before = _saved_overrides(out_dir)
        now = list(OmegaConf.select(config, "hydra.overrides.task") or [])
        if before is not None and sorted(before) != sorted(now):
            raise RunExists(
                f"{out_dir} holds an interrupted run ({LAST_CHECKPOINT}) started with overrides {before}; this "
                f"command's are {now}. Continuing it would mix two configurations: rerun the same command to "
                "resume it, or choose another directory (hydra.run.dir=...).")
        log.info("%s holds an interrupted run: training resumes from %s", out_dir, out_dir / LAST_CHECKPOINT)
