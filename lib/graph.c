/* graph.c - step graphs: the builder API, interning, simplification on
 * construction, the canonical form and its hash.
 *
 * Nodes live in one array per step and refer to each other by 32-bit index;
 * operands always precede their users, so the array is a topological order.
 * Every node is interned by its structural hash (op, class, slot or constant,
 * operands' hashes): building the same expression twice gives the same node,
 * which is common-subexpression elimination for free.  graph_make also folds
 * constants and trivial identities.  frnn_step_finish renumbers the nodes
 * reachable from the signature in a canonical depth-first order, which drops
 * dead code and makes the node order (and so the generated code) independent
 * of how the step was written. */
#include "frnn_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- hashing */
static uint64_t mix64(uint64_t h, uint64_t x) {
  /* splitmix64 finaliser over h ^ x: fixed-width, endian-independent. */
  uint64_t z = h ^ (x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t double_bits(double v) {
  if (v == 0.0) v = 0.0; /* -0.0 and 0.0 are the same constant for hashing */
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

static uint64_t node_hash(const frnn_step *s, const node *n) {
  uint64_t h = mix64(0x66726e6eull, (uint64_t)n->op | (uint64_t)n->cls << 8 |
                                        (uint64_t)n->slot << 16);
  if (n->op == FRNN_OP_CONST) h = mix64(h, double_bits(n->value));
  for (int i = 0; i < op_get(n->op)->arity; i++) h = mix64(h, s->nodes[n->arg[i]].hash);
  return h;
}

static bool node_same(const node *a, const node *b) {
  return a->op == b->op && a->cls == b->cls && a->slot == b->slot &&
         double_bits(a->value) == double_bits(b->value) && a->arg[0] == b->arg[0] &&
         a->arg[1] == b->arg[1] && a->arg[2] == b->arg[2];
}

/* -------------------------------------------------------------- interning */
static bool intern_grow(frnn_step *s) {
  uint32_t cap = s->intern_cap ? s->intern_cap * 2 : 256;
  while (cap < (s->n_nodes + 1) * 2) cap *= 2; /* rebuilt from scratch after canonicalize */
  uint32_t *t = calloc(cap, sizeof *t);
  if (!t) return false;
  for (uint32_t i = 0; i < s->n_nodes; i++) {
    uint32_t k = (uint32_t)s->nodes[i].hash & (cap - 1);
    while (t[k]) k = (k + 1) & (cap - 1);
    t[k] = i + 1;
  }
  free(s->intern);
  s->intern = t;
  s->intern_cap = cap;
  return true;
}

/* The index of a node equal to `proto`, adding it if new; NODE_NONE when out
 * of memory or over FRNN_MAX_NODES (message in ctx). */
static uint32_t intern(frnn_step *s, node proto) {
  for (int i = op_get(proto.op)->arity; i < 3; i++) proto.arg[i] = 0;
  if (proto.op != FRNN_OP_CONST) proto.value = 0;
  proto.hash = node_hash(s, &proto);
  if ((s->n_nodes + 1) * 2 > s->intern_cap && !intern_grow(s)) goto nomem;
  uint32_t k = (uint32_t)proto.hash & (s->intern_cap - 1);
  for (; s->intern[k]; k = (k + 1) & (s->intern_cap - 1)) {
    uint32_t i = s->intern[k] - 1;
    if (s->nodes[i].hash == proto.hash && node_same(&s->nodes[i], &proto)) return i;
  }
  if (s->n_nodes >= FRNN_MAX_NODES) {
    diag_fail(s->ctx, FRNN_E_ARG, "step '%s' has more than %d nodes", s->name, FRNN_MAX_NODES);
    return NODE_NONE;
  }
  if (s->n_nodes == s->cap_nodes) {
    uint32_t cap = s->cap_nodes ? s->cap_nodes * 2 : 64;
    node *nn = realloc(s->nodes, cap * sizeof *nn);
    if (!nn) goto nomem;
    s->nodes = nn;
    s->cap_nodes = cap;
  }
  s->nodes[s->n_nodes] = proto;
  s->intern[k] = s->n_nodes + 1;
  return s->n_nodes++;
nomem:
  diag_fail(s->ctx, FRNN_E_NOMEM, "out of memory building step '%s'", s->name);
  return NODE_NONE;
}

/* ---------------------------------------------------- shape classes, folding */
int graph_result_class(frnn_step *s, frnn_op op, const uint32_t *args, int n_args) {
  const op_info *info = op_get(op);
  int c = 0;
  switch (info->shape) {
  case SHAPE_LEAF: return -1;
  case SHAPE_JOIN:
    for (int i = 0; i < n_args; i++) c |= s->nodes[args[i]].cls;
    return c;
  case SHAPE_SUMN: return s->nodes[args[0]].cls & ~2;
  case SHAPE_SUMM: return s->nodes[args[0]].cls & ~1;
  case SHAPE_FIRST: return s->nodes[args[0]].cls;
  }
  return -1;
}

static bool is_const(const frnn_step *s, uint32_t v, double c) {
  return s->nodes[v].op == FRNN_OP_CONST && s->nodes[v].value == c;
}

uint32_t graph_make(frnn_step *s, frnn_op op, const uint32_t *args, int n_args, double value) {
  node n = {.op = (uint8_t)op, .value = value};
  if (op == FRNN_OP_CONST) return intern(s, n);
  int cls = graph_result_class(s, op, args, n_args);
  n.cls = (uint8_t)cls;
  uint32_t a[3] = {0, 0, 0};
  memcpy(a, args, (size_t)n_args * sizeof *a);

  /* A reduction over a dimension the operand lacks is the identity; so is a
   * broadcast to the class the operand already has. */
  if ((op == FRNN_OP_SUM || op == FRNN_OP_SUM_M || op == FRNN_OP_BCAST) && s->nodes[a[0]].cls == cls)
    return a[0];

  /* Constant folding: an elementwise op of constants is a constant.  (All
   * constants are scalars, so the class is unchanged.) */
  bool all_const = n_args > 0;
  for (int i = 0; i < n_args; i++) all_const &= s->nodes[a[i]].op == FRNN_OP_CONST;
  if (all_const)
    return graph_make(s, FRNN_OP_CONST, NULL, 0,
                      op_eval(op, s->nodes[a[0]].value, n_args > 1 ? s->nodes[a[1]].value : 0,
                              n_args > 2 ? s->nodes[a[2]].value : 0));

  /* Identities that keep the class: x+0, 0+x, x-0, x*1, 1*x, x/1, pow(x,1), --x. */
  switch (op) {
  case FRNN_OP_ADD:
    if (is_const(s, a[1], 0)) return a[0];
    if (is_const(s, a[0], 0)) return a[1];
    break;
  case FRNN_OP_SUB:
    if (is_const(s, a[1], 0)) return a[0];
    break;
  case FRNN_OP_MUL:
    if (is_const(s, a[1], 1)) return a[0];
    if (is_const(s, a[0], 1)) return a[1];
    break;
  case FRNN_OP_DIV:
  case FRNN_OP_POW:
    if (is_const(s, a[1], 1)) return a[0];
    break;
  case FRNN_OP_NEG:
    if (s->nodes[a[0]].op == FRNN_OP_NEG) return s->nodes[a[0]].arg[0];
    break;
  default: break;
  }

  /* Canonical operand order for commutative ops: by structural hash, so that
   * a*b and b*a are one node whatever order they were written in. */
  if ((op_get(op)->flags & OPF_COMM) && s->nodes[a[0]].hash > s->nodes[a[1]].hash) {
    uint32_t t = a[0];
    a[0] = a[1];
    a[1] = t;
  }
  memcpy(n.arg, a, sizeof a);
  return intern(s, n);
}

/* ------------------------------------------------------------ descriptions */
const char *graph_describe(const frnn_step *s, uint32_t v, char *buf, size_t size) {
  if (v >= s->n_nodes) {
    snprintf(buf, size, "value %u (no such node: the step has %u)", v, s->n_nodes);
    return buf;
  }
  const node *n = &s->nodes[v];
  if (n->op == FRNN_OP_INPUT || n->op == FRNN_OP_STATE)
    snprintf(buf, size, "%s '%s' %s", n->op == FRNN_OP_INPUT ? "input" : "state",
             s->ports[n->op == FRNN_OP_INPUT ? FRNN_PORT_INPUT : FRNN_PORT_STATE][n->slot].name,
             class_name(n->cls));
  else if (n->op == FRNN_OP_CONST)
    snprintf(buf, size, "node %u (constant %g)", v, n->value);
  else
    snprintf(buf, size, "node %u (%s, %s)", v, op_get(n->op)->spelling, class_name(n->cls));
  return buf;
}

int graph_find_port(const frnn_step *s, frnn_port_kind kind, const char *name) {
  for (int i = 0; i < s->n_ports[kind]; i++)
    if (strcmp(s->ports[kind][i].name, name) == 0) return i;
  return -1;
}

/* ----------------------------------------------------------- builder API */
static frnn_status step_new(frnn_ctx *ctx, const char *name, bool internal, frnn_step **out) {
  if (!ctx) return FRNN_E_ARG;
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "frnn_step_create: out is NULL");
  *out = NULL;
  if (!name || !*name || strlen(name) >= FRNN_NAME_MAX)
    return diag_fail(ctx, FRNN_E_ARG, "frnn_step_create: the step name must be 1 to %d characters",
                     FRNN_NAME_MAX - 1);
  frnn_step *s = calloc(1, sizeof *s);
  if (!s) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory creating step '%s'", name);
  s->ctx = ctx;
  s->internal = internal;
  strcpy(s->name, name);
  *out = s;
  return FRNN_OK;
}

frnn_status frnn_step_create(frnn_ctx *ctx, const char *name, frnn_step **out) {
  return step_new(ctx, name, false, out);
}

frnn_status graph_create_internal(frnn_ctx *ctx, const char *name, frnn_step **out) {
  return step_new(ctx, name, true, out);
}

void frnn_step_destroy(frnn_step *s) {
  if (!s) return;
  free(s->nodes);
  free(s->intern);
  free(s);
}

/* Common checks of every builder call: a live, unfinished step. */
static frnn_status check_building(frnn_step *s, const char *fn) {
  if (!s) return FRNN_E_ARG;
  if (s->finished)
    return diag_fail(s->ctx, FRNN_E_ARG, "%s: step '%s' is finished and can no longer change", fn,
                     s->name);
  return FRNN_OK;
}

static bool valid_identifier(const char *name) {
  if (!name || !(isalpha((unsigned char)name[0]) || name[0] == '_')) return false;
  size_t n = 0;
  for (; name[n]; n++)
    if (!(isalnum((unsigned char)name[n]) || name[n] == '_')) return false;
  return n < FRNN_NAME_MAX;
}

static const char *const kind_names[] = {"input", "state", "output"};

static frnn_status declare(frnn_step *s, frnn_port_kind kind, const char *name, frnn_class c,
                           const char *fn, int *index) {
  frnn_status st = check_building(s, fn);
  if (st) return st;
  if (!valid_identifier(name))
    return diag_fail(s->ctx, FRNN_E_NAME,
                     "%s: '%s' is not a valid %s name (a letter or '_', then letters, digits "
                     "or '_', at most %d characters)",
                     fn, name ? name : "(null)", kind_names[kind], FRNN_NAME_MAX - 1);
  if ((unsigned)c > FRNN_MAT)
    return diag_fail(s->ctx, FRNN_E_ARG, "%s: %s '%s' has shape class %d; it must be one of "
                                         "FRNN_SCALAR, FRNN_COL, FRNN_ROW, FRNN_MAT",
                     fn, kind_names[kind], name, (int)c);
  if (op_by_function_name(name, strlen(name)) >= 0)
    return diag_fail(s->ctx, FRNN_E_NAME, "%s: '%s' is the name of an operation", fn, name);
  for (int k = 0; k < 3; k++)
    if (graph_find_port(s, (frnn_port_kind)k, name) >= 0)
      return diag_fail(s->ctx, FRNN_E_NAME, "%s: '%s' is already declared as %s of step '%s'", fn,
                       name, kind_names[k], s->name);
  if (s->n_ports[kind] == FRNN_MAX_PORTS)
    return diag_fail(s->ctx, FRNN_E_ARG, "%s: step '%s' has more than %d %ss", fn, s->name,
                     FRNN_MAX_PORTS, kind_names[kind]);
  if (kind == FRNN_PORT_OUTPUT && !s->internal && c != FRNN_COL && c != FRNN_SCALAR)
    return diag_fail(s->ctx, FRNN_E_SHAPE, "%s: output '%s' is %s; outputs must be [M,1] or [1,1]",
                     fn, name, class_name(c));
  port *p = &s->ports[kind][s->n_ports[kind]];
  memset(p, 0, sizeof *p);
  strcpy(p->name, name);
  p->cls = (uint8_t)c;
  p->leaf = p->value = NODE_NONE;
  if (kind != FRNN_PORT_OUTPUT) {
    node leaf = {.op = kind == FRNN_PORT_INPUT ? FRNN_OP_INPUT : FRNN_OP_STATE,
                 .cls = (uint8_t)c,
                 .slot = (uint16_t)s->n_ports[kind]};
    p->leaf = intern(s, leaf);
    if (p->leaf == NODE_NONE) return s->ctx->status;
  }
  *index = s->n_ports[kind]++;
  return FRNN_OK;
}

frnn_status frnn_step_input(frnn_step *s, const char *name, frnn_class c, frnn_value *out) {
  int i;
  frnn_status st = declare(s, FRNN_PORT_INPUT, name, c, "frnn_step_input", &i);
  if (!st && out) *out = s->ports[FRNN_PORT_INPUT][i].leaf;
  return st;
}

frnn_status frnn_step_state(frnn_step *s, const char *name, frnn_class c, frnn_value *out) {
  int i;
  frnn_status st = declare(s, FRNN_PORT_STATE, name, c, "frnn_step_state", &i);
  if (!st && out) *out = s->ports[FRNN_PORT_STATE][i].leaf;
  return st;
}

frnn_status frnn_step_const(frnn_step *s, double v, frnn_value *out) {
  frnn_status st = check_building(s, "frnn_step_const");
  if (st) return st;
  if (!out) return diag_fail(s->ctx, FRNN_E_ARG, "frnn_step_const: out is NULL");
  *out = graph_make(s, FRNN_OP_CONST, NULL, 0, v);
  return *out == NODE_NONE ? s->ctx->status : FRNN_OK;
}

frnn_status frnn_step_apply(frnn_step *s, frnn_op op, const frnn_value *args, int n_args,
                            frnn_value *out) {
  frnn_status st = check_building(s, "frnn_step_apply");
  if (st) return st;
  if (!out) return diag_fail(s->ctx, FRNN_E_ARG, "frnn_step_apply: out is NULL");
  const op_info *info = op_get(op);
  if (!info || info->shape == SHAPE_LEAF)
    return diag_fail(s->ctx, FRNN_E_ARG,
                     "frnn_step_apply: %d is not an operation (leaves are made with "
                     "frnn_step_input, frnn_step_state, frnn_step_const)",
                     (int)op);
  if (n_args != info->arity)
    return diag_fail(s->ctx, FRNN_E_ARG, "frnn_step_apply: '%s' takes %d operand%s, not %d",
                     info->spelling, info->arity, info->arity == 1 ? "" : "s", n_args);
  if (n_args && !args) return diag_fail(s->ctx, FRNN_E_ARG, "frnn_step_apply: args is NULL");
  char d[160];
  for (int i = 0; i < n_args; i++)
    if (args[i] >= s->n_nodes)
      return diag_fail(s->ctx, FRNN_E_ARG, "frnn_step_apply: operand %d of '%s' is %s", i + 1,
                       info->spelling, graph_describe(s, args[i], d, sizeof d));
  if (op == FRNN_OP_POW && s->nodes[args[1]].op != FRNN_OP_CONST)
    return diag_fail(s->ctx, FRNN_E_ARG, "frnn_step_apply: the exponent of 'pow' must be a "
                                         "constant, but it is %s",
                     graph_describe(s, args[1], d, sizeof d));
  *out = graph_make(s, op, args, n_args, 0);
  return *out == NODE_NONE ? s->ctx->status : FRNN_OK;
}

/* Bind value v to port p, which must be at least as large as v's class. */
static frnn_status bind(frnn_step *s, port *p, frnn_port_kind kind, frnn_value v, const char *fn) {
  char d[160];
  if (v >= s->n_nodes)
    return diag_fail(s->ctx, FRNN_E_ARG, "%s: %s '%s' is given %s", fn, kind_names[kind], p->name,
                     graph_describe(s, v, d, sizeof d));
  int vc = s->nodes[v].cls;
  if (vc & ~p->cls)
    return diag_fail(s->ctx, FRNN_E_SHAPE,
                     "%s: %s '%s' is %s but its value, %s, is %s (a value may be bound to a "
                     "port of its own class or a larger one, never a smaller one)",
                     fn, kind_names[kind], p->name, class_name(p->cls),
                     graph_describe(s, v, d, sizeof d), class_name(vc));
  p->value = v;
  return FRNN_OK;
}

frnn_status frnn_step_assign(frnn_step *s, const char *name, frnn_value v) {
  frnn_status st = check_building(s, "frnn_step_assign");
  if (st) return st;
  int i = name ? graph_find_port(s, FRNN_PORT_STATE, name) : -1;
  if (i < 0)
    return diag_fail(s->ctx, FRNN_E_NAME, "frnn_step_assign: step '%s' has no state '%s'", s->name,
                     name ? name : "(null)");
  return bind(s, &s->ports[FRNN_PORT_STATE][i], FRNN_PORT_STATE, v, "frnn_step_assign");
}

frnn_status frnn_step_output(frnn_step *s, const char *name, frnn_class c, frnn_value v) {
  frnn_status st = check_building(s, "frnn_step_output");
  if (st) return st;
  int i = name ? graph_find_port(s, FRNN_PORT_OUTPUT, name) : -1;
  if (i >= 0 && s->ports[FRNN_PORT_OUTPUT][i].cls != c)
    return diag_fail(s->ctx, FRNN_E_SHAPE, "frnn_step_output: output '%s' was declared %s, not %s",
                     name, class_name(s->ports[FRNN_PORT_OUTPUT][i].cls), class_name(c));
  if (i < 0 && (st = declare(s, FRNN_PORT_OUTPUT, name, c, "frnn_step_output", &i))) return st;
  port *p = &s->ports[FRNN_PORT_OUTPUT][i];
  st = bind(s, p, FRNN_PORT_OUTPUT, v, "frnn_step_output");
  if (st && p->value == NODE_NONE) s->n_ports[FRNN_PORT_OUTPUT]--; /* undo the declaration */
  return st;
}

frnn_value frnn_value_class(const frnn_step *s, frnn_value v) {
  return s && v < s->n_nodes ? s->nodes[v].cls : (frnn_value)-1;
}

/* -------------------------------------------------------- canonical form */
/* Renumber the nodes reachable from the signature in depth-first post-order
 * (inputs and states first, then next states, then outputs; operands left to
 * right), dropping the rest.  Requires operands before users; keeps it. */
static frnn_status canonicalize(frnn_step *s) {
  uint32_t n = s->n_nodes;
  uint32_t *new_index = malloc((n ? n : 1) * sizeof *new_index);
  uint32_t *stack = malloc((n ? n : 1) * 2 * sizeof *stack);
  node *out = malloc((n ? n : 1) * sizeof *out);
  if (!new_index || !stack || !out) {
    free(new_index), free(stack), free(out);
    return diag_fail(s->ctx, FRNN_E_NOMEM, "out of memory finishing step '%s'", s->name);
  }
  for (uint32_t i = 0; i < n; i++) new_index[i] = NODE_NONE;
  uint32_t count = 0;
  uint32_t roots[3 * FRNN_MAX_PORTS + FRNN_MAX_PORTS];
  int n_roots = 0;
  for (int i = 0; i < s->n_ports[FRNN_PORT_INPUT]; i++)
    roots[n_roots++] = s->ports[FRNN_PORT_INPUT][i].leaf;
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++)
    roots[n_roots++] = s->ports[FRNN_PORT_STATE][i].leaf;
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++)
    roots[n_roots++] = s->ports[FRNN_PORT_STATE][i].value;
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++)
    roots[n_roots++] = s->ports[FRNN_PORT_OUTPUT][i].value;
  for (int r = 0; r < n_roots; r++) {
    /* Explicit stack of (node, next operand to visit). */
    int sp = 0;
    if (new_index[roots[r]] != NODE_NONE) continue;
    stack[sp++] = roots[r];
    stack[sp++] = 0;
    while (sp) {
      uint32_t v = stack[sp - 2], k = stack[sp - 1];
      const node *nd = &s->nodes[v];
      if (k < (uint32_t)op_get(nd->op)->arity) {
        stack[sp - 1] = k + 1;
        uint32_t a = nd->arg[k];
        if (new_index[a] == NODE_NONE) {
          stack[sp++] = a;
          stack[sp++] = 0;
        }
        continue;
      }
      sp -= 2;
      if (new_index[v] != NODE_NONE) continue; /* reached twice on the stack */
      node c = *nd;
      for (int i = 0; i < op_get(c.op)->arity; i++) c.arg[i] = new_index[c.arg[i]];
      out[count] = c;
      new_index[v] = count++;
    }
  }
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < s->n_ports[k]; i++) {
      port *p = &s->ports[k][i];
      if (p->leaf != NODE_NONE) p->leaf = new_index[p->leaf];
      if (p->value != NODE_NONE) p->value = new_index[p->value];
    }
  free(s->nodes);
  free(s->intern);
  s->nodes = out;
  s->n_nodes = s->cap_nodes = count;
  s->intern = NULL;
  s->intern_cap = 0;
  free(new_index);
  free(stack);
  if (!intern_grow(s))
    return diag_fail(s->ctx, FRNN_E_NOMEM, "out of memory finishing step '%s'", s->name);
  return FRNN_OK;
}

static uint64_t step_hash(const frnn_step *s) {
  uint64_t h = mix64(0x73746570ull, s->internal);
  for (int k = 0; k < 3; k++) {
    h = mix64(h, (uint64_t)s->n_ports[k]);
    for (int i = 0; i < s->n_ports[k]; i++) {
      const port *p = &s->ports[k][i];
      h = mix64(h, p->cls);
      if (k != FRNN_PORT_INPUT) h = mix64(h, s->nodes[p->value].hash);
    }
  }
  return h;
}

frnn_status frnn_step_finish(frnn_step *s) {
  frnn_status st = check_building(s, "frnn_step_finish");
  if (st) return st;
  if (!s->internal && s->n_ports[FRNN_PORT_STATE] == 0)
    return diag_fail(s->ctx, FRNN_E_STEP, "step '%s' has no state: a recurrence needs at least one",
                     s->name);
  if (!s->internal && s->n_ports[FRNN_PORT_OUTPUT] == 0)
    return diag_fail(s->ctx, FRNN_E_STEP, "step '%s' has no output", s->name);
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++)
    if (s->ports[FRNN_PORT_STATE][i].value == NODE_NONE)
      return diag_fail(s->ctx, FRNN_E_STEP,
                       "step '%s': state '%s' is never assigned (it could never change)", s->name,
                       s->ports[FRNN_PORT_STATE][i].name);
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++)
    if (s->ports[FRNN_PORT_OUTPUT][i].value == NODE_NONE)
      return diag_fail(s->ctx, FRNN_E_STEP, "step '%s': output '%s' is never bound", s->name,
                       s->ports[FRNN_PORT_OUTPUT][i].name);
  if ((st = canonicalize(s))) return st;
  s->hash = step_hash(s);
  s->finished = true;
  return FRNN_OK;
}

/* ------------------------------------------------------------- accessors */
uint64_t frnn_step_hash(const frnn_step *s) { return s && s->finished ? s->hash : 0; }
const char *frnn_step_name(const frnn_step *s) { return s ? s->name : ""; }
int frnn_step_node_count(const frnn_step *s) { return s ? (int)s->n_nodes : 0; }

int frnn_step_port_count(const frnn_step *s, frnn_port_kind kind) {
  return s && (unsigned)kind < 3 ? s->n_ports[kind] : 0;
}
const char *frnn_step_port_name(const frnn_step *s, frnn_port_kind kind, int i) {
  return s && (unsigned)kind < 3 && i >= 0 && i < s->n_ports[kind] ? s->ports[kind][i].name : NULL;
}
frnn_class frnn_step_port_class(const frnn_step *s, frnn_port_kind kind, int i) {
  return s && (unsigned)kind < 3 && i >= 0 && i < s->n_ports[kind]
             ? (frnn_class)s->ports[kind][i].cls
             : (frnn_class)-1;
}
