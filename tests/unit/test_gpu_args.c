/* test_gpu_args.c - the GPU entry points reject bad calls before they touch
 * the driver, so these run on any machine: each bad-argument class with its
 * status and message.  Device tensors here point at host memory that is
 * never dereferenced. */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static frnn_ctx *ctx;
static frnn_step *step;
static float backing[16384];

typedef struct dev_tensor {
  DLTensor t;
  int64_t shape[5];
} dev_tensor;

static void make(dev_tensor *d, int ndim, const int64_t *shape, DLDeviceType dev) {
  memset(d, 0, sizeof *d);
  memcpy(d->shape, shape, (size_t)ndim * sizeof *shape);
  d->t = (DLTensor){.data = backing, .device = {dev, 0}, .ndim = ndim, .dtype = {kDLFloat, 32, 1},
                    .shape = d->shape};
}

/* Every tensor of one call of a step at sizes z, as the fake driver takes
 * them (it reads parameters, never data): the inputs (per_head: the one
 * input given per head, [1,1,H,1,1]) and initial states share one address,
 * each tensor written has its own; output gradients are the outputs', the
 * final states' gradients the final states'. */
enum { CALL_MAX = 8 };
typedef struct call_tensors {
  dev_tensor in[CALL_MAX], st[CALL_MAX], out[CALL_MAX], fin[CALL_MAX], gin[CALL_MAX], gst[CALL_MAX];
  const DLTensor *pin[CALL_MAX], *pst[CALL_MAX], *pgout[CALL_MAX], *pgfin[CALL_MAX];
  DLTensor *pout[CALL_MAX], *pfin[CALL_MAX], *pgin[CALL_MAX], *pgst[CALL_MAX];
  float *mem;
} call_tensors;

static void call_tensors_make(call_tensors *c, const frnn_step *s, frnn_sizes z, const char *per_head) {
  memset(c, 0, sizeof *c);
  int ni = frnn_step_port_count(s, FRNN_PORT_INPUT), ns = frnn_step_port_count(s, FRNN_PORT_STATE),
      no = frnn_step_port_count(s, FRNN_PORT_OUTPUT);
  size_t per = (size_t)(z.B * z.T * z.H * z.M * z.N), at = per; /* floats of each; slot 0 read-only */
  c->mem = calloc((size_t)(1 + ni + 2 * ns + no) * per, sizeof(float));
  ck_assert_ptr_nonnull(c->mem);
  for (int i = 0; i < ni; i++) {
    int cls = frnn_step_port_class(s, FRNN_PORT_INPUT, i);
    bool head = per_head && strcmp(frnn_step_port_name(s, FRNN_PORT_INPUT, i), per_head) == 0;
    int64_t shape[5] = {head ? 1 : z.B, head ? 1 : z.T, z.H, CLASS_HAS_M(cls) ? z.M : 1, CLASS_HAS_N(cls) ? z.N : 1};
    make(&c->in[i], 5, shape, kDLCUDA), make(&c->gin[i], 5, shape, kDLCUDA);
    c->in[i].t.data = c->mem, c->gin[i].t.data = c->mem + at, at += per;
    c->pin[i] = &c->in[i].t, c->pgin[i] = &c->gin[i].t;
  }
  for (int i = 0; i < ns; i++) {
    int cls = frnn_step_port_class(s, FRNN_PORT_STATE, i);
    int64_t shape[4] = {z.B, z.H, CLASS_HAS_M(cls) ? z.M : 1, CLASS_HAS_N(cls) ? z.N : 1};
    make(&c->st[i], 4, shape, kDLCUDA), make(&c->fin[i], 4, shape, kDLCUDA), make(&c->gst[i], 4, shape, kDLCUDA);
    c->st[i].t.data = c->mem, c->fin[i].t.data = c->mem + at, at += per, c->gst[i].t.data = c->mem + at, at += per;
    c->pst[i] = &c->st[i].t, c->pfin[i] = &c->fin[i].t, c->pgfin[i] = &c->fin[i].t, c->pgst[i] = &c->gst[i].t;
  }
  for (int i = 0; i < no; i++) {
    int64_t shape[4] = {z.B, z.T, z.H, z.M};
    make(&c->out[i], 4, shape, kDLCUDA);
    c->out[i].t.data = c->mem + at, at += per;
    c->pout[i] = &c->out[i].t, c->pgout[i] = &c->out[i].t;
  }
}

/* A forward with a workspace for the backward, then the backward, in
 * context cx on the tensors of c (through the fake driver: the launches'
 * parameters checked against their PTX); each must succeed. */
static void forward_backward(frnn_ctx *cx, const frnn_step *s, frnn_sizes z, call_tensors *c) {
  size_t need = 0;
  ck_assert(frnn_gpu_workspace_size(cx, s, z, c->pin, 1, &need) == FRNN_OK);
  void *ws = malloc(need);
  ck_assert_msg(frnn_gpu_forward(cx, s, z, c->pin, c->pst, c->pout, c->pfin, ws, need, NULL) == FRNN_OK, "%s",
                frnn_ctx_error(cx));
  ck_assert_msg(frnn_gpu_backward(cx, s, z, c->pin, c->pst, c->pgout, c->pgfin, c->pgin, c->pgst, ws, need,
                                  NULL) == FRNN_OK,
                "%s", frnn_ctx_error(cx));
  free(ws);
}

/* hgrn: x[M,1], g[M,1]; s[M,1] -> y[M,1], at B=1 T=2 H=1 M=4 N=1 */
static frnn_sizes sz = {1, 2, 1, 4, 1};
static dev_tensor x, g, s0, s1, y;
static const DLTensor *in[2], *st[1];
static DLTensor *out[1], *fin[1];

static void setup(void) {
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  ck_assert_msg(frnn_step_load(ctx, test_source_path("examples/hgrn.frnn"), &step) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  int64_t is[5] = {1, 2, 1, 4, 1}, ss[4] = {1, 1, 4, 1}, ys[4] = {1, 2, 1, 4};
  make(&x, 5, is, kDLCUDA), make(&g, 5, is, kDLCUDA), make(&s0, 4, ss, kDLCUDA);
  make(&s1, 4, ss, kDLCUDA), make(&y, 4, ys, kDLCUDA);
  s1.t.data = backing + 1024;
  y.t.data = backing + 2048;
  in[0] = &x.t, in[1] = &g.t, st[0] = &s0.t, out[0] = &y.t, fin[0] = &s1.t;
}

static void teardown(void) {
  frnn_step_destroy(step);
  frnn_ctx_destroy(ctx);
}

static void expect(frnn_status got, frnn_status want, const char *needle) {
  ck_assert_msg(got == want, "status %s, expected %s: %s", frnn_status_name(got),
                frnn_status_name(want), frnn_ctx_error(ctx));
  ck_assert_msg(strstr(frnn_ctx_error(ctx), needle), "message '%s' lacks '%s'", frnn_ctx_error(ctx),
                needle);
}

START_TEST(null_and_unfinished) {
  ck_assert_int_eq(frnn_gpu_forward(NULL, step, sz, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG);
  expect(frnn_gpu_forward(ctx, NULL, sz, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG, "step is NULL");
  frnn_step *open;
  ck_assert(frnn_step_create(ctx, "open", &open) == FRNN_OK);
  expect(frnn_gpu_forward(ctx, open, sz, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG, "not finished");
  frnn_step_destroy(open);
  frnn_step *adj;
  ck_assert(frnn_step_adjoint(step, &adj) == FRNN_OK);
  expect(frnn_gpu_forward(ctx, adj, sz, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG, "adjoint");
  frnn_step_destroy(adj);
  expect(frnn_gpu_forward(ctx, step, sz, NULL, st, out, fin, NULL, 0, NULL), FRNN_E_ARG,
         "array of inputs is NULL");
  size_t bytes;
  expect(frnn_gpu_workspace_size(ctx, step, sz, in, 1, NULL), FRNN_E_ARG, "bytes is NULL");
  ck_assert_int_eq(frnn_gpu_workspace_size(ctx, step, sz, in, 0, &bytes), FRNN_OK);
  ck_assert_uint_eq(bytes, 0); /* a forward alone needs no workspace */
  ck_assert_int_eq(frnn_gpu_workspace_size(ctx, step, sz, in, 1, &bytes), FRNN_OK);
  ck_assert_uint_gt(bytes, 0);
}
END_TEST

START_TEST(bad_sizes_and_devices) {
  frnn_sizes zero = sz;
  zero.T = 0;
  expect(frnn_gpu_forward(ctx, step, zero, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG, "T");
  frnn_sizes big = sz;
  big.B = 70000;
  expect(frnn_gpu_forward(ctx, step, big, in, st, out, fin, NULL, 0, NULL), FRNN_E_UNSUPPORTED,
         "65535");
  x.t.device.device_type = kDLCPU;
  expect(frnn_gpu_forward(ctx, step, sz, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG, "input 'x'");
  x.t.device.device_type = kDLCUDA;
  g.t.device.device_id = 1;
  expect(frnn_gpu_forward(ctx, step, sz, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG, "device 1");
}
END_TEST

START_TEST(in_place_states_are_refused) {
  fin[0] = &s0.t;
  expect(frnn_gpu_forward(ctx, step, sz, in, st, out, fin, NULL, 0, NULL), FRNN_E_ARG,
         "final state 's' is the same memory as its initial state");
  const DLTensor *gfin[1] = {&s1.t};
  DLTensor *gst[1] = {&s1.t}, *gin[2] = {NULL, NULL};
  char ws[16];
  expect(frnn_gpu_backward(ctx, step, sz, in, st, NULL, gfin, gin, gst, ws, sizeof ws, NULL),
         FRNN_E_ARG, "gradient of initial state 's' is the same memory");
  expect(frnn_gpu_backward(ctx, step, sz, in, st, NULL, gfin, gin, NULL, NULL, 0, NULL), FRNN_E_ARG,
         "workspace is NULL");
}
END_TEST

/* Two steps of one signature (ports, dtypes, layouts, sizes) but different
 * bodies must not share kernels in one context.  Through the fake driver
 * (CTest names it in FRNN_MOCK_LIBCUDA; kernels do nothing): each step's
 * first forward loads a module of its own, later ones load none. */
START_TEST(steps_of_one_signature_get_their_own_module) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: steps_of_one_signature_get_their_own_module left out");
    return;
  }
  frnn_step *other;
  ck_assert_msg(frnn_step_parse(ctx, "other.frnn",
                                "step hgrn(x[M,1], g[M,1]; s[M,1]) -> y[M,1]\n  s = s * g - x\n  y = s\n",
                                &other) == FRNN_OK,
                "%s", frnn_ctx_error(ctx));
  frnn_compile_stats a, b, c;
  ck_assert_msg(frnn_gpu_forward(ctx, step, sz, in, st, out, fin, NULL, 0, NULL) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  ck_assert(frnn_ctx_compile_stats(ctx, &a) == FRNN_OK);
  ck_assert_msg(frnn_gpu_forward(ctx, other, sz, in, st, out, fin, NULL, 0, NULL) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  ck_assert(frnn_ctx_compile_stats(ctx, &b) == FRNN_OK);
  ck_assert_int_eq(b.modules, a.modules + 1);
  ck_assert(frnn_gpu_forward(ctx, step, sz, in, st, out, fin, NULL, 0, NULL) == FRNN_OK);
  ck_assert(frnn_gpu_forward(ctx, other, sz, in, st, out, fin, NULL, 0, NULL) == FRNN_OK);
  ck_assert(frnn_ctx_compile_stats(ctx, &c) == FRNN_OK);
  ck_assert_int_eq(c.modules, b.modules);
  frnn_step_destroy(other);
}
END_TEST

/* Other backwards where the plan's spills, the first under 160 bytes kept,
 * else the one that spills least (pipeline.c get_module).  Through the fake
 * driver: by default every kernel reports 8 bytes and the plan's stays
 * (32 lanes); with MOCK_CUDA=later_spills_less each one looked up reports
 * less than the one before (all over 160): the last tried is kept; with
 * clusters_spill_less only cluster kernels report under 160: the first
 * cluster is kept.  Each is launched, its parameters checked against its
 * PTX. */
START_TEST(backward_keeps_the_kernel_that_spills_less) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: backward_keeps_the_kernel_that_spills_less left out");
    return;
  }
  setenv("FRNN_BWD_SMEM", "0", 1); /* shared-memory scratch has no alternative */
  if (_i) setenv("MOCK_CUDA", _i == 1 ? "later_spills_less" : "clusters_spill_less", 1);
  setenv("FRNN_CHUNKED", "0", 1); /* retention's recurrent kernels (test_guarded_step: both) */
  frnn_step *ret;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/retention.frnn"), &ret) == FRNN_OK);
  /* M = 64: the plan's backward is 8 warps of 32 lanes; tried: 16 lanes
   * (4 warps), then 2 blocks of 4 warps in a cluster */
  frnn_sizes rs = {1, 2, 1, 64, 32};
  call_tensors c;
  call_tensors_make(&c, ret, rs, "gamma");
  forward_backward(ctx, ret, rs, &c);
  const char *want = _i == 0 ? "bwd 32 lanes/row x 1 cols, 8 rows/thread, 8 warps, 1 blocks/head"
                              : "bwd 32 lanes/row x 1 cols, 8 rows/thread, 4 warps, 2 blocks/head (a cluster)";
  ck_assert_msg(strstr(ctx->backward_plan, want), "expected '%s' in: %s", want, ctx->backward_plan);
  if (_i == 0) ck_assert_msg(!strstr(ctx->backward_plan, "tried"), "%s", ctx->backward_plan);
  if (_i == 1) /* none under 160: every alternative tried, the least kept (the last) */
    ck_assert_msg(strstr(ctx->backward_plan, "16/4/1: 998, 32/4/2: 997"), "%s", ctx->backward_plan);
  if (_i == 2) /* 16 lanes (1000 bytes) tried, then the cluster (100) kept */
    ck_assert_msg(strstr(ctx->backward_plan, "local bytes a thread 1000, tried lanes/warps/blocks, 16/4/1: 1000, 32/4/2: 100"),
                  "%s", ctx->backward_plan);
  free(c.mem);
  frnn_step_destroy(ret);
  unsetenv("FRNN_CHUNKED");
  unsetenv("FRNN_BWD_SMEM"); /* (CK_FORK=no: the tests after share the environment) */
  unsetenv("MOCK_CUDA");
}
END_TEST

/* The forward and backward of examples/`name` at 16 x 16 in the fixture's
 * context (chunked: its plan in ctx->backward_plan). */
static void example_forward_backward(const char *name) {
  char path[64];
  snprintf(path, sizeof path, "examples/%s", name);
  frnn_step *step;
  ck_assert(frnn_step_load(ctx, test_source_path(path), &step) == FRNN_OK);
  frnn_sizes gs = {1, 40, 2, 16, 16};
  call_tensors t;
  call_tensors_make(&t, step, gs, NULL);
  forward_backward(ctx, step, gs, &t);
  free(t.mem);
  frnn_step_destroy(step);
}

/* The chunked chain kernel, built for 6 resident blocks an SM with its
 * loads unrolled, is built again for 4 where the driver's compile of it
 * spills, then for 6 without the unrolling, and the first build that does
 * not spill (else the one that spills least) is launched (pipeline.c
 * chain_without_spills), as the plan line says: through the fake driver,
 * 8 bytes at every build by default (the first kept); MOCK_CUDA=chain_spills,
 * 16 bytes at 6 blocks and none at 4 (4 kept, unrolled); with
 * MOCK_CUDA=later_spills_less each build less than the one before (the
 * last: 6 blocks, not unrolled), unless FRNN_CK_CHAIN_UNROLL=2 keeps the
 * unrolling (then 4 blocks). */
START_TEST(chunked_chain_keeps_the_build_that_spills_less) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: chunked_chain_keeps_the_build_that_spills_less left out");
    return;
  }
  static const char *const modes[] = {NULL, "chain_spills", "later_spills_less", "later_spills_less"};
  static const char *const wants[] = {"chain 6 blocks an SM unrolled", "chain 4 blocks an SM unrolled",
                                      "chain 6 blocks an SM", "chain 4 blocks an SM unrolled"};
  if (modes[_i]) setenv("MOCK_CUDA", modes[_i], 1);
  if (_i == 3) setenv("FRNN_CK_CHAIN_UNROLL", "2", 1);
  char dir[] = "/tmp/frnn-chain-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  setenv("FRNN_CACHE_DIR", dir, 1);
  cache_clear_memory(); /* every build compiled, none from another build's entry */
  example_forward_backward("gla.frnn");
  const char *at = strstr(ctx->backward_plan, wants[_i]);
  ck_assert_msg(at, "expected '%s' in: %s", wants[_i], ctx->backward_plan);
  if (_i == 2) ck_assert_msg(!strstr(at, "unrolled"), "expected no unrolling in: %s", ctx->backward_plan);
  unsetenv("MOCK_CUDA");
  unsetenv("FRNN_CK_CHAIN_UNROLL");
  unsetenv("FRNN_CACHE_DIR");
  rm_rf(dir);
}
END_TEST

/* Mamba-2's chunked backward, built with its copies early and its [M,N]
 * products in blocks of 8 tiles (no decay split: ck_plan.mma_big), is built without the blocks, then with
 * the copies late, then without either where the driver's compile of it
 * spills, and the build that spills least is launched (pipeline.c
 * backward_without_spills), as its plan line says: through the fake
 * driver, whose functions spill 8 bytes each by default (ties: the first
 * build kept) and, with MOCK_CUDA=later_spills_less, each less than the
 * one looked up before (the last build: "copies late", no blocks). A knob
 * that sets a choice keeps it: FRNN_CK_EARLY_LOADS=1 the early copies,
 * FRNN_CK_MMA_BIG=8 the blocks.  Each build is compiled, none answered by
 * the cache under another build's key (an empty cache directory). */
START_TEST(chunked_backward_choices_by_spills) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: chunked_backward_choices_by_spills left out");
    return;
  }
  if (_i) setenv("MOCK_CUDA", "later_spills_less", 1);
  if (_i == 2) setenv("FRNN_CK_EARLY_LOADS", "1", 1);
  if (_i == 3) setenv("FRNN_CK_MMA_BIG", "8", 1);
  char dir[] = "/tmp/frnn-choices-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  setenv("FRNN_CACHE_DIR", dir, 1);
  cache_clear_memory(); /* and none from the in-process cache (CK_FORK=no: earlier tests') */
  example_forward_backward("mamba2.frnn");
  frnn_compile_stats cs;
  ck_assert(frnn_ctx_compile_stats(ctx, &cs) == FRNN_OK);
  /* the forward's module, the backward's first build, its alternatives (3;
   * 3, the ties tried too; 1 with the copies fixed; 1 with the blocks
   * fixed) and the chain's for 4 blocks and without its unrolling (every
   * function spills here) */
  static const int builds[] = {7, 7, 5, 5};
  ck_assert_msg(cs.compiled == builds[_i] && cs.ptx_cache_hits == 0 && cs.cubin_cache_hits == 0,
                "case %d: %d compiled, %d and %d from the cache", (int)_i, cs.compiled, cs.ptx_cache_hits,
                cs.cubin_cache_hits);
  unsetenv("FRNN_CACHE_DIR");
  rm_rf(dir);
  bool late = _i == 1 || _i == 3, blocks = _i == 0 || _i == 3;
  ck_assert_msg((strstr(ctx->backward_plan, " copies late") != NULL) == late, "case %d: %s", (int)_i,
                ctx->backward_plan);
  ck_assert_msg((strstr(ctx->backward_plan, " 8-tile blocks") != NULL) == blocks, "case %d: %s", (int)_i,
                ctx->backward_plan);
  unsetenv("MOCK_CUDA");
  unsetenv("FRNN_CK_EARLY_LOADS");
  unsetenv("FRNN_CK_MMA_BIG");
}
END_TEST

/* A workspace that is not 16-byte aligned is refused by both calls (the
 * chunked backward copies its checkpoints 16 bytes at a time), an aligned
 * one (forward_backward's, from malloc) taken: through the fake driver, the
 * delta rule at 16 x 16. */
START_TEST(unaligned_workspace_is_refused) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: unaligned_workspace_is_refused left out");
    return;
  }
  frnn_step *dr;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/delta_rule.frnn"), &dr) == FRNN_OK);
  frnn_sizes gs = {1, 40, 2, 16, 16};
  call_tensors t;
  call_tensors_make(&t, dr, gs, NULL);
  size_t need = 0;
  ck_assert(frnn_gpu_workspace_size(ctx, dr, gs, t.pin, 1, &need) == FRNN_OK);
  char *mem = malloc(need + 32), *aligned = mem + (16 - (uintptr_t)mem % 16) % 16;
  for (int off = 4; off < 16; off += 4) {
    expect(frnn_gpu_forward(ctx, dr, gs, t.pin, t.pst, t.pout, t.pfin, aligned + off, need, NULL), FRNN_E_ARG,
           "not 16-byte aligned");
    expect(frnn_gpu_backward(ctx, dr, gs, t.pin, t.pst, t.pgout, t.pgfin, t.pgin, t.pgst, aligned + off, need, NULL),
           FRNN_E_ARG, "not 16-byte aligned");
  }
  free(mem);
  forward_backward(ctx, dr, gs, &t);
  free(t.mem);
  frnn_step_destroy(dr);
}
END_TEST

/* A fresh file for the fake driver's launch log (MOCK_CUDA_LAUNCH_LOG). */
static void launch_log_path(char *path, size_t size, const char *tag) {
  snprintf(path, size, "%s/frnn-mock-%s-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", tag, (int)getpid());
  remove(path);
}

/* The kernels the fake driver launched since the log was started. */
static char *launch_log(const char *path) {
  FILE *f = fopen(path, "r");
  static char text[4096];
  size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
  text[n] = 0;
  if (f) fclose(f);
  remove(path);
  return text;
}

/* A guarded step (retention: its gamma is not an exp, chunk_gpu.guard):
 * with the backward's workspace, the chunked forward (which sets the flag,
 * zeroed first) and the recurrent one (which runs only where it is set),
 * then the recurrent backward and the chunked one; with the forward's own
 * workspace (the flag only) both forwards without checkpoints; with none,
 * the recurrent forward alone; a workspace between the two sizes is
 * refused.  Every launch's parameters are checked against its PTX by the
 * fake driver. */
START_TEST(guarded_step_runs_both_paths) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: guarded_step_runs_both_paths left out");
    return;
  }
  char log[256];
  launch_log_path(log, sizeof log, "launches");
  setenv("MOCK_CUDA_LAUNCH_LOG", log, 1);
  frnn_step *ret;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/retention.frnn"), &ret) == FRNN_OK);
  frnn_sizes rs = {1, 40, 1, 16, 16};
  call_tensors c;
  call_tensors_make(&c, ret, rs, "gamma");
  const DLTensor *const *rin = c.pin, *const *rst = c.pst, *const *gy = c.pgout, *const *gfin = c.pgfin;
  DLTensor *const *rout = c.pout, *const *rfin = c.pfin, *const *gin = c.pgin, *const *gst = c.pgst;
  size_t need = 0, fw_only = 0;
  ck_assert(frnn_gpu_workspace_size(ctx, ret, rs, rin, 1, &need) == FRNN_OK);
  ck_assert(frnn_gpu_workspace_size(ctx, ret, rs, rin, 0, &fw_only) == FRNN_OK);
  ck_assert_uint_eq(fw_only, GUARD_BYTES);
  ck_assert_uint_gt(need, GUARD_BYTES);
  char *ws = malloc(need);
  memset(ws, 0xff, need);
  ck_assert_msg(frnn_gpu_forward(ctx, ret, rs, rin, rst, rout, rfin, ws, need, NULL) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  int32_t flag;
  memcpy(&flag, ws, 4);
  ck_assert_int_eq(flag, 0); /* zeroed before the chunked forward (which the fake driver does not run) */
  ck_assert_msg(frnn_gpu_backward(ctx, ret, rs, rin, rst, gy, gfin, gin, gst, ws, need, NULL) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  /* gamma, broadcast over T only: the recurrent backward sums it in the
   * kernel, the chunked one per chunk and then by frnn_reduce */
  ck_assert_str_eq(launch_log(log), "frnn_ck_fwd\nfrnn_fwd\nfrnn_bwd\nfrnn_ck_bwd\nfrnn_ck_chain\nfrnn_reduce_f32\n");
  ck_assert_msg(strstr(ctx->backward_plan, "guarded"), "%s", ctx->backward_plan);
  ck_assert_msg(frnn_gpu_forward(ctx, ret, rs, rin, rst, rout, rfin, ws, fw_only, NULL) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  ck_assert_str_eq(launch_log(log), "frnn_ck_fwd\nfrnn_fwd\n");
  ck_assert_msg(frnn_gpu_forward(ctx, ret, rs, rin, rst, rout, rfin, NULL, 0, NULL) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  ck_assert_str_eq(launch_log(log), "frnn_fwd\n");
  ck_assert(frnn_gpu_forward(ctx, ret, rs, rin, rst, rout, rfin, ws, fw_only + 4, NULL) == FRNN_E_ARG);
  ck_assert_msg(strstr(frnn_ctx_error(ctx), "a forward that a backward follows needs"), "%s", frnn_ctx_error(ctx));
  ck_assert(frnn_gpu_forward(ctx, ret, rs, rin, rst, rout, rfin, ws, 8, NULL) == FRNN_E_ARG);
  ck_assert(frnn_gpu_backward(ctx, ret, rs, rin, rst, gy, gfin, gin, gst, ws, fw_only, NULL) == FRNN_E_ARG);
  ck_assert_str_eq(launch_log(log), "");
  unsetenv("MOCK_CUDA_LAUNCH_LOG");
  free(ws);
  free(c.mem);
  frnn_step_destroy(ret);
}
END_TEST

/* The chunked backward in windows (FRNN_CK_WINDOW steps, whole chunks):
 * from the last window, frnn_ck_bwd then frnn_ck_chain each; the terms'
 * gradients take a window's steps of workspace (plus the carried gradient,
 * one state), one window the whole sequence's.  With a state stored every
 * 2 or 4 chunks (FRNN_CK_CKPT_EVERY; the lean mode's is 4), each stored
 * state's chunks are recomputed first (frnn_ck_fwd again) into slots for
 * all but the first, then run in windows of at most that many chunks. */
START_TEST(chunked_backward_in_windows) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: chunked_backward_in_windows left out");
    return;
  }
  char log[256];
  launch_log_path(log, sizeof log, "windows");
  enum { T = 250 }; /* chunks of 32: 8 */
  size_t need[4];
  for (int w = 0; w < 4; w++) {
    setenv("FRNN_CK_WINDOW", w == 3 ? "32" : w ? "64" : "0", 1); /* read when a context first plans the step */
    if (w >= 2) setenv("FRNN_CK_CKPT_EVERY", w == 3 ? "4" : "2", 1);
    frnn_ctx *c;
    ck_assert(frnn_ctx_create(&c) == FRNN_OK);
    frnn_step *gla;
    ck_assert(frnn_step_load(c, test_source_path("examples/gla.frnn"), &gla) == FRNN_OK);
    frnn_sizes gs = {1, T, 1, 16, 16};
    call_tensors t;
    call_tensors_make(&t, gla, gs, NULL);
    const DLTensor *const *in = t.pin, *const *st = t.pst, *const *gy = t.pgout, *const *gfin = t.pgfin;
    DLTensor *const *out = t.pout, *const *fin = t.pfin, *const *gin = t.pgin, *const *gst = t.pgst;
    ck_assert(frnn_gpu_workspace_size(c, gla, gs, in, 1, &need[w]) == FRNN_OK);
    char *ws = malloc(need[w]);
    setenv("MOCK_CUDA_LAUNCH_LOG", log, 1);
    ck_assert_msg(frnn_gpu_forward(c, gla, gs, in, st, out, fin, ws, need[w], NULL) == FRNN_OK, "%s", frnn_ctx_error(c));
    ck_assert_msg(frnn_gpu_backward(c, gla, gs, in, st, gy, gfin, gin, gst, ws, need[w], NULL) == FRNN_OK, "%s",
                  frnn_ctx_error(c));
    unsetenv("MOCK_CUDA_LAUNCH_LOG");
    /* one window; 4 windows of 2 chunks; the same, each recomputed first;
     * 2 groups of 4 chunks, each recomputed, then 4 windows of 1 chunk */
    char want[512] = "frnn_ck_fwd\n";
    for (int i = 0; i < (w == 3 ? 8 : w ? 4 : 1); i++) {
      if (w == 2 || (w == 3 && i % 4 == 0)) strcat(want, "frnn_ck_fwd\n");
      strcat(want, "frnn_ck_bwd\nfrnn_ck_chain\n");
    }
    ck_assert_str_eq(launch_log(log), want);
    free(ws);
    free(t.mem);
    frnn_step_destroy(gla);
    frnn_ctx_destroy(c);
  }
  unsetenv("FRNN_CK_WINDOW");
  unsetenv("FRNN_CK_CKPT_EVERY");
  /* The terms' gradients (the log decay, q and k: rows of 16; v: a column
   * of 16: 4 arrays of 64 bytes a step) for a window's 64 steps instead of
   * the 8 chunks' 256, plus the carried state (1 KB). */
  ck_assert_msg(need[0] - need[1] == 4 * (256 - 64) * 64 - 1024, "%zu %zu", need[0], need[1]);
  /* States every 2 chunks: 5 slots (chunks 0, 2, 4, 6 and the last) and 1
   * recomputed (the second of a stored one's 2 chunks), against 9 (1 KB
   * each). */
  ck_assert_msg(need[1] - need[2] == 3 * 1024, "%zu %zu", need[1], need[2]);
  /* Every 4: 3 slots and 3 recomputed, as many; windows of 32 steps. */
  ck_assert_msg(need[2] - need[3] == 4 * (64 - 32) * 64, "%zu %zu", need[2], need[3]);
}
END_TEST

/* The backward's attention matrices, every (lin, update) pair's at once
 * where shared memory holds them (ck_plan.bw_pairs): the delta rule's four
 * pairs at 16 x 16, as its plan line says; FRNN_CK_BW_PAIRS=0 a pair at a
 * time, and a module of its own (the knob is in the modules' keys).  A step
 * of one pair (GLA) never says it. */
START_TEST(backward_pairs_in_the_plan) {
  if (!getenv("FRNN_MOCK_LIBCUDA")) {
    puts("FRNN_MOCK_LIBCUDA is unset: backward_pairs_in_the_plan left out");
    return;
  }
  const char *files[3] = {"examples/delta_rule.frnn", "examples/delta_rule.frnn", "examples/gla.frnn"};
  for (int i = 0; i < 3; i++) {
    if (i == 1) setenv("FRNN_CK_BW_PAIRS", "0", 1); /* read when a context first plans the step */
    frnn_ctx *c;
    ck_assert(frnn_ctx_create(&c) == FRNN_OK);
    frnn_step *st;
    ck_assert(frnn_step_load(c, test_source_path(files[i]), &st) == FRNN_OK);
    frnn_sizes z = {1, 40, 2, 16, 16};
    call_tensors t;
    call_tensors_make(&t, st, z, NULL);
    forward_backward(c, st, z, &t);
    ck_assert_msg((strstr(c->backward_plan, " pairs at once") != NULL) == (i == 0), "%s: %s", files[i],
                  c->backward_plan);
    unsetenv("FRNN_CK_BW_PAIRS");
    free(t.mem);
    frnn_step_destroy(st);
    frnn_ctx_destroy(c);
  }
}
END_TEST

int main(void) {
  /* Before any call can load a driver: the fake one, where CTest provides it
   * (the other tests here fail before they reach the driver). */
  const char *mock = getenv("FRNN_MOCK_LIBCUDA");
  if (mock && *mock) setenv("FRNN_LIBCUDA", mock, 1);
  Suite *su = suite_create("gpu_args");
  TCase *tc = tcase_create("args");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, null_and_unfinished);
  tcase_add_test(tc, bad_sizes_and_devices);
  tcase_add_test(tc, in_place_states_are_refused);
  tcase_add_test(tc, steps_of_one_signature_get_their_own_module);
  tcase_add_loop_test(tc, backward_keeps_the_kernel_that_spills_less, 0, 3);
  tcase_add_loop_test(tc, chunked_chain_keeps_the_build_that_spills_less, 0, 4);
  tcase_add_loop_test(tc, chunked_backward_choices_by_spills, 0, 4);
  tcase_add_test(tc, guarded_step_runs_both_paths);
  tcase_add_test(tc, chunked_backward_in_windows);
  tcase_add_test(tc, backward_pairs_in_the_plan);
  tcase_add_test(tc, unaligned_workspace_is_refused);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
