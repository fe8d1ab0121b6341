"""`python sweep.py report DIR [key=value ...]` and `python sweep.py compare DIR1 DIR2 ... [out=DIR]`: frontier
files from finished runs, without running anything; `python sweep.py remeasure DIR ...`: chosen points
evaluated and measured again, alone, in another measurement mode (sota/sweep/remeasure.py); `python sweep.py
paired DIR`: each point's WER against the reference's on the same clips, with a paired bootstrap interval
(sota/sweep/paired.py); `python sweep.py review DIR`: one self-contained HTML page with the frontier, each
point's config diff, metrics, latency and per-clip answers with audio (sota/sweep/review.py). DIR is a sweep dir
or any dir of Hydra runs (`multirun/<date>/<time>`). Objectives and report axes come from conf/sweep_config.yaml;
a sweep dir's own settings (recorded in sweep.json) win over those defaults, and `key=value` overrides win over
both."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sota.compose import compose
from sota.paths import CONF
from sota.sweep.report import ObjectiveError, ReportSettings, compare, write_report
from sota.sweep.review import AUDIO_MB
from sota.sweep.sweepdir import SWEEP_JSON, SweepDirError, load_rows, read_json, sweep_name

log = logging.getLogger(__name__)
SETTING_KEYS = ("objectives", "report")
COMPARE_DIR = "multirun/compare"  # beside the sweeps (multirun/sweeps/<name>), git-ignored like them


def _defaults(overrides: Sequence[str]) -> dict[str, Any]:
    """objectives and report from sweep_config.yaml with `overrides` applied (one source of defaults)."""
    from omegaconf import OmegaConf

    cfg = compose(overrides, config_name="sweep_config")
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in SETTING_KEYS}


def settings_for(directory: Path | None, overrides: Sequence[str]) -> ReportSettings:
    values = _defaults(overrides)
    recorded = (read_json(directory / SWEEP_JSON) or {}).get("settings") if directory else None
    touched = {o.split("=", 1)[0].lstrip("+~").split(".", 1)[0] for o in overrides}
    for key in SETTING_KEYS:
        if recorded and key in recorded and key not in touched:
            values[key] = recorded[key]
    return ReportSettings.from_config(values["objectives"], values["report"])


def _split(items: Sequence[str]) -> tuple[list[str], list[str]]:
    dirs = [i for i in items if "=" not in i]
    return dirs, [i for i in items if "=" in i]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweep.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="frontier.csv/png/html of one sweep or multirun dir, written into it")
    rep.add_argument("items", nargs="+", metavar="DIR|key=value")
    cmp_ = sub.add_parser("compare", help="overlay several sweeps: compare.csv/png/html in out=DIR")
    cmp_.add_argument("items", nargs="+", metavar="DIR|key=value")
    cmp_.add_argument("--out", default=None, help=f"output dir (default: {COMPARE_DIR})")
    rem = sub.add_parser("remeasure", help="chosen points of a sweep measured again, alone, in another mode")
    rem.add_argument("items", nargs="+", metavar="DIR|key=value",
                     help="the sweep dir, then run.py overrides added to every run")
    rem.add_argument("--points", default="reference,best",
                     help="ids, id prefixes or reference|best|frontier, comma-separated (default: reference,best)")
    rem.add_argument("--measure", default="official", help="measure mode of the new runs (default: official)")
    rem.add_argument("--tolerance", type=float, default=1.10,
                     help="best: primary accuracy within this factor of the reference's (default: 1.10)")
    rem.add_argument("--timeout", type=float, default=None, help="seconds per run (default: none)")
    pair = sub.add_parser("paired", help="each point's WER minus the reference's, paired bootstrap 95 % interval")
    pair.add_argument("items", nargs="+", metavar="DIR")
    pair.add_argument("--reference", default=None, help="id or id prefix (default: the sweep's first point)")
    pair.add_argument("--draws", type=int, default=10000, help="bootstrap resamples (default: 10000)")
    pair.add_argument("--seed", type=int, default=0)
    rev = sub.add_parser("review", help="review.html: frontier, click a point for its config diff, metrics, latency, "
                                        "clips with audio")
    rev.add_argument("items", nargs="+", metavar="DIR|key=value")
    rev.add_argument("--reference", default=None, help="id or id prefix (default: the sweep's first point)")
    rev.add_argument("--out", default=None, help="the page to write (default: DIR/review.html)")
    rev.add_argument("--audio-mb", type=float, default=AUDIO_MB,
                     help=f"most MB of clip audio embedded in the page (default: {AUDIO_MB:g}; 0: none)")
    return parser


def usage() -> str:
    """`python sweep.py --help`: running a sweep (Hydra) and the tools below, one line each."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    tools = [(f"{a.dest} DIR ...", a.help or "") for a in sub._choices_actions]
    commands = [("sweep=<name> [key=value ...]", "run or resume conf/sweep/<name>.yaml (settings: "
                 "conf/sweep_config.yaml)"), *tools]
    width = max(len(c) for c, _ in commands) + 2
    sweeps = ", ".join(sorted(p.stem for p in (CONF / "sweep").glob("*.yaml") if not p.stem.startswith("_")))
    return "\n".join([
        "sweep.py: sweeps over compression configurations (grid or Optuna NSGA-II) and their accuracy-versus-cost",
        "frontier. Each point is one `python run.py ...` in <sweep_dir>/points/<id>.", "",
        "usage: python sweep.py COMMAND ...", "", "commands:",
        *(f"  {c:{width}}{h}" for c, h in commands), "",
        f"sweeps (conf/sweep/): {sweeps}",
        "Results: multirun/sweeps/<name>/ (sweep_dir=DIR): points/<id>/results.json, frontier.csv/png/html.",
        "`python sweep.py COMMAND --help` describes a tool's options; `python sweep.py --hydra-help` Hydra's flags.",
    ])


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    parser = build_parser()
    # key=value arguments may also follow the options (`remeasure DIR --points best seed=1`)
    args, rest = parser.parse_known_args(list(argv))
    unknown = [r for r in rest if r.startswith("-") or "=" not in r]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    dirs, overrides = _split([*args.items, *rest])
    out_override = [o for o in overrides if o.startswith("out=")]
    overrides = [o for o in overrides if not o.startswith("out=")]
    if out_override and args.command == "review":  # out=FILE, as compare takes it
        args.out = out_override[-1].split("=", 1)[1]
    try:
        if args.command == "remeasure":
            return _remeasure(parser, args, dirs, overrides)
        if args.command == "paired":
            return _paired(parser, args, dirs, overrides)
        if args.command == "review":
            return _review(parser, args, dirs, overrides)
        if args.command == "report":
            if len(dirs) != 1:
                parser.error(f"report takes one DIR, got {len(dirs)}: {dirs}")
            directory = Path(dirs[0])
            files = write_report(directory, load_rows(directory), settings_for(directory, overrides),
                                 title=sweep_name(directory))
        else:
            if len(dirs) < 2:
                parser.error("compare takes two or more DIRs")
            out = Path(out_override[-1].split("=", 1)[1] if out_override else args.out or COMPARE_DIR)
            files = compare([Path(d) for d in dirs], out, settings_for(Path(dirs[0]), overrides))
    except (SweepDirError, ObjectiveError, ValueError) as err:
        print(f"sweep.py {args.command}: {err}", file=sys.stderr)
        return 2
    for path in files.values():
        print(path)
    return 0


def _remeasure(parser: argparse.ArgumentParser, args: argparse.Namespace, dirs: list[str],
               overrides: list[str]) -> int:
    from sota.measure.protocol import MODES
    from sota.sweep.remeasure import remeasure

    if len(dirs) != 1:
        parser.error(f"remeasure takes one sweep DIR, got {len(dirs)}: {dirs}")
    if args.measure not in MODES:
        parser.error(f"--measure must be one of {', '.join(MODES)}, got {args.measure!r}")
    if not args.tolerance >= 1.0:
        parser.error(f"--tolerance must be >= 1 (a factor on the reference's accuracy), got {args.tolerance}")
    directory = Path(dirs[0])
    result = remeasure(directory, args.points, args.measure, settings_for(directory, []).objectives,
                       args.tolerance, overrides, timeout_s=args.timeout)
    for line in result["rows"]:
        print(", ".join(f"{k}={v}" for k, v in line.items() if v not in (None, "")))
    print(result["csv"])
    return 0 if all(line["status"] == "ok" for line in result["rows"]) else 1


def _paired(parser: argparse.ArgumentParser, args: argparse.Namespace, dirs: list[str], overrides: list[str]) -> int:
    from sota.sweep.paired import paired

    if len(dirs) != 1 or overrides:
        parser.error(f"paired takes one DIR and no key=value, got {[*dirs, *overrides]}")
    result = paired(Path(dirs[0]), args.reference, args.draws, args.seed)
    real = any("real_clips" in r for r in result["rows"])
    head = "| id | point | WER | WER - reference [95 % interval] | verdict |"
    print(head + (" real-speech WER | WER - reference [95 % interval] | verdict |" if real else ""))
    print("|---" * (8 if real else 5) + "|")
    for r in result["rows"]:
        cells = [r["id"], r["point"]]
        for prefix in ("", "real_") if real else ("",):
            delta = "–" if r.get(f"{prefix}wer_delta") is None else (f"{r[f'{prefix}wer_delta']:+.4f} "
                    f"[{r[f'{prefix}wer_delta_lo']:+.4f}, {r[f'{prefix}wer_delta_hi']:+.4f}]")
            wer = "–" if r.get(f"{prefix}wer") is None else f"{r[f'{prefix}wer']:.4f}"
            cells += [wer, delta, r.get(f"{prefix}verdict", "–")]
        print("| " + " | ".join(cells) + " |")
    print(result["csv"])
    return 0


def _review(parser: argparse.ArgumentParser, args: argparse.Namespace, dirs: list[str], overrides: list[str]) -> int:
    from sota.sweep.review import write_review

    if len(dirs) != 1:
        parser.error(f"review takes one DIR, got {len(dirs)}: {dirs}")
    directory = Path(dirs[0])
    print(write_review(directory, settings_for(directory, overrides), Path(args.out) if args.out else None,
                       args.reference, args.audio_mb))
    return 0
