#!/usr/bin/env python3
"""Which sizes make frnn's GPU GLA / RWKV-6-like forward disagree with a PyTorch loop?
(the cross-check of 2026-11-25 saw relative errors ~1.2 at B=8 T=256 H=32, 128 x 128,
while frnn's GPU tests, B <= 2 and H <= 3, pass).  Runs frnn (bench/frnn.py) and a
float32 PyTorch loop on the same random inputs for several B, T, H; prints the
relative error of y and the final state.  Needs a GPU, FRNN_LIB."""
import os
import sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import frnn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def loop(q, k, v, g, S):
    """q,k,g [B,T,H,N], v [B,T,H,M], S [B,H,M,N]: S = S*exp(g) + v k^T; y = S q."""
    S = S.clone()
    ys = []
    for t in range(q.shape[1]):
        S = S * torch.exp(g[:, t])[:, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append((S * q[:, t, :, None, :]).sum(-1))
    return torch.stack(ys, 1), S


def main():
    step = frnn.Step(os.path.join(ROOT, "examples", "gla.frnn"))
    M = N = 128
    gen = torch.Generator(device="cuda").manual_seed(int(os.environ.get("SEED", "7")))
    print("seed", os.environ.get("SEED", "7"))
    for (B, T, H, dt) in [(2, 64, 2, torch.float32), (8, 64, 32, torch.float32), (1, 64, 32, torch.float32),
                          (8, 64, 1, torch.float32), (8, 256, 32, torch.float32), (2, 256, 2, torch.float32),
                          (8, 256, 32, torch.bfloat16), (1, 64, 3, torch.float32), (1, 64, 4, torch.float32),
                          (1, 64, 8, torch.float32), (2, 64, 8, torch.float32)]:
        def r(shape, lo, hi):
            return (lo + (hi - lo) * torch.rand(shape, generator=gen, device="cuda")).to(dt)
        q, k, g = r((B, T, H, N), -1, 1), r((B, T, H, N), -1, 1), r((B, T, H, N), -0.1, -0.01)
        v = r((B, T, H, M), -1, 1)
        S0 = r((B, H, N, M), -0.1, 0.1).float().transpose(-1, -2)  # as compare.py: [B,H,K,V] viewed
        sz = frnn.Sizes(B, T, H, M, N)
        outs, fins, _ = step.run_forward(sz, [q.unsqueeze(3), k.unsqueeze(3), v.unsqueeze(4), g.unsqueeze(3)],
                                         [S0], out_dtype=dt, want_final=True, for_backward=False)
        yr, Sr = loop(q.float(), k.float(), v.float(), g.float(), S0)
        S0c = S0.contiguous()
        outs2, fins2, _ = step.run_forward(sz, [q.unsqueeze(3).contiguous(), k.unsqueeze(3).contiguous(),
                                                v.unsqueeze(4).contiguous(), g.unsqueeze(3).contiguous()],
                                           [S0c], out_dtype=dt, want_final=True, for_backward=False)
        print("B=%d T=%d H=%d %-14s y %.2e S %.2e | contiguous: y %.2e S %.2e" % (
            B, T, H, str(dt).split(".")[1], rel(outs[0], yr), rel(fins[0], Sr), rel(outs2[0], yr), rel(fins2[0], Sr)),
            flush=True)


if __name__ == "__main__":
    main()
