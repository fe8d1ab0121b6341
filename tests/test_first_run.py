"""What a first run shows: `--help` of run.py and sweep.py, no known-harmless library noise, each Lightning line
once, and a progress bar counted in steps."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest

from sota.utils import quiet

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def test_run_help_lists_groups_examples_and_results():
    proc = _run("run.py", "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    lines = [line.strip() for line in text.splitlines()]
    for group in ("trainer", "quant", "prune", "lora", "model", "data", "measure", "experiment"):
        assert any(line.startswith(f"{group}:") for line in lines), group
    assert any(line.startswith("trainer:") and "smoke" in line and "cpu*" in line for line in lines)
    assert "_loader" not in text  # a shared file of data/, not an option
    assert not any(line.startswith("sweep:") for line in lines)  # sweep.py's group
    assert "frontier_grid" not in text
    assert "Examples" in text and "results.json" in text and "$SOTA_CACHE" in text


def test_run_help_stars_the_chosen_options():
    proc = _run("run.py", "model=mini", "quant=nf4", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "nf4*" in proc.stdout and "mini*" in proc.stdout and "tiny*" not in proc.stdout


def test_sweep_help_lists_subcommands():
    proc = _run("sweep.py", "--help")
    assert proc.returncode == 0, proc.stderr
    commands = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert commands[:5] == ["sweep=<name>", "report", "compare", "remeasure", "paired"]
    assert "smoke" in proc.stdout


@pytest.fixture
def installed():
    """quiet.install(), the loggers' filters put back afterwards."""
    names = {name for name, _ in quiet.LOG_NOISE}
    before = {name: list(logging.getLogger(name).filters) for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        quiet.install()
        quiet.install()  # idempotent
        yield
    for name, filters in before.items():
        logging.getLogger(name).filters[:] = filters


KNOWN_LOG_LINES = [
    ("torchao", "Failed to load /x/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library"),
    ("torchao", "Failed to load /x/torchao/_C_cutlass_90a.abi3.so: Could not load this library"),
    ("torchao.kernel.intmm", "Warning: Detected no triton, on systems without Triton certain kernels will not work"),
    ("torch.utils._pytree", "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by "
                            "torch.compile as an opaque value type. Calling register_constant() on Enum subclasses "
                            "is deprecated and will be an error in a future release."),
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging and experiment tracking, try "
                                              "installing [litlogger](https://pypi.org/project/litlogger/)"),
    ("lightning.pytorch.trainer.connectors.checkpoint_connector",
     "`weights_only` was not set, defaulting to `False`."),
]


def test_known_log_lines_are_dropped_others_kept(installed, caplog):
    caplog.set_level(logging.INFO)
    for name, message in KNOWN_LOG_LINES:
        logging.getLogger(name).warning(message)
    logging.getLogger("torchao").warning("Failed to load checkpoint /tmp/model.pt")  # not a kernel probe
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("`Trainer.fit` stopped: `max_steps=4` reached.")
    assert [r.getMessage() for r in caplog.records] == [
        "Failed to load checkpoint /tmp/model.pt", "`Trainer.fit` stopped: `max_steps=4` reached."]


def test_known_warnings_are_dropped_others_kept(installed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
                      "treespec.is_leaf()` instead.", FutureWarning)
        warnings.warn("The 'test_dataloader' does not have many workers which may be a bottleneck.", UserWarning)
        warnings.warn("The 'train_dataloader' does not have many workers which may be a bottleneck.", UserWarning)
        warnings.warn("`foo` is deprecated", FutureWarning)
    assert [str(w.message).split(" does")[0] for w in caught] == ["The 'train_dataloader'", "`foo` is deprecated"]


def test_import_time_notices_are_gone():
    """torchao logs its kernel probes while being imported: install() must come first, as in run.py."""
    code = ("from sota.utils import quiet; quiet.install(); import logging; logging.basicConfig(); "
            "import torchao, torchao.quantization, lightning")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    for noise in ("_C_mxfp8", "_C_cutlass", "is an Enum subclass", "Detected no triton"):
        assert noise not in out


def test_lightning_lines_go_through_root_once():
    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    saved = list(root.handlers), list(lightning.handlers), lightning.propagate
    own = logging.StreamHandler()
    try:
        root.handlers[:] = [logging.NullHandler()]
        lightning.handlers[:] = [own, logging.NullHandler()]
        quiet.lightning_through_root()
        assert own not in lightning.handlers and len(lightning.handlers) == 1 and lightning.propagate
    finally:
        root.handlers[:], lightning.handlers[:], lightning.propagate = saved


def test_progress_bar_counts_steps_across_epochs():
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from sota.progress import DESCRIPTION, StepProgressBar, progress_bars

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = []

    class Look(L.Callback):
        def on_train_batch_end(self, trainer, *_):
            task = bar.progress.tasks[bar.train_progress_bar_id]
            seen.append((trainer.current_epoch, task.completed, task.total, task.description.strip()))

    bar = StepProgressBar()
    trainer = L.Trainer(max_steps=7, callbacks=[bar, Look()], logger=False, enable_checkpointing=False,
                        enable_model_summary=False)
    trainer.fit(Model(), DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=4))  # 3 steps an epoch
    assert seen[-1] == (2, 7, 7, DESCRIPTION)
    assert [s[1] for s in seen] == list(range(1, 8))
    assert progress_bars({"enable_progress_bar": False}) == []  # Lightning refuses a bar it was told not to show


@pytest.mark.slow
def test_smoke_run_prints_each_lightning_line_once(tmp_path):
    out_dir = tmp_path / "run"
    proc = _run("run.py", "trainer=smoke", "logger=csv", "measure=none", "data.real_test=null",
                "corpus.asr_train=24", "corpus.asr_val=4", "corpus.asr_test=6", "corpus.aac_train=12",
                "corpus.aac_val=4", "corpus.aac_test=4", "data.max_eval_samples=8", "data.max_clip_s=5.0",
                f"hydra.run.dir={out_dir}", timeout=600, SOTA_CACHE=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    messages = ["Seed set to 0", "GPU available:", "`Trainer.fit` stopped: `max_steps=4` reached."]
    counts = Counter(m for line in console.splitlines() for m in messages if m in line)
    assert counts == Counter({m: 1 for m in messages}), console
    run_log = (out_dir / "run.log").read_text()
    assert all(m in run_log for m in messages)
    for noise in ("💡 Tip", "_C_mxfp8", "is an Enum subclass", "LeafSpec", "weights_only"):
        assert noise not in console
