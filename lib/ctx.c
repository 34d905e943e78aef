/* ctx.c - the context: where a failure's status, message and place live.
 * The library never prints; callers read frnn_ctx_error. */
#include "frnn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

frnn_status frnn_ctx_create(frnn_ctx **out) {
  if (!out) return FRNN_E_ARG;
  *out = calloc(1, sizeof(frnn_ctx));
  return *out ? FRNN_OK : FRNN_E_NOMEM;
}

void frnn_ctx_destroy(frnn_ctx *ctx) {
  if (!ctx) return;
  pipeline_release(ctx);
  free(ctx);
}

frnn_status frnn_ctx_set_backward_mode(frnn_ctx *ctx, frnn_backward_mode mode) {
  if (!ctx) return FRNN_E_ARG;
  if (mode != FRNN_BACKWARD_FAST && mode != FRNN_BACKWARD_LEAN)
    return diag_fail(ctx, FRNN_E_ARG,
                     "frnn_ctx_set_backward_mode: mode %d is neither FRNN_BACKWARD_FAST (0) nor "
                     "FRNN_BACKWARD_LEAN (1)",
                     (int)mode);
  ctx->backward_mode = mode;
  return FRNN_OK;
}

const char *frnn_ctx_error(const frnn_ctx *ctx) { return ctx ? ctx->msg : "null context"; }

frnn_status frnn_ctx_last_status(const frnn_ctx *ctx) { return ctx ? ctx->status : FRNN_E_ARG; }

void frnn_ctx_error_location(const frnn_ctx *ctx, int *line, int *col) {
  if (line) *line = ctx ? ctx->line : 0;
  if (col) *col = ctx ? ctx->col : 0;
}

void frnn_free(void *p) { free(p); }

const char *frnn_status_name(frnn_status s) {
  static const char *const names[] = {
      "ok",           "invalid argument", "syntax error", "name error",
      "shape error",  "incomplete step",  "out of memory", "i/o error",
      "no gpu",       "cuda error",       "llvm error",    "unsupported"};
  return (unsigned)s < sizeof names / sizeof *names ? names[s] : "unknown status";
}

void diag_clear(frnn_ctx *ctx) {
  ctx->status = FRNN_OK;
  ctx->msg[0] = 0;
  ctx->line = ctx->col = 0;
}

frnn_status diag_fail(frnn_ctx *ctx, frnn_status st, const char *fmt, ...) {
  if (!ctx) return st;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
  va_end(ap);
  ctx->status = st;
  ctx->line = ctx->col = 0;
  return st;
}

frnn_status diag_fail_at(frnn_ctx *ctx, frnn_status st, const char *file, const char *src,
                         int line, int col, const char *fmt, ...) {
  if (!ctx) return st;
  char what[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  /* Find the text of line `line` (1-based) to show under the message. */
  const char *p = src ? src : "";
  for (int l = 1; l < line && *p; p++)
    if (*p == '\n') l++;
  int len = 0;
  while (p[len] && p[len] != '\n' && p[len] != '\r' && len < 512) len++;
  char caret[600];
  int n = 0;
  for (int i = 0; i < col - 1 && i < len && n < 512; i++) caret[n++] = p[i] == '\t' ? '\t' : ' ';
  caret[n++] = '^';
  caret[n] = 0;
  snprintf(ctx->msg, sizeof ctx->msg, "%s:%d:%d: %s\n%.*s\n%s", file ? file : "<step>", line,
           col, what, len, p, caret);
  ctx->status = st;
  ctx->line = line;
  ctx->col = col;
  return st;
}

const char *class_name(int cls) {
  static const char *const names[] = {"[1,1]", "[M,1]", "[1,N]", "[M,N]"};
  return (unsigned)cls < 4 ? names[cls] : "[?]";
}
