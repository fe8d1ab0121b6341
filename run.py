"""Train, evaluate and measure one configuration: `python run.py [group=option ...] [key=value ...]`."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from sota.config import ConfigError
    from sota.tasks import run

    try:
        return run(cfg)
    except ConfigError as err:  # the user's to fix: the message names the keys and valid values, no traceback
        print(f"sota: configuration error:\n{err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
