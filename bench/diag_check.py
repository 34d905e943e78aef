#!/usr/bin/env python3
"""The GLA / RWKV-6 cross-check disagreement, on the device: compare.py's own Model
classes and inputs (check sizes B=8 T=256 H=32), frnn's forward computed before and
after the reference, against fla's PyTorch loop ('naive') and fused kernel, and
compare.py's check_model itself, run once alone and once after other models' checks.
Prints relative errors.  Needs a GPU, FRNN_LIB, PYTHONPATH with refs/ (as run_device.sh)."""
import os
import sys

sys.argv = sys.argv[:1]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as C  # noqa: E402
import torch  # noqa: E402

dev = torch.device("cuda")
d_sizes = (8, 256, 32)
C.preload_refs(["gla", "rwkv6", "delta_rule", "rwkv7"])
for name in ["gla", "rwkv6"]:
    m = C.MODELS[name]
    d = m.dims(*d_sizes)
    for dtype in (torch.bfloat16, torch.float32):
        with torch.no_grad():
            c = m.make(d, dtype, dev, 4242)
            y1 = [t.clone() for t in sum(map(list, m.frnn(c, exact=True)), [])]
            for variant in ("naive", "fused"):
                r = sum(map(list, m.ref(c, variant)), [])
                y2 = sum(map(list, m.frnn(c, exact=True)), [])
                print("%s %s %-6s frnn before/after ref: %s | frnn vs ref: %s" % (
                    name, str(dtype)[6:], variant, ["%.1e" % C.relerr(a, b) for a, b in zip(y1, y2)],
                    ["%.1e" % C.relerr(a, b) for a, b in zip(y2, r)]), flush=True)
    for variant in ("naive", "fused"):
        out = C.check_model(m, d, torch.bfloat16, dev, variant)
        print("check_model %s bf16 %s: fw %.2e bw %.2e" % (name, variant, out["max_fw"], out["max_bw"] or -1), flush=True)
# after the checks of other models, as the full run does
for name in ["delta_rule", "rwkv7", "rwkv6", "gla"]:
    m = C.MODELS[name]
    v = "fused"
    try:
        out = C.check_model(m, m.dims(*d_sizes), torch.bfloat16, dev, v)
        print("in sequence: check_model %s bf16 %s: fw %.2e bw %s" % (name, v, out["max_fw"], out["max_bw"]), flush=True)
    except Exception as e:
        print("in sequence: %s: %s" % (name, C.short_err(e, 200)), flush=True)
