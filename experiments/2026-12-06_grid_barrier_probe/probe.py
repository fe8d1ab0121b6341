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
def _codes(q_ptr, t, w0, K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    rows = t * BLOCK_N + tl.arange(0, BLOCK_N)
    ww = w0 + tl.arange(0, BLOCK_W)
    return tl.load(q_ptr + rows[:, None] * (K // 8) + ww[None, :])


@triton.jit
def _tile(u0, q_ptr, s_ptr, x_ptr, y_ptr, t, K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    """Rows [t * BLOCK_N, +BLOCK_N) of a phase's product; u0 holds their first BLOCK_W words of codes. x loads
    from L2 (.cg): another program wrote it, and this SM's L1 may hold the buffer's older contents."""
    acc = tl.zeros((BLOCK_N, BLOCK_W), tl.float32)
    u = u0
    for w0 in tl.range(0, K // 8, BLOCK_W):
        if w0 > 0:
            u = _codes(q_ptr, t, w0, K, BLOCK_N, BLOCK_W)
        ww = w0 + tl.arange(0, BLOCK_W)
        for j in tl.static_range(8):
            xj = tl.load(x_ptr + ww * 8 + j, cache_modifier=".cg")
            acc += (((u >> (4 * j)) & 15) - 8).to(tl.float32) * xj[None, :]
    rows = t * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(y_ptr + rows, tl.sum(acc, 1) * tl.load(s_ptr + rows))


@triton.jit
def gemv(q_ptr, s_ptr, x_ptr, y_ptr, N: tl.constexpr, K: tl.constexpr, BLOCK_N: tl.constexpr,
         BLOCK_W: tl.constexpr, AHEAD: tl.constexpr, PDL: tl.constexpr):
    """One phase, one launch: a program a tile."""
    t = tl.program_id(0)
    u0 = tl.zeros((BLOCK_N, BLOCK_W), tl.int32)
    if AHEAD:
        u0 = _codes(q_ptr, t, 0, K, BLOCK_N, BLOCK_W)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    if not AHEAD:
        u0 = _codes(q_ptr, t, 0, K, BLOCK_N, BLOCK_W)
    _tile(u0, q_ptr, s_ptr, x_ptr, y_ptr, t, K, BLOCK_N, BLOCK_W)


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
def _phase(q_ptr, s_ptr, v_ptr, bar_ptr, g, pid, P, STRIDE: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
           BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, AHEAD: tl.constexpr):
    """Phase g of the persistent chain: tiles pid, pid + P, ... of its product, reading v[g % 2] and writing
    v[(g + 1) % 2] (STRIDE apart). Every program meets the others at the barrier before the phase (none before
    the first); AHEAD loads its first tile's codes before the barrier."""
    x_ptr = v_ptr + (g % 2) * STRIDE
    y_ptr = v_ptr + ((g + 1) % 2) * STRIDE
    u0 = tl.zeros((BLOCK_N, BLOCK_W), tl.int32)
    if AHEAD:
        if pid < N // BLOCK_N:
            u0 = _codes(q_ptr, pid, 0, K, BLOCK_N, BLOCK_W)
    if g > 0:
        grid_sync(bar_ptr, g * P)
    for t in range(pid, N // BLOCK_N, P):
        if t > pid or not AHEAD:
            u0 = _codes(q_ptr, t, 0, K, BLOCK_N, BLOCK_W)
        _tile(u0, q_ptr, s_ptr, x_ptr, y_ptr, t, K, BLOCK_N, BLOCK_W)


@triton.jit
def chain(q_ptr, s_ptr, v_ptr, bar_ptr, LAYERS, LAYER_WORDS, LAYER_ROWS, STRIDE: tl.constexpr,
          N0: tl.constexpr, K0: tl.constexpr, N1: tl.constexpr, K1: tl.constexpr, N2: tl.constexpr,
          K2: tl.constexpr, N3: tl.constexpr, K3: tl.constexpr, PHASES: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_W: tl.constexpr, AHEAD: tl.constexpr):
    """Every phase of every layer, one launch: P programs (all resident at once) meet at a grid barrier between
    phases. A layer's PHASES products (1 or 4, shapes N_i x K_i) lie one after another in q (codes) and s (scales)."""
    pid = tl.program_id(0)
    P = tl.num_programs(0)
    for layer in range(LAYERS):
        q = q_ptr + layer * LAYER_WORDS
        s = s_ptr + layer * LAYER_ROWS
        g = layer * PHASES
        _phase(q, s, v_ptr, bar_ptr, g, pid, P, STRIDE, N0, K0, BLOCK_N, BLOCK_W, AHEAD)
        if PHASES == 4:
            q += N0 * (K0 // 8)
            s += N0
            _phase(q, s, v_ptr, bar_ptr, g + 1, pid, P, STRIDE, N1, K1, BLOCK_N, BLOCK_W, AHEAD)
            q += N1 * (K1 // 8)
            s += N1
            _phase(q, s, v_ptr, bar_ptr, g + 2, pid, P, STRIDE, N2, K2, BLOCK_N, BLOCK_W, AHEAD)
            q += N2 * (K2 // 8)
            s += N2
            _phase(q, s, v_ptr, bar_ptr, g + 3, pid, P, STRIDE, N3, K3, BLOCK_N, BLOCK_W, AHEAD)


class Chain:
    """LAYERS layers of phases (N, K), each phase's output the next one's input (its first K entries): codes
    random int4 words, scales that keep the vector's size. All layers' codes lie in one flat int32 buffer."""

    def __init__(self, layers: int, phases: list[tuple[int, int]], device) -> None:
        assert len(phases) in (1, 4), "the persistent kernel takes 1 or 4 phases a layer"
        for i, (n, k) in enumerate(phases):
            assert k <= phases[i - 1][0], f"phase {i} reads {k} entries of a {phases[i - 1][0]}-entry output"
        self.layers, self.phases = layers, phases
        self.layer_words = sum(n * k // 8 for n, k in phases)
        self.layer_rows = sum(n for n, _ in phases)
        self.stride = max(n for n, _ in phases)
        g = torch.Generator(device=device).manual_seed(0)
        self.q = torch.randint(-2**31, 2**31 - 1, (layers * self.layer_words,), generator=g, device=device,
                               dtype=torch.int64).to(torch.int32)
        # codes - 8 have mean -0.5 and mean square 21.5: a scale of (K x 21.5)^-1/2 keeps each entry's size, and a
        # random sign a row keeps the mean from adding up along the chain (it overflowed 112 phases of 3b_layer)
        size = torch.cat([torch.full((n,), (k * 21.5) ** -0.5) for n, k in phases] * layers)
        sign = torch.randint(0, 2, size.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        self.s = (size * sign).to(device)

    def words(self, layer: int, i: int) -> tuple[int, int]:
        """Offsets of phase i of `layer` in q (words) and s (rows)."""
        w = layer * self.layer_words + sum(n * k // 8 for n, k in self.phases[:i])
        return w, layer * self.layer_rows + sum(n for n, _ in self.phases[:i])

    def bytes_a_layer(self) -> int:
        return (self.layer_words + self.layer_rows) * 4

    def buffers(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros(2, self.stride, device=x.device)
        v[0, :x.numel()] = x
        return v

    def out_of(self, v: torch.Tensor) -> torch.Tensor:
        g = self.layers * len(self.phases)
        return v[g % 2, :self.phases[-1][0]]

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        shifts = torch.arange(0, 32, 4, device=x.device, dtype=torch.int32)
        for layer in range(self.layers):
            for i, (n, k) in enumerate(self.phases):
                w, r = self.words(layer, i)
                codes = ((self.q[w:w + n * k // 8].view(n, k // 8, 1) >> shifts) & 15) - 8   # code j of word w: 8w + j
                x = (codes.reshape(n, k).float() @ x[:k]) * self.s[r:r + n]
        return x

    def run_separate(self, v, cfg, pdl: bool) -> None:
        for layer in range(self.layers):
            for i, (n, k) in enumerate(self.phases):
                g = layer * len(self.phases) + i
                w, r = self.words(layer, i)
                gemv[(n // cfg["BLOCK_N"],)](self.q[w:], self.s[r:], v[g % 2], v[(g + 1) % 2], N=n, K=k,
                                             BLOCK_N=cfg["BLOCK_N"], BLOCK_W=cfg["BLOCK_W"], AHEAD=cfg["AHEAD"],
                                             PDL=pdl, num_warps=cfg["warps"],
                                             **({"launch_pdl": True} if pdl else {}))

    def _shapes(self) -> dict:
        ph = self.phases * (4 // len(self.phases))
        return dict(STRIDE=self.stride, **{f"N{i}": n for i, (n, _) in enumerate(ph)},
                    **{f"K{i}": k for i, (_, k) in enumerate(ph)}, PHASES=len(self.phases))

    def run_chain(self, v, bar, cfg, programs: int) -> None:
        bar.zero_()
        chain[(programs,)](self.q, self.s, v, bar, self.layers, self.layer_words, self.layer_rows, **self._shapes(),
                           BLOCK_N=cfg["BLOCK_N"], BLOCK_W=cfg["BLOCK_W"], AHEAD=cfg["AHEAD"],
                           num_warps=cfg["warps"])

    def resident(self, cfg) -> int:
        """Programs of `chain` an SM holds at once, by its registers and warps (no shared memory at these tiles).
        A barrier waits for every program, so a launch of more than the card holds would never finish."""
        v = torch.zeros(2, self.stride, device=self.q.device)
        bar = torch.zeros(1, dtype=torch.int32, device=self.q.device)
        try:
            kernel = chain.warmup(self.q, self.s, v, bar, self.layers, self.layer_words, self.layer_rows,
                                  **self._shapes(), BLOCK_N=cfg["BLOCK_N"], BLOCK_W=cfg["BLOCK_W"],
                                  AHEAD=cfg["AHEAD"], num_warps=cfg["warps"], grid=(1,))
            kernel._init_handles()
        except Exception as e:   # this Triton's compiled-kernel interface differs: one a SM always fits
            print(f"resident: {e!r:.200}; one program a SM", flush=True)
            return 1
        threads = 32 * cfg["warps"]
        return max(0, min(65536 // max(1, kernel.n_regs * threads), 2048 // threads, 32))


SHAPES = {   # name: a layer's phases (N, K)
    "3072": [(3072, 3072)],
    "8192": [(8192, 8192)],
    # the 3B layer's int4 products, one after another: q/k/v, o, gate/up, down (each reads the first K entries
    # of the one before: attention and the gate are left out)
    "3b_layer": [(5120, 3072), (3072, 3072), (16384, 3072), (3072, 8192)],
}


def checked_chains():
    """The CPU check's cases: 3 layers of one 64 x 64 phase, and of four phases of three shapes, with and without
    AHEAD; each as (chain, input, torch's answer, tile)."""
    for phases in ([(64, 64)], [(96, 64), (64, 64), (128, 64), (64, 128)]):
        c = Chain(3, phases, "cpu")
        x = torch.randn(phases[0][1])
        want = c.reference(x.clone())
        for ahead in (0, 1):
            yield c, x, want, dict(BLOCK_N=4, BLOCK_W=8, AHEAD=ahead, warps=1)


def check() -> None:
    """The interpreter runs programs one after another, so the persistent form runs with one program there."""
    for c, x, want, cfg in checked_chains():
        v = c.buffers(x)
        c.run_separate(v, cfg, pdl=False)
        torch.testing.assert_close(c.out_of(v), want, rtol=1e-4, atol=1e-5)
        v = c.buffers(x)
        c.run_chain(v, torch.zeros(1, dtype=torch.int32), cfg, programs=1)
        torch.testing.assert_close(c.out_of(v), want, rtol=1e-4, atol=1e-5)
    # the timed shapes keep the vector's size along the chain, so their answers can be checked (8 phases here)
    out = Chain(2, SHAPES["3b_layer"], "cpu").reference(torch.randn(SHAPES["3b_layer"][0][1]))
    assert 0.5 < out.norm() / out.numel() ** 0.5 < 2, f"3b_layer drifts the vector's size: {out.norm()}"
    print("answers match")


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


def measure_row(result: dict, out: str | None, name: str, form: str, cfg: dict, c: Chain, x: torch.Tensor,
                want: torch.Tensor, v: torch.Tensor, fn, floor_us: float) -> None:
    """One row of `result`: fn (a chain over buffers v) timed in a CUDA graph, then run once more from x and its
    answer checked against `want`. A form that does not compile or launch is a row, not the end. The JSON at `out`
    is rewritten after every row, so a run cut short keeps what it measured."""
    rows = result["rows"]
    try:
        seconds = timed(fn)
        v.copy_(c.buffers(x))
        fn()
        torch.cuda.synchronize()
        err = ((c.out_of(v) - want).norm() / want.norm()).item()
    except Exception as e:
        rows.append(dict(shape=name, form=form, **cfg, error=str(e)[:200]))
        print(rows[-1], flush=True)
        return
    us = seconds / c.layers * 1e6
    rows.append(dict(shape=name, form=form, **cfg, us_a_layer=round(us, 2), floor_us_a_layer=round(floor_us, 2),
                     over_floor=round(us / floor_us, 2), rel_err=err))
    print(rows[-1], flush=True)
    if out:
        with open(out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(out + ".tmp", out)


def print_best(rows: list[dict], form_of) -> None:
    """Each shape's best row of each form (`form_of` names a row's form), of the rows that answered as torch."""
    best = {}
    for r in rows:
        if "us_a_layer" in r and r["rel_err"] < 1e-3:
            key = (r["shape"], form_of(r["form"]))
            best[key] = min(best.get(key, (1e9,)), (r["us_a_layer"], r["over_floor"]))
    for (name, form), (us, over) in sorted(best.items()):
        print(f"{name} {form}: best {us:.2f} us a layer, {over:.2f}x its bytes' time")


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="answers only, in Triton's interpreter")
    ap.add_argument("--shapes", default="3b_layer,3072", help=f"of {', '.join(SHAPES)}")
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--out")
    return ap.parse_args()


def copy_rate(dev) -> float:
    """Bytes a second of a 1 GiB copy (read and written)."""
    src, dst = (torch.empty(2**28, dtype=torch.int32, device=dev) for _ in range(2))
    return 2 * src.numel() * 4 / timed(lambda: dst.copy_(src), 5)


def main() -> None:
    args = arguments()
    if args.check:
        return check()
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    bandwidth = copy_rate(dev)
    result = dict(device=torch.cuda.get_device_name(), sms=sms, copy_GBps=round(bandwidth / 1e9), layers=args.layers,
                  triton=triton.__version__, rows=[])
    rows = result["rows"]
    for name in args.shapes.split(","):
        c = Chain(args.layers, SHAPES[name], dev)
        x = torch.randn(c.phases[0][1], device=dev)
        want = c.reference(x.clone())
        floor_us = c.bytes_a_layer() / bandwidth * 1e6
        fewest = min(n for n, _ in c.phases)
        # AHEAD first, and the tiles the step's tables pick most first: a call cut short keeps the likeliest best
        for block_n, block_w, warps in ((4, 128, 4), (8, 64, 2), (4, 128, 2), (8, 128, 4), (16, 64, 4)):
            for ahead in (1, 0):
                cfg = dict(BLOCK_N=block_n, BLOCK_W=block_w, AHEAD=ahead, warps=warps)
                forms = [("separate", False, None), ("separate, PDL", True, None)]
                per_sm = c.resident(cfg)
                forms += [(f"persistent, {p} programs", None, p) for p in (sms, 2 * sms, 4 * sms)
                          if p <= min(fewest // block_n, per_sm * sms)]
                for form, pdl, programs in forms:
                    v = c.buffers(x)
                    bar = torch.zeros(1, dtype=torch.int32, device=dev)
                    if programs is None:
                        fn = lambda: c.run_separate(v, cfg, pdl)   # noqa: E731
                    else:
                        fn = lambda: c.run_chain(v, bar, cfg, programs)   # noqa: E731
                    measure_row(result, args.out, name, form, cfg, c, x, want, v, fn, floor_us)
    print_best(rows, lambda form: form.split(",")[0] + (", PDL" if "PDL" in form else ""))

if __name__ == "__main__":
    main()
