/* reference.c - the float64 reference executor ("naive"): any finished step
 * run over whole sequences on host tensors, forward and backward through
 * time.  It is the ground truth that compiled kernels are measured against,
 * so it favours plainness over speed: one graph evaluation per (b, t, h).
 *
 * The evaluator (eval_*) runs one step for one (b, t, h): every node has a
 * float64 buffer of its class's size, and nodes are computed in array order
 * (operands precede users).  The backward evaluates the step's adjoint graph
 * (frnn_step_adjoint) for t = T-1 ... 0 on states recomputed by the forward.
 *
 * Every check runs before anything is written: a failing call leaves every
 * tensor untouched. */
#include "frnn_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- evaluator */
static int64_t rows(int cls, int64_t M) { return CLASS_HAS_M(cls) ? M : 1; }
static int64_t cols(int cls, int64_t N) { return CLASS_HAS_N(cls) ? N : 1; }

/* a * b as size_t; false if it overflows or exceeds the largest object
 * (PTRDIFF_MAX), which no allocation could give. */
static bool size_mul(size_t a, size_t b, size_t *out) {
  return !__builtin_mul_overflow(a, b, out) && *out <= PTRDIFF_MAX;
}

frnn_status eval_init(frnn_ctx *ctx, step_eval *e, const frnn_step *s, int64_t M, int64_t N) {
  memset(e, 0, sizeof *e);
  e->step = s;
  e->M = M;
  e->N = N;
  size_t total = 0, sz;
  for (uint32_t v = 0; v < s->n_nodes; v++) {
    int c = s->nodes[v].cls;
    if (!size_mul((size_t)rows(c, M), (size_t)cols(c, N), &sz) ||
        __builtin_add_overflow(total, sz, &total) || total > PTRDIFF_MAX)
      goto nomem;
  }
  if (!size_mul(total ? total : 1, sizeof(double), &sz)) goto nomem;
  e->val = malloc((s->n_nodes ? s->n_nodes : 1) * sizeof *e->val);
  e->pool = calloc(1, sz);
  if (!e->val || !e->pool) goto nomem;
  double *p = e->pool;
  for (uint32_t v = 0; v < s->n_nodes; v++) {
    const node *n = &s->nodes[v];
    e->val[v] = p;
    if (n->op == FRNN_OP_CONST) p[0] = n->value; /* constants are scalars */
    p += rows(n->cls, M) * cols(n->cls, N);
  }
  return FRNN_OK;
nomem:
  eval_free(e);
  return diag_fail(ctx, FRNN_E_NOMEM, "out of memory evaluating step '%s' (M=%lld, N=%lld)",
                   s->name, (long long)M, (long long)N);
}

void eval_free(step_eval *e) {
  free(e->val);
  free(e->pool);
  e->val = NULL;
  e->pool = NULL;
}

double *eval_leaf(const step_eval *e, frnn_port_kind kind, int i) {
  uint32_t leaf = e->step->ports[kind][i].leaf;
  return leaf == NODE_NONE ? NULL : e->val[leaf];
}

void eval_step(step_eval *e) {
  const frnn_step *s = e->step;
  int64_t M = e->M, N = e->N;
  for (uint32_t v = 0; v < s->n_nodes; v++) {
    const node *n = &s->nodes[v];
    double *out = e->val[v];
    int c = n->cls;
    int64_t R = rows(c, M), C = cols(c, N);
    switch ((frnn_op)n->op) {
    case FRNN_OP_INPUT:
    case FRNN_OP_STATE:
    case FRNN_OP_CONST:
    case FRNN_OP_COUNT: continue;
    case FRNN_OP_SUM: { /* over N; the identity on an operand without N */
      int ca = s->nodes[n->arg[0]].cls;
      const double *a = e->val[n->arg[0]];
      int64_t AC = cols(ca, N);
      for (int64_t i = 0; i < R; i++) {
        double acc = 0;
        for (int64_t j = 0; j < AC; j++) acc += a[i * AC + j];
        out[i * C] = acc;
      }
      continue;
    }
    case FRNN_OP_SUM_M: { /* over M */
      int ca = s->nodes[n->arg[0]].cls;
      const double *a = e->val[n->arg[0]];
      int64_t AR = rows(ca, M), AC = cols(ca, N);
      for (int64_t j = 0; j < C; j++) {
        double acc = 0;
        for (int64_t i = 0; i < AR; i++) acc += a[i * AC + j];
        out[j] = acc;
      }
      continue;
    }
    case FRNN_OP_ADD: case FRNN_OP_SUB: case FRNN_OP_MUL: case FRNN_OP_DIV:
    case FRNN_OP_NEG: case FRNN_OP_EXP: case FRNN_OP_LOG: case FRNN_OP_SQRT:
    case FRNN_OP_RSQRT: case FRNN_OP_ABS: case FRNN_OP_TANH: case FRNN_OP_SIGMOID:
    case FRNN_OP_SOFTPLUS: case FRNN_OP_SILU: case FRNN_OP_LT: case FRNN_OP_GT:
    case FRNN_OP_LE: case FRNN_OP_GE: case FRNN_OP_MAX: case FRNN_OP_MIN:
    case FRNN_OP_POW: case FRNN_OP_WHERE: case FRNN_OP_BCAST: break;
    }
    /* Elementwise: operand k's element (i, j) is at i*rs[k] + j*cs[k]
     * (0 along a dimension it lacks: broadcast). */
    int arity = op_get((frnn_op)n->op)->arity;
    const double *a[3];
    int64_t rs[3] = {0, 0, 0}, cs[3] = {0, 0, 0};
    static const double zero = 0;
    for (int k = 0; k < 3; k++) {
      a[k] = &zero;
      if (k >= arity) continue;
      int ck = s->nodes[n->arg[k]].cls;
      a[k] = e->val[n->arg[k]];
      rs[k] = CLASS_HAS_M(ck) ? cols(ck, N) : 0;
      cs[k] = CLASS_HAS_N(ck) ? 1 : 0;
    }
    for (int64_t i = 0; i < R; i++)
      for (int64_t j = 0; j < C; j++)
        out[i * C + j] = op_eval((frnn_op)n->op, a[0][i * rs[0] + j * cs[0]],
                                 a[1][i * rs[1] + j * cs[1]], a[2][i * rs[2] + j * cs[2]]);
  }
}

double eval_port(const step_eval *e, frnn_port_kind kind, int k, int64_t i, int64_t j) {
  uint32_t v = e->step->ports[kind][k].value;
  int c = e->step->nodes[v].cls;
  int64_t r = CLASS_HAS_M(c) ? i : 0, q = CLASS_HAS_N(c) ? j : 0;
  return e->val[v][r * cols(c, e->N) + q];
}

/* --------------------------------------------------------------- binding */
static frnn_status check_step(frnn_ctx *ctx, const frnn_step *step, const char *fn) {
  if (!step) return diag_fail(ctx, FRNN_E_ARG, "%s: step is NULL", fn);
  if (!step->finished)
    return diag_fail(ctx, FRNN_E_ARG, "%s: step '%s' is not finished (call frnn_step_finish)", fn,
                     step->name);
  if (step->internal)
    return diag_fail(ctx, FRNN_E_ARG,
                     "%s: step '%s' is an internal step (an adjoint); run the step it comes from",
                     fn, step->name);
  return FRNN_OK;
}

/* Bind every tensor of one array (one per port of `kind`).  `required`:
 * NULL array or entries are errors; else they mean absent (have[i] false).
 * `like`: for gradients of inputs, the inputs' views. */
static frnn_status bind_array(frnn_ctx *ctx, const char *fn, const char *array_name,
                              const frnn_step *s, frnn_port_kind kind, enum tensor_role role,
                              const DLTensor *const *arr, bool required, frnn_sizes sz,
                              const tview *like, tview *views, bool *have) {
  static const char *const kinds[] = {"inputs", "states", "outputs"};
  int n = s->n_ports[kind];
  if (!arr && required && n > 0)
    return diag_fail(ctx, FRNN_E_ARG, "%s: %s is NULL, but step '%s' has %d %s", fn, array_name,
                     s->name, n, kinds[kind]);
  for (int i = 0; i < n; i++) {
    const DLTensor *t = arr ? arr[i] : NULL;
    have[i] = t != NULL;
    if (!t && !required) continue;
    const port *p = &s->ports[kind][i];
    frnn_status st =
        tensor_bind(ctx, t, role, p->name, p->cls, sz, false, like ? &like[i] : NULL, &views[i]);
    if (st) return st;
  }
  return FRNN_OK;
}

/* Load a class-sized buffer from a view at (b, t, h). */
static void load_class(const tview *v, int64_t b, int64_t t, int64_t h, int cls, int64_t M,
                       int64_t N, double *dst) {
  int64_t R = rows(cls, M), C = cols(cls, N);
  for (int64_t i = 0; i < R; i++)
    for (int64_t j = 0; j < C; j++) dst[i * C + j] = tview_load(v, b, t, h, i, j);
}

static void store_class(const tview *v, int64_t b, int64_t t, int64_t h, int cls, int64_t M,
                        int64_t N, const double *src) {
  int64_t R = rows(cls, M), C = cols(cls, N);
  for (int64_t i = 0; i < R; i++)
    for (int64_t j = 0; j < C; j++) tview_store(v, b, t, h, i, j, src[i * C + j]);
}

/* Where each state lives in one flat buffer of all states. */
typedef struct state_layout {
  int64_t off[FRNN_MAX_PORTS];
  int64_t total;
} state_layout;

/* False if all states together are too large to hold. */
static bool layout_states(const frnn_step *s, int64_t M, int64_t N, state_layout *l) {
  l->total = 0;
  for (int k = 0; k < s->n_ports[FRNN_PORT_STATE]; k++) {
    l->off[k] = l->total;
    int c = s->ports[FRNN_PORT_STATE][k].cls;
    if (__builtin_add_overflow(l->total, rows(c, M) * cols(c, N), &l->total) ||
        l->total > PTRDIFF_MAX / (int64_t)sizeof(double))
      return false;
  }
  return true;
}

/* One step of the forward for (b, t, h): leaves from `cur` (all states) and
 * the inputs, evaluate, then the next states into `next` (may be `cur`). */
static void forward_step(step_eval *e, const tview *in, int64_t b, int64_t t, int64_t h,
                         const state_layout *l, const double *cur, double *next) {
  const frnn_step *s = e->step;
  int64_t M = e->M, N = e->N;
  for (int k = 0; k < s->n_ports[FRNN_PORT_INPUT]; k++) {
    double *leaf = eval_leaf(e, FRNN_PORT_INPUT, k);
    if (leaf) load_class(&in[k], b, t, h, s->ports[FRNN_PORT_INPUT][k].cls, M, N, leaf);
  }
  for (int k = 0; k < s->n_ports[FRNN_PORT_STATE]; k++) {
    double *leaf = eval_leaf(e, FRNN_PORT_STATE, k);
    int c = s->ports[FRNN_PORT_STATE][k].cls;
    if (leaf) memcpy(leaf, cur + l->off[k], (size_t)(rows(c, M) * cols(c, N)) * sizeof *leaf);
  }
  eval_step(e);
  for (int k = 0; k < s->n_ports[FRNN_PORT_STATE]; k++) {
    int c = s->ports[FRNN_PORT_STATE][k].cls;
    int64_t R = rows(c, M), C = cols(c, N);
    for (int64_t i = 0; i < R; i++)
      for (int64_t j = 0; j < C; j++)
        next[l->off[k] + i * C + j] = eval_port(e, FRNN_PORT_STATE, k, i, j);
  }
}

/* ---------------------------------------------------------------- forward */
frnn_status frnn_reference_forward(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz,
                                   const DLTensor *const *inputs,
                                   const DLTensor *const *states,
                                   DLTensor *const *outputs, DLTensor *const *final_states) {
  if (!ctx) return FRNN_E_ARG;
  const char *fn = "frnn_reference_forward";
  frnn_status st;
  if ((st = check_step(ctx, step, fn)) || (st = sizes_check(ctx, sz))) return st;
  const frnn_step *s = step;
  tview in[FRNN_MAX_PORTS], s0[FRNN_MAX_PORTS], out[FRNN_MAX_PORTS], fin[FRNN_MAX_PORTS];
  bool have[FRNN_MAX_PORTS], have_fin[FRNN_MAX_PORTS];
  if ((st = bind_array(ctx, fn, "inputs", s, FRNN_PORT_INPUT, ROLE_INPUT, inputs, true, sz,
                       NULL, in, have)) ||
      (st = bind_array(ctx, fn, "states", s, FRNN_PORT_STATE, ROLE_STATE, states, true, sz, NULL,
                       s0, have)) ||
      (st = bind_array(ctx, fn, "outputs", s, FRNN_PORT_OUTPUT, ROLE_OUTPUT,
                       (const DLTensor *const *)outputs, true, sz, NULL, out, have)) ||
      (st = bind_array(ctx, fn, "final_states", s, FRNN_PORT_STATE, ROLE_FINAL_STATE,
                       (const DLTensor *const *)final_states, false, sz, NULL, fin, have_fin)))
    return st;

  int64_t M = sz.M, N = sz.N;
  state_layout l;
  if (!layout_states(s, M, N, &l))
    return diag_fail(ctx, FRNN_E_NOMEM, "%s: out of memory for the states (M=%lld, N=%lld)", fn,
                     (long long)M, (long long)N);
  step_eval e;
  if ((st = eval_init(ctx, &e, s, M, N))) return st;
  double *cur = malloc((size_t)l.total * sizeof *cur);
  if (!cur) {
    eval_free(&e);
    return diag_fail(ctx, FRNN_E_NOMEM, "%s: out of memory for the states", fn);
  }
  int nS = s->n_ports[FRNN_PORT_STATE], nO = s->n_ports[FRNN_PORT_OUTPUT];
  for (int64_t b = 0; b < sz.B; b++)
    for (int64_t h = 0; h < sz.H; h++) {
      for (int k = 0; k < nS; k++)
        load_class(&s0[k], b, 0, h, s->ports[FRNN_PORT_STATE][k].cls, M, N, cur + l.off[k]);
      for (int64_t t = 0; t < sz.T; t++) {
        forward_step(&e, in, b, t, h, &l, cur, cur);
        for (int k = 0; k < nO; k++) {
          int64_t R = rows(s->ports[FRNN_PORT_OUTPUT][k].cls, M);
          for (int64_t i = 0; i < R; i++)
            tview_store(&out[k], b, t, h, i, 0, eval_port(&e, FRNN_PORT_OUTPUT, k, i, 0));
        }
      }
      /* Written after this (b, h) read its initial states: in place is fine. */
      for (int k = 0; k < nS; k++)
        if (have_fin[k])
          store_class(&fin[k], b, 0, h, s->ports[FRNN_PORT_STATE][k].cls, M, N, cur + l.off[k]);
    }
  free(cur);
  eval_free(&e);
  return FRNN_OK;
}

/* --------------------------------------------------------------- backward */
/* The adjoint's signature, as frnn_step_adjoint promises it (frnn.h). */
static frnn_status check_adjoint(frnn_ctx *ctx, const frnn_step *s, const frnn_step *a) {
  int nI = s->n_ports[FRNN_PORT_INPUT], nS = s->n_ports[FRNN_PORT_STATE],
      nO = s->n_ports[FRNN_PORT_OUTPUT];
  bool ok = a->finished && a->n_ports[FRNN_PORT_INPUT] == nI + nS + nO + nS &&
            a->n_ports[FRNN_PORT_OUTPUT] == nI + nS && a->n_ports[FRNN_PORT_STATE] == 0;
  for (int k = 0; ok && k < nI + nS; k++) {
    int c = k < nI ? s->ports[FRNN_PORT_INPUT][k].cls : s->ports[FRNN_PORT_STATE][k - nI].cls;
    ok = a->ports[FRNN_PORT_INPUT][k].cls == c && a->ports[FRNN_PORT_OUTPUT][k].cls == c;
  }
  for (int k = 0; ok && k < nO; k++)
    ok = a->ports[FRNN_PORT_INPUT][nI + nS + k].cls == s->ports[FRNN_PORT_OUTPUT][k].cls;
  for (int k = 0; ok && k < nS; k++)
    ok = a->ports[FRNN_PORT_INPUT][nI + nS + nO + k].cls == s->ports[FRNN_PORT_STATE][k].cls;
  if (!ok)
    return diag_fail(ctx, FRNN_E_STEP,
                     "frnn_reference_backward: the adjoint of step '%s' does not have the "
                     "signature frnn_step_adjoint promises (internal error)",
                     s->name);
  return FRNN_OK;
}

/* Buffers of one backward call, freed together. */
typedef struct bwd {
  step_eval fwd, adj;
  frnn_step *adj_step;
  double *hist;                /* (T+1) x all states, for one (b, h) */
  double *gs;                  /* gradient of all states at the current t */
  double *gin[FRNN_MAX_PORTS]; /* float64 gradient of each wanted input, its own shape */
} bwd;

static void bwd_free(bwd *w) {
  eval_free(&w->fwd);
  eval_free(&w->adj);
  frnn_step_destroy(w->adj_step);
  free(w->hist);
  free(w->gs);
  for (int k = 0; k < FRNN_MAX_PORTS; k++) free(w->gin[k]);
}

/* Index of (b,t,h,i,j) in a float64 buffer of the input's own shape, with
 * broadcast dimensions mapped to 0 (so contributions sum there). */
static int64_t gin_index(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j) {
  const int64_t *x = v->extent;
  int64_t idx[5] = {x[0] == 1 ? 0 : b, x[1] == 1 ? 0 : t, x[2] == 1 ? 0 : h, x[3] == 1 ? 0 : i,
                    x[4] == 1 ? 0 : j};
  return (((idx[0] * x[1] + idx[1]) * x[2] + idx[2]) * x[3] + idx[3]) * x[4] + idx[4];
}

frnn_status frnn_reference_backward(frnn_ctx *ctx, const frnn_step *step, frnn_sizes sz,
                                    const DLTensor *const *inputs,
                                    const DLTensor *const *states,
                                    const DLTensor *const *grad_outputs,
                                    const DLTensor *const *grad_final_states,
                                    DLTensor *const *grad_inputs, DLTensor *const *grad_states) {
  if (!ctx) return FRNN_E_ARG;
  const char *fn = "frnn_reference_backward";
  frnn_status st;
  if ((st = check_step(ctx, step, fn)) || (st = sizes_check(ctx, sz))) return st;
  const frnn_step *s = step;
  tview in[FRNN_MAX_PORTS], s0[FRNN_MAX_PORTS], gout[FRNN_MAX_PORTS], gfin[FRNN_MAX_PORTS];
  tview gin_v[FRNN_MAX_PORTS], gst_v[FRNN_MAX_PORTS];
  bool have[FRNN_MAX_PORTS], have_gout[FRNN_MAX_PORTS], have_gfin[FRNN_MAX_PORTS];
  bool want_gin[FRNN_MAX_PORTS], want_gst[FRNN_MAX_PORTS];
  if ((st = bind_array(ctx, fn, "inputs", s, FRNN_PORT_INPUT, ROLE_INPUT, inputs, true, sz,
                       NULL, in, have)) ||
      (st = bind_array(ctx, fn, "states", s, FRNN_PORT_STATE, ROLE_STATE, states, true, sz, NULL,
                       s0, have)) ||
      (st = bind_array(ctx, fn, "grad_outputs", s, FRNN_PORT_OUTPUT, ROLE_GRAD_OUTPUT,
                       grad_outputs, false, sz, NULL, gout, have_gout)) ||
      (st = bind_array(ctx, fn, "grad_final_states", s, FRNN_PORT_STATE, ROLE_GRAD_FINAL_STATE,
                       grad_final_states, false, sz, NULL, gfin, have_gfin)) ||
      (st = bind_array(ctx, fn, "grad_inputs", s, FRNN_PORT_INPUT, ROLE_GRAD_INPUT,
                       (const DLTensor *const *)grad_inputs, false, sz, in, gin_v, want_gin)) ||
      (st = bind_array(ctx, fn, "grad_states", s, FRNN_PORT_STATE, ROLE_GRAD_STATE,
                       (const DLTensor *const *)grad_states, false, sz, NULL, gst_v, want_gst)))
    return st;
  int nI = s->n_ports[FRNN_PORT_INPUT], nS = s->n_ports[FRNN_PORT_STATE],
      nO = s->n_ports[FRNN_PORT_OUTPUT];
  bool any = false;
  for (int k = 0; k < nI; k++) any |= want_gin[k];
  for (int k = 0; k < nS; k++) any |= want_gst[k];
  if (!any) return FRNN_OK; /* nothing wanted, nothing to write */

  bwd w;
  memset(&w, 0, sizeof w);
  if ((st = frnn_step_adjoint(s, &w.adj_step))) {
    if (s->ctx && s->ctx != ctx) *ctx = *s->ctx; /* its message is in the step's context */
    return st;
  }
  int64_t M = sz.M, N = sz.N, T = sz.T;
  state_layout l;
  size_t hist_n;
  if ((st = check_adjoint(ctx, s, w.adj_step))) goto done;
  if (!layout_states(s, M, N, &l) || !size_mul((size_t)T + 1, (size_t)l.total, &hist_n) ||
      !size_mul(hist_n, sizeof(double), &hist_n) || !(w.hist = malloc(hist_n)) ||
      !(w.gs = malloc((size_t)l.total * sizeof *w.gs)))
    goto nomem;
  if ((st = eval_init(ctx, &w.fwd, s, M, N)) || (st = eval_init(ctx, &w.adj, w.adj_step, M, N)))
    goto done;
  for (int k = 0; k < nI; k++) {
    if (!want_gin[k]) continue;
    const int64_t *x = in[k].extent;
    size_t n = (size_t)(x[0] * x[1] * x[2] * x[3] * x[4]); /* within sizes_check's bound */
    if (!(w.gin[k] = calloc(n, sizeof(double)))) goto nomem;
  }

  for (int64_t b = 0; b < sz.B; b++)
    for (int64_t h = 0; h < sz.H; h++) {
      /* Forward, keeping the states before each step: hist[t] feeds step t. */
      for (int k = 0; k < nS; k++)
        load_class(&s0[k], b, 0, h, s->ports[FRNN_PORT_STATE][k].cls, M, N, w.hist + l.off[k]);
      for (int64_t t = 0; t < T; t++)
        forward_step(&w.fwd, in, b, t, h, &l, w.hist + t * l.total, w.hist + (t + 1) * l.total);

      /* Gradients of the final states, then back through time. */
      for (int k = 0; k < nS; k++) {
        int c = s->ports[FRNN_PORT_STATE][k].cls;
        if (have_gfin[k])
          load_class(&gfin[k], b, 0, h, c, M, N, w.gs + l.off[k]);
        else
          memset(w.gs + l.off[k], 0, (size_t)(rows(c, M) * cols(c, N)) * sizeof *w.gs);
      }
      for (int64_t t = T - 1; t >= 0; t--) {
        for (int k = 0; k < nI; k++) {
          double *leaf = eval_leaf(&w.adj, FRNN_PORT_INPUT, k);
          if (leaf) load_class(&in[k], b, t, h, s->ports[FRNN_PORT_INPUT][k].cls, M, N, leaf);
        }
        for (int k = 0; k < nS; k++) {
          int c = s->ports[FRNN_PORT_STATE][k].cls;
          size_t n = (size_t)(rows(c, M) * cols(c, N)) * sizeof(double);
          double *leaf = eval_leaf(&w.adj, FRNN_PORT_INPUT, nI + k);
          if (leaf) memcpy(leaf, w.hist + t * l.total + l.off[k], n);
          leaf = eval_leaf(&w.adj, FRNN_PORT_INPUT, nI + nS + nO + k);
          if (leaf) memcpy(leaf, w.gs + l.off[k], n);
        }
        for (int k = 0; k < nO; k++) {
          int c = s->ports[FRNN_PORT_OUTPUT][k].cls;
          double *leaf = eval_leaf(&w.adj, FRNN_PORT_INPUT, nI + nS + k);
          if (!leaf) continue;
          if (have_gout[k])
            load_class(&gout[k], b, t, h, c, M, N, leaf);
          else
            memset(leaf, 0, (size_t)rows(c, M) * sizeof *leaf);
        }
        eval_step(&w.adj);
        for (int k = 0; k < nI; k++) {
          if (!want_gin[k]) continue;
          int c = s->ports[FRNN_PORT_INPUT][k].cls;
          int64_t R = rows(c, M), C = cols(c, N);
          for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++)
              w.gin[k][gin_index(&in[k], b, t, h, i, j)] +=
                  eval_port(&w.adj, FRNN_PORT_OUTPUT, k, i, j);
        }
        for (int k = 0; k < nS; k++) {
          int c = s->ports[FRNN_PORT_STATE][k].cls;
          int64_t R = rows(c, M), C = cols(c, N);
          for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++)
              w.gs[l.off[k] + i * C + j] = eval_port(&w.adj, FRNN_PORT_OUTPUT, nI + k, i, j);
        }
      }
      for (int k = 0; k < nS; k++)
        if (want_gst[k])
          store_class(&gst_v[k], b, 0, h, s->ports[FRNN_PORT_STATE][k].cls, M, N,
                      w.gs + l.off[k]);
    }

  /* The gradients of the inputs, summed over their broadcast dimensions. */
  for (int k = 0; k < nI; k++) {
    if (!want_gin[k]) continue;
    const int64_t *x = in[k].extent;
    for (int64_t b = 0; b < x[0]; b++)
      for (int64_t t = 0; t < x[1]; t++)
        for (int64_t h = 0; h < x[2]; h++)
          for (int64_t i = 0; i < x[3]; i++)
            for (int64_t j = 0; j < x[4]; j++)
              tview_store(&gin_v[k], b, t, h, i, j, w.gin[k][gin_index(&in[k], b, t, h, i, j)]);
  }
  st = FRNN_OK;
  goto done;
nomem:
  st = diag_fail(ctx, FRNN_E_NOMEM, "%s: out of memory (T=%lld, M=%lld, N=%lld)", fn,
                 (long long)T, (long long)M, (long long)N);
done:
  bwd_free(&w);
  return st;
}
