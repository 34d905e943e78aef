/* frnn_internal.h - types shared by the pipeline stages, and each stage's
 * entry points, one section per source file, in pipeline order:
 *
 *   ctx.c        diagnostics
 *   ops.c        the op table (ops.def) and each op's float64 value
 *   graph.c      builder, interning, simplification, canonical form, hash
 *   lex.c parse.c  step text -> graph;  print.c  graph -> step text
 *   adjoint.c    step graph -> its reverse-mode derivative (another graph)
 *   tensor.c     DLTensor validation against a step's signature
 *   reference.c  float64 executor over whole sequences, forward and backward
 *   affine.c chunked.c  analyses for a chunked formulation: which states are
 *                affine, and the diagonal class's terms (with the chunked
 *                algorithm in float64, forward and backward, that checks them,
 *                and the form the GPU kernels take)
 *   plan.c       thread mapping of the kernels, workspace layout
 *   target.c codegen.c  GPU targets; the LLVM toolkit kernels are built with
 *   cuda.c cache.c  the driver (dlopen); the on-disk compilation cache
 *   lower_llvm.c plan + graphs -> recurrent forward, backward and reduce kernels (LLVM IR)
 *   lower_chunked.c  chunked form -> its plan and chunked kernels (LLVM IR)
 *   pipeline.c   the stages in order, and the public GPU entry points
 */
#ifndef FRNN_INTERNAL_H
#define FRNN_INTERNAL_H

#include "frnn.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#define FRNN_NAME_MAX 64     /* longest port/step name + 1 */
#define FRNN_MAX_PORTS 32    /* of each kind (inputs, states, outputs) */
#define FRNN_MAX_NODES 65536 /* per step: far above any real step */
#define NODE_NONE UINT32_MAX

#define CLASS_HAS_M(c) (((c)&1) != 0)
#define CLASS_HAS_N(c) (((c)&2) != 0)

/* ------------------------------------------------------------------ ctx.c */
struct frnn_ctx {
  frnn_status status; /* of the last failure */
  char msg[4096];     /* its message */
  int line, col;      /* its place in step text (0: none) */
  struct gpu_module *modules; /* pipeline.c: modules loaded by this context */
  struct ck_entry *chunked;   /* pipeline.c: which steps run on the chunked kernels */
  frnn_compile_stats stats;   /* pipeline.c: what loading them cost */
  int backward_mode;          /* frnn_backward_mode (plan.c reads it) */
  char backward_plan[512];    /* pipeline.c: plan_describe of the last backward module loaded */
};

/* Record a failure and return `st`; printf-style message. */
frnn_status diag_fail(frnn_ctx *ctx, frnn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, at file:line:col of step text `src`: the message gets the location
 * prefix, then the source line and a caret under column `col`. */
frnn_status diag_fail_at(frnn_ctx *ctx, frnn_status st, const char *file, const char *src,
                         int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
void diag_clear(frnn_ctx *ctx);
const char *class_name(int cls); /* "[M,1]" ... */

/* ------------------------------------------------------------------ ops.c */
enum op_shape { SHAPE_LEAF, SHAPE_JOIN, SHAPE_SUMN, SHAPE_SUMM, SHAPE_FIRST };
enum { OPF_INFIX = 1, OPF_COMM = 2, OPF_FUNC = 4 };

typedef struct op_info {
  const char *spelling;
  int arity;
  enum op_shape shape;
  int flags;
} op_info;

const op_info *op_get(frnn_op op);
/* The function-call op spelled `name` (OPF_FUNC), or -1. */
int op_by_function_name(const char *name, size_t len);
/* Value of an elementwise op (not a leaf, not a reduction) in float64.
 * This is the semantics every backend must match. */
double op_eval(frnn_op op, double a, double b, double c);

/* ---------------------------------------------------------------- graph.c */
typedef struct node {
  uint8_t op;      /* frnn_op */
  uint8_t cls;     /* frnn_class of the result */
  uint16_t slot;   /* INPUT/STATE: index of the port */
  uint32_t arg[3]; /* operands (node indices, always smaller than this one's) */
  double value;    /* CONST: the constant */
  uint64_t hash;   /* structural: op, class, slot or value, operands' hashes */
} node;

typedef struct port {
  char name[FRNN_NAME_MAX];
  uint8_t cls;
  uint32_t leaf;  /* INPUT, STATE: the leaf node that stands for it */
  uint32_t value; /* STATE: next value; OUTPUT: bound value; NODE_NONE: unbound */
} port;

struct frnn_step {
  frnn_ctx *ctx;
  char name[FRNN_NAME_MAX];
  node *nodes; /* topological: operands precede their users */
  uint32_t n_nodes, cap_nodes;
  uint32_t *intern; /* open-addressing table of node index + 1 (0: empty) */
  uint32_t intern_cap;
  port ports[3][FRNN_MAX_PORTS]; /* by frnn_port_kind */
  int n_ports[3];
  bool finished;
  bool internal; /* an adjoint: any output class, no states needed */
  uint64_t hash; /* canonical hash, set by frnn_step_finish */
};

/* Intern a node built from checked operands, folding constants and trivial
 * identities (x+0, x*1, x/1, --x).  Returns the node index or NODE_NONE with
 * a message in the context.  Operand classes are checked by the caller. */
uint32_t graph_make(frnn_step *s, frnn_op op, const uint32_t *args, int n_args, double value);
/* Class that `op` gives to these operands, or -1 (message in ctx). */
int graph_result_class(frnn_step *s, frnn_op op, const uint32_t *args, int n_args);
/* Create an internal step (an adjoint): outputs may be of any class. */
frnn_status graph_create_internal(frnn_ctx *ctx, const char *name, frnn_step **out);
/* Short description of node v for messages: "node 7 (mul, [M,N])". */
const char *graph_describe(const frnn_step *s, uint32_t v, char *buf, size_t size);
/* Find a port by name: its index, or -1. */
int graph_find_port(const frnn_step *s, frnn_port_kind kind, const char *name);

/* ------------------------------------------------------ lex.c parse.c print.c */
/* Step text (SPEC section 2).  lex.c cuts it into tokens on demand; parse.c
 * builds the step through the public builder; print.c writes a finished step
 * back as text that parses to the same hash. */
enum tok_kind {
  TOK_EOF, TOK_NEWLINE, TOK_NAME, TOK_NUMBER,
  TOK_LPAREN, TOK_RPAREN, TOK_LBRACKET, TOK_RBRACKET, TOK_COMMA, TOK_SEMI,
  TOK_ASSIGN, TOK_ARROW, TOK_PLUS, TOK_MINUS, TOK_STAR, TOK_SLASH,
  TOK_LT, TOK_GT, TOK_LE, TOK_GE,
};
typedef struct token {
  enum tok_kind kind;
  const char *text; /* its first byte in the source */
  size_t len;       /* its length in bytes (0 for TOK_EOF) */
  int line, col;    /* from 1; col counts bytes */
  double number;    /* TOK_NUMBER: its value (1e999 is inf) */
} token;
typedef struct lexer {
  frnn_ctx *ctx;
  const char *file;       /* for messages */
  const char *src;        /* the whole text */
  const char *p;          /* next byte */
  const char *line_start; /* first byte of the current line */
  int line;
} lexer;
void lex_init(lexer *lx, frnn_ctx *ctx, const char *file, const char *src);
/* The next token into *t.  A lexical error (bad byte, malformed number, name
 * of FRNN_NAME_MAX characters or more) fails with a located message.
 * Numbers are read in the current locale: parse.c switches to "C". */
frnn_status lex_next(lexer *lx, token *t);
/* The token for messages: "'foo'", "number '1.5'", "end of line"... */
const char *tok_describe(const token *t, char *buf, size_t size);

/* Appends to a growable string; on allocation failure sets ok = false and
 * appends nothing more.  Start from (strbuf){.ok = true}; data is
 * NUL-terminated once anything was appended; free it with free(). */
typedef struct strbuf {
  char *data;
  size_t len, cap;
  bool ok;
} strbuf;
void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Node v of a finished step as one nested expression of port names and
 * constants (no temporaries; a value used twice is written twice). */
void print_expr(strbuf *b, const frnn_step *s, uint32_t v);

/* -------------------------------------------------------------- adjoint.c */
/* (frnn_step_adjoint, in frnn.h, builds the adjoint.)  The adjoint copies the
 * forward nodes it needs; at[i] is the adjoint's node that recomputes step
 * s's next state i (adj from frnn_step_adjoint(s)), NODE_NONE where the
 * adjoint does not use it.  The recurrent backward hands those nodes the
 * state it already holds instead of recomputing it. */
void adjoint_next_states(const frnn_step *s, const frnn_step *adj, uint32_t at[FRNN_MAX_PORTS]);

/* --------------------------------------------------------------- tensor.c */
/* A validated tensor seen as 5-D [B,T,H,m,n] (inputs), with stride 0 on
 * every broadcast or absent dimension (and on every dimension of size 1);
 * states use T stride 0, outputs N stride 0 (and M stride 0 if scalar).
 * Any index may so be passed in full: (b,t,h,i,j) with i < M, j < N. */
enum tdtype { TD_F32, TD_BF16, TD_F16, TD_F64 };
typedef struct tview {
  char *data;        /* first element (byte_offset applied) */
  enum tdtype dtype;
  int64_t stride[5]; /* in elements; 0 = broadcast */
  int64_t extent[5]; /* the tensor's own sizes (1 where broadcast) */
} tview;

/* What the tensor is for, which fixes its expected shape (SPEC section 3)
 * and how messages name it.  Written roles must not alias themselves. */
enum tensor_role {
  ROLE_INPUT,            /* "input 'x'": [B,T,H,m,n], B/T/H may be 1 */
  ROLE_STATE,            /* "initial state 'S'": [B,H,m,n] */
  ROLE_OUTPUT,           /* "output 'y'", written: [B,T,H,M] or [B,T,H] / [B,T,H,1] */
  ROLE_GRAD_INPUT,       /* "gradient of input 'x'", written: the input's own shape */
  ROLE_FINAL_STATE,      /* "final state 'S'", written: [B,H,m,n] */
  ROLE_GRAD_OUTPUT,      /* "gradient of output 'y'": as the output */
  ROLE_GRAD_FINAL_STATE, /* "gradient of final state 'S'": [B,H,m,n] */
  ROLE_GRAD_STATE,       /* "gradient of initial state 'S'", written: [B,H,m,n] */
};
/* Check `t` (non-null, data, device, dtype, ndim, shape, strides, no
 * self-overlap for written roles) for port `name` of class `cls`; fill
 * `view`.  Host tensors (kDLCPU, kDLCUDAHost; float64 allowed) unless
 * want_device (kDLCUDA).  For ROLE_GRAD_INPUT, `like` is the input's view,
 * whose shape it must have.  Sizes must have passed sizes_check. */
frnn_status tensor_bind(frnn_ctx *ctx, const DLTensor *t, enum tensor_role role,
                        const char *name, int cls, frnn_sizes sz, bool want_device,
                        const tview *like, tview *view);
/* One element of dtype dt at p as a double, and back, rounding to nearest
 * even in one step (bf16/f16 never pass through float); NaN stays NaN.  The
 * one copy of these conversions: tools and tests call them too. */
double elem_load(const void *p, enum tdtype dt);
void elem_store(void *p, enum tdtype dt, double x);
int tdtype_bytes(enum tdtype dt);
double tview_load(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j);
/* Stores round to nearest even (bfloat16, float16, float32); NaN stays NaN. */
void tview_store(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j,
                 double x);
/* B, T, H, M, N all >= 1 and B*T*H*M*N elements (of 8 bytes) addressable. */
frnn_status sizes_check(frnn_ctx *ctx, frnn_sizes sz);

/* ------------------------------------------------------------ reference.c */
/* Float64 evaluator of one finished step (user or internal), for one (b,t,h).
 * Each node has a buffer of its class's size (row-major, i*N+j; a class
 * without M or N has that dimension of size 1).  The caller fills the leaf
 * buffers (eval_leaf), runs eval_step, and reads ports with eval_port. */
typedef struct step_eval {
  const frnn_step *step;
  int64_t M, N;
  double **val; /* per node: its buffer */
  double *pool;
} step_eval;
frnn_status eval_init(frnn_ctx *ctx, step_eval *e, const frnn_step *s, int64_t M, int64_t N);
void eval_free(step_eval *e);
/* Buffer of the leaf of input or state port i (of its class's size). */
double *eval_leaf(const step_eval *e, frnn_port_kind kind, int i);
/* Compute every non-leaf node from the leaves. */
void eval_step(step_eval *e);
/* Element (i,j) of the value bound to state (next value) or output port k,
 * broadcast when the value's class is smaller than the port's. */
double eval_port(const step_eval *e, frnn_port_kind kind, int k, int64_t i, int64_t j);

/* --------------------------------------------------------------- affine.c */
/* Text saying, per state and output, whether it is affine in the states and
 * with which factors, then whether a chunked form exists
 * (docs/design-chunked.md).  `frnn-dump-ptx --after affine`.  *out: malloc'd. */
frnn_status affine_describe(frnn_ctx *ctx, const frnn_step *s, char **out);

/* -------------------------------------------------------------- chunked.c */
/* The chunked form of a diagonal-class step (chunked.c says which steps). */
enum { CHUNK_MAX_FACTORS = 8, CHUNK_MAX_TERMS = 8 };
enum { CHUNK_BASE_ONE, CHUNK_BASE_STATE, CHUNK_BASE_NEXT }; /* a term's 1, S or S' */
typedef struct chunk_product { /* product of nodes of the step (divide: 1 / node) */
  int n;
  uint32_t node[CHUNK_MAX_FACTORS];
  bool divide[CHUNK_MAX_FACTORS];
} chunk_product;
typedef struct chunk_out_term { /* sign * outer * sum(X * inner), or sign * outer (base ONE) */
  int base;
  double sign;
  chunk_product inner, outer;
} chunk_out_term;
typedef struct chunk_output {
  int n_terms;
  chunk_out_term term[CHUNK_MAX_TERMS];
} chunk_output;
typedef struct chunk_form {
  int state;                 /* the [M,N] state's port */
  chunk_product decay;       /* S' = decay_sign * decay * S + ... */
  double decay_sign;
  int decay_cls;             /* FRNN_SCALAR or FRNN_ROW */
  int n_updates;             /* ... + sum of update_sign[a] * update[a] (column x row) */
  chunk_product update[CHUNK_MAX_TERMS];
  double update_sign[CHUNK_MAX_TERMS];
  int n_rank;                /* ... + sum of rank_sign[a] * sum(S * rank_a[a]) * rank_b[a] (rows: the
                                low-rank class, design-chunked.md) */
  chunk_product rank_a[CHUNK_MAX_TERMS], rank_b[CHUNK_MAX_TERMS];
  double rank_sign[CHUNK_MAX_TERMS];
  chunk_output output[FRNN_MAX_PORTS];
} chunk_form;
/* The terms of s's chunked form; FRNN_E_UNSUPPORTED, saying why, if none. */
frnn_status chunk_form_of(frnn_ctx *ctx, const frnn_step *s, chunk_form *out);
/* `frnn-dump-ptx --after chunk`: the form, or why there is none.  *out: malloc'd. */
frnn_status chunk_form_describe(frnn_ctx *ctx, const frnn_step *s, char **out);
/* One head's term values over T steps (float64, row-major): decay d [T][N],
 * updates c [T][n_upd][M] and r [T][n_upd][N], and per output term linear in
 * the state (base lin_base[k]: CHUNK_BASE_STATE or _NEXT) its weights under
 * the sum w [T][n_lin][N] and its factor outside o [T][n_lin][M]. */
typedef struct chunk_seq {
  int64_t T, M, N;
  int n_upd, n_lin;
  const int *lin_base;
  double *d, *c, *r, *w, *o;
  int n_rank;    /* rank-one terms sum(S * a) * b: */
  double *a, *b; /* a [T][n_rank][N], b [T][n_rank][N] (sign in b) */
  bool rank_split; /* their columns by the split form (state-independent parts first, then
                      X = U + W S_0^T: design-chunked.md), not step by step */
} chunk_seq;
/* The chunked algebra on term values, chunks of L steps: each linear term's
 * output y [T][n_lin][M] (before summing into outputs), the final state, and
 * (unless NULL) the state at every chunk's start, starts [ceil(T/L)][M][N]. */
frnn_status chunk_seq_forward(frnn_ctx *ctx, const chunk_seq *q, int64_t L, const double *S0, double *y,
                              double *S_T, double *starts);
/* Its backward from the forward's starts and S_T: given dy (as y) and dS_T,
 * the gradients of every term value into g (shaped as q; its arrays the
 * caller's) and of S0.  The decay's gradient is formed as the gradient of
 * log d over d (design-chunked.md): every d must be nonzero. */
frnn_status chunk_seq_backward(frnn_ctx *ctx, const chunk_seq *q, int64_t L, const double *starts,
                               const double *S_T, const double *dy, const double *dS_T, chunk_seq *g,
                               double *dS0);
/* The forward by chunks of L steps in float64 on the host (the algebra the
 * chunked kernels follow).  Contiguous float64 arrays, nothing broadcast:
 * in[i] [B,T,H,m,n], state0/state1 [B,H,M,N], out[k] [B,T,H,m]. */
frnn_status chunk_forward_f64(frnn_ctx *ctx, const frnn_step *s, const chunk_form *cf, frnn_sizes sz,
                              int64_t L, const double *const *in, const double *state0,
                              double *const *out, double *state1);
/* Its backward: dy[k] as out[k], dS_T as state1; the gradient of every input,
 * gin[i] as in[i] (nothing summed: nothing is broadcast), and of state0.
 * Term values' gradients by chunk_seq_backward, then to the inputs through
 * the adjoint of the prologue (the step's part the terms are made of). */
frnn_status chunk_backward_f64(frnn_ctx *ctx, const frnn_step *s, const chunk_form *cf, frnn_sizes sz,
                               int64_t L, const double *const *in, const double *state0,
                               const double *const *dy, const double *dS_T, double *const *gin,
                               double *gS0);

/* The chunked form as the GPU kernels run it (lower_chunked.c): the decay
 * a product of exponentials (its logarithm, the sum of their exponents, is
 * what the kernels take: no division, no log of a value that may be 0),
 * outputs [M,1], one [M,N] state, and no [M,N] value among the terms'
 * nodes.  `terms` is the term prologue: the step's inputs plus one seed per
 * term value, z = sum over the terms of sum(sum_m(value * seed)); the
 * adjoint of it maps the terms' gradients to the inputs' (the chain kernel
 * evaluates it).  Seeds, in order: the log decay (none without a decay),
 * per update its column (with its sign and scalars) and row (the rank-one
 * term's update: its b with the term's sign, CK_SEED_RB, and no column),
 * per output term linear in S its weights w and (if it has factors) its
 * outside factor o (the rank-one term's: its a, CK_SEED_RA), per output its
 * terms independent of S (seeded with that output's gradient).  Where the
 * rank-one b is merged out of the backward (chunk_gpu.merge_rows), b has no
 * seed: the merged update's row seed takes r's whole gradient (its own plus
 * s times b's) and one more seed, CK_SEED_S, the scalar s's (r . db). */
enum { CK_SEED_LD, CK_SEED_C, CK_SEED_R, CK_SEED_W, CK_SEED_O, CK_SEED_IND, CK_SEED_RA, CK_SEED_RB, CK_SEED_S };
enum { CK_MAX_LIN = FRNN_MAX_PORTS * CHUNK_MAX_TERMS + 1, CK_MAX_UPD = CHUNK_MAX_TERMS + 1 };
enum { CK_MAX_SEEDS = 1 + 2 * CK_MAX_UPD + 2 * CK_MAX_LIN + FRNN_MAX_PORTS };
/* The low-rank class (one rank-one term sum(S * a) * b) in the same arrays
 * (docs/design-chunked.md, "The low-rank class"): a~ = P_{t-1} a is one more
 * linear term reading the old state (lin_rank >= 0; its "output" the
 * columns x_t = S_{t-1} a_t, its gradient dH from the transposed solve), and
 * x_t b_t^T one more update (upd_rank >= 0; its column X solved per chunk). */
typedef struct chunk_gpu {
  chunk_form cf;
  int n_ld;                                  /* log decay = sum of +-ld_node (+-log(ld_node): ld_log) */
  uint32_t ld_node[CHUNK_MAX_FACTORS];
  bool ld_neg[CHUNK_MAX_FACTORS];
  bool ld_log[CHUNK_MAX_FACTORS];            /* the factor itself, not an exp's exponent */
  /* Some decay factor is not an exp, so not provably positive: its logarithm
   * is taken, and the kernels run only where every such factor is at least
   * CK_GUARD_MIN at every step; the forward checks it and flags the call,
   * which the recurrent kernels then run instead (pipeline.c). */
  bool guard;
  int n_upd;                                 /* cf.n_updates, then the rank-one term's */
  chunk_product upd_col[CK_MAX_UPD], upd_row[CK_MAX_UPD];
  double upd_row_sign[CK_MAX_UPD];
  int upd_rank[CK_MAX_UPD];                  /* -1: a column x row update */
  int n_lin, lin_out[CK_MAX_LIN], lin_term[CK_MAX_LIN], lin_base[CK_MAX_LIN];
  chunk_product lin_w[CK_MAX_LIN];           /* the weights under the sum */
  int lin_rank[CK_MAX_LIN];                  /* -1: an output's term */
  int rank_lin, rank_upd;                    /* the rank-one term's lin and update, or -1 */
  /* The update whose row r the rank-one b is, times scalars of the step
   * (b = s r, s = merge_sign * merge_s: the delta rules' -beta k against v
   * beta k^T), or -1 (none, a decay along M, FRNN_CK_MERGE=0).  merge_rows
   * (FRNN_CK_MERGE=3, the default): b's row gradient goes to r's and s's
   * seeds (CK_SEED_S), and the backward forms no product for b. */
  int merge_into;
  chunk_product merge_s;
  double merge_sign;
  bool merge_rows;
  int n_seeds, seed_kind[CK_MAX_SEEDS], seed_index[CK_MAX_SEEDS], seed_cls[CK_MAX_SEEDS];
  int seed_ld, seed_c[CK_MAX_UPD], seed_r[CK_MAX_UPD]; /* -1: no decay (ld), the rank-one update (c),
                                                          b merged out (r) */
  int seed_s; /* CK_SEED_S, or -1 */
  int seed_w[CK_MAX_LIN], seed_o[CK_MAX_LIN];
  int seed_ind[FRNN_MAX_PORTS]; /* -1: none */
  frnn_step *terms, *terms_adj;
  uint8_t *need;     /* per node of the step: the kernels evaluate it */
  uint8_t *need_adj; /* per node of terms_adj: the chain kernel evaluates it */
} chunk_gpu;
/* FRNN_CK_MERGE: 0 none, 1 the columns, 2 and the pairs, 3 (default) and
 * b's row gradient (chunk_gpu.merge_rows; chunked.c's merge_of). */
int chunk_merge_level(void);
/* FRNN_E_UNSUPPORTED, saying why, when the step has no chunked kernels. */
frnn_status chunk_gpu_make(frnn_ctx *ctx, const frnn_step *s, chunk_gpu *out);
void chunk_gpu_free(chunk_gpu *g);

/* ----------------------------------------------------------------- plan.c */
/* How one kernel maps an (b,h) head's M x N state onto threads.  A row of the
 * state is spread over `lpr` lanes (a power of two <= 32), each holding `cn`
 * columns (j = lane_in_row + lpr*c); a warp holds 32/lpr row groups; each
 * thread holds `rpt` rows (i = row0 + r*rows_per_pass + warp*(32/lpr) +
 * lane/lpr; rows_adjacent: i = (row0/rpt + warp*(32/lpr) + lane/lpr)*rpt + r,
 * side by side, so that a contiguous column's rows move as one vector); a
 * block has `warps` warps; `row_blocks` blocks share a head (only when the
 * kernel needs no sum over M). */
#define PLAN_MAX_RPT 32
#define PLAN_MAX_CN 32
#define PLAN_MAX_PF_DEPTH 64 /* steps a time loop's queue of loads holds at most (plan.prefetch) */
typedef struct kernel_shape {
  int lpr, cn, rpt, warps, row_blocks;
  bool rows_adjacent;
} kernel_shape;

typedef struct plan {
  int64_t M, N;
  kernel_shape fwd, bwd;
  int n_in, n_st, n_out;
  int state_floats;                  /* floats of one head's states, canonical layout */
  int state_offset[FRNN_MAX_PORTS];  /* of each state within those */
  int in_floats[FRNN_MAX_PORTS];     /* elements of one (b,t,h) slice of each input */
  int bwd_regs;                      /* state floats one backward thread keeps */
  bool bwd_deferred; /* sums over M in the backward are warp partials added per step
                        (split_kinds); bwd.row_blocks > 1 then means a cluster, unless
                        bwd_rows_apart */
  bool bwd_rows_apart; /* deferred, and nothing to exchange: the backward's rows need
                          nothing from each other, its row blocks no cluster */
  /* Deferred: the exchange's shared floats for one step of one block, where
   * input i's slots start and their stride per warp (0: not exchanged), and
   * how many steps one exchange batches (plan_exchange). */
  int xchg_floats, xchg_off[FRNN_MAX_PORTS], xchg_stride[FRNN_MAX_PORTS], xchg_steps;
  int prefetch; /* PREFETCH_*: how time loops fetch later steps' inputs (lower_llvm.c) */
  int pf_depth_fwd, pf_depth_bwd; /* PREFETCH_REGS: steps ahead held in registers per kernel
                                     (1 to PLAN_MAX_PF_DEPTH; 0: none in that kernel) */
  int pf_depth_first; /* the backward's first pass over a chunk (second-level checkpoints):
                         its own queue's steps, not bounded by a piece */
  int64_t bwd_c2; /* backward: steps between second-level checkpoints; 0: one level
                     (FRNN_BWD_C2; plan_workspace) */
  int64_t bwd_c;  /* steps between the forward's checkpoints; 0: about sqrt(T)
                     (FRNN_BWD_C; plan_workspace) */
  int bwd_shared_slots; /* > 0: the backward keeps its recomputed states in shared
                           memory, at most this many per block (two levels, C and
                           C2 chosen by plan_workspace to fit); 0: in the workspace */
  int xchg_shared_floats; /* shared floats of the exchange, before that scratch */
  int bwd_min_blocks;     /* > 0: the backward is built for this many blocks an SM
                             (registers capped to match its shared memory; 1 for
                             big blocks, which lets ptxas use up to 64K / threads) */
  bool bwd_carry; /* the backward's walk takes each step's next states from the step
                     after it (the states it loaded) instead of recomputing them
                     (lower_backward); where bwd_regs is small (FRNN_BWD_CARRY) */
  bool div_full; /* the recurrent kernels divide by div.full.f32 (2 ulp, no slow path;
                   FRNN_DIV; codegen.c cg_fdiv) */
  bool pred_fwd, pred_bwd; /* each kernel stores its tensors by predicated stores,
                              not branches around stores (plan_build;
                              lower_llvm.c store_tensor) */
  bool chains;    /* the backward's sums of products emitted as chains of FMAs
                     (lower_llvm.c absorbed_nodes; FRNN_CHAINS, default on) */
  bool bwd_roles; /* the backward's block is twice bwd.warps: the second half
                     recomputes chunk k - 1 while the first walks chunk k, two sets
                     of scratch slots in shared memory (plan_roles; FRNN_BWD_ROLES) */
  int64_t bwd_roles_c; /* roles: the longest chunk whose two sets fit (plan_workspace) */
} plan;
/* Threads of one backward block (plan bwd_roles: two halves). */
static inline int plan_bwd_threads(const plan *p) { return p->bwd.warps * 32 * (p->bwd_roles ? 2 : 1); }
/* Whether the backward's scratch slots are in shared memory (two levels
 * there, or the two roles' sets), not in the workspace. */
static inline bool plan_scratch_shared(const plan *p) { return p->bwd_shared_slots > 0 || p->bwd_roles; }
enum { PREFETCH_NONE, PREFETCH_REGS, PREFETCH_HINT };

typedef struct target target;
/* Decide the kernel shapes of `step` (and its adjoint, NULL: derived here)
 * for M x N on target t (sm_90: clusters; its shared memory). */
frnn_status plan_make(frnn_ctx *ctx, const frnn_step *step, const frnn_step *adjoint, int64_t M,
                      int64_t N, const target *t, plan *out);
/* Other backwards for the same forward (its checkpoints, at most its
 * workspace at sz), in the order pipeline.c tries them where the plan's
 * backward spills: the rows over half as many lanes (more columns a lane,
 * fewer row temporaries); split over a cluster of 2, 4, 8 blocks (sm_90,
 * steps whose sums over M may be deferred: each thread holds fewer rows);
 * one block of 16 or 8 warps (more registers a thread).  Each shape once;
 * none with FRNN_LPR set, FRNN_BWD_PICK=0 or shared-memory scratch.
 * Returns how many were written to alt (at most cap). */
int plan_backward_alternatives(frnn_ctx *ctx, const frnn_step *step, const target *t, const plan *p,
                               frnn_sizes sz, plan *alt, int cap);
/* One line saying what the plan chose (frnn-bench records it per model). */
void plan_describe(const plan *p, char *buf, size_t size);
/* Kinds of adjoint values when rows are split (plan.c explains). */
enum { KIND_LOCAL, KIND_UNIFORM, KIND_PARTIAL };
/* kind[v] for every node of adj (n_in: its first n_in outputs are gradients
 * of inputs, the rest of states); false when a sum over M must be whole. */
bool split_kinds(const frnn_step *adj, int n_in, uint8_t *kind);
int class_floats(int cls, int64_t M, int64_t N); /* elements of one value of a class */
/* Workspace layout of one call (bytes from the workspace start). */
typedef struct ws_layout {
  int64_t C, n_ckpt;         /* checkpoint interval, number of checkpoints */
  int64_t C2;                /* the backward's second-level interval */
  size_t ckpt, scratch;      /* offsets */
  unsigned bwd_shared;       /* dynamic shared bytes of the backward kernel */
  size_t partial[FRNN_MAX_PORTS]; /* per input: partial gradient, or SIZE_MAX */
  size_t total;
} ws_layout;
/* in_bcast[i]: bit 0 B, bit 1 T, bit 2 H broadcast (size 1) for input i. */
/* Broadcast over H but not over T: in the chunked backward every head adds its
 * gradient into one float32 partial (frnn_ck_chain), which the workspace sizes
 * and the reduction read as a single head. */
static inline bool bcast_over_heads_only(uint8_t bc) { return (bc & 6) == 4; }
void plan_workspace(const plan *p, frnn_sizes sz, const uint8_t *in_bcast, int for_backward,
                    ws_layout *out);

/* ---------------------------------------------------- target.c codegen.c */
/* The toolkit the lowering builds kernels with: an LLVM context, module,
 * builder and NVPTX target machine per compilation, NVVM helpers, and
 * verify -> libdevice -> O3 -> PTX.  Notes: docs/notes-codegen.md.
 *
 * LLVM handles are declared as llvm-c declares them (an identical repeated
 * typedef is valid C11), so this header needs no LLVM include path; files
 * that call LLVM directly include <llvm-c/Core.h> as well. */
typedef struct LLVMOpaqueContext *LLVMContextRef;
typedef struct LLVMOpaqueModule *LLVMModuleRef;
typedef struct LLVMOpaqueBuilder *LLVMBuilderRef;
typedef struct LLVMOpaqueType *LLVMTypeRef;
typedef struct LLVMOpaqueValue *LLVMValueRef;
typedef struct LLVMOpaqueBasicBlock *LLVMBasicBlockRef;
typedef struct LLVMOpaqueTargetMachine *LLVMTargetMachineRef;

/* A GPU target: what NVPTX is asked for and what a plan may assume. */
typedef struct target {
  char arch[16];              /* "sm_90": CPU name for LLVM and ptxas */
  int sm;                     /* 90 */
  char features[16];          /* "+ptx80" */
  int ptx_version;            /* 80 = PTX ISA 8.0 */
  int max_regs_per_thread;    /* 255 */
  int max_shared_bytes_optin; /* per block, with the opt-in attribute */
  int warp;                   /* 32 */
} target;

/* `arch` NULL means "sm_90".  Only sm_80 sm_86 sm_89 sm_90 sm_90a are
 * accepted (LLVM aborts the process on CPUs it does not know): anything
 * else is FRNN_E_UNSUPPORTED with a message naming that list. */
frnn_status target_parse(frnn_ctx *ctx, const char *arch, target *out);

/* One compilation.  Not thread-safe; separate codegens may run in parallel
 * (each has its own LLVMContext).  The struct must stay at its address from
 * cg_begin to cg_dispose: the diagnostic handler points at it.
 * Errors are sticky: a helper misused, or an LLVM error diagnostic, bumps
 * n_errors and keeps the first message; building may go on (helpers return
 * an undef of the right type) and cg_finish fails with that message. */
typedef struct codegen {
  LLVMContextRef llc;       /* fresh per compilation */
  LLVMModuleRef mod;        /* triple and data layout set */
  LLVMBuilderRef b;         /* cg_kernel leaves it at the kernel's entry */
  LLVMTargetMachineRef tm;  /* O3, for this target */
  frnn_ctx *ctx;            /* where cg_begin/cg_finish report failures */
  target tgt;               /* copy of the target */
  LLVMValueRef fn;          /* the kernel being built (last cg_kernel) */
  bool accurate;            /* math: libdevice __nv_* (true) or approx PTX */
  bool ftz;                 /* kernels flush f32 subnormals; nvvm-reflect-ftz */
  bool div_full;            /* cg_fdiv as div.full.f32 (not accurate; plan.div_full) */
  bool need_libdevice;      /* set by helpers that call __nv_* */
  int n_errors;             /* LLVM error diagnostics + helper misuse */
  char first_error[1024];   /* the first of them */
  /* cached types; t_ptr generic (addrspace 0), t_gptr global (1),
   * t_sptr shared (3) */
  LLVMTypeRef t_void, t_i1, t_i32, t_i64, t_f32, t_bf16, t_f16, t_f64;
  LLVMTypeRef t_ptr, t_gptr, t_sptr;
} codegen;

/* Set accurate/ftz after cg_begin, before building.  module_name may be
 * NULL.  On failure cg is still safe to cg_dispose. */
frnn_status cg_begin(frnn_ctx *ctx, const target *t, const char *module_name, codegen *cg);
/* Verify; link libdevice when a helper needed it ($FRNN_LIBDEVICE, else the
 * toolkit's); internalise non-kernel functions; O3; then *text_out = PTX
 * (emit_llvm 0), optimised LLVM IR (1) or IR as built (2), malloc'd and
 * NUL-terminated (free with free/frnn_free).  FRNN_E_LLVM with the
 * verifier's message and the bad function's IR, or LLVM's first error. */
frnn_status cg_finish(codegen *cg, int emit_llvm, char **text_out);
/* Frees every handle; safe after any failure, idempotent (zeroes *cg). */
void cg_dispose(codegen *cg);
/* Record a misuse (printf-style) as a sticky error. */
void cg_error(codegen *cg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A kernel (calling convention PTX_Kernel -> .entry) returning void, with
 * an entry block where the builder is left.  max_threads > 0 -> .maxntid
 * (launches with more threads fail); min_blocks > 0 -> .minnctapersm. */
LLVMValueRef cg_kernel(codegen *cg, const char *name, LLVMTypeRef *param_types, int n,
                       int max_threads, int min_blocks);
void cg_param_noalias(codegen *cg, LLVMValueRef fn, int i);  /* no other param aliases it */
void cg_param_readonly(codegen *cg, LLVMValueRef fn, int i); /* with noalias: ld.global.nc */
LLVMValueRef cg_param(codegen *cg, int i); /* of the current kernel */

/* Special registers (i32) and warp/block primitives.  Shuffles are
 * full-warp (member mask 0xffffffff): all 32 lanes must execute them;
 * width (power of two <= 32) splits the warp into segments. */
LLVMValueRef cg_tid_x(codegen *cg);
LLVMValueRef cg_ntid_x(codegen *cg);
LLVMValueRef cg_ctaid_x(codegen *cg);
LLVMValueRef cg_ctaid_y(codegen *cg);
LLVMValueRef cg_ctaid_z(codegen *cg);
LLVMValueRef cg_nctaid_x(codegen *cg);
void cg_barrier(codegen *cg); /* bar.sync 0 */
LLVMValueRef cg_shfl_bfly_f32(codegen *cg, LLVMValueRef v, int lane_mask, int width);
/* The sum of v over each aligned group of `lanes` lanes (a power of two up
 * to 32), in every lane of the group: a butterfly. */
LLVMValueRef cg_sum_lanes_f32(codegen *cg, LLVMValueRef v, int lanes);
LLVMValueRef cg_shfl_down_f32(codegen *cg, LLVMValueRef v, int delta, int width);
/* src_lane: i32, lane within the segment */
LLVMValueRef cg_shfl_idx_f32(codegen *cg, LLVMValueRef v, LLVMValueRef src_lane, int width);

/* Static shared array (internal, undef: zero it in the kernel, 16-aligned)
 * and the dynamic shared area (extern, [0 x float], 16-aligned; size at
 * launch).  Both are ptr addrspace(3). */
LLVMValueRef cg_shared_array(codegen *cg, const char *name, LLVMTypeRef elem, int64_t count);
LLVMValueRef cg_dynamic_shared(codegen *cg, const char *name);
/* sm_90 clusters: a barrier of every thread of the cluster (release/acquire),
 * and the generic address of `shared` (an addrspace(3) global) in the block
 * of cluster rank `rank` (i32), for ordinary loads. */
void cg_cluster_barrier(codegen *cg);
LLVMValueRef cg_cluster_shared(codegen *cg, LLVMValueRef shared, LLVMValueRef rank);

/* f32 math.  Approximate mode: ex2.approx.ftz(x*log2e), lg2.approx*ln2,
 * tanh.approx (inline asm); accurate mode: __nv_expf, __nv_logf,
 * __nv_tanhf.  Both: sqrt.rn, rsqrt.approx, __nv_powf, fma.rn.
 * cg_fmax/cg_fmin: a+b if either is NaN, else the larger/smaller (ops.c). */
LLVMValueRef cg_exp(codegen *cg, LLVMValueRef x);
LLVMValueRef cg_log(codegen *cg, LLVMValueRef x);
LLVMValueRef cg_sqrt(codegen *cg, LLVMValueRef x);
LLVMValueRef cg_rsqrt(codegen *cg, LLVMValueRef x);
LLVMValueRef cg_tanh(codegen *cg, LLVMValueRef x);
LLVMValueRef cg_fabs(codegen *cg, LLVMValueRef x);
LLVMValueRef cg_fmax(codegen *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fmin(codegen *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_pow(codegen *cg, LLVMValueRef x, LLVMValueRef y);
LLVMValueRef cg_fma(codegen *cg, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);
/* Loop metadata on a loop's back edge: unroll count times (1: never). */
void cg_unroll(codegen *cg, LLVMValueRef br, int count);
/* Tensor cores: x as hi + lo TF32 bit patterns (i32), and c += a b by one
 * warp-wide mma.sync m16n8k8 (A row-major, B column-major, C float32). */
void cg_split_tf32(codegen *cg, LLVMValueRef x, LLVMValueRef *hi, LLVMValueRef *lo);
void cg_mma_tf32(codegen *cg, LLVMValueRef const a[4], LLVMValueRef const b[2], LLVMValueRef c[4]);
void cg_mma_f64(codegen *cg, LLVMValueRef const a[4], LLVMValueRef const b[2], LLVMValueRef c[4]);
/* Two float32 values as three bf16x2 parts, hi + mid + lo exactly (exact:
 * bfloat16 already, hi alone), and c += a b by mma.sync m16n8k16 bf16
 * (A 4 bf16x2 registers, B 2, C float32 4). */
void cg_split_bf16x3(codegen *cg, LLVMValueRef x0, LLVMValueRef x1, bool exact, LLVMValueRef part[3]);
void cg_mma_bf16(codegen *cg, LLVMValueRef const a[4], LLVMValueRef const b[2], LLVMValueRef c[4]);
/* f32 arithmetic with the `contract` flag (fmul+fadd may fuse to fma.rn;
 * same code, same bits).  fdiv is IEEE div.rn. */
LLVMValueRef cg_fadd(codegen *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fsub(codegen *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fmul(codegen *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fdiv(codegen *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fneg(codegen *cg, LLVMValueRef a);
/* Any intrinsic by LLVM name ("llvm.nvvm.fma.rn.f"; overloaded ones by base
 * name plus overload types: "llvm.fabs", {f32}).  Unknown: sticky error. */
LLVMValueRef cg_intrinsic(codegen *cg, const char *name, LLVMTypeRef *overloads, int n_over,
                          LLVMValueRef *args, int n_args);

/* Constants and the little integer/control glue a kernel needs. */
LLVMValueRef cg_f32(codegen *cg, double v);
LLVMValueRef cg_i32(codegen *cg, int64_t v);
LLVMValueRef cg_i64(codegen *cg, int64_t v);
LLVMValueRef cg_add(codegen *cg, LLVMValueRef a, LLVMValueRef b); /* integer */
LLVMValueRef cg_mul(codegen *cg, LLVMValueRef a, LLVMValueRef b); /* integer */
LLVMValueRef cg_ult(codegen *cg, LLVMValueRef a, LLVMValueRef b); /* i1 */
LLVMValueRef cg_select(codegen *cg, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_zext64(codegen *cg, LLVMValueRef v);
LLVMBasicBlockRef cg_block(codegen *cg, const char *name); /* in the kernel */
void cg_at(codegen *cg, LLVMBasicBlockRef bb);            /* builder to its end */
void cg_br(codegen *cg, LLVMBasicBlockRef bb);
void cg_cond_br(codegen *cg, LLVMValueRef c, LLVMBasicBlockRef t, LLVMBasicBlockRef f);
void cg_ret(codegen *cg);

/* Memory.  cg_gep: &base[idx] (inbounds) over elements of type elem.
 * cg_load_elem: base[idx] of a tensor of dtype dt (TD_F32/BF16/F16/F64),
 * widened/narrowed to f32; cg_store_elem rounds (RNE) to dt. */
LLVMValueRef cg_gep(codegen *cg, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef idx);
LLVMValueRef cg_load(codegen *cg, LLVMTypeRef ty, LLVMValueRef ptr);
void cg_store(codegen *cg, LLVMValueRef v, LLVMValueRef ptr);
LLVMValueRef cg_load_elem(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt);
/* An element as stored (dt's own type: "raw"), loaded by inline PTX
 * (ld.global.nc) that stays where it is written: LLVM moves neither it nor,
 * merging it with another load behind a phi, a load from a loop's bottom to
 * its top, next to its use (lower_llvm.c, prefetch).  The memory must not
 * change during the kernel.  cg_raw_to_f32 widens (narrows) a raw value to
 * f32 as cg_load_elem does; cg_raw_type is dt's type. */
LLVMValueRef cg_load_raw_opaque(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt);
/* The same from an address (i64, cg_elem_addr: element idx64 of base).
 * cg_opaque_i64: v through an inline PTX mov, which LLVM cannot see into: a
 * chain of addresses a step apart stays a chain, not one address plus
 * loop-invariant multiples of the step hoisted into registers. */
LLVMValueRef cg_load_raw_at(codegen *cg, LLVMValueRef addr, enum tdtype dt);
LLVMValueRef cg_elem_addr(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt);
LLVMValueRef cg_opaque_i64(codegen *cg, LLVMValueRef v);
LLVMValueRef cg_raw_to_f32(codegen *cg, LLVMValueRef v, enum tdtype dt);
LLVMTypeRef cg_raw_type(codegen *cg, enum tdtype dt);
/* A hint: bring the line holding element idx64 of a global array into L1
 * (prefetch.global.L1; no register, no fault). */
void cg_prefetch_elem(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt);
/* The same into L2 (prefetch.global.L2). */
void cg_prefetch_elem_l2(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt);
/* 4 bytes global -> shared by cp.async (0 where ok is false), and the wait
 * for all of this thread's (a barrier then publishes them to the block). */
void cg_copy_async4(codegen *cg, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef ok);
void cg_copy_async16(codegen *cg, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef ok);
void cg_copy_async_wait(codegen *cg);
void cg_copy_async_commit(codegen *cg);
void cg_copy_async_wait_group(codegen *cg, int pending);
/* The start of a kernel of a guarded module (lower_spec.guard): it returns
 * at once unless the call's flag (an i32 in global memory, written by the
 * chunked forward; a NULL pointer: no flag) says its path is the one taken.
 * Uniform over the grid, so before any barrier. */
void cg_guard(codegen *cg, LLVMValueRef flag, int guard);
void cg_store_elem(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt,
                   LLVMValueRef f32);
/* The same where pred (i1) holds: a predicated store, no branch. */
void cg_store_elem_if(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt, LLVMValueRef f32,
                      LLVMValueRef pred);
/* Vectors: n elements of dt side by side (n a power of two, n x the
 * element's bytes at most VEC_ALIGN, the first element's address a multiple
 * of that).  As loaded they are words, 2-byte elements two to a 32-bit word
 * (the lower element in the low half), others one a word, so that a queue
 * of them takes a register a word (lower_llvm.c, prefetch):
 *   cg_vec_words     how many words n elements make;
 *   cg_word_type     their type;
 *   cg_load_words_at n elements from address addr (ld.global.nc, opaque as
 *                    cg_load_raw_at), into words[];
 *   cg_word_to_f32   element k of the vector, from its word w;
 *   cg_load_vec_elems n elements from element idx64 of base, as f32 (an
 *                    ordinary load);
 *   cg_store_vec_if  n f32 values stored as dt from element idx64 of base
 *                    where pred holds (NULL: always): one PTX store. */
int cg_vec_words(enum tdtype dt, int n);
LLVMTypeRef cg_word_type(codegen *cg, enum tdtype dt, int n);
void cg_load_words_at(codegen *cg, LLVMValueRef addr, enum tdtype dt, int n, LLVMValueRef *words);
LLVMValueRef cg_word_to_f32(codegen *cg, LLVMValueRef w, enum tdtype dt, int n, int k);
void cg_load_vec_elems(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt, int n, LLVMValueRef *f32);
void cg_store_vec_if(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt, int n,
                     const LLVMValueRef *f32, LLVMValueRef pred);

/* Tests and CI only: run $FRNN_PTXAS (else /usr/local/cuda/bin/ptxas)
 * -arch=<arch> -v on `ptx`.  *report = its output (registers, spills;
 * malloc'd) whether or not it accepts.  FRNN_E_UNSUPPORTED when ptxas is
 * absent, FRNN_E_LLVM when it rejects the PTX. */
frnn_status cg_ptxas_check(frnn_ctx *ctx, const char *ptx, const char *arch, char **report);

/* ------------------------------------------------------- cuda.c cache.c */
/* cuda.c - the CUDA driver, dlopen'ed at first use ("libcuda.so.1", or the
 * path in $FRNN_LIBCUDA) and fetched through cuGetProcAddress_v2 by base name
 * with version 13000 into a function table that is immutable once loaded.
 * Every call that can fail returns FRNN_E_NO_GPU (no driver or device) or
 * FRNN_E_CUDA with "what(detail): CUDA_ERROR_xxx: driver text" in the
 * context.  Calls on memory, modules, streams and events need a current
 * context: bracket them with cuda_enter / cuda_leave.  Nothing here
 * synchronises unless its name says so.  The handle types are spelled as
 * cuda.h spells them (C11 allows a repeated typedef of the same type), so
 * that this header does not need cuda.h. */
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;

/* Load the driver once per process (thread-safe) and cuInit it; OK when a
 * device is usable, else FRNN_E_NO_GPU with the reason.  Every cuda_* call
 * below does this first. */
frnn_status cuda_load(frnn_ctx *ctx);

typedef struct cuda_scope {
  CUcontext pushed; /* the primary context cuda_enter pushed, or NULL */
} cuda_scope;
/* Make a context current on this thread.  The caller's current context is
 * used when there is one on device `device_ordinal` (any device if
 * device_ordinal < 0); otherwise the device's primary context (device 0 if
 * device_ordinal < 0) is pushed.  Primary contexts are retained once per
 * process and never released, so modules stay valid across scopes. */
frnn_status cuda_enter(frnn_ctx *ctx, int device_ordinal, cuda_scope *scope);
void cuda_leave(cuda_scope *scope); /* pops what cuda_enter pushed */
/* The thread's current context (NULL if none). */
frnn_status cuda_current_context(frnn_ctx *ctx, CUcontext *out);

/* Load a module into the current context: PTX (is_cubin 0; NUL-terminated
 * within len or not, it is copied if needed) or a cubin image.  *load_ms
 * (may be NULL) gets the wall time of the load.  A failure's message holds
 * the driver's JIT error log. */
frnn_status cuda_module_load(frnn_ctx *ctx, const char *image, size_t len, int is_cubin,
                             CUmodule *out, double *load_ms);
void cuda_module_unload(CUmodule m); /* NULL is fine */
/* Compile PTX into a cubin for the current context's device with the
 * driver's linker (cuLinkCreate/AddData/Complete); *cubin is a copy owned by
 * the caller (free()) of *size bytes.  Errors carry the linker's log. */
frnn_status cuda_link_ptx_to_cubin(frnn_ctx *ctx, const char *ptx, size_t len, char **cubin,
                                   size_t *size);
/* Cache payload kind of the cubins the driver makes for a device:
 * "cubin-sm_90-driver13000". */
frnn_status cuda_cubin_kind(frnn_ctx *ctx, int device_ordinal, char *buf, size_t size);
frnn_status cuda_function(frnn_ctx *ctx, CUmodule m, const char *name, CUfunction *out);
/* Value of a CU_FUNC_ATTRIBUTE_* (registers, static shared bytes...). */
frnn_status cuda_function_attribute(frnn_ctx *ctx, CUfunction f, int attribute, int *value);
enum { CUDA_FUNC_LOCAL_BYTES = 3 }; /* CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: local memory per thread */
/* Launch on `stream` (NULL: the legacy default stream); no synchronisation.
 * cluster_x > 1: blocks x..x+cluster_x-1 form a thread-block cluster
 * (cuLaunchKernelEx; grid x must be a multiple).  shared_bytes above 48 KiB
 * first raise the function's dynamic shared memory limit
 * (cuFuncSetAttribute).  kernel_name is for messages. */
frnn_status cuda_launch(frnn_ctx *ctx, CUfunction f, const char *kernel_name,
                        const unsigned grid[3], const unsigned block[3], unsigned cluster_x,
                        unsigned shared_bytes, CUstream stream, void **params);

/* Helpers for tests and tools.  async nonzero: enqueue on `stream` (host
 * memory should then be pinned to be truly asynchronous); zero: synchronous
 * call, `stream` ignored. */
frnn_status cuda_malloc(frnn_ctx *ctx, size_t bytes, CUdeviceptr *out);
frnn_status cuda_free(frnn_ctx *ctx, CUdeviceptr p); /* 0 is fine */
frnn_status cuda_memcpy_htod(frnn_ctx *ctx, CUdeviceptr dst, const void *src, size_t bytes,
                             CUstream stream, int async);
frnn_status cuda_memcpy_dtoh(frnn_ctx *ctx, void *dst, CUdeviceptr src, size_t bytes,
                             CUstream stream, int async);
frnn_status cuda_memset_d8(frnn_ctx *ctx, CUdeviceptr dst, unsigned char value, size_t bytes,
                           CUstream stream, int async);
frnn_status cuda_event_create(frnn_ctx *ctx, CUevent *out);
void cuda_event_destroy(CUevent e); /* NULL is fine */
frnn_status cuda_event_record(frnn_ctx *ctx, CUevent e, CUstream stream);
frnn_status cuda_event_sync(frnn_ctx *ctx, CUevent e);
frnn_status cuda_event_elapsed(frnn_ctx *ctx, CUevent start, CUevent end, float *ms);
frnn_status cuda_stream_sync(frnn_ctx *ctx, CUstream stream);
frnn_status cuda_ctx_sync(frnn_ctx *ctx);
/* Value of a CU_DEVICE_ATTRIBUTE_* of a device (no context needed). */
frnn_status cuda_device_attribute(frnn_ctx *ctx, int device_ordinal, int attribute, int *value);
typedef struct cuda_device_info {
  char name[256];
  int cc_major, cc_minor;  /* compute capability */
  int sm_count;            /* multiprocessors */
  int max_shared_optin;    /* bytes of shared memory per block, with opt-in */
  int regs_per_sm;         /* 32-bit registers per multiprocessor */
  size_t total_mem;        /* bytes of device memory */
} cuda_device_info;
frnn_status cuda_device_info_get(frnn_ctx *ctx, int device_ordinal, cuda_device_info *out);
frnn_status cuda_device_count(frnn_ctx *ctx, int *count);
frnn_status cuda_mem_get_info(frnn_ctx *ctx, size_t *free_bytes, size_t *total_bytes);
frnn_status cuda_driver_version(frnn_ctx *ctx, int *version); /* 13000 for CUDA 13.0 */

/* cache.c - the on-disk compilation cache, with a bounded in-process cache
 * in front (thread-safe).  Directory: $FRNN_CACHE_DIR, else
 * $XDG_CACHE_HOME/frnn, else $HOME/.cache/frnn, created on demand.  One file
 * per key, named by two 64-bit hashes of the key text; it holds a magic, the
 * format version, the whole key text (compared on read), the payload length
 * and checksum, then the payload.  Writes are atomic (temp file, fsync,
 * rename); a damaged entry reads as CACHE_CORRUPT and is deleted. */
#define FRNN_CACHE_FORMAT 1
typedef struct cache_key {
  uint64_t graph_hash; /* canonical hash of the step */
  const char *spec;    /* specialisation as text: M, N, dtypes, broadcast, gradients */
  const char *arch;    /* target: "sm_90" */
  const char *kind;    /* payload: "ptx", "cubin-sm_90-driver13000" */
} cache_key; /* the LLVM version and FRNN_CACHE_FORMAT are added by cache.c */
typedef enum cache_result {
  CACHE_MISS,    /* not cached */
  CACHE_MEMORY,  /* found in this process's cache */
  CACHE_DISK,    /* read from the directory */
  CACHE_CORRUPT, /* a damaged entry was found and deleted: treat as a miss */
} cache_result;
/* Look up `key`.  FRNN_OK whatever was found (see *how); on a hit *payload
 * is a copy the caller frees (free()), NUL-terminated after *len bytes, else
 * NULL.  Fails only on bad arguments or lack of memory. */
frnn_status cache_get(frnn_ctx *ctx, const cache_key *key, char **payload, size_t *len,
                      cache_result *how);
/* Store `key` -> payload in memory and on disk.  FRNN_E_IO (message in ctx,
 * which may be NULL) when the directory cannot be created or written: the
 * caller may ignore it, later lookups in this process still hit memory. */
frnn_status cache_put(frnn_ctx *ctx, const cache_key *key, const char *payload, size_t len);
/* The cache directory now (from the environment), FRNN_E_IO if none. */
frnn_status cache_dir(char *buf, size_t size);
/* Path of the file `key` is stored in. */
frnn_status cache_entry_path(const cache_key *key, char *buf, size_t size);
void cache_clear_memory(void); /* empty the in-process cache (tests) */

/* ----------------------------------------------------------- lower_llvm.c */
/* What a compiled module is specialised for besides M and N: the dtype of
 * every tensor (dt_gin is float32 where the gradient goes to a partial in
 * the workspace) and which inputs are broadcast (bit 0 B, 1 T, 2 H). */
typedef struct lower_spec {
  enum tdtype dt_in[FRNN_MAX_PORTS], dt_state[FRNN_MAX_PORTS], dt_out[FRNN_MAX_PORTS],
      dt_final[FRNN_MAX_PORTS], dt_gout[FRNN_MAX_PORTS], dt_gfinal[FRNN_MAX_PORTS],
      dt_gin[FRNN_MAX_PORTS], dt_gstate[FRNN_MAX_PORTS];
  uint8_t in_bcast[FRNN_MAX_PORTS];
  uint32_t contig[8]; /* by tensor role (CONTIG_*), bit i: port i's tensor has
                         unit column stride and rows of N (or is a column) */
  uint32_t aligned[8]; /* the same, and its first element and B, T and H strides
                          are multiples of VEC_ALIGN bytes: a thread's adjacent
                          rows of it move as one vector access (lower_llvm.c) */
  int guard;          /* GUARD_*: every kernel takes the call's flag, last */
} lower_spec;
/* A step whose chunked kernels are guarded (chunk_gpu.guard) runs both
 * kernel sets on one call: the chunked forward sets the flag (the first
 * GUARD_BYTES of the workspace) where a decay factor is below CK_GUARD_MIN
 * or not a number; then the chunked kernels run while it is 0 and the
 * recurrent ones (the fallback) once it is set. */
enum { GUARD_NONE, GUARD_CHUNKED, GUARD_FALLBACK };
enum { GUARD_BYTES = 256 };
/* The workspace's alignment, checked by frnn_gpu_forward and _backward:
 * the chunked backward copies its checkpoints 16 bytes at a time. */
enum { WORKSPACE_ALIGN = 16 };
/* The largest vector access the kernels make, and the alignment
 * lower_spec.aligned promises. */
enum { VEC_ALIGN = 16 };
/* Below it, the decay's gradient (the kernels get d * dd, the chain divides
 * by d) loses float32's accuracy to the cancellation in d * dd, whose error
 * is about float32's epsilon times the chunk's 32 terms: 2e-6 / d relative.
 * Measured on the H100 (retention, 64 x 64, T = 300, grad gamma): 4e-6 to
 * 2.2e-5 with gamma in [0.02, 0.2) and up to 3.7e-5 in [0.13, 0.3), over
 * the 1e-5 bound; about 1e-6 in [0.9, 0.99). */
#define CK_GUARD_MIN 0.5
enum { CONTIG_IN, CONTIG_STATE, CONTIG_OUT, CONTIG_FINAL, CONTIG_GOUT, CONTIG_GFINAL, CONTIG_GIN,
       CONTIG_GSTATE };
enum { KERNEL_FWD = 1, KERNEL_BWD = 2, KERNEL_REDUCE_F32 = 4, KERNEL_REDUCE_BF16 = 8,
       KERNEL_REDUCE_F16 = 16 };
extern const char *const reduce_kernel_names[3]; /* by tdtype F32, BF16, F16 */
/* Outputs along n that a thread of frnn_reduce_* takes where a thread sums
 * an output (H100, Mamba-2's B and C, 1 M outputs of one term each: 22 us a
 * reduction at one output a thread, most of it index arithmetic). */
enum { REDUCE_ROW = 4 };
/* Add the kernels selected by `kernels` for step s (adjoint adj) to cg's
 * module.  Kernel parameters: see lower_forward / lower_backward. */
frnn_status lower_module(codegen *cg, const plan *p, const lower_spec *spec, const frnn_step *s,
                         const frnn_step *adj, unsigned kernels);

/* A tensor argument of a kernel: TENSOR_PARAMS parameters (a global
 * pointer, then the strides B T H M N as i64), appended to types at *n. */
enum { TENSOR_PARAMS = 6 };
void tensor_param_types(codegen *cg, LLVMTypeRef *types, int *n);
/* One elementwise op on f32 values (b, c unused by unary ops; exponent:
 * pow's constant).  lower_chunked.c evaluates step nodes with it too. */
LLVMValueRef lower_elementwise(codegen *cg, frnn_op op, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c,
                               double exponent);
/* The reduce kernels selected by `kernels` (KERNEL_REDUCE_*): partial
 * float32 gradients [Bp][Tp][H][m][n] summed over Bp and/or H into a tensor. */
void lower_reduce_kernels(codegen *cg, unsigned kernels, int guard);

/* ---------------------------------------------------------- lower_chunked.c */
/* The chunked kernels' shape for one step and M x N (docs/design-chunked.md):
 * chunks of L steps; a block holds BM rows of the state (MB blocks a head:
 * the rows of S evolve independently, so only sums over M cross blocks, and
 * those go to per-block partial gradients); products from shared memory on
 * tensor cores (mma) where their sizes allow, else in 4 x 4 thread tiles.
 * Shared floats: offsets of each array. */
enum { CK_THREADS = 256 };
typedef struct ck_layout {
  int S, dS, Bx, R[CK_MAX_UPD], C[CK_MAX_UPD], W[CK_MAX_LIN], G[CK_MAX_LIN], A, Ag, Y[FRNN_MAX_PORTS], RUN, SC,
      EL, FLAG, Wd[CK_MAX_LIN], Re[CK_MAX_UPD], SCA,
      TI, XT; /* the low-rank class: (I - G_ab)^-1 [L][sl], the solve's right side [L][sm]; -1: none */
  int floats;
} ck_layout;
enum { CK_RUN_F32, CK_RUN_F64, CK_RUN_SPLIT, CK_RUN_DOT2 };
/* How the float64 products' float32 operands become float64: cvt.f64.f32,
 * or A's by integer operations on its bits (scaled by 2^-896, the sum
 * rescaled); NONE: a timing probe, results wrong. */
enum { CK_CVT_F2F, CK_CVT_INT_A, CK_CVT_NONE };
typedef struct ck_plan {
  int64_t M, N;
  int L, BM, MB, Mp, Np, nd; /* Mp, Np: BM, N rounded up to 4; nd: the decay's columns (1 or N) */
  bool col;                  /* the decay varies along M (a column; nd 1): its ratios ride on C and G */
  int ss, sn, sm, sl, sd;    /* row strides in shared memory (odd, or 4 mod 32 for mma): S and dS, rows [N],
                                columns [BM], [L] rows (A), the log decay */
  int threads;               /* per block (CK_THREADS unless FRNN_CK_THREADS) */
  int min_blocks;            /* resident blocks per SM the kernels are built for */
  double split_max;          /* lower_chunked.c's decay_split bound on running log decays */
  bool split;                /* decay_split compiled in (row decays) */
  bool fused;                /* one block a head: frnn_ck_bwd runs the chain too */
  bool split_k;              /* products with fewer tiles than threads split their sums */
  bool mma;                  /* products on tensor cores (3xTF32) where their sizes allow */
  bool tf32;                 /* FRNN_CK_TF32=1: one TF32 product (not float32's precision; opt-in) */
  bool f64;                  /* products in float64 on the tensor cores (sm_90: mma .f64), not 3xTF32 */
  bool bf16x3;               /* FRNN_CK_PRODUCTS=bf16x3: products in three bfloat16 parts a float32 operand
                                (mma m16n8k16) where K is a multiple of 16, not float64 */
  int bf16_parts[2];         /* A's and B's parts taken (3; fewer: a timing probe, results wrong) */
  int run_sum;               /* CK_RUN_*: how the end state's sum over the rows of dS * S is formed */
  int cvt;                   /* CK_CVT_*: the float64 products' operand conversions (FRNN_CK_CVT) */
  unsigned long tf32x3_sites; /* where f64: product sites (bits) run in 3xTF32 instead */
  int mma_tiles;             /* their 16 x 8 tiles per warp, at most */
  int threads_fwd, mma_tiles_fwd; /* the forward kernel's own (threads: the others') */
  int mma_big_fwd, mma_big;  /* tiles a warp of the products large enough for two such blocks a warp */
  int chain_unroll;          /* the chain kernel's loads unrolled: 1 its sums, 2 its elements too */
  int chain_min_blocks;      /* the chain kernel's resident blocks an SM (its launch bounds) */
  bool sum_parts;            /* the end state's and the gradient-before-the-chunk's products each in one accumulator */
  int ckpt_every;            /* the forward stores a chunk's first state every this many chunks; > 1: the
                                backward recomputes the others, that many chunks at a time */
  int window_steps;          /* the backward runs in windows of about this many steps (whole chunks, at most
                                ckpt_every), each frnn_ck_bwd then frnn_ck_chain: the terms' gradients take
                                arrays of a window's steps; 0: one window, or ckpt_every chunks (ck_window_chunks) */
  int unroll_fwd, unroll_bwd; /* their k-loops unrolled this many times where a warp has 1 or 2 tiles */
  bool spread;               /* the backward's independent small products start on different warps */
  bool spread_fwd;           /* the forward's (its phases' attention matrices side by side) */
  bool unroll_loads_fwd, unroll_loads_bwd; /* their elementwise passes unrolled: a pass's global loads in
                                flight at once (FRNN_CK_UNROLL_LOADS: "0", "1" or "fwd,bwd") */
  bool ld_in_chain;          /* a row decay's log decay gradient formed by the chain kernel (chain_log_decay),
                                the backward storing only each chunk's RUN (FRNN_CK_LD_CHAIN=0: in the backward) */
  int ld_chain_unroll;       /* chain_log_decay's steps unrolled this many times (their loads in flight) */
  int ckpt_group;            /* the forward's checkpoint stores: elements a thread loaded, then stored, at a
                                time (FRNN_CK_CKPT_GROUP; 1: one at a time, under its guard) */
  int early_loads;           /* the backward's copies of a chunk's first state: 1, before its term arrays;
                                2, the previous chunk's asked of L2 (FRNN_CK_EARLY_LOADS) */
  bool wide_copies;          /* the backward's copies of the checkpoints 16 bytes at a time where rows
                                allow (FRNN_CK_WIDE_COPIES=0: 4) */
  bool late_state_wait;      /* the backward waits for that copy only before the products that read the
                                state, after the attention matrices' phases (FRNN_CK_STATE_WAIT=0: before
                                them, with the term arrays) */
  bool bw_pairs;             /* the backward's attention matrices and their gradients, every (lin, update)
                                pair's, in two phases (else a pair at a time); FRNN_CK_BW_PAIRS=0: never */
  int n_sc, n_sc_adj;        /* scalar nodes materialised per step (step, adjoint) */
  ck_layout fw, bw;
  unsigned fwd_smem, bwd_smem, chain_smem; /* bytes */
} ck_plan;
/* Fit a plan into max_shared bytes per block for compute capability sm
 * (90: float64 products on the tensor cores); FRNN_E_UNSUPPORTED if none. */
frnn_status ck_plan_make(frnn_ctx *ctx, const frnn_step *s, const chunk_gpu *g, int64_t M, int64_t N,
                         int sm, int max_shared, ck_plan *out);
enum { CK_KERNEL_FWD = 1, CK_KERNEL_BWD = 2 }; /* BWD: frnn_ck_bwd and frnn_ck_chain */
/* Floats the checkpoints hold per chunk beside its state: the low-rank
 * class's columns X [L][M] and inverse [L][L] (the backward loads them). */
int64_t ck_rank_floats(const ck_plan *p, const chunk_gpu *g);
/* Floats a step of seed q's array takes per (part, b, h): M for a column's,
 * N for a row's, 1 for a scalar (the backward sums it over the columns). */
int64_t ck_seed_width(const ck_plan *p, const chunk_gpu *g, int q);
/* Add the chunked kernels (frnn_ck_fwd; frnn_ck_bwd, frnn_ck_chain) to cg's module. */
frnn_status lower_chunked_module(codegen *cg, const ck_plan *p, const chunk_gpu *g, const lower_spec *spec,
                                 const frnn_step *s, unsigned kernels);
/* Chunks a backward window takes for a sequence of n_chunks (all where the
 * chain is fused or windows are off; at most ckpt_every where states are
 * sparse). */
int64_t ck_window_chunks(const ck_plan *p, int64_t n_chunks);

/* ------------------------------------------------------------- pipeline.c */
/* Unload every module this context loaded (frnn_ctx_destroy calls it). */
void pipeline_release(frnn_ctx *ctx);

#endif
