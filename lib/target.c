/* target.c - the GPU targets frnn compiles for.
 *
 * A whitelist, not a parser: LLVM 19 aborts the process on a CPU name it
 * does not know and silently ignores an unknown PTX feature, so only names
 * checked here ever reach the NVPTX backend (notes/llvm-nvptx-cuda.md 1.3).
 * PTX 8.0 for every target: the oldest ISA that knows sm_90a, loaded by
 * any CUDA 12.0+ driver. */
#include "frnn_internal.h"

#include <stdio.h>
#include <string.h>

static const target targets[] = {
    /* arch     sm  features   ptx regs  shared opt-in   warp */
    {"sm_80", 80, "+ptx80", 80, 255, 163 * 1024, 32},
    {"sm_86", 86, "+ptx80", 80, 255, 99 * 1024, 32},
    {"sm_89", 89, "+ptx80", 80, 255, 99 * 1024, 32},
    {"sm_90", 90, "+ptx80", 80, 255, 227 * 1024, 32},
    {"sm_90a", 90, "+ptx80", 80, 255, 227 * 1024, 32},
};

frnn_status target_parse(frnn_ctx *ctx, const char *arch, target *out) {
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "target_parse: null output");
  if (!arch) arch = "sm_90";
  for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
    if (strcmp(arch, targets[i].arch) == 0) {
      *out = targets[i];
      return FRNN_OK;
    }
  return diag_fail(ctx, FRNN_E_UNSUPPORTED,
                   "unsupported GPU architecture '%.32s': frnn compiles for sm_80, sm_86, "
                   "sm_89, sm_90 and sm_90a",
                   arch);
}
