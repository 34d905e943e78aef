/* test_frnn_run.c - the frnn-run tool, run as a process ($FRNN_BUILD_DIR/frnn-run):
 *
 * - a GLA step on .npy inputs (a broadcast gate, a Fortran-order key, a
 *   float64 value) through the reference executor, forward and backward,
 *   checked against a hand-written loop;
 * - --random: files written, replay with the same seed, --dtype bf16;
 * - the GPU path: results when a GPU is there, else "no GPU ...; use
 *   --reference" and exit status 1;
 * - usage errors (exit status 2) and failures (1), each message naming what
 *   was wrong.
 *
 * npy.c is compiled in to write inputs and read results. */
#include "../../tools/util/npy.c"

#include "runtool.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char GLA[] = "# GLA\n"
                          "step gla(q[1,N], k[1,N], v[M,1], g[1,N]; S[M,N]) -> y[M,1]\n"
                          "  S = S * exp(g) + v * k\n"
                          "  y = sum(S * q)\n";

enum { B = 2, T = 5, H = 3, M = 4, N = 3 };

static char tool[512], dir[64];
static rng R;

/* ------------------------------------------------------------- utilities */
static const char *path_in(const char *name) {
  static char buf[4][256];
  static int k;
  char *p = buf[k++ % 4];
  snprintf(p, 256, "%s/%s", dir, name);
  return p;
}

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/frnn-run-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  FILE *f = fopen(path_in("gla.frnn"), "w");
  ck_assert_ptr_nonnull(f);
  fputs(GLA, f);
  fclose(f);
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static char out_text[65536], err_text[65536];

/* Run frnn-run with these arguments (NULL-terminated); stdout and stderr
 * land in out_text and err_text; returns the exit status. */
static int run_tool(const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int rc = rt_vrun(tool, dir, out_text, sizeof out_text, err_text, sizeof err_text, arg, ap);
  va_end(ap);
  return rc;
}

#define EXPECT_EXIT(want, ...)                                                                     \
  do {                                                                                             \
    int rc_ = run_tool(__VA_ARGS__, NULL);                                                         \
    ck_assert_msg(rc_ == (want), "exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", rc_, (want), \
                  out_text, err_text);                                                             \
  } while (0)

#define EXPECT_ERR(sub)                                                                            \
  ck_assert_msg(strstr(err_text, (sub)), "stderr lacks '%s':\n%s", (sub), err_text)

static void save(const char *name, const htensor *x) {
  char err[512];
  ck_assert_msg(npy_write(path_in(name), &x->t, err, sizeof err) == 0, "%s", err);
}

static htensor *load(const char *name) {
  char err[512];
  htensor *x = NULL;
  ck_assert_msg(npy_read(path_in(name), &x, err, sizeof err) == 0, "%s", err);
  return x;
}

static htensor *random_tensor(DLDataType dt, int ndim, const int64_t *shape, double lo, double hi) {
  htensor *x = ht_new(dt, ndim, shape);
  for (int64_t k = 0; k < npy_numel(&x->t); k++)
    npy_elem_store((char *)x->buf + k * (int64_t)npy_dtype_size(dt), dt, rng_uniform(&R, lo, hi));
  return x;
}

/* Write x in Fortran order (column-major data, fortran_order True). */
static void save_fortran(const char *name, const htensor *x) {
  int nd = x->t.ndim;
  int64_t n = npy_numel(&x->t);
  size_t es = npy_dtype_size(x->t.dtype);
  char *data = malloc((size_t)n * es);
  for (int64_t k = 0; k < n; k++) {
    int64_t rem = k, fk = 0, fs = 1, idx[8];
    for (int i = nd - 1; i >= 0; i--) idx[i] = rem % x->shape[i], rem /= x->shape[i];
    for (int i = 0; i < nd; i++) fk += idx[i] * fs, fs *= x->shape[i];
    memcpy(data + fk * (int64_t)es, (char *)x->buf + k * (int64_t)es, es);
  }
  char shape[128], header[256];
  format_shape(shape, sizeof shape, nd, x->shape);
  int len = snprintf(header, sizeof header,
                     "{'descr': '<f4', 'fortran_order': True, 'shape': %s, }", shape);
  int pad = (64 - (10 + len + 1) % 64) % 64, hlen = len + pad + 1;
  FILE *f = fopen(path_in(name), "wb");
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(hlen & 0xff, f);
  fputc(hlen >> 8, f);
  fwrite(header, 1, (size_t)len, f);
  for (int i = 0; i < pad; i++) fputc(' ', f);
  fputc('\n', f);
  fwrite(data, es, (size_t)n, f);
  fclose(f);
  free(data);
}

/* Element of a 4- or 5-D tensor by index. */
static double at(const htensor *x, int64_t i0, int64_t i1, int64_t i2, int64_t i3, int64_t i4) {
  int64_t idx[5] = {i0, i1, i2, i3, i4}, off = 0;
  for (int d = 0; d < x->t.ndim; d++) off += (x->shape[d] == 1 ? 0 : idx[d]) * x->strides[d];
  return npy_elem_load((char *)x->buf + off * (int64_t)npy_dtype_size(x->t.dtype), x->t.dtype);
}

/* ------------------------------------------------------- the GLA by hand */
typedef struct gla_io {
  htensor *q, *k, *v, *g, *S0, *gy, *gS; /* given (g broadcast over B) */
  double y[B][T][H][M], S[B][H][M][N];   /* forward */
  double dq[B][T][H][N], dk[B][T][H][N], dv[B][T][H][M], dg[T][H][N], dS0[B][H][M][N];
} gla_io;

static void gla_by_hand(gla_io *io) {
  memset(io->dg, 0, sizeof io->dg);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      double S[T + 1][M][N];
      for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) S[0][m][n] = at(io->S0, b, h, m, n, 0);
      for (int t = 0; t < T; t++)
        for (int m = 0; m < M; m++) {
          double y = 0;
          for (int n = 0; n < N; n++) {
            S[t + 1][m][n] = S[t][m][n] * exp(at(io->g, b, t, h, 0, n)) +
                             at(io->v, b, t, h, m, 0) * at(io->k, b, t, h, 0, n);
            y += S[t + 1][m][n] * at(io->q, b, t, h, 0, n);
          }
          io->y[b][t][h][m] = y;
        }
      memcpy(io->S[b][h], S[T], sizeof S[T]);
      /* Backward through time. */
      double dS[M][N];
      for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) dS[m][n] = at(io->gS, b, h, m, n, 0);
      for (int t = T - 1; t >= 0; t--) {
        for (int m = 0; m < M; m++)
          for (int n = 0; n < N; n++)
            dS[m][n] += at(io->gy, b, t, h, m, 0) * at(io->q, b, t, h, 0, n);
        for (int n = 0; n < N; n++) {
          double dq = 0, dk = 0, dg = 0, e = exp(at(io->g, b, t, h, 0, n));
          for (int m = 0; m < M; m++) {
            dq += S[t + 1][m][n] * at(io->gy, b, t, h, m, 0);
            dk += dS[m][n] * at(io->v, b, t, h, m, 0);
            dg += dS[m][n] * S[t][m][n] * e;
          }
          io->dq[b][t][h][n] = dq, io->dk[b][t][h][n] = dk;
          io->dg[t][h][n] += dg;
        }
        for (int m = 0; m < M; m++) {
          double dv = 0;
          for (int n = 0; n < N; n++) dv += dS[m][n] * at(io->k, b, t, h, 0, n);
          io->dv[b][t][h][m] = dv;
        }
        for (int m = 0; m < M; m++)
          for (int n = 0; n < N; n++) dS[m][n] *= exp(at(io->g, b, t, h, 0, n));
      }
      memcpy(io->dS0[b][h], dS, sizeof dS);
    }
}

/* ||got - want|| / ||want|| over n doubles, got from a written file. */
static void expect_close(const char *file, const double *want, int64_t n, int ndim,
                         const int64_t *shape, DLDataType dt, double tol) {
  htensor *x = load(file);
  ck_assert_msg(npy_dtype_equal(x->t.dtype, dt), "%s is %s, want %s", file,
                npy_dtype_name(x->t.dtype), npy_dtype_name(dt));
  ck_assert_int_eq(x->t.ndim, ndim);
  for (int d = 0; d < ndim; d++)
    ck_assert_msg(x->shape[d] == shape[d], "%s: dim %d is %lld, want %lld", file, d,
                  (long long)x->shape[d], (long long)shape[d]);
  ck_assert_int_eq(npy_numel(&x->t), n);
  double num = 0, den = 0;
  for (int64_t k = 0; k < n; k++) {
    double d = npy_get(&x->t, k) - want[k];
    num += d * d, den += want[k] * want[k];
  }
  ck_assert_msg(den > 0, "%s: reference is all zero", file);
  ck_assert_msg(sqrt(num / den) < tol, "%s: relative error %g (tolerance %g)", file,
                sqrt(num / den), tol);
  ht_free(x);
}

static void make_inputs(gla_io *io) {
  io->q = random_tensor(NPY_F32, 5, (int64_t[]){B, T, H, 1, N}, -1, 1);
  io->k = random_tensor(NPY_F32, 5, (int64_t[]){B, T, H, 1, N}, -1, 1);
  io->v = random_tensor(NPY_F64, 5, (int64_t[]){B, T, H, M, 1}, -1, 1);
  io->g = random_tensor(NPY_F32, 5, (int64_t[]){1, T, H, 1, N}, -0.5, 0.1);
  io->S0 = random_tensor(NPY_F32, 4, (int64_t[]){B, H, M, N}, -1, 1);
  io->gy = random_tensor(NPY_F32, 4, (int64_t[]){B, T, H, M}, -1, 1);
  io->gS = random_tensor(NPY_F32, 4, (int64_t[]){B, H, M, N}, -1, 1);
  save("q.npy", io->q);
  save_fortran("k.npy", io->k);
  save("v.npy", io->v);
  save("g.npy", io->g);
  save("S0.npy", io->S0);
  save("gy.npy", io->gy);
  save("gS.npy", io->gS);
}

static void free_inputs(gla_io *io) {
  htensor *all[] = {io->q, io->k, io->v, io->g, io->S0, io->gy, io->gS};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ht_free(all[i]);
}

#define IN_ARGS                                                                                    \
  "--in", "q=q.npy", "--in", "k=k.npy", "--in", "v=v.npy", "--in", "g=g.npy", "--in", "S=S0.npy"

/* Check every written file of a run over the GLA inputs against the loop.
 * v_dt: the dtype v was run in (float64 on the reference, read as float32
 * on the GPU). */
static void check_results(gla_io *io, const char *out, DLDataType v_dt, double tol) {
  char f[64];
#define FILE_IN(name) (snprintf(f, sizeof f, "%s/%s", out, name), f)
  /* Outputs float32 (the inputs' dtype, or float32 for mixed ones);
   * gradients and the final state keep their input's dtype. */
  expect_close(FILE_IN("y.npy"), &io->y[0][0][0][0], B * T * H * M, 4, (int64_t[]){B, T, H, M},
               NPY_F32, tol);
  expect_close(FILE_IN("S.npy"), &io->S[0][0][0][0], B * H * M * N, 4, (int64_t[]){B, H, M, N},
               NPY_F32, tol);
  expect_close(FILE_IN("grad_q.npy"), &io->dq[0][0][0][0], B * T * H * N, 5,
               (int64_t[]){B, T, H, 1, N}, NPY_F32, tol);
  expect_close(FILE_IN("grad_k.npy"), &io->dk[0][0][0][0], B * T * H * N, 5,
               (int64_t[]){B, T, H, 1, N}, NPY_F32, tol);
  expect_close(FILE_IN("grad_v.npy"), &io->dv[0][0][0][0], B * T * H * M, 5,
               (int64_t[]){B, T, H, M, 1}, v_dt, tol);
  expect_close(FILE_IN("grad_g.npy"), &io->dg[0][0][0], T * H * N, 5, (int64_t[]){1, T, H, 1, N},
               NPY_F32, tol);
  expect_close(FILE_IN("grad_S.npy"), &io->dS0[0][0][0][0], B * H * M * N, 4,
               (int64_t[]){B, H, M, N}, NPY_F32, tol);
#undef FILE_IN
}

/* ------------------------------------------------------------------ tests */
START_TEST(test_reference_forward_backward) {
  static gla_io io;
  make_inputs(&io);
  gla_by_hand(&io);
  ck_assert_int_eq(chdir(dir), 0);
  EXPECT_EXIT(0, "gla.frnn", IN_ARGS, "--grad", "y=gy.npy", "--grad", "S=gS.npy", "--out", "res",
              "--reference");
  check_results(&io, "res", NPY_F64, 1e-6);
  /* The summary: step, hash, sizes, one line per written array. */
  ck_assert_msg(strstr(out_text, "step gla  hash "), "%s", out_text);
  ck_assert_msg(strstr(out_text, "sizes B=2 T=5 H=3 M=4 N=3"), "%s", out_text);
  ck_assert_msg(strstr(out_text, "grad_g "), "%s", out_text);
  ck_assert_msg(strstr(out_text, "wrote 7 arrays to res"), "%s", out_text);
  /* Forward only: no gradient files.  A missing --grad is zero: with only
   * the final state's gradient, grad_q is zero. */
  EXPECT_EXIT(0, "gla.frnn", IN_ARGS, "--out", "fw", "--reference");
  ck_assert_int_ne(access("fw/y.npy", F_OK), -1);
  ck_assert_int_eq(access("fw/grad_q.npy", F_OK), -1);
  EXPECT_EXIT(0, "gla.frnn", IN_ARGS, "--grad=S=gS.npy", "--out=zero", "--reference");
  htensor *dq = load("zero/grad_q.npy");
  for (int64_t k = 0; k < npy_numel(&dq->t); k++) ck_assert_double_eq(npy_get(&dq->t, k), 0);
  ht_free(dq);
  /* --dtype bf16: every array read is converted, so every one written is
   * bfloat16 ('<V2' on disk). */
  EXPECT_EXIT(0, "gla.frnn", IN_ARGS, "--grad", "y=gy.npy", "--out", "bf", "--reference", "--dtype",
              "bf16");
  htensor *y = load("bf/y.npy"), *gv = load("bf/grad_v.npy");
  ck_assert(npy_dtype_equal(y->t.dtype, NPY_BF16) && npy_dtype_equal(gv->t.dtype, NPY_BF16));
  ht_free(y);
  ht_free(gv);
  free_inputs(&io);
}
END_TEST

/* The default runs on the GPU: results as the reference's, or without a
 * GPU the message that says to use --reference. */
START_TEST(test_gpu_or_message) {
  static gla_io io;
  make_inputs(&io);
  gla_by_hand(&io);
  ck_assert_int_eq(chdir(dir), 0);
  int rc = run_tool("gla.frnn", IN_ARGS, "--grad", "y=gy.npy", "--grad", "S=gS.npy", "--out", "gpu",
                    NULL);
  if (strstr(err_text, "no GPU")) {
    ck_assert_int_eq(rc, 1);
    EXPECT_ERR("frnn-run: no GPU: ");
    EXPECT_ERR("; use --reference");
    EXPECT_EXIT(1, "gla.frnn", IN_ARGS, "--out", "gpu", "--compare");
    EXPECT_ERR("no GPU");
  } else {
    ck_assert_msg(rc == 0, "exit %d\n%s", rc, err_text);
    check_results(&io, "gpu", NPY_F32, 1e-4);
    EXPECT_EXIT(0, "gla.frnn", IN_ARGS, "--grad", "y=gy.npy", "--out", "cmp", "--compare");
    ck_assert_msg(strstr(out_text, "rel.err"), "%s", out_text);
  }
  free_inputs(&io);
}
END_TEST

START_TEST(test_random) {
  ck_assert_int_eq(chdir(dir), 0);
  EXPECT_EXIT(0, "gla.frnn", "--reference", "--random", "B=2,T=7,H=1,M=3,N=5", "--seed", "42",
              "--out", "r1");
  ck_assert_msg(strstr(out_text, "seed 42"), "%s", out_text);
  ck_assert_msg(strstr(out_text, "sizes B=2 T=7 H=1 M=3 N=5"), "%s", out_text);
  static const char *const files[] = {"in_q", "in_k", "in_v", "in_g", "in_S", "y", "S"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char f[64];
    snprintf(f, sizeof f, "r1/%s.npy", files[i]);
    htensor *x = load(f);
    ck_assert(npy_dtype_equal(x->t.dtype, NPY_F32));
    for (int64_t k = 0; k < npy_numel(&x->t) && i < 5; k++)
      ck_assert(fabs(npy_get(&x->t, k)) <= 0.5);
    ht_free(x);
  }
  htensor *q = load("r1/in_q.npy");
  ck_assert_int_eq(q->t.ndim, 5);
  ck_assert_int_eq(q->shape[1], 7);
  ck_assert_int_eq(q->shape[4], 5);
  ht_free(q);
  /* Same seed, same numbers; replaying the written inputs, same outputs. */
  EXPECT_EXIT(0, "gla.frnn", "--reference", "--random", "N=5,M=3,H=1,T=7,B=2", "--seed=42", "--out",
              "r2");
  EXPECT_EXIT(0, "gla.frnn", "--reference", "--in", "q=r1/in_q.npy", "--in", "k=r1/in_k.npy",
              "--in", "v=r1/in_v.npy", "--in", "g=r1/in_g.npy", "--in", "S=r1/in_S.npy", "--out",
              "r3");
  htensor *y1 = load("r1/y.npy"), *y2 = load("r2/y.npy"), *y3 = load("r3/y.npy");
  ck_assert_int_eq(memcmp(y1->buf, y2->buf, y1->bytes), 0);
  ck_assert_int_eq(memcmp(y1->buf, y3->buf, y1->bytes), 0);
  ht_free(y1);
  ht_free(y2);
  ht_free(y3);
  /* --random-grad, --range and --dtype. */
  EXPECT_EXIT(0, "gla.frnn", "--reference", "--random", "B=1,T=3,H=2,M=2,N=2", "--random-grad",
              "--range", "0.1,0.2", "--dtype", "f16", "--out", "r4");
  htensor *gq = load("r4/grad_q.npy"), *gy = load("r4/in_grad_y.npy");
  ck_assert(npy_dtype_equal(gq->t.dtype, NPY_F16));
  for (int64_t k = 0; k < npy_numel(&gy->t); k++) {
    double v = npy_get(&gy->t, k);
    ck_assert(v >= 0.099 && v <= 0.2);
  }
  ht_free(gq);
  ht_free(gy);
}
END_TEST

/* Usage errors: exit status 2, a message naming the culprit. */
START_TEST(test_usage_errors) {
  static gla_io io;
  make_inputs(&io);
  ck_assert_int_eq(chdir(dir), 0);
  EXPECT_EXIT(2, "gla.frnn", "--in", "q=q.npy", "--in", "k=k.npy", "--in", "v=v.npy", "--in",
              "S=S0.npy", "--out", "o", "--reference");
  EXPECT_ERR("missing --in for input 'g' of step 'gla'");
  EXPECT_EXIT(2, "gla.frnn", "--in", "q=q.npy", "--in", "k=k.npy", "--in", "v=v.npy", "--in",
              "g=g.npy", "--out", "o", "--reference");
  EXPECT_ERR("missing --in for initial state 'S'");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--in", "q=k.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in q given twice");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--in", "y=q.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in y: 'y' is an output of step 'gla'");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--in", "bogus=q.npy", "--out", "o", "--reference");
  EXPECT_ERR("step 'gla' has no input or state named 'bogus' (inputs: q, k, v, g; states: S)");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--grad", "q=q.npy", "--out", "o", "--reference");
  EXPECT_ERR("--grad q: 'q' is an input of step 'gla'");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--grad", "z=q.npy", "--out", "o", "--reference");
  EXPECT_ERR("has no output or state named 'z'");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--reference");
  EXPECT_ERR("missing --out DIR");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--reference", "--out");
  EXPECT_ERR("--out needs a value");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--out", "o", "--reference", "--frobnicate");
  EXPECT_ERR("unknown option '--frobnicate'");
  EXPECT_EXIT(2, "gla.frnn", "--in", "q.npy", "--out", "o");
  EXPECT_ERR("--in 'q.npy': expected NAME=FILE.npy");
  EXPECT_EXIT(2, "--out", "o");
  EXPECT_ERR("no step file given");
  EXPECT_EXIT(2, "gla.frnn", "--random", "B=1,T=2,H=1,M=2", "--out", "o", "--reference");
  EXPECT_ERR("give all of B, T, H, M and N");
  EXPECT_EXIT(2, "gla.frnn", "--random", "B=1,T=0,H=1,M=2,N=2", "--out", "o", "--reference");
  EXPECT_ERR("T=0 is not a positive integer");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--random", "B=1,T=2,H=1,M=2,N=2", "--out", "o");
  EXPECT_ERR("--random and --in exclude each other");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--out", "o", "--dtype", "int8");
  EXPECT_ERR("--dtype 'int8'");
  EXPECT_EXIT(2, "gla.frnn", IN_ARGS, "--out", "o", "--reference", "--compare");
  EXPECT_ERR("drop --reference");
  EXPECT_EXIT(0, "gla.frnn", "--help");
  ck_assert_msg(strstr(out_text, "usage: frnn-run"), "%s", out_text);
  free_inputs(&io);
}
END_TEST

/* Failures: exit status 1, the message naming the array or file. */
START_TEST(test_failures) {
  static gla_io io;
  make_inputs(&io);
  ck_assert_int_eq(chdir(dir), 0);
  /* k with N = 4 where q has N = 3. */
  htensor *k4 = random_tensor(NPY_F32, 5, (int64_t[]){B, T, H, 1, 4}, -1, 1);
  save("k4.npy", k4);
  EXPECT_EXIT(1, "gla.frnn", "--in", "q=q.npy", "--in", "k=k4.npy", "--in", "v=v.npy", "--in",
              "g=g.npy", "--in", "S=S0.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in k (k4.npy): shape (2, 5, 3, 1, 4) does not fit input 'k' [B,T,H,1,N]");
  EXPECT_ERR("dimension 4 (N) is 4 but N=3");
  /* A row input given as a column. */
  EXPECT_EXIT(1, "gla.frnn", "--in", "q=v.npy", "--in", "k=k.npy", "--in", "v=v.npy", "--in",
              "g=g.npy", "--in", "S=S0.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in q (v.npy): shape (2, 5, 3, 4, 1) does not fit input 'q' [B,T,H,1,N]: "
             "dimension 3 is 4, should be 1");
  /* A state broadcast over B (states never are). */
  htensor *s1 = random_tensor(NPY_F32, 4, (int64_t[]){1, H, M, N}, -1, 1);
  save("S1.npy", s1);
  EXPECT_EXIT(1, "gla.frnn", "--in", "q=q.npy", "--in", "k=k.npy", "--in", "v=v.npy", "--in",
              "g=g.npy", "--in", "S=S1.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in S (S1.npy)");
  EXPECT_ERR("dimension 0 (B) is 1 but B=2");
  /* Wrong number of dimensions; a wrong gradient shape. */
  EXPECT_EXIT(1, "gla.frnn", "--in", "q=S0.npy", "--in", "k=k.npy", "--in", "v=v.npy", "--in",
              "g=g.npy", "--in", "S=S0.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in q (S0.npy): shape (2, 3, 4, 3) has 4 dimensions; input 'q' is [B,T,H,1,N]");
  EXPECT_EXIT(1, "gla.frnn", IN_ARGS, "--grad", "y=gS.npy", "--out", "o", "--reference");
  EXPECT_ERR("--grad y (gS.npy): shape (2, 3, 4, 3) does not fit gradient of output 'y'");
  /* Unreadable and malformed files. */
  EXPECT_EXIT(1, "gla.frnn", "--in", "q=nowhere.npy", "--in", "k=k.npy", "--in", "v=v.npy", "--in",
              "g=g.npy", "--in", "S=S0.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in q: cannot open nowhere.npy");
  EXPECT_EXIT(1, "gla.frnn", "--in", "q=gla.frnn", "--in", "k=k.npy", "--in", "v=v.npy", "--in",
              "g=g.npy", "--in", "S=S0.npy", "--out", "o", "--reference");
  EXPECT_ERR("--in q: gla.frnn: not a .npy file");
  /* A bad step file; an --out that cannot be created. */
  EXPECT_EXIT(1, "nowhere.frnn", IN_ARGS, "--out", "o", "--reference");
  EXPECT_ERR("nowhere.frnn");
  EXPECT_EXIT(1, "gla.frnn", IN_ARGS, "--out", "gla.frnn/sub", "--reference");
  EXPECT_ERR("cannot create directory gla.frnn");
  ht_free(k4);
  ht_free(s1);
  free_inputs(&io);
}
END_TEST

int main(void) {
  int found = rt_find_tool("frnn-run", tool, sizeof tool);
  if (found != 0) return found;
  R = test_rng("frnn_run");
  Suite *su = suite_create("frnn_run");
  TCase *tc = tcase_create("frnn_run");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_reference_forward_backward);
  tcase_add_test(tc, test_gpu_or_message);
  tcase_add_test(tc, test_random);
  tcase_add_test(tc, test_usage_errors);
  tcase_add_test(tc, test_failures);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
