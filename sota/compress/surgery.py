"""Where a transformer stack's prunable parts live (the LLM decoder or the Whisper encoder) and how they are cut:
channels and heads sliced through Torch-Pruning's pruning functions, whole layers dropped, configs kept in step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch_pruning as tp
from torch import nn

if TYPE_CHECKING:
    from sota.models.audio_llm import AudioLLM


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of the submodule of `root` at qualified `name`."""
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class Stack:
    """One transformer stack to prune (the LLM decoder or the Whisper encoder) and where its parts live."""

    name: str                 # "llm" | "encoder": the report section and the prefix of messages
    root: nn.Module           # what params_before/after count
    holder: nn.Module         # owns `.layers`
    config: Any
    layers_key: str           # config key holding the number of layers
    ffn_key: str              # config key holding the MLP width
    protected: frozenset[int]
    heads: bool               # query-head pruning applies (the LLM only)

    @property
    def layers(self) -> nn.ModuleList:
        return self.holder.layers


def linear(module: nn.Module, attr: str, where: str) -> nn.Linear:
    lin = getattr(module, attr, None)
    # Exact nn.Linear: LoRA wrappers and quantized linears cannot be sliced, so pruning must come first.
    if type(lin) is not nn.Linear:
        raise ValueError(f"prune: {where}.{attr} is {type(lin).__name__}, not a plain nn.Linear; structured "
                         "pruning supports Llama-family decoders and Whisper encoders and must run before LoRA "
                         "or quantization")
    return lin


def mlp_parts(stack: Stack, layer: nn.Module, i: int) -> tuple[list[nn.Linear], nn.Linear]:
    """(linears whose output channels are the MLP channels, the linear reading them)."""
    where = f"{stack.name} layer {i}"
    if stack.name == "llm":
        mlp = getattr(layer, "mlp", None)
        if mlp is None:
            raise ValueError(f"prune: {where} has no `.mlp`; width pruning supports Llama-family decoders")
        return [linear(mlp, "gate_proj", where + ".mlp"), linear(mlp, "up_proj", where + ".mlp")], \
            linear(mlp, "down_proj", where + ".mlp")
    return [linear(layer, "fc1", where)], linear(layer, "fc2", where)


@dataclass
class Attn:
    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int

    @property
    def n_q(self) -> int:
        return self.q.out_features // self.head_dim

    @property
    def n_kv(self) -> int:
        return self.k.out_features // self.head_dim


def attention_of(stack: Stack, layer: nn.Module, i: int) -> Attn:
    where = f"{stack.name} layer {i}.self_attn"
    attn = getattr(layer, "self_attn", None)
    if attn is None:
        raise ValueError(f"prune: {stack.name} layer {i} has no `.self_attn`")
    names = ("q_proj", "k_proj", "v_proj", "o_proj") if stack.name == "llm" else ("q_proj", "k_proj", "v_proj",
                                                                                  "out_proj")
    q, k, v, o = (linear(attn, n, where) for n in names)
    head_dim = getattr(attn, "head_dim", None) or q.out_features // stack.config.num_attention_heads
    return Attn(attn, q, k, v, o, int(head_dim))


def stack_of(model: AudioLLM, name: str, s: dict[str, Any]) -> Stack:
    if name == "llm":
        llm = model.llm
        holder = llm.get_decoder() if hasattr(llm, "get_decoder") else getattr(llm, "model", None)
        if holder is None or not isinstance(getattr(holder, "layers", None), nn.ModuleList):
            raise ValueError(f"prune.targets=llm: {type(llm).__name__} has no decoder `.layers` list; "
                             "pruning supports Llama-family causal LMs")
        n = len(holder.layers)
        protected = set()
        for i in s["protected_layers"]:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ValueError(f"prune.protected_layers: layer {i} does not exist (the llm has {n} decoder layers)")
            protected.add(j)
        return Stack("llm", llm, holder, holder.config, "num_hidden_layers", "intermediate_size",
                      frozenset(protected), heads=bool(s["prune_heads"]))
    whisper = getattr(model.encoder, "whisper", None)
    if whisper is None or not isinstance(getattr(whisper, "layers", None), nn.ModuleList):
        raise ValueError("prune.targets=encoder: the model's encoder has no Whisper `.whisper.layers`")
    # protected_layers names LLM decoder layers; no Whisper layer is known to be fragile.
    return Stack("encoder", whisper, whisper, whisper.config, "encoder_layers", "encoder_ffn_dim",
                  frozenset(), heads=False)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() skips tied duplicates


def slice_linear(lin: nn.Linear, keep: list[int], dim: str, where: str) -> None:
    """Keep `keep` output (`dim="out"`) or input channels of `lin`, via Torch-Pruning's pruning functions."""
    n = lin.out_features if dim == "out" else lin.in_features
    if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= n:
        raise ValueError(f"prune: {where}: kept {dim} channels {keep[:8]}... do not fit {n} channels; was the "
                         "model built with the config the report was made for?")
    drop = sorted(set(range(n)) - set(keep))
    if not drop:
        return
    flags = {name: p.requires_grad for name, p in lin.named_parameters()}
    (tp.prune_linear_out_channels if dim == "out" else tp.prune_linear_in_channels)(lin, drop)
    for name, p in lin.named_parameters():
        p.requires_grad_(flags[name])  # Torch-Pruning makes fresh Parameters that require grad; keep freezing


def shrink_mlp(st: Stack, layer: nn.Module, i: int, keep: list[int]) -> None:
    ins, o = mlp_parts(st, layer, i)
    for lin in ins:
        slice_linear(lin, keep, "out", f"{st.name} layer {i} MLP")
    slice_linear(o, keep, "in", f"{st.name} layer {i} MLP")
    mlp = getattr(layer, "mlp", None)
    if mlp is not None and hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def shrink_heads(st: Stack, layer: nn.Module, i: int, q_keep: list[int], kv_keep: list[int]) -> None:
    att = attention_of(st, layer, i)
    where = f"{st.name} layer {i} attention"
    group = att.n_q // att.n_kv
    per = len(q_keep) // max(1, len(kv_keep))
    # repeat_kv maps query head m to KV head m // per: each kept KV head needs `per` query heads of its group.
    if per * len(kv_keep) != len(q_keep) or any(q // group != kv_keep[m // per] for m, q in enumerate(q_keep)):
        raise ValueError(f"prune: {where}: kept query heads {q_keep} do not form equal groups over KV heads {kv_keep}")
    hd = att.head_dim
    q_ch = [h * hd + d for h in q_keep for d in range(hd)]
    slice_linear(att.q, q_ch, "out", where)
    slice_linear(att.o, q_ch, "in", where)
    if len(kv_keep) < att.n_kv:
        kv_ch = [h * hd + d for h in kv_keep for d in range(hd)]
        slice_linear(att.k, kv_ch, "out", where)
        slice_linear(att.v, kv_ch, "out", where)
    m = att.module
    m.num_key_value_groups = per  # read by eager/sdpa attention to repeat KV heads
    for attr, value in (("num_heads", len(q_keep)), ("num_attention_heads", len(q_keep)),
                        ("num_key_value_heads", len(kv_keep))):
        if is_int(getattr(m, attr, None)):
            setattr(m, attr, value)


def drop_layers(st: Stack, keep: list[int]) -> None:
    old = st.layers
    if len(set(keep)) != len(keep) or any(not 0 <= i < len(old) for i in keep):
        raise ValueError(f"prune: kept {st.name} layers {keep} do not fit its {len(old)} layers")
    st.holder.layers = nn.ModuleList([old[i] for i in keep])
    for new_idx, layer in enumerate(st.holder.layers):
        # KV caches are indexed by each attention's layer_idx: they must be 0..n-1 again.
        for mod in layer.modules():
            if is_int(getattr(mod, "layer_idx", None)):
                mod.layer_idx = new_idx
    types = getattr(st.config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(old):
        st.config.layer_types = [types[i] for i in keep]
    setattr(st.config, st.layers_key, len(keep))


def layer_shapes(st: Stack) -> dict[str, list[int]]:
    inter, heads, kv = [], [], []
    for i, layer in enumerate(st.layers):
        inter.append(mlp_parts(st, layer, i)[0][0].out_features)
        if st.name == "llm":
            att = attention_of(st, layer, i)
            heads.append(att.n_q)
            kv.append(att.n_kv)
        else:
            heads.append(int(layer.self_attn.num_heads))
    return {"heads": heads, "kv_heads": kv, "intermediate": inter} if st.name == "llm" else \
        {"heads": heads, "intermediate": inter}


def sync_config(st: Stack) -> None:
    """Make the HF config describe the pruned model where one number can; per-layer sizes live in the report."""
    setattr(st.config, st.layers_key, len(st.layers))
    shape = layer_shapes(st)
    if len(set(shape["intermediate"])) == 1:
        setattr(st.config, st.ffn_key, shape["intermediate"][0])
    if st.name == "llm" and len(set(shape["heads"])) == 1 and len(set(shape["kv_heads"])) == 1:
        # head_dim first: configs without it derive it from hidden_size / num_attention_heads.
        st.config.head_dim = attention_of(st, st.layers[0], 0).head_dim
        st.config.num_attention_heads = shape["heads"][0]
        st.config.num_key_value_heads = shape["kv_heads"][0]
