/* test_gpu_models.c - every example model on the GPU, forward and backward,
 * against the float64 reference executor on the same fresh random inputs:
 * float32 and bfloat16 tensors; sizes M=N=128, 64, M=48 N=96, M=N=1; T up to
 * 1000, H=3, B=1 and 2; per-head, shared-by-heads and time-invariant
 * (broadcast) inputs; a strided (non-contiguous) and an expanded (stride 0)
 * input.  Output buffers are poisoned (NaN) before each run: an element left
 * unwritten fails the comparison.  Tolerances of SPEC section 3: relative
 * error 1e-5 for float32 tensors, 1e-2 for bfloat16.
 *
 * Without a GPU it exits 77 (CTest: skipped).  FRNN_GPU_TABLE=path appends
 * one line per comparison (model, sizes, dtype, tensor, error) for the
 * record. */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static rng R;
static FILE *table;

/* Input ranges per model: "name=lo:hi[:n][@h|@g|@t]" where :n scales by
 * sqrt(3/N) (keys of unit norm on average), @h makes the input per head
 * ([1,1,H,m,n]), @g shared by heads ([B,T,1,m,n]), @t constant in time
 * ([B,1,H,m,n]).  Unlisted inputs: [-1,1]; unlisted states: [-0.1,0.1]. */
typedef struct model_case {
  const char *file;
  const char *ranges;
} model_case;

static const model_case MODELS[] = {
    {"delta_rule", "q=-1:1:n,k=-1:1:n,beta=0:1"},
    {"gated_delta_rule", "q=-1:1:n,k=-1:1:n,beta=0:1,g=-0.1:0"},
    {"rwkv7", "r=-1:1:n,k=-1:1:n,w=-0.1:-0.01,a=-0.3:0.3:n,b=-0.3:0.3:n"},
    {"rwkv6", "r=-1:1:n,k=-1:1:n,w=-0.1:-0.01,u=-1:1@h"},
    {"gla", "q=-1:1:n,k=-1:1:n,g=-0.1:-0.01"},
    {"retention", "q=-1:1:n,k=-1:1:n,gamma=0.9:0.99@h"},
    {"hgrn", "g=-0.5:-0.01"},
    {"rwkv4", "w=-1:0@h,u=-1:1@h,alpha=-0.1:0.1,beta=0.5:1,eps=-1:1"},
    {"gsa_keys", "q=-1:1:n,k=-1:1:n,s=0:1,g=-0.1:-0.01"},
    {"gsa_values", "qv=0:1:n,s=0:1:n,g=-0.1:-0.01"},
    {"mamba2", "A=-1:-0.1@h,D=-1:1@h,dt_bias=-1:1@h,B=-1:1:n@g,C=-1:1:n@g"},
    {"mamba", "A=-1:-0.1@h,D=-1:1@h,delta_bias=-1:1@h,B=-1:1:n,C=-1:1:n"},
    {"longhorn", "q=-1:1:n,k=-1:1:n,D=-1:1@h,t_bias=-1:1@h"},
    {"s4d", "dA_re=0.5:0.9@h,dA_im=-0.3:0.3@h,C_re=-1:1:n@h,C_im=-1:1:n@h,D=-1:1@h"},
    {"mlstm", "q=-1:1:n,k=-1:1:n,f=1:4,i=-1:1"},
};
enum { N_MODELS = sizeof MODELS / sizeof *MODELS };

typedef struct range {
  double lo, hi;
  bool scale_n;
  char bcast; /* 0, 'h', 'g', 't' */
} range;

static range range_of(const model_case *mc, const char *name, bool is_state, int64_t N) {
  range r = {is_state ? -0.1 : -1, is_state ? 0.1 : 1, false, 0};
  const char *p = mc->ranges;
  size_t len = strlen(name);
  while (p && *p) {
    if (strncmp(p, name, len) == 0 && p[len] == '=') {
      const char *q = p + len + 1;
      char *end;
      r.lo = strtod(q, &end);
      r.hi = strtod(end + 1, &end);
      if (*end == ':' && end[1] == 'n') r.scale_n = true, end += 2;
      if (*end == '@') r.bcast = end[1];
      break;
    }
    p = strchr(p, ',');
    if (p) p++;
  }
  if (r.scale_n) {
    double s = sqrt(3.0 / (double)N);
    r.lo *= s, r.hi *= s;
  }
  return r;
}

/* ------------------------------------------------------- device tensors */
typedef struct dtensor {
  ttensor host;   /* host copy (the reference reads it) */
  DLTensor dev;   /* same shape and strides, device data */
  CUdeviceptr ptr;
  int64_t shape[8], strides[8];
} dtensor;

static frnn_ctx *ctx;

static void dev_from_host(dtensor *d) {
  d->dev = d->host.t;
  memcpy(d->shape, d->host.shape, sizeof d->shape);
  memcpy(d->strides, d->host.strides, sizeof d->strides);
  d->dev.shape = d->shape;
  d->dev.strides = d->strides;
  ck_assert_msg(cuda_malloc(ctx, d->host.size, &d->ptr) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  ck_assert(cuda_memcpy_htod(ctx, d->ptr, d->host.buf, d->host.size, NULL, 0) == FRNN_OK);
  d->dev.data = (void *)(uintptr_t)d->ptr;
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
  ck_assert(cuda_memset_d8(ctx, d->ptr, 0xff, d->host.size, NULL, 0) == FRNN_OK);
}

static void dtensor_fetch(dtensor *d) {
  ck_assert(cuda_memcpy_dtoh(ctx, d->host.buf, d->ptr, d->host.size, NULL, 0) == FRNN_OK);
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
} run_opts;

static double check_close(const char *model, const run_opts *o, const char *what, ttensor *got,
                          ttensor *want, double tol) {
  double e = tt_rel_err(got, want);
  if (table)
    fprintf(table, "%-18s B=%lld T=%lld H=%lld M=%lld N=%lld %-4s %-22s %.3g\n", model,
            (long long)o->B, (long long)o->T, (long long)o->H, (long long)o->M, (long long)o->N,
            o->dt.code == kDLBfloat ? "bf16" : "f32", what, e);
  ck_assert_msg(e < tol, "%s %s: relative error %.3g >= %.1g (B=%lld T=%lld H=%lld M=%lld N=%lld)",
                model, what, e, tol, (long long)o->B, (long long)o->T, (long long)o->H,
                (long long)o->M, (long long)o->N);
  return e;
}

static void run_model(const model_case *mc, run_opts o) {
  char rel[256];
  snprintf(rel, sizeof rel, "examples/%s.frnn", mc->file);
  frnn_step *s;
  ck_assert_msg(frnn_step_load(ctx, test_source_path(rel), &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
  int ni = frnn_step_port_count(s, FRNN_PORT_INPUT), ns = frnn_step_port_count(s, FRNN_PORT_STATE),
      no = frnn_step_port_count(s, FRNN_PORT_OUTPUT);
  frnn_sizes sz = {o.B, o.T, o.H, o.M, o.N};
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
    range r = range_of(mc, frnn_step_port_name(s, FRNN_PORT_INPUT, i), false, o.N);
    int64_t m = CLASS_HAS_M(cls) ? o.M : 1, n = CLASS_HAS_N(cls) ? o.N : 1;
    int64_t shape[5] = {r.bcast == 'h' ? 1 : o.B, r.bcast == 'h' || r.bcast == 't' ? 1 : o.T,
                        r.bcast == 'g' ? 1 : o.H, m, n};
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
    range r = range_of(mc, frnn_step_port_name(s, FRNN_PORT_STATE, i), true, o.N);
    int64_t shape[4] = {o.B, o.H, CLASS_HAS_M(cls) ? o.M : 1, CLASS_HAS_N(cls) ? o.N : 1};
    dtensor_random(&st[i], DT_F32, 4, shape, r);
    dtensor_poison(&fin[i], DT_F32, 4, shape);
    range gr = {-1, 1, false, 0};
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
    range gr = {-1, 1, false, 0};
    dtensor_random(&gout[i], o.dt, nd, shape, gr);
    tt_zeros(&r_out[i], DT_F64, nd, shape);
    h_out[i] = &r_out[i].t, d_out[i] = &out[i].dev;
    h_gout[i] = &gout[i].host.t, d_gout[i] = &gout[i].dev;
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
                "%s: %s", mc->file, frnn_ctx_error(ctx));
  ck_assert_msg(frnn_gpu_backward(ctx, s, sz, d_in, d_st, d_gout, d_gfin, d_gin, d_gst,
                                  (void *)(uintptr_t)ws, ws_bytes, NULL) == FRNN_OK,
                "%s: %s", mc->file, frnn_ctx_error(ctx));
  ck_assert_msg(cuda_ctx_sync(ctx) == FRNN_OK, "%s: %s", mc->file, frnn_ctx_error(ctx));
  char what[128];
  for (int i = 0; i < no; i++) {
    dtensor_fetch(&out[i]);
    snprintf(what, sizeof what, "out %s", frnn_step_port_name(s, FRNN_PORT_OUTPUT, i));
    check_close(mc->file, &o, what, &out[i].host, &r_out[i], tol);
  }
  for (int i = 0; i < ns; i++) {
    dtensor_fetch(&fin[i]);
    dtensor_fetch(&gst[i]);
    snprintf(what, sizeof what, "final %s", frnn_step_port_name(s, FRNN_PORT_STATE, i));
    check_close(mc->file, &o, what, &fin[i].host, &r_fin[i], o.dt.code == kDLBfloat ? 1e-2 : 1e-5);
    snprintf(what, sizeof what, "grad state %s", frnn_step_port_name(s, FRNN_PORT_STATE, i));
    check_close(mc->file, &o, what, &gst[i].host, &r_gst[i], tol);
  }
  for (int i = 0; i < ni; i++) {
    dtensor_fetch(&gin[i]);
    snprintf(what, sizeof what, "grad %s", frnn_step_port_name(s, FRNN_PORT_INPUT, i));
    check_close(mc->file, &o, what, &gin[i].host, &r_gin[i], tol);
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
  run_opts o = {2, 1000, 3, 64, 64, DT_F32, false, false};
  run_model(&MODELS[_i], o);
}
END_TEST

START_TEST(models_bf16_128) {
  run_opts o = {1, 200, 3, 128, 128, DT_BF16, false, false};
  run_model(&MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_128) {
  run_opts o = {1, 100, 2, 128, 128, DT_F32, false, false};
  run_model(&MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_48x96_strided) {
  run_opts o = {2, 37, 3, 48, 96, DT_F32, true, true};
  run_model(&MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_1x1) {
  run_opts o = {2, 50, 3, 1, 1, DT_F32, false, false};
  run_model(&MODELS[_i], o);
}
END_TEST

START_TEST(models_f32_odd) {
  run_opts o = {1, 9, 1, 3, 5, DT_F32, true, false};
  run_model(&MODELS[_i], o);
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
  tcase_add_loop_test(tc, models_f32_odd, 0, N_MODELS);
  tcase_add_loop_test(tc, models_f32_1x1, 0, N_MODELS);
  tcase_add_loop_test(tc, models_f32_48x96_strided, 0, N_MODELS);
  tcase_add_loop_test(tc, models_f32_64, 0, N_MODELS);
  tcase_add_loop_test(tc, models_f32_128, 0, N_MODELS);
  tcase_add_loop_test(tc, models_bf16_128, 0, N_MODELS);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_set_fork_status(sr, CK_NOFORK); /* CUDA does not survive fork() */
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (table) fclose(table);
  return failed ? 1 : 0;
}
