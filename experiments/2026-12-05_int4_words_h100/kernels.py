"""int4 batch-1 products: sota's word kernel (the fused step's proj_int4; config sweep) vs tinygemm vs bf16 cuBLAS;
plus split-K of the older standalone variant (gemv_split.py, this folder) on the small 3B products."""
import json, sys, time, os
sys.path.insert(0, os.path.dirname(__file__))
import torch, triton
from triton.testing import do_bench_cudagraph
from sota.compress import int4
from sota.models import decode_triton
import gemv_split

SHAPES = [("3B qkv", 5120, 3072, 128), ("3B o", 3072, 3072, 128), ("3B gate_up", 16384, 3072, 128),
          ("3B down", 3072, 8192, 128), ("3B lm_head", 128256, 3072, 128),
          ("Smol qkv", 960, 576, 64), ("Smol o", 576, 576, 64), ("Smol gate_up", 3072, 576, 64),
          ("Smol down", 576, 1536, 64), ("Smol lm_head", 49152, 576, 64)]
CONFIGS = [(bn, bw, w, st) for bn in (8, 16, 32, 64) for bw in (32, 64) for w in (2, 4, 8) for st in (1, 3)
           if bn * bw >= 128 * w]
kern = decode_triton.proj_int4.fn          # under the autotuner: heuristics (EVEN) + jit
out = {"device": torch.cuda.get_device_name(), "triton": triton.__version__, "rows": []}
torch.manual_seed(0)
t0 = time.time()
for name, n, k, g in SHAPES:
    q = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.uint8)
    scales = (torch.rand(n, k // g, device="cuda") * 0.01 + 0.001).bfloat16()
    zeros = (torch.randn(n, k // g, device="cuda") * 0.01).bfloat16()
    w = int4.dequantize(q, scales, zeros, g).bfloat16()
    codes = int4.pack_nibbles(q.to(torch.int32))
    sz = torch.stack((scales, zeros), -1).transpose(0, 1).contiguous()
    tiny = torch.ops.aten._convert_weight_to_int4pack(codes, int4.inner_k_tiles(k))
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ref = x.float() @ w.float().t()
    nbytes = codes.numel() + sz.numel() * 2
    t_tiny = do_bench_cudagraph(lambda: torch.ops.aten._weight_int4pack_mm(x, tiny, g, sz))
    t_bf16 = do_bench_cudagraph(lambda: torch.nn.functional.linear(x, w))
    ci, si = codes.view(torch.int32), sz.view(torch.int32)
    y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
    res = []
    for bn, bw, nw, st in CONFIGS:
        launch = lambda: kern[(-(-n // bn), 1)](x, ci, si, y, y, x, n, k, k, k // 8, n, n, n, 1, 0.0, NORM=False,
                                                GATED=False, RESIDUAL=False, GROUP=g, BLOCK_N=bn, BLOCK_W=bw,
                                                STAGES=st, num_warps=nw)
        try:
            launch(); torch.cuda.synchronize()
            err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
            t = do_bench_cudagraph(launch, rep=10)
        except Exception as e:  # noqa: BLE001
            print(name, (bn, bw, nw, st), "failed", str(e)[:300], flush=True); continue
        res.append((t, bn, bw, nw, st, err))
    res.sort()
    split = []
    if name in ("3B qkv", "3B o", "3B down"):
        kw = k // 8
        for bn, bw, nw, sp in [(a, 32, c, d) for a in (8, 16, 32) for c in (2, 4) for d in (1, 2, 4, 8)]:
            yf = torch.zeros(1, n, device="cuda", dtype=torch.float32 if sp > 1 else torch.bfloat16)
            go = lambda: gemv_split.gemv_w[(-(-n // bn), sp)](x.view(torch.int32), ci, si, yf, n, kw, n, 1, GROUP=g,
                                                            BLOCK_N=bn, BLOCK_W=bw, EVEN=(kw // sp) % bw == 0,
                                                            SPLIT=sp, num_warps=nw)
            try:
                split.append((do_bench_cudagraph(go, rep=10) * 1e3, bn, bw, nw, sp))
            except Exception as e:  # noqa: BLE001
                print("split", (bn, nw, sp), str(e)[:200])
        split.sort()
    best = res[0]
    row = dict(shape=name, n=n, k=k, group=g, bytes=nbytes, us_tinygemm=t_tiny * 1e3, us_bf16=t_bf16 * 1e3,
               GBps_tinygemm=nbytes / t_tiny / 1e6, GBps_bf16=n * k * 2 / t_bf16 / 1e6, us_sota=best[0] * 1e3,
               GBps_sota=nbytes / best[0] / 1e6, rel_err=best[5], best=best[1:5],
               top=[(r[0] * 1e3,) + r[1:5] for r in res[:8]], split_top=split[:6],
               split1_best=min([r for r in split if r[4] == 1], default=None))
    out["rows"].append(row)
    print(f"{name:13s} tinygemm {row['us_tinygemm']:7.1f} us ({row['GBps_tinygemm']:5.0f} GB/s)  sota {row['us_sota']:7.1f}"
          f" ({row['GBps_sota']:5.0f}) err {best[5]:.1e}  bf16 {row['us_bf16']:7.1f} ({row['GBps_bf16']:5.0f})  "
          f"best {best[1:5]}  top {[round(r[0] * 1e3, 1) for r in res[:4]]} {[r[1:5] for r in res[1:4]]}"
          + (f"  split {split[:3]} s1 {row['split1_best']}" if split else "") + f" [{time.time() - t0:.0f}s]",
          flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
