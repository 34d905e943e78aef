/* test_parse.c - the .frnn front end: lexer, parser, printer (SPEC section 2).
 *
 * - every error class: status, line, column and message, and the caret line;
 * - golden files tests/golden/ (*.frnn), whose first line says what to expect:
 *     # ok                              parses; print -> parse keeps the hash
 *     # error: <line>:<col>: <text>     fails there, the message holds <text>
 * - print -> parse round trips (every op, odd constants, odd names), hash
 *   stability, shape inference of every class combination;
 * - random steps and random mutations of valid text (the seed is printed;
 *   FRNN_TEST_SEED replays a run). */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static frnn_ctx *ctx;
static void setup(void) { ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK); }
static void teardown(void) { frnn_ctx_destroy(ctx); }

static frnn_step *parse_ok(const char *text) {
  frnn_step *s = NULL;
  frnn_status st = frnn_step_parse(ctx, "t.frnn", text, &s);
  ck_assert_msg(st == FRNN_OK, "parse failed (%s): %s\n--- text:\n%s", frnn_status_name(st),
                frnn_ctx_error(ctx), text);
  ck_assert_ptr_nonnull(s);
  return s;
}

/* Parse; expect failure with this status at line:col, the message holding
 * `sub` and beginning with "t.frnn:line:col: ". */
static void parse_fails(const char *text, frnn_status want, int line, int col, const char *sub) {
  frnn_step *s = (frnn_step *)1;
  frnn_status st = frnn_step_parse(ctx, "t.frnn", text, &s);
  const char *msg = frnn_ctx_error(ctx);
  ck_assert_msg(st == want, "status %s, want %s; message: %s\n--- text:\n%s",
                frnn_status_name(st), frnn_status_name(want), msg, text);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(frnn_ctx_last_status(ctx), want);
  int l, c;
  frnn_ctx_error_location(ctx, &l, &c);
  ck_assert_msg(l == line && c == col, "at %d:%d, want %d:%d; message: %s", l, c, line, col, msg);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "t.frnn:%d:%d: ", line, col);
  ck_assert_msg(strncmp(msg, prefix, strlen(prefix)) == 0, "message lacks '%s': %s", prefix, msg);
  ck_assert_msg(strstr(msg, sub), "message lacks '%s': %s", sub, msg);
}

/* print -> parse gives the same hash; printing that again gives the same text. */
static void round_trip(const frnn_step *s) {
  char *text = NULL, *text2 = NULL;
  ck_assert_int_eq(frnn_step_print(s, &text), FRNN_OK);
  frnn_step *s2 = NULL;
  frnn_status st = frnn_step_parse(ctx, "printed", text, &s2);
  ck_assert_msg(st == FRNN_OK, "printed text does not parse: %s\n--- text:\n%s",
                frnn_ctx_error(ctx), text);
  ck_assert_msg(frnn_step_hash(s2) == frnn_step_hash(s), "hash %016llx, want %016llx\n%s",
                (unsigned long long)frnn_step_hash(s2), (unsigned long long)frnn_step_hash(s),
                text);
  ck_assert_int_eq(frnn_step_node_count(s2), frnn_step_node_count(s));
  ck_assert_int_eq(frnn_step_print(s2, &text2), FRNN_OK);
  ck_assert_str_eq(text2, text);
  frnn_free(text);
  frnn_free(text2);
  frnn_step_destroy(s2);
}

static uint64_t hash_of(const char *text) {
  frnn_step *s = parse_ok(text);
  uint64_t h = frnn_step_hash(s);
  round_trip(s);
  frnn_step_destroy(s);
  return h;
}

/* ------------------------------------------------------------ error cases */
#define SIG "step f(x[M,1], k[1,N]; S[M,N]) -> y[M,1]\n"
#define OKBODY "  S = S + x * k\n  y = sum(S * k)\n"

typedef struct err_case {
  const char *text;
  frnn_status st;
  int line, col;
  const char *msg;
} err_case;

static const err_case err_cases[] = {
    /* lexical */
    {SIG "  S = S $ x\n", FRNN_E_SYNTAX, 2, 9, "unexpected character '$'"},
    {SIG "  S = S + x * \xe2\x82\xac\n", FRNN_E_SYNTAX, 2, 15,
     "unexpected byte 0xe2 (only ASCII is allowed outside comments)"},
    {SIG "  S = S\x01\n", FRNN_E_SYNTAX, 2, 8, "unexpected control character 0x01"},
    {SIG "  S = S + 1.2.3\n", FRNN_E_SYNTAX, 2, 11, "malformed number '1.2.3'"},
    {SIG "  S = S + 1e+\n", FRNN_E_SYNTAX, 2, 11, "malformed number '1e+'"},
    {SIG "  S = S + 2x\n", FRNN_E_SYNTAX, 2, 11, "malformed number '2x'"},
    {SIG "  S = S + 1e5.5\n", FRNN_E_SYNTAX, 2, 11, "malformed number '1e5.5'"},
    {"step f(x[1,1]; S[1,1]) -> y[1,1]\n"
     "  a234567890123456789012345678901234567890123456789012345678901234 = 1\n",
     FRNN_E_SYNTAX, 2, 3, "name 'a234567890123456...' is longer than 63 characters"},
    /* syntax */
    {"", FRNN_E_SYNTAX, 1, 1, "expected 'step' to begin the step, got end of file"},
    {"# only a comment\n\n", FRNN_E_SYNTAX, 3, 1,
     "expected 'step' to begin the step, got end of file"},
    {"stp f(x[1,1]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 1,
     "expected 'step' to begin the step, got 'stp'"},
    {"  S = S + 1\n", FRNN_E_SYNTAX, 1, 3, "expected 'step' to begin the step, got 'S'"},
    {"step (x[1,1]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 6,
     "expected the step's name after 'step', got '('"},
    {"step f x[1,1]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 8,
     "expected '(' after the step's name, got 'x'"},
    {"step f(x[1,1]; S[1,1] -> y[1,1]\n", FRNN_E_SYNTAX, 1, 23,
     "expected ',' or ')' to close the '(' at 1:7, got '->'"},
    {"step f(x[1,1] S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 15,
     "expected ',', ';' or ')' to close the '(' at 1:7, got 'S'"},
    {"step f(x[1,1];\n S[1,1]\n", FRNN_E_SYNTAX, 3, 1,
     "expected ',' or ')' to close the '(' at 1:7, got end of file"},
    {"step f(x[1,1], ; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 16,
     "expected an input name, got ';'"},
    {"step f(x[1,1]; S[1,1]) y[1,1]\n", FRNN_E_SYNTAX, 1, 24,
     "expected '->' and the outputs after the signature's ')', got 'y'"},
    {"step f(x[1,1]; S[1,1])\n -> y[1,1]\n", FRNN_E_SYNTAX, 1, 23,
     "expected '->' and the outputs after the signature's ')', got end of line"},
    {"step f(x[1,1]; S[1,1]) ->\n", FRNN_E_SYNTAX, 1, 26,
     "expected an output name, got end of line"},
    {"step f(x[1,1]; S[1,1]) -> y[1,1] z\n", FRNN_E_SYNTAX, 1, 34,
     "expected ',' or the end of the line after the outputs, got 'z'"},
    {"step f(x[2,N]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 10,
     "bad shape: the first dimension must be 1 or M, got number '2'"},
    {"step f(x[N,M]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 10,
     "bad shape: the first dimension must be 1 or M, got 'N'"},
    {"step f(x[M,M]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 12,
     "bad shape: the second dimension must be 1 or N, got 'M'"},
    {"step f(x[1.0,N]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 10, "bad shape"},
    {"step f(x[M N]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 12,
     "expected ',' between the two dimensions of a shape, got 'N'"},
    {"step f(x[M,N; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 13,
     "expected ']' after the two dimensions of a shape, got ';'"},
    {"step f(x; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 1, 9, "expected '[' and a shape"},
    {SIG "  S = (S + x * k\n" OKBODY, FRNN_E_SYNTAX, 2, 17,
     "expected ')' to close the '(' at 2:7, got end of line"},
    {SIG "  S = S + x * k)\n", FRNN_E_SYNTAX, 2, 16, "unmatched ')'"},
    {SIG "  S = S + x k\n", FRNN_E_SYNTAX, 2, 13,
     "expected an operator or the end of the line after the expression, got 'k'"},
    {SIG "  S = S + \n", FRNN_E_SYNTAX, 2, 11, "expected an expression, got end of line"},
    {SIG "  S = * S\n", FRNN_E_SYNTAX, 2, 7, "expected an expression, got '*'"},
    {SIG "  S = + S\n", FRNN_E_SYNTAX, 2, 7, "expected an expression, got '+'"},
    {SIG "  S + 1\n", FRNN_E_SYNTAX, 2, 5, "expected '=' after 'S', got '+'"},
    {SIG "  (S) = 1\n", FRNN_E_SYNTAX, 2, 3,
     "expected a statement (name = expression), got '('"},
    {SIG "  S = S = 1\n", FRNN_E_SYNTAX, 2, 9,
     "expected an operator or the end of the line after the expression, got '='"},
    {SIG "  S = max(S, x\n", FRNN_E_SYNTAX, 2, 15,
     "expected ',' or ')' in the arguments of 'max', got end of line"},
    {SIG "  S = x < k < S\n", FRNN_E_SYNTAX, 2, 13, "comparisons cannot be chained"},
    {SIG OKBODY "step g(x[1,1]; S[1,1]) -> y[1,1]\n", FRNN_E_SYNTAX, 4, 1,
     "only one step per file"},
    /* names */
    {SIG "  S = S + foo\n", FRNN_E_NAME, 2, 11, "unknown name 'foo'"},
    {SIG "  S = S + exp\n", FRNN_E_NAME, 2, 11, "unknown name 'exp' ('exp' is a function"},
    {SIG "  S = foo(S)\n", FRNN_E_NAME, 2, 7, "unknown function 'foo'"},
    {SIG "  S = x(S)\n", FRNN_E_NAME, 2, 7,
     "unknown function 'x' ('x' is an input, not a function)"},
    {SIG "  S = Exp(S)\n", FRNN_E_NAME, 2, 7, "unknown function 'Exp'"},
    {SIG "  exp = S\n", FRNN_E_NAME, 2, 3, "cannot assign to 'exp': it is the name of a function"},
    {SIG "  x = S\n", FRNN_E_NAME, 2, 3, "cannot assign to input 'x'"},
    {SIG "  S = S + y\n  y = sum(S)\n", FRNN_E_NAME, 2, 11,
     "output 'y' is unbound here: it is read before it is assigned"},
    {"step f(x[1,1], k[1,N], x[M,1]; S[M,N]) -> y[M,1]\n", FRNN_E_NAME, 1, 24,
     "duplicate name 'x': already declared as input at 1:8"},
    {"step f(x[1,1]; S[M,N], S[M,1]) -> y[M,1]\n", FRNN_E_NAME, 1, 24,
     "duplicate name 'S': already declared as state at 1:16"},
    {"step f(x[1,1]; S[M,N]) -> x[M,1]\n", FRNN_E_NAME, 1, 27,
     "duplicate name 'x': already declared as input at 1:8"},
    {"step f(x[1,1]; S[M,N]) -> y[M,1], y[1,1]\n", FRNN_E_NAME, 1, 35,
     "duplicate name 'y': already declared as output at 1:27"},
    {"step f(exp[1,1]; S[M,N]) -> y[M,1]\n", FRNN_E_NAME, 1, 8,
     "'exp' is the name of an operation"},
    {"step f(x[1,1]; S[M,N]) -> sum[M,1]\n", FRNN_E_NAME, 1, 27,
     "'sum' is the name of an operation"},
    /* arguments */
    {SIG "  S = max(S)\n", FRNN_E_SYNTAX, 2, 7, "'max' takes 2 arguments, got 1"},
    {SIG "  S = exp(S, x)\n", FRNN_E_SYNTAX, 2, 7, "'exp' takes 1 argument, got 2"},
    {SIG "  S = where()\n", FRNN_E_SYNTAX, 2, 7, "'where' takes 3 arguments, got 0"},
    {SIG "  S = sum(S, S, S, S, S)\n", FRNN_E_SYNTAX, 2, 7, "'sum' takes 1 argument, got 5"},
    {SIG "  S = pow(S, x)\n", FRNN_E_ARG, 2, 14, "the exponent of 'pow' must be a constant"},
    /* incomplete steps */
    {SIG "  S = S + x * k\n", FRNN_E_STEP, 1, 35, "output 'y' is never bound"},
    {"step f(x[1,1]; S[M,N], n[1,N]) -> y[M,1]\n  S = S + x\n  y = sum(S)\n", FRNN_E_STEP, 1,
     24, "state 'n' is never assigned (it could never change)"},
    {"step f(x[1,1]) -> y[1,1]\n  y = x\n", FRNN_E_STEP, 1, 14,
     "step 'f' has no state: a recurrence needs at least one"},
    {"step f(x[1,1];) -> y[1,1]\n  y = x\n", FRNN_E_STEP, 1, 15, "has no state"},
    /* shapes */
    {"step f(x[M,1], k[1,N]; S[1,N]) -> y[1,1]\n  S = x + k\n  y = 0\n", FRNN_E_SHAPE, 2, 3,
     "shape clash: cannot bind a [M,N] value to state 'S', which is [1,N]"},
    {"step f(x[M,1]; S[1,1]) -> y[1,1]\n  S = S\n  y = x\n", FRNN_E_SHAPE, 3, 3,
     "cannot bind a [M,1] value to output 'y', which is [1,1]"},
    {"step f(x[M,1]; S[1,1]) -> y[1,N]\n", FRNN_E_SHAPE, 1, 27,
     "output 'y' is [1,N]; outputs must be [M,1] or [1,1]"},
    {"step f(x[M,1]; S[1,1]) -> y[M,1], z[M,N]\n", FRNN_E_SHAPE, 1, 35,
     "output 'z' is [M,N]; outputs must be [M,1] or [1,1]"},
};

START_TEST(test_error_case) {
  const err_case *e = &err_cases[_i];
  parse_fails(e->text, e->st, e->line, e->col, e->msg);
}
END_TEST

/* The whole message: location, text, source line, caret under the column. */
START_TEST(test_caret) {
  frnn_step *s;
  ck_assert_int_eq(frnn_step_parse(ctx, "d.frnn", SIG "  S = S + foo * k\n", &s), FRNN_E_NAME);
  ck_assert_str_eq(frnn_ctx_error(ctx),
                   "d.frnn:2:11: unknown name 'foo'\n  S = S + foo * k\n          ^");
  /* Tabs stay tabs, so the caret lines up in a terminal. */
  ck_assert_int_eq(frnn_step_parse(ctx, "d.frnn", SIG "\tS = \tfoo\r\n", &s), FRNN_E_NAME);
  ck_assert_str_eq(frnn_ctx_error(ctx), "d.frnn:2:7: unknown name 'foo'\n\tS = \tfoo\n\t    \t^");
  /* A NULL file name reads "<step>"; an error at the end of the file. */
  ck_assert_int_eq(frnn_step_parse(ctx, NULL, "step f(x[1,1]; S[1,1]) ->", &s), FRNN_E_SYNTAX);
  ck_assert_str_eq(frnn_ctx_error(ctx),
                   "<step>:1:26: expected an output name, got end of file\n"
                   "step f(x[1,1]; S[1,1]) ->\n"
                   "                         ^");
}
END_TEST

/* Builder failures reach the text with their message and a place. */
START_TEST(test_builder_errors) {
  /* 33 inputs: the builder's limit, reported at the 33rd. */
  char text[4096] = "step f(";
  for (int i = 0; i < 33; i++) sprintf(text + strlen(text), "x%d[1,1], ", i);
  strcat(text, "; S[1,1]) -> y[1,1]\n  S = S\n  y = S\n");
  char *at = strstr(text, "x32[");
  parse_fails(text, FRNN_E_ARG, 1, (int)(at - text) + 1, "step 'f' has more than 32 inputs");
  ck_assert_ptr_null(strstr(frnn_ctx_error(ctx), "frnn_step_input"));
  /* 33 outputs. */
  strcpy(text, "step f(x[1,1]; S[1,1]) -> ");
  for (int i = 0; i < 33; i++) sprintf(text + strlen(text), "%sy%d[1,1]", i ? ", " : "", i);
  at = strstr(text, "y32[");
  parse_fails(text, FRNN_E_ARG, 1, (int)(at - text) + 1, "more than 32 outputs");
  /* More than FRNN_MAX_NODES nodes: y = x + x*2 + x*3 + ... */
  size_t cap = 64 * (size_t)FRNN_MAX_NODES;
  char *big = malloc(cap);
  ck_assert_ptr_nonnull(big);
  size_t n = (size_t)sprintf(big, "step big(x[1,1]; S[1,1]) -> y[1,1]\n  S = S\n  y = x");
  for (int i = 2; n + 32 < cap; i++) n += (size_t)sprintf(big + n, " + x*%d", i);
  /* Nodes x, S, then 3 per term (constant i, x*i, the sum): the sum of term
   * 21846 is node 65536, one too many; the failure points at its '+'. */
  char *line3 = strstr(big, "  y = x"), *plus = strstr(big, " + x*21846 ") + 1;
  parse_fails(big, FRNN_E_ARG, 3, (int)(plus - line3) + 1, "step 'big' has more than 65536 nodes");
  free(big);
}
END_TEST

/* ----------------------------------------------------- limits and odd text */
START_TEST(test_limits) {
  /* 200 levels of parentheses parse; 201 do not. */
  char text[8192];
  for (int depth = 200; depth <= 201; depth++) {
    int n = sprintf(text, "step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = ");
    for (int i = 0; i < depth; i++) text[n++] = '(';
    text[n++] = 'x';
    for (int i = 0; i < depth; i++) text[n++] = ')';
    strcpy(text + n, "\n  y = S\n");
    if (depth == 200)
      frnn_step_destroy(parse_ok(text));
    else
      parse_fails(text, FRNN_E_SYNTAX, 2, 7 + 200, "expression nested too deeply");
  }
  /* Deep unary minus and deep calls hit the same limit. */
  int n = sprintf(text, "step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = ");
  for (int i = 0; i < 5000; i++) text[n++] = '-';
  strcpy(text + n, "x\n  y = S\n");
  parse_fails(text, FRNN_E_SYNTAX, 2, 7 + 200, "expression nested too deeply");
  n = sprintf(text, "step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = ");
  for (int i = 0; i < 1000; i++) n += sprintf(text + n, "exp(");
  parse_fails(text, FRNN_E_SYNTAX, 2, 7 + 200 * 4 + 3, "expression nested too deeply");

  /* A megabyte-long line: the column is right, the message stays short. */
  size_t len = 1u << 20;
  char *big = malloc(len + 256);
  ck_assert_ptr_nonnull(big);
  n = sprintf(big, "step f(x[1,1]; S[1,1]) -> y[1,1]\n");
  memset(big + n, ' ', len);
  strcpy(big + n + len, "S = S ? x\n");
  parse_fails(big, FRNN_E_SYNTAX, 2, (int)len + 7, "unexpected character '?'");
  ck_assert_uint_lt(strlen(frnn_ctx_error(ctx)), 2048);
  /* A megabyte-long comment, then a valid step. */
  big[0] = '#';
  memset(big + 1, 'c', len);
  strcpy(big + 1 + len, "\nstep f(x[1,1]; S[1,1]) -> y[1,1]\n  S = S + x\n  y = S\n");
  frnn_step_destroy(parse_ok(big));
  free(big);

  /* Huge and tiny numbers: 1e999 is inf, 1e-999 is 0. */
  frnn_step *s = parse_ok("step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = S * 1e999 + 1e-999 * x\n"
                          "  y = S - .5e-3\n");
  ck_assert_int_eq(s->nodes[s->ports[FRNN_PORT_STATE][0].value].op, FRNN_OP_ADD); /* S*inf + 0*x */
  char *t;
  ck_assert_int_eq(frnn_step_print(s, &t), FRNN_OK);
  ck_assert_ptr_nonnull(strstr(t, "(1/0)"));
  ck_assert_ptr_nonnull(strstr(t, "0.0005"));
  frnn_free(t);
  round_trip(s);
  frnn_step_destroy(s);
  /* A number of ten thousand digits. */
  n = sprintf(text, "step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = S * 0.");
  for (int i = 0; i < 5000; i++) text[n++] = '0';
  strcpy(text + n, "25e5000\n  y = S\n");
  s = parse_ok(text);
  const node *mul = &s->nodes[s->ports[FRNN_PORT_STATE][0].value];
  ck_assert_int_eq(mul->op, FRNN_OP_MUL);
  const node *c0 = &s->nodes[mul->arg[0]], *c1 = &s->nodes[mul->arg[1]];
  ck_assert_double_eq((c0->op == FRNN_OP_CONST ? c0 : c1)->value, 0.25);
  frnn_step_destroy(s);
  /* Windows line ends, blank lines, comments everywhere, a signature over
   * several lines with comments inside, no final newline. */
  s = parse_ok("\r\n# c\r\n\r\nstep f( # inputs\r\n  x[1,1] # x\r\n\r\n ; # states\r\n"
               "  S[1,1]\r\n) -> y[1,1] # out\r\n\r\n  S = S + x # add\r\n# done\r\n  y = S");
  frnn_step_destroy(s);
}
END_TEST

START_TEST(test_api) {
  frnn_step *s = (frnn_step *)1;
  ck_assert_int_eq(frnn_step_parse(NULL, "f", "step", &s), FRNN_E_ARG);
  ck_assert_int_eq(frnn_step_parse(ctx, "f", "step", NULL), FRNN_E_ARG);
  ck_assert_int_eq(frnn_step_parse(ctx, "f", NULL, &s), FRNN_E_ARG);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(frnn_step_load(NULL, "f", &s), FRNN_E_ARG);
  ck_assert_int_eq(frnn_step_load(ctx, NULL, &s), FRNN_E_ARG);
  ck_assert_int_eq(frnn_step_load(ctx, "f", NULL), FRNN_E_ARG);
  char *t = (char *)1;
  ck_assert_int_eq(frnn_step_print(NULL, &t), FRNN_E_ARG);

  /* Load: missing file, a directory, a NUL byte, a good file. */
  ck_assert_int_eq(frnn_step_load(ctx, "/nonexistent/x.frnn", &s), FRNN_E_IO);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "/nonexistent/x.frnn"));
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "No such file or directory"));
  ck_assert_int_eq(frnn_step_load(ctx, "/", &s), FRNN_E_IO);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "Is a directory"));
  char path[] = "/tmp/frnn_test_parse_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  static const char with_nul[] = "step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = S +\0 x\n  y = S\n";
  ck_assert_int_eq(write(fd, with_nul, sizeof with_nul - 1), (int)sizeof with_nul - 1);
  close(fd);
  ck_assert_int_eq(frnn_step_load(ctx, path, &s), FRNN_E_SYNTAX);
  int l, c;
  frnn_ctx_error_location(ctx, &l, &c);
  ck_assert_int_eq(l, 2);
  ck_assert_int_eq(c, 10);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "unexpected NUL byte"));
  FILE *f = fopen(path, "w");
  fputs("step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = S + x\n  y = S\n", f);
  fclose(f);
  ck_assert_int_eq(frnn_step_load(ctx, path, &s), FRNN_OK);
  ck_assert_str_eq(frnn_step_name(s), "f");
  ck_assert_int_eq(frnn_step_port_count(s, FRNN_PORT_INPUT), 1);
  frnn_step_destroy(s);
  f = fopen(path, "w");
  fputs("step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = S + z\n  y = S\n", f);
  fclose(f);
  ck_assert_int_eq(frnn_step_load(ctx, path, &s), FRNN_E_NAME);
  char want[256];
  snprintf(want, sizeof want, "%s:2:11: unknown name 'z'\n  S = S + z\n          ^", path);
  ck_assert_str_eq(frnn_ctx_error(ctx), want);
  unlink(path);

  /* Printing an unfinished step fails cleanly. */
  ck_assert_int_eq(frnn_step_create(ctx, "u", &s), FRNN_OK);
  ck_assert_int_eq(frnn_step_print(s, &t), FRNN_E_ARG);
  ck_assert_ptr_null(t);
  frnn_step_destroy(s);
}
END_TEST

/* Numbers are read and written with '.' whatever the locale. */
START_TEST(test_locale) {
  const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  const char *got = NULL;
  for (size_t i = 0; i < 4 && !got; i++) got = setlocale(LC_NUMERIC, names[i]);
  if (!got) return; /* no locale with a decimal comma on this machine */
  frnn_step *s = parse_ok("step f(x[1,1]; S[1,1]) -> y[1,1]\n  S = S * 0.25 + x\n  y = S\n");
  char *t;
  ck_assert_int_eq(frnn_step_print(s, &t), FRNN_OK);
  ck_assert_ptr_nonnull(strstr(t, "0.25"));
  frnn_free(t);
  round_trip(s);
  frnn_step_destroy(s);
  setlocale(LC_NUMERIC, "C");
}
END_TEST

/* ------------------------------------------------------------ round trips */
static const char *const rt_steps[] = {
    /* every operation */
    "step allops(a[1,N], b[M,1], c[1,1], d[M,N]; S[M,N], s[1,1]) -> y[M,1], z[1,1]\n"
    "  u = a + b - c * d / (-a)\n"
    "  u = exp(u) + log(abs(u)) + sqrt(abs(u)) + rsqrt(abs(u) + 1) + tanh(u)\n"
    "  u = u + sigmoid(u) + softplus(u) + silu(u)\n"
    "  w = (u < a) + (u > b) + (u <= c) * (u >= d)\n"
    "  u = max(u, w) + min(u, 0.5) + pow(u, 3) + pow(u, -0.5) + where(w, u, d)\n"
    "  S = S * u + sum_m(d) * b\n"
    "  s = s + sum(sum_m(S))\n"
    "  y = sum(S)\n"
    "  z = s\n",
    /* states of every class, outputs reading old and new state values */
    "step classes(x[M,1], r[1,N]; A[M,N], col[M,1], row[1,N], sc[1,1]) -> y[M,1], z[1,1], w[M,1]\n"
    "  w = sum(A * r) + col\n"
    "  A = A * 0.9 + x * r\n"
    "  col = col + x\n"
    "  row = row + r\n"
    "  sc = sc + sum(row)\n"
    "  y = sum(A * row)\n"
    "  z = sc\n",
    /* outputs bound to leaves and constants; a state keeps its value */
    "step leaves(x[M,1], c[1,1]; S[1,1], T[1,1]) -> y[M,1], z[1,1], k[1,1]\n"
    "  S = S\n  T = c\n  y = x\n  z = 2.5\n  k = -1\n",
    /* states swapped: each next value is the other's previous value */
    "step swap(x[1,1]; a[1,1], b[1,1], c[1,1]) -> y[1,1]\n"
    "  t = a\n  a = b\n  b = t\n  c = a\n  y = a + b\n",
    /* port names that look like temporaries */
    "step temps(t[1,1], t0[1,1], tt[1,1], ta[1,1]; aa[1,1], ab[1,1]) -> total[1,1]\n"
    "  aa = aa * t + t0 * tt\n  ab = exp(aa) + ta\n  total = aa * ab\n",
    /* names that are keywords or dimension letters elsewhere */
    "step step(step[1,1], M[M,1], N[1,N]; S[M,N]) -> y[M,1]\n"
    "  S = S * step + M * N\n  y = sum(S)\n",
    /* zero inputs, no spaces */
    "step noin(;S[M,N])->y[M,1]\nS=S*2\ny=sum(S)\n",
    /* constants folded into one; comparisons as values */
    "step fold(x[M,1]; S[M,1]) -> y[M,1]\n"
    "  S = S * (2 * 3 - exp(0)) + (x > 0.5) * log(10) + where(x, 1, 2) * pow(2, 0.5)\n"
    "  y = -S\n",
};

START_TEST(test_round_trip) {
  bool seen[FRNN_OP_COUNT] = {false};
  for (size_t i = 0; i < sizeof rt_steps / sizeof *rt_steps; i++) {
    frnn_step *s = parse_ok(rt_steps[i]);
    for (int v = 0; v < frnn_step_node_count(s); v++) seen[s->nodes[v].op] = true;
    round_trip(s);
    frnn_step_destroy(s);
  }
  for (int op = 0; op < FRNN_OP_COUNT; op++)
    if (!(op_get((frnn_op)op)->flags & OPF_FUNC))
      ck_assert_msg(seen[op], "no round-trip step uses op '%s'", op_get((frnn_op)op)->spelling);
}
END_TEST

/* Every function of the op table (ops.def) is in the language: it parses,
 * builds its node, and round-trips. */
START_TEST(test_every_function) {
  int count = 0;
  for (int op = 0; op < FRNN_OP_COUNT; op++) {
    const op_info *info = op_get((frnn_op)op);
    if (!(info->flags & OPF_FUNC)) continue;
    static const char *const args[4][3] = {{""}, {"d"}, {"a", "b"}, {"a", "b", "d"}};
    char text[512];
    int n = snprintf(text, sizeof text,
                     "step f(a[1,N], b[M,1], d[M,N]; S[M,N]) -> y[1,1]\n  S = S + %s(",
                     info->spelling);
    for (int i = 0; i < info->arity; i++)
      n += snprintf(text + n, sizeof text - (size_t)n, "%s%s", i ? ", " : "",
                    op == FRNN_OP_POW ? (i ? "2" : "d") : args[info->arity][i]);
    snprintf(text + n, sizeof text - (size_t)n, ")\n  y = 1\n");
    frnn_step *s = parse_ok(text);
    bool found = false;
    for (int v = 0; v < frnn_step_node_count(s); v++) found |= s->nodes[v].op == op;
    ck_assert_msg(found, "no '%s' node from:\n%s", info->spelling, text);
    round_trip(s);
    frnn_step_destroy(s);
    count++;
  }
  ck_assert_int_ge(count, 15); /* exp log sqrt rsqrt abs tanh sigmoid softplus silu
                                  max min pow where sum sum_m */
}
END_TEST

/* Constants keep every bit (up to NaN payloads) through the text. */
START_TEST(test_round_trip_constants) {
  volatile double zero = 0.0;
  const double consts[] = {0.1,      1.0 / 3,   -2.5,    1e300,   -1e-300, 5e-324, -5e-324,
                           1.7976931348623157e308, 123456789012345678.0, -0.0,    1 / zero,
                           -1 / zero, zero / zero, -(zero / zero),          0.5,     100};
  size_t nc = sizeof consts / sizeof *consts;
  frnn_step *s;
  frnn_value x, S, v;
  ck_assert_int_eq(frnn_step_create(ctx, "9 odd-name\n", &s), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "x", FRNN_SCALAR, &x), FRNN_OK);
  ck_assert_int_eq(frnn_step_state(s, "S", FRNN_SCALAR, &S), FRNN_OK);
  v = S;
  for (size_t i = 0; i < nc; i++) {
    frnn_value c, args[2];
    /* v * c, then v + (x - c): every constant stays in the graph. */
    ck_assert_int_eq(frnn_step_const(s, consts[i], &c), FRNN_OK);
    args[0] = v;
    args[1] = c;
    ck_assert_int_eq(frnn_step_apply(s, FRNN_OP_MUL, args, 2, &v), FRNN_OK);
    args[0] = x;
    ck_assert_int_eq(frnn_step_apply(s, FRNN_OP_SUB, args, 2, &c), FRNN_OK);
    args[0] = v;
    args[1] = c;
    ck_assert_int_eq(frnn_step_apply(s, FRNN_OP_ADD, args, 2, &v), FRNN_OK);
  }
  ck_assert_int_eq(frnn_step_assign(s, "S", v), FRNN_OK);
  ck_assert_int_eq(frnn_step_output(s, "y", FRNN_SCALAR, x), FRNN_OK);
  ck_assert_int_eq(frnn_step_finish(s), FRNN_OK);
  char *t;
  ck_assert_int_eq(frnn_step_print(s, &t), FRNN_OK);
  ck_assert_ptr_nonnull(strstr(t, "step _9_odd_name_(x[1,1]; S[1,1]) -> y[1,1]\n"));
  ck_assert_ptr_nonnull(strstr(t, "(1/0)"));
  ck_assert_ptr_nonnull(strstr(t, "(-(1/0))"));
  ck_assert_ptr_nonnull(strstr(t, "0/0)"));
  ck_assert_ptr_nonnull(strstr(t, "0.1)"));
  ck_assert_ptr_nonnull(strstr(t, "(-2.5)"));
  ck_assert_ptr_nonnull(strstr(t, "1.7976931348623157e+308"));
  frnn_free(t);
  round_trip(s);
  frnn_step_destroy(s);
}
END_TEST

/* An internal step (an adjoint's kind) with outputs of any class prints. */
START_TEST(test_print_internal) {
  frnn_step *s;
  frnn_value x, g, e;
  ck_assert_int_eq(graph_create_internal(ctx, "adj", &s), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "x", FRNN_MAT, &x), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "grad_y", FRNN_ROW, &g), FRNN_OK);
  frnn_value args[2] = {x, g};
  ck_assert_int_eq(frnn_step_apply(s, FRNN_OP_EXP, args, 1, &e), FRNN_OK);
  args[0] = e;
  ck_assert_int_eq(frnn_step_apply(s, FRNN_OP_MUL, args, 2, &e), FRNN_OK);
  ck_assert_int_eq(frnn_step_output(s, "grad_x", FRNN_MAT, e), FRNN_OK);
  ck_assert_int_eq(frnn_step_output(s, "grad_g", FRNN_ROW, g), FRNN_OK);
  ck_assert_int_eq(frnn_step_finish(s), FRNN_OK);
  char *t;
  ck_assert_int_eq(frnn_step_print(s, &t), FRNN_OK);
  ck_assert_str_eq(t, "step adj(x[M,N], grad_y[1,N];) -> grad_x[M,N], grad_g[1,N]\n"
                      "  t2 = exp(x)\n"
                      "  t3 = (t2 * grad_y)\n"
                      "  grad_x = t3\n"
                      "  grad_g = grad_y\n");
  frnn_step *s2 = (frnn_step *)1;
  ck_assert_int_ne(frnn_step_parse(ctx, "adj", t, &s2), FRNN_OK); /* no state */
  ck_assert_ptr_null(s2);
  frnn_free(t);
  frnn_step_destroy(s);
}
END_TEST

/* Real adjoints print too: every port named in the signature, one line per
 * non-leaf node, and the text fails to parse cleanly (no state). */
START_TEST(test_print_adjoint) {
  for (size_t i = 0; i < sizeof rt_steps / sizeof *rt_steps; i++) {
    frnn_step *s = parse_ok(rt_steps[i]), *adj = NULL;
    ck_assert_msg(frnn_step_adjoint(s, &adj) == FRNN_OK, "%s", frnn_ctx_error(ctx));
    char *t;
    ck_assert_int_eq(frnn_step_print(adj, &t), FRNN_OK);
    char *sig_end = strchr(t, '\n');
    ck_assert_ptr_nonnull(sig_end);
    for (int k = 0; k < 3; k++)
      for (int j = 0; j < frnn_step_port_count(adj, (frnn_port_kind)k); j++) {
        char port[FRNN_NAME_MAX + 8];
        snprintf(port, sizeof port, "%s%s", frnn_step_port_name(adj, (frnn_port_kind)k, j),
                 class_name(frnn_step_port_class(adj, (frnn_port_kind)k, j)));
        char *at = strstr(t, port);
        ck_assert_msg(at && at < sig_end, "'%s' not in the signature:\n%s", port, t);
      }
    int lines = 0, ops = 0;
    for (char *q = t; *q; q++) lines += *q == '\n';
    for (int v = 0; v < frnn_step_node_count(adj); v++)
      ops += adj->nodes[v].op > FRNN_OP_CONST;
    ck_assert_int_eq(lines, 1 + ops + frnn_step_port_count(adj, FRNN_PORT_OUTPUT));
    frnn_step *back = (frnn_step *)1;
    ck_assert_int_ne(frnn_step_parse(ctx, "adj", t, &back), FRNN_OK);
    ck_assert_ptr_null(back);
    frnn_free(t);
    frnn_step_destroy(adj);
    frnn_step_destroy(s);
  }
}
END_TEST

/* Big steps: thousands of nodes on one line, and the most ports of each kind. */
START_TEST(test_big_steps) {
  size_t cap = 1 << 16;
  char *text = malloc(cap);
  ck_assert_ptr_nonnull(text);
  size_t n = (size_t)sprintf(text, "step wide(x[1,1]; S[1,1]) -> y[1,1]\n  S = S");
  for (int i = 2; i < 3000; i++) n += (size_t)sprintf(text + n, " + x*%d", i);
  strcpy(text + n, "\n  y = S\n");
  frnn_step *s = parse_ok(text);
  ck_assert_int_ge(frnn_step_node_count(s), 3 * 2998);
  round_trip(s);
  frnn_step_destroy(s);

  n = (size_t)sprintf(text, "step ports(");
  for (int i = 0; i < FRNN_MAX_PORTS; i++)
    n += (size_t)sprintf(text + n, "%sx%d[M,1]", i ? ", " : "", i);
  n += (size_t)sprintf(text + n, ";\n ");
  for (int i = 0; i < FRNN_MAX_PORTS; i++)
    n += (size_t)sprintf(text + n, "%sS%d[1,N]", i ? ", " : "", i);
  n += (size_t)sprintf(text + n, ") -> ");
  for (int i = 0; i < FRNN_MAX_PORTS; i++)
    n += (size_t)sprintf(text + n, "%sy%d[M,1]", i ? ", " : "", i);
  n += (size_t)sprintf(text + n, "\n");
  for (int i = 0; i < FRNN_MAX_PORTS; i++)
    n += (size_t)sprintf(text + n, "  S%d = S%d * S%d + 1\n  y%d = sum(x%d * S%d)\n", i, i,
                         (i + 1) % FRNN_MAX_PORTS, i, i, i);
  s = parse_ok(text);
  for (int k = 0; k < 3; k++) ck_assert_int_eq(frnn_step_port_count(s, (frnn_port_kind)k), 32);
  round_trip(s);
  frnn_step_destroy(s);
  free(text);
}
END_TEST

/* ---------------------------------------------------------- hash stability */
#define DELTA_SIG "step delta_rule(q[1,N], k[1,N], v[M,1], beta[1,1]; S[M,N]) -> y[M,1]\n"

START_TEST(test_hash_stability) {
  uint64_t h = hash_of(DELTA_SIG "  S = S + beta * k * (v - sum(S * k))\n  y = sum(S * q)\n");
  /* Fixed: a change here changes every cache key; make it on purpose. */
  ck_assert_msg(h == 0xa93c27810a4af7dfull, "delta_rule hash is %016llx", (unsigned long long)h);
  /* Operands of + and * in another order, other temporaries, comments. */
  ck_assert_uint_eq(hash_of(DELTA_SIG "  S = (v - sum(k * S)) * (k * beta) + S\n"
                                      "  y = sum(q * S)\n"),
                    h);
  ck_assert_uint_eq(hash_of(DELTA_SIG "  kb = beta * k  # the step size\n"
                                      "  err = v - sum(S * k)\n"
                                      "  new = S + kb * err\n"
                                      "  S = new\n"
                                      "  yq = new * q\n"
                                      "  y = sum(yq)\n"),
                    h);
  /* Rebinding a state: only the last binding counts. */
  ck_assert_uint_eq(hash_of(DELTA_SIG "  S0 = S\n  S = S * 2\n  S = exp(S)\n"
                                      "  S = S0 + beta * k * (v - sum(S0 * k))\n"
                                      "  y = sum(S * q)\n"),
                    h);
  /* A different association, an output of the old state: other hashes. */
  ck_assert_uint_ne(hash_of(DELTA_SIG "  S = S + beta * (k * (v - sum(S * k)))\n"
                                      "  y = sum(S * q)\n"),
                    h);
  ck_assert_uint_ne(hash_of(DELTA_SIG "  y = sum(S * q)\n"
                                      "  S = S + beta * k * (v - sum(S * k))\n"),
                    h);
}
END_TEST

/* ----------------------------------------------------------- shape classes */
static const char *const shape_text[4] = {"[1,1]", "[M,1]", "[1,N]", "[M,N]"};

/* Class of `expr` over inputs a, b, c of classes ca, cb, cc; and check that
 * it binds to a state of each class exactly when it fits (else a shape
 * error at the statement), and that every such step round-trips. */
static int class_of(const char *expr, int ca, int cb, int cc) {
  char text[512];
  int got = -1;
  for (int cs = 3; cs >= 0; cs--) {
    snprintf(text, sizeof text, "step t(a%s, b%s, c%s; S%s) -> y[1,1]\n  S = %s\n  y = 0\n",
             shape_text[ca], shape_text[cb], shape_text[cc], shape_text[cs], expr);
    frnn_step *s = NULL;
    frnn_status st = frnn_step_parse(ctx, "t", text, &s);
    if (cs == 3) { /* [M,N] holds any value */
      ck_assert_msg(st == FRNN_OK, "%s", frnn_ctx_error(ctx));
      got = s->nodes[s->ports[FRNN_PORT_STATE][0].value].cls;
    }
    ck_assert_msg(st == ((got & ~cs) ? FRNN_E_SHAPE : FRNN_OK), "%s into S%s: %s", expr,
                  shape_text[cs], frnn_ctx_error(ctx));
    if (st) {
      int l, c;
      frnn_ctx_error_location(ctx, &l, &c);
      ck_assert_int_eq(l, 2);
      ck_assert_int_eq(c, 3);
      continue;
    }
    round_trip(s);
    frnn_step_destroy(s);
  }
  return got;
}

/* Every operation of the table, with operands of every class combination:
 * the result class follows the op's shape rule (SPEC section 2). */
START_TEST(test_shapes) {
  for (int op = 0; op < FRNN_OP_COUNT; op++) {
    const op_info *info = op_get((frnn_op)op);
    if (info->shape == SHAPE_LEAF) continue;
    int combos = 1;
    for (int i = 0; i < info->arity; i++) combos *= 4;
    for (int k = 0; k < combos; k++) {
      int cls[3] = {k % 4, (k / 4) % 4, (k / 16) % 4};
      char expr[64];
      if (op == FRNN_OP_NEG)
        snprintf(expr, sizeof expr, "-a");
      else if (info->flags & OPF_INFIX)
        snprintf(expr, sizeof expr, "a %s b", info->spelling);
      else if (op == FRNN_OP_POW) /* the exponent is a constant: its class is [1,1] */
        snprintf(expr, sizeof expr, "pow(a, 3 - 1.5)");
      else
        snprintf(expr, sizeof expr, "%s(a%s%s)", info->spelling, info->arity > 1 ? ", b" : "",
                 info->arity > 2 ? ", c" : "");
      if (op == FRNN_OP_POW && cls[1] != 0) continue;
      int want = 0;
      switch (info->shape) {
      case SHAPE_JOIN:
        for (int i = 0; i < info->arity; i++) want |= cls[i];
        break;
      case SHAPE_SUMN: want = cls[0] & ~2; break; /* over N: [M,N] -> [M,1] */
      case SHAPE_SUMM: want = cls[0] & ~1; break; /* over M: [M,N] -> [1,N] */
      case SHAPE_FIRST: want = cls[0]; break;
      case SHAPE_LEAF: break;
      }
      ck_assert_msg(class_of(expr, cls[0], cls[1], cls[2]) == want, "%s with a%s b%s c%s", expr,
                    shape_text[cls[0]], shape_text[cls[1]], shape_text[cls[2]]);
    }
  }
  /* Composites, and the examples of SPEC section 2. */
  for (int ca = 0; ca < 4; ca++) {
    ck_assert_int_eq(class_of("sum(sum_m(a))", ca, 0, 0), FRNN_SCALAR);
    ck_assert_int_eq(class_of("a * 2", ca, 0, 0), ca);
    for (int cb = 0; cb < 4; cb++) ck_assert_int_eq(class_of("pow(a * b, 2)", ca, cb, 0), ca | cb);
  }
  ck_assert_int_eq(class_of("a * b", FRNN_ROW, FRNN_COL, 0), FRNN_MAT); /* row * col */
  ck_assert_int_eq(class_of("sum(a)", FRNN_MAT, 0, 0), FRNN_COL);
  ck_assert_int_eq(class_of("sum(a)", FRNN_ROW, 0, 0), FRNN_SCALAR);
  ck_assert_int_eq(class_of("sum(a)", FRNN_COL, 0, 0), FRNN_COL);
  ck_assert_int_eq(class_of("sum_m(a)", FRNN_MAT, 0, 0), FRNN_ROW);
  ck_assert_int_eq(class_of("sum_m(a)", FRNN_COL, 0, 0), FRNN_SCALAR);
  ck_assert_int_eq(class_of("sum(a * b)", FRNN_MAT, FRNN_ROW, 0), FRNN_COL); /* S k */
}
END_TEST

/* ------------------------------------------------------ random steps (seed) */
static const char *const rnd_vars[] = {"a", "b", "c", "d", "S", "r", "s", "d2"};
static const char *const rnd_funcs1[] = {"exp", "log", "sqrt", "rsqrt", "abs", "tanh",
                                         "sigmoid", "softplus", "silu", "sum", "sum_m"};

static void rnd_expr(rng *r, char *buf, size_t size, int depth) {
  size_t n = strlen(buf);
  if (n + 200 > size) depth = 0;
  int pick = depth <= 0 ? (int)(rng_next(r) % 2) : (int)(rng_next(r) % 9);
  switch (pick) {
  case 0: snprintf(buf + n, size - n, "%s", rnd_vars[rng_next(r) % 8]); return;
  case 1: {
    static const char *const nums[] = {"0", "1", "2", "0.5", "1e-6", "3.25", ".5", "1e3", "7"};
    snprintf(buf + n, size - n, "%s", nums[rng_next(r) % 9]);
    return;
  }
  case 2:
  case 3: {
    static const char *const ops[] = {" + ", " - ", " * ", " / "};
    snprintf(buf + n, size - n, "(");
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, "%s", ops[rng_next(r) % 4]);
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ")");
    return;
  }
  case 4:
    snprintf(buf + n, size - n, "-");
    rnd_expr(r, buf, size, depth - 1);
    return;
  case 5: {
    snprintf(buf + n, size - n, "%s(", rnd_funcs1[rng_next(r) % 11]);
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ")");
    return;
  }
  case 6: {
    static const char *const f2[] = {"max", "min"};
    snprintf(buf + n, size - n, "%s(", f2[rng_next(r) % 2]);
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ", ");
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ")");
    return;
  }
  case 7: {
    static const char *const cmp[] = {" < ", " > ", " <= ", " >= "};
    snprintf(buf + n, size - n, "where(");
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, "%s", cmp[rng_next(r) % 4]);
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ", ");
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ", ");
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ")");
    return;
  }
  default:
    snprintf(buf + n, size - n, "pow(");
    rnd_expr(r, buf, size, depth - 1);
    n = strlen(buf);
    snprintf(buf + n, size - n, ", %d)", (int)(rng_next(r) % 5) - 2);
    return;
  }
}

/* A random valid step: locals and states rebound, outputs reduced to fit. */
static void rnd_step(rng *r, char *buf, size_t size) {
  snprintf(buf, size, "step rnd(a[1,N], b[M,1], c[1,1], d[M,N]; S[M,N], r[1,N], s[1,1]) "
                      "-> y[M,1], z[1,1]\n");
  int lines = 1 + (int)(rng_next(r) % 6);
  for (int i = 0; i < lines; i++) {
    static const char *const targets[] = {"S", "r", "s", "y", "z", "d2"};
    static const char *const wrap[] = {"%s", "sum_m(%s)", "sum(sum_m(%s))", "sum(%s)",
                                       "sum(sum_m(%s))", "%s"};
    int t = (int)(rng_next(r) % 6);
    char e[1024] = "";
    rnd_expr(r, e, sizeof e, 1 + (int)(rng_next(r) % 4));
    size_t n = strlen(buf);
    snprintf(buf + n, size - n, "  %s = ", targets[t]);
    n = strlen(buf);
    snprintf(buf + n, size - n, wrap[t], e);
    n = strlen(buf);
    snprintf(buf + n, size - n, "\n");
  }
  size_t n = strlen(buf);
  snprintf(buf + n, size - n, "  S = S + a * b\n  r = r * 2\n  s = -s\n  y = sum(S)\n  z = s\n");
}

START_TEST(test_random_round_trip) {
  rng r = test_rng("parse random round trip");
  char text[16384];
  for (int i = 0; i < 300; i++) {
    rnd_step(&r, text, sizeof text);
    frnn_step *s = NULL;
    frnn_status st = frnn_step_parse(ctx, "rnd", text, &s);
    /* d2 is a local: a step that reads it before binding it fails by name. */
    if (st == FRNN_E_NAME) {
      ck_assert_ptr_nonnull(strstr(frnn_ctx_error(ctx), "unknown name 'd2'"));
      continue;
    }
    ck_assert_msg(st == FRNN_OK, "%s\n--- text:\n%s", frnn_ctx_error(ctx), text);
    round_trip(s);
    frnn_step_destroy(s);
  }
}
END_TEST

/* Random damage to valid text: it parses or fails cleanly at a place. */
START_TEST(test_random_mutations) {
  rng r = test_rng("parse random mutations");
  static const char alphabet[] = "abSxyz019.e+-*/<>=()[],;#\n\t \r_MN\x80\xff";
  char text[16384];
  for (int i = 0; i < 3000; i++) {
    if (i % 2)
      rnd_step(&r, text, sizeof text - 64);
    else
      snprintf(text, sizeof text, "%s",
               rt_steps[rng_next(&r) % (sizeof rt_steps / sizeof *rt_steps)]);
    int edits = 1 + (int)(rng_next(&r) % 4);
    for (int k = 0; k < edits; k++) {
      size_t len = strlen(text), at = len ? rng_next(&r) % len : 0;
      char ch = alphabet[rng_next(&r) % (sizeof alphabet - 1)];
      switch (rng_next(&r) % 3) {
      case 0: text[at] = ch; break;                                 /* replace */
      case 1: memmove(text + at, text + at + 1, len - at); break;   /* delete */
      default:                                                      /* insert */
        memmove(text + at + 1, text + at, len - at + 1);
        text[at] = ch;
      }
    }
    frnn_step *s = NULL;
    frnn_status st = frnn_step_parse(ctx, "m", text, &s);
    if (st == FRNN_OK) {
      round_trip(s);
      frnn_step_destroy(s);
      continue;
    }
    ck_assert_ptr_null(s);
    int l, c;
    frnn_ctx_error_location(ctx, &l, &c);
    ck_assert_msg(l >= 1 && c >= 1, "no location for: %s\n--- text:\n%s", frnn_ctx_error(ctx),
                  text);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "m:%d:%d: ", l, c);
    ck_assert_msg(strncmp(frnn_ctx_error(ctx), prefix, strlen(prefix)) == 0, "%s",
                  frnn_ctx_error(ctx));
  }
}
END_TEST

/* ------------------------------------------------------------ golden files */
static char golden_names[256][256];
static int n_golden;

static void scan_golden(void) {
  struct dirent **list;
  int n = scandir(test_source_path("tests/golden"), &list, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    size_t len = strlen(list[i]->d_name);
    if (len > 5 && len < 256 && strcmp(list[i]->d_name + len - 5, ".frnn") == 0 && n_golden < 256)
      strcpy(golden_names[n_golden++], list[i]->d_name);
    free(list[i]);
  }
  if (n > 0) free(list);
}

START_TEST(test_golden) {
  const char *name = golden_names[_i];
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", test_source_path("tests/golden"), name);
  FILE *f = fopen(path, "r");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  char first[1024] = "";
  ck_assert_ptr_nonnull(fgets(first, sizeof first, f));
  fclose(f);
  first[strcspn(first, "\r\n")] = 0;
  frnn_step *s = NULL;
  frnn_status st = frnn_step_load(ctx, path, &s);
  if (strcmp(first, "# ok") == 0) {
    ck_assert_msg(st == FRNN_OK, "%s: %s", name, frnn_ctx_error(ctx));
    round_trip(s);
    frnn_step_destroy(s);
    return;
  }
  int line, col, off = 0;
  ck_assert_msg(sscanf(first, "# error: %d:%d: %n", &line, &col, &off) == 2 && off > 0,
                "%s: the first line must be '# ok' or '# error: <line>:<col>: <text>'", name);
  const char *want = first + off;
  ck_assert_msg(st != FRNN_OK, "%s: parsed, but should fail with '%s'", name, want);
  ck_assert_ptr_null(s);
  int l, c;
  frnn_ctx_error_location(ctx, &l, &c);
  const char *msg = frnn_ctx_error(ctx);
  ck_assert_msg(l == line && c == col, "%s: error at %d:%d, want %d:%d: %s", name, l, c, line, col,
                msg);
  ck_assert_msg(strstr(msg, want), "%s: message lacks '%s': %s", name, want, msg);
  char prefix[4200];
  snprintf(prefix, sizeof prefix, "%s:%d:%d: ", path, line, col);
  ck_assert_msg(strncmp(msg, prefix, strlen(prefix)) == 0, "%s: message lacks '%s'", name, prefix);
}
END_TEST

START_TEST(test_golden_count) {
  /* The runner must find the files (FRNN_SOURCE_DIR set by CTest). */
  ck_assert_int_ge(n_golden, 40);
}
END_TEST

int main(void) {
  scan_golden();
  Suite *su = suite_create("parse");
  TCase *tc = tcase_create("errors");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, test_error_case, 0, (int)(sizeof err_cases / sizeof *err_cases));
  tcase_add_test(tc, test_caret);
  tcase_add_test(tc, test_builder_errors);
  tcase_add_test(tc, test_limits);
  tcase_add_test(tc, test_api);
  tcase_add_test(tc, test_locale);
  suite_add_tcase(su, tc);
  tc = tcase_create("print");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_every_function);
  tcase_add_test(tc, test_round_trip_constants);
  tcase_add_test(tc, test_print_internal);
  tcase_add_test(tc, test_print_adjoint);
  tcase_add_test(tc, test_hash_stability);
  tcase_add_test(tc, test_shapes);
  tcase_add_test(tc, test_random_round_trip);
  tcase_add_test(tc, test_random_mutations);
  suite_add_tcase(su, tc);
  tc = tcase_create("big");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60); /* a hang shows as a failure, not a stalled run */
  tcase_add_test(tc, test_big_steps);
  suite_add_tcase(su, tc);
  tc = tcase_create("golden");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_golden_count);
  if (n_golden) tcase_add_loop_test(tc, test_golden, 0, n_golden);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
