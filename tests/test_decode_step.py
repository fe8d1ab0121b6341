"""The fused decode step (`generate.backend=fused`): its logits against transformers' full forward (Llama and
Qwen2, left padding), its Triton kernels against the torch operations (Triton's CPU interpreter here, the
device in the gpu tier), and the compiled step where it cannot read a model."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sota.compress import int4
from sota.models import decode_kernels as ops
from sota.models import decode_step
from sota.models.decoding import BUCKET, Decoders, StaticDecoder, fuse_for_decoding

from test_decoding import decisive_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TRITON = pytest.mark.skipif(not ops.available(), reason="needs Triton (its CPU interpreter runs the kernels here)")


def tiny(family, head_dim=16, seed=0):
    torch.manual_seed(seed)
    kw = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=256, tie_word_embeddings=True)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**kw, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                  "original_max_position_embeddings": 64}))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**kw))   # q/k/v carry biases
    for p in model.parameters():
        p.data.normal_(0.0, 0.3)
        p.requires_grad_(False)
    return model.eval()


def steps_against_full_forward(llm, steps=5):
    """Each fused step's logits next to a full uncached forward over the same left-padded sequence."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [0, 0, 0, 3, 4, 5, 6]])
    attn = (torch.arange(7)[None] >= torch.tensor([[0], [3]])).long()
    fuse_for_decoding(llm, "fused")
    dec = StaticDecoder(llm, batch_size=2, max_len=2 * BUCKET, graphs=False, step="fused")
    assert dec.fused is not None and dec.note is None
    tokens = [dec.prefill(llm.get_input_embeddings()(ids), attn).clone()]
    seq, mask, pairs = torch.cat([ids, tokens[0][:, None]], 1), torch.cat([attn, torch.ones(2, 1).long()], 1), []
    for _ in range(steps):
        tokens.append(dec.step().clone())
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        full = llm(input_ids=seq, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1]
        pairs.append((dec.fused.logits.clone(), full))
        seq = torch.cat([seq, tokens[-1][:, None]], 1)
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
    return pairs


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_fused_step_logits_match_a_full_forward(family):
    for fused, full in steps_against_full_forward(tiny(family)):
        torch.testing.assert_close(fused, full, atol=2e-4, rtol=1e-4)
        assert fused.argmax(-1).tolist() == full.argmax(-1).tolist()


class Codes:
    """A compact int4 layer as the Triton kernels read it: codes two a byte, tinygemm's scales and zeros. (On a
    CPU `Int4Linear` packs for torch's own kernel, which the interpreter does not read.)"""

    packing = "triton"

    def __init__(self, w, group, bias=None):
        q, scales, zeros = int4.rtn(w, group)
        self.qdata, self.group_size, self.bias = int4.pack_nibbles(q), group, bias
        self.scale_and_zero = int4._scales_and_zeros(scales, zeros)
        self.out_features = w.shape[0]
        self.dense = int4.dequantize(q, scales, zeros, group)

    def __call__(self, x):
        # as the kernels multiply: the codes' exact weights, float32 sums, one rounding of the output (a bf16 copy of
        # the weights would differ from them by more than the kernels' summation order does)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), self.dense, bias).to(x.dtype)


def test_fused_step_follows_per_layer_widths_of_a_pruned_model():
    """Width pruning may keep different numbers of query heads and MLP channels in each layer: the step takes each
    layer's own from its fused projections."""
    llm = tiny("llama")
    attn, mlp = llm.model.layers[1].self_attn, llm.model.layers[1].mlp
    keep = torch.cat([torch.arange(0, 16), torch.arange(32, 48)])       # query heads 0 and 2: one per KV head
    def cut(lin, rows=slice(None), cols=slice(None)):
        lin.weight = torch.nn.Parameter(lin.weight[rows][:, cols].clone(), requires_grad=False)
        lin.out_features, lin.in_features = lin.weight.shape

    cut(attn.q_proj, rows=keep)
    cut(attn.o_proj, cols=keep)
    attn.num_key_value_groups = 1
    cut(mlp.gate_proj, rows=slice(0, 48))
    cut(mlp.up_proj, rows=slice(0, 48))
    cut(mlp.down_proj, cols=slice(0, 48))
    for fused, full in steps_against_full_forward(llm, steps=3):
        torch.testing.assert_close(fused, full, atol=2e-4, rtol=1e-4)
    layers = StaticDecoder(llm, 2, 2 * BUCKET, graphs=False, step="fused").fused.layers
    assert [(lay.heads, lay.kv_heads, lay.intermediate) for lay in layers] == [(4, 2, 96), (2, 2, 48)]


def int4_llm(family="llama", group=32, device="cpu"):
    """`tiny(family)` in bf16 with every projection in compact int4 (on CUDA packed for the Triton kernels, which
    the step reads) and the head in bf16."""
    llm = tiny(family, head_dim=64 if device == "cuda" else 16).to(device, torch.bfloat16)
    for layer in llm.model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                lin = getattr(parent, name)
                q, scales, zeros = int4.rtn(lin.weight.float(), group)
                setattr(parent, name, int4.Int4Linear.from_codes(q, scales, zeros, group, bias=lin.bias,
                                                                 kernel="triton"))
    return llm


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_fused_step_reads_compact_int4_layers(family):
    """On a CPU the step multiplies by the int4 layers themselves (stacked q/k/v and gate/up included); its logits
    follow transformers' forward over the same layers to bf16's rounding."""
    llm = int4_llm(family)
    assert decode_step.unsupported(llm) is not None                    # not fused yet
    for fused, full in steps_against_full_forward(llm):
        torch.testing.assert_close(fused.float(), full.float(), atol=0.1, rtol=0.05)
        top2 = full.float().topk(2).values
        decided = (top2[:, 0] - top2[:, 1]) > 0.1
        assert (fused.argmax(-1) == full.argmax(-1))[decided].all()
    assert isinstance(decode_step.operand(llm.model.layers[0].self_attn.qkv_fused)[0], int4.Int4Linear)


def test_int4_layers_packed_for_tinygemm_on_cuda_are_not_read():
    class Packed(Codes):
        packing = "tinygemm"

    layer = Packed(torch.randn(32, 64), 16)
    assert "quant.int4_kernel=triton" in decode_step._readable(layer, torch.bfloat16, "cuda")
    assert decode_step._readable(layer, torch.bfloat16, "cpu") is None
    assert "powers of two from 8" in decode_step._readable(Codes(torch.randn(32, 96), 48), torch.bfloat16, "cpu")


def kernel_inputs(dtype, b=2, heads=4, kv_heads=2, d=48, hidden=80, inter=56, max_len=40, int4_group=0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.3):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    def weight(rows, cols, bias=None):
        w = rnd(rows, cols)
        return Codes(w.float(), int4_group, bias) if int4_group else w

    rows = (heads + 2 * kv_heads) * d
    bias = rnd(rows)
    return dict(
        x=rnd(b, hidden, scale=1.0), norm=1.0 + rnd(hidden), w=weight(rows, hidden, bias),
        bias=None if int4_group else bias, w_o=weight(hidden, heads * d), w_gu=weight(2 * inter, hidden),
        w_head=weight(3 * inter, hidden),
        cos=torch.cos(torch.arange(max_len)[:, None] * 0.1 * torch.arange(d)[None] / d).to(dtype),
        sin=torch.sin(torch.arange(max_len)[:, None] * 0.1 * torch.arange(d)[None] / d).to(dtype),
        last_pos=torch.tensor([[11], [7]]), step=torch.tensor(3), start=torch.tensor(16),
        k=rnd(b, kv_heads, max_len, d, scale=1.0), v=rnd(b, kv_heads, max_len, d, scale=1.0),
        valid=(torch.arange(max_len)[None] >= torch.tensor([[2], [9]])) & (torch.arange(max_len)[None] < 16),
        heads=heads, kv_heads=kv_heads, d=d, hidden=hidden, inter=inter)


def run_ops(t, inputs=None, only=None):
    """Every operation once on copies of `t`'s tensors, each on the previous one's output, or (`inputs`: another
    run's outputs, on the CPU) each on that run's input to it; `only` (with `inputs`): just the operations that
    compute these outputs."""
    b, heads, kv_heads, d, hidden, inter = (t["x"].shape[0], t["heads"], t["kv_heads"], t["d"], t["hidden"],
                                            t["inter"])
    new = dict(dtype=t["x"].dtype, device=t["x"].device)
    out = {}

    def runs(*names):
        return only is None or any(name in only for name in names)

    if runs("q", "k", "v"):
        out.update(k=t["k"].clone(), v=t["v"].clone(), q=torch.zeros(b, heads * d, **new))
        # with room for its parts' sums, as o below
        ops.qkv_rope(t["x"], t["norm"], 1e-5, t["w"], t["bias"], t["cos"], t["sin"], t["last_pos"], t["step"],
                     t["start"], out["q"], out["k"], out["v"], heads, kv_heads,
                     ops.proj_scratch(b, (heads + 2 * kv_heads) * d, t["x"].device))
    src = out if inputs is None else inputs
    if runs("attn"):
        out["attn"] = torch.zeros(b, heads * d, **new)
        ops.attend(src["q"], src["k"], src["v"], t["valid"], t["step"], t["start"], out["attn"], d ** -0.5)
    if runs("o"):
        out["o"] = torch.zeros(b, hidden, **new)
        # o with room for its parts' sums: it may split its inputs over programs (the one configuration does)
        ops.proj(src["attn"], t["w_o"], out["o"], residual=t["x"],
                 scratch=ops.proj_scratch(b, hidden, t["x"].device))
    if runs("act"):
        out["act"] = torch.zeros(b, inter, **new)
        ops.proj(src["o"], t["w_gu"], out["act"], norm=t["norm"], eps=1e-5, gated=True,
                 scratch=ops.proj_scratch(b, 2 * inter, t["x"].device))
    if runs("head"):
        out["head"] = torch.zeros(b, 3 * inter, **new)
        ops.proj(t["x"], t["w_head"], out["head"], norm=t["norm"], eps=1e-5)
    if runs("token"):
        out["token"] = torch.zeros(b, dtype=torch.long, device=t["x"].device)
        ops.argmax(src["head"], out["token"])
    return out


def interpreted(code, tmp_path):
    """Runs `code` (with this module's names) in a fresh process under Triton's CPU interpreter, which must be on
    before Triton is first imported; returns what it saved into `out.pt`."""
    script = f"import torch\nfrom test_decode_step import *\n{code}\n"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OUT": str(tmp_path / "out.pt")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(tmp_path / "out.pt", weights_only=True)


def tolerance(name, want, d, dtype):
    """What each value of output `name` may differ by: a unit or two in the last place of the rounded values it
    is made of. q and k are rotated after their product is rounded: where the rotation cancels, a unit in the
    last place of its inputs is much more than one of its output, so their bound scales with the norm of the
    value's rotary pair (which the rotation keeps)."""
    atol, rtol = (1e-5, 1e-5) if dtype == torch.float32 else (2e-2, 1.6e-2)
    scale = want.abs()
    if name in ("q", "k"):
        pairs = want.reshape(*want.shape[:-1], -1, 2, d // 2)
        scale = pairs.norm(dim=-2, keepdim=True).expand_as(pairs).reshape(want.shape)
    return atol + rtol * scale


def excess(name, got, want, d, dtype):
    """How far each value of `got` lies past `tolerance` of `want` (at most 0 where it is within)."""
    want = want.float()
    return (got.float().cpu() - want).abs() - tolerance(name, want, d, dtype)


def assert_kernels_match(got, t, dtype, inputs=None):
    """Each kernel against the torch operation on the kernels' own inputs (or `inputs`, where `got` holds another
    run's outputs with some computed from these): chained, a unit in the last place of one bf16 value (q, say)
    moves everything after it, and the comparison would measure that rounding."""
    got = {k: v.cpu() for k, v in got.items()}
    ref = run_ops(t, inputs=got if inputs is None else {k: v.cpu() for k, v in inputs.items()})
    for name in ("q", "k", "v", "attn", "o", "act", "head"):
        want = ref[name].float()
        past = excess(name, got[name], want, t["d"], dtype)
        if name == "o" and dtype == torch.bfloat16:
            # o is the product rounded to bf16, then plus the residual: where the residual cancels the product, a
            # unit in the product's last place is all of the difference
            past = past - 2.0 ** -7 * (want - t["x"].float()).abs()
        assert (past <= 0).all(), (f"{name}: {int((past > 0).sum())} values out of tolerance, the worst by "
                                   f"{past.max().item():.3g}")
    assert torch.equal(got["token"], ref["token"])
    slot = int(t["start"] + t["step"])
    untouched = [i for i in range(t["k"].shape[2]) if i != slot]
    assert torch.equal(got["k"][:, :, untouched], t["k"][:, :, untouched])   # only the step's slot is written
    assert torch.equal(got["v"][:, :, untouched], t["v"][:, :, untouched])
    assert not torch.equal(got["k"][:, :, slot], t["k"][:, :, slot])


@pytest.mark.slow
@TRITON
# the whole chain in the slow tier: the default one checks each kernel on its own (the small kernels' checks below)
@pytest.mark.parametrize(("group", "hidden"), [(0, 200), (16, 80), (8, 32)])
def test_triton_kernels_match_the_torch_operations(group, hidden, tmp_path):
    """Grouped-query heads, a head size that is no power of two, a q/k/v bias, left-padded prompts, the gated MLP,
    both residual products, float weights and compact int4 codes: the kernels give the torch operations' values.
    Rows longer than the one configuration's step (float 200, int4 80) take the RMS pass; int4 rows of 32 fit one
    step and take their RMS from its loads. Interpreted in float32 here: the interpreter truncates float32 to bf16
    where a GPU rounds to nearest, so bf16 is checked on the device."""
    t = kernel_inputs(torch.float32, hidden=hidden, int4_group=group)
    got = interpreted(f"torch.save(run_ops(kernel_inputs(torch.float32, hidden={hidden}, int4_group={group})), "
                      "os.environ['OUT'])", tmp_path)
    assert_kernels_match(got, t, torch.float32)


INT4_ROWS = """
g = torch.Generator().manual_seed(1)
out = {}
for n, k, group in ((40, 96, 32), (24, 256, 64)):           # a partial last step along K; whole steps
    codes = Codes(torch.randn(n, k, generator=g), group)
    x = torch.randn(3, k + 1, generator=g).bfloat16()[:, 1:]    # rows that start off a 4-byte boundary
    y = torch.zeros(3, n, dtype=torch.bfloat16)
    ops.int4_rows(x, codes.qdata, codes.scale_and_zero, group, y)
    out[f"{n}x{k}"] = y
    out[f"{n}x{k} want"] = x.float() @ codes.dense.t()
result = out
"""


@TRITON
def test_the_int4_row_kernel_outside_the_step_matches_its_codes(small_kernels):
    """`int4_rows` (the row kernel of `quant.int4_kernel=triton`) on bf16 rows: each code read by its bits against
    the dequantized weight. The interpreter truncates to bf16 where a GPU rounds, hence the tolerance."""
    got = small_kernels["int4_rows"]
    for name in ("40x96", "24x256"):
        want = got[f"{name} want"]
        assert (got[name].float() - want).abs().max() <= 0.02 * want.abs().max(), name


EMBED = """
import types
g = torch.Generator().manual_seed(2)
codes = Codes(torch.randn(40, 160, generator=g), 32)     # 20 words a row: a partial block of the lookup
table = types.SimpleNamespace(table=codes)
token = torch.tensor([3, 39, 0])
out = torch.zeros(3, 160, dtype=torch.bfloat16)
ops.embed(token, table, out)
result = dict(got=out, want=codes.dense[token].bfloat16())
"""


@TRITON
def test_the_int4_token_lookup_kernel_dequantizes_the_rows_asked_for(small_kernels):
    """Each row as `int4.dequantize` gives it, within the one unit of bf16 that the interpreter's truncation (a GPU
    rounds to nearest) may take."""
    got = small_kernels["embed"]
    want = got["want"].float()
    assert ((got["got"].float() - want).abs() <= 2.0 ** -7 * want.abs()).all()


SPLIT = """
import torch.nn.functional as F
import triton
from sota.models import decode_triton
g = torch.Generator().manual_seed(3)
out = {}
# (residual, 4 parts of 1024 inputs, 40 rows), (normed and gated, 3 parts of 768 inputs, 40 gate and 40 up rows)
for shape, split, k in (("residual", 4, 1024), ("gated", 3, 768)):
    x, r, nw = torch.randn(2, k, generator=g), torch.randn(2, 40, generator=g), 1 + torch.randn(k, generator=g) / 4
    rows = 80 if shape == "gated" else 40          # a gated product's gate rows, then its up rows
    for kind in ("float", "int4"):
        w = torch.randn(rows, k, generator=g)
        w = Codes(w, 32) if kind == "int4" else w
        scratch = ops.proj_scratch(2, 80, x.device)
        scratch[0].fill_(float("nan"))                 # every part writes its sums before the last one reads them
        for tuner, row in ((decode_triton.proj, dict(BLOCK_N=16, BLOCK_K=128)),
                           (decode_triton.proj_int4, dict(BLOCK_N=16, BLOCK_W=16, AHEAD=1))):
            tuner.configs = [triton.Config(row | dict(STAGES=1, SPLIT=split), num_warps=1)]
            tuner.cache.clear()
        args = dict(norm=nw, eps=1e-5, gated=True) if shape == "gated" else dict(residual=r)
        y, again = torch.zeros(2, 40), torch.zeros(2, 40)
        ops.proj(x, w, y, scratch=scratch, **args)
        ops.proj(x, w, again, scratch=scratch, **args)   # the counts were left at zero for the next launch
        name = f"{kind} {shape}"
        dense = w.dense if kind == "int4" else w
        if shape == "gated":
            gate, up = (F.rms_norm(x, (k,), nw, 1e-5) @ dense.t()).chunk(2, dim=-1)
            out[name + " want"] = F.silu(gate) * up
        else:
            out[name + " want"] = r + x @ dense.t()
        out[name], out[name + " again"] = y, again
        out[name + " parts"], out[name + " counts"] = scratch
        out[name + " written"] = 2 * split * rows      # each batch row's parts' sums
result = out
"""


@TRITON
def test_a_product_split_over_programs_adds_its_parts_once(small_kernels):
    """A product split into parts of its inputs, 3 blocks of rows (40, the last partial): 4 parts of 1024 inputs
    (8 steps of 128, 2 a part) with a residual, and 3 parts of 768 normed inputs, gated (each part's gate and up
    sums). Each block's last part adds all parts' sums, and resets its count for the next launch."""
    got = small_kernels["split"]
    for name in ("float residual", "int4 residual", "float gated", "int4 gated"):
        want = got[name + " want"]
        torch.testing.assert_close(got[name], want, atol=1e-3, rtol=1e-4)
        assert torch.equal(got[name + " again"], got[name])
        assert (got[name + " counts"] == 0).all()
        written = got[name + " parts"].flatten()[:got[name + " written"]]
        assert not written.isnan().any()                 # it split: each part wrote its sums


QKV_SPLIT = """
import triton
from sota.models import decode_triton
out = {}
# 384 inputs, float in 6 steps of 64 and int4 in 6 steps of 8 words: 3 parts of 2 steps; pairs in blocks of 32
# (24 pairs a head: each block partial), q/k/v with a bias
for tuner, row in ((decode_triton.qkv_rope, dict(BLOCK_R=32, BLOCK_K=64)),
                   (decode_triton.qkv_rope_int4, dict(BLOCK_R=32, BLOCK_W=8, AHEAD=1))):
    tuner.configs = [triton.Config(row | dict(STAGES=1, SPLIT=3), num_warps=1)]
    tuner.cache.clear()
for group in (0, 32):
    t = kernel_inputs(torch.float32, **QKV_SPLIT_SHAPE, int4_group=group)
    rows = (t["heads"] + 2 * t["kv_heads"]) * t["d"]
    scratch = ops.proj_scratch(2, rows, t["x"].device)
    scratch[0].fill_(float("nan"))                 # every part writes its sums before the last one reads them
    name = "int4" if group else "float"
    for run in ("", " again"):                     # the counts were left at zero for the next launch
        q, k, v = torch.zeros(2, t["heads"] * t["d"]), t["k"].clone(), t["v"].clone()
        ops.qkv_rope(t["x"], t["norm"], 1e-5, t["w"], t["bias"], t["cos"], t["sin"], t["last_pos"], t["step"],
                     t["start"], q, k, v, t["heads"], t["kv_heads"], scratch)
        out[name + run] = dict(q=q, k=k, v=v)
    out[name + " parts"], out[name + " counts"] = scratch
    out[name + " written"] = 2 * 3 * rows          # each batch row's parts' sums
result = out
"""
QKV_SPLIT_SHAPE = dict(hidden=384, heads=2, kv_heads=1)   # few programs: the interpreter runs each as Python


@TRITON
@pytest.mark.parametrize("group", [0, 32])
def test_q_k_v_split_over_programs_adds_its_parts_before_rotary(small_kernels, group):
    """q/k/v split into 3 parts of its normed inputs: each part writes both rows of its rotary pairs, and a block's
    last part adds them up, adds the bias, rotates and writes q and the cache's slot, as the torch operation does
    (float weights, and int4 codes in groups of 32)."""
    name = "int4" if group else "float"
    got = small_kernels["qkv split"]
    want = run_ops(kernel_inputs(torch.float32, **QKV_SPLIT_SHAPE, int4_group=group), only=("q", "k", "v"))
    for out in ("q", "k", "v"):
        torch.testing.assert_close(got[name][out], want[out], atol=1e-4, rtol=1e-4, msg=out)
        assert torch.equal(got[name + " again"][out], got[name][out])
    assert (got[name + " counts"] == 0).all()
    assert not got[name + " parts"].flatten()[:got[name + " written"]].isnan().any()


ARGMAX = """
x = torch.full((3, 10000), -5.0)
x[0, 7000] = x[0, 9000] = 2.0                  # a tie across programs: the first wins
x[0, 100] = 1.5
x[1] = -torch.arange(10000.0) - 1.0            # all negative
x[2, 4095] = x[2, 4096] = 3.0                  # a tie across a block boundary
x = x.bfloat16()
scratch = ops.argmax_scratch(x)
first, second = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
ops.argmax(x, first, scratch)
ops.argmax(x, second, scratch)                 # the kernel left its scratch ready for another launch
result = dict(first=first, second=second, keys=scratch[0], counts=scratch[1])
"""


@TRITON
def test_the_argmax_kernel_picks_the_first_maximum_across_programs(small_kernels):
    got = small_kernels["argmax"]
    assert got["first"].tolist() == [7000, 0, 4095] and got["second"].tolist() == [7000, 0, 4095]
    assert (got["keys"] == torch.iinfo(torch.int64).min).all() and (got["counts"] == 0).all()


ATTEND = """
import triton
import torch.nn.functional as F
from sota.models import decode_triton
g = torch.Generator().manual_seed(4)
b, heads, kv_heads, max_len, d = 2, 4, 2, 40, 24
q = torch.randn(b, heads * d, generator=g)
keys, values = torch.randn(b, kv_heads, max_len, d, generator=g), torch.randn(b, kv_heads, max_len, d, generator=g)
cols = torch.arange(max_len)
valid = (cols[None] >= torch.tensor([[2], [9]])) & (cols[None] < 12)
start = torch.tensor(12)
out = {}
decode_triton.attend.configs = [triton.Config(dict(SPLIT_L=16, BLOCK_L=8), num_warps=1)]
decode_triton.attend.cache.clear()
for step in (0, 7, 27):
    got = torch.zeros(b, heads * d)
    ops.attend(q, keys, values, valid, torch.tensor(step), start, got, d ** -0.5)
    mask = valid | ((cols >= start) & (cols <= start + step))[None]
    want = F.scaled_dot_product_attention(q.view(b, heads, 1, d), keys, values, attn_mask=mask[:, None, None],
                                          scale=d ** -0.5, enable_gqa=True)
    out[f"step {step}"] = torch.stack((got, want.reshape(b, heads * d)))
result = out
"""


@TRITON
def test_attention_reads_the_steps_own_slot_in_any_tile_of_a_program(small_kernels):
    """A program loads its first tile's earlier slots before it waits on the kernel that writes this step's slot,
    and that slot after. Programs of 16 slots in tiles of 8: the step's slot (12 + step) falls in a later tile of
    its program (12) or in the first (19, 39), and at step 0 two programs lie past it and hold nothing."""
    for name, (got, want) in small_kernels["attend"].items():
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)


# The small kernels' checks run in one interpreted process (each process first spends seconds importing), each
# snippet in a scope of its own; the split checks go last, as they set the products' configurations.
SMALL = {"int4_rows": INT4_ROWS, "embed": EMBED, "argmax": ARGMAX, "attend": ATTEND, "split": SPLIT,
         "qkv split": QKV_SPLIT}
RUN_SMALL = """
results = {}
for name, code in SMALL.items():
    scope = dict(globals())
    exec(code, scope)
    results[name] = scope["result"]
torch.save(results, os.environ["OUT"])
"""


@pytest.fixture(scope="module")
def small_kernels(tmp_path_factory):
    return interpreted(RUN_SMALL, tmp_path_factory.mktemp("small_kernels"))


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("group", [0, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernels_match_the_torch_operations_on_cuda(dtype, group):
    """As above, on the device. In bf16 both sides round every value where transformers does, so they differ by
    summation order only: a unit in the last place of a rounded value, here and there."""
    t = kernel_inputs(dtype, hidden=128, int4_group=group)
    assert_kernels_match(run_ops(on_cuda(t)), t, dtype)


def on_cuda(t):
    cuda = {}
    for key, value in t.items():
        if isinstance(value, Codes):
            value = copy.copy(value)
            value.qdata, value.scale_and_zero = value.qdata.cuda(), value.scale_and_zero.cuda()
            value.bias = None if value.bias is None else value.bias.cuda()
        cuda[key] = value.cuda() if isinstance(value, torch.Tensor) else value
    return cuda


# Each autotuned kernel's candidates (decode_triton's tables) and the names of their columns.
TABLES = {"proj": ("PROJ", ("BLOCK_N", "BLOCK_K", "STAGES", "SPLIT")),
          "proj_int4": ("PROJ_INT4", ("BLOCK_N", "BLOCK_W", "STAGES", "SPLIT", "AHEAD")),
          "qkv_rope": ("ROPE", ("BLOCK_R", "BLOCK_K", "STAGES", "SPLIT")),
          "qkv_rope_int4": ("ROPE_INT4", ("BLOCK_R", "BLOCK_W", "STAGES", "SPLIT", "AHEAD")),
          "attend": ("ATTEND", ("SPLIT_L", "BLOCK_L"))}
# Which outputs of `run_ops` each autotuned kernel computes.
KERNEL_OUTPUTS = {"proj": ("o", "act", "head"), "proj_int4": ("o", "act", "head"), "qkv_rope": ("q", "k", "v"),
                  "qkv_rope_int4": ("q", "k", "v"), "attend": ("attn",)}


def test_split_products_fit_the_scratch():
    """The step's scratch (`proj_scratch`) holds SPLIT_MAX parts' sums: no table splits a product further."""
    decode_triton = pytest.importorskip("sota.models.decode_triton")
    for table in ("PROJ", "PROJ_INT4", "PROJ_ONE", "PROJ_INT4_ONE", "ROPE", "ROPE_INT4", "ROPE_ONE", "ROPE_INT4_ONE"):
        rows = getattr(decode_triton, table)
        for row in rows if isinstance(rows[0], tuple) else (rows,):
            assert 1 <= row[3] <= decode_triton.SPLIT_MAX, (table, row)


def interpreted_rows(table):
    """The rows of decode_triton's autotuning `table` that differ in the interpreter, which ignores warps and
    STAGES (Triton's pipelining)."""
    from sota.models import decode_triton

    return list({row[:2] + row[3:-1]: row for row in getattr(decode_triton, table)}.values())


# The chain once with the one configuration a kernel, then, from its inputs, the tuned kernel's operations alone
# with each row (the rest would repeat the same work: int4 q/k/v alone takes 15-20 s a run in the interpreter).
EVERY_CONFIGURATION = """
import triton
from sota.models import decode_triton
tuner = getattr(decode_triton, {kernel!r})
table, names = TABLES[{kernel!r}]
t = kernel_inputs(torch.float32, int4_group={group})
chain = run_ops(t)
rows = {{}}
for row in interpreted_rows(table):
    tuner.configs = [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1])]
    tuner.cache.clear()
    rows[repr(row)] = run_ops(t, inputs=chain, only=KERNEL_OUTPUTS[{kernel!r}])
torch.save(dict(chain=chain, rows=rows), os.environ["OUT"])
"""


@pytest.mark.slow
@TRITON
@pytest.mark.parametrize("kernel", sorted(TABLES))
def test_every_candidate_configuration_matches_the_torch_operations(kernel, tmp_path):
    """Each row of the kernel's autotuning table (block sizes, look-ahead) in the interpreter, float32 (int4 codes
    in groups of 16 for the int4 kernels): the masks and strides hold whichever row a device picks. The torch
    operations run here, outside the interpreter. Slow: the interpreter runs the kernel's operations once a row."""
    group = 16 if kernel.endswith("int4") else 0
    got = interpreted(EVERY_CONFIGURATION.format(kernel=kernel, group=group), tmp_path)
    table, _ = TABLES[kernel]
    assert list(got["rows"]) == [repr(row) for row in interpreted_rows(table)]
    t = kernel_inputs(torch.float32, int4_group=group)
    for row, outputs in got["rows"].items():
        assert set(outputs) == set(KERNEL_OUTPUTS[kernel])
        try:
            assert_kernels_match({**got["chain"], **outputs}, t, torch.float32, inputs=got["chain"])
        except AssertionError as error:
            raise AssertionError(f"{table} row {row}: {error}") from None


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("kernel", sorted(TABLES))
def test_every_candidate_configuration_matches_the_torch_operations_on_cuda(kernel):
    """The suite runs one small configuration a kernel (SOTA_TRITON_AUTOTUNE=0); autotuning may pick any row of
    the tables on a device, so each row is held to torch here (bf16, float weights or int4 codes in groups of
    32), the kernel's autotuner given that row alone."""
    import triton

    from sota.models import decode_triton

    tuner = getattr(decode_triton, kernel)
    table, names = TABLES[kernel]
    chosen = tuner.configs
    try:
        for row in getattr(decode_triton, table):
            tuner.configs = [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1])]
            tuner.cache.clear()
            t = kernel_inputs(torch.bfloat16, hidden=128, int4_group=32 if kernel.endswith("int4") else 0)
            assert_kernels_match(run_ops(on_cuda(t)), t, torch.bfloat16)
    finally:
        tuner.configs = chosen
        tuner.cache.clear()


class HalfProducts(Codes):
    """int4 codes multiplied as the kernels do in bf16 models: each product rounded to fp16 (f16x2), float32 sums."""

    def __call__(self, x):
        sums = (x.half()[:, None, :] * self.dense.half()[None]).float().sum(-1)
        return (sums + (0 if self.bias is None else self.bias.float())).to(x.dtype)


def test_the_q_k_v_bound_admits_half_products_and_refuses_a_missing_part():
    """The device check below at the 3B width, on the CPU: q/k/v with the products rounded to fp16 stays within
    `tolerance` (a bound by each value alone does not: where the rotation cancels, its inputs' last place is
    more), and with one part of three left out it does not."""
    t = kernel_inputs(torch.bfloat16, hidden=3072, int4_group=32)
    want = run_ops(t, only=("q", "k", "v"))

    def out_of_bound(w):
        got = run_ops({**t, "w": w}, only=("q", "k", "v"))
        return {o: int((excess(o, got[o], want[o], t["d"], torch.bfloat16) > 0).sum()) for o in ("q", "k", "v")}

    half = copy.copy(t["w"])
    half.__class__ = HalfProducts
    assert out_of_bound(half) == {"q": 0, "k": 0, "v": 0}
    missing = copy.copy(t["w"])
    missing.dense = t["w"].dense.clone()
    missing.dense[:, 2048:] = 0
    assert min(out_of_bound(missing).values()) > 100


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("kernel", ["qkv_rope", "qkv_rope_int4"])
def test_q_k_v_split_rows_match_the_torch_operation_on_cuda(kernel):
    """Each row of q/k/v's tables that splits its inputs, at the 3B shape's hidden size (3,072: every such row
    splits there), bf16, against the torch operation, within `tolerance` (held to its error model on the CPU
    above)."""
    import triton

    from sota.models import decode_triton

    tuner = getattr(decode_triton, kernel)
    table, names = TABLES[kernel]
    splits = [row for row in getattr(decode_triton, table) if row[3] > 1]
    t = kernel_inputs(torch.bfloat16, hidden=3072, int4_group=32 if kernel.endswith("int4") else 0)
    want = run_ops(t, only=("q", "k", "v"))
    chosen = tuner.configs
    try:
        for row in splits:
            tuner.configs = [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1])]
            tuner.cache.clear()
            got = run_ops(on_cuda(t), only=("q", "k", "v"))
            for out in ("q", "k", "v"):
                past = excess(out, got[out], want[out], t["d"], torch.bfloat16)
                assert (past <= 0).all(), (row, out, past.max().item())
    finally:
        tuner.configs = chosen
        tuner.cache.clear()
    assert splits


# Argument types for compiling the kernels without a device: pointers by name (int4 codes and their scales are
# read as int32 words), the rest 32-bit.
POINTERS = {"q_ptr": "*bf16", "w_ptr": "*bf16", "sz_ptr": "*i32", "q_codes_ptr": "*i32", "last_pos_ptr": "*i64",
            "step_ptr": "*i64", "start_ptr": "*i64", "valid_ptr": "*i1", "part_ptr": "*fp32",
            "count_ptr": "*i32", "key_ptr": "*i64", "token_ptr": "*i64", "x_ptr": "*bf16"}
KERNELS = {  # kernel (and a variant): its constexprs, as the step launches it on an H100 (Llama-3.2-3B's widths);
    # a variant named "pdl" waits on the kernel before it (PDL), as on a device of compute capability 9.0 on
    "proj": dict(NORM=True, GATED=True, RESIDUAL=True, BLOCK_N=4, BLOCK_K=1024, STAGES=3, SPLIT=1, WHOLE=True,
                 LONG=False),
    "proj split": dict(NORM=False, GATED=False, RESIDUAL=True, BLOCK_N=4, BLOCK_K=512, STAGES=1, SPLIT=4,
                       WHOLE=False, LONG=False),
    "proj_int4": dict(NORM=True, GATED=True, RESIDUAL=True, GROUP=128, BLOCK_N=16, BLOCK_W=32, EVEN=True,
                      STAGES=3, SPLIT=1, AHEAD=0, WHOLE=True, LONG=False),
    "proj_int4 normed": dict(NORM=True, GATED=True, RESIDUAL=False, GROUP=128, BLOCK_N=4, BLOCK_W=128, EVEN=True,
                             STAGES=1, SPLIT=1, AHEAD=0, WHOLE=False, LONG=False),
    "proj_int4 split": dict(NORM=False, GATED=False, RESIDUAL=True, GROUP=128, BLOCK_N=4, BLOCK_W=128, EVEN=True,
                            STAGES=1, SPLIT=4, AHEAD=0, WHOLE=False, LONG=False),
    "proj_int4 split gated": dict(NORM=True, GATED=True, RESIDUAL=False, GROUP=128, BLOCK_N=4, BLOCK_W=128,
                                  EVEN=True, STAGES=1, SPLIT=3, AHEAD=0, WHOLE=False, LONG=False),
    "qkv_rope": dict(HEADS=24, KV_HEADS=8, D=128, HAS_BIAS=True, BLOCK_R=4, BLOCK_K=512, STAGES=1, SPLIT=1,
                     WHOLE=False, LONG=False),
    "qkv_rope split": dict(HEADS=24, KV_HEADS=8, D=128, HAS_BIAS=True, BLOCK_R=2, BLOCK_K=1024, STAGES=1, SPLIT=3,
                           WHOLE=False, LONG=False),
    "qkv_rope_int4": dict(HEADS=24, KV_HEADS=8, D=128, HAS_BIAS=False, GROUP=128, BLOCK_R=8, BLOCK_W=32, EVEN=False,
                          STAGES=3, SPLIT=1, AHEAD=0, WHOLE=False, LONG=False),
    "qkv_rope_int4 ahead": dict(HEADS=24, KV_HEADS=8, D=128, HAS_BIAS=False, GROUP=128, BLOCK_R=4, BLOCK_W=128,
                                EVEN=True, STAGES=1, SPLIT=1, AHEAD=1, WHOLE=False, LONG=False),
    "qkv_rope_int4 split": dict(HEADS=24, KV_HEADS=8, D=128, HAS_BIAS=False, GROUP=128, BLOCK_R=4, BLOCK_W=128,
                                EVEN=True, STAGES=1, SPLIT=3, AHEAD=0, WHOLE=False, LONG=False),
    "proj_int4 ahead pdl": dict(NORM=True, GATED=True, RESIDUAL=False, GROUP=128, BLOCK_N=16, BLOCK_W=64,
                                EVEN=True, STAGES=1, SPLIT=1, AHEAD=1, WHOLE=False, LONG=False),
    "attend": dict(HEADS=24, KV_HEADS=8, D=128, BLOCK_D=128, SPLIT_L=128, BLOCK_L=64),
    "argmax": dict(BLOCK=4096),
    "embed_int4": dict(GROUP=64, BLOCK_W=64),
}
KERNELS |= {f"{name} pdl": KERNELS[name] for name in ("proj split", "proj_int4 split gated", "qkv_rope_int4 split",
                                                       "attend")}


@TRITON
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_the_kernels_compile_for_a_gpu(name):
    """The interpreter runs the kernels as Python and accepts what Triton's compiler refuses (a global that is not
    a constexpr, say): each kernel is compiled here, down to machine code, for an sm_90 (H100/H200) target."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sota.models import decode_triton

    kernel_name = name.split()[0]
    fn = getattr(decode_triton, kernel_name)
    while not isinstance(fn, triton.runtime.JITFunction):   # under the autotuner and heuristics
        fn = fn.fn
    constexprs = {"PDL": "pdl" in name} | KERNELS[name]
    pointers = POINTERS | ({"q_ptr": "*i32"} if kernel_name in ("proj_int4", "embed_int4") else {})   # the codes
    signature = {a: pointers.get(a, "*bf16") if a.endswith("_ptr") else "fp32" if a in ("eps", "scale") else "i32"
                 for a in fn.arg_names if a not in constexprs}
    aligned = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in signature
               if a.endswith("_ptr") or a.startswith("stride") or a in ("K", "N")}
    try:
        kernel = triton.compile(ASTSource(fn, signature, constexprs, aligned), target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": 4})
    except RuntimeError as e:                  # no ptxas for this platform in the wheel
        if "ptxas" in str(e):
            pytest.skip(str(e)[:200])
        raise
    assert kernel.asm["cubin"]


ANSWER = """
from test_decoding import answers
model = decisive_model(3)
model.llm.requires_grad_(False)
torch.save({{b: answers(model, [0.4, 2.0, 1.1], ["asr", "aac", "asr"], b, max_new_tokens=6) for b in {backends}}}
           | {{"used": model.static_decoders("fused", 6).last.fused is not None}}, os.environ["OUT"])
"""


@pytest.mark.slow
@TRITON
def test_the_fused_backend_in_the_interpreter_answers_as_the_static_backend(tmp_path):
    got = interpreted(ANSWER.format(backends=("static", "fused")), tmp_path)
    assert got["used"] and got["fused"] == got["static"]


def test_kernels_launch_as_programmatic_dependents_only_where_the_device_has_it(monkeypatch):
    from sota.utils import triton_support

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(triton_support, "_hopper_on", lambda index: True)
    monkeypatch.delenv("SOTA_TRITON_PDL", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert triton_support.dependent_launch(cuda)
    assert not triton_support.dependent_launch(torch.device("cpu"))
    monkeypatch.setenv("SOTA_TRITON_PDL", "0")
    assert not triton_support.dependent_launch(cuda)
    monkeypatch.delenv("SOTA_TRITON_PDL")
    monkeypatch.setattr(triton_support, "_hopper_on", lambda index: False)     # an A100, or a ROCm device
    assert not triton_support.dependent_launch(cuda)


@TRITON
def test_autotuning_results_are_kept_on_disk_where_triton_can(monkeypatch):
    """Each sweep point and each measurement from export is a fresh process: the kernels' autotuners keep their
    timings in Triton's cache (Triton 3.4 on), so a later process need not compile and time every candidate."""
    import inspect

    triton = pytest.importorskip("triton")
    from triton.runtime.autotuner import Autotuner

    from sota.compress import int4_triton
    from sota.models import decode_triton
    from sota.utils import triton_support

    tuners = {decode_triton.proj, decode_triton.proj_int4, decode_triton.qkv_rope, decode_triton.qkv_rope_int4,
              decode_triton.attend, *(k for k in int4_triton._kernels() if isinstance(k, Autotuner))}
    kept = "cache_results" in inspect.signature(triton.autotune).parameters and not triton_support.interpreted()
    assert len(tuners) == 6 and all(t.cache_results == kept for t in tuners)     # the step's five and the gemm
    monkeypatch.setattr(triton, "autotune", lambda configs, key, prune_configs_by=None: None)   # before 3.4
    assert triton_support.tuning_options() == {}


TUNED_BY_BATCH = """
import triton
from sota.models import decode_triton
tuners = {kernel: getattr(decode_triton, kernel) for kernel in TABLES}
for kernel, tuner in tuners.items():     # two candidates, so the tuner keys its picks; timed by block size here
    table, names = TABLES[kernel]
    tuner.configs = [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1])
                     for row in getattr(decode_triton, table)[:2]]
    tuner._bench = lambda *args, config, **kwargs: float(sum(config.kwargs.values()))
for b in (2, 1):
    for group in (0, 16):
        run_ops(kernel_inputs(torch.float32, b=b, int4_group=group))
torch.save({kernel: sorted({key[tuner.keys.index("BATCH")] for key in tuner.cache})
            for kernel, tuner in tuners.items()}, os.environ["OUT"])
"""


@pytest.mark.slow  # a minute in the interpreter: the default tier stays under 8 minutes on 2 cores
@TRITON
def test_autotuning_picks_blocks_for_each_batch_size(tmp_path):
    """Evaluation decodes batches of up to 64, measurement one row: the blocks tuned at one must not serve the
    other (the tuning is also kept on disk, across processes). Each autotuned kernel of the step keys its tuning on
    the batch rounded up to a power of two."""
    tuned = interpreted(TUNED_BY_BATCH, tmp_path)
    assert tuned == {kernel: [1, 2] for kernel in TABLES}


def test_models_the_step_cannot_read_decode_with_the_compiled_step_and_say_why():
    model = decisive_model(5)                               # LoRA-style trainable weights: projections stay apart
    dec = Decoders(model.llm, "fused", max_new_tokens=4).get(1, 8)
    assert dec.fused is None and "not fused" in dec.note and "compiled step" in dec.note
    llm = tiny("llama")
    llm.config.hidden_act = "gelu"
    assert "SiLU" in decode_step.unsupported(llm)
    assert decode_step.unsupported(tiny("llama").model) is not None    # not a causal LM with a head


def test_a_quantized_layout_the_step_cannot_read_is_named_with_the_settings_it_can():
    from sota.compress import quant

    from test_fuse import frozen
    from test_quant import model_of, qcfg

    model = model_of(hidden=64)
    quant.quantize(model, qcfg("int8_weight"), "cpu")               # torchao's Int8Tensor weights
    frozen(model)
    dec = Decoders(model.llm, "fused", max_new_tokens=4).get(1, 8)
    assert dec.fused is None and "Int8Tensor" in dec.note
    assert "quant.int4_layout=compact" in dec.note and "quant.int4_kernel=triton" in dec.note


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, "int4"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_fused_step_on_cuda_matches_a_full_forward_in_a_graph(family, dtype):
    if dtype == "int4":
        llm, dtype = int4_llm(family, device="cuda"), torch.bfloat16
    else:
        llm = tiny(family, head_dim=64).to("cuda", dtype)
    fuse_for_decoding(llm, "fused")
    ids = torch.tensor([[5, 6, 7, 8], [0, 3, 4, 5]], device="cuda")
    attn = (torch.arange(4, device="cuda")[None] >= torch.tensor([[0], [1]], device="cuda")).long()
    dec = StaticDecoder(llm, batch_size=2, max_len=2 * BUCKET, graphs=True, step="fused")
    first = dec.prefill(llm.get_input_embeddings()(ids), attn).clone()
    got = [dec.step().clone() for _ in range(6)]           # captured, then replayed
    assert dec._decode_graph is not None
    seq, mask = torch.cat([ids, first[:, None]], 1), torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
    for token in got:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        full = llm(input_ids=seq, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float()
        top2 = full.topk(2).values
        decided = (top2[:, 0] - top2[:, 1]) > (0.05 if dtype == torch.bfloat16 else 1e-3)
        assert (token == full.argmax(-1))[decided].all()
        seq = torch.cat([seq, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
