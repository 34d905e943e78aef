#!/usr/bin/env python3
"""frnn against the reference implementations of SPEC section 5, on one GPU.

    python3 bench/compare.py                 # everything, within FRNN_BENCH_BUDGET seconds
    python3 bench/compare.py --report FILE   # table (and chart) from a results.json
    python3 bench/compare.py --selftest-cpu  # no GPU: frnn's reference executor against
                                             # PyTorch loops written to each reference's
                                             # conventions (checks layouts and gradients)
    python3 bench/compare.py --selftest-imports  # no GPU: a time limit firing during an
                                             # import (fake packages), see Imports below

Phases (each model in its own try/except, results.json rewritten after every step):
  time   fw and fw+bw time of frnn and of the reference (CUDA events around each call,
         median, warm-up first, two input sets used in turn), peak memory of one fw+bw
  check  relative error ||a-b||/||b|| of outputs, final states and the gradient of every
         input and initial state, frnn vs reference, on the same inputs (float32, bf16)
  first  first-call time in fresh subprocesses: frnn with an empty FRNN_CACHE_DIR (cold)
         and again with it filled (warm); the reference with an empty TRITON_CACHE_DIR
         (cold: import excluded, Triton compile + autotune + run included) and filled (warm)

Imports: before any phase, every reference function the selected models may call (all
variants, check-only ones and fallbacks; torch._dynamo and einops first) is imported once,
outside any time limit, and the time is logged (header 'ref_imports', row 'ref_import'); a
failed import is recorded for the model and its rows say "import failed: ..." (not retried).
The time limit (Alarm, SIGALRM) never fires inside an import: it waits until the import
ends (at most FRNN_BENCH_IMPORT_GRACE s past the limit); one forced inside an import
removes the modules imported since the limit began from sys.modules, so a retry starts
clean.  (On 2026-11-25 the limit interrupted fla's first import, and every later fla call
failed with "partially initialized module 'torch._dynamo' has no attribute 'decorators'".)

Time shares (FRNN_BENCH_SHARE=fair, the default): in time and check, each model (check:
each dtype and model) gets at most time left / models left (a first attempt at least
FRNN_BENCH_FIRST_SHARE s, 30, when budget / models allows that, else FRNN_BENCH_MIN_SHARE
s, 8, while that is left; never more than its FRNN_BENCH_MODEL_TIMEOUT(S) cap); what one
does not use goes to the next.  Models that ran out of their share run again at the end with
what is left (their Triton kernels compiled before the limit are cached by then); the
better attempt is kept.  FRNN_BENCH_SHARE=order: the old fixed order, each up to its cap.
A call slower than FRNN_BENCH_SLOW_CALL_S (the PyTorch loops of mamba, longhorn) is timed
1 warm-up + at most 3 times (fewer near the limit; the row's label says so).  In first,
each subprocess gets at most its share of what is left (FRNN_BENCH_FIRST_JOBS at a time),
and a subprocess killed at its limit or dead (signal) is recorded as such, for the part
(frnn or reference variant) it was in; the variants after it run in a new subprocess.

Isolation: reference variants of the models in FRNN_BENCH_ISOLATE (default mlstm, whose
Triton kernel made Triton 3.6's LLVM abort the interpreter) run their time and check steps
in a child process (compare.py --isolated JOB, results back as JSON); a child that dies is
recorded ("child process died (killed by signal 6 (SIGABRT)) ...", 'crashed') and the
model's fallbacks run: for mlstm, mlstm_chunkwise__native_autograd (PyTorch; it computes
in its inputs' dtype and its float32 states meet them in a matmul, so bf16 inputs are cast
to float32 and h back to bf16, said in the label and the check's 'ref_cast') and
xl_chunk again under DISABLE_LLVM_OPT=1 (Triton skips LLVM's O3 pipeline, where the
SLPVectorizer assertion fired; the row's label says which ran).  A variant that crashed
is not run again in later phases.  mamba2: every Triton autotuner of mamba_ssm's ssd_*.py
keeps one config (prune_autotuners, FRNN_BENCH_MAMBA2_PRUNE), so the first fw+bw compiles
one config per kernel instead of all 4-11 (each compiled and benchmarked); the row says "(autotune pruned to 1 config)" and
results.json's mamba2 entry lists the configs kept (autotune_pruned).

Inputs are built once in the reference's layout and viewed (permute / unsqueeze / view,
no copies) in frnn's [B,T,H,m,n] layout; both sides run through torch autograd, so
every layout and scale convention is plain PyTorch code in the Model classes below.

Environment:
  OUT                   where results.json, fwbw_ratio.png, logs go (default: bench/)
  FRNN_LIB              libfrnn.so (default ../build/libfrnn.so)
  FRNN_BENCH_BUDGET     seconds for the whole run (default 400)
  FRNN_BENCH_MODELS     comma list (default: all 14)
  FRNN_BENCH_PHASES     comma list of time,check,first (default: all)
  FRNN_BENCH_CHUNK=1    also the fla chunk_* kernels (first calls take minutes unless pruned)
  FRNN_BENCH_FLA_PRUNE  median (default), first, cheapest: the autotuners of fla's chunk
                        kernels (every fla.ops module but fused_recurrent) keep one config,
                        labelled "(autotune pruned to 1 config)"; 0: full autotune
  FRNN_BENCH_FLA_LIFT_GUARD 1 (default): run chunk_gated_delta_rule's backward although fla
                        refuses it on Hopper with Triton < 3.7.1 (labelled); 0: keep the guard
  FRNN_BENCH_SIZES      B,T,H for timing (default 8,1024,32)
  FRNN_BENCH_CHECK_SIZES B,T,H for the cross-check (default 8,256,32: same B and H as the
                        timing, so the bf16 check reuses the compiled Triton kernels)
  FRNN_BENCH_SHARE      fair (default) or order: see Time shares
  FRNN_BENCH_MIN_SHARE  seconds a model gets at least while that much is left (default 8)
  FRNN_BENCH_FIRST_SHARE the same for first attempts when FRNN_BENCH_BUDGET / models is at
                        least this (default 30: a first Triton compile takes more than 8 s)
  FRNN_BENCH_IMPORT_GRACE seconds a time limit waits for an import still running (default 60)
  FRNN_BENCH_MODEL_TIMEOUT  cap in seconds per model and phase (default 120)
  FRNN_BENCH_MODEL_TIMEOUTS per-model caps, e.g. mamba2=90,mlstm=60 (else the one above)
  FRNN_BENCH_SLOW_CALL_S a call slower than this gets 1 warm-up + <= 3 reps (default 2)
  FRNN_BENCH_GRAPH=1    time phase: each side's call (fw, fw+bw) captured once per input set
                        in a CUDA graph and the replays timed (events around each replay), so
                        that no host work is timed: for steps whose GPU time is below the
                        host's time to issue a call through Python (HGRN, RWKV-4: about 0.7
                        ms of frnn.py and autograd a fw+bw).  A capture that fails falls back
                        to the plain timing ('graph_error' in the entry)
  FRNN_BENCH_ISOLATE    models whose Triton reference variants run in a child process:
                        comma list (default mlstm), 'all', 'none'; model/variant for one
  FRNN_BENCH_MAMBA2_PRUNE  median (default: the median-cost config, falling back to
                        cheaper ones on OutOfResources), first, cheapest; 0: full autotune
  FRNN_BENCH_MLSTM_NOOPT=0  no xl_chunk retry under DISABLE_LLVM_OPT=1 when it failed
  FRNN_BENCH_MLSTM_NATIVE=1 the native PyTorch chunkwise mlstm instead of xl_chunk
  FRNN_BENCH_FIRST_TIMEOUT  seconds per first-call subprocess at most (default 60)
  FRNN_BENCH_FIRST_JOBS     first-call subprocesses at once (default 6)
  FRNN_BENCH_GSA_SLOTS  GSA slots (default 64, fla's default num_slots)
  FRNN_BENCH_S4D_N      S4D complex modes (default 32: s4d.py's d_state 64 / 2)
  FRNN_BENCH_NO_TABLE=1 do not print the table at the end (run_device.sh prints it)
  FRNN_BENCH_DEVICE=cpu a dry run of every phase on the CPU (CpuRefs, host timers)
  FRNN_BENCH_FAKE_ABORT model/variant,...: test hook, that variant's child process
                        aborts (SIGABRT) where the reference would be called (isolated
                        and first-call children only), to try the crash path on the CPU
  (between parent and child: FRNN_BENCH_CHILD_DEADLINE, FRNN_BENCH_FIRST_VARIANTS,
  FRNN_BENCH_FIRST_SKIP_FRNN)
"""
import collections
import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

T_START = time.time()
BUDGET = float(os.environ.get("FRNN_BENCH_BUDGET", "400"))
DEADLINE = T_START + BUDGET


def remaining():
    return DEADLINE - time.time()


def env_list(name, default):
    v = os.environ.get(name, "").strip()
    return [x.strip() for x in v.split(",") if x.strip()] if v else default


def env_ints(name, default):
    v = os.environ.get(name, "").strip()
    return tuple(int(x) for x in v.split(",")) if v else default


def env_float(name, default):
    v = os.environ.get(name, "").strip()
    try:
        return float(v) if v else float(default)
    except ValueError:
        return float(default)


def log(*a):
    print("[%6.1fs]" % (time.time() - T_START), *a, flush=True)


class RefImportError(ImportError):
    """A reference function whose module did not import (at start-up, see preload_refs);
    its message starts 'import failed: ' and is what the row records."""
    pass


def short_err(e, n=300):
    if isinstance(e, RefImportError):
        s = str(e).strip().replace("\n", " | ")
    else:
        s = "%s: %s" % (type(e).__name__, str(e).strip().replace("\n", " | "))
    return s if len(s) <= n else s[:n] + "..."


# ===================================================================== torch
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import frnn  # noqa: E402  (bench/frnn.py)

# FRNN_BENCH_DEVICE=cpu: a dry run of every phase on the CPU (frnn's reference executor,
# the CpuRefs loops, host timers, no memory statistics), to test this script without a GPU.
DEVICE = os.environ.get("FRNN_BENCH_DEVICE", "cuda")
CPU_TEST = DEVICE == "cpu"  # also set by --selftest-cpu


class _HostEvent:
    def __init__(self, **kw):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3


def Event():
    return _HostEvent() if DEVICE == "cpu" else torch.cuda.Event(enable_timing=True)


# ----------------------------------------------------------------- random inputs
class Rand:
    """Uniform inputs in the ranges of tests/gpu/test_gpu_models.c MODELS[]:
    'lo:hi' or 'lo:hi:n' (times sqrt(3/N), so a row of N has about unit norm)."""

    def __init__(self, seed, device):
        self.g = torch.Generator(device=device)
        self.g.manual_seed(seed)
        self.device = device

    def __call__(self, spec, shape, dtype, N=None):
        parts = spec.split(":")
        lo, hi = float(parts[0]), float(parts[1])
        if len(parts) > 2 and parts[2] == "n":
            s = math.sqrt(3.0 / N)
            lo, hi = lo * s, hi * s
        x = torch.rand(shape, generator=self.g, device=self.device, dtype=torch.float32)
        return (x * (hi - lo) + lo).to(dtype)

    def normal(self, shape, dtype=torch.float32, std=1.0):
        return (torch.randn(shape, generator=self.g, device=self.device, dtype=torch.float32) * std).to(dtype)


class Case:
    """One input set: leaves L and initial states S (reference layout), constants C."""

    def __init__(self, d, dtype, device):
        self.d = d  # dict B,T,H,M,N (+ model extras)
        self.dtype = dtype
        self.device = device
        self.L = collections.OrderedDict()
        self.S = collections.OrderedDict()
        self.C = {}
        self.cast_params = False  # frnn side: cast float32 parameters to dtype
        # states and float32 parameters (float64 throughout in --selftest-cpu)
        self.sdt = torch.float64 if dtype == torch.float64 else torch.float32
        self.pdt = self.sdt

    def leaves(self):
        return list(self.L.values()) + list(self.S.values())

    def names(self):
        return list(self.L.keys()) + ["state " + k for k in self.S.keys()]

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.leaves())

    def requires_grad_(self):
        for t in self.leaves():
            if t.is_floating_point():
                t.requires_grad_(True)
        return self

    def zero_grad(self):
        for t in self.leaves():
            t.grad = None


# ------------------------------------------------------------------ references
class RefMissing(Exception):
    pass


_ref_cache = {}
_ref_fail = {}  # dotted name -> 'module: why' of an import that failed (not tried again)


def ref_fn(name):
    """A reference function by dotted name (on the GPU the real library from refs/; in
    --selftest-cpu the PyTorch loops in CpuRefs).  preload_refs() imports every one the
    run needs at start-up, outside any time limit; a name imported later goes through
    guarded_import (a running Alarm waits for it).  A failed import is remembered and
    raises RefImportError('import failed: ...') again without importing again."""
    if name in _ref_cache:
        return _ref_cache[name]
    if name in _ref_fail:
        raise RefImportError("import failed: " + _ref_fail[name])
    if CPU_TEST:
        f = getattr(CpuRefs, name.rsplit(".", 1)[1])
    else:
        mod, fn = name.rsplit(".", 1)
        try:
            f = getattr(guarded_import(mod), fn)
        except Exception as e:
            _ref_fail[name] = "%s: %s" % (mod if not isinstance(e, AttributeError) else name, short_err(e, 300))
            raise RefImportError("import failed: " + _ref_fail[name]) from e
    _ref_cache[name] = f
    if not CPU_TEST and name.startswith(FLA) and name.rsplit(".", 1)[1].startswith("chunk_"):
        prune_fla_chunk()
    return f


def prune_pick_from(var):
    """A pruning choice from environment variable `var`: median (default), first,
    cheapest (order_configs); None for 0/off/no/none/full (full autotune)."""
    v = os.environ.get(var, "median").strip().lower() or "median"
    return None if v in ("0", "off", "no", "none", "full") else v


def pruned_label(pick):
    return " (autotune pruned to 1 config)" if pick else ""


def pruned_info(prefix, pick):
    """results.json entry: the kernels of modules under `prefix` pruned so far ({} if none)."""
    kernels = {k: v for k, v in AUTOTUNE_PRUNED.items() if k.startswith(prefix)}
    return {"autotune_pruned": {"pick": pick, "kernels": kernels}} if kernels else {}


def fla_prune_pick():
    """FRNN_BENCH_FLA_PRUNE for fla's chunk kernels (their first call with full autotune
    takes minutes: 150-340 s measured)."""
    return prune_pick_from("FRNN_BENCH_FLA_PRUNE")


def fla_guard_lifted():
    """FRNN_BENCH_FLA_LIFT_GUARD (default 1): fla 0.5.2 refuses its gated chunk backward
    (chunk_bwd_dqkwg with g: chunk_gated_delta_rule) on Hopper with Triton 3.4-3.7.0, saying
    that combination computes it wrong (fla #640).  Lifted, the kernel runs and the row says
    so; the cross-check then shows how wrong.  0: keep the guard (the row records the error)."""
    return os.environ.get("FRNN_BENCH_FLA_LIFT_GUARD", "1").strip() not in ("0", "off", "no")


def lift_fla_hopper_guard():
    mod = sys.modules.get("fla.ops.common.chunk_o")
    if fla_guard_lifted() and mod is not None and getattr(mod, "TRITON_ABOVE_3_7_1", True) is False:
        mod.TRITON_ABOVE_3_7_1 = True  # read at call time by chunk_bwd_dqkwg's guard
        log("fla: Hopper guard of chunk_bwd_dqkwg lifted (FRNN_BENCH_FLA_LIFT_GUARD=0 keeps it)")


def fla_chunk_label(fn):
    return fn + pruned_label(fla_prune_pick())


def prune_fla_chunk():
    """Once fla's chunk functions are imported: lifts fla's Hopper guard (fla_guard_lifted),
    then every Triton autotuner in fla.ops modules other than the fused_recurrent ones
    (whose timings stay those of full autotune) keeps one config, as for mamba2.
    Idempotent; a module imported later is pruned on the next call."""
    lift_fla_hopper_guard()
    pick = fla_prune_pick()
    if not pick:
        return 0
    mods = [mod for n, mod in sorted(sys.modules.items())
            if mod is not None and n.startswith("fla.ops.") and "fused_recurrent" not in n]
    n = prune_autotuners(mods, pick)
    if n:
        log("fla chunk kernels: Triton autotune pruned to 1 config in %d more kernels (%s)" % (n, pick))
    return n


# ------------------------------------------------------- Triton autotune pruning
# Triton >= 3.0: @triton.autotune(configs=[...]) leaves a triton.runtime.autotuner.Autotuner
# object as the module attribute; Autotuner.run benchmarks every config on the first call
# for each key (compiling each one), but with a single config it just runs it.  mamba_ssm's
# ssd_*.py kernels have 4-11 configs each (mamba_ssm/utils/determinism.py autotune_configs
# passes them through unless MAMBA_DETERMINISTIC=1, which also changes the algorithm), so
# the first fw+bw compiles about 100 kernels.  prune_autotuners() keeps one.
AUTOTUNE_PRUNED = collections.OrderedDict()  # kernel -> config kept (for results.json)


def _config_cost(cfg):
    """(product of the BLOCK_SIZE_* meta-parameters) * num_stages, as determinism.py ranks them."""
    p = 1
    for k, v in getattr(cfg, "kwargs", {}).items():
        if k.startswith("BLOCK_SIZE") and isinstance(v, int):
            p *= v
    return p * (getattr(cfg, "num_stages", 1) or 1), getattr(cfg, "num_warps", 4) or 4


def config_str(cfg):
    kw = ",".join("%s=%s" % (k.replace("BLOCK_SIZE_", "B"), v) for k, v in getattr(cfg, "kwargs", {}).items())
    return "%s w%s s%s" % (kw or "-", getattr(cfg, "num_warps", "?"), getattr(cfg, "num_stages", "?"))


def order_configs(configs, pick="median"):
    """The configs in the order to try them, the one to use first.  'median': the median
    by _config_cost (a mid-sized tile), then the cheaper ones (largest first; a config
    that runs out of shared memory or registers falls back to the next), then the larger
    ones; 'first': as listed (upstream lists its largest tile first); 'cheapest': by cost."""
    cs = list(configs)
    if len(cs) <= 1 or pick == "first":
        return cs
    srt = sorted(cs, key=_config_cost)
    if pick == "cheapest":
        return srt
    i = len(srt) // 2
    return [srt[i]] + srt[:i][::-1] + srt[i + 1:]


_PRUNE_FALLBACK_ERRORS = ("OutOfResources", "PTXASError", "CompileTimeAssertionFailure")


def _pruned_run(at):
    orig = at.run  # the class's bound method

    def run(*args, **kwargs):
        while True:
            try:
                return orig(*args, **kwargs)
            except Exception as e:
                if type(e).__name__ not in _PRUNE_FALLBACK_ERRORS or len(at._frnn_cands) <= 1:
                    raise
                bad = at._frnn_cands.pop(0)
                at.configs = at._frnn_cands[:1]
                AUTOTUNE_PRUNED[at._frnn_name] = "%s (after %s: %s)" % (config_str(at.configs[0]), config_str(bad),
                                                                        type(e).__name__)
    return run


def prune_autotuners(modules, pick="median"):
    """Every Autotuner reachable from the modules' attributes (directly or through .fn,
    e.g. under @triton.heuristics) keeps one config (order_configs(pick)[0]); its run()
    moves on to the next candidate if that one fails with OutOfResources / PTXASError.
    Returns how many were pruned (each once, however often called)."""
    try:
        from triton.runtime.autotuner import Autotuner
    except Exception:
        return 0
    n = 0
    for mod in modules:
        for name, obj in sorted(vars(mod).items()):
            o, depth = obj, 0
            while o is not None and not isinstance(o, Autotuner) and depth < 4:
                o, depth = getattr(o, "fn", None), depth + 1
            if not isinstance(o, Autotuner) or getattr(o, "_frnn_pruned", False):
                continue
            cands = order_configs(o.configs, pick)
            if not cands:
                continue
            o._frnn_pruned = True
            o._frnn_cands = cands
            o._frnn_name = mod.__name__ + "." + getattr(getattr(o, "base_fn", None), "__name__", name)
            o.configs = cands[:1]
            o.run = _pruned_run(o)
            AUTOTUNE_PRUNED[o._frnn_name] = "%s (1 of %d)" % (config_str(cands[0]), len(cands))
            n += 1
    return n


def _f(t):
    """float32, or float64 left as is (--selftest-cpu runs in float64)."""
    return t if t.dtype == torch.float64 else t.float()


def selective_scan_ref_local(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """mamba_ssm/ops/selective_scan_interface.py selective_scan_ref (real A, variable B/C
    [B,N,L]), copied for when mamba_ssm does not import and for --selftest-cpu."""
    dtype_in = u.dtype
    u = _f(u)
    delta = _f(delta)
    if delta_bias is not None:
        delta = delta + _f(delta_bias[..., None])
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    B = _f(B)
    C = _f(C)
    x = A.new_zeros((batch, dim, dstate))
    ys = []
    deltaA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    deltaB_u = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
    last_state = None
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        y = torch.einsum('bdn,bn->bd', x, C[:, :, i])
        if i == u.shape[2] - 1:
            last_state = x
        ys.append(y)
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype=dtype_in)
    return out if not return_last_state else (out, last_state)


def longhorn_ref_loop(u, q, k, dt, D, t_bias, z):
    """Longhorn (selective_scan_online7_ref's equation, longhorn_cuda), a PyTorch loop:
    u, dt, z [B,D,L]; q, k [B,N,L]; D, t_bias [D]; zero initial state.
    Returns (out [B,D,L], last_state [B,D,N])."""
    dtype_in = u.dtype
    u, q, k, dt, z = (_f(t) for t in (u, q, k, dt, z))
    Bsz, Dd, L = u.shape
    N = q.shape[1]
    x = u.new_zeros(Bsz, Dd, N)
    a = torch.sigmoid(dt + _f(t_bias)[:, None])  # [B,D,L]
    kk = k * k  # [B,N,L]
    delta = a / (1 + a * kk.sum(1, keepdim=True))  # [B,D,L]
    ys = []
    for i in range(L):
        d_i = delta[:, :, i, None]
        x = x - d_i * kk[:, None, :, i] * x + (d_i * u[:, :, i, None]) * k[:, None, :, i]
        ys.append(torch.einsum('bdn,bn->bd', x, q[:, :, i]))
    y = torch.stack(ys, dim=2)
    out = (y + _f(D)[:, None] * u) * F.silu(z)
    return out.to(dtype_in), x


def s4d_fft_ref(u, log_dt, log_A_real, A_imag, C_re, C_im, D):
    """S4D as state-spaces/s4 models/s4/s4d.py: S4DKernel.forward (ZOH, Vandermonde
    kernel) then S4D.forward's FFT convolution y = irfft(rfft(u) rfft(K))[..., :L] + u D,
    before the activation.  u [B,H_s4,L]."""
    L = u.shape[-1]
    dt = torch.exp(log_dt)  # [H]
    C = torch.complex(C_re, C_im)  # [H,N]
    A = -torch.exp(log_A_real) + 1j * A_imag
    dtA = A * dt[:, None]
    K = dtA.unsqueeze(-1) * torch.arange(L, device=A.device)  # [H,N,L]
    C = C * (torch.exp(dtA) - 1.) / A
    K = 2 * torch.einsum('hn,hnl->hl', C, torch.exp(K)).real  # [H,L]
    uf = u.to(K.dtype)
    k_f = torch.fft.rfft(K, n=2 * L)
    u_f = torch.fft.rfft(uf, n=2 * L)
    y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]
    y = y + uf * D.unsqueeze(-1)
    return y.to(u.dtype)


def s4d_discretize(log_dt, log_A_real, A_imag, C_re, C_im):
    """Host side of s4d.frnn: dA = exp(dt A), C' = C (dA - 1) / A (complex, [H_s4,N])."""
    dt = torch.exp(log_dt)
    A = -torch.exp(log_A_real) + 1j * A_imag
    dtA = A * dt[:, None]
    dA = torch.exp(dtA)
    Cp = torch.complex(C_re, C_im) * (dA - 1.) / A
    return dA.real, dA.imag, Cp.real, Cp.imag


# ---------------------------------------------------------------------- steps
_steps = {}


def step(name):
    if name not in _steps:
        _steps[name] = frnn.Step(os.path.join(ROOT, "examples", name + ".frnn"))
    return _steps[name]


def fcall(stepname, sz, inputs, states, out_dtype):
    """frnn call, differentiable when grad is enabled; returns outputs + final states."""
    s = step(stepname)
    if torch.is_grad_enabled() and any(t.requires_grad for t in list(inputs) + list(states)):
        return s.apply(sz, inputs, states, out_dtype)
    outs, fins, _ = s.run_forward(sz, inputs, states, out_dtype=out_dtype, want_final=True, for_backward=False)
    return tuple(outs) + tuple(fins)


# ---------------------------------------------------------------------- models
FLA = "fla.ops."


class Model:
    name = "?"
    files = ()
    has_states = True

    def dims(self, B, T, H):
        return dict(B=B, T=T, H=H, M=128, N=128)

    def variants(self):
        """[(key, label)] of reference variants to time and check."""
        return [("default", "?")]

    def check_variants(self):
        """Variants of the cross-check (the timed ones, plus any check-only ones)."""
        return self.variants()

    def fallbacks(self, variant):
        """[(key, label)] to run instead when `variant` fails (crash or error, not a timeout)."""
        return []

    def all_labels(self):
        """{key: label} of every variant this model may run (fallbacks included)."""
        d = dict(self.check_variants())
        for v in list(d):
            d.update(dict(self.fallbacks(v)))
        return d

    def variant_env(self, variant):
        """Environment variables the reference variant runs under (in its child process)."""
        return {}

    def triton_variant(self, variant):
        """Whether the variant compiles Triton kernels (which can abort the interpreter)."""
        return True

    def isolated(self, variant):
        """Run this reference variant in a child process (FRNN_BENCH_ISOLATE)?"""
        iso = env_list("FRNN_BENCH_ISOLATE", ["mlstm"])
        if "none" in iso or "0" in iso:
            return False
        if "all" in iso:
            return self.triton_variant(variant)
        return (self.name in iso and self.triton_variant(variant)) or "%s/%s" % (self.name, variant) in iso

    def ref_name(self, variant):
        """Dotted name of the library function the variant calls (None: local PyTorch code)."""
        return None

    def ref_imports(self, variant):
        """Dotted names preload_refs() imports (outside any time limit) for the variant."""
        n = self.ref_name(variant)
        return [n] if n else []

    def import_error(self, variant):
        """'module: why' when a function the variant needs did not import, else None."""
        if CPU_TEST:
            return None
        for n in self.ref_imports(variant):
            if n in _ref_fail:
                return _ref_fail[n]
        return None

    def prepare_refs(self):
        """After the imports (start-up, no time limit): set-up such as mamba2's pruning."""
        pass

    def ref_cast(self, dtype, variant):
        """How the reference's inputs are cast for `dtype` ('' when they are not)."""
        return ""

    def make(self, d, dtype, device, seed):
        raise NotImplementedError

    def ref(self, c, variant):
        raise NotImplementedError

    def frnn(self, c, exact=True):
        raise NotImplementedError

    def p(self, c, t):
        """A float32 parameter as frnn gets it (cast when mixed dtypes are turned off)."""
        return t.to(c.dtype) if c.cast_params else t

    def ref_grad_extras(self, c, grads):
        """Extra comparisons: {'x*': tensor} compared with frnn's gradient of x; see RWKV-4."""
        return {}

    bw_exclude = ()  # gradient keys left out of the summary (max_bw)

    def final_grad(self, variant):
        """'' when the check gives the final states a (random) output gradient, as usual; else
        why not: a reference whose backward ignores the final state's gradient (dht) gets
        zero there, on both sides, so that the comparison is like-for-like (see RWKV6)."""
        return ""

    def extra_info(self):
        """Extra entries for the model's row in results.json (after the time phase)."""
        return {}

    notes = ""


def fla_pruned_info(variants):
    """results.json entry of an fla model that ran a chunk variant pruned: the fla kernels
    pruned in this process so far (its own and the ones fla's chunk functions share)."""
    if not any(v == "chunk" for v, _ in variants):
        return {}
    return pruned_info("fla.", fla_prune_pick())


def _sz(d, M=None, N=None):
    return frnn.Sizes(d["B"], d["T"], d["H"], M or d["M"], N or d["N"])


def _T_ref_state(S):  # fla [B,H,K,V] <-> frnn [B,H,M=V,N=K]
    return S.transpose(-1, -2)


class FlaLinear(Model):
    """Shared parts of the fla models with q, k [B,T,H,K], v [B,T,H,V], state [B,H,K,V]."""
    chunk_fn = None
    fused_fn = None

    def variants(self):
        v = [("fused", self.fused_fn)]
        if os.environ.get("FRNN_BENCH_CHUNK") == "1" and self.chunk_fn:
            v.append(("chunk", fla_chunk_label(self.chunk_fn)))
        return v

    def extra_info(self):
        return fla_pruned_info(self.variants())

    def qkv(self, c, r, qn="q", kn="k"):
        d, dt = c.d, c.dtype
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        c.L[qn] = r("-1:1:n", (B, T, H, N), dt, N)
        c.L[kn] = r("-1:1:n", (B, T, H, N), dt, N)
        c.L["v"] = r("-1:1", (B, T, H, M), dt)

    def state(self, c, r, name="S"):
        d = c.d
        c.S[name] = r("-0.1:0.1", (d["B"], d["H"], d["N"], d["M"]), c.sdt)

    def triton_variant(self, variant):
        return variant != "naive"  # fla's naive.py loops are PyTorch

    naive_fn = None  # fla's PyTorch loop (check-only variant 'naive'), relative to fla.ops

    def ref_name(self, variant):
        if variant == "naive":
            return FLA + self.naive_fn if self.naive_fn else None
        return FLA + self.name + "." + (self.fused_fn if variant == "fused" else self.chunk_fn)

    @staticmethod
    def row(t):  # [B,T,H,K] -> [B,T,H,1,N]
        return t.unsqueeze(3)

    @staticmethod
    def col(t):  # [B,T,H,V] -> [B,T,H,M,1]
        return t.unsqueeze(4)

    @staticmethod
    def sc(t):  # [B,T,H] -> [B,T,H,1,1]
        return t[..., None, None]


class DeltaRule(FlaLinear):
    name, files = "delta_rule", ("delta_rule",)
    fused_fn, chunk_fn = "fused_recurrent_delta_rule", "chunk_delta_rule"

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        self.qkv(c, r)
        c.L["beta"] = r("0:1", (d["B"], d["T"], d["H"]), dtype)
        self.state(c, r)
        return c

    def ref(self, c, variant):
        L = c.L
        f = ref_fn(self.ref_name(variant))
        o, ht = f(L["q"], L["k"], L["v"], L["beta"], scale=1.0, initial_state=c.S["S"], output_final_state=True)
        return [o], [ht]

    def frnn(self, c, exact=True):
        L = c.L
        y, S = fcall("delta_rule", _sz(c.d), [self.row(L["q"]), self.row(L["k"]), self.col(L["v"]), self.sc(L["beta"])],
                     [_T_ref_state(c.S["S"])], c.dtype)
        return [y], [_T_ref_state(S)]


class GatedDeltaRule(FlaLinear):
    name, files = "gated_delta_rule", ("gated_delta_rule",)
    fused_fn, chunk_fn = "fused_recurrent_gated_delta_rule", "chunk_gated_delta_rule"
    naive_fn = "gated_delta_rule.naive.naive_recurrent_gated_delta_rule"

    def variants(self):
        v = FlaLinear.variants(self)
        if fla_guard_lifted():  # fla #640: see fla_guard_lifted
            v = [(n, l + " [Hopper guard lifted: fla says Triton < 3.7.1 computes its backward wrong]"
                  if n == "chunk" else l) for n, l in v]
        return v

    notes = "fla fused_recurrent_gated_delta_rule has no backward (NotImplementedError); chunk_gated_delta_rule refuses on Hopper with Triton 3.4-3.7.0"

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        self.qkv(c, r)
        c.L["g"] = r("-0.1:0", (d["B"], d["T"], d["H"]), dtype)
        c.L["beta"] = r("0:1", (d["B"], d["T"], d["H"]), dtype)
        self.state(c, r)
        return c

    def check_variants(self):
        return self.variants() + [("naive", "naive_recurrent_gated_delta_rule")]

    def ref(self, c, variant):
        L = c.L
        if variant == "naive":  # fla's PyTorch loop (check only: it has a backward, through autograd)
            f = ref_fn(self.ref_name(variant))
            o, ht = f(L["q"], L["k"], L["v"], L["beta"], L["g"], scale=1.0, initial_state=c.S["S"],
                      output_final_state=True)
            return [o], [ht]
        f = ref_fn(self.ref_name(variant))
        o, ht = f(L["q"], L["k"], L["v"], g=L["g"], beta=L["beta"], scale=1.0, initial_state=c.S["S"],
                  output_final_state=True)
        return [o], [ht]

    def frnn(self, c, exact=True):
        L = c.L
        y, S = fcall("gated_delta_rule", _sz(c.d),
                     [self.row(L["q"]), self.row(L["k"]), self.col(L["v"]), self.sc(L["g"]), self.sc(L["beta"])],
                     [_T_ref_state(c.S["S"])], c.dtype)
        return [y], [_T_ref_state(S)]


class RWKV7(FlaLinear):
    name, files = "rwkv7", ("rwkv7",)
    fused_fn, chunk_fn = "fused_recurrent_rwkv7", "chunk_rwkv7"
    naive_fn = "generalized_delta_rule.dplr.naive.dplr_recurrence"
    notes = "fla fused_recurrent_rwkv7 (= fused_recurrent_dplr_delta_rule) has no backward (NotImplementedError)"

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        c.L["r"] = r("-1:1:n", (B, T, H, N), dtype, N)
        c.L["w"] = r("-0.1:-0.01", (B, T, H, N), dtype)
        c.L["k"] = r("-1:1:n", (B, T, H, N), dtype, N)
        c.L["v"] = r("-1:1", (B, T, H, M), dtype)
        c.L["a"] = r("-0.3:0.3:n", (B, T, H, N), dtype, N)
        c.L["b"] = r("-0.3:0.3:n", (B, T, H, N), dtype, N)
        self.state(c, r)
        return c

    def check_variants(self):
        return self.variants() + [("naive", "dplr_recurrence")]

    def ref(self, c, variant):
        L = c.L
        if variant == "naive":  # fla's PyTorch loop: head-first [B,H,T,K], q scaled by K^-0.5 inside
            f = ref_fn(self.ref_name(variant))
            hf = lambda t: t.transpose(1, 2)
            K = L["r"].shape[-1]
            o, ht = f(hf(L["r"]) * (K ** 0.5), hf(L["k"]), hf(L["v"]), hf(L["a"]), hf(L["b"]), hf(L["w"]),
                      initial_state=c.S["S"], output_final_state=True)
            return [o.transpose(1, 2)], [ht]
        f = ref_fn(self.ref_name(variant))
        o, ht = f(L["r"], L["w"], L["k"], L["v"], L["a"], L["b"], scale=1.0, initial_state=c.S["S"],
                  output_final_state=True)
        return [o], [ht]

    def frnn(self, c, exact=True):
        L = c.L
        y, S = fcall("rwkv7", _sz(c.d), [self.row(L["r"]), self.row(L["w"]), self.row(L["k"]), self.col(L["v"]),
                                         self.row(L["a"]), self.row(L["b"])], [_T_ref_state(c.S["S"])], c.dtype)
        return [y], [_T_ref_state(S)]


class RWKV6(FlaLinear):
    name, files = "rwkv6", ("rwkv6",)
    fused_fn, chunk_fn = "fused_recurrent_rwkv6", "chunk_rwkv6"
    naive_fn = "rwkv6.recurrent_naive.naive_recurrent_rwkv6"
    notes = ("fla fused_recurrent_rwkv6's backward ignores the final state's gradient (its kernels take no dht): "
             "the check of that variant gives the final state zero gradient on both sides")

    def check_variants(self):
        # fla's own PyTorch loop (autograd backward, uses dht) as a third opinion, as for GLA
        return self.variants() + [("naive", "naive_recurrent_rwkv6")]

    def final_grad(self, variant):
        if variant == "fused":
            return "fla fused_recurrent_rwkv6 backward ignores dht (FusedRecurrentRWKV6Function.backward)"
        return ""

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        c.L["r"] = r("-1:1:n", (B, T, H, N), dtype, N)
        c.L["k"] = r("-1:1:n", (B, T, H, N), dtype, N)
        c.L["v"] = r("-1:1", (B, T, H, M), dtype)
        c.L["w"] = r("-0.1:-0.01", (B, T, H, N), dtype)
        c.L["u"] = r("-1:1", (H, N), dtype)
        self.state(c, r)
        return c

    def ref(self, c, variant):
        L = c.L
        f = ref_fn(self.ref_name(variant))
        if variant == "naive":  # fla's PyTorch loop: head-first [B,H,T,K] (transposed views), u [H,K]
            hf = lambda t: t.transpose(1, 2)
            o, ht = f(hf(L["r"]), hf(L["k"]), hf(L["v"]), hf(L["w"]), L["u"], scale=1.0, initial_state=c.S["S"],
                      output_final_state=True)
            return [hf(o)], [ht]
        o, ht = f(L["r"], L["k"], L["v"], L["w"], L["u"], scale=1.0, initial_state=c.S["S"], output_final_state=True)
        return [o], [ht]

    def frnn(self, c, exact=True):
        L = c.L
        u = L["u"][None, None, :, None, :]  # [H,K] -> [1,1,H,1,N]
        y, S = fcall("rwkv6", _sz(c.d), [self.row(L["r"]), self.row(L["k"]), self.col(L["v"]), self.row(L["w"]), u],
                     [_T_ref_state(c.S["S"])], c.dtype)
        return [y], [_T_ref_state(S)]


class GLA(FlaLinear):
    name, files = "gla", ("gla",)
    fused_fn, chunk_fn = "fused_recurrent_gla", "chunk_gla"
    naive_fn = "gla.naive.naive_recurrent_gla"

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        self.qkv(c, r)
        c.L["g"] = r("-0.1:-0.01", (d["B"], d["T"], d["H"], d["N"]), dtype)
        self.state(c, r)
        return c

    def check_variants(self):
        # A third opinion: fla's own PyTorch loop.  The fused kernel and frnn
        # disagreed (rel. err ~1) in the run of 2026-11-25 while frnn agreed
        # with its float64 reference; this row says which side fla's loop takes.
        return self.variants() + [("naive", "naive_recurrent_gla")]

    def ref(self, c, variant):
        L = c.L
        if variant == "naive":  # fixed scale K^-0.5 inside: pre-scale q by sqrt(K) to get scale 1
            f = ref_fn(self.ref_name(variant))
            o, ht = f(L["q"] * (L["q"].shape[-1] ** 0.5), L["k"], L["v"], L["g"], initial_state=c.S["S"],
                      output_final_state=True)
            return [o], [ht]
        if variant == "fused":
            f = ref_fn(self.ref_name(variant))
            o, ht = f(L["q"], L["k"], L["v"], gk=L["g"], scale=1.0, initial_state=c.S["S"], output_final_state=True)
        else:
            f = ref_fn(self.ref_name(variant))
            o, ht = f(L["q"], L["k"], L["v"], L["g"], scale=1.0, initial_state=c.S["S"], output_final_state=True)
        return [o], [ht]

    def frnn(self, c, exact=True):
        L = c.L
        y, S = fcall("gla", _sz(c.d), [self.row(L["q"]), self.row(L["k"]), self.col(L["v"]), self.row(L["g"])],
                     [_T_ref_state(c.S["S"])], c.dtype)
        return [y], [_T_ref_state(S)]


class Retention(FlaLinear):
    name, files = "retention", ("retention",)
    fused_fn, chunk_fn = "fused_recurrent_retention", "chunk_retention"
    notes = "gamma_h = 1 - 2^(-5-h) (fla's fixed decay) passed to frnn as a float32 [1,1,H,1,1] input"

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        self.qkv(c, r)
        H = d["H"]
        c.C["gamma"] = (1 - torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64))).to(
            c.pdt).to(device).view(1, 1, H, 1, 1)
        self.state(c, r)
        return c

    def ref(self, c, variant):
        L = c.L
        f = ref_fn(self.ref_name(variant))
        o, ht = f(L["q"], L["k"], L["v"], scale=1.0, initial_state=c.S["S"], output_final_state=True)
        return [o], [ht]

    def frnn(self, c, exact=True):
        L = c.L
        y, S = fcall("retention", _sz(c.d), [self.row(L["q"]), self.row(L["k"]), self.col(L["v"]),
                                             self.p(c, c.C["gamma"])], [_T_ref_state(c.S["S"])], c.dtype)
        return [y], [_T_ref_state(S)]


class HGRN(Model):
    name, files = "hgrn", ("hgrn",)
    notes = "D = H*M = 32*128 = 4096 channels (fla [B,T,D] viewed [B,T,H,M,1]), N = 1"

    def dims(self, B, T, H):
        return dict(B=B, T=T, H=H, M=128, N=1)

    def variants(self):
        v = [("fused", "fused_recurrent_hgrn")]
        if os.environ.get("FRNN_BENCH_CHUNK") == "1":
            v.append(("chunk", fla_chunk_label("chunk_hgrn")))
        return v

    def extra_info(self):
        return fla_pruned_info(self.variants())

    def final_grad(self, variant):
        if variant == "chunk":  # measured 2026-11-25: grad x, g 6e-2 off with a random dht
            return "fla chunk_hgrn backward ignores dht and returns no initial-state gradient (ChunkHGRNFunction.backward)"
        return ""

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, D = d["B"], d["T"], d["H"] * d["M"]
        c.L["x"] = r("-1:1", (B, T, D), dtype)
        c.L["g"] = r("-0.5:-0.01", (B, T, D), dtype)
        c.S["h"] = r("-0.1:0.1", (B, D), c.sdt)
        return c

    def ref_name(self, variant):
        return FLA + "hgrn." + ("fused_recurrent_hgrn" if variant == "fused" else "chunk_hgrn")

    def ref(self, c, variant):
        f = ref_fn(self.ref_name(variant))
        o, ht = f(c.L["x"], c.L["g"], initial_state=c.S["h"], output_final_state=True)
        return [o], [ht]

    def frnn(self, c, exact=True):
        d = c.d
        B, T, H, M = d["B"], d["T"], d["H"], d["M"]
        v5 = lambda t: t.view(B, T, H, M, 1)
        y, s = fcall("hgrn", _sz(d), [v5(c.L["x"]), v5(c.L["g"])], [c.S["h"].view(B, H, M, 1)], c.dtype)
        return [y.reshape(B, T, H * M)], [s.reshape(B, H * M)]


class RWKV4(Model):
    name, files = "rwkv4", ("rwkv4",)
    notes = "C = H*M = 32*128 = 4096 channels, N = 1; w, u float32 [C]"
    # fla's backward does apply the chain-rule factor: its kernel stores gw * w where w is the
    # saved -exp(w) (FusedRecurrentRWKV4Function.forward), so 'grad w' compares like with like.
    # (An earlier 'grad w*' = fla's grad times -exp(w) applied the factor twice: rel. err 2.5 on
    # the H100 while 'grad w' itself agreed, 2.5e-3 in bf16.)

    def dims(self, B, T, H):
        return dict(B=B, T=T, H=H, M=128, N=1)

    def variants(self):
        return [("fused", "fused_recurrent_rwkv4")]

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, C = d["B"], d["T"], d["H"] * d["M"]
        c.L["w"] = r("-1:0", (C,), c.pdt)
        c.L["u"] = r("-1:1", (C,), c.pdt)
        c.L["k"] = r("-1:1", (B, T, C), dtype)
        c.L["v"] = r("-1:1", (B, T, C), dtype)
        st = torch.stack([r("-0.1:0.1", (B, 1, C), c.sdt), r("0.5:1", (B, 1, C), c.sdt),
                          r("-1:1", (B, 1, C), c.sdt)], dim=1)  # [B,3,1,C]
        c.S["state"] = st.contiguous()
        return c

    def ref_name(self, variant):
        return FLA + "rwkv4.fused_recurrent_rwkv4"

    def ref(self, c, variant):
        f = ref_fn(self.ref_name(variant))
        wkv, st = f(c.L["w"], c.L["u"], c.L["k"], c.L["v"], c.S["state"])
        return [wkv], [st]

    def frnn(self, c, exact=True):
        d = c.d
        B, T, H, M = d["B"], d["T"], d["H"], d["M"]
        v5 = lambda t: t.view(B, T, H, M, 1)
        pv = lambda t: self.p(c, t).view(1, 1, H, M, 1)
        st = c.S["state"]  # [B,3,1,C]
        states = [st[:, i, 0].reshape(B, H, M, 1) for i in range(3)]
        wkv, a, b, e = fcall("rwkv4", _sz(d), [pv(c.L["w"]), pv(c.L["u"]), v5(c.L["k"]), v5(c.L["v"])], states, c.dtype)
        fin = torch.stack([a.reshape(B, 1, H * M), b.reshape(B, 1, H * M), e.reshape(B, 1, H * M)], dim=1)
        return [wkv.reshape(B, T, H * M)], [fin]


class GSA(FlaLinear):
    name, files = "gsa", ("gsa_keys", "gsa_values")
    fused_fn, chunk_fn = "fused_recurrent_gsa", "chunk_gsa"

    @property
    def notes(self):
        return ("frnn: gsa_keys (M=slots, N=K), softmax over the slots in PyTorch (float32, cast to the input "
                "dtype), gsa_values (M=V, N=slots); slots = %d" % self.slots())

    @staticmethod
    def slots():
        return int(os.environ.get("FRNN_BENCH_GSA_SLOTS", "64"))

    def dims(self, B, T, H):
        return dict(B=B, T=T, H=H, M=128, N=128, S=self.slots())

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        self.qkv(c, r)
        B, T, H, M, N, Sl = d["B"], d["T"], d["H"], d["M"], d["N"], d["S"]
        c.L["s"] = r("0:1", (B, T, H, Sl), dtype)
        c.L["g"] = r("-0.1:-0.01", (B, T, H, Sl), dtype)
        c.S["hk"] = r("-0.1:0.1", (B, H, N, Sl), c.sdt)  # [B,H,K,slots]
        c.S["hv"] = r("-0.1:0.1", (B, H, Sl, M), c.sdt)  # [B,H,slots,V]
        return c

    def ref(self, c, variant):
        L = c.L
        f = ref_fn(self.ref_name(variant))
        o, fin = f(L["q"], L["k"], L["v"], L["s"], L["g"], scale=1.0, initial_state=(c.S["hk"], c.S["hv"]),
                   output_final_state=True)
        return [o], list(fin)

    def frnn(self, c, exact=True):
        L, d = c.L, c.d
        B, T, H, M, N, Sl = d["B"], d["T"], d["H"], d["M"], d["N"], d["S"]
        ok, Hk = fcall("gsa_keys", frnn.Sizes(B, T, H, Sl, N),
                       [self.row(L["q"]), self.row(L["k"]), self.col(L["s"]), self.col(L["g"])],
                       [c.S["hk"].transpose(-1, -2)], c.dtype)
        qv = torch.softmax(_f(ok), dim=-1).to(c.dtype)
        o, Hv = fcall("gsa_values", frnn.Sizes(B, T, H, M, Sl),
                      [self.row(qv), self.row(L["s"]), self.row(L["g"]), self.col(L["v"])],
                      [c.S["hv"].transpose(-1, -2)], c.dtype)
        return [o], [Hk.transpose(-1, -2), Hv.transpose(-1, -2)]


class Mamba2(Model):
    name, files = "mamba2", ("mamba2",)
    _pruned = None

    @property
    def notes(self):
        pick = self.prune_pick()
        return ("P = headdim = M = 128, N = dstate = 128, G = 1; A, D, dt_bias float32 [H]; chunk_size 256; " +
                ("Triton autotune of every ssd_*.py kernel pruned to one config (%s of order_configs; "
                 "FRNN_BENCH_MAMBA2_PRUNE=0: full autotune)" % pick if pick else "full Triton autotune"))

    @staticmethod
    def prune_pick():
        """FRNN_BENCH_MAMBA2_PRUNE (prune_pick_from)."""
        return prune_pick_from("FRNN_BENCH_MAMBA2_PRUNE")

    def variants(self):
        return [("ssd", "mamba_chunk_scan_combined" + pruned_label(self.prune_pick()))]

    def extra_info(self):
        return pruned_info("mamba_ssm.", self.prune_pick())

    def ref_name(self, variant):
        return "mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined"

    def prepare_refs(self):
        if not CPU_TEST and "mamba_ssm.ops.triton.ssd_combined" in sys.modules:
            self.ref_function()  # prunes the autotuners now, not inside the first time limit

    def ref_function(self):
        f = ref_fn(self.ref_name("ssd"))
        pick = self.prune_pick()
        if pick and Mamba2._pruned is None:
            mods = [mod for n, mod in sorted(sys.modules.items())
                    if n.startswith("mamba_ssm.ops.triton.ssd_") and mod is not None]
            Mamba2._pruned = prune_autotuners(mods, pick)
            log("mamba2: Triton autotune pruned to 1 config in %d kernels (%s)" % (Mamba2._pruned, pick))
        return f

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        c.L["x"] = r("-1:1", (B, T, H, M), dtype)
        c.L["dt"] = r("-1:1", (B, T, H), dtype)
        c.L["A"] = r("-1:-0.1", (H,), c.pdt)
        c.L["B"] = r("-1:1:n", (B, T, 1, N), dtype, N)
        c.L["C"] = r("-1:1:n", (B, T, 1, N), dtype, N)
        c.L["D"] = r("-1:1", (H,), c.pdt)
        c.L["dt_bias"] = r("-1:1", (H,), c.pdt)
        c.S["S"] = r("-0.1:0.1", (B, H, M, N), c.sdt)
        return c

    def ref(self, c, variant):
        L = c.L
        if CPU_TEST:
            f = CpuRefs.mamba_chunk_scan_combined
        else:
            f = self.ref_function()
        out, fin = f(L["x"], L["dt"], L["A"], L["B"], L["C"], 256, D=L["D"], z=None, dt_bias=L["dt_bias"],
                     initial_states=c.S["S"], dt_softplus=True, return_final_states=True)
        return [out], [fin]

    def frnn(self, c, exact=True):
        L = c.L
        H = c.d["H"]
        ph = lambda t: self.p(c, t).view(1, 1, H, 1, 1)
        y, S = fcall("mamba2", _sz(c.d), [L["x"].unsqueeze(4), L["dt"][..., None, None], ph(L["A"]),
                                          L["B"].unsqueeze(3), L["C"].unsqueeze(3), ph(L["D"]), ph(L["dt_bias"])],
                     [c.S["S"]], c.dtype)
        return [y], [S]


class Mamba(Model):
    name, files = "mamba", ("mamba",)
    has_states = False

    @property
    def notes(self):
        return ("D = H*M = 32*128 = 4096 channels, N = d_state = 16; A, D, delta_bias float32; zero initial state "
                "(the reference has none); reference = %s" % self._label())

    def _label(self):
        return "mamba_ssm selective_scan_ref (PyTorch loop)"

    def dims(self, B, T, H):
        return dict(B=B, T=T, H=H, M=128, N=16)

    _local = None  # why mamba_ssm's selective_scan_ref did not import (the local copy ran)

    def variants(self):
        return [("ref", "selective_scan_ref")]

    def triton_variant(self, variant):
        return False

    def ref_name(self, variant):
        return "mamba_ssm.ops.selective_scan_interface.selective_scan_ref"

    def import_error(self, variant):
        return None  # the local copy of selective_scan_ref runs instead (ref_label says so)

    def prepare_refs(self):
        n = self.ref_name("ref")
        if not CPU_TEST and n in _ref_fail:
            Mamba._local = _ref_fail[n][:120]

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        D = H * M
        c.L["u"] = r("-1:1", (B, D, T), dtype)
        c.L["delta"] = r("-1:1", (B, D, T), dtype)
        c.L["A"] = r("-1:-0.1", (D, N), c.pdt)
        c.L["B"] = r("-1:1:n", (B, N, T), dtype, N)
        c.L["C"] = r("-1:1:n", (B, N, T), dtype, N)
        c.L["D"] = r("-1:1", (D,), c.pdt)
        c.L["z"] = r("-1:1", (B, D, T), dtype)
        c.L["delta_bias"] = r("-1:1", (D,), c.pdt)
        c.C["S0"] = torch.zeros(B, H, M, N, dtype=c.sdt, device=device)
        return c

    def ref(self, c, variant):
        L = c.L
        f = selective_scan_ref_local
        if not CPU_TEST:
            try:
                f = ref_fn(self.ref_name(variant))
            except Exception as e:
                f = selective_scan_ref_local
                Mamba._local = short_err(e, 120)
        out, last = f(L["u"], L["delta"], L["A"], L["B"], L["C"], L["D"], L["z"], L["delta_bias"],
                      delta_softplus=True, return_last_state=True)
        return [out], [last]

    def frnn(self, c, exact=True):
        L, d = c.L, c.d
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        ch = lambda t: t.view(B, H, M, T).permute(0, 3, 1, 2).unsqueeze(4)  # [B,D,L] -> [B,T,H,M,1]
        rw = lambda t: t.permute(0, 2, 1)[:, :, None, None, :]  # [B,N,L] -> [B,T,1,1,N]
        pc = lambda t: self.p(c, t).view(1, 1, H, M, 1)
        y, S = fcall("mamba", _sz(d), [ch(L["u"]), ch(L["delta"]), self.p(c, L["A"]).view(1, 1, H, M, N),
                                       rw(L["B"]), rw(L["C"]), pc(L["D"]), ch(L["z"]), pc(L["delta_bias"])],
                     [c.C["S0"]], c.dtype)
        return [y.reshape(B, T, H * M).permute(0, 2, 1)], [S.reshape(B, H * M, N)]


class Longhorn(Model):
    name, files = "longhorn", ("longhorn",)
    has_states = False
    notes = ("D = H*M = 4096 channels, N = d_state = 16; reference: a PyTorch loop of selective_scan_online7_ref's "
             "equation (longhorn_cuda is not available); zero initial state")

    def dims(self, B, T, H):
        return dict(B=B, T=T, H=H, M=128, N=16)

    def variants(self):
        return [("loop", "PyTorch loop (selective_scan_online7_ref equation)")]

    def triton_variant(self, variant):
        return False

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        D = H * M
        c.L["u"] = r("-1:1", (B, D, T), dtype)
        c.L["q"] = r("-1:1:n", (B, N, T), dtype, N)
        c.L["k"] = r("-1:1:n", (B, N, T), dtype, N)
        c.L["dt"] = r("-1:1", (B, D, T), dtype)
        c.L["D"] = r("-1:1", (D,), c.pdt)
        c.L["t_bias"] = r("-1:1", (D,), c.pdt)
        c.L["z"] = r("-1:1", (B, D, T), dtype)
        c.C["S0"] = torch.zeros(B, H, M, N, dtype=c.sdt, device=device)
        return c

    def ref(self, c, variant):
        L = c.L
        out, last = longhorn_ref_loop(L["u"], L["q"], L["k"], L["dt"], L["D"], L["t_bias"], L["z"])
        return [out], [last]

    def frnn(self, c, exact=True):
        L, d = c.L, c.d
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        ch = lambda t: t.view(B, H, M, T).permute(0, 3, 1, 2).unsqueeze(4)
        rw = lambda t: t.permute(0, 2, 1)[:, :, None, None, :]
        pc = lambda t: self.p(c, t).view(1, 1, H, M, 1)
        y, S = fcall("longhorn", _sz(d), [ch(L["u"]), rw(L["q"]), rw(L["k"]), ch(L["dt"]), pc(L["D"]),
                                          pc(L["t_bias"]), ch(L["z"])], [c.C["S0"]], c.dtype)
        return [y.reshape(B, T, H * M).permute(0, 2, 1)], [S.reshape(B, H * M, N)]


class S4D(Model):
    name, files = "s4d", ("s4d",)
    has_states = False

    @property
    def notes(self):
        return ("H_s4 = H*M = 4096 channels, N = %d complex modes; reference: s4d.py S4DKernel + FFT convolution "
                "(PyTorch); frnn: host discretisation (dA, C') in PyTorch each call, zero initial state; "
                "final states not compared (the convolution has none)" % self.dims(1, 1, 1)["N"])

    def dims(self, B, T, H):
        return dict(B=B, T=T, H=H, M=128, N=int(os.environ.get("FRNN_BENCH_S4D_N", "32")))

    def variants(self):
        return [("fft", "s4d FFT convolution (PyTorch)")]

    def triton_variant(self, variant):
        return False

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        Hs = H * M
        c.L["u"] = r("-1:1", (B, Hs, T), dtype)
        # S4DKernel's initialisation (S4D-Lin): log_dt ~ U[log 1e-3, log 1e-1], A = -1/2 + i pi n
        c.L["log_dt"] = r("%f:%f" % (math.log(1e-3), math.log(1e-1)), (Hs,), c.pdt)
        c.L["log_A_real"] = torch.full((Hs, N), math.log(0.5), device=device, dtype=c.pdt)
        c.L["A_imag"] = (math.pi * torch.arange(N, device=device, dtype=c.pdt)).repeat(Hs, 1).contiguous()
        c.L["C_re"] = r.normal((Hs, N), c.pdt, std=math.sqrt(0.5))
        c.L["C_im"] = r.normal((Hs, N), c.pdt, std=math.sqrt(0.5))
        c.L["D"] = r.normal((Hs,), c.pdt)
        c.C["x0"] = torch.zeros(B, H, M, N, dtype=c.sdt, device=device)
        return c

    def ref(self, c, variant):
        L = c.L
        return [s4d_fft_ref(L["u"], L["log_dt"], L["log_A_real"], L["A_imag"], L["C_re"], L["C_im"], L["D"])], []

    def frnn(self, c, exact=True):
        L, d = c.L, c.d
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        dA_re, dA_im, C_re, C_im = s4d_discretize(L["log_dt"], L["log_A_real"], L["A_imag"], L["C_re"], L["C_im"])
        mn = lambda t: self.p(c, t).view(1, 1, H, M, N)
        u = L["u"].view(B, H, M, T).permute(0, 3, 1, 2).unsqueeze(4)
        out = fcall("s4d", _sz(d), [u, mn(dA_re), mn(dA_im), mn(C_re), mn(C_im), self.p(c, L["D"]).view(1, 1, H, M, 1)],
                    [c.C["x0"], c.C["x0"]], c.dtype)
        return [out[0].reshape(B, T, H * M).permute(0, 2, 1)], []


class MLSTM(Model):
    name, files = "mlstm", ("mlstm",)
    notes = ("DHQK = DHV = 128; mlstm_kernels always applies qk_scale = DHQK^-0.5 inside: frnn gets q * scale "
             "(outside the timed region); eps = 1e-6; the Triton reference runs in a child process (Triton 3.6's "
             "LLVM aborted the interpreter compiling it on 2026-11-25); if it fails: chunkwise native (PyTorch, "
             "chunk 64; bf16 inputs cast to float32, its states' dtype, and h cast back: it computes in its "
             "inputs' dtype and mixed dtypes failed in a matmul) and xl_chunk with DISABLE_LLVM_OPT=1")

    LABELS = collections.OrderedDict([
        ("xl_chunk", "mlstm_chunkwise__xl_chunk (Triton)"),
        ("native", "mlstm_chunkwise__native_autograd (PyTorch, f32, chunk 64)"),  # bf16 inputs cast: ref_cast
        ("xl_chunk_noopt", "mlstm_chunkwise__xl_chunk (Triton, DISABLE_LLVM_OPT=1)")])

    _xl = None

    def variants(self):
        """The Triton chunkwise kernel (xl_chunk) if it imports, else the native PyTorch one."""
        if MLSTM._xl is None:
            if CPU_TEST:
                MLSTM._xl = True
            else:
                try:  # importing compiles nothing; the kernels compile on the first call
                    ref_fn(self.ref_name("xl_chunk"))
                    MLSTM._xl = True
                except Exception as e:
                    MLSTM._xl = short_err(e, 200)
        if MLSTM._xl is True and os.environ.get("FRNN_BENCH_MLSTM_NATIVE") != "1":
            return [("xl_chunk", self.LABELS["xl_chunk"])]
        return [("native", self.LABELS["native"] + (
            "" if MLSTM._xl is True else " (xl_chunk did not import: %s)" % MLSTM._xl))]

    def fallbacks(self, variant):
        """xl_chunk failed (aborted its process, raised): the native PyTorch chunkwise kernel,
        then xl_chunk again with LLVM's optimisation (and its SLP vectorizer) off
        (FRNN_BENCH_MLSTM_NOOPT=0: not)."""
        if variant != "xl_chunk":
            return []
        fb = [("native", self.LABELS["native"])]
        if os.environ.get("FRNN_BENCH_MLSTM_NOOPT", "1") != "0":
            fb.append(("xl_chunk_noopt", self.LABELS["xl_chunk_noopt"]))
        return fb

    def all_labels(self):
        return dict(self.LABELS)

    def variant_env(self, variant):
        # Triton (python/src/llvm.cc): DISABLE_LLVM_OPT=1 skips optimize_module (LLVM's O3
        # pipeline, where the SLPVectorizer assertion fired) and emits PTX at CodeGenOptLevel
        # None; it is a cache-invalidating variable, so these kernels are cached apart.
        return {"DISABLE_LLVM_OPT": "1"} if variant == "xl_chunk_noopt" else {}

    def triton_variant(self, variant):
        return variant != "native"

    XL = "mlstm_kernels.torch.chunkwise.triton_xl_chunk.mlstm_chunkwise__xl_chunk"
    NATIVE = "mlstm_kernels.torch.chunkwise.native.mlstm_chunkwise__native_autograd"

    def ref_name(self, variant):
        # (mlstm_kernels.torch.chunkwise's __init__ imports the native and the Triton modules
        # alike, so the parent imports xl_chunk's module even when that variant is isolated;
        # importing compiles nothing)
        return self.NATIVE if variant == "native" else self.XL

    def ref_cast(self, dtype, variant):
        # mlstm_chunkwise__native_autograd computes in the dtype of its inputs, and its float32
        # states meet bf16 k, v in a matmul ("expected scalar type Float but found BFloat16",
        # 2026-11-25); mlstm_kernels' own native_custbw casts to float32 (autocast_kernel_dtype)
        if variant == "native" and dtype not in (torch.float32, torch.float64):
            return "q, k, v, i, f cast %s -> float32 (the native kernel needs one dtype; float32 states), h cast back" % (
                str(dtype).replace("torch.", ""))
        return ""

    def make(self, d, dtype, device, seed):
        c, r = Case(d, dtype, device), Rand(seed, device)
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        c.L["q"] = r("-1:1:n", (B, H, T, N), dtype, N)
        c.L["k"] = r("-1:1:n", (B, H, T, N), dtype, N)
        c.L["v"] = r("-1:1", (B, H, T, M), dtype)
        c.L["i"] = r("-1:1", (B, H, T), dtype)
        c.L["f"] = r("1:4", (B, H, T), dtype)
        c.S["c"] = r("-0.1:0.1", (B, H, N, M), c.sdt)
        c.S["n"] = r("-0.1:0.1", (B, H, N), c.sdt)
        c.S["m"] = r("-0.1:0.1", (B, H, 1), c.sdt)
        return c

    _fallback = None

    def ref(self, c, variant):
        L, S = c.L, c.S
        xl = variant in ("xl_chunk", "xl_chunk_noopt")
        if CPU_TEST:
            f = CpuRefs.mlstm_chunkwise__xl_chunk
        else:
            f = ref_fn(self.ref_name(variant))
        q, k, v, i, fg = L["q"], L["k"], L["v"], L["i"], L["f"]
        if not xl and q.dtype != S["c"].dtype:  # see ref_cast: native wants one dtype (the states')
            q, k, v, i, fg = [t.to(S["c"].dtype) for t in (q, k, v, i, fg)]
        h, (cl, nl, ml) = f(q, k, v, i, fg, c_initial=S["c"], n_initial=S["n"],
                            m_initial=S["m"], return_last_states=True, eps=1e-6,
                            chunk_size=128 if xl else 64)
        return [h.to(L["q"].dtype)], [cl, nl, ml]

    def frnn(self, c, exact=True):
        L, S, d = c.L, c.S, c.d
        B, T, H, M, N = d["B"], d["T"], d["H"], d["M"], d["N"]
        q = L["q"] * (N ** -0.5) if exact else L["q"]
        tr = lambda t: t.permute(0, 2, 1, 3)  # [B,NH,S,D] -> [B,S,NH,D]
        sc = lambda t: t.permute(0, 2, 1)[..., None, None]
        h, C, n, m = fcall("mlstm", _sz(d), [tr(q).unsqueeze(3), tr(L["k"]).unsqueeze(3), tr(L["v"]).unsqueeze(4),
                                             sc(L["i"]), sc(L["f"])],
                           [S["c"].transpose(-1, -2), S["n"][:, :, None, :], S["m"][:, :, :, None]], c.dtype)
        return [tr(h)], [C.transpose(-1, -2), n[:, :, 0, :], m[:, :, :, 0]]


MODELS = collections.OrderedDict((m.name, m) for m in [
    DeltaRule(), GatedDeltaRule(), RWKV7(), RWKV6(), GLA(), Retention(), HGRN(), RWKV4(), GSA(), Mamba2(),
    Mamba(), Longhorn(), S4D(), MLSTM()])

REF_LABEL = {
    "delta_rule": "fla", "gated_delta_rule": "fla", "rwkv7": "fla", "rwkv6": "fla", "gla": "fla",
    "retention": "fla", "hgrn": "fla", "rwkv4": "fla", "gsa": "fla", "mamba2": "mamba_ssm",
    "mamba": "mamba_ssm", "longhorn": "pytorch", "s4d": "pytorch", "mlstm": "mlstm_kernels"}


def ref_label(m, variant):
    lab = m.all_labels().get(variant, variant)
    lib = REF_LABEL.get(m.name, "")
    if m.name == "mamba":
        if Mamba._local:
            return "selective_scan_ref (PyTorch loop; local copy, mamba_ssm: %s)" % Mamba._local[:60]
        return "mamba_ssm selective_scan_ref (PyTorch loop)"
    if lib in ("fla", "mamba_ssm", "mlstm_kernels"):
        return "%s %s" % (lib, lab)
    return lab


# ========================================================= CPU stand-ins (self-test)
class CpuRefs:
    """PyTorch loops with the reference functions' signatures and conventions (fla:
    [B,T,H,K] inputs, [B,H,K,V] states, q * scale inside), for --selftest-cpu only."""

    @staticmethod
    def _lin(q, k, v, S0, scale, upd, extra=None):
        B, T, H, K = q.shape
        S = S0.to(torch.float64) if S0 is not None else q.new_zeros(B, H, K, v.shape[-1], dtype=torch.float64)
        os_ = []
        for t in range(T):
            S, o = upd(S, t, q[:, t].double() * scale, k[:, t].double(), v[:, t].double())
            os_.append(o)
        return torch.stack(os_, 1).to(v.dtype), S.float() if S0 is not None and S0.dtype == torch.float32 else S

    @staticmethod
    def fused_recurrent_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
        def upd(S, t, qt, kt, vt):
            b = beta[:, t].double()[..., None]
            vv = (vt - torch.einsum('bhk,bhkv->bhv', kt, S)) * b
            S = S + kt[..., :, None] * vv[..., None, :]
            return S, torch.einsum('bhk,bhkv->bhv', qt, S)
        return CpuRefs._lin(q, k, v, initial_state, scale, upd)

    chunk_delta_rule = fused_recurrent_delta_rule

    @staticmethod
    def fused_recurrent_gated_delta_rule(q, k, v, g=None, beta=None, scale=None, initial_state=None,
                                         output_final_state=False):
        def upd(S, t, qt, kt, vt):
            S = S * g[:, t].double().exp()[..., None, None]
            b = beta[:, t].double()[..., None]
            vv = (vt - torch.einsum('bhk,bhkv->bhv', kt, S)) * b
            S = S + kt[..., :, None] * vv[..., None, :]
            return S, torch.einsum('bhk,bhkv->bhv', qt, S)
        return CpuRefs._lin(q, k, v, initial_state, scale, upd)

    chunk_gated_delta_rule = fused_recurrent_gated_delta_rule

    @staticmethod
    def naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=None, initial_state=None,
                                         output_final_state=False):
        return CpuRefs.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, scale=scale,
                                                        initial_state=initial_state)

    @staticmethod
    def dplr_recurrence(q, k, v, alpha, beta, gk, initial_state=None, output_final_state=True):
        tr = lambda t: t.transpose(1, 2)  # head-first -> [B,T,H,*]; scale K^-0.5 as fla's naive
        o, S = CpuRefs.fused_recurrent_rwkv7(tr(q), tr(gk), tr(k), tr(v), tr(alpha), tr(beta),
                                             scale=q.shape[-1] ** -0.5, initial_state=initial_state)
        return tr(o), S

    @staticmethod
    def fused_recurrent_rwkv7(r, w, k, v, a, b, scale=None, initial_state=None, output_final_state=True):
        def upd(S, t, qt, kt, vt):
            sa = torch.einsum('bhk,bhkv->bhv', a[:, t].double(), S)
            S = S * w[:, t].double().exp()[..., :, None] + b[:, t].double()[..., :, None] * sa[..., None, :] \
                + kt[..., :, None] * vt[..., None, :]
            return S, torch.einsum('bhk,bhkv->bhv', qt, S)
        return CpuRefs._lin(r, k, v, initial_state, scale, upd)

    chunk_rwkv7 = fused_recurrent_rwkv7

    @staticmethod
    def fused_recurrent_rwkv6(r, k, v, w, u, scale=None, initial_state=None, output_final_state=False):
        def upd(S, t, qt, kt, vt):
            kv = kt[..., :, None] * vt[..., None, :]
            o = torch.einsum('bhk,bhkv->bhv', qt, S + kv * u.double()[None, :, :, None])
            S = S * w[:, t].double().exp()[..., :, None] + kv
            return S, o
        return CpuRefs._lin(r, k, v, initial_state, scale, upd)

    chunk_rwkv6 = fused_recurrent_rwkv6

    @staticmethod
    def naive_recurrent_rwkv6(q, k, v, w, u, scale=None, initial_state=None, output_final_state=False):
        tr = lambda t: t.transpose(1, 2)  # head-first [B,H,T,K] in and out, as fla's recurrent_naive.py
        o, S = CpuRefs.fused_recurrent_rwkv6(tr(q), tr(k), tr(v), tr(w), u, scale=scale,
                                             initial_state=initial_state)
        return tr(o), S

    @staticmethod
    def fused_recurrent_gla(q, k, v, gk=None, scale=None, initial_state=None, output_final_state=False):
        def upd(S, t, qt, kt, vt):
            S = S * gk[:, t].double().exp()[..., :, None] + kt[..., :, None] * vt[..., None, :]
            return S, torch.einsum('bhk,bhkv->bhv', qt, S)
        return CpuRefs._lin(q, k, v, initial_state, scale, upd)

    @staticmethod
    def naive_recurrent_gla(q, k, v, gk, initial_state=None, output_final_state=False):
        return CpuRefs.fused_recurrent_gla(q, k, v, gk=gk, scale=q.shape[-1] ** -0.5,
                                           initial_state=initial_state)

    @staticmethod
    def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
        return CpuRefs.fused_recurrent_gla(q, k, v, gk=g, scale=scale, initial_state=initial_state)

    @staticmethod
    def fused_recurrent_retention(q, k, v, scale=None, initial_state=None, output_final_state=False):
        H = q.shape[2]
        gam = 1 - torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64))

        def upd(S, t, qt, kt, vt):
            S = S * gam[None, :, None, None] + kt[..., :, None] * vt[..., None, :]
            return S, torch.einsum('bhk,bhkv->bhv', qt, S)
        return CpuRefs._lin(q, k, v, initial_state, scale, upd)

    chunk_retention = fused_recurrent_retention

    @staticmethod
    def fused_recurrent_hgrn(x, g, initial_state=None, output_final_state=False):
        h = initial_state.double()
        os_ = []
        for t in range(x.shape[1]):
            h = g[:, t].double().exp() * h + x[:, t].double()
            os_.append(h)
        return torch.stack(os_, 1).to(x.dtype), h.to(initial_state.dtype)

    chunk_hgrn = fused_recurrent_hgrn

    @staticmethod
    def fused_recurrent_rwkv4(w, u, k, v, state):
        w = -torch.exp(w.double())
        u = u.double()
        al, be, ep = (state[:, i, 0].double() for i in range(3))
        outs = []
        for t in range(k.shape[1]):
            kt, vt = k[:, t].double(), v[:, t].double()
            ukt = u + kt
            tau = torch.maximum(ukt, ep)
            e1a, e2a = torch.exp(ep - tau), torch.exp(ukt - tau)
            outs.append((e1a * al + e2a * vt) / (e1a * be + e2a))
            w_eps = w + ep
            ep = torch.maximum(w_eps, kt)
            e1b, e2b = torch.exp(w_eps - ep), torch.exp(kt - ep)
            al = e1b * al + e2b * vt
            be = e1b * be + e2b
        return torch.stack(outs, 1).to(k.dtype), torch.stack([al, be, ep], 1)[:, :, None].to(state.dtype)

    @staticmethod
    def fused_recurrent_gsa(q, k, v, s, g, scale=None, initial_state=None, output_final_state=False):
        hk, hv = (x.double() for x in initial_state)
        B, T, H, K = q.shape
        oks = []
        for t in range(T):
            hk = hk * g[:, t].double().exp()[..., None, :] + k[:, t].double()[..., :, None] * s[:, t].double()[..., None, :]
            oks.append(torch.einsum('bhk,bhkm->bhm', q[:, t].double() * scale, hk))
        qv = torch.stack(oks, 1).softmax(-1)
        os_ = []
        for t in range(T):
            hv = hv * g[:, t].double().exp()[..., :, None] + s[:, t].double()[..., :, None] * v[:, t].double()[..., None, :]
            os_.append(torch.einsum('bhm,bhmv->bhv', qv[:, t], hv))
        return torch.stack(os_, 1).to(v.dtype), [hk.to(initial_state[0].dtype), hv.to(initial_state[1].dtype)]

    chunk_gsa = fused_recurrent_gsa

    @staticmethod
    def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                                  dt_softplus=False, return_final_states=False):
        S = initial_states.double()
        Bsz, T, H, P = x.shape
        ys = []
        for t in range(T):
            dl = F.softplus(dt[:, t].double() + dt_bias.double())  # [B,H]
            S = torch.exp(A.double() * dl)[..., None, None] * S + (dl[..., None] * x[:, t].double())[..., :, None] \
                * B[:, t, 0].double()[:, None, None, :]
            ys.append(torch.einsum('bhpn,bn->bhp', S, C[:, t, 0].double()) + D.double()[:, None] * x[:, t].double())
        return torch.stack(ys, 1).to(x.dtype), S.to(initial_states.dtype)

    @staticmethod
    def mlstm_chunkwise__xl_chunk(q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None,
                                  return_last_states=False, eps=1e-6, chunk_size=128):
        B, NH, T, DK = q.shape
        scale = DK ** -0.5
        Cs, n, m = c_initial.double(), n_initial.double(), m_initial.double()
        hs = []
        for t in range(T):
            qt, kt, vt = q[:, :, t].double() * scale, k[:, :, t].double(), v[:, :, t].double()
            it, ft = i[:, :, t, None].double(), f[:, :, t, None].double()
            logf = F.logsigmoid(ft)
            m_new = torch.maximum(logf + m, it)
            fa, ia = torch.exp(logf + m - m_new), torch.exp(it - m_new)
            Cs = fa[..., None] * Cs + ia[..., None] * kt[..., :, None] * vt[..., None, :]
            n = fa * n + ia * kt
            m = m_new
            num = torch.einsum('bhk,bhkv->bhv', qt, Cs)
            den = torch.maximum((n * qt).sum(-1, keepdim=True).abs(), torch.exp(-m)) + eps
            hs.append(num / den)
        return torch.stack(hs, 2).to(q.dtype), (Cs, n, m)


# ================================================================= measurement
class ModelTimeout(BaseException):
    """A BaseException, so that no `except Exception:` inside a library (Triton's compiler
    and autotuner, fla, ...) swallows it and runs on past the limit."""
    pass


ALARM_DEADLINE = [None]  # time.time() at which the current Alarm fires

# ------------------------------------------------------------- imports vs time limits
# A ModelTimeout raised while a module is being imported leaves that import half done:
# on the H100 (2026-11-25) the first fla call of delta_rule ran out of its 8 s while
# fla.ops (and with it torch._dynamo) was being imported, and every later fla call failed
# with "partially initialized module 'torch._dynamo' has no attribute 'decorators'".  So:
# preload_refs() imports every reference module the run needs once, at start-up, outside
# any Alarm; an Alarm that fires while an import is still running (a lazy import inside a
# library call) waits for it (polling every 50 ms, at most FRNN_BENCH_IMPORT_GRACE s past
# its limit); and if a ModelTimeout does interrupt an import (past that grace, or Ctrl-C
# in guarded_import), the modules added since the guarded call began are taken out of
# sys.modules (and their parents' attributes), so that a later import starts clean.
_IMPORTING = [0]  # > 0 while guarded_import runs
_IMPORT_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
REF_IMPORTS = collections.OrderedDict()  # module -> {'s': seconds, 'error': ...} (results.json header)


def import_in_progress(frame=None):
    """Whether the main thread is inside an import: guarded_import is running, or an
    importlib._bootstrap frame (any import statement, importlib.import_module, a lazy
    torch.__getattr__ import) is on the stack of `frame` (default: the caller's)."""
    if _IMPORTING[0] > 0:
        return True
    f = frame if frame is not None else sys._getframe(1)
    while f is not None:
        if f.f_code.co_filename in _IMPORT_FILES:
            return True
        f = f.f_back
    return False


def _initializing(mod):
    return getattr(getattr(mod, "__spec__", None), "_initializing", False) is True


def rollback_modules(before, why=""):
    """Removes from sys.modules every module not in `before` (the names present when the
    interrupted call began) and every module still marked as initializing, children
    first, with the parent package's attribute that points to it; drops the reference
    functions cached from them.  Call it only after the import's frames have unwound.
    Returns the names removed."""
    names = [n for n, mo in list(sys.modules.items()) if n not in before or _initializing(mo)]
    removed = set()
    for n in sorted(names, key=lambda x: -x.count(".")):
        mo = sys.modules.pop(n, None)
        removed.add(n)
        parent, _, child = n.rpartition(".")
        pm = sys.modules.get(parent) if parent else None
        if pm is not None and mo is not None and pm.__dict__.get(child) is mo:
            try:
                delattr(pm, child)
            except Exception:
                pass
    for k, f in list(_ref_cache.items()):
        if getattr(f, "__module__", None) in removed:
            _ref_cache.pop(k, None)
    if removed:
        import importlib
        importlib.invalidate_caches()
        log("removed %d half-imported modules from sys.modules%s (e.g. %s)" % (
            len(removed), " (%s)" % why if why else "", ", ".join(sorted(removed)[:4])))
    return sorted(removed)


def guarded_import(mod):
    """importlib.import_module(mod), timed into REF_IMPORTS (when it imported something),
    with a running Alarm held off until it ends; interrupted by a BaseException (a
    ModelTimeout past FRNN_BENCH_IMPORT_GRACE, Ctrl-C), it removes the modules it added
    (rollback_modules) before passing the exception on."""
    import importlib
    if mod in sys.modules and sys.modules[mod] is not None and not _initializing(sys.modules[mod]):
        return sys.modules[mod]
    before = set(sys.modules)
    t0 = time.perf_counter()
    _IMPORTING[0] += 1
    try:
        m = importlib.import_module(mod)
    except Exception as e:
        REF_IMPORTS[mod] = {"s": round(time.perf_counter() - t0, 2), "error": short_err(e, 300)}
        raise
    except BaseException as e:  # (_IMPORTING still counts it: a deferred Alarm waits for the rollback too)
        removed = rollback_modules(before, "import of %s interrupted by %s" % (mod, type(e).__name__))
        REF_IMPORTS[mod] = {"s": round(time.perf_counter() - t0, 2),
                            "error": "interrupted: %s; %d modules removed" % (short_err(e, 150), len(removed))}
        raise
    finally:
        _IMPORTING[0] -= 1
    REF_IMPORTS[mod] = {"s": round(time.perf_counter() - t0, 2), "new_modules": len(set(sys.modules) - before)}
    return m


class Alarm:
    """SIGALRM after `seconds` raises ModelTimeout in the main thread (between Python
    bytecodes: a long C call ends first).  Not inside an import: then it waits until
    the import is over (at most FRNN_BENCH_IMPORT_GRACE s, default 60); one forced
    inside an import rolls back the modules imported since __enter__."""

    def __init__(self, seconds):
        self.s = max(1.0, float(seconds))
        self.grace = env_float("FRNN_BENCH_IMPORT_GRACE", 60)
        self.deferred_since = None  # time.time() when it first found an import running
        self.forced_in_import = False

    def __enter__(self):
        self.before = set(sys.modules)
        self.deadline = time.time() + self.s

        def h(signum, frame):
            now = time.time()
            if import_in_progress(frame):
                if self.deferred_since is None:
                    self.deferred_since = now
                if now < self.deadline + self.grace:
                    signal.setitimer(signal.ITIMER_REAL, 0.05)  # look again when it may be over
                    return
                self.forced_in_import = True
                raise ModelTimeout("time limit %.0f s reached (an import still running %.1f s later was "
                                   "interrupted; its modules were removed)" % (self.s, now - self.deadline))
            msg = "time limit %.0f s reached" % self.s
            if self.deferred_since is not None:
                msg += " (raised %.1f s late: an import was running)" % (now - self.deadline)
            raise ModelTimeout(msg)
        self.old = signal.signal(signal.SIGALRM, h)
        self.old_deadline = ALARM_DEADLINE[0]
        ALARM_DEADLINE[0] = self.deadline
        signal.setitimer(signal.ITIMER_REAL, self.s)
        return self

    def __exit__(self, et, ev, tb):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        ALARM_DEADLINE[0] = self.old_deadline
        if self.forced_in_import or (et is not None and issubclass(et, ModelTimeout) and
                                     any(_initializing(mo) for mo in list(sys.modules.values()))):
            rollback_modules(self.before, "time limit during an import")
        return False


def alarm_left():
    """Seconds until the current Alarm fires (inf without one)."""
    return float("inf") if ALARM_DEADLINE[0] is None else ALARM_DEADLINE[0] - time.time()


# ------------------------------------------------------------ time shares
def model_cap(name):
    """The most seconds one model may take in one phase: FRNN_BENCH_MODEL_TIMEOUTS
    (name=s,...) for that model, else FRNN_BENCH_MODEL_TIMEOUT (default 120)."""
    for item in env_list("FRNN_BENCH_MODEL_TIMEOUTS", []):
        k, _, v = item.partition("=")
        if k.strip() == name:
            try:
                return float(v)
            except ValueError:
                pass
    return env_float("FRNN_BENCH_MODEL_TIMEOUT", 120)


def share_mode():
    """FRNN_BENCH_SHARE: 'fair' (default) or 'order' (the old fixed order, each up to its cap)."""
    v = os.environ.get("FRNN_BENCH_SHARE", "fair").strip().lower()
    return v if v in ("fair", "order") else "fair"


def fair_limit(left, n_left, cap, mode="fair", floor=None):
    """Seconds for the next of n_left items when `left` seconds are left: 'fair' gives it
    left / n_left (at least `floor` (FRNN_BENCH_MIN_SHARE, default 8 s) while that much is
    left), 'order' all that is left; never more than cap.  Time an item does not use goes
    to the ones after it."""
    if floor is None:
        floor = env_float("FRNN_BENCH_MIN_SHARE", 8)
    left = max(0.0, left)
    if mode == "order":
        s = left
    else:
        s = max(left / max(1, n_left), min(floor, left))
    return min(s, cap) if cap and cap > 0 else s


def first_min_share(n_models, budget=None):
    """The floor of a first attempt's share: FRNN_BENCH_FIRST_SHARE (default 30 s: a first
    Triton compile, e.g. mamba2's ssd kernels, took more than 8 s on the H100) when the
    run's budget allows it (budget / models >= it), else FRNN_BENCH_MIN_SHARE (8 s).
    Second attempts keep FRNN_BENCH_MIN_SHARE."""
    base = env_float("FRNN_BENCH_MIN_SHARE", 8)
    first = env_float("FRNN_BENCH_FIRST_SHARE", 30)
    budget = BUDGET if budget is None else budget
    if first > base and budget / max(1, n_models) >= first:
        return first
    return base


def run_shared(items, until, run_item, cap_of, min_s=5.0, mode=None, clock=time.time, on_skip=None,
               first_floor=None):
    """Runs run_item(item, limit_s, attempt) for each item within `until` (clock time),
    each with fair_limit() of what is left (first attempts: at least first_floor s while
    that is left, default FRNN_BENCH_MIN_SHARE).  run_item returns True when the item is
    done, False when it ran out of its time: in 'fair' mode those run again, in order,
    in a second pass with what the others left over (the Triton kernels they compiled
    before the limit are cached by then).  Items with less than min_s left go to
    on_skip(item).  Returns {item: attempts}."""
    mode = mode or share_mode()
    attempts = collections.OrderedDict()
    retry = []
    passes = [list(items)]
    for p in range(2):
        todo = passes[p]
        for k, it in enumerate(todo):
            left = until - clock()
            lim = fair_limit(left, len(todo) - k, cap_of(it), mode, floor=first_floor if p == 0 else None)
            if left < min_s:
                if p == 0 and on_skip:
                    on_skip(it)
                continue
            attempts[it] = attempts.get(it, 0) + 1
            done = run_item(it, lim, p + 1)
            if not done and p == 0:
                retry.append(it)
        if mode != "fair" or not retry:
            break
        passes.append(retry)
    return attempts


def sync():
    if DEVICE != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()


def relerr(a, b):
    a = a.detach().double()
    b = b.detach().double()
    if a.shape != b.shape:
        return "shape %s vs %s" % (tuple(a.shape), tuple(b.shape))
    nb = b.norm().item()
    d = (a - b).norm().item()
    if not math.isfinite(d):
        return float("nan")
    return d / nb if nb > 0 else d


def fwbw(fn, c, gouts):
    """One forward + backward through autograd; gouts: gradients of outputs + finals."""
    outs, fins = fn(c)
    ts = list(outs) + list(fins)
    pairs = [(t, g) for t, g in zip(ts, gouts) if t is not None and t.requires_grad and g is not None]
    torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
    return ts


def make_gouts(ts, seed, device):
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return [torch.randn(t.shape, generator=g, device=device, dtype=torch.float32).to(t.dtype) for t in ts]


def median_entry(evs):
    """The timing entry of event pairs: median, fastest and slowest ms, reps."""
    ms = sorted(a.elapsed_time(b) for a, b in evs)
    n = len(ms)
    med = ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2])
    return {"ms": med, "min_ms": ms[0], "max_ms": ms[-1], "reps": n}


def time_graph(fn, pre, n_sets, reps=30):
    """Median ms of a CUDA graph replay of fn(i) (i = r % n_sets), each captured once
    after a warm-up on a side stream (what capture needs: allocations and first-call work
    done); pre(i) runs before each capture (not replayed: gradients are set to None then,
    and each graph's backward writes its own)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(n_sets):
            pre(i)
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    sync()
    graphs = []
    for i in range(n_sets):
        pre(i)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn(i)
        graphs.append(g)
    for g in graphs:
        g.replay()
    sync()
    evs = [(Event(), Event()) for _ in range(reps)]
    for r in range(reps):
        evs[r][0].record()
        graphs[r % n_sets].replay()
        evs[r][1].record()
    sync()
    del graphs
    return dict(median_entry(evs), graph=True)


def time_calls(fn, pre, n_sets, target_s=0.3, min_reps=3, max_reps=30, slow_s=None):
    """Median ms of fn(i) over reps (i = r % n_sets), each timed with CUDA events;
    pre(i) (outside the timed region) runs before each call.  One warm-up call first;
    a call slower than slow_s (FRNN_BENCH_SLOW_CALL_S, default 2 s) gets min_reps reps,
    fewer (at least 1) when the model's time limit would not leave room for them
    ('slow': True in the result)."""
    if slow_s is None:
        slow_s = env_float("FRNN_BENCH_SLOW_CALL_S", 2.0)
    graph_error = None
    if os.environ.get("FRNN_BENCH_GRAPH") == "1" and DEVICE != "cpu":
        try:
            return time_graph(fn, pre, n_sets)
        except Exception as e:
            graph_error = short_err(e, 200)
            sync()
    pre(0)
    sync()
    t0 = time.perf_counter()
    fn(0)
    sync()
    est = time.perf_counter() - t0
    reps = int(min(max_reps, max(min_reps, target_s / max(est, 1e-5))))
    slow = est > slow_s
    if slow:
        room = alarm_left() - 2.0
        reps = max(1, min(min_reps, int(0.8 * room / est))) if math.isfinite(room) else min_reps
    evs = [(Event(), Event()) for _ in range(reps)]
    for r in range(reps):
        i = r % n_sets
        pre(i)
        evs[r][0].record()
        fn(i)
        evs[r][1].record()
    sync()
    r = median_entry(evs)
    if graph_error:
        r["graph_error"] = graph_error
    if slow:
        r["slow"] = True
        r["warmup_s"] = est
    return r


def peak_call(fn, pre, extra_bytes):
    """Peak device memory of one fn(0): bytes allocated above what existed before the
    call, plus extra_bytes (one input set with its initial states and output gradients)."""
    pre(0)
    import gc
    gc.collect()
    sync()
    if DEVICE == "cpu":
        r = fn(0)
        return {"peak_bytes": None, "call_bytes": None}
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    r = fn(0)
    sync()
    peak = torch.cuda.max_memory_allocated()
    del r
    return {"peak_bytes": peak - base + extra_bytes, "call_bytes": peak - base}


# ---------------------------------------------------------------- results file
OUT = os.environ.get("OUT") or HERE
RESULTS_PATH = os.path.join(OUT, "results.json")
RESULTS = {"header": {}, "models": collections.OrderedDict()}
_lock = threading.RLock()


def save():
    with _lock:
        tmp = RESULTS_PATH + ".tmp"
        with open(tmp, "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)
        os.replace(tmp, RESULTS_PATH)


def mrow(name):
    with _lock:
        return RESULTS["models"].setdefault(name, {"model": name, "notes": MODELS[name].notes if name in MODELS else ""})


def header(sizes, check_sizes):
    h = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0],
         "torch": torch.__version__, "timing_sizes": dict(zip("BTH", sizes)),
         "check_sizes": dict(zip("BTH", check_sizes)),
         "method": ("CUDA events around each call, median over 3-30 calls (about 0.3 s) after warm-up, the two "
                    "input sets used in turn (a call slower than FRNN_BENCH_SLOW_CALL_S: 1 warm-up + at most 3 "
                    "calls, fewer if the model's time limit is near; 'slow' in the entry, said in the label); "
                    "fw = inference forward under torch.no_grad(); fw+bw = forward + "
                    "torch.autograd.backward with random gradients of outputs and final states; both sides "
                    "through autograd; peak = max_memory_allocated during one fw+bw above what existed before, "
                    "plus one input set (inputs, initial states, output gradients)"),
         "graph": os.environ.get("FRNN_BENCH_GRAPH") == "1",
         "dtypes": "bf16 inputs and outputs, float32 states (and float32 parameters where the reference keeps them)",
         "frnn_lib": frnn._find_lib(), "budget_s": BUDGET,
         "time_share": ("%s: each model (check: each dtype and model) gets at most its share of the phase's time "
                        "left, time left / models left (first attempts at least %.0f s: FRNN_BENCH_FIRST_SHARE when "
                        "budget / models allows it, else FRNN_BENCH_MIN_SHARE; second attempts at least "
                        "FRNN_BENCH_MIN_SHARE), capped by FRNN_BENCH_MODEL_TIMEOUT(S); models that ran out get a "
                        "second attempt with the time left at the end (the better attempt is kept); reference "
                        "modules imported at start-up, outside the limits (ref_imports)" % (
                            share_mode(), first_min_share(len(env_list("FRNN_BENCH_MODELS", list(MODELS)))))) if share_mode() == "fair" else
                       "order: models in order, each up to FRNN_BENCH_MODEL_TIMEOUT(S)",
         "isolated": ("reference variants run in a child process (compare.py --isolated; a crash loses only "
                      "that variant): %s" % ",".join(env_list("FRNN_BENCH_ISOLATE", ["mlstm"]))),
         "mamba2_autotune": (("pruned to 1 config per kernel (%s)" % Mamba2.prune_pick()) if Mamba2.prune_pick()
                             else "full")}
    try:
        import triton
        h["triton"] = triton.__version__
    except Exception as e:
        h["triton"] = "not importable: %s" % short_err(e, 100)
    if torch.cuda.is_available():
        h["card"] = torch.cuda.get_device_name(0)
        h["cuda_runtime"] = torch.version.cuda
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                            "temperature.gpu,power.draw", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=15)
        h["nvidia_smi"] = r.stdout.strip()
        h["driver"] = r.stdout.split(",")[1].strip() if "," in r.stdout else r.stdout.strip()
    except Exception as e:
        h["driver"] = "nvidia-smi failed: %s" % short_err(e, 100)
    commits = os.path.join(ROOT, "refs", "COMMITS")
    if os.path.exists(commits):
        h["refs"] = open(commits).read().strip().splitlines()
    for mod in ("fla", "mlstm_kernels"):
        try:
            import importlib
            h[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as e:
            h[mod] = "not importable: %s" % short_err(e, 160)
    return h


# ------------------------------------------------------- reference imports (start-up)
COMMON_IMPORTS = ("torch._dynamo", "einops")  # what fla / mamba_ssm / mlstm_kernels pull in first


def preload_refs(names, variants_of=None):
    """Step 1 of every run: imports each reference function the selected models may call
    (every variant, check-only ones and fallbacks included; torch._dynamo and einops first,
    which fla and mamba_ssm import), once, outside any time limit, and logs how long that
    took.  A failed import is recorded per model (mrow(name)['ref_import'], and the rows
    of the variants that need it say 'import failed: ...'); nothing here is fatal.
    variants_of(m): the variants to import for m (default: all of them).  Returns the
    summary stored as results.json's header['ref_imports']."""
    t_all = time.time()
    summary = collections.OrderedDict()
    if CPU_TEST:
        summary["note"] = "CPU dry run: the references are the CpuRefs loops, nothing imported"
        return summary
    libs = {REF_LABEL.get(n) for n in names}
    if libs & {"fla", "mamba_ssm", "mlstm_kernels"}:
        for mod in COMMON_IMPORTS:
            try:
                guarded_import(mod)
            except Exception:
                pass  # recorded in REF_IMPORTS; the libraries' own imports will say what is missing
    for name in names:
        m = MODELS[name]
        t0 = time.time()
        failed = collections.OrderedDict()
        variants = variants_of(m) if variants_of else list(m.all_labels())
        for v in variants:
            for fn in m.ref_imports(v):
                try:
                    ref_fn(fn)
                except Exception as e:
                    failed[v] = _ref_fail.get(fn) or short_err(e, 300)
        try:
            m.variants()  # mlstm: decides between xl_chunk and native (imports nothing new now)
            m.prepare_refs()
        except Exception as e:
            failed["prepare"] = short_err(e, 300)
        entry = {"s": round(time.time() - t0, 2)}
        if failed:
            entry["failed"] = dict(failed)
        with _lock:
            mrow(name)["ref_import"] = entry
        if failed and not (name == "mamba" and list(failed) == ["ref"]):
            log("import %-16s failed: %s" % (name, "; ".join("%s: %s" % kv for kv in failed.items())[:300]))
        elif failed:
            log("import %-16s mamba_ssm's selective_scan_ref did not import: the local copy runs (%s)" % (
                name, failed["ref"][:150]))
    summary["total_s"] = round(time.time() - t_all, 2)
    summary["modules"] = dict(REF_IMPORTS)
    slow = sorted(((v.get("s", 0), k) for k, v in REF_IMPORTS.items()), reverse=True)
    log("reference imports took %.1f s, outside the time limits (%s)%s" % (
        summary["total_s"], ", ".join("%s %.1f s" % (k, t) for t, k in slow[:5] if t >= 0.05) or "all fast",
        "; failed: " + ", ".join(k for k, v in REF_IMPORTS.items() if v.get("error")) if any(
            v.get("error") for v in REF_IMPORTS.values()) else ""))
    return summary


# ------------------------------------------------- isolation (child processes)
class temp_env:
    """Environment variables set for the duration of a with block (Triton reads its
    variables, e.g. DISABLE_LLVM_OPT, through getenv when it compiles)."""

    def __init__(self, env):
        self.env = dict(env or {})

    def __enter__(self):
        self.old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        return self

    def __exit__(self, *a):
        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        return False


def tagged_json(out, tag):
    """The JSON objects a child printed on lines starting with `tag` (the isolated
    and first-call protocols), in order; a line that does not parse is skipped."""
    for line in out.splitlines():
        if line.startswith(tag):
            try:
                yield json.loads(line[len(tag):])
            except ValueError:
                continue


def run_subprocess(cmd, env, timeout):
    """(stdout, stderr, returncode or None when killed at the timeout, timed_out, wall_s)."""
    t0 = time.time()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(1.0, timeout))
        out, err, rc, timed_out = r.stdout, r.stderr, r.returncode, False
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        rc, timed_out = None, True
    return out, err, rc, timed_out, time.time() - t0


def rc_str(rc):
    if rc is None:
        return "killed at its time limit"
    if rc < 0:
        try:
            return "killed by signal %d (%s)" % (-rc, signal.Signals(-rc).name)
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit status %d" % rc


def stderr_gist(err, n=400):
    """The line that says why a process died (an assertion, a fatal error), else the tail."""
    lines = [ln.strip() for ln in (err or "").splitlines() if ln.strip()]
    for key in ("Assertion", "assertion", "Fatal", "fatal", "Segmentation", "Aborted", "Error", "error"):
        hits = [ln for ln in lines if key in ln]
        if hits:
            return hits[-1][:n]
    return " | ".join(lines[-3:])[-n:]


def run_isolated(m, variant, job, limit):
    """Runs one phase step of a reference variant (job: phase 'time' or 'check', dims,
    dtype) in a child process (compare.py --isolated), under the variant's environment;
    returns the child's result dict.  A child that dies (an LLVM assertion aborts the
    interpreter) gives {'error': 'child process died: ...', 'crashed': True}; one still
    running at the limit is killed: {'error': 'ModelTimeout: ...', 'timeout': True}."""
    job = dict(job, model=m.name, variant=variant)
    limit = min(limit, alarm_left() - 1.0)
    env = dict(os.environ)
    env.update(m.variant_env(variant))
    env["FRNN_BENCH_CHILD_DEADLINE"] = "%.3f" % (time.time() + limit - 3.0)
    cmd = [sys.executable, os.path.abspath(__file__), "--isolated", json.dumps(job)]
    out, err, rc, timed_out, wall = run_subprocess(cmd, env, limit)
    res, stage = None, None
    for j in tagged_json(out, "ISOLATED "):
        stage = j.get("stage", stage)
        if "result" in j:
            res = j["result"]
    if res is None:
        res = {}
        if timed_out:
            res["error"] = "ModelTimeout: child process killed after %.0f s (during %s)" % (limit, stage or "start-up")
            res["timeout"] = True
        else:
            gist = stderr_gist(err)
            res["error"] = "child process died (%s) during %s%s" % (rc_str(rc), stage or "start-up",
                                                                    ": " + gist if gist else "")
            res["crashed"] = True
    res["isolated"] = {"wall_s": round(wall, 2), "rc": rc, "env": m.variant_env(variant)}
    return res


def isolated_child(job):
    """compare.py --isolated JOB: one reference variant's time or check step; prints
    'ISOLATED {"stage": ...}' before each step and 'ISOLATED {"result": {...}}' last."""
    name, variant, phase = job["model"], job["variant"], job["phase"]
    m = MODELS[name]
    dev = torch.device(DEVICE)

    def emit(**kw):
        print("ISOLATED " + json.dumps(kw, default=str), flush=True)

    deadline = env_float("FRNN_BENCH_CHILD_DEADLINE", time.time() + 60)
    res = {"label": ref_label(m, variant)} if phase == "time" else {}
    # the reference's modules first, outside the Alarm (the parent's timeout still applies)
    emit(stage="import")
    preload_refs([name], lambda mm: [variant])
    imp = m.import_error(variant)
    if imp:
        res["error"] = "import failed: " + imp
        emit(result=res)
        return
    try:
        with Alarm(max(1.0, deadline - time.time())):
            emit(stage="device start-up")
            torch.zeros(1, device=dev)
            sync()
            fake = "%s/%s" % (name, variant) in env_list("FRNN_BENCH_FAKE_ABORT", [])
            if phase == "time":
                emit(stage="inputs")
                sets = [m.make(dict(job["dims"]), torch.bfloat16, dev, 1000 + i).requires_grad_() for i in range(2)]

                def pre(i):
                    sets[i].zero_grad()

                def progress(st):
                    emit(stage=st)
                    if fake:  # test hook: abort as Triton's LLVM did
                        os.abort()
                time_ref(m, variant, sets, [None], pre, sets[0].nbytes(), dev, res, progress)
            else:
                dtype = {"bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64}[job["dtype"]]
                emit(stage="check %s" % job["dtype"])
                if fake:
                    os.abort()
                res = check_model(m, dict(job["dims"]), dtype, dev, variant)
    except ModelTimeout as e:
        res["error"] = short_err(e)
        res["timeout"] = True
    except Exception as e:
        res["error"] = short_err(e)
        res["trace"] = traceback.format_exc()[-1500:]
    emit(result=res)


FAILED = {}  # (model, variant) -> {'error': ...} of a reference that crashed its process


def run_variants(m, base, run_one):
    """run_one(variant, failed_before) -> result dict for each variant of base, in order;
    a variant that fails (error, crash: not a timeout) queues m.fallbacks(variant).  A
    variant that crashed its process in an earlier phase is not run again (run_one gets
    that failure as failed_before and records it)."""
    queue = list(base)
    seen = {v for v, _ in queue}
    while queue:
        v, _ = queue.pop(0)
        before = FAILED.get((m.name, v))
        r = run_one(v, before) or {}
        if r.get("crashed"):
            FAILED.setdefault((m.name, v), {"error": r.get("error", "")})
        if before is not None or (r.get("error") and not r.get("timeout")):
            for fb in m.fallbacks(v):
                if fb[0] not in seen:
                    queue.append(fb)
                    seen.add(fb[0])


# ---------------------------------------------------------------- phase: time
def time_ref(m, variant, sets, gref, pre, in_bytes, dev, rr, progress=None):
    """Times reference variant on the input sets into rr: first fw call (in process),
    fw (no_grad), first fw+bw, fw+bw, peak memory.  gref[0]: the output gradients (made
    from the reference's outputs when None).  progress(stage) before each step."""
    progress = progress or (lambda st: None)
    fn = lambda c, v=variant: m.ref(c, v)
    with temp_env(m.variant_env(variant)):
        progress("first fw call")
        t0 = time.perf_counter()
        with torch.no_grad():
            o, f = fn(sets[0])
        sync()
        rr["first_fw_inproc_s"] = time.perf_counter() - t0
        if gref[0] is None:
            gref[0] = make_gouts(list(o) + list(f), 7, dev)
        gouts = gref[0]
        del o, f
        progress("fw timing")
        with torch.no_grad():
            rr["fw"] = time_calls(lambda i: fn(sets[i]), pre, 2)
        try:
            progress("first fw+bw call")
            t0 = time.perf_counter()
            fwbw(fn, sets[0], gouts)
            sync()
            rr["first_fwbw_inproc_s"] = time.perf_counter() - t0
            has_bw = True
        except NotImplementedError as e:
            rr["fwbw_error"] = "no backward: " + short_err(e, 200)
            has_bw = False
        pre(0)
        if has_bw:
            progress("fw+bw timing")
            rr["fwbw"] = time_calls(lambda i: fwbw(fn, sets[i], gouts), pre, 2)
            progress("peak memory")
            rr.update(peak_call(lambda i: fwbw(fn, sets[i], gouts), pre, in_bytes + sum(
                g.numel() * g.element_size() for g in gouts)))
    slow = [k for k in ("fw", "fwbw") if (rr.get(k) or {}).get("slow")]
    if slow:
        rr["label"] = rr.get("label", variant) + " (%s: 1 warm-up + %d reps)" % (
            "/".join(slow), min(rr[k]["reps"] for k in slow))
    return rr


def _n_measured(res):
    """How many times a time-phase entry holds (to keep the better of two attempts)."""
    if not isinstance(res, dict):
        return 0
    n = sum(1 for k in ("fw", "fwbw") if (res.get("frnn") or {}).get(k))
    for rr in (res.get("refs") or {}).values():
        n += sum(1 for k in ("fw", "fwbw") if rr.get(k))
    return n


def time_model(name, sizes, limit, dev):
    """One model's time entry (frnn, then each reference variant and its fallbacks),
    within `limit` seconds; returns it (also stored in results.json as it goes)."""
    m = MODELS[name]
    row = mrow(name)
    res = {"frnn": {}, "refs": collections.OrderedDict()}
    row["time"] = res
    d = m.dims(*sizes)
    res["dims"] = d
    res["limit_s"] = round(limit, 1)
    sets = None
    try:
        with Alarm(limit):
            sets = [m.make(d, torch.bfloat16, dev, 1000 + i).requires_grad_() for i in range(2)]
            in_bytes = sets[0].nbytes()
            gref = [None]

            def pre(i):
                sets[i].zero_grad()

            # frnn (try mixed dtypes first; fall back to parameters cast to bf16)
            fr = res["frnn"]
            for attempt in (0, 1):
                try:
                    for c in sets:
                        c.cast_params = bool(attempt)
                    fn = lambda c: m.frnn(c, exact=False)
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        o, f = fn(sets[0])
                        ts = list(o) + list(f)
                        del o, f
                    sync()
                    if gref[0] is None:
                        gref[0] = make_gouts(ts, 7, dev)
                    fwbw(fn, sets[0], gref[0])
                    sync()
                    fr["first_call_inproc_s"] = time.perf_counter() - t0
                    with torch.no_grad():
                        fr["fw"] = time_calls(lambda i: fn(sets[i]), pre, 2)
                    fr["fwbw"] = time_calls(lambda i: fwbw(fn, sets[i], gref[0]), pre, 2)
                    fr.update(peak_call(lambda i: fwbw(fn, sets[i], gref[0]), pre, in_bytes + sum(
                        g.numel() * g.element_size() for g in gref[0])))
                    if attempt:
                        fr["note"] = "float32 parameters cast to bf16 (mixed dtypes failed: %s)" % fr.pop("error_mixed", "")
                    fr.pop("error", None)
                    break
                except ModelTimeout:
                    raise
                except Exception as e:
                    fr["error"] = short_err(e)
                    if attempt == 0:
                        fr["error_mixed"] = short_err(e, 200)
                        fr["trace"] = traceback.format_exc()[-1500:]
                    pre(0)
            for c in sets:
                c.cast_params = False

            def run_one(variant, failed_before):
                rr = {"label": ref_label(m, variant)}
                res["refs"][variant] = rr
                save()
                imp = m.import_error(variant)
                if failed_before is not None:
                    rr["error"] = "not run again: failed before (%s)" % failed_before["error"][:200]
                    rr["crashed"] = True
                elif imp:
                    rr["error"] = "import failed: " + imp
                elif m.isolated(variant):
                    rr.update(run_isolated(m, variant, {"phase": "time", "dims": d}, alarm_left() - 0.5))
                    rr["label"] = rr.get("label") or ref_label(m, variant)
                    if rr.get("timeout"):
                        save()
                        raise ModelTimeout(rr.get("error", "child timed out"))
                else:
                    try:
                        time_ref(m, variant, sets, gref, pre, in_bytes, dev, rr)
                    except ModelTimeout as e:
                        rr["error"] = short_err(e)
                        raise
                    except Exception as e:
                        rr["error"] = short_err(e)
                        rr["trace"] = traceback.format_exc()[-1500:]
                pre(0)
                if "fwbw" in rr and "fwbw" in fr:
                    rr["ratio_fwbw"] = fr["fwbw"]["ms"] / rr["fwbw"]["ms"]
                if "fw" in rr and "fw" in fr:
                    rr["ratio_fw"] = fr["fw"]["ms"] / rr["fw"]["ms"]
                save()
                return rr

            run_variants(m, m.variants(), run_one)
    except ModelTimeout as e:
        res["error"] = short_err(e)
        res["timeout"] = True
    except Exception as e:
        res["error"] = short_err(e)
        res["trace"] = traceback.format_exc()[-2000:]
    finally:
        sets = None
        try:
            if DEVICE != "cpu":
                torch.cuda.empty_cache()
        except Exception:
            pass
    try:
        row.update(m.extra_info())
    except Exception:
        pass
    save()
    return res


def phase_time(names, sizes, until):
    """Each model gets fair_limit() of what is left (FRNN_BENCH_SHARE); models that ran
    out of their share run again at the end with what the others left over (their
    compiled kernels are cached by then); the better of the two attempts is kept."""
    dev = torch.device(DEVICE)

    def skip(name):
        mrow(name)["time"] = {"skipped": "time budget"}
        save()
        log("time %-16s skipped (budget)" % name)

    def run_item(name, limit, attempt):
        row = mrow(name)
        prev = row.get("time") if attempt > 1 else None
        res = time_model(name, sizes, limit, dev)
        ran_out = bool(res.get("timeout"))
        if prev is not None:
            if _n_measured(res) < _n_measured(prev):
                prev["retry"] = {"limit_s": res.get("limit_s"), "error": res.get("error")}
                row["time"] = res = prev
            else:
                res["first_attempt"] = {"limit_s": prev.get("limit_s"), "error": prev.get("error")}
            res["attempts"] = attempt
            save()
        fr = res["frnn"]
        msg = "frnn fw %s fwbw %s" % (fmt_ms(fr.get("fw")), fmt_ms(fr.get("fwbw")))
        for v, rr in res["refs"].items():
            msg += " | %s fw %s fwbw %s" % (v, fmt_ms(rr.get("fw")), fmt_ms(rr.get("fwbw")))
            if rr.get("error"):
                msg += " ERR " + rr["error"][:80]
        if fr.get("error"):
            msg += " | frnn ERR " + fr["error"][:100]
        if res.get("error"):
            msg += " | ERR " + res["error"][:100]
        log("time %-16s %s(limit %.0f s%s)" % (name, msg + " ", limit, ", attempt %d" % attempt if attempt > 1 else ""))
        return not ran_out

    run_shared(names, until, run_item, model_cap, min_s=8.0, on_skip=skip, first_floor=first_min_share(len(names)))


def fmt_ms(t):
    return "-" if not t else "%.3g" % t["ms"]


# --------------------------------------------------------------- phase: check
def check_model(m, d, dtype, device, variant, seed=4242):
    """Relative errors frnn vs reference on the same inputs (and the same output gradients)."""
    c = m.make(d, dtype, device, seed).requires_grad_()
    names = c.names()
    out = {}
    cast = m.ref_cast(dtype, variant)
    if cast:
        out["ref_cast"] = cast
    # reference
    o_r, f_r = m.ref(c, variant)
    ts_r = list(o_r) + list(f_r)
    gouts = make_gouts(ts_r, 99, device)
    why = m.final_grad(variant)
    if why:  # both sides get the same zero gradient for the final states
        gouts = gouts[:len(o_r)] + [torch.zeros_like(g) for g in gouts[len(o_r):]]
        out["final_state_grad"] = "zero: " + why
    g_r = None
    try:
        pairs = [(t, g) for t, g in zip(ts_r, gouts) if t.requires_grad]
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
        g_r = {n: (t.grad.detach().clone() if t.grad is not None else None) for n, t in zip(names, c.leaves())}
    except NotImplementedError as e:
        out["ref_backward"] = "none: " + short_err(e, 150)
    ts_r = [t.detach() for t in ts_r]
    c.zero_grad()
    # frnn
    o_f, f_f = m.frnn(c, exact=True)
    ts_f = list(o_f) + list(f_f)
    if len(ts_f) != len(ts_r):
        raise RuntimeError("frnn returned %d tensors, the reference %d" % (len(ts_f), len(ts_r)))
    pairs = [(t, g) for t, g in zip(ts_f, gouts) if t.requires_grad]
    torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
    g_f = {n: (t.grad.detach().clone() if t.grad is not None else None) for n, t in zip(names, c.leaves())}
    errs = collections.OrderedDict()
    n_out = len(o_r)
    st_names = list(c.S.keys())
    for i, (a, b) in enumerate(zip(ts_f, ts_r)):
        if i < n_out:
            key = "out" if n_out == 1 else "out%d" % i
        else:
            j = i - n_out
            key = "final " + (st_names[j] if j < len(st_names) else str(j))
        errs[key] = relerr(a, b)
    if g_r is not None:
        for n in names:
            a, b = g_f.get(n), g_r.get(n)
            if a is None and b is None:
                continue
            if a is None or b is None:
                errs["grad " + n] = "frnn %s, ref %s" % ("none" if a is None else "ok", "none" if b is None else "ok")
                continue
            errs["grad " + n] = relerr(a, b)
        for k, v in m.ref_grad_extras(c, {n: g for n, g in g_r.items()}).items():
            base = k.rstrip("*")
            if g_f.get(base) is not None:
                errs["grad " + k] = relerr(g_f[base], v)
    out["errors"] = errs
    num = [v for v in errs.values() if isinstance(v, float)]
    fwv = [v for k, v in errs.items() if not k.startswith("grad") and isinstance(v, float)]
    bwv = [v for k, v in errs.items() if k.startswith("grad") and isinstance(v, float) and k not in m.bw_exclude]
    out["max_fw"] = max(fwv) if fwv else None
    out["max_bw"] = max(bwv) if bwv else None
    out["any_nan"] = any(isinstance(v, float) and math.isnan(v) for v in num)
    return out


def phase_check(names, sizes, until, device=None, dtypes=None):
    """bf16 for every model first (it reuses the kernels the timing compiled), then float32.
    Each (dtype, model) gets fair_limit() of what is left, like the time phase; one that
    runs out of it runs again at the end (its variants already checked are kept)."""
    device = device or torch.device(DEVICE)
    dtypes = dtypes or [torch.bfloat16, torch.float32]
    dnames = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float64: "f64"}
    by_dn = {dnames[dt]: dt for dt in dtypes}
    items = [(dnames[dt], name) for dt in dtypes for name in names]

    def skip(item):
        dn, name = item
        res = mrow(name).setdefault("check", collections.OrderedDict())
        for variant, _ in MODELS[name].check_variants():
            res.setdefault("%s/%s" % (dn, variant), {"skipped": "time budget"})
        save()

    def run_item(item, limit, attempt):
        dn, name = item
        dtype = by_dn[dn]
        m = MODELS[name]
        row = mrow(name)
        res = row.setdefault("check", collections.OrderedDict())
        d = m.dims(*sizes)
        res["dims"] = d
        item_deadline = time.time() + limit
        ran_out = [False]

        def run_one(variant, failed_before):
            key = "%s/%s" % (dn, variant)
            old = res.get(key)
            if attempt > 1 and isinstance(old, dict) and ("errors" in old or (old.get("error") and not old.get("timeout"))):
                return old  # done in the first pass
            left = item_deadline - time.time()
            imp = m.import_error(variant)
            if failed_before is not None:
                r = {"error": "not run: failed before (%s)" % failed_before["error"][:200], "crashed": True}
            elif imp:
                r = {"error": "import failed: " + imp}
            elif left < 3:
                r = {"skipped": "time budget", "timeout": True}
            elif m.isolated(variant):
                r = run_isolated(m, variant, {"phase": "check", "dims": d, "dtype": dn}, left)
            else:
                try:
                    with Alarm(left), temp_env(m.variant_env(variant)):
                        r = check_model(m, d, dtype, device, variant)
                except ModelTimeout as e:
                    r = {"error": short_err(e), "timeout": True}
                except Exception as e:
                    r = {"error": short_err(e), "trace": traceback.format_exc()[-1500:]}
            if r.get("timeout"):
                ran_out[0] = True
            res[key] = r
            save()
            if "errors" in r:
                log("check %-16s %-20s fw %.2e bw %s%s%s" % (
                    name, key, r["max_fw"] if r["max_fw"] is not None else float("nan"),
                    "%.2e" % r["max_bw"] if r["max_bw"] is not None else "-",
                    "  " + r.get("ref_backward", "") if r.get("ref_backward") else "",
                    "  (reference: %s)" % r["ref_cast"] if r.get("ref_cast") else ""))
            else:
                log("check %-16s %-20s %s" % (name, key, r.get("error", r.get("skipped", ""))[:150]))
            if DEVICE != "cpu":
                torch.cuda.empty_cache()
            return r

        run_variants(m, m.check_variants(), run_one)
        return not ran_out[0]

    run_shared(items, until, run_item, lambda it: model_cap(it[1]), min_s=5.0, on_skip=skip,
               first_floor=first_min_share(len(names)))


# --------------------------------------------------------------- phase: first
def first_call_child(name, stage):
    """Runs in a fresh process: frnn's first fw+bw call, then the reference's, one variant
    after the other (FRNN_BENCH_FIRST_VARIANTS, default the model's variants), each under
    its environment; prints 'FIRSTCALL {"started": ...}' before each part, so the parent
    can tell what was running when the process died or was killed."""
    m = MODELS[name]
    dev = torch.device(DEVICE)
    torch.zeros(1, device=dev)
    sync()
    d = m.dims(*env_ints("FRNN_BENCH_SIZES", (8, 1024, 32)))
    c = m.make(d, torch.bfloat16, dev, 11).requires_grad_()

    def emit(**kw):
        print("FIRSTCALL " + json.dumps(kw), flush=True)

    if os.environ.get("FRNN_BENCH_FIRST_SKIP_FRNN") != "1":
        emit(started="frnn")
        try:
            t0 = time.perf_counter()
            outs, fins = m.frnn(c, exact=False)
            ts = list(outs) + list(fins)
            gouts = make_gouts(ts, 7, dev)
            pairs = [(t, g) for t, g in zip(ts, gouts) if t.requires_grad]
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
            sync()
            emit(frnn_s=time.perf_counter() - t0)
        except Exception as e:
            emit(frnn_error=short_err(e))
        c.zero_grad()
    variants = [v for v in env_list("FRNN_BENCH_FIRST_VARIANTS", [v for v, _ in m.variants()]) if v != "-"]
    fake = env_list("FRNN_BENCH_FAKE_ABORT", [])
    for variant in variants:
        emit(started=variant)
        try:
            with temp_env(m.variant_env(variant)):
                if "%s/%s" % (name, variant) in fake:  # test hook: abort as Triton's LLVM did
                    os.abort()
                t0 = time.perf_counter()
                mod = {"fla": "fla.ops", "mamba_ssm": "mamba_ssm.ops.triton.ssd_combined",
                       "mlstm_kernels": "mlstm_kernels.torch.chunkwise"}.get(REF_LABEL[name])
                if name == "mamba":
                    mod = "mamba_ssm.ops.selective_scan_interface"
                if mod and not CPU_TEST:
                    import importlib
                    try:
                        importlib.import_module(mod)
                    except ImportError:
                        if name != "mamba":  # mamba: the local copy of selective_scan_ref
                            raise
                t_imp = time.perf_counter() - t0
                t0 = time.perf_counter()
                o, f = m.ref(c, variant)
                ts = list(o) + list(f)
                gouts = make_gouts(ts, 7, dev)
                note = ""
                try:
                    pairs = [(t, g) for t, g in zip(ts, gouts) if t.requires_grad]
                    torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
                except NotImplementedError:
                    note = "fw only (no backward)"
                sync()
                emit(variant=variant, ref_s=time.perf_counter() - t0, ref_import_s=t_imp, note=note,
                     label=ref_label(m, variant))
        except Exception as e:
            emit(variant=variant, ref_error=short_err(e))
        c.zero_grad()


def run_child(name, stage, env, timeout):
    """One first-call subprocess; its FIRSTCALL lines as a dict.  A subprocess killed at
    the timeout: 'timeout', and 'frnn_timeout' or refs[variant]['ref_timeout'] for the
    part it was in; one that died (signal, exit status): 'died', and that part's error."""
    cmd = [sys.executable, os.path.abspath(__file__), "--first-call", name, stage]
    out, err, rc, timed_out, wall = run_subprocess(cmd, env, timeout)
    res = {"wall_s": wall, "limit_s": round(timeout, 1)}
    refs = {}
    started = None
    for j in tagged_json(out, "FIRSTCALL "):
        if "started" in j:
            started = j["started"]
        elif "variant" in j:
            refs[j.pop("variant")] = j
            started = None
        else:
            res.update(j)
            started = None
    if timed_out:
        res["timeout"] = "> %.0f s (subprocess killed)" % timeout
        if started == "frnn":
            res["frnn_timeout"] = "> %.0f s" % timeout
        elif started:
            refs[started] = {"ref_timeout": "> %.0f s (subprocess killed)" % timeout}
    elif rc:
        gist = stderr_gist(err)
        why = "child process died (%s)%s" % (rc_str(rc), ": " + gist if gist else "")
        res["died"] = why
        if started == "frnn":
            res["frnn_error"] = why
        elif started:
            refs[started] = {"ref_error": why, "crashed": True}
    res["rc"] = rc
    res["refs"] = refs
    if not refs and "frnn_s" not in res:
        res["stderr_tail"] = err[-600:]
    return res


def first_variants(name):
    """The reference variants the time phase ran for this model (fallbacks included),
    else the model's variants."""
    t = mrow(name).get("time") or {}
    vs = list((t.get("refs") or {}).keys()) if isinstance(t, dict) else []
    return vs or [v for v, _ in MODELS[name].variants()]


def phase_first(names, until):
    jobs = max(1, int(os.environ.get("FRNN_BENCH_FIRST_JOBS", "6")))
    per = env_float("FRNN_BENCH_FIRST_TIMEOUT", 60)
    base = tempfile.mkdtemp(prefix="frnn-firstcall-")
    RESULTS["header"]["first_call"] = ("fresh subprocess per model and stage, %d at a time; cold: empty "
                                       "FRNN_CACHE_DIR and TRITON_CACHE_DIR; warm: the same folders again; "
                                       "times exclude Python/torch start-up and the reference's import "
                                       "(ref_import_s); timeout per subprocess: %.0f s, or less so that every "
                                       "model gets its share of the phase (limit_s)" % (jobs, per))
    import concurrent.futures as cf
    pending = [2 * len(names)]  # subprocesses not started yet (one cold + one warm per model)

    def limit_now():
        """Seconds for the next subprocess: its share of what is left, jobs at a time."""
        with _lock:
            n = max(1, pending[0])
            pending[0] -= 1
        left = until - time.time()
        if left < 10:
            return None
        return min(per, left, max(10.0, left * min(jobs, n) / n))

    def one(name):
        row = mrow(name)
        with _lock:
            fc = row.setdefault("first", {})
        env = dict(os.environ)
        env["FRNN_CACHE_DIR"] = os.path.join(base, name, "frnn")
        env["TRITON_CACHE_DIR"] = os.path.join(base, name, "triton")
        os.makedirs(env["FRNN_CACHE_DIR"], exist_ok=True)
        os.makedirs(env["TRITON_CACHE_DIR"], exist_ok=True)
        variants = first_variants(name)
        # a variant that aborted its process in an earlier phase (or cold) would again: not run
        crashed = {v: "not run: crashed before (%s)" % FAILED[(name, v)]["error"][:160]
                   for v in variants if (name, v) in FAILED}
        for stage in ("cold", "warm"):
            if stage == "warm":
                for v, r in ((fc.get("cold") or {}).get("refs") or {}).items():
                    if r.get("crashed") and v not in crashed:
                        crashed[v] = "not run: crashed cold"
            todo = [v for v in variants if v not in crashed]
            merged, skip_frnn = None, False
            for _ in range(len(variants) + 1):
                limit = limit_now()
                if limit is None:
                    if merged is None:
                        merged = {"skipped": "time budget"}
                    break
                e2 = dict(env, FRNN_BENCH_FIRST_VARIANTS=",".join(todo) or "-")
                if skip_frnn:
                    e2["FRNN_BENCH_FIRST_SKIP_FRNN"] = "1"
                r = run_child(name, stage, e2, limit)
                if merged is None:
                    merged = r
                else:  # a rerun for the variants after the one that died / timed out
                    merged["refs"].update(r["refs"])
                    merged.setdefault("reruns", []).append(
                        {k: r.get(k) for k in ("wall_s", "limit_s", "rc", "timeout", "died") if r.get(k) is not None})
                rest = [v for v in todo if v not in r["refs"]]
                for v, rv in list(r["refs"].items()):
                    for fb, _ in (MODELS[name].fallbacks(v) if rv.get("crashed") else []):
                        if fb not in variants:  # first phase alone: the fallbacks the time phase would have run
                            variants.append(fb)
                            rest.append(fb)
                if not rest or not (r.get("timeout") or r.get("died")) or not r["refs"]:
                    break
                todo, skip_frnn = rest, True
                with _lock:
                    pending[0] += 1
            if isinstance(merged, dict) and "refs" in merged:
                for v in variants:
                    if v in crashed and v not in merged["refs"]:
                        merged["refs"][v] = {"ref_error": crashed[v], "crashed": True}
            with _lock:
                fc[stage] = merged
            save()
        return name

    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        for name in ex.map(one, names):
            fc = mrow(name).get("first", {})
            log("first %-16s %s" % (name, fmt_first(fc)))


def _first_ref(fc, stage, var):
    """A reference's first-call entry as the table shows it: '12.3s', '>60s', 'crash', '-'."""
    s = fc.get(stage) or {}
    r = (s.get("refs") or {}).get(var) or {}
    if r.get("ref_s") is not None:
        return "%.1fs" % r["ref_s"]
    if r.get("ref_timeout"):
        return ">%ss" % r["ref_timeout"].split()[1]
    if r.get("crashed") or "child process died" in (r.get("ref_error") or ""):
        return "crash"
    if r.get("ref_error"):
        return "err"
    if s.get("timeout"):
        return ">%ss" % s["timeout"].split()[1]
    return "-"


def _first_frnn(fc, stage):
    s = fc.get(stage) or {}
    if s.get("frnn_s") is not None:
        return "%.1fs" % s["frnn_s"]
    if s.get("frnn_timeout") or s.get("timeout"):
        return ">%ss" % (s.get("frnn_timeout") or s["timeout"]).split()[1].rstrip("s")
    if s.get("frnn_error"):
        return "err"
    return "-"


def fmt_first(fc):
    msg = "frnn cold %s warm %s" % (_first_frnn(fc, "cold"), _first_frnn(fc, "warm"))
    variants = []
    for stage in ("cold", "warm"):
        for v in ((fc.get(stage) or {}).get("refs") or {}):
            if v not in variants:
                variants.append(v)
    for v in variants:
        msg += " | %s cold %s warm %s" % (v, _first_ref(fc, "cold", v), _first_ref(fc, "warm", v))
    return msg


# ================================================================== report
LABEL_W = 72  # reference column width of the table


def table(results):
    rows = []
    hdr = ("model", "reference", "frnn fw", "ref fw", "frnn fwbw", "ref fwbw", "fwbw x", "peak MB f/r",
           "chk f32 fw/bw", "chk bf16 fw/bw", "1st frnn c/w", "1st ref c")
    for name, row in results.get("models", {}).items():
        t = row.get("time", {}) or {}
        fr = t.get("frnn", {}) if isinstance(t, dict) else {}
        refs = t.get("refs", {}) if isinstance(t, dict) else {}
        chk = row.get("check", {})
        fc = row.get("first", {})
        variants = list(refs.keys())
        chk_vs = [k.split("/", 1)[1] for k in chk if "/" in k]
        first_vs = [v for st in ("cold", "warm") for v in (((fc or {}).get(st) or {}).get("refs") or {})]
        for v in chk_vs + first_vs:
            if v not in variants:
                variants.append(v)
        for v in variants or ["-"]:
            rr = refs.get(v, {})
            if v not in refs and name in MODELS:
                only = "(check only) " if refs and v in chk_vs else ("(first call only) " if refs else "")
                rr = {"label": only + ref_label(MODELS[name], v)}

            def ms(x):
                return "%.2f" % x["ms"] if x else "-"

            def ck(dn):
                r = chk.get("%s/%s" % (dn, v), {})
                if "errors" in r:
                    f = r.get("max_fw")
                    b = r.get("max_bw")
                    return "%s/%s" % ("%.0e" % f if f is not None else "-", "%.0e" % b if b is not None else "-")
                if r.get("crashed"):
                    return "crash"
                if r.get("timeout"):
                    return "timeout"
                if str(r.get("error", "")).startswith("import failed"):
                    return "no import"
                return "err" if r.get("error") else "-"

            ratio = rr.get("ratio_fwbw")
            rs = "%.2f" % ratio if ratio else ("fw %.2f" % rr["ratio_fw"] if rr.get("ratio_fw") else "-")
            pk = "%s/%s" % ("%.0f" % (fr["peak_bytes"] / 2**20) if fr.get("peak_bytes") else "-",
                            "%.0f" % (rr["peak_bytes"] / 2**20) if rr.get("peak_bytes") else "-")

            label = rr.get("label") or v
            if rr.get("crashed") and not rr.get("fw"):
                label = "[crashed] " + label
            rows.append((name, label[:LABEL_W], ms(fr.get("fw")), ms(rr.get("fw")), ms(fr.get("fwbw")),
                         ms(rr.get("fwbw")) if rr.get("fwbw") else ("no bw" if rr.get("fwbw_error") else "-"),
                         rs, pk, ck("f32"), ck("bf16"),
                         "%s/%s" % (_first_frnn(fc, "cold"), _first_frnn(fc, "warm")), _first_ref(fc, "cold", v)))
            if v not in refs and refs:  # check-only row: its timings are the row above's
                rows[-1] = rows[-1][:2] + ("",) * 6 + rows[-1][8:10] + (
                    ("", "") if v in chk_vs and v not in first_vs else ("",) + rows[-1][11:])
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    lines = ["  ".join(str(x).ljust(w[i]) for i, x in enumerate(hdr))]
    lines += ["  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)) for r in rows]
    errs = []
    for name, row in results.get("models", {}).items():
        t = row.get("time", {}) or {}
        for who, e in [("frnn", (t.get("frnn") or {}).get("error")), ("time", t.get("error"))] + \
                [("ref " + v, r.get("error")) for v, r in (t.get("refs") or {}).items()]:
            if e:
                errs.append("%s %s: %s" % (name, who, e[:160]))
        for k, r in (row.get("check") or {}).items():
            if isinstance(r, dict) and r.get("error"):
                errs.append("%s check %s: %s" % (name, k, r["error"][:160]))
        for stage, r in (row.get("first") or {}).items():
            if not isinstance(r, dict):
                continue
            if r.get("frnn_error"):
                errs.append("%s first %s frnn: %s" % (name, stage, r["frnn_error"][:160]))
            for v, rr in (r.get("refs") or {}).items():
                if rr.get("ref_error"):
                    errs.append("%s first %s ref %s: %s" % (name, stage, v, rr["ref_error"][:160]))
            if r.get("stderr_tail"):
                errs.append("%s first %s: %s" % (name, stage, r["stderr_tail"][-160:].replace("\n", " | ")))
    return "\n".join(lines), errs


SPREAD_NOISY = 1.2  # median / fastest rep of a timed series above which report() flags it


def noisy_timings(results):
    """The timed series whose median is more than SPREAD_NOISY times its fastest rep (one
    slow rep, the max, moves no median; a median well above the fastest is not steady): a
    ratio built on such a median is uncertain.  The seventeenth session called Mamba-2's
    forward-only criterion met on mamba_ssm's forward at 1.37 ms (reps 0.97-2.60); the next
    session measured 0.56 (reps 0.50-0.73)."""
    lines = []
    for name, row in results.get("models", {}).items():
        t = row.get("time", {}) or {}
        if not isinstance(t, dict):
            continue
        series = [("frnn", t.get("frnn") or {})] + [("ref " + v, r or {}) for v, r in (t.get("refs") or {}).items()]
        for who, r in series:
            for phase in ("fw", "fwbw"):
                x = r.get(phase)
                if not isinstance(x, dict) or not x.get("min_ms") or x.get("max_ms") is None:
                    continue
                if x["ms"] > SPREAD_NOISY * x["min_ms"]:
                    lines.append("%s %s %s: median %.3f ms, reps %.3f-%.3f (%s)" % (
                        name, who, phase, x["ms"], x["min_ms"], x["max_ms"], x.get("reps", "?")))
    return lines


def chart(results, path):
    bars = []
    for name, row in results.get("models", {}).items():
        t = row.get("time", {}) or {}
        for v, rr in (t.get("refs") or {}).items():
            if rr.get("ratio_fwbw"):
                bars.append(("%s (%s)" % (name, v), rr["ratio_fwbw"], "fwbw"))
            elif rr.get("ratio_fw"):
                bars.append(("%s (%s, fw only)" % (name, v), rr["ratio_fw"], "fw"))
    if not bars:
        return None
    legend = {"what": "frnn time / reference time (fw+bw; 'fw only' bars: forward, the reference has no backward)",
              "scale": "log10, x from 0.01 to 100, line at 1.0", "bars_top_to_bottom": [b[0] for b in bars],
              "values": [round(b[1], 4) for b in bars]}
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(9, 0.42 * len(bars) + 1.4))
        ys = list(range(len(bars)))[::-1]
        cols = ["#2a9d48" if b[1] < 1 else "#c0392b" for b in bars]
        ax.barh(ys, [b[1] for b in bars], color=cols, hatch=None)
        for y, b in zip(ys, bars):
            if b[2] == "fw":
                ax.barh([y], [b[1]], color="none", edgecolor="k", hatch="//")
            ax.text(b[1] * 1.05, y, "%.2f" % b[1], va="center", fontsize=8)
        ax.set_yticks(ys)
        ax.set_yticklabels([b[0] for b in bars], fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=1)
        ax.set_xlabel("frnn time / reference time, fw+bw (log; < 1: frnn faster)")
        hdr = results.get("header", {})
        ax.set_title("%s, B=%s T=%s H=%s, bf16" % (hdr.get("card", "?"), *(hdr.get("timing_sizes", {}).get(k, "?")
                                                                             for k in "BTH")), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        legend["drawn_by"] = "matplotlib"
    except Exception as e:
        png_bars(path, bars)
        legend["drawn_by"] = "built-in PNG writer (%s): green bar ratio < 1, red > 1, hatched grey: fw only; " \
                             "black line 1.0, grey lines 0.1 and 10" % short_err(e, 80)
    return legend


def png_bars(path, bars, W=800, bh=18, gap=8):
    H = len(bars) * (bh + gap) + gap
    img = bytearray(b"\xff" * (W * H * 3))
    lo, hi = math.log10(0.01), math.log10(100)
    X = lambda v: int((math.log10(min(max(v, 0.01), 100)) - lo) / (hi - lo) * (W - 1))

    def rect(x0, y0, x1, y1, col):
        for y in range(max(0, y0), min(H, y1)):
            for x in range(max(0, x0), min(W, x1)):
                i = (y * W + x) * 3
                img[i:i + 3] = bytes(col)
    for v in (0.1, 10):
        rect(X(v), 0, X(v) + 1, H, (200, 200, 200))
    x1 = X(1.0)
    for k, (_, v, kind) in enumerate(bars):
        y = gap + k * (bh + gap)
        col = (150, 150, 150) if kind == "fw" else ((42, 157, 72) if v < 1 else (192, 57, 43))
        a, b = sorted((x1, X(v)))
        rect(a, y, max(b, a + 1), y + bh, col)
    rect(x1, 0, x1 + 2, H, (0, 0, 0))
    raw = b"".join(b"\x00" + bytes(img[y * W * 3:(y + 1) * W * 3]) for y in range(H))

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xffffffff)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def report(path):
    try:
        with open(path) as f:
            res = json.load(f)
    except Exception as e:
        print("no results to report (%s)" % short_err(e))
        return
    tab, errs = table(res)
    leg = chart(res, os.path.join(os.path.dirname(path), "fwbw_ratio.png"))
    if leg:
        res["chart"] = leg
        with open(path, "w") as f:
            json.dump(res, f, indent=1, default=str)
    h = res.get("header", {})
    print("== frnn vs references: %s, driver %s, torch %s, triton %s, B/T/H %s, check %s" % (
        h.get("card", "?"), h.get("driver", "?"), h.get("torch", "?"), h.get("triton", "?"),
        "/".join(str(h.get("timing_sizes", {}).get(k, "?")) for k in "BTH"),
        "/".join(str(h.get("check_sizes", {}).get(k, "?")) for k in "BTH")))
    print("times in ms (median); fwbw x = frnn/ref (<1: frnn faster); chk = max rel. error of outputs+final "
          "states / of gradients; 1st = first call cold/warm cache (s)")
    if errs:
        print("errors:")
        for e in errs[:12]:
            print("  " + e[:150])
        if len(errs) > 12:
            print("  ... %d more in results.json" % (len(errs) - 12))
    print(tab)
    noisy = noisy_timings(res)
    if noisy:
        print("noisy (median over %.1fx the fastest rep: ratios on these medians are uncertain):" % SPREAD_NOISY)
        for line in noisy:
            print("  " + line)


# ================================================================== self-test
FLA_NAIVE_FILES = {  # check-only 'naive' variants: fla's PyTorch loops (torch only, no Triton)
    "gla": ("gla/naive.py", "naive_recurrent_gla"),
    "rwkv6": ("rwkv6/recurrent_naive.py", "naive_recurrent_rwkv6"),
    "gated_delta_rule": ("gated_delta_rule/naive.py", "naive_recurrent_gated_delta_rule"),
    "rwkv7": ("generalized_delta_rule/dplr/naive.py", "dplr_recurrence"),
}


def load_fla_naive(names):
    """FRNN_SELFTEST_FLA_NAIVE=1: fla's own naive loops from refs/fla/fla/ops, each file loaded
    alone (importlib; fla's package __init__ needs Triton), put where ref_fn finds them, so
    the 'naive' variants of the self-test run fla's code instead of CpuRefs.  torch < 2.0 has
    no bare @torch.no_grad (recurrent_naive.py's _bwd): shimmed for the import only.
    Returns {model: 'file' or 'load failed: ...'}."""
    import importlib.util
    out = {}
    for name in names:
        if name not in FLA_NAIVE_FILES:
            continue
        rel, fn = FLA_NAIVE_FILES[name]
        path = os.path.join(ROOT, "refs", "fla", "fla", "ops", rel)
        ng = torch.no_grad
        torch.no_grad = lambda f=None: ng()(f) if callable(f) else ng()
        try:
            spec = importlib.util.spec_from_file_location("fla_naive_" + name, path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            _ref_cache[FLA + MODELS[name].naive_fn] = getattr(mod, fn)
            out[name] = rel
        except Exception as e:
            out[name] = "load failed: " + short_err(e, 150)
        finally:
            torch.no_grad = ng
    return out


def selftest_cpu():
    """frnn's float64 reference executor (CPU) against the CpuRefs loops, through the
    same Model code; errors should be ~1e-12.  FRNN_SELFTEST_FLA_NAIVE=1: the 'naive'
    variants run fla's own PyTorch loops from refs/fla (float32 inside: bound 1e-5)."""
    global CPU_TEST
    CPU_TEST = True
    names = env_list("FRNN_BENCH_MODELS", list(MODELS))
    fla_naive = {}
    if os.environ.get("FRNN_SELFTEST_FLA_NAIVE") == "1":
        fla_naive = load_fla_naive(names)
        print("fla naive loops: %s" % (", ".join("%s %s" % kv for kv in fla_naive.items()) or "none"))
    worst = 0.0
    bad = []
    for name in names:
        m = MODELS[name]
        d = m.dims(2, 5, 2)
        d.update(M=3 if name not in ("hgrn", "rwkv4") else 4, N=4 if d["N"] > 1 else 1)
        if "S" in d:
            d["S"] = 3
        for variant, _ in m.check_variants():
            try:
                r = check_model(m, d, torch.float64, torch.device("cpu"), variant)
            except Exception:
                traceback.print_exc()
                bad.append(name)
                continue
            errs = {k: v for k, v in r["errors"].items() if not k.endswith("*")}
            e = max(v if isinstance(v, float) else 1.0 for v in errs.values())
            worst = max(worst, e)
            print("%-16s %-10s max rel err %.2e  (%s)" % (name, variant, e, ", ".join(
                "%s %s" % (k, "%.1e" % v if isinstance(v, float) else v) for k, v in r["errors"].items())))
            real = variant == "naive" and not fla_naive.get(name, "load failed").startswith("load failed")
            if not e < (1e-5 if real else 1e-9):
                bad.append(name)
    print("selftest: worst %.2e; %s" % (worst, "FAILED: " + " ".join(bad) if bad else "all passed"))
    return 1 if bad else 0


_FAKE_PKGS = {
    # stands in for torch._dynamo: its init relies on a side effect of a submodule (eval_frame
    # imports decorators) and is slow; a half-done import leaves eval_frame and decorators in
    # sys.modules, so the next attempt skips that side effect and fails the way fla's calls did
    # on the H100: "partially initialized module 'fakedyn' has no attribute 'decorators'"
    "fakedyn/__init__.py": ("import os, time\nfrom . import eval_frame\n"
                            "time.sleep(float(os.environ.get('FRNN_SELFTEST_SLEEP', '0')))\n"
                            "import fakedyn as _self\ndisable = _self.decorators.disable\n"),
    "fakedyn/eval_frame.py": "from . import decorators  # noqa: F401\n",
    "fakedyn/decorators.py": "def disable(fn):\n    return fn\n",
    "fakefla/__init__.py": "",
    "fakefla/ops.py": "import fakedyn\n\n\n@fakedyn.disable\ndef fused(x):\n    return 2 * x\n",
    "fakebroken.py": ("import os\nos.environ['FRNN_SELFTEST_BROKEN'] = str(int(os.environ.get('FRNN_SELFTEST_BROKEN', '0')) + 1)\n"
                      "raise ImportError('libfake.so: cannot open shared object file')\n"),
}


def selftest_imports():
    """compare.py --selftest-imports (no GPU, a few seconds): a time limit that fires while a
    reference module is imported (fake packages in a temporary folder).  Checks that the
    Alarm waits for the import and later calls work; that a timeout forced inside an import
    (past FRNN_BENCH_IMPORT_GRACE) removes the half-imported modules, so later calls work
    (the old Alarm left 'partially initialized module' errors for every later call); that a
    lazy import inside a library call is covered too; and that preload_refs records a failed
    import per model ('import failed: ...') without importing it again."""
    global CPU_TEST
    saved = CPU_TEST, os.environ.get("FRNN_BENCH_IMPORT_GRACE")
    CPU_TEST = False
    tmp = tempfile.mkdtemp(prefix="frnn-selftest-imports-")
    for rel, text in _FAKE_PKGS.items():
        os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
        with open(os.path.join(tmp, rel), "w") as f:
            f.write(text)
    sys.path.insert(0, tmp)
    bad = []

    def reset():
        for n in [n for n in sys.modules if n.split(".")[0] in ("fakedyn", "fakefla", "fakebroken")]:
            del sys.modules[n]
        for d in (_ref_cache, _ref_fail, REF_IMPORTS):
            for k in [k for k in d if k.split(".")[0] in ("fakedyn", "fakefla", "fakebroken")]:
                del d[k]

    def check(what, ok, detail=""):
        print("%-4s %s%s" % ("ok" if ok else "FAIL", what, ("  (%s)" % detail) if detail else ""), flush=True)
        if not ok:
            bad.append(what)

    def partial():
        return [n for n, mo in list(sys.modules.items()) if n.startswith("fake") and _initializing(mo)]

    def call(limit=None, sleep="0", busy=0.0, lazy=False):
        """(result or None, error or None, seconds): fakefla.ops.fused(21) through ref_fn
        (lazy: a plain import statement inside the call), under Alarm(limit) if given."""
        os.environ["FRNN_SELFTEST_SLEEP"] = sleep
        t0 = time.time()
        try:
            def body():
                if lazy:
                    import fakefla.ops
                    f = fakefla.ops.fused
                else:
                    f = ref_fn("fakefla.ops.fused")
                t1 = time.time()
                while time.time() - t1 < busy:
                    pass
                return f(21)
            if limit:
                with Alarm(limit):
                    r = body()
            else:
                r = body()
            return r, None, time.time() - t0
        except BaseException as e:  # ModelTimeout included
            return None, short_err(e, 200), time.time() - t0

    try:
        # 1. the Alarm fires during a 2 s import: it waits for the import, fires after it
        reset()
        os.environ["FRNN_BENCH_IMPORT_GRACE"] = "60"
        r, e, dt = call(limit=1, sleep="2", busy=1.0)
        check("deferred: limit 1 s, import 2 s, then 1 s of work -> ModelTimeout after the import",
              r is None and e and "ModelTimeout" in e and "late" in e and dt >= 2.0, "%s, %.1f s" % (e, dt))
        check("deferred: the module finished importing", "fakefla.ops" in sys.modules and not partial(),
              "partial: %s" % partial())
        r, e, dt = call()
        check("deferred: a later call works", r == 42, e or "")
        r, e, dt = call(limit=5)
        check("deferred: a later call under a limit works", r == 42, e or "")
        # 2. past the grace the timeout is raised inside the import: the modules are rolled back
        reset()
        os.environ["FRNN_BENCH_IMPORT_GRACE"] = "0.3"
        r, e, dt = call(limit=1, sleep="2")
        check("forced: limit 1 s + grace 0.3 s, import 2 s -> ModelTimeout inside the import",
              r is None and e and "ModelTimeout" in e and dt < 1.9, "%s, %.1f s" % (e, dt))
        left = [n for n in sys.modules if n.split(".")[0] in ("fakedyn", "fakefla")]
        check("forced: no fake module left in sys.modules", not left, "left: %s" % left)
        for k in range(2):
            r, e, dt = call()
            check("forced: later call %d works (no 'partially initialized module')" % (k + 1), r == 42, e or "")
        # 3. the same with the import inside the library call (no ref_fn / guarded_import)
        reset()
        r, e, dt = call(limit=1, sleep="2", lazy=True)
        check("lazy forced: ModelTimeout inside a plain import statement", r is None and e and "ModelTimeout" in e,
              "%s, %.1f s" % (e, dt))
        left = [n for n in sys.modules if n.split(".")[0] in ("fakedyn", "fakefla")]
        check("lazy forced: Alarm rolled back the modules imported under it", not left, "left: %s" % left)
        r, e, dt = call(lazy=True)
        check("lazy forced: a later call works", r == 42, e or "")
        # 4. preload_refs: imports outside any limit, a failed import recorded per model
        reset()
        os.environ["FRNN_SELFTEST_BROKEN"] = "0"

        class _Fake(Model):
            def __init__(self, name, fn):
                self.name, self.fn = name, fn

            def variants(self):
                return [("default", self.fn)]

            def ref_name(self, variant):
                return self.fn

        fakes = [_Fake("fake_ok", "fakefla.ops.fused"), _Fake("fake_bad", "fakebroken.fn")]
        for m in fakes:
            MODELS[m.name] = m
        try:
            os.environ["FRNN_SELFTEST_SLEEP"] = "0.2"
            summ = preload_refs([m.name for m in fakes])
            check("preload: fake_ok imported, timed", "fakefla.ops" in summ.get("modules", {}) and
                  "fakefla.ops.fused" in _ref_cache, str(summ.get("modules", {}).get("fakefla.ops")))
            err = fakes[1].import_error("default")
            check("preload: fake_bad recorded as failed", bool(err) and "libfake.so" in err and
                  "fake_bad" in RESULTS["models"] and "failed" in RESULTS["models"]["fake_bad"]["ref_import"], err)
            try:
                ref_fn("fakebroken.fn")
                e = None
            except Exception as ex:
                e = short_err(ex)
            check("preload: a later call says 'import failed: ...' without importing again",
                  bool(e) and e.startswith("import failed: fakebroken") and
                  os.environ.get("FRNN_SELFTEST_BROKEN") == "1", "%s; imported %s time(s)" % (
                      e, os.environ.get("FRNN_SELFTEST_BROKEN")))
        finally:
            for m in fakes:
                MODELS.pop(m.name, None)
                RESULTS["models"].pop(m.name, None)
    finally:
        reset()
        sys.path.remove(tmp)
        CPU_TEST = saved[0]
        if saved[1] is None:
            os.environ.pop("FRNN_BENCH_IMPORT_GRACE", None)
        else:
            os.environ["FRNN_BENCH_IMPORT_GRACE"] = saved[1]
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    print("selftest-imports: %s" % ("FAILED: %d" % len(bad) if bad else "all passed"))
    return 1 if bad else 0


# ==================================================================== main
def main():
    args = sys.argv[1:]
    if args[:1] == ["--report"]:
        report(args[1] if len(args) > 1 else RESULTS_PATH)
        return 0
    if args[:1] == ["--selftest-cpu"]:
        return selftest_cpu()
    if args[:1] == ["--selftest-imports"]:
        return selftest_imports()
    if args[:1] == ["--first-call"]:
        first_call_child(args[1], args[2])
        return 0
    if args[:1] == ["--isolated"]:
        isolated_child(json.loads(args[1]))
        return 0
    os.makedirs(OUT, exist_ok=True)
    names = [n for n in env_list("FRNN_BENCH_MODELS", list(MODELS)) if n in MODELS]
    phases = env_list("FRNN_BENCH_PHASES", ["time", "check", "first"])
    sizes = env_ints("FRNN_BENCH_SIZES", (8, 1024, 32))
    csizes = env_ints("FRNN_BENCH_CHECK_SIZES", (8, 256, 32))
    RESULTS["header"] = header(sizes, csizes)
    RESULTS["header"]["models"] = names
    RESULTS["header"]["phases"] = phases
    RESULTS["header"]["chunk"] = os.environ.get("FRNN_BENCH_CHUNK") == "1"
    ok, why = frnn.gpu_available()
    RESULTS["header"]["frnn_gpu"] = "ok" if ok else why
    save()
    log("models %s; phases %s; budget %.0f s; frnn gpu: %s" % (",".join(names), ",".join(phases), BUDGET,
                                                              "ok" if ok else why))
    # every reference module the phases need, once, before any time limit (see preload_refs;
    # 'first' runs the references in fresh subprocesses, which import for themselves)
    if {"time", "check"} & set(phases):
        try:
            RESULTS["header"]["ref_imports"] = preload_refs(names)
        except Exception as e:
            RESULTS["header"]["ref_imports"] = {"error": short_err(e)}
            log("reference imports failed: %s" % short_err(e))
        save()
    n_ph = len(phases)
    # deadlines: time gets 55% of what is left, check 55% of the rest, first the remainder
    share = {"time": 0.55, "check": 0.55, "first": 1.0}
    for k, ph in enumerate(phases):
        left = remaining() - 15
        until = time.time() + max(0.0, left * (share.get(ph, 1.0) if k < n_ph - 1 else 1.0))
        try:
            if ph == "time":
                phase_time(names, sizes, until)
            elif ph == "check":
                phase_check(names, csizes, until)
            elif ph == "first":
                phase_first(names, until)
        except (Exception, ModelTimeout) as e:
            log("phase %s failed: %s" % (ph, short_err(e)))
            traceback.print_exc()
        save()
    RESULTS["header"]["elapsed_s"] = time.time() - T_START
    save()
    try:
        leg = chart(RESULTS, os.path.join(OUT, "fwbw_ratio.png"))
        if leg:
            RESULTS["chart"] = leg
            save()
    except Exception as e:
        log("chart failed: %s" % short_err(e))
    if os.environ.get("FRNN_BENCH_NO_TABLE") != "1":
        report(RESULTS_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
