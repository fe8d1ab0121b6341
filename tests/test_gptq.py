"""GPTQ's rounding (CPU) and its tinygemm packing (CUDA)."""
import pytest
import torch
from torch import nn

from sota.compress import gptq, int4


def _rtn(w, group_size):
    """Round-to-nearest of `w` (torchao's tinygemm grid: tests/test_int4.py), as integers, scales and zeros."""
    return int4.rtn(w, group_size)


def _correlated_inputs(n, k, seed=0):
    """Inputs of one fixed correlated distribution (unequal scales, mixed channels); `seed` draws the samples."""
    mix = torch.randn(k, k, generator=torch.Generator().manual_seed(0)) / k ** 0.5 + torch.eye(k)
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.randn(n, k, generator=g) * torch.linspace(0.2, 3.0, k)) @ mix


def test_without_input_correlation_gptq_is_round_to_nearest():
    # With H = I no column's error reaches another: GPTQ must pick torchao's RTN integers and grid.
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    q, scales, zeros = gptq.gptq_round(w, torch.eye(128), 32)
    rq, rs, rz = _rtn(w, 32)
    assert torch.equal(scales, rs) and torch.equal(zeros, rz)
    assert (q == rq).float().mean() > 0.999


def test_gptq_lowers_the_output_error_on_correlated_inputs():
    k, group_size = 256, 64
    w = torch.randn(48, k, generator=torch.Generator().manual_seed(2))
    x = _correlated_inputs(2048, k)
    held_out = _correlated_inputs(1024, k, seed=5)
    q, scales, zeros = gptq.gptq_round(w, x.t() @ x, group_size)
    rq, rs, rz = _rtn(w, group_size)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15 and scales.shape == (48, k // group_size)

    def err(deq):
        return (held_out @ (w - deq).t()).norm().item()

    ours, rtn = err(int4.dequantize(q, scales, zeros, group_size)), err(int4.dequantize(rq, rs, rz, group_size))
    assert ours < 0.8 * rtn, (ours, rtn)
    # ...while the weights themselves move further from w than RTN's: GPTQ trades weight error for output error
    assert (w - int4.dequantize(q, scales, zeros, group_size)).norm() > (w - int4.dequantize(rq, rs, rz, group_size)).norm()


def test_hessians_sum_every_input_row_and_a_linear_never_reached_is_named():
    a, b = nn.Linear(8, 4), nn.Linear(8, 4)
    xs = [torch.randn(3, 5, 8) for _ in range(2)]

    def run():
        for x in xs:
            a(x)
        return len(xs)

    sums, batches = gptq.hessians([a, b], run)
    flat = torch.cat([x.reshape(-1, 8) for x in xs])
    assert batches == 2 and id(b) not in sums
    assert torch.allclose(sums[id(a)], flat.t() @ flat, atol=1e-4)
    assert not a._forward_pre_hooks and not b._forward_pre_hooks
    # linears fed one tensor (q/k/v) share a single Hessian object with the same sum
    q, k, v, o = (nn.Linear(8, 8) for _ in range(4))

    def attention_like():
        for x in xs:
            q(x), k(x), v(x)
            o(x * 2)
        return len(xs)

    shared, _ = gptq.hessians([q, k, v, o], attention_like)
    assert shared[id(q)] is shared[id(k)] is shared[id(v)] and shared[id(o)] is not shared[id(q)]
    assert torch.allclose(shared[id(q)], flat.t() @ flat, atol=1e-4)
    assert torch.allclose(shared[id(o)], 4 * flat.t() @ flat, atol=1e-3)
    stored = {}
    with pytest.raises(ValueError, match=r"saw no calibration input \(e.g. b\)"):
        gptq.quantize({"a": a, "b": b}, 8, run, lambda *args: stored.update({args[0]: args[2:]}))
    with pytest.raises(ValueError, match="none were given"):
        gptq.quantize({"a": a}, 8, None, lambda *args: None)
    assert gptq.quantize({"a": a}, 8, run, lambda *args: stored.update({args[0]: args[2:]})) == (1, 2)
    codes, scales, zeros = stored["a"]
    assert codes.shape == (4, 8) and scales.shape == zeros.shape == (4, 1)


def test_in_features_must_split_into_groups():
    with pytest.raises(ValueError, match="multiple of quant.group_size=64"):
        gptq.gptq_round(torch.randn(4, 96), torch.eye(96), 64)


@pytest.mark.gpu
def test_packed_weights_hold_exactly_the_rounded_integers_and_multiply_like_them():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    k, n, group_size = 576, 200, 64     # SmolLM2's width: in_features padded to 1024, out_features to 8
    w = torch.randn(n, k, device="cuda")
    x = _correlated_inputs(512, k).cuda()
    q, scales, zeros = gptq.gptq_round(w, x.t() @ x, group_size)
    packed = int4.pack_torchao(q, scales, zeros, group_size)
    want = int4.dequantize(q, scales, zeros, group_size)
    assert packed.shape == (n, k) and packed.qdata.shape[1] == 1024 // (8 * 16)   # K padded to 1024, 8 inner tiles
    # the identity through the packed weight reads the weight back: the kernel sees exactly the rounded integers
    eye = torch.eye(k, device="cuda", dtype=torch.bfloat16)
    back = nn.functional.linear(eye, packed).float().t()
    assert torch.allclose(back, want, atol=1e-2, rtol=1e-2), (back - want).abs().max()
    y = nn.functional.linear(x[:4].to(torch.bfloat16), packed).float()
    assert torch.allclose(y, x[:4] @ want.t(), atol=0.5, rtol=0.05)
