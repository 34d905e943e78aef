/* test_random_steps.c - random valid steps, built through the C builder API,
 * against finite differences.
 *
 * The generator (seeded; the seed is printed, FRNN_TEST_SEED replays a run)
 * builds random DAGs of 5-40 operations over every operation of ops.def (every
 * row with operands; a new row stops the test until the generator knows it) and
 * all four shape classes: 1-3 inputs and 1-3 states of random classes, 1-2
 * outputs ([M,1] or [1,1]).  Values stay in safe domains by construction: each
 * node carries an interval that bounds it for every input in [-1.5, 1.5] and
 * state in [-2, 2]; operands are squashed with tanh when their bound is large,
 * log/sqrt/rsqrt and non-integer pow take softplus(x) + 0.1 unless x is
 * already >= 0.1, a division is by 1 + x*x unless the divisor is bounded away
 * from 0, exp takes arguments in [-2, 2], and every next state is kept in
 * [-2, 2] (so the bound holds at every time step).  Every operation node ends
 * up used (unused ones are summed into an output or a next state).
 *
 * For each step (at least MIN_CHECKED per run), over T = 3 and random B, M, N:
 * - printing and parsing it back gives the same frnn_step_hash;
 * - the gradients of L = sum(Wy * outputs) + sum(WS * final states) from
 *   frnn_reference_backward, for every element of every input and initial
 *   state, match central differences of frnn_reference_forward within 1e-5
 *   relative or 1e-7 absolute.
 * abs, max, min, comparisons and where are piecewise: a finite difference is
 * valid almost surely, but a random sample may put a kink or a jump within
 * the step h of an element (or compare two values that are equal but for
 * rounding).  An element that mismatches is retried with h/8: if that matches,
 * fine; if the two differences agree with each other but not with the
 * adjoint and the one-sided differences agree too, the adjoint is wrong; if
 * they disagree (no convergence, or one-sided differences far apart: a jump),
 * the sample sits on a kink: the step is skipped and counted.  On failure the step's
 * text and its number in the run are printed. */
#include "seqcheck.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CHECKED 600
#define MAX_SKIPPED (MIN_CHECKED / 10)
#define MAXP 4
#define POOL 1024
#define FD_H 1e-6
#define REL_TOL 1e-5
#define ABS_TOL 1e-7
#define IN_BOUND 1.5
#define STATE_BOUND 2.0
#define MAX_DIM 4 /* largest M and N: bounds of sum and sum_m */

static rng base_rng;

/* Every row of ops.def: the generator draws from all that take operands. */
typedef struct op_row {
  const char *id;
  int arity;
} op_row;
static const op_row op_rows[FRNN_OP_COUNT] = {
#define OP(id, spelling, arity, shape, flags) [FRNN_OP_##id] = {#id, arity},
#include "ops.def"
#undef OP
};

/* ------------------------------------------------------------- intervals */
typedef struct ival {
  double lo, hi;
} ival;

static double mag(ival a) { return fmax(fabs(a.lo), fabs(a.hi)); }
static ival iv(double lo, double hi) { return (ival){fmin(lo, hi), fmax(lo, hi)}; }
static ival iv4(double a, double b, double c, double d) {
  return (ival){fmin(fmin(a, b), fmin(c, d)), fmax(fmax(a, b), fmax(c, d))};
}
static ival iv_union(ival a, ival b) { return (ival){fmin(a.lo, b.lo), fmax(a.hi, b.hi)}; }
static double silu(double x) { return x / (1 + exp(-x)); }
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigm(double x) { return 1 / (1 + exp(-x)); }

/* ------------------------------------------------------------ generator */
typedef struct gen {
  frnn_ctx *ctx;
  frnn_step *s;
  rng *r;
  int n;                 /* pool size */
  frnn_value v[POOL];    /* pool of values */
  int cls[POOL];
  ival b[POOL];          /* bound */
  int uses[POOL];
  bool leafish[POOL];    /* input, state or constant: never a sink */
  bool cmp[POOL];        /* a comparison (a good condition for where) */
  int n_ops;             /* operation nodes requested so far */
  long *op_count;        /* per frnn_op, over the run */
} gen;

static int pick(gen *g, int lo, int hi) { return lo + (int)(rng_next(g->r) % (uint64_t)(hi - lo + 1)); }

static int pool_find(gen *g, frnn_value v) {
  for (int i = 0; i < g->n; i++)
    if (g->v[i] == v) return i;
  return -1;
}

static int pool_add(gen *g, frnn_value v, ival b, bool leafish) {
  int i = pool_find(g, v);
  if (i >= 0) { /* interned: the same node (keep the tighter bound) */
    g->b[i] = (ival){fmax(g->b[i].lo, b.lo), fmin(g->b[i].hi, b.hi)};
    if (g->b[i].lo > g->b[i].hi) g->b[i] = b;
    return i;
  }
  ck_assert_msg(g->n < POOL, "generator pool overflow");
  i = g->n++;
  g->v[i] = v;
  g->cls[i] = (int)frnn_value_class(g->s, v);
  g->b[i] = b;
  g->uses[i] = 0;
  g->leafish[i] = leafish;
  g->cmp[i] = false;
  return i;
}

/* Apply op to pool entries; returns the pool index of the result. */
static int ap(gen *g, frnn_op op, const int *a, int na, ival b) {
  frnn_value args[3], out;
  for (int i = 0; i < na; i++) args[i] = g->v[a[i]];
  frnn_status st = frnn_step_apply(g->s, op, args, na, &out);
  ck_assert_msg(st == FRNN_OK, "frnn_step_apply(%d): %s", (int)op, frnn_ctx_error(g->ctx));
  for (int i = 0; i < na; i++) g->uses[a[i]]++;
  g->op_count[op]++;
  int k = pool_add(g, out, b, false);
  g->cmp[k] = op == FRNN_OP_LT || op == FRNN_OP_GT || op == FRNN_OP_LE || op == FRNN_OP_GE;
  return k;
}
static int ap1(gen *g, frnn_op op, int a, ival b) { return ap(g, op, &a, 1, b); }
static int ap2(gen *g, frnn_op op, int a, int c, ival b) {
  int x[2] = {a, c};
  return ap(g, op, x, 2, b);
}

static int konst(gen *g, double c) {
  frnn_value v;
  frnn_status st = frnn_step_const(g->s, c, &v);
  ck_assert_msg(st == FRNN_OK, "frnn_step_const: %s", frnn_ctx_error(g->ctx));
  return pool_add(g, v, iv(c, c), true);
}

/* tanh(x) when |x| may exceed `bound`. */
static int squash(gen *g, int a, double bound) {
  if (mag(g->b[a]) <= bound) return a;
  return ap1(g, FRNN_OP_TANH, a, iv(tanh(g->b[a].lo), tanh(g->b[a].hi)));
}

/* A value >= 0.1: x itself if it is, else softplus(x) + 0.1. */
static int positive(gen *g, int a) {
  a = squash(g, a, 4);
  if (g->b[a].lo >= 0.1) return a;
  int sp = ap1(g, FRNN_OP_SOFTPLUS, a, iv(softplus(g->b[a].lo), softplus(g->b[a].hi)));
  return ap2(g, FRNN_OP_ADD, sp, konst(g, 0.1), iv(g->b[sp].lo + 0.1, g->b[sp].hi + 0.1));
}

/* Interval of a product / quotient by an interval excluding 0. */
static ival mul_iv(ival a, ival b) {
  return iv4(a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi);
}

/* Sum of up to MAX_DIM elements of a. */
static ival sum_iv(ival a) { return (ival){fmin(a.lo, MAX_DIM * a.lo), fmax(a.hi, MAX_DIM * a.hi)}; }

/* Reduce a to a class no larger than cls. */
static int reduce_to(gen *g, int a, int cls) {
  if ((g->cls[a] & 2) && !(cls & 2)) a = ap1(g, FRNN_OP_SUM, a, sum_iv(g->b[a]));
  if ((g->cls[a] & 1) && !(cls & 1)) a = ap1(g, FRNN_OP_SUM_M, a, sum_iv(g->b[a]));
  return a;
}

/* An operand: a random non-constant pool entry, often a recent one. */
static int operand(gen *g) {
  for (int tries = 0; tries < 100; tries++) {
    int i = rng_uniform(g->r, 0, 1) < 0.5 ? pick(g, 0, g->n - 1) : pick(g, g->n > 6 ? g->n - 6 : 0, g->n - 1);
    frnn_value v = g->v[i];
    (void)v;
    if (!(g->leafish[i] && g->cls[i] == FRNN_SCALAR && g->b[i].lo == g->b[i].hi)) return i;
  }
  return 0; /* the first input */
}

static int operand_with(gen *g, int bit) {
  for (int tries = 0; tries < 30; tries++) {
    int i = operand(g);
    if (g->cls[i] & bit) return i;
  }
  return operand(g);
}

static double random_const(gen *g) {
  /* Full-precision doubles (the text must carry them exactly), never 0 or 1. */
  double c;
  do c = rng_uniform(g->r, -2, 2);
  while (fabs(c) < 0.05 || fabs(c - 1) < 0.05);
  return c;
}

/* One random operation node over the pool; `op` chosen by the caller. */
static void random_op(gen *g, frnn_op op) {
  int a = operand(g), c;
  ival A, B;
  switch (op) {
  case FRNN_OP_ADD:
  case FRNN_OP_SUB:
  case FRNN_OP_MUL:
  case FRNN_OP_MAX:
  case FRNN_OP_MIN: {
    a = squash(g, a, 4);
    do c = rng_uniform(g->r, 0, 1) < 0.15 ? konst(g, random_const(g)) : squash(g, operand(g), 4);
    while (c == a);
    if (rng_next(g->r) & 1) { /* either order (commutative ops are canonicalised anyway) */
      int t = a;
      a = c, c = t;
    }
    A = g->b[a], B = g->b[c];
    ival r = op == FRNN_OP_ADD   ? iv(A.lo + B.lo, A.hi + B.hi)
             : op == FRNN_OP_SUB ? iv(A.lo - B.hi, A.hi - B.lo)
             : op == FRNN_OP_MUL ? mul_iv(A, B)
             : op == FRNN_OP_MAX ? iv(fmax(A.lo, B.lo), fmax(A.hi, B.hi))
                                 : iv(fmin(A.lo, B.lo), fmin(A.hi, B.hi));
    ap2(g, op, a, c, r);
    break;
  }
  case FRNN_OP_DIV: {
    a = squash(g, a, 4);
    c = squash(g, operand(g), 4);
    if (g->b[c].lo < 0.2 && g->b[c].hi > -0.2) { /* may be near 0: 1 + c*c */
      ival sq = iv(0, g->b[c].lo * g->b[c].lo > g->b[c].hi * g->b[c].hi ? g->b[c].lo * g->b[c].lo
                                                                        : g->b[c].hi * g->b[c].hi);
      int cc = ap2(g, FRNN_OP_MUL, c, c, sq);
      c = ap2(g, FRNN_OP_ADD, konst(g, 1), cc, iv(1 + sq.lo, 1 + sq.hi));
    }
    B = g->b[c];
    ap2(g, op, a, c, mul_iv(g->b[a], iv(1 / B.lo, 1 / B.hi)));
    break;
  }
  case FRNN_OP_NEG: ap1(g, op, a, iv(-g->b[a].hi, -g->b[a].lo)); break;
  case FRNN_OP_EXP:
    if (mag(g->b[a]) > 2) a = squash(g, a, 0);
    ap1(g, op, a, iv(exp(g->b[a].lo), exp(g->b[a].hi)));
    break;
  case FRNN_OP_LOG:
    a = positive(g, a);
    ap1(g, op, a, iv(log(g->b[a].lo), log(g->b[a].hi)));
    break;
  case FRNN_OP_SQRT:
    a = positive(g, a);
    ap1(g, op, a, iv(sqrt(g->b[a].lo), sqrt(g->b[a].hi)));
    break;
  case FRNN_OP_RSQRT:
    a = positive(g, a);
    ap1(g, op, a, iv(1 / sqrt(g->b[a].lo), 1 / sqrt(g->b[a].hi)));
    break;
  case FRNN_OP_ABS:
    a = squash(g, a, 4);
    A = g->b[a];
    ap1(g, op, a, A.lo >= 0 ? A : A.hi <= 0 ? iv(-A.hi, -A.lo) : iv(0, mag(A)));
    break;
  case FRNN_OP_TANH: ap1(g, op, a, iv(tanh(g->b[a].lo), tanh(g->b[a].hi))); break;
  case FRNN_OP_SIGMOID: ap1(g, op, a, iv(sigm(g->b[a].lo), sigm(g->b[a].hi))); break;
  case FRNN_OP_SOFTPLUS:
    a = squash(g, a, 4);
    ap1(g, op, a, iv(softplus(g->b[a].lo), softplus(g->b[a].hi)));
    break;
  case FRNN_OP_SILU: {
    a = squash(g, a, 4);
    A = g->b[a];
    double lo = fmin(silu(A.lo), silu(A.hi)), hi = fmax(silu(A.lo), silu(A.hi));
    if (A.lo < -1.2784645 && A.hi > -1.2784645) lo = -0.2784646; /* the minimum */
    ap1(g, op, a, iv(lo, hi));
    break;
  }
  case FRNN_OP_LT:
  case FRNN_OP_GT:
  case FRNN_OP_LE:
  case FRNN_OP_GE:
    do c = rng_uniform(g->r, 0, 1) < 0.2 ? konst(g, random_const(g)) : operand(g);
    while (c == a);
    if (rng_next(g->r) & 1) ap2(g, op, a, c, iv(0, 1));
    else ap2(g, op, c, a, iv(0, 1));
    break;
  case FRNN_OP_POW: {
    static const double int_exp[] = {2, 3, -1 /* positive bases only */};
    static const double real_exp[] = {0.5, 1.5, -0.5, 2.5, -1.5, 0.75};
    double e;
    if (rng_uniform(g->r, 0, 1) < 0.4) { /* integer exponent: any sign of base */
      e = int_exp[pick(g, 0, 1)];
      a = squash(g, a, 2);
      A = g->b[a];
      ival r = e == 2 ? (A.lo >= 0 ? iv(A.lo * A.lo, A.hi * A.hi)
                                   : A.hi <= 0 ? iv(A.hi * A.hi, A.lo * A.lo) : iv(0, mag(A) * mag(A)))
                      : iv(A.lo * A.lo * A.lo, A.hi * A.hi * A.hi);
      ap2(g, op, a, konst(g, e), r);
    } else {
      e = rng_uniform(g->r, 0, 1) < 0.2 ? int_exp[2] : real_exp[pick(g, 0, 5)];
      a = positive(g, squash(g, a, 3));
      A = g->b[a];
      ap2(g, op, a, konst(g, e), iv(pow(A.lo, e), pow(A.hi, e)));
    }
    break;
  }
  case FRNN_OP_WHERE: {
    int cond = -1;
    if (rng_uniform(g->r, 0, 1) < 0.7)
      for (int tries = 0; tries < 20 && cond < 0; tries++) {
        int i = pick(g, 0, g->n - 1);
        if (g->cmp[i]) cond = i;
      }
    if (cond < 0) cond = operand(g);
    a = squash(g, a, 4);
    c = squash(g, operand(g), 4);
    int x[3] = {cond, a, c};
    ap(g, op, x, 3, iv_union(g->b[a], g->b[c]));
    break;
  }
  case FRNN_OP_SUM:
    a = operand_with(g, 2);
    ap1(g, op, a, (g->cls[a] & 2) ? sum_iv(g->b[a]) : g->b[a]);
    break;
  case FRNN_OP_SUM_M:
    a = operand_with(g, 1);
    ap1(g, op, a, (g->cls[a] & 1) ? sum_iv(g->b[a]) : g->b[a]);
    break;
  default:
    if (strcmp(op_rows[op].id, "BCAST") == 0) { /* a, broadcast to the class of a and c */
      do c = operand(g);
      while (c == a && g->n > 1);
      ap2(g, op, a, c, g->b[a]);
      break;
    }
    ck_abort_msg("random_op: operation %s is new: teach the generator its safe domain and "
                 "its bound",
                 op_rows[op].id);
  }
}

/* Build one random finished step.  Returns it; classes of ports via the API. */
static frnn_step *random_step(frnn_ctx *ctx, rng *r, long *op_count, int step_no) {
  gen *g = calloc(1, sizeof *g);
  ck_assert(g);
  g->ctx = ctx, g->r = r, g->op_count = op_count;
  char name[32];
  snprintf(name, sizeof name, "random%d", step_no);
  ck_assert_int_eq(frnn_step_create(ctx, name, &g->s), FRNN_OK);
  int ni = pick(g, 1, 3), ns = pick(g, 1, 3), no = pick(g, 1, 2);
  int state_idx[MAXP];
  for (int i = 0; i < ni; i++) {
    frnn_value v;
    snprintf(name, sizeof name, "x%d", i);
    ck_assert_int_eq(frnn_step_input(g->s, name, (frnn_class)pick(g, 0, 3), &v), FRNN_OK);
    pool_add(g, v, iv(-IN_BOUND, IN_BOUND), true);
  }
  for (int i = 0; i < ns; i++) {
    frnn_value v;
    snprintf(name, sizeof name, "S%d", i);
    ck_assert_int_eq(frnn_step_state(g->s, name, (frnn_class)pick(g, 0, 3), &v), FRNN_OK);
    state_idx[i] = pool_add(g, v, iv(-STATE_BOUND, STATE_BOUND), true);
  }
  frnn_op choices[FRNN_OP_COUNT];
  int n_choices = 0;
  for (int op = 0; op < FRNN_OP_COUNT; op++)
    if (op_rows[op].arity > 0) choices[n_choices++] = (frnn_op)op;
  int n_ops = pick(g, 5, 40);
  for (int k = 0; k < n_ops; k++) random_op(g, choices[pick(g, 0, n_choices - 1)]);

  /* Targets: next states, then outputs.  Each gets a base value plus its
   * share of the sinks (operation nodes nobody uses). */
  int n_targets = ns + no;
  int target_cls[2 * MAXP], acc[2 * MAXP];
  for (int t = 0; t < ns; t++) target_cls[t] = (int)frnn_step_port_class(g->s, FRNN_PORT_STATE, t);
  for (int t = 0; t < no; t++) target_cls[ns + t] = pick(g, 0, 1) ? FRNN_COL : FRNN_SCALAR;
  int n_before = g->n;
  bool sink[POOL];
  for (int i = 0; i < n_before; i++) sink[i] = !g->leafish[i] && g->uses[i] == 0;
  for (int t = 0; t < n_targets; t++) {
    int base = reduce_to(g, operand(g), target_cls[t]);
    if (t < ns) { /* the state's old value takes part */
      int S = state_idx[t];
      frnn_op op = (frnn_op)(int[]){FRNN_OP_ADD, FRNN_OP_SUB, FRNN_OP_MUL}[pick(g, 0, 2)];
      ival A = g->b[S], B = g->b[base];
      ival rb = op == FRNN_OP_ADD ? iv(A.lo + B.lo, A.hi + B.hi)
                : op == FRNN_OP_SUB ? iv(A.lo - B.hi, A.hi - B.lo)
                                    : mul_iv(A, B);
      base = ap2(g, op, S, base, rb);
    }
    acc[t] = base;
  }
  for (int i = 0; i < n_before; i++) {
    if (!sink[i]) continue;
    int t = pick(g, 0, n_targets - 1);
    int x = reduce_to(g, squash(g, i, 4), target_cls[t]);
    acc[t] = ap2(g, FRNN_OP_ADD, acc[t], x, iv(g->b[acc[t]].lo + g->b[x].lo, g->b[acc[t]].hi + g->b[x].hi));
  }
  for (int t = 0; t < ns; t++) {
    int v = squash(g, acc[t], STATE_BOUND);
    char sn[16];
    snprintf(sn, sizeof sn, "S%d", t);
    ck_assert_msg(frnn_step_assign(g->s, sn, g->v[v]) == FRNN_OK, "assign: %s", frnn_ctx_error(ctx));
  }
  for (int t = 0; t < no; t++) {
    int v = squash(g, acc[ns + t], 8);
    char on[16];
    snprintf(on, sizeof on, "y%d", t);
    ck_assert_msg(frnn_step_output(g->s, on, (frnn_class)target_cls[ns + t], g->v[v]) == FRNN_OK,
                  "output: %s", frnn_ctx_error(ctx));
  }
  frnn_status st = frnn_step_finish(g->s);
  ck_assert_msg(st == FRNN_OK, "frnn_step_finish: %s", frnn_ctx_error(ctx));
  frnn_step *s = g->s;
  free(g);
  return s;
}

/* ------------------------------------------------------------- problems */
/* Inputs in [-IN_BOUND, IN_BOUND], some broadcast over B or T. */
static void make_input(void *user, int i, const int64_t *full, ttensor *x) {
  rng *r = user;
  int64_t shape[5] = {full[0], full[1], full[2], full[3], full[4]};
  double u = rng_uniform(r, 0, 1);
  if (u < 0.15) shape[0] = 1;
  else if (u < 0.3) shape[1] = 1;
  tt_random(x, DT_F64, 5, shape, r, -IN_BOUND, IN_BOUND);
}

/* Initial states in [-1, 1]. */
static void make_state(void *user, int i, const int64_t *shape, ttensor *x) {
  tt_random(x, DT_F64, 4, shape, user, -1, 1);
}

static bool close_enough(double a, double f) {
  double d = fabs(a - f);
  return d <= ABS_TOL || d <= REL_TOL * fmax(fabs(a), fabs(f));
}

enum verdict { V_PASS, V_KINK, V_FAIL };

typedef struct result {
  enum verdict v;
  double worst_rel; /* largest |a - f| / max(|a|,|f|) where max(|a|,|f|) >= 1e-3 */
  double worst_abs; /* largest |a - f| */
  char where[256];
} result;

static result check_step(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz, rng *r) {
  result res = {V_PASS, 0, 0, ""};
  sc_problem p;
  sc_problem_alloc(&p, step, sz, r, make_input, make_state, r);
  double l0 = sc_loss(ctx, &p);
  if (p.forward_failed) {
    res.v = V_FAIL;
    snprintf(res.where, sizeof res.where, "frnn_reference_forward: %s", p.forward_msg);
    goto done;
  }
  if (!isfinite(l0)) {
    res.v = V_FAIL;
    snprintf(res.where, sizeof res.where, "the loss is not finite (%g): the generator let a "
                                          "value out of its safe domain",
             l0);
    goto done;
  }
  frnn_status st =
      frnn_reference_backward(ctx, step, sz, p.in_p, p.st_p, p.wout_p, p.wfin_p, p.gin_p, p.gst_p);
  if (st != FRNN_OK) {
    res.v = V_FAIL;
    snprintf(res.where, sizeof res.where, "frnn_reference_backward: %s", frnn_ctx_error(ctx));
    goto done;
  }
  for (int k = 0; k < 2; k++) {
    int n = k ? p.ns : p.ni;
    for (int i = 0; i < n; i++) {
      ttensor *x = k ? &p.st[i] : &p.in[i], *g = k ? &p.gst[i] : &p.gin[i];
      const char *name = frnn_step_port_name(step, k ? FRNN_PORT_STATE : FRNN_PORT_INPUT, i);
      int64_t ne = tt_numel(x);
      for (int64_t e = 0; e < ne; e++) {
        double *xe = &sc_data(x)[e], a = sc_data(g)[e];
        double h = FD_H * fmax(1.0, fabs(*xe));
        double asym, asym8;
        double f = sc_central(ctx, &p, xe, h, l0, &asym);
        if (p.forward_failed) {
          res.v = V_FAIL;
          snprintf(res.where, sizeof res.where, "frnn_reference_forward: %s", p.forward_msg);
          goto done;
        }
        if (!close_enough(a, f)) {
          double f8 = sc_central(ctx, &p, xe, h / 8, l0, &asym8);
          if (close_enough(a, f8)) {
            f = f8; /* a kink or a jump within h of x, but not within h/8 */
          } else if (!close_enough(f, f8) || asym > 0.1 * (1 + fabs(f)) ||
                     asym8 > 0.1 * (1 + fabs(f8))) {
            /* The difference does not converge as h shrinks, or the one-sided
             * ones are far apart: x sits within h/8 of a kink or a jump (or on
             * a comparison of two values equal but for rounding, which flips
             * at random as x moves). */
            res.v = V_KINK;
            snprintf(res.where, sizeof res.where, "%s '%s' element %lld", k ? "state" : "input",
                     name, (long long)e);
            goto done;
          } else {
            res.v = V_FAIL;
            snprintf(res.where, sizeof res.where,
                     "gradient of %s '%s' element %lld: adjoint %.17g, central difference "
                     "%.17g (h %.3g), %.17g (h %.3g)",
                     k ? "initial state" : "input", name, (long long)e, a, f, h, f8, h / 8);
            goto done;
          }
        }
        double d = fabs(a - f), m = fmax(fabs(a), fabs(f));
        if (d > res.worst_abs) res.worst_abs = d;
        if (m >= 1e-3 && d / m > res.worst_rel) res.worst_rel = d / m;
      }
    }
  }
done:
  sc_problem_free(&p);
  return res;
}

/* ----------------------------------------------------------------- test */

START_TEST(test_random_steps) {
  rng r = base_rng;
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  long op_count[FRNN_OP_COUNT] = {0};
  int checked = 0, skipped = 0, classes_seen = 0;
  double worst = 0, worst_abs = 0;
  for (int n = 0; checked < MIN_CHECKED; n++) {
    frnn_step *s = random_step(ctx, &r, op_count, n);
    for (int k = 0; k < 2; k++)
      for (int i = 0; i < frnn_step_port_count(s, (frnn_port_kind)k); i++)
        classes_seen |= 1 << frnn_step_port_class(s, (frnn_port_kind)k, i);

    /* Print, parse, same hash. */
    char *text = NULL;
    frnn_status st = frnn_step_print(s, &text);
    ck_assert_msg(st == FRNN_OK, "random step %d: frnn_step_print: %s", n, frnn_ctx_error(ctx));
    frnn_step *back = NULL;
    st = frnn_step_parse(ctx, "random.frnn", text, &back);
    if (st != FRNN_OK || frnn_step_hash(back) != frnn_step_hash(s)) {
      printf("random step %d (seed of the run above), printed:\n%s\n", n, text);
      fflush(stdout);
    }
    ck_assert_msg(st == FRNN_OK, "random step %d: its printed text does not parse: %s", n,
                  frnn_ctx_error(ctx));
    ck_assert_msg(frnn_step_hash(back) == frnn_step_hash(s),
                  "random step %d: printed then parsed, the hash changes (%016llx -> %016llx)", n,
                  (unsigned long long)frnn_step_hash(s), (unsigned long long)frnn_step_hash(back));
    frnn_step_destroy(back);

    frnn_sizes sz = {1 + (int64_t)(rng_next(&r) % 2), 3, 1, 2 + (int64_t)(rng_next(&r) % 3),
                     1 + (int64_t)(rng_next(&r) % 4)};
    result res = check_step(ctx, s, sz, &r);
    if (res.v == V_FAIL) {
      printf("random step %d FAILS at (B,T,H,M,N) = (%lld,%lld,%lld,%lld,%lld): %s\n%s\n", n,
             (long long)sz.B, (long long)sz.T, (long long)sz.H, (long long)sz.M, (long long)sz.N,
             res.where, text);
      fflush(stdout);
      ck_abort_msg("random step %d: %s (its text is printed above; replay with the seed printed "
                   "at the start)",
                   n, res.where);
    }
    if (res.v == V_KINK) {
      skipped++;
      ck_assert_msg(skipped <= MAX_SKIPPED,
                    "%d random steps skipped for kinks within the finite-difference step: the "
                    "generator makes too many (last: step %d, %s)",
                    skipped, n, res.where);
    } else {
      checked++;
      worst = fmax(worst, res.worst_rel);
      worst_abs = fmax(worst_abs, res.worst_abs);
    }
    frnn_free(text);
    frnn_step_destroy(s);
  }
  printf("random steps: %d checked, %d skipped (a kink within the finite-difference step); "
         "largest gradient error: relative %.2e (elements of magnitude >= 1e-3), absolute %.2e\n",
         checked, skipped, worst, worst_abs);
  printf("operations generated:");
  for (int op = 0; op < FRNN_OP_COUNT; op++)
    if (op_rows[op].arity > 0) printf(" %s %ld", op_rows[op].id, op_count[op]);
  printf("\n");
  fflush(stdout);
  for (int op = 0; op < FRNN_OP_COUNT; op++)
    ck_assert_msg(op_rows[op].arity == 0 || op_count[op] >= 20,
                  "operation %s generated only %ld times", op_rows[op].id, op_count[op]);
  ck_assert_msg(classes_seen == 15, "not every shape class among the ports (mask %x)",
                classes_seen);
  frnn_ctx_destroy(ctx);
}
END_TEST

int main(void) {
  base_rng = test_rng("test_random_steps");
  Suite *s = suite_create("random_steps");
  TCase *tc = tcase_create("adjoint_vs_finite_differences");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_random_steps);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
