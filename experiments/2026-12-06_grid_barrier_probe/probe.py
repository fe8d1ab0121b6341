"""What a phase boundary costs: one kernel a phase (in a CUDA graph, with and without PDL) against one persistent
kernel whose programs meet at a grid barrier between phases.

A chain of LAYERS int4 matrix-vector products, y = (codes - 8) . x * scale, each the next one's input, D x D
(D = 3072: the 3B shape's o product, 5 MB of codes; D = 8192: 34 MB). The layers' codes together overflow L2, so
each phase streams its weights from memory as a decode step does. Both forms run the same tile code
(`_tile`); AHEAD = 1 loads a program's first tile of codes before it waits for the phase before.

    python experiments/2026-12-06_grid_barrier_probe/probe.py --out probe.json          # on one GPU
    TRITON_INTERPRET=1 python experiments/2026-12-06_grid_barrier_probe/probe.py --check   # the CPU: answers only
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRET:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def _codes(q_ptr, layer, t, w0, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    rows = t * BLOCK_N + tl.arange(0, BLOCK_N)
    ww = w0 + tl.arange(0, BLOCK_W)
    return tl.load(q_ptr + layer * D * (D // 8) + rows[:, None] * (D // 8) + ww[None, :])


@triton.jit
def _tile(u0, q_ptr, s_ptr, x_ptr, y_ptr, layer, t, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    """Rows [t * BLOCK_N, +BLOCK_N) of the layer's product; u0 holds their first BLOCK_W words of codes. x loads
    from L2 (.cg): another program wrote it, and this SM's L1 may hold the buffer's older contents."""
    acc = tl.zeros((BLOCK_N, BLOCK_W), tl.float32)
    u = u0
    for w0 in tl.range(0, D // 8, BLOCK_W):
        if w0 > 0:
            u = _codes(q_ptr, layer, t, w0, D, BLOCK_N, BLOCK_W)
        ww = w0 + tl.arange(0, BLOCK_W)
        for j in tl.static_range(8):
            xj = tl.load(x_ptr + ww * 8 + j, cache_modifier=".cg")
            acc += (((u >> (4 * j)) & 15) - 8).to(tl.float32) * xj[None, :]
    rows = t * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(y_ptr + rows, tl.sum(acc, 1) * tl.load(s_ptr + layer * D + rows))


@triton.jit
def gemv(q_ptr, s_ptr, x_ptr, y_ptr, layer, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
         AHEAD: tl.constexpr, PDL: tl.constexpr):
    """One phase, one launch: a program a tile."""
    t = tl.program_id(0)
    u0 = tl.zeros((BLOCK_N, BLOCK_W), tl.int32)
    if AHEAD:
        u0 = _codes(q_ptr, layer, t, 0, D, BLOCK_N, BLOCK_W)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    if not AHEAD:
        u0 = _codes(q_ptr, layer, t, 0, D, BLOCK_N, BLOCK_W)
    _tile(u0, q_ptr, s_ptr, x_ptr, y_ptr, layer, t, D, BLOCK_N, BLOCK_W)


@triton.jit
def grid_sync(bar_ptr, target):
    """Every program of the launch has counted itself here (target counts in all); their writes before it are
    visible after it. The count only grows within a launch: the caller zeroes it before."""
    tl.debug_barrier()                       # each thread's stores are issued before the count moves
    tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
    # reads by acquiring atomics: the compiler drops an atomic whose value goes unused, so the loop's own reads
    # carry the ordering
    n = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
    while n < target:
        n = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def chain(q_ptr, s_ptr, v_ptr, bar_ptr, LAYERS, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
          AHEAD: tl.constexpr):
    """Every phase, one launch: each of P programs (all resident at once) takes tiles pid, pid + P, ... of each
    layer, then waits at the grid barrier. v holds two vectors: layer l reads v[l % 2] and writes the other."""
    pid = tl.program_id(0)
    P = tl.num_programs(0)
    TILES: tl.constexpr = D // BLOCK_N
    for layer in range(LAYERS):
        x_ptr = v_ptr + (layer % 2) * D
        y_ptr = v_ptr + ((layer + 1) % 2) * D
        u0 = tl.zeros((BLOCK_N, BLOCK_W), tl.int32)
        if AHEAD:
            u0 = _codes(q_ptr, layer, pid, 0, D, BLOCK_N, BLOCK_W)
        if layer > 0:
            grid_sync(bar_ptr, layer * P)
        for t in range(pid, TILES, P):
            if t > pid or not AHEAD:
                u0 = _codes(q_ptr, layer, t, 0, D, BLOCK_N, BLOCK_W)
            _tile(u0, q_ptr, s_ptr, x_ptr, y_ptr, layer, t, D, BLOCK_N, BLOCK_W)


def weights(layers: int, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-2**31, 2**31 - 1, (layers, d, d // 8), generator=g, dtype=torch.int64).to(torch.int32)
    s = torch.full((layers, d), (d * 21.25) ** -0.5)     # codes - 8 have variance 21.25: the vector keeps its norm
    return q.to(device), s.to(device)


def reference(q, s, x) -> torch.Tensor:
    shifts = torch.arange(0, 32, 4, device=q.device, dtype=torch.int32)
    for layer in range(q.shape[0]):
        codes = ((q[layer].unsqueeze(-1) >> shifts) & 15) - 8            # [D, D/8, 8]: code j of word w is k = 8w + j
        x = (codes.reshape(q.shape[1], -1).float() @ x) * s[layer]
    return x


def run_separate(q, s, v, cfg, pdl: bool) -> None:
    layers, d = q.shape[0], q.shape[1]
    for layer in range(layers):
        gemv[(d // cfg["BLOCK_N"],)](q, s, v[layer % 2], v[(layer + 1) % 2], layer, D=d, BLOCK_N=cfg["BLOCK_N"],
                                     BLOCK_W=cfg["BLOCK_W"], AHEAD=cfg["AHEAD"], PDL=pdl, num_warps=cfg["warps"],
                                     **({"launch_pdl": True} if pdl else {}))


def run_chain(q, s, v, bar, cfg, programs: int) -> None:
    bar.zero_()
    chain[(programs,)](q, s, v, bar, q.shape[0], D=q.shape[1], BLOCK_N=cfg["BLOCK_N"], BLOCK_W=cfg["BLOCK_W"],
                       AHEAD=cfg["AHEAD"], num_warps=cfg["warps"])


def out_of(v, layers: int) -> torch.Tensor:
    return v[layers % 2]


def check() -> None:
    """The interpreter runs programs one after another, so the persistent form runs with one program there."""
    cfg = dict(BLOCK_N=4, BLOCK_W=8, AHEAD=1, warps=1)
    q, s = weights(3, 64, "cpu")
    x = torch.randn(64)
    want = reference(q, s, x.clone())
    for ahead in (0, 1):
        cfg["AHEAD"] = ahead
        v = torch.stack([x, torch.zeros(64)])
        run_separate(q, s, v, cfg, pdl=False)
        torch.testing.assert_close(out_of(v, 3), want, rtol=1e-4, atol=1e-5)
        v = torch.stack([x, torch.zeros(64)])
        run_chain(q, s, v, torch.zeros(1, dtype=torch.int32), cfg, programs=1)
        torch.testing.assert_close(out_of(v, 3), want, rtol=1e-4, atol=1e-5)
    print("answers match")


def resident(q, s, cfg) -> int:
    """Programs of `chain` an SM holds at once, by its registers and warps (no shared memory at these tiles). A
    barrier waits for every program, so a launch of more than the card holds would never finish."""
    d = q.shape[1]
    v = torch.zeros(2, d, device=q.device)
    bar = torch.zeros(1, dtype=torch.int32, device=q.device)
    try:
        kernel = chain.warmup(q, s, v, bar, q.shape[0], D=d, BLOCK_N=cfg["BLOCK_N"], BLOCK_W=cfg["BLOCK_W"],
                              AHEAD=cfg["AHEAD"], num_warps=cfg["warps"], grid=(1,))
        kernel._init_handles()
    except Exception as e:   # this Triton's compiled-kernel interface differs: one a SM always fits
        print(f"resident: {e!r:.200}; one program a SM", flush=True)
        return 1
    threads = 32 * cfg["warps"]
    return max(0, min(65536 // max(1, kernel.n_regs * threads), 2048 // threads, 32))


def timed(fn, repeats: int = 20) -> float:
    """Seconds a call, from a CUDA graph of the call replayed `repeats` times."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="answers only, in Triton's interpreter")
    ap.add_argument("--dims", default="3072,8192")
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.check:
        return check()
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    src, dst = (torch.empty(2**28, dtype=torch.int32, device=dev) for _ in range(2))   # 1 GiB: the copy rate
    bandwidth = 2 * src.numel() * 4 / timed(lambda: dst.copy_(src), 5)
    src = dst = None
    rows = []
    for d in map(int, args.dims.split(",")):
        q, s = weights(args.layers, d, dev)
        x = torch.randn(d, device=dev)
        want = reference(q, s, x.clone())
        floor_us = (q[0].numel() * 4 + s[0].numel() * 4) / bandwidth * 1e6
        for block_n, block_w, warps in ((4, 128, 2), (4, 128, 4), (8, 64, 2), (8, 128, 4), (16, 64, 4)):
            for ahead in (0, 1):
                cfg = dict(BLOCK_N=block_n, BLOCK_W=block_w, AHEAD=ahead, warps=warps)
                forms = [("separate", False, None), ("separate, PDL", True, None)]
                tiles = d // block_n
                per_sm = resident(q, s, cfg)
                forms += [(f"persistent, {p} programs", None, p) for p in (sms, 2 * sms, 4 * sms)
                          if p <= min(tiles, per_sm * sms)]
                for form, pdl, programs in forms:
                    v = torch.stack([x, torch.zeros_like(x)])
                    bar = torch.zeros(1, dtype=torch.int32, device=dev)
                    if programs is None:
                        fn = lambda: run_separate(q, s, v, cfg, pdl)   # noqa: E731
                    else:
                        fn = lambda: run_chain(q, s, v, bar, cfg, programs)   # noqa: E731
                    try:
                        seconds = timed(fn)
                        v[0].copy_(x)
                        fn()
                        torch.cuda.synchronize()
                        err = ((out_of(v, args.layers) - want).norm() / want.norm()).item()
                    except Exception as e:   # a form that does not compile or launch is a row, not the end
                        rows.append(dict(D=d, form=form, **cfg, error=str(e)[:200]))
                        print(rows[-1], flush=True)
                        continue
                    us = seconds / args.layers * 1e6
                    rows.append(dict(D=d, form=form, **cfg, us_a_phase=round(us, 2), floor_us=round(floor_us, 2),
                                     over_floor_us=round(us - floor_us, 2), rel_err=err))
                    print(rows[-1], flush=True)
    result = dict(device=torch.cuda.get_device_name(), sms=sms, copy_GBps=round(bandwidth / 1e9), layers=args.layers,
                  triton=triton.__version__, rows=rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    best = {}
    for r in rows:
        if "us_a_phase" in r and r["rel_err"] < 1e-3:
            key = (r["D"], r["form"].split(",")[0] + (", PDL" if "PDL" in r["form"] else ""))
            best[key] = min(best.get(key, 1e9), r["us_a_phase"])
    for (d, form), us in sorted(best.items()):
        print(f"D={d} {form}: best {us:.2f} us a phase")


if __name__ == "__main__":
    main()
