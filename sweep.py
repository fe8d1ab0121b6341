"""Sweeps over compression configurations (grid or Optuna NSGA-II) with an accuracy-versus-cost frontier report.

    python sweep.py sweep=<name> [key=value ...]      run or resume conf/sweep/<name>.yaml (conf/sweep_config.yaml)
    python sweep.py report DIR [key=value ...]        frontier files of a sweep dir or a Hydra multirun dir
    python sweep.py compare DIR1 DIR2 ... [out=DIR]   several sweeps' frontiers in one picture and table
    python sweep.py remeasure DIR [--points reference,best] [--measure official]   chosen points again, alone
    python sweep.py paired DIR [--reference ID]       each point's WER minus the reference's, paired bootstrap
    python sweep.py review DIR [--reference ID]       review.html: frontier, a point's config diff, metrics, clips
    python sweep.py plan [sweep=NAME] [key=value ...] [--json]   predicted peak memory, nothing run
"""

import sys

from sota.utils import quiet

quiet.install()  # before torch, torchao and Lightning are imported: some of their notices are printed on import

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

TOOLS = ("report", "compare", "remeasure", "paired", "review")


@hydra.main(version_base="1.3", config_path="conf", config_name="sweep_config")
def main(cfg: DictConfig) -> None:
    from sota.sweep.driver import SWEEP_ERRORS, run_sweep, summary_line

    try:
        print(summary_line(run_sweep(cfg)))
    except SWEEP_ERRORS as err:  # a config or directory problem: the message says it all, no traceback
        sys.exit(f"sweep.py: {err}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):  # Hydra's help would show sweep_config alone
        from sota.sweep.cli import usage

        print(usage())
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "plan":
        from sota.plan.cli import main as plan

        sys.exit(plan(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
        from sota.sweep.cli import main as tools

        sys.exit(tools(sys.argv[1:]))
    main()
