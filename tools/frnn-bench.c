/* frnn-bench - time steps on the GPU (SPEC section 4).
 *
 *   frnn-bench [STEP.frnn ...] [--B 8] [--T 1024] [--H 32] [--M 128] [--N 128]
 *              [--dtype bf16|f32|f16] [--reps 30] [--warmup 5] [--forward-only]
 *              [--check B=1,T=64,H=2,M=32,N=32|none] [--seed N] [--json FILE]
 *
 * Without files: every .frnn file of examples/ ($FRNN_SOURCE_DIR/examples,
 * else ./examples).  Per model: random inputs in the ranges of the file's
 * "# ranges:" line (tools/util/ranges.h), two input sets alternated between
 * repetitions, CUDA events on one stream (the legacy default stream) after
 * warm-up; the forward alone and the forward+backward; memory, bytes, flops,
 * the memory floor, the error against the float64 reference at a small size
 * and the time of the first call with an empty and with a warm on-disk
 * cache.  The quantities are defined in USAGE below.
 *
 * The tool links the static library and uses its internal CUDA helpers
 * (lib/frnn_internal.h, section cuda.c) for device memory and events, its
 * step graph to count flops and cache_clear_memory() so that a "warm" first
 * call really reads the on-disk cache.  The one driver entry point those
 * helpers lack, cuMemcpyDtoDAsync (for the copy bandwidth), is looked up in
 * the driver the library already loaded (driver_proc).
 *
 * Exit status: 0 every model ran, 1 a model failed or no GPU, 2 usage. */
#include "../lib/frnn_internal.h"
#include "frnn.h"
#include "npy.h"
#include "ranges.h"
#include "toolutil.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "frnn-bench"
enum { EXIT_FAIL = 1, EXIT_USAGE = TU_EXIT_USAGE };
enum { COPY_REPS = 10 };

static const char USAGE[] =
    "usage: frnn-bench [STEP.frnn ...] [options]\n"
    "\n"
    "Times each step on the GPU; without files, every examples/*.frnn (from\n"
    "$FRNN_SOURCE_DIR/examples, else ./examples).\n"
    "\n"
    "  --B 8 --T 1024 --H 32 --M 128 --N 128   sizes of the timed calls\n"
    "  --dtype bf16        dtype of inputs, outputs and gradients (bf16, f32, f16);\n"
    "                      states and their gradients are float32\n"
    "  --reps 30           timed repetitions (median, min, p90 reported)\n"
    "  --warmup 5          untimed calls before each timed series\n"
    "  --forward-only      no backward: fw columns only\n"
    "  --lean              the backward's lean mode (frnn_ctx_set_backward_mode\n"
    "                      FRNN_BACKWARD_LEAN: fewer stored states, recomputed)\n"
    "  --check SIZES       sizes of the comparison with the float64 reference\n"
    "                      (default B=1,T=64,H=2,M=32,N=32; 'none' skips it)\n"
    "  --seed N            seed of the random inputs (default 1; each model's\n"
    "                      stream is seeded with N xor FNV-1a(step name))\n"
    "  --json FILE         also write the results as JSON ('-': stdout, the table\n"
    "                      then goes to stderr)\n"
    "\n"
    "Inputs are uniform in the ranges of the file's '# ranges:' line (unlisted:\n"
    "inputs [-1,1), states [-0.1,0.1)), gradients of outputs and final states in\n"
    "[-1,1).  Two sets of every tensor are allocated and alternated between calls\n"
    "(one when two do not fit).  Columns:\n"
    "  fw ms      frnn_gpu_forward with the workspace of a forward alone (none, or a\n"
    "             guarded step's flag: no checkpoints), CUDA events,\n"
    "             median [min, p90] over --reps\n"
    "  fw+bw ms   frnn_gpu_forward with the backward workspace, then\n"
    "             frnn_gpu_backward, timed as one region\n"
    "  peak GB    bytes of inputs + states + outputs + final states + workspace +\n"
    "             gradients of inputs and states + gradients of outputs and final\n"
    "             states (one set; 1 GB = 1e9 bytes)\n"
    "  GB/s       bytes / median time; fw bytes = inputs + initial states read once,\n"
    "             outputs + final states written once; fw+bw bytes = fw bytes +\n"
    "             inputs + initial states read again + output and final-state\n"
    "             gradients read + input and state gradients written\n"
    "  GFLOP/s    flops / median time; flops per step = sum over the step graph's\n"
    "             nodes: an elementwise node costs the element count of its class,\n"
    "             a sum that of its operand, leaves and broadcasts nothing; fw =\n"
    "             that x B*T*H, fw+bw = (step + its adjoint graph) x B*T*H (the\n"
    "             states the backward recomputes from checkpoints are not counted)\n"
    "  floor ms   bytes / copy bandwidth, the latter measured in this run: a 1 GiB\n"
    "             device-to-device copy, 2 * bytes / median time\n"
    "  max err    largest ||gpu - ref|| / ||ref|| over every output, final state\n"
    "             and gradient at the --check sizes ('!': above SPEC section 3's\n"
    "             bound for --dtype: bf16 1e-2, f16 2e-3, f32 1e-5)\n"
    "  cold s     wall time of the model's first forward+backward in this process\n"
    "             (synchronised) with an empty cache directory (FRNN_CACHE_DIR set\n"
    "             to a fresh directory): compile + load + run (LLVM's one-time set-up\n"
    "             is done before the first model, on a tiny step)\n"
    "  warm s     the same again with a fresh context and the in-process cache\n"
    "             emptied: cubin read from the on-disk cache + load + run\n"
    "Exit status: 0 every model ran, 1 a model failed (its row says why) or no GPU,\n"
    "2 usage error.\n";

/* ---------------------------------------------------------------- options */
typedef struct options {
  char **files;
  int n_files;
  frnn_sizes sz, check_sz;
  bool check, forward_only, lean;
  DLDataType dt;
  const char *dt_name;
  int reps, warmup;
  uint64_t seed;
  const char *json;
} options;

#define usage_error(...) tu_usage_error(PROG, __VA_ARGS__)

static int add_file(options *o, const char *path) {
  char **f = realloc(o->files, (size_t)(o->n_files + 1) * sizeof *f);
  if (!f || !(f[o->n_files] = strdup(path))) {
    if (f)
      o->files = f;
    fprintf(stderr, PROG ": out of memory\n");
    return EXIT_FAIL;
  }
  o->files = f;
  o->n_files++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.frnn of $FRNN_SOURCE_DIR/examples, else of ./examples, sorted. */
static int add_examples(options *o) {
  char dir[4096];
  const char *src = getenv("FRNN_SOURCE_DIR");
  if (src && *src)
    snprintf(dir, sizeof dir, "%s/examples", src);
  else
    snprintf(dir, sizeof dir, "examples");
  DIR *d = opendir(dir);
  if (!d)
    return usage_error("no step files given, and %s: %s (give files, or set FRNN_SOURCE_DIR to "
                       "the source tree)",
                       dir, strerror(errno));
  struct dirent *e;
  int first = o->n_files, rc = 0;
  while (!rc && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len > 5 && !strcmp(e->d_name + len - 5, ".frnn")) {
      char path[4400];
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      rc = add_file(o, path);
    }
  }
  closedir(d);
  if (rc)
    return rc;
  if (o->n_files == first)
    return usage_error("no .frnn files in %s", dir);
  qsort(o->files + first, (size_t)(o->n_files - first), sizeof *o->files, cmp_str);
  return 0;
}

static int parse_count(const char *opt, const char *v, int64_t min, int64_t max, int64_t *out) {
  if (tu_parse_i64(v, out) || *out < min || *out > max)
    return usage_error("%s '%s': expected an integer from %lld to %lld", opt, v, (long long)min,
                       (long long)max);
  return 0;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, options *o) {
  static const char *const VALUED[] = {"--B",     "--T",     "--H",    "--M",
                                       "--N",     "--dtype", "--reps", "--warmup",
                                       "--check", "--seed",  "--json"};
  o->sz = (frnn_sizes){8, 1024, 32, 128, 128};
  o->check_sz = (frnn_sizes){1, 64, 2, 32, 32};
  o->check = true;
  o->dt = NPY_BF16;
  o->dt_name = "bf16";
  o->reps = 30, o->warmup = 5;
  o->seed = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL, *opt = NULL;
    char err[256];
    for (size_t k = 0; k < sizeof VALUED / sizeof *VALUED && !opt; k++) {
      int r = tu_opt(argc, argv, &i, VALUED[k], &v, err, sizeof err);
      if (r < 0)
        return usage_error("%s", err);
      if (r)
        opt = VALUED[k];
    }
    int rc = 0;
    int64_t n = 0;
    if (!opt) {
      if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        fputs(USAGE, stdout);
        return 0;
      } else if (!strcmp(a, "--forward-only")) {
        o->forward_only = true;
      } else if (!strcmp(a, "--lean")) {
        o->lean = true;
      } else if (a[0] == '-' && a[1]) {
        return usage_error("unknown option '%s'", a);
      } else {
        rc = add_file(o, a);
      }
    } else if (opt[2] && !opt[3] && strchr("BTHMN", opt[2])) { /* --B ... --N */
      if (!(rc = parse_count(opt, v, 1, (int64_t)1 << 40, &n))) {
        int64_t *f[] = {&o->sz.B, &o->sz.T, &o->sz.H, &o->sz.M, &o->sz.N};
        *f[strchr("BTHMN", opt[2]) - "BTHMN"] = n;
      }
    } else if (!strcmp(opt, "--dtype")) {
      if (tu_parse_dtype(v, &o->dt) || npy_dtype_equal(o->dt, NPY_F64))
        return usage_error("--dtype '%s': expected bf16, f32 or f16", v);
      o->dt_name = npy_dtype_equal(o->dt, NPY_BF16)  ? "bf16"
                   : npy_dtype_equal(o->dt, NPY_F16) ? "f16"
                                                     : "f32";
    } else if (!strcmp(opt, "--reps")) {
      if (!(rc = parse_count(opt, v, 1, 100000, &n)))
        o->reps = (int)n;
    } else if (!strcmp(opt, "--warmup")) {
      if (!(rc = parse_count(opt, v, 0, 100000, &n)))
        o->warmup = (int)n;
    } else if (!strcmp(opt, "--check")) {
      if (!strcmp(v, "none")) {
        o->check = false;
      } else {
        unsigned given;
        o->check = true;
        if (tu_parse_sizes(v, &o->check_sz, &given, err, sizeof err))
          return usage_error("--check: %s", err);
      }
    } else if (!strcmp(opt, "--seed")) {
      if (!(rc = parse_count(opt, v, 0, INT64_MAX, &n)))
        o->seed = (uint64_t)n;
    } else { /* --json */
      o->json = v;
    }
    if (rc)
      return rc;
  }
  if (o->n_files == 0) {
    int rc = add_examples(o);
    if (rc)
      return rc;
  }
  return -1;
}

/* ------------------------------------------------------------------ time */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct stats {
  double median, min, p90; /* ms; NaN: not measured */
} stats;

static const stats NO_STATS = {NAN, NAN, NAN};

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median (mean of the middle two for an even count), min, and the 90th
 * percentile by nearest rank. */
static stats stats_of(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  stats s;
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v[0];
  int k = (int)ceil(0.9 * n) - 1;
  s.p90 = v[k < 0 ? 0 : k];
  return s;
}

/* ------------------------------------------------------------------ CUDA */
/* A driver entry point that lib/cuda.c's table lacks, from the driver the
 * library has loaded (same path: $FRNN_LIBCUDA or libcuda.so.1), by base
 * name at CUDA 12.0's ABI; NULL if there is none. */
static void *driver_proc(const char *name) {
  const char *path = getenv("FRNN_LIBCUDA");
  if (!path || !*path)
    path = "libcuda.so.1";
  void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (!lib)
    return NULL;
  void *sym = dlsym(lib, "cuGetProcAddress_v2");
  int (*get_proc)(const char *, void **, int, uint64_t, int *);
  if (!sym)
    return NULL;
  memcpy(&get_proc, &sym, sizeof sym);
  void *fn = NULL;
  int status = 0;
  if (get_proc(name, &fn, 12000, 0, &status) != 0 || status != 0)
    fn = NULL;
  return fn; /* the handle is kept: the library never unloads the driver */
}

/* Bandwidth of a 1 GiB device-to-device copy in GB/s (2 * bytes / median
 * time over COPY_REPS copies after 2 untimed ones); NaN with a note when it
 * cannot be measured. */
static double copy_bandwidth(frnn_ctx *ctx, char *note, size_t note_size) {
  int (*dtod)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  void *fn = driver_proc("cuMemcpyDtoDAsync");
  if (!fn) {
    snprintf(note, note_size, "the driver has no cuMemcpyDtoDAsync");
    return NAN;
  }
  memcpy(&dtod, &fn, sizeof fn);
  const size_t bytes = (size_t)1 << 30;
  CUdeviceptr src = 0, dst = 0;
  CUevent ev[2 * COPY_REPS] = {0};
  double ms[COPY_REPS], bw = NAN;
  int r = 0;
  if (cuda_malloc(ctx, bytes, &src) || cuda_malloc(ctx, bytes, &dst) ||
      cuda_memset_d8(ctx, src, 0x5a, bytes, NULL, 0))
    goto done;
  for (int k = 0; k < 2 * COPY_REPS; k++)
    if (cuda_event_create(ctx, &ev[k]))
      goto done;
  for (int k = 0; k < 2 && !r; k++)
    r = dtod(dst, src, bytes, NULL);
  for (int k = 0; k < COPY_REPS && !r; k++) {
    if (cuda_event_record(ctx, ev[2 * k], NULL))
      goto done;
    r = dtod(dst, src, bytes, NULL);
    if (cuda_event_record(ctx, ev[2 * k + 1], NULL))
      goto done;
  }
  if (r) {
    snprintf(note, note_size, "cuMemcpyDtoDAsync failed: CUDA error %d", r);
    goto out;
  }
  if (cuda_event_sync(ctx, ev[2 * COPY_REPS - 1]))
    goto done;
  for (int k = 0; k < COPY_REPS; k++) {
    float t;
    if (cuda_event_elapsed(ctx, ev[2 * k], ev[2 * k + 1], &t))
      goto done;
    ms[k] = t;
  }
  stats s = stats_of(ms, COPY_REPS);
  if (s.median > 0)
    bw = 2.0 * (double)bytes / (s.median * 1e-3) / 1e9;
  else
    snprintf(note, note_size, "copy took no measurable time");
  goto out;
done:
  snprintf(note, note_size, "%s", frnn_ctx_error(ctx));
out:
  for (int k = 0; k < 2 * COPY_REPS; k++)
    cuda_event_destroy(ev[k]);
  cuda_free(ctx, src);
  cuda_free(ctx, dst);
  return bw;
}

/* The float32 FMA ceiling: a PTX kernel of 8 independent FMA chains per
 * thread (32 FMAs per iteration), enough blocks to fill every SM; GFLOP/s
 * from the median of FMA_REPS launches (2 flops per FMA).  The result is
 * stored only if it equals a value it cannot take, so nothing is optimised
 * away and no bandwidth is used. */
enum { FMA_REPS = 5, FMA_BLOCKS = 132 * 16, FMA_THREADS = 256, FMA_ITERS = 4096 };
static const char fma_ptx[] =
    ".version 8.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry frnn_fma_peak(.param .u64 out, .param .u32 iters)\n{\n"
    "  .reg .pred p;\n  .reg .b32 i, n, tid;\n  .reg .f32 a<8>, b, c;\n  .reg .b64 o;\n"
    "  ld.param.u64 o, [out];\n  ld.param.u32 n, [iters];\n  mov.u32 tid, %tid.x;\n"
    "  cvt.rn.f32.u32 a0, tid;\n  add.f32 a1, a0, 0f3F800000;\n  add.f32 a2, a1, 0f3F800000;\n"
    "  add.f32 a3, a2, 0f3F800000;\n  add.f32 a4, a3, 0f3F800000;\n  add.f32 a5, a4, 0f3F800000;\n"
    "  add.f32 a6, a5, 0f3F800000;\n  add.f32 a7, a6, 0f3F800000;\n"
    "  mov.f32 b, 0f3F7FF972;\n  mov.f32 c, 0f3A83126F;\n  mov.u32 i, 0;\n"
    "LOOP:\n"
#define FMA8 "  fma.rn.f32 a0, a0, b, c;\n  fma.rn.f32 a1, a1, b, c;\n  fma.rn.f32 a2, a2, b, c;\n" \
             "  fma.rn.f32 a3, a3, b, c;\n  fma.rn.f32 a4, a4, b, c;\n  fma.rn.f32 a5, a5, b, c;\n" \
             "  fma.rn.f32 a6, a6, b, c;\n  fma.rn.f32 a7, a7, b, c;\n"
    FMA8 FMA8 FMA8 FMA8
#undef FMA8
    "  add.u32 i, i, 1;\n  setp.lt.u32 p, i, n;\n  @p bra LOOP;\n"
    "  add.f32 a0, a0, a1;\n  add.f32 a2, a2, a3;\n  add.f32 a4, a4, a5;\n  add.f32 a6, a6, a7;\n"
    "  add.f32 a0, a0, a2;\n  add.f32 a4, a4, a6;\n  add.f32 a0, a0, a4;\n"
    "  setp.eq.f32 p, a0, 0fC7C35000;\n  @p st.global.f32 [o], a0;\n  ret;\n}\n";

static double fma_rate(frnn_ctx *ctx, char *note, size_t note_size) {
  CUmodule mod = NULL;
  CUfunction fn;
  CUdeviceptr out = 0;
  CUevent ev[2 * FMA_REPS] = {0};
  double ms[FMA_REPS], rate = NAN;
  unsigned iters = FMA_ITERS;
  void *params[2] = {&out, &iters};
  unsigned grid[3] = {FMA_BLOCKS, 1, 1}, block[3] = {FMA_THREADS, 1, 1};
  if (cuda_module_load(ctx, fma_ptx, sizeof fma_ptx - 1, 0, &mod, NULL) ||
      cuda_function(ctx, mod, "frnn_fma_peak", &fn) || cuda_malloc(ctx, 4, &out))
    goto fail;
  for (int k = 0; k < 2 * FMA_REPS; k++)
    if (cuda_event_create(ctx, &ev[k])) goto fail;
  if (cuda_launch(ctx, fn, "frnn_fma_peak", grid, block, 1, 0, NULL, params)) goto fail;
  for (int k = 0; k < FMA_REPS; k++)
    if (cuda_event_record(ctx, ev[2 * k], NULL) ||
        cuda_launch(ctx, fn, "frnn_fma_peak", grid, block, 1, 0, NULL, params) ||
        cuda_event_record(ctx, ev[2 * k + 1], NULL))
      goto fail;
  if (cuda_event_sync(ctx, ev[2 * FMA_REPS - 1])) goto fail;
  for (int k = 0; k < FMA_REPS; k++) {
    float t;
    if (cuda_event_elapsed(ctx, ev[2 * k], ev[2 * k + 1], &t)) goto fail;
    ms[k] = t;
  }
  stats st = stats_of(ms, FMA_REPS);
  double flops = 2.0 * 32 * (double)FMA_ITERS * FMA_THREADS * FMA_BLOCKS;
  if (st.median > 0) rate = flops / (st.median * 1e-3) / 1e9;
  else snprintf(note, note_size, "the FMA kernel took no measurable time");
  goto out;
fail:
  snprintf(note, note_size, "%s", frnn_ctx_error(ctx));
out:
  for (int k = 0; k < 2 * FMA_REPS; k++) cuda_event_destroy(ev[k]);
  cuda_free(ctx, out);
  cuda_module_unload(mod);
  return rate;
}

/* -------------------------------------------------------------- tensors */
/* Every tensor of one call, by slot; each slot is indexed like a port kind. */
enum slot { S_IN, S_ST, S_OUT, S_FIN, S_GOUT, S_GFIN, S_GIN, S_GST, N_SLOTS };
static const frnn_port_kind SLOT_KIND[N_SLOTS] = {
    FRNN_PORT_INPUT,  FRNN_PORT_STATE, FRNN_PORT_OUTPUT, FRNN_PORT_STATE,
    FRNN_PORT_OUTPUT, FRNN_PORT_STATE, FRNN_PORT_INPUT,  FRNN_PORT_STATE};
static const char *const SLOT_NAME[N_SLOTS] = {"input",    "state",      "out",  "final",
                                               "grad_out", "grad_final", "grad", "grad state"};
#define MAXP FRNN_MAX_PORTS

typedef struct tset {
  DLTensor t[N_SLOTS][MAXP];
  int64_t shape[N_SLOTS][MAXP][5], strides[N_SLOTS][MAXP][5];
  size_t bytes[N_SLOTS][MAXP];
  const DLTensor *p[N_SLOTS][MAXP]; /* &t[slot][i], for the API's arrays */
  bool allocated;
} tset;

/* What one model's calls need. */
typedef struct model {
  const options *o;
  frnn_ctx *ctx; /* the main context (loads, workspace sizes, memory) */
  frnn_step *step;
  int n[3];
  ranges rg;
  uint64_t rng;
  /* The workspace of a forward no backward follows: none (NULL), or a
   * guarded step's flag (frnn_gpu_workspace_size without for_backward). */
  CUdeviceptr fw_ws;
  size_t fw_ws_bytes;
} model;

static int count(const model *m, int slot) { return m->n[SLOT_KIND[slot]]; }

static bool slot_is_f32(int slot) {
  return SLOT_KIND[slot] == FRNN_PORT_STATE; /* states and their gradients */
}

/* Shapes, dtypes and bytes of every tensor of a call of sizes sz
 * (contiguous; inputs broadcast per their range's @h/@g/@t); no data. */
static void layout(const model *m, frnn_sizes sz, tset *s) {
  memset(s, 0, sizeof *s);
  for (int slot = 0; slot < N_SLOTS; slot++)
    for (int i = 0; i < count(m, slot); i++) {
      frnn_port_kind kind = SLOT_KIND[slot];
      int64_t *shape = s->shape[slot][i];
      int nd;
      if (kind == FRNN_PORT_INPUT) {
        frnn_class c = frnn_step_port_class(m->step, kind, i);
        range_spec r = ranges_get(&m->rg, frnn_step_port_name(m->step, kind, i), false, sz.N);
        ranges_input_shape(r.bcast, sz.B, sz.T, sz.H, (c & FRNN_COL) ? sz.M : 1,
                           (c & FRNN_ROW) ? sz.N : 1, shape);
        nd = 5;
      } else {
        nd = tu_port_shape(m->step, kind, i, sz, shape);
      }
      DLTensor *t = &s->t[slot][i];
      t->device = (DLDevice){kDLCUDA, 0};
      t->ndim = nd;
      t->dtype = slot_is_f32(slot) ? NPY_F32 : m->o->dt;
      t->shape = shape;
      t->strides = s->strides[slot][i];
      int64_t n = 1;
      for (int d = nd - 1; d >= 0; d--) {
        t->strides[d] = n;
        n *= shape[d];
      }
      s->bytes[slot][i] = (size_t)n * npy_dtype_size(t->dtype);
      s->p[slot][i] = t;
    }
}

static double slot_bytes(const model *m, const tset *s, int slot) {
  double b = 0;
  for (int i = 0; i < count(m, slot); i++)
    b += (double)s->bytes[slot][i];
  return b;
}

static void free_set(frnn_ctx *ctx, const model *m, tset *s) {
  for (int slot = 0; slot < N_SLOTS; slot++)
    for (int i = 0; i < count(m, slot); i++) {
      cuda_free(ctx, (CUdeviceptr)(uintptr_t)s->t[slot][i].data);
      s->t[slot][i].data = NULL;
    }
  s->allocated = false;
}

/* Random host tensor for (slot, i) of s: the port's range for inputs and
 * states, [-1, 1) for gradients of outputs and final states. */
static htensor *random_host(model *m, const tset *s, int slot, int i, int64_t N) {
  const DLTensor *t = &s->t[slot][i];
  htensor *h = ht_new(t->dtype, t->ndim, t->shape);
  if (!h)
    return NULL;
  range_spec r = {.lo = -1, .hi = 1};
  if (slot == S_IN || slot == S_ST)
    r = ranges_get(&m->rg, frnn_step_port_name(m->step, SLOT_KIND[slot], i), slot == S_ST, N);
  tu_fill_uniform(h, &m->rng, r.lo, r.hi);
  return h;
}

/* Allocate every tensor of s on the device: inputs, states and gradients
 * of outputs and final states random (host copies kept in keep[][] when it
 * is not NULL, else freed), the rest poisoned (all bits set: NaN). */
static int fill_set(model *m, tset *s, int64_t N, htensor *keep[N_SLOTS][MAXP], char *err,
                    size_t err_size) {
  frnn_ctx *ctx = m->ctx;
  s->allocated = true;
  for (int slot = 0; slot < N_SLOTS; slot++)
    for (int i = 0; i < count(m, slot); i++) {
      CUdeviceptr p = 0;
      if (s->bytes[slot][i] == 0)
        continue; /* not needed (--forward-only) */
      if (cuda_malloc(ctx, s->bytes[slot][i], &p))
        goto cuda_fail;
      s->t[slot][i].data = (void *)(uintptr_t)p;
      bool random = slot == S_IN || slot == S_ST || slot == S_GOUT || slot == S_GFIN;
      if (!random) {
        if (cuda_memset_d8(ctx, p, 0xff, s->bytes[slot][i], NULL, 0))
          goto cuda_fail;
        continue;
      }
      htensor *h = random_host(m, s, slot, i, N);
      if (!h) {
        snprintf(err, err_size, "out of host memory for %s %s (%zu bytes)", SLOT_NAME[slot],
                 frnn_step_port_name(m->step, SLOT_KIND[slot], i), s->bytes[slot][i]);
        return -1;
      }
      frnn_status st = cuda_memcpy_htod(ctx, p, h->buf, s->bytes[slot][i], NULL, 0);
      if (keep)
        keep[slot][i] = h;
      else
        ht_free(h);
      if (st)
        goto cuda_fail;
    }
  return 0;
cuda_fail:
  snprintf(err, err_size, "%s", frnn_ctx_error(ctx));
  return -1;
}

/* ---------------------------------------------------------------- flops */
static double class_elems(int cls, frnn_sizes sz) {
  return (double)(CLASS_HAS_M(cls) ? sz.M : 1) * (double)(CLASS_HAS_N(cls) ? sz.N : 1);
}

/* Float operations of one step (one b, t, h): an elementwise node costs the
 * element count of its class, a sum that of its operand; leaves and
 * broadcasts cost nothing. */
static double step_flops(const frnn_step *s, frnn_sizes sz) {
  double f = 0;
  for (uint32_t k = 0; k < s->n_nodes; k++) {
    const node *n = &s->nodes[k];
    switch (n->op) {
    case FRNN_OP_INPUT:
    case FRNN_OP_STATE:
    case FRNN_OP_CONST:
    case FRNN_OP_BCAST:
      break;
    case FRNN_OP_SUM:
    case FRNN_OP_SUM_M:
      f += class_elems(s->nodes[n->arg[0]].cls, sz);
      break;
    default:
      f += class_elems(n->cls, sz);
    }
  }
  return f;
}

/* ---------------------------------------------------------- one model */
typedef struct result {
  char name[FRNN_NAME_MAX];
  const char *file;
  bool ok;
  char error[2048];
  uint64_t seed;
  int input_sets;
  stats fw, fwbw;
  double peak_bytes, ws_bytes, bytes_fw, bytes_fwbw, flops_fw, flops_fwbw;
  double err;
  char err_what[FRNN_NAME_MAX + 16];
  double cold_s, warm_s;
  bool cache_written; /* the cold call left something in the cache directory */
  char plan[512];     /* the kernel plan at these sizes (plan_describe) */
} result;

static bool over_bound(const options *o, double err) {
  double bound = npy_dtype_equal(o->dt, NPY_BF16)  ? 1e-2
                 : npy_dtype_equal(o->dt, NPY_F16) ? 2e-3
                                                   : 1e-5;
  return !(err <= bound);
}

/* Record the failure of `what` with the message of ctx c (or of the main
 * context when c has none: the step's adjoint reports there). */
static int fail_lib(result *res, const model *m, frnn_ctx *c, const char *what) {
  const char *msg = c ? frnn_ctx_error(c) : "";
  if (!msg || !*msg)
    msg = frnn_ctx_error(m->ctx);
  snprintf(res->error, sizeof res->error, "%s: %s", what,
           msg && *msg ? msg : frnn_status_name(c ? frnn_ctx_last_status(c) : FRNN_E_ARG));
  return -1;
}

/* The calls, on the legacy default stream.  fw alone: the forward's own
 * workspace (model.fw_ws). */
static frnn_status call_fw(model *m, frnn_ctx *c, frnn_sizes sz, tset *s, void *ws,
                           size_t ws_bytes) {
  return frnn_gpu_forward(c, m->step, sz, s->p[S_IN], s->p[S_ST], (DLTensor *const *)s->p[S_OUT],
                          (DLTensor *const *)s->p[S_FIN], ws, ws_bytes, NULL);
}

static frnn_status call_bw(model *m, frnn_ctx *c, frnn_sizes sz, tset *s, void *ws,
                           size_t ws_bytes) {
  return frnn_gpu_backward(c, m->step, sz, s->p[S_IN], s->p[S_ST], s->p[S_GOUT], s->p[S_GFIN],
                           (DLTensor *const *)s->p[S_GIN], (DLTensor *const *)s->p[S_GST], ws,
                           ws_bytes, NULL);
}

static frnn_status call_fw_only(model *m, frnn_ctx *c, frnn_sizes sz, tset *s) {
  return call_fw(m, c, sz, s, (void *)(uintptr_t)m->fw_ws, m->fw_ws_bytes);
}

/* One call of what is timed: fw alone or fw + bw. */
static frnn_status call_one(model *m, frnn_ctx *c, frnn_sizes sz, tset *s, bool fwbw, void *ws,
                            size_t ws_bytes) {
  if (!fwbw)
    return call_fw_only(m, c, sz, s);
  frnn_status st = call_fw(m, c, sz, s, ws, ws_bytes);
  return st ? st : call_bw(m, c, sz, s, ws, ws_bytes);
}

/* First forward(+backward) of this model in a fresh context, synchronised:
 * wall seconds. */
static int first_call(model *m, result *res, frnn_sizes sz, tset *s, void *ws, size_t ws_bytes,
                      const char *what, double *secs, frnn_ctx **keep) {
  frnn_ctx *c;
  if (frnn_ctx_create(&c) != FRNN_OK) {
    snprintf(res->error, sizeof res->error, "out of memory");
    return -1;
  }
  if (m->o->lean) frnn_ctx_set_backward_mode(c, FRNN_BACKWARD_LEAN);
  double t0 = now_s();
  frnn_status st = m->o->forward_only ? call_fw_only(m, c, sz, s) : call_fw(m, c, sz, s, ws, ws_bytes);
  if (!st && !m->o->forward_only)
    st = call_bw(m, c, sz, s, ws, ws_bytes);
  if (!st)
    st = cuda_ctx_sync(c);
  double t1 = now_s();
  if (st) {
    fail_lib(res, m, c, what);
    frnn_ctx_destroy(c);
    return -1;
  }
  *secs = t1 - t0;
  if (keep)
    *keep = c;
  else
    frnn_ctx_destroy(c);
  return 0;
}

/* Time `reps` calls after `warmup` untimed ones, all enqueued back to back
 * on one stream (the host never waits inside the series, so launch
 * overhead is hidden behind the previous call); one synchronisation at the
 * end.  Call k uses set k % n_sets. */
static int time_series(model *m, result *res, frnn_ctx *c, frnn_sizes sz, tset *sets, int n_sets,
                       bool fwbw, void *ws, size_t ws_bytes, stats *out) {
  const options *o = m->o;
  int rc = -1;
  CUevent *ev = calloc((size_t)(2 * o->reps), sizeof *ev);
  double *ms = calloc((size_t)o->reps, sizeof *ms);
  if (!ev || !ms) {
    snprintf(res->error, sizeof res->error, "out of memory");
    goto out;
  }
  for (int k = 0; k < 2 * o->reps; k++)
    if (cuda_event_create(c, &ev[k])) {
      fail_lib(res, m, c, "cuEventCreate");
      goto out;
    }
  const char *what = fwbw ? "forward+backward" : "forward";
  int call = 0;
  for (int w = 0; w < o->warmup; w++, call++)
    if (call_one(m, c, sz, &sets[call % n_sets], fwbw, ws, ws_bytes)) {
      fail_lib(res, m, c, what);
      goto out;
    }
  for (int r = 0; r < o->reps; r++, call++) {
    tset *s = &sets[call % n_sets];
    if (cuda_event_record(c, ev[2 * r], NULL) || call_one(m, c, sz, s, fwbw, ws, ws_bytes) ||
        cuda_event_record(c, ev[2 * r + 1], NULL)) {
      fail_lib(res, m, c, what);
      goto out;
    }
  }
  if (cuda_event_sync(c, ev[2 * o->reps - 1]) || cuda_ctx_sync(c)) {
    fail_lib(res, m, c, what);
    goto out;
  }
  for (int r = 0; r < o->reps; r++) {
    float t;
    if (cuda_event_elapsed(c, ev[2 * r], ev[2 * r + 1], &t)) {
      fail_lib(res, m, c, "cuEventElapsedTime");
      goto out;
    }
    ms[r] = t;
  }
  *out = stats_of(ms, o->reps);
  rc = 0;
out:
  if (ev)
    for (int k = 0; k < 2 * o->reps; k++)
      cuda_event_destroy(ev[k]);
  free(ev);
  free(ms);
  return rc;
}

/* Download a device tensor into a new host tensor of its dtype. */
static htensor *download(frnn_ctx *ctx, const DLTensor *d, size_t bytes) {
  htensor *h = ht_new(d->dtype, d->ndim, d->shape);
  if (!h)
    return NULL;
  if (cuda_memcpy_dtoh(ctx, h->buf, (CUdeviceptr)(uintptr_t)d->data, bytes, NULL, 0)) {
    ht_free(h);
    return NULL;
  }
  return h;
}

/* GPU forward(+backward) at the --check sizes against the reference on the
 * same inputs: res->err = the largest relative error. */
static int check_model(model *m, result *res, frnn_ctx *c) {
  const options *o = m->o;
  frnn_sizes sz = o->check_sz;
  bool bw = !o->forward_only;
  int rc = -1;
  tset *s = calloc(1, sizeof *s);
  static htensor *host[N_SLOTS][MAXP], *ref[N_SLOTS][MAXP], *got[N_SLOTS][MAXP];
  memset(host, 0, sizeof host), memset(ref, 0, sizeof ref), memset(got, 0, sizeof got);
  CUdeviceptr ws = 0;
  size_t ws_bytes = 0;
  char err[1024];
  if (!s) {
    snprintf(res->error, sizeof res->error, "out of memory");
    return -1;
  }
  layout(m, sz, s);
  if (fill_set(m, s, sz.N, host, err, sizeof err)) {
    snprintf(res->error, sizeof res->error, "check: %s", err);
    goto out;
  }
  if (bw) {
    if (frnn_gpu_workspace_size(m->ctx, m->step, sz, s->p[S_IN], 1, &ws_bytes)) {
      fail_lib(res, m, m->ctx, "check: frnn_gpu_workspace_size");
      goto out;
    }
    if (cuda_malloc(m->ctx, ws_bytes, &ws) || cuda_memset_d8(m->ctx, ws, 0xff, ws_bytes, NULL, 0)) {
      fail_lib(res, m, m->ctx, "check: workspace");
      goto out;
    }
  }
  void *wsp = (void *)(uintptr_t)ws;
  if ((bw ? call_fw(m, c, sz, s, wsp, ws_bytes) : call_fw_only(m, c, sz, s)) ||
      (bw && call_bw(m, c, sz, s, wsp, ws_bytes)) || cuda_ctx_sync(c)) {
    fail_lib(res, m, c, "check run");
    goto out;
  }
  /* Reference, float64, on the host copies of the same inputs. */
  const DLTensor *h[N_SLOTS][MAXP];
  DLTensor *r[N_SLOTS][MAXP];
  for (int slot = 0; slot < N_SLOTS; slot++)
    for (int i = 0; i < count(m, slot); i++) {
      if (host[slot][i]) {
        h[slot][i] = &host[slot][i]->t;
        continue;
      }
      const DLTensor *d = &s->t[slot][i];
      if (!(ref[slot][i] = ht_new(NPY_F64, d->ndim, d->shape))) {
        snprintf(res->error, sizeof res->error, "check: out of host memory");
        goto out;
      }
      r[slot][i] = &ref[slot][i]->t;
    }
  if (frnn_reference_forward(m->ctx, m->step, sz, h[S_IN], h[S_ST], r[S_OUT], r[S_FIN]) ||
      (bw && frnn_reference_backward(m->ctx, m->step, sz, h[S_IN], h[S_ST], h[S_GOUT], h[S_GFIN],
                                     r[S_GIN], r[S_GST]))) {
    fail_lib(res, m, m->ctx, "check: reference");
    goto out;
  }
  res->err = 0;
  for (int slot = 0; slot < N_SLOTS; slot++)
    for (int i = 0; i < count(m, slot); i++) {
      if (!ref[slot][i] || (!bw && (slot == S_GIN || slot == S_GST)))
        continue;
      if (!(got[slot][i] = download(m->ctx, &s->t[slot][i], s->bytes[slot][i]))) {
        fail_lib(res, m, m->ctx, "check: download");
        goto out;
      }
      double e = tu_rel_err(&got[slot][i]->t, &ref[slot][i]->t);
      /* The largest; a NaN beats any number (the first NaN is kept). */
      bool worse = e != e ? res->err == res->err : e > res->err;
      if (worse || !res->err_what[0]) {
        res->err = e;
        snprintf(res->err_what, sizeof res->err_what, "%s %s", SLOT_NAME[slot],
                 frnn_step_port_name(m->step, SLOT_KIND[slot], i));
      }
    }
  rc = 0;
out:
  for (int slot = 0; slot < N_SLOTS; slot++)
    for (int i = 0; i < MAXP; i++)
      ht_free(host[slot][i]), ht_free(ref[slot][i]), ht_free(got[slot][i]);
  cuda_free(m->ctx, ws);
  if (s->allocated)
    free_set(m->ctx, m, s);
  free(s);
  return rc;
}

static bool dir_has_files(const char *path) {
  DIR *d = opendir(path);
  bool any = false;
  struct dirent *e;
  while (d && !any && (e = readdir(d)))
    any = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  if (d)
    closedir(d);
  return any;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

static uint64_t fnv1a(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* Everything for one model.  On failure res->error says why; what was
 * measured before stays in res. */
static int bench_model(const options *o, frnn_ctx *ctx, const char *path, result *res) {
  model m = {.o = o, .ctx = ctx};
  tset *sets = NULL;
  frnn_ctx *gctx = NULL; /* the warm context: timing and check */
  CUdeviceptr ws = 0;
  size_t ws_bytes = 0;
  char cache[4096] = "", err[1024];
  int rc = -1;
  frnn_sizes sz = o->sz;
  bool fwbw = !o->forward_only;

  res->file = path;
  res->fw = res->fwbw = NO_STATS;
  res->peak_bytes = res->ws_bytes = res->bytes_fw = res->bytes_fwbw = NAN;
  res->flops_fw = res->flops_fwbw = res->err = res->cold_s = res->warm_s = NAN;
  const char *base = strrchr(path, '/');
  snprintf(res->name, sizeof res->name, "%s", base ? base + 1 : path);
  char *dot = strrchr(res->name, '.');
  if (dot && !strcmp(dot, ".frnn"))
    *dot = 0;

  if (frnn_step_load(ctx, path, &m.step))
    return fail_lib(res, &m, ctx, "load");
  snprintf(res->name, sizeof res->name, "%s", frnn_step_name(m.step));
  {
    const char *arch = getenv("FRNN_ARCH");
    target t;
    plan p;
    if (!target_parse(ctx, arch && *arch ? arch : "sm_90", &t) && !plan_make(ctx, m.step, NULL, sz.M, sz.N, &t, &p))
      plan_describe(&p, res->plan, sizeof res->plan);
  }
  bool found;
  if (ranges_from_file(path, &m.rg, &found, err, sizeof err)) {
    snprintf(res->error, sizeof res->error, "%s", err);
    goto out;
  }
  for (int k = 0; k < 3; k++)
    m.n[k] = frnn_step_port_count(m.step, (frnn_port_kind)k);
  for (int k = 0; k < m.rg.n; k++) {
    const char *nm = m.rg.item[k].name;
    bool is_in = false, is_st = false;
    for (int i = 0; i < m.n[FRNN_PORT_INPUT]; i++)
      is_in |= !strcmp(frnn_step_port_name(m.step, FRNN_PORT_INPUT, i), nm);
    for (int i = 0; i < m.n[FRNN_PORT_STATE]; i++)
      is_st |= !strcmp(frnn_step_port_name(m.step, FRNN_PORT_STATE, i), nm);
    if (!is_in && !is_st) {
      snprintf(res->error, sizeof res->error,
               "%s: '# ranges:' names '%s', which is no input or state of step '%s'", path, nm,
               res->name);
      goto out;
    }
    if (is_st && m.rg.item[k].bcast) {
      snprintf(res->error, sizeof res->error,
               "%s: '# ranges:' broadcasts state '%s' (@%c); states are never broadcast", path, nm,
               m.rg.item[k].bcast);
      goto out;
    }
  }
  res->seed = o->seed ^ fnv1a(res->name);
  m.rng = res->seed;

  /* Sizes, bytes and flops. */
  sets = calloc(2, sizeof *sets);
  if (!sets) {
    snprintf(res->error, sizeof res->error, "out of memory");
    goto out;
  }
  layout(&m, sz, &sets[0]);
  layout(&m, sz, &sets[1]);
  if (fwbw && frnn_gpu_workspace_size(ctx, m.step, sz, sets[0].p[S_IN], 1, &ws_bytes)) {
    fail_lib(res, &m, ctx, "frnn_gpu_workspace_size");
    goto out;
  }
  res->ws_bytes = (double)ws_bytes;
  if (frnn_gpu_workspace_size(ctx, m.step, sz, sets[0].p[S_IN], 0, &m.fw_ws_bytes)) {
    fail_lib(res, &m, ctx, "frnn_gpu_workspace_size (forward only)");
    goto out;
  }
  if (m.fw_ws_bytes && cuda_malloc(ctx, m.fw_ws_bytes, &m.fw_ws)) {
    fail_lib(res, &m, ctx, "forward workspace");
    goto out;
  }
  double b[N_SLOTS], set_bytes = 0;
  for (int slot = 0; slot < N_SLOTS; slot++)
    set_bytes += (b[slot] = slot_bytes(&m, &sets[0], slot));
  res->bytes_fw = b[S_IN] + b[S_ST] + b[S_OUT] + b[S_FIN];
  double btc = (double)sz.B * (double)sz.T * (double)sz.H;
  double f_step = step_flops(m.step, sz);
  res->flops_fw = f_step * btc;
  if (fwbw) {
    res->peak_bytes = set_bytes + (double)ws_bytes;
    res->bytes_fwbw =
        res->bytes_fw + b[S_IN] + b[S_ST] + b[S_GOUT] + b[S_GFIN] + b[S_GIN] + b[S_GST];
    frnn_step *adj = NULL;
    if (frnn_step_adjoint(m.step, &adj)) {
      fail_lib(res, &m, ctx, "adjoint");
      goto out;
    }
    res->flops_fwbw = (f_step + step_flops(adj, sz)) * btc;
    frnn_step_destroy(adj);
  } else {
    res->peak_bytes = res->bytes_fw;
  }
  /* Only the tensors the timed calls touch are allocated. */
  double alloc_bytes = fwbw ? set_bytes : res->bytes_fw;
  if (!fwbw)
    for (int s = 0; s < 2; s++)
      for (int slot = S_GOUT; slot < N_SLOTS; slot++)
        for (int i = 0; i < count(&m, slot); i++)
          sets[s].bytes[slot][i] = 0;

  /* Memory: two sets when they fit (with 5% and 256 MiB to spare). */
  size_t free_b = 0, total_b = 0;
  if (cuda_mem_get_info(ctx, &free_b, &total_b)) {
    fail_lib(res, &m, ctx, "cuMemGetInfo");
    goto out;
  }
  double avail = 0.95 * (double)free_b - 256.0 * (1 << 20);
  res->input_sets = 2.0 * alloc_bytes + (double)ws_bytes <= avail ? 2 : 1;
  if (alloc_bytes + (double)ws_bytes > 0.98 * (double)free_b) {
    snprintf(res->error, sizeof res->error,
             "needs %.2f GB of device memory, %.2f GB free (smaller --B/--T/--H?)",
             (alloc_bytes + (double)ws_bytes) / 1e9, (double)free_b / 1e9);
    goto out;
  }
  for (int s = 0; s < res->input_sets; s++)
    if (fill_set(&m, &sets[s], sz.N, NULL, err, sizeof err)) {
      snprintf(res->error, sizeof res->error, "%s", err);
      goto out;
    }
  if (fwbw && cuda_malloc(ctx, ws_bytes, &ws)) {
    fail_lib(res, &m, ctx, "workspace");
    goto out;
  }
  void *wsp = (void *)(uintptr_t)ws;

  /* First calls: an empty cache directory, then a warm one. */
  const char *tmp = getenv("TMPDIR");
  snprintf(cache, sizeof cache, "%s/frnn-bench-cache-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(cache)) {
    snprintf(res->error, sizeof res->error, "cannot create a cache directory %.1000s: %s", cache,
             strerror(errno));
    cache[0] = 0;
    goto out;
  }
  setenv("FRNN_CACHE_DIR", cache, 1);
  cache_clear_memory();
  if (first_call(&m, res, sz, &sets[0], wsp, ws_bytes, "first call (cold cache)", &res->cold_s,
                 NULL))
    goto out;
  res->cache_written = dir_has_files(cache);
  cache_clear_memory();
  if (first_call(&m, res, sz, &sets[0], wsp, ws_bytes, "first call (warm cache)", &res->warm_s,
                 &gctx))
    goto out;

  /* Timed series. */
  if (time_series(&m, res, gctx, sz, sets, res->input_sets, false, wsp, ws_bytes, &res->fw))
    goto out;
  if (fwbw &&
      time_series(&m, res, gctx, sz, sets, res->input_sets, true, wsp, ws_bytes, &res->fwbw))
    goto out;
  /* The plan the backward ran with (the library may pick another backward
   * shape than plan_make's, pipeline.c get_module). */
  if (gctx->backward_plan[0])
    snprintf(res->plan, sizeof res->plan, "%s", gctx->backward_plan);
  for (int s = 0; s < 2; s++)
    if (sets[s].allocated)
      free_set(ctx, &m, &sets[s]);
  cuda_free(ctx, ws);
  ws = 0;

  if (o->check && check_model(&m, res, gctx))
    goto out;
  rc = 0;
out:
  if (sets) {
    for (int s = 0; s < 2; s++)
      if (sets[s].allocated)
        free_set(ctx, &m, &sets[s]);
    free(sets);
  }
  cuda_free(ctx, ws);
  cuda_free(ctx, m.fw_ws);
  frnn_ctx_destroy(gctx);
  if (cache[0])
    nftw(cache, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  frnn_step_destroy(m.step);
  res->ok = rc == 0;
  return rc;
}

/* ---------------------------------------------------------------- output */
static double per_s(double amount, double ms) { return amount / (ms * 1e-3); }

/* "%*.*f" of v, or "-" when v is not a number. */
static const char *num(char *buf, size_t size, const char *fmt, double v) {
  if (v != v || isinf(v))
    snprintf(buf, size, "-");
  else
    snprintf(buf, size, fmt, v);
  return buf;
}

static const char *ms_text(char *buf, size_t size, stats s) {
  if (s.median != s.median)
    return snprintf(buf, size, "-"), buf;
  snprintf(buf, size, "%.3f [%.3f,%.3f]", s.median, s.min, s.p90);
  return buf;
}

static const char *pair(char *buf, size_t size, const char *fmt, double a, double b) {
  char x[32], y[32];
  snprintf(buf, size, "%s|%s", num(x, sizeof x, fmt, a), num(y, sizeof y, fmt, b));
  return buf;
}

static void print_header(FILE *f) {
  fprintf(f, "%-18s %-24s %-24s %8s %13s %15s %15s %10s %7s %7s\n", "model", "fw ms [min,p90]",
          "fw+bw ms [min,p90]", "peak GB", "GB/s fw|bw", "GFLOP/s fw|bw", "floor ms fw|bw",
          "max err", "cold s", "warm s");
}

static void print_row(FILE *f, const options *o, const result *r, double copy_gbps) {
  char a[64], b[64], c[32], d[80], e[80], g[80], h[32], k[32];
  double floor_fw = r->bytes_fw / (copy_gbps * 1e9) * 1e3,
         floor_fwbw = r->bytes_fwbw / (copy_gbps * 1e9) * 1e3;
  char errbuf[32];
  if (r->err == r->err)
    snprintf(errbuf, sizeof errbuf, "%.2e%s", r->err, over_bound(o, r->err) ? "!" : "");
  else
    snprintf(errbuf, sizeof errbuf, "%s", r->err_what[0] ? "nan!" : "-");
  fprintf(f, "%-18s %-24s %-24s %8s %13s %15s %15s %10s %7s %7s\n", r->name,
          ms_text(a, sizeof a, r->fw), ms_text(b, sizeof b, r->fwbw),
          num(c, sizeof c, "%.3f", r->peak_bytes / 1e9),
          pair(d, sizeof d, "%.0f", per_s(r->bytes_fw, r->fw.median) / 1e9,
               per_s(r->bytes_fwbw, r->fwbw.median) / 1e9),
          pair(e, sizeof e, "%.0f", per_s(r->flops_fw, r->fw.median) / 1e9,
               per_s(r->flops_fwbw, r->fwbw.median) / 1e9),
          pair(g, sizeof g, "%.3f", floor_fw, floor_fwbw), errbuf,
          num(h, sizeof h, "%.2f", r->cold_s), num(k, sizeof k, "%.3f", r->warm_s));
  if (r->warm_s == r->warm_s && !r->cache_written)
    fputs("  note: the cold call wrote nothing to the cache directory: warm s is not a cache hit\n",
          f);
  if (r->input_sets == 1)
    fputs("  note: one set of tensors (two do not fit in device memory): caches may flatter\n", f);
  if (!r->ok) {
    fputs("  FAILED: ", f);
    for (const char *p = r->error; *p; p++) {
      fputc(*p, f);
      if (*p == '\n')
        fputs("    ", f);
    }
    fputc('\n', f);
  }
  fflush(f);
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", f);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static void json_num(FILE *f, double v) {
  if (v != v || isinf(v))
    fputs("null", f);
  else
    fprintf(f, "%.6g", v);
}

static void json_stats(FILE *f, stats s) {
  fputs("{\"median\": ", f);
  json_num(f, s.median);
  fputs(", \"min\": ", f);
  json_num(f, s.min);
  fputs(", \"p90\": ", f);
  json_num(f, s.p90);
  fputs("}", f);
}

static void json_sizes(FILE *f, frnn_sizes s) {
  fprintf(f, "{\"B\": %lld, \"T\": %lld, \"H\": %lld, \"M\": %lld, \"N\": %lld}", (long long)s.B,
          (long long)s.T, (long long)s.H, (long long)s.M, (long long)s.N);
}

typedef struct header {
  char card[256], date[32], copy_note[512], fma_note[512];
  int driver;
  double copy_gbps, fma_gflops;
  size_t total_mem;
} header;

static void write_json(FILE *f, const options *o, const header *h, const result *res, int n) {
  fputs("{\n  \"tool\": \"frnn-bench\", \"version\": ", f);
  json_str(f, FRNN_VERSION_STRING);
  fputs(",\n  \"card\": ", f);
  json_str(f, h->card);
  fprintf(f, ", \"driver_version\": %d, \"device_memory_bytes\": %zu,\n  \"date\": ", h->driver,
          h->total_mem);
  json_str(f, h->date);
  fputs(",\n  \"sizes\": ", f);
  json_sizes(f, o->sz);
  fputs(", \"check_sizes\": ", f);
  if (o->check)
    json_sizes(f, o->check_sz);
  else
    fputs("null", f);
  fputs(",\n  \"dtype\": ", f);
  json_str(f, o->dt_name);
  fprintf(f,
          ", \"state_dtype\": \"f32\", \"reps\": %d, \"warmup\": %d, \"forward_only\": %s, "
          "\"backward_mode\": \"%s\", \"seed\": \"%llu\",\n  \"copy_bandwidth_gbps\": ",
          o->reps, o->warmup, o->forward_only ? "true" : "false", o->lean ? "lean" : "fast",
          (unsigned long long)o->seed);
  json_num(f, h->copy_gbps);
  if (h->copy_note[0]) {
    fputs(", \"copy_bandwidth_note\": ", f);
    json_str(f, h->copy_note);
  }
  fputs(", \"fma_f32_gflops\": ", f);
  json_num(f, h->fma_gflops);
  if (h->fma_note[0]) {
    fputs(", \"fma_note\": ", f);
    json_str(f, h->fma_note);
  }
  fputs(",\n  \"models\": [", f);
  for (int k = 0; k < n; k++) {
    const result *r = &res[k];
    fputs(k ? ",\n    {" : "\n    {", f);
    fputs("\"model\": ", f);
    json_str(f, r->name);
    fputs(", \"file\": ", f);
    json_str(f, r->file);
    fprintf(f, ", \"ok\": %s, \"error\": ", r->ok ? "true" : "false");
    if (r->ok)
      fputs("null", f);
    else
      json_str(f, r->error);
    fputs(", \"plan\": ", f);
    if (r->plan[0])
      json_str(f, r->plan);
    else
      fputs("null", f);
    fprintf(f, ", \"seed\": \"%llu\", \"input_sets\": %d,\n     \"fw_ms\": ",
            (unsigned long long)r->seed, r->input_sets);
    json_stats(f, r->fw);
    fputs(", \"fwbw_ms\": ", f);
    json_stats(f, r->fwbw);
    const struct {
      const char *key;
      double v;
    } kv[] = {
        {"peak_gb", r->peak_bytes / 1e9},
        {"workspace_bytes", r->ws_bytes},
        {"bytes_fw", r->bytes_fw},
        {"bytes_fwbw", r->bytes_fwbw},
        {"gbps_fw", per_s(r->bytes_fw, r->fw.median) / 1e9},
        {"gbps_fwbw", per_s(r->bytes_fwbw, r->fwbw.median) / 1e9},
        {"flops_fw", r->flops_fw},
        {"flops_fwbw", r->flops_fwbw},
        {"gflops_fw", per_s(r->flops_fw, r->fw.median) / 1e9},
        {"gflops_fwbw", per_s(r->flops_fwbw, r->fwbw.median) / 1e9},
        {"floor_fw_ms", r->bytes_fw / (h->copy_gbps * 1e9) * 1e3},
        {"floor_fwbw_ms", r->bytes_fwbw / (h->copy_gbps * 1e9) * 1e3},
        {"max_rel_err", r->err},
        {"first_call_cold_s", r->cold_s},
        {"first_call_warm_s", r->warm_s},
    };
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
      fprintf(f, i % 4 == 0 ? ",\n     \"%s\": " : ", \"%s\": ", kv[i].key);
      json_num(f, kv[i].v);
    }
    fputs(", \"max_rel_err_tensor\": ", f);
    if (r->err_what[0])
      json_str(f, r->err_what);
    else
      fputs("null", f);
    fprintf(f, ", \"cache_written\": %s", r->cache_written ? "true" : "false");
    fprintf(f, ", \"err_within_bound\": %s}",
            r->err_what[0] ? (over_bound(o, r->err) ? "false" : "true") : "null");
  }
  fputs("\n  ]\n}\n", f);
}

/* One small compile first, so that the one-time set-up of LLVM is not
 * charged to the first model's cold call. */
static void warm_llvm(frnn_ctx *ctx, const options *o) {
  frnn_step *s = NULL;
  char *ptx = NULL;
  if (frnn_step_parse(ctx, "<warm-up>",
                      "step warm(x[M,1]; s[M,1]) -> y[M,1]\n  s = s * x\n  y = s\n", &s))
    return;
  frnn_codegen_options co = {.M = 1, .N = 1, .dtype = o->dt};
  frnn_compile_ptx(ctx, s, &co, &ptx);
  frnn_free(ptx);
  frnn_step_destroy(s);
}

int main(int argc, char **argv) {
  static options o;
  int rc = parse_args(argc, argv, &o);
  if (rc >= 0)
    return rc;
  frnn_ctx *ctx;
  if (frnn_ctx_create(&ctx) != FRNN_OK) {
    fprintf(stderr, PROG ": out of memory\n");
    return EXIT_FAIL;
  }
  if (o.lean) frnn_ctx_set_backward_mode(ctx, FRNN_BACKWARD_LEAN);
  if (frnn_gpu_available(ctx) != FRNN_OK) {
    fprintf(stderr, PROG ": no GPU: %s\n", frnn_ctx_error(ctx));
    frnn_ctx_destroy(ctx);
    return EXIT_FAIL;
  }
  cuda_scope scope;
  header h;
  memset(&h, 0, sizeof h);
  cuda_device_info info;
  if (cuda_enter(ctx, 0, &scope) || cuda_device_info_get(ctx, 0, &info) ||
      cuda_driver_version(ctx, &h.driver)) {
    fprintf(stderr, PROG ": no GPU: %s\n", frnn_ctx_error(ctx));
    frnn_ctx_destroy(ctx);
    return EXIT_FAIL;
  }
  snprintf(h.card, sizeof h.card, "%s", info.name);
  h.total_mem = info.total_mem;
  time_t now = time(NULL);
  strftime(h.date, sizeof h.date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  FILE *out = o.json && !strcmp(o.json, "-") ? stderr : stdout;
  char buf[128];
  fprintf(out, PROG ": %s (sm_%d%d, %.1f GB), driver %d.%d, %s\n", h.card, info.cc_major,
          info.cc_minor, (double)info.total_mem / 1e9, h.driver / 1000, h.driver % 1000 / 10,
          h.date);
  fprintf(out,
          "sizes %s, dtype %s (states float32), %d reps after %d warm-up, %d model%s, seed %llu%s\n",
          tu_format_sizes(o.sz, buf, sizeof buf), o.dt_name, o.reps, o.warmup, o.n_files,
          o.n_files == 1 ? "" : "s", (unsigned long long)o.seed, o.lean ? ", lean backward" : "");
  if (o.check)
    fprintf(out, "error vs the float64 reference at %s\n",
            tu_format_sizes(o.check_sz, buf, sizeof buf));
  fflush(out);
  h.copy_gbps = copy_bandwidth(ctx, h.copy_note, sizeof h.copy_note);
  if (h.copy_gbps == h.copy_gbps)
    fprintf(out, "copy bandwidth %.0f GB/s (1 GiB device-to-device, 2 x bytes / median of %d)\n",
            h.copy_gbps, COPY_REPS);
  else
    fprintf(out, "copy bandwidth not measured: %s (no floor)\n", h.copy_note);
  h.fma_gflops = fma_rate(ctx, h.fma_note, sizeof h.fma_note);
  if (h.fma_gflops == h.fma_gflops)
    fprintf(out, "float32 FMA rate %.0f GFLOP/s (%d blocks x %d threads x 8 chains, median of %d)\n",
            h.fma_gflops, FMA_BLOCKS, FMA_THREADS, FMA_REPS);
  else
    fprintf(out, "float32 FMA rate not measured: %s\n", h.fma_note);
  warm_llvm(ctx, &o);
  fputc('\n', out);
  print_header(out);
  fflush(out);

  result *res = calloc((size_t)o.n_files, sizeof *res);
  if (!res) {
    fprintf(stderr, PROG ": out of memory\n");
    return EXIT_FAIL;
  }
  int failed = 0;
  for (int k = 0; k < o.n_files; k++) {
    if (bench_model(&o, ctx, o.files[k], &res[k]))
      failed++;
    print_row(out, &o, &res[k], h.copy_gbps);
  }
  fputc('\n', out);
  for (int k = 0; k < o.n_files; k++)
    if (res[k].plan[0]) fprintf(out, "plan %s: %s\n", res[k].name, res[k].plan);
  int over = 0;
  for (int k = 0; k < o.n_files; k++)
    over += res[k].err_what[0] && over_bound(&o, res[k].err);
  if (over)
    fprintf(out, "\n%d model%s above the error bound (marked !)\n", over, over == 1 ? "" : "s");
  if (failed)
    fprintf(out, "%s%d of %d models failed\n", over ? "" : "\n", failed, o.n_files);
  if (o.json) {
    FILE *f = strcmp(o.json, "-") ? fopen(o.json, "w") : stdout;
    if (!f) {
      fprintf(stderr, PROG ": cannot write %s: %s\n", o.json, strerror(errno));
      failed++;
    } else {
      write_json(f, &o, &h, res, o.n_files);
      if (f != stdout && fclose(f)) {
        fprintf(stderr, PROG ": cannot write %s: %s\n", o.json, strerror(errno));
        failed++;
      }
    }
  }
  free(res);
  for (int k = 0; k < o.n_files; k++)
    free(o.files[k]);
  free(o.files);
  cuda_leave(&scope);
  frnn_ctx_destroy(ctx);
  return failed ? EXIT_FAIL : 0;
}
