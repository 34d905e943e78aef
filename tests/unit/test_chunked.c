/* test_chunked.c - the chunked form (chunked.c, `frnn-dump-ptx --after
 * chunk`): on every example of the diagonal class, the float64 forward by
 * chunks equals the reference executor's step-by-step forward (outputs and
 * final state) for chunk lengths that divide T and that do not; steps built
 * to reach each refusal say why; the examples outside the class are refused;
 * the chunked backward on term values equals finite differences. */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static frnn_step *parse(frnn_ctx *ctx, const char *text) {
  frnn_step *s = NULL;
  ck_assert_msg(frnn_step_parse(ctx, "t.frnn", text, &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  return s;
}

/* Chunked forward vs the reference on random inputs (decays in (0.5, 1),
 * the rest in (-1, 1); the low-rank terms' beta in (0, 0.4), a and b in
 * (-0.3, 0.3), so the state stays bounded): relative error of every output
 * and the final state below 1e-12, for chunks of 1, 4, 16 and 64 steps at
 * T = 37.  Then the backward to every input and the initial state. */
static void check_against_reference(frnn_ctx *ctx, const frnn_step *s) {
  chunk_form cf;
  ck_assert_msg(chunk_form_of(ctx, s, &cf) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  rng r = test_rng("test_chunked");
  frnn_sizes sz = {.B = 2, .T = 37, .H = 2, .M = 5, .N = 7};
  int n_in = frnn_step_port_count(s, FRNN_PORT_INPUT), n_out = frnn_step_port_count(s, FRNN_PORT_OUTPUT);
  ttensor in[FRNN_MAX_PORTS], st0, st1, ref_out[FRNN_MAX_PORTS], ch_out[FRNN_MAX_PORTS], ch_st1;
  for (int i = 0; i < n_in; i++) {
    int c = frnn_step_port_class(s, FRNN_PORT_INPUT, i);
    int64_t shape[5] = {sz.B, sz.T, sz.H, c & FRNN_COL ? sz.M : 1, c & FRNN_ROW ? sz.N : 1};
    /* inputs whose names say decay get values that keep the state bounded */
    const char *name = frnn_step_port_name(s, FRNN_PORT_INPUT, i);
    bool gate = !strcmp(name, "gamma");
    bool log_gate = !strcmp(name, "g") || !strcmp(name, "w") || !strcmp(name, "A");
    double lo = gate ? 0.5 : log_gate ? -0.7 : -1, hi = gate ? 1.0 : log_gate ? -0.05 : 1;
    if (cf.n_rank && !strcmp(name, "beta")) lo = 0, hi = 0.4;
    if (cf.n_rank && (!strcmp(name, "a") || !strcmp(name, "b"))) lo = -0.3, hi = 0.3;
    tt_random(&in[i], DT_F64, 5, shape, &r, lo, hi);
  }
  int64_t sshape[4] = {sz.B, sz.H, sz.M, sz.N};
  tt_random(&st0, DT_F64, 4, sshape, &r, -1, 1);
  tt_zeros(&st1, DT_F64, 4, sshape);
  tt_zeros(&ch_st1, DT_F64, 4, sshape);
  for (int k = 0; k < n_out; k++) {
    int c = frnn_step_port_class(s, FRNN_PORT_OUTPUT, k);
    int64_t shape[4] = {sz.B, sz.T, sz.H, c & FRNN_COL ? sz.M : 1};
    tt_zeros(&ref_out[k], DT_F64, 4, shape);
    tt_zeros(&ch_out[k], DT_F64, 4, shape);
  }
  const DLTensor *inputs[FRNN_MAX_PORTS], *states[1] = {&st0.t};
  DLTensor *outputs[FRNN_MAX_PORTS], *finals[1] = {&st1.t};
  const double *in_data[FRNN_MAX_PORTS];
  double *out_data[FRNN_MAX_PORTS];
  for (int i = 0; i < n_in; i++) inputs[i] = &in[i].t, in_data[i] = in[i].t.data;
  for (int k = 0; k < n_out; k++) outputs[k] = &ref_out[k].t, out_data[k] = ch_out[k].t.data;
  ck_assert_msg(frnn_reference_forward(ctx, s, sz, inputs, states, outputs, finals) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  int64_t lengths[] = {1, 4, 16, 64};
  for (int l = 0; l < 4; l++) {
    ck_assert_msg(chunk_forward_f64(ctx, s, &cf, sz, lengths[l], in_data, st0.t.data, out_data,
                                    ch_st1.t.data) == FRNN_OK,
                  "%s", frnn_ctx_error(ctx));
    for (int k = 0; k < n_out; k++) {
      double e = tt_rel_err(&ch_out[k], &ref_out[k]);
      ck_assert_msg(e < 1e-12, "%s, L = %lld: output %d off by %g", frnn_step_name(s), (long long)lengths[l], k, e);
    }
    double e = tt_rel_err(&ch_st1, &st1);
    ck_assert_msg(e < 1e-12, "%s, L = %lld: final state off by %g", frnn_step_name(s), (long long)lengths[l], e);
  }
  /* The backward: every input's gradient and the initial state's. */
  ttensor gy[FRNN_MAX_PORTS], gfin, ref_gin[FRNN_MAX_PORTS], ch_gin[FRNN_MAX_PORTS], ref_gst, ch_gst;
  const DLTensor *h_gy[FRNN_MAX_PORTS], *h_gfin[1];
  DLTensor *h_gin[FRNN_MAX_PORTS], *h_gst[1];
  const double *gy_data[FRNN_MAX_PORTS];
  double *gin_data[FRNN_MAX_PORTS];
  for (int k = 0; k < n_out; k++) {
    tt_random(&gy[k], DT_F64, ref_out[k].t.ndim, ref_out[k].shape, &r, -1, 1);
    h_gy[k] = &gy[k].t, gy_data[k] = gy[k].t.data;
  }
  tt_random(&gfin, DT_F64, 4, sshape, &r, -1, 1);
  tt_zeros(&ref_gst, DT_F64, 4, sshape);
  tt_zeros(&ch_gst, DT_F64, 4, sshape);
  h_gfin[0] = &gfin.t, h_gst[0] = &ref_gst.t;
  for (int i = 0; i < n_in; i++) {
    tt_zeros(&ref_gin[i], DT_F64, 5, in[i].shape);
    tt_zeros(&ch_gin[i], DT_F64, 5, in[i].shape);
    h_gin[i] = &ref_gin[i].t, gin_data[i] = ch_gin[i].t.data;
  }
  ck_assert_msg(frnn_reference_backward(ctx, s, sz, inputs, states, h_gy, h_gfin, h_gin, h_gst) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  /* chunks of 4 and 64 (and 16: the low-rank class's solves across a
   * whole chunk and a short last one) */
  for (int l = 1; l < 4; l += cf.n_rank ? 1 : 2) {
    ck_assert_msg(chunk_backward_f64(ctx, s, &cf, sz, lengths[l], in_data, st0.t.data, gy_data, gfin.t.data,
                                     gin_data, ch_gst.t.data) == FRNN_OK,
                  "%s", frnn_ctx_error(ctx));
    for (int i = 0; i < n_in; i++) {
      double e = tt_rel_err(&ch_gin[i], &ref_gin[i]);
      ck_assert_msg(e < 1e-10, "%s, L = %lld: gradient of %s off by %g", frnn_step_name(s), (long long)lengths[l],
                    frnn_step_port_name(s, FRNN_PORT_INPUT, i), e);
    }
    double e = tt_rel_err(&ch_gst, &ref_gst);
    ck_assert_msg(e < 1e-10, "%s, L = %lld: initial state's gradient off by %g", frnn_step_name(s),
                  (long long)lengths[l], e);
  }
  for (int k = 0; k < n_out; k++) tt_free(&gy[k]);
  for (int i = 0; i < n_in; i++) tt_free(&ref_gin[i]), tt_free(&ch_gin[i]);
  tt_free(&gfin), tt_free(&ref_gst), tt_free(&ch_gst);
  for (int i = 0; i < n_in; i++) tt_free(&in[i]);
  for (int k = 0; k < n_out; k++) tt_free(&ref_out[k]), tt_free(&ch_out[k]);
  tt_free(&st0);
  tt_free(&st1);
  tt_free(&ch_st1);
}

static const char *const diagonal[] = {"gla", "retention", "mamba2", "rwkv6", "gsa_values", "gsa_keys"};

START_TEST(examples_match_reference) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  char rel[64];
  snprintf(rel, sizeof rel, "examples/%s.frnn", diagonal[_i]);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path(rel), &s) == FRNN_OK);
  check_against_reference(ctx, s);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Forms the examples do not have: a column factor outside the sum, an old
 * and a new state in one output, a negated decay, a divided update, several
 * update terms, an output of class [1,1]. */
static const char *const built[] = {
    "step a(q[1,N], k[1,N], v[M,1], g[1,N], o[M,1]; S[M,N]) -> y[M,1]\n"
    "  y = o * sum(S * q) - sum(S * k)\n"
    "  S = S * exp(g) + v * k\n"
    "  y = y + 2 * sum(S * q)\n",
    "step b(q[1,N], k[1,N], v[M,1], a[1,1]; S[M,N]) -> y[M,1]\n"
    "  S = -(S * a) + v * k / (1 + a * a) - (2 * v) * (k * q)\n"
    "  y = sum(S * q / (2 + a * a))\n",
    "step c(q[1,N], k[1,N], v[M,1], g[1,N]; S[M,N]) -> z[1,1]\n"
    "  S = S * exp(g) + v * k\n"
    "  z = sum(sum_m(S) * q)\n",
};

START_TEST(built_forms_match_reference) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s = parse(ctx, built[_i]);
  chunk_form cf;
  frnn_status st = chunk_form_of(ctx, s, &cf);
  if (_i == 2) { /* a sum over M: refused, and said so */
    ck_assert_int_eq(st, FRNN_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "an operation other than"));
  } else {
    check_against_reference(ctx, s);
  }
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Each refusal names its reason, in the examples and in built steps. */
static const struct {
  const char *source, *why;
} refused[] = {
    {"examples/mamba.frnn", "varies along M and N"},
    {"step t(k[1,N], v[M,1], g[M,1]; S[M,N]) -> y[M,1]\n  S = S * exp(g) - sum(S * k) * k + v * k\n"
     "  y = sum(S * k)\n",
     "beside a term summing"},
    {"examples/hgrn.frnn", "exactly one state, of class [M,N]"},
    {"examples/mlstm.frnn", "exactly one state"},
    {"examples/longhorn.frnn", "two terms"},
    {"step t(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n  S = S * S + v * k\n  y = sum(S * k)\n", "two values"},
    {"step t(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n  S = v * k / S\n  y = sum(S * k)\n", "division by"},
    {"step t(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n  S = v * k + exp(S)\n  y = sum(S * k)\n", "other than"},
    {"step t(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n  S = v * k\n  y = sum(S * k)\n", "no decay term"},
    {"step t(k[1,N], v[M,1], w[M,N]; S[M,N]) -> y[M,1]\n  S = S + w\n  y = sum(S * k)\n",
     "not a column times a row"},
    {"step t(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n  S = S + v * k\n  y = sum(S * (v * k))\n", "vary along M"},
    {"step t(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n  S = S + v * k\n  y = sum(S * k) * sum(k)\n", ""},
    {"step t(k[1,N], v[M,1]; S[M,N]) -> y[M,1]\n  S = S + v * k\n  y = sum(S * k + v * k)\n",
     "plus an independent value"},
};

START_TEST(refusals_say_why) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  if (!strncmp(refused[_i].source, "examples/", 9))
    ck_assert(frnn_step_load(ctx, test_source_path(refused[_i].source), &s) == FRNN_OK);
  else
    s = parse(ctx, refused[_i].source);
  chunk_form cf;
  frnn_status st = chunk_form_of(ctx, s, &cf);
  if (!*refused[_i].why) { /* the one accepted: a scalar factor outside the sum */
    ck_assert_msg(st == FRNN_OK, "%s", frnn_ctx_error(ctx));
    check_against_reference(ctx, s);
  } else {
    ck_assert_int_eq(st, FRNN_E_UNSUPPORTED);
    ck_assert_msg(strstr(frnn_ctx_error(ctx), refused[_i].why), "expected '%s' in: %s", refused[_i].why,
                  frnn_ctx_error(ctx));
  }
  /* The dump says the same, through the public entry point. */
  frnn_codegen_options opt = {.M = 8, .N = 8, .dtype = {kDLFloat, 32, 1}, .after_pass = "chunk"};
  char *text = NULL;
  ck_assert_msg(frnn_compile_ptx(ctx, s, &opt, &text) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_ptr_nonnull(strstr(text, *refused[_i].why ? refused[_i].why : "decay of S (scalar)"));
  frnn_free(text);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The low-rank class: the delta rules' and RWKV-7's updates hold one
 * rank-one term sum(S * a) * b beside the decay and a column x row update;
 * the form names a and b; the float64 forward and backward by chunks match
 * the reference; the GPU form takes a as one more term reading the old
 * state and b as one more update's row, with their seeds, in a plan that
 * fits an H100. */
static const struct {
  const char *file, *a, *b;
  int decay_cls;
  double sign;
} low_rank[] = {
    {"examples/delta_rule.frnn", "(k)", "(beta) * (k)", FRNN_SCALAR, -1},
    {"examples/gated_delta_rule.frnn", "(exp(g)) * (k)", "(beta) * (k)", FRNN_SCALAR, -1},
    {"examples/rwkv7.frnn", "(a)", "(b)", FRNN_ROW, 1},
};

START_TEST(low_rank_forms) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path(low_rank[_i].file), &s) == FRNN_OK);
  chunk_form cf;
  ck_assert_msg(chunk_form_of(ctx, s, &cf) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_int_eq(cf.n_rank, 1);
  ck_assert_int_eq(cf.n_updates, 1);
  ck_assert_int_eq(cf.decay_cls, low_rank[_i].decay_cls);
  ck_assert(cf.rank_sign[0] == low_rank[_i].sign);
  frnn_codegen_options opt = {.M = 8, .N = 8, .dtype = {kDLFloat, 32, 1}, .after_pass = "chunk"};
  char *text = NULL, want[256];
  ck_assert(frnn_compile_ptx(ctx, s, &opt, &text) == FRNN_OK);
  snprintf(want, sizeof want, "%ssum(S * %s) * %s\n", low_rank[_i].sign < 0 ? "-" : "", low_rank[_i].a, low_rank[_i].b);
  ck_assert_msg(strstr(text, "low-rank class") && strstr(text, want), "want '%s' in:\n%s", want, text);
  frnn_free(text);
  chunk_gpu g;
  ck_assert_msg(chunk_gpu_make(ctx, s, &g) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_int_eq(g.n_lin, 2);
  ck_assert_int_eq(g.n_upd, 2);
  ck_assert(g.rank_lin == 1 && g.lin_rank[1] == 0 && g.lin_rank[0] == -1 && g.lin_base[1] == CHUNK_BASE_STATE);
  ck_assert(g.rank_upd == 1 && g.upd_rank[1] == 0 && g.upd_rank[0] == -1 && g.upd_row_sign[1] == low_rank[_i].sign);
  ck_assert(g.seed_c[1] == -1 && g.seed_c[0] >= 0 && g.seed_o[1] == -1);
  ck_assert(g.seed_kind[g.seed_w[1]] == CK_SEED_RA);
  if (low_rank[_i].decay_cls == FRNN_ROW) /* RWKV-7: b is not its update's row, b keeps its seed */
    ck_assert(g.seed_kind[g.seed_r[1]] == CK_SEED_RB && !g.merge_rows);
  else /* b = s r merged out of the backward (the default): s's seed instead */
    ck_assert(g.seed_r[1] == -1 && g.merge_rows && g.seed_kind[g.seed_s] == CK_SEED_S);
  ck_plan p;
  ck_assert_msg(ck_plan_make(ctx, s, &g, 128, 128, 90, 232448, &p) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert(p.fwd_smem <= 232448 && p.bwd_smem <= 232448 && p.mma);
  ck_assert(p.fw.TI >= 0 && p.fw.XT >= 0 && p.bw.TI >= 0 && p.bw.XT >= 0);
  ck_assert_int_eq(p.BM, 128); /* a block a head, chunks of 16 (32 does not fit) */
  ck_assert_int_eq(p.L, 16);
  chunk_gpu_free(&g);
  /* the float64 forward by chunks (the rank-one columns solved step by
   * step) and its backward (their gradients by back substitution) equal
   * the reference's */
  check_against_reference(ctx, s);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The value of a chunk product (sign times its factors) at element n of a
 * row (a scalar factor at 0), from an evaluated step. */
static double product_at(const step_eval *e, const chunk_product *f, double sign, int64_t n) {
  double v = sign;
  for (int q = 0; q < f->n; q++) {
    const double *x = e->val[f->node[q]];
    double fx = CLASS_HAS_N(e->step->nodes[f->node[q]].cls) ? x[n] : x[0];
    v = f->divide[q] ? v / fx : v * fx;
  }
  return v;
}
static int64_t class_count(int cls, int64_t M, int64_t N) {
  return (CLASS_HAS_M(cls) ? M : 1) * (CLASS_HAS_N(cls) ? N : 1);
}

/* b merged out of the backward (FRNN_CK_MERGE=3, the default; chunk_gpu.merge_rows): the
 * delta rules' b = s r (s = -beta, r = k) gets no seed; r's seed takes its
 * own gradient plus s times b's, and s's seed r . db.  The chain kernel's
 * graph (the term prologue's adjoint, evaluated in float64 here at one
 * step) must give every input the same gradient from those seeds as from
 * b's own: J_b^T db = J_r^T (s db) + J_s^T (r . db).  Random inputs and
 * seeds; relative error 1e-12. */
START_TEST(merged_rows_seeds) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path(low_rank[_i].file), &s) == FRNN_OK);
  chunk_gpu g2, g3;
  setenv("FRNN_CK_MERGE", "2", 1);
  ck_assert_msg(chunk_gpu_make(ctx, s, &g2) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  setenv("FRNN_CK_MERGE", "3", 1);
  frnn_status st3 = chunk_gpu_make(ctx, s, &g3);
  unsetenv("FRNN_CK_MERGE");
  ck_assert_msg(st3 == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_int_eq(g2.seed_s, -1);
  ck_assert(!g2.merge_rows);
  if (low_rank[_i].decay_cls == FRNN_ROW) { /* RWKV-7: its b is not its update's row */
    ck_assert_int_eq(g3.merge_into, -1);
    ck_assert(!g3.merge_rows && g3.seed_s == -1 && g3.n_seeds == g2.n_seeds);
  } else {
    ck_assert_int_eq(g3.merge_into, 0);
    ck_assert(g3.merge_rows && g3.seed_s >= 0 && g3.seed_r[g3.rank_upd] == -1);
    ck_assert_int_eq(g3.n_seeds, g2.n_seeds);
    int64_t M = 3, N = 5;
    rng r = test_rng("test_chunked merged_rows_seeds");
    step_eval fe, e2, e3;
    ck_assert(eval_init(ctx, &fe, s, M, N) == FRNN_OK);
    int n_in = s->n_ports[FRNN_PORT_INPUT];
    for (int i = 0; i < n_in; i++) {
      double *x = eval_leaf(&fe, FRNN_PORT_INPUT, i);
      for (int64_t q = 0; q < class_count(s->ports[FRNN_PORT_INPUT][i].cls, M, N); q++) x[q] = rng_uniform(&r, -1, 1);
    }
    double *st = eval_leaf(&fe, FRNN_PORT_STATE, 0);
    for (int64_t q = 0; q < M * N; q++) st[q] = rng_uniform(&r, -1, 1);
    eval_step(&fe);
    /* r (the merged update's row) and s at this step */
    int a = g3.merge_into, xr = g3.rank_upd;
    double rv[5], sv = product_at(&fe, &g3.merge_s, g3.merge_sign, 0);
    for (int64_t n = 0; n < N; n++) rv[n] = product_at(&fe, &g3.upd_row[a], g3.upd_row_sign[a], n);
    ck_assert(eval_init(ctx, &e2, g2.terms_adj, M, N) == FRNN_OK);
    ck_assert(eval_init(ctx, &e3, g3.terms_adj, M, N) == FRNN_OK);
    const frnn_step *adj = g2.terms_adj;
    for (int i = 0; i < n_in; i++) {
      int64_t c = class_count(s->ports[FRNN_PORT_INPUT][i].cls, M, N);
      memcpy(eval_leaf(&e2, FRNN_PORT_INPUT, i), eval_leaf(&fe, FRNN_PORT_INPUT, i), (size_t)c * sizeof(double));
      memcpy(eval_leaf(&e3, FRNN_PORT_INPUT, i), eval_leaf(&fe, FRNN_PORT_INPUT, i), (size_t)c * sizeof(double));
    }
    /* b's seed db, and every other seed, at random */
    double db[5] = {0};
    for (int q = 0; q < g2.n_seeds; q++) {
      double *x = eval_leaf(&e2, FRNN_PORT_INPUT, n_in + q);
      for (int64_t e = 0; e < class_count(g2.seed_cls[q], M, N); e++) x[e] = rng_uniform(&r, -1, 1);
      if (q == g2.seed_r[xr]) memcpy(db, x, (size_t)N * sizeof(double));
    }
    for (int q = 0; q < g3.n_seeds; q++) {
      double *x = eval_leaf(&e3, FRNN_PORT_INPUT, n_in + q);
      if (q == g3.seed_s) {
        x[0] = 0;
        for (int64_t n = 0; n < N; n++) x[0] += rv[n] * db[n];
        continue;
      }
      int q2 = -1; /* the same term's seed in g2 */
      for (int t = 0; t < g2.n_seeds && q2 < 0; t++)
        if (g2.seed_kind[t] == g3.seed_kind[q] && g2.seed_index[t] == g3.seed_index[q]) q2 = t;
      ck_assert_int_ge(q2, 0);
      const double *y = eval_leaf(&e2, FRNN_PORT_INPUT, n_in + q2);
      for (int64_t e = 0; e < class_count(g3.seed_cls[q], M, N); e++)
        x[e] = y[e] + (q == g3.seed_r[a] ? sv * db[e] : 0);
    }
    /* the dummy state, dz = 1, the next state's gradient */
    int n_pin = n_in + g2.n_seeds;
    for (int k = 0; k < 3; k++) {
      eval_leaf(&e2, FRNN_PORT_INPUT, n_pin + k)[0] = k == 1;
      eval_leaf(&e3, FRNN_PORT_INPUT, n_pin + k)[0] = k == 1;
    }
    eval_step(&e2);
    eval_step(&e3);
    double err = 0, norm = 0;
    for (int i = 0; i < n_in; i++) {
      int cls = adj->ports[FRNN_PORT_OUTPUT][i].cls;
      for (int64_t m = 0; m < (CLASS_HAS_M(cls) ? M : 1); m++)
        for (int64_t n = 0; n < (CLASS_HAS_N(cls) ? N : 1); n++) {
          double want = eval_port(&e2, FRNN_PORT_OUTPUT, i, m, n), got = eval_port(&e3, FRNN_PORT_OUTPUT, i, m, n);
          err += (got - want) * (got - want), norm += want * want;
        }
    }
    ck_assert_msg(norm > 0 && sqrt(err / norm) < 1e-12, "%s: relative error %g (norm %g)", low_rank[_i].file,
                  sqrt(err / norm), sqrt(norm));
    eval_free(&fe);
    eval_free(&e2);
    eval_free(&e3);
  }
  chunk_gpu_free(&g2);
  chunk_gpu_free(&g3);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The backward's workspace for inputs of every port's full shape at sz,
 * those named in `by_heads` (NULL-terminated, or NULL) shared by the heads
 * ([B,T,1,...]). */
static size_t backward_workspace(frnn_ctx *ctx, const frnn_step *s, frnn_sizes sz, const char *const *by_heads) {
  int n_in = frnn_step_port_count(s, FRNN_PORT_INPUT);
  int64_t shapes[FRNN_MAX_PORTS][5];
  DLTensor ins[FRNN_MAX_PORTS];
  const DLTensor *pin[FRNN_MAX_PORTS];
  for (int i = 0; i < n_in; i++) {
    int c = frnn_step_port_class(s, FRNN_PORT_INPUT, i);
    bool shared = false;
    for (const char *const *name = by_heads; name && *name; name++)
      shared = shared || strcmp(*name, frnn_step_port_name(s, FRNN_PORT_INPUT, i)) == 0;
    int64_t sh[5] = {sz.B, sz.T, shared ? 1 : sz.H, c & FRNN_COL ? sz.M : 1, c & FRNN_ROW ? sz.N : 1};
    memcpy(shapes[i], sh, sizeof sh);
    ins[i] = (DLTensor){.ndim = 5, .shape = shapes[i], .dtype = {kDLFloat, 32, 1}};
    pin[i] = &ins[i];
  }
  size_t got = 0;
  ck_assert_msg(frnn_gpu_workspace_size(ctx, s, sz, pin, 1, &got) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  return got;
}

/* An input shared by the heads ([B,T,1,...]: Mamba-2's B and C) has one
 * float32 partial gradient that every head adds into, [B][T][E], not one per
 * head; an input given per head has none (its gradient is written in place).
 * So the workspace with B and C shared is that with them per head plus
 * B T N floats each, not B T H N. */
START_TEST(shared_by_heads_workspace) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/mamba2.frnn"), &s) == FRNN_OK);
  frnn_sizes sz = {.B = 2, .T = 100, .H = 3, .M = 128, .N = 128};
  const char *const b_and_c[] = {"B", "C", NULL};
  size_t got[2] = {backward_workspace(ctx, s, sz, NULL), backward_workspace(ctx, s, sz, b_and_c)};
  size_t partial = ((size_t)(sz.B * sz.T * sz.N) * 4 + 255) / 256 * 256;
  ck_assert_msg(got[1] - got[0] == 2 * partial, "shared B and C add %zu bytes, want %zu", got[1] - got[0],
                2 * partial);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The workspace of the low-rank class's chunked backward, in closed form:
 * (chunks + 1) states a head and, per chunk, the rank-one columns X [L][M]
 * and the inverse [L][L] the forward stores for the backward; then each
 * term's per-step gradient (columns whole, rows per block of rows, a
 * scalar summed over the columns one float) for the chunks' whole steps.
 * Too small a workspace would have the kernels write past it. */
START_TEST(low_rank_workspace) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path(low_rank[_i].file), &s) == FRNN_OK);
  chunk_gpu g;
  ck_assert_msg(chunk_gpu_make(ctx, s, &g) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  target t;
  ck_assert(target_parse(ctx, "sm_90", &t) == FRNN_OK);
  frnn_sizes sz = {.B = 2, .T = 100, .H = 3, .M = 128, .N = 128};
  ck_plan p;
  ck_assert(ck_plan_make(ctx, s, &g, sz.M, sz.N, t.sm, t.max_shared_bytes_optin, &p) == FRNN_OK);
  /* inputs given in full: nothing broadcast, no partial gradients */
  size_t got = backward_workspace(ctx, s, sz, NULL);
  int64_t nch = (sz.T + p.L - 1) / p.L, heads = sz.B * sz.H;
  size_t want = ((size_t)(heads * (nch + 1) * sz.M * sz.N) * 4 + 255) / 256 * 256;
  want += ((size_t)(heads * nch * p.L * (sz.M + p.L)) * 4 + 255) / 256 * 256;
  for (int q = 0; q < g.n_seeds; q++) {
    if (g.seed_kind[q] == CK_SEED_IND) continue;
    bool col = g.seed_cls[q] == FRNN_COL;
    bool summed = (g.seed_kind[q] == CK_SEED_LD || g.seed_kind[q] == CK_SEED_S) && g.seed_cls[q] == FRNN_SCALAR;
    /* whole chunks' steps, as the kernels index them */
    size_t steps = (size_t)(col ? 1 : p.MB) * (size_t)(sz.B * nch * p.L * sz.H);
    want += (steps * (size_t)(col ? sz.M : summed ? 1 : sz.N) * 4 + 255) / 256 * 256;
  }
  ck_assert_uint_eq(got, want);
  ck_assert_int_eq(ck_rank_floats(&p, &g), p.L * (sz.M + p.L));
  chunk_gpu_free(&g);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Two rank-one terms: the float64 algebra takes them (their columns solved
 * together step by step, their gradients by one back substitution), the GPU
 * form refuses them with the reason. */
START_TEST(two_rank_terms) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s = parse(ctx, "step t(k[1,N], v[M,1], a[1,N], b[1,N]; S[M,N]) -> y[M,1]\n"
                            "  S = S * exp(-0.1) + sum(S * a) * b + sum(S * b) * (0.5 * a) + v * k\n"
                            "  y = sum(S * k)\n");
  chunk_form cf;
  ck_assert_msg(chunk_form_of(ctx, s, &cf) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_int_eq(cf.n_rank, 2);
  check_against_reference(ctx, s);
  chunk_gpu g;
  ck_assert_int_eq(chunk_gpu_make(ctx, s, &g), FRNN_E_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "more than one rank-one term"));
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

START_TEST(dump_names_the_terms) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/rwkv6.frnn"), &s) == FRNN_OK);
  frnn_codegen_options opt = {.M = 8, .N = 8, .dtype = {kDLFloat, 32, 1}, .after_pass = "chunk"};
  char *text = NULL;
  ck_assert(frnn_compile_ptx(ctx, s, &opt, &text) == FRNN_OK);
  ck_assert_msg(strstr(text, "decay of S (row): (exp(w))\n") && strstr(text, "update 1 (column x row): (v) * (k)\n") &&
                    strstr(text, "(independent of S) + sum(S * (r))\n"),
                "%s", text);
  frnn_free(text);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The chunked backward on term values (chunk_seq_backward) against central
 * finite differences of the chunked forward, for every term value and the
 * initial state: decays of both signs (nonzero), two updates, an output
 * term on the old state and one on the new, chunks of 1, 3, 4 and 16 at
 * T = 11.  Loss: sum dy . y + dS_T . S_T, dy and dS_T random. */
static double seq_loss(frnn_ctx *ctx, const chunk_seq *q, int64_t L, const double *S0, const double *dy,
                       const double *dST, double *y, double *ST) {
  ck_assert(chunk_seq_forward(ctx, q, L, S0, y, ST, NULL) == FRNN_OK);
  double l = 0;
  for (size_t i = 0; i < (size_t)(q->T * q->n_lin * q->M); i++) l += dy[i] * y[i];
  for (size_t i = 0; i < (size_t)(q->M * q->N); i++) l += dST[i] * ST[i];
  return l;
}

START_TEST(backward_matches_finite_differences) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  rng r = test_rng("test_chunked");
  enum { T = 11, M = 3, N = 4, U = 2, K = 2 };
  static const int bases[K] = {CHUNK_BASE_STATE, CHUNK_BASE_NEXT};
  size_t sizes[5] = {T * N, T * U * M, T * U * N, T * K * N, T * K * M}, total = 0;
  for (int i = 0; i < 5; i++) total += sizes[i];
  double *vals = malloc(total * sizeof *vals), *grads = malloc(total * sizeof *grads);
  double S0[M * N], dS0[M * N], dST[M * N], ST[M * N], dy[T * K * M], y[T * K * M];
  for (size_t i = 0; i < total; i++) vals[i] = rng_uniform(&r, -1, 1);
  for (size_t i = 0; i < sizes[0]; i++) /* decays 0.3..1.2 in size, either sign */
    vals[i] = (rng_uniform(&r, 0, 1) < 0.2 ? -1 : 1) * rng_uniform(&r, 0.3, 1.2);
  for (int i = 0; i < M * N; i++) S0[i] = rng_uniform(&r, -1, 1), dST[i] = rng_uniform(&r, -1, 1);
  for (int i = 0; i < T * K * M; i++) dy[i] = rng_uniform(&r, -1, 1);
  chunk_seq q = {.T = T, .M = M, .N = N, .n_upd = U, .n_lin = K, .lin_base = bases}, g = q;
  double **fields[5] = {&q.d, &q.c, &q.r, &q.w, &q.o}, **gfields[5] = {&g.d, &g.c, &g.r, &g.w, &g.o};
  for (size_t i = 0, off = 0; i < 5; off += sizes[i], i++) *fields[i] = vals + off, *gfields[i] = grads + off;
  static const char *const names[5] = {"d", "c", "r", "w", "o"};
  int64_t lengths[] = {1, 3, 4, 16};
  for (int li = 0; li < 4; li++) {
    int64_t L = lengths[li];
    double *starts = malloc((size_t)((T + L - 1) / L) * M * N * sizeof *starts);
    ck_assert(chunk_seq_forward(ctx, &q, L, S0, y, ST, starts) == FRNN_OK);
    ck_assert(chunk_seq_backward(ctx, &q, L, starts, ST, dy, dST, &g, dS0) == FRNN_OK);
    const double h = 1e-6;
    for (size_t f = 0, off = 0; f < 6; off += f < 5 ? sizes[f] : 0, f++) {
      double *x = f < 5 ? vals + off : S0, *gx = f < 5 ? grads + off : dS0;
      size_t n = f < 5 ? sizes[f] : (size_t)(M * N);
      double num = 0, den = 0;
      for (size_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + h;
        double lp = seq_loss(ctx, &q, L, S0, dy, dST, y, ST);
        x[i] = keep - h;
        double lm = seq_loss(ctx, &q, L, S0, dy, dST, y, ST);
        x[i] = keep;
        double fd = (lp - lm) / (2 * h);
        num += (gx[i] - fd) * (gx[i] - fd);
        den += fd * fd;
      }
      double e = sqrt(num / (den > 0 ? den : 1));
      ck_assert_msg(e < 1e-7, "L = %lld: gradient of %s off by %g", (long long)L, f < 5 ? names[f] : "S0", e);
    }
    free(starts);
  }
  free(vals);
  free(grads);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Which steps the chunked GPU kernels take (chunk_gpu_make), with the
 * reason for the others, and the plan they get (ck_plan_make): the sizes
 * the benchmarks run fit an H100's shared memory; a limit nothing fits is
 * refused with a message, never planned past. */
static const struct {
  const char *source, *why; /* why: "" for taken */
} gpu_verdicts[] = {
    {"examples/gla.frnn", ""},
    {"examples/mamba2.frnn", ""},
    {"examples/rwkv6.frnn", ""},
    {"examples/gsa_values.frnn", ""},
    {"examples/retention.frnn", ""}, /* guarded: its gamma is not an exp */
    {"examples/mamba.frnn", "no chunked form"},
    {"step t(k[1,N], v[M,1], g[1,N]; S[M,N]) -> y[M,1]\n  S = -exp(g) * S + v * k\n  y = sum(S * k)\n",
     "negated exponential"},
    /* a quotient of exponentials: its log decay is g - h */
    {"step t(k[1,N], v[M,1], g[1,N], h[1,1]; S[M,N]) -> y[M,1]\n  S = S * exp(g) / exp(h) + v * k\n"
     "  y = sum(S * k)\n",
     ""},
    /* an exp and a factor that is not one: the log decay is g + log(sigmoid(a)), guarded */
    {"step t(k[1,N], v[M,1], g[1,N], a[1,1]; S[M,N]) -> y[M,1]\n  S = S * exp(g) * sigmoid(a) + v * k\n"
     "  y = sum(S * k)\n",
     ""},
};

START_TEST(gpu_form_verdicts) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  if (!strncmp(gpu_verdicts[_i].source, "examples/", 9))
    ck_assert(frnn_step_load(ctx, test_source_path(gpu_verdicts[_i].source), &s) == FRNN_OK);
  else
    s = parse(ctx, gpu_verdicts[_i].source);
  chunk_gpu g;
  frnn_status st = chunk_gpu_make(ctx, s, &g);
  const char *why = gpu_verdicts[_i].why;
  if (!*why) {
    ck_assert_msg(st == FRNN_OK, "%s: %s", gpu_verdicts[_i].source, frnn_ctx_error(ctx));
    ck_assert_int_ge(g.n_seeds, 3);
    if (_i == 7) ck_assert(g.n_ld == 2 && !g.ld_neg[0] && g.ld_neg[1] && !g.guard);
    /* a factor that is not an exp is guarded, its log taken; exps are not */
    if (_i == 4) ck_assert(g.guard && g.n_ld == 1 && g.ld_log[0]);
    if (_i == 8) ck_assert(g.guard && g.n_ld == 2 && g.ld_log[0] + g.ld_log[1] == 1);
    if (_i < 4) ck_assert(!g.guard && !g.ld_log[0]);
    ck_assert_ptr_nonnull(g.terms_adj);
    ck_plan p;
    ck_assert_msg(ck_plan_make(ctx, s, &g, 128, 128, 90, 232448, &p) == FRNN_OK, "%s", frnn_ctx_error(ctx));
    ck_assert_int_eq(p.BM, 128);
    ck_assert_int_eq(p.MB, 1);
    ck_assert_int_eq(p.L, 32);
    ck_assert(p.fwd_smem <= 232448 && p.bwd_smem <= 232448 && p.chain_smem <= 232448);
    ck_assert_int_eq(p.fwd_smem % 4, 0);
    /* A row decay's log decay gradient is formed by the chain kernel, whose
     * shared memory then holds the step's scalars after the adjoint's; a
     * scalar decay's stays in the backward.  Not with two blocks of rows
     * (the chain reads the backward's RUN from one), fused, or the knob 0. */
    bool row_decay = g.n_ld > 0 && !p.col && p.nd > 1;
    ck_assert_int_eq(p.ld_in_chain, row_decay);
    if (row_decay) ck_assert_int_eq(p.ld_chain_unroll, g.n_lin + g.n_upd <= 2 ? 4 : 1);
    int sc_adj = p.n_sc_adj * p.L + 1;
    ck_assert_uint_eq(p.chain_smem, 4u * (unsigned)(row_decay ? (sc_adj + 3) / 4 * 4 + p.n_sc * p.L : sc_adj));
    if (row_decay) {
      ck_plan q;
      setenv("FRNN_CK_BM", "64", 1);
      ck_assert(ck_plan_make(ctx, s, &g, 128, 128, 90, 232448, &q) == FRNN_OK && q.MB == 2 && !q.ld_in_chain);
      unsetenv("FRNN_CK_BM");
      setenv("FRNN_CK_FUSE", "1", 1);
      ck_assert(ck_plan_make(ctx, s, &g, 128, 128, 90, 232448, &q) == FRNN_OK && q.fused && !q.ld_in_chain);
      unsetenv("FRNN_CK_FUSE");
      setenv("FRNN_CK_LD_CHAIN", "0", 1);
      ck_assert(ck_plan_make(ctx, s, &g, 128, 128, 90, 232448, &q) == FRNN_OK && !q.ld_in_chain);
      ck_assert_uint_eq(q.chain_smem, 4u * (unsigned)sc_adj);
      unsetenv("FRNN_CK_LD_CHAIN");
    }
    /* tensor cores at these sizes: strides 4 mod 32 (a fragment's 8 rows
     * x 4 columns in distinct banks), padded extents */
    ck_assert(p.mma && p.mma_tiles >= 1);
    ck_assert(p.sn % 32 == 4 && p.sm % 32 == 4 && p.sl % 32 == 4 && p.Np % 4 == 0 && p.Mp % 4 == 0);
    ck_assert(p.sn >= p.Np && p.sm >= p.Mp && p.sl >= p.L);
    ck_assert_msg(ck_plan_make(ctx, s, &g, 128, 128, 90, 16384, &p) == FRNN_E_UNSUPPORTED, "planned past the limit");
    ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "shared memory"));
    ck_assert_msg(ck_plan_make(ctx, s, &g, 3, 5, 90, 232448, &p) == FRNN_OK, "%s", frnn_ctx_error(ctx));
    ck_assert(p.Mp == 4 && p.Np == 8 && p.BM == 3);
    /* sizes that are no multiple of the mma tile: CUDA cores, odd strides
     * (no bank conflicts between the rows a warp reads side by side) */
    ck_assert(!p.mma && p.sn % 2 == 1 && p.sm % 2 == 1 && p.sl % 2 == 1);
    setenv("FRNN_CK_MMA", "0", 1);
    ck_assert(ck_plan_make(ctx, s, &g, 128, 128, 90, 232448, &p) == FRNN_OK);
    unsetenv("FRNN_CK_MMA");
    ck_assert(!p.mma && p.sn == 129 && p.sm == 129 && p.sl == 33);
    chunk_gpu_free(&g);
  } else {
    ck_assert_int_eq(st, FRNN_E_UNSUPPORTED);
    ck_assert_msg(strstr(frnn_ctx_error(ctx), why), "expected '%s' in: %s", why, frnn_ctx_error(ctx));
  }
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* A decay along M (GSA's key step): the form takes it as a column; the GPU
 * form guards it (the split of its ratios needs moderate running log
 * decays) and gives every output term an outside factor's seed (X w, which
 * the log decay's gradient needs); the float64 algebra runs it row by row
 * and matches the reference executor (examples_match_reference, and here
 * the GPU tests' built step: an old-state output with an outside factor,
 * two updates, a column times a scalar decay). */
START_TEST(column_decay) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  frnn_step *s;
  ck_assert(frnn_step_load(ctx, test_source_path("examples/gsa_keys.frnn"), &s) == FRNN_OK);
  chunk_form cf;
  ck_assert_msg(chunk_form_of(ctx, s, &cf) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_int_eq(cf.decay_cls, FRNN_COL);
  ck_assert_int_eq(cf.n_updates, 1);
  chunk_gpu g;
  ck_assert_msg(chunk_gpu_make(ctx, s, &g) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert(g.guard && g.n_ld == 1 && !g.ld_log[0] && g.n_lin == 1 && g.seed_o[0] >= 0);
  ck_assert_int_eq(g.seed_cls[g.seed_ld], FRNN_COL);
  ck_plan p;
  ck_assert_msg(ck_plan_make(ctx, s, &g, 64, 128, 90, 232448, &p) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert(p.col && p.nd == 1 && !p.split && p.L == 32 && p.sd == p.sm);
  ck_assert_msg(ck_plan_make(ctx, s, &g, 128, 128, 90, 232448, &p) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert(p.bwd_smem <= 232448 && p.fwd_smem <= 232448);
  chunk_gpu_free(&g);
  frnn_step_destroy(s);
  ck_assert(frnn_step_load(ctx, test_source_path("tests/gpu/steps/column_decay.frnn"), &s) == FRNN_OK);
  ck_assert_msg(chunk_form_of(ctx, s, &cf) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert(cf.decay_cls == FRNN_COL && cf.n_updates == 2);
  check_against_reference(ctx, s);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The rank-one columns by the split form (chunk_seq.rank_split: the
 * state-independent TI, W, U first, then X = U + W S_0^T; in the backward
 * dH = Hy + dS Bhe^T) against the step-by-step solve and back substitution
 * that the reference executor and finite differences check above: outputs,
 * final state and every gradient to 1e-12 (relative), one and two rank-one
 * terms beside two updates, outputs of the old and the new state, decays of
 * both signs, chunks of 1, 3, 4, 11 and 16 at T = 11. */
static double seq_rel(const double *a, const double *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return sqrt(num / (den > 0 ? den : 1));
}

START_TEST(rank_split_matches_step_by_step) {
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  rng r = test_rng("test_chunked");
  enum { T = 11, M = 3, N = 4, U = 2, K = 2, KR = 2 };
  static const int bases[K] = {CHUNK_BASE_STATE, CHUNK_BASE_NEXT};
  int n_rank = 1 + _i;
  size_t sizes[7] = {T * N, T * U * M, T * U * N, T * K * N, T * K * M, T * KR * N, T * KR * N}, total = 0;
  for (int i = 0; i < 7; i++) total += sizes[i];
  double *vals = malloc(total * sizeof *vals);
  for (size_t i = 0; i < total; i++) vals[i] = rng_uniform(&r, -1, 1);
  for (size_t i = 0; i < sizes[0]; i++) /* decays 0.3..1.2 in size, either sign */
    vals[i] = (rng_uniform(&r, 0, 1) < 0.2 ? -1 : 1) * rng_uniform(&r, 0.3, 1.2);
  size_t ab = total - sizes[5] - sizes[6];
  for (size_t i = ab; i < total; i++) vals[i] *= 0.4; /* a and b: (I - G) well conditioned */
  double S0[M * N], y[2][T * K * M], ST[2][M * N], dy[T * K * M], dST[M * N], dS0[2][M * N];
  double starts[T * M * N]; /* chunks of 1 at most T */
  for (int i = 0; i < M * N; i++) S0[i] = rng_uniform(&r, -1, 1), dST[i] = rng_uniform(&r, -1, 1);
  for (int i = 0; i < T * K * M; i++) dy[i] = rng_uniform(&r, -1, 1);
  chunk_seq q = {.T = T, .M = M, .N = N, .n_upd = U, .n_lin = K, .lin_base = bases, .n_rank = n_rank}, g[2];
  double *grads[2] = {malloc(total * sizeof(double)), malloc(total * sizeof(double))};
  double **fields[7] = {&q.d, &q.c, &q.r, &q.w, &q.o, &q.a, &q.b};
  for (size_t i = 0, off = 0; i < 7; off += sizes[i], i++) *fields[i] = vals + off;
  for (int split = 0; split < 2; split++) {
    g[split] = q;
    double **gf[7] = {&g[split].d, &g[split].c, &g[split].r, &g[split].w, &g[split].o, &g[split].a, &g[split].b};
    for (size_t i = 0, off = 0; i < 7; off += sizes[i], i++) *gf[i] = grads[split] + off;
  }
  static const char *const names[7] = {"d", "c", "r", "w", "o", "a", "b"};
  int64_t lengths[] = {1, 3, 4, 11, 16};
  for (int li = 0; li < 5; li++) {
    for (int split = 0; split < 2; split++) {
      q.rank_split = split;
      ck_assert(chunk_seq_forward(ctx, &q, lengths[li], S0, y[split], ST[split], starts) == FRNN_OK);
      ck_assert(chunk_seq_backward(ctx, &q, lengths[li], starts, ST[split], dy, dST, &g[split], dS0[split]) ==
                FRNN_OK);
    }
    double ey = seq_rel(y[1], y[0], T * K * M), es = seq_rel(ST[1], ST[0], M * N);
    ck_assert_msg(ey < 1e-12 && es < 1e-12, "%d rank-one terms, L = %lld: outputs off by %g, final state by %g",
                  n_rank, (long long)lengths[li], ey, es);
    for (size_t f = 0, off = 0; f < 7; off += sizes[f], f++) {
      size_t n = f < 5 ? sizes[f] : (size_t)(T * n_rank * N); /* a, b: the first n_rank of KR */
      double e = seq_rel(grads[1] + off, grads[0] + off, n);
      ck_assert_msg(e < 1e-12, "%d rank-one terms, L = %lld: gradient of %s off by %g", n_rank,
                    (long long)lengths[li], names[f], e);
    }
    double e0 = seq_rel(dS0[1], dS0[0], M * N);
    ck_assert_msg(e0 < 1e-12, "%d rank-one terms, L = %lld: gradient of S0 off by %g", n_rank,
                  (long long)lengths[li], e0);
  }
  free(grads[0]), free(grads[1]);
  free(vals);
  frnn_ctx_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *suite = suite_create("chunked");
  TCase *tc = tcase_create("chunked");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, examples_match_reference, 0, (int)(sizeof diagonal / sizeof *diagonal));
  tcase_add_loop_test(tc, built_forms_match_reference, 0, (int)(sizeof built / sizeof *built));
  tcase_add_loop_test(tc, refusals_say_why, 0, (int)(sizeof refused / sizeof *refused));
  tcase_add_test(tc, dump_names_the_terms);
  tcase_add_loop_test(tc, low_rank_forms, 0, (int)(sizeof low_rank / sizeof *low_rank));
  tcase_add_test(tc, two_rank_terms);
  tcase_add_loop_test(tc, low_rank_workspace, 0, (int)(sizeof low_rank / sizeof *low_rank));
  tcase_add_loop_test(tc, merged_rows_seeds, 0, (int)(sizeof low_rank / sizeof *low_rank));
  tcase_add_test(tc, shared_by_heads_workspace);
  tcase_add_test(tc, backward_matches_finite_differences);
  tcase_add_loop_test(tc, rank_split_matches_step_by_step, 0, 2);
  tcase_add_loop_test(tc, gpu_form_verdicts, 0, (int)(sizeof gpu_verdicts / sizeof *gpu_verdicts));
  tcase_add_test(tc, column_decay);
  suite_add_tcase(suite, tc);
  SRunner *sr = srunner_create(suite);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
