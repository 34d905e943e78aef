/* npy.c - host tensors and NumPy .npy files; see npy.h.
 *
 * The format (numpy/lib/format.py): the magic "\x93NUMPY", a major and a
 * minor version byte, the header length (2 bytes little-endian in 1.0, 4 in
 * 2.0 and 3.0), then the header, a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a newline, then the raw data. */
#include "npy.h"
#include "errbuf.h"

#include "frnn_internal.h" /* elem_load, elem_store */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const DLDataType NPY_F32 = {kDLFloat, 32, 1}, NPY_F64 = {kDLFloat, 64, 1},
                 NPY_F16 = {kDLFloat, 16, 1}, NPY_BF16 = {kDLBfloat, 16, 1};

/* ------------------------------------------------------------------ dtypes */
bool npy_dtype_equal(DLDataType a, DLDataType b) {
  return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

bool npy_dtype_supported(DLDataType dt) {
  return npy_dtype_equal(dt, NPY_F32) || npy_dtype_equal(dt, NPY_F64) ||
         npy_dtype_equal(dt, NPY_F16) || npy_dtype_equal(dt, NPY_BF16);
}

const char *npy_dtype_name(DLDataType dt) {
  if (npy_dtype_equal(dt, NPY_F32)) return "float32";
  if (npy_dtype_equal(dt, NPY_F64)) return "float64";
  if (npy_dtype_equal(dt, NPY_F16)) return "float16";
  if (npy_dtype_equal(dt, NPY_BF16)) return "bfloat16";
  return "unsupported";
}

size_t npy_dtype_size(DLDataType dt) { return (size_t)dt.bits / 8u * (dt.lanes ? dt.lanes : 1u); }

/* The library's conversions (lib/tensor.c): one rounding, to nearest even. */
static enum tdtype to_tdtype(DLDataType dt) {
  if (dt.bits == 64) return TD_F64;
  if (dt.bits == 32) return TD_F32;
  return dt.code == kDLBfloat ? TD_BF16 : TD_F16;
}

double npy_elem_load(const void *p, DLDataType dt) { return elem_load(p, to_tdtype(dt)); }

void npy_elem_store(void *p, DLDataType dt, double v) { elem_store(p, to_tdtype(dt), v); }

/* ------------------------------------------------------------ host tensors */
int64_t npy_numel(const DLTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

/* Product of the non-zero entries of shape, in elements of `esize` bytes,
 * fits in both int64 and size_t? (Strides of a C-order layout are then
 * representable even when some dimension is 0.) */
static bool shape_fits(int ndim, const int64_t *shape, size_t esize) {
  uint64_t n = esize ? esize : 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return false;
    if (shape[i] > 1 && __builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return false;
  }
  return n <= (uint64_t)INT64_MAX && n <= (uint64_t)SIZE_MAX;
}

htensor *ht_new(DLDataType dt, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > NPY_MAX_NDIM || !npy_dtype_supported(dt)) return NULL;
  if (!shape_fits(ndim, shape, npy_dtype_size(dt))) return NULL;
  htensor *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  int64_t n = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    x->shape[i] = shape[i];
    x->strides[i] = n;
    if (shape[i] > 1) n *= shape[i];
  }
  for (int i = 0; i < ndim; i++)
    if (shape[i] == 0) n = 0;
  x->bytes = n ? (size_t)n * npy_dtype_size(dt) : 1;
  x->buf = calloc(1, x->bytes);
  if (!x->buf) {
    free(x);
    return NULL;
  }
  x->t.data = x->buf;
  x->t.device = (DLDevice){kDLCPU, 0};
  x->t.ndim = ndim;
  x->t.dtype = dt;
  x->t.shape = x->shape;
  x->t.strides = x->strides;
  x->t.byte_offset = 0;
  return x;
}

void ht_free(htensor *x) {
  if (!x) return;
  free(x->buf);
  free(x);
}

/* Offset in elements of element k (C order over the shape). */
static int64_t elem_offset(const DLTensor *t, int64_t k) {
  int64_t off = 0, stride = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    int64_t idx = k % t->shape[i];
    k /= t->shape[i];
    off += idx * (t->strides ? t->strides[i] : stride);
    stride *= t->shape[i];
  }
  return off;
}

double npy_get(const DLTensor *t, int64_t k) {
  const char *base = (const char *)t->data + t->byte_offset;
  return npy_elem_load(base + elem_offset(t, k) * (int64_t)npy_dtype_size(t->dtype), t->dtype);
}

static bool is_c_contiguous(const DLTensor *t) {
  if (!t->strides) return true;
  int64_t n = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->strides[i] != n) return false;
    n *= t->shape[i];
  }
  return true;
}

htensor *ht_convert(const DLTensor *src, DLDataType dt) {
  if (!npy_dtype_supported(src->dtype)) return NULL;
  htensor *x = ht_new(dt, src->ndim, src->shape);
  if (!x) return NULL;
  int64_t n = npy_numel(src);
  size_t ssize = npy_dtype_size(src->dtype), dsize = npy_dtype_size(dt);
  const char *base = (const char *)src->data + src->byte_offset;
  if (is_c_contiguous(src) && npy_dtype_equal(src->dtype, dt)) {
    if (n) memcpy(x->buf, base, (size_t)n * dsize);
    return x;
  }
  /* Odometer over the source's index space. */
  int64_t idx[NPY_MAX_NDIM] = {0}, off = 0;
  for (int64_t k = 0; k < n; k++) {
    npy_elem_store((char *)x->buf + (size_t)k * dsize, dt,
                   npy_elem_load(base + off * (int64_t)ssize, src->dtype));
    for (int i = src->ndim - 1; i >= 0; i--) {
      int64_t st = src->strides ? src->strides[i] : x->strides[i];
      if (++idx[i] < src->shape[i]) {
        off += st;
        break;
      }
      off -= st * (idx[i] - 1);
      idx[i] = 0;
    }
  }
  return x;
}

/* ------------------------------------------------------------------ errors */
static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
  size_t len = (size_t)snprintf(buf, size, "(");
  for (int i = 0; i < ndim && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (len < size) snprintf(buf + len, size - len, ndim == 1 ? ",)" : ")");
}

/* ------------------------------------------------------------ header parse */
typedef struct hparse {
  const char *s; /* header text */
  size_t n, i;   /* its length, the read position */
  const char *file;
  char *err;
  size_t err_size;
} hparse;

static void skip_ws(hparse *h) {
  while (h->i < h->n &&
         (h->s[h->i] == ' ' || h->s[h->i] == '\t' || h->s[h->i] == '\n' || h->s[h->i] == '\r'))
    h->i++;
}

static int peek(const hparse *h) { return h->i < h->n ? (unsigned char)h->s[h->i] : -1; }

/* What is at the read position, for messages: "'x'" or "the end". */
static const char *found(const hparse *h, char *buf, size_t size) {
  int c = peek(h);
  if (c < 0) return "the end of the header";
  if (c >= 0x20 && c < 0x7f)
    snprintf(buf, size, "'%c'", c);
  else
    snprintf(buf, size, "byte 0x%02x", c);
  return buf;
}

static int syntax(hparse *h, const char *what) {
  char b[16];
  return errbuf_fail(h->err, h->err_size, "%s: malformed .npy header: expected %s at offset %zu, found %s",
              h->file, what, h->i, found(h, b, sizeof b));
}

/* A quoted string without escapes into out (truncated to size-1). */
static int parse_string(hparse *h, char *out, size_t size) {
  int q = peek(h);
  if (q != '\'' && q != '"') return syntax(h, "a quoted string");
  size_t start = ++h->i;
  while (h->i < h->n && h->s[h->i] != q) {
    if (h->s[h->i] == '\\') return syntax(h, "a string without escapes");
    h->i++;
  }
  if (h->i >= h->n) return syntax(h, "the closing quote");
  size_t len = h->i - start;
  if (len >= size) len = size - 1;
  memcpy(out, h->s + start, len);
  out[len] = 0;
  h->i++;
  return 0;
}

static int parse_bool(hparse *h, bool *out) {
  if (h->n - h->i >= 4 && !memcmp(h->s + h->i, "True", 4)) {
    h->i += 4;
    *out = true;
    return 0;
  }
  if (h->n - h->i >= 5 && !memcmp(h->s + h->i, "False", 5)) {
    h->i += 5;
    *out = false;
    return 0;
  }
  return syntax(h, "True or False for 'fortran_order'");
}

static int parse_shape(hparse *h, int *ndim, int64_t *shape) {
  if (peek(h) != '(') return syntax(h, "a tuple '(' for 'shape'");
  h->i++;
  *ndim = 0;
  for (;;) {
    skip_ws(h);
    if (peek(h) == ')') break;
    if (peek(h) == '-')
      return errbuf_fail(h->err, h->err_size, "%s: malformed .npy header: negative dimension in 'shape'",
                  h->file);
    if (peek(h) < '0' || peek(h) > '9') return syntax(h, "a dimension (non-negative integer)");
    uint64_t v = 0;
    while (peek(h) >= '0' && peek(h) <= '9') {
      if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, peek(h) - '0', &v) ||
          v > (uint64_t)INT64_MAX)
        return errbuf_fail(h->err, h->err_size,
                    "%s: malformed .npy header: dimension in 'shape' overflows int64", h->file);
      h->i++;
    }
    if (peek(h) == 'L') h->i++; /* Python 2 long, as old numpy wrote */
    if (*ndim == NPY_MAX_NDIM)
      return errbuf_fail(h->err, h->err_size,
                  "%s: unsupported .npy array: more than %d dimensions in 'shape'", h->file,
                  NPY_MAX_NDIM);
    shape[(*ndim)++] = (int64_t)v;
    skip_ws(h);
    if (peek(h) == ',') {
      h->i++;
      continue;
    }
    if (peek(h) != ')') return syntax(h, "',' or ')' in 'shape'");
  }
  h->i++;
  return 0;
}

/* descr -> dtype.  NumPy writes '<f4' etc.; '=' (native) is little-endian
 * on every machine frnn runs on; '|V2' is a raw 2-byte void. */
static int parse_descr(hparse *h, const char *descr, DLDataType *dt) {
  if (!strcmp(descr, "bfloat16") || !strcmp(descr, "<V2") || !strcmp(descr, "|V2") ||
      !strcmp(descr, "V2")) {
    *dt = NPY_BF16;
    return 0;
  }
  const char *t = descr + (descr[0] == '<' || descr[0] == '=');
  if (!strcmp(t, "f4"))
    *dt = NPY_F32;
  else if (!strcmp(t, "f8"))
    *dt = NPY_F64;
  else if (!strcmp(t, "f2"))
    *dt = NPY_F16;
  else if (descr[0] == '>')
    return errbuf_fail(h->err, h->err_size,
                "%s: unsupported .npy dtype '%s': big-endian data (save with a.astype('<f4'))",
                h->file, descr);
  else
    return errbuf_fail(h->err, h->err_size,
                "%s: unsupported .npy dtype '%s' (frnn reads '<f4', '<f8', '<f2' and bfloat16 "
                "as '<V2' or 'bfloat16'; save with a.astype(np.float32))",
                h->file, descr);
  return 0;
}

typedef struct npy_header {
  DLDataType dtype;
  bool fortran;
  int ndim;
  int64_t shape[NPY_MAX_NDIM];
} npy_header;

static int parse_header(hparse *h, npy_header *hd) {
  enum { K_DESCR = 1, K_FORTRAN = 2, K_SHAPE = 4 };
  unsigned seen = 0;
  skip_ws(h);
  if (peek(h) != '{') {
    char b[16];
    return errbuf_fail(h->err, h->err_size,
                "%s: malformed .npy header: not a Python dict literal (found %s at offset %zu "
                "where '{' should be)",
                h->file, found(h, b, sizeof b), h->i);
  }
  h->i++;
  for (;;) {
    skip_ws(h);
    if (peek(h) == '}') break;
    char key[32], descr[40];
    if (parse_string(h, key, sizeof key)) return -1;
    skip_ws(h);
    if (peek(h) != ':') return syntax(h, "':' after a key");
    h->i++;
    skip_ws(h);
    unsigned k = !strcmp(key, "descr")           ? K_DESCR
                 : !strcmp(key, "fortran_order") ? K_FORTRAN
                 : !strcmp(key, "shape")         ? K_SHAPE
                                                 : 0;
    if (!k)
      return errbuf_fail(h->err, h->err_size,
                  "%s: malformed .npy header: unknown key '%s' (expected 'descr', "
                  "'fortran_order' and 'shape')",
                  h->file, key);
    if (seen & k)
      return errbuf_fail(h->err, h->err_size, "%s: malformed .npy header: key '%s' given twice", h->file,
                  key);
    seen |= k;
    if (k == K_DESCR) {
      if (peek(h) == '[')
        return errbuf_fail(h->err, h->err_size,
                    "%s: unsupported .npy dtype: a structured dtype (a list in 'descr')", h->file);
      if (parse_string(h, descr, sizeof descr) || parse_descr(h, descr, &hd->dtype)) return -1;
    } else if (k == K_FORTRAN) {
      if (parse_bool(h, &hd->fortran)) return -1;
    } else if (parse_shape(h, &hd->ndim, hd->shape)) {
      return -1;
    }
    skip_ws(h);
    if (peek(h) == ',') {
      h->i++;
      continue;
    }
    if (peek(h) != '}') return syntax(h, "',' or '}' after a value");
  }
  h->i++;
  skip_ws(h);
  if (h->i < h->n && h->s[h->i] != 0) return syntax(h, "only padding after the dict");
  const char *missing = !(seen & K_DESCR)     ? "descr"
                        : !(seen & K_FORTRAN) ? "fortran_order"
                        : !(seen & K_SHAPE)   ? "shape"
                                              : NULL;
  if (missing)
    return errbuf_fail(h->err, h->err_size, "%s: malformed .npy header: no '%s' key", h->file, missing);
  return 0;
}

/* -------------------------------------------------------------- file level */
static const char MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

int npy_parse(const char *name, const void *data, size_t size, htensor **out, char *err,
              size_t err_size) {
  const unsigned char *p = data;
  *out = NULL;
  if (memcmp(p, MAGIC, size < 6 ? size : 6) != 0)
    return errbuf_fail(err, err_size, "%s: not a .npy file (bad magic: it should start with \\x93NUMPY)",
                name);
  if (size < 10)
    return errbuf_fail(err, err_size, "%s: truncated .npy file: %zu bytes, shorter than the preamble",
                name, size);
  int major = p[6], minor = p[7];
  if (major < 1 || major > 3 || minor != 0)
    return errbuf_fail(err, err_size,
                "%s: unsupported .npy format version %d.%d (frnn reads 1.0, 2.0 and 3.0)", name,
                major, minor);
  size_t pre = major == 1 ? 10 : 12;
  if (size < pre)
    return errbuf_fail(err, err_size, "%s: truncated .npy file: %zu bytes, shorter than the preamble",
                name, size);
  size_t hlen = major == 1
                    ? (size_t)p[8] | (size_t)p[9] << 8
                    : (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
  if (size - pre < hlen)
    return errbuf_fail(err, err_size,
                "%s: truncated .npy file: the header should be %zu bytes, the file ends after %zu",
                name, hlen, size - pre);
  npy_header hd = {0};
  hparse h = {(const char *)p + pre, hlen, 0, name, err, err_size};
  if (parse_header(&h, &hd)) return -1;

  char shape_text[200];
  format_shape(shape_text, sizeof shape_text, hd.ndim, hd.shape);
  if (!shape_fits(hd.ndim, hd.shape, npy_dtype_size(hd.dtype)))
    return errbuf_fail(err, err_size, "%s: malformed .npy header: shape %s of %s overflows", name,
                shape_text, npy_dtype_name(hd.dtype));
  htensor *x = ht_new(hd.dtype, hd.ndim, hd.shape);
  if (!x) return errbuf_fail(err, err_size, "%s: out of memory for shape %s", name, shape_text);
  size_t need = npy_numel(&x->t) ? x->bytes : 0, have = size - pre - hlen;
  if (have < need) {
    ht_free(x);
    return errbuf_fail(err, err_size, "%s: truncated .npy data: %zu bytes, but shape %s of %s needs %zu",
                name, have, shape_text, npy_dtype_name(hd.dtype), need);
  }
  memcpy(x->buf, p + pre + hlen, need);
  if (hd.fortran) { /* same bytes, column-major strides */
    int64_t n = 1;
    for (int i = 0; i < hd.ndim; i++) {
      x->strides[i] = n;
      if (hd.shape[i] > 1) n *= hd.shape[i];
    }
  }
  *out = x;
  return 0;
}

int npy_read(const char *path, htensor **out, char *err, size_t err_size) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return errbuf_fail(err, err_size, "cannot open %s: %s", path, strerror(errno));
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  int rc = -1;
  while (buf) {
    len += fread(buf + len, 1, cap - len, f);
    if (len < cap) break;
    char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
    if (!nb) {
      free(buf);
      buf = NULL;
    } else {
      buf = nb;
      cap *= 2;
    }
  }
  if (!buf)
    errbuf_fail(err, err_size, "%s: out of memory reading the file", path);
  else if (ferror(f))
    errbuf_fail(err, err_size, "cannot read %s: %s", path, strerror(errno));
  else
    rc = npy_parse(path, buf, len, out, err, err_size);
  free(buf);
  fclose(f);
  return rc;
}

int npy_write(const char *path, const DLTensor *t, char *err, size_t err_size) {
  if (!npy_dtype_supported(t->dtype))
    return errbuf_fail(err, err_size, "%s: cannot write dtype code %d bits %d", path, t->dtype.code,
                t->dtype.bits);
  if (t->ndim < 0 || t->ndim > NPY_MAX_NDIM)
    return errbuf_fail(err, err_size, "%s: cannot write %d dimensions", path, t->ndim);
  const char *descr = npy_dtype_equal(t->dtype, NPY_F32)   ? "<f4"
                      : npy_dtype_equal(t->dtype, NPY_F64) ? "<f8"
                      : npy_dtype_equal(t->dtype, NPY_F16) ? "<f2"
                                                           : "<V2";
  char shape_text[200], hdr[512];
  format_shape(shape_text, sizeof shape_text, t->ndim, t->shape);
  int n = snprintf(hdr + 10, sizeof hdr - 10,
                   "{'descr': '%s', 'fortran_order': False, "
                   "'shape': %s, }",
                   descr, shape_text);
  size_t total = 10 + (size_t)n + 1; /* preamble, dict, newline */
  size_t pad = (64 - total % 64) % 64;
  memset(hdr + 10 + n, ' ', pad);
  hdr[total + pad - 1] = '\n';
  size_t hlen = total + pad - 10;
  memcpy(hdr, MAGIC, 6);
  hdr[6] = 1;
  hdr[7] = 0;
  hdr[8] = (char)(hlen & 0xff);
  hdr[9] = (char)(hlen >> 8);

  htensor *copy = NULL;
  const char *data = (const char *)t->data + t->byte_offset;
  if (!is_c_contiguous(t)) {
    if (!(copy = ht_convert(t, t->dtype))) return errbuf_fail(err, err_size, "%s: out of memory", path);
    data = copy->buf;
  }
  size_t bytes = (size_t)npy_numel(t) * npy_dtype_size(t->dtype);
  FILE *f = fopen(path, "wb");
  int rc = 0;
  if (!f) {
    rc = errbuf_fail(err, err_size, "cannot create %s: %s", path, strerror(errno));
  } else {
    bool ok = fwrite(hdr, 1, hlen + 10, f) == hlen + 10 && fwrite(data, 1, bytes, f) == bytes;
    if (fclose(f) != 0) ok = false;
    if (!ok) rc = errbuf_fail(err, err_size, "cannot write %s: %s", path, strerror(errno));
  }
  ht_free(copy);
  return rc;
}
