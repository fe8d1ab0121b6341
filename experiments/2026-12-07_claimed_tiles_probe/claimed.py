"""What a phase boundary costs when tiles, not programs, wait: one launch for a whole chain of int4 products, each
program claiming the next tile by an atomic ticket and waiting only for the phase its tile reads, against one
launch a phase (in a CUDA graph, with and without PDL).

The chain and the tile code are `../2026-12-06_grid_barrier_probe/probe.py`'s (`Chain`, `_codes`, `_tile`), so the
forms differ only in how a phase waits for the one before:
- `separate`, `separate, PDL`: one launch a phase, a program a tile (that probe's forms, run again here);
- `claimed`: one launch of as many programs as the chain has tiles. A program takes a ticket (an atomic count),
  which names its tile in order: layer by layer, phase by phase. It loads its tile's first codes (AHEAD = 1), waits
  until every tile of the phase before has counted itself done (a release count a phase, read by acquiring
  atomics), runs the tile, and counts it done. A ticket is taken when a program starts, so every tile a program
  waits for was claimed by a program already running, which waits only for tiles claimed before it: the chain
  cannot deadlock, whatever order the card starts programs in. Unlike a grid barrier, no program waits for
  programs of its own phase, and the next phase's tiles load their codes on SMs the phase before has left, while
  its last tiles finish.

    python experiments/2026-12-07_claimed_tiles_probe/claimed.py --out claimed.json         # on one GPU
    TRITON_INTERPRET=1 python experiments/2026-12-07_claimed_tiles_probe/claimed.py --check   # the CPU: answers only
"""
from __future__ import annotations

import importlib.util
import os

import torch
import triton
import triton.language as tl

_barrier = importlib.util.spec_from_file_location(   # the grid barrier probe, by path: both folders' scripts are
    "grid_barrier_probe",                              # experiments, not a package
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "2026-12-06_grid_barrier_probe", "probe.py"))
barrier = importlib.util.module_from_spec(_barrier)
_barrier.loader.exec_module(barrier)
SHAPES, Chain, _codes, _tile, timed = barrier.SHAPES, barrier.Chain, barrier._codes, barrier._tile, barrier.timed


@triton.jit
def _wait(count_ptr, target):
    """Until `target` tiles have counted themselves at `count_ptr`; their writes before it are visible after it.
    Reads by acquiring atomics: the compiler drops an atomic whose value goes unused, so the loop's own reads carry
    the ordering."""
    n = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
    while n < target:
        n = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _claimed_tile(q_ptr, s_ptr, v_ptr, done_ptr, g, tile, before, STRIDE: tl.constexpr, N: tl.constexpr,
                  K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, AHEAD: tl.constexpr):
    """Tile `tile` of phase g (N x K), reading v[g % 2], writing v[(g + 1) % 2], after the `before` tiles of phase
    g - 1 have counted themselves done; then counts itself done in phase g."""
    x_ptr = v_ptr + (g % 2) * STRIDE
    y_ptr = v_ptr + ((g + 1) % 2) * STRIDE
    u0 = tl.zeros((BLOCK_N, BLOCK_W), tl.int32)
    if AHEAD:
        u0 = _codes(q_ptr, tile, 0, K, BLOCK_N, BLOCK_W)
    if g > 0:
        _wait(done_ptr + g - 1, before)
    if not AHEAD:
        u0 = _codes(q_ptr, tile, 0, K, BLOCK_N, BLOCK_W)
    _tile(u0, q_ptr, s_ptr, x_ptr, y_ptr, tile, K, BLOCK_N, BLOCK_W)
    tl.debug_barrier()                       # each thread's stores are issued before the count moves
    tl.atomic_add(done_ptr + g, 1, sem="release", scope="gpu")


@triton.jit
def claimed(q_ptr, s_ptr, v_ptr, ticket_ptr, done_ptr, LAYER_WORDS, LAYER_ROWS, STRIDE: tl.constexpr,
            N0: tl.constexpr, K0: tl.constexpr, N1: tl.constexpr, K1: tl.constexpr, N2: tl.constexpr,
            K2: tl.constexpr, N3: tl.constexpr, K3: tl.constexpr, PHASES: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_W: tl.constexpr, AHEAD: tl.constexpr):
    """The whole chain, a program a tile, tiles taken in ticket order (`Chain.run_claimed` zeroes the ticket and
    the phases' counts before)."""
    T0: tl.constexpr = N0 // BLOCK_N
    T1: tl.constexpr = N1 // BLOCK_N
    T2: tl.constexpr = N2 // BLOCK_N
    T3: tl.constexpr = N3 // BLOCK_N
    T: tl.constexpr = T0 + T1 + T2 + T3 if PHASES == 4 else T0
    LAST: tl.constexpr = T3 if PHASES == 4 else T0      # tiles of a layer's last phase, which the next layer's
    t = tl.atomic_add(ticket_ptr, 1, sem="relaxed", scope="gpu")       # first waits for
    layer = t // T
    r = t % T
    q = q_ptr + layer * LAYER_WORDS
    s = s_ptr + layer * LAYER_ROWS
    g = layer * PHASES
    if r < T0:
        _claimed_tile(q, s, v_ptr, done_ptr, g, r, LAST, STRIDE, N0, K0, BLOCK_N, BLOCK_W, AHEAD)
    if PHASES == 4:
        q += N0 * (K0 // 8)
        s += N0
        if r >= T0 and r < T0 + T1:
            _claimed_tile(q, s, v_ptr, done_ptr, g + 1, r - T0, T0, STRIDE, N1, K1, BLOCK_N, BLOCK_W, AHEAD)
        q += N1 * (K1 // 8)
        s += N1
        if r >= T0 + T1 and r < T0 + T1 + T2:
            _claimed_tile(q, s, v_ptr, done_ptr, g + 2, r - T0 - T1, T1, STRIDE, N2, K2, BLOCK_N, BLOCK_W, AHEAD)
        q += N2 * (K2 // 8)
        s += N2
        if r >= T0 + T1 + T2:
            _claimed_tile(q, s, v_ptr, done_ptr, g + 3, r - T0 - T1 - T2, T2, STRIDE, N3, K3, BLOCK_N, BLOCK_W,
                          AHEAD)


def run_claimed(c: Chain, v: torch.Tensor, counts: torch.Tensor, cfg: dict) -> None:
    """counts: int32 [1 + phases in all], the ticket then a count a phase."""
    counts.zero_()
    tiles = c.layers * sum(n // cfg["BLOCK_N"] for n, _ in c.phases)
    claimed[(tiles,)](c.q, c.s, v, counts, counts[1:], c.layer_words, c.layer_rows, **c._shapes(),
                      BLOCK_N=cfg["BLOCK_N"], BLOCK_W=cfg["BLOCK_W"], AHEAD=cfg["AHEAD"], num_warps=cfg["warps"])


def counts_for(c: Chain, device) -> torch.Tensor:
    return torch.zeros(1 + c.layers * len(c.phases), dtype=torch.int32, device=device)


def check() -> None:
    """The interpreter runs programs one after another, in ticket order: every wait passes at once there."""
    for c, x, want, cfg in barrier.checked_chains():
        v = c.buffers(x)
        counts = counts_for(c, "cpu")
        run_claimed(c, v, counts, cfg)
        torch.testing.assert_close(c.out_of(v), want, rtol=1e-4, atol=1e-5)
        tiles = [n // cfg["BLOCK_N"] for n, _ in c.phases] * c.layers
        assert counts.tolist() == [sum(tiles)] + tiles, f"counts {counts.tolist()}"
    print("answers match")


def main() -> None:
    args = barrier.arguments()
    if args.check:
        return check()
    dev = torch.device("cuda")
    bandwidth = barrier.copy_rate(dev)
    result = dict(device=torch.cuda.get_device_name(), copy_GBps=round(bandwidth / 1e9), layers=args.layers,
                  triton=triton.__version__, rows=[])
    for name in args.shapes.split(","):
        c = Chain(args.layers, SHAPES[name], dev)
        x = torch.randn(c.phases[0][1], device=dev)
        want = c.reference(x.clone())
        floor_us = c.bytes_a_layer() / bandwidth * 1e6
        counts = counts_for(c, dev)
        # the grid barrier probe's best tiles first: a call cut short keeps the likeliest best
        for block_n, block_w, warps in ((8, 64, 2), (4, 128, 4), (4, 128, 2), (8, 128, 4), (16, 64, 4)):
            for ahead in (1, 0):
                cfg = dict(BLOCK_N=block_n, BLOCK_W=block_w, AHEAD=ahead, warps=warps)
                forms = [("separate", lambda: c.run_separate(v, cfg, False)),
                         ("separate, PDL", lambda: c.run_separate(v, cfg, True)),
                         ("claimed", lambda: run_claimed(c, v, counts, cfg))]
                for form, fn in forms:
                    v = c.buffers(x)
                    barrier.measure_row(result, args.out, name, form, cfg, c, x, want, v, fn, floor_us)
    barrier.print_best(result["rows"], lambda form: form)


if __name__ == "__main__":
    main()
