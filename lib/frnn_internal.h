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

/* ---------------------------------------------------------------- print.c */
/* Appends to a growable string; on allocation failure sets *ok = false. */
typedef struct strbuf {
  char *data;
  size_t len, cap;
  bool ok;
} strbuf;
void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --------------------------------------------------------------- tensor.c */
/* A validated tensor seen as 5-D [B,T,H,m,n] (inputs), with stride 0 on
 * every broadcast or absent dimension; states use T stride 0. */
enum tdtype { TD_F32, TD_BF16, TD_F16, TD_F64 };
typedef struct tview {
  char *data;        /* first element (byte_offset applied) */
  enum tdtype dtype;
  int64_t stride[5]; /* in elements; 0 = broadcast */
  int64_t extent[5]; /* the tensor's own sizes (1 where broadcast) */
} tview;

/* What the tensor is for, which fixes its expected shape (SPEC section 3). */
enum tensor_role {
  ROLE_INPUT,      /* [B,T,H,m,n], B/T/H may be 1 */
  ROLE_STATE,      /* [B,H,m,n] */
  ROLE_OUTPUT,     /* [B,T,H,M] or [B,T,H] / [B,T,H,1] */
  ROLE_GRAD_INPUT, /* the input's own shape: [b,t,h,m,n] with b in {1,B}... */
};
/* Check `t` (non-null, device, dtype, ndim, shape, strides, no overlap for
 * written roles) for port `name` of class `cls`; fill `view`.  For
 * ROLE_GRAD_INPUT, `like` is the input whose shape it must have. */
frnn_status tensor_bind(frnn_ctx *ctx, const DLTensor *t, enum tensor_role role,
                        const char *name, int cls, frnn_sizes sz, bool want_device,
                        const tview *like, tview *view);
double tview_load(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j);
void tview_store(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j,
                 double x);
frnn_status sizes_check(frnn_ctx *ctx, frnn_sizes sz);

#endif
