"""What one phase boundary costs with no weights to read: a launch (with and without PDL) against a grid barrier in one
persistent launch, by how the barrier counts and polls.

The grid barrier and claimed tiles probes (`../2026-12-06_grid_barrier_probe`, `../2026-12-07_claimed_tiles_probe`)
timed whole int4 products, so a barrier's own cost and the bandwidth a persistent program loses by walking its tiles
one after another came as one figure. Here every phase is one int32 a program: program p writes
v[g + 1][p] = v[g][(p + 1) % P] + 1, which reads another program's write of the phase before, so a barrier that let
a program through early leaves a wrong count. Forms, R phases each, µs a phase from a CUDA graph of all R:
- `launch`, `launch, PDL`: a launch a phase of P programs (PDL: each a programmatic dependent of the one before,
  waiting for it before it reads);
- `barrier, one count`: one launch, P resident programs meeting between phases at the grid barrier probe's
  `grid_sync` (a release count on one address, polled by acquiring atomics);
- `barrier, flags`: one launch; each program publishes the phase it finished in a flag of its own (a releasing
  exchange) and polls every program's flag in one vector load (`ld.acquire`, no atomics) until all have reached it.

    python experiments/2026-12-07_sync_cost_probe/probe.py --out sync.json          # on one GPU
    TRITON_INTERPRET=1 python experiments/2026-12-07_sync_cost_probe/probe.py --check   # the CPU: answers only
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

_barrier = importlib.util.spec_from_file_location(   # the grid barrier probe, by path: both folders' scripts are
    "grid_barrier_probe",                              # experiments, not a package
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "2026-12-06_grid_barrier_probe", "probe.py"))
barrier = importlib.util.module_from_spec(_barrier)
_barrier.loader.exec_module(barrier)
grid_sync, timed = barrier.grid_sync, barrier.timed


@triton.jit
def _step(v_ptr, g, pid, P, STRIDE: tl.constexpr):
    x = tl.load(v_ptr + g * STRIDE + (pid + 1) % P)
    tl.store(v_ptr + (g + 1) * STRIDE + pid, x + 1)


@triton.jit(do_not_specialize=["g"])
def launch_phase(v_ptr, g, STRIDE: tl.constexpr, PDL: tl.constexpr):
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    _step(v_ptr, g, tl.program_id(0), tl.num_programs(0), STRIDE)


@triton.jit
def _load_acquire(ptrs, ASM: tl.constexpr):
    if ASM:
        return tl.inline_asm_elementwise("ld.global.acquire.gpu.b32 $0, [$1];", "=r,l", [ptrs], dtype=tl.int32,
                                         is_pure=False, pack=1)
    return tl.atomic_add(ptrs, 0, sem="acquire", scope="gpu")


@triton.jit
def _flags_sync(flag_ptr, pid, P, g, PMAX: tl.constexpr, ASM: tl.constexpr):
    """Every program has published phase g; their writes before it are visible after it."""
    tl.debug_barrier()                       # each thread's stores are issued before the flag moves
    tl.atomic_xchg(flag_ptr + pid, g, sem="release", scope="gpu")
    ptrs = flag_ptr + tl.minimum(tl.arange(0, PMAX), P - 1)
    seen = tl.min(_load_acquire(ptrs, ASM), axis=0)
    while seen < g:
        seen = tl.min(_load_acquire(ptrs, ASM), axis=0)
    tl.debug_barrier()


@triton.jit
def persistent(v_ptr, sync_ptr, R, STRIDE: tl.constexpr, FLAGS: tl.constexpr, PMAX: tl.constexpr,
               ASM: tl.constexpr):
    pid = tl.program_id(0)
    P = tl.num_programs(0)
    for g in range(R):
        if g > 0:
            if FLAGS:
                _flags_sync(sync_ptr, pid, P, g, PMAX, ASM)
            else:
                grid_sync(sync_ptr, g * P)
        _step(v_ptr, g, pid, P, STRIDE)


FORMS = ("launch", "launch, PDL", "barrier, one count", "barrier, flags")
WARPS = 4   # a program's warps, as the step's products mostly launch


def run(form: str, v: torch.Tensor, sync: torch.Tensor, programs: int, phases: int) -> None:
    """`phases` phases over v ([phases + 1, stride], row 0 the input) by `form`; sync: int32 [>= programs]."""
    stride = v.shape[1]
    if form.startswith("launch"):
        pdl = form.endswith("PDL")
        for g in range(phases):
            launch_phase[(programs,)](v, g, STRIDE=stride, PDL=pdl, num_warps=WARPS,
                                      **({"launch_pdl": True} if pdl else {}))
        return
    sync.zero_()
    # the flags' polls in inline PTX on a device: the interpreter runs no inline assembly
    persistent[(programs,)](v, sync, phases, STRIDE=stride, FLAGS=form.endswith("flags"),
                            PMAX=triton.next_power_of_2(programs), ASM=not barrier.INTERPRET, num_warps=WARPS)


def answer_ok(v: torch.Tensor, programs: int, phases: int) -> bool:
    """Every program counted every phase: row `phases` is `phases` everywhere (row 0 is zeros)."""
    return bool((v[phases, :programs] == phases).all())


def check() -> None:
    """The interpreter runs programs one after another, so a barrier passes there only in a launch of one program;
    the launches run with several."""
    for form, programs in (("launch", 5), ("barrier, one count", 1), ("barrier, flags", 1)):
        v = torch.zeros(8, 8, dtype=torch.int32)
        sync = torch.zeros(8, dtype=torch.int32)
        run(form, v, sync, programs, 7)
        assert answer_ok(v, programs, 7), (form, v)
    print("answers match")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="answers only, in Triton's interpreter")
    ap.add_argument("--phases", type=int, default=280, help="phases a run (the 3B step has 140 kernels a layer x 28)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.check:
        return check()
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    result = dict(device=torch.cuda.get_device_name(), sms=sms, phases=args.phases, triton=triton.__version__,
                  rows=[])
    # programs an SM: a persistent launch of up to 4 (4 warps each, a few registers) is resident whole, so its barrier
    # can finish; from 16 an SM (the 3B gate/up product launches 2,048 programs, a split down up to 6,144), the
    # launches only
    for per_sm in (1, 2, 4, 16, 32, 64):
        programs = sms * per_sm
        for form in FORMS if per_sm <= 4 else FORMS[:2]:
            v = torch.zeros(args.phases + 1, programs, dtype=torch.int32, device=dev)
            sync = torch.zeros(programs, dtype=torch.int32, device=dev)
            us = timed(lambda: run(form, v, sync, programs, args.phases)) * 1e6 / args.phases
            row = dict(form=form, programs=programs, us_a_phase=round(us, 3), answer_ok=answer_ok(v, programs,
                                                                                                  args.phases))
            result["rows"].append(row)
            print(row, flush=True)
            if args.out:
                with open(args.out + ".tmp", "w") as f:
                    json.dump(result, f, indent=1)
                os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
