"""int4 matrix products of the compact layout, one shape at a time: torch's tinygemm kernel against sota's Triton
kernels (`sota/compress/int4_triton.py`), with bf16 `F.linear` (cuBLAS) beside them. Each product is timed in a
CUDA graph of 50 calls (triton.testing.do_bench_cudagraph), so launch cost is out and what remains is the kernel's
own time. Bandwidth = the bytes the product must read (codes, scales and zeros; bf16 weights for bf16) / time.

    python experiments/2026-12-05_int4_kernels_h200/kernels.py --out kernels.json [--candidate]

--candidate also times `gemv_candidate.py` (this folder) on one activation row; --bnb also times bitsandbytes'
4-bit product (`bnb.matmul_4bit`, nf4 in blocks of the same group size, float32 absmax) on every row count.
"""
from __future__ import annotations

import argparse
import json

import torch
import triton
from triton.testing import do_bench_cudagraph

from sota.compress import int4, int4_triton

# (name, out_features, in_features, group): each model's decode-step products, q/k/v and gate/up fused.
SHAPES = [
    ("3B qkv", 5120, 3072, 128), ("3B o", 3072, 3072, 128), ("3B gate_up", 16384, 3072, 128),
    ("3B down", 3072, 8192, 128), ("3B lm_head", 128256, 3072, 128),
    ("SmolLM2 qkv", 960, 576, 64), ("SmolLM2 o", 576, 576, 64), ("SmolLM2 gate_up", 3072, 576, 64),
    ("SmolLM2 down", 576, 1536, 64), ("SmolLM2 lm_head", 49152, 576, 64),
]


def packed(q, scales, zeros, n):
    rows = -(-n // 8) * 8
    pad = (0, 0, 0, rows - n)
    q = torch.nn.functional.pad(q.to(torch.int32), pad, value=8)
    scales = torch.nn.functional.pad(scales, pad, value=1.0)
    zeros = torch.nn.functional.pad(zeros, pad, value=0.0)
    sz = torch.stack((scales, zeros), -1).transpose(0, 1).contiguous()      # [groups, rows, 2]
    return int4.pack_nibbles(q), sz


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", default="1,128", help="activation rows to time")
    ap.add_argument("--candidate", action="store_true", help="also time gemv_candidate.py at one row")
    ap.add_argument("--bnb", action="store_true", help="also time bitsandbytes' nf4 product")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    rows_list = [int(r) for r in args.rows.split(",")]
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "rows": []}
    for name, n, k, g in SHAPES:
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        scales = (w.float().reshape(n, k // g, g).amax(-1) - w.float().reshape(n, k // g, g).amin(-1)) / 15
        zeros = w.float().reshape(n, k // g, g).amin(-1) + 8 * scales
        q = torch.randint(0, 16, (n, k), device=dev, dtype=torch.uint8)
        scales, zeros = scales.bfloat16(), zeros.bfloat16()
        codes, sz = packed(q, scales, zeros, n)
        tiny = torch.ops.aten._convert_weight_to_int4pack(codes, int4.inner_k_tiles(k))
        ref_w = int4.dequantize(q, scales, zeros, g).bfloat16()
        int4_bytes = codes.numel() + sz.numel() * 2
        if args.bnb:
            import bitsandbytes as bnb

            nf4, state = bnb.functional.quantize_4bit(ref_w, blocksize=g, compress_statistics=False, quant_type="nf4")
            nf4_w = bnb.functional.dequantize_4bit(nf4, state).float()
            nf4_bytes = nf4.numel() * nf4.element_size() + state.absmax.numel() * state.absmax.element_size()
        for m in rows_list:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            ref = x.float() @ ref_w.float().t()
            y_t = int4_triton._launch(x, codes, sz, g, n)
            y_g = torch.ops.aten._weight_int4pack_mm(x, tiny, g, sz)[:, :n]
            err = lambda y: ((y.float() - ref).abs().max() / ref.abs().max()).item()  # noqa: E731
            t_triton = do_bench_cudagraph(lambda: int4_triton._launch(x, codes, sz, g, n))
            t_tiny = do_bench_cudagraph(lambda: torch.ops.aten._weight_int4pack_mm(x, tiny, g, sz))
            t_bf16 = do_bench_cudagraph(lambda: torch.nn.functional.linear(x, ref_w))
            extra = {}
            if args.bnb:
                with torch.no_grad():
                    y_b = bnb.matmul_4bit(x, nf4.t(), quant_state=state)
                    t_b = do_bench_cudagraph(lambda: bnb.matmul_4bit(x, nf4.t(), quant_state=state))
                want_b = x.float() @ nf4_w.t()
                extra.update(us_bnb_nf4=t_b * 1e3, GBps_bnb_nf4=nf4_bytes / t_b / 1e6,
                             rel_err_bnb_nf4=((y_b.float() - want_b).abs().max() / want_b.abs().max()).item())
            if args.candidate and m == 1:
                import gemv_candidate

                y_c = gemv_candidate.launch(x, codes, sz, g, n)
                t_c = do_bench_cudagraph(lambda: gemv_candidate.launch(x, codes, sz, g, n))
                extra.update(us_candidate=t_c * 1e3, GBps_candidate=int4_bytes / t_c / 1e6, rel_err_candidate=err(y_c))
            gemv, gemm = int4_triton._kernels()
            best = (gemv if m <= int4_triton.GEMV_MAX_ROWS else gemm).best_config
            row = {"shape": name, "out": n, "in": k, "group": g, "m": m,
                   "us_triton": t_triton * 1e3, "us_tinygemm": t_tiny * 1e3, "us_bf16": t_bf16 * 1e3,
                   "GBps_triton": int4_bytes / t_triton / 1e6, "GBps_tinygemm": int4_bytes / t_tiny / 1e6,
                   "GBps_bf16": n * k * 2 / t_bf16 / 1e6, "rel_err_triton": err(y_t), "rel_err_tinygemm": err(y_g),
                   "config": str(best), **extra}
            out["rows"].append(row)
            print(f"{name:16s} m={m:<4d} triton {row['us_triton']:8.1f} us ({row['GBps_triton']:6.0f} GB/s)  "
                  f"tinygemm {row['us_tinygemm']:8.1f} us ({row['GBps_tinygemm']:6.0f})  bf16 {row['us_bf16']:8.1f} us "
                  f"({row['GBps_bf16']:6.0f})  err {row['rel_err_triton']:.1e}/{row['rel_err_tinygemm']:.1e}  {best}"
                  + "".join(f"  {key[3:]} {extra[key]:.1f} us ({extra['GBps' + key[2:]]:.0f})" for key in extra
                            if key.startswith("us_")),
                  flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
