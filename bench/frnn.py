"""ctypes binding to libfrnn.so (include/frnn.h) for PyTorch tensors.

    import frnn
    step = frnn.Step("examples/gla.frnn")          # ports: step.inputs, .states, .outputs
    sz = frnn.Sizes(B, T, H, M, N)
    ws = step.workspace(sz, inputs, for_backward=True)      # torch uint8 CUDA tensor
    step.forward(sz, inputs, states, outputs, final_states, ws)
    step.backward(sz, inputs, states, grad_outputs, grad_final_states,
                  grad_inputs, grad_states, ws)

Tensors are torch tensors in frnn's layout (SPEC section 3): inputs [B,T,H,m,n]
(B, T, H may be 1 = broadcast; stride-0 expanded views and any other
non-negative strides are fine), states [B,H,m,n], outputs [B,T,H,M] or
[B,T,H] (class [1,1]).  CUDA tensors go to frnn_gpu_*, launched on
torch.cuda.current_stream() unless `stream` is given; CPU tensors go to the
float64 reference executor (frnn_reference_*), which is how this binding is
tested on a machine without a GPU.  Any entry of final_states, grad_* may be
None (not written / zero).  Failures raise FrnnError with frnn_ctx_error's text.

FrnnFunction / Step.apply wrap one forward and backward as a torch autograd
function (outputs allocated in `out_dtype`, final states in the initial states' dtype, workspace
allocated through torch so the caching allocator and peak statistics count it).

The library: $FRNN_LIB, else ../build/libfrnn.so next to this file's folder,
else devbin/libfrnn.so.
"""
import ctypes
import os

import torch

FRNN_OK = 0
PORT_INPUT, PORT_STATE, PORT_OUTPUT = 0, 1, 2
SCALAR, COL, ROW, MAT = 0, 1, 2, 3
CLASS_NAMES = {SCALAR: "[1,1]", COL: "[M,1]", ROW: "[1,N]", MAT: "[M,N]"}

kDLCPU, kDLCUDA = 1, 2
kDLFloat, kDLBfloat = 2, 4


class FrnnError(RuntimeError):
    pass


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class Sizes(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("B", "T", "H", "M", "N")]

    def __init__(self, B, T, H, M, N):
        super().__init__(int(B), int(T), int(H), int(M), int(N))

    def __repr__(self):
        return "Sizes(B=%d, T=%d, H=%d, M=%d, N=%d)" % (self.B, self.T, self.H, self.M, self.N)


_DTYPES = {
    torch.float32: (kDLFloat, 32),
    torch.float16: (kDLFloat, 16),
    torch.bfloat16: (kDLBfloat, 16),
    torch.float64: (kDLFloat, 64),
}

_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.POINTER(DLTensor))


def _find_lib():
    env = os.environ.get("FRNN_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "build", "libfrnn.so"),
                 os.path.join(here, "..", "devbin", "libfrnn.so")):
        if os.path.exists(cand):
            return os.path.abspath(cand)
    return os.path.join(here, "..", "build", "libfrnn.so")


_lib = None


def lib():
    """The loaded library (loaded on first use, so importing this module never fails)."""
    global _lib
    if _lib is not None:
        return _lib
    L = ctypes.CDLL(_find_lib())
    i32, i64, sz_t = ctypes.c_int, ctypes.c_int64, ctypes.c_size_t
    sig = {
        "frnn_ctx_create": (i32, [ctypes.POINTER(_P)]),
        "frnn_ctx_destroy": (None, [_P]),
        "frnn_ctx_error": (ctypes.c_char_p, [_P]),
        "frnn_status_name": (ctypes.c_char_p, [i32]),
        "frnn_step_load": (i32, [_P, ctypes.c_char_p, ctypes.POINTER(_P)]),
        "frnn_step_destroy": (None, [_P]),
        "frnn_step_port_count": (i32, [_P, i32]),
        "frnn_step_port_name": (ctypes.c_char_p, [_P, i32, i32]),
        "frnn_step_port_class": (i32, [_P, i32, i32]),
        "frnn_step_name": (ctypes.c_char_p, [_P]),
        "frnn_step_hash": (ctypes.c_uint64, [_P]),
        "frnn_ctx_set_backward_mode": (i32, [_P, i32]),
        "frnn_gpu_available": (i32, [_P]),
        "frnn_gpu_workspace_size": (i32, [_P, _P, Sizes, _PP, i32, ctypes.POINTER(sz_t)]),
        "frnn_gpu_forward": (i32, [_P, _P, Sizes, _PP, _PP, _PP, _PP, _P, sz_t, _P]),
        "frnn_gpu_backward": (i32, [_P, _P, Sizes, _PP, _PP, _PP, _PP, _PP, _PP, _P, sz_t, _P]),
        "frnn_reference_forward": (i32, [_P, _P, Sizes, _PP, _PP, _PP, _PP]),
        "frnn_reference_backward": (i32, [_P, _P, Sizes, _PP, _PP, _PP, _PP, _PP, _PP]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype = res
        f.argtypes = args
    _lib = L
    return L


class Context:
    """One frnn_ctx (not thread-safe: one per thread)."""

    def __init__(self):
        h = _P()
        st = lib().frnn_ctx_create(ctypes.byref(h))
        if st != FRNN_OK:
            raise FrnnError("frnn_ctx_create failed (status %d)" % st)
        self.h = h

    def error(self):
        e = lib().frnn_ctx_error(self.h)
        return e.decode(errors="replace") if e else ""

    def check(self, st, what):
        if st != FRNN_OK:
            name = lib().frnn_status_name(st)
            name = name.decode() if name else str(st)
            raise FrnnError("%s: %s: %s" % (what, name, self.error()))

    def set_backward_mode(self, mode):
        """'fast' (the default) or 'lean': second-level checkpoints, a smaller workspace
        for one more recompute pass (frnn_ctx_set_backward_mode)."""
        modes = {"fast": 0, "lean": 1}
        if mode not in modes:
            raise ValueError("backward mode %r: 'fast' or 'lean'" % (mode,))
        self.check(lib().frnn_ctx_set_backward_mode(self.h, modes[mode]), "frnn_ctx_set_backward_mode")

    def gpu_available(self):
        st = lib().frnn_gpu_available(self.h)
        return st == FRNN_OK, ("" if st == FRNN_OK else self.error())

    def __del__(self):
        try:
            if getattr(self, "h", None) and _lib is not None:
                _lib.frnn_ctx_destroy(self.h)
                self.h = None
        except Exception:
            pass


_default_ctx = None


def default_context():
    global _default_ctx
    if _default_ctx is None:
        _default_ctx = Context()
    return _default_ctx


# ----------------------------------------------------------------- tensors
class _Pack:
    """DLTensor structs for a list of torch tensors (or None), kept alive with
    their shape and stride arrays while a call uses them."""

    def __init__(self, tensors, what):
        self.tensors = list(tensors) if tensors is not None else None
        self.keep = []
        if self.tensors is None:
            self.arr = None
            return
        n = len(self.tensors)
        self.arr = (ctypes.POINTER(DLTensor) * max(n, 1))()
        for i, t in enumerate(self.tensors):
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError("%s[%d]: expected a torch tensor, got %r" % (what, i, type(t)))
            if t.dtype not in _DTYPES:
                raise TypeError("%s[%d]: dtype %s not supported" % (what, i, t.dtype))
            code, bits = _DTYPES[t.dtype]
            nd = t.dim()
            shape = (ctypes.c_int64 * max(nd, 1))(*t.shape)
            strides = (ctypes.c_int64 * max(nd, 1))(*t.stride())
            if t.is_cuda:
                dev = DLDevice(kDLCUDA, t.device.index if t.device.index is not None else 0)
            elif t.device.type == "cpu":
                dev = DLDevice(kDLCPU, 0)
            else:
                raise TypeError("%s[%d]: device %s not supported" % (what, i, t.device))
            dl = DLTensor(ctypes.c_void_p(t.data_ptr()), dev, nd, DLDataType(code, bits, 1),
                          shape, strides, 0)
            self.keep += [shape, strides, dl, t]
            self.arr[i] = ctypes.pointer(dl)

    @property
    def ptr(self):
        if self.arr is None:
            return None
        return ctypes.cast(self.arr, _PP)


def _stream_ptr(stream, tensors):
    if stream is None:
        dev = next((t.device for t in tensors if t is not None and t.is_cuda), None)
        return ctypes.c_void_p(torch.cuda.current_stream(dev).cuda_stream)
    if isinstance(stream, int):
        return ctypes.c_void_p(stream)
    return ctypes.c_void_p(stream.cuda_stream)  # a torch.cuda.Stream


def _data(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None and t.numel() > 0 else None


def _nbytes(t):
    return t.numel() * t.element_size() if t is not None else 0


# ------------------------------------------------------------------- step
class Port:
    def __init__(self, name, cls):
        self.name, self.cls = name, cls

    @property
    def has_m(self):
        return bool(self.cls & 1)

    @property
    def has_n(self):
        return bool(self.cls & 2)

    def __repr__(self):
        return "%s%s" % (self.name, CLASS_NAMES.get(self.cls, "?"))


class Step:
    """A loaded step (frnn_step_load) with its signature."""

    def __init__(self, path, ctx=None):
        self.ctx = ctx or default_context()
        self.path = str(path)
        h = _P()
        self.ctx.check(lib().frnn_step_load(self.ctx.h, self.path.encode(), ctypes.byref(h)),
                       "frnn_step_load(%s)" % self.path)
        self.h = h
        L = lib()
        self.name = L.frnn_step_name(h).decode()
        self.hash = L.frnn_step_hash(h)

        def ports(kind):
            n = L.frnn_step_port_count(h, kind)
            return [Port(L.frnn_step_port_name(h, kind, i).decode(), L.frnn_step_port_class(h, kind, i))
                    for i in range(n)]

        self.inputs, self.states, self.outputs = ports(PORT_INPUT), ports(PORT_STATE), ports(PORT_OUTPUT)

    def __del__(self):
        try:
            if getattr(self, "h", None) and _lib is not None:
                _lib.frnn_step_destroy(self.h)
                self.h = None
        except Exception:
            pass

    def __repr__(self):
        return "Step(%s: %s; %s -> %s)" % (self.name, self.inputs, self.states, self.outputs)

    # shapes
    @staticmethod
    def input_shape(port, sz, B=None, T=None, H=None):
        return (sz.B if B is None else B, sz.T if T is None else T, sz.H if H is None else H,
                sz.M if port.has_m else 1, sz.N if port.has_n else 1)

    @staticmethod
    def state_shape(port, sz):
        return (sz.B, sz.H, sz.M if port.has_m else 1, sz.N if port.has_n else 1)

    @staticmethod
    def output_shape(port, sz):
        return (sz.B, sz.T, sz.H, sz.M) if port.has_m else (sz.B, sz.T, sz.H)

    def _counts(self, inputs, states):
        if len(inputs) != len(self.inputs):
            raise FrnnError("%s: %d inputs given, the step has %d (%s)" % (self.name, len(inputs), len(self.inputs), self.inputs))
        if len(states) != len(self.states):
            raise FrnnError("%s: %d states given, the step has %d (%s)" % (self.name, len(states), len(self.states), self.states))

    # calls
    def workspace_size(self, sz, inputs=None, for_backward=True):
        pin = _Pack(inputs, "inputs") if inputs is not None else None
        n = ctypes.c_size_t(0)
        self.ctx.check(lib().frnn_gpu_workspace_size(self.ctx.h, self.h, sz, pin.ptr if pin else None,
                                                     1 if for_backward else 0, ctypes.byref(n)),
                       "frnn_gpu_workspace_size(%s)" % self.name)
        return n.value

    def workspace(self, sz, inputs=None, for_backward=True, device=None):
        """A torch uint8 tensor of frnn_gpu_workspace_size bytes, or None when that is 0
        (a forward with no backward to follow takes none, or a guarded step's flag alone;
        a larger one asks it to store checkpoints, and one too small for them is an error)."""
        n = self.workspace_size(sz, inputs, for_backward)
        if n == 0:
            return None
        if device is None:
            device = next((t.device for t in (inputs or []) if t is not None), torch.device("cuda"))
        return torch.empty(n, dtype=torch.uint8, device=device)

    def forward(self, sz, inputs, states, outputs, final_states=None, workspace=None, stream=None):
        self._counts(inputs, states)
        pin, pst = _Pack(inputs, "inputs"), _Pack(states, "states")
        pout = _Pack(outputs, "outputs")
        pfin = _Pack(final_states, "final_states") if final_states is not None else None
        if inputs and inputs[0] is not None and not inputs[0].is_cuda:
            st = lib().frnn_reference_forward(self.ctx.h, self.h, sz, pin.ptr, pst.ptr, pout.ptr,
                                              pfin.ptr if pfin else None)
            self.ctx.check(st, "frnn_reference_forward(%s)" % self.name)
            return
        ws = workspace
        st = lib().frnn_gpu_forward(self.ctx.h, self.h, sz, pin.ptr, pst.ptr, pout.ptr,
                                    pfin.ptr if pfin else None, _data(ws), _nbytes(ws),
                                    _stream_ptr(stream, list(inputs) + list(states)))
        self.ctx.check(st, "frnn_gpu_forward(%s)" % self.name)

    def backward(self, sz, inputs, states, grad_outputs, grad_final_states, grad_inputs, grad_states,
                 workspace=None, stream=None):
        self._counts(inputs, states)
        pin, pst = _Pack(inputs, "inputs"), _Pack(states, "states")
        pgo = _Pack(grad_outputs, "grad_outputs") if grad_outputs is not None else None
        pgf = _Pack(grad_final_states, "grad_final_states") if grad_final_states is not None else None
        pgi = _Pack(grad_inputs, "grad_inputs") if grad_inputs is not None else None
        pgs = _Pack(grad_states, "grad_states") if grad_states is not None else None
        P = lambda p: p.ptr if p is not None else None
        if inputs and inputs[0] is not None and not inputs[0].is_cuda:
            st = lib().frnn_reference_backward(self.ctx.h, self.h, sz, pin.ptr, pst.ptr, P(pgo), P(pgf),
                                               P(pgi), P(pgs))
            self.ctx.check(st, "frnn_reference_backward(%s)" % self.name)
            return
        ws = workspace
        st = lib().frnn_gpu_backward(self.ctx.h, self.h, sz, pin.ptr, pst.ptr, P(pgo), P(pgf), P(pgi), P(pgs),
                                     _data(ws), _nbytes(ws), _stream_ptr(stream, list(inputs) + list(states)))
        self.ctx.check(st, "frnn_gpu_backward(%s)" % self.name)

    # convenience: allocate and run
    def run_forward(self, sz, inputs, states, out_dtype=None, want_final=True, for_backward=False,
                    workspace=None):
        """Allocates outputs (out_dtype, default the first input's dtype) and
        final states (each its initial state's dtype: float32 on the GPU);
        returns (outputs, final_states, workspace)."""
        ref = next(t for t in inputs if t is not None)
        dt = out_dtype or ref.dtype
        outs = [torch.empty(self.output_shape(p, sz), dtype=dt, device=ref.device) for p in self.outputs]
        fins = ([torch.empty(self.state_shape(p, sz), dtype=st.dtype, device=ref.device)
                 for p, st in zip(self.states, states)] if want_final else None)
        ws = workspace
        if ws is None and ref.is_cuda:
            ws = self.workspace(sz, inputs, for_backward, device=ref.device)
        self.forward(sz, inputs, states, outs, fins, ws)
        return outs, fins, ws

    def run_backward(self, sz, inputs, states, grad_outputs, grad_final_states, workspace,
                     need_inputs=None, need_states=None):
        """Allocates and returns (grad_inputs, grad_states); an entry is None
        where need_inputs[i] / need_states[i] is false."""
        # Each gradient in its input's layout (a dense input's strides, e.g. a
        # permuted view with T innermost, else contiguous): autograd then hands
        # the leaf behind a view its gradient without a transposing copy.  H100,
        # compare.py (twenty-fourth session): S4D 4.08 -> 3.90 ms, but Longhorn
        # 10.2 -> 10.7 (not profiled; perhaps its [1,N] inputs' gradients, summed
        # over heads, written with T innermost).  FRNN_PY_GRAD_LAYOUT=contiguous:
        # the old allocation.
        if os.environ.get("FRNN_PY_GRAD_LAYOUT") == "contiguous":
            alloc = lambda t: torch.empty(t.shape, dtype=t.dtype, device=t.device)
        else:
            alloc = lambda t: torch.empty_like(t, memory_format=torch.preserve_format)
        gi = [alloc(t) if (need_inputs is None or need_inputs[i]) else None for i, t in enumerate(inputs)]
        gs = [torch.empty(t.shape, dtype=t.dtype, device=t.device)
              if (need_states is None or need_states[i]) else None for i, t in enumerate(states)]
        self.backward(sz, inputs, states, grad_outputs, grad_final_states, gi, gs, workspace)
        return gi, gs

    def apply(self, sz, inputs, states, out_dtype=None):
        """Differentiable call: returns outputs + final states (a tuple)."""
        return FrnnFunction.apply(self, sz, out_dtype, len(inputs), *inputs, *states)


class FrnnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, step, sz, out_dtype, n_in, *tensors):
        inputs, states = list(tensors[:n_in]), list(tensors[n_in:])
        need_bw = any(ctx.needs_input_grad[4:])
        outs, fins, ws = step.run_forward(sz, inputs, states, out_dtype=out_dtype, want_final=True,
                                          for_backward=bool(need_bw))
        ctx.step, ctx.sz, ctx.n_in, ctx.ws = step, sz, n_in, ws
        ctx.save_for_backward(*tensors)
        ctx.n_out = len(outs)
        return tuple(outs) + tuple(fins)

    @staticmethod
    def backward(ctx, *grads):
        tensors = ctx.saved_tensors
        n_in = ctx.n_in
        inputs, states = list(tensors[:n_in]), list(tensors[n_in:])
        gouts, gfins = list(grads[:ctx.n_out]), list(grads[ctx.n_out:])
        need = ctx.needs_input_grad[4:]
        gi, gs = ctx.step.run_backward(ctx.sz, inputs, states, gouts, gfins, ctx.ws,
                                       need_inputs=need[:n_in], need_states=need[n_in:])
        ctx.ws = None
        return (None, None, None, None) + tuple(gi) + tuple(gs)


def gpu_available():
    return default_context().gpu_available()
