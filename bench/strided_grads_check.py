"""Gradients written in a T-innermost layout: bench/frnn.py's run_backward allocates
each input's gradient with the input's strides, so a permuted view's gradient is
written by the kernels with T innermost.  GPU float32 against the float64 reference
executor (CPU tensors through the same binding), per example, inputs uniform in
[0.1, 0.9) as views with T innermost, B=2 T=37 H=2 M=16 N=8.  On the device:

    FRNN_LIB=.../libfrnn.so python3 bench/strided_grads_check.py mamba s4d ...

Prints each example's worst relative error and 'OK' when all are below 1e-4.
(The GPU tests write gradients into dense tensors only.)"""
import os, sys, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import frnn
torch.manual_seed(int(os.environ.get("SEED", "5")))
print("seed", os.environ.get("SEED", "5"))
worst = 0
for name in sys.argv[1:]:
    st = frnn.Step("examples/%s.frnn" % name)
    sz = frnn.Sizes(2, 37, 2, 16, 8)
    leaves, ins = [], []
    for p in st.inputs:
        B, T, H, m, n = frnn.Step.input_shape(p, sz)
        L = (0.1 + 0.8 * torch.rand(B, H, m, n, T, dtype=torch.float64))
        leaves.append(L)
    S0 = [0.1 * torch.rand(frnn.Step.state_shape(p, sz), dtype=torch.float64) for p in st.states]
    res = {}
    for dev, dt in (("cpu", torch.float64), ("cuda", torch.float32)):
        Ls = [L.detach().to(dev, dt).clone().requires_grad_() for L in leaves]
        ins = [L.permute(0, 4, 1, 2, 3) for L in Ls]  # [B,T,H,m,n], T innermost
        S = [s.detach().to(dev, torch.float32 if dev == "cuda" else torch.float64).clone().requires_grad_() for s in S0]
        outs = st.apply(sz, ins, S, dt)
        g = torch.Generator().manual_seed(11)
        loss = sum((o.double().cpu() * torch.randn(o.shape, generator=g, dtype=torch.float64)).sum() for o in outs)
        loss.backward()
        res[dev] = [L.grad.double().cpu() for L in Ls] + [s.grad.double().cpu() for s in S]
        assert all(L.grad.is_contiguous() for L in Ls)
    errs = [((a - b).norm() / max(b.norm(), 1e-30)).item() for a, b in zip(res["cuda"], res["cpu"])]
    worst = max(worst, max(errs))
    print("%-12s grads rel err max %.2e  (%s)" % (name, max(errs), " ".join("%.1e" % e for e in errs)))
print("strided grads worst %.2e %s" % (worst, "OK" if worst < 1e-4 else "FAIL"))
sys.exit(0 if worst < 1e-4 else 1)
