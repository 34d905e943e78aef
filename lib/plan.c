/* plan.c - the kernel plan: how a step's state is spread over threads, how
 * many rows each thread keeps in registers, and how the workspace is laid
 * out.  Decided from M, N and the step's states, not from constants tuned
 * for one size.
 *
 * Forward: heads in parallel (grid y = H, z = B), rows of a head split over
 * `row_blocks` blocks unless the step sums over M.  Backward: one block per
 * head holding every row, so that gradients of rows and scalars (sums over
 * M) are reduced inside the block, without atomics: bitwise reproducible. */
#include "frnn_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Floats of state one thread may keep per kernel: the rest of the 255
 * registers hold inputs, temporaries and addresses. */
enum { FWD_STATE_BUDGET = 32, BWD_STATE_BUDGET = 64, MAX_WARPS = 32, MAX_RPT_BY_CHOICE = 8,
       FWD_COLS_PER_LANE = 8 };

int class_floats(int cls, int64_t M, int64_t N) {
  return (int)((CLASS_HAS_M(cls) ? M : 1) * (CLASS_HAS_N(cls) ? N : 1));
}

static bool sums_over_m(const frnn_step *s) {
  for (uint32_t v = 0; v < s->n_nodes; v++)
    if (s->nodes[v].op == FRNN_OP_SUM_M) return true;
  return false;
}

/* copies: how many times each state element is held (2 in the backward:
 * the state and its gradient). */
/* cols_per_lane: how many columns of a row one lane should hold; the lanes
 * of a row (a power of two up to 32) follow.  Fewer lanes per row means
 * fewer shuffles per sum over N but more loads of row inputs per warp:
 * measured on the H100 (delta rule, GLA, Mamba-2 at 128 x 128), the forward
 * ran 1.6x faster with 8 columns per lane than with 4 (32 lanes), while the
 * backward, register-bound, ran 2.3x slower: it keeps 32 lanes. */
static frnn_status choose_shape(frnn_ctx *ctx, const frnn_step *s, int64_t M, int64_t N,
                                int budget, int copies, bool one_block, int cols_per_lane,
                                kernel_shape *k) {
  int lpr = 1;
  while (lpr < 32 && (int64_t)lpr * cols_per_lane < N) lpr *= 2;
  /* Tuning knob for benchmarks: FRNN_LPR forces the lanes per row (a power
   * of two up to 32; part of the module key, see pipeline.c). */
  const char *force = getenv("FRNN_LPR");
  if (force && *force) {
    int want = atoi(force);
    for (lpr = 1; lpr * 2 <= want && lpr < 32; lpr *= 2) {}
  }
  int cn = (int)((N + lpr - 1) / lpr), groups = 32 / lpr;
  if (cn > PLAN_MAX_CN)
    return diag_fail(ctx, FRNN_E_UNSUPPORTED, "N = %lld is above the largest supported, %d",
                     (long long)N, 32 * PLAN_MAX_CN);
  /* Registers of state per row a thread keeps, and for the rest. */
  int per_row = 0, fixed = 0;
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) {
    int c = s->ports[FRNN_PORT_STATE][i].cls;
    if (CLASS_HAS_M(c)) per_row += copies * (CLASS_HAS_N(c) ? cn : 1);
    else fixed += copies * (CLASS_HAS_N(c) ? cn : 1);
  }
  int64_t rows_per_warp_pass = groups;
  int rpt = per_row ? (budget - fixed) / per_row : PLAN_MAX_RPT;
  if (rpt < 1) rpt = 1;
  /* Each row a thread holds also costs addresses and temporaries: beyond 8
   * rows ptxas spilled (N = 16, 32 rows: 255 registers), so use more warps. */
  if (rpt > MAX_RPT_BY_CHOICE) rpt = MAX_RPT_BY_CHOICE;
  int64_t need = (M + rows_per_warp_pass - 1) / rows_per_warp_pass; /* rows per group */
  if (rpt > need) rpt = (int)need;
  int warps;
  if (one_block) {
    warps = (int)((need + rpt - 1) / rpt);
    if (warps > MAX_WARPS) {
      rpt = (int)((need + MAX_WARPS - 1) / MAX_WARPS);
      warps = (int)((need + rpt - 1) / rpt);
    }
    if (rpt > PLAN_MAX_RPT)
      return diag_fail(ctx, FRNN_E_UNSUPPORTED,
                       "M = %lld is too large for one block of %d warps holding %d rows each",
                       (long long)M, MAX_WARPS, PLAN_MAX_RPT);
    k->row_blocks = 1;
  } else {
    int64_t w = (need + rpt - 1) / rpt;
    warps = w < 4 ? (int)w : 4;
    int64_t rows_per_block = (int64_t)warps * groups * rpt;
    k->row_blocks = (int)((M + rows_per_block - 1) / rows_per_block);
  }
  k->lpr = lpr;
  k->cn = cn;
  k->rpt = rpt;
  k->warps = warps;
  return FRNN_OK;
}

frnn_status plan_make(frnn_ctx *ctx, const frnn_step *step, const frnn_step *adjoint, int64_t M,
                      int64_t N, plan *p) {
  if (M < 1 || N < 1)
    return diag_fail(ctx, FRNN_E_ARG, "state size M = %lld, N = %lld: both must be at least 1",
                     (long long)M, (long long)N);
  p->M = M;
  p->N = N;
  p->n_in = step->n_ports[FRNN_PORT_INPUT];
  p->n_st = step->n_ports[FRNN_PORT_STATE];
  p->n_out = step->n_ports[FRNN_PORT_OUTPUT];
  for (int i = 0; i < p->n_in; i++) p->in_floats[i] = class_floats(step->ports[FRNN_PORT_INPUT][i].cls, M, N);
  p->state_floats = 0;
  for (int i = 0; i < p->n_st; i++) {
    p->state_offset[i] = p->state_floats;
    p->state_floats += class_floats(step->ports[FRNN_PORT_STATE][i].cls, M, N);
  }
  frnn_status st =
      choose_shape(ctx, step, M, N, FWD_STATE_BUDGET, 1, sums_over_m(step), FWD_COLS_PER_LANE, &p->fwd);
  if (!st) st = choose_shape(ctx, step, M, N, BWD_STATE_BUDGET, 2, true, 1, &p->bwd);
  if (st) return st;
  (void)adjoint;
  /* Registers of state per backward thread (scratch holds one copy). */
  p->bwd_regs = 0;
  for (int i = 0; i < p->n_st; i++) {
    int c = step->ports[FRNN_PORT_STATE][i].cls;
    p->bwd_regs += (CLASS_HAS_M(c) ? p->bwd.rpt : 1) * (CLASS_HAS_N(c) ? p->bwd.cn : 1);
  }
  return FRNN_OK;
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

void plan_workspace(const plan *p, frnn_sizes sz, const uint8_t *in_bcast, int for_backward,
                    ws_layout *w) {
  int64_t C = (int64_t)ceil(sqrt((double)sz.T));
  if (C < 1) C = 1;
  w->C = C;
  w->n_ckpt = (sz.T + C - 1) / C;
  size_t heads = (size_t)sz.B * (size_t)sz.H;
  w->ckpt = 0;
  size_t off = 0;
  if (for_backward) {
    off = align256(heads * (size_t)w->n_ckpt * (size_t)p->state_floats * 4);
    w->scratch = off;
    off = align256(off + heads * (size_t)C * (size_t)p->bwd.warps * 32 * (size_t)p->bwd_regs * 4);
  } else {
    w->scratch = 0;
  }
  for (int i = 0; i < FRNN_MAX_PORTS; i++) w->partial[i] = SIZE_MAX;
  for (int i = 0; for_backward && i < p->n_in; i++) {
    uint8_t bc = in_bcast ? in_bcast[i] : 5; /* worst case: over B and H, not T */
    if (!(bc & 1) && !(bc & 4)) continue;   /* one head writes it: no partial */
    w->partial[i] = off;
    size_t t = (bc & 2) ? 1 : (size_t)sz.T;
    off = align256(off + heads * t * (size_t)p->in_floats[i] * 4);
  }
  w->total = off;
}
