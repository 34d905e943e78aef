#!/usr/bin/env python3
"""Where the time of a small model's fw+bw through bench/frnn.py goes (GPU machine):
CUDA-event time per call, host time per call with no synchronisation, and the
GPU kernels' own time (torch.profiler).  HGRN and RWKV-4 at compare.py's sizes
(B=8 T=1024, 4096 channels as H=32 x M=128, N=1).

    FRNN_LIB=devbin/bin/libfrnn.so python3 bench/py_overhead.py
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import frnn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, T, H, M = 8, 1024, 32, 128
dev = "cuda"


def case(name):
    s = frnn.Step(os.path.join(ROOT, "examples", name + ".frnn"))
    sz = frnn.Sizes(B, T, H, M, 1)
    r = lambda *shape, dt=torch.bfloat16: (torch.rand(*shape, device=dev) * 2 - 1).to(dt).requires_grad_()
    if name == "hgrn":
        ins = [r(B, T, H, M, 1), (-(torch.rand(B, T, H, M, 1, device=dev) * 0.5 + 0.01)).to(torch.bfloat16).requires_grad_()]
        sts = [r(B, H, M, 1, dt=torch.float32)]
    else:
        w = (-torch.rand(1, 1, H, M, 1, device=dev)).requires_grad_()
        u = r(1, 1, H, M, 1, dt=torch.float32)
        ins = [w, u, r(B, T, H, M, 1), r(B, T, H, M, 1)]
        sts = [r(B, H, M, 1, dt=torch.float32), (torch.rand(B, H, M, 1, device=dev) * 0.5 + 0.5).requires_grad_(),
               r(B, H, M, 1, dt=torch.float32)]
    return s, sz, ins, sts


def fwbw(s, sz, ins, sts, gys):
    outs = s.apply(sz, ins, sts, torch.bfloat16)
    torch.autograd.backward(list(outs), gys)


for name in ("hgrn", "rwkv4"):
    s, sz, ins, sts = case(name)
    outs = s.apply(sz, ins, sts, torch.bfloat16)
    gys = [torch.randn_like(o) for o in outs]
    for _ in range(5):
        fwbw(s, sz, ins, sts, gys)
    torch.cuda.synchronize()
    n = 20
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    t0 = time.perf_counter()
    for _ in range(n):
        fwbw(s, sz, ins, sts, gys)
    host = (time.perf_counter() - t0) / n * 1e3
    e1.record()
    torch.cuda.synchronize()
    event = e0.elapsed_time(e1) / n
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fwbw(s, sz, ins, sts, gys)
        torch.cuda.synchronize()
    kern = {}
    for ev in prof.key_averages():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            kern[ev.key] = getattr(ev, "device_time_total", getattr(ev, "cuda_time_total", 0)) / n / 1e3
    gpu = sum(kern.values())
    print("%-6s per fw+bw: events %.3f ms, host (no sync) %.3f ms, GPU kernels %.3f ms" % (name, event, host, gpu))
    for k, v in sorted(kern.items(), key=lambda kv: -kv[1])[:8]:
        print("    %-40s %.3f ms" % (k[:40], v))

if os.environ.get("PY_OVERHEAD_PROFILE") == "1":
    import cProfile
    import pstats
    s, sz, ins, sts = case("rwkv4")
    outs = s.apply(sz, ins, sts, torch.bfloat16)
    gys = [torch.randn_like(o) for o in outs]
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(50):
        fwbw(s, sz, ins, sts, gys)
    pr.disable()
    torch.cuda.synchronize()
    pstats.Stats(pr).sort_stats("tottime").print_stats(18)
