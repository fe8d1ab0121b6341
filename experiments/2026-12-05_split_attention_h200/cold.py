"""int4 batch-1 products as the step meets them: weights cold (each of COPIES layers' weights once, in one CUDA
graph, as a step streams 28 layers), sota's word kernel (config sweep) vs split-K vs tinygemm vs bf16 cuBLAS."""
import json, os, sys, time
sys.path.insert(0, "experiments/2026-12-05_int4_words_h100")   # its gemv_split.py: split-K, results added atomically
import torch, triton
from triton.testing import do_bench_cudagraph
from sota.compress import int4
from sota.models import decode_triton
import gemv_split

COPIES = 28
SHAPES = [("3B qkv", 5120, 3072, 128), ("3B o", 3072, 3072, 128), ("3B gate_up", 16384, 3072, 128),
          ("3B down", 3072, 8192, 128)]
CONFIGS = [(bn, bw, w, st) for bn in (4, 8, 16, 32) for bw in (32, 64, 128) for w in (1, 2, 4) for st in (1, 2, 4)
           if 4 * 32 * w <= bn * bw <= 4 * 32 * w * 16]
kern = decode_triton.proj_int4.fn
out = {"device": torch.cuda.get_device_name(), "triton": triton.__version__, "copies": COPIES, "rows": []}
torch.manual_seed(0)
t0 = time.time()


def per_call(fn, rep=30):
    return do_bench_cudagraph(fn, rep=rep) * 1e3 / COPIES      # µs a product


for name, n, k, g in SHAPES:
    layers = []
    for _ in range(COPIES):
        q = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.uint8)
        scales = (torch.rand(n, k // g, device="cuda") * 0.01 + 0.001).bfloat16()
        zeros = (torch.randn(n, k // g, device="cuda") * 0.01).bfloat16()
        codes = int4.pack_nibbles(q.to(torch.int32))
        sz = torch.stack((scales, zeros), -1).transpose(0, 1).contiguous()
        layers.append((q, scales, zeros, codes, sz))
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    q0, s0, z0, _, _ = layers[0]
    ref = x.float() @ int4.dequantize(q0, s0, z0, g).float().t()
    nbytes = layers[0][3].numel() + layers[0][4].numel() * 2
    row = dict(shape=name, n=n, k=k, group=g, bytes=nbytes)
    bf = [int4.dequantize(q, s, z, g).bfloat16() for q, s, z, _, _ in layers[:COPIES]]
    row["us_bf16"] = per_call(lambda: [torch.nn.functional.linear(x, w) for w in bf])
    del bf
    tiny = [torch.ops.aten._convert_weight_to_int4pack(c, int4.inner_k_tiles(k)) for *_, c, _ in layers]
    szs = [sz for *_, sz in layers]
    row["us_tinygemm"] = per_call(lambda: [torch.ops.aten._weight_int4pack_mm(x, t, g, s) for t, s in zip(tiny, szs)])
    row["us_tinygemm_hot"] = do_bench_cudagraph(lambda: torch.ops.aten._weight_int4pack_mm(x, tiny[0], g, szs[0])) * 1e3
    del tiny
    words = [(c.view(torch.int32), s.view(torch.int32)) for *_, c, s in layers]
    y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
    res = []
    for bn, bw, nw, st in CONFIGS:
        def launch(ci, si):
            kern[(-(-n // bn), 1)](x, ci, si, y, y, x, n, k, k, k // 8, n, n, n, 1, 0.0, NORM=False, GATED=False,
                                   RESIDUAL=False, GROUP=g, BLOCK_N=bn, BLOCK_W=bw, STAGES=st, num_warps=nw)
        try:
            launch(*words[0]); torch.cuda.synchronize()
            err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
            t = per_call(lambda: [launch(ci, si) for ci, si in words], rep=15)
        except Exception as e:  # noqa: BLE001
            print(name, (bn, bw, nw, st), "failed", str(e)[:200], flush=True); continue
        res.append((t, bn, bw, nw, st, err))
    res.sort()
    kw = k // 8
    split = []
    for bn, bw, nw, sp in [(a, bw, c, d) for a in (8, 16, 32) for bw in (32, 64) for c in (2, 4) for d in (2, 4, 8)]:
        yf = torch.zeros(1, n, device="cuda", dtype=torch.float32)
        def go(ci, si):
            gemv_split.gemv_w[(-(-n // bn), sp)](x.view(torch.int32), ci, si, yf, n, kw, n, 1, GROUP=g, BLOCK_N=bn,
                                                 BLOCK_W=bw, EVEN=(kw // sp) % bw == 0, SPLIT=sp, num_warps=nw)
        try:
            split.append((per_call(lambda: [go(ci, si) for ci, si in words], rep=15), bn, bw, nw, sp))
        except Exception as e:  # noqa: BLE001
            print("split", (bn, bw, nw, sp), str(e)[:200], flush=True)
    split.sort()
    best = res[0]
    hot = do_bench_cudagraph(lambda: kern[(-(-n // best[1]), 1)](
        x, *words[0], y, y, x, n, k, k, k // 8, n, n, n, 1, 0.0, NORM=False, GATED=False, RESIDUAL=False, GROUP=g,
        BLOCK_N=best[1], BLOCK_W=best[2], STAGES=best[4], num_warps=best[3])) * 1e3
    row.update(us_sota=best[0], us_sota_hot=hot, rel_err=best[5], best=best[1:5],
               top=[(r[0],) + r[1:5] for r in res[:10]], split_top=split[:6],
               GBps_sota=nbytes / best[0] / 1e3, GBps_tinygemm=nbytes / row["us_tinygemm"] / 1e3,
               GBps_bf16=n * k * 2 / row["us_bf16"] / 1e3)
    out["rows"].append(row)
    print(f"{name:11s} cold: tinygemm {row['us_tinygemm']:6.1f} us ({row['GBps_tinygemm']:4.0f} GB/s; hot "
          f"{row['us_tinygemm_hot']:5.1f})  sota {best[0]:6.1f} ({row['GBps_sota']:4.0f}; hot {hot:5.1f}) err {best[5]:.1e}"
          f"  bf16 {row['us_bf16']:6.1f} ({row['GBps_bf16']:4.0f})  best {best[1:5]} top {[(round(r[0], 1),) + r[1:5] for r in res[1:5]]}"
          f"  split {[(round(r[0], 1),) + r[1:] for r in split[:3]]} [{time.time() - t0:.0f}s]", flush=True)
    del layers, words
    torch.cuda.empty_cache()
json.dump(out, open(sys.argv[1], "w"), indent=1)
