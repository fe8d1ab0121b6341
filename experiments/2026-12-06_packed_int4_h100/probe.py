"""int4 batch-1 product kernels with the weights cold (28 layers' weights, once each, in one CUDA graph)."""
import json, sys, time
sys.path.insert(0, "experiments/2026-12-06_packed_int4_h100")
import torch, triton
from triton.testing import do_bench_cudagraph
from sota.compress import int4
from sota.models import decode_triton
import h2, tc

COPIES = 28
SHAPES = [("3B qkv", 5120, 3072, 128), ("3B o", 3072, 3072, 128), ("3B gate_up", 16384, 3072, 128),
          ("3B down", 3072, 8192, 128)]
cur = decode_triton.proj_int4.fn
out = {"device": torch.cuda.get_device_name(), "triton": triton.__version__, "rows": []}
torch.manual_seed(0)
t0 = time.time()


def per_call(fn, rep=15):
    return do_bench_cudagraph(fn, rep=rep) * 1e3 / COPIES


for name, n, k, g in SHAPES:
    layers = []
    for _ in range(COPIES):
        q = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.uint8)
        s = (torch.rand(n, k // g, device="cuda") * 0.01 + 0.001).bfloat16()
        z = (torch.randn(n, k // g, device="cuda") * 0.01).bfloat16()
        codes = int4.pack_nibbles(q.to(torch.int32))
        sz = torch.stack((s, z), -1).transpose(0, 1).contiguous()
        layers.append((q, s, z, codes, sz))
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    q0, s0, z0, _, _ = layers[0]
    ref = x.float() @ int4.dequantize(q0, s0, z0, g).float().t()
    nbytes = layers[0][3].numel() + layers[0][4].numel() * 2
    row = dict(shape=name, n=n, k=k, bytes=nbytes, res={})
    tiny = [torch.ops.aten._convert_weight_to_int4pack(c, int4.inner_k_tiles(k)) for *_, c, _ in layers]
    szs = [sz for *_, sz in layers]
    row["res"]["tinygemm"] = [(per_call(lambda: [torch.ops.aten._weight_int4pack_mm(x, t, g, s) for t, s in zip(tiny, szs)]), None, 0.0)]
    del tiny
    words = [(c.view(torch.int32), s.view(torch.int32)) for *_, c, s in layers]
    y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)

    def sweep(label, configs, launch):
        res = []
        for cfg in configs:
            try:
                launch(cfg, *words[0]); torch.cuda.synchronize()
                err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
                t = per_call(lambda: [launch(cfg, ci, si) for ci, si in words])
                res.append((t, cfg, err))
            except Exception as e:  # noqa: BLE001
                print(label, cfg, "failed", str(e)[:300], flush=True)
        res.sort(key=lambda r: r[0])
        row["res"][label] = res[:6]

    def l_cur(c, ci, si):
        bn, bw, nw, st = c
        cur[(-(-n // bn), 1)](x, ci, si, y, y, x, n, k, k, k // 8, n, n, n, 1, 0.0, NORM=False, GATED=False,
                              RESIDUAL=False, GROUP=g, BLOCK_N=bn, BLOCK_W=bw, STAGES=st, num_warps=nw)
    sweep("current", [(4, 128, 2, 1), (4, 128, 1, 1), (8, 64, 1, 1), (8, 128, 4, 1), (16, 64, 2, 1)], l_cur)

    def l_h2(mode, pre=False):
        def go(c, ci, si):
            bn, bw, nw, st = c
            h2.gemv_h2[(-(-n // bn),)](x, ci, si, y, n, k, k // 8, n, 1, GROUP=g, BLOCK_N=bn, BLOCK_W=bw, STAGES=st,
                                       MODE=mode, PREFETCH=pre, num_warps=nw)
        return go
    H2 = [(4, 128, 1, 1), (8, 64, 2, 1), (4, 128, 2, 1), (8, 128, 4, 1), (8, 128, 1, 1), (16, 64, 2, 1), (16, 128, 4, 1),
          (8, 64, 1, 1), (2, 128, 1, 1), (32, 64, 4, 1), (16, 64, 1, 1)]
    sweep("f16x2", H2, l_h2(0))
    sweep("loads_only", H2, l_h2(1))
    sweep("f16x2_prefetch", H2, l_h2(0, True))
    sweep("loads_prefetch", H2, l_h2(1, True))

    def l_tc(c, ci, si):
        bn, nw, st = c
        tc.gemv_tc[(-(-n // bn),)](x, ci, si, y, n, k, k // 8, n, GROUP=g, BLOCK_N=bn, STAGES=st, num_warps=nw)
    src = [c for *_, c, _ in layers]
    dst = [torch.empty_like(c) for c in src]
    row["res"]["copy"] = [(per_call(lambda: [d.copy_(c) for d, c in zip(dst, src)]) / 2, None, 0.0)]   # read + write
    del dst
    out["rows"].append(row)
    line = "  ".join(f"{lab} {r[0][0]:.1f}us ({nbytes / r[0][0] / 1e3:.0f} GB/s) {r[0][1]} e{r[0][2]:.0e}" for lab, r in row["res"].items() if r)
    print(f"{name:11s} {line} [{time.time() - t0:.0f}s]", flush=True)
    del layers, words
    torch.cuda.empty_cache()
json.dump(out, open(sys.argv[1], "w"), indent=1)
