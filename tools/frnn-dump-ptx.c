/* frnn-dump-ptx - print the PTX (or LLVM IR) of every kernel of a step,
 * forward and backward, or the step graph after a pass (SPEC section 4).
 *
 *   frnn-dump-ptx STEP.frnn [--M m] [--N n] [--dtype f32|bf16|f16]
 *                 [--arch sm_90] [--llvm] [--accurate] [--kernel NAME] [--after PASS]
 *                 [--bcast NAME:DIMS,...]
 * PASS: parse, simplify (the canonical step), adjoint (its derivative).
 * --bcast: the kernels of a call whose named inputs are broadcast over the
 * dimensions DIMS (letters of B, T, H), e.g. S4D's parameters "dA_re:BT". */
#include "frnn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char *msg) {
  if (msg) fprintf(stderr, "frnn-dump-ptx: %s\n", msg);
  fprintf(stderr, "usage: frnn-dump-ptx STEP.frnn [--M m] [--N n] [--dtype f32|bf16|f16] "
                  "[--arch sm_90] [--llvm] [--accurate] [--kernel NAME] "
                  "[--after parse|simplify|adjoint|affine|chunk] [--bcast NAME:DIMS,...]\n");
  return 2;
}

static int parse_size(const char *s, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (*s == 0 || *end || v < 1 || v > 1 << 20) return 0;
  *out = v;
  return 1;
}

int main(int argc, char **argv) {
  const char *path = NULL;
  frnn_codegen_options opt = {.M = 128, .N = 128, .dtype = {kDLBfloat, 16, 1}};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--llvm")) opt.emit_llvm = 1;
    else if (!strcmp(a, "--accurate")) opt.accurate_math = 1;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(NULL), 0;
    else if (a[0] == '-' && a[1] == '-') {
      if (!v) return usage("missing value after an option");
      i++;
      if (!strcmp(a, "--M")) {
        if (!parse_size(v, &opt.M)) return usage("--M takes an integer from 1 to 1048576");
      } else if (!strcmp(a, "--N")) {
        if (!parse_size(v, &opt.N)) return usage("--N takes an integer from 1 to 1048576");
      } else if (!strcmp(a, "--dtype")) {
        if (!strcmp(v, "f32") || !strcmp(v, "float32")) opt.dtype = (DLDataType){kDLFloat, 32, 1};
        else if (!strcmp(v, "bf16") || !strcmp(v, "bfloat16")) opt.dtype = (DLDataType){kDLBfloat, 16, 1};
        else if (!strcmp(v, "f16") || !strcmp(v, "float16")) opt.dtype = (DLDataType){kDLFloat, 16, 1};
        else return usage("--dtype is f32, bf16 or f16");
      } else if (!strcmp(a, "--arch")) opt.arch = v;
      else if (!strcmp(a, "--kernel")) opt.kernel = v;
      else if (!strcmp(a, "--after")) opt.after_pass = v;
      else if (!strcmp(a, "--bcast")) opt.broadcast = v;
      else return usage("unknown option");
    } else if (!path) path = a;
    else return usage("more than one step file");
  }
  if (!path) return usage("no step file");
  frnn_ctx *ctx;
  if (frnn_ctx_create(&ctx)) return 1;
  frnn_step *step = NULL;
  char *text = NULL;
  int rc = 0;
  if (frnn_step_load(ctx, path, &step) || frnn_compile_ptx(ctx, step, &opt, &text)) {
    fprintf(stderr, "%s\n", frnn_ctx_error(ctx));
    rc = 1;
  } else {
    fputs(text, stdout);
  }
  frnn_free(text);
  frnn_step_destroy(step);
  frnn_ctx_destroy(ctx);
  return rc;
}
