/* print.c - a finished step graph -> step text (SPEC section 2), and the
 * growable string (strbuf) the printer writes into.
 *
 * The text has one temporary per non-leaf node, in node order (operands
 * before users), each an operation on leaves, constants and earlier
 * temporaries, fully parenthesised; then the outputs; then the states.  So
 * every state read in the text is a previous value, and parsing the text
 * rebuilds the same nodes (the builder folds and orders operands the same way
 * again): the same canonical hash.  Constants keep every bit: the shortest of
 * %.15g .. %.17g that reads back exactly, negatives as (-x), infinities as
 * (1/0), NaN as (0/0); -0.0 as 0 (the graph does not tell them apart).
 * Temporaries are <prefix><node>, with a prefix that begins no port name.
 * Internal steps (adjoints) print the same way, though their outputs of any
 * class (and their lack of states) do not parse back. */
#include "frnn_internal.h"

#include <ctype.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------------- strbuf */
void sb_printf(strbuf *b, const char *fmt, ...) {
  if (!b->ok) return;
  va_list ap;
  va_start(ap, fmt);
  size_t room = b->cap - b->len;
  int n = vsnprintf(b->cap ? b->data + b->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->ok = false;
    return;
  }
  if ((size_t)n >= room) {
    size_t need = b->len + (size_t)n + 1, cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
      if (b->data) b->data[b->len] = 0; /* drop the partial write */
      b->ok = false;
      return;
    }
    b->data = d;
    b->cap = cap;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, cap - b->len, fmt, ap);
    va_end(ap);
  }
  b->len += (size_t)n;
}

/* -------------------------------------------------------------- constants */
static void put_const(strbuf *b, double v) {
  if (v != v) {
    /* The NaN that 0/0 gives here (the parser folds 0/0 the same way), or
     * its negation; any other payload prints as 0/0 too. */
    volatile double zero = 0.0;
    double dn = zero / zero;
    bool neg = signbit(v) != signbit(dn);
    sb_printf(b, neg ? "(-(0/0))" : "(0/0)");
    return;
  }
  if (isinf(v)) {
    sb_printf(b, v < 0 ? "(-(1/0))" : "(1/0)");
    return;
  }
  if (v == 0) {
    /* -0.0 and 0.0 are one constant to the graph (interning, hash): print
     * both as 0, so that printing is a fixed point. */
    sb_printf(b, "0");
    return;
  }
  double a = fabs(v);
  char buf[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, a);
    if (strtod(buf, NULL) == a) break;
  }
  sb_printf(b, signbit(v) ? "(-%s)" : "%s", buf);
}

/* ------------------------------------------------------------ expressions */
void print_expr(strbuf *b, const frnn_step *s, uint32_t v) {
  const node *n = &s->nodes[v];
  const op_info *info = op_get((frnn_op)n->op);
  switch (n->op) {
  case FRNN_OP_INPUT: sb_printf(b, "%s", s->ports[FRNN_PORT_INPUT][n->slot].name); return;
  case FRNN_OP_STATE: sb_printf(b, "%s", s->ports[FRNN_PORT_STATE][n->slot].name); return;
  case FRNN_OP_CONST: put_const(b, n->value); return;
  case FRNN_OP_NEG:
    sb_printf(b, "(-");
    print_expr(b, s, n->arg[0]);
    sb_printf(b, ")");
    return;
  }
  if (info->flags & OPF_INFIX) {
    sb_printf(b, "(");
    print_expr(b, s, n->arg[0]);
    sb_printf(b, " %s ", info->spelling);
    print_expr(b, s, n->arg[1]);
    sb_printf(b, ")");
    return;
  }
  sb_printf(b, "%s(", info->spelling);
  for (int i = 0; i < info->arity; i++) {
    if (i) sb_printf(b, ", ");
    print_expr(b, s, n->arg[i]);
  }
  sb_printf(b, ")");
}

/* ------------------------------------------------------------------ steps */
/* A prefix for temporaries that begins no port name: "t", else two letters. */
static void pick_prefix(const frnn_step *s, char prefix[3]) {
  for (int i = -1; i < 26 * 26; i++) {
    if (i < 0)
      strcpy(prefix, "t");
    else
      prefix[0] = (char)('a' + i / 26), prefix[1] = (char)('a' + i % 26), prefix[2] = 0;
    size_t n = strlen(prefix);
    bool clash = false;
    for (int k = 0; k < 3 && !clash; k++)
      for (int j = 0; j < s->n_ports[k] && !clash; j++)
        clash = strncmp(s->ports[k][j].name, prefix, n) == 0;
    if (!clash) return;
  }
  /* Unreachable: at most 3 * FRNN_MAX_PORTS names cannot begin with all
   * 676 two-letter prefixes. */
}

static void put_value(strbuf *b, const frnn_step *s, uint32_t v, const char *prefix) {
  const node *n = &s->nodes[v];
  switch (n->op) {
  case FRNN_OP_INPUT: sb_printf(b, "%s", s->ports[FRNN_PORT_INPUT][n->slot].name); break;
  case FRNN_OP_STATE: sb_printf(b, "%s", s->ports[FRNN_PORT_STATE][n->slot].name); break;
  case FRNN_OP_CONST: put_const(b, n->value); break;
  default: sb_printf(b, "%s%u", prefix, v); break;
  }
}

static void put_node(strbuf *b, const frnn_step *s, uint32_t v, const char *prefix) {
  const node *n = &s->nodes[v];
  const op_info *info = op_get((frnn_op)n->op);
  sb_printf(b, "  %s%u = ", prefix, v);
  if (n->op == FRNN_OP_NEG) {
    sb_printf(b, "(-");
    put_value(b, s, n->arg[0], prefix);
    sb_printf(b, ")");
  } else if (info->flags & OPF_INFIX) {
    sb_printf(b, "(");
    put_value(b, s, n->arg[0], prefix);
    sb_printf(b, " %s ", info->spelling);
    put_value(b, s, n->arg[1], prefix);
    sb_printf(b, ")");
  } else {
    sb_printf(b, "%s(", info->spelling);
    for (int i = 0; i < info->arity; i++) {
      if (i) sb_printf(b, ", ");
      put_value(b, s, n->arg[i], prefix);
    }
    sb_printf(b, ")");
  }
  sb_printf(b, "\n");
}

static void put_ports(strbuf *b, const frnn_step *s, frnn_port_kind kind) {
  for (int i = 0; i < s->n_ports[kind]; i++)
    sb_printf(b, "%s%s%s", i ? ", " : "", s->ports[kind][i].name,
              class_name(s->ports[kind][i].cls));
}

static void put_step(strbuf *b, const frnn_step *s) {
  char prefix[3];
  pick_prefix(s, prefix);
  /* The builder takes any step name; the text needs an identifier.  (The
   * name is not part of the hash.) */
  char name[FRNN_NAME_MAX + 1];
  size_t n = 0;
  if (!(isalpha((unsigned char)s->name[0]) || s->name[0] == '_')) name[n++] = '_';
  for (size_t i = 0; s->name[i] && n < FRNN_NAME_MAX - 1; i++)
    name[n++] = isalnum((unsigned char)s->name[i]) || s->name[i] == '_' ? s->name[i] : '_';
  name[n] = 0;
  sb_printf(b, "step %s(", name);
  put_ports(b, s, FRNN_PORT_INPUT);
  sb_printf(b, "%s", s->n_ports[FRNN_PORT_INPUT] && s->n_ports[FRNN_PORT_STATE] ? "; " : ";");
  put_ports(b, s, FRNN_PORT_STATE);
  sb_printf(b, ") -> ");
  put_ports(b, s, FRNN_PORT_OUTPUT);
  sb_printf(b, "\n");
  for (uint32_t v = 0; v < s->n_nodes; v++) {
    int op = s->nodes[v].op;
    if (op != FRNN_OP_INPUT && op != FRNN_OP_STATE && op != FRNN_OP_CONST)
      put_node(b, s, v, prefix);
  }
  for (int i = 0; i < s->n_ports[FRNN_PORT_OUTPUT]; i++) {
    sb_printf(b, "  %s = ", s->ports[FRNN_PORT_OUTPUT][i].name);
    put_value(b, s, s->ports[FRNN_PORT_OUTPUT][i].value, prefix);
    sb_printf(b, "\n");
  }
  /* A state whose next value is another state's previous value reads it
   * through an alias taken before any state is assigned. */
  const port *st = s->ports[FRNN_PORT_STATE];
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) {
    const node *n = &s->nodes[st[i].value];
    if (n->op == FRNN_OP_STATE && n->slot != i)
      sb_printf(b, "  %ss%d = %s\n", prefix, i, st[n->slot].name);
  }
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) {
    const node *n = &s->nodes[st[i].value];
    sb_printf(b, "  %s = ", st[i].name);
    if (n->op == FRNN_OP_STATE && n->slot != i)
      sb_printf(b, "%ss%d", prefix, i);
    else
      put_value(b, s, st[i].value, prefix);
    sb_printf(b, "\n");
  }
}

frnn_status frnn_step_print(const frnn_step *s, char **out) {
  if (!s) return FRNN_E_ARG;
  if (!out) return diag_fail(s->ctx, FRNN_E_ARG, "frnn_step_print: out is NULL");
  *out = NULL;
  if (!s->finished)
    return diag_fail(s->ctx, FRNN_E_ARG,
                     "frnn_step_print: step '%s' is not finished (call frnn_step_finish)", s->name);
  locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  locale_t old_locale = c_locale ? uselocale(c_locale) : (locale_t)0;
  strbuf b = {.ok = true};
  put_step(&b, s);
  if (c_locale) {
    uselocale(old_locale);
    freelocale(c_locale);
  }
  if (!b.ok) {
    free(b.data);
    return diag_fail(s->ctx, FRNN_E_NOMEM, "out of memory printing step '%s'", s->name);
  }
  *out = b.data;
  return FRNN_OK;
}
