"""int4 weights in the compact layout (sota.compress.int4): unpadded codes on torch's own int4 kernels, here on
the CPU; the CUDA branch has its GPU test at the end."""
import pytest
import torch
from torch import nn

from sota.compress import int4, int4_triton, quant
from sota.models.footprint import footprint
from sota.plan.weights import layer_bytes

from test_mixed import calib
from test_quant import LINEARS, logits, model_of, qcfg


def _codes(n=192, k=576, group_size=64, seed=0):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    return w, *int4.rtn(w, group_size)


def test_rtn_codes_are_torchaos_round_to_nearest():
    from torchao.quantization.quant_primitives import _quantize_affine_tinygemm

    w, q, scales, zeros = _codes()
    ref = _quantize_affine_tinygemm(w.to(torch.bfloat16), (1, 64), scales, zeros, torch.int32, quant_min=0, quant_max=15)
    assert q.dtype == torch.uint8 and torch.equal(q.to(torch.int32), ref)
    assert (int4.dequantize(q, scales, zeros, 64) - w).abs().max() < 0.6 * scales.float().max()   # half a step + bf16


def test_an_int4_linear_multiplies_by_its_codes_and_stores_no_padding():
    w, q, scales, zeros = _codes()
    bias = torch.randn(192)
    layer = int4.Int4Linear.from_codes(q, scales, zeros, 64, bias)
    x = torch.randn(3, 5, 576)
    want = x @ int4.dequantize(q, scales, zeros, 64).t() + bias
    y = layer(x)
    assert y.shape == (3, 5, 192) and y.dtype == torch.float32
    assert (y - want).abs().max() < 0.02 * want.abs().max()
    # 576 x 192 codes at two per byte, plus a bf16 scale and zero per group of 64 and row: nothing padded
    assert footprint(layer)["weight_bytes"] == 576 * 192 // 2 + 9 * 192 * 2 * 2 + 192 * 4
    assert layer_bytes("int4_weight", 192, 576, torch.bfloat16, 64, int4_layout="compact", device_type="cpu") == \
        576 * 192 // 2 + 9 * 192 * 2 * 2
    assert layer_bytes("int4_weight", 192, 576, torch.bfloat16, 64) == 1024 * 192 // 2 + 16 * 192 * 2 * 2  # torchao
    # rows the CPU kernel cannot take alone are padded to 16, and cut from the output
    codes = int4.rtn(torch.randn(100, 64), 32)
    odd = int4.Int4Linear.from_codes(*codes, 32)
    got, want = odd(x[0, :, :64]), x[0, :, :64] @ int4.dequantize(*codes, 32).t()
    assert got.shape == (5, 100) and (got - want).abs().max() < 0.02 * want.abs().max()
    assert footprint(odd)["weight_bytes"] == layer_bytes("int4_weight", 100, 64, torch.bfloat16, 32,
                                                         int4_layout="compact", device_type="cpu") == 112 * (32 + 8)
    assert torch.allclose(layer.dequantized_weight().float(), int4.dequantize(q, scales, zeros, 64), atol=1e-2, rtol=1e-2)
    back = layer.to_linear()
    assert type(back) is nn.Linear and back.weight.dtype == torch.bfloat16
    assert (back(x.bfloat16()).float() - layer(x)).abs().max() < 0.02 * layer(x).abs().max()


def test_an_int4_linear_keeps_its_scales_in_bf16_and_refuses_devices_without_kernels():
    _, q, scales, zeros = _codes(n=64, k=128)
    layer = int4.Int4Linear.from_codes(q, scales, zeros, 64)
    x = torch.randn(2, 128)
    before = layer(x)
    layer.float()
    layer.to("cpu")
    assert layer.scale_and_zero.dtype == torch.bfloat16 and torch.equal(layer(x), before)
    with pytest.raises(RuntimeError, match="cannot move to meta"):
        layer.to("meta")


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["tinygemm", "triton"])
def test_an_int4_linear_moved_between_devices_is_packed_again_for_each(kernel):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if kernel == "triton" and not int4_triton.available():
        pytest.skip("needs Triton")
    _, q, scales, zeros = _codes(n=100, k=576)   # rows padded to 8 on CUDA, 16 on the CPU
    layer = int4.Int4Linear.from_codes(q.cuda(), scales.cuda(), zeros.cuda(), 64, torch.randn(100, device="cuda"),
                                       kernel)
    x = torch.randn(3, 576)
    on_cuda = layer(x.cuda()).cpu()
    layer.to("cpu")       # what Lightning does when it tears down
    assert layer.qdata.device.type == "cpu" and all(torch.equal(a, b) for a, b in zip(layer.codes(), (q, scales, zeros)))
    assert (layer(x) - on_cuda).abs().max() < 0.02 * on_cuda.abs().max()
    layer.to("cuda")
    assert layer.packing == kernel and torch.equal(layer(x.cuda()).cpu(), on_cuda)


def test_int4_on_the_cpu_quantizes_every_linear_in_the_compact_layout(batch):
    model = model_of(hidden=64)
    ref = logits(model, batch)
    rec = quant.quantize(model, qcfg("int4_weight", group_size=32), "cpu")
    layers = [m for m in model.llm.modules() if isinstance(m, int4.Int4Linear)]
    assert len(layers) == len(LINEARS) == rec["quantized_modules"]
    assert any("compact layout" in n and "round-to-nearest" in n for n in rec["notes"])
    assert type(model.llm.lm_head) is nn.Linear   # skipped by default, as in every mode
    out = logits(model, batch)
    assert torch.isfinite(out).all() and (out - ref).abs().max() < 0.25 * ref.abs().max()
    assert rec["weight_bytes_after"] < rec["weight_bytes_before"]
    assert len(model.generate(batch, max_new_tokens=3)) == 2
    unskipped = quant.quantize(model_of(hidden=64), qcfg("int4_weight", group_size=32, skip=[]), "cpu")
    assert any("embeddings stay bf16 (model.embed_tokens)" in n for n in unskipped["notes"])   # said, not silent
    # what a checkpoint reload does: quantize a fresh float model the same way, then load the state
    fresh = model_of(hidden=64, seed=1)
    quant.quantize(fresh, qcfg("int4_weight", group_size=32), "cpu")
    quant.load_state_dict(fresh, model.state_dict())
    assert torch.equal(logits(fresh, batch), out)
    # and back to float for another quantization (export --quant)
    assert quant.dequantize(model.llm) == len(LINEARS)
    assert not any(isinstance(m, int4.Int4Linear) for m in model.modules())
    assert torch.allclose(logits(model, batch), out, atol=1e-2 * out.abs().max())


def test_gptq_in_the_compact_layout_on_the_cpu(batch):
    model = model_of(hidden=64)
    batches = calib(model)
    rtn = model_of(hidden=64)
    quant.quantize(rtn, qcfg("int4_weight", group_size=32), "cpu")
    rec = quant.quantize(model, qcfg("int4_weight", group_size=32, algorithm="gptq"), "cpu", calib=batches)
    assert any("compact layout" in n and "GPTQ, Hessians of 2 calibration batches" in n for n in rec["notes"])
    q_gptq = model.llm.model.layers[0].mlp.down_proj
    q_rtn = rtn.llm.model.layers[0].mlp.down_proj
    assert isinstance(q_gptq, int4.Int4Linear) and not torch.equal(q_gptq.qdata, q_rtn.qdata)
    assert torch.isfinite(logits(model, batch)).all()


def test_mixed_precision_can_choose_compact_int4_on_the_cpu():
    from test_mixed import mcfg

    model = model_of(hidden=64)
    cfg = mcfg(modes=["int4_weight", "none"], avg_bits=10.0, group_size=32)
    problems = []
    quant.validate(cfg, "cpu", problems)
    assert problems == []
    rec = quant.quantize(model, cfg, "cpu", calib=calib(model))
    assert rec["avg_bits"] <= 10.0 and rec["counts"].get("int4_weight", 0) >= 1
    # the compact layout's bits are its codes plus group scales: 4 + 2 * 16 / 32 = 5 per weight here
    assert all(abs(b["int4_weight"] - 5.0) < 0.05 for b in rec["bits"].values())


def test_mixed_precision_scores_and_stores_int4_with_gptq_codes():
    from test_mixed import mcfg

    batches = calib(model_of(hidden=64))
    rtn, model, again = model_of(hidden=64), model_of(hidden=64), model_of(hidden=64)
    common = dict(modes=["int4_weight", "none"], avg_bits=10.0, group_size=32)
    rec_rtn = quant.quantize(rtn, mcfg(**common), "cpu", calib=batches)
    rec = quant.quantize(model, mcfg(**common, algorithm="gptq"), "cpu", calib=batches)
    assert rec["counts"]["int4_weight"] >= 1
    assert any("int4 scored and stored with GPTQ codes" in n for n in rec["notes"])
    # int4 was scored with GPTQ's codes: the scores are not round-to-nearest's
    assert any(rec["sensitivity"][k]["int4_weight"] != rec_rtn["sensitivity"][k]["int4_weight"] for k in rec["map"])
    chosen = [k.removeprefix("llm.") for k, m in rec["map"].items() if m == "int4_weight"]
    kept = [k.removeprefix("llm.") for k, m in rec["map"].items() if m == "none"]
    assert all(isinstance(model.llm.get_submodule(n), int4.Int4Linear) for n in chosen)
    assert all(type(model.llm.get_submodule(n)) is torch.nn.Linear for n in kept)
    # what is stored is GPTQ's rounding of each linear under the unquantized model's Hessians
    from sota.compress import mixed

    candidates = {"llm": {k.removeprefix("llm."): again.llm.get_submodule(k.removeprefix("llm.")) for k in rec["map"]}}
    codes = mixed.gptq_codes(candidates, mcfg(**common, algorithm="gptq"), quant._calibrator(again, batches))
    for n in chosen:
        want = int4.Int4Linear.from_codes(*codes[f"llm.{n}"], 32, again.llm.get_submodule(n).bias)
        assert torch.equal(model.llm.get_submodule(n).qdata, want.qdata), n
    assert any(not torch.equal(model.llm.get_submodule(n).qdata, rtn.llm.get_submodule(n).qdata)
               for n in chosen if isinstance(rtn.llm.get_submodule(n), int4.Int4Linear))
    problems = []
    quant.validate(mcfg(**common, algorithm="gptq"), "cpu", problems)
    assert problems == []
    quant.validate(mcfg(modes=["nf4", "none"], algorithm="gptq"), "cpu", problems)
    assert any("int4_weight among quant.modes" in p for p in problems)


@pytest.fixture()
def batch():
    from test_model import batch_for

    return batch_for(model_of(hidden=64), [1.0, 1.5], ["asr", "aac"], ["a red dog barks", "a cat"])


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["tinygemm", "triton"])
def test_compact_int4_on_cuda_matches_its_codes_for_unpadded_widths(kernel):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if kernel == "triton" and not int4_triton.available():
        pytest.skip("needs Triton")
    for n, k, tiles in ((192, 576, 4), (576, 1536, 8), (100, 96, 2)):   # SmolLM2's widths; rows not a multiple of 8
        w = torch.randn(n, k, device="cuda")
        q, scales, zeros = int4.rtn(w, 32)
        layer = int4.Int4Linear.from_codes(q, scales, zeros, 32, kernel=kernel)
        assert layer.packing == kernel and int4.inner_k_tiles(k) == tiles
        for m in (1, 4, 5, 37):   # Triton: the reduction kernel up to 4 rows, the tensor-core one above
            x = torch.randn(m, k, device="cuda")
            want = x @ int4.dequantize(q, scales, zeros, 32).t()
            assert (layer(x) - want).abs().max() < 0.02 * want.abs().max(), (n, k, m)
        rows = -(-n // 8) * 8 if kernel == "tinygemm" else n      # tinygemm's n-tiles; Triton's codes as stored
        assert footprint(layer)["weight_bytes"] == rows * (k // 2 + k // 32 * 4)
        assert all(torch.equal(a, b) for a, b in zip(layer.codes(), (q, scales, zeros)))


@pytest.mark.gpu
def test_the_triton_int4_kernels_match_the_codes_for_every_group_size_and_row_count():
    if not int4_triton.available():
        pytest.skip("needs a CUDA device and Triton")
    for n, k, gs in ((5120, 3072, 128), (960, 576, 64), (3072, 8192, 256), (72, 96, 32)):
        q, scales, zeros = int4.rtn(torch.randn(n, k, device="cuda"), gs)
        layer = int4.Int4Linear.from_codes(q, scales, zeros, gs, kernel="triton")
        w = int4.dequantize(q, scales, zeros, gs)
        for m in (1, 2, 4, 5, 130):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            want = x.float() @ w.t()
            assert (layer(x).float() - want).abs().max() < 0.02 * want.abs().max(), (n, k, gs, m)
