"""Recovery by distillation (`recover=distill`): the compressed model trains toward the answers of the model
it was compressed from, not only toward the reference text.

The teacher is the model as it stands before this run's compression (pruning, the QLoRA base, adapters): the
trained model of `init_from` when one is given, else the model as built. It is a frozen copy, kept outside
the Lightning module (no state_dict, no optimizer, no DDP wrapper), and freed when training ends, before the
final model is evaluated and measured.

    loss = (1 - alpha) * CE(student, text) + alpha * T^2 * KL(teacher_T || student_T) + hidden_weight * MSE

KL runs over the answer positions only, on logits softened by temperature T (Hinton et al.; Minitron's
recovery). The optional hidden-state term compares the LLM's last hidden states at the same positions,
each normalised by the teacher's scale, which needs the compressed LLM to keep the hidden size (sota's pruning
does).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sota.models.audio_llm import IGNORE

METHODS = ("lora", "distill")
DEFAULTS: dict[str, Any] = {"method": "lora", "temperature": 2.0, "alpha": 0.5, "hidden_weight": 0.0}


def settings(cfg: Any) -> dict[str, Any]:
    raw = {} if cfg is None else (OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg))
    return {**DEFAULTS, **raw}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(cfg: Any, task: str, out: list[str]) -> None:
    """Problems of the `recover` group, appended to `out`."""
    if cfg is None:
        return
    s = settings(cfg)
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        out.append(f"recover: unknown key(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
    if s["method"] not in METHODS:
        out.append(f"recover.method must be one of {', '.join(METHODS)}; got {s['method']!r}")
        return
    if s["method"] != "distill":
        return
    if not _number(s["temperature"]) or s["temperature"] <= 0:
        out.append(f"recover.temperature must be a number > 0, got {s['temperature']!r}")
    if not _number(s["alpha"]) or not 0 < s["alpha"] <= 1:
        out.append(f"recover.alpha (the distillation share of the loss) must be in (0, 1], got {s['alpha']!r}")
    if not _number(s["hidden_weight"]) or s["hidden_weight"] < 0:
        out.append(f"recover.hidden_weight must be a number >= 0, got {s['hidden_weight']!r}")
    if task != "train":
        out.append(f"recover=distill is a way to train; task={task} trains nothing (use recover=lora)")


@dataclass
class Distiller:
    """The frozen teacher and the loss weights."""

    teacher: nn.Module
    temperature: float
    alpha: float
    hidden_weight: float
    # The device the whole teacher was last moved to (None: not yet). Lightning moves the student, not the
    # teacher (kept outside the module on purpose), and the teacher can start out split across devices (the
    # encoder is moved to the GPU before the copy is taken, the LLM is not), so the first parameter's device
    # says nothing about the rest: the first use moves all of it to the batch's device.
    _device: torch.device | None = field(default=None, init=False, repr=False)

    @classmethod
    def of(cls, model: nn.Module, cfg: Any) -> Distiller | None:
        """A frozen copy of `model` as it is now, or None when `cfg` does not ask for distillation."""
        s = settings(cfg)
        if s["method"] != "distill":
            return None
        model.forget_compiled()   # decoders and compiled graphs are not copied
        teacher = copy.deepcopy(model).eval()
        teacher.requires_grad_(False)
        return cls(teacher, float(s["temperature"]), float(s["alpha"]), float(s["hidden_weight"]))

    def record(self) -> dict[str, Any]:
        return {"method": "distill", "temperature": self.temperature, "alpha": self.alpha,
                "hidden_weight": self.hidden_weight,
                "teacher_params": sum(p.numel() for p in self.teacher.parameters()),
                "teacher": "the model before this run's compression (init_from's when given), frozen; freed "
                           "after training"}

    def loss(self, student: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of `student` on `batch` and its terms (ce, kd, hidden)."""
        hidden = self.hidden_weight > 0
        s_out, labels = student.outputs(batch, hidden=hidden)
        device = labels.device
        if self._device != device:
            self.teacher.to(device)
            self._device = device
        with torch.no_grad():
            t_out, t_labels = self.teacher.outputs(batch, hidden=hidden)
        if t_labels.shape != labels.shape or not torch.equal(t_labels, labels):
            raise RuntimeError("recover=distill: teacher and student laid the batch out differently (audio tokens "
                               f"per clip differ: {tuple(t_labels.shape)} vs {tuple(labels.shape)}); distillation "
                               "needs the same connector token rate")
        # Position i predicts label i + 1, as in the causal LM loss.
        at = labels[:, 1:] != IGNORE
        temp = self.temperature
        s_logits = s_out.logits[:, :-1][at].float() / temp
        t_logits = t_out.logits[:, :-1][at].float() / temp
        kd = F.kl_div(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), log_target=True,
                      reduction="batchmean") * temp ** 2
        terms = {"ce": s_out.loss, "kd": kd}
        loss = (1 - self.alpha) * s_out.loss + self.alpha * kd
        if hidden:
            s_h, t_h = s_out.hidden_states[-1][:, :-1][at].float(), t_out.hidden_states[-1][:, :-1][at].float()
            if s_h.shape != t_h.shape:
                raise RuntimeError(f"recover.hidden_weight: student hidden size {s_h.shape[-1]} differs from the "
                                   f"teacher's {t_h.shape[-1]}; set recover.hidden_weight=0")
            terms["hidden"] = F.mse_loss(s_h, t_h) / t_h.pow(2).mean().clamp(min=1e-8)
            loss = loss + self.hidden_weight * terms["hidden"]
        return loss, terms
