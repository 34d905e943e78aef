/* test_affine.c - the affine analysis (affine.c, `frnn-dump-ptx --after
 * affine`): the verdict on every example against the classification worked
 * out by hand in docs/design-chunked.md, the transition written out as
 * S = S * factor + update where it is diagonal, and small steps built to land
 * in each branch (factors along rows and columns at once, a state inside a
 * nonlinear op, a nonlinear output, a state overwritten). */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char CHUNKED[] = "a chunked form exists", RECURRENT[] = "recurrent only",
                  NOT_AFFINE[] = "not affine";

/* The analysis of step s (which it destroys) through the public entry point
 * must hold `verdict` and, unless NULL, `also`. */
static void expect(frnn_ctx *ctx, frnn_step *s, const char *verdict, const char *also) {
  frnn_codegen_options opt = {.M = 8, .N = 8, .dtype = {kDLFloat, 32, 1}, .after_pass = "affine"};
  char *text = NULL;
  ck_assert_msg(frnn_compile_ptx(ctx, s, &opt, &text) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  const char *v = strstr(text, "verdict: ");
  ck_assert_msg(v && strstr(v, verdict), "expected '%s' in:\n%s", verdict, text);
  ck_assert_msg(!also || strstr(text, also), "expected '%s' in:\n%s", also, text);
  free(text);
  frnn_step_destroy(s);
}

static const struct {
  const char *file, *verdict, *line;
} examples[] = {
    {"delta_rule", CHUNKED, "factors scalar, plus low rank through sums over N (factors row)"},
    {"gated_delta_rule", CHUNKED, "plus low rank"},
    {"rwkv7", CHUNKED, "factors row, plus low rank through sums over N (factors row)"},
    {"rwkv6", CHUNKED, "factors row"},
    {"gla", CHUNKED, "  S = S * exp(g) + (v * k)\n"},
    {"retention", CHUNKED, "  S = S * gamma + (v * k)\n"},
    {"mamba2", CHUNKED, "factors scalar"},
    {"gsa_keys", CHUNKED, "factors column"},
    {"gsa_values", CHUNKED, "factors row"},
    {"hgrn", CHUNKED, "  s = s * exp(g) + x\n"},
    {"mamba", RECURRENT, "factors matrix"},
    {"longhorn", RECURRENT, "factors scalar and matrix"},
    {"s4d", RECURRENT, "factors matrix"},
    {"mlstm", NOT_AFFINE, "state m [scalar]: nonlinear"},
    {"rwkv4", NOT_AFFINE, "nonlinear"},
};

START_TEST(every_example) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  char rel[128];
  snprintf(rel, sizeof rel, "examples/%s.frnn", examples[_i].file);
  frnn_step *s;
  ck_assert_msg(frnn_step_load(ctx, test_source_path(rel), &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  expect(ctx, s, examples[_i].verdict, examples[_i].line);
  frnn_ctx_destroy(ctx);
}
END_TEST

static const struct {
  const char *body, *verdict, *line;
} built[] = {
    /* two paths, one scaled along rows and one along columns: no single factor */
    {"  S = S * d + S * e + v * k\n  y = sum(S * k)\n", RECURRENT, "factors column and row"},
    /* the same factors on one path: joined into a matrix factor (a column
     * times a row would separate; the pass is conservative there) */
    {"  S = S * e * d + v * k\n  y = sum(S * k)\n", RECURRENT, "factors matrix"},
    /* column factors alone: the values' side of the products carries them */
    {"  S = S * e + v * k\n  y = sum(S * k)\n", CHUNKED, "factors column"},
    /* a state inside a nonlinear op */
    {"  S = S * exp(sum(S * k)) + v * k\n  y = sum(S * k)\n", NOT_AFFINE, "nonlinear in the states"},
    /* linear state, nonlinear output */
    {"  S = S * d + v * k\n  y = exp(sum(S * k))\n", NOT_AFFINE, "output y: nonlinear"},
    /* a state divided by another value of the states */
    {"  S = S / sum(S * k) + v * k\n  y = sum(S * k)\n", NOT_AFFINE, NULL},
    /* the transition written out: a negated factor, a divided one */
    {"  S = v * k - S * d\n  y = sum(S * k)\n", CHUNKED, "  S = S * (-d) + (v * k)\n"},
    {"  S = S / e + v * k\n  y = sum(S * k)\n", CHUNKED, "  S = S * (1 / e) + (v * k)\n"},
    /* overwritten every step */
    {"  S = v * k\n  y = sum(S * k)\n", CHUNKED, "independent of the states"},
    /* a low-rank part with column factors before the sum */
    {"  S = S - sum(S * e * k) * k + v * k\n  y = sum(S * k)\n", RECURRENT, "low rank"},
};

START_TEST(built_steps) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  char text[512];
  snprintf(text, sizeof text, "step t(d[1,N], e[M,1], v[M,1], k[1,N]; S[M,N]) -> y[M,1]\n%s", built[_i].body);
  frnn_step *s;
  ck_assert_msg(frnn_step_parse(ctx, "t.frnn", text, &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  expect(ctx, s, built[_i].verdict, built[_i].line);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(unknown_pass_names_affine) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/gla.frnn"), &s) == FRNN_OK);
  frnn_codegen_options opt = {.M = 8, .N = 8, .dtype = {kDLFloat, 32, 1}, .after_pass = "afine"};
  char *out = NULL;
  ck_assert(frnn_compile_ptx(ctx, s, &opt, &out) == FRNN_E_ARG);
  ck_assert_ptr_null(out);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "adjoint, affine"));
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *su = suite_create("affine");
  TCase *tc = tcase_create("verdicts");
  tcase_add_loop_test(tc, every_example, 0, sizeof examples / sizeof *examples);
  tcase_add_loop_test(tc, built_steps, 0, sizeof built / sizeof *built);
  tcase_add_test(tc, unknown_pass_names_affine);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
