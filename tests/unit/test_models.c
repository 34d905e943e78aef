/* test_models.c - the seed models of examples/ (SPEC section 5): each file
 * loads and finishes with the expected signature, and the gradients of the
 * whole sequence from frnn_reference_backward match central finite
 * differences of frnn_reference_forward, for every input and initial state.
 *
 * Loss: L = sum(Wy * outputs) + sum(WS * final states), W random, so the
 * backward gets grad_outputs = Wy and grad_final_states = WS.  All tensors
 * float64.  Each model runs at three sizes (B,T,H,M,N):
 *   (1,9,2,3,5)  every input full [B,T,H,m,n];
 *   (2,4,1,1,1)  every input full, M = N = 1;
 *   (2,5,3,2,4)  inputs in their natural broadcast shapes: per-head
 *                parameters [1,1,H,m,n], head-shared ones [B,T,1,m,n]
 *                (mamba's B and C); a model without any gets one per-head
 *                or batch-broadcast input, so every model checks that the
 *                gradient of a broadcast input is summed.
 * Inputs are drawn in ranges where the model is well conditioned (log decays
 * below 0, gates in (0,1), unit keys for the delta rules, positive
 * denominators for RWKV-4, |dA| < 1 for S4D).
 *
 * The largest relative error ||g - fd|| / ||fd|| of each model is printed;
 * the bound is 1e-6. */
#include "seqcheck.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXP 16
#define FD_EPS 1e-6
#define TOL 1e-6

enum gen { G_UNIFORM, G_UNIT_ROW };
/* Shape of an input in the broadcast case (the other two cases use full). */
enum bc { BC_FULL, BC_HEAD /* [1,1,H,m,n] */, BC_SHARED_H /* [B,T,1,m,n] */, BC_NO_B /* [1,T,H,m,n] */ };

typedef struct port_spec {
  const char *name;
  double lo, hi;
  int gen; /* enum gen */
  int bc;  /* enum bc */
} port_spec;

typedef struct model_spec {
  const char *file; /* under examples/ */
  int n_in, n_st, n_out;
  port_spec in[MAXP];
  port_spec st[MAXP];
} model_spec;

#define U(n, lo, hi) {n, lo, hi, G_UNIFORM, BC_FULL}
#define UB(n, lo, hi, bc) {n, lo, hi, G_UNIFORM, bc}
#define UNIT(n) {n, -1, 1, G_UNIT_ROW, BC_FULL}

static const model_spec models[] = {
    {"delta_rule.frnn", 4, 1, 1,
     {U("q", -1, 1), UNIT("k"), U("v", -1, 1), UB("beta", 0.1, 0.9, BC_HEAD)},
     {U("S", -1, 1)}},
    {"gated_delta_rule.frnn", 5, 1, 1,
     {U("q", -1, 1), UNIT("k"), U("v", -1, 1), UB("g", -1.0, -0.05, BC_HEAD),
      U("beta", 0.1, 0.9)},
     {U("S", -1, 1)}},
    {"rwkv7.frnn", 6, 1, 1,
     {U("r", -1, 1), UB("w", -1.5, -0.05, BC_HEAD), U("k", -1, 1), U("v", -1, 1),
      U("a", -0.5, 0.5), U("b", -0.5, 0.5)},
     {U("S", -1, 1)}},
    {"rwkv6.frnn", 5, 1, 1,
     {U("r", -1, 1), U("k", -1, 1), U("v", -1, 1), U("w", -1.5, -0.05),
      UB("u", -1, 1, BC_HEAD)},
     {U("S", -1, 1)}},
    {"gla.frnn", 4, 1, 1,
     {U("q", -1, 1), U("k", -1, 1), U("v", -1, 1), UB("g", -1.5, -0.05, BC_NO_B)},
     {U("S", -1, 1)}},
    {"retention.frnn", 4, 1, 1,
     {U("q", -1, 1), U("k", -1, 1), U("v", -1, 1), UB("gamma", 0.5, 0.99, BC_HEAD)},
     {U("S", -1, 1)}},
    {"hgrn.frnn", 2, 1, 1,
     {U("x", -1, 1), UB("g", -1.5, -0.05, BC_NO_B)},
     {U("s", -1, 1)}},
    {"rwkv4.frnn", 4, 3, 1,
     {UB("w", -1, 1, BC_HEAD), UB("u", -1, 1, BC_HEAD), U("k", -1, 1), U("v", -1, 1)},
     {U("alpha", -1, 1), U("beta", 0.5, 2), U("eps", -1, 1)}},
    {"gsa_keys.frnn", 4, 1, 1,
     {U("q", -1, 1), U("k", -1, 1), U("s", -1, 1), UB("g", -1.5, -0.05, BC_HEAD)},
     {U("Hk", -1, 1)}},
    {"gsa_values.frnn", 4, 1, 1,
     {U("qv", 0, 1), U("s", -1, 1), UB("g", -1.5, -0.05, BC_HEAD), U("v", -1, 1)},
     {U("Hv", -1, 1)}},
    {"mamba2.frnn", 7, 1, 1,
     {U("x", -1, 1), U("dt", -1, 1), UB("A", -2, -0.2, BC_HEAD), UB("B", -1, 1, BC_SHARED_H),
      UB("C", -1, 1, BC_SHARED_H), UB("D", -1, 1, BC_HEAD), UB("dt_bias", -1, 0.5, BC_HEAD)},
     {U("S", -1, 1)}},
    {"mamba.frnn", 8, 1, 1,
     {U("u", -1, 1), U("delta", -1, 1), UB("A", -2, -0.2, BC_HEAD),
      UB("B", -1, 1, BC_SHARED_H), UB("C", -1, 1, BC_SHARED_H), UB("D", -1, 1, BC_HEAD),
      U("z", -2, 2), UB("delta_bias", -1, 0.5, BC_HEAD)},
     {U("S", -1, 1)}},
    {"longhorn.frnn", 7, 1, 1,
     {U("u", -1, 1), UB("q", -1, 1, BC_SHARED_H), UB("k", -1, 1, BC_SHARED_H), U("dt", -2, 2),
      UB("D", -1, 1, BC_HEAD), UB("t_bias", -1, 1, BC_HEAD), U("z", -2, 2)},
     {U("S", -1, 1)}},
    {"s4d.frnn", 6, 2, 1,
     {U("u", -1, 1), UB("dA_re", -0.6, 0.6, BC_HEAD), UB("dA_im", -0.6, 0.6, BC_HEAD),
      UB("C_re", -1, 1, BC_HEAD), UB("C_im", -1, 1, BC_HEAD), UB("D", -1, 1, BC_HEAD)},
     {U("x_re", -1, 1), U("x_im", -1, 1)}},
    {"mlstm.frnn", 5, 3, 1,
     {U("q", -1, 1), U("k", -1, 1), U("v", -1, 1), U("i", -2, 2), UB("f", -1, 3, BC_HEAD)},
     {U("C", -1, 1), U("n", -1, 1), U("m", -1, 1)}},
};
#define N_MODELS ((int)(sizeof models / sizeof models[0]))

static const frnn_sizes cases[] = {{1, 9, 2, 3, 5}, {2, 4, 1, 1, 1}, {2, 5, 3, 2, 4}};
#define N_CASES 3
#define BCAST_CASE 2

static rng base_rng;

/* ------------------------------------------------------------ a problem */
/* Fill an input per its spec; unit rows are normalised over n. */
static void fill(ttensor *x, const port_spec *p, rng *r) {
  int64_t n = tt_numel(x);
  double *d = sc_data(x);
  for (int64_t i = 0; i < n; i++) d[i] = rng_uniform(r, p->lo, p->hi);
  if (p->gen == G_UNIT_ROW) {
    int64_t row = x->t.shape[x->t.ndim - 1];
    for (int64_t i = 0; i < n; i += row) {
      double s = 0;
      for (int64_t j = 0; j < row; j++) s += d[i + j] * d[i + j];
      s = sqrt(s);
      if (s < 1e-3) { /* (practically never) */
        d[i] = 1, s = 1;
        for (int64_t j = 1; j < row; j++) d[i + j] = 0;
      }
      for (int64_t j = 0; j < row; j++) d[i + j] /= s;
    }
  }
}

static const port_spec *find_spec(const port_spec *ps, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(ps[i].name, name) == 0) return &ps[i];
  return NULL;
}

/* What make_input and make_state need. */
typedef struct filler {
  const frnn_step *step;
  const model_spec *m;
  bool bcast; /* the broadcast case */
  rng *r;
} filler;

static void make_input(void *user, int i, const int64_t *full, ttensor *x) {
  filler *f = user;
  const char *name = frnn_step_port_name(f->step, FRNN_PORT_INPUT, i);
  const port_spec *ps = find_spec(f->m->in, f->m->n_in, name);
  ck_assert_msg(ps, "%s: input '%s' has no entry in the test's table", f->m->file, name);
  int bc = f->bcast ? ps->bc : BC_FULL;
  int64_t shape[5] = {full[0], full[1], full[2], full[3], full[4]};
  if (bc == BC_HEAD) shape[0] = shape[1] = 1;
  if (bc == BC_SHARED_H) shape[2] = 1;
  if (bc == BC_NO_B) shape[0] = 1;
  tt_zeros(x, DT_F64, 5, shape);
  fill(x, ps, f->r);
}

static void make_state(void *user, int i, const int64_t *shape, ttensor *x) {
  filler *f = user;
  const char *name = frnn_step_port_name(f->step, FRNN_PORT_STATE, i);
  const port_spec *ps = find_spec(f->m->st, f->m->n_st, name);
  ck_assert_msg(ps, "%s: state '%s' has no entry in the test's table", f->m->file, name);
  tt_zeros(x, DT_F64, 4, shape);
  fill(x, ps, f->r);
}

/* L, which must be computable. */
static double loss(frnn_ctx *ctx, sc_problem *p) {
  double l = sc_loss(ctx, p);
  ck_assert_msg(!p->forward_failed, "frnn_reference_forward: %s", frnn_ctx_error(ctx));
  return l;
}

/* Central differences of the loss in every element of x.  Where one
 * disagrees with the adjoint's gradient g, it is taken again with h / 8: a
 * kink or a jump within h of x (mLSTM's max and abs) gives a difference
 * that does not converge as h shrinks, or one-sided differences far apart.
 * Such an element takes the adjoint's value (it has no derivative to check
 * there); the count is returned, so a test can refuse too many.  A
 * difference that converges to another value stays: the test then fails. */
static int finite_diff(frnn_ctx *ctx, sc_problem *p, double l0, ttensor *x, ttensor *g, ttensor *fd) {
  int64_t n = tt_numel(x);
  double *d = sc_data(x);
  int kinks = 0;
  for (int64_t i = 0; i < n; i++) {
    double h = FD_EPS * fmax(1.0, fabs(d[i])), a = sc_data(g)[i], asym, asym8;
    double f = sc_central(ctx, p, &d[i], h, l0, &asym);
    ck_assert_msg(!p->forward_failed, "frnn_reference_forward: %s", p->forward_msg);
    if (fabs(a - f) > 1e-5 * fmax(fabs(a), fabs(f)) + 1e-9) {
      double f8 = sc_central(ctx, p, &d[i], h / 8, l0, &asym8);
      bool converges = fabs(f - f8) <= 1e-5 * fmax(fabs(f), fabs(f8)) + 1e-9;
      if (fabs(a - f8) <= 1e-5 * fmax(fabs(a), fabs(f8)) + 1e-9) {
        f = f8;
      } else if (!converges || asym > 0.1 * (1 + fabs(f)) || asym8 > 0.1 * (1 + fabs(f8))) {
        f = a;
        kinks++;
      }
    }
    sc_data(fd)[i] = f;
  }
  return kinks;
}

static double rel_err(ttensor *g, ttensor *fd) {
  double num = 0, den = 0;
  int64_t n = tt_numel(fd);
  for (int64_t i = 0; i < n; i++) {
    double a = sc_data(g)[i], b = sc_data(fd)[i];
    if (a != a) return INFINITY;
    num += (a - b) * (a - b);
    den += b * b;
  }
  /* A gradient that is zero everywhere (none here) is compared absolutely. */
  return den > 1e-24 ? sqrt(num / den) : sqrt(num);
}

/* --------------------------------------------------------------- tests */
START_TEST(test_model_gradients) {
  const model_spec *m = &models[_i];
  rng r = base_rng;
  r.s ^= 0x5851f42d4c957f2dull * (uint64_t)(_i + 1);
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  char rel[256];
  snprintf(rel, sizeof rel, "examples/%s", m->file);
  frnn_step *step = NULL;
  frnn_status st = frnn_step_load(ctx, test_source_path(rel), &step);
  ck_assert_msg(st == FRNN_OK, "%s does not load: %s", m->file, frnn_ctx_error(ctx));
  ck_assert_msg(frnn_step_hash(step) != 0, "%s: step not finished", m->file);
  ck_assert_int_eq(frnn_step_port_count(step, FRNN_PORT_INPUT), m->n_in);
  ck_assert_int_eq(frnn_step_port_count(step, FRNN_PORT_STATE), m->n_st);
  ck_assert_int_eq(frnn_step_port_count(step, FRNN_PORT_OUTPUT), m->n_out);

  double worst = 0;
  char worst_at[256] = "";
  for (int c = 0; c < N_CASES; c++) {
    sc_problem p;
    filler f = {step, m, c == BCAST_CASE, &r};
    sc_problem_alloc(&p, step, cases[c], &r, make_input, make_state, &f);
    double l0 = loss(ctx, &p);
    ck_assert_msg(isfinite(l0), "%s: loss is not finite", m->file);
    st = frnn_reference_backward(ctx, step, p.sz, p.in_p, p.st_p, p.wout_p, p.wfin_p, p.gin_p,
                                 p.gst_p);
    ck_assert_msg(st == FRNN_OK, "%s: frnn_reference_backward: %s", m->file,
                  frnn_ctx_error(ctx));
    for (int k = 0; k < 2; k++) {
      int n = k ? p.ns : p.ni;
      for (int i = 0; i < n; i++) {
        ttensor *x = k ? &p.st[i] : &p.in[i], *g = k ? &p.gst[i] : &p.gin[i];
        ttensor fd;
        tt_zeros(&fd, DT_F64, x->t.ndim, x->t.shape);
        int kinks = finite_diff(ctx, &p, l0, x, g, &fd);
        ck_assert_msg(kinks <= 1 + tt_numel(x) / 20, "%s: %d of %lld elements of '%s' sit on kinks", m->file, kinks,
                      (long long)tt_numel(x), frnn_step_port_name(step, k ? FRNN_PORT_STATE : FRNN_PORT_INPUT, i));
        double e = rel_err(g, &fd);
        const char *name = frnn_step_port_name(step, k ? FRNN_PORT_STATE : FRNN_PORT_INPUT, i);
        if (!(e <= worst)) {
          worst = e;
          snprintf(worst_at, sizeof worst_at, "%s %s, sizes (%lld,%lld,%lld,%lld,%lld)%s",
                   k ? "initial state" : "input", name, (long long)p.sz.B, (long long)p.sz.T,
                   (long long)p.sz.H, (long long)p.sz.M, (long long)p.sz.N,
                   c == BCAST_CASE ? " with broadcast inputs" : "");
        }
        ck_assert_msg(e < TOL,
                      "%s: gradient of %s '%s' at sizes (B,T,H,M,N) = (%lld,%lld,%lld,%lld,%lld)%s "
                      "is off: relative error %.3g against finite differences",
                      m->file, k ? "initial state" : "input", name, (long long)p.sz.B,
                      (long long)p.sz.T, (long long)p.sz.H, (long long)p.sz.M,
                      (long long)p.sz.N, c == BCAST_CASE ? " with broadcast inputs" : "", e);
        tt_free(&fd);
      }
    }
    sc_problem_free(&p);
  }
  printf("%-22s largest relative gradient error %.2e (%s)\n", m->file, worst, worst_at);
  fflush(stdout);
  frnn_step_destroy(step);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Every .frnn file of examples/ is in the table above, so a new example gets checked. */
START_TEST(test_every_example_listed) {
  char names[64][TEST_NAME_MAX];
  int n = test_examples(names, 64);
  for (int k = 0; k < n; k++) {
    char file[TEST_NAME_MAX + 8];
    snprintf(file, sizeof file, "%.*s.frnn", (int)TEST_NAME_MAX - 1, names[k]);
    bool found = false;
    for (int i = 0; i < N_MODELS; i++) found |= strcmp(models[i].file, file) == 0;
    ck_assert_msg(found, "examples/%s is not checked by test_models.c: add it to models[]", file);
  }
  ck_assert_int_eq(n, N_MODELS);
}
END_TEST

int main(void) {
  base_rng = test_rng("test_models");
  Suite *s = suite_create("models");
  TCase *tc = tcase_create("gradients");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_every_example_listed);
  tcase_add_loop_test(tc, test_model_gradients, 0, N_MODELS);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
