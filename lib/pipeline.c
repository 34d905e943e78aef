/* pipeline.c - the stages in order, and the public GPU entry points.
 *
 *   step graph -> adjoint (adjoint.c) -> plan (plan.c) -> LLVM IR
 *   (lower_llvm.c) -> PTX (codegen.c) -> on-disk cache (cache.c) -> cubin
 *   made by the driver, cached too -> module (cuda.c) -> launches.
 *
 * A GPU call validates its tensors, names its specialisation (dtypes and
 * broadcast pattern) in a short key, finds the loaded module for that key in
 * the context (compiling or reading the cache the first time) and launches
 * on the caller's stream: no allocation, no synchronisation, no host work
 * proportional to T. */
#include "frnn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Other backwards are tried where the plan's kernel needs this much local
 * memory (spills) a thread, until one needs less than the second
 * (get_module). */
enum { PICK_MIN_LOCAL_BYTES = 128, PICK_GOOD_LOCAL_BYTES = 160 };

/* Distinguishes builds of frnn in the on-disk cache (see get_module). */
#define FRNN_BUILD_STAMP FRNN_VERSION_STRING " " __DATE__ " " __TIME__

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* GPU calls take their math mode from FRNN_MATH ("accurate" or default). */
static bool accurate_from_env(void) {
  const char *m = getenv("FRNN_MATH");
  return m && strcmp(m, "accurate") == 0;
}

frnn_status frnn_ctx_compile_stats(const frnn_ctx *ctx, frnn_compile_stats *out) {
  if (!ctx || !out) return FRNN_E_ARG;
  *out = ctx->stats;
  return FRNN_OK;
}

typedef struct gpu_module {
  char key[1024];       /* the specialisation: sizes, dtypes, layouts, tuning */
  uint64_t graph_hash; /* of the step compiled */
  CUcontext cu_ctx;
  CUmodule mod;
  CUfunction fn[6]; /* fwd, bwd, reduce f32, bf16, f16 (as built); chunked: frnn_ck_fwd,
                       frnn_ck_bwd, the reduces, frnn_ck_chain */
  plan p;
  const struct ck_entry *ck; /* the chunked kernels' form and plan, or NULL: recurrent */
  struct gpu_module *next;
} gpu_module;

/* Whether a step (by hash, for M x N) runs on the chunked kernels, decided
 * once per context: the form, its term prologue's adjoint and the plan. */
typedef struct ck_entry {
  uint64_t graph_hash;
  int64_t M, N;
  int mode;      /* the context's backward mode (lean: fused) */
  char arch[16]; /* the target (its shared memory sizes the plan) */
  bool ok;
  chunk_gpu g;
  ck_plan p;
  char why[512]; /* !ok: why not */
  struct ck_entry *next;
} ck_entry;

static const char *const kernel_names[5] = {"frnn_fwd", "frnn_bwd", "frnn_reduce_f32",
                                            "frnn_reduce_bf16", "frnn_reduce_f16"};

void pipeline_release(frnn_ctx *ctx) {
  for (ck_entry *c = ctx->chunked, *next; c; c = next) {
    next = c->next;
    chunk_gpu_free(&c->g);
    free(c);
  }
  ctx->chunked = NULL;
  for (gpu_module *m = ctx->modules, *next; m; m = next) {
    next = m->next;
    cuda_module_unload(m->mod);
    free(m);
  }
  ctx->modules = NULL;
}

/* The GPU target of loaded modules: FRNN_ARCH, else sm_90. */
static const char *gpu_arch(void) {
  const char *arch = getenv("FRNN_ARCH");
  return arch && *arch ? arch : "sm_90";
}

/* The tuning knobs read from the environment (plan.c, lower_llvm.c) and the
 * context's backward mode change the kernels: each is part of the module key. */
static int append_tuning(const frnn_ctx *ctx, char *key, size_t cap, int k) {
  static const char *const knobs[] = {"FRNN_LPR", "FRNN_BWD_BUDGET", "FRNN_BWD_WARPS",
                                      "FRNN_BWD_CLUSTER", "FRNN_BWD_XCHG_STEPS", "FRNN_PREFETCH", "FRNN_PREFETCH_DEPTH", "FRNN_BWD_MAXWARPS",
                                      "FRNN_BWD_C2", "FRNN_BWD_C", "FRNN_BWD_SMEM", "FRNN_BWD_SMEM_BLOCKS", "FRNN_BWD_APART", "FRNN_BWD_CARRY", "FRNN_PRED_STORES", "FRNN_DIV", "FRNN_CHAINS", "FRNN_BWD_MINB", "FRNN_BWD_PICK", "FRNN_BWD_ROLES", "FRNN_BWD_ROLES_MINB", "FRNN_ROWS_VEC", "FRNN_PREFETCH_FIRST",
                                      "FRNN_CHUNKED", "FRNN_CK_L", "FRNN_CK_BM", "FRNN_CK_THREADS", "FRNN_CK_MINB", "FRNN_CK_SKIP",
                                      "FRNN_CK_SPLIT_MAX", "FRNN_CK_FUSE", "FRNN_CK_SPLITK",
                                      "FRNN_CK_MMA", "FRNN_CK_MMA_TILES", "FRNN_CK_MMA_UNROLL", "FRNN_CK_SPREAD",
                                      "FRNN_CK_TF32", "FRNN_CK_F64", "FRNN_CK_CHAIN_MINB",
                                      "FRNN_CK_SUM_PARTS", "FRNN_CK_RUN_SUM", "FRNN_CK_TF32X3_SITES",
                                      "FRNN_CK_THREADS_FWD", "FRNN_CK_BW_PAIRS", "FRNN_CK_UNROLL_LOADS", "FRNN_CK_EARLY_LOADS",
                                      "FRNN_CK_CKPT_GROUP", "FRNN_CK_CVT", "FRNN_CK_MMA_BIG", "FRNN_CK_STATE_WAIT",
                                      "FRNN_CK_WIDE_COPIES", "FRNN_CK_PRODUCTS", "FRNN_CK_CHAIN_UNROLL", "FRNN_CK_MERGE", "FRNN_CK_STACK", "FRNN_CK_LD_CHAIN"};
  for (size_t i = 0; i < sizeof knobs / sizeof *knobs; i++) {
    const char *v = getenv(knobs[i]);
    if (v && *v && k >= 0 && (size_t)k < cap) k += snprintf(key + k, cap - (size_t)k, " %s=%.16s", knobs[i] + 5, v);
  }
  if (accurate_from_env() && k >= 0 && (size_t)k < cap) k += snprintf(key + k, cap - (size_t)k, " accurate");
  if (ctx->backward_mode != FRNN_BACKWARD_FAST && k >= 0 && (size_t)k < cap)
    k += snprintf(key + k, cap - (size_t)k, " backward=%d", ctx->backward_mode);
  return k;
}

/* The plan for `arch` (its compute capability decides whether clusters may
 * split the backward). */
static frnn_status make_plan(frnn_ctx *ctx, const frnn_step *s, int64_t M, int64_t N,
                             const char *arch, plan *p) {
  target t;
  frnn_status st = target_parse(ctx, arch, &t);
  return st ? st : plan_make(ctx, s, NULL, M, N, &t, p);
}

/* ------------------------------------------------------------ compiling */
static frnn_status compile(frnn_ctx *ctx, const frnn_step *s, const plan *p, const lower_spec *spec,
                           unsigned kernels, const char *arch, bool accurate, int emit_llvm,
                           char **out) {
  frnn_step *adj = NULL;
  frnn_status st = FRNN_OK;
  if (kernels & KERNEL_BWD) st = frnn_step_adjoint(s, &adj);
  if (st) return st;
  target tgt;
  codegen cg;
  memset(&cg, 0, sizeof cg);
  if (!(st = target_parse(ctx, arch, &tgt)) && !(st = cg_begin(ctx, &tgt, s->name, &cg))) {
    cg.accurate = accurate; /* before building: libdevice or approximate instructions */
    if (!(st = lower_module(&cg, p, spec, s, adj, kernels))) st = cg_finish(&cg, emit_llvm, out);
  }
  cg_dispose(&cg);
  frnn_step_destroy(adj);
  return st;
}

/* The chunked kernels for s at M x N, or NULL: FRNN_CHUNKED=0, or the step
 * has no chunked form the kernels take (chunk_gpu_make says why), or it does
 * not fit the target's shared memory.  Decided once per context. */
static const ck_entry *chunked_for(frnn_ctx *ctx, const frnn_step *s, int64_t M, int64_t N, const char *arch) {
  const char *env = getenv("FRNN_CHUNKED");
  if (env && strcmp(env, "0") == 0) return NULL;
  for (ck_entry *c = ctx->chunked; c; c = c->next)
    if (c->graph_hash == s->hash && c->M == M && c->N == N && c->mode == ctx->backward_mode &&
        strcmp(c->arch, arch) == 0)
      return c->ok ? c : NULL;
  ck_entry *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->graph_hash = s->hash, c->M = M, c->N = N, c->mode = ctx->backward_mode;
  snprintf(c->arch, sizeof c->arch, "%s", arch);
  target t;
  /* A refusal is no failure: the recurrent kernels run it.  The context's
   * last failure stays as it was; the reason is kept here. */
  frnn_status saved_status = ctx->status;
  int saved_line = ctx->line, saved_col = ctx->col;
  char *saved = malloc(sizeof ctx->msg);
  if (!saved) {
    free(c);
    return NULL;
  }
  memcpy(saved, ctx->msg, sizeof ctx->msg);
  c->ok = !target_parse(ctx, arch, &t) && !chunk_gpu_make(ctx, s, &c->g) &&
          !ck_plan_make(ctx, s, &c->g, M, N, t.sm, t.max_shared_bytes_optin, &c->p);
  if (!c->ok) snprintf(c->why, sizeof c->why, "%.500s", ctx->msg);
  memcpy(ctx->msg, saved, sizeof ctx->msg);
  free(saved);
  ctx->status = saved_status, ctx->line = saved_line, ctx->col = saved_col;
  if (!c->ok) chunk_gpu_free(&c->g);
  c->next = ctx->chunked;
  ctx->chunked = c;
  return c->ok ? c : NULL;
}

static frnn_status compile_chunked(frnn_ctx *ctx, const frnn_step *s, const ck_entry *ce, const lower_spec *spec,
                                   unsigned ck_kernels, unsigned reduce_kernels, const char *arch, bool accurate,
                                   int emit_llvm, char **out) {
  target tgt;
  codegen cg;
  memset(&cg, 0, sizeof cg);
  frnn_status st;
  if (!(st = target_parse(ctx, arch, &tgt)) && !(st = cg_begin(ctx, &tgt, s->name, &cg))) {
    cg.accurate = accurate;
    if (!(st = lower_chunked_module(&cg, &ce->p, &ce->g, spec, s, ck_kernels))) {
      lower_reduce_kernels(&cg, reduce_kernels, spec->guard);
      st = cg_finish(&cg, emit_llvm, out);
    }
  }
  cg_dispose(&cg);
  return st;
}

static unsigned kernel_by_name(const char *name) {
  for (int k = 0; k < 5; k++)
    if (strcmp(name, kernel_names[k]) == 0) return 1u << k;
  return 0;
}

/* frnn_codegen_options.broadcast ("NAME:DIMS,...") -> bcast[input] bits
 * (0 B, 1 T, 2 H), as bind_all derives them from a call's tensors. */
static frnn_status parse_broadcast(frnn_ctx *ctx, const frnn_step *s, const char *text, uint8_t *bcast) {
  for (const char *p = text; *p;) {
    const char *colon = strchr(p, ':'), *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    if (!colon || colon > end || colon == p)
      return diag_fail(ctx, FRNN_E_ARG, "broadcast '%s': expected NAME:DIMS at '%.*s'", text, (int)(end - p), p);
    char name[FRNN_NAME_MAX];
    if (colon - p >= (ptrdiff_t)sizeof name)
      return diag_fail(ctx, FRNN_E_ARG, "broadcast '%s': name too long at '%.*s'", text, (int)(end - p), p);
    memcpy(name, p, (size_t)(colon - p));
    name[colon - p] = 0;
    int i = graph_find_port(s, FRNN_PORT_INPUT, name);
    if (i < 0) return diag_fail(ctx, FRNN_E_NAME, "broadcast '%s': step '%s' has no input '%s'", text, s->name, name);
    uint8_t bits = 0;
    for (const char *d = colon + 1; d < end; d++) {
      const char *at = strchr("BTH", *d);
      if (!*d || !at || (bits >> (at - "BTH") & 1))
        return diag_fail(ctx, FRNN_E_ARG, "broadcast '%s': input '%s' takes dimensions B, T, H, each once; not '%.*s'",
                         text, name, (int)(end - colon - 1), colon + 1);
      bits |= (uint8_t)(1u << (at - "BTH"));
    }
    if (!bits) return diag_fail(ctx, FRNN_E_ARG, "broadcast '%s': no dimensions for input '%s'", text, name);
    bcast[i] = bits;
    p = *end ? end + 1 : end;
  }
  return FRNN_OK;
}

frnn_status frnn_compile_ptx(frnn_ctx *ctx, const frnn_step *s, const frnn_codegen_options *opt,
                             char **out) {
  if (!ctx) return FRNN_E_ARG;
  if (!s || !opt || !out)
    return diag_fail(ctx, FRNN_E_ARG, "frnn_compile_ptx: step, options and out must not be NULL");
  *out = NULL;
  if (!s->finished) return diag_fail(ctx, FRNN_E_ARG, "frnn_compile_ptx: step '%s' is not finished", s->name);
  enum tdtype dt;
  if (opt->dtype.code == kDLFloat && opt->dtype.bits == 32 && opt->dtype.lanes == 1) dt = TD_F32;
  else if (opt->dtype.code == kDLBfloat && opt->dtype.bits == 16 && opt->dtype.lanes == 1) dt = TD_BF16;
  else if (opt->dtype.code == kDLFloat && opt->dtype.bits == 16 && opt->dtype.lanes == 1) dt = TD_F16;
  else
    return diag_fail(ctx, FRNN_E_ARG, "frnn_compile_ptx: dtype must be float32, bfloat16 or float16");
  if (opt->after_pass) {
    frnn_step *adj = NULL;
    const frnn_step *which = s;
    frnn_status st;
    if (strcmp(opt->after_pass, "affine") == 0) return affine_describe(ctx, s, out);
    if (strcmp(opt->after_pass, "chunk") == 0) return chunk_form_describe(ctx, s, out);
    if (strcmp(opt->after_pass, "adjoint") == 0) {
      if ((st = frnn_step_adjoint(s, &adj))) return st;
      which = adj;
    } else if (strcmp(opt->after_pass, "simplify") != 0 && strcmp(opt->after_pass, "parse") != 0)
      return diag_fail(ctx, FRNN_E_ARG, "unknown pass '%s': the passes are parse, simplify, adjoint, affine, chunk",
                       opt->after_pass);
    st = frnn_step_print(which, out);
    frnn_step_destroy(adj);
    return st;
  }
  lower_spec spec;
  memset(&spec, 0, sizeof spec);
  for (int i = 0; i < FRNN_MAX_PORTS; i++) {
    spec.dt_in[i] = spec.dt_out[i] = spec.dt_gout[i] = spec.dt_gin[i] = dt;
    spec.dt_state[i] = spec.dt_final[i] = spec.dt_gfinal[i] = spec.dt_gstate[i] = TD_F32;
    spec.in_bcast[i] = 0;
  }
  if (opt->broadcast) {
    frnn_status st = parse_broadcast(ctx, s, opt->broadcast, spec.in_bcast);
    if (st) return st;
  }
  for (int r = 0; r < 8; r++) spec.contig[r] = spec.aligned[r] = UINT32_MAX; /* the usual dense layouts */
  unsigned kernels = KERNEL_FWD | KERNEL_BWD | (KERNEL_REDUCE_F32 << dt);
  /* A step the chunked kernels run: those (frnn_ck_fwd, frnn_ck_bwd,
   * frnn_ck_chain and the reduce), unless a recurrent kernel is named. */
  const ck_entry *ce = chunked_for(ctx, s, opt->M, opt->N, opt->arch ? opt->arch : "sm_90");
  if (ce && (!opt->kernel || strncmp(opt->kernel, "frnn_ck_", 8) == 0 || strncmp(opt->kernel, "frnn_reduce", 11) == 0)) {
    unsigned ck = CK_KERNEL_FWD | CK_KERNEL_BWD, red = KERNEL_REDUCE_F32 << dt;
    if (opt->kernel) {
      ck = strcmp(opt->kernel, "frnn_ck_fwd") == 0 ? CK_KERNEL_FWD
           : strcmp(opt->kernel, "frnn_ck_bwd") == 0 || strcmp(opt->kernel, "frnn_ck_chain") == 0 ? CK_KERNEL_BWD
                                                                                                  : 0;
      red = ck ? 0 : kernel_by_name(opt->kernel);
      if (!ck && !red)
        return diag_fail(ctx, FRNN_E_ARG, "no kernel '%s': the chunked kernels are frnn_ck_fwd, frnn_ck_bwd, "
                                          "frnn_ck_chain, frnn_reduce_f32, frnn_reduce_bf16, frnn_reduce_f16",
                         opt->kernel);
    }
    spec.guard = ce->g.guard ? GUARD_CHUNKED : GUARD_NONE;
    return compile_chunked(ctx, s, ce, &spec, ck, red, opt->arch, opt->accurate_math != 0, opt->emit_llvm ? 1 : 0,
                           out);
  }
  plan p;
  frnn_status st = make_plan(ctx, s, opt->M, opt->N, opt->arch, &p);
  if (st) return st;
  if (ce && ce->g.guard) spec.guard = GUARD_FALLBACK; /* the recurrent kernels of a guarded step */
  if (opt->kernel) {
    kernels = kernel_by_name(opt->kernel);
    if (!kernels)
      return diag_fail(ctx, FRNN_E_ARG, "no kernel '%s': the kernels are frnn_fwd, frnn_bwd, "
                                        "frnn_reduce_f32, frnn_reduce_bf16, frnn_reduce_f16",
                       opt->kernel);
  }
  return compile(ctx, s, &p, &spec, kernels, opt->arch, opt->accurate_math != 0,
                 opt->emit_llvm ? 1 : 0, out);
}

/* ------------------------------------------------------- binding tensors */
typedef struct bound {
  tview v[FRNN_MAX_PORTS];
  bool present[FRNN_MAX_PORTS];
} bound;

static const DLTensor *entry(const DLTensor *const *arr, int i) { return arr ? arr[i] : NULL; }

/* Validate the tensors of one kind of port; `required`: each must be there. */
static frnn_status bind_all(frnn_ctx *ctx, const frnn_step *s, frnn_port_kind kind,
                            enum tensor_role role, const DLTensor *const *arr, bool required,
                            frnn_sizes sz, const bound *like, bound *out, int *device) {
  const char *what[] = {"inputs", "states", "outputs"};
  int n = s->n_ports[kind];
  if (required && n && !arr)
    return diag_fail(ctx, FRNN_E_ARG, "the array of %s is NULL (step '%s' has %d)", what[kind], s->name, n);
  for (int i = 0; i < n; i++) {
    const DLTensor *t = entry(arr, i);
    out->present[i] = t != NULL;
    if (!t) {
      if (required)
        return diag_fail(ctx, FRNN_E_ARG, "%s '%s' is NULL", role == ROLE_OUTPUT ? "output" : role == ROLE_INPUT ? "input" : "initial state",
                         s->ports[kind][i].name);
      continue;
    }
    frnn_status st = tensor_bind(ctx, t, role, s->ports[kind][i].name, s->ports[kind][i].cls, sz,
                                 true, like ? &like->v[i] : NULL, &out->v[i]);
    if (st) return st;
    if (*device < 0) *device = t->device.device_id;
    else if (t->device.device_id != *device)
      return diag_fail(ctx, FRNN_E_ARG, "'%s' is on CUDA device %d, other tensors on device %d",
                       s->ports[kind][i].name, t->device.device_id, *device);
  }
  return FRNN_OK;
}

static char dt_char(enum tdtype d) { return "fbhd"[d]; }

/* Unit column stride and rows of N elements (what the kernels can address
 * with constant offsets); a missing dimension or one of size 1 never
 * matters. */
static bool inner_contig(const tview *v, int cls, frnn_sizes sz) {
  if (CLASS_HAS_N(cls) && sz.N > 1 && v->stride[4] != 1) return false;
  if (CLASS_HAS_M(cls) && sz.M > 1 && v->stride[3] != (CLASS_HAS_N(cls) ? sz.N : 1)) return false;
  return true;
}

static uint32_t contig_mask(const frnn_step *s, frnn_port_kind kind, const bound *b, frnn_sizes sz) {
  uint32_t m = 0;
  for (int i = 0; i < s->n_ports[kind]; i++)
    if (b->present[i] && inner_contig(&b->v[i], s->ports[kind][i].cls, sz)) m |= 1u << i;
  return m;
}

/* Contiguous, and every element a thread's adjacent rows start at (the
 * first element, the B, T and H strides, the row of a vector) falls on a
 * multiple of VEC_ALIGN bytes, whatever the rows a vector holds. */
static bool vec_aligned(const tview *v, int cls, frnn_sizes sz) {
  int64_t bytes = tdtype_bytes(v->dtype), ext[3] = {sz.B, sz.T, sz.H};
  if (!inner_contig(v, cls, sz) || (uintptr_t)v->data % VEC_ALIGN) return false;
  for (int d = 0; d < 3; d++)
    if (ext[d] > 1 && v->stride[d] * bytes % VEC_ALIGN) return false;
  return true;
}

static uint32_t aligned_mask(const frnn_step *s, frnn_port_kind kind, const bound *b, frnn_sizes sz) {
  uint32_t m = 0;
  for (int i = 0; i < s->n_ports[kind]; i++)
    if (b->present[i] && vec_aligned(&b->v[i], s->ports[kind][i].cls, sz)) m |= 1u << i;
  return m;
}

static int append_contig(char *key, size_t size, int k, const lower_spec *spec) {
  k += snprintf(key + k, size - (size_t)k, " c");
  for (int r = 0; r < 8; r++) k += snprintf(key + k, size - (size_t)k, ":%x", spec->contig[r]);
  k += snprintf(key + k, size - (size_t)k, " a");
  for (int r = 0; r < 8; r++) k += snprintf(key + k, size - (size_t)k, ":%x", spec->aligned[r]);
  return k;
}

static uint8_t bcast_bits(const tview *v, frnn_sizes sz) {
  return (uint8_t)((v->extent[0] == 1 && sz.B > 1) | (v->extent[1] == 1 && sz.T > 1) << 1 |
                   (v->extent[2] == 1 && sz.H > 1) << 2);
}

/* Kernel arguments: six per tensor (pointer, strides B T H M N), then the
 * kernel's scalars.  Storage for the values lives here; params[] points at it. */
typedef struct args {
  void *ptr[5 * FRNN_MAX_PORTS + CK_MAX_SEEDS + 8]; /* tensors, the chunked kernels' seeds, pointers */
  int64_t i64[5 * FRNN_MAX_PORTS * 5 + 16];
  int32_t i32[4];
  void *params[5 * FRNN_MAX_PORTS * 6 + CK_MAX_SEEDS + 24];
  int n_ptr, n_i64, n_i32, n;
} args;

static void arg_ptr(args *a, void *p) {
  a->ptr[a->n_ptr] = p;
  a->params[a->n++] = &a->ptr[a->n_ptr++];
}
static void arg_i64(args *a, int64_t v) {
  a->i64[a->n_i64] = v;
  a->params[a->n++] = &a->i64[a->n_i64++];
}
static void arg_i32(args *a, int32_t v) {
  a->i32[a->n_i32] = v;
  a->params[a->n++] = &a->i32[a->n_i32++];
}
static void arg_tensor(args *a, const tview *v, bool present) {
  arg_ptr(a, present ? v->data : NULL);
  for (int d = 0; d < 5; d++) arg_i64(a, present ? v->stride[d] : 0);
}
/* A guarded module's kernels take the call's flag last (lower_spec.guard). */
typedef struct guard_arg {
  bool on;
  void *flag; /* device memory, or NULL (a fallback kernel then runs) */
} guard_arg;
static const guard_arg no_guard = {false, NULL};
static void arg_guard(args *a, const guard_arg *g) {
  if (g->on) arg_ptr(a, g->flag);
}

/* frnn_reduce_*: out = the float32 partial [Bp][Tp][H][m][n] summed over Bp
 * (overB) and H (overH).  A warp per output where outputs are few and sums
 * long (a per-head parameter's partial per chunk and batch: 32 outputs of
 * 256 terms at the benchmark sizes), else a thread per output. */
static frnn_status launch_reduce(frnn_ctx *ctx, CUfunction fn, const char *name, void *partial, const tview *out,
                                 int64_t Bp, int64_t Tp, int64_t H, int64_t m, int64_t n, int overB, int overH,
                                 const guard_arg *gd, CUstream cs) {
  args a;
  memset(&a, 0, sizeof a);
  arg_ptr(&a, partial);
  arg_tensor(&a, out, true);
  arg_i64(&a, Bp);
  arg_i64(&a, Tp);
  arg_i64(&a, H);
  arg_i64(&a, m);
  arg_i64(&a, n);
  arg_i32(&a, overB);
  arg_i32(&a, overH);
  int64_t total = (overB ? 1 : Bp) * Tp * (overH ? 1 : H) * m * n, terms = (overB ? Bp : 1) * (overH ? H : 1);
  int lanes = terms >= 64 && total <= (1 << 16) ? 32 : 1;
  arg_i32(&a, lanes);
  arg_guard(&a, gd);
  /* work items: a warp an output (wide), else REDUCE_ROW outputs along n */
  int64_t items = lanes > 1 ? total * lanes : total / n * ((n + REDUCE_ROW - 1) / REDUCE_ROW);
  unsigned g3[3] = {(unsigned)((items + 255) / 256), 1, 1}, b3[3] = {256, 1, 1};
  return cuda_launch(ctx, fn, name, g3, b3, 1, 0, cs, a.params);
}

/* The module of plan p's kernels: from the on-disk cache (cubin, else PTX
 * linked here) or compiled, linked and cached. */
static frnn_status load_plan(frnn_ctx *ctx, const frnn_step *s, int device, const char *key,
                             const lower_spec *spec, unsigned kernels, const char *arch, const plan *p,
                             const ck_entry *ce, CUmodule *mod) {
  /* The on-disk key also names the plan's thread mapping and this build of
   * the lowering: a kernel compiled by another plan or another frnn must not
   * be launched with this one's geometry. */
  char disk_key[1280];
  const kernel_shape *f = &p->fwd, *b = &p->bwd;
  if (ce)
    snprintf(disk_key, sizeof disk_key, "%s chunked L=%d BM=%d threads=%d/%d chain blocks %d unroll %d copies %d big %d/%d build %s",
             key, ce->p.L, ce->p.BM, ce->p.threads_fwd, ce->p.threads, ce->p.chain_min_blocks, ce->p.chain_unroll, ce->p.early_loads,
             ce->p.mma_big_fwd, ce->p.mma_big, FRNN_BUILD_STAMP);
  else
    snprintf(disk_key, sizeof disk_key, "%s fwd %d,%d,%d,%d,%d bwd %d,%d,%d,%d,%d%s build %s", key,
             f->lpr, f->cn, f->rpt, f->warps, f->row_blocks, b->lpr, b->cn, b->rpt, b->warps,
             b->row_blocks, p->bwd_roles ? ",roles" : "", FRNN_BUILD_STAMP);
  cache_key ck = {.graph_hash = s->hash, .spec = disk_key, .arch = arch, .kind = "ptx"};
  char *ptx = NULL, *cubin = NULL;
  size_t ptx_len = 0, cubin_len = 0;
  cache_result how;
  char kind[64];
  frnn_status st;
  if ((st = cuda_cubin_kind(ctx, device, kind, sizeof kind))) return st;
  cache_key cubin_key = ck;
  cubin_key.kind = kind;
  frnn_compile_stats *stats = &ctx->stats;
  if ((st = cache_get(ctx, &cubin_key, &cubin, &cubin_len, &how))) return st;
  if (cubin) {
    stats->cubin_cache_hits++;
  } else {
    if ((st = cache_get(ctx, &ck, &ptx, &ptx_len, &how))) return st;
    if (ptx) {
      stats->ptx_cache_hits++;
    } else {
      double t0 = now_ms();
      st = ce ? compile_chunked(ctx, s, ce, spec,
                                (kernels & KERNEL_FWD ? CK_KERNEL_FWD : 0u) | (kernels & KERNEL_BWD ? CK_KERNEL_BWD : 0u),
                                kernels & ~(unsigned)(KERNEL_FWD | KERNEL_BWD), arch, accurate_from_env(), 0, &ptx)
              : compile(ctx, s, p, spec, kernels, arch, accurate_from_env(), 0, &ptx);
      if (st) return st;
      stats->compile_ms += now_ms() - t0;
      stats->compiled++;
      ptx_len = strlen(ptx);
      cache_put(NULL, &ck, ptx, ptx_len); /* a read-only cache is no failure */
    }
    double t0 = now_ms();
    st = cuda_link_ptx_to_cubin(ctx, ptx, ptx_len + 1, &cubin, &cubin_len);
    stats->link_ms += now_ms() - t0;
    free(ptx);
    if (st) return st;
    cache_put(NULL, &cubin_key, cubin, cubin_len);
  }
  double load_ms = 0;
  st = cuda_module_load(ctx, cubin, cubin_len, 1, mod, &load_ms);
  stats->load_ms += load_ms;
  free(cubin);
  return st;
}

/* ------------------------------------------------------ loading modules */
/* The chunked module's kernels into fn (gpu_module.fn's order). */
static frnn_status chunked_functions(frnn_ctx *ctx, CUmodule mod, unsigned kernels, const ck_entry *ce,
                                     CUfunction fn[6]) {
  static const char *const names[6] = {"frnn_ck_fwd", "frnn_ck_bwd", "frnn_reduce_f32", "frnn_reduce_bf16",
                                       "frnn_reduce_f16", "frnn_ck_chain"};
  frnn_status st = FRNN_OK;
  for (int k = 0; k < 5 && !st; k++)
    if (kernels & (1u << k)) st = cuda_function(ctx, mod, names[k], &fn[k]);
  if (!st && (kernels & KERNEL_BWD) && !ce->p.fused) st = cuda_function(ctx, mod, names[5], &fn[5]);
  return st;
}

/* The chunked module built again from alt (a copy of its plan with one
 * choice changed), kept in m where its kernel fn[which] needs less local
 * memory than local (the driver's count of its spills); a failure keeps the
 * first build. */
static bool keep_if_spills_less(frnn_ctx *ctx, const frnn_step *s, int device, const char *key,
                                const lower_spec *spec, unsigned kernels, const char *arch, const ck_entry *alt,
                                int which, int local, gpu_module *m) {
  CUmodule alt_mod = NULL;
  CUfunction fn[6];
  int local_alt = 0;
  memcpy(fn, m->fn, sizeof fn);
  bool better = !load_plan(ctx, s, device, key, spec, kernels, arch, &m->p, alt, &alt_mod) &&
                !chunked_functions(ctx, alt_mod, kernels, alt, fn) &&
                !cuda_function_attribute(ctx, fn[which], CUDA_FUNC_LOCAL_BYTES, &local_alt) && local_alt < local;
  if (better) {
    CUmodule first = m->mod;
    m->mod = alt_mod, alt_mod = first;
    memcpy(m->fn, fn, sizeof fn);
  }
  cuda_module_unload(alt_mod);
  diag_clear(ctx);
  return better;
}

/* Two choices of the chunked backward cost registers: its copies of a
 * chunk's first state and rank-one columns before its term arrays
 * (ck_plan.early_loads bit 1), and its [M,N] products in blocks of
 * mma_big tiles a warp.  Where the driver's compile of the backward with
 * both spills, it is built without the blocks, then with the copies late,
 * then without either, until a build spills nothing; the build that spills
 * least is kept (a tie keeps the earlier).  H100, fw+bw (fourteenth
 * session, call 3): the gated delta rule's backward spilled 16 bytes with
 * the early copies and none without, 7.67 against 7.46 ms; the delta
 * rule's none with them, 5.60 against 5.91.  The blocks (ptxas 13.0 at
 * 128 x 128 bf16) spill in GLA's backward (24 bytes), RWKV-6's (60 -> 160)
 * and the gated delta rule's (4), and cost them 1-3% (fifteenth session,
 * call 3): lower_chunked.c leaves them out of backwards tight on
 * registers, by measurement (in that session's calls the search could not
 * drop them: the builds without them shared the disk key of the builds
 * with them, since mended).  A knob that sets a choice
 * (FRNN_CK_EARLY_LOADS, FRNN_CK_MMA_BIG) keeps it.  A failure here only
 * keeps the first build.  The choices kept go to *early and *big. */
static void backward_without_spills(frnn_ctx *ctx, const frnn_step *s, int device, const char *key,
                                    const lower_spec *spec, unsigned kernels, const char *arch, const ck_entry *ce,
                                    gpu_module *m, int *early, int *big) {
  int local = 0;
  *early = ce->p.early_loads, *big = ce->p.mma_big;
  if (!(kernels & KERNEL_BWD) || cuda_function_attribute(ctx, m->fn[1], CUDA_FUNC_LOCAL_BYTES, &local) || local == 0)
    return;
  int first_early = *early, first_big = *big, late = first_early & ~1;
  int alts[3][2] = {{first_early, 0}, {late, first_big}, {late, 0}};
  bool copies_fixed = late == first_early || getenv("FRNN_CK_EARLY_LOADS");
  bool big_fixed = first_big <= 1 || getenv("FRNN_CK_MMA_BIG");
  ck_entry *alt = malloc(sizeof *alt); /* a shallow copy, only compiled from */
  if (!alt) return;
  for (int i = 0; i < 3 && local > 0; i++) {
    if ((copies_fixed && alts[i][0] != first_early) || (big_fixed && alts[i][1] != first_big)) continue;
    *alt = *ce;
    alt->p.early_loads = alts[i][0], alt->p.mma_big = alts[i][1];
    if (keep_if_spills_less(ctx, s, device, key, spec, kernels, arch, alt, 1, local, m)) {
      *early = alts[i][0], *big = alts[i][1];
      if (cuda_function_attribute(ctx, m->fn[1], CUDA_FUNC_LOCAL_BYTES, &local)) break;
    }
  }
  free(alt);
}

/* The chain kernel is built for ck_plan.chain_min_blocks resident blocks an
 * SM (6: 40 registers a thread), its loads unrolled (ck_plan.chain_unroll
 * 2).  Where the driver's compile of it spills nonetheless, it is built
 * again for 4 blocks, then (still spilling) for 6 without the unrolling,
 * and the first build without spills is kept, else the one that spills
 * least (a tie keeps the earlier).  H100, fw+bw ms: 4 blocks where 6
 * spilled, Mamba-2 4.096 -> 4.060, gated 8.361 -> 8.321 (twelfth session,
 * call 3); 4 for every step cost the others up to 3% (RWKV-6 5.24 -> 5.33,
 * retention 3.76 -> 3.87: their 48 registers at 4 blocks, 40 at 6).  The
 * unrolling (eighteenth session, call 5; 0 -> 2): delta rule 5.287 ->
 * 5.118, gated 6.529 -> 6.246, GLA 3.309 -> 3.264, every chunked step but
 * RWKV-6 faster (4.841 -> 5.275: it spills 836 bytes even at 4 blocks).
 * A knob that sets a choice (FRNN_CK_CHAIN_MINB, FRNN_CK_CHAIN_UNROLL)
 * keeps it; a failure here only keeps the first build.  The choices kept
 * go to *blocks and *unroll. */
static void chain_without_spills(frnn_ctx *ctx, const frnn_step *s, int device, const char *key,
                                 const lower_spec *spec, unsigned kernels, const char *arch, const ck_entry *ce,
                                 int early_loads, int big, gpu_module *m, int *blocks, int *unroll) {
  int local = 0;
  *blocks = ce->p.chain_min_blocks, *unroll = ce->p.chain_unroll;
  if (!(kernels & KERNEL_BWD) || ce->p.fused || cuda_function_attribute(ctx, m->fn[5], CUDA_FUNC_LOCAL_BYTES, &local) ||
      local == 0)
    return;
  ck_entry *alt = malloc(sizeof *alt); /* a shallow copy (54 KB: not on the stack), only compiled from */
  if (!alt) return;
  *alt = *ce;
  alt->p.early_loads = early_loads, alt->p.mma_big = big; /* the backward kept (backward_without_spills): the
                                                             module holds both */
  int tries[2][2] = {{4, *unroll}, {*blocks, 0}};
  bool may[2] = {*blocks > 4 && !getenv("FRNN_CK_CHAIN_MINB"), *unroll > 0 && !getenv("FRNN_CK_CHAIN_UNROLL")};
  for (int i = 0; i < 2 && local > 0; i++) {
    if (!may[i]) continue;
    alt->p.chain_min_blocks = tries[i][0], alt->p.chain_unroll = tries[i][1];
    if (keep_if_spills_less(ctx, s, device, key, spec, kernels, arch, alt, 5, local, m)) {
      *blocks = tries[i][0], *unroll = tries[i][1];
      if (cuda_function_attribute(ctx, m->fn[5], CUDA_FUNC_LOCAL_BYTES, &local)) break;
    }
  }
  free(alt);
}

static frnn_status get_module(frnn_ctx *ctx, const frnn_step *s, frnn_sizes sz, int device,
                              const char *key, const lower_spec *spec, unsigned kernels,
                              const ck_entry *ce, gpu_module **out) {
  CUcontext cur;
  frnn_status st = cuda_current_context(ctx, &cur);
  if (st) return st;
  /* The key names the specialisation, not the step: the graph's hash must
   * match too, or two steps of one signature would share kernels (seen in
   * bench/compare.py, where GLA ran the delta rule's). */
  for (gpu_module *m = ctx->modules; m; m = m->next)
    if (m->cu_ctx == cur && m->graph_hash == s->hash && strcmp(m->key, key) == 0) {
      *out = m;
      return FRNN_OK;
    }
  gpu_module *m = calloc(1, sizeof *m);
  if (!m) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory loading a module");
  const char *arch = gpu_arch();
  m->ck = ce;
  if (ce) {
    if ((st = load_plan(ctx, s, device, key, spec, kernels, arch, &m->p, ce, &m->mod)) ||
        (st = chunked_functions(ctx, m->mod, kernels, ce, m->fn)))
      goto fail;
    int early_loads, big;
    backward_without_spills(ctx, s, device, key, spec, kernels, arch, ce, m, &early_loads, &big);
    int chain_blocks, chain_unroll;
    chain_without_spills(ctx, s, device, key, spec, kernels, arch, ce, early_loads, big, m, &chain_blocks, &chain_unroll);
    ctx->stats.modules++;
    char window[128] = "";
    if (ce->p.window_steps > 0 && !ce->p.fused)
      snprintf(window, sizeof window, ", backward windows of %d steps", ce->p.window_steps);
    if (!ce->p.fused)
      snprintf(window + strlen(window), sizeof window - strlen(window), ", chain %d blocks an SM%s", chain_blocks,
               chain_unroll >= 2 ? " unrolled" : chain_unroll == 1 ? " sums unrolled" : "");
    char big_text[32] = "";
    if (big > 1) snprintf(big_text, sizeof big_text, " %d-tile blocks", big);
    if (kernels & KERNEL_BWD)
      snprintf(ctx->backward_plan, sizeof ctx->backward_plan,
               "chunked L=%d BM=%d blocks/head=%d threads=%d/%d%s%s%s%s%s%s%s smem=%u/%u/%u states every %d chunks%s%s",
               ce->p.L, ce->p.BM, ce->p.MB, ce->p.threads_fwd, ce->p.threads, ce->p.split ? " split" : "",
               ce->p.bw_pairs ? " pairs at once" : "", early_loads & 1 ? "" : " copies late",
               big_text, ce->p.fused ? " fused" : "", ce->p.ld_in_chain ? " log decay in the chain" : "",
               ce->g.guard ? " guarded (recurrent where a decay is out of the chunked range)" : "",
               ce->p.fwd_smem, ce->p.bwd_smem, ce->p.chain_smem, ce->p.ckpt_every,
               ce->p.ckpt_every > 1 ? " (the others recomputed)" : "", window);
    goto keep;
  }
  if ((st = make_plan(ctx, s, sz.M, sz.N, arch, &m->p)) ||
      (st = load_plan(ctx, s, device, key, spec, kernels, arch, &m->p, NULL, &m->mod)))
    goto fail;
  /* Where the plan's backward spills, other backwards for the same forward
   * (plan_backward_alternatives: half the lanes a row, clusters of 2, 4, 8
   * blocks, blocks of 16 or 8 warps), in that order: the first that needs
   * less than PICK_GOOD_LOCAL_BYTES of local memory a thread (its spills, as
   * the driver compiled it) is kept, else the one that needs least (a tie
   * keeps the earlier).  Measured on the H100 (docs/BENCHMARKS.md, ninth
   * session), fw+bw ms: Mamba 91.5 -> 38.6 (a cluster of 4: 56 bytes),
   * Longhorn 79.5 -> 41.4 (4: 0 bytes; 39.3 at 2, 640 bytes), S4D 146 ->
   * 31.3 (4: 128 bytes; 34.8 at 8, 0 bytes: hence 160, not 64), mLSTM 130
   * -> 29.0 (8 warps, 648 bytes, the least); retention and GSA's keys (8
   * bytes, none) ran slower in clusters and keep theirs.  (The fourth
   * session's half the lanes chose Mamba-2, Mamba and Longhorn.)  Each try
   * compiles once on a cold cache (up to a second); the modules not kept
   * are dropped, and a failure on one is no failure. */
  target t;
  CUfunction f_best;
  int local_best = 0;
  char tried[160] = ""; /* each shape tried and its local bytes, for the plan's description */
  size_t nt = 0;
  if ((kernels & KERNEL_BWD) && !cuda_function(ctx, m->mod, "frnn_bwd", &f_best) &&
      !cuda_function_attribute(ctx, f_best, CUDA_FUNC_LOCAL_BYTES, &local_best) &&
      local_best >= PICK_MIN_LOCAL_BYTES && !target_parse(ctx, arch, &t)) {
    nt += (size_t)snprintf(tried, sizeof tried, "; backward local bytes a thread %d, tried lanes/warps/blocks",
                           local_best);
    enum { MAX_ALTS = 8 };
    plan *alts = malloc(MAX_ALTS * sizeof *alts);
    int n = alts ? plan_backward_alternatives(ctx, s, &t, &m->p, sz, alts, MAX_ALTS) : 0;
    for (int i = 0; i < n && local_best >= PICK_GOOD_LOCAL_BYTES; i++) {
      CUmodule alt_mod = NULL;
      CUfunction f_alt;
      int local_alt = 0;
      bool built = !load_plan(ctx, s, device, key, spec, kernels, arch, &alts[i], NULL, &alt_mod) &&
                   !cuda_function(ctx, alt_mod, "frnn_bwd", &f_alt) &&
                   !cuda_function_attribute(ctx, f_alt, CUDA_FUNC_LOCAL_BYTES, &local_alt);
      const kernel_shape *b = &alts[i].bwd;
      if (built && nt < sizeof tried)
        nt += (size_t)snprintf(tried + nt, sizeof tried - nt, ", %d/%d/%d: %d", b->lpr, b->warps, b->row_blocks,
                               local_alt);
      if (built && local_alt < local_best) {
        CUmodule keep = alt_mod;
        alt_mod = m->mod;
        m->mod = keep;
        m->p = alts[i];
        local_best = local_alt;
      }
      cuda_module_unload(alt_mod);
    }
    free(alts);
  }
  ctx->stats.modules++;
  for (int k = 0; k < 5; k++)
    if ((kernels & (1u << k)) && (st = cuda_function(ctx, m->mod, kernel_names[k], &m->fn[k]))) goto fail;
  if (kernels & KERNEL_BWD) {
    plan_describe(&m->p, ctx->backward_plan, sizeof ctx->backward_plan);
    size_t used = strlen(ctx->backward_plan);
    snprintf(ctx->backward_plan + used, sizeof ctx->backward_plan - used, "%s", tried);
  }
keep:
  snprintf(m->key, sizeof m->key, "%s", key);
  m->graph_hash = s->hash;
  m->cu_ctx = cur;
  m->next = ctx->modules;
  ctx->modules = m;
  *out = m;
  return FRNN_OK;
fail:
  cuda_module_unload(m->mod);
  free(m);
  return st;
}

/* ------------------------------------------------ the chunked workspace */
/* Bytes from the workspace's start: the forward's chunk-start states
 * (every ckpt_every-th, then the last; float32 [slot][B][H][M][N]) and
 * rank-one columns (per chunk), or where states are sparse the recomputed
 * ones of a stored state's chunks (the states of all but the first, which
 * is stored; the columns of all); then, for the backward, the terms' gradients over a
 * window's steps (float32 [parts][B][window steps][H][E]: rows and the log
 * decay one part per block of rows, summed by the chain kernel), the
 * partial gradients of broadcast inputs (float32: per head, or one for all
 * heads where only H is broadcast; per chunk where T is) and the state's
 * gradient carried between windows. */
typedef struct ck_ws {
  int64_t n_chunks, win_chunks; /* the backward's windows (ck_window_chunks) */
  int64_t group_chunks;         /* what one recompute runs (ckpt_every; without: the windows) */
  size_t state_bytes;           /* of one checkpoint slot: B H M N floats */
  size_t ckpt, rank;            /* the forward's states (a slot every ckpt_every chunks, then the last) and
                                   rank-one columns (a chunk's each; SIZE_MAX: in the scratch) */
  size_t scratch, scratch_rank; /* ckpt_every > 1: a recompute's states and rank-one columns */
  size_t seed[CK_MAX_SEEDS], partial[FRNN_MAX_PORTS], partial_bytes[FRNN_MAX_PORTS], carry, total;
} ck_ws;

static size_t align256(size_t x) { return (x + 255) / 256 * 256; }

static int64_t class_elems(int cls, frnn_sizes sz) {
  return (CLASS_HAS_M(cls) ? sz.M : 1) * (CLASS_HAS_N(cls) ? sz.N : 1);
}

/* in_bcast NULL: unknown (the largest partials). */
static void ck_workspace(const ck_entry *ce, const frnn_step *s, frnn_sizes sz, const uint8_t *in_bcast,
                         int for_backward, ck_ws *w) {
  memset(w, 0, sizeof *w);
  const ck_plan *p = &ce->p;
  const chunk_gpu *g = &ce->g;
  w->n_chunks = (sz.T + p->L - 1) / p->L;
  w->win_chunks = ck_window_chunks(p, w->n_chunks);
  w->group_chunks = p->ckpt_every > 1 ? (p->ckpt_every < w->n_chunks ? p->ckpt_every : w->n_chunks) : w->win_chunks;
  /* the terms' gradients: a backward window's steps (whole chunks, as the
   * kernels index them: past T when its last chunk is partial) */
  size_t at = 0, BTH = (size_t)(sz.B * w->win_chunks * p->L * sz.H);
  if (!for_backward) return;
  /* slot-major (lower_chunked.c): [slot][B][H][M][N], [chunk][B][H][rank] */
  size_t K = (size_t)p->ckpt_every, rank_bytes = (size_t)(sz.B * sz.H * ck_rank_floats(p, g)) * 4;
  w->state_bytes = (size_t)(sz.B * sz.H * sz.M * sz.N) * 4;
  w->ckpt = at;
  at = align256(at + ((size_t)w->n_chunks + K - 1) / K * w->state_bytes + w->state_bytes);
  w->rank = w->scratch = w->scratch_rank = SIZE_MAX;
  if (K == 1) {
    w->rank = at;
    at = align256(at + (size_t)w->n_chunks * rank_bytes);
  } else {
    w->scratch = at;
    at = align256(at + (size_t)(w->group_chunks - 1) * w->state_bytes);
    w->scratch_rank = at;
    at = align256(at + (size_t)w->group_chunks * rank_bytes);
  }
  for (int q = 0; q < g->n_seeds; q++) {
    w->seed[q] = SIZE_MAX;
    if (g->seed_kind[q] == CK_SEED_IND) continue;
    bool col = g->seed_cls[q] == FRNN_COL;
    w->seed[q] = at;
    /* fused: one chunk's scratch per head */
    size_t steps = p->fused ? (size_t)(sz.B * sz.H * p->L) : (size_t)(col ? 1 : p->MB) * BTH;
    at = align256(at + steps * (size_t)ck_seed_width(p, g, q) * 4);
  }
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    w->partial[i] = SIZE_MAX;
    uint8_t bc = in_bcast ? in_bcast[i] : 5;
    if (!bc) continue;
    size_t E = (size_t)class_elems(s->ports[FRNN_PORT_INPUT][i].cls, sz);
    w->partial[i] = at;
    /* over T: a partial per chunk and head; over H (known): one for every
     * head (the chain adds into it); else one per head */
    size_t rows;
    if (bc & 2) rows = (size_t)(w->n_chunks * sz.B * sz.H);
    else if (in_bcast && bcast_over_heads_only(bc)) rows = (size_t)(sz.B * sz.T);
    else rows = (size_t)(sz.B * sz.T * sz.H);
    w->partial_bytes[i] = rows * E * 4;
    at = align256(at + w->partial_bytes[i]);
  }
  /* the state's gradient from one window to the next, float32 [B][H][M][N] */
  w->carry = SIZE_MAX;
  if (w->win_chunks < w->n_chunks) w->carry = at, at = align256(at + w->state_bytes);
  w->total = at;
}


/* --------------------------------------------------------- public calls */
static frnn_status check_call(frnn_ctx *ctx, const frnn_step *s, frnn_sizes sz, const char *fn) {
  if (!ctx) return FRNN_E_ARG;
  if (!s) return diag_fail(ctx, FRNN_E_ARG, "%s: step is NULL", fn);
  if (!s->finished) return diag_fail(ctx, FRNN_E_ARG, "%s: step '%s' is not finished", fn, s->name);
  if (s->internal)
    return diag_fail(ctx, FRNN_E_ARG, "%s: step '%s' is an adjoint; run the step itself", fn, s->name);
  frnn_status st = sizes_check(ctx, sz);
  if (st) return st;
  if (sz.B > 65535 || sz.H > 65535)
    return diag_fail(ctx, FRNN_E_UNSUPPORTED, "%s: B = %lld and H = %lld must be at most 65535", fn,
                     (long long)sz.B, (long long)sz.H);
  return FRNN_OK;
}

/* The chunked backward copies its checkpoints from the workspace 16 bytes
 * at a time (lower_chunked.c state_copy): `call` refuses a workspace that
 * is not WORKSPACE_ALIGN-byte aligned. */
static frnn_status workspace_aligned(frnn_ctx *ctx, const void *workspace, const char *call) {
  if ((uintptr_t)workspace % WORKSPACE_ALIGN == 0) return FRNN_OK;
  return diag_fail(ctx, FRNN_E_ARG, "%s: the workspace (%p) is not %d-byte aligned (cuMemAlloc's and PyTorch's "
                                    "allocations are)", call, workspace, WORKSPACE_ALIGN);
}

/* A state is read by many threads at a kernel's start and written by one at
 * its end, possibly from another block: writing it in place would race. */
static frnn_status no_alias(frnn_ctx *ctx, const frnn_step *s, const bound *read, const bound *written,
                            const char *what, const char *other) {
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++)
    if (read->present[i] && written->present[i] && read->v[i].data == written->v[i].data)
      return diag_fail(ctx, FRNN_E_ARG, "%s '%s' is the same memory as %s: the GPU kernels do not "
                       "update states in place; pass another tensor", what,
                       s->ports[FRNN_PORT_STATE][i].name, other);
  return FRNN_OK;
}

static void inputs_bcast(const frnn_step *s, frnn_sizes sz, const bound *in, uint8_t *bc) {
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) bc[i] = bcast_bits(&in->v[i], sz);
}

/* Bytes of workspace: the chunked kernels' (ce, not guarded), the
 * recurrent ones' (ce NULL; rec their plan), or a guarded step's: the flag
 * in the first GUARD_BYTES, then the larger of both paths' (one of them
 * runs). */
static size_t workspace_bytes_of(const ck_entry *ce, const plan *rec, const frnn_step *s, frnn_sizes sz,
                                 const uint8_t *bc, int for_backward) {
  ck_ws cw = {0};
  ws_layout rw = {0};
  if (ce) ck_workspace(ce, s, sz, bc, for_backward, &cw);
  if (!ce || ce->g.guard) plan_workspace(rec, sz, bc, for_backward, &rw);
  if (!ce) return rw.total;
  if (!ce->g.guard) return cw.total;
  return GUARD_BYTES + (cw.total > rw.total ? cw.total : rw.total);
}

frnn_status frnn_gpu_workspace_size(frnn_ctx *ctx, const frnn_step *s, frnn_sizes sz,
                                    const DLTensor *const *inputs, int for_backward, size_t *bytes) {
  frnn_status st = check_call(ctx, s, sz, "frnn_gpu_workspace_size");
  if (st) return st;
  if (!bytes) return diag_fail(ctx, FRNN_E_ARG, "frnn_gpu_workspace_size: bytes is NULL");
  uint8_t bc[FRNN_MAX_PORTS];
  bool have = inputs != NULL;
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    bc[i] = 5;
    if (inputs && inputs[i] && inputs[i]->ndim == 5 && inputs[i]->shape)
      bc[i] = (uint8_t)((inputs[i]->shape[0] == 1 && sz.B > 1) |
                        (inputs[i]->shape[1] == 1 && sz.T > 1) << 1 |
                        (inputs[i]->shape[2] == 1 && sz.H > 1) << 2);
  }
  const ck_entry *ce = chunked_for(ctx, s, sz.M, sz.N, gpu_arch());
  plan p;
  if ((!ce || ce->g.guard) && (st = make_plan(ctx, s, sz.M, sz.N, gpu_arch(), &p))) return st;
  *bytes = workspace_bytes_of(ce, &p, s, sz, have ? bc : NULL, for_backward);
  return FRNN_OK;
}

/* What one frnn_ck_fwd launch runs: chunks c_lo to c_hi from the initial
 * state given, a state stored every `every` chunks from c0 (slot 0) into
 * states (NULL: none) and the rank-one columns into rank (NULL: none), and
 * with outputs and the final state or (a backward window's recompute)
 * without. */
typedef struct ck_run {
  char *states, *rank;
  int64_t c_lo, c_hi, c0, every;
  bool outputs;
} ck_run;

/* init: the initial state; fin and out: the final state and the outputs
 * (absent without outputs). */
static frnn_status launch_ck_forward(frnn_ctx *ctx, const ck_entry *ce, const gpu_module *m, const frnn_step *s,
                                     frnn_sizes sz, const bound *pin, const tview *init, const tview *fin,
                                     bool fin_present, const bound *pout, const ck_run *run, const guard_arg *gd,
                                     void *stream) {
  args a;
  memset(&a, 0, sizeof a);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) arg_tensor(&a, &pin->v[i], true);
  arg_tensor(&a, init, true);
  arg_tensor(&a, fin, fin_present && run->outputs);
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++) arg_tensor(&a, &pout->v[i], run->outputs);
  arg_ptr(&a, run->states);
  arg_ptr(&a, run->rank);
  arg_i64(&a, sz.T);
  arg_i64(&a, sz.H);
  arg_i64(&a, sz.B);
  arg_i64(&a, run->c_lo);
  arg_i64(&a, run->c_hi);
  arg_i64(&a, run->c0);
  arg_i64(&a, run->every);
  arg_i32(&a, run->outputs);
  arg_guard(&a, gd);
  unsigned grid[3] = {(unsigned)ce->p.MB, (unsigned)sz.H, (unsigned)sz.B};
  unsigned block[3] = {(unsigned)ce->p.threads_fwd, 1, 1};
  return cuda_launch(ctx, m->fn[0], "frnn_ck_fwd", grid, block, 1, ce->p.fwd_smem, (CUstream)stream, a.params);
}

/* The forward's kernel: the chunked one (ce), else the recurrent one, its
 * checkpoints in ckpt (the workspace past a guarded step's flag; NULL:
 * none). */
static frnn_status launch_forward(frnn_ctx *ctx, const ck_entry *ce, const gpu_module *m, const frnn_step *s,
                                  frnn_sizes sz, const uint8_t *bc, const bound *pin, const bound *pinit,
                                  const bound *pout, const bound *pfin, char *ckpt, const guard_arg *gd,
                                  void *stream) {
  if (ce) {
    ck_ws w;
    ck_workspace(ce, s, sz, bc, 1, &w);
    ck_run run = {.states = ckpt ? ckpt + w.ckpt : NULL, .rank = ckpt && w.rank != SIZE_MAX ? ckpt + w.rank : NULL,
                  .c_lo = 0, .c_hi = w.n_chunks, .c0 = 0, .every = ce->p.ckpt_every, .outputs = true};
    return launch_ck_forward(ctx, ce, m, s, sz, pin, &pinit->v[0], &pfin->v[0], pfin->present[0], pout, &run, gd,
                             stream);
  }
  args a;
  memset(&a, 0, sizeof a);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) arg_tensor(&a, &pin->v[i], true);
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) arg_tensor(&a, &pinit->v[i], true);
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++) arg_tensor(&a, &pout->v[i], true);
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) arg_tensor(&a, &pfin->v[i], pfin->present[i]);
  ws_layout w;
  plan_workspace(&m->p, sz, bc, 1, &w);
  arg_ptr(&a, ckpt ? ckpt + w.ckpt : NULL);
  arg_i64(&a, sz.T);
  arg_i64(&a, sz.H);
  arg_i64(&a, w.C);
  arg_i64(&a, w.n_ckpt);
  arg_guard(&a, gd);
  unsigned grid[3] = {(unsigned)m->p.fwd.row_blocks, (unsigned)sz.H, (unsigned)sz.B};
  unsigned block[3] = {(unsigned)m->p.fwd.warps * 32, 1, 1};
  return cuda_launch(ctx, m->fn[0], "frnn_fwd", grid, block, 1, 0, (CUstream)stream, a.params);
}

frnn_status frnn_gpu_forward(frnn_ctx *ctx, const frnn_step *s, frnn_sizes sz,
                             const DLTensor *const *inputs, const DLTensor *const *states,
                             DLTensor *const *outputs, DLTensor *const *final_states,
                             void *workspace, size_t workspace_bytes, void *stream) {
  frnn_status st = check_call(ctx, s, sz, "frnn_gpu_forward");
  if (st) return st;
  bound *pin = calloc(4, sizeof(bound)); /* large: kept off the stack */
  if (!pin) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory");
  bound *pinit = pin + 1, *pout = pin + 2, *pfin = pin + 3;
  int dev = -1;
  if ((st = bind_all(ctx, s, FRNN_PORT_INPUT, ROLE_INPUT, inputs, true, sz, NULL, pin, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_STATE, ROLE_STATE, states, true, sz, NULL, pinit, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_OUTPUT, ROLE_OUTPUT, (const DLTensor *const *)outputs, true, sz, NULL, pout, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_STATE, ROLE_FINAL_STATE, (const DLTensor *const *)final_states, false, sz, NULL, pfin, &dev)))
    goto done;
  if ((st = no_alias(ctx, s, pinit, pfin, "final state", "its initial state"))) goto done;
  lower_spec spec;
  memset(&spec, 0, sizeof spec);
  char key[1024];
  int k = snprintf(key, sizeof key, "fwd M=%lld N=%lld ", (long long)sz.M, (long long)sz.N);
  uint8_t bc[FRNN_MAX_PORTS] = {0};
  inputs_bcast(s, sz, pin, bc);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    spec.dt_in[i] = pin->v[i].dtype, key[k++] = dt_char(spec.dt_in[i]);
    spec.in_bcast[i] = bc[i]; /* an input broadcast over T is loaded once (lower_llvm.c) */
    key[k++] = (char)('0' + bc[i]);
  }
  key[k++] = '/';
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) {
    spec.dt_state[i] = pinit->v[i].dtype;
    spec.dt_final[i] = pfin->present[i] ? pfin->v[i].dtype : TD_F32;
    key[k++] = dt_char(spec.dt_state[i]);
    key[k++] = dt_char(spec.dt_final[i]);
  }
  key[k++] = '/';
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++) spec.dt_out[i] = pout->v[i].dtype, key[k++] = dt_char(spec.dt_out[i]);
  spec.contig[CONTIG_IN] = contig_mask(s, FRNN_PORT_INPUT, pin, sz);
  spec.contig[CONTIG_STATE] = contig_mask(s, FRNN_PORT_STATE, pinit, sz);
  spec.contig[CONTIG_OUT] = contig_mask(s, FRNN_PORT_OUTPUT, pout, sz);
  spec.contig[CONTIG_FINAL] = contig_mask(s, FRNN_PORT_STATE, pfin, sz);
  spec.aligned[CONTIG_IN] = aligned_mask(s, FRNN_PORT_INPUT, pin, sz);
  spec.aligned[CONTIG_STATE] = aligned_mask(s, FRNN_PORT_STATE, pinit, sz);
  spec.aligned[CONTIG_OUT] = aligned_mask(s, FRNN_PORT_OUTPUT, pout, sz);
  spec.aligned[CONTIG_FINAL] = aligned_mask(s, FRNN_PORT_STATE, pfin, sz);
  k = append_contig(key, sizeof key, k, &spec);
  k = append_tuning(ctx, key, sizeof key, k);
  const ck_entry *ce = chunked_for(ctx, s, sz.M, sz.N, gpu_arch());
  bool guarded = ce && ce->g.guard;
  cuda_scope scope;
  if ((st = cuda_enter(ctx, dev, &scope))) goto done;
  /* The recurrent kernels' module (a guarded step's fallback too): its plan
   * sizes their workspace. */
  gpu_module *m, *mr = NULL;
  if (!ce || guarded) {
    spec.guard = guarded ? GUARD_FALLBACK : GUARD_NONE;
    snprintf(key + k, sizeof key - (size_t)k, "%s", guarded ? " guarded" : "");
    if ((st = get_module(ctx, s, sz, dev, key, &spec, KERNEL_FWD, NULL, &mr))) goto leave;
  }
  /* The workspace the backward needs, and where the forward's states go:
   * none given (NULL or 0 bytes), a forward without checkpoints; a guarded
   * step's then runs on the recurrent kernels (no flag to guard with). */
  size_t need = workspace_bytes_of(ce, mr ? &mr->p : NULL, s, sz, bc, 1);
  size_t head = guarded ? GUARD_BYTES : 0; /* a guarded forward without checkpoints takes the flag */
  bool given = workspace && workspace_bytes > 0, ckpt = given && workspace_bytes > head;
  if ((ckpt && workspace_bytes < need) || (given && workspace_bytes < head)) {
    st = diag_fail(ctx, FRNN_E_ARG,
                   "frnn_gpu_forward: the workspace has %zu bytes; a forward that a backward "
                   "follows needs %zu (frnn_gpu_workspace_size), one without %zu",
                   workspace_bytes, need, head);
    goto leave;
  }
  if (given && (st = workspace_aligned(ctx, workspace, "frnn_gpu_forward"))) goto leave;
  char *body = ckpt ? (char *)workspace + head : NULL;
  /* A guarded step: the chunked forward sets the flag where a decay is not
   * safely positive; the recurrent forward then runs the call (its blocks
   * return at once while the flag is clear). */
  guard_arg gd = {guarded, given ? workspace : NULL};
  if (ce && (!guarded || given)) {
    spec.guard = guarded ? GUARD_CHUNKED : GUARD_NONE;
    snprintf(key + k, sizeof key - (size_t)k, "%s", guarded ? " ck guarded" : " ck");
    if (!(st = get_module(ctx, s, sz, dev, key, &spec, KERNEL_FWD, ce, &m)) && guarded)
      st = cuda_memset_d8(ctx, (CUdeviceptr)workspace, 0, 4, (CUstream)stream, true);
    if (!st) st = launch_forward(ctx, ce, m, s, sz, bc, pin, pinit, pout, pfin, body, &gd, stream);
  }
  if (!st && mr) st = launch_forward(ctx, NULL, mr, s, sz, bc, pin, pinit, pout, pfin, body, &gd, stream);
leave:
  cuda_leave(&scope);
done:
  free(pin);
  return st;
}

/* The chunked backward kernels' arguments they share: the seeds (each
 * term's gradient array; NULL: none), and the sizes then the window. */
static void arg_seeds(args *a, const chunk_gpu *g, const ck_ws *w, char *ws) {
  for (int q = 0; q < g->n_seeds; q++) arg_ptr(a, w->seed[q] == SIZE_MAX ? NULL : ws + w->seed[q]);
}
static void arg_window(args *a, frnn_sizes sz, int64_t lo, int64_t hi) {
  arg_i64(a, sz.T);
  arg_i64(a, sz.H);
  arg_i64(a, sz.B);
  arg_i64(a, lo);
  arg_i64(a, hi);
}

/* The chunked backward's launches: per window of chunks, from the last,
 * the window's chunk states again where they are sparse (frnn_ck_fwd
 * without outputs), the terms' gradients (frnn_ck_bwd) and the inputs'
 * (frnn_ck_chain); then the broadcast inputs' sums (frnn_reduce_*).  Fused
 * (FRNN_CK_FUSE=1), one frnn_ck_bwd does both for the whole sequence. */
static frnn_status chunked_backward(frnn_ctx *ctx, const ck_entry *ce, const gpu_module *m, const frnn_step *s,
                                    frnn_sizes sz, const uint8_t *bc, const bound *pin, const bound *pgo,
                                    const bound *pgf, const bound *pgi, const bound *pgs, void *workspace,
                                    size_t workspace_bytes, const guard_arg *gd, void *stream) {
  const chunk_gpu *g = &ce->g;
  int n_in = s->n_ports[FRNN_PORT_INPUT], n_out = s->n_ports[FRNN_PORT_OUTPUT];
  ck_ws w;
  ck_workspace(ce, s, sz, bc, 1, &w);
  if (workspace_bytes < w.total)
    return diag_fail(ctx, FRNN_E_ARG, "frnn_gpu_backward: the workspace has %zu bytes; it needs %zu "
                                      "(frnn_gpu_workspace_size with for_backward)",
                     workspace_bytes, w.total);
  char *ws = workspace;
  CUstream cs = (CUstream)stream;
  frnn_status st;
  /* The inputs' gradients, or for a broadcast input a partial, float32
   * contiguous: [B][T][H][m][n] (broadcast over B or H only), or (over T)
   * [chunk * B + b][H][m][n], indexed by the kernel; where the heads add
   * into one partial, it is zeroed first (every window adds to it).  The
   * terms' gradients need no zeroing: each chunk's first product into an
   * array stores every element of it (lower_chunked.c). */
  tview gin[FRNN_MAX_PORTS];
  for (int i = 0; i < n_in; i++) {
    gin[i] = pgi->v[i];
    if (!pgi->present[i] || !bc[i]) continue;
    int cls = s->ports[FRNN_PORT_INPUT][i].cls;
    int64_t m_ = CLASS_HAS_M(cls) ? sz.M : 1, n_ = CLASS_HAS_N(cls) ? sz.N : 1;
    tview pv = {.data = ws + w.partial[i], .dtype = TD_F32};
    int64_t heads = bcast_over_heads_only(bc[i]) ? 1 : sz.H; /* the heads add into one */
    pv.stride[4] = CLASS_HAS_N(cls) ? 1 : 0;
    pv.stride[3] = CLASS_HAS_M(cls) ? n_ : 0;
    pv.stride[2] = heads == 1 ? 0 : m_ * n_;
    pv.stride[1] = heads * m_ * n_;
    pv.stride[0] = sz.T * heads * m_ * n_;
    gin[i] = pv;
    if (heads == 1 && (st = cuda_memset_d8(ctx, (CUdeviceptr)(ws + w.partial[i]), 0, w.partial_bytes[i], cs, true)))
      return st;
  }
  unsigned block[3] = {(unsigned)ce->p.threads, 1, 1};
  bool sparse = ce->p.ckpt_every > 1;
  /* Windows from the last, in groups of chunks aligned to the stored
   * states (sparse: a stored state's chunks, recomputed before their last
   * window; else a window each). */
  int64_t K = ce->p.ckpt_every, G = w.group_chunks, W = w.win_chunks;
  size_t rank_bytes = (size_t)(sz.B * sz.H * ck_rank_floats(&ce->p, g)) * 4;
  char *last_state = ws + w.ckpt + (size_t)((w.n_chunks + K - 1) / K) * w.state_bytes; /* after every chunk */
  for (int64_t hi = w.n_chunks, lo; hi > 0; hi = lo) {
    int64_t glo = (hi - 1) / G * G, ghi = glo + G < w.n_chunks ? glo + G : w.n_chunks;
    lo = glo + (hi - 1 - glo) / W * W;
    char *stored = ws + w.ckpt + (size_t)(glo / K) * w.state_bytes; /* chunk glo's first state */
    if (sparse && hi == ghi) {
      /* The group's other first states again (and every chunk's rank-one
       * columns): the forward from the state stored at its start, without
       * outputs, into the scratch.  Its initial state is a view of that
       * checkpoint slot. */
      tview from = {.data = stored, .dtype = TD_F32};
      from.stride[4] = 1, from.stride[3] = sz.N, from.stride[2] = sz.M * sz.N, from.stride[1] = 0;
      from.stride[0] = sz.H * sz.M * sz.N;
      ck_run run = {.states = ws + w.scratch, .rank = ws + w.scratch_rank, .c_lo = glo, .c_hi = ghi,
                    .c0 = glo + 1, .every = 1, .outputs = false};
      if ((st = launch_ck_forward(ctx, ce, m, s, sz, pin, &from, &from, false, pgo, &run, gd, stream))) return st;
    }
    /* the state after the window: the last, a stored one or a recomputed one */
    char *after = hi == w.n_chunks ? last_state
                  : hi == ghi      ? ws + w.ckpt + (size_t)(hi / K) * w.state_bytes
                                   : ws + w.scratch + (size_t)(hi - glo - 1) * w.state_bytes;
    /* frnn_ck_bwd: inputs, output gradients, the final state's gradient and
     * the initial state's, the state after the window, seeds (fused: the
     * inputs' gradients too), sizes, the window, the carried gradient, the
     * chunks' first states (glo's stored, the others in src from its slot
     * 0's chunk), the rank-one columns (from chunk glo) */
    args a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < n_in; i++) arg_tensor(&a, &pin->v[i], true);
    for (int i = 0; i < n_out; i++) arg_tensor(&a, &pgo->v[i], pgo->present[i]);
    arg_tensor(&a, &pgf->v[0], pgf->present[0]);
    arg_tensor(&a, &pgs->v[0], pgs->present[0]);
    arg_ptr(&a, after);
    arg_seeds(&a, g, &w, ws);
    if (ce->p.fused)
      for (int i = 0; i < n_in; i++) arg_tensor(&a, &gin[i], pgi->present[i]);
    arg_window(&a, sz, lo, hi);
    arg_ptr(&a, w.carry == SIZE_MAX ? NULL : ws + w.carry);
    arg_ptr(&a, stored);
    arg_i64(&a, glo);
    arg_ptr(&a, ws + (sparse ? w.scratch : w.ckpt));
    arg_i64(&a, sparse ? glo + 1 : 0);
    arg_ptr(&a, sparse ? ws + w.scratch_rank : w.rank == SIZE_MAX ? NULL : ws + w.rank + (size_t)glo * rank_bytes);
    arg_guard(&a, gd);
    unsigned grid[3] = {(unsigned)ce->p.MB, (unsigned)sz.H, (unsigned)sz.B};
    if ((st = cuda_launch(ctx, m->fn[1], "frnn_ck_bwd", grid, block, 1, ce->p.bwd_smem, cs, a.params))) return st;
    if (ce->p.fused) continue;
    /* frnn_ck_chain: inputs, output gradients, seeds, the inputs' gradients,
     * sizes, the window */
    memset(&a, 0, sizeof a);
    for (int i = 0; i < n_in; i++) arg_tensor(&a, &pin->v[i], true);
    for (int i = 0; i < n_out; i++) arg_tensor(&a, &pgo->v[i], pgo->present[i]);
    arg_seeds(&a, g, &w, ws);
    for (int i = 0; i < n_in; i++) arg_tensor(&a, &gin[i], pgi->present[i]);
    arg_window(&a, sz, lo, hi);
    arg_guard(&a, gd);
    unsigned grid_c[3] = {(unsigned)(hi - lo), (unsigned)sz.H, (unsigned)sz.B};
    if ((st = cuda_launch(ctx, m->fn[5], "frnn_ck_chain", grid_c, block, 1, ce->p.chain_smem, cs, a.params)))
      return st;
  }
  st = FRNN_OK;
  for (int i = 0; i < n_in && !st; i++) {
    if (!bc[i] || !pgi->present[i]) continue;
    int cls = s->ports[FRNN_PORT_INPUT][i].cls;
    int64_t m_ = CLASS_HAS_M(cls) ? sz.M : 1, n_ = CLASS_HAS_N(cls) ? sz.N : 1;
    /* frnn_reduce sums [Bp][Tp][H] over Bp (overB) and H (overH).  Over T,
     * the partial [chunk][b] is read as Bp = chunks (summed), Tp = B (each b
     * its own: the output's T stride is then its B stride); over B and T
     * together, Bp = chunks * B and Tp = 1. */
    tview out = pgi->v[i];
    int64_t Bp = sz.B, Tp = sz.T;
    int overB = bc[i] & 1;
    if (bc[i] & 2) {
      overB = 1;
      if (bc[i] & 1) {
        Bp = w.n_chunks * sz.B, Tp = 1;
      } else {
        Bp = w.n_chunks, Tp = sz.B;
        out.stride[1] = out.stride[0];
        out.stride[0] = 0;
      }
    }
    int d = pgi->v[i].dtype;
    bool one = bcast_over_heads_only(bc[i]); /* the heads' sum is made: the partial has one */
    st = launch_reduce(ctx, m->fn[2 + d], reduce_kernel_names[d], ws + w.partial[i], &out, Bp, Tp, one ? 1 : sz.H, m_,
                       n_, overB, one ? 0 : (bc[i] >> 2) & 1, gd, cs);
  }
  return st;
}

/* The recurrent backward's launches: frnn_bwd, then the broadcast inputs'
 * sums (frnn_reduce_*). */
static frnn_status recurrent_backward(frnn_ctx *ctx, const gpu_module *m, const frnn_step *s, frnn_sizes sz,
                                      const uint8_t *bc, const bound *pin, const bound *pgo, const bound *pgf,
                                      const bound *pgi, const bound *pgs, void *workspace, size_t workspace_bytes,
                                      const guard_arg *gd, void *stream) {
  ws_layout w;
  plan_workspace(&m->p, sz, bc, 1, &w);
  if (workspace_bytes < w.total)
    return diag_fail(ctx, FRNN_E_ARG, "frnn_gpu_backward: the workspace has %zu bytes; it needs %zu "
                                      "(frnn_gpu_workspace_size with for_backward)",
                     workspace_bytes, w.total);
  args a;
  memset(&a, 0, sizeof a);
  char *wsb = workspace;
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) arg_tensor(&a, &pin->v[i], true);
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++) arg_tensor(&a, &pgo->v[i], pgo->present[i]);
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) arg_tensor(&a, &pgf->v[i], pgf->present[i]);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    if (!(bc[i] & 5) || !pgi->present[i]) {
      arg_tensor(&a, &pgi->v[i], pgi->present[i]);
      continue;
    }
    /* Per-head partial, float32 [B,Tp,H,m,n] contiguous, summed after. */
    int cls = s->ports[FRNN_PORT_INPUT][i].cls;
    int64_t m_ = CLASS_HAS_M(cls) ? sz.M : 1, n_ = CLASS_HAS_N(cls) ? sz.N : 1, tp = (bc[i] & 2) ? 1 : sz.T;
    tview pv = {.data = wsb + w.partial[i], .dtype = TD_F32};
    pv.stride[4] = CLASS_HAS_N(cls) ? 1 : 0;
    pv.stride[3] = CLASS_HAS_M(cls) ? n_ : 0;
    pv.stride[2] = m_ * n_;
    pv.stride[1] = tp == 1 ? 0 : sz.H * m_ * n_;
    pv.stride[0] = tp * sz.H * m_ * n_;
    arg_tensor(&a, &pv, true);
  }
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) arg_tensor(&a, &pgs->v[i], pgs->present[i]);
  arg_ptr(&a, wsb + w.ckpt);
  arg_ptr(&a, wsb + w.scratch);
  arg_i64(&a, sz.T);
  arg_i64(&a, sz.H);
  arg_i64(&a, w.C);
  arg_i64(&a, w.n_ckpt);
  arg_i64(&a, w.C2);
  arg_guard(&a, gd);
  /* A split head's blocks form one cluster along x (plan.c), unless its
   * rows need nothing from each other. */
  unsigned G = (unsigned)m->p.bwd.row_blocks;
  unsigned grid[3] = {G, (unsigned)sz.H, (unsigned)sz.B};
  unsigned block[3] = {(unsigned)plan_bwd_threads(&m->p), 1, 1};
  frnn_status st = cuda_launch(ctx, m->fn[1], "frnn_bwd", grid, block, m->p.bwd_rows_apart ? 1 : G, w.bwd_shared,
                               (CUstream)stream, a.params);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT] && !st; i++) {
    if (!(bc[i] & 5) || !pgi->present[i]) continue;
    int cls = s->ports[FRNN_PORT_INPUT][i].cls;
    int64_t m_ = CLASS_HAS_M(cls) ? sz.M : 1, n_ = CLASS_HAS_N(cls) ? sz.N : 1, tp = (bc[i] & 2) ? 1 : sz.T;
    int d = pgi->v[i].dtype;
    st = launch_reduce(ctx, m->fn[2 + d], kernel_names[2 + d], wsb + w.partial[i], &pgi->v[i], sz.B, tp, sz.H, m_,
                       n_, bc[i] & 1, (bc[i] >> 2) & 1, gd, (CUstream)stream);
  }
  return st;
}

/* The backward's specialisation and module key, for the chunked kernels
 * (they sum an input broadcast over T per chunk first, into a partial) or
 * the recurrent ones; *kernels: the kernels it needs. */
static void backward_spec(frnn_ctx *ctx, const frnn_step *s, frnn_sizes sz, const uint8_t *bc, const bound *pin,
                          const bound *pgo, const bound *pgf, const bound *pgi, const bound *pgs,
                          const ck_entry *chunked, int guard, lower_spec *spec, char *key, size_t key_size,
                          unsigned *kernels) {
  memset(spec, 0, sizeof *spec); /* states float32 (a recompute starts from a checkpoint) */
  int k = snprintf(key, key_size, "bwd M=%lld N=%lld ", (long long)sz.M, (long long)sz.N);
  /* sparse checkpoints: the forward again, a window at a time */
  *kernels = KERNEL_BWD | (chunked && chunked->p.ckpt_every > 1 ? KERNEL_FWD : 0);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    spec->dt_in[i] = pin->v[i].dtype;
    spec->in_bcast[i] = bc[i];
    bool partial = (bc[i] & (chunked ? 7 : 5)) != 0;
    spec->dt_gin[i] = partial || !pgi->present[i] ? TD_F32 : pgi->v[i].dtype;
    if (partial && pgi->present[i]) *kernels |= KERNEL_REDUCE_F32 << pgi->v[i].dtype;
    key[k++] = dt_char(spec->dt_in[i]);
    key[k++] = (char)('0' + bc[i]);
    key[k++] = dt_char(spec->dt_gin[i]);
  }
  key[k++] = '/';
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) {
    spec->dt_gfinal[i] = pgf->present[i] ? pgf->v[i].dtype : TD_F32;
    spec->dt_gstate[i] = pgs->present[i] ? pgs->v[i].dtype : TD_F32;
    key[k++] = dt_char(spec->dt_gfinal[i]);
    key[k++] = dt_char(spec->dt_gstate[i]);
  }
  key[k++] = '/';
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++) {
    spec->dt_gout[i] = pgo->present[i] ? pgo->v[i].dtype : TD_F32;
    key[k++] = dt_char(spec->dt_gout[i]);
  }
  spec->contig[CONTIG_IN] = contig_mask(s, FRNN_PORT_INPUT, pin, sz);
  spec->contig[CONTIG_GOUT] = contig_mask(s, FRNN_PORT_OUTPUT, pgo, sz);
  spec->contig[CONTIG_GFINAL] = contig_mask(s, FRNN_PORT_STATE, pgf, sz);
  spec->contig[CONTIG_GSTATE] = contig_mask(s, FRNN_PORT_STATE, pgs, sz);
  spec->aligned[CONTIG_IN] = aligned_mask(s, FRNN_PORT_INPUT, pin, sz);
  spec->aligned[CONTIG_GOUT] = aligned_mask(s, FRNN_PORT_OUTPUT, pgo, sz);
  spec->aligned[CONTIG_GFINAL] = aligned_mask(s, FRNN_PORT_STATE, pgf, sz);
  spec->aligned[CONTIG_GSTATE] = aligned_mask(s, FRNN_PORT_STATE, pgs, sz);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    if ((bc[i] & 5) || (pgi->present[i] && inner_contig(&pgi->v[i], s->ports[FRNN_PORT_INPUT][i].cls, sz)))
      spec->contig[CONTIG_GIN] |= 1u << i; /* partials are laid out contiguously */
    /* a partial's own alignment is not checked: its gradient moves element by element */
    if (!(bc[i] & (chunked ? 7 : 5)) && pgi->present[i] && vec_aligned(&pgi->v[i], s->ports[FRNN_PORT_INPUT][i].cls, sz))
      spec->aligned[CONTIG_GIN] |= 1u << i;
  }
  k = append_contig(key, key_size, k, spec);
  k += snprintf(key + k, key_size - (size_t)k, " k%u", *kernels);
  k = append_tuning(ctx, key, key_size, k);
  spec->guard = guard;
  snprintf(key + k, key_size - (size_t)k, "%s%s", chunked ? " ck" : "", guard ? " guarded" : "");
}

frnn_status frnn_gpu_backward(frnn_ctx *ctx, const frnn_step *s, frnn_sizes sz,
                              const DLTensor *const *inputs, const DLTensor *const *states,
                              const DLTensor *const *grad_outputs,
                              const DLTensor *const *grad_final_states,
                              DLTensor *const *grad_inputs, DLTensor *const *grad_states,
                              void *workspace, size_t workspace_bytes, void *stream) {
  frnn_status st = check_call(ctx, s, sz, "frnn_gpu_backward");
  if (st) return st;
  bound *b = calloc(6, sizeof(bound));
  if (!b) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory");
  bound *pin = b, *pinit = b + 1, *pgo = b + 2, *pgf = b + 3, *pgi = b + 4, *pgs = b + 5;
  int dev = -1;
  if ((st = bind_all(ctx, s, FRNN_PORT_INPUT, ROLE_INPUT, inputs, true, sz, NULL, pin, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_STATE, ROLE_STATE, states, true, sz, NULL, pinit, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_OUTPUT, ROLE_GRAD_OUTPUT, grad_outputs, false, sz, NULL, pgo, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_STATE, ROLE_GRAD_FINAL_STATE, grad_final_states, false, sz, NULL, pgf, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_INPUT, ROLE_GRAD_INPUT, (const DLTensor *const *)grad_inputs, false, sz, pin, pgi, &dev)) ||
      (st = bind_all(ctx, s, FRNN_PORT_STATE, ROLE_GRAD_STATE, (const DLTensor *const *)grad_states, false, sz, NULL, pgs, &dev)))
    goto done;
  if (!workspace) {
    st = diag_fail(ctx, FRNN_E_ARG, "frnn_gpu_backward: the workspace is NULL; pass the one the "
                                    "forward stored its checkpoints in");
    goto done;
  }
  if ((st = no_alias(ctx, s, pgf, pgs, "gradient of initial state", "the gradient of its final state")))
    goto done;
  if ((st = workspace_aligned(ctx, workspace, "frnn_gpu_backward"))) goto done;
  uint8_t bc[FRNN_MAX_PORTS];
  inputs_bcast(s, sz, pin, bc);
  const ck_entry *ce = chunked_for(ctx, s, sz.M, sz.N, gpu_arch());
  bool guarded = ce && ce->g.guard;
  lower_spec spec;
  char key[1024];
  unsigned kernels;
  cuda_scope scope;
  if ((st = cuda_enter(ctx, dev, &scope))) goto done;
  gpu_module *m;
  char *body = workspace;
  size_t body_bytes = workspace_bytes;
  if (guarded) {
    if (workspace_bytes < GUARD_BYTES) {
      st = diag_fail(ctx, FRNN_E_ARG, "frnn_gpu_backward: the workspace has %zu bytes; it needs more than %d "
                                      "(frnn_gpu_workspace_size with for_backward)",
                     workspace_bytes, GUARD_BYTES);
      goto leave;
    }
    body += GUARD_BYTES, body_bytes -= GUARD_BYTES;
    /* The recurrent kernels first (they return at once unless the forward
     * flagged the call), then the chunked ones (the reverse): the chunked
     * backward zeroes partials of its own layout, which would overwrite the
     * recurrent forward's checkpoints before the recurrent backward read them. */
    guard_arg gd = {true, workspace};
    backward_spec(ctx, s, sz, bc, pin, pgo, pgf, pgi, pgs, NULL, GUARD_FALLBACK, &spec, key, sizeof key, &kernels);
    if ((st = get_module(ctx, s, sz, dev, key, &spec, kernels, NULL, &m)) ||
        (st = recurrent_backward(ctx, m, s, sz, bc, pin, pgo, pgf, pgi, pgs, body, body_bytes, &gd, stream)))
      goto leave;
    backward_spec(ctx, s, sz, bc, pin, pgo, pgf, pgi, pgs, ce, GUARD_CHUNKED, &spec, key, sizeof key, &kernels);
    if (!(st = get_module(ctx, s, sz, dev, key, &spec, kernels, ce, &m)))
      st = chunked_backward(ctx, ce, m, s, sz, bc, pin, pgo, pgf, pgi, pgs, body, body_bytes, &gd, stream);
    goto leave;
  }
  backward_spec(ctx, s, sz, bc, pin, pgo, pgf, pgi, pgs, ce, GUARD_NONE, &spec, key, sizeof key, &kernels);
  if (!(st = get_module(ctx, s, sz, dev, key, &spec, kernels, ce, &m)))
    st = ce ? chunked_backward(ctx, ce, m, s, sz, bc, pin, pgo, pgf, pgi, pgs, body, body_bytes, &no_guard, stream)
            : recurrent_backward(ctx, m, s, sz, bc, pin, pgo, pgf, pgi, pgs, body, body_bytes, &no_guard, stream);
leave:
  cuda_leave(&scope);
done:
  free(b);
  return st;
}
