/* test_ptx_models.c - without a GPU: for every example model, at several
 * state sizes (powers of two and not, M = N = 1 included) and dtypes, every
 * kernel of its plan is lowered, its LLVM IR verifies (cg_finish), and ptxas
 * -arch=sm_90 accepts the PTX.  Prints ptxas's register and spill report per
 * kernel so that a regression in register pressure shows in the log. */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char files[64][256];
static int n_files;

static void list_examples(void) {
  DIR *d = opendir(test_source_path("examples"));
  if (!d) return; /* main fails the run: fewer than 15 examples */
  struct dirent *e;
  while ((e = readdir(d)) && n_files < 64) {
    size_t len = strlen(e->d_name);
    if (len > 5 && strcmp(e->d_name + len - 5, ".frnn") == 0)
      snprintf(files[n_files++], sizeof files[0], "examples/%.240s", e->d_name);
  }
  closedir(d);
}

typedef struct size_case {
  int64_t M, N;
  DLDataType dt;
} size_case;

static const size_case SIZES[] = {
    {128, 128, {kDLBfloat, 16, 1}}, {64, 64, {kDLFloat, 32, 1}}, {48, 96, {kDLFloat, 16, 1}},
    {1, 1, {kDLFloat, 32, 1}},      {3, 5, {kDLBfloat, 16, 1}},  {128, 16, {kDLFloat, 32, 1}},
};

/* Keep only ptxas's "Used N registers" and spill lines, one per kernel. */
static void print_report(const char *file, const size_case *sc, const char *report) {
  for (const char *p = report; p && *p;) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    if ((len > 20 && memmem(p, len, "Compiling entry", 15)) || memmem(p, len, "spill", 5) ||
        memmem(p, len, "Used", 4))
      printf("  %s M=%lld N=%lld: %.*s\n", file, (long long)sc->M, (long long)sc->N, (int)len, p);
    p = nl ? nl + 1 : NULL;
  }
}

static bool chunked_model(const char *file) {
  static const char *const names[] = {"/gla.frnn",        "/mamba2.frnn",           "/rwkv6.frnn", "/gsa_values.frnn",
                                      "/delta_rule.frnn", "/gated_delta_rule.frnn", "/rwkv7.frnn",
                                      "/retention.frnn", "/gsa_keys.frnn"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (strstr(file, names[i])) return true;
  return false;
}

START_TEST(every_model_every_size) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  const char *file = files[_i];
  frnn_step *s;
  ck_assert_msg(frnn_step_load(ctx, test_source_path(file), &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  for (size_t k = 0; k < sizeof SIZES / sizeof *SIZES; k++) {
    frnn_codegen_options o = {.M = SIZES[k].M, .N = SIZES[k].N, .dtype = SIZES[k].dt};
    char *ptx = NULL, *report = NULL;
    ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s M=%lld N=%lld: %s", file,
                  (long long)o.M, (long long)o.N, frnn_ctx_error(ctx));
    /* The chunked class runs on the chunked kernels (lower_chunked.c);
     * every other step on the recurrent ones. */
    if (chunked_model(file))
      ck_assert_msg(strstr(ptx, ".entry frnn_ck_fwd") && strstr(ptx, ".entry frnn_ck_bwd") &&
                        strstr(ptx, ".entry frnn_ck_chain") && !strstr(ptx, ".entry frnn_fwd"),
                    "%s M=%lld N=%lld: not the chunked kernels", file, (long long)o.M, (long long)o.N);
    else
      ck_assert_msg(strstr(ptx, ".entry frnn_fwd") && strstr(ptx, ".entry frnn_bwd") && !strstr(ptx, "frnn_ck_"),
                    "%s M=%lld N=%lld: not the recurrent kernels", file, (long long)o.M, (long long)o.N);
    frnn_status st = cg_ptxas_check(ctx, ptx, "sm_90", &report);
    if (st == FRNN_E_UNSUPPORTED) {
      printf("ptxas not found: PTX of %s not assembled\n", file);
    } else {
      ck_assert_msg(st == FRNN_OK, "ptxas rejected %s M=%lld N=%lld: %s\n%s", file, (long long)o.M,
                    (long long)o.N, frnn_ctx_error(ctx), report ? report : "");
      print_report(file, &SIZES[k], report);
    }
    free(report);
    frnn_free(ptx);
    /* A guarded step (retention: gamma is not an exp; GSA's keys: a decay
     * along M) has the recurrent kernels too, run where the chunked forward
     * flags the call: named, they are built (with the flag parameter) and
     * assemble. */
    bool guarded = strstr(file, "/retention.frnn") || strstr(file, "/gsa_keys.frnn");
    for (int r = 0; guarded && r < 2; r++) {
      o.kernel = r ? "frnn_bwd" : "frnn_fwd";
      ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s %s: %s", file, o.kernel, frnn_ctx_error(ctx));
      ck_assert_msg(strstr(ptx, r ? ".entry frnn_bwd" : ".entry frnn_fwd"), "%s: no %s", file, o.kernel);
      st = cg_ptxas_check(ctx, ptx, "sm_90", &report);
      ck_assert_msg(st == FRNN_OK || st == FRNN_E_UNSUPPORTED, "ptxas rejected %s %s: %s", file, o.kernel,
                    report ? report : "");
      free(report);
      frnn_free(ptx);
    }
  }
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Which backwards defer their sums over M (plan.c, split_kinds): every
 * example but mLSTM (its normaliser n is a [1,N] state whose gradient is a
 * sum over M); a [1,N] state scaling the matrix state is refused the same
 * way; a partial added to a value without rows (partial + uniform) is
 * refused (not supported); a [1,N] input's gradient summed over M is
 * deferred.  Closed-form expectations, checked on the plan and the kinds. */
static frnn_step *parse(frnn_ctx *ctx, const char *text) {
  frnn_step *s = NULL;
  ck_assert_msg(frnn_step_parse(ctx, "inline.frnn", text, &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  return s;
}

static bool deferred(frnn_ctx *ctx, const frnn_step *s, int64_t M, int64_t N) {
  target t;
  plan p;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  ck_assert_msg(plan_make(ctx, s, NULL, M, N, &t, &p) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  return p.bwd_deferred;
}

START_TEST(deferred_sums_over_m) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  for (int f = 0; f < n_files; f++) {
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(files[f]), &s) == FRNN_OK);
    bool want = strstr(files[f], "mlstm") == NULL;
    ck_assert_msg(deferred(ctx, s, 128, 128) == want, "%s: deferred should be %d", files[f], want);
    frnn_step_destroy(s);
  }
  frnn_step *row_state = parse(ctx, "step z(k[1,N]; S[M,N], z[1,N]) -> y[M,1]\n"
                                    "  S = S * z + k\n  z = z * k\n  y = sum(S)\n");
  ck_assert(!deferred(ctx, row_state, 64, 32));
  frnn_step *mixed = parse(ctx, "step mix(k[1,N], v[M,1]; S[M,N]) -> y[M,1], w[1,1]\n"
                                "  S = S + v * k\n  y = sum(S * k)\n  w = sum(k * k)\n");
  ck_assert(!deferred(ctx, mixed, 64, 32));
  frnn_step *plain = parse(ctx, "step lin(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n"
                                "  S = S + v * k\n  y = sum(S * k)\n");
  ck_assert(deferred(ctx, plain, 64, 32));
  frnn_step *adj;
  ck_assert(frnn_step_adjoint(plain, &adj) == FRNN_OK);
  uint8_t kind[256];
  ck_assert_uint_lt(adj->n_nodes, 256);
  ck_assert(split_kinds(adj, 2, kind));
  ck_assert_int_eq(kind[adj->ports[FRNN_PORT_OUTPUT][0].value], KIND_PARTIAL); /* grad_k */
  ck_assert_int_eq(kind[adj->ports[FRNN_PORT_OUTPUT][1].value], KIND_LOCAL);   /* grad_v */
  frnn_step_destroy(adj);
  frnn_step_destroy(plain);
  frnn_step_destroy(mixed);
  frnn_step_destroy(row_state);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The plan's tuning knobs (plan.c, lower_llvm.c) give kernels ptxas
 * accepts: clusters (mapa, barrier.cluster in the backward of a deferred
 * model), two-level checkpoints, prefetch into registers or as L1 hints,
 * recomputed states in shared memory, alone and in a cluster. */
static const char *const KNOBS[][2] = {
    {"FRNN_BWD_CLUSTER", "8"}, {"FRNN_BWD_C2", "8"}, {"FRNN_PREFETCH", "1"}, {"FRNN_PREFETCH", "2"},
    {"FRNN_BWD_SMEM", "1"}, {"FRNN_BWD_SMEM", "1,FRNN_BWD_CLUSTER=4"}};

static int count(const char *text, const char *what) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

/* The chunked kernels' variants: two blocks a head (partials summed by the
 * chain kernel), the chain fused into the backward, no decay split, short
 * chunks, 512 threads, products on CUDA cores; and the diagonal-class
 * steps on the recurrent kernels (FRNN_CHUNKED=0).  Each must build and
 * assemble. */
static const char *const CK_KNOBS[][2] = {
    {"FRNN_CK_BM", "64"}, {"FRNN_CK_FUSE", "1"},      {"FRNN_CK_SPLIT_MAX", "-1"}, {"FRNN_CK_L", "16"},
    {"FRNN_CK_THREADS", "512"}, {"FRNN_CK_MMA", "0"}, {"FRNN_CHUNKED", "0"},
    /* the thirteenth session's: the backward's pairs one at a time, the forward's threads alone */
    {"FRNN_CK_BW_PAIRS", "0"}, {"FRNN_CK_THREADS_FWD", "512"},
    /* the fourteenth session's: the elementwise passes as loops, the
     * backward's copies after its term arrays with the L2 prefetch */
    {"FRNN_CK_UNROLL_LOADS", "0"}, {"FRNN_CK_EARLY_LOADS", "2"}, {"FRNN_CK_CKPT_GROUP", "16"},
    /* the fifteenth session's: blocks of 8 tiles in both kernels, A's conversions by integer operations */
    {"FRNN_CK_MMA_BIG", "8"}, {"FRNN_CK_CVT", "int"},
    /* the sixteenth session's: 4-byte checkpoint copies, the state's copy waited for early */
    {"FRNN_CK_WIDE_COPIES", "0"}, {"FRNN_CK_STATE_WAIT", "0"},
    /* the seventeenth session's: the products in three bfloat16 parts */
    {"FRNN_CK_PRODUCTS", "bf16x3"},
    /* the nineteenth session's: the merge in the columns only, and with
     * the pairs against b (b in the backward); the products sharing a
     * state one by one */
    {"FRNN_CK_MERGE", "1"}, {"FRNN_CK_MERGE", "2"}, {"FRNN_CK_STACK", "0"}};

START_TEST(chunked_variants_assemble) {
  setenv(CK_KNOBS[_i][0], CK_KNOBS[_i][1], 1);
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  for (int f = 0; f < n_files; f++) {
    if (!chunked_model(files[f])) continue;
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(files[f]), &s) == FRNN_OK);
    for (int k = 0; k < 5; k += 2) { /* 128 x 128 bf16, 48 x 96 f16, 3 x 5 bf16 */
      frnn_codegen_options o = {.M = SIZES[k].M, .N = SIZES[k].N, .dtype = SIZES[k].dt};
      char *ptx = NULL, *report = NULL;
      ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s %s=%s: %s", files[f], CK_KNOBS[_i][0],
                    CK_KNOBS[_i][1], frnn_ctx_error(ctx));
      bool recurrent = _i == 6, fused = _i == 1;
      ck_assert_msg(recurrent ? strstr(ptx, ".entry frnn_fwd") != NULL
                              : strstr(ptx, ".entry frnn_ck_bwd") && !strstr(ptx, ".entry frnn_ck_chain") == fused,
                    "%s %s=%s: other kernels than asked for", files[f], CK_KNOBS[_i][0], CK_KNOBS[_i][1]);
      frnn_status st = cg_ptxas_check(ctx, ptx, "sm_90", &report);
      ck_assert_msg(st == FRNN_OK || st == FRNN_E_UNSUPPORTED, "ptxas rejected %s %s=%s: %s\n%s", files[f],
                    CK_KNOBS[_i][0], CK_KNOBS[_i][1], frnn_ctx_error(ctx), report ? report : "");
      free(report);
      frnn_free(ptx);
    }
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Which products go to tensor cores is the plan's decision: at 128 x 128
 * every plain product of GLA's kernels (mma.sync, in float64 on sm_90), at
 * 3 x 5 none (CUDA cores), and none with FRNN_CK_MMA=0; the backward loads
 * its chunk states by cp.async and adds the terms' gradients by atomics. */
static const char MMA_TF32[] = "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32";
static const char MMA_F64[] = "mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64";

/* The step's PTX for 128 x 128 bf16 on arch, with the knobs of `knobs` set
 * ("NAME=VALUE,NAME=VALUE"; NULL: none) while it compiles. */
static char *chunked_ptx(const char *file, const char *arch, const char *knobs) {
  char buf[256], *names[8];
  int n = 0;
  snprintf(buf, sizeof buf, "%s", knobs ? knobs : "");
  for (char *kv = strtok(buf, ","); kv && n < 8; kv = strtok(NULL, ",")) {
    char *eq = strchr(kv, '=');
    ck_assert_ptr_nonnull(eq);
    *eq = 0;
    setenv(kv, eq + 1, 1);
    names[n++] = kv;
  }
  frnn_ctx *ctx; /* a context per call: a context keeps its chunked plans, knobs included */
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path(file), &s) == FRNN_OK);
  frnn_codegen_options o = {.M = 128, .N = 128, .dtype = {kDLBfloat, 16, 1}, .arch = arch};
  char *ptx = NULL;
  ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
  for (int i = 0; i < n; i++) unsetenv(names[i]);
  return ptx;
}

/* Kernel `entry`'s text in ptx: from its .entry line to *end (the next
 * kernel's, or NULL: the end of the module). */
static const char *kernel_text(const char *ptx, const char *entry, const char **end) {
  char head[96];
  snprintf(head, sizeof head, ".entry %s", entry);
  const char *p = strstr(ptx, head);
  ck_assert_msg(p != NULL, "no %s", entry);
  *end = strstr(p + 1, ".entry");
  return p;
}

/* The most global loads of one basic block of kernel `entry` in ptx (a
 * block ends at a label or a branch). */
static int loads_in_one_block(const char *ptx, const char *entry) {
  const char *end, *p = kernel_text(ptx, entry, &end);
  int most = 0, here = 0;
  for (; p && *p && (!end || p < end);) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    if ((len > 3 && p[0] == '$' && memmem(p, len, ":", 1)) || memmem(p, len, "bra", 3)) here = 0;
    else if (memmem(p, len, "ld.global", 9) && ++here > most) most = here;
    p = nl ? nl + 1 : NULL;
  }
  return most;
}

/* The fewest operand conversions (cvt.f64.f32) per float64 mma in a basic
 * block of kernel `entry` that has at least 8 mma (HUGE_VAL: none). */
static double conversions_per_mma(const char *ptx, const char *entry) {
  const char *end, *p = kernel_text(ptx, entry, &end);
  double fewest = HUGE_VAL;
  int mma = 0, cvt = 0;
  for (; p && *p && (!end || p < end);) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    bool ends = (len > 3 && p[0] == '$' && memmem(p, len, ":", 1)) || memmem(p, len, "bra", 3);
    if (ends) {
      if (mma >= 8 && (double)cvt / mma < fewest) fewest = (double)cvt / mma;
      mma = cvt = 0;
    }
    if (memmem(p, len, MMA_F64, strlen(MMA_F64))) mma++;
    if (memmem(p, len, "cvt.f64.f32", 11)) cvt++;
    p = nl ? nl + 1 : NULL;
  }
  return fewest;
}

/* The chunked backward's [M,N] products (the gradient before the chunk)
 * in blocks of 2 x 4 tiles a warp (ck_plan.mma_big): each operand element
 * converted once for 2 mma at most; without (FRNN_CK_MMA_BIG=0) 3 at
 * least (blocks of 1 x 4).  The forward keeps its blocks of 2. */
START_TEST(chunked_big_products_convert_less) {
  char *big = chunked_ptx("examples/delta_rule.frnn", NULL, NULL);
  char *small = chunked_ptx("examples/delta_rule.frnn", NULL, "FRNN_CK_MMA_BIG=0");
  double bwd = conversions_per_mma(big, "frnn_ck_bwd"), bwd_small = conversions_per_mma(small, "frnn_ck_bwd");
  double fwd = conversions_per_mma(big, "frnn_ck_fwd");
  ck_assert_msg(bwd <= 2 && bwd_small >= 3 && fwd >= 3, "conversions a mma: backward %g, without the blocks %g, "
                "forward %g", bwd, bwd_small, fwd);
  frnn_free(big), frnn_free(small);
}
END_TEST

/* The chunked backward copies its checkpoints (a chunk's first state, the
 * rank-one columns and inverse) 16 bytes at a time (cp.async.cg ..., 16)
 * where rows allow, as 4-byte copies none; FRNN_CK_WIDE_COPIES=0 and a
 * state whose rows are not multiples of 4 floats (3 x 5) take the 4-byte
 * copies alone. */
START_TEST(chunked_copies_16_bytes) {
  struct { const char *knob; int M, N; bool wide; } cases[] = {
      {NULL, 128, 128, true}, {NULL, 64, 96, true}, {"FRNN_CK_WIDE_COPIES=0", 128, 128, false}, {NULL, 3, 5, false}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    if (cases[c].knob) putenv((char *)cases[c].knob);
    frnn_ctx *ctx;
    ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path("examples/delta_rule.frnn"), &s) == FRNN_OK);
    frnn_codegen_options o = {.M = cases[c].M, .N = cases[c].N, .dtype = {kDLBfloat, 16, 1}, .kernel = "frnn_ck_bwd"};
    char *ptx = NULL;
    ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s", frnn_ctx_error(ctx));
    int wide = count(ptx, "cp.async.cg.shared.global"), narrow = count(ptx, "cp.async.ca.shared.global");
    ck_assert_msg(cases[c].wide ? wide >= 4 && narrow == 0 : wide == 0 && narrow >= 2,
                  "case %d (%d x %d): %d copies of 16 bytes, %d of 4", (int)c, cases[c].M, cases[c].N, wide, narrow);
    if (cases[c].knob) unsetenv("FRNN_CK_WIDE_COPIES");
    frnn_free(ptx);
    frnn_step_destroy(s);
    frnn_ctx_destroy(ctx);
  }
}
END_TEST

/* The chunked kernels' elementwise passes unrolled without branches
 * (elems_first; FRNN_CK_UNROLL_LOADS): the delta rule's forward
 * issues its term arrays' loads (q and k at 8 elements a thread, v at 8)
 * in one basic block, so that all are in flight at once; as loops (=0),
 * four at most (LLVM unrolls them twice).  The backward's too, with the
 * output gradients. */
START_TEST(chunked_loads_in_flight_together) {
  char *unrolled = chunked_ptx("examples/delta_rule.frnn", NULL, NULL);
  char *looped = chunked_ptx("examples/delta_rule.frnn", NULL, "FRNN_CK_UNROLL_LOADS=0");
  int fwd = loads_in_one_block(unrolled, "frnn_ck_fwd"), bwd = loads_in_one_block(unrolled, "frnn_ck_bwd");
  int fwd_looped = loads_in_one_block(looped, "frnn_ck_fwd");
  ck_assert_msg(fwd >= 24 && bwd >= 24 && fwd_looped < 8, "global loads in one block: forward %d, backward %d, "
                "forward as loops %d", fwd, bwd, fwd_looped);
  frnn_free(unrolled), frnn_free(looped);
}
END_TEST

START_TEST(chunked_products_on_tensor_cores) {
  struct { int M, N; const char *knob; bool want; } cases[] = {
      {128, 128, NULL, true}, {64, 96, NULL, true}, {3, 5, NULL, false}, {128, 128, "0", false}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    if (cases[c].knob) setenv("FRNN_CK_MMA", cases[c].knob, 1);
    frnn_ctx *ctx;
    ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path("examples/gla.frnn"), &s) == FRNN_OK);
    frnn_codegen_options o = {.M = cases[c].M, .N = cases[c].N, .dtype = {kDLBfloat, 16, 1}};
    char *ptx = NULL;
    ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s", frnn_ctx_error(ctx));
    ck_assert_msg((strstr(ptx, MMA_F64) != NULL) == cases[c].want, "%d x %d FRNN_CK_MMA=%s: mma.sync %s",
                  cases[c].M, cases[c].N, cases[c].knob ? cases[c].knob : "(unset)",
                  cases[c].want ? "missing" : "present");
    ck_assert(!strstr(ptx, MMA_TF32));
    /* the checkpoints' copies by cp.async, 4 or 16 bytes (chunked_copies_16_bytes) */
    ck_assert((strstr(ptx, "cp.async.ca.shared.global") || strstr(ptx, "cp.async.cg.shared.global")) &&
              strstr(ptx, "atom.global.add.f32"));
    frnn_free(ptx);
    frnn_step_destroy(s);
    frnn_ctx_destroy(ctx);
    unsetenv("FRNN_CK_MMA");
  }
  /* 3xTF32 (FRNN_CK_F64=0, and sm_80's only form): three products per
   * k-step where FRNN_CK_TF32=1 has one and float64 one (with the kernels'
   * shapes the same: threads, tiles and unrolling); the low-rank class (the
   * delta rule) on tensor cores too */
  const char *same = "FRNN_CK_THREADS=256,FRNN_CK_MMA_TILES=8,FRNN_CK_MMA_UNROLL=4";
  char knobs[2][160];
  snprintf(knobs[0], sizeof knobs[0], "%s,FRNN_CK_F64=0", same);
  snprintf(knobs[1], sizeof knobs[1], "%s,FRNN_CK_TF32=1", same);
  char *three = chunked_ptx("examples/gla.frnn", NULL, knobs[0]);
  char *ampere = chunked_ptx("examples/gla.frnn", "sm_80", NULL);
  char *one = chunked_ptx("examples/gla.frnn", NULL, knobs[1]);
  char *dp = chunked_ptx("examples/gla.frnn", NULL, same);
  char *delta = chunked_ptx("examples/delta_rule.frnn", NULL, NULL);
  int n3 = count(three, MMA_TF32), n1 = count(one, MMA_TF32), n64 = count(dp, MMA_F64);
  ck_assert_msg(n1 > 0 && n3 == 3 * n1 && n64 == n1 && !strstr(three, MMA_F64) && !strstr(one, MMA_F64),
                "mma.sync: 3xTF32 %d, FRNN_CK_TF32=1 %d, float64 %d", n3, n1, n64);
  ck_assert_msg(strstr(ampere, MMA_TF32) && !strstr(ampere, MMA_F64), "sm_80: not 3xTF32");
  ck_assert_int_gt(count(delta, MMA_F64), 0);
  frnn_free(three), frnn_free(ampere), frnn_free(one), frnn_free(dp), frnn_free(delta);
}
END_TEST

/* FRNN_CK_PRODUCTS=bf16x3: the products as bfloat16 mma (m16n8k16), six a
 * tile and k-step of 16 (three parts of each operand), and no float64 mma
 * left at 128 x 128 (every K a multiple of 16); the probe's fewer parts
 * (bf16x3,PA,PB) take PA x PB of the six in the same loops; the default
 * and 3 x 5 (CUDA cores) none. */
static const char MMA_BF16[] = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";
static int bf16_mma_count(const char *products, int M, int N, int *f64) {
  if (products) setenv("FRNN_CK_PRODUCTS", products, 1);
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/delta_rule.frnn"), &s) == FRNN_OK);
  frnn_codegen_options o = {.M = M, .N = N, .dtype = {kDLBfloat, 16, 1}};
  char *ptx = NULL;
  ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  int n = count(ptx, MMA_BF16);
  *f64 = count(ptx, MMA_F64);
  frnn_free(ptx);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
  unsetenv("FRNN_CK_PRODUCTS");
  return n;
}

START_TEST(chunked_products_in_bf16_parts) {
  int f64_default, f64_six, f64_one, f64_three, f64_small;
  int none = bf16_mma_count(NULL, 128, 128, &f64_default), six = bf16_mma_count("bf16x3", 128, 128, &f64_six);
  int one = bf16_mma_count("bf16x3,1,1", 128, 128, &f64_one), three = bf16_mma_count("bf16x3,1,3", 128, 128, &f64_three);
  int small = bf16_mma_count("bf16x3", 3, 5, &f64_small);
  ck_assert_msg(none == 0 && f64_default > 0, "default: %d bf16 mma, %d float64", none, f64_default);
  ck_assert_msg(one > 0 && six == 6 * one && three == 3 * one && f64_six == 0 && f64_one == 0 && f64_three == 0,
                "bf16 mma: six parts %d, one %d, three %d; float64 left %d", six, one, three, f64_six);
  ck_assert_msg(small == 0 && f64_small == 0, "3 x 5: %d bf16 mma, %d float64", small, f64_small);
}
END_TEST

/* The decay gradient's starting sum over the rows of dS * S, in its four
 * forms (FRNN_CK_RUN_SUM, lower_chunked.c run_sum_row), told apart by their
 * float64 conversions beside the float32 form's, at 128 rows (Mamba-2 128 x
 * 128 bf16): f64 two a row, split one a row and two where its chains'
 * errors meet, dot2 four there alone; split is the default; each assembles.  And the
 * 3xTF32 sites (FRNN_CK_TF32X3_SITES): every site's float64 product becomes
 * three TF32 ones. */
START_TEST(chunked_sum_forms_and_sites) {
  const char *forms[] = {"FRNN_CK_RUN_SUM=f32", "FRNN_CK_RUN_SUM=f64", "FRNN_CK_RUN_SUM=split",
                         "FRNN_CK_RUN_SUM=dot2", NULL};
  const char *cvt = "cvt.f64.f32";
  char *ptx[5];
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  for (int i = 0; i < 5; i++) {
    ptx[i] = chunked_ptx("examples/mamba2.frnn", NULL, forms[i]);
    if (!forms[i]) continue; /* the default: split's text, asserted below */
    char *report = NULL;
    frnn_status st = cg_ptxas_check(ctx, ptx[i], "sm_90", &report);
    ck_assert_msg(st == FRNN_OK || st == FRNN_E_UNSUPPORTED, "ptxas rejected %s: %s\n%s", forms[i],
                  frnn_ctx_error(ctx), report ? report : "");
    free(report);
  }
  frnn_ctx_destroy(ctx);
  int base = count(ptx[0], cvt);
  ck_assert_int_eq(count(ptx[1], cvt) - base, 2 * 128);
  ck_assert_int_eq(count(ptx[2], cvt) - base, 128 + 2);
  ck_assert_int_eq(count(ptx[3], cvt) - base, 4);
  ck_assert_str_eq(ptx[4], ptx[2]);
  for (int i = 0; i < 5; i++) frnn_free(ptx[i]);
  char *dp = chunked_ptx("examples/delta_rule.frnn", NULL, NULL);
  char *three = chunked_ptx("examples/delta_rule.frnn", NULL, "FRNN_CK_TF32X3_SITES=0xffffff");
  char *end = chunked_ptx("examples/delta_rule.frnn", NULL, "FRNN_CK_TF32X3_SITES=0x8");
  int n64 = count(dp, MMA_F64);
  ck_assert_msg(n64 > 0 && count(three, MMA_TF32) == 3 * n64 && !strstr(three, MMA_F64),
                "every site: %d float64 products against %d TF32", n64, count(three, MMA_TF32));
  ck_assert_int_eq(count(end, MMA_F64) + count(end, MMA_TF32) / 3, n64);
  ck_assert_int_gt(count(end, MMA_TF32), 0);
  frnn_free(dp), frnn_free(three), frnn_free(end);
}
END_TEST

START_TEST(tuning_knobs_assemble) {
  /* each test runs in its own process; "V,NAME=W" sets a second knob */
  char value[64];
  snprintf(value, sizeof value, "%s", KNOBS[_i][1]);
  char *more = strchr(value, ',');
  if (more) {
    *more++ = 0;
    char *eq = strchr(more, '=');
    ck_assert_ptr_nonnull(eq);
    *eq = 0;
    setenv(more, eq + 1, 1);
  }
  setenv(KNOBS[_i][0], value, 1);
  setenv("FRNN_CHUNKED", "0", 1); /* these knobs are the recurrent kernels' */
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  for (int f = 0; f < n_files; f++) {
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(files[f]), &s) == FRNN_OK);
    for (int k = 0; k < 3; k += 2) { /* 128 x 128 bf16, 48 x 96 f16 */
      frnn_codegen_options o = {.M = SIZES[k].M, .N = SIZES[k].N, .dtype = SIZES[k].dt};
      char *ptx = NULL, *report = NULL;
      ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &ptx) == FRNN_OK, "%s %s=%s: %s", files[f],
                    KNOBS[_i][0], KNOBS[_i][1], frnn_ctx_error(ctx));
      bool splits = !strstr(files[f], "mlstm") && !strstr(files[f], "hgrn") && !strstr(files[f], "rwkv4") &&
                    !strstr(files[f], "s4d"); /* a deferred exchange across the cluster */
      if ((_i == 0 || _i == 5) && k == 0 && splits)
        ck_assert_msg(strstr(ptx, "barrier.cluster") && strstr(ptx, "mapa"), "%s: no cluster exchange", files[f]);
      if (_i == 3) ck_assert(strstr(ptx, "prefetch.global.L1"));
      if (_i >= 4 && k == 2 && splits) { /* 48 x 96: the recomputed states fit shared memory */
        setenv("FRNN_BWD_SMEM", "0", 1);
        char *global = NULL;
        ck_assert(frnn_compile_ptx(ctx, s, &o, &global) == FRNN_OK);
        setenv("FRNN_BWD_SMEM", "1", 1);
        ck_assert_msg(count(ptx, "st.shared.f32") > count(global, "st.shared.f32") &&
                          count(ptx, "st.global.f32") < count(global, "st.global.f32"),
                      "%s: no shared scratch", files[f]);
        frnn_free(global);
      }
      frnn_status st = cg_ptxas_check(ctx, ptx, "sm_90", &report);
      ck_assert_msg(st == FRNN_OK || st == FRNN_E_UNSUPPORTED, "ptxas rejected %s with %s=%s: %s\n%s",
                    files[f], KNOBS[_i][0], KNOBS[_i][1], frnn_ctx_error(ctx), report ? report : "");
      free(report);
      frnn_free(ptx);
    }
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Workspace states per head (closed form): one level ceil(T/C) + C with C =
 * ceil(sqrt(T)); two levels ceil(T/C) + C2 + ceil(C/C2) - 1 with C =
 * ceil(sqrt(T C2) / C2) C2. */
START_TEST(workspace_levels) {
  setenv("FRNN_CHUNKED", "0", 1); /* the recurrent kernels' workspace (the delta rule has chunked ones) */
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/delta_rule.frnn"), &s) == FRNN_OK);
  target t;
  plan p;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  ck_assert(plan_make(ctx, s, NULL, 128, 128, &t, &p) == FRNN_OK);
  frnn_sizes sz = {.B = 2, .T = 1000, .H = 3, .M = 128, .N = 128};
  uint8_t bc[4] = {0, 0, 0, 0};
  ws_layout one, two;
  plan_workspace(&p, sz, bc, 1, &one);
  ck_assert_int_eq(one.C, 32);
  ck_assert_int_eq(one.C2, 32);
  ck_assert_int_eq(one.n_ckpt, 32);
  p.bwd_c2 = 8; /* as FRNN_BWD_C2=8 makes the plan */
  plan_workspace(&p, sz, bc, 1, &two);
  ck_assert_int_eq(two.C, 96); /* ceil(sqrt(8000) / 8) * 8 */
  ck_assert_int_eq(two.C2, 8);
  ck_assert_int_eq(two.n_ckpt, 11);
  size_t per_state = (size_t)p.bwd.warps * 32 * (size_t)p.bwd_regs * 4, heads = 6;
  ck_assert_uint_eq(one.scratch - one.ckpt, heads * 32 * (size_t)p.state_floats * 4);
  ck_assert_uint_ge(one.total - one.scratch, heads * 32 * per_state);
  ck_assert_uint_ge(two.total - two.scratch, heads * (8 + 12 - 1) * per_state);
  ck_assert_uint_lt(two.total - two.scratch, heads * (8 + 12 - 1) * per_state + 256);
  ck_assert_uint_lt(two.total, one.total);
  /* FRNN_BWD_C: the forward's checkpoints every 8 steps, the scratch 8
   * states; beyond T, one chunk. */
  ws_layout c8, cbig;
  p.bwd_c2 = 0;
  p.bwd_c = 8;
  plan_workspace(&p, sz, bc, 1, &c8);
  ck_assert_int_eq(c8.C, 8);
  ck_assert_int_eq(c8.C2, 8);
  ck_assert_int_eq(c8.n_ckpt, 125);
  ck_assert_uint_eq(c8.scratch - c8.ckpt, heads * 125 * (size_t)p.state_floats * 4);
  ck_assert_uint_ge(c8.total - c8.scratch, heads * 8 * per_state);
  ck_assert_uint_lt(c8.total - c8.scratch, heads * 8 * per_state + 256);
  p.bwd_c = 5000;
  plan_workspace(&p, sz, bc, 1, &cbig);
  ck_assert_int_eq(cbig.C, 1000);
  ck_assert_int_eq(cbig.n_ckpt, 1);
  p.bwd_c2 = 8; /* two levels: C rounded up to a multiple of C2 */
  p.bwd_c = 20;
  plan_workspace(&p, sz, bc, 1, &cbig);
  ck_assert_int_eq(cbig.C, 24);
  ck_assert_int_eq(cbig.C2, 8);
  p.bwd_c = 0;
  /* The public switch: FRNN_BACKWARD_LEAN is C2 = 8; the query needs no GPU. */
  size_t fast = 0, lean = 0;
  ck_assert(frnn_gpu_workspace_size(ctx, s, sz, NULL, 1, &fast) == FRNN_OK);
  ck_assert(frnn_ctx_set_backward_mode(ctx, FRNN_BACKWARD_LEAN) == FRNN_OK);
  ck_assert(frnn_gpu_workspace_size(ctx, s, sz, NULL, 1, &lean) == FRNN_OK);
  /* (inputs NULL: partial gradients sized for the worst broadcast, the same
   * in both, so the difference is the checkpoints' and the scratch's) */
  ck_assert_uint_eq(fast - lean, one.total - two.total);
  ck_assert(frnn_ctx_set_backward_mode(ctx, (frnn_backward_mode)7) == FRNN_E_ARG);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "FRNN_BACKWARD_LEAN"));
  ck_assert(frnn_ctx_set_backward_mode(NULL, FRNN_BACKWARD_FAST) == FRNN_E_ARG);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Steps of small rows (HGRN, RWKV-4) queue their next steps' loads in
 * registers (lower_llvm.c, prefetch): depths a power of two (the forward's
 * up to 32, the backward's 16), the backward's chunks whole trips of its
 * queue, and no copies in the forward's time loop (the queue's rotation is
 * renaming in trips unrolled by its depth; a copy of a value just loaded
 * would wait for it: a memory latency a step).  Where the queue's first
 * steps are in the sequence, each place's addresses are the place before's
 * a step on, through an opaque mov (pf_begin), not a multiply a load. */
START_TEST(small_rows_queue) {
  static const struct { const char *file; int fwd, bwd; } want[] = {{"examples/hgrn.frnn", 32, 16},
                                                                   {"examples/rwkv4.frnn", 16, 8}};
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  for (int k = 0; k < 2; k++) {
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(want[k].file), &s) == FRNN_OK);
    plan p;
    ck_assert(plan_make(ctx, s, NULL, 128, 128, &t, &p) == FRNN_OK);
    ck_assert_int_eq(p.prefetch, PREFETCH_REGS);
    ck_assert_int_eq(p.pf_depth_fwd, want[k].fwd);
    ck_assert_int_eq(p.pf_depth_bwd, want[k].bwd);
    /* FRNN_PREFETCH_DEPTH: "D_fwd,D_bwd"; "D_fwd," leaves the backward's */
    static const struct { const char *env; int fwd, bwd; } forced[] = {{"64,4", 64, 4}, {"8,", 8, -1}, {"2", 2, 2}};
    for (int f = 0; f < 3; f++) {
      plan q;
      setenv("FRNN_PREFETCH_DEPTH", forced[f].env, 1);
      ck_assert(plan_make(ctx, s, NULL, 128, 128, &t, &q) == FRNN_OK);
      unsetenv("FRNN_PREFETCH_DEPTH");
      ck_assert_int_eq(q.pf_depth_fwd, forced[f].fwd);
      ck_assert_int_eq(q.pf_depth_bwd, forced[f].bwd < 0 ? want[k].bwd : forced[f].bwd);
    }
    uint8_t bc[4] = {0, 0, 0, 0};
    static const int64_t T[][2] = {{1000, 32}, {200, 16}, {5, 5}, {1, 1}}; /* T, C */
    for (int i = 0; i < 4; i++) {
      ws_layout w;
      frnn_sizes sz = {.B = 2, .T = T[i][0], .H = 3, .M = 128, .N = 128};
      plan_workspace(&p, sz, bc, 1, &w);
      ck_assert_int_eq(w.C, T[i][1]);
      ck_assert_int_eq(w.n_ckpt, (T[i][0] + T[i][1] - 1) / T[i][1]);
    }
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
  char *ptx = chunked_ptx("examples/hgrn.frnn", "sm_90", NULL);
  const char *end, *fwd = kernel_text(ptx, "frnn_fwd", &end);
  char *text = strndup(fwd, end ? (size_t)(end - fwd) : strlen(fwd));
  ck_assert_int_eq(count(text, "mov.u16") + count(text, "mov.b16"), 0);
  /* x and g (two rows side by side a load: adjacent_rows): the queue's
   * first 32 steps (in the sequence, or clamped), whole trips, the last
   * trips */
  ck_assert_int_ge(count(text, "ld.global.nc.b32"), 4 * 2 * 32);
  ck_assert_int_ge(count(text, "mov.b64"), 2 * 31);
  free(text);
  const char *bwd = kernel_text(ptx, "frnn_bwd", &end);
  text = strndup(bwd, end ? (size_t)(end - bwd) : strlen(bwd));
  /* the recompute's x and g; the walk's g and dy: x, added to the state,
   * is not an operand of the backward (scratch_and_queues) */
  ck_assert_int_eq(count(text, "mov.b64"), (2 + 2) * 15);
  free(text);
  free(ptx);
}
END_TEST

/* A step's recurrent kernels (`kernels`) lowered at M = 128 and N from a
 * spec built here: tensors of dtype dt, states float32, every tensor
 * contiguous and VEC_ALIGN-aligned except in the roles (CONTIG_* bits)
 * of `not_contig` and `not_aligned`. */
static char *lowered_ptx(const char *file, int64_t N, enum tdtype dt, unsigned kernels, unsigned not_contig,
                         unsigned not_aligned) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s, *adj;
  ck_assert(frnn_step_load(ctx, test_source_path(file), &s) == FRNN_OK);
  ck_assert(frnn_step_adjoint(s, &adj) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  plan p;
  ck_assert(plan_make(ctx, s, NULL, 128, N, &t, &p) == FRNN_OK);
  lower_spec spec;
  memset(&spec, 0, sizeof spec);
  for (int i = 0; i < FRNN_MAX_PORTS; i++) {
    spec.dt_in[i] = spec.dt_out[i] = spec.dt_gout[i] = spec.dt_gin[i] = dt;
    spec.dt_state[i] = spec.dt_final[i] = spec.dt_gfinal[i] = spec.dt_gstate[i] = TD_F32;
  }
  for (int r = 0; r < 8; r++) {
    spec.contig[r] = (not_contig >> r) & 1 ? 0 : UINT32_MAX;
    spec.aligned[r] = (not_aligned >> r) & 1 ? 0 : UINT32_MAX;
  }
  codegen cg;
  memset(&cg, 0, sizeof cg);
  char *ptx = NULL;
  ck_assert(cg_begin(ctx, &t, s->name, &cg) == FRNN_OK);
  ck_assert_msg(lower_module(&cg, &p, &spec, s, adj, kernels) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_msg(cg_finish(&cg, 0, &ptx) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  cg_dispose(&cg);
  frnn_step_destroy(adj);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
  return ptx;
}

/* The backward of RWKV-4 (bf16) lowered with its output gradient marked
 * contiguous (as pipeline.c marks only a present tensor) or not: a
 * present one is loaded with no null test and no zeros (targ.present), an
 * absent-or-strided one keeps both. */
static char *backward_ptx_gout(bool gout_contig) {
  return lowered_ptx("examples/rwkv4.frnn", 128, TD_BF16, KERNEL_BWD, gout_contig ? 0 : 1u << CONTIG_GOUT, 0);
}

/* HGRN's kernels (tensors of dtype dt) with every tensor marked
 * VEC_ALIGN-aligned or none (lower_spec.aligned; FRNN_ROWS_VEC: rows_vec,
 * NULL: the plan's). */
static char *small_rows_ptx(enum tdtype dt, bool aligned, const char *rows_vec) {
  if (rows_vec) setenv("FRNN_ROWS_VEC", rows_vec, 1);
  char *ptx = lowered_ptx("examples/hgrn.frnn", 1, dt, KERNEL_FWD | KERNEL_BWD, 0, aligned ? 0 : 0xff);
  unsetenv("FRNN_ROWS_VEC");
  return ptx;
}

/* Steps of small rows hold rows side by side (plan.c adjacent_rows): 2 a
 * thread by default, up to FRNN_ROWS_VEC where they divide M and a lane
 * has that many, else 1 (rows apart).  An aligned bf16 column then moves
 * two rows a 32-bit load or store (cvt.rn.bf16x2 rounds and packs both),
 * 8 a 16-byte one (float32: 4; float64: 2); a misaligned one
 * (lower_spec.aligned clear) a row at a time, as before. */
START_TEST(adjacent_rows) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/hgrn.frnn"), &s) == FRNN_OK);
  static const struct { int64_t M; const char *env; int rpt; } want[] = {
      {128, NULL, 2}, {127, NULL, 1}, {32, NULL, 1}, {64, NULL, 2}, {128, "8", 4}, {256, "8", 8}, {128, "1", 1},
      {200, "8", 4}};
  for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
    if (want[k].env) setenv("FRNN_ROWS_VEC", want[k].env, 1);
    plan p;
    ck_assert(plan_make(ctx, s, NULL, want[k].M, 1, &t, &p) == FRNN_OK);
    unsetenv("FRNN_ROWS_VEC");
    ck_assert_msg(p.fwd.rpt == want[k].rpt && p.bwd.rpt == want[k].rpt, "M = %lld: %d, %d rows a thread",
                  (long long)want[k].M, p.fwd.rpt, p.bwd.rpt);
    ck_assert(p.fwd.rows_adjacent == (want[k].rpt > 1) && p.bwd.rows_adjacent == (want[k].rpt > 1));
  }
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
  char *aligned = small_rows_ptx(TD_BF16, true, NULL), *misaligned = small_rows_ptx(TD_BF16, false, NULL),
       *wide = small_rows_ptx(TD_BF16, true, "8"), *f32 = small_rows_ptx(TD_F32, true, "8"),
       *f64 = small_rows_ptx(TD_F64, true, "8");
  const char *end, *fwd = kernel_text(aligned, "frnn_fwd", &end);
  char *text = strndup(fwd, end ? (size_t)(end - fwd) : strlen(fwd));
  ck_assert_int_eq(count(text, "ld.global.nc.u16"), 0);
  ck_assert_int_ge(count(text, "ld.global.nc.b32"), 2 * 32);
  ck_assert_int_gt(count(text, "cvt.rn.bf16x2.f32"), 0);
  ck_assert_int_eq(count(text, "st.global.b16"), 0);
  free(text);
  fwd = kernel_text(misaligned, "frnn_fwd", &end);
  text = strndup(fwd, end ? (size_t)(end - fwd) : strlen(fwd));
  ck_assert_int_eq(count(text, "ld.global.nc.b32"), 0);
  ck_assert_int_ge(count(text, "ld.global.nc.u16"), 2 * 2 * 32);
  ck_assert_int_eq(count(text, "cvt.rn.bf16x2.f32"), 0);
  free(text);
  /* 4 rows a thread at M = 128: 8 bytes, two words a load */
  ck_assert_int_gt(count(wide, "ld.global.nc.v2.b32"), 0);
  ck_assert_int_gt(count(wide, "st.global.v2.b32"), 0);
  ck_assert_int_eq(count(wide, "ld.global.nc.u16"), 0);
  ck_assert_int_gt(count(f32, "ld.global.nc.v4.f32"), 0); /* 4 rows, 16 bytes */
  ck_assert_int_gt(count(f32, "st.global.v4.f32"), 0);
  ck_assert_int_gt(count(f64, "ld.global.nc.v2.f64"), 0); /* 4 rows, two vectors of 2 */
  ck_assert_int_gt(count(f64, "st.global.v2.f64"), 0);
  free(f32);
  free(f64);
  free(aligned);
  free(misaligned);
  free(wide);
}
END_TEST

START_TEST(present_output_gradient) {
  char *present = backward_ptx_gout(true), *maybe = backward_ptx_gout(false);
  ck_assert_int_eq(count(present, "0x0000;"), 0);
  ck_assert_int_gt(count(maybe, "0x0000;"), 0);
  ck_assert_int_lt(count(present, "bra"), count(maybe, "bra"));
  free(present);
  free(maybe);
}
END_TEST

/* Basic blocks of kernel `entry` in ptx holding every one of the n strings
 * of `all` (a block ends at a label or a branch). */
static int blocks_with(const char *ptx, const char *entry, const char *const *all, int n) {
  const char *end, *p = kernel_text(ptx, entry, &end);
  int blocks = 0;
  unsigned seen = 0;
  for (; p && *p && (!end || p < end);) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    if (len > 3 && p[0] == '$' && memmem(p, len, ":", 1)) seen = 0;
    for (int i = 0; i < n; i++)
      if (memmem(p, len, all[i], strlen(all[i]))) seen |= 1u << i;
    if (seen == (1u << n) - 1) blocks++, seen = 0;
    if (memmem(p, len, "bra", 3)) seen = 0;
    p = nl ? nl + 1 : NULL;
  }
  return blocks;
}

/* Predicated stores (plan.c pred_fwd, pred_bwd; cg_store_elem_if): kernels
 * of at most 2 rows a thread store without branches (S4D's forward and
 * backward, RWKV-4's), those of more keep their branches (Mamba's at 128 x
 * 128: 4 rows a thread forward, 8 backward); FRNN_PRED_STORES forces
 * either.  In the PTX, a step of RWKV-4's walk is one basic block, its
 * states loaded from scratch and its gradients stored; with branches the
 * backward has no predicated store. */
START_TEST(predicated_stores) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  static const struct { const char *file; int64_t N; bool fwd, bwd; } want[] = {
      {"examples/s4d.frnn", 32, true, true}, {"examples/rwkv4.frnn", 128, true, true},
      {"examples/mamba.frnn", 128, false, false}, {"examples/mlstm.frnn", 16, true, false}};
  for (int k = 0; k < 4; k++) {
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(want[k].file), &s) == FRNN_OK);
    plan p;
    ck_assert(plan_make(ctx, s, NULL, 128, want[k].N, &t, &p) == FRNN_OK);
    ck_assert_msg(p.pred_fwd == want[k].fwd && p.pred_bwd == want[k].bwd, "%s: %d %d (%d and %d rows a thread)",
                  want[k].file, p.pred_fwd, p.pred_bwd, p.fwd.rpt, p.bwd.rpt);
    for (int forced = 0; forced < 2; forced++) {
      setenv("FRNN_PRED_STORES", forced ? "1" : "0", 1);
      ck_assert(plan_make(ctx, s, NULL, 128, want[k].N, &t, &p) == FRNN_OK);
      unsetenv("FRNN_PRED_STORES");
      ck_assert(p.pred_fwd == forced && p.pred_bwd == forced);
    }
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
  char *with = chunked_ptx("examples/rwkv4.frnn", "sm_90", NULL);
  char *without = chunked_ptx("examples/rwkv4.frnn", "sm_90", "FRNN_PRED_STORES=0");
  static const char *const step[] = {"ld.shared.f32", "@p st.global.b16"}; /* states from the roles' sets */
  ck_assert_int_ge(blocks_with(with, "frnn_bwd", step, 2), 8); /* the walk's trips of 8 steps */
  const char *end, *bwd = kernel_text(without, "frnn_bwd", &end);
  char *text = strndup(bwd, end ? (size_t)(end - bwd) : strlen(bwd));
  ck_assert_int_eq(count(text, "@p st.global"), 0);
  ck_assert_int_gt(count(text, "st.global.b16"), 0);
  free(text);
  free(with);
  free(without);
}
END_TEST

/* The recurrent kernels divide by div.full.f32 (plan.c div_full,
 * codegen.c cg_fdiv: at most 2 ulp, no slow path); FRNN_DIV=0 and accurate
 * math keep IEEE division (div.rn.f32); a constant divisor stays LLVM's to
 * fold.  RWKV-4's wkv and its gradients divide in both kernels. */
START_TEST(full_range_division) {
  char *fast = chunked_ptx("examples/rwkv4.frnn", "sm_90", NULL);
  char *ieee = chunked_ptx("examples/rwkv4.frnn", "sm_90", "FRNN_DIV=0");
  ck_assert_int_eq(count(fast, "div.rn.f32"), 0);
  ck_assert_int_gt(count(fast, "div.full.ftz.f32") + count(fast, "div.full.f32"), 8);
  ck_assert_int_eq(count(ieee, "div.full"), 0);
  ck_assert_int_gt(count(ieee, "div.rn.f32"), 8);
  frnn_free(fast);
  frnn_free(ieee);
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/rwkv4.frnn"), &s) == FRNN_OK);
  frnn_codegen_options o = {.M = 32, .N = 1, .dtype = {kDLFloat, 32, 1}, .accurate_math = 1};
  char *accurate = NULL;
  ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &accurate) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_int_eq(count(accurate, "div.full"), 0);
  frnn_free(accurate);
  frnn_step_destroy(s);
  frnn_step *half;
  ck_assert_msg(frnn_step_parse(ctx, "half.frnn", "step half(x[M,1]; s[M,1]) -> y[M,1]\n  s = s / 2 + x / s\n  y = s\n",
                                &half) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  char *ptx = NULL;
  o.accurate_math = 0;
  ck_assert_msg(frnn_compile_ptx(ctx, half, &o, &ptx) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  const char *end, *fwd = kernel_text(ptx, "frnn_fwd", &end);
  char *text = strndup(fwd, end ? (size_t)(end - fwd) : strlen(fwd));
  ck_assert_int_gt(count(text, "div.full"), 0); /* x / s */
  ck_assert_int_eq(count(text, "div.rn"), 0);   /* s / 2: a multiplication */
  free(text);
  frnn_free(ptx);
  frnn_step_destroy(half);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* A backward whose rows need nothing from each other (S4D: every input has
 * rows, no sum over M; plan.c rows_apart): its head's rows split over
 * independent blocks (no cluster), a thread a row of 8 columns, the
 * recomputed states in its share of shared memory at 2 blocks an SM (the
 * kernel built for them), and a queue of loads whose trips fit the
 * second-level pieces.  Steps with sums to exchange (Mamba: B's and C's
 * gradients) or small rows (HGRN) keep theirs; a queue of fewer than 4 steps
 * is none; the first pass over a chunk (two levels) gets its own queue, as
 * deep as the loads allow (plan.pf_depth_first: S4D's 8 where its pieces
 * allow 4; FRNN_PREFETCH_FIRST), one level none.  In the PTX, the
 * backward's recompute emits only what the states
 * need: no block that stores a recomputed state to shared memory also
 * shuffles (S4D's output, a sum over N, had its shuffles there). */
START_TEST(rows_apart_backward) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  static const struct { const char *file; bool apart; int fwd_depth, bwd_depth, first_depth; } want[] = {
      {"examples/s4d.frnn", true, 8, 4, 8}, {"examples/mamba.frnn", false, 0, 0, 0}, {"examples/hgrn.frnn", false, 32, 16, 0}};
  for (int k = 0; k < 3; k++) {
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(want[k].file), &s) == FRNN_OK);
    for (int64_t N = 32; N <= 128; N *= 4) {
      plan p;
      ck_assert(plan_make(ctx, s, NULL, 128, N, &t, &p) == FRNN_OK);
      ck_assert_msg(p.bwd_rows_apart == want[k].apart, "%s", want[k].file);
      ck_assert_int_eq(p.pf_depth_fwd, want[k].fwd_depth);
      ck_assert_int_eq(p.pf_depth_bwd, want[k].bwd_depth);
      ck_assert_int_eq(p.pf_depth_first, want[k].first_depth);
      if (!want[k].apart) continue;
      setenv("FRNN_PREFETCH_FIRST", "16", 1);
      plan q;
      ck_assert(plan_make(ctx, s, NULL, 128, N, &t, &q) == FRNN_OK);
      unsetenv("FRNN_PREFETCH_FIRST");
      ck_assert_int_eq(q.pf_depth_first, 16);
      ck_assert_int_eq(q.pf_depth_bwd, want[k].bwd_depth);
      ck_assert_int_eq(p.bwd.lpr * p.bwd.cn, N);
      ck_assert_int_eq(p.bwd.cn, 8);
      ck_assert_int_eq(p.bwd.rpt, 1);
      ck_assert_int_eq(p.bwd.row_blocks * p.bwd.warps * (32 / p.bwd.lpr), 128);
      ck_assert_int_eq(p.bwd_min_blocks, 2);
      ck_assert_int_eq(p.bwd_shared_slots, (227 * 1024 / 2) / (p.bwd_regs * p.bwd.warps * 32 * 4));
      uint8_t bc[6] = {0, 3, 3, 3, 3, 3};
      static const int64_t T[] = {1024, 1000, 200, 9, 5, 1};
      for (int i = 0; i < 6; i++) {
        ws_layout w;
        frnn_sizes sz = {.B = 2, .T = T[i], .H = 3, .M = 128, .N = N};
        plan_workspace(&p, sz, bc, 1, &w);
        ck_assert_int_ge(w.C2, 1);
        ck_assert_int_le(w.C2, w.C);
        ck_assert_int_le(w.C2 + (w.C + w.C2 - 1) / w.C2 - 1, p.bwd_shared_slots);
        ck_assert_int_eq(w.n_ckpt, (T[i] + w.C - 1) / w.C);
        if (T[i] >= 1000) ck_assert_int_eq(w.C2 % p.pf_depth_bwd, 0); /* whole trips */
        if (T[i] == 1024) { /* 14 slots, trips of 4: fewest pieces and chunks */
          ck_assert_int_eq(w.C2, 12);
          ck_assert_int_eq(w.C, 36);
        }
      }
    }
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
  char *ptx = chunked_ptx("examples/s4d.frnn", "sm_90", NULL);
  const char *end, *bwd = kernel_text(ptx, "frnn_bwd", &end);
  char *text = strndup(bwd, end ? (size_t)(end - bwd) : strlen(bwd));
  ck_assert_int_eq(count(text, "barrier.cluster"), 0);
  ck_assert_int_eq(count(text, ".minnctapersm 2"), 1);
  ck_assert_int_gt(count(text, "shfl.sync"), 0); /* the walk's sum over N */
  int stores = 0, mixed = 0, shuffles = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '$' || strstr(line, "bra")) { /* a block ends */
      mixed += stores && shuffles;
      stores = shuffles = 0;
    }
    stores += strstr(line, "st.shared") != NULL;
    shuffles += strstr(line, "shfl.sync") != NULL;
  }
  mixed += stores && shuffles;
  ck_assert_int_eq(mixed, 0);
  free(text);
  free(ptx);
}
END_TEST

/* The walk's carry (lower_backward): where a backward thread keeps few
 * states (S4D's 16 floats; Mamba's at N = 16) the walk takes each step's
 * next states from the step after it, and S4D's backward loses the five
 * floating-point operations of each complex mode's recompute (40 a step,
 * in each unrolled copy of the walk); Mamba's 32 floats a thread at 128 x
 * 128 are not carried (ptxas spilled more). */
static int fp_ops(const char *ptx, const char *kernel) {
  const char *end, *k = kernel_text(ptx, kernel, &end);
  char *text = strndup(k, end ? (size_t)(end - k) : strlen(k));
  int n = count(text, "fma.rn.f32") + count(text, "mul.rn.f32") + count(text, "add.rn.f32") +
          count(text, "sub.rn.f32");
  free(text);
  return n;
}

START_TEST(walk_carry) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  static const struct { const char *file; int64_t N; bool carry; } want[] = {
      {"examples/s4d.frnn", 32, true}, {"examples/s4d.frnn", 128, true}, {"examples/mamba.frnn", 128, false},
      {"examples/mamba.frnn", 16, true}, {"examples/longhorn.frnn", 128, false}};
  for (int k = 0; k < 5; k++) {
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(want[k].file), &s) == FRNN_OK);
    plan p;
    ck_assert(plan_make(ctx, s, NULL, 128, want[k].N, &t, &p) == FRNN_OK);
    ck_assert_msg(p.bwd_carry == want[k].carry, "%s at N = %lld", want[k].file, (long long)want[k].N);
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
  char *with = chunked_ptx("examples/s4d.frnn", "sm_90", NULL);
  char *without = chunked_ptx("examples/s4d.frnn", "sm_90", "FRNN_BWD_CARRY=0");
  int a = fp_ops(with, "frnn_bwd"), b = fp_ops(without, "frnn_bwd");
  ck_assert_msg(b - a >= 4 * 40, "S4D's backward: %d floating-point operations with the carry, %d without", a, b);
  ck_assert_int_eq(fp_ops(with, "frnn_fwd"), fp_ops(without, "frnn_fwd"));
  free(without);
  /* The backward's chains (lower_llvm.c absorbed_nodes): S4D's state
   * update u + a*b - c*d is two FMAs, not an FMA, a multiply and an add, in
   * the recompute and in the second-level pass (8 complex modes a thread:
   * 16 fewer operations a step in each of their unrolled copies); the
   * forward keeps LLVM's fusing. */
  without = chunked_ptx("examples/s4d.frnn", "sm_90", "FRNN_CHAINS=0");
  a = fp_ops(with, "frnn_bwd"), b = fp_ops(without, "frnn_bwd");
  ck_assert_msg(b - a >= 4 * 16, "S4D's backward: %d floating-point operations with chains, %d without", a, b);
  ck_assert_int_eq(fp_ops(with, "frnn_fwd"), fp_ops(without, "frnn_fwd"));
  free(with);
  free(without);
}
END_TEST

/* frnn_codegen_options.broadcast (frnn-dump-ptx --bcast): S4D's kernels as
 * a call with time-invariant parameters builds them sum those gradients
 * over t in registers (far fewer global stores in the backward); a bad
 * list fails with a message naming what is wrong. */
START_TEST(broadcast_option) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/s4d.frnn"), &s) == FRNN_OK);
  frnn_codegen_options o = {.M = 128, .N = 32, .dtype = {kDLBfloat, 16, 1}, .kernel = "frnn_bwd"};
  char *plain = NULL, *fixed = NULL;
  ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &plain) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  o.broadcast = "dA_re:BT,dA_im:BT,C_re:BT,C_im:BT,D:BT";
  ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &fixed) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  int a = count(plain, "st.global"), b = count(fixed, "st.global");
  ck_assert_msg(b < a / 2, "global stores: %d without broadcast inputs, %d with", a, b);
  frnn_free(plain);
  frnn_free(fixed);
  static const struct { const char *spec, *says; } bad[] = {
      {"dA_re:BX", "each once"}, {"foo:B", "no input 'foo'"}, {"dA_re", "expected NAME:DIMS"},
      {"dA_re:", "no dimensions"}, {"dA_re:BB", "each once"}, {":BT", "expected NAME:DIMS"}};
  for (int i = 0; i < 6; i++) {
    char *out = NULL;
    o.broadcast = bad[i].spec;
    ck_assert(frnn_compile_ptx(ctx, s, &o, &out) != FRNN_OK);
    ck_assert_ptr_null(out);
    ck_assert_msg(strstr(frnn_ctx_error(ctx), bad[i].says), "'%s': %s", bad[i].spec, frnn_ctx_error(ctx));
  }
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* A carried next state the adjoint uses once, in a sum of its own class
 * (log(s' + 2)'s derivative divides by s' + 2): it is given, not a chain's
 * term, or the chain would reach for operands the walk never computed.
 * Compiles, and with the carry has fewer operations than without. */
START_TEST(carried_state_in_a_sum) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s = parse(ctx, "step logsum(a[M,N], u[M,N]; s[M,N]) -> y[M,1]\n"
                            "  s = a * s + u\n"
                            "  y = sum(log(s + 2))\n");
  frnn_codegen_options o = {.M = 16, .N = 16, .dtype = {kDLFloat, 32, 1}, .kernel = "frnn_bwd"};
  char *with = NULL, *without = NULL;
  ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &with) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  setenv("FRNN_BWD_CARRY", "0", 1);
  ck_assert_msg(frnn_compile_ptx(ctx, s, &o, &without) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  unsetenv("FRNN_BWD_CARRY");
  ck_assert_int_lt(fp_ops(with, "frnn_bwd"), fp_ops(without, "frnn_bwd"));
  frnn_free(with);
  frnn_free(without);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* A backward block of 16 warps or more is built for one block an SM
 * (.minnctapersm 1: ptxas otherwise sizes it for two, Mamba's at 64
 * registers); smaller ones of one role keep ptxas's choice. */
START_TEST(big_blocks_one_an_sm) {
  char *mamba = chunked_ptx("examples/mamba.frnn", "sm_90", "FRNN_BWD_PICK=0");
  char *rwkv4 = chunked_ptx("examples/rwkv4.frnn", "sm_90", "FRNN_BWD_ROLES=0");
  const char *end, *k = kernel_text(mamba, "frnn_bwd", &end);
  char *text = strndup(k, end ? (size_t)(end - k) : strlen(k));
  ck_assert_int_eq(count(text, ".maxntid 512,"), 1);
  ck_assert_int_eq(count(text, ".minnctapersm 1"), 1);
  free(text);
  ck_assert_int_eq(count(rwkv4, ".minnctapersm"), 0);
  free(mamba);
  free(rwkv4);
}
END_TEST

/* The backward in two roles (plan.c plan_roles, lower_llvm.c
 * role_periods) where rows need nothing from each other (HGRN, RWKV-4), not
 * where they exchange sums (Mamba), sum over M (mLSTM) or keep two levels
 * (S4D): twice the warps, built for 2 blocks an SM, the two sets of a
 * chunk's states (and its end state) in shared memory, none in the
 * workspace, chunks no longer than the sets allow; in the PTX one barrier
 * (a period's end) and the states through shared memory.  FRNN_BWD_ROLES=0:
 * one role, as before. */
START_TEST(two_roles) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  static const struct { const char *file; int64_t N; bool roles; } want[] = {
      {"examples/hgrn.frnn", 1, true},    {"examples/rwkv4.frnn", 1, true},  {"examples/mamba.frnn", 16, false},
      {"examples/mlstm.frnn", 16, false}, {"examples/s4d.frnn", 32, false}};
  for (int k = 0; k < 5; k++) {
    frnn_step *s;
    ck_assert(frnn_step_load(ctx, test_source_path(want[k].file), &s) == FRNN_OK);
    plan p, one;
    ck_assert(plan_make(ctx, s, NULL, 128, want[k].N, &t, &p) == FRNN_OK);
    ck_assert_msg(p.bwd_roles == want[k].roles, "%s", want[k].file);
    setenv("FRNN_BWD_ROLES", "0", 1);
    ck_assert(plan_make(ctx, s, NULL, 128, want[k].N, &t, &one) == FRNN_OK);
    unsetenv("FRNN_BWD_ROLES");
    ck_assert(!one.bwd_roles);
    if (!want[k].roles) {
      frnn_step_destroy(s);
      continue;
    }
    ck_assert_int_eq(plan_bwd_threads(&p), 2 * plan_bwd_threads(&one));
    /* 128 registers a row (rows side by side: a thread at most 255) */
    int regs = p.bwd.rows_adjacent && 128 * p.bwd.rpt > 255 ? 255 : 128 * p.bwd.rpt;
    ck_assert_int_eq(p.bwd_min_blocks, 65536 / (regs * plan_bwd_threads(&p)));
    uint8_t bc[4] = {0, 0, 0, 0};
    size_t state_bytes = (size_t)p.bwd_regs * p.bwd.warps * 32 * 4;
    static const int64_t T[] = {1024, 16384, 5, 1};
    for (int i = 0; i < 4; i++) {
      frnn_sizes sz = {.B = 2, .T = T[i], .H = 3, .M = 128, .N = want[k].N};
      ws_layout w, w1;
      plan_workspace(&p, sz, bc, 1, &w);
      plan_workspace(&one, sz, bc, 1, &w1);
      ck_assert_int_le(w.C, p.bwd_roles_c);
      ck_assert_int_le(w.C, w1.C);
      ck_assert_int_eq(w.n_ckpt, (T[i] + w.C - 1) / w.C);
      ck_assert_uint_eq(w.bwd_shared, 2 * (size_t)(w.C + 1) * state_bytes);
      ck_assert_uint_le(2 * (w.bwd_shared + 1024), 228 * 1024); /* two blocks an SM */
      ck_assert_uint_eq(w1.bwd_shared, 0);
      if (T[i] == 1024) ck_assert_int_eq(w.C, w1.C); /* 32: the sets fit */
    }
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
  char *two = chunked_ptx("examples/rwkv4.frnn", "sm_90", NULL);
  char *one = chunked_ptx("examples/rwkv4.frnn", "sm_90", "FRNN_BWD_ROLES=0");
  const char *end, *k = kernel_text(two, "frnn_bwd", &end);
  char *text = strndup(k, end ? (size_t)(end - k) : strlen(k));
  ck_assert_int_eq(count(text, ".maxntid 256,"), 1);
  ck_assert_int_eq(count(text, ".minnctapersm 2"), 1);
  ck_assert_int_eq(count(text, "bar.sync"), 1);
  ck_assert_int_gt(count(text, "st.shared.f32"), 0);
  ck_assert_int_gt(count(text, "ld.shared.f32"), 0);
  free(text);
  k = kernel_text(one, "frnn_bwd", &end);
  text = strndup(k, end ? (size_t)(end - k) : strlen(k));
  ck_assert_int_eq(count(text, ".maxntid 128,"), 1);
  ck_assert_int_eq(count(text, "bar.sync"), 0);
  ck_assert_int_eq(count(text, ".shared"), 0);
  free(text);
  free(two);
  free(one);
}
END_TEST

/* Recomputed states in shared memory (plan.c shared_slots, plan_workspace):
 * the two levels always fit the slots, the workspace holds no scratch, and
 * the plan picks it only for blocks of 16 warps or more, where the
 * workspace at 4096 steps is no larger (RWKV-4 at 128 x 128: yes; at
 * M = 128, N = 1, one-warp blocks: no). */
/* The backwards pipeline.c tries where the plan's spills: each a shape of
 * its own, within the plan's workspace and chunks; clusters only for steps
 * whose sums over M may be deferred, and only on sm_90. */
static int alternatives(frnn_ctx *ctx, const char *file, const char *arch, plan *p, plan *alts) {
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path(file), &s) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, arch, &t) == FRNN_OK);
  frnn_sizes sz = {.B = 8, .T = 1024, .H = 32, .M = 128, .N = 128};
  ck_assert(plan_make(ctx, s, NULL, sz.M, sz.N, &t, p) == FRNN_OK);
  int n = plan_backward_alternatives(ctx, s, &t, p, sz, alts, 8);
  ws_layout own, other;
  plan_workspace(p, sz, NULL, 1, &own);
  for (int i = 0; i < n; i++) {
    plan_workspace(&alts[i], sz, NULL, 1, &other);
    ck_assert_int_eq(other.C, own.C);
    ck_assert_int_le(other.total, own.total);
    ck_assert(memcmp(&alts[i].fwd, &p->fwd, sizeof p->fwd) == 0); /* the forward is the plan's */
    for (int k = 0; k <= i; k++) {
      const kernel_shape *a = &alts[i].bwd, *b = k < i ? &alts[k].bwd : &p->bwd;
      ck_assert_msg(a->lpr != b->lpr || a->rpt != b->rpt || a->warps != b->warps || a->row_blocks != b->row_blocks,
                    "%s: alternative %d repeats a shape", file, i);
    }
  }
  frnn_step_destroy(s);
  return n;
}

START_TEST(backward_alternatives) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  plan p, alts[8];
  int n = alternatives(ctx, "examples/mamba.frnn", "sm_90", &p, alts);
  bool cluster4 = false, fewer_warps = false;
  for (int i = 0; i < n; i++) {
    cluster4 |= alts[i].bwd.row_blocks == 4;
    fewer_warps |= alts[i].bwd.row_blocks == 1 && alts[i].bwd.warps <= 8;
  }
  ck_assert_msg(cluster4 && fewer_warps, "mamba: %d alternatives, no cluster of 4 or no 8-warp block", n);
  n = alternatives(ctx, "examples/mamba.frnn", "sm_80", &p, alts);
  for (int i = 0; i < n; i++) ck_assert_int_eq(alts[i].bwd.row_blocks, 1);
  n = alternatives(ctx, "examples/mlstm.frnn", "sm_90", &p, alts); /* sums over M every step */
  ck_assert_int_ge(n, 1);
  for (int i = 0; i < n; i++) ck_assert_int_eq(alts[i].bwd.row_blocks, 1);
  setenv("FRNN_BWD_PICK", "0", 1);
  ck_assert_int_eq(alternatives(ctx, "examples/mamba.frnn", "sm_90", &p, alts), 0);
  unsetenv("FRNN_BWD_PICK");
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(workspace_shared_scratch) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/delta_rule.frnn"), &s) == FRNN_OK);
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  plan big, small;
  ck_assert(plan_make(ctx, s, NULL, 128, 128, &t, &big) == FRNN_OK);
  ck_assert_int_eq(big.bwd_shared_slots, 0); /* 3 slots: 4-step chunks cost more memory */
  /* Small blocks share an SM: the plan keeps their scratch in the workspace
   * (16 x 16: a few warps); forced, it fits the slots. */
  ck_assert(plan_make(ctx, s, NULL, 16, 16, &t, &small) == FRNN_OK);
  ck_assert_int_lt(small.bwd.warps, 16);
  ck_assert_int_eq(small.bwd_shared_slots, 0);
  setenv("FRNN_BWD_SMEM", "1", 1);
  ck_assert(plan_make(ctx, s, NULL, 16, 16, &t, &small) == FRNN_OK);
  unsetenv("FRNN_BWD_SMEM");
  int S = small.bwd_shared_slots;
  ck_assert_int_ge(S, 3);
  uint8_t bc[4] = {0, 0, 0, 0};
  size_t state_bytes = (size_t)small.bwd.warps * 32 * (size_t)small.bwd_regs * 4;
  int64_t lengths[] = {1, 2, 5, 64, 1000, 100000};
  for (int i = 0; i < 6; i++) {
    frnn_sizes sz = {.B = 2, .T = lengths[i], .H = 3, .M = 16, .N = 16};
    ws_layout w;
    plan_workspace(&small, sz, bc, 1, &w);
    int64_t used = w.C2 + (w.C + w.C2 - 1) / w.C2 - 1;
    ck_assert_msg(used <= S && w.C >= 1 && w.C <= sz.T && w.C2 >= 1 && w.C2 <= w.C,
                  "T = %lld: C = %lld, C2 = %lld use %lld of %d slots", (long long)sz.T,
                  (long long)w.C, (long long)w.C2, (long long)used, S);
    ck_assert_int_eq(w.n_ckpt, (sz.T + w.C - 1) / w.C);
    ck_assert_uint_eq(w.total, w.scratch); /* no scratch, no partials (nothing broadcast) */
    ck_assert_uint_eq(w.bwd_shared, (size_t)small.xchg_shared_floats * 4 + (size_t)used * state_bytes);
    ck_assert_uint_le(w.bwd_shared, (size_t)t.max_shared_bytes_optin);
    if (i == 5) { /* fewest pieces and chunks: no spacing that fits has less 1/C2 + 1/C */
      int64_t q = small.prefetch == PREFETCH_REGS && small.pf_depth_bwd > 1 ? small.pf_depth_bwd : 1;
      ck_assert_int_eq(w.C2 % q, 0);
      for (int64_t c2 = q; c2 <= S; c2 += q) {
        int64_t c = c2 * (S - c2 + 1);
        ck_assert_msg(1.0 / c2 + 1.0 / c >= 1.0 / w.C2 + 1.0 / w.C, "C2 = %lld, C = %lld beat %lld, %lld",
                      (long long)c2, (long long)c, (long long)w.C2, (long long)w.C);
      }
    }
  }
  /* Where the scratch stays in the workspace, the exchange gets the shared
   * memory as if shared scratch had never been considered (GLA: its
   * partial sums batched 2 steps a barrier, not 1). */
  frnn_step *gla;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/gla.frnn"), &gla) == FRNN_OK);
  plan autop, off;
  ck_assert(plan_make(ctx, gla, NULL, 128, 128, &t, &autop) == FRNN_OK);
  setenv("FRNN_BWD_SMEM", "0", 1);
  ck_assert(plan_make(ctx, gla, NULL, 128, 128, &t, &off) == FRNN_OK);
  unsetenv("FRNN_BWD_SMEM");
  ck_assert_int_eq(autop.bwd_shared_slots, 0);
  ck_assert_int_eq(autop.xchg_steps, off.xchg_steps);
  ck_assert_int_eq(autop.xchg_shared_floats, off.xchg_shared_floats);
  ck_assert_int_ge(autop.xchg_steps, 2);
  frnn_step_destroy(gla);
  frnn_step *rwkv4;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/rwkv4.frnn"), &rwkv4) == FRNN_OK);
  /* A step without N (RWKV-4) is planned as N = 1 whatever N the call
   * gives (lanes of a row would hold copies): a thread a row, the next
   * steps' loads queued in registers, and no shared scratch (its blocks
   * have 4 warps, where shared memory would cost resident blocks). */
  plan wide, narrow;
  ck_assert(plan_make(ctx, rwkv4, NULL, 128, 128, &t, &wide) == FRNN_OK);
  ck_assert(plan_make(ctx, rwkv4, NULL, 128, 1, &t, &narrow) == FRNN_OK);
  ck_assert_int_eq(wide.bwd.lpr, 1);
  ck_assert_int_eq(wide.bwd.rpt, 1);
  ck_assert_int_eq(wide.fwd.rpt, 1);
  ck_assert_int_eq(wide.fwd.warps, narrow.fwd.warps);
  ck_assert_int_eq(wide.bwd.warps, narrow.bwd.warps);
  ck_assert_int_eq(wide.prefetch, PREFETCH_REGS);
  ck_assert_int_gt(wide.pf_depth_fwd, 1);
  ck_assert_int_eq(wide.bwd_shared_slots, 0);
  ck_assert_int_eq(narrow.bwd_shared_slots, 0);
  frnn_step_destroy(rwkv4);
  /* Forced on where 3 states fit: 3-step chunks in one piece (1/C2 + 1/C
   * least: 2/3, against 3/4 for 4-step chunks of 2). */
  setenv("FRNN_BWD_SMEM", "1", 1);
  plan forced;
  ck_assert(plan_make(ctx, s, NULL, 128, 128, &t, &forced) == FRNN_OK);
  unsetenv("FRNN_BWD_SMEM");
  ck_assert_int_eq(forced.bwd_shared_slots, 3);
  ws_layout w;
  plan_workspace(&forced, (frnn_sizes){.B = 1, .T = 1024, .H = 1, .M = 128, .N = 128}, bc, 1, &w);
  ck_assert_int_eq(w.C, 3);
  ck_assert_int_eq(w.C2, 3);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(unknown_kernel_and_arch_are_errors) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/gla.frnn"), &s) == FRNN_OK);
  char *out = NULL;
  frnn_codegen_options o = {.M = 8, .N = 8, .dtype = {kDLFloat, 32, 1}, .kernel = "nope"};
  ck_assert_int_eq(frnn_compile_ptx(ctx, s, &o, &out), FRNN_E_ARG);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "no kernel 'nope'"));
  o.kernel = NULL;
  o.arch = "sm_100";
  ck_assert_int_eq(frnn_compile_ptx(ctx, s, &o, &out), FRNN_E_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "sm_100"));
  o.arch = NULL;
  o.dtype = (DLDataType){kDLInt, 32, 1};
  ck_assert_int_eq(frnn_compile_ptx(ctx, s, &o, &out), FRNN_E_ARG);
  o.dtype = (DLDataType){kDLFloat, 32, 1};
  o.after_pass = "adjoint";
  ck_assert_int_eq(frnn_compile_ptx(ctx, s, &o, &out), FRNN_OK);
  ck_assert_ptr_nonnull(strstr(out, "grad_k"));
  frnn_free(out);
  /* One kernel alone. */
  o.after_pass = NULL;
  o.kernel = "frnn_bwd";
  ck_assert_int_eq(frnn_compile_ptx(ctx, s, &o, &out), FRNN_OK);
  ck_assert_ptr_null(strstr(out, ".entry frnn_fwd"));
  ck_assert_ptr_nonnull(strstr(out, ".entry frnn_bwd"));
  frnn_free(out);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Shard `shard` of `shards`: every test and loop iteration in turn. */
static int run_shard(int shard, int shards) {
  const struct {
    const TTest *test;
    int n;
  } all[] = {
      {every_model_every_size, n_files},
      {chunked_variants_assemble, (int)(sizeof CK_KNOBS / sizeof *CK_KNOBS)},
      {unknown_kernel_and_arch_are_errors, 1},
      {chunked_products_on_tensor_cores, 1},
      {chunked_loads_in_flight_together, 1},
      {chunked_big_products_convert_less, 1},
      {chunked_copies_16_bytes, 1},
      {chunked_products_in_bf16_parts, 1},
      {chunked_sum_forms_and_sites, 1},
      {deferred_sums_over_m, 1},
      {tuning_knobs_assemble, (int)(sizeof KNOBS / sizeof *KNOBS)},
      {workspace_levels, 1},
      {small_rows_queue, 1},
      {predicated_stores, 1},
      {full_range_division, 1},
      {rows_apart_backward, 1},
      {walk_carry, 1},
      {big_blocks_one_an_sm, 1},
      {broadcast_option, 1},
      {carried_state_in_a_sum, 1},
      {workspace_shared_scratch, 1},
      {backward_alternatives, 1},
      {two_roles, 1},
      {present_output_gradient, 1},
      {adjacent_rows, 1},
  };
  char name[64];
  snprintf(name, sizeof name, "ptx_models %d/%d", shard + 1, shards);
  Suite *su = suite_create(name);
  TCase *tc = tcase_create("ptx");
  tcase_set_timeout(tc, 900);
  int item = 0;
  for (size_t k = 0; k < sizeof all / sizeof *all; k++)
    for (int i = 0; i < all[k].n; i++)
      if (item++ % shards == shard) tcase_add_loop_test(tc, all[k].test, i, i + 1);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed;
}

/* The suite compiles every example many times over (about 40 minutes on
 * one core of the CI machine): its tests run in FRNN_TEST_SHARDS processes
 * at once (default: the cores online, at most 4), each a share of them. */
int main(void) {
  list_examples();
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const char *env = getenv("FRNN_TEST_SHARDS");
  int shards = env && atoi(env) >= 1 ? atoi(env) : cores < 1 ? 1 : cores > 4 ? 4 : (int)cores;
  if (shards > 16) shards = 16;
  int failed = 0;
  if (shards == 1) {
    failed = run_shard(0, 1);
  } else {
    pid_t pids[16];
    for (int k = 0; k < shards; k++) {
      fflush(stdout);
      pids[k] = fork();
      if (pids[k] == 0) _exit(run_shard(k, shards) ? 1 : 0);
      if (pids[k] < 0) {
        perror("fork");
        failed++;
      }
    }
    for (int k = 0; k < shards; k++) {
      int status = 0;
      if (pids[k] > 0 && (waitpid(pids[k], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)) failed++;
    }
  }
  return failed || n_files < 15 ? 1 : 0;
}
