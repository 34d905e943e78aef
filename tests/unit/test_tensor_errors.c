/* test_tensor_errors.c - every way a call of the reference executor can be
 * wrong is rejected with the right status and a message that names the
 * tensor and says what was expected; nothing is written by a failed call. */
#include "frnn_internal.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- the step */
static frnn_value ap(frnn_step *s, frnn_op op, frnn_value a, frnn_value b) {
  frnn_value args[2] = {a, b}, out;
  ck_assert_int_eq(frnn_step_apply(s, op, args, op_get(op)->arity, &out), FRNN_OK);
  return out;
}

/* delta_rule(q[1,N], k[1,N], v[M,1], beta[1,1]; S[M,N]) -> y[M,1] */
static frnn_step *delta_rule(frnn_ctx *ctx, bool finish) {
  frnn_step *s;
  frnn_value q, k, v, beta, S;
  ck_assert_int_eq(frnn_step_create(ctx, "delta_rule", &s), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "q", FRNN_ROW, &q), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "k", FRNN_ROW, &k), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "v", FRNN_COL, &v), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "beta", FRNN_SCALAR, &beta), FRNN_OK);
  ck_assert_int_eq(frnn_step_state(s, "S", FRNN_MAT, &S), FRNN_OK);
  frnn_value sk = ap(s, FRNN_OP_SUM, ap(s, FRNN_OP_MUL, S, k), 0);
  frnn_value d = ap(s, FRNN_OP_MUL, ap(s, FRNN_OP_MUL, beta, k), ap(s, FRNN_OP_SUB, v, sk));
  frnn_value S2 = ap(s, FRNN_OP_ADD, S, d);
  ck_assert_int_eq(frnn_step_assign(s, "S", S2), FRNN_OK);
  ck_assert_int_eq(frnn_step_output(s, "y", FRNN_COL, ap(s, FRNN_OP_SUM, ap(s, FRNN_OP_MUL, S2,
                                                                           q), 0)), FRNN_OK);
  if (finish) ck_assert_int_eq(frnn_step_finish(s), FRNN_OK);
  return s;
}

/* --------------------------------------------------------------- fixture */
#define SENTINEL 7.25

typedef struct fx {
  frnn_ctx *ctx;
  frnn_step *step;
  frnn_sizes sz;
  ttensor in[4], st, out, fin, gout, gfin, gin[4], gst;
  const DLTensor *inp[4], *stp[1], *goutp[1], *gfinp[1];
  DLTensor *outp[1], *finp[1], *ginp[4], *gstp[1];
} fx;

static fx F;
static rng R;

static void fill(ttensor *x, double v) {
  int64_t n = (int64_t)(x->size / sizeof(double));
  for (int64_t e = 0; e < n; e++) ((double *)x->buf)[e] = v;
}

static void setup(void) {
  fx *f = &F;
  memset(f, 0, sizeof *f);
  ck_assert_int_eq(frnn_ctx_create(&f->ctx), FRNN_OK);
  f->step = delta_rule(f->ctx, true);
  f->sz = (frnn_sizes){.B = 2, .T = 3, .H = 2, .M = 3, .N = 4};
  int64_t row[5] = {2, 3, 2, 1, 4}, col[5] = {2, 3, 2, 3, 1}, sc[5] = {2, 3, 2, 1, 1};
  int64_t st[4] = {2, 2, 3, 4}, out[4] = {2, 3, 2, 3};
  tt_random(&f->in[0], DT_F64, 5, row, &R, -1, 1);
  tt_random(&f->in[1], DT_F64, 5, row, &R, -1, 1);
  tt_random(&f->in[2], DT_F64, 5, col, &R, -1, 1);
  tt_random(&f->in[3], DT_F64, 5, sc, &R, 0, 1);
  tt_random(&f->st, DT_F64, 4, st, &R, -1, 1);
  tt_zeros(&f->out, DT_F64, 4, out);
  tt_zeros(&f->fin, DT_F64, 4, st);
  tt_random(&f->gout, DT_F64, 4, out, &R, -1, 1);
  tt_random(&f->gfin, DT_F64, 4, st, &R, -1, 1);
  for (int i = 0; i < 4; i++) {
    tt_zeros(&f->gin[i], DT_F64, 5, f->in[i].shape);
    f->inp[i] = &f->in[i].t;
    f->ginp[i] = &f->gin[i].t;
  }
  tt_zeros(&f->gst, DT_F64, 4, st);
  f->stp[0] = &f->st.t;
  f->outp[0] = &f->out.t;
  f->finp[0] = &f->fin.t;
  f->goutp[0] = &f->gout.t;
  f->gfinp[0] = &f->gfin.t;
  f->gstp[0] = &f->gst.t;
  fill(&f->out, SENTINEL);
  fill(&f->fin, SENTINEL);
  for (int i = 0; i < 4; i++) fill(&f->gin[i], SENTINEL);
  fill(&f->gst, SENTINEL);
}

static void teardown(void) {
  fx *f = &F;
  frnn_step_destroy(f->step);
  frnn_ctx_destroy(f->ctx);
  for (int i = 0; i < 4; i++) tt_free(&f->in[i]), tt_free(&f->gin[i]);
  tt_free(&f->st), tt_free(&f->out), tt_free(&f->fin), tt_free(&f->gout), tt_free(&f->gfin);
  tt_free(&f->gst);
}

static frnn_status fwd(void) {
  return frnn_reference_forward(F.ctx, F.step, F.sz, F.inp, F.stp, F.outp, F.finp);
}
static frnn_status bwd(void) {
  return frnn_reference_backward(F.ctx, F.step, F.sz, F.inp, F.stp, F.goutp, F.gfinp, F.ginp,
                                 F.gstp);
}

static bool untouched(const ttensor *x) {
  int64_t n = (int64_t)(x->size / sizeof(double)); /* the buffer, whatever the shape says */
  for (int64_t e = 0; e < n; e++)
    if (((double *)x->buf)[e] != SENTINEL) return false;
  return true;
}

/* A failed call: this status, this text in the message, nothing written. */
#define EXPECT_FAIL(call, status, text)                                                         \
  do {                                                                                          \
    frnn_status st_ = (call);                                                                   \
    const char *m_ = frnn_ctx_error(F.ctx);                                                     \
    ck_assert_msg(st_ == (status), "%s: status %s, expected %s (message: %s)", #call,          \
                  frnn_status_name(st_), frnn_status_name(status), m_);                         \
    ck_assert_msg(strstr(m_, text) != NULL, "%s: message \"%s\" lacks \"%s\"", #call, m_,      \
                  text);                                                                        \
    ck_assert_msg(untouched(&F.out) && untouched(&F.fin) && untouched(&F.gst), "written"); \
    for (int i_ = 0; i_ < 4; i_++) ck_assert_msg(untouched(&F.gin[i_]), "gradient written"); \
  } while (0)

/* ---------------------------------------------------------------- tests */
START_TEST(fixture_is_valid) {
  ck_assert_int_eq(fwd(), FRNN_OK);
  ck_assert_int_eq(bwd(), FRNN_OK);
}
END_TEST

START_TEST(null_ctx) {
  ck_assert_int_eq(frnn_reference_forward(NULL, F.step, F.sz, F.inp, F.stp, F.outp, F.finp),
                   FRNN_E_ARG);
  ck_assert_int_eq(frnn_reference_backward(NULL, F.step, F.sz, F.inp, F.stp, F.goutp, F.gfinp,
                                           F.ginp, F.gstp),
                   FRNN_E_ARG);
  ck_assert(untouched(&F.out) && untouched(&F.fin) && untouched(&F.gst));
}
END_TEST

START_TEST(null_step) {
  EXPECT_FAIL(frnn_reference_forward(F.ctx, NULL, F.sz, F.inp, F.stp, F.outp, F.finp),
              FRNN_E_ARG, "frnn_reference_forward: step is NULL");
  EXPECT_FAIL(frnn_reference_backward(F.ctx, NULL, F.sz, F.inp, F.stp, F.goutp, F.gfinp, F.ginp,
                                      F.gstp),
              FRNN_E_ARG, "frnn_reference_backward: step is NULL");
}
END_TEST

START_TEST(unfinished_step) {
  frnn_step *s = delta_rule(F.ctx, false);
  EXPECT_FAIL(frnn_reference_forward(F.ctx, s, F.sz, F.inp, F.stp, F.outp, F.finp), FRNN_E_ARG,
              "step 'delta_rule' is not finished");
  EXPECT_FAIL(frnn_reference_backward(F.ctx, s, F.sz, F.inp, F.stp, F.goutp, F.gfinp, F.ginp,
                                      F.gstp),
              FRNN_E_ARG, "step 'delta_rule' is not finished");
  frnn_step_destroy(s);
}
END_TEST

START_TEST(internal_step) {
  frnn_step *a;
  ck_assert_int_eq(frnn_step_adjoint(F.step, &a), FRNN_OK);
  EXPECT_FAIL(frnn_reference_forward(F.ctx, a, F.sz, F.inp, F.stp, F.outp, F.finp), FRNN_E_ARG,
              "is an internal step");
  frnn_step_destroy(a);
}
END_TEST

START_TEST(null_arrays) {
  EXPECT_FAIL(frnn_reference_forward(F.ctx, F.step, F.sz, NULL, F.stp, F.outp, F.finp),
              FRNN_E_ARG, "inputs is NULL, but step 'delta_rule' has 4 inputs");
  EXPECT_FAIL(frnn_reference_forward(F.ctx, F.step, F.sz, F.inp, NULL, F.outp, F.finp),
              FRNN_E_ARG, "states is NULL, but step 'delta_rule' has 1 states");
  EXPECT_FAIL(frnn_reference_forward(F.ctx, F.step, F.sz, F.inp, F.stp, NULL, F.finp),
              FRNN_E_ARG, "outputs is NULL, but step 'delta_rule' has 1 outputs");
  EXPECT_FAIL(frnn_reference_backward(F.ctx, F.step, F.sz, NULL, F.stp, F.goutp, F.gfinp,
                                      F.ginp, F.gstp),
              FRNN_E_ARG, "inputs is NULL");
  EXPECT_FAIL(frnn_reference_backward(F.ctx, F.step, F.sz, F.inp, NULL, F.goutp, F.gfinp,
                                      F.ginp, F.gstp),
              FRNN_E_ARG, "states is NULL");
  /* Optional arrays: NULL is fine. */
  ck_assert_int_eq(frnn_reference_forward(F.ctx, F.step, F.sz, F.inp, F.stp, F.outp, NULL),
                   FRNN_OK);
  ck_assert_int_eq(frnn_reference_backward(F.ctx, F.step, F.sz, F.inp, F.stp, NULL, NULL, NULL,
                                           NULL),
                   FRNN_OK);
}
END_TEST

START_TEST(null_tensor) {
  F.inp[1] = NULL;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'k' is NULL");
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "input 'k' is NULL");
  F.inp[1] = &F.in[1].t;
  F.stp[0] = NULL;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "initial state 'S' is NULL");
  F.stp[0] = &F.st.t;
  F.outp[0] = NULL;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "output 'y' is NULL");
}
END_TEST

START_TEST(null_data) {
  F.in[2].t.data = NULL;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'v' has no data");
  F.in[2].t.data = F.in[2].buf;
  F.fin.t.data = NULL;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "final state 'S' has no data");
  F.fin.t.data = F.fin.buf;
  F.gout.t.data = NULL;
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of output 'y' has no data");
}
END_TEST

START_TEST(wrong_ndim) {
  F.in[1].t.ndim = 4;
  EXPECT_FAIL(fwd(), FRNN_E_ARG,
              "input 'k' has 4 dimensions, shape [2,3,2,1]; expected 5: [B,T,H,1,N] = "
              "[2|1,3|1,2|1,1,4]");
  F.in[1].t.ndim = 5;
  F.st.t.ndim = 5;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "initial state 'S' has 5 dimensions");
  F.st.t.ndim = 4;
  F.out.t.ndim = 3;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "output 'y' has 3 dimensions, shape [2,3,2]; expected 4: "
                                 "[B,T,H,M] = [2,3,2,3]");
  F.out.t.ndim = 4;
  F.gin[0].t.ndim = 4;
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of input 'q' has 4 dimensions");
}
END_TEST

START_TEST(wrong_shape_each_dim) {
  char want[256];
  /* input k [B,T,H,1,N] */
  for (int d = 0; d < 5; d++) {
    int64_t keep = F.in[1].shape[d];
    F.in[1].shape[d] = keep + 1;
    char got[64];
    snprintf(got, sizeof got, "[%lld,%lld,%lld,%lld,%lld]", (long long)F.in[1].shape[0],
             (long long)F.in[1].shape[1], (long long)F.in[1].shape[2],
             (long long)F.in[1].shape[3], (long long)F.in[1].shape[4]);
    snprintf(want, sizeof want,
             "input 'k' has shape %s; expected [B,T,H,1,N] = [2|1,3|1,2|1,1,4]", got);
    EXPECT_FAIL(fwd(), FRNN_E_ARG, want);
    snprintf(want, sizeof want, "(dimension %d is %lld, not %lld%s)", d, (long long)keep + 1,
             (long long)keep, d < 3 ? " or 1" : "");
    EXPECT_FAIL(fwd(), FRNN_E_ARG, want);
    F.in[1].shape[d] = keep;
  }
  /* v [B,T,H,M,1]: the 1 must be 1, M must be M (not 1). */
  F.in[2].shape[3] = 1;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'v' has shape [2,3,2,1,1]; expected [B,T,H,M,1]");
  F.in[2].shape[3] = 3;
  /* state [B,H,M,N] */
  for (int d = 0; d < 4; d++) {
    int64_t keep = F.st.shape[d];
    F.st.shape[d] = keep == 1 ? 2 : 1; /* a state is never broadcast */
    EXPECT_FAIL(fwd(), FRNN_E_ARG, "initial state 'S' has shape");
    EXPECT_FAIL(fwd(), FRNN_E_ARG, "expected [B,H,M,N] = [2,2,3,4]");
    F.st.shape[d] = keep;
  }
  /* output [B,T,H,M] */
  for (int d = 0; d < 4; d++) {
    int64_t keep = F.out.shape[d];
    F.out.shape[d] = keep == 1 ? 2 : 1;
    EXPECT_FAIL(fwd(), FRNN_E_ARG, "output 'y' has shape");
    EXPECT_FAIL(fwd(), FRNN_E_ARG, "expected [B,T,H,M] = [2,3,2,3]");
    F.out.shape[d] = keep;
  }
  /* final state, gradients */
  F.fin.shape[3] = 5;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "final state 'S' has shape [2,2,3,5]; expected [B,H,M,N]");
  F.fin.shape[3] = 4;
  F.gfin.shape[0] = 1;
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of final state 'S' has shape [1,2,3,4]");
  F.gfin.shape[0] = 2;
  F.gout.shape[1] = 4;
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of output 'y' has shape [2,4,2,3]");
  F.gout.shape[1] = 3;
  F.gst.shape[2] = 2;
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of initial state 'S' has shape [2,2,2,4]");
  F.gst.shape[2] = 3;
}
END_TEST

START_TEST(grad_input_shape_is_the_inputs) {
  /* beta broadcast over B: its gradient must be [1,T,H,1,1], not [B,...]. */
  F.in[3].shape[0] = 1;
  EXPECT_FAIL(bwd(), FRNN_E_ARG,
              "gradient of input 'beta' has shape [2,3,2,1,1]; expected the input's shape = "
              "[1,3,2,1,1]");
  F.gin[3].shape[0] = 1;
  ck_assert_int_eq(bwd(), FRNN_OK);
}
END_TEST

START_TEST(mismatched_sizes_between_tensors) {
  /* Each tensor agrees with itself but not with the others (nor with sz). */
  F.in[0].shape[0] = 3; /* B */
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'q' has shape [3,3,2,1,4]; expected [B,T,H,1,N] = "
                                 "[2|1,3|1,2|1,1,4]");
  F.in[0].shape[0] = 2;
  F.in[2].shape[1] = 5; /* T */
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'v' has shape [2,5,2,3,1]");
  F.in[2].shape[1] = 3;
  F.st.shape[1] = 1; /* H of a state */
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "initial state 'S' has shape [2,1,3,4]");
}
END_TEST

START_TEST(zero_sized) {
  frnn_sizes keep = F.sz;
  F.sz.T = 0;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "sizes: T = 0");
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "sizes: T = 0");
  F.sz = keep;
  F.sz.M = -1;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "sizes: M = -1");
  F.sz = keep;
  F.sz.B = 0;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "sizes: B = 0");
  F.sz = keep;
  /* A tensor with a 0 dimension. */
  F.in[0].shape[4] = 0;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'q' has shape [2,3,2,1,0]");
  F.in[0].shape[4] = 4;
  F.in[0].shape[1] = 0;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'q' has shape [2,0,2,1,4]");
}
END_TEST

START_TEST(size_overflow) {
  F.sz = (frnn_sizes){.B = INT64_C(1) << 20, .T = INT64_C(1) << 20, .H = 1 << 20, .M = 1, .N = 1};
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "sizes: B*T*H overflows");
  F.sz = (frnn_sizes){.B = 1, .T = 1, .H = 1, .M = INT64_C(1) << 31, .N = INT64_C(1) << 31};
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "sizes: B*T*H*M*N overflows");
}
END_TEST

START_TEST(unsupported_dtype) {
  F.in[0].t.dtype = (DLDataType){kDLInt, 32, 1};
  EXPECT_FAIL(fwd(), FRNN_E_ARG,
              "input 'q' has dtype int32; expected float32, bfloat16, float16 or float64");
  F.in[0].t.dtype = (DLDataType){kDLFloat, 32, 2};
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'q' has dtype float32x2 (2 lanes)");
  F.in[0].t.dtype = DT_F64;
  F.out.t.dtype = (DLDataType){kDLBfloat, 32, 1};
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "output 'y' has dtype bfloat32");
  F.out.t.dtype = DT_F64;
  F.gst.t.dtype = (DLDataType){kDLFloat, 8, 1};
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of initial state 'S' has dtype float8");
}
END_TEST

START_TEST(wrong_device) {
  F.in[3].t.device = (DLDevice){kDLCUDA, 0};
  EXPECT_FAIL(fwd(), FRNN_E_ARG,
              "input 'beta' is on device kDLCUDA (2); expected host memory (kDLCPU or "
              "kDLCUDAHost)");
  F.in[3].t.device = (DLDevice){kDLCUDAHost, 0}; /* pinned host memory is fine */
  ck_assert_int_eq(fwd(), FRNN_OK);
  F.in[3].t.device = (DLDevice){kDLCPU, 0};
  fill(&F.out, SENTINEL), fill(&F.fin, SENTINEL);
  F.fin.t.device = (DLDevice){kDLROCM, 0};
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "final state 'S' is on device kDLROCM");
}
END_TEST

START_TEST(device_role_checks) {
  /* want_device: a GPU tensor of float32/bf16/f16, never float64. */
  tview v;
  int64_t row[5] = {2, 3, 2, 1, 4};
  ttensor x;
  tt_zeros(&x, DT_F32, 5, row);
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_INPUT, "q", FRNN_ROW, F.sz, true, NULL, &v),
                   FRNN_E_ARG);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(F.ctx), "expected kDLCUDA"));
  x.t.device = (DLDevice){kDLCUDA, 0};
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_INPUT, "q", FRNN_ROW, F.sz, true, NULL, &v),
                   FRNN_OK);
  x.t.dtype = DT_F64;
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_INPUT, "q", FRNN_ROW, F.sz, true, NULL, &v),
                   FRNN_E_ARG);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(F.ctx),
                               "input 'q' has dtype float64; expected float32, bfloat16 or "
                               "float16"));
  tt_free(&x);
}
END_TEST

START_TEST(negative_stride) {
  F.in[1].strides[4] = -1;
  EXPECT_FAIL(fwd(), FRNN_E_ARG,
              "input 'k' has stride -1 on dimension 4; strides must be non-negative");
  F.in[1].strides[4] = 1;
  F.gin[2].strides[0] = -18;
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of input 'v' has stride -18 on dimension 0");
  F.gin[2].strides[0] = 18;
  /* A dimension of size 1 has no stride that matters. */
  F.in[3].strides[4] = -5;
  ck_assert_int_eq(fwd(), FRNN_OK);
}
END_TEST

START_TEST(huge_stride) {
  F.in[1].strides[0] = INT64_MAX / 2;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "input 'k' has strides too large to address");
}
END_TEST

START_TEST(aliasing_outputs) {
  /* Stride 0 on a written dimension of size > 1. */
  F.out.strides[1] = 0;
  EXPECT_FAIL(fwd(), FRNN_E_ARG,
              "output 'y' has stride 0 on dimension 1 (of size 3): it is written");
  F.out.strides[1] = 6;
  /* Overlap: the T stride is smaller than the span of H and M. */
  F.out.strides[1] = 2;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "output 'y' has shape [2,3,2,3] and strides [18,2,3,1], whose "
                                 "elements overlap in memory");
  F.out.strides[1] = 6;
  F.fin.strides[3] = 0;
  EXPECT_FAIL(fwd(), FRNN_E_ARG, "final state 'S' has stride 0 on dimension 3");
  F.fin.strides[3] = 1;
  F.gin[0].strides[4] = 0;
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of input 'q' has stride 0 on dimension 4");
  F.gin[0].strides[4] = 1;
  F.gst.strides[2] = 1; /* rows and columns interleave: [.,.,3,4] with strides 1,1 */
  EXPECT_FAIL(bwd(), FRNN_E_ARG, "gradient of initial state 'S' has shape [2,2,3,4] and strides "
                                 "[24,12,1,1], whose elements overlap");
  F.gst.strides[2] = 4;
  /* Read-only tensors may be expanded (stride 0). */
  F.in[0].strides[1] = 0;
  F.gout.strides[0] = 0;
  F.gfin.strides[3] = 0;
  ck_assert_int_eq(fwd(), FRNN_OK);
  ck_assert_int_eq(bwd(), FRNN_OK);
}
END_TEST

START_TEST(interleaved_layout_is_not_overlap) {
  /* Shape [..,3,4] with strides (4 ... ) is simple; strides (2, 3) over a
   * [3, 2] block interleave without overlapping: 0,3 2,5 4,7.  Written
   * tensors in such a layout are accepted on the host (checked
   * exhaustively). */
  int64_t shape[4] = {1, 1, 3, 2};
  int64_t strides[4] = {0, 0, 2, 3};
  frnn_sizes sz = {.B = 1, .T = 1, .H = 1, .M = 3, .N = 2};
  ttensor x;
  tt_zeros(&x, DT_F64, 4, (int64_t[]){1, 1, 3, 3});
  x.t.shape = shape;
  x.t.strides = strides;
  tview v;
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_FINAL_STATE, "S", FRNN_MAT, sz, false, NULL, &v),
                   FRNN_OK);
  strides[3] = 2; /* 0,2 2,4: overlap */
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_FINAL_STATE, "S", FRNN_MAT, sz, false, NULL, &v),
                   FRNN_E_ARG);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(F.ctx), "overlap"));
  tt_free(&x);
}
END_TEST

START_TEST(scalar_output_forms) {
  /* A [1,1] output may be [B,T,H] or [B,T,H,1]. */
  frnn_sizes sz = {.B = 2, .T = 3, .H = 4, .M = 5, .N = 6};
  tview v;
  ttensor x;
  tt_zeros(&x, DT_F32, 3, (int64_t[]){2, 3, 4});
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_OUTPUT, "o", FRNN_SCALAR, sz, false, NULL, &v),
                   FRNN_OK);
  ck_assert_int_eq(v.stride[3], 0);
  ck_assert_int_eq(v.stride[4], 0);
  tt_free(&x);
  tt_zeros(&x, DT_F32, 4, (int64_t[]){2, 3, 4, 1});
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_OUTPUT, "o", FRNN_SCALAR, sz, false, NULL, &v),
                   FRNN_OK);
  tt_free(&x);
  tt_zeros(&x, DT_F32, 4, (int64_t[]){2, 3, 4, 5});
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_OUTPUT, "o", FRNN_SCALAR, sz, false, NULL, &v),
                   FRNN_E_ARG);
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(F.ctx),
                               "output 'o' has shape [2,3,4,5]; expected [B,T,H] = [2,3,4] or "
                               "[B,T,H,1] = [2,3,4,1] (dimension 3 is 5, not 1)"));
  tt_free(&x);
}
END_TEST

START_TEST(views) {
  /* Broadcast and size-1 dimensions get stride 0; extents are the tensor's. */
  tview v;
  ttensor x;
  tt_zeros(&x, DT_BF16, 5, (int64_t[]){1, 3, 2, 1, 4});
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_INPUT, "k", FRNN_ROW, F.sz, false, NULL, &v),
                   FRNN_OK);
  int64_t want_st[5] = {0, 8, 4, 0, 1}, want_ex[5] = {1, 3, 2, 1, 4};
  for (int d = 0; d < 5; d++) {
    ck_assert_int_eq(v.stride[d], want_st[d]);
    ck_assert_int_eq(v.extent[d], want_ex[d]);
  }
  ck_assert_int_eq(v.dtype, TD_BF16);
  tt_free(&x);
  tt_zeros(&x, DT_F16, 4, (int64_t[]){2, 2, 3, 4});
  x.t.byte_offset = 6;
  ck_assert_int_eq(tensor_bind(F.ctx, &x.t, ROLE_STATE, "S", FRNN_MAT, F.sz, false, NULL, &v),
                   FRNN_OK);
  ck_assert_ptr_eq(v.data, (char *)x.buf + 6);
  int64_t st_st[5] = {24, 0, 12, 4, 1};
  for (int d = 0; d < 5; d++) ck_assert_int_eq(v.stride[d], st_st[d]);
  tt_free(&x);
}
END_TEST

/* Round to nearest even, NaN and infinity, subnormals. */
START_TEST(conversions) {
  uint16_t buf[1];
  tview v = {.data = (char *)buf, .dtype = TD_BF16};
  struct { double x; uint16_t bits; } bf[] = {
      {1.0, 0x3f80},
      {1.0 + 0x1p-8, 0x3f80},             /* tie: to even (down) */
      {1.0 + 3 * 0x1p-8, 0x3f82},         /* tie: to even (up) */
      {1.0 + 0x1p-8 + 0x1p-40, 0x3f81},   /* just above the tie: up (no double rounding) */
      {-2.5, 0xc020},
      {0x1p-133, 0x0001},                 /* smallest subnormal */
      {0x1p-134, 0x0000},                 /* tie with zero: even */
      {3.5e38, 0x7f80},                   /* overflow: infinity */
      {-INFINITY, 0xff80},
      {0.0, 0x0000},
      {-0.0, 0x8000},
  };
  for (size_t k = 0; k < sizeof bf / sizeof *bf; k++) {
    tview_store(&v, 0, 0, 0, 0, 0, bf[k].x);
    ck_assert_msg(buf[0] == bf[k].bits, "bf16(%a) = %04x, expected %04x", bf[k].x, buf[0],
                  bf[k].bits);
    if (isfinite(bf[k].x) && fabs(bf[k].x) < 1e38)
      ck_assert(tview_load(&v, 0, 0, 0, 0, 0) == (double)(float)tview_load(&v, 0, 0, 0, 0, 0));
  }
  tview_store(&v, 0, 0, 0, 0, 0, NAN);
  ck_assert(isnan(tview_load(&v, 0, 0, 0, 0, 0)));

  v.dtype = TD_F16;
  struct { double x; uint16_t bits; } hf[] = {
      {1.0, 0x3c00},
      {1.0 + 0x1p-11, 0x3c00},            /* tie: to even (down) */
      {1.0 + 3 * 0x1p-11, 0x3c02},        /* tie: to even (up) */
      {65504.0, 0x7bff},
      {65519.0, 0x7bff},
      {65520.0, 0x7c00},                  /* tie at the top: infinity */
      {0x1p-24, 0x0001},
      {0x1p-25, 0x0000},                  /* tie: even */
      {0x1.8p-24, 0x0002},                /* tie: even (up) */
      {0x1p-14, 0x0400},                  /* smallest normal */
      {-0.5, 0xb800},
  };
  for (size_t k = 0; k < sizeof hf / sizeof *hf; k++) {
    tview_store(&v, 0, 0, 0, 0, 0, hf[k].x);
    ck_assert_msg(buf[0] == hf[k].bits, "f16(%a) = %04x, expected %04x", hf[k].x, buf[0],
                  hf[k].bits);
  }
  for (uint32_t h = 0; h < 0x10000; h++) { /* every half round-trips */
    buf[0] = (uint16_t)h;
    double x = tview_load(&v, 0, 0, 0, 0, 0);
    tview_store(&v, 0, 0, 0, 0, 0, x);
    if (isnan(x))
      ck_assert(isnan(tview_load(&v, 0, 0, 0, 0, 0)));
    else
      ck_assert_msg(buf[0] == h, "f16 %04x -> %a -> %04x", h, x, buf[0]);
  }
  v.dtype = TD_BF16;
  for (uint32_t h = 0; h < 0x10000; h++) {
    buf[0] = (uint16_t)h;
    double x = tview_load(&v, 0, 0, 0, 0, 0);
    tview_store(&v, 0, 0, 0, 0, 0, x);
    if (isnan(x))
      ck_assert(isnan(tview_load(&v, 0, 0, 0, 0, 0)));
    else
      ck_assert_msg(buf[0] == h, "bf16 %04x -> %a -> %04x", h, x, buf[0]);
  }
  float f[1];
  v = (tview){.data = (char *)f, .dtype = TD_F32};
  tview_store(&v, 0, 0, 0, 0, 0, 1.0 + 0x1p-24); /* tie: even */
  ck_assert(f[0] == 1.0f);
  tview_store(&v, 0, 0, 0, 0, 0, NAN);
  ck_assert(isnan(f[0]));
}
END_TEST

/* Backward out of memory: the state history of T steps cannot be held.
 * (Every tensor is a stride-0 expansion of one element, so the test needs
 * no memory of its own.) */
START_TEST(backward_out_of_memory) {
  frnn_step *s;
  frnn_value x, S[3];
  ck_assert_int_eq(frnn_step_create(F.ctx, "big", &s), FRNN_OK);
  ck_assert_int_eq(frnn_step_input(s, "x", FRNN_SCALAR, &x), FRNN_OK);
  const char *names[3] = {"S1", "S2", "S3"};
  frnn_value acc = x;
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(frnn_step_state(s, names[k], FRNN_MAT, &S[k]), FRNN_OK);
    ck_assert_int_eq(frnn_step_assign(s, names[k], ap(s, FRNN_OP_ADD, S[k], x)), FRNN_OK);
    acc = ap(s, FRNN_OP_ADD, acc, S[k]);
  }
  ck_assert_int_eq(frnn_step_output(s, "y", FRNN_COL, ap(s, FRNN_OP_SUM, acc, 0)), FRNN_OK);
  ck_assert_int_eq(frnn_step_finish(s), FRNN_OK);
  frnn_sizes sz = {.B = 1, .T = INT64_C(1) << 37, .H = 1, .M = 2048, .N = 2048};
  double one = 1, grad = SENTINEL;
  int64_t xs[5] = {1, 1, 1, 1, 1}, ss[4] = {1, 1, 2048, 2048}, zero[5] = {0, 0, 0, 0, 0};
  DLTensor xt = {&one, {kDLCPU, 0}, 5, DT_F64, xs, NULL, 0};
  DLTensor st = {&one, {kDLCPU, 0}, 4, DT_F64, ss, zero, 0};
  DLTensor gx = {&grad, {kDLCPU, 0}, 5, DT_F64, xs, NULL, 0};
  const DLTensor *in[1] = {&xt}, *sts[3] = {&st, &st, &st};
  DLTensor *gin[1] = {&gx};
  frnn_status r = frnn_reference_backward(F.ctx, s, sz, in, sts, NULL, NULL, gin, NULL);
  ck_assert_msg(r == FRNN_E_NOMEM, "status %s: %s", frnn_status_name(r), frnn_ctx_error(F.ctx));
  ck_assert_ptr_nonnull(strstr(frnn_ctx_error(F.ctx), "out of memory"));
  ck_assert(grad == SENTINEL);
  frnn_step_destroy(s);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("tensor_errors");
  TCase *tc = tcase_create("errors");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, fixture_is_valid);
  tcase_add_test(tc, null_ctx);
  tcase_add_test(tc, null_step);
  tcase_add_test(tc, unfinished_step);
  tcase_add_test(tc, internal_step);
  tcase_add_test(tc, null_arrays);
  tcase_add_test(tc, null_tensor);
  tcase_add_test(tc, null_data);
  tcase_add_test(tc, wrong_ndim);
  tcase_add_test(tc, wrong_shape_each_dim);
  tcase_add_test(tc, grad_input_shape_is_the_inputs);
  tcase_add_test(tc, mismatched_sizes_between_tensors);
  tcase_add_test(tc, zero_sized);
  tcase_add_test(tc, size_overflow);
  tcase_add_test(tc, unsupported_dtype);
  tcase_add_test(tc, wrong_device);
  tcase_add_test(tc, device_role_checks);
  tcase_add_test(tc, negative_stride);
  tcase_add_test(tc, huge_stride);
  tcase_add_test(tc, aliasing_outputs);
  tcase_add_test(tc, interleaved_layout_is_not_overlap);
  tcase_add_test(tc, scalar_output_forms);
  tcase_add_test(tc, views);
  tcase_add_test(tc, conversions);
  tcase_add_test(tc, backward_out_of_memory);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  R = test_rng("test_tensor_errors");
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
