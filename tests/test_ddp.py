"""Several processes with Lightning's own strategies: run.py under DDP on the CPU (trainer=ddp_cpu, two processes
over gloo) writes one results.json from rank zero, with a one-process run's schema, and scores the whole test
split exactly once with the metrics of a one-process evaluation of the same weights; the GPU presets
(trainer=ddp, trainer=fsdp) compose and are refused up front where they cannot run. trainer=fsdp_cpu (FSDP2 over
gloo) trains sharded, and rank zero evaluates the model rebuilt whole exactly as a one-process evaluation of
the gathered checkpoint does."""

import json
import subprocess
import sys

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from conftest import ROOT, SMALL_CORPUS
from sota.config import validate
from sota.errors import ConfigError

# The tiny preset shrunk to seconds. The test split has 9 clips (odd: a distributed sampler over two processes
# would pad it with a repeated clip) in batches of 4; min_new_tokens keeps the 4-step model's answers non-empty.
BASE = ["measure=none", "trainer.max_steps=4", "++trainer.limit_val_batches=1",
        "++trainer.enable_progress_bar=false", "data.max_clip_s=5.0", *SMALL_CORPUS, "corpus.asr_test=5",
        "data.batch_size=4", "data.eval_batch_size=4", "++generate.min_new_tokens=4", "generate.max_new_tokens=6"]


def run(out_dir, *overrides):
    proc = subprocess.run([sys.executable, "run.py", *BASE, *overrides, f"hydra.run.dir={out_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A DDP training run (W&B offline, the default logger), and a one-process evaluation (trainer=cpu,
    task=eval) of the checkpoint it saved."""
    root = tmp_path_factory.mktemp("ddp")
    run(root / "ddp", "trainer=ddp_cpu", "logger=wandb")
    run(root / "single", "trainer=cpu", "logger=csv", "task=eval",
        f"ckpt_path={root / 'ddp' / 'checkpoints' / 'last.ckpt'}")
    return root / "ddp", root / "single"


@pytest.mark.slow  # two processes training, then an evaluation: about 50 s for both tests
def test_ddp_trains_on_two_processes_and_rank_zero_alone_writes_results(runs):
    ddp, single = runs
    assert sorted(ddp.parent.rglob("results.json")) == [ddp / "results.json", single / "results.json"]
    res = json.loads((ddp / "results.json").read_text())
    assert res["status"] == "ok" and res["error"] is None
    assert res["provenance"]["world_size"] == 2 and res["timing"]["train_steps"] == 4
    assert res["timing"]["train_samples_per_s"] > 0  # counted over both processes
    assert (ddp / "train_ddp_process_1.log").is_file()  # Lightning started the second process (rank 1)
    assert len(list((ddp / "wandb").glob("offline-run-*"))) == 1  # one W&B run, rank zero's
    one = json.loads((single / "results.json").read_text())
    assert one["status"] == "ok" and one["provenance"]["world_size"] == 1
    for part in (None, "metrics", "model", "efficiency", "data", "provenance"):
        assert set(res if part is None else res[part]) == set(one if part is None else one[part]), part


@pytest.mark.slow  # two processes training, then an evaluation: about 50 s for both tests
def test_ddp_scores_the_whole_test_split_once_as_one_process_would(runs):
    ddp, single = runs
    res, one = (json.loads((d / "results.json").read_text()) for d in runs)
    got, want = rows(ddp), rows(single)
    ids = [r["id"] for r in got]
    assert res["data"]["test"] == 9 and len(ids) == 9 and len(set(ids)) == 9  # none missing, none twice
    assert ids == [r["id"] for r in want]
    assert [r["prediction"] for r in got] == [r["prediction"] for r in want]
    assert any(r["prediction"] for r in got)
    assert res["metrics"] == one["metrics"] and res["metrics"]["asr/wer"] is not None
    assert len((ddp / "predictions.csv").read_text().splitlines()) == 10


def test_multi_gpu_presets_compose(compose_cfg):
    from hydra.utils import instantiate

    ddp = compose_cfg("trainer=ddp")
    assert (ddp.trainer.accelerator, ddp.trainer.strategy, ddp.trainer.devices) == ("gpu", "ddp", 2)
    assert ddp.trainer.precision == "bf16-mixed" and ddp.trainer.max_steps == 800  # inherits trainer=gpu
    fsdp = compose_cfg("trainer=fsdp", "trainer.devices=4")
    assert fsdp.trainer.accelerator == "gpu" and fsdp.trainer.limit_val_batches == 0
    strategy = instantiate(fsdp.trainer.strategy)
    assert isinstance(strategy, ModelParallelStrategy) and strategy._data_parallel_size == 4
    assert strategy._tensor_parallel_size == 1 and not strategy._save_distributed_checkpoint
    cpu = instantiate(compose_cfg("trainer=ddp_cpu").trainer, logger=False)
    assert isinstance(cpu.strategy, DDPStrategy) and cpu.num_devices == 2
    assert cpu.strategy.process_group_backend == "gloo"


@pytest.mark.parametrize("option", ["ddp", "fsdp"])
def test_gpu_presets_are_refused_without_cuda(compose_cfg, monkeypatch, option):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(f"trainer={option}"))
    assert "trainer.accelerator is 'gpu'" in str(err.value) and "no usable CUDA device" in str(err.value)
    assert "trainer=ddp_cpu" in str(err.value)


def test_gpu_counts_and_sharding_are_checked_on_a_cuda_machine(compose_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"trainer.devices is 2 but this machine has 1 CUDA device"):
        validate(compose_cfg("trainer=ddp"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    validate(compose_cfg("trainer=ddp"))
    with pytest.raises(ConfigError, match=r"trainer.devices is \[0, 3\]"):
        validate(compose_cfg("trainer=ddp", "trainer.devices=[0,3]"))
    validate(compose_cfg("trainer=fsdp"))
    with pytest.raises(ConfigError, match="trainer.strategy is fsdp; sota shards with FSDP2"):
        validate(compose_cfg("trainer=ddp", "trainer.strategy=fsdp"))
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("trainer=fsdp", "trainer.devices=auto", "trainer.strategy.tensor_parallel_size=2",
                             "task=eval", "ckpt_path=" + __file__))
    assert len(err.value.problems) == 3, err.value.problems
    assert "must be an integer; got 'auto'" in err.value.problems[0]
    assert "tensor_parallel_size must be 1" in err.value.problems[1] and "task=eval evaluates on one device" in err.value.problems[2]
    with pytest.raises(ConfigError, match="cannot shard bitsandbytes"):
        validate(compose_cfg("trainer=fsdp", "model=mini", "quant=nf4"))


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """An FSDP2 training run on two CPU processes, and a one-process evaluation of the checkpoint it gathered."""
    root = tmp_path_factory.mktemp("fsdp")
    base = [o for o in BASE if "limit_val_batches" not in o]   # trainer=fsdp does not validate while sharded
    for out, overrides in ((root / "fsdp", ["trainer=fsdp_cpu"]), (root / "single", [
            "trainer=cpu", "task=eval", f"ckpt_path={root / 'fsdp' / 'checkpoints' / 'trained.ckpt'}"])):
        proc = subprocess.run([sys.executable, "run.py", *base, *overrides, "logger=csv", f"hydra.run.dir={out}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "fsdp", root / "single"


@pytest.mark.slow  # two processes training sharded, then an evaluation: about 40 s
def test_fsdp_trains_sharded_and_rank_zero_evaluates_the_gathered_model_as_one_process_would(fsdp_runs):
    fsdp, single = fsdp_runs
    res, one = (json.loads((d / "results.json").read_text()) for d in fsdp_runs)
    assert res["status"] == "ok" and res["provenance"]["world_size"] == 2 and res["timing"]["train_steps"] == 4
    shards = res["provenance"]["sharding"]
    # each rank held half of every sharded tensor: the local count falls by half the sharded share
    sharded = shards["sharded_fraction"] * shards["params_total"]
    assert shards["world_size"] == 2 and sharded > 0
    assert shards["params_local"] == pytest.approx(shards["params_total"] - sharded / 2, rel=1e-3)
    assert [r["prediction"] for r in rows(fsdp)] == [r["prediction"] for r in rows(single)]
    assert len(rows(fsdp)) == 9 and res["metrics"] == one["metrics"]
