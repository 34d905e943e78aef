/* lower_llvm.c - kernel plan + step graphs -> LLVM IR kernels.
 *
 * Three kernels per step (plan.c decides their shapes):
 *   frnn_fwd   one (b,h) head and a block of its rows per block; the time
 *              loop runs inside; states live in registers; outputs and final
 *              states are written, and every C steps the states are saved
 *              (canonical layout) as checkpoints in the workspace.
 *   frnn_bwd   one head per block, all its rows; chunks of C steps in
 *              reverse: reload the chunk's checkpoint, recompute its states
 *              into a per-thread scratch area (in the workspace, or in shared
 *              memory where the plan says so), then walk the chunk backwards
 *              evaluating the adjoint graph.  Sums over M (gradients of rows
 *              and scalars) are reduced in the block through shared memory in
 *              a fixed order: no atomics, bitwise reproducible.
 *   frnn_reduce_<dtype>  sums partial gradients of inputs broadcast over B
 *              or H (written by frnn_bwd per head) over those dimensions.
 *
 * Every graph node becomes, per thread, one float per element it holds: a
 * matrix node rpt x cn floats, a column node rpt, a row node cn, a scalar 1.
 * Everything is unrolled at compile time; loop-carried values are allocas
 * that mem2reg turns into registers. */
#include "frnn_internal.h"

#include <llvm-c/Core.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct targ {
  LLVMValueRef ptr;     /* global pointer as passed */
  LLVMValueRef is_null; /* i1 */
  LLVMValueRef off0;    /* i64: b*sB + h*sH */
  LLVMValueRef sT, sM, sN;
  enum tdtype dt;
  bool contig; /* rows of N elements, unit column stride (the spec says so):
                  element offsets within a step are compile-time multiples */
  bool present; /* known to be there: the spec marks only a present tensor
                   contiguous (pipeline.c contig_mask), except an input's
                   gradient (its partials are) */
  bool aligned; /* contiguous and VEC_ALIGN-aligned (lower_spec.aligned): adjacent rows
                   move as one vector (vec_of) */
} targ;

typedef struct lower {
  codegen *cg;
  const plan *p;
  const lower_spec *spec;
  int guard;         /* GUARD_*: the kernels' last parameter is the call's flag */
  kernel_shape ks;
  LLVMValueRef tid, warp, group, lane_in_row, first_group, lane0; /* i32 / i1 */
  LLVMValueRef b, h, bh;                                          /* i64 */
  LLVMValueRef row[PLAN_MAX_RPT], row_ok[PLAN_MAX_RPT], row_safe[PLAN_MAX_RPT];
  LLVMValueRef col[PLAN_MAX_CN], col_ok[PLAN_MAX_CN], col_safe[PLAN_MAX_CN];
  LLVMValueRef smem; /* shared floats for sums over M: warps * cn * lpr */
  bool pred_stores;   /* store_tensor: predicated stores (plan pred_fwd, pred_bwd) */
  const uint8_t *kind; /* while emitting a deferred adjoint: split_kinds of its nodes */
  const uint8_t *to_caller; /* while emitting with chains: nodes the caller emits itself */
  uint8_t *absorbed;        /* of the graph emitted last: absorbed_nodes */
  bool chains;              /* sums of products as chains of FMAs (the backward's) */
  LLVMValueRef **vals;
  uint32_t n_vals;
} lower;

/* ------------------------------------------------------------- geometry */
static int count_of(const kernel_shape *ks, int cls) {
  return (CLASS_HAS_M(cls) ? ks->rpt : 1) * (CLASS_HAS_N(cls) ? ks->cn : 1);
}

/* Element (r,c) of a value of class cls, broadcast over what it lacks. */
static LLVMValueRef at(const lower *lw, LLVMValueRef *v, int cls, int r, int c) {
  int cn = CLASS_HAS_N(cls) ? lw->ks.cn : 1;
  return v[(CLASS_HAS_M(cls) ? r : 0) * cn + (CLASS_HAS_N(cls) ? c : 0)];
}

static LLVMValueRef i1_and(lower *lw, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAnd(lw->cg->b, a, b, "");
}

static LLVMValueRef icmp(lower *lw, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(lw->cg->b, p, a, b, "");
}

/* role_threads > 0: a block of two roles of that many threads each, which
 * hold the same rows (thread i and thread role_threads + i). */
static void geometry(lower *lw, LLVMValueRef row_block, int role_threads) {
  codegen *cg = lw->cg;
  const kernel_shape *ks = &lw->ks;
  int groups = 32 / ks->lpr;
  lw->tid = cg_tid_x(cg);
  if (role_threads) lw->tid = LLVMBuildURem(cg->b, lw->tid, cg_i32(cg, role_threads), "role_tid");
  LLVMValueRef lane = LLVMBuildAnd(cg->b, lw->tid, cg_i32(cg, 31), "lane");
  lw->warp = LLVMBuildLShr(cg->b, lw->tid, cg_i32(cg, 5), "warp");
  lw->lane_in_row = LLVMBuildAnd(cg->b, lane, cg_i32(cg, ks->lpr - 1), "lane_in_row");
  lw->group = LLVMBuildUDiv(cg->b, lane, cg_i32(cg, ks->lpr), "group");
  lw->lane0 = icmp(lw, LLVMIntEQ, lw->lane_in_row, cg_i32(cg, 0));
  lw->first_group = i1_and(lw, icmp(lw, LLVMIntEQ, row_block, cg_i32(cg, 0)),
                           i1_and(lw, icmp(lw, LLVMIntEQ, lw->warp, cg_i32(cg, 0)),
                                  icmp(lw, LLVMIntEQ, lw->group, cg_i32(cg, 0))));
  int64_t per_pass = (int64_t)ks->warps * groups;
  /* the thread's place among the threads of its head (rows_adjacent: its
   * rows start at place x rpt), or its first row */
  LLVMValueRef base = cg_add(cg, cg_mul(cg, cg_zext64(cg, row_block), cg_i64(cg, per_pass * (ks->rows_adjacent ? 1 : ks->rpt))),
                             cg_add(cg, cg_mul(cg, cg_zext64(cg, lw->warp), cg_i64(cg, groups)),
                                    cg_zext64(cg, lw->group)));
  /* When the blocks tile M exactly every row is valid: say so statically,
   * so that addresses stay affine in the row (constant offsets). */
  bool rows_exact = (int64_t)ks->row_blocks * per_pass * ks->rpt == lw->p->M;
  for (int r = 0; r < ks->rpt; r++) {
    lw->row[r] = ks->rows_adjacent ? cg_add(cg, cg_mul(cg, base, cg_i64(cg, ks->rpt)), cg_i64(cg, r))
                                   : cg_add(cg, base, cg_i64(cg, r * per_pass));
    lw->row_ok[r] = rows_exact ? LLVMConstInt(cg->t_i1, 1, 0) : cg_ult(cg, lw->row[r], cg_i64(cg, lw->p->M));
    lw->row_safe[r] = rows_exact ? lw->row[r] : cg_select(cg, lw->row_ok[r], lw->row[r], cg_i64(cg, 0));
  }
  for (int c = 0; c < ks->cn; c++) {
    lw->col[c] = cg_add(cg, cg_zext64(cg, lw->lane_in_row), cg_i64(cg, (int64_t)c * ks->lpr));
    lw->col_ok[c] = (int64_t)(c + 1) * ks->lpr <= lw->p->N
                        ? LLVMConstInt(cg->t_i1, 1, 0)
                        : cg_ult(cg, lw->col[c], cg_i64(cg, lw->p->N));
    lw->col_safe[c] = cg_select(cg, lw->col_ok[c], lw->col[c], cg_i64(cg, 0));
  }
}

/* Does this thread write element (r,c) of a value of class cls?  Exactly one
 * thread of the grid's head answers yes for each element. */
static LLVMValueRef owner(lower *lw, int cls, int r, int c) {
  LLVMValueRef m = CLASS_HAS_M(cls) ? lw->row_ok[r] : lw->first_group;
  LLVMValueRef n = CLASS_HAS_N(cls) ? lw->col_ok[c] : lw->lane0;
  return i1_and(lw, m, n);
}

/* ------------------------------------------------------------- tensors */
void tensor_param_types(codegen *cg, LLVMTypeRef *types, int *n) {
  types[(*n)++] = cg->t_gptr;
  for (int k = 0; k < 5; k++) types[(*n)++] = cg->t_i64;
}

/* Port i's tensor of role `role` (CONTIG_*), its parameters from `first`. */
static targ tensor_arg(lower *lw, int first, enum tdtype dt, int role, int i) {
  codegen *cg = lw->cg;
  bool contig = (lw->spec->contig[role] >> i) & 1;
  targ t = {.ptr = cg_param(cg, first), .dt = dt, .contig = contig, .present = contig && role != CONTIG_GIN,
            .aligned = contig && ((lw->spec->aligned[role] >> i) & 1)};
  t.is_null = LLVMBuildIsNull(cg->b, t.ptr, "");
  LLVMValueRef sB = cg_param(cg, first + 1), sH = cg_param(cg, first + 3);
  t.sT = cg_param(cg, first + 2);
  t.sM = cg_param(cg, first + 4);
  t.sN = cg_param(cg, first + 5);
  t.off0 = cg_add(cg, cg_mul(cg, lw->b, sB), cg_mul(cg, lw->h, sH));
  return t;
}

static LLVMValueRef elem_index(lower *lw, const targ *t, LLVMValueRef time, int cls, int r, int c) {
  codegen *cg = lw->cg;
  LLVMValueRef idx = cg_add(cg, t->off0, cg_mul(cg, time, t->sT));
  LLVMValueRef sM = t->contig ? cg_i64(cg, CLASS_HAS_N(cls) ? lw->p->N : 1) : t->sM;
  LLVMValueRef sN = t->contig ? cg_i64(cg, 1) : t->sN;
  if (CLASS_HAS_M(cls)) idx = cg_add(cg, idx, cg_mul(cg, lw->row_safe[r], sM));
  if (CLASS_HAS_N(cls)) idx = cg_add(cg, idx, cg_mul(cg, lw->col_safe[c], sN));
  return idx;
}

/* Elements of tensor t (class cls) a thread moves in one access: its rows
 * side by side (rows_adjacent) of an aligned column (no N, or N = 1), as
 * many as divide both its rows and M (a vector's rows are then all valid
 * or none) and fit VEC_ALIGN bytes; else 1. */
static int vec_of(const lower *lw, const targ *t, int cls) {
  const kernel_shape *ks = &lw->ks;
  if (!ks->rows_adjacent || !t->aligned || !CLASS_HAS_M(cls) || (CLASS_HAS_N(cls) && lw->p->N != 1)) return 1;
  int v = 1, most = VEC_ALIGN / tdtype_bytes(t->dt);
  while (v * 2 <= most && ks->rpt % (v * 2) == 0 && lw->p->M % (v * 2) == 0) v *= 2;
  return v;
}

/* Words a thread's elements of t (class cls) take as loaded: a vector's
 * (cg_vec_words) each vec_of elements, or one an element. */
static int words_of(const lower *lw, const targ *t, int cls) {
  int vec = vec_of(lw, t, cls);
  return count_of(&lw->ks, cls) / vec * (vec > 1 ? cg_vec_words(t->dt, vec) : 1);
}

/* Element e of a thread's elements of t as float32, from their words. */
static LLVMValueRef word_elem(lower *lw, const targ *t, int cls, const LLVMValueRef *words, int e) {
  int vec = vec_of(lw, t, cls);
  if (vec == 1) return cg_raw_to_f32(lw->cg, words[e], t->dt);
  int w = cg_vec_words(t->dt, vec), per = vec / w, j = e % vec;
  return cg_word_to_f32(lw->cg, words[e / vec * w + j / per], t->dt, vec, j % per);
}

/* Load the thread's elements of tensor t at time `time` (or from the
 * addresses `addr` of its vectors (vec_of: one an element), unless NULL):
 * as float32, or (queued) as stored, words_of of them, by inline PTX
 * (cg_load_raw_at, cg_load_words_at), for a prefetch queue, which widens
 * them when it hands them out (a value widened here would be waited for
 * here, not steps later).  An absent tensor (null pointer) reads as zeros
 * when `optional`. */
static void load_tensor_as(lower *lw, const targ *t, LLVMValueRef time, const LLVMValueRef *addr, int cls,
                           bool optional, bool queued, LLVMValueRef *out) {
  codegen *cg = lw->cg;
  int n = count_of(&lw->ks, cls), cn = CLASS_HAS_N(cls) ? lw->ks.cn : 1, vec = vec_of(lw, t, cls);
  int w = vec > 1 ? cg_vec_words(t->dt, vec) : 1, n_out = queued ? words_of(lw, t, cls) : n;
  LLVMBasicBlockRef load_bb = NULL, merge_bb = NULL, from = NULL;
  optional = optional && !t->present; /* a contiguous output gradient: no branch, no zeros */
  if (optional) {
    from = LLVMGetInsertBlock(cg->b);
    load_bb = cg_block(cg, "load");
    merge_bb = cg_block(cg, "loaded");
    cg_cond_br(cg, t->is_null, merge_bb, load_bb);
    cg_at(cg, load_bb);
  }
  for (int g = 0; g < n / vec; g++) {
    int k = g * vec;
    LLVMValueRef idx = addr ? NULL : elem_index(lw, t, time, cls, k / cn, k % cn);
    if (vec > 1 && queued)
      cg_load_words_at(cg, addr ? addr[g] : cg_elem_addr(cg, t->ptr, idx, t->dt), t->dt, vec, out + g * w);
    else if (vec > 1)
      cg_load_vec_elems(cg, t->ptr, idx, t->dt, vec, out + k);
    else if (addr)
      out[k] = cg_load_raw_at(cg, addr[k], t->dt);
    else
      out[k] = queued ? cg_load_raw_opaque(cg, t->ptr, idx, t->dt) : cg_load_elem(cg, t->ptr, idx, t->dt);
  }
  if (optional) {
    LLVMBasicBlockRef end = LLVMGetInsertBlock(cg->b);
    cg_br(cg, merge_bb);
    cg_at(cg, merge_bb);
    for (int k = 0; k < n_out; k++) {
      LLVMValueRef phi = LLVMBuildPhi(cg->b, LLVMTypeOf(out[k]), "");
      LLVMValueRef vals[2] = {LLVMConstNull(LLVMTypeOf(out[k])), out[k]};
      LLVMBasicBlockRef bbs[2] = {from, end};
      LLVMAddIncoming(phi, vals, bbs, 2);
      out[k] = phi;
    }
  }
}

static void load_tensor(lower *lw, const targ *t, LLVMValueRef time, int cls, bool optional,
                        LLVMValueRef *out) {
  load_tensor_as(lw, t, time, NULL, cls, optional, false, out);
}

/* Store value v (class vcls, broadcast to port class pcls) at `time`, each
 * element by its owner; nothing when the tensor is absent. */
static void store_tensor(lower *lw, const targ *t, LLVMValueRef time, int pcls, LLVMValueRef *v,
                         int vcls) {
  codegen *cg = lw->cg;
  int vec = vec_of(lw, t, pcls); /* > 1: rows r .. r + vec - 1 in one store (one owner, vec_of) */
  LLVMValueRef row_vals[VEC_ALIGN / 2];
  if (lw->pred_stores) {
    LLVMValueRef present = LLVMBuildNot(cg->b, t->is_null, "");
    for (int r = 0; r < (CLASS_HAS_M(pcls) ? lw->ks.rpt : 1); r += vec)
      for (int c = 0; c < (CLASS_HAS_N(pcls) ? lw->ks.cn : 1); c++) {
        LLVMValueRef pred = i1_and(lw, present, owner(lw, pcls, r, c)), idx = elem_index(lw, t, time, pcls, r, c);
        if (vec == 1) {
          cg_store_elem_if(cg, t->ptr, idx, t->dt, at(lw, v, vcls, r, c), pred);
          continue;
        }
        for (int j = 0; j < vec; j++) row_vals[j] = at(lw, v, vcls, r + j, c);
        cg_store_vec_if(cg, t->ptr, idx, t->dt, vec, row_vals, pred);
      }
    return;
  }
  LLVMBasicBlockRef go = cg_block(cg, "store"), done = cg_block(cg, "stored");
  cg_cond_br(cg, t->is_null, done, go);
  cg_at(cg, go);
  for (int r = 0; r < (CLASS_HAS_M(pcls) ? lw->ks.rpt : 1); r += vec)
    for (int c = 0; c < (CLASS_HAS_N(pcls) ? lw->ks.cn : 1); c++) {
      LLVMBasicBlockRef yes = cg_block(cg, "own"), next = cg_block(cg, "next");
      cg_cond_br(cg, owner(lw, pcls, r, c), yes, next);
      cg_at(cg, yes);
      LLVMValueRef idx = elem_index(lw, t, time, pcls, r, c);
      if (vec == 1) cg_store_elem(cg, t->ptr, idx, t->dt, at(lw, v, vcls, r, c));
      for (int j = 0; vec > 1 && j < vec; j++) row_vals[j] = at(lw, v, vcls, r + j, c);
      if (vec > 1) cg_store_vec_if(cg, t->ptr, idx, t->dt, vec, row_vals, NULL);
      cg_br(cg, next);
      cg_at(cg, next);
    }
  cg_br(cg, done);
  cg_at(cg, done);
}

/* Canonical index of element (r,c) of a state of class cls within a head's
 * states (the checkpoint layout). */
static LLVMValueRef state_index(lower *lw, int s, int cls, int r, int c) {
  codegen *cg = lw->cg;
  LLVMValueRef idx = cg_i64(cg, lw->p->state_offset[s]);
  if (CLASS_HAS_M(cls))
    idx = cg_add(cg, idx, cg_mul(cg, lw->row_safe[r], cg_i64(cg, CLASS_HAS_N(cls) ? lw->p->N : 1)));
  if (CLASS_HAS_N(cls)) idx = cg_add(cg, idx, lw->col_safe[c]);
  return idx;
}

/* -------------------------------------------------------------- values */
static LLVMValueRef *new_vals(lower *lw, int cls) {
  LLVMValueRef *v = calloc((size_t)count_of(&lw->ks, cls), sizeof *v);
  if (!v) cg_error(lw->cg, "out of memory lowering");
  return v;
}

/* Allocas holding one value of class cls across loop iterations (of type
 * ty: new_slots, float32). */
static LLVMValueRef *new_slots_of(lower *lw, int cls, LLVMBasicBlockRef entry, LLVMTypeRef ty) {
  codegen *cg = lw->cg;
  int n = count_of(&lw->ks, cls);
  LLVMValueRef *v = new_vals(lw, cls);
  if (!v) return NULL;
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first) LLVMPositionBuilderBefore(cg->b, first);
  else LLVMPositionBuilderAtEnd(cg->b, entry);
  for (int k = 0; k < n; k++) v[k] = LLVMBuildAlloca(cg->b, ty, "");
  LLVMPositionBuilderAtEnd(cg->b, here);
  return v;
}
static LLVMValueRef *new_slots(lower *lw, int cls, LLVMBasicBlockRef entry) {
  return new_slots_of(lw, cls, entry, lw->cg->t_f32);
}

static void slots_get(lower *lw, LLVMValueRef *slots, int cls, LLVMValueRef *out) {
  for (int k = 0; k < count_of(&lw->ks, cls); k++) out[k] = cg_load(lw->cg, lw->cg->t_f32, slots[k]);
}

/* slots (class cls) = v (class vcls, broadcast) */
static void slots_set(lower *lw, LLVMValueRef *slots, int cls, LLVMValueRef *v, int vcls) {
  int cn = CLASS_HAS_N(cls) ? lw->ks.cn : 1;
  for (int k = 0; k < count_of(&lw->ks, cls); k++)
    cg_store(lw->cg, at(lw, v, vcls, k / cn, k % cn), slots[k]);
}

/* ------------------------------------------------------------- op lowering */
static LLVMValueRef bool_to_f32(codegen *cg, LLVMValueRef c) {
  return cg_select(cg, c, cg_f32(cg, 1.0), cg_f32(cg, 0.0));
}

static LLVMValueRef fcmp(codegen *cg, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(cg->b, p, a, b, "");
}

static LLVMValueRef sigmoid(codegen *cg, LLVMValueRef x) {
  /* 1 / (1 + e^-x): e^-x overflows to inf for x << 0, giving 0 as it should. */
  return cg_fdiv(cg, cg_f32(cg, 1.0), cg_fadd(cg, cg_f32(cg, 1.0), cg_exp(cg, cg_fneg(cg, x))));
}

static LLVMValueRef softplus(codegen *cg, LLVMValueRef x) {
  /* max(x,0) + log1p(e^-|x|); log1p(u) ~ u - u^2/2 below 1e-4, where
   * log(1+u) would lose the digits of u. */
  LLVMValueRef u = cg_exp(cg, cg_fneg(cg, cg_fabs(cg, x)));
  LLVMValueRef small = fcmp(cg, LLVMRealOLT, u, cg_f32(cg, 1e-4));
  LLVMValueRef series = cg_fsub(cg, u, cg_fmul(cg, cg_f32(cg, 0.5), cg_fmul(cg, u, u)));
  LLVMValueRef l = cg_select(cg, small, series, cg_log(cg, cg_fadd(cg, cg_f32(cg, 1.0), u)));
  LLVMValueRef pos = cg_select(cg, fcmp(cg, LLVMRealOGT, x, cg_f32(cg, 0.0)), x, cg_f32(cg, 0.0));
  return cg_fadd(cg, pos, l);
}

static LLVMValueRef lower_pow(codegen *cg, LLVMValueRef x, double e) {
  if (e == 2.0) return cg_fmul(cg, x, x);
  if (e == 3.0) return cg_fmul(cg, x, cg_fmul(cg, x, x));
  if (e == 0.5) return cg_sqrt(cg, x);
  if (e == -1.0) return cg_fdiv(cg, cg_f32(cg, 1.0), x);
  if (e == -0.5) return cg_rsqrt(cg, x);
  if (e == 0.0) return cg_f32(cg, 1.0);
  return cg_pow(cg, x, cg_f32(cg, e));
}

/* The float32 value of an elementwise op: must match op_eval (ops.c). */
LLVMValueRef lower_elementwise(codegen *cg, frnn_op op, LLVMValueRef a, LLVMValueRef b,
                                      LLVMValueRef c, double exponent) {
  switch (op) {
  case FRNN_OP_ADD: return cg_fadd(cg, a, b);
  case FRNN_OP_SUB: return cg_fsub(cg, a, b);
  case FRNN_OP_MUL: return cg_fmul(cg, a, b);
  case FRNN_OP_DIV: return cg_fdiv(cg, a, b);
  case FRNN_OP_NEG: return cg_fneg(cg, a);
  case FRNN_OP_EXP: return cg_exp(cg, a);
  case FRNN_OP_LOG: return cg_log(cg, a);
  case FRNN_OP_SQRT: return cg_sqrt(cg, a);
  case FRNN_OP_RSQRT: return cg_rsqrt(cg, a);
  case FRNN_OP_ABS: return cg_fabs(cg, a);
  case FRNN_OP_TANH: return cg_tanh(cg, a);
  case FRNN_OP_SIGMOID: return sigmoid(cg, a);
  case FRNN_OP_SOFTPLUS: return softplus(cg, a);
  case FRNN_OP_SILU: return cg_fmul(cg, a, sigmoid(cg, a));
  case FRNN_OP_LT: return bool_to_f32(cg, fcmp(cg, LLVMRealOLT, a, b));
  case FRNN_OP_GT: return bool_to_f32(cg, fcmp(cg, LLVMRealOGT, a, b));
  case FRNN_OP_LE: return bool_to_f32(cg, fcmp(cg, LLVMRealOLE, a, b));
  case FRNN_OP_GE: return bool_to_f32(cg, fcmp(cg, LLVMRealOGE, a, b));
  case FRNN_OP_MAX: return cg_fmax(cg, a, b);
  case FRNN_OP_MIN: return cg_fmin(cg, a, b);
  case FRNN_OP_POW: return lower_pow(cg, a, exponent);
  /* where(c, a, b): C's `c != 0.0` is true for NaN: unordered-or-not-equal. */
  case FRNN_OP_WHERE: return cg_select(cg, fcmp(cg, LLVMRealUNE, a, cg_f32(cg, 0.0)), b, c);
  case FRNN_OP_BCAST: return a;
  case FRNN_OP_INPUT:
  case FRNN_OP_STATE:
  case FRNN_OP_CONST:
  case FRNN_OP_SUM:
  case FRNN_OP_SUM_M:
  case FRNN_OP_COUNT: break;
  }
  cg_error(cg, "op %d is not elementwise", (int)op);
  return cg_f32(cg, 0.0);
}

/* The sum of a thread's elements of x along one dimension, masked to valid
 * rows or columns: over its columns of row `fixed` (over_rows false), or
 * over its rows of column `fixed`. */
static LLVMValueRef thread_sum(lower *lw, LLVMValueRef *x, int xcls, int fixed, bool over_rows) {
  codegen *cg = lw->cg;
  LLVMValueRef s = NULL;
  for (int i = 0; i < (over_rows ? lw->ks.rpt : lw->ks.cn); i++) {
    LLVMValueRef v = over_rows ? at(lw, x, xcls, i, fixed) : at(lw, x, xcls, fixed, i);
    LLVMValueRef e = cg_select(cg, over_rows ? lw->row_ok[i] : lw->col_ok[i], v, cg_f32(cg, 0.0));
    s = s ? cg_fadd(cg, s, e) : e;
  }
  return s;
}

/* sum over N: the thread's columns, then a butterfly over the lanes of the
 * row. */
static void lower_sum_n(lower *lw, LLVMValueRef *x, int xcls, LLVMValueRef *out, int ocls) {
  codegen *cg = lw->cg;
  for (int r = 0; r < (CLASS_HAS_M(ocls) ? lw->ks.rpt : 1); r++) {
    LLVMValueRef s = thread_sum(lw, x, xcls, r, false);
    out[r] = cg_sum_lanes_f32(cg, s, lw->ks.lpr);
  }
}

/* sum over M, a warp's share: the thread's rows, then a butterfly over the
 * row groups of the warp.  Deferred sums stop here (the
 * exchange of lower_backward adds the warps' shares). */
static void lower_sum_m_partial(lower *lw, LLVMValueRef *x, int xcls, LLVMValueRef *out, int ocls) {
  codegen *cg = lw->cg;
  for (int c = 0; c < (CLASS_HAS_N(ocls) ? lw->ks.cn : 1); c++) {
    LLVMValueRef s = thread_sum(lw, x, xcls, c, true);
    for (int m = 16; m >= lw->ks.lpr; m /= 2) s = cg_fadd(cg, s, cg_shfl_bfly_f32(cg, s, m, 32));
    out[c] = s;
  }
}

/* sum over M, whole: each warp's share, then across warps through shared
 * memory in warp order (deterministic).  Needs the whole head in the block. */
static void lower_sum_m(lower *lw, LLVMValueRef *x, int xcls, LLVMValueRef *out, int ocls) {
  codegen *cg = lw->cg;
  int cn = CLASS_HAS_N(ocls) ? lw->ks.cn : 1;
  LLVMValueRef part[PLAN_MAX_CN];
  lower_sum_m_partial(lw, x, xcls, part, ocls);
  if (lw->ks.warps == 1) {
    for (int c = 0; c < cn; c++) out[c] = part[c];
    return;
  }
  int stride = lw->ks.cn * lw->ks.lpr; /* floats per warp in smem */
  cg_barrier(cg);                      /* the previous sum's readers are done */
  LLVMBasicBlockRef w = cg_block(cg, "summ_write"), done = cg_block(cg, "summ_written");
  cg_cond_br(cg, icmp(lw, LLVMIntEQ, lw->group, cg_i32(cg, 0)), w, done);
  cg_at(cg, w);
  LLVMValueRef wbase = cg_add(cg, cg_mul(cg, cg_zext64(cg, lw->warp), cg_i64(cg, stride)),
                              cg_zext64(cg, lw->lane_in_row));
  for (int c = 0; c < cn; c++)
    cg_store(cg, part[c], cg_gep(cg, cg->t_f32, lw->smem, cg_add(cg, wbase, cg_i64(cg, c * lw->ks.lpr))));
  cg_br(cg, done);
  cg_at(cg, done);
  cg_barrier(cg);
  for (int c = 0; c < cn; c++) {
    LLVMValueRef s = NULL;
    for (int k = 0; k < lw->ks.warps; k++) {
      LLVMValueRef idx = cg_add(cg, cg_zext64(cg, lw->lane_in_row), cg_i64(cg, (int64_t)k * stride + c * lw->ks.lpr));
      LLVMValueRef e = cg_load(cg, cg->t_f32, cg_gep(cg, cg->t_f32, lw->smem, idx));
      s = s ? cg_fadd(cg, s, e) : e;
    }
    out[c] = s;
  }
}

/* Evaluate every node of graph g; leaves[kind][slot] give the INPUT and
 * STATE leaves' values.  Results in lw->vals (freed by free_vals). */
static void free_vals(lower *lw) {
  for (uint32_t v = 0; v < lw->n_vals; v++) free(lw->vals[v]);
  free(lw->vals);
  free(lw->absorbed);
  lw->vals = NULL;
  lw->absorbed = NULL;
  lw->n_vals = 0;
}

/* Values the caller already holds for some of a graph's nodes: emit_graph
 * takes them instead of computing the node. */
typedef struct given_values {
  int n;
  uint32_t node[FRNN_MAX_PORTS];
  LLVMValueRef *vals[FRNN_MAX_PORTS]; /* each of its node's class */
} given_values;

static bool is_given(const given_values *gv, uint32_t v, int *which) {
  for (int i = 0; gv && i < gv->n; i++)
    if (gv->node[i] == v) {
      if (which) *which = i;
      return true;
    }
  return false;
}

/* Marks the nodes of g that the n_roots roots depend on, through none of
 * the given nodes (they are marked, their operands are not).  The rest would
 * be dead code, but not always to LLVM: a sum over N's shuffles are
 * convergent calls it keeps (S4D's output, 40 shuffles a step at N = 32, in
 * the backward's recompute).  NULL when out of memory or the graph is not in
 * order (then everything is emitted). */
static uint8_t *nodes_needed(const frnn_step *g, const uint32_t *roots, int n_roots, const given_values *gv) {
  uint8_t *live = calloc(g->n_nodes ? g->n_nodes : 1, 1);
  if (!live) return NULL;
  for (int i = 0; i < n_roots; i++) live[roots[i]] = 1;
  for (uint32_t v = g->n_nodes; v-- > 0;) {
    if (!live[v] || is_given(gv, v, NULL)) continue;
    const node *n = &g->nodes[v];
    for (int i = 0; i < op_get(n->op)->arity; i++) {
      if (n->arg[i] >= v) {
        free(live);
        return NULL;
      }
      live[n->arg[i]] = 1;
    }
  }
  return live;
}

/* What the backward's recompute needs of step s: its next states. */
static uint8_t *nodes_for_states(const frnn_step *s) {
  uint32_t roots[FRNN_MAX_PORTS];
  for (int i = 0; i < s->n_ports[FRNN_PORT_STATE]; i++) roots[i] = s->ports[FRNN_PORT_STATE][i].value;
  return nodes_needed(s, roots, s->n_ports[FRNN_PORT_STATE], NULL);
}

/* Sums of products as chains of FMAs.  LLVM fuses a product into the one
 * sum that uses it, but may not reorder sums: a*b - c*d + u costs it a
 * multiply, an FMA and an add (S4D's state update), where u + a*b - c*d is
 * two FMAs.  The step's sums are ours to order (the float64 reference is
 * the truth; one rounding fewer per term), so a tree of +, - and negation
 * whose inner nodes and products have one user each, of the same class, is
 * emitted at its root: the plain terms added first, then each product
 * fused in.  absorbed[v]: v is emitted by the root above it.  In the
 * backward only (plan.c chains): H100 fw+bw (twenty-fourth session), S4D's
 * backward -6%; its forward at N = 128 ran 2% slower with them (a sum over
 * N became one chain of 16 FMAs), Mamba's 1-4%. */
typedef struct term {
  uint32_t node;
  bool neg, product; /* product: node is a multiplication whose operands are fused */
} term;

static bool is_sum_op(int op) { return op == FRNN_OP_ADD || op == FRNN_OP_SUB || op == FRNN_OP_NEG; }

/* Nodes absorbed into their user's chain, among those emitted (live, not
 * given).  NULL when out of memory (then nothing is). */
/* uses[v]: operands that are node v among the nodes of g emitted (marked by
 * `live`, NULL: all; not given); user[v] (may be NULL): the last of them. */
static void operand_uses(const frnn_step *g, const uint8_t *live, const given_values *gv, uint32_t *uses,
                         uint32_t *user) {
  for (uint32_t v = 0; v < g->n_nodes; v++) {
    if ((live && !live[v]) || is_given(gv, v, NULL)) continue;
    for (int i = 0; i < op_get(g->nodes[v].op)->arity; i++) {
      uses[g->nodes[v].arg[i]]++;
      if (user) user[g->nodes[v].arg[i]] = v;
    }
  }
}

static uint8_t *absorbed_nodes(const frnn_step *g, const uint8_t *live, const given_values *gv) {
  uint32_t n = g->n_nodes ? g->n_nodes : 1;
  uint8_t *absorbed = calloc(n, 1);
  uint32_t *uses = calloc(n, sizeof *uses), *user = calloc(n, sizeof *user);
  if (!absorbed || !uses || !user) {
    free(absorbed), free(uses), free(user);
    return NULL;
  }
  for (int k = 0; k < 3; k++) /* a port's value is never absorbed */
    for (int i = 0; i < g->n_ports[k]; i++)
      if (k != FRNN_PORT_INPUT && g->ports[k][i].value != NODE_NONE) uses[g->ports[k][i].value] += 2;
  operand_uses(g, live, gv, uses, user);
  for (uint32_t v = 0; v < g->n_nodes; v++) {
    const node *nd = &g->nodes[v];
    const node *u = &g->nodes[user[v]];
    if ((live && !live[v]) || is_given(gv, v, NULL)) continue; /* a given value is not a chain's */
    absorbed[v] = uses[v] == 1 && (is_sum_op(nd->op) || nd->op == FRNN_OP_MUL) &&
                  ((is_sum_op(u->op) && u->cls == nd->cls) || u->op == FRNN_OP_SUM);
  }
  free(uses), free(user);
  return absorbed;
}

/* The terms of root v's chain, appended at t[*n] (sign `neg`). */
static void chain_terms(const frnn_step *g, const uint8_t *absorbed, uint32_t v, bool neg, term *t, int *n) {
  const node *nd = &g->nodes[v];
  for (int i = 0; i < op_get(nd->op)->arity; i++) {
    uint32_t a = nd->arg[i];
    bool sign = neg ^ (nd->op == FRNN_OP_NEG || (nd->op == FRNN_OP_SUB && i == 1));
    if (absorbed[a] && is_sum_op(g->nodes[a].op)) chain_terms(g, absorbed, a, sign, t, n);
    else t[(*n)++] = (term){a, sign, absorbed[a] && g->nodes[a].op == FRNN_OP_MUL};
  }
}

/* The terms of a sum over N's absorbed operand v. */
static void sum_terms(const frnn_step *g, const uint8_t *absorbed, uint32_t v, term *t, int *n) {
  if (g->nodes[v].op == FRNN_OP_MUL) t[(*n)++] = (term){v, false, true};
  else chain_terms(g, absorbed, v, false, t, n);
}

/* Element (r, c) of a chain, added to acc (NULL: none). */
static LLVMValueRef emit_chain(lower *lw, const frnn_step *g, const term *t, int n, int r, int c,
                               LLVMValueRef acc) {
  codegen *cg = lw->cg;
  for (int i = 0; i < n; i++) /* the plain terms, in order */
    if (!t[i].product) {
      LLVMValueRef x = at(lw, lw->vals[t[i].node], g->nodes[t[i].node].cls, r, c);
      acc = !acc ? (t[i].neg ? cg_fneg(cg, x) : x) : t[i].neg ? cg_fsub(cg, acc, x) : cg_fadd(cg, acc, x);
    }
  for (int i = 0; i < n; i++) /* then the products, fused */
    if (t[i].product) {
      const node *m = &g->nodes[t[i].node];
      LLVMValueRef a = at(lw, lw->vals[m->arg[0]], g->nodes[m->arg[0]].cls, r, c),
                   b = at(lw, lw->vals[m->arg[1]], g->nodes[m->arg[1]].cls, r, c);
      if (t[i].neg) a = cg_fneg(cg, a);
      acc = acc ? cg_fma(cg, a, b, acc) : cg_fmul(cg, a, b);
    }
  return acc;
}

/* Emits graph g's nodes, or with `live` (may be NULL: all) only those it
 * marks; a given node (gv may be NULL) takes its given values.  Values of
 * nodes left out stay NULL, and so do those of nodes absorbed into a chain
 * (absorbed_nodes). */
static bool emit_graph(lower *lw, const frnn_step *g, LLVMValueRef **in_leaf,
                       LLVMValueRef **state_leaf, const uint8_t *live, const given_values *gv) {
  codegen *cg = lw->cg;
  free_vals(lw);
  lw->vals = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *lw->vals);
  if (!lw->vals) return false;
  lw->n_vals = g->n_nodes;
  uint8_t *absorbed = lw->chains ? absorbed_nodes(g, live, gv) : NULL;
  term *terms = absorbed ? malloc((g->n_nodes + 1) * 2 * sizeof *terms) : NULL;
  if (!terms) free(absorbed), absorbed = NULL; /* out of memory: no chains, nothing left to the caller */
  lw->absorbed = absorbed;
  for (uint32_t v = 0; v < g->n_nodes; v++) {
    const node *n = &g->nodes[v];
    LLVMValueRef *out = new_vals(lw, n->cls);
    if (!out) return false;
    lw->vals[v] = out;
    if ((live && !live[v]) || (absorbed && (absorbed[v] || (lw->to_caller && lw->to_caller[v])))) continue;
    int cnt = count_of(&lw->ks, n->cls), cn = CLASS_HAS_N(n->cls) ? lw->ks.cn : 1, which;
    if (is_given(gv, v, &which)) {
      memcpy(out, gv->vals[which], (size_t)cnt * sizeof *out);
      continue;
    }
    if (terms && is_sum_op(n->op)) {
      int nt = 0;
      chain_terms(g, absorbed, v, false, terms, &nt);
      for (int k = 0; k < cnt; k++) out[k] = emit_chain(lw, g, terms, nt, k / cn, k % cn, NULL);
      continue;
    }
    if (terms && n->op == FRNN_OP_SUM && absorbed[n->arg[0]]) {
      int nt = 0;
      sum_terms(g, absorbed, n->arg[0], terms, &nt);
      for (int r = 0; r < cnt; r++) {
        /* The thread's columns in one chain, as thread_sum's (into which
         * LLVM already fuses a lone product; two chains would cost Mamba's
         * sums an FMUL and an FADD each). */
        LLVMValueRef acc = NULL;
        for (int c = 0; c < lw->ks.cn; c++) {
          LLVMValueRef x = emit_chain(lw, g, terms, nt, r, c, acc);
          acc = cg_select(cg, lw->col_ok[c], x, acc ? acc : cg_f32(cg, 0.0));
        }
        out[r] = cg_sum_lanes_f32(cg, acc, lw->ks.lpr);
      }
      continue;
    }
    switch ((frnn_op)n->op) {
    case FRNN_OP_INPUT:
    case FRNN_OP_STATE: {
      LLVMValueRef *src = (n->op == FRNN_OP_INPUT ? in_leaf : state_leaf)[n->slot];
      memcpy(out, src, (size_t)cnt * sizeof *out);
      break;
    }
    case FRNN_OP_CONST: out[0] = cg_f32(cg, n->value); break;
    case FRNN_OP_SUM: lower_sum_n(lw, lw->vals[n->arg[0]], g->nodes[n->arg[0]].cls, out, n->cls); break;
    case FRNN_OP_SUM_M:
      (lw->kind ? lower_sum_m_partial : lower_sum_m)(lw, lw->vals[n->arg[0]], g->nodes[n->arg[0]].cls,
                                                     out, n->cls);
      break;
    default: {
      int ar = op_get(n->op)->arity;
      double e = n->op == FRNN_OP_POW ? g->nodes[n->arg[1]].value : 0;
      for (int k = 0; k < cnt; k++) {
        int r = k / cn, c = k % cn;
        LLVMValueRef a[3] = {NULL, NULL, NULL};
        for (int i = 0; i < ar; i++) a[i] = at(lw, lw->vals[n->arg[i]], g->nodes[n->arg[i]].cls, r, c);
        out[k] = lower_elementwise(cg, (frnn_op)n->op, a[0], a[1], a[2], e);
      }
    }
    }
  }
  free(terms);
  return true;
}

/* ---------------------------------------------------------------- loops */
typedef struct loop {
  LLVMValueRef var; /* alloca i64 */
  LLVMValueRef to;
  int step;
  bool guarded; /* loop_sub_step tests each sub-step after the first */
  LLVMBasicBlockRef cond, body, after;
} loop;

/* for (var = from; var <cmp> to; var += step) — counting up (step 1) or down
 * (step -1, condition var >= to). */
static loop loop_begin(lower *lw, LLVMValueRef var, LLVMValueRef from, LLVMValueRef to, int step,
                       const char *name) {
  codegen *cg = lw->cg;
  loop l = {.var = var, .to = to, .step = step, .guarded = true};
  cg_store(cg, from, var);
  l.cond = cg_block(cg, name);
  l.body = cg_block(cg, "body");
  l.after = cg_block(cg, "after");
  cg_br(cg, l.cond);
  cg_at(cg, l.cond);
  LLVMValueRef i = cg_load(cg, cg->t_i64, var);
  LLVMValueRef go = step > 0 ? icmp(lw, LLVMIntSLT, i, to) : icmp(lw, LLVMIntSGE, i, to);
  cg_cond_br(cg, go, l.body, l.after);
  cg_at(cg, l.body);
  return l;
}

/* The loop's end; count > 0 asks LLVM to unroll it count times (1: never). */
static void loop_end_unrolled(lower *lw, loop *l, int step, int count) {
  codegen *cg = lw->cg;
  LLVMValueRef i = cg_load(cg, cg->t_i64, l->var);
  cg_store(cg, cg_add(cg, i, cg_i64(cg, step)), l->var);
  cg_br(cg, l->cond);
  if (count > 0) cg_unroll(cg, LLVMGetLastInstruction(LLVMGetInsertBlock(cg->b)), count);
  cg_at(cg, l->after);
}
static void loop_end(lower *lw, loop *l, int step) { loop_end_unrolled(lw, l, step, 0); }

/* A loop unrolled by hand: its body emitted u times per trip, sub-step j
 * at var + j * step; every sub-step after the first leaves the loop when
 * past its end (no remainder loop; not where l->guarded is false: the
 * loop's bound leaves room for whole trips).  The trip ends with
 * loop_end_trip. */
static LLVMValueRef loop_sub_step(lower *lw, const loop *l, int j) {
  codegen *cg = lw->cg;
  LLVMValueRef i = cg_add(cg, cg_load(cg, cg->t_i64, l->var), cg_i64(cg, (int64_t)j * l->step));
  if (j > 0 && l->guarded) {
    LLVMValueRef go = l->step > 0 ? icmp(lw, LLVMIntSLT, i, l->to) : icmp(lw, LLVMIntSGE, i, l->to);
    LLVMBasicBlockRef next = cg_block(cg, "sub_step");
    cg_cond_br(cg, go, next, l->after);
    cg_at(cg, next);
  }
  return i;
}

/* The end of a trip of u sub-steps; LLVM unrolls it no further (u = 1: a
 * plain loop, as loop_end). */
static void loop_end_trip(lower *lw, loop *l, int u) { loop_end_unrolled(lw, l, u * l->step, u > 1 ? 1 : 0); }

static LLVMValueRef new_counter(lower *lw, LLVMBasicBlockRef entry) {
  codegen *cg = lw->cg;
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first) LLVMPositionBuilderBefore(cg->b, first);
  else LLVMPositionBuilderAtEnd(cg->b, entry);
  LLVMValueRef v = LLVMBuildAlloca(cg->b, cg->t_i64, "");
  LLVMPositionBuilderAtEnd(cg->b, here);
  return v;
}

/* ------------------------------------------------------------- prefetch */
/* A time loop's loads ahead of time.  The addresses of a step's inputs (and
 * gradients of outputs) do not depend on the state, so while a step computes
 * later steps' can be fetched (plan.prefetch):
 *   PREFETCH_HINT  prefetch.global.L1 of the lines the next step will load
 *                  (no registers held; the loads then hit L1);
 *   PREFETCH_REGS  the values of the next `depth` steps held in registers, a
 *                  queue: each step takes the front and loads the step
 *                  `depth` ahead into the back (software pipelining; costs
 *                  depth x the step's elements in registers).  Small states
 *                  (HGRN, RWKV-4) wait on nothing else: one warp's step
 *                  costs a load's latency unless many are in flight.  The
 *                  loops run in trips of `depth` steps unrolled by hand
 *                  (pf_push, queued_loop_begin), and the queue holds the
 *                  values as loaded (bf16: 16 bits), widened when taken: a
 *                  value widened when loaded would be waited for there;
 *   PREFETCH_NONE  each step loads its own values.
 * An input broadcast over T (lower_spec.in_bcast) is the same at every step:
 * loaded once, before the loop (pf_begin), in every mode; the backward,
 * whose passes begin a queue every piece, loads it once before all its
 * loops and queues none (scratch_and_queues). */
typedef struct prefetch {
  bool on; /* PREFETCH_REGS */
  bool hint;
  int depth; /* steps ahead (PREFETCH_REGS) */
  int n;
  const targ *t[2 * FRNN_MAX_PORTS];
  int cls[2 * FRNN_MAX_PORTS];
  bool optional[2 * FRNN_MAX_PORTS];
  bool fixed[2 * FRNN_MAX_PORTS]; /* broadcast over T: loaded once */
  LLVMValueRef *queue[2 * FRNN_MAX_PORTS][PLAN_MAX_PF_DEPTH], *dst[2 * FRNN_MAX_PORTS];
} prefetch;

static prefetch pf_new(const plan *p, int depth) {
  prefetch pf = {.on = p->prefetch == PREFETCH_REGS && depth > 0, .hint = p->prefetch == PREFETCH_HINT};
  pf.depth = depth < 1 ? 1 : depth > PLAN_MAX_PF_DEPTH ? PLAN_MAX_PF_DEPTH : depth;
  return pf;
}

static bool pf_add(lower *lw, prefetch *pf, const targ *t, int cls, bool optional, bool fixed, LLVMValueRef *dst,
                   LLVMBasicBlockRef entry) {
  int k = pf->n++;
  pf->t[k] = t;
  pf->cls[k] = cls;
  pf->optional[k] = optional;
  pf->fixed[k] = fixed;
  pf->dst[k] = dst;
  /* a place holds words_of words (at most count_of: new_slots_of's) */
  LLVMTypeRef word = cg_word_type(lw->cg, t->dt, vec_of(lw, t, cls));
  for (int d = 0; d < pf->depth; d++) {
    pf->queue[k][d] = pf->on && !fixed ? new_slots_of(lw, cls, entry, word) : NULL;
    if (pf->on && !fixed && !pf->queue[k][d]) return false;
  }
  return true;
}

static void pf_hint(lower *lw, const targ *t, int cls, bool optional, LLVMValueRef time) {
  codegen *cg = lw->cg;
  LLVMBasicBlockRef go = NULL, done = NULL;
  if (optional) {
    go = cg_block(cg, "hint");
    done = cg_block(cg, "hinted");
    cg_cond_br(cg, t->is_null, done, go);
    cg_at(cg, go);
  }
  /* A thread's first and last element: between them its rows and columns
   * cover the lines the step reads (a row of 128 bf16 is two lines). */
  int rl = CLASS_HAS_M(cls) ? lw->ks.rpt - 1 : 0, cl = CLASS_HAS_N(cls) ? lw->ks.cn - 1 : 0;
  cg_prefetch_elem(cg, t->ptr, elem_index(lw, t, time, cls, 0, 0), t->dt);
  if (rl || cl) cg_prefetch_elem(cg, t->ptr, elem_index(lw, t, time, cls, rl, cl), t->dt);
  if (optional) {
    cg_br(cg, done);
    cg_at(cg, done);
  }
}

/* Entry k's values at `time` (or from their vectors' addresses `addr`,
 * unless NULL) into queue place d, as loaded. */
static void pf_fill(lower *lw, prefetch *pf, int k, int d, LLVMValueRef time, const LLVMValueRef *addr) {
  LLVMValueRef *v = new_vals(lw, pf->cls[k]);
  if (!v) return;
  load_tensor_as(lw, pf->t[k], time, addr, pf->cls[k], pf->optional[k], true, v);
  for (int e = 0; e < words_of(lw, pf->t[k], pf->cls[k]); e++) cg_store(lw->cg, v[e], pf->queue[k][d][e]);
  free(v);
}

/* Word e of entry k's queue place d, as loaded. */
static LLVMValueRef pf_raw(lower *lw, const prefetch *pf, int k, int d, int e) {
  const targ *t = pf->t[k];
  return cg_load(lw->cg, cg_word_type(lw->cg, t->dt, vec_of(lw, t, pf->cls[k])), pf->queue[k][d][e]);
}

/* Step t + s * dir, s steps on, not past `last` (clamped to it: the loads
 * beyond the loop's end stay in range and are never used; NULL: known to
 * be in range, not clamped). */
static LLVMValueRef steps_on(lower *lw, LLVMValueRef t, int s, int dir, LLVMValueRef last) {
  codegen *cg = lw->cg;
  LLVMValueRef n = cg_add(cg, t, cg_i64(cg, (int64_t)s * dir));
  if (!last) return n;
  LLVMValueRef past = dir > 0 ? icmp(lw, LLVMIntSGT, n, last) : icmp(lw, LLVMIntSLT, n, last);
  return cg_select(cg, past, last, n);
}

/* Before a loop from step `first` towards `last` (inclusive) in direction
 * dir, over a sequence of T steps: the fixed inputs, and the queue's first
 * `depth` steps.  Where those are all in the sequence (every chunk but a
 * short last one), not clamped to last (the steps past it are never used)
 * and each place's addresses the last place's a step on: the clamped fill
 * of 16 steps, a 64-bit multiply and clamp a load, was 40% of the
 * instructions of HGRN's backward in chunks of 32 (H200, twenty-seventh
 * session). */
static void pf_begin(lower *lw, prefetch *pf, LLVMValueRef first, int dir, LLVMValueRef last, LLVMValueRef T) {
  codegen *cg = lw->cg;
  for (int k = 0; k < pf->n; k++) {
    if (pf->fixed[k]) load_tensor(lw, pf->t[k], first, pf->cls[k], pf->optional[k], pf->dst[k]);
    else if (pf->hint) pf_hint(lw, pf->t[k], pf->cls[k], pf->optional[k], first);
  }
  if (!pf->on) return;
  LLVMValueRef end = cg_add(cg, first, cg_i64(cg, (int64_t)(pf->depth - 1) * dir));
  LLVMValueRef inside = dir > 0 ? icmp(lw, LLVMIntSLT, end, T) : icmp(lw, LLVMIntSGE, end, cg_i64(cg, 0));
  LLVMBasicBlockRef linear = cg_block(cg, "queue_linear"), clamped = cg_block(cg, "queue_clamped"),
                    filled = cg_block(cg, "queue_filled");
  cg_cond_br(cg, inside, linear, clamped);
  cg_at(cg, linear);
  for (int k = 0; k < pf->n; k++) {
    if (pf->fixed[k]) continue;
    const targ *t = pf->t[k];
    int vec = vec_of(lw, t, pf->cls[k]), n = count_of(&lw->ks, pf->cls[k]) / vec;
    int cn = CLASS_HAS_N(pf->cls[k]) ? lw->ks.cn : 1;
    LLVMValueRef *addr = new_vals(lw, pf->cls[k]); /* a vector's each */
    if (!addr) return; /* new_vals flagged the error */
    LLVMValueRef step = cg_mul(cg, t->sT, cg_i64(cg, (int64_t)dir * tdtype_bytes(t->dt)));
    for (int g = 0; g < n; g++)
      addr[g] = cg_elem_addr(cg, t->ptr, elem_index(lw, t, first, pf->cls[k], g * vec / cn, g * vec % cn), t->dt);
    for (int d = 0; d < pf->depth; d++) {
      for (int e = 0; d && e < n; e++) addr[e] = cg_add(cg, cg_opaque_i64(cg, addr[e]), step);
      pf_fill(lw, pf, k, d, NULL, addr);
    }
    free(addr);
  }
  cg_br(cg, filled);
  cg_at(cg, clamped);
  for (int k = 0; k < pf->n; k++)
    for (int d = 0; !pf->fixed[k] && d < pf->depth; d++) pf_fill(lw, pf, k, d, steps_on(lw, first, d, dir, last), NULL);
  cg_br(cg, filled);
  cg_at(cg, filled);
}

/* At the top of the loop body: step `time`'s values into dst (the queue's
 * front, or loaded now). */
static void pf_take(lower *lw, prefetch *pf, LLVMValueRef time, int dir, LLVMValueRef last) {
  for (int k = 0; k < pf->n; k++) {
    if (pf->fixed[k]) continue;
    if (pf->on) {
      LLVMValueRef words[PLAN_MAX_RPT * PLAN_MAX_CN];
      for (int e = 0; e < words_of(lw, pf->t[k], pf->cls[k]); e++) words[e] = pf_raw(lw, pf, k, 0, e);
      for (int e = 0; e < count_of(&lw->ks, pf->cls[k]); e++)
        pf->dst[k][e] = word_elem(lw, pf->t[k], pf->cls[k], words, e);
      continue;
    }
    load_tensor(lw, pf->t[k], time, pf->cls[k], pf->optional[k], pf->dst[k]);
    if (pf->hint) pf_hint(lw, pf->t[k], pf->cls[k], pf->optional[k], steps_on(lw, time, 1, dir, last));
  }
}

/* At the bottom of the loop body, after the step's last use of its values:
 * the queue moves up and the step `depth` on (clamped to last, unless
 * NULL) is loaded into its back.
 * Loading after the use matters: in a loop unrolled `depth` times
 * (pf_unroll) each place's old value is then dead before its new one is
 * loaded, so the two share a register and no copy waits on the load --
 * the rotation's copies, run each step, would wait for the load issued in
 * the same step and cost a memory latency a step whatever the depth. */
static void pf_push(lower *lw, prefetch *pf, LLVMValueRef time, int dir, LLVMValueRef last) {
  if (!pf->on) return;
  for (int k = 0; k < pf->n; k++) {
    if (pf->fixed[k]) continue;
    for (int d = 1; d < pf->depth; d++)
      for (int e = 0; e < words_of(lw, pf->t[k], pf->cls[k]); e++)
        cg_store(lw->cg, pf_raw(lw, pf, k, d, e), pf->queue[k][d - 1][e]);
    pf_fill(lw, pf, k, pf->depth - 1, steps_on(lw, time, pf->depth, dir, last), NULL);
  }
}

/* Sub-steps a trip of a time loop with this queue takes (loop_sub_step):
 * its depth, so that the rotation becomes renaming, each place's value
 * loaded in the sub-step that uses it next trip.  Unrolled by hand, not by
 * LLVM: its remainder loop would keep the rotation's copies. */
static int pf_unroll(const prefetch *pf) { return pf->on && pf->depth > 1 ? pf->depth : 1; }

/* A time loop with a queue, over steps from `from` towards `to` (dir 1:
 * up to to - 1; -1: down to to), in two parts, each trips of pf_unroll
 * sub-steps emitted by the same code (part = 0, 1):
 *   0  the trips whose sub-steps are all in the loop and whose loads ahead
 *      are all in the tensors (steps 0 to T - 1): no test a sub-step and no
 *      clamp a load (pf_push with last NULL), the addresses linear in the
 *      step, so that LLVM strength-reduces them (HGRN's forward step: about
 *      half the instructions of the tested, clamped one);
 *   1  the rest, from where part 0 stopped: loop_sub_step's tests, loads
 *      clamped to the loop's last step.
 * Without a queue (pf_unroll 1) part 0 is empty: returns false, emit
 * nothing. */
static bool queued_loop_begin(lower *lw, const prefetch *pf, int part, LLVMValueRef var, LLVMValueRef from,
                              LLVMValueRef to, int dir, LLVMValueRef T, const char *name, loop *l) {
  codegen *cg = lw->cg;
  int u = pf_unroll(pf);
  if (part == 0) {
    if (u == 1) return false;
    /* dir 1: t0 + u - 1 < to and t0 + 2u - 1 <= T - 1; dir -1: t0 - (u - 1) >= to and t0 - (2u - 1) >= 0. */
    LLVMValueRef a = cg_add(cg, to, cg_i64(cg, dir > 0 ? -(u - 1) : u - 1));
    LLVMValueRef b = dir > 0 ? LLVMBuildSub(cg->b, T, cg_i64(cg, 2 * u - 1), "") : cg_i64(cg, 2 * u - 1);
    LLVMValueRef bound = cg_select(cg, dir > 0 ? icmp(lw, LLVMIntSLT, a, b) : icmp(lw, LLVMIntSGT, a, b), a, b);
    *l = loop_begin(lw, var, from, bound, dir, name);
    l->guarded = false;
    return true;
  }
  *l = loop_begin(lw, var, u > 1 ? cg_load(cg, cg->t_i64, var) : from, to, dir, name);
  return true;
}

static void pf_free(prefetch *pf) {
  for (int k = 0; k < pf->n; k++)
    for (int d = 0; d < pf->depth; d++) free(pf->queue[k][d]);
  pf->n = 0;
}

/* ------------------------------------------------------- forward kernel */
static bool lower_forward(lower *lw, const frnn_step *s) {
  codegen *cg = lw->cg;
  const plan *p = lw->p;
  lw->ks = p->fwd;
  lw->pred_stores = p->pred_fwd;
  LLVMTypeRef types[4 * FRNN_MAX_PORTS * TENSOR_PARAMS + 16];
  int n = 0;
  for (int i = 0; i < p->n_in + p->n_st + p->n_out + p->n_st; i++) tensor_param_types(cg, types, &n);
  int ws = n;
  types[n++] = cg->t_gptr; /* checkpoints (null: none) */
  types[n++] = cg->t_i64;  /* T */
  types[n++] = cg->t_i64;  /* H */
  types[n++] = cg->t_i64;  /* C */
  types[n++] = cg->t_i64;  /* number of checkpoints */
  if (lw->spec->guard) types[n++] = cg->t_gptr; /* the call's flag */
  LLVMValueRef fn = cg_kernel(cg, "frnn_fwd", types, n, lw->ks.warps * 32, 0);
  LLVMBasicBlockRef entry = LLVMGetInsertBlock(cg->b);
  cg_guard(cg, lw->spec->guard ? cg_param(cg, n - 1) : NULL, lw->spec->guard);
  lw->b = cg_zext64(cg, cg_ctaid_z(cg));
  lw->h = cg_zext64(cg, cg_ctaid_y(cg));
  geometry(lw, cg_ctaid_x(cg), 0);
  LLVMValueRef T = cg_param(cg, ws + 1), H = cg_param(cg, ws + 2), C = cg_param(cg, ws + 3),
               NC = cg_param(cg, ws + 4), ckpt = cg_param(cg, ws);
  lw->bh = cg_add(cg, cg_mul(cg, lw->b, H), lw->h);
  for (int i = 0; i < n; i++)
    if (LLVMGetTypeKind(types[i]) == LLVMPointerTypeKind) cg_param_noalias(cg, fn, i);
  targ in[FRNN_MAX_PORTS], init[FRNN_MAX_PORTS], out[FRNN_MAX_PORTS], fin[FRNN_MAX_PORTS];
  int k = 0;
  for (int i = 0; i < p->n_in; i++, k += TENSOR_PARAMS) in[i] = tensor_arg(lw, k, lw->spec->dt_in[i], CONTIG_IN, i);
  for (int i = 0; i < p->n_st; i++, k += TENSOR_PARAMS) init[i] = tensor_arg(lw, k, lw->spec->dt_state[i], CONTIG_STATE, i);
  for (int i = 0; i < p->n_out; i++, k += TENSOR_PARAMS) out[i] = tensor_arg(lw, k, lw->spec->dt_out[i], CONTIG_OUT, i);
  for (int i = 0; i < p->n_st; i++, k += TENSOR_PARAMS) fin[i] = tensor_arg(lw, k, lw->spec->dt_final[i], CONTIG_FINAL, i);

  /* States in registers, from the initial states. */
  LLVMValueRef *S[FRNN_MAX_PORTS], *Sv[FRNN_MAX_PORTS], *X[FRNN_MAX_PORTS];
  for (int i = 0; i < p->n_st; i++) {
    int cls = s->ports[FRNN_PORT_STATE][i].cls;
    S[i] = new_slots(lw, cls, entry);
    Sv[i] = new_vals(lw, cls);
    if (!S[i] || !Sv[i]) return false;
    load_tensor(lw, &init[i], cg_i64(cg, 0), cls, false, Sv[i]);
    slots_set(lw, S[i], cls, Sv[i], cls);
  }
  for (int i = 0; i < p->n_in; i++)
    if (!(X[i] = new_vals(lw, s->ports[FRNN_PORT_INPUT][i].cls))) return false;
  LLVMValueRef ck_base = cg_mul(cg, cg_mul(cg, lw->bh, NC), cg_i64(cg, p->state_floats));
  LLVMValueRef tvar = new_counter(lw, entry), next_ck = new_counter(lw, entry);
  LLVMValueRef ck_slot = new_counter(lw, entry);
  /* No checkpoints at all: the first is due at step T. */
  cg_store(cg, cg_select(cg, LLVMBuildIsNull(cg->b, ckpt, ""), T, cg_i64(cg, 0)), next_ck);
  cg_store(cg, ck_base, ck_slot);
  prefetch pf = pf_new(p, p->pf_depth_fwd);
  for (int i = 0; i < p->n_in; i++)
    if (!pf_add(lw, &pf, &in[i], s->ports[FRNN_PORT_INPUT][i].cls, false, lw->spec->in_bcast[i] & 2, X[i], entry))
      return false;
  LLVMValueRef t_last = LLVMBuildSub(cg->b, T, cg_i64(cg, 1), "");
  pf_begin(lw, &pf, cg_i64(cg, 0), 1, t_last, T);
  for (int part = 0; part < 2; part++) { /* whole trips, then the rest (queued_loop_begin) */
    loop lt;
    if (!queued_loop_begin(lw, &pf, part, tvar, cg_i64(cg, 0), T, 1, T, "time", &lt)) continue;
    for (int j = 0; j < pf_unroll(&pf); j++) { /* sub-steps of a trip (pf_unroll) */
      LLVMValueRef t = loop_sub_step(lw, &lt, j);
      pf_take(lw, &pf, t, 1, t_last);
      for (int i = 0; i < p->n_st; i++) slots_get(lw, S[i], s->ports[FRNN_PORT_STATE][i].cls, Sv[i]);
      /* Checkpoint: the states before step t, every C steps (a countdown rather
       * than t % C: a 64-bit remainder per step costs dozens of instructions). */
      {
        LLVMValueRef due = icmp(lw, LLVMIntEQ, t, cg_load(cg, cg->t_i64, next_ck));
        LLVMBasicBlockRef yes = cg_block(cg, "ckpt"), no = cg_block(cg, "ckpt_done");
        cg_cond_br(cg, due, yes, no);
        cg_at(cg, yes);
        LLVMValueRef base = cg_load(cg, cg->t_i64, ck_slot);
        cg_store(cg, cg_add(cg, base, cg_i64(cg, p->state_floats)), ck_slot);
        cg_store(cg, cg_add(cg, t, C), next_ck);
        for (int i = 0; i < p->n_st; i++) {
          int cls = s->ports[FRNN_PORT_STATE][i].cls;
          for (int r = 0; r < (CLASS_HAS_M(cls) ? lw->ks.rpt : 1); r++)
            for (int c = 0; c < (CLASS_HAS_N(cls) ? lw->ks.cn : 1); c++) {
              LLVMBasicBlockRef own = cg_block(cg, "own"), next = cg_block(cg, "next");
              cg_cond_br(cg, owner(lw, cls, r, c), own, next);
              cg_at(cg, own);
              cg_store_elem(cg, ckpt, cg_add(cg, base, state_index(lw, i, cls, r, c)), TD_F32,
                            at(lw, Sv[i], cls, r, c));
              cg_br(cg, next);
              cg_at(cg, next);
            }
        }
        cg_br(cg, no);
        cg_at(cg, no);
      }
      if (!emit_graph(lw, s, X, Sv, NULL, NULL)) return false;
      for (int i = 0; i < p->n_out; i++) {
        const port *o = &s->ports[FRNN_PORT_OUTPUT][i];
        store_tensor(lw, &out[i], t, o->cls, lw->vals[o->value], s->nodes[o->value].cls);
      }
      for (int i = 0; i < p->n_st; i++) {
        const port *st = &s->ports[FRNN_PORT_STATE][i];
        slots_set(lw, S[i], st->cls, lw->vals[st->value], s->nodes[st->value].cls);
      }
      pf_push(lw, &pf, t, 1, part ? t_last : NULL);
    }
    loop_end_trip(lw, &lt, pf_unroll(&pf));
  }
  for (int i = 0; i < p->n_st; i++) {
    int cls = s->ports[FRNN_PORT_STATE][i].cls;
    slots_get(lw, S[i], cls, Sv[i]);
    store_tensor(lw, &fin[i], cg_i64(cg, 0), cls, Sv[i], cls);
  }
  cg_ret(cg);
  for (int i = 0; i < p->n_st; i++) free(S[i]), free(Sv[i]);
  for (int i = 0; i < p->n_in; i++) free(X[i]);
  pf_free(&pf);
  free_vals(lw);
  return true;
}

/* ------------------------------------------------------ backward kernel */
/* The exchange of deferred sums over M.  Each gradient of an input that is
 * a partial (split_kinds) gets, per block and step, one slot per warp and
 * column (plan_exchange): a warp writes its partial; every K steps (t a
 * multiple of K) the blocks of the cluster (or the one block) sync, then each
 * column's total for each of the K steps is added in a fixed order, block by
 * block and warp by warp, by one thread of the cluster and stored.  Two sets
 * of K slots alternate: a set is written again only after the next batch's
 * barrier, which every reader of it has passed. */
typedef struct xchg {
  int G, W, K, per_buf;
  const int *off, *stride; /* per input (plan); stride 0: not exchanged */
  LLVMValueRef shared;     /* addrspace(3) float array (dynamic) */
  LLVMValueRef block[8];   /* G > 1: each block's array, generic */
} xchg;

static void xchg_write(lower *lw, const xchg *x, int i, LLVMValueRef buf, LLVMValueRef *v, int vcls) {
  codegen *cg = lw->cg;
  bool row = x->stride[i] > 1;
  LLVMValueRef who = row ? icmp(lw, LLVMIntEQ, lw->group, cg_i32(cg, 0))
                         : i1_and(lw, icmp(lw, LLVMIntEQ, lw->group, cg_i32(cg, 0)), lw->lane0);
  LLVMBasicBlockRef yes = cg_block(cg, "xchg_write"), done = cg_block(cg, "xchg_written");
  cg_cond_br(cg, who, yes, done);
  cg_at(cg, yes);
  LLVMValueRef base = cg_add(cg, cg_add(cg, buf, cg_i64(cg, x->off[i])),
                             cg_mul(cg, cg_zext64(cg, lw->warp), cg_i64(cg, x->stride[i])));
  for (int c = 0; c < (row ? lw->ks.cn : 1); c++) {
    LLVMValueRef idx = row ? cg_add(cg, base, cg_add(cg, cg_zext64(cg, lw->lane_in_row), cg_i64(cg, c * lw->ks.lpr)))
                           : base;
    cg_store(cg, at(lw, v, vcls, 0, c), cg_gep(cg, cg->t_f32, x->shared, idx));
  }
  cg_br(cg, done);
  cg_at(cg, done);
}

static void xchg_sync(lower *lw, const xchg *x) {
  if (x->G > 1) cg_cluster_barrier(lw->cg);
  else cg_barrier(lw->cg);
}

/* Totals of input i's partials stored to g: `steps` steps from `time` on,
 * step s in the slots at float buf + s * per_buf (only steps before T);
 * item j (column and step) by block j % G, thread j / G, further rounds. */
static void xchg_store(lower *lw, const xchg *x, int i, LLVMValueRef buf, const targ *g,
                       LLVMValueRef time, int steps, LLVMValueRef T, LLVMValueRef rank) {
  codegen *cg = lw->cg;
  int64_t cols = x->stride[i] > 1 ? lw->p->N : 1, items = cols * steps, threads = (int64_t)x->W * 32;
  LLVMBasicBlockRef go = cg_block(cg, "xchg_store"), done = cg_block(cg, "xchg_stored");
  cg_cond_br(cg, g->is_null, done, go);
  cg_at(cg, go);
  LLVMValueRef first = cg_add(cg, cg_zext64(cg, rank), cg_mul(cg, cg_zext64(cg, lw->tid), cg_i64(cg, x->G)));
  for (int64_t round = 0; round * threads * x->G < items; round++) {
    LLVMValueRef item = cg_add(cg, first, cg_i64(cg, round * threads * x->G));
    LLVMValueRef st = LLVMBuildUDiv(cg->b, item, cg_i64(cg, cols), "");
    LLVMValueRef j = LLVMBuildURem(cg->b, item, cg_i64(cg, cols), "");
    LLVMValueRef tt = cg_add(cg, time, st);
    LLVMBasicBlockRef mine = cg_block(cg, "xchg_item"), next = cg_block(cg, "xchg_next");
    cg_cond_br(cg, i1_and(lw, cg_ult(cg, item, cg_i64(cg, items)), icmp(lw, LLVMIntSLT, tt, T)), mine, next);
    cg_at(cg, mine);
    LLVMValueRef slot = cg_add(cg, cg_add(cg, cg_add(cg, buf, cg_mul(cg, st, cg_i64(cg, x->per_buf))),
                                          cg_i64(cg, x->off[i])),
                               x->stride[i] > 1 ? j : cg_i64(cg, 0));
    LLVMValueRef sum = NULL;
    for (int b = 0; b < x->G; b++)
      for (int w = 0; w < x->W; w++) {
        LLVMValueRef idx = cg_add(cg, slot, cg_i64(cg, (int64_t)w * x->stride[i]));
        LLVMValueRef ptr = cg_gep(cg, cg->t_f32, x->G > 1 ? x->block[b] : x->shared, idx);
        LLVMValueRef e = cg_load(cg, cg->t_f32, ptr);
        sum = sum ? cg_fadd(cg, sum, e) : e;
      }
    LLVMValueRef at_idx = cg_add(cg, g->off0, cg_mul(cg, tt, g->sT));
    if (x->stride[i] > 1) at_idx = cg_add(cg, at_idx, cg_mul(cg, j, g->contig ? cg_i64(cg, 1) : g->sN));
    cg_store_elem(cg, g->ptr, at_idx, g->dt, sum);
    cg_br(cg, next);
    cg_at(cg, next);
  }
  cg_br(cg, done);
  cg_at(cg, done);
}


/* What the backward's passes share: lower_backward builds it, the functions
 * below emit one step (or loop) of a pass.  The recompute steps the states
 * in slots S (inputs in X); the walk loads each step's states into Sv from
 * scratch and carries the next ones in S, its inputs in X and the output
 * gradients in GY, the state gradients in slots dS. */
typedef struct bwd_kernel {
  const frnn_step *s, *adj;
  LLVMValueRef scratch, sc_block, tid64, T, rank, tvar;
  int64_t per_state; /* floats of one scratch slot: one state of every thread of the block */
  int n_threads;
  LLVMValueRef *S[FRNN_MAX_PORTS], *Sv[FRNN_MAX_PORTS], *dS[FRNN_MAX_PORTS], *dSv[FRNN_MAX_PORTS],
      *X[FRNN_MAX_PORTS], *GY[FRNN_MAX_PORTS], *acc[FRNN_MAX_PORTS];
  const targ *in, *gout, *gin;
  uint8_t *state_live, *walk_live, *kind, *to_acc;
  term *acc_terms;
  given_values carry;
  int carry_port[FRNN_MAX_PORTS];
  xchg x;
  bool per_step_xchg;
  prefetch pfx, pfr; /* the recompute's queue (inputs), the walk's (inputs, output gradients) */
  prefetch pff;      /* the first pass's (two levels: chunk_loop), deeper (plan.pf_depth_first) */
} bwd_kernel;

/* Scratch, per block, each state laid out [float][thread] so that a warp's
 * accesses coalesce: float q of slot `slot`. */
static LLVMValueRef scratch_index(lower *lw, const bwd_kernel *bk, LLVMValueRef slot, int q) {
  codegen *cg = lw->cg;
  return cg_add(cg, cg_add(cg, bk->sc_block, cg_mul(cg, slot, cg_i64(cg, bk->per_state))),
                cg_add(cg, cg_i64(cg, (int64_t)q * bk->n_threads), bk->tid64));
}

/* A checkpoint's states (from float `base` of ckpt) into S. */
static void load_checkpoint(lower *lw, bwd_kernel *bk, LLVMValueRef ckpt, LLVMValueRef base) {
  codegen *cg = lw->cg;
  for (int i = 0; i < lw->p->n_st; i++) {
    int cls = bk->s->ports[FRNN_PORT_STATE][i].cls, cn = CLASS_HAS_N(cls) ? lw->ks.cn : 1;
    for (int q = 0; q < count_of(&lw->ks, cls); q++)
      bk->Sv[i][q] = cg_load_elem(cg, ckpt, cg_add(cg, base, state_index(lw, i, cls, q / cn, q % cn)), TD_F32);
    slots_set(lw, bk->S[i], cls, bk->Sv[i], cls);
  }
}

/* The states in S into Sv and scratch slot `slot`. */
static void store_states(lower *lw, bwd_kernel *bk, LLVMValueRef slot) {
  int q = 0;
  for (int i = 0; i < lw->p->n_st; i++) {
    int cls = bk->s->ports[FRNN_PORT_STATE][i].cls;
    slots_get(lw, bk->S[i], cls, bk->Sv[i]);
    for (int e = 0; e < count_of(&lw->ks, cls); e++, q++)
      cg_store_elem(lw->cg, bk->scratch, scratch_index(lw, bk, slot, q), TD_F32, bk->Sv[i][e]);
  }
}

/* Steps S with the forward graph (inputs in X); with `save`, first stores
 * them in scratch slot `slot`. */
static bool recompute_step(lower *lw, bwd_kernel *bk, bool save, LLVMValueRef slot) {
  const frnn_step *s = bk->s;
  if (save) store_states(lw, bk, slot);
  for (int i = 0; !save && i < lw->p->n_st; i++) slots_get(lw, bk->S[i], s->ports[FRNN_PORT_STATE][i].cls, bk->Sv[i]);
  if (!emit_graph(lw, s, bk->X, bk->Sv, bk->state_live, NULL)) return false;
  for (int i = 0; i < lw->p->n_st; i++) {
    const port *st = &s->ports[FRNN_PORT_STATE][i];
    slots_set(lw, bk->S[i], st->cls, lw->vals[st->value], s->nodes[st->value].cls);
  }
  return true;
}

/* The states of scratch slot `slot` into Sv. */
static void load_states(lower *lw, bwd_kernel *bk, LLVMValueRef slot) {
  int q = 0;
  for (int i = 0; i < lw->p->n_st; i++) {
    int cls = bk->s->ports[FRNN_PORT_STATE][i].cls;
    for (int e = 0; e < count_of(&lw->ks, cls); e++, q++)
      bk->Sv[i][e] = cg_load_elem(lw->cg, bk->scratch, scratch_index(lw, bk, slot, q), TD_F32);
  }
}

/* Recomputes steps from .. to - 1 into scratch slots 0, 1, ... */
static bool recompute_pass(lower *lw, bwd_kernel *bk, LLVMValueRef from, LLVMValueRef to) {
  codegen *cg = lw->cg;
  LLVMValueRef last = LLVMBuildSub(cg->b, to, cg_i64(cg, 1), "");
  pf_begin(lw, &bk->pfx, from, 1, last, bk->T);
  for (int part = 0; part < 2; part++) { /* whole trips, then the rest (queued_loop_begin) */
    loop lf;
    if (!queued_loop_begin(lw, &bk->pfx, part, bk->tvar, from, to, 1, bk->T, "recompute", &lf)) continue;
    for (int sub = 0; sub < pf_unroll(&bk->pfx); sub++) {
      LLVMValueRef t = loop_sub_step(lw, &lf, sub);
      pf_take(lw, &bk->pfx, t, 1, last);
      if (!recompute_step(lw, bk, true, LLVMBuildSub(cg->b, t, from, ""))) return false;
      pf_push(lw, &bk->pfx, t, 1, part ? last : NULL);
    }
    loop_end_trip(lw, &lf, pf_unroll(&bk->pfx));
  }
  return true;
}

/* The walk's step t (its piece from `lo`): its inputs and output gradients
 * from the queue, its states from scratch, the adjoint, the gradients, the
 * queue's next loads (clamped to `last`, unless NULL). */
static bool walk_step(lower *lw, bwd_kernel *bk, LLVMValueRef t, LLVMValueRef lo, LLVMValueRef last) {
  codegen *cg = lw->cg;
  const plan *p = lw->p;
  const frnn_step *s = bk->s, *adj = bk->adj;
  const xchg *x = &bk->x;
  pf_take(lw, &bk->pfr, t, -1, lo);
  /* The states of the step the inputs' queue loads (the next with hints):
   * lane q of each warp fetches float q's line into L1. */
  if ((bk->pfr.hint || bk->pfr.on) && !plan_scratch_shared(p)) {
    LLVMValueRef t_next = steps_on(lw, t, bk->pfr.on ? bk->pfr.depth : 1, -1, lo);
    LLVMValueRef lane = LLVMBuildAnd(cg->b, lw->tid, cg_i32(cg, 31), "");
    LLVMValueRef q = cg_select(cg, cg_ult(cg, lane, cg_i32(cg, p->bwd_regs)), lane, cg_i32(cg, 0));
    LLVMValueRef idx = cg_add(cg, cg_add(cg, bk->sc_block, cg_mul(cg, LLVMBuildSub(cg->b, t_next, lo, ""), cg_i64(cg, bk->per_state))),
                              cg_add(cg, cg_mul(cg, cg_zext64(cg, q), cg_i64(cg, bk->n_threads)),
                                     cg_mul(cg, cg_zext64(cg, lw->warp), cg_i64(cg, 32))));
    cg_prefetch_elem(cg, bk->scratch, idx, TD_F32);
  }
  load_states(lw, bk, LLVMBuildSub(cg->b, t, lo, ""));
  for (int c = 0; c < bk->carry.n; c++) {
    int i = bk->carry_port[c], cls = s->ports[FRNN_PORT_STATE][i].cls;
    slots_get(lw, bk->S[i], cls, bk->carry.vals[c]);
    slots_set(lw, bk->S[i], cls, bk->Sv[i], cls); /* the next step's (t - 1's) */
  }
  for (int i = 0; i < p->n_st; i++) slots_get(lw, bk->dS[i], s->ports[FRNN_PORT_STATE][i].cls, bk->dSv[i]);
  /* The adjoint's inputs are x..., S..., grad_y..., grad_next_S...: all its
   * leaves are INPUT leaves, numbered in that order. */
  LLVMValueRef *leaves[4 * FRNN_MAX_PORTS];
  int nl = 0;
  for (int i = 0; i < p->n_in; i++) leaves[nl++] = bk->X[i];
  for (int i = 0; i < p->n_st; i++) leaves[nl++] = bk->Sv[i];
  for (int i = 0; i < p->n_out; i++) leaves[nl++] = bk->GY[i];
  for (int i = 0; i < p->n_st; i++) leaves[nl++] = bk->dSv[i];
  lw->kind = bk->kind;
  lw->to_caller = bk->acc_terms ? bk->to_acc : NULL;
  bool emitted = emit_graph(lw, adj, leaves, NULL, bk->walk_live, &bk->carry);
  lw->kind = NULL;
  lw->to_caller = NULL;
  if (!emitted) return false;
  /* Step t's slots: set (t / K) % 2, place t % K. */
  LLVMValueRef in_set = LLVMBuildAnd(cg->b, t, cg_i64(cg, x->K - 1), "");
  LLVMValueRef set0 = cg_mul(cg, LLVMBuildAnd(cg->b, LLVMBuildUDiv(cg->b, t, cg_i64(cg, x->K), ""), cg_i64(cg, 1), ""),
                             cg_i64(cg, (int64_t)x->K * x->per_buf));
  LLVMValueRef buf = cg_add(cg, set0, cg_mul(cg, in_set, cg_i64(cg, x->per_buf)));
  /* The sums over t first: an optional gradient's store is a branch,
   * and a product can fuse into its sum (FMA) only in the same block. */
  for (int i = 0; i < p->n_in; i++) {
    const port *o = &adj->ports[FRNN_PORT_OUTPUT][i];
    int cls = o->cls, vcls = adj->nodes[o->value].cls, cn = CLASS_HAS_N(cls) ? lw->ks.cn : 1;
    int nt = 0;
    if (bk->acc[i] && bk->acc_terms && bk->to_acc[o->value] && lw->absorbed)
      chain_terms(adj, lw->absorbed, o->value, false, bk->acc_terms, &nt);
    for (int e = 0; bk->acc[i] && e < count_of(&lw->ks, cls); e++) {
      LLVMValueRef was = cg_load(cg, cg->t_f32, bk->acc[i][e]);
      LLVMValueRef sum = nt ? emit_chain(lw, adj, bk->acc_terms, nt, e / cn, e % cn, was)
                            : cg_fadd(cg, was, at(lw, lw->vals[o->value], vcls, e / cn, e % cn));
      cg_store(cg, sum, bk->acc[i][e]);
    }
  }
  for (int i = 0; i < p->n_in; i++) {
    const port *o = &adj->ports[FRNN_PORT_OUTPUT][i];
    int cls = o->cls, vcls = adj->nodes[o->value].cls;
    if (bk->acc[i]) continue;
    if (x->stride[i]) xchg_write(lw, x, i, buf, lw->vals[o->value], vcls);
    else store_tensor(lw, &bk->gin[i], t, cls, lw->vals[o->value], vcls);
  }
  for (int i = 0; i < p->n_st; i++) {
    const port *o = &adj->ports[FRNN_PORT_OUTPUT][p->n_in + i];
    slots_set(lw, bk->dS[i], o->cls, lw->vals[o->value], adj->nodes[o->value].cls);
  }
  if (bk->per_step_xchg) { /* a batch is complete at a multiple of K */
    LLVMBasicBlockRef flush = cg_block(cg, "xchg_flush"), on = cg_block(cg, "xchg_later");
    cg_cond_br(cg, icmp(lw, LLVMIntEQ, in_set, cg_i64(cg, 0)), flush, on);
    cg_at(cg, flush);
    xchg_sync(lw, x);
    for (int i = 0; i < p->n_in; i++)
      if (x->stride[i] && !bk->acc[i]) xchg_store(lw, x, i, set0, &bk->gin[i], t, x->K, bk->T, bk->rank);
    cg_br(cg, on);
    cg_at(cg, on);
  }
  pf_push(lw, &bk->pfr, t, -1, last);
  return true;
}

/* Walks steps hi - 1 down to lo, their states in scratch slots 0, 1, ... */
static bool walk_pass(lower *lw, bwd_kernel *bk, LLVMValueRef lo, LLVMValueRef hi) {
  codegen *cg = lw->cg;
  LLVMValueRef last = LLVMBuildSub(cg->b, hi, cg_i64(cg, 1), "");
  pf_begin(lw, &bk->pfr, last, -1, lo, bk->T);
  for (int part = 0; part < 2; part++) { /* whole trips, then the rest (queued_loop_begin) */
    loop lb;
    if (!queued_loop_begin(lw, &bk->pfr, part, bk->tvar, last, lo, -1, bk->T, "reverse", &lb)) continue;
    for (int sub = 0; sub < pf_unroll(&bk->pfr); sub++) {
      LLVMValueRef t = loop_sub_step(lw, &lb, sub);
      if (!walk_step(lw, bk, t, lo, part ? lo : NULL)) return false;
    }
    loop_end_trip(lw, &lb, pf_unroll(&bk->pfr));
  }
  return true;
}

/* The scratch slots' place (bk->sc_block; in shared memory, bk->scratch
 * too) and the passes' queues of loads. */
static bool scratch_and_queues(lower *lw, bwd_kernel *bk, LLVMValueRef C, LLVMValueRef C2, bool two,
                               LLVMBasicBlockRef entry) {
  codegen *cg = lw->cg;
  const plan *p = lw->p;
  const frnn_step *s = bk->s;
  /* Scratch: one level (the default), the chunk's C recomputed states.
   * Two: C2 recomputed states, then the chunk's second-level checkpoints,
   * ceil(C/C2) - 1 of them (the last piece's start state is never saved:
   * the first pass ends there).  plan_workspace sizes it. */
  int64_t per_state = bk->per_state = (int64_t)p->bwd_regs * bk->n_threads;
  LLVMValueRef states = C;
  if (two)
    states = cg_add(cg, C2, LLVMBuildSub(cg->b, LLVMBuildUDiv(cg->b, cg_add(cg, C, LLVMBuildSub(cg->b, C2, cg_i64(cg, 1), "")), C2, ""),
                                         cg_i64(cg, 1), ""));
  LLVMValueRef sc_block = cg_mul(cg, cg_add(cg, cg_mul(cg, lw->bh, cg_i64(cg, lw->ks.row_blocks)), cg_zext64(cg, bk->rank)),
                                 cg_mul(cg, states, cg_i64(cg, per_state)));
  /* Or in shared memory, after the exchange's floats: the same layout, one
   * block's worth (plan_workspace sized the kernel's dynamic shared memory);
   * two roles: two sets of C + 1 (role_periods). */
  LLVMValueRef scratch = bk->scratch;
  if (plan_scratch_shared(p)) {
    scratch = cg_gep(cg, cg->t_f32, cg_dynamic_shared(cg, "frnn_bwd_shared"), cg_i64(cg, p->xchg_shared_floats));
    sc_block = cg_i64(cg, 0);
  }
  bk->scratch = scratch;
  bk->sc_block = sc_block;
  bk->tid64 = cg_zext64(cg, lw->tid);
  bk->pfx = pf_new(p, p->pf_depth_bwd);
  bk->pfr = bk->pfx;
  bk->pff = pf_new(p, two ? p->pf_depth_first : 0);
  /* The walk queues only the inputs it takes: an operand of a node it emits
   * (walk_live, or any) or a gradient.  HGRN's x is added to the state, its
   * gradient the state's: the walk loaded it a step for nothing. */
  const frnn_step *adj = bk->adj;
  uint32_t *uses = calloc(adj->n_nodes ? adj->n_nodes : 1, sizeof *uses);
  if (!uses) return false;
  operand_uses(adj, bk->walk_live, NULL, uses, NULL);
  for (int k = 0; k < adj->n_ports[FRNN_PORT_OUTPUT]; k++)
    if (adj->ports[FRNN_PORT_OUTPUT][k].value != NODE_NONE) uses[adj->ports[FRNN_PORT_OUTPUT][k].value]++;
  for (int i = 0; i < p->n_in; i++) {
    if (lw->spec->in_bcast[i] & 2) continue; /* time-invariant: loaded once by lower_backward */
    bool walk_takes = uses[adj->ports[FRNN_PORT_INPUT][i].leaf] > 0;
    if (!pf_add(lw, &bk->pfx, &bk->in[i], s->ports[FRNN_PORT_INPUT][i].cls, false, false, bk->X[i], entry) ||
        (two && !pf_add(lw, &bk->pff, &bk->in[i], s->ports[FRNN_PORT_INPUT][i].cls, false, false, bk->X[i], entry)) ||
        (walk_takes &&
         !pf_add(lw, &bk->pfr, &bk->in[i], s->ports[FRNN_PORT_INPUT][i].cls, false, false, bk->X[i], entry))) {
      free(uses);
      return false;
    }
  }
  free(uses);
  for (int i = 0; i < p->n_out; i++)
    if (!pf_add(lw, &bk->pfr, &bk->gout[i], s->ports[FRNN_PORT_OUTPUT][i].cls, true, false, bk->GY[i], entry)) return false;
  return true;
}

/* Chunk k's steps t0 .. t1 - 1. */
static void chunk_span(lower *lw, LLVMValueRef k, LLVMValueRef C, LLVMValueRef T, LLVMValueRef *t0, LLVMValueRef *t1) {
  codegen *cg = lw->cg;
  *t0 = cg_mul(cg, k, C);
  LLVMValueRef end = cg_add(cg, *t0, C);
  *t1 = cg_select(cg, icmp(lw, LLVMIntSLT, T, end), T, end);
}

/* One role: each chunk from the last, its checkpoint, its states
 * recomputed into scratch (two levels: pieces of C2 steps), then walked. */
static bool chunk_loop(lower *lw, bwd_kernel *bk, LLVMValueRef ckpt, LLVMValueRef ck_base, LLVMValueRef C,
                       LLVMValueRef C2, LLVMValueRef NC, LLVMValueRef kvar, LLVMBasicBlockRef entry) {
  codegen *cg = lw->cg;
  const plan *p = lw->p;
  const frnn_step *s = bk->s;
  LLVMValueRef T = bk->T, tvar = bk->tvar;
  bool two = p->bwd_c2 > 0 || p->bwd_shared_slots > 0;
  loop lk = loop_begin(lw, kvar, LLVMBuildSub(cg->b, NC, cg_i64(cg, 1), ""), cg_i64(cg, 0), -1, "chunk");
  LLVMValueRef kk = cg_load(cg, cg->t_i64, kvar), t0, t1;
  chunk_span(lw, kk, C, T, &t0, &t1);
  /* This chunk's checkpoint. */
  load_checkpoint(lw, bk, ckpt, cg_add(cg, ck_base, cg_mul(cg, kk, cg_i64(cg, p->state_floats))));
  if (!scratch_and_queues(lw, bk, C, C2, two, entry)) return false;
  /* Two levels: the chunk's pieces u0 = t0 + j*C2, j = 0..last.  First
   * pass: from the checkpoint to the last piece's start, saving the state
   * at the start of every other piece (slot C2 + j); the last one's stays
   * in S.  One level: one piece, the chunk. */
  LLVMValueRef u0 = t0, u1 = t1;
  loop ls = {0};
  if (two) {
    LLVMValueRef last = LLVMBuildUDiv(cg->b, LLVMBuildSub(cg->b, LLVMBuildSub(cg->b, t1, t0, ""), cg_i64(cg, 1), ""), C2, "");
    LLVMValueRef s_last = cg_add(cg, t0, cg_mul(cg, last, C2));
    LLVMValueRef jvar = new_counter(lw, entry), next2 = new_counter(lw, entry);
    cg_store(cg, t0, next2);
    cg_store(cg, cg_i64(cg, 0), jvar);
    LLVMValueRef la_last = LLVMBuildSub(cg->b, s_last, cg_i64(cg, 1), "");
    pf_begin(lw, &bk->pff, t0, 1, la_last, T);
    for (int part = 0; part < 2; part++) { /* whole trips, then the rest (queued_loop_begin) */
      loop la;
      if (!queued_loop_begin(lw, &bk->pff, part, tvar, t0, s_last, 1, T, "level2", &la)) continue;
      for (int sub = 0; sub < pf_unroll(&bk->pff); sub++) {
        LLVMValueRef t = loop_sub_step(lw, &la, sub);
        pf_take(lw, &bk->pff, t, 1, la_last);
        LLVMValueRef due = icmp(lw, LLVMIntEQ, t, cg_load(cg, cg->t_i64, next2));
        LLVMBasicBlockRef yes = cg_block(cg, "l2_save"), no = cg_block(cg, "l2_saved");
        cg_cond_br(cg, due, yes, no);
        cg_at(cg, yes);
        {
          LLVMValueRef j = cg_load(cg, cg->t_i64, jvar);
          store_states(lw, bk, cg_add(cg, C2, j));
          cg_store(cg, cg_add(cg, j, cg_i64(cg, 1)), jvar);
          cg_store(cg, cg_add(cg, t, C2), next2);
        }
        cg_br(cg, no);
        cg_at(cg, no);
        if (!recompute_step(lw, bk, false, cg_i64(cg, 0))) return false;
        pf_push(lw, &bk->pff, t, 1, part ? la_last : NULL);
      }
      loop_end_trip(lw, &la, pf_unroll(&bk->pff));
    }
    ls = loop_begin(lw, jvar, last, cg_i64(cg, 0), -1, "subchunk");
    LLVMValueRef j = cg_load(cg, cg->t_i64, jvar);
    u0 = cg_add(cg, t0, cg_mul(cg, j, C2));
    u1 = cg_add(cg, u0, C2);
    u1 = cg_select(cg, icmp(lw, LLVMIntSLT, t1, u1), t1, u1);
    {
      LLVMBasicBlockRef reload = cg_block(cg, "l2_load"), have = cg_block(cg, "l2_have");
      cg_cond_br(cg, icmp(lw, LLVMIntEQ, j, last), have, reload);
      cg_at(cg, reload);
      load_states(lw, bk, cg_add(cg, C2, j));
      for (int i = 0; i < p->n_st; i++)
        slots_set(lw, bk->S[i], s->ports[FRNN_PORT_STATE][i].cls, bk->Sv[i], s->ports[FRNN_PORT_STATE][i].cls);
      cg_br(cg, have);
      cg_at(cg, have);
    }
  }
  /* Recompute the piece's states into scratch slots 0, 1, ..., then walk
   * it backwards. */
  if (!recompute_pass(lw, bk, u0, u1) || !walk_pass(lw, bk, u0, u1)) return false;
  if (two) loop_end(lw, &ls, -1);
  loop_end(lw, &lk, -1);
  return true;
}

/* Two roles (plan bwd_roles): in period k = NC .. 0 the block's second half
 * recomputes chunk k - 1 into set (k - 1) % 2 of the scratch slots (its
 * states, then its end state for the walk's carry) while the first half
 * walks chunk k from set k % 2.  A barrier ends each period: a set is
 * written only after its walk is done, and read only after it is written. */
static bool role_periods(lower *lw, bwd_kernel *bk, LLVMValueRef ckpt, LLVMValueRef ck_base, LLVMValueRef C,
                         LLVMValueRef NC, LLVMValueRef kvar, LLVMValueRef walker) {
  codegen *cg = lw->cg;
  const plan *p = lw->p;
  LLVMValueRef sets = bk->sc_block, one = cg_i64(cg, 1);
  LLVMValueRef set_floats = cg_mul(cg, cg_add(cg, C, one), cg_i64(cg, bk->per_state));
  loop lk = loop_begin(lw, kvar, NC, cg_i64(cg, 0), -1, "period");
  LLVMValueRef period = cg_load(cg, cg->t_i64, kvar);
  LLVMBasicBlockRef walk = cg_block(cg, "walker"), walk_go = cg_block(cg, "walk"), rec = cg_block(cg, "recomputer"),
                    rec_go = cg_block(cg, "recompute"), end = cg_block(cg, "period_end");
  cg_cond_br(cg, walker, walk, rec);
  for (int role = 0; role < 2; role++) {
    cg_at(cg, role ? rec : walk);
    LLVMValueRef k = role ? LLVMBuildSub(cg->b, period, one, "") : period, t0, t1;
    cg_cond_br(cg, role ? icmp(lw, LLVMIntSGE, k, cg_i64(cg, 0)) : icmp(lw, LLVMIntSLT, k, NC), role ? rec_go : walk_go,
               end);
    cg_at(cg, role ? rec_go : walk_go);
    chunk_span(lw, k, C, bk->T, &t0, &t1);
    bk->sc_block = cg_add(cg, sets, cg_mul(cg, LLVMBuildAnd(cg->b, k, one, ""), set_floats));
    LLVMValueRef end_slot = LLVMBuildSub(cg->b, t1, t0, "");
    if (role) {
      load_checkpoint(lw, bk, ckpt, cg_add(cg, ck_base, cg_mul(cg, k, cg_i64(cg, p->state_floats))));
      if (!recompute_pass(lw, bk, t0, t1)) return false;
      if (bk->carry.n) store_states(lw, bk, end_slot);
    } else {
      if (bk->carry.n) { /* the chunk's end state: S as the recompute left it */
        load_states(lw, bk, end_slot);
        for (int i = 0; i < p->n_st; i++) {
          int cls = bk->s->ports[FRNN_PORT_STATE][i].cls;
          slots_set(lw, bk->S[i], cls, bk->Sv[i], cls);
        }
      }
      if (!walk_pass(lw, bk, t0, t1)) return false;
    }
    cg_br(cg, end);
  }
  cg_at(cg, end);
  cg_barrier(cg);
  loop_end(lw, &lk, -1);
  bk->sc_block = sets;
  return true;
}

static bool lower_backward(lower *lw, const frnn_step *s, const frnn_step *adj) {
  codegen *cg = lw->cg;
  const plan *p = lw->p;
  lw->ks = p->bwd;
  lw->pred_stores = p->pred_bwd;
  LLVMTypeRef types[5 * FRNN_MAX_PORTS * TENSOR_PARAMS + 16];
  int n = 0;
  for (int i = 0; i < p->n_in + p->n_out + p->n_st + p->n_in + p->n_st; i++) tensor_param_types(cg, types, &n);
  int ws = n;
  types[n++] = cg->t_gptr; /* checkpoints */
  types[n++] = cg->t_gptr; /* scratch */
  types[n++] = cg->t_i64;  /* T */
  types[n++] = cg->t_i64;  /* H */
  types[n++] = cg->t_i64;  /* C */
  types[n++] = cg->t_i64;  /* number of checkpoints */
  types[n++] = cg->t_i64;  /* C2: steps between second-level checkpoints */
  if (lw->spec->guard) types[n++] = cg->t_gptr; /* the call's flag */
  LLVMValueRef fn = cg_kernel(cg, "frnn_bwd", types, n, plan_bwd_threads(p), p->bwd_min_blocks);
  LLVMBasicBlockRef entry = LLVMGetInsertBlock(cg->b);
  cg_guard(cg, lw->spec->guard ? cg_param(cg, n - 1) : NULL, lw->spec->guard);
  for (int i = 0; i < n; i++)
    if (LLVMGetTypeKind(types[i]) == LLVMPointerTypeKind) cg_param_noalias(cg, fn, i);
  lw->b = cg_zext64(cg, cg_ctaid_z(cg));
  lw->h = cg_zext64(cg, cg_ctaid_y(cg));
  bwd_kernel *bk = calloc(1, sizeof *bk);
  if (!bk) return false;
  bk->s = s;
  bk->adj = adj;
  /* A split head: blocks x = 0..G-1 of the grid are one cluster. */
  int G = lw->ks.row_blocks;
  LLVMValueRef rank = G > 1 ? cg_ctaid_x(cg) : cg_i32(cg, 0);
  bk->rank = rank;
  geometry(lw, rank, p->bwd_roles ? lw->ks.warps * 32 : 0);
  static const int no_stride[FRNN_MAX_PORTS];
  xchg *x = &bk->x;
  *x = (xchg){.G = G, .W = lw->ks.warps, .K = 1, .off = p->xchg_off, .stride = no_stride};
  if (p->bwd_deferred) {
    bk->kind = malloc(adj->n_nodes ? adj->n_nodes : 1);
    if (!bk->kind) return false;
    if (!split_kinds(adj, p->n_in, bk->kind)) cg_error(cg, "backward planned deferred, but its sums over M are not");
    x->stride = p->xchg_stride;
    x->per_buf = p->xchg_floats;
    x->K = p->xchg_steps;
    if (x->per_buf) {
      x->shared = cg_dynamic_shared(cg, "frnn_bwd_shared");
      for (int b = 0; b < G && G > 1; b++) x->block[b] = cg_cluster_shared(cg, x->shared, cg_i32(cg, b));
    }
  }
  bk->state_live = nodes_for_states(s);
  /* The walk's carry: step t's next states are step t+1's previous ones,
   * which the walk loaded one step earlier (and, for a piece's last step, the
   * states its recompute ended with); they wait in S.  The adjoint's copies
   * of the next states take them, and what only those needed is not emitted
   * (S4D: 40 of the walk's 225 instructions a step). */
  given_values *carry = &bk->carry;
  if (p->bwd_carry) {
    uint32_t next_at[FRNN_MAX_PORTS], roots[2 * FRNN_MAX_PORTS];
    adjoint_next_states(s, adj, next_at);
    for (int i = 0; i < p->n_st; i++) {
      int cls = s->ports[FRNN_PORT_STATE][i].cls;
      if (next_at[i] == NODE_NONE || adj->nodes[next_at[i]].cls != cls) continue;
      if (!(carry->vals[carry->n] = new_vals(lw, cls))) return false;
      bk->carry_port[carry->n] = i;
      carry->node[carry->n++] = next_at[i];
    }
    int n_roots = 0;
    for (int i = 0; i < adj->n_ports[FRNN_PORT_OUTPUT]; i++) roots[n_roots++] = adj->ports[FRNN_PORT_OUTPUT][i].value;
    if (carry->n) bk->walk_live = nodes_needed(adj, roots, n_roots, carry);
  }
  /* A time-invariant input's gradient, a sum of terms used nowhere else, is
   * chained onto its sum over t (acc += a*b + c*d: two FMAs, not an FMA, a
   * multiply and an add); the walk emits it there, not in the graph. */
  lw->chains = p->chains;
  uint8_t *to_acc = bk->to_acc = p->chains ? calloc(adj->n_nodes ? adj->n_nodes : 1, 1) : NULL;
  bk->acc_terms = to_acc ? malloc((adj->n_nodes + 1) * 2 * sizeof *bk->acc_terms) : NULL;
  uint32_t *uses = bk->acc_terms ? calloc(adj->n_nodes ? adj->n_nodes : 1, sizeof *uses) : NULL;
  if (uses) operand_uses(adj, bk->walk_live, carry, uses, NULL);
  for (int i = 0; uses && i < p->n_in; i++) {
    uint32_t v = adj->ports[FRNN_PORT_OUTPUT][i].value;
    uint32_t n_uses = uses[v];
    for (int k = 0; k < adj->n_ports[FRNN_PORT_OUTPUT]; k++) n_uses += adj->ports[FRNN_PORT_OUTPUT][k].value == v;
    to_acc[v] = (lw->spec->in_bcast[i] & 2) && n_uses == 1 && is_sum_op(adj->nodes[v].op) &&
                adj->nodes[v].op != FRNN_OP_NEG && !is_given(carry, v, NULL);
  }
  free(uses);
  LLVMValueRef ckpt = cg_param(cg, ws), scratch = cg_param(cg, ws + 1), T = cg_param(cg, ws + 2),
               H = cg_param(cg, ws + 3), C = cg_param(cg, ws + 4), NC = cg_param(cg, ws + 5),
               C2 = cg_param(cg, ws + 6);
  bk->T = T;
  lw->bh = cg_add(cg, cg_mul(cg, lw->b, H), lw->h);
  targ in[FRNN_MAX_PORTS], gout[FRNN_MAX_PORTS], gfin[FRNN_MAX_PORTS], gin[FRNN_MAX_PORTS],
      gst[FRNN_MAX_PORTS];
  int k = 0;
  for (int i = 0; i < p->n_in; i++, k += TENSOR_PARAMS) in[i] = tensor_arg(lw, k, lw->spec->dt_in[i], CONTIG_IN, i);
  for (int i = 0; i < p->n_out; i++, k += TENSOR_PARAMS) gout[i] = tensor_arg(lw, k, lw->spec->dt_gout[i], CONTIG_GOUT, i);
  for (int i = 0; i < p->n_st; i++, k += TENSOR_PARAMS) gfin[i] = tensor_arg(lw, k, lw->spec->dt_gfinal[i], CONTIG_GFINAL, i);
  for (int i = 0; i < p->n_in; i++, k += TENSOR_PARAMS) gin[i] = tensor_arg(lw, k, lw->spec->dt_gin[i], CONTIG_GIN, i);
  for (int i = 0; i < p->n_st; i++, k += TENSOR_PARAMS) gst[i] = tensor_arg(lw, k, lw->spec->dt_gstate[i], CONTIG_GSTATE, i);
  bk->gin = gin;

  int n_threads = bk->n_threads = lw->ks.warps * 32;
  for (int i = 0; i < p->n_st; i++) {
    int cls = s->ports[FRNN_PORT_STATE][i].cls;
    bk->S[i] = new_slots(lw, cls, entry);
    bk->dS[i] = new_slots(lw, cls, entry);
    bk->Sv[i] = new_vals(lw, cls);
    bk->dSv[i] = new_vals(lw, cls);
    if (!bk->S[i] || !bk->dS[i] || !bk->Sv[i] || !bk->dSv[i]) return false;
    load_tensor(lw, &gfin[i], cg_i64(cg, 0), cls, true, bk->dSv[i]);
    slots_set(lw, bk->dS[i], cls, bk->dSv[i], cls);
  }
  for (int i = 0; i < p->n_in; i++) {
    int cls = s->ports[FRNN_PORT_INPUT][i].cls;
    if (!(bk->X[i] = new_vals(lw, cls))) return false;
    bk->acc[i] = NULL;
    if (x->stride[i] && !(lw->spec->in_bcast[i] & 2)) bk->per_step_xchg = true;
    if (lw->spec->in_bcast[i] & 2) { /* time-invariant: sum over t in registers */
      if (!(bk->acc[i] = new_slots(lw, cls, entry))) return false;
      for (int q = 0; q < count_of(&lw->ks, cls); q++) cg_store(cg, cg_f32(cg, 0.0), bk->acc[i][q]);
      /* and loaded once here, not by every pass's queue (pf_begin): at
       * each piece's start the passes waited for them (H200, S4D: its
       * 32 time-invariant values a thread, twice a piece of 12 steps) */
      load_tensor(lw, &in[i], cg_i64(cg, 0), cls, false, bk->X[i]);
    }
  }
  for (int i = 0; i < p->n_out; i++)
    if (!(bk->GY[i] = new_vals(lw, s->ports[FRNN_PORT_OUTPUT][i].cls))) return false;

  LLVMValueRef ck_base = cg_mul(cg, cg_mul(cg, lw->bh, NC), cg_i64(cg, p->state_floats));
  LLVMValueRef kvar = new_counter(lw, entry);
  bk->tvar = new_counter(lw, entry);
  /* With two roles, the first half's threads walk and store the gradients
   * (NULL: one role, every thread does both). */
  LLVMValueRef walker = p->bwd_roles ? cg_ult(cg, cg_tid_x(cg), cg_i32(cg, n_threads)) : NULL;
  bk->scratch = scratch;
  bk->in = in;
  bk->gout = gout;
  if (p->bwd_roles ? !scratch_and_queues(lw, bk, C, C2, false, entry) ||
                         !role_periods(lw, bk, ckpt, ck_base, C, NC, kvar, walker)
                   : !chunk_loop(lw, bk, ckpt, ck_base, C, C2, NC, kvar, entry))
    return false;
  LLVMBasicBlockRef done = NULL;
  if (p->bwd_roles) {
    LLVMBasicBlockRef tail = cg_block(cg, "gradients");
    done = cg_block(cg, "done");
    cg_cond_br(cg, walker, tail, done);
    cg_at(cg, tail);
  }
  for (int i = 0; i < p->n_st; i++) {
    int cls = s->ports[FRNN_PORT_STATE][i].cls;
    slots_get(lw, bk->dS[i], cls, bk->dSv[i]);
    store_tensor(lw, &gst[i], cg_i64(cg, 0), cls, bk->dSv[i], cls);
  }
  bool acc_xchg = false;
  for (int i = 0; i < p->n_in; i++)
    if (bk->acc[i]) {
      int cls = s->ports[FRNN_PORT_INPUT][i].cls;
      slots_get(lw, bk->acc[i], cls, bk->X[i]);
      if (!x->stride[i]) {
        store_tensor(lw, &gin[i], cg_i64(cg, 0), cls, bk->X[i], cls);
        continue;
      }
      if (!acc_xchg && bk->per_step_xchg) xchg_sync(lw, x); /* the last step's readers are done */
      acc_xchg = true;
      xchg_write(lw, x, i, cg_i64(cg, 0), bk->X[i], cls);
    }
  if (acc_xchg) {
    xchg_sync(lw, x);
    for (int i = 0; i < p->n_in; i++)
      if (bk->acc[i] && x->stride[i]) xchg_store(lw, x, i, cg_i64(cg, 0), &gin[i], cg_i64(cg, 0), 1, T, rank);
  }
  if (done) {
    cg_br(cg, done);
    cg_at(cg, done);
  }
  /* No block may leave while another still reads its shared memory. */
  if (G > 1 && (acc_xchg || bk->per_step_xchg)) cg_cluster_barrier(cg);
  cg_ret(cg);
  free(bk->kind);
  free(bk->state_live);
  free(bk->walk_live);
  free(bk->to_acc);
  free(bk->acc_terms);
  for (int c = 0; c < carry->n; c++) free(carry->vals[c]);
  pf_free(&bk->pfx);
  pf_free(&bk->pfr);
  pf_free(&bk->pff);
  for (int i = 0; i < p->n_st; i++) free(bk->S[i]), free(bk->Sv[i]), free(bk->dS[i]), free(bk->dSv[i]);
  for (int i = 0; i < p->n_in; i++) free(bk->X[i]), free(bk->acc[i]);
  for (int i = 0; i < p->n_out; i++) free(bk->GY[i]);
  free(bk);
  free_vals(lw);
  return true;
}

/* -------------------------------------------------------- reduce kernel */
/* out[ob,t,oh,i,j] = sum over b (if broadcast over B) and h (if over H) of
 * partial[b,t,h,i,j]; partial is float32 [B,Tp,H,m,n], contiguous.  Each
 * output is summed by `lanes` neighbouring threads (1, or 32: a warp, for
 * few outputs of long sums such as a per-head parameter's hundreds of
 * per-chunk partials, which one thread each summed in 50 us): lane l adds
 * the terms k = l, l + 32, ... (k = b H + h) in order, then the warp adds
 * the lanes' sums in a fixed butterfly.  Deterministic either way. */
/* An output element of frnn_reduce: where its partials lie, and its sum. */
typedef struct reduce_at {
  LLVMValueRef part, Tp, t, H, m, i, nn, j; /* partial [B][Tp][H][m][nn], element (t, i, j) */
  LLVMValueRef acc;                         /* float alloca */
} reduce_at;

/* acc += the partial of batch bb, head hh. */
static void reduce_term(codegen *cg, const reduce_at *r, LLVMValueRef bb, LLVMValueRef hh) {
  LLVMValueRef bt = cg_add(cg, cg_mul(cg, bb, r->Tp), r->t);
  LLVMValueRef pi = cg_add(cg, cg_mul(cg, cg_add(cg, cg_mul(cg, cg_add(cg, cg_mul(cg, bt, r->H), hh), r->m), r->i), r->nn), r->j);
  cg_store(cg, cg_fadd(cg, cg_load(cg, cg->t_f32, r->acc), cg_load_elem(cg, r->part, pi, TD_F32)), r->acc);
}

static void lower_reduce(lower *lw, enum tdtype dt, const char *name) {
  codegen *cg = lw->cg;
  LLVMTypeRef types[20];
  int n = 0;
  types[n++] = cg->t_gptr; /* partial */
  tensor_param_types(cg, types, &n);                 /* out: 1..6 */
  for (int i = 0; i < 5; i++) types[n++] = cg->t_i64; /* B Tp H m n: 7..11 */
  types[n++] = cg->t_i32;                            /* over B: 12 */
  types[n++] = cg->t_i32;                            /* over H: 13 */
  types[n++] = cg->t_i32;                            /* lanes per output: 14 */
  if (lw->guard) types[n++] = cg->t_gptr;            /* the call's flag: 15 */
  cg_kernel(cg, name, types, n, 256, 0);
  cg_guard(cg, lw->guard ? cg_param(cg, 15) : NULL, lw->guard);
  LLVMValueRef part = cg_param(cg, 0), out = cg_param(cg, 1);
  LLVMValueRef B = cg_param(cg, 7), Tp = cg_param(cg, 8), H = cg_param(cg, 9), m = cg_param(cg, 10),
               nn = cg_param(cg, 11);
  LLVMValueRef overB = icmp(lw, LLVMIntNE, cg_param(cg, 12), cg_i32(cg, 0));
  LLVMValueRef overH = icmp(lw, LLVMIntNE, cg_param(cg, 13), cg_i32(cg, 0));
  LLVMValueRef lanes = cg_zext64(cg, cg_param(cg, 14));
  LLVMValueRef wide = icmp(lw, LLVMIntNE, lanes, cg_i64(cg, 1));
  LLVMValueRef oB = cg_select(cg, overB, cg_i64(cg, 1), B), oH = cg_select(cg, overH, cg_i64(cg, 1), H);
  LLVMValueRef gidx = cg_add(cg, cg_mul(cg, cg_zext64(cg, cg_ctaid_x(cg)), cg_i64(cg, 256)), cg_zext64(cg, cg_tid_x(cg)));
  LLVMValueRef idx = LLVMBuildUDiv(cg->b, gidx, lanes, ""), lane = LLVMBuildURem(cg->b, gidx, lanes, "");
  /* a work item: REDUCE_ROW outputs along n (narrow: the index arithmetic,
   * about 300 instructions of divisions by sizes known at launch, once for
   * them all), one (wide) */
  LLVMValueRef per = cg_select(cg, wide, cg_i64(cg, 1), cg_i64(cg, REDUCE_ROW));
  LLVMValueRef njs = LLVMBuildUDiv(cg->b, cg_add(cg, nn, cg_add(cg, per, cg_i64(cg, -1))), per, "");
  LLVMValueRef total = cg_mul(cg, cg_mul(cg, cg_mul(cg, oB, Tp), cg_mul(cg, oH, m)), njs);
  /* whole warps stay or leave together (lanes is 1 or 32) */
  LLVMBasicBlockRef work = cg_block(cg, "work"), end = cg_block(cg, "end");
  cg_cond_br(cg, cg_ult(cg, idx, total), work, end);
  cg_at(cg, work);
  LLVMValueRef j0 = cg_mul(cg, LLVMBuildURem(cg->b, idx, njs, ""), per), rest = LLVMBuildUDiv(cg->b, idx, njs, "");
  LLVMValueRef i = LLVMBuildURem(cg->b, rest, m, "");
  rest = LLVMBuildUDiv(cg->b, rest, m, "");
  LLVMValueRef oh = LLVMBuildURem(cg->b, rest, oH, "");
  rest = LLVMBuildUDiv(cg->b, rest, oH, "");
  LLVMValueRef t = LLVMBuildURem(cg->b, rest, Tp, "");
  LLVMValueRef ob = LLVMBuildUDiv(cg->b, rest, Tp, "");
  LLVMValueRef nb = cg_select(cg, overB, B, cg_i64(cg, 1)), nh = cg_select(cg, overH, H, cg_i64(cg, 1));
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(cg->fn);
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMPositionBuilderBefore(cg->b, LLVMGetFirstInstruction(entry));
  LLVMValueRef acc = LLVMBuildAlloca(cg->b, cg->t_f32, "acc");
  LLVMPositionBuilderAtEnd(cg->b, here);
  LLVMValueRef row = cg_add(cg, cg_add(cg, cg_mul(cg, ob, cg_param(cg, 2)), cg_mul(cg, t, cg_param(cg, 3))),
                            cg_add(cg, cg_mul(cg, oh, cg_param(cg, 4)), cg_mul(cg, i, cg_param(cg, 5))));
  /* A thread per output (narrow): every term, b and h nested; the body has
   * no branch and is unrolled 8 times, so 8 loads are in flight a thread
   * (one at a time left the sums over heads at a third of the bandwidth).
   * A warp per output (wide): lane l takes the terms k = l, l + 32, ...
   * with k = b nh + h. */
  reduce_at at = {.part = part, .Tp = Tp, .t = t, .H = H, .m = m, .i = i, .nn = nn, .acc = acc};
  LLVMBasicBlockRef narrow_bb = cg_block(cg, "narrow"), wide_bb = cg_block(cg, "wide");
  cg_cond_br(cg, wide, wide_bb, narrow_bb);
  cg_at(cg, narrow_bb);
  LLVMValueRef bvar = new_counter(lw, entry), hvar = new_counter(lw, entry);
  for (int r = 0; r < REDUCE_ROW; r++) {
    at.j = cg_add(cg, j0, cg_i64(cg, r));
    LLVMBasicBlockRef in_row = cg_block(cg, "in_row"), next = cg_block(cg, "next");
    cg_cond_br(cg, cg_ult(cg, at.j, nn), in_row, next);
    cg_at(cg, in_row);
    cg_store(cg, cg_f32(cg, 0.0), acc);
    loop lb = loop_begin(lw, bvar, cg_i64(cg, 0), nb, 1, "over_b");
    loop lh = loop_begin(lw, hvar, cg_i64(cg, 0), nh, 1, "over_h");
    LLVMValueRef bb = cg_select(cg, overB, cg_load(cg, cg->t_i64, bvar), ob);
    LLVMValueRef hh = cg_select(cg, overH, cg_load(cg, cg->t_i64, hvar), oh);
    reduce_term(cg, &at, bb, hh);
    loop_end_unrolled(lw, &lh, 1, 8);
    loop_end(lw, &lb, 1);
    cg_store_elem(cg, out, cg_add(cg, row, cg_mul(cg, at.j, cg_param(cg, 6))), dt, cg_load(cg, cg->t_f32, acc));
    cg_br(cg, next);
    cg_at(cg, next);
  }
  cg_br(cg, end);
  cg_at(cg, wide_bb);
  {
    at.j = j0;
    cg_store(cg, cg_f32(cg, 0.0), acc);
    LLVMValueRef kvar = new_counter(lw, entry);
    loop lk = loop_begin(lw, kvar, lane, cg_mul(cg, nb, nh), 1, "terms");
    LLVMValueRef kk = cg_load(cg, cg->t_i64, kvar);
    LLVMValueRef bb = cg_select(cg, overB, LLVMBuildUDiv(cg->b, kk, nh, ""), ob);
    LLVMValueRef hh = cg_select(cg, overH, LLVMBuildURem(cg->b, kk, nh, ""), oh);
    reduce_term(cg, &at, bb, hh);
    loop_end(lw, &lk, 32);
    LLVMValueRef wsum = cg_load(cg, cg->t_f32, acc);
    wsum = cg_sum_lanes_f32(cg, wsum, 32);
    LLVMBasicBlockRef write = cg_block(cg, "write");
    cg_cond_br(cg, icmp(lw, LLVMIntEQ, lane, cg_i64(cg, 0)), write, end);
    cg_at(cg, write);
    cg_store_elem(cg, out, cg_add(cg, row, cg_mul(cg, j0, cg_param(cg, 6))), dt, wsum);
    cg_br(cg, end);
  }
  cg_at(cg, end);
  cg_ret(cg);
}

void lower_reduce_kernels(codegen *cg, unsigned kernels, int guard) {
  lower lw = {.cg = cg, .guard = guard};
  for (int d = 0; d < 3; d++)
    if (kernels & (KERNEL_REDUCE_F32 << d)) lower_reduce(&lw, (enum tdtype)d, reduce_kernel_names[d]);
}

/* ------------------------------------------------------------ the module */
const char *const reduce_kernel_names[3] = {"frnn_reduce_f32", "frnn_reduce_bf16", "frnn_reduce_f16"};

frnn_status lower_module(codegen *cg, const plan *p, const lower_spec *spec, const frnn_step *s,
                         const frnn_step *adj, unsigned kernels) {
  lower lw = {.cg = cg, .p = p, .spec = spec, .guard = spec->guard};
  int smem_floats = p->bwd.warps * p->bwd.cn * p->bwd.lpr;
  if (smem_floats * 4 > 48 * 1024)
    return diag_fail(cg->ctx, FRNN_E_UNSUPPORTED,
                     "M = %lld, N = %lld need %d bytes of shared memory for sums over M (> 48 KB)",
                     (long long)p->M, (long long)p->N, smem_floats * 4);
  bool ok = true;
  cg->div_full = p->div_full;
  if (kernels & KERNEL_FWD) {
    lw.smem = cg_shared_array(cg, "frnn_fwd_summ", cg->t_f32, p->fwd.warps * p->fwd.cn * p->fwd.lpr);
    ok = ok && lower_forward(&lw, s);
  }
  if (kernels & KERNEL_BWD) {
    lw.smem = cg_shared_array(cg, "frnn_bwd_summ", cg->t_f32, smem_floats);
    ok = ok && lower_backward(&lw, s, adj);
  }
  for (int d = 0; d < 3; d++)
    if (kernels & (KERNEL_REDUCE_F32 << d)) lower_reduce(&lw, (enum tdtype)d, reduce_kernel_names[d]);
  free_vals(&lw);
  cg->div_full = false;
  if (!ok) return diag_fail(cg->ctx, FRNN_E_NOMEM, "out of memory lowering step '%s'", s->name);
  return FRNN_OK;
}
