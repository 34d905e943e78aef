/* test_codegen.c - the code-generation toolkit (lib/target.c, lib/codegen.c)
 * without a GPU: kernels built with the cg_* helpers become PTX that ptxas
 * accepts, in approximate and accurate (libdevice) math; LLVM IR output;
 * bad arches, bad functions and a missing libdevice fail with messages.
 * ptxas is $FRNN_PTXAS or /usr/local/cuda/bin/ptxas; without it the ptxas
 * assertions are skipped with a note.  Leak check:
 *   CK_FORK=no valgrind --leak-check=full ./test_codegen */
#include "frnn_internal.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* This directory has no LLVM include path; the one LLVM call needed here
 * (reading back a folded constant) is declared by hand. */
double LLVMConstRealGetDouble(LLVMValueRef c, int *loses_info);

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* y[i] = s + p[0] * lane0 where v = tanh(exp(x[i])), s = the warp's sum of
 * v (butterfly), lane0 = v of lane 0, p = shared copy of s after a barrier.
 * x bf16 (read-only, noalias), y f32; 256 threads, 2 blocks/SM. */
static void build_demo(codegen *cg) {
  LLVMTypeRef pt[3] = {cg->t_gptr, cg->t_gptr, cg->t_i64};
  LLVMValueRef fn = cg_kernel(cg, "demo", pt, 3, 256, 2);
  cg_param_noalias(cg, fn, 0);
  cg_param_readonly(cg, fn, 0);
  cg_param_noalias(cg, fn, 1);
  LLVMValueRef x = cg_param(cg, 0), y = cg_param(cg, 1), n = cg_param(cg, 2);
  LLVMValueRef tid = cg_tid_x(cg);
  LLVMValueRef i = cg_zext64(cg, cg_add(cg, cg_mul(cg, cg_ctaid_x(cg), cg_ntid_x(cg)), tid));
  LLVMValueRef in = cg_ult(cg, i, n);
  LLVMValueRef xi = cg_load_elem(cg, x, cg_select(cg, in, i, cg_i64(cg, 0)), TD_BF16);
  LLVMValueRef v = cg_tanh(cg, cg_exp(cg, cg_select(cg, in, xi, cg_f32(cg, 0))));
  LLVMValueRef s = v;
  for (int m = 16; m; m >>= 1) s = cg_fadd(cg, s, cg_shfl_bfly_f32(cg, s, m, 32));
  LLVMValueRef lane0 = cg_shfl_idx_f32(cg, v, cg_i32(cg, 0), 32);
  LLVMValueRef sh = cg_shared_array(cg, "partial", cg->t_f32, 256);
  cg_store(cg, s, cg_gep(cg, cg->t_f32, sh, tid));
  cg_barrier(cg);
  LLVMValueRef p0 = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, sh, cg_i32(cg, 0)));
  LLVMValueRef out = cg_fadd(cg, s, cg_fmul(cg, p0, lane0));
  LLVMBasicBlockRef store = cg_block(cg, "store"), done = cg_block(cg, "done");
  cg_cond_br(cg, in, store, done);
  cg_at(cg, store);
  cg_store_elem(cg, y, i, TD_F32, out);
  cg_br(cg, done);
  cg_at(cg, done);
  cg_ret(cg);
}

/* Every other helper: c[i] (bf16) from a[i] (f16), b[i] (f32), d (f64). */
static void build_math(codegen *cg) {
  LLVMTypeRef pt[5] = {cg->t_gptr, cg->t_gptr, cg->t_gptr, cg->t_gptr, cg->t_i64};
  LLVMValueRef fn = cg_kernel(cg, "mathk", pt, 5, 128, 0);
  for (int k = 0; k < 4; k++) cg_param_noalias(cg, fn, k);
  LLVMValueRef idx = cg_add(cg, cg_mul(cg, cg_ctaid_y(cg), cg_nctaid_x(cg)), cg_ctaid_x(cg));
  idx = cg_add(cg, cg_mul(cg, idx, cg_ntid_x(cg)), cg_add(cg, cg_tid_x(cg), cg_ctaid_z(cg)));
  LLVMValueRef i = cg_zext64(cg, idx);
  LLVMBasicBlockRef body = cg_block(cg, "body"), done = cg_block(cg, "done");
  cg_cond_br(cg, cg_ult(cg, i, cg_param(cg, 4)), body, done);
  cg_at(cg, body);
  LLVMValueRef a = cg_load_elem(cg, cg_param(cg, 0), i, TD_F16);
  LLVMValueRef b = cg_load_elem(cg, cg_param(cg, 1), i, TD_F32);
  LLVMValueRef d = cg_load_elem(cg, cg_param(cg, 3), i, TD_F64);
  LLVMValueRef r = cg_fmax(cg, cg_log(cg, a), cg_sqrt(cg, b));
  r = cg_fadd(cg, r, cg_fmin(cg, cg_rsqrt(cg, b), cg_fabs(cg, a)));
  r = cg_fadd(cg, r, cg_pow(cg, cg_fabs(cg, a), b));
  r = cg_fsub(cg, r, cg_fdiv(cg, a, b));
  r = cg_fma(cg, r, cg_fneg(cg, d), cg_shfl_down_f32(cg, r, 1, 16));
  LLVMValueRef dyn = cg_dynamic_shared(cg, "dyn");
  cg_store(cg, r, cg_gep(cg, cg->t_f32, dyn, i));
  LLVMValueRef dyn0 = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, dyn, cg_i64(cg, 0)));
  cg_store_elem(cg, cg_param(cg, 2), i, TD_BF16, dyn0);
  cg_store_elem(cg, cg_param(cg, 3), i, TD_F64, r);
  cg_br(cg, done);
  cg_at(cg, done);
  cg_ret(cg);
}

/* Build kernels (bit 0: demo, bit 1: mathk) and finish; *ms = from
 * target_parse and cg_begin to the end of cg_dispose. */
static frnn_status compile_some(frnn_ctx *ctx, int which, const char *arch, bool accurate,
                                int emit_llvm, char **text, double *ms) {
  double t0 = now_ms();
  target t;
  frnn_status st = target_parse(ctx, arch, &t);
  if (st) return st;
  codegen cg;
  st = cg_begin(ctx, &t, "test", &cg);
  if (!st) {
    cg.accurate = accurate;
    if (which & 1) build_demo(&cg);
    if (which & 2) build_math(&cg);
    st = cg_finish(&cg, emit_llvm, text);
  }
  cg_dispose(&cg);
  if (ms) *ms = now_ms() - t0;
  return st;
}

static frnn_status compile(frnn_ctx *ctx, const char *arch, bool accurate, int emit_llvm,
                           char **text, double *ms) {
  return compile_some(ctx, 3, arch, accurate, emit_llvm, text, ms);
}

static bool have_ptxas(void) {
  const char *p = getenv("FRNN_PTXAS");
  return access(p && *p ? p : "/usr/local/cuda/bin/ptxas", X_OK) == 0;
}

static void expect_ptxas_ok(frnn_ctx *ctx, const char *ptx, const char *arch) {
  char *report = NULL;
  frnn_status st = cg_ptxas_check(ctx, ptx, arch, &report);
  if (st == FRNN_E_UNSUPPORTED) {
    printf("note: %s; ptxas assertions skipped\n", frnn_ctx_error(ctx));
    return;
  }
  ck_assert_msg(st == FRNN_OK, "ptxas: %s", frnn_ctx_error(ctx));
  ck_assert_ptr_nonnull(report);
  ck_assert_msg(strstr(report, "registers"), "no register report in: %s", report);
  printf("ptxas %s:\n%s", arch ? arch : "sm_90", report);
  free(report);
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

/* ------------------------------------------------------------------ tests */
START_TEST(targets) {
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  target t;
  ck_assert_int_eq(target_parse(ctx, NULL, &t), FRNN_OK);
  ck_assert_str_eq(t.arch, "sm_90");
  ck_assert_int_eq(t.sm, 90);
  ck_assert_int_eq(t.warp, 32);
  ck_assert_int_eq(t.max_shared_bytes_optin, 232448);
  ck_assert_int_eq(target_parse(ctx, "sm_90a", &t), FRNN_OK);
  ck_assert_int_eq(t.sm, 90);
  ck_assert_int_eq(target_parse(ctx, "sm_80", &t), FRNN_OK);
  ck_assert_int_eq(t.sm, 80);
  const char *bad[] = {"sm_100", "sm_75", "sm_9", "", "compute_90", "sm_90 "};
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    ck_assert_int_eq(target_parse(ctx, bad[k], &t), FRNN_E_UNSUPPORTED);
    ck_assert_msg(strstr(frnn_ctx_error(ctx), "sm_80, sm_86, sm_89, sm_90 and sm_90a"),
                  "message: %s", frnn_ctx_error(ctx));
  }
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "'sm_90 '"));
  /* A hand-filled target cannot bypass the whitelist. */
  target fake = t;
  strcpy(fake.arch, "sm_100");
  codegen cg;
  ck_assert_int_eq(cg_begin(ctx, &fake, "x", &cg), FRNN_E_UNSUPPORTED);
  cg_dispose(&cg);
  cg_dispose(&cg);
  char *text = (char *)1;
  ck_assert_int_eq(compile(ctx, "sm_100", false, 0, &text, NULL), FRNN_E_UNSUPPORTED);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(ptx_approx) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  char *ptx = NULL;
  double ms;
  ck_assert_msg(compile(ctx, NULL, false, 0, &ptx, &ms) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  if (getenv("FRNN_CG_DUMP")) fputs(ptx, stdout);
  printf("approximate math: begin..finish %.1f ms, %zu bytes of PTX\n", ms, strlen(ptx));
  const char *want[] = {".version 8.0", ".target sm_90", ".address_size 64",
                        ".visible .entry demo(", ".visible .entry mathk(", ".maxntid 256, 1, 1",
                        ".maxntid 128, 1, 1", ".minnctapersm 2", "tanh.approx.f32",
                        "ex2.approx.ftz.f32", "lg2.approx.f32", "rsqrt.approx.f32",
                        "sqrt.rn.f32", "div.rn.f32", "shfl.sync.bfly.b32", "shfl.sync.idx.b32",
                        "shfl.sync.down.b32", "bar.sync", ".shared .align 16 .b8 partial[1024]",
                        ".extern .shared .align 16 .b8 dyn[]", "cvt.f32.bf16",
                        "cvt.rn.bf16.f32", "cvt.f32.f16", "ld.global.nc", "fma.rn.f32"};
  for (size_t k = 0; k < sizeof want / sizeof *want; k++)
    ck_assert_msg(strstr(ptx, want[k]), "PTX lacks '%s'", want[k]);
  /* Full-warp mask, c = 0x1f for width 32 and 0x101f for width 16. */
  ck_assert_msg(strstr(ptx, "31, -1;"), "no width-32 shuffle c operand");
  ck_assert_msg(strstr(ptx, "4127, -1;"), "no width-16 shuffle c operand");
  ck_assert_int_eq(count(ptx, "shfl.sync.bfly.b32"), 5);
  ck_assert_msg(!strstr(ptx, ".extern .func"), "unresolved function in PTX");
  expect_ptxas_ok(ctx, ptx, NULL);
  free(ptx);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(ptx_accurate) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  char *ptx = NULL;
  double ms;
  ck_assert_msg(compile(ctx, NULL, true, 0, &ptx, &ms) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  printf("accurate math (libdevice): begin..finish %.1f ms, %zu bytes of PTX\n", ms, strlen(ptx));
  ck_assert_ptr_nonnull(strstr(ptx, ".visible .entry demo("));
  ck_assert_ptr_nonnull(strstr(ptx, ".maxntid 256, 1, 1"));
  ck_assert_ptr_null(strstr(ptx, "tanh.approx"));
  ck_assert_ptr_null(strstr(ptx, ".extern .func"));
  ck_assert_ptr_null(strstr(ptx, "__nvvm_reflect"));
  ck_assert_ptr_null(strstr(ptx, ".visible .func")); /* libdevice internalised */
  expect_ptxas_ok(ctx, ptx, NULL);
  free(ptx);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(every_arch) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  const char *arch[] = {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"};
  for (size_t k = 0; k < sizeof arch / sizeof *arch; k++) {
    char *ptx = NULL, want[32];
    ck_assert_msg(compile(ctx, arch[k], k % 2, 0, &ptx, NULL) == FRNN_OK, "%s",
                  frnn_ctx_error(ctx));
    snprintf(want, sizeof want, ".target %s\n", arch[k]);
    ck_assert_msg(strstr(ptx, want), "%s: no '%s'", arch[k], want);
    expect_ptxas_ok(ctx, ptx, arch[k]);
    free(ptx);
  }
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(llvm_ir) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  char *ir = NULL;
  ck_assert_msg(compile(ctx, NULL, true, 2, &ir, NULL) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_ptr_nonnull(strstr(ir, "target triple = \"nvptx64-nvidia-cuda\""));
  ck_assert_ptr_nonnull(strstr(ir, "define ptx_kernel void @demo("));
  ck_assert_ptr_nonnull(strstr(ir, "declare float @__nv_tanhf(float)"));
  ck_assert_ptr_nonnull(strstr(ir, "!\"maxntidx\", i32 256"));
  ck_assert_ptr_nonnull(strstr(ir, "!\"minctasm\", i32 2"));
  ck_assert_ptr_nonnull(strstr(ir, "fmul contract float"));
  ck_assert_ptr_nonnull(
      strstr(ir, "@partial = internal addrspace(3) global [256 x float] undef, align 16"));
  free(ir);
  ck_assert_msg(compile(ctx, NULL, true, 1, &ir, NULL) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_ptr_nonnull(strstr(ir, "define ptx_kernel void @demo("));
  ck_assert_ptr_null(strstr(ir, "@__nv_tanhf")); /* linked, inlined, dropped */
  ck_assert_ptr_nonnull(strstr(ir, "\"nvvm-reflect-ftz\", i32 0"));
  free(ir);
  ck_assert_msg(compile(ctx, NULL, false, 1, &ir, NULL) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_ptr_nonnull(strstr(ir, "tanh.approx.f32 $0, $1;"));
  ck_assert_ptr_nonnull(strstr(ir, "@llvm.nvvm.ex2.approx.ftz.f("));
  free(ir);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* ftz: kernels get the denormal attribute (.ftz forms), libdevice its flag. */
START_TEST(flush_to_zero) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  target t;
  target_parse(ctx, NULL, &t);
  for (int emit = 0; emit < 2; emit++) {
    codegen cg;
    ck_assert_int_eq(cg_begin(ctx, &t, "ftz", &cg), FRNN_OK);
    cg.ftz = true;
    cg.accurate = true;
    build_demo(&cg);
    build_math(&cg);
    char *text = NULL;
    ck_assert_msg(cg_finish(&cg, emit, &text) == FRNN_OK, "%s", frnn_ctx_error(ctx));
    if (emit) {
      ck_assert_ptr_nonnull(strstr(text, "\"nvvm-reflect-ftz\", i32 1"));
      ck_assert_ptr_nonnull(
          strstr(text, "\"denormal-fp-math-f32\"=\"preserve-sign,preserve-sign\""));
    } else {
      ck_assert_ptr_nonnull(strstr(text, "add.rn.ftz.f32"));
      ck_assert_ptr_nonnull(strstr(text, "rsqrt.approx.ftz.f32"));
      expect_ptxas_ok(ctx, text, NULL);
    }
    free(text);
    cg_dispose(&cg);
  }
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(deterministic) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  char *a = NULL, *b = NULL;
  ck_assert_int_eq(compile(ctx, NULL, true, 0, &a, NULL), FRNN_OK);
  ck_assert_int_eq(compile(ctx, NULL, true, 0, &b, NULL), FRNN_OK);
  ck_assert_str_eq(a, b);
  free(a);
  free(b);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(invalid_function) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  target t;
  target_parse(ctx, NULL, &t);
  codegen cg;
  ck_assert_int_eq(cg_begin(ctx, &t, "bad", &cg), FRNN_OK);
  build_demo(&cg);
  LLVMTypeRef pt[1] = {cg.t_gptr};
  cg_kernel(&cg, "broken", pt, 1, 64, 0);
  LLVMBasicBlockRef dangling = cg_block(&cg, "dangling");
  cg_br(&cg, dangling);
  cg_at(&cg, dangling);
  cg_store_elem(&cg, cg_param(&cg, 0), cg_i64(&cg, 0), TD_F32, cg_f32(&cg, 1)); /* no ret */
  char *text = (char *)1;
  ck_assert_int_eq(cg_finish(&cg, 0, &text), FRNN_E_LLVM);
  ck_assert_ptr_null(text);
  const char *msg = frnn_ctx_error(ctx);
  ck_assert_msg(strstr(msg, "verifier") && strstr(msg, "terminator"), "message: %s", msg);
  ck_assert_msg(strstr(msg, "define ptx_kernel void @broken("), "no IR of the bad function: %s",
                msg);
  ck_assert_msg(!strstr(msg, "@demo("), "IR of a good function in: %s", msg);
  ck_assert_int_eq(frnn_ctx_last_status(ctx), FRNN_E_LLVM);
  cg_dispose(&cg);
  cg_dispose(&cg);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(misuse_is_sticky) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  target t;
  target_parse(ctx, NULL, &t);
  codegen cg;
  char *text = NULL;
  /* Unknown intrinsic (.f32 where LLVM 19 spells .f): error, building goes on. */
  ck_assert_int_eq(cg_begin(ctx, &t, "m", &cg), FRNN_OK);
  cg_kernel(&cg, "k", NULL, 0, 32, 0);
  LLVMValueRef x = cg_intrinsic(&cg, "llvm.nvvm.ex2.approx.ftz.f32", NULL, 0, NULL, 0);
  ck_assert_ptr_nonnull(x);
  cg_exp(&cg, x);
  cg_ret(&cg);
  ck_assert_int_eq(cg_finish(&cg, 0, &text), FRNN_E_LLVM);
  ck_assert_msg(strstr(frnn_ctx_error(ctx), "unknown intrinsic llvm.nvvm.ex2.approx.ftz.f32"),
                "%s", frnn_ctx_error(ctx));
  cg_dispose(&cg);
  /* Wrong argument types, bad shuffle width, duplicate kernel name. */
  const char *why[] = {"wrong number or types", "not a power of two", "two kernels named"};
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(cg_begin(ctx, &t, "m", &cg), FRNN_OK);
    cg_kernel(&cg, "k", NULL, 0, 32, 0);
    if (k == 0) cg_fma(&cg, cg_f32(&cg, 1), cg_i32(&cg, 2), cg_f32(&cg, 3));
    if (k == 1) cg_shfl_bfly_f32(&cg, cg_f32(&cg, 1), 1, 12);
    if (k == 2) cg_kernel(&cg, "k", NULL, 0, 32, 0);
    cg_ret(&cg);
    ck_assert_int_eq(cg_finish(&cg, 0, &text), FRNN_E_LLVM);
    ck_assert_msg(strstr(frnn_ctx_error(ctx), why[k]), "%s", frnn_ctx_error(ctx));
    ck_assert_ptr_null(text);
    cg_dispose(&cg);
  }
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(missing_libdevice) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  setenv("FRNN_LIBDEVICE", "/nonexistent/libdevice.10.bc", 1);
  char *text = NULL;
  ck_assert_int_eq(compile(ctx, NULL, true, 0, &text, NULL), FRNN_E_IO);
  ck_assert_msg(strstr(frnn_ctx_error(ctx), "/nonexistent/libdevice.10.bc") &&
                    strstr(frnn_ctx_error(ctx), "FRNN_LIBDEVICE"),
                "%s", frnn_ctx_error(ctx));
  ck_assert_ptr_null(text);
  /* Not bitcode. */
  setenv("FRNN_LIBDEVICE", "/etc/hostname", 1);
  ck_assert_int_eq(compile(ctx, NULL, true, 0, &text, NULL), FRNN_E_LLVM);
  ck_assert_msg(strstr(frnn_ctx_error(ctx), "not LLVM bitcode"), "%s", frnn_ctx_error(ctx));
  unsetenv("FRNN_LIBDEVICE");
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(ptxas_rejects) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  char *report = NULL;
  if (!have_ptxas()) {
    printf("note: no ptxas; ptxas_rejects skipped\n");
  } else {
    const char *bad = ".version 8.0\n.target sm_90\n.address_size 64\n"
                      ".visible .entry k() { frobnicate.f32 %f1; }\n";
    ck_assert_int_eq(cg_ptxas_check(ctx, bad, "sm_90", &report), FRNN_E_LLVM);
    ck_assert_ptr_nonnull(report);
    ck_assert_msg(strstr(frnn_ctx_error(ctx), "rejected"), "%s", frnn_ctx_error(ctx));
    free(report);
  }
  setenv("FRNN_PTXAS", "/nonexistent/ptxas", 1);
  ck_assert_int_eq(cg_ptxas_check(ctx, "", "sm_90", &report), FRNN_E_UNSUPPORTED);
  ck_assert_ptr_null(report);
  unsetenv("FRNN_PTXAS");
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Constants fold in the builder: the fold is the helpers' semantics. */
START_TEST(minmax_semantics) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  target t;
  target_parse(ctx, NULL, &t);
  codegen cg;
  ck_assert_int_eq(cg_begin(ctx, &t, "mm", &cg), FRNN_OK);
  cg_kernel(&cg, "k", NULL, 0, 32, 0);
  const double v[] = {1, 2, -0.0, 0.0, NAN, -3, INFINITY};
  for (int i = 0; i < 7; i++)
    for (int j = 0; j < 7; j++)
      for (int mx = 0; mx < 2; mx++) {
        double a = v[i], b = v[j];
        LLVMValueRef r = mx ? cg_fmax(&cg, cg_f32(&cg, a), cg_f32(&cg, b))
                            : cg_fmin(&cg, cg_f32(&cg, a), cg_f32(&cg, b));
        double want = op_eval(mx ? FRNN_OP_MAX : FRNN_OP_MIN, a, b, 0);
        int loses = 0;
        double got = LLVMConstRealGetDouble(r, &loses);
        ck_assert_msg((isnan(got) && isnan(want)) ||
                          (got == want && signbit(got) == signbit(want)),
                      "%s(%g,%g) = %g, ops.c says %g", mx ? "max" : "min", a, b, got, want);
      }
  cg_dispose(&cg);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Separate codegens on separate threads (each its own LLVMContext). */
static void *compile_thread(void *arg) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  char *ptx = NULL;
  frnn_status st = compile(ctx, NULL, true, 0, &ptx, NULL);
  *(char **)arg = st ? NULL : ptx;
  frnn_ctx_destroy(ctx);
  return NULL;
}

START_TEST(threads) {
  char *out[4] = {0};
  pthread_t th[4];
  for (int k = 0; k < 4; k++) pthread_create(&th[k], NULL, compile_thread, &out[k]);
  for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
  for (int k = 0; k < 4; k++) {
    ck_assert_ptr_nonnull(out[k]);
    ck_assert_str_eq(out[k], out[0]);
  }
  for (int k = 0; k < 4; k++) free(out[k]);
}
END_TEST

START_TEST(timing) {
  frnn_ctx *ctx;
  frnn_ctx_create(&ctx);
  /* demo alone in approximate math needs no libdevice; mathk always does
   * (pow).  emit 2: IR as built (no passes), the cost of building alone.
   * The first libdevice compile of a process (here: of this forked test)
   * also trims libdevice once. */
  static const struct { int which, acc, emit; const char *what; } runs[] = {
      {1, 0, 2, "demo, build + verify only"},  {1, 0, 0, "demo, approximate (no libdevice)"},
      {1, 1, 0, "demo, accurate (libdevice)"}, {3, 0, 0, "demo+mathk, approximate"},
      {3, 1, 0, "demo+mathk, accurate"},
  };
  for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
    double best = 1e30, total = 0, first = 0;
    const int reps = 5;
    for (int r = 0; r < reps; r++) {
      char *ptx = NULL;
      double ms;
      ck_assert_int_eq(compile_some(ctx, runs[k].which, NULL, runs[k].acc, runs[k].emit, &ptx, &ms),
                       FRNN_OK);
      free(ptx);
      best = ms < best ? ms : best;
      total += ms;
      if (r == 0) first = ms;
    }
    printf("timing: %-34s cg_begin..cg_dispose best %6.1f ms, mean %6.1f ms, first %6.1f ms "
           "(%d runs)\n",
           runs[k].what, best, total / reps, first, reps);
  }
  frnn_ctx_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("codegen");
  TCase *tc = tcase_create("codegen");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, targets);
  tcase_add_test(tc, ptx_approx);
  tcase_add_test(tc, ptx_accurate);
  tcase_add_test(tc, every_arch);
  tcase_add_test(tc, llvm_ir);
  tcase_add_test(tc, flush_to_zero);
  tcase_add_test(tc, deterministic);
  tcase_add_test(tc, invalid_function);
  tcase_add_test(tc, misuse_is_sticky);
  tcase_add_test(tc, missing_libdevice);
  tcase_add_test(tc, ptxas_rejects);
  tcase_add_test(tc, minmax_semantics);
  tcase_add_test(tc, threads);
  tcase_add_test(tc, timing);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
