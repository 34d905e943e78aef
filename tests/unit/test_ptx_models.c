/* test_ptx_models.c - without a GPU: for every example model, at several
 * state sizes (powers of two and not, M = N = 1 included) and dtypes, every
 * kernel of its plan is lowered, its LLVM IR verifies (cg_finish), and ptxas
 * -arch=sm_90 accepts the PTX.  Prints ptxas's register and spill report per
 * kernel so that a regression in register pressure shows in the log. */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char files[64][256];
static int n_files;

static void list_examples(void) {
  DIR *d = opendir(test_source_path("examples"));
  if (!d) return; /* main fails the run: fewer than 15 examples */
  struct dirent *e;
  while ((e = readdir(d)) && n_files < 64) {
    size_t len = strlen(e->d_name);
    if (len > 5 && strcmp(e->d_name + len - 5, ".frnn") == 0)
      snprintf(files[n_files++], sizeof files[0], "examples/%s", e->d_name);
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
    ck_assert(strstr(ptx, ".entry frnn_fwd") && strstr(ptx, ".entry frnn_bwd"));
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
  }
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

int main(void) {
  list_examples();
  Suite *su = suite_create("ptx_models");
  TCase *tc = tcase_create("ptx");
  tcase_set_timeout(tc, 900);
  tcase_add_loop_test(tc, every_model_every_size, 0, n_files);
  tcase_add_test(tc, unknown_kernel_and_arch_are_errors);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed || n_files < 15 ? 1 : 0;
}
