"""Does an export answer as the run's model did? Greedy answers of both models on the same clips of the run's
test split, compared one by one.

    python -m sota.export.verify RUN_DIR OUT [--device DEV] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from sota.utils.batches import to_device



def test_batches(cfg: DictConfig, model: Any, device: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The run's test split as encoder-input batches (no cached features: each model runs its own encoder)."""
    from hydra.utils import instantiate

    from sota.models.build import encoder_fingerprint

    dm = instantiate(cfg.data)
    dm.cache_features = False
    dm.attach_encoder(model.encoder, encoder_fingerprint(cfg), device=device)
    dm.load_splits(("test",))
    out, seen = [], 0
    for batch in dm.test_dataloader():
        out.append(batch)
        seen += len(batch["ids"])
        if limit and seen >= limit:
            break
    return out


def answers(model: Any, batches: list[dict[str, Any]], device: str, max_new_tokens: int) -> list[str]:
    out: list[str] = []
    with torch.no_grad():
        for batch in batches:
            out += model.generate(to_device(batch, device), max_new_tokens=max_new_tokens)
    return out


def first_logits(model: Any, batch: dict[str, Any], device: str) -> torch.Tensor:
    """Each clip's logits of the first answer token (one uncached forward): the models' numbers, beyond argmax."""
    with torch.no_grad():
        rows = model.next_token_logits(to_device(batch, device), {i: [] for i in range(len(batch["tasks"]))})
    return torch.stack([rows[i].float() for i in sorted(rows)])


def compare(run_dir: Path, export_dir: Path, device: str, limit: int | None = None) -> dict[str, Any]:
    """Answers and first-token logits of the run's rebuilt model and of the export on the run's test clips."""
    from sota.export import read, rebuild

    model, cfg, _, _ = rebuild.trained_model(run_dir, device)
    batches = test_batches(cfg, model, device, limit)
    budget = int(cfg.generate.get("max_new_tokens", 64))
    before = answers(model, batches, device, budget)
    logits = first_logits(model, batches[0], device)
    del model
    loaded = read.load(export_dir, device)
    after = answers(loaded, batches, device, budget)
    diff = (first_logits(loaded, batches[0], device) - logits).abs().max().item()
    same = sum(a == b for a, b in zip(before, after))
    return {"clips": len(before), "identical": same, "max_logit_diff": diff, "pairs": list(zip(before, after))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sota.export.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, default=None, help="at most this many test clips")
    args = parser.parse_args(argv)
    from sota.errors import ConfigError
    from sota.export import read, rebuild

    try:
        rebuild.finished_run(args.run_dir)      # both checked before the run's model is rebuilt (minutes)
        read.spec(args.export_dir)
        result = compare(args.run_dir, args.export_dir, args.device, args.limit)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"sota.export.verify: {err}", file=sys.stderr)
        return 2
    for a, b in result["pairs"]:
        if a != b:
            print(f"run:    {a}\nexport: {b}\n")
    print(f"{result['identical']} of {result['clips']} answers identical; first-token logits differ by at most "
          f"{result['max_logit_diff']:.3g}")
    return 0 if result["identical"] == result["clips"] else 1


if __name__ == "__main__":
    sys.exit(main())
