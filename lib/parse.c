/* parse.c - step text -> step graph (SPEC section 2), by recursive descent
 * over the tokens of lex.c, building the graph as it goes through the public
 * builder (frnn_step_create ... frnn_step_finish).
 *
 * Names: the signature declares inputs, states and outputs; any other name
 * assigned in the body is a local.  Each name has a current binding (a node):
 * an input its leaf, a state its latest assignment (at first its previous
 * value, the leaf), an output its latest assignment (none at first: reading
 * it then is an error), a local its latest assignment.  Every assignment to
 * a state is passed to frnn_step_assign, so the last one is the next state;
 * outputs are declared and bound in signature order at the end.
 *
 * Every failure is reported once, at a place in the text, through
 * diag_fail_at; the functions below return false (or NODE_NONE) after it. */
#include "frnn_internal.h"

#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 200              /* nesting of ( ), unary minus and calls */
#define MAX_FILE (16u << 20)       /* frnn_step_load refuses larger files */

enum sym_kind { SYM_INPUT, SYM_STATE, SYM_OUTPUT, SYM_LOCAL };
static const char *const sym_kind_name[] = {"input", "state", "output", "local"};

typedef struct sym {
  char name[FRNN_NAME_MAX];
  enum sym_kind kind;
  int cls;        /* ports: declared class */
  uint32_t value; /* current binding; NODE_NONE: none yet (an output) */
  bool assigned;  /* states: assigned at least once */
  int line, col;  /* where it was declared (ports) or first assigned */
} sym;

typedef struct parser {
  frnn_ctx *ctx;
  const char *file, *src;
  lexer lx;
  token tok;        /* the current token */
  int paren;        /* > 0 inside the signature's ( ): newlines are skipped */
  int depth;        /* expression nesting */
  frnn_step *step;
  token step_name;  /* for failures of frnn_step_finish */
  sym *syms;        /* in order of declaration: ports in signature order */
  uint32_t n_syms, cap_syms;
  uint32_t *tab;    /* open addressing: sym index + 1 (0: empty) */
  uint32_t tab_cap;
} parser;

/* -------------------------------------------------------------- failures */
static bool fail_at(parser *p, frnn_status st, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static bool fail_at(parser *p, frnn_status st, int line, int col, const char *fmt, ...) {
  char what[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  diag_fail_at(p->ctx, st, p->file, p->src, line, col, "%s", what);
  return false;
}
#define FAIL_TOK(p, st, t, ...) fail_at(p, st, (t).line, (t).col, __VA_ARGS__)

/* A builder call failed: report its message (without the "frnn_step_xxx: "
 * prefix) at this place in the text. */
static bool fail_builder(parser *p, int line, int col) {
  char msg[1024];
  const char *m = p->ctx->msg;
  frnn_status st = p->ctx->status ? p->ctx->status : FRNN_E_ARG;
  if (strncmp(m, "frnn_", 5) == 0 && strstr(m, ": ")) m = strstr(m, ": ") + 2;
  size_t n = strnlen(m, sizeof msg - 1);
  memcpy(msg, m, n);
  msg[n] = 0;
  return fail_at(p, st, line, col, "%s", msg);
}

/* ---------------------------------------------------------------- tokens */
static bool next(parser *p) {
  do
    if (lex_next(&p->lx, &p->tok)) return false;
  while (p->tok.kind == TOK_NEWLINE && p->paren > 0);
  return true;
}

static bool fail_expected(parser *p, const char *what) {
  char d[96];
  return FAIL_TOK(p, FRNN_E_SYNTAX, p->tok, "expected %s, got %s", what,
                  tok_describe(&p->tok, d, sizeof d));
}

static bool expect(parser *p, enum tok_kind k, const char *what) {
  return p->tok.kind == k ? next(p) : fail_expected(p, what);
}

static bool tok_is(const token *t, enum tok_kind k, const char *text) {
  return t->kind == k && t->len == strlen(text) && memcmp(t->text, text, t->len) == 0;
}

/* The token's text as a C string (names are short: the lexer checks). */
static void tok_name(const token *t, char name[FRNN_NAME_MAX]) {
  size_t n = t->len < FRNN_NAME_MAX ? t->len : FRNN_NAME_MAX - 1;
  memcpy(name, t->text, n);
  name[n] = 0;
}

/* --------------------------------------------------------------- symbols */
static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static sym *sym_find(parser *p, const char *name) {
  if (!p->tab_cap) return NULL;
  for (uint32_t k = name_hash(name) & (p->tab_cap - 1); p->tab[k]; k = (k + 1) & (p->tab_cap - 1))
    if (strcmp(p->syms[p->tab[k] - 1].name, name) == 0) return &p->syms[p->tab[k] - 1];
  return NULL;
}

static bool tab_grow(parser *p) {
  uint32_t cap = p->tab_cap ? p->tab_cap * 2 : 64;
  uint32_t *t = calloc(cap, sizeof *t);
  if (!t) return false;
  for (uint32_t i = 0; i < p->n_syms; i++) {
    uint32_t k = name_hash(p->syms[i].name) & (cap - 1);
    while (t[k]) k = (k + 1) & (cap - 1);
    t[k] = i + 1;
  }
  free(p->tab);
  p->tab = t;
  p->tab_cap = cap;
  return true;
}

/* Add a symbol (not yet present) declared at token t. */
static sym *sym_add(parser *p, const token *t, enum sym_kind kind, int cls, uint32_t value) {
  if ((p->n_syms + 1) * 2 > p->tab_cap && !tab_grow(p)) goto nomem;
  if (p->n_syms == p->cap_syms) {
    uint32_t cap = p->cap_syms ? p->cap_syms * 2 : 32;
    sym *ns = realloc(p->syms, cap * sizeof *ns);
    if (!ns) goto nomem;
    p->syms = ns;
    p->cap_syms = cap;
  }
  sym *s = &p->syms[p->n_syms];
  memset(s, 0, sizeof *s);
  tok_name(t, s->name);
  s->kind = kind;
  s->cls = cls;
  s->value = value;
  s->line = t->line;
  s->col = t->col;
  uint32_t k = name_hash(s->name) & (p->tab_cap - 1);
  while (p->tab[k]) k = (k + 1) & (p->tab_cap - 1);
  p->tab[k] = ++p->n_syms;
  return s;
nomem:
  FAIL_TOK(p, FRNN_E_NOMEM, *t, "out of memory");
  return NULL;
}

/* ----------------------------------------------------------- expressions */
static uint32_t parse_expr(parser *p);

static uint32_t apply(parser *p, frnn_op op, const uint32_t *args, int n, const token *at) {
  frnn_value v;
  if (frnn_step_apply(p->step, op, args, n, &v)) {
    fail_builder(p, at->line, at->col);
    return NODE_NONE;
  }
  return v;
}

static bool enter(parser *p, const token *at) {
  if (++p->depth <= MAX_DEPTH) return true;
  return FAIL_TOK(p, FRNN_E_SYNTAX, *at, "expression nested too deeply (more than %d levels)",
                  MAX_DEPTH);
}

/* call = NAME "(" [ expr { "," expr } ] ")"      (the NAME already read) */
static uint32_t parse_call(parser *p, const token *fname) {
  char name[FRNN_NAME_MAX];
  tok_name(fname, name);
  int op = op_by_function_name(name, strlen(name));
  if (op < 0) {
    sym *s = sym_find(p, name);
    if (s)
      FAIL_TOK(p, FRNN_E_NAME, *fname, "unknown function '%s' ('%s' is %s %s, not a function)",
               name, name, s->kind == SYM_INPUT ? "an" : "a", sym_kind_name[s->kind]);
    else
      FAIL_TOK(p, FRNN_E_NAME, *fname, "unknown function '%s'", name);
    return NODE_NONE;
  }
  if (!enter(p, &p->tok) || !next(p)) return NODE_NONE;
  uint32_t args[3] = {0, 0, 0};
  token arg_tok[3];
  int n = 0;
  if (p->tok.kind != TOK_RPAREN)
    for (;;) {
      token at = p->tok;
      uint32_t a = parse_expr(p);
      if (a == NODE_NONE) return NODE_NONE;
      if (n < 3) args[n] = a, arg_tok[n] = at;
      if (n < 1000000) n++; /* saturated: only reported */
      if (p->tok.kind != TOK_COMMA) break;
      if (!next(p)) return NODE_NONE;
    }
  char what[FRNN_NAME_MAX + 48];
  snprintf(what, sizeof what, "',' or ')' in the arguments of '%s'", name);
  if (!expect(p, TOK_RPAREN, what)) return NODE_NONE;
  p->depth--;
  int arity = op_get((frnn_op)op)->arity;
  if (n != arity) {
    FAIL_TOK(p, FRNN_E_SYNTAX, *fname, "'%s' takes %d argument%s, got %d", name, arity,
             arity == 1 ? "" : "s", n);
    return NODE_NONE;
  }
  if (op == FRNN_OP_POW && p->step->nodes[args[1]].op != FRNN_OP_CONST) {
    FAIL_TOK(p, FRNN_E_ARG, arg_tok[1], "the exponent of 'pow' must be a constant");
    return NODE_NONE;
  }
  return apply(p, (frnn_op)op, args, n, fname);
}

/* primary = NUMBER | NAME | call | "(" expr ")" */
static uint32_t parse_primary(parser *p) {
  token t = p->tok;
  char d[96];
  switch (t.kind) {
  case TOK_NUMBER: {
    frnn_value v;
    if (frnn_step_const(p->step, t.number, &v)) {
      fail_builder(p, t.line, t.col);
      return NODE_NONE;
    }
    return next(p) ? v : NODE_NONE;
  }
  case TOK_NAME: {
    if (!next(p)) return NODE_NONE;
    if (p->tok.kind == TOK_LPAREN) return parse_call(p, &t);
    char name[FRNN_NAME_MAX];
    tok_name(&t, name);
    sym *s = sym_find(p, name);
    if (!s) {
      if (op_by_function_name(name, strlen(name)) >= 0)
        FAIL_TOK(p, FRNN_E_NAME, t, "unknown name '%s' ('%s' is a function: write %s(...))", name,
                 name, name);
      else
        FAIL_TOK(p, FRNN_E_NAME, t, "unknown name '%s'", name);
      return NODE_NONE;
    }
    if (s->value == NODE_NONE) {
      FAIL_TOK(p, FRNN_E_NAME, t, "output '%s' is unbound here: it is read before it is assigned",
               name);
      return NODE_NONE;
    }
    return s->value;
  }
  case TOK_LPAREN: {
    if (!enter(p, &t) || !next(p)) return NODE_NONE;
    uint32_t v = parse_expr(p);
    if (v == NODE_NONE) return NODE_NONE;
    char what[64];
    snprintf(what, sizeof what, "')' to close the '(' at %d:%d", t.line, t.col);
    if (!expect(p, TOK_RPAREN, what)) return NODE_NONE;
    p->depth--;
    return v;
  }
  default:
    FAIL_TOK(p, FRNN_E_SYNTAX, t, "expected an expression, got %s", tok_describe(&t, d, sizeof d));
    return NODE_NONE;
  }
}

/* unary = "-" unary | primary */
static uint32_t parse_unary(parser *p) {
  if (p->tok.kind != TOK_MINUS) return parse_primary(p);
  token t = p->tok;
  if (!enter(p, &t) || !next(p)) return NODE_NONE;
  uint32_t a = parse_unary(p);
  p->depth--;
  return a == NODE_NONE ? a : apply(p, FRNN_OP_NEG, &a, 1, &t);
}

/* term = unary { ("*" | "/") unary } */
static uint32_t parse_term(parser *p) {
  uint32_t a = parse_unary(p);
  while (a != NODE_NONE && (p->tok.kind == TOK_STAR || p->tok.kind == TOK_SLASH)) {
    token t = p->tok;
    if (!next(p)) return NODE_NONE;
    uint32_t args[2] = {a, parse_unary(p)};
    if (args[1] == NODE_NONE) return NODE_NONE;
    a = apply(p, t.kind == TOK_STAR ? FRNN_OP_MUL : FRNN_OP_DIV, args, 2, &t);
  }
  return a;
}

/* arith = term { ("+" | "-") term } */
static uint32_t parse_arith(parser *p) {
  uint32_t a = parse_term(p);
  while (a != NODE_NONE && (p->tok.kind == TOK_PLUS || p->tok.kind == TOK_MINUS)) {
    token t = p->tok;
    if (!next(p)) return NODE_NONE;
    uint32_t args[2] = {a, parse_term(p)};
    if (args[1] == NODE_NONE) return NODE_NONE;
    a = apply(p, t.kind == TOK_PLUS ? FRNN_OP_ADD : FRNN_OP_SUB, args, 2, &t);
  }
  return a;
}

static int comparison(enum tok_kind k) {
  switch (k) {
  case TOK_LT: return FRNN_OP_LT;
  case TOK_GT: return FRNN_OP_GT;
  case TOK_LE: return FRNN_OP_LE;
  case TOK_GE: return FRNN_OP_GE;
  default: return -1;
  }
}

/* expr = arith [ ("<" | ">" | "<=" | ">=") arith ]      (not associative) */
static uint32_t parse_expr(parser *p) {
  uint32_t a = parse_arith(p);
  int op = comparison(p->tok.kind);
  if (a == NODE_NONE || op < 0) return a;
  token t = p->tok;
  if (!next(p)) return NODE_NONE;
  uint32_t args[2] = {a, parse_arith(p)};
  if (args[1] == NODE_NONE) return NODE_NONE;
  if (comparison(p->tok.kind) >= 0) {
    FAIL_TOK(p, FRNN_E_SYNTAX, p->tok,
             "comparisons cannot be chained: write (a < b) * (b < c) or use parentheses");
    return NODE_NONE;
  }
  return apply(p, (frnn_op)op, args, 2, &t);
}

/* ------------------------------------------------------------- signature */
/* shape = "[" ("1" | "M") "," ("1" | "N") "]" */
static bool parse_shape(parser *p, int *cls) {
  if (!expect(p, TOK_LBRACKET, "'[' and a shape ([1,1], [M,1], [1,N] or [M,N])")) return false;
  char d[96];
  int m, n;
  if (tok_is(&p->tok, TOK_NUMBER, "1")) m = 0;
  else if (tok_is(&p->tok, TOK_NAME, "M")) m = 1;
  else
    return FAIL_TOK(p, FRNN_E_SYNTAX, p->tok,
                    "bad shape: the first dimension must be 1 or M, got %s (shapes are [1,1], "
                    "[M,1], [1,N] and [M,N])",
                    tok_describe(&p->tok, d, sizeof d));
  if (!next(p) || !expect(p, TOK_COMMA, "',' between the two dimensions of a shape"))
    return false;
  if (tok_is(&p->tok, TOK_NUMBER, "1")) n = 0;
  else if (tok_is(&p->tok, TOK_NAME, "N")) n = 2;
  else
    return FAIL_TOK(p, FRNN_E_SYNTAX, p->tok,
                    "bad shape: the second dimension must be 1 or N, got %s (shapes are [1,1], "
                    "[M,1], [1,N] and [M,N])",
                    tok_describe(&p->tok, d, sizeof d));
  if (!next(p) || !expect(p, TOK_RBRACKET, "']' after the two dimensions of a shape")) return false;
  *cls = m | n;
  return true;
}

/* port = NAME shape */
static bool parse_port(parser *p, enum sym_kind kind) {
  char what[48];
  snprintf(what, sizeof what, "%s %s name", kind == SYM_STATE ? "a" : "an", sym_kind_name[kind]);
  if (p->tok.kind != TOK_NAME) return fail_expected(p, what);
  token t = p->tok;
  char name[FRNN_NAME_MAX];
  tok_name(&t, name);
  int cls = 0;
  if (!next(p) || !parse_shape(p, &cls)) return false;
  sym *old = sym_find(p, name);
  if (old)
    return FAIL_TOK(p, FRNN_E_NAME, t, "duplicate name '%s': already declared as %s at %d:%d",
                    name, sym_kind_name[old->kind], old->line, old->col);
  uint32_t v = NODE_NONE;
  if (kind == SYM_OUTPUT) {
    /* Outputs are declared (frnn_step_output) at the end, once bound; the
     * checks that declaration would make are made here, at the signature. */
    int n_out = 0;
    for (uint32_t i = 0; i < p->n_syms; i++) n_out += p->syms[i].kind == SYM_OUTPUT;
    if (op_by_function_name(name, strlen(name)) >= 0)
      return FAIL_TOK(p, FRNN_E_NAME, t, "'%s' is the name of an operation", name);
    if (n_out == FRNN_MAX_PORTS)
      return FAIL_TOK(p, FRNN_E_ARG, t, "step '%s' has more than %d outputs", p->step->name,
                      FRNN_MAX_PORTS);
    if (cls != FRNN_COL && cls != FRNN_SCALAR)
      return FAIL_TOK(p, FRNN_E_SHAPE, t, "output '%s' is %s; outputs must be [M,1] or [1,1]",
                      name, class_name(cls));
  } else {
    frnn_status st = kind == SYM_INPUT ? frnn_step_input(p->step, name, (frnn_class)cls, &v)
                                       : frnn_step_state(p->step, name, (frnn_class)cls, &v);
    if (st) return fail_builder(p, t.line, t.col);
  }
  return sym_add(p, &t, kind, cls, v) != NULL;
}

/* ports = [ port { "," port } ]       (one at least when `required`) */
static bool parse_ports(parser *p, enum sym_kind kind, bool required) {
  if (p->tok.kind != TOK_NAME && !required) return true;
  for (;;) {
    if (!parse_port(p, kind)) return false;
    if (p->tok.kind != TOK_COMMA) return true;
    if (!next(p)) return false;
  }
}

/* signature = "step" NAME "(" ports [ ";" ports ] ")" "->" ports (NEWLINE | EOF) */
static bool parse_signature(parser *p) {
  while (p->tok.kind == TOK_NEWLINE)
    if (!next(p)) return false;
  if (!tok_is(&p->tok, TOK_NAME, "step")) return fail_expected(p, "'step' to begin the step");
  if (!next(p)) return false;
  if (p->tok.kind != TOK_NAME) return fail_expected(p, "the step's name after 'step'");
  p->step_name = p->tok;
  char name[FRNN_NAME_MAX];
  tok_name(&p->tok, name);
  if (frnn_step_create(p->ctx, name, &p->step)) return fail_builder(p, p->tok.line, p->tok.col);
  if (!next(p)) return false;
  if (p->tok.kind != TOK_LPAREN) return fail_expected(p, "'(' after the step's name");
  token open = p->tok;
  p->paren++; /* newlines inside ( ) are spaces */
  if (!next(p) || !parse_ports(p, SYM_INPUT, false)) return false;
  bool semi = p->tok.kind == TOK_SEMI;
  if (semi && (!next(p) || !parse_ports(p, SYM_STATE, false))) return false;
  if (p->tok.kind != TOK_RPAREN) {
    char what[96];
    snprintf(what, sizeof what, "%s or ')' to close the '(' at %d:%d", semi ? "','" : "',', ';'",
             open.line, open.col);
    return fail_expected(p, what);
  }
  token close = p->tok;
  p->paren--;
  if (!next(p)) return false;
  if (frnn_step_port_count(p->step, FRNN_PORT_STATE) == 0)
    return FAIL_TOK(p, FRNN_E_STEP, close,
                    "step '%s' has no state: a recurrence needs at least one (states follow ';' "
                    "in the signature)",
                    name);
  if (!expect(p, TOK_ARROW, "'->' and the outputs after the signature's ')'")) return false;
  if (!parse_ports(p, SYM_OUTPUT, true)) return false;
  if (p->tok.kind != TOK_NEWLINE && p->tok.kind != TOK_EOF)
    return fail_expected(p, "',' or the end of the line after the outputs");
  return true;
}

/* ------------------------------------------------------------------ body */
/* Bind value v to the name of token t (the left side of an assignment). */
static bool bind(parser *p, const token *t, uint32_t v) {
  char name[FRNN_NAME_MAX];
  tok_name(t, name);
  sym *s = sym_find(p, name);
  if (!s) {
    if (op_by_function_name(name, strlen(name)) >= 0)
      return FAIL_TOK(p, FRNN_E_NAME, *t, "cannot assign to '%s': it is the name of a function",
                      name);
    return sym_add(p, t, SYM_LOCAL, 0, v) != NULL;
  }
  int vc = frnn_value_class(p->step, v);
  switch (s->kind) {
  case SYM_INPUT: return FAIL_TOK(p, FRNN_E_NAME, *t, "cannot assign to input '%s'", name);
  case SYM_STATE:
  case SYM_OUTPUT:
    if (vc & ~s->cls)
      return FAIL_TOK(p, FRNN_E_SHAPE, *t,
                      "shape clash: cannot bind a %s value to %s '%s', which is %s (a value may "
                      "be bound to a %s of its own shape or a larger one, never a smaller one)",
                      class_name(vc), sym_kind_name[s->kind], name, class_name(s->cls),
                      sym_kind_name[s->kind]);
    if (s->kind == SYM_STATE && frnn_step_assign(p->step, name, v))
      return fail_builder(p, t->line, t->col);
    s->assigned = true;
    break;
  case SYM_LOCAL: break;
  }
  s->value = v;
  return true;
}

/* statement = NAME "=" expr (NEWLINE | EOF) */
static bool parse_statement(parser *p) {
  char d[96];
  if (p->tok.kind != TOK_NAME) return fail_expected(p, "a statement (name = expression)");
  token target = p->tok;
  if (!next(p)) return false;
  if (p->tok.kind != TOK_ASSIGN) {
    if (tok_is(&target, TOK_NAME, "step") && p->tok.kind == TOK_NAME)
      return FAIL_TOK(p, FRNN_E_SYNTAX, target, "only one step per file");
    return FAIL_TOK(p, FRNN_E_SYNTAX, p->tok, "expected '=' after '%.*s', got %s",
                    (int)target.len, target.text, tok_describe(&p->tok, d, sizeof d));
  }
  if (!next(p)) return false;
  p->depth = 0;
  uint32_t v = parse_expr(p);
  if (v == NODE_NONE) return false;
  if (p->tok.kind == TOK_RPAREN) return FAIL_TOK(p, FRNN_E_SYNTAX, p->tok, "unmatched ')'");
  if (p->tok.kind != TOK_NEWLINE && p->tok.kind != TOK_EOF)
    return fail_expected(p, "an operator or the end of the line after the expression");
  return bind(p, &target, v);
}

static bool parse_step(parser *p) {
  if (!next(p) || !parse_signature(p)) return false;
  for (;;) {
    while (p->tok.kind == TOK_NEWLINE)
      if (!next(p)) return false;
    if (p->tok.kind == TOK_EOF) break;
    if (!parse_statement(p)) return false;
  }
  for (uint32_t i = 0; i < p->n_syms; i++) {
    sym *s = &p->syms[i];
    if (s->kind == SYM_STATE && !s->assigned)
      return fail_at(p, FRNN_E_STEP, s->line, s->col,
                     "state '%s' is never assigned (it could never change)", s->name);
  }
  for (uint32_t i = 0; i < p->n_syms; i++) {
    sym *s = &p->syms[i];
    if (s->kind == SYM_OUTPUT && s->value == NODE_NONE)
      return fail_at(p, FRNN_E_STEP, s->line, s->col, "output '%s' is never bound", s->name);
  }
  for (uint32_t i = 0; i < p->n_syms; i++) {
    sym *s = &p->syms[i];
    if (s->kind == SYM_OUTPUT && frnn_step_output(p->step, s->name, (frnn_class)s->cls, s->value))
      return fail_builder(p, s->line, s->col);
  }
  if (frnn_step_finish(p->step)) return fail_builder(p, p->step_name.line, p->step_name.col);
  return true;
}

/* ------------------------------------------------------------ public API */
frnn_status frnn_step_parse(frnn_ctx *ctx, const char *filename, const char *text,
                            frnn_step **out) {
  if (!ctx) return FRNN_E_ARG;
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "frnn_step_parse: out is NULL");
  *out = NULL;
  if (!text) return diag_fail(ctx, FRNN_E_ARG, "frnn_step_parse: text is NULL");
  /* Numbers are written with '.', whatever the program's locale. */
  locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  locale_t old_locale = c_locale ? uselocale(c_locale) : (locale_t)0;
  parser p = {.ctx = ctx, .file = filename ? filename : "<step>", .src = text};
  lex_init(&p.lx, ctx, p.file, text);
  bool ok = parse_step(&p);
  if (c_locale) {
    uselocale(old_locale);
    freelocale(c_locale);
  }
  free(p.syms);
  free(p.tab);
  if (!ok) {
    frnn_step_destroy(p.step);
    return ctx->status ? ctx->status : FRNN_E_SYNTAX;
  }
  *out = p.step;
  return FRNN_OK;
}

frnn_status frnn_step_load(frnn_ctx *ctx, const char *path, frnn_step **out) {
  if (!ctx) return FRNN_E_ARG;
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "frnn_step_load: out is NULL");
  *out = NULL;
  if (!path) return diag_fail(ctx, FRNN_E_ARG, "frnn_step_load: path is NULL");
  FILE *f = fopen(path, "rb");
  if (!f) return diag_fail(ctx, FRNN_E_IO, "cannot open '%s': %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  frnn_status st = FRNN_OK;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      size_t ncap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, ncap);
      if (!nb) {
        st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory reading '%s'", path);
        break;
      }
      buf = nb;
      cap = ncap;
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (ferror(f)) {
      st = diag_fail(ctx, FRNN_E_IO, "cannot read '%s': %s", path, strerror(errno));
      break;
    }
    if (feof(f)) break;
    if (len > MAX_FILE) {
      st = diag_fail(ctx, FRNN_E_IO, "cannot read '%s': larger than %u MiB, too large for a step",
                     path, MAX_FILE >> 20);
      break;
    }
  }
  fclose(f);
  if (!st) {
    buf[len] = 0;
    const char *nul = memchr(buf, 0, len);
    if (nul) {
      int line = 1;
      const char *ls = buf;
      for (const char *q = buf; q < nul; q++)
        if (*q == '\n') line++, ls = q + 1;
      st = diag_fail_at(ctx, FRNN_E_SYNTAX, path, buf, line, (int)(nul - ls) + 1,
                        "unexpected NUL byte");
    } else {
      st = frnn_step_parse(ctx, path, buf, out);
    }
  }
  free(buf);
  return st;
}
