/* test_gpu_models.c - every example model on the GPU, forward and backward,
 * against the float64 reference executor on the same fresh random inputs:
 * float32 and bfloat16 tensors; sizes M=N=128, 64, M=48 N=96, M=N=1; T up to
 * 1000, H=3, B=1 and 2; per-head, shared-by-heads and time-invariant
 * (broadcast) inputs; a strided (non-contiguous) and an expanded (stride 0)
 * input; every model in one context (models_one_context); a guarded
 * step (guarded_retention) on either path, by the flag it leaves; a
 * decay along M beyond GSA's key step (column_decays); states wider than
 * the chunked backward's threads (wide_states); and the lean backward's
 * sparse states and windows (lean_backward); steps of small rows with rows
 * side by side, aligned tensors moved as vectors next to misaligned ones
 * (adjacent_rows).  Output
 * buffers are poisoned (NaN) before each run: an element left
 * unwritten fails the comparison.  Tolerances of SPEC section 3: relative
 * error 1e-5 for float32 tensors, 1e-2 for bfloat16.  A float32 tensor that
 * misses 1e-5 is held to what float32 data allows instead (conditioned()):
 * a sum of large cancelling terms, such as the gradient of a scalar used at
 * every step and element, cannot be closer than its sensitivity to float32
 * rounding of the data; measured by the reference itself on inputs moved by
 * one ulp, and capped at 1e-3, so a wrong kernel still fails.
 *
 * Without a GPU it exits 77 (CTest: skipped).  FRNN_GPU_TABLE=path appends
 * one line per comparison (model, sizes, dtype, tensor, error) for the
 * record. */
#include "../../tools/util/ranges.c"
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static rng R;
static FILE *table;

/* The models, each with the input ranges that keep it well-conditioned: the
 * "# ranges:" line of its file (syntax and defaults: tools/util/ranges.h). */
static const char *const MODELS[] = {
    "delta_rule", "gated_delta_rule", "rwkv7",    "rwkv6",      "gla",
    "retention",  "hgrn",             "rwkv4",    "gsa_keys",   "gsa_values",
    "mamba2",     "mamba",            "longhorn", "s4d",        "mlstm",
};
enum { N_MODELS = sizeof MODELS / sizeof *MODELS };

typedef range_spec range;

/* ------------------------------------------------------- device tensors */
typedef struct dtensor {
  ttensor host;   /* host copy (the reference reads it) */
  DLTensor dev;   /* same shape and strides, device data */
  CUdeviceptr ptr, data; /* the allocation; the first element (ptr, or one element on) */
  int64_t shape[8], strides[8];
} dtensor;

static frnn_ctx *ctx;
/* run_opts.misaligned: every other device tensor starts one element into
 * its allocation (not VEC_ALIGN-aligned: its rows move one at a time) */
static bool misalign;
static int n_allocated;

static void dev_from_host(dtensor *d) {
  d->dev = d->host.t;
  memcpy(d->shape, d->host.shape, sizeof d->shape);
  memcpy(d->strides, d->host.strides, sizeof d->strides);
  d->dev.shape = d->shape;
  d->dev.strides = d->strides;
  size_t off = misalign && n_allocated++ % 2 ? d->host.t.dtype.bits / 8 : 0;
  ck_assert_msg(cuda_malloc(ctx, d->host.size + off, &d->ptr) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  d->data = d->ptr + off;
  ck_assert(cuda_memcpy_htod(ctx, d->data, d->host.buf, d->host.size, NULL, 0) == FRNN_OK);
  d->dev.data = (void *)(uintptr_t)d->data;
  d->dev.device = (DLDevice){kDLCUDA, 0};
}

static void dtensor_random(dtensor *d, DLDataType dt, int ndim, const int64_t *shape, range r) {
  tt_random(&d->host, dt, ndim, shape, &R, r.lo, r.hi);
  dev_from_host(d);
}

/* A poisoned (all bits set: NaN in every float format) device tensor. */
static void dtensor_poison(dtensor *d, DLDataType dt, int ndim, const int64_t *shape) {
  tt_zeros(&d->host, dt, ndim, shape);
  dev_from_host(d);
  ck_assert(cuda_memset_d8(ctx, d->data, 0xff, d->host.size, NULL, 0) == FRNN_OK);
}

static void dtensor_fetch(dtensor *d) {
  ck_assert(cuda_memcpy_dtoh(ctx, d->host.buf, d->data, d->host.size, NULL, 0) == FRNN_OK);
}

static void dtensor_free(dtensor *d) {
  cuda_free(ctx, d->ptr);
  tt_free(&d->host);
}

/* ------------------------------------------------------------- one case */
typedef struct run_opts {
  int64_t B, T, H, M, N;
  DLDataType dt;       /* inputs, outputs, gradients; states float32 */
  bool strided;        /* the first matrix/row input as a non-contiguous view */
  bool expanded;       /* the first input made constant in time by stride 0 */
  const char *ranges;  /* NULL: the file's "# ranges:" line; else these (ranges.h syntax) */
  int flag;            /* -1: unchecked; 0 or 1: a guarded step's flag after the forward
                          (set: the recurrent kernels ran it); then a forward with the
                          forward-only workspace (the flag alone) is checked too */
  bool no_gout;        /* every output's gradient absent (NULL: zero), on both sides */
  bool misaligned;     /* every other tensor one element into its allocation (misalign) */
} run_opts;

static double check_close(const char *model, const run_opts *o, const char *what, ttensor *got,
                          ttensor *want, double tol) {
  double e = tt_rel_err(got, want);
  if (table) {
    fprintf(table, "%-18s B=%lld T=%lld H=%lld M=%lld N=%lld %-4s %-22s %.3g", model, (long long)o->B,
            (long long)o->T, (long long)o->H, (long long)o->M, (long long)o->N,
            o->dt.code == kDLBfloat ? "bf16" : "f32", what, e);
    if (tol > 1e-5 && o->dt.code != kDLBfloat) fprintf(table, " (conditioned bound %.3g)", tol);
    fprintf(table, "\n");
  }
  ck_assert_msg(e < tol, "%s %s: relative error %.3g >= %.3g (B=%lld T=%lld H=%lld M=%lld N=%lld)",
                model, what, e, tol, (long long)o->B, (long long)o->T, (long long)o->H,
                (long long)o->M, (long long)o->N);
  return e;
}

/* Move every float32 element of a host tensor's buffer by one ulp, up or down
 * at random. */
static void nudge(ttensor *x) {
  if (x->t.dtype.code != kDLFloat || x->t.dtype.bits != 32) return;
  float *f = x->buf;
  for (size_t i = 0; i < x->size / sizeof(float); i++)
    f[i] = nextafterf(f[i], (rng_next(&R) & 1) ? INFINITY : -INFINITY);
}

/* The bound for a float32 tensor that missed 1e-5: 16 times how far the
 * reference's own value moves when the data (inputs, initial states, output
 * gradients) move by one float32 ulp, at most 1e-3.  `moved` is the
 * reference on nudged data, `want` on the data. */
static double conditioned(ttensor *moved, ttensor *want) {
  double bound = 16 * tt_rel_err(moved, want);
  return bound < 1e-5 ? 1e-5 : bound > 1e-3 ? 1e-3 : bound;
}

/* model: an example's name, or a step file's path from the source root. */
static void run_model(const char *model, run_opts o) {
  char rel[256], err[1024];
  snprintf(rel, sizeof rel, strchr(model, '/') ? "%s" : "examples/%s.frnn", model);
  frnn_step *s;
  ck_assert_msg(frnn_step_load(ctx, test_source_path(rel), &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ranges rg;
  bool found;
  if (o.ranges) {
    ck_assert_msg(ranges_parse(o.ranges, &rg, err, sizeof err) == 0, "%s", err);
  } else {
    ck_assert_msg(ranges_from_file(test_source_path(rel), &rg, &found, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_msg(found, "%s has no '# ranges:' line", rel);
  }
  int ni = frnn_step_port_count(s, FRNN_PORT_INPUT), ns = frnn_step_port_count(s, FRNN_PORT_STATE),
      no = frnn_step_port_count(s, FRNN_PORT_OUTPUT);
  frnn_sizes sz = {o.B, o.T, o.H, o.M, o.N};
  misalign = o.misaligned, n_allocated = 0;
  double tol = o.dt.code == kDLBfloat ? 1e-2 : 1e-5;
  dtensor in[FRNN_MAX_PORTS], st[FRNN_MAX_PORTS], out[FRNN_MAX_PORTS], fin[FRNN_MAX_PORTS],
      gout[FRNN_MAX_PORTS], gfin[FRNN_MAX_PORTS], gin[FRNN_MAX_PORTS], gst[FRNN_MAX_PORTS];
  ttensor r_out[FRNN_MAX_PORTS], r_fin[FRNN_MAX_PORTS], r_gin[FRNN_MAX_PORTS], r_gst[FRNN_MAX_PORTS];
  const DLTensor *h_in[FRNN_MAX_PORTS], *h_st[FRNN_MAX_PORTS], *h_gout[FRNN_MAX_PORTS],
      *h_gfin[FRNN_MAX_PORTS], *d_in[FRNN_MAX_PORTS], *d_st[FRNN_MAX_PORTS],
      *d_gout[FRNN_MAX_PORTS], *d_gfin[FRNN_MAX_PORTS];
  DLTensor *h_out[FRNN_MAX_PORTS], *h_fin[FRNN_MAX_PORTS], *h_gin[FRNN_MAX_PORTS],
      *h_gst[FRNN_MAX_PORTS], *d_out[FRNN_MAX_PORTS], *d_fin[FRNN_MAX_PORTS],
      *d_gin[FRNN_MAX_PORTS], *d_gst[FRNN_MAX_PORTS];
  bool did_stride = false, did_expand = false;
  for (int i = 0; i < ni; i++) {
    int cls = frnn_step_port_class(s, FRNN_PORT_INPUT, i);
    range r = ranges_get(&rg, frnn_step_port_name(s, FRNN_PORT_INPUT, i), false, o.N);
    int64_t m = CLASS_HAS_M(cls) ? o.M : 1, n = CLASS_HAS_N(cls) ? o.N : 1;
    int64_t shape[5];
    ranges_input_shape(r.bcast, o.B, o.T, o.H, m, n, shape);
    if (o.strided && !did_stride && CLASS_HAS_N(cls) && !r.bcast) {
      /* A view of every other column of a tensor twice as wide. */
      int64_t wide[5] = {shape[0], shape[1], shape[2], m, 2 * n};
      dtensor_random(&in[i], o.dt, 5, wide, r);
      for (dtensor *d = &in[i]; d; d = NULL) {
        d->host.shape[4] = d->shape[4] = n;
        d->host.strides[4] = d->strides[4] = 2;
      }
      did_stride = true;
    } else if (o.expanded && !did_expand && !r.bcast && o.T > 1) {
      /* [B,T,H,m,n] expanded from [B,1,H,m,n]: stride 0 over T. */
      int64_t one[5] = {shape[0], 1, shape[2], m, n};
      dtensor_random(&in[i], o.dt, 5, one, r);
      in[i].host.shape[1] = in[i].shape[1] = o.T;
      in[i].host.strides[1] = in[i].strides[1] = 0;
      did_expand = true;
    } else {
      dtensor_random(&in[i], o.dt, 5, shape, r);
    }
    h_in[i] = &in[i].host.t, d_in[i] = &in[i].dev;
    /* Gradients have the input's shape (an expanded input's is its own). */
    int64_t gshape[5];
    memcpy(gshape, in[i].host.shape, sizeof gshape);
    dtensor_poison(&gin[i], o.dt, 5, gshape);
    tt_zeros(&r_gin[i], DT_F64, 5, gshape);
    h_gin[i] = &r_gin[i].t, d_gin[i] = &gin[i].dev;
  }
  for (int i = 0; i < ns; i++) {
    int cls = frnn_step_port_class(s, FRNN_PORT_STATE, i);
    range r = ranges_get(&rg, frnn_step_port_name(s, FRNN_PORT_STATE, i), true, o.N);
    int64_t shape[4] = {o.B, o.H, CLASS_HAS_M(cls) ? o.M : 1, CLASS_HAS_N(cls) ? o.N : 1};
    dtensor_random(&st[i], DT_F32, 4, shape, r);
    dtensor_poison(&fin[i], DT_F32, 4, shape);
    range gr = {.lo = -1, .hi = 1};
    dtensor_random(&gfin[i], DT_F32, 4, shape, gr);
    dtensor_poison(&gst[i], DT_F32, 4, shape);
    tt_zeros(&r_fin[i], DT_F64, 4, shape);
    tt_zeros(&r_gst[i], DT_F64, 4, shape);
    h_st[i] = &st[i].host.t, d_st[i] = &st[i].dev;
    h_fin[i] = &r_fin[i].t, d_fin[i] = &fin[i].dev;
    h_gfin[i] = &gfin[i].host.t, d_gfin[i] = &gfin[i].dev;
    h_gst[i] = &r_gst[i].t, d_gst[i] = &gst[i].dev;
  }
  for (int i = 0; i < no; i++) {
    int cls = frnn_step_port_class(s, FRNN_PORT_OUTPUT, i);
    int64_t shape[4] = {o.B, o.T, o.H, o.M};
    int nd = CLASS_HAS_M(cls) ? 4 : 3;
    dtensor_poison(&out[i], o.dt, nd, shape);
    range gr = {.lo = -1, .hi = 1};
    dtensor_random(&gout[i], o.dt, nd, shape, gr);
    tt_zeros(&r_out[i], DT_F64, nd, shape);
    h_out[i] = &r_out[i].t, d_out[i] = &out[i].dev;
    h_gout[i] = o.no_gout ? NULL : &gout[i].host.t, d_gout[i] = o.no_gout ? NULL : &gout[i].dev;
  }
  /* Reference. */
  ck_assert_msg(frnn_reference_forward(ctx, s, sz, h_in, h_st, h_out, h_fin) == FRNN_OK, "%s",
                frnn_ctx_error(ctx));
  ck_assert_msg(frnn_reference_backward(ctx, s, sz, h_in, h_st, h_gout, h_gfin, h_gin, h_gst) == FRNN_OK,
                "%s", frnn_ctx_error(ctx));
  /* GPU. */
  size_t ws_bytes;
  ck_assert_msg(frnn_gpu_workspace_size(ctx, s, sz, d_in, 1, &ws_bytes) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  CUdeviceptr ws = 0;
  ck_assert(cuda_malloc(ctx, ws_bytes ? ws_bytes : 1, &ws) == FRNN_OK);
  ck_assert(cuda_memset_d8(ctx, ws, 0xff, ws_bytes ? ws_bytes : 1, NULL, 0) == FRNN_OK);
  ck_assert_msg(frnn_gpu_forward(ctx, s, sz, d_in, d_st, d_out, d_fin, (void *)(uintptr_t)ws,
                                 ws_bytes, NULL) == FRNN_OK,
                "%s: %s", model, frnn_ctx_error(ctx));
  if (o.flag >= 0) { /* a guarded step: which kernels ran (pipeline.c) */
    int32_t flag = -1;
    ck_assert(cuda_memcpy_dtoh(ctx, &flag, ws, 4, NULL, 0) == FRNN_OK);
    ck_assert_msg((flag != 0) == o.flag, "%s (ranges %s): flag %d, expected %s", model, o.ranges, flag,
                  o.flag ? "set" : "clear");
  }
  ck_assert_msg(frnn_gpu_backward(ctx, s, sz, d_in, d_st, d_gout, d_gfin, d_gin, d_gst,
                                  (void *)(uintptr_t)ws, ws_bytes, NULL) == FRNN_OK,
                "%s: %s", model, frnn_ctx_error(ctx));
  ck_assert_msg(cuda_ctx_sync(ctx) == FRNN_OK, "%s: %s", model, frnn_ctx_error(ctx));
  char what[128];
  for (int i = 0; i < no; i++) dtensor_fetch(&out[i]);
  for (int i = 0; i < ns; i++) dtensor_fetch(&fin[i]), dtensor_fetch(&gst[i]);
  for (int i = 0; i < ni; i++) dtensor_fetch(&gin[i]);
  /* Float32 results that miss 1e-5: the reference once more on nudged data,
   * for each tensor's conditioned bound. */
  double t_out[FRNN_MAX_PORTS], t_fin[FRNN_MAX_PORTS], t_gst[FRNN_MAX_PORTS], t_gin[FRNN_MAX_PORTS];
  bool missed = false;
  for (int i = 0; i < no; i++) missed |= (t_out[i] = tol, tt_rel_err(&out[i].host, &r_out[i]) >= tol);
  for (int i = 0; i < ns; i++)
    missed |= (t_fin[i] = t_gst[i] = tol, tt_rel_err(&fin[i].host, &r_fin[i]) >= tol ||
                                              tt_rel_err(&gst[i].host, &r_gst[i]) >= tol);
  for (int i = 0; i < ni; i++) missed |= (t_gin[i] = tol, tt_rel_err(&gin[i].host, &r_gin[i]) >= tol);
  if (missed && o.dt.code != kDLBfloat) {
    ttensor m_out[FRNN_MAX_PORTS], m_fin[FRNN_MAX_PORTS], m_gin[FRNN_MAX_PORTS], m_gst[FRNN_MAX_PORTS];
    DLTensor *p_out[FRNN_MAX_PORTS], *p_fin[FRNN_MAX_PORTS], *p_gin[FRNN_MAX_PORTS], *p_gst[FRNN_MAX_PORTS];
    for (int i = 0; i < ni; i++) nudge(&in[i].host), tt_zeros(&m_gin[i], DT_F64, 5, r_gin[i].shape), p_gin[i] = &m_gin[i].t;
    for (int i = 0; i < ns; i++) {
      nudge(&st[i].host), nudge(&gfin[i].host);
      tt_zeros(&m_fin[i], DT_F64, 4, r_fin[i].shape), tt_zeros(&m_gst[i], DT_F64, 4, r_gst[i].shape);
      p_fin[i] = &m_fin[i].t, p_gst[i] = &m_gst[i].t;
    }
    for (int i = 0; i < no; i++) {
      nudge(&gout[i].host);
      tt_zeros(&m_out[i], DT_F64, r_out[i].t.ndim, r_out[i].shape);
      p_out[i] = &m_out[i].t;
    }
    ck_assert(frnn_reference_forward(ctx, s, sz, h_in, h_st, p_out, p_fin) == FRNN_OK);
    ck_assert(frnn_reference_backward(ctx, s, sz, h_in, h_st, h_gout, h_gfin, p_gin, p_gst) == FRNN_OK);
    for (int i = 0; i < no; i++) t_out[i] = conditioned(&m_out[i], &r_out[i]), tt_free(&m_out[i]);
    for (int i = 0; i < ns; i++) {
      t_fin[i] = conditioned(&m_fin[i], &r_fin[i]), t_gst[i] = conditioned(&m_gst[i], &r_gst[i]);
      tt_free(&m_fin[i]), tt_free(&m_gst[i]);
    }
    for (int i = 0; i < ni; i++) t_gin[i] = conditioned(&m_gin[i], &r_gin[i]), tt_free(&m_gin[i]);
  }
  for (int i = 0; i < no; i++) {
    snprintf(what, sizeof what, "out %s", frnn_step_port_name(s, FRNN_PORT_OUTPUT, i));
    check_close(model, &o, what, &out[i].host, &r_out[i], t_out[i]);
  }
  for (int i = 0; i < ns; i++) {
    snprintf(what, sizeof what, "final %s", frnn_step_port_name(s, FRNN_PORT_STATE, i));
    check_close(model, &o, what, &fin[i].host, &r_fin[i], t_fin[i]);
    snprintf(what, sizeof what, "grad state %s", frnn_step_port_name(s, FRNN_PORT_STATE, i));
    check_close(model, &o, what, &gst[i].host, &r_gst[i], t_gst[i]);
  }
  for (int i = 0; i < ni; i++) {
    snprintf(what, sizeof what, "grad %s", frnn_step_port_name(s, FRNN_PORT_INPUT, i));
    check_close(model, &o, what, &gin[i].host, &r_gin[i], t_gin[i]);
  }
  if (o.flag >= 0) {
    /* A forward no backward follows: the forward-only workspace, outputs
     * and final states poisoned again. */
    size_t fw_bytes;
    ck_assert(frnn_gpu_workspace_size(ctx, s, sz, d_in, 0, &fw_bytes) == FRNN_OK);
    ck_assert_uint_eq(fw_bytes, GUARD_BYTES);
    for (int i = 0; i < no; i++) ck_assert(cuda_memset_d8(ctx, out[i].data, 0xff, out[i].host.size, NULL, 0) == FRNN_OK);
    for (int i = 0; i < ns; i++) ck_assert(cuda_memset_d8(ctx, fin[i].data, 0xff, fin[i].host.size, NULL, 0) == FRNN_OK);
    ck_assert_msg(frnn_gpu_forward(ctx, s, sz, d_in, d_st, d_out, d_fin, (void *)(uintptr_t)ws, fw_bytes, NULL) ==
                      FRNN_OK,
                  "%s: %s", model, frnn_ctx_error(ctx));
    int32_t flag = -1;
    ck_assert(cuda_memcpy_dtoh(ctx, &flag, ws, 4, NULL, 0) == FRNN_OK);
    ck_assert((flag != 0) == o.flag);
    for (int i = 0; i < no; i++) {
      dtensor_fetch(&out[i]);
      snprintf(what, sizeof what, "out %s (forward alone)", frnn_step_port_name(s, FRNN_PORT_OUTPUT, i));
      check_close(model, &o, what, &out[i].host, &r_out[i], t_out[i]);
    }
    for (int i = 0; i < ns; i++) {
      dtensor_fetch(&fin[i]);
      snprintf(what, sizeof what, "final %s (forward alone)", frnn_step_port_name(s, FRNN_PORT_STATE, i));
      check_close(model, &o, what, &fin[i].host, &r_fin[i], t_fin[i]);
    }
  }
  cuda_free(ctx, ws);
  for (int i = 0; i < ni; i++) dtensor_free(&in[i]), dtensor_free(&gin[i]), tt_free(&r_gin[i]);
  for (int i = 0; i < ns; i++) {
    dtensor_free(&st[i]), dtensor_free(&fin[i]), dtensor_free(&gfin[i]), dtensor_free(&gst[i]);
    tt_free(&r_fin[i]), tt_free(&r_gst[i]);
  }
  for (int i = 0; i < no; i++) dtensor_free(&out[i]), dtensor_free(&gout[i]), tt_free(&r_out[i]);
  frnn_step_destroy(s);
}

/* --------------------------------------------------------------- tests */
static cuda_scope scope;

static void setup(void) {
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  ck_assert_msg(cuda_enter(ctx, 0, &scope) == FRNN_OK, "%s", frnn_ctx_error(ctx));
}
static void teardown(void) {
  cuda_leave(&scope);
  frnn_ctx_destroy(ctx);
}

START_TEST(models_f32_64) {
  run_opts o = {2, 1000, 3, 64, 64, DT_F32, false, false, NULL, -1, false, false};
  run_model(MODELS[_i], o);
}
END_TEST

START_TEST(models_bf16_128) {
  run_opts o = {1, 200, 3, 128, 128, DT_BF16, false, false, NULL, -1, false, false};
  run_model(MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_128) {
  run_opts o = {1, 100, 2, 128, 128, DT_F32, false, false, NULL, -1, false, false};
  run_model(MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_48x96_strided) {
  run_opts o = {2, 37, 3, 48, 96, DT_F32, true, true, NULL, -1, false, false};
  run_model(MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_1x1) {
  run_opts o = {2, 50, 3, 1, 1, DT_F32, false, false, NULL, -1, false, false};
  run_model(MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_odd) {
  run_opts o = {1, 9, 1, 3, 5, DT_F32, true, false, NULL, -1, false, false};
  run_model(MODELS[_i], o);
}
END_TEST

/* A guarded step (retention: gamma is an input, not an exp): decays of at
 * least CK_GUARD_MIN run on the chunked kernels (flag clear); negative
 * decays, and positive ones below it, on the recurrent kernels (flag set);
 * every result against the reference either way, the forward alone too. */
static const struct {
  const char *ranges;
  int flag;
  bool bf16;
} guarded_cases[] = {
    {"q=-1:1:n,k=-1:1:n,gamma=0.9:0.99@h", 0, false},
    {"q=-1:1:n,k=-1:1:n,gamma=0.9:0.99@h", 0, true},
    {"q=-1:1:n,k=-1:1:n,gamma=0.5:1.01@h", 0, false}, /* from the guard's 1/2 up, growing decays too */
    {"q=-1:1:n,k=-1:1:n,gamma=0.02:0.45@h", 1, false}, /* below it: gamma's gradient lost accuracy chunked */
    {"q=-1:1:n,k=-1:1:n,gamma=-0.9:-0.1@h", 1, false},
    {"q=-1:1:n,k=-1:1:n,gamma=0.001:0.01@h", 1, false},
    {"q=-1:1:n,k=-1:1:n,gamma=0.001:0.01@h", 1, true},
};

START_TEST(guarded_retention) {
  run_opts o = {2, 300, 3, 64, 64, guarded_cases[_i].bf16 ? DT_BF16 : DT_F32, false, false, guarded_cases[_i].ranges,
                guarded_cases[_i].flag, false, false};
  run_model("retention", o);
}
END_TEST

/* A decay along M beyond GSA's key step (tests/gpu/steps/column_decay.frnn:
 * an output of the old state with an outside factor, one of the new, two
 * updates, a column times a scalar decay): tensor-core sizes in float32 and
 * bfloat16, and sizes no tile divides (CUDA cores, a partial chunk). */
static const struct {
  int64_t B, T, H, M, N;
  bool bf16, strided, expanded;
} column_cases[] = {
    {2, 300, 3, 64, 64, false, false, false},
    {1, 200, 2, 128, 128, true, false, false},
    {2, 37, 3, 3, 5, false, true, false},
    {1, 70, 2, 48, 96, false, false, true},
};

START_TEST(column_decays) {
  run_opts o = {column_cases[_i].B, column_cases[_i].T, column_cases[_i].H, column_cases[_i].M, column_cases[_i].N,
                column_cases[_i].bf16 ? DT_BF16 : DT_F32, column_cases[_i].strided, column_cases[_i].expanded,
                NULL, -1, false, false};
  run_model("tests/gpu/steps/column_decay.frnn", o);
}
END_TEST

/* States wider than the chunked backward's threads (N = 264 > 256): the log
 * decay's gradient then loops over its (segment, column) items and loads
 * the terms' gradients in both passes (lower_chunked.c log_decay_gradient),
 * where every narrower state keeps the first pass's sums in registers.
 * The decayed steps, each a row or scalar decay, with a rank-one term or
 * without. */
static const char *const WIDE_MODELS[] = {"mamba2", "gla", "gated_delta_rule", "rwkv7"};
START_TEST(wide_states) {
  run_opts o = {1, 70, 2, 16, 264, DT_F32, false, false, NULL, -1, false, false};
  run_model(WIDE_MODELS[_i], o);
}
END_TEST

/* The lean backward (FRNN_BACKWARD_LEAN): a state stored every 4 chunks,
 * the others recomputed by the forward kernel without outputs, the
 * backward in windows of 64 steps (lower_chunked.c ck_plan.ckpt_every):
 * several stored states and windows at T = 300, for the chunked steps,
 * the low-rank ones (their rank-one columns recomputed too) among them. */
static const char *const LEAN_MODELS[] = {"delta_rule", "gated_delta_rule", "rwkv7", "mamba2", "gla", "retention"};
START_TEST(lean_backward) {
  ck_assert(frnn_ctx_set_backward_mode(ctx, FRNN_BACKWARD_LEAN) == FRNN_OK);
  run_opts o = {2, 300, 2, 64, 64, DT_F32, false, false, NULL, -1, false, false};
  run_model(LEAN_MODELS[_i], o);
}
END_TEST

/* Every model in one context, one after the other: steps of one signature
 * (the delta rule and GLA; the gated delta rule and RWKV-6) must each run
 * their own kernels.  Until 2026-11-25 the context's module lookup ignored
 * the step, and the second of such a pair ran the first's kernels. */
START_TEST(models_one_context) {
  run_opts o = {1, 20, 2, 16, 16, DT_F32, false, false, NULL, -1, false, false};
  for (int i = 0; i < N_MODELS; i++) run_model(MODELS[i], o);
}
END_TEST

/* Predicated stores (plan.c pred_fwd, pred_bwd) forced on every model,
 * kernels of many rows a thread included (by default they keep branches
 * around their stores). */
START_TEST(predicated_stores) {
  setenv("FRNN_PRED_STORES", "1", 1);
  run_opts o = {2, 37, 3, 48, 96, DT_F32, true, true, NULL, -1, false, false};
  run_model(MODELS[_i], o);
  unsetenv("FRNN_PRED_STORES");
}
END_TEST

/* The backward in two roles (plan.c plan_roles: HGRN's and RWKV-4's rows
 * need nothing from each other): one step, one chunk, chunks that do not
 * divide T, rows that do not fill the blocks (M = 200), and the same with
 * one role (FRNN_BWD_ROLES=0). */
static const struct {
  const char *model;
  int64_t T;
  bool one_role;
} role_cases[] = {
    {"hgrn", 1, false},   {"rwkv4", 2, false},  {"hgrn", 5, false},    {"rwkv4", 50, false},
    {"hgrn", 257, false}, {"rwkv4", 1000, false}, {"hgrn", 257, true}, {"rwkv4", 300, true},
};

/* Output gradients not given (the state's final gradient alone): the
 * kernels load them behind a null test, which a given, contiguous one skips
 * (lower_llvm.c targ.present); the recurrent kernels (two roles, rows
 * apart, an exchange, sums over M) and a chunked one. */
static const struct {
  const char *model;
  int64_t N;
} absent_cases[] = {{"hgrn", 1}, {"rwkv4", 1}, {"s4d", 16}, {"mamba", 16}, {"mlstm", 16}, {"delta_rule", 32}};

START_TEST(absent_output_gradients) {
  run_opts o = {2, 70, 2, 64, absent_cases[_i].N, DT_F32, false, false, NULL, -1, true, false};
  run_model(absent_cases[_i].model, o);
}
END_TEST

/* A step of small rows holds a few rows side by side (plan.c
 * adjacent_rows) and moves an aligned tensor's as one vector access
 * (lower_llvm.c vec_of): 2 to 8 rows (FRNN_ROWS_VEC; bf16 two to a word,
 * up to 16 bytes), M = 200 (7 rows a lane: 4 side by side, blocks not
 * filled), and every other tensor misaligned (one element in: those move
 * a row at a time, next to aligned ones). */
static const struct {
  const char *model, *rows_vec;
  bool bf16, misaligned;
  int64_t M;
} adjacent_cases[] = {
    {"hgrn", "2", true, true, 64},    {"rwkv4", "2", false, true, 64},  {"hgrn", "8", true, false, 64},
    {"rwkv4", "4", true, false, 64},  {"hgrn", "4", false, false, 64},  {"rwkv4", "8", false, true, 64},
    {"hgrn", "8", true, false, 200},  {"rwkv4", "8", true, true, 200},
};

START_TEST(adjacent_rows) {
  setenv("FRNN_ROWS_VEC", adjacent_cases[_i].rows_vec, 1);
  run_opts o = {2, 70, 2, adjacent_cases[_i].M, 1, adjacent_cases[_i].bf16 ? DT_BF16 : DT_F32, false, false, NULL,
                -1, false, adjacent_cases[_i].misaligned};
  run_model(adjacent_cases[_i].model, o);
  unsetenv("FRNN_ROWS_VEC");
}
END_TEST

START_TEST(two_roles) {
  if (role_cases[_i].one_role) setenv("FRNN_BWD_ROLES", "0", 1);
  run_opts o = {2, role_cases[_i].T, 3, 200, 1, DT_F32, false, false, NULL, -1, false, false};
  run_model(role_cases[_i].model, o);
  unsetenv("FRNN_BWD_ROLES");
}
END_TEST

int main(void) {
  frnn_ctx *probe;
  if (frnn_ctx_create(&probe)) return 1;
  if (frnn_gpu_available(probe) != FRNN_OK) {
    printf("no GPU, skipping: %s\n", frnn_ctx_error(probe));
    frnn_ctx_destroy(probe);
    return 77;
  }
  frnn_ctx_destroy(probe);
  R = test_rng("test_gpu_models");
  const char *tp = getenv("FRNN_GPU_TABLE");
  if (tp) table = fopen(tp, "a");
  Suite *su = suite_create("gpu_models");
  TCase *tc = tcase_create("models");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  /* FRNN_GPU_CONFIG=<name> runs one configuration (several processes can
   * then share the float64 reference work on a many-core machine). */
  const char *only = getenv("FRNN_GPU_CONFIG");
#define CONFIG(fn)                                                                             \
  if (!only || !*only || strcmp(only, #fn) == 0) tcase_add_loop_test(tc, fn, 0, N_MODELS);
  CONFIG(models_f32_odd)
  CONFIG(models_f32_1x1)
  CONFIG(models_f32_48x96_strided)
  CONFIG(models_f32_64)
  CONFIG(models_f32_128)
  CONFIG(models_bf16_128)
#undef CONFIG
  if (!only || !*only || strcmp(only, "models_one_context") == 0) tcase_add_test(tc, models_one_context);
  if (!only || !*only || strcmp(only, "guarded_retention") == 0)
    tcase_add_loop_test(tc, guarded_retention, 0, (int)(sizeof guarded_cases / sizeof *guarded_cases));
  if (!only || !*only || strcmp(only, "wide_states") == 0)
    tcase_add_loop_test(tc, wide_states, 0, (int)(sizeof WIDE_MODELS / sizeof *WIDE_MODELS));
  if (!only || !*only || strcmp(only, "lean_backward") == 0)
    tcase_add_loop_test(tc, lean_backward, 0, (int)(sizeof LEAN_MODELS / sizeof *LEAN_MODELS));
  if (!only || !*only || strcmp(only, "predicated_stores") == 0) tcase_add_loop_test(tc, predicated_stores, 0, N_MODELS);
  if (!only || !*only || strcmp(only, "two_roles") == 0)
    tcase_add_loop_test(tc, two_roles, 0, (int)(sizeof role_cases / sizeof *role_cases));
  if (!only || !*only || strcmp(only, "adjacent_rows") == 0)
    tcase_add_loop_test(tc, adjacent_rows, 0, (int)(sizeof adjacent_cases / sizeof *adjacent_cases));
  if (!only || !*only || strcmp(only, "absent_output_gradients") == 0)
    tcase_add_loop_test(tc, absent_output_gradients, 0, (int)(sizeof absent_cases / sizeof *absent_cases));
  if (!only || !*only || strcmp(only, "column_decays") == 0)
    tcase_add_loop_test(tc, column_decays, 0, (int)(sizeof column_cases / sizeof *column_cases));
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_set_fork_status(sr, CK_NOFORK); /* CUDA does not survive fork() */
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (table) fclose(table);
  return failed ? 1 : 0;
}
