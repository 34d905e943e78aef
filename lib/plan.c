/* plan.c - the kernel plan: how a step's state is spread over threads, how
 * many rows each thread keeps in registers, and how the workspace is laid
 * out.  Decided from M, N and the step's states, not from constants tuned
 * for one size.
 *
 * Forward: heads in parallel (grid y = H, z = B), rows of a head split over
 * `row_blocks` blocks unless the step sums over M.
 *
 * Backward: gradients of rows and scalars are sums over M.  When those sums
 * only flow, linearly, into gradients of inputs (split_kinds below says
 * whether), each warp keeps its rows' partial sums and they are added once
 * every few steps, in a fixed order, through shared memory (the exchange);
 * the head's rows may then also be split over a thread-block cluster of
 * `row_blocks` blocks (sm_90, distributed shared memory; FRNN_BWD_CLUSTER,
 * off by default: measured slower).  Where there is nothing to exchange (no
 * input's gradient a sum over M: rows_apart), the rows are split like the
 * forward's, over independent blocks.  Otherwise one block holds every row
 * and reduces each sum over M in the block.  No atomics either way: bitwise
 * reproducible.
 *
 * The backward's recomputed states go to the workspace, or to shared memory
 * where enough of them fit for that to need no more memory (two levels of
 * checkpoints sized to the slots: shared_slots, plan_workspace). */
#include "frnn_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

/* Floats of state one thread may keep per kernel: the rest of the 255
 * registers hold inputs, temporaries and addresses. */
enum { FWD_STATE_BUDGET = 32, BWD_STATE_BUDGET = 64, MAX_WARPS = 32, MAX_RPT_BY_CHOICE = 8,
       FWD_COLS_PER_LANE = 8, BWD_SPLIT_BUDGET = 32, BWD_SPLIT_WARPS = 4, MAX_CLUSTER = 8,
       MAX_XCHG_STEPS = 8, XCHG_BYTES = 96 * 1024, LEAN_C2 = 8, SMEM_XCHG_BYTES = 32 * 1024,
       MAX_SHARED_SLOTS = 64, SMEM_MIN_WARPS = 16, MAX_APART_BLOCKS = 64, APART_SMEM_BLOCKS = 2,
       CARRY_MAX_FLOATS = 16, MINB_WARPS = 16, PRED_MAX_RPT = 2, ROLES_MAX_REGS = 128,
       SHARED_RESERVED = 1024, SMALL_ROWS_ADJACENT = 2 };

/* Tuning knobs for benchmarks (part of the module key, see pipeline.c):
 * FRNN_BWD_BUDGET floats of state per split backward thread, FRNN_BWD_WARPS
 * warps per block of a cluster, FRNN_BWD_CLUSTER the largest cluster (1:
 * never split), FRNN_BWD_XCHG_STEPS steps per exchange of partial sums. */
static int clamp_int(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

static int env_int(const char *name, int dflt, int lo, int hi) {
  const char *v = getenv(name);
  return !v || !*v ? dflt : clamp_int(atoi(v), lo, hi);
}

int class_floats(int cls, int64_t M, int64_t N) {
  return (int)((CLASS_HAS_M(cls) ? M : 1) * (CLASS_HAS_N(cls) ? N : 1));
}

/* Does any port have an N dimension?  A step without one (HGRN, RWKV-4:
 * every value a column or a scalar) is planned as N = 1 whatever N the
 * call gives: lanes of a row would hold copies of the same values. */
static bool uses_n(const frnn_step *s) {
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < s->n_ports[k]; i++)
      if (CLASS_HAS_N(s->ports[k][i].cls)) return true;
  return false;
}

static int row_states(const frnn_step *s) {
  int n = 0;
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) n += CLASS_HAS_M(s->ports[FRNN_PORT_STATE][i].cls);
  return n;
}

/* Rows that hold a few floats of state and no N (HGRN: one, RWKV-4: three;
 * N the shapes' N).  Such a step waits on its loads, not on arithmetic. */
static bool small_rows(const frnn_step *s, int64_t N) { return N == 1 && row_states(s) <= 4; }

/* Rows a thread of a step of small rows holds side by side: a power of two
 * up to SMALL_ROWS_ADJACENT, dividing M, at most `need` (the rows a lane
 * would have at one warp); FRNN_ROWS_VEC sets the most for any step of
 * small rows.  A bf16 column then moves two rows a 4-byte access, which
 * halves a row's load and store instructions and address arithmetic, and
 * a queue's word holds both (lower_llvm.c vec_of).  By default only where
 * a row's state is one float: its step is then a chain of one or two
 * operations, and the rest is loads, stores and addresses.  Measured on
 * the H200 (twenty-eighth session, 2 rows): HGRN fw+bw 0.194 -> 0.179 ms
 * (forward unchanged); RWKV-4 (three floats, exps and a division a step)
 * 0.321 -> 0.383, its forward 0.103 -> 0.127 (half the warps to hide its
 * latency); 4 rows slower for both. */
static int adjacent_rows(const frnn_step *s, int64_t M, int64_t need) {
  int most = env_int("FRNN_ROWS_VEC", row_states(s) == 1 ? SMALL_ROWS_ADJACENT : 1, 1, VEC_ALIGN / 2), v = 1;
  while (v * 2 <= most && M % (v * 2) == 0 && v * 2 <= need) v *= 2;
  return v;
}

/* A deferred backward (kind from split_kinds) where every input has rows
 * and no input's gradient is a partial sum exchanges nothing: its rows need
 * nothing from each other (S4D), so any number of blocks may share a head,
 * with no cluster.  Steps of small rows keep their own shapes. */
static bool rows_apart(const frnn_step *s, const frnn_step *adj, int n_in, const uint8_t *kind, int64_t Ns) {
  for (int i = 0; i < n_in; i++)
    if (!CLASS_HAS_M(s->ports[FRNN_PORT_INPUT][i].cls) || kind[adj->ports[FRNN_PORT_OUTPUT][i].value] == KIND_PARTIAL)
      return false;
  return !small_rows(s, Ns);
}

static bool sums_over_m(const frnn_step *s) {
  for (uint32_t v = 0; v < s->n_nodes; v++)
    if (s->nodes[v].op == FRNN_OP_SUM_M) return true;
  return false;
}

/* Kinds of the adjoint's values when a head's rows are split over blocks:
 * LOCAL values have rows (each block holds its own), UNIFORM ones have none
 * and are the same in every block, PARTIAL ones are sums over M of which a
 * warp holds its rows' share: the true value is the sum over all warps.  A
 * partial may only be scaled by uniform values, added to partials, negated,
 * summed over N or broadcast over N, chosen by a uniform condition, and
 * reach gradients of inputs; anything else (a partial in a row, in a state's
 * gradient, under a nonlinear op) needs the true sum: returns false. */
bool split_kinds(const frnn_step *adj, int n_in, uint8_t *kind) {
  for (uint32_t v = 0; v < adj->n_nodes; v++) {
    const node *n = &adj->nodes[v];
    int ar = op_get(n->op)->arity, partials = 0, uniforms = 0;
    for (int i = 0; i < ar; i++) {
      int k = kind[n->arg[i]];
      partials += k == KIND_PARTIAL;
      uniforms += k == KIND_UNIFORM;
    }
    kind[v] = CLASS_HAS_M(n->cls) ? KIND_LOCAL : KIND_UNIFORM;
    if (n->op == FRNN_OP_SUM_M) {
      if (partials) return false;
      kind[v] = KIND_PARTIAL;
      continue;
    }
    if (!partials) continue;
    if (CLASS_HAS_M(n->cls)) return false;
    bool linear;
    switch ((frnn_op)n->op) {
    /* partial + uniform would be linear too (the uniform counted by one
     * warp), but no model needs it: refused rather than carried untested. */
    case FRNN_OP_ADD:
    case FRNN_OP_SUB: linear = partials == 2; break;
    case FRNN_OP_MUL: linear = partials == 1 && uniforms == 1; break;
    case FRNN_OP_DIV: linear = kind[n->arg[0]] == KIND_PARTIAL && kind[n->arg[1]] == KIND_UNIFORM; break;
    case FRNN_OP_NEG:
    case FRNN_OP_SUM: linear = true; break;
    case FRNN_OP_BCAST: linear = kind[n->arg[0]] == KIND_PARTIAL && kind[n->arg[1]] != KIND_PARTIAL; break;
    case FRNN_OP_WHERE:
      linear = kind[n->arg[0]] == KIND_UNIFORM && kind[n->arg[1]] == KIND_PARTIAL &&
               kind[n->arg[2]] == KIND_PARTIAL;
      break;
    default: linear = false;
    }
    if (!linear) return false;
    kind[v] = KIND_PARTIAL;
  }
  for (int i = n_in; i < adj->n_ports[FRNN_PORT_OUTPUT]; i++) /* gradients of states */
    if (kind[adj->ports[FRNN_PORT_OUTPUT][i].value] == KIND_PARTIAL) return false;
  return true;
}

/* copies: how many times each state element is held (2 in the backward:
 * the state and its gradient). */
/* cols_per_lane: how many columns of a row one lane should hold; the lanes
 * of a row (a power of two up to 32) follow.  Fewer lanes per row means
 * fewer shuffles per sum over N but more loads of row inputs per warp:
 * measured on the H100 (delta rule, GLA, Mamba-2 at 128 x 128), the forward
 * ran 1.6x faster with 8 columns per lane than with 4 (32 lanes).  The
 * backward, register-bound, starts at 32 lanes; pipeline.c also builds it at
 * 16 (plan_backward_alternatives) where it spills.  max_warps caps a
 * one-block kernel's warps (0: MAX_WARPS). */
static frnn_status choose_shape(frnn_ctx *ctx, const frnn_step *s, int64_t M, int64_t N,
                                int budget, int copies, bool one_block, int cols_per_lane,
                                int force_lpr, int max_warps, kernel_shape *k) {
  memset(k, 0, sizeof *k); /* padding too: shapes are compared whole (same_shape, tests) */
  int lpr = 1;
  while (lpr < 32 && (int64_t)lpr * cols_per_lane < N) lpr *= 2;
  /* Tuning knob for benchmarks: FRNN_LPR forces the lanes per row (a power
   * of two up to 32; part of the module key, see pipeline.c); so does the
   * caller (force_lpr > 0, plan_backward_alternatives). */
  const char *force = getenv("FRNN_LPR");
  int want = force_lpr > 0 ? force_lpr : force && *force ? atoi(force) : 0;
  if (want > 0)
    for (lpr = 1; lpr * 2 <= want && lpr < 32; lpr *= 2) {}
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
  /* Small rows: a thread a row, and more warps.  More threads, each with
   * its own queue of loads in flight (plan.prefetch), hide more of the
   * loads' latency than rows a thread do.  Or a few rows side by side
   * (adjacent_rows): their loads and stores then move as one. */
  bool adjacent = false;
  if (small_rows(s, N)) rpt = adjacent_rows(s, M, (M + groups - 1) / groups), adjacent = rpt > 1;
  /* Each row a thread holds also costs addresses and temporaries: beyond 8
   * rows ptxas spilled (N = 16, 32 rows: 255 registers), so use more warps. */
  if (rpt > MAX_RPT_BY_CHOICE) rpt = MAX_RPT_BY_CHOICE;
  int64_t need = (M + rows_per_warp_pass - 1) / rows_per_warp_pass; /* rows per group */
  if (rpt > need) rpt = (int)need;
  int warps;
  if (one_block) {
    /* max_warps < MAX_WARPS: fewer warps, more rows (and registers) a thread */
    if (max_warps < 1 || max_warps > MAX_WARPS) max_warps = MAX_WARPS;
    warps = (int)((need + rpt - 1) / rpt);
    if (warps > max_warps) {
      rpt = (int)((need + max_warps - 1) / max_warps);
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
  k->rows_adjacent = adjacent;
  k->warps = warps;
  return FRNN_OK;
}

/* The split backward: 32/lpr row groups per warp, `rpt` rows per thread
 * from the budget, BWD_SPLIT_WARPS warps per block, as many blocks (at most
 * max_cluster) as the rows need; more warps per block only when the cluster
 * is full. */
static frnn_status choose_split_shape(frnn_ctx *ctx, const frnn_step *s, int64_t M, int64_t N,
                                      int max_cluster, int cols_per_lane, kernel_shape *k) {
  /* Rows per thread from the budget alone (not raised to fit one block's
   * warps): the cluster's blocks share the rows. */
  frnn_status st = choose_shape(ctx, s, M, N, env_int("FRNN_BWD_BUDGET", BWD_SPLIT_BUDGET, 2, 128),
                                2, false, cols_per_lane, 0, 0, k);
  if (st) return st;
  int64_t groups = 32 / k->lpr;
  int64_t warps_total = (M + groups * k->rpt - 1) / (groups * k->rpt);
  int64_t w = env_int("FRNN_BWD_WARPS", BWD_SPLIT_WARPS, 1, MAX_WARPS);
  int64_t g = (warps_total + w - 1) / w;
  if (g > max_cluster) {
    g = max_cluster;
    w = (warps_total + g - 1) / g;
  }
  if (w > warps_total) w = warps_total;
  if (w > MAX_WARPS) /* too many rows for a cluster: one block */
    return choose_shape(ctx, s, M, N, BWD_STATE_BUDGET, 2, true, 1, 0, 0, k);
  int64_t rows_per_block = w * groups * k->rpt;
  k->warps = (int)w;
  k->row_blocks = (int)((M + rows_per_block - 1) / rows_per_block);
  return FRNN_OK;
}

/* The exchange of the backward's partial sums (lower_llvm.c): per input
 * whose gradient is a partial, one slot per warp and column; steps batched
 * K at a time (one barrier per K steps), two sets of K alternating.  False
 * when even K = 1 does not fit the target's shared memory. */
static bool plan_exchange(const frnn_step *adjoint, const uint8_t *kind, int max_shared, int cap,
                          plan *p) {
  p->xchg_floats = 0;
  for (int i = 0; i < p->n_in; i++) {
    const port *o = &adjoint->ports[FRNN_PORT_OUTPUT][i];
    p->xchg_off[i] = p->xchg_floats;
    p->xchg_stride[i] = 0;
    if (kind[o->value] != KIND_PARTIAL) continue;
    p->xchg_stride[i] = CLASS_HAS_N(o->cls) ? p->bwd.cn * p->bwd.lpr : 1;
    p->xchg_floats += p->bwd.warps * p->xchg_stride[i];
  }
  int k = env_int("FRNN_BWD_XCHG_STEPS", MAX_XCHG_STEPS, 1, MAX_XCHG_STEPS), pow2 = 1;
  while (pow2 * 2 <= k) pow2 *= 2;
  for (k = pow2; k > 1 && (int64_t)2 * k * p->xchg_floats * 4 > cap; k /= 2) {}
  p->xchg_steps = k;
  return (int64_t)2 * k * p->xchg_floats * 4 <= max_shared;
}

/* Bytes of one scratch slot: a state of every thread of one role's block. */
static int64_t slot_bytes(const plan *p) { return (int64_t)p->bwd_regs * p->bwd.warps * 32 * 4; }

/* Steps of one trip of the backward's queue of loads: its loops run whole
 * trips where the chunks (or pieces) are a multiple of it (plan_prefetch). */
static int64_t bwd_trip(const plan *p) {
  return p->prefetch == PREFETCH_REGS && p->pf_depth_bwd > 1 ? p->pf_depth_bwd : 1;
}

/* How many of a backward block's recomputed states fit in its share of the
 * SM's shared memory (`blocks` blocks an SM) beside the exchange (or its sums
 * over M, a static array of warps x cn x lpr floats).  0 when fewer than 3:
 * two levels need C2 + pieces - 1 >= 3 states for a chunk longer than 2
 * steps. */
static int shared_slots(const plan *p, const target *t, int blocks) {
  int64_t state_bytes = slot_bytes(p);
  int64_t used = p->bwd_deferred ? (int64_t)p->xchg_shared_floats * 4
                                 : (int64_t)p->bwd.warps * p->bwd.cn * p->bwd.lpr * 4;
  int64_t slots = (t->max_shared_bytes_optin / blocks - used) / state_bytes;
  if (slots > MAX_SHARED_SLOTS) slots = MAX_SHARED_SLOTS;
  return slots >= 3 ? (int)slots : 0;
}

/* Shared memory holds only a few states, so its chunks are short and the
 * forward saves more checkpoints; the workspace scratch holds C states per
 * block in the threads' layout (padded where lanes hold copies).  Measured on
 * the H100 (docs/BENCHMARKS.md, fourth session): with 3 states in shared
 * memory the delta rule ran 7% slower at 2.9x the memory; where the
 * checkpoints cost no more than the scratch they replace (RWKV-4, HGRN at
 * 128 x 128) it was as fast or faster (RWKV-4 -8%) in less memory.  So:
 * shared memory for blocks of SMEM_MIN_WARPS warps or more, when the
 * workspace at T_REF steps is no larger with it.  The
 * kernels cannot depend on T (one module serves every length); above T_REF
 * the checkpoints grow as T / C against the scratch's 2 sqrt(T).  (Since
 * RWKV-4 and HGRN are planned as N = 1, with no lanes holding copies, no
 * example qualifies; FRNN_BWD_SMEM=1 forces it.) */
static bool shared_scratch_pays(const plan *p) {
  enum { T_REF = 4096 };
  /* Blocks of fewer warps share an SM with others: their shared memory
   * would cut how many fit.  Measured (H100, compare.py, call 9): HGRN and
   * RWKV-4 at M = 128, N = 1 (one-warp blocks, 32-97 KB each) went from 1.22
   * to 2.06 and 2.58 to 3.09 ms.  At 16 warps and more the registers already
   * hold an SM to one or two blocks. */
  if (p->bwd.warps < SMEM_MIN_WARPS) return false;
  frnn_sizes one = {.B = 1, .T = T_REF, .H = 1, .M = p->M, .N = p->N};
  plan global = *p;
  global.bwd_shared_slots = 0;
  ws_layout in_shared, in_workspace;
  plan_workspace(p, one, NULL, 1, &in_shared);
  plan_workspace(&global, one, NULL, 1, &in_workspace);
  return in_shared.total <= in_workspace.total;
}

/* Elements a thread of a kernel of shape ks loads per step: the inputs and
 * (with_out) the outputs' gradients. */
static int step_loads(const frnn_step *s, const kernel_shape *ks, bool with_out) {
  int n = 0;
  for (int k = 0; k < (with_out ? 3 : 1); k += 2)
    for (int i = 0; i < s->n_ports[k]; i++) {
      int c = s->ports[k][i].cls;
      if (CLASS_HAS_M(c) && CLASS_HAS_N(c)) continue; /* taken as time-invariant (below) */
      /* adjacent rows: counted as bf16's, two to a register (cg_vec_words) */
      int rows = ks->rows_adjacent ? (ks->rpt + 1) / 2 : ks->rpt;
      n += (CLASS_HAS_M(c) ? rows : 1) * (CLASS_HAS_N(c) ? ks->cn : 1);
    }
  return n;
}

/* How the time loops fetch ahead (lower_llvm.c, "prefetch").  A step of
 * small rows (HGRN, RWKV-4) waits on nothing but its loads: the next
 * steps' values are queued in registers, as many steps as PF_REGS values
 * allow (up to STREAM_PF_DEPTH_FWD and _BWD), a power of two: the loops run trips of
 * that many steps and the backward's chunks are made a multiple of it
 * (plan_workspace), so that every trip but the sequence's last is whole
 * (H100, RWKV-4 fw+bw: a backward queue of 9 steps 0.75 ms, of 8 0.70;
 * docs/BENCHMARKS.md, twenty-second session).  Other steps get a queue of 4
 * to 8 steps where their per-step loads allow that many (matrix-shaped
 * inputs counted as time-invariant, loaded once): in the forward, and in a
 * backward whose rows are apart.  Measured on the H100 (twenty-third
 * session): S4D's forward 1.22 -> 0.58 ms at 8 steps (0.61 at 16, 254
 * registers); a queue of 1 or 2 steps slowed Mamba's, Longhorn's and mLSTM's
 * forwards by 4-12%, and their register-bound backwards (spilling) by more
 * at 4.  L1 hints slowed Mamba-2's and retention's forwards 5-6x (first
 * sessions).  FRNN_PREFETCH (mode) and FRNN_PREFETCH_DEPTH (steps: "D" both
 * kernels, "D_fwd,D_bwd") override. */
static int queue_depth(int loads, int least, int most, int forced) {
  enum { PF_REGS = 64 };
  if (forced) return forced;
  int d = PF_REGS / (loads > 0 ? loads : 1), pow2 = 1;
  if (d > most) d = most;
  while (pow2 * 2 <= d) pow2 *= 2;
  return pow2 >= least ? pow2 : 0;
}

/* A queue's steps at most, steps of small rows.  The forward's 32 (where
 * 64 values allow it: HGRN's two loads a step; RWKV-4's four keep 16) put
 * more bytes in flight at 8 warps an SM: H200, HGRN's forward 0.077 ->
 * 0.071 ms (64 steps: 0.082).  The backward's two roles are built for 128
 * registers: 32 steps spilled there (HGRN fw+bw 0.206 -> 0.483 ms;
 * twenty-seventh session). */
enum { STREAM_PF_DEPTH_FWD = 32, STREAM_PF_DEPTH_BWD = 16 };

static void plan_prefetch(const frnn_step *s, int64_t Ns, plan *p) {
  bool stream = small_rows(s, Ns);
  p->prefetch = env_int("FRNN_PREFETCH", PREFETCH_REGS, PREFETCH_NONE, PREFETCH_HINT);
  /* "D" for both kernels, or "D_fwd,D_bwd" ("D," leaves the backward's own) */
  const char *env = getenv("FRNN_PREFETCH_DEPTH"), *comma = env ? strchr(env, ',') : NULL;
  int forced = env_int("FRNN_PREFETCH_DEPTH", 0, 0, PLAN_MAX_PF_DEPTH);
  int forced_bwd = comma ? clamp_int(atoi(comma + 1), 0, PLAN_MAX_PF_DEPTH) : forced;
  int least = stream ? 1 : 4;
  p->pf_depth_fwd = queue_depth(step_loads(s, &p->fwd, false), least, stream ? STREAM_PF_DEPTH_FWD : 8, forced);
  p->pf_depth_bwd = stream || p->bwd_rows_apart
                        ? queue_depth(step_loads(s, &p->bwd, true), least, stream ? STREAM_PF_DEPTH_BWD : 8, forced_bwd)
                        : 0;
  /* Scratch in shared memory: pieces of at most (slots + 1) / 2 steps
   * (plan_workspace); a deeper queue would never run a whole trip. */
  int piece = (p->bwd_shared_slots + 1) / 2;
  int unbounded = p->pf_depth_bwd;
  while (p->bwd_shared_slots && p->pf_depth_bwd > 1 && p->pf_depth_bwd > piece) p->pf_depth_bwd /= 2;
  /* The first pass of two levels runs from the chunk's checkpoint to its
   * last piece, a piece's recompute without stores, about a fifth of the
   * walk's instructions a step: a queue of a piece's steps is a fraction of
   * a memory latency ahead there (H200, S4D: its loads' waits were 6% of
   * the backward's stall samples).  Its own queue, as deep as the loads
   * allow (FRNN_PREFETCH_FIRST): S4D fw+bw 2.82 -> 2.69 ms at 8 (16: 2.74,
   * 32: 2.84; twenty-eighth session). */
  bool two = p->bwd_shared_slots > 0 || p->bwd_c2 > 0;
  p->pf_depth_first = two && p->pf_depth_bwd ? env_int("FRNN_PREFETCH_FIRST", unbounded, 0, PLAN_MAX_PF_DEPTH) : 0;
}

/* What an alternative backward changes (0: the plan's own choice). */
typedef struct bwd_choice {
  int lpr;       /* lanes per row */
  int cluster;   /* the largest cluster of blocks a head's rows may be split over */
  int max_warps; /* warps of a one-block backward */
} bwd_choice;

/* Two roles a block (lower_backward role_periods): half the threads
 * recompute chunk k - 1 while the other half walks chunk k, so a thread's
 * chain of dependent steps is one pass, not two.  Where a step's rows need
 * nothing from each other (no exchange, no sums over M: the roles meet at
 * one barrier a chunk, nowhere else) and one level of checkpoints.  The
 * doubled block is built for as many blocks an SM as ROLES_MAX_REGS
 * registers a row allow (a thread of rows side by side: that many times
 * as many, at most 255: H200, HGRN's two rows a thread at 4 blocks an SM
 * spilled 80 bytes and got chunks of 16 steps, fw+bw 0.189 ms; at 2,
 * 0.179), and the two sets of a chunk's states live in
 * its share of shared memory, which bounds the chunk (bwd_roles_c).  In the
 * workspace instead, the sets (twice one role's scratch) fell out of L1:
 * H200, RWKV-4 fw+bw 0.485 -> 0.598 ms, L1 hit rate 63% -> 27%
 * (twenty-sixth session). */
static void plan_roles(plan *p, const target *t) {
  bool fit = p->bwd_deferred && p->xchg_floats == 0 && !p->bwd_shared_slots && p->bwd_c2 == 0 &&
             p->bwd.warps * 2 <= MAX_WARPS;
  if (!fit || !env_int("FRNN_BWD_ROLES", 1, 0, 1)) return;
  int rows = p->bwd.rows_adjacent ? p->bwd.rpt : 1, regs = ROLES_MAX_REGS * rows < 255 ? ROLES_MAX_REGS * rows : 255;
  int threads = p->bwd.warps * 64, regs_blocks = 65536 / (regs * threads);
  int blocks = env_int("FRNN_BWD_ROLES_MINB", regs_blocks > 1 ? regs_blocks : 1, 1, 32);
  int64_t share = (t->max_shared_bytes_optin + SHARED_RESERVED) / blocks - SHARED_RESERVED;
  int64_t q = bwd_trip(p);
  int64_t c = (share / (2 * slot_bytes(p)) - 1) / q * q;
  if (c < 2) return;
  p->bwd_roles = true;
  p->bwd_roles_c = c;
  p->bwd_min_blocks = blocks;
}

/* The plan; `bc` (may be NULL) overrides the backward's choices. */
static frnn_status plan_build(frnn_ctx *ctx, const frnn_step *step, const frnn_step *adjoint, int64_t M,
                              int64_t N, const target *t, const bwd_choice *bc, plan *p) {
  bwd_choice none = {0};
  if (!bc) bc = &none;
  int bwd_lpr = bc->lpr,
      max_warps = bc->max_warps ? bc->max_warps : env_int("FRNN_BWD_MAXWARPS", MAX_WARPS, 1, MAX_WARPS);
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
  int64_t Ns = uses_n(step) ? N : 1; /* the shapes' N */
  frnn_status st =
      choose_shape(ctx, step, M, Ns, FWD_STATE_BUDGET, 1, sums_over_m(step), FWD_COLS_PER_LANE, 0, 0, &p->fwd);
  if (st) return st;
  p->xchg_floats = 0;
  p->xchg_steps = 1;
  p->bwd_min_blocks = 0;
  p->bwd_carry = false;
  p->bwd_roles = false; /* until plan_roles, last: plan_workspace reads it */
  p->bwd_roles_c = 0;
  p->chains = env_int("FRNN_CHAINS", 1, 0, 1);
  /* No queue until plan_prefetch, last (shared_scratch_pays sizes the
   * workspace before it). */
  p->prefetch = PREFETCH_NONE;
  p->pf_depth_fwd = p->pf_depth_bwd = p->pf_depth_first = 0;
  /* Second-level checkpoints: FRNN_BWD_C2 steps apart, else the context's
   * mode (LEAN: 8, the best memory for the time measured; BENCHMARKS.md). */
  p->bwd_c2 = env_int("FRNN_BWD_C2", ctx && ctx->backward_mode == FRNN_BACKWARD_LEAN ? LEAN_C2 : 0, 0,
                      1 << 20);
  /* Checkpoint spacing: FRNN_BWD_C, for benchmarks (memory against the
   * chunk's recomputed states staying in L2; docs/BENCHMARKS.md). */
  p->bwd_c = env_int("FRNN_BWD_C", 0, 0, 1 << 20);
  /* May the backward defer its sums over M (and so split rows)? */
  frnn_step *own = NULL;
  if (!adjoint) {
    if ((st = frnn_step_adjoint(step, &own))) return st;
    adjoint = own;
  }
  uint8_t *kind = malloc(adjoint->n_nodes ? adjoint->n_nodes : 1);
  if (!kind) {
    frnn_step_destroy(own);
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory planning step '%s'", step->name);
  }
  p->bwd_deferred = !sums_over_m(step) && split_kinds(adjoint, p->n_in, kind);
  p->bwd_rows_apart = p->bwd_deferred && rows_apart(step, adjoint, p->n_in, kind, Ns) && !bc->lpr && !bc->cluster &&
                      !bc->max_warps && env_int("FRNN_BWD_APART", 1, 0, 1);
  int max_cluster = t->sm < 90 ? 1 : bc->cluster ? bc->cluster : env_int("FRNN_BWD_CLUSTER", 1, 1, MAX_CLUSTER);
  if (p->bwd_rows_apart)
    st = choose_split_shape(ctx, step, M, Ns, MAX_APART_BLOCKS, FWD_COLS_PER_LANE, &p->bwd);
  else if (p->bwd_deferred && max_cluster > 1)
    st = choose_split_shape(ctx, step, M, Ns, max_cluster, 1, &p->bwd);
  else st = choose_shape(ctx, step, M, Ns, BWD_STATE_BUDGET, 2, true, 1, bwd_lpr, max_warps, &p->bwd);
  /* Recomputed states in shared memory: FRNN_BWD_SMEM = 1 forces them
   * there, 0 into the workspace; unset, the plan decides (shared_scratch_pays).
   * The exchange then gets less of the shared memory. */
  int smem = env_int("FRNN_BWD_SMEM", -1, 0, 1);
  if (!st && p->bwd_deferred &&
      !plan_exchange(adjoint, kind, t->max_shared_bytes_optin, smem ? SMEM_XCHG_BYTES : XCHG_BYTES, p)) {
    /* Too many partial sums to exchange: reduce each sum over M in one block. */
    p->bwd_deferred = false;
    st = choose_shape(ctx, step, M, Ns, BWD_STATE_BUDGET, 2, true, 1, bwd_lpr, max_warps, &p->bwd);
  }
  if (!st) {
    /* Registers of state per backward thread (scratch holds one copy). */
    p->bwd_regs = 0;
    for (int i = 0; i < p->n_st; i++) {
      int c = step->ports[FRNN_PORT_STATE][i].cls;
      p->bwd_regs += (CLASS_HAS_M(c) ? p->bwd.rpt : 1) * (CLASS_HAS_N(c) ? p->bwd.cn : 1);
    }
    /* The walk's carry (lower_backward) keeps a step's states live across
     * the step loop, in registers.  Measured on the H100 (twenty-fourth
     * session), fw+bw: S4D (16 floats a thread) -9%, RWKV-4 (3) -1%, HGRN
     * (1) even; with 29-32, Mamba +1.2% (ptxas halved its registers and
     * spilled twice as much), Longhorn -0.9%, mLSTM even.  So: where the
     * states are few. */
    p->bwd_carry = env_int("FRNN_BWD_CARRY", p->bwd_regs <= CARRY_MAX_FLOATS, 0, 1);
    p->xchg_shared_floats = p->bwd_deferred ? 2 * p->xchg_steps * p->xchg_floats : 0;
    int blocks = env_int("FRNN_BWD_SMEM_BLOCKS", p->bwd_rows_apart ? APART_SMEM_BLOCKS : 1, 1, 32);
    p->bwd_shared_slots = smem ? shared_slots(p, t, blocks) : 0;
    if (smem < 0 && p->bwd_shared_slots && !p->bwd_rows_apart && !shared_scratch_pays(p)) p->bwd_shared_slots = 0;
    /* Several blocks an SM share its shared memory only if their registers
     * let them: cap those (ptxas otherwise takes up to 255 a thread). */
    p->bwd_min_blocks = p->bwd_shared_slots && blocks > 1 ? blocks : 0;
    /* Else one for blocks of 16 warps or more: left to itself, ptxas sizes
     * them for 2 an SM (Mamba's backward at 128 x 128, 16 warps: 64
     * registers a thread and 2968 bytes of spills, 128 and 1724 for one;
     * mLSTM's, 22 warps: 40 and 2480, 80 and 1824), while the plan counts on
     * one.  Smaller blocks keep ptxas's choice (RWKV-4's 4 warps: 168
     * registers, 3 blocks an SM).  FRNN_BWD_MINB=0: never said. */
    if (!p->bwd_min_blocks && p->bwd.warps >= MINB_WARPS) p->bwd_min_blocks = env_int("FRNN_BWD_MINB", 1, 0, 1);
    if (smem && !p->bwd_shared_slots && p->bwd_deferred) {
      /* No scratch in shared memory after all: the exchange may have all of
       * it again (measured: capped, GLA's backward ran 2% slower). */
      plan_exchange(adjoint, kind, t->max_shared_bytes_optin, XCHG_BYTES, p);
      p->xchg_shared_floats = 2 * p->xchg_steps * p->xchg_floats;
    }
  }
  free(kind);
  frnn_step_destroy(own);
  if (!st) plan_prefetch(step, Ns, p);
  if (!st) plan_roles(p, t);
  /* Division by div.full.f32 (FRNN_DIV=0: IEEE div.rn.f32). */
  p->div_full = env_int("FRNN_DIV", 1, 0, 1);
  /* Stores without branches (cg_store_elem_if) in kernels of at most
   * PRED_MAX_RPT rows a thread: there a step is small, and a branch around
   * each store, into which LLVM sinks the stored value's computation, cuts
   * it into pieces ptxas schedules apart.  Measured on the H100 (twenty-fifth
   * session), fw / fw+bw: S4D at N = 128 (2 rows a thread forward, 1
   * backward) 2.42 / 12.27 -> 2.01 / 11.14 ms, RWKV-4 (1) 0.170 / 0.665 ->
   * 0.142 / 0.615; with 4 to 8 rows Mamba ran 1.5-7% slower forward and
   * 2.6-5% backward, mLSTM's backward at N = 16 13%.  FRNN_PRED_STORES = 0
   * or 1 forces them off or on in both kernels. */
  int pred = env_int("FRNN_PRED_STORES", -1, -1, 1);
  p->pred_fwd = pred < 0 ? p->fwd.rpt <= PRED_MAX_RPT : pred;
  p->pred_bwd = pred < 0 ? p->bwd.rpt <= PRED_MAX_RPT : pred;
  return st;
}

frnn_status plan_make(frnn_ctx *ctx, const frnn_step *step, const frnn_step *adjoint, int64_t M,
                      int64_t N, const target *t, plan *p) {
  return plan_build(ctx, step, adjoint, M, N, t, NULL, p);
}

static bool same_shape(const kernel_shape *a, const kernel_shape *b) {
  return a->lpr == b->lpr && a->cn == b->cn && a->rpt == b->rpt && a->rows_adjacent == b->rows_adjacent &&
         a->warps == b->warps &&
         a->row_blocks == b->row_blocks;
}

int plan_backward_alternatives(frnn_ctx *ctx, const frnn_step *step, const target *t, const plan *p,
                               frnn_sizes sz, plan *alt, int cap) {
  /* FRNN_BWD_PICK=0: plan_make's backward only (benchmarks' baseline); a
   * forced lanes per row, or scratch in shared memory (its chunks differ),
   * keep it too. */
  if (p->bwd_shared_slots || getenv("FRNN_LPR") || !env_int("FRNN_BWD_PICK", 1, 0, 1)) return 0;
  bwd_choice tries[8];
  int n_tries = 0;
  if (p->bwd.lpr >= 16 && p->bwd.row_blocks == 1) tries[n_tries++] = (bwd_choice){.lpr = p->bwd.lpr / 2};
  if (p->bwd_deferred && t->sm >= 90)
    for (int c = 2; c <= 8; c *= 2) tries[n_tries++] = (bwd_choice){.cluster = c};
  for (int w = 16; w >= 8; w /= 2) tries[n_tries++] = (bwd_choice){.cluster = 1, .max_warps = w};
  ws_layout own, other;
  plan_workspace(p, sz, NULL, 1, &own);
  int n = 0;
  for (int i = 0; i < n_tries && n < cap; i++) {
    plan *a = &alt[n];
    if (plan_build(ctx, step, NULL, p->M, p->N, t, &tries[i], a)) continue;
    /* The forward (built by the plan) saved the checkpoints and sized the
     * workspace: the alternative must keep the chunks and need no more. */
    plan_workspace(a, sz, NULL, 1, &other);
    if (a->bwd_shared_slots || other.C != own.C || other.C2 != own.C2 || other.total > own.total) continue;
    bool seen = same_shape(&a->bwd, &p->bwd);
    for (int k = 0; k < n && !seen; k++) seen = same_shape(&a->bwd, &alt[k].bwd);
    if (!seen) n++;
  }
  return n;
}

void plan_describe(const plan *p, char *buf, size_t size) {
  const kernel_shape *f = &p->fwd, *b = &p->bwd;
  char sums[64];
  if (p->bwd_rows_apart) snprintf(sums, sizeof sums, "none (rows apart)");
  else if (p->bwd_deferred) snprintf(sums, sizeof sums, "deferred, exchanged every %d steps", p->xchg_steps);
  else snprintf(sums, sizeof sums, "whole at every step");
  bool queued = p->prefetch == PREFETCH_REGS && (p->pf_depth_fwd || p->pf_depth_bwd);
  char spacing[80] = "";
  if (p->bwd_shared_slots) snprintf(spacing, sizeof spacing, " (at most %d states a block)", p->bwd_shared_slots);
  if (p->bwd_c) snprintf(spacing + strlen(spacing), sizeof spacing - strlen(spacing), ", every %lld steps", (long long)p->bwd_c);
  snprintf(buf, size,
           "fwd %d lanes/row x %d cols, %d rows/thread%s, %d warps, %d blocks/head; "
           "bwd %d lanes/row x %d cols, %d rows/thread%s, %d warps, %d blocks/head%s; "
           "sums over M %s; checkpoints %s%s; prefetch %s",
           f->lpr, f->cn, f->rpt, f->rows_adjacent ? " side by side" : "", f->warps, f->row_blocks, b->lpr, b->cn,
           b->rpt, b->rows_adjacent ? " side by side" : "", b->warps,
           b->row_blocks, b->row_blocks > 1 && !p->bwd_rows_apart ? " (a cluster)" : p->bwd_roles ? " (two roles)" : "", sums,
           p->bwd_shared_slots ? "two levels, recomputed in shared memory"
           : p->bwd_c2 > 0     ? "two levels"
                               : "one level",
           spacing,
           queued ? "registers" : p->prefetch == PREFETCH_HINT ? "L1 hints" : "none");
  if (queued) {
    size_t n = strlen(buf);
    snprintf(buf + n, size - n, ", %d/%d steps ahead", p->pf_depth_fwd, p->pf_depth_bwd);
    n = strlen(buf);
    if (p->pf_depth_first) snprintf(buf + n, size - n, " (the first pass %d)", p->pf_depth_first);
  }
  if (p->pred_fwd || p->pred_bwd) {
    size_t n = strlen(buf);
    snprintf(buf + n, size - n, "; predicated stores in the %s", p->pred_fwd && p->pred_bwd ? "forward and backward"
                                                                  : p->pred_fwd           ? "forward"
                                                                                          : "backward");
  }
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

void plan_workspace(const plan *p, frnn_sizes sz, const uint8_t *in_bcast, int for_backward,
                    ws_layout *w) {
  /* The forward saves the states every C steps.  By default the backward
   * recomputes each chunk of C = sqrt(T) steps into scratch (C2 = C): T/C + C
   * states per head.  With FRNN_BWD_C2 = c2 it keeps two levels: each chunk
   * is recomputed once to save its states every C2 steps, then each piece of
   * C2 steps into scratch: T/C + C/C2 - 1 + C2 states, least for C =
   * sqrt(T * C2).  Measured on the H100 (delta rule, 128 x 128, T = 1024):
   * C2 = 8 cut the peak from 1.68 to 1.13 GB but the second recompute pass
   * cost 42% more time (docs/BENCHMARKS.md).  The plan fixed C2 (its
   * kernels are compiled for one level or two). */
  int64_t C2 = p->bwd_c2, C, pieces;
  int64_t q = bwd_trip(p); /* chunks (or pieces) a multiple of q: whole trips */
  if (p->bwd_shared_slots) {
    /* Scratch in shared memory: at most S = slots states, C2 recomputed and
     * C/C2 - 1 second-level checkpoints, so a chunk of at most
     * C2 (S - C2 + 1) steps.  Each piece of C2 steps and each chunk starts
     * its loops and queues anew (S4D: about 430 instructions a piece), so
     * the C2 (a multiple of q: whole trips) with fewest of both, 1/C2 + 1/C
     * least.  S4D at S = 14, q = 4: C2 = 12, C = 36 (was 8 and 44, the
     * longest chunk).  FRNN_BWD_C may shorten the chunk (more checkpoints,
     * less shared memory), FRNN_BWD_C2 fix C2 (as it fits).  plan_prefetch
     * keeps q <= (S + 1) / 2. */
    int64_t S = p->bwd_shared_slots, step = q > 1 && q <= S ? q : 1;
    double best = 0;
    C = C2 = 1;
    for (int forced = p->bwd_c2 > 0; forced >= 0 && best == 0; forced--) /* a C2 that does not fit: free */
      for (int64_t c2 = step; c2 <= S; c2 += step) {
        int64_t c = c2 * (S - c2 + 1);
        if (p->bwd_c && p->bwd_c < c) c = p->bwd_c;
        if (c > sz.T) c = sz.T;
        if (c2 > c || c2 + (c + c2 - 1) / c2 - 1 > S || (forced && c2 != p->bwd_c2)) continue;
        double cost = 1.0 / (double)c2 + 1.0 / (double)c;
        if (best == 0 || cost < best) best = cost, C = c, C2 = c2;
      }
    if (best == 0) C = C2 = sz.T < S ? (sz.T > 0 ? sz.T : 1) : S; /* T shorter than a trip: one piece */
  } else if (C2 == 0 || C2 >= sz.T) {
    C = p->bwd_c ? p->bwd_c : (int64_t)ceil(sqrt((double)sz.T));
    if (!p->bwd_c && q > 1) C = (C + q - 1) / q * q;
    if (p->bwd_roles && C > p->bwd_roles_c) C = p->bwd_roles_c; /* two sets in shared memory */
    if (C > sz.T) C = sz.T;
    if (C < 1) C = 1;
    C2 = C;
  } else if (p->bwd_c) { /* a multiple of C2 */
    C = (p->bwd_c + C2 - 1) / C2 * C2;
  } else {
    C = (int64_t)ceil(sqrt((double)sz.T * (double)C2) / (double)C2) * C2;
  }
  w->C = C;
  w->C2 = C2;
  w->n_ckpt = (sz.T + C - 1) / C;
  pieces = (C + C2 - 1) / C2;
  size_t state_bytes = (size_t)slot_bytes(p);
  w->bwd_shared = (unsigned)((size_t)p->xchg_shared_floats * 4 +
                             (p->bwd_shared_slots ? (size_t)(C2 + pieces - 1) * state_bytes
                              : p->bwd_roles      ? 2 * (size_t)(C + 1) * state_bytes
                                                  : 0));
  size_t heads = (size_t)sz.B * (size_t)sz.H;
  w->ckpt = 0;
  size_t off = 0;
  if (for_backward) {
    off = align256(heads * (size_t)w->n_ckpt * (size_t)p->state_floats * 4);
    w->scratch = off;
    size_t states = plan_scratch_shared(p) ? 0 : (size_t)(C2 + pieces - 1); /* scratch, second level */
    off = align256(off + heads * (size_t)p->bwd.row_blocks * states * state_bytes);
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
