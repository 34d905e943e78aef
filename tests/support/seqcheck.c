/* seqcheck.c - see seqcheck.h. */
#include "seqcheck.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void sc_problem_alloc(sc_problem *p, const frnn_step *step, frnn_sizes sz, rng *r,
                      sc_make_fn *make_input, sc_make_fn *make_state, void *user) {
  memset(p, 0, sizeof *p);
  p->step = step;
  p->sz = sz;
  p->ni = frnn_step_port_count(step, FRNN_PORT_INPUT);
  p->ns = frnn_step_port_count(step, FRNN_PORT_STATE);
  p->no = frnn_step_port_count(step, FRNN_PORT_OUTPUT);
  ck_assert_msg(p->ni <= SC_MAXP && p->ns <= SC_MAXP && p->no <= SC_MAXP,
                "a step with more than %d ports of a kind", SC_MAXP);
  for (int i = 0; i < p->ni; i++) {
    int c = frnn_step_port_class(step, FRNN_PORT_INPUT, i);
    int64_t shape[5] = {sz.B, sz.T, sz.H, (c & 1) ? sz.M : 1, (c & 2) ? sz.N : 1};
    make_input(user, i, shape, &p->in[i]);
    ck_assert_msg(p->in[i].buf && p->in[i].t.ndim == 5 && p->in[i].t.dtype.bits == 64,
                  "input %d: not a float64 tensor of 5 dimensions", i);
    tt_zeros(&p->gin[i], DT_F64, 5, p->in[i].t.shape);
  }
  for (int i = 0; i < p->ns; i++) {
    int c = frnn_step_port_class(step, FRNN_PORT_STATE, i);
    int64_t shape[4] = {sz.B, sz.H, (c & 1) ? sz.M : 1, (c & 2) ? sz.N : 1};
    make_state(user, i, shape, &p->st[i]);
    ck_assert_msg(p->st[i].buf && p->st[i].t.ndim == 4 && p->st[i].t.dtype.bits == 64,
                  "state %d: not a float64 tensor of 4 dimensions", i);
    tt_zeros(&p->fin[i], DT_F64, 4, shape);
    tt_random(&p->wfin[i], DT_F64, 4, shape, r, -1, 1);
    tt_zeros(&p->gst[i], DT_F64, 4, shape);
  }
  for (int i = 0; i < p->no; i++) {
    int c = frnn_step_port_class(step, FRNN_PORT_OUTPUT, i);
    int64_t shape[4] = {sz.B, sz.T, sz.H, sz.M};
    int nd = (c & 1) ? 4 : 3;
    tt_zeros(&p->out[i], DT_F64, nd, shape);
    tt_random(&p->wout[i], DT_F64, nd, shape, r, -1, 1);
  }
  for (int i = 0; i < SC_MAXP; i++) {
    p->in_p[i] = &p->in[i].t, p->st_p[i] = &p->st[i].t;
    p->wout_p[i] = &p->wout[i].t, p->wfin_p[i] = &p->wfin[i].t;
    p->out_p[i] = &p->out[i].t, p->fin_p[i] = &p->fin[i].t;
    p->gin_p[i] = &p->gin[i].t, p->gst_p[i] = &p->gst[i].t;
  }
}

void sc_problem_free(sc_problem *p) {
  for (int i = 0; i < SC_MAXP; i++) {
    tt_free(&p->in[i]), tt_free(&p->st[i]), tt_free(&p->out[i]), tt_free(&p->fin[i]);
    tt_free(&p->wout[i]), tt_free(&p->wfin[i]), tt_free(&p->gin[i]), tt_free(&p->gst[i]);
  }
}

static long double wdot(ttensor *w, ttensor *x) {
  long double s = 0;
  int64_t n = tt_numel(x);
  for (int64_t i = 0; i < n; i++) s += (long double)sc_data(w)[i] * sc_data(x)[i];
  return s;
}

double sc_loss(frnn_ctx *ctx, sc_problem *p) {
  frnn_status st =
      frnn_reference_forward(ctx, p->step, p->sz, p->in_p, p->st_p, p->out_p, p->fin_p);
  if (st != FRNN_OK) {
    p->forward_failed = true;
    snprintf(p->forward_msg, sizeof p->forward_msg, "%s", frnn_ctx_error(ctx));
    return NAN;
  }
  long double s = 0;
  for (int i = 0; i < p->no; i++) s += wdot(&p->wout[i], &p->out[i]);
  for (int i = 0; i < p->ns; i++) s += wdot(&p->wfin[i], &p->fin[i]);
  return (double)s;
}

double sc_central(frnn_ctx *ctx, sc_problem *p, double *x, double h, double l0, double *asym) {
  double x0 = *x, xp = x0 + h, xm = x0 - h;
  *x = xp;
  double lp = sc_loss(ctx, p);
  *x = xm;
  double lm = sc_loss(ctx, p);
  *x = x0;
  if (asym) *asym = fabs((lp - l0) / (xp - x0) - (l0 - lm) / (x0 - xm));
  return (lp - lm) / (xp - xm);
}
