"""Fused q/k/v and gate/up projections (sota.models.fuse): same outputs as the separate products, in float and
in torchao's int8 (CPU) and int4 (gpu tier) layouts; undone exactly for export; left alone where the LLM trains."""

import pytest
import torch
from torch import nn

from sota.compress import quant
from sota.models import fuse
from sota.models.decoding import Decoders, fuse_for_decoding

from test_decoding import CUDA, answers, decisive_model
from test_quant import model_of, qcfg


def frozen(model):
    for p in model.llm.parameters():
        p.requires_grad_(False)
    return model


def llm_logits(llm, seed=0):
    ids = torch.randint(0, llm.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return llm(input_ids=ids.to(llm.device)).logits


def plain_state(llm):
    return {k: v.detach().clone() for k, v in llm.state_dict().items()}


def test_fusing_float_projections_keeps_logits_and_unfusing_restores_the_weights():
    model = frozen(model_of(hidden=32))
    before, state = llm_logits(model.llm), plain_state(model.llm)
    counts = fuse.fuse(model.llm)
    layers = model.llm.config.num_hidden_layers
    assert counts == {"qkv": layers, "gate_up": layers} and fuse.is_fused(model.llm)
    attn = model.llm.model.layers[0].self_attn
    assert isinstance(attn.q_proj, fuse.FusedPart) and attn.qkv_fused.weight.shape[0] == 32 + 2 * 16
    torch.testing.assert_close(llm_logits(model.llm), before, rtol=0, atol=1e-6)
    assert fuse.fuse(model.llm) == {"qkv": 0, "gate_up": 0}     # already fused: nothing to do
    assert fuse.unfuse(model.llm) == 2 * layers and not fuse.is_fused(model.llm)
    after = model.llm.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v), k
        assert after[k].is_contiguous()
    assert torch.equal(llm_logits(model.llm), before)


def test_a_group_fused_under_inference_mode_unfuses_outside_it():
    """Lightning's test loop decodes under inference mode, so the groups it fuses hold inference tensors, and its
    teardown then moves the module outside that mode (parameters keep their objects, with new data); the export
    after it unfuses them into ordinary tensors."""
    model = frozen(model_of(hidden=32))
    state = plain_state(model.llm)
    with torch.inference_mode():
        fuse.fuse(model.llm)
    assert model.llm.model.layers[0].self_attn.qkv_fused.weight.is_inference()
    model.llm.double().float()     # as a move to another device: no view of these weights may be taken now
    assert fuse.unfuse(model.llm) == 2 * model.llm.config.num_hidden_layers
    for k, v in model.llm.state_dict().items():
        assert torch.equal(v, state[k]), k
    attn = model.llm.model.layers[0].self_attn
    assert not attn.q_proj.weight.is_inference()
    with torch.no_grad():
        attn.q_proj.weight.mul_(1.0)              # an ordinary tensor: updated in place outside inference mode


def test_a_part_called_out_of_order_computes_its_own_rows():
    model = frozen(model_of(hidden=32))
    attn = model.llm.model.layers[0].self_attn
    x = torch.randn(1, 3, 32)
    want = [m(x) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    fuse.fuse(model.llm)
    with torch.no_grad():
        torch.testing.assert_close(attn.v_proj(x), want[2])        # v before q: its own rows of the fused weight
        got = [m(x) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert attn.qkv_fused._input is None   # the group's activations are not kept after its last part


def test_int8_weights_are_fused_in_their_own_layout_and_sliced_back_exactly():
    model = model_of(hidden=64)
    quant.quantize(model, qcfg("int8_weight"), "cpu")
    frozen(model)
    before, state = llm_logits(model.llm), {k: v for k, v in model.llm.state_dict().items()}
    inner = {k: [t.clone() for t in (v.qdata, v.scale)] for k, v in state.items() if hasattr(v, "qdata")}
    assert inner, "int8_weight should give torchao Int8Tensor weights"
    fuse.fuse(model.llm)
    fused = model.llm.model.layers[0].mlp.gate_up_fused.weight
    assert type(fused).__name__ == "Int8Tensor" and fused.shape == (2 * 128, 64)
    torch.testing.assert_close(llm_logits(model.llm), before, rtol=1e-3, atol=1e-3)
    fuse.unfuse(model.llm)
    after = model.llm.state_dict()
    for k, (qdata, scale) in inner.items():
        assert torch.equal(after[k].qdata, qdata) and torch.equal(after[k].scale, scale), k


def test_int8_weights_fused_under_inference_mode_unfuse_after_a_move():
    """As the float case: fused in Lightning's test loop, moved by its teardown, then exported."""
    model = model_of(hidden=64)
    quant.quantize(model, qcfg("int8_weight"), "cpu")
    frozen(model)
    state = {k: (v.qdata.clone(), v.scale.clone()) for k, v in model.llm.state_dict().items() if hasattr(v, "qdata")}
    with torch.inference_mode():
        fuse.fuse(model.llm)
    assert model.llm.model.layers[0].mlp.gate_up_fused.weight.is_inference()
    model.llm._apply(lambda t: t.clone())       # a move: every tensor replaced outside inference mode
    assert fuse.unfuse(model.llm) == 2 * model.llm.config.num_hidden_layers
    after = model.llm.state_dict()
    for k, (qdata, scale) in state.items():
        assert torch.equal(after[k].qdata, qdata) and torch.equal(after[k].scale, scale), k


class OtherLayout(torch.Tensor):
    pass


def test_an_unknown_layout_is_left_unfused():
    odd = [torch.zeros(2, 2).as_subclass(OtherLayout) for _ in range(2)]
    with pytest.raises(fuse.Unfusable, match="no known row layout"):
        fuse.cat_rows(odd)
    model = frozen(model_of(hidden=32))
    mlp = model.llm.model.layers[0].mlp
    for lin in (mlp.gate_proj, mlp.up_proj):
        lin.weight = nn.Parameter(lin.weight.detach().as_subclass(OtherLayout), requires_grad=False)
    assert fuse.fuse(model.llm) == {"qkv": 1, "gate_up": 0}


def test_a_training_llm_is_not_fused_for_decoding():
    model = model_of(hidden=32)
    for p in model.llm.parameters():
        p.requires_grad_(True)
    assert fuse_for_decoding(model.llm) is None and not fuse.is_fused(model.llm)
    assert Decoders(model.llm, "compiled", 8).fused is None


def test_the_compiled_backend_fuses_a_frozen_llm_and_decodes_the_static_answers():
    model = frozen(decisive_model(3))
    seconds, tasks = [0.4, 2.0, 1.1], ["asr", "aac", "asr"]
    static = answers(model, seconds, tasks, "static")
    compiled = answers(model, seconds, tasks, "compiled")   # on a CPU: the static loop, over fused projections
    assert fuse.is_fused(model.llm) and model.static_decoders("compiled", 12).fused.startswith("compiled: qkv")
    model.forget_compiled()   # strict measurement does this: the next decoders still say what is fused
    n = model.llm.config.num_hidden_layers
    assert model.static_decoders("compiled", 12).fused == f"compiled: qkv projections fused in {n} layers, " \
        f"gate_up projections fused in {n} layers"
    assert compiled == static
    assert answers(model, seconds, tasks, "eager") == static


@pytest.mark.gpu
@CUDA
def test_int4_weights_are_fused_and_compiled_decoding_keeps_its_answers():
    model = model_of(hidden=256).cuda()
    quant.quantize(model, qcfg("int4_weight", group_size=64), "cuda")
    frozen(model)
    seconds, tasks = [0.4, 2.0], ["asr", "aac"]
    before, logits = answers(model, seconds, tasks, "static"), llm_logits(model.llm)
    state = {k: v for k, v in model.llm.state_dict().items() if hasattr(v, "qdata")}
    assert model.static_decoders("compiled", 12).fused
    weight = model.llm.model.layers[0].self_attn.qkv_fused.weight
    assert type(weight).__name__ == "Int4TilePackedTo4dTensor"
    torch.testing.assert_close(llm_logits(model.llm), logits, rtol=2e-2, atol=2e-2)
    assert answers(model, seconds, tasks, "compiled") == before
    fuse.unfuse(model.llm)
    after = model.llm.state_dict()
    for k, v in state.items():
        assert torch.equal(after[k].qdata, v.qdata) and torch.equal(after[k].scale_and_zero, v.scale_and_zero), k


def compact_int4(hidden=64, group_size=32):
    model = model_of(hidden=hidden)
    quant.quantize(model, qcfg("int4_weight", group_size=group_size, int4_layout="compact"), "cpu")
    return frozen(model)


def test_compact_int4_groups_are_packed_as_one_layer_and_unfused_to_the_same_codes():
    from sota.compress.int4 import Int4Linear

    model = compact_int4()
    attn = model.llm.model.layers[0].self_attn
    codes = {n: [t.clone() for t in m.codes()] for n, m in model.llm.named_modules() if isinstance(m, Int4Linear)}
    before = llm_logits(model.llm)
    layers = model.llm.config.num_hidden_layers
    assert fuse.fuse(model.llm) == {"qkv": layers, "gate_up": layers}
    fused = attn.qkv_fused
    assert isinstance(fused, fuse.FusedStack) and isinstance(fused.layer, Int4Linear)
    assert fused.layer.out_features == 64 + 2 * 32 and fused.parts == [64, 32, 32]
    # the same codes in one layer: each member's rows of the product are its own product, to the bit
    assert torch.equal(llm_logits(model.llm), before)
    x = torch.randn(1, 3, 64)
    with torch.no_grad():
        want = attn.v_proj(x)                                       # out of order: its own rows
        got = [m(x) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    assert torch.equal(got[2], want)
    assert fuse.unfuse(model.llm) == 2 * layers
    after = {n: m.codes() for n, m in model.llm.named_modules() if isinstance(m, Int4Linear)}
    assert after.keys() == codes.keys()
    for name, (q, scales, zeros) in codes.items():
        assert all(torch.equal(a, b) for a, b in zip(after[name], (q, scales, zeros))), name
    assert torch.equal(llm_logits(model.llm), before)


def test_compact_int4_of_another_group_size_is_left_unfused():
    from sota.compress.int4 import Int4Linear

    model = compact_int4()
    mlp = model.llm.model.layers[0].mlp
    q, scales, zeros = mlp.up_proj.codes()
    mlp.up_proj = Int4Linear.from_codes(q, scales[:, ::2], zeros[:, ::2], 64)     # groups of 64, not 32
    counts = fuse.fuse(model.llm)
    layers = model.llm.config.num_hidden_layers
    assert counts == {"qkv": layers, "gate_up": layers - 1}
    assert isinstance(mlp.gate_proj, Int4Linear)


def test_the_compiled_backend_fuses_compact_int4_and_keeps_the_answers():
    model = compact_int4()
    seconds, tasks = [0.4, 2.0], ["asr", "aac"]
    eager = answers(model, seconds, tasks, "eager")
    compiled = answers(model, seconds, tasks, "compiled")      # on a CPU: the static loop over fused int4 groups
    assert fuse.is_fused(model.llm) and model.static_decoders("compiled", 12).fused.startswith("compiled: qkv")
    assert compiled == answers(model, seconds, tasks, "static")
    assert eager and compiled


@pytest.mark.gpu
@CUDA
def test_compact_int4_groups_fuse_on_cuda_to_the_same_logits():
    model = model_of(hidden=256).cuda()
    quant.quantize(model, qcfg("int4_weight", group_size=64, int4_layout="compact"), "cuda")
    frozen(model)
    before = llm_logits(model.llm)
    assert fuse.fuse(model.llm)["qkv"] > 0
    assert isinstance(model.llm.model.layers[0].self_attn.qkv_fused, fuse.FusedStack)
    torch.testing.assert_close(llm_logits(model.llm), before, rtol=1e-2, atol=1e-2)
    fuse.unfuse(model.llm)
    torch.testing.assert_close(llm_logits(model.llm), before, rtol=0, atol=0)
