"""A finished run's final model rebuilt in memory, by the path its own evaluation took: the model built from
the run's recorded config, the checkpoint's pruning replayed and QLoRA base and adapters restored, its
trained tensors loaded, then merge and post-training quantization. Or, for a configuration that was never
trained, the model `sota.tools.bench` builds from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sota import checkpoint
from sota.compress import pipeline
from sota.compress.plan import CompressionPlan
from sota.models.audio_llm import AudioLLM
from sota.models.build import build_model
from sota.run_dir import LAST_CHECKPOINT, RESULTS


def finished_run(run_dir: Path) -> tuple[DictConfig, dict[str, Any]]:
    """The resolved config and results.json of a run that finished (status ok); anything else is refused."""
    path = run_dir / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {RESULTS}; give the directory of a finished sota run")
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(results, dict) or results.get("status") != "ok":
        results = results if isinstance(results, dict) else {}
        raise ValueError(f"{path}: status {results.get('status')!r} ({results.get('error')}); only a finished run "
                         "(status ok) has a final model to export")
    return OmegaConf.create(results["config"]), results


class _CorpusWords:
    """The corpus vocabulary, read only if no checkpoint recorded one (building the data module may build the
    corpus)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def vocabulary(self) -> list[str]:
        from hydra.utils import instantiate

        return instantiate(self.cfg.data).vocabulary()


def trained_model(run_dir: Path, device: str) -> tuple[AudioLLM, DictConfig, dict[str, Any], dict[str, Any]]:
    """(model, config, results, compression record) of the run in `run_dir`, on `device`, in eval mode."""
    cfg, results = finished_run(run_dir)
    if cfg.task == "train":
        last = run_dir / LAST_CHECKPOINT
        if not last.is_file():
            raise FileNotFoundError(f"{last}: the final checkpoint of this training run is missing; it holds the "
                                    "trained tensors the export needs")
        OmegaConf.update(cfg, "ckpt_path", str(last), force_add=True)
        OmegaConf.update(cfg, "task", "eval")
    # Seeded as the run was: weights the checkpoint does not hold (a random-init frozen base) come out the same.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    start = checkpoint.starts(cfg)
    checkpoint.recorded_audio(cfg, start)
    model = build_model(cfg, checkpoint.vocabulary(_CorpusWords(cfg), start))
    checkpoint.init_from(model, start)
    if cfg.ckpt_path:
        record = checkpoint.restore_evaluated(model, cfg, start, device)
        holder = nn.Module()
        holder.model = model  # the checkpoint's keys are the Lightning module's: model.<...>
        checkpoint.load_evaluated(holder, cfg, start)
    else:
        if CompressionPlan.of(cfg).needs_calibration:
            raise ValueError(f"{run_dir}: an evaluation of an untrained, pruned model; pruning scored it on training "
                             "batches that the export does not rebuild. Export a run that trained it instead")
        record = pipeline.before_training(model, cfg, [], device)
    model.to(device)
    # quant=mixed: the map the run chose on its training batches, applied as it was
    record = pipeline.after_training(model, cfg, record, device,
                                     recorded_quant=(results.get("compression") or {}).get("quant"))
    return model.eval(), cfg, results, record


def configured_model(overrides: list[str], device: str) -> tuple[AudioLLM, DictConfig, dict[str, Any]]:
    """(model, config, compression record) of a configuration, untrained, as `sota.tools.bench` measures it."""
    from sota.tools import bench

    cfg = bench.compose(overrides)
    bench.check(cfg, device)
    model, record = bench.build(cfg, device)
    return model, cfg, record
