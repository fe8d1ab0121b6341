"""python -m sota.export RUN_DIR OUT [--quant MODE] [--format hf|gguf] | python -m sota.export --config OUT [overrides ...]"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

USAGE = """Write a model that loads in a fresh process (sota.load(OUT)):

    python -m sota.export RUN_DIR OUT [--quant MODE] [--format hf|gguf] [--device DEV]
        the final model of a finished run: pruning applied, adapters merged, quantized as the run was
    python -m sota.export --config OUT [hydra overrides ...]
        the model a configuration builds, untrained (pretrained or random weights): speed and memory studies

--quant MODE re-quantizes: adapters are folded into float weights (also over a QLoRA nf4 base), quantized
weights dequantized, then quant=MODE applied (int4_weight: torchao's layout on CUDA, sota's compact one on the
CPU, which only sota.load reads)."""


def main(argv: list[str] | None = None) -> int:
    from sota.compress.quant import MODES

    parser = argparse.ArgumentParser(prog="python -m sota.export", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="RUN_DIR (a finished run), or OUT with --config")
    parser.add_argument("rest", nargs="*", help="OUT (run export), or hydra overrides with --config")
    parser.add_argument("--config", action="store_true", help="export the configuration given by the overrides")
    parser.add_argument("--quant", choices=[m for m in MODES if m != "int8_bnb"], default=None,
                        help="re-quantize the merged float weights in this mode")
    parser.add_argument("--format", dest="fmt", choices=["hf", "gguf"], default="hf",
                        help="gguf: also the LLM as llm.gguf for llama.cpp (Llama-family LLMs with a BPE tokenizer; "
                             "F32/F16/BF16, int8_weight as Q8_0, int4_weight as Q4_1)")
    parser.add_argument("--device", default=None, help="where to build and quantize (default: cuda if available)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    from sota.errors import ConfigError
    from sota.export import rebuild, write

    try:
        if args.config:
            out, overrides = Path(args.source), list(args.rest)
            model, cfg, record = rebuild.configured_model(overrides, device)
            results, source = None, "the configuration " + (" ".join(overrides) or "(defaults)")
        else:
            if len(args.rest) != 1:
                parser.error("give RUN_DIR and OUT (or --config OUT [overrides])")
            run_dir, out = Path(args.source), Path(args.rest[0])
            if out.exists() and any(out.iterdir()):  # before the minutes of rebuilding
                parser.error(f"{out} exists and is not empty; an export is never overwritten")
            model, cfg, results, record = rebuild.trained_model(run_dir, device)
            source = f"the run {run_dir}"
        if args.quant:
            record["quant"] = write.requantize(model, cfg, args.quant, device)
        spec = write.export(model, cfg, record, out, source=source, device=device, results=results, fmt=args.fmt)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"sota.export: {err}", file=sys.stderr)
        return 2
    total = sum(spec["bytes"].values())
    print(f"{out}: {total / 2**20:.1f} MiB ({', '.join(f'{k} {v / 2**20:.1f}' for k, v in spec['bytes'].items())}); "
          f"load with sota.load({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
