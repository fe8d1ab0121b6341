"""Greedy decoding backends for the audio-LLM's language model.

- `eager`: transformers' `generate` (dynamic KV cache, one Python-driven forward per token). Small models are
  launch-bound there: ~30 layers x ~12 kernels per token, each launch costing microseconds of CPU time.
- `static`: this module's own loop over a preallocated `StaticCache`; the prefill (per bucket of prompt length)
  and the one-token decode step are each captured once as a CUDA graph and replayed, so a token costs one
  graph launch instead of hundreds of kernel launches.
- `compiled`: `static` with the decode step compiled by TorchInductor first (fused norms, rotary and
  elementwise kernels: fewer kernels inside the graph; at batch 1 tuned matrix-vector reductions, see
  `BATCH1_INDUCTOR_OPTIONS`), and a frozen LLM's q/k/v and gate/up projections fused into one matrix
  product each (`sota.models.fuse`; the model keeps the fused layout until it is exported). The prefill is graphed but not compiled: every prompt-length bucket would
  otherwise compile anew.
- `fused`: `static` with the decode step of a Llama-family LLM run as five kernels a layer
  (`sota.models.decode_step`; Triton on CUDA, the same arithmetic in torch on a CPU), projections fused as for
  `compiled`. An LLM the step cannot read (`decode_step.unsupported`) decodes with the compiled step, noted.

The loop is owned here rather than driven through `generate(inputs_embeds=...)`: generate keeps references to
step outputs across steps, which CUDA-graph replay overwrites. Every input of a captured step lives in a
persistent buffer, and every output is copied out of the graph's memory before the next replay.

Masks are explicit 4D additive masks (transformers passes 4D masks through unchanged), so nothing in a captured
region inspects tensor values on the host. Left padding, as `AudioLLM.assemble` builds it, is handled by the
mask and by position ids counted over real tokens. On a CPU (or with `graphs=False`) the same functions run
eagerly: the tests compare their tokens with `generate`'s.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sota.models import decode_kernels, decode_step, fuse
from sota.models.llm import base_model

log = logging.getLogger(__name__)

BACKENDS = ("eager", "static", "compiled", "fused")
BUCKET = 32          # prompt lengths are padded up to a multiple of this: one prefill graph per bucket
# Inductor options of a batch-1 compiled decode step. With coordinate-descent tuning, Inductor lowers a one-row
# matrix product to its own reduction kernel, tuned at compile time, instead of calling cuBLAS' GEMV (its
# decomposition of `mm`), and fuses the int8 -> bf16 weight conversion into that read. On the Llama-3.2-3B
# shape (H200) cuBLAS' bf16 GEMVs took 79 % of the step at ~63 % of the copy bandwidth; with this option the
# step measured 2.76 ms instead of 3.18 ms (runs on two H200s). Larger batches are matrix products, where cuBLAS
# is the better kernel and the tuning would only lengthen compilation (it benchmarks every kernel's variants).
BATCH1_INDUCTOR_OPTIONS = {"coordinate_descent_tuning": True}


def validate(backend: Any, num_beams: Any, out: list[str], compare_with: Any = None) -> None:
    if backend not in BACKENDS:
        out.append(f"generate.backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    elif backend != "eager" and num_beams != 1:
        out.append(f"generate.backend={backend} decodes greedily: it needs generate.num_beams=1 "
                   f"(got {num_beams}); beam search runs with generate.backend=eager")
    if compare_with is None:
        return
    others = [b for b in BACKENDS if b != backend]
    if compare_with not in others:
        out.append(f"generate.compare_with must be null or another backend than generate.backend={backend} "
                   f"({', '.join(others)}); got {compare_with!r}")
    elif num_beams != 1:
        out.append(f"generate.compare_with compares greedy answers: it needs generate.num_beams=1 (got {num_beams})")


def cut_at_stop(rows: list[list[int]], stop_ids: list[int]) -> list[list[int]]:
    """Each row of generated ids up to (not including) its first stop token."""
    stop = set(stop_ids)
    return [row[:next((j for j, t in enumerate(row) if t in stop), len(row))] for row in rows]


def fallback_reason(llm: nn.Module) -> str | None:
    """Why this LLM cannot run the static backend (it then falls back to eager), or None."""
    if any(type(m).__module__.startswith("bitsandbytes") for m in llm.modules()):
        return ("bitsandbytes layers (nf4 / int8_bnb) are not captured in CUDA graphs here: decoded eagerly "
                "with transformers' generate")
    return None


@functools.lru_cache(maxsize=None)
def _forward_params(cls: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def llm_call_keywords(llm: nn.Module) -> tuple[str, dict[str, Any]]:
    """The KV-cache keyword of this transformers version (`cache` from 5.2x, `past_key_values` before) and
    `logits_to_keep=1` where supported, so a prefill computes the last position's logits only, as `generate`
    does."""
    params = _forward_params(type(base_model(llm)))
    cache_key = "cache" if "cache" in params else "past_key_values"
    return cache_key, ({"logits_to_keep": 1} if "logits_to_keep" in params else {})


def embedding_device_dtype(llm: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the LLM's token table lives and the dtype its rows come in (an int4 table has no float weight:
    its rows come out in bf16, next to its codes)."""
    emb = llm.get_input_embeddings()
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device, weight.dtype
    return next(emb.buffers()).device, torch.bfloat16


@functools.cache
def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The one side stream on which every decoder of this process warms up and captures its graphs. torch keeps
    a cuBLAS workspace for every stream a matrix product ever ran on, for the life of the process (32 MiB per
    stream on an H200): a fresh stream per capture left 64 MiB allocated for good after each decoder's prefill
    and decode captures, and strict mode counted them in the next measured peak."""
    return torch.cuda.Stream(device)


class StaticDecoder:
    """Greedy decoding of a batch of `batch_size` left-padded prompts (given as embeddings) into a static KV
    cache of `max_len` positions: prompt bucket + new tokens must fit."""

    def __init__(self, llm: nn.Module, batch_size: int, max_len: int, graphs: bool, step: str = "static") -> None:
        """`step`: the decode step of the static backends (`static`, `compiled` or `fused`)."""
        from transformers import StaticCache

        self.llm, self.batch_size, self.max_len = llm, batch_size, max_len
        self.device, self.dtype = embedding_device_dtype(llm)
        self.graphs = graphs and self.device.type == "cuda"
        self.cache_key, self.prefill_kwargs = llm_call_keywords(llm)
        config = base_model(llm).config
        self.cache = StaticCache(config=config, max_cache_len=max_len)
        dev, b = self.device, batch_size
        # Persistent buffers: the captured graphs read and write only these.
        self.token = torch.zeros(b, dtype=torch.long, device=dev)
        self.last_pos = torch.zeros(b, 1, dtype=torch.long, device=dev)
        self.start = torch.zeros((), dtype=torch.long, device=dev)
        self.step_no = torch.zeros((), dtype=torch.long, device=dev)
        self.prompt_valid = torch.zeros(b, max_len, dtype=torch.bool, device=dev)
        self.cols = torch.arange(max_len, device=dev)
        self.neg = torch.finfo(self.dtype).min
        self._prompt: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._prefill_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._decode_graph: torch.cuda.CUDAGraph | None = None
        self._graph_decode = True        # False once capturing the compiled step failed
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self._decode_fn: Callable[[], None] = self._decode
        self.note: str | None = None     # why the backend did less than asked (recorded in results)
        self.fused: decode_step.FusedStep | None = None
        if step == "fused":
            why = decode_step.unsupported(llm)
            if why is None and self.device.type == "cuda" and not decode_kernels.available():
                why = "Triton does not import"
            if why is None:
                self.fused = decode_step.FusedStep(llm, batch_size, max_len)
                self._decode_fn = self._fused_decode
            else:
                self.note = f"fused decode step not used ({why}): decoded with the compiled step"
                log.warning(self.note)
                step = "compiled"
        # Inductor on a CPU would need a C++ toolchain and buys little there: CPUs run the uncompiled step.
        compile = step == "compiled" and self.device.type == "cuda"
        if compile:
            # Inductor fuses the step's small kernels; the graph then removes their launch cost. dynamic=False:
            # every shape in the step is fixed by batch_size and max_len.
            options = BATCH1_INDUCTOR_OPTIONS if batch_size == 1 else None
            self._decode_fn = torch.compile(self._decode, dynamic=False, fullgraph=False, options=options)
        self.compiled = compile
        self.steps_run = 0               # tokens computed by the last `generate` (timing covers all of them)

    # -- the two functions that are captured -----------------------------------------------------------
    def _forward(self, **kwargs: Any) -> torch.Tensor:
        out = self.llm(**kwargs, use_cache=True, **{self.cache_key: self.cache})
        return out.logits[:, -1]

    def _prefill(self, length: int) -> None:
        embeds, attn = self._prompt[length]
        for layer in self.cache.layers:
            if hasattr(layer, "cumulative_length") and isinstance(layer.cumulative_length, torch.Tensor):
                layer.cumulative_length.zero_()
        real = attn.bool()
        self.prompt_valid.zero_()
        self.prompt_valid[:, :length] = real
        causal = self.cols[None, :length].T >= self.cols[None, :]               # [length, max_len]: key <= query
        visible = causal[None] & self.prompt_valid[:, None, :]                  # [B, length, max_len]
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device).masked_fill(~visible, self.neg)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(inputs_embeds=embeds, attention_mask=mask[:, None], position_ids=positions,
                               **self.prefill_kwargs)
        self.token.copy_(logits.argmax(-1))
        self.last_pos.copy_(positions[:, -1:])
        self.start.fill_(length)
        self.step_no.zero_()

    def _decode(self) -> None:
        current = self.start + self.step_no
        visible = self.prompt_valid | ((self.cols >= self.start) & (self.cols <= current))[None]
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device).masked_fill(~visible, self.neg)
        logits = self._forward(input_ids=self.token[:, None], attention_mask=mask[:, None, None],
                               position_ids=self.last_pos + 1 + self.step_no)
        self.token.copy_(logits.argmax(-1))
        self.step_no.add_(1)

    def _fused_decode(self) -> None:
        caches = [(layer.keys, layer.values) for layer in self.cache.layers]
        self.fused(self.token, self.last_pos, self.step_no, self.start, self.prompt_valid, caches)
        self.step_no.add_(1)

    # -- capture ---------------------------------------------------------------------------------------
    def _capture(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        side = capture_stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy allocations, cuBLAS handles, compilation happen here
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=side):
            fn()
        return graph

    # -- public ----------------------------------------------------------------------------------------
    def prefill(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Left-padded prompt embeddings [B, L, H] and mask [B, L] -> first greedy token [B] (a view of the
        decoder's buffer: copy it before the next call)."""
        # The model decodes in its own dtype. Under autocast (Lightning's bf16-mixed validation) a float32
        # model's keys leave rotary embedding in float32 and its values in bf16: one cache cannot hold both.
        with torch.autocast(self.device.type, enabled=False):
            return self._prefill_batch(embeds, attention_mask)

    def _prefill_batch(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, n = attention_mask.shape
        if b != self.batch_size:
            raise ValueError(f"this decoder holds batches of {self.batch_size}, got {b}")
        length = -(-n // BUCKET) * BUCKET
        if length >= self.max_len:
            raise ValueError(f"prompt of {n} tokens (bucket {length}) does not fit a cache of {self.max_len}")
        if length not in self._prompt:
            self._prompt[length] = (torch.zeros(b, length, embeds.shape[-1], dtype=self.dtype, device=self.device),
                                    torch.zeros(b, length, dtype=torch.long, device=self.device))
        buf_e, buf_m = self._prompt[length]
        buf_e.zero_()
        buf_m.zero_()
        buf_e[:, length - n:] = embeds.to(self.dtype)   # left padding grows to the bucket's length
        buf_m[:, length - n:] = attention_mask
        if self.graphs:
            if length not in self._prefill_graphs:
                self._prefill_graphs[length] = self._capture(lambda: self._prefill(length))
            self._prefill_graphs[length].replay()
        else:
            self._prefill(length)
        return self.token

    def step(self) -> torch.Tensor:
        """One greedy decode step after `prefill`: the next token [B] (a view of the decoder's buffer)."""
        with torch.autocast(self.device.type, enabled=False):  # as in `prefill`
            return self._step()

    def _step(self) -> torch.Tensor:
        if self.graphs and self._graph_decode:
            if self._decode_graph is None:
                # Capturing runs the step for warm-up: save and restore the state it advances.
                saved = [t.clone() for t in (self.token, self.step_no)]
                lengths = [layer.cumulative_length.clone() for layer in self.cache.layers]
                try:
                    self._decode_graph = self._capture(self._decode_fn)
                except RuntimeError as err:
                    if not self.compiled:
                        raise
                    # A step that recompiles under capture (a guard failed: seen on an H200 when a forward
                    # hook's counter changed at every call) synchronises, which invalidates the capture. A
                    # second capture in the same allocator pool then fails too, so the compiled step runs
                    # without a graph, and says so.
                    torch.cuda.synchronize(self.device)
                    self.note = (f"compiled decode step could not be captured as a CUDA graph ({type(err).__name__}:"
                                 f" {str(err).splitlines()[0][:160]}); it runs compiled, without a graph")
                    log.warning(self.note)
                    self._graph_decode = False
                self.token.copy_(saved[0])
                self.step_no.copy_(saved[1])
                for layer, value in zip(self.cache.layers, lengths):
                    layer.cumulative_length.copy_(value)
            if self._decode_graph is not None:
                self._decode_graph.replay()
            else:
                self._decode_fn()
        else:
            self._decode_fn()
        return self.token

    def space_for(self, prompt_len: int) -> int:
        """New tokens that fit after a prompt of `prompt_len` tokens."""
        return self.max_len - (-(-prompt_len // BUCKET) * BUCKET)

    @torch.no_grad()
    def generate(self, embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 stop_ids: list[int], check_every: int = 8) -> list[list[int]]:
        """Greedy answers (stop token excluded), one list of ids per row."""
        n = min(max_new_tokens, self.space_for(attention_mask.shape[1]))
        tokens = [self.prefill(embeds, attention_mask).clone()]
        stops = torch.tensor(stop_ids, device=self.device)
        for i in range(1, n):
            # Host checks cost a synchronisation: every `check_every` steps, not every step.
            if i % check_every == 0 and bool(torch.isin(torch.stack(tokens, 1), stops).any(1).all()):
                break
            tokens.append(self.step().clone())
        self.steps_run = len(tokens)
        return cut_at_stop(torch.stack(tokens, 1).tolist(), stop_ids)


def fuse_for_decoding(llm: nn.Module, backend: str = "compiled") -> str | None:
    """Fuse the q/k/v and gate/up projections of a frozen LLM (sota.models.fuse), in place; what was fused, as
    a line for the results' notes, or None. An LLM with trainable parameters (LoRA during training) is left as
    it is: its modules are what the optimizer and the checkpoints know."""
    if any(p.requires_grad for p in llm.parameters()):
        return None
    if any(fuse.fuse(base_model(llm)).values()) and torch.cuda.is_available():
        # The separate weights were freed group by group; their cached blocks are smaller than any fused
        # weight, so they would only stay reserved.
        torch.cuda.empty_cache()
    counts = fuse.fused_groups(base_model(llm))   # also when an earlier decoder of this model fused them
    if not any(counts.values()):
        return None
    line = f"{backend}: " + ", ".join(f"{kind} projections fused in {n} layers" for kind, n in counts.items() if n)
    log.info(line)
    return line


class Decoders:
    """Static decoders of one LLM, one per batch size, grown when a longer prompt arrives."""

    def __init__(self, llm: nn.Module, backend: str, max_new_tokens: int) -> None:
        if backend not in BACKENDS or backend == "eager":
            raise ValueError(f"Decoders serve the static backends ({', '.join(BACKENDS[1:])}); got {backend!r}")
        self.llm, self.backend, self.max_new_tokens = llm, backend, max_new_tokens
        self._by_batch: dict[int, StaticDecoder] = {}
        self.last: StaticDecoder | None = None
        self.fused = fuse_for_decoding(llm, backend) if backend in ("compiled", "fused") else None

    def all(self) -> list[StaticDecoder]:
        return list(self._by_batch.values())

    def get(self, batch_size: int, prompt_len: int, max_new_tokens: int | None = None) -> StaticDecoder:
        need = -(-prompt_len // BUCKET) * BUCKET + max(max_new_tokens or self.max_new_tokens, 1) + 1
        dec = self._by_batch.get(batch_size)
        if dec is None or dec.max_len < need:
            # A bucket of headroom, so the next slightly longer prompt reuses this cache and its graphs.
            max_len = need + BUCKET
            log.info("static decoder: batch %d, cache of %d positions (%s)", batch_size, max_len, self.backend)
            dec = StaticDecoder(self.llm, batch_size, max_len, graphs=True, step=self.backend)
            self._by_batch[batch_size] = dec
        self.last = dec
        return dec
