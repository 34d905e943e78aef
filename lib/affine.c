/* affine.c - is each state's next value affine in the states, and what shape
 * has its transition?  The precondition of a chunked formulation
 * (docs/design-chunked.md): a step qualifies when every state update is
 * S' = T(S) + U and every output linear in the states, T and U independent
 * of them.  A pure analysis of a finished step, printed by
 * `frnn-dump-ptx --after affine`; the kernels do not use it yet.
 *
 * Every value gets a kind (independent of the states, linear, affine,
 * nonlinear) and, for the linear part, the classes of the elementwise factors
 * met on its paths from the states: on paths not yet summed over N ("diag":
 * S * d, d a scalar, row, column or matrix) and on paths that were ("low
 * rank": sum(S * a) * b, the a's class), and whether a path was summed over M
 * (rows mixed).  Classes combine by OR of their M and N bits, so a column
 * factor times a row factor on one path counts as a matrix factor and the
 * verdict is "recurrent only": conservative (their cumulative products
 * would separate).  Where the update is elementwise in one state, it is
 * also written out as S = S * factor + update. */
#include "frnn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LIN_INDEP, LIN_LINEAR, LIN_AFFINE, LIN_NONLINEAR };

typedef struct lin {
  uint8_t kind;       /* LIN_* */
  uint8_t diag;       /* bit 1 << class: factors on paths not summed over N */
  uint8_t contracted; /* the same for paths that went through a sum over N */
  bool rows_mixed;    /* a path went through a sum over M */
} lin;

static const lin nonlinear = {.kind = LIN_NONLINEAR};

/* Every class bit of `mask` joined with class c. */
static uint8_t widen(uint8_t mask, int c) {
  uint8_t out = 0;
  for (int k = 0; k < 4; k++)
    if (mask & (1u << k)) out |= (uint8_t)(1u << (k | c));
  return out;
}

/* a + b, a - b, where(indep, a, b): both paths kept. */
static lin join(lin a, lin b) {
  if (a.kind == LIN_NONLINEAR || b.kind == LIN_NONLINEAR) return nonlinear;
  lin r = {.diag = a.diag | b.diag, .contracted = a.contracted | b.contracted,
           .rows_mixed = a.rows_mixed || b.rows_mixed};
  if (a.kind == LIN_INDEP && b.kind == LIN_INDEP) r.kind = LIN_INDEP;
  else if (a.kind == LIN_LINEAR && b.kind == LIN_LINEAR) r.kind = LIN_LINEAR;
  else r.kind = LIN_AFFINE;
  return r;
}

/* x * f (or x / f) with f independent of class c: the factor lands on the
 * paths not yet summed over N; on summed ones it is the low-rank term's
 * other vector. */
static lin scaled(lin x, int c) {
  x.diag = widen(x.diag, c);
  return x;
}

static lin of_node(const frnn_step *s, const node *n, const lin *v) {
  const lin *a = &v[n->arg[0]], *b = &v[n->arg[1]], *c = &v[n->arg[2]];
  switch ((frnn_op)n->op) {
  case FRNN_OP_STATE: return (lin){.kind = LIN_LINEAR, .diag = 1u << FRNN_SCALAR};
  case FRNN_OP_INPUT:
  case FRNN_OP_CONST: return (lin){.kind = LIN_INDEP};
  case FRNN_OP_ADD:
  case FRNN_OP_SUB: return join(*a, *b);
  case FRNN_OP_WHERE: return a->kind == LIN_INDEP ? join(*b, *c) : nonlinear;
  case FRNN_OP_MUL:
    if (a->kind == LIN_INDEP && b->kind == LIN_INDEP) return *a;
    if (a->kind == LIN_INDEP) return scaled(*b, s->nodes[n->arg[0]].cls);
    if (b->kind == LIN_INDEP) return scaled(*a, s->nodes[n->arg[1]].cls);
    return nonlinear;
  case FRNN_OP_DIV:
    if (b->kind != LIN_INDEP) return nonlinear;
    return a->kind == LIN_INDEP ? *a : scaled(*a, s->nodes[n->arg[1]].cls);
  case FRNN_OP_NEG:
  case FRNN_OP_BCAST: return *a; /* bcast: the second operand gives the shape only */
  case FRNN_OP_SUM: {
    lin r = *a;
    if (r.kind == LIN_INDEP || !CLASS_HAS_N(s->nodes[n->arg[0]].cls)) return r;
    r.contracted |= r.diag;
    r.diag = 0;
    return r;
  }
  case FRNN_OP_SUM_M: {
    lin r = *a;
    if (r.kind != LIN_INDEP && CLASS_HAS_M(s->nodes[n->arg[0]].cls)) r.rows_mixed = true;
    return r;
  }
  case FRNN_OP_EXP:
  case FRNN_OP_LOG:
  case FRNN_OP_SQRT:
  case FRNN_OP_RSQRT:
  case FRNN_OP_ABS:
  case FRNN_OP_TANH:
  case FRNN_OP_SIGMOID:
  case FRNN_OP_SOFTPLUS:
  case FRNN_OP_SILU:
  case FRNN_OP_LT:
  case FRNN_OP_GT:
  case FRNN_OP_LE:
  case FRNN_OP_GE:
  case FRNN_OP_MAX:
  case FRNN_OP_MIN:
  case FRNN_OP_POW:
    for (int i = 0; i < op_get(n->op)->arity; i++)
      if (v[n->arg[i]].kind != LIN_INDEP) return nonlinear;
    return (lin){.kind = LIN_INDEP};
  case FRNN_OP_COUNT: break;
  }
  return nonlinear;
}

/* ------------------------------------------------ the diagonal transition */
/* A value that is elementwise in state `slot`, written out as coef * S + rest
 * (texts; "" is zero, coef "1" is the state itself): the factor a chunked
 * kernel accumulates and the update it adds.  NULL texts: out of memory. */
typedef struct split {
  char *coef, *rest;
} split;

static char *text_of(const frnn_step *s, uint32_t x) {
  strbuf b = {.ok = true};
  print_expr(&b, s, x);
  if (!b.ok) free(b.data);
  return b.ok ? b.data : NULL;
}

/* "(a op b)", with zero ("") and one ("1") folded; a and b are freed. */
static char *combine(char *a, char op, char *b) {
  char *r = NULL;
  if (!a || !b) {
  } else if (op == '*' && (!*a || !*b)) {
    r = strdup("");
  } else if (op == '*' && strcmp(a, "1") == 0) {
    r = strdup(b);
  } else if ((op == '+' || op == '-') && !*b) {
    r = strdup(a);
  } else if (op == '+' && !*a) {
    r = strdup(b);
  } else {
    size_t n = strlen(a) + strlen(b) + 8;
    if ((r = malloc(n))) {
      if (op == '-' && !*a) snprintf(r, n, "(-%s)", b);
      else if (op == '/' && !*a) r[0] = 0;
      else snprintf(r, n, "(%s %c %s)", a, op, b);
    }
  }
  free(a);
  free(b);
  return r;
}

static split split_value(const frnn_step *s, const lin *v, uint32_t x, int slot) {
  const node *n = &s->nodes[x];
  split out = {0}, a, b;
  if (v[x].kind == LIN_INDEP) return (split){strdup(""), text_of(s, x)};
  switch ((frnn_op)n->op) {
  case FRNN_OP_STATE:
    if (n->slot == slot) return (split){strdup("1"), strdup("")};
    return out; /* another state: not this state's diagonal */
  case FRNN_OP_ADD:
  case FRNN_OP_SUB:
    a = split_value(s, v, n->arg[0], slot);
    b = split_value(s, v, n->arg[1], slot);
    {
      char op = n->op == FRNN_OP_ADD ? '+' : '-';
      out.coef = combine(a.coef, op, b.coef);
      out.rest = combine(a.rest, op, b.rest);
    }
    return out;
  case FRNN_OP_NEG:
    a = split_value(s, v, n->arg[0], slot);
    return (split){combine(strdup(""), '-', a.coef), combine(strdup(""), '-', a.rest)};
  case FRNN_OP_MUL:
  case FRNN_OP_DIV: {
    int lin_arg = v[n->arg[0]].kind == LIN_INDEP && n->op == FRNN_OP_MUL ? 1 : 0;
    a = split_value(s, v, n->arg[lin_arg], slot);
    char op = n->op == FRNN_OP_MUL ? '*' : '/';
    out.coef = combine(a.coef, op, text_of(s, n->arg[1 - lin_arg]));
    out.rest = combine(a.rest, op, text_of(s, n->arg[1 - lin_arg]));
    return out;
  }
  case FRNN_OP_BCAST: return split_value(s, v, n->arg[0], slot);
  default: return out; /* where, sums: not a plain diagonal (the caller checked the rest) */
  }
}

static const char *const class_word[4] = {"scalar", "column", "row", "matrix"};

/* "scalar and row" from a class mask. */
static void put_classes(strbuf *b, uint8_t mask) {
  const char *sep = "";
  for (int k = 0; k < 4; k++)
    if (mask & (1u << k)) sb_printf(b, "%s%s", sep, class_word[k]), sep = " and ";
}

/* One line per state and output; the verdict last. */
frnn_status affine_describe(frnn_ctx *ctx, const frnn_step *s, char **out) {
  *out = NULL;
  lin *v = calloc(s->n_nodes ? s->n_nodes : 1, sizeof *v);
  if (!v) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory analysing step '%s'", s->name);
  /* where() on a state-dependent value keeps two paths: not written out */
  bool state_where = false;
  for (uint32_t i = 0; i < s->n_nodes; i++) {
    v[i] = of_node(s, &s->nodes[i], v);
    state_where |= s->nodes[i].op == FRNN_OP_WHERE && v[i].kind != LIN_INDEP;
  }
  /* A matrix product carries factors that vary along one direction: a
   * scalar with rows or with columns (their cumulative products factor out
   * of the chunk's products), not both, and the low-rank part's only with
   * rows (the WY / DPLR forms). */
  const uint8_t rows = 1u << FRNN_SCALAR | 1u << FRNN_ROW, cols = 1u << FRNN_SCALAR | 1u << FRNN_COL;
  strbuf b = {.ok = true};
  sb_printf(&b, "# step %s: state updates and outputs in the states\n", s->name);
  bool affine = true, chunkable = true;
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) {
    const port *p = &s->ports[FRNN_PORT_STATE][i];
    lin l = v[p->value];
    sb_printf(&b, "state %s [%s]: ", p->name, class_word[p->cls]);
    if (l.kind == LIN_NONLINEAR) {
      sb_printf(&b, "nonlinear in the states\n");
      affine = chunkable = false;
      continue;
    }
    if (l.kind == LIN_INDEP) {
      sb_printf(&b, "independent of the states\n");
      continue;
    }
    sb_printf(&b, "affine: elementwise factors ");
    if (l.diag) put_classes(&b, l.diag);
    else sb_printf(&b, "none");
    if (l.contracted) {
      sb_printf(&b, ", plus low rank through sums over N (factors ");
      put_classes(&b, l.contracted);
      sb_printf(&b, ")");
    }
    if (l.rows_mixed) sb_printf(&b, ", rows mixed by a sum over M");
    sb_printf(&b, "\n");
    bool one_way = (l.diag & ~rows) == 0 || ((l.diag & ~cols) == 0 && !l.contracted);
    if (CLASS_HAS_M(p->cls) && CLASS_HAS_N(p->cls) && (!one_way || (l.contracted & ~rows) || l.rows_mixed))
      chunkable = false;
    if (l.contracted || l.rows_mixed || state_where) continue;
    split sp = split_value(s, v, p->value, i);
    if (sp.coef && sp.rest && *sp.coef)
      sb_printf(&b, "  %s = %s * %s%s%s\n", p->name, p->name, sp.coef, *sp.rest ? " + " : "", sp.rest);
    free(sp.coef);
    free(sp.rest);
  }
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++) {
    const port *p = &s->ports[FRNN_PORT_OUTPUT][i];
    int k = v[p->value].kind;
    if (k == LIN_NONLINEAR) affine = chunkable = false;
    sb_printf(&b, "output %s: %s\n", p->name,
              k == LIN_NONLINEAR ? "nonlinear in the states"
              : k == LIN_INDEP   ? "independent of the states"
                                 : "affine in the states");
  }
  sb_printf(&b, "verdict: %s\n",
            !affine     ? "not affine: recurrent only"
            : chunkable ? "affine, each matrix state's factors vary along one direction: a chunked form exists"
                        : "affine, but a matrix state's factors vary over rows and columns, or it mixes rows: "
                          "recurrent only");
  free(v);
  if (!b.ok) {
    free(b.data);
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory analysing step '%s'", s->name);
  }
  *out = b.data;
  return FRNN_OK;
}
