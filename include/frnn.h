/* frnn.h - the one public header of frnn.
 *
 * frnn compiles a few lines describing one step of a linear recurrence into
 * kernels for the whole sequence, forward and backward.  Contract: SPEC.md.
 *
 * Conventions
 * - Every function that can fail returns an frnn_status; FRNN_OK is 0.  On
 *   failure the context keeps a message saying what was wrong and where
 *   (frnn_ctx_error); the library never exits and never prints.
 * - Objects are opaque; each *_create / *_parse has a matching *_destroy.
 *   Strings handed to the caller are freed with frnn_free.
 * - A context is not thread-safe: use one per thread.  Steps may be shared
 *   read-only between threads once finished.
 */
#ifndef FRNN_H
#define FRNN_H

#include <dlpack/dlpack.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* The library is built with hidden visibility; what this header declares is
 * its exported interface. */
#pragma GCC visibility push(default)

#define FRNN_VERSION_STRING "0.1.0"

typedef enum frnn_status {
  FRNN_OK = 0,
  FRNN_E_ARG,         /* a bad argument: null pointer, bad tensor, bad size   */
  FRNN_E_SYNTAX,      /* step text: lexical or syntactic error                */
  FRNN_E_NAME,        /* unknown or duplicate name                            */
  FRNN_E_SHAPE,       /* shape-class clash                                    */
  FRNN_E_STEP,        /* incomplete step: unbound output, unassigned state... */
  FRNN_E_NOMEM,       /* allocation failed                                    */
  FRNN_E_IO,          /* file could not be read or written                    */
  FRNN_E_NO_GPU,      /* no CUDA driver or device                             */
  FRNN_E_CUDA,        /* the CUDA driver reported an error                    */
  FRNN_E_LLVM,        /* LLVM rejected or failed to compile a module          */
  FRNN_E_UNSUPPORTED, /* valid request that this version cannot do            */
} frnn_status;

/* Shape classes over the per-head M x N state.  Bit 0: has the M (row index)
 * dimension, bit 1: has the N (column index) dimension. */
typedef enum frnn_class {
  FRNN_SCALAR = 0, /* [1,1] */
  FRNN_COL = 1,    /* [M,1] */
  FRNN_ROW = 2,    /* [1,N] */
  FRNN_MAT = 3,    /* [M,N] */
} frnn_class;

/* Operations of a step graph (SPEC section 2).  FRNN_OP_SUM reduces over the
 * last (N) dimension, FRNN_OP_SUM_M over the first (M); both keep the
 * dimension (as size 1).  FRNN_OP_POW takes a constant exponent as its second
 * operand.  Comparisons yield 1.0 or 0.0; WHERE(c,a,b) is a where c != 0.
 * BCAST(a,b) is a, broadcast to the class of a and b together (the adjoint
 * uses it to spread the gradient of a sum back over the summed dimension). */
typedef enum frnn_op {
  FRNN_OP_INPUT, FRNN_OP_STATE, FRNN_OP_CONST, /* leaves (not for frnn_op) */
  FRNN_OP_ADD, FRNN_OP_SUB, FRNN_OP_MUL, FRNN_OP_DIV, FRNN_OP_NEG,
  FRNN_OP_EXP, FRNN_OP_LOG, FRNN_OP_SQRT, FRNN_OP_RSQRT, FRNN_OP_ABS,
  FRNN_OP_TANH, FRNN_OP_SIGMOID, FRNN_OP_SOFTPLUS, FRNN_OP_SILU,
  FRNN_OP_LT, FRNN_OP_GT, FRNN_OP_LE, FRNN_OP_GE,
  FRNN_OP_MAX, FRNN_OP_MIN, FRNN_OP_POW, FRNN_OP_WHERE,
  FRNN_OP_SUM, FRNN_OP_SUM_M, FRNN_OP_BCAST,
  FRNN_OP_COUNT
} frnn_op;

/* ---------------------------------------------------------------- context */
typedef struct frnn_ctx frnn_ctx;

frnn_status frnn_ctx_create(frnn_ctx **out);
void frnn_ctx_destroy(frnn_ctx *ctx);
/* The message of the last failure ("" if none).  Valid until the next call
 * on this context.  For step text: "file:line:col: message\n<line>\n   ^". */
const char *frnn_ctx_error(const frnn_ctx *ctx);
/* Where the last failure was in step text (line, col from 1; 0 if none). */
void frnn_ctx_error_location(const frnn_ctx *ctx, int *line, int *col);
frnn_status frnn_ctx_last_status(const frnn_ctx *ctx);
const char *frnn_status_name(frnn_status s);
void frnn_free(void *p);

/* ------------------------------------------------------------- step graph */
typedef struct frnn_step frnn_step;
typedef uint32_t frnn_value; /* a node of a step under construction */

/* Builder.  A step is built by declaring inputs and states (each returns the
 * value that stands for it: a state's value is its previous value), applying
 * operations, assigning each state its next value and binding each output.
 * Every call validates and fails with a message naming the node. */
frnn_status frnn_step_create(frnn_ctx *ctx, const char *name, frnn_step **out);
void frnn_step_destroy(frnn_step *step);
frnn_status frnn_step_input(frnn_step *s, const char *name, frnn_class c, frnn_value *out);
frnn_status frnn_step_state(frnn_step *s, const char *name, frnn_class c, frnn_value *out);
frnn_status frnn_step_const(frnn_step *s, double v, frnn_value *out);
frnn_status frnn_step_apply(frnn_step *s, frnn_op op, const frnn_value *args, int n_args,
                            frnn_value *out);
/* Next value of the state called `name` (may be called again to rebind). */
frnn_status frnn_step_assign(frnn_step *s, const char *name, frnn_value v);
/* Declare an output (class FRNN_COL or FRNN_SCALAR) and bind it. */
frnn_status frnn_step_output(frnn_step *s, const char *name, frnn_class c, frnn_value v);
/* Validate (every state assigned, at least one state and one output),
 * simplify (fold constants, share common subexpressions, drop dead code) and
 * put the graph in canonical form.  No builder call is allowed afterwards. */
frnn_status frnn_step_finish(frnn_step *s);

frnn_value frnn_value_class(const frnn_step *s, frnn_value v); /* frnn_class */

/* Step text (SPEC section 2).  `filename` is used in messages only. */
frnn_status frnn_step_parse(frnn_ctx *ctx, const char *filename, const char *text,
                            frnn_step **out);
frnn_status frnn_step_load(frnn_ctx *ctx, const char *path, frnn_step **out);
/* Text of a finished step; parsing it gives a step with the same hash.
 * Free with frnn_free. */
frnn_status frnn_step_print(const frnn_step *s, char **out);

/* Canonical hash: same step, same hash, on any machine and any run. */
uint64_t frnn_step_hash(const frnn_step *s);
const char *frnn_step_name(const frnn_step *s);

/* Signature: ports of each kind in declaration order. */
typedef enum frnn_port_kind { FRNN_PORT_INPUT, FRNN_PORT_STATE, FRNN_PORT_OUTPUT } frnn_port_kind;
int frnn_step_port_count(const frnn_step *s, frnn_port_kind kind);
const char *frnn_step_port_name(const frnn_step *s, frnn_port_kind kind, int i);
frnn_class frnn_step_port_class(const frnn_step *s, frnn_port_kind kind, int i);
int frnn_step_node_count(const frnn_step *s);

/* Reverse-mode derivative of one step, itself a finished step graph with no
 * states.  Inputs: the step's inputs, its states (previous values), then the
 * gradients of its outputs ("grad_<y>") and of its next states
 * ("grad_next_<S>").  Outputs: gradients of the inputs ("grad_<x>") and of
 * the previous states ("grad_<S>"), each of its port's class. */
frnn_status frnn_step_adjoint(const frnn_step *s, frnn_step **out);

/* -------------------------------------------------- running over sequences */
/* Sizes of one call.  Inputs are [B,T,H,m,n] (each of B,T,H may be 1 and is
 * then broadcast; (m,n) from the class), states [B,H,m,n], outputs
 * [B,T,H,M] (class [M,1]) or [B,T,H] / [B,T,H,1] (class [1,1]).
 * Strides in elements (DLPack), any non-negative value, 0 for expanded dims. */
typedef struct frnn_sizes {
  int64_t B, T, H, M, N;
} frnn_sizes;

/* The float64 reference executor ("naive"): host tensors (kDLCPU) of
 * float32, bfloat16, float16 or float64, arithmetic in float64.
 * Arrays are in signature order; final_states may be NULL (not written). */
frnn_status frnn_reference_forward(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz,
                                   const DLTensor *const *inputs,
                                   const DLTensor *const *states,
                                   DLTensor *const *outputs, DLTensor *const *final_states);
/* Backward through time.  grad_outputs / grad_final_states: gradients of the
 * outputs and final states (the array or any entry may be NULL: zero).
 * grad_inputs / grad_states: where the gradients of the inputs and initial
 * states go (the array or any entry may be NULL: not wanted).  The gradient
 * of a broadcast input has the input's shape and is summed over its
 * broadcast dimensions. */
frnn_status frnn_reference_backward(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz,
                                    const DLTensor *const *inputs,
                                    const DLTensor *const *states,
                                    const DLTensor *const *grad_outputs,
                                    const DLTensor *const *grad_final_states,
                                    DLTensor *const *grad_inputs, DLTensor *const *grad_states);

/* ------------------------------------------------------------------- GPU */
/* Code generation options (frnn-dump-ptx, and the target of GPU calls). */
typedef struct frnn_codegen_options {
  int64_t M, N;          /* state size the kernels are specialised for */
  DLDataType dtype;      /* dtype of every input/output tensor (states: float32) */
  const char *arch;      /* "sm_90" (default when NULL); sm_80 ... sm_90a */
  int emit_llvm;         /* nonzero: LLVM IR text instead of PTX */
  const char *kernel;    /* NULL: every kernel; else only the one of this name */
  const char *after_pass;/* NULL; else print the step graph after this pass
                            ("parse", "simplify", "adjoint"), or "affine": which
                            states update affinely, and with which factors, or
                            "chunk": the terms of its chunked form */
  int accurate_math;     /* nonzero: libdevice expf/logf/tanhf instead of the
                            approximate PTX instructions (GPU calls: set
                            FRNN_MATH=accurate) */
  const char *broadcast; /* NULL: every input varies over B, T and H; else the
                            kernels a call builds whose named inputs are
                            broadcast (size 1) over the listed dimensions:
                            "NAME:DIMS,..." with DIMS letters of B, T, H, e.g.
                            "A:BT,D:BTH" (a time-invariant input's gradient is
                            summed over T in registers) */
} frnn_codegen_options;

/* One module holding every kernel of the step, forward and backward, as PTX
 * (or LLVM IR).  Works without a GPU.  Free *out with frnn_free. */
frnn_status frnn_compile_ptx(frnn_ctx *ctx, const frnn_step *step,
                             const frnn_codegen_options *opt, char **out);

/* What this context's GPU calls cost in preparation, summed since it was
 * created: compilations (graph -> PTX), driver links (PTX -> cubin), module
 * loads, and how the caches answered.  Times in milliseconds (wall). */
typedef struct frnn_compile_stats {
  int modules;          /* modules loaded */
  int compiled;         /* of which compiled here (on-disk cache missed) */
  int ptx_cache_hits;   /* PTX found in the on-disk cache, cubin not */
  int cubin_cache_hits; /* driver cubin found in the on-disk cache */
  double compile_ms, link_ms, load_ms;
} frnn_compile_stats;
frnn_status frnn_ctx_compile_stats(const frnn_ctx *ctx, frnn_compile_stats *out);

/* What the backward keeps between the forward and itself.  The recurrent
 * kernels: FRNN_BACKWARD_FAST (the default) keeps state checkpoints every
 * sqrt(T) steps, each chunk recomputed once; FRNN_BACKWARD_LEAN adds a
 * second level every 8 steps inside each chunk: a smaller workspace for one
 * more recompute pass (H100, the delta rule on the recurrent kernels, B=8
 * T=1024 H=32 128x128 bf16: peak 1.68 -> 1.13 GB, fw+bw about 40% slower).
 * The chunked kernels: FAST keeps every chunk's first state; LEAN keeps
 * every 4th, and the backward recomputes the others (the forward again,
 * without outputs) a window of 4 chunks at a time, each window's terms'
 * gradients in a window-sized array (H100, B=8 T=1024 H=32 128x128 bf16,
 * fw+bw and peak: the delta rule 7.37 ms, 2.52 GB -> 10.24 ms, 1.03 GB;
 * Mamba-2 4.07 ms, 1.44 GB -> 5.49 ms, 0.66 GB; GLA 3.75 ms, 1.83 GB ->
 * 5.06 ms, 1.04 GB).  Applies to this context's later GPU calls and
 * workspace queries; the environment variables FRNN_BWD_C2 (steps between
 * second-level checkpoints) and FRNN_CK_CKPT_EVERY (chunks between stored
 * states) override it. */
typedef enum frnn_backward_mode { FRNN_BACKWARD_FAST = 0, FRNN_BACKWARD_LEAN = 1 } frnn_backward_mode;
frnn_status frnn_ctx_set_backward_mode(frnn_ctx *ctx, frnn_backward_mode mode);

/* FRNN_OK when a CUDA driver and device are usable, else FRNN_E_NO_GPU with
 * the reason in the context. */
frnn_status frnn_gpu_available(frnn_ctx *ctx);

/* Bytes of device workspace that frnn_gpu_forward and frnn_gpu_backward
 * need for these sizes.  for_backward: room for the state checkpoints that
 * the backward reads, its recomputed states, and partial gradients of
 * inputs broadcast over B or H (whose shapes `inputs` gives; NULL: assume
 * the worst).  Without it the forward stores nothing: 0 bytes, or 256 for
 * a step whose decay has a factor that is not an exp (retention's gamma):
 * its chunked kernels are guarded, and the forward flags there whether a
 * factor was too small for them (below 1/2, or not a number), in which
 * case the recurrent kernels run the call.  Such a step's forward given no
 * workspace runs on the recurrent kernels. */
frnn_status frnn_gpu_workspace_size(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz,
                                    const DLTensor *const *inputs, int for_backward,
                                    size_t *bytes);

/* Forward over the sequence on the GPU: device tensors (kDLCUDA), launched on
 * `stream` (a CUstream; NULL = the default stream).  No allocation, no
 * synchronisation.  workspace: device memory of frnn_gpu_workspace_size
 * bytes (for_backward when a backward will follow), 16-byte aligned (as
 * cuMemAlloc's and PyTorch's allocations are; else FRNN_E_ARG).  The first call for a
 * new specialisation compiles (or loads from the on-disk cache).  Final
 * states must not be the memory of the initial states (no in-place update
 * on the GPU; the reference executor allows it). */
frnn_status frnn_gpu_forward(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz,
                             const DLTensor *const *inputs, const DLTensor *const *states,
                             DLTensor *const *outputs, DLTensor *const *final_states,
                             void *workspace, size_t workspace_bytes, void *stream);

/* Backward on the GPU, after frnn_gpu_forward with the same inputs, states
 * and workspace (for_backward).  Arguments as frnn_reference_backward. */
frnn_status frnn_gpu_backward(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz,
                              const DLTensor *const *inputs, const DLTensor *const *states,
                              const DLTensor *const *grad_outputs,
                              const DLTensor *const *grad_final_states,
                              DLTensor *const *grad_inputs, DLTensor *const *grad_states,
                              void *workspace, size_t workspace_bytes, void *stream);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
