/* chunked.c - the chunked form of a step (docs/design-chunked.md), for the
 * diagonal class: one matrix state S whose next value is
 *     S' = S * d + sum_a c_a r_a
 * with d a scalar or a row and each c_a a column, r_a a row (scalar factors
 * on either), all independent of the states; every output a sum of
 *     o * sum(X * q)        (X = S or S', q a row, o a scalar or column)
 * and of terms independent of S.  GLA, retention, Mamba-2 and RWKV-6 are of
 * this form.  The delta rules and RWKV-7 add rank-one terms sum(S * a) * b
 * to the update (the low-rank class): chunk_form_of finds them; the float64
 * forward solves each x_t = S_{t-1} a_t step by step within the chunk and
 * writes it like an update (x_t b_t^T); the backward takes the columns'
 * gradients by back substitution (the transposed solve), then treats each
 * a as one more read of the old state and x b^T as one more write; the
 * GPU form (chunk_gpu_make) does the same with an [L,L] inverse.
 *
 * chunk_form_of finds those terms as products of the step's own nodes, so a
 * kernel evaluates them per step with the step graph and multiplies.
 * chunk_forward_f64 and chunk_backward_f64 run the chunked algorithm with
 * them in float64 on the host: term values per step from the step graph,
 * then chunk_seq_forward / chunk_seq_backward on those (the decay's gradient
 * by the identity docs/design-chunked.md derives), then, backward, the chain
 * from the terms to the inputs through the adjoint of a "prologue" step made
 * of the terms' expressions.  Per chunk of L steps, with P_t the product of
 * the decays from the chunk's start to t (per column),
 *     S_t = S_0 * P_t + sum_{s<=t} c_s (r_s * P_t / P_s)
 *     y_t = o_t * ((S_0 (q_t * P_t)) + sum_{s<=t} c_s ((q_t * P_t) . (r_s / P_s)))
 * that is one [L,N]x[N,M] product for the carried state and a masked [L,L]
 * attention matrix times the values for the chunk itself: the algebra the
 * GPU kernels will follow, checked here against the reference executor
 * (outputs, final state, every gradient; test_chunked).
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
static int product_class(const frnn_step *s, const chunk_product *f) {
  int c = FRNN_SCALAR;
  for (int i = 0; i < f->n; i++) c |= s->nodes[f->node[i]].cls;
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
    if (t->base == CHUNK_BASE_STATE && t->summed) {
      /* sum(S * a) * b: a rank-one term, a (under the sum) and b rows or
       * scalars (the delta rules, RWKV-7) */
      chunk_product a = {.n = 0}, b = {.n = 0};
      for (int f = 0; f < t->f.n; f++) {
        chunk_product *dst = f < t->inner ? &a : &b;
        dst->node[dst->n] = t->f.node[f];
        dst->divide[dst->n++] = t->f.divide[f];
      }
      if (CLASS_HAS_M(product_class(s, &a)) || CLASS_HAS_M(product_class(s, &b)))
        why = "a term of the update that sums the state over N has a factor varying along M";
      else if (out->n_rank == CHUNK_MAX_TERMS)
        why = "too many terms summing the state over N";
      if (why) continue;
      out->rank_a[out->n_rank] = a;
      out->rank_b[out->n_rank] = b;
      out->rank_sign[out->n_rank++] = t->sign;
      continue;
    }
    if (t->base == CHUNK_BASE_STATE) {
      int c = product_class(s, &t->f);
      if (have_decay) why = "the state appears in two terms of its update";
      else if (CLASS_HAS_M(c) && CLASS_HAS_N(c)) why = "the decay varies along M and N (a matrix decay)";
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
  /* A decay along M (a column: GSA's key step) rides on the updates'
   * columns and the outputs; a rank-one term's columns would then need it
   * inside their solve (not built). */
  if (!why && out->n_rank && CLASS_HAS_M(product_class(s, &out->decay)))
    why = "the decay varies along M beside a term summing the state over N (not built)";
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
      if (t->base != CHUNK_BASE_ONE && CLASS_HAS_M(product_class(s, &ot->inner)))
        why = "an output's weights under its sum over N vary along M";
      if (t->base != CHUNK_BASE_ONE && CLASS_HAS_N(product_class(s, &ot->outer)))
        why = "an output's factor outside its sum over N varies along N";
    }
  }
  free(dep);
  if (why) return diag_fail(ctx, FRNN_E_UNSUPPORTED, "step '%s' has no chunked form: %s", s->name, why);
  out->decay_cls = product_class(s, &out->decay);
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
  sb_printf(&b, "# step %s: chunked form (docs/design-chunked.md%s)\n", s->name,
            st ? "" : cf.n_rank ? ", low-rank class" : ", diagonal class");
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
    for (int i = 0; i < cf.n_rank; i++) {
      sb_printf(&b, "rank one %d (low-rank class): %ssum(%s * ", i + 1, cf.rank_sign[i] < 0 ? "-" : "", S);
      put_product(&b, s, &cf.rank_a[i], 1);
      sb_printf(&b, ") * ");
      put_product(&b, s, &cf.rank_b[i], 1);
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

/* ------------------------------------------- the algebra over term values */
#define SEQ_D(q, t) ((q)->d + (size_t)(t) * (q)->N)
#define SEQ_C(q, t, a) ((q)->c + ((size_t)(t) * (q)->n_upd + (size_t)(a)) * (q)->M)
#define SEQ_R(q, t, a) ((q)->r + ((size_t)(t) * (q)->n_upd + (size_t)(a)) * (q)->N)
#define SEQ_W(q, t, k) ((q)->w + ((size_t)(t) * (q)->n_lin + (size_t)(k)) * (q)->N)
#define SEQ_O(q, t, k) ((q)->o + ((size_t)(t) * (q)->n_lin + (size_t)(k)) * (q)->M)
#define SEQ_A(q, t, k) ((q)->a + ((size_t)(t) * (q)->n_rank + (size_t)(k)) * (q)->N)
#define SEQ_B(q, t, k) ((q)->b + ((size_t)(t) * (q)->n_rank + (size_t)(k)) * (q)->N)

/* R(u, v)[j] = d_{v+1}[j] ... d_u[j] within the chunk starting at t0, for
 * -1 <= v <= u < len (P_u = R(u, -1)); a table [(u+1)(len+1) + (v+1)][j],
 * every entry a product (no quotient: decays may be 0 or negative). */
static double *ratio_table(const chunk_seq *q, int64_t t0, int64_t len) {
  int64_t n = len + 1, N = q->N;
  double *R = malloc((size_t)(n * n * N) * sizeof *R);
  if (!R) return NULL;
  for (int64_t u = -1; u < len; u++)
    for (int64_t j = 0; j < N; j++) {
      double x = 1;
      R[((u + 1) * n + (u + 1)) * N + j] = 1;
      for (int64_t v = u - 1; v >= -1; v--) {
        x *= SEQ_D(q, t0 + v + 1)[j];
        R[((u + 1) * n + (v + 1)) * N + j] = x;
      }
    }
  return R;
}
#define RAT(R, len, u, v, j) (R)[(((u) + 1) * ((len) + 1) + ((v) + 1)) * q->N + (j)]

/* One chunk of the forward as it is being computed: its start t0 and
 * length, the decay ratios R, the state before it, and the rank-one
 * columns x_t solved so far [len][n_rank][M]. */
typedef struct chunk_at {
  const chunk_seq *q;
  const double *R, *S0, *X;
  int64_t t0, len;
} chunk_at;

/* Write wr at step v of the chunk: an update's column and row, or a
 * rank-one term's x and b. */
static const double *write_col(const chunk_at *c, int64_t v, int wr) {
  const chunk_seq *q = c->q;
  return wr < q->n_upd ? SEQ_C(q, c->t0 + v, wr) : c->X + ((size_t)v * q->n_rank + (size_t)(wr - q->n_upd)) * q->M;
}
static const double *write_row(const chunk_at *c, int64_t v, int wr) {
  const chunk_seq *q = c->q;
  return wr < q->n_upd ? SEQ_R(q, c->t0 + v, wr) : SEQ_B(q, c->t0 + v, wr - q->n_upd);
}

/* Row i of S_l w, the state after step l of the chunk (S_0 at l = -1)
 * times a row w, from the chunk form:
 *     S_0 (w * P_l) + sum_{v<=l} col_v (w . (row_v * R(l, v))).
 * The outputs read the state so, and so does each rank-one column
 * x_t = S_{t-1} a_t. */
static double read_state(const chunk_at *c, const double *w, int64_t l, int64_t i) {
  const chunk_seq *q = c->q;
  const double *R = c->R;
  const int64_t N = q->N, len = c->len;
  double acc = 0;
  for (int64_t j = 0; j < N; j++) acc += c->S0[i * N + j] * RAT(R, len, l, -1, j) * w[j];
  for (int64_t v = 0; v <= l; v++)
    for (int wr = 0; wr < q->n_upd + q->n_rank; wr++) {
      const double *row = write_row(c, v, wr);
      double dot = 0;
      for (int64_t j = 0; j < N; j++) dot += w[j] * row[j] * RAT(R, len, l, v, j);
      acc += write_col(c, v, wr)[i] * dot;
    }
  return acc;
}

/* The rank-one terms' columns x_t = S_{t-1} a_t of c's chunk, step by step
 * (the triangular solve of design-chunked.md), into X [len][n_rank][M] (the
 * array c->X reads: each column is one more write x_t b_t^T for the next). */
static void solve_rank_columns(const chunk_at *c, double *X) {
  const chunk_seq *q = c->q;
  for (int64_t t = 0; t < c->len; t++)
    for (int kr = 0; kr < q->n_rank; kr++) {
      double *x = X + ((size_t)t * q->n_rank + (size_t)kr) * q->M;
      for (int64_t i = 0; i < q->M; i++) x[i] = read_state(c, SEQ_A(q, c->t0 + t, kr), t - 1, i);
    }
}

/* The same columns by the split form the chunked kernels are to take
 * (design-chunked.md, the low-rank kernels' next step 1): first what does
 * not depend on the chunk's state S_0, over the unknowns (t, k) in step
 * order (k: the rank-one term),
 *     G[(t,k)][(s,k')] = a_t^k . (b_s^k' * R(t-1, s)),  s < t (strictly lower),
 *     TI = (I - G)^-1,  A~[(t,k)] = a_t^k * P_{t-1},
 *     V[(t,k)] = sum_{s<t} sum_upd (a_t^k . (r_s * R(t-1, s))) c_s,
 *     W = TI A~ [n][N],  U = TI V [n][M];
 * then the one product that does: X = U + W S_0^T.  (The forward
 * substitution into TI is the kernels' invert_unit_lower.) */
static frnn_status split_rank_columns(const chunk_at *c, double *X) {
  const chunk_seq *q = c->q;
  const double *R = c->R;
  const int64_t M = q->M, N = q->N, len = c->len, K = q->n_rank, n = len * K;
  if (n == 0) return FRNN_OK; /* no rank-one term */
  double *G = calloc((size_t)(2 * n * n + n * N + n * M + n * N + n * M), sizeof *G);
  if (!G) return FRNN_E_NOMEM;
  double *TI = G + n * n, *At = TI + n * n, *V = At + n * N, *W = V + n * M, *U = W + n * N;
  for (int64_t t = 0; t < len; t++)
    for (int64_t k = 0; k < K; k++) {
      int64_t x = t * K + k;
      const double *a = SEQ_A(q, c->t0 + t, (int)k);
      for (int64_t j = 0; j < N; j++) At[x * N + j] = a[j] * RAT(R, len, t - 1, -1, j);
      for (int64_t v = 0; v < t; v++) {
        for (int64_t k2 = 0; k2 < K; k2++) {
          const double *b = SEQ_B(q, c->t0 + v, (int)k2);
          double dot = 0;
          for (int64_t j = 0; j < N; j++) dot += a[j] * b[j] * RAT(R, len, t - 1, v, j);
          G[x * n + v * K + k2] = dot;
        }
        for (int u = 0; u < q->n_upd; u++) {
          const double *r = SEQ_R(q, c->t0 + v, u), *col = SEQ_C(q, c->t0 + v, u);
          double dot = 0;
          for (int64_t j = 0; j < N; j++) dot += a[j] * r[j] * RAT(R, len, t - 1, v, j);
          for (int64_t i = 0; i < M; i++) V[x * M + i] += dot * col[i];
        }
      }
    }
  /* TI column by column: TI[x][y] = [x = y] + sum_{z<x} G[x][z] TI[z][y] */
  for (int64_t y = 0; y < n; y++)
    for (int64_t x = 0; x < n; x++) {
      double v = x == y;
      for (int64_t z = 0; z < x; z++) v += G[x * n + z] * TI[z * n + y];
      TI[x * n + y] = v;
    }
  for (int64_t x = 0; x < n; x++)
    for (int64_t z = 0; z <= x; z++) {
      for (int64_t j = 0; j < N; j++) W[x * N + j] += TI[x * n + z] * At[z * N + j];
      for (int64_t i = 0; i < M; i++) U[x * M + i] += TI[x * n + z] * V[z * M + i];
    }
  for (int64_t x = 0; x < n; x++)
    for (int64_t i = 0; i < M; i++) {
      double v = U[x * M + i];
      for (int64_t j = 0; j < N; j++) v += c->S0[i * N + j] * W[x * N + j];
      X[x * M + i] = v;
    }
  free(G);
  return FRNN_OK;
}

frnn_status chunk_seq_forward(frnn_ctx *ctx, const chunk_seq *q, int64_t L, const double *S0, double *y,
                              double *S_T, double *starts) {
  if (L < 1) return diag_fail(ctx, FRNN_E_ARG, "chunk_seq_forward: chunk length %lld", (long long)L);
  const int64_t M = q->M, N = q->N, T = q->T;
  double *S = malloc((size_t)(2 * M * N + L * q->n_rank * M + 1) * sizeof *S);
  if (!S) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_seq_forward");
  double *S_end = S + M * N, *X = S_end + M * N;
  memcpy(S, S0, (size_t)(M * N) * sizeof *S);
  for (int64_t t0 = 0, k = 0; t0 < T; t0 += L, k++) {
    int64_t len = T - t0 < L ? T - t0 : L;
    double *R = ratio_table(q, t0, len);
    if (!R) {
      free(S);
      return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_seq_forward");
    }
    if (starts) memcpy(starts + (size_t)k * M * N, S, (size_t)(M * N) * sizeof *S);
    chunk_at c = {.q = q, .R = R, .S0 = S, .X = X, .t0 = t0, .len = len};
    if (!q->rank_split) solve_rank_columns(&c, X);
    else if (split_rank_columns(&c, X)) {
      free(R);
      free(S);
      return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_seq_forward");
    }
    /* y_u = o * (X w), X the state before or after step u */
    for (int64_t u = 0; u < len; u++)
      for (int kk = 0; kk < q->n_lin; kk++) {
        int64_t l = q->lin_base[kk] == CHUNK_BASE_NEXT ? u : u - 1;
        const double *w = SEQ_W(q, t0 + u, kk), *o = SEQ_O(q, t0 + u, kk);
        double *yy = y + ((size_t)(t0 + u) * q->n_lin + (size_t)kk) * M;
        for (int64_t i = 0; i < M; i++) yy[i] = o[i] * read_state(&c, w, l, i);
      }
    /* S_end = S_0 * P_{len-1} + sum_v col_v (row_v * R(len-1, v))^T */
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double x = S[i * N + j] * RAT(R, len, len - 1, -1, j);
        for (int64_t v = 0; v < len; v++)
          for (int wr = 0; wr < q->n_upd + q->n_rank; wr++)
            x += write_col(&c, v, wr)[i] * write_row(&c, v, wr)[j] * RAT(R, len, len - 1, v, j);
        S_end[i * N + j] = x;
      }
    memcpy(S, S_end, (size_t)(M * N) * sizeof *S);
    free(R);
  }
  memcpy(S_T, S, (size_t)(M * N) * sizeof *S);
  free(S);
  return FRNN_OK;
}

/* A chunk's reads of its state: the outputs' linear terms (k < n_lin: their
 * weights w and old or new state) and the rank-one terms' a (x_t = S_{t-1}
 * a_t); l is the step whose state read k at step u sees (-1: S_0).  Its
 * writes are write_col / write_row's. */
static int64_t read_l(const chunk_seq *q, int k, int64_t u) {
  return k < q->n_lin && q->lin_base[k] == CHUNK_BASE_NEXT ? u : u - 1;
}
static double *read_w(const chunk_seq *q, int64_t t, int k) {
  return k < q->n_lin ? SEQ_W(q, t, k) : SEQ_A(q, t, k - q->n_lin);
}
static double *write_drow(const chunk_seq *g, int64_t t, int wr) {
  return wr < g->n_upd ? SEQ_R(g, t, wr) : SEQ_B(g, t, wr - g->n_upd);
}

/* The rank-one columns' gradients by the split form (design-chunked.md, the
 * low-rank kernels' next step 2): dH = Hy + dS_end Bhe^T, where neither
 *     Hy  = TI^T (what the outputs send back to the columns: F_b^T dY),
 *     Bhe = TI^T B~e (b_t * R(len-1, t), each column's row carried to the end)
 * depends on the gradient after the chunk; TI^T is applied by back
 * substitution with G's entries (split_rank_columns').  Gr [len][n_reads][M] holds the outputs'
 * read gradients (dy * o); the rank-one reads' are written. */
static frnn_status split_rank_gradients(const chunk_at *c, const double *dS, double *Gr, int n_reads) {
  const chunk_seq *q = c->q;
  const double *R = c->R;
  const int64_t M = q->M, N = q->N, len = c->len, K = q->n_rank;
  if (len * K == 0) return FRNN_OK; /* no rank-one term */
  double *Hy = calloc((size_t)(len * K * (M + N)), sizeof *Hy);
  if (!Hy) return FRNN_E_NOMEM;
  double *Bhe = Hy + len * K * M;
  for (int64_t t = len - 1; t >= 0; t--)
    for (int64_t k = 0; k < K; k++) {
      const double *b = SEQ_B(q, c->t0 + t, (int)k);
      double *hy = Hy + (t * K + k) * M, *be = Bhe + (t * K + k) * N;
      for (int64_t j = 0; j < N; j++) be[j] = RAT(R, len, len - 1, t, j) * b[j];
      for (int64_t u = t; u < len; u++)
        for (int kk = 0; kk < q->n_lin; kk++) { /* the outputs' reads that see x_t */
          int64_t l = read_l(q, kk, u);
          if (l < t) continue;
          const double *w = SEQ_W(q, c->t0 + u, kk), *gy = Gr + ((size_t)u * n_reads + (size_t)kk) * M;
          double dot = 0;
          for (int64_t j = 0; j < N; j++) dot += w[j] * b[j] * RAT(R, len, l, t, j);
          for (int64_t i = 0; i < M; i++) hy[i] += gy[i] * dot;
        }
      for (int64_t u = t + 1; u < len; u++) /* the later columns: G[(u,k2)][(t,k)] */
        for (int64_t k2 = 0; k2 < K; k2++) {
          const double *a = SEQ_A(q, c->t0 + u, (int)k2);
          double g = 0;
          for (int64_t j = 0; j < N; j++) g += a[j] * b[j] * RAT(R, len, u - 1, t, j);
          const double *hy2 = Hy + (u * K + k2) * M, *be2 = Bhe + (u * K + k2) * N;
          for (int64_t i = 0; i < M; i++) hy[i] += g * hy2[i];
          for (int64_t j = 0; j < N; j++) be[j] += g * be2[j];
        }
    }
  for (int64_t t = 0; t < len; t++)
    for (int64_t k = 0; k < K; k++) {
      double *gx = Gr + ((size_t)t * n_reads + (size_t)(q->n_lin + k)) * M;
      const double *hy = Hy + (t * K + k) * M, *be = Bhe + (t * K + k) * N;
      for (int64_t i = 0; i < M; i++) {
        double v = hy[i];
        for (int64_t j = 0; j < N; j++) v += dS[i * N + j] * be[j];
        gx[i] = v;
      }
    }
  free(Hy);
  return FRNN_OK;
}

frnn_status chunk_seq_backward(frnn_ctx *ctx, const chunk_seq *q, int64_t L, const double *starts,
                               const double *S_T, const double *dy, const double *dS_T, chunk_seq *g,
                               double *dS0) {
  if (L < 1) return diag_fail(ctx, FRNN_E_ARG, "chunk_seq_backward: chunk length %lld", (long long)L);
  const int64_t M = q->M, N = q->N, T = q->T;
  const int n_reads = q->n_lin + q->n_rank, n_writes = q->n_upd + q->n_rank;
  size_t n_X = (size_t)(L * q->n_rank * M), n_G = (size_t)(L * n_reads * M);
  double *dS = malloc((size_t)(2 * M * N + 2 * N) * sizeof *dS + (n_X + n_G + 1) * sizeof(double));
  if (!dS) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_seq_backward");
  double *dS_prev = dS + M * N, *lam = dS_prev + M * N, *run = lam + N, *X = run + N, *Gr = X + n_X;
#define GR(u, k) (Gr + ((size_t)(u) * n_reads + (size_t)(k)) * M)
  memcpy(dS, dS_T, (size_t)(M * N) * sizeof *dS);
  int64_t n_chunks = (T + L - 1) / L;
  for (int64_t k = n_chunks - 1; k >= 0; k--) {
    int64_t t0 = k * L, len = T - t0 < L ? T - t0 : L;
    const double *S0 = starts + (size_t)k * M * N;
    const double *S_end = k + 1 < n_chunks ? starts + (size_t)(k + 1) * M * N : S_T;
    double *R = ratio_table(q, t0, len);
    if (!R) {
      free(dS);
      return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_seq_backward");
    }
    chunk_at c = {.q = q, .R = R, .S0 = S0, .X = X, .t0 = t0, .len = len};
    if (!q->rank_split) solve_rank_columns(&c, X); /* again, as the forward solved them */
    else if (split_rank_columns(&c, X)) {
      free(R);
      free(dS);
      return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_seq_backward");
    }
    for (int64_t t = t0; t < t0 + len; t++) {
      memset(SEQ_D(g, t), 0, (size_t)N * sizeof(double));
      for (int a = 0; a < q->n_upd; a++) {
        memset(SEQ_C(g, t, a), 0, (size_t)M * sizeof(double));
        memset(SEQ_R(g, t, a), 0, (size_t)N * sizeof(double));
      }
      for (int a = 0; a < q->n_rank; a++) memset(SEQ_B(g, t, a), 0, (size_t)N * sizeof(double));
    }
    /* Each read's gradient: an output term's dy * o; a rank-one column's
     * from the writes after it (design-chunked.md: dH = (I - G_ab)^-T dX,
     * here back substitution, last step first): what reaches x_t through
     * b_t, from the outputs, the later columns and the chunk's end state. */
    for (int64_t u = 0; u < len; u++)
      for (int kk = 0; kk < q->n_lin; kk++) {
        const double *yy = dy + ((size_t)(t0 + u) * q->n_lin + (size_t)kk) * M, *o = SEQ_O(q, t0 + u, kk);
        for (int64_t i = 0; i < M; i++) GR(u, kk)[i] = yy[i] * o[i];
      }
    if (q->rank_split && split_rank_gradients(&c, dS, Gr, n_reads)) {
      free(R);
      free(dS);
      return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_seq_backward");
    }
    for (int64_t t = len - 1; t >= 0 && !q->rank_split; t--)
      for (int kr = 0; kr < q->n_rank; kr++) {
        double *gx = GR(t, q->n_lin + kr);
        const double *row = SEQ_B(q, t0 + t, kr);
        for (int64_t i = 0; i < M; i++) {
          double acc = 0;
          for (int64_t j = 0; j < N; j++) acc += dS[i * N + j] * RAT(R, len, len - 1, t, j) * row[j];
          gx[i] = acc;
        }
        for (int64_t u = t; u < len; u++)
          for (int kk = 0; kk < n_reads; kk++) {
            int64_t l = read_l(q, kk, u);
            if (l < t) continue;
            const double *w = read_w(q, t0 + u, kk);
            double dot = 0;
            for (int64_t j = 0; j < N; j++) dot += w[j] * row[j] * RAT(R, len, l, t, j);
            for (int64_t i = 0; i < M; i++) gx[i] += GR(u, kk)[i] * dot;
          }
      }
    /* The gradient of the state before the chunk: through P and the end. */
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) dS_prev[i * N + j] = dS[i * N + j] * RAT(R, len, len - 1, -1, j);
    /* Writes from the chunk's end state: dc_v += (dS_end * R(len-1, v)) r_v
     * (updates; a rank-one column's is in its read's gradient already),
     * drow_v += R(len-1, v) * (dS_end^T col_v). */
    for (int64_t v = 0; v < len; v++)
      for (int wr = 0; wr < n_writes; wr++) {
        const double *col = write_col(&c, v, wr), *row = write_row(&c, v, wr);
        double *drow = write_drow(g, t0 + v, wr);
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = 0; j < N; j++) {
            double f = dS[i * N + j] * RAT(R, len, len - 1, v, j);
            if (wr < q->n_upd) SEQ_C(g, t0 + v, wr)[i] += f * row[j];
            drow[j] += f * col[i];
          }
      }
    /* Reads: dw, (outputs) do, and their share of the writes' gradients
     * and of dS_0. */
    for (int64_t u = 0; u < len; u++)
      for (int kk = 0; kk < n_reads; kk++) {
        bool out = kk < q->n_lin;
        int64_t l = read_l(q, kk, u);
        const double *w = read_w(q, t0 + u, kk), *gu = GR(u, kk);
        double *dw = read_w(g, t0 + u, kk), *dO = out ? SEQ_O(g, t0 + u, kk) : NULL;
        for (int64_t j = 0; j < N; j++) {
          double acc = 0;
          for (int64_t i = 0; i < M; i++) acc += S0[i * N + j] * gu[i];
          dw[j] = RAT(R, len, l, -1, j) * acc;
        }
        for (int64_t i = 0; i < M; i++) {
          if (dO) { /* X w so far: the chunk's part below */
            double acc = 0;
            for (int64_t j = 0; j < N; j++) acc += S0[i * N + j] * RAT(R, len, l, -1, j) * w[j];
            dO[i] = acc;
          }
          for (int64_t j = 0; j < N; j++) dS_prev[i * N + j] += gu[i] * w[j] * RAT(R, len, l, -1, j);
        }
        for (int64_t v = 0; v <= l; v++)
          for (int wr = 0; wr < n_writes; wr++) {
            const double *col = write_col(&c, v, wr), *row = write_row(&c, v, wr);
            double A = 0, dot = 0; /* g . col_v and w . (row_v * R(l, v)) */
            for (int64_t i = 0; i < M; i++) A += gu[i] * col[i];
            for (int64_t j = 0; j < N; j++) dot += w[j] * row[j] * RAT(R, len, l, v, j);
            for (int64_t i = 0; i < M; i++) {
              if (dO) dO[i] += col[i] * dot;
              if (wr < q->n_upd) SEQ_C(g, t0 + v, wr)[i] += gu[i] * dot;
            }
            double *drow = write_drow(g, t0 + v, wr);
            for (int64_t j = 0; j < N; j++) {
              dw[j] += A * row[j] * RAT(R, len, l, v, j);
              drow[j] += A * w[j] * RAT(R, len, l, v, j);
            }
          }
        if (dO) {
          const double *yy = dy + ((size_t)(t0 + u) * q->n_lin + (size_t)kk) * M;
          for (int64_t i = 0; i < M; i++) dO[i] *= yy[i];
        }
      }
    /* The decay, without S_s or D_s: d_w dd_w = sum_{s>=w} (a_s - b_s) +
     * sum_i dS_end * S_end, with a_s = w * dw over the reads of S_s and
     * b_s = row_s * drow_s over the writes at s (docs/design-chunked.md). */
    for (int64_t j = 0; j < N; j++) {
      double e = 0;
      for (int64_t i = 0; i < M; i++) e += dS[i * N + j] * S_end[i * N + j];
      run[j] = e;
    }
    for (int64_t s = len - 1; s >= 0; s--) {
      for (int64_t j = 0; j < N; j++) lam[j] = 0;
      for (int64_t u = 0; u < len; u++)
        for (int kk = 0; kk < n_reads; kk++) {
          if (read_l(q, kk, u) != s) continue;
          for (int64_t j = 0; j < N; j++) lam[j] += read_w(q, t0 + u, kk)[j] * read_w(g, t0 + u, kk)[j];
        }
      for (int wr = 0; wr < n_writes; wr++)
        for (int64_t j = 0; j < N; j++) lam[j] -= write_row(&c, s, wr)[j] * write_drow(g, t0 + s, wr)[j];
      for (int64_t j = 0; j < N; j++) {
        run[j] += lam[j];
        SEQ_D(g, t0 + s)[j] = run[j] / SEQ_D(q, t0 + s)[j]; /* the gradient of log d, over d */
      }
    }
    memcpy(dS, dS_prev, (size_t)(M * N) * sizeof *dS);
    free(R);
  }
#undef GR
  memcpy(dS0, dS, (size_t)(M * N) * sizeof *dS);
  free(dS);
  return FRNN_OK;
}
#undef RAT

/* A decay along M: every row is a recurrence with a scalar decay of its own
 * (design-chunked.md, "Decays along M"), so the algebra by chunks runs row
 * by row.  Row i's sequence: its entries of the columns (c, o), the rows'
 * vectors as they are (r, w), and d_t[i] broadcast along N (a row decay of
 * equal entries: its gradient summed over N is d_t[i]'s).  dcol [T][M]. */
typedef struct col_rows {
  chunk_seq qi, gi; /* one row's terms and their gradients */
  double *y, *dy, *starts, *S_T, *buf;
} col_rows;

static frnn_status col_rows_init(frnn_ctx *ctx, const chunk_seq *q, int64_t L, col_rows *cr) {
  const int64_t T = q->T, N = q->N;
  int nu = q->n_upd, nl = q->n_lin;
  size_t n = (size_t)T * (2 * N + 2 * nu + (size_t)nu * N + (size_t)nl * N + 4 * nl) + (size_t)((T + L - 1) / L) * N +
             (size_t)N;
  cr->buf = calloc(n + 1, sizeof(double));
  if (!cr->buf) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in the column decay's float64 algebra");
  double *at = cr->buf;
  cr->qi = (chunk_seq){.T = T, .M = 1, .N = N, .n_upd = nu, .n_lin = nl, .lin_base = q->lin_base, .r = q->r, .w = q->w};
  cr->gi = cr->qi;
  cr->qi.d = at, at += (size_t)T * N;
  cr->qi.c = at, at += (size_t)T * nu;
  cr->qi.o = at, at += (size_t)T * nl;
  cr->gi.d = at, at += (size_t)T * N;
  cr->gi.c = at, at += (size_t)T * nu;
  cr->gi.r = at, at += (size_t)T * nu * N;
  cr->gi.w = at, at += (size_t)T * nl * N;
  cr->gi.o = at, at += (size_t)T * nl;
  cr->y = at, at += (size_t)T * nl;
  cr->dy = at, at += (size_t)T * nl;
  cr->S_T = at, at += (size_t)N;
  cr->starts = at;
  return FRNN_OK;
}

/* Row i's terms from q and dcol into cr->qi. */
static void col_row(const chunk_seq *q, const double *dcol, int64_t i, col_rows *cr) {
  for (int64_t t = 0; t < q->T; t++) {
    for (int64_t j = 0; j < q->N; j++) SEQ_D(&cr->qi, t)[j] = dcol[t * q->M + i];
    for (int a = 0; a < q->n_upd; a++) SEQ_C(&cr->qi, t, a)[0] = SEQ_C(q, t, a)[i];
    for (int k = 0; k < q->n_lin; k++) SEQ_O(&cr->qi, t, k)[0] = SEQ_O(q, t, k)[i];
  }
}

/* chunk_seq_forward for a decay along M (no rank-one term): y [T][n_lin][M]. */
static frnn_status col_seq_forward(frnn_ctx *ctx, const chunk_seq *q, const double *dcol, int64_t L,
                                   const double *S0, double *y, double *S_T) {
  col_rows cr;
  frnn_status st = col_rows_init(ctx, q, L, &cr);
  for (int64_t i = 0; i < q->M && !st; i++) {
    col_row(q, dcol, i, &cr);
    st = chunk_seq_forward(ctx, &cr.qi, L, S0 + i * q->N, cr.y, S_T + i * q->N, NULL);
    for (int64_t t = 0; t < q->T && !st; t++)
      for (int k = 0; k < q->n_lin; k++) y[((size_t)t * q->n_lin + (size_t)k) * q->M + i] = cr.y[t * q->n_lin + k];
  }
  free(cr.buf);
  return st;
}

/* chunk_seq_backward for a decay along M: dy as y; into g (its c, r, w, o;
 * r and w summed over the rows), dcol_grad [T][M] and dS0. */
static frnn_status col_seq_backward(frnn_ctx *ctx, const chunk_seq *q, const double *dcol, int64_t L,
                                    const double *S0, const double *dy, const double *dS_T, chunk_seq *g,
                                    double *dcol_grad, double *dS0) {
  const int64_t T = q->T, M = q->M, N = q->N;
  col_rows cr;
  frnn_status st = col_rows_init(ctx, q, L, &cr);
  if (st) return st;
  memset(g->r, 0, (size_t)(T * q->n_upd * N) * sizeof(double));
  memset(g->w, 0, (size_t)(T * q->n_lin * N) * sizeof(double));
  for (int64_t i = 0; i < M && !st; i++) {
    col_row(q, dcol, i, &cr);
    for (int64_t t = 0; t < T; t++)
      for (int k = 0; k < q->n_lin; k++) cr.dy[t * q->n_lin + k] = dy[((size_t)t * q->n_lin + (size_t)k) * M + i];
    if ((st = chunk_seq_forward(ctx, &cr.qi, L, S0 + i * N, cr.y, cr.S_T, cr.starts)) ||
        (st = chunk_seq_backward(ctx, &cr.qi, L, cr.starts, cr.S_T, cr.dy, dS_T + i * N, &cr.gi, dS0 + i * N)))
      break;
    for (int64_t t = 0; t < T; t++) {
      double dd = 0;
      for (int64_t j = 0; j < N; j++) dd += SEQ_D(&cr.gi, t)[j];
      dcol_grad[t * M + i] = dd;
      for (int a = 0; a < q->n_upd; a++) {
        SEQ_C(g, t, a)[i] = SEQ_C(&cr.gi, t, a)[0];
        for (int64_t j = 0; j < N; j++) SEQ_R(g, t, a)[j] += SEQ_R(&cr.gi, t, a)[j];
      }
      for (int k = 0; k < q->n_lin; k++) {
        SEQ_O(g, t, k)[i] = SEQ_O(&cr.gi, t, k)[0];
        for (int64_t j = 0; j < N; j++) SEQ_W(g, t, k)[j] += SEQ_W(&cr.gi, t, k)[j];
      }
    }
  }
  free(cr.buf);
  return st;
}

/* ------------------------------------------------- float64 chunked forward */
/* Where element (i,j) of node v's value lies in its buffer (classes
 * broadcast: a dimension the class lacks reads index 0). */
static size_t node_index(const step_eval *e, uint32_t v, int64_t i, int64_t j) {
  int c = e->step->nodes[v].cls;
  return (size_t)((CLASS_HAS_M(c) ? i : 0) * (CLASS_HAS_N(c) ? e->N : 1) + (CLASS_HAS_N(c) ? j : 0));
}

/* Element (i,j) of the product f as evaluated in e. */
static double product_at(const step_eval *e, const chunk_product *f, int64_t i, int64_t j) {
  double x = 1;
  for (int k = 0; k < f->n; k++) {
    double v = e->val[f->node[k]][node_index(e, f->node[k], i, j)];
    x = f->divide[k] ? x / v : x * v;
  }
  return x;
}

/* The output terms linear in the state, flattened: output and term index. */
typedef struct lin_terms {
  int n, out[FRNN_MAX_PORTS * CHUNK_MAX_TERMS], term[FRNN_MAX_PORTS * CHUNK_MAX_TERMS],
      base[FRNN_MAX_PORTS * CHUNK_MAX_TERMS];
} lin_terms;

static void flatten_lin(const frnn_step *s, const chunk_form *cf, lin_terms *lt) {
  lt->n = 0;
  for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT]; k++)
    for (int t = 0; t < cf->output[k].n_terms; t++)
      if (cf->output[k].term[t].base != CHUNK_BASE_ONE)
        lt->out[lt->n] = k, lt->term[lt->n] = t, lt->base[lt->n++] = cf->output[k].term[t].base;
}

/* An update's factors split into its column (scalars too) and its row. */
static void split_update(const frnn_step *s, const chunk_product *u, chunk_product *colp, chunk_product *rowp) {
  colp->n = rowp->n = 0;
  for (int k = 0; k < u->n; k++) {
    chunk_product *dst = CLASS_HAS_N(s->nodes[u->node[k]].cls) ? rowp : colp;
    dst->node[dst->n] = u->node[k];
    dst->divide[dst->n++] = u->divide[k];
  }
}

/* Evaluate the step at step t of head (b,h).  The state's leaf holds zeros:
 * no term read from e depends on it. */
static void eval_at(step_eval *e, frnn_sizes sz, const double *const *in, int64_t b, int64_t h, int64_t t) {
  const frnn_step *s = e->step;
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    int c = s->ports[FRNN_PORT_INPUT][i].cls;
    int64_t R = CLASS_HAS_M(c) ? sz.M : 1, C = CLASS_HAS_N(c) ? sz.N : 1;
    memcpy(eval_leaf(e, FRNN_PORT_INPUT, i), in[i] + (((size_t)b * sz.T + t) * sz.H + h) * R * C,
           (size_t)(R * C) * sizeof(double));
  }
  eval_step(e);
}

/* Step t's term values, from the step as eval_at left it in e, into q, and
 * (unless rest is NULL) the independent remainder of each output, rest
 * [n_out][M].  The decay goes into q's d, or a decay along M into dcol
 * [T][M] (col_seq_forward's). */
static void eval_terms(const step_eval *e, const chunk_form *cf, const lin_terms *lt, int64_t t, chunk_seq *q,
                       double *rest, double *dcol) {
  const frnn_step *s = e->step;
  const int64_t M = e->M, N = e->N;
  if (cf->decay_cls == FRNN_COL)
    for (int64_t i = 0; i < M; i++) dcol[t * M + i] = cf->decay_sign * product_at(e, &cf->decay, i, 0);
  else
    for (int64_t j = 0; j < N; j++) SEQ_D(q, t)[j] = cf->decay_sign * product_at(e, &cf->decay, 0, j);
  for (int a = 0; a < cf->n_updates; a++) {
    chunk_product colp, rowp;
    split_update(s, &cf->update[a], &colp, &rowp);
    for (int64_t i = 0; i < M; i++) SEQ_C(q, t, a)[i] = cf->update_sign[a] * product_at(e, &colp, i, 0);
    for (int64_t j = 0; j < N; j++) SEQ_R(q, t, a)[j] = product_at(e, &rowp, 0, j);
  }
  for (int a = 0; a < q->n_rank; a++)
    for (int64_t j = 0; j < N; j++) {
      SEQ_A(q, t, a)[j] = product_at(e, &cf->rank_a[a], 0, j);
      SEQ_B(q, t, a)[j] = cf->rank_sign[a] * product_at(e, &cf->rank_b[a], 0, j);
    }
  for (int kk = 0; kk < lt->n; kk++) {
    const chunk_out_term *ot = &cf->output[lt->out[kk]].term[lt->term[kk]];
    for (int64_t j = 0; j < N; j++) SEQ_W(q, t, kk)[j] = product_at(e, &ot->inner, 0, j);
    for (int64_t i = 0; i < M; i++) SEQ_O(q, t, kk)[i] = ot->sign * product_at(e, &ot->outer, i, 0);
  }
  for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT] && rest; k++) {
    double *re = rest + (size_t)k * M;
    for (int64_t i = 0; i < M; i++) re[i] = 0;
    for (int t2 = 0; t2 < cf->output[k].n_terms; t2++) {
      const chunk_out_term *ot = &cf->output[k].term[t2];
      if (ot->base == CHUNK_BASE_ONE)
        for (int64_t i = 0; i < M; i++) re[i] += ot->sign * product_at(e, &ot->outer, i, 0);
    }
  }
}

/* Term arrays for one head over T steps: q's pointers into one allocation. */
static double *seq_alloc(chunk_seq *q, int64_t T, int64_t M, int64_t N, int n_upd, int n_rank,
                         const lin_terms *lt, size_t extra) {
  *q = (chunk_seq){.T = T, .M = M, .N = N, .n_upd = n_upd, .n_lin = lt->n, .lin_base = lt->base, .n_rank = n_rank};
  size_t per_t = (size_t)N + (size_t)n_upd * (size_t)(M + N) + (size_t)lt->n * (size_t)(N + M) +
                 (size_t)n_rank * (size_t)(2 * N);
  double *buf = calloc((size_t)T * per_t + extra + 1, sizeof(double));
  if (!buf) return NULL;
  q->d = buf;
  q->c = q->d + (size_t)T * N;
  q->r = q->c + (size_t)T * n_upd * M;
  q->w = q->r + (size_t)T * n_upd * N;
  q->a = q->w + (size_t)T * lt->n * N;
  q->b = q->a + (size_t)T * n_rank * N;
  q->o = q->b + (size_t)T * n_rank * N;
  return buf;
}


frnn_status chunk_forward_f64(frnn_ctx *ctx, const frnn_step *s, const chunk_form *cf, frnn_sizes sz,
                              int64_t L, const double *const *in, const double *state0,
                              double *const *out, double *state1) {
  if (L < 1) return diag_fail(ctx, FRNN_E_ARG, "chunk_forward_f64: chunk length %lld", (long long)L);
  const int64_t M = sz.M, N = sz.N, T = sz.T;
  bool col = cf->decay_cls == FRNN_COL; /* row by row (col_seq_forward) */
  int n_out = s->n_ports[FRNN_PORT_OUTPUT];
  lin_terms lt;
  flatten_lin(s, cf, &lt);
  size_t n_y = (size_t)T * lt.n * M, n_rest = (size_t)T * n_out * M;
  chunk_seq q;
  step_eval e;
  frnn_status st = eval_init(ctx, &e, s, M, N);
  if (st) return st;
  double *buf = seq_alloc(&q, T, M, N, cf->n_updates, cf->n_rank, &lt, n_y + n_rest + (col ? (size_t)(T * M) : 0));
  if (!buf) {
    eval_free(&e);
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_forward_f64");
  }
  double *y = q.o + (size_t)T * lt.n * M, *rest = y + n_y, *dcol = rest + n_rest;
  for (int64_t b = 0; b < sz.B && !st; b++)
    for (int64_t h = 0; h < sz.H && !st; h++) {
      for (int64_t t = 0; t < T; t++) {
        eval_at(&e, sz, in, b, h, t);
        eval_terms(&e, cf, &lt, t, &q, rest + (size_t)t * n_out * M, dcol);
      }
      size_t head = (size_t)b * sz.H + (size_t)h;
      st = col ? col_seq_forward(ctx, &q, dcol, L, state0 + head * M * N, y, state1 + head * M * N)
               : chunk_seq_forward(ctx, &q, L, state0 + head * M * N, y, state1 + head * M * N, NULL);
      for (int64_t t = 0; t < T && !st; t++)
        for (int k = 0; k < n_out; k++) {
          int64_t rows = CLASS_HAS_M(s->ports[FRNN_PORT_OUTPUT][k].cls) ? M : 1;
          double *yo = out[k] + (((size_t)b * T + t) * sz.H + h) * rows;
          for (int64_t i = 0; i < rows; i++) yo[i] = rest[((size_t)t * n_out + k) * M + i];
          for (int kk = 0; kk < lt.n; kk++)
            if (lt.out[kk] == k)
              for (int64_t i = 0; i < rows; i++) yo[i] += y[((size_t)t * lt.n + kk) * M + i];
        }
    }
  free(buf);
  eval_free(&e);
  return st;
}

/* ------------------------------------------------ float64 chunked backward */
/* The factor nodes of a form, each once: the prologue's outputs. */
typedef struct seeds {
  int n;
  uint32_t node[4 * CHUNK_MAX_TERMS * CHUNK_MAX_FACTORS + FRNN_MAX_PORTS * CHUNK_MAX_TERMS * 2 * CHUNK_MAX_FACTORS];
  double *val[4 * CHUNK_MAX_TERMS * CHUNK_MAX_FACTORS + FRNN_MAX_PORTS * CHUNK_MAX_TERMS * 2 * CHUNK_MAX_FACTORS];
} seeds;

static int seed_of(seeds *sd, uint32_t node) {
  for (int k = 0; k < sd->n; k++)
    if (sd->node[k] == node) return k;
  sd->node[sd->n] = node;
  return sd->n++;
}

static void add_product(seeds *sd, const chunk_product *f) {
  for (int k = 0; k < f->n; k++) seed_of(sd, f->node[k]);
}

/* The gradient of a product's value, grad (over rows if along_m, else over
 * columns), added to its factors' seeds at (b,t,h) by the product rule
 * (each factor's partner product formed without dividing). */
static void seed_product(const step_eval *e, seeds *sd, const chunk_product *f, double sign, const double *grad,
                         bool along_m, frnn_sizes sz, int64_t b, int64_t t, int64_t h) {
  const frnn_step *s = e->step;
  int64_t n = along_m ? sz.M : sz.N;
  for (int k = 0; k < f->n; k++) {
    int c = s->nodes[f->node[k]].cls;
    int64_t R = CLASS_HAS_M(c) ? sz.M : 1, C = CLASS_HAS_N(c) ? sz.N : 1;
    double *dst = sd->val[seed_of(sd, f->node[k])] + (((size_t)b * sz.T + t) * sz.H + h) * R * C;
    for (int64_t x = 0; x < n; x++) {
      int64_t i = along_m ? x : 0, j = along_m ? 0 : x;
      double other = sign;
      for (int m = 0; m < f->n; m++)
        if (m != k) {
          double v = e->val[f->node[m]][node_index(e, f->node[m], i, j)];
          other = f->divide[m] ? other / v : other * v;
        }
      size_t at = node_index(e, f->node[k], i, j);
      double fk = e->val[f->node[k]][at];
      dst[at] += grad[x] * (f->divide[k] ? -other / (fk * fk) : other);
    }
  }
}

static const char *const class_text[4] = {"[1,1]", "[M,1]", "[1,N]", "[M,N]"};

/* The prologue as a step: the inputs of s and one seed per factor node, and
 * z = sum over the factors of sum(sum_m(factor * seed)); its gradient with
 * respect to the inputs is the chain from the factors' gradients (the
 * seeds) to the inputs.  Step text through print_expr, so that parse and
 * adjoint.c build it as they build any step.  (A dummy state, as every step
 * needs one.) */
/* A seeded prologue, as step text parsed like any step: step `name` of the
 * inputs of s and n seeds (frnn_seedK of class cls[K]), with
 *   frnn_z = 0 + sum over K of sum(sum_m((expression K) * frnn_seedK)),
 * the expression written by put(b, arg, K).  Its gradient with respect to the
 * inputs, seeded, is the chain from values' gradients to the inputs'.  (A
 * dummy state, as every step needs one.) */
typedef void (*seed_expr_fn)(strbuf *b, const void *arg, int k);
static frnn_status seeded_step(frnn_ctx *ctx, const frnn_step *s, const char *name, const char *what, int n,
                               const int *cls, seed_expr_fn put, const void *arg, frnn_step **out) {
  strbuf b = {.ok = true};
  sb_printf(&b, "step %s(", name);
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++)
    sb_printf(&b, "%s%s%s", i ? ", " : "", s->ports[FRNN_PORT_INPUT][i].name,
              class_text[s->ports[FRNN_PORT_INPUT][i].cls]);
  for (int k = 0; k < n; k++) sb_printf(&b, ", frnn_seed%d%s", k, class_text[cls[k]]);
  sb_printf(&b, "; frnn_state[1,1]) -> frnn_z[1,1]\n  frnn_z = 0");
  for (int k = 0; k < n; k++) {
    sb_printf(&b, " + sum(sum_m((");
    put(&b, arg, k);
    sb_printf(&b, ") * frnn_seed%d))", k);
  }
  sb_printf(&b, "\n  frnn_state = frnn_z\n");
  if (!b.ok) {
    free(b.data);
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory building the %s of step '%s'", what, s->name);
  }
  frnn_status st = frnn_step_parse(ctx, name, b.data, out);
  free(b.data);
  return st;
}

typedef struct node_seeds {
  const frnn_step *s;
  const seeds *sd;
} node_seeds;

static void put_seed_node(strbuf *b, const void *arg, int k) {
  const node_seeds *ns = arg;
  print_expr(b, ns->s, ns->sd->node[k]);
}

/* The prologue of the float64 backward: one seed per factor node. */
static frnn_status prologue_step(frnn_ctx *ctx, const frnn_step *s, const seeds *sd, frnn_step **out) {
  int cls[sizeof sd->node / sizeof *sd->node];
  for (int k = 0; k < sd->n; k++) cls[k] = s->nodes[sd->node[k]].cls;
  node_seeds ns = {s, sd};
  return seeded_step(ctx, s, "frnn_prologue", "prologue", sd->n, cls, put_seed_node, &ns, out);
}

static void wrap(DLTensor *t, int64_t *shape, int ndim, const double *data) {
  *t = (DLTensor){.data = (void *)data, .device = {kDLCPU, 0}, .ndim = ndim, .dtype = {kDLFloat, 64, 1},
                  .shape = shape};
}

frnn_status chunk_backward_f64(frnn_ctx *ctx, const frnn_step *s, const chunk_form *cf, frnn_sizes sz,
                               int64_t L, const double *const *in, const double *state0,
                               const double *const *dy, const double *dS_T, double *const *gin,
                               double *gS0) {
  if (L < 1) return diag_fail(ctx, FRNN_E_ARG, "chunk_backward_f64: chunk length %lld", (long long)L);
  const int64_t M = sz.M, N = sz.N, T = sz.T;
  bool col = cf->decay_cls == FRNN_COL; /* row by row (col_seq_backward) */
  int n_in = s->n_ports[FRNN_PORT_INPUT], n_out = s->n_ports[FRNN_PORT_OUTPUT];
  lin_terms lt;
  flatten_lin(s, cf, &lt);
  seeds sd = {0};
  add_product(&sd, &cf->decay);
  for (int a = 0; a < cf->n_updates; a++) add_product(&sd, &cf->update[a]);
  for (int a = 0; a < cf->n_rank; a++) {
    add_product(&sd, &cf->rank_a[a]);
    add_product(&sd, &cf->rank_b[a]);
  }
  for (int k = 0; k < n_out; k++)
    for (int t = 0; t < cf->output[k].n_terms; t++) {
      add_product(&sd, &cf->output[k].term[t].inner);
      add_product(&sd, &cf->output[k].term[t].outer);
    }
  size_t n_ms = (size_t)M * N, n_y = (size_t)T * lt.n * M;
  size_t n_starts = (size_t)((T + L - 1) / L) * n_ms;
  chunk_seq q, g;
  step_eval e;
  frnn_step *pro = NULL;
  double *gbuf = NULL;
  frnn_status st = eval_init(ctx, &e, s, M, N);
  if (st) return st;
  double *buf = seq_alloc(&q, T, M, N, cf->n_updates, cf->n_rank, &lt, 2 * n_y + n_starts + n_ms + M + (col ? (size_t)(2 * T * M) : 0));
  if (!buf || !(gbuf = seq_alloc(&g, T, M, N, cf->n_updates, cf->n_rank, &lt, 0))) {
    st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_backward_f64");
    goto out;
  }
  double *y = q.o + (size_t)T * lt.n * M, *dyl = y + n_y, *starts = dyl + n_y, *S_T = starts + n_starts,
         *gm = S_T + n_ms, *dcol = gm + M, *dcol_grad = dcol + (col ? T * M : 0);
  for (int k = 0; k < sd.n; k++) {
    int c = s->nodes[sd.node[k]].cls;
    sd.val[k] = calloc((size_t)(sz.B * T * sz.H) * (CLASS_HAS_M(c) ? M : 1) * (CLASS_HAS_N(c) ? N : 1), sizeof(double));
    if (!sd.val[k]) {
      st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_backward_f64");
      goto out;
    }
  }
  for (int64_t b = 0; b < sz.B && !st; b++)
    for (int64_t h = 0; h < sz.H && !st; h++) {
      size_t head = (size_t)b * sz.H + (size_t)h;
      for (int64_t t = 0; t < T; t++) {
        eval_at(&e, sz, in, b, h, t);
        eval_terms(&e, cf, &lt, t, &q, NULL, dcol);
      }
      /* Each linear term's dy is its output's. */
      for (int64_t t = 0; t < T; t++)
        for (int kk = 0; kk < lt.n; kk++) {
          int64_t rows = CLASS_HAS_M(s->ports[FRNN_PORT_OUTPUT][lt.out[kk]].cls) ? M : 1;
          const double *src = dy[lt.out[kk]] + (((size_t)b * T + t) * sz.H + h) * rows;
          for (int64_t i = 0; i < M; i++) dyl[((size_t)t * lt.n + kk) * M + i] = src[rows == 1 ? 0 : i];
        }
      if (col) {
        if ((st = col_seq_backward(ctx, &q, dcol, L, state0 + head * n_ms, dyl, dS_T + head * n_ms, &g, dcol_grad,
                                   gS0 + head * n_ms)))
          break;
      } else if ((st = chunk_seq_forward(ctx, &q, L, state0 + head * n_ms, y, S_T, starts)) ||
                 (st = chunk_seq_backward(ctx, &q, L, starts, S_T, dyl, dS_T + head * n_ms, &g, gS0 + head * n_ms))) {
        break;
      }
      /* The term values' gradients to the factors' seeds, step by step. */
      for (int64_t t = 0; t < T; t++) {
        eval_at(&e, sz, in, b, h, t); /* the factors' values at t, for the product rule */
        seed_product(&e, &sd, &cf->decay, cf->decay_sign, col ? dcol_grad + t * M : SEQ_D(&g, t), col, sz, b, t, h);
        for (int a = 0; a < cf->n_updates; a++) {
          chunk_product colp, rowp;
          split_update(s, &cf->update[a], &colp, &rowp);
          seed_product(&e, &sd, &colp, cf->update_sign[a], SEQ_C(&g, t, a), true, sz, b, t, h);
          seed_product(&e, &sd, &rowp, 1, SEQ_R(&g, t, a), false, sz, b, t, h);
        }
        for (int a = 0; a < cf->n_rank; a++) {
          seed_product(&e, &sd, &cf->rank_a[a], 1, SEQ_A(&g, t, a), false, sz, b, t, h);
          seed_product(&e, &sd, &cf->rank_b[a], cf->rank_sign[a], SEQ_B(&g, t, a), false, sz, b, t, h);
        }
        for (int kk = 0; kk < lt.n; kk++) {
          const chunk_out_term *ot = &cf->output[lt.out[kk]].term[lt.term[kk]];
          seed_product(&e, &sd, &ot->inner, 1, SEQ_W(&g, t, kk), false, sz, b, t, h);
          seed_product(&e, &sd, &ot->outer, ot->sign, SEQ_O(&g, t, kk), true, sz, b, t, h);
        }
        for (int k = 0; k < n_out; k++) {
          int64_t rows = CLASS_HAS_M(s->ports[FRNN_PORT_OUTPUT][k].cls) ? M : 1;
          const double *src = dy[k] + (((size_t)b * T + t) * sz.H + h) * rows;
          for (int64_t i = 0; i < M; i++) gm[i] = src[rows == 1 ? 0 : i];
          for (int t2 = 0; t2 < cf->output[k].n_terms; t2++) {
            const chunk_out_term *ot = &cf->output[k].term[t2];
            if (ot->base == CHUNK_BASE_ONE) seed_product(&e, &sd, &ot->outer, ot->sign, gm, true, sz, b, t, h);
          }
        }
      }
    }
  if (st) goto out;
  /* The chain to the inputs: the prologue's gradient with the seeds. */
  if ((st = prologue_step(ctx, s, &sd, &pro))) goto out;
  {
    int n_pin = n_in + sd.n;
    DLTensor *tin = calloc((size_t)(2 * n_pin + 4), sizeof *tin);
    int64_t (*shape)[5] = calloc((size_t)(2 * n_pin + 4), sizeof *shape);
    double *zeros = calloc((size_t)(sz.B * sz.H) * 4 + (size_t)(sz.B * T * sz.H), sizeof(double));
    double **gseed = calloc((size_t)sd.n + 1, sizeof *gseed);
    if (!tin || !shape || !zeros || !gseed) {
      free(tin), free(shape), free(zeros), free(gseed);
      st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_backward_f64");
      goto out;
    }
    double *ones = zeros + (size_t)(sz.B * sz.H) * 4;
    for (int64_t i = 0; i < sz.B * T * sz.H; i++) ones[i] = 1;
    const DLTensor *pin[2 * FRNN_MAX_PORTS + 4 * CHUNK_MAX_TERMS * CHUNK_MAX_FACTORS * 4];
    DLTensor *pgin[2 * FRNN_MAX_PORTS + 4 * CHUNK_MAX_TERMS * CHUNK_MAX_FACTORS * 4];
    for (int i = 0; i < n_pin; i++) {
      int c = i < n_in ? s->ports[FRNN_PORT_INPUT][i].cls : s->nodes[sd.node[i - n_in]].cls;
      int64_t sh[5] = {sz.B, T, sz.H, CLASS_HAS_M(c) ? M : 1, CLASS_HAS_N(c) ? N : 1};
      memcpy(shape[i], sh, sizeof sh);
      memcpy(shape[n_pin + i], sh, sizeof sh);
      wrap(&tin[i], shape[i], 5, i < n_in ? in[i] : sd.val[i - n_in]);
      if (i >= n_in && !(gseed[i - n_in] = calloc((size_t)(sh[0] * sh[1] * sh[2] * sh[3] * sh[4]), sizeof(double))))
        st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_backward_f64");
      wrap(&tin[n_pin + i], shape[n_pin + i], 5, i < n_in ? gin[i] : gseed[i - n_in]);
      pin[i] = &tin[i];
      pgin[i] = &tin[n_pin + i];
    }
    int64_t s_shape[4] = {sz.B, sz.H, 1, 1}, y_shape[3] = {sz.B, T, sz.H};
    DLTensor z0, zfin, gz, gzst;
    wrap(&z0, s_shape, 4, zeros);
    wrap(&zfin, s_shape, 4, zeros + sz.B * sz.H);
    wrap(&gzst, s_shape, 4, zeros + 2 * sz.B * sz.H);
    wrap(&gz, y_shape, 3, ones);
    const DLTensor *pst[1] = {&z0}, *pgy[1] = {&gz}, *pgf[1] = {&zfin};
    DLTensor *pgst[1] = {&gzst};
    if (!st) st = frnn_reference_backward(ctx, pro, sz, pin, pst, pgy, pgf, pgin, pgst);
    for (int k = 0; k < sd.n; k++) free(gseed[k]);
    free(gseed), free(tin), free(shape), free(zeros);
  }
out:
  for (int k = 0; k < sd.n; k++) free(sd.val[k]);
  frnn_step_destroy(pro);
  free(buf);
  free(gbuf);
  eval_free(&e);
  return st;
}

/* ------------------------------------------------- the form the GPU runs */
static int add_seed(chunk_gpu *g, int kind, int index, int cls) {
  g->seed_kind[g->n_seeds] = kind;
  g->seed_index[g->n_seeds] = index;
  g->seed_cls[g->n_seeds] = cls;
  return g->n_seeds++;
}

/* need[v] for every node a marked node is computed from (operands precede
 * their users: one sweep down, no recursion however deep the graph). */
static void close_over_operands(const frnn_step *s, uint8_t *need) {
  for (uint32_t v = s->n_nodes; v-- > 0;)
    if (need[v]) {
      const op_info *oi = op_get((frnn_op)s->nodes[v].op);
      for (int a = 0; a < oi->arity; a++) need[s->nodes[v].arg[a]] = 1;
    }
}

static void mark_product(const chunk_product *f, uint8_t *need) {
  for (int k = 0; k < f->n; k++) need[f->node[k]] = 1;
}

void chunk_gpu_free(chunk_gpu *g) {
  if (!g) return;
  frnn_step_destroy(g->terms);
  frnn_step_destroy(g->terms_adj);
  free(g->need);
  free(g->need_adj);
  memset(g, 0, sizeof *g);
}

typedef struct term_seeds {
  const frnn_step *s;
  const chunk_gpu *g;
} term_seeds;

/* Seed k's term value: the log decay (the sum of the exponents), an update's
 * column (with its sign and scalars) or row, an output term's weights or
 * outside factor, or an output's terms independent of S. */
static void put_term(strbuf *b, const void *arg, int k) {
  const term_seeds *ts = arg;
  const frnn_step *s = ts->s;
  const chunk_gpu *g = ts->g;
  const chunk_form *cf = &g->cf;
  int ix = g->seed_index[k];
  switch (g->seed_kind[k]) {
  case CK_SEED_LD:
    sb_printf(b, "0");
    for (int d = 0; d < g->n_ld; d++) {
      sb_printf(b, " %c %s(", g->ld_neg[d] ? '-' : '+', g->ld_log[d] ? "log" : "");
      print_expr(b, s, g->ld_node[d]);
      sb_printf(b, ")");
    }
    break;
  case CK_SEED_C: put_product(b, s, &g->upd_col[ix], cf->update_sign[ix]); break;
  case CK_SEED_R: put_product(b, s, &g->upd_row[ix], 1); break;
  case CK_SEED_W: put_product(b, s, &g->lin_w[ix], 1); break;
  case CK_SEED_RA: put_product(b, s, &cf->rank_a[ix], 1); break;
  case CK_SEED_RB: put_product(b, s, &cf->rank_b[ix], cf->rank_sign[ix]); break;
  case CK_SEED_S: put_product(b, s, &g->merge_s, g->merge_sign); break;
  case CK_SEED_O: {
    const chunk_out_term *ot = &cf->output[g->lin_out[ix]].term[g->lin_term[ix]];
    put_product(b, s, &ot->outer, ot->sign);
    break;
  }
  case CK_SEED_IND:
    sb_printf(b, "0");
    for (int t = 0; t < cf->output[ix].n_terms; t++)
      if (cf->output[ix].term[t].base == CHUNK_BASE_ONE) {
        sb_printf(b, " + ");
        put_product(b, s, &cf->output[ix].term[t].outer, cf->output[ix].term[t].sign);
      }
    break;
  }
}

int chunk_merge_level(void) {
  const char *env = getenv("FRNN_CK_MERGE");
  return env && *env ? atoi(env) : 3;
}

/* Where the rank-one term's b is an update's row times scalars of the step
 * (b = s r): that update (merge_into), s's factors (merge_s) and sign.
 * Not with a decay along M (its ratios ride on the columns). */
static void merge_of(const frnn_step *s, chunk_gpu *g) {
  g->merge_into = -1;
  int xr = g->rank_upd;
  if (xr < 0 || g->cf.decay_cls == FRNN_COL || chunk_merge_level() < 1) return;
  const chunk_product *b = &g->upd_row[xr];
  for (int a = 0; a < g->n_upd; a++) {
    if (a == xr || g->upd_rank[a] >= 0) continue;
    const chunk_product *r = &g->upd_row[a];
    bool used[CHUNK_MAX_FACTORS] = {false}, ok = true;
    for (int q = 0; q < r->n && ok; q++) { /* every factor of r is a row's, and one of b's */
      ok = CLASS_HAS_N(s->nodes[r->node[q]].cls) && !CLASS_HAS_M(s->nodes[r->node[q]].cls);
      int hit = -1;
      for (int f = 0; f < b->n && ok && hit < 0; f++)
        if (!used[f] && b->node[f] == r->node[q] && b->divide[f] == r->divide[q]) hit = f;
      if (hit < 0) ok = false;
      else used[hit] = true;
    }
    chunk_product sc = {0};
    for (int f = 0; f < b->n && ok; f++) { /* b's others are scalars */
      if (used[f]) continue;
      int cls = s->nodes[b->node[f]].cls;
      ok = !CLASS_HAS_N(cls) && !CLASS_HAS_M(cls);
      sc.node[sc.n] = b->node[f], sc.divide[sc.n++] = b->divide[f];
    }
    if (!ok) continue;
    g->merge_into = a, g->merge_s = sc, g->merge_sign = g->upd_row_sign[xr] / g->upd_row_sign[a];
    g->merge_rows = chunk_merge_level() >= 3;
    return;
  }
}

frnn_status chunk_gpu_make(frnn_ctx *ctx, const frnn_step *s, chunk_gpu *g) {
  memset(g, 0, sizeof *g);
  frnn_status st = chunk_form_of(ctx, s, &g->cf);
  if (st) return st;
  const chunk_form *cf = &g->cf;
  const char *why = NULL;
  if (s->n_ports[FRNN_PORT_STATE] != 1) why = "it has more than the one [M,N] state";
  /* Two rank-one terms would couple their columns (x_1 reads b_2's writes):
   * one block-triangular solve over both; no example has them. */
  if (cf->n_rank > 1) why = "its update has more than one rank-one term sum(S * a) * b (not built)";
  if (!why && cf->decay_sign < 0) why = "its decay is negated (the kernels work with its logarithm)";
  /* The kernels work with the decay's logarithm: an exp's exponent as it
   * is; any other factor's log, guarded (it may be 0 or negative: the
   * forward checks it at every step, and where it is not positive the call
   * runs on the recurrent kernels; chunk_gpu.guard). */
  for (int k = 0; k < cf->decay.n && !why; k++) {
    const node *d = &s->nodes[cf->decay.node[k]];
    bool is_exp = d->op == FRNN_OP_EXP;
    if (d->op == FRNN_OP_NEG && s->nodes[d->arg[0]].op == FRNN_OP_EXP) {
      why = "a factor of its decay is a negated exponential (the kernels work with its logarithm)";
      break;
    }
    g->ld_node[g->n_ld] = is_exp ? d->arg[0] : cf->decay.node[k];
    g->ld_log[g->n_ld] = !is_exp;
    g->ld_neg[g->n_ld++] = cf->decay.divide[k];
    g->guard |= !is_exp;
  }
  /* A decay along M: its ratios ride on the columns, split as P_u and 1 /
   * P_v, which needs each chunk's running log decay within the split's
   * range; the forward flags a call where it is not, as for a factor that
   * is not an exp (lower_chunked.c). */
  g->guard |= cf->decay_cls == FRNN_COL;
  if (!why && cf->n_updates == 0) why = "its state has no update";
  for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT] && !why; k++)
    if (s->ports[FRNN_PORT_OUTPUT][k].cls != FRNN_COL) why = "an output is not a [M,1] column";
  if (why) {
    return diag_fail(ctx, FRNN_E_UNSUPPORTED, "step '%s': no chunked kernels: %s", s->name, why);
  }
  /* The output terms linear in S, flattened. */
  for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT]; k++)
    for (int t = 0; t < cf->output[k].n_terms; t++)
      if (cf->output[k].term[t].base != CHUNK_BASE_ONE) {
        g->lin_out[g->n_lin] = k, g->lin_term[g->n_lin] = t, g->lin_rank[g->n_lin] = -1;
        g->lin_w[g->n_lin] = cf->output[k].term[t].inner;
        g->lin_base[g->n_lin++] = cf->output[k].term[t].base;
      }
  for (int a = 0; a < cf->n_updates; a++) {
    split_update(s, &cf->update[a], &g->upd_col[a], &g->upd_row[a]);
    g->upd_row_sign[a] = 1, g->upd_rank[a] = -1;
  }
  g->n_upd = cf->n_updates;
  g->rank_lin = g->rank_upd = -1;
  /* The rank-one term: its a reads the old state (x_t = S_{t-1} a_t, as an
   * output would), and x_t (sign b_t)^T is an update. */
  for (int a = 0; a < cf->n_rank; a++) {
    g->rank_lin = g->n_lin, g->rank_upd = g->n_upd;
    g->lin_out[g->n_lin] = g->lin_term[g->n_lin] = -1, g->lin_rank[g->n_lin] = a;
    g->lin_w[g->n_lin] = cf->rank_a[a];
    g->lin_base[g->n_lin++] = CHUNK_BASE_STATE;
    g->upd_col[g->n_upd].n = 0, g->upd_row[g->n_upd] = cf->rank_b[a];
    g->upd_row_sign[g->n_upd] = cf->rank_sign[a], g->upd_rank[g->n_upd++] = a;
  }
  merge_of(s, g);
  /* The term prologue: z = sum over the term values of sum(sum_m(value *
   * seed)); its adjoint takes the terms' gradients (the seeds) to the inputs.
   * The decay's term is its logarithm, the sum of the exponents.  b merged
   * out: s's term instead of b's (J_b^T db = J_r^T (s db) + J_s^T (r . db)). */
  g->seed_ld = g->n_ld ? add_seed(g, CK_SEED_LD, 0, cf->decay_cls) : -1; /* a decay of 1: none */
  for (int a = 0; a < g->n_upd; a++) {
    bool rank = g->upd_rank[a] >= 0; /* its column is solved for, not a term */
    g->seed_c[a] = rank ? -1 : add_seed(g, CK_SEED_C, a, FRNN_COL);
    if (rank && g->merge_rows) g->seed_r[a] = -1;
    else g->seed_r[a] = add_seed(g, rank ? CK_SEED_RB : CK_SEED_R, rank ? g->upd_rank[a] : a, FRNN_ROW);
  }
  g->seed_s = g->merge_rows ? add_seed(g, CK_SEED_S, 0, FRNN_SCALAR) : -1;
  for (int k = 0; k < g->n_lin; k++) {
    if (g->lin_rank[k] >= 0) {
      g->seed_w[k] = add_seed(g, CK_SEED_RA, g->lin_rank[k], FRNN_ROW);
      g->seed_o[k] = -1;
      continue;
    }
    g->seed_w[k] = add_seed(g, CK_SEED_W, k, FRNN_ROW);
    const chunk_out_term *ot = &cf->output[g->lin_out[k]].term[g->lin_term[k]];
    /* A decay along M: the backward forms X w (the term before its outside
     * factor) for the log decay's gradient too, in this seed's array. */
    g->seed_o[k] = ot->outer.n || cf->decay_cls == FRNN_COL ? add_seed(g, CK_SEED_O, k, FRNN_COL) : -1;
  }
  for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT]; k++) {
    g->seed_ind[k] = -1;
    for (int t = 0; t < cf->output[k].n_terms; t++)
      if (cf->output[k].term[t].base == CHUNK_BASE_ONE && cf->output[k].term[t].outer.n && g->seed_ind[k] < 0)
        g->seed_ind[k] = add_seed(g, CK_SEED_IND, k, FRNN_COL);
  }
  term_seeds ts = {s, g};
  st = seeded_step(ctx, s, "frnn_terms", "term prologue", g->n_seeds, g->seed_cls, put_term, &ts, &g->terms);
  if (!st) st = frnn_step_adjoint(g->terms, &g->terms_adj);
  if (st) {
    chunk_gpu_free(g);
    return st;
  }
  /* What the kernels evaluate: the factors' nodes (forward, backward) and
   * the input gradients' nodes of the adjoint (the chain kernel). */
  g->need = calloc(s->n_nodes, 1);
  g->need_adj = calloc(g->terms_adj->n_nodes, 1);
  if (!g->need || !g->need_adj) {
    chunk_gpu_free(g);
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory in chunk_gpu_make");
  }
  for (int d = 0; d < g->n_ld; d++) g->need[g->ld_node[d]] = 1;
  for (int a = 0; a < cf->n_updates; a++) mark_product(&cf->update[a], g->need);
  for (int a = 0; a < cf->n_rank; a++) {
    mark_product(&cf->rank_a[a], g->need);
    mark_product(&cf->rank_b[a], g->need);
  }
  for (int k = 0; k < s->n_ports[FRNN_PORT_OUTPUT]; k++)
    for (int t = 0; t < cf->output[k].n_terms; t++) {
      mark_product(&cf->output[k].term[t].inner, g->need);
      mark_product(&cf->output[k].term[t].outer, g->need);
    }
  close_over_operands(s, g->need);
  const frnn_step *adj = g->terms_adj;
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++) {
    uint32_t v = adj->ports[FRNN_PORT_OUTPUT][i].value;
    if (v != NODE_NONE) g->need_adj[v] = 1;
  }
  close_over_operands(adj, g->need_adj);
  for (uint32_t v = 0; v < s->n_nodes && !why; v++)
    if (g->need[v] && s->nodes[v].cls == FRNN_MAT) why = "a value its terms are made of is a [M,N] matrix";
  for (uint32_t v = 0; v < adj->n_nodes && !why; v++)
    if (g->need_adj[v] && adj->nodes[v].cls == FRNN_MAT)
      why = "a gradient its terms lead to is a [M,N] matrix";
  if (why) {
    chunk_gpu_free(g);
    return diag_fail(ctx, FRNN_E_UNSUPPORTED, "step '%s': no chunked kernels: %s", s->name, why);
  }
  return FRNN_OK;
}
