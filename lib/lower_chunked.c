/* lower_chunked.c - the chunked kernels of a diagonal-class step (chunked.c
 * finds its terms; docs/design-chunked.md derives the algebra), LLVM IR.
 *
 *   frnn_ck_fwd    grid (MB, H, B): BM rows of one head's state per block
 *                  (all M where it fits), in shared memory; chunks of L steps
 *                  in order.  Per chunk:
 *                  the terms of its steps (evaluated from the inputs by the
 *                  step's own nodes), the cumulative log decay, the outputs
 *                  (state part S (w * P) plus the masked [L,L] attention
 *                  matrix times the columns), then the state at the chunk's
 *                  end.  Chunk-start states (every ckpt_every-th, and the
 *                  last) go to the workspace.  Run again without outputs, it
 *                  recomputes a backward window's chunk states.  A guarded
 *                  step's forward flags the call where a decay factor that
 *                  is not an exp is too small for its log (lower_spec.guard).
 *   frnn_ck_bwd    the same blocks, a window's chunks in reverse, with the
 *                  state's gradient in shared memory: every term's gradient,
 *                  as products of the chunk's arrays (columns whole; rows and
 *                  the log decay as per-block partials, since they sum over
 *                  M), then the gradient before the chunk, carried to the
 *                  next window.
 *   frnn_ck_chain  grid (window's chunks, H, B): the adjoint of the term
 *                  prologue (chunked.c), fed the terms' gradients, gives
 *                  every input's gradient (per step, or summed over the
 *                  chunk's steps for an input broadcast over T, then reduced
 *                  by frnn_reduce_*).  Fused (ck_plan.fused, FRNN_CK_FUSE=1),
 *                  frnn_ck_bwd runs it at the end of each chunk from a
 *                  chunk-sized scratch.
 *
 * Values of the step's nodes: scalars are computed once per step and kept
 * in shared memory (a warp per step; a sum over N or M is a warp reduction);
 * rows and columns are evaluated where an element is needed, from the
 * inputs' loads and the scalars.  Products run on tensor cores where their
 * sizes are multiples of the mma tile (run_mma: on sm_90 in float64, exact
 * operands and a float64 sum; before it TF32 in two parts, three products,
 * float32 additions: about float32's accuracy), else as 4 x 4
 * thread tiles from shared memory on CUDA cores (run_mm; float64 sums on
 * sm_90, float32 before). */
#include "frnn_internal.h"

#include <llvm-c/Core.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TILE = 4 };
/* Lanes (an aligned group in a warp) that share a step's sum over the
 * columns of a scalar seed (merged_scalar_seed, scalar_log_decay_gradient) */
enum { SUM_LANES = 16 };

/* decay_split: where every running log decay of a chunk lies within
 * +-DECAY_SPLIT_MAX, the ratio P_u / P_v of two steps' decay products is
 * split as P_u * (1 / P_v), so W P_l(u) and R / P_v are formed once per
 * element (in place in W and R) and the [L,L] products and the state's
 * products are plain sums of products.  Both factors then stay within
 * e^60 of 1, far inside float32's range.  Otherwise (strong decays) the
 * ratio is formed per term, as exp of a difference, which never overflows
 * for decays at most 1.  The flag is per chunk and block-uniform. */
#define DECAY_SPLIT_MAX 60.0

static int round4(int64_t x) { return (int)((x + 3) / 4 * 4); }

/* ------------------------------------------------------------- the plan */
/* Whether a kernel keeps every (lin, update) pair's attention matrix (and,
 * the backward, its gradient) in an array of its own: the forward always,
 * the backward where bw_pairs (else one pair's at a time).  layout sizes
 * the arrays by it, att_arr and ag_arr place them. */
static bool keeps_all_pairs(const ck_plan *p, bool backward) { return !backward || p->bw_pairs; }

static void layout(ck_plan *p, const chunk_gpu *g, int n_out, bool backward, ck_layout *l) {
  int at = 0, L = p->L;
  memset(l, -1, sizeof *l);
  /* Every array starts at a multiple of 4 floats: 16-byte copies
   * (state_copy, rank_copy) may fill it. */
#define PLACE(field, size) ((field) = at, at = round4(at + (size)))
  PLACE(l->S, p->Mp * p->ss);
  if (backward) PLACE(l->dS, p->Mp * p->ss);
  PLACE(l->Bx, (L + 1) * p->sd);
  for (int a = 0; a < g->n_upd; a++) {
    PLACE(l->R[a], L * p->sn);
    PLACE(l->C[a], L * p->sm);
  }
  for (int k = 0; k < g->n_lin; k++) {
    PLACE(l->W[k], L * p->sn);
    if (backward) PLACE(l->G[k], L * p->sm);
  }
  if (!backward && !p->col && g->n_ld > 0) {
    /* without the split, W P_l and R P_last / P_v once per chunk (no
     * decay: W and R themselves) */
    for (int k = 0; k < g->n_lin; k++) PLACE(l->Wd[k], L * p->sn);
    for (int a = 0; a < g->n_upd; a++) PLACE(l->Re[a], L * p->sn);
  }
  PLACE(l->EL, p->col ? p->Mp : p->Np); /* the chunk's whole decay, P_last */
  PLACE(l->FLAG, 1);   /* the chunk's log decay is moderate: the factored products */
  /* the attention matrices: every (lin, update) pair's at once (att_arr;
   * the backward's where bw_pairs), else one pair's at a time */
  int pairs = g->n_lin * g->n_upd > 0 ? g->n_lin * g->n_upd : 1;
  bool all_pairs = keeps_all_pairs(p, backward);
  PLACE(l->A, L * p->sl * (all_pairs ? pairs : 1));
  if (g->rank_lin >= 0) {
    PLACE(l->TI, L * p->sl);
    PLACE(l->XT, L * p->sm);
  }
  if (backward) {
    /* their gradients Ag: where the solve's right side XT fits them, in it
     * (the backward is done with XT before any Ag is formed) */
    int ag = L * p->sl * (all_pairs ? pairs : 1);
    if (all_pairs && l->XT >= 0 && ag <= L * p->sm) l->Ag = l->XT;
    else PLACE(l->Ag, ag);
    PLACE(l->RUN, p->col ? p->Mp : p->Np);
  } else {
    for (int k = 0; k < n_out; k++) PLACE(l->Y[k], L * p->sm);
  }
  PLACE(l->SC, p->n_sc * L);
  if (backward && p->fused) PLACE(l->SCA, p->n_sc_adj * L);
  l->floats = at;
#undef PLACE
}

static int count_scalars(const frnn_step *s, const uint8_t *need) {
  int n = 0;
  for (uint32_t v = 0; v < s->n_nodes; v++)
    if (need[v] && s->nodes[v].cls == FRNN_SCALAR && s->nodes[v].op != FRNN_OP_CONST) n++;
  return n;
}

static int stride_mma(int x) { return (x + 27) / 32 * 32 + 4; }
/* The least stride >= x that is an odd multiple of 4: a fragment's 8 rows
 * (g s mod 32 = 4 (odd g mod 8)) still meet distinct banks.  For the [L,L]
 * arrays where the backward keeps every pair's: 20 floats a row at L = 16,
 * not 36, so they fit beside its states (else stride_mma: RWKV-7's
 * backward a pair at a time spilled at 20, fw+bw 9.55 -> 10.34 ms). */
static int stride_mma_min(int x) { return (x + 3) / 4 % 2 ? (x + 3) / 4 * 4 : (x + 3) / 4 * 4 + 4; }

/* The chain kernel's shared floats: the adjoint's scalars a step (its ev
 * at 0) and one more; where it forms the log decay's gradient
 * (ld_in_chain), the step's own after them, from this offset
 * (chain_log_decay's ev). */
static int chain_step_sc(const ck_plan *p, int L) { return round4(p->n_sc_adj * L + 1); }

static bool fits_layout(ck_plan *p, const chunk_gpu *g, int n_out, int L, int max_shared) {
  p->L = L;
  p->sl = !p->mma ? L + 1 : p->bw_pairs ? stride_mma_min(L) : stride_mma(L);
  layout(p, g, n_out, false, &p->fw);
  layout(p, g, n_out, true, &p->bw);
  p->fwd_smem = (unsigned)p->fw.floats * 4;
  p->bwd_smem = (unsigned)p->bw.floats * 4;
  p->chain_smem = (unsigned)(p->ld_in_chain ? chain_step_sc(p, L) + p->n_sc * L : p->n_sc_adj * L + 1) * 4;
  return p->fwd_smem <= (unsigned)max_shared && p->bwd_smem <= (unsigned)max_shared &&
         p->chain_smem <= (unsigned)max_shared;
}

/* pairs: the backward may keep every (lin, update) pair's matrices (a step
 * of several pairs, FRNN_CK_BW_PAIRS not 0); then it does where they fit,
 * else one pair's at a time. */
static bool fits(ck_plan *p, const chunk_gpu *g, int n_out, int L, int max_shared, bool pairs) {
  for (int all = pairs; all >= 0; all--) {
    p->bw_pairs = all;
    if (fits_layout(p, g, n_out, L, max_shared)) return true;
  }
  return false;
}

frnn_status ck_plan_make(frnn_ctx *ctx, const frnn_step *s, const chunk_gpu *g, int64_t M, int64_t N,
                         int sm, int max_shared, ck_plan *out) {
  memset(out, 0, sizeof *out);
  out->M = M, out->N = N;
  out->nd = g->cf.decay_cls == FRNN_ROW ? (int)N : 1;
  out->col = g->cf.decay_cls == FRNN_COL;
  out->n_sc = count_scalars(s, g->need);
  out->n_sc_adj = count_scalars(g->terms_adj, g->need_adj);
  int n_out = s->n_ports[FRNN_PORT_OUTPUT];
  /* Tuning knobs (measured: docs/BENCHMARKS.md): rows per block, the
   * longest chunk, threads per block, resident blocks per SM. */
  const char *env = getenv("FRNN_CK_BM");
  int bm_env = env && atoi(env) >= 4 ? atoi(env) / 4 * 4 : 0;
  env = getenv("FRNN_CK_L");
  int lmax = env && atoi(env) >= 16 ? atoi(env) : 32; /* 64: the decay gradient's sums cancel more (Mamba-2 grad A 4.8e-6 vs 6e-7 at 16, 64 x 64 float32) */
  env = getenv("FRNN_CK_THREADS");
  bool threads_set = env != NULL; /* then every kernel's, the forward's too */
  out->threads = env && (atoi(env) == 128 || atoi(env) == 256 || atoi(env) == 512 || atoi(env) == 1024) ? atoi(env) : CK_THREADS;
  env = getenv("FRNN_CK_SPLIT_MAX"); /* tests: -1 never splits, a large value always */
  out->split_max = env && *env ? atof(env) : DECAY_SPLIT_MAX;
  /* A scalar decay's ratios are already outside the [L,L] products (one per
   * pair of steps): the split would only save the exps of the forms once
   * per chunk, and its second code path cost the forward registers (H100,
   * Mamba-2 fw 1.63 -> 2.11 ms with it). */
  out->split = out->nd > 1 && out->split_max >= 0;
  /* Measured slower (H100 call 16: GLA fw+bw 6.63 -> 8.17 ms; spills and
   * shuffles), except RWKV-6 (9.40 -> 9.22): a knob, off by default. */
  env = getenv("FRNN_CK_SPLITK");
  out->split_k = env && strcmp(env, "1") == 0;
  env = getenv("FRNN_CK_MMA"); /* 0: every product on CUDA cores */
  bool mma_on = !(env && strcmp(env, "0") == 0);
  /* FRNN_CK_TF32=1: one TF32 product instead of three (operands rounded
   * to 10 bits of mantissa, as PyTorch's allow_tf32): faster, and no longer
   * float32's precision (SPEC: all arithmetic in float32), so never the
   * default; bfloat16 tensors' 1e-2 bound is what it can be held to. */
  env = getenv("FRNN_CK_TF32");
  out->tf32 = mma_on && env && strcmp(env, "1") == 0;
  /* sm_90: each product once in float64 on the tensor cores (mma .f64)
   * instead of three TF32 products: exact operands and a float64 sum, and
   * faster (H100, fw+bw: delta rule 8.19 -> 7.88 ms, Mamba-2 4.49 -> 4.23;
   * Mamba-2's grad A at 64 x 64 float32, T = 1000: 1.9e-5 at worst in 3xTF32,
   * 1.5e-6 in two runs).  FRNN_CK_F64=0 keeps 3xTF32 (the only form before
   * sm_90). */
  env = getenv("FRNN_CK_F64");
  out->f64 = mma_on && !out->tf32 && sm >= 90 && !(env && strcmp(env, "0") == 0);
  /* FRNN_CK_PRODUCTS=bf16x3: each float32 operand as three bfloat16 parts
   * (hi + mid + lo, exact: cg_split_bf16x3) on the bfloat16 tensor cores,
   * 6 products a k-step of 16 summed in float32 by the mma, instead of
   * float64.  Precise enough (the GPU tests' float32 configurations pass
   * under it, worst 9.1e-6) but slower: the splits' integer and float
   * instructions cost more than the float64 tensor rate does (H100,
   * seventeenth session, fw+bw: delta rule 5.28 -> 8.26 ms, GLA 3.34 ->
   * 4.48).  "bf16x3,PA,PB" is a timing probe (results wrong below 3): A's
   * and B's first PA and PB parts alone. */
  env = getenv("FRNN_CK_PRODUCTS");
  out->bf16x3 = mma_on && !out->tf32 && sm >= 80 && env && strncmp(env, "bf16x3", 6) == 0;
  out->bf16_parts[0] = out->bf16_parts[1] = 3;
  if (out->bf16x3 && env[6] == ',') sscanf(env + 7, "%d,%d", &out->bf16_parts[0], &out->bf16_parts[1]);
  for (int i = 0; i < 2; i++) out->bf16_parts[i] = out->bf16_parts[i] < 1 ? 1 : out->bf16_parts[i] > 3 ? 3 : out->bf16_parts[i];
  /* A measurement knob: where f64, these product sites (FRNN_CK_SKIP's
   * bits) in 3xTF32 instead.  Every mask measured was slower (H100, twelfth
   * session call 6: the end state's products alone, delta rule fw 1.89 ->
   * 2.05 ms; every site, GLA fw+bw 3.76 -> 5.66). */
  env = getenv("FRNN_CK_TF32X3_SITES");
  out->tf32x3_sites = env && *env ? strtoul(env, NULL, 0) : 0;
  /* The decay gradient's starting sum over the rows (run_sum_row): its
   * float32 rounding failed a rare seed, its float64 conversions cost 1.5%;
   * split, the default on every target, has float64's precision for about
   * half that (twelfth session, call 1). */
  env = getenv("FRNN_CK_RUN_SUM");
  static const char *const run_sums[] = {"f32", "f64", "split", "dot2"};
  out->run_sum = CK_RUN_SPLIT;
  for (int i = 0; env && i < 4; i++)
    if (strcmp(env, run_sums[i]) == 0) out->run_sum = i;
  /* The float64 products' operand conversions (cvt.f64.f32 runs on the XU
   * pipe, the busiest in the rank-one backwards: 47% of the delta rule's):
   * A's by integer operations measured slower but on RWKV-7's backward
   * (fifteenth session, call 2: delta rule fw+bw 5.54 -> 5.74 ms, RWKV-7
   * 9.26 -> 9.10); none at all (the probe, results wrong) 5.31 and 8.18. */
  env = getenv("FRNN_CK_CVT");
  static const char *const cvts[] = {"f2f", "int", "none"};
  out->cvt = CK_CVT_F2F;
  for (int i = 0; env && i < 3; i++)
    if (strcmp(env, cvts[i]) == 0) out->cvt = i;
  /* A backward with more than four (term, update) pairs' worth of product
   * code (pairs, twice with the decay split's second path) is tight on
   * registers: at 255 already, more unrolling or spreading spilled. */
  int paths = out->split ? 2 : 1, pairs = g->n_lin * g->n_upd;
  bool tight = paths * pairs > 4;
  /* 16 x 8 tiles a warp at most: 3xTF32 8 (H100, 256 threads: GLA fw+bw
   * 5.16 ms at 4, 5.10 at 8; at 512 threads 8 spilled); float64 4, its
   * accumulators being twice the registers (delta rule 7.88 -> 7.78 ms,
   * RWKV-7 10.46 -> 10.16), and 2 in a tight backward (RWKV-7's then
   * spills nothing, 12 bytes at 4) */
  env = getenv("FRNN_CK_MMA_TILES");
  out->mma_tiles = env && atoi(env) >= 1 && atoi(env) <= 8 ? atoi(env) : !out->f64 ? 8 : tight ? 2 : 4;
  /* The forward's own shape: in float64, 2 tiles a warp (more warps on the
   * [L,N] products); and 512 threads where no rank-one term's solve adds
   * to the registers (H100 fw ms at 512 threads: Mamba-2 1.09 -> 1.01,
   * GLA 1.01 -> 0.95; delta rule 2.21 -> 2.43).  The backward stays at 256:
   * at 512 its registers spill. */
  out->mma_tiles_fwd = env && *env ? out->mma_tiles : out->f64 ? 2 : out->mma_tiles;
  /* run_mma's larger blocks for the [M,N] products (FRNN_CK_MMA_BIG: tiles,
   * 0 or 1 never; "f,b" the forward's and the backward's).  The backward's
   * where it is not tight on registers: no decay split's second path, no
   * rank-one term beside a decay (where they add spills nonetheless,
   * pipeline.c's backward_without_spills drops them).  H100 fw+bw
   * (fifteenth session, call 3; ms without -> with): Mamba-2 3.86 -> 3.71,
   * retention 3.46 -> 3.44, delta rule 5.53 -> 5.51; but the gated delta
   * rule 7.08 -> 7.30 (rank-one and decay), GLA 3.47 -> 3.50, RWKV-6 5.16
   * -> 5.22, GSA's values 3.47 -> 3.49 (split).  Not the forward's: fw
   * delta rule 1.44 -> 1.50 ms, gated 1.62 -> 1.64, RWKV-7 1.81 -> 1.78. */
  env = getenv("FRNN_CK_MMA_BIG");
  bool roomy = !out->split && !(g->rank_lin >= 0 && g->n_ld > 0);
  out->mma_big_fwd = 0, out->mma_big = out->f64 && roomy ? 8 : 0;
  if (env && *env) out->mma_big_fwd = out->mma_big = atoi(env);
  if (env && strchr(env, ',')) out->mma_big = atoi(strchr(env, ',') + 1);
  out->mma_big_fwd = out->mma_big_fwd > 8 ? 8 : out->mma_big_fwd;
  out->mma_big = out->mma_big > 8 ? 8 : out->mma_big;
  out->threads_fwd = threads_set || !out->f64 || g->rank_lin >= 0 ? out->threads : 512;
  /* FRNN_CK_THREADS_FWD: the forward's alone.  512 for the rank-one
   * steps with the phased forward (thirteenth session, call 3; fw ms):
   * delta rule 1.660 -> 1.818, RWKV-7 1.906 -> 2.361, gated 1.962 -> 1.916
   * (its fw+bw the same): 256 stays. */
  env = getenv("FRNN_CK_THREADS_FWD");
  if (env && (atoi(env) == 128 || atoi(env) == 256 || atoi(env) == 512)) out->threads_fwd = atoi(env);
  /* The backward's products spread over the warps, their k-loops unrolled
   * (H100, fw+bw: delta rule 11.27 -> 9.26 ms, GLA 4.18 -> 4.05), except
   * in a tight backward, where it spilled (RWKV-7: 12.70 -> 14.55 ms).
   * Unrolled in float64: the forward's 16 (H100, fw ms, 4 -> 8: delta rule
   * 2.29 -> 2.22, RWKV-7 2.27 -> 2.20; twelfth session, 8 -> 16: every
   * chunked example 1-4.5% faster, Mamba-2 1.051 -> 1.006, delta rule 1.922
   * -> 1.885), the backward's 8 (Mamba-2 fw+bw 4.10 -> 4.08; 16 gained
   * nothing but RWKV-6's 2%), except in the backward of a rank-one term's
   * solve (gated 8.89 -> 9.33 at 8, RWKV-7 10.13 -> 10.92; at 16 9.65 and
   * 14.19) */
  env = getenv("FRNN_CK_MMA_UNROLL"); /* "u" for both kernels, or "u_fwd,u_bwd" */
  bool set = env && *env;
  int unroll = set && atoi(env) >= 1 && atoi(env) <= 16 ? atoi(env) : 4;
  const char *comma = set ? strchr(env, ',') : NULL; /* "u," leaves the backward's default */
  bool set_b = set && (!comma || (atoi(comma + 1) >= 1 && atoi(comma + 1) <= 16));
  out->unroll_fwd = set ? unroll : out->f64 ? 16 : 4;
  out->unroll_bwd = set_b ? (comma ? atoi(comma + 1) : unroll) : tight ? 1 : out->f64 && g->rank_lin < 0 ? 8 : 4;
  env = getenv("FRNN_CK_SPREAD");
  out->spread = env && *env ? strcmp(env, "0") != 0 : !tight;
  out->spread_fwd = env && *env ? strcmp(env, "0") != 0 : true;
  /* The term arrays, the scalar pass, the outputs' stores and the
   * backward's outside factors: each thread's elements unrolled, their
   * global loads in flight at once (elems_first).  In a loop each element
   * waited on its own loads from L2. */
  env = getenv("FRNN_CK_UNROLL_LOADS");
  out->unroll_loads_fwd = !(env && *env == '0');
  comma = env ? strchr(env, ',') : NULL;
  out->unroll_loads_bwd = comma ? comma[1] != '0' : out->unroll_loads_fwd;
  /* The forward's stores of a chunk's first state: elements a thread read
   * from shared memory before they are stored, a group at a time (1: one,
   * under its guard).  H100, fw / fw+bw ms, 1 -> 4 (fourteenth session,
   * call 7): delta rule 1.437 / 5.605 -> 1.440 / 5.514, gated 1.632 / 7.449
   * -> 1.624 / 7.337, RWKV-7 1.767 / 9.422 -> 1.809 / 9.331; the steps
   * without a rank-one term gain nothing in fw+bw and their forwards lose
   * (GLA 0.894 -> 0.908, retention 0.864 -> 0.887: at 128 registers,
   * ptxas spills more, retention 24 -> 64 bytes).  8: no better.  So 4 for
   * a step with a rank-one term, else 1. */
  env = getenv("FRNN_CK_CKPT_GROUP");
  out->ckpt_group = env && atoi(env) >= 1 && atoi(env) <= 16 ? atoi(env) : g->rank_lin >= 0 ? 4 : 1;
  if (!out->unroll_loads_fwd) out->ckpt_group = 1;
  /* The backward's copies of the chunk's first state and rank-one columns:
   * 1, issued before its term arrays are made (else after); 2, the
   * previous chunk's asked of L2 too.  H100, fw+bw ms (fourteenth session,
   * call 3), 0 / 1 / 3: delta rule 5.91 / 5.60 / 5.60, GLA 3.56 / 3.47 /
   * 3.54, Mamba-2 3.93 / 3.86 / 3.83, RWKV-7 9.46 / 9.42 / 9.70; the gated
   * delta rule 7.46 / 7.67 / 7.68 and RWKV-6 5.11 / 5.15 / 5.20 lose
   * (ptxas: the gated delta rule's backward spills 16 bytes at 1, none at
   * 0).  1 it is. */
  env = getenv("FRNN_CK_EARLY_LOADS");
  out->early_loads = env && *env ? atoi(env) & 3 : 1;
  /* Those copies cost the backwards as much as their largest products
   * (left out, FRNN_CK_SKIP bit 23: H100 fw+bw delta rule 5.44 -> 5.00 ms,
   * gated 6.86 -> 6.48; sixteenth session, call 2).  The cost was their
   * instructions, one a float: 16 bytes a copy (wide_copies) took the delta
   * rule to 5.27 (call 4).  Waiting for the state's copy only before the
   * products through it (late_state_wait) gained 0-0.5%: kept, as it
   * overlaps more. */
  env = getenv("FRNN_CK_WIDE_COPIES");
  out->wide_copies = !(env && strcmp(env, "0") == 0);
  env = getenv("FRNN_CK_STATE_WAIT");
  out->late_state_wait = !(env && strcmp(env, "0") == 0);
  env = getenv("FRNN_CK_BW_PAIRS");
  bool all_pairs = g->n_lin * g->n_upd > 1 && !(env && strcmp(env, "0") == 0);
  env = getenv("FRNN_CK_MINB");
  out->min_blocks = env && atoi(env) >= 1 && atoi(env) <= 4 ? atoi(env) : 1;
  /* The chain kernel waits on global loads (Mamba-2: long scoreboard 15.8
   * cycles an instruction, 47% occupancy at 62 registers, 1.0 TB/s): more
   * resident blocks, fewer registers each (ptxas: 40 at 6, no spills). */
  /* The end state's products (one per update) and the gradient before the
   * chunk's (one per term) each summed in one accumulator, the state read
   * and written once; FRNN_CK_SUM_PARTS=0: a product and an epilogue each. */
  env = getenv("FRNN_CK_SUM_PARTS");
  out->sum_parts = !(env && strcmp(env, "0") == 0);
  /* The lean backward mode stores a state every 4 chunks, and the backward
   * recomputes a window's others (the forward again, without outputs) before
   * it runs the window: about a quarter of the checkpoints' memory for
   * about 3/4 of a forward more. */
  env = getenv("FRNN_CK_CKPT_EVERY");
  out->ckpt_every = env && atoi(env) >= 1 ? atoi(env) : ctx->backward_mode == FRNN_BACKWARD_LEAN ? 4 : 1;
  /* The backward in windows of whole chunks: the terms' per-step
   * gradients, the largest arrays after the checkpoints (delta rule 0.67 GB
   * at the benchmark sizes), then need a window's steps.  Not by default:
   * windows of 128 steps cost the H100 0.4-0.5 ms fw+bw (delta rule 7.38 ->
   * 7.79, Mamba-2 4.04 -> 4.57; each window's launches and their tails).
   * Where states are sparse (the lean mode), windows of 64 steps inside a
   * stored state's chunks: Mamba-2 0.639 -> 0.605 GB for 5.47 -> 5.85 ms
   * (H100, eleventh session; 32 steps: 0.588 GB, 6.97 ms). */
  env = getenv("FRNN_CK_WINDOW");
  out->window_steps = env && *env ? atoi(env) : out->ckpt_every > 1 ? 64 : 0;
  if (out->window_steps < 0) out->window_steps = 0;
  /* The chain kernel's loads unrolled as the other kernels' (elems_first,
   * warp_sum), FRNN_CK_CHAIN_UNROLL: 0 none, 1 its scalar pass's sums over
   * N or M (a lane's elements), 2 its elementwise passes too. */
  env = getenv("FRNN_CK_CHAIN_UNROLL");
  out->chain_unroll = env && *env ? (atoi(env) < 0 ? 0 : atoi(env) > 2 ? 2 : atoi(env)) : 2;
  env = getenv("FRNN_CK_CHAIN_MINB");
  out->chain_min_blocks = env && atoi(env) >= 1 && atoi(env) <= 8 ? atoi(env) : 6;
  /* Every row of a head in one block where it fits, else 64: the work
   * that does not depend on the rows (the terms, the [L,L] products) is
   * then done once per head, not once per block of rows (H100, GLA fw+bw
   * 14.5 -> 9.9 ms).  Then the longest chunk that fits: fewer chunks, fewer
   * stored states. */
  int bms[2] = {bm_env ? bm_env : (int)M, 64};
  for (int c = 0; c < 2; c++) {
    out->BM = (int)(M < bms[c] ? M : bms[c]);
    out->MB = (int)((M + out->BM - 1) / out->BM);
    out->Mp = round4(out->BM), out->Np = round4(N);
    /* Tensor cores where every product's sizes are multiples of the mma
     * tile's (16 x 8 x 8; chunks of 16 or 32 steps). */
    out->mma = mma_on && out->Mp % 16 == 0 && out->Np % 8 == 0;
    /* Row strides of the shared arrays.  The 4 x 4 thread tiles: odd, so
     * the rows a warp's lanes read side by side fall in distinct banks.
     * mma: 4 mod 32, so a fragment's 8 rows x 4 columns do (row-major
     * operands; the transposed ones then meet 2-way conflicts). */
    out->ss = out->sn = out->mma ? stride_mma(out->Np) : out->Np + 1;
    out->sm = out->mma ? stride_mma(out->Mp) : out->Mp + 1;
    out->sd = out->col ? out->sm : out->nd == 1 ? 1 : out->sn;
    /* FRNN_CK_FUSE=1, one block a head: the chain to the inputs runs in
     * the backward, from a chunk-sized scratch that stays in L2 (no terms'
     * gradients in DRAM).  Measured slower (H100, GLA fw+bw 6.6 -> 9.0 ms:
     * the chain then sits on the sequential path of 256 blocks) and, since
     * the tenth session, no leaner than the lean mode's windows (Mamba-2
     * 0.92 GB, 6.6 ms against 0.66 GB, 5.5 ms): a knob only. */
    const char *fz = getenv("FRNN_CK_FUSE");
    out->fused = out->MB == 1 && fz && strcmp(fz, "1") == 0;
    if (out->fused) out->ckpt_every = 1; /* the fused chain runs the whole sequence in one window */
    /* A row decay's log decay gradient in the chain kernel (chain_log_decay):
     * the backward's phase cost RWKV-7 1.70 ms of 8.15 on the H100 (one block
     * an SM there, the phase's latency exposed, and its registers' spills
     * elsewhere); the chain runs it at six blocks an SM, from the same
     * terms' gradients it reads anyway.  One block of rows (the chain reads
     * RUN from part 0). */
    env = getenv("FRNN_CK_LD_CHAIN");
    out->ld_in_chain = !(env && strcmp(env, "0") == 0) && !out->fused && out->MB == 1 && g->n_ld > 0 && !out->col &&
                       out->nd > 1;
    /* Its steps unrolled 4 times (their loads in flight together) where a
     * step has two terms, one lin and one update; kept rolled with more.
     * H100 fw+bw, rolled -> 4: GLA 3.438 -> 3.274 ms, GSA's values 3.434 ->
     * 3.270, RWKV-6 4.46 both; RWKV-7 (four terms) 6.80 -> 7.09, and 7.08
     * at 2 and 8 (twenty-first session, calls 5-6). */
    out->ld_chain_unroll = env && atoi(env) > 1 ? atoi(env) : g->n_lin + g->n_upd <= 2 ? 4 : 1;
    for (int L = lmax >= 64 ? 64 : lmax >= 32 ? 32 : 16; L >= 16; L /= 2)
      if (fits(out, g, n_out, L, max_shared, all_pairs)) {
        /* A rank-one step with a decay, its pairs at once: the backward's
         * k-loops unrolled twice (the gated delta rule spilled 68 bytes at 4:
         * H100 fw+bw 8.24 -> 7.94 ms at 1; the delta rule keeps 4, 6.28
         * against 6.72 at 1; thirteenth session, call 6.  Fifteenth
         * session, call 5, at 1, 2 and 4: gated 7.05, 6.86, 7.44 ms; RWKV-7
         * 9.26, 9.08, 9.01).  Four times where the log decay's gradient
         * went to the chain (ld_in_chain, RWKV-7; twenty-first session, call
         * 8: 6.80 -> 6.59 ms at 4). */
        if (out->bw_pairs && g->rank_lin >= 0 && g->n_ld > 0 && !set_b) out->unroll_bwd = out->ld_in_chain ? 4 : 2;
        return FRNN_OK;
      }
    if (bm_env) break;
  }
  return diag_fail(ctx, FRNN_E_UNSUPPORTED,
                   "step '%s': no chunked kernels: M = %lld, N = %lld need %u bytes of shared memory "
                   "per block even in chunks of 16 steps (at most %d)",
                   s->name, (long long)M, (long long)N, out->bwd_smem, max_shared);
}

int64_t ck_window_chunks(const ck_plan *p, int64_t n_chunks) {
  if (p->fused) return n_chunks;
  /* sparse states: at most a stored state's chunks (a recompute's) */
  int64_t most = p->ckpt_every > 1 && p->ckpt_every < n_chunks ? p->ckpt_every : n_chunks;
  if (p->window_steps == 0) return most;
  int64_t w = p->window_steps / p->L;
  return w < 1 ? 1 : w < most ? w : most;
}

int64_t ck_rank_floats(const ck_plan *p, const chunk_gpu *g) {
  return g->rank_lin >= 0 ? (int64_t)p->L * (p->M + p->L) : 0;
}

/* Seed q holds a scalar a step (a scalar decay's log decay gradient, s's
 * of merged rows: CK_SEED_S) that the backward forms as a sum over the
 * columns and stores whole (one float a step and block part, where it
 * was N: the gated delta rule's two were 2 x 128 MB written by the
 * backward and read by the chain at B=8 T=1024 H=32). */
static bool seed_summed_over_n(const chunk_gpu *g, int q) {
  return (g->seed_kind[q] == CK_SEED_LD || g->seed_kind[q] == CK_SEED_S) && g->seed_cls[q] == FRNN_SCALAR;
}
int64_t ck_seed_width(const ck_plan *p, const chunk_gpu *g, int q) {
  if (g->seed_cls[q] == FRNN_COL) return p->M;
  return seed_summed_over_n(g, q) ? 1 : p->N;
}

/* ------------------------------------------------------ kernel building */
typedef struct ck ck;

/* Where the value of an input port of the graph being evaluated comes from. */
enum { LEAF_TENSOR, LEAF_CONST };
typedef struct leaf {
  int kind;
  bool nullable;           /* the pointer may be null: the value is then 0 */
  LLVMValueRef ptr, st[5]; /* global pointer; strides b, t, h, m, n (i64) */
  enum tdtype dt;
  int parts;               /* > 1: the sum of this many copies, part_stride apart */
  LLVMValueRef part_stride;
  int64_t sum_width;       /* > 0: a scalar stored in this many slots a step (ck_seed_width): their sum.
                              Now always 1 (the backward sums the columns): a plain load would do, a
                              change of the chain's PTX left for a session with device time */
  double value;            /* LEAF_CONST */
} leaf;

typedef struct ev {
  ck *k;
  const frnn_step *g;
  const uint8_t *need;
  leaf leaves[FRNN_MAX_PORTS + CK_MAX_SEEDS + 4];
  int *slot;          /* per node: its row in SC (materialised scalars), or -1 */
  int sc;             /* SC's offset in shared floats */
  LLVMValueRef *sreg; /* scalar pass: per node, this step's value (NULL: none yet) */
  LLVMValueRef *memo; /* per node: the value at the element being evaluated */
  bool in_scalar_pass;
} ev;

struct ck {
  codegen *cg;
  const ck_plan *p;
  const chunk_gpu *g;
  const lower_spec *spec;
  const frnn_step *s;
  LLVMValueRef smem;                 /* dynamic shared floats */
  LLVMValueRef tid, lane, warp;      /* i32 */
  LLVMValueRef b, h, mb, B, T, H;    /* i64 */
  LLVMValueRef t0, c;                /* i64: the chunk's first step, its index */
  LLVMValueRef t_lo, Tw;             /* i64: the backward window's first step and its steps
                                        (the seeds' arrays hold the window's: ck_window_chunks) */
  LLVMBasicBlockRef entry;
  const ck_layout *lay;
  int threads, tiles;                /* this kernel's threads a block, mma tiles a warp at most */
  ev *e;                             /* the evaluator of the kernel's graph */
  ev *ea;                            /* fused backward: the term prologue's adjoint's */
  LLVMValueRef seed_ptr[CK_MAX_SEEDS]; /* each seed's array in the workspace */
  LLVMValueRef fast;                 /* i1, per chunk: decay_split applied */
  LLVMValueRef flag;                 /* a guarded module's flag (lower_spec.guard), or NULL */
  bool unroll_loads;                 /* the elementwise passes unrolled (elems_first, scalar_pass):
                                        the forward's and backward's, the chain kernel's where its
                                        chain_unroll is 2 */
  bool unroll_sums;                  /* warp_sum's lanes' elements unrolled (the chain kernel's
                                        where chain_unroll, the others' where unroll_loads) */
  int rot;                           /* the warp the next spread product starts on (run_mma) */
  /* Where the rank-one update is merged into another (chunk_gpu.merge_into)
   * and every pair's matrix has an array of its own: the pairs against b
   * from those against the merged update's row (b = s r: A_qb = A_qr
   * diag(s), stored by epi_A beside A_qr, not formed), and the forward's
   * outputs through the merged column (merge_pairs_of) */
  bool merge_pairs;
};

static LLVMValueRef i32c(ck *k, int64_t v) { return cg_i32(k->cg, v); }
static LLVMValueRef i64c(ck *k, int64_t v) { return cg_i64(k->cg, v); }
static LLVMValueRef sext(ck *k, LLVMValueRef v) { return LLVMBuildSExt(k->cg->b, v, k->cg->t_i64, ""); }
static LLVMValueRef add(ck *k, LLVMValueRef a, LLVMValueRef b) { return cg_add(k->cg, a, b); }
static LLVMValueRef mul(ck *k, LLVMValueRef a, LLVMValueRef b) { return cg_mul(k->cg, a, b); }
static LLVMValueRef sub(ck *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(k->cg->b, a, b, ""); }
static LLVMValueRef slt(ck *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(k->cg->b, LLVMIntSLT, a, b, "");
}
static LLVMValueRef sle(ck *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(k->cg->b, LLVMIntSLE, a, b, "");
}
static LLVMValueRef and1(ck *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAnd(k->cg->b, a, b, ""); }
static LLVMValueRef fzero(ck *k) { return cg_f32(k->cg, 0.0); }
static LLVMValueRef f64(ck *k, LLVMValueRef x) { return LLVMBuildFPExt(k->cg->b, x, k->cg->t_f64, ""); }

/* A stack slot in the entry block (mem2reg makes it a register). */
static LLVMValueRef slot_of(ck *k, LLVMTypeRef ty) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(k->cg->b);
  LLVMValueRef first = LLVMGetFirstInstruction(k->entry);
  if (first) LLVMPositionBuilderBefore(k->cg->b, first);
  else LLVMPositionBuilderAtEnd(k->cg->b, k->entry);
  LLVMValueRef a = LLVMBuildAlloca(k->cg->b, ty, "");
  LLVMPositionBuilderAtEnd(k->cg->b, here);
  return a;
}

/* for (var = from; var < to; var += step), i32 or i64 as `from` is. */
typedef struct cloop {
  LLVMValueRef var, step;
  int unroll; /* 0: LLVM's choice; 1: kept rolled (unrolled, its loads all go first: registers); n: n times */
  LLVMBasicBlockRef cond, body, after;
} cloop;
static cloop loop_open(ck *k, LLVMValueRef from, LLVMValueRef to, LLVMValueRef step) {
  codegen *cg = k->cg;
  cloop l = {.var = slot_of(k, LLVMTypeOf(from)), .step = step};
  cg_store(cg, from, l.var);
  l.cond = cg_block(cg, "for"), l.body = cg_block(cg, "body"), l.after = cg_block(cg, "done");
  cg_br(cg, l.cond);
  cg_at(cg, l.cond);
  cg_cond_br(cg, slt(k, cg_load(cg, LLVMTypeOf(from), l.var), to), l.body, l.after);
  cg_at(cg, l.body);
  return l;
}
static LLVMValueRef loop_var(ck *k, const cloop *l) {
  return cg_load(k->cg, LLVMTypeOf(l->step), l->var);
}
static void loop_close(ck *k, cloop *l) {
  cg_store(k->cg, add(k, loop_var(k, l), l->step), l->var);
  cg_br(k->cg, l->cond);
  if (l->unroll) cg_unroll(k->cg, LLVMGetLastInstruction(LLVMGetInsertBlock(k->cg->b)), l->unroll);
  cg_at(k->cg, l->after);
}

/* if (c) { ... } */
static LLVMBasicBlockRef if_open(ck *k, LLVMValueRef c) {
  LLVMBasicBlockRef yes = cg_block(k->cg, "then"), no = cg_block(k->cg, "endif");
  cg_cond_br(k->cg, c, yes, no);
  cg_at(k->cg, yes);
  return no;
}
static void if_close(ck *k, LLVMBasicBlockRef no) {
  cg_br(k->cg, no);
  cg_at(k->cg, no);
}

/* Shared float at offset `off` + idx (i32). */
static LLVMValueRef sh(ck *k, int off, LLVMValueRef idx) {
  return cg_gep(k->cg, k->cg->t_f32, k->smem, add(k, i32c(k, off), idx));
}
static LLVMValueRef sh_ld(ck *k, int off, LLVMValueRef idx) { return cg_load(k->cg, k->cg->t_f32, sh(k, off, idx)); }
static void sh_st(ck *k, int off, LLVMValueRef idx, LLVMValueRef v) { cg_store(k->cg, v, sh(k, off, idx)); }

/* ------------------------------------------------------------ tensors */
typedef struct gtensor {
  LLVMValueRef ptr, st[5];
  enum tdtype dt;
} gtensor;

static gtensor tensor_at(ck *k, int first, enum tdtype dt) {
  gtensor t = {.ptr = cg_param(k->cg, first), .dt = dt};
  for (int d = 0; d < 5; d++) t.st[d] = cg_param(k->cg, first + 1 + d);
  return t;
}
static LLVMValueRef is_null(ck *k, LLVMValueRef ptr) { return LLVMBuildIsNull(k->cg->b, ptr, ""); }
/* Element offset of (b, t, h, i, j) (i, j may be NULL: index 0). */
static LLVMValueRef toff(ck *k, LLVMValueRef const *st, LLVMValueRef t, LLVMValueRef i, LLVMValueRef j) {
  LLVMValueRef o = add(k, mul(k, k->b, st[0]), mul(k, k->h, st[2]));
  if (t) o = add(k, o, mul(k, t, st[1]));
  if (i) o = add(k, o, mul(k, i, st[3]));
  if (j) o = add(k, o, mul(k, j, st[4]));
  return o;
}

/* ---------------------------------------------------------- evaluation */
static LLVMValueRef leaf_load(ev *e, const leaf *lf, int cls, LLVMValueRef t, LLVMValueRef i, LLVMValueRef j) {
  ck *k = e->k;
  codegen *cg = k->cg;
  if (lf->kind == LEAF_CONST) return cg_f32(cg, lf->value);
  LLVMValueRef res = NULL;
  LLVMBasicBlockRef no = NULL;
  if (lf->nullable) {
    res = slot_of(k, cg->t_f32);
    cg_store(cg, fzero(k), res);
    no = if_open(k, LLVMBuildNot(cg->b, is_null(k, lf->ptr), ""));
  }
  LLVMValueRef off = toff(k, lf->st, t, CLASS_HAS_M(cls) ? i : NULL, CLASS_HAS_N(cls) ? j : NULL);
  LLVMValueRef v = NULL;
  for (int q = 0; q < (lf->parts > 1 ? lf->parts : 1); q++) {
    LLVMValueRef o = q ? add(k, off, mul(k, i64c(k, q), lf->part_stride)) : off;
    LLVMValueRef x = cg_load_elem(cg, lf->ptr, o, lf->dt);
    v = v ? cg_fadd(cg, v, x) : x;
  }
  if (!lf->nullable) return v;
  cg_store(cg, v, res);
  if_close(k, no);
  return cg_load(cg, cg->t_f32, res);
}

/* Step u (i32) of the chunk, global step t (i64, clamped to T-1): the value
 * of node v at row i, column j (i64; NULL where v's class has none). */
static LLVMValueRef ev_at(ev *e, uint32_t v, LLVMValueRef u, LLVMValueRef t, LLVMValueRef i, LLVMValueRef j) {
  ck *k = e->k;
  codegen *cg = k->cg;
  const node *n = &e->g->nodes[v];
  if (n->op == FRNN_OP_CONST) return cg_f32(cg, n->value);
  if (n->cls == FRNN_SCALAR) {
    if (e->sreg && e->sreg[v]) return e->sreg[v];
    if (!e->in_scalar_pass && e->slot[v] >= 0)
      return sh_ld(k, e->sc, add(k, mul(k, i32c(k, e->slot[v]), i32c(k, k->p->L)), u));
  } else if (e->memo[v]) {
    return e->memo[v];
  }
  LLVMValueRef r = NULL;
  switch ((frnn_op)n->op) {
  case FRNN_OP_INPUT: r = leaf_load(e, &e->leaves[n->slot], n->cls, t, i, j); break;
  case FRNN_OP_STATE: r = fzero(k); break; /* never needed: terms do not depend on S */
  case FRNN_OP_BCAST: r = ev_at(e, n->arg[0], u, t, i, j); break;
  case FRNN_OP_SUM:
  case FRNN_OP_SUM_M:
    cg_error(cg, "chunked kernels: a sum (node %u) was not computed in the scalar pass", v);
    r = fzero(k);
    break;
  default: {
    const op_info *oi = op_get((frnn_op)n->op);
    LLVMValueRef a[3] = {NULL, NULL, NULL};
    for (int q = 0; q < oi->arity; q++) a[q] = ev_at(e, n->arg[q], u, t, i, j);
    double ex = n->op == FRNN_OP_POW ? e->g->nodes[n->arg[1]].value : 0;
    r = lower_elementwise(cg, (frnn_op)n->op, a[0], a[1], a[2], ex);
  }
  }
  if (n->cls == FRNN_SCALAR) {
    if (e->sreg) e->sreg[v] = r;
  } else {
    e->memo[v] = r;
  }
  return r;
}

static void memo_clear(ev *e) { memset(e->memo, 0, e->g->n_nodes * sizeof *e->memo); }

static LLVMValueRef clamp_t(ck *k, LLVMValueRef u) {
  LLVMValueRef t = add(k, k->t0, sext(k, u));
  LLVMValueRef last = sub(k, k->T, i64c(k, 1));
  return cg_select(k->cg, slt(k, t, last), t, last);
}

/* The sum over e < E (lanes of a warp, e = lane, lane + 32, ...) of f(e),
 * left in every lane. */
static LLVMValueRef warp_sum(ev *e, int E, uint32_t v, bool leaf_sum, LLVMValueRef u, LLVMValueRef t) {
  ck *k = e->k;
  codegen *cg = k->cg;
  /* unrolled (unroll_loads), no branch: a lane's loads all in flight at
   * once (past E: the last element read, 0 added); else a loop */
  const node *n = &e->g->nodes[v];
  LLVMValueRef s = fzero(k), acc = NULL;
  cloop l;
  if (!k->unroll_sums) {
    acc = slot_of(k, cg->t_f32);
    cg_store(cg, fzero(k), acc);
    l = loop_open(k, k->lane, i32c(k, E), i32c(k, 32));
  }
  for (int r = 0; r < (k->unroll_sums ? (E + 31) / 32 : 1); r++) {
    memo_clear(e);
    LLVMValueRef x = k->unroll_sums ? add(k, k->lane, i32c(k, 32 * r)) : loop_var(k, &l);
    LLVMValueRef in = k->unroll_sums ? slt(k, x, i32c(k, E)) : LLVMConstInt(cg->t_i1, 1, 0);
    x = sext(k, cg_select(cg, in, x, i32c(k, E - 1)));
    LLVMValueRef val;
    if (leaf_sum) {
      val = leaf_load(e, &e->leaves[n->slot], FRNN_ROW, t, NULL, x);
    } else {
      bool over_m = n->op == FRNN_OP_SUM_M;
      val = ev_at(e, n->arg[0], u, t, over_m ? x : NULL, over_m ? NULL : x);
    }
    s = cg_fadd(cg, s, (E % 32 && r == E / 32) ? cg_select(cg, in, val, fzero(k)) : val);
  }
  if (!k->unroll_sums) {
    cg_store(cg, cg_fadd(cg, cg_load(cg, cg->t_f32, acc), s), acc);
    loop_close(k, &l);
    s = cg_load(cg, cg->t_f32, acc);
  }
  memo_clear(e);
  return cg_sum_lanes_f32(cg, s, 32);
}

/* Every materialised scalar of the chunk's steps into SC: a warp per step. */
static void scalar_pass(ev *e) {
  ck *k = e->k;
  codegen *cg = k->cg;
  const frnn_step *g = e->g;
  int L = k->p->L;
  bool any = false;
  for (uint32_t v = 0; v < g->n_nodes; v++) any |= e->slot[v] >= 0;
  if (!any) return;
  LLVMValueRef *sreg = calloc(g->n_nodes, sizeof *sreg);
  if (!sreg) {
    cg_error(cg, "out of memory");
    return;
  }
  /* A warp a step, the warps' steps unrolled: every step's values first
   * (their loads in flight at once; a step past L evaluates step L-1),
   * then lane 0 of each stores them. */
  int warps = k->threads / 32, reps = k->unroll_loads ? (L + warps - 1) / warps : 1;
  cloop l;
  if (!k->unroll_loads) l = loop_open(k, k->warp, i32c(k, L), i32c(k, warps));
  LLVMValueRef *vals = calloc((size_t)reps * g->n_nodes, sizeof *vals);
  if (!vals) {
    free(sreg);
    cg_error(cg, "out of memory");
    return;
  }
  e->in_scalar_pass = true;
  for (int r = 0; r < reps; r++) {
    LLVMValueRef u = k->unroll_loads ? add(k, k->warp, i32c(k, r * warps)) : loop_var(k, &l);
    u = cg_select(cg, slt(k, u, i32c(k, L)), u, i32c(k, L - 1));
    LLVMValueRef t = clamp_t(k, u);
    memset(sreg, 0, g->n_nodes * sizeof *sreg);
    e->sreg = sreg;
    for (uint32_t v = 0; v < g->n_nodes; v++) {
      if (e->slot[v] < 0) continue;
      const node *n = &g->nodes[v];
      if (n->op == FRNN_OP_SUM || n->op == FRNN_OP_SUM_M) {
        int E = (int)(n->op == FRNN_OP_SUM_M ? k->p->M : k->p->N);
        sreg[v] = warp_sum(e, E, v, false, u, t);
      } else if (n->op == FRNN_OP_INPUT && e->leaves[n->slot].sum_width) {
        sreg[v] = warp_sum(e, (int)e->leaves[n->slot].sum_width, v, true, u, t);
      } else {
        memo_clear(e);
        ev_at(e, v, u, t, NULL, NULL);
      }
    }
    memcpy(vals + (size_t)r * g->n_nodes, sreg, g->n_nodes * sizeof *sreg);
  }
  e->sreg = NULL;
  e->in_scalar_pass = false;
  LLVMBasicBlockRef no = if_open(k, LLVMBuildICmp(cg->b, LLVMIntEQ, k->lane, i32c(k, 0), ""));
  for (int r = 0; r < reps; r++) {
    LLVMValueRef u = k->unroll_loads ? add(k, k->warp, i32c(k, r * warps)) : loop_var(k, &l);
    LLVMBasicBlockRef past = k->unroll_loads && (r + 1) * warps > L ? if_open(k, slt(k, u, i32c(k, L))) : NULL;
    for (uint32_t v = 0; v < g->n_nodes; v++)
      if (e->slot[v] >= 0) sh_st(k, e->sc, add(k, mul(k, i32c(k, e->slot[v]), i32c(k, L)), u), vals[(size_t)r * g->n_nodes + v]);
    if (past) if_close(k, past);
  }
  if_close(k, no);
  if (!k->unroll_loads) loop_close(k, &l);
  free(vals);
  free(sreg);
  memo_clear(e);
}

static bool ev_init(ev *e, ck *k, const frnn_step *g, const uint8_t *need, int sc) {
  memset(e, 0, sizeof *e);
  e->k = k, e->g = g, e->need = need, e->sc = sc;
  e->slot = malloc(g->n_nodes * sizeof *e->slot);
  e->memo = calloc(g->n_nodes, sizeof *e->memo);
  if (!e->slot || !e->memo) return false;
  int n = 0;
  for (uint32_t v = 0; v < g->n_nodes; v++)
    e->slot[v] = need[v] && g->nodes[v].cls == FRNN_SCALAR && g->nodes[v].op != FRNN_OP_CONST ? n++ : -1;
  return true;
}
static void ev_free(ev *e) {
  free(e->slot);
  free(e->memo);
}

/* The step's inputs as leaves (port i: parameters from `first`). */
static void input_leaves(ck *k, ev *e, int first) {
  for (int i = 0; i < k->s->n_ports[FRNN_PORT_INPUT]; i++) {
    gtensor t = tensor_at(k, first + TENSOR_PARAMS * i, k->spec->dt_in[i]);
    leaf *lf = &e->leaves[i];
    *lf = (leaf){.kind = LEAF_TENSOR, .ptr = t.ptr, .dt = t.dt, .parts = 1};
    memcpy(lf->st, t.st, sizeof t.st);
  }
}

/* Shared arrays by (row, column). */
static LLVMValueRef at2(ck *k, LLVMValueRef r, int stride, LLVMValueRef c) {
  return add(k, mul(k, r, i32c(k, stride)), c);
}
/* Bx[row][n]: the running log decay (row u+1 after step u of the chunk). */
static LLVMValueRef bx(ck *k, LLVMValueRef row, LLVMValueRef n) {
  if (k->p->nd == 1) return sh_ld(k, k->lay->Bx, row);
  return sh_ld(k, k->lay->Bx, at2(k, row, k->p->sd, n));
}
/* A decay along M (p->col): Bx[row][m], m a local row of the state. */
static LLVMValueRef bxm(ck *k, LLVMValueRef row, LLVMValueRef m) { return sh_ld(k, k->lay->Bx, at2(k, row, k->p->sd, m)); }
/* No ratios to form: the split made them plain sums, a column decay's ride
 * on C and G, or there is no decay (the delta rule). */
static bool plain(ck *k, bool fast) { return fast || k->p->col || k->g->n_ld == 0; }
static int shift_of(ck *k, int lin) { return k->g->lin_base[lin] == CHUNK_BASE_STATE ? 1 : 0; }
/* Row of Bx for the state output term `lin` of step u reads: l(u) + 1. */
static LLVMValueRef lrow(ck *k, int lin, LLVMValueRef u) { return sub(k, add(k, u, i32c(k, 1)), i32c(k, shift_of(k, lin))); }
static LLVMValueRef fexp(ck *k, LLVMValueRef x) { return cg_exp(k->cg, x); }
static LLVMValueRef lastrow(ck *k) { return i32c(k, k->p->L); }
/* Is column v inside the causal window of step u for term lin: v <= l(u)? */
static LLVMValueRef causal(ck *k, int lin, LLVMValueRef u, LLVMValueRef v) {
  return sle(k, add(k, v, i32c(k, shift_of(k, lin))), u);
}

/* --------------------------------------------------------------- terms */
/* sign * the product's value at (u, t, i, j). */
static LLVMValueRef product(ev *e, const chunk_product *f, double sign, LLVMValueRef u, LLVMValueRef t,
                            LLVMValueRef i, LLVMValueRef j) {
  codegen *cg = e->k->cg;
  LLVMValueRef x = cg_f32(cg, sign);
  for (int q = 0; q < f->n; q++) {
    LLVMValueRef v = ev_at(e, f->node[q], u, t, i, j);
    x = f->divide[q] ? cg_fdiv(cg, x, v) : cg_fmul(cg, x, v);
  }
  return x;
}

static const chunk_out_term *lin_term(const chunk_gpu *g, int k) {
  return &g->cf.output[g->lin_out[k]].term[g->lin_term[k]];
}

/* Is step u (i32) of the chunk within the sequence? */
static LLVMValueRef step_ok(ck *k, LLVMValueRef u) { return slt(k, add(k, k->t0, sext(k, u)), k->T); }
/* Global row of local row m (i32), and whether it is a row of the state. */
static LLVMValueRef grow(ck *k, LLVMValueRef m) {
  return add(k, mul(k, k->mb, i64c(k, k->p->BM)), sext(k, m));
}
static LLVMValueRef row_ok(ck *k, LLVMValueRef m) {
  return and1(k, slt(k, m, i32c(k, k->p->BM)), slt(k, grow(k, m), i64c(k, k->p->M)));
}
/* An element index (i64) past the state's extent read as its last: the
 * padding of the shared arrays is then computed from real elements (and
 * discarded), never loaded from past a tensor's end. */
static LLVMValueRef in_extent(ck *k, LLVMValueRef x, int64_t extent) {
  LLVMValueRef last = i64c(k, extent - 1);
  return cg_select(k->cg, slt(k, x, last), x, last);
}

/* For idx over [0, count) in steps of the block: u = idx / E, x = idx % E. */
typedef struct elems {
  cloop l;
  LLVMValueRef u, x;      /* i32 */
  int rep, reps, count, E; /* unrolled (elems_first): the element a thread is at, of reps */
  bool looped;
  LLVMValueRef valid;     /* i1 where a thread's last element may be past count (it then takes
                             element count - 1 again, no branch), else NULL */
} elems;
static void elems_at(ck *k, elems *r, LLVMValueRef idx) {
  r->u = LLVMBuildUDiv(k->cg->b, idx, i32c(k, r->E), "");
  r->x = LLVMBuildURem(k->cg->b, idx, i32c(k, r->E), "");
  memo_clear(k->e);
}
static elems elems_open(ck *k, int count, int E) {
  elems r = {.count = count, .E = E, .reps = 1, .looped = true};
  r.l = loop_open(k, k->tid, i32c(k, count), i32c(k, k->threads));
  elems_at(k, &r, loop_var(k, &r.l));
  return r;
}
static void elems_close(ck *k, elems *r) {
  memo_clear(k->e);
  loop_close(k, &r->l);
}

/* The same elements unrolled: the body is emitted once for each element a
 * thread takes (idx = tid + rep * threads), so that where it has no branch
 * the global loads of all of them are in flight together.  As a loop, each
 * iteration waited on its own loads from L2 (the delta rule's forward: 14
 * such waits a chunk in its term arrays).  Past ELEMS_UNROLL_MAX elements a
 * thread, a loop.  A thread past count takes element count - 1 again:
 * a body whose stores are the same value at the same place (the term
 * arrays) needs nothing more; others guard theirs with elems_valid.  Use:
 *   for (elems r = elems_first(k, count, E); elems_more(&r); elems_next(k, &r)) ... */
enum { ELEMS_UNROLL_MAX = 16 };
static void elems_rep(ck *k, elems *r) {
  LLVMValueRef idx = add(k, k->tid, i32c(k, r->rep * k->threads));
  r->valid = NULL;
  if ((r->rep + 1) * k->threads > r->count) {
    r->valid = slt(k, idx, i32c(k, r->count));
    idx = cg_select(k->cg, r->valid, idx, i32c(k, r->count - 1));
  }
  elems_at(k, r, idx);
}
/* c, and (unrolled) that this thread's element is its own */
static LLVMValueRef elems_valid(ck *k, const elems *r, LLVMValueRef c) { return r->valid ? and1(k, r->valid, c) : c; }
static bool elems_unrolls(ck *k, int count) {
  return k->unroll_loads && (count + k->threads - 1) / k->threads <= ELEMS_UNROLL_MAX;
}
static elems elems_first(ck *k, int count, int E) {
  int reps = (count + k->threads - 1) / k->threads;
  if (!elems_unrolls(k, count)) return elems_open(k, count, E);
  elems r = {.count = count, .E = E, .reps = reps};
  if (reps > 0) elems_rep(k, &r);
  return r;
}
static bool elems_more(const elems *r) { return r->rep < r->reps; }
static void elems_next(ck *k, elems *r) {
  if (r->looped) {
    elems_close(k, r);
    r->rep = r->reps;
    return;
  }
  memo_clear(k->e);
  if (++r->rep < r->reps) elems_rep(k, r);
}

/* The chunk's term arrays: R, W (rows), C and (backward) G (this block's
 * rows), the log decay into Bx[u+1]; zero beyond the sequence and beyond
 * M, N. Then Bx becomes its running sum over the chunk (Bx[0] = 0). */
/* The log decay of step u (at element i or j of a column or row decay),
 * the sum of its factors' exponents, or logs of the factors that are not
 * exps, whose values the forward checks (ok: a real element): "flag the
 * call" ORed into the i1 slot due (the forward of a guarded module; else
 * NULL), which term_arrays stores once. */
static LLVMValueRef log_decay(ck *k, LLVMValueRef u, LLVMValueRef t, LLVMValueRef i, LLVMValueRef j, LLVMValueRef ok,
                              LLVMValueRef due) {
  codegen *cg = k->cg;
  const chunk_gpu *g = k->g;
  LLVMValueRef ld = fzero(k);
  for (int d = 0; d < g->n_ld; d++) {
    LLVMValueRef x = ev_at(k->e, g->ld_node[d], u, t, i, j);
    if (g->ld_log[d]) {
      /* A factor that is not an exp: the forward flags the call where it
       * is below CK_GUARD_MIN (or NaN) at a step; the recurrent kernels
       * then run the whole call again (pipeline.c), over these results. */
      if (due) {
        LLVMValueRef low = LLVMBuildFCmp(cg->b, LLVMRealULT, x, cg_f32(cg, CK_GUARD_MIN), "");
        cg_store(cg, LLVMBuildOr(cg->b, cg_load(cg, cg->t_i1, due), and1(k, ok, low), ""), due);
      }
      x = cg_log(cg, x);
    }
    ld = g->ld_neg[d] ? cg_fsub(cg, ld, x) : cg_fadd(cg, ld, x);
  }
  return ld;
}

static void term_arrays(ck *k, const gtensor *gout) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  const ck_layout *ly = k->lay;
  ev *e = k->e;
  int L = p->L, ndp = p->col ? p->Mp : p->nd == 1 ? 1 : p->Np, sd = p->sd;
  /* The arrays' elements unrolled, with no branch between them: every
   * load of the chunk's inputs (from L2: prefetch_chunk) in flight at once.
   * A guarded decay's "flag the call" is gathered, then stored once. */
  LLVMValueRef due = k->flag && k->lay == &p->fw ? slot_of(k, cg->t_i1) : NULL;
  if (due) cg_store(cg, LLVMConstInt(cg->t_i1, 0, 0), due);
  /* rows: R, W, log decay */
  for (elems r = elems_first(k, L * p->Np, p->Np); elems_more(&r); elems_next(k, &r)) {
    LLVMValueRef t = clamp_t(k, r.u), j = sext(k, r.x);
    LLVMValueRef ok = and1(k, step_ok(k, r.u), slt(k, j, i64c(k, p->N)));
    j = in_extent(k, j, p->N);
    LLVMValueRef at = add(k, mul(k, r.u, i32c(k, p->sn)), r.x);
    for (int a = 0; a < g->n_upd; a++)
      sh_st(k, ly->R[a], at,
            cg_select(cg, ok, product(e, &g->upd_row[a], g->upd_row_sign[a], r.u, t, NULL, j), fzero(k)));
    for (int q = 0; q < g->n_lin; q++)
      sh_st(k, ly->W[q], at, cg_select(cg, ok, product(e, &g->lin_w[q], 1, r.u, t, NULL, j), fzero(k)));
    if (!p->col) {
      /* A row or scalar decay (a column's: with the columns, below).  A
       * scalar one is the same at every column: each stores it, into its
       * step's one element (no branch on the column). */
      LLVMValueRef ok_d = p->nd == 1 ? step_ok(k, r.u) : ok, col = p->nd == 1 ? i32c(k, 0) : r.x;
      LLVMValueRef ld = log_decay(k, r.u, t, NULL, j, ok_d, due);
      sh_st(k, ly->Bx, add(k, mul(k, add(k, r.u, i32c(k, 1)), i32c(k, sd)), col), cg_select(cg, ok_d, ld, fzero(k)));
    }
  }
  /* columns: C, G */
  for (elems r = elems_first(k, L * p->Mp, p->Mp); elems_more(&r); elems_next(k, &r)) {
    LLVMValueRef t = clamp_t(k, r.u), i = in_extent(k, grow(k, r.x), p->M);
    LLVMValueRef ok = and1(k, step_ok(k, r.u), row_ok(k, r.x));
    LLVMValueRef at = add(k, mul(k, r.u, i32c(k, p->sm)), r.x);
    for (int a = 0; a < g->n_upd; a++) /* the rank-one update's column is solved for (lower_ck_fwd) */
      if (g->upd_rank[a] < 0)
        sh_st(k, ly->C[a], at,
              cg_select(cg, ok, product(e, &g->upd_col[a], g->cf.update_sign[a], r.u, t, i, NULL), fzero(k)));
    if (gout)
      for (int q = 0; q < g->n_lin; q++) {
        if (g->lin_rank[q] >= 0) continue; /* its gradient dH is solved for (rank_gradient) */
        const chunk_out_term *ot = lin_term(g, q);
        const gtensor *dy = &gout[g->lin_out[q]];
        /* no gradient given: zero, its element read from the seed's array
         * instead (any valid address: no branch) */
        LLVMValueRef given = LLVMBuildNot(cg->b, is_null(k, dy->ptr), "");
        LLVMValueRef y = cg_load_elem(cg, cg_select(cg, given, dy->ptr, k->seed_ptr[g->seed_w[q]]),
                                      cg_select(cg, given, toff(k, dy->st, t, i, NULL), i64c(k, 0)), dy->dt);
        LLVMValueRef gv = cg_fmul(cg, y, product(e, &ot->outer, ot->sign, r.u, t, i, NULL));
        sh_st(k, ly->G[q], at, cg_select(cg, and1(k, ok, given), gv, fzero(k)));
      }
    if (p->col) {
      LLVMValueRef ld = log_decay(k, r.u, t, i, NULL, ok, due);
      sh_st(k, ly->Bx, at2(k, add(k, r.u, i32c(k, 1)), sd, r.x), cg_select(cg, ok, ld, fzero(k)));
    }
  }
  if (due) {
    LLVMBasicBlockRef no = if_open(k, and1(k, cg_load(cg, cg->t_i1, due), LLVMBuildNot(cg->b, is_null(k, k->flag), "")));
    LLVMBuildStore(cg->b, i32c(k, 1), k->flag);
    if_close(k, no);
  }
  /* Bx[0] = 0; the flag set */
  {
    cloop l = loop_open(k, k->tid, i32c(k, ndp), i32c(k, k->threads));
    sh_st(k, ly->Bx, loop_var(k, &l), fzero(k));
    loop_close(k, &l);
    LLVMBasicBlockRef no = if_open(k, LLVMBuildICmp(cg->b, LLVMIntEQ, k->tid, i32c(k, 0), ""));
    sh_st(k, ly->FLAG, i32c(k, 0), cg_f32(cg, 1.0));
    if_close(k, no);
  }
  cg_barrier(cg);
  /* running sum over the chunk, a thread per column; a column whose log
   * decay leaves [-DECAY_SPLIT_MAX, DECAY_SPLIT_MAX] clears the flag */
  {
    cloop l = loop_open(k, k->tid, i32c(k, ndp), i32c(k, k->threads));
    LLVMValueRef j = loop_var(k, &l);
    LLVMValueRef acc = slot_of(k, cg->t_f32), big = slot_of(k, cg->t_f32);
    cg_store(cg, fzero(k), acc);
    cg_store(cg, fzero(k), big);
    cloop lu = loop_open(k, i32c(k, 1), i32c(k, L + 1), i32c(k, 1));
    LLVMValueRef at = add(k, mul(k, loop_var(k, &lu), i32c(k, sd)), j);
    LLVMValueRef s = cg_fadd(cg, cg_load(cg, cg->t_f32, acc), sh_ld(k, ly->Bx, at));
    cg_store(cg, s, acc);
    cg_store(cg, cg_fmax(cg, cg_load(cg, cg->t_f32, big), cg_fabs(cg, s)), big);
    sh_st(k, ly->Bx, at, s);
    loop_close(k, &lu);
    /* NaN too: the factored form is then not taken */
    LLVMValueRef ok = LLVMBuildFCmp(cg->b, LLVMRealOLE, cg_load(cg, cg->t_f32, big), cg_f32(cg, p->split_max), "");
    LLVMBasicBlockRef no = if_open(k, LLVMBuildNot(cg->b, ok, ""));
    sh_st(k, ly->FLAG, i32c(k, 0), fzero(k));
    /* A decay along M has the split only: the forward flags the call for
     * the recurrent kernels (a block's rows past M read a clamped row) */
    if (p->col && k->flag && k->lay == &p->fw) {
      LLVMBasicBlockRef real = if_open(k, and1(k, row_ok(k, j), LLVMBuildNot(cg->b, is_null(k, k->flag), "")));
      LLVMBuildStore(cg->b, i32c(k, 1), k->flag);
      if_close(k, real);
    }
    if_close(k, no);
    loop_close(k, &l);
  }
  cg_barrier(cg);
  k->fast = p->split ? LLVMBuildFCmp(cg->b, LLVMRealONE, sh_ld(k, ly->FLAG, i32c(k, 0)), fzero(k), "")
                     : LLVMConstInt(cg->t_i1, 0, 0);
  /* P_last per column, and the factored arrays where the flag allows */
  {
    cloop l = loop_open(k, k->tid, i32c(k, p->col ? p->Mp : p->Np), i32c(k, k->threads));
    LLVMValueRef j = loop_var(k, &l);
    sh_st(k, ly->EL, j, fexp(k, p->col ? bxm(k, lastrow(k), j) : bx(k, lastrow(k), j)));
    loop_close(k, &l);
  }
  if (p->col) {
    /* A decay along M, split: the columns C / P_v (the updates', carried
     * to the chunk's start) and G P_l(u) (the outputs' gradients, carried
     * to their step); the products between them are then plain, and the
     * outputs and end states take P_l and P_last in their epilogues. */
    elems r = elems_open(k, L * p->Mp, p->Mp);
    LLVMValueRef at = at2(k, r.u, p->sm, r.x);
    LLVMValueRef inv = fexp(k, cg_fneg(cg, bxm(k, add(k, r.u, i32c(k, 1)), r.x)));
    for (int a = 0; a < g->n_upd; a++) sh_st(k, ly->C[a], at, cg_fmul(cg, sh_ld(k, ly->C[a], at), inv));
    if (gout)
      for (int q = 0; q < g->n_lin; q++)
        sh_st(k, ly->G[q], at, cg_fmul(cg, sh_ld(k, ly->G[q], at), fexp(k, bxm(k, lrow(k, q, r.u), r.x))));
    elems_close(k, &r);
  } else {
    elems r = elems_open(k, L * p->Np, p->Np);
    LLVMValueRef at = at2(k, r.u, p->sn, r.x);
    LLVMBasicBlockRef yes = cg_block(cg, "split"), no = cg_block(cg, "ratios"), end = cg_block(cg, "joined");
    cg_cond_br(cg, k->fast, yes, no);
    cg_at(cg, yes);
    for (int q = 0; q < g->n_lin; q++)
      sh_st(k, ly->W[q], at, cg_fmul(cg, sh_ld(k, ly->W[q], at), fexp(k, bx(k, lrow(k, q, r.u), r.x))));
    LLVMValueRef inv = fexp(k, cg_fneg(cg, bx(k, add(k, r.u, i32c(k, 1)), r.x)));
    for (int a = 0; a < g->n_upd; a++) sh_st(k, ly->R[a], at, cg_fmul(cg, sh_ld(k, ly->R[a], at), inv));
    cg_br(cg, end);
    cg_at(cg, no);
    for (int q = 0; q < g->n_lin; q++)
      if (ly->Wd[q] >= 0)
        sh_st(k, ly->Wd[q], at, cg_fmul(cg, sh_ld(k, ly->W[q], at), fexp(k, bx(k, lrow(k, q, r.u), r.x))));
    LLVMValueRef to_end = fexp(k, cg_fsub(cg, bx(k, lastrow(k), r.x), bx(k, add(k, r.u, i32c(k, 1)), r.x)));
    for (int a = 0; a < g->n_upd; a++)
      if (ly->Re[a] >= 0) sh_st(k, ly->Re[a], at, cg_fmul(cg, sh_ld(k, ly->R[a], at), to_end));
    cg_br(cg, end);
    cg_at(cg, end);
    elems_close(k, &r);
  }
  cg_barrier(cg);
}

/* Ask L2 for the elements of the chunk starting at step t0n (i64) of every
 * input tensor and of the extra tensors given (the output gradients, class
 * [M,1]): one prefetch per 32 elements along a row, so a contiguous bf16
 * row costs one per 64 bytes.  Issued once this chunk's own loads are
 * done, they land while its products run: the next chunk's term arrays
 * then wait on L2, not DRAM. */
static void prefetch_chunk(ck *k, LLVMValueRef t0n, const gtensor *extra, int n_extra) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  int n_in = k->s->n_ports[FRNN_PORT_INPUT];
  for (int q = 0; q < n_in + n_extra; q++) {
    const leaf *lf = q < n_in ? &k->e->leaves[q] : NULL;
    if (lf && lf->kind != LEAF_TENSOR) continue;
    int cls = q < n_in ? k->s->ports[FRNN_PORT_INPUT][q].cls : FRNN_COL;
    LLVMValueRef ptr = lf ? lf->ptr : extra[q - n_in].ptr;
    LLVMValueRef const *st = lf ? lf->st : extra[q - n_in].st;
    enum tdtype dt = lf ? lf->dt : extra[q - n_in].dt;
    /* runs of 32 along the last dimension the class has (N, else M) */
    bool has_n = CLASS_HAS_N(cls), has_m = CLASS_HAS_M(cls);
    int rows = has_m ? (has_n ? p->BM : (p->BM + 31) / 32) : 1, runs = has_n ? (int)((p->N + 31) / 32) : 1;
    LLVMValueRef live = LLVMBuildNot(cg->b, is_null(k, ptr), "");
    elems r = elems_open(k, p->L * rows * runs, rows * runs);
    LLVMValueRef t = add(k, t0n, sext(k, r.u));
    LLVMValueRef row = LLVMBuildUDiv(cg->b, r.x, i32c(k, runs), "");
    LLVMValueRef i = has_m ? grow(k, has_n ? row : mul(k, row, i32c(k, 32))) : NULL;
    LLVMValueRef j = has_n ? sext(k, mul(k, LLVMBuildURem(cg->b, r.x, i32c(k, runs), ""), i32c(k, 32))) : NULL;
    LLVMValueRef ok = and1(k, live, and1(k, LLVMBuildICmp(cg->b, LLVMIntSGE, t, i64c(k, 0), ""), slt(k, t, k->T)));
    if (i) ok = and1(k, ok, slt(k, i, i64c(k, p->M)));
    LLVMBasicBlockRef no = if_open(k, ok);
    cg_prefetch_elem_l2(cg, ptr, toff(k, st, t, i, j), dt);
    if_close(k, no);
    elems_close(k, &r);
  }
}

/* ------------------------------------------------------------ products */
/* out[p][q] = sum over kk < K of combine(a(p,kk), b(kk,q)) (a * b by
 * default), each thread a TILE x TILE tile; epi gets every element. */
typedef struct mm mm;
struct mm {
  ck *k;
  int P, Q, K;
  int lin, upd, first; /* which arrays the callbacks use; first: the first of a sum */
  int parts;           /* > 1: the sum of this many products, lin (by_lin) or upd 0, 1, ..., into one
                          accumulator before one epilogue (run_mma; else run_mm per part) */
  bool by_lin;
  unsigned skip;       /* parts: those left out, a bit each */
  bool stacked;        /* parts side by side in the rows, each its own output, not summed: one
                          block of a warp takes every part's rows, so that the b operand's
                          fragments (the same for all: a state) are loaded and converted to
                          float64 once (run_mma, where they fit its tiles; else a product each).
                          H100 fw+bw: delta rule 4.75 -> 4.57 ms, gated 5.66 -> 5.47, RWKV-7
                          8.41 -> 8.17 (FRNN_CK_STACK=0 against the default, one call) */
  int state;           /* b_state's array: the state S or its gradient dS */
  bool store;          /* the chunk's first product into its seed: stores, not adds */
  bool fast;           /* the factored form (decay_split: W, R hold W P_l and R / P) */
  bool spread;         /* independent of the products beside it (no shared element written by both
                          without a barrier between): its tiles may go to other warps (run_mma) */
  int site;            /* the product's site (FRNN_CK_SKIP's bits; run_mm_probe sets it) */
  LLVMValueRef (*a)(mm *, LLVMValueRef p, LLVMValueRef kk, LLVMValueRef *a2);
  LLVMValueRef (*b)(mm *, LLVMValueRef kk, LLVMValueRef q, LLVMValueRef *b2);
  LLVMValueRef (*combine)(mm *, LLVMValueRef p, LLVMValueRef q, LLVMValueRef kk, LLVMValueRef a,
                          LLVMValueRef a2, LLVMValueRef b, LLVMValueRef b2);
  void (*epi)(mm *, LLVMValueRef p, LLVMValueRef q, LLVMValueRef acc);
};
static mm new_mm(ck *k, int P, int Q, int K) { return (mm){.k = k, .P = P, .Q = Q, .K = K}; }

static void run_mm(mm *m) {
  ck *k = m->k;
  codegen *cg = k->cg;
  int tq = m->Q / TILE, tiles = (m->P / TILE) * tq, threads = k->threads;
  /* Fewer tiles than threads (the [L,N] and [L,L] products): the sum over
   * k is split over `split` neighbouring lanes, which add their parts by
   * shuffles (a fixed order: reproducible); whole warps, or none. */
  int split = 1;
  if (k->p->split_k && tiles < threads && threads % tiles == 0) {
    split = threads / tiles;
    while (split > 1 && (split > 32 || m->K % split || m->K / split < 4 || (tiles * split) % 32)) split /= 2;
  }
  /* In float64 where the tensor cores' products are (sm_90, ck_plan.f64):
   * each float32 product is exact in float64 and the sum rounds in float64,
   * so a size that is no multiple of the mma tile gets the same precision
   * (a scalar decay's gradient cancels in its sums; in float32 Mamba-2's
   * grad A at M = 3, N = 5 missed its bound for some seeds). */
  bool wide = k->p->f64;
  LLVMTypeRef at = wide ? cg->t_f64 : cg->t_f32;
  LLVMValueRef acc[TILE][TILE];
  for (int r = 0; r < TILE; r++)
    for (int c = 0; c < TILE; c++) acc[r][c] = slot_of(k, at);
  cloop lt = loop_open(k, k->tid, i32c(k, tiles * split), i32c(k, threads));
  LLVMValueRef idx = loop_var(k, &lt), part = NULL;
  if (split > 1) {
    part = LLVMBuildURem(cg->b, idx, i32c(k, split), "");
    idx = LLVMBuildUDiv(cg->b, idx, i32c(k, split), "");
  }
  /* A thread's tile is strided (p0 + r P/TILE, q0 + c Q/TILE): neighbouring
   * lanes read neighbouring rows, which odd strides put in distinct banks. */
  LLVMValueRef p0 = LLVMBuildUDiv(cg->b, idx, i32c(k, tq), "");
  LLVMValueRef q0 = LLVMBuildURem(cg->b, idx, i32c(k, tq), "");
  for (int r = 0; r < TILE; r++)
    for (int c = 0; c < TILE; c++) cg_store(cg, LLVMConstReal(at, 0), acc[r][c]);
  LLVMValueRef av[TILE], a2[TILE], bv[TILE], b2[TILE], pi[TILE], qi[TILE];
  for (int r = 0; r < TILE; r++)
    pi[r] = add(k, p0, i32c(k, r * (m->P / TILE))), qi[r] = add(k, q0, i32c(k, r * (m->Q / TILE)));
  int span = m->K / split;
  LLVMValueRef k0 = split > 1 ? mul(k, part, i32c(k, span)) : i32c(k, 0);
  cloop lk = loop_open(k, k0, add(k, k0, i32c(k, span)), i32c(k, 1));
  LLVMValueRef kk = loop_var(k, &lk);
  for (int r = 0; r < TILE; r++) {
    a2[r] = b2[r] = NULL;
    av[r] = m->a(m, pi[r], kk, &a2[r]);
  }
  for (int c = 0; c < TILE; c++) bv[c] = m->b(m, kk, qi[c], &b2[c]);
  for (int r = 0; r < TILE; r++)
    for (int c = 0; c < TILE; c++) {
      LLVMValueRef old = cg_load(cg, at, acc[r][c]), nv;
      if (m->combine) {
        LLVMValueRef t = m->combine(m, pi[r], qi[c], kk, av[r], a2[r], bv[c], b2[c]);
        nv = wide ? LLVMBuildFAdd(cg->b, old, f64(k, t), "") : cg_fadd(cg, old, t);
      } else {
        nv = wide ? LLVMBuildFAdd(cg->b, old, LLVMBuildFMul(cg->b, f64(k, av[r]), f64(k, bv[c]), ""), "")
                  : cg_fma(cg, av[r], bv[c], old);
      }
      cg_store(cg, nv, acc[r][c]);
    }
  loop_close(k, &lk);
  LLVMValueRef sum[TILE][TILE];
  for (int r = 0; r < TILE; r++)
    for (int c = 0; c < TILE; c++) {
      sum[r][c] = cg_load(cg, at, acc[r][c]);
      if (wide) sum[r][c] = LLVMBuildFPTrunc(cg->b, sum[r][c], cg->t_f32, "");
      sum[r][c] = cg_sum_lanes_f32(cg, sum[r][c], split);
    }
  LLVMBasicBlockRef skip = split > 1 ? if_open(k, LLVMBuildICmp(cg->b, LLVMIntEQ, part, i32c(k, 0), "")) : NULL;
  for (int r = 0; r < TILE; r++)
    for (int c = 0; c < TILE; c++) m->epi(m, pi[r], qi[c], sum[r][c]);
  if (skip) if_close(k, skip);
  loop_close(k, &lt);
}

/* The same product on tensor cores: each warp a block of rp x rq tiles of
 * 16 x 8 (mma.sync m16n8k8), operands split into high and low TF32 parts
 * and multiplied three times (cg_split_tf32): float32's precision at
 * tensor-core rate.  The operands come through the same a/b callbacks,
 * element by element in the fragments' layout (PTX ISA, "mma.m16n8k8"
 * for .tf32): lane = 4 g + t holds A's (g | g+8, t | t+4), B's (t | t+4, g)
 * and C's (g | g+8, 2t | 2t+1). */
static bool mma_fits(const mm *m) {
  return m->k->p->mma && !m->combine && m->P % 16 == 0 && m->Q % 8 == 0 && m->K % 8 == 0;
}

/* A float32 operand as float64 by integer operations on its bits (the
 * ALU and FMA pipes, beside cvt.f64.f32's XU pipe): sign and exponent
 * field shifted into place unchanged, so the value is x 2^-896 exactly,
 * zero and subnormals included (float64's subnormals continue float32's
 * scale); infinities and NaNs become finite (about 2^-768).  The product's
 * epilogue scales its sum back. */
static LLVMValueRef f64_scaled(ck *k, LLVMValueRef x) {
  codegen *cg = k->cg;
  LLVMTypeRef i64 = cg->t_i64;
  LLVMValueRef b = LLVMBuildBitCast(cg->b, x, cg->t_i32, "");
  LLVMValueRef hi = LLVMBuildAnd(cg->b, LLVMBuildAShr(cg->b, b, i32c(k, 3), ""), i32c(k, 0x8FFFFFFF), "");
  LLVMValueRef lo = LLVMBuildShl(cg->b, b, i32c(k, 29), "");
  LLVMValueRef w = LLVMBuildOr(cg->b, LLVMBuildShl(cg->b, LLVMBuildZExt(cg->b, hi, i64, ""), LLVMConstInt(i64, 32, 0), ""),
                               LLVMBuildZExt(cg->b, lo, i64, ""), "");
  return LLVMBuildBitCast(cg->b, w, cg->t_f64, "");
}
/* Operand A (a_side) or B of a float64 product, as ck_plan.cvt says. */
static LLVMValueRef f64_operand(ck *k, LLVMValueRef x, bool a_side) {
  codegen *cg = k->cg;
  if (k->p->cvt == CK_CVT_INT_A && a_side) return f64_scaled(k, x);
  if (k->p->cvt == CK_CVT_NONE) /* the probe: the bits moved, not converted */
    return LLVMBuildBitCast(cg->b, LLVMBuildZExt(cg->b, LLVMBuildBitCast(cg->b, x, cg->t_i32, ""), cg->t_i64, ""), cg->t_f64, "");
  return f64(k, x);
}

enum { RMAX = 8 }; /* tiles a warp's block holds at most */

/* Stacked parts (mm.stacked): row tile i of the block is part
 * part_of[i / tiles_each]'s, at its local row 16 (i % tiles_each) (the
 * block starts at row 0). */
typedef struct stack {
  int n, tiles_each, part_of[RMAX];
} stack;
static LLVMValueRef tile_row(mm *m, const stack *st, LLVMValueRef p0, int i) {
  if (!st) return add(m->k, p0, i32c(m->k, 16 * i));
  *(m->by_lin ? &m->lin : &m->upd) = st->part_of[i / st->tiles_each];
  return i32c(m->k, 16 * (i % st->tiles_each));
}

/* One k-step of 16 of a block of rp x rq tiles in three bfloat16 parts
 * (ck_plan.bf16x3): av and bv hold the fragments of the k-step's first 8 (as
 * the float64 and TF32 forms load them), the second 8 loaded here.  The
 * m16n8k16 fragment's k slots (2t, 2t+1 | 2t+8, 2t+9) take k = t, t+4 |
 * t+8, t+12: any order of k serves a sum, so long as A's and B's agree.
 * Six products a tile, the smallest first, into the float32 accumulator:
 * lo hi, hi lo, mid mid, mid hi, hi mid, hi hi (mid lo and below, under
 * 2^-24 of the product, are dropped); fewer where ck_plan.bf16_parts, a
 * probe, takes an operand's first parts alone. */
static void mma_bf16x3(mm *m, int rp, int rq, LLVMValueRef p0, LLVMValueRef q0, const stack *st, LLVMValueRef kk,
                       LLVMValueRef g, LLVMValueRef t, LLVMValueRef av[][4], LLVMValueRef bv[][2], LLVMValueRef acc[][4]) {
  ck *k = m->k;
  codegen *cg = k->cg;
  LLVMValueRef unused, kt = add(k, add(k, kk, t), i32c(k, 8)), kt4 = add(k, kt, i32c(k, 4));
  LLVMValueRef a[RMAX][3][4], b[RMAX][3][2]; /* [tile row or column][part][register] */
  int pa = k->p->bf16_parts[0], pb = k->p->bf16_parts[1];
  for (int i = 0; i < rp; i++) {
    LLVMValueRef r = add(k, tile_row(m, st, p0, i), g), r8 = add(k, r, i32c(k, 8)), part[3];
    LLVMValueRef hi_k[4] = {m->a(m, r, kt, &unused), m->a(m, r8, kt, &unused), m->a(m, r, kt4, &unused),
                            m->a(m, r8, kt4, &unused)};
    LLVMValueRef pairs[4][2] = {{av[i][0], av[i][2]}, {av[i][1], av[i][3]}, {hi_k[0], hi_k[2]}, {hi_k[1], hi_k[3]}};
    for (int e = 0; e < 4; e++) {
      cg_split_bf16x3(cg, pairs[e][0], pairs[e][1], pa == 1, part);
      for (int q = 0; q < 3; q++) a[i][q][e] = part[q];
    }
  }
  for (int j = 0; j < rq; j++) {
    LLVMValueRef c = add(k, add(k, q0, i32c(k, 8 * j)), g), part[3];
    LLVMValueRef pairs[2][2] = {{bv[j][0], bv[j][1]}, {m->b(m, kt, c, &unused), m->b(m, kt4, c, &unused)}};
    for (int e = 0; e < 2; e++) {
      cg_split_bf16x3(cg, pairs[e][0], pairs[e][1], pb == 1, part);
      for (int q = 0; q < 3; q++) b[j][q][e] = part[q];
    }
  }
  static const int order[6][2] = {{2, 0}, {0, 2}, {1, 1}, {1, 0}, {0, 1}, {0, 0}}; /* (A's part, B's part) */
  for (int i = 0; i < rp; i++)
    for (int j = 0; j < rq; j++) {
      LLVMValueRef c[4];
      for (int e = 0; e < 4; e++) c[e] = cg_load(cg, cg->t_f32, acc[i * rq + j][e]);
      for (int o = 0; o < 6; o++)
        if (order[o][0] < pa && order[o][1] < pb) cg_mma_bf16(cg, a[i][order[o][0]], b[j][order[o][1]], c);
      for (int e = 0; e < 4; e++) cg_store(cg, c[e], acc[i * rq + j][e]);
    }
}

/* The form of a product's mma: three bfloat16 parts (bx3), float64 (dp),
 * else 3xTF32 (FRNN_CK_TF32X3_SITES, per site). */
static void mma_form(const mm *m, bool *bx3, bool *dp) {
  const ck_plan *p = m->k->p;
  bool tf32x3 = p->tf32x3_sites >> m->site & 1;
  *bx3 = p->bf16x3 && !tf32x3 && m->K % 16 == 0;
  *dp = p->f64 && !tf32x3 && !*bx3;
}

/* run_mma's k-loop for one product (a part, or every stacked part) into
 * the warp's block of rp x rq tiles at rows p0, columns q0. */
static void mma_steps(mm *m, int rp, int rq, LLVMValueRef p0, LLVMValueRef q0, const stack *st,
                      LLVMValueRef acc[RMAX][4]) {
  ck *k = m->k;
  codegen *cg = k->cg;
  bool bx3, dp;
  mma_form(m, &bx3, &dp);
  LLVMTypeRef acc_t = dp ? cg->t_f64 : cg->t_f32;
  LLVMValueRef g = LLVMBuildLShr(cg->b, k->lane, i32c(k, 2), ""), t = LLVMBuildAnd(cg->b, k->lane, i32c(k, 3), "");
  cloop lk = loop_open(k, i32c(k, 0), i32c(k, m->K), i32c(k, bx3 ? 16 : 8));
  /* Unrolled in full: spills, and 7% slower (GLA fw+bw, H100).  A warp
   * with one or two tiles waits on each step's three dependent mma: a few
   * steps unrolled overlap them (FRNN_CK_MMA_UNROLL). */
  lk.unroll = rp * rq > 2 ? 1 : k->lay == &k->p->bw ? k->p->unroll_bwd : k->p->unroll_fwd;
  LLVMValueRef kk = loop_var(k, &lk), kt = add(k, kk, t), kt4 = add(k, kt, i32c(k, 4)), unused;
  LLVMValueRef av[RMAX][4], bv[RMAX][2];
  for (int i = 0; i < rp; i++) {
    LLVMValueRef r = add(k, tile_row(m, st, p0, i), g), r8 = add(k, r, i32c(k, 8));
    LLVMValueRef rows[4] = {r, r8, r, r8}, cols[4] = {kt, kt, kt4, kt4};
    for (int e = 0; e < 4; e++) av[i][e] = m->a(m, rows[e], cols[e], &unused);
  }
  for (int j = 0; j < rq; j++) {
    LLVMValueRef c = add(k, add(k, q0, i32c(k, 8 * j)), g);
    bv[j][0] = m->b(m, kt, c, &unused);
    bv[j][1] = m->b(m, kt4, c, &unused);
  }
  LLVMValueRef ahi[RMAX][4], alo[RMAX][4], bhi[RMAX][2], blo[RMAX][2];
  if (bx3) {
    mma_bf16x3(m, rp, rq, p0, q0, st, kk, g, t, av, bv, acc);
  } else if (dp) { /* one float64 product, summed in the mma: exact operands, a float64 sum */
    for (int i = 0; i < rp; i++)
      for (int e = 0; e < 4; e++) ahi[i][e] = f64_operand(k, av[i][e], true);
    for (int j = 0; j < rq; j++) bhi[j][0] = f64_operand(k, bv[j][0], false), bhi[j][1] = f64_operand(k, bv[j][1], false);
    for (int i = 0; i < rp; i++)
      for (int j = 0; j < rq; j++) {
        LLVMValueRef c[4];
        for (int e = 0; e < 4; e++) c[e] = cg_load(cg, acc_t, acc[i * rq + j][e]);
        cg_mma_f64(cg, ahi[i], bhi[j], c);
        for (int e = 0; e < 4; e++) cg_store(cg, c[e], acc[i * rq + j][e]);
      }
  } else {
    for (int i = 0; i < rp; i++)
      for (int e = 0; e < 4; e++) cg_split_tf32(cg, av[i][e], &ahi[i][e], &alo[i][e]);
    for (int j = 0; j < rq; j++)
      for (int e = 0; e < 2; e++) cg_split_tf32(cg, bv[j][e], &bhi[j][e], &blo[j][e]);
    /* Each step of 8 into a fresh accumulator, then added in float32: the
     * tensor cores' own additions truncate, and their bias over a long sum
     * would exceed float32 rounding (Mamba-2's grad A, 1.5e-5 at 128 x 128). */
    for (int i = 0; i < rp; i++)
      for (int j = 0; j < rq; j++) {
        LLVMValueRef c[4], old[4];
        for (int e = 0; e < 4; e++) old[e] = cg_load(cg, cg->t_f32, acc[i * rq + j][e]), c[e] = fzero(k);
        if (k->p->tf32) { /* opted out of float32's precision: one product, accumulated in the mma */
          cg_mma_tf32(cg, ahi[i], bhi[j], old);
          for (int e = 0; e < 4; e++) cg_store(cg, old[e], acc[i * rq + j][e]);
          continue;
        }
        cg_mma_tf32(cg, alo[i], bhi[j], c); /* the small parts first */
        cg_mma_tf32(cg, ahi[i], blo[j], c);
        cg_mma_tf32(cg, ahi[i], bhi[j], c);
        for (int e = 0; e < 4; e++) cg_store(cg, cg_fadd(cg, old[e], c[e]), acc[i * rq + j][e]);
      }
  }
  loop_close(k, &lk);
}

static void run_mma(mm *m) {
  ck *k = m->k;
  codegen *cg = k->cg;
  int tp = m->P / 16, tq = m->Q / 8, warps = k->threads / 32;
  /* The largest block of tiles per warp (fragments reused across it) that
   * still gives every warp a block, at most k->tiles.  A product with two
   * blocks a warp even at mma_big tiles (the [M,N] ones: the end state,
   * the gradient before the chunk) takes blocks that large, 2 x 4 tiles
   * where they divide: in float64 each element of a fragment is converted
   * (cvt.f64.f32, a quarter of the float32 rate), 2 a product at 2 x 4
   * against 3 at 1 x 4 and 4 at 1 x 2. */
  int cap = k->tiles, rp = 1, rq = 1;
  int big = k->lay == &k->p->fw ? k->p->mma_big_fwd : k->p->mma_big;
  if (big > cap && tp * tq >= 2 * warps * big) cap = big;
  stack st = {0};
  for (int part = 0; part < (m->stacked ? m->parts : 0); part++)
    if (!(m->skip >> part & 1)) st.part_of[st.n++] = part;
  if (st.n) { /* every part's rows in one block (run_mm_probe: they fit), then two columns
                 of tiles where the warps still get a block each */
    st.tiles_each = tp, tp *= st.n, rp = tp;
    cap = cap > 2 * rp ? cap : 2 * rp;
  }
  for (;;) {
    if (rp * rq * 2 > cap) break;
    if (rq >= 4 && rq > rp && tp % (2 * rp) == 0 && (tp / (2 * rp)) * (tq / rq) >= warps) rp *= 2;
    else if (tq % (2 * rq) == 0 && (tp / rp) * (tq / (2 * rq)) >= warps) rq *= 2;
    else if (tp % (2 * rp) == 0 && (tp / (2 * rp)) * (tq / rq) >= warps) rp *= 2;
    else break;
  }
  int blocks_q = tq / rq, blocks = (tp / rp) * blocks_q;
  bool bx3, dp;
  mma_form(m, &bx3, &dp);
  LLVMTypeRef acc_t = dp ? cg->t_f64 : cg->t_f32;
  LLVMValueRef acc[RMAX][4], zero = dp ? LLVMConstReal(cg->t_f64, 0.0) : fzero(k);
  for (int i = 0; i < rp * rq; i++)
    for (int e = 0; e < 4; e++) acc[i][e] = slot_of(k, acc_t);
  LLVMValueRef g = LLVMBuildLShr(cg->b, k->lane, i32c(k, 2), ""), t = LLVMBuildAnd(cg->b, k->lane, i32c(k, 3), "");
  /* Block 0 goes to warp k->rot (spread products): products with fewer
   * blocks than warps that follow each other without a barrier then run
   * on different warps side by side.  (Only those: rotating the others
   * too spilled in RWKV-7's backward.) */
  bool spread = m->spread && (k->lay == &k->p->fw ? k->p->spread_fwd : k->p->spread) && blocks < warps;
  int rot = spread ? k->rot % warps : 0;
  if (spread) k->rot = (k->rot + blocks) % warps;
  LLVMValueRef first = rot ? LLVMBuildURem(cg->b, add(k, k->warp, i32c(k, warps - rot)), i32c(k, warps), "") : k->warp;
  cloop lw = loop_open(k, first, i32c(k, blocks), i32c(k, warps));
  LLVMValueRef blk = loop_var(k, &lw);
  LLVMValueRef p0 = mul(k, LLVMBuildUDiv(cg->b, blk, i32c(k, blocks_q), ""), i32c(k, rp * 16));
  LLVMValueRef q0 = mul(k, LLVMBuildURem(cg->b, blk, i32c(k, blocks_q), ""), i32c(k, rq * 8));
  for (int i = 0; i < rp * rq; i++)
    for (int e = 0; e < 4; e++) cg_store(cg, zero, acc[i][e]);
  /* Several products summed (parts): each one's k-loop into the same accumulators. */
  for (int part = 0; part < (m->parts > 1 ? m->parts : 1); part++) {
    if (m->parts > 1 && m->skip >> part & 1) continue;
    if (m->parts > 1) *(m->by_lin ? &m->lin : &m->upd) = part;
    mma_steps(m, rp, rq, p0, q0, st.n ? &st : NULL, acc);
    if (st.n) break; /* (all of them at once) */
  }
  LLVMValueRef t2 = mul(k, t, i32c(k, 2));
  bool scaled = k->p->cvt == CK_CVT_INT_A; /* by 2^-896 (f64_scaled) */
  for (int i = 0; i < rp; i++)
    for (int j = 0; j < rq; j++)
      for (int e = 0; e < 4; e++) {
        LLVMValueRef r = add(k, add(k, tile_row(m, st.n ? &st : NULL, p0, i), i32c(k, e >= 2 ? 8 : 0)), g);
        LLVMValueRef c = add(k, add(k, q0, i32c(k, 8 * j + (e & 1))), t2);
        LLVMValueRef sum = cg_load(cg, acc_t, acc[i * rq + j][e]);
        if (dp && scaled) sum = LLVMBuildFMul(cg->b, sum, LLVMConstReal(cg->t_f64, ldexp(1.0, 896)), "");
        m->epi(m, r, c, dp ? LLVMBuildFPTrunc(cg->b, sum, cg->t_f32, "") : sum);
      }
  loop_close(k, &lw);
}

/* FRNN_CK_STACK=0: stacked parts (mm.stacked) as a product each. */
static bool stacks(void) {
  const char *env = getenv("FRNN_CK_STACK");
  return !(env && strcmp(env, "0") == 0);
}
/* A timing probe (FRNN_CK_SKIP: a bit mask of product sites to leave out;
 * results are then wrong): where the kernels' time goes, measured. */
static bool probe_skips(int site) {
  const char *env = getenv("FRNN_CK_SKIP");
  return env && (strtoul(env, NULL, 0) >> site & 1);
}
static void run_mm_probe(mm *m, int site) {
  if (probe_skips(site)) return;
  m->site = site;
  if (m->stacked) {
    int n = 0;
    for (int part = 0; part < m->parts; part++) n += !(m->skip >> part & 1);
    /* (run_mma's block takes every part's rows of tiles and two columns: at most RMAX tiles) */
    if (n == 1 || !mma_fits(m) || 2 * (n * m->P / 16) > RMAX || !stacks()) { /* a product each: no barriers */
      mm one = *m;
      one.parts = 1, one.stacked = false;
      for (int part = 0; part < m->parts; part++) {
        if (m->skip >> part & 1) continue;
        *(one.by_lin ? &one.lin : &one.upd) = part;
        run_mm_probe(&one, site);
      }
      return;
    }
  }
  if (mma_fits(m)) {
    run_mma(m);
    return;
  }
  if (m->parts <= 1) {
    run_mm(m);
    return;
  }
  mm one = *m;
  one.parts = 1;
  bool ran = false;
  for (int part = 0; part < m->parts; part++) {
    if (m->skip >> part & 1) continue;
    *(one.by_lin ? &one.lin : &one.upd) = part;
    one.first = m->first && !ran;
    one.store = m->store && !ran; /* the first part stores, the others add after a barrier */
    if (ran) cg_barrier(m->k->cg);
    run_mm(&one);
    ran = true;
  }
}

/* The product in both forms, chosen per chunk by the flag (decay_split). */
static void run_both(mm *m, int site) {
  ck *k = m->k;
  codegen *cg = k->cg;
  if (!k->p->split) {
    m->fast = false;
    run_mm_probe(m, site);
    return;
  }
  LLVMBasicBlockRef yes = cg_block(cg, "split"), no = cg_block(cg, "ratios"), end = cg_block(cg, "joined");
  cg_cond_br(cg, k->fast, yes, no);
  cg_at(cg, yes);
  mm f = *m;
  f.fast = true;
  f.combine = NULL;
  int rot = k->rot; /* one of the two runs: the same warps */
  run_mm_probe(&f, site);
  k->rot = rot;
  cg_br(cg, end);
  cg_at(cg, no);
  mm r = *m;
  r.fast = false;
  run_mm_probe(&r, site);
  cg_br(cg, end);
  cg_at(cg, end);
}

/* Common operand loads.  The a(p,k) and b(k,q) callbacks share one
 * signature: an op_* load serves as either operand (its `extra` unused). */
static LLVMValueRef ld_W(mm *m, LLVMValueRef u, LLVMValueRef n) { return sh_ld(m->k, m->k->lay->W[m->lin], at2(m->k, u, m->k->p->sn, n)); }
static LLVMValueRef ld_R(mm *m, LLVMValueRef v, LLVMValueRef n) { return sh_ld(m->k, m->k->lay->R[m->upd], at2(m->k, v, m->k->p->sn, n)); }
static LLVMValueRef ld_C(mm *m, LLVMValueRef v, LLVMValueRef i) { return sh_ld(m->k, m->k->lay->C[m->upd], at2(m->k, v, m->k->p->sm, i)); }
static LLVMValueRef ld_G(mm *m, LLVMValueRef u, LLVMValueRef i) { return sh_ld(m->k, m->k->lay->G[m->lin], at2(m->k, u, m->k->p->sm, i)); }
static LLVMValueRef ld_S(mm *m, int arr, LLVMValueRef i, LLVMValueRef n) { return sh_ld(m->k, arr, at2(m->k, i, m->k->p->ss, n)); }

/* W[u][n] * P_l(u)[n] (the weights carried to the chunk's start). */
static LLVMValueRef op_W_decayed(mm *m, LLVMValueRef u, LLVMValueRef n, LLVMValueRef *extra) {
  (void)extra;
  ck *k = m->k;
  if (plain(k, m->fast)) return ld_W(m, u, n); /* a column decay's P_l: in the epilogue or G */
  if (k->lay->Wd[m->lin] >= 0) return sh_ld(k, k->lay->Wd[m->lin], at2(k, u, k->p->sn, n));
  return cg_fmul(k->cg, ld_W(m, u, n), fexp(k, bx(k, lrow(k, m->lin, u), n)));
}
/* The state or its gradient (m->state), S[i][n], as b(i, n) or b(n, i). */
static LLVMValueRef b_state(mm *m, LLVMValueRef i, LLVMValueRef n, LLVMValueRef *b2) {
  (void)b2;
  return ld_S(m, m->state, i, n);
}
static LLVMValueRef b_state_t(mm *m, LLVMValueRef n, LLVMValueRef i, LLVMValueRef *b2) {
  (void)b2;
  return ld_S(m, m->state, i, n);
}

static LLVMValueRef ratio(ck *k, int lin, LLVMValueRef u, LLVMValueRef v, LLVMValueRef n);

/* The attention matrix A[u][v] = [v <= l(u)] sum_n W[u][n] R[v][n] P_l(u)[n] / P_v[n]. */
static LLVMValueRef a_W_att(mm *m, LLVMValueRef u, LLVMValueRef n, LLVMValueRef *a2) {
  *a2 = bx(m->k, lrow(m->k, m->lin, u), n);
  return ld_W(m, u, n);
}
static LLVMValueRef b_R_att(mm *m, LLVMValueRef n, LLVMValueRef v, LLVMValueRef *b2) {
  *b2 = bx(m->k, add(m->k, v, i32c(m->k, 1)), n);
  return ld_R(m, v, n);
}
static LLVMValueRef comb_att(mm *m, LLVMValueRef u, LLVMValueRef v, LLVMValueRef kk, LLVMValueRef a,
                             LLVMValueRef a2, LLVMValueRef b, LLVMValueRef b2) {
  (void)kk;
  ck *k = m->k;
  codegen *cg = k->cg;
  LLVMValueRef ok = causal(k, m->lin, u, v);
  /* masked first: exp of a positive difference may overflow */
  LLVMValueRef d = cg_select(cg, ok, cg_fsub(cg, a2, b2), fzero(k));
  return cg_select(cg, ok, cg_fmul(cg, cg_fmul(cg, a, b), fexp(k, d)), fzero(k));
}
/* The attention matrix of lin q against update a: the forward keeps every
 * pair's (its products then run side by side), the backward one. */
static int att_arr(ck *k, int q, int a) {
  bool all = keeps_all_pairs(k->p, k->lay == &k->p->bw);
  return k->lay->A + (all ? (q * k->g->n_upd + a) * k->p->L * k->p->sl : 0);
}
/* Its gradient's (the backward's), likewise. */
static int ag_arr(ck *k, int q, int a) {
  return k->lay->Ag + (keeps_all_pairs(k->p, true) ? (q * k->g->n_upd + a) * k->p->L * k->p->sl : 0);
}
/* The merged update's scalar s at step u of the chunk (merge_of). */
static LLVMValueRef merge_scalar(ck *k, LLVMValueRef u) {
  memo_clear(k->e);
  LLVMValueRef sc = product(k->e, &k->g->merge_s, k->g->merge_sign, u, clamp_t(k, u), NULL, NULL);
  memo_clear(k->e);
  return sc;
}
static void epi_A(mm *m, LLVMValueRef u, LLVMValueRef v, LLVMValueRef acc) {
  ck *k = m->k;
  /* a scalar decay: the ratio is the same for every column, so it scales
   * the plain product here instead of every term of it */
  if (plain(k, m->fast)) acc = cg_select(k->cg, causal(k, m->lin, u, v), acc, fzero(k));
  else if (k->p->nd == 1) acc = cg_fmul(k->cg, acc, ratio(k, m->lin, u, v, NULL));
  sh_st(k, att_arr(k, m->lin, m->upd), at2(k, u, k->p->sl, v), acc);
  if (k->merge_pairs && m->upd == k->g->merge_into) /* b = s r: A_qb = A_qr diag(s) */
    sh_st(k, att_arr(k, m->lin, k->g->rank_upd), at2(k, u, k->p->sl, v), cg_fmul(k->cg, acc, merge_scalar(k, v)));
}

/* Y[u][m] += o(u, m) * acc (the forward's outputs). */
static void epi_Y(mm *m, LLVMValueRef u, LLVMValueRef i, LLVMValueRef acc) {
  ck *k = m->k;
  codegen *cg = k->cg;
  if (k->g->lin_rank[m->lin] >= 0) { /* the rank-one columns' right side */
    LLVMValueRef at = at2(k, u, k->p->sm, i);
    sh_st(k, k->lay->XT, at, cg_fadd(cg, sh_ld(k, k->lay->XT, at), acc));
    return;
  }
  const chunk_out_term *ot = lin_term(k->g, m->lin);
  if (k->p->col) acc = cg_fmul(cg, acc, fexp(k, bxm(k, lrow(k, m->lin, u), i))); /* the sum ran over C / P_v */
  memo_clear(k->e);
  LLVMValueRef o = product(k->e, &ot->outer, ot->sign, u, clamp_t(k, u), in_extent(k, grow(k, i), k->p->M), NULL);
  memo_clear(k->e);
  int y = k->lay->Y[k->g->lin_out[m->lin]];
  LLVMValueRef at = at2(k, u, k->p->sm, i);
  sh_st(k, y, at, cg_fma(cg, o, acc, sh_ld(k, y, at)));
}
static LLVMValueRef a_A(mm *m, LLVMValueRef u, LLVMValueRef v, LLVMValueRef *a2) {
  (void)a2;
  return sh_ld(m->k, att_arr(m->k, m->lin, m->upd), at2(m->k, u, m->k->p->sl, v));
}
static LLVMValueRef op_C(mm *m, LLVMValueRef v, LLVMValueRef i, LLVMValueRef *extra) {
  (void)extra;
  return ld_C(m, v, i);
}

/* The state at the chunk's end: S * P_last + sum_v C[v] (R[v] * P_last / P_v). */
static LLVMValueRef op_C_t(mm *m, LLVMValueRef i, LLVMValueRef v, LLVMValueRef *extra) {
  (void)extra;
  return ld_C(m, v, i);
}
static LLVMValueRef b_R_to_end(mm *m, LLVMValueRef v, LLVMValueRef n, LLVMValueRef *b2) {
  (void)b2;
  ck *k = m->k;
  if (plain(k, m->fast)) return ld_R(m, v, n); /* R / P_v or C / P_v: P_last goes in the epilogue */
  if (k->lay->Re[m->upd] >= 0) return sh_ld(k, k->lay->Re[m->upd], at2(k, v, k->p->sn, n));
  LLVMValueRef d = cg_fsub(k->cg, bx(k, lastrow(k), n), bx(k, add(k, v, i32c(k, 1)), n));
  return cg_fmul(k->cg, ld_R(m, v, n), fexp(k, d));
}
static void epi_state(mm *m, LLVMValueRef i, LLVMValueRef n, LLVMValueRef acc, int arr) {
  ck *k = m->k;
  codegen *cg = k->cg;
  LLVMValueRef at = at2(k, i, k->p->ss, n);
  LLVMValueRef old = sh_ld(k, arr, at), last = sh_ld(k, k->lay->EL, k->p->col ? i : n);
  if (m->first) old = cg_fmul(cg, old, last);
  /* sum C (R / P_v) or (C / P_v) R, times P_last (a column decay's G carries its own) */
  if ((m->fast || k->p->col) && arr == k->lay->S) acc = cg_fmul(cg, acc, last);
  sh_st(k, arr, at, cg_fadd(cg, old, acc));
}
static void epi_S(mm *m, LLVMValueRef i, LLVMValueRef n, LLVMValueRef acc) { epi_state(m, i, n, acc, m->k->lay->S); }
static void epi_dS(mm *m, LLVMValueRef i, LLVMValueRef n, LLVMValueRef acc) { epi_state(m, i, n, acc, m->k->lay->dS); }

/* -------------------------------------------------------- global arrays */
/* The seeds' arrays in the workspace: float32 [parts][B][Tw][H][E], the
 * backward window's steps (t from t_lo). */
static LLVMValueRef seed_index(ck *k, LLVMValueRef part, LLVMValueRef t, LLVMValueRef e, int64_t E) {
  if (k->p->fused) /* this chunk's scratch, [B][H][L][E] */
    return add(k, mul(k, add(k, mul(k, add(k, mul(k, k->b, k->H), k->h), i64c(k, k->p->L)), sub(k, t, k->t0)),
                      i64c(k, E)), e);
  LLVMValueRef x = add(k, mul(k, part, k->B), k->b);
  x = add(k, mul(k, x, k->Tw), sub(k, t, k->t_lo));
  x = add(k, mul(k, x, k->H), k->h);
  return add(k, mul(k, x, i64c(k, E)), e);
}

/* *p += v as a reduction the thread does not wait for (red.global.add):
 * a load, add and store would stall on the load, and a tile's elements
 * went one after another.  Still deterministic: each element has one
 * writer per product, and the products adding to one array are ordered
 * by the barriers between them. */
static void global_add(ck *k, LLVMValueRef ptr, LLVMValueRef idx, LLVMValueRef v) {
  codegen *cg = k->cg;
  LLVMValueRef p = cg_gep(cg, cg->t_f32, ptr, idx);
  LLVMBuildAtomicRMW(cg->b, LLVMAtomicRMWBinOpFAdd, p, v, LLVMAtomicOrderingMonotonic, 0);
}
/* Add v to seed s at step u (i32) of the chunk, element x (i32), this
 * block's part (rows and log decay) or the whole (columns). */
static void seed_add(ck *k, int s, LLVMValueRef u, LLVMValueRef x, LLVMValueRef v, bool store) {
  bool col = k->g->seed_cls[s] == FRNN_COL;
  int64_t E = ck_seed_width(k->p, k->g, s);
  LLVMValueRef e = col ? grow(k, x) : sext(k, x);
  LLVMValueRef ok = and1(k, step_ok(k, u), col ? row_ok(k, x) : slt(k, e, i64c(k, E)));
  LLVMBasicBlockRef no = if_open(k, ok);
  LLVMValueRef part = col ? i64c(k, 0) : k->mb;
  LLVMValueRef idx = seed_index(k, part, add(k, k->t0, sext(k, u)), e, E);
  if (store) cg_store(k->cg, v, cg_gep(k->cg, k->cg->t_f32, k->seed_ptr[s], idx));
  else global_add(k, k->seed_ptr[s], idx, v);
  if_close(k, no);
}

/* ------------------------------------------------- backward's products */
static LLVMValueRef op_G(mm *m, LLVMValueRef u, LLVMValueRef i, LLVMValueRef *extra) {
  (void)extra;
  return ld_G(m, u, i);
}
static void epi_Ag(mm *m, LLVMValueRef u, LLVMValueRef v, LLVMValueRef acc) {
  ck *k = m->k;
  /* a scalar decay's ratio goes in here (the products below are then plain) */
  if (!plain(k, m->fast) && k->p->nd == 1) acc = cg_fmul(k->cg, acc, ratio(k, m->lin, u, v, NULL));
  sh_st(k, ag_arr(k, m->lin, m->upd), at2(k, u, k->p->sl, v), cg_select(k->cg, causal(k, m->lin, u, v), acc, fzero(k)));
}
/* dC[v][i] += sum_u A[u][v] G[u][i] */
static LLVMValueRef a_A_t(mm *m, LLVMValueRef v, LLVMValueRef u, LLVMValueRef *a2) {
  (void)a2;
  return sh_ld(m->k, att_arr(m->k, m->lin, m->upd), at2(m->k, u, m->k->p->sl, v));
}
static void epi_dC(mm *m, LLVMValueRef v, LLVMValueRef i, LLVMValueRef acc) {
  ck *k = m->k;
  if (k->p->col) { /* the gradient of C / P_v over P_v; from dS, carried from the chunk's end */
    LLVMValueRef d = cg_fneg(k->cg, bxm(k, add(k, v, i32c(k, 1)), i));
    if (m->state == k->lay->dS) d = cg_fadd(k->cg, d, bxm(k, lastrow(k), i));
    acc = cg_fmul(k->cg, acc, fexp(k, d));
  }
  seed_add(k, k->g->seed_c[m->upd], v, i, acc, m->store);
}
/* dW[u][n] += sum_v Ag[u][v] R[v][n] P_l(u)[n] / P_v[n] (causal) */
static LLVMValueRef a_Ag(mm *m, LLVMValueRef u, LLVMValueRef v, LLVMValueRef *a2) {
  (void)a2;
  return sh_ld(m->k, ag_arr(m->k, m->lin, m->upd), at2(m->k, u, m->k->p->sl, v));
}
static LLVMValueRef b_R(mm *m, LLVMValueRef v, LLVMValueRef n, LLVMValueRef *b2) {
  (void)b2;
  return ld_R(m, v, n);
}
static LLVMValueRef ratio(ck *k, int lin, LLVMValueRef u, LLVMValueRef v, LLVMValueRef n) {
  codegen *cg = k->cg;
  LLVMValueRef ok = causal(k, lin, u, v);
  LLVMValueRef d = cg_fsub(cg, bx(k, lrow(k, lin, u), n), bx(k, add(k, v, i32c(k, 1)), n));
  return cg_select(cg, ok, fexp(k, cg_select(cg, ok, d, fzero(k))), fzero(k));
}
static LLVMValueRef comb_dW(mm *m, LLVMValueRef u, LLVMValueRef n, LLVMValueRef v, LLVMValueRef a,
                            LLVMValueRef a2, LLVMValueRef b, LLVMValueRef b2) {
  (void)a2, (void)b2;
  return cg_fmul(m->k->cg, cg_fmul(m->k->cg, a, b), ratio(m->k, m->lin, u, v, n));
}
static void epi_dW(mm *m, LLVMValueRef u, LLVMValueRef n, LLVMValueRef acc) {
  ck *k = m->k;
  if (m->fast) acc = cg_fmul(k->cg, acc, fexp(k, bx(k, lrow(k, m->lin, u), n))); /* sum Ag (R / P_v), times P_l */
  seed_add(k, k->g->seed_w[m->lin], u, n, acc, m->store);
}
/* dR[v][n] += sum_u Ag[u][v] W[u][n] P_l(u)[n] / P_v[n] (causal) */
static LLVMValueRef a_Ag_t(mm *m, LLVMValueRef v, LLVMValueRef u, LLVMValueRef *a2) {
  (void)a2;
  return sh_ld(m->k, ag_arr(m->k, m->lin, m->upd), at2(m->k, u, m->k->p->sl, v));
}
static LLVMValueRef b_W(mm *m, LLVMValueRef u, LLVMValueRef n, LLVMValueRef *b2) {
  (void)b2;
  return ld_W(m, u, n);
}
static LLVMValueRef comb_dR(mm *m, LLVMValueRef v, LLVMValueRef n, LLVMValueRef u, LLVMValueRef a,
                            LLVMValueRef a2, LLVMValueRef b, LLVMValueRef b2) {
  (void)a2, (void)b2;
  return cg_fmul(m->k->cg, cg_fmul(m->k->cg, a, b), ratio(m->k, m->lin, u, v, n));
}
static void epi_dR(mm *m, LLVMValueRef v, LLVMValueRef n, LLVMValueRef acc) {
  ck *k = m->k;
  if (k->g->seed_r[m->upd] < 0) return; /* (b merged out: never run for it) */
  if (m->fast) /* sum Ag (W P_l), over P_v */
    acc = cg_fmul(k->cg, acc, fexp(k, cg_fneg(k->cg, bx(k, add(k, v, i32c(k, 1)), n))));
  seed_add(k, k->g->seed_r[m->upd], v, n, acc, m->store);
}
/* X w (before dy): into dO's array, multiplied by dy at the chunk's end. */
static void epi_Xw(mm *m, LLVMValueRef u, LLVMValueRef i, LLVMValueRef acc) {
  ck *k = m->k;
  if (k->p->col) acc = cg_fmul(k->cg, acc, fexp(k, bxm(k, lrow(k, m->lin, u), i)));
  seed_add(k, k->g->seed_o[m->lin], u, i, acc, m->store);
}
/* dW[u][n] += P_l(u)[n] sum_i G[u][i] S[i][n] */
static void epi_dW_state(mm *m, LLVMValueRef u, LLVMValueRef n, LLVMValueRef acc) {
  ck *k = m->k;
  if (!plain(k, false)) acc = cg_fmul(k->cg, acc, fexp(k, bx(k, lrow(k, m->lin, u), n))); /* a column's: in G */
  seed_add(k, k->g->seed_w[m->lin], u, n, acc, false);
}
/* dC[v][i] += sum_n dS[i][n] R[v][n] P_last[n] / P_v[n] */
static LLVMValueRef a_R_to_end(mm *m, LLVMValueRef v, LLVMValueRef n, LLVMValueRef *a2) {
  if (m->fast) return cg_fmul(m->k->cg, ld_R(m, v, n), sh_ld(m->k, m->k->lay->EL, n));
  return b_R_to_end(m, v, n, a2);
}
/* dR[v][n] += P_last[n] / P_v[n] sum_i C[v][i] dS[i][n] */
static void epi_dR_end(mm *m, LLVMValueRef v, LLVMValueRef n, LLVMValueRef acc) {
  ck *k = m->k;
  if (k->g->seed_r[m->upd] < 0) return; /* (b merged out: never run for it) */
  if (!plain(k, false)) { /* a column decay's ratio is in its operand (op_C_to_end) */
    LLVMValueRef d = cg_fsub(k->cg, bx(k, lastrow(k), n), bx(k, add(k, v, i32c(k, 1)), n));
    acc = cg_fmul(k->cg, acc, fexp(k, d));
  }
  seed_add(k, k->g->seed_r[m->upd], v, n, acc, false);
}
/* A column decay's C / P_v carried to the chunk's end: C P_last / P_v. */
static LLVMValueRef op_C_to_end(mm *m, LLVMValueRef v, LLVMValueRef i, LLVMValueRef *extra) {
  (void)extra;
  return cg_fmul(m->k->cg, ld_C(m, v, i), sh_ld(m->k, m->k->lay->EL, i));
}
/* dS_before[i][n] = dS[i][n] P_last[n] + sum_u G[u][i] W[u][n] P_l(u)[n] */
static LLVMValueRef a_G_t(mm *m, LLVMValueRef i, LLVMValueRef u, LLVMValueRef *a2) {
  (void)a2;
  return ld_G(m, u, i);
}

/* ------------------------------------------------- the low-rank class */
/* The rank-one term's columns x_t = S_{t-1} a_t solve one unit lower
 * triangular system per chunk, (I - G_ab) X = A~ S_0^T + G_ar C, and the
 * backward's dH its transpose (docs/design-chunked.md, "The low-rank
 * class").  Both go through TI = (I - G_ab)^-1, formed once per chunk by
 * L threads: each solve is then one more [L,L] x [L,M] product. */

/* TI = (I - A)^-1 for the strictly lower triangular A in the [L,L] array:
 * thread j forms column j top down, TI[t][j] = [t = j] + sum_{s<t} A[t][s]
 * TI[s][j], the column in registers.  Unrolled: every load of A (the same
 * address across the threads) goes out ahead of the sums; as a loop over
 * shared memory it cost 0.34 ms of the delta rule's 2.6 ms forward.  (The
 * forward's only: the backward loads TI from the checkpoints.) */
static void invert_unit_lower(ck *k) {
  codegen *cg = k->cg;
  int L = k->p->L, sl = k->p->sl, G = att_arr(k, k->g->rank_lin, k->g->rank_upd);
  if (probe_skips(20)) return;
  LLVMBasicBlockRef no = if_open(k, slt(k, k->tid, i32c(k, L)));
  LLVMValueRef j = k->tid, col[64];
  for (int t = 0; t < L; t++) {
    /* two partial sums: half the dependent chain */
    LLVMValueRef acc[2] = {cg_select(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, j, i32c(k, t), ""), cg_f32(cg, 1.0), fzero(k)),
                           fzero(k)};
    for (int sx = 0; sx < t; sx++)
      acc[sx & 1] = cg_fma(cg, sh_ld(k, G, i32c(k, t * sl + sx)), col[sx], acc[sx & 1]);
    col[t] = cg_fadd(cg, acc[0], acc[1]);
    sh_st(k, k->lay->TI, at2(k, i32c(k, t), sl, j), col[t]);
  }
  if_close(k, no);
}

static LLVMValueRef a_TI(mm *m, LLVMValueRef u, LLVMValueRef v, LLVMValueRef *a2) {
  (void)a2;
  return sh_ld(m->k, m->k->lay->TI, at2(m->k, u, m->k->p->sl, v));
}
static LLVMValueRef a_TI_t(mm *m, LLVMValueRef v, LLVMValueRef u, LLVMValueRef *a2) {
  (void)a2;
  return sh_ld(m->k, m->k->lay->TI, at2(m->k, u, m->k->p->sl, v));
}
static LLVMValueRef op_XT(mm *m, LLVMValueRef v, LLVMValueRef i, LLVMValueRef *extra) {
  (void)extra;
  return sh_ld(m->k, m->k->lay->XT, at2(m->k, v, m->k->p->sm, i));
}
/* XT = acc: the first product into the solve's right side */
static void epi_XT_set(mm *m, LLVMValueRef u, LLVMValueRef i, LLVMValueRef acc) {
  sh_st(m->k, m->k->lay->XT, at2(m->k, u, m->k->p->sm, i), acc);
}
/* The forward's products through S, stacked: the outputs' parts, or the
 * solve's right side. */
static void epi_Y_or_XT(mm *m, LLVMValueRef u, LLVMValueRef i, LLVMValueRef acc) {
  if (m->k->g->lin_rank[m->lin] >= 0) epi_XT_set(m, u, i, acc);
  else epi_Y(m, u, i, acc);
}
/* Merged (the backward's rank_gradient): acc = sum_n dS[i][n] r~[u][n] is
 * both the dS part of the merged update's column gradient (stored: the
 * chunk's first product into that seed) and, times s, the rank-one
 * column's (b~ = s r~): one product for sites 19 and 12. */
static void epi_XT_merged(mm *m, LLVMValueRef u, LLVMValueRef i, LLVMValueRef acc) {
  ck *k = m->k;
  sh_st(k, k->lay->XT, at2(k, u, k->p->sm, i), cg_fmul(k->cg, merge_scalar(k, u), acc));
  seed_add(k, k->g->seed_c[k->g->merge_into], u, i, acc, true);
}
/* X = TI XT into the rank-one update's column array */
static void epi_X(mm *m, LLVMValueRef u, LLVMValueRef i, LLVMValueRef acc) {
  ck *k = m->k;
  LLVMValueRef at = at2(k, u, k->p->sm, i);
  sh_st(k, k->lay->C[k->g->rank_upd], at, acc);
  if (k->g->merge_into < 0) return;
  /* the merged column C + s X (merge_of): the end state then takes one update */
  int c = k->lay->C[k->g->merge_into];
  sh_st(k, c, at, cg_fadd(k->cg, sh_ld(k, c, at), cg_fmul(k->cg, merge_scalar(k, u), acc)));
}
/* XT[v][i] += acc (the backward's dX before the solve) */
static void epi_XT(mm *m, LLVMValueRef v, LLVMValueRef i, LLVMValueRef acc) {
  LLVMValueRef at = at2(m->k, v, m->k->p->sm, i);
  sh_st(m->k, m->k->lay->XT, at, cg_fadd(m->k->cg, sh_ld(m->k, m->k->lay->XT, at), acc));
}
/* dH = TI^T dX into the rank-one lin's gradient array */
static void epi_dH(mm *m, LLVMValueRef v, LLVMValueRef i, LLVMValueRef acc) {
  sh_st(m->k, m->k->lay->G[m->k->g->rank_lin], at2(m->k, v, m->k->p->sm, i), acc);
}

/* The attention matrix of lin q against update a into A (causal, decays in). */
static void attention(ck *k, int q, int a, int site) {
  mm m = new_mm(k, k->p->L, k->p->L, k->p->Np);
  m.lin = q, m.upd = a, m.a = a_W_att, m.b = b_R_att, m.epi = epi_A;
  m.combine = k->p->nd == 1 ? NULL : comb_att;
  run_both(&m, site);
  cg_barrier(k->cg);
}

/* The same without the barrier, its tiles free to go to other warps
 * (spread): the products beside it write arrays of their own (the
 * forward's and bw_pairs' every pair's matrix in its own, att_arr). */
static void attention_pair(ck *k, int q, int a, int site) {
  mm m = new_mm(k, k->p->L, k->p->L, k->p->Np);
  m.lin = q, m.upd = a, m.a = a_W_att, m.b = b_R_att, m.epi = epi_A, m.spread = true;
  m.combine = k->p->nd == 1 ? NULL : comb_att;
  run_both(&m, site);
}

/* The gradient of lin q's attention matrix against update a, Ag =
 * [causal] G_q C_a^T, into its array (ag_arr); spread, no barrier. */
static void attention_gradient(ck *k, int q, int a) {
  mm m = new_mm(k, k->p->L, k->p->L, k->p->Mp);
  m.lin = q, m.upd = a, m.a = op_G, m.b = op_C_t, m.epi = epi_Ag, m.spread = true;
  run_both(&m, 5);
}

/* The product of lin q's attention matrices with the columns of every
 * update not in `skip` (a bit each) into one accumulator, then epi_Y (a
 * lin's outputs, or the rank-one term's right side); nothing where there
 * is no such update. */
static void through_updates(ck *k, int q, unsigned skip, int site) {
  const ck_plan *p = k->p;
  int n = 0, only = -1;
  for (int a = 0; a < k->g->n_upd; a++)
    if (!(skip >> a & 1)) n++, only = a;
  if (n == 0) return;
  mm m = new_mm(k, p->L, p->Mp, p->L);
  m.lin = q, m.upd = only, m.a = a_A, m.b = op_C, m.epi = epi_Y;
  if (n > 1) m.parts = k->g->n_upd, m.skip = skip, m.upd = 0;
  run_mm_probe(&m, site);
}

/* The rank-one update's bit where b is merged out of the backward
 * (chunk_gpu.merge_rows: no product is formed for it), else none. */
static unsigned merged_out(const chunk_gpu *g) { return g->merge_rows ? 1u << g->rank_upd : 0; }

/* b merged out of the backward (chunk_gpu.merge_rows): the merged
 * update's column array becomes C' = C + s X (the forward's merged column)
 * once X is copied in.  The products through it then give r's whole
 * gradient, its own and s times b's: dR through dS (C'^T dS) and through
 * the pairs (Ag' = [causal] G C'^T, which also serves dW and X w), and
 * none is formed for b. */
static void merge_rows_column(ck *k) {
  const ck_plan *p = k->p;
  int c = k->lay->C[k->g->merge_into], x = k->lay->C[k->g->rank_upd];
  elems r = elems_open(k, p->L * p->Mp, p->Mp);
  LLVMValueRef at = at2(k, r.u, p->sm, r.x);
  sh_st(k, c, at, cg_fma(k->cg, merge_scalar(k, r.u), sh_ld(k, x, at), sh_ld(k, c, at)));
  elems_close(k, &r);
}
/* ... and s's seed: sum_n r_v[n] db_v[n] = sum_i X[v][i] dC[v][i], X's dot
 * with the merged update's whole column gradient (through dS and every
 * pair, the rank-one lin's too: complete by now), no product.  A step's
 * sum is SUM_LANES lanes' (columns i = lane, lane + 16, ...: every lane's
 * loads in flight at once) added by shuffles.  The chain adds the blocks'
 * parts. */
static void merged_scalar_seed(ck *k) {
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  codegen *cg = k->cg;
  int x = k->lay->C[g->rank_upd], dc = g->seed_c[k->g->merge_into];
  for (elems r = elems_first(k, p->L * SUM_LANES, SUM_LANES); elems_more(&r); elems_next(k, &r)) {
    LLVMValueRef t = clamp_t(k, r.u), acc = fzero(k);
    for (int i0 = 0; i0 < p->Mp; i0 += SUM_LANES) {
      LLVMValueRef i = add(k, r.x, i32c(k, i0));
      LLVMValueRef in_block = slt(k, i, i32c(k, p->Mp));
      LLVMValueRef ok = and1(k, in_block, row_ok(k, cg_select(cg, in_block, i, i32c(k, 0))));
      LLVMValueRef ic = cg_select(cg, ok, i, i32c(k, 0));
      LLVMValueRef d = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, k->seed_ptr[dc], seed_index(k, i64c(k, 0), t, grow(k, ic), p->M)));
      acc = cg_select(cg, ok, cg_fma(cg, sh_ld(k, x, at2(k, r.u, p->sm, ic)), d, acc), acc);
    }
    acc = cg_sum_lanes_f32(cg, acc, SUM_LANES);
    LLVMBasicBlockRef others = if_open(k, elems_valid(k, &r, LLVMBuildICmp(cg->b, LLVMIntEQ, r.x, i32c(k, 0), "")));
    seed_add(k, g->seed_s, r.u, i32c(k, 0), acc, !p->fused);
    if_close(k, others);
  }
}

/* dH into the rank-one lin's gradient array: what reaches X from the
 * outputs (through the attention matrices, transposed) and from the
 * gradient after the chunk (dS, through b~ carried to the end), then the
 * transposed solve.  Three phases: (1) the dS part stores into XT while
 * the outputs' attention matrices against X are formed beside it, and,
 * where the backward keeps every pair's (bw_pairs), every other pair's
 * matrix (chunk_pairs then forms only the gradients Ag, which may lie in
 * XT: layout; merged, those against b are stored beside the merged
 * update's, epi_A); (2) the outputs' parts added to XT; (3) the solve (b
 * merged out: beside it, C' = C + s X).  (Was five phases: XT zeroed, each
 * matrix, each part, the solve.) */
static void rank_gradient(ck *k) {
  const chunk_gpu *g = k->g;
  const ck_plan *p = k->p;
  int x = g->rank_upd;
  mm m = new_mm(k, p->L, p->Mp, p->Np);
  m.upd = x, m.a = a_R_to_end, m.b = b_state_t, m.state = k->lay->dS, m.epi = epi_XT_set, m.spread = true;
  if (k->g->merge_into >= 0 && g->seed_c[k->g->merge_into] >= 0) m.upd = k->g->merge_into, m.epi = epi_XT_merged;
  run_both(&m, 19);
  /* without every pair's array the matrices share one: the first
   * output's beside the dS part, each later one in a phase of its own */
  bool all = keeps_all_pairs(p, true);
  int first_out = 0;
  while (first_out < g->n_lin && g->lin_rank[first_out] >= 0) first_out++;
  for (int q = 0; q < g->n_lin; q++)
    if (g->lin_rank[q] < 0 && (all || q == first_out) && !k->merge_pairs) attention_pair(k, q, x, 16);
  for (int q = 0; q < (all ? g->n_lin : 0); q++)
    for (int a = 0; a < g->n_upd; a++)
      if ((a != x || g->lin_rank[q] >= 0) && !(k->merge_pairs && a == x)) attention_pair(k, q, a, 4);
  cg_barrier(k->cg);
  for (int q = 0; q < g->n_lin; q++) {
    if (g->lin_rank[q] >= 0) continue;
    if (!all && q != first_out) attention(k, q, x, 16);
    m = new_mm(k, p->L, p->Mp, p->L);
    m.lin = q, m.upd = x, m.a = a_A_t, m.b = op_G, m.epi = epi_XT;
    run_mm_probe(&m, 19);
    cg_barrier(k->cg);
  }
  m = new_mm(k, p->L, p->Mp, p->L);
  m.a = a_TI_t, m.b = op_XT, m.epi = epi_dH;
  run_mm_probe(&m, 18);
  if (g->merge_rows) merge_rows_column(k); /* (X is in: its copy was waited for before) */
  cg_barrier(k->cg);
}

/* --------------------------------------------------------------- kernels */
static void setup(ck *k, const char *name, LLVMTypeRef *types, int n) {
  codegen *cg = k->cg;
  bool fwd = k->lay == &k->p->fw;
  k->threads = fwd ? k->p->threads_fwd : k->p->threads;
  k->tiles = fwd ? k->p->mma_tiles_fwd : k->p->mma_tiles;
  if (k->spec->guard) types[n++] = cg->t_gptr; /* the call's flag, last */
  cg_kernel(cg, name, types, n, k->threads, k->lay ? k->p->min_blocks : k->p->chain_min_blocks);
  /* No two pointers reach the same memory (pipeline.c refuses states
   * updated in place; the workspace's arrays are disjoint): loads may then
   * pass stores through other pointers, and read-only ones go through the
   * non-coherent path. */
  for (int i = 0; i < n; i++)
    if (LLVMGetTypeKind(types[i]) == LLVMPointerTypeKind) cg_param_noalias(cg, cg->fn, i);
  k->entry = LLVMGetEntryBasicBlock(cg->fn);
  k->smem = cg_dynamic_shared(cg, "frnn_ck_smem");
  k->tid = cg_tid_x(cg);
  k->lane = LLVMBuildAnd(cg->b, k->tid, i32c(k, 31), "");
  k->warp = LLVMBuildLShr(cg->b, k->tid, i32c(k, 5), "");
  k->h = cg_zext64(cg, cg_ctaid_y(cg));
  k->b = cg_zext64(cg, cg_ctaid_z(cg));
  k->flag = k->spec->guard ? cg_param(cg, n - 1) : NULL;
  /* The forward sets the flag (term_arrays); the others run only while it
   * is clear. */
  if (!fwd) cg_guard(cg, k->flag, k->spec->guard);
}

/* Loop over the Mp x Np elements of a block's rows of a state: i, n (i32). */
typedef struct sloop {
  cloop l;
  LLVMValueRef i, n, ok; /* ok: a real element (row < M, column < N) */
} sloop;
static sloop state_open(ck *k) {
  sloop r;
  r.l = loop_open(k, k->tid, i32c(k, k->p->Mp * k->p->Np), i32c(k, k->threads));
  LLVMValueRef idx = loop_var(k, &r.l);
  r.i = LLVMBuildUDiv(k->cg->b, idx, i32c(k, k->p->Np), "");
  r.n = LLVMBuildURem(k->cg->b, idx, i32c(k, k->p->Np), "");
  r.ok = and1(k, row_ok(k, r.i), slt(k, r.n, i32c(k, (int)k->p->N)));
  return r;
}
/* The checkpoints, float32, slot-major: states [slot][B][H][M][N] (the
 * forward's: chunk c's first state at slot c / every where c % every == 0,
 * the last state after them; a backward recompute's, from the chunk after
 * the stored one it starts from, dense),
 * and (the low-rank class) per chunk its columns X [L][M] and inverse TI
 * [L][L] (ck_rank_floats) in [chunk][B][H][...], so the backward need not
 * solve again.  Slot-major, a window's slots are one range of memory. */
static LLVMValueRef ckpt_index(ck *k, LLVMValueRef slot, LLVMValueRef i, LLVMValueRef n) {
  LLVMValueRef x = add(k, mul(k, add(k, mul(k, slot, k->B), k->b), k->H), k->h);
  x = add(k, mul(k, x, i64c(k, k->p->M)), grow(k, i));
  return add(k, mul(k, x, i64c(k, k->p->N)), sext(k, n));
}
/* Chunk slot c's rank-one columns (off < L M: X[u][i] at u M + i) and
 * inverse (TI[u][v] at L M + u L + v). */
static LLVMValueRef rank_index(ck *k, LLVMValueRef c, LLVMValueRef off) {
  LLVMValueRef x = add(k, mul(k, add(k, mul(k, c, k->B), k->b), k->H), k->h);
  return add(k, mul(k, x, i64c(k, ck_rank_floats(k->p, k->g))), off);
}

/* The rank-one columns and inverse of chunk slot c between shared memory
 * and the checkpoints: stored by the forward (X: this block's rows; TI: the
 * first block's), loaded by cp.async in the backward. */
static void rank_ckpt(ck *k, LLVMValueRef rank, LLVMValueRef c, bool store) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  int L = p->L;
  {
    elems r = elems_open(k, L * p->Mp, p->Mp);
    LLVMValueRef ok = row_ok(k, r.x), at = at2(k, r.u, p->sm, r.x);
    LLVMValueRef i = cg_select(cg, ok, grow(k, r.x), i64c(k, 0));
    LLVMValueRef g = cg_gep(cg, cg->t_f32, rank, rank_index(k, c, add(k, mul(k, sext(k, r.u), i64c(k, p->M)), i)));
    LLVMValueRef dst = sh(k, k->lay->C[k->g->rank_upd], at);
    if (store) {
      LLVMBasicBlockRef no = if_open(k, ok);
      cg_store(cg, cg_load(cg, cg->t_f32, dst), g);
      if_close(k, no);
    } else {
      cg_copy_async4(cg, dst, g, ok);
    }
    elems_close(k, &r);
  }
  {
    elems r = elems_open(k, L * L, L);
    LLVMValueRef off = add(k, i64c(k, (int64_t)L * p->M), sext(k, add(k, mul(k, r.u, i32c(k, L)), r.x)));
    LLVMValueRef g = cg_gep(cg, cg->t_f32, rank, rank_index(k, c, off));
    LLVMValueRef dst = sh(k, k->lay->TI, at2(k, r.u, p->sl, r.x));
    if (store) {
      LLVMBasicBlockRef no = if_open(k, LLVMBuildICmp(cg->b, LLVMIntEQ, k->mb, i64c(k, 0), ""));
      cg_store(cg, cg_load(cg, cg->t_f32, dst), g);
      if_close(k, no);
    } else {
      cg_copy_async4(cg, dst, g, LLVMConstInt(cg->t_i1, 1, 0));
    }
    elems_close(k, &r);
  }
}
/* rank_ckpt's copies (the backward's) 16 bytes at a time where the rows
 * allow (as state_copy; the columns and inverses lie at multiples of 256
 * bytes in the workspace, a chunk's L (M + L) floats after the last). */
static void rank_copy(ck *k, LLVMValueRef rank, LLVMValueRef c) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  int L = p->L;
  if (!p->wide_copies || p->M % 4 || p->BM % 4 || p->sm % 4 || p->sl % 4 || L % 4 ||
      k->lay->C[k->g->rank_upd] % 4 || k->lay->TI % 4) {
    rank_ckpt(k, rank, c, false);
    return;
  }
  {
    /* X [L][M]: a quad's 4 rows of M are all in it or all past it (M and
     * BM multiples of 4) */
    elems r = elems_open(k, L * p->Mp / 4, p->Mp / 4);
    LLVMValueRef x = mul(k, r.x, i32c(k, 4)), ok = row_ok(k, x);
    LLVMValueRef i = cg_select(cg, ok, grow(k, x), i64c(k, 0));
    LLVMValueRef g = cg_gep(cg, cg->t_f32, rank, rank_index(k, c, add(k, mul(k, sext(k, r.u), i64c(k, p->M)), i)));
    cg_copy_async16(cg, sh(k, k->lay->C[k->g->rank_upd], at2(k, r.u, p->sm, x)), g, ok);
    elems_close(k, &r);
  }
  {
    elems r = elems_open(k, L * L / 4, L / 4);
    LLVMValueRef v = mul(k, r.x, i32c(k, 4));
    LLVMValueRef off = add(k, i64c(k, (int64_t)L * p->M), sext(k, add(k, mul(k, r.u, i32c(k, L)), v)));
    cg_copy_async16(cg, sh(k, k->lay->TI, at2(k, r.u, p->sl, v)), cg_gep(cg, cg->t_f32, rank, rank_index(k, c, off)),
                    LLVMConstInt(cg->t_i1, 1, 0));
    elems_close(k, &r);
  }
}
/* Rows of a state between shared array arr and a tensor or the checkpoints. */
static void state_from_tensor(ck *k, int arr, const gtensor *t, bool nullable) {
  codegen *cg = k->cg;
  sloop r = state_open(k);
  LLVMValueRef v = slot_of(k, cg->t_f32);
  cg_store(cg, fzero(k), v);
  LLVMValueRef ok = r.ok;
  if (nullable) ok = and1(k, ok, LLVMBuildNot(cg->b, is_null(k, t->ptr), ""));
  LLVMBasicBlockRef no = if_open(k, ok);
  cg_store(cg, cg_load_elem(cg, t->ptr, toff(k, t->st, NULL, grow(k, r.i), sext(k, r.n)), t->dt), v);
  if_close(k, no);
  sh_st(k, arr, at2(k, r.i, k->p->ss, r.n), cg_load(cg, cg->t_f32, v));
  loop_close(k, &r.l);
}
static void state_to_tensor(ck *k, int arr, const gtensor *t) {
  codegen *cg = k->cg;
  sloop r = state_open(k);
  LLVMBasicBlockRef no = if_open(k, and1(k, r.ok, LLVMBuildNot(cg->b, is_null(k, t->ptr), "")));
  cg_store_elem(cg, t->ptr, toff(k, t->st, NULL, grow(k, r.i), sext(k, r.n)), t->dt,
                sh_ld(k, arr, at2(k, r.i, k->p->ss, r.n)));
  if_close(k, no);
  loop_close(k, &r.l);
}
static void state_ckpt(ck *k, int arr, LLVMValueRef ckpt, LLVMValueRef slot, bool store) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  enum { G_MAX = 16 };
  int G = p->ckpt_group;
  LLVMBasicBlockRef done = NULL;
  if (store && G > 1 && p->N == p->Np && p->Mp == p->BM && p->Mp * p->Np % (G * k->threads) == 0) {
    /* Where every row of the block is in M (and N needs no padding), G
     * elements a thread at a time, their shared loads before their stores,
     * none under a branch.  A load and a guarded store per element waited on
     * each load in turn (the forward's every chunk). */
    LLVMValueRef whole = sle(k, mul(k, add(k, k->mb, i64c(k, 1)), i64c(k, p->BM)), i64c(k, p->M));
    LLVMBasicBlockRef all = cg_block(cg, "ckpt_rows_in_M"), part = cg_block(cg, "ckpt_rows_past_M");
    done = cg_block(cg, "ckpt_stored");
    cg_cond_br(cg, whole, all, part);
    cg_at(cg, all);
    cloop l = loop_open(k, k->tid, i32c(k, p->Mp * p->Np), i32c(k, G * k->threads));
    LLVMValueRef v[G_MAX], i[G_MAX], n[G_MAX];
    for (int r = 0; r < G; r++) {
      LLVMValueRef idx = add(k, loop_var(k, &l), i32c(k, r * k->threads));
      i[r] = LLVMBuildUDiv(cg->b, idx, i32c(k, p->Np), ""), n[r] = LLVMBuildURem(cg->b, idx, i32c(k, p->Np), "");
      v[r] = sh_ld(k, arr, at2(k, i[r], p->ss, n[r]));
    }
    for (int r = 0; r < G; r++) cg_store(cg, v[r], cg_gep(cg, cg->t_f32, ckpt, ckpt_index(k, slot, i[r], n[r])));
    loop_close(k, &l);
    cg_br(cg, done);
    cg_at(cg, part); /* a block with rows past M: one at a time, as below */
  }
  sloop r = state_open(k);
  LLVMValueRef at = at2(k, r.i, k->p->ss, r.n);
  if (store) {
    LLVMBasicBlockRef no = if_open(k, r.ok);
    cg_store(cg, sh_ld(k, arr, at), cg_gep(cg, cg->t_f32, ckpt, ckpt_index(k, slot, r.i, r.n)));
    if_close(k, no);
  } else {
    /* cp.async: every element's load in flight at once (a load and a
     * store per element waited for each load in turn); padding gets 0
     * from a copy of size 0, its address kept inside the checkpoint. */
    LLVMValueRef i = cg_select(cg, r.ok, r.i, i32c(k, 0)), n = cg_select(cg, r.ok, r.n, i32c(k, 0));
    cg_copy_async4(cg, sh(k, arr, at), cg_gep(cg, cg->t_f32, ckpt, ckpt_index(k, slot, i, n)), r.ok);
  }
  loop_close(k, &r.l);
  if (done) {
    cg_br(cg, done);
    cg_at(cg, done);
  }
}
/* The copy 16 bytes at a time where rows allow (N and the shared row
 * stride multiples of 4 floats; the workspace is 16-byte aligned, which
 * frnn_gpu_forward and _backward check, and its checkpoints lie at
 * multiples of 256 bytes in it), else state_ckpt's.  A copy of 4 bytes took
 * an instruction and its 64-bit address each: at 128 x 128, 64 a thread
 * every chunk, 0.44 ms of the delta rule's backward (H100).  (A run-time
 * check of the alignment instead, with a second path, made the gated delta
 * rule's backward spill 88 bytes in ptxas, 44 without.) */
static void state_copy(ck *k, int arr, LLVMValueRef ckpt, LLVMValueRef slot) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  if (!p->wide_copies || p->N % 4 || p->ss % 4 || arr % 4) { /* (layout places every array at a multiple of 4) */
    state_ckpt(k, arr, ckpt, slot, false);
    return;
  }
  int quads = (int)(p->N / 4);
  cloop l = loop_open(k, k->tid, i32c(k, p->Mp * quads), i32c(k, k->threads));
  LLVMValueRef idx = loop_var(k, &l);
  LLVMValueRef i = LLVMBuildUDiv(cg->b, idx, i32c(k, quads), "");
  LLVMValueRef n = mul(k, LLVMBuildURem(cg->b, idx, i32c(k, quads), ""), i32c(k, 4));
  LLVMValueRef ok = row_ok(k, i);
  cg_copy_async16(cg, sh(k, arr, at2(k, i, p->ss, n)),
                  cg_gep(cg, cg->t_f32, ckpt, ckpt_index(k, slot, cg_select(cg, ok, i, i32c(k, 0)), n)), ok);
  loop_close(k, &l);
}
/* Ask L2 for this block's rows of a stored state (one prefetch per 32
 * floats) and, rank (not null), chunk slot c's columns and inverse: the
 * backward's next chunk then copies them from L2, not DRAM. */
static void ckpt_prefetch(ck *k, LLVMValueRef ckpt, LLVMValueRef slot, LLVMValueRef rank, LLVMValueRef c) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  int runs = (int)((p->N + 31) / 32);
  elems r = elems_open(k, p->Mp * runs, runs);
  LLVMBasicBlockRef no = if_open(k, row_ok(k, r.u));
  cg_prefetch_elem_l2(cg, ckpt, ckpt_index(k, slot, r.u, mul(k, r.x, i32c(k, 32))), TD_F32);
  if_close(k, no);
  elems_close(k, &r);
  if (!rank) return;
  int64_t floats = ck_rank_floats(p, k->g);
  cloop l = loop_open(k, mul(k, k->tid, i32c(k, 32)), i32c(k, (int)floats), i32c(k, 32 * k->threads));
  cg_prefetch_elem_l2(cg, rank, rank_index(k, c, sext(k, loop_var(k, &l))), TD_F32);
  loop_close(k, &l);
}

static LLVMValueRef chunks_of(ck *k) {
  return LLVMBuildSDiv(k->cg->b, add(k, k->T, i64c(k, k->p->L - 1)), i64c(k, k->p->L), "");
}


/* The state at the chunk's end: every update's product summed in one
 * accumulator, one epilogue (the state read and written once); with
 * FRNN_CK_SUM_PARTS=0 one each, barriers between.  No barrier after. */
static void end_state(ck *k) {
  const ck_plan *p = k->p;
  for (int a = 0; a < (p->sum_parts ? 1 : k->g->n_upd); a++) {
    if (!p->sum_parts && a == k->g->rank_upd && k->g->merge_into >= 0) continue; /* (no barrier for it either) */
    if (a) cg_barrier(k->cg);
    mm m = new_mm(k, p->Mp, p->Np, p->L);
    m.parts = p->sum_parts ? k->g->n_upd : 1, m.upd = a, m.first = a == 0;
    if (k->g->merge_into >= 0) m.skip = 1u << k->g->rank_upd; /* in merge_into's column (epi_X) */
    m.a = op_C_t, m.b = b_R_to_end, m.epi = epi_S;
    run_both(&m, 3);
  }
}

/* Where the rank-one term's b is an update's row times scalars of the
 * step (b = s r: the delta rules' -beta k against v beta k^T, whose
 * scalars split_update puts in the column; chunk_gpu.merge_into),
 * x b^T + c r^T = (c + s x) r^T: the forward's end state takes that
 * update's column plus s X, one product over L steps instead of two
 * (epi_X, end_state), and the backward's dS parts of both columns'
 * gradients are one product (epi_XT_merged).  Where every pair's matrix
 * has an array of its own, the pairs against b too (merge_pairs): A_qb =
 * A_qr diag(s) is stored beside A_qr (epi_A), not formed; the forward's
 * outputs take A_qr (C + s X), one product after the solve instead of A_qr
 * C before it and A_qb X after (H100 fw ms: delta rule 1.33 -> 1.25, gated
 * 1.48 -> 1.42).  Measured, not kept: the backward's A_qb^T G_q, the
 * outputs' part of dX, as s times A_qr^T G_q, the outputs' part of the
 * merged column's gradient, one product for both: its atomic adds into
 * that seed in a phase of their own cost more than the product saved
 * (delta rule fw+bw 4.73 -> 4.87 ms).  With chunk_gpu.merge_rows (the
 * default, FRNN_CK_MERGE=3) the backward forms nothing for b's own row
 * gradient (merge_rows_column, merged_scalar_seed; H200 fw+bw delta rule
 * 4.456 -> 4.396 ms, gated 5.348 -> 5.338).  FRNN_CK_MERGE=0: none, 1: the
 * columns only (the eighteenth session's), 2: with the pairs against b. */
static void merge_pairs_of(ck *k) {
  k->merge_pairs = k->g->merge_into >= 0 && chunk_merge_level() >= 2 && keeps_all_pairs(k->p, k->lay == &k->p->bw);
}

static void lower_ck_fwd(ck *k) {
  codegen *cg = k->cg;
  const frnn_step *s = k->s;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  int n_in = s->n_ports[FRNN_PORT_INPUT], n_out = s->n_ports[FRNN_PORT_OUTPUT];
  LLVMTypeRef types[TENSOR_PARAMS * (2 * FRNN_MAX_PORTS + 2) + 16]; /* tensors, then 11 scalars at most */
  int n = 0;
  for (int i = 0; i < n_in + 2 + n_out; i++) tensor_param_types(cg, types, &n);
  int at_ckpt = n;
  types[n++] = cg->t_gptr; /* checkpoints' states, or null */
  types[n++] = cg->t_gptr; /* the rank-one columns and inverses (slot 0: chunk `from`), or null */
  types[n++] = cg->t_i64;  /* T */
  types[n++] = cg->t_i64;  /* H */
  types[n++] = cg->t_i64;  /* B */
  types[n++] = cg->t_i64;  /* the chunks run: from */
  types[n++] = cg->t_i64;  /* to (exclusive) */
  types[n++] = cg->t_i64;  /* the chunk of the states' slot 0 */
  types[n++] = cg->t_i64;  /* a state stored every this many chunks from it */
  types[n++] = cg->t_i32;  /* 0: no outputs, no final state (a backward window's recompute) */
  k->lay = &p->fw;
  k->unroll_loads = k->unroll_sums = p->unroll_loads_fwd;
  setup(k, "frnn_ck_fwd", types, n);
  merge_pairs_of(k);
  k->mb = cg_zext64(cg, cg_ctaid_x(cg));
  k->T = cg_param(cg, at_ckpt + 2), k->H = cg_param(cg, at_ckpt + 3), k->B = cg_param(cg, at_ckpt + 4);
  LLVMValueRef c_lo = cg_param(cg, at_ckpt + 5), c_hi = cg_param(cg, at_ckpt + 6), c0 = cg_param(cg, at_ckpt + 7),
               every = cg_param(cg, at_ckpt + 8);
  LLVMValueRef outputs = LLVMBuildICmp(cg->b, LLVMIntNE, cg_param(cg, at_ckpt + 9), i32c(k, 0), "");
  LLVMValueRef rank = cg_param(cg, at_ckpt + 1), have_rank = LLVMBuildNot(cg->b, is_null(k, rank), "");
  input_leaves(k, k->e, 0);
  gtensor st0 = tensor_at(k, TENSOR_PARAMS * n_in, k->spec->dt_state[0]);
  gtensor fin = tensor_at(k, TENSOR_PARAMS * (n_in + 1), k->spec->dt_final[0]);
  gtensor out[FRNN_MAX_PORTS];
  for (int q = 0; q < n_out; q++) out[q] = tensor_at(k, TENSOR_PARAMS * (n_in + 2 + q), k->spec->dt_out[q]);
  LLVMValueRef ckpt = cg_param(cg, at_ckpt), have_ckpt = LLVMBuildNot(cg->b, is_null(k, ckpt), "");
  LLVMValueRef nch = chunks_of(k);
  /* From the initial state (a backward window's recompute: a view of the
   * checkpoint it starts from), chunks c_lo to c_hi. */
  state_from_tensor(k, k->lay->S, &st0, false);
  cg_barrier(cg);
  cloop lc = loop_open(k, c_lo, c_hi, i64c(k, 1));
  k->c = loop_var(k, &lc);
  k->t0 = mul(k, k->c, i64c(k, p->L));
  if (!probe_skips(25)) scalar_pass(k->e);
  cg_barrier(cg);
  for (int q = 0; q < n_out; q++) {
    cloop l = loop_open(k, k->tid, i32c(k, p->L * p->sm), i32c(k, k->threads));
    sh_st(k, k->lay->Y[q], loop_var(k, &l), fzero(k));
    loop_close(k, &l);
  }
  if (!probe_skips(24)) term_arrays(k, NULL);
  else k->fast = LLVMConstInt(cg->t_i1, 0, 0); /* (as the backward's probe) */
  prefetch_chunk(k, add(k, k->t0, i64c(k, p->L)), NULL, 0);
  {
    /* (a backward window's recompute starts its slots at the chunk after
     * its first: it has that one's state, the checkpoint it started from) */
    LLVMValueRef rel = sub(k, k->c, c0);
    LLVMValueRef due = and1(k, LLVMBuildICmp(cg->b, LLVMIntSGE, rel, i64c(k, 0), ""),
                            LLVMBuildICmp(cg->b, LLVMIntEQ, LLVMBuildSRem(cg->b, rel, every, ""), i64c(k, 0), ""));
    LLVMBasicBlockRef no = if_open(k, and1(k, have_ckpt, due));
    if (!probe_skips(26)) state_ckpt(k, k->lay->S, ckpt, LLVMBuildSDiv(cg->b, rel, every, ""), true);
    if_close(k, no);
    /* The end state's epilogue rewrites S: every element stored first
     * (without outputs, a recompute has no barrier between them; found by
     * the GPU tests, RWKV-6's gradients off at one step in 6000) */
    cg_barrier(cg);
  }
  /* The chunk's products in phases, each ended by a barrier.  A phase's
   * products read what earlier phases wrote and write arrays of their own,
   * so the small ones ([L,L] attention matrices on one or two warps) run
   * side by side (spread) instead of one phase each:
   *   1. every attention matrix (lin q against update a, att_arr) and the
   *      state's parts: Q~ S_0^T into the outputs Y, and (a rank-one term)
   *      A~ S_0^T, the right side of its solve, into XT;
   *   2. the outputs through the updates' columns (all, or all but the
   *      rank-one's, and merged all but the merged update's too); the
   *      rank-one term's G_ar C into XT beside its inverse TI (L threads);
   *   3. the rank-one columns X = TI XT (merged: C + s X, epi_X);
   *   4. the outputs through X (merged: through C + s X), beside the state
   *      at the chunk's end;
   *   5. the outputs stored (without a rank-one term, beside the end
   *      state: the stores' evaluation of the terms independent of S,
   *      RWKV-6's bonus or Mamba-2's D x, then overlaps its product; alone
   *      between two barriers they cost RWKV-6's forward 3.7%, Mamba-2's
   *      3%.  With one, the end state in 4: delta rule fw 1.686 -> 1.660 ms).
   * Without a rank-one term, 3 and 4 go.  In a backward window's
   * recompute (no outputs) only the rank-one term's products and the end
   * state run. */
  int qr = g->rank_lin, xr = g->rank_upd;
  bool solve = qr >= 0;
  k->rot = 0;
  /* With a solve, the lins' products through S stacked (S's fragments
   * loaded once for all: epi_Y_or_XT; the solve's part then at site 0),
   * the solve's alone in a recompute (no outputs). */
  LLVMBasicBlockRef no_outputs = if_open(k, outputs);
  if (solve) {
    mm m = new_mm(k, p->L, p->Mp, p->Np);
    m.parts = g->n_lin, m.by_lin = true, m.stacked = true, m.lin = 0;
    m.a = op_W_decayed, m.b = b_state_t, m.state = k->lay->S, m.epi = epi_Y_or_XT;
    run_both(&m, 0);
  }
  for (int q = 0; q < g->n_lin; q++) {
    if (g->lin_rank[q] >= 0) continue;
    if (!solve) {
      mm m = new_mm(k, p->L, p->Mp, p->Np);
      m.lin = q, m.a = op_W_decayed, m.b = b_state_t, m.state = k->lay->S, m.epi = epi_Y;
      run_both(&m, 0);
    }
    for (int a = 0; a < g->n_upd; a++)
      if (!k->merge_pairs || a != xr) attention_pair(k, q, a, 1); /* (else epi_A stores it) */
  }
  if_close(k, no_outputs);
  memo_clear(k->e); /* values made under the branch do not dominate what follows */
  if (solve) {
    LLVMBasicBlockRef recompute = if_open(k, LLVMBuildNot(cg->b, outputs, ""));
    mm m = new_mm(k, p->L, p->Mp, p->Np);
    m.lin = qr, m.a = op_W_decayed, m.b = b_state_t, m.state = k->lay->S, m.epi = epi_XT_set;
    run_both(&m, 15);
    if_close(k, recompute);
    memo_clear(k->e);
    for (int a = 0; a < g->n_upd; a++)
      if (!k->merge_pairs || a != xr) attention_pair(k, qr, a, 16);
  }
  cg_barrier(cg);
  /* 2 */
  if (solve) {
    invert_unit_lower(k);
    through_updates(k, qr, 1u << xr, 17);
  }
  no_outputs = if_open(k, outputs);
  /* (merged: the merged update's part after the solve, through C + s X) */
  unsigned later = solve ? 1u << xr | (k->merge_pairs ? 1u << k->g->merge_into : 0) : 0;
  for (int q = 0; q < g->n_lin; q++)
    if (g->lin_rank[q] < 0) through_updates(k, q, later, 2);
  if_close(k, no_outputs);
  memo_clear(k->e);
  cg_barrier(cg);
  if (solve) {
    /* 3 */
    mm m = new_mm(k, p->L, p->Mp, p->L);
    m.a = a_TI, m.b = op_XT, m.epi = epi_X;
    run_mm_probe(&m, 18);
    cg_barrier(cg);
    /* 4: X and TI stored for the backward too */
    LLVMBasicBlockRef no = if_open(k, have_rank);
    rank_ckpt(k, rank, sub(k, k->c, c_lo), true);
    if_close(k, no);
    no_outputs = if_open(k, outputs);
    for (int q = 0; q < g->n_lin; q++) {
      if (g->lin_rank[q] >= 0) continue;
      m = new_mm(k, p->L, p->Mp, p->L);
      m.lin = q, m.upd = k->merge_pairs ? k->g->merge_into : xr, m.a = a_A, m.b = op_C, m.epi = epi_Y;
      run_mm_probe(&m, 2);
    }
    if_close(k, no_outputs);
    memo_clear(k->e);
    end_state(k);
    cg_barrier(cg);
  }
  /* 5: the outputs, with the terms independent of S */
  no_outputs = if_open(k, outputs);
  {
    /* Unrolled, every element's value first (its loads in flight at once,
     * at a row clamped into M), then the stores, each under its guard. */
    LLVMValueRef ys[ELEMS_UNROLL_MAX][FRNN_MAX_PORTS];
    bool unrolled = elems_unrolls(k, p->L * p->Mp);
    for (int pass = unrolled ? 0 : 1; pass < 2; pass++)
      for (elems r = elems_first(k, p->L * p->Mp, p->Mp); elems_more(&r); elems_next(k, &r)) {
        LLVMValueRef t = clamp_t(k, r.u), i = grow(k, r.x), ok = and1(k, step_ok(k, r.u), row_ok(k, r.x));
        if (pass == 0 || !unrolled)
          for (int q = 0; q < n_out; q++) {
            LLVMValueRef y = sh_ld(k, k->lay->Y[q], at2(k, r.u, p->sm, r.x));
            for (int tt = 0; tt < g->cf.output[q].n_terms; tt++) {
              const chunk_out_term *ot = &g->cf.output[q].term[tt];
              if (ot->base == CHUNK_BASE_ONE)
                y = cg_fadd(cg, y, product(k->e, &ot->outer, ot->sign, r.u, t, in_extent(k, i, p->M), NULL));
            }
            ys[r.rep][q] = y;
          }
        if (pass == 1) {
          LLVMBasicBlockRef no = if_open(k, elems_valid(k, &r, ok));
          for (int q = 0; q < n_out; q++) cg_store_elem(cg, out[q].ptr, toff(k, out[q].st, t, i, NULL), out[q].dt, ys[r.rep][q]);
          if_close(k, no);
        }
      }
  }
  if_close(k, no_outputs);
  memo_clear(k->e);
  if (!solve) end_state(k);
  cg_barrier(cg);
  loop_close(k, &lc);
  /* The final state, to its tensor and after the stored ones (none in a
   * recompute). */
  LLVMBasicBlockRef no_final = if_open(k, outputs);
  state_to_tensor(k, k->lay->S, &fin);
  {
    LLVMValueRef last = LLVMBuildSDiv(cg->b, add(k, sub(k, nch, c0), sub(k, every, i64c(k, 1))), every, "");
    LLVMBasicBlockRef no = if_open(k, have_ckpt);
    state_ckpt(k, k->lay->S, ckpt, last, true);
    if_close(k, no);
  }
  if_close(k, no_final);
  cg_ret(cg);
}

/* The chain's leaves: the step's inputs (parameters from 0), the output
 * gradients (from at_gout) for the independent terms' seeds, the terms'
 * gradients in the workspace: [parts][B][T][H][E], or, fused into the
 * backward, this chunk's scratch [B][H][L][E] (indexed by the global step:
 * the pointer is moved back by t0 rows). */
static void chain_leaves(ck *k, ev *e, int at_gout) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  int n_in = k->s->n_ports[FRNN_PORT_INPUT];
  input_leaves(k, e, 0);
  for (int q = 0; q < g->n_seeds; q++) {
    leaf *lf = &e->leaves[n_in + q];
    int kind = g->seed_kind[q];
    if (kind == CK_SEED_IND) {
      int o = g->seed_index[q];
      gtensor t = tensor_at(k, at_gout + TENSOR_PARAMS * o, k->spec->dt_gout[o]);
      *lf = (leaf){.kind = LEAF_TENSOR, .nullable = true, .ptr = t.ptr, .dt = t.dt, .parts = 1};
      memcpy(lf->st, t.st, sizeof t.st);
      continue;
    }
    bool col = g->seed_cls[q] == FRNN_COL;
    int64_t E = ck_seed_width(p, g, q);
    *lf = (leaf){.kind = LEAF_TENSOR, .ptr = k->seed_ptr[q], .dt = TD_F32,
                 .parts = col || p->fused ? 1 : p->MB, .sum_width = seed_summed_over_n(g, q) ? E : 0};
    lf->st[4] = col ? i64c(k, 0) : i64c(k, 1);
    lf->st[3] = col ? i64c(k, 1) : i64c(k, 0);
    if (p->fused) {
      lf->st[1] = i64c(k, E);
      lf->st[2] = i64c(k, p->L * E);
      lf->st[0] = mul(k, k->H, lf->st[2]);
      lf->ptr = cg_gep(cg, cg->t_f32, lf->ptr, LLVMBuildNeg(cg->b, mul(k, k->t0, i64c(k, E)), ""));
    } else { /* the window's steps, from t_lo (the pointer moved back by t_lo rows) */
      lf->st[2] = i64c(k, E);
      lf->st[1] = mul(k, k->H, i64c(k, E));
      lf->st[0] = mul(k, lf->st[1], k->Tw);
      lf->part_stride = mul(k, lf->st[0], k->B);
      lf->ptr = cg_gep(cg, cg->t_f32, lf->ptr, LLVMBuildNeg(cg->b, mul(k, k->t_lo, lf->st[1]), ""));
    }
  }
  int n_pin = n_in + g->n_seeds;
  e->leaves[n_pin] = (leaf){.kind = LEAF_CONST, .value = 0};     /* the dummy state */
  e->leaves[n_pin + 1] = (leaf){.kind = LEAF_CONST, .value = 1}; /* dz */
  e->leaves[n_pin + 2] = (leaf){.kind = LEAF_CONST, .value = 0}; /* its next value's gradient */
}

/* The inputs' gradients at the chunk's steps from the term prologue's
 * adjoint (its leaves set), into the tensors from at_gin. */
static void chain_chunk(ck *k, ev *e, int at_gin) {
  codegen *cg = k->cg;
  const frnn_step *s = k->s;
  const ck_plan *p = k->p;
  const frnn_step *adj = k->g->terms_adj;
  int n_in = s->n_ports[FRNN_PORT_INPUT];
  ev *saved = k->e;
  k->e = e;
  scalar_pass(e);
  cg_barrier(cg);
  for (int i = 0; i < n_in; i++) {
    uint32_t gv = adj->ports[FRNN_PORT_OUTPUT][i].value;
    int cls = s->ports[FRNN_PORT_INPUT][i].cls;
    int64_t E = cls == FRNN_COL ? p->M : cls == FRNN_ROW ? p->N : 1;
    gtensor gin = tensor_at(k, at_gin + TENSOR_PARAMS * i, k->spec->dt_gin[i]);
    LLVMBasicBlockRef no = if_open(k, LLVMBuildNot(cg->b, is_null(k, gin.ptr), ""));
    if (k->spec->in_bcast[i] & 2) {
      /* Broadcast over T: this chunk's sum, float32 at [(c B + b) H + h][E]. */
      cloop l = loop_open(k, k->tid, i32c(k, (int)E), i32c(k, k->threads));
      LLVMValueRef x = sext(k, loop_var(k, &l));
      LLVMValueRef acc = slot_of(k, cg->t_f64); /* float64: a sum over many steps */
      cg_store(cg, LLVMConstReal(cg->t_f64, 0), acc);
      cloop lu = loop_open(k, i32c(k, 0), i32c(k, p->L), i32c(k, 1));
      LLVMValueRef u = loop_var(k, &lu);
      memo_clear(e);
      LLVMValueRef v = gv == NODE_NONE ? fzero(k)
                                       : ev_at(e, gv, u, clamp_t(k, u), cls == FRNN_COL ? x : NULL,
                                               cls == FRNN_ROW ? x : NULL);
      memo_clear(e);
      cg_store(cg, LLVMBuildFAdd(cg->b, cg_load(cg, cg->t_f64, acc), f64(k, cg_select(cg, step_ok(k, u), v, fzero(k))), ""),
               acc);
      loop_close(k, &lu);
      LLVMValueRef idx = add(k, mul(k, add(k, mul(k, add(k, mul(k, k->c, k->B), k->b), k->H), k->h), i64c(k, E)), x);
      cg_store(cg, LLVMBuildFPTrunc(cg->b, cg_load(cg, cg->t_f64, acc), cg->t_f32, ""), cg_gep(cg, cg->t_f32, gin.ptr, idx));
      loop_close(k, &l);
    } else {
      /* Unrolled (unroll_loads), every element's value first (at a step
       * clamped into T), then the stores under their guards; else a loop. */
      LLVMValueRef vals[ELEMS_UNROLL_MAX];
      bool unrolled = elems_unrolls(k, p->L * (int)E);
      for (int pass = unrolled ? 0 : 1; pass < 2; pass++)
        for (elems r = elems_first(k, p->L * (int)E, (int)E); elems_more(&r); elems_next(k, &r)) {
          LLVMValueRef x = sext(k, r.x), t = add(k, k->t0, sext(k, r.u));
          LLVMValueRef i_ = cls == FRNN_COL ? x : NULL, j_ = cls == FRNN_ROW ? x : NULL;
          if (pass == 0 || !unrolled)
            vals[r.rep] = gv == NODE_NONE ? fzero(k) : ev_at(e, gv, r.u, clamp_t(k, r.u), i_, j_);
          if (pass == 0) continue;
          LLVMBasicBlockRef in_seq = if_open(k, elems_valid(k, &r, step_ok(k, r.u)));
          /* Shared by the heads (and not over T): every head adds into one
           * float32 partial, zeroed before (its head stride is 0), instead
           * of a partial per head that a reduction would read again (H100,
           * Mamba-2's b and c: 2 x 134 MB written, 2 x 56 us of reduction). */
          if (bcast_over_heads_only(k->spec->in_bcast[i])) global_add(k, gin.ptr, toff(k, gin.st, t, i_, j_), vals[r.rep]);
          else cg_store_elem(cg, gin.ptr, toff(k, gin.st, t, i_, j_), gin.dt, vals[r.rep]);
          if_close(k, in_seq);
        }
    }
    if_close(k, no);
  }
  k->e = saved;
}

/* The end state's sum over the rows of dS * S (RUN), in one of four
 * forms (ck_plan.run_sum):
 * - CK_RUN_F32: a float32 FMA chain (the rounding a rare seed failed on);
 * - CK_RUN_F64: each product exact in float64 and the sum there (two
 *   conversions a term: the H100's conversion rate made it cost 1.5%);
 * - CK_RUN_SPLIT: the product rounded to float32, p, and its exact error,
 *   e = fma(ds, s, -p); p summed in float64 (one conversion), e in float32
 *   (its rounding is eps^2 of the terms): the float64 sum's precision;
 * - CK_RUN_DOT2: no conversion, Ogita, Rump and Oishi's Dot2: p + e as
 *   above, p added by TwoSum (its rounding error exact), the errors summed
 *   in float32; two interleaved chains (rows even and odd) for latency.
 * Plain LLVM builders (no contract flag): NVPTX fuses nothing then, which
 * TwoSum's identities rely on. */
typedef struct run_sum {
  LLVMValueRef hi[2], lo[2]; /* hi: the sum (float64 in F64 / SPLIT), lo: the errors' sum */
} run_sum;
static run_sum run_sum_open(ck *k) {
  codegen *cg = k->cg;
  bool wide = k->p->run_sum == CK_RUN_F64 || k->p->run_sum == CK_RUN_SPLIT;
  run_sum r;
  for (int c = 0; c < 2; c++) r.hi[c] = wide ? LLVMConstReal(cg->t_f64, 0) : fzero(k), r.lo[c] = fzero(k);
  return r;
}
static void run_sum_row(ck *k, run_sum *r, int chain, LLVMValueRef ds, LLVMValueRef sv) {
  codegen *cg = k->cg;
  LLVMBuilderRef b = cg->b;
  switch (k->p->run_sum) {
  case CK_RUN_F32: r->hi[chain] = cg_fma(cg, ds, sv, r->hi[chain]); return;
  case CK_RUN_F64:
    r->hi[chain] = LLVMBuildFAdd(b, r->hi[chain], LLVMBuildFMul(b, f64(k, ds), f64(k, sv), ""), "");
    return;
  default: break;
  }
  LLVMValueRef prod = LLVMBuildFMul(b, ds, sv, "");
  LLVMValueRef err = cg_fma(cg, ds, sv, LLVMBuildFNeg(b, prod, ""));
  if (k->p->run_sum == CK_RUN_SPLIT) {
    r->hi[chain] = LLVMBuildFAdd(b, r->hi[chain], f64(k, prod), "");
    r->lo[chain] = LLVMBuildFAdd(b, r->lo[chain], err, "");
    return;
  }
  LLVMValueRef s = r->hi[chain], sum = LLVMBuildFAdd(b, s, prod, "");
  LLVMValueRef bp = LLVMBuildFSub(b, sum, s, "");
  LLVMValueRef two = LLVMBuildFAdd(b, LLVMBuildFSub(b, s, LLVMBuildFSub(b, sum, bp, ""), ""),
                                   LLVMBuildFSub(b, prod, bp, ""), "");
  r->hi[chain] = sum;
  r->lo[chain] = LLVMBuildFAdd(b, r->lo[chain], LLVMBuildFAdd(b, two, err, ""), "");
}
/* The rows' sum as float32 (the two chains and the errors added in float64). */
static LLVMValueRef run_sum_close(ck *k, run_sum *r) {
  codegen *cg = k->cg;
  LLVMBuilderRef b = cg->b;
  if (k->p->run_sum == CK_RUN_F32) return LLVMBuildFAdd(b, r->hi[0], r->hi[1], "");
  LLVMValueRef t = LLVMConstReal(cg->t_f64, 0);
  for (int c = 0; c < 2; c++) {
    t = LLVMBuildFAdd(b, t, k->p->run_sum == CK_RUN_DOT2 ? f64(k, r->hi[c]) : r->hi[c], "");
    t = LLVMBuildFAdd(b, t, f64(k, r->lo[c]), "");
  }
  return LLVMBuildFPTrunc(b, t, cg->t_f32, "");
}

/* A column decay's gradient (the log decay's, per step and row m of this
 * block): from the chunk's end, a running sum in float64 of each output
 * term's o * dy * (X w) at the step whose decay product it last took
 * (the seed O array holds dy * (X w) by now) minus each update's c * dc
 * (the gradient of log P_t: P multiplies the outputs' state parts and
 * divides the updates' columns), from the end state's sum_n S dS (RUN).
 * A thread a row, the chunk's steps unrolled (their loads independent). */
static void col_decay_gradient(ck *k) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  cloop l = loop_open(k, k->tid, i32c(k, p->Mp), i32c(k, k->threads));
  LLVMValueRef x = loop_var(k, &l);
  LLVMBasicBlockRef no = if_open(k, row_ok(k, x));
  LLVMValueRef i = grow(k, x), zero64 = LLVMConstReal(cg->t_f64, 0);
  LLVMValueRef acc = f64(k, sh_ld(k, k->lay->RUN, x));
  for (int sx = p->L - 1; sx >= 0; sx--) {
    LLVMValueRef u0 = i32c(k, sx), ok = step_ok(k, u0), t = clamp_t(k, u0);
    for (int q = 0; q < g->n_lin; q++) {
      int u = sx + shift_of(k, q);
      if (u >= p->L) continue;
      LLVMValueRef uu = i32c(k, u), tu = clamp_t(k, uu), uok = step_ok(k, uu);
      const chunk_out_term *ot = lin_term(g, q);
      memo_clear(k->e);
      LLVMValueRef o = product(k->e, &ot->outer, ot->sign, uu, tu, in_extent(k, i, p->M), NULL);
      memo_clear(k->e);
      LLVMValueRef ydy = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_o[q]],
                                                       seed_index(k, i64c(k, 0), tu, i, p->M)));
      acc = LLVMBuildFAdd(cg->b, acc, cg_select(cg, uok, LLVMBuildFMul(cg->b, f64(k, o), f64(k, ydy), ""), zero64), "");
    }
    for (int a = 0; a < g->n_upd; a++) {
      LLVMValueRef dc = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_c[a]],
                                                      seed_index(k, i64c(k, 0), t, i, p->M)));
      /* C holds c / P_v: c again */
      LLVMValueRef c = cg_fmul(cg, sh_ld(k, k->lay->C[a], at2(k, u0, p->sm, x)), fexp(k, bxm(k, i32c(k, sx + 1), x)));
      acc = LLVMBuildFSub(cg->b, acc, cg_select(cg, ok, LLVMBuildFMul(cg->b, f64(k, c), f64(k, dc), ""), zero64), "");
    }
    seed_add(k, g->seed_ld, u0, x, LLVMBuildFPTrunc(cg->b, acc, cg->t_f32, ""), true);
  }
  if_close(k, no);
  loop_close(k, &l);
}

/* a * b in float64 (exact: both float32).  Timing probes for the log
 * decay's phase (FRNN_CK_SKIP): bit 31 the product in float32, one
 * conversion instead of two (less precise); bit 32 the split's exp
 * factors left out of log_decay_part (results wrong). */
static LLVMValueRef product_f64(ck *k, LLVMValueRef a, LLVMValueRef b) {
  if (probe_skips(31)) return f64(k, cg_fmul(k->cg, a, b));
  return LLVMBuildFMul(k->cg->b, f64(k, a), f64(k, b), "");
}

/* Step sx's part of the log decay's gradient at column nn (float64): the
 * sum over the outputs reading S_s of w * dw, minus r_s * dr_s, over this
 * block's rows (the terms' gradients in the seeds, just added to by the
 * products).  ok: sx is a step of the sequence. */
static LLVMValueRef log_decay_part(ck *k, LLVMValueRef sx, LLVMValueRef nn, LLVMValueRef *ok) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  LLVMValueRef n64 = sext(k, nn), zero64 = LLVMConstReal(cg->t_f64, 0), acc = zero64, tnow = clamp_t(k, sx);
  *ok = step_ok(k, sx);
  for (int q = 0; q < g->n_lin; q++) {
    LLVMValueRef u = add(k, sx, i32c(k, shift_of(k, q)));
    LLVMValueRef uok = and1(k, slt(k, u, i32c(k, p->L)), step_ok(k, u));
    LLVMValueRef uc = cg_select(cg, uok, u, sx); /* a safe index where not used */
    LLVMValueRef dw = probe_skips(28) ? sh_ld(k, k->lay->W[q], at2(k, uc, p->sn, add(k, nn, i32c(k, 1))))
                                      : cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_w[q]],
                                                    seed_index(k, k->mb, clamp_t(k, uc), n64, p->N)));
    LLVMValueRef w = sh_ld(k, k->lay->W[q], at2(k, uc, p->sn, nn));
    /* W itself: undo the split where it was made */
    if (!probe_skips(32)) w = cg_select(cg, k->fast, cg_fmul(cg, w, fexp(k, cg_fneg(cg, bx(k, lrow(k, q, uc), nn)))), w);
    acc = LLVMBuildFAdd(cg->b, acc, cg_select(cg, and1(k, *ok, uok), product_f64(k, w, dw), zero64), "");
  }
  for (int a = 0; a < g->n_upd; a++) {
    if (g->seed_r[a] < 0) continue; /* b merged out: r's seed holds s times b's part (r s db = b db) */
    LLVMValueRef dr = probe_skips(28) ? sh_ld(k, k->lay->R[a], at2(k, sx, p->sn, add(k, nn, i32c(k, 1))))
                                      : cg_load(cg, cg->t_f32,
                              cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_r[a]], seed_index(k, k->mb, tnow, n64, p->N)));
    LLVMValueRef r = sh_ld(k, k->lay->R[a], at2(k, sx, p->sn, nn));
    if (!probe_skips(32)) r = cg_select(cg, k->fast, cg_fmul(cg, r, fexp(k, bx(k, add(k, sx, i32c(k, 1)), nn))), r);
    acc = LLVMBuildFSub(cg->b, acc, cg_select(cg, *ok, product_f64(k, r, dr), zero64), "");
  }
  return acc;
}

/* shfl.sync of a float64, each half of its bits shuffled: kind 0 bfly
 * (lane ^ arg), 1 down (lane + arg), 2 idx (lane arg). */
static LLVMValueRef shfl_f64(ck *k, LLVMValueRef v, int kind, int arg) {
  codegen *cg = k->cg;
  LLVMValueRef bits = LLVMBuildBitCast(cg->b, v, cg->t_i64, ""), half[2], c32 = LLVMConstInt(cg->t_i64, 32, 0);
  for (int h = 0; h < 2; h++) {
    LLVMValueRef x = LLVMBuildBitCast(cg->b, LLVMBuildTrunc(cg->b, h ? LLVMBuildLShr(cg->b, bits, c32, "") : bits, cg->t_i32, ""),
                                      cg->t_f32, "");
    x = kind == 0 ? cg_shfl_bfly_f32(cg, x, arg, 32) : kind == 1 ? cg_shfl_down_f32(cg, x, arg, 32)
                                                     : cg_shfl_idx_f32(cg, x, i32c(k, arg), 32);
    half[h] = LLVMBuildZExt(cg->b, LLVMBuildBitCast(cg->b, x, cg->t_i32, ""), cg->t_i64, "");
  }
  return LLVMBuildBitCast(cg->b, LLVMBuildOr(cg->b, half[0], LLVMBuildShl(cg->b, half[1], c32, ""), ""), cg->t_f64, "");
}
/* cg_sum_lanes_f32's float64 form. */
static LLVMValueRef group_sum_f64(ck *k, LLVMValueRef v, int lanes) {
  for (int m = lanes / 2; m >= 1; m /= 2) v = LLVMBuildFAdd(k->cg->b, v, shfl_f64(k, v, 0, m), "");
  return v;
}

/* A scalar decay's log decay gradient (its seed a float a step:
 * seed_summed_over_n): log_decay_gradient's running sums, summed over the
 * columns first.  (1) Each step's part (log_decay_part at its columns) is
 * SUM_LANES lanes' sums added by shuffles in float64, every lane's loads
 * in flight at once, kept in A (free by now) as two floats, hi and lo:
 * float64's precision, where the terms nearly cancel.  (2) One warp sums
 * RUN's columns (the gradient after the chunk) and takes the running sums
 * from the chunk's end by shuffles, 32 steps at a time from the last, and
 * stores them.  Where log_decay_gradient went, the gated delta rule's two
 * passes loaded every column's terms' gradients and stored N floats a
 * step (H100 fw+bw 5.449 ms; without this phase, a probe, 4.881). */
static void scalar_log_decay_gradient(ck *k) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  LLVMValueRef zero64 = LLVMConstReal(cg->t_f64, 0);
  int A = k->lay->A;
  for (elems r = elems_first(k, p->L * SUM_LANES, SUM_LANES); elems_more(&r); elems_next(k, &r)) {
    LLVMValueRef acc = zero64, ok;
    for (int n0 = 0; n0 < p->Np; n0 += SUM_LANES) {
      LLVMValueRef n = add(k, r.x, i32c(k, n0)), in = slt(k, n, i32c(k, (int)p->N));
      LLVMValueRef part = log_decay_part(k, r.u, cg_select(cg, in, n, i32c(k, 0)), &ok);
      acc = LLVMBuildFAdd(cg->b, acc, cg_select(cg, in, part, zero64), "");
    }
    acc = group_sum_f64(k, acc, SUM_LANES);
    LLVMBasicBlockRef others = if_open(k, elems_valid(k, &r, LLVMBuildICmp(cg->b, LLVMIntEQ, r.x, i32c(k, 0), "")));
    LLVMValueRef hi = LLVMBuildFPTrunc(cg->b, acc, cg->t_f32, "");
    sh_st(k, A, r.u, hi);
    sh_st(k, A, add(k, r.u, i32c(k, p->L)),
          LLVMBuildFPTrunc(cg->b, LLVMBuildFSub(cg->b, acc, LLVMBuildFPExt(cg->b, hi, cg->t_f64, ""), ""), cg->t_f32, ""));
    if_close(k, others);
  }
  cg_barrier(cg);
  LLVMBasicBlockRef other_warps = if_open(k, LLVMBuildICmp(cg->b, LLVMIntEQ, k->warp, i32c(k, 0), ""));
  LLVMValueRef run = zero64;
  for (int n0 = 0; n0 < p->Np; n0 += 32) {
    LLVMValueRef n = add(k, k->lane, i32c(k, n0)), in = slt(k, n, i32c(k, (int)p->N));
    run = LLVMBuildFAdd(cg->b, run, cg_select(cg, in, f64(k, sh_ld(k, k->lay->RUN, cg_select(cg, in, n, i32c(k, 0)))), zero64), "");
  }
  run = group_sum_f64(k, run, 32);
  for (int b = (p->L - 1) / 32; b >= 0; b--) {
    LLVMValueRef u = add(k, k->lane, i32c(k, 32 * b)), in = slt(k, u, i32c(k, p->L));
    LLVMValueRef uc = cg_select(cg, in, u, i32c(k, 0));
    LLVMValueRef v = cg_select(cg, in, LLVMBuildFAdd(cg->b, f64(k, sh_ld(k, A, uc)), f64(k, sh_ld(k, A, add(k, uc, i32c(k, p->L)))), ""),
                               zero64);
    for (int d = 1; d < 32; d *= 2) /* v: the sum over this block's steps from u on */
      v = LLVMBuildFAdd(cg->b, v, cg_select(cg, slt(k, add(k, k->lane, i32c(k, d)), i32c(k, 32)), shfl_f64(k, v, 1, d), zero64), "");
    v = LLVMBuildFAdd(cg->b, v, run, "");
    run = shfl_f64(k, v, 2, 0); /* from the block's first step to the chunk's end */
    LLVMBasicBlockRef skip = if_open(k, and1(k, in, step_ok(k, u)));
    cg_store(cg, LLVMBuildFPTrunc(cg->b, v, cg->t_f32, ""),
             cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_ld], seed_index(k, k->mb, clamp_t(k, u), i64c(k, 0), 1)));
    if_close(k, skip);
  }
  if_close(k, other_warps);
}

/* A row decay's log decay gradient in the backward (where the chain does
 * not form it, ld_in_chain: two blocks of rows, the fused chain, or
 * FRNN_CK_LD_CHAIN=0; a scalar decay's is scalar_log_decay_gradient's) at
 * every step of the chunk: a running sum from the chunk's end of log_decay_part, starting
 * from RUN, in float64 (its terms nearly cancel).  The chunk's steps are
 * cut into `segs` segments summed side by side (each a short chain of
 * loads), whose sums the later ones' offsets take from shared memory (the
 * [L,L] array, free by now).  Where every (segment, column) has a thread
 * of its own, a thread keeps its segment's partial sums in registers
 * across the barrier that publishes the segments' sums: the terms'
 * gradients are loaded from L2 once, not twice (the seeds' loads wait for
 * the products' atomics, about a tenth of the gated delta rule's backward
 * in Nsight Compute before).  Otherwise (N above the threads) each pass
 * loops over the items and the second loads them again.  Steps past T
 * read step T-1 and add 0; their results are not stored. */
static void log_decay_gradient(ck *k) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  int segs = 4;
  while (segs > 1 && (p->L % segs || segs * p->Np > p->L * p->sl || (segs * p->Np > k->threads && p->Np <= k->threads)))
    segs /= 2;
  int seg = p->L / segs; /* at most 64: chunks are (ck_plan_make) */
  bool once = segs * p->Np <= k->threads;
  LLVMValueRef zero64 = LLVMConstReal(cg->t_f64, 0), part_sum[64];
  if (once)
    for (int e = 0; e < seg; e++) part_sum[e] = slot_of(k, cg->t_f64);
  for (int pass = 0; pass < 2; pass++) {
    cloop l = loop_open(k, k->tid, i32c(k, segs * p->Np), i32c(k, k->threads));
    LLVMValueRef idx = loop_var(k, &l);
    LLVMValueRef gi = LLVMBuildUDiv(cg->b, idx, i32c(k, p->Np), ""), nn = LLVMBuildURem(cg->b, idx, i32c(k, p->Np), "");
    LLVMBasicBlockRef no = if_open(k, slt(k, sext(k, nn), i64c(k, p->N)));
    LLVMValueRef off = zero64;
    if (pass == 1) { /* this column's sum from the chunk's end down to this segment */
      off = f64(k, sh_ld(k, k->lay->RUN, nn));
      for (int h = 1; h < segs; h++)
        off = LLVMBuildFAdd(cg->b, off,
                            cg_select(cg, slt(k, gi, i32c(k, h)), f64(k, sh_ld(k, k->lay->A, at2(k, i32c(k, h), p->Np, nn))),
                                      zero64), "");
    }
    /* The segment's steps unrolled, no branch between them: the loads all
     * go out before the first is used. */
    LLVMValueRef acc = off, res[64], okv[64], sxv[64];
    for (int e = 0; e < seg; e++) {
      sxv[e] = sub(k, add(k, mul(k, gi, i32c(k, seg)), i32c(k, seg - 1)), i32c(k, e));
      if (once && pass == 1) { /* pass 0's partial sums */
        okv[e] = step_ok(k, sxv[e]);
        res[e] = LLVMBuildFAdd(cg->b, off, cg_load(cg, cg->t_f64, part_sum[e]), "");
        continue;
      }
      acc = LLVMBuildFAdd(cg->b, acc, log_decay_part(k, sxv[e], nn, &okv[e]), "");
      res[e] = acc;
      if (once) cg_store(cg, acc, part_sum[e]);
    }
    if (pass == 1 && !probe_skips(29))
      for (int e = 0; e < seg; e++) {
        LLVMBasicBlockRef skip = if_open(k, okv[e]);
        cg_store(cg, LLVMBuildFPTrunc(cg->b, res[e], cg->t_f32, ""),
                 cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_ld], seed_index(k, k->mb, clamp_t(k, sxv[e]), sext(k, nn), p->N)));
        if_close(k, skip);
      }
    if (pass == 0) /* the segment's sum, for the segments before it */
      sh_st(k, k->lay->A, at2(k, gi, p->Np, nn), LLVMBuildFPTrunc(cg->b, acc, cg->t_f32, ""));
    if_close(k, no);
    loop_close(k, &l);
    cg_barrier(cg);
  }
}

/* The backward's products through the chunk's attention matrices, every
 * (lin q, update a) pair's at once, in two phases:
 *   1. each pair's A (with a rank-one term, rank_gradient's) and Ag =
 *      [causal] G_q C_a^T;
 *   2. each seed once, its pairs summed in one accumulator (the chunk's
 *      first product into it: it stores): dC_a = sum_q A^T G_q, dW_q =
 *      sum_a Ag R_a, dR_a = sum_q Ag^T W_q and dO_q = sum_a A C_a.
 * Two barriers instead of two a pair (the delta rule's four pairs: eight),
 * and the [L,L] products side by side on the warps. */
static void chunk_pairs(ck *k) {
  const chunk_gpu *g = k->g;
  const ck_plan *p = k->p;
  codegen *cg = k->cg;
  unsigned no_b = merged_out(g); /* nothing against b merged out */
  for (int q = 0; q < g->n_lin; q++)
    for (int a = 0; a < g->n_upd; a++) {
      if (g->rank_lin < 0) attention_pair(k, q, a, 4); /* (else rank_gradient formed them) */
      if (!(no_b >> a & 1)) attention_gradient(k, q, a);
    }
  cg_barrier(cg);
  for (int a = 0; a < g->n_upd; a++) {
    mm m = new_mm(k, p->L, p->Mp, p->L);
    m.parts = g->n_lin, m.by_lin = true, m.lin = 0, m.upd = a;
    m.a = a_A_t, m.b = op_G, m.epi = epi_dC, m.store = a != k->g->merge_into, m.spread = true;
    if (g->seed_c[a] >= 0) run_mm_probe(&m, 6); /* (the rank-one column's went into dH) */
    m = new_mm(k, p->L, p->Np, p->L);
    m.parts = g->n_lin, m.by_lin = true, m.lin = 0, m.upd = a;
    m.a = a_Ag_t, m.b = b_W, m.epi = epi_dR, m.store = true, m.spread = true;
    m.combine = p->nd == 1 ? NULL : comb_dR;
    if (g->seed_r[a] >= 0) run_both(&m, 8);
  }
  for (int q = 0; q < g->n_lin; q++) {
    mm m = new_mm(k, p->L, p->Np, p->L);
    m.parts = g->n_upd, m.skip = no_b, m.lin = q, m.upd = 0;
    m.a = a_Ag, m.b = b_R, m.epi = epi_dW, m.store = true, m.spread = true;
    m.combine = p->nd == 1 ? NULL : comb_dW;
    run_both(&m, 7);
    if (g->seed_o[q] >= 0) {
      m = new_mm(k, p->L, p->Mp, p->L);
      m.parts = g->n_upd, m.skip = no_b, m.lin = q, m.upd = 0;
      m.a = a_A, m.b = op_C, m.epi = epi_Xw, m.store = true, m.spread = true;
      run_mm_probe(&m, 9);
    }
  }
  cg_copy_async_wait(cg); /* the first state's copy (late_state_wait), for the products after */
  cg_barrier(cg);
}

static void lower_ck_bwd(ck *k) {
  codegen *cg = k->cg;
  const frnn_step *s = k->s;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  int n_in = s->n_ports[FRNN_PORT_INPUT], n_out = s->n_ports[FRNN_PORT_OUTPUT];
  LLVMTypeRef types[TENSOR_PARAMS * (3 * FRNN_MAX_PORTS + 2) + CK_MAX_SEEDS + 16]; /* fused: the inputs' gradients too */
  int n = 0;
  for (int i = 0; i < n_in + n_out + 2; i++) tensor_param_types(cg, types, &n);
  int at_ckpt = n;
  types[n++] = cg->t_gptr; /* the state after the window, float32 [B][H][M][N] */
  for (int q = 0; q < g->n_seeds; q++) types[n++] = cg->t_gptr;
  int at_gin = n; /* fused: the inputs' gradients (or partials) */
  if (p->fused)
    for (int i = 0; i < n_in; i++) tensor_param_types(cg, types, &n);
  int at_T = n;
  types[n++] = cg->t_i64;  /* T */
  types[n++] = cg->t_i64;  /* H */
  types[n++] = cg->t_i64;  /* B */
  types[n++] = cg->t_i64;  /* the window's chunks: from */
  types[n++] = cg->t_i64;  /* to (exclusive) */
  types[n++] = cg->t_gptr; /* the gradient carried between windows, float32 [B][H][M][N] */
  types[n++] = cg->t_gptr; /* chunk c_first's first state (a stored one) */
  types[n++] = cg->t_i64;  /* c_first */
  types[n++] = cg->t_gptr; /* the other chunks' first states (the checkpoints, or a recompute's) */
  types[n++] = cg->t_i64;  /* the chunk of their slot 0 */
  types[n++] = cg->t_gptr; /* the chunks' rank-one columns and inverses (slot 0: chunk c_first), or null */
  k->lay = &p->bw;
  k->unroll_loads = k->unroll_sums = p->unroll_loads_bwd;
  setup(k, "frnn_ck_bwd", types, n);
  merge_pairs_of(k);
  k->mb = cg_zext64(cg, cg_ctaid_x(cg));
  k->T = cg_param(cg, at_T), k->H = cg_param(cg, at_T + 1), k->B = cg_param(cg, at_T + 2);
  LLVMValueRef c_lo = cg_param(cg, at_T + 3), c_hi = cg_param(cg, at_T + 4);
  k->t_lo = mul(k, c_lo, i64c(k, p->L)), k->Tw = mul(k, sub(k, c_hi, c_lo), i64c(k, p->L));
  LLVMValueRef first = cg_param(cg, at_T + 6), c_first = cg_param(cg, at_T + 7), src = cg_param(cg, at_T + 8),
               src_c0 = cg_param(cg, at_T + 9), rank = cg_param(cg, at_T + 10);
  gtensor carry = {.ptr = cg_param(cg, at_T + 5), .dt = TD_F32};
  carry.st[4] = i64c(k, 1), carry.st[3] = i64c(k, p->N), carry.st[2] = i64c(k, p->M * p->N);
  carry.st[1] = i64c(k, 0), carry.st[0] = mul(k, k->H, carry.st[2]);
  for (int q = 0; q < g->n_seeds; q++) k->seed_ptr[q] = cg_param(cg, at_ckpt + 1 + q);
  input_leaves(k, k->e, 0);
  gtensor gout[FRNN_MAX_PORTS];
  for (int q = 0; q < n_out; q++) gout[q] = tensor_at(k, TENSOR_PARAMS * (n_in + q), k->spec->dt_gout[q]);
  gtensor gfin = tensor_at(k, TENSOR_PARAMS * (n_in + n_out), k->spec->dt_gfinal[0]);
  gtensor gst = tensor_at(k, TENSOR_PARAMS * (n_in + n_out + 1), k->spec->dt_gstate[0]);
  /* The window's chunks c_hi - 1 down to c_lo (the backward runs in windows
   * so that the terms' gradients need arrays of a window's steps only): S
   * starts as the state after the window, dS as the final state's gradient
   * (the last window) or the one the window after this one carried. */
  LLVMValueRef nch = chunks_of(k);
  state_copy(k, k->lay->S, cg_param(cg, at_ckpt), i64c(k, 0));
  cg_copy_async_wait(cg);
  {
    LLVMValueRef last = LLVMBuildICmp(cg->b, LLVMIntEQ, c_hi, nch, "");
    LLVMBasicBlockRef yes = cg_block(cg, "dS_final"), no = cg_block(cg, "dS_carried"), end = cg_block(cg, "dS_in");
    cg_cond_br(cg, last, yes, no);
    cg_at(cg, yes);
    state_from_tensor(k, k->lay->dS, &gfin, true);
    cg_br(cg, end);
    cg_at(cg, no);
    state_from_tensor(k, k->lay->dS, &carry, false);
    cg_br(cg, end);
    cg_at(cg, end);
  }
  cg_barrier(cg);
  cloop lc = loop_open(k, i64c(k, 0), sub(k, c_hi, c_lo), i64c(k, 1));
  k->c = sub(k, sub(k, c_hi, i64c(k, 1)), loop_var(k, &lc));
  k->t0 = mul(k, k->c, i64c(k, p->L));
  if (!probe_skips(22)) scalar_pass(k->e);
  cg_barrier(cg);
  if (p->fused) {
    /* this chunk's scratch for the terms' gradients, zeroed (the products
     * add into it; the previous chunk's chain has read it) */
    for (int q = 0; q < g->n_seeds; q++) {
      if (g->seed_kind[q] == CK_SEED_IND) continue;
      int64_t E = ck_seed_width(p, g, q);
      LLVMValueRef base = cg_gep(cg, cg->t_f32, k->seed_ptr[q], mul(k, add(k, mul(k, k->b, k->H), k->h), i64c(k, p->L * E)));
      cloop l = loop_open(k, k->tid, i32c(k, (int)(p->L * E)), i32c(k, k->threads));
      cg_store(cg, fzero(k), cg_gep(cg, cg->t_f32, base, loop_var(k, &l)));
      loop_close(k, &l);
    }
  }
  /* sum over this block's rows of dS_end * S_end: the decay's gradient
   * starts from it (design-chunked.md); no decay (the delta rule), no
   * gradient */
  if (g->n_ld > 0 && !p->col) {
    cloop l = loop_open(k, k->tid, i32c(k, p->Np), i32c(k, k->threads));
    LLVMValueRef nn = loop_var(k, &l);
    /* Past float32 (run_sum_row adds one row): this sum and the chunk's
     * terms nearly cancel in the decay's gradient, and its float32
     * rounding over the M rows was what a rare seed's grad A missed its
     * bound by (Mamba-2 at 128 x 128, 2.27e-5 -> 3.1e-6 in float64; H100
     * calls 13-14 of the eleventh session). */
    run_sum acc = run_sum_open(k);
    for (int i = 0; i < p->Mp; i++) {
      LLVMValueRef at = at2(k, i32c(k, i), p->ss, nn);
      run_sum_row(k, &acc, i & 1, sh_ld(k, k->lay->dS, at), sh_ld(k, k->lay->S, at));
    }
    LLVMValueRef run = run_sum_close(k, &acc);
    sh_st(k, k->lay->RUN, nn, run);
    /* the chain forms the log decay's gradient (chain_log_decay): RUN
     * into the seed's row of the chunk's last step, which it reads first */
    if (p->ld_in_chain) {
      LLVMBasicBlockRef pad = if_open(k, slt(k, nn, i32c(k, (int)p->N)));
      cg_store(cg, run, cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_ld],
                               seed_index(k, k->mb, add(k, k->t0, i64c(k, p->L - 1)), sext(k, nn), p->N)));
      if_close(k, pad);
    }
    loop_close(k, &l);
  } else if (g->n_ld > 0) { /* a column decay: per row, the sum over n */
    cloop l = loop_open(k, k->tid, i32c(k, p->Mp), i32c(k, k->threads));
    LLVMValueRef mm_ = loop_var(k, &l);
    LLVMValueRef acc = LLVMConstReal(cg->t_f64, 0);
    for (int n = 0; n < p->Np; n++) {
      LLVMValueRef at = at2(k, mm_, p->ss, i32c(k, n));
      acc = LLVMBuildFAdd(cg->b, acc, LLVMBuildFMul(cg->b, f64(k, sh_ld(k, k->lay->dS, at)), f64(k, sh_ld(k, k->lay->S, at)), ""), "");
    }
    sh_st(k, k->lay->RUN, mm_, LLVMBuildFPTrunc(cg->b, acc, cg->t_f32, ""));
    loop_close(k, &l);
  }
  cg_barrier(cg); /* S is read: the copies below overwrite it */
  /* The chunk's first state and (a rank-one term) its columns X and
   * inverse, copied by cp.async while the term arrays are made
   * (early_loads bit 1; bit 2: the previous chunk's asked of L2 beside the
   * inputs' prefetches).  A column decay's term arrays scale every update's
   * columns, the rank-one's slot too: there the copies go after them. */
  LLVMValueRef is_first = LLVMBuildICmp(cg->b, LLVMIntEQ, k->c, c_first, "");
  bool early = !(p->col && g->rank_lin >= 0) && (p->early_loads & 1);
  for (int pass = 0; pass < 2; pass++) {
    if (pass == (early ? 0 : 1) && !probe_skips(23)) {
      /* two groups, the columns' first: the solve's gradient waits for
       * them alone (late_state_wait) */
      if (g->rank_lin >= 0) rank_copy(k, rank, sub(k, k->c, c_first));
      cg_copy_async_commit(cg);
      state_copy(k, k->lay->S, cg_select(cg, is_first, first, src),
                 cg_select(cg, is_first, i64c(k, 0), sub(k, k->c, src_c0)));
      cg_copy_async_commit(cg);
    }
    if (pass == 1) break;
    if (!probe_skips(21)) term_arrays(k, gout);
    else k->fast = LLVMConstInt(cg->t_i1, 0, 0); /* (the probe: the split's flag is made there) */
    prefetch_chunk(k, sub(k, k->t0, i64c(k, p->L)), gout, n_out);
    if (p->early_loads & 2) {
      LLVMValueRef cp = sub(k, k->c, i64c(k, 1)), prev_first = LLVMBuildICmp(cg->b, LLVMIntEQ, cp, c_first, "");
      LLVMBasicBlockRef none = if_open(k, and1(k, LLVMBuildICmp(cg->b, LLVMIntSGT, k->c, c_lo, ""),
                                               LLVMBuildICmp(cg->b, LLVMIntSGT, k->c, c_first, "")));
      ckpt_prefetch(k, cg_select(cg, prev_first, first, src), cg_select(cg, prev_first, i64c(k, 0), sub(k, cp, src_c0)),
                    g->rank_lin >= 0 ? rank : NULL, sub(k, cp, c_first));
      if_close(k, none);
    }
  }
  /* The first state is read first by the products through it, after the
   * attention matrices' phases: its copy is waited for there (the
   * columns' group, older, here). */
  if (!p->late_state_wait) cg_copy_async_wait(cg);
  else if (g->rank_lin >= 0) cg_copy_async_wait_group(cg, 1);
  cg_barrier(cg);
  /* The rank-one term's gradient dH (its columns X as the forward solved
   * them): then it is one more lin and update for the products below. */
  if (g->rank_lin >= 0) rank_gradient(k);
  /* The chunk's own products: through the attention matrix A and its
   * gradient Ag = [causal] G C^T.  Between barriers the products read
   * A, Ag and write each their own seed: spread over the warps.  Every
   * pair's at once where they fit (bw_pairs, chunk_pairs); else a pair at
   * a time. */
  if (p->bw_pairs) chunk_pairs(k);
  int last_a = g->n_upd - 1; /* the last pair's update (none against b merged out) */
  while (last_a > 0 && merged_out(g) >> last_a & 1) last_a--;
  for (int q = 0; q < (p->bw_pairs ? 0 : g->n_lin); q++)
    for (int a = 0; a < g->n_upd; a++) {
      if (merged_out(g) >> a & 1) continue;
      attention_pair(k, q, a, 4);
      attention_gradient(k, q, a);
      cg_barrier(cg);
      mm m;
      /* The first product into each of the chunk's seeds stores (every
       * element of it: the arrays need no zeroing), the later ones add
       * (after a barrier: the next pair's). */
      if (g->seed_c[a] >= 0) { /* the rank-one column's gradient went into dH */
        m = new_mm(k, p->L, p->Mp, p->L);
        m.lin = q, m.upd = a, m.a = a_A_t, m.b = op_G, m.epi = epi_dC, m.store = q == 0 && a != k->g->merge_into;
        m.spread = true;
        run_mm_probe(&m, 6);
      }
      m = new_mm(k, p->L, p->Np, p->L);
      m.lin = q, m.upd = a, m.a = a_Ag, m.b = b_R, m.epi = epi_dW, m.store = a == 0, m.spread = true;
      m.combine = p->nd == 1 ? NULL : comb_dW;
      run_both(&m, 7);
      m = new_mm(k, p->L, p->Np, p->L);
      m.lin = q, m.upd = a, m.a = a_Ag_t, m.b = b_W, m.epi = epi_dR, m.store = q == 0, m.spread = true;
      m.combine = p->nd == 1 ? NULL : comb_dR;
      run_both(&m, 8);
      if (g->seed_o[q] >= 0) {
        m = new_mm(k, p->L, p->Mp, p->L);
        m.lin = q, m.upd = a, m.a = a_A, m.b = op_C, m.epi = epi_Xw, m.store = a == 0, m.spread = true;
        run_mm_probe(&m, 9);
      }
      if (q == g->n_lin - 1 && a == last_a) cg_copy_async_wait(cg); /* as chunk_pairs' */
      cg_barrier(cg);
    }
  if (g->n_lin * g->n_upd == 0) { /* (no pairs' phases: the copy waited for here) */
    cg_copy_async_wait(cg);
    cg_barrier(cg);
  }
  /* Through the carried state S_0 and the gradient after the chunk: each
   * product adds to its own seed, reading S, dS and the term arrays.  The
   * lins' products through S stacked (S's fragments loaded once for all),
   * as the updates' through dS below. */
  if (g->n_lin > 0) {
    mm m = new_mm(k, p->L, p->Np, p->Mp);
    m.parts = g->n_lin, m.by_lin = true, m.stacked = true, m.lin = 0;
    m.a = op_G, m.b = b_state, m.state = k->lay->S, m.epi = epi_dW_state, m.spread = true;
    run_mm_probe(&m, 10);
  }
  for (int q = 0; q < g->n_lin; q++) {
    if (g->seed_o[q] >= 0) {
      mm m = new_mm(k, p->L, p->Mp, p->Np);
      m.lin = q, m.a = op_W_decayed, m.b = b_state_t, m.state = k->lay->S, m.epi = epi_Xw, m.spread = true;
      run_both(&m, 11);
    }
  }
  for (int a = 0; a < g->n_upd; a++) {
    mm m = new_mm(k, p->L, p->Mp, p->Np);
    if (g->seed_c[a] >= 0 && a != k->g->merge_into) { /* (merged: rank_gradient's product) */
      m.upd = a, m.a = a_R_to_end, m.b = b_state_t, m.state = k->lay->dS, m.epi = epi_dC, m.spread = true;
      run_both(&m, 12);
    }
  }
  if (g->n_upd > 0) {
    mm m = new_mm(k, p->L, p->Np, p->Mp);
    m.parts = g->n_upd, m.stacked = true, m.upd = 0, m.skip = merged_out(g);
    m.a = p->col ? op_C_to_end : op_C, m.b = b_state, m.state = k->lay->dS, m.epi = epi_dR_end, m.spread = true;
    run_mm_probe(&m, 13);
  }
  cg_barrier(cg); /* dS is overwritten below */
  /* The gradient before the chunk: every term's product summed in one
   * accumulator, one epilogue. */
  for (int q = 0; q < (p->sum_parts ? (g->n_lin > 0) : g->n_lin); q++) {
    mm m = new_mm(k, p->Mp, p->Np, p->L);
    m.parts = p->sum_parts ? g->n_lin : 1, m.by_lin = true, m.lin = q, m.first = q == 0;
    m.a = a_G_t, m.b = op_W_decayed, m.epi = epi_dS;
    run_both(&m, 14);
    cg_barrier(cg);
  }
  if (g->n_lin == 0) {
    sloop r = state_open(k);
    LLVMValueRef at = at2(k, r.i, p->ss, r.n);
    sh_st(k, k->lay->dS, at, cg_fmul(cg, sh_ld(k, k->lay->dS, at), sh_ld(k, k->lay->EL, p->col ? r.i : r.n)));
    loop_close(k, &r.l);
  }
  /* (dC complete: the pairs' adds are barriers back.  Timing probes:
   * FRNN_CK_SKIP bits 30 and 27 leave these two out; in the log decay's,
   * bit 28 reads the terms' gradients from shared memory (W, R) instead of
   * the seeds, bit 29 leaves a row decay's stores out.  RWKV-7, H100 fw+bw
   * 8.151 ms: 27 6.452, 28 7.867, 29 7.762, 28 and 29 7.559, 31 8.112,
   * 32 8.060: most of its row decay's phase was neither the loads, the
   * stores, the conversions nor the exps but what it cost the rest of the
   * kernel (its spills 52 -> 148 bytes); a row decay's now goes to the
   * chain (ld_in_chain: 6.80 ms)) */
  if (g->merge_rows && !probe_skips(30)) merged_scalar_seed(k);
  if (g->n_ld > 0 && !p->col && !p->ld_in_chain && !probe_skips(27)) {
    if (seed_summed_over_n(g, g->seed_ld)) scalar_log_decay_gradient(k);
    else log_decay_gradient(k);
  }
  /* The outside factors' gradients: dy * (X w). */
  for (int q = 0; q < g->n_lin; q++) {
    if (g->seed_o[q] < 0) continue;
    const gtensor *dy = &gout[g->lin_out[q]];
    LLVMValueRef given = LLVMBuildNot(cg->b, is_null(k, dy->ptr), "");
    /* unrolled as the forward's stores: the loads first (at a row clamped
     * into M; no gradient given: the seed's own element), then the stores */
    LLVMValueRef vals[ELEMS_UNROLL_MAX];
    bool unrolled = elems_unrolls(k, p->L * p->Mp);
    for (int pass = unrolled ? 0 : 1; pass < 2; pass++)
      for (elems r = elems_first(k, p->L * p->Mp, p->Mp); elems_more(&r); elems_next(k, &r)) {
        LLVMValueRef t = add(k, k->t0, sext(k, r.u)), i = grow(k, r.x);
        LLVMValueRef pidx = cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_o[q]], seed_index(k, i64c(k, 0), t, i, p->M));
        if (pass == 0 || !unrolled) {
          LLVMValueRef ic = in_extent(k, i, p->M);
          LLVMValueRef seed = cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_o[q]], seed_index(k, i64c(k, 0), t, ic, p->M));
          LLVMValueRef y = cg_load_elem(cg, cg_select(cg, given, dy->ptr, k->seed_ptr[g->seed_o[q]]),
                                        cg_select(cg, given, toff(k, dy->st, clamp_t(k, r.u), ic, NULL), i64c(k, 0)), dy->dt);
          vals[r.rep] = cg_fmul(cg, cg_load(cg, cg->t_f32, seed), y);
        }
        if (pass == 1) {
          LLVMBasicBlockRef no = if_open(k, elems_valid(k, &r, and1(k, and1(k, step_ok(k, r.u), row_ok(k, r.x)), given)));
          cg_store(cg, vals[r.rep], pidx);
          if_close(k, no);
        }
      }
  }
  cg_barrier(cg);
  if (g->n_ld > 0 && p->col) {
    col_decay_gradient(k);
    cg_barrier(cg);
  }
  if (p->fused) {
    /* The chain to the inputs for this chunk, from its scratch (in L2). */
    chain_leaves(k, k->ea, TENSOR_PARAMS * n_in);
    chain_chunk(k, k->ea, at_gin);
    cg_barrier(cg);
  }
  loop_close(k, &lc);
  {
    LLVMValueRef first = LLVMBuildICmp(cg->b, LLVMIntEQ, c_lo, i64c(k, 0), "");
    LLVMBasicBlockRef yes = cg_block(cg, "dS_initial"), no = cg_block(cg, "dS_carry"), end = cg_block(cg, "dS_out");
    cg_cond_br(cg, first, yes, no);
    cg_at(cg, yes);
    state_to_tensor(k, k->lay->dS, &gst);
    cg_br(cg, end);
    cg_at(cg, no);
    state_to_tensor(k, k->lay->dS, &carry);
    cg_br(cg, end);
    cg_at(cg, end);
  }
  cg_ret(cg);
}

/* A row decay's log decay gradient by the chain kernel (ck_plan.ld_in_chain),
 * log_decay_gradient's sums from the chunk's end: at each column a thread
 * starts from RUN (the backward stored it in the seed's row of the chunk's
 * last step) and adds, step by step down, log_decay_part's terms, w dw
 * for each lin at the step whose state it reads and - r dr for each
 * update, in float64 (they nearly cancel), storing each step's sum over
 * the seed's row.  The terms' values w and r are evaluated from the
 * inputs (es, the step's graph), not undone from the backward's split
 * arrays; their gradients are the backward's, complete. */
static void chain_log_decay(ck *k, ev *es) {
  codegen *cg = k->cg;
  const ck_plan *p = k->p;
  const chunk_gpu *g = k->g;
  LLVMValueRef zero64 = LLVMConstReal(cg->t_f64, 0), ld = k->seed_ptr[g->seed_ld];
  cloop l = loop_open(k, k->tid, i32c(k, p->Np), i32c(k, k->threads));
  LLVMValueRef nn = loop_var(k, &l);
  LLVMBasicBlockRef pad = if_open(k, slt(k, nn, i32c(k, (int)p->N)));
  LLVMValueRef n64 = sext(k, nn), acc = slot_of(k, cg->t_f64);
  cg_store(cg, f64(k, cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, ld, seed_index(k, i64c(k, 0), add(k, k->t0, i64c(k, p->L - 1)), n64, p->N)))),
           acc);
  cloop ls = loop_open(k, i32c(k, 0), i32c(k, p->L), i32c(k, 1));
  LLVMValueRef sx = sub(k, i32c(k, p->L - 1), loop_var(k, &ls)), ok = step_ok(k, sx), part = zero64;
  for (int q = 0; q < g->n_lin; q++) {
    LLVMValueRef u = add(k, sx, i32c(k, shift_of(k, q)));
    LLVMValueRef uok = and1(k, ok, and1(k, slt(k, u, i32c(k, p->L)), step_ok(k, u)));
    LLVMValueRef tu = clamp_t(k, cg_select(cg, uok, u, sx)); /* a safe step where not used */
    memo_clear(es);
    LLVMValueRef w = product(es, &g->lin_w[q], 1, cg_select(cg, uok, u, sx), tu, NULL, n64);
    LLVMValueRef dw = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_w[q]], seed_index(k, i64c(k, 0), tu, n64, p->N)));
    part = LLVMBuildFAdd(cg->b, part, cg_select(cg, uok, product_f64(k, w, dw), zero64), "");
  }
  LLVMValueRef t = clamp_t(k, sx);
  for (int a = 0; a < g->n_upd; a++) {
    if (g->seed_r[a] < 0) continue; /* b merged out (as log_decay_part) */
    memo_clear(es);
    LLVMValueRef r = product(es, &g->upd_row[a], g->upd_row_sign[a], sx, t, NULL, n64);
    LLVMValueRef dr = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, k->seed_ptr[g->seed_r[a]], seed_index(k, i64c(k, 0), t, n64, p->N)));
    part = LLVMBuildFSub(cg->b, part, cg_select(cg, ok, product_f64(k, r, dr), zero64), "");
  }
  memo_clear(es);
  LLVMValueRef sum = LLVMBuildFAdd(cg->b, cg_load(cg, cg->t_f64, acc), part, "");
  cg_store(cg, sum, acc);
  LLVMBasicBlockRef past = if_open(k, ok);
  cg_store(cg, LLVMBuildFPTrunc(cg->b, sum, cg->t_f32, ""), cg_gep(cg, cg->t_f32, ld, seed_index(k, i64c(k, 0), t, n64, p->N)));
  if_close(k, past);
  ls.unroll = p->chain_unroll >= 2 && p->ld_chain_unroll > 1 ? p->ld_chain_unroll : 0; /* 0: LLVM's choice */
  loop_close(k, &ls);
  if_close(k, pad);
  loop_close(k, &l);
}

/* The chain as a kernel of its own (blocks of rows summed their partial
 * gradients into the workspace). */
static void lower_ck_chain(ck *k) {
  codegen *cg = k->cg;
  const frnn_step *s = k->s;
  const chunk_gpu *g = k->g;
  int n_in = s->n_ports[FRNN_PORT_INPUT], n_out = s->n_ports[FRNN_PORT_OUTPUT];
  LLVMTypeRef types[TENSOR_PARAMS * (3 * FRNN_MAX_PORTS) + CK_MAX_SEEDS + 16];
  int n = 0;
  for (int i = 0; i < n_in + n_out; i++) tensor_param_types(cg, types, &n);
  int at_seed = n;
  for (int q = 0; q < g->n_seeds; q++) types[n++] = cg->t_gptr;
  int at_gin = n;
  for (int i = 0; i < n_in; i++) tensor_param_types(cg, types, &n);
  int at_T = n;
  types[n++] = cg->t_i64; /* T */
  types[n++] = cg->t_i64; /* H */
  types[n++] = cg->t_i64; /* B */
  types[n++] = cg->t_i64; /* the backward window's chunks: from */
  types[n++] = cg->t_i64; /* to (exclusive) */
  k->lay = NULL;
  k->unroll_loads = k->p->chain_unroll >= 2, k->unroll_sums = k->p->chain_unroll >= 1;
  setup(k, "frnn_ck_chain", types, n);
  k->mb = i64c(k, 0);
  k->T = cg_param(cg, at_T), k->H = cg_param(cg, at_T + 1), k->B = cg_param(cg, at_T + 2);
  LLVMValueRef c_lo = cg_param(cg, at_T + 3), c_hi = cg_param(cg, at_T + 4);
  k->t_lo = mul(k, c_lo, i64c(k, k->p->L)), k->Tw = mul(k, sub(k, c_hi, c_lo), i64c(k, k->p->L));
  k->c = add(k, c_lo, cg_zext64(cg, cg_ctaid_x(cg)));
  k->t0 = mul(k, k->c, i64c(k, k->p->L));
  for (int q = 0; q < g->n_seeds; q++) k->seed_ptr[q] = cg_param(cg, at_seed + q);
  if (k->p->ld_in_chain) {
    ev es;
    if (!ev_init(&es, k, s, g->need, chain_step_sc(k->p, k->p->L))) {
      ev_free(&es);
      cg_error(cg, "out of memory");
      return;
    }
    input_leaves(k, &es, 0);
    scalar_pass(&es);
    cg_barrier(cg);
    chain_log_decay(k, &es);
    cg_barrier(cg); /* its seed is read by the chain's other threads */
    ev_free(&es);
  }
  chain_leaves(k, k->e, TENSOR_PARAMS * n_in);
  chain_chunk(k, k->e, at_gin);
  cg_ret(cg);
}

frnn_status lower_chunked_module(codegen *cg, const ck_plan *p, const chunk_gpu *g, const lower_spec *spec,
                                 const frnn_step *s, unsigned kernels) {
  ck k = {.cg = cg, .p = p, .g = g, .spec = spec, .s = s};
  ev e;
  bool ok = true;
  if (kernels & CK_KERNEL_FWD) {
    k.e = &e;
    ok = ev_init(&e, &k, s, g->need, p->fw.SC);
    if (ok) lower_ck_fwd(&k);
    ev_free(&e);
  }
  if (ok && (kernels & CK_KERNEL_BWD)) {
    ev ea;
    k.e = &e, k.ea = &ea;
    ok = ev_init(&e, &k, s, g->need, p->bw.SC);
    if (ok) ok = ev_init(&ea, &k, g->terms_adj, g->need_adj, p->fused ? p->bw.SCA : 0);
    if (ok) lower_ck_bwd(&k);
    ev_free(&e);
    ev_free(&ea);
    if (ok && !p->fused) {
      ok = ev_init(&e, &k, g->terms_adj, g->need_adj, 0);
      if (ok) lower_ck_chain(&k);
      ev_free(&e);
    }
  }
  if (!ok) return diag_fail(cg->ctx, FRNN_E_NOMEM, "out of memory lowering the chunked kernels of '%s'", s->name);
  return FRNN_OK;
}
