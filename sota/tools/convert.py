"""Command-line converters from the formats bundled models ship in (CTranslate2 Whisper, GGUF causal LMs) to
transformers model directories that ``from_pretrained(dst)`` loads offline.

    python -m sota.tools.convert whisper-ct2 SRC_DIR DST_DIR
    python -m sota.tools.convert gguf SRC_FILE DST_DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# Exit status for bad input (missing or corrupt source, unusable destination); argparse uses it for bad usage too.
EXIT_BAD_INPUT = 2


def _whisper_ct2(src: Path, dst: Path) -> Path:
    from sota.formats.gguf import ensure_replaceable
    from sota.formats.whisper_ct2 import convert_whisper_ct2

    # convert_whisper_ct2 replaces its destination wholesale; only let it replace one of its own outputs.
    ensure_replaceable(dst, marker="ct2_source.json")
    return convert_whisper_ct2(src, dst)


def _gguf(src: Path, dst: Path) -> Path:
    from sota.formats.gguf import convert_gguf

    return convert_gguf(src, dst)


_COMMANDS = {"whisper-ct2": _whisper_ct2, "gguf": _gguf}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sota.tools.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{whisper-ct2,gguf}")
    ct2 = sub.add_parser("whisper-ct2", help="CTranslate2 Whisper directory -> WhisperForConditionalGeneration",
                         description="Convert a CTranslate2 Whisper model directory (model.bin, config.json, "
                                     "tokenizer.json) into a float32 transformers Whisper directory.")
    ct2.add_argument("src", type=Path, metavar="SRC_DIR")
    ct2.add_argument("dst", type=Path, metavar="DST_DIR")
    gguf = sub.add_parser("gguf", help="GGUF causal LM file -> AutoModelForCausalLM + tokenizer",
                          description="Convert a GGUF causal LM (quantized weights are dequantized) into a float32 "
                                      "transformers directory with its tokenizer and chat template.")
    gguf.add_argument("src", type=Path, metavar="SRC_FILE")
    gguf.add_argument("dst", type=Path, metavar="DST_DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 done, 2 bad input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sota.formats.gguf import GGUFFormatError
    from sota.formats.whisper_ct2 import CT2FormatError

    try:
        out = _COMMANDS[args.command](args.src, args.dst)
    except (FileNotFoundError, NotADirectoryError, FileExistsError, GGUFFormatError, CT2FormatError) as err:
        # Bad input is the user's to fix, so one line saying what and where, not a traceback.
        message = str(err).replace("\n", " ")
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
