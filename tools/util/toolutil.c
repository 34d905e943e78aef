/* toolutil.c - helpers shared by the tools; see toolutil.h. */
#include "toolutil.h"
#include "errbuf.h"

#include "frnn_internal.h" /* the driver layer: cuda_* */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- options */
int tu_usage_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", prog);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(%s --help for usage)\n", prog);
  return TU_EXIT_USAGE;
}

int tu_opt(int argc, char **argv, int *i, const char *name, const char **value, char *err,
           size_t err_size) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return 0;
  if (a[n] == '=') {
    *value = a + n + 1;
    return 1;
  }
  if (a[n] != 0) return 0;
  if (*i + 1 >= argc) return errbuf_fail(err, err_size, "%s needs a value", name);
  *value = argv[++*i];
  return 1;
}

int tu_split_assign(const char *text, char *name, size_t name_size, const char **value) {
  const char *eq = strchr(text, '=');
  if (!eq || eq == text || (size_t)(eq - text) >= name_size) return -1;
  for (const char *p = text; p < eq; p++)
    if (!(isalnum((unsigned char)*p) || *p == '_')) return -1;
  memcpy(name, text, (size_t)(eq - text));
  name[eq - text] = 0;
  *value = eq + 1;
  return 0;
}

int tu_parse_i64(const char *text, int64_t *out) {
  if (!text || !*text || isspace((unsigned char)*text)) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(text, &end, 0);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

int tu_parse_dtype(const char *text, DLDataType *out) {
  static const struct {
    const char *a, *b;
    const DLDataType *dt;
  } names[] = {{"f32", "float32", &NPY_F32},
               {"bf16", "bfloat16", &NPY_BF16},
               {"f16", "float16", &NPY_F16},
               {"f64", "float64", &NPY_F64}};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (!strcmp(text, names[i].a) || !strcmp(text, names[i].b)) {
      *out = *names[i].dt;
      return 0;
    }
  return -1;
}

int tu_parse_sizes(const char *text, frnn_sizes *sz, unsigned *given, char *err, size_t err_size) {
  unsigned seen = 0;
  const char *p = text;
  for (;;) {
    const char *letters = "BTHMN", *l = *p ? strchr(letters, *p) : NULL;
    if (!l || p[1] != '=')
      return errbuf_fail(err, err_size,
                  "bad sizes '%s': expected B=,T=,H=,M=,N= (like B=2,T=16,H=2,M=8,N=8)", text);
    unsigned bit = 1u << (l - letters);
    if (seen & bit) return errbuf_fail(err, err_size, "bad sizes '%s': %c given twice", text, *p);
    seen |= bit;
    char num[32];
    const char *q = p + 2, *e = strchr(q, ',');
    size_t len = e ? (size_t)(e - q) : strlen(q);
    int64_t v;
    if (len == 0 || len >= sizeof num)
      return errbuf_fail(err, err_size, "bad sizes '%s': no number for %c", text, *p);
    memcpy(num, q, len);
    num[len] = 0;
    if (tu_parse_i64(num, &v) || v < 1)
      return errbuf_fail(err, err_size, "bad sizes '%s': %c=%s is not a positive integer", text, *p, num);
    int64_t *field[] = {&sz->B, &sz->T, &sz->H, &sz->M, &sz->N};
    *field[l - letters] = v;
    if (!e) break;
    p = e + 1;
  }
  if (given) *given = seen;
  return 0;
}

const char *tu_format_sizes(frnn_sizes sz, char *buf, size_t size) {
  snprintf(buf, size, "B=%lld T=%lld H=%lld M=%lld N=%lld", (long long)sz.B, (long long)sz.T,
           (long long)sz.H, (long long)sz.M, (long long)sz.N);
  return buf;
}

/* ------------------------------------------------------------------ steps */
frnn_step *tu_load_step(frnn_ctx *ctx, const char *prog, const char *path) {
  frnn_step *s = NULL;
  frnn_status st = frnn_step_load(ctx, path, &s);
  if (st == FRNN_OK) return s;
  const char *msg = frnn_ctx_error(ctx);
  if (msg && *msg)
    fprintf(stderr, "%s: %s\n", prog, msg);
  else
    fprintf(stderr, "%s: %s: %s\n", prog, path, frnn_status_name(st));
  return NULL;
}

int tu_port_shape(const frnn_step *s, frnn_port_kind kind, int i, frnn_sizes sz, int64_t shape[5]) {
  frnn_class c = frnn_step_port_class(s, kind, i);
  int64_t m = (c & FRNN_COL) ? sz.M : 1, n = (c & FRNN_ROW) ? sz.N : 1;
  switch (kind) {
  case FRNN_PORT_INPUT:
    shape[0] = sz.B, shape[1] = sz.T, shape[2] = sz.H, shape[3] = m, shape[4] = n;
    return 5;
  case FRNN_PORT_STATE:
    shape[0] = sz.B, shape[1] = sz.H, shape[2] = m, shape[3] = n;
    return 4;
  default:
    shape[0] = sz.B, shape[1] = sz.T, shape[2] = sz.H, shape[3] = m;
    return c == FRNN_SCALAR ? 3 : 4;
  }
}

const char *tu_port_shape_text(const frnn_step *s, frnn_port_kind kind, int i, char *buf,
                               size_t size) {
  frnn_class c = frnn_step_port_class(s, kind, i);
  const char *m = (c & FRNN_COL) ? "M" : "1", *n = (c & FRNN_ROW) ? "N" : "1";
  if (kind == FRNN_PORT_INPUT)
    snprintf(buf, size, "[B,T,H,%s,%s]", m, n);
  else if (kind == FRNN_PORT_STATE)
    snprintf(buf, size, "[B,H,%s,%s]", m, n);
  else
    snprintf(buf, size, c == FRNN_SCALAR ? "[B,T,H]" : "[B,T,H,M]");
  return buf;
}

const char *tu_port_names(const frnn_step *s, frnn_port_kind kind, char *buf, size_t size) {
  size_t len = 0;
  buf[0] = 0;
  int n = frnn_step_port_count(s, kind);
  for (int i = 0; i < n && len < size; i++)
    len +=
        (size_t)snprintf(buf + len, size - len, i ? ", %s" : "%s", frnn_step_port_name(s, kind, i));
  if (n == 0) snprintf(buf, size, "none");
  return buf;
}

const char *tu_format_shape(const DLTensor *t, char *buf, size_t size) {
  size_t len = (size_t)snprintf(buf, size, "(");
  for (int i = 0; i < t->ndim && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  if (len < size) snprintf(buf + len, size - len, t->ndim == 1 ? ",)" : ")");
  return buf;
}

/* ----------------------------------------------------------------- random */
uint64_t tu_rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void tu_fill_uniform(htensor *x, uint64_t *state, double lo, double hi) {
  int64_t n = npy_numel(&x->t);
  size_t es = npy_dtype_size(x->t.dtype);
  for (int64_t k = 0; k < n; k++) {
    double u = (double)(tu_rng_next(state) >> 11) * 0x1.0p-53;
    npy_elem_store((char *)x->buf + (size_t)k * es, x->t.dtype, lo + (hi - lo) * u);
  }
}

/* ------------------------------------------------------------- statistics */
tu_stats tu_stats_of(const DLTensor *t) {
  tu_stats st = {0, 0, 0, 0};
  int64_t n = npy_numel(t), finite = 0;
  double sum = 0, sq = 0;
  for (int64_t k = 0; k < n; k++) {
    double v = npy_get(t, k);
    if (!isfinite(v)) {
      st.nonfinite++;
      continue;
    }
    finite++;
    sum += v;
    sq += v * v;
    if (fabs(v) > st.maxabs) st.maxabs = fabs(v);
  }
  if (finite) {
    st.mean = sum / (double)finite;
    st.rms = sqrt(sq / (double)finite);
  }
  return st;
}

double tu_rel_err(const DLTensor *a, const DLTensor *b) {
  int64_t n = npy_numel(b);
  double num = 0, den = 0;
  for (int64_t k = 0; k < n; k++) {
    double x = npy_get(a, k), y = npy_get(b, k);
    num += (x - y) * (x - y);
    den += y * y;
  }
  if (num != num) return NAN;
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return sqrt(num / den);
}

/* ------------------------------------------------------------------ files */
int tu_mkdirs(const char *path, char *err, size_t err_size) {
  char buf[4096];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof buf) return errbuf_fail(err, err_size, "bad directory name '%s'", path);
  memcpy(buf, path, len + 1);
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    char c = buf[i];
    buf[i] = 0;
    struct stat sb;
    if (mkdir(buf, 0777) != 0 && !(errno == EEXIST && stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode)))
      return errbuf_fail(err, err_size, "cannot create directory %s: %s", buf,
                  errno == EEXIST ? "a file is in the way" : strerror(errno));
    buf[i] = c;
  }
  return 0;
}

/* ------------------------------------------------------------------ CUDA */
/* Through the library's own driver layer (lib/cuda.c): one place that loads
 * the driver and knows its versioned entry points. */
struct tu_gpu {
  frnn_ctx *ctx;     /* where the driver layer reports failures */
  cuda_scope scope;  /* the context made current by tu_gpu_open */
};

/* Copy the library's message for the last failure into err; -1. */
static int gpu_fail(tu_gpu *g, char *err, size_t err_size) {
  return errbuf_fail(err, err_size, "%s", frnn_ctx_error(g->ctx));
}

int tu_gpu_open(tu_gpu **out, char *err, size_t err_size) {
  *out = NULL;
  tu_gpu *g = calloc(1, sizeof *g);
  if (!g || frnn_ctx_create(&g->ctx) != FRNN_OK) {
    free(g);
    return errbuf_fail(err, err_size, "out of memory");
  }
  if (cuda_enter(g->ctx, 0, &g->scope) != FRNN_OK) {
    gpu_fail(g, err, err_size);
    frnn_ctx_destroy(g->ctx);
    free(g);
    return -1;
  }
  *out = g;
  return 0;
}

void tu_gpu_close(tu_gpu *g) {
  if (!g) return;
  cuda_leave(&g->scope);
  frnn_ctx_destroy(g->ctx);
  free(g);
}

int tu_gpu_alloc(tu_gpu *g, size_t bytes, void **ptr, char *err, size_t err_size) {
  *ptr = NULL;
  if (bytes == 0) return 0;
  CUdeviceptr p = 0;
  if (cuda_malloc(g->ctx, bytes, &p) != FRNN_OK) return gpu_fail(g, err, err_size);
  *ptr = (void *)(uintptr_t)p;
  return 0;
}

void tu_gpu_free(tu_gpu *g, void *ptr) {
  if (ptr) cuda_free(g->ctx, (CUdeviceptr)(uintptr_t)ptr);
}

int tu_gpu_upload(tu_gpu *g, void *dst, const void *src, size_t bytes, char *err, size_t err_size) {
  if (bytes && cuda_memcpy_htod(g->ctx, (CUdeviceptr)(uintptr_t)dst, src, bytes, NULL, 0) != FRNN_OK)
    return gpu_fail(g, err, err_size);
  return 0;
}

int tu_gpu_download(tu_gpu *g, void *dst, const void *src, size_t bytes, char *err,
                    size_t err_size) {
  if (bytes && cuda_memcpy_dtoh(g->ctx, dst, (CUdeviceptr)(uintptr_t)src, bytes, NULL, 0) != FRNN_OK)
    return gpu_fail(g, err, err_size);
  return 0;
}

int tu_gpu_sync(tu_gpu *g, char *err, size_t err_size) {
  return cuda_ctx_sync(g->ctx) != FRNN_OK ? gpu_fail(g, err, err_size) : 0;
}

int tu_dtensor_new(tu_gpu *g, const htensor *host, bool upload, DLTensor *out, char *err,
                   size_t err_size) {
  *out = host->t;
  out->device = (DLDevice){kDLCUDA, 0};
  out->data = NULL;
  if (tu_gpu_alloc(g, host->bytes, &out->data, err, err_size)) return -1;
  if (upload && tu_gpu_upload(g, out->data, host->buf, host->bytes, err, err_size)) {
    tu_dtensor_free(g, out);
    return -1;
  }
  return 0;
}

int tu_dtensor_download(tu_gpu *g, const DLTensor *d, htensor *host, char *err, size_t err_size) {
  return tu_gpu_download(g, host->buf, d->data, host->bytes, err, err_size);
}

void tu_dtensor_free(tu_gpu *g, DLTensor *d) {
  tu_gpu_free(g, d->data);
  d->data = NULL;
}
