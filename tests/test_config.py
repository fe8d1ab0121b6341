"""Every option of every config group composes, and bad values are reported before any heavy work."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF, ROOT
from sota.config import validate
from sota.errors import ConfigError

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "paths", "sweep"))


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    assert OmegaConf.select(cfg, "encoder._target_") == "sota.models.encoder.AudioEncoder"
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no usable CUDA device"):  # refused before any work
            validate(cfg)
        return
    devices = cfg.trainer.devices
    if cfg.trainer.accelerator == "gpu" and isinstance(devices, int) and devices > torch.cuda.device_count():
        with pytest.raises(ConfigError, match="CUDA device"):  # trainer=ddp on a one-GPU machine
            validate(cfg)
        return
    validate(cfg)


def test_model_preset_can_be_refined_per_group(compose_cfg):
    cfg = compose_cfg("model=tiny", "llm=tiny_m")
    assert cfg.llm.layers == 4 and cfg.connector.hidden_size == 192


def test_encoder_context_follows_the_corpus(compose_cfg):
    cfg = compose_cfg("data.max_clip_s=4.0")
    assert cfg.encoder.context_s == 4.0 and cfg.corpus.max_clip_s == 4.0


def test_validation_reports_every_problem_at_once(compose_cfg):
    cfg = compose_cfg("connector.window_s=0", "connector.num_queries=0", "data.on_bad_file=ignore",
                      "generate.num_beams=0", "task=eval")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    text = str(err.value)
    for key in ("connector.window_s", "connector.num_queries", "data.on_bad_file", "error, skip",
                "generate.num_beams", "ckpt_path"):
        assert key in text


# Refused by validation, which run.py calls before any work (test_preemption: one message, exit status 2).
def test_init_from_a_missing_file_is_refused(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"init_from=.*nope\.ckpt: no such file"):
        validate(compose_cfg("task=eval", f"init_from={tmp_path / 'nope.ckpt'}"))


def test_an_unknown_compile_choice_is_refused(compose_cfg):
    with pytest.raises(ConfigError, match="compile must be one of none, llm, layers; got 'all'"):
        validate(compose_cfg("compile=all"))


@pytest.mark.parametrize("bucket", ["0.03", "6.0", "0"])
def test_an_encoder_bucket_off_the_frame_grid_or_past_the_context_is_rejected(compose_cfg, bucket):
    cfg = compose_cfg(f"encoder.bucket_s={bucket}")  # the default context: 5 s
    with pytest.raises(ConfigError, match="encoder.bucket_s must be null or a multiple of 0.02 s"):
        validate(cfg)
    with pytest.raises(ConfigError, match="encoder.bucket_s needs encoder.second=null"):
        validate(compose_cfg("encoder=whisper_large_v2_beats", "encoder.bucket_s=0.5"))


def test_stride_longer_than_window_is_rejected(compose_cfg):
    cfg = compose_cfg("connector.window_s=0.2", "connector.stride_s=0.4")
    with pytest.raises(ConfigError, match=r"connector.stride_s \(0.4\) must be <= connector.window_s \(0.2\)"):
        validate(cfg)


def test_unknown_option_and_key_fail_fast_with_choices(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "run.py", *args, f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    bad_option = run("llm=huge")
    assert bad_option.returncode != 0
    assert "Could not find 'llm/huge'" in bad_option.stderr and "tiny_s" in bad_option.stderr
    bad_key = run("connector.windw_s=1")
    assert bad_key.returncode != 0 and "windw_s" in bad_key.stderr
    bad_value = run("connector.window_s=-1", "logger=none")
    assert bad_value.returncode != 0 and "connector.window_s must be > 0" in bad_value.stderr
    assert not (tmp_path / "results.json").exists()  # rejected before anything ran


def test_the_gpu_experiment_composes_with_any_data_source(compose_cfg):
    """Corpus sizes live in the `corpus` group, so an experiment that scales the synthetic corpus still composes
    with manifests (data=salmonn), whose source has no corpus spec."""
    cfg = compose_cfg("experiment=mini_gpu", "data=salmonn", "trainer=cpu")
    assert "spec" not in cfg.data.source and cfg.corpus.asr_train == 12000
    assert cfg.encoder.context_s == cfg.data.max_clip_s == 10.0
    synthetic = compose_cfg("experiment=mini_gpu", "trainer=cpu")
    assert synthetic.data.source.spec.asr_train == 12000


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=abc", "data.batch_size must be int; got 'abc'"),
    ("encoder.context_s=long", "encoder.context_s must be float; got 'long'"),
    ("encoder.frozen=3", "encoder.frozen must be bool; got 3"),
    ("+encoder.contxt_s=5", r"encoder.contxt_s is not a key of the encoder group \(did you mean encoder.context_s\?\)"),
])
def test_a_value_of_the_wrong_type_is_named_with_its_builders_type(compose_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(override))


def test_every_preset_binds_to_its_builders_types(compose_cfg):
    from sota import schema

    for overrides in ([], ["model=mini"], ["experiment=mini_gpu"], ["data=salmonn"], ["connector=projector"]):
        out: list[str] = []
        schema.bind(compose_cfg(*overrides), out)
        assert out == [], overrides
