/* lex.c - step text -> tokens, one at a time (parse.c asks for the next).
 *
 *   token   = NAME | NUMBER | NEWLINE | punct
 *   NAME    = [A-Za-z_][A-Za-z0-9_]*            (at most FRNN_NAME_MAX - 1)
 *   NUMBER  = digits ["." digits*] [exp] | "." digits [exp]
 *   exp     = ("e"|"E") ["+"|"-"] digits
 *   punct   = ( ) [ ] , ; = + - * / < > <= >= ->
 *
 * Spaces, tabs, \r, \f and \v separate tokens; "#" starts a comment that runs
 * to the end of the line; every "\n" is a NEWLINE token (parse.c decides where
 * line ends matter).  Columns count bytes from 1.  Any other byte, non-ASCII
 * included, is an error outside comments. */
#include "frnn_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lex_init(lexer *lx, frnn_ctx *ctx, const char *file, const char *src) {
  lx->ctx = ctx;
  lx->file = file;
  lx->src = src;
  lx->p = src;
  lx->line_start = src;
  lx->line = 1;
}

static bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }

/* Column of byte q on the current line, from 1 (saturated: lines may be long). */
static int col_of(const lexer *lx, const char *q) {
  size_t c = (size_t)(q - lx->line_start) + 1;
  return c > INT_MAX ? INT_MAX : (int)c;
}

static frnn_status lex_fail(lexer *lx, const char *at, const char *fmt, const char *arg) {
  return diag_fail_at(lx->ctx, FRNN_E_SYNTAX, lx->file, lx->src, lx->line, col_of(lx, at), fmt,
                      arg);
}

/* Scan a number starting at p; the end, or NULL when malformed. */
static const char *scan_number(const char *p) {
  while (is_digit(*p)) p++;
  if (*p == '.') {
    p++;
    while (is_digit(*p)) p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!is_digit(*p)) return NULL;
    while (is_digit(*p)) p++;
  }
  /* "1x", "1.2.3", "1e5e5": letters, digits or dots glued to a number. */
  if (is_alnum(*p) || *p == '.') return NULL;
  return p;
}

frnn_status lex_next(lexer *lx, token *t) {
  const char *p = lx->p;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f' || *p == '\v') p++;
    if (*p != '#') break;
    while (*p && *p != '\n') p++;
  }
  memset(t, 0, sizeof *t);
  t->text = p;
  t->line = lx->line;
  t->col = col_of(lx, p);
  const char *start = p;
  char c = *p;
  if (c == 0) {
    t->kind = TOK_EOF;
    lx->p = p;
    return FRNN_OK;
  }
  if (c == '\n') {
    t->kind = TOK_NEWLINE;
    t->len = 1;
    lx->p = p + 1;
    lx->line_start = p + 1;
    if (lx->line < INT_MAX) lx->line++;
    return FRNN_OK;
  }
  if (is_alpha(c)) {
    while (is_alnum(*p)) p++;
    if (p - start >= FRNN_NAME_MAX) {
      char shown[24];
      snprintf(shown, sizeof shown, "%.16s...", start);
      lx->p = p;
      return diag_fail_at(lx->ctx, FRNN_E_SYNTAX, lx->file, lx->src, lx->line,
                          col_of(lx, start), "name '%s' is longer than %d characters", shown,
                          FRNN_NAME_MAX - 1);
    }
    t->kind = TOK_NAME;
  } else if (is_digit(c) || (c == '.' && is_digit(p[1]))) {
    const char *end = scan_number(p);
    if (!end) {
      /* Show the malformed number up to the next separator. */
      const char *q = p;
      while (is_alnum(*q) || *q == '.' ||
             ((*q == '+' || *q == '-') && (q[-1] == 'e' || q[-1] == 'E')))
        q++;
      char shown[40];
      int n = (int)(q - p);
      snprintf(shown, sizeof shown, "%.*s%s", n > 24 ? 24 : n, p, n > 24 ? "..." : "");
      return lex_fail(lx, start, "malformed number '%s'", shown);
    }
    char *conv_end = NULL;
    t->number = strtod(p, &conv_end);
    if (conv_end != end) return lex_fail(lx, start, "malformed number '%s'", "?");
    p = end;
    t->kind = TOK_NUMBER;
  } else {
    p++;
    switch (c) {
    case '(': t->kind = TOK_LPAREN; break;
    case ')': t->kind = TOK_RPAREN; break;
    case '[': t->kind = TOK_LBRACKET; break;
    case ']': t->kind = TOK_RBRACKET; break;
    case ',': t->kind = TOK_COMMA; break;
    case ';': t->kind = TOK_SEMI; break;
    case '=': t->kind = TOK_ASSIGN; break;
    case '+': t->kind = TOK_PLUS; break;
    case '*': t->kind = TOK_STAR; break;
    case '/': t->kind = TOK_SLASH; break;
    case '-':
      t->kind = TOK_MINUS;
      if (*p == '>') t->kind = TOK_ARROW, p++;
      break;
    case '<':
      t->kind = TOK_LT;
      if (*p == '=') t->kind = TOK_LE, p++;
      break;
    case '>':
      t->kind = TOK_GT;
      if (*p == '=') t->kind = TOK_GE, p++;
      break;
    default: {
      char shown[80];
      unsigned char u = (unsigned char)c;
      if (u >= 0x80)
        snprintf(shown, sizeof shown, "byte 0x%02x (only ASCII is allowed outside comments)", u);
      else if (u < 0x20 || u == 0x7f)
        snprintf(shown, sizeof shown, "control character 0x%02x", u);
      else
        snprintf(shown, sizeof shown, "character '%c'", c);
      return lex_fail(lx, start, "unexpected %s", shown);
    }
    }
  }
  t->len = (size_t)(p - start);
  lx->p = p;
  return FRNN_OK;
}

const char *tok_describe(const token *t, char *buf, size_t size) {
  switch (t->kind) {
  case TOK_EOF: snprintf(buf, size, "end of file"); break;
  case TOK_NEWLINE: snprintf(buf, size, "end of line"); break;
  case TOK_NUMBER: {
    int n = t->len > 24 ? 24 : (int)t->len;
    snprintf(buf, size, "number '%.*s%s'", n, t->text, t->len > 24 ? "..." : "");
    break;
  }
  default: snprintf(buf, size, "'%.*s'", t->len > 64 ? 64 : (int)t->len, t->text); break;
  }
  return buf;
}
