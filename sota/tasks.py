"""Task functions behind `run.py`: train (fit, then test) and eval (test a checkpoint). Each writes
results.json, predictions and logs into the run directory and returns the objective for sweepers."""

from __future__ import annotations

import itertools
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from sota.compress import pipeline, prune
from sota.config import ConfigError, as_dict, enabled, validate
from sota.data.datamodule import REAL, AudioDataModule
from sota.measure import latency
from sota.measure.footprint import footprint, peak_rss_mb
from sota.measure.throughput import TrainThroughput
from sota.models.build import build_model, encoder_fingerprint
from sota.models.lit_module import AudioLLMModule
from sota.preemption import Interrupted, ResumableCheckpoint, SignalState, interruptible
from sota.progress import progress_bars
from sota.run_dir import LAST_CHECKPOINT, RESULTS, check_output_dir, resume_checkpoint
from sota.utils.io import atomic_write_json, atomic_write_text
from sota.utils.provenance import device_name, git_sha, versions

log = logging.getLogger(__name__)

def _make_logger(cfg: DictConfig) -> Any:
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return False
    try:
        return instantiate(cfg.logger)
    except Exception as err:  # W&B problems must never cost a run: fall back to CSV
        log.warning("logger %s failed (%s); logging to CSV instead", cfg.logger._target_, err)
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(cfg.paths.output_dir, name="csv")


def _device(trainer: L.Trainer) -> str:
    root = trainer.strategy.root_device
    return str(root) if root.type == "cuda" else "cpu"


def _load_trainable(module: AudioLLMModule, ckpt_path: str, ckpt: dict[str, Any]) -> dict[str, Any]:
    missing_trainable = [n for n, p in module.named_parameters() if p.requires_grad and n not in ckpt["state_dict"]]
    if missing_trainable:
        raise ValueError(f"{ckpt_path} lacks {len(missing_trainable)} trainable tensors of this model "
                         f"(e.g. {missing_trainable[0]}): it was saved from a different configuration")
    module.load_state_dict(ckpt["state_dict"], strict=False)
    return ckpt


def _prune_targets(cfg: DictConfig) -> list[str]:
    node = cfg.get("prune")
    return list(node.get("targets", [])) if enabled(node) else []


def _compresses_encoder(cfg: DictConfig) -> bool:
    quant, lora = cfg.get("quant"), cfg.get("lora")
    return ("encoder" in _prune_targets(cfg)
            or (enabled(quant, "mode") and "encoder" in quant.get("targets", []))
            or (enabled(lora) and "encoder" in lora.get("on", [])))


def _calibration(cfg: DictConfig, dm: AudioDataModule, device: str) -> list[dict[str, Any]]:
    """A few training batches for pruning's importance scores (only when pruning)."""
    if not _prune_targets(cfg):
        return []
    batches = list(itertools.islice(dm.train_dataloader(), int(cfg.prune.get("calib_batches", 4))))
    if not batches:
        raise ValueError(f"prune: no calibration batch: the training split has fewer than data.batch_size="
                         f"{dm.batch_size} clips")
    return [{k: _to(v, device) for k, v in b.items()} for b in batches]


def _to(value: Any, device: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _restore_structure(model: Any, cfg: DictConfig, ckpt: dict[str, Any], device: str) -> dict[str, Any]:
    """task=eval: rebuild what compression changed before training (pruned structure, QLoRA base, adapters),
    so the checkpoint's trainable tensors fit; merge and post-training quantization follow as in training."""
    record = ckpt.get("sota_compression") or {}
    if enabled(record.get("prune")):
        prune.replay(model, record["prune"])
    rest = pipeline.before_training(model, OmegaConf.merge(cfg, {"prune": {"method": "none"}}), [], device)
    rest["prune"] = record.get("prune", rest["prune"])
    return rest


def _trained_from(cfg: DictConfig, evaluated: dict[str, Any] | None) -> str | None:
    """task=eval of a checkpoint whose run started from another (init_from): that one's path, so the same
    starting model is rebuilt before this checkpoint's own tensors are loaded."""
    if evaluated is None:
        return None
    record = evaluated.get("sota_compression") or {}
    path = (record.get("init_from") or {}).get("path")
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"{cfg.ckpt_path} was trained from init_from={path}, which no longer exists: "
                                "the evaluation needs that checkpoint too")
    return path


def _vocabulary(dm: AudioDataModule, *checkpoints: dict[str, Any] | None) -> list[str]:
    """The first given checkpoint's vocabulary (word-level tokenizers must match it), else the corpus'."""
    for ckpt in checkpoints:
        if ckpt is not None and "sota_vocabulary" in ckpt:
            return ckpt["sota_vocabulary"]
    return sorted(dm.vocabulary())


def _recorded_audio(cfg: DictConfig, *checkpoints: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """What the first given checkpoint was trained with (encoder context, token rate), and notes. The encoder
    is built with the trained context whatever `encoder.context_s` says: a model trained on 5 s windows has
    never seen a 30 s encoding, and clips longer than its context are encoded in chunks of it instead."""
    for ckpt in checkpoints:
        record = (ckpt or {}).get("sota_audio")
        if not record:
            continue
        notes = []
        trained = record.get("context_s")
        if trained is not None and abs(float(trained) - float(cfg.encoder.context_s)) > 1e-9:
            notes.append(f"encoder.context_s={cfg.encoder.context_s} replaced by the checkpoint's trained context "
                         f"{trained} s (longer clips are encoded in chunks of it)")
            log.warning(notes[-1])
            OmegaConf.update(cfg, "encoder.context_s", float(trained), force_add=False)
        # Checkpoints from before buckets existed were trained on whole contexts (bucket_s null).
        bucket = record.get("bucket_s")
        if bucket != cfg.encoder.get("bucket_s"):
            notes.append(f"encoder.bucket_s={cfg.encoder.get('bucket_s')} replaced by the checkpoint's {bucket}: "
                         "its features were padded that way in training")
            log.warning(notes[-1])
            OmegaConf.update(cfg, "encoder.bucket_s", bucket, force_add=True)
        return dict(record), notes
    return {"context_s": float(cfg.encoder.context_s), "bucket_s": cfg.encoder.get("bucket_s")}, []


def _evaluate_real(trainer: L.Trainer, module: AudioLLMModule, dm: AudioDataModule, out_dir: Path,
                   results: dict[str, Any]) -> None:
    """Score the real-speech set (data.real_test) beside the test split: metrics under `real/`."""
    if not dm.has_real():
        results["metrics"]["real/note"] = dm.real_note
        return
    t0 = time.perf_counter()
    module.test_split = REAL
    try:
        trainer.test(module, dataloaders=dm.real_dataloader(), verbose=False)
    finally:
        module.test_split = "test"
    rows = module.predictions.get(REAL, [])
    atomic_write_text(out_dir / "predictions_real.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    results["metrics"].update({f"real/{k}": v for k, v in module.metrics.get(REAL, {}).items()})
    results["metrics"]["real/manifest"] = str(dm.manifests()[REAL])
    results["timing"]["real_eval_s"] = time.perf_counter() - t0


def run(cfg: DictConfig) -> float | None:
    """Build, train (task=train), evaluate and measure one configuration; always leaves a results.json."""
    out_dir = Path(cfg.paths.output_dir)
    check_output_dir(out_dir)
    validate(cfg)
    results: dict[str, Any] = {
        "status": "failed", "error": None, "config": as_dict(cfg),
        "metrics": {"asr/wer": None, "aac/cider_d": None, "aac/spider": None, "real/asr/wer": None,
                    "real/asr/cer": None},
        "model": {}, "efficiency": {}, "compression": {}, "timing": {"train_s": None, "eval_s": None},
        "data": {}, "provenance": {"git_sha": git_sha(), "seed": int(cfg.seed), "versions": versions()},
    }
    session: dict[str, Any] = {"logger": False}
    t_start = time.perf_counter()
    exit_code = None
    with interruptible() as signals:
        try:
            _run(cfg, out_dir, results, signals, session)
        except Interrupted as err:  # recorded, then the process exits as one stopped by that signal would
            results.update(status="interrupted", error=f"Interrupted: {err}", traceback=traceback.format_exc())
            exit_code = err.exit_code
        except BaseException as err:
            results.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
            raise
        finally:
            if rank_zero_only.rank == 0:  # under DDP, rank zero alone writes results
                results["timing"]["total_s"] = time.perf_counter() - t_start
                atomic_write_json(out_dir / RESULTS, results)
                logger = session["logger"]
                if logger and hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
                    _close_wandb(logger, results)
                log.info("%s", summary_line(results, out_dir))
    if exit_code is not None:
        raise SystemExit(exit_code)
    objective = results["metrics"].get(cfg.objective)
    return float(objective) if objective is not None else None


def summary_line(results: dict[str, Any], out_dir: Path) -> str:
    """The run in one line: status, the headline metrics it has, wall time and where results.json is."""
    metrics = results.get("metrics") or {}
    shown = [f"{k} {metrics[k]:.3f}" for k in ("asr/wer", "aac/cider_d", "real/asr/wer")
             if isinstance(metrics.get(k), (int, float))]
    status = results["status"] if results["status"] == "ok" else f"{results['status']} ({results.get('error')})"
    total = (results.get("timing") or {}).get("total_s")
    wall = f"{total:.0f} s" if isinstance(total, (int, float)) else "?"
    line = " | ".join(["sota: " + status, *shown, wall, str(out_dir / RESULTS)])
    if any(isinstance(metrics.get(k), (int, float)) and metrics[k] > 1 for k in ("asr/wer", "real/asr/wer")):
        # WER counts inserted words too: a model that rambles past the reference scores above 1.
        line += " | WER > 1: the answers hold more wrong or extra words than the references have words"
    return line


def _run(cfg: DictConfig, out_dir: Path, results: dict[str, Any], signals: SignalState,
         session: dict[str, Any]) -> None:
    """The body of `run`: fills `results`; `session` carries what `run` closes afterwards."""
    L.seed_everything(cfg.seed, workers=True)
    t0 = time.perf_counter()
    dm: AudioDataModule = instantiate(cfg.data)
    # Each checkpoint is read once: the one evaluated (task=eval) and the one a run starts from.
    evaluated = pipeline.read_checkpoint(cfg.ckpt_path) if cfg.task == "eval" and cfg.ckpt_path else None
    init_path = cfg.get("init_from") or _trained_from(cfg, evaluated)
    init = pipeline.read_checkpoint(init_path) if init_path else None
    audio, notes = _recorded_audio(cfg, evaluated, init)
    results["data"]["notes"] = notes
    words = _vocabulary(dm, evaluated, init)
    model = build_model(cfg, words)
    init_record = pipeline.load_trained(model, init_path, init) if init is not None else None
    problems: list[str] = []
    prune.check_model(model, cfg.get("prune"), problems)  # head counts exist only once the model does
    if problems:
        raise ConfigError(problems)
    logger = session["logger"] = _make_logger(cfg)
    clock = TrainThroughput()
    every = cfg.get("resume_every_n_steps")
    callbacks = [ResumableCheckpoint(out_dir / LAST_CHECKPOINT, int(every) if every else None, signals), clock,
                 *progress_bars(cfg.trainer)]
    if cfg.get("checkpoint_every_n_steps"):  # a learning curve: evaluate each later with task=eval ckpt_path=
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=out_dir / "checkpoints", filename="step{step}", auto_insert_metric_name=False,
            every_n_train_steps=int(cfg.checkpoint_every_n_steps), save_top_k=-1))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks,
                                     default_root_dir=str(out_dir))
    device = _device(trainer)
    if _compresses_encoder(cfg) or (init is not None and pipeline.trained_changes_encoder(init)):
        dm.cache_features = False  # cached features would come from the encoder before compression
    dm.attach_encoder(model.encoder.to(device), encoder_fingerprint(cfg), device=device)
    # Every clip the run will use is read before any training: a bad test file costs seconds, not a run.
    splits = (("train", "val") if cfg.task == "train" else ()) + ("test",) + ((REAL,) if dm.has_real() else ())
    results["data"]["splits"] = dm.load_splits(splits)
    if cfg.task == "train" or not cfg.ckpt_path:
        # eval without ckpt_path starts from init_from: compressed as configured, evaluated untrained.
        record = pipeline.before_training(model, cfg, _calibration(cfg, dm, device), device)
    else:
        record = _restore_structure(model, cfg, evaluated, device)
    if init_record is not None:
        record["init_from"] = init_record
    model.to(device)
    module = AudioLLMModule(model, instantiate(cfg.optimizer), instantiate(cfg.scheduler),
                            generate=as_dict(cfg.generate), run_config=results["config"], vocabulary=words,
                            compression=record, audio=audio)
    results["timing"]["setup_s"] = time.perf_counter() - t0

    if cfg.task == "train":
        if cfg.get("compile", "none") == "llm":
            model.compile_training()
        t1 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=_resume_from(cfg, out_dir, results))
        results["timing"]["train_s"] = time.perf_counter() - t1
        results["timing"]["train_steps"] = int(trainer.global_step)
        results["timing"].update(clock.summary())
        model.to(device)  # Lightning's teardown left it on the CPU; compression and evaluation run here
    elif cfg.ckpt_path:
        _load_trainable(module, cfg.ckpt_path, evaluated)
    results["provenance"]["world_size"] = trainer.world_size  # processes that trained (DDP: one per device)
    trainer = _one_device(trainer, cfg, logger, out_dir)
    if trainer is None:
        return  # DDP: the other ranks leave after training; rank zero evaluates, measures and writes
    results["compression"] = pipeline.after_training(model, cfg, record, device)

    t2 = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    results["timing"]["eval_s"] = time.perf_counter() - t2
    model.to(device)  # back from the CPU, where the test's teardown put it: it is measured on `device`

    rows = module.predictions.get("test", [])
    atomic_write_text(out_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out_dir / "predictions.csv", _csv(rows))
    results["metrics"].update(module.metrics.get("test", {}))
    if module.agreement is not None:
        results["agreement"] = module.agreement.summary()
    _evaluate_real(trainer, module, dm, out_dir, results)
    model.to(device)
    test_set = dm.datasets["test"]
    lengths = [len(w) for w in test_set.waves]
    tokens = model.connector.tokens_for(model.encoder.frames_for(lengths), model.encoder.padded_frames(lengths))
    results["model"] = {**footprint(model), "audio_tokens": int(tokens.max()),
                        "audio_tokens_mean": float(tokens.float().mean())}
    # The run's own peak (training included) is read before measuring: strict mode resets the counters.
    run_peak = _peak_memory_mb(device)
    results["efficiency"] = {"device": device_name(device), "mode": "none", "peak_memory_mb": run_peak,
                             "peak_rss_mb": peak_rss_mb()}
    if cfg.get("measure") is not None and cfg.measure.mode != "none":
        model.eval()
        clips = latency.real_clips(test_set, int(cfg.measure.real_clips))
        measured = latency.measure(model, cfg.measure, device, clips, backend=cfg.generate.backend)
        results["efficiency"] = {**results["efficiency"], **measured}
    results["efficiency"]["run_peak_memory_mb"] = run_peak
    results["timing"]["measure_s"] = time.perf_counter() - t2 - results["timing"]["eval_s"]
    results["data"].update({
        "train": len(dm.datasets["train"]) if "train" in dm.datasets else 0, "test": len(test_set),
        "real": len(dm.datasets[REAL]) if REAL in dm.datasets else 0, "skipped": len(dm.skipped),
        "skipped_files": dm.skipped[:50], "speakers": module.audio.get("speakers"),
        "chunked": dict(dm.chunked), "context_s": float(model.encoder.context_s), "bucket_s": model.encoder.bucket_s,
        "tokens_per_s": module.audio.get("tokens_per_s")})
    results["status"] = "ok"


def _resume_from(cfg: DictConfig, out_dir: Path, results: dict[str, Any]) -> str | None:
    """`ckpt_path` when given; else the checkpoint an interrupted run left in this directory (the same command
    run again continues it), recorded in results.json."""
    if cfg.ckpt_path:
        return str(cfg.ckpt_path)
    last = resume_checkpoint(out_dir)
    if last is None:
        return None
    step = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
    log.warning("resuming the interrupted run in %s from %s (step %d)", out_dir, last, step)
    results["resumed_from"] = {"path": str(last), "step": step}
    return str(last)


def _one_device(trainer: L.Trainer, cfg: DictConfig, logger: Any, out_dir: Path) -> L.Trainer | None:
    """The Trainer for evaluation: after multi-device training (DDP), one on global rank zero's device alone, and
    None on the other ranks. A distributed sampler would split the test set across ranks and pad it with
    repeated clips; here rank zero generates on all of it, in the same batches as a one-device run, so the
    metrics are that run's."""
    if trainer.num_devices * trainer.num_nodes == 1:
        return trainer
    if torch.distributed.is_initialized():  # training is over: no collective follows
        torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:
        return None
    root = trainer.strategy.root_device
    return instantiate(cfg.trainer, devices=[root.index] if root.type == "cuda" else 1, num_nodes=1,
                       strategy="auto", logger=logger, default_root_dir=str(out_dir))


def _csv(rows: list[dict[str, Any]]) -> str:
    """id,task,prediction: the layout a submission system takes."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "task", "prediction"])
    writer.writerows([r["id"], r["task"], r["prediction"]] for r in rows)
    return buf.getvalue()


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return peak_rss_mb()


def _close_wandb(logger: Any, results: dict[str, Any]) -> None:
    """Summary metrics into the W&B run, then close it even if the run failed (one W&B run per process)."""
    try:
        import wandb

        if wandb.run is not None:
            sections = {"test": results["metrics"], "model": results["model"],
                        "agreement": results.get("agreement") or {}}
            flat = {f"{prefix}/{k}": v for prefix, section in sections.items() for k, v in section.items()
                    if isinstance(v, (int, float))}
            wandb.run.summary.update({**flat, "status": results["status"]})
            wandb.finish(exit_code=0 if results["status"] == "ok" else 1)
    except Exception as err:  # the local results.json is the source of truth
        log.warning("closing W&B failed: %s", err)
