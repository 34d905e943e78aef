/* test_npy.c - .npy reading and writing for the tools (tools/util/npy.c):
 *
 * - round trips of every dtype (float32, float64, float16, bfloat16), ndim
 *   0..5, C and Fortran order, format versions 1.0, 2.0 and 3.0;
 * - what NumPy writes that must be read: double quotes, Python 2 'L' dims,
 *   '=' byte order, '|V2' and 'bfloat16' descrs, trailing bytes;
 * - float16 / bfloat16 rounding (to nearest even, no double rounding);
 * - every class of malformed file, each with its message naming the file.
 *
 * npy.c is compiled into this test (test executables do not link the tools'
 * helpers). */
#include "../../tools/util/npy.c"

#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];
static rng R;

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/frnn-npy-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}

static const char *tmp_path(const char *name) {
  static char buf[256];
  snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
  return buf;
}

/* A .npy image: preamble of `major`.0, the header text as given (padded
 * with spaces and a newline to 64 bytes), then `data`. */
static size_t make_npy(unsigned char *out, int major, const char *header, const void *data,
                       size_t data_len) {
  size_t pre = major == 1 ? 10 : 12, len = strlen(header);
  size_t total = pre + len + 1, pad = (64 - total % 64) % 64, hlen = len + pad + 1;
  memcpy(out, "\x93NUMPY", 6);
  out[6] = (unsigned char)major;
  out[7] = 0;
  for (size_t i = 0; i < pre - 8; i++) out[8 + i] = (unsigned char)(hlen >> (8 * i));
  memcpy(out + pre, header, len);
  memset(out + pre + len, ' ', pad);
  out[pre + hlen - 1] = '\n';
  if (data_len) memcpy(out + pre + hlen, data, data_len);
  return pre + hlen + data_len;
}

/* Parse an image that must fail; the message names the file and holds sub. */
static void parse_fails(const void *img, size_t len, const char *sub) {
  char err[512] = "";
  htensor *x = (htensor *)1;
  ck_assert_int_eq(npy_parse("bad.npy", img, len, &x, err, sizeof err), -1);
  ck_assert_ptr_null(x);
  ck_assert_msg(strstr(err, "bad.npy"), "message does not name the file: %s", err);
  ck_assert_msg(strstr(err, sub), "message lacks '%s': %s", sub, err);
}

static void header_fails(const char *header, const char *sub) {
  unsigned char img[1024];
  float data[64] = {0};
  parse_fails(img, make_npy(img, 1, header, data, sizeof data), sub);
}

static htensor *parse_ok(const void *img, size_t len) {
  char err[512] = "";
  htensor *x = NULL;
  ck_assert_msg(npy_parse("ok.npy", img, len, &x, err, sizeof err) == 0, "%s", err);
  ck_assert_ptr_nonnull(x);
  return x;
}

static const DLDataType *const DTYPES[] = {&NPY_F32, &NPY_F64, &NPY_F16, &NPY_BF16};

/* Random values exactly representable in dt (so round trips are exact). */
static void fill_random(htensor *x) {
  for (int64_t k = 0; k < npy_numel(&x->t); k++)
    npy_elem_store((char *)x->buf + k * (int64_t)npy_dtype_size(x->t.dtype), x->t.dtype,
                   rng_normal(&R) * 4);
}

static void assert_same_values(const DLTensor *a, const DLTensor *b) {
  ck_assert_int_eq(a->ndim, b->ndim);
  for (int i = 0; i < a->ndim; i++) ck_assert_int_eq(a->shape[i], b->shape[i]);
  for (int64_t k = 0; k < npy_numel(a); k++) {
    double u = npy_get(a, k), v = npy_get(b, k);
    ck_assert_msg(u == v, "element %lld: %.17g != %.17g", (long long)k, u, v);
  }
}

/* Every dtype x ndim 0..5: write, read back, same dtype, shape and bits. */
START_TEST(test_round_trip) {
  const DLDataType dt = *DTYPES[_i / 6];
  int ndim = _i % 6;
  int64_t shape[NPY_MAX_NDIM] = {0};
  for (int i = 0; i < ndim; i++) shape[i] = 1 + (int64_t)(rng_next(&R) % 4);
  htensor *x = ht_new(dt, ndim, shape);
  ck_assert_ptr_nonnull(x);
  fill_random(x);
  char err[512];
  const char *path = tmp_path("rt.npy");
  ck_assert_msg(npy_write(path, &x->t, err, sizeof err) == 0, "%s", err);
  htensor *y = NULL;
  ck_assert_msg(npy_read(path, &y, err, sizeof err) == 0, "%s", err);
  ck_assert(npy_dtype_equal(y->t.dtype, dt));
  ck_assert_int_eq(y->t.device.device_type, kDLCPU);
  assert_same_values(&x->t, &y->t);
  ck_assert_int_eq(memcmp(x->buf, y->buf, (size_t)npy_numel(&x->t) * npy_dtype_size(dt)), 0);
  /* The header is 64-byte aligned, as NumPy writes it. */
  FILE *f = fopen(path, "rb");
  unsigned char pre[10];
  ck_assert_int_eq(fread(pre, 1, 10, f), 10);
  fclose(f);
  ck_assert_int_eq((10 + pre[8] + 256 * pre[9]) % 64, 0);
  ht_free(x);
  ht_free(y);
}
END_TEST

/* Fortran order: kept as strides; element (i,j,...) is the same as in C
 * order; writing it gives a C-order file with the same logical values. */
START_TEST(test_fortran_order) {
  const DLDataType dt = *DTYPES[_i / 6];
  int ndim = _i % 6;
  int64_t shape[NPY_MAX_NDIM] = {0}, n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i] = 2 + i % 3;
  htensor *c = ht_new(dt, ndim, shape);
  fill_random(c);
  /* Column-major bytes of c's logical array. */
  size_t es = npy_dtype_size(dt);
  char *fdata = malloc((size_t)n * es);
  for (int64_t k = 0; k < n; k++) {
    int64_t rem = k, fk = 0, fstride = 1;
    int64_t idx[NPY_MAX_NDIM];
    for (int i = ndim - 1; i >= 0; i--) idx[i] = rem % shape[i], rem /= shape[i];
    for (int i = 0; i < ndim; i++) fk += idx[i] * fstride, fstride *= shape[i];
    memcpy(fdata + fk * (int64_t)es, (char *)c->buf + k * (int64_t)es, es);
  }
  char header[256], shape_text[128];
  format_shape(shape_text, sizeof shape_text, ndim, shape);
  const char *descr = dt.bits == 32          ? "<f4"
                      : dt.bits == 64        ? "<f8"
                      : dt.code == kDLBfloat ? "<V2"
                                             : "<f2";
  snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': True, 'shape': %s, }", descr,
           shape_text);
  unsigned char img[4096];
  htensor *f = parse_ok(img, make_npy(img, 1, header, fdata, (size_t)n * es));
  assert_same_values(&c->t, &f->t);
  if (ndim >= 2) ck_assert_int_eq(f->strides[0], 1);
  char err[512];
  ck_assert_msg(npy_write(tmp_path("f.npy"), &f->t, err, sizeof err) == 0, "%s", err);
  htensor *back = NULL;
  ck_assert_msg(npy_read(tmp_path("f.npy"), &back, err, sizeof err) == 0, "%s", err);
  assert_same_values(&c->t, &back->t);
  ck_assert_int_eq(memcmp(c->buf, back->buf, (size_t)n * es), 0); /* C order on disk */
  /* And converted (losslessly) to float64 in C order. */
  htensor *conv = ht_convert(&f->t, NPY_F64);
  assert_same_values(&c->t, &conv->t);
  free(fdata);
  ht_free(c);
  ht_free(f);
  ht_free(back);
  ht_free(conv);
}
END_TEST

START_TEST(test_versions_and_variants) {
  float data[6] = {1, 2, 3, 4, 5, 6};
  unsigned char img[1024];
  for (int major = 1; major <= 3; major++) {
    htensor *x = parse_ok(img, make_npy(img, major,
                                        "{'descr': '<f4', 'fortran_order': False, "
                                        "'shape': (2, 3), }",
                                        data, sizeof data));
    ck_assert_int_eq(x->t.ndim, 2);
    ck_assert_double_eq(npy_get(&x->t, 5), 6);
    ht_free(x);
  }
  /* Variants NumPy or other writers produce. */
  static const char *const ok_headers[] = {
      "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (6,)}",
      "{'shape': (2L, 3L), 'fortran_order': False, 'descr': '=f4'}",
      "{ 'descr' : '<f4' , 'fortran_order' : False , 'shape' : ( 6 , ) , }",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (6), }",
  };
  for (size_t i = 0; i < sizeof ok_headers / sizeof *ok_headers; i++) {
    htensor *x = parse_ok(img, make_npy(img, 1, ok_headers[i], data, sizeof data));
    ck_assert_int_eq(npy_numel(&x->t), 6);
    ck_assert(npy_dtype_equal(x->t.dtype, NPY_F32));
    ht_free(x);
  }
  /* bfloat16 as '<V2', '|V2' (ml_dtypes through np.save) or 'bfloat16'. */
  uint16_t bf[2] = {0x3f80, 0xc040}; /* 1.0, -3.0 */
  static const char *const bf_descr[] = {"<V2", "|V2", "bfloat16"};
  for (int i = 0; i < 3; i++) {
    char header[128];
    snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (2,), }",
             bf_descr[i]);
    htensor *x = parse_ok(img, make_npy(img, 1, header, bf, sizeof bf));
    ck_assert(npy_dtype_equal(x->t.dtype, NPY_BF16));
    ck_assert_double_eq(npy_get(&x->t, 0), 1.0);
    ck_assert_double_eq(npy_get(&x->t, 1), -3.0);
    ht_free(x);
  }
  /* ndim 0 and an empty array; trailing bytes after the data are ignored
   * (as np.load does). */
  double d[2] = {2.5, 7};
  htensor *x = parse_ok(img, make_npy(img, 1,
                                      "{'descr': '<f8', 'fortran_order': False, "
                                      "'shape': (), }",
                                      d, sizeof d));
  ck_assert_int_eq(x->t.ndim, 0);
  ck_assert_double_eq(npy_get(&x->t, 0), 2.5);
  ht_free(x);
  x = parse_ok(img, make_npy(img, 1,
                             "{'descr': '<f8', 'fortran_order': False, "
                             "'shape': (3, 0, 1000000000000), }",
                             NULL, 0));
  ck_assert_int_eq(npy_numel(&x->t), 0);
  ht_free(x);
}
END_TEST

/* Rounding to float16 and bfloat16: to nearest even, overflow to infinity,
 * subnormals, and no double rounding from float64. */
START_TEST(test_rounding) {
  unsigned char b[8];
  struct {
    DLDataType dt;
    double in;
    uint16_t bits;
  } cases[] = {
      {NPY_F16, 1.0, 0x3c00},
      {NPY_F16, 65504, 0x7bff},
      {NPY_F16, 65519.99, 0x7bff},
      {NPY_F16, 65520, 0x7c00},
      {NPY_F16, -1e9, 0xfc00},
      {NPY_F16, 0x1p-24, 0x0001},
      {NPY_F16, 0x1p-25, 0x0000}, /* tie to even: 0 */
      {NPY_F16, 0x1.8p-25, 0x0001},
      {NPY_F16, 1 + 0x1p-11, 0x3c00},           /* tie to even */
      {NPY_F16, 1 + 0x1p-11 + 0x1p-40, 0x3c01}, /* above the tie: no double rounding */
      {NPY_F16, 1 + 3 * 0x1p-11, 0x3c02},       /* tie to even, up */
      {NPY_BF16, 1.0, 0x3f80},
      {NPY_BF16, 1 + 0x1p-8, 0x3f80},           /* tie to even */
      {NPY_BF16, 1 + 0x1p-8 + 0x1p-40, 0x3f81}, /* float rounding would make a tie */
      {NPY_BF16, 1 + 3 * 0x1p-8, 0x3f82},
      {NPY_BF16, -0.0, 0x8000},
      {NPY_BF16, 1e39, 0x7f80},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    npy_elem_store(b, cases[i].dt, cases[i].in);
    uint16_t h;
    memcpy(&h, b, 2);
    ck_assert_msg(h == cases[i].bits, "%s(%.17g) = 0x%04x, want 0x%04x",
                  npy_dtype_name(cases[i].dt), cases[i].in, h, cases[i].bits);
  }
  npy_elem_store(b, NPY_F16, NAN);
  ck_assert(isnan(npy_elem_load(b, NPY_F16)));
  npy_elem_store(b, NPY_BF16, NAN);
  ck_assert(isnan(npy_elem_load(b, NPY_BF16)));
  npy_elem_store(b, NPY_F16, 0x1p-24);
  ck_assert_double_eq(npy_elem_load(b, NPY_F16), 0x1p-24);
  /* Every float16 survives float16 -> double -> float16. */
  for (uint32_t h = 0; h < 0x10000; h++) {
    uint16_t hh = (uint16_t)h, back;
    double v = npy_elem_load(&hh, NPY_F16);
    if (isnan(v)) continue;
    npy_elem_store(&back, NPY_F16, v);
    ck_assert_msg(back == hh, "0x%04x -> %g -> 0x%04x", h, v, back);
  }
}
END_TEST

/* Every malformed-file class fails with a message naming the file. */
START_TEST(test_malformed) {
  unsigned char img[1024];
  float data[8] = {0};
  size_t len =
      make_npy(img, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data, 8);
  /* The file level. */
  parse_fails("PK\x03\x04 not numpy", 16, "bad magic");
  parse_fails("\x93NUM", 4, "truncated");
  parse_fails(img, 0, "truncated");
  parse_fails(img, 9, "truncated");
  parse_fails(img, 40, "truncated .npy file: the header should be");
  parse_fails(img, len - 4, "truncated .npy data: 4 bytes, but shape (2,) of float32 needs 8");
  unsigned char v[1024];
  memcpy(v, img, len);
  v[6] = 4;
  parse_fails(v, len, "unsupported .npy format version 4.0");
  v[6] = 1, v[7] = 1;
  parse_fails(v, len, "unsupported .npy format version 1.1");
  v[6] = 0, v[7] = 0;
  parse_fails(v, len, "version 0.0");
  /* Not a dict. */
  header_fails("[1, 2, 3]", "not a Python dict literal");
  header_fails("", "not a Python dict literal");
  header_fails("descr: <f4", "not a Python dict literal");
  /* Unsupported dtypes. */
  header_fails("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
               "unsupported .npy dtype '<i4'");
  header_fails("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", "big-endian");
  header_fails("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "'<c8'");
  header_fails("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
               "structured dtype");
  header_fails("{'descr': 4, 'fortran_order': False, 'shape': (2,), }", "a quoted string");
  /* Keys. */
  header_fails("{'fortran_order': False, 'shape': (2,), }", "no 'descr' key");
  header_fails("{'descr': '<f4', 'shape': (2,), }", "no 'fortran_order' key");
  header_fails("{'descr': '<f4', 'fortran_order': False}", "no 'shape' key");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
               "unknown key 'x'");
  header_fails("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
               "key 'descr' given twice");
  header_fails("{descr: '<f4'}", "a quoted string");
  header_fails("{'descr' '<f4'}", "':' after a key");
  header_fails("{'descr': '<f4' 'fortran_order': False}", "',' or '}'");
  header_fails("{'descr': '<f4", "closing quote");
  header_fails("{'descr': '<f\\x34'}", "without escapes");
  /* Values. */
  header_fails("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", "True or False");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", "a tuple");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }",
               "negative dimension");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", "a dimension");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", "',' or ')'");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
               "more than 8 dimensions");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
               "overflows int64");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
               "shape (4294967296, 4294967296) of float32 overflows");
  header_fails("{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976,), }",
               "overflows");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk",
               "only padding after the dict");
  header_fails("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\x01", "byte 0x01");
}
END_TEST

START_TEST(test_file_errors) {
  char err[512];
  htensor *x = (htensor *)1;
  const char *missing = tmp_path("missing.npy");
  ck_assert_int_eq(npy_read(missing, &x, err, sizeof err), -1);
  ck_assert_ptr_null(x);
  ck_assert_msg(strstr(err, "cannot open") && strstr(err, missing), "%s", err);
  ck_assert_int_eq(npy_read(tmpdir, &x, err, sizeof err), -1); /* a directory */
  ck_assert_msg(strstr(err, tmpdir), "%s", err);
  FILE *f = fopen(tmp_path("junk.npy"), "wb");
  fputs("hello", f);
  fclose(f);
  ck_assert_int_eq(npy_read(tmp_path("junk.npy"), &x, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "junk.npy") && strstr(err, "bad magic"), "%s", err);
  htensor *y = ht_new(NPY_F32, 1, (int64_t[]){3});
  ck_assert_int_eq(npy_write(tmp_path("no/such/dir/y.npy"), &y->t, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "cannot create") && strstr(err, "y.npy"), "%s", err);
  ht_free(y);
  /* Allocation limits. */
  ck_assert_ptr_null(ht_new(NPY_F32, 9, (int64_t[9]){1}));
  ck_assert_ptr_null(ht_new(NPY_F32, 1, (int64_t[]){-1}));
  ck_assert_ptr_null(ht_new(NPY_F32, 2, (int64_t[]){INT64_MAX, 4}));
}
END_TEST

/* A strided (non-contiguous) view is written in C order. */
START_TEST(test_write_strided) {
  htensor *x = ht_new(NPY_F32, 2, (int64_t[]){4, 6});
  for (int k = 0; k < 24; k++) ((float *)x->buf)[k] = (float)k;
  DLTensor view = x->t; /* every other column of rows 1..3: shape (3, 3) */
  int64_t shape[2] = {3, 3}, strides[2] = {6, 2};
  view.shape = shape, view.strides = strides, view.byte_offset = 6 * sizeof(float);
  char err[512];
  ck_assert_msg(npy_write(tmp_path("s.npy"), &view, err, sizeof err) == 0, "%s", err);
  htensor *y;
  ck_assert_int_eq(npy_read(tmp_path("s.npy"), &y, err, sizeof err), 0);
  float want[9] = {6, 8, 10, 12, 14, 16, 18, 20, 22};
  ck_assert_int_eq(memcmp(y->buf, want, sizeof want), 0);
  htensor *z = ht_convert(&view, NPY_BF16);
  ck_assert_double_eq(npy_get(&z->t, 8), 22);
  ht_free(x);
  ht_free(y);
  ht_free(z);
}
END_TEST

int main(void) {
  R = test_rng("npy");
  Suite *su = suite_create("npy");
  TCase *tc = tcase_create("npy");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, test_round_trip, 0, 4 * 6);
  tcase_add_loop_test(tc, test_fortran_order, 0, 4 * 6);
  tcase_add_test(tc, test_versions_and_variants);
  tcase_add_test(tc, test_rounding);
  tcase_add_test(tc, test_malformed);
  tcase_add_test(tc, test_file_errors);
  tcase_add_test(tc, test_write_strided);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
