/* fuzz_parse.c - libFuzzer target for the step text front end.
 *
 * Any input must parse or fail cleanly (no crash, leak or undefined
 * behaviour: the build adds ASan and UBSan).  Beyond that it checks:
 * - a failure has a status and a place inside the text, and its message
 *   begins "fuzz.frnn:<line>:<col>: ";
 * - a step that parses prints; the printed text parses to the same hash, and
 *   prints again to the same text.
 * Bytes after a NUL are ignored (the API takes a C string).  See README.md. */
#include "frnn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what, const char *text, const char *msg) {
  if (ok) return;
  fprintf(stderr, "fuzz_parse: %s\n--- message:\n%s\n--- text:\n%s\n", what, msg ? msg : "",
          text);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0;
  frnn_ctx *ctx;
  if (frnn_ctx_create(&ctx)) {
    free(text);
    return 0;
  }
  frnn_step *s = NULL;
  frnn_status st = frnn_step_parse(ctx, "fuzz.frnn", text, &s);
  if (st != FRNN_OK) {
    const char *msg = frnn_ctx_error(ctx);
    check(s == NULL, "failure left a step", text, msg);
    check(frnn_ctx_last_status(ctx) == st, "status differs from the context's", text, msg);
    int line, col;
    frnn_ctx_error_location(ctx, &line, &col);
    /* The place is inside the text (or just past its end). */
    int lines = 1;
    const char *ls = text;
    for (const char *q = text; *q && lines < line; q++)
      if (*q == '\n') lines++, ls = q + 1;
    size_t len = strcspn(ls, "\n");
    check(line >= 1 && line == lines && col >= 1 && (size_t)col <= len + 1,
          "error place outside the text", text, msg);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "fuzz.frnn:%d:%d: ", line, col);
    check(strncmp(msg, prefix, strlen(prefix)) == 0, "message without its place", text, msg);
  } else {
    char *printed = NULL, *again = NULL;
    check(frnn_step_print(s, &printed) == FRNN_OK, "print failed", text, frnn_ctx_error(ctx));
    frnn_step *s2 = NULL;
    st = frnn_step_parse(ctx, "printed", printed, &s2);
    check(st == FRNN_OK, "printed text does not parse", printed, frnn_ctx_error(ctx));
    check(frnn_step_hash(s2) == frnn_step_hash(s), "printed text has another hash", printed, text);
    check(frnn_step_print(s2, &again) == FRNN_OK, "second print failed", printed, NULL);
    check(strcmp(again, printed) == 0, "printing is not a fixed point", again, printed);
    frnn_free(printed);
    frnn_free(again);
    frnn_step_destroy(s2);
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
  free(text);
  return 0;
}
