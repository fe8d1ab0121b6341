"""Config validation in one pass, before any heavy work: every problem is reported at once, each naming its
key and the valid values (Hydra itself reports unknown groups, options and keys)."""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sota import param_groups, schema
from sota.errors import ConfigError

TASKS = ("train", "eval")
COMPILE = ("none", "llm", "layers")  # what training runs through torch.compile
SEED_RANGE = (0, 2**32 - 1)  # what Lightning's seed_everything accepts
# Groups whose keys are checked against their option files (prune checks its own against prune.DEFAULTS).
CHECKED_GROUPS = ("lora", "quant", "connector", "encoder", "generate", "measure", "corpus", "data")
ALWAYS_VALID = frozenset({"_target_", "_partial_"})


@functools.cache
def group_keys(conf: Path | None = None) -> dict[str, frozenset[str]]:
    """The valid keys of each of CHECKED_GROUPS: the top-level keys of any of its option files (conf/<group>/*.yaml),
    and of any file elsewhere packaged into it (`# @package generate` in conf/backend/), plus _target_ and
    _partial_. Read once per conf directory."""
    if conf is None:
        from sota.paths import CONF as conf
    keys: dict[str, set[str]] = {g: set(ALWAYS_VALID) for g in CHECKED_GROUPS}
    for file in sorted(Path(conf).rglob("*.yaml")):
        group = file.parent.relative_to(conf).as_posix()
        header = re.search(r"^#\s*@package\s+(\S+)", file.read_text(), re.MULTILINE)
        package = header.group(1) if header else group
        package = group if package == "_group_" else package
        node = OmegaConf.load(file)
        if package in keys and isinstance(node, DictConfig):
            keys[package].update(str(k) for k in node.keys() if k != "defaults")
    return {g: frozenset(k) for g, k in keys.items()}


def _generation_fields() -> set[str]:
    """Arguments of transformers' generate (GenerationConfig fields): extra `generate` keys are passed to it."""
    from transformers import GenerationConfig

    return set(GenerationConfig().to_dict())


def _unknown_keys(cfg: DictConfig, out: list[str]) -> None:
    """A misspelt key (`+lora.rnak=4`) would otherwise be carried along unread while the default applies."""
    valid = group_keys()
    for group in CHECKED_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        unknown = sorted(str(k) for k in node.keys() if k not in valid[group])
        candidates = set(valid[group])
        if group == "generate" and unknown:
            candidates |= _generation_fields()
            unknown = [k for k in unknown if k not in candidates]
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(candidates), n=1)
            hint = f" (did you mean {group}.{close[0]}?)" if close else ""
            extra = " or an argument of transformers' generate" if group == "generate" else ""
            out.append(f"{group}.{key} is not a key of the {group} group{hint}; valid: "
                       f"{', '.join(sorted(valid[group] - ALWAYS_VALID))}{extra}")


def _seed(seed: Any, out: list[str]) -> None:
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        out.append(f"seed must be an integer in [{low}, {high}], got {seed!r}")


def _connector(c: DictConfig, out: list[str]) -> None:
    if c.window_s <= 0:
        out.append(f"connector.window_s must be > 0 seconds, got {c.window_s}")
    if c.stride_s <= 0:
        out.append(f"connector.stride_s must be > 0 seconds, got {c.stride_s}")
    elif c.window_s > 0 and c.stride_s > c.window_s:
        out.append(f"connector.stride_s ({c.stride_s}) must be <= connector.window_s ({c.window_s})")
    if str(c.get("_target_", "")).endswith("WindowProjector"):
        if c.stride_s != c.window_s:
            out.append(f"connector.stride_s ({c.stride_s}) must equal connector.window_s ({c.window_s}) for "
                       "connector=projector (it concatenates each window's frames)")
        return
    if c.num_queries < 1:
        out.append(f"connector.num_queries must be >= 1, got {c.num_queries}")
    if c.layers < 1:
        out.append(f"connector.layers must be >= 1, got {c.layers}")
    if c.hidden_size % c.heads:
        out.append(f"connector.hidden_size ({c.hidden_size}) must be divisible by connector.heads ({c.heads})")


def _encoder(c: DictConfig, data: DictConfig, out: list[str]) -> None:
    from sota.models.encoder import settings_problems

    out.extend(settings_problems(c.context_s, c.get("dtype", "float32"), c.get("bucket_s"), c.get("second")))
    if c.path is None and c.config is None:
        out.append("encoder: set encoder.path (pretrained weights) or encoder.config (random init)")


def _data(c: DictConfig, out: list[str]) -> None:
    from sota.data.manifest import on_bad_file_problem

    problem = on_bad_file_problem(c.on_bad_file)
    if problem:
        out.append(problem)
    for key in ("batch_size", "eval_batch_size"):
        if c[key] < 1:
            out.append(f"data.{key} must be >= 1, got {c[key]}")
    bad = [t for t in c.tasks if t not in ("asr", "aac")]
    if bad or not c.tasks:
        out.append(f"data.tasks must be a non-empty subset of [asr, aac], got {list(c.tasks)}")


def _generate(c: DictConfig, out: list[str]) -> None:
    if c.max_new_tokens < 1:
        out.append(f"generate.max_new_tokens must be >= 1, got {c.max_new_tokens}")
    if c.num_beams < 1:
        out.append(f"generate.num_beams must be >= 1, got {c.num_beams}")
    from sota.models.decoding import validate as validate_backend

    validate_backend(c.get("backend", "eager"), c.num_beams, out, c.get("compare_with"))


def _strategy_name(strategy: Any) -> str:
    """`trainer.strategy` as a name: the string itself, or the class a `_target_` node instantiates."""
    if isinstance(strategy, (DictConfig, dict)):
        return str(strategy.get("_target_", "")).rsplit(".", 1)[-1]
    return str(strategy if strategy is not None else "auto")


def _trainer(c: DictConfig, out: list[str]) -> None:
    """GPU presets (trainer=gpu, ddp, fsdp) on a machine without CUDA, more GPUs than it has, and sharded
    strategies, refused before any work (Lightning itself would only say so after the corpus and the model)."""
    import torch

    accelerator = str(c.get("accelerator", "cpu"))
    devices = c.get("devices", 1)
    strategy = _strategy_name(c.get("strategy"))
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            out.append(f"trainer.accelerator is {accelerator!r} (trainer.strategy {strategy}, trainer.devices "
                       f"{devices}) but this machine has no usable CUDA device (torch {torch.__version__}, "
                       "torch.cuda.is_available() is False); train on the CPU with trainer=cpu, or "
                       "trainer=ddp_cpu for two processes")
        else:
            count = torch.cuda.device_count()
            wanted = list(devices) if not isinstance(devices, (int, str)) else []
            if isinstance(devices, int) and devices > count or any(int(i) >= count for i in wanted):
                out.append(f"trainer.devices is {devices} but this machine has {count} CUDA device(s)")
    if strategy in ("FSDPStrategy", "fsdp") or "deepspeed" in strategy.lower():
        out.append(f"trainer.strategy is {strategy}; sota shards with FSDP2 through Lightning's "
                   "ModelParallelStrategy: use trainer=fsdp (GPUs) or trainer=fsdp_cpu")
    if strategy == "ModelParallelStrategy":
        if isinstance(devices, bool) or not isinstance(devices, int):
            out.append(f"trainer=fsdp shards over trainer.devices processes, which must be an integer; got {devices!r}")
        tp = (c.get("strategy") or {}).get("tensor_parallel_size", "auto")
        if tp != 1:
            out.append(f"trainer.strategy.tensor_parallel_size must be 1 (sota shards data-parallel only, "
                       f"sota/models/sharding.py); got {tp!r}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem in `cfg`."""
    out: list[str] = []
    if cfg.task not in TASKS:
        out.append(f"task must be one of {', '.join(TASKS)}; got {cfg.task!r}")
    _seed(cfg.get("seed"), out)
    _unknown_keys(cfg, out)
    if cfg.task == "eval" and not cfg.ckpt_path and not cfg.get("init_from"):
        out.append("task=eval needs ckpt_path=/path/to/checkpoint.ckpt (evaluate it as trained) or "
                   "init_from=/path/to/checkpoint.ckpt (evaluate it compressed as configured, untrained)")
    for key in ("ckpt_path", "init_from"):
        path = cfg.get(key)
        if path and not Path(str(path)).is_file():
            out.append(f"{key}={path}: no such file")
    for key in ("checkpoint_every_n_steps", "resume_every_n_steps"):
        every = cfg.get(key)
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            out.append(f"{key} must be null or an integer >= 1, got {every!r}")
    if cfg.get("compile", "none") not in COMPILE:
        out.append(f"compile must be one of {', '.join(COMPILE)}; got {cfg.get('compile')!r}")
    if cfg.get("init_from") and cfg.task == "eval" and cfg.ckpt_path:
        out.append("task=eval takes ckpt_path or init_from, not both")
    typed: list[str] = []
    schema.bind(cfg, typed)
    if typed:  # the checks below assume every value has its builder's type
        raise ConfigError(out + typed)
    _connector(cfg.connector, out)
    _encoder(cfg.encoder, cfg.data, out)
    _data(cfg.data, out)
    _generate(cfg.generate, out)
    _trainer(cfg.trainer, out)
    if _strategy_name(cfg.trainer.get("strategy")) == "ModelParallelStrategy":
        from sota.compress.quant import is_qlora_base

        if cfg.task == "eval":
            out.append("task=eval evaluates on one device; trainer=fsdp shards training only: use trainer=gpu or "
                       "trainer=cpu")
        if is_qlora_base(cfg.get("quant")):
            out.append(f"trainer=fsdp cannot shard bitsandbytes' 4-/8-bit weights (quant.mode="
                       f"{cfg.quant.mode}); use trainer=ddp for QLoRA, or quant.mode=none|bf16 with trainer=fsdp")
    param_groups.validate(as_dict(cfg.param_groups) if cfg.get("param_groups") else None, out)
    if cfg.get("param_groups") and cfg.optimizer.get("lr") is None:
        out.append("param_groups scale optimizer.lr, which is not set")
    from sota.compress import pipeline

    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    device = "cuda" if accelerator in ("gpu", "cuda") else "cpu"
    pipeline.validate(cfg, device, out)
    if cfg.get("measure") is not None:
        from sota.measure import protocol

        protocol.validate(cfg.measure, device, out)
    for task in cfg.data.tasks:
        if task not in cfg.prompts:
            out.append(f"prompts.{task} is missing: every task in data.tasks needs a prompt")
    if out:
        raise ConfigError(out)


def as_dict(cfg: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
