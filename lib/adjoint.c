/* adjoint.c - reverse-mode derivative of one step, as another step graph.
 *
 * The adjoint of step f(x, S) -> (y, S') is a state-less internal step
 *   inputs:  x..., S... (previous states), grad_y..., grad_next_S...
 *   outputs: grad_x..., grad_S...
 * It recomputes the forward values it needs (the forward nodes are copied
 * in), then walks the forward graph in reverse topological order, applying
 * one rule per op that gives each operand's share of the node's gradient,
 * and sums the shares.  Every gradient has exactly its node's shape class
 * (a sum's is broadcast back with BCAST), so a share larger than its
 * operand's class (an operand broadcast by the op) is summed over the
 * broadcast dimension: over N with SUM, over M with SUM_M.
 *
 * Requires a finished step; the result is finished too, so later stages
 * lower it like any other graph. */
#include "frnn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct adjoint_builder {
  const frnn_step *fwd;
  frnn_step *adj;
  uint32_t *copy; /* forward node -> its copy in adj */
  uint32_t *grad; /* forward node -> its gradient in adj (NODE_NONE: zero) */
  bool failed;    /* a node could not be made (message in ctx) */
} adjoint_builder;

static uint32_t mk(adjoint_builder *ab, frnn_op op, uint32_t a, uint32_t b, uint32_t c) {
  uint32_t args[3] = {a, b, c};
  if (a == NODE_NONE || (op_get(op)->arity > 1 && b == NODE_NONE) ||
      (op_get(op)->arity > 2 && c == NODE_NONE))
    return NODE_NONE;
  uint32_t v = graph_make(ab->adj, op, args, op_get(op)->arity, 0);
  ab->failed |= v == NODE_NONE;
  return v;
}

static uint32_t constant(adjoint_builder *ab, double v) {
  uint32_t c = graph_make(ab->adj, FRNN_OP_CONST, NULL, 0, v);
  ab->failed |= c == NODE_NONE;
  return c;
}

/* Sum `g` over the dimensions that class `cls` lacks. */
static uint32_t reduce_to(adjoint_builder *ab, uint32_t g, int cls) {
  if (g == NODE_NONE) return g;
  int gc = ab->adj->nodes[g].cls;
  if (CLASS_HAS_N(gc) && !CLASS_HAS_N(cls)) g = mk(ab, FRNN_OP_SUM, g, 0, 0);
  if (g != NODE_NONE && CLASS_HAS_M(gc) && !CLASS_HAS_M(cls)) g = mk(ab, FRNN_OP_SUM_M, g, 0, 0);
  return g;
}

/* Add `share` to the gradient of forward node v.  False when out of memory. */
static bool accumulate(adjoint_builder *ab, uint32_t v, uint32_t share) {
  if (share == NODE_NONE) return !ab->failed;
  share = reduce_to(ab, share, ab->fwd->nodes[v].cls);
  if (share == NODE_NONE) return false;
  ab->grad[v] = ab->grad[v] == NODE_NONE ? share : mk(ab, FRNN_OP_ADD, ab->grad[v], share, 0);
  return ab->grad[v] != NODE_NONE;
}

/* Each operand's share of node v's gradient g; shares[i] = NODE_NONE for an
 * operand that gets none (comparisons, the condition of where, the constant
 * exponent of pow).  Returns false when out of memory. */
static bool rule(adjoint_builder *ab, uint32_t v, uint32_t g, uint32_t shares[3]) {
  const node *n = &ab->fwd->nodes[v];
  uint32_t f = ab->copy[v];
  uint32_t x = ab->copy[n->arg[0]], y = ab->copy[n->arg[1]], c3 = ab->copy[n->arg[2]];
  uint32_t zero = constant(ab, 0.0), one = constant(ab, 1.0);
  shares[0] = shares[1] = shares[2] = NODE_NONE;
  switch ((frnn_op)n->op) {
  case FRNN_OP_ADD: shares[0] = shares[1] = g; break;
  case FRNN_OP_SUB:
    shares[0] = g;
    shares[1] = mk(ab, FRNN_OP_NEG, g, 0, 0);
    break;
  case FRNN_OP_MUL:
    shares[0] = mk(ab, FRNN_OP_MUL, g, y, 0);
    shares[1] = mk(ab, FRNN_OP_MUL, g, x, 0);
    break;
  case FRNN_OP_DIV: /* d(x/y) = dx/y - (x/y) dy/y */
    shares[0] = mk(ab, FRNN_OP_DIV, g, y, 0);
    shares[1] = mk(ab, FRNN_OP_NEG, mk(ab, FRNN_OP_DIV, mk(ab, FRNN_OP_MUL, g, f, 0), y, 0), 0, 0);
    break;
  case FRNN_OP_NEG: shares[0] = mk(ab, FRNN_OP_NEG, g, 0, 0); break;
  case FRNN_OP_EXP: shares[0] = mk(ab, FRNN_OP_MUL, g, f, 0); break;
  case FRNN_OP_LOG: shares[0] = mk(ab, FRNN_OP_DIV, g, x, 0); break;
  case FRNN_OP_SQRT: /* 0.5 / sqrt(x) */
    shares[0] = mk(ab, FRNN_OP_DIV, mk(ab, FRNN_OP_MUL, g, constant(ab, 0.5), 0), f, 0);
    break;
  case FRNN_OP_RSQRT: /* -0.5 x^-3/2 = -0.5 f^3 */
    shares[0] = mk(ab, FRNN_OP_MUL, mk(ab, FRNN_OP_MUL, g, constant(ab, -0.5), 0),
                   mk(ab, FRNN_OP_MUL, f, mk(ab, FRNN_OP_MUL, f, f, 0), 0), 0);
    break;
  case FRNN_OP_ABS: /* sign(x), 0 at 0 */
    shares[0] = mk(ab, FRNN_OP_MUL, g,
                   mk(ab, FRNN_OP_SUB, mk(ab, FRNN_OP_GT, x, zero, 0),
                      mk(ab, FRNN_OP_LT, x, zero, 0), 0),
                   0);
    break;
  case FRNN_OP_TANH: /* 1 - f^2 */
    shares[0] = mk(ab, FRNN_OP_MUL, g, mk(ab, FRNN_OP_SUB, one, mk(ab, FRNN_OP_MUL, f, f, 0), 0), 0);
    break;
  case FRNN_OP_SIGMOID: /* f (1 - f) */
    shares[0] = mk(ab, FRNN_OP_MUL, mk(ab, FRNN_OP_MUL, g, f, 0),
                   mk(ab, FRNN_OP_SUB, one, f, 0), 0);
    break;
  case FRNN_OP_SOFTPLUS: shares[0] = mk(ab, FRNN_OP_MUL, g, mk(ab, FRNN_OP_SIGMOID, x, 0, 0), 0); break;
  case FRNN_OP_SILU: { /* s + x s (1 - s) = s + f (1 - s), s = sigmoid(x) */
    uint32_t s = mk(ab, FRNN_OP_SIGMOID, x, 0, 0);
    shares[0] = mk(ab, FRNN_OP_MUL, g,
                   mk(ab, FRNN_OP_ADD, s, mk(ab, FRNN_OP_MUL, f, mk(ab, FRNN_OP_SUB, one, s, 0), 0), 0),
                   0);
    break;
  }
  case FRNN_OP_LT:
  case FRNN_OP_GT:
  case FRNN_OP_LE:
  case FRNN_OP_GE: break; /* piecewise constant: no gradient */
  case FRNN_OP_MAX:       /* to the larger operand; a tie goes to the first */
    shares[0] = mk(ab, FRNN_OP_WHERE, mk(ab, FRNN_OP_GE, x, y, 0), g, zero);
    shares[1] = mk(ab, FRNN_OP_WHERE, mk(ab, FRNN_OP_GE, x, y, 0), zero, g);
    break;
  case FRNN_OP_MIN:
    shares[0] = mk(ab, FRNN_OP_WHERE, mk(ab, FRNN_OP_LE, x, y, 0), g, zero);
    shares[1] = mk(ab, FRNN_OP_WHERE, mk(ab, FRNN_OP_LE, x, y, 0), zero, g);
    break;
  case FRNN_OP_POW: { /* c x^(c-1); the exponent is a constant */
    double e = ab->fwd->nodes[n->arg[1]].value;
    if (e != 0.0)
      shares[0] = mk(ab, FRNN_OP_MUL, mk(ab, FRNN_OP_MUL, g, constant(ab, e), 0),
                     mk(ab, FRNN_OP_POW, x, constant(ab, e - 1.0), 0), 0);
    break;
  }
  case FRNN_OP_WHERE:
    shares[1] = mk(ab, FRNN_OP_WHERE, x, g, zero);
    shares[2] = mk(ab, FRNN_OP_WHERE, x, zero, g);
    (void)c3;
    break;
  /* A sum's gradient spreads back over the summed dimension: broadcast it
   * to the operand's class, so that every gradient has its node's class
   * and a later reduction sums over each element it stands for. */
  case FRNN_OP_SUM:
  case FRNN_OP_SUM_M: shares[0] = mk(ab, FRNN_OP_BCAST, g, x, 0); break;
  case FRNN_OP_BCAST: shares[0] = g; break; /* reduced to the operand's class */
  case FRNN_OP_INPUT:
  case FRNN_OP_STATE:
  case FRNN_OP_CONST:
  case FRNN_OP_COUNT: break;
  }
  return !ab->failed;
}

/* Declare a port of the adjoint named `prefix``base`, or with a numeric
 * suffix when that name is taken or too long. */
static frnn_status declare_unique(frnn_step *a, frnn_port_kind kind, const char *prefix,
                                  const char *base, int cls, uint32_t *leaf, uint32_t value) {
  char name[FRNN_NAME_MAX];
  for (int attempt = 0;; attempt++) {
    int len = attempt == 0 ? snprintf(name, sizeof name, "%s%s", prefix, base)
                           : snprintf(name, sizeof name, "%s%d", prefix, attempt);
    if (len >= (int)sizeof name) continue;
    bool taken = false;
    for (int k = 0; k < 3; k++) taken |= graph_find_port(a, (frnn_port_kind)k, name) >= 0;
    if (taken) continue;
    if (kind == FRNN_PORT_INPUT) return frnn_step_input(a, name, (frnn_class)cls, leaf);
    return frnn_step_output(a, name, (frnn_class)cls, value);
  }
}

frnn_status frnn_step_adjoint(const frnn_step *s, frnn_step **out) {
  if (!s) return FRNN_E_ARG;
  frnn_ctx *ctx = s->ctx;
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "frnn_step_adjoint: out is NULL");
  *out = NULL;
  if (!s->finished)
    return diag_fail(ctx, FRNN_E_ARG, "frnn_step_adjoint: step '%s' is not finished", s->name);
  char name[FRNN_NAME_MAX];
  snprintf(name, sizeof name, "%.*s_adjoint", FRNN_NAME_MAX - 9, s->name);
  adjoint_builder ab = {.fwd = s};
  frnn_status st = graph_create_internal(ctx, name, &ab.adj);
  if (st) return st;
  ab.copy = malloc((s->n_nodes + 1) * sizeof *ab.copy);
  ab.grad = malloc((s->n_nodes + 1) * sizeof *ab.grad);
  if (!ab.copy || !ab.grad) {
    st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory differentiating step '%s'", s->name);
    goto fail;
  }
  const int n_in = s->n_ports[FRNN_PORT_INPUT], n_st = s->n_ports[FRNN_PORT_STATE],
            n_out = s->n_ports[FRNN_PORT_OUTPUT];
  uint32_t in_leaf[FRNN_MAX_PORTS], st_leaf[FRNN_MAX_PORTS], gy[FRNN_MAX_PORTS],
      gs[FRNN_MAX_PORTS];

  /* Inputs of the adjoint: x..., S..., grad_y..., grad_next_S... */
  for (int i = 0; i < n_in && !st; i++)
    st = declare_unique(ab.adj, FRNN_PORT_INPUT, "", s->ports[FRNN_PORT_INPUT][i].name,
                        s->ports[FRNN_PORT_INPUT][i].cls, &in_leaf[i], 0);
  for (int i = 0; i < n_st && !st; i++)
    st = declare_unique(ab.adj, FRNN_PORT_INPUT, "", s->ports[FRNN_PORT_STATE][i].name,
                        s->ports[FRNN_PORT_STATE][i].cls, &st_leaf[i], 0);
  for (int i = 0; i < n_out && !st; i++)
    st = declare_unique(ab.adj, FRNN_PORT_INPUT, "grad_", s->ports[FRNN_PORT_OUTPUT][i].name,
                        s->ports[FRNN_PORT_OUTPUT][i].cls, &gy[i], 0);
  for (int i = 0; i < n_st && !st; i++)
    st = declare_unique(ab.adj, FRNN_PORT_INPUT, "grad_next_", s->ports[FRNN_PORT_STATE][i].name,
                        s->ports[FRNN_PORT_STATE][i].cls, &gs[i], 0);
  if (st) goto fail;

  /* Copy the forward graph (operands precede users, so one pass suffices). */
  for (uint32_t v = 0; v < s->n_nodes; v++) {
    const node *n = &s->nodes[v];
    ab.grad[v] = NODE_NONE;
    if (n->op == FRNN_OP_INPUT)
      ab.copy[v] = in_leaf[n->slot];
    else if (n->op == FRNN_OP_STATE)
      ab.copy[v] = st_leaf[n->slot];
    else {
      uint32_t args[3];
      for (int k = 0; k < op_get(n->op)->arity; k++) args[k] = ab.copy[n->arg[k]];
      ab.copy[v] = graph_make(ab.adj, (frnn_op)n->op, args, op_get(n->op)->arity, n->value);
      if (ab.copy[v] == NODE_NONE) goto failed_make;
    }
  }

  /* Seeds: the gradients of outputs and next states flow into their values. */
  for (int i = 0; i < n_out; i++)
    if (!accumulate(&ab, s->ports[FRNN_PORT_OUTPUT][i].value, gy[i])) goto failed_make;
  for (int i = 0; i < n_st; i++)
    if (!accumulate(&ab, s->ports[FRNN_PORT_STATE][i].value, gs[i])) goto failed_make;

  /* Reverse topological walk. */
  for (uint32_t v = s->n_nodes; v-- > 0;) {
    if (ab.grad[v] == NODE_NONE) continue;
    uint32_t shares[3];
    if (!rule(&ab, v, ab.grad[v], shares)) goto failed_make;
    for (int k = 0; k < op_get(s->nodes[v].op)->arity; k++)
      if (!accumulate(&ab, s->nodes[v].arg[k], shares[k])) goto failed_make;
  }

  /* Outputs: gradients of inputs, then of previous states. */
  uint32_t zero = constant(&ab, 0.0);
  if (zero == NODE_NONE) goto failed_make;
  for (int i = 0; i < n_in && !st; i++) {
    uint32_t g = ab.grad[s->ports[FRNN_PORT_INPUT][i].leaf];
    st = declare_unique(ab.adj, FRNN_PORT_OUTPUT, "grad_", s->ports[FRNN_PORT_INPUT][i].name,
                        s->ports[FRNN_PORT_INPUT][i].cls, NULL, g == NODE_NONE ? zero : g);
  }
  for (int i = 0; i < n_st && !st; i++) {
    uint32_t g = ab.grad[s->ports[FRNN_PORT_STATE][i].leaf];
    st = declare_unique(ab.adj, FRNN_PORT_OUTPUT, "grad_", s->ports[FRNN_PORT_STATE][i].name,
                        s->ports[FRNN_PORT_STATE][i].cls, NULL, g == NODE_NONE ? zero : g);
  }
  if (st || (st = frnn_step_finish(ab.adj))) goto fail;
  free(ab.copy);
  free(ab.grad);
  *out = ab.adj;
  return FRNN_OK;

failed_make:
  st = ctx->status; /* graph_make recorded why */
fail:
  free(ab.copy);
  free(ab.grad);
  frnn_step_destroy(ab.adj);
  return st;
}

/* The adjoint's copy of forward node v, found by structure: the copy loop
 * above made each with the same op, value and (copied) operands, leaves as
 * the adjoint's first inputs; a commutative op's operands may come in the
 * other order (graph_make orders them by hash, and the leaves' differ).
 * map holds the copies of v's operands; NODE_NONE where v was not kept. */
static uint32_t copy_of(const frnn_step *s, const frnn_step *adj, const uint32_t *map, uint32_t v) {
  const node *n = &s->nodes[v];
  if (n->op == FRNN_OP_INPUT) return adj->ports[FRNN_PORT_INPUT][n->slot].leaf;
  if (n->op == FRNN_OP_STATE)
    return adj->ports[FRNN_PORT_INPUT][s->n_ports[FRNN_PORT_INPUT] + n->slot].leaf;
  int arity = op_get(n->op)->arity;
  for (int k = 0; k < arity; k++)
    if (map[n->arg[k]] == NODE_NONE) return NODE_NONE;
  for (uint32_t u = 0; u < adj->n_nodes; u++) {
    const node *a = &adj->nodes[u];
    bool same = a->op == n->op && a->cls == n->cls && memcmp(&a->value, &n->value, sizeof a->value) == 0;
    bool swapped = same && (op_get(n->op)->flags & OPF_COMM) && a->arg[0] == map[n->arg[1]] &&
                   a->arg[1] == map[n->arg[0]];
    for (int k = 0; same && k < arity; k++) same = a->arg[k] == map[n->arg[k]];
    if (same || swapped) return u;
  }
  return NODE_NONE;
}

void adjoint_next_states(const frnn_step *s, const frnn_step *adj, uint32_t at[FRNN_MAX_PORTS]) {
  for (int i = 0; i < FRNN_MAX_PORTS; i++) at[i] = NODE_NONE;
  uint32_t *map = malloc((s->n_nodes ? s->n_nodes : 1) * sizeof *map);
  if (!map) return; /* nothing found: the backward recomputes, as before */
  for (uint32_t v = 0; v < s->n_nodes; v++) map[v] = copy_of(s, adj, map, v);
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) at[i] = map[s->ports[FRNN_PORT_STATE][i].value];
  free(map);
}
