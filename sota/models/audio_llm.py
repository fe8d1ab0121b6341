"""The SALMONN-style audio-LLM: audio encoder -> window Q-Former -> LLM, prompted per task, trained with a
loss on the answer tokens only."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from sota.models import rotary
from sota.models.blocks import transformer_layers
from sota.models.connector import WindowConnector
from sota.models.decoding import Decoders, cut_at_stop, fallback_reason, llm_call_keywords
from sota.models.encoder import AudioEncoder
from sota.models.prompt import PromptBuilder
from sota.models.token_merge import TokenMerger

IGNORE = -100


class AudioLLM(nn.Module):
    def __init__(self, encoder: AudioEncoder, connector: WindowConnector, llm: PreTrainedModel, tokenizer: Any,
                 prompts: dict[str, str], prompt_template: str | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.connector = connector
        self.llm = llm
        rotary.use_broadcast(llm)   # no cuBLAS call for the rotary tables (sota.models.rotary says why)
        self.tokenizer = tokenizer
        self.prompt = PromptBuilder(tokenizer, prompts, prompt_template)

    @property
    def tasks(self) -> list[str]:
        return list(self.prompt.tasks)

    # -- stages: generation, training and measurement all go through these -------------------------------------
    def encode(self, encoder_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder inputs (log-mel) -> encoder features."""
        return self.encoder(**encoder_inputs)

    def connect(self, hidden: torch.Tensor, num_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features -> audio tokens for the LLM and their mask."""
        return self.connector(hidden.to(next(self.connector.parameters()).dtype), num_frames)

    def audio_embeds(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached encoder features (frozen encoder) or encoder inputs -> connector tokens and their mask."""
        hidden = batch["features"] if "features" in batch else self.encode(batch["encoder_inputs"])
        return self.connect(hidden, batch["num_frames"])

    def prefill(self, embeds: torch.Tensor, mask: torch.Tensor, tasks: list[str],
                decoders: Decoders | None = None) -> dict[str, Any]:
        """The prompts around the audio tokens, one LLM forward over them (KV cache kept) and the greedy first
        token: a decoding state that `step` continues. With static `decoders`, their graphed prefill."""
        inputs = self.assemble(embeds, mask, tasks)
        attn = inputs["attention_mask"]
        if decoders is not None:
            decoder = decoders.get(attn.shape[0], attn.shape[1])
            return {"token": decoder.prefill(inputs["inputs_embeds"], attn), "decoder": decoder,
                    "length": int(attn.shape[1])}
        _, extra = llm_call_keywords(self.llm)
        out = self.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=attn,
                       position_ids=inputs["position_ids"], use_cache=True, **extra)
        cache = getattr(out, "cache", None)
        return {"token": out.logits[:, -1].argmax(-1), "cache": cache if cache is not None else out.past_key_values,
                "attention_mask": attn, "position": inputs["position_ids"][:, -1:], "length": int(attn.shape[1])}

    def step(self, state: dict[str, Any]) -> torch.Tensor:
        """One greedy decode step from a `prefill` state (a 1-token forward with the cache): the next token,
        with the state advanced past it (`length` stays the prompt's)."""
        if "decoder" in state:
            state["token"] = state["decoder"].step()
            return state["token"]
        mask = torch.cat([state["attention_mask"], state["attention_mask"].new_ones(len(state["token"]), 1)], dim=1)
        cache_key, extra = llm_call_keywords(self.llm)
        out = self.llm(input_ids=state["token"][:, None], attention_mask=mask, position_ids=state["position"] + 1,
                       use_cache=True, **{cache_key: state["cache"]}, **extra)
        state.update(token=out.logits[:, -1].argmax(-1), attention_mask=mask, position=state["position"] + 1)
        return state["token"]

    def assemble(self, embeds: torch.Tensor, mask: torch.Tensor, tasks: list[str],
                 answers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """[prompt prefix][audio][prompt suffix]([answer][end of turn]), padded into one batch.

        Prompts alone (generation) are left-padded: every sequence's last prompt token sits at the same index,
        which batched generation needs. Training sequences (with answers) are right-padded: a left pad is a
        query row with nothing to attend to, and fully masked rows make cuDNN's attention backward return NaN
        (seen on an H200, bf16). Position ids are counted over real tokens only.

        The layout is built on the host and sent once; one embedding lookup and one scatter of the audio
        tokens follow, so a batch costs a few kernels however many rows it has.
        """
        table = self.llm.get_input_embeddings()
        device = embeds.device
        audio_len = mask.sum(1).tolist()
        ids, audio_at, labels = [], [], []
        for i, task in enumerate(tasks):
            if task not in self.prompt.tasks:
                raise ValueError(f"no prompt for task {task!r}; prompts exist for {sorted(self.prompt.tasks)}")
            parts = self.prompt.tasks[task]
            ans = self.prompt.answer_ids(answers[i]) if answers else []
            pre, n, post = len(parts.prefix_ids), audio_len[i], len(parts.suffix_ids) + len(ans)
            ids.append([*parts.prefix_ids, *[0] * n, *parts.suffix_ids, *ans])
            audio_at.append([False] * pre + [True] * n + [False] * post)
            labels.append([IGNORE] * (pre + n + len(parts.suffix_ids)) + ans)
        width = max(len(r) for r in ids)

        def padded(rows: list[list[Any]], fill: Any, dtype: torch.dtype) -> torch.Tensor:
            fills = [[fill] * (width - len(r)) for r in rows]
            out = [r + f if answers else f + r for r, f in zip(rows, fills)]
            return torch.tensor(out, dtype=dtype).to(device, non_blocking=True)

        tok = padded(ids, 0, torch.long)
        is_audio = padded(audio_at, False, torch.bool)
        attn = padded([[1] * len(r) for r in ids], 0, torch.long)
        lab = padded(labels, IGNORE, torch.long)
        text = table(tok)
        text = text * attn[..., None].to(text.dtype)  # padding stays all-zero
        # Real audio tokens in row-major order land on the audio slots in row-major order.
        inputs = text.masked_scatter(is_audio[..., None], embeds[mask].to(text.dtype))
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        merger = self.__dict__.get("token_merger")
        if merger is not None:   # merged inside the LLM (tokens=merge): prompts, and with training=merge answers too
            merger.arm(is_audio, teacher_forced=bool(answers))
        return {"inputs_embeds": inputs, "attention_mask": attn, "labels": lab, "position_ids": position_ids}

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over answer tokens."""
        return self.outputs(batch)[0].loss

    def outputs(self, batch: dict[str, Any], hidden: bool = False) -> tuple[Any, torch.Tensor]:
        """The LLM's outputs on a batch with answers (loss, logits, and the hidden states with `hidden`) and the
        labels it was scored on (IGNORE outside the answers), position by position with the logits. With
        tokens.training=merge the audio tokens are merged inside the LLM: the logits cover the kept positions."""
        embeds, mask = self.audio_embeds(batch)
        inputs = self.assemble(embeds, mask, batch["tasks"], batch["answers"])
        llm = self.__dict__.get("_compiled_llm", self.llm)
        merger = self.__dict__.get("token_merger")
        if merger is None or merger.training != "merge":
            return llm(**inputs, use_cache=False, output_hidden_states=hidden), inputs["labels"]
        labels = inputs.pop("labels")   # the LLM's own loss would pair the full labels with fewer logits
        return merger.scored(llm(**inputs, use_cache=False, output_hidden_states=hidden), labels, IGNORE)

    def compile_training(self, scope: str = "llm") -> None:
        """Train through torch.compile: Inductor fuses the step's elementwise work into few kernels. A small
        LLM's training step is bound by launching its ~27,000 operator calls (forward and backward), not by
        arithmetic. Sequence lengths vary per batch: compiled with dynamic shapes.

        `llm` compiles the whole LLM as one graph; `layers` compiles each decoder layer (regional compilation):
        the layers share one compiled code, so compiling costs one layer's time instead of the whole stack's
        (`mini` on a 2-core CPU: 24 s against 217 s before the first step), at the price of launches between
        layers. Generation runs the plain layers either way."""
        if scope == "llm":
            self.__dict__["_compiled_llm"] = torch.compile(self.llm, dynamic=True)  # not a submodule: same params
            return
        layers = transformer_layers(self.llm)
        for layer in layers:
            layer.compile(dynamic=True)
        self.__dict__["_compiled_layers"] = layers

    def static_decoders(self, backend: str, max_new_tokens: int) -> Decoders | None:
        """The static-cache decoders of `backend` for this LLM (built once, kept while the LLM is the same
        object), or None when the backend is eager or this LLM must fall back to eager."""
        if backend == "eager" or fallback_reason(self.llm) is not None:
            return None
        cached = self.__dict__.get("_decoders")
        if cached is None or cached.llm is not self.llm or cached.backend != backend:
            cached = Decoders(self.llm, backend, max_new_tokens)
            self.__dict__["_decoders"] = cached  # not a submodule: no parameters, not in state_dict
        return cached

    def merge_tokens(self, keep: float, layer: int, training: str = "none", grouping: str = "pairs",
                     attention: str = "plain") -> TokenMerger:
        """Merge audio tokens inside the LLM from decoder layer `layer` on (tokens=merge): at generation, and in
        teacher-forced forwards too with `training="merge"`; `grouping` and `attention` as in token_merge."""
        old = self.__dict__.pop("token_merger", None)
        if old is not None:
            old.remove()
        merger = TokenMerger(self.llm, keep, layer, training, grouping, attention)
        self.__dict__["token_merger"] = merger   # hooks, not a submodule
        return merger

    def forget_compiled(self) -> None:
        """Forget the static decoders and the compiled training LLM: their caches, graphs and guards hold the
        modules and tensors they were built on, so after merging, casting or quantizing the LLM they would
        run the old model."""
        self.__dict__.pop("_decoders", None)
        self.__dict__.pop("_compiled_llm", None)
        for layer in self.__dict__.pop("_compiled_layers", []):
            layer._compiled_call_impl = None  # what nn.Module.compile set: the layer calls its plain forward again

    def generate(self, batch: dict[str, Any], max_new_tokens: int = 64, num_beams: int = 1,
                 backend: str = "eager", **kwargs: Any) -> list[str]:
        """Greedy or beam answers, one string per clip (see `generate_ids`)."""
        rows = self.generate_ids(batch, max_new_tokens, num_beams, backend, **kwargs)
        return [self.prompt.decode(row) for row in rows]

    @torch.no_grad()
    def generate_ids(self, batch: dict[str, Any], max_new_tokens: int = 64, num_beams: int = 1,
                     backend: str = "eager", **kwargs: Any) -> list[list[int]]:
        """Answer token ids per clip, cut before the first stop token. Computed in the model's own dtypes:
        Lightning's bf16-mixed autocast is off here, so evaluation decodes the model as it is deployed and as
        it is measured (layers kept in float32, such as a skipped lm_head, stay float32)."""
        device = next(self.llm.parameters()).device
        # compile=layers compiled the layers for training's forward; validation decodes them as they are
        eager = torch.compiler.set_stance("force_eager") if "_compiled_layers" in self.__dict__ else nullcontext()
        with torch.autocast(device.type, enabled=False), eager:
            return self._generate_ids(batch, max_new_tokens, num_beams, backend, **kwargs)

    def _generate_ids(self, batch: dict[str, Any], max_new_tokens: int, num_beams: int, backend: str,
                      **kwargs: Any) -> list[list[int]]:
        embeds, mask = self.audio_embeds(batch)
        inputs = self.assemble(embeds, mask, batch["tasks"])
        decoders = self.static_decoders(backend, max_new_tokens) if num_beams == 1 else None
        if decoders is not None:
            attn = inputs["attention_mask"]
            return decoders.get(attn.shape[0], attn.shape[1], max_new_tokens).generate(
                inputs["inputs_embeds"], attn, max_new_tokens, self.prompt.stop_ids)
        out = self.llm.generate(
            inputs_embeds=inputs["inputs_embeds"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=self.prompt.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            **kwargs,
        )
        return cut_at_stop(out.tolist(), self.prompt.stop_ids)  # generate pads rows that stopped early

    @torch.no_grad()
    def next_token_logits(self, batch: dict[str, Any], prefixes: dict[int, list[int]]) -> dict[int, torch.Tensor]:
        """For each row i of `batch`, the logits after its prompt and the answer tokens `prefixes[i]`: one
        uncached forward over the unpadded sequence, in the model's own dtypes (a reference computation
        independent of any decoding backend's cache, masks and kernels)."""
        device = next(self.llm.parameters()).device
        with torch.autocast(device.type, enabled=False):
            embeds, mask = self.audio_embeds(batch)
            inputs = self.assemble(embeds, mask, batch["tasks"])
            table = self.llm.get_input_embeddings()
            out = {}
            for i, prefix in prefixes.items():
                prompt = inputs["inputs_embeds"][i, inputs["attention_mask"][i].bool()]
                answer = table(torch.tensor(prefix, dtype=torch.long, device=prompt.device)).to(prompt.dtype)
                out[i] = self.llm(inputs_embeds=torch.cat([prompt, answer])[None], use_cache=False).logits[0, -1]
            return out
