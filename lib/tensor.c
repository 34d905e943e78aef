/* tensor.c - DLTensor validation against a step's signature (SPEC section 3),
 * and element access in any supported dtype as float64.
 *
 * tensor_bind checks one tensor for one role and turns it into a tview: a
 * 5-D [B,T,H,m,n] window whose broadcast, absent and size-1 dimensions have
 * stride 0, so that callers index every tensor with full (b,t,h,i,j).  Each
 * message names the tensor ("input 'k'", "final state 'S'") and says what
 * was expected and what was given. */
#include "frnn_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ descriptions */
static const char *role_prefix(enum tensor_role role) {
  switch (role) {
  case ROLE_INPUT: return "input";
  case ROLE_STATE: return "initial state";
  case ROLE_OUTPUT: return "output";
  case ROLE_GRAD_INPUT: return "gradient of input";
  case ROLE_FINAL_STATE: return "final state";
  case ROLE_GRAD_OUTPUT: return "gradient of output";
  case ROLE_GRAD_FINAL_STATE: return "gradient of final state";
  case ROLE_GRAD_STATE: return "gradient of initial state";
  }
  return "tensor";
}

static bool role_written(enum tensor_role role) {
  return role == ROLE_OUTPUT || role == ROLE_GRAD_INPUT || role == ROLE_FINAL_STATE ||
         role == ROLE_GRAD_STATE;
}

static const char *device_name(DLDeviceType d) {
  switch (d) {
  case kDLCPU: return "kDLCPU";
  case kDLCUDA: return "kDLCUDA";
  case kDLCUDAHost: return "kDLCUDAHost";
  case kDLOpenCL: return "kDLOpenCL";
  case kDLVulkan: return "kDLVulkan";
  case kDLMetal: return "kDLMetal";
  case kDLVPI: return "kDLVPI";
  case kDLROCM: return "kDLROCM";
  case kDLROCMHost: return "kDLROCMHost";
  case kDLExtDev: return "kDLExtDev";
  case kDLCUDAManaged: return "kDLCUDAManaged";
  }
  return "unknown device";
}

static void dtype_name(DLDataType dt, char *buf, size_t size) {
  const char *base = dt.code == kDLInt      ? "int"
                     : dt.code == kDLUInt   ? "uint"
                     : dt.code == kDLFloat  ? "float"
                     : dt.code == kDLBfloat ? "bfloat"
                     : dt.code == kDLComplex ? "complex"
                     : dt.code == kDLOpaqueHandle ? "handle"
                                                  : "code?";
  if (dt.lanes == 1)
    snprintf(buf, size, "%s%u", base, dt.bits);
  else
    snprintf(buf, size, "%s%ux%u", base, dt.bits, dt.lanes);
}

/* "[8,1024,32,1,127]" */
static void shape_text(const int64_t *shape, int ndim, char *buf, size_t size) {
  size_t n = 0;
  n += (size_t)snprintf(buf + n, size - n, "[");
  for (int d = 0; d < ndim && n < size; d++)
    n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? "," : "", (long long)shape[d]);
  if (n < size) snprintf(buf + n, size - n, "]");
}

/* ------------------------------------------------------------------ sizes */
static bool mul_ok(int64_t a, int64_t b, int64_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}

frnn_status sizes_check(frnn_ctx *ctx, frnn_sizes sz) {
  const char *names[5] = {"B", "T", "H", "M", "N"};
  int64_t v[5] = {sz.B, sz.T, sz.H, sz.M, sz.N};
  for (int k = 0; k < 5; k++)
    if (v[k] < 1)
      return diag_fail(ctx, FRNN_E_ARG,
                       "sizes: %s = %lld; B, T, H, M and N must each be at least 1 "
                       "(given B=%lld T=%lld H=%lld M=%lld N=%lld)",
                       names[k], (long long)v[k], (long long)sz.B, (long long)sz.T,
                       (long long)sz.H, (long long)sz.M, (long long)sz.N);
  /* Every product that sizes a tensor or a buffer, in bytes of float64. */
  static const char *const prod[5] = {"B", "B*T", "B*T*H", "B*T*H*M", "B*T*H*M*N"};
  int64_t p = 8;
  for (int k = 0; k < 5; k++)
    if (!mul_ok(p, v[k], &p))
      return diag_fail(ctx, FRNN_E_ARG,
                       "sizes: %s overflows (B=%lld T=%lld H=%lld M=%lld N=%lld): a tensor "
                       "of that many elements cannot be addressed",
                       prod[k], (long long)sz.B, (long long)sz.T, (long long)sz.H,
                       (long long)sz.M, (long long)sz.N);
  int64_t mn;
  if (!mul_ok(sz.M, sz.N, &mn) || !mul_ok(mn, 8, &mn))
    return diag_fail(ctx, FRNN_E_ARG, "sizes: M*N overflows (M=%lld N=%lld)", (long long)sz.M,
                     (long long)sz.N);
  return FRNN_OK;
}

/* ------------------------------------------------------------ the checks */
/* The expected shape of a role: `want` has ndim entries; a dimension with
 * `alt[d]` set may also be 1 (broadcast B/T/H of inputs).  `pattern` names
 * the dimensions ("[B,T,H,1,N]"). */
typedef struct expect {
  int ndim;
  int64_t want[5];
  bool alt[5];
  char pattern[48];
  /* Outputs of class [1,1] also accept the 3-D form. */
  bool scalar_output;
} expect;

static void expect_text(const expect *e, char *buf, size_t size) {
  size_t n = 0;
  n += (size_t)snprintf(buf + n, size - n, "%s = [", e->pattern);
  for (int d = 0; d < e->ndim && n < size; d++)
    n += (size_t)snprintf(buf + n, size - n, "%s%lld%s", d ? "," : "", (long long)e->want[d],
                          e->alt[d] && e->want[d] != 1 ? "|1" : "");
  if (n < size) snprintf(buf + n, size - n, "]");
}

static void make_expect(expect *e, enum tensor_role role, int cls, frnn_sizes sz,
                        const tview *like) {
  memset(e, 0, sizeof *e);
  const char *m = CLASS_HAS_M(cls) ? "M" : "1", *n = CLASS_HAS_N(cls) ? "N" : "1";
  int64_t mv = CLASS_HAS_M(cls) ? sz.M : 1, nv = CLASS_HAS_N(cls) ? sz.N : 1;
  switch (role) {
  case ROLE_INPUT:
    e->ndim = 5;
    snprintf(e->pattern, sizeof e->pattern, "[B,T,H,%s,%s]", m, n);
    e->want[0] = sz.B, e->want[1] = sz.T, e->want[2] = sz.H, e->want[3] = mv, e->want[4] = nv;
    e->alt[0] = e->alt[1] = e->alt[2] = true;
    break;
  case ROLE_GRAD_INPUT:
    e->ndim = 5;
    snprintf(e->pattern, sizeof e->pattern, "the input's shape");
    for (int d = 0; d < 5; d++) e->want[d] = like->extent[d];
    break;
  case ROLE_STATE:
  case ROLE_FINAL_STATE:
  case ROLE_GRAD_FINAL_STATE:
  case ROLE_GRAD_STATE:
    e->ndim = 4;
    snprintf(e->pattern, sizeof e->pattern, "[B,H,%s,%s]", m, n);
    e->want[0] = sz.B, e->want[1] = sz.H, e->want[2] = mv, e->want[3] = nv;
    break;
  case ROLE_OUTPUT:
  case ROLE_GRAD_OUTPUT:
    e->want[0] = sz.B, e->want[1] = sz.T, e->want[2] = sz.H, e->want[3] = mv;
    if (CLASS_HAS_M(cls)) {
      e->ndim = 4;
      snprintf(e->pattern, sizeof e->pattern, "[B,T,H,M]");
    } else {
      e->ndim = 3;
      e->scalar_output = true;
      snprintf(e->pattern, sizeof e->pattern, "[B,T,H]");
    }
    break;
  }
}

static bool shape_matches(const expect *e, const DLTensor *t) {
  int nd = e->ndim;
  if (t->ndim != nd && !(e->scalar_output && t->ndim == 4)) return false;
  for (int d = 0; d < t->ndim; d++) {
    int64_t want = d < nd ? e->want[d] : 1; /* the trailing 1 of [B,T,H,1] */
    if (t->shape[d] != want && !(e->alt[d] && t->shape[d] == 1)) return false;
  }
  return true;
}

/* Whether two different indices of a written tensor could reach the same
 * element.  Fast test: with the dimensions of size > 1 sorted by stride, each
 * stride must exceed the span of the smaller ones.  Layouts that fail it may
 * still be disjoint (interleaved): for host tensors, enumerate the offsets. */
static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

enum overlap { OVERLAP_NONE, OVERLAP_YES, OVERLAP_UNKNOWN, OVERLAP_NOMEM };

static enum overlap self_overlap(const int64_t *shape, const int64_t *stride, int ndim,
                                 bool exhaustive) {
  int64_t sh[8], st[8];
  int n = 0;
  for (int d = 0; d < ndim; d++)
    if (shape[d] > 1) sh[n] = shape[d], st[n] = stride[d], n++;
  /* insertion sort by stride */
  for (int a = 1; a < n; a++)
    for (int b = a; b > 0 && st[b] < st[b - 1]; b--) {
      int64_t x = st[b]; st[b] = st[b - 1]; st[b - 1] = x;
      x = sh[b]; sh[b] = sh[b - 1]; sh[b - 1] = x;
    }
  int64_t span = 0; /* largest offset reachable by the dims so far */
  bool simple = true;
  for (int k = 0; k < n; k++) {
    if (st[k] <= span) simple = false;
    span += st[k] * (sh[k] - 1); /* no overflow: checked by the caller */
  }
  if (simple) return OVERLAP_NONE;
  int64_t count = 1;
  for (int k = 0; k < n; k++) count *= sh[k];
  if (!exhaustive || count > (1 << 22)) return OVERLAP_UNKNOWN;
  int64_t *off = malloc((size_t)count * sizeof *off);
  if (!off) return OVERLAP_NOMEM;
  int64_t idx[8] = {0};
  for (int64_t e = 0; e < count; e++) {
    int64_t o = 0;
    for (int k = 0; k < n; k++) o += idx[k] * st[k];
    off[e] = o;
    for (int k = 0; k < n && ++idx[k] == sh[k]; k++) idx[k] = 0;
  }
  qsort(off, (size_t)count, sizeof *off, cmp_i64);
  enum overlap r = OVERLAP_NONE;
  for (int64_t e = 1; e < count; e++)
    if (off[e] == off[e - 1]) r = OVERLAP_YES;
  free(off);
  return r;
}

frnn_status tensor_bind(frnn_ctx *ctx, const DLTensor *t, enum tensor_role role,
                        const char *name, int cls, frnn_sizes sz, bool want_device,
                        const tview *like, tview *view) {
  char what[FRNN_NAME_MAX + 48];
  snprintf(what, sizeof what, "%s '%s'", role_prefix(role), name ? name : "?");
  if (role == ROLE_GRAD_INPUT && !like)
    return diag_fail(ctx, FRNN_E_ARG, "%s: no input to take the shape of (internal error)", what);
  if (!t) return diag_fail(ctx, FRNN_E_ARG, "%s is NULL", what);
  if (!t->data) return diag_fail(ctx, FRNN_E_ARG, "%s has no data (data is NULL)", what);

  DLDeviceType dev = t->device.device_type;
  if (want_device && dev != kDLCUDA)
    return diag_fail(ctx, FRNN_E_ARG, "%s is on device %s (%d); expected kDLCUDA (GPU memory)",
                     what, device_name(dev), (int)dev);
  if (!want_device && dev != kDLCPU && dev != kDLCUDAHost)
    return diag_fail(ctx, FRNN_E_ARG,
                     "%s is on device %s (%d); expected host memory (kDLCPU or kDLCUDAHost)",
                     what, device_name(dev), (int)dev);

  DLDataType dt = t->dtype;
  char dn[32];
  dtype_name(dt, dn, sizeof dn);
  const char *allowed = want_device ? "float32, bfloat16 or float16"
                                    : "float32, bfloat16, float16 or float64";
  if (dt.lanes != 1)
    return diag_fail(ctx, FRNN_E_ARG, "%s has dtype %s (%u lanes); expected one lane of %s", what,
                     dn, dt.lanes, allowed);
  enum tdtype td;
  if (dt.code == kDLFloat && dt.bits == 32) td = TD_F32;
  else if (dt.code == kDLBfloat && dt.bits == 16) td = TD_BF16;
  else if (dt.code == kDLFloat && dt.bits == 16) td = TD_F16;
  else if (dt.code == kDLFloat && dt.bits == 64 && !want_device) td = TD_F64;
  else return diag_fail(ctx, FRNN_E_ARG, "%s has dtype %s; expected %s", what, dn, allowed);

  expect e;
  make_expect(&e, role, cls, sz, like);
  char exp_s[160], got_s[160];
  expect_text(&e, exp_s, sizeof exp_s);
  if (e.scalar_output) {
    size_t n = strlen(exp_s);
    snprintf(exp_s + n, sizeof exp_s - n, " or [B,T,H,1] = [%lld,%lld,%lld,1]",
             (long long)sz.B, (long long)sz.T, (long long)sz.H);
  }
  if (t->ndim < 0 || t->ndim > 8 || (t->ndim > 0 && !t->shape))
    return diag_fail(ctx, FRNN_E_ARG, "%s has %d dimensions%s; expected %d: %s", what, t->ndim,
                     t->ndim > 0 && !t->shape ? " and no shape (shape is NULL)" : "", e.ndim,
                     exp_s);
  shape_text(t->shape, t->ndim, got_s, sizeof got_s);
  if (t->ndim != e.ndim && !(e.scalar_output && t->ndim == 4))
    return diag_fail(ctx, FRNN_E_ARG, "%s has %d dimensions, shape %s; expected %d: %s", what,
                     t->ndim, got_s, e.ndim, exp_s);
  if (!shape_matches(&e, t)) {
    int d = 0;
    while (d < t->ndim && (t->shape[d] == (d < e.ndim ? e.want[d] : 1) ||
                           (e.alt[d] && t->shape[d] == 1)))
      d++;
    int64_t want = d < e.ndim ? e.want[d] : 1;
    return diag_fail(ctx, FRNN_E_ARG,
                     "%s has shape %s; expected %s (dimension %d is %lld, not %lld%s)", what,
                     got_s, exp_s, d, (long long)t->shape[d], (long long)want,
                     e.alt[d] && want != 1 ? " or 1" : "");
  }

  /* Strides: NULL is compact row-major; a dimension of size 1 has no stride
   * that matters. */
  int64_t stride[8];
  int64_t run = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    stride[d] = t->strides ? t->strides[d] : run;
    run *= t->shape[d];
  }
  int64_t span = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (t->shape[d] == 1) {
      stride[d] = 0;
      continue;
    }
    if (stride[d] < 0)
      return diag_fail(ctx, FRNN_E_ARG,
                       "%s has stride %lld on dimension %d; strides must be non-negative", what,
                       (long long)stride[d], d);
    int64_t reach;
    if (!mul_ok(stride[d], t->shape[d] - 1, &reach) || __builtin_add_overflow(span, reach, &span))
      return diag_fail(ctx, FRNN_E_ARG, "%s has strides too large to address (dimension %d)",
                       what, d);
  }
  int esize = td == TD_F64 ? 8 : td == TD_F32 ? 4 : 2;
  if (!mul_ok(span, esize, &span))
    return diag_fail(ctx, FRNN_E_ARG, "%s has strides too large to address", what);
  char *data = (char *)t->data + t->byte_offset;
  if (want_device && (uintptr_t)data % (uintptr_t)esize)
    return diag_fail(ctx, FRNN_E_ARG,
                     "%s starts at an address not aligned to its %d-byte elements", what, esize);

  if (role_written(role)) {
    for (int d = 0; d < t->ndim; d++)
      if (t->shape[d] > 1 && stride[d] == 0)
        return diag_fail(ctx, FRNN_E_ARG,
                         "%s has stride 0 on dimension %d (of size %lld): it is written, so its "
                         "elements must not share memory",
                         what, d, (long long)t->shape[d]);
    enum overlap ov = self_overlap(t->shape, stride, t->ndim, !want_device);
    if (ov == OVERLAP_NOMEM)
      return diag_fail(ctx, FRNN_E_NOMEM, "out of memory checking the layout of %s", what);
    if (ov != OVERLAP_NONE) {
      char st_s[160];
      shape_text(stride, t->ndim, st_s, sizeof st_s);
      return diag_fail(ctx, FRNN_E_ARG,
                       "%s has shape %s and strides %s, whose elements %s in memory: it is "
                       "written, so each element needs its own memory",
                       what, got_s, st_s, ov == OVERLAP_YES ? "overlap" : "may overlap");
    }
  }

  /* The view: 5-D [B,T,H,m,n]. */
  memset(view, 0, sizeof *view);
  view->data = data;
  view->dtype = td;
  int map[5]; /* view dimension -> tensor dimension, or -1 */
  switch (role) {
  case ROLE_INPUT:
  case ROLE_GRAD_INPUT:
    for (int d = 0; d < 5; d++) map[d] = d;
    break;
  case ROLE_STATE:
  case ROLE_FINAL_STATE:
  case ROLE_GRAD_FINAL_STATE:
  case ROLE_GRAD_STATE:
    map[0] = 0, map[1] = -1, map[2] = 1, map[3] = 2, map[4] = 3;
    break;
  case ROLE_OUTPUT:
  case ROLE_GRAD_OUTPUT:
    map[0] = 0, map[1] = 1, map[2] = 2, map[3] = t->ndim == 4 ? 3 : -1, map[4] = -1;
    break;
  }
  for (int d = 0; d < 5; d++) {
    view->extent[d] = map[d] < 0 ? 1 : t->shape[map[d]];
    view->stride[d] = map[d] < 0 ? 0 : stride[map[d]];
  }
  return FRNN_OK;
}

/* ------------------------------------------------------------ conversions */
static double half_to_double(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
  return s ? -v : v;
}

static double bf16_to_double(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* x rounded to nearest even with p significand bits and smallest normal
 * exponent emin (below it, the fixed quantum of the subnormals).  Overflow
 * is left to the caller. */
static double round_bits(double x, int p, int emin) {
  if (x == 0 || !isfinite(x)) return x;
  int e = ilogb(x);
  if (e < emin) e = emin;
  double q = ldexp(1.0, e - p + 1);
  return nearbyint(x / q) * q; /* x/q exact: q is a power of two */
}

static uint16_t double_to_half(double x) {
  uint16_t sign = signbit(x) ? 0x8000 : 0;
  if (isnan(x)) return sign | 0x7e00;
  double a = round_bits(fabs(x), 11, -14);
  if (a > 65504.0) return sign | 0x7c00; /* also infinity */
  if (a < 0x1p-14) return sign | (uint16_t)(a * 0x1p24); /* subnormal or zero */
  int e = ilogb(a);
  return sign | (uint16_t)((e + 15) << 10) | (uint16_t)(ldexp(a, 10 - e) - 1024);
}

static uint16_t double_to_bf16(double x) {
  if (isnan(x)) return signbit(x) ? 0xffc0 : 0x7fc0;
  double a = round_bits(x, 8, -126);
  float f = fabs(a) > 0x1.fep127 ? copysignf(INFINITY, (float)a) : (float)a; /* exact */
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (uint16_t)(u >> 16);
}

static inline char *elem(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j,
                         int esize) {
  int64_t o = b * v->stride[0] + t * v->stride[1] + h * v->stride[2] + i * v->stride[3] +
              j * v->stride[4];
  return v->data + o * esize;
}

double elem_load(const void *p, enum tdtype dt) {
  switch (dt) {
  case TD_F64: {
    double x;
    memcpy(&x, p, sizeof x);
    return x;
  }
  case TD_F32: {
    float x;
    memcpy(&x, p, sizeof x);
    return x;
  }
  case TD_BF16:
  case TD_F16: {
    uint16_t x;
    memcpy(&x, p, sizeof x);
    return dt == TD_BF16 ? bf16_to_double(x) : half_to_double(x);
  }
  }
  return NAN;
}

void elem_store(void *p, enum tdtype dt, double x) {
  switch (dt) {
  case TD_F64: memcpy(p, &x, sizeof x); return;
  case TD_F32: {
    float f = (float)x; /* round to nearest even (the default mode) */
    memcpy(p, &f, sizeof f);
    return;
  }
  case TD_BF16:
  case TD_F16: {
    uint16_t u = dt == TD_BF16 ? double_to_bf16(x) : double_to_half(x);
    memcpy(p, &u, sizeof u);
    return;
  }
  }
}

int tdtype_bytes(enum tdtype dt) { return dt == TD_F64 ? 8 : dt == TD_F32 ? 4 : 2; }

double tview_load(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j) {
  return elem_load(elem(v, b, t, h, i, j, tdtype_bytes(v->dtype)), v->dtype);
}

void tview_store(const tview *v, int64_t b, int64_t t, int64_t h, int64_t i, int64_t j,
                 double x) {
  elem_store(elem(v, b, t, h, i, j, tdtype_bytes(v->dtype)), v->dtype, x);
}
