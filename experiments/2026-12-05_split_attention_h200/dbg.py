"""Where the bf16 int4 product (no norm) differs from its codes on the device: errors by shape, group, rows,
configuration, residual."""
import os, sys, itertools
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import torch, triton
from sota.compress import int4
from sota.models import decode_triton, decode_kernels as ops
from test_decode_step import kernel_inputs, run_ops, on_cuda

t = kernel_inputs(torch.bfloat16, hidden=128, int4_group=32)
got = run_ops(on_cuda(t))
got = {k: v.cpu() for k, v in got.items()}
ref = run_ops(t, inputs=got)
for name in ("q", "k", "v", "attn", "o", "act", "head"):
    d = (got[name].float() - ref[name].float()).abs()
    bad = d > 2e-2 + 1.6e-2 * ref[name].float().abs()
    print(f"test {name}: max err {d.max().item():.4g} ref max {ref[name].float().abs().max().item():.4g} bad {bad.sum().item()}"
          + (f" at {bad.nonzero()[:6].tolist()} got {got[name].float()[bad][:6].tolist()} want {ref[name].float()[bad][:6].tolist()}" if bad.any() else ""))
kern = decode_triton.proj_int4.fn
g = torch.Generator(device="cuda").manual_seed(0)
for (n, k, gs), m, res, (bn, bw, nw, st) in itertools.product(
        [(128, 192, 32), (128, 128, 32), (128, 256, 32), (128, 192, 64), (96, 192, 32), (3072, 3072, 128)],
        [1, 2], [False, True], [(8, 4, 1, 1), (8, 64, 2, 1), (16, 32, 2, 3)]):
    w = torch.randn(n, k, device="cuda", generator=g) * 0.3
    q, scales, zeros = int4.rtn(w, gs)
    codes = int4.pack_nibbles(q)
    sz = int4._scales_and_zeros(scales, zeros)
    dense = int4.dequantize(q, scales, zeros, gs)
    x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
    r = torch.randn(m, n, device="cuda", generator=g).bfloat16()
    y = torch.zeros(m, n, device="cuda", dtype=torch.bfloat16)
    ci, si = codes.view(torch.int32), sz.view(torch.int32)
    kern[(-(-n // bn), m)](x, ci, si, y, r, x, n, k, k, ci.stride(0), n, n, si.shape[1], 1, 0.0, NORM=False,
                           GATED=False, RESIDUAL=res, GROUP=gs, BLOCK_N=bn, BLOCK_W=bw, STAGES=st, num_warps=nw)
    want = x.float() @ dense.float().t() + (r.float() if res else 0)
    e = ((y.float() - want).abs().max() / want.abs().max()).item()
    print(f"n {n} k {k} g {gs} m {m} res {res} cfg {(bn, bw, nw, st)}: rel err {e:.2e}" + ("  <-- BAD" if e > 0.02 else ""))
