/* chunked.c - the chunked form of a step (docs/design-chunked.md), for the
 * diagonal class: one matrix state S whose next value is
 *     S' = S * d + sum_a c_a r_a
 * with d a scalar or a row and each c_a a column, r_a a row (scalar factors
 * on either), all independent of the states; every output a sum of
 *     o * sum(X * q)        (X = S or S', q a row, o a scalar or column)
 * and of terms independent of S.  GLA, retention, Mamba-2 and RWKV-6 are of
 * this form; the delta rule (a sum over N of S in its update) is not.
 *
 * chunk_form_of finds those terms as products of the step's own nodes, so a
 * kernel evaluates them per step with the step graph and multiplies.
 * chunk_forward_f64 runs the chunked algorithm with them in float64 on the
 * host: per chunk of L steps, with P_t the product of the decays from the
 * chunk's start to t (per column),
 *     S_t = S_0 * P_t + sum_{s<=t} c_s (r_s * P_t / P_s)
 *     y_t = o_t * ((S_0 (q_t * P_t)) + sum_{s<=t} c_s ((q_t * P_t) . (r_s / P_s)))
 * that is one [L,N]x[N,M] product for the carried state and a masked [L,L]
 * attention matrix times the values for the chunk itself: the algebra the
 * GPU kernels will follow, checked here against the reference executor.
 * (The ratios P_t / P_s are formed as products over (s, t], never by
 * division: the reference may not overflow where the step does not.) */
#include "frnn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A term while decomposing: sign * (the state, or S', or 1) times factors,
 * the first `inner` of them under a sum over N (summed: true). */
typedef struct term {
  int base; /* CHUNK_BASE_* */
  bool summed;
  double sign;
  chunk_product f;
  int inner;
} term;

typedef struct terms {
  int n;
  term t[CHUNK_MAX_TERMS];
  const char *why; /* non-NULL: not of the form, and why */
} terms;

static void fail(terms *out, const char *why) {
  if (!out->why) out->why = why;
}

/* Append factor x (divide: 1/x) to every term of ts. */
static void times(terms *ts, uint32_t x, bool divide) {
  for (int i = 0; i < ts->n; i++) {
    chunk_product *f = &ts->t[i].f;
    if (f->n == CHUNK_MAX_FACTORS) {
      fail(ts, "a term has too many factors");
      return;
    }
    f->node[f->n] = x;
    f->divide[f->n++] = divide;
  }
}

/* x as a sum of terms in S (the state node `state`) and S' (node `next`). */
static terms decompose(const frnn_step *s, const uint8_t *dep, uint32_t state, uint32_t next, uint32_t x) {
  terms out = {0};
  const node *n = &s->nodes[x];
  if (x == next && next != NODE_NONE) {
    out.n = 1;
    out.t[0] = (term){.base = CHUNK_BASE_NEXT, .sign = 1};
    return out;
  }
  if (!dep[x]) {
    out.n = 1;
    out.t[0] = (term){.base = CHUNK_BASE_ONE, .sign = 1, .f = {.n = 1, .node = {x}}};
    return out;
  }
  if (x == state) {
    out.n = 1;
    out.t[0] = (term){.base = CHUNK_BASE_STATE, .sign = 1};
    return out;
  }
  terms a, b;
  switch ((frnn_op)n->op) {
  case FRNN_OP_ADD:
  case FRNN_OP_SUB:
    a = decompose(s, dep, state, next, n->arg[0]);
    b = decompose(s, dep, state, next, n->arg[1]);
    if (a.why || b.why) return a.why ? a : b;
    if (a.n + b.n > CHUNK_MAX_TERMS) {
      fail(&a, "too many terms");
      return a;
    }
    for (int i = 0; i < b.n; i++) {
      a.t[a.n] = b.t[i];
      if (n->op == FRNN_OP_SUB) a.t[a.n].sign = -a.t[a.n].sign;
      a.n++;
    }
    return a;
  case FRNN_OP_NEG:
    a = decompose(s, dep, state, next, n->arg[0]);
    for (int i = 0; i < a.n; i++) a.t[i].sign = -a.t[i].sign;
    return a;
  case FRNN_OP_BCAST: return decompose(s, dep, state, next, n->arg[0]);
  case FRNN_OP_MUL:
  case FRNN_OP_DIV: {
    bool left_dep = dep[n->arg[0]], right_dep = dep[n->arg[1]];
    if (left_dep && right_dep) {
      fail(&out, "a product of two values that depend on the state");
      return out;
    }
    if (n->op == FRNN_OP_DIV && right_dep) {
      fail(&out, "a division by a value that depends on the state");
      return out;
    }
    a = decompose(s, dep, state, next, n->arg[left_dep ? 0 : 1]);
    if (!a.why) times(&a, n->arg[left_dep ? 1 : 0], n->op == FRNN_OP_DIV);
    return a;
  }
  case FRNN_OP_SUM:
    a = decompose(s, dep, state, next, n->arg[0]);
    if (!CLASS_HAS_N(s->nodes[n->arg[0]].cls)) return a; /* the identity */
    for (int i = 0; i < a.n; i++) {
      if (a.t[i].base == CHUNK_BASE_ONE) continue; /* stays a node of its own below */
      if (a.t[i].summed) {
        fail(&a, "a sum over N of a value already summed over N");
        return a;
      }
      a.t[i].summed = true;
      a.t[i].inner = a.t[i].f.n;
    }
    /* Independent terms under the sum: this node's value minus the state
     * terms is not a node of the step, so refuse (no example has one). */
    for (int i = 0; i < a.n; i++)
      if (a.t[i].base == CHUNK_BASE_ONE) fail(&a, "a sum over N of the state plus an independent value");
    return a;
  default:
    fail(&out, "an operation other than + - * / and sum over N on the state");
    return out;
  }
}

/* The class of a product of nodes (their M and N bits joined). */
static int product_class(const frnn_step *s, const chunk_product *f, int from, int to) {
  int c = FRNN_SCALAR;
  for (int i = from; i < to; i++) c |= s->nodes[f->node[i]].cls;
  return c;
}

/* Split independent matrix-class factors that are products into their
 * operands (v * k: a column and a row), so that an update is column x row. */
static bool flatten_outer(const frnn_step *s, chunk_product *f) {
  for (int i = 0; i < f->n; i++) {
    const node *n = &s->nodes[f->node[i]];
    if (n->cls != FRNN_MAT) continue;
    if (n->op == FRNN_OP_BCAST) {
      f->node[i] = n->arg[0];
      i--;
      continue;
    }
    if (n->op != FRNN_OP_MUL && !(n->op == FRNN_OP_DIV && !f->divide[i])) return false;
    if (f->n == CHUNK_MAX_FACTORS) return false;
    bool div = f->divide[i];
    f->node[f->n] = n->arg[1];
    f->divide[f->n++] = n->op == FRNN_OP_DIV ? !div : div;
    f->node[i] = n->arg[0];
    i--;
  }
  return true;
}

frnn_status chunk_form_of(frnn_ctx *ctx, const frnn_step *s, chunk_form *out) {
  memset(out, 0, sizeof *out);
  out->state = -1;
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) {
    if (s->ports[FRNN_PORT_STATE][i].cls != FRNN_MAT || out->state >= 0)
      return diag_fail(ctx, FRNN_E_UNSUPPORTED,
                       "step '%s': a chunked form needs exactly one state, of class [M,N]", s->name);
    out->state = i;
  }
  if (out->state < 0)
    return diag_fail(ctx, FRNN_E_UNSUPPORTED, "step '%s': a chunked form needs a [M,N] state", s->name);
  const port *sp = &s->ports[FRNN_PORT_STATE][out->state];
  uint8_t *dep = calloc(s->n_nodes ? s->n_nodes : 1, 1);
  if (!dep) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory analysing step '%s'", s->name);
  for (uint32_t v = 0; v < s->n_nodes; v++) {
    const node *n = &s->nodes[v];
    dep[v] = n->op == FRNN_OP_STATE;
    for (int k = 0; k < op_get(n->op)->arity; k++) dep[v] |= dep[n->arg[k]];
  }
  const char *why = NULL;
  /* The update: one term in S with a scalar or row factor, the rest
   * independent outer products. */
  terms u = decompose(s, dep, sp->leaf, NODE_NONE, sp->value);
  why = u.why;
  out->n_updates = 0;
  bool have_decay = false;
  for (int i = 0; i < u.n && !why; i++) {
    term *t = &u.t[i];
    if (t->base == CHUNK_BASE_STATE) {
      int c = product_class(s, &t->f, 0, t->f.n);
      if (t->summed) why = "the update sums the state over N (a low-rank transition, not a decay)";
      else if (have_decay) why = "the state appears in two terms of its update";
      else if (CLASS_HAS_M(c)) why = "the decay varies along M (a column or matrix decay)";
      out->decay = t->f;
      out->decay_sign = t->sign;
      have_decay = true;
      continue;
    }
    if (!flatten_outer(s, &t->f)) {
      why = "an update term is not a column times a row";
      continue;
    }
    for (int k = 0; k < t->f.n; k++)
      if (s->nodes[t->f.node[k]].cls == FRNN_MAT) why = "an update term is not a column times a row";
    if (out->n_updates == CHUNK_MAX_TERMS) why = "too many update terms";
    if (why) continue;
    out->update[out->n_updates] = t->f;
    out->update_sign[out->n_updates++] = t->sign;
  }
  if (!why && !have_decay) why = "the update does not carry the state (no decay term)";
  /* The outputs: o * sum(X * q) terms and independent ones. */
  for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT] && !why; k++) {
    const port *op = &s->ports[FRNN_PORT_OUTPUT][k];
    terms y = decompose(s, dep, sp->leaf, sp->value, op->value);
    why = y.why;
    chunk_output *co = &out->output[k];
    co->n_terms = 0;
    for (int i = 0; i < y.n && !why; i++) {
      term *t = &y.t[i];
      if (t->base != CHUNK_BASE_ONE && !t->summed) {
        why = "an output holds the state without a sum over N";
        break;
      }
      chunk_out_term *ot = &co->term[co->n_terms++];
      ot->base = t->base;
      ot->sign = t->sign;
      ot->inner.n = 0;
      ot->outer.n = 0;
      for (int f = 0; f < t->f.n; f++) {
        chunk_product *dst = f < t->inner && t->base != CHUNK_BASE_ONE ? &ot->inner : &ot->outer;
        dst->node[dst->n] = t->f.node[f];
        dst->divide[dst->n++] = t->f.divide[f];
      }
      if (t->base != CHUNK_BASE_ONE && CLASS_HAS_M(product_class(s, &ot->inner, 0, ot->inner.n)))
        why = "an output's weights under its sum over N vary along M";
      if (t->base != CHUNK_BASE_ONE && CLASS_HAS_N(product_class(s, &ot->outer, 0, ot->outer.n)))
        why = "an output's factor outside its sum over N varies along N";
    }
  }
  free(dep);
  if (why) return diag_fail(ctx, FRNN_E_UNSUPPORTED, "step '%s' has no chunked form: %s", s->name, why);
  out->decay_cls = product_class(s, &out->decay, 0, out->decay.n);
  return FRNN_OK;
}

/* ------------------------------------------------------------- printing */
static void put_product(strbuf *b, const frnn_step *s, const chunk_product *f, double sign) {
  if (sign < 0) sb_printf(b, "-");
  if (f->n == 0) sb_printf(b, "1");
  for (int i = 0; i < f->n; i++) {
    if (i || f->divide[i]) sb_printf(b, f->divide[i] ? (i ? " / " : "1 / ") : " * ");
    sb_printf(b, "(");
    print_expr(b, s, f->node[i]);
    sb_printf(b, ")");
  }
}

frnn_status chunk_form_describe(frnn_ctx *ctx, const frnn_step *s, char **out) {
  *out = NULL;
  strbuf b = {.ok = true};
  chunk_form cf;
  frnn_status st = chunk_form_of(ctx, s, &cf);
  sb_printf(&b, "# step %s: chunked form (docs/design-chunked.md, diagonal class)\n", s->name);
  if (st == FRNN_E_UNSUPPORTED) {
    sb_printf(&b, "none: %s\n", frnn_ctx_error(ctx));
  } else if (st) {
    free(b.data);
    return st;
  } else {
    const char *S = s->ports[FRNN_PORT_STATE][cf.state].name;
    static const char *const cls[4] = {"scalar", "column", "row", "matrix"};
    sb_printf(&b, "decay of %s (%s): ", S, cls[cf.decay_cls]);
    put_product(&b, s, &cf.decay, cf.decay_sign);
    sb_printf(&b, "\n");
    for (int i = 0; i < cf.n_updates; i++) {
      sb_printf(&b, "update %d (column x row): ", i + 1);
      put_product(&b, s, &cf.update[i], cf.update_sign[i]);
      sb_printf(&b, "\n");
    }
    for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT]; k++) {
      const chunk_output *co = &cf.output[k];
      sb_printf(&b, "output %s =", s->ports[FRNN_PORT_OUTPUT][k].name);
      for (int i = 0; i < co->n_terms; i++) {
        const chunk_out_term *t = &co->term[i];
        sb_printf(&b, "%s", t->sign < 0 ? (i ? " - " : " -") : i ? " + " : " ");
        if (t->base == CHUNK_BASE_ONE) {
          put_product(&b, s, &t->outer, 1);
          sb_printf(&b, " (independent of %s)", S);
          continue;
        }
        if (t->outer.n) {
          put_product(&b, s, &t->outer, 1);
          sb_printf(&b, " * ");
        }
        sb_printf(&b, "sum(%s%s * ", S, t->base == CHUNK_BASE_NEXT ? "'" : "");
        put_product(&b, s, &t->inner, 1);
        sb_printf(&b, ")");
      }
      sb_printf(&b, "\n");
    }
  }
  if (!b.ok) {
    free(b.data);
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory describing step '%s'", s->name);
  }
  *out = b.data;
  return FRNN_OK;
}

/* ------------------------------------------------- float64 chunked forward */
/* Element (i,j) of the product f as evaluated in e (classes broadcast). */
static double product_at(const step_eval *e, const chunk_product *f, int64_t i, int64_t j) {
  double x = 1;
  for (int k = 0; k < f->n; k++) {
    int c = e->step->nodes[f->node[k]].cls;
    int64_t C = CLASS_HAS_N(c) ? e->N : 1;
    double v = e->val[f->node[k]][(CLASS_HAS_M(c) ? i : 0) * C + (CLASS_HAS_N(c) ? j : 0)];
    x = f->divide[k] ? x / v : x * v;
  }
  return x;
}

frnn_status chunk_forward_f64(frnn_ctx *ctx, const frnn_step *s, const chunk_form *cf, frnn_sizes sz,
                              int64_t L, const double *const *in, const double *state0,
                              double *const *out, double *state1) {
  if (L < 1) return diag_fail(ctx, FRNN_E_ARG, "chunk_forward_f64: chunk length %lld", (long long)L);
  const int64_t M = sz.M, N = sz.N, T = sz.T;
  step_eval e;
  frnn_status st = eval_init(ctx, &e, s, M, N);
  if (st) return st;
  int n_in = s->n_ports[FRNN_PORT_INPUT], n_out = s->n_ports[FRNN_PORT_OUTPUT];
  /* Per step of a chunk: the decay d (N), the update's columns and rows
   * (per term, M and N), each output term's weights q (N) and outer factor
   * o (M), and the independent remainder (M); the products P. */
  size_t per_step = (size_t)N * 2 + (size_t)cf->n_updates * (size_t)(M + N) +
                    (size_t)CHUNK_MAX_TERMS * n_out * (size_t)(N + M) + (size_t)n_out * (size_t)M;
  double *buf = malloc(((size_t)L * per_step + (size_t)M * N * 2) * sizeof(double));
  if (!buf) {
    eval_free(&e);
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_forward_f64");
  }
#define D(t) (buf + (size_t)(t) * per_step)                       /* decay, N */
#define P(t) (D(t) + N)                                           /* product from the chunk start, N */
#define COL(t, a) (P(t) + N + (size_t)(a) * (size_t)(M + N))      /* update a's column, M */
#define ROW(t, a) (COL(t, a) + M)                                 /* its row, N */
#define QW(t, k, i) (COL(t, cf->n_updates) + ((size_t)(k) * CHUNK_MAX_TERMS + (size_t)(i)) * (size_t)(N + M))
#define OW(t, k, i) (QW(t, k, i) + N)
#define REST(t, k) (COL(t, cf->n_updates) + (size_t)CHUNK_MAX_TERMS * n_out * (size_t)(N + M) + (size_t)(k) * M)
  double *S = buf + (size_t)L * per_step, *S_end = S + (size_t)M * N;
  for (int64_t b = 0; b < sz.B; b++)
    for (int64_t h = 0; h < sz.H; h++) {
      memcpy(S, state0 + ((size_t)b * sz.H + h) * M * N, (size_t)M * N * sizeof(double));
      for (int64_t t0 = 0; t0 < T; t0 += L) {
        int64_t len = T - t0 < L ? T - t0 : L;
        /* The chunk's independent values, step by step (the state's leaf
         * holds zeros: nothing taken here depends on it). */
        for (int64_t u = 0; u < len; u++) {
          int64_t t = t0 + u;
          for (int i = 0; i < n_in; i++) {
            int c = s->ports[FRNN_PORT_INPUT][i].cls;
            int64_t R = CLASS_HAS_M(c) ? M : 1, C = CLASS_HAS_N(c) ? N : 1;
            memcpy(eval_leaf(&e, FRNN_PORT_INPUT, i), in[i] + (((size_t)b * T + t) * sz.H + h) * R * C,
                   (size_t)(R * C) * sizeof(double));
          }
          eval_step(&e);
          for (int64_t j = 0; j < N; j++) {
            D(u)[j] = cf->decay_sign * product_at(&e, &cf->decay, 0, j);
            P(u)[j] = (u ? P(u - 1)[j] : 1) * D(u)[j];
          }
          for (int a = 0; a < cf->n_updates; a++) {
            /* column x row: the column part's entries at j = 0, the row's at i = 0 */
            chunk_product colp = {0}, rowp = {0};
            for (int k = 0; k < cf->update[a].n; k++) {
              int c = s->nodes[cf->update[a].node[k]].cls;
              chunk_product *dst = CLASS_HAS_N(c) ? &rowp : &colp;
              dst->node[dst->n] = cf->update[a].node[k];
              dst->divide[dst->n++] = cf->update[a].divide[k];
            }
            for (int64_t i = 0; i < M; i++) COL(u, a)[i] = cf->update_sign[a] * product_at(&e, &colp, i, 0);
            for (int64_t j = 0; j < N; j++) ROW(u, a)[j] = product_at(&e, &rowp, 0, j);
          }
          for (int k = 0; k < n_out; k++) {
            const chunk_output *co = &cf->output[k];
            for (int64_t i = 0; i < M; i++) REST(u, k)[i] = 0;
            for (int q = 0; q < co->n_terms; q++) {
              const chunk_out_term *ot = &co->term[q];
              if (ot->base == CHUNK_BASE_ONE) {
                for (int64_t i = 0; i < M; i++) REST(u, k)[i] += ot->sign * product_at(&e, &ot->outer, i, 0);
                continue;
              }
              for (int64_t j = 0; j < N; j++) QW(u, k, q)[j] = product_at(&e, &ot->inner, 0, j);
              for (int64_t i = 0; i < M; i++) OW(u, k, q)[i] = ot->sign * product_at(&e, &ot->outer, i, 0);
            }
          }
        }
        /* Outputs: carried state plus the chunk's own updates. */
        for (int64_t u = 0; u < len; u++)
          for (int k = 0; k < n_out; k++) {
            const chunk_output *co = &cf->output[k];
            int ocls = s->ports[FRNN_PORT_OUTPUT][k].cls;
            double *y = out[k] + (((size_t)b * T + t0 + u) * sz.H + h) * (CLASS_HAS_M(ocls) ? M : 1);
            for (int64_t i = 0; i < (CLASS_HAS_M(ocls) ? M : 1); i++) y[i] = REST(u, k)[i];
            for (int q = 0; q < co->n_terms; q++) {
              const chunk_out_term *ot = &co->term[q];
              if (ot->base == CHUNK_BASE_ONE) continue;
              int64_t last = ot->base == CHUNK_BASE_NEXT ? u : u - 1; /* X = S_last */
              for (int64_t i = 0; i < (CLASS_HAS_M(ocls) ? M : 1); i++) {
                double acc = 0;
                for (int64_t j = 0; j < N; j++)
                  acc += S[i * N + j] * (last >= 0 ? P(last)[j] : 1) * QW(u, k, q)[j];
                for (int64_t v = 0; v <= last; v++) /* the attention (q P_last) . (r_v P_last / P_v) */
                  for (int a = 0; a < cf->n_updates; a++) {
                    double dot = 0;
                    for (int64_t j = 0; j < N; j++) {
                      double ratio = 1;
                      for (int64_t w = v + 1; w <= last; w++) ratio *= D(w)[j];
                      dot += QW(u, k, q)[j] * ratio * ROW(v, a)[j];
                    }
                    acc += COL(v, a)[i] * dot;
                  }
                y[i] += OW(u, k, q)[i] * acc;
              }
            }
          }
        /* The state at the chunk's end. */
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = 0; j < N; j++) {
            double x = S[i * N + j] * P(len - 1)[j];
            for (int64_t v = 0; v < len; v++) {
              double ratio = 1;
              for (int64_t w = v + 1; w < len; w++) ratio *= D(w)[j];
              for (int a = 0; a < cf->n_updates; a++) x += COL(v, a)[i] * ROW(v, a)[j] * ratio;
            }
            S_end[i * N + j] = x;
          }
        memcpy(S, S_end, (size_t)M * N * sizeof(double));
      }
      memcpy(state1 + ((size_t)b * sz.H + h) * M * N, S, (size_t)M * N * sizeof(double));
    }
#undef D
#undef P
#undef COL
#undef ROW
#undef QW
#undef OW
#undef REST
  free(buf);
  eval_free(&e);
  return FRNN_OK;
}
