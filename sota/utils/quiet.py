"""Known-harmless library messages, dropped where they are raised so that a run's console shows what matters.

`install()` must run before torch, torchao or Lightning is imported: torchao logs its lines while being imported.
Each filter matches one message by a precise pattern on the one logger (or warning category) that emits it, so an
unexpected message from the same library still shows. Only the standard library is imported here.
"""

from __future__ import annotations

import logging
import re
import warnings

# (logger name, message pattern). A logging.Filter on a logger sees the records that logger itself creates, so
# each entry names the emitting module's logger, not a parent.
LOG_NOISE: tuple[tuple[str, str], ...] = (
    # torchao probes optional prebuilt kernels (MXFP8, CUTLASS for sm90a) built for another Python/CUDA; nothing
    # here uses them, and the int8/int4 paths it does use fall back to PyTorch ops.
    ("torchao", r"^Failed to load .*_C_(mxfp8|cutlass)\S*\.so"),
    # Triton ships with CUDA builds of torch; on a CPU-only build torchao's int_mm uses torch._int_mm instead.
    ("torchao.kernel.intmm", r"Detected no triton"),
    # torchao registers its Enum options with torch's pytree; torch now handles Enums natively and merely notes
    # that the registration is redundant.
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported by torch\.compile"),
    # Advertisements for Lightning's cloud services (litlogger, litmodels), printed by every Trainer.
    ("lightning.pytorch.utilities.rank_zero", r"^💡 Tip: "),
    # Saving a checkpoint: Lightning keeps optimizer and loop state unless told otherwise, which resuming needs.
    ("lightning.pytorch.trainer.connectors.checkpoint_connector", r"^`weights_only` was not set"),
)

# (category, message pattern): Python warnings; `message` is matched at the start of the warning's text.
WARNING_NOISE: tuple[tuple[type[Warning], str], ...] = (
    # Lightning's own pytree helper still builds LeafSpec, which torch deprecated; it is Lightning's to change and
    # behaves the same meanwhile.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # Test sets are small and their encoder features cached, so loading in the main process is no bottleneck;
    # data.num_workers is the setting to raise if it ever becomes one.
    (Warning, r"The 'test_dataloader' does not have many workers"),
    # The frozen encoder (and a frozen LLM base) are kept in eval mode on purpose: no dropout in what does not
    # train, and its cached features stay valid.
    (Warning, r"Found \d+ module\(s\) in eval mode at the start of training"),
)


class DropMatching(logging.Filter):
    """Drops the records whose formatted message matches `pattern`."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def install() -> None:
    """Installs the filters above; a second call adds nothing."""
    for name, pattern in LOG_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMatching) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(DropMatching(pattern))
    for category, pattern in WARNING_NOISE:
        # filterwarnings drops an identical earlier entry before inserting, so repeating it does not pile up
        warnings.filterwarnings("ignore", message=pattern, category=category)


def lightning_through_root() -> None:
    """One console line per Lightning message, still written to run.log.

    The `lightning` package adds its own console handler to its logger on import, while its records also reach
    the root logger's handlers that Hydra configures (the console and run.log): every Lightning line shows twice.
    With root handlers in place, Lightning's own console handlers are removed and its records propagate to them.
    Call it after Lightning is imported and logging is configured (inside the Hydra task function).
    """
    if not logging.getLogger().handlers:  # nothing else would print them
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's console handlers, not file or null handlers
                logger.removeHandler(handler)
        logger.propagate = True
