/* test_reference.c - the float64 reference executor against independent
 * hand-written loops (forward), central finite differences (backward), and
 * itself: broadcast, strided and expanded tensors give bitwise the results of
 * their contiguous expanded copies. */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXP 6  /* ports of each kind in these models */
#define MX 8    /* largest M or N in these tests */

static rng R;

/* --------------------------------------------------------------- builder */
static frnn_step *S_; /* the step being built by a model's body */

static frnn_value op1(frnn_op op, frnn_value a) {
  frnn_value out;
  ck_assert_int_eq(frnn_step_apply(S_, op, &a, 1, &out), FRNN_OK);
  return out;
}
static frnn_value op2(frnn_op op, frnn_value a, frnn_value b) {
  frnn_value args[2] = {a, b}, out;
  ck_assert_int_eq(frnn_step_apply(S_, op, args, 2, &out), FRNN_OK);
  return out;
}
static frnn_value op3(frnn_op op, frnn_value a, frnn_value b, frnn_value c) {
  frnn_value args[3] = {a, b, c}, out;
  ck_assert_int_eq(frnn_step_apply(S_, op, args, 3, &out), FRNN_OK);
  return out;
}
static frnn_value K(double v) {
  frnn_value out;
  ck_assert_int_eq(frnn_step_const(S_, v, &out), FRNN_OK);
  return out;
}
#define ADD(a, b) op2(FRNN_OP_ADD, a, b)
#define SUB(a, b) op2(FRNN_OP_SUB, a, b)
#define MUL(a, b) op2(FRNN_OP_MUL, a, b)
#define DIV(a, b) op2(FRNN_OP_DIV, a, b)
#define MAX(a, b) op2(FRNN_OP_MAX, a, b)
#define EXP(a) op1(FRNN_OP_EXP, a)
#define NEG(a) op1(FRNN_OP_NEG, a)
#define SUM(a) op1(FRNN_OP_SUM, a)
#define SUM_M(a) op1(FRNN_OP_SUM_M, a)
static void assign(const char *name, frnn_value v) {
  ck_assert_int_eq(frnn_step_assign(S_, name, v), FRNN_OK);
}
static void output(const char *name, frnn_class c, frnn_value v) {
  ck_assert_int_eq(frnn_step_output(S_, name, c, v), FRNN_OK);
}

/* ---------------------------------------------------------------- models */
/* Broadcast of an input over B, T, H (bits), as in its tensor's shape. */
enum { BB = 1, BT = 2, BH = 4 };

typedef struct pdesc {
  const char *name;
  frnn_class cls;
  int bc;        /* inputs: broadcast dims */
  double lo, hi; /* random values */
} pdesc;

typedef struct run run;
typedef struct model {
  const char *name;
  int nI, nS, nO;
  pdesc in[MAXP], st[MAXP], out[MAXP];
  /* Body: x = input values, s = state values (previous); assigns, binds. */
  void (*body)(const frnn_value *x, const frnn_value *s);
  /* Independent loops over t for one (b, h): expected outputs, final states. */
  void (*hand)(run *r, int64_t b, int64_t h);
  const char *text; /* the same step as text */
} model;

struct run {
  const model *m;
  frnn_sizes sz;
  int bc[MAXP];                                   /* of each input */
  ttensor in[MAXP], st[MAXP], out[MAXP], fin[MAXP];
  ttensor eout[MAXP], efin[MAXP];                 /* expected, float64 */
  ttensor gout[MAXP], gfin[MAXP], gin[MAXP], gst[MAXP]; /* float64 */
};

/* Hand-loop access: inputs with their broadcast, states, outputs. */
static double IN(const run *r, int k, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j) {
  const ttensor *x = &r->in[k];
  int64_t idx[5] = {x->shape[0] == 1 ? 0 : b, x->shape[1] == 1 ? 0 : t,
                    x->shape[2] == 1 ? 0 : h, i, j};
  return tt_get(x, idx);
}
static double ST0(const run *r, int k, int64_t b, int64_t h, int64_t i, int64_t j) {
  int64_t idx[4] = {b, h, i, j};
  return tt_get(&r->st[k], idx);
}
static void OUT(run *r, int k, int64_t b, int64_t t, int64_t h, int64_t i, double v) {
  int64_t idx[4] = {b, t, h, i};
  tt_set(&r->eout[k], idx, v);
}
static void FIN(run *r, int k, int64_t b, int64_t h, int64_t i, int64_t j, double v) {
  int64_t idx[4] = {b, h, i, j};
  tt_set(&r->efin[k], idx, v);
}

/* Delta rule: S += beta k (v - S k); y = S q. */
static void delta_body(const frnn_value *x, const frnn_value *s) {
  frnn_value q = x[0], k = x[1], v = x[2], beta = x[3], S = s[0];
  frnn_value S2 = ADD(S, MUL(MUL(beta, k), SUB(v, SUM(MUL(S, k)))));
  assign("S", S2);
  output("y", FRNN_COL, SUM(MUL(S2, q)));
}
static void delta_hand(run *r, int64_t b, int64_t h) {
  int64_t M = r->sz.M, N = r->sz.N;
  double S[MX][MX];
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) S[i][j] = ST0(r, 0, b, h, i, j);
  for (int64_t t = 0; t < r->sz.T; t++) {
    double beta = IN(r, 3, b, t, h, 0, 0);
    for (int64_t i = 0; i < M; i++) {
      double sk = 0;
      for (int64_t j = 0; j < N; j++) sk += S[i][j] * IN(r, 1, b, t, h, 0, j);
      double v = IN(r, 2, b, t, h, i, 0);
      for (int64_t j = 0; j < N; j++) S[i][j] += beta * IN(r, 1, b, t, h, 0, j) * (v - sk);
      double y = 0;
      for (int64_t j = 0; j < N; j++) y += S[i][j] * IN(r, 0, b, t, h, 0, j);
      OUT(r, 0, b, t, h, i, y);
    }
  }
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) FIN(r, 0, b, h, i, j, S[i][j]);
}
static const model DELTA = {
    "delta_rule", 4, 1, 1,
    {{"q", FRNN_ROW, 0, -1, 1}, {"k", FRNN_ROW, 0, -0.5, 0.5}, {"v", FRNN_COL, 0, -1, 1},
     {"beta", FRNN_SCALAR, 0, 0, 1}},
    {{"S", FRNN_MAT, 0, -1, 1}},
    {{"y", FRNN_COL, 0, 0, 0}},
    delta_body, delta_hand,
    "# Delta rule\n"
    "step delta_rule(q[1,N], k[1,N], v[M,1], beta[1,1]; S[M,N]) -> y[M,1]\n"
    "  S = S + beta * k * (v - sum(S * k))\n"
    "  y = sum(S * q)\n"};

/* GLA: S = S * exp(g) + v k; y = S q (g a row). */
static void gla_body(const frnn_value *x, const frnn_value *s) {
  frnn_value q = x[0], k = x[1], v = x[2], g = x[3], S = s[0];
  frnn_value S2 = ADD(MUL(S, EXP(g)), MUL(v, k));
  assign("S", S2);
  output("y", FRNN_COL, SUM(MUL(S2, q)));
}
static void gla_hand(run *r, int64_t b, int64_t h) {
  int64_t M = r->sz.M, N = r->sz.N;
  double S[MX][MX];
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) S[i][j] = ST0(r, 0, b, h, i, j);
  for (int64_t t = 0; t < r->sz.T; t++)
    for (int64_t i = 0; i < M; i++) {
      double y = 0;
      for (int64_t j = 0; j < N; j++) {
        S[i][j] = S[i][j] * exp(IN(r, 3, b, t, h, 0, j)) +
                  IN(r, 2, b, t, h, i, 0) * IN(r, 1, b, t, h, 0, j);
        y += S[i][j] * IN(r, 0, b, t, h, 0, j);
      }
      OUT(r, 0, b, t, h, i, y);
    }
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) FIN(r, 0, b, h, i, j, S[i][j]);
}
static const model GLA = {
    "gla", 4, 1, 1,
    {{"q", FRNN_ROW, 0, -1, 1}, {"k", FRNN_ROW, 0, -1, 1}, {"v", FRNN_COL, 0, -1, 1},
     {"g", FRNN_ROW, 0, -1, 0}},
    {{"S", FRNN_MAT, 0, -1, 1}},
    {{"y", FRNN_COL, 0, 0, 0}},
    gla_body, gla_hand,
    "step gla(q[1,N], k[1,N], v[M,1], g[1,N]; S[M,N]) -> y[M,1]\n"
    "  S = S * exp(g) + v * k\n"
    "  y = sum(S * q)\n"};

/* Mamba-2: S = exp(A dt) S + dt x b; y = S c; A per head, b and c shared
 * by the heads. */
static void mamba2_body(const frnn_value *x, const frnn_value *s) {
  frnn_value xx = x[0], dt = x[1], A = x[2], bb = x[3], c = x[4], S = s[0];
  frnn_value S2 = ADD(MUL(EXP(MUL(A, dt)), S), MUL(MUL(dt, xx), bb));
  assign("S", S2);
  output("y", FRNN_COL, SUM(MUL(S2, c)));
}
static void mamba2_hand(run *r, int64_t b, int64_t h) {
  int64_t M = r->sz.M, N = r->sz.N;
  double S[MX][MX];
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) S[i][j] = ST0(r, 0, b, h, i, j);
  for (int64_t t = 0; t < r->sz.T; t++) {
    double dt = IN(r, 1, b, t, h, 0, 0), A = IN(r, 2, b, t, h, 0, 0);
    for (int64_t i = 0; i < M; i++) {
      double y = 0;
      for (int64_t j = 0; j < N; j++) {
        S[i][j] = exp(A * dt) * S[i][j] + dt * IN(r, 0, b, t, h, i, 0) * IN(r, 3, b, t, h, 0, j);
        y += S[i][j] * IN(r, 4, b, t, h, 0, j);
      }
      OUT(r, 0, b, t, h, i, y);
    }
  }
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) FIN(r, 0, b, h, i, j, S[i][j]);
}
static const model MAMBA2 = {
    "mamba2", 5, 1, 1,
    {{"x", FRNN_COL, 0, -1, 1}, {"dt", FRNN_SCALAR, 0, 0.01, 0.5},
     {"A", FRNN_SCALAR, BB | BT, -2, -0.1}, {"b", FRNN_ROW, BH, -1, 1},
     {"c", FRNN_ROW, BH, -1, 1}},
    {{"S", FRNN_MAT, 0, -1, 1}},
    {{"y", FRNN_COL, 0, 0, 0}},
    mamba2_body, mamba2_hand,
    "step mamba2(x[M,1], dt[1,1], A[1,1], b[1,N], c[1,N]; S[M,N]) -> y[M,1]\n"
    "  S = exp(A * dt) * S + dt * x * b\n"
    "  y = sum(S * c)\n"};

/* RWKV-4: the numerically stable WKV of fla's fused_recurrent_rwkv4 (after
 * RWKV-LM's CUDA kernel), per channel: numerator a, denominator d, running
 * maximum p; w is the raw time decay (the decay is -exp(w)), u the bonus. */
static void rwkv4_body(const frnn_value *x, const frnn_value *s) {
  frnn_value k = x[0], v = x[1], w = x[2], u = x[3], a = s[0], d = s[1], p = s[2];
  frnn_value uk = ADD(u, k);
  frnn_value tau = MAX(p, uk);
  frnn_value e1 = EXP(SUB(p, tau)), e2 = EXP(SUB(uk, tau));
  output("y", FRNN_COL, DIV(ADD(MUL(e1, a), MUL(e2, v)), ADD(MUL(e1, d), e2)));
  frnn_value wp = ADD(NEG(EXP(w)), p);
  frnn_value p2 = MAX(wp, k);
  frnn_value f1 = EXP(SUB(wp, p2)), f2 = EXP(SUB(k, p2));
  assign("a", ADD(MUL(f1, a), MUL(f2, v)));
  assign("d", ADD(MUL(f1, d), f2));
  assign("p", p2);
}
static void rwkv4_hand(run *r, int64_t b, int64_t h) {
  for (int64_t c = 0; c < r->sz.M; c++) {
    double alpha = ST0(r, 0, b, h, c, 0), beta = ST0(r, 1, b, h, c, 0),
           eps = ST0(r, 2, b, h, c, 0);
    for (int64_t t = 0; t < r->sz.T; t++) {
      double kt = IN(r, 0, b, t, h, c, 0), vt = IN(r, 1, b, t, h, c, 0);
      double w = -exp(IN(r, 2, b, t, h, c, 0)), u = IN(r, 3, b, t, h, c, 0);
      double ukt = u + kt;
      double tau = ukt > eps ? ukt : eps;
      double e1a = exp(eps - tau), e2a = exp(ukt - tau);
      OUT(r, 0, b, t, h, c, (e1a * alpha + e2a * vt) / (e1a * beta + e2a));
      double w_eps = w + eps;
      eps = w_eps > kt ? w_eps : kt;
      double e1b = exp(w_eps - eps), e2b = exp(kt - eps);
      alpha = e1b * alpha + e2b * vt;
      beta = e1b * beta + e2b;
    }
    FIN(r, 0, b, h, c, 0, alpha);
    FIN(r, 1, b, h, c, 0, beta);
    FIN(r, 2, b, h, c, 0, eps);
  }
}
static const model RWKV4 = {
    "rwkv4", 4, 3, 1,
    {{"k", FRNN_COL, 0, -1, 1}, {"v", FRNN_COL, 0, -1, 1}, {"w", FRNN_COL, BB | BT, -1, 1},
     {"u", FRNN_COL, BB | BT, -1, 1}},
    {{"a", FRNN_COL, 0, -1, 1}, {"d", FRNN_COL, 0, 0.1, 1}, {"p", FRNN_COL, 0, -1, 1}},
    {{"y", FRNN_COL, 0, 0, 0}},
    rwkv4_body, rwkv4_hand,
    "step rwkv4(k[M,1], v[M,1], w[M,1], u[M,1]; a[M,1], d[M,1], p[M,1]) -> y[M,1]\n"
    "  uk = u + k\n"
    "  tau = max(p, uk)\n"
    "  e1 = exp(p - tau)\n"
    "  e2 = exp(uk - tau)\n"
    "  y = (e1 * a + e2 * v) / (e1 * d + e2)\n"
    "  wp = -exp(w) + p\n"
    "  p2 = max(wp, k)\n"
    "  f1 = exp(wp - p2)\n"
    "  f2 = exp(k - p2)\n"
    "  a = f1 * a + f2 * v\n"
    "  d = f1 * d + f2\n"
    "  p = p2\n"};

/* Every other class: a matrix input, row, scalar and column states, a [1,1]
 * output, sum over M, a scalar bound to a column state (broadcast), and the
 * piecewise ops. */
static void misc_body(const frnn_value *x, const frnn_value *s) {
  frnn_value X = x[0], z = x[1], r = s[0], c = s[1];
  frnn_value r2 = ADD(MUL(K(0.5), r), MUL(SUM_M(X), op1(FRNN_OP_SIGMOID, z)));
  frnn_value c2 = MAX(c, SUM(r2));
  frnn_value m2 = MUL(c2, z);
  assign("r", r2);
  assign("c", c2);
  assign("m", m2);
  output("o", FRNN_SCALAR,
         op3(FRNN_OP_WHERE, op2(FRNN_OP_GT, c2, K(0)),
             op2(FRNN_OP_POW, op1(FRNN_OP_ABS, c2), K(1.5)), op1(FRNN_OP_TANH, c2)));
  output("y", FRNN_COL, ADD(SUM(MUL(X, r2)), m2));
}
static void misc_hand(run *rn, int64_t b, int64_t h) {
  int64_t M = rn->sz.M, N = rn->sz.N;
  double r[MX], c = ST0(rn, 1, b, h, 0, 0), m[MX];
  for (int64_t j = 0; j < N; j++) r[j] = ST0(rn, 0, b, h, 0, j);
  for (int64_t i = 0; i < M; i++) m[i] = ST0(rn, 2, b, h, i, 0);
  for (int64_t t = 0; t < rn->sz.T; t++) {
    double z = IN(rn, 1, b, t, h, 0, 0), sig = 1 / (1 + exp(-z)), sr = 0;
    for (int64_t j = 0; j < N; j++) {
      double col = 0;
      for (int64_t i = 0; i < M; i++) col += IN(rn, 0, b, t, h, i, j);
      r[j] = 0.5 * r[j] + col * sig;
      sr += r[j];
    }
    c = c > sr ? c : sr;
    OUT(rn, 0, b, t, h, 0, c > 0 ? pow(fabs(c), 1.5) : tanh(c));
    for (int64_t i = 0; i < M; i++) {
      m[i] = c * z;
      double y = 0;
      for (int64_t j = 0; j < N; j++) y += IN(rn, 0, b, t, h, i, j) * r[j];
      OUT(rn, 1, b, t, h, i, y + m[i]);
    }
  }
  for (int64_t j = 0; j < N; j++) FIN(rn, 0, b, h, 0, j, r[j]);
  FIN(rn, 1, b, h, 0, 0, c);
  for (int64_t i = 0; i < M; i++) FIN(rn, 2, b, h, i, 0, m[i]);
}
static const model MISC = {
    "misc", 2, 3, 2,
    {{"X", FRNN_MAT, 0, -1, 1}, {"z", FRNN_SCALAR, 0, -2, 2}},
    {{"r", FRNN_ROW, 0, -1, 1}, {"c", FRNN_SCALAR, 0, -1, 1}, {"m", FRNN_COL, 0, -1, 1}},
    {{"o", FRNN_SCALAR, 0, 0, 0}, {"y", FRNN_COL, 0, 0, 0}},
    misc_body, misc_hand, NULL};

static const model *const MODELS[] = {&DELTA, &GLA, &MAMBA2, &RWKV4, &MISC};
#define N_MODELS (int)(sizeof MODELS / sizeof *MODELS)

static frnn_step *build(frnn_ctx *ctx, const model *m) {
  frnn_value x[MAXP], s[MAXP];
  ck_assert_int_eq(frnn_step_create(ctx, m->name, &S_), FRNN_OK);
  for (int k = 0; k < m->nI; k++)
    ck_assert_int_eq(frnn_step_input(S_, m->in[k].name, m->in[k].cls, &x[k]), FRNN_OK);
  for (int k = 0; k < m->nS; k++)
    ck_assert_int_eq(frnn_step_state(S_, m->st[k].name, m->st[k].cls, &s[k]), FRNN_OK);
  m->body(x, s);
  ck_assert_msg(frnn_step_finish(S_) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  frnn_step *out = S_;
  S_ = NULL;
  return out;
}

/* ------------------------------------------------------------------ runs */
static const frnn_sizes SIZES[] = {
    {.B = 1, .T = 9, .H = 1, .M = 3, .N = 5},
    {.B = 1, .T = 9, .H = 1, .M = 1, .N = 1},
    {.B = 2, .T = 4, .H = 3, .M = 3, .N = 5},
    {.B = 2, .T = 3, .H = 3, .M = 4, .N = 2},
};
#define N_SIZES (int)(sizeof SIZES / sizeof *SIZES)

static void in_shape(const run *r, int k, int64_t *shape) {
  const pdesc *p = &r->m->in[k];
  shape[0] = r->bc[k] & BB ? 1 : r->sz.B;
  shape[1] = r->bc[k] & BT ? 1 : r->sz.T;
  shape[2] = r->bc[k] & BH ? 1 : r->sz.H;
  shape[3] = CLASS_HAS_M(p->cls) ? r->sz.M : 1;
  shape[4] = CLASS_HAS_N(p->cls) ? r->sz.N : 1;
}
static void st_shape(const run *r, int k, int64_t *shape) {
  shape[0] = r->sz.B, shape[1] = r->sz.H;
  shape[2] = CLASS_HAS_M(r->m->st[k].cls) ? r->sz.M : 1;
  shape[3] = CLASS_HAS_N(r->m->st[k].cls) ? r->sz.N : 1;
}
/* Outputs of class [1,1] are [B,T,H]; [M,1] ones [B,T,H,M]. */
static int out_shape(const run *r, int k, int64_t *shape) {
  shape[0] = r->sz.B, shape[1] = r->sz.T, shape[2] = r->sz.H, shape[3] = r->sz.M;
  return CLASS_HAS_M(r->m->out[k].cls) ? 4 : 3;
}

/* Random inputs and states; tensor n (inputs, then states, then outputs,
 * then final states) in dtype dts[n % n_dts].  bc: broadcast of each input
 * (NULL: the model's). */
static void run_init(run *r, const model *m, frnn_sizes sz, const DLDataType *dts, int n_dts,
                     const int *bc) {
  memset(r, 0, sizeof *r);
  r->m = m;
  r->sz = sz;
  int n = 0;
  int64_t shape[5];
  for (int k = 0; k < m->nI; k++) {
    r->bc[k] = bc ? bc[k] : m->in[k].bc;
    in_shape(r, k, shape);
    tt_random(&r->in[k], dts[n++ % n_dts], 5, shape, &R, m->in[k].lo, m->in[k].hi);
    tt_zeros(&r->gin[k], DT_F64, 5, shape);
  }
  for (int k = 0; k < m->nS; k++) {
    st_shape(r, k, shape);
    tt_random(&r->st[k], dts[n++ % n_dts], 4, shape, &R, m->st[k].lo, m->st[k].hi);
    tt_random(&r->gfin[k], DT_F64, 4, shape, &R, -1, 1);
    tt_zeros(&r->gst[k], DT_F64, 4, shape);
  }
  for (int k = 0; k < m->nO; k++) {
    int nd = out_shape(r, k, shape);
    tt_zeros(&r->out[k], dts[n++ % n_dts], nd, shape);
    tt_zeros(&r->eout[k], DT_F64, nd, shape);
    tt_random(&r->gout[k], DT_F64, nd, shape, &R, -1, 1);
  }
  for (int k = 0; k < m->nS; k++) {
    st_shape(r, k, shape);
    tt_zeros(&r->fin[k], dts[n++ % n_dts], 4, shape);
    tt_zeros(&r->efin[k], DT_F64, 4, shape);
  }
}

static void run_free(run *r) {
  for (int k = 0; k < MAXP; k++) {
    ttensor *all[] = {&r->in[k], &r->st[k], &r->out[k], &r->fin[k], &r->eout[k],
                      &r->efin[k], &r->gout[k], &r->gfin[k], &r->gin[k], &r->gst[k]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) tt_free(all[i]);
  }
}

static void hand(run *r) {
  for (int64_t b = 0; b < r->sz.B; b++)
    for (int64_t h = 0; h < r->sz.H; h++) r->m->hand(r, b, h);
}

static frnn_status fwd(frnn_ctx *ctx, const frnn_step *s, run *r) {
  const DLTensor *in[MAXP], *st[MAXP];
  DLTensor *out[MAXP], *fin[MAXP];
  for (int k = 0; k < MAXP; k++) {
    in[k] = &r->in[k].t, st[k] = &r->st[k].t;
    out[k] = &r->out[k].t, fin[k] = &r->fin[k].t;
  }
  return frnn_reference_forward(ctx, s, r->sz, in, st, out, fin);
}

static frnn_status bwd(frnn_ctx *ctx, const frnn_step *s, run *r) {
  const DLTensor *in[MAXP], *st[MAXP], *gout[MAXP], *gfin[MAXP];
  DLTensor *gin[MAXP], *gst[MAXP];
  for (int k = 0; k < MAXP; k++) {
    in[k] = &r->in[k].t, st[k] = &r->st[k].t;
    gout[k] = &r->gout[k].t, gfin[k] = &r->gfin[k].t;
    gin[k] = &r->gin[k].t, gst[k] = &r->gst[k].t;
  }
  return frnn_reference_backward(ctx, s, r->sz, in, st, gout, gfin, gin, gst);
}

#define OK(ctx, call)                                                                           \
  do {                                                                                          \
    frnn_status st_ = (call);                                                                   \
    ck_assert_msg(st_ == FRNN_OK, "%s: %s: %s", #call, frnn_status_name(st_),                  \
                  frnn_ctx_error(ctx));                                                         \
  } while (0)

/* Visit every multi-index of a shape. */
static bool next_index(int nd, const int64_t *shape, int64_t *idx) {
  for (int d = nd - 1; d >= 0; d--) {
    if (++idx[d] < shape[d]) return true;
    idx[d] = 0;
  }
  return false;
}

/* Same values, bit for bit (the tensors may differ in layout). */
static bool same_bits(const ttensor *a, const ttensor *b, const char *what) {
  ck_assert_int_eq(a->t.ndim, b->t.ndim);
  int64_t idx[8] = {0};
  do {
    double x = tt_get(a, idx), y = tt_get(b, idx);
    if (memcmp(&x, &y, sizeof x) != 0) {
      fprintf(stderr, "%s differs at [%lld,%lld,%lld,%lld,%lld]: %a vs %a\n", what,
              (long long)idx[0], (long long)idx[1], (long long)idx[2], (long long)idx[3],
              (long long)idx[4], x, y);
      return false;
    }
  } while (next_index(a->t.ndim, a->t.shape, idx));
  return true;
}

static double tol(DLDataType dt) {
  if (dt.code == kDLBfloat) return 1e-2;
  if (dt.bits == 16) return 2e-3;
  if (dt.bits == 32) return 1e-6;
  return 1e-12;
}

/* --------------------------------------------------- forward vs hand loops */
static void check_forward(const model *m, frnn_sizes sz, const DLDataType *dts, int n_dts) {
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, m);
  run r;
  run_init(&r, m, sz, dts, n_dts, NULL);
  OK(ctx, fwd(ctx, s, &r));
  hand(&r);
  for (int k = 0; k < m->nO; k++) {
    double e = tt_rel_err(&r.out[k], &r.eout[k]);
    ck_assert_msg(e < tol(r.out[k].t.dtype), "%s B%lld T%lld H%lld M%lld N%lld: output '%s' "
                                             "rel err %g",
                  m->name, (long long)sz.B, (long long)sz.T, (long long)sz.H, (long long)sz.M,
                  (long long)sz.N, m->out[k].name, e);
  }
  for (int k = 0; k < m->nS; k++) {
    double e = tt_rel_err(&r.fin[k], &r.efin[k]);
    ck_assert_msg(e < tol(r.fin[k].t.dtype), "%s: final state '%s' rel err %g", m->name,
                  m->st[k].name, e);
  }
  run_free(&r);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}

START_TEST(forward_float64) {
  const model *m = MODELS[_i];
  for (int z = 0; z < N_SIZES; z++) check_forward(m, SIZES[z], &DT_F64, 1);
}
END_TEST

START_TEST(forward_low_precision) {
  const model *m = MODELS[_i];
  const DLDataType all[4] = {DT_F32, DT_BF16, DT_F16, DT_F64};
  for (int z = 0; z < N_SIZES; z++) {
    check_forward(m, SIZES[z], &DT_F32, 1);
    check_forward(m, SIZES[z], &DT_BF16, 1);
    check_forward(m, SIZES[z], &DT_F16, 1);
    check_forward(m, SIZES[z], all, 4); /* every tensor its own dtype */
    check_forward(m, SIZES[z], all + 1, 3);
  }
}
END_TEST

/* ------------------------------------------ backward vs finite differences */
static double loss(const run *r) {
  double L = 0;
  const ttensor *pairs[2 * 2 * MAXP];
  int n = 0;
  for (int k = 0; k < r->m->nO; k++) pairs[n++] = &r->out[k], pairs[n++] = &r->gout[k];
  for (int k = 0; k < r->m->nS; k++) pairs[n++] = &r->fin[k], pairs[n++] = &r->gfin[k];
  for (int p = 0; p < n; p += 2) {
    int64_t idx[8] = {0};
    do L += tt_get(pairs[p], idx) * tt_get(pairs[p + 1], idx);
    while (next_index(pairs[p]->t.ndim, pairs[p]->t.shape, idx));
  }
  return L;
}

/* Central differences of the loss over every element of x (float64). */
static void check_fd(frnn_ctx *ctx, const frnn_step *s, run *r, ttensor *x, const ttensor *g,
                     const char *what) {
  const double eps = 1e-6;
  double *v = x->buf;
  const double *gv = g->buf;
  int64_t n = tt_numel(x);
  double num = 0, den = 0;
  for (int64_t e = 0; e < n; e++) {
    double keep = v[e];
    v[e] = keep + eps;
    OK(ctx, fwd(ctx, s, r));
    double lp = loss(r);
    v[e] = keep - eps;
    OK(ctx, fwd(ctx, s, r));
    double lm = loss(r);
    v[e] = keep;
    double fd = (lp - lm) / (2 * eps);
    num += (fd - gv[e]) * (fd - gv[e]);
    den += fd * fd;
  }
  ck_assert_msg(sqrt(num) <= 1e-6 * sqrt(den) + 1e-8,
                "%s B%lld T%lld H%lld M%lld N%lld: gradient of %s: |g - fd| = %g, |fd| = %g",
                r->m->name, (long long)r->sz.B, (long long)r->sz.T, (long long)r->sz.H,
                (long long)r->sz.M, (long long)r->sz.N, what, sqrt(num), sqrt(den));
}

START_TEST(backward_finite_differences) {
  const model *m = MODELS[_i];
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, m);
  for (int z = 0; z < N_SIZES; z++) {
    run r;
    run_init(&r, m, SIZES[z], &DT_F64, 1, NULL);
    OK(ctx, bwd(ctx, s, &r));
    char what[96];
    for (int k = 0; k < m->nI; k++) {
      snprintf(what, sizeof what, "input '%s'", m->in[k].name);
      check_fd(ctx, s, &r, &r.in[k], &r.gin[k], what);
    }
    for (int k = 0; k < m->nS; k++) {
      snprintf(what, sizeof what, "initial state '%s'", m->st[k].name);
      check_fd(ctx, s, &r, &r.st[k], &r.gst[k], what);
    }
    run_free(&r);
  }
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Missing gradients in are zero; missing gradients out are not computed and
 * change nothing else. */
START_TEST(backward_null_means_zero) {
  const model *m = MODELS[_i];
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, m);
  run a, b;
  run_init(&a, m, SIZES[2], &DT_F64, 1, NULL);
  run_init(&b, m, SIZES[2], &DT_F64, 1, NULL);
  for (int k = 0; k < m->nI; k++) memcpy(b.in[k].buf, a.in[k].buf, a.in[k].size);
  for (int k = 0; k < m->nS; k++) {
    memcpy(b.st[k].buf, a.st[k].buf, a.st[k].size);
    memset(a.gfin[k].buf, 0, a.gfin[k].size); /* a: zeros; b: NULL */
  }
  for (int k = 0; k < m->nO; k++) memcpy(b.gout[k].buf, a.gout[k].buf, a.gout[k].size);
  OK(ctx, bwd(ctx, s, &a));

  const DLTensor *in[MAXP], *st[MAXP], *gout[MAXP];
  DLTensor *gin[MAXP], *gst[MAXP];
  for (int k = 0; k < MAXP; k++) {
    in[k] = &b.in[k].t, st[k] = &b.st[k].t, gout[k] = &b.gout[k].t;
    gin[k] = k == 0 ? NULL : &b.gin[k].t; /* the first input's gradient is not wanted */
    gst[k] = &b.gst[k].t;
  }
  OK(ctx, frnn_reference_backward(ctx, s, b.sz, in, st, gout, NULL, gin, gst));
  for (int k = 1; k < m->nI; k++) ck_assert(same_bits(&a.gin[k], &b.gin[k], "grad input"));
  for (int k = 0; k < m->nS; k++) ck_assert(same_bits(&a.gst[k], &b.gst[k], "grad state"));
  for (int64_t e = 0; e < tt_numel(&b.gin[0]); e++) ck_assert(((double *)b.gin[0].buf)[e] == 0);

  /* All outputs' gradients NULL, and the last one's entry NULL: zeros. */
  for (int k = 0; k < m->nO; k++) memset(a.gout[k].buf, 0, a.gout[k].size);
  OK(ctx, bwd(ctx, s, &a));
  OK(ctx, frnn_reference_backward(ctx, s, b.sz, in, st, NULL, NULL, gin, gst));
  for (int k = 1; k < m->nI; k++) ck_assert(same_bits(&a.gin[k], &b.gin[k], "grad input"));
  gout[m->nO - 1] = NULL;
  const DLTensor *gfin[MAXP] = {NULL};
  OK(ctx, frnn_reference_backward(ctx, s, b.sz, in, st, gout, gfin, gin, gst));
  run_free(&a);
  run_free(&b);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* Gradients stored in lower precision are the float64 ones, rounded. */
START_TEST(backward_low_precision_gradients) {
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, &DELTA);
  run a;
  run_init(&a, &DELTA, SIZES[2], &DT_F64, 1, NULL);
  OK(ctx, bwd(ctx, s, &a));
  const DLDataType dts[3] = {DT_BF16, DT_F16, DT_F32};
  for (int d = 0; d < 3; d++) {
    ttensor gin[MAXP], gst[1];
    const DLTensor *in[MAXP], *st[1] = {&a.st[0].t}, *gout[1] = {&a.gout[0].t},
                              *gfin[1] = {&a.gfin[0].t};
    DLTensor *ginp[MAXP], *gstp[1];
    for (int k = 0; k < 4; k++) {
      tt_zeros(&gin[k], dts[d], 5, a.in[k].shape);
      in[k] = &a.in[k].t, ginp[k] = &gin[k].t;
    }
    tt_zeros(&gst[0], dts[d], 4, a.st[0].shape);
    gstp[0] = &gst[0].t;
    OK(ctx, frnn_reference_backward(ctx, s, a.sz, in, st, gout, gfin, ginp, gstp));
    for (int k = 0; k < 4; k++) {
      ck_assert(tt_rel_err(&gin[k], &a.gin[k]) < tol(dts[d]));
      tt_free(&gin[k]);
    }
    ck_assert(tt_rel_err(&gst[0], &a.gst[0]) < tol(dts[d]));
    tt_free(&gst[0]);
  }
  run_free(&a);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------- layouts: bitwise the same */
/* Contiguous copy of x expanded to `shape` (x's dims of size 1 broadcast). */
static void tt_expand_copy(ttensor *y, const ttensor *x, const int64_t *shape) {
  int nd = x->t.ndim;
  tt_zeros(y, x->t.dtype, nd, shape);
  int64_t idx[8] = {0}, src[8];
  do {
    for (int d = 0; d < nd; d++) src[d] = x->shape[d] == 1 ? 0 : idx[d];
    tt_set(y, idx, tt_get(x, src));
  } while (next_index(nd, shape, idx));
}

/* A view of `shape` over a copy of x's buffer: x's dims of size 1 get
 * stride 0 (expanded, as torch.expand). */
static void tt_expand_view(ttensor *y, const ttensor *x, const int64_t *shape) {
  *y = *x;
  y->buf = malloc(x->size);
  ck_assert_ptr_nonnull(y->buf);
  memcpy(y->buf, x->buf, x->size);
  y->t.data = y->buf;
  y->t.shape = y->shape;
  y->t.strides = y->strides;
  for (int d = 0; d < x->t.ndim; d++) {
    y->shape[d] = shape[d];
    y->strides[d] = x->shape[d] == 1 && shape[d] > 1 ? 0 : x->strides[d];
  }
}

/* A copy of x with dimension perm[0] outermost ... perm[nd-1] innermost,
 * each padded by `pad` elements, starting `off` elements into its buffer
 * (byte_offset). */
static void tt_relayout(ttensor *y, const ttensor *x, const int *perm, int pad, int off) {
  int nd = x->t.ndim;
  size_t esize = x->t.dtype.bits / 8u;
  *y = *x;
  int64_t run = 1;
  for (int p = nd - 1; p >= 0; p--) {
    y->strides[perm[p]] = run;
    run *= x->shape[perm[p]] + pad;
  }
  y->size = (size_t)(run + off) * esize;
  y->buf = calloc(1, y->size);
  ck_assert_ptr_nonnull(y->buf);
  y->t.data = y->buf;
  y->t.byte_offset = (uint64_t)off * esize;
  y->t.shape = y->shape;
  y->t.strides = y->strides;
  int64_t idx[8] = {0};
  do tt_set(y, idx, tt_get(x, idx));
  while (next_index(nd, x->shape, idx));
}

/* A run of the same model and values whose inputs are the contiguous
 * expansions of a's (broadcast) inputs. */
static void run_expanded(run *e, const run *a) {
  static const int none[MAXP] = {0};
  run_init(e, a->m, a->sz, &DT_F64, 1, none);
  for (int k = 0; k < a->m->nI; k++) {
    int64_t shape[5];
    in_shape(e, k, shape);
    tt_free(&e->in[k]);
    tt_expand_copy(&e->in[k], &a->in[k], shape);
  }
  for (int k = 0; k < a->m->nS; k++) {
    memcpy(e->st[k].buf, a->st[k].buf, a->st[k].size);
    memcpy(e->gfin[k].buf, a->gfin[k].buf, a->gfin[k].size);
  }
  for (int k = 0; k < a->m->nO; k++) memcpy(e->gout[k].buf, a->gout[k].buf, a->gout[k].size);
}

/* The gradient of a broadcast input: its expansion's gradient summed over
 * the broadcast dims in the executor's order (b, then h, then t from T-1
 * down to 0), from 0. */
static void sum_in_executor_order(ttensor *y, const ttensor *full, frnn_sizes sz) {
  memset(y->buf, 0, y->size);
  for (int64_t b = 0; b < sz.B; b++)
    for (int64_t h = 0; h < sz.H; h++)
      for (int64_t t = sz.T - 1; t >= 0; t--)
        for (int64_t i = 0; i < full->shape[3]; i++)
          for (int64_t j = 0; j < full->shape[4]; j++) {
            int64_t src[5] = {b, t, h, i, j};
            int64_t dst[5] = {y->shape[0] == 1 ? 0 : b, y->shape[1] == 1 ? 0 : t,
                              y->shape[2] == 1 ? 0 : h, i, j};
            tt_set(y, dst, tt_get(y, dst) + tt_get(full, src));
          }
}

static void check_broadcast(const model *m, const int *bc) {
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, m);
  run a, e;
  run_init(&a, m, SIZES[2], &DT_F64, 1, bc);
  run_expanded(&e, &a);
  OK(ctx, fwd(ctx, s, &a));
  OK(ctx, fwd(ctx, s, &e));
  OK(ctx, bwd(ctx, s, &a));
  OK(ctx, bwd(ctx, s, &e));
  for (int k = 0; k < m->nO; k++) ck_assert(same_bits(&a.out[k], &e.out[k], "output"));
  for (int k = 0; k < m->nS; k++) {
    ck_assert(same_bits(&a.fin[k], &e.fin[k], "final state"));
    ck_assert(same_bits(&a.gst[k], &e.gst[k], "gradient of initial state"));
  }
  for (int k = 0; k < m->nI; k++) {
    ttensor want;
    tt_zeros(&want, DT_F64, 5, a.in[k].shape);
    sum_in_executor_order(&want, &e.gin[k], a.sz);
    ck_assert_msg(same_bits(&a.gin[k], &want, m->in[k].name), "%s: gradient of input '%s'",
                  m->name, m->in[k].name);
    tt_free(&want);
  }
  run_free(&a);
  run_free(&e);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}

START_TEST(broadcast_inputs_bitwise) {
  check_broadcast(&MAMBA2, NULL); /* A [1,1,H,1,1]; b, c [B,T,1,1,N] */
  check_broadcast(&MAMBA2, (const int[]){BT, BB | BH, BB | BT | BH, 0, BT});
  check_broadcast(&GLA, (const int[]){BT, BB | BH, 0, BB | BT});    /* [B,1,H,..], [1,T,1,..] */
  check_broadcast(&DELTA, (const int[]){0, BT, BB | BT | BH, BB | BT});
  check_broadcast(&RWKV4, NULL);
  check_broadcast(&MISC, (const int[]){BB | BT, BH});
}
END_TEST

/* Every tensor non-contiguous (permuted, padded, offset) or expanded with
 * stride 0: bitwise the results of the contiguous run. */
START_TEST(strided_views_bitwise) {
  const model *m = MODELS[_i];
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, m);
  /* a: contiguous inputs, some of them constant along a dimension (so that
   * a stride-0 view of them exists); v: the same in other layouts. */
  run a, v;
  run_init(&a, m, SIZES[2], &DT_F64, 1, NULL);
  run_init(&v, m, SIZES[2], &DT_F64, 1, NULL);
  static const int perm5[5] = {4, 2, 0, 3, 1}, perm4[4] = {3, 1, 2, 0}, perm3[3] = {2, 0, 1};
  for (int k = 0; k < m->nI; k++) {
    tt_free(&v.in[k]);
    if (k % 2 == 0) {
      tt_relayout(&v.in[k], &a.in[k], perm5, 1 + k, 3);
    } else {
      /* a's input k made constant over T (and B when not broadcast): its
       * values taken at t = 0, then v sees it through stride 0. */
      int64_t small[5], full[5];
      memcpy(full, a.in[k].shape, sizeof full);
      memcpy(small, full, sizeof small);
      small[1] = 1;
      ttensor x, y;
      tt_zeros(&x, DT_F64, 5, small);
      int64_t idx[8] = {0};
      do tt_set(&x, idx, tt_get(&a.in[k], idx));
      while (next_index(5, small, idx));
      tt_expand_view(&v.in[k], &x, full);
      tt_expand_copy(&y, &x, full);
      tt_free(&a.in[k]);
      a.in[k] = y;
      a.in[k].t.shape = a.in[k].shape, a.in[k].t.strides = a.in[k].strides;
      tt_free(&x);
      if (full[1] > 1) ck_assert_int_eq(v.in[k].strides[1], 0);
    }
    tt_free(&v.gin[k]);
    tt_relayout(&v.gin[k], &a.gin[k], perm5, 2, 1);
  }
  for (int k = 0; k < m->nS; k++) {
    ttensor *pairs[4][2] = {{&v.st[k], &a.st[k]}, {&v.fin[k], &a.fin[k]},
                            {&v.gfin[k], &a.gfin[k]}, {&v.gst[k], &a.gst[k]}};
    for (int p = 0; p < 4; p++) {
      tt_free(pairs[p][0]);
      tt_relayout(pairs[p][0], pairs[p][1], perm4, p, 2 * p);
    }
  }
  for (int k = 0; k < m->nO; k++) {
    const int *perm = a.out[k].t.ndim == 4 ? perm4 : perm3;
    tt_free(&v.out[k]);
    tt_relayout(&v.out[k], &a.out[k], perm, 1, 5);
    tt_free(&v.gout[k]);
    tt_relayout(&v.gout[k], &a.gout[k], perm, 2, 0);
  }
  OK(ctx, fwd(ctx, s, &a));
  OK(ctx, fwd(ctx, s, &v));
  OK(ctx, bwd(ctx, s, &a));
  OK(ctx, bwd(ctx, s, &v));
  for (int k = 0; k < m->nO; k++) ck_assert(same_bits(&v.out[k], &a.out[k], "output"));
  for (int k = 0; k < m->nS; k++) {
    ck_assert(same_bits(&v.fin[k], &a.fin[k], "final state"));
    ck_assert(same_bits(&v.gst[k], &a.gst[k], "gradient of initial state"));
  }
  for (int k = 0; k < m->nI; k++) ck_assert(same_bits(&v.gin[k], &a.gin[k], "gradient of input"));
  run_free(&a);
  run_free(&v);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* The final states may be written over the initial ones (in place), and
 * the gradients of the initial states over those of the final states. */
START_TEST(in_place_states) {
  const model *m = MODELS[_i];
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, m);
  run a;
  run_init(&a, m, SIZES[2], &DT_F64, 1, NULL);
  OK(ctx, bwd(ctx, s, &a));
  OK(ctx, fwd(ctx, s, &a));
  ttensor st0[MAXP], gfin0[MAXP];
  const DLTensor *in[MAXP], *st[MAXP], *gout[MAXP], *gfin[MAXP];
  DLTensor *out[MAXP], *fin[MAXP], *gin[MAXP], *gst[MAXP];
  for (int k = 0; k < m->nS; k++) {
    tt_expand_copy(&st0[k], &a.st[k], a.st[k].shape);
    tt_expand_copy(&gfin0[k], &a.gfin[k], a.gfin[k].shape);
  }
  for (int k = 0; k < MAXP; k++) {
    in[k] = &a.in[k].t, out[k] = &a.out[k].t, gout[k] = &a.gout[k].t, gin[k] = NULL;
    st[k] = &st0[k].t, fin[k] = &st0[k].t;     /* in place */
    gfin[k] = &gfin0[k].t, gst[k] = &gfin0[k].t; /* in place */
  }
  OK(ctx, frnn_reference_backward(ctx, s, a.sz, in, st, gout, gfin, gin, gst));
  for (int k = 0; k < m->nS; k++) ck_assert(same_bits(&gfin0[k], &a.gst[k], "in-place grad"));
  OK(ctx, frnn_reference_forward(ctx, s, a.sz, in, st, out, fin));
  for (int k = 0; k < m->nS; k++) {
    ck_assert(same_bits(&st0[k], &a.fin[k], "in-place state"));
    tt_free(&st0[k]);
    tt_free(&gfin0[k]);
  }
  run_free(&a);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------- the evaluator */
/* One step of the adjoint, evaluated directly, against finite differences
 * of one step of the forward: eval_* works for internal steps too. */
START_TEST(eval_adjoint_step) {
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, &MISC), *adj;
  ck_assert_int_eq(frnn_step_adjoint(s, &adj), FRNN_OK);
  const int64_t M = 3, N = 4;
  step_eval f, a;
  ck_assert_int_eq(eval_init(ctx, &f, s, M, N), FRNN_OK);
  ck_assert_int_eq(eval_init(ctx, &a, adj, M, N), FRNN_OK);
  int nI = frnn_step_port_count(s, FRNN_PORT_INPUT), nS = frnn_step_port_count(s, FRNN_PORT_STATE),
      nO = frnn_step_port_count(s, FRNN_PORT_OUTPUT);
  /* Leaves of f (inputs, states), and weights of outputs and next states. */
  double leaf[MAXP][MX * MX], w[2 * MAXP][MX * MX];
  int64_t size_of[4] = {1, M, N, M * N};
  for (int k = 0; k < nI + nS; k++) {
    frnn_port_kind kind = k < nI ? FRNN_PORT_INPUT : FRNN_PORT_STATE;
    int c = frnn_step_port_class(s, kind, k < nI ? k : k - nI);
    for (int64_t e = 0; e < size_of[c]; e++) leaf[k][e] = rng_uniform(&R, -1, 1);
  }
  for (int k = 0; k < nO + nS; k++)
    for (int64_t e = 0; e < M * N; e++) w[k][e] = rng_uniform(&R, -1, 1);
  /* L = sum of w . (outputs, next states), each over its port's class. */
  double L_plus, L;
#define EVAL_L(Lout)                                                                           \
  do {                                                                                         \
    for (int k = 0; k < nI + nS; k++) {                                                        \
      frnn_port_kind kind = k < nI ? FRNN_PORT_INPUT : FRNN_PORT_STATE;                        \
      int q = k < nI ? k : k - nI;                                                             \
      memcpy(eval_leaf(&f, kind, q), leaf[k],                                                  \
             (size_t)size_of[frnn_step_port_class(s, kind, q)] * sizeof(double));              \
    }                                                                                          \
    eval_step(&f);                                                                             \
    Lout = 0;                                                                                  \
    for (int k = 0; k < nO + nS; k++) {                                                        \
      frnn_port_kind kind = k < nO ? FRNN_PORT_OUTPUT : FRNN_PORT_STATE;                       \
      int q = k < nO ? k : k - nO, c = frnn_step_port_class(s, kind, q);                       \
      for (int64_t i = 0; i < (CLASS_HAS_M(c) ? M : 1); i++)                                   \
        for (int64_t j = 0; j < (CLASS_HAS_N(c) ? N : 1); j++)                                 \
          Lout += w[k][i * (CLASS_HAS_N(c) ? N : 1) + j] * eval_port(&f, kind, q, i, j);       \
    }                                                                                          \
  } while (0)
  /* The adjoint's leaves: inputs, states, grad outputs, grad next states. */
  for (int k = 0; k < nI + nS; k++) {
    frnn_port_kind kind = k < nI ? FRNN_PORT_INPUT : FRNN_PORT_STATE;
    int c = frnn_step_port_class(s, kind, k < nI ? k : k - nI);
    memcpy(eval_leaf(&a, FRNN_PORT_INPUT, k), leaf[k], (size_t)size_of[c] * sizeof(double));
  }
  for (int k = 0; k < nO + nS; k++) {
    int c = frnn_step_port_class(adj, FRNN_PORT_INPUT, nI + nS + k);
    memcpy(eval_leaf(&a, FRNN_PORT_INPUT, nI + nS + k), w[k], (size_t)size_of[c] * sizeof(double));
  }
  eval_step(&a);
  for (int k = 0; k < nI + nS; k++) {
    frnn_port_kind kind = k < nI ? FRNN_PORT_INPUT : FRNN_PORT_STATE;
    int c = frnn_step_port_class(s, kind, k < nI ? k : k - nI);
    for (int64_t e = 0; e < size_of[c]; e++) {
      double keep = leaf[k][e];
      leaf[k][e] = keep + 1e-6;
      EVAL_L(L_plus);
      leaf[k][e] = keep - 1e-6;
      EVAL_L(L);
      leaf[k][e] = keep;
      double fd = (L_plus - L) / 2e-6;
      int64_t C = CLASS_HAS_N(c) ? N : 1;
      double g = eval_port(&a, FRNN_PORT_OUTPUT, k, e / C, e % C);
      ck_assert_msg(fabs(g - fd) <= 1e-6 * (1 + fabs(fd)), "port %d element %lld: %g vs %g", k,
                    (long long)e, g, fd);
    }
  }
#undef EVAL_L
  eval_free(&f);
  eval_free(&a);
  frnn_step_destroy(adj);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* adjoint_next_states finds, in each example's adjoint, the node that
 * recomputes each next state (the recurrent backward's walk hands it the
 * state it holds instead): evaluated from the same leaves, it must equal the
 * forward's next state exactly (the same operations, commutative operands
 * possibly swapped).  S4D, whose walk depends on it, must have both. */
static char EXAMPLES[64][TEST_NAME_MAX]; /* the .frnn files of examples/ (main) */
static int n_examples;
START_TEST(adjoint_next_states_exact) {
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  char rel[128];
  snprintf(rel, sizeof rel, "examples/%s.frnn", EXAMPLES[_i]);
  frnn_step *s, *adj;
  ck_assert_msg(frnn_step_load(ctx, test_source_path(rel), &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert_int_eq(frnn_step_adjoint(s, &adj), FRNN_OK);
  uint32_t at[FRNN_MAX_PORTS];
  adjoint_next_states(s, adj, at);
  const int64_t M = 3, N = 4;
  step_eval f, a;
  ck_assert_int_eq(eval_init(ctx, &f, s, M, N), FRNN_OK);
  ck_assert_int_eq(eval_init(ctx, &a, adj, M, N), FRNN_OK);
  int nI = s->n_ports[FRNN_PORT_INPUT], nS = s->n_ports[FRNN_PORT_STATE], found = 0;
  for (int k = 0; k < adj->n_ports[FRNN_PORT_INPUT]; k++) {
    int c = adj->ports[FRNN_PORT_INPUT][k].cls;
    double *leaf = eval_leaf(&a, FRNN_PORT_INPUT, k);
    for (int64_t e = 0; e < (CLASS_HAS_M(c) ? M : 1) * (CLASS_HAS_N(c) ? N : 1); e++)
      leaf[e] = rng_uniform(&R, 0.1, 0.9); /* in every example's domain (logs, divisions) */
    if (k < nI + nS)
      memcpy(eval_leaf(&f, k < nI ? FRNN_PORT_INPUT : FRNN_PORT_STATE, k < nI ? k : k - nI), leaf,
             (size_t)((CLASS_HAS_M(c) ? M : 1) * (CLASS_HAS_N(c) ? N : 1)) * sizeof *leaf);
  }
  eval_step(&f);
  eval_step(&a);
  for (int i = 0; i < nS; i++) {
    if (at[i] == NODE_NONE) continue;
    found++;
    int c = adj->nodes[at[i]].cls;
    int64_t cn = CLASS_HAS_N(c) ? N : 1;
    for (int64_t r = 0; r < (CLASS_HAS_M(c) ? M : 1); r++)
      for (int64_t j = 0; j < cn; j++)
        ck_assert_msg(a.val[at[i]][r * cn + j] == eval_port(&f, FRNN_PORT_STATE, i, r, j),
                      "%s: state '%s' (%lld,%lld): the adjoint's node %u gives %.17g, the forward %.17g",
                      EXAMPLES[_i], s->ports[FRNN_PORT_STATE][i].name, (long long)r, (long long)j, at[i],
                      a.val[at[i]][r * cn + j], eval_port(&f, FRNN_PORT_STATE, i, r, j));
  }
  printf("%-18s next states found in the adjoint: %d of %d\n", EXAMPLES[_i], found, nS);
  if (strcmp(EXAMPLES[_i], "s4d") == 0) ck_assert_int_eq(found, 2);
  eval_free(&f);
  eval_free(&a);
  frnn_step_destroy(adj);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------ step text */
START_TEST(step_text_same_results) {
  const model *m = MODELS[_i];
  if (!m->text) return;
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  frnn_step *s = build(ctx, m), *p;
  frnn_status st = frnn_step_parse(ctx, m->name, m->text, &p);
  ck_assert_msg(st == FRNN_OK, "%s: %s", m->name, frnn_ctx_error(ctx));
  /* The text's graph may differ in association or operand order from the
   * builder's: same results to rounding, forward and backward. */
  run a, b;
  run_init(&a, m, SIZES[2], &DT_F64, 1, NULL);
  run_init(&b, m, SIZES[2], &DT_F64, 1, NULL);
  for (int k = 0; k < m->nI; k++) memcpy(b.in[k].buf, a.in[k].buf, a.in[k].size);
  for (int k = 0; k < m->nS; k++) {
    memcpy(b.st[k].buf, a.st[k].buf, a.st[k].size);
    memcpy(b.gfin[k].buf, a.gfin[k].buf, a.gfin[k].size);
  }
  for (int k = 0; k < m->nO; k++) memcpy(b.gout[k].buf, a.gout[k].buf, a.gout[k].size);
  OK(ctx, fwd(ctx, p, &a));
  OK(ctx, bwd(ctx, p, &a));
  OK(ctx, bwd(ctx, s, &b));
  hand(&a);
  for (int k = 0; k < m->nO; k++) ck_assert(tt_rel_err(&a.out[k], &a.eout[k]) < 1e-12);
  for (int k = 0; k < m->nS; k++) ck_assert(tt_rel_err(&a.fin[k], &a.efin[k]) < 1e-12);
  for (int k = 0; k < m->nI; k++) ck_assert(tt_rel_err(&a.gin[k], &b.gin[k]) < 1e-12);
  for (int k = 0; k < m->nS; k++) ck_assert(tt_rel_err(&a.gst[k], &b.gst[k]) < 1e-12);
  run_free(&a);
  run_free(&b);
  frnn_step_destroy(p);
  frnn_step_destroy(s);
  frnn_ctx_destroy(ctx);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("reference");
  TCase *tc = tcase_create("forward");
  tcase_add_loop_test(tc, forward_float64, 0, N_MODELS);
  tcase_add_loop_test(tc, forward_low_precision, 0, N_MODELS);
  tcase_add_loop_test(tc, step_text_same_results, 0, N_MODELS);
  suite_add_tcase(s, tc);
  tc = tcase_create("backward");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, backward_finite_differences, 0, N_MODELS);
  tcase_add_loop_test(tc, backward_null_means_zero, 0, N_MODELS);
  tcase_add_test(tc, backward_low_precision_gradients);
  tcase_add_test(tc, eval_adjoint_step);
  tcase_add_loop_test(tc, adjoint_next_states_exact, 0, n_examples);
  suite_add_tcase(s, tc);
  tc = tcase_create("layouts");
  tcase_add_test(tc, broadcast_inputs_bitwise);
  tcase_add_loop_test(tc, strided_views_bitwise, 0, N_MODELS);
  tcase_add_loop_test(tc, in_place_states, 0, N_MODELS);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  R = test_rng("test_reference");
  n_examples = test_examples(EXAMPLES, 64);
  if (n_examples == 0) {
    fprintf(stderr, "no examples under %s\n", test_source_path("examples"));
    return EXIT_FAILURE;
  }
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
