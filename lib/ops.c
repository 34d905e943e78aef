/* ops.c - the op table, expanded from ops.def, and each op's float64 value:
 * the semantics that the reference executor runs and every backend matches. */
#include "frnn_internal.h"

#include <math.h>
#include <string.h>

static const op_info op_table[FRNN_OP_COUNT] = {
#define OP(id, spelling, arity, shape, flags) [FRNN_OP_##id] = {spelling, arity, SHAPE_##shape, flags},
#include "ops.def"
#undef OP
};

const op_info *op_get(frnn_op op) {
  return (unsigned)op < FRNN_OP_COUNT ? &op_table[op] : NULL;
}

int op_by_function_name(const char *name, size_t len) {
  for (int op = 0; op < FRNN_OP_COUNT; op++)
    if ((op_table[op].flags & OPF_FUNC) && strlen(op_table[op].spelling) == len &&
        memcmp(op_table[op].spelling, name, len) == 0)
      return op;
  return -1;
}

/* softplus(x) = log(1 + e^x), written so that it neither overflows for large
 * x nor loses precision for very negative x. */
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

double op_eval(frnn_op op, double a, double b, double c) {
  switch (op) {
  case FRNN_OP_ADD: return a + b;
  case FRNN_OP_SUB: return a - b;
  case FRNN_OP_MUL: return a * b;
  case FRNN_OP_DIV: return a / b;
  case FRNN_OP_NEG: return -a;
  case FRNN_OP_EXP: return exp(a);
  case FRNN_OP_LOG: return log(a);
  case FRNN_OP_SQRT: return sqrt(a);
  case FRNN_OP_RSQRT: return 1.0 / sqrt(a);
  case FRNN_OP_ABS: return fabs(a);
  case FRNN_OP_TANH: return tanh(a);
  case FRNN_OP_SIGMOID: return sigmoid(a);
  case FRNN_OP_SOFTPLUS: return softplus(a);
  case FRNN_OP_SILU: return a * sigmoid(a);
  case FRNN_OP_LT: return a < b ? 1.0 : 0.0;
  case FRNN_OP_GT: return a > b ? 1.0 : 0.0;
  case FRNN_OP_LE: return a <= b ? 1.0 : 0.0;
  case FRNN_OP_GE: return a >= b ? 1.0 : 0.0;
  /* max/min: NaN-propagating, unlike fmax/fmin, so that a NaN is never hidden. */
  case FRNN_OP_MAX: return a != a || b != b ? a + b : (a > b ? a : b);
  case FRNN_OP_MIN: return a != a || b != b ? a + b : (a < b ? a : b);
  case FRNN_OP_POW: return pow(a, b);
  case FRNN_OP_WHERE: return a != 0.0 ? b : c;
  case FRNN_OP_BCAST: return a;
  /* Leaves and reductions have no elementwise value. */
  case FRNN_OP_INPUT:
  case FRNN_OP_STATE:
  case FRNN_OP_CONST:
  case FRNN_OP_SUM:
  case FRNN_OP_SUM_M:
  case FRNN_OP_COUNT: break;
  }
  return NAN;
}
