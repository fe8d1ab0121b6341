"""The model a configuration would measure, built on the meta device: the preset's parts, then the structure
that pruning and LoRA give it. No weights, corpus or calibration data are read, so hub-size presets plan on
any machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sota.compress import lowrank
from sota.compress import prune as pruning
from sota.compress.importance import select_heads
from sota.compress.surgery import drop_layers, set_module, shrink_heads, shrink_mlp, stack_of, sync_config
from sota.models import meta


@dataclass
class MetaModel:
    """Meta-device parts as a run holds them before quantization, plus what the planner had to assume."""

    parts: dict[str, nn.Module | None]     # encoder (Whisper), second, connector, llm
    notes: list[str]

    @property
    def llm(self) -> nn.Module:
        return self.parts["llm"]  # type: ignore[return-value]

    @property
    def whisper(self) -> nn.Module:
        return self.parts["encoder"]  # type: ignore[return-value]


def _corpus_words() -> list[str]:
    """Every word the synthetic corpus can put in a transcript (the grammar's and the natural sentences'): an
    upper bound of the vocabulary a corpus-built LLM gets, which only the built corpus knows exactly."""
    from sota.data import grammar, sentences
    from sota.data.synthetic import transcript

    words = set(grammar.VOCABULARY)
    for s in sentences.natural_sentences():
        words.update(transcript(s).split())
    return sorted(words)


def _llm(cfg: DictConfig, notes: list[str], words: Sequence[str] | None) -> nn.Module:
    llm = cfg.llm
    if llm.get("path") is not None:
        return meta._llm(llm)
    if llm.get("arch") is not None:  # llm=shape_only: a published shape with random weights
        model = meta.AutoModelForCausalLM.from_config(meta.arch_config(llm.arch, key="llm.arch"))
        return model.to(getattr(torch, llm.get("dtype", "bfloat16")))
    spec = OmegaConf.to_container(llm, resolve=True)
    spec.pop("prompt_template", None)
    if words is None:
        words = _corpus_words()
        notes.append(f"llm: built from the corpus vocabulary; sized for at most {len(words)} words (every word the "
                     "synthetic corpus can say), so its embedding table is an upper bound")
    model, _ = instantiate(spec)(words=sorted(words))
    return model


def build(cfg: DictConfig, words: Sequence[str] | None = None) -> MetaModel:
    """The parts of `cfg` on the meta device, pruned and given LoRA adapters as the run would. `words`: the
    vocabulary of a corpus-built LLM where it is known (a checkpoint's `sota_vocabulary`); else an upper bound."""
    notes: list[str] = []
    parts = meta.build_on_meta(cfg, make_llm=lambda: _llm(cfg, notes, words))
    model = MetaModel({"encoder": parts.encoder, "second": parts.second, "connector": parts.connector,
                       "llm": parts.llm}, notes)
    with torch.device("meta"):  # modules pruning builds stay on the meta device
        _prune(model, cfg.get("prune"))
    return model


def _prune(model: MetaModel, cfg: Any) -> None:
    """The shapes pruning leaves. Which channels, heads or layers go depends on calibration scores, but not how
    many: the same plan functions as `sota.compress.prune` decide the counts, and the first ones are kept."""
    s = pruning._settings(cfg)
    if s["method"] == "none" or not s["ratio"]:
        return
    problems: list[str] = []
    pruning.validate(cfg, problems)
    if problems:
        raise ValueError("prune: " + "; ".join(problems))
    holder = SimpleNamespace(llm=model.llm, encoder=SimpleNamespace(whisper=model.whisper))
    ratio = float(s["ratio"])
    if s["method"] == "lowrank":
        _lowrank(model.whisper, ratio, int(s["round_to"]))
        return
    for name in s["targets"]:
        st = stack_of(holder, name, s)  # type: ignore[arg-type]
        if s["method"] == "depth":
            remove = pruning._plan_depth(st, ratio, problems)
            free = [i for i in range(len(st.layers)) if i not in st.protected]
            drop_layers(st, [i for i in range(len(st.layers)) if i not in set(free[:remove])])
        else:
            for i, (layer, plan) in enumerate(zip(st.layers, pruning._plan_width(st, s, problems))):
                if plan.mlp is None:
                    continue
                shrink_mlp(st, layer, i, list(range(plan.mlp)))
                if plan.q is not None:
                    att = pruning.attention_of(st, layer, i)
                    q_keep, kv_keep = select_heads(torch.zeros(att.n_q, device="cpu"), att.n_kv, plan.q, plan.kv)
                    shrink_heads(st, layer, i, q_keep, kv_keep)
        sync_config(st)
    if problems:
        raise ValueError("prune: invalid configuration for this model: " + "; ".join(problems))


def _lowrank(whisper: nn.Module, ratio: float, round_to: int) -> None:
    for name, lin in lowrank.targets(whisper).items():
        rank = lowrank.rank_for(lin, ratio, round_to)
        if rank * (lin.in_features + lin.out_features) < lin.in_features * lin.out_features:
            set_module(whisper, name, lowrank.LowRankLinear(lin.in_features, lin.out_features, rank,
                                                            lin.bias is not None, device="meta",
                                                            dtype=lin.weight.dtype))
