"""Task functions behind `run.py`: train (fit, then test) and eval (test a checkpoint). Each writes
results.json, predictions and logs into the run directory and returns the objective for sweepers."""

from __future__ import annotations

import gc
import itertools
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from sota import checkpoint
from sota.compress import distill, pipeline, prune
from sota.compress.distill import Distiller
from sota.compress.plan import CompressionPlan
from sota.config import as_dict, validate
from sota.data.datamodule import REAL, AudioDataModule
from sota.errors import ConfigError
from sota.lit_module import AudioLLMModule
from sota.measure import latency
from sota.measure.clips import real_clips
from sota.measure.throughput import TrainThroughput
from sota.models.build import build_model, encoder_fingerprint
from sota.models.footprint import footprint, peak_rss_mb
from sota.preemption import Interrupted, ResumableCheckpoint, SignalState, interruptible
from sota.progress import progress_bars
from sota.results import Results
from sota.run_dir import LAST_CHECKPOINT, RESULTS, SHARDED_TRAINED, check_output_dir
from sota.utils import gpu_share
from sota.utils.batches import to_device
from sota.utils.io import atomic_write_json, atomic_write_text
from sota.utils.provenance import device_name

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


def _calibration(plan: CompressionPlan, dm: AudioDataModule, device: str) -> list[dict[str, Any]]:
    """A few training batches for pruning's importance scores and quant=mixed's sensitivities (only then)."""
    if not plan.needs_calibration:
        return []
    batches = list(itertools.islice(dm.train_dataloader(), plan.calib_batches))
    if not batches:
        raise ValueError(f"{'prune' if plan.prune is not None else 'quant'}: no calibration batch: the training "
                         f"split has fewer than data.batch_size={dm.batch_size} clips")
    return [to_device(b, device) for b in batches]


def _evaluate_real(trainer: L.Trainer, module: AudioLLMModule, dm: AudioDataModule, out_dir: Path,
                   results: Results) -> None:
    """Score the real-speech set (data.real_test) beside the test split: metrics under `real/`."""
    if not dm.has_real():
        results.metrics["real/note"] = dm.real_note
        return
    t0 = time.perf_counter()
    module.test_split = REAL
    try:
        trainer.test(module, dataloaders=dm.real_dataloader(), verbose=False)
    finally:
        module.test_split = "test"
    rows = module.predictions.get(REAL, [])
    atomic_write_text(out_dir / "predictions_real.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    results.metrics.update({f"real/{k}": v for k, v in module.metrics.get(REAL, {}).items()})
    results.metrics["real/manifest"] = str(dm.manifests()[REAL])
    results.timing["real_eval_s"] = time.perf_counter() - t0


def run(cfg: DictConfig) -> float | None:
    """Build, train (task=train), evaluate and measure one configuration; always leaves a results.json."""
    out_dir = Path(cfg.paths.output_dir)
    check_output_dir(out_dir)
    validate(cfg)
    results = Results.start(cfg)
    session: dict[str, Any] = {"logger": False}
    t_start = time.perf_counter()
    exit_code = None
    with interruptible() as signals:
        try:
            _stages(cfg, out_dir, results, signals, session)
        except Interrupted as err:  # recorded, then the process exits as one stopped by that signal would
            results.status, results.error, results.traceback = "interrupted", f"Interrupted: {err}", traceback.format_exc()
            exit_code = err.exit_code
        except BaseException as err:
            results.status, results.error = "failed", f"{type(err).__name__}: {err}"
            results.traceback = traceback.format_exc()
            raise
        finally:
            if rank_zero_only.rank == 0:  # under DDP, rank zero alone writes results
                _write(results, out_dir, session["logger"], time.perf_counter() - t_start)
    if exit_code is not None:
        raise SystemExit(exit_code)
    objective = results.metrics.get(cfg.objective)
    return float(objective) if objective is not None else None


def _stages(cfg: DictConfig, out_dir: Path, results: Results, signals: SignalState, session: dict[str, Any]) -> None:
    """setup -> train -> evaluate -> measure; `session` carries what `run` closes afterwards."""
    from sota.plan.estimate import device_of, train_device

    # every CUDA device the run touches: a point may train on the GPU and measure on the CPU, or the reverse
    fraction = gpu_share.apply(device_of(cfg), train_device(cfg))
    if fraction is not None:
        results.provenance["cuda_memory_fraction"] = fraction
    L.seed_everything(cfg.seed, workers=True)
    s = _setup(cfg, out_dir, results, signals)
    session["logger"] = s.logger
    _train(s, cfg, out_dir, results)
    if s.module.sharding:
        s = _whole(s, cfg, out_dir, results, signals)
        if s is None:
            return  # FSDP: the other ranks leave after writing their shards
    trainer = _one_device(s.trainer, cfg, s.logger, out_dir)
    if trainer is None:
        return  # DDP: the other ranks leave after training; rank zero evaluates, measures and writes
    plan = CompressionPlan.of(cfg)
    results.compression = pipeline.after_training(s.model, cfg, s.record, s.device,
                                                  calib=_calibration(plan, s.dm, s.device) if plan.quant_calibration else None)
    _evaluate(s, trainer, out_dir, results)
    _measure(s, cfg, results, out_dir)
    if s.merger is not None:   # every generation prefill of the run: validation, test, real speech, measurement;
        # with tokens.training=merge, training's and calibration's teacher-forced forwards counted apart
        results.compression["tokens"] = s.merger.record()
    results.status = "ok"


@dataclass
class _Run:
    """What the setup stage builds and the later stages use."""

    dm: AudioDataModule
    model: Any
    module: AudioLLMModule
    trainer: L.Trainer
    logger: Any
    clock: TrainThroughput
    start: checkpoint.Starts
    record: dict[str, Any]
    device: str
    merger: Any = None        # tokens=merge: its hooks count what they merged


def _setup(cfg: DictConfig, out_dir: Path, results: Results, signals: SignalState, logger: Any = None) -> _Run:
    """Data, the checkpoints the run starts from, the model (compressed as configured), the trainer; every clip
    the run will use is read here, before any training: a bad test file costs seconds, not a run."""
    t0 = time.perf_counter()
    dm: AudioDataModule = instantiate(cfg.data)
    start = checkpoint.starts(cfg)
    audio, results.data["notes"] = checkpoint.recorded_audio(cfg, start)
    words = checkpoint.vocabulary(dm, start)
    model = build_model(cfg, words)
    init_record = checkpoint.init_from(model, start)
    problems: list[str] = []
    prune.check_model(model, cfg.get("prune"), problems)  # head counts exist only once the model does
    if problems:
        raise ConfigError(problems)
    logger, clock = logger or _make_logger(cfg), TrainThroughput()
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=_callbacks(cfg, out_dir, signals, clock),
                                     default_root_dir=str(out_dir))
    device = _device(trainer)
    plan = CompressionPlan.of(cfg)
    if plan.changes_encoder or checkpoint.changes_encoder(start):
        dm.cache_features = False  # cached features would come from the encoder before compression
    dm.attach_encoder(model.encoder.to(device), encoder_fingerprint(cfg), device=device)
    splits = (("train", "val") if cfg.task == "train" else ()) + ("test",) + ((REAL,) if dm.has_real() else ())
    results.data["splits"] = dm.load_splits(splits)
    distiller = None
    if cfg.task == "train" or not cfg.ckpt_path:
        # The teacher of recover=distill is the model before this run's compression.
        distiller = Distiller.of(model, cfg.get("recover")) if cfg.task == "train" else None
        # eval without ckpt_path starts from init_from: compressed as configured, evaluated untrained.
        record = pipeline.before_training(model, cfg, _calibration(plan, dm, device), device)
    else:
        record = checkpoint.restore_evaluated(model, cfg, start, device)
    if init_record is not None:
        record["init_from"] = init_record
    merger = pipeline.merge_tokens(model, cfg)   # on the layers compression left, before training (training=merge)
    record["recover"] = distiller.record() if distiller is not None else {"method": distill.settings(cfg.get("recover"))["method"]}
    model.to(device)
    module = AudioLLMModule(model, instantiate(cfg.optimizer), instantiate(cfg.scheduler),
                            generate=as_dict(cfg.generate), run_config=results.config, vocabulary=words,
                            compression=record, audio=audio, distiller=distiller,
                            param_groups=as_dict(cfg.get("param_groups")) if cfg.get("param_groups") else None)
    results.timing["setup_s"] = time.perf_counter() - t0
    return _Run(dm, model, module, trainer, logger, clock, start, record, device, merger)


def _callbacks(cfg: DictConfig, out_dir: Path, signals: SignalState, clock: TrainThroughput) -> list[Any]:
    every = cfg.get("resume_every_n_steps")
    callbacks = [ResumableCheckpoint(out_dir / LAST_CHECKPOINT, int(every) if every else None, signals), clock,
                 *progress_bars(cfg.trainer)]
    if cfg.get("checkpoint_every_n_steps"):  # a learning curve: evaluate each later with task=eval ckpt_path=
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=out_dir / "checkpoints", filename="step{step}", auto_insert_metric_name=False,
            every_n_train_steps=int(cfg.checkpoint_every_n_steps), save_top_k=-1))
    return callbacks


def _train(s: _Run, cfg: DictConfig, out_dir: Path, results: Results) -> None:
    """task=train: fit (resuming an interrupted run of this directory); task=eval: load the evaluated tensors."""
    if cfg.task == "train":
        if cfg.get("compile", "none") != "none":
            s.model.compile_training(cfg.compile)
        t1 = time.perf_counter()
        s.trainer.fit(s.module, datamodule=s.dm, ckpt_path=checkpoint.resume_from(cfg, out_dir, results))
        results.timing["train_s"] = time.perf_counter() - t1
        s.record["recover"]["param_groups"] = s.module.param_group_record  # the rate each group trained at
        if s.module.distiller is not None:   # the teacher is not part of the model evaluated and measured
            s.module.distiller = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        results.timing["train_steps"] = int(s.trainer.global_step)
        results.timing.update(s.clock.summary())
        s.model.to(s.device)  # Lightning's teardown left it on the CPU; compression and evaluation run here
    elif cfg.ckpt_path:
        checkpoint.load_evaluated(s.module, cfg, s.start)
    results.provenance["world_size"] = s.trainer.world_size  # processes that trained (DDP: one per device)


def _evaluate(s: _Run, trainer: L.Trainer, out_dir: Path, results: Results) -> None:
    """The test split, then the real-speech set; predictions written beside results.json."""
    t2 = time.perf_counter()
    trainer.test(s.module, datamodule=s.dm, verbose=False)
    results.timing["eval_s"] = time.perf_counter() - t2
    s.model.to(s.device)  # back from the CPU, where the test's teardown put it: it is measured on `device`
    rows = s.module.predictions.get("test", [])
    atomic_write_text(out_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out_dir / "predictions.csv", _csv(rows))
    results.metrics.update(s.module.metrics.get("test", {}))
    if s.module.agreement is not None:
        results.agreement = s.module.agreement.summary()
    _evaluate_real(trainer, s.module, s.dm, out_dir, results)
    s.model.to(s.device)


def _measure(s: _Run, cfg: DictConfig, results: Results, out_dir: Path) -> None:
    """Size, memory and (measure.mode) latency of the model as evaluated; what the run's data was."""
    t3 = time.perf_counter()
    model, dm, test_set = s.model, s.dm, s.dm.datasets["test"]
    lengths = [len(w) for w in test_set.waves]
    tokens = model.connector.tokens_for(model.encoder.frames_for(lengths), model.encoder.padded_frames(lengths))
    results.model = {**footprint(model), "audio_tokens": int(tokens.max()),
                     "audio_tokens_mean": float(tokens.float().mean())}
    # The run's own peak (training included) is read before measuring: strict mode resets the counters.
    run_peak = _peak_memory_mb(s.device)
    results.efficiency = {"device": device_name(s.device), "mode": "none", "peak_memory_mb": run_peak,
                          "peak_rss_mb": peak_rss_mb()}
    if cfg.get("measure") is not None and cfg.measure.mode != "none":
        model.eval()
        if cfg.measure.get("from_export"):
            from sota.export import measured as from_export

            measured = from_export.measure(model, cfg, results.compression, results.to_dict(), out_dir, s.device)
        else:
            clips = real_clips(test_set, int(cfg.measure.real_clips))
            measured = latency.measure(model, cfg.measure, s.device, clips, backend=cfg.generate.backend)
        results.efficiency = {**results.efficiency, **measured}
    results.efficiency["run_peak_memory_mb"] = run_peak
    results.timing["measure_s"] = time.perf_counter() - t3
    results.data.update({
        "train": len(dm.datasets["train"]) if "train" in dm.datasets else 0, "test": len(test_set),
        "real": len(dm.datasets[REAL]) if REAL in dm.datasets else 0, "skipped": len(dm.skipped),
        "skipped_files": dm.skipped[:50], "speakers": s.module.audio.get("speakers"),
        "chunked": dict(dm.chunked), "context_s": float(model.encoder.context_s), "bucket_s": model.encoder.bucket_s,
        "tokens_per_s": s.module.audio.get("tokens_per_s")})


def _write(results: Results, out_dir: Path, logger: Any, total_s: float) -> None:
    """results.json written once (atomically), W&B closed with its summary, and the run's one-line summary."""
    results.timing["total_s"] = total_s
    doc = results.to_dict()
    atomic_write_json(out_dir / RESULTS, doc)
    if logger and hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
        _close_wandb(logger, doc)
    log.info("%s", results.summary_line(out_dir))


def _whole(s: _Run, cfg: DictConfig, out_dir: Path, results: Results, signals: SignalState) -> _Run | None:
    """trainer=fsdp: each rank holds a shard of the trained model. Every rank takes part in writing the trained
    tensors into one checkpoint (gathered on rank zero); rank zero then rebuilds the model whole from it on its
    own device, as task=eval of that checkpoint would, and the other ranks return None."""
    path = out_dir / SHARDED_TRAINED
    s.trainer.save_checkpoint(path)
    sharded = s.module.sharding
    results.provenance["sharding"] = sharded
    if torch.distributed.is_initialized():  # training is over: no collective follows
        torch.distributed.destroy_process_group()
    if not s.trainer.is_global_zero:
        return None
    root = s.trainer.strategy.root_device
    whole_cfg = OmegaConf.merge(cfg, {"task": "eval", "ckpt_path": str(path)})
    OmegaConf.update(whole_cfg, "trainer.strategy", "auto", merge=False)
    OmegaConf.update(whole_cfg, "trainer.devices", [root.index] if root.type == "cuda" else 1, merge=False)
    kept = {"timing": dict(results.timing), "data": dict(results.data)}
    whole = _setup(whole_cfg, out_dir, results, signals, logger=s.logger)
    checkpoint.load_evaluated(whole.module, whole_cfg, whole.start)
    results.timing, results.data = {**results.timing, **kept["timing"]}, {**results.data, **kept["data"]}
    whole.record["recover"] = s.record["recover"]
    whole.module.sharding = sharded
    log.info("fsdp: rank zero rebuilt the trained model whole from %s for evaluation", path)
    return whole


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
