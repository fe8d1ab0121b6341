"""Train, evaluate and measure one configuration: `python run.py [group=option ...] [key=value ...]`."""

import sys

from sota import help as usage
from sota.utils import quiet

quiet.install()  # before torch, torchao and Lightning are imported: some of their notices are printed on import
usage.register()  # the config groups listed by `--help` (conf/hydra/help/run.yaml)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from sota.config import validate
    from sota.errors import ConfigError

    try:
        validate(cfg)  # before anything is built: a typo costs the imports its type checks need, not a run
        from sota.tasks import run

        quiet.lightning_through_root()  # Lightning is imported and Hydra's logging set up by now
        return run(cfg)
    except ConfigError as err:  # the user's to fix: the message names the keys and valid values, no traceback
        print(f"sota: configuration error:\n{err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
